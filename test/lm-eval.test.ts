// attn eval ppl / mc: the sliding window against direct per-token computations and the model's own
// cross-entropy; multiple-choice scores against log-probabilities worked out by hand on a bigram
// table; the harness's pair encoding and acc_norm's character lengths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPT } from '../src/models/gpt.js';
import { RefBackend, tensor, noGrad, tidy, type Tensor } from '../src/index.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import {
  bitsPerByte, charLength, encodePair, loglikelihood, parseChoiceItems, scoreChoices, slidingWindowPerplexity, summariseChoices, tokenLogprobs, type ScoringModel,
} from '../src/eval/lm-eval.js';

const ref = new RefBackend();

/** A bigram "model": the logits at each position are a fixed row per input token. */
function bigram(probs: number[][], block_size: number): ScoringModel {
  const V = probs.length;
  const w = tensor([0], { backend: ref });
  return {
    config: { block_size, vocab_size: V },
    parameters: () => [w],
    forward(idx: Tensor) {
      const ids = Array.from(idx.data());
      return { logits: tensor(ids.flatMap((t) => probs[t]!.map(Math.log)), { backend: ref, dtype: 'float64', shape: [1, ids.length, V] }) };
    },
  };
}

// Rows are distributions over 4 tokens (their logs are the logits, so log-softmax returns them).
const P = [
  [0.1, 0.2, 0.3, 0.4],
  [0.25, 0.25, 0.25, 0.25],
  [0.7, 0.1, 0.1, 0.1],
  [0.05, 0.05, 0.5, 0.4],
];

test('perplexity: a bigram table, every stride, by hand', () => {
  const m = bigram(P, 4);
  const ids = [0, 3, 2, 0, 1, 3, 3, 2, 1];
  // A bigram's context does not matter: every stride gives the mean of −log P[prev][next].
  let nll = 0;
  for (let i = 1; i < ids.length; i++) nll -= Math.log(P[ids[i - 1]!]![ids[i]!]!);
  for (const stride of [1, 2, 3]) {
    const r = slidingWindowPerplexity(m, ids, { maxLength: 4, stride });
    assert.equal(r.tokens, ids.length - 1, `stride ${stride}: every token after the first, once`);
    assert.ok(Math.abs(r.nll_sum - nll) < 1e-12, `stride ${stride}: ${r.nll_sum} vs ${nll}`);
    assert.ok(Math.abs(r.ppl - Math.exp(nll / 8)) < 1e-12);
  }
  // Stride 4 with window 4: disjoint chunks [0,4) [4,8) [8,9), 3 forwards; tokens 4 and 8 start a
  // chunk and go unscored.
  const d = slidingWindowPerplexity(m, ids, { maxLength: 4, stride: 4 });
  assert.equal(d.windows, 3);
  assert.deepEqual(d.unscored, [0, 4, 8]);
  const skipped = Math.log(P[ids[3]!]![ids[4]!]!) + Math.log(P[ids[7]!]![ids[8]!]!);
  assert.ok(Math.abs(d.nll_sum - (nll + skipped)) < 1e-12 && d.tokens === 6);
  assert.equal(slidingWindowPerplexity(m, ids, { maxLength: 4, stride: 1 }).windows, 6);
  assert.ok(Math.abs(bitsPerByte(Math.LN2 * 10, 5) - 2) < 1e-15);
  assert.throws(() => slidingWindowPerplexity(m, ids, { maxLength: 4, stride: 5 }), /stride must be an integer in \[1, max_length 4\]/);
  assert.throws(() => slidingWindowPerplexity(m, ids, { maxLength: 5 }), /max_length must be an integer in \[2, 4\]/);
  assert.throws(() => slidingWindowPerplexity(m, [1]), /at least 2 are needed/);
});

