// The ref backend against hand computations, and its backward kernels against central
// finite differences in float64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRefBackend } from '../src/backend/ref/index.js';
import type { Storage, UnaryGradOp } from '../src/backend/backend.js';
import type { DType } from '../src/tensor/dtype.js';

const be = createRefBackend();

const up = (data: ArrayLike<number>, dtype: DType = 'float64'): Storage => be.upload(data, dtype);
const rd = (s: Storage): number[] => Array.from(be.read(s));
const zeros = (n: number, dtype: DType = 'float64'): Storage => be.alloc(dtype, n);

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what = ''): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (a === e) continue; // covers matching infinities
    assert.ok(Math.abs(a - e) <= tol * Math.max(1, Math.abs(e)), `${what}[${i}]: got ${a}, expected ${e}`);
  }
}

/** Deterministic uniform numbers in [lo, hi). */
function rng(seed: number): (lo?: number, hi?: number) => number {
  let s = seed >>> 0;
  return (lo = -1, hi = 1) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((s >>> 8) / 2 ** 24) * (hi - lo);
  };
}

function randArray(n: number, r: (lo?: number, hi?: number) => number, lo = -1, hi = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = r(lo, hi);
  return a;
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
};

const EPS = 1e-6;
const GRAD_TOL = 1e-6;

/** Central-difference gradient of f with respect to x (x is perturbed in place and restored). */
function numericGrad(f: () => number, x: Float64Array): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const old = x[i]!;
    x[i] = old + EPS;
    const fp = f();
    x[i] = old - EPS;
    const fm = f();
    x[i] = old;
    g[i] = (fp - fm) / (2 * EPS);
  }
  return g;
}

// ---------------------------------------------------------------------------------------
// Element-wise and layouts
// ---------------------------------------------------------------------------------------

test('binary op on a transposed view and a broadcast row', () => {
  // a: storage [[1,2],[3,4],[5,6]] (3,2) viewed transposed as (2,3) = [[1,3,5],[2,4,6]].
  const a = up([1, 2, 3, 4, 5, 6]);
  // b: the row [10,20,30] at offset 1 of its storage, broadcast over 2 rows.
  const b = up([99, 10, 20, 30]);
  const out = zeros(6);
  be.binary('add', a, { shape: [2, 3], strides: [1, 2], offset: 0 }, b, { shape: [2, 3], strides: [0, 1], offset: 1 }, out);
  assert.deepEqual(rd(out), [11, 23, 35, 12, 24, 36]);
  be.binary('sub', b, { shape: [2, 3], strides: [0, 1], offset: 1 }, a, { shape: [2, 3], strides: [1, 2], offset: 0 }, out);
  assert.deepEqual(rd(out), [9, 17, 25, 8, 16, 24]);
  be.binary('ge', a, { shape: [2, 3], strides: [1, 2], offset: 0 }, up([3]), { shape: [2, 3], strides: [0, 0], offset: 0 }, out);
  assert.deepEqual(rd(out), [0, 1, 1, 0, 1, 1]);
  be.binaryScalar('pow', a, { shape: [6], strides: [1], offset: 0 }, 2, true, out);
  assert.deepEqual(rd(out), [2, 4, 8, 16, 32, 64]);
  be.binaryScalar('div', a, { shape: [6], strides: [1], offset: 0 }, 2, false, out);
  assert.deepEqual(rd(out), [0.5, 1, 1.5, 2, 2.5, 3]);
});

test('where broadcasts the condition', () => {
  const cond = up([1, 0, 1], 'int32');
  const out = zeros(6);
  be.where(cond, { shape: [2, 3], strides: [0, 1], offset: 0 },
    up([1, 2, 3, 4, 5, 6]), { shape: [2, 3], strides: [3, 1], offset: 0 },
    up([-1]), { shape: [2, 3], strides: [0, 0], offset: 0 }, out);
  assert.deepEqual(rd(out), [1, -1, 3, 4, -1, 6]);
});

