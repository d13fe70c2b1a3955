// WGSL kernels: reduce (sum/max/min/argmax) and cumsum over the middle axis of a contiguous
// (outer, n, inner) view. Two strategies each, chosen per call: one thread per output line
// (coalesced across inner when inner is large, cheap for short lines), or one workgroup per line
// (threads split the line; shared-memory tree reduction / chunked scan) for long lines.
import type { ReduceOp } from '../../backend.js';
import { PRELUDE, entry, grid, groupsFor, storage, threadEntry, type BufRef, type KernelContext, type KernelFn } from './common.js';
import { DTYPE, dtypeCode, inputBuf } from './elementwise.js';

const WG = 64;
/** Threads per workgroup in the workgroup-per-line kernels (the adapter's maximum). */
const WG_LINE = 128;

const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'max', 'min', 'argmax'];

/** The bindings of every shader here: x (value bits, f32 or i32) and out. */
const IO = storage('u32', ['x'], ['out']);

/** WGSL: line `id` of the (outer, n, inner) view: n elements, inner apart, from base. */
const LINE = /* wgsl */ `
  let n = pu(1u);
  let inner = pu(2u);
  let base = (id / inner) * n * inner + id % inner;
`;

/**
 * WGSL accumulator over value bits (f32 or i32 by `isint`): sum (Kahan-compensated in f32, so
 * long sums stay close to the float64 reference), max/min propagating NaN, argmax keeping the
 * first maximum with NaN counting as the maximum. idx 0xffffffff marks an empty argmax state.
 * Params: outer 0, n 1, inner 2, op 3, xdtype 4, outdtype 5, lines (outer*inner) 6.
 */
const ACC = /* wgsl */ `
struct Acc { v: u32, idx: u32, c: f32 }
const EMPTY = 0xffffffffu;
fn acc_init(op: u32, isint: bool) -> Acc {
  var v = 0u;
  if (op == 1u) { v = select(bitcast<u32>(-f_inf()), 0x80000000u, isint); }
  if (op == 2u) { v = select(bitcast<u32>(f_inf()), 0x7fffffffu, isint); }
  return Acc(v, EMPTY, 0.0);
}
// Whether candidate (v, j) beats the current argmax (w, k): NaN first, then larger, then lower index.
fn arg_better(v: u32, j: u32, w: u32, k: u32, isint: bool) -> bool {
  if (k == EMPTY) { return true; }
  if (j == EMPTY) { return false; }
  if (isint) {
    let a = bitcast<i32>(v);
    let b = bitcast<i32>(w);
    return a > b || (a == b && j < k);
  }
  let a = bitcast<f32>(v);
  let b = bitcast<f32>(w);
  if (is_nan(b)) { return is_nan(a) && j < k; }
  if (is_nan(a)) { return true; }
  return a > b || (a == b && j < k);
}
fn acc_merge(s: Acc, v: u32, j: u32, c: f32, op: u32, isint: bool) -> Acc {
  var r = s;
  switch op {
    case 0u: {
      if (isint) { r.v = bitcast<u32>(bitcast<i32>(s.v) + bitcast<i32>(v)); }
      else {
        // Kahan step: c carries the low-order bits lost so far (true sum ~ v - c).
        let y = bitcast<f32>(v) - (s.c + c);
        let t = bitcast<f32>(s.v) + y;
        r.c = select(0.0, (t - bitcast<f32>(s.v)) - y, is_finite(t));
        r.v = bitcast<u32>(t);
      }
    }
    case 1u, 2u: {
      if (isint) {
        let a = bitcast<i32>(s.v);
        let b = bitcast<i32>(v);
        r.v = bitcast<u32>(select(min(a, b), max(a, b), op == 1u));
      } else {
        let a = bitcast<f32>(s.v);
        let b = bitcast<f32>(v);
        if (!is_nan(a) && (is_nan(b) || (op == 1u && b > a) || (op == 2u && b < a))) { r.v = v; }
      }
    }
    default: {
      if (arg_better(v, j, s.v, s.idx, isint)) { r.v = v; r.idx = j; }
    }
  }
  return r;
}
// The value written to out for a finished accumulator.
fn acc_result(s: Acc, op: u32, isint: bool, n: u32, ot: u32) -> u32 {
  if (op == 3u) { return s.idx; }
  if (isint) {
    // An empty int max/min is ∓infinity in JS, stored in int32 as 0.
    if (n == 0u && op != 0u) { return 0u; }
    if (ot == 1u) { return s.v; }
    return bitcast<u32>(f32(bitcast<i32>(s.v)));
  }
  var v = bitcast<f32>(s.v);
  if (op == 0u) { v = v - s.c; }
  return st(v, ot);
}
`;

