// The ops: each forward calls the backend and, beside it, records its backward rule.
// Views (reshape, permute, slice, expand) share storage; everything else allocates its output.
import type { Backend, BinaryOp, UnaryGradOp, UnaryOp } from '../backend/backend.js';
import { checkSparsity, type AttentionSparsity } from '../backend/backend.js';
import { isHalf, type DType } from './dtype.js';
import { toBf16Bits, toHalfBits } from './half.js';
import { defaultGenerator, type Generator } from './random.js';
import { broadcastShapes, checkShape, contiguousStrides, fmt, normDim, numel, sameShape, ShapeError, type Shape } from './shape.js';
import { getDefaultBackend, isGradEnabled, noGrad, record, Tensor } from './tensor.js';
import { matmulPrecision } from './precision.js';

// ---------------------------------------------------------------- helpers

export interface CreateOptions {
  dtype?: DType;
  backend?: Backend;
  requiresGrad?: boolean;
}

/** Checks that all tensors are alive and on one backend; returns it. */
/** The ops that take float16/bfloat16 (weights stored as halves): readers and views. */
const HALF_OPS = new Set(['to', 'matmul', 'linear', 'embedding', 'expand', 'permute', 'reshape', 'slice', 'contiguous']);

function backendOf(op: string, ...ts: Tensor[]): Backend {
  const b = ts[0]!.backend;
  for (const t of ts) {
    t.assertLive(op);
    if (isHalf(t.dtype) && !HALF_OPS.has(op)) throw new Error(`${op}: ${t.dtype} is a storage dtype for weights (linear, matmul's right operand, embedding); convert with .to('float32')`);
    if (t.backend !== b) throw new Error(`${op}: tensors are on different backends (${b.name} and ${t.backend.name})`);
  }
  return b;
}

function sameDtype(op: string, a: Tensor, b: Tensor): void {
  if (a.dtype !== b.dtype) throw new Error(`${op}: dtypes differ (${a.dtype} and ${b.dtype}); convert one with .to()`);
}

function needFloat(op: string, t: Tensor): void {
  if (t.dtype === 'int32') throw new Error(`${op}: needs a floating-point tensor, got int32`);
  if (isHalf(t.dtype)) throw new Error(`${op}: ${t.dtype} is a storage dtype for weights (linear, matmul's right operand, embedding); convert with .to('float32')`);
}

/** A float16/bfloat16 right operand (weights stored as halves) next to a float32 left one. */
function halfWeight(a: Tensor, b: Tensor): boolean {
  return isHalf(b.dtype) && a.dtype === 'float32';
}

/** A new contiguous tensor of the given shape (zero-filled). */
export function empty(shape: Shape, opts: CreateOptions = {}): Tensor {
  checkShape('empty', shape);
  const b = opts.backend ?? getDefaultBackend();
  const dtype = opts.dtype ?? 'float32';
  return new Tensor(b.alloc(dtype, numel(shape)), shape, undefined, 0, opts.requiresGrad ?? false);
}

/** An output for a kernel that writes every element: allocated uninitialized (no zero-fill). */
function like(t: Tensor, shape: Shape = t.shape, dtype: DType = t.dtype): Tensor {
  return new Tensor(t.backend.alloc(dtype, numel(shape), true), shape);
}

/** A zero-filled output, for kernels that add into it or write only part of it. */
function zeroedLike(t: Tensor, shape: Shape = t.shape, dtype: DType = t.dtype): Tensor {
  return new Tensor(t.backend.alloc(dtype, numel(shape)), shape);
}

// ---------------------------------------------------------------- creation

type Nested = number | readonly Nested[];

function inferShape(data: Nested): number[] {
  const shape: number[] = [];
  let x: Nested = data;
  while (Array.isArray(x)) {
    shape.push(x.length);
    x = (x as readonly Nested[])[0]!;
  }
  return shape;
}

/** A tensor from numbers, nested arrays or a typed array (shape defaults to the nesting). */
export function tensor(data: Nested | ArrayLike<number>, opts: CreateOptions & { shape?: Shape } = {}): Tensor {
  let flat: ArrayLike<number>;
  let shape: Shape;
  if (typeof data === 'number') {
    flat = [data];
    shape = opts.shape ?? [];
  } else if (Array.isArray(data)) {
    const inferred = inferShape(data as Nested);
    flat = (data as unknown[]).flat(Infinity) as number[];
    if (flat.length !== numel(inferred)) throw new ShapeError(`tensor: ragged nested array (shape ${fmt(inferred)} but ${flat.length} values)`);
    shape = opts.shape ?? inferred;
  } else {
    flat = data as ArrayLike<number>;
    shape = opts.shape ?? [flat.length];
  }
  checkShape('tensor', shape);
  if (numel(shape) !== flat.length) throw new ShapeError(`tensor: ${flat.length} values do not fill shape ${fmt(shape)}`);
  const b = opts.backend ?? getDefaultBackend();
  if (data instanceof Uint16Array && !(opts.dtype && isHalf(opts.dtype))) throw new Error("tensor: a Uint16Array holds float16 or bfloat16 bits: pass dtype 'float16' or 'bfloat16'");
  const dtype = opts.dtype ?? (data instanceof Int32Array ? 'int32' : data instanceof Float64Array ? 'float64' : 'float32');
  // Half data are bit patterns, as data() returns them: refuse plain numbers, which would be
  // taken for bits.
  if (isHalf(dtype) && !(data instanceof Uint16Array)) throw new Error(`tensor: ${dtype} data must be a Uint16Array of its bits (or make a float32 tensor and call .to('${dtype}'))`);
  return new Tensor(b.upload(flat, dtype), shape, undefined, 0, opts.requiresGrad ?? false);
}

export function zeros(shape: Shape, opts: CreateOptions = {}): Tensor {
  return empty(shape, opts);
}

export function full(shape: Shape, value: number, opts: CreateOptions = {}): Tensor {
  const t = empty(shape, opts);
  if (value !== 0) t.backend.fill(t.storage, value, 0, t.size);
  return t;
}

export function ones(shape: Shape, opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

export function zerosLike(t: Tensor): Tensor {
  return zeroedLike(t);
}

/** Like torch.arange: [start, end) in steps; int32 unless a dtype is given. */
export function arange(start: number, end?: number, step = 1, opts: CreateOptions = {}): Tensor {
  if (end === undefined) {
    end = start;
    start = 0;
  }
  const n = Math.max(0, Math.ceil((end - start) / step));
  const values = new Array<number>(n);
  for (let i = 0; i < n; i++) values[i] = start + i * step;
  return tensor(values, { ...opts, dtype: opts.dtype ?? 'int32', shape: [n] });
}

export function randn(shape: Shape, opts: CreateOptions & { std?: number; mean?: number; generator?: Generator } = {}): Tensor {
  const g = opts.generator ?? defaultGenerator;
  const n = numel(shape);
  const std = opts.std ?? 1;
  const mean = opts.mean ?? 0;
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = mean + std * g.normal();
  return tensor(v, { ...opts, dtype: opts.dtype ?? 'float32', shape });
}

export function rand(shape: Shape, opts: CreateOptions & { low?: number; high?: number; generator?: Generator } = {}): Tensor {
  const g = opts.generator ?? defaultGenerator;
  const n = numel(shape);
  const lo = opts.low ?? 0;
  const hi = opts.high ?? 1;
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = lo + (hi - lo) * g.random();
  return tensor(v, { ...opts, dtype: opts.dtype ?? 'float32', shape });
}

/** Ones on and below diagonal k of the last two dims, zeros above (like torch.tril on ones). */
export function trilMask(rows: number, cols: number, k = 0, opts: CreateOptions = {}): Tensor {
  const v = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) v[i * cols + j] = j <= i + k ? 1 : 0;
  return tensor(v, { ...opts, shape: [rows, cols] });
}

