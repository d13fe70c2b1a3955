// Every op on the fast cpu backend against the ref backend (float32), forward and backward,
// on random inputs of awkward sizes and on non-contiguous views; then the tiny GPT trained on both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { Generator, RefBackend, type Tensor } from '../src/index.js';
import { assertClose, randomArray } from './helpers.js';
import { attentionMaskAndViewCases, compareBackends, cpuBackendsBefore, elementwiseCases, MATMUL_SIZES, matmulCases, OP_SIZES, type CompareOptions, type Input } from './backend-compare.js';
import { train, type TinyConfig } from './tiny-gpt.js';
import { charTokens } from './tiny-gpt-ref.test.js';

const ref = new RefBackend();
const cpus = cpuBackendsBefore();

/** Runs f on ref and on cpu (1 and more threads) and compares outputs and input gradients. */
function compare(name: string, inputs: Input[], f: (...xs: Tensor[]) => Tensor, opts: CompareOptions = {}): void {
  compareBackends([cpus.cpu, cpus.cpu1], name, inputs, f, opts);
}


test('element-wise ops at awkward sizes and on non-contiguous views', () => {
  for (const n of OP_SIZES) {
    elementwiseCases(compare, n);
  }
});

test('reductions, softmax and norms at awkward sizes and on views', () => {
  for (const n of OP_SIZES) {
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
  matmulCases(compare, MATMUL_SIZES, tol);
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
  attentionMaskAndViewCases(compare, tol);
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
  assertClose(run(cpus.cpu), run(ref), 1e-5, 1e-6, 'adamw');
});

test('tiny GPT trained with AdamW: same losses on ref (float32) and cpu', () => {
  const { tokens, vocab } = charTokens();
  const cfg: TinyConfig = { vocab, nLayer: 2, nHead: 2, nEmbd: 32, blockSize: 32 };
  const steps = 200;
  const lossRef = train(cfg, ref, tokens, steps, 4);
  const lossCpu = train(cfg, cpus.cpu, tokens, steps, 4);
  for (let s = 0; s < steps; s++) {
    const rel = Math.abs(lossCpu[s]! - lossRef[s]!) / Math.abs(lossRef[s]!);
    const tol = s < 20 ? 1e-4 : 1e-2;
    assert.ok(rel <= tol, `step ${s}: cpu loss ${lossCpu[s]} vs ref ${lossRef[s]} (relative ${rel.toExponential(2)} > ${tol})`);
  }
  assert.ok(lossRef[steps - 1]! < lossRef[0]! - 1, `the model should learn: ${lossRef[0]} → ${lossRef[steps - 1]}`);
});
