// Reference kernels: plain loops over typed arrays, one function per Backend operation.
// They are the specification of every op (the fast backends are tested against them) and
// what float64 gradient checks run on, so they favour clarity over speed. Every sum is
// accumulated in a JS number (float64), whatever the storage dtype; results are rounded
// only when stored.
import type {
  Activation, AdamWArgs, AttentionArgs, BinaryOp, Layout, MatmulArgs, ReduceOp, UnaryGradOp, UnaryOp,
} from '../backend.js';
import { checkSparsity } from '../backend.js';
import type { TypedArray } from '../../tensor/dtype.js';
import { contiguousStrides, fmt, numel, sameShape } from '../../tensor/shape.js';

// ---------------------------------------------------------------------------------------
// Layouts
// ---------------------------------------------------------------------------------------

/** The contiguous layout of `shape` starting at element `offset`. */
export function contiguousLayout(shape: readonly number[], offset = 0): Layout {
  return { shape, strides: contiguousStrides(shape), offset };
}

/** Smallest and largest element offset a layout touches; null when it has no elements. */
export function layoutExtent(l: Layout): { min: number; max: number } | null {
  if (numel(l.shape) === 0) return null;
  let min = l.offset;
  let max = l.offset;
  for (let d = 0; d < l.shape.length; d++) {
    const reach = (l.shape[d]! - 1) * l.strides[d]!;
    if (reach < 0) min += reach;
    else max += reach;
  }
  return { min, max };
}

/**
 * Visits every index of `shape` in row-major order, passing the flat output index i and
 * the element offset of that index in each layout (all layouts have `shape`). The offsets
 * are kept incrementally, odometer style, rather than recomputed from the index.
 */
export function walkLayouts(
  shape: readonly number[], layouts: readonly Layout[], visit: (i: number, offsets: readonly number[]) => void,
): void {
  for (const l of layouts) {
    if (l.shape.length !== l.strides.length || !sameShape(l.shape, shape)) {
      throw new Error(`layout of shape ${fmt(l.shape)} (strides ${fmt(l.strides)}) does not match ${fmt(shape)}`);
    }
  }
  const n = numel(shape);
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  const offsets = layouts.map((l) => l.offset);
  for (let i = 0; i < n; i++) {
    visit(i, offsets);
    // Advance the last dim; on wrap, rewind it and carry into the one before.
    for (let d = rank - 1; d >= 0; d--) {
      index[d]!++;
      for (let t = 0; t < layouts.length; t++) offsets[t]! += layouts[t]!.strides[d]!;
      if (index[d]! < shape[d]!) break;
      for (let t = 0; t < layouts.length; t++) offsets[t]! -= layouts[t]!.strides[d]! * shape[d]!;
      index[d] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Memory and element-wise ops
// ---------------------------------------------------------------------------------------

/** out[outLayout(i)] = x[xLayout(i)]. Storing into another dtype converts (Int32Array truncates). */
export function copyInto(x: TypedArray, xl: Layout, out: TypedArray, outLayout: Layout): void {
  walkLayouts(xl.shape, [xl, outLayout], (_i, [xo, oo]) => {
    out[oo!] = x[xo!]!;
  });
}

/** out[i] = x[layout(i)], out contiguous from element 0. */
export function copy(x: TypedArray, xl: Layout, out: TypedArray): void {
  copyInto(x, xl, out, contiguousLayout(xl.shape));
}

export function fill(out: TypedArray, value: number, offset: number, n: number): void {
  out.fill(value, offset, offset + n);
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GELU_C = 0.044715;
const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_PI = 1 / Math.sqrt(Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Logistic function, written so exp never overflows. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/**
 * erf(x) = 2/√π e^{-x²} Σ_{n≥0} (2x²)^n x / (1·3·…·(2n+1)). Every term is positive, so there
 * is no cancellation; used for |x| < 1.25 where it converges in a few dozen terms.
 */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x;
  let sum = x;
  for (let n = 1; n < 500; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (Math.abs(term) <= Math.abs(sum) * 1e-17) break;
  }
  return 2 * INV_SQRT_PI * Math.exp(-x2) * sum;
}

/**
 * erfc(x) for x ≥ 1.25 from the continued fraction of the upper incomplete gamma function
 * (erfc(x) = Γ(1/2, x²)/√π):
 *   erfc(x) = x e^{-x²}/√π · 1/(z + 1/2 − (1·1/2)/(z + 5/2 − (2·3/2)/(z + 9/2 − …))),  z = x²,
 * i.e. partial numerators a_i = −i(i − 1/2) and denominators b_i = z + 1/2 + 2i, evaluated
 * front to back with the modified Lentz method until a step changes the value by < 1 ulp.
 */
function erfcContinuedFraction(x: number): number {
  const z = x * x;
  const tiny = 1e-300;
  let b = z + 0.5;
  let c = 1 / tiny;
  let d = 1 / b;
  let f = d;
  for (let i = 1; i < 1000; i++) {
    const a = -i * (i - 0.5);
    b += 2;
    d = a * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + a / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return x * Math.exp(-z) * INV_SQRT_PI * f;
}

/** The error function, accurate to a few ulp in float64. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return x;
  const ax = Math.abs(x);
  if (ax < 1.25) return erfSeries(x);
  if (ax > 6) return Math.sign(x); // erfc(6) < 2.2e-17: below half an ulp of 1
  const r = 1 - erfcContinuedFraction(ax);
  return x < 0 ? -r : r;
}

/** The complementary error function 1 − erf(x), without cancellation for large x. */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return x;
  if (Math.abs(x) < 1.25) return 1 - erfSeries(x);
  if (x > 27) return 0; // underflows
  if (x < -6) return 2;
  return x > 0 ? erfcContinuedFraction(x) : 2 - erfcContinuedFraction(-x);
}

/** Standard normal CDF Φ(x) = erfc(−x/√2)/2, accurate in the left tail too. */
export function normalCdf(x: number): number {
  return 0.5 * erfc(-x * SQRT1_2);
}

function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x)));
}

