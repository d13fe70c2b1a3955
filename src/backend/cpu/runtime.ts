// The WebAssembly runtime of the cpu backend: one shared WebAssembly.Memory, a JS allocator
// over it, and a pool of worker threads that run kernels on that memory together with the
// main thread. Only web-standard APIs here; Node specifics live in platform.ts.
import { WASM_MAX_PAGES, WASM_RELAXED_SIMD, WASM_SIMD } from './wasm-binaries.generated.js';
import {
  enableRelaxedSimd, fromBase64, hardwareThreads, mainThreadCanBlock, spawnWorker, type WorkerHandle,
} from './platform.js';

// Control block (at the start of the heap): Int32 header, one wake-up slot per worker (so a
// dispatch to fewer threads never touches the others), then Float64 kernel arguments.
export const CTRL = {
  KERNEL: 0,     // index into kernelNames(module)
  NT: 1,         // threads taking part in this dispatch
  PENDING: 2,    // workers still running; the last one notifies
  ERRORS: 3,     // workers whose kernel threw
  NARGS: 4,
  QUIT: 5,       // set by dispose
  SLOT0: 16,     // Int32 index of worker tid's slot: SLOT0 + tid, bumped once per dispatch to it
  MAX_THREADS: 112,
  ARGS_BYTE_OFFSET: 512,
  MAX_ARGS: 64,
  BYTES: 1024,
} as const;

/** What a worker receives at start. */
export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  tid: number;
  ctrl: number;
}

export type KernelFn = (...args: number[]) => unknown;

/** Exported functions of the kernel module, in a stable order shared by all threads. */
export function kernelNames(module: WebAssembly.Module): string[] {
  return WebAssembly.Module.exports(module).filter((e) => e.kind === 'function').map((e) => e.name);
}

/** Imports for the kernel module: the shared memory and stubs for AssemblyScript's env functions. */
export function wasmImports(module: WebAssembly.Module, memory: WebAssembly.Memory): WebAssembly.Imports {
  const env: Record<string, WebAssembly.ImportValue> = { memory };
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== 'env' || imp.kind !== 'function' || imp.name in env) continue;
    const name = imp.name;
    env[name] = name === 'abort'
      ? (_msg: number, _file: number, line: number, col: number) => {
        throw new Error(`wasm kernel aborted at line ${line}:${col}`);
      }
      : () => { throw new Error(`wasm import env.${name} is not provided`); };
  }
  return { env };
}

const PAGE = 65536;
const ALIGN = 64;
// Spin this many polls before sleeping in Atomics.wait: a short kernel finishes (or the
// next dispatch arrives) sooner than a futex wake-up takes.
const SPIN = 20000;

const align = (n: number, a: number) => Math.ceil(n / a) * a;

/** Block size for a request: 64-byte granules, then 8 sizes per power of two (≤ 12.5 % waste),
 *  so repeated requests of similar sizes share free lists. */
function sizeClass(bytes: number): number {
  const n = Math.max(ALIGN, align(bytes, ALIGN));
  if (n <= 16 * ALIGN) return n;
  const step = 2 ** (Math.floor(Math.log2(n - 1)) - 3);
  return align(n, step);
}

/** The largest size class not above len (len a multiple of 64). */
function floorClass(len: number): number {
  if (len <= 16 * ALIGN) return Math.floor(len / ALIGN) * ALIGN;
  const step = 2 ** (Math.floor(Math.log2(len)) - 3);
  return Math.floor(len / step) * step;
}

// Compiled once per process and build; every runtime and worker shares the module.
const compiled = new Map<boolean, Promise<WebAssembly.Module>>();
let relaxedSupport: boolean | undefined;

/** Whether this engine runs the relaxed-SIMD build (after enabling it where a flag is needed). */
export function relaxedSimdSupported(): boolean {
  if (relaxedSupport === undefined) {
    enableRelaxedSimd(); // before the first compile, or V8 rejects the relaxed build
    relaxedSupport = WebAssembly.validate(fromBase64(WASM_RELAXED_SIMD));
  }
  return relaxedSupport;
}

