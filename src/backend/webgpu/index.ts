// The webgpu backend, engine side: storages are ids of GPU buffers owned by the device thread
// (see protocol.ts); every op becomes a kernel command, sent in batches; a read flushes the
// batch and blocks until the device thread answers. Nothing here touches WebGPU itself, so
// this file runs wherever the engine runs (Node's main thread, a browser Web Worker).
import type {
  AdamWArgs, AttentionArgs, AttentionBackwardArgs, Backend, BinaryOp, Layout, MatmulArgs, QuantMatmulArgs, QuantWeightStorage, ReduceOp, Storage, UnaryGradOp, UnaryOp,
} from '../backend.js';
import { checkSparsity } from '../backend.js';
import { quantUnsupported } from '../../tensor/quantize.js';
import { bytesPerElement, newArray, type DType, type TypedArray } from '../../tensor/dtype.js';
import { contiguousStrides, numel } from '../../tensor/shape.js';
import type { DeviceChannel } from './channel.js';
import { KERNEL_TIMES_ID, REPLY_DATA_BYTES, type AdapterDescription, type BufRef, type Cmd } from './protocol.js';

export class GpuStorage implements Storage {
  refs = 0;
  freed = false;
  constructor(readonly backend: Backend, readonly dtype: DType, readonly size: number, readonly id: number) {}
}

/** Commands are posted once this many are queued (a read posts at once). */
const BATCH = 256;

function isContiguous(l: Layout): boolean {
  const c = contiguousStrides(l.shape);
  return l.shape.every((n, d) => n === 1 || l.strides[d] === c[d]);
}

/** The kernel arguments that may be float16 storages (kernel.arg). */
const HALF_ARGS = new Set(['matmul.b', 'embedding.weight', 'copy.x', 'copy.out']);

export class WebGPUBackend implements Backend {
  readonly name = 'webgpu';
  private nextId = 1;
  private queue: Cmd[] = [];
  /** Device-side storages alive (for leak checks). */
  live = 0;
  /** Milliseconds this thread has spent blocked on reads (benchmarks: a step's time minus
   *  this is the engine's own work of issuing it). */
  waitMs = 0;

  constructor(private readonly channel: DeviceChannel) {}

  get adapter(): AdapterDescription {
    return this.channel.adapter;
  }

  supports(dtype: DType): boolean {
    // float16: weights stored as halves (see kernels/half.ts); every adapter, no shader-f16.
    return dtype === 'float32' || dtype === 'int32' || dtype === 'float16';
  }

  // ---- plumbing ----

  private push(cmd: Cmd): void {
    this.queue.push(cmd);
    if (this.queue.length >= BATCH) this.flush();
  }

  /** Sends queued commands to the device thread. */
  flush(): void {
    if (this.queue.length === 0) return;
    const cmds = this.queue;
    this.queue = [];
    this.channel.post({ type: 'batch', cmds });
  }

  private ref(s: Storage, what: string): BufRef {
    if (s.backend !== this) throw new Error(`webgpu backend: ${what} belongs to the ${s.backend.name} backend`);
    if (s.freed) throw new Error(`webgpu backend: ${what} was freed (${s.dtype}, ${s.size} elements)`);
    return { id: (s as GpuStorage).id, dtype: s.dtype };
  }