/** f(x) for one element. */
export function unaryScalar(op: UnaryOp, x: number): number {
  switch (op) {
    case 'neg': return -x;
    case 'exp': return Math.exp(x);
    case 'log': return Math.log(x);
    case 'sqrt': return Math.sqrt(x);
    case 'rsqrt': return 1 / Math.sqrt(x);
    case 'tanh': return Math.tanh(x);
    case 'relu': return x > 0 ? x : (Number.isNaN(x) ? x : 0);
    case 'gelu': return geluTanh(x);
    case 'gelu_erf': return x * normalCdf(x);
    case 'silu': return x * sigmoid(x);
    case 'sigmoid': return sigmoid(x);
    case 'abs': return Math.abs(x);
    case 'sin': return Math.sin(x);
    case 'cos': return Math.cos(x);
    case 'square': return x * x;
    case 'recip': return 1 / x;
    case 'sign': return Math.sign(x);
    case 'elu1': return x > 0 ? x + 1 : Math.exp(x);
  }
}

/** f'(x) for one element. */
export function unaryDerivative(op: UnaryGradOp, x: number): number {
  switch (op) {
    case 'relu': return x > 0 ? 1 : 0;
    case 'gelu': {
      // f = x/2 (1 + tanh u), u = √(2/π)(x + c x³): f' = (1 + t)/2 + x/2 (1 − t²) u'
      const t = Math.tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
      const du = SQRT_2_OVER_PI * (1 + 3 * GELU_C * x * x);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du;
    }
    case 'gelu_erf': return normalCdf(x) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    case 'silu': {
      const s = sigmoid(x);
      return s * (1 + x * (1 - s));
    }
    case 'sigmoid': {
      const s = sigmoid(x);
      return s * (1 - s);
    }
    case 'tanh': {
      const t = Math.tanh(x);
      return 1 - t * t;
    }
    case 'elu1': return x > 0 ? 1 : Math.exp(x);
  }
}

export function unary(op: UnaryOp, x: TypedArray, xl: Layout, out: TypedArray): void {
  walkLayouts(xl.shape, [xl], (i, [xo]) => {
    out[i] = unaryScalar(op, x[xo!]!);
  });
}

/** gx = gy * f'(x) over n contiguous elements. */
export function unaryBackward(op: UnaryGradOp, x: TypedArray, gy: TypedArray, gx: TypedArray, n: number): void {
  for (let i = 0; i < n; i++) gx[i] = gy[i]! * unaryDerivative(op, x[i]!);
}

