// The fast CPU backend: storage lives in the shared WebAssembly memory of a WasmRuntime, the
// heavy ops run as WebAssembly SIMD kernels on its thread pool, and every other op is the
// reference backend's JS kernel working on views of that memory.
import type { AdamWArgs, AttentionArgs, AttentionBackwardArgs, AttentionView, Backend, BinaryOp, DecodeBuffer, DecodeMatrix, DecodePlan, GPTDecodePlan, Layout, MatmulArgs, QuantMatmulArgs, QuantWeightStorage, ReduceOp, Storage, UnaryGradOp, UnaryOp } from '../backend.js';
import * as fused from './fused.js';
import { wasmQuantEmbedding, wasmQuantMatmul } from './quant-wasm.js';
import { RefBackend, roundedToBf16 } from '../ref/index.js';
import { checkIndex, layoutExtent } from '../ref/kernels.js';
import { bytesPerElement, type DType, type TypedArray } from '../../tensor/dtype.js';
import { contiguousStrides, numel, sameShape } from '../../tensor/shape.js';
import { WasmRuntime, type WasmRuntimeOptions } from './runtime.js';
import { loadNative, type NativeInfo, type NativeKernels } from './platform.js';

export { WasmRuntime } from './runtime.js';

export class CpuStorage implements Storage {
  refs = 0;
  freed = false;
  constructor(
    readonly backend: Backend,
    readonly dtype: DType,
    readonly size: number,
    /** Byte offset of element 0 in the wasm memory. */
    readonly ptr: number,
    /** View of the elements; the memory is shared, so growth never detaches it. */
    public view: TypedArray,
  ) {}
}

const ACT_CODE = { none: 0, relu: 1, gelu: 2 } as const;
/** native/quant.h QuantFormat. */
const QUANT_CODE = { int8: 0, int4: 1, int4z: 2 } as const;
// The kernel applies the activation on its last K block, so accumulate + activation needs the
// whole K in one block (its KC).
const KERNEL_KC = 256;
// Below this many multiply-adds a matmul runs on the main thread only: waking a worker costs
// more than it saves.
const PARALLEL_MIN_MACS = 1 << 16;
// Element-wise kernels are memory-bound; a second thread pays off only on large arrays.
const PARALLEL_MIN_ELEMENTS = 1 << 16;
const BINARY_CODE: Partial<Record<BinaryOp, number>> = { add: 0, sub: 1, mul: 2, div: 3, max: 4, min: 5 };
const COMMUTATIVE = new Set<BinaryOp>(['add', 'mul', 'max', 'min']);
// The unary ops the native addon maps (native/rows.h UnaryCode).
const NATIVE_UNARY: Partial<Record<UnaryOp, number>> = { neg: 0, square: 1, abs: 2, relu: 3, sqrt: 4, recip: 5, rsqrt: 6, exp: 7, log: 8, tanh: 9, sigmoid: 10, silu: 11, gelu: 12 };

/**
 * Drops size-1 dims of `shape` and merges neighbouring dims that every stride list walks as
 * one (outer stride = inner stride * inner size), so strided views reduce to few loops.
 */
export function collapseDims(shape: readonly number[], strides: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const sh: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    const n = shape[d];
    if (n === 1) continue;
    const k = sh.length - 1;
    if (k >= 0 && strides.every((s, t) => st[t][k] === s[d] * n)) {
      sh[k] *= n;
      for (let t = 0; t < strides.length; t++) st[t][k] = strides[t][d];
    } else {
      sh.push(n);
      for (let t = 0; t < strides.length; t++) st[t].push(strides[t][d]);
    }
  }
  return { shape: sh, strides: st };
}

/** Two layouts of one shape collapsed (collapseDims) and padded in front to exactly 4 dims, the
 *  form the strided copy kernels take; null when they do not collapse to 4 or fewer. */
function collapseTo4(xl: Layout, ol: Layout): { shape: number[]; strides: [number[], number[]] } | null {
  const c = collapseDims(xl.shape, [xl.strides, ol.strides]);
  if (c.shape.length > 4) return null;
  while (c.shape.length < 4) {
    c.shape.unshift(1);
    c.strides[0]!.unshift(0);
    c.strides[1]!.unshift(0);
  }
  return { shape: c.shape, strides: [c.strides[0]!, c.strides[1]!] };
}

export class CpuBackend extends RefBackend {
  override readonly name: string = 'cpu';
  readonly rt: WasmRuntime;
  private readonly matmulScratch: number;
  /** The native addon's kernels where it loaded (Node), else null and `nativeWhy` says why. */
  readonly native: NativeKernels | null;
  readonly nativeInfo: NativeInfo | null;
  readonly nativeWhy: string;

  constructor(rt: WasmRuntime) {
    super();
    this.rt = rt;
    this.matmulScratch = Number(rt.exports.matmul_scratch_bytes());
    const n = loadNative(rt.threads);
    this.native = n.kernels;
    this.nativeInfo = n.kernels ? n.info : null;
    this.nativeWhy = n.kernels ? '' : n.why;
    this.int8Activations = !!this.nativeInfo?.int8Activations;
  }

  private int8Activations: boolean;
  /**
   * How int4 (and int4z) matmuls of a few rows (decode) take their activations on the native
   * path: float32 (the default: the reference's numbers up to float rounding), or int8 in
   * groups of 32, as llama.cpp does for its 4-bit types, with AVX-512 VNNI dot products (about
   * half the instructions per weight; perplexity in docs/quantization.md). Returns the mode in
   * effect: float32 where the processor has no VNNI or the kernels are WebAssembly.
   */
  setQuantActivations(mode: 'float32' | 'int8'): 'float32' | 'int8' {
    this.int8Activations = !!this.native?.quantInt8Activations?.(mode === 'int8');
    return this.int8Activations ? 'int8' : 'float32';
  }
  get quantActivations(): 'float32' | 'int8' {
    return this.int8Activations ? 'int8' : 'float32';
  }

  /** The native attention reads grouped kv heads in place. */
  override get groupedKV(): boolean {
    return this.native !== null;
  }

  /** The native attention reads strided q, k, v and writes a strided out (AttentionArgs.views). */
  override get stridedAttention(): boolean {
    return this.native !== null;
  }

