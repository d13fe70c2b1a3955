// Parity of T5 (T5ForConditionalGeneration, model_type "t5") with an independent PyTorch
// float64 reference (tools/t5_reference.py): two tiny random-weight checkpoints in the Hugging
// Face layout under test/fixtures/hf-t5 — v1.0 (relu, lm_head tied to `shared` with the
// d_model^-0.5 rescale, float32, with the embed_tokens copies in the file) and v1.1 (gated-gelu,
// separate lm_head, bfloat16 on disk) — each with the log-softmax of every decoder position for
// a padded source batch, the loss of given labels and 8 greedy tokens. Sequences of 20 tokens
// pass relative_attention_max_distance (16). Checked: logits, loss, greedy decoding, the KV
// cache, the save round trip, refusals of bad checkpoints and configs, one training step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AdamW, getBackend, logSoftmax, noGrad, tensor, tidy, withMatmulPrecision, type Tensor } from '../src/index.js';
import { readSafetensorsFile, writeSafetensorsFile } from '../src/io/files.js';
import type { TensorEntry } from '../src/io/safetensors.js';
import { loadT5Dir, saveT5Dir } from '../src/models/hf-t5-files.js';
import { t5ConfigFromHF, t5ConfigToHF } from '../src/models/hf-t5.js';
import { relativePositionBucket, t5Config, T5Model } from '../src/models/t5.js';

const ROOT = fileURLToPath(new URL('../../test/fixtures/hf-t5', import.meta.url));
const CASES = readdirSync(ROOT).sort();
const cpu = await getBackend('cpu');

interface Expected {
  vocab_size: number;
  src_ids: number[][];
  src_mask: number[][];
  labels: number[][];
  decoder_input_ids: number[][];
  log_softmax: number[];
  loss: number;
  greedy: { max_new_tokens: number; eos_token_id: number; tokens: number[][] };
}
const expectedOf = (c: string): Expected => JSON.parse(readFileSync(join(ROOT, c, 'expected.json'), 'utf8')) as Expected;
const ids = (rows: number[][]): Tensor => tensor(Int32Array.from(rows.flat()), { backend: cpu, dtype: 'int32', shape: [rows.length, rows[0]!.length] });

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Log-softmax (B·T·V) and loss of the full (teacher-forced) forward. */
function fullForward(model: T5Model, exp: Expected): { lp: number[]; loss: number } {
  return noGrad(() => tidy(() => {
    const out = model.forward(ids(exp.src_ids), ids(exp.decoder_input_ids), ids(exp.labels), { srcMask: ids(exp.src_mask) });
    return { lp: [...logSoftmax(out.logits, -1).data()], loss: out.loss!.item() };
  }));
}

/** Log-softmax (B·T·V) by decodeStep: `prefill` tokens, then one token per step. */
function cachedForward(model: T5Model, exp: Expected, prefill: number): number[] {
  const B = exp.decoder_input_ids.length;
  const T = exp.decoder_input_ids[0]!.length;
  const V = exp.vocab_size;
  const rows: number[][] = Array.from({ length: B }, () => []);
  const cache = model.createCache();
  try {
    noGrad(() => {
      const mask = ids(exp.src_mask).keep();
      const enc = tidy(() => model.encode(ids(exp.src_ids), mask)).keep();
      for (let at = 0; at < T;) {
        const n = at === 0 ? prefill : 1;
        tidy(() => {
          const step = exp.decoder_input_ids.map((r) => r.slice(at, at + n));
          const lp = logSoftmax(model.decodeStep(ids(step), enc, cache, mask), -1).data();
          for (let b = 0; b < B; b++) rows[b]!.push(...lp.slice(b * n * V, (b + 1) * n * V));
        });
        at += n;
      }
      enc.dispose();
      mask.dispose();
    });
  } finally {
    cache.dispose();
  }
  return rows.flat();
}

const unpadded = (exp: Expected): number[][] => exp.src_ids.map((r, b) => r.filter((_, s) => exp.src_mask[b]![s] === 1));

