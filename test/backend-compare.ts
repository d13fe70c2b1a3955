// Runs an op on the ref backend and on other backends with the same random inputs and compares
// outputs and input gradients (shared by the cpu and webgpu op tests).
import assert from 'node:assert/strict';
import { before } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { Generator, RefBackend, type Tensor } from '../src/index.js';
import { assertClose, randomArray } from './helpers.js';

export interface Input {
  shape: number[];
  kind?: 'float' | 'positive' | { ints: number };
}

export interface CompareOptions {
  rtol?: number;
  atol?: number;
  grad?: boolean;
}

const ref = new RefBackend();

/** The cpu backend with its default threads and with one thread (the single-thread paths
 *  differ), opened in a `before` hook of the calling test file. */
export function cpuBackendsBefore(): { cpu: Backend; cpu1: Backend } {
  const out = {} as { cpu: Backend; cpu1: Backend };
  before(async () => {
    out.cpu = await A.getBackend('cpu');
    out.cpu1 = await A.getBackend('cpu', { threads: 1 });
  });
  return out;
}

/** Runs f on ref and on each of `backends` with the same inputs; compares outputs and input gradients. */
export function compareBackends(backends: Backend[], name: string, inputs: Input[], f: (...xs: Tensor[]) => Tensor, opts: CompareOptions = {}): void {
  const g = new Generator(name.length * 7919);
  const values = inputs.map((inp) => {
    const n = inp.shape.reduce((a, b) => a * b, 1);
    if (typeof inp.kind === 'object') {
      const k = inp.kind.ints;
      return Int32Array.from({ length: n }, () => g.randint(k));
    }
    const v = randomArray(n, g);
    if (inp.kind === 'positive') for (let i = 0; i < n; i++) v[i] = Math.abs(v[i]!) + 0.5;
    return v;
  });
  const run = (be: Backend) =>
    A.tidy(() => {
      const xs = inputs.map((inp, i) => {
        const isInt = typeof inp.kind === 'object';
        return A.tensor(values[i]!, { backend: be, shape: inp.shape, dtype: isInt ? 'int32' : 'float32', requiresGrad: !isInt && opts.grad !== false });
      });
      const out = f(...xs);
      const result = { out: out.data(), grads: [] as (ArrayLike<number> | null)[] };
      if (opts.grad !== false && out.requiresGrad) {
        const w = A.tensor(randomArray(out.size, new Generator(3)), { backend: be, shape: out.shape, dtype: 'float32' });
        out.mul(w).sum().backward();
        result.grads = xs.map((x) => x.grad?.data() ?? null);
        for (const x of xs) x.grad?.dispose();
      }
      return result;
    });
  const expected = run(ref);
  const rtol = opts.rtol ?? 2e-5;
  const atol = opts.atol ?? 2e-5;
  for (const be of backends) {
    const got = run(be);
    assertClose(got.out, expected.out, rtol, atol, `${name} forward on ${be.name}`);
    expected.grads.forEach((eg, i) => {
      if (!eg) return;
      assert.ok(got.grads[i], `${name}: no gradient for input ${i} on ${be.name}`);
      assertClose(got.grads[i]!, eg, rtol, atol, `${name} grad of input ${i} on ${be.name}`);
    });
  }
}

// ---------------------------------------------------------------- op cases shared by the backend tests

/** compareBackends with the backends bound, as the case lists below call it. */
export type Compare = (name: string, inputs: Input[], f: (...xs: Tensor[]) => Tensor, opts?: CompareOptions) => void;

export const comparerFor = (backends: Backend[]): Compare => (name, inputs, f, opts = {}) => compareBackends(backends, name, inputs, f, opts);

/** Awkward sizes: 1, odd, just past a power of two, more than one workgroup. */
export const OP_SIZES = [1, 3, 17, 129, 1000];

/** Element-wise ops at size n, on contiguous operands, broadcasts and non-contiguous views. */
export function elementwiseCases(compare: Compare, n: number): void {
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

/** matmul shapes [m, k, n]: degenerate, odd, past a tile, long k. */
export const MATMUL_SIZES: readonly (readonly [number, number, number])[] = [[1, 1, 1], [3, 17, 1], [17, 3, 129], [129, 17, 3], [1000, 17, 129], [64, 129, 65], [1, 1000, 3]];

/** matmul at each [m, k, n] of `sizes`, then transposed operands read in place, batches, linear. */
export function matmulCases(compare: Compare, sizes: readonly (readonly [number, number, number])[], opts: CompareOptions): void {
  for (const [m, k, n] of sizes) {
    compare(`matmul ${m}x${k}x${n}`, [{ shape: [m, k] }, { shape: [k, n] }], (a, b) => A.matmul(a, b), opts);
  }
  compare('matmul A^T B^T', [{ shape: [17, 33] }, { shape: [9, 17] }], (a, b) => A.matmul(A.transpose(a), A.transpose(b)), opts);
  compare('matmul batched broadcast', [{ shape: [3, 1, 17, 20] }, { shape: [4, 20, 9] }], (a, b) => A.matmul(a, b), opts);
  compare('matmul permuted batch', [{ shape: [17, 3, 20] }, { shape: [3, 20, 5] }], (a, b) => A.matmul(A.permute(a, [1, 0, 2]), b), opts);
  compare('linear', [{ shape: [2, 17, 129] }, { shape: [65, 129] }, { shape: [65] }], (x, w, b) => A.linear(x, w, b), opts);
  compare('linear no bias, sliced input', [{ shape: [20, 40] }, { shape: [7, 20] }], (x, w) => A.linear(A.slice(x, 1, 0, 20), w), opts);
}

/** Attention with a key padding mask, and on permuted (non-contiguous) q = k = v. */
export function attentionMaskAndViewCases(compare: Compare, opts: CompareOptions): void {
  compare('attention keyMask', [{ shape: [2, 2, 9, 16] }, { shape: [2, 2, 9, 16] }, { shape: [2, 2, 9, 16] }], (q, k, v) => {
    const mask = A.tensor([1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], { backend: q.backend, dtype: 'int32', shape: [2, 9] });
    return A.scaledDotProductAttention(q, k, v, { keyMask: mask, causal: true });
  }, opts);
  compare('attention on permuted views', [{ shape: [2, 17, 3, 16] }], (x) => {
    const q = A.permute(x, [0, 2, 1, 3]);
    return A.scaledDotProductAttention(q, q, q, { causal: true });
  }, opts);
}
