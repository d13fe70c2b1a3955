// The cpu backend's wasm matmul against a float64 triple loop, and the runtime's allocator.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend, createCpuBackend } from '../src/backend/cpu/index.js';
import type { Activation, Layout } from '../src/backend/backend.js';
import { RefBackend } from '../src/backend/ref/index.js';
import { contiguousStrides } from '../src/tensor/shape.js';

interface Case {
  M: number; N: number; K: number;
  batch?: number;
  transA?: boolean; transB?: boolean;
  /** Extra elements per row beyond the minimum leading dimension. */
  padA?: number; padB?: number;
  aOffset?: number; bOffset?: number;
  /** 0 makes the operand shared by every batch entry. */
  aBatch?: 'full' | 0; bBatch?: 'full' | 0;
  bias?: boolean; activation?: Activation; accumulate?: boolean;
  /** Multiplies A's entries (to reach activation inputs beyond [-1, 1]). */
  scaleA?: number;
}

let seed = 12345;
function rand(): number {
  // xorshift: reproducible inputs
  seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
  return ((seed >>> 0) / 2 ** 32) * 2 - 1;
}
const randArray = (n: number) => Float32Array.from({ length: n }, rand);

function act(a: Activation, x: number): number {
  if (a === 'relu') return Math.max(0, x);
  if (a === 'gelu') return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
  return x;
}

function check(be: CpuBackend, c: Case, outAbove = 0): void {
  const { M, N, K } = c;
  const batch = c.batch ?? 1;
  const lda = (c.transA ? M : K) + (c.padA ?? 0);
  const ldb = (c.transB ? K : N) + (c.padB ?? 0);
  const aMat = (c.transA ? K : M) * lda, bMat = (c.transB ? N : K) * ldb;
  const aBatchStride = c.aBatch === 0 ? 0 : aMat, bBatchStride = c.bBatch === 0 ? 0 : bMat;
  const aOffset = c.aOffset ?? 0, bOffset = c.bOffset ?? 0;
  const A = randArray(aOffset + (c.aBatch === 0 ? 1 : batch) * aMat).map((v) => v * (c.scaleA ?? 1));
  const B = randArray(bOffset + (c.bBatch === 0 ? 1 : batch) * bMat);
  const bias = c.bias ? randArray(N) : null;
  const old = randArray(batch * M * N);
  const activation = c.activation ?? 'none';

  const a = be.upload(A, 'float32'), b = be.upload(B, 'float32');
  const out = c.accumulate ? be.upload(old, 'float32') : be.alloc('float32', batch * M * N);
  const biasS = bias ? be.upload(bias, 'float32') : null;
  assert.ok(be.ptr(out) >= outAbove, 'out lies in the grown part of the memory');
  be.matmul({
    a, aOffset, aBatchStride, transA: !!c.transA, lda,
    b, bOffset, bBatchStride, transB: !!c.transB, ldb,
    out, batch, M, N, K, bias: biasS, activation, accumulate: c.accumulate,
  });
  const got = be.read(out);

  const u = 2 ** -24;
  for (let bt = 0; bt < batch; bt++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0, sAbs = 0;
        for (let k = 0; k < K; k++) {
          const av = A[aOffset + bt * aBatchStride + (c.transA ? k * lda + m : m * lda + k)];
          const bv = B[bOffset + bt * bBatchStride + (c.transB ? n * ldb + k : k * ldb + n)];
          s += av * bv;
          sAbs += Math.abs(av * bv);
        }
        if (bias) { s += bias[n]; sAbs += Math.abs(bias[n]); }
        const o = (bt * M + m) * N + n;
        let want = act(activation, s);
        if (c.accumulate) { want += old[o]; sAbs += Math.abs(old[o]); }
        // float32 summation bound (about K rounding errors of the absolute sum), plus the
        // rounding of the activation.
        const tol = 4 * (K + 2) * u * sAbs + 4e-7 * Math.abs(want) + 1e-7;
        const err = Math.abs(got[o] - want);
        if (!(err <= tol)) {
          assert.fail(`${JSON.stringify(c)}: out[${bt},${m},${n}] = ${got[o]}, want ${want} (err ${err}, tol ${tol})`);
        }
      }
    }
  }
  for (const s of [a, b, out, biasS]) if (s) be.free(s);
}