for (const c of CASES) {
  test(`hf t5 ${c}: log-probabilities, loss and greedy tokens match the PyTorch reference`, async (t) => {
    const exp = expectedOf(c);
    const { model, config } = await loadT5Dir(join(ROOT, c), { backend: cpu });
    try {
      assert.equal(model.numParameters(), T5Model.countParameters(config));
      const { lp, loss } = fullForward(model, exp);
      const d = maxDiff(lp, exp.log_softmax);
      const dl = Math.abs(loss - exp.loss);
      t.diagnostic(`${c}: ${exp.log_softmax.length / exp.vocab_size} positions, max |attn - torch| log-prob ${d.toExponential(2)}, loss ${dl.toExponential(2)}`);
      assert.ok(d < 1e-4, `${c}: log-probabilities differ by ${d}`);
      assert.ok(dl < 1e-5, `${c}: loss ${loss} vs ${exp.loss}`);

      const cached = cachedForward(model, exp, 3);
      const dc = maxDiff(cached, exp.log_softmax);
      const dcu = maxDiff(cached, lp);
      t.diagnostic(`${c}: KV cache (prefill 3, then 1 token per step) vs torch ${dc.toExponential(2)}, vs uncached ${dcu.toExponential(2)}`);
      assert.ok(dc < 1e-4 && dcu < 1e-5, `${c}: cached decoding differs by ${dc} (torch), ${dcu} (uncached)`);

      const g = exp.greedy;
      const src = unpadded(exp);
      const greedy = model.greedyGenerate(src, { maxNewTokens: g.max_new_tokens, eosTokenId: g.eos_token_id });
      assert.deepEqual(greedy, g.tokens, `${c}: greedy tokens`);
      assert.deepEqual(model.greedyGenerate(src, { maxNewTokens: g.max_new_tokens, useCache: false }), g.tokens, `${c}: uncached greedy tokens`);
      // Another end-of-sequence id: each row stops right after its first occurrence.
      const stop = g.tokens[0]![2]!;
      const want = g.tokens.map((r) => (r.includes(stop) ? r.slice(0, r.indexOf(stop) + 1) : r));
      assert.deepEqual(model.greedyGenerate(src, { maxNewTokens: g.max_new_tokens, eosTokenId: stop }), want);
      assert.deepEqual(model.greedyGenerate(src, { maxNewTokens: g.max_new_tokens, eosTokenId: stop, useCache: false }), want);
      // One row alone (no padding) generates what it does in the batch.
      assert.deepEqual(model.greedyGenerate([src[1]!], { maxNewTokens: g.max_new_tokens }), [g.tokens[1]]);
    } finally {
      model.dispose();
    }
  });
}

test('t5: bfloat16 weights and bfloat16 matmuls stay close to the float64 reference', async (t) => {
  for (const c of CASES) {
    const exp = expectedOf(c);
    const { model } = await loadT5Dir(join(ROOT, c), { backend: cpu });
    try {
      model.halfWeights('bfloat16');
      const { lp } = withMatmulPrecision('bfloat16', () => fullForward(model, exp));
      const d = maxDiff(lp, exp.log_softmax);
      t.diagnostic(`${c} bf16: max diff ${d.toFixed(4)}`);
      assert.ok(d < 0.15, `${c}: bf16 differs by ${d}`);
      assert.deepEqual(model.greedyGenerate(unpadded(exp), { maxNewTokens: exp.greedy.max_new_tokens }), exp.greedy.tokens);
    } finally {
      model.dispose();
    }
  }
});

