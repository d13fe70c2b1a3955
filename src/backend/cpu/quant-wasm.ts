// The quantized matmul and embedding on WebAssembly: the cpu backend's path where the native
// addon is absent (browsers, or an addon that failed to build).
import type { QuantMatmulArgs, QuantWeightStorage, Storage } from '../backend.js';
import type { CpuBackend } from './index.js';

/** Runs the quantized matmul on the wasm kernels; false: not handled (the caller runs the JS kernel). */
export function wasmQuantMatmul(_be: CpuBackend, _args: QuantMatmulArgs): boolean {
  return false;
}

/** Runs the quantized embedding on the wasm kernels; false: not handled. */
export function wasmQuantEmbedding(_be: CpuBackend, _w: QuantWeightStorage, _ids: Storage, _n: number, _out: Storage): boolean {
  return false;
}
