// Weight-only quantized linear and embedding (formats: src/tensor/quantize.ts).
//
// Format codes: 0 int8 (one f32 scale per weight row, K signed bytes a row), 1 int4 and
// 2 int4z (groups of 32 along K: 16 bytes a group, byte j holding element j in its low nibble
// and element j + 16 in its high nibble; one f32 scale a group and, for int4z, one zero-point
// byte a group; int4's zero point is 8). Pointers are byte offsets into the shared memory.
//
// quant_matmul: out[m, n] = act(Σ_k x[m, k] · scale · (q[n, k] − zero) + bias[n]).
//  - M == 1 (decode): each weight row is read once, as bytes, and dotted with x in SIMD: int8
//    bytes widen to f32 and accumulate Σ q·x, times the row's scale at the end; int4 nibbles
//    have their zero point subtracted as bytes (exact), widen, and Σ (q − z)·x is taken per
//    group, then scaled into the row's accumulator.
//  - M > 1: a block of 8 weight rows is dequantized once into a float32 panel laid out as the
//    GEMM's packed B strip ([k][8]), and every 4-row tile of x runs tile.ts's 4x8 microkernel
//    over it with the bias + activation epilogue (the float matmul's epi4/epi1, so gelu is the
//    same code). The weight is decoded once per call whatever M is.
// Threads split the weight rows (N) in blocks of 8.
import { MR, NR, RELU, GELU, ACC_ZERO, madd, epi1, micro4x8 } from './tile';

const FMT_INT8: i32 = 0;
const FMT_INT4Z: i32 = 2;

// Horizontal sum of four lanes.
@inline function hsum4(v: v128): f32 {
  const s = f32x4.add(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

// Signed bytes 0-3, 4-7, 8-11, 12-15 of v (already widened to i16 in h) as four f32.
@inline function lo4(h: v128): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(h));
}
@inline function hi4(h: v128): v128 {
  return f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(h));
}

/** Per-thread scratch of quant_matmul for M > 1: the 8-row panel, a padded 4-row x tile, the
 *  microkernel's partial-tile buffer. */
export function quant_scratch_bytes(K: i32): i32 {
  return ((NR * K + MR * K + MR * NR) * 4 + 63) & ~63;
}

// ---------------------------------------------------------------------------------------
// M == 1: dot products of whole weight rows with x

// Σ_k q[k] · x[k] over one int8 row (w: K signed bytes).
function dotInt8(w: usize, x: usize, K: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let k = 0;
  for (; k + 16 <= K; k += 16) {
    const b = v128.load(w + <usize>k);
    const h0 = i16x8.extend_low_i8x16_s(b), h1 = i16x8.extend_high_i8x16_s(b);
    const p = x + (<usize>k << 2);
    a0 = madd(lo4(h0), v128.load(p), a0);
    a1 = madd(hi4(h0), v128.load(p, 16), a1);
    a2 = madd(lo4(h1), v128.load(p, 32), a2);
    a3 = madd(hi4(h1), v128.load(p, 48), a3);
  }
  let s = hsum4(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)));
  for (; k < K; k++) s += <f32>load<i8>(w + <usize>k) * load<f32>(x + (<usize>k << 2));
  return s;
}

// Σ_g scale[g] · Σ_j (q[g, j] − z[g]) · x[32g + j] over one int4/int4z row of `groups` groups
// (w: its packed bytes, sc: its scales, zp: its zero points or 0 for int4's 8).
function dotInt4(w: usize, sc: usize, zp: usize, x: usize, groups: i32): f32 {
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  const mask = i8x16.splat(15);
  const eight = i8x16.splat(8);
  for (let g = 0; g < groups; g++) {
    const b = v128.load(w + (<usize>g << 4));
    const z = zp ? i8x16.splat(load<i8>(zp + <usize>g)) : eight;
    const lo = i8x16.sub(v128.and(b, mask), z);  // elements 0..15 minus z, in [-15, 15]
    const hi = i8x16.sub(i8x16.shr_u(b, 4), z);  // elements 16..31
    const p = x + (<usize>g << 7);
    const l0 = i16x8.extend_low_i8x16_s(lo), l1 = i16x8.extend_high_i8x16_s(lo);
    const h0 = i16x8.extend_low_i8x16_s(hi), h1 = i16x8.extend_high_i8x16_s(hi);
    let ga = f32x4.mul(lo4(l0), v128.load(p));
    let gb = f32x4.mul(hi4(l0), v128.load(p, 16));
    ga = madd(lo4(l1), v128.load(p, 32), ga);
    gb = madd(hi4(l1), v128.load(p, 48), gb);
    ga = madd(lo4(h0), v128.load(p, 64), ga);
    gb = madd(hi4(h0), v128.load(p, 80), gb);
    ga = madd(lo4(h1), v128.load(p, 96), ga);
    gb = madd(hi4(h1), v128.load(p, 112), gb);
    const s = v128.load32_splat(sc + (<usize>g << 2));
    if (g & 1) acc1 = madd(f32x4.add(ga, gb), s, acc1);
    else acc0 = madd(f32x4.add(ga, gb), s, acc0);
  }
  return hsum4(f32x4.add(acc0, acc1));
}

