// The device thread's message loop: runs batches on a GpuExecutor and answers reads through
// the shared reply area. Used by the Node device worker and by a browser page hosting the
// device for an engine running in a Web Worker.
/// <reference types="@webgpu/types" />
import { GpuExecutor, DeviceError, kernelLabel } from './executor.js';
import { KERNEL_TIMES_ID, REPLY_DATA_BYTES, REPLY_HEADER_BYTES, STATE_DONE, STATUS_ERROR, STATUS_OK, STATUS_RANGE_ERROR, type AdapterDescription, type BatchMsg, type Cmd } from './protocol.js';

/** Picks the limits worth raising above WebGPU's defaults from what the adapter offers. */
export function deviceLimits(adapter: GPUAdapter): Record<string, number> {
  const want = ['maxStorageBufferBindingSize', 'maxBufferSize', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize',
    'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY'];
  const limits: Record<string, number> = {};
  const al = adapter.limits as unknown as Record<string, number>;
  for (const k of want) if (typeof al[k] === 'number') limits[k] = al[k]!;
  return limits;
}

export async function describeAdapter(adapter: GPUAdapter, backend: string, device: GPUDevice): Promise<AdapterDescription> {
  const info = (adapter as unknown as { info?: GPUAdapterInfo }).info;
  const limits: Record<string, number> = {};
  const dl = device.limits as unknown as Record<string, number>;
  for (const k of ['maxStorageBufferBindingSize', 'maxBufferSize', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup']) {
    if (typeof dl[k] === 'number') limits[k] = dl[k]!;
  }
  return {
    vendor: info?.vendor ?? '',
    architecture: info?.architecture ?? '',
    device: info?.device ?? '',
    description: info?.description ?? '',
    backend,
    features: [...adapter.features].map(String).sort(),
    limits,
  };
}

/** Handles one message from the engine thread. */
/** `log`: where ATTN_WEBGPU_TRACE lines go (a Node worker's console waits for the main thread,
 *  which is blocked in reads, so the worker passes a synchronous write to stderr). */
export function makeHost(device: GPUDevice, reply: SharedArrayBuffer, log: (line: string) => void = console.error): { executor: GpuExecutor; onMessage(msg: BatchMsg): void } {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  // ATTN_WEBGPU_PROFILE=1: GPU time per kernel from timestamp queries (WebGPUBackend.kernelTimes).
  // ATTN_WEBGPU_POISON=1: uninitialized allocations hold NaN bits (see GpuExecutor).
  // ATTN_WEBGPU_POOL_MB: the least the buffer pool may keep unused (default 256; see BufferPool).
  const poolMB = Number(env?.ATTN_WEBGPU_POOL_MB ?? 256);
  const executor = new GpuExecutor(device, !!env?.ATTN_WEBGPU_PROFILE, !!env?.ATTN_WEBGPU_POISON, Number.isFinite(poolMB) && poolMB >= 0 ? poolMB * 2 ** 20 : undefined);
  const ctrl = new Int32Array(reply, 0, 4);
  const data = new Uint8Array(reply, REPLY_HEADER_BYTES, REPLY_DATA_BYTES);
  const answer = (status: number, bytes: Uint8Array): void => {
    data.set(bytes.subarray(0, REPLY_DATA_BYTES));
    Atomics.store(ctrl, 1, status);
    Atomics.store(ctrl, 2, bytes.length);
    Atomics.store(ctrl, 0, STATE_DONE);
    Atomics.notify(ctrl, 0);
  };
  let chain: Promise<void> = Promise.resolve();
  // ATTN_WEBGPU_TRACE=1: one line per read on stderr, splitting the time since the last read
  // into encoding here (this thread's CPU) and waiting for the GPU to finish.
  const trace = !!env?.ATTN_WEBGPU_TRACE;
  const tr = { batches: 0, cmds: 0, dispatches: executor.dispatches, encodeMs: 0, since: performance.now() };
  // ATTN_WEBGPU_TRACE=kernels: also runs each kernel alone and waits for it, so the trace line
  // lists the kernels that took longest by wall time (serialized: for adapters without
  // 'timestamp-query', such as SwiftShader; the total is slower than a normal run).
  const perKernel = env?.ATTN_WEBGPU_TRACE === 'kernels' ? new Map<string, { calls: number; ms: number }>() : null;
  const runTimed = async (cmds: readonly Cmd[]): Promise<void> => {
    for (const cmd of cmds) {
      if (cmd.op === 'read' || cmd.op === 'free') {
        executor.run([cmd]);
        continue;
      }
      executor.flush();
      await device.queue.onSubmittedWorkDone();
      const k0 = performance.now();
      executor.run([cmd]);
      executor.flush();
      await device.queue.onSubmittedWorkDone();
      const label = cmd.op === 'kernel' ? kernelLabel(cmd.name, cmd.args) : cmd.op;
      const e = perKernel!.get(label) ?? { calls: 0, ms: 0 };
      e.calls++;
      e.ms += performance.now() - k0;
      perKernel!.set(label, e);
    }
  };
  const onMessage = (msg: BatchMsg): void => {
    // Batches run in arrival order; a read awaits the GPU before the next batch is encoded.
    chain = chain.then(async () => {
      const t0 = trace ? performance.now() : 0;
      if (perKernel) await runTimed(msg.cmds);
      else executor.run(msg.cmds);
      const last = msg.cmds[msg.cmds.length - 1];
      if (last?.op !== 'read') {
        executor.flush();
        if (trace) {
          tr.batches++;
          tr.cmds += msg.cmds.length;
          tr.encodeMs += performance.now() - t0;
        }
        return;
      }
      try {
        const t1 = trace ? performance.now() : 0;
        if (last.id === KERNEL_TIMES_ID) executor.flush();
        const bytes = last.id === KERNEL_TIMES_ID
          ? new TextEncoder().encode(executor.timer ? await executor.timer.report() : 'null')
          : await executor.readBack(last.id, last.byteOffset, last.byteLength);
        if (trace) {
          const t2 = performance.now();
          const enc = tr.encodeMs + (t1 - t0);
          log(`webgpu trace: ${tr.batches + 1} batches, ${tr.cmds + msg.cmds.length} commands, ${executor.dispatches - tr.dispatches} dispatches; ` +
            `${(t2 - tr.since).toFixed(2)} ms since the last read: encoding ${enc.toFixed(2)} ms, waiting for the GPU ${(t2 - t1).toFixed(2)} ms` +
            (perKernel ? `; slowest kernels: ${[...perKernel.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12).map(([k, e]) => `${k} ×${e.calls} ${e.ms.toFixed(1)} ms`).join(', ')}` : ''));
          perKernel?.clear();
          Object.assign(tr, { batches: 0, cmds: 0, dispatches: executor.dispatches, encodeMs: 0, since: t2 });
        }
        answer(STATUS_OK, bytes);
      } catch (e) {
        const range = e instanceof DeviceError && e.range;
        answer(range ? STATUS_RANGE_ERROR : STATUS_ERROR, new TextEncoder().encode(e instanceof Error ? e.message : String(e)));
      }
    });
  };
  return { executor, onMessage };
}
