// Generation: the logit processors on hand-computed cases, KV-cached against uncached decoding
// (every position encoding, ref and cpu backends), seeded sampling, stopping, streaming with
// multi-byte characters split across BPE tokens, and steady memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, getBackend, liveTensorCount, RefBackend, tensor, type Backend, type Tensor } from '../src/index.js';
import {
  applyRepetitionPenalty, applyTemperature, applyTopK, applyTopP, argmaxLogits, generate, generateStream, processLogits,
  sampleLogits, selectToken, softmaxLogits, type GenerateOptions, type LanguageModel, type StreamEvent,
} from '../src/generate/index.js';
import { GPT, type GPTConfig, type PosEncoding } from '../src/models/gpt.js';
import { KVCache } from '../src/nn/index.js';
import { GPT2_EOT, loadGpt2Tokenizer } from '../src/tokenizers/index.js';

const ref = new RefBackend();
let cpu: Backend | null = null;
let cpuError = '';
try {
  cpu = await getBackend('cpu', { threads: 1 });
} catch (e) {
  cpuError = (e as Error).message;
}
const backends: [string, Backend | null][] = [['ref', ref], ['cpu', cpu]];
const SMALL: Partial<GPTConfig> = { n_layer: 2, n_head: 2, n_embd: 32, block_size: 32, vocab_size: 50 };

function model(backend: Backend, pos: PosEncoding = 'learned', extra: Partial<GPTConfig> = {}): GPT {
  return new GPT({ ...SMALL, pos_encoding: pos, ...extra }, { backend, seed: 3 });
}

function prompt(n: number, seed = 1): number[] {
  const g = new Generator(seed);
  return Array.from({ length: n }, () => g.randint(SMALL.vocab_size!));
}

const f32 = (a: number[]) => Float32Array.from(a);
const NEG = -Infinity;

// ---------------------------------------------------------------- logit processors

test('repetition penalty: positive logits divided, negative multiplied, each token once', () => {
  assert.deepEqual([...applyRepetitionPenalty(f32([2, -1, 0.5, 3]), [0, 1, 1, 1], 2)], [1, -2, 0.5, 3]);
  assert.deepEqual([...applyRepetitionPenalty(f32([2, -1]), [0, 1], 1)], [2, -1]);
  assert.deepEqual([...applyRepetitionPenalty(f32([2, -1]), [0, 1], 0.5)], [4, -0.5]); // < 1 encourages
});

test('temperature, top-k (ties with the k-th kept), top-p (smallest set reaching p, at least one)', () => {
  assert.deepEqual([...applyTemperature(f32([1, -2]), 0.5)], [2, -4]);
  assert.throws(() => applyTemperature(f32([1]), 0), /temperature must be > 0/);
  assert.deepEqual([...applyTopK(f32([1, 3, 2, 3, 0]), 2)], [NEG, 3, NEG, 3, NEG]);
  assert.deepEqual([...applyTopK(f32([1, 3, 2, 3, 0]), 3)], [NEG, 3, 2, 3, NEG]);
  assert.deepEqual([...applyTopK(f32([1, 2]), 0)], [1, 2]);
  assert.deepEqual([...applyTopK(f32([1, 2]), 5)], [1, 2]);

  const l = () => f32([0.5, 0.3, 0.15, 0.05].map(Math.log)); // probabilities 0.5, 0.3, 0.15, 0.05
  const kept = (a: Float32Array) => [...a].flatMap((v, i) => (v > NEG ? [i] : []));
  assert.deepEqual(kept(applyTopP(l(), 0.45)), [0]);
  assert.deepEqual(kept(applyTopP(l(), 0.7)), [0, 1]);
  assert.deepEqual(kept(applyTopP(l(), 0.81)), [0, 1, 2]);
  assert.deepEqual(kept(applyTopP(l(), 0.99)), [0, 1, 2, 3]);
  assert.deepEqual(kept(applyTopP(l(), 1)), [0, 1, 2, 3]);
  assert.deepEqual(kept(applyTopP(l(), 1e-9)), [0]);
  assert.deepEqual(kept(applyTopP(f32([1, NEG, 5, 2]), 0.5)), [2]);
  const p = applyTopP(l(), 0.7);
  assert.equal(p[0], Math.fround(Math.log(0.5))); // kept logits are unchanged
});