test('permuted copy, rank-0 copy, strided copyInto, float to int conversion', () => {
  // x (2,3,4) contiguous; permute to (4,2,3): y[a,b,c] = x[b,c,a].
  const data = Array.from({ length: 24 }, (_, i) => i);
  const x = up(data);
  const out = zeros(24);
  be.copy(x, { shape: [4, 2, 3], strides: [1, 12, 4], offset: 0 }, out);
  const expected: number[] = [];
  for (let a = 0; a < 4; a++) for (let b = 0; b < 2; b++) for (let c = 0; c < 3; c++) expected.push(data[b * 12 + c * 4 + a]!);
  assert.deepEqual(rd(out), expected);

  const scalar = zeros(1);
  be.copy(x, { shape: [], strides: [], offset: 5 }, scalar);
  assert.deepEqual(rd(scalar), [5]);

  // Write a (2,2) block into column 1..2 of a (3,4) matrix.
  const m = zeros(12);
  be.copyInto(up([1, 2, 3, 4]), { shape: [2, 2], strides: [2, 1], offset: 0 }, m, { shape: [2, 2], strides: [4, 1], offset: 1 });
  assert.deepEqual(rd(m), [0, 1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0]);

  const ints = zeros(4, 'int32');
  be.copy(up([-1.7, 1.7, 2.5, -0.2]), { shape: [4], strides: [1], offset: 0 }, ints);
  assert.deepEqual(rd(ints), [-1, 1, 2, 0]);

  assert.deepEqual(Array.from(be.read(x, { shape: [2, 2], strides: [12, 1], offset: 2 })), [2, 3, 14, 15]);
});

test('layouts that reach outside the storage throw', () => {
  const x = up([1, 2, 3]);
  assert.throws(() => be.copy(x, { shape: [2, 2], strides: [2, 1], offset: 0 }, zeros(4)), RangeError);
});

test('freed storage cannot be used', () => {
  const x = up([1, 2]);
  be.free(x);
  assert.throws(() => be.read(x), /freed/);
  assert.throws(() => be.free(x), /freed/);
});

test('unary forward values, gelu_erf(1) to 1e-14', () => {
  const x = up([1]);
  const out = zeros(1);
  const l = { shape: [1], strides: [1], offset: 0 };
  const value = (op: Parameters<typeof be.unary>[0]): number => {
    be.unary(op, x, l, out);
    return rd(out)[0]!;
  };
  assert.ok(Math.abs(value('gelu_erf') - 0.8413447460685429) <= 1e-14);
  assertClose([value('gelu')], [0.5 * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * 1.044715))], 1e-15);
  assertClose([value('silu')], [1 / (1 + Math.exp(-1))], 1e-15);
  assertClose([value('elu1')], [2], 0);
  assertClose([value('rsqrt')], [1], 0);
  const xs = up([-2, 0, 3]);
  const o3 = zeros(3);
  be.unary('elu1', xs, { shape: [3], strides: [1], offset: 0 }, o3);
  assertClose(rd(o3), [Math.exp(-2), 1, 4], 1e-15);
  be.unary('sign', xs, { shape: [3], strides: [1], offset: 0 }, o3);
  assert.deepEqual(rd(o3), [-1, 0, 1]);
  // gelu_erf far in the left tail keeps its relative accuracy (x Φ(x), Φ(-10) = 7.6198530241605e-24).
  be.unary('gelu_erf', up([-10]), l, out);
  assertClose([rd(out)[0]! / -10], [7.6198530241605e-24], 1e-12);
});

test('reduce: sum, max, min and first argmax over the middle axis', () => {
  // x (2, 3, 2)
  const x = up([1, 5, 3, 5, 3, 0, -1, -2, -4, -2, -1, -3]);
  const out = zeros(4);
  be.reduce('sum', x, 2, 3, 2, out);
  assert.deepEqual(rd(out), [7, 10, -6, -7]);
  be.reduce('max', x, 2, 3, 2, out);
  assert.deepEqual(rd(out), [3, 5, -1, -2]);
  be.reduce('min', x, 2, 3, 2, out);
  assert.deepEqual(rd(out), [1, 0, -4, -3]);
  const idx = zeros(4, 'int32');
  be.reduce('argmax', x, 2, 3, 2, idx);
  assert.deepEqual(rd(idx), [1, 0, 0, 0]);
});

// ---------------------------------------------------------------------------------------
// Matmul
// ---------------------------------------------------------------------------------------