  /** Queues kernel `name` with args, storages turned into BufRefs. */
  private kernel(name: string, args: Record<string, unknown>): void {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(args)) {
      if (v instanceof GpuStorage && v.dtype === 'float16' && !HALF_ARGS.has(`${name}.${k}`)) {
        throw new TypeError(`webgpu backend: ${name} does not take float16 (${k}); float16 is a storage dtype for weights, read by linear, matmul (right operand) and embedding: convert with .to('float32')`);
      }
      out[k] = v instanceof GpuStorage ? this.ref(v, `${name}: ${k}`) : v;
    }
    this.push({ op: 'kernel', name, args: out });
  }

  private readBytes(id: number, byteOffset: number, byteLength: number): Uint8Array {
    const out = new Uint8Array(byteLength);
    for (let done = 0; done < byteLength || byteLength === 0; done += REPLY_DATA_BYTES) {
      const len = Math.min(REPLY_DATA_BYTES, byteLength - done);
      this.queue.push({ op: 'read', id, byteOffset: byteOffset + done, byteLength: len });
      this.flush();
      const t0 = performance.now();
      const reply = this.channel.waitReply();
      this.waitMs += performance.now() - t0;
      out.set(reply, done);
      if (byteLength === 0) break;
    }
    return out;
  }

  /** GPU milliseconds per kernel since the last call (timestamp queries), or null unless the
   *  device thread runs with ATTN_WEBGPU_PROFILE=1 on an adapter with 'timestamp-query'. */
  kernelTimes(): { kernel: string; calls: number; ms: number }[] | null {
    this.queue.push({ op: 'read', id: KERNEL_TIMES_ID, byteOffset: 0, byteLength: 0 });
    this.flush();
    return JSON.parse(new TextDecoder().decode(this.channel.waitReply())) as { kernel: string; calls: number; ms: number }[] | null;
  }

  /** Waits until the device has finished everything sent so far, and reports device errors. */
  sync(): void {
    this.readBytes(0, 0, 0);
  }

  // ---- memory ----

  alloc(dtype: DType, size: number, uninitialized = false): Storage {
    if (!this.supports(dtype)) throw new TypeError(`webgpu backend: dtype ${dtype} is not supported (float32, int32 and float16 are)`);
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`webgpu backend: bad storage size ${size}`);
    const s = new GpuStorage(this, dtype, size, this.nextId++);
    this.push(uninitialized ? { op: 'alloc', id: s.id, bytes: size * bytesPerElement(dtype), uninitialized } : { op: 'alloc', id: s.id, bytes: size * bytesPerElement(dtype) });
    this.live++;
    return s;
  }

  upload(data: ArrayLike<number>, dtype: DType): Storage {
    const s = this.alloc(dtype, data.length);
    this.write(s, data, 0);
    return s;
  }

  write(s: Storage, data: ArrayLike<number>, offset: number): void {
    const r = this.ref(s, 'write');
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > s.size) {
      throw new RangeError(`write: ${data.length} elements at offset ${offset} do not fit in a storage of ${s.size}`);
    }
    if (data.length === 0) return;
    if (s.dtype === 'float16') {
      // Writes move whole 4-byte words: start on an even element; an odd count is padded (the
      // buffer is rounded up to 4 bytes, so the pad lands inside it).
      if (offset % 2 !== 0) throw new RangeError(`write: float16 writes start at an even element (got ${offset})`);
      const typed = new Uint16Array(data.length + (data.length % 2));
      typed.set(data);
      this.push({ op: 'write', id: r.id, byteOffset: offset * 2, data: typed.buffer as ArrayBuffer });
      return;
    }
    const typed = newArray(s.dtype, data.length);
    typed.set(data);
    this.push({ op: 'write', id: r.id, byteOffset: offset * 4, data: typed.buffer as ArrayBuffer });
  }

  read(s: Storage, layout?: Layout): TypedArray {
    const r = this.ref(s, 'read');
    const l = layout ?? { shape: [s.size], strides: [1], offset: 0 };
    const n = numel(l.shape);
    if (s.dtype === 'float16') {
      if (!isContiguous(l) || l.offset % 2 !== 0) throw new RangeError('read: float16 reads are contiguous and start at an even element');
      const bytes = this.readBytes(r.id, l.offset * 2, Math.ceil(n / 2) * 4);
      return new Uint16Array(bytes.buffer, 0, n);
    }
    if (isContiguous(l)) {
      const bytes = this.readBytes(r.id, l.offset * 4, n * 4);
      return s.dtype === 'int32' ? new Int32Array(bytes.buffer, 0, n) : new Float32Array(bytes.buffer, 0, n);
    }
    const tmp = this.alloc(s.dtype, n);
    try {
      this.copy(s, l, tmp);
      return this.read(tmp);
    } finally {
      this.free(tmp);
    }
  }

  free(s: Storage): void {
    const r = this.ref(s, 'free');
    s.freed = true;
    this.live--;
    this.push({ op: 'free', id: r.id });
  }

  // ---- element-wise ----

  copy(x: Storage, xl: Layout, out: Storage): void {
    this.kernel('copy', { x, xl, out });
  }
  copyInto(x: Storage, xl: Layout, out: Storage, outLayout: Layout): void {
    this.kernel('copyInto', { x, xl, out, outLayout });
  }
  fill(out: Storage, value: number, offset: number, n: number): void {
    this.kernel('fill', { out, value, offset, n });
  }
  unary(op: UnaryOp, x: Storage, xl: Layout, out: Storage): void {
    this.kernel('unary', { op, x, xl, out });
  }
  unaryBackward(op: UnaryGradOp, x: Storage, gy: Storage, gx: Storage, n: number): void {
    this.kernel('unaryBackward', { op, x, gy, gx, n });
  }
  binary(op: BinaryOp, a: Storage, al: Layout, b: Storage, bl: Layout, out: Storage): void {
    this.kernel('binary', { op, a, al, b, bl, out });
  }
  binaryScalar(op: BinaryOp, a: Storage, al: Layout, s: number, reversed: boolean, out: Storage): void {
    this.kernel('binaryScalar', { op, a, al, s, reversed, out });
  }
  where(cond: Storage, cl: Layout, a: Storage, al: Layout, b: Storage, bl: Layout, out: Storage): void {
    this.kernel('where', { cond, cl, a, al, b, bl, out });
  }

  // ---- reductions ----

  reduce(op: ReduceOp, x: Storage, outer: number, n: number, inner: number, out: Storage): void {
    this.kernel('reduce', { op, x, outer, n, inner, out });
  }
  cumsum(x: Storage, outer: number, n: number, inner: number, out: Storage): void {
    this.kernel('cumsum', { x, outer, n, inner, out });
  }

  // ---- linear algebra ----

  matmul(args: MatmulArgs): void {
    if (args.precision === 'bfloat16' && args.a.dtype === 'float32' && args.b.dtype === 'float32') {
      // bfloat16 operands with float32 accumulation, as the cpu's bf16 kernels compute: rounded
      // copies of both operands (queued in order, freed after), then the float32 kernel.
      const ra = this.roundedToBf16(args.a);
      const rb = this.roundedToBf16(args.b);
      try {
        this.matmul({ ...args, a: ra, b: rb, precision: 'float32' });
      } finally {
        this.free(ra);
        this.free(rb);
      }
      return;
    }
    this.kernel('matmul', { ...args, bias: args.bias ?? null, activation: args.activation ?? 'none', accumulate: args.accumulate ?? false });
  }

  private roundedToBf16(s: Storage): Storage {
    const out = this.alloc('float32', s.size, true);
    this.kernel('unary', { op: 'bf16_round', x: s, xl: { shape: [s.size], strides: [1], offset: 0 }, out });
    return out;
  }

  // ---- fused rows ----

  softmax(x: Storage, rows: number, n: number, log: boolean, out: Storage): void {
    this.kernel('softmax', { x, rows, n, log, out });
  }
  softmaxBackward(y: Storage, gy: Storage, rows: number, n: number, log: boolean, gx: Storage): void {
    this.kernel('softmaxBackward', { y, gy, rows, n, log, gx });
  }
  layerNorm(x: Storage, w: Storage | null, b: Storage | null, rows: number, n: number, eps: number, out: Storage, mean: Storage, rstd: Storage): void {
    this.kernel('layerNorm', { x, w, b, rows, n, eps, out, mean, rstd });
  }
  layerNormBackward(x: Storage, w: Storage | null, mean: Storage, rstd: Storage, gy: Storage, rows: number, n: number, gx: Storage, gw: Storage | null, gb: Storage | null): void {
    this.kernel('layerNormBackward', { x, w, mean, rstd, gy, rows, n, gx, gw, gb });
  }
  rmsNorm(x: Storage, w: Storage | null, rows: number, n: number, eps: number, out: Storage, rstd: Storage): void {
    this.kernel('rmsNorm', { x, w, rows, n, eps, out, rstd });
  }
  rmsNormBackward(x: Storage, w: Storage | null, rstd: Storage, gy: Storage, rows: number, n: number, gx: Storage, gw: Storage | null): void {
    this.kernel('rmsNormBackward', { x, w, rstd, gy, rows, n, gx, gw });
  }

  // ---- indexing ----

  /** Refuses a quantized weight or operands that do not fit (the ref backend's checks). */
  private static checkQuant(op: string, w: QuantWeightStorage, operands: [string, Storage | null, number, DType][]): void {
    const why = quantUnsupported(w.format, w.N, w.K);
    if (why) throw new RangeError(`${op}: ${why}`);
    const groups = w.format === 'int8' ? 0 : w.K / 32;
    if (w.format === 'int4z' && !w.zeros) throw new Error(`${op}: int4z weight without zero points`);
    const all: [string, Storage | null, number, DType][] = [
      ['w.data', w.data, Math.ceil((w.format === 'int8' ? w.N * w.K : w.N * w.K / 2) / 4), 'int32'],
      ['w.scales', w.scales, w.format === 'int8' ? w.N : w.N * groups, 'float32'],
      ['w.zeros', w.format === 'int4z' ? w.zeros : null, Math.ceil(w.N * groups / 4), 'int32'],
      ...operands,
    ];
    for (const [what, s, n, dtype] of all) {
      if (!s) continue;
      if (s.dtype !== dtype) throw new TypeError(`${op}: ${what} must be ${dtype}, got ${s.dtype}`);
      if (s.size < n) throw new RangeError(`${op}: ${what} has ${s.size} elements but ${n} are needed`);
    }
  }
  quantMatmul(args: QuantMatmulArgs): void {
    const { w, M, x, out } = args;
    const bias = args.bias ?? null;
    if (!Number.isInteger(M) || M < 0) throw new RangeError(`quantMatmul: bad row count ${M}`);
    WebGPUBackend.checkQuant('quantMatmul', w, [['x', x, M * w.K, 'float32'], ['out', out, M * w.N, 'float32'], ['bias', bias, w.N, 'float32']]);
    this.kernel('quantMatmul', {
      format: w.format, N: w.N, K: w.K, data: w.data, scales: w.scales, zeros: w.format === 'int4z' ? w.zeros : null,
      x, M, bias, activation: args.activation ?? 'none', out,
    });
  }
  quantEmbedding(w: QuantWeightStorage, ids: Storage, n: number, out: Storage): void {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`quantEmbedding: bad id count ${n}`);
    WebGPUBackend.checkQuant('quantEmbedding', w, [['ids', ids, n, 'int32'], ['out', out, n * w.K, 'float32']]);
    this.kernel('quantEmbedding', {
      format: w.format, N: w.N, K: w.K, data: w.data, scales: w.scales, zeros: w.format === 'int4z' ? w.zeros : null, ids, n, out,
    });
  }
  embedding(weight: Storage, V: number, C: number, ids: Storage, n: number, out: Storage): void {
    this.kernel('embedding', { weight, V, C, ids, n, out });
  }
  embeddingBackward(gy: Storage, ids: Storage, n: number, V: number, C: number, gw: Storage): void {
    this.kernel('embeddingBackward', { gy, ids, n, V, C, gw });
  }
  gather(x: Storage, outer: number, n: number, inner: number, index: Storage, k: number, out: Storage): void {
    this.kernel('gather', { x, outer, n, inner, index, k, out });
  }
  scatterAdd(gy: Storage, outer: number, n: number, inner: number, index: Storage, k: number, gx: Storage): void {
    this.kernel('scatterAdd', { gy, outer, n, inner, index, k, gx });
  }

  // ---- losses ----

  crossEntropy(logits: Storage, targets: Storage, N: number, V: number, ignoreIndex: number, smoothing: number, losses: Storage, lse: Storage): void {
    this.kernel('crossEntropy', { logits, targets, N, V, ignoreIndex, smoothing, losses, lse });
  }
  crossEntropyBackward(logits: Storage, targets: Storage, lse: Storage, scale: Storage, N: number, V: number, ignoreIndex: number, smoothing: number, gx: Storage): void {
    this.kernel('crossEntropyBackward', { logits, targets, lse, scale, N, V, ignoreIndex, smoothing, gx });
  }

  // ---- attention ----

  attention(args: AttentionArgs): void {
    checkSparsity('attention', args.sparsity);
    this.kernel('attention', { ...args, keyMask: args.keyMask ?? null, sparsity: args.sparsity ?? null });
  }
  attentionBackward(args: AttentionBackwardArgs): void {
    checkSparsity('attentionBackward', args.sparsity);
    this.kernel('attentionBackward', { ...args, keyMask: args.keyMask ?? null, sparsity: args.sparsity ?? null });
  }

  // ---- random ----

  dropoutMask(out: Storage, n: number, p: number, scale: number, seed0: number, seed1: number): void {
    this.kernel('dropoutMask', { out, n, p, scale, seed0, seed1 });
  }

  // ---- optimizer ----

  adamw(args: AdamWArgs): void {
    this.kernel('adamw', { ...args });
  }

  /** Destroys the GPU device as a driver reset would (for tests of what survives a device
   *  loss): every later read fails with 'device lost'. */
  simulateDeviceLoss(): void {
    this.flush();
    this.channel.post({ type: 'lose' });
  }

  /** Ends the device thread. */
  async close(): Promise<void> {
    this.flush();
    await this.channel.close();
  }
}
