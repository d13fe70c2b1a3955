// WGSL kernels: matmul (batched, strided operands read in place, fused bias + activation,
// optional accumulate). Two shaders, each covering every MatmulArgs case: transposes,
// broadcasts and the epilogue are parameters, so each pipeline is built once.
//
// General shader: each workgroup of 128 threads computes a 64x64 output tile; K is walked in
// steps of 16, staging a 64x16 slice of A and a 16x64 slice of B in workgroup memory (8 KiB).
// Thread (tx, ty) of a 16x8 grid owns rows ty + 8i (i < 8) and columns tx + 16j (j < 4):
// neighbouring threads touch neighbouring columns, so shared reads of B and the output writes
// are contiguous.
//
// Tiled shader (large products on devices allowing 256-thread workgroups): see TILED below.
// Direct shader (small products, no workgroup memory): see MATMUL_DIRECT below.
// Split-K (few output tiles, long K): see MATMUL_TUNING and SPLIT_REDUCE below.
import { PRELUDE, entry, storage, threadEntry, MAX_GROUPS, grid, groupsFor, type KernelContext, type KernelFn, type BufRef } from './common.js';
import { halfLoad } from './half.js';

const BM = 64;
const BN = 64;
const BK = 16;
const WG = 128;
const TX = 16; // threads along n
const TY = WG / TX; // threads along m
const TM = BM / TY; // rows per thread
const TN = BN / TX; // columns per thread
const SA = BM + 1; // shared row strides
const SB = BN + 1;
const LOADS = (BM * BK) / WG; // elements of each staged tile one thread loads (BM == BN)

// Parameter words.
const P_M = 0, P_N = 1, P_K = 2, P_MT = 3, P_T = 4;
const P_AOFF = 5, P_ABS = 6, P_AM = 7, P_AK = 8;
const P_BOFF = 9, P_BBS = 10, P_BK = 11, P_BN = 12;
const P_BIAS = 13, P_ACT = 14, P_ACC = 15;

/** WGSL gelu_tanh and activate(s, act): the epilogue every matmul-like kernel shares. */
export const GELU = /* wgsl */ `
fn gelu_tanh(x: f32) -> f32 {
  // Clamped so exp inside tanh cannot overflow to inf/inf on any implementation.
  let u = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0);
  return 0.5 * x * (1.0 + tanh(u));
}
// The epilogue's activation code (0 none, 1 relu, 2 gelu), as the ref applies it.
fn activate(s: f32, act: u32) -> f32 {
  if (act == 1u) { return select(s, 0.0, s <= 0.0); } // relu, NaN passes through
  if (act == 2u) { return gelu_tanh(s); }
  return s;
}
`;

/** WGSL shared by both shaders: sizes, and this workgroup's batch and output tile origin.
 *  (m tile, batch) pairs are folded into the y and z dispatch dimensions. */
function tileOrigin(bm: number, bn: number): string {
  return `  let M = pu(${P_M}u);
  let N = pu(${P_N}u);
  let K = pu(${P_K}u);
  let mTiles = pu(${P_MT}u);
  let t = wid.y + wid.z * nwg.y;
  if (t >= pu(${P_T}u)) { return; }
  let bt = t / mTiles;
  let m0 = (t % mTiles) * ${bm}u;
  let n0 = wid.x * ${bn}u;`;
}

/** The batch item's operand offsets and strides, as the general and the direct shader read them. */
const OPERAND_STRIDES = `  let aBase = pu(${P_AOFF}u) + bt * pu(${P_ABS}u);
  let bBase = pu(${P_BOFF}u) + bt * pu(${P_BBS}u);
  let aM = pu(${P_AM}u);
  let aK = pu(${P_AK}u);
  let bK = pu(${P_BK}u);
  let bN = pu(${P_BN}u);`;

/** The store both register-tiled shaders end with: acc holds a rows x cols tile whose element
 *  (i, j) is out[m0 + ty + i * stepM, n0 + tx + j * stepN]; bias, activation, accumulate. */
function tileEpilogue(rows: number, cols: number, stepM: number, stepN: number): string {
  return `  let hasBias = pu(${P_BIAS}u) != 0u;
  let act = pu(${P_ACT}u);
  let accumulate = pu(${P_ACC}u) != 0u;
  for (var i = 0u; i < ${rows}u; i++) {
    let m = m0 + ty + i * ${stepM}u;
    if (m >= M) { break; }
    for (var j = 0u; j < ${cols}u; j++) {
      let n = n0 + tx + j * ${stepN}u;
      if (n >= N) { break; }
      var s = acc[i * ${cols}u + j];
      if (hasBias) { s += bias[n]; }
      // As the ref: out = act(s), or out += act(s) when accumulating.
      s = activate(s, act);
      let o = (bt * M + m) * N + n;
      if (accumulate) { s += out[o]; }
      out[o] = s;
    }
  }`;
}