test('matmul with transA/transB, padding, offsets, bias, activations and accumulate', () => {
  const r = rng(1);
  const batch = 2, M = 3, N = 4, K = 5;
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      // Leading dimensions with padding, and a batch stride larger than one matrix.
      const lda = (transA ? M : K) + 2;
      const ldb = (transB ? K : N) + 1;
      const aRows = transA ? K : M;
      const bRows = transB ? N : K;
      const aOffset = 3, bOffset = 1;
      const aBatchStride = aRows * lda + 4, bBatchStride = bRows * ldb + 2;
      const aData = randArray(aOffset + batch * aBatchStride, r);
      const bData = randArray(bOffset + batch * bBatchStride, r);
      const bias = randArray(N, r);
      const A = (bt: number, m: number, k: number): number =>
        aData[aOffset + bt * aBatchStride + (transA ? k * lda + m : m * lda + k)]!;
      const B = (bt: number, k: number, n: number): number =>
        bData[bOffset + bt * bBatchStride + (transB ? n * ldb + k : k * ldb + n)]!;
      const naive = (act: (v: number) => number, withBias: boolean): number[] => {
        const res: number[] = [];
        for (let bt = 0; bt < batch; bt++) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
          let s = withBias ? bias[n]! : 0;
          for (let k = 0; k < K; k++) s += A(bt, m, k) * B(bt, k, n);
          res.push(act(s));
        }
        return res;
      };
      const args = {
        a: up(aData), aOffset, aBatchStride, transA, lda,
        b: up(bData), bOffset, bBatchStride, transB, ldb,
        batch, M, N, K,
      };
      const what = `transA=${transA} transB=${transB}`;

      const out = zeros(batch * M * N);
      be.matmul({ ...args, out });
      assertClose(rd(out), naive((v) => v, false), 1e-14, what);

      be.matmul({ ...args, out, bias: up(bias), activation: 'relu' });
      const relu = naive((v) => Math.max(v, 0), true);
      assertClose(rd(out), relu, 1e-14, `${what} bias+relu`);
      assert.ok(relu.some((v) => v === 0) && relu.some((v) => v > 0));

      const gelu = (v: number): number => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
      be.matmul({ ...args, out, bias: up(bias), activation: 'gelu', accumulate: true });
      const expected = naive(gelu, true).map((v, i) => v + relu[i]!);
      assertClose(rd(out), expected, 1e-14, `${what} gelu accumulate`);
    }
  }
});

// ---------------------------------------------------------------------------------------
// Row kernels
// ---------------------------------------------------------------------------------------

test('softmax rows sum to 1, log-softmax rows logsumexp to 0, large logits stay finite', () => {
  const x = up([1, 2, 3, 4, 1000, 1001, 1002, -5, -1000, 0, 0, 0]);
  const out = zeros(12);
  be.softmax(x, 3, 4, false, out);
  const y = rd(out);
  for (let r = 0; r < 3; r++) assertClose([y.slice(r * 4, r * 4 + 4).reduce((a, b) => a + b)], [1], 1e-15);
  assertClose(y.slice(0, 4), [1, 2, 3, 4].map((v) => Math.exp(v) / (Math.E + Math.E ** 2 + Math.E ** 3 + Math.E ** 4)), 1e-15);
  be.softmax(x, 3, 4, true, out);
  const ly = rd(out);
  assert.ok(ly.every(Number.isFinite));
  for (let r = 0; r < 3; r++) assertClose([ly.slice(r * 4, r * 4 + 4).reduce((a, b) => a + Math.exp(b), 0)], [1], 1e-15);
});

test('layerNorm output has mean 0 and variance 1; w and b apply after', () => {
  const r = rng(2);
  const rows = 3, n = 7;
  const xData = randArray(rows * n, r, -3, 5);
  const out = zeros(rows * n), mean = zeros(rows), rstd = zeros(rows);
  be.layerNorm(up(xData), null, null, rows, n, 1e-12, out, mean, rstd);
  const y = rd(out);
  for (let i = 0; i < rows; i++) {
    const row = y.slice(i * n, (i + 1) * n);
    const mu = row.reduce((a, b) => a + b) / n;
    const v = row.reduce((a, b) => a + (b - mu) ** 2, 0) / n;
    assertClose([mu, v], [0, 1], 1e-9, `row ${i}`);
    const xm = xData.slice(i * n, (i + 1) * n).reduce((a, b) => a + b) / n;
    assertClose([rd(mean)[i]!], [xm], 1e-14);
  }
  const w = randArray(n, r), b = randArray(n, r);
  const out2 = zeros(rows * n);
  be.layerNorm(up(xData), up(w), up(b), rows, n, 1e-12, out2, mean, rstd);
  assertClose(rd(out2), y.map((v, i) => v * w[i % n]! + b[i % n]!), 1e-14);
});