  /** What runs the kernels, for `attn info`: the native set and its threads, or WebAssembly and why. */
  describeKernels(): string {
    const wasm = `WebAssembly SIMD${this.rt.relaxedSimd ? ' with relaxed-SIMD FMA' : ''}, ${this.rt.threads} threads`;
    if (!this.nativeInfo) return `${wasm} (native kernels not used: ${this.nativeWhy})`;
    const i = this.nativeInfo;
    return `native ${i.isa}${i.isa !== i.best ? ` (the processor has ${i.best})` : ''}, ${i.threads} threads, for matmul (float, bfloat16, int8/int4 weights${this.int8Activations ? '; int4 decode with int8 activations' : ''}), attention, norms, softmax, cross-entropy, AdamW, sums, copies and element-wise ops; ${wasm} for the rest`;
  }

  override supports(dtype: DType): boolean {
    // bfloat16: weights stored as the top halves of float32s, read by matmul_bf16b (B only),
    // embedding and the widening copy; the ops layer refuses it everywhere else.
    return dtype === 'float32' || dtype === 'int32' || dtype === 'bfloat16';
  }

  // ---- memory ----

  protected override arr(s: Storage): TypedArray {
    if (s.backend !== this) throw new Error(`${this.name} backend: storage belongs to the ${s.backend.name} backend`);
    if (s.freed) throw new Error(`${this.name} backend: use of a freed storage (${s.dtype}, ${s.size} elements)`);
    return (s as CpuStorage).view;
  }

  /** Byte pointer of element 0 of s in the wasm memory (checks s like arr does). */
  ptr(s: Storage): number {
    this.arr(s);
    return (s as CpuStorage).ptr;
  }

  /** A storage with undefined contents (alloc zero-fills on top of this). */
  protected allocRaw(dtype: DType, size: number): CpuStorage {
    this.checkAlloc(dtype, size);
    const ptr = this.rt.malloc(size * bytesPerElement(dtype));
    const view = dtype === 'int32' ? this.rt.i32(ptr, size) : dtype === 'bfloat16' ? this.rt.u16(ptr, size) : this.rt.f32(ptr, size);
    return new CpuStorage(this, dtype, size, ptr, view);
  }

  override alloc(dtype: DType, size: number, uninitialized = false): Storage {
    const s = this.allocRaw(dtype, size);
    if (uninitialized) return s; // the caller writes every element
    // Blocks are recycled, so they may hold old data. fill() on a shared buffer is slow in V8:
    // large blocks go to memset in the addon.
    if (this.native && size >= 1024) this.native.zero(this.rt.heapF32, s.ptr, size * bytesPerElement(dtype));
    else s.view.fill(0);
    return s;
  }

  /** Backend.readInto: one set() out of the heap (a fresh 200 KB array of GPT-2 logits cost 0.1-1
   *  ms here in page faults alone; the copy into a reused one 0.012-0.021 ms). */
  readInto(s: Storage, offset: number, dst: Float32Array): void {
    const view = this.arr(s);
    if (s.dtype !== 'float32') throw new TypeError(`readInto: a float32 storage, not ${s.dtype}`);
    if (!Number.isInteger(offset) || offset < 0 || offset + dst.length > s.size) {
      throw new RangeError(`readInto: ${dst.length} elements at offset ${offset} are outside a storage of ${s.size}`);
    }
    dst.set(view.subarray(offset, offset + dst.length));
  }

  override read(s: Storage, layout?: Layout): TypedArray {
    if (!layout || s.dtype === 'bfloat16') return super.read(s, layout);
    this.checkLayout('read', 'storage', s, layout);
    const n = numel(layout.shape);
    const view = this.arr(s);
    // A contiguous window (a row of logits, a slice of the batch) is one copy out of the heap.
    if (sameShape(layout.strides, contiguousStrides(layout.shape))) {
      return view.slice(layout.offset, layout.offset + n);
    }
    // Strided: gathered by the strided copy kernel, then one copy out.
    const tmp = this.allocRaw(s.dtype, n);
    try {
      if (!this.stridedCopy(s, layout, tmp, { shape: layout.shape, strides: contiguousStrides(layout.shape), offset: 0 })) return super.read(s, layout);
      return tmp.view.slice(0, n);
    } finally {
      this.free(tmp);
    }
  }

  override upload(data: ArrayLike<number>, dtype: DType): Storage {
    const s = this.allocRaw(dtype, data.length);
    s.view.set(data);
    return s;
  }

  override free(s: Storage): void {
    this.arr(s); // a double free is a use after free
    const cs = s as CpuStorage;
    cs.freed = true;
    this.rt.free(cs.ptr);
    cs.view = new Float32Array(0);
  }

  // ---- element-wise (wasm for float32 layouts that reduce to simple 2-D/4-D loops, else JS) ----

  override copy(x: Storage, xl: Layout, out: Storage): void {
    if (x.dtype === 'bfloat16' || out.dtype === 'bfloat16') {
      // Widening only (ops.to rounds to bfloat16 on the host); contiguous source.
      if (x.dtype !== 'bfloat16' || out.dtype !== 'float32' || !this.sameStrided(xl, { shape: xl.shape, strides: contiguousStrides(xl.shape), offset: xl.offset })) {
        throw new Error(`cpu backend: copy from ${x.dtype} to ${out.dtype}: bfloat16 widens to float32 only, from a contiguous source`);
      }
      const n = numel(xl.shape);
      this.need('copy', 'out', out, n);
      const src = this.arr(x).subarray(xl.offset, xl.offset + n) as Uint16Array;
      const dst = new Uint32Array((this.arr(out) as Float32Array).buffer, (out as CpuStorage).ptr, n);
      for (let i = 0; i < n; i++) dst[i] = src[i]! << 16;
      return;
    }
    const ol: Layout = { shape: xl.shape, strides: contiguousStrides(xl.shape), offset: 0 };
    // Same-dtype copies move 4-byte words (float32 or int32); conversions go through JS.
    if (x.dtype !== out.dtype || !this.sameStrided(xl, ol)) {
      super.copy(x, xl, out);
      return;
    }
    this.checkLayout('copy', 'x', x, xl);
    this.need('copy', 'out', out, numel(xl.shape));
    if (!this.stridedCopy(x, xl, out, ol)) super.copy(x, xl, out);
  }