/** The general shader; with `bHalf`, B is a float16 storage (packed pairs, see half.ts). */
function generalCode(bHalf: boolean): string {
  return PRELUDE + storage('f32', ['A', bHalf ? 'B:u32' : 'B', 'bias'], ['out']) + (bHalf ? halfLoad('B') : '') + /* wgsl */ `

// Rows padded by one so the k-fast tile loads (a transposed operand) do not hit one bank.
var<workgroup> As: array<f32, ${BK * SA}>; // [k][m]
var<workgroup> Bs: array<f32, ${BK * SB}>; // [k][n]

${GELU}
` + entry(WG) + /* wgsl */ `
${tileOrigin(BM, BN)}
${OPERAND_STRIDES}
  // Load order follows the operand's contiguous axis so a warp's global reads coalesce.
  let aKFast = aK == 1u;
  let bNFast = bN == 1u;
  let tx = li % ${TX}u;
  let ty = li / ${TX}u;

  var acc: array<f32, ${TM * TN}>;
  for (var i = 0u; i < ${TM * TN}u; i++) { acc[i] = 0.0; }

  for (var k0 = 0u; k0 < K; k0 += ${BK}u) {
    for (var r = 0u; r < ${LOADS}u; r++) {
      let e = li + r * ${WG}u;
      var mm: u32; var ka: u32;
      if (aKFast) { ka = e % ${BK}u; mm = e / ${BK}u; } else { mm = e % ${BM}u; ka = e / ${BM}u; }
      let gm = m0 + mm;
      let gka = k0 + ka;
      var va = 0.0;
      if (gm < M && gka < K) { va = A[aBase + gm * aM + gka * aK]; }
      As[ka * ${SA}u + mm] = va;

      var nn: u32; var kb: u32;
      if (bNFast) { nn = e % ${BN}u; kb = e / ${BN}u; } else { kb = e % ${BK}u; nn = e / ${BK}u; }
      let gn = n0 + nn;
      let gkb = k0 + kb;
      var vb = 0.0;
      if (gn < N && gkb < K) { vb = ${bHalf ? 'B_at(bBase + gkb * bK + gn * bN)' : 'B[bBase + gkb * bK + gn * bN]'}; }
      Bs[kb * ${SB}u + nn] = vb;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk++) {
      var ar: array<f32, ${TM}>;
      var br: array<f32, ${TN}>;
      for (var i = 0u; i < ${TM}u; i++) { ar[i] = As[kk * ${SA}u + ty + i * ${TY}u]; }
      for (var j = 0u; j < ${TN}u; j++) { br[j] = Bs[kk * ${SB}u + tx + j * ${TX}u]; }
      for (var i = 0u; i < ${TM}u; i++) {
        for (var j = 0u; j < ${TN}u; j++) {
          acc[i * ${TN}u + j] = fma(ar[i], br[j], acc[i * ${TN}u + j]);
        }
      }
    }
    workgroupBarrier();
  }

${tileEpilogue(TM, TN, TY, TX)}
}
`;
}
const MATMUL = generalCode(false);
const MATMUL_HALF = generalCode(true);

// ---- direct shader ----
//
// Small products (MATMUL_TUNING.directMaxMacs): each thread of a 64-thread workgroup computes
// a 4x4 block of a 32x32 output tile straight from the operands, with no workgroup memory and
// no barriers. A GPU runs these products in microseconds whichever way; a software adapter pays
// for every barrier (SwiftShader switches coroutines per lane group at each one), which made
// the staged shaders 5-10x slower there than this for a small model's products. The sums run
// over k in order with fma, as the general shader's do, so both give the same bits.
const DBM = 32;
const DTX = 8; // threads along n (and along m)
const DWG = DTX * DTX;
const DT = DBM / DTX; // rows (and columns) per thread

