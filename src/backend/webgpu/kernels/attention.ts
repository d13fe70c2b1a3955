// Attention, two ways.
//
// Through products (the default where the scores fit in ATTENTION_TUNING.maxScoreBytes): the
// scores S = Q Kᵀ of all (b, h) go to a scratch buffer through the batched matmul shaders, a
// row kernel masks them and turns them into probabilities P in place (saving the
// log-sum-exp), and out = P V is a second product. Backward recomputes S and P from the saved
// log-sum-exp, forms dS = P ⊙ (gout Vᵀ - Dq) · scale and takes gq = dS K, gk = dSᵀ Q and
// gv = Pᵀ gout as products. The matmul shaders run at tens of TFLOP/s on a GPU, far above what
// one query row per thread reaches, at the price of Tq·Tk floats per (b, h) of transient memory.
//
// Flash-style kernels, for longer sequences: nothing of size Tq·Tk is ever stored.
//  - attention: one thread per query row (64 rows of one (b, h) per workgroup) with a private
//    accumulator; keys and values are staged through shared memory in tiles, and the softmax is
//    computed online (running max m and sum l). Tiles the causal/sparse mask hides entirely
//    are skipped (the decision is per workgroup, so barriers stay uniform).
//  - attentionBackward: first stats = [lse | Dq] with Dq_i = gout_i·out_i (= Σ_j P_ij dP_ij),
//    packed in one scratch buffer so the next kernels stay within 8 storage bindings; then one
//    kernel per query row for gq and one per key row for gk and gv, both recomputing
//    P_ij = exp(s_ij - lse_i), so neither needs float atomics.
import { PRELUDE, entry, grid, groupsFor, storage, threadEntry, type KernelContext, type KernelFn, type BufRef, type Params } from './common.js';
import { encodeProduct } from './matmul.js';
import { SERIAL_MAX_N } from './rows.js';
import type { AttentionSparsity } from '../../backend.js';

/** Threads (rows) per workgroup. */
const WG = 64;
/** Largest head dimension. The per-thread private arrays have one of these lengths (one
 *  shader variant each, so the common D <= 128 keeps small arrays). */
const D_VARIANTS = [128, 256, 512];
const MAX_D = D_VARIANTS[D_VARIANTS.length - 1]!;
/** Floats of shared memory for the two staged tiles (k and v, or q and gout). */
const TILE_FLOATS = 3840;

// Parameter words shared by every attention shader.
// 0 BH, 1 Tq, 2 Tk, 3 D, 4 scale, 5 causal, 6 hasMask, 7 sparsity kind (0 none, 1 window,
// 2 strided, 3 fixed), 8 window/stride/block, 9 summary, 10 tile rows, 11 H,
// 12 row blocks per (b, h), 13 workgroups in all, 14 -Infinity (made at run time: a WGSL
// constant may not be infinite).

/** WGSL: the visibility rules of AttentionSparsity in backend.ts, on i' = i + Tk - Tq. */
const MASK = /* wgsl */ `
fn floor_div(x: i32, a: i32) -> i32 {
  if (x >= 0) { return x / a; }
  return -((a - 1 - x) / a);
}
fn visible(ii: i32, j: i32) -> bool {
  if (pu(5u) != 0u && j > ii) { return false; }
  let kind = pu(7u);
  let t = ii - j;
  let a = i32(pu(8u));
  if (kind == 1u) { return abs(t) < a; }
  if (kind == 2u) { return abs(t) < a || t % a == 0; }
  if (kind == 3u) {
    return floor_div(ii, a) == j / a || j % a >= a - i32(pu(9u));
  }
  return true;
}
// Whether some query i' in [ia, ib) may see some key j in [ja, jb) (ranges non-empty).
// Exact for causal, window and strided (the offsets t = i' - j fill [ia-jb+1, ib-1-ja]),
// conservative for fixed; the key mask is checked per key.
fn tile_visible(ia: i32, ib: i32, ja: i32, jb: i32) -> bool {
  let causal = pu(5u) != 0u;
  var tlo = ia - (jb - 1);
  let thi = (ib - 1) - ja;
  if (causal) { tlo = max(tlo, 0); }
  if (tlo > thi) { return false; }
  let kind = pu(7u);
  let a = i32(pu(8u));
  if (kind == 1u || kind == 2u) {
    if (tlo < a && thi > -a) { return true; }
    if (kind == 1u) { return false; }
    return floor_div(thi, a) * a >= tlo;
  }
  if (kind == 3u) {
    if (floor_div(ia, a) <= (jb - 1) / a && ja / a <= floor_div(ib - 1, a)) { return true; }
    var je = jb;
    if (causal) { je = min(jb, ib); }
    let r = ja % a;
    let s = a - i32(pu(9u));
    var j = ja;
    if (r < s) { j = ja + (s - r); }
    return j < je;
  }
  return true;
}
`;