test('rmsNorm matches x / sqrt(mean(x²) + eps) * w', () => {
  const x = [3, 4], w = [2, -1];
  const out = zeros(2), rstd = zeros(1);
  be.rmsNorm(up(x), up(w), 1, 2, 0.5, out, rstd);
  const rs = 1 / Math.sqrt(12.5 + 0.5);
  assertClose(rd(out), [3 * rs * 2, -4 * rs], 1e-15);
  assertClose(rd(rstd), [rs], 1e-15);
});

// ---------------------------------------------------------------------------------------
// Indexing
// ---------------------------------------------------------------------------------------

test('embedding, gather, and out-of-range indices throw RangeError', () => {
  const weight = up([0, 1, 10, 11, 20, 21]); // V=3, C=2
  const out = zeros(6);
  be.embedding(weight, 3, 2, up([2, 0, 2], 'int32'), 3, out);
  assert.deepEqual(rd(out), [20, 21, 0, 1, 20, 21]);
  assert.throws(() => be.embedding(weight, 3, 2, up([0, 3], 'int32'), 2, zeros(4)),
    (e: unknown) => e instanceof RangeError && /index 3 at position 1/.test(e.message) && /\[0, 3\)/.test(e.message));
  assert.throws(() => be.embedding(weight, 3, 2, up([-1], 'int32'), 1, zeros(2)), RangeError);
  assert.throws(() => be.embeddingBackward(zeros(2), up([5], 'int32'), 1, 3, 2, zeros(6)), RangeError);

  // gather along the middle axis of x (1, 3, 2) with index (1, 2, 2).
  const g = zeros(4);
  be.gather(up([1, 2, 3, 4, 5, 6]), 1, 3, 2, up([2, 0, 0, 1], 'int32'), 2, g);
  assert.deepEqual(rd(g), [5, 2, 1, 4]);
  assert.throws(() => be.gather(up([1, 2, 3]), 1, 3, 1, up([3], 'int32'), 1, zeros(1)), RangeError);
});

// ---------------------------------------------------------------------------------------
// Losses
// ---------------------------------------------------------------------------------------

test('cross-entropy with label smoothing and an ignored row', () => {
  const N = 3, V = 4, eps = 0.1, ignore = -100;
  const x = [1, 2, 0.5, -1, 3, 3, 3, 3, -2, 0, 4, 1];
  const t = [1, ignore, 3];
  const losses = zeros(N), lse = zeros(N);
  be.crossEntropy(up(x), up(t, 'int32'), N, V, ignore, eps, losses, lse);
  // Independent form: loss = −Σ_j q_j log p_j with q = (1−ε) onehot(t) + ε/V.
  const expected = t.map((target, r) => {
    if (target === ignore) return 0;
    const row = x.slice(r * V, r * V + V);
    const z = Math.log(row.reduce((a, b) => a + Math.exp(b), 0));
    return -row.reduce((acc, xj, j) => acc + ((j === target ? 1 - eps : 0) + eps / V) * (xj - z), 0);
  });
  assertClose(rd(losses), expected, 1e-14);
  assertClose([rd(lse)[0]!], [Math.log(Math.E + Math.E ** 2 + Math.exp(0.5) + Math.exp(-1))], 1e-15);
  assert.throws(() => be.crossEntropy(up(x), up([1, 4, 0], 'int32'), N, V, ignore, 0, losses, lse), RangeError);
});

// ---------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------

interface AttnCase { B: number; H: number; Tq: number; Tk: number; D: number; causal: boolean; mask: number[] | null }

/** softmax(Q Kᵀ scale + mask) V, written out with the full score matrix. */
function explicitAttention(c: AttnCase, q: Float64Array, k: Float64Array, v: Float64Array, scale: number) {
  const { B, H, Tq, Tk, D } = c;
  const out = new Float64Array(B * H * Tq * D);
  const lse = new Float64Array(B * H * Tq);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const bh = b * H + h;
    const S: number[][] = [];
    for (let i = 0; i < Tq; i++) {
      S.push([]);
      for (let j = 0; j < Tk; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[(bh * Tq + i) * D + d]! * k[(bh * Tk + j) * D + d]!;
        const masked = (c.causal && j > i + Tk - Tq) || (c.mask !== null && c.mask[b * Tk + j] === 0);
        S[i]!.push(masked ? -Infinity : s * scale);
      }
    }
    for (let i = 0; i < Tq; i++) {
      const row = S[i]!;
      const m = Math.max(...row);
      if (m === -Infinity) {
        lse[bh * Tq + i] = -Infinity;
        continue;
      }
      const e = row.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b);
      lse[bh * Tq + i] = m + Math.log(z);
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let j = 0; j < Tk; j++) acc += (e[j]! / z) * v[(bh * Tk + j) * D + d]!;
        out[(bh * Tq + i) * D + d] = acc;
      }
    }
  }
  return { out, lse };
}