function directCode(bHalf: boolean): string {
  return PRELUDE + storage('f32', ['A', bHalf ? 'B:u32' : 'B', 'bias'], ['out']) + (bHalf ? halfLoad('B') : '') + GELU + entry(DWG) + /* wgsl */ `
${tileOrigin(DBM, DBM)}
${OPERAND_STRIDES}
  let tx = li % ${DTX}u;
  let ty = li / ${DTX}u;
  // Rows ty + 8i and columns tx + 8j: neighbouring threads write neighbouring columns. Out of
  // range rows and columns read row / column 0 (always there) and are not written.
  var ra: array<u32, ${DT}>;
  var cb: array<u32, ${DT}>;
  for (var i = 0u; i < ${DT}u; i++) {
    let m = m0 + ty + i * ${DTX}u;
    ra[i] = aBase + select(0u, m * aM, m < M);
    let n = n0 + tx + i * ${DTX}u;
    cb[i] = bBase + select(0u, n * bN, n < N);
  }
  var acc: array<f32, ${DT * DT}>;
  for (var i = 0u; i < ${DT * DT}u; i++) { acc[i] = 0.0; }
  for (var k = 0u; k < K; k++) {
    var ar: array<f32, ${DT}>;
    var br: array<f32, ${DT}>;
    for (var i = 0u; i < ${DT}u; i++) {
      ar[i] = A[ra[i] + k * aK];
      br[i] = ${bHalf ? 'B_at(cb[i] + k * bK)' : 'B[cb[i] + k * bK]'};
    }
    for (var i = 0u; i < ${DT}u; i++) {
      for (var j = 0u; j < ${DT}u; j++) {
        acc[i * ${DT}u + j] = fma(ar[i], br[j], acc[i * ${DT}u + j]);
      }
    }
  }

${tileEpilogue(DT, DT, DTX, DTX)}
}
`;
}
const MATMUL_DIRECT = directCode(false);
const MATMUL_DIRECT_HALF = directCode(true);

// ---- tiled shader ----
//
// 256 threads compute a 128x128 output tile; K is walked in steps of 16. Workgroup memory S
// holds the A slice as [k][m] and the B slice as [k][n], both as vec4 along m / n (16 KiB), so
// the inner loop reads operands as vec4: per k step a thread reads 2 vec4 of A and 2 of B
// (broadcast / conflict-free) for 64 FMAs. Thread (tx, ty) of a 16x16 grid owns rows
// 4ty + i and 64 + 4ty + i (i < 4) and columns 4tx + j and 64 + 4tx + j (j < 4): 16 vec4
// accumulators held in named variables so they stay in registers.
//
// Staging: warps 0-3 load A, warps 4-7 load B (warp-uniform, no divergence), 4 runs of 4
// elements along the operand's contiguous axis per thread: one vec4 global load each when that
// axis, the leading dimension, offset and batch stride are multiples of 4 (parameter *VEC),
// else 4 bounds-checked scalar loads. An operand contiguous along k (A plain, B transposed) is
// loaded as 4x4 blocks and transposed in registers so every shared store is a whole vec4 (a
// component store may touch the whole vector in WGSL's memory model). The next slice's global
// loads are issued before the current slice's FMAs (register prefetch) to hide their latency.
const TBM = 128; // tile rows = tile columns
const TBK = 16;
const TWG = 256;
const TSTRIDE = TBM / 4; // vec4 per shared row
const TSB = TBK * TSTRIDE; // vec4 offset of the B slice in S
/** Bytes of workgroup memory the tiled shader needs. */
const TILED_SHARED_BYTES = 2 * TSB * 16;

// Parameter words beyond the general shader's (same layout for 0..15).
const P_AKF = 16, P_AVEC = 17, P_BKF = 18, P_BVEC = 19;

/** WGSL: global loads of this thread's share of the slice at k offset `k` into r0..r3. */
function tiledLoad(k: string): string {
  return `  {
    let gx = x0 + xb * 4u;
    let gk = ${k} + kq;
    let i = gbase + gx * sX + gk * sK;
    if (kFast) {
      r0 = run4(op, i, gx < X, gk, K, isVec);
      r1 = run4(op, i + sX, gx + 1u < X, gk, K, isVec);
      r2 = run4(op, i + 2u * sX, gx + 2u < X, gk, K, isVec);
      r3 = run4(op, i + 3u * sX, gx + 3u < X, gk, K, isVec);
    } else {
      r0 = run4(op, i, gk < K, gx, X, isVec);
      r1 = run4(op, i + 4u * sK, gk + 4u < K, gx, X, isVec);
      r2 = run4(op, i + 8u * sK, gk + 8u < K, gx, X, isVec);
      r3 = run4(op, i + 12u * sK, gk + 12u < K, gx, X, isVec);
    }
  }`;
}

/** The FMAs of one K slice. With f16, they run in half precision into per-slice half
 *  accumulators h*, added to the float32 accumulators c* once per slice (16 products). */