  override copyInto(x: Storage, xl: Layout, out: Storage, outLayout: Layout): void {
    if (x.dtype !== out.dtype || !this.sameStrided(xl, outLayout)) {
      super.copyInto(x, xl, out, outLayout);
      return;
    }
    this.checkLayout('copyInto', 'x', x, xl);
    this.checkLayout('copyInto', 'out', out, outLayout);
    if (!this.stridedCopy(x, xl, out, outLayout)) super.copyInto(x, xl, out, outLayout);
  }

  /** One native strided copy per block with the layouts collapsed and checked once: at 8 decode rows
   *  copyInto per row cost more in JavaScript than the copies (and kept the kernels' worker idle
   *  long enough to fall asleep before the attention that follows). */
  override copyBlocks(x: Storage, xl: Layout, out: Storage, ol: Layout, xShift: readonly number[], outShift: readonly number[]): void {
    const n = xShift.length;
    if (!this.native || x.dtype !== 'float32' || out.dtype !== 'float32' || !this.sameStrided(xl, ol) || n !== outShift.length) {
      super.copyBlocks(x, xl, out, ol, xShift, outShift);
      return;
    }
    const c = collapseTo4(xl, ol);
    const ex = layoutExtent({ ...xl, offset: 0 });
    const eo = layoutExtent({ ...ol, offset: 0 });
    if (!c || !ex || !eo) {
      super.copyBlocks(x, xl, out, ol, xShift, outShift);
      return;
    }
    const [xs, os] = c.strides;
    const px = this.ptr(x), po = this.ptr(out);
    for (let i = 0; i < n; i++) {
      const fx = xl.offset + xShift[i]!, fo = ol.offset + outShift[i]!;
      if (fx + ex.min < 0 || fx + ex.max >= x.size || fo + eo.min < 0 || fo + eo.max >= out.size) {
        throw new RangeError(`copyBlocks: block ${i} (shape ${JSON.stringify(xl.shape)}) at source offset ${fx} and destination offset ${fo} falls outside storages of ${x.size} and ${out.size}`);
      }
      this.native.copyStrided(this.rt.heapF32, px + 4 * fx, po + 4 * fo, c.shape[0]!, c.shape[1]!, c.shape[2]!, c.shape[3]!,
        xs[0]!, xs[1]!, xs[2]!, xs[3]!, os[0]!, os[1]!, os[2]!, os[3]!, 1);
    }
  }

  override binary(op: BinaryOp, a: Storage, al: Layout, b: Storage, bl: Layout, out: Storage): void {
    const code = BINARY_CODE[op];
    if (code === undefined || a.dtype !== 'float32' || b.dtype !== 'float32' || out.dtype !== 'float32' ||
      !this.sameStrided(al, bl)) {
      super.binary(op, a, al, b, bl, out);
      return;
    }
    this.checkLayout(op, 'a', a, al);
    this.checkLayout(op, 'b', b, bl);
    const n = numel(al.shape);
    this.need(op, 'out', out, n);
    if (n === 0) return;
    if (!this.binary2d(code, this.ptr(a) + 4 * al.offset, al.strides, this.ptr(b) + 4 * bl.offset, bl.strides,
      al.shape, out)) {
      super.binary(op, a, al, b, bl, out);
    }
  }

  override binaryScalar(op: BinaryOp, a: Storage, al: Layout, s: number, reversed: boolean, out: Storage): void {
    const code = BINARY_CODE[op];
    if (code === undefined || a.dtype !== 'float32' || out.dtype !== 'float32') {
      super.binaryScalar(op, a, al, s, reversed, out);
      return;
    }
    this.checkLayout(op, 'a', a, al);
    const n = numel(al.shape);
    this.need(op, 'out', out, n);
    if (n === 0) return;
    // The scalar goes through a one-element operand with all strides 0.
    this.rt.f32(this.scalarSlot, 1)[0] = s;
    const zero = al.shape.map(() => 0);
    const pa = this.ptr(a) + 4 * al.offset;
    const done = reversed && !COMMUTATIVE.has(op)
      ? this.binary2d(code, this.scalarSlot, zero, pa, al.strides, al.shape, out)
      : this.binary2d(code, pa, al.strides, this.scalarSlot, zero, al.shape, out);
    if (!done) super.binaryScalar(op, a, al, s, reversed, out);
  }

  private scalarSlotPtr = 0;
  private get scalarSlot(): number {
    if (!this.scalarSlotPtr) this.scalarSlotPtr = this.rt.malloc(64);
    return this.scalarSlotPtr;
  }

  private sameStrided(a: Layout, b: Layout): boolean {
    return sameShape(a.shape, b.shape) && a.shape.length === a.strides.length && b.shape.length === b.strides.length;
  }

  /** Runs ew_binary_f32 when the layouts reduce to (outer, inner) with unit or zero inner
   *  strides; false when they do not (the caller falls back to JS). */
  private binary2d(code: number, pa: number, sa: readonly number[], pb: number, sb: readonly number[],
    shape: readonly number[], out: Storage): boolean {
    const c = collapseDims(shape, [sa, sb, contiguousStrides(shape)]);
    const r = c.shape.length;
    if (r > 2) return false;
    const inner = r ? c.shape[r - 1] : 1, outer = r === 2 ? c.shape[0] : 1;
    const aIn = r ? c.strides[0][r - 1] : 0, bIn = r ? c.strides[1][r - 1] : 0;
    if ((aIn !== 0 && aIn !== 1) || (bIn !== 0 && bIn !== 1)) return false;
    const aOut = r === 2 ? c.strides[0][0] : 0, bOut = r === 2 ? c.strides[1][0] : 0;
    if (this.native?.binary2d(this.rt.heapF32, code, pa, aIn, aOut, pb, bIn, bOut, this.ptr(out), outer, inner, this.nativeThreads())) return true;
    const threads = outer * inner >= PARALLEL_MIN_ELEMENTS ? this.rt.threads : 1;
    this.rt.run('ew_binary_f32', [code, pa, aIn, aOut, pb, bIn, bOut, this.ptr(out), outer, inner], threads);
    return true;
  }

