// Fused row kernels over contiguous (rows, n): softmax, layerNorm, rmsNorm and their backwards.
// One workgroup per row: each thread strides over the row (coalesced), then a shared-memory
// tree combines the per-thread partials, so long rows use the whole workgroup. The weight and
// bias gradients (sums over rows) take two more passes: per-column partial sums over chunks
// of rows into scratch, then one thread per column adds the chunks (no float atomics exist).
// Short rows (n <= SERIAL_MAX_N) take a second variant of each shader instead: one thread per
// row, walking it in order, with no shared memory and no barriers. A barrier is cheap on a GPU
// but costly on a software adapter (SwiftShader runs each lane group of a workgroup as a
// coroutine and switches them at every barrier): a layerNorm of 256 rows of 64 took ~90 ms
// there with the tree and the tree is pointless for rows that short anyway. The two variants
// differ only in summation order (float32 rounding).
import { PRELUDE, entry, grid, groupsFor, storage, threadEntry, type KernelFn, type KernelContext, type BufRef } from './common.js';

/** Threads per row workgroup. */
const WG = 128;
/** Rows summed by one thread of the column-partial pass. */
const CHUNK_ROWS = 64;
const COL_WG = 64;

/** Rows at most this long take the serial variants (one thread per row). */
export const SERIAL_MAX_N = 128;
/** Rows (threads) per workgroup of the serial variants. */
const SERIAL_WG = 64;

/** WGSL helpers of the row reductions (the running log-sum-exp). */
const LSE_FNS = /* wgsl */ `
// Start of a running max: finite, so an all -inf row gives exp(-inf) = 0 rather than NaN.
const LOW = -3.0e38;
// (max, sum of exp(x - max)) pairs, merged as in online softmax.
fn lse_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}
// Adds element v to a running (max, sum of exp(x - max)).
fn lse_push(a: vec2<f32>, v: f32) -> vec2<f32> {
  if (v > a.x) { return vec2<f32>(v, a.y * exp(a.x - v) + 1.0); }
  return vec2<f32>(a.x, a.y + exp(v - a.x));
}
`;

/** WGSL declarations for the tree variants (one workgroup of WG threads per row). */
const ROW_REDUCE = /* wgsl */ `
const WG = ${WG}u;
var<workgroup> red: array<vec2<f32>, ${WG}>;
var<workgroup> bc: array<vec2<f32>, 2>;
` + LSE_FNS;

/** The serial variants' declarations: WG = 1, so the row loops `j = li; j < n; j += WG` walk
 *  the whole row in one thread (li is 0 there). */
const ROW_REDUCE_SERIAL = /* wgsl */ `
const WG = 1u;
` + LSE_FNS;

/**
 * WGSL statements: `let out: vec2<f32>` = the workgroup-wide merge (merge: 'sum' or 'lse') of
 * each thread's vec2 `v`. Emitted inline in main, in uniform control flow. Each reduction of a
 * shader passes its own `slot`: the result is broadcast through bc[slot], never overwritten,
 * because on the compatibility adapter (Mesa) a load of red[0] could be moved past the next
 * barrier and see the following reduction's partials (threads past the first 8 read garbage).
 */
function wgReduce(v: string, out: string, merge: 'sum' | 'lse', slot: number): string {
  let code = `
  red[li] = ${v};
  workgroupBarrier();`;
  for (let h = WG / 2; h >= 1; h >>= 1) {
    const op = merge === 'sum' ? `red[li] + red[li + ${h}u]` : `lse_merge(red[li], red[li + ${h}u])`;
    code += `
  if (li < ${h}u) { red[li] = ${op}; }
  workgroupBarrier();`;
  }
  return code + `
  if (li == 0u) { bc[${slot}] = red[0]; }
  workgroupBarrier();
  let ${out} = bc[${slot}];
`;
}

const ROW_MAIN = entry(WG) + /* wgsl */ `
  let row = wid.x + wid.y * nwg.x;
  if (row >= pu(0u)) { return; }
  let n = pu(1u);
  let base = row * n;
`;

