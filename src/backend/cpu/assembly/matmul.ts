// Matmul and element-wise kernels (owned by the runtime/matmul work).
//
// matmul_f32 follows GotoBLAS: the output is computed in 4x8 register tiles whose inputs
// are packed into contiguous panels (A: MC x KC block in strips of 4 rows, B: KC x NC panel in
// strips of 8 columns). Packing reads A and B in either layout, so transposed operands are
// used in place. Scratch (the packed panels) comes from JS; nothing here allocates.
// All pointers are byte offsets into the shared memory; strides and leading dimensions are
// in elements.
import { MR, NR, PRE, RELU, GELU, POST, ACC_ZERO, madd, epi4, epi1, micro4x8 } from './tile';

const KC: i32 = 256;  // depth of a packed block
const MC: i32 = 64;   // rows of a packed A block (64 KiB: stays in L2 while B strips stream)
const NC: i32 = 1024; // columns of a packed B panel (1 MiB)

const AP_BYTES: usize = <usize>(MC * KC * 4);
const BP_BYTES: usize = <usize>(KC * NC * 4);
const TMP_BYTES: usize = <usize>(MR * NR * 4);

/** Start of the free heap: everything below holds the module's static data. */
export function heap_base(): usize {
  return __heap_base;
}

/** 1 when this build uses relaxed-SIMD FMA. */
export function relaxed_simd(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}

/** Bytes of scratch each thread needs for matmul_f32. */
export function matmul_scratch_bytes(): i32 {
  return <i32>((AP_BYTES + BP_BYTES + TMP_BYTES + 63) & ~63);
}

// One 4x8 tile: C[0..rows, 0..cols] (row stride ldc bytes) from packed strips ap (kc x 4) and
// bp (kc x 8), with the bias (the tile's first column, or 0) and the epilogue mode. Partial
// tiles go through tmp. The microkernel is tile.ts's, shared with the attention kernels.
function tile4x8(kc: i32, ap: usize, bp: usize, c: usize, ldc: usize, rows: i32, cols: i32,
  bias: usize, mode: i32, tmp: usize): void {
  micro4x8(kc, ap, 4, MR * 4, bp, NR * 4, c, ldc, ACC_ZERO, 0, true, rows, cols, bias, mode, tmp);
}

// 4x4 transpose of (r0..r3) rows into columns, stored at dst, dst+stride, ...
@inline function transpose4Store(r0: v128, r1: v128, r2: v128, r3: v128, dst: usize, stride: usize): void {
  const t0 = v128.shuffle<f32>(r0, r1, 0, 4, 1, 5);
  const t1 = v128.shuffle<f32>(r0, r1, 2, 6, 3, 7);
  const t2 = v128.shuffle<f32>(r2, r3, 0, 4, 1, 5);
  const t3 = v128.shuffle<f32>(r2, r3, 2, 6, 3, 7);
  v128.store(dst, v128.shuffle<f32>(t0, t2, 0, 1, 4, 5));
  v128.store(dst + stride, v128.shuffle<f32>(t0, t2, 2, 3, 6, 7));
  v128.store(dst + 2 * stride, v128.shuffle<f32>(t1, t3, 0, 1, 4, 5));
  v128.store(dst + 3 * stride, v128.shuffle<f32>(t1, t3, 2, 3, 6, 7));
}

// Packs A rows i0..i0+mc, depth k0..k0+kc into strips of 4 rows: dst[s][k][r]. Rows past mc are 0.
function packA(dst: usize, a: usize, lda: usize, transA: i32, i0: i32, mc: i32, k0: i32, kc: i32): void {
  for (let s = 0; s < mc; s += MR) {
    const rows = min(MR, mc - s);
    const d = dst + <usize>(s * kc * 4);
    if (!transA) {
      // A[m, k] at m*lda + k: four row streams, transposed 4x4 at a time.
      const p0 = a + ((<usize>(i0 + s) * lda + <usize>k0) << 2);
      if (rows == MR) {
        const p1 = p0 + (lda << 2), p2 = p1 + (lda << 2), p3 = p2 + (lda << 2);
        let k = 0;
        for (; k + 4 <= kc; k += 4) {
          const o = <usize>k << 2;
          transpose4Store(v128.load(p0 + o), v128.load(p1 + o), v128.load(p2 + o), v128.load(p3 + o),
            d + (<usize>k << 4), 16);
        }
        for (; k < kc; k++) {
          const o = <usize>k << 2;
          const q = d + (<usize>k << 4);
          store<f32>(q, load<f32>(p0 + o));
          store<f32>(q, load<f32>(p1 + o), 4);
          store<f32>(q, load<f32>(p2 + o), 8);
          store<f32>(q, load<f32>(p3 + o), 12);
        }
      } else {
        for (let k = 0; k < kc; k++) {
          const q = d + (<usize>k << 4);
          for (let r = 0; r < MR; r++) {
            store<f32>(q + (<usize>r << 2), r < rows ? load<f32>(p0 + ((<usize>r * lda + <usize>k) << 2)) : <f32>0);
          }
        }
      }
    } else {
      // A[m, k] at k*lda + m: each k gives four adjacent rows.
      const p = a + ((<usize>k0 * lda + <usize>(i0 + s)) << 2);
      if (rows == MR) {
        for (let k = 0; k < kc; k++) {
          v128.store(d + (<usize>k << 4), v128.load(p + ((<usize>k * lda) << 2)));
        }
      } else {
        for (let k = 0; k < kc; k++) {
          const q = d + (<usize>k << 4);
          const pk = p + ((<usize>k * lda) << 2);
          for (let r = 0; r < MR; r++) {
            store<f32>(q + (<usize>r << 2), r < rows ? load<f32>(pk + (<usize>r << 2)) : <f32>0);
          }
        }
      }
    }
  }
}