// ---------------------------------------------------------------------------------------
// Dequantization of one row into float32: element k at dst + k * stride (bytes)

// Four floats at dst, dst + stride, dst + 2 stride, dst + 3 stride (stride 4: one store).
@inline function put4(dst: usize, stride: usize, v: v128): void {
  if (stride == 4) {
    v128.store(dst, v);
  } else {
    v128.store32_lane(dst, v, 0);
    v128.store32_lane(dst + stride, v, 1);
    v128.store32_lane(dst + 2 * stride, v, 2);
    v128.store32_lane(dst + 3 * stride, v, 3);
  }
}

// Row n of the weight as scale · (q − zero), rounded to float32 once (tensor/quantize.ts's
// dequantizeRows), at dst with element stride `stride` bytes.
function dequantRow(format: i32, data: usize, scales: usize, zeros: usize, K: i32, n: i32, dst: usize, stride: usize): void {
  if (format == FMT_INT8) {
    const w = data + <usize>n * <usize>K;
    const sf = load<f32>(scales + (<usize>n << 2));
    const s = f32x4.splat(sf);
    let k = 0;
    for (; k + 16 <= K; k += 16) {
      const b = v128.load(w + <usize>k);
      const h0 = i16x8.extend_low_i8x16_s(b), h1 = i16x8.extend_high_i8x16_s(b);
      const d = dst + <usize>k * stride;
      const s4 = stride << 2;
      put4(d, stride, f32x4.mul(lo4(h0), s));
      put4(d + s4, stride, f32x4.mul(hi4(h0), s));
      put4(d + 2 * s4, stride, f32x4.mul(lo4(h1), s));
      put4(d + 3 * s4, stride, f32x4.mul(hi4(h1), s));
    }
    for (; k < K; k++) store<f32>(dst + <usize>k * stride, sf * <f32>load<i8>(w + <usize>k));
    return;
  }
  const groups = K >> 5;
  const mask = i8x16.splat(15);
  const s4 = stride << 2;
  for (let g = 0; g < groups; g++) {
    const gi = <usize>n * <usize>groups + <usize>g;
    const b = v128.load(data + (gi << 4));
    const z = format == FMT_INT4Z ? i8x16.splat(load<i8>(zeros + gi)) : i8x16.splat(8);
    const s = v128.load32_splat(scales + (gi << 2));
    const lo = i8x16.sub(v128.and(b, mask), z);
    const hi = i8x16.sub(i8x16.shr_u(b, 4), z);
    const l0 = i16x8.extend_low_i8x16_s(lo), l1 = i16x8.extend_high_i8x16_s(lo);
    const h0 = i16x8.extend_low_i8x16_s(hi), h1 = i16x8.extend_high_i8x16_s(hi);
    const d = dst + (<usize>g << 5) * stride;
    put4(d, stride, f32x4.mul(lo4(l0), s));
    put4(d + s4, stride, f32x4.mul(hi4(l0), s));
    put4(d + 2 * s4, stride, f32x4.mul(lo4(l1), s));
    put4(d + 3 * s4, stride, f32x4.mul(hi4(l1), s));
    put4(d + 4 * s4, stride, f32x4.mul(lo4(h0), s));
    put4(d + 5 * s4, stride, f32x4.mul(hi4(h0), s));
    put4(d + 6 * s4, stride, f32x4.mul(lo4(h1), s));
    put4(d + 7 * s4, stride, f32x4.mul(hi4(h1), s));
  }
}