const ROW_MAIN_SERIAL = entry(SERIAL_WG, 'tid') + /* wgsl */ `
  let row = linear_id(wid, nwg, tid, ${SERIAL_WG}u);
  if (row >= pu(0u)) { return; }
  let li = 0u;
  let n = pu(1u);
  let base = row * n;
`;

/** A row shader's two forms: the workgroup tree (long rows) and one thread per row (short). */
export interface RowMode {
  reduce: string;
  main: string;
  /** wgReduce, or its serial form (the thread's own value is the row's). */
  wgReduce(v: string, out: string, merge: 'sum' | 'lse', slot: number): string;
}
export const TREE_ROWS: RowMode = { reduce: ROW_REDUCE, main: ROW_MAIN, wgReduce };
export const SERIAL_ROWS: RowMode = { reduce: ROW_REDUCE_SERIAL, main: ROW_MAIN_SERIAL, wgReduce: (v, out) => `\n  let ${out} = ${v};\n` };

/** Both forms of a row shader, [tree, serial]. */
export function rowVariants(make: (m: RowMode) => string): [string, string] {
  return [make(TREE_ROWS), make(SERIAL_ROWS)];
}

/** The form for rows of length n, and its workgroup counts over `rows` rows. */
export function rowPick(variants: readonly [string, string], rows: number, n: number): { code: string; groups: [number, number] } {
  return n <= SERIAL_MAX_N ? { code: variants[1], groups: groupsFor(rows, SERIAL_WG) } : { code: variants[0], groups: grid(rows) };
}

/** WGSL for the backward shaders binding gy and w: the upstream gradient times the weight
 *  (gy alone without one) at element j of the row at base. */
const G_AT = /* wgsl */ `
fn g_at(base: u32, j: u32, hasW: bool) -> f32 {
  var g = gy[base + j];
  if (hasW) { g *= w[j]; }
  return g;
}
`;

// ---------------------------------------------------------------- softmax

// params: rows, n, log
const SOFTMAX = rowVariants((m) => PRELUDE + m.reduce + /* wgsl */ `
` + storage('f32', ['x'], ['out']) + m.main + /* wgsl */ `
  var acc = vec2<f32>(LOW, 0.0);
  for (var j = li; j < n; j += WG) { acc = lse_push(acc, x[base + j]); }
` + m.wgReduce('acc', 't', 'lse', 0) + /* wgsl */ `
  let m = t.x;
  let logSum = log(t.y);
  let inv = 1.0 / t.y;
  let isLog = pu(2u) != 0u;
  for (var j = li; j < n; j += WG) {
    let s = x[base + j] - m;
    if (isLog) { out[base + j] = s - logSum; } else { out[base + j] = exp(s) * inv; }
  }
}
`);

// params: rows, n, log
const SOFTMAX_BACKWARD = rowVariants((m) => PRELUDE + m.reduce + /* wgsl */ `
` + storage('f32', ['y', 'gy'], ['gx']) + m.main + /* wgsl */ `
  let isLog = pu(2u) != 0u;
  var d = 0.0;
  for (var j = li; j < n; j += WG) {
    if (isLog) { d += gy[base + j]; } else { d += gy[base + j] * y[base + j]; }
  }
` + m.wgReduce('vec2<f32>(d, 0.0)', 'dot2', 'sum', 0) + /* wgsl */ `
  let dot = dot2.x;
  for (var j = li; j < n; j += WG) {
    let yj = y[base + j];
    if (isLog) { gx[base + j] = gy[base + j] - exp(yj) * dot; } else { gx[base + j] = yj * (gy[base + j] - dot); }
  }
}
`);

const softmax: KernelFn = (ctx, a) => {
  const rows = a.rows as number;
  const p = ctx.params().u32(rows).u32(a.n as number).u32(a.log ? 1 : 0);
  ctx.dispatch({ ...rowPick(SOFTMAX, rows, a.n as number), buffers: [ctx.buf(a.x as BufRef), ctx.buf(a.out as BufRef)], params: p });
};