// ---------------------------------------------------------------- views

export function contiguous(x: Tensor): Tensor {
  if (x.isContiguous() && x.offset === 0 && x.storage.size === x.size) return x;
  const b = backendOf('contiguous', x);
  if (isHalf(x.dtype)) throw new Error(`contiguous: ${x.dtype} tensors are not copied (shape ${fmt(x.shape)}); widen with .to('float32') first`);
  const out = like(x);
  b.copy(x.storage, x.layout, out.storage);
  return record(out, 'contiguous', [x], (g) => [g]);
}

/** Like torch.reshape: a view when the layout allows, else a copy. One dim may be -1. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  backendOf('reshape', x);
  const target = [...shape];
  const infer = target.indexOf(-1);
  if (infer >= 0) {
    const rest = numel(target.filter((_, i) => i !== infer));
    if (rest === 0 || x.size % rest !== 0) throw new ShapeError(`reshape: cannot reshape ${fmt(x.shape)} into ${fmt(shape)}`);
    target[infer] = x.size / rest;
  }
  checkShape('reshape', target);
  if (numel(target) !== x.size) throw new ShapeError(`reshape: cannot reshape ${fmt(x.shape)} (${x.size} elements) into ${fmt(shape)}`);
  const src = x.isContiguous() ? x : contiguous(x);
  const out = new Tensor(src.storage, target, contiguousStrides(target), src.offset);
  const inShape = x.shape;
  return record(out, 'reshape', [src], (g) => [reshape(g, inShape)]);
}

export function view(x: Tensor, shape: Shape): Tensor {
  if (!x.isContiguous()) throw new ShapeError(`view: tensor of shape ${fmt(x.shape)} is not contiguous; use reshape()`);
  return reshape(x, shape);
}

export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normDim('flatten', startDim, x.ndim);
  const e = normDim('flatten', endDim, x.ndim);
  const shape = [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)];
  return reshape(x, shape);
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  backendOf('permute', x);
  if (dims.length !== x.ndim) throw new ShapeError(`permute: ${dims.length} dims given for a tensor of shape ${fmt(x.shape)}`);
  const d = dims.map((v) => normDim('permute', v, x.ndim));
  if (new Set(d).size !== d.length) throw new ShapeError(`permute: dims ${fmt(dims)} repeat`);
  const out = new Tensor(x.storage, d.map((i) => x.shape[i]!), d.map((i) => x.strides[i]!), x.offset);
  const inverse = new Array<number>(d.length);
  d.forEach((v, i) => (inverse[v] = i));
  return record(out, 'permute', [x], (g) => [permute(g, inverse)]);
}

export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  const a = normDim('transpose', dim0, x.ndim);
  const b = normDim('transpose', dim1, x.ndim);
  const dims = x.shape.map((_, i) => i);
  dims[a] = b;
  dims[b] = a;
  return permute(x, dims);
}

/** Elements start ≤ i < end (step ≥ 1) along dim, as a view (like x[..., start:end:step]). */
export function slice(x: Tensor, dim: number, start: number, end?: number, step = 1): Tensor {
  backendOf('slice', x);
  const d = normDim('slice', dim, x.ndim);
  const n = x.shape[d]!;
  let s = start < 0 ? start + n : start;
  let e = end === undefined ? n : end < 0 ? end + n : end;
  s = Math.min(Math.max(s, 0), n);
  e = Math.min(Math.max(e, s), n);
  if (!Number.isInteger(step) || step < 1) throw new ShapeError(`slice: step must be a positive integer, got ${step}`);
  const len = Math.ceil((e - s) / step);
  const shape = [...x.shape];
  shape[d] = len;
  const strides = [...x.strides];
  strides[d] = x.strides[d]! * step;
  const out = new Tensor(x.storage, shape, strides, x.offset + s * x.strides[d]!);
  const inShape = x.shape;
  return record(out, 'slice', [x], (g) => {
    // Scatter g back into a zero tensor of the input's shape.
    const gx = zeroedLike(g, inShape);
    const target = slice(gx, d, s, e, step);
    g.backend.copyInto(g.storage, g.layout, gx.storage, target.layout);
    target.dispose();
    return [gx];
  });
}

/** Removes dim (which must have size 1), or all size-1 dims. */
export function squeeze(x: Tensor, dim?: number): Tensor {
  if (dim === undefined) return reshape(x, x.shape.filter((v) => v !== 1));
  const d = normDim('squeeze', dim, x.ndim);
  if (x.shape[d] !== 1) return x;
  return viewAs(x, x.shape.filter((_, i) => i !== d), x.strides.filter((_, i) => i !== d), 'squeeze');
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  const d = normDim('unsqueeze', dim, x.ndim + 1);
  const shape = [...x.shape];
  const strides = [...x.strides];
  shape.splice(d, 0, 1);
  strides.splice(d, 0, d < x.ndim ? x.strides[d]! * x.shape[d]! : 1);
  return viewAs(x, shape, strides, 'unsqueeze');
}

function viewAs(x: Tensor, shape: number[], strides: number[], op: string): Tensor {
  backendOf(op, x);
  const out = new Tensor(x.storage, shape, strides, x.offset);
  const inShape = x.shape;
  return record(out, op, [x], (g) => [reshape(g, inShape)]);
}

/** Broadcasts size-1 dims to `shape` without copying (stride 0), like torch.expand. -1 keeps a dim. */
export function expand(x: Tensor, shape: Shape): Tensor {
  backendOf('expand', x);
  if (shape.length < x.ndim) throw new ShapeError(`expand: cannot expand ${fmt(x.shape)} to ${fmt(shape)}`);
  const lead = shape.length - x.ndim;
  const outShape: number[] = [];
  const strides: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    const src = i - lead;
    const want = shape[i]!;
    if (src < 0) {
      outShape.push(want);
      strides.push(0);
      continue;
    }
    const have = x.shape[src]!;
    const size = want === -1 ? have : want;
    if (have !== size && have !== 1) throw new ShapeError(`expand: cannot expand ${fmt(x.shape)} to ${fmt(shape)}`);
    outShape.push(size);
    strides.push(have === size ? x.strides[src]! : 0);
  }
  if (sameShape(outShape, x.shape)) return x;
  const out = new Tensor(x.storage, outShape, strides, x.offset);
  const inShape = x.shape;
  return record(out, 'expand', [x], (g) => [sumToShape(g, inShape)]);
}

/** Sums a broadcast gradient back down to `shape`. */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.ndim - shape.length;
  const dims: number[] = [];
  for (let i = 0; i < g.ndim; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) dims.push(i);
  }
  const s = sum(g, dims, true);
  return reshape(s, shape);
}

// ---------------------------------------------------------------- element-wise

