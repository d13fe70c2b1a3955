// The webgpu matmul and adamw kernels against the ref backend: the cpu-vs-ref matmul/linear op
// cases (forward and gradients), then direct backend.matmul calls covering every MatmulArgs field
// (strides read in place, broadcast operands and batches, offsets, bias, activations,
// accumulate, K = 0, ragged and full tiles), then both matmul shaders (general and tiled,
// forced through the kernel's `path` arg) on the same cases, then split-K (forced through its
// `splitK` arg) on both shaders, then adamw over a few steps.
import { test } from 'node:test';
import type { Backend, MatmulArgs, Activation } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { Generator, RefBackend } from '../src/index.js';
import { assertClose, randomArray } from './helpers.js';
import { comparerFor, MATMUL_SIZES, matmulCases } from './backend-compare.js';
import { webgpu } from './webgpu-helpers.js';

const ref = new RefBackend();
const tol = { rtol: 1e-4, atol: 1e-4 };

test('webgpu matmul ops at awkward sizes, transposed operands, batches, linear with bias (forward)', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  matmulCases(comparerFor([be]), MATMUL_SIZES, { ...tol, grad: false });
});

test('webgpu matmul ops: gradients', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  gradientCases(be);
});

function gradientCases(be: Backend): void {
  matmulCases(comparerFor([be]), [[3, 17, 1], [17, 3, 129], [64, 129, 65]], tol);
}

interface Case {
  batch: number; M: number; N: number; K: number;
  transA?: boolean; transB?: boolean;
  /** Defaults: the dense row length of the (possibly transposed) operand. */
  lda?: number; ldb?: number;
  aOffset?: number; aBatchStride?: number; bOffset?: number; bBatchStride?: number;
  bias?: boolean; activation?: Activation; accumulate?: boolean;
}

/** Highest element index + 1 a strided operand reaches (at least 1). */
function extent(off: number, bs: number, batch: number, s1: number, n1: number, s2: number, n2: number): number {
  if (n1 === 0 || n2 === 0) return off + 1;
  return off + (batch - 1) * bs + (n1 - 1) * s1 + (n2 - 1) * s2 + 1;
}

/** Runs one matmul with the same random data on ref and on be and compares the outputs. */
function direct(be: Backend, name: string, c: Case, g: Generator, rtol = 1e-4, atol = 1e-4, path?: 'general' | 'tiled' | 'direct', splitK?: number): void {
  const transA = c.transA ?? false;
  const transB = c.transB ?? false;
  const lda = c.lda ?? (transA ? c.M : c.K);
  const ldb = c.ldb ?? (transB ? c.K : c.N);
  const aOffset = c.aOffset ?? 0;
  const bOffset = c.bOffset ?? 0;
  const aM = transA ? 1 : lda, aK = transA ? lda : 1;
  const bK = transB ? 1 : ldb, bN = transB ? ldb : 1;
  const aBatchStride = c.aBatchStride ?? extent(0, 0, 1, aM, c.M, aK, c.K);
  const bBatchStride = c.bBatchStride ?? extent(0, 0, 1, bK, c.K, bN, c.N);
  const aData = randomArray(extent(aOffset, aBatchStride, c.batch, aM, c.M, aK, c.K), g);
  const bData = randomArray(extent(bOffset, bBatchStride, c.batch, bK, c.K, bN, c.N), g);
  const biasData = randomArray(c.N, g);
  const outData = randomArray(c.batch * c.M * c.N, g);
  const run = (bk: Backend): ArrayLike<number> => {
    const a = bk.upload(aData, 'float32');
    const b = bk.upload(bData, 'float32');
    const bias = c.bias ? bk.upload(biasData, 'float32') : null;
    const out = bk.upload(outData, 'float32');
    const args: MatmulArgs = {
      a, aOffset, aBatchStride, transA, lda, b, bOffset, bBatchStride, transB, ldb, out,
      batch: c.batch, M: c.M, N: c.N, K: c.K, bias, activation: c.activation ?? 'none', accumulate: c.accumulate ?? false,
    };
    // The webgpu kernel reads extra `path` and `splitK` args (not part of MatmulArgs) forcing a
    // shader and a K split.
    const extra = { ...(path ? { path } : {}), ...(splitK !== undefined ? { splitK } : {}) };
    bk.matmul(bk === be ? ({ ...args, ...extra } as MatmulArgs) : args);
    const r = bk.read(out);
    for (const s of [a, b, bias, out]) if (s) bk.free(s);
    return r;
  };
  const how = [path, splitK !== undefined ? `splitK ${splitK}` : undefined].filter((x) => x).join(', ');
  assertClose(run(be), run(ref), rtol, atol, `matmul ${name}${how ? ` (${how})` : ''}`);
}