export interface WasmRuntimeOptions {
  /** Threads including the main thread; default: all hardware threads. */
  threads?: number;
  /** false forces the SIMD-only (mul + add) build even where relaxed SIMD works. */
  relaxedSimd?: boolean;
  /** Upper bound for the memory, in bytes (default and maximum 4 GiB). */
  maxMemoryBytes?: number;
}

export class WasmRuntime {
  readonly threads: number;
  /** Whether the loaded build uses relaxed-SIMD FMA. */
  readonly relaxedSimd: boolean;
  readonly memory: WebAssembly.Memory;
  readonly module: WebAssembly.Module;
  /** The main thread's instance exports (kernels, heap_base, ...). */
  readonly exports: Record<string, KernelFn>;

  private readonly names: string[];
  private readonly ids = new Map<string, number>();
  private readonly fns: KernelFn[];
  private readonly ctrlPtr: number;
  private ctrl!: Int32Array;
  private argv!: Float64Array;
  private workers: WorkerHandle[] = [];
  private workerError: string | null = null;
  private running = false;
  private disposed = false;

  private readonly maxPages: number;
  private readonly heapStart: number;
  private top: number;
  private readonly freeLists = new Map<number, number[]>();
  private readonly live = new Map<number, number>();
  private liveTotal = 0;
  private freeTotal = 0;
  private scratchPtr = 0;
  private scratchBytes = 0;

  private buf: ArrayBufferLike;
  private f32All: Float32Array;
  private i32All: Int32Array;

  private constructor(module: WebAssembly.Module, instance: WebAssembly.Instance, memory: WebAssembly.Memory,
    threads: number, relaxed: boolean, maxPages: number) {
    this.module = module;
    this.memory = memory;
    this.threads = threads;
    this.relaxedSimd = relaxed;
    this.maxPages = maxPages;
    this.exports = instance.exports as unknown as Record<string, KernelFn>;
    this.names = kernelNames(module);
    this.names.forEach((n, i) => this.ids.set(n, i));
    this.fns = this.names.map((n) => this.exports[n]);
    // Heap layout: [module static data][control block][allocator heap ...]
    this.ctrlPtr = align(Number(this.exports.heap_base()) >>> 0, ALIGN);
    this.heapStart = align(this.ctrlPtr + CTRL.BYTES, ALIGN);
    this.top = this.heapStart;
    this.buf = memory.buffer;
    this.f32All = new Float32Array(this.buf);
    this.i32All = new Int32Array(this.buf);
    this.ensure(this.heapStart);
    this.ctrl = new Int32Array(this.memory.buffer, this.ctrlPtr, CTRL.ARGS_BYTE_OFFSET / 4);
    this.argv = new Float64Array(this.memory.buffer, this.ctrlPtr + CTRL.ARGS_BYTE_OFFSET, CTRL.MAX_ARGS);
  }

  /** Loads the kernels (relaxed SIMD where the engine has it) and starts threads - 1 workers. */
  static async create(opts: WasmRuntimeOptions = {}): Promise<WasmRuntime> {
    const threads = Math.max(1, Math.min(CTRL.MAX_THREADS, Math.floor(opts.threads ?? hardwareThreads())));
    const relaxed = opts.relaxedSimd !== false && relaxedSimdSupported();
    let module = compiled.get(relaxed);
    if (!module) {
      module = WebAssembly.compile(fromBase64(relaxed ? WASM_RELAXED_SIMD : WASM_SIMD));
      compiled.set(relaxed, module);
    }
    const maxPages = Math.max(1, Math.min(WASM_MAX_PAGES, Math.floor((opts.maxMemoryBytes ?? 2 ** 32) / PAGE)));
    const memory = new WebAssembly.Memory({ initial: Math.min(64, maxPages), maximum: maxPages, shared: true });
    const mod = await module;
    const instance = await WebAssembly.instantiate(mod, wasmImports(mod, memory));
    const rt = new WasmRuntime(mod, instance, memory, threads, relaxed, maxPages);
    try {
      await rt.startWorkers();
    } catch (e) {
      rt.dispose();
      throw e;
    }
    return rt;
  }