/** WGSL (start of main): this workgroup's (b, h) = bh and its block of WG rows from `row0`;
 *  returns past the last block. TILE: rows of a staged tile; sh shifts a query index i to the
 *  key axis (i' = i + Tk - Tq). `dim`: the head dimension's WGSL expression, a literal in the
 *  exact-D variants, so that the d loops have constant trip counts: the GPU compiler then
 *  unrolls them and keeps the per-row arrays in registers instead of spilling them. */
const blockStart = (row0: string, dim: string): string => /* wgsl */ `
  let g = wid.x + wid.y * nwg.x;
  if (g >= pu(13u)) { return; }
  let Tq = pu(1u); let Tk = pu(2u); let D = ${dim}; let scale = pf(4u); let TILE = pu(10u);
  let nb = pu(12u);
  let bh = g / nb;
  let b = bh / pu(11u);
  let ${row0} = (g % nb) * ${WG}u;
  let sh = i32(Tk) - i32(Tq);
`;

/** WGSL (after blockStart('i0', dim)): this thread's query row i and the block's rows on the key axis,
 *  [ia, ib), with ii = i'. */
const QUERY_ROWS = /* wgsl */ `
  let i = i0 + lid;
  let ia = i32(i0) + sh;
  let ib = i32(min(i0 + ${WG}u, Tq)) + sh;
  let ii = i32(i) + sh;
`;

/** The shared tiles of the query-row kernels: key rows (then value rows at voff) and key-mask flags. */
const KEY_TILE_SHARED = /* wgsl */ `
var<workgroup> kvs: array<f32, ${TILE_FLOATS}>;
var<workgroup> kon: array<u32, ${WG}>;
`;

/**
 * WGSL: the loop of a query-row kernel over the tiles of keys its block may see: stages the
 * tile's k rows (v rows at voff) and key-mask flags, then in threads with `valid` runs `body`
 * for each key jj the row sees, with kr / vr its k / v row in kvs. Hidden tiles are skipped by
 * the whole workgroup, so the barriers stay in uniform control flow.
 */
const keyTiles = (body: string): string => /* wgsl */ `
  let kb = bh * Tk * D;
  let voff = TILE * D;
  // causal: no key past the block's last query is visible
  var ke = Tk;
  if (pu(5u) != 0u) { ke = u32(clamp(ib, 0, i32(Tk))); }
  for (var j0 = 0u; j0 < ke; j0 += TILE) {
    let n = min(TILE, Tk - j0);
    if (!tile_visible(ia, ib, i32(j0), i32(j0 + n))) { continue; }
    workgroupBarrier();
    for (var e = lid; e < n * D; e += ${WG}u) {
      kvs[e] = k[kb + j0 * D + e];
      kvs[voff + e] = v[kb + j0 * D + e];
    }
    if (lid < n) {
      var on = 1u;
      if (pu(6u) != 0u && mask[b * Tk + j0 + lid] == 0) { on = 0u; }
      kon[lid] = on;
    }
    workgroupBarrier();
    if (valid) {
      for (var jj = 0u; jj < n; jj++) {
        if (kon[jj] == 0u || !visible(ii, i32(j0 + jj))) { continue; }
        let kr = jj * D;
        let vr = voff + kr;
${body}
      }
    }
  }
`;