function broadcastLayouts(op: string, a: Tensor, b: Tensor): [number[], Tensor, Tensor] {
  const shape = broadcastShapes(op, a.shape, b.shape);
  return [shape, expandView(a, shape), expandView(b, shape)];
}

/** expand() without recording (layouts only, for the backend). */
function expandView(x: Tensor, shape: number[]): Tensor {
  return noGrad(() => expand(x, shape));
}

function scalarTensor(value: number, like: Tensor): Tensor {
  return new Tensor(like.backend.upload([value], like.dtype), []);
}

function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor | number): Tensor {
  const be = typeof b === 'number' ? backendOf(op, a) : backendOf(op, a, b);
  if (typeof b === 'number') {
    const out = like(a);
    be.binaryScalar(op, a.storage, a.layout, b, false, out.storage);
    return out;
  }
  sameDtype(op, a, b);
  const [shape, ea, eb] = broadcastLayouts(op, a, b);
  const out = like(a, shape);
  be.binary(op, a.storage, ea.layout, b.storage, eb.layout, out.storage);
  if (ea !== a) ea.dispose();
  if (eb !== b) eb.dispose();
  return out;
}

export function add(a: Tensor, b: Tensor | number): Tensor {
  const out = binaryRaw('add', a, b);
  if (typeof b === 'number') return record(out, 'add', [a], (g) => [g]);
  return record(out, 'add', [a, b], (g) => [sumToShape(g, a.shape), sumToShape(g, b.shape)]);
}

export function sub(a: Tensor, b: Tensor | number): Tensor {
  const out = binaryRaw('sub', a, b);
  if (typeof b === 'number') return record(out, 'sub', [a], (g) => [g]);
  return record(out, 'sub', [a, b], (g) => [sumToShape(g, a.shape), b.requiresGrad ? sumToShape(neg(g), b.shape) : null]);
}

/** s - a for a number s. */
export function rsub(a: Tensor, s: number): Tensor {
  const be = backendOf('rsub', a);
  const out = like(a);
  be.binaryScalar('sub', a.storage, a.layout, s, true, out.storage);
  return record(out, 'rsub', [a], (g) => [neg(g)]);
}

export function mul(a: Tensor, b: Tensor | number): Tensor {
  const out = binaryRaw('mul', a, b);
  if (typeof b === 'number') return record(out, 'mul', [a], (g) => [mul(g, b)]);
  return record(out, 'mul', [a, b], (g) => [
    a.requiresGrad ? sumToShape(mul(g, b), a.shape) : null,
    b.requiresGrad ? sumToShape(mul(g, a), b.shape) : null,
  ]);
}

export function div(a: Tensor, b: Tensor | number): Tensor {
  const out = binaryRaw('div', a, b);
  if (typeof b === 'number') return record(out, 'div', [a], (g) => [div(g, b)]);
  return record(out, 'div', [a, b], (g) => [
    a.requiresGrad ? sumToShape(div(g, b), a.shape) : null,
    // d(a/b)/db = -a/b² = -out/b
    b.requiresGrad ? sumToShape(neg(div(mul(g, out), b)), b.shape) : null,
  ]);
}

export function pow(a: Tensor, p: Tensor | number): Tensor {
  const out = binaryRaw('pow', a, p);
  if (typeof p === 'number') return record(out, 'pow', [a], (g) => [mul(g, mul(binaryRaw('pow', a, p - 1), p))]);
  return record(out, 'pow', [a, p], (g) => [
    a.requiresGrad ? sumToShape(mul(g, mul(p, pow(a, sub(p, 1)))), a.shape) : null,
    p.requiresGrad ? sumToShape(mul(g, mul(out, log(a))), p.shape) : null,
  ]);
}

export function maximum(a: Tensor, b: Tensor | number): Tensor {
  const out = binaryRaw('max', a, b);
  if (typeof b === 'number') return record(out, 'maximum', [a], (g) => [mul(g, binaryRaw('ge', a, b))]);
  return record(out, 'maximum', [a, b], (g) => [
    sumToShape(mul(g, binaryRaw('ge', a, b)), a.shape),
    sumToShape(mul(g, binaryRaw('lt', a, b)), b.shape),
  ]);
}

export function minimum(a: Tensor, b: Tensor | number): Tensor {
  const out = binaryRaw('min', a, b);
  if (typeof b === 'number') return record(out, 'minimum', [a], (g) => [mul(g, binaryRaw('le', a, b))]);
  return record(out, 'minimum', [a, b], (g) => [
    sumToShape(mul(g, binaryRaw('le', a, b)), a.shape),
    sumToShape(mul(g, binaryRaw('gt', a, b)), b.shape),
  ]);
}

/** Comparisons give 1 or 0 in a's dtype and have no gradient. */
export function compare(op: 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge', a: Tensor, b: Tensor | number): Tensor {
  return binaryRaw(op, a, b);
}

function unaryRaw(op: UnaryOp, x: Tensor): Tensor {
  const be = backendOf(op, x);
  if (op !== 'neg' && op !== 'abs' && op !== 'relu' && op !== 'sign' && op !== 'square') needFloat(op, x);
  const out = like(x);
  be.unary(op, x.storage, x.layout, out.storage);
  return out;
}

function unaryWithGradKernel(op: UnaryGradOp, x: Tensor): Tensor {
  const out = unaryRaw(op, x);
  return record(out, op, [x], (g) => {
    const xc = contiguous(x);
    const gc = contiguous(g);
    const gx = like(xc);
    x.backend.unaryBackward(op, xc.storage, gc.storage, gx.storage, x.size);
    return [gx];
  });
}

export function neg(x: Tensor): Tensor {
  return record(unaryRaw('neg', x), 'neg', [x], (g) => [neg(g)]);
}
export function exp(x: Tensor): Tensor {
  const out = unaryRaw('exp', x);
  return record(out, 'exp', [x], (g) => [mul(g, out)]);
}
export function log(x: Tensor): Tensor {
  return record(unaryRaw('log', x), 'log', [x], (g) => [div(g, x)]);
}
export function sqrt(x: Tensor): Tensor {
  const out = unaryRaw('sqrt', x);
  return record(out, 'sqrt', [x], (g) => [div(mul(g, 0.5), out)]);
}
export function rsqrt(x: Tensor): Tensor {
  const out = unaryRaw('rsqrt', x);
  // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 out³
  return record(out, 'rsqrt', [x], (g) => [mul(g, mul(pow(out, 3), -0.5))]);
}
export function abs(x: Tensor): Tensor {
  return record(unaryRaw('abs', x), 'abs', [x], (g) => [mul(g, unaryRaw('sign', x))]);
}
export function sin(x: Tensor): Tensor {
  return record(unaryRaw('sin', x), 'sin', [x], (g) => [mul(g, unaryRaw('cos', x))]);
}
export function cos(x: Tensor): Tensor {
  return record(unaryRaw('cos', x), 'cos', [x], (g) => [neg(mul(g, unaryRaw('sin', x)))]);
}
export function square(x: Tensor): Tensor {
  return record(unaryRaw('square', x), 'square', [x], (g) => [mul(g, mul(x, 2))]);
}
export function reciprocal(x: Tensor): Tensor {
  const out = unaryRaw('recip', x);
  return record(out, 'reciprocal', [x], (g) => [neg(mul(g, square(out)))]);
}
export function sign(x: Tensor): Tensor {
  return unaryRaw('sign', x);
}
export const tanh = (x: Tensor): Tensor => unaryWithGradKernel('tanh', x);
export const relu = (x: Tensor): Tensor => unaryWithGradKernel('relu', x);
export const sigmoid = (x: Tensor): Tensor => unaryWithGradKernel('sigmoid', x);
export const silu = (x: Tensor): Tensor => unaryWithGradKernel('silu', x);
/** elu(x) + 1, the positive feature map of linear attention. */
export const elu1 = (x: Tensor): Tensor => unaryWithGradKernel('elu1', x);
/** GELU; `approximate: 'tanh'` (GPT-2's, the default here) or 'none' (exact erf). */
export function gelu(x: Tensor, approximate: 'tanh' | 'none' = 'tanh'): Tensor {
  return unaryWithGradKernel(approximate === 'tanh' ? 'gelu' : 'gelu_erf', x);
}