test('webgpu backend.matmul on every MatmulArgs field', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const g = new Generator(42);
  direct(be, 'plain', { batch: 1, M: 5, N: 9, K: 7 }, g);
  direct(be, 'ragged tiles, batched', { batch: 2, M: 70, N: 67, K: 77 }, g);
  direct(be, 'transA', { batch: 2, M: 13, N: 11, K: 19, transA: true }, g);
  direct(be, 'transB', { batch: 2, M: 13, N: 11, K: 19, transB: true }, g);
  direct(be, 'transA transB, padded lda/ldb, offsets', { batch: 3, M: 13, N: 70, K: 21, transA: true, transB: true, lda: 17, ldb: 25, aOffset: 5, bOffset: 3 }, g);
  direct(be, 'padded lda/ldb, offsets, custom batch strides', { batch: 3, M: 9, N: 10, K: 11, lda: 14, ldb: 12, aOffset: 2, bOffset: 7, aBatchStride: 200, bBatchStride: 150 }, g);
  direct(be, 'broadcast batch of A', { batch: 4, M: 9, N: 10, K: 11, aBatchStride: 0 }, g);
  direct(be, 'broadcast batch of B, transB', { batch: 4, M: 9, N: 10, K: 11, bBatchStride: 0, transB: true }, g);
  direct(be, 'lda = 0 (A rows broadcast)', { batch: 2, M: 9, N: 10, K: 11, lda: 0 }, g);
  direct(be, 'lda = 0 transA (A columns broadcast)', { batch: 2, M: 9, N: 10, K: 11, lda: 0, transA: true }, g);
  direct(be, 'ldb = 0 (B rows broadcast)', { batch: 2, M: 9, N: 10, K: 11, ldb: 0 }, g);
  direct(be, 'ldb = 0 transB', { batch: 2, M: 9, N: 10, K: 11, ldb: 0, transB: true }, g);
  direct(be, 'lda < row length', { batch: 1, M: 9, N: 10, K: 11, lda: 3, ldb: 4 }, g);
  direct(be, 'bias', { batch: 2, M: 17, N: 65, K: 9, bias: true }, g);
  direct(be, 'bias relu', { batch: 2, M: 17, N: 65, K: 9, bias: true, activation: 'relu' }, g);
  direct(be, 'relu', { batch: 1, M: 17, N: 65, K: 9, activation: 'relu' }, g);
  direct(be, 'bias gelu', { batch: 2, M: 17, N: 65, K: 9, bias: true, activation: 'gelu' }, g);
  direct(be, 'accumulate', { batch: 2, M: 17, N: 33, K: 9, accumulate: true }, g);
  direct(be, 'accumulate bias gelu transA', { batch: 2, M: 17, N: 33, K: 9, accumulate: true, bias: true, activation: 'gelu', transA: true }, g);
  direct(be, 'accumulate relu', { batch: 1, M: 17, N: 33, K: 9, accumulate: true, activation: 'relu' }, g);
  direct(be, 'K = 0', { batch: 2, M: 5, N: 6, K: 0 }, g);
  direct(be, 'K = 0 bias gelu', { batch: 2, M: 5, N: 6, K: 0, bias: true, activation: 'gelu' }, g);
  direct(be, 'K = 0 accumulate bias relu', { batch: 1, M: 5, N: 6, K: 0, bias: true, activation: 'relu', accumulate: true }, g);
  direct(be, 'M = 0', { batch: 1, M: 0, N: 6, K: 3 }, g);
  direct(be, 'batch past 65535 m tiles (folded dispatch)', { batch: 66000, M: 1, N: 2, K: 3 }, g);
  direct(be, 'full tiles 256x256x256', { batch: 1, M: 256, N: 256, K: 256, bias: true }, g);
  direct(be, 'full tiles transposed 128x128x128', { batch: 1, M: 128, N: 128, K: 128, transA: true, transB: true }, g);
});

test('webgpu matmul: general and tiled shaders on the same cases', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const cases: [string, Case][] = [
    ['aligned 128x256x160, vec4 loads', { batch: 1, M: 128, N: 256, K: 160 }],
    ['odd sizes 131x257x45', { batch: 1, M: 131, N: 257, K: 45 }],
    ['transA', { batch: 1, M: 200, N: 136, K: 72, transA: true }],
    ['transB', { batch: 1, M: 136, N: 200, K: 72, transB: true }],
    ['transA transB odd', { batch: 2, M: 129, N: 133, K: 37, transA: true, transB: true }],
    ['offsets, padded lda/ldb (aligned), batch strides', { batch: 2, M: 140, N: 132, K: 64, lda: 68, ldb: 136, aOffset: 4, bOffset: 8, aBatchStride: 140 * 68 + 12, bBatchStride: 64 * 136 + 4 }],
    ['odd offsets (scalar loads)', { batch: 2, M: 130, N: 132, K: 40, aOffset: 3, bOffset: 1 }],
    ['lda not multiple of 4 (scalar A loads)', { batch: 1, M: 150, N: 128, K: 40, lda: 42 }],
    ['ldb not multiple of 4, transB (scalar B loads)', { batch: 1, M: 128, N: 150, K: 40, ldb: 41, transB: true }],
    ['odd batch stride', { batch: 3, M: 128, N: 128, K: 32, aBatchStride: 128 * 32 + 1 }],
    ['broadcast batch of B', { batch: 3, M: 128, N: 140, K: 36, bBatchStride: 0 }],
    ['lda = 0 (A rows broadcast)', { batch: 1, M: 130, N: 128, K: 20, lda: 0 }],
    ['ldb = 0 transB', { batch: 1, M: 128, N: 130, K: 20, ldb: 0, transB: true }],
    ['bias gelu', { batch: 2, M: 136, N: 144, K: 48, bias: true, activation: 'gelu' }],
    ['bias relu transB', { batch: 1, M: 130, N: 132, K: 50, bias: true, activation: 'relu', transB: true }],
    ['accumulate', { batch: 2, M: 128, N: 136, K: 33, accumulate: true }],
    ['accumulate bias gelu transA', { batch: 1, M: 140, N: 130, K: 24, accumulate: true, bias: true, activation: 'gelu', transA: true }],
    ['small (tiled on a 7x9 product)', { batch: 2, M: 7, N: 9, K: 5 }],
    ['K = 0 bias relu accumulate', { batch: 1, M: 130, N: 129, K: 0, bias: true, activation: 'relu', accumulate: true }],
    ['full tiles 256x256x256', { batch: 1, M: 256, N: 256, K: 256 }],
    ['full tiles 256x300x128 transA transB', { batch: 1, M: 256, N: 300, K: 128, transA: true, transB: true }],
  ];
  const g = new Generator(5);
  for (const [name, c] of cases) {
    for (const path of ['general', 'tiled', 'direct'] as const) direct(be, name, c, g, 1e-4, 1e-4, path);
  }
});