// Packs B depth k0..k0+kc, columns j0..j0+nc into strips of 8 columns: dst[s][k][c]. Columns past nc are 0.
function packB(dst: usize, b: usize, ldb: usize, transB: i32, k0: i32, kc: i32, j0: i32, nc: i32): void {
  for (let s = 0; s < nc; s += NR) {
    const cols = min(NR, nc - s);
    const d = dst + <usize>(s * kc * 4);
    if (!transB) {
      // B[k, n] at k*ldb + n: each k row gives eight adjacent columns.
      const p = b + ((<usize>k0 * ldb + <usize>(j0 + s)) << 2);
      if (cols == NR) {
        for (let k = 0; k < kc; k++) {
          const pk = p + ((<usize>k * ldb) << 2);
          const q = d + (<usize>k << 5);
          v128.store(q, v128.load(pk));
          v128.store(q, v128.load(pk, 16), 16);
        }
      } else {
        for (let k = 0; k < kc; k++) {
          const pk = p + ((<usize>k * ldb) << 2);
          const q = d + (<usize>k << 5);
          for (let c = 0; c < NR; c++) {
            store<f32>(q + (<usize>c << 2), c < cols ? load<f32>(pk + (<usize>c << 2)) : <f32>0);
          }
        }
      }
    } else {
      // B[k, n] at n*ldb + k: eight column streams, transposed 4x4 at a time.
      const p0 = b + ((<usize>(j0 + s) * ldb + <usize>k0) << 2);
      if (cols == NR) {
        const st = ldb << 2;
        const p1 = p0 + st, p2 = p1 + st, p3 = p2 + st, p4 = p3 + st;
        const p5 = p4 + st, p6 = p5 + st, p7 = p6 + st;
        let k = 0;
        for (; k + 4 <= kc; k += 4) {
          const o = <usize>k << 2;
          const q = d + (<usize>k << 5);
          transpose4Store(v128.load(p0 + o), v128.load(p1 + o), v128.load(p2 + o), v128.load(p3 + o), q, 32);
          transpose4Store(v128.load(p4 + o), v128.load(p5 + o), v128.load(p6 + o), v128.load(p7 + o), q + 16, 32);
        }
        for (; k < kc; k++) {
          const o = <usize>k << 2;
          const q = d + (<usize>k << 5);
          store<f32>(q, load<f32>(p0 + o)); store<f32>(q, load<f32>(p1 + o), 4);
          store<f32>(q, load<f32>(p2 + o), 8); store<f32>(q, load<f32>(p3 + o), 12);
          store<f32>(q, load<f32>(p4 + o), 16); store<f32>(q, load<f32>(p5 + o), 20);
          store<f32>(q, load<f32>(p6 + o), 24); store<f32>(q, load<f32>(p7 + o), 28);
        }
      } else {
        for (let k = 0; k < kc; k++) {
          const q = d + (<usize>k << 5);
          for (let c = 0; c < NR; c++) {
            store<f32>(q + (<usize>c << 2), c < cols ? load<f32>(p0 + ((<usize>c * ldb + <usize>k) << 2)) : <f32>0);
          }
        }
      }
    }
  }
}