const forwardCode = (md: number, dim: string): string => PRELUDE + MASK + storage('f32', ['q', 'k', 'v', 'mask:i32'], ['out', 'lse']) + KEY_TILE_SHARED
  + entry(WG, 'lid') + blockStart('i0', dim) + QUERY_ROWS + /* wgsl */ `
  let valid = i < Tq;
  var qv: array<f32, ${md}>;
  var acc: array<f32, ${md}>;
  let qb = (bh * Tq + i) * D;
  if (valid) { for (var d = 0u; d < D; d++) { qv[d] = q[qb + d]; acc[d] = 0.0; } }
  var m = -3.0e38;
  var l = 0.0;
` + keyTiles(/* wgsl */ `
        var s = 0.0;
        for (var d = 0u; d < D; d++) { s += qv[d] * kvs[kr + d]; }
        s *= scale;
        if (s > m) {
          let c = exp(m - s);
          l *= c;
          for (var d = 0u; d < D; d++) { acc[d] *= c; }
          m = s;
        }
        let p = exp(s - m);
        l += p;
        for (var d = 0u; d < D; d++) { acc[d] += p * kvs[vr + d]; }`) + /* wgsl */ `
  if (valid) {
    let row = bh * Tq + i;
    if (l == 0.0) {
      // no visible key: zero output, lse = -Infinity marks the row for backward
      for (var d = 0u; d < D; d++) { out[qb + d] = 0.0; }
      lse[row] = pf(14u);
    } else {
      let inv = 1.0 / l;
      for (var d = 0u; d < D; d++) { out[qb + d] = acc[d] * inv; }
      lse[row] = m + log(l);
    }
  }
}
`;

// params: 0 rows, 1 D
const ROWDOT = PRELUDE + storage('f32', ['out', 'gout', 'lse'], ['stats']) + threadEntry(WG, 'r', 'pu(0u)') + /* wgsl */ `
  let N = pu(0u);
  let D = pu(1u);
  var s = 0.0;
  for (var d = 0u; d < D; d++) { s += out[r * D + d] * gout[r * D + d]; }
  stats[r] = lse[r];
  stats[N + r] = s;
}
`;

/** gq_i = scale Σ_j P_ij (gout_i·v_j - Dq_i) k_j, one thread per query row. */
const backwardQCode = (md: number, dim: string): string => PRELUDE + MASK + storage('f32', ['q', 'k', 'v', 'gout', 'stats', 'mask:i32'], ['gq']) + KEY_TILE_SHARED
  + entry(WG, 'lid') + blockStart('i0', dim) + QUERY_ROWS + /* wgsl */ `
  let N = pu(0u) * Tq;
  let row = bh * Tq + i;
  var ls = 0.0;
  var dq = 0.0;
  var valid = i < Tq;
  if (valid) {
    ls = stats[row];
    dq = stats[N + row];
    valid = ls > -3.0e38; // lse = -Infinity: no visible key, gradient 0
  }
  var qv: array<f32, ${md}>;
  var gor: array<f32, ${md}>;
  var acc: array<f32, ${md}>;
  let qb = row * D;
  if (i < Tq) { for (var d = 0u; d < D; d++) { qv[d] = q[qb + d]; gor[d] = gout[qb + d]; acc[d] = 0.0; } }
` + keyTiles(/* wgsl */ `
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < D; d++) { s += qv[d] * kvs[kr + d]; dp += gor[d] * kvs[vr + d]; }
        let p = exp(s * scale - ls);
        let ds = p * (dp - dq);
        for (var d = 0u; d < D; d++) { acc[d] += ds * kvs[kr + d]; }`) + /* wgsl */ `
  if (i < Tq) { for (var d = 0u; d < D; d++) { gq[qb + d] = scale * acc[d]; } }
}
`;