function tiledInner(f16 = false): string {
  const t = f16 ? 'f16' : 'f32';
  const acc = f16 ? 'h' : 'c';
  const lines: string[] = [];
  if (f16) {
    lines.push('    var h0_0 = vec4<f16>(0.0); var h0_1 = vec4<f16>(0.0); var h1_0 = vec4<f16>(0.0); var h1_1 = vec4<f16>(0.0);');
    lines.push('    var h2_0 = vec4<f16>(0.0); var h2_1 = vec4<f16>(0.0); var h3_0 = vec4<f16>(0.0); var h3_1 = vec4<f16>(0.0);');
    lines.push('    var h4_0 = vec4<f16>(0.0); var h4_1 = vec4<f16>(0.0); var h5_0 = vec4<f16>(0.0); var h5_1 = vec4<f16>(0.0);');
    lines.push('    var h6_0 = vec4<f16>(0.0); var h6_1 = vec4<f16>(0.0); var h7_0 = vec4<f16>(0.0); var h7_1 = vec4<f16>(0.0);');
  }
  for (let kk = 0; kk < TBK; kk++) {
    const r = kk * TSTRIDE;
    lines.push(`    { let a0 = S[${r}u + ty]; let a1 = S[${r + 16}u + ty]; let b0 = S[${TSB + r}u + tx]; let b1 = S[${TSB + r + 16}u + tx];`);
    for (let i = 0; i < 8; i++) {
      const a = `vec4<${t}>(a${i >> 2}.${'xyzw'[i & 3]})`;
      lines.push(`      ${acc}${i}_0 = fma(${a}, b0, ${acc}${i}_0); ${acc}${i}_1 = fma(${a}, b1, ${acc}${i}_1);`);
    }
    lines.push('    }');
  }
  if (f16) for (let i = 0; i < 8; i++) lines.push(`    c${i}_0 += vec4<f32>(h${i}_0); c${i}_1 += vec4<f32>(h${i}_1);`);
  return lines.join('\n');
}

function tiledEpilogue(): string {
  const lines: string[] = [];
  for (let i = 0; i < 8; i++) {
    const m = i < 4 ? `ty * 4u + ${i}u` : `64u + ty * 4u + ${i - 4}u`;
    lines.push(`  emit(bt, m0 + ${m}, n0 + tx * 4u, c${i}_0);`);
    lines.push(`  emit(bt, m0 + ${m}, n0 + 64u + tx * 4u, c${i}_1);`);
  }
  return lines.join('\n');
}

/**
 * The tiled shader; with `bHalf`, B is a float16 storage read as vec2<u32> (4 halves). With
 * `f16` as well (adapters with shader-f16, see MATMUL_TUNING.f16Math), B is read as
 * vec4<f16>, the staged slices are half precision (A rounded to half as it is staged) and the
 * FMAs run in f16, summed into the float32 accumulators once per K slice of 16.
 */
