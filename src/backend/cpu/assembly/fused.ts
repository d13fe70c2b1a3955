// Fused Transformer kernels: attention, norms, softmax, cross-entropy, GELU, AdamW.
//
// Conventions (shared with matmul.ts): every export is (tid, nt, ...args) and does its own
// share; pointers are byte offsets into the one shared memory (0 = absent); nothing is
// allocated here: scratch comes from JS as (scratch, scratchPerThread) and thread tid uses
// scratch + tid * scratchPerThread. Storage is float32; row statistics are summed in f32
// SIMD lanes over short chunks and the chunk sums in f64, so long rows stay accurate.

import { madd, micro4x8, ACC_ZERO, ACC_LOAD, ACC_SCALED } from './tile';

// ---------------------------------------------------------------------------------------
// SIMD helpers (madd, a * b + c fused where the build allows it, is tile.ts's)

@inline function splat(x: f32): v128 {
  return f32x4.splat(x);
}

// 1.5 * 2^23: adding it rounds to an integer and leaves that integer in the low mantissa bits.
const MAGIC: f32 = 12582912.0;
const LOG2E: f32 = 1.4426950408889634;
const LN2: f64 = 0.6931471805599453;
const LOG2E64: f64 = 1.4426950408889634;
const NEG_INF: f32 = <f32>-Infinity;
// Chunk of a row summed in f32 lanes before the partial goes into an f64 total (elements).
const CHUNK: i32 = 256;

// 2^x for x <= ~0 (attention scores minus their max). x <= -127 gives exactly 0 (also -inf).
// Minimax degree-5 polynomial on [-0.5, 0.5]: relative error < 2e-7 in float32.
@inline function exp2v(x: v128): v128 {
  x = f32x4.pmax(x, splat(-127.0));
  const t = f32x4.add(x, splat(MAGIC));
  const f = f32x4.sub(x, f32x4.sub(t, splat(MAGIC)));
  let p = madd(splat(0.001326472731307149), f, splat(0.009671512991189957));
  p = madd(p, f, splat(0.05550733581185341));
  p = madd(p, f, splat(0.24022242426872253));
  p = madd(p, f, splat(0.6931470036506653));
  p = madd(p, f, splat(1.0));
  const e = i32x4.shl(i32x4.add(t, i32x4.splat(127)), 23);
  return f32x4.mul(p, e);
}

// e^x for any x (clamped to [-88, 88]: below gives 0, above 1.6e38; NaN propagates).
// Cody-Waite reduction (exact split of ln 2, so it is exact with or without FMA), then a
// degree-6 minimax polynomial on [-ln2/2, ln2/2]: relative error ~1e-7.
@inline function expv(x: v128): v128 {
  x = f32x4.pmin(f32x4.pmax(x, splat(-88.0)), splat(88.0));
  const t = madd(x, splat(LOG2E), splat(MAGIC));
  const n = f32x4.sub(t, splat(MAGIC));
  let r = madd(n, splat(-0.693359375), x);
  r = madd(n, splat(2.12194440e-4), r);
  let p = madd(splat(0.0013843653723597527), r, splat(0.00837415549904108));
  p = madd(p, r, splat(0.04166800156235695));
  p = madd(p, r, splat(0.16666431725025177));
  p = madd(p, r, splat(0.4999999403953552));
  p = madd(p, r, splat(1.0));
  p = madd(p, r, splat(1.0));
  const e = i32x4.shl(i32x4.add(t, i32x4.splat(127)), 23);
  return f32x4.mul(p, e);
}

@inline function exps(x: f32): f32 {
  return f32x4.extract_lane(expv(splat(x)), 0);
}

@inline function hsum64(v: v128): f64 {
  const lo = f64x2.promote_low_f32x4(v);
  const hi = f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 2, 3));
  const s = f64x2.add(lo, hi);
  return f64x2.extract_lane(s, 0) + f64x2.extract_lane(s, 1);
}

