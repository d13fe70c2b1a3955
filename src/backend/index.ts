// The backend registry: creates each backend once and picks the default for new tensors.
import { setDefaultBackend } from '../tensor/tensor.js';
import type { Backend } from './backend.js';
import { RefBackend } from './ref/index.js';

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
  const key = name === 'cpu' ? `cpu:${opts.threads ?? 'all'}` : name;
  let b = made.get(key);
  if (!b) {
    if (name === 'cpu') {
      const { createCpuBackend } = await import('./cpu/index.js');
      b = await createCpuBackend(opts);
    } else if (name === 'webgpu') {
      const [{ WebGPUBackend }, { startNodeDevice }] = await Promise.all([import('./webgpu/index.js'), import('./webgpu/node-device.js')]);
      b = new WebGPUBackend(await startNodeDevice());
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