/** gv_j = Σ_i P_ij gout_i, gk_j = scale Σ_i P_ij (gout_i·v_j - Dq_i) q_i, one thread per key row. */
const backwardKVCode = (md: number, dim: string): string => PRELUDE + MASK + storage('f32', ['q', 'k', 'v', 'gout', 'stats', 'mask:i32'], ['gk', 'gv']) + /* wgsl */ `
var<workgroup> qgs: array<f32, ${TILE_FLOATS}>;
var<workgroup> st: array<f32, ${2 * WG}>;
` + entry(WG, 'lid') + blockStart('j0', dim) + /* wgsl */ `
  let j = j0 + lid;
  let ja = i32(j0);
  let jb = i32(min(j0 + ${WG}u, Tk));
  let N = pu(0u) * Tq;
  var valid = j < Tk;
  if (valid && pu(6u) != 0u) { valid = mask[b * Tk + j] != 0; }
  var kv: array<f32, ${md}>;
  var vv: array<f32, ${md}>;
  var ak: array<f32, ${md}>;
  var av: array<f32, ${md}>;
  let kr = (bh * Tk + j) * D;
  if (j < Tk) { for (var d = 0u; d < D; d++) { kv[d] = k[kr + d]; vv[d] = v[kr + d]; ak[d] = 0.0; av[d] = 0.0; } }
  let qb = bh * Tq * D;
  let goff = TILE * D;
  // causal: queries with i' < ja see none of this block's keys
  var istart = 0u;
  if (pu(5u) != 0u) { istart = u32(clamp(ja - sh, 0, i32(Tq))); }
  for (var i0 = istart; i0 < Tq; i0 += TILE) {
    let n = min(TILE, Tq - i0);
    if (!tile_visible(i32(i0) + sh, i32(i0 + n) + sh, ja, jb)) { continue; }
    workgroupBarrier();
    for (var e = lid; e < n * D; e += ${WG}u) {
      qgs[e] = q[qb + i0 * D + e];
      qgs[goff + e] = gout[qb + i0 * D + e];
    }
    if (lid < n) {
      st[lid] = stats[bh * Tq + i0 + lid];
      st[${WG}u + lid] = stats[N + bh * Tq + i0 + lid];
    }
    workgroupBarrier();
    if (valid) {
      for (var r = 0u; r < n; r++) {
        let ls = st[r];
        if (!(ls > -3.0e38) || !visible(i32(i0 + r) + sh, i32(j))) { continue; }
        let qr = r * D;
        let gr = goff + qr;
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < D; d++) { s += qgs[qr + d] * kv[d]; dp += qgs[gr + d] * vv[d]; }
        let p = exp(s * scale - ls);
        let ds = p * (dp - st[${WG}u + r]);
        for (var d = 0u; d < D; d++) {
          av[d] += p * qgs[gr + d];
          ak[d] += ds * qgs[qr + d];
        }
      }
    }
  }
  if (j < Tk) {
    for (var d = 0u; d < D; d++) { gk[kr + d] = scale * ak[d]; gv[kr + d] = av[d]; }
  }
}
`;

/** Head dimensions up to this get a shader of their own with D a literal (see blockStart);
 *  larger ones share the D_VARIANTS shaders, which read D from the parameters. */
const EXACT_D_MAX = 128;

