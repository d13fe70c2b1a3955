// Every op on the fast cpu backend against the ref backend (float32), forward and backward,
// on random inputs of awkward sizes and on non-contiguous views; then the tiny GPT trained on both.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { Generator, RefBackend, type Tensor } from '../src/index.js';
import { assertClose, randomArray } from './helpers.js';
import { compareBackends, type CompareOptions, type Input } from './backend-compare.js';
import { train, type TinyConfig } from './tiny-gpt.js';
import { charTokens } from './tiny-gpt-ref.test.js';

const ref = new RefBackend();
let cpu: Backend;
let cpu1: Backend;

before(async () => {
  cpu = await A.getBackend('cpu');
  cpu1 = await A.getBackend('cpu', { threads: 1 });
});

/** Runs f on ref and on cpu (or opts.backends) and compares outputs and input gradients. */
function compare(name: string, inputs: Input[], f: (...xs: Tensor[]) => Tensor, opts: CompareOptions & { backends?: Backend[] } = {}): void {
  compareBackends(opts.backends ?? [cpu, cpu1], name, inputs, f, opts);
}

const SIZES = [1, 3, 17, 129, 1000];

test('element-wise ops at awkward sizes and on non-contiguous views', () => {
  for (const n of SIZES) {
    compare(`add ${n}`, [{ shape: [n] }, { shape: [n] }], (a, b) => A.add(a, b));
    compare(`mul bcast ${n}`, [{ shape: [2, n] }, { shape: [n] }], (a, b) => A.mul(a, b));
    compare(`div ${n}`, [{ shape: [n] }, { shape: [n], kind: 'positive' }], (a, b) => A.div(a, b));
    compare(`sub transposed ${n}`, [{ shape: [n, 3] }, { shape: [3, n] }], (a, b) => A.sub(A.transpose(a), b));
    for (const [op, f] of [['exp', A.exp], ['tanh', A.tanh], ['relu', A.relu], ['sigmoid', A.sigmoid], ['silu', A.silu], ['neg', A.neg]] as const) {
      compare(`${op} ${n}`, [{ shape: [n] }], (x) => f(x));
    }
    compare(`gelu ${n}`, [{ shape: [n] }], (x) => A.gelu(x));
    compare(`gelu erf ${n}`, [{ shape: [n] }], (x) => A.gelu(x, 'none'));
    compare(`log/sqrt ${n}`, [{ shape: [n], kind: 'positive' }], (x) => A.add(A.log(x), A.sqrt(x)));
    compare(`pow ${n}`, [{ shape: [n], kind: 'positive' }], (x) => A.pow(x, 1.5));
    compare(`gelu of strided slice ${n}`, [{ shape: [n, 4] }], (x) => A.gelu(A.slice(x, 1, 0, 4, 2)));
  }
});

test('reductions, softmax and norms at awkward sizes and on views', () => {
  for (const n of SIZES) {
    compare(`sum dim ${n}`, [{ shape: [3, n] }], (x) => A.sum(x, 1));
    compare(`sum dim0 ${n}`, [{ shape: [n, 5] }], (x) => A.sum(x, 0));
    compare(`mean all ${n}`, [{ shape: [n, 2] }], (x) => A.mean(x));
    compare(`max ${n}`, [{ shape: [2, n] }], (x) => A.max(x, -1));
    compare(`argmax ${n}`, [{ shape: [2, n] }], (x) => A.argmax(x, -1), { grad: false });
    compare(`softmax ${n}`, [{ shape: [3, n] }], (x) => A.softmax(x));
    compare(`logSoftmax ${n}`, [{ shape: [3, n] }], (x) => A.logSoftmax(x));
    compare(`softmax of transposed ${n}`, [{ shape: [n, 3] }], (x) => A.softmax(A.transpose(x)));
    compare(`layerNorm ${n}`, [{ shape: [5, n] }, { shape: [n] }, { shape: [n] }], (x, w, b) => A.layerNorm(x, w, b), { rtol: 1e-4, atol: 1e-4 });
    compare(`layerNorm of transposed ${n}`, [{ shape: [n, 4] }, { shape: [n] }, { shape: [n] }], (x, w, b) => A.layerNorm(A.transpose(x), w, b), { rtol: 1e-4, atol: 1e-4 });
    compare(`rmsNorm ${n}`, [{ shape: [4, n] }, { shape: [n] }], (x, w) => A.rmsNorm(x, w), { rtol: 1e-4, atol: 1e-4 });
  }
});

test('matmul at awkward sizes, transposed operands read in place, batches, linear with bias', () => {
  const tol = { rtol: 1e-4, atol: 1e-4 };
  for (const [m, k, n] of [[1, 1, 1], [3, 17, 1], [17, 3, 129], [129, 17, 3], [1000, 17, 129], [64, 129, 65], [1, 1000, 3]]) {
    compare(`matmul ${m}x${k}x${n}`, [{ shape: [m!, k!] }, { shape: [k!, n!] }], (a, b) => A.matmul(a, b), tol);
  }
  compare('matmul A^T B^T', [{ shape: [17, 33] }, { shape: [9, 17] }], (a, b) => A.matmul(A.transpose(a), A.transpose(b)), tol);
  compare('matmul batched broadcast', [{ shape: [3, 1, 17, 20] }, { shape: [4, 20, 9] }], (a, b) => A.matmul(a, b), tol);
  compare('matmul permuted batch', [{ shape: [17, 3, 20] }, { shape: [3, 20, 5] }], (a, b) => A.matmul(A.permute(a, [1, 0, 2]), b), tol);
  compare('linear', [{ shape: [2, 17, 129] }, { shape: [65, 129] }, { shape: [65] }], (x, w, b) => A.linear(x, w, b), tol);
  compare('linear no bias, sliced input', [{ shape: [20, 40] }, { shape: [7, 20] }], (x, w) => A.linear(A.slice(x, 1, 0, 20), w), tol);
});

