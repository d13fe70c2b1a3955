// Node pieces of the cpu runtime (worker_threads, os, v8); platform.ts loads this file or
// platform-browser.ts, which offers the same functions over Web Workers.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { Worker, parentPort, workerData } from 'node:worker_threads';

/** Number of hardware threads to use by default. */
export function hardwareThreads(): number {
  try {
    return Math.max(1, availableParallelism());
  } catch {
    return Math.max(1, cpus().length);
  }
}

let relaxedFlagSet = false;
/** Lets V8 compile relaxed SIMD (Node 20 hides it behind a flag). Must run before the first
 *  compile of a module that uses it; harmless when the engine already supports it. */
export function enableRelaxedSimd(): void {
  if (relaxedFlagSet) return;
  relaxedFlagSet = true;
  try {
    setFlagsFromString('--experimental-wasm-relaxed-simd');
  } catch {
    // Not fatal: WebAssembly.validate decides which binary is used.
  }
}

/** Whether this thread may block in Atomics.wait (Node's main thread may; a browser's may not). */
export const mainThreadCanBlock: boolean = true;

export interface WorkerHandle {
  postMessage(msg: unknown): void;
  terminate(): Promise<unknown>;
}

/** Starts the kernel worker (worker.js next to this file) with `data` as its start data.
 *  Once the worker has sent its first message (ready or failed) it no longer keeps the
 *  process alive: an idle pool must not stop Node from exiting. */
export function spawnWorker(data: unknown, onMessage: (msg: unknown) => void, onError: (err: Error) => void): WorkerHandle {
  // --input-type (node --input-type=module -e '...') applies to the main script only: a worker
  // given it refuses to start.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: data, execArgv });
  w.once('message', () => w.unref());
  w.on('message', onMessage);
  w.on('error', onError);
  return {
    postMessage: (msg) => w.postMessage(msg),
    terminate: () => w.terminate(),
  };
}

/** Inside a worker: its start data and a way to message the spawning thread (a promise,
 *  since a browser worker receives its start data as a message). */
export async function workerContext(): Promise<{ data: unknown; post(msg: unknown): void }> {
  if (!parentPort) throw new Error('cpu/worker.js must run as a worker thread');
  const port = parentPort;
  return { data: workerData, post: (msg) => port.postMessage(msg) };
}

/** Decodes base64 to bytes. */
export function fromBase64(s: string): Uint8Array<ArrayBuffer> {
  const b = Buffer.from(s, 'base64');
  const out = new Uint8Array(b.byteLength);
  out.set(b);
  return out;
}

/** The native addon's kernels (native/, built by node-gyp during npm ci), as the cpu backend calls them. */
export interface NativeKernels {
  init(threads: number, isaCap: string): NativeInfo;
  info(): NativeInfo;
  /** Points fd 2 at /dev/null (native libraries that print warnings); returns the saved fd. */
  stderrMute(): number;
  stderrRestore(fd: number): void;
  zero(heap: Float32Array, byteOffset: number, bytes: number): void;
  /** The float32 FMA peak of the kernel set in use on `threads` threads, GFLOP/s (registers only). */
  fmaPeak(seconds: number, threads: number): number;
  // Fused row kernels (native/fused.h): byte offsets into heap, 0 for an absent optional operand.
  layerNorm(heap: Float32Array, x: number, w: number, b: number, rows: number, n: number, eps: number, out: number, mean: number, rstd: number, threads: number): void;
  layerNormBackward(heap: Float32Array, x: number, w: number, mean: number, rstd: number, gy: number, rows: number, n: number, gx: number, gw: number, gb: number, threads: number): void;
  rmsNorm(heap: Float32Array, x: number, w: number, rows: number, n: number, eps: number, out: number, rstd: number, threads: number): void;
  rmsNormBackward(heap: Float32Array, x: number, w: number, rstd: number, gy: number, rows: number, n: number, gx: number, gw: number, threads: number): void;
  softmax(heap: Float32Array, x: number, rows: number, n: number, log: number, out: number, threads: number): void;
  softmaxBackward(heap: Float32Array, y: number, gy: number, rows: number, n: number, log: number, gx: number, threads: number): void;
  /** -1, or the position of the first target outside [0, V) that is not ignoreIndex (nothing written). */
  crossEntropy(heap: Float32Array, logits: number, targets: number, N: number, V: number, ignoreIndex: number, smoothing: number, losses: number, lse: number, threads: number): number;
  crossEntropyBackward(heap: Float32Array, logits: number, targets: number, lse: number, scale: number, N: number, V: number, ignoreIndex: number, smoothing: number, gx: number, threads: number): number;
  /** -1, or the position of the first id outside [0, V) (nothing written). */
  embedding(heap: Float32Array, weight: number, bf16: number, V: number, C: number, ids: number, n: number, out: number, threads: number): number;
  embeddingBackward(heap: Float32Array, gy: number, ids: number, n: number, V: number, C: number, gw: number, threads: number): number;
  swiglu(heap: Float32Array, gate: number, up: number, out: number, n: number, threads: number): void;
  rope(heap: Float32Array, x: number, cos: number, sin: number, out: number, rows: number, H: number, T: number, D: number, rd: number, offset: number, inverse: number, threads: number): void;
  swigluBackward(heap: Float32Array, gate: number, up: number, gy: number, gGate: number, gUp: number, n: number, threads: number): void;
  geluBackward(heap: Float32Array, x: number, gy: number, gx: number, n: number, threads: number): void;
  adamw(heap: Float32Array, param: number, grad: number, m: number, v: number, n: number, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number,
    bc1: number, bc2: number, threads: number): void;
  binary2d(heap: Float32Array, op: number, a: number, aInner: number, aOuter: number, b: number, bInner: number, bOuter: number,
    out: number, outer: number, inner: number, threads: number): boolean;
  copyStrided(heap: Float32Array, x: number, out: number, n0: number, n1: number, n2: number, n3: number,
    xs0: number, xs1: number, xs2: number, xs3: number, os0: number, os1: number, os2: number, os3: number, threads: number): void;
  reduceSum(heap: Float32Array, x: number, outer: number, n: number, inner: number, out: number, threads: number): void;
  unary(heap: Float32Array, op: number, x: number, out: number, n: number, threads: number): boolean;
  attention(heap: Float32Array, q: number, k: number, v: number, out: number, lse: number, keyMask: number, B: number, H: number, Tq: number, Tk: number, D: number,
    scale: number, causal: number, spKind: number, spA: number, spB: number, gout: number, gq: number, gk: number, gv: number, backward: number, threads: number, Hkv: number, ...viewStrides: number[]): void;
  /** Weight-only quantized linear (native/quant.h): format 0 int8, 1 int4, 2 int4z; byte offsets, 0 for absent zeros/bias. */
  quantMatmul(heap: Float32Array, format: number, data: number, scales: number, zeros: number, N: number, K: number,
    x: number, M: number, bias: number, act: number, out: number, threads: number): void;
  matmul(heap: Float32Array, a: number, aBatch: number, lda: number, transA: number, b: number, bBatch: number, ldb: number, transB: number, bBf16: number,
    out: number, batch: number, M: number, N: number, K: number, bias: number, act: number, accumulate: number, threads: number, bf16Compute: number): void;
  /** One Llama-style decode step (native/decode.cc); false: the token is outside the vocabulary.
   *  Absent from addons built before it. */
  decodeStep?(heap: Float32Array, plan: Float64Array, token: number, pos: number, logits: number, threads: number): boolean;
  /** One draw per listed row of (rows, V) logits at byte offset `logits` (native/fused.h). Absent from addons built before it. */
  /** int8 activations for int4 decode on AVX-512 VNNI (native/quant.h); returns whether they are on. Absent from older addons. */
  quantInt8Activations?(on: boolean): boolean;
  sampleTempered?(heap: Float32Array, logits: number, V: number, rows: Int32Array, temps: Float64Array, uniforms: Float64Array, out: Int32Array, threads: number): void;
}