/**
 * SwiGLU's gating, silu(gate) · up (Shazeer 2020; Llama's MLP), one fused pass each way where the
 * backend has it (float32, same shapes), else silu and mul.
 */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const be = backendOf('swiglu', gate, up);
  needFloat('swiglu', gate);
  sameDtype('swiglu', gate, up);
  if (!sameShape(gate.shape, up.shape)) throw new ShapeError(`swiglu: gate ${fmt(gate.shape)} and up ${fmt(up.shape)} differ`);
  const fwd = be.swiglu, bwd = be.swigluBackward;
  if (!fwd || !bwd || gate.dtype !== 'float32') return mul(silu(gate), up);
  const [gc, uc] = noGrad(() => [contiguous(gate), contiguous(up)]);
  const out = like(gate);
  fwd.call(be, gc.storage, uc.storage, gate.size, out.storage);
  return record(out, 'swiglu', [gate, up], (g) => {
    const gyc = contiguous(g);
    const gg = like(gate), gu = like(up);
    bwd.call(be, gc.storage, uc.storage, gyc.storage, gate.size, gg.storage, gu.storage);
    return [gg, gu];
  });
}

/**
 * Rotary position embedding (Su et al. 2021), half-split pairs (i, i + rd/2) as in GPT-NeoX and
 * Hugging Face's Llama: x is (B, T, H, D) ('bthd') or (B, H, T, D) ('bhtd'); its first rd
 * features (default D) at position p rotate by the angles whose cosines and sines are row p of
 * cos and sin (P, rd/2), p = offset … offset+T-1; the rest pass through. One fused pass each way
 * where the backend has it (float32), else slices, muls and a concat. No gradient flows to the
 * tables.
 */
export function rotary(x: Tensor, cos: Tensor, sin: Tensor, opts: { layout: 'bthd' | 'bhtd'; offset?: number; rotaryDim?: number }): Tensor {
  const be = backendOf('rotary', x, cos, sin);
  needFloat('rotary', x);
  if (x.ndim !== 4) throw new ShapeError(`rotary: x must be 4-D (B, T, H, D) or (B, H, T, D), got ${fmt(x.shape)}`);
  const [B, A1, A2, D] = x.shape as [number, number, number, number];
  const [T, H] = opts.layout === 'bthd' ? [A1, A2] : [A2, 1];
  const rd = opts.rotaryDim ?? D;
  const offset = opts.offset ?? 0;
  const half = rd / 2;
  if (!(Number.isInteger(half) && half >= 1 && rd <= D)) throw new ShapeError(`rotary: rotaryDim ${rd} must be even and at most the head size ${D}`);
  if (cos.ndim !== 2 || cos.shape[1] !== half || !sameShape(cos.shape, sin.shape)) throw new ShapeError(`rotary: cos ${fmt(cos.shape)} and sin ${fmt(sin.shape)} must both be (positions, ${half})`);
  if (offset < 0 || offset + T > cos.shape[0]!) throw new RangeError(`rotary: positions [${offset}, ${offset + T}) exceed the table of ${cos.shape[0]} positions`);
  const fused = be.rope;
  if (!fused || !be.supports(x.dtype) || x.dtype === 'float16' || x.dtype === 'bfloat16' || cos.dtype !== x.dtype || sin.dtype !== x.dtype) {
    // (T, rd/2) tables broadcast over the other axes: (T, 1, rd/2) in the bthd layout.
    const c0 = slice(cos, 0, offset, offset + T);
    const s0 = slice(sin, 0, offset, offset + T);
    const [c, sn] = opts.layout === 'bthd' ? [reshape(c0, [T, 1, half]), reshape(s0, [T, 1, half])] : [c0, s0];
    const x1 = slice(x, -1, 0, half);
    const x2 = slice(x, -1, half, rd);
    const rotated = [sub(mul(x1, c), mul(x2, sn)), add(mul(x2, c), mul(x1, sn))];
    return concat(rd === D ? rotated : [...rotated, slice(x, -1, rd)], -1);
  }
  // contiguous() also makes the tables start at element 0 of their storage, as the kernel reads them.
  const [xc, ct, st] = noGrad(() => [contiguous(x), contiguous(cos), contiguous(sin)]) as [Tensor, Tensor, Tensor];
  const rows = B * A1 * A2;
  const out = like(x);
  fused.call(be, xc.storage, ct.storage, st.storage, out.storage, rows, H, T, D, rd, offset, false);
  return record(out, 'rotary', [x], (g) => {
    const gc = contiguous(g);
    const gx = like(x);
    fused.call(be, gc.storage, ct.storage, st.storage, gx.storage, rows, H, T, D, rd, offset, true);
    return [gx];
  });
}

/** cond ? a : b, broadcasting all three; cond is nonzero/zero. */
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  const ref = typeof a !== 'number' ? a : typeof b !== 'number' ? b : null;
  const ta = typeof a === 'number' ? scalarTensor(a, ref ?? cond) : a;
  const tb = typeof b === 'number' ? scalarTensor(b, ref ?? ta) : b;
  const be = backendOf('where', cond, ta, tb);
  sameDtype('where', ta, tb);
  const shape = broadcastShapes('where', broadcastShapes('where', cond.shape, ta.shape), tb.shape);
  const ec = expandView(cond, shape);
  const ea = expandView(ta, shape);
  const eb = expandView(tb, shape);
  const out = like(ta, shape);
  be.where(cond.storage, ec.layout, ta.storage, ea.layout, tb.storage, eb.layout, out.storage);
  return record(out, 'where', [ta, tb], (g) => {
    const zero = scalarTensor(0, g);
    const r = [
      ta.requiresGrad ? sumToShape(where(cond, g, zero), ta.shape) : null,
      tb.requiresGrad ? sumToShape(where(cond, zero, g), tb.shape) : null,
    ];
    return r;
  });
}

/** x with `value` wherever mask is nonzero (mask broadcasts to x). */
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  return where(mask, value, x);
}

