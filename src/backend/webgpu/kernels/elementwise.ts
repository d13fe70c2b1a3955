// Element-wise kernels: fill, strided copy with dtype conversion, unary (+ backward), binary
// (tensor or scalar operand), where (one shader per family; the op and the dtypes are parameters).
import type { BinaryOp, UnaryGradOp, UnaryOp } from '../../backend.js';
import { halfCopy } from './half.js';
import { contiguousStrides } from '../../../tensor/shape.js';
import { PRELUDE, MAX_RANK, collapse, groupsFor, storage, threadEntry, type KernelContext, type KernelFn, type BufRef, type Layout, type Params } from './common.js';

const WG = 64;

/** WGSL: decode element i of a strided layout stored at params [base..]: rank at base, then
 *  shape[MAX_RANK], then strides[MAX_RANK] (i32), then offset. */
const STRIDED = /* wgsl */ `
fn strided_index(i: u32, base: u32, rank: u32, stridesBase: u32, offset: i32) -> u32 {
  var rem = i;
  var idx = offset;
  for (var d = i32(rank) - 1; d >= 0; d--) {
    let n = pu(base + u32(d));
    let c = rem % n;
    rem = rem / n;
    idx += i32(c) * pi(stridesBase + u32(d));
  }
  return u32(idx);
}
`;

/** Writes n, rank, shape[MAX_RANK] and one strides[MAX_RANK] block + offset per layout. */
function writeLayouts(p: Params, shape: readonly number[], layouts: { strides: readonly number[]; offset: number }[]): void {
  const c = collapse(shape, layouts.map((l) => l.strides));
  if (c.shape.length > MAX_RANK) throw new Error(`webgpu: rank ${c.shape.length} above ${MAX_RANK}`);
  p.u32(c.shape.reduce((a, b) => a * b, 1)).u32(c.shape.length);
  for (let d = 0; d < MAX_RANK; d++) p.u32(c.shape[d] ?? 1);
  layouts.forEach((l, t) => {
    for (let d = 0; d < MAX_RANK; d++) p.i32(c.strides[t]![d] ?? 0);
    p.i32(l.offset);
  });
}
// Word positions written by writeLayouts: n=0, rank=1, shape=2..9, layout t strides at
// 10 + t*9, its offset at 10 + t*9 + 8.

const dtypeCode = (r: BufRef): number => (r.dtype === 'int32' ? 1 : 0);

/** WGSL: NaN tests on bits (robust where the compiler assumes no NaN), runtime inf/NaN (const
 *  expressions may not be non-finite), and loads/stores converting by dtype code (0 f32, 1 i32).
 *  Float → int follows JS typed arrays (ToInt32): truncate, NaN and ±inf give 0, wrap mod 2^32. */
const DTYPE = /* wgsl */ `
fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn is_finite(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) < 0x7f800000u; }
fn f_inf() -> f32 { var b = 0x7f800000u; return bitcast<f32>(b); }
fn f_nan() -> f32 { var b = 0x7fc00000u; return bitcast<f32>(b); }
fn f2i(v: f32) -> i32 {
  if (!is_finite(v)) { return 0; }
  if (abs(v) < 2147483648.0) { return i32(v); }
  // |v| >= 2^31 is an integer whose residue mod 2^32 is exact in f32.
  var r = v - floor(v / 4294967296.0) * 4294967296.0;
  if (r >= 2147483648.0) { r = r - 4294967296.0; }
  return i32(r);
}
fn ld(v: u32, dt: u32) -> f32 {
  if (dt == 1u) { return f32(bitcast<i32>(v)); }
  return bitcast<f32>(v);
}
fn st(v: f32, dt: u32) -> u32 {
  if (dt == 1u) { return bitcast<u32>(f2i(v)); }
  return bitcast<u32>(v);
}
// Value bits of dtype code dt as dtype code ot (bits unchanged when they agree).
fn convert(v: u32, dt: u32, ot: u32) -> u32 {
  if (dt == ot) { return v; }
  return st(ld(v, dt), ot);
}
`;

/** A buffer to bind as input `ref` of a kernel writing `out`: WebGPU forbids binding one buffer
 *  both read-only and writable in a dispatch, so an input that is the output (in-place ops such
 *  as gradient accumulation) is read from a copy. */