// C[m0..m1, n0..n1] of one matrix (row stride N). act: 0 none, 1 relu, 2 gelu.
// Precondition: not (accumulate and act and K > KC); the JS side splits that case.
function gemm(a: usize, lda: usize, transA: i32, b: usize, ldb: usize, transB: i32,
  c: usize, N: i32, m0: i32, m1: i32, n0: i32, n1: i32, K: i32,
  bias: usize, act: i32, accumulate: i32, scratch: usize, bf16: i32 = 0): void {
  const ap = scratch, bp = scratch + AP_BYTES, tmp = scratch + AP_BYTES + BP_BYTES;
  const ldc = <usize>N << 2;
  const actBit = act == 1 ? RELU : act == 2 ? GELU : 0;
  for (let jc = n0; jc < n1; jc += NC) {
    const nc = min(NC, n1 - jc);
    let pc = 0;
    do { // at least once, so K == 0 still writes act(bias) (+C)
      const kc = min(KC, K - pc);
      const first = pc == 0, last = pc + kc >= K;
      let mode = 0;
      if (!first || (accumulate && !(act && last))) mode |= PRE;
      if (last) mode |= actBit;
      if (first && last && accumulate && act) mode |= POST;
      if (bf16) packBbf16(bp, b, ldb, transB, pc, kc, jc, nc);
      else packB(bp, b, ldb, transB, pc, kc, jc, nc);
      for (let ic = m0; ic < m1; ic += MC) {
        const mc = min(MC, m1 - ic);
        packA(ap, a, lda, transA, ic, mc, pc, kc);
        for (let jr = 0; jr < nc; jr += NR) {
          const cols = min(NR, nc - jr);
          const bs = bp + <usize>(jr * kc * 4);
          const bz: usize = first && bias ? bias + (<usize>(jc + jr) << 2) : 0;
          const cj = c + (<usize>(jc + jr) << 2);
          for (let ir = 0; ir < mc; ir += MR) {
            tile4x8(kc, ap + <usize>(ir * kc * 4), bs, cj + <usize>(ic + ir) * ldc, ldc,
              min(MR, mc - ir), cols, bz, mode, tmp);
          }
        }
      }
      pc += kc;
    } while (pc < K);
  }
}

// The epilogue of the dot-product gemv: outputs n..n+cnt-1 (cnt <= 4) from their sums.
@inline function epiDots(c: usize, bias: usize, n: i32, cnt: i32, t0: f32, t1: f32, t2: f32, t3: f32, mode: i32): void {
  const q = c + (<usize>n << 2);
  const bz = bias + (<usize>n << 2);
  epi1(q, t0 + (bias ? load<f32>(bz) : <f32>0), mode);
  if (cnt > 1) epi1(q + 4, t1 + (bias ? load<f32>(bz, 4) : <f32>0), mode);
  if (cnt > 2) epi1(q + 8, t2 + (bias ? load<f32>(bz, 8) : <f32>0), mode);
  if (cnt > 3) epi1(q + 12, t3 + (bias ? load<f32>(bz, 12) : <f32>0), mode);
}