  private async startWorkers(): Promise<void> {
    const ready: Promise<void>[] = [];
    for (let tid = 1; tid < this.threads; tid++) {
      ready.push(new Promise<void>((resolve, reject) => {
        const init: WorkerInit = { module: this.module, memory: this.memory, tid, ctrl: this.ctrlPtr };
        const w = spawnWorker(init, (msg) => {
          const m = msg as { type: string; message?: string };
          if (m.type === 'ready') resolve();
          else if (m.type === 'error') {
            this.workerError = m.message ?? 'unknown error';
            reject(new Error(`cpu worker ${tid}: ${this.workerError}`));
          }
        }, (err) => {
          this.workerError = String(err?.message ?? err);
          reject(err);
        });
        this.workers.push(w);
      }));
    }
    await Promise.all(ready);
  }

  // ---------------------------------------------------------------- kernels

  /** Whether the module exports a kernel of this name. */
  has(kernel: string): boolean {
    return this.ids.has(kernel);
  }

  /**
   * Runs exports[kernel](tid, nt, ...args) on nt threads (default all; the main thread is tid 0)
   * and returns when every thread is done. Arguments travel as float64, so pass integers and
   * pointers (< 2^32) or floats; the wasm side converts them to its parameter types.
   */
  run(kernel: string, args: readonly number[], threads?: number): void {
    const id = this.ids.get(kernel);
    if (id === undefined) throw new Error(`no wasm kernel named ${kernel}`);
    if (this.disposed) throw new Error('WasmRuntime used after dispose()');
    const fn = this.fns[id];
    const nt = threads === undefined ? this.threads : Math.max(1, Math.min(Math.floor(threads), this.threads));
    if (nt === 1) {
      fn(0, 1, ...args);
      return;
    }
    if (this.running) throw new Error('WasmRuntime.run is not re-entrant');
    if (args.length > CTRL.MAX_ARGS) throw new Error(`too many kernel arguments (${args.length})`);
    this.running = true;
    const c = this.ctrl;
    try {
      for (let i = 0; i < args.length; i++) this.argv[i] = args[i];
      c[CTRL.KERNEL] = id;
      c[CTRL.NT] = nt;
      c[CTRL.NARGS] = args.length;
      c[CTRL.ERRORS] = 0;
      Atomics.store(c, CTRL.PENDING, nt - 1);
      for (let t = 1; t < nt; t++) {
        Atomics.add(c, CTRL.SLOT0 + t, 1); // publishes the plain writes above
        Atomics.notify(c, CTRL.SLOT0 + t);
      }
      let err: unknown = null;
      try {
        fn(0, nt, ...args);
      } catch (e) {
        err = e;
      }
      // Wait for the workers even when our share failed: they still use the scratch.
      for (let spins = 0; ;) {
        const p = Atomics.load(c, CTRL.PENDING);
        if (p === 0) break;
        if (spins < SPIN || !mainThreadCanBlock) spins++;
        else Atomics.wait(c, CTRL.PENDING, p);
      }
      if (err) throw err;
      if (c[CTRL.ERRORS] > 0) {
        throw new Error(`wasm kernel ${kernel} failed on a worker thread${this.workerError ? `: ${this.workerError}` : ''}`);
      }
    } finally {
      this.running = false;
    }
  }

  // ---------------------------------------------------------------- memory

  /** A 64-byte-aligned block of at least `bytes` bytes (contents undefined); never 0. */
  malloc(bytes: number): number {
    if (!(bytes >= 0) || !Number.isFinite(bytes)) throw new RangeError(`malloc: bad size ${bytes}`);
    const size = sizeClass(bytes);
    let ptr = this.freeLists.get(size)?.pop();
    if (ptr !== undefined) {
      this.freeTotal -= size;
    } else {
      // Before growing the memory, see whether merged free blocks can serve the request
      // (sizes that drift upward, like a growing sequence, would otherwise never reuse).
      if (this.top + size > this.memory.buffer.byteLength && this.freeTotal >= size) ptr = this.reclaim(size);
      if (ptr === undefined) {
        ptr = this.top;
        this.ensure(ptr + size);
        this.top = ptr + size;
      }
    }
    this.live.set(ptr, size);
    this.liveTotal += size;
    return ptr;
  }

  /** Returns a block from malloc to its free list. */
  free(ptr: number): void {
    const size = this.live.get(ptr);
    if (size === undefined) throw new Error(`free: ${ptr} is not a live block`);
    this.live.delete(ptr);
    this.liveTotal -= size;
    if (ptr + size === this.top) {
      this.top = ptr; // the last block: give the space back to the bump pointer
      return;
    }
    this.pushFree(ptr, size);
  }