test('softmax, argmax and seeded sampling follow the distribution', () => {
  const pr = softmaxLogits([Math.log(0.7), Math.log(0.2), Math.log(0.1), NEG]);
  [0.7, 0.2, 0.1, 0].forEach((v, i) => assert.ok(Math.abs(pr[i]! - v) < 1e-12));
  assert.equal(argmaxLogits([1, 5, 5, 2]), 1);
  assert.equal(argmaxLogits([NaN, -1]), 1);
  const g = new Generator(5);
  const counts = [0, 0, 0, 0];
  const N = 20000;
  const row = [Math.log(0.7), Math.log(0.2), Math.log(0.1), NEG];
  for (let i = 0; i < N; i++) counts[sampleLogits(row, g)]!++;
  assert.equal(counts[3], 0);
  [0.7, 0.2, 0.1].forEach((v, i) => assert.ok(Math.abs(counts[i]! / N - v) < 0.015, `${counts}`));
  const a = new Generator(9);
  const b = new Generator(9);
  for (let i = 0; i < 50; i++) assert.equal(sampleLogits(row, a), sampleLogits(row, b));
});

test('processors run in HF order (penalty before top-k); greedy applies only the penalty', () => {
  // The penalty moves token 0 below token 1, so top-1 keeps token 1.
  assert.deepEqual([...processLogits(f32([3, 2.5, 1]), [0], { repetitionPenalty: 2, topK: 1 })], [NEG, 2.5, NEG]);
  // Temperature before top-p: sharper probabilities make a smaller nucleus.
  const row = f32([0.5, 0.3, 0.15, 0.05].map(Math.log));
  const kept = (a: Float32Array) => [...a].filter((v) => v > NEG).length;
  assert.equal(kept(processLogits(Float32Array.from(row), [], { topP: 0.7 })), 2);
  assert.equal(kept(processLogits(Float32Array.from(row), [], { topP: 0.7, temperature: 0.3 })), 1);
  assert.deepEqual([...processLogits(f32([3, 2.5, 1]), [0], { greedy: true, repetitionPenalty: 2, topK: 1, temperature: 5 })], [1.5, 2.5, 1]);
  const g = new Generator(0);
  assert.equal(selectToken(f32([3, 2.5, 1]), [0], { temperature: 0, repetitionPenalty: 2 }, g), 1);
  assert.equal(selectToken(f32([3, 2.5, 1]), [], { greedy: true }, g), 0);
});

// ---------------------------------------------------------------- the model loop

for (const [bname, backend] of backends) {
  if (!backend) {
    test(`generation on the ${bname} backend`, { skip: `the ${bname} backend did not load: ${cpuError}` }, () => {});
    continue;
  }
  for (const pos of ['learned', 'sinusoidal', 'rope'] as const) {
    test(`${bname}/${pos}: greedy with the KV cache equals greedy without, within and past block_size`, () => {
      const m = model(backend, pos);
      const p = prompt(5);
      const within = { greedy: true, maxNewTokens: 27 }; // 5 + 27 = block_size
      const a = generate(m, p, { ...within, useCache: true });
      const b = generate(m, p, { ...within, useCache: false });
      assert.equal(a.tokens.length, 27);
      assert.equal(a.stopReason, 'length');
      assert.deepEqual(a.tokens, b.tokens);
      // Past block_size a full cache is re-prefilled from the last block_size tokens, which is
      // exactly what uncached generation sees, so the two still agree.
      const c = generate(m, p, { greedy: true, maxNewTokens: 45, useCache: true });
      const d = generate(m, p, { greedy: true, maxNewTokens: 45, useCache: false });
      assert.deepEqual(c.tokens, d.tokens);
      assert.deepEqual(c.tokens.slice(0, 27), a.tokens);
      // A prompt longer than block_size is cropped to its tail either way.
      const long = prompt(40, 2);
      assert.deepEqual(generate(m, long, { greedy: true, maxNewTokens: 4 }).tokens, generate(m, long, { greedy: true, maxNewTokens: 4, useCache: false }).tokens);
      // A shorter refill trades context for speed: equal until the cache first fills.
      const e = generate(m, p, { greedy: true, maxNewTokens: 45, cacheRefill: 16 });
      assert.equal(e.tokens.length, 45);
      assert.deepEqual(e.tokens.slice(0, 28), c.tokens.slice(0, 28));
      m.dispose();
    });
  }

  test(`${bname}: seeded sampling is reproducible, and the same with and without the cache`, () => {
    const m = model(backend, 'rope');
    const p = prompt(4);
    const o: GenerateOptions = { maxNewTokens: 40, temperature: 0.9, topK: 20, topP: 0.95, repetitionPenalty: 1.1, seed: 7 };
    const a = generate(m, p, o);
    assert.deepEqual(generate(m, p, o).tokens, a.tokens);
    assert.deepEqual(generate(m, p, { ...o, useCache: false }).tokens, a.tokens);
    assert.deepEqual(generate(m, p, { ...o, generator: new Generator(7) }).tokens, a.tokens);
    assert.notDeepEqual(generate(m, p, { ...o, seed: 8 }).tokens, a.tokens);
    m.dispose();
  });
}