export interface NativeInfo {
  /** The kernel set in use: avx512-bf16, avx512, avx2 or portable. */
  isa: string;
  /** The best set this processor runs. */
  best: string;
  threads: number;
  avx512bf16: boolean;
  /** int4 decode takes int8 activations (ATTN_QUANT_ACTIVATIONS=int8 on a VNNI processor). */
  int8Activations?: boolean;
}

/**
 * The native addon, or why it is not used: ATTN_NATIVE=0, or a build that failed or never ran
 * (npm ci records the reason in build/native-build.log). ATTN_NATIVE_ISA=avx512-bf16|avx512|avx2|portable caps the
 * kernel set; ATTN_NUM_THREADS sets the addon's threads (default: `threads`); ATTN_QUANT_ACTIVATIONS=int8 quantizes
 * the activations of int4 decode matmuls to int8 where the processor has AVX-512 VNNI (CpuBackend.setQuantActivations).
 */
/** The addon module itself (no threads started), or the reason it is not there. */
export function nativeAddon(): { kernels: NativeKernels; why?: undefined } | { kernels: null; why: string } {
  if (process.env.ATTN_NATIVE === '0') return { kernels: null, why: 'ATTN_NATIVE=0' };
  const root = new URL('../../../../', import.meta.url);
  try {
    return { kernels: createRequire(import.meta.url)(fileURLToPath(new URL('build/Release/attn_native.node', root))) as NativeKernels };
  } catch (e) {
    let why = `the addon did not load (${(e as Error).message.split('\n')[0]})`;
    try {
      const log = readFileSync(new URL('build/native-build.log', root), 'utf8').trim().split('\n').filter((l) => /error/i.test(l));
      if (log.length) why = `the addon did not build: ${log[0]!.slice(0, 200)}`;
    } catch {
      // no build log: the build never ran
    }
    return { kernels: null, why };
  }
}

export function loadNative(threads: number): { kernels: NativeKernels; info: NativeInfo } | { kernels: null; why: string } {
  const a = nativeAddon();
  if (!a.kernels) return a;
  const n = Number(process.env.ATTN_NUM_THREADS);
  const cap = process.env.ATTN_NATIVE_ISA ?? 'best';
  const caps = ['best', 'avx512-bf16', 'avx512', 'avx2', 'portable'];
  if (!caps.includes(cap)) throw new Error(`ATTN_NATIVE_ISA=${cap} is not a kernel set (one of ${caps.slice(1).join(', ')})`);
  const info = a.kernels.init(Number.isInteger(n) && n > 0 ? n : Math.max(threads, hardwareThreads()), cap);
  const act = process.env.ATTN_QUANT_ACTIVATIONS ?? 'float32';
  if (act !== 'float32' && act !== 'int8') throw new Error(`ATTN_QUANT_ACTIVATIONS=${act} is not float32 or int8`);
  // every load starts from the default, so that a process's setting is its own
  info.int8Activations = !!a.kernels.quantInt8Activations?.(act === 'int8');
  return { kernels: a.kernels, info };
}
