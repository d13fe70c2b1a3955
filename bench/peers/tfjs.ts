// TensorFlow.js peer on its WebAssembly backend (XNNPACK kernels). In Node the wasm backend
// runs on one thread (no cross-origin-isolated SharedArrayBuffer setup there) and every op
// finishes before the call returns, so timing needs no per-call sync.
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { measure, spotCheckMatmul, type MatmulShape, type Timing, type TimingOptions } from '../util.js';

export interface TfjsPeer {
  label: string;
  version: string;
  threads: number;
  simd: boolean;
  /** Times tf.matMul at this shape (with its transposed operands, or none when `plain`);
   *  `error` is the spot check of the result. */
  matmul(s: MatmulShape, opts: TimingOptions, plain?: boolean): Timing & { error: number };
}

export const TFJS_INSTALL_HINT = 'npm install (devDependencies @tensorflow/tfjs and @tensorflow/tfjs-backend-wasm)';

/** Loads tfjs with the wasm backend, or returns why it could not. */
export async function loadTfjs(): Promise<TfjsPeer | { skip: string }> {
  let tf: typeof TF;
  let wasm: typeof import('@tensorflow/tfjs-backend-wasm');
  let wasmDir: string;
  try {
    tf = await import('@tensorflow/tfjs');
    wasm = await import('@tensorflow/tfjs-backend-wasm');
    // The .wasm files sit next to the package's Node bundle in dist/.
    const require = createRequire(import.meta.url);
    wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + '/';
  } catch (e) {
    return { skip: `TensorFlow.js is not installed (${(e as Error).message.split('\n')[0]}); run: ${TFJS_INSTALL_HINT}` };
  }
  try {
    wasm.setWasmPaths(wasmDir);
    if (!(await tf.setBackend('wasm'))) return { skip: 'TensorFlow.js wasm backend failed to initialise' };
    await tf.ready();
  } catch (e) {
    return { skip: `TensorFlow.js wasm backend failed: ${(e as Error).message}` };
  }
  const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
  const threads = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT') ? wasm.getThreadsCount() : 1;
  return {
    label: 'tfjs wasm',
    version: tf.version.tfjs,
    threads,
    simd,
    matmul(shape, opts, plain = false) {
      const s = plain ? { ...shape, transA: false, transB: false } : shape;
      const a = tf.randomNormal(s.transA ? [s.K, s.M] : [s.M, s.K], 0, 1, 'float32', 1);
      const b = tf.randomNormal(s.transB ? [s.N, s.K] : [s.K, s.N], 0, 1, 'float32', 2);
      const run = () => {
        tf.tidy(() => {
          tf.matMul(a, b, s.transA ?? false, s.transB ?? false);
        });
      };
      const t = measure(run, opts);
      // Final sync, outside the timing: read one result back and check it.
      const c = tf.matMul(a, b, s.transA ?? false, s.transB ?? false);
      const error = spotCheckMatmul(s, a.dataSync(), b.dataSync(), c.dataSync());
      tf.dispose([a, b, c]);
      return { ...t, error };
    },
  };
}