// ---------------------------------------------------------------------------------------
// Entries

/**
 * out (M, N) = act(x (M, K) · dequant(w)ᵀ + bias): see the file header. act: 0 none, 1 relu,
 * 2 gelu (tanh). bias, zeros: 0 = absent. scratch + tid * scratchStride: this thread's
 * quant_scratch_bytes(K) bytes (unused when M == 1).
 */
export function quant_matmul(tid: i32, nt: i32, format: i32, data: usize, scales: usize, zeros: usize,
  N: i32, K: i32, x: usize, M: i32, bias: usize, act: i32, out: usize, scratch: usize, scratchStride: i32): void {
  if (M <= 0 || N <= 0) return;
  const chunk = ((N + nt - 1) / nt + NR - 1) / NR * NR;
  const n0 = min(N, tid * chunk), n1 = min(N, n0 + chunk);
  if (n0 >= n1) return;
  const mode = act == 1 ? RELU : act == 2 ? GELU : 0;
  if (M == 1) {
    const groups = K >> 5;
    for (let n = n0; n < n1; n++) {
      let s: f32 = 0;
      if (format == FMT_INT8) {
        s = dotInt8(data + <usize>n * <usize>K, x, K) * load<f32>(scales + (<usize>n << 2));
      } else {
        const gi = <usize>n * <usize>groups;
        s = dotInt4(data + (gi << 4), scales + (gi << 2), format == FMT_INT4Z ? zeros + gi : 0, x, groups);
      }
      if (bias) s += load<f32>(bias + (<usize>n << 2));
      epi1(out + (<usize>n << 2), s, mode);
    }
    return;
  }
  const sp = scratch + <usize>tid * <usize>scratchStride;
  const panel = sp;                                      // [k][8] float32
  const xpad = panel + <usize>(NR * K * 4);              // the last partial x tile, zero-padded to 4 rows
  const tmp = xpad + <usize>(MR * K * 4);                // 4x8 floats
  const mFull = M & ~(MR - 1);
  if (mFull < M) {
    memory.fill(xpad, 0, <usize>(MR * K * 4));
    memory.copy(xpad, x + <usize>mFull * <usize>K * 4, <usize>(M - mFull) * <usize>K * 4);
  }
  const lda = <usize>K << 2;
  const ldc = <usize>N << 2;
  for (let nb = n0; nb < n1; nb += NR) {
    const cols = min(NR, n1 - nb);
    for (let c = 0; c < cols; c++) dequantRow(format, data, scales, zeros, K, nb + c, panel + (<usize>c << 2), NR * 4);
    for (let c = cols; c < NR; c++) {
      for (let k = 0; k < K; k++) store<f32>(panel + ((<usize>k * NR + <usize>c) << 2), 0);
    }
    const bz: usize = bias ? bias + (<usize>nb << 2) : 0;
    for (let m = 0; m < M; m += MR) {
      const rows = min(MR, M - m);
      const pa = rows == MR ? x + <usize>m * lda : xpad;
      micro4x8(K, pa, lda, 4, panel, NR * 4, out + <usize>m * ldc + (<usize>nb << 2), ldc, ACC_ZERO, 0,
        true, rows, cols, bz, mode, tmp);
    }
  }
}

/** out[i, :] = dequantized row ids[i] of the weight (N rows of K); ids already checked in range. */
export function quant_embedding(tid: i32, nt: i32, format: i32, data: usize, scales: usize, zeros: usize,
  N: i32, K: i32, ids: usize, n: i32, out: usize): void {
  const i0 = <i32>(<i64>n * tid / nt), i1 = <i32>(<i64>n * (tid + 1) / nt);
  for (let i = i0; i < i1; i++) {
    const id = load<i32>(ids + (<usize>i << 2));
    if (id < 0 || id >= N) continue; // never out of bounds (the caller refuses such ids first)
    dequantRow(format, data, scales, zeros, K, id, out + <usize>i * <usize>K * 4, 4);
  }
}