  /** Runs copy_strided_32 when the layouts collapse to at most 4 dims; false otherwise. */
  private stridedCopy(x: Storage, xl: Layout, out: Storage, ol: Layout): boolean {
    const n = numel(xl.shape);
    if (n === 0) return true;
    const c = collapseTo4(xl, ol);
    if (!c) return false;
    if (this.native) {
      const [xs, os] = c.strides;
      this.native.copyStrided(this.rt.heapF32, this.ptr(x) + 4 * xl.offset, this.ptr(out) + 4 * ol.offset, c.shape[0]!, c.shape[1]!, c.shape[2]!, c.shape[3]!,
        xs[0]!, xs[1]!, xs[2]!, xs[3]!, os[0]!, os[1]!, os[2]!, os[3]!, this.nativeThreads());
      return true;
    }
    const threads = n >= PARALLEL_MIN_ELEMENTS ? this.rt.threads : 1;
    this.rt.run('copy_strided_32', [this.ptr(x) + 4 * xl.offset, this.ptr(out) + 4 * ol.offset,
      ...c.shape, ...c.strides[0], ...c.strides[1]], threads);
    return true;
  }

  // ---- linear algebra ----

  override matmul(args: MatmulArgs): void {
    const { a, b, out, bias } = args;
    const bBf16 = b.dtype === 'bfloat16';
    if (bBf16 && (a.dtype !== 'float32' || out.dtype !== 'float32' || (bias && bias.dtype !== 'float32'))) {
      throw new Error(`cpu backend: matmul with a bfloat16 right operand needs float32 a, bias and out (got ${a.dtype}, ${bias?.dtype ?? 'no bias'}, ${out.dtype})`);
    }
    if (!bBf16 && (a.dtype !== 'float32' || b.dtype !== 'float32' || out.dtype !== 'float32' || (bias && bias.dtype !== 'float32'))) {
      super.matmul(args); // int32 matmul: the JS kernel on wasm views
      return;
    }
    let { batch, M, K, aBatchStride } = args;
    const N = args.N;
    this.checkMatmul(args);
    if (batch * M * N === 0) return;
    const act = args.activation ?? 'none';
    // The native kernels split every accumulate + activation; the wasm one only past its K block.
    if (args.accumulate && act !== 'none' && (K > KERNEL_KC || this.native)) {
      // out += act(A B + bias): compute act(A B + bias) apart, then add.
      const tmp = this.allocRaw('float32', batch * M * N);
      try {
        this.matmul({ ...args, out: tmp, accumulate: false });
        const o = (out as CpuStorage).view, t = tmp.view;
        for (let i = 0; i < t.length; i++) o[i] += t[i];
      } finally {
        this.free(tmp);
      }
      return;
    }
    // A shared B over a batch of row-major A blocks laid end to end is one taller matmul.
    if (batch > 1 && args.bBatchStride === 0 && !args.transA && aBatchStride === M * args.lda) {
      M *= batch;
      batch = 1;
      aBatchStride = 0;
    }
    const macs = batch * M * N * K;
    const bf16Compute = args.precision === 'bfloat16';
    if (this.native) {
      this.native.matmul(this.rt.heapF32, this.ptr(a) + 4 * args.aOffset, aBatchStride, args.lda, args.transA ? 1 : 0,
        this.ptr(b) + (bBf16 ? 2 : 4) * args.bOffset, args.bBatchStride, args.ldb, args.transB ? 1 : 0, bBf16 ? 1 : 0,
        this.ptr(out), batch, M, N, K, bias ? this.ptr(bias) : 0, ACT_CODE[act], args.accumulate ? 1 : 0, this.nativeThreads(), bf16Compute ? 1 : 0);
      return;
    }
    if (bf16Compute) {
      // WebAssembly: the float32 kernel on operands rounded to bfloat16 (exact emulation).
      const ra = this.roundedCopy(a), rb = bBf16 ? null : this.roundedCopy(b);
      try {
        this.matmul({ ...args, a: ra, b: rb ?? b, precision: 'float32' });
      } finally {
        this.free(ra);
        if (rb) this.free(rb);
      }
      return;
    }
    const threads = macs < PARALLEL_MIN_MACS ? 1 : this.rt.threads;
    const scratch = this.rt.scratch(this.matmulScratch);
    this.rt.run(bBf16 ? 'matmul_bf16b' : 'matmul_f32', [
      this.ptr(a) + 4 * args.aOffset, aBatchStride, args.lda, args.transA ? 1 : 0,
      this.ptr(b) + (bBf16 ? 2 : 4) * args.bOffset, args.bBatchStride, args.ldb, args.transB ? 1 : 0,
      this.ptr(out), batch, M, N, K,
      bias ? this.ptr(bias) : 0, ACT_CODE[act], args.accumulate ? 1 : 0,
      scratch, this.matmulScratch,
    ], threads);
  }

