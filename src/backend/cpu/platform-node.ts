// Node pieces of the cpu runtime (worker_threads, os, v8); platform.ts loads this file or
// platform-browser.ts, which offers the same functions over Web Workers.
import { availableParallelism, cpus } from 'node:os';
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
  const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: data });
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
