// The backend registry: creates each backend once and picks the default for new tensors.
import { setDefaultBackend } from '../tensor/tensor.js';
import type { Backend } from './backend.js';
import { RefBackend } from './ref/index.js';
import { checkOptions } from '../util/options.js';

export type BackendName = 'ref' | 'cpu' | 'webgpu';
export const BACKEND_NAMES: readonly BackendName[] = ['ref', 'cpu', 'webgpu'];

const ref = new RefBackend();
const made = new Map<string, Backend>([['ref', ref]]);

/** The plain TypeScript backend (the default until another is chosen). */
export function refBackend(): RefBackend {
  return ref;
}

/** Creates (once) the named backend. `threads` applies to `cpu` (default: all cores). */
export async function getBackend(name: BackendName, opts: { threads?: number } = {}): Promise<Backend> {
  checkOptions('getBackend', opts, ['threads']);
  const key = name === 'cpu' ? `cpu:${opts.threads ?? 'all'}` : name;
  let b = made.get(key);
  if (!b) {
    if (name === 'cpu') {
      const { createCpuBackend } = await import('./cpu/index.js');
      b = await createCpuBackend(opts);
    } else if (name === 'webgpu') {
      const inNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';
      if (inNode) {
        const [{ WebGPUBackend }, { startNodeDevice }] = await Promise.all([import('./webgpu/index.js'), import('./webgpu/node-device.js')]);
        b = new WebGPUBackend(await startNodeDevice());
      } else {
        // A browser Web Worker: the page hosts the device (see webgpu/browser.ts).
        const { connectWebGPUFromPage } = await import('./webgpu/browser.js');
        b = await connectWebGPUFromPage();
      }
    } else {
      throw new Error(`unknown backend '${name as string}' (known: ${BACKEND_NAMES.join(', ')})`);
    }
    made.set(key, b);
  }
  return b;
}

/** Makes the named backend the default for new tensors and returns it. */
export async function useBackend(name: BackendName, opts: { threads?: number } = {}): Promise<Backend> {
  const b = await getBackend(name, opts);
  setDefaultBackend(b);
  return b;
}

setDefaultBackend(ref);

/** A device name as the CLI and configs take it: a backend, or 'auto' (a hardware GPU through
 *  webgpu when one is there, else cpu). */
export type DeviceName = BackendName | 'auto';
export const DEVICE_NAMES: readonly DeviceName[] = ['cpu', 'webgpu', 'auto', 'ref'];

/** Software WebGPU adapters: correct but far slower than the cpu backend. */
export function isSoftwareAdapter(description: string): boolean {
  return /llvmpipe|lavapipe|swiftshader|softpipe|software/i.test(description);
}

/**
 * Opens a device by name. 'webgpu' insists: no adapter is an error. 'auto' uses webgpu on a
 * hardware adapter and otherwise falls back to cpu, saying why through `notice`.
 */
export async function openDevice(name: DeviceName, opts: { threads?: number; notice?: (msg: string) => void } = {}): Promise<Backend> {
  const threads = opts.threads && opts.threads > 0 ? { threads: opts.threads } : {};
  if (name !== 'auto') return getBackend(name, threads);
  const notice = opts.notice ?? ((m: string) => console.error(m));
  try {
    const b = await getBackend('webgpu');
    const a = (b as unknown as { adapter?: { description: string; device: string } }).adapter;
    const desc = a ? `${a.description} ${a.device}` : '';
    if (!isSoftwareAdapter(desc)) return b;
    notice(`device auto: the WebGPU adapter is a software renderer (${desc.trim()}); using cpu`);
  } catch (e) {
    notice(`device auto: no WebGPU (${e instanceof Error ? e.message : String(e)}); using cpu`);
  }
  return getBackend('cpu', threads);
}
