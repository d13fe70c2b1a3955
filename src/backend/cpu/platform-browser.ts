// Browser pieces of the cpu runtime: Web Workers and navigator.hardwareConcurrency. Shared
// wasm memory needs a cross-origin isolated page (COOP same-origin + COEP require-corp).
import type { WorkerHandle } from './platform-node.js';

export function hardwareThreads(): number {
  return Math.max(1, Math.floor(globalThis.navigator?.hardwareConcurrency ?? 1));
}

/** Browsers with relaxed SIMD enable it by default; WebAssembly.validate decides the build. */
export function enableRelaxedSimd(): void {}

/** Atomics.wait is allowed in a worker (where the engine should run) but not on a page's main thread. */
export const mainThreadCanBlock = typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== 'undefined';

const HELLO = 'attn-cpu-worker-listening';

/** Starts the kernel worker as a module Web Worker. Its start data goes as a message once the
 *  worker says it listens: a message sent earlier could be dispatched while the worker's
 *  modules are still loading (top-level await), before any listener exists, and be lost. */
export function spawnWorker(data: unknown, onMessage: (msg: unknown) => void, onError: (err: Error) => void): WorkerHandle {
  const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  w.onmessage = (e: MessageEvent) => {
    if ((e.data as { type?: unknown })?.type === HELLO) w.postMessage(data);
    else onMessage(e.data);
  };
  w.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    onError(new Error(e.message || 'cpu worker failed to start'));
  };
  return {
    postMessage: (msg) => w.postMessage(msg),
    terminate: async () => w.terminate(),
  };
}

/** Inside a worker: resolves with the start data (the first message) and a way to reply. */
export function workerContext(): Promise<{ data: unknown; post(msg: unknown): void }> {
  const scope = globalThis as unknown as { onmessage: ((e: MessageEvent) => void) | null; postMessage(msg: unknown): void };
  return new Promise((resolve) => {
    scope.onmessage = (e: MessageEvent) => {
      scope.onmessage = null;
      resolve({ data: e.data, post: (msg) => scope.postMessage(msg) });
    };
    scope.postMessage({ type: HELLO });
  });
}

export function fromBase64(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Browsers run the WebAssembly kernels: there is no native addon here. */
export function loadNative(_threads: number): { kernels: null; why: string } {
  return nativeAddon();
}

export function nativeAddon(): { kernels: null; why: string } {
  return { kernels: null, why: 'a browser runs the WebAssembly kernels' };
}
