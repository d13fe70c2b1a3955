// The 4x8 register tile: the one f32 matmul microkernel of the cpu backend, used by
// matmul.ts's packed GEMM and by fused.ts's attention micro-GEMMs. Not an entry: nothing here
// is exported from the wasm module (index.ts re-exports matmul.ts and fused.ts only); the
// other files import these helpers, and @inline puts them into their callers.

export const MR: i32 = 4; // rows of a register tile
export const NR: i32 = 8; // columns of a register tile (two v128)

// Epilogue mode bits (see epi4 / epi1).
export const PRE: i32 = 1;  // add the existing C before the activation
export const RELU: i32 = 2;
export const GELU: i32 = 4;
export const POST: i32 = 8; // add the existing C after the activation (accumulate + activation)

// Where the accumulators of micro4x8 start.
export const ACC_ZERO: i32 = 0;   // at 0
export const ACC_LOAD: i32 = 1;   // at the C tile
export const ACC_SCALED: i32 = 2; // at the C tile, row r times rowScale[r]

// a * b + c: fused where the build allows it (the relaxed build), else multiply then add.
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  else return f32x4.add(f32x4.mul(a, b), c);
}

// exp on four lanes: 2^n * p(r) with r = x - n ln2, |r| <= ln2/2, degree-7 Taylor polynomial
// (relative error ~1e-7). Inputs are clamped so 2^n stays a normal float.
@inline export function exp4(x: v128): v128 {
  x = f32x4.min(f32x4.max(x, f32x4.splat(-87.3)), f32x4.splat(88.3));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.4426950408889634)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.0 / 5040.0);
  p = madd(p, r, f32x4.splat(1.0 / 720.0));
  p = madd(p, r, f32x4.splat(1.0 / 120.0));
  p = madd(p, r, f32x4.splat(1.0 / 24.0));
  p = madd(p, r, f32x4.splat(1.0 / 6.0));
  p = madd(p, r, f32x4.splat(0.5));
  p = madd(p, r, f32x4.splat(1.0));
  p = madd(p, r, f32x4.splat(1.0));
  const s = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return f32x4.mul(p, s);
}

// gelu (tanh approximation) as x * sigmoid(2u), u = sqrt(2/pi)(x + 0.044715x^3): the same
// value as 0.5x(1 + tanh u) without the cancellation of 1 + tanh u for negative x.
@inline export function gelu4(x: v128): v128 {
  const x2 = f32x4.mul(x, x);
  const t = f32x4.mul(x, madd(x2, f32x4.splat(-2.0 * 0.7978845608028654 * 0.044715), f32x4.splat(-2.0 * 0.7978845608028654)));
  return f32x4.div(x, f32x4.add(f32x4.splat(1.0), exp4(t)));
}

export function geluScalar(x: f32): f32 {
  const xd = <f64>x;
  const u = 0.7978845608028654 * (xd + 0.044715 * xd * xd * xd);
  return <f32>(xd / (1.0 + Math.exp(-2.0 * u)));
}

@inline export function epi4(p: usize, x: v128, bias: v128, mode: i32): void {
  x = f32x4.add(x, bias);
  if (mode & PRE) x = f32x4.add(x, v128.load(p));
  if (mode & RELU) x = f32x4.max(x, f32x4.splat(0));
  else if (mode & GELU) x = gelu4(x);
  if (mode & POST) x = f32x4.add(x, v128.load(p));
  v128.store(p, x);
}

@inline export function epi1(p: usize, x: f32, mode: i32): void {
  if (mode & PRE) x += load<f32>(p);
  if (mode & RELU) x = max(x, <f32>0);
  else if (mode & GELU) x = geluScalar(x);
  if (mode & POST) x += load<f32>(p);
  store<f32>(p, x);
}