// Batch 1 masks keys 0..2, so with causal Tq=3 < Tk=5 its query 0 (keys 0..2) sees nothing.
const ATTN_CASES: AttnCase[] = [
  { B: 2, H: 2, Tq: 3, Tk: 5, D: 4, causal: true, mask: null },
  { B: 2, H: 2, Tq: 3, Tk: 5, D: 4, causal: false, mask: [1, 0, 1, 1, 0, 0, 0, 0, 1, 1] },
  { B: 2, H: 1, Tq: 3, Tk: 5, D: 3, causal: true, mask: [1, 1, 0, 1, 1, 0, 0, 0, 1, 1] },
];

function runAttention(c: AttnCase, q: Float64Array, k: Float64Array, v: Float64Array, scale: number) {
  const out = zeros(q.length), lse = zeros(c.B * c.H * c.Tq);
  be.attention({
    q: up(q), k: up(k), v: up(v), out, lse, B: c.B, H: c.H, Tq: c.Tq, Tk: c.Tk, D: c.D, scale,
    causal: c.causal, keyMask: c.mask ? up(c.mask, 'int32') : null,
  });
  return { out: rd(out), lse: rd(lse) };
}

test('attention matches explicit softmax(QKᵀ·scale + mask)V: causal Tq<Tk, keyMask, a fully masked row', () => {
  const r = rng(3);
  for (const c of ATTN_CASES) {
    const q = randArray(c.B * c.H * c.Tq * c.D, r, -2, 2);
    const k = randArray(c.B * c.H * c.Tk * c.D, r, -2, 2);
    const v = randArray(c.B * c.H * c.Tk * c.D, r, -2, 2);
    const scale = 1 / Math.sqrt(c.D);
    const got = runAttention(c, q, k, v, scale);
    const want = explicitAttention(c, q, k, v, scale);
    assertClose(got.out, want.out, 1e-14, 'out');
    assertClose(got.lse, want.lse, 1e-14, 'lse');
  }
  // The third case's batch-1 query 0 has no visible key: zeros and lse = -Infinity.
  const c = ATTN_CASES[2]!;
  const got = runAttention(c, randArray(18, r), randArray(30, r), randArray(30, r), 0.5);
  assert.equal(got.lse[3], -Infinity);
  assert.deepEqual(got.out.slice(9, 12), [0, 0, 0]);
});

// ---------------------------------------------------------------------------------------
// Optimizer
// ---------------------------------------------------------------------------------------

test('adamw: one step against hand math', () => {
  const p0 = [1, -2], g = [0.5, -0.25], m0 = [0.1, 0], v0 = [0.01, 0.2];
  const lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, t = 3;
  const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
  const param = up(p0), grad = up(g), m = up(m0), v = up(v0);
  be.adamw({ param, grad, m, v, n: 2, lr, beta1: b1, beta2: b2, eps, weightDecay: wd, bc1, bc2 });
  const mExp = [0.9 * 0.1 + 0.1 * 0.5, 0.1 * -0.25];
  const vExp = [0.999 * 0.01 + 0.001 * 0.25, 0.999 * 0.2 + 0.001 * 0.0625];
  const pExp = p0.map((p, i) => p - lr * (mExp[i]! / bc1 / (Math.sqrt(vExp[i]! / bc2) + eps) + wd * p));
  assertClose(rd(m), mExp, 1e-15);
  assertClose(rd(v), vExp, 1e-15);
  assertClose(rd(param), pExp, 1e-15);
});

// ---------------------------------------------------------------------------------------
// Backward kernels against central differences (float64)
// ---------------------------------------------------------------------------------------