const softmaxBackward: KernelFn = (ctx, a) => {
  const rows = a.rows as number;
  const p = ctx.params().u32(rows).u32(a.n as number).u32(a.log ? 1 : 0);
  ctx.dispatch({
    ...rowPick(SOFTMAX_BACKWARD, rows, a.n as number),
    buffers: [ctx.buf(a.y as BufRef), ctx.buf(a.gy as BufRef), ctx.buf(a.gx as BufRef)],
    params: p,
  });
};

// ---------------------------------------------------------------- layerNorm

// params: rows, n, eps, hasW, hasB. w and b are bound to x when absent.
const LAYER_NORM = rowVariants((m) => PRELUDE + m.reduce + /* wgsl */ `
` + storage('f32', ['x', 'w', 'b'], ['out', 'mean', 'rstd']) + m.main + /* wgsl */ `
  let nf = f32(n);
  var s = 0.0;
  for (var j = li; j < n; j += WG) { s += x[base + j]; }
` + m.wgReduce('vec2<f32>(s, 0.0)', 'sum1', 'sum', 0) + /* wgsl */ `
  let mu = sum1.x / nf;
  // Second pass over (x - mu)²: no cancellation when |mean| >> std.
  var q = 0.0;
  for (var j = li; j < n; j += WG) { let d = x[base + j] - mu; q += d * d; }
` + m.wgReduce('vec2<f32>(q, 0.0)', 'sum2', 'sum', 1) + /* wgsl */ `
  let rs = 1.0 / sqrt(sum2.x / nf + pf(2u));
  if (li == 0u) { mean[row] = mu; rstd[row] = rs; }
  let hasW = pu(3u) != 0u;
  let hasB = pu(4u) != 0u;
  for (var j = li; j < n; j += WG) {
    var v = (x[base + j] - mu) * rs;
    if (hasW) { v *= w[j]; }
    if (hasB) { v += b[j]; }
    out[base + j] = v;
  }
}
`);

// params: rows, n, hasW. gx = rstd (g - mean(g) - x̂ mean(g x̂)), g = gy w.
const LAYER_NORM_BACKWARD = rowVariants((m) => PRELUDE + m.reduce + /* wgsl */ `
` + storage('f32', ['x', 'w', 'mean', 'rstd', 'gy'], ['gx']) + G_AT + m.main + /* wgsl */ `
  let hasW = pu(2u) != 0u;
  let mu = mean[row];
  let rs = rstd[row];
  var acc = vec2<f32>(0.0, 0.0);
  for (var j = li; j < n; j += WG) {
    let g = g_at(base, j, hasW);
    acc += vec2<f32>(g, g * (x[base + j] - mu) * rs);
  }
` + m.wgReduce('acc', 'tot', 'sum', 0) + /* wgsl */ `
  let t = tot / f32(n);
  for (var j = li; j < n; j += WG) {
    let g = g_at(base, j, hasW);
    gx[base + j] = rs * (g - t.x - (x[base + j] - mu) * rs * t.y);
  }
}
`);

// ---------------------------------------------------------------- rmsNorm

// params: rows, n, eps, hasW
const RMS_NORM = rowVariants((m) => PRELUDE + m.reduce + /* wgsl */ `
` + storage('f32', ['x', 'w'], ['out', 'rstd']) + m.main + /* wgsl */ `
  var q = 0.0;
  for (var j = li; j < n; j += WG) { let v = x[base + j]; q += v * v; }
` + m.wgReduce('vec2<f32>(q, 0.0)', 'sum1', 'sum', 0) + /* wgsl */ `
  let rs = 1.0 / sqrt(sum1.x / f32(n) + pf(2u));
  if (li == 0u) { rstd[row] = rs; }
  let hasW = pu(3u) != 0u;
  for (var j = li; j < n; j += WG) {
    var v = x[base + j] * rs;
    if (hasW) { v *= w[j]; }
    out[base + j] = v;
  }
}
`);