test('top-k = 1 and a tiny top-p equal greedy; the penalty matches a hand-written greedy loop', () => {
  const m = model(ref, 'learned');
  const p = prompt(6);
  const greedy = generate(m, p, { greedy: true, maxNewTokens: 30 }).tokens;
  assert.deepEqual(generate(m, p, { topK: 1, seed: 1, maxNewTokens: 30 }).tokens, greedy);
  assert.deepEqual(generate(m, p, { topP: 1e-6, seed: 2, maxNewTokens: 30 }).tokens, greedy);
  assert.deepEqual(generate(m, p, { temperature: 0, maxNewTokens: 30 }).tokens, greedy);

  // Reference: full forward over the cropped context, penalty written out, argmax.
  const penalty = 1.5;
  const ctx = [...p];
  const want: number[] = [];
  for (let s = 0; s < 40; s++) {
    const feed = ctx.slice(-SMALL.block_size!);
    const logits = m.forward(tensor(Int32Array.from(feed), { backend: ref, shape: [1, feed.length] })).logits;
    const all = logits.data();
    logits.dispose();
    const V = SMALL.vocab_size!;
    const row = Array.from(all.subarray((feed.length - 1) * V, feed.length * V));
    for (const t of new Set(ctx)) row[t] = row[t]! > 0 ? row[t]! / penalty : row[t]! * penalty;
    let best = 0;
    for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
    ctx.push(best);
    want.push(best);
  }
  const got = generate(m, p, { greedy: true, repetitionPenalty: penalty, maxNewTokens: 40 }).tokens;
  assert.deepEqual(got, want);
  assert.notDeepEqual(got.slice(0, 30), greedy, 'the penalty should change this greedy run');
  // Without the penalty greedy decoding loops on a few tokens; with it, fewer repeats.
  const distinct = (t: number[]) => new Set(t).size;
  assert.ok(distinct(got.slice(0, 30)) > distinct(greedy), `${distinct(got.slice(0, 30))} vs ${distinct(greedy)}`);
  m.dispose();
});

test('eotToken stops generation (and ends tokens); stop strings stop and cut the text', () => {
  const m = model(ref, 'sinusoidal');
  const p = prompt(3);
  const free = generate(m, p, { greedy: true, maxNewTokens: 20 }).tokens;
  const k = free.findIndex((t, i) => i >= 2 && !free.slice(0, i).includes(t));
  const eot = free[k]!;
  const r = generate(m, p, { greedy: true, maxNewTokens: 20, eotToken: eot, decode: (ids) => ids.join(',') });
  assert.equal(r.stopReason, 'eot');
  assert.deepEqual(r.tokens, free.slice(0, k + 1));
  assert.equal(r.text, free.slice(0, k).join(','));

  // A decode in which token boundaries are not visible: ids as letters, two per id.
  const decode = (ids: number[]) => ids.map((i) => String.fromCharCode(97 + (i % 26), 97 + ((i * 7) % 26))).join('');
  const full = decode(free);
  const stop = full.slice(7, 12); // starts and ends inside tokens
  const at = full.indexOf(stop);
  let n = 1;
  while (!decode(free.slice(0, n)).includes(stop)) n++;
  const events: StreamEvent[] = [];
  const s = generate(m, p, { greedy: true, maxNewTokens: 20, decode, stopStrings: ['zzzzzz', stop], onToken: (token, text) => events.push({ token, text }) });
  assert.equal(s.stopReason, 'stop');
  assert.equal(s.stopString, stop);
  assert.deepEqual(s.tokens, free.slice(0, n));
  assert.equal(s.text, full.slice(0, at));
  assert.deepEqual(events.map((e) => e.token), s.tokens);
  assert.equal(events.map((e) => e.text).join(''), s.text); // held-back starts of the stop string never leak

  const len = generate(m, p, { greedy: true, maxNewTokens: 5, decode, stopStrings: ['zzzzzz'] });
  assert.equal(len.stopReason, 'length');
  assert.equal(len.text, decode(free.slice(0, 5)));
  assert.deepEqual(generate(m, p, { maxNewTokens: 0 }), { tokens: [], stopReason: 'length' });
  m.dispose();
});