/** a op b for one pair; comparisons give 1 or 0. */
export function binaryScalarOp(op: BinaryOp, a: number, b: number): number {
  switch (op) {
    case 'add': return a + b;
    case 'sub': return a - b;
    case 'mul': return a * b;
    case 'div': return a / b;
    case 'pow': return Math.pow(a, b);
    case 'max': return Math.max(a, b);
    case 'min': return Math.min(a, b);
    case 'eq': return a === b ? 1 : 0;
    case 'ne': return a !== b ? 1 : 0;
    case 'lt': return a < b ? 1 : 0;
    case 'le': return a <= b ? 1 : 0;
    case 'gt': return a > b ? 1 : 0;
    case 'ge': return a >= b ? 1 : 0;
  }
}

/** out[i] = a[al(i)] op b[bl(i)]; both layouts already have the output shape. */
export function binary(op: BinaryOp, a: TypedArray, al: Layout, b: TypedArray, bl: Layout, out: TypedArray): void {
  walkLayouts(al.shape, [al, bl], (i, [ao, bo]) => {
    out[i] = binaryScalarOp(op, a[ao!]!, b[bo!]!);
  });
}

/** out[i] = a[al(i)] op s, or s op a[al(i)] when reversed. */
export function binaryScalar(op: BinaryOp, a: TypedArray, al: Layout, s: number, reversed: boolean, out: TypedArray): void {
  walkLayouts(al.shape, [al], (i, [ao]) => {
    const v = a[ao!]!;
    out[i] = reversed ? binaryScalarOp(op, s, v) : binaryScalarOp(op, v, s);
  });
}

export function where(
  cond: TypedArray, cl: Layout, a: TypedArray, al: Layout, b: TypedArray, bl: Layout, out: TypedArray,
): void {
  walkLayouts(cl.shape, [cl, al, bl], (i, [co, ao, bo]) => {
    out[i] = cond[co!] !== 0 ? a[ao!]! : b[bo!]!;
  });
}

// ---------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------

/**
 * Reduce the middle axis of contiguous x (outer, n, inner) into out (outer, inner).
 * max/min propagate NaN; argmax returns the first maximum (a NaN counts as the maximum).
 */
/** Inclusive prefix sums along the middle axis of (outer, n, inner), accumulated in float64. */
export function cumsum(x: TypedArray, outer: number, n: number, inner: number, out: TypedArray): void {
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) {
        const at = (o * n + j) * inner + i;
        s += x[at]!;
        out[at] = s;
      }
    }
  }
}

