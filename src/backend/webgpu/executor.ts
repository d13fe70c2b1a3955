// The device side of the webgpu backend: owns the GPUDevice, the buffers (pooled), the
// compute pipelines (cached by WGSL source) and a uniform arena for kernel parameters, and
// turns batches of commands into command buffers. Browser-safe: only the WebGPU API is used.
/// <reference types="@webgpu/types" />
import type { BufRef, Cmd } from './protocol.js';
import { KERNELS } from './kernels/index.js';
import { ERROR_TEXT, KERNEL_OP_NAMES } from './kernels/errors.js';
import type { KernelContext, Params, Dispatch } from './kernels/common.js';
import { ParamWriter, PARAM_SLOT_BYTES, PRELUDE, groupsFor, storage, threadEntry } from './kernels/common.js';

/** Bits written into uninitialized allocations under ATTN_WEBGPU_POISON=1: a float32 NaN
 *  (2143289344 as int32), so a kernel that reads an output before writing it shows in tests. */
const POISON_WORD = 0x7fc00000;

/** Fills a buffer with one 32-bit word (zeroes a reused one), 4 words per thread. A dispatch rather than clearBuffer, so that it
 *  stays inside the open compute pass (a clear would end it). */
const ZERO = PRELUDE + storage('vec4<u32>', [], ['out']) + threadEntry(128, 'i', 'pu(0u)') + /* wgsl */ `
  out[i] = vec4<u32>(pu(1u));
}
`;

const ARENA_SLOTS = 256;
export class DeviceError extends Error {
  constructor(message: string, readonly range = false) {
    super(message);
  }
}

/**
 * Buffers reused by size class, so a training step allocates nothing new after the first.
 * Shapes that vary from step to step (sentence batches, masked-token counts) keep meeting new
 * size classes, so the free list is bounded: past its budget, the classes used least recently
 * are destroyed (see `evict`).
 */
export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  /** When each size class was last asked for (a counter of `get` calls). */
  private readonly lastUse = new Map<number, number>();
  private tick = 0;
  bytesInUse = 0;
  bytesPooled = 0;
  /** The most bytes in use at once so far: the free list may hold about as much again. */
  peakInUse = 0;
  constructor(private readonly device: GPUDevice, readonly minBudget = 256 * 2 ** 20) {}

  /** Powers of two up to 1 MiB; above, 8 classes per doubling (at most 12.5 % unused), so
   *  shapes that differ a little share a class. */
  static sizeClass(bytes: number): number {
    const b = Math.max(16, Math.ceil(bytes / 4) * 4);
    if (b <= 1 << 20) return 2 ** Math.ceil(Math.log2(b));
    const octave = 2 ** Math.floor(Math.log2(b - 1));
    const step = octave / 8;
    return Math.ceil(b / step) * step;
  }

  /** The most pooled bytes kept before evicting: twice the peak in use, so the working sets of
   *  a few shapes (sequence lengths rounded to multiples of 8, say) stay pooled together. */
  budget(): number {
    return Math.max(this.minBudget, 2 * this.peakInUse);
  }

  /** A pooled buffer of class `size`, or null (a miss). */
  take(size: number): GPUBuffer | null {
    this.lastUse.set(size, ++this.tick);
    const b = this.free.get(size)?.pop();
    if (!b) return null;
    this.bytesPooled -= size;
    this.markInUse(size);
    return b;
  }

  /** A new buffer of class `size` (after a miss). */
  create(size: number): GPUBuffer {
    const buffer = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.markInUse(size);
    return buffer;
  }

  private markInUse(size: number): void {
    this.bytesInUse += size;
    if (this.bytesInUse > this.peakInUse) this.peakInUse = this.bytesInUse;
  }

  put(b: GPUBuffer): void {
    this.bytesInUse -= b.size;
    this.bytesPooled += b.size;
    let list = this.free.get(b.size);
    if (!list) this.free.set(b.size, (list = []));
    list.push(b);
  }

  /** Whether adding `bytes` more to the free list would pass the budget. */
  overBudget(bytes: number): boolean {
    return this.bytesPooled + bytes > this.budget();
  }

  /** Destroys pooled buffers of the least recently used classes until the free list holds at
   *  most half its budget. The caller submits pending work first: an encoded but unsubmitted
   *  command may name a pooled buffer (submitted work keeps its buffers alive until done). */
  evict(): void {
    const target = this.budget() / 2;
    const classes = [...this.free.keys()].sort((a, b) => (this.lastUse.get(a) ?? 0) - (this.lastUse.get(b) ?? 0));
    for (const size of classes) {
      if (this.bytesPooled <= target) break;
      const list = this.free.get(size)!;
      while (list.length > 0 && this.bytesPooled > target) {
        list.pop()!.destroy();
        this.bytesPooled -= size;
      }
      if (list.length === 0) this.free.delete(size);
    }
  }

  /** Destroys pooled buffers (not the ones in use). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.bytesPooled = 0;
  }
}

interface LayoutInfo {
  layout: GPUBindGroupLayout;
  pipeline: GPUComputePipeline;
  storageCount: number;
}

const BINDING_RE = /@binding\((\d+)\)\s*var<\s*(storage|uniform)\s*(?:,\s*(read_write|read))?\s*>/g;

/** Per-kernel GPU time from timestamp queries (ATTN_WEBGPU_PROFILE=1 on an adapter with
 *  'timestamp-query'): each dispatch then gets a compute pass of its own whose start and end
 *  the GPU stamps, so kernels are timed without syncing the engine after each. */
class KernelTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolve: GPUBuffer;
  private labels: string[] = [];
  private readonly pending: Promise<void>[] = [];
  readonly totals = new Map<string, { calls: number; ns: number }>();

  constructor(private readonly device: GPUDevice, readonly capacity: number) {
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * capacity });
    this.resolve = device.createBuffer({ size: 16 * capacity, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  }

  /** The timestampWrites of the next dispatch's pass. */
  next(label: string): GPUComputePassTimestampWrites {
    const k = this.labels.length;
    this.labels.push(label);
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * k, endOfPassWriteIndex: 2 * k + 1 };
  }

  /** Encodes the copy-out of this submit's stamps; after the submit, call collect(). */
  encodeResolve(enc: GPUCommandEncoder): (() => void) | null {
    const n = this.labels.length;
    if (n === 0) return null;
    const labels = this.labels;
    this.labels = [];
    const staging = this.device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    enc.resolveQuerySet(this.querySet, 0, 2 * n, this.resolve, 0);
    enc.copyBufferToBuffer(this.resolve, 0, staging, 0, 16 * n);
    return () => {
      this.pending.push(staging.mapAsync(GPUMapMode.READ).then(() => {
        const t = new BigUint64Array(staging.getMappedRange());
        for (let k = 0; k < n; k++) {
          const ns = Number(t[2 * k + 1]! - t[2 * k]!);
          const e = this.totals.get(labels[k]!) ?? { calls: 0, ns: 0 };
          e.calls++;
          e.ns += ns > 0 && ns < 1e12 ? ns : 0;
          this.totals.set(labels[k]!, e);
        }
        staging.unmap();
        staging.destroy();
      }, () => staging.destroy()));
    };
  }

  /** Totals so far as JSON, after every submitted stamp was read; then starts over. */
  async report(): Promise<string> {
    await Promise.all(this.pending.splice(0));
    const rows = [...this.totals.entries()].map(([kernel, e]) => ({ kernel, calls: e.calls, ms: e.ns / 1e6 }));
    this.totals.clear();
    return JSON.stringify(rows);
  }
}

/** The name a kernel's GPU time is counted under: the op, and the sizes that set its cost. */
export function kernelLabel(name: string, a: Record<string, unknown>): string {
  if (name === 'matmul') return `matmul ${a.batch as number}×${a.M as number}×${a.N as number}×${a.K as number}${a.transA ? ' Aᵀ' : ''}${a.transB ? ' Bᵀ' : ''}`;
  if (name === 'attention' || name === 'attentionBackward') return `${name} ${a.B as number}×${a.H as number}×${a.Tq as number}×${a.Tk as number}×${a.D as number}`;
  if (typeof a.op === 'string') return `${name} ${a.op}`;
  return name;
}

export class GpuExecutor implements KernelContext {
  private readonly buffers = new Map<number, GPUBuffer>();
  private readonly pool: BufferPool;
  private readonly pipelines = new Map<string, LayoutInfo>();
  private encoder: GPUCommandEncoder | null = null;
  /** The open compute pass: consecutive dispatches share one (WebGPU orders their storage
   *  accesses within a pass), which saves Dawn a pass's setup and barriers per kernel. */
  private pass: GPUComputePassEncoder | null = null;
  private readonly arena: GPUBuffer;
  private readonly arenaData = new ArrayBuffer(ARENA_SLOTS * PARAM_SLOT_BYTES);
  private arenaUsed = 0;
  private scratchList: GPUBuffer[] = [];
  private readonly errors: string[] = [];
  readonly errorBuffer: GPUBuffer;
  private readonly errorStaging: GPUBuffer;
  /** Set when kernels are timed (see KernelTimer). */
  readonly timer: KernelTimer | null;
  /** What the dispatches of the command being encoded are counted under. */
  private label = '';
  /** Number of dispatches encoded so far (for tests and benchmarks). */
  dispatches = 0;