test('bad options are rejected with one error naming each problem', () => {
  const m = model(ref);
  assert.throws(() => generate(m, [], {}), /prompt is empty/);
  assert.throws(() => generate(m, [1, 50], {}), /prompt token 50 at position 1/);
  assert.throws(() => generate(m, [1], { stopStrings: ['x'] }), /stopStrings need a decode function/);
  assert.throws(() => generate(m, [1], { topP: 0, topK: -1, temperature: -1 }), /temperature.*topK.*topP/);
  assert.throws(() => generate(m, [1], { maxNewTokens: 1.5, cacheRefill: 33 }), /maxNewTokens.*; cacheRefill/);
  m.dispose();
});

test('eval mode while generating (dropout off); training mode restored after', () => {
  const m = model(ref, 'learned', { dropout: 0.5 }).train();
  const p = prompt(4);
  let seenTraining: boolean | null = null;
  const a = generate(m, p, { greedy: true, maxNewTokens: 10, onToken: () => (seenTraining = m.transformer.drop.training) });
  assert.equal(seenTraining, false);
  assert.equal(m.training, true);
  assert.equal(m.transformer.drop.training, true);
  assert.deepEqual(generate(m, p, { greedy: true, maxNewTokens: 10 }).tokens, a.tokens); // dropout was off
  m.dispose();
});

test('live tensors are the same before and after 100-token generations', () => {
  const m = model(ref, 'rope');
  const p = prompt(5);
  const before = liveTensorCount();
  generate(m, p, { maxNewTokens: 100, seed: 1, topK: 10 }); // cache refilled several times
  assert.equal(liveTensorCount(), before);
  generate(m, p, { maxNewTokens: 100, seed: 1, useCache: false });
  assert.equal(liveTensorCount(), before);
  m.dispose();
});

// ---------------------------------------------------------------- streaming

test('streaming yields the tokens of generate(), returns its result, and stops cleanly on break', async () => {
  const m = model(ref, 'learned');
  const p = prompt(4);
  const o: GenerateOptions = { maxNewTokens: 25, seed: 3, temperature: 0.8, decode: (ids) => ids.map((i) => `<${i}>`).join('') };
  const want = generate(m, p, o);
  const it = generateStream(m, p, o);
  const tokens: number[] = [];
  let text = '';
  let r = await it.next();
  while (!r.done) {
    tokens.push(r.value.token);
    text += r.value.text;
    r = await it.next();
  }
  assert.deepEqual(tokens, want.tokens);
  assert.equal(text, want.text);
  assert.deepEqual(r.value, want);

  const before = liveTensorCount();
  let n = 0;
  for await (const e of generateStream(m, p, { ...o, useCache: true })) {
    assert.equal(e.token, want.tokens[n]);
    if (++n === 3) break; // frees the KV cache
  }
  assert.equal(liveTensorCount(), before);
  m.dispose();
});

/** A model that predicts the token after the last one in eot, ...script, eot. */
class ScriptedModel implements LanguageModel {
  training = false;
  readonly config: { block_size: number; vocab_size: number };
  private readonly next = new Map<number, number>();

  constructor(script: number[], eot: number, vocab: number, block = 64) {
    this.config = { block_size: block, vocab_size: vocab };
    this.next.set(eot, script[0]!); // the prompt is eot
    for (let i = 0; i < script.length; i++) {
      assert.ok(!this.next.has(script[i]!), 'script ids must be distinct');
      this.next.set(script[i]!, script[i + 1] ?? eot);
    }
  }
  train(mode = true): this {
    this.training = mode;
    return this;
  }
  forward(idx: Tensor): { logits: Tensor } {
    const ids = idx.data();
    const V = this.config.vocab_size;
    const out = new Float32Array(ids.length * V);
    for (let t = 0; t < ids.length; t++) out[t * V + (this.next.get(ids[t]!) ?? 0)] = 10;
    return { logits: tensor(out, { backend: idx.backend, shape: [1, ids.length, V] }) };
  }
  forwardWithCache(idx: Tensor, cache: KVCache): { logits: Tensor } {
    cache.length += idx.shape[1]!;
    return this.forward(idx);
  }
  createKVCache(): KVCache {
    return new KVCache(0);
  }
  parameters(): Tensor[] {
    return [];
  }
}