export function reduce(op: ReduceOp, x: TypedArray, outer: number, n: number, inner: number, out: TypedArray): void {
  if (op === 'argmax' && n === 0) throw new RangeError('reduce: argmax over an empty axis');
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (j: number): number => x[(o * n + j) * inner + i]!;
      let result: number;
      switch (op) {
        case 'sum': {
          let s = 0;
          for (let j = 0; j < n; j++) s += at(j);
          result = s;
          break;
        }
        case 'max': {
          let m = -Infinity;
          for (let j = 0; j < n; j++) if (at(j) > m || Number.isNaN(at(j))) m = at(j);
          result = m;
          break;
        }
        case 'min': {
          let m = Infinity;
          for (let j = 0; j < n; j++) if (at(j) < m || Number.isNaN(at(j))) m = at(j);
          result = m;
          break;
        }
        case 'argmax': {
          let best = 0;
          for (let j = 1; j < n; j++) {
            if (Number.isNaN(at(best))) break;
            if (at(j) > at(best) || Number.isNaN(at(j))) best = j;
          }
          result = best;
          break;
        }
      }
      out[o * inner + i] = result;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Matmul
// ---------------------------------------------------------------------------------------

/** MatmulArgs with the storages replaced by their arrays. */
export interface MatmulArrays extends Omit<MatmulArgs, 'a' | 'b' | 'out' | 'bias'> {
  a: TypedArray; b: TypedArray; out: TypedArray; bias?: TypedArray | null;
}

export function activate(act: Activation, v: number): number {
  switch (act) {
    case 'none': return v;
    case 'relu': return v > 0 ? v : (Number.isNaN(v) ? v : 0);
    case 'gelu': return geluTanh(v);
  }
}

/** out[b, m, n] = act(Σ_k A[b, m, k] B[b, k, n] + bias[n]) (+ out[b, m, n] when accumulating). */
export function matmul(p: MatmulArrays): void {
  const { a, b, out, batch, M, N, K } = p;
  // Element strides of A along m and k, and of B along k and n.
  const aM = p.transA ? 1 : p.lda;
  const aK = p.transA ? p.lda : 1;
  const bK = p.transB ? 1 : p.ldb;
  const bN = p.transB ? p.ldb : 1;
  const act = p.activation ?? 'none';
  for (let bt = 0; bt < batch; bt++) {
    const aBase = p.aOffset + bt * p.aBatchStride;
    const bBase = p.bOffset + bt * p.bBatchStride;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[aBase + m * aM + k * aK]! * b[bBase + k * bK + n * bN]!;
        if (p.bias) s += p.bias[n]!;
        const o = (bt * M + m) * N + n;
        out[o] = p.accumulate ? out[o]! + activate(act, s) : activate(act, s);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Row kernels over contiguous (rows, n)
// ---------------------------------------------------------------------------------------

/** Softmax or log-softmax of each row, shifted by the row max so exp cannot overflow. */
export function softmax(x: TypedArray, rows: number, n: number, log: boolean, out: TypedArray): void {
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    let max = -Infinity;
    for (let j = 0; j < n; j++) max = Math.max(max, x[base + j]!);
    let sum = 0;
    for (let j = 0; j < n; j++) sum += Math.exp(x[base + j]! - max);
    const logSum = Math.log(sum);
    for (let j = 0; j < n; j++) {
      const shifted = x[base + j]! - max;
      out[base + j] = log ? shifted - logSum : Math.exp(shifted) / sum;
    }
  }
}

/** softmax: gx = y (gy − Σ gy·y); log-softmax: gx = gy − exp(y) Σ gy. */
export function softmaxBackward(y: TypedArray, gy: TypedArray, rows: number, n: number, log: boolean, gx: TypedArray): void {
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    let dot = 0;
    for (let j = 0; j < n; j++) dot += log ? gy[base + j]! : gy[base + j]! * y[base + j]!;
    for (let j = 0; j < n; j++) {
      const yj = y[base + j]!;
      gx[base + j] = log ? gy[base + j]! - Math.exp(yj) * dot : yj * (gy[base + j]! - dot);
    }
  }
}

/** y = (x − mean) rstd w + b with the biased variance; mean and rstd are written per row. */
export function layerNorm(
  x: TypedArray, w: TypedArray | null, b: TypedArray | null, rows: number, n: number, eps: number,
  out: TypedArray, mean: TypedArray, rstd: TypedArray,
): void {
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    let sum = 0;
    for (let j = 0; j < n; j++) sum += x[base + j]!;
    const mu = sum / n;
    let sq = 0; // two passes: no cancellation when |mean| ≫ std
    for (let j = 0; j < n; j++) sq += (x[base + j]! - mu) ** 2;
    const rs = 1 / Math.sqrt(sq / n + eps);
    mean[r] = mu;
    rstd[r] = rs;
    for (let j = 0; j < n; j++) {
      const xhat = (x[base + j]! - mu) * rs;
      out[base + j] = xhat * (w ? w[j]! : 1) + (b ? b[j]! : 0);
    }
  }
}

/**
 * With x̂ = (x − mean) rstd and g = gy w:  gx = rstd (g − mean(g) − x̂ mean(g x̂)),
 * gw = Σ_rows gy x̂, gb = Σ_rows gy (written, not accumulated).
 */
export function layerNormBackward(
  x: TypedArray, w: TypedArray | null, mean: TypedArray, rstd: TypedArray, gy: TypedArray,
  rows: number, n: number, gx: TypedArray, gw: TypedArray | null, gb: TypedArray | null,
): void {
  const gwSum = new Float64Array(gw ? n : 0);
  const gbSum = new Float64Array(gb ? n : 0);
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    const mu = mean[r]!;
    const rs = rstd[r]!;
    let gMean = 0;
    let gxhatMean = 0;
    for (let j = 0; j < n; j++) {
      const xhat = (x[base + j]! - mu) * rs;
      const g = gy[base + j]! * (w ? w[j]! : 1);
      gMean += g;
      gxhatMean += g * xhat;
      if (gw) gwSum[j] += gy[base + j]! * xhat;
      if (gb) gbSum[j] += gy[base + j]!;
    }
    gMean /= n;
    gxhatMean /= n;
    for (let j = 0; j < n; j++) {
      const xhat = (x[base + j]! - mu) * rs;
      const g = gy[base + j]! * (w ? w[j]! : 1);
      gx[base + j] = rs * (g - gMean - xhat * gxhatMean);
    }
  }
  if (gw) gw.set(gwSum);
  if (gb) gb.set(gbSum);
}