// params: rows, n, hasW. gx = rstd (g - x rstd² mean(g x)), g = gy w.
const RMS_NORM_BACKWARD = rowVariants((m) => PRELUDE + m.reduce + /* wgsl */ `
` + storage('f32', ['x', 'w', 'rstd', 'gy'], ['gx']) + G_AT + m.main + /* wgsl */ `
  let hasW = pu(2u) != 0u;
  let rs = rstd[row];
  var d = 0.0;
  for (var j = li; j < n; j += WG) {
    let g = g_at(base, j, hasW);
    d += g * x[base + j];
  }
` + m.wgReduce('vec2<f32>(d, 0.0)', 'sum1', 'sum', 0) + /* wgsl */ `
  let m = sum1.x / f32(n);
  for (var j = li; j < n; j += WG) {
    let g = g_at(base, j, hasW);
    gx[base + j] = rs * (g - x[base + j] * rs * rs * m);
  }
}
`);

// ---------------------------------------------------------------- weight / bias gradients

// Thread t = (chunk c, column j): sums rows [c*chunkRows, ...) of gy x̂ (into pw) and gy (into
// pb) for column j. x̂ = (x - mean) rstd (layerNorm) or x rstd (rmsNorm, mode 1; mean is rstd).
// params: rows, n, chunkRows, chunks, mode, hasW, hasB
const COL_PARTIAL = PRELUDE + storage('f32', ['x', 'mean', 'rstd', 'gy'], ['pw', 'pb']) + threadEntry(COL_WG, 't', 'pu(1u) * pu(3u)') + /* wgsl */ `
  let rows = pu(0u);
  let n = pu(1u);
  let j = t % n;
  let c = t / n;
  let r0 = c * pu(2u);
  let r1 = min(rows, r0 + pu(2u));
  let rms = pu(4u) != 0u;
  var sw = 0.0;
  var sb = 0.0;
  for (var r = r0; r < r1; r++) {
    let g = gy[r * n + j];
    var xh = x[r * n + j];
    if (!rms) { xh -= mean[r]; }
    sw += g * xh * rstd[r];
    sb += g;
  }
  if (pu(5u) != 0u) { pw[t] = sw; }
  if (pu(6u) != 0u) { pb[t] = sb; }
}
`;

// One thread per column adds the chunk partials. params: n, chunks, hasW, hasB
const COL_FINISH = PRELUDE + storage('f32', ['pw', 'pb'], ['gw', 'gb']) + threadEntry(COL_WG, 'j', 'pu(0u)') + /* wgsl */ `
  let n = pu(0u);
  let hasW = pu(2u) != 0u;
  let hasB = pu(3u) != 0u;
  var sw = 0.0;
  var sb = 0.0;
  for (var c = 0u; c < pu(1u); c++) {
    if (hasW) { sw += pw[c * n + j]; }
    if (hasB) { sb += pb[c * n + j]; }
  }
  if (hasW) { gw[j] = sw; }
  if (hasB) { gb[j] = sb; }
}
`;

/** Writes gw = Σ_rows gy x̂ and gb = Σ_rows gy (either may be null). mean null: rmsNorm's x̂ = x rstd. */
function paramGrads(ctx: KernelContext, x: BufRef, mean: BufRef | null, rstd: BufRef, gy: BufRef,
  rows: number, n: number, gw: BufRef | null, gb: BufRef | null): void {
  if (!gw && !gb) return;
  if (n === 0) return;
  if (rows === 0) {
    // An empty sum: zeros.
    if (gw) ctx.clearBuffer(ctx.buf(gw), 0, n * 4);
    if (gb) ctx.clearBuffer(ctx.buf(gb), 0, n * 4);
    return;
  }
  const chunks = Math.ceil(rows / CHUNK_ROWS);
  const dummy = ctx.scratch(16);
  const pw = gw ? ctx.scratch(chunks * n * 4) : dummy;
  const pb = gb ? ctx.scratch(chunks * n * 4) : dummy;
  const rb = ctx.buf(rstd);
  const p1 = ctx.params().u32(rows).u32(n).u32(CHUNK_ROWS).u32(chunks).u32(mean ? 0 : 1).u32(gw ? 1 : 0).u32(gb ? 1 : 0);
  ctx.dispatch({
    code: COL_PARTIAL,
    buffers: [ctx.buf(x), mean ? ctx.buf(mean) : rb, rb, ctx.buf(gy), pw, pb],
    params: p1,
    groups: groupsFor(chunks * n, COL_WG),
  });
  const p2 = ctx.params().u32(n).u32(chunks).u32(gw ? 1 : 0).u32(gb ? 1 : 0);
  const dummyOut = ctx.scratch(16);
  ctx.dispatch({
    code: COL_FINISH,
    buffers: [pw, pb, gw ? ctx.buf(gw) : dummyOut, gb ? ctx.buf(gb) : dummyOut],
    params: p2,
    groups: groupsFor(n, COL_WG),
  });
}