test("perplexity of a GPT: one window equals the model's own cross-entropy; strides against per-token windows", () => {
  const T = 8;
  const model = new GPT({ n_layer: 2, n_head: 2, n_embd: 16, block_size: T, vocab_size: 11 }, { backend: ref, seed: 3 }).eval();
  const ids = [1, 5, 2, 9, 9, 0, 3, 7, 4, 10, 2, 6, 8, 1, 1, 5, 3];
  // A text that fits the context: the same as forward(x, y).loss, a different code path (cross_entropy).
  const short = ids.slice(0, T);
  const ce = noGrad(() => tidy(() => model.forward(tensor(short.slice(0, -1), { backend: ref, dtype: 'int32', shape: [1, T - 1] }), tensor(short.slice(1), { backend: ref, dtype: 'int32', shape: [1, T - 1] })).loss!.item()));
  const one = slidingWindowPerplexity(model, short, { stride: 3 });
  assert.equal(one.windows, 1);
  assert.ok(Math.abs(one.nll - ce) < 1e-5, `${one.nll} vs cross-entropy ${ce}`);
  // Stride 1: token t (t ≥ T) is predicted from exactly the T − 1 tokens before it.
  let nll = 0;
  for (let t = 1; t < ids.length; t++) {
    const ctx = ids.slice(Math.max(0, t - (T - 1)), t + 1);
    const lp = tokenLogprobs(model, ctx);
    nll -= lp[lp.length - 1]!;
  }
  const r1 = slidingWindowPerplexity(model, ids, { stride: 1 });
  assert.ok(Math.abs(r1.nll_sum - nll) < 1e-4, `stride 1: ${r1.nll_sum} vs ${nll}`);
  // Stride T: disjoint chunks, each on its own; a chunk's first token has nothing to be predicted
  // from (the guide's shift leaves it out too), so n − ⌈n/T⌉ tokens are scored.
  let chunks = 0;
  for (let b = 0; b < ids.length; b += T) chunks -= tokenLogprobs(model, ids.slice(b, b + T)).reduce((s, v) => s + v, 0);
  const rT = slidingWindowPerplexity(model, ids, { stride: T });
  assert.ok(Math.abs(rT.nll_sum - chunks) < 1e-4, `stride T: ${rT.nll_sum} vs ${chunks}`);
  assert.equal(rT.tokens, ids.length - Math.ceil(ids.length / T));
  assert.deepEqual(rT.unscored, [0, 8, 16]);
  assert.deepEqual(r1.unscored, [0]);
  assert.equal(r1.tokens, ids.length - 1);
  model.dispose();
});

test('multiple choice: log-likelihoods, acc and acc_norm by hand on the bigram table', () => {
  const m = bigram(P, 16);
  // Characters a, b, c, d are tokens 0..3; the space delimiter is left out (delimiter '').
  const encode = (s: string): number[] => [...s].map((c) => 'abcd'.indexOf(c));
  const item = { context: 'ad', choices: ['c', 'ca', 'bbbb'], label: 1 };
  const s = scoreChoices(m, encode, item, '');
  const l = Math.log;
  // After 'd' (token 3): P(c|d) = 0.5; 'ca' adds P(a|c) = 0.7; 'bbbb' = P(b|d)·P(b|b)³ = 0.05·0.25³.
  const want = [l(0.5), l(0.5) + l(0.7), l(0.05) + 3 * l(0.25)];
  s.loglikelihoods.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-12, `choice ${i}: ${v} vs ${want[i]}`));
  assert.equal(s.pred, 0); // log 0.5 is the largest sum
  // Per character: −0.693, −0.525, −1.386: 'ca' wins acc_norm.
  assert.equal(s.pred_norm, 1);
  assert.deepEqual(s.greedy, [true, true, false]); // c is the argmax after d, a after c; b is not after d
  const sum = summariseChoices([item, { ...item, label: 0 }], [s, s]);
  assert.equal(sum.acc, 0.5);
  assert.equal(sum.acc_norm, 0.5);
  assert.ok(Math.abs(sum.acc_stderr - Math.sqrt(0.25 / 1)) < 1e-12);
  // Too long for the window: cut from the left, the continuation kept whole.
  const small = bigram(P, 3);
  const cut = loglikelihood(small, [0, 1, 2, 3, 2], [0, 1]);
  assert.ok(Math.abs(cut.ll - (l(0.7) + l(0.2))) < 1e-12);
  assert.throws(() => loglikelihood(small, [0], [1, 2, 3, 0]), /does not fit the model's context of 3/);
});