function tiledCode(bHalf: boolean, f16 = false): string {
  const bScalar = f16 ? 'f32(B[i >> 2u][i & 3u])' : bHalf ? 'unpack2x16float(B[i >> 2u][(i >> 1u) & 1u])[i & 1u]' : 'B[i >> 2u][i & 3u]';
  const bVec = f16 ? 'return vec4<f32>(B[i >> 2u]);' : bHalf ? 'let w = B[i >> 2u]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));' : 'return B[i >> 2u];';
  const st = f16 ? 'vec4<f16>' : 'vec4<f32>';
  return (f16 ? 'enable f16;\n' : '') + PRELUDE + storage('vec4<f32>', ['A', f16 ? 'B:vec4<f16>' : bHalf ? 'B:vec2<u32>' : 'B', 'bias:f32'], ['out:f32']) + /* wgsl */ `
var<workgroup> S: array<${st}, ${2 * TSB}>;
${GELU}
// Operand op (0 = A, 1 = B) element i.
fn ld1(op: u32, i: u32) -> f32 {
  if (op == 0u) { return A[i >> 2u][i & 3u]; }
  return ${bScalar};
}

// 4 elements from element i along the operand's contiguous axis, g..g+3 its coordinates there
// (limit lim); ok: the other coordinate is in range. aligned: i and lim are multiples of 4.
fn run4(op: u32, i: u32, ok: bool, g: u32, lim: u32, aligned: bool) -> vec4<f32> {
  if (!ok) { return vec4<f32>(0.0); }
  if (aligned) {
    if (g >= lim) { return vec4<f32>(0.0); }
    if (op == 0u) { return A[i >> 2u]; }
    ${bVec}
  }
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (g + c < lim) { v[c] = ld1(op, i + c); }
  }
  return v;
}

fn emit(bt: u32, m: u32, n: u32, v: vec4<f32>) {
  let M = pu(${P_M}u);
  let N = pu(${P_N}u);
  if (m >= M) { return; }
  let hasBias = pu(${P_BIAS}u) != 0u;
  let act = pu(${P_ACT}u);
  let accumulate = pu(${P_ACC}u) != 0u;
  for (var j = 0u; j < 4u; j++) {
    let nj = n + j;
    if (nj >= N) { return; }
    var s = v[j];
    if (hasBias) { s += bias[nj]; }
    // As the ref: out = act(s), or out += act(s) when accumulating.
    s = activate(s, act);
    let o = (bt * M + m) * N + nj;
    if (accumulate) { s += out[o]; }
    out[o] = s;
  }
}

` + entry(TWG) + /* wgsl */ `
${tileOrigin(TBM, TBM)}
  let tx = li % 16u;
  let ty = li / 16u;

  // This thread's staging role: operand op, viewed as X[x, k] with x = m (A) or n (B).
  let op = li >> 7u;
  let a = li & 127u;
  var gbase: u32; var x0: u32; var X: u32; var sX: u32; var sK: u32; var kFast: bool; var isVec: bool;
  if (op == 0u) {
    gbase = pu(${P_AOFF}u) + bt * pu(${P_ABS}u); x0 = m0; X = M; sX = pu(${P_AM}u); sK = pu(${P_AK}u);
    kFast = pu(${P_AKF}u) != 0u; isVec = pu(${P_AVEC}u) != 0u;
  } else {
    gbase = pu(${P_BOFF}u) + bt * pu(${P_BBS}u); x0 = n0; X = N; sX = pu(${P_BN}u); sK = pu(${P_BK}u);
    kFast = pu(${P_BKF}u) != 0u; isVec = pu(${P_BVEC}u) != 0u;
  }
  // k-contiguous: a 4x4 block, x rows 4xb + r, k columns kq..kq+3 (4 threads read 64
  // contiguous bytes of a row). x-contiguous: x columns 4xb..4xb+3 of k rows kq + 4r.
  var xb: u32; var kq: u32;
  if (kFast) { xb = a >> 2u; kq = (a & 3u) * 4u; } else { xb = a & 31u; kq = a >> 5u; }
  let sOff = op * ${TSB}u;

  var r0: vec4<f32>; var r1: vec4<f32>; var r2: vec4<f32>; var r3: vec4<f32>;
${tiledLoad('0u')}

  var c0_0 = vec4<f32>(0.0); var c0_1 = vec4<f32>(0.0); var c1_0 = vec4<f32>(0.0); var c1_1 = vec4<f32>(0.0);
  var c2_0 = vec4<f32>(0.0); var c2_1 = vec4<f32>(0.0); var c3_0 = vec4<f32>(0.0); var c3_1 = vec4<f32>(0.0);
  var c4_0 = vec4<f32>(0.0); var c4_1 = vec4<f32>(0.0); var c5_0 = vec4<f32>(0.0); var c5_1 = vec4<f32>(0.0);
  var c6_0 = vec4<f32>(0.0); var c6_1 = vec4<f32>(0.0); var c7_0 = vec4<f32>(0.0); var c7_1 = vec4<f32>(0.0);

  for (var k0 = 0u; k0 < K; k0 += ${TBK}u) {
    if (kFast) {
      // Transposed in registers: shared row kq + c gets element c of the 4 x rows.
      S[sOff + kq * ${TSTRIDE}u + xb] = ${st}(vec4<f32>(r0.x, r1.x, r2.x, r3.x));
      S[sOff + (kq + 1u) * ${TSTRIDE}u + xb] = ${st}(vec4<f32>(r0.y, r1.y, r2.y, r3.y));
      S[sOff + (kq + 2u) * ${TSTRIDE}u + xb] = ${st}(vec4<f32>(r0.z, r1.z, r2.z, r3.z));
      S[sOff + (kq + 3u) * ${TSTRIDE}u + xb] = ${st}(vec4<f32>(r0.w, r1.w, r2.w, r3.w));
    } else {
      S[sOff + kq * ${TSTRIDE}u + xb] = ${st}(r0);
      S[sOff + (kq + 4u) * ${TSTRIDE}u + xb] = ${st}(r1);
      S[sOff + (kq + 8u) * ${TSTRIDE}u + xb] = ${st}(r2);
      S[sOff + (kq + 12u) * ${TSTRIDE}u + xb] = ${st}(r3);
    }
    workgroupBarrier();
    // Prefetch the next slice while this one is multiplied.
    let k1 = k0 + ${TBK}u;
    if (k1 < K) {
${tiledLoad('k1')}
    }
${tiledInner(f16)}
    workgroupBarrier();
  }

${tiledEpilogue()}
}
`;
}
const TILED = tiledCode(false);
const TILED_HALF = tiledCode(true);
const TILED_HALF_F16 = tiledCode(true, true);