@inline function hmax(v: v128): f32 {
  const a = f32x4.pmax(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  const b = f32x4.pmax(a, v128.shuffle<f32>(a, a, 1, 0, 3, 2));
  return f32x4.extract_lane(b, 0);
}

@inline function fmax(a: f32, b: f32): f32 {
  return a < b ? b : a;
}

// Contiguous share [start, end) of `count` items for thread tid of nt.
@inline function shareStart(count: i32, tid: i32, nt: i32): i32 {
  return <i32>((<i64>count * <i64>tid) / <i64>nt);
}

// Element ranges for element-wise kernels: multiples of 4 so only the last thread has a tail.
@inline function elemChunk(n: i32, nt: i32): i32 {
  return ((n + nt - 1) / nt + 3) & ~3;
}

// ---------------------------------------------------------------------------------------
// Register-blocked micro-GEMMs for attention, on tile.ts's 4x8 microkernel (8 v128
// accumulators; larger blocks spill in V8). Row-major, strides in floats. M % 4 == 0,
// N % 8 == 0; K any.

// Causal triangles: a diagonal block of Sᵀ (row c = key, column r = query) is masked where
// r < c + rb. The gemms take rb-derived bounds so they skip the masked half; NO_TRI disables.
const NO_TRI: i32 = 1 << 29;

// C (M x N) = [C +] A (M x K) * B (K x N). A's elements are broadcast, B's rows are loaded.
// Causal bounds: tiles with j + 8 <= i + skipBase are skipped (left unwritten); the K loop of
// row tile i starts at max(0, i + kBase).
function gemmNN(a: usize, lda: i32, b: usize, ldb: i32, c: usize, ldc: i32,
  M: i32, N: i32, K: i32, accumulate: bool, skipBase: i32, kBase: i32): void {
  const sa = <usize>lda << 2, sb = <usize>ldb << 2, sc = <usize>ldc << 2;
  for (let i = 0; i < M; i += 4) {
    const k0 = max(0, i + kBase);
    const ar = a + <usize>i * sa + (<usize>k0 << 2);
    const cr = c + <usize>i * sc;
    for (let j = 0; j < N; j += 8) {
      if (j + 8 <= i + skipBase) continue;
      // A's 4 rows are sa apart, one column per step; B's rows one per step.
      micro4x8(K - k0, ar, sa, 4, b + (<usize>j << 2) + <usize>k0 * sb, sb, cr + (<usize>j << 2), sc,
        accumulate ? ACC_LOAD : ACC_ZERO, 0, false, 4, 8, 0, 0, 0);
    }
  }
}

// C (M x N) = init + Aᵀ B with A stored (K x M), B (K x N). init: 0 (mode 0), C (mode 1),
// C[i, :] * rowScale[i] (mode 2, the online-softmax rescale folded into the load).
// Causal bound: the K loop of row tile i stops at min(K, i + kEndBase).
function gemmTN(a: usize, lda: i32, b: usize, ldb: i32, c: usize, ldc: i32,
  M: i32, N: i32, K: i32, mode: i32, rowScale: usize, kEndBase: i32): void {
  const sa = <usize>lda << 2, sb = <usize>ldb << 2, sc = <usize>ldc << 2;
  const acc = mode == 0 ? ACC_ZERO : mode == 1 ? ACC_LOAD : ACC_SCALED;
  for (let i = 0; i < M; i += 4) {
    const kEnd = min(K, i + kEndBase);
    const cr = c + <usize>i * sc;
    const rs = rowScale + (<usize>i << 2);
    for (let j = 0; j < N; j += 8) {
      // Aᵀ's 4 rows are adjacent in each row of A, one row of A and of B per step.
      micro4x8(kEnd, a + (<usize>i << 2), 4, sa, b + (<usize>j << 2), sb, cr + (<usize>j << 2), sc,
        acc, rs, false, 4, 8, 0, 0, 0);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Attention (flash style). Scores are kept transposed, Sᵀ (keys x queries), so the softmax
// statistics of 4 queries sit in one v128 and no horizontal reductions are needed; Q (and
// dO) blocks are transposed once per query block instead of K per key block. Scores are in
// log2 units (q pre-multiplied by scale * log2 e) so the softmax uses exp2.
// Block sizes (must match attentionBlock / attention*ScratchBytes in ../fused.ts):
// BR = BC = blk, blk = 64 for Dp <= 128 else 32, Dp = D rounded up to 8.

@inline function attnBlock(Dp: i32): i32 {
  return Dp <= 128 ? 64 : 32;
}

@inline function fill(p: usize, n: i32, v: f32): void {
  for (let i = 0; i < n; i++) store<f32>(p + (<usize>i << 2), v);
}

// dst (rows x Dp) = src rows (row stride D), columns [D, Dp) zero; rows [n, rowsPad) zero.
function packRows(dst: usize, src: usize, n: i32, rowsPad: i32, D: i32, Dp: i32): void {
  for (let r = 0; r < rowsPad; r++) {
    const d = dst + (<usize>(r * Dp) << 2);
    if (r < n) {
      const s = src + (<usize>(r * D) << 2);
      memory.copy(d, s, <usize>D << 2);
      for (let c = D; c < Dp; c++) store<f32>(d + (<usize>c << 2), 0);
    } else {
      fill(d, Dp, 0);
    }
  }
}

// dst (D x ld) = mul * srcᵀ for src (n x D); columns [n, nPad) zero.
function packTransposed(dst: usize, ld: i32, src: usize, n: i32, nPad: i32, D: i32, mul: f32): void {
  for (let r = 0; r < n; r++) {
    const s = src + (<usize>(r * D) << 2);
    let d = dst + (<usize>r << 2);
    for (let c = 0; c < D; c++) {
      store<f32>(d, load<f32>(s + (<usize>c << 2)) * mul);
      d += <usize>ld << 2;
    }
  }
  for (let c = 0; c < D; c++) {
    const d = dst + (<usize>(c * ld) << 2);
    for (let r = n; r < nPad; r++) store<f32>(d + (<usize>r << 2), 0);
  }
}

// Key flags of one key block: kb[c] = 1 if key j0 + c is visible (keyMask), else 0.
// Returns the number of visible keys.
function keyFlags(kb: usize, keyMask: usize, j0: i32, nc: i32): i32 {
  let vis = 0;
  for (let c = 0; c < nc; c++) {
    const on = keyMask == 0 || load<i32>(keyMask + (<usize>(j0 + c) << 2)) != 0;
    store<i32>(kb + (<usize>c << 2), on ? 1 : 0);
    if (on) vis++;
  }
  return vis;
}

// Writes -inf into masked scores of Sᵀ (nc x ncols, stride ld): whole rows of keys switched
// off by keyMask, and for causal blocks the queries r < j0 + c - i0 - off that cannot see key c.
// The same entries of a second buffer st2 (if not 0) are set to 0 (dPᵀ, which the gemm skipped
// in masked tiles and which must not carry garbage into dS).
function maskScores(st: usize, st2: usize, ld: i32, nc: i32, ncols: i32, kb: usize, anyKeyOff: bool,
  causalDiag: bool, rminBase: i32): void {
  for (let c = 0; c < nc; c++) {
    const o = <usize>(c * ld) << 2;
    let rmin = 0;
    if (anyKeyOff && load<i32>(kb + (<usize>c << 2)) == 0) rmin = ncols;
    else if (causalDiag) rmin = min(ncols, rminBase + c);
    for (let r = 0; r < rmin; r++) store<f32>(st + o + (<usize>r << 2), NEG_INF);
    if (st2 != 0) for (let r = 0; r < rmin; r++) store<f32>(st2 + o + (<usize>r << 2), 0);
  }
}

// Sparse patterns (AttentionSparsity in ../../backend.ts), on rows i' = i + Tk - Tq and
// d = i' - j: 1 window (|d| < p1), 2 strided (|d| < p1 or d ≡ 0 mod p1), 3 fixed (same block of
// p1 keys, or j mod p1 >= p1 - p2); 0 none. JS clamps p1 of window/strided to max(Tq, Tk) + 1.
const SP_WINDOW: i32 = 1;
const SP_STRIDED: i32 = 2;
const SP_FIXED: i32 = 3;

@inline function floorDiv(x: i32, l: i32): i32 {
  return x >= 0 ? x / l : -((l - 1 - x) / l);
}

// Whether any query row i' in [a, b] may see any key j in [j0, j1] under the pattern (and
// causality). Exact, so blocks with nothing visible are never computed.
function sparseBlockVisible(kind: i32, p1: i32, p2: i32, causal: bool, a: i32, b: i32, j0: i32, j1: i32): bool {
  if (causal) {
    if (j0 > b) return false;
    j1 = min(j1, b);
  }
  // every d in [dlo, dhi] occurs (the pairs form a rectangle)
  let dlo = a - j1;
  const dhi = b - j0;
  if (causal) dlo = max(dlo, 0);
  if (kind == SP_WINDOW) return dlo < p1 && dhi > -p1;
  if (kind == SP_STRIDED) return (dlo < p1 && dhi > -p1) || floorDiv(dhi, p1) * p1 >= dlo;
  if (kind == SP_FIXED) {
    // a block of p1 shared by rows and keys (with causal, j0 <= b makes some j <= i' in it)
    if (max(floorDiv(a, p1), j0 / p1) <= min(floorDiv(b, p1), j1 / p1)) return true;
    // or a summary column among the keys
    const r = j0 % p1;
    return (r >= p1 - p2 ? j0 : j0 - r + p1 - p2) <= j1;
  }
  return true;
}

// Writes -inf into the scores of Sᵀ (nc x ncols, stride ld) that the pattern hides (and 0 into
// st2 if not 0, as maskScores). Column r is row i' = ii0 + r. The rows a key shows to form an
// interval [lo, hi], plus every p1-th row outside it for strided.
function sparseMask(st: usize, st2: usize, ld: i32, nc: i32, ncols: i32, j0: i32, ii0: i32,
  kind: i32, p1: i32, p2: i32): void {
  for (let c = 0; c < nc; c++) {
    const j = j0 + c;
    let lo: i32, hi: i32;
    if (kind == SP_FIXED) {
      const rj = j % p1;
      if (rj >= p1 - p2) continue; // summary column: seen by every row
      lo = j - rj - ii0;
      hi = lo + p1 - 1;
    } else {
      lo = j - p1 + 1 - ii0;
      hi = j + p1 - 1 - ii0;
    }
    if (lo <= 0 && hi >= ncols - 1) continue;
    const o = st + (<usize>(c * ld) << 2);
    const o2 = st2 + (<usize>(c * ld) << 2);
    if (kind != SP_STRIDED) {
      // two runs of masked rows, no per-element test
      const a = min(max(lo, 0), ncols), b = max(min(hi + 1, ncols), a);
      fill(o, a, NEG_INF);
      fill(o + (<usize>b << 2), ncols - b, NEG_INF);
      if (st2 != 0) {
        fill(o2, a, 0);
        fill(o2 + (<usize>b << 2), ncols - b, 0);
      }
      continue;
    }
    for (let r = 0; r < ncols; r++) {
      if (r >= lo && r <= hi) {
        r = hi;
        continue;
      }
      if ((ii0 + r - j) % p1 == 0) continue;
      store<f32>(o + (<usize>r << 2), NEG_INF);
      if (st2 != 0) store<f32>(o2 + (<usize>r << 2), 0);
    }
  }
}

// out, lse = attention(q, k, v). q (B, H, Tq, D), k/v (B, H, Tk, D), out (B, H, Tq, D),
// lse (B, H, Tq) natural log; keyMask (B, Tk) int32 or 0. Work unit: one query block of one
// head, dealt out in snake order so causal blocks (cost ~ block index) balance over threads.
export function attention_fwd(tid: i32, nt: i32, q: usize, k: usize, v: usize, out: usize,
  lse: usize, B: i32, H: i32, Tq: i32, Tk: i32, D: i32, scale: f32, causal: i32,
  keyMask: usize, sparse: i32, sp1: i32, sp2: i32, scratch: usize, scratchPerThread: i32): void {
  if (Tq <= 0 || D <= 0) return;
  const Dp = (D + 7) & ~7;
  const blk = attnBlock(Dp);
  const nqb = (Tq + blk - 1) / blk;
  const off = Tk - Tq;
  const c2 = scale * LOG2E;
  // scratch layout (floats): QT (Dp x blk) | ST (blk x blk) | O (blk x Dp) | Kp (blk x Dp) |
  // Vp (blk x Dp) | m | l | alpha (blk each) | kb (blk, i32)
  const base = scratch + <usize>tid * <usize>scratchPerThread;
  const QT = base;
  const ST = QT + (<usize>(Dp * blk) << 2);
  const O = ST + (<usize>(blk * blk) << 2);
  const Kp = O + (<usize>(blk * Dp) << 2);
  const Vp = Kp + (<usize>(blk * Dp) << 2);
  const mA = Vp + (<usize>(blk * Dp) << 2);
  const lA = mA + (<usize>blk << 2);
  const aA = lA + (<usize>blk << 2);
  const kb = aA + (<usize>blk << 2);
  const directV = (D & 7) == 0;
  const units = B * H * nqb;
  for (let u = 0; u < units; u++) {
    const g = u / nt, pos = u - g * nt;
    if ((g & 1) == 0 ? pos != tid : nt - 1 - pos != tid) continue;
    const bh = u / nqb;
    const i0 = (u - bh * nqb) * blk;
    const b = bh / H;
    const nr = min(blk, Tq - i0);
    const nr8 = (nr + 7) & ~7;
    const qh = q + (<usize>(bh * Tq + i0) * <usize>D << 2);
    const kh = k + (<usize>bh * <usize>Tk * <usize>D << 2);
    const vh = v + (<usize>bh * <usize>Tk * <usize>D << 2);
    const km = keyMask == 0 ? <usize>0 : keyMask + (<usize>(b * Tk) << 2);
    packTransposed(QT, blk, qh, nr, nr8, D, c2);
    fill(O, nr8 * Dp, 0);
    fill(mA, nr8, NEG_INF);
    fill(lA, nr8, 0);
    // keys visible to the last query of the block
    let jEnd = Tk;
    if (causal != 0) jEnd = min(Tk, i0 + nr + off);
    // window: only the blocks within w of the block's rows (O(T·w) overall)
    const ia = i0 + off, ib = i0 + nr - 1 + off;
    let jStart = 0;
    if (sparse == SP_WINDOW) {
      jStart = max(0, ia - sp1 + 1);
      jStart -= jStart % blk;
      jEnd = min(jEnd, max(0, ib + sp1));
    }
    for (let j0 = jStart; j0 < jEnd; j0 += blk) {
      const nc = min(blk, jEnd - j0);
      const nc4 = (nc + 3) & ~3;
      if (sparse != 0 && !sparseBlockVisible(sparse, sp1, sp2, causal != 0, ia, ib, j0, j0 + nc - 1)) continue;
      const vis = keyFlags(kb, km, j0, nc);
      if (vis == 0) continue;
      // K rows are read in place unless the 4-row padding would run past this head.
      let kp = kh + (<usize>(j0 * D) << 2), lda = D;
      if (j0 + nc4 > Tk) {
        packRows(Kp, kp, nc, nc4, D, D);
        kp = Kp;
      }
      let vp = vh + (<usize>(j0 * D) << 2), ldv = D;
      if (!directV) {
        packRows(Vp, vp, nc, nc, D, Dp);
        vp = Vp; ldv = Dp;
      }
      // Sᵀ (keys x queries) = K Qᵀ, skipping tiles above the causal diagonal
      const causalDiag = causal != 0 && j0 + nc - 1 > i0 + off;
      const rb = j0 - i0 - off;
      gemmNN(kp, lda, QT, blk, ST, blk, nc4, nr8, D, false, causalDiag ? rb : -NO_TRI, -NO_TRI);
      maskScores(ST, 0, blk, nc, nr8, kb, vis < nc, causalDiag, rb);
      if (sparse != 0) sparseMask(ST, 0, blk, nc, nr8, j0, ia, sparse, sp1, sp2);
      // online softmax over keys, 4 queries per vector
      for (let r = 0; r < nr8; r += 4) {
        const col = ST + (<usize>r << 2);
        let mx = v128.load(mA + (<usize>r << 2));
        const mOld = mx;
        for (let c = 0; c < nc; c++) mx = f32x4.pmax(mx, v128.load(col + (<usize>(c * blk) << 2)));
        // rows with nothing visible yet keep m = -inf; subtract 0 instead so exp2 gives 0
        const mUse = v128.bitselect(splat(0), mx, f32x4.eq(mx, splat(NEG_INF)));
        const alpha = exp2v(f32x4.sub(mOld, mUse));
        let s0 = splat(0), s1 = splat(0);
        let c = 0;
        for (; c + 1 < nc; c += 2) {
          const p0a = col + (<usize>(c * blk) << 2);
          const p1a = p0a + (<usize>blk << 2);
          const p0 = exp2v(f32x4.sub(v128.load(p0a), mUse));
          const p1 = exp2v(f32x4.sub(v128.load(p1a), mUse));
          v128.store(p0a, p0);
          v128.store(p1a, p1);
          s0 = f32x4.add(s0, p0);
          s1 = f32x4.add(s1, p1);
        }
        if (c < nc) {
          const p0a = col + (<usize>(c * blk) << 2);
          const p0 = exp2v(f32x4.sub(v128.load(p0a), mUse));
          v128.store(p0a, p0);
          s0 = f32x4.add(s0, p0);
        }
        v128.store(mA + (<usize>r << 2), mx);
        v128.store(aA + (<usize>r << 2), alpha);
        const lp = lA + (<usize>r << 2);
        v128.store(lp, madd(v128.load(lp), alpha, f32x4.add(s0, s1)));
      }
      // O = diag(alpha) O + P V, P = (Pᵀ)ᵀ
      gemmTN(ST, blk, vp, ldv, O, Dp, (nr + 3) & ~3, Dp, nc, 2, aA, causalDiag ? 4 - rb : NO_TRI);
    }
    // normalise and write
    const oh = out + (<usize>(bh * Tq + i0) * <usize>D << 2);
    const lh = lse + (<usize>(bh * Tq + i0) << 2);
    for (let r = 0; r < nr; r++) {
      const l = load<f32>(lA + (<usize>r << 2));
      const inv: f32 = l > 0 ? <f32>1.0 / l : 0;
      const src = O + (<usize>(r * Dp) << 2);
      const dst = oh + (<usize>(r * D) << 2);
      let d = 0;
      const vinv = splat(inv);
      for (; d + 4 <= D; d += 4) v128.store(dst + (<usize>d << 2), f32x4.mul(v128.load(src + (<usize>d << 2)), vinv));
      for (; d < D; d++) store<f32>(dst + (<usize>d << 2), load<f32>(src + (<usize>d << 2)) * inv);
      const m = <f64>load<f32>(mA + (<usize>r << 2));
      store<f32>(lh + (<usize>r << 2), l > 0 ? <f32>((m + Math.log2(<f64>l)) * LN2) : NEG_INF);
    }
  }
}

// Gradients of attention. out and lse are the forward's; gout (B, H, Tq, D); writes gq, gk,
// gv. Work unit: one head (dQ is accumulated straight into gq, so a head is not split).
// Per key block (outer) and visible query block (inner): recompute Pᵀ from K Qᵀ and lse,
// dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ - delta), then dV += Pᵀ dO, dK += dSᵀ Q, dQ += dS K.
export function attention_bwd(tid: i32, nt: i32, q: usize, k: usize, v: usize, out: usize,
  lse: usize, gout: usize, gq: usize, gk: usize, gv: usize, B: i32, H: i32, Tq: i32, Tk: i32,
  D: i32, scale: f32, causal: i32, keyMask: usize, sparse: i32, sp1: i32, sp2: i32,
  scratch: usize, scratchPerThread: i32): void {
  if (D <= 0) return;
  const Dp = (D + 7) & ~7;
  const blk = attnBlock(Dp);
  const off = Tk - Tq;
  const c2 = scale * LOG2E;
  // scratch layout (floats): QT, dOT (Dp x blk) | PT, dST (blk x blk) | dK, dV, Kp, Vp (blk x Dp)
  // | dQt, Qp, dOp (blk x Dp) | lse2, delta (blk) | kb (blk, i32)
  const base = scratch + <usize>tid * <usize>scratchPerThread;
  const sq = <usize>(Dp * blk) << 2;
  const QT = base;
  const dOT = QT + sq;
  const PT = dOT + sq;
  const dST = PT + (<usize>(blk * blk) << 2);
  const dK = dST + (<usize>(blk * blk) << 2);
  const dV = dK + sq;
  const Kp = dV + sq;
  const Vp = Kp + sq;
  const dQt = Vp + sq;
  const Qp = dQt + sq;
  const dOp = Qp + sq;
  const lse2 = dOp + sq;
  const delta = lse2 + (<usize>blk << 2);
  const kb = delta + (<usize>blk << 2);
  const direct = (D & 7) == 0;
  const headQ = <usize>Tq * <usize>D, headK = <usize>Tk * <usize>D;
  for (let bh = tid; bh < B * H; bh += nt) {
    const b = bh / H;
    const qh = q + ((<usize>bh * headQ) << 2);
    const oh = out + ((<usize>bh * headQ) << 2);
    const goh = gout + ((<usize>bh * headQ) << 2);
    const gqh = gq + ((<usize>bh * headQ) << 2);
    const kh = k + ((<usize>bh * headK) << 2);
    const vh = v + ((<usize>bh * headK) << 2);
    const gkh = gk + ((<usize>bh * headK) << 2);
    const gvh = gv + ((<usize>bh * headK) << 2);
    const lh = lse + (<usize>(bh * Tq) << 2);
    const km = keyMask == 0 ? <usize>0 : keyMask + (<usize>(b * Tk) << 2);
    memory.fill(gqh, 0, headQ << 2);
    for (let j0 = 0; j0 < Tk; j0 += blk) {
      const nc = min(blk, Tk - j0);
      const nc4 = (nc + 3) & ~3;
      const vis = keyFlags(kb, km, j0, nc);
      fill(dK, nc4 * Dp, 0);
      fill(dV, nc4 * Dp, 0);
      // first query that sees key j0 (causal), rounded down to its block
      let iStart = 0, iEnd = Tq;
      if (causal != 0) iStart = max(0, j0 - off);
      if (sparse == SP_WINDOW) {
        // rows within w of the block's keys
        if (causal == 0) iStart = max(0, j0 - sp1 + 1 - off);
        iEnd = min(Tq, max(0, j0 + nc + sp1 - 1 - off));
      }
      iStart = (iStart / blk) * blk;
      if (vis > 0 && iStart < iEnd) {
        packRows(Kp, kh + (<usize>(j0 * D) << 2), nc, nc4, D, Dp);
        packRows(Vp, vh + (<usize>(j0 * D) << 2), nc, nc4, D, Dp);
        for (let i0 = iStart; i0 < iEnd; i0 += blk) {
          const nr = min(blk, Tq - i0);
          if (sparse != 0 && !sparseBlockVisible(sparse, sp1, sp2, causal != 0, i0 + off, i0 + nr - 1 + off, j0, j0 + nc - 1)) continue;
          const nr8 = (nr + 7) & ~7;
          const nr4 = (nr + 3) & ~3;
          const qi = qh + (<usize>(i0 * D) << 2);
          const oi = oh + (<usize>(i0 * D) << 2);
          const goi = goh + (<usize>(i0 * D) << 2);
          packTransposed(QT, blk, qi, nr, nr8, D, c2);
          packTransposed(dOT, blk, goi, nr, nr8, D, 1);
          // delta = rowsum(dO ∘ O); lse in log2 units, +inf where the row saw nothing
          for (let r = 0; r < nr8; r++) {
            let dl: f64 = 0, l2: f32 = <f32>Infinity;
            if (r < nr) {
              const po = oi + (<usize>(r * D) << 2), pg = goi + (<usize>(r * D) << 2);
              let acc = splat(0);
              let d = 0;
              for (; d + 4 <= D; d += 4) acc = madd(v128.load(po + (<usize>d << 2)), v128.load(pg + (<usize>d << 2)), acc);
              dl = hsum64(acc);
              for (; d < D; d++) dl += <f64>load<f32>(po + (<usize>d << 2)) * <f64>load<f32>(pg + (<usize>d << 2));
              const ls = load<f32>(lh + (<usize>(i0 + r) << 2));
              if (ls > NEG_INF) l2 = <f32>(<f64>ls * LOG2E64);
            }
            store<f32>(delta + (<usize>r << 2), <f32>dl);
            store<f32>(lse2 + (<usize>r << 2), l2);
          }
          let qb = qi, ldq = D, gob = goi;
          if (!direct) {
            packRows(Qp, qi, nr, nr, D, Dp);
            packRows(dOp, goi, nr, nr, D, Dp);
            qb = Qp; gob = dOp; ldq = Dp;
          }
          // Sᵀ = K Qᵀ (log2 units), dPᵀ = V dOᵀ, skipping tiles above the causal diagonal
          const causalDiag = causal != 0 && j0 + nc - 1 > i0 + off;
          const rb = j0 - i0 - off;
          const skip = causalDiag ? rb : -NO_TRI;
          gemmNN(Kp, Dp, QT, blk, PT, blk, nc4, nr8, D, false, skip, -NO_TRI);
          gemmNN(Vp, Dp, dOT, blk, dST, blk, nc4, nr8, D, false, skip, -NO_TRI);
          maskScores(PT, dST, blk, nc, nr8, kb, vis < nc, causalDiag, rb);
          if (sparse != 0) sparseMask(PT, dST, blk, nc, nr8, j0, i0 + off, sparse, sp1, sp2);
          for (let c = 0; c < nc4; c++) {
            const prow = PT + (<usize>(c * blk) << 2);
            const drow = dST + (<usize>(c * blk) << 2);
            if (c >= nc) {
              fill(prow, nr8, 0);
              fill(drow, nr8, 0);
              continue;
            }
            for (let r = 0; r < nr8; r += 4) {
              const o = <usize>r << 2;
              const p = exp2v(f32x4.sub(v128.load(prow + o), v128.load(lse2 + o)));
              const ds = f32x4.mul(p, f32x4.sub(v128.load(drow + o), v128.load(delta + o)));
              v128.store(prow + o, p);
              v128.store(drow + o, ds);
            }
          }
          // dV += Pᵀ dO, dK += dSᵀ Q (scale applied at the end), dQ = dS K
          gemmNN(PT, blk, gob, ldq, dV, Dp, nc4, Dp, nr, true, -NO_TRI, skip);
          gemmNN(dST, blk, qb, ldq, dK, Dp, nc4, Dp, nr, true, -NO_TRI, skip);
          gemmTN(dST, blk, Kp, Dp, dQt, Dp, nr4, Dp, nc, 0, 0, causalDiag ? 4 - rb : NO_TRI);
          const vs = splat(scale);
          for (let r = 0; r < nr; r++) {
            const src = dQt + (<usize>(r * Dp) << 2);
            const dst = gqh + (<usize>((i0 + r) * D) << 2);
            let d = 0;
            for (; d + 4 <= D; d += 4) {
              const o = <usize>d << 2;
              v128.store(dst + o, madd(v128.load(src + o), vs, v128.load(dst + o)));
            }
            for (; d < D; d++) {
              const o = <usize>d << 2;
              store<f32>(dst + o, load<f32>(dst + o) + load<f32>(src + o) * scale);
            }
          }
        }
      }
      // write this key block's dK (times scale) and dV
      for (let c = 0; c < nc; c++) {
        const sK = dK + (<usize>(c * Dp) << 2), sV = dV + (<usize>(c * Dp) << 2);
        const tK = gkh + (<usize>((j0 + c) * D) << 2), tV = gvh + (<usize>((j0 + c) * D) << 2);
        for (let d = 0; d < D; d++) {
          const o = <usize>d << 2;
          store<f32>(tK + o, load<f32>(sK + o) * scale);
          store<f32>(tV + o, load<f32>(sV + o));
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Row kernels over contiguous (rows, n); rows are split in contiguous ranges by thread.

// Σ x over a row: f32 lanes per CHUNK, f64 across chunks.
function rowSum(x: usize, n: i32): f64 {
  let total: f64 = 0;
  let i = 0;
  while (i + 4 <= n) {
    const end = min(n & ~3, i + CHUNK);
    let acc = splat(0);
    for (; i < end; i += 4) acc = f32x4.add(acc, v128.load(x + (<usize>i << 2)));
    total += hsum64(acc);
  }
  for (; i < n; i++) total += <f64>load<f32>(x + (<usize>i << 2));
  return total;
}

// Σ (x - mu)² over a row.
function rowSumSqDev(x: usize, n: i32, mu: f32): f64 {
  let total: f64 = 0;
  const vm = splat(mu);
  let i = 0;
  while (i + 4 <= n) {
    const end = min(n & ~3, i + CHUNK);
    let acc = splat(0);
    for (; i < end; i += 4) {
      const d = f32x4.sub(v128.load(x + (<usize>i << 2)), vm);
      acc = madd(d, d, acc);
    }
    total += hsum64(acc);
  }
  for (; i < n; i++) {
    const d = <f64>load<f32>(x + (<usize>i << 2)) - <f64>mu;
    total += d * d;
  }
  return total;
}

// Σ a * b over a row.
function rowDot(a: usize, b: usize, n: i32): f64 {
  let total: f64 = 0;
  let i = 0;
  while (i + 4 <= n) {
    const end = min(n & ~3, i + CHUNK);
    let acc = splat(0);
    for (; i < end; i += 4) {
      const o = <usize>i << 2;
      acc = madd(v128.load(a + o), v128.load(b + o), acc);
    }
    total += hsum64(acc);
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    total += <f64>load<f32>(a + o) * <f64>load<f32>(b + o);
  }
  return total;
}

function rowMax(x: usize, n: i32): f32 {
  let m = splat(NEG_INF), m2 = splat(NEG_INF);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    m = f32x4.pmax(m, v128.load(x + (<usize>i << 2)));
    m2 = f32x4.pmax(m2, v128.load(x + (<usize>i << 2), 16));
  }
  for (; i + 4 <= n; i += 4) m = f32x4.pmax(m, v128.load(x + (<usize>i << 2)));
  let r = hmax(f32x4.pmax(m, m2));
  for (; i < n; i++) r = fmax(r, load<f32>(x + (<usize>i << 2)));
  return r;
}

// Σ exp(x - mx) over a row; when dst != 0 also writes the exponentials there.
function rowSumExp(x: usize, n: i32, mx: f32, dst: usize): f64 {
  let total: f64 = 0;
  const vm = splat(mx);
  let i = 0;
  while (i + 4 <= n) {
    const end = min(n & ~3, i + CHUNK);
    let acc = splat(0);
    for (; i < end; i += 4) {
      const o = <usize>i << 2;
      const e = expv(f32x4.sub(v128.load(x + o), vm));
      if (dst != 0) v128.store(dst + o, e);
      acc = f32x4.add(acc, e);
    }
    total += hsum64(acc);
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const e = exps(load<f32>(x + o) - mx);
    if (dst != 0) store<f32>(dst + o, e);
    total += <f64>e;
  }
  return total;
}

// out = softmax(x) or log_softmax(x) along rows. A row of all -inf gives NaN (as the math does).
export function softmax_fwd(tid: i32, nt: i32, x: usize, out: usize, rows: i32, n: i32, log: i32): void {
  const r0 = shareStart(rows, tid, nt), r1 = shareStart(rows, tid + 1, nt);
  for (let r = r0; r < r1; r++) {
    const xr = x + (<usize>r * <usize>n << 2);
    const yr = out + (<usize>r * <usize>n << 2);
    const mx = rowMax(xr, n);
    if (log != 0) {
      const s = rowSumExp(xr, n, mx, 0);
      const shift = <f32>(<f64>mx + Math.log(s));
      const vs = splat(shift);
      let i = 0;
      for (; i + 4 <= n; i += 4) {
        const o = <usize>i << 2;
        v128.store(yr + o, f32x4.sub(v128.load(xr + o), vs));
      }
      for (; i < n; i++) store<f32>(yr + (<usize>i << 2), load<f32>(xr + (<usize>i << 2)) - shift);
    } else {
      const s = rowSumExp(xr, n, mx, yr);
      const inv = <f32>(1.0 / s);
      const vi = splat(inv);
      let i = 0;
      for (; i + 4 <= n; i += 4) {
        const o = <usize>i << 2;
        v128.store(yr + o, f32x4.mul(v128.load(yr + o), vi));
      }
      for (; i < n; i++) store<f32>(yr + (<usize>i << 2), load<f32>(yr + (<usize>i << 2)) * inv);
    }
  }
}

// softmax: gx = y (gy - Σ gy y); log-softmax: gx = gy - exp(y) Σ gy.
export function softmax_bwd(tid: i32, nt: i32, y: usize, gy: usize, gx: usize, rows: i32, n: i32, log: i32): void {
  const r0 = shareStart(rows, tid, nt), r1 = shareStart(rows, tid + 1, nt);
  for (let r = r0; r < r1; r++) {
    const o0 = <usize>r * <usize>n << 2;
    const yr = y + o0, gr = gy + o0, xr = gx + o0;
    if (log != 0) {
      const s = <f32>rowSum(gr, n);
      const vs = splat(s);
      let i = 0;
      for (; i + 4 <= n; i += 4) {
        const o = <usize>i << 2;
        v128.store(xr + o, f32x4.sub(v128.load(gr + o), f32x4.mul(expv(v128.load(yr + o)), vs)));
      }
      for (; i < n; i++) {
        const o = <usize>i << 2;
        store<f32>(xr + o, load<f32>(gr + o) - exps(load<f32>(yr + o)) * s);
      }
    } else {
      const s = <f32>rowDot(gr, yr, n);
      const vs = splat(s);
      let i = 0;
      for (; i + 4 <= n; i += 4) {
        const o = <usize>i << 2;
        v128.store(xr + o, f32x4.mul(v128.load(yr + o), f32x4.sub(v128.load(gr + o), vs)));
      }
      for (; i < n; i++) {
        const o = <usize>i << 2;
        store<f32>(xr + o, load<f32>(yr + o) * (load<f32>(gr + o) - s));
      }
    }
  }
}

// y = (x - mean) * rstd * w + b (w, b optional). Writes mean and rstd per row.
export function layernorm_fwd(tid: i32, nt: i32, x: usize, w: usize, b: usize, out: usize,
  mean: usize, rstd: usize, rows: i32, n: i32, eps: f32): void {
  const r0 = shareStart(rows, tid, nt), r1 = shareStart(rows, tid + 1, nt);
  for (let r = r0; r < r1; r++) {
    const o0 = <usize>r * <usize>n << 2;
    const xr = x + o0, yr = out + o0;
    const mu = <f32>(rowSum(xr, n) / <f64>n);
    const var_ = rowSumSqDev(xr, n, mu) / <f64>n;
    const rs = <f32>(1.0 / Math.sqrt(var_ + <f64>eps));
    store<f32>(mean + (<usize>r << 2), mu);
    store<f32>(rstd + (<usize>r << 2), rs);
    const vm = splat(mu), vr = splat(rs);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      let h = f32x4.mul(f32x4.sub(v128.load(xr + o), vm), vr);
      if (w != 0) h = f32x4.mul(h, v128.load(w + o));
      if (b != 0) h = f32x4.add(h, v128.load(b + o));
      v128.store(yr + o, h);
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      let h = (load<f32>(xr + o) - mu) * rs;
      if (w != 0) h *= load<f32>(w + o);
      if (b != 0) h += load<f32>(b + o);
      store<f32>(yr + o, h);
    }
  }
}

// Adds the f32 lanes of v into two f64 accumulators at p (4 doubles).
@inline function addTo64(p: usize, v: v128): void {
  v128.store(p, f64x2.add(v128.load(p), f64x2.promote_low_f32x4(v)));
  v128.store(p, f64x2.add(v128.load(p, 16), f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 2, 3))), 16);
}

// gx of layerNorm. gw/gb (over rows) are reduced in two steps: this kernel leaves each
// thread's partial sums in f64 in its scratch (gw partial n doubles, then gb partial n
// doubles; scratchPerThread >= 16 n), then norm_params_reduce adds the partials of all nt
// threads. With gw = gb = 0 no scratch is touched.
export function layernorm_bwd(tid: i32, nt: i32, x: usize, w: usize, mean: usize, rstd: usize,
  gy: usize, gx: usize, rows: i32, n: i32, wantParams: i32, scratch: usize, scratchPerThread: i32): void {
  const r0 = shareStart(rows, tid, nt), r1 = shareStart(rows, tid + 1, nt);
  const pw = scratch + <usize>tid * <usize>scratchPerThread;
  const pb = pw + (<usize>n << 3);
  if (wantParams != 0) memory.fill(pw, 0, <usize>n << 4);
  for (let r = r0; r < r1; r++) {
    const o0 = <usize>r * <usize>n << 2;
    const xr = x + o0, gr = gy + o0, dr = gx + o0;
    const mu = load<f32>(mean + (<usize>r << 2));
    const rs = load<f32>(rstd + (<usize>r << 2));
    const vm = splat(mu), vr = splat(rs);
    // a = Σ g, c = Σ g xhat with g = gy w
    let ta: f64 = 0, tc: f64 = 0;
    let i = 0;
    while (i + 4 <= n) {
      const end = min(n & ~3, i + CHUNK);
      let aa = splat(0), ac = splat(0);
      for (; i < end; i += 4) {
        const o = <usize>i << 2;
        let g = v128.load(gr + o);
        if (w != 0) g = f32x4.mul(g, v128.load(w + o));
        const xh = f32x4.mul(f32x4.sub(v128.load(xr + o), vm), vr);
        aa = f32x4.add(aa, g);
        ac = madd(g, xh, ac);
      }
      ta += hsum64(aa);
      tc += hsum64(ac);
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      let g = load<f32>(gr + o);
      if (w != 0) g *= load<f32>(w + o);
      const xh = (load<f32>(xr + o) - mu) * rs;
      ta += <f64>g;
      tc += <f64>g * <f64>xh;
    }
    const ma = <f32>(ta / <f64>n), mc = <f32>(tc / <f64>n);
    const va = splat(ma), vc = splat(mc);
    i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      const gyv = v128.load(gr + o);
      let g = gyv;
      if (w != 0) g = f32x4.mul(g, v128.load(w + o));
      const xh = f32x4.mul(f32x4.sub(v128.load(xr + o), vm), vr);
      const t = f32x4.sub(f32x4.sub(g, va), f32x4.mul(xh, vc));
      v128.store(dr + o, f32x4.mul(t, vr));
      if (wantParams != 0) {
        addTo64(pw + (<usize>i << 3), f32x4.mul(gyv, xh));
        addTo64(pb + (<usize>i << 3), gyv);
      }
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      const gyv = load<f32>(gr + o);
      let g = gyv;
      if (w != 0) g *= load<f32>(w + o);
      const xh = (load<f32>(xr + o) - mu) * rs;
      store<f32>(dr + o, (g - ma - xh * mc) * rs);
      if (wantParams != 0) {
        const q = pw + (<usize>i << 3), qb = pb + (<usize>i << 3);
        store<f64>(q, load<f64>(q) + <f64>gyv * <f64>xh);
        store<f64>(qb, load<f64>(qb) + <f64>gyv);
      }
    }
  }
}

// Second step of the norm parameter gradients: gw[i] = Σ_p partial_p.gw[i] over the `parts`
// threads of the first step (and gb likewise from the second half when gb != 0). Columns are
// split by tid. Run with the same scratch and scratchPerThread as the first step.
export function norm_params_reduce(tid: i32, nt: i32, scratch: usize, scratchPerThread: i32,
  parts: i32, n: i32, gw: usize, gb: usize): void {
  const c0 = shareStart(n, tid, nt), c1 = shareStart(n, tid + 1, nt);
  for (let c = c0; c < c1; c++) {
    let sw: f64 = 0, sb: f64 = 0;
    for (let p = 0; p < parts; p++) {
      const base = scratch + <usize>p * <usize>scratchPerThread + (<usize>c << 3);
      sw += load<f64>(base);
      if (gb != 0) sb += load<f64>(base + (<usize>n << 3));
    }
    if (gw != 0) store<f32>(gw + (<usize>c << 2), <f32>sw);
    if (gb != 0) store<f32>(gb + (<usize>c << 2), <f32>sb);
  }
}

// y = x * rstd * w, rstd = 1 / sqrt(mean(x²) + eps).
export function rmsnorm_fwd(tid: i32, nt: i32, x: usize, w: usize, out: usize, rstd: usize,
  rows: i32, n: i32, eps: f32): void {
  const r0 = shareStart(rows, tid, nt), r1 = shareStart(rows, tid + 1, nt);
  for (let r = r0; r < r1; r++) {
    const o0 = <usize>r * <usize>n << 2;
    const xr = x + o0, yr = out + o0;
    const rs = <f32>(1.0 / Math.sqrt(rowDot(xr, xr, n) / <f64>n + <f64>eps));
    store<f32>(rstd + (<usize>r << 2), rs);
    const vr = splat(rs);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      let h = f32x4.mul(v128.load(xr + o), vr);
      if (w != 0) h = f32x4.mul(h, v128.load(w + o));
      v128.store(yr + o, h);
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      let h = load<f32>(xr + o) * rs;
      if (w != 0) h *= load<f32>(w + o);
      store<f32>(yr + o, h);
    }
  }
}

// gx = rstd (g - xhat mean(g xhat)), g = gy w, xhat = x rstd. gw partials as in layernorm_bwd
// (n doubles per thread; reduce with norm_params_reduce, gb = 0).
export function rmsnorm_bwd(tid: i32, nt: i32, x: usize, w: usize, rstd: usize, gy: usize,
  gx: usize, rows: i32, n: i32, wantParams: i32, scratch: usize, scratchPerThread: i32): void {
  const r0 = shareStart(rows, tid, nt), r1 = shareStart(rows, tid + 1, nt);
  const pw = scratch + <usize>tid * <usize>scratchPerThread;
  if (wantParams != 0) memory.fill(pw, 0, <usize>n << 3);
  for (let r = r0; r < r1; r++) {
    const o0 = <usize>r * <usize>n << 2;
    const xr = x + o0, gr = gy + o0, dr = gx + o0;
    const rs = load<f32>(rstd + (<usize>r << 2));
    const vr = splat(rs);
    let tc: f64 = 0;
    let i = 0;
    while (i + 4 <= n) {
      const end = min(n & ~3, i + CHUNK);
      let ac = splat(0);
      for (; i < end; i += 4) {
        const o = <usize>i << 2;
        let g = v128.load(gr + o);
        if (w != 0) g = f32x4.mul(g, v128.load(w + o));
        ac = madd(g, v128.load(xr + o), ac);
      }
      tc += hsum64(ac);
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      let g = load<f32>(gr + o);
      if (w != 0) g *= load<f32>(w + o);
      tc += <f64>g * <f64>load<f32>(xr + o);
    }
    // mean(g xhat) = rstd Σ g x / n
    const mc = <f32>(tc * <f64>rs / <f64>n);
    const vc = splat(mc);
    i = 0;
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      const gyv = v128.load(gr + o);
      let g = gyv;
      if (w != 0) g = f32x4.mul(g, v128.load(w + o));
      const xh = f32x4.mul(v128.load(xr + o), vr);
      v128.store(dr + o, f32x4.mul(f32x4.sub(g, f32x4.mul(xh, vc)), vr));
      if (wantParams != 0) addTo64(pw + (<usize>i << 3), f32x4.mul(gyv, xh));
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      const gyv = load<f32>(gr + o);
      let g = gyv;
      if (w != 0) g *= load<f32>(w + o);
      const xh = load<f32>(xr + o) * rs;
      store<f32>(dr + o, (g - xh * mc) * rs);
      if (wantParams != 0) {
        const q = pw + (<usize>i << 3);
        store<f64>(q, load<f64>(q) + <f64>gyv * <f64>xh);
      }
    }
  }
}

// Per row: lse = log Σ exp(x); loss = lse - ((1-ε) x[t] + ε mean(x)); 0 where t == ignoreIndex.
// Targets are validated by the JS wrapper; an out-of-range one here gives NaN, never a read.
export function cross_entropy_fwd(tid: i32, nt: i32, logits: usize, targets: usize, N: i32, V: i32,
  ignoreIndex: i32, smoothing: f32, losses: usize, lse: usize): void {
  const r0 = shareStart(N, tid, nt), r1 = shareStart(N, tid + 1, nt);
  for (let r = r0; r < r1; r++) {
    const xr = logits + (<usize>r * <usize>V << 2);
    const mx = rowMax(xr, V);
    const l = <f64>mx + Math.log(rowSumExp(xr, V, mx, 0));
    store<f32>(lse + (<usize>r << 2), <f32>l);
    const t = load<i32>(targets + (<usize>r << 2));
    let loss: f64 = 0;
    if (t != ignoreIndex) {
      if (t < 0 || t >= V) {
        loss = NaN;
      } else {
        let target = <f64>(1 - smoothing) * <f64>load<f32>(xr + (<usize>t << 2));
        if (smoothing != 0) target += <f64>smoothing * rowSum(xr, V) / <f64>V;
        loss = l - target;
      }
    }
    store<f32>(losses + (<usize>r << 2), <f32>loss);
  }
}

// gx[r] = scale[r] (softmax(x[r]) - (1-ε) onehot(t) - ε/V); 0 for ignored rows.
export function cross_entropy_bwd(tid: i32, nt: i32, logits: usize, targets: usize, lse: usize,
  scale: usize, N: i32, V: i32, ignoreIndex: i32, smoothing: f32, gx: usize): void {
  const r0 = shareStart(N, tid, nt), r1 = shareStart(N, tid + 1, nt);
  for (let r = r0; r < r1; r++) {
    const o0 = <usize>r * <usize>V << 2;
    const xr = logits + o0, gr = gx + o0;
    const t = load<i32>(targets + (<usize>r << 2));
    if (t == ignoreIndex) {
      memory.fill(gr, 0, <usize>V << 2);
      continue;
    }
    const s = load<f32>(scale + (<usize>r << 2));
    const l = load<f32>(lse + (<usize>r << 2));
    const eo: f32 = smoothing / <f32>V;
    const vs = splat(s), vl = splat(l), ve = splat(eo);
    let i = 0;
    for (; i + 4 <= V; i += 4) {
      const o = <usize>i << 2;
      v128.store(gr + o, f32x4.mul(f32x4.sub(expv(f32x4.sub(v128.load(xr + o), vl)), ve), vs));
    }
    for (; i < V; i++) {
      const o = <usize>i << 2;
      store<f32>(gr + o, (exps(load<f32>(xr + o) - l) - eo) * s);
    }
    if (t >= 0 && t < V) {
      const p = gr + (<usize>t << 2);
      store<f32>(p, load<f32>(p) - s * (1 - smoothing));
    }
  }
}

// GELU, tanh approximation: 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = √(2/π)(x + 0.044715 x³).
const GELU_K: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

export function gelu_fwd(tid: i32, nt: i32, x: usize, out: usize, n: i32): void {
  const ch = elemChunk(n, nt);
  const i0 = tid * ch, i1 = min(n, i0 + ch);
  const k2 = splat(-2 * GELU_K), kc = splat(GELU_C), one = splat(1);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const xv = v128.load(x + o);
    const x2 = f32x4.mul(xv, xv);
    // e = exp(-2u)
    const e = expv(f32x4.mul(f32x4.mul(k2, xv), madd(kc, x2, one)));
    v128.store(out + o, f32x4.div(xv, f32x4.add(one, e)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const xv = load<f32>(x + o);
    const e = exps(-2 * GELU_K * xv * (1 + GELU_C * xv * xv));
    store<f32>(out + o, xv / (1 + e));
  }
}

// gx = gy (s + 2 x s (1 - s) u'), s = sigmoid(2u), u' = √(2/π)(1 + 3 · 0.044715 x²).
export function gelu_bwd(tid: i32, nt: i32, x: usize, gy: usize, gx: usize, n: i32): void {
  const ch = elemChunk(n, nt);
  const i0 = tid * ch, i1 = min(n, i0 + ch);
  const k2 = splat(-2 * GELU_K), kc = splat(GELU_C), kc3 = splat(3 * GELU_C);
  const one = splat(1), twok = splat(2 * GELU_K);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const xv = v128.load(x + o);
    const x2 = f32x4.mul(xv, xv);
    const e = expv(f32x4.mul(f32x4.mul(k2, xv), madd(kc, x2, one)));
    const s = f32x4.div(one, f32x4.add(one, e));
    const du = f32x4.mul(twok, madd(kc3, x2, one));
    const d = madd(f32x4.mul(f32x4.mul(xv, s), f32x4.sub(one, s)), du, s);
    v128.store(gx + o, f32x4.mul(v128.load(gy + o), d));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const xv = load<f32>(x + o);
    const x2 = xv * xv;
    const e = exps(-2 * GELU_K * xv * (1 + GELU_C * x2));
    const s: f32 = 1 / (1 + e);
    const d = s + xv * s * (1 - s) * 2 * GELU_K * (1 + 3 * GELU_C * x2);
    store<f32>(gx + o, load<f32>(gy + o) * d);
  }
}

// AdamW in place: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
// p -= lr ((m / bc1) / (sqrt(v / bc2) + eps) + wd p).
export function adamw(tid: i32, nt: i32, param: usize, grad: usize, m: usize, v: usize, n: i32,
  lr: f32, beta1: f32, beta2: f32, eps: f32, weightDecay: f32, bc1: f32, bc2: f32): void {
  const ch = elemChunk(n, nt);
  const i0 = tid * ch, i1 = min(n, i0 + ch);
  const vb1 = splat(beta1), vb1c = splat(1 - beta1), vb2 = splat(beta2), vb2c = splat(1 - beta2);
  const ib1 = splat(1 / bc1), ib2 = splat(1 / bc2), ve = splat(eps), vlr = splat(lr), vwd = splat(weightDecay);
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    const g = v128.load(grad + o);
    const mv = madd(vb1, v128.load(m + o), f32x4.mul(vb1c, g));
    const vv = madd(vb2, v128.load(v + o), f32x4.mul(vb2c, f32x4.mul(g, g)));
    v128.store(m + o, mv);
    v128.store(v + o, vv);
    const p = v128.load(param + o);
    const upd = f32x4.div(f32x4.mul(mv, ib1), f32x4.add(f32x4.sqrt(f32x4.mul(vv, ib2)), ve));
    v128.store(param + o, f32x4.sub(p, f32x4.mul(vlr, madd(vwd, p, upd))));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const g = load<f32>(grad + o);
    const mv = beta1 * load<f32>(m + o) + (1 - beta1) * g;
    const vv = beta2 * load<f32>(v + o) + (1 - beta2) * g * g;
    store<f32>(m + o, mv);
    store<f32>(v + o, vv);
    const p = load<f32>(param + o);
    store<f32>(param + o, p - lr * ((mv / bc1) / (Mathf.sqrt(vv / bc2) + eps) + weightDecay * p));
  }
}