/** y = x rstd w, rstd = 1/√(mean(x²) + eps), written per row. */
export function rmsNorm(
  x: TypedArray, w: TypedArray | null, rows: number, n: number, eps: number, out: TypedArray, rstd: TypedArray,
): void {
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    let sq = 0;
    for (let j = 0; j < n; j++) sq += x[base + j]! * x[base + j]!;
    const rs = 1 / Math.sqrt(sq / n + eps);
    rstd[r] = rs;
    for (let j = 0; j < n; j++) out[base + j] = x[base + j]! * rs * (w ? w[j]! : 1);
  }
}

/** With g = gy w: gx = rstd (g − x rstd² mean(g x)); gw = Σ_rows gy x rstd (written). */
export function rmsNormBackward(
  x: TypedArray, w: TypedArray | null, rstd: TypedArray, gy: TypedArray, rows: number, n: number,
  gx: TypedArray, gw: TypedArray | null,
): void {
  const gwSum = new Float64Array(gw ? n : 0);
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    const rs = rstd[r]!;
    let gxMean = 0;
    for (let j = 0; j < n; j++) {
      gxMean += gy[base + j]! * (w ? w[j]! : 1) * x[base + j]!;
      if (gw) gwSum[j] += gy[base + j]! * x[base + j]! * rs;
    }
    gxMean /= n;
    for (let j = 0; j < n; j++) {
      const g = gy[base + j]! * (w ? w[j]! : 1);
      gx[base + j] = rs * (g - x[base + j]! * rs * rs * gxMean);
    }
  }
  if (gw) gw.set(gwSum);
}

// ---------------------------------------------------------------------------------------
// Indexing
// ---------------------------------------------------------------------------------------

/** Throws a RangeError naming the op, the index, where it was found and the valid range. */
export function checkIndex(op: string, index: number, position: number, limit: number): void {
  if (!(index >= 0 && index < limit)) {
    throw new RangeError(`${op}: index ${index} at position ${position} is out of range [0, ${limit})`);
  }
}

/** out[i, :] = weight[ids[i], :]; weight (V, C), ids (n), out (n, C). */
/** The packed quantized weight of quantMatmul and quantEmbedding as byte views (see tensor/quantize.ts). */
export interface QuantArrays {
  format: 'int8' | 'int4' | 'int4z';
  N: number; K: number;
  data: Uint8Array; scales: TypedArray; zeros: Uint8Array | null;
}

/** Row n of a quantized weight, dequantized into out (K floats). */
export function quantRow(w: QuantArrays, n: number, out: Float64Array | Float32Array): void {
  const { K, data, scales, zeros } = w;
  if (w.format === 'int8') {
    const s = scales[n]!;
    for (let k = 0; k < K; k++) out[k] = s * ((data[n * K + k]! << 24) >> 24);
    return;
  }
  const groups = K / 32;
  for (let g = 0; g < groups; g++) {
    const gi = n * groups + g;
    const s = scales[gi]!;
    const z = zeros ? zeros[gi]! : 8;
    for (let j = 0; j < 16; j++) {
      const byte = data[gi * 16 + j]!;
      out[g * 32 + j] = s * ((byte & 15) - z);
      out[g * 32 + j + 16] = s * ((byte >> 4) - z);
    }
  }
}

/** out (M, N) = act(x (M, K) · deq(w)ᵀ + bias), in float64 per output. */
export function quantMatmul(x: TypedArray, M: number, w: QuantArrays, bias: TypedArray | null, act: Activation, out: TypedArray): void {
  const { N, K } = w;
  const row = new Float64Array(K);
  for (let n = 0; n < N; n++) {
    quantRow(w, n, row);
    for (let m = 0; m < M; m++) {
      let acc = bias ? bias[n]! : 0;
      for (let k = 0; k < K; k++) acc += x[m * K + k]! * row[k]!;
      out[m * N + n] = activate(act, acc);
    }
  }
}

/** out[i, :] = row ids[i] of the quantized weight (N rows of K). */
export function quantEmbedding(w: QuantArrays, ids: TypedArray, n: number, out: TypedArray): void {
  const row = new Float32Array(w.K);
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    checkIndex('quantEmbedding', id, i, w.N);
    quantRow(w, id, row);
    out.set(row, i * w.K);
  }
}