test('webgpu matmul: split-K (forced through the kernel\'s splitK arg) on both shaders', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  // [name, case, S]: K % (4S) == 0 splits evenly; otherwise a remainder chunk of < 4S runs apart.
  const cases: [string, Case, number][] = [
    ['even chunks', { batch: 1, M: 37, N: 70, K: 256 }, 4],
    ['ragged K (remainder chunk)', { batch: 1, M: 33, N: 65, K: 77 }, 4],
    ['transA (weight-gradient layout)', { batch: 1, M: 40, N: 136, K: 160, transA: true }, 8],
    ['transB, remainder', { batch: 1, M: 70, N: 40, K: 150, transB: true }, 2],
    ['transA transB, padded lda/ldb, offsets', { batch: 1, M: 21, N: 35, K: 99, transA: true, transB: true, lda: 25, ldb: 103, aOffset: 3, bOffset: 5 }, 4],
    ['aligned padded lda/ldb, offsets (vec4 loads)', { batch: 1, M: 132, N: 136, K: 128, lda: 132, ldb: 140, aOffset: 4, bOffset: 8 }, 4],
    ['accumulate', { batch: 1, M: 30, N: 50, K: 96, accumulate: true }, 4],
    ['accumulate transA, remainder', { batch: 1, M: 30, N: 50, K: 101, accumulate: true, transA: true }, 16],
    ['bias gelu accumulate', { batch: 1, M: 30, N: 50, K: 64, bias: true, activation: 'gelu', accumulate: true }, 2],
    ['bias relu', { batch: 1, M: 30, N: 50, K: 64, bias: true, activation: 'relu' }, 4],
    ['chunk of 4', { batch: 1, M: 5, N: 6, K: 16 }, 4],
    ['too short to split (K < 4S)', { batch: 1, M: 5, N: 6, K: 7 }, 4],
    ['batched (split ignored)', { batch: 2, M: 9, N: 10, K: 64 }, 4],
    ['splitK 0 disables', { batch: 1, M: 9, N: 10, K: 64 }, 0],
  ];
  const g = new Generator(11);
  for (const [name, c, S] of cases) {
    for (const path of ['general', 'tiled', 'direct'] as const) direct(be, name, c, g, 1e-4, 1e-4, path, S);
  }
  // Chosen by MATMUL_TUNING's defaults: a 16x16 output over K = 1024 splits.
  direct(be, 'auto split 16x16x1024 transA', { batch: 1, M: 16, N: 16, K: 1024, transA: true }, g, 1e-4, 1e-4);
});

test('webgpu adamw matches ref after 3 steps', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const g = new Generator(7);
  const n = 1000;
  const p0 = randomArray(n, g);
  const grads = [randomArray(n, g), randomArray(n, g), randomArray(n, g)];
  const run = (bk: Backend): ArrayLike<number>[] => {
    const param = bk.upload(p0, 'float32');
    const m = bk.alloc('float32', n);
    const v = bk.alloc('float32', n);
    const beta1 = 0.9, beta2 = 0.999;
    grads.forEach((gd, i) => {
      const grad = bk.upload(gd, 'float32');
      const step = i + 1;
      bk.adamw({ param, grad, m, v, n, lr: 1e-2, beta1, beta2, eps: 1e-8, weightDecay: 0.1, bc1: 1 - beta1 ** step, bc2: 1 - beta2 ** step });
      bk.free(grad);
    });
    const r = [bk.read(param), bk.read(m), bk.read(v)];
    for (const s of [param, m, v]) bk.free(s);
    return r;
  };
  const got = run(be);
  const want = run(ref);
  ['param', 'm', 'v'].forEach((what, i) => assertClose(got[i]!, want[i]!, 1e-5, 1e-6, `adamw ${what}`));
});