test('t5 relative position buckets follow the published rule (values from the Python reference)', () => {
  const bi = (nb: number, md: number, from: number, to: number, step = 1): number[] => {
    const out: number[] = [];
    for (let r = from; r <= to; r += step) out.push(relativePositionBucket(r, true, nb, md));
    return out;
  };
  // key − query from −20 to 20, 8 buckets, max_distance 16
  assert.deepEqual(bi(8, 16, -20, 20), [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 1, 0, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
  assert.deepEqual(Array.from({ length: 25 }, (_, d) => relativePositionBucket(-d, false, 8, 16)), [0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
  assert.equal(relativePositionBucket(5, false, 8, 16), 0, 'causal: a later key is bucket 0');
  // t5-small's 32 buckets and max_distance 128
  assert.deepEqual(bi(32, 128, -140, 140, 7), [15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 14, 13, 13, 13, 12, 12, 11, 10, 9, 7, 0, 23, 25, 26, 27, 28, 28, 29, 29, 29, 30, 30, 30, 31, 31, 31, 31, 31, 31, 31, 31]);
  assert.deepEqual(Array.from({ length: 23 }, (_, i) => relativePositionBucket(-9 * i, false, 32, 128)), [0, 9, 16, 20, 22, 23, 25, 26, 27, 28, 29, 30, 30, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31]);
});

test('t5 config.json: defaults, round trip, and clear refusals', () => {
  const base = JSON.parse(readFileSync(join(ROOT, 't5-v1_0-tied-relu', 'config.json'), 'utf8')) as Record<string, unknown>;
  const cfg = t5ConfigFromHF(base);
  assert.equal(cfg.num_decoder_layers, cfg.num_layers, 'num_decoder_layers defaults to num_layers');
  assert.equal(cfg.tie_word_embeddings, true, 'tie_word_embeddings defaults to true');
  assert.equal(cfg.feed_forward_proj, 'relu');
  const hf = t5ConfigToHF(cfg, base);
  assert.deepEqual(t5ConfigFromHF(hf), cfg);
  assert.equal(hf['dropout_rate'], 0.1, 'fields attn does not model are kept');
  assert.deepEqual(hf['architectures'], ['T5ForConditionalGeneration']);
  const v11 = t5ConfigFromHF(JSON.parse(readFileSync(join(ROOT, 't5-v1_1-gated-gelu', 'config.json'), 'utf8')) as Record<string, unknown>);
  assert.equal(v11.feed_forward_proj, 'gated-gelu');
  assert.equal(v11.tie_word_embeddings, false);
  assert.equal(t5ConfigToHF(v11)['dense_act_fn'], 'gelu_new');
  assert.throws(() => t5ConfigFromHF({ ...base, feed_forward_proj: 'gated-silu' }), /feed_forward_proj "gated-silu" is not supported \(supported: 'relu', 'gated-gelu'\)/);
  assert.throws(() => t5ConfigFromHF({ ...base, model_type: 'mt5' }), /model_type "mt5" is not 't5'/);
  assert.throws(() => t5ConfigFromHF({ ...base, d_kv: 0 }), /'d_kv' must be an integer >= 1/);
  assert.throws(() => t5ConfigFromHF({ ...base, eos_token_id: 4800 }), /eos_token_id must be an id in \[0, 48\)/);
  assert.throws(() => t5Config({ vocab_size: 10, d_model: 8, d_kv: 2, d_ff: 8, num_layers: 1, num_heads: 2, feed_forward_proj: 'gelu' as never }), /feed_forward_proj/);
});

test('t5: save writes the Hugging Face layout and loads back to the same logits', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-t5-'));
  try {
    for (const c of CASES) {
      const exp = expectedOf(c);
      const a = await loadT5Dir(join(ROOT, c), { backend: cpu });
      await saveT5Dir(a.model, join(dir, c), { hfConfig: a.hfConfig });
      const b = await loadT5Dir(join(dir, c), { backend: cpu });
      assert.deepEqual(b.config, a.config);
      assert.deepEqual(fullForward(b.model, exp), fullForward(a.model, exp), `${c}: round trip changed the logits`);
      const names = [...(await readSafetensorsFile(join(dir, c, 'model.safetensors'))).tensors.keys()].sort();
      assert.deepEqual(names, [...a.model.stateDict().keys()].sort());
      assert.ok(names.includes('shared.weight') && !names.includes('encoder.embed_tokens.weight'));
      assert.equal(names.includes('lm_head.weight'), !a.config.tie_word_embeddings);
      const saved = JSON.parse(readFileSync(join(dir, c, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(saved['model_type'], 't5');
      assert.equal(saved['feed_forward_proj'], a.config.feed_forward_proj);
      // bfloat16 on disk: the v1.1 fixture's values are bfloat16 already, so exact again.
      await saveT5Dir(a.model, join(dir, `${c}-bf16`), { hfConfig: a.hfConfig, dtype: 'bfloat16' });
      const st = await readSafetensorsFile(join(dir, `${c}-bf16`, 'model.safetensors'));
      assert.ok([...st.tensors.values()].every((e) => e.dtype === 'BF16'));
      if (c.includes('v1_1')) {
        const h = await loadT5Dir(join(dir, `${c}-bf16`), { backend: cpu });
        assert.deepEqual(fullForward(h.model, exp), fullForward(a.model, exp));
        h.model.dispose();
      }
      a.model.dispose();
      b.model.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('t5: embed_tokens / tied lm_head copies are accepted; a missing, unexpected or mis-shaped tensor is refused naming it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-t5-bad-'));
  try {
    const src = join(ROOT, 't5-v1_0-tied-relu');
    const exp = expectedOf('t5-v1_0-tied-relu');
    const st = await readSafetensorsFile(join(src, 'model.safetensors'));
    const write = async (name: string, edit: (m: Map<string, TensorEntry>) => void): Promise<string> => {
      const m = new Map<string, TensorEntry>([...st.tensors].map(([k, e]) => [k, { dtype: 'F32', shape: e.shape, data: e.data }]));
      edit(m);
      const d = join(dir, name);
      await mkdir(d, { recursive: true });
      await cp(join(src, 'config.json'), join(d, 'config.json'));
      await writeSafetensorsFile(join(d, 'model.safetensors'), m);
      return d;
    };
    const ref = await loadT5Dir(src, { backend: cpu });
    const want = fullForward(ref.model, exp);
    ref.model.dispose();
    // Only a stack's embed_tokens copy, no shared.weight; and a tied lm_head.weight copy.
    const onlyCopy = await write('only-copy', (m) => {
      m.set('lm_head.weight', m.get('shared.weight')!);
      m.delete('shared.weight');
      m.delete('decoder.embed_tokens.weight');
    });
    const l = await loadT5Dir(onlyCopy, { backend: cpu });
    assert.deepEqual(fullForward(l.model, exp), want);
    l.model.dispose();

    // Sharded: two files and model.safetensors.index.json (bf16 v1.1 fixture's tensors split in two).
    const v11 = join(ROOT, 't5-v1_1-gated-gelu');
    const st11 = await readSafetensorsFile(join(v11, 'model.safetensors'));
    const sharded = join(dir, 'sharded');
    await mkdir(sharded, { recursive: true });
    await cp(join(v11, 'config.json'), join(sharded, 'config.json'));
    const all = [...st11.tensors.keys()].sort();
    const weightMap: Record<string, string> = {};
    for (const [i, part] of [all.slice(0, 20), all.slice(20)].entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await writeSafetensorsFile(join(sharded, file), new Map(part.map((k) => [k, { dtype: 'BF16' as const, shape: st11.tensors.get(k)!.shape, data: st11.tensors.get(k)!.data }])));
      for (const k of part) weightMap[k] = file;
    }
    await writeFile(join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const exp11 = expectedOf('t5-v1_1-gated-gelu');
    const [s1, s2] = [await loadT5Dir(sharded, { backend: cpu }), await loadT5Dir(v11, { backend: cpu })];
    assert.deepEqual(fullForward(s1.model, exp11), fullForward(s2.model, exp11), 'sharded load');
    s1.model.dispose();
    s2.model.dispose();

    const missing = await write('missing', (m) => m.delete('decoder.block.1.layer.2.DenseReluDense.wo.weight'));
    await assert.rejects(loadT5Dir(missing, { backend: cpu }), /missing tensor 'decoder\.block\.1\.layer\.2\.DenseReluDense\.wo\.weight' \[16, 32\]/);
    const noShared = await write('no-shared', (m) => {
      for (const k of ['shared.weight', 'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight']) m.delete(k);
    });
    await assert.rejects(loadT5Dir(noShared, { backend: cpu }), /missing tensor 'shared\.weight' \[48, 16\]/);
    const shaped = await write('shaped', (m) => m.set('encoder.block.0.layer.0.SelfAttention.q.weight', { dtype: 'F32', shape: [12, 16], data: new Float32Array(192) }));
    await assert.rejects(loadT5Dir(shaped, { backend: cpu }), /tensor 'encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight' has shape \[12, 16\], the model expects \[16, 16\]/);
    const bias = await write('bias', (m) => m.set('encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight', { dtype: 'F32', shape: [8, 4], data: new Float32Array(32) }));
    await assert.rejects(loadT5Dir(bias, { backend: cpu }), /unexpected tensor 'encoder\.block\.1\.layer\.0\.SelfAttention\.relative_attention_bias\.weight' \[8, 4\]/);
    const copyShape = await write('copy-shape', (m) => m.set('encoder.embed_tokens.weight', { dtype: 'F32', shape: [47, 16], data: new Float32Array(47 * 16) }));
    await assert.rejects(loadT5Dir(copyShape, { backend: cpu }), /'encoder\.embed_tokens\.weight' has shape \[47, 16\], the model expects \[48, 16\] \(that of shared\.weight\)/);
    const badCfg = join(dir, 'bad-config');
    await mkdir(badCfg, { recursive: true });
    await writeFile(join(badCfg, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')), feed_forward_proj: 'gated-silu' }));
    await assert.rejects(loadT5Dir(badCfg, { backend: cpu }), /config\.json: t5ConfigFromHF: feed_forward_proj "gated-silu" is not supported/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('t5 training: finite gradients on every parameter, and AdamW lowers the loss', async (t) => {
  for (const c of CASES) {
    const exp = expectedOf(c);
    const { model } = await loadT5Dir(join(ROOT, c), { backend: cpu });
    model.train();
    const opt = new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0 });
    const losses: number[] = [];
    for (let step = 0; step < 6; step++) {
      tidy(() => {
        // No decoder inputs: they are the labels shifted right.
        const { loss } = model.forward(ids(exp.src_ids), null, ids(exp.labels), { srcMask: ids(exp.src_mask) });
        losses.push(loss!.item());
        loss!.backward();
      });
      if (step === 0) {
        assert.ok(Math.abs(losses[0]! - exp.loss) < 1e-5, `${c}: loss with shifted labels ${losses[0]} vs ${exp.loss}`);
        for (const [name, p] of model.namedParameters()) {
          assert.ok(p.grad, `${c}: ${name} has no gradient`);
          const g = p.grad.data();
          assert.ok(g.every((v) => Number.isFinite(v)), `${c}: ${name} has a non-finite gradient`);
          assert.ok(g.some((v) => v !== 0), `${c}: ${name} has an all-zero gradient`);
        }
      }
      opt.stepUpdate();
      opt.zeroGrad();
    }
    t.diagnostic(`${c}: AdamW losses ${losses.map((l) => l.toFixed(3)).join(' -> ')}`);
    assert.ok(losses[losses.length - 1]! < losses[0]! - 0.3, `${c}: losses ${losses.map((l) => l.toFixed(3)).join(' -> ')}`);
    model.dispose();
  }
  // From scratch: a fresh model's parameter count and stateDict names are the Hugging Face ones.
  const cfg = t5Config({ vocab_size: 40, d_model: 8, d_kv: 3, d_ff: 12, num_layers: 1, num_decoder_layers: 2, num_heads: 2, feed_forward_proj: 'gated-gelu', tie_word_embeddings: false });
  const m = new T5Model(cfg, { backend: cpu, seed: 3 });
  assert.equal(m.numParameters(), T5Model.countParameters(cfg));
  const names = [...m.stateDict().keys()];
  assert.ok(names.includes('decoder.block.1.layer.1.EncDecAttention.o.weight') && names.includes('lm_head.weight') && names.includes('encoder.block.0.layer.1.DenseReluDense.wi_1.weight'));
  assert.equal(names.filter((n) => n.includes('relative_attention_bias')).length, 2);
  m.dispose();
});

test('attn translate with a T5 directory and a Unigram tokenizer.json: --prefix, greedy, the tokens of greedyGenerate', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-t5-translate-'));
  try {
    const src = join(ROOT, 't5-v1_1-gated-gelu');
    for (const f of ['config.json', 'model.safetensors']) await cp(join(src, f), join(dir, f));
    await writeUnigramTokenizer(dir, src);
    const lines = ['Ein Hund und die Katze', '', 'die katze'];
    const { spawnSync } = await import('node:child_process');
    const cliPath = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const r = spawnSync(process.execPath, [cliPath, 'translate', '--model', dir, '--prefix', 'translate German to English: ', '--max_len_b', '6', '--max_len_a', '0'], { input: `${lines.join('\n')}\n`, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const got = r.stdout.split('\n');
    assert.equal(got.length, lines.length + 1);
    assert.equal(got[1], '');
    // The same through the library.
    const { loadTokenizer } = await import('../src/tokenizers/index.js');
    const tok = await loadTokenizer(dir) as unknown as { encode(t: string): number[]; decode(ids: number[], o?: { skipSpecialTokens?: boolean }): string };
    const { model } = await loadT5Dir(dir, { backend: cpu });
    const srcIds = tok.encode('translate German to English: Ein Hund und die Katze');
    assert.equal(srcIds[srcIds.length - 1], 1, 'the source ends with </s>');
    const [want] = model.greedyGenerate([srcIds], { maxNewTokens: 6 });
    assert.equal(got[0], tok.decode(want!, { skipSpecialTokens: true }).trim());
    model.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A Unigram tokenizer.json of the fixture's vocabulary size (letters, a few ▁words, fillers) into dir. */
async function writeUnigramTokenizer(dir: string, fixture: string): Promise<void> {
  const V = (JSON.parse(readFileSync(join(fixture, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;
  const pieces: [string, number][] = [['<pad>', 0], ['</s>', 0], ['<unk>', 0], ['\u2581', -2]];
  for (const c of 'abcdefghijklmnopqrstuvwxyz:') pieces.push([c, -5]);
  for (const w of ['the', 'dog', 'cat', 'runs', 'translate', 'german', 'to', 'english', 'ein', 'hund', 'und', 'die', 'katze', 'is', 'a', 'on']) if (pieces.length < V) pieces.push([`\u2581${w}`, -3]);
  while (pieces.length < V) pieces.push([`<extra_id_${pieces.length}>`, -20]);
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', added_tokens: [special('<pad>', 0), special('</s>', 1), special('<unk>', 2)], normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true },
    post_processor: { type: 'TemplateProcessing', single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }], pair: [], special_tokens: { '</s>': { id: '</s>', ids: [1], tokens: ['</s>'] } } },
    decoder: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 2, vocab: pieces, byte_fallback: false },
  }));
}

test('attn train --task translation --init_from a T5 directory: fine-tunes on Multi30k (val loss falls), saves a T5 directory that loads', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-t5-ft-'));
  try {
    const src = join(ROOT, 't5-v1_1-gated-gelu');
    const base = join(dir, 'base');
    await mkdir(base, { recursive: true });
    for (const f of ['config.json', 'model.safetensors']) await cp(join(src, f), join(base, f));
    await writeUnigramTokenizer(base, src);
    const { trainSeq2Seq } = await import('../src/tasks/translation.js');
    const r = await trainSeq2Seq({
      init_from: base, dataset: fileURLToPath(new URL('../../data/multi30k', import.meta.url)), train_limit: 256, val_limit: 32, batch_size: 16,
      max_iters: 12, eval_interval: 6, block_size: 32, source_prefix: 'translate german to english: ', learning_rate: 3e-3, lr_decay: 'constant',
      warmup_iters: 0, out_dir: join(dir, 'out'), decode_len_b: 4, decode_len_a: 0,
    });
    const evals = readFileSync(join(dir, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { val_loss?: number }).filter((l) => l.val_loss !== undefined).map((l) => l.val_loss!);
    t.diagnostic(`val loss ${evals.map((v) => v.toFixed(3)).join(' -> ')}; best BLEU ${r.best_val_bleu}`);
    assert.ok(evals.length >= 2 && evals[evals.length - 1]! < evals[0]!, `val loss ${evals.join(' -> ')}`);
    const saved = JSON.parse(readFileSync(join(dir, 'out', 'last', 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(saved['model_type'], 't5');
    const again = await loadT5Dir(join(dir, 'out', 'last'), { backend: cpu });
    again.model.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a T5 with a real SentencePiece tokenizer.json (Precompiled + Unigram): attn translate runs end to end', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-t5-spm-'));
  try {
    const model = new T5Model(t5Config({ vocab_size: 1000, d_model: 16, d_kv: 4, d_ff: 32, num_layers: 1, num_heads: 2, relative_attention_num_buckets: 8, relative_attention_max_distance: 16, feed_forward_proj: 'gated-gelu', tie_word_embeddings: false }), { backend: cpu, seed: 3 });
    await saveT5Dir(model, dir);
    model.dispose();
    await cp(fileURLToPath(new URL('../../test/fixtures/spm-t5/tokenizer.json', import.meta.url)), join(dir, 'tokenizer.json'));
    const { spawnSync } = await import('node:child_process');
    const cliPath = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const r = spawnSync(process.execPath, [cliPath, 'translate', '--model', dir, '--prefix', 'translate German to English: ', '--max_len_a', '0', '--max_len_b', '5'],
      { input: 'Ein Hund läuft über die Ｗｉｅｓｅ.\nZwei Männer.\n', encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.split('\n').length, 3);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('attn finetune translation --init_from a T5 directory runs through the CLI', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-t5-cli-'));
  try {
    const src = join(ROOT, 't5-v1_0-tied-relu');
    for (const f of ['config.json', 'model.safetensors']) await cp(join(src, f), join(dir, f));
    await writeUnigramTokenizer(dir, src);
    const { spawnSync } = await import('node:child_process');
    const cliPath = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const r = spawnSync(process.execPath, [cliPath, 'finetune', 'translation', '--init_from', dir, '--dataset', fileURLToPath(new URL('../../data/multi30k', import.meta.url)),
      '--train_limit', '64', '--val_limit', '8', '--max_iters', '2', '--eval_interval', '2', '--warmup_iters', '0', '--out', join(dir, 'out'), '--quiet'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /fine-tuning .* \(T5, 2\+2 layers, 16 wide\): 64 training and 8 validation pairs, prefix "translate German to English: "/);
    const saved = JSON.parse(readFileSync(join(dir, 'out', 'last', 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(saved['model_type'], 't5');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