function inputBuf(ctx: KernelContext, ref: BufRef, out: BufRef): GPUBuffer {
  const b = ctx.buf(ref);
  if (ref.id !== out.id) return b;
  const tmp = ctx.scratch(b.size);
  ctx.copyBuffer(b, 0, tmp, 0, b.size);
  return tmp;
}

const numelOf = (shape: readonly number[]): number => shape.reduce((s, d) => s * d, 1);

// ---------------------------------------------------------------- fill

const FILL = PRELUDE + storage('u32', [], ['out']) + threadEntry(WG, 'i', 'pu(0u)') + /* wgsl */ `
  out[pu(1u) + i] = pu(2u);
}
`;

const fill: KernelFn = (ctx, a) => {
  const out = a.out as BufRef;
  const n = a.n as number;
  const p = ctx.params().u32(n).u32(a.offset as number);
  if (out.dtype === 'int32') p.i32(Math.trunc(a.value as number)); else p.f32(a.value as number);
  ctx.dispatch({ code: FILL, buffers: [ctx.buf(out)], params: p, groups: groupsFor(n, WG) });
};

// ---------------------------------------------------------------- copy

// params: layouts of x (t=0) and out (t=1, contiguous unless copyInto), then at 28: xdtype, outdtype
const COPY = PRELUDE + STRIDED + DTYPE + storage('u32', ['x'], ['out']) + threadEntry(WG, 'i', 'pu(0u)') + /* wgsl */ `
  let src = strided_index(i, 2u, pu(1u), 10u, pi(18u));
  let dst = strided_index(i, 2u, pu(1u), 19u, pi(27u));
  out[dst] = convert(x[src], pu(28u), pu(29u));
}
`;

// Rows of vec4: when both layouts walk their last dim contiguously in runs of a multiple of 4
// and every other stride and both offsets are multiples of 4 (a permute of (B, T, H, D) heads,
// say), a thread moves 16 bytes and only each row's start needs the strided index.
// params: outer layouts as writeLayouts writes them, then at 28: L4 (vec4s per row).
const COPY_ROWS = PRELUDE + STRIDED + storage('vec4<u32>', ['x'], ['out']) + threadEntry(WG, 'i', 'pu(0u) * pu(28u)') + /* wgsl */ `
  let L4 = pu(28u);
  let row = i / L4;
  let c = i % L4;
  let src = strided_index(row, 2u, pu(1u), 10u, pi(18u)) / 4u + c;
  let dst = strided_index(row, 2u, pu(1u), 19u, pi(27u)) / 4u + c;
  out[dst] = x[src];
}
`;

/** Encodes the copy as COPY_ROWS when the layouts allow it (see there); false otherwise. */
function copyRows(ctx: KernelContext, x: BufRef, xl: Layout, out: BufRef, ol: { strides: readonly number[]; offset: number }): boolean {
  if (x.dtype !== out.dtype) return false;
  const c = collapse(xl.shape, [xl.strides, ol.strides]);
  const r = c.shape.length;
  if (r === 0) return false;
  const L = c.shape[r - 1]!;
  const [sx, so] = c.strides as [number[], number[]];
  if (L % 4 !== 0 || sx[r - 1] !== 1 || so[r - 1] !== 1 || xl.offset % 4 !== 0 || ol.offset % 4 !== 0) return false;
  for (let d = 0; d < r - 1; d++) if (sx[d]! % 4 !== 0 || so[d]! % 4 !== 0) return false;
  const rows = numelOf(c.shape) / L;
  const p = ctx.params();
  writeLayouts(p, c.shape.slice(0, -1), [{ strides: sx.slice(0, -1), offset: xl.offset }, { strides: so.slice(0, -1), offset: ol.offset }]);
  p.u32(L / 4);
  ctx.dispatch({ code: COPY_ROWS, buffers: [inputBuf(ctx, x, out), ctx.buf(out)], params: p, groups: groupsFor(rows * (L / 4), WG) });
  return true;
}