test('unaryBackward matches finite differences for every op', () => {
  // Points away from the kinks of relu and elu1 at 0.
  const xs = new Float64Array([-3.1, -1.2, -0.4, 0.3, 0.9, 2.6]);
  const gy = new Float64Array([0.7, -1.3, 0.5, 2.0, -0.6, 1.1]);
  const ops: UnaryGradOp[] = ['relu', 'gelu', 'gelu_erf', 'silu', 'sigmoid', 'tanh', 'elu1'];
  const n = xs.length;
  for (const op of ops) {
    const f = (): number => {
      const out = zeros(n);
      be.unary(op, up(xs), { shape: [n], strides: [1], offset: 0 }, out);
      return dot(rd(out), gy);
    };
    const gx = zeros(n);
    be.unaryBackward(op, up(xs), up(gy), gx, n);
    assertClose(rd(gx), numericGrad(f, xs), GRAD_TOL, op);
  }
});

test('softmaxBackward (softmax and log-softmax) matches finite differences', () => {
  const r = rng(4);
  const rows = 3, n = 5;
  const x = randArray(rows * n, r, -2, 2);
  const gy = randArray(rows * n, r);
  for (const log of [false, true]) {
    const forward = (): number[] => {
      const out = zeros(rows * n);
      be.softmax(up(x), rows, n, log, out);
      return rd(out);
    };
    const gx = zeros(rows * n);
    be.softmaxBackward(up(forward()), up(gy), rows, n, log, gx);
    assertClose(rd(gx), numericGrad(() => dot(forward(), gy), x), GRAD_TOL, `log=${log}`);
  }
});

test('layerNormBackward (x, w, b) matches finite differences', () => {
  const r = rng(5);
  const rows = 3, n = 6, eps = 1e-5;
  const x = randArray(rows * n, r, -2, 3), w = randArray(n, r), b = randArray(n, r);
  const gy = randArray(rows * n, r);
  const loss = (): number => {
    const out = zeros(rows * n);
    be.layerNorm(up(x), up(w), up(b), rows, n, eps, out, zeros(rows), zeros(rows));
    return dot(rd(out), gy);
  };
  const mean = zeros(rows), rstd = zeros(rows);
  be.layerNorm(up(x), up(w), up(b), rows, n, eps, zeros(rows * n), mean, rstd);
  const gx = zeros(rows * n), gw = up(new Array(n).fill(7)), gb = up(new Array(n).fill(7)); // written, not accumulated
  be.layerNormBackward(up(x), up(w), mean, rstd, up(gy), rows, n, gx, gw, gb);
  assertClose(rd(gx), numericGrad(loss, x), GRAD_TOL, 'gx');
  assertClose(rd(gw), numericGrad(loss, w), GRAD_TOL, 'gw');
  assertClose(rd(gb), numericGrad(loss, b), GRAD_TOL, 'gb');

  // Without w: the gradient of the plain normalisation.
  const lossNoW = (): number => {
    const out = zeros(rows * n);
    be.layerNorm(up(x), null, null, rows, n, eps, out, zeros(rows), zeros(rows));
    return dot(rd(out), gy);
  };
  be.layerNormBackward(up(x), null, mean, rstd, up(gy), rows, n, gx, null, null);
  assertClose(rd(gx), numericGrad(lossNoW, x), GRAD_TOL, 'gx without w');
});

test('rmsNormBackward (x, w) matches finite differences', () => {
  const r = rng(6);
  const rows = 3, n = 5, eps = 1e-6;
  const x = randArray(rows * n, r, -2, 2), w = randArray(n, r);
  const gy = randArray(rows * n, r);
  const loss = (): number => {
    const out = zeros(rows * n);
    be.rmsNorm(up(x), up(w), rows, n, eps, out, zeros(rows));
    return dot(rd(out), gy);
  };
  const rstd = zeros(rows);
  be.rmsNorm(up(x), up(w), rows, n, eps, zeros(rows * n), rstd);
  const gx = zeros(rows * n), gw = zeros(n);
  be.rmsNormBackward(up(x), up(w), rstd, up(gy), rows, n, gx, gw);
  assertClose(rd(gx), numericGrad(loss, x), GRAD_TOL, 'gx');
  assertClose(rd(gw), numericGrad(loss, w), GRAD_TOL, 'gw');
});