const REDUCE_THREAD = PRELUDE + DTYPE + ACC + IO + threadEntry(WG, 'id', 'pu(6u)') + LINE + /* wgsl */ `
  let op = pu(3u);
  let isint = pu(4u) == 1u;
  var s = acc_init(op, isint);
  for (var j = 0u; j < n; j++) { s = acc_merge(s, x[base + j * inner], j, 0.0, op, isint); }
  out[id] = acc_result(s, op, isint, n, pu(5u));
}
`;

const REDUCE_GROUP = PRELUDE + DTYPE + ACC + IO + /* wgsl */ `
var<workgroup> sv: array<u32, ${WG_LINE}>;
var<workgroup> si: array<u32, ${WG_LINE}>;
var<workgroup> sc: array<f32, ${WG_LINE}>;
` + entry(WG_LINE, 't') + /* wgsl */ `
  let id = wid.x + wid.y * nwg.x; // one workgroup per output
  if (id >= pu(6u)) { return; }
` + LINE + /* wgsl */ `
  let op = pu(3u);
  let isint = pu(4u) == 1u;
  var s = acc_init(op, isint);
  for (var j = t; j < n; j += ${WG_LINE}u) { s = acc_merge(s, x[base + j * inner], j, 0.0, op, isint); }
  sv[t] = s.v;
  si[t] = s.idx;
  sc[t] = s.c;
  workgroupBarrier();
  for (var h = ${WG_LINE / 2}u; h > 0u; h >>= 1u) {
    if (t < h) {
      let r = acc_merge(Acc(sv[t], si[t], sc[t]), sv[t + h], si[t + h], sc[t + h], op, isint);
      sv[t] = r.v;
      si[t] = r.idx;
      sc[t] = r.c;
    }
    workgroupBarrier();
  }
  if (t == 0u) { out[id] = acc_result(Acc(sv[0], si[0], sc[0]), op, isint, n, pu(5u)); }
}
`;

/**
 * Runs a line kernel on args a (x, out, outer, n, inner): params outer, n, inner, then `opWords`,
 * x's and out's dtype codes, lines. Long lines get a workgroup each (groupShader), unless there
 * are enough lines to fill the GPU thread-per-line (threadShader; reads coalesce across inner).
 */
function dispatchLines(ctx: KernelContext, a: Record<string, unknown>, opWords: number[], threadShader: string, groupShader: string): void {
  const x = a.x as BufRef;
  const out = a.out as BufRef;
  const outer = a.outer as number;
  const n = a.n as number;
  const inner = a.inner as number;
  const lines = outer * inner;
  const p = ctx.params().u32(outer).u32(n).u32(inner);
  for (const w of opWords) p.u32(w);
  p.u32(dtypeCode(x)).u32(dtypeCode(out)).u32(lines);
  const perGroup = n >= 256 && (inner === 1 || lines <= 16384);
  ctx.dispatch({
    code: perGroup ? groupShader : threadShader,
    buffers: [inputBuf(ctx, x, out), ctx.buf(out)],
    params: p,
    groups: perGroup ? grid(lines) : groupsFor(lines, WG),
  });
}