/**
 * One 4x8 tile of C (row stride ldc bytes): the accumulators start as `acc` says (ACC_ZERO,
 * ACC_LOAD, or ACC_SCALED with the 4 row scales at rowScale), then take kc rank-1 updates.
 * Update k adds a_k ⊗ b_k: a_k is 4 floats at pa, pa + aLane, pa + 2 aLane, pa + 3 aLane and
 * b_k 8 contiguous floats at pb; after each update pa moves by aStep and pb by bStep (all in
 * bytes). Per k: two B vectors, each A value broadcast (load32_splat), 8 FMAs into 8
 * accumulators that hold C's rows, so the tile stores without a transpose.
 *
 * Without `epilogue` the whole tile is stored as it is. With it, the bias (8 floats at the
 * tile's first column, or 0) and the mode bits apply (see epi4), and only rows x cols of the
 * tile are written: partial tiles go through tmp (MR * NR floats).
 */
@inline export function micro4x8(kc: i32, pa: usize, aLane: usize, aStep: usize, pb: usize, bStep: usize,
  c: usize, ldc: usize, acc: i32, rowScale: usize,
  epilogue: bool, rows: i32, cols: i32, bias: usize, mode: i32, tmp: usize): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  if (acc != ACC_ZERO) {
    c00 = v128.load(c); c01 = v128.load(c, 16);
    c10 = v128.load(c + ldc); c11 = v128.load(c + ldc, 16);
    c20 = v128.load(c + 2 * ldc); c21 = v128.load(c + 2 * ldc, 16);
    c30 = v128.load(c + 3 * ldc); c31 = v128.load(c + 3 * ldc, 16);
    if (acc == ACC_SCALED) {
      let s = v128.load32_splat(rowScale);
      c00 = f32x4.mul(c00, s); c01 = f32x4.mul(c01, s);
      s = v128.load32_splat(rowScale, 4);
      c10 = f32x4.mul(c10, s); c11 = f32x4.mul(c11, s);
      s = v128.load32_splat(rowScale, 8);
      c20 = f32x4.mul(c20, s); c21 = f32x4.mul(c21, s);
      s = v128.load32_splat(rowScale, 12);
      c30 = f32x4.mul(c30, s); c31 = f32x4.mul(c31, s);
    }
  }
  const aLane2 = aLane * 2, aLane3 = aLane * 3;
  let k = kc;
  // Not unrolled: V8 hoists the loads of an unrolled body ahead of the FMAs and spills
  // accumulators, which halves the speed.
  while (k > 0) {
    const b0 = v128.load(pb), b1 = v128.load(pb, 16);
    let a = v128.load32_splat(pa);
    c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
    a = v128.load32_splat(pa + aLane);
    c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
    a = v128.load32_splat(pa + aLane2);
    c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
    a = v128.load32_splat(pa + aLane3);
    c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
    pa += aStep; pb += bStep; k--;
  }

  if (!epilogue) {
    v128.store(c, c00); v128.store(c, c01, 16);
    v128.store(c + ldc, c10); v128.store(c + ldc, c11, 16);
    v128.store(c + 2 * ldc, c20); v128.store(c + 2 * ldc, c21, 16);
    v128.store(c + 3 * ldc, c30); v128.store(c + 3 * ldc, c31, 16);
    return;
  }
  if (rows == MR && cols == NR) {
    let bv0 = f32x4.splat(0), bv1 = f32x4.splat(0);
    if (bias) { bv0 = v128.load(bias); bv1 = v128.load(bias, 16); }
    epi4(c, c00, bv0, mode); epi4(c + 16, c01, bv1, mode); c += ldc;
    epi4(c, c10, bv0, mode); epi4(c + 16, c11, bv1, mode); c += ldc;
    epi4(c, c20, bv0, mode); epi4(c + 16, c21, bv1, mode); c += ldc;
    epi4(c, c30, bv0, mode); epi4(c + 16, c31, bv1, mode);
    return;
  }
  v128.store(tmp, c00); v128.store(tmp, c01, 16);
  v128.store(tmp, c10, 32); v128.store(tmp, c11, 48);
  v128.store(tmp, c20, 64); v128.store(tmp, c21, 80);
  v128.store(tmp, c30, 96); v128.store(tmp, c31, 112);
  for (let i = 0; i < rows; i++) {
    const t = tmp + <usize>(i * NR * 4);
    const p = c + <usize>i * ldc;
    for (let j = 0; j < cols; j++) {
      let x = load<f32>(t + (<usize>j << 2));
      if (bias) x += load<f32>(bias + (<usize>j << 2));
      epi1(p + (<usize>j << 2), x, mode);
    }
  }
}