  private pushFree(ptr: number, size: number): void {
    let list = this.freeLists.get(size);
    if (!list) this.freeLists.set(size, (list = []));
    list.push(ptr);
    this.freeTotal += size;
  }

  /**
   * Merges address-adjacent free blocks; a run that ends at the bump pointer goes back to it.
   * Returns a block of `size` cut from the first run that holds it (or undefined); every other
   * run is re-cut into size-class blocks.
   */
  private reclaim(size: number): number | undefined {
    const blocks: number[][] = [];
    for (const [sz, list] of this.freeLists) for (const p of list) blocks.push([p, sz]);
    this.freeLists.clear();
    this.freeTotal = 0;
    blocks.sort((x, y) => x[0] - y[0]);
    const runs: number[][] = [];
    for (const [p, sz] of blocks) {
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === p) last[1] += sz;
      else runs.push([p, sz]);
    }
    const tail = runs[runs.length - 1];
    if (tail && tail[0] + tail[1] === this.top) {
      this.top = tail[0];
      runs.pop();
    }
    let found: number | undefined;
    for (const [p, len] of runs) {
      if (found === undefined && len >= size) {
        found = p;
        this.carve(p + size, len - size);
      } else {
        this.carve(p, len);
      }
    }
    return found;
  }

  /** Cuts [p, p + len) into free blocks of size-class sizes, largest first. */
  private carve(p: number, len: number): void {
    while (len >= ALIGN) {
      const c = floorClass(len);
      this.pushFree(p, c);
      p += c;
      len -= c;
    }
  }

  /** Bytes held by live blocks (after size-class rounding). */
  get liveBytes(): number {
    return this.liveTotal;
  }

  /** Bytes of the heap handed out so far (live + free blocks). */
  get heapBytes(): number {
    return this.top - this.heapStart;
  }

  /** A per-thread scratch area: thread t may use [base + t*bytesPerThread, +bytesPerThread).
   *  Cached and reused; it may move when a larger size is asked for. */
  scratch(bytesPerThread: number): number {
    const need = align(Math.max(bytesPerThread, 1), ALIGN) * this.threads;
    if (need > this.scratchBytes) {
      if (this.scratchPtr) this.free(this.scratchPtr);
      this.scratchPtr = this.malloc(need);
      this.scratchBytes = need;
    }
    return this.scratchPtr;
  }

  private ensure(end: number): void {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    const havePages = have / PAGE;
    const needPages = Math.ceil(end / PAGE);
    if (needPages > this.maxPages) {
      throw new RangeError(`wasm heap exhausted: need ${end} bytes, limit ${this.maxPages * PAGE}`);
    }
    // Grow by at least a quarter so a growing workload does not grow page by page.
    const target = Math.min(this.maxPages, Math.max(needPages, Math.ceil(havePages * 1.25)));
    this.memory.grow(target - havePages);
  }

  private refresh(): void {
    const b = this.memory.buffer;
    if (b !== this.buf || b.byteLength !== this.buf.byteLength) {
      this.buf = b;
      this.f32All = new Float32Array(b);
      this.i32All = new Int32Array(b);
    }
  }

  /** The whole memory as float32 (index = byte pointer / 4); refreshed after growth. */
  get heapF32(): Float32Array {
    this.refresh();
    return this.f32All;
  }

  get heapI32(): Int32Array {
    this.refresh();
    return this.i32All;
  }

  /** A float32 view of n elements at byte pointer ptr. The memory is shared, so growth never
   *  detaches it: a view stays valid for the lifetime of its block. */
  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }

  i32(ptr: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, n);
  }

  u16(ptr: number, n: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, ptr, n);
  }

  /** Stops the workers. The runtime must not be used afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    Atomics.store(this.ctrl, CTRL.QUIT, 1);
    for (let t = 1; t < this.threads; t++) {
      Atomics.add(this.ctrl, CTRL.SLOT0 + t, 1);
      Atomics.notify(this.ctrl, CTRL.SLOT0 + t);
    }
    for (const w of this.workers) void w.terminate();
    this.workers = [];
  }
}