const codeCache = new Map<string, string>();
/** The shader source of one kernel for head dimension D (memoized: sources are long). */
function code(which: 'fwd' | 'bq' | 'bkv', D: number): string {
  const exact = D >= 1 && D <= EXACT_D_MAX;
  const md = exact ? D : D_VARIANTS.find((m) => D <= m)!;
  const key = `${which}${exact ? '=' : '<'}${md}`;
  let c = codeCache.get(key);
  if (!c) {
    c = (which === 'fwd' ? forwardCode : which === 'bq' ? backwardQCode : backwardKVCode)(md, exact ? `${md}u` : 'pu(3u)');
    codeCache.set(key, c);
  }
  return c;
}

const SPARSITY_KIND = { window: 1, strided: 2, fixed: 3 } as const;

/** Writes parameter words 0..14 (see the table above) for row blocks of WG rows over `rows`. */
function attentionParams(p: Params, a: Record<string, unknown>, tile: number, rows: number): number {
  const B = a.B as number, H = a.H as number, D = a.D as number;
  const sp = a.sparsity as AttentionSparsity | null;
  const nb = Math.ceil(rows / WG);
  const total = B * H * nb;
  p.u32(B * H).u32(a.Tq as number).u32(a.Tk as number).u32(D).f32(a.scale as number)
    .u32(a.causal ? 1 : 0).u32(a.keyMask ? 1 : 0).u32(sp ? SPARSITY_KIND[sp.kind] : 0);
  if (!sp) p.u32(1).u32(0);
  else if (sp.kind === 'window') p.u32(sp.window).u32(0);
  else if (sp.kind === 'strided') p.u32(sp.stride).u32(0);
  else p.u32(sp.block).u32(sp.summary);
  p.u32(tile).u32(H).u32(nb).u32(total).f32(-Infinity);
  return total;
}

function check(op: string, a: Record<string, unknown>): void {
  const D = a.D as number;
  if (D > MAX_D) throw new Error(`webgpu ${op}: head dimension ${D} above ${MAX_D} is not supported`);
  for (const name of ['q', 'k', 'v', 'out', 'lse', 'gout', 'gq', 'gk', 'gv']) {
    const r = a[name] as BufRef | undefined;
    if (r && r.dtype !== 'float32') throw new Error(`webgpu ${op}: ${name} must be float32, got ${r.dtype}`);
  }
  const m = a.keyMask as BufRef | null;
  if (m && m.dtype !== 'int32') throw new Error(`webgpu ${op}: keyMask must be int32, got ${m.dtype}`);
}

/** Rows of a staged tile of D floats (two tiles share TILE_FLOATS; at most WG rows). */
const tileRows = (D: number): number => Math.max(1, Math.min(WG, Math.floor(TILE_FLOATS / 2 / Math.max(D, 1))));


// ---------------------------------------------------------------- attention through products

/** Which attention kernels run: 'auto' takes the products where the scores fit in
 *  maxScoreBytes (one scratch buffer of B·H·Tq·Tk floats; backward needs two), else the flash
 *  kernels. ATTN_WEBGPU_ATTENTION overrides `path` for a process, a `path` field in the
 *  kernel's args (tests) for one call. Read on the device thread. */
export const ATTENTION_TUNING = {
  path: 'auto' as 'auto' | 'flash' | 'products',
  maxScoreBytes: 512 << 20,
};

function useProducts(ctx: KernelContext, a: Record<string, unknown>): boolean {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.ATTN_WEBGPU_ATTENTION;
  const want = (a.path ?? env ?? ATTENTION_TUNING.path) as string;
  if (want !== 'auto' && want !== 'flash' && want !== 'products') throw new Error(`webgpu: attention: unknown path '${want}'`);
  if (want === 'flash') return false;
  const bytes = (a.B as number) * (a.H as number) * (a.Tq as number) * (a.Tk as number) * 4;
  if (bytes > ctx.device.limits.maxStorageBufferBindingSize || bytes >= 2 ** 32) return false;
  return want === 'products' || bytes <= ATTENTION_TUNING.maxScoreBytes;
}

/** Threads per score row in the softmax kernel. */
const RW = 64;