const copy: KernelFn = (ctx, a) => {
  const x = a.x as BufRef;
  const xl = a.xl as Layout;
  const out = a.out as BufRef;
  const outLayout = a.outLayout as Layout | undefined;
  const ol = outLayout ?? { strides: contiguousStrides(xl.shape), offset: 0 };
  if (numelOf(xl.shape) === 0) return;
  if (x.dtype === 'float16' || out.dtype === 'float16') {
    // Only contiguous conversions reach here (ops.to makes the source contiguous).
    if (outLayout || !layoutIsContiguous(xl)) throw new Error('webgpu: float16 copies must be contiguous');
    return halfCopy(ctx, x, xl.offset, numelOf(xl.shape), out);
  }
  if (copyRows(ctx, x, xl, out, ol)) return;
  const p = ctx.params();
  writeLayouts(p, xl.shape, [xl, ol]);
  p.u32(dtypeCode(x)).u32(dtypeCode(out));
  const n = numelOf(xl.shape);
  ctx.dispatch({ code: COPY, buffers: [inputBuf(ctx, x, out), ctx.buf(out)], params: p, groups: groupsFor(n, WG) });
};

// ---------------------------------------------------------------- unary math

// 'bf16_round' (device-side only): float32 rounded to the nearest bfloat16, ties to even, kept
// as float32; the backend's bfloat16 matmul precision rounds its operands with it.
const UNARY_OPS: readonly (UnaryOp | 'bf16_round')[] = [
  'neg', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'relu', 'gelu', 'gelu_erf',
  'silu', 'sigmoid', 'abs', 'sin', 'cos', 'square', 'recip', 'sign', 'elu1', 'bf16_round',
];
const UNARY_GRAD_OPS: readonly UnaryGradOp[] = ['relu', 'gelu', 'gelu_erf', 'silu', 'sigmoid', 'tanh', 'elu1'];

function opCode<T extends string>(table: readonly T[], op: T, what: string): number {
  const i = table.indexOf(op);
  if (i < 0) throw new Error(`webgpu ${what}: unknown op ${String(op)}`);
  return i;
}

/** WGSL math shared by unary and its backward. tanh is written out because built-in tanh may be
 *  lowered to a ratio of exponentials that overflows to NaN for large |x|. erfc uses a
 *  Chebyshev-fitted exponential form, relative error ~1.2e-7 over the whole line (tails too). */
const MATH = /* wgsl */ `
fn tanh_f(x: f32) -> f32 {
  let ax = abs(x);
  if (ax < 0.5) {
    // Taylor series: 7 terms are below f32 rounding for |x| < 0.5.
    let z = x * x;
    return x * (1.0 + z * (-0.333333333333 + z * (0.133333333333 + z * (-0.0539682539683
      + z * (0.0218694885362 + z * (-0.00886323552990 + z * 0.00359212803657))))));
  }
  let t = exp(-2.0 * ax);
  let r = (1.0 - t) / (1.0 + t);
  return select(r, -r, x < 0.0);
}
fn sigmoid_f(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}
fn erfc_pos(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
    + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(-z * z + p);
}
fn erfc_f(x: f32) -> f32 {
  if (x >= 0.0) { return erfc_pos(x); }
  return 2.0 - erfc_pos(-x);
}
fn norm_cdf(x: f32) -> f32 { return 0.5 * erfc_f(-x * 0.70710678118654752); }
const SQRT_2_OVER_PI = 0.79788456080286536;
const GELU_C = 0.044715;
fn unary_f(op: u32, x: f32) -> f32 {
  var r = x;
  switch op {
    case 0u: { r = -x; }
    case 1u: { r = exp(x); }
    case 2u: { r = log(x); }
    case 3u: { r = sqrt(x); }
    case 4u: { r = 1.0 / sqrt(x); }
    case 5u: { r = tanh_f(x); }
    case 6u: { r = select(0.0, x, x > 0.0 || is_nan(x)); }
    case 7u: { r = 0.5 * x * (1.0 + tanh_f(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))); }
    case 8u: { r = x * norm_cdf(x); }
    case 9u: { r = x * sigmoid_f(x); }
    case 10u: { r = sigmoid_f(x); }
    case 11u: { r = abs(x); }
    case 12u: { r = sin(x); }
    case 13u: { r = cos(x); }
    case 14u: { r = x * x; }
    case 15u: { r = 1.0 / x; }
    case 16u: { if (x > 0.0) { r = 1.0; } else if (x < 0.0) { r = -1.0; } } // NaN and ±0 pass through
    case 17u: { r = select(exp(x), x + 1.0, x > 0.0); }
    case 18u: {
      let b = bitcast<u32>(x);
      if ((b & 0x7f800000u) != 0x7f800000u) { r = bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u); } // inf, NaN as they are
    }
    default: {}
  }
  return r;
}
// Integer versions of the ops allowed on int32 (neg abs relu sign square); wrapping like ToInt32.
fn unary_i(op: u32, x: i32) -> i32 {
  var r = x;
  switch op {
    case 0u: { r = -x; }
    case 6u: { r = max(x, 0); }
    case 11u: { r = select(x, -x, x < 0); }
    case 14u: { r = x * x; }
    case 16u: { r = select(select(0, -1, x < 0), 1, x > 0); }
    default: {}
  }
  return r;
}
fn unary_grad(op: u32, x: f32) -> f32 {
  var r = 0.0;
  switch op {
    case 0u: { r = select(0.0, 1.0, x > 0.0); }
    case 1u: {
      let t = tanh_f(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
      let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
      r = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
    }
    case 2u: { r = norm_cdf(x) + x * 0.39894228040143268 * exp(-0.5 * x * x); }
    case 3u: { let s = sigmoid_f(x); r = s * (1.0 + x * (1.0 - s)); }
    case 4u: { let s = sigmoid_f(x); r = s * (1.0 - s); }
    case 5u: { let t = tanh_f(x); r = 1.0 - t * t; }
    case 6u: { r = select(exp(x), 1.0, x > 0.0); }
    default: {}
  }
  return r;
}
`;