const shapes: [number, number, number][] = [
  [1, 1, 1], [3, 3, 3], [17, 17, 17], [129, 129, 129], [1000, 17, 129], [1, 300, 700], [5, 1, 300],
  [2, 1030, 40], [70, 9, 600], [4, 8, 0], [33, 65, 257],
];

for (const threads of [1, 2]) {
  describe(`cpu matmul, ${threads} thread${threads > 1 ? 's' : ''}`, () => {
    let be: CpuBackend;
    before(async () => { be = await createCpuBackend({ threads }); });
    after(() => be.dispose());

    it('plain shapes', () => {
      for (const [M, N, K] of shapes) check(be, { M, N, K });
    });

    it('transposed operands read in place, with padding and offsets', () => {
      for (const [M, N, K] of [[17, 17, 17], [129, 33, 300], [1, 70, 45], [1000, 17, 129], [6, 1030, 9]] as const) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            check(be, { M, N, K, transA, transB, padA: 3, padB: 5, aOffset: 7, bOffset: 2 });
          }
        }
      }
    });

    it('2 to 8 rows against a transposed (linear) weight: the streaming multi-row path', () => {
      for (const M of [2, 3, 4, 5, 6, 7, 8]) {
        for (const [N, K] of [[1, 16], [70, 45], [130, 300], [64, 7]] as const) {
          check(be, { M, N, K, transB: true, padA: 3, padB: 5, aOffset: 7, bOffset: 2 });
          check(be, { M, N, K, transB: true, bias: true, activation: 'gelu' });
        }
      }
    });

    it('batches, with a broadcast operand', () => {
      for (const batch of [2, 3, 20]) {
        check(be, { M: 17, N: 23, K: 40, batch });
        check(be, { M: 17, N: 23, K: 40, batch, bBatch: 0 });
        check(be, { M: 9, N: 70, K: 31, batch, aBatch: 0, transB: true });
        check(be, { M: 1, N: 50, K: 64, batch, transA: true, bBatch: 0 });
      }
    });

    it('bias and activations', () => {
      for (const activation of ['none', 'relu', 'gelu'] as const) {
        for (const [M, N, K] of [[1, 37, 50], [17, 17, 17], [64, 72, 300], [3, 5, 0]] as const) {
          check(be, { M, N, K, bias: true, activation });
          check(be, { M, N, K, activation, transB: true });
        }
      }
    });

    it('activations are accurate over a wide input range', () => {
      // K = 1 keeps the summation tolerance tiny, so the activation's own error shows.
      for (const activation of ['relu', 'gelu'] as const) {
        check(be, { M: 64, N: 64, K: 1, scaleA: 12, activation });
        check(be, { M: 61, N: 7, K: 1, scaleA: 12, activation, bias: true, accumulate: true });
        check(be, { M: 1, N: 70, K: 1, scaleA: 12, activation });
      }
    });

    it('accumulate, with and without bias and activation, K within and beyond one block', () => {
      for (const activation of ['none', 'relu', 'gelu'] as const) {
        for (const K of [1, 100, 256, 257, 600]) {
          check(be, { M: 21, N: 19, K, accumulate: true, activation, bias: K % 2 === 0 });
          check(be, { M: 1, N: 40, K, accumulate: true, activation, batch: 2 });
        }
      }
    });

    it('int32 matmul falls back to the JS kernel on wasm memory', () => {
      const a = be.upload([1, 2, 3, 4], 'int32'), b = be.upload([5, 6, 7, 8], 'int32');
      const out = be.alloc('int32', 4);
      be.matmul({ a, aOffset: 0, aBatchStride: 0, transA: false, lda: 2, b, bOffset: 0, bBatchStride: 0,
        transB: false, ldb: 2, out, batch: 1, M: 2, N: 2, K: 2 });
      assert.deepEqual(Array.from(be.read(out)), [19, 22, 43, 50]);
    });

    it('rejects operands that reach outside their storage', () => {
      const a = be.alloc('float32', 10), b = be.alloc('float32', 12), out = be.alloc('float32', 100);
      assert.throws(() => be.matmul({ a, aOffset: 0, aBatchStride: 0, transA: false, lda: 4, b, bOffset: 0,
        bBatchStride: 0, transB: false, ldb: 3, out, batch: 1, M: 3, N: 3, K: 4 }), RangeError);
    });
  });
}

