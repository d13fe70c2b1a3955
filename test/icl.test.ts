// The in-context-learning probes: score functions on hand-made attention patterns and OV
// matrices, the regression baselines on hand-checked cases, the probe model's explicit attention
// against the fused kernel, the few-shot prompt and scoring, and a tiny end-to-end run of each task.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  averagingWeights, copyingScore, headScores, iclScore, iclWindows, leastSquaresWeights, nearestNeighboursPredict, repeatedRandomTokens,
} from '../src/eval/icl.js';
import { answerStrings, calibratedAnswer, fewShotAccuracy, fewShotPrompt, readLabeledTsv, scoreContinuations, type ScoringModel } from '../src/eval/few-shot.js';
import { ProbeLM, VectorTransformer } from '../src/models/probe-transformer.js';
import { baselinePredictions, curriculumAt, curriculumProblems, errorByExamples, promptVectors, regressionTask, sampleRegressionPrompts } from '../src/tasks/icl-regression.js';
import { inductionTask, ovCircuits } from '../src/tasks/induction.js';
import { runTraining } from '../src/train/loop.js';
import { openDevice } from '../src/backend/index.js';
import { prepareDataset } from '../src/data/files.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { Generator, tensor, type Tensor } from '../src/tensor/index.js';

const close = (a: number, b: number, tol = 1e-9, what = ''): void => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} vs ${b}`);

test('ICL score: late-window mean minus early-window mean', () => {
  const T = 256;
  const w = iclWindows(T);
  assert.deepEqual(w, { early: [22, 31], late: [240, 256] });
  // Loss 3 early, falling linearly to 2 at the end: late window mean minus early window mean.
  const curve = Array.from({ length: T }, (_, t) => 3 - t / (T - 1));
  const late = (3 - 240 / 255 + 3 - 255 / 255) / 2;
  const early = 3 - 26 / 255; // the mean of positions 22..30
  close(iclScore(curve), late - early, 1e-12);
  close(iclScore(new Array(T).fill(1.5)), 0, 1e-12);
  assert.throws(() => iclScore([1, 2], { early: [5, 6], late: [0, 1] }), /holds no position/);
});

test('repeated random tokens: two equal halves, distinct tokens in a half', () => {
  const t = repeatedRandomTokens(new Generator(3), 10, 6, 4);
  assert.equal(t.length, 4 * 12);
  for (let b = 0; b < 4; b++) {
    const row = Array.from(t.slice(b * 12, b * 12 + 12));
    assert.deepEqual(row.slice(0, 6), row.slice(6));
    assert.equal(new Set(row.slice(0, 6)).size, 6);
    assert.ok(row.every((v) => v >= 0 && v < 10));
  }
});

/** One head's (T, T) pattern from a rule: query i → the key it puts all its weight on. */
function oneHot(T: number, target: (i: number) => number): number[] {
  const p = new Array<number>(T * T).fill(0);
  for (let i = 0; i < T; i++) p[i * T + target(i)] = 1;
  return p;
}

test('head scores on hand-made patterns: an induction head, a previous-token head, a uniform head', () => {
  // Tokens a b c d a b c d (n = 4); inputs are the first 2n − 1 = 7.
  const tokens = [0, 1, 2, 3, 0, 1, 2];
  const T = 7;
  const n = 4;
  // Induction head: query i ≥ n attends to i − n + 1 (the token after the earlier copy of token i).
  const induction = oneHot(T, (i) => (i >= n ? i - n + 1 : 0));
  const previous = oneHot(T, (i) => Math.max(0, i - 1));
  const uniform: number[] = [];
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) uniform.push(j <= i ? 1 / (i + 1) : 0);
  const s = headScores([...induction, ...previous, ...uniform], tokens, 1, 3, T, n);
  close(s.prefixMatching[0]!, 1, 1e-12, 'induction head prefix matching');
  close(s.prefixMatching[1]!, 0, 1e-12, 'previous-token head prefix matching');
  // Uniform: queries 4, 5, 6 see 5, 6, 7 keys, one of which is the prefix match.
  close(s.prefixMatching[2]!, (1 / 5 + 1 / 6 + 1 / 7) / 3, 1e-12, 'uniform prefix matching');
  close(s.previousToken[1]!, 1, 1e-12, 'previous-token head');
  // Induction head: query i ≥ 4 looks at i − 3 (never i − 1); queries 1..3 look at 0, which is i − 1 for i = 1.
  close(s.previousToken[0]!, 1 / 6, 1e-12, 'induction head previous token');
  close(s.previousToken[2]!, (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5 + 1 / 6 + 1 / 7) / 6, 1e-12, 'uniform previous token');
  assert.throws(() => headScores([1, 2], tokens, 1, 1, T, n), /expected B·H·T·T/);
});

test('copying score of hand-made OV matrices', () => {
  const V = 5;
  const identity = Array.from({ length: V * V }, (_, i) => (i % (V + 1) === 0 ? 1 : 0));
  close(copyingScore(identity, V), 1, 1e-12, 'identity copies');
  close(copyingScore(identity.map((v) => -v), V), 0, 1e-12, 'negated identity');
  // Each token promotes the next one most and itself second: own logit beats 3 of the 4 others.
  const shifted: number[] = new Array(V * V).fill(0);
  for (let t = 0; t < V; t++) {
    shifted[t * V + ((t + 1) % V)] = 2;
    shifted[t * V + t] = 1;
  }
  close(copyingScore(shifted, V), 3 / 4, 1e-12, 'second-best copying');
  assert.throws(() => copyingScore([1, 2, 3], 2), /expected 2×2/);
});

test('regression baselines on hand-checked cases', () => {
  const d = 3;
  const w = [1, -2, 0.5];
  const g = new Generator(7);
  const xs = Array.from({ length: 5 * d }, () => g.normal());
  const ys = Array.from({ length: 5 }, (_, i) => w[0]! * xs[i * d]! + w[1]! * xs[i * d + 1]! + w[2]! * xs[i * d + 2]!);
  // No noise and k ≥ d: least squares recovers w exactly.
  for (const k of [3, 4, 5]) Array.from(leastSquaresWeights(xs, ys, k, d)).forEach((v, a) => close(v, w[a]!, 1e-9, `k=${k} w[${a}]`));
  // k = 1 < d: the minimum-norm solution is y x / |x|².
  const x0 = xs.slice(0, d);
  const n2 = x0.reduce((s, v) => s + v * v, 0);
  Array.from(leastSquaresWeights(xs, ys, 1, d)).forEach((v, a) => close(v, (ys[0]! * x0[a]!) / n2, 1e-9, `min-norm w[${a}]`));
  assert.deepEqual(Array.from(leastSquaresWeights(xs, ys, 0, d)), [0, 0, 0]);
  // Rank-deficient prompts get the minimum-norm solution too: a repeated example (k < d), and
  // k ≥ d examples on one line (the Gram matrix is singular either way).
  Array.from(leastSquaresWeights([1, 2, 0, 1, 2, 0], [5, 5], 2, 3)).forEach((v, a) => close(v, [1, 2, 0][a]!, 1e-7, `repeated example w[${a}]`));
  Array.from(leastSquaresWeights([1, 1, 2, 2, 3, 3], [2, 4, 6], 3, 2)).forEach((v, a) => close(v, 1, 1e-7, `examples on a line w[${a}]`));
  // Averaging: (1/k) Σ y_i x_i, by hand for k = 2.
  Array.from(averagingWeights(xs, ys, 2, d)).forEach((v, a) => close(v, (ys[0]! * xs[a]! + ys[1]! * xs[d + a]!) / 2, 1e-12));
  // 3-NN on the line: examples at 0, 1, 2, 10 with y = x; the query 1.2 averages 1, 2 and 0.
  close(nearestNeighboursPredict([0, 1, 2, 10], [0, 1, 2, 10], 4, 1, [1.2]), 1, 1e-12);
  close(nearestNeighboursPredict([0, 1], [5, 7], 2, 1, [0.9]), 6, 1e-12, 'fewer than 3: all of them');
  close(nearestNeighboursPredict([], [], 0, 1, [0]), 0, 0);
});

test('regression prompts and baseline curves: least squares reaches 0 at k ≥ d, zero scores ≈ 1', () => {
  const d = 4;
  const n = 8;
  const b = sampleRegressionPrompts(new Generator(11), 400, n, d);
  const v = promptVectors(b);
  // Layout: (x_0, 0) at vector 0, (y_0, 0, 0, 0, 1) at vector 1.
  for (let a = 0; a < d; a++) close(v[a]!, b.xs[a]!, 1e-6);
  assert.equal(v[d], 0);
  close(v[d + 1]!, b.ys[0]!, 1e-5);
  assert.deepEqual(Array.from(v.slice(d + 2, 2 * d + 2)), [0, 0, 0, 1]);
  const ls = errorByExamples(baselinePredictions('least_squares', b), b);
  const zero = errorByExamples(baselinePredictions('zero', b), b);
  for (let k = d; k < n; k++) assert.ok(ls[k]! < 1e-12, `least squares at k=${k}: ${ls[k]}`);
  // E[(w·x)²]/d = 1 for w, x ~ N(0, I): 400 prompts give it within a few tenths.
  for (const e of zero) assert.ok(e > 0.7 && e < 1.3, `zero baseline ${e}`);
  // Least squares with k < d: E = (d − k)/d for min-norm (the unseen directions of w).
  for (let k = 0; k < d; k++) assert.ok(Math.abs(ls[k]! - (d - k) / d) < 0.25, `least squares k=${k}: ${ls[k]} vs ${(d - k) / d}`);
});

test('regression curriculum: the paper\'s schedule, truncated dimensions, bad schedules named', () => {
  // Garg et al.: d = 20, 41 points; dims 5 → 20 by 1 and points 11 → 41 by 2, every 2,000 updates.
  const paper = { dims_start: 5, dims_inc: 1, points_start: 11, points_inc: 2, interval: 2000 };
  assert.deepEqual(curriculumAt(paper, 0, 20, 41), { dims: 5, points: 11 });
  assert.deepEqual(curriculumAt(paper, 1999, 20, 41), { dims: 5, points: 11 });
  assert.deepEqual(curriculumAt(paper, 2000, 20, 41), { dims: 6, points: 13 });
  assert.deepEqual(curriculumAt(paper, 29_999, 20, 41), { dims: 19, points: 39 });
  assert.deepEqual(curriculumAt(paper, 30_000, 20, 41), { dims: 20, points: 41 });
  assert.deepEqual(curriculumAt(paper, 500_000, 20, 41), { dims: 20, points: 41 });
  // Points reach their end before dimensions do when they start closer: each is capped on its own.
  assert.deepEqual(curriculumAt({ dims_start: 1, dims_inc: 1, points_start: 9, points_inc: 2, interval: 10 }, 25, 4, 12), { dims: 3, points: 12 });
  assert.deepEqual(curriculumProblems(paper, 20, 41), []);
  const bad = curriculumProblems({ dims_start: 0, dims_inc: 1, points_start: 50, points_inc: -1, interval: 0 }, 20, 41);
  assert.equal(bad.length, 4, bad.join('; '));
  assert.match(bad.join('; '), /dims_start must be an integer in 1\.\.20, got 0/);
  assert.match(bad.join('; '), /points_start must be an integer in 1\.\.41, got 50/);
  assert.throws(() => regressionTask({ d: 4, n_points: 8, curriculum: { ...paper, dims_start: 5 } }), /dims_start must be an integer in 1\.\.4, got 5/);
  // Truncated dimensions: x's trailing coordinates are 0 and y = w·x still holds.
  const b = sampleRegressionPrompts(new Generator(3), 5, 6, 4, 2);
  for (let r = 0; r < 5 * 6; r++) {
    assert.equal(b.xs[r * 4 + 2], 0);
    assert.equal(b.xs[r * 4 + 3], 0);
    assert.notEqual(b.xs[r * 4], 0);
  }
  assert.throws(() => sampleRegressionPrompts(new Generator(3), 1, 2, 4, 5), /effective dimension must be an integer in 1\.\.4, got 5/);
});

test('regression curriculum in the training loop: logged per update and continued on resume', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-icl-cur-'));
  try {
    const curriculum = { dims_start: 1, dims_inc: 1, points_start: 2, points_inc: 1, interval: 2 };
    const fields = { out_dir: dir, n_layer: 1, n_head: 2, n_embd: 8, batch_size: 4, eval_interval: 3, threads: 1 };
    await runTraining(regressionTask({ d: 3, n_points: 4, evalPrompts: 8, curriculum }), { ...fields, max_iters: 3 });
    await runTraining(regressionTask({ d: 3, n_points: 4, evalPrompts: 8, curriculum }), { ...fields, max_iters: 7, init_from: 'resume' });
    const recs = (await readFile(join(dir, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>).filter((r) => r['train_loss'] !== undefined && r['curriculum_dims'] !== undefined);
    // The update logged as step s is at stage floor(s / 2); steps 3..6 come from the resumed run.
    assert.deepEqual(recs.map((r) => [r['step'], r['curriculum_dims'], r['curriculum_points']]), [
      [0, 1, 2], [1, 1, 2], [2, 2, 3], [3, 2, 3], [4, 3, 4], [5, 3, 4], [6, 3, 4],
    ]);
    // A checkpoint saved before the count existed resumes at one batch per update (its 'iter').
    const statePath = join(dir, 'last', 'trainer_state.json');
    const state = JSON.parse(await readFile(statePath, 'utf8')) as Record<string, unknown>;
    assert.equal(state['batches_drawn'], 7);
    delete state['batches_drawn'];
    await writeFile(statePath, JSON.stringify(state));
    await runTraining(regressionTask({ d: 3, n_points: 4, evalPrompts: 8, curriculum: { ...curriculum, interval: 3 } }), { ...fields, max_iters: 8, init_from: 'resume' });
    const lastRec = (await readFile(join(dir, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>).filter((r) => r['curriculum_dims'] !== undefined).at(-1)!;
    assert.deepEqual([lastRec['step'], lastRec['curriculum_dims'], lastRec['curriculum_points']], [7, 3, 4]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('probe models: explicit attention equals the fused kernel, patterns are causal and sum to 1', async () => {
  const backend = await openDevice('cpu', { threads: 1 });
  const m = new ProbeLM({ n_layer: 2, n_head: 2, n_embd: 16, block_size: 12, mlp: false, vocab_size: 9 }, { backend, seed: 5 });
  assert.ok(![...m.namedParameters()].some(([n]) => n.includes('mlp')), 'attention-only: no MLP parameters');
  const ids = tensor(Array.from({ length: 2 * 12 }, (_, i) => (i * 5) % 9), { backend, dtype: 'int32', shape: [2, 12] });
  const pats: Tensor[] = [];
  const a = m.forward(ids, undefined, pats).logits.data();
  const b = m.forward(ids).logits.data();
  for (let i = 0; i < a.length; i++) close(a[i]!, b[i]!, 1e-5, `logit ${i}`);
  assert.equal(pats.length, 2);
  const p = pats[0]!.data();
  assert.deepEqual(pats[0]!.shape, [2, 2, 12, 12]);
  for (let r = 0; r < 2 * 2 * 12; r++) {
    const i = r % 12;
    let s = 0;
    for (let j = 0; j < 12; j++) {
      if (j > i) assert.equal(p[r * 12 + j], 0);
      s += p[r * 12 + j]!;
    }
    close(s, 1, 1e-5);
  }
  // OV circuits: V × V per head.
  const ov = ovCircuits(m, 1);
  assert.equal(ov.length, 2);
  assert.equal(ov[0]!.length, 81);
  const v = new VectorTransformer({ n_layer: 1, n_head: 2, n_embd: 8, block_size: 6, mlp: true, d_in: 3, d_out: 1 }, { backend, seed: 1 });
  assert.deepEqual(v.forward(tensor(new Float32Array(2 * 6 * 3).fill(0.5), { backend, shape: [2, 6, 3] })).shape, [2, 6, 1]);
  assert.throws(() => new ProbeLM({ n_layer: 1, n_head: 3, n_embd: 16, block_size: 8, mlp: false, vocab_size: 4 }), /divisible by n_head/);
});

test('few-shot prompt, answers and scoring by a model whose log-probabilities are known', async () => {
  const o = { template: 'Review: {text}\nSentiment: {label}', separator: '\n\n', labels: ['negative', 'positive'] };
  assert.equal(fewShotPrompt([{ text: 'bad', label: 0 }, { text: 'fine', label: 1 }], 'ok', o), 'Review: bad\nSentiment: negative\n\nReview: fine\nSentiment: positive\n\nReview: ok\nSentiment:');
  assert.deepEqual(answerStrings(o), [' negative', ' positive']);
  assert.throws(() => fewShotPrompt([], 'x', { ...o, template: '{label} {text}' }), /before \{label\}/);
  assert.deepEqual(readLabeledTsv('sentence\tlabel\ngood film\t1\nawful\t0\n'), [{ text: 'good film', label: 1 }, { text: 'awful', label: 0 }]);
  // A "model" over characters whose next-token distribution always favours 'p' (id 1) over 'n' (id 0).
  const backend = await openDevice('cpu', { threads: 1 });
  const V = 4;
  const model: ScoringModel = {
    config: { block_size: 64, vocab_size: V },
    forward(idx) {
      const T = idx.shape[1]!;
      const logits = new Float32Array(T * V);
      for (let t = 0; t < T; t++) logits.set([0, Math.log(3), 0, 0], t * V); // p(1) = 3/6
      return { logits: tensor(logits, { backend, shape: [1, T, V] }) };
    },
  };
  const encode = (s: string): number[] => [...s].map((c) => (c === 'n' ? 0 : c === 'p' ? 1 : c === ' ' ? 2 : 3));
  const [sn, sp] = scoreContinuations(model, backend, encode, 'xx', ['n', 'p']);
  close(sn!, Math.log(1 / 6), 1e-5);
  close(sp!, Math.log(3 / 6), 1e-5);
  const queries = [{ text: 'a', label: 1 }, { text: 'b', label: 0 }, { text: 'c', label: 1 }];
  const r = fewShotAccuracy(model, backend, encode, queries, queries, { k: 2, template: '{text}:{label}', separator: ';', labels: ['n', 'p'], seed: 1 });
  close(r.accuracy, 2 / 3, 1e-12);
  close(r.predicted_1, 1, 1e-12);
  close(r.mean_shots, 2, 1e-12);
});

test('contextual calibration divides by the labels\' probabilities after content-free queries', async () => {
  // Query p = (0.4, 0.6); content-free p = (0.2, 0.8) and (0.3, 0.7), mean (0.25, 0.75): 1.6 against 0.8.
  assert.equal(calibratedAnswer([Math.log(0.4), Math.log(0.6)], [[Math.log(0.2), Math.log(0.8)], [Math.log(3), Math.log(7)]]), 0);
  assert.equal(calibratedAnswer([Math.log(0.4), Math.log(0.6)], [[Math.log(0.5), Math.log(0.5)]]), 1);
  // A model biased towards 'p' (3:1), a little more after 'g' and a little less after 'b': it always
  // answers 'p', so half right; calibrated against the neutral content-free queries, all right.
  const backend = await openDevice('cpu', { threads: 1 });
  const V = 6;
  const codes: Record<string, number> = { n: 0, p: 1, ' ': 2, g: 3, b: 4 };
  const encode = (s: string): number[] => [...s].map((c) => codes[c] ?? 5);
  const model: ScoringModel = {
    config: { block_size: 64, vocab_size: V },
    forward(idx) {
      const ids = idx.data();
      const T = idx.shape[1]!;
      const logits = new Float32Array(T * V);
      for (let t = 0; t < T; t++) {
        const prev = t > 0 ? ids[t - 1] : -1;
        logits.set([0, Math.log(3) + (prev === 3 ? 0.5 : prev === 4 ? -0.5 : 0), 0, 0, 0, 0], t * V);
      }
      return { logits: tensor(logits, { backend, shape: [1, T, V] }) };
    },
  };
  const queries = [{ text: 'g', label: 1 }, { text: 'b', label: 0 }, { text: 'g', label: 1 }, { text: 'b', label: 0 }];
  const r = fewShotAccuracy(model, backend, encode, queries, queries, { k: 1, template: '{text}:{label}', separator: ';', labels: ['n', 'p'], seed: 1, calibrate: true });
  close(r.accuracy, 0.5, 1e-12);
  close(r.predicted_1, 1, 1e-12);
  close(r.calibrated!.accuracy, 1, 1e-12);
  close(r.calibrated!.predicted_1, 0.5, 1e-12);
});

test('few-shot recall: the query is among its demonstrations, with its label, and stays when others are dropped', async () => {
  const backend = await openDevice('cpu', { threads: 1 });
  const prompts: string[] = [];
  const V = 8;
  const encode = (s: string): number[] => [...s].map((c) => c.charCodeAt(0) % V);
  const model: ScoringModel = {
    config: { block_size: 24, vocab_size: V },
    forward(idx) {
      prompts.push([...idx.data()].join(','));
      return { logits: tensor(new Float32Array(idx.shape[1]! * V), { backend, shape: [1, idx.shape[1]!, V] }) };
    },
  };
  const pool = ['aa', 'bb', 'cc', 'dd', 'ee', 'ff'].map((text, i) => ({ text, label: i % 2 }));
  const queries = [{ text: 'qq', label: 1 }, { text: 'rr', label: 0 }];
  // '{text}={label}' pieces of 5 characters with ';': 6 demonstrations would not fit 24 + 1.
  const r = fewShotAccuracy(model, backend, encode, queries, pool, { k: 6, template: '{text}={label}', separator: ';', labels: ['n', 'p'], seed: 3, recall: true });
  assert.ok(r.mean_shots >= 1 && r.mean_shots < 6, `${r.mean_shots}`);
  const has = (query: string, label: string): boolean => prompts.some((p) => `,${p},`.includes(`,${encode(`${query}=${label};`).join(',')},`));
  assert.ok(has('qq', 'p'), 'the first query appears as a demonstration labelled p');
  assert.ok(has('rr', 'n'), 'the second query appears as a demonstration labelled n');
});

test('the induction and regression tasks run in the training loop and log their scores', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-icl-'));
  try {
    const text = 'the cat sat on the mat. the dog sat on the log. '.repeat(40);
    await mkdir(join(dir, 'data'), { recursive: true });
    await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: join(dir, 'data'), source: 'test' });
    const probes: number[] = [];
    await runTraining(inductionTask({ repeatRows: 2, repeatFraction: 0.5, onProbe: (s) => probes.push(s) }), {
      out_dir: join(dir, 'ind'), dataset: join(dir, 'data'), n_layer: 2, n_head: 2, n_embd: 16, block_size: 32, batch_size: 2, max_iters: 4, eval_interval: 2, eval_iters: 1, threads: 1,
    });
    assert.deepEqual(probes, [0, 2, 4]);
    const last = JSON.parse((await readFile(join(dir, 'ind', 'metrics.jsonl'), 'utf8')).trim().split('\n').at(-1)!) as Record<string, number>;
    for (const k of ['icl_score', 'pm_l1h1', 'prev_l0h0', 'copy_l1h0', 'repeat_loss_second', 'max_prefix_matching']) assert.ok(Number.isFinite(last[k]), `${k} logged`);
    const errs: number[][] = [];
    await runTraining(regressionTask({ d: 2, n_points: 4, evalPrompts: 16, onEval: (_s, e) => errs.push(e) }), {
      out_dir: join(dir, 'reg'), n_layer: 1, n_head: 2, n_embd: 8, batch_size: 4, max_iters: 3, eval_interval: 3, threads: 1,
    });
    assert.equal(errs.length, 2);
    assert.equal(errs[0]!.length, 4);
    // Resume continues from the saved prompts generator.
    await runTraining(regressionTask({ d: 2, n_points: 4, evalPrompts: 16 }), { out_dir: join(dir, 'reg'), init_from: 'resume', max_iters: 4, n_layer: 1, n_head: 2, n_embd: 8, batch_size: 4, eval_interval: 3, threads: 1 });
    await writeFile(join(dir, 'done'), '');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