test('streaming reassembles multi-byte UTF-8 characters split across GPT-2 BPE tokens', async () => {
  const tok = await loadGpt2Tokenizer();
  const message = '日本語 😀! Hi 🤗 ok';
  const script = tok.encode(message);
  assert.ok(script.some((t) => tok.decode([t]).includes('\uFFFD')), 'some token should hold part of a character');
  const m = new ScriptedModel(script, GPT2_EOT, tok.vocabSize);
  const decode = (ids: number[]) => tok.decode(ids);
  for (const useCache of [true, false]) {
    const events: StreamEvent[] = [];
    const stream = generateStream(m, [GPT2_EOT], { greedy: true, maxNewTokens: 50, eotToken: GPT2_EOT, decode, useCache });
    for await (const e of stream) events.push(e);
    assert.deepEqual(events.map((e) => e.token), [...script, GPT2_EOT]);
    assert.equal(events.map((e) => e.text).join(''), message);
    for (const e of events) {
      assert.ok(!e.text.includes('\uFFFD'), `piece ${JSON.stringify(e.text)} holds a partial character`);
      assert.ok(!/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(e.text), 'no lone surrogates');
    }
    assert.ok(events.some((e) => e.text === ''), 'some tokens were buffered');
    assert.ok(events.some((e) => e.text.includes('😀')) && events.some((e) => e.text.includes('日')));
    const r = generate(m, [GPT2_EOT], { greedy: true, maxNewTokens: 50, eotToken: GPT2_EOT, decode, useCache });
    assert.equal(r.stopReason, 'eot');
    assert.equal(r.text, message);
  }
  // Cut short inside the emoji: the held bytes are flushed (as U+FFFD) when generation ends.
  const cut = script.findIndex((t) => tok.decode([t]).endsWith('\uFFFD') && tok.decode([t]) !== '\uFFFD');
  const pieces: string[] = [];
  const r = generate(m, [GPT2_EOT], { greedy: true, maxNewTokens: cut + 1, decode, onToken: (_t, s) => pieces.push(s) });
  assert.equal(pieces.join(''), r.text);
  assert.equal(r.text, decode(script.slice(0, cut + 1)));
  assert.ok(r.text!.endsWith('\uFFFD'));
});

test('forwardWithCache lastOnly: the last row of the full logits, for GPT and a Llama-style DecoderLM (prefill without the head on every row)', async () => {
  const { DecoderLM } = await import('../src/models/decoder.js');
  const { decoderConfigFromHF } = await import('../src/models/hf-decoder.js');
  const gpt = model(ref);
  const llama = new DecoderLM(decoderConfigFromHF({ model_type: 'llama', vocab_size: 50, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32 }), { backend: ref, seed: 5 });
  for (const m of [gpt, llama]) {
    const ids = prompt(9);
    const idx = tensor(Int32Array.from(ids), { backend: ref, dtype: 'int32', shape: [1, ids.length] });
    const full = m.forward(idx).logits.data();
    const cache = m.createKVCache();
    const last = m.forwardWithCache(idx, cache, { lastOnly: true }).logits;
    assert.deepEqual(last.shape, [1, 1, 50]);
    assert.equal(cache.length, ids.length);
    const want = full.slice(8 * 50, 9 * 50);
    const got = last.data();
    for (let i = 0; i < 50; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-5, `${i}: ${got[i]} vs ${want[i]}`);
    cache.dispose();
  }
});

test('the cpu backend reads each step\'s logits into one reused row (readInto): the same tokens as fresh reads; bad ranges refused', async () => {
  const cpu = await getBackend('cpu');
  assert.ok(cpu.readInto, 'the cpu backend has readInto');
  const m = new GPT({ ...SMALL, pos_encoding: 'learned' }, { backend: cpu, seed: 3 });
  const opts: GenerateOptions = { maxNewTokens: 12, temperature: 0.9, topK: 5, seed: 11, backend: cpu };
  const reused = generate(m, [1, 2, 3], opts).tokens;
  const readInto = cpu.readInto;
  (cpu as { readInto?: unknown }).readInto = undefined; // every step through data()
  try {
    assert.deepEqual(generate(m, [1, 2, 3], opts).tokens, reused);
  } finally {
    (cpu as { readInto?: unknown }).readInto = readInto;
  }
  const t = tensor(Float32Array.from([1, 2, 3, 4, 5]), { backend: cpu });
  const dst = new Float32Array(3);
  cpu.readInto!(t.storage, 2, dst);
  assert.deepEqual([...dst], [3, 4, 5]);
  assert.throws(() => cpu.readInto!(t.storage, 3, dst), /readInto: 3 elements at offset 3 are outside a storage of 5/);
  t.dispose();
  m.dispose();
});