/** Converts dtype (float → int truncates toward zero). No gradient across dtypes. */
export function to(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  const be = backendOf('to', x);
  if (!be.supports(dtype)) throw new Error(`to: backend ${be.name} does not support ${dtype}`);
  if (isHalf(dtype)) {
    // Rounded on the host, to nearest with ties to even: the same bits on every backend (WGSL
    // leaves the rounding of pack2x16float to the implementation). Weights convert once.
    if (isHalf(x.dtype)) return to(to(x, 'float32'), dtype);
    const values = x.data();
    return new Tensor(be.upload(dtype === 'float16' ? toHalfBits(values) : toBf16Bits(values), dtype), x.shape);
  }
  if (isHalf(x.dtype)) {
    // Widening is exact: the backend converts (copy between dtypes), contiguous only.
    if (!x.isContiguous()) throw new Error(`to: a ${x.dtype} tensor must be contiguous to convert (shape ${fmt(x.shape)})`);
    const out = like(x, x.shape, 'float32');
    be.copy(x.storage, x.layout, out.storage);
    return dtype === 'float32' ? out : to(out, dtype);
  }
  const out = like(x, x.shape, dtype);
  be.copy(x.storage, x.layout, out.storage);
  return out;
}

/** Copies a tensor to another backend (values only). */
export function toBackend(x: Tensor, backend: Backend): Tensor {
  if (x.backend === backend) return x;
  return tensor(x.data(), { backend, dtype: x.dtype, shape: x.shape });
}

// ---------------------------------------------------------------- reductions

function reduceDim(op: 'sum' | 'max' | 'min' | 'argmax', x: Tensor, d: number): Tensor {
  const be = backendOf(op, x);
  const xc = contiguous(x);
  const outer = numel(x.shape.slice(0, d));
  const n = x.shape[d]!;
  const inner = numel(x.shape.slice(d + 1));
  const outShape = x.shape.map((v, i) => (i === d ? 1 : v));
  const out = like(x, outShape, op === 'argmax' ? 'int32' : x.dtype);
  be.reduce(op, xc.storage, outer, n, inner, out.storage);
  if (xc !== x) xc.dispose();
  return out;
}

function dimsOf(op: string, x: Tensor, dims?: number | readonly number[]): number[] {
  if (dims === undefined) return x.shape.map((_, i) => i);
  const list = typeof dims === 'number' ? [dims] : dims;
  return [...new Set(list.map((d) => normDim(op, d, x.ndim)))].sort((a, b) => a - b);
}

function keepdimShape(x: Tensor, dims: number[]): number[] {
  return x.shape.map((v, i) => (dims.includes(i) ? 1 : v));
}

/** Sum over dims (all when omitted). */
export function sum(x: Tensor, dims?: number | readonly number[], keepdim = false): Tensor {
  const ds = dimsOf('sum', x, dims);
  let out: Tensor = x;
  noGrad(() => {
    for (const d of ds) {
      const next = reduceDim('sum', out, d);
      if (out !== x) out.dispose();
      out = next;
    }
  });
  if (out === x) out = contiguous(x);
  const kShape = keepdimShape(x, ds);
  const result = keepdim ? out : reshapeRaw(out, x.shape.filter((_, i) => !ds.includes(i)));
  const inShape = x.shape;
  return record(result, 'sum', [x], (g) => [contiguous(expand(reshape(g, kShape), inShape))]);
}

function reshapeRaw(x: Tensor, shape: number[]): Tensor {
  return noGrad(() => reshape(x, shape));
}

export function mean(x: Tensor, dims?: number | readonly number[], keepdim = false): Tensor {
  const ds = dimsOf('mean', x, dims);
  const n = numel(ds.map((d) => x.shape[d]!));
  return div(sum(x, ds, keepdim), n);
}

/** Max over one dim (values); gradient flows to every position equal to the max. */
export function max(x: Tensor, dim?: number, keepdim = false): Tensor {
  return extremum('max', x, dim, keepdim);
}
export function min(x: Tensor, dim?: number, keepdim = false): Tensor {
  return extremum('min', x, dim, keepdim);
}

function extremum(op: 'max' | 'min', x: Tensor, dim: number | undefined, keepdim: boolean): Tensor {
  if (dim === undefined) return extremum(op, reshape(x, [x.size]), 0, false);
  const d = normDim(op, dim, x.ndim);
  const out = noGrad(() => reduceDim(op, x, d));
  const kShape = out.shape;
  const result = keepdim ? out : reshapeRaw(out, x.shape.filter((_, i) => i !== d));
  return record(result, op, [x], (g) => {
    const hit = compare('eq', x, expand(reshape(out, kShape), x.shape));
    return [mul(hit, expand(reshape(g, kShape), x.shape))];
  });
}

/** Inclusive prefix sum along dim (like torch.cumsum). */
export function cumsum(x: Tensor, dim: number): Tensor {
  const be = backendOf('cumsum', x);
  const d = normDim('cumsum', dim, x.ndim);
  const xc = noGrad(() => contiguous(x));
  const out = like(x);
  be.cumsum(xc.storage, numel(x.shape.slice(0, d)), x.shape[d]!, numel(x.shape.slice(d + 1)), out.storage);
  // The gradient of an inclusive prefix sum is the suffix sum: Σ_{j ≥ i} g_j = total − cumsum(g) + g.
  return record(out, 'cumsum', [x], (g) => [add(sub(expand(sum(g, d, true), g.shape), cumsum(g, d)), g)]);
}

export function argmax(x: Tensor, dim = -1, keepdim = false): Tensor {
  const d = normDim('argmax', dim, x.ndim);
  const out = reduceDim('argmax', x, d);
  return keepdim ? out : reshapeRaw(out, x.shape.filter((_, i) => i !== d));
}

// ---------------------------------------------------------------- matmul

interface MatOperand {
  t: Tensor;
  trans: boolean;
  ld: number;
}

/** Describes the last two dims as a row-major or transposed matrix the backend can read in place. */
function matOperand(t: Tensor): MatOperand {
  const n = t.ndim;
  const rows = t.shape[n - 2]!;
  const cols = t.shape[n - 1]!;
  const rs = t.strides[n - 2]!;
  const cs = t.strides[n - 1]!;
  // A size-1 dim's stride never matters; ld may be 0 (a broadcast row or column).
  if (cs === 1 || cols === 1) return { t, trans: false, ld: rows === 1 ? 0 : rs };
  if (rs === 1 || rows === 1) return { t, trans: true, ld: cols === 1 ? 0 : cs };
  return { t: contiguous(t), trans: false, ld: cols };
}

/** The single batch stride of dims [0, n-2) if they collapse to one, else null. */
function batchStride(t: Tensor): number | null {
  let stride: number | null = null;
  let expected = 0;
  for (let i = t.ndim - 3; i >= 0; i--) {
    const size = t.shape[i]!;
    if (size === 1) continue;
    if (stride === null) {
      stride = t.strides[i]!;
      expected = stride * size;
    } else {
      if (t.strides[i] !== expected) return null;
      expected *= size;
    }
  }
  return stride ?? 0;
}