  /** Only with the native kernels (the ops layer composes silu and mul otherwise). */
  override rope(x: Storage, cos: Storage, sin: Storage, out: Storage, rows: number, H: number, T: number, D: number, rd: number, offset: number, inverse: boolean): void {
    if (!this.native) return super.rope(x, cos, sin, out, rows, H, T, D, rd, offset, inverse); // WebAssembly: ref's loop over the heap
    this.need('rope', 'x', x, rows * D);
    this.need('rope', 'out', out, rows * D);
    for (const [name, s] of [['cos', cos], ['sin', sin]] as const) this.need('rope', name, s, (T + offset) * (rd / 2));
    if (!this.f32(x, cos, sin, out)) throw new TypeError('rope: float32 operands only');
    this.native.rope(this.rt.heapF32, this.ptr(x), this.ptr(cos), this.ptr(sin), this.ptr(out), rows, H, T, D, rd, offset, inverse ? 1 : 0, this.nativeThreads());
  }
  get encodeDecodePlan(): Backend['encodeDecodePlan'] {
    return this.native?.decodeStep ? this.encodeDecodePlanNative : undefined;
  }
  get decodeStep(): Backend['decodeStep'] {
    return this.native?.decodeStep ? this.decodeStepNative : undefined;
  }
  /** The plan as native/decode.cc reads it: numbers (byte offsets into the heap, sizes) in order. */
  private readonly encodeDecodePlanNative = (p: DecodePlan | GPTDecodePlan): Float64Array => {
    const out: number[] = [];
    const buf = (b: DecodeBuffer | null): number => (b ? this.ptr(b.storage) + 4 * b.offset : 0);
    const st = (s: Storage): number => this.ptr(s);
    const matrix = (m: DecodeMatrix | null): void => {
      if (!m) {
        out.push(-1, 0, 0, 0, 0, 0, 0);
        return;
      }
      if (m.quant) {
        const q = m.quant;
        out.push(1 + QUANT_CODE[q.format], this.ptr(q.data), this.ptr(q.scales), q.zeros ? this.ptr(q.zeros) : 0);
      } else {
        out.push(0, buf(m.float), 0, 0);
      }
      out.push(buf(m.bias), m.N, m.K);
    };
    if (p.kind === 'gpt') {
      const s = p.scratch;
      out.push(1, p.layers.length, p.C, p.H, p.Hkv, p.D, p.I, p.V, p.eps, p.rms ? 1 : 0, ACT_CODE[p.activation], p.rd);
      matrix(p.wte);
      matrix(p.positions);
      out.push(buf(p.cos), buf(p.sin), buf(p.lnf), buf(p.lnfBias));
      matrix(p.head);
      for (const x of [s.x, s.h, s.qkv, s.qRot, s.kRot, s.att, s.lse, s.fc, s.o, s.mean, s.rstd]) out.push(st(x));
      for (const l of p.layers) {
        out.push(buf(l.ln1), buf(l.ln1Bias), buf(l.ln2), buf(l.ln2Bias), buf(l.kCache), buf(l.vCache), l.capacity);
        for (const m of [l.qkv, l.attnProj, l.fc, l.mlpProj]) matrix(m);
      }
      return Float64Array.from(out);
    }
    const s = p.scratch;
    out.push(0, p.layers.length, p.C, p.H, p.Hkv, p.D, p.rd, p.I, p.V, p.eps);
    matrix(p.embed);
    out.push(buf(p.finalNorm));
    matrix(p.head);
    out.push(buf(p.cos), buf(p.sin));
    for (const x of [s.x, s.h, s.q, s.qRot, s.k, s.kRot, s.v, s.att, s.lse, s.gate, s.up, s.act, s.o, s.rstd]) out.push(st(x));
    for (const l of p.layers) {
      out.push(buf(l.inNorm), buf(l.postNorm), buf(l.qNorm), buf(l.kNorm), l.window, buf(l.kCache), buf(l.vCache), l.capacity);
      for (const m of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) matrix(m);
    }
    return Float64Array.from(out);
  };
  private readonly decodeStepNative = (encoded: unknown, token: number, pos: number, logits: Storage): void => {
    if (!this.native!.decodeStep!(this.rt.heapF32, encoded as Float64Array, token, pos, this.ptr(logits), this.nativeThreads())) {
      throw new RangeError(`decodeStep: token ${token} is outside the vocabulary`);
    }
  };
  get sampleTempered(): Backend['sampleTempered'] {
    return this.native?.sampleTempered ? this.sampleTemperedNative : undefined;
  }
  private readonly sampleTemperedNative = (logits: Storage, offset: number, V: number, rows: Int32Array, temperatures: Float64Array, uniforms: Float64Array): Int32Array => {
    const n = rows.length;
    if (temperatures.length !== n || uniforms.length !== n) throw new RangeError(`sampleTempered: ${n} rows but ${temperatures.length} temperatures and ${uniforms.length} uniforms`);
    let last = -1;
    for (let i = 0; i < n; i++) {
      if (!(temperatures[i]! > 0)) throw new RangeError(`sampleTempered: temperature ${temperatures[i]} of row ${rows[i]} is not positive`);
      last = Math.max(last, rows[i]!);
    }
    this.need('sampleTempered', 'logits', logits, offset + (last + 1) * V);
    if (!this.f32(logits)) throw new TypeError('sampleTempered: float32 logits only');
    const out = new Int32Array(n);
    this.native!.sampleTempered!(this.rt.heapF32, this.ptr(logits) + 4 * offset, V, rows, temperatures, uniforms, out, this.nativeThreads());
    return out;
  };
  get swiglu(): Backend['swiglu'] {
    return this.native ? this.swigluNative : undefined;
  }
  get swigluBackward(): Backend['swigluBackward'] {
    return this.native ? this.swigluBackwardNative : undefined;
  }
  private readonly swigluNative = (gate: Storage, up: Storage, n: number, out: Storage): void => {
    for (const [name, s] of [['gate', gate], ['up', up], ['out', out]] as const) this.need('swiglu', name, s, n);
    if (!this.f32(gate, up, out)) throw new TypeError('swiglu: float32 operands only');
    this.native!.swiglu(this.rt.heapF32, this.ptr(gate), this.ptr(up), this.ptr(out), n, this.nativeThreads());
  };
  private readonly swigluBackwardNative = (gate: Storage, up: Storage, gy: Storage, n: number, gGate: Storage, gUp: Storage): void => {
    for (const [name, s] of [['gate', gate], ['up', up], ['gy', gy], ['gGate', gGate], ['gUp', gUp]] as const) this.need('swigluBackward', name, s, n);
    if (!this.f32(gate, up, gy, gGate, gUp)) throw new TypeError('swigluBackward: float32 operands only');
    this.native!.swigluBackward(this.rt.heapF32, this.ptr(gate), this.ptr(up), this.ptr(gy), this.ptr(gGate), this.ptr(gUp), n, this.nativeThreads());
  };

  override embeddingBackward(gy: Storage, ids: Storage, n: number, V: number, C: number, gw: Storage): void {
    if (!this.native || !this.f32(gy, gw) || ids.dtype !== 'int32') return super.embeddingBackward(gy, ids, n, V, C, gw);
    this.need('embeddingBackward', 'gy', gy, n * C);
    this.need('embeddingBackward', 'ids', ids, n);
    this.need('embeddingBackward', 'gw', gw, V * C);
    const bad = this.native.embeddingBackward(this.rt.heapF32, this.ptr(gy), this.ptr(ids), n, V, C, this.ptr(gw), this.nativeThreads());
    this.refuseIndex('embeddingBackward', ids, bad, V);
  }

  /** A float32 copy of s (every element) rounded to bfloat16 values. */
  private roundedCopy(s: Storage): Storage {
    return this.upload(roundedToBf16(this.arr(s)), 'float32');
  }