const reduce: KernelFn = (ctx, a) => {
  const op = a.op as ReduceOp;
  const code = REDUCE_OPS.indexOf(op);
  if (code < 0) throw new Error(`webgpu reduce: unknown op ${String(op)}`);
  if (op === 'argmax' && a.n === 0) throw new RangeError('reduce: argmax over an empty axis');
  dispatchLines(ctx, a, [code], REDUCE_THREAD, REDUCE_GROUP);
};

// ---------------------------------------------------------------- cumsum

/** WGSL: addition on value bits, i32 or f32; and a Kahan step on an (s, c) f32 pair. */
const ADD = /* wgsl */ `
fn add_bits(a: u32, b: u32, isint: bool) -> u32 {
  if (isint) { return bitcast<u32>(bitcast<i32>(a) + bitcast<i32>(b)); }
  return bitcast<u32>(bitcast<f32>(a) + bitcast<f32>(b));
}
fn kahan(s: vec2<f32>, v: f32) -> vec2<f32> {
  let y = v - s.y;
  let t = s.x + y;
  return vec2<f32>(t, select(0.0, (t - s.x) - y, is_finite(t)));
}
fn store_bits(v: u32, isint: bool, ot: u32) -> u32 {
  if (isint) { return select(bitcast<u32>(f32(bitcast<i32>(v))), v, ot == 1u); }
  return st(bitcast<f32>(v), ot);
}
`;
// Params: outer 0, n 1, inner 2, xdtype 3, outdtype 4, lines 5.

const CUMSUM_THREAD = PRELUDE + DTYPE + ADD + IO + threadEntry(WG, 'id', 'pu(5u)') + LINE + /* wgsl */ `
  let isint = pu(3u) == 1u;
  let ot = pu(4u);
  var si = 0u;
  var sf = vec2<f32>(0.0, 0.0);
  for (var j = 0u; j < n; j++) {
    let at = base + j * inner;
    if (isint) { si = add_bits(si, x[at], true); out[at] = store_bits(si, true, ot); }
    else { sf = kahan(sf, bitcast<f32>(x[at])); out[at] = st(sf.x - sf.y, ot); }
  }
}
`;

const CUMSUM_GROUP = PRELUDE + DTYPE + ADD + IO + /* wgsl */ `
var<workgroup> sv: array<u32, ${WG_LINE}>;
` + entry(WG_LINE, 't') + /* wgsl */ `
  let id = wid.x + wid.y * nwg.x; // one workgroup per line
  if (id >= pu(5u)) { return; }
` + LINE + /* wgsl */ `
  let isint = pu(3u) == 1u;
  let ot = pu(4u);
  // Chunks of ${WG_LINE}: an inclusive Hillis-Steele scan in shared memory, plus the running
  // total of the chunks before (Kahan-compensated for floats).
  var carryI = 0u;
  var carryF = vec2<f32>(0.0, 0.0);
  for (var c0 = 0u; c0 < n; c0 += ${WG_LINE}u) {
    let j = c0 + t;
    var v = 0u;
    if (j < n) { v = x[base + j * inner]; }
    sv[t] = v;
    workgroupBarrier();
    for (var h = 1u; h < ${WG_LINE}u; h <<= 1u) {
      var o = 0u;
      if (t >= h) { o = sv[t - h]; }
      workgroupBarrier();
      v = add_bits(v, o, isint);
      sv[t] = v;
      workgroupBarrier();
    }
    if (j < n) {
      if (isint) { out[base + j * inner] = store_bits(add_bits(carryI, v, true), true, ot); }
      else { out[base + j * inner] = st((carryF.x + bitcast<f32>(v)) - carryF.y, ot); }
    }
    let total = sv[${WG_LINE - 1}];
    workgroupBarrier(); // everyone has read the total before the next chunk overwrites sv
    carryI = add_bits(carryI, total, true);
    carryF = kahan(carryF, bitcast<f32>(total));
  }
}
`;

const cumsum: KernelFn = (ctx, a) => dispatchLines(ctx, a, [], CUMSUM_THREAD, CUMSUM_GROUP);

export const REDUCE_KERNELS: Record<string, KernelFn> = { reduce, cumsum };
