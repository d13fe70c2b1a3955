// The Node device thread: makes a Dawn device (the `webgpu` npm package) and serves the
// engine thread's batches. Software adapters: Mesa's Vulkan (lavapipe) when present, else
// Mesa's OpenGL ES (llvmpipe) in compatibility mode, which needs EGL_PLATFORM=surfaceless
// (set by the spawning thread, since a worker's process.env is not the C environment).
/// <reference types="@webgpu/types" />
import { writeSync } from 'node:fs';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { nativeAddon } from '../cpu/platform-node.js';
import { describeAdapter, deviceLimits, makeHost } from './host.js';
import type { BatchMsg, ReadyMsg } from './protocol.js';

interface StartData {
  reply: SharedArrayBuffer;
  /** 'auto' tries the platform's default backend, then OpenGL ES. */
  backend: string;
}

// Dawn crashes if its instance is collected while work may run: keep it for the thread's life.
let keepAlive: unknown = null;

async function start(): Promise<void> {
  const port = parentPort!;
  const data = workerData as StartData;
  const { globals } = (await import('webgpu')) as unknown as { globals: Record<string, unknown> };
  Object.assign(globalThis, globals);
  const tries: { flags: string[]; name: string; compat: boolean }[] = [];
  if (data.backend === 'auto' || data.backend === 'vulkan') tries.push({ flags: data.backend === 'vulkan' ? ['backend=vulkan'] : [], name: data.backend === 'vulkan' ? 'vulkan' : 'default', compat: false });
  if (data.backend === 'auto' || data.backend === 'opengles') tries.push({ flags: ['backend=opengles'], name: 'opengles', compat: true });
  const instances: unknown[] = [];
  keepAlive = instances;
  // Dawn and the driver print warnings (limits reduced, backends missing) straight to fd 2: kept
  // from the user unless ATTN_VERBOSE=1 (attn --verbose), through the native addon where it loaded.
  const native = process.env.ATTN_VERBOSE === '1' ? null : nativeAddon().kernels;
  const muted = native ? native.stderrMute() : -1;
  // fd 2 is the whole process's: restored before the main thread hears the outcome, or its own
  // error message (no adapter) could be written while it still points at /dev/null.
  let restored = false;
  const unmute = (): void => {
    if (native && !restored) native.stderrRestore(muted);
    restored = true;
  };
  try {
    return await openAdapter(tries, instances, port, data, unmute);
  } finally {
    unmute();
  }
}

async function openAdapter(tries: { flags: string[]; name: string; compat: boolean }[], instances: unknown[], port: MessagePort, data: StartData,
  unmute: () => void): Promise<void> {
  const { create } = (await import('webgpu')) as unknown as { create(flags: string[]): GPU };
  for (const t of tries) {
    const gpu = create(t.flags);
    instances.push(gpu);
    const adapter = await gpu.requestAdapter(t.compat ? ({ featureLevel: 'compatibility' } as GPURequestAdapterOptions) : { powerPreference: 'high-performance' });
    if (!adapter) continue;
    const features: GPUFeatureName[] = [];
    if (adapter.features.has('shader-f16')) features.push('shader-f16');
  // For ATTN_WEBGPU_PROFILE's kernel timer.
  if (adapter.features.has('timestamp-query')) features.push('timestamp-query');
    // For ATTN_WEBGPU_PROFILE's kernel timer.
    if (adapter.features.has('timestamp-query')) features.push('timestamp-query');
    const device = await adapter.requestDevice({ requiredLimits: deviceLimits(adapter), requiredFeatures: features });
    const host = makeHost(device, data.reply, (line) => writeSync(2, line + '\n'));
    // A lost device fails the next read, so training stops there with its last checkpoint.
    void device.lost.then((info) => {
      if (info.reason !== 'destroyed') host.executor.fail(`device lost: ${info.message}`);
    });
    port.on('message', (msg: BatchMsg | { type: 'close' } | { type: 'lose' }) => {
      if (msg.type === 'close') {
        device.destroy();
        port.close();
        return;
      }
      if (msg.type === 'lose') {
        // Tests: what a driver reset looks like to the engine.
        device.destroy();
        host.executor.fail('device lost: destroyed on request (simulated loss)');
        return;
      }
      host.onMessage(msg);
    });
    const ready: ReadyMsg = { type: 'ready', adapter: await describeAdapter(adapter, t.name, device) };
    unmute();
    port.postMessage(ready);
    return;
  }
  const failed: ReadyMsg = { type: 'failed', message: `no WebGPU adapter (tried: ${tries.map((t) => t.name).join(', ') || 'none'})` };
  unmute();
  port.postMessage(failed);
}

start().catch((e: unknown) => {
  const failed: ReadyMsg = { type: 'failed', message: e instanceof Error ? e.message : String(e) };
  parentPort!.postMessage(failed);
});