// Parameter words: 0..14 as attentionParams, 15 rows (B·H·Tq).
/** WGSL: whether row r's query (b, i' = ii) sees key j: the key mask, then the pattern. */
const SEEN = /* wgsl */ `
fn seen(b: u32, ii: i32, j: u32, Tk: u32) -> bool {
  if (pu(6u) != 0u && mask[b * Tk + j] == 0) { return false; }
  return visible(ii, i32(j));
}
`;

/** Softmax of the masked, scaled scores of one row per workgroup, in place; lse per row. */
const SOFTMAX_ROWS = PRELUDE + MASK + storage('f32', ['mask:i32'], ['S', 'lse']) + SEEN + /* wgsl */ `
var<workgroup> red: array<f32, ${RW}>;
` + entry(RW, 'lid') + /* wgsl */ `
  let r = wid.x + wid.y * nwg.x;
  if (r >= pu(15u)) { return; } // uniform in the workgroup
  let Tq = pu(1u); let Tk = pu(2u); let scale = pf(4u);
  let b = (r / Tq) / pu(11u);
  let ii = i32(r % Tq) + i32(Tk) - i32(Tq);
  let base = r * Tk;
  var m = -3.0e38;
  for (var j = lid; j < Tk; j += ${RW}u) {
    if (seen(b, ii, j, Tk)) { m = max(m, S[base + j] * scale); }
  }
  red[lid] = m;
  workgroupBarrier();
  for (var w = ${RW / 2}u; w > 0u; w >>= 1u) {
    if (lid < w) { red[lid] = max(red[lid], red[lid + w]); }
    workgroupBarrier();
  }
  m = red[0];
  workgroupBarrier();
  var l = 0.0;
  for (var j = lid; j < Tk; j += ${RW}u) {
    if (seen(b, ii, j, Tk)) { l += exp(S[base + j] * scale - m); }
  }
  red[lid] = l;
  workgroupBarrier();
  for (var w = ${RW / 2}u; w > 0u; w >>= 1u) {
    if (lid < w) { red[lid] += red[lid + w]; }
    workgroupBarrier();
  }
  l = red[0];
  // No visible key: P = 0 (so out = 0), lse = -Infinity marks the row for backward.
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var j = lid; j < Tk; j += ${RW}u) {
    var p = 0.0;
    if (seen(b, ii, j, Tk)) { p = exp(S[base + j] * scale - m) * inv; }
    S[base + j] = p;
  }
  if (lid == 0u) { lse[r] = select(pf(14u), m + log(l), l > 0.0); }
}
`;

/** SOFTMAX_ROWS for short rows (Tk <= SERIAL_MAX_N): one thread per row, no barriers (see
 *  rows.ts: barriers are what a software adapter pays for; the results differ from the
 *  workgroup form only in summation order). */
const SOFTMAX_ROWS_SERIAL = PRELUDE + MASK + storage('f32', ['mask:i32'], ['S', 'lse']) + SEEN + threadEntry(64, 'r', 'pu(15u)') + /* wgsl */ `
  let Tq = pu(1u); let Tk = pu(2u); let scale = pf(4u);
  let b = (r / Tq) / pu(11u);
  let ii = i32(r % Tq) + i32(Tk) - i32(Tq);
  let base = r * Tk;
  var m = -3.0e38;
  for (var j = 0u; j < Tk; j++) {
    if (seen(b, ii, j, Tk)) { m = max(m, S[base + j] * scale); }
  }
  var l = 0.0;
  for (var j = 0u; j < Tk; j++) {
    if (seen(b, ii, j, Tk)) { l += exp(S[base + j] * scale - m); }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var j = 0u; j < Tk; j++) {
    var p = 0.0;
    if (seen(b, ii, j, Tk)) { p = exp(S[base + j] * scale - m) * inv; }
    S[base + j] = p;
  }
  lse[r] = select(pf(14u), m + log(l), l > 0.0);
}
`;