describe('cpu matmul, SIMD-only build (mul + add)', () => {
  let be: CpuBackend;
  before(async () => { be = await createCpuBackend({ threads: 2, relaxedSimd: false }); });
  after(() => be.dispose());
  it('matches the float64 reference', () => {
    assert.equal(be.rt.relaxedSimd, false);
    for (const [M, N, K] of shapes) check(be, { M, N, K, bias: true, activation: 'gelu' });
    check(be, { M: 40, N: 50, K: 300, transA: true, transB: true, batch: 3, accumulate: true });
  });
});

describe('wasm runtime memory', () => {
  let be: CpuBackend;
  before(async () => { be = await createCpuBackend({ threads: 2 }); });
  after(() => be.dispose());

  it('malloc returns distinct 64-byte-aligned non-null blocks', () => {
    const rt = be.rt;
    const ptrs = [1, 3, 64, 65, 1000, 4096, 100000].map((n) => rt.malloc(n));
    for (const p of ptrs) {
      assert.ok(p > 0);
      assert.equal(p % 64, 0);
    }
    assert.equal(new Set(ptrs).size, ptrs.length);
    for (const p of ptrs) rt.free(p);
    assert.throws(() => rt.free(ptrs[0]));
  });

  it('reuses freed blocks so a repeating allocation pattern holds steady memory', () => {
    const rt = be.rt;
    const sizes = [4 * 384 * 1536, 4 * 384, 4 * 8 * 256 * 384, 12, 4 * 50257];
    const step = () => {
      const ss = sizes.map((n) => be.alloc('float32', n / 4));
      // free in an order other than allocation order, as autograd does
      for (const i of [2, 0, 4, 1, 3]) be.free(ss[i]);
    };
    const keep = be.alloc('float32', 10); // so the step's blocks are not all at the top
    step();
    const heap = rt.heapBytes, live = rt.liveBytes;
    for (let i = 0; i < 20; i++) step();
    assert.equal(rt.heapBytes, heap);
    assert.equal(rt.liveBytes, live);
    be.free(keep);
  });

  it('sizes that drift upward (a growing sequence) reuse merged free blocks', () => {
    const rt = be.rt;
    const start = rt.memory.buffer.byteLength;
    let prev = be.alloc('float32', 1000);
    let other = be.alloc('float32', 10);
    for (let t = 1; t <= 300; t++) {
      // Each step: a slightly larger buffer replaces the previous one, with a small
      // allocation in between so blocks are not simply at the top.
      const next = be.alloc('float32', 1000 + 20000 * t);
      be.free(prev);
      be.free(other);
      other = be.alloc('float32', 10 + (t % 7));
      prev = next;
    }
    const final = 4 * (1000 + 20000 * 300);
    // Without merging, every abandoned size class stays reserved: several times more.
    assert.ok(rt.memory.buffer.byteLength - start < 4 * final,
      `memory grew by ${rt.memory.buffer.byteLength - start} bytes for a final block of ${final}`);
    be.free(prev);
    be.free(other);
  });

  it('alloc zero-fills recycled blocks', () => {
    const s = be.upload(new Float32Array(1000).fill(7), 'float32');
    be.free(s);
    const t = be.alloc('float32', 1000);
    assert.ok(be.read(t).every((v) => v === 0));
    be.free(t);
  });

  it('views stay valid after memory growth and workers see the grown memory', async () => {
    // A fresh backend, so no free block can serve the allocations below.
    const be = await createCpuBackend({ threads: 2 });
    const rt = be.rt;
    const small = be.upload([1, 2, 3, 4], 'float32');
    const view = rt.f32(be.ptr(small), 4);
    const before = rt.memory.buffer.byteLength;
    // Enough to force growth, then a matmul whose operands live in the new pages.
    const big = rt.malloc(before + (1 << 20));
    assert.ok(rt.memory.buffer.byteLength > before);
    assert.deepEqual(Array.from(view), [1, 2, 3, 4]);
    view[0] = 9;
    assert.equal(be.read(small)[0], 9);
    check(be, { M: 300, N: 300, K: 64 }, before); // 2 threads; out lies past the old end
    rt.free(big);
    be.free(small);
    be.dispose();
  });

  it('a kernel error surfaces as an exception and the pool keeps working', () => {
    const rt = be.rt;
    assert.throws(() => rt.run('no_such_kernel', []));
    // A pointer past the end of memory traps on every thread.
    const bad = 2 ** 32 - 4096;
    const scratch = rt.scratch(Number(rt.exports.matmul_scratch_bytes()));
    assert.throws(() => rt.run('matmul_f32', [bad, 0, 64, 0, bad, 0, 64, 0, bad, 1, 64, 64, 64, 0, 0, 0,
      scratch, Number(rt.exports.matmul_scratch_bytes())], 2), WebAssembly.RuntimeError);
    check(be, { M: 100, N: 100, K: 100 });
  });
});