test("the harness's pair encoding, character lengths and item parsing", () => {
  const tok = CharTokenizer.fromText('abc xyz\n');
  const enc = (s: string): number[] => tok.encode(s);
  // Trailing spaces of the context move to the continuation.
  const [ctx, cont] = encodePair(enc, 'abc ', 'xy');
  assert.deepEqual(ctx, enc('abc'));
  assert.deepEqual(cont, enc(' xy'));
  // A tokenizer that merges across the boundary: the merged token goes with the continuation.
  const merging = (s: string): number[] => (s.endsWith('ab') ? [...s.slice(0, -2)].map((c) => c.charCodeAt(0)).concat([999]) : [...s].map((c) => c.charCodeAt(0)));
  assert.deepEqual(encodePair(merging, 'xa', 'bb'), [[120, 97], [98, 98]]);
  assert.deepEqual(encodePair(merging, 'x', 'ab'), [[120], [999]]);
  assert.equal(charLength('né😀'), 3);
  const items = parseChoiceItems('{"context":"q","choices":["a","b"],"label":1}\n\n', 'x.jsonl');
  assert.equal(items.length, 1);
  assert.throws(() => parseChoiceItems('{"context":"q","choices":["a"],"label":0}', 'x.jsonl'), /x\.jsonl:1: 'choices' must be an array of at least 2/);
  assert.throws(() => parseChoiceItems('{"context":"q","choices":["a","b"],"label":2}', 'x.jsonl'), /'label' must be an integer index into choices \(0 to 1\), got 2/);
  assert.throws(() => parseChoiceItems('nope', 'x.jsonl'), /x\.jsonl:1: not a JSON object/);
});

test('every model family attn loads: perplexity and a continuation log-likelihood against PyTorch log-softmax fixtures', async () => {
  const { loadModelDir } = await import('../src/cli/common.js');
  const { readFileSync } = await import('node:fs');
  const dirs = ['gpt2-tiny', ...['llama', 'llama-tied-bias', 'mistral', 'phi', 'qwen2', 'qwen3'].map((f) => `hf-decoders/${f}`)];
  for (const d of dirs) {
    const dir = `test/fixtures/${d}`;
    const exp = JSON.parse(readFileSync(`${dir}/expected.json`, 'utf8')) as { tokens?: number[]; log_softmax?: number[]; sequences?: { tokens: number[]; next_token_logprobs: number[] }[] };
    // gpt2-tiny stores next-token log-probabilities; the decoder fixtures the full log-softmax.
    const ids = exp.tokens ?? exp.sequences![0]!.tokens;
    const model = await loadModelDir('test', dir, ref);
    const V = model.config.vocab_size;
    const lp = exp.log_softmax ? ids.slice(1).map((t, i) => exp.log_softmax![i * V + t]!) : exp.sequences![0]!.next_token_logprobs;
    const n = Math.min(ids.length, model.config.block_size);
    const want = -lp.slice(0, n - 1).reduce((s, v) => s + v, 0);
    const r = slidingWindowPerplexity(model, ids.slice(0, n), { stride: 1 });
    assert.ok(Math.abs(r.nll_sum - want) < 1e-3 * Math.max(1, want), `${d}: nll ${r.nll_sum} vs PyTorch ${want}`);
    const k = Math.floor(n / 2);
    const ll = loglikelihood(model, ids.slice(0, k), ids.slice(k, n)).ll;
    const wantLl = lp.slice(k - 1, n - 1).reduce((s, v) => s + v, 0);
    assert.ok(Math.abs(ll - wantLl) < 1e-3 * Math.max(1, Math.abs(wantLl)), `${d}: log-likelihood ${ll} vs PyTorch ${wantLl}`);
    model.dispose();
  }
});
