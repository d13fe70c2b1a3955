// attn: the Transformer in TypeScript. This entry sets the `ref` backend as the default so
// that tensors work at once; `await useBackend('cpu')` switches to the fast WebAssembly one.
import type { Backend } from './backend/backend.js';
import { RefBackend } from './backend/ref/index.js';
import { setDefaultBackend } from './tensor/index.js';

export * from './tensor/index.js';
export type * from './backend/backend.js';
export { RefBackend } from './backend/ref/index.js';
export { AdamW, type AdamWOptions } from './train/optim.js';

export type BackendName = 'ref' | 'cpu';

const ref = new RefBackend();
setDefaultBackend(ref);
const made = new Map<string, Backend>([['ref', ref]]);

/** Creates (once) the named backend. `threads` applies to `cpu` (default: all cores). */
export async function getBackend(name: BackendName, opts: { threads?: number } = {}): Promise<Backend> {
  const key = name === 'cpu' ? `cpu:${opts.threads ?? 'all'}` : name;
  let b = made.get(key);
  if (!b) {
    if (name === 'cpu') {
      const { createCpuBackend } = await import('./backend/cpu/index.js');
      b = await createCpuBackend(opts);
    } else {
      throw new Error(`unknown backend '${name as string}' (known: ref, cpu)`);
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
