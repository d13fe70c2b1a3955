// Node edge of the webgpu backend: starts the device thread (node-device-worker.js) and
// returns the engine's channel to it.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { makeReplyBuffer, sharedChannel, type DeviceChannel } from './channel.js';
import type { ReadyMsg } from './protocol.js';

export interface NodeDeviceOptions {
  /** 'auto' (default; or the ATTN_WEBGPU_BACKEND environment variable), 'vulkan', 'opengles',
   *  or 'none' (look for no adapter: what a machine without a GPU driver sees). */
  backend?: NodeWebGPUBackend;
}

const BACKENDS = ['auto', 'vulkan', 'opengles', 'none'] as const;
export type NodeWebGPUBackend = (typeof BACKENDS)[number];

/** Whether Linux has a Vulkan loader to open: without one, Dawn's Vulkan attempt only prints a warning. */
function hasVulkanLoader(): boolean {
  if (process.platform !== 'linux') return true;
  const dirs = [...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib'];
  return dirs.some((d) => existsSync(join(d, 'libvulkan.so.1')));
}

export async function startNodeDevice(opts: NodeDeviceOptions = {}): Promise<DeviceChannel> {
  let backend = opts.backend ?? process.env.ATTN_WEBGPU_BACKEND ?? 'auto';
  // No Vulkan loader: go straight to OpenGL ES rather than have Dawn print why Vulkan failed.
  if (backend === 'auto' && !hasVulkanLoader()) backend = 'opengles';
  if (!(BACKENDS as readonly string[]).includes(backend)) {
    throw new Error(`webgpu: ATTN_WEBGPU_BACKEND='${backend}' is not one of ${BACKENDS.join(', ')}`);
  }
  // Mesa's EGL must not look for a display; only the main thread's process.env reaches C.
  process.env.EGL_PLATFORM ??= 'surfaceless';
  const reply = makeReplyBuffer();
  const worker = new Worker(new URL('./node-device-worker.js', import.meta.url), { workerData: { reply, backend } });
  const ready = await new Promise<ReadyMsg>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`webgpu: device thread exited (code ${code}) before it was ready`)));
  });
  if (ready.type === 'failed') {
    await worker.terminate();
    throw new Error(`webgpu: ${ready.message}`);
  }
  // An idle device thread must not keep Node from exiting.
  worker.unref();
  worker.on('error', (e) => process.stderr.write(`webgpu: device thread error: ${e.message}\n`));
  return sharedChannel(reply, ready.adapter, (msg) => worker.postMessage(msg), async () => {
    worker.postMessage({ type: 'close' });
    await worker.terminate();
  });
}
