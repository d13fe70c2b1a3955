// The quantized matmul and embedding on WebAssembly: the cpu backend's path where the native
// addon is absent (browsers, or an addon that failed to build). The kernels are
// assembly/quant.ts's; anything they do not take (other dtypes, a bad argument, an id out of
// range) returns false, and the caller's JS kernel handles it, refusals included.
import type { QuantMatmulArgs, QuantWeightStorage, Storage } from '../backend.js';
import type { WasmRuntime } from './runtime.js';

/** What these kernels need of the cpu backend (its runtime, and storage pointers). */
export interface WasmHost {
  readonly rt: WasmRuntime;
  ptr(s: Storage): number;
}

/** assembly/quant.ts format codes. */
const FORMAT = { int8: 0, int4: 1, int4z: 2 } as const;
const ACT = { none: 0, relu: 1, gelu: 2 } as const;
// Below this many multiply-adds the kernel runs on the calling thread only.
const PARALLEL_MIN_MACS = 1 << 16;
// Below this many dequantized elements the embedding runs on the calling thread only.
const PARALLEL_MIN_ELEMENTS = 1 << 16;

/** The weight's storages in the dtypes and sizes the kernels read (the caller checked sizes;
 *  quantEmbedding's were not, so they are checked here too). */
function weightOk(w: QuantWeightStorage): boolean {
  const { format, N, K } = w;
  if (!(format in FORMAT) || !Number.isInteger(N) || !Number.isInteger(K) || N < 1 || K < 1) return false;
  if (format !== 'int8' && K % 32 !== 0) return false;
  const groups = format === 'int8' ? 0 : K / 32;
  const bytes = format === 'int8' ? N * K : N * K / 2;
  if (w.data.dtype !== 'int32' || w.data.size < Math.ceil(bytes / 4)) return false;
  if (w.scales.dtype !== 'float32' || w.scales.size < (format === 'int8' ? N : N * groups)) return false;
  if (format === 'int4z' && (!w.zeros || w.zeros.dtype !== 'int32' || w.zeros.size < Math.ceil(N * groups / 4))) return false;
  return true;
}

/** Runs the quantized matmul on the wasm kernels; false: not handled (the caller runs the JS kernel). */
export function wasmQuantMatmul(be: WasmHost, args: QuantMatmulArgs): boolean {
  const { w, M, x, out } = args;
  const bias = args.bias ?? null;
  const act = ACT[args.activation ?? 'none'];
  if (act === undefined || !be.rt.has('quant_matmul') || !weightOk(w)) return false;
  if (x.dtype !== 'float32' || out.dtype !== 'float32' || (bias && bias.dtype !== 'float32')) return false;
  if (!(Number.isInteger(M) && M >= 0) || x.size < M * w.K || out.size < M * w.N || (bias && bias.size < w.N)) return false;
  if (M === 0) return true;
  const { N, K } = w;
  const threads = M * N * K < PARALLEL_MIN_MACS ? 1 : be.rt.threads;
  let scratch = 0;
  let stride = 0;
  if (M > 1) {
    stride = Number(be.rt.exports.quant_scratch_bytes(K));
    scratch = be.rt.scratch(stride);
  }
  be.rt.run('quant_matmul', [
    FORMAT[w.format], be.ptr(w.data), be.ptr(w.scales), w.format === 'int4z' ? be.ptr(w.zeros!) : 0,
    N, K, be.ptr(x), M, bias ? be.ptr(bias) : 0, act, be.ptr(out), scratch, stride,
  ], threads);
  return true;
}

/** Runs the quantized embedding on the wasm kernels; false: not handled. */
export function wasmQuantEmbedding(be: WasmHost, w: QuantWeightStorage, ids: Storage, n: number, out: Storage): boolean {
  if (!be.rt.has('quant_embedding') || !weightOk(w)) return false;
  if (ids.dtype !== 'int32' || out.dtype !== 'float32' || !(Number.isInteger(n) && n >= 0) || ids.size < n || out.size < n * w.K) return false;
  const idv = be.rt.i32(be.ptr(ids), n);
  // An id out of range: the JS kernel refuses it with the reference's RangeError.
  for (let i = 0; i < n; i++) if (!(idv[i]! >= 0 && idv[i]! < w.N)) return false;
  if (n === 0) return true;
  be.rt.run('quant_embedding', [
    FORMAT[w.format], be.ptr(w.data), be.ptr(w.scales), w.format === 'int4z' ? be.ptr(w.zeros!) : 0,
    w.N, w.K, be.ptr(ids), n, be.ptr(out),
  ], n * w.K < PARALLEL_MIN_ELEMENTS ? 1 : be.rt.threads);
  return true;
}