/** Batched matrix product with broadcasting over leading dims (like torch.matmul). */
export function matmul(a: Tensor, b: Tensor): Tensor {
  const be = backendOf('matmul', a, b);
  if (!halfWeight(a, b)) {
    sameDtype('matmul', a, b);
    needFloat('matmul', a);
  }
  if (a.ndim === 0 || b.ndim === 0) throw new ShapeError(`matmul: scalar operands ${fmt(a.shape)} and ${fmt(b.shape)}`);
  if (a.ndim === 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.ndim === 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);
  const M = a.shape[a.ndim - 2]!;
  const K = a.shape[a.ndim - 1]!;
  const K2 = b.shape[b.ndim - 2]!;
  const N = b.shape[b.ndim - 1]!;
  if (K !== K2) throw new ShapeError(`matmul: shapes ${fmt(a.shape)} and ${fmt(b.shape)} do not match (inner dims ${K} and ${K2})`);
  const batchShape = broadcastShapes('matmul', a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batch = numel(batchShape);
  const out = like(a, [...batchShape, M, N]);
  noGrad(() => {
    const ea = expand(a, [...batchShape, M, K]);
    const eb = expand(b, [...batchShape, K, N]);
    const oa = matOperand(ea);
    const ob = matOperand(eb);
    let sa = batchStride(oa.t);
    let sb = batchStride(ob.t);
    const run = (A: MatOperand, B: MatOperand, aBS: number, bBS: number, batches: number, aOff: number, bOff: number, outStorage = out.storage) =>
      be.matmul({
        a: A.t.storage, aOffset: aOff, aBatchStride: aBS, transA: A.trans, lda: A.ld,
        b: B.t.storage, bOffset: bOff, bBatchStride: bBS, transB: B.trans, ldb: B.ld,
        out: outStorage, batch: batches, M, N, K, precision: matmulPrecision(),
      });
    if (sa !== null && sb !== null) {
      run(oa, ob, sa, sb, batch, oa.t.offset, ob.t.offset);
    } else {
      // Irregular batch layouts: make both contiguous so one stride covers the batch.
      const ca = matOperand(contiguous(ea));
      const cb = matOperand(contiguous(eb));
      sa = batchStride(ca.t) ?? M * K;
      sb = batchStride(cb.t) ?? K * N;
      run(ca, cb, sa, sb, batch, ca.t.offset, cb.t.offset);
    }
  });
  return record(out, 'matmul', [a, b], (g) => [
    a.requiresGrad ? sumToShape(matmul(g, transpose(b)), a.shape) : null,
    b.requiresGrad ? sumToShape(matmul(transpose(a), g), b.shape) : null,
  ]);
}

/**
 * y = x Wᵀ + b with W (out, in), as torch.nn.functional.linear; bias fused into the matmul. An
 * activation ('gelu': the tanh form, or 'relu') is fused into the matmul's epilogue when no
 * gradient is recorded (inference), and applied after it otherwise.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, activation?: 'gelu' | 'relu'): Tensor {
  if (activation && isGradEnabled() && (x.requiresGrad || weight.requiresGrad || !!bias?.requiresGrad)) {
    const y = linear(x, weight, bias);
    return activation === 'gelu' ? gelu(y, 'tanh') : relu(y);
  }
  const be = bias ? backendOf('linear', x, weight, bias) : backendOf('linear', x, weight);
  needFloat('linear', x);
  if (weight.dtype !== x.dtype && !halfWeight(x, weight)) sameDtype('linear', x, weight);
  if (weight.ndim !== 2) throw new ShapeError(`linear: weight must be 2-D (out, in), got ${fmt(weight.shape)}`);
  const [outF, inF] = weight.shape as [number, number];
  if (x.shape[x.ndim - 1] !== inF) throw new ShapeError(`linear: input ${fmt(x.shape)} does not match weight ${fmt(weight.shape)} (expected last dim ${inF})`);
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== outF)) throw new ShapeError(`linear: bias ${fmt(bias.shape)} does not match weight ${fmt(weight.shape)}`);
  const rows = x.size / inF;
  const outShape = [...x.shape.slice(0, -1), outF];
  const out = like(x, outShape);
  noGrad(() => {
    const x2 = matOperand(reshape(x, [rows, inF]));
    const w = matOperand(transpose(weight)); // (in, out) view of W: read in place
    const bc = bias ? contiguous(bias) : null;
    be.matmul({
      a: x2.t.storage, aOffset: x2.t.offset, aBatchStride: 0, transA: x2.trans, lda: x2.ld,
      b: w.t.storage, bOffset: w.t.offset, bBatchStride: 0, transB: w.trans, ldb: w.ld,
      out: out.storage, batch: 1, M: rows, N: outF, K: inF, bias: bc?.storage ?? null, precision: matmulPrecision(), activation,
    });
  });
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return record(out, 'linear', inputs, (g) => {
    const g2 = reshape(g, [rows, outF]);
    const x2 = reshape(x, [rows, inF]);
    return [
      x.requiresGrad ? reshape(matmul(g2, weight), x.shape) : null, // (rows, out) @ (out, in)
      weight.requiresGrad ? matmul(transpose(g2), x2) : null, // (out, rows) @ (rows, in)
      bias?.requiresGrad ? sum(g2, 0) : null,
    ];
  });
}

// ---------------------------------------------------------------- softmax and norms

/** Softmax along dim (last by default). */
export function softmax(x: Tensor, dim = -1): Tensor {
  return softmaxImpl(x, dim, false);
}
export function logSoftmax(x: Tensor, dim = -1): Tensor {
  return softmaxImpl(x, dim, true);
}

function softmaxImpl(x: Tensor, dim: number, logMode: boolean): Tensor {
  const op = logMode ? 'logSoftmax' : 'softmax';
  const be = backendOf(op, x);
  needFloat(op, x);
  const d = normDim(op, dim, x.ndim);
  if (d !== x.ndim - 1) {
    // Move dim last, run, move back.
    return transpose(softmaxImpl(transpose(x, d, -1), -1, logMode), d, -1);
  }
  const n = x.shape[d]!;
  const rows = x.size / n;
  const xc = noGrad(() => contiguous(x));
  const out = like(x);
  be.softmax(xc.storage, rows, n, logMode, out.storage);
  return record(out, op, [x], (g) => {
    const gc = contiguous(g);
    const gx = like(out);
    be.softmaxBackward(out.storage, gc.storage, rows, n, logMode, gx.storage);
    return [gx];
  });
}

/** LayerNorm over the last dim with optional weight and bias (length C). */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const ts = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  const be = backendOf('layerNorm', ...ts);
  needFloat('layerNorm', x);
  const n = x.shape[x.ndim - 1]!;
  for (const [p, name] of [[weight, 'weight'], [bias, 'bias']] as const) {
    if (p && (p.ndim !== 1 || p.shape[0] !== n)) throw new ShapeError(`layerNorm: ${name} ${fmt(p.shape)} does not match input ${fmt(x.shape)}`);
  }
  const rows = x.size / n;
  const xc = noGrad(() => contiguous(x));
  const wc = weight ? noGrad(() => contiguous(weight)) : null;
  const bc = bias ? noGrad(() => contiguous(bias)) : null;
  const out = like(x);
  const meanT = like(x, [rows]);
  const rstd = like(x, [rows]);
  be.layerNorm(xc.storage, wc?.storage ?? null, bc?.storage ?? null, rows, n, eps, out.storage, meanT.storage, rstd.storage);
  if (!isGradEnabled() || !ts.some((t) => t.requiresGrad)) {
    meanT.dispose();
    rstd.dispose();
    return out;
  }
  return record(out, 'layerNorm', ts, (g) => {
    const gc = contiguous(g);
    const gx = like(x);
    const gw = weight ? like(weight) : null;
    const gb = bias ? like(bias) : null;
    be.layerNormBackward(xc.storage, wc?.storage ?? null, meanT.storage, rstd.storage, gc.storage, rows, n, gx.storage, gw?.storage ?? null, gb?.storage ?? null);
    const r: (Tensor | null)[] = [gx];
    if (weight) r.push(gw);
    if (bias) r.push(gb);
    return r;
  });
}