  /** Quantized weights: the native kernels (dequantizing in registers), else WebAssembly, else JS. */
  override quantMatmul(args: QuantMatmulArgs): void {
    const { w, M } = args;
    this.checkQuant('quantMatmul', w);
    this.need('quantMatmul', 'x', args.x, M * w.K);
    this.need('quantMatmul', 'out', args.out, M * w.N);
    if (args.bias) this.need('quantMatmul', 'bias', args.bias, w.N);
    if (M === 0) return;
    if (this.native) {
      this.native.quantMatmul(this.rt.heapF32, QUANT_CODE[w.format], this.ptr(w.data), this.ptr(w.scales), w.zeros ? this.ptr(w.zeros) : 0,
        w.N, w.K, this.ptr(args.x), M, args.bias ? this.ptr(args.bias) : 0, ACT_CODE[args.activation ?? 'none'], this.ptr(args.out), this.nativeThreads());
      return;
    }
    if (!wasmQuantMatmul(this, args)) super.quantMatmul(args);
  }

  override quantEmbedding(w: QuantWeightStorage, ids: Storage, n: number, out: Storage): void {
    if (!wasmQuantEmbedding(this, w, ids, n, out)) super.quantEmbedding(w, ids, n, out);
  }

  override embedding(weight: Storage, V: number, C: number, ids: Storage, n: number, out: Storage): void {
    if (this.native && (weight.dtype === 'float32' || weight.dtype === 'bfloat16') && ids.dtype === 'int32' && out.dtype === 'float32') {
      this.need('embedding', 'weight', weight, V * C);
      this.need('embedding', 'ids', ids, n);
      this.need('embedding', 'out', out, n * C);
      const bad = this.native.embedding(this.rt.heapF32, this.ptr(weight), weight.dtype === 'bfloat16' ? 1 : 0, V, C, this.ptr(ids), n, this.ptr(out), this.nativeThreads());
      return this.refuseIndex('embedding', ids, bad, V);
    }
    if (weight.dtype !== 'bfloat16') return super.embedding(weight, V, C, ids, n, out);
    // Rows of a bfloat16 table, widened; an id out of range throws as the JS kernel does.
    this.need('embedding', 'weight', weight, V * C);
    this.needInt32('embedding', 'ids', ids);
    this.need('embedding', 'ids', ids, n);
    this.need('embedding', 'out', out, n * C);
    const w = this.arr(weight) as Uint16Array;
    const id = this.arr(ids);
    const o = new Uint32Array((this.arr(out) as Float32Array).buffer, (out as CpuStorage).ptr, n * C);
    for (let i = 0; i < n; i++) {
      const r = id[i]!;
      checkIndex('embedding', r, i, V);
      for (let c = 0; c < C; c++) o[i * C + c] = w[r * C + c]! << 16;
    }
  }

  // ---- fused Transformer kernels (assembly/fused.ts); anything not float32 uses the JS kernels ----

  private f32(...ss: (Storage | null | undefined)[]): boolean {
    for (const s of ss) if (s && s.dtype !== 'float32') return false;
    return true;
  }

  private p(s: Storage): fused.Ptr {
    return { ptr: this.ptr(s) };
  }

  private pn(s: Storage | null | undefined): fused.Ptr | null {
    return s ? this.p(s) : null;
  }

  /** Byte pointer of s, 0 for none (the native kernels' "absent"). */
  private p0(s: Storage | null | undefined): number {
    return s ? this.ptr(s) : 0;
  }

  /** A native kernel's "first bad index at position `bad`" (-1: none) as the reference's RangeError. */
  private refuseIndex(op: string, index: Storage, bad: number, limit: number): void {
    if (bad >= 0) checkIndex(op, this.arr(index)[bad]!, bad, limit);
  }

  override unary(op: UnaryOp, x: Storage, xl: Layout, out: Storage): void {
    const contiguousX = xl.offset === 0 && sameShape(xl.strides, contiguousStrides(xl.shape));
    const code = NATIVE_UNARY[op];
    if (this.native && code !== undefined && contiguousX && this.f32(x, out)) {
      const n = numel(xl.shape);
      this.need('unary', 'x', x, n);
      this.need('unary', 'out', out, n);
      if (this.native.unary(this.rt.heapF32, code, this.ptr(x), this.ptr(out), n, this.nativeThreads())) return;
    }
    if (op === 'gelu' && contiguousX && this.f32(x, out)) {
      this.need('unary', 'x', x, numel(xl.shape));
      this.need('unary', 'out', out, numel(xl.shape));
      fused.gelu(this.rt, this.p(x), this.p(out), numel(xl.shape));
      return;
    }
    super.unary(op, x, xl, out);
  }

  override unaryBackward(op: UnaryGradOp, x: Storage, gy: Storage, gx: Storage, n: number): void {
    if (op === 'gelu' && this.f32(x, gy, gx)) {
      for (const [name, s] of [['x', x], ['gy', gy], ['gx', gx]] as const) this.need('unaryBackward', name, s, n);
      if (this.native) return this.native.geluBackward(this.rt.heapF32, this.ptr(x), this.ptr(gy), this.ptr(gx), n, this.nativeThreads());
      fused.geluBackward(this.rt, this.p(x), this.p(gy), this.p(gx), n);
      return;
    }
    super.unaryBackward(op, x, gy, gx, n);
  }

  override reduce(op: ReduceOp, x: Storage, outer: number, n: number, inner: number, out: Storage): void {
    if (this.native && op === 'sum' && this.f32(x, out)) {
      this.need('reduce', 'x', x, outer * n * inner);
      this.need('reduce', 'out', out, outer * inner);
      this.native.reduceSum(this.rt.heapF32, this.ptr(x), outer, n, inner, this.ptr(out), this.nativeThreads());
      return;
    }
    super.reduce(op, x, outer, n, inner, out);
  }

  private nativeThreads(): number {
    return Math.min(this.rt.threads, this.nativeInfo!.threads);
  }

  override softmax(x: Storage, rows: number, n: number, log: boolean, out: Storage): void {
    if (!this.f32(x, out)) return super.softmax(x, rows, n, log, out);
    this.need('softmax', 'x', x, rows * n);
    this.need('softmax', 'out', out, rows * n);
    if (this.native) return this.native.softmax(this.rt.heapF32, this.ptr(x), rows, n, log ? 1 : 0, this.ptr(out), this.nativeThreads());
    fused.softmax(this.rt, this.p(x), rows, n, log, this.p(out));
  }