export function embedding(weight: TypedArray, V: number, C: number, ids: TypedArray, n: number, out: TypedArray): void {
  for (let i = 0; i < n; i++) checkIndex('embedding', ids[i]!, i, V);
  for (let i = 0; i < n; i++) {
    const row = ids[i]!;
    for (let c = 0; c < C; c++) out[i * C + c] = weight[row * C + c]!;
  }
}

/** gw[ids[i], :] += gy[i, :] (gw accumulates). */
export function embeddingBackward(gy: TypedArray, ids: TypedArray, n: number, V: number, C: number, gw: TypedArray): void {
  for (let i = 0; i < n; i++) checkIndex('embeddingBackward', ids[i]!, i, V);
  // Sum every contribution to a row in float64 before touching gw, so repeated ids in
  // float32 storage round once.
  const sums = new Map<number, Float64Array>();
  for (let i = 0; i < n; i++) {
    const row = ids[i]!;
    let acc = sums.get(row);
    if (!acc) sums.set(row, (acc = new Float64Array(C)));
    for (let c = 0; c < C; c++) acc[c] += gy[i * C + c]!;
  }
  for (const [row, acc] of sums) {
    for (let c = 0; c < C; c++) gw[row * C + c] += acc[c]!;
  }
}

/** out[o, j, i] = x[o, index[o, j, i], i]; x (outer, n, inner), index and out (outer, k, inner). */
export function gather(
  x: TypedArray, outer: number, n: number, inner: number, index: TypedArray, k: number, out: TypedArray,
): void {
  const total = outer * k * inner;
  for (let p = 0; p < total; p++) checkIndex('gather', index[p]!, p, n);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < k; j++) {
      for (let i = 0; i < inner; i++) {
        const p = (o * k + j) * inner + i;
        out[p] = x[(o * n + index[p]!) * inner + i]!;
      }
    }
  }
}

/** gx[o, index[o, j, i], i] += gy[o, j, i] (gx accumulates); the backward of gather. */
export function scatterAdd(
  gy: TypedArray, outer: number, n: number, inner: number, index: TypedArray, k: number, gx: TypedArray,
): void {
  const total = outer * k * inner;
  for (let p = 0; p < total; p++) checkIndex('scatterAdd', index[p]!, p, n);
  const acc = new Float64Array(n * inner); // one (n, inner) slab at a time, summed in float64
  for (let o = 0; o < outer; o++) {
    acc.fill(0);
    for (let j = 0; j < k; j++) {
      for (let i = 0; i < inner; i++) {
        const p = (o * k + j) * inner + i;
        acc[index[p]! * inner + i] += gy[p]!;
      }
    }
    for (let q = 0; q < n * inner; q++) gx[o * n * inner + q] += acc[q]!;
  }
}

// ---------------------------------------------------------------------------------------
// Losses
// ---------------------------------------------------------------------------------------

/** log Σ_j exp(x[base + j]) over n elements, shifted by the max. */
function logSumExp(x: TypedArray, base: number, n: number): number {
  let max = -Infinity;
  for (let j = 0; j < n; j++) max = Math.max(max, x[base + j]!);
  if (max === -Infinity || max === Infinity) return max;
  let sum = 0;
  for (let j = 0; j < n; j++) sum += Math.exp(x[base + j]! - max);
  return max + Math.log(sum);
}

/**
 * Per row r of logits (N, V) with target t: lse = log Σ exp(x), and
 * loss = lse − ((1 − ε) x[t] + ε mean(x)), or 0 when t == ignoreIndex (lse is still written).
 */
export function crossEntropy(
  logits: TypedArray, targets: TypedArray, N: number, V: number, ignoreIndex: number, smoothing: number,
  losses: TypedArray, lse: TypedArray,
): void {
  for (let r = 0; r < N; r++) {
    const t = targets[r]!;
    if (t !== ignoreIndex) checkIndex('crossEntropy', t, r, V);
  }
  for (let r = 0; r < N; r++) {
    const base = r * V;
    const l = logSumExp(logits, base, V);
    lse[r] = l;
    const t = targets[r]!;
    if (t === ignoreIndex) {
      losses[r] = 0;
      continue;
    }
    let sum = 0;
    for (let j = 0; j < V; j++) sum += logits[base + j]!;
    losses[r] = l - ((1 - smoothing) * logits[base + t]! + (smoothing * sum) / V);
  }
}