// ---------------------------------------------------------------- unary

// params: layout of x (t=0), then op at 19, xdtype 20, outdtype 21
const UNARY = PRELUDE + STRIDED + DTYPE + MATH + storage('u32', ['x'], ['out']) + threadEntry(WG, 'i', 'pu(0u)') + /* wgsl */ `
  let v = x[strided_index(i, 2u, pu(1u), 10u, pi(18u))];
  let op = pu(19u);
  let xt = pu(20u);
  let ot = pu(21u);
  let intOp = op == 0u || op == 6u || op == 11u || op == 14u || op == 16u;
  if (xt == 1u && ot == 1u && intOp) { out[i] = bitcast<u32>(unary_i(op, bitcast<i32>(v))); }
  else { out[i] = st(unary_f(op, ld(v, xt)), ot); }
}
`;

const unary: KernelFn = (ctx, a) => {
  const x = a.x as BufRef;
  const xl = a.xl as Layout;
  const out = a.out as BufRef;
  const p = ctx.params();
  writeLayouts(p, xl.shape, [xl]);
  p.u32(opCode(UNARY_OPS, a.op as UnaryOp, 'unary')).u32(dtypeCode(x)).u32(dtypeCode(out));
  ctx.dispatch({ code: UNARY, buffers: [inputBuf(ctx, x, out), ctx.buf(out)], params: p, groups: groupsFor(numelOf(xl.shape), WG) });
};

// params: n, op
const UNARY_BACKWARD = PRELUDE + DTYPE + MATH + storage('f32', ['x', 'gy'], ['gx']) + threadEntry(WG, 'i', 'pu(0u)') + /* wgsl */ `
  gx[i] = gy[i] * unary_grad(pu(1u), x[i]);
}
`;

const unaryBackward: KernelFn = (ctx, a) => {
  const x = a.x as BufRef;
  const gy = a.gy as BufRef;
  const gx = a.gx as BufRef;
  const n = a.n as number;
  const p = ctx.params().u32(n).u32(opCode(UNARY_GRAD_OPS, a.op as UnaryGradOp, 'unaryBackward'));
  ctx.dispatch({
    code: UNARY_BACKWARD, buffers: [inputBuf(ctx, x, gx), inputBuf(ctx, gy, gx), ctx.buf(gx)], params: p, groups: groupsFor(n, WG),
  });
};

// ---------------------------------------------------------------- binary

const BINARY_OPS: readonly BinaryOp[] = ['add', 'sub', 'mul', 'div', 'pow', 'max', 'min', 'eq', 'ne', 'lt', 'le', 'gt', 'ge'];

/** WGSL: a op b in f32 with JS semantics (Math.pow, Math.max/min propagate NaN, comparisons
 *  with NaN false except ne), and in i32 for all-int32 operands (division by 0 gives 0, as the
 *  infinity that JS produces is stored as 0). */