/** Which matmul shader runs: 'auto' picks by size and device limits; the others force one
 *  (a forced 'tiled' still falls back where the device cannot run it). The environment
 *  variable ATTN_WEBGPU_MATMUL overrides `path` for a process, a `path` field in the kernel's
 *  args (tests) for one call. Read where kernels run (the device thread): setting it on the
 *  engine thread does nothing.
 *
 *  Split-K: a batch-1 product with few output tiles but a long K (weight gradients: M x N is a
 *  weight's shape, K the token count) fills only a fraction of the GPU. It is then run as S
 *  products over consecutive K chunks (one batched dispatch of the same shader into a scratch
 *  buffer) whose partial sums a second kernel adds, applying bias, activation and accumulate.
 *  A `splitK` field in the kernel's args (tests) forces S for one call (0 disables). */
export const MATMUL_TUNING = {
  path: 'auto' as MatmulPath,
  /** 'auto' uses the tiled shader from these sizes on. */
  minM: 128,
  minN: 128,
  minK: 32,
  /** Split-K when batch is 1, K >= splitMinK and the output has fewer than splitMaxTiles tiles
   *  (of the chosen shader's size): S, a power of two up to splitMaxS, is the smallest giving
   *  splitTargetTiles workgroups, keeping chunks of at least splitMinChunk. */
  splitK: true,
  splitMinK: 1024,
  splitMaxTiles: 128,
  splitTargetTiles: 256,
  splitMaxS: 16,
  splitMinChunk: 256,
  /** float16 arithmetic for products with a float16 B (weights stored as halves) on the tiled
   *  shader, where the device has 'shader-f16': faster on GPUs with fast f16, at about 1e-3
   *  relative error. Off by default; ATTN_WEBGPU_F16_MATH=1 turns it on for a process, an
   *  `f16Math` field in the kernel's args for one call. */
  f16Math: false,
  /** 'auto' uses the direct shader for products of at most this many multiply-adds in all
   *  (batch·M·N·K) with K below splitMinK (a small model's products; see the direct shader). */
  directMaxMacs: 1 << 23,
};
export type MatmulPath = 'auto' | 'general' | 'tiled' | 'direct';
type Shader = 'general' | 'tiled' | 'direct';

function tiledAllowed(device: GPUDevice): boolean {
  const l = device.limits;
  return l.maxComputeInvocationsPerWorkgroup >= TWG && l.maxComputeWorkgroupSizeX >= TWG
    && l.maxComputeWorkgroupStorageSize >= TILED_SHARED_BYTES;
}

function choosePath(device: GPUDevice, batch: number, M: number, N: number, K: number, perCall: unknown): Shader {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.ATTN_WEBGPU_MATMUL;
  const want = (perCall ?? env ?? MATMUL_TUNING.path) as string;
  if (want !== 'auto' && want !== 'general' && want !== 'tiled' && want !== 'direct') throw new Error(`webgpu: matmul: unknown path '${want}'`);
  if (want === 'direct') return 'direct';
  if (want === 'auto' && K < MATMUL_TUNING.splitMinK && batch * M * N * K <= MATMUL_TUNING.directMaxMacs) return 'direct';
  if (want === 'general' || !tiledAllowed(device)) return 'general';
  if (want === 'tiled') return 'tiled';
  return M >= MATMUL_TUNING.minM && N >= MATMUL_TUNING.minN && K >= MATMUL_TUNING.minK ? 'tiled' : 'general';
}

/** The number of K chunks (1: no split) for a batch-1 product with `tiles` output tiles. */
function chooseSplit(device: GPUDevice, M: number, N: number, K: number, tiles: number, perCall: unknown): number {
  let S: number;
  if (perCall !== undefined) {
    S = perCall as number;
    if (!Number.isInteger(S) || S < 0) throw new Error(`webgpu: matmul: bad splitK ${String(perCall)}`);
  } else {
    const t = MATMUL_TUNING;
    if (!t.splitK || K < t.splitMinK || tiles >= t.splitMaxTiles) return 1;
    S = 1;
    while (S < t.splitMaxS && tiles * S < t.splitTargetTiles && K / (2 * S) >= t.splitMinChunk) S *= 2;
  }
  // The partial products must fit one storage binding.
  const limit = device.limits.maxStorageBufferBindingSize;
  while (S > 1 && S * M * N * 4 > limit) S = Math.floor(S / 2);
  // Chunks of at least 4 (a multiple of 4 keeps the tiled shader's vec4 loads aligned).
  return S > 1 && Math.floor(K / S) >= 4 ? S : 1;
}