/** gx[r] = scale[r] (softmax(x[r]) − (1 − ε) onehot(t) − ε/V), zero for ignored rows. */
export function crossEntropyBackward(
  logits: TypedArray, targets: TypedArray, lse: TypedArray, scale: TypedArray, N: number, V: number,
  ignoreIndex: number, smoothing: number, gx: TypedArray,
): void {
  for (let r = 0; r < N; r++) {
    const t = targets[r]!;
    if (t !== ignoreIndex) checkIndex('crossEntropyBackward', t, r, V);
  }
  for (let r = 0; r < N; r++) {
    const base = r * V;
    const t = targets[r]!;
    if (t === ignoreIndex) {
      gx.fill(0, base, base + V);
      continue;
    }
    const s = scale[r]!;
    const l = lse[r]!;
    for (let j = 0; j < V; j++) {
      const p = Math.exp(logits[base + j]! - l);
      gx[base + j] = s * (p - (j === t ? 1 - smoothing : 0) - smoothing / V);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------

/** AttentionArgs with the storages replaced by their arrays. */
export interface AttentionArrays extends Omit<AttentionArgs, 'q' | 'k' | 'v' | 'out' | 'lse' | 'keyMask'> {
  q: TypedArray; k: TypedArray; v: TypedArray; out: TypedArray; lse: TypedArray;
  keyMask?: TypedArray | null;
}

export interface AttentionBackwardArrays extends AttentionArrays {
  gout: TypedArray; gq: TypedArray; gk: TypedArray; gv: TypedArray;
}

/** Whether query i of batch b may see key j: causal bottom-right alignment, the sparse
 *  pattern (AttentionSparsity in backend.ts) and the key mask. */
function visible(p: AttentionArrays, b: number, i: number, j: number): boolean {
  const ii = i + (p.Tk - p.Tq);
  if (p.causal && j > ii) return false;
  const sp = p.sparsity;
  if (sp) {
    const d = ii - j;
    if (sp.kind === 'window' && Math.abs(d) >= sp.window) return false;
    if (sp.kind === 'strided' && Math.abs(d) >= sp.stride && d % sp.stride !== 0) return false;
    if (sp.kind === 'fixed' && Math.floor(j / sp.block) !== Math.floor(ii / sp.block) &&
      j % sp.block < sp.block - sp.summary) return false;
  }
  return !p.keyMask || p.keyMask[b * p.Tk + j] !== 0;
}

/**
 * Scaled scores of query row (b, h, i) against every key: s[j] = scale q·k_j, or -Infinity
 * where the key is not visible. Returns the row max (-Infinity when nothing is visible).
 */
function scoreRow(p: AttentionArrays, b: number, h: number, i: number, s: Float64Array): number {
  const { q, k, Tq, Tk, D } = p;
  const qBase = ((b * p.H + h) * Tq + i) * D;
  const kBase = (b * p.H + h) * Tk * D;
  let max = -Infinity;
  for (let j = 0; j < Tk; j++) {
    if (!visible(p, b, i, j)) {
      s[j] = -Infinity;
      continue;
    }
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q[qBase + d]! * k[kBase + j * D + d]!;
    s[j] = p.scale * dot;
    max = Math.max(max, s[j]!);
  }
  return max;
}

/**
 * out_i = Σ_j softmax_j(s) v_j and lse_i = log Σ_j exp(s_j) over visible keys. The
 * reference materialises one score row (Tk) at a time, never the (Tq, Tk) matrix.
 */
export function attention(p: AttentionArrays): void {
  checkSparsity('attention', p.sparsity);
  const { v, out, lse, B, H, Tq, Tk, D } = p;
  const s = new Float64Array(Tk);
  const acc = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const vBase = (b * H + h) * Tk * D;
      for (let i = 0; i < Tq; i++) {
        const row = (b * H + h) * Tq + i;
        const max = scoreRow(p, b, h, i, s);
        if (max === -Infinity) {
          // No visible key: zero output, and lse = -Infinity marks the row for backward.
          out.fill(0, row * D, row * D + D);
          lse[row] = -Infinity;
          continue;
        }
        acc.fill(0);
        let sum = 0;
        for (let j = 0; j < Tk; j++) {
          if (s[j] === -Infinity) continue; // masked key
          const e = Math.exp(s[j]! - max);
          sum += e;
          for (let d = 0; d < D; d++) acc[d] += e * v[vBase + j * D + d]!;
        }
        for (let d = 0; d < D; d++) out[row * D + d] = acc[d]! / sum;
        lse[row] = max + Math.log(sum);
      }
    }
  }
}

/**
 * With P_ij = exp(s_ij − lse_i) (the saved lse, so it matches the forward exactly):
 *   gv_j = Σ_i P_ij gout_i;   dP_ij = gout_i·v_j;   dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij');
 *   gq_i = scale Σ_j dS_ij k_j;   gk_j = scale Σ_i dS_ij q_i.
 * gq, gk, gv are written; rows with no visible key contribute nothing.
 */
export function attentionBackward(p: AttentionBackwardArrays): void {
  checkSparsity('attentionBackward', p.sparsity);
  const { q, k, v, lse, gout, gq, gk, gv, B, H, Tq, Tk, D, scale } = p;
  const s = new Float64Array(Tk);
  const dP = new Float64Array(Tk);
  const gqRow = new Float64Array(D);
  const gkAcc = new Float64Array(Tk * D); // one head's gk and gv, summed over queries in float64
  const gvAcc = new Float64Array(Tk * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvBase = (b * H + h) * Tk * D;
      gkAcc.fill(0);
      gvAcc.fill(0);
      for (let i = 0; i < Tq; i++) {
        const row = (b * H + h) * Tq + i;
        const qBase = row * D;
        gqRow.fill(0);
        const l = lse[row]!;
        if (l !== -Infinity && scoreRow(p, b, h, i, s) !== -Infinity) {
          let rowDot = 0; // Σ_j P_ij dP_ij
          for (let j = 0; j < Tk; j++) {
            if (s[j] === -Infinity) continue;
            let dot = 0;
            for (let d = 0; d < D; d++) dot += gout[qBase + d]! * v[kvBase + j * D + d]!;
            dP[j] = dot;
            rowDot += Math.exp(s[j]! - l) * dot;
          }
          for (let j = 0; j < Tk; j++) {
            if (s[j] === -Infinity) continue;
            const P = Math.exp(s[j]! - l);
            const dS = P * (dP[j]! - rowDot);
            for (let d = 0; d < D; d++) {
              gvAcc[j * D + d] += P * gout[qBase + d]!;
              gkAcc[j * D + d] += scale * dS * q[qBase + d]!;
              gqRow[d] += scale * dS * k[kvBase + j * D + d]!;
            }
          }
        }
        for (let d = 0; d < D; d++) gq[qBase + d] = gqRow[d]!;
      }
      for (let e = 0; e < Tk * D; e++) {
        gk[kvBase + e] = gkAcc[e]!;
        gv[kvBase + e] = gvAcc[e]!;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Optimizer
// ---------------------------------------------------------------------------------------

/** AdamWArgs with the storages replaced by their arrays. */
export interface AdamWArrays extends Omit<AdamWArgs, 'param' | 'grad' | 'm' | 'v'> {
  param: TypedArray; grad: TypedArray; m: TypedArray; v: TypedArray;
}

/** One decoupled-weight-decay Adam step, in place over n elements. */
export function adamw(p: AdamWArrays): void {
  const { param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, bc1, bc2 } = p;
  for (let i = 0; i < n; i++) {
    const g = grad[i]!;
    const mi = beta1 * m[i]! + (1 - beta1) * g;
    const vi = beta2 * v[i]! + (1 - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const w = param[i]!;
    param[i] = w - lr * (mi / bc1 / (Math.sqrt(vi / bc2) + eps) + weightDecay * w);
  }
}

/** Rotary embedding (see Backend.rope): rows of D at position (r / H) % T + offset. */
export function rope(x: TypedArray, cos: TypedArray, sin: TypedArray, out: TypedArray, rows: number, H: number, T: number, D: number, rd: number, offset: number, inverse: boolean): void {
  const half = rd / 2;
  const sign = inverse ? -1 : 1;
  for (let r = 0; r < rows; r++) {
    const pos = (Math.floor(r / H) % T) + offset;
    const xb = r * D;
    for (let i = 0; i < half; i++) {
      const c = cos[pos * half + i]!, s = sin[pos * half + i]!;
      const a = x[xb + i]!, b = x[xb + i + half]!;
      out[xb + i] = a * c - sign * b * s;
      out[xb + i + half] = b * c + sign * a * s;
    }
    for (let i = rd; i < D; i++) out[xb + i] = x[xb + i]!;
  }
}