const BINOPS = /* wgsl */ `
fn pow_f(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  if (is_nan(a) || is_nan(b)) { return f_nan(); }
  if (b == 1.0) { return a; }
  if (b == 2.0) { return a * a; }
  let bInf = !is_finite(b);
  let bInt = !bInf && b == floor(b);
  if (a < 0.0 && is_finite(a) && !bInt && !bInf) { return f_nan(); }
  let odd = bInt && abs(b) < 16777216.0 && (i32(b) & 1) != 0;
  let ax = abs(a);
  var r: f32;
  if (ax == 0.0) { r = select(0.0, f_inf(), b < 0.0); }
  else { r = exp2(b * log2(ax)); } // |a| = 1 with b = ±inf gives NaN, as Math.pow does
  if (odd && (bitcast<u32>(a) & 0x80000000u) != 0u) { r = -r; }
  return r;
}
fn binary_f(op: u32, a: f32, b: f32) -> f32 {
  let nan = is_nan(a) || is_nan(b);
  var r = 0.0;
  switch op {
    case 0u: { r = a + b; }
    case 1u: { r = a - b; }
    case 2u: { r = a * b; }
    case 3u: { r = a / b; }
    case 4u: { r = pow_f(a, b); }
    case 5u: { if (nan) { r = f_nan(); } else { r = max(a, b); } }
    case 6u: { if (nan) { r = f_nan(); } else { r = min(a, b); } }
    case 7u: { r = select(0.0, 1.0, !nan && a == b); }
    case 8u: { r = select(0.0, 1.0, nan || a != b); }
    case 9u: { r = select(0.0, 1.0, !nan && a < b); }
    case 10u: { r = select(0.0, 1.0, !nan && a <= b); }
    case 11u: { r = select(0.0, 1.0, !nan && a > b); }
    case 12u: { r = select(0.0, 1.0, !nan && a >= b); }
    default: {}
  }
  return r;
}
fn pow_i(a: i32, b: i32) -> i32 {
  if (b < 0) {
    // 1 / a^|b| truncates to 0 unless |a| = 1 (a = 0 gives infinity, stored as 0)
    if (a == 1) { return 1; }
    if (a == -1) { return select(1, -1, (b & 1) != 0); }
    return 0;
  }
  var r = 1;
  var base = a;
  var e = b;
  loop {
    if (e == 0) { break; }
    if ((e & 1) != 0) { r = r * base; }
    base = base * base;
    e = e >> 1u;
  }
  return r;
}
fn binary_i(op: u32, a: i32, b: i32) -> i32 {
  var r = 0;
  switch op {
    case 0u: { r = a + b; }
    case 1u: { r = a - b; }
    case 2u: { r = a * b; }
    case 3u: { if (b != 0) { r = a / b; } }
    case 4u: { r = pow_i(a, b); }
    case 5u: { r = max(a, b); }
    case 6u: { r = min(a, b); }
    case 7u: { r = select(0, 1, a == b); }
    case 8u: { r = select(0, 1, a != b); }
    case 9u: { r = select(0, 1, a < b); }
    case 10u: { r = select(0, 1, a <= b); }
    case 11u: { r = select(0, 1, a > b); }
    case 12u: { r = select(0, 1, a >= b); }
    default: {}
  }
  return r;
}
`;

// params: layouts of a (t=0) and b (t=1), then at 28: op, adtype, bdtype, outdtype,
// scalar mode (0: b from its buffer, 1: a op s, 2: s op a), s (bits in bdtype), int math flag
const BINARY = PRELUDE + STRIDED + DTYPE + BINOPS + storage('u32', ['a', 'b'], ['out']) + threadEntry(WG, 'i', 'pu(0u)') + /* wgsl */ `
  let op = pu(28u);
  let mode = pu(32u);
  var x = a[strided_index(i, 2u, pu(1u), 10u, pi(18u))];
  var xt = pu(29u);
  var y = pu(33u);
  var yt = pu(30u);
  if (mode == 0u) { y = b[strided_index(i, 2u, pu(1u), 19u, pi(27u))]; }
  if (mode == 2u) {
    let v = x; x = y; y = v;
    let t = xt; xt = yt; yt = t;
  }
  if (pu(34u) == 1u) { out[i] = bitcast<u32>(binary_i(op, bitcast<i32>(x), bitcast<i32>(y))); }
  else { out[i] = st(binary_f(op, ld(x, xt), ld(y, yt)), pu(31u)); }
}
`;