  /** `profile`: time every kernel (the device must have 'timestamp-query'); `poison`: fill
   *  uninitialized allocations with NaN bits instead of leaving them as they are (tests). */
  constructor(readonly device: GPUDevice, profile = false, private readonly poison = false, poolMinBytes?: number) {
    this.timer = profile && device.features.has('timestamp-query') ? new KernelTimer(device, ARENA_SLOTS) : null;
    this.pool = new BufferPool(device, poolMinBytes);
    this.arena = device.createBuffer({ size: ARENA_SLOTS * PARAM_SLOT_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.errorBuffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    this.errorStaging = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    device.addEventListener('uncapturederror', (ev) => {
      this.errors.push((ev as GPUUncapturedErrorEvent).error.message);
    });
  }

  /** Remembers an error to report at the next read (the engine thread is not waiting now). */
  fail(message: string): void {
    this.errors.push(message);
  }

  // ---- KernelContext ----

  buf(ref: BufRef): GPUBuffer {
    const b = this.buffers.get(ref.id);
    if (!b) throw new Error(`webgpu: buffer ${ref.id} does not exist (freed?)`);
    return b;
  }

  /** A buffer of at least `bytes` from the pool; `reused` says whether it may hold old data.
   *  On a miss past the free list's budget, with `mayEvict`, pending work is submitted and old
   *  classes evicted. Never from inside a kernel: submitting returns its scratch buffers to the
   *  pool while it still encodes with them. */
  private obtain(bytes: number, mayEvict: boolean): { buffer: GPUBuffer; reused: boolean } {
    const size = BufferPool.sizeClass(bytes);
    const pooled = this.pool.take(size);
    if (pooled) return { buffer: pooled, reused: true };
    if (mayEvict && this.pool.overBudget(0)) {
      this.flush();
      this.pool.evict();
    }
    return { buffer: this.pool.create(size), reused: false };
  }

  scratch(bytes: number): GPUBuffer {
    const { buffer, reused } = this.obtain(bytes, false);
    if (reused) this.zero(buffer);
    this.scratchList.push(buffer);
    return buffer;
  }

  copyBuffer(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    if (bytes > 0) this.enc().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  clearBuffer(b: GPUBuffer, offset: number, bytes: number): void {
    if (bytes > 0) this.enc().clearBuffer(b, offset, bytes);
  }

  dispatch(d: Dispatch): void {
    const [gx, gy = 1, gz = 1] = d.groups;
    if (gx === 0 || gy === 0 || gz === 0) return;
    const info = this.pipeline(d.code);
    if (info.storageCount !== d.buffers.length) {
      throw new Error(`webgpu: shader declares ${info.storageCount} storage bindings, dispatch gave ${d.buffers.length}`);
    }
    if (this.arenaUsed === ARENA_SLOTS) this.flush();
    const slot = this.arenaUsed++;
    if (d.params) new Uint8Array(this.arenaData, slot * PARAM_SLOT_BYTES, PARAM_SLOT_BYTES).set(d.params.bytes());
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.arena, offset: slot * PARAM_SLOT_BYTES, size: PARAM_SLOT_BYTES } }];
    d.buffers.forEach((buffer, i) => entries.push({ binding: i + 1, resource: { buffer } }));
    const group = this.device.createBindGroup({ layout: info.layout, entries });
    if (this.timer) {
      // A pass per dispatch, stamped at its start and end (the timer holds ARENA_SLOTS
      // dispatches, like the arena, so the flush above also empties it).
      const pass = this.enc().beginComputePass({ timestampWrites: this.timer.next(this.label) });
      pass.setPipeline(info.pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(gx, gy, gz);
      pass.end();
    } else {
      const pass = this.computePass();
      pass.setPipeline(info.pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(gx, gy, gz);
    }
    this.dispatches++;
  }

  params(): Params {
    return new ParamWriter();
  }

  /** Fills a buffer with `word` (0: zeroes it). */
  private zero(buffer: GPUBuffer, word = 0): void {
    if (buffer.size % 16 !== 0 && word === 0) {
      this.enc().clearBuffer(buffer);
      return;
    }
    const n = buffer.size / 16;
    const label = this.label;
    this.label = 'zero-fill (alloc)';
    this.dispatch({ code: ZERO, buffers: [buffer], params: new ParamWriter().u32(n).u32(word), groups: groupsFor(n, 128) });
    this.label = label;
  }

  // ---- commands ----

  /** Encodes a batch. A trailing read is not handled here: see readBack. Errors are kept for the next read. */
  run(cmds: readonly Cmd[]): void {
    for (const cmd of cmds) {
      try {
        this.runOne(cmd);
      } catch (e) {
        this.fail(e instanceof Error ? e.message : String(e));
      }
    }
  }

  private runOne(cmd: Cmd): void {
    switch (cmd.op) {
      case 'alloc': {
        const { buffer, reused } = this.obtain(cmd.bytes, true);
        if (cmd.uninitialized) {
          if (this.poison) this.zero(buffer, POISON_WORD);
        } else if (reused) this.zero(buffer);
        this.buffers.set(cmd.id, buffer);
        return;
      }
      case 'free': {
        const b = this.buffers.get(cmd.id);
        if (b) {
          this.buffers.delete(cmd.id);
          this.pool.put(b);
        }
        return;
      }
      case 'write': {
        // queue.writeBuffer runs before any not-yet-submitted commands: submit them first.
        this.flush();
        this.device.queue.writeBuffer(this.buf({ id: cmd.id, dtype: 'float32' }), cmd.byteOffset, cmd.data);
        return;
      }
      case 'kernel': {
        const k = KERNELS[cmd.name];
        if (!k) throw new Error(`webgpu: no kernel named '${cmd.name}' (engine and device code out of step?)`);
        if (this.timer) this.label = kernelLabel(cmd.name, cmd.args);
        k(this, cmd.args);
        return;
      }
      case 'read':
        return; // see readBack
    }
  }

  /** Submits what was encoded. */
  flush(): void {
    if (!this.encoder) return;
    this.endPass();
    const collect = this.timer?.encodeResolve(this.encoder) ?? null;
    if (this.arenaUsed > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaData, 0, this.arenaUsed * PARAM_SLOT_BYTES);
    this.device.queue.submit([this.encoder.finish()]);
    collect?.();
    this.encoder = null;
    this.arenaUsed = 0;
    for (const b of this.scratchList) this.pool.put(b);
    this.scratchList = [];
  }

  /** The encoder, for commands outside a compute pass (copies, clears): ends an open pass. */
  private enc(): GPUCommandEncoder {
    this.endPass();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  private computePass(): GPUComputePassEncoder {
    if (!this.pass) {
      if (!this.encoder) this.encoder = this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass();
    }
    return this.pass;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Copies bytes of a buffer back to the CPU, after everything sent before; throws a
   *  DeviceError for errors since the last read. */
  async readBack(id: number, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    const src = this.buffers.get(id);
    const size = Math.max(4, Math.ceil(byteLength / 4) * 4);
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.enc();
    if (src && byteLength > 0) enc.copyBufferToBuffer(src, byteOffset, staging, 0, size);
    enc.copyBufferToBuffer(this.errorBuffer, 0, this.errorStaging, 0, 16);
    enc.clearBuffer(this.errorBuffer);
    this.flush();
    try {
      try {
        await Promise.all([staging.mapAsync(GPUMapMode.READ), this.errorStaging.mapAsync(GPUMapMode.READ)]);
      } catch (e) {
        // A lost device fails every map: report why it was lost, if known.
        const why = e instanceof Error ? e.message || e.name : String(e);
        throw new DeviceError([...this.errors.splice(0), `read-back failed (${why || 'no reason given'})`].join('\n'));
      }
      const flag = new Uint32Array(this.errorStaging.getMappedRange().slice(0));
      this.errorStaging.unmap();
      if (flag[0] !== 0) {
        const op = KERNEL_OP_NAMES[flag[3]!] ?? 'kernel';
        this.errors.push(`RANGE:${op}: ${ERROR_TEXT[flag[0]!] ?? 'error'}: ${flag[1]! | 0} not in [0, ${flag[2]})`);
      }
      if (!src && byteLength > 0) this.errors.push(`webgpu: read of buffer ${id}, which does not exist`);
      if (this.errors.length > 0) {
        const msgs = this.errors.splice(0);
        const range = msgs.find((m) => m.startsWith('RANGE:'));
        if (range) throw new DeviceError(range.slice(6), true);
        throw new DeviceError(msgs.join('\n'));
      }
      return new Uint8Array(staging.getMappedRange(0, size).slice(0, byteLength));
    } finally {
      staging.destroy();
    }
  }

  stats(): { buffers: number; bytesInUse: number; bytesPooled: number; peakInUse: number; pipelines: number; dispatches: number } {
    return { buffers: this.buffers.size, bytesInUse: this.pool.bytesInUse, bytesPooled: this.pool.bytesPooled, peakInUse: this.pool.peakInUse, pipelines: this.pipelines.size, dispatches: this.dispatches };
  }

  private pipeline(code: string): LayoutInfo {
    let info = this.pipelines.get(code);
    if (info) return info;
    const entries: GPUBindGroupLayoutEntry[] = [];
    let storageCount = 0;
    for (const m of code.matchAll(BINDING_RE)) {
      const binding = Number(m[1]);
      if (m[2] === 'uniform') {
        entries.push({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
      } else {
        storageCount++;
        entries.push({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: m[3] === 'read' ? 'read-only-storage' : 'storage' } });
      }
    }
    const layout = this.device.createBindGroupLayout({ entries });
    const module = this.device.createShaderModule({ code });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' },
    });
    info = { layout, pipeline, storageCount };
    this.pipelines.set(code, info);
    return info;
  }
}