// Horizontal sum of four lanes.
@inline function hsum(v: v128): f32 {
  const s = f32x4.add(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

// One output row (M == 1, A contiguous): no packing, since each B element is used once.
// out[n0..n1] = act(a . B[:, n] + bias[n]) (+ out).
function gemv(a: usize, b: usize, ldb: usize, transB: i32, c: usize, n0: i32, n1: i32, K: i32,
  bias: usize, act: i32, accumulate: i32): void {
  let mode = act == 1 ? RELU : act == 2 ? GELU : 0;
  if (accumulate) mode |= act ? POST : PRE;
  let n = n0;
  if (!transB) {
    // B rows are contiguous in n: 16 outputs at a time, streaming K rows.
    for (; n + 16 <= n1; n += 16) {
      let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
      let p = b + (<usize>n << 2);
      const st = ldb << 2;
      for (let k = 0; k < K; k++) {
        const x = v128.load32_splat(a + (<usize>k << 2));
        s0 = madd(x, v128.load(p), s0); s1 = madd(x, v128.load(p, 16), s1);
        s2 = madd(x, v128.load(p, 32), s2); s3 = madd(x, v128.load(p, 48), s3);
        p += st;
      }
      const q = c + (<usize>n << 2);
      if (bias) {
        const bz = bias + (<usize>n << 2);
        epi4(q, s0, v128.load(bz), mode); epi4(q + 16, s1, v128.load(bz, 16), mode);
        epi4(q + 32, s2, v128.load(bz, 32), mode); epi4(q + 48, s3, v128.load(bz, 48), mode);
      } else {
        const z = f32x4.splat(0);
        epi4(q, s0, z, mode); epi4(q + 16, s1, z, mode); epi4(q + 32, s2, z, mode); epi4(q + 48, s3, z, mode);
      }
    }
    for (; n < n1; n++) {
      let s: f32 = 0;
      let p = b + (<usize>n << 2);
      for (let k = 0; k < K; k++) { s += load<f32>(a + (<usize>k << 2)) * load<f32>(p); p += ldb << 2; }
      if (bias) s += load<f32>(bias + (<usize>n << 2));
      epi1(c + (<usize>n << 2), s, mode);
    }
  } else {
    // B[k, n] at n*ldb + k: dot products, four outputs at a time.
    for (; n < n1; n += 4) {
      const cnt = min(4, n1 - n);
      const r0 = b + ((<usize>n * ldb) << 2);
      const r1 = cnt > 1 ? r0 + (ldb << 2) : r0;
      const r2 = cnt > 2 ? r1 + (ldb << 2) : r1;
      const r3 = cnt > 3 ? r2 + (ldb << 2) : r2;
      let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
      let k = 0;
      for (; k + 4 <= K; k += 4) {
        const o = <usize>k << 2;
        const x = v128.load(a + o);
        s0 = madd(x, v128.load(r0 + o), s0); s1 = madd(x, v128.load(r1 + o), s1);
        s2 = madd(x, v128.load(r2 + o), s2); s3 = madd(x, v128.load(r3 + o), s3);
      }
      let t0 = hsum(s0), t1 = hsum(s1), t2 = hsum(s2), t3 = hsum(s3);
      for (; k < K; k++) {
        const o = <usize>k << 2;
        const x = load<f32>(a + o);
        t0 += x * load<f32>(r0 + o); t1 += x * load<f32>(r1 + o);
        t2 += x * load<f32>(r2 + o); t3 += x * load<f32>(r3 + o);
      }
      epiDots(c, bias, n, cnt, t0, t1, t2, t3, mode);
    }
  }
}

/**
 * out[b, m, n] = act(sum_k A[b, m, k] B[b, k, n] + bias[n]) (+ out[b, m, n] if accumulate).
 * a, b, out, bias: byte pointers (bias 0 = none); A[b,m,k] at a + 4*(b*aBatchStride + (transA ?
 * k*lda + m : m*lda + k)), likewise B with (k, n); out is contiguous (batch, M, N).
 * act: 0 none, 1 relu, 2 gelu (tanh). scratch + tid*scratchStride: this thread's
 * matmul_scratch_bytes() bytes. Precondition: not (accumulate && act && K > 256).
 * Threads split whole matrices when the batch divides well, else each matrix over N or M.
 */
export function matmul_f32(tid: i32, nt: i32,
  a: usize, aBatchStride: i32, lda: i32, transA: i32,
  b: usize, bBatchStride: i32, ldb: i32, transB: i32,
  c: usize, batch: i32, M: i32, N: i32, K: i32,
  bias: usize, act: i32, accumulate: i32, scratch: usize, scratchStride: i32): void {
  matmulImpl(tid, nt, a, aBatchStride, lda, transA, b, bBatchStride, ldb, transB, c, batch, M, N, K,
    bias, act, accumulate, scratch, scratchStride, 0);
}

// Both exports: bf16 says B holds bfloat16 (2-byte elements) instead of float32.
function matmulImpl(tid: i32, nt: i32,
  a: usize, aBatchStride: i32, lda: i32, transA: i32,
  b: usize, bBatchStride: i32, ldb: i32, transB: i32,
  c: usize, batch: i32, M: i32, N: i32, K: i32,
  bias: usize, act: i32, accumulate: i32, scratch: usize, scratchStride: i32, bf16: i32): void {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  const sp = scratch + <usize>tid * <usize>scratchStride;
  const mn = <usize>M * <usize>N;
  let b0 = 0, b1 = batch, m0 = 0, m1 = M, n0 = 0, n1 = N;
  if (nt > 1) {
    if (batch % nt == 0 || batch >= 8 * nt) {
      b0 = <i32>(<i64>batch * tid / nt);
      b1 = <i32>(<i64>batch * (tid + 1) / nt);
    } else if ((N >= M && N >= NR * nt) || M < MR * nt) {
      const chunk = ((N + nt - 1) / nt + NR - 1) / NR * NR;
      n0 = min(N, tid * chunk); n1 = min(N, n0 + chunk);
    } else {
      const chunk = ((M + nt - 1) / nt + MR - 1) / MR * MR;
      m0 = min(M, tid * chunk); m1 = min(M, m0 + chunk);
    }
  }
  if (m0 >= m1 || n0 >= n1) return;
  for (let bi = b0; bi < b1; bi++) {
    const ab = a + ((<usize>bi * <usize>aBatchStride) << 2);
    const bb = b + ((<usize>bi * <usize>bBatchStride) << (bf16 ? 1 : 2));
    const cb = c + ((<usize>bi * mn) << 2);
    if (M == 1 && !transA) {
      if (bf16) gemvBf16(ab, bb, <usize>ldb, transB, cb, n0, n1, K, bias, act, accumulate);
      else gemv(ab, bb, <usize>ldb, transB, cb, n0, n1, K, bias, act, accumulate);
    } else {
      gemm(ab, <usize>lda, transA, bb, <usize>ldb, transB, cb, N, m0, m1, n0, n1, K, bias, act, accumulate, sp, bf16);
    }
  }
}

// ---------------------------------------------------------------------------------------
// bfloat16 weights (dtype 'bfloat16': the top 16 bits of a float32). B may be stored so:
// widening is a 16-bit shift, so a matrix-vector product reads half the bytes for two
// shuffles per 8 weights. Decoding one token is such products over every weight (memory
// bound on this machine), so it runs up to about twice as fast; arithmetic stays float32.
// ---------------------------------------------------------------------------------------

@inline function bf16At(p: usize): f32 {
  return reinterpret<f32>(<u32>load<u16>(p) << 16);
}

// Lanes 0-3 (lo) or 4-7 (hi) of eight bfloat16 values as four float32.
@inline function bf16Lo(v: v128): v128 {
  return i8x16.shuffle(i32x4.splat(0), v, 0, 0, 16, 17, 0, 0, 18, 19, 0, 0, 20, 21, 0, 0, 22, 23);
}
@inline function bf16Hi(v: v128): v128 {
  return i8x16.shuffle(i32x4.splat(0), v, 0, 0, 24, 25, 0, 0, 26, 27, 0, 0, 28, 29, 0, 0, 30, 31);
}

// packB for a bfloat16 B (element e at b + 2e): widened while packed, scalar (the packed
// panel is reused across every row block, so this is a small share of a gemm).
function packBbf16(dst: usize, b: usize, ldb: usize, transB: i32, k0: i32, kc: i32, j0: i32, nc: i32): void {
  for (let s = 0; s < nc; s += NR) {
    const cols = min(NR, nc - s);
    const d = dst + <usize>(s * kc * 4);
    for (let k = 0; k < kc; k++) {
      const q = d + (<usize>k << 5);
      for (let c = 0; c < NR; c++) {
        let v: f32 = 0;
        if (c < cols) {
          const n = <usize>(j0 + s + c), kk = <usize>(k0 + k);
          v = bf16At(b + ((transB ? n * ldb + kk : kk * ldb + n) << 1));
        }
        store<f32>(q + (<usize>c << 2), v);
      }
    }
  }
}

// gemv with a bfloat16 B: the float32 a row times B (K x N), outputs n0..n1.
function gemvBf16(a: usize, b: usize, ldb: usize, transB: i32, c: usize, n0: i32, n1: i32, K: i32,
  bias: usize, act: i32, accumulate: i32): void {
  let mode = act == 1 ? RELU : act == 2 ? GELU : 0;
  if (accumulate) mode |= act ? POST : PRE;
  let n = n0;
  if (!transB) {
    // B rows are contiguous in n: 16 outputs at a time (32 bytes of B per k).
    for (; n + 16 <= n1; n += 16) {
      let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
      let p = b + (<usize>n << 1);
      const st = ldb << 1;
      for (let k = 0; k < K; k++) {
        const x = v128.load32_splat(a + (<usize>k << 2));
        const w0 = v128.load(p), w1 = v128.load(p, 16);
        s0 = madd(x, bf16Lo(w0), s0); s1 = madd(x, bf16Hi(w0), s1);
        s2 = madd(x, bf16Lo(w1), s2); s3 = madd(x, bf16Hi(w1), s3);
        p += st;
      }
      const q = c + (<usize>n << 2);
      if (bias) {
        const bz = bias + (<usize>n << 2);
        epi4(q, s0, v128.load(bz), mode); epi4(q + 16, s1, v128.load(bz, 16), mode);
        epi4(q + 32, s2, v128.load(bz, 32), mode); epi4(q + 48, s3, v128.load(bz, 48), mode);
      } else {
        const z = f32x4.splat(0);
        epi4(q, s0, z, mode); epi4(q + 16, s1, z, mode); epi4(q + 32, s2, z, mode); epi4(q + 48, s3, z, mode);
      }
    }
    for (; n < n1; n++) {
      let s: f32 = 0;
      let p = b + (<usize>n << 1);
      for (let k = 0; k < K; k++) { s += load<f32>(a + (<usize>k << 2)) * bf16At(p); p += ldb << 1; }
      if (bias) s += load<f32>(bias + (<usize>n << 2));
      epi1(c + (<usize>n << 2), s, mode);
    }
  } else {
    // B[k, n] at n*ldb + k: dot products, four outputs at a time, 8 k per step.
    for (; n < n1; n += 4) {
      const cnt = min(4, n1 - n);
      const r0 = b + ((<usize>n * ldb) << 1);
      const r1 = cnt > 1 ? r0 + (ldb << 1) : r0;
      const r2 = cnt > 2 ? r1 + (ldb << 1) : r1;
      const r3 = cnt > 3 ? r2 + (ldb << 1) : r2;
      let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
      let u0 = f32x4.splat(0), u1 = f32x4.splat(0), u2 = f32x4.splat(0), u3 = f32x4.splat(0);
      let k = 0;
      // Eight weights per v128: as i32 lanes, (w[2j+1] << 16) | w[2j]. Shifting left by 16
      // gives the even ones as float32 and masking the low half the odd ones, so x is split
      // into its even and odd elements (two shuffles per 8 k, shared by the 4 rows).
      const hiMask = i32x4.splat(0xffff0000);
      for (; k + 8 <= K; k += 8) {
        const xo = <usize>k << 2, wo = <usize>k << 1;
        const xa = v128.load(a + xo), xb = v128.load(a + xo, 16);
        const xe = v128.shuffle<f32>(xa, xb, 0, 2, 4, 6), xd = v128.shuffle<f32>(xa, xb, 1, 3, 5, 7);
        const w0 = v128.load(r0 + wo), w1 = v128.load(r1 + wo), w2 = v128.load(r2 + wo), w3 = v128.load(r3 + wo);
        // Even and odd halves into separate accumulators: eight independent FMA chains.
        s0 = madd(xe, i32x4.shl(w0, 16), s0); u0 = madd(xd, v128.and(w0, hiMask), u0);
        s1 = madd(xe, i32x4.shl(w1, 16), s1); u1 = madd(xd, v128.and(w1, hiMask), u1);
        s2 = madd(xe, i32x4.shl(w2, 16), s2); u2 = madd(xd, v128.and(w2, hiMask), u2);
        s3 = madd(xe, i32x4.shl(w3, 16), s3); u3 = madd(xd, v128.and(w3, hiMask), u3);
      }
      let t0 = hsum(f32x4.add(s0, u0)), t1 = hsum(f32x4.add(s1, u1)), t2 = hsum(f32x4.add(s2, u2)), t3 = hsum(f32x4.add(s3, u3));
      for (; k < K; k++) {
        const x = load<f32>(a + (<usize>k << 2));
        const wo = <usize>k << 1;
        t0 += x * bf16At(r0 + wo); t1 += x * bf16At(r1 + wo);
        t2 += x * bf16At(r2 + wo); t3 += x * bf16At(r3 + wo);
      }
      epiDots(c, bias, n, cnt, t0, t1, t2, t3, mode);
    }
  }
}

/**
 * matmul_f32 with B stored as bfloat16 (byte pointer b, element e at b + 2e; strides and
 * leading dimensions in elements, as there). A, bias and out are float32.
 */
export function matmul_bf16b(tid: i32, nt: i32,
  a: usize, aBatchStride: i32, lda: i32, transA: i32,
  b: usize, bBatchStride: i32, ldb: i32, transB: i32,
  c: usize, batch: i32, M: i32, N: i32, K: i32,
  bias: usize, act: i32, accumulate: i32, scratch: usize, scratchStride: i32): void {
  matmulImpl(tid, nt, a, aBatchStride, lda, transA, b, bBatchStride, ldb, transB, c, batch, M, N, K,
    bias, act, accumulate, scratch, scratchStride, 1);
}

// ---------------------------------------------------------------------------------------
// Element-wise kernels on 2-D (outer, inner) views: element (o, i) of an operand lies at
// p + 4*(o*outerStride + i*innerStride) with innerStride 0 (broadcast) or 1 (contiguous);
// out is contiguous. This covers same-shape, row-, column- and scalar-broadcast operands.
// ---------------------------------------------------------------------------------------

// Binary op codes: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min.
@inline function bin4(op: i32, x: v128, y: v128): v128 {
  if (op == 0) return f32x4.add(x, y);
  if (op == 1) return f32x4.sub(x, y);
  if (op == 2) return f32x4.mul(x, y);
  if (op == 3) return f32x4.div(x, y);
  if (op == 4) return f32x4.max(x, y);
  return f32x4.min(x, y);
}

@inline function bin1(op: i32, x: f32, y: f32): f32 {
  if (op == 0) return x + y;
  if (op == 1) return x - y;
  if (op == 2) return x * y;
  if (op == 3) return x / y;
  if (op == 4) return max(x, y);
  return min(x, y);
}

// One row of n outputs; op, ai and bi are constants after inlining, so each call site
// becomes its own specialised loop.
@inline function binRow(op: i32, ai: i32, bi: i32, a: usize, b: usize, o: usize, n: i32): void {
  let i = 0;
  if (ai && bi) {
    for (; i + 4 <= n; i += 4) {
      const q = <usize>i << 2;
      v128.store(o + q, bin4(op, v128.load(a + q), v128.load(b + q)));
    }
    for (; i < n; i++) {
      const q = <usize>i << 2;
      store<f32>(o + q, bin1(op, load<f32>(a + q), load<f32>(b + q)));
    }
  } else if (ai) {
    const y = v128.load32_splat(b), ys = load<f32>(b);
    for (; i + 4 <= n; i += 4) {
      const q = <usize>i << 2;
      v128.store(o + q, bin4(op, v128.load(a + q), y));
    }
    for (; i < n; i++) {
      const q = <usize>i << 2;
      store<f32>(o + q, bin1(op, load<f32>(a + q), ys));
    }
  } else if (bi) {
    const x = v128.load32_splat(a), xs = load<f32>(a);
    for (; i + 4 <= n; i += 4) {
      const q = <usize>i << 2;
      v128.store(o + q, bin4(op, x, v128.load(b + q)));
    }
    for (; i < n; i++) {
      const q = <usize>i << 2;
      store<f32>(o + q, bin1(op, xs, load<f32>(b + q)));
    }
  } else {
    const v = bin1(op, load<f32>(a), load<f32>(b));
    const vv = f32x4.splat(v);
    for (; i + 4 <= n; i += 4) v128.store(o + (<usize>i << 2), vv);
    for (; i < n; i++) store<f32>(o + (<usize>i << 2), v);
  }
}

@inline function binRowOp(op: i32, ai: i32, bi: i32, a: usize, b: usize, o: usize, n: i32): void {
  if (ai) {
    if (bi) binRow(op, 1, 1, a, b, o, n); else binRow(op, 1, 0, a, b, o, n);
  } else {
    if (bi) binRow(op, 0, 1, a, b, o, n); else binRow(op, 0, 0, a, b, o, n);
  }
}

/**
 * out[o, i] = A[o, i] op B[o, i] over an (outer, inner) grid; op: 0 add, 1 sub, 2 mul, 3 div,
 * 4 max, 5 min. aInner/bInner: 1 contiguous along inner, 0 broadcast; aOuter/bOuter: element
 * strides between rows (0 = broadcast). Threads split rows, or the row when there are few.
 */
export function ew_binary_f32(tid: i32, nt: i32, op: i32,
  a: usize, aInner: i32, aOuter: i32, b: usize, bInner: i32, bOuter: i32,
  out: usize, outer: i32, inner: i32): void {
  let o0 = 0, o1 = outer, i0 = 0, i1 = inner;
  if (nt > 1) {
    if (outer >= nt) {
      o0 = <i32>(<i64>outer * tid / nt); o1 = <i32>(<i64>outer * (tid + 1) / nt);
    } else {
      const chunk = ((inner + nt - 1) / nt + 15) & ~15;
      i0 = min(inner, tid * chunk); i1 = min(inner, i0 + chunk);
    }
  }
  const n = i1 - i0;
  if (n <= 0) return;
  for (let o = o0; o < o1; o++) {
    const pa = a + ((<usize>o * <usize>aOuter + <usize>(i0 * aInner)) << 2);
    const pb = b + ((<usize>o * <usize>bOuter + <usize>(i0 * bInner)) << 2);
    const po = out + ((<usize>o * <usize>inner + <usize>i0) << 2);
    switch (op) {
      case 0: binRowOp(0, aInner, bInner, pa, pb, po, n); break;
      case 1: binRowOp(1, aInner, bInner, pa, pb, po, n); break;
      case 2: binRowOp(2, aInner, bInner, pa, pb, po, n); break;
      case 3: binRowOp(3, aInner, bInner, pa, pb, po, n); break;
      case 4: binRowOp(4, aInner, bInner, pa, pb, po, n); break;
      default: binRowOp(5, aInner, bInner, pa, pb, po, n); break;
    }
  }
}

/**
 * Strided copy of 4-byte elements over a (n0, n1, n2, n3) index space: element (i0..i3) goes
 * from x + 4*Σ ik*xsk to out + 4*Σ ik*osk. Strides in elements, any sign. Threads split the
 * n0*n1*n2 rows.
 */
export function copy_strided_32(tid: i32, nt: i32, x: usize, out: usize,
  n0: i32, n1: i32, n2: i32, n3: i32,
  xs0: i32, xs1: i32, xs2: i32, xs3: i32,
  os0: i32, os1: i32, os2: i32, os3: i32): void {
  const rows = <i64>n0 * n1 * n2;
  if (rows <= 0 || n3 <= 0) return;
  if (xs2 == 1 && xs3 != 1 && os3 == 1 && n2 >= 8) {
    transposeStrips(tid, nt, x, out, n0, n1, n2, n3, xs0, xs1, xs3, os0, os1, os2);
    return;
  }
  const r0 = rows * tid / nt, r1 = rows * (tid + 1) / nt;
  if (r0 >= r1) return;
  // Row index (j0, j1, j2) of r0, then advanced odometer style.
  let j2 = <i32>(r0 % n2);
  let j1 = <i32>((r0 / n2) % n1);
  let j0 = <i32>(r0 / n2 / n1);
  const rowBytes = <usize>n3 << 2;
  for (let r = r0; r < r1; r++) {
    const xp = x + ((<usize>j0 * <usize>xs0 + <usize>j1 * <usize>xs1 + <usize>j2 * <usize>xs2) << 2);
    const op = out + ((<usize>j0 * <usize>os0 + <usize>j1 * <usize>os1 + <usize>j2 * <usize>os2) << 2);
    if (xs3 == 1 && os3 == 1) {
      memory.copy(op, xp, rowBytes);
    } else if (xs3 == 0 && os3 == 1) {
      const v = load<u32>(xp);
      for (let i = 0; i < n3; i++) store<u32>(op + (<usize>i << 2), v);
    } else {
      const xst = <usize>xs3 << 2, ost = <usize>os3 << 2;
      let p = xp, q = op;
      for (let i = 0; i < n3; i++) { store<u32>(q, load<u32>(p)); p += xst; q += ost; }
    }
    if (++j2 == n2) { j2 = 0; if (++j1 == n1) { j1 = 0; j0++; } }
  }
}

// Transposing case of copy_strided_32 (x contiguous along dim 2, out along dim 3): walking
// out's rows reads x with a large stride, so take 8 rows at a time, which turns each read
// into 32 contiguous bytes while the 8 writes stream along their rows. Lanes move as integers
// so int32 data and NaN payloads pass through unchanged.
function transposeStrips(tid: i32, nt: i32, x: usize, out: usize, n0: i32, n1: i32, n2: i32, n3: i32,
  xs0: i32, xs1: i32, xs3: i32, os0: i32, os1: i32, os2: i32): void {
  const per = (n2 + 7) >> 3;
  const strips = <i64>n0 * n1 * per;
  const s0 = strips * tid / nt, s1 = strips * (tid + 1) / nt;
  const xst = <usize>xs3 << 2, ost = <usize>os2 << 2;
  for (let s = s0; s < s1; s++) {
    const j2 = <i32>(s % per) << 3;
    const j1 = <i32>((s / per) % n1);
    const j0 = <i32>(s / per / n1);
    const xp = x + ((<usize>j0 * <usize>xs0 + <usize>j1 * <usize>xs1 + <usize>j2) << 2);
    const op = out + ((<usize>j0 * <usize>os0 + <usize>j1 * <usize>os1 + <usize>j2 * <usize>os2) << 2);
    const cnt = min(8, n2 - j2);
    if (cnt == 8) {
      let p = xp;
      for (let i = 0; i < n3; i++) {
        const v0 = v128.load(p), v1 = v128.load(p, 16);
        const q = op + (<usize>i << 2);
        store<i32>(q, i32x4.extract_lane(v0, 0));
        store<i32>(q + ost, i32x4.extract_lane(v0, 1));
        store<i32>(q + 2 * ost, i32x4.extract_lane(v0, 2));
        store<i32>(q + 3 * ost, i32x4.extract_lane(v0, 3));
        store<i32>(q + 4 * ost, i32x4.extract_lane(v1, 0));
        store<i32>(q + 5 * ost, i32x4.extract_lane(v1, 1));
        store<i32>(q + 6 * ost, i32x4.extract_lane(v1, 2));
        store<i32>(q + 7 * ost, i32x4.extract_lane(v1, 3));
        p += xst;
      }
    } else {
      for (let r = 0; r < cnt; r++) {
        let p = xp + (<usize>r << 2);
        const q = op + <usize>r * ost;
        for (let i = 0; i < n3; i++) { store<u32>(q + (<usize>i << 2), load<u32>(p)); p += xst; }
      }
    }
  }
}