/** RMSNorm over the last dim: x / sqrt(mean(x²) + eps) * weight. */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps = 1e-6): Tensor {
  const ts = [x, ...(weight ? [weight] : [])];
  const be = backendOf('rmsNorm', ...ts);
  needFloat('rmsNorm', x);
  const n = x.shape[x.ndim - 1]!;
  if (weight && (weight.ndim !== 1 || weight.shape[0] !== n)) throw new ShapeError(`rmsNorm: weight ${fmt(weight.shape)} does not match input ${fmt(x.shape)}`);
  const rows = x.size / n;
  const xc = noGrad(() => contiguous(x));
  const wc = weight ? noGrad(() => contiguous(weight)) : null;
  const out = like(x);
  const rstd = like(x, [rows]);
  be.rmsNorm(xc.storage, wc?.storage ?? null, rows, n, eps, out.storage, rstd.storage);
  return record(out, 'rmsNorm', ts, (g) => {
    const gc = contiguous(g);
    const gx = like(x);
    const gw = weight ? like(weight) : null;
    be.rmsNormBackward(xc.storage, wc?.storage ?? null, rstd.storage, gc.storage, rows, n, gx.storage, gw?.storage ?? null);
    return weight ? [gx, gw] : [gx];
  });
}

// ---------------------------------------------------------------- indexing

function needInt(op: string, t: Tensor): void {
  if (t.dtype !== 'int32') throw new Error(`${op}: indices must be int32, got ${t.dtype}`);
}

/** Rows of weight (V, C) picked by integer ids of any shape → (...ids.shape, C). */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  const be = backendOf('embedding', weight, ids);
  needInt('embedding', ids);
  if (weight.ndim !== 2) throw new ShapeError(`embedding: weight must be 2-D (V, C), got ${fmt(weight.shape)}`);
  const [V, C] = weight.shape as [number, number];
  const idc = contiguous(ids);
  if (isHalf(weight.dtype) && !weight.isContiguous()) throw new Error(`embedding: a ${weight.dtype} weight must be contiguous (shape ${fmt(weight.shape)})`);
  const wc = noGrad(() => contiguous(weight));
  // A half-stored table gives float32 rows.
  const out = like(weight, [...ids.shape, C], isHalf(weight.dtype) ? 'float32' : undefined);
  be.embedding(wc.storage, V, C, idc.storage, ids.size, out.storage);
  return record(out, 'embedding', [weight], (g) => {
    const gc = contiguous(g);
    const gw = zeroedLike(weight);
    be.embeddingBackward(gc.storage, idc.storage, ids.size, V, C, gw.storage);
    return [gw];
  });
}

/** torch.gather: out[..., j, ...] = x[..., index[..., j, ...], ...] along dim. */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  const be = backendOf('gather', x, index);
  needInt('gather', index);
  const d = normDim('gather', dim, x.ndim);
  if (index.ndim !== x.ndim || index.shape.some((v, i) => i !== d && v !== x.shape[i])) {
    throw new ShapeError(`gather: index ${fmt(index.shape)} must match input ${fmt(x.shape)} except along dim ${d}`);
  }
  const outer = numel(x.shape.slice(0, d));
  const n = x.shape[d]!;
  const inner = numel(x.shape.slice(d + 1));
  const k = index.shape[d]!;
  const xc = noGrad(() => contiguous(x));
  const ic = contiguous(index);
  const out = like(x, index.shape);
  be.gather(xc.storage, outer, n, inner, ic.storage, k, out.storage);
  return record(out, 'gather', [x], (g) => {
    const gc = contiguous(g);
    const gx = zeroedLike(x);
    be.scatterAdd(gc.storage, outer, n, inner, ic.storage, k, gx.storage);
    return [gx];
  });
}

/** One-hot float32 rows for int32 ids: (...ids.shape, numClasses). */
export function oneHot(ids: Tensor, numClasses: number): Tensor {
  needInt('oneHot', ids);
  const v = ids.data();
  const out = new Float32Array(v.length * numClasses);
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c < 0 || c >= numClasses) throw new RangeError(`oneHot: index ${c} at position ${i} is out of range [0, ${numClasses})`);
    out[i * numClasses + c] = 1;
  }
  return tensor(out, { backend: ids.backend, shape: [...ids.shape, numClasses] });
}

// ---------------------------------------------------------------- joining and splitting

export function concat(ts: readonly Tensor[], dim = 0): Tensor {
  if (ts.length === 0) throw new ShapeError('concat: no tensors given');
  const be = backendOf('concat', ...ts);
  const first = ts[0]!;
  const d = normDim('concat', dim, first.ndim);
  let total = 0;
  for (const t of ts) {
    sameDtype('concat', first, t);
    if (t.ndim !== first.ndim || t.shape.some((v, i) => i !== d && v !== first.shape[i])) {
      throw new ShapeError(`concat: shapes ${fmt(first.shape)} and ${fmt(t.shape)} differ outside dim ${d}`);
    }
    total += t.shape[d]!;
  }
  const shape = [...first.shape];
  shape[d] = total;
  const out = like(first, shape);
  const offsets: number[] = [];
  noGrad(() => {
    let off = 0;
    for (const t of ts) {
      offsets.push(off);
      const target = slice(out, d, off, off + t.shape[d]!);
      be.copyInto(t.storage, t.layout, out.storage, target.layout);
      target.dispose();
      off += t.shape[d]!;
    }
  });
  return record(out, 'concat', [...ts], (g) => ts.map((t, i) => (t.requiresGrad ? slice(g, d, offsets[i]!, offsets[i]! + t.shape[d]!) : null)));
}

export function stack(ts: readonly Tensor[], dim = 0): Tensor {
  if (ts.length === 0) throw new ShapeError('stack: no tensors given');
  const d = normDim('stack', dim, ts[0]!.ndim + 1);
  for (const t of ts) if (!sameShape(t.shape, ts[0]!.shape)) throw new ShapeError(`stack: shapes ${fmt(ts[0]!.shape)} and ${fmt(t.shape)} differ`);
  return concat(ts.map((t) => unsqueeze(t, d)), d);
}

/** Splits along dim into chunks of `size` (a number) or of the given sizes; views. */
export function split(x: Tensor, size: number | readonly number[], dim = 0): Tensor[] {
  const d = normDim('split', dim, x.ndim);
  const n = x.shape[d]!;
  const sizes: number[] = [];
  if (typeof size === 'number') {
    if (!(size > 0)) throw new ShapeError(`split: chunk size must be positive, got ${size}`);
    for (let s = 0; s < n; s += size) sizes.push(Math.min(size, n - s));
  } else {
    if (size.reduce((a, b) => a + b, 0) !== n) throw new ShapeError(`split: sizes ${fmt(size)} do not add up to dim ${d} of ${fmt(x.shape)}`);
    sizes.push(...size);
  }
  const out: Tensor[] = [];
  let off = 0;
  for (const s of sizes) {
    out.push(slice(x, d, off, off + s));
    off += s;
  }
  return out;
}

/** Zeroes elements above diagonal k of the last two dims (like torch.tril). */
export function tril(x: Tensor, k = 0): Tensor {
  const rows = x.shape[x.ndim - 2]!;
  const cols = x.shape[x.ndim - 1]!;
  const mask = trilMask(rows, cols, k, { backend: x.backend, dtype: x.dtype });
  return where(mask, x, 0);
}