/** Backward, per score: P from the saved lse (S in place) and dS = P (dP - Dq) scale (dP in place). */
const SCORE_GRADS = PRELUDE + MASK + storage('f32', ['stats', 'mask:i32'], ['S', 'dP']) + SEEN
  + threadEntry(64, 'e', 'pu(15u) * pu(2u)') + /* wgsl */ `
  let Tq = pu(1u); let Tk = pu(2u); let scale = pf(4u);
  let rows = pu(15u);
  let r = e / Tk;
  let j = e % Tk;
  let b = (r / Tq) / pu(11u);
  let ii = i32(r % Tq) + i32(Tk) - i32(Tq);
  let ls = stats[r];
  var p = 0.0;
  if (ls > -3.0e38 && seen(b, ii, j, Tk)) { p = exp(S[e] * scale - ls); }
  S[e] = p;
  dP[e] = p * (dP[e] - stats[rows + r]) * scale;
}
`;

/** Words 0..15 for the row kernels. */
function rowParams(ctx: KernelContext, a: Record<string, unknown>): Params {
  const p = ctx.params();
  const rows = (a.B as number) * (a.H as number) * (a.Tq as number);
  attentionParams(p, a, 1, a.Tq as number);
  return p.u32(rows);
}

/** S = Q Kᵀ for every (b, h) into `S` (or gout Vᵀ: any two (BH, T, D) operands). */
function scores(ctx: KernelContext, a: Record<string, unknown>, x: GPUBuffer, y: GPUBuffer, S: GPUBuffer): void {
  const BH = (a.B as number) * (a.H as number), Tq = a.Tq as number, Tk = a.Tk as number, D = a.D as number;
  encodeProduct(ctx, {
    batch: BH, M: Tq, N: Tk, K: D, transA: false, transB: true, lda: D, ldb: D,
    aOffset: 0, aBatchStride: Tq * D, bOffset: 0, bBatchStride: Tk * D, A: x, B: y, out: S,
  });
}

/** out = X Y per (b, h), X (rows × K) with row length ldx (transposed: X stored K × rows). */
function product(ctx: KernelContext, BH: number, M: number, N: number, K: number, X: GPUBuffer, transX: boolean, xStride: number, Y: GPUBuffer, yStride: number, out: GPUBuffer): void {
  encodeProduct(ctx, {
    batch: BH, M, N, K, transA: transX, transB: false, lda: transX ? M : K, ldb: N,
    aOffset: 0, aBatchStride: xStride, bOffset: 0, bBatchStride: yStride, A: X, B: Y, out,
  });
}

function attentionProducts(ctx: KernelContext, a: Record<string, unknown>): void {
  const BH = (a.B as number) * (a.H as number), Tq = a.Tq as number, Tk = a.Tk as number, D = a.D as number;
  const q = ctx.buf(a.q as BufRef);
  const mask = a.keyMask ? ctx.buf(a.keyMask as BufRef) : q; // unread without a mask
  const S = ctx.scratch(BH * Tq * Tk * 4);
  scores(ctx, a, q, ctx.buf(a.k as BufRef), S);
  const p = rowParams(ctx, a);
  const serial = Tk <= SERIAL_MAX_N;
  ctx.dispatch({ code: serial ? SOFTMAX_ROWS_SERIAL : SOFTMAX_ROWS, buffers: [mask, S, ctx.buf(a.lse as BufRef)], params: p, groups: serial ? groupsFor(BH * Tq, 64) : grid(BH * Tq) });
  product(ctx, BH, Tq, D, Tk, S, false, Tq * Tk, ctx.buf(a.v as BufRef), Tk * D, ctx.buf(a.out as BufRef));
}

