// The reference backend: storages are plain typed arrays and every op is a kernels.ts loop.
// It checks its arguments (sizes, index dtypes, layouts in bounds) so that tensor-layer bugs
// surface here as errors instead of silent NaNs from reading past the end of an array.
//
// Subclassing: methods obtain arrays only through arr() and make or release storage only
// through alloc/upload/free/read/write, so a backend with other storage (the cpu backend's
// WebAssembly memory) overrides those and inherits every op.
import type {
  AdamWArgs, AttentionArgs, AttentionBackwardArgs, AttentionView, Backend, BinaryOp, Layout, MatmulArgs, QuantMatmulArgs, QuantWeightStorage,
  ReduceOp, Storage, UnaryGradOp, UnaryOp,
} from '../backend.js';
import { dropThreshold, maskHash } from '../backend.js';
import { newArray, type DType, type TypedArray } from '../../tensor/dtype.js';
import { floatBitsToBf16Bits } from '../../tensor/half.js';
import { fmt, numel } from '../../tensor/shape.js';
import * as K from './kernels.js';

export class RefStorage implements Storage {
  refs = 0;
  freed = false;
  constructor(
    readonly backend: Backend,
    readonly dtype: DType,
    readonly size: number,
    public data: TypedArray,
  ) {}
}

export class RefBackend implements Backend {
  readonly name: string = 'ref';
  /** ref attention wants one kv head per query head (the ops layer repeats grouped ones). */
  get groupedKV(): boolean {
    return false;
  }
  get stridedAttention(): boolean {
    return false;
  }

  supports(dtype: DType): boolean {
    return dtype === 'float32' || dtype === 'float64' || dtype === 'int32';
  }

  // ---- memory ----

  /** The elements of s. The only way methods reach storage contents. */
  protected arr(s: Storage): TypedArray {
    if (s.backend !== this) throw new Error(`${this.name} backend: storage belongs to the ${s.backend.name} backend`);
    if (s.freed) throw new Error(`${this.name} backend: use of a freed storage (${s.dtype}, ${s.size} elements)`);
    return (s as RefStorage).data;
  }

  alloc(dtype: DType, size: number): Storage {
    this.checkAlloc(dtype, size);
    return new RefStorage(this, dtype, size, newArray(dtype, size));
  }

  upload(data: ArrayLike<number>, dtype: DType): Storage {
    const s = this.alloc(dtype, data.length);
    this.write(s, data, 0);
    return s;
  }

  read(s: Storage, layout?: Layout): TypedArray {
    const a = this.arr(s);
    if (!layout) return a.slice(0, s.size);
    this.checkLayout('read', 'storage', s, layout);
    const out = newArray(s.dtype, numel(layout.shape));
    K.copy(a, layout, out);
    return out;
  }

  free(s: Storage): void {
    this.arr(s); // a double free is a use after free
    s.freed = true;
    (s as RefStorage).data = newArray(s.dtype, 0); // let the buffer be collected even if s lives on
  }