test('crossEntropyBackward (smoothing, an ignored row) matches finite differences', () => {
  const r = rng(7);
  const N = 4, V = 5, eps = 0.2, ignore = -1;
  const x = randArray(N * V, r, -3, 3);
  const targets = up([2, ignore, 0, 4], 'int32');
  const scale = [0.5, 3, -1.5, 2];
  const loss = (): number => {
    const losses = zeros(N);
    be.crossEntropy(up(x), targets, N, V, ignore, eps, losses, zeros(N));
    return dot(rd(losses), scale);
  };
  const lse = zeros(N);
  be.crossEntropy(up(x), targets, N, V, ignore, eps, zeros(N), lse);
  const gx = up(new Array(N * V).fill(9));
  be.crossEntropyBackward(up(x), targets, lse, up(scale), N, V, ignore, eps, gx);
  const g = rd(gx);
  assertClose(g, numericGrad(loss, x), GRAD_TOL);
  assert.deepEqual(g.slice(V, 2 * V), [0, 0, 0, 0, 0]);
});

test('attentionBackward (causal Tq<Tk, keyMask, a fully masked row) matches finite differences', () => {
  const r = rng(8);
  for (const c of ATTN_CASES) {
    const q = randArray(c.B * c.H * c.Tq * c.D, r, -1.5, 1.5);
    const k = randArray(c.B * c.H * c.Tk * c.D, r, -1.5, 1.5);
    const v = randArray(c.B * c.H * c.Tk * c.D, r, -1.5, 1.5);
    const gout = randArray(q.length, r);
    const scale = 0.7;
    const loss = (): number => dot(runAttention(c, q, k, v, scale).out, gout);
    const shape = { B: c.B, H: c.H, Tq: c.Tq, Tk: c.Tk, D: c.D, scale, causal: c.causal };
    const keyMask = c.mask ? up(c.mask, 'int32') : null;
    const out = zeros(q.length), lse = zeros(c.B * c.H * c.Tq);
    be.attention({ ...shape, q: up(q), k: up(k), v: up(v), out, lse, keyMask });
    const gq = up(new Array(q.length).fill(5)), gk = up(new Array(k.length).fill(5)), gv = up(new Array(v.length).fill(5));
    be.attentionBackward({ ...shape, q: up(q), k: up(k), v: up(v), out, lse, keyMask, gout: up(gout), gq, gk, gv });
    const what = `causal=${c.causal} mask=${c.mask !== null}`;
    assertClose(rd(gq), numericGrad(loss, q), GRAD_TOL, `${what} gq`);
    assertClose(rd(gk), numericGrad(loss, k), GRAD_TOL, `${what} gk`);
    assertClose(rd(gv), numericGrad(loss, v), GRAD_TOL, `${what} gv`);
  }
});

test('scatterAdd and embeddingBackward (accumulating, repeated indices) match finite differences', () => {
  const r = rng(9);
  // gather: x (2, 4, 3), index (2, 5, 3) with repeats.
  const outer = 2, n = 4, inner = 3, k = 5;
  const x = randArray(outer * n * inner, r);
  const index = up(Array.from({ length: outer * k * inner }, (_, i) => (i * 7 + 1) % n), 'int32');
  const gy = randArray(outer * k * inner, r);
  const gatherLoss = (): number => {
    const out = zeros(outer * k * inner);
    be.gather(up(x), outer, n, inner, index, k, out);
    return dot(rd(out), gy);
  };
  const start = randArray(x.length, r);
  const gx = up(start);
  be.scatterAdd(up(gy), outer, n, inner, index, k, gx);
  const numeric = numericGrad(gatherLoss, x);
  assertClose(rd(gx), Array.from(numeric, (g, i) => g + start[i]!), GRAD_TOL, 'scatterAdd');

  // embedding: weight (V, C), ids with repeats.
  const V = 4, C = 3, ids = up([3, 1, 3, 0, 3], 'int32'), nIds = 5;
  const weight = randArray(V * C, r);
  const gyE = randArray(nIds * C, r);
  const embLoss = (): number => {
    const out = zeros(nIds * C);
    be.embedding(up(weight), V, C, ids, nIds, out);
    return dot(rd(out), gyE);
  };
  const startW = randArray(V * C, r);
  const gw = up(startW);
  be.embeddingBackward(up(gyE), ids, nIds, V, C, gw);
  assertClose(rd(gw), Array.from(numericGrad(embLoss, weight), (g, i) => g + startW[i]!), GRAD_TOL, 'embeddingBackward');
});