const binary: KernelFn = (ctx, args) => {
  const a = args.a as BufRef;
  const al = args.al as Layout;
  const b = args.b as BufRef;
  const bl = args.bl as Layout;
  const out = args.out as BufRef;
  const p = ctx.params();
  writeLayouts(p, al.shape, [al, bl]);
  const allInt = a.dtype === 'int32' && b.dtype === 'int32' && out.dtype === 'int32';
  p.u32(opCode(BINARY_OPS, args.op as BinaryOp, 'binary')).u32(dtypeCode(a)).u32(dtypeCode(b)).u32(dtypeCode(out))
    .u32(0).u32(0).u32(allInt ? 1 : 0);
  ctx.dispatch({
    code: BINARY, buffers: [inputBuf(ctx, a, out), inputBuf(ctx, b, out), ctx.buf(out)], params: p, groups: groupsFor(numelOf(al.shape), WG),
  });
};

const binaryScalar: KernelFn = (ctx, args) => {
  const a = args.a as BufRef;
  const al = args.al as Layout;
  const s = args.s as number;
  const out = args.out as BufRef;
  const p = ctx.params();
  writeLayouts(p, al.shape, [al, al]);
  // Integer math only when the scalar is an int32 too; otherwise JS computes in floating point.
  const intMath = a.dtype === 'int32' && out.dtype === 'int32' && Number.isInteger(s) && s >= -(2 ** 31) && s < 2 ** 31;
  p.u32(opCode(BINARY_OPS, args.op as BinaryOp, 'binaryScalar')).u32(dtypeCode(a)).u32(intMath ? 1 : 0).u32(dtypeCode(out))
    .u32(args.reversed ? 2 : 1);
  if (intMath) p.i32(s); else p.f32(s);
  p.u32(intMath ? 1 : 0);
  const abuf = inputBuf(ctx, a, out);
  // b is unused in scalar mode; bind a again to fill the slot.
  ctx.dispatch({ code: BINARY, buffers: [abuf, abuf, ctx.buf(out)], params: p, groups: groupsFor(numelOf(al.shape), WG) });
};

// ---------------------------------------------------------------- where

// params: layouts of cond (t=0), a (t=1), b (t=2), then at 37: cdtype, adtype, bdtype, outdtype
const WHERE = PRELUDE + STRIDED + DTYPE + storage('u32', ['cond', 'a', 'b'], ['out']) + threadEntry(WG, 'i', 'pu(0u)') + /* wgsl */ `
  let rank = pu(1u);
  let c = cond[strided_index(i, 2u, rank, 10u, pi(18u))];
  // A float is nonzero unless it is ±0 (NaN counts as nonzero, as in JS).
  let nz = select((c & 0x7fffffffu) != 0u, c != 0u, pu(37u) == 1u);
  var v: u32;
  var t: u32;
  if (nz) { v = a[strided_index(i, 2u, rank, 19u, pi(27u))]; t = pu(38u); }
  else { v = b[strided_index(i, 2u, rank, 28u, pi(36u))]; t = pu(39u); }
  out[i] = convert(v, t, pu(40u));
}
`;

const where: KernelFn = (ctx, args) => {
  const cond = args.cond as BufRef;
  const cl = args.cl as Layout;
  const a = args.a as BufRef;
  const al = args.al as Layout;
  const b = args.b as BufRef;
  const bl = args.bl as Layout;
  const out = args.out as BufRef;
  const p = ctx.params();
  writeLayouts(p, cl.shape, [cl, al, bl]);
  p.u32(dtypeCode(cond)).u32(dtypeCode(a)).u32(dtypeCode(b)).u32(dtypeCode(out));
  ctx.dispatch({
    code: WHERE,
    buffers: [inputBuf(ctx, cond, out), inputBuf(ctx, a, out), inputBuf(ctx, b, out), ctx.buf(out)],
    params: p,
    groups: groupsFor(numelOf(cl.shape), WG),
  });
};

export const ELEMENTWISE_KERNELS: Record<string, KernelFn> = {
  fill,
  copy,
  copyInto: copy,
  unary,
  unaryBackward,
  binary,
  binaryScalar,
  where,
};

export { writeLayouts, STRIDED, DTYPE, dtypeCode, inputBuf };

function layoutIsContiguous(l: Layout): boolean {
  let s = 1;
  for (let i = l.shape.length - 1; i >= 0; i--) {
    if (l.shape[i] !== 1 && l.strides[i] !== s) return false;
    s *= l.shape[i]!;
  }
  return true;
}