  override softmaxBackward(y: Storage, gy: Storage, rows: number, n: number, log: boolean, gx: Storage): void {
    if (!this.f32(y, gy, gx)) return super.softmaxBackward(y, gy, rows, n, log, gx);
    for (const [name, s] of [['y', y], ['gy', gy], ['gx', gx]] as const) this.need('softmaxBackward', name, s, rows * n);
    if (this.native) return this.native.softmaxBackward(this.rt.heapF32, this.ptr(y), this.ptr(gy), rows, n, log ? 1 : 0, this.ptr(gx), this.nativeThreads());
    fused.softmaxBackward(this.rt, this.p(y), this.p(gy), rows, n, log, this.p(gx));
  }

  override layerNorm(x: Storage, w: Storage | null, b: Storage | null, rows: number, n: number, eps: number,
    out: Storage, mean: Storage, rstd: Storage): void {
    if (!this.f32(x, w, b, out, mean, rstd)) return super.layerNorm(x, w, b, rows, n, eps, out, mean, rstd);
    this.checkNorm('layerNorm', x, w, b, rows, n, out, mean, rstd);
    if (this.native) {
      return this.native.layerNorm(this.rt.heapF32, this.ptr(x), this.p0(w), this.p0(b), rows, n, eps, this.ptr(out), this.ptr(mean), this.ptr(rstd), this.nativeThreads());
    }
    fused.layerNorm(this.rt, this.p(x), this.pn(w), this.pn(b), rows, n, eps, this.p(out), this.p(mean), this.p(rstd));
  }

  override layerNormBackward(x: Storage, w: Storage | null, mean: Storage, rstd: Storage, gy: Storage,
    rows: number, n: number, gx: Storage, gw: Storage | null, gb: Storage | null): void {
    if (!this.f32(x, w, mean, rstd, gy, gx, gw, gb)) return super.layerNormBackward(x, w, mean, rstd, gy, rows, n, gx, gw, gb);
    this.checkNorm('layerNormBackward', x, w, gb, rows, n, gy, mean, rstd);
    this.need('layerNormBackward', 'gx', gx, rows * n);
    if (gw) this.need('layerNormBackward', 'gw', gw, n);
    if (this.native) {
      return this.native.layerNormBackward(this.rt.heapF32, this.ptr(x), this.p0(w), this.ptr(mean), this.ptr(rstd), this.ptr(gy), rows, n,
        this.ptr(gx), this.p0(gw), this.p0(gb), this.nativeThreads());
    }
    fused.layerNormBackward(this.rt, this.p(x), this.pn(w), this.p(mean), this.p(rstd), this.p(gy), rows, n, this.p(gx), this.pn(gw), this.pn(gb));
  }

  override rmsNorm(x: Storage, w: Storage | null, rows: number, n: number, eps: number, out: Storage, rstd: Storage): void {
    if (!this.f32(x, w, out, rstd)) return super.rmsNorm(x, w, rows, n, eps, out, rstd);
    this.checkNorm('rmsNorm', x, w, null, rows, n, out, null, rstd);
    if (this.native) return this.native.rmsNorm(this.rt.heapF32, this.ptr(x), this.p0(w), rows, n, eps, this.ptr(out), this.ptr(rstd), this.nativeThreads());
    fused.rmsNorm(this.rt, this.p(x), this.pn(w), rows, n, eps, this.p(out), this.p(rstd));
  }

  override rmsNormBackward(x: Storage, w: Storage | null, rstd: Storage, gy: Storage, rows: number, n: number,
    gx: Storage, gw: Storage | null): void {
    if (!this.f32(x, w, rstd, gy, gx, gw)) return super.rmsNormBackward(x, w, rstd, gy, rows, n, gx, gw);
    this.checkNorm('rmsNormBackward', x, w, null, rows, n, gy, null, rstd);
    this.need('rmsNormBackward', 'gx', gx, rows * n);
    if (gw) this.need('rmsNormBackward', 'gw', gw, n);
    if (this.native) {
      return this.native.rmsNormBackward(this.rt.heapF32, this.ptr(x), this.p0(w), this.ptr(rstd), this.ptr(gy), rows, n, this.ptr(gx), this.p0(gw), this.nativeThreads());
    }
    fused.rmsNormBackward(this.rt, this.p(x), this.pn(w), this.p(rstd), this.p(gy), rows, n, this.p(gx), this.pn(gw));
  }

  /** Size checks shared by the norm kernels: a kernel must never touch memory outside a storage. */
  private checkNorm(op: string, x: Storage, w: Storage | null, b: Storage | null, rows: number, n: number,
    out: Storage, mean: Storage | null, rstd: Storage): void {
    this.need(op, 'x', x, rows * n);
    this.need(op, 'out', out, rows * n);
    if (w) this.need(op, 'w', w, n);
    if (b) this.need(op, 'b', b, n);
    if (mean) this.need(op, 'mean', mean, rows);
    this.need(op, 'rstd', rstd, rows);
  }

  override crossEntropy(logits: Storage, targets: Storage, N: number, V: number, ignoreIndex: number,
    smoothing: number, losses: Storage, lse: Storage): void {
    if (!this.f32(logits, losses, lse) || targets.dtype !== 'int32') return super.crossEntropy(logits, targets, N, V, ignoreIndex, smoothing, losses, lse);
    this.need('crossEntropy', 'logits', logits, N * V);
    this.need('crossEntropy', 'targets', targets, N);
    this.need('crossEntropy', 'losses', losses, N);
    this.need('crossEntropy', 'lse', lse, N);
    if (this.native) {
      const bad = this.native.crossEntropy(this.rt.heapF32, this.ptr(logits), this.ptr(targets), N, V, ignoreIndex, smoothing, this.ptr(losses), this.ptr(lse), this.nativeThreads());
      return this.refuseIndex('crossEntropy', targets, bad, V);
    }
    fused.crossEntropy(this.rt, this.p(logits), this.p(targets), N, V, ignoreIndex, smoothing, this.p(losses), this.p(lse));
  }