function attentionBackwardProducts(ctx: KernelContext, a: Record<string, unknown>, stats: GPUBuffer): void {
  const BH = (a.B as number) * (a.H as number), Tq = a.Tq as number, Tk = a.Tk as number, D = a.D as number;
  const q = ctx.buf(a.q as BufRef), k = ctx.buf(a.k as BufRef), v = ctx.buf(a.v as BufRef);
  const gout = ctx.buf(a.gout as BufRef);
  const mask = a.keyMask ? ctx.buf(a.keyMask as BufRef) : q;
  const S = ctx.scratch(BH * Tq * Tk * 4);
  const dP = ctx.scratch(BH * Tq * Tk * 4);
  scores(ctx, a, q, k, S);
  scores(ctx, a, gout, v, dP);
  const n = BH * Tq * Tk;
  ctx.dispatch({ code: SCORE_GRADS, buffers: [stats, mask, S, dP], params: rowParams(ctx, a), groups: groupsFor(n, 64) });
  // gv = Pᵀ gout, gk = dSᵀ Q (P and dS stored Tq × Tk: transposed operands), gq = dS K.
  product(ctx, BH, Tk, D, Tq, S, true, Tq * Tk, gout, Tq * D, ctx.buf(a.gv as BufRef));
  product(ctx, BH, Tk, D, Tq, dP, true, Tq * Tk, q, Tq * D, ctx.buf(a.gk as BufRef));
  product(ctx, BH, Tq, D, Tk, dP, false, Tq * Tk, k, Tk * D, ctx.buf(a.gq as BufRef));
}

const attention: KernelFn = (ctx, a) => {
  check('attention', a);
  if (useProducts(ctx, a)) return attentionProducts(ctx, a);
  const q = ctx.buf(a.q as BufRef);
  const mask = a.keyMask ? ctx.buf(a.keyMask as BufRef) : q; // unread when there is no mask
  const p = ctx.params();
  const total = attentionParams(p, a, tileRows(a.D as number), a.Tq as number);
  ctx.dispatch({
    code: code('fwd', a.D as number),
    buffers: [q, ctx.buf(a.k as BufRef), ctx.buf(a.v as BufRef), mask, ctx.buf(a.out as BufRef), ctx.buf(a.lse as BufRef)],
    params: p,
    groups: grid(total),
  });
};

const attentionBackward: KernelFn = (ctx, a) => {
  check('attentionBackward', a);
  const B = a.B as number, H = a.H as number, Tq = a.Tq as number, Tk = a.Tk as number, D = a.D as number;
  const rows = B * H * Tq;
  const q = ctx.buf(a.q as BufRef), k = ctx.buf(a.k as BufRef), v = ctx.buf(a.v as BufRef);
  const gout = ctx.buf(a.gout as BufRef);
  const mask = a.keyMask ? ctx.buf(a.keyMask as BufRef) : q;
  const stats = ctx.scratch(Math.max(2 * rows, 1) * 4);
  ctx.dispatch({
    code: ROWDOT,
    buffers: [ctx.buf(a.out as BufRef), gout, ctx.buf(a.lse as BufRef), stats],
    params: ctx.params().u32(rows).u32(D),
    groups: groupsFor(rows, WG),
  });
  if (useProducts(ctx, a)) return attentionBackwardProducts(ctx, a, stats);
  const tile = tileRows(D);
  const pq = ctx.params();
  const totalQ = attentionParams(pq, a, tile, Tq);
  ctx.dispatch({ code: code('bq', D), buffers: [q, k, v, gout, stats, mask, ctx.buf(a.gq as BufRef)], params: pq, groups: grid(totalQ) });
  const pk = ctx.params();
  const totalK = attentionParams(pk, a, tile, Tk);
  ctx.dispatch({
    code: code('bkv', D),
    buffers: [q, k, v, gout, stats, mask, ctx.buf(a.gk as BufRef), ctx.buf(a.gv as BufRef)],
    params: pk,
    groups: grid(totalK),
  });
};

export const ATTENTION_KERNELS: Record<string, KernelFn> = { attention, attentionBackward };
