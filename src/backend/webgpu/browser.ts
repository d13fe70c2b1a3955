// Browser edge of the webgpu backend. The engine is synchronous and must block for read-backs
// (Atomics.wait), which a page's main thread may not do, so in a browser the engine runs in a
// dedicated Web Worker and the page's main thread owns the GPU device:
//   page:   hostWebGPUForWorker(worker)  - makes the device, serves the worker's batches
//   worker: await connectWebGPUFromPage() - a WebGPUBackend whose device lives on the page
// The page must be cross-origin isolated (Cross-Origin-Opener-Policy: same-origin and
// Cross-Origin-Embedder-Policy: require-corp) for the shared reply buffer. Messages of this
// link carry `type`s starting with 'attn-webgpu-', so they can share the worker's channel
// with the application's own messages.
/// <reference types="@webgpu/types" />
import { makeReplyBuffer, sharedChannel } from './channel.js';
import { describeAdapter, deviceLimits, makeHost } from './host.js';
import { WebGPUBackend } from './index.js';
import type { AdapterDescription, BatchMsg, Cmd } from './protocol.js';

const REQUEST = 'attn-webgpu-request';
const READY = 'attn-webgpu-ready';
const FAILED = 'attn-webgpu-failed';
const BATCH = 'attn-webgpu-batch';
const CLOSE = 'attn-webgpu-close';

type LinkMsg =
  | { type: typeof REQUEST }
  | { type: typeof READY; reply: SharedArrayBuffer; adapter: AdapterDescription }
  | { type: typeof FAILED; message: string }
  | { type: typeof BATCH; cmds: Cmd[] }
  | { type: typeof CLOSE };

/** The worker as the page sees it (a Worker, or anything shaped like one). */
export interface WorkerLike {
  postMessage(msg: unknown, transfer?: Transferable[]): void;
  addEventListener(type: 'message', listener: (e: MessageEvent) => void): void;
}

export interface HostOptions {
  /** Passed to navigator.gpu.requestAdapter (default: high-performance). */
  powerPreference?: 'low-power' | 'high-performance';
}

/** Requests an adapter (core first, then compatibility mode) and a device with raised limits. */
async function makeDevice(opts: HostOptions): Promise<{ adapter: GPUAdapter; device: GPUDevice; mode: string } | string> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return 'this browser has no WebGPU (navigator.gpu is missing)';
  if (typeof SharedArrayBuffer === 'undefined' || !(globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated) {
    return 'the page is not cross-origin isolated (serve it with COOP same-origin and COEP require-corp), so it cannot share memory with the worker';
  }
  let adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance' });
  let mode = 'core';
  if (!adapter) {
    adapter = await gpu.requestAdapter({ featureLevel: 'compatibility' } as GPURequestAdapterOptions);
    mode = 'compatibility';
  }
  if (!adapter) return 'navigator.gpu.requestAdapter() found no adapter';
  const features: GPUFeatureName[] = [];
  if (adapter.features.has('shader-f16')) features.push('shader-f16');
  // For ATTN_WEBGPU_PROFILE's kernel timer.
  if (adapter.features.has('timestamp-query')) features.push('timestamp-query');
  const device = await adapter.requestDevice({ requiredLimits: deviceLimits(adapter), requiredFeatures: features });
  return { adapter, device, mode };
}

/**
 * Page side: makes a WebGPU device and serves the batches of the engine running in `worker`
 * (which calls connectWebGPUFromPage). Resolves with the adapter's description, or null when
 * there is no usable WebGPU here; the worker's connectWebGPUFromPage then rejects, and the
 * application can fall back to another backend.
 */
export async function hostWebGPUForWorker(worker: WorkerLike, opts: HostOptions = {}): Promise<AdapterDescription | null> {
  // Listen at once: the worker's request may come before the device is ready.
  let requested = false;
  let answer: ((msg: LinkMsg) => void) | null = null;
  let onBatch: ((msg: BatchMsg) => void) | null = null;
  let device: GPUDevice | null = null;
  worker.addEventListener('message', (e: MessageEvent) => {
    const msg = e.data as LinkMsg | undefined;
    switch (msg?.type) {
      case REQUEST:
        requested = true;
        answer?.(msg);
        break;
      case BATCH:
        onBatch?.({ type: 'batch', cmds: msg.cmds });
        break;
      case CLOSE:
        device?.destroy();
        device = null;
        onBatch = null;
        break;
    }
  });
  let made: Awaited<ReturnType<typeof makeDevice>>;
  try {
    made = await makeDevice(opts);
  } catch (e) {
    made = `could not make a WebGPU device: ${e instanceof Error ? e.message : String(e)}`;
  }
  let reply: LinkMsg;
  let result: AdapterDescription | null = null;
  if (typeof made === 'string') {
    reply = { type: FAILED, message: made };
  } else {
    device = made.device;
    device.lost.then((info) => {
      if (info.reason !== 'destroyed') console.error(`webgpu: device lost: ${info.message}`);
    });
    const buffer = makeReplyBuffer();
    onBatch = makeHost(made.device, buffer).onMessage;
    result = await describeAdapter(made.adapter, made.mode === 'core' ? 'browser' : 'browser, compatibility mode', made.device);
    reply = { type: READY, reply: buffer, adapter: result };
  }
  const send = (): void => worker.postMessage(reply);
  if (requested) send();
  else answer = send;
  return result;
}

/**
 * Worker side: a WebGPUBackend whose device is hosted by the page (hostWebGPUForWorker).
 * Rejects when the page has no usable WebGPU, with the page's reason.
 */
export function connectWebGPUFromPage(): Promise<WebGPUBackend> {
  const scope = globalThis as unknown as {
    postMessage(msg: unknown, transfer?: Transferable[]): void;
    addEventListener(type: 'message', l: (e: MessageEvent) => void): void;
    removeEventListener(type: 'message', l: (e: MessageEvent) => void): void;
  };
  return new Promise((resolve, reject) => {
    const listener = (e: MessageEvent): void => {
      const msg = e.data as LinkMsg | undefined;
      if (msg?.type !== READY && msg?.type !== FAILED) return;
      scope.removeEventListener('message', listener);
      if (msg.type === FAILED) {
        reject(new Error(`webgpu: ${msg.message}`));
        return;
      }
      const post = (m: BatchMsg): void => {
        // Hand write payloads over instead of copying them (the engine does not reuse them).
        const transfer: Transferable[] = [];
        for (const c of m.cmds) if (c.op === 'write') transfer.push(c.data);
        const out: LinkMsg = { type: BATCH, cmds: m.cmds };
        scope.postMessage(out, transfer);
      };
      const close = async (): Promise<void> => {
        scope.postMessage({ type: CLOSE } satisfies LinkMsg);
      };
      resolve(new WebGPUBackend(sharedChannel(msg.reply, msg.adapter, post, close)));
    };
    scope.addEventListener('message', listener);
    scope.postMessage({ type: REQUEST } satisfies LinkMsg);
  });
}