  override crossEntropyBackward(logits: Storage, targets: Storage, lse: Storage, scale: Storage, N: number, V: number,
    ignoreIndex: number, smoothing: number, gx: Storage): void {
    if (!this.f32(logits, lse, scale, gx) || targets.dtype !== 'int32') {
      return super.crossEntropyBackward(logits, targets, lse, scale, N, V, ignoreIndex, smoothing, gx);
    }
    this.need('crossEntropyBackward', 'logits', logits, N * V);
    this.need('crossEntropyBackward', 'gx', gx, N * V);
    this.need('crossEntropyBackward', 'targets', targets, N);
    this.need('crossEntropyBackward', 'lse', lse, N);
    this.need('crossEntropyBackward', 'scale', scale, N);
    if (this.native) {
      const bad = this.native.crossEntropyBackward(this.rt.heapF32, this.ptr(logits), this.ptr(targets), this.ptr(lse), this.ptr(scale), N, V, ignoreIndex, smoothing,
        this.ptr(gx), this.nativeThreads());
      return this.refuseIndex('crossEntropyBackward', targets, bad, V);
    }
    fused.crossEntropyBackward(this.rt, this.p(logits), this.p(targets), this.p(lse), this.p(scale), N, V, ignoreIndex, smoothing, this.p(gx));
  }

  override attention(a: AttentionArgs): void {
    this.groupedOnlyNative(a);
    if (!this.f32(a.q, a.k, a.v, a.out, a.lse) || (a.keyMask && a.keyMask.dtype !== 'int32')) return super.attention(a);
    this.checkAttention('attention', a);
    if (this.native) return this.nativeAttention(a, null);
    fused.attention(this.rt, { ...a, q: this.p(a.q), k: this.p(a.k), v: this.p(a.v), out: this.p(a.out), lse: this.p(a.lse), keyMask: this.pn(a.keyMask) });
  }

  override attentionBackward(a: AttentionBackwardArgs): void {
    this.groupedOnlyNative(a);
    if (!this.f32(a.q, a.k, a.v, a.out, a.lse, a.gout, a.gq, a.gk, a.gv) || (a.keyMask && a.keyMask.dtype !== 'int32')) return super.attentionBackward(a);
    this.checkAttention('attentionBackward', a);
    const { B, H, Tq, Tk, D } = a;
    this.need('attentionBackward', 'gout', a.gout, B * H * Tq * D);
    this.need('attentionBackward', 'gq', a.gq, B * H * Tq * D);
    this.need('attentionBackward', 'gk', a.gk, B * (a.Hkv ?? H) * Tk * D);
    this.need('attentionBackward', 'gv', a.gv, B * (a.Hkv ?? H) * Tk * D);
    if (this.native) return this.nativeAttention(a, a);
    fused.attentionBackward(this.rt, {
      ...a, q: this.p(a.q), k: this.p(a.k), v: this.p(a.v), out: this.p(a.out), lse: this.p(a.lse), keyMask: this.pn(a.keyMask),
      gout: this.p(a.gout), gq: this.p(a.gq), gk: this.p(a.gk), gv: this.p(a.gv),
    });
  }

  private groupedOnlyNative(a: AttentionArgs): void {
    if (a.views && !this.native) throw new Error('cpu backend: strided attention operands need the native kernels');
    if ((a.Hkv ?? a.H) !== a.H && (!this.native || !this.f32(a.q, a.k, a.v))) {
      throw new Error(`cpu backend: attention with ${a.Hkv} kv heads for ${a.H} query heads needs the native kernels and float32`);
    }
  }

  /** The native fused attention: forward, or backward when `grads` is given. */
  private nativeAttention(a: AttentionArgs, grads: AttentionBackwardArgs | null): void {
    const sp = a.sparsity;
    const kind = !sp ? 0 : sp.kind === 'window' ? 1 : sp.kind === 'strided' ? 2 : 3;
    const spA = !sp ? 0 : sp.kind === 'window' ? sp.window : sp.kind === 'strided' ? sp.stride : sp.block;
    const spB = sp?.kind === 'fixed' ? sp.summary : 0;
    const vw = a.views;
    const at = (st: Storage, v: AttentionView | undefined) => this.ptr(st) + 4 * (v?.offset ?? 0);
    this.native!.attention(this.rt.heapF32, at(a.q, vw?.q), at(a.k, vw?.k), at(a.v, vw?.v), at(a.out, vw?.out), this.ptr(a.lse), a.keyMask ? this.ptr(a.keyMask) : 0,
      a.B, a.H, a.Tq, a.Tk, a.D, a.scale, a.causal ? 1 : 0, kind, spA, spB,
      grads ? this.ptr(grads.gout) : 0, grads ? this.ptr(grads.gq) : 0, grads ? this.ptr(grads.gk) : 0, grads ? this.ptr(grads.gv) : 0, grads ? 1 : 0,
      // The addon takes the layouts as strides, contiguous when absent.
      this.nativeThreads(), a.Hkv ?? a.H, ...(vw ? [...vw.q.strides, ...vw.k.strides, ...vw.v.strides, ...vw.out.strides] : []));
  }

  override adamw(a: AdamWArgs): void {
    if (!this.f32(a.param, a.grad, a.m, a.v)) return super.adamw(a);
    for (const [name, s] of [['param', a.param], ['grad', a.grad], ['m', a.m], ['v', a.v]] as const) this.need('adamw', name, s, a.n);
    if (this.native) {
      return this.native.adamw(this.rt.heapF32, this.ptr(a.param), this.ptr(a.grad), this.ptr(a.m), this.ptr(a.v), a.n, a.lr, a.beta1, a.beta2, a.eps, a.weightDecay,
        a.bc1, a.bc2, this.nativeThreads());
    }
    fused.adamw(this.rt, { ...a, param: this.p(a.param), grad: this.p(a.grad), m: this.p(a.m), v: this.p(a.v) });
  }

  /** Bytes of the wasm heap in use by live storages (for memory tests and benchmarks). */
  memoryStats(): { bytesInUse: number; heapBytes: number } {
    return { bytesInUse: this.rt.liveBytes, heapBytes: this.rt.heapBytes };
  }

  /** Stops the worker threads; the backend must not be used afterwards. */
  dispose(): void {
    this.rt.dispose();
  }
}

export async function createCpuBackend(opts: WasmRuntimeOptions = {}): Promise<CpuBackend> {
  return new CpuBackend(await WasmRuntime.create(opts));
}