test('indexing, joins and losses', () => {
  for (const n of [1, 17, 129]) {
    compare(`embedding ${n}`, [{ shape: [n, 7] }, { shape: [3, 5], kind: { ints: n } }], (w, ids) => A.embedding(w, ids));
    compare(`gather ${n}`, [{ shape: [4, n] }, { shape: [4, 2], kind: { ints: n } }], (x, i) => A.gather(x, 1, i));
    compare(`crossEntropy ${n}`, [{ shape: [6, n] }, { shape: [6], kind: { ints: n } }], (x, t) => A.crossEntropy(x, t, { labelSmoothing: 0.1 }), { rtol: 1e-4, atol: 1e-5 });
  }
  compare('crossEntropy ignore', [{ shape: [3, 1000] }], (x) => A.crossEntropy(x, A.tensor([5, -100, 999], { backend: x.backend, dtype: 'int32' })), { rtol: 1e-4, atol: 1e-5 });
  compare('concat+stack', [{ shape: [3, 4] }, { shape: [3, 2] }], (a, b) => A.stack([A.concat([a, b], 1), A.concat([b, a], 1)]));
  compare('where', [{ shape: [17, 3] }, { shape: [3] }], (a, b) => A.where(A.compare('gt', a, 0), a, b));
});

test('attention forward and backward: causal, full, Tq < Tk, key padding, long sequences', () => {
  const tol = { rtol: 2e-4, atol: 2e-5 };
  for (const [B, H, Tq, Tk, D] of [[1, 1, 1, 1, 16], [2, 3, 3, 3, 16], [1, 2, 17, 17, 64], [1, 1, 129, 129, 64], [1, 2, 5, 129, 16], [1, 1, 1000, 1000, 64]]) {
    const shapes = [{ shape: [B!, H!, Tq!, D!] }, { shape: [B!, H!, Tk!, D!] }, { shape: [B!, H!, Tk!, D!] }];
    compare(`attention causal ${Tq}x${Tk}x${D}`, shapes, (q, k, v) => A.scaledDotProductAttention(q, k, v, { causal: true }), tol);
    if (Tk! <= 129) compare(`attention full ${Tq}x${Tk}x${D}`, shapes, (q, k, v) => A.scaledDotProductAttention(q, k, v), tol);
  }
  compare('attention keyMask', [{ shape: [2, 2, 9, 16] }, { shape: [2, 2, 9, 16] }, { shape: [2, 2, 9, 16] }], (q, k, v) => {
    const mask = A.tensor([1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], { backend: q.backend, dtype: 'int32', shape: [2, 9] });
    return A.scaledDotProductAttention(q, k, v, { keyMask: mask, causal: true });
  }, tol);
  compare('attention on permuted views', [{ shape: [2, 17, 3, 16] }], (x) => {
    const q = A.permute(x, [0, 2, 1, 3]);
    return A.scaledDotProductAttention(q, q, q, { causal: true });
  }, tol);
});

test('AdamW update matches', () => {
  const run = (be: Backend) => {
    const g = new Generator(9);
    const p = A.tensor(randomArray(1000, g), { backend: be, requiresGrad: true, dtype: 'float32' }).keep();
    const opt = new A.AdamW([p], { lr: 1e-2, weightDecay: 0.1 });
    for (let s = 0; s < 5; s++) {
      A.tidy(() => {
        opt.zeroGrad();
        A.sum(A.mul(A.mul(p, p), A.tensor(randomArray(1000, g), { backend: be, dtype: 'float32' }))).backward();
        opt.stepUpdate();
      });
    }
    return p.data();
  };
  assertClose(run(cpu), run(ref), 1e-5, 1e-6, 'adamw');
});

test('tiny GPT trained with AdamW: same losses on ref (float32) and cpu', () => {
  const { tokens, vocab } = charTokens();
  const cfg: TinyConfig = { vocab, nLayer: 2, nHead: 2, nEmbd: 32, blockSize: 32 };
  const steps = 200;
  const lossRef = train(cfg, ref, tokens, steps, 4);
  const lossCpu = train(cfg, cpu, tokens, steps, 4);
  for (let s = 0; s < steps; s++) {
    const rel = Math.abs(lossCpu[s]! - lossRef[s]!) / Math.abs(lossRef[s]!);
    const tol = s < 20 ? 1e-4 : 1e-2;
    assert.ok(rel <= tol, `step ${s}: cpu loss ${lossCpu[s]} vs ref ${lossRef[s]} (relative ${rel.toExponential(2)} > ${tol})`);
  }
  assert.ok(lossRef[steps - 1]! < lossRef[0]! - 1, `the model should learn: ${lossRef[0]} → ${lossRef[steps - 1]}`);
});