  write(s: Storage, data: ArrayLike<number>, offset: number): void {
    const a = this.arr(s);
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > s.size) {
      throw new RangeError(`write: ${data.length} elements at offset ${offset} do not fit in a storage of ${s.size}`);
    }
    a.set(data, offset);
  }

  // ---- element-wise ----

  copy(x: Storage, xl: Layout, out: Storage): void {
    this.checkLayout('copy', 'x', x, xl);
    this.need('copy', 'out', out, numel(xl.shape));
    K.copy(this.arr(x), xl, this.arr(out));
  }

  copyInto(x: Storage, xl: Layout, out: Storage, outLayout: Layout): void {
    this.checkLayout('copyInto', 'x', x, xl);
    this.checkLayout('copyInto', 'out', out, outLayout);
    K.copyInto(this.arr(x), xl, this.arr(out), outLayout);
  }

  copyBlocks(x: Storage, xl: Layout, out: Storage, ol: Layout, xShift: readonly number[], outShift: readonly number[]): void {
    if (xShift.length !== outShift.length) throw new RangeError(`copyBlocks: ${xShift.length} source shifts for ${outShift.length} destination shifts`);
    for (let i = 0; i < xShift.length; i++) {
      this.copyInto(x, { ...xl, offset: xl.offset + xShift[i]! }, out, { ...ol, offset: ol.offset + outShift[i]! });
    }
  }

  fill(out: Storage, value: number, offset: number, n: number): void {
    if (offset < 0 || offset + n > out.size) {
      throw new RangeError(`fill: ${n} elements at offset ${offset} do not fit in a storage of ${out.size}`);
    }
    K.fill(this.arr(out), value, offset, n);
  }

  unary(op: UnaryOp, x: Storage, xl: Layout, out: Storage): void {
    this.checkLayout(op, 'x', x, xl);
    this.need(op, 'out', out, numel(xl.shape));
    K.unary(op, this.arr(x), xl, this.arr(out));
  }

  unaryBackward(op: UnaryGradOp, x: Storage, gy: Storage, gx: Storage, n: number): void {
    const name = `${op} backward`;
    this.need(name, 'x', x, n);
    this.need(name, 'gy', gy, n);
    this.need(name, 'gx', gx, n);
    K.unaryBackward(op, this.arr(x), this.arr(gy), this.arr(gx), n);
  }

  binary(op: BinaryOp, a: Storage, al: Layout, b: Storage, bl: Layout, out: Storage): void {
    this.checkLayout(op, 'a', a, al);
    this.checkLayout(op, 'b', b, bl);
    this.need(op, 'out', out, numel(al.shape));
    K.binary(op, this.arr(a), al, this.arr(b), bl, this.arr(out));
  }

  binaryScalar(op: BinaryOp, a: Storage, al: Layout, s: number, reversed: boolean, out: Storage): void {
    this.checkLayout(op, 'a', a, al);
    this.need(op, 'out', out, numel(al.shape));
    K.binaryScalar(op, this.arr(a), al, s, reversed, this.arr(out));
  }

  where(cond: Storage, cl: Layout, a: Storage, al: Layout, b: Storage, bl: Layout, out: Storage): void {
    this.checkLayout('where', 'cond', cond, cl);
    this.checkLayout('where', 'a', a, al);
    this.checkLayout('where', 'b', b, bl);
    this.need('where', 'out', out, numel(cl.shape));
    K.where(this.arr(cond), cl, this.arr(a), al, this.arr(b), bl, this.arr(out));
  }

  // ---- reductions ----

  reduce(op: ReduceOp, x: Storage, outer: number, n: number, inner: number, out: Storage): void {
    this.need(op, 'x', x, outer * n * inner);
    this.need(op, 'out', out, outer * inner);
    if (op === 'argmax') this.needInt32(op, 'out', out);
    K.reduce(op, this.arr(x), outer, n, inner, this.arr(out));
  }

  cumsum(x: Storage, outer: number, n: number, inner: number, out: Storage): void {
    this.need('cumsum', 'x', x, outer * n * inner);
    this.need('cumsum', 'out', out, outer * n * inner);
    K.cumsum(this.arr(x), outer, n, inner, this.arr(out));
  }

  // ---- linear algebra ----

  /** Bounds checks shared by every matmul kernel: none may read outside a storage. */
  protected checkMatmul(args: MatmulArgs): void {
    const { batch, M, N, K } = args;
    for (const [what, v] of [['batch', batch], ['M', M], ['N', N], ['K', K], ['lda', args.lda], ['ldb', args.ldb],
      ['aOffset', args.aOffset], ['bOffset', args.bOffset]] as const) {
      if (!Number.isInteger(v) || v < 0) throw new RangeError(`matmul: ${what} must be a non-negative integer, got ${v}`);
    }
    const aLayout: Layout = {
      shape: [batch, M, K],
      strides: [args.aBatchStride, args.transA ? 1 : args.lda, args.transA ? args.lda : 1],
      offset: args.aOffset,
    };
    const bLayout: Layout = {
      shape: [batch, K, N],
      strides: [args.bBatchStride, args.transB ? 1 : args.ldb, args.transB ? args.ldb : 1],
      offset: args.bOffset,
    };
    this.checkLayout('matmul', 'a', args.a, aLayout);
    this.checkLayout('matmul', 'b', args.b, bLayout);
    this.need('matmul', 'out', args.out, batch * M * N);
    if (args.bias) this.need('matmul', 'bias', args.bias, N);
  }

  matmul(args: MatmulArgs): void {
    this.checkMatmul(args);
    // bfloat16 precision: the operands rounded to bfloat16; float products and sums are exact emulation.
    const bf = args.precision === 'bfloat16';
    K.matmul({
      ...args,
      a: bf ? roundedToBf16(this.arr(args.a)) : this.arr(args.a),
      b: bf && args.b.dtype !== 'bfloat16' ? roundedToBf16(this.arr(args.b)) : this.arr(args.b),
      out: this.arr(args.out),
      bias: args.bias ? this.arr(args.bias) : null,
    });
  }

  /** Checks a quantized weight's storages against its format and shape. */
  protected checkQuant(op: string, w: QuantWeightStorage): void {
    const { format, N, K } = w;
    const groups = format === 'int8' ? 0 : K / 32;
    if (format !== 'int8' && !Number.isInteger(groups)) throw new RangeError(`${op}: ${format} needs K a multiple of 32, got ${K}`);
    const bytes = format === 'int8' ? N * K : N * K / 2;
    this.needInt32(op, 'w.data', w.data);
    this.need(op, 'w.data', w.data, Math.ceil(bytes / 4));
    this.need(op, 'w.scales', w.scales, format === 'int8' ? N : N * groups);
    if (format === 'int4z') {
      if (!w.zeros) throw new Error(`${op}: int4z weight without zero points`);
      this.need(op, 'w.zeros', w.zeros, Math.ceil(N * groups / 4));
    }
  }

  /** The weight's storages as the byte views the kernels read. */
  protected quantArrays(w: QuantWeightStorage): K.QuantArrays {
    const bytes = (s: Storage): Uint8Array => {
      const a = this.arr(s);
      return new Uint8Array(a.buffer, a.byteOffset, s.size * 4);
    };
    return { format: w.format, N: w.N, K: w.K, data: bytes(w.data), scales: this.arr(w.scales), zeros: w.zeros ? bytes(w.zeros) : null };
  }

  quantMatmul(args: QuantMatmulArgs): void {
    const { w, M } = args;
    this.checkQuant('quantMatmul', w);
    this.need('quantMatmul', 'x', args.x, M * w.K);
    this.need('quantMatmul', 'out', args.out, M * w.N);
    if (args.bias) this.need('quantMatmul', 'bias', args.bias, w.N);
    K.quantMatmul(this.arr(args.x), M, this.quantArrays(w), args.bias ? this.arr(args.bias) : null, args.activation ?? 'none', this.arr(args.out));
  }

  quantEmbedding(w: QuantWeightStorage, ids: Storage, n: number, out: Storage): void {
    this.checkQuant('quantEmbedding', w);
    this.needInt32('quantEmbedding', 'ids', ids);
    this.need('quantEmbedding', 'ids', ids, n);
    this.need('quantEmbedding', 'out', out, n * w.K);
    K.quantEmbedding(this.quantArrays(w), this.arr(ids), n, this.arr(out));
  }

  // ---- fused row kernels ----

  softmax(x: Storage, rows: number, n: number, log: boolean, out: Storage): void {
    this.need('softmax', 'x', x, rows * n);
    this.need('softmax', 'out', out, rows * n);
    K.softmax(this.arr(x), rows, n, log, this.arr(out));
  }

  softmaxBackward(y: Storage, gy: Storage, rows: number, n: number, log: boolean, gx: Storage): void {
    for (const [what, s] of [['y', y], ['gy', gy], ['gx', gx]] as const) this.need('softmaxBackward', what, s, rows * n);
    K.softmaxBackward(this.arr(y), this.arr(gy), rows, n, log, this.arr(gx));
  }

  layerNorm(x: Storage, w: Storage | null, b: Storage | null, rows: number, n: number, eps: number,
    out: Storage, mean: Storage, rstd: Storage): void {
    this.need('layerNorm', 'x', x, rows * n);
    this.need('layerNorm', 'out', out, rows * n);
    if (w) this.need('layerNorm', 'w', w, n);
    if (b) this.need('layerNorm', 'b', b, n);
    this.need('layerNorm', 'mean', mean, rows);
    this.need('layerNorm', 'rstd', rstd, rows);
    K.layerNorm(this.arr(x), this.opt(w), this.opt(b), rows, n, eps, this.arr(out), this.arr(mean), this.arr(rstd));
  }

  layerNormBackward(x: Storage, w: Storage | null, mean: Storage, rstd: Storage, gy: Storage,
    rows: number, n: number, gx: Storage, gw: Storage | null, gb: Storage | null): void {
    const op = 'layerNormBackward';
    for (const [what, s] of [['x', x], ['gy', gy], ['gx', gx]] as const) this.need(op, what, s, rows * n);
    for (const [what, s] of [['w', w], ['gw', gw], ['gb', gb]] as const) if (s) this.need(op, what, s, n);
    this.need(op, 'mean', mean, rows);
    this.need(op, 'rstd', rstd, rows);
    K.layerNormBackward(this.arr(x), this.opt(w), this.arr(mean), this.arr(rstd), this.arr(gy), rows, n,
      this.arr(gx), this.opt(gw), this.opt(gb));
  }

  rope(x: Storage, cos: Storage, sin: Storage, out: Storage, rows: number, H: number, T: number, D: number, rd: number, offset: number, inverse: boolean): void {
    this.need('rope', 'x', x, rows * D);
    this.need('rope', 'out', out, rows * D);
    for (const [what, s] of [['cos', cos], ['sin', sin]] as const) this.need('rope', what, s, (T + offset) * (rd / 2));
    K.rope(this.arr(x), this.arr(cos), this.arr(sin), this.arr(out), rows, H, T, D, rd, offset, inverse);
  }

  rmsNorm(x: Storage, w: Storage | null, rows: number, n: number, eps: number, out: Storage, rstd: Storage): void {
    this.need('rmsNorm', 'x', x, rows * n);
    this.need('rmsNorm', 'out', out, rows * n);
    if (w) this.need('rmsNorm', 'w', w, n);
    this.need('rmsNorm', 'rstd', rstd, rows);
    K.rmsNorm(this.arr(x), this.opt(w), rows, n, eps, this.arr(out), this.arr(rstd));
  }

  rmsNormBackward(x: Storage, w: Storage | null, rstd: Storage, gy: Storage, rows: number, n: number,
    gx: Storage, gw: Storage | null): void {
    const op = 'rmsNormBackward';
    for (const [what, s] of [['x', x], ['gy', gy], ['gx', gx]] as const) this.need(op, what, s, rows * n);
    for (const [what, s] of [['w', w], ['gw', gw]] as const) if (s) this.need(op, what, s, n);
    this.need(op, 'rstd', rstd, rows);
    K.rmsNormBackward(this.arr(x), this.opt(w), this.arr(rstd), this.arr(gy), rows, n, this.arr(gx), this.opt(gw));
  }

  // ---- indexing ----

  embedding(weight: Storage, V: number, C: number, ids: Storage, n: number, out: Storage): void {
    this.need('embedding', 'weight', weight, V * C);
    this.needInt32('embedding', 'ids', ids);
    this.need('embedding', 'ids', ids, n);
    this.need('embedding', 'out', out, n * C);
    K.embedding(this.arr(weight), V, C, this.arr(ids), n, this.arr(out));
  }

  embeddingBackward(gy: Storage, ids: Storage, n: number, V: number, C: number, gw: Storage): void {
    this.need('embeddingBackward', 'gy', gy, n * C);
    this.needInt32('embeddingBackward', 'ids', ids);
    this.need('embeddingBackward', 'ids', ids, n);
    this.need('embeddingBackward', 'gw', gw, V * C);
    K.embeddingBackward(this.arr(gy), this.arr(ids), n, V, C, this.arr(gw));
  }

  gather(x: Storage, outer: number, n: number, inner: number, index: Storage, k: number, out: Storage): void {
    this.need('gather', 'x', x, outer * n * inner);
    this.needInt32('gather', 'index', index);
    this.need('gather', 'index', index, outer * k * inner);
    this.need('gather', 'out', out, outer * k * inner);
    K.gather(this.arr(x), outer, n, inner, this.arr(index), k, this.arr(out));
  }

  scatterAdd(gy: Storage, outer: number, n: number, inner: number, index: Storage, k: number, gx: Storage): void {
    this.need('scatterAdd', 'gy', gy, outer * k * inner);
    this.needInt32('scatterAdd', 'index', index);
    this.need('scatterAdd', 'index', index, outer * k * inner);
    this.need('scatterAdd', 'gx', gx, outer * n * inner);
    K.scatterAdd(this.arr(gy), outer, n, inner, this.arr(index), k, this.arr(gx));
  }

  // ---- losses ----

  crossEntropy(logits: Storage, targets: Storage, N: number, V: number, ignoreIndex: number,
    smoothing: number, losses: Storage, lse: Storage): void {
    this.need('crossEntropy', 'logits', logits, N * V);
    this.needInt32('crossEntropy', 'targets', targets);
    this.need('crossEntropy', 'targets', targets, N);
    this.need('crossEntropy', 'losses', losses, N);
    this.need('crossEntropy', 'lse', lse, N);
    K.crossEntropy(this.arr(logits), this.arr(targets), N, V, ignoreIndex, smoothing, this.arr(losses), this.arr(lse));
  }

  crossEntropyBackward(logits: Storage, targets: Storage, lse: Storage, scale: Storage, N: number, V: number,
    ignoreIndex: number, smoothing: number, gx: Storage): void {
    const op = 'crossEntropyBackward';
    this.need(op, 'logits', logits, N * V);
    this.needInt32(op, 'targets', targets);
    for (const [what, s] of [['targets', targets], ['lse', lse], ['scale', scale]] as const) this.need(op, what, s, N);
    this.need(op, 'gx', gx, N * V);
    K.crossEntropyBackward(this.arr(logits), this.arr(targets), this.arr(lse), this.arr(scale), N, V,
      ignoreIndex, smoothing, this.arr(gx));
  }

  // ---- attention ----

  attention(args: AttentionArgs): void {
    this.checkAttention('attention', args);
    K.attention(this.attentionArrays(args));
  }

  attentionBackward(args: AttentionBackwardArgs): void {
    const op = 'attentionBackward';
    this.checkAttention(op, args);
    const { B, H, Tq, Tk, D } = args;
    this.need(op, 'gout', args.gout, B * H * Tq * D);
    this.need(op, 'gq', args.gq, B * H * Tq * D);
    this.need(op, 'gk', args.gk, B * (args.Hkv ?? H) * Tk * D);
    this.need(op, 'gv', args.gv, B * (args.Hkv ?? H) * Tk * D);
    K.attentionBackward({
      ...this.attentionArrays(args),
      gout: this.arr(args.gout),
      gq: this.arr(args.gq),
      gk: this.arr(args.gk),
      gv: this.arr(args.gv),
    });
  }

  // ---- random ----

  dropoutMask(out: Storage, n: number, p: number, scale: number, seed0: number, seed1: number): void {
    this.need('dropoutMask', 'out', out, n);
    const a = this.arr(out);
    const t = dropThreshold(p);
    for (let i = 0; i < n; i++) a[i] = maskHash(seed0, seed1, i) >>> 8 >= t ? scale : 0;
  }

  // ---- optimizer ----

  adamw(args: AdamWArgs): void {
    for (const [what, s] of [['param', args.param], ['grad', args.grad], ['m', args.m], ['v', args.v]] as const) {
      this.need('adamw', what, s, args.n);
    }
    K.adamw({
      ...args,
      param: this.arr(args.param),
      grad: this.arr(args.grad),
      m: this.arr(args.m),
      v: this.arr(args.v),
    });
  }

  // ---- argument checks ----

  protected checkAlloc(dtype: DType, size: number): void {
    if (!this.supports(dtype)) throw new Error(`${this.name} backend does not support ${dtype}`);
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`${this.name} backend: invalid storage size ${size}`);
  }

  protected opt(s: Storage | null): TypedArray | null {
    return s ? this.arr(s) : null;
  }

  /** Throws unless s holds at least n elements. */
  protected need(op: string, what: string, s: Storage, n: number): void {
    if (s.size < n) throw new RangeError(`${op}: ${what} has ${s.size} elements but ${n} are needed`);
  }

  protected needInt32(op: string, what: string, s: Storage): void {
    if (s.dtype !== 'int32') throw new TypeError(`${op}: ${what} must be int32, got ${s.dtype}`);
  }

  /** Throws unless every element the layout addresses lies inside s. */
  protected checkLayout(op: string, what: string, s: Storage, l: Layout): void {
    if (l.shape.length !== l.strides.length) {
      throw new Error(`${op}: ${what} layout has shape ${fmt(l.shape)} but strides ${fmt(l.strides)}`);
    }
    const ext = K.layoutExtent(l);
    if (ext && (ext.min < 0 || ext.max >= s.size)) {
      throw new RangeError(`${op}: ${what} layout (shape ${fmt(l.shape)}, strides ${fmt(l.strides)}, offset ${l.offset}) ` +
        `reaches elements [${ext.min}, ${ext.max}] of a storage of ${s.size}`);
    }
  }

  protected checkAttention(op: string, a: AttentionArgs): void {
    const { B, H, Tq, Tk, D } = a;
    const Hkv = a.Hkv ?? H;
    if (!(Number.isInteger(Hkv) && Hkv >= 1 && H % Hkv === 0)) throw new RangeError(`${op}: ${H} query heads are not a multiple of ${Hkv} kv heads`);
    if (Hkv !== H && !this.groupedKV) throw new Error(`${this.name} backend: ${op} with grouped kv heads (${Hkv} for ${H}); the ops layer repeats them for this backend`);
    if (a.views && !this.stridedAttention) throw new Error(`${this.name} backend: ${op} with strided operands; the ops layer makes them contiguous for this backend`);
    // The element past the last one each operand's view reaches (contiguous: its size).
    const end = (v: AttentionView | undefined, heads: number, T: number): number => {
      if (!v) return B * heads * T * D;
      const [sb, sh, st] = v.strides;
      if (![v.offset, sb, sh, st].every((x) => Number.isInteger(x) && x >= 0)) throw new RangeError(`${op}: bad view ${JSON.stringify(v)}`);
      return v.offset + (B - 1) * sb + (heads - 1) * sh + (T - 1) * st + D;
    };
    this.need(op, 'q', a.q, end(a.views?.q, H, Tq));
    this.need(op, 'k', a.k, end(a.views?.k, Hkv, Tk));
    this.need(op, 'v', a.v, end(a.views?.v, Hkv, Tk));
    this.need(op, 'out', a.out, end(a.views?.out, H, Tq));
    this.need(op, 'lse', a.lse, B * H * Tq);
    if (a.keyMask) {
      this.needInt32(op, 'keyMask', a.keyMask);
      this.need(op, 'keyMask', a.keyMask, B * Tk);
    }
  }

  protected attentionArrays(a: AttentionArgs): K.AttentionArrays {
    return {
      ...a,
      q: this.arr(a.q),
      k: this.arr(a.k),
      v: this.arr(a.v),
      out: this.arr(a.out),
      lse: this.arr(a.lse),
      keyMask: a.keyMask ? this.arr(a.keyMask) : null,
    };
  }
}

export function createRefBackend(): RefBackend {
  return new RefBackend();
}

/** A copy of xs with every value rounded to the nearest bfloat16 (ties to even). */
export function roundedToBf16(xs: TypedArray): TypedArray {
  const f = new Float32Array(xs.length);
  f.set(xs);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < u.length; i++) u[i] = floatBitsToBf16Bits(u[i]!) << 16;
  const out = xs instanceof Float64Array ? new Float64Array(xs.length) : f;
  if (out !== f) out.set(f);
  return out;
}