const ACT_CODE: Record<string, number> = { none: 0, relu: 1, gelu: 2 };

/** One product as the shaders see it: `batch` products, each M x N over K, into out[(b*M + m)*N + n]. */
export interface Product {
  tiled: boolean;
  /** The direct shader (tiled is then false). */
  direct?: boolean;
  batch: number; M: number; N: number; K: number;
  transA: boolean; transB: boolean; lda: number; ldb: number;
  aOffset: number; aBatchStride: number; bOffset: number; bBatchStride: number;
  A: GPUBuffer; B: GPUBuffer; bias: GPUBuffer | null; out: GPUBuffer;
  act: number; accumulate: boolean;
  /** B is a float16 storage (weights stored as halves). */
  bHalf?: boolean;
  /** With bHalf, on the tiled shader: arithmetic in f16 (see MATMUL_TUNING.f16Math). */
  f16Math?: boolean;
}

/** Whether a product with a float16 B runs its arithmetic in f16 (shader-f16 needed). */
function useF16Math(device: GPUDevice, perCall: unknown): boolean {
  if (!device.features.has('shader-f16')) return false;
  if (perCall !== undefined) return !!perCall;
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.ATTN_WEBGPU_F16_MATH;
  return env !== undefined ? env === '1' : MATMUL_TUNING.f16Math;
}

function encode(ctx: KernelContext, q: Product): void {
  const { tiled, batch, M, N, K, transA, transB, lda, ldb, aOffset, aBatchStride, bOffset, bBatchStride } = q;
  const BT = tiled ? TBM : q.direct ? DBM : BM;
  const nTiles = Math.ceil(N / BT);
  if (nTiles > MAX_GROUPS) throw new Error(`webgpu: matmul: N = ${N} above ${MAX_GROUPS * BT}`);
  const mTiles = Math.ceil(M / BT);
  const T = mTiles * batch;
  const p = ctx.params()
    .u32(M).u32(N).u32(K).u32(mTiles).u32(T)
    .u32(aOffset).u32(aBatchStride).u32(transA ? 1 : lda).u32(transA ? lda : 1)
    .u32(bOffset).u32(bBatchStride).u32(transB ? 1 : ldb).u32(transB ? ldb : 1)
    .u32(q.bias ? 1 : 0).u32(q.act).u32(q.accumulate ? 1 : 0);
  if (tiled) {
    // vec4 loads need every start index a multiple of 4: the run's axis length (so a run is
    // wholly in or out of range), the leading dimension, the offset and the batch stride.
    const aligned = (len: number, ld: number, off: number, bs: number): boolean =>
      len % 4 === 0 && ld % 4 === 0 && off % 4 === 0 && (batch === 1 || bs % 4 === 0);
    p.u32(transA ? 0 : 1).u32(aligned(transA ? M : K, lda, aOffset, aBatchStride) ? 1 : 0)
      .u32(transB ? 1 : 0).u32(aligned(transB ? K : N, ldb, bOffset, bBatchStride) ? 1 : 0);
  }
  const [gy, gz] = grid(T);
  ctx.dispatch({
    code: tiled ? (q.bHalf ? (q.f16Math ? TILED_HALF_F16 : TILED_HALF) : TILED) : q.direct ? (q.bHalf ? MATMUL_DIRECT_HALF : MATMUL_DIRECT) : (q.bHalf ? MATMUL_HALF : MATMUL),
    // Without a bias, A stands in for the unused binding (never read).
    buffers: [q.A, q.B, q.bias ?? q.A, q.out],
    params: p,
    groups: [nTiles, gy, gz],
  });
}

/** A product between device buffers for other kernels (attention): the shader chosen as for
 *  the matmul op; no split-K (these products are batched). Output starts at element 0. */
export function encodeProduct(ctx: KernelContext, q: Omit<Product, 'tiled' | 'bias' | 'act' | 'accumulate'>): void {
  if (q.batch === 0 || q.M === 0 || q.N === 0) return;
  const shader = choosePath(ctx.device, q.batch, q.M, q.N, q.K, undefined);
  encode(ctx, { ...q, tiled: shader === 'tiled', direct: shader === 'direct', bias: null, act: 0, accumulate: false });
}

