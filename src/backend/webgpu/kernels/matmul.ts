// WGSL kernels: matmul (batched, strided operands read in place, fused bias + activation,
// optional accumulate). One shader for every case: transposes, broadcasts and the epilogue are
// parameters, so the pipeline is built once.
//
// Tiling: each workgroup of 128 threads computes a 64x64 output tile; K is walked in steps of
// 16, staging a 64x16 slice of A and a 16x64 slice of B in workgroup memory (8 KiB). Thread
// (tx, ty) of a 16x8 grid owns rows ty + 8i (i < 8) and columns tx + 16j (j < 4): neighbouring
// threads touch neighbouring columns, so shared reads of B and the output writes are contiguous.
import { PRELUDE, entry, storage, MAX_GROUPS, grid, type KernelFn, type BufRef } from './common.js';

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

const MATMUL = PRELUDE + storage('f32', ['A', 'B', 'bias'], ['out']) + /* wgsl */ `

// Rows padded by one so the k-fast tile loads (a transposed operand) do not hit one bank.
var<workgroup> As: array<f32, ${BK * SA}>; // [k][m]
var<workgroup> Bs: array<f32, ${BK * SB}>; // [k][n]

fn gelu_tanh(x: f32) -> f32 {
  // Clamped so exp inside tanh cannot overflow to inf/inf on any implementation.
  let u = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0);
  return 0.5 * x * (1.0 + tanh(u));
}

` + entry(WG) + /* wgsl */ `
  let M = pu(${P_M}u);
  let N = pu(${P_N}u);
  let K = pu(${P_K}u);
  let mTiles = pu(${P_MT}u);
  // (m tile, batch) pairs are folded into the y and z dispatch dimensions.
  let t = wid.y + wid.z * nwg.y;
  if (t >= pu(${P_T}u)) { return; }
  let bt = t / mTiles;
  let m0 = (t % mTiles) * ${BM}u;
  let n0 = wid.x * ${BN}u;
  let aBase = pu(${P_AOFF}u) + bt * pu(${P_ABS}u);
  let bBase = pu(${P_BOFF}u) + bt * pu(${P_BBS}u);
  let aM = pu(${P_AM}u);
  let aK = pu(${P_AK}u);
  let bK = pu(${P_BK}u);
  let bN = pu(${P_BN}u);
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
      if (gn < N && gkb < K) { vb = B[bBase + gkb * bK + gn * bN]; }
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

  let hasBias = pu(${P_BIAS}u) != 0u;
  let act = pu(${P_ACT}u);
  let accumulate = pu(${P_ACC}u) != 0u;
  for (var i = 0u; i < ${TM}u; i++) {
    let m = m0 + ty + i * ${TY}u;
    if (m >= M) { break; }
    for (var j = 0u; j < ${TN}u; j++) {
      let n = n0 + tx + j * ${TX}u;
      if (n >= N) { break; }
      var s = acc[i * ${TN}u + j];
      if (hasBias) { s += bias[n]; }
      // As the ref: out = act(s), or out += act(s) when accumulating.
      if (act == 1u) { s = select(s, 0.0, s <= 0.0); } // relu, NaN passes through
      else if (act == 2u) { s = gelu_tanh(s); }
      let o = (bt * M + m) * N + n;
      if (accumulate) { s += out[o]; }
      out[o] = s;
    }
  }
}
`;

const ACT_CODE: Record<string, number> = { none: 0, relu: 1, gelu: 2 };

const matmul: KernelFn = (ctx, a) => {
  const batch = a.batch as number;
  const M = a.M as number;
  const N = a.N as number;
  const K = a.K as number;
  if (batch === 0 || M === 0 || N === 0) return;
  const transA = a.transA as boolean;
  const transB = a.transB as boolean;
  const lda = a.lda as number;
  const ldb = a.ldb as number;
  const act = ACT_CODE[(a.activation as string | undefined) ?? 'none'];
  if (act === undefined) throw new Error(`webgpu: matmul: unknown activation ${String(a.activation)}`);
  const nTiles = Math.ceil(N / BN);
  if (nTiles > MAX_GROUPS) throw new Error(`webgpu: matmul: N = ${N} above ${MAX_GROUPS * BN}`);
  const mTiles = Math.ceil(M / BM);
  const T = mTiles * batch;
  const bias = a.bias as BufRef | null | undefined;
  const p = ctx.params()
    .u32(M).u32(N).u32(K).u32(mTiles).u32(T)
    .u32(a.aOffset as number).u32(a.aBatchStride as number).u32(transA ? 1 : lda).u32(transA ? lda : 1)
    .u32(a.bOffset as number).u32(a.bBatchStride as number).u32(transB ? 1 : ldb).u32(transB ? ldb : 1)
    .u32(bias ? 1 : 0).u32(act).u32(a.accumulate ? 1 : 0);
  const A = ctx.buf(a.a as BufRef);
  const [gy, gz] = grid(T);
  ctx.dispatch({
    code: MATMUL,
    // Without a bias, A stands in for the unused binding (never read).
    buffers: [A, ctx.buf(a.b as BufRef), bias ? ctx.buf(bias) : A, ctx.buf(a.out as BufRef)],
    params: p,
    groups: [nTiles, gy, gz],
  });
};

export const MATMUL_KERNELS: Record<string, KernelFn> = { matmul };