/**
 * layerNorm (layer: true; params rows, n, eps, hasW, hasB; buffers x, w, b, out, mean, rstd) or
 * rmsNorm (params rows, n, eps, hasW; buffers x, w, out, rstd). An absent w or b binds x.
 */
function normForward(ctx: KernelContext, a: Record<string, unknown>, layer: boolean): void {
  const rows = a.rows as number;
  const x = ctx.buf(a.x as BufRef);
  const opt = (r: unknown): GPUBuffer => (r ? ctx.buf(r as BufRef) : x);
  const p = ctx.params().u32(rows).u32(a.n as number).f32(a.eps as number).u32(a.w ? 1 : 0);
  if (layer) p.u32(a.b ? 1 : 0);
  const out = ctx.buf(a.out as BufRef), rstd = ctx.buf(a.rstd as BufRef);
  ctx.dispatch({
    ...rowPick(layer ? LAYER_NORM : RMS_NORM, rows, a.n as number),
    buffers: layer ? [x, opt(a.w), opt(a.b), out, ctx.buf(a.mean as BufRef), rstd] : [x, opt(a.w), out, rstd],
    params: p,
  });
}

/**
 * The backward of layerNorm (layer: true; buffers x, w, mean, rstd, gy, gx) or rmsNorm (x, w,
 * rstd, gy, gx), params rows, n, hasW; then the weight (and layerNorm's bias) gradients.
 */
function normBackward(ctx: KernelContext, a: Record<string, unknown>, layer: boolean): void {
  const rows = a.rows as number;
  const n = a.n as number;
  const xr = a.x as BufRef;
  const x = ctx.buf(xr);
  const w = a.w as BufRef | null;
  const mean = layer ? a.mean as BufRef : null;
  const stats = mean ? [ctx.buf(mean), ctx.buf(a.rstd as BufRef)] : [ctx.buf(a.rstd as BufRef)];
  ctx.dispatch({
    ...rowPick(layer ? LAYER_NORM_BACKWARD : RMS_NORM_BACKWARD, rows, n),
    buffers: [x, w ? ctx.buf(w) : x, ...stats, ctx.buf(a.gy as BufRef), ctx.buf(a.gx as BufRef)],
    params: ctx.params().u32(rows).u32(n).u32(w ? 1 : 0),
  });
  paramGrads(ctx, xr, mean, a.rstd as BufRef, a.gy as BufRef, rows, n, a.gw as BufRef | null, layer ? a.gb as BufRef | null : null);
}

const layerNorm: KernelFn = (ctx, a) => normForward(ctx, a, true);
const layerNormBackward: KernelFn = (ctx, a) => normBackward(ctx, a, true);
const rmsNorm: KernelFn = (ctx, a) => normForward(ctx, a, false);
const rmsNormBackward: KernelFn = (ctx, a) => normBackward(ctx, a, false);

export const ROWS_KERNELS: Record<string, KernelFn> = {
  softmax,
  softmaxBackward,
  layerNorm,
  layerNormBackward,
  rmsNorm,
  rmsNormBackward,
};

