// Private harness for the fused kernels until they run on the real runtime: compiles
// src/backend/cpu/assembly/fused.ts with asc (relaxed-SIMD and plain-SIMD builds, cached in
// build/), and runs it single-threaded on an imported memory with a bump allocator. A runner
// with threads = 2 calls every kernel with tid 0 and then tid 1, which checks the work split.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as v8 from 'node:v8';
import type { KernelRunner, Ptr } from '../src/backend/cpu/fused.js';

// Must precede the first WebAssembly compile in this process (Node 20 needs the flag).
v8.setFlagsFromString('--experimental-wasm-relaxed-simd');

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'attn') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('fused-harness: repository root not found');
    dir = up;
  }
}

export type Variant = 'relaxed' | 'plain';

/** Path of the compiled kernels, rebuilt when the sources are newer. */
export function buildFused(variant: Variant): string {
  const root = repoRoot();
  const src = join(root, 'src/backend/cpu/assembly/fused.ts');
  const out = join(root, 'build', variant === 'relaxed' ? 'fused-test.wasm' : 'fused-test-plain.wasm');
  // fused.ts imports tile.ts (the shared 4x8 microkernel): rebuild when either is newer.
  const newest = Math.max(...[src, join(root, 'src/backend/cpu/assembly/tile.ts')].map((f) => statSync(f).mtimeMs));
  if (existsSync(out) && statSync(out).mtimeMs >= newest) return out;
  mkdirSync(dirname(out), { recursive: true });
  // The kernels use static data (Math.log2's tables): export where the heap may start.
  const entry = join(root, 'build', 'fused-test-entry.ts');
  writeFileSync(entry, 'export * from "../src/backend/cpu/assembly/fused";\n' +
    'export function heap_base(): usize { return __heap_base; }\n');
  const asc = join(root, 'node_modules/assemblyscript/bin/asc.js');
  const flags = ['--enable', 'simd', ...(variant === 'relaxed' ? ['--enable', 'relaxed-simd'] : []),
    '--importMemory', '--runtime', 'stub', '-O3', '--noAssert'];
  execFileSync(process.execPath, [asc, entry, ...flags, '-o', out], { stdio: 'inherit' });
  return out;
}

const modules = new Map<Variant, WebAssembly.Module>();

function moduleFor(variant: Variant): WebAssembly.Module {
  let m = modules.get(variant);
  if (!m) {
    const bytes = readFileSync(buildFused(variant));
    if (!WebAssembly.validate(bytes)) throw new Error(`fused-harness: engine rejects the ${variant} build`);
    m = new WebAssembly.Module(bytes);
    modules.set(variant, m);
  }
  return m;
}

type Kernel = (...args: number[]) => void;

/** Single-threaded KernelRunner over its own memory. Buffers come from a bump allocator. */
export class TestRunner implements KernelRunner {
  readonly threads: number;
  readonly memory: WebAssembly.Memory;
  private readonly exports: Record<string, Kernel>;
  private readonly heapBase: number;
  private top: number;
  private scratchPtr = 0;
  private scratchSize = 0;
  /** Guard words after every buffer, checked by checkGuards(). */
  private guards: number[] = [];
  static readonly GUARD = 16;
  static readonly SENTINEL = 0x7fc0dead; // a NaN payload no kernel writes

  constructor(variant: Variant = 'relaxed', threads = 1) {
    this.threads = threads;
    this.memory = new WebAssembly.Memory({ initial: 64, maximum: 32768 });
    const inst = new WebAssembly.Instance(moduleFor(variant), { env: { memory: this.memory, abort: () => { throw new Error('abort'); } } });
    this.exports = inst.exports as unknown as Record<string, Kernel>;
    this.heapBase = Math.ceil(((inst.exports.heap_base as () => number)() >>> 0) / 64) * 64 + 64;
    this.top = this.heapBase;
  }

  run(kernel: string, args: number[], threads?: number): void {
    const fn = this.exports[kernel];
    if (typeof fn !== 'function') throw new Error(`no kernel ${kernel}`);
    const nt = threads === undefined ? this.threads : Math.max(1, Math.min(threads, this.threads));
    for (let tid = 0; tid < nt; tid++) fn(tid, nt, ...args);
  }

  /** Fresh scratch each call, filled with NaN so kernels that read before writing show up. */
  scratch(bytesPerThread: number): number {
    const need = Math.ceil(bytesPerThread / 64) * 64 * this.threads;
    if (need > this.scratchSize) {
      this.scratchPtr = this.malloc(need);
      this.scratchSize = need;
    }
    new Uint32Array(this.memory.buffer, this.scratchPtr, this.scratchSize / 4).fill(TestRunner.SENTINEL);
    return this.scratchPtr;
  }

  private malloc(bytes: number): number {
    const ptr = this.top;
    const end = ptr + Math.ceil(bytes / 64) * 64 + TestRunner.GUARD * 4;
    const have = this.memory.buffer.byteLength;
    if (end > have) this.memory.grow(Math.ceil((end - have) / 65536));
    this.top = Math.ceil(end / 64) * 64;
    const g = new Uint32Array(this.memory.buffer, ptr + Math.ceil(bytes / 64) * 64, TestRunner.GUARD);
    g.fill(TestRunner.SENTINEL);
    this.guards.push(ptr + Math.ceil(bytes / 64) * 64);
    return ptr;
  }

  /** A float32 buffer holding data. */
  upload(data: ArrayLike<number>): Ptr {
    const ptr = this.malloc(data.length * 4);
    this.f32(ptr, data.length).set(data);
    return { ptr };
  }

  uploadI32(data: ArrayLike<number>): Ptr {
    const ptr = this.malloc(data.length * 4);
    this.i32(ptr, data.length).set(data);
    return { ptr };
  }

  /** An output buffer of n floats, poisoned with NaN so unwritten elements show up. */
  output(n: number): Ptr {
    const ptr = this.malloc(n * 4);
    this.f32(ptr, n).fill(NaN);
    return { ptr };
  }

  read(p: Ptr, n: number): Float32Array {
    return this.f32(p.ptr, n).slice();
  }

  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }

  i32(ptr: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, n);
  }

  /** Throws if any kernel wrote past the end of a buffer. */
  checkGuards(): void {
    for (const g of this.guards) {
      const w = new Uint32Array(this.memory.buffer, g, TestRunner.GUARD);
      for (let i = 0; i < w.length; i++) {
        if (w[i] !== TestRunner.SENTINEL) throw new Error(`write past the end of a buffer (guard at ${g})`);
      }
    }
  }

  /** Forgets all buffers (keeps the memory). */
  reset(): void {
    this.top = this.heapBase;
    this.scratchPtr = 0;
    this.scratchSize = 0;
    this.guards = [];
  }
}