// ---------------------------------------------------------------- losses and regularisation

export interface CrossEntropyOptions {
  ignoreIndex?: number;
  labelSmoothing?: number;
  reduction?: 'mean' | 'sum' | 'none';
}

/** Cross-entropy of logits (..., V) against int32 targets (...), fused with log-softmax. */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const be = backendOf('crossEntropy', logits, targets);
  needFloat('crossEntropy', logits);
  needInt('crossEntropy', targets);
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const eps = opts.labelSmoothing ?? 0;
  const reduction = opts.reduction ?? 'mean';
  const V = logits.shape[logits.ndim - 1]!;
  const N = logits.size / V;
  if (targets.size !== N || !sameShape(targets.shape, logits.shape.slice(0, -1))) {
    throw new ShapeError(`crossEntropy: targets ${fmt(targets.shape)} do not match logits ${fmt(logits.shape)} (expected ${fmt(logits.shape.slice(0, -1))})`);
  }
  const xc = noGrad(() => contiguous(logits));
  const tc = contiguous(targets);
  const losses = like(logits, targets.shape);
  const lse = like(logits, [N]);
  be.crossEntropy(xc.storage, tc.storage, N, V, ignoreIndex, eps, losses.storage, lse.storage);
  // 'mean' divides by the number of targets not ignored, counted on the backend: reading the
  // targets back would stall a GPU in the middle of every forward pass.
  const count = reduction === 'mean' ? noGrad(() => maximum(to(sum(compare('ne', tc, ignoreIndex)), logits.dtype), 1)) : null;
  let result: Tensor;
  if (reduction === 'none') result = losses;
  else {
    result = noGrad(() => sum(losses));
    if (count) {
      const r = noGrad(() => div(result, count));
      result.dispose();
      result = r;
    }
    losses.dispose();
  }
  return record(result, 'crossEntropy', [logits], (g) => {
    // Per-row upstream scale: g itself ('none'), or the scalar g spread over rows.
    const scale = reduction === 'none' ? contiguous(g) : contiguous(expand(reshape(count ? div(g, count) : g, [1]), [N]));
    const gx = like(logits);
    be.crossEntropyBackward(xc.storage, tc.storage, lse.storage, scale.storage, N, V, ignoreIndex, eps, gx.storage);
    return [gx];
  });
}

/** Inverted dropout: zeroes a fraction p and scales the rest by 1/(1-p); identity when not training. */
export function dropout(x: Tensor, p: number, training = true, generator: Generator = defaultGenerator): Tensor {
  if (!training || p === 0) return x;
  if (p < 0 || p >= 1) throw new RangeError(`dropout: p must be in [0, 1), got ${p}`);
  // The mask is drawn on the backend from a 64-bit key taken from the generator, so the
  // generator advances by two draws per call, whatever the size (resumable, and no upload).
  const seed0 = generator.nextUint32();
  const seed1 = generator.nextUint32();
  const storage = x.backend.alloc(x.dtype, x.size, true); // the mask kernel writes every element
  x.backend.dropoutMask(storage, x.size, p, 1 / (1 - p), seed0, seed1);
  const mask = new Tensor(storage, x.shape);
  return mul(x, mask);
}

// ---------------------------------------------------------------- attention

export interface AttentionOptions {
  causal?: boolean;
  /** (B, Tk) int32, 1 = attend, 0 = padding. */
  keyMask?: Tensor | null;
  /** Defaults to 1/sqrt(D). */
  scale?: number;
  /** Sparse pattern (local window, strided or fixed; see AttentionSparsity), ANDed with causal
   *  and keyMask. Masked-out key blocks are never computed. */
  sparsity?: AttentionSparsity | null;
}

/** Fused scaled dot-product attention over (B, H, T, D) tensors; never stores the T×T matrix. */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const be = backendOf('attention', q, k, v);
  needFloat('attention', q);
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) {
    throw new ShapeError(`attention: q, k, v must be 4-D (B, H, T, D), got ${fmt(q.shape)}, ${fmt(k.shape)}, ${fmt(v.shape)}`);
  }
  const [B, H, Tq, D] = q.shape as [number, number, number, number];
  const [, Hkv, Tk] = k.shape as [number, number, number, number];
  if (!sameShape(k.shape, [B, Hkv, Tk, D]) || !sameShape(v.shape, k.shape) || H % Hkv !== 0) {
    throw new ShapeError(`attention: q ${fmt(q.shape)}, k ${fmt(k.shape)} and v ${fmt(v.shape)} do not match (k and v: (B, Hkv, Tk, D) with H a multiple of Hkv)`);
  }
  if (Hkv !== H && !be.groupedKV) {
    // Grouped-query attention on a backend without it: each kv head repeated for its group.
    const rep = (t: Tensor): Tensor => reshape(expand(unsqueeze(t, 2), [B, Hkv, H / Hkv, Tk, D]), [B, H, Tk, D]);
    return scaledDotProductAttention(q, rep(k), rep(v), opts);
  }
  const mask = opts.keyMask ?? null;
  if (mask) {
    needInt('attention', mask);
    if (!sameShape(mask.shape, [B, Tk])) throw new ShapeError(`attention: keyMask ${fmt(mask.shape)} must be (B, Tk) = ${fmt([B, Tk])}`);
  }
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const causal = opts.causal ?? false;
  const sparsity = opts.sparsity ?? null;
  checkSparsity('attention', sparsity);
  const strided = be.stridedAttention === true;
  // A backend that reads strided operands gets q, k, v in place when their last dim is
  // contiguous (the heads of one qkv projection are), and writes out in (B, T, H, D) order so
  // that merging the heads back costs nothing.
  const inPlace = (t: Tensor): Tensor => (strided && (t.strides[3] === 1 || D === 1) ? t : contiguous(t));
  const [qc, kc, vc] = noGrad(() => [inPlace(q), inPlace(k), inPlace(v)]);
  const mc = mask ? contiguous(mask) : null;
  const out = strided ? new Tensor(be.alloc(q.dtype, q.size, true), [B, H, Tq, D], [Tq * H * D, D, H * D, 1]) : like(q);
  const lse = like(q, [B, H, Tq]);
  const viewOf = (t: Tensor) => ({ offset: t.offset, strides: [t.strides[0]!, t.strides[1]!, t.strides[2]!] as const });
  const views = strided ? { q: viewOf(qc), k: viewOf(kc), v: viewOf(vc), out: viewOf(out) } : null;
  const base = { q: qc.storage, k: kc.storage, v: vc.storage, out: out.storage, lse: lse.storage, B, H, Hkv, Tq, Tk, D, scale, causal, keyMask: mc?.storage ?? null, sparsity, views };
  be.attention(base);
  if (!isGradEnabled() || ![q, k, v].some((t) => t.requiresGrad)) {
    lse.dispose();
    return out;
  }
  return record(out, 'attention', [q, k, v], (g) => {
    const gc = contiguous(g);
    const gq = like(q);
    const gk = like(k);
    const gv = like(v);
    be.attentionBackward({ ...base, gout: gc.storage, gq: gq.storage, gk: gk.storage, gv: gv.storage });
    return [gq, gk, gv];
  });
}