describe('cpu element-wise and copy kernels agree with the reference backend', () => {
  let be: CpuBackend;
  const ref = new RefBackend();
  before(async () => { be = await createCpuBackend({ threads: 2 }); });
  after(() => be.dispose());

  const layout = (shape: number[], strides: number[], offset = 0): Layout => ({ shape, strides, offset });
  const both = (data: Float32Array) => [be.upload(data, 'float32'), ref.upload(data, 'float32')] as const;

  // [a layout, b layout] pairs over storages of 4000 elements; shapes must match.
  const pairs: [Layout, Layout][] = [
    [layout([1000], [1]), layout([1000], [1], 7)],                        // same shape
    [layout([30, 50], [50, 1]), layout([30, 50], [0, 1], 3)],             // row broadcast (bias)
    [layout([30, 50], [50, 1]), layout([30, 50], [1, 0])],                // column broadcast
    [layout([2, 3, 4, 5], [60, 20, 5, 1]), layout([2, 3, 4, 5], [0, 0, 0, 0], 11)], // scalar
    [layout([20, 30], [1, 20]), layout([20, 30], [30, 1])],               // transposed: falls back
    [layout([10, 12], [40, 2], 1), layout([10, 12], [12, 1])],            // strided slice
    [layout([300, 300], [300, 1]), layout([300, 300], [0, 1])],           // big enough for 2 threads
    [layout([4, 5, 6], [30, 6, 1]), layout([4, 5, 6], [6, 0, 1])],        // middle broadcast (rank 3: JS)
    [layout([0, 5], [5, 1]), layout([0, 5], [5, 1])],                     // empty
  ];

  it('binary ops on broadcast and strided layouts', () => {
    const A = randArray(100000), B = randArray(100000).map((v) => (Math.abs(v) < 0.01 ? 0.5 : v));
    const [a, ra] = both(A), [b, rb] = both(B);
    for (const op of ['add', 'sub', 'mul', 'div', 'max', 'min', 'lt'] as const) {
      for (const [al, bl] of pairs) {
        const n = al.shape.reduce((x, y) => x * y, 1);
        const out = be.alloc('float32', n), rout = ref.alloc('float32', n);
        be.binary(op, a, al, b, bl, out);
        ref.binary(op, ra, al, rb, bl, rout);
        assert.deepEqual(be.read(out), ref.read(rout), `${op} ${JSON.stringify([al, bl])}`);
        for (const reversed of [false, true]) {
          be.binaryScalar(op, a, al, 0.375, reversed, out);
          ref.binaryScalar(op, ra, al, 0.375, reversed, rout);
          assert.deepEqual(be.read(out), ref.read(rout), `${op} scalar ${reversed}`);
        }
        be.free(out);
      }
    }
    be.free(a); be.free(b);
  });

  it('copy and copyInto of permuted, sliced and broadcast views', () => {
    const X = randArray(200000);
    const [x, rx] = both(X);
    const views: Layout[] = [
      layout([2, 3, 4, 5], [60, 20, 5, 1], 9),        // contiguous
      layout([2, 4, 3, 5], [60, 5, 20, 1]),           // (B, T, H, D) -> (B, H, T, D)
      layout([5, 4, 3, 2], [1, 5, 20, 60]),           // full reversal of dims
      layout([3, 7], [0, 1], 4),                      // broadcast rows
      layout([2, 2, 2, 2, 3], [200, 50, 20, 4, 1]),   // rank 5 that collapses
      layout([2, 2, 2, 2, 3], [300, 1, 50, 7, 100]),  // rank 5 that does not: JS
      layout([64, 384, 8], [8, 512, 1]),              // large permute, 2 threads
      layout([10, 10], [-10, 1], 190),                // negative stride
      layout([37, 50], [1, 37]),                      // matrix transpose (strip path, partial strip)
      layout([3, 20, 13], [260, 1, 20], 2),           // batched transpose
      layout([600, 200], [1, 600]),                   // large transpose, 2 threads
    ];
    for (const vl of views) {
      const n = vl.shape.reduce((p, q) => p * q, 1);
      const out = be.alloc('float32', n), rout = ref.alloc('float32', n);
      be.copy(x, vl, out);
      ref.copy(rx, vl, rout);
      assert.deepEqual(be.read(out), ref.read(rout), `copy ${JSON.stringify(vl)}`);
      // Scatter it back into a permuted destination.
      const dst = be.alloc('float32', 3 * n + 5), rdst = ref.alloc('float32', 3 * n + 5);
      const contiguous = layout([...vl.shape], contiguousStrides(vl.shape));
      const perm = layout([...vl.shape].reverse(), contiguousStrides([...vl.shape].reverse()), 5);
      const permT: Layout = { shape: vl.shape, strides: [...perm.strides].reverse(), offset: 5 };
      be.copyInto(out, contiguous, dst, permT);
      ref.copyInto(rout, contiguous, rdst, permT);
      assert.deepEqual(be.read(dst), ref.read(rdst), `copyInto ${JSON.stringify(vl)}`);
      be.free(out); be.free(dst);
    }
    // int32 copies go through the same kernel; a dtype change does not.
    const ints = be.upload([1, 2, 3, 4, 5, 6], 'int32');
    const t = be.alloc('int32', 6), f = be.alloc('float32', 6);
    be.copy(ints, layout([2, 3], [1, 2]), t);
    assert.deepEqual(Array.from(be.read(t)), [1, 3, 5, 2, 4, 6]);
    const wide = be.upload(Array.from({ length: 9 * 10 }, (_, i) => i - 45 + (i % 3 ? 0x7fc00001 - 45 : 0)), 'int32');
    const wt = be.alloc('int32', 90);
    be.copy(wide, layout([10, 9], [1, 10]), wt); // strip path on int32 data, NaN-like bit patterns included
    const src = be.read(wide);
    assert.deepEqual(Array.from(be.read(wt)), Array.from({ length: 90 }, (_, i) => src[(i % 9) * 10 + Math.floor(i / 9)]));
    be.copy(ints, layout([6], [1]), f);
    assert.deepEqual(Array.from(be.read(f)), [1, 2, 3, 4, 5, 6]);
    be.free(x);
  });

  it('copyBlocks: a decode step\'s rows into a KV pool, each at its own position', () => {
    // k (B=3, Hkv=2, 1, D=5) into a pool (4 slots, 2 heads, capacity 6, 5) at positions 4, 0, 2
    const src = randArray(3 * 2 * 5);
    const [k, rk] = both(src);
    const [pool, rpool] = both(randArray(4 * 2 * 6 * 5));
    const shape = [1, 2, 1, 5];
    const xl = layout(shape, [10, 5, 5, 1]);
    const ol = layout(shape, [60, 30, 5, 1]);
    const from = [0, 10, 20];
    const to = [0 * 60 + 4 * 5, 1 * 60 + 0 * 5, 2 * 60 + 2 * 5];
    be.copyBlocks(k, xl, pool, ol, from, to);
    ref.copyBlocks(rk, xl, rpool, ol, from, to);
    assert.deepEqual(be.read(pool), ref.read(rpool));
    const got = be.read(pool);
    for (let i = 0; i < 3; i++) for (let h = 0; h < 2; h++) for (let d = 0; d < 5; d++) {
      assert.equal(got[to[i]! + h * 30 + d], src[i * 10 + h * 5 + d], `row ${i} head ${h} [${d}]`);
    }
    // a block past the end is refused before anything is copied
    assert.throws(() => be.copyBlocks(k, xl, pool, ol, [0], [3 * 60 + 5 * 5 + 1]), /copyBlocks: block 0 .* falls outside/);
    assert.throws(() => be.copyBlocks(k, xl, pool, ol, [0, 10], [0]), /2 source shifts for 1/);
    be.free(k); be.free(pool);
  });
});