// ---- split-K reduction ----
//
// One thread per output element: the S partial products (part, S*MN), the remainder chunk's
// product (rest, when K is not S equal chunks of a multiple of 4), then the epilogue as the
// matmul shaders apply it. Params: MN 0, N 1, S 2, hasRest 3, hasBias 4, act 5, accumulate 6.
const RWG = 64;
const SPLIT_REDUCE = PRELUDE + storage('f32', ['part', 'rest', 'bias'], ['out']) + GELU
  + threadEntry(RWG, 'i', 'pu(0u)') + /* wgsl */ `
  let MN = pu(0u);
  let S = pu(2u);
  var s = 0.0;
  for (var c = 0u; c < S; c++) { s += part[c * MN + i]; }
  if (pu(3u) != 0u) { s += rest[i]; }
  if (pu(4u) != 0u) { s += bias[i % pu(1u)]; }
  let act = pu(5u);
  s = activate(s, act);
  if (pu(6u) != 0u) { s += out[i]; }
  out[i] = s;
}
`;

const matmul: KernelFn = (ctx, a) => {
  const batch = a.batch as number;
  const M = a.M as number;
  const N = a.N as number;
  const K = a.K as number;
  if (batch === 0 || M === 0 || N === 0) return;
  const act = ACT_CODE[(a.activation as string | undefined) ?? 'none'];
  if (act === undefined) throw new Error(`webgpu: matmul: unknown activation ${String(a.activation)}`);
  const biasRef = a.bias as BufRef | null | undefined;
  const A = ctx.buf(a.a as BufRef);
  const shader = choosePath(ctx.device, batch, M, N, K, a.path);
  const q: Product = {
    tiled: shader === 'tiled',
    direct: shader === 'direct',
    batch, M, N, K,
    transA: a.transA as boolean, transB: a.transB as boolean, lda: a.lda as number, ldb: a.ldb as number,
    aOffset: a.aOffset as number, aBatchStride: a.aBatchStride as number,
    bOffset: a.bOffset as number, bBatchStride: a.bBatchStride as number,
    A, B: ctx.buf(a.b as BufRef), bias: biasRef ? ctx.buf(biasRef) : null, out: ctx.buf(a.out as BufRef),
    act, accumulate: !!a.accumulate, bHalf: (a.b as BufRef).dtype === 'float16',
  };
  q.f16Math = q.bHalf && q.tiled && useF16Math(ctx.device, a.f16Math);
  if ((a.a as BufRef).dtype === 'float16') throw new Error('webgpu: matmul: a float16 left operand (only the right one, weights, may be float16)');
  const BT = q.tiled ? TBM : q.direct ? DBM : BM;
  const S = batch === 1 ? chooseSplit(ctx.device, M, N, K, Math.ceil(M / BT) * Math.ceil(N / BT), a.splitK) : 1;
  if (S === 1) return encode(ctx, q);

  // Chunk c covers k in [c*kc, (c+1)*kc): a batch of S products whose batch strides step kc
  // along K (A: +kc*lda when stored K x M, else +kc; B: +kc*ldb when stored K x N, else +kc).
  // kc is a multiple of 4 so the tiled shader's vec4 alignment is that of the whole product.
  const kc = K % (4 * S) === 0 ? K / S : Math.floor(K / S / 4) * 4;
  const main = S * kc;
  const aK = q.transA ? q.lda : 1;
  const bK = q.transB ? 1 : q.ldb;
  const MN = M * N;
  const plain = { bias: null, act: 0, accumulate: false };
  const part = ctx.scratch(S * MN * 4);
  encode(ctx, { ...q, ...plain, batch: S, K: kc, aBatchStride: kc * aK, bBatchStride: kc * bK, out: part });
  // The K - S*kc (< 4S) leftover elements: one small product of its own.
  const restK = K - main;
  const rest = restK > 0 ? ctx.scratch(MN * 4) : null;
  if (rest) encode(ctx, { ...q, ...plain, K: restK, aOffset: q.aOffset + main * aK, bOffset: q.bOffset + main * bK, out: rest });
  const p = ctx.params().u32(MN).u32(N).u32(S).u32(rest ? 1 : 0).u32(q.bias ? 1 : 0).u32(act).u32(q.accumulate ? 1 : 0);
  ctx.dispatch({
    code: SPLIT_REDUCE,
    // Unused bindings get part (never read).
    buffers: [part, rest ?? part, q.bias ?? part, q.out],
    params: p,
    groups: groupsFor(MN, RWG),
  });
};

export const MATMUL_KERNELS: Record<string, KernelFn> = { matmul };
