// A weight-only quantized (N, K) matrix on a backend (int8 per row, int4/int4z in groups of 32;
// the layouts are quantize.ts's), and the two ops that read it: quantLinear (the matmul with the
// dequantization fused into its kernel) and quantEmbedding (rows dequantized on lookup). The
// weight is frozen: gradients flow to the input (so adapters train on a quantized base) and to
// the bias, never to the quantized matrix.
import type { Backend, QuantWeightStorage } from '../backend/backend.js';
import { contiguous, gelu, matmul, relu, reshape, sum } from './ops.js';
import { quantDataBytes, quantize, quantScaleCount, type QuantFormat, type QuantizedArrays } from './quantize.js';
import { fmt, ShapeError } from './shape.js';
import { getDefaultBackend, isGradEnabled, noGrad, record, Tensor } from './tensor.js';

/** Bytes as little-endian int32 words, zero-padded to a whole word. */
function asWords(bytes: Uint8Array): Int32Array {
  if (bytes.byteOffset % 4 === 0 && bytes.length % 4 === 0) return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  const padded = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
  padded.set(bytes);
  return new Int32Array(padded.buffer);
}

function wordsToBytes(words: Int32Array, n: number): Uint8Array {
  return new Uint8Array(words.buffer, words.byteOffset, n).slice();
}

export class QuantizedWeight {
  private constructor(
    readonly format: QuantFormat,
    readonly N: number,
    readonly K: number,
    /** int32 words holding the packed bytes. */
    readonly data: Tensor,
    readonly scales: Tensor,
    /** int32 words holding the int4z zero-point bytes. */
    readonly zeros: Tensor | null,
  ) {}

  /** The (N, K) shape of the float matrix this stands for. */
  get shape(): [number, number] {
    return [this.N, this.K];
  }

  get backend(): Backend {
    return this.data.backend;
  }

  /** What the backend kernels take. */
  get storage(): QuantWeightStorage {
    this.data.assertLive('quantized weight');
    return { format: this.format, N: this.N, K: this.K, data: this.data.storage, scales: this.scales.storage, zeros: this.zeros?.storage ?? null };
  }

  /** Bytes held: packed levels, scales and zero points. */
  get bytes(): number {
    return quantDataBytes(this.format, this.N, this.K) + 4 * quantScaleCount(this.format, this.N, this.K) + (this.zeros ? quantScaleCount(this.format, this.N, this.K) : 0);
  }

  static fromArrays(a: QuantizedArrays, backend: Backend = getDefaultBackend()): QuantizedWeight {
    const words = (b: Uint8Array) => new Tensor(backend.upload(asWords(b), 'int32'), [Math.ceil(b.length / 4)]).keep();
    if (a.scales.length !== quantScaleCount(a.format, a.N, a.K) || a.data.length !== quantDataBytes(a.format, a.N, a.K) || (a.format === 'int4z') !== !!a.zeros) {
      throw new RangeError(`QuantizedWeight: arrays do not fit a ${a.format} (${a.N}, ${a.K}) weight`);
    }
    return new QuantizedWeight(a.format, a.N, a.K, words(a.data), new Tensor(backend.upload(a.scales, 'float32'), [a.scales.length]).keep(), a.zeros ? words(a.zeros) : null);
  }

  /** A zeroed weight (levels at the zero point, scales 0), to be filled by a loader. */
  static zeros(format: QuantFormat, N: number, K: number, backend: Backend = getDefaultBackend()): QuantizedWeight {
    // Allocated and filled on the backend: a host copy of a large matrix would leave the C heap
    // holding its size after it is freed (the allocator keeps freed blocks), in every loader.
    const count = quantScaleCount(format, N, K);
    const words = (bytes: number, fill: number) => {
      const n = Math.ceil(bytes / 4);
      const s = backend.alloc('int32', n);
      if (fill !== 0) backend.fill(s, fill, 0, n);
      return new Tensor(s, [n]).keep();
    };
    const data = words(quantDataBytes(format, N, K), format === 'int4' ? 0x88888888 | 0 : 0); // int4: levels at the zero point 8
    return new QuantizedWeight(format, N, K, data, new Tensor(backend.alloc('float32', count), [count]).keep(), format === 'int4z' ? words(count, 0) : null);
  }

  /** Quantizes a float (N, K) tensor (read to the host, packed there, uploaded to its backend). */
  static quantize(w: Tensor, format: QuantFormat): QuantizedWeight {
    if (w.ndim !== 2) throw new ShapeError(`quantize: weight must be 2-D (out, in), got ${fmt(w.shape)}`);
    const [N, K] = w.shape as [number, number];
    const host = noGrad(() => contiguous(w.dtype === 'float32' ? w : w.to('float32'))).data() as Float32Array;
    return QuantizedWeight.fromArrays(quantize(host, N, K, format), w.backend);
  }

  /** Overwrites the levels, scales and zero points with `a` (same format and shape). */
  assign(a: QuantizedArrays): void {
    if (a.format !== this.format || a.N !== this.N || a.K !== this.K) throw new Error(`QuantizedWeight.assign: ${a.format} (${a.N}, ${a.K}) into ${this.format} (${this.N}, ${this.K})`);
    this.backend.write(this.data.storage, asWords(a.data), 0);
    this.backend.write(this.scales.storage, a.scales, 0);
    if (this.zeros && a.zeros) this.backend.write(this.zeros.storage, asWords(a.zeros), 0);
  }

  /** Overwrites rows [n0, n0 + part.N) with `part` (the same format and K; n0 a multiple of 4),
   *  so a loader can fill a large matrix a slice at a time. */
  assignRows(n0: number, part: QuantizedArrays): void {
    if (part.format !== this.format || part.K !== this.K || n0 % 4 !== 0 || n0 < 0 || n0 + part.N > this.N || (n0 + part.N < this.N && part.N % 4 !== 0)) {
      throw new Error(`QuantizedWeight.assignRows: ${part.format} rows [${n0}, ${n0 + part.N}) of width ${part.K} into ${this.format} (${this.N}, ${this.K})`);
    }
    const per = quantScaleCount(this.format, 1, this.K); // scales (and zero points) per row
    const rowBytes = quantDataBytes(this.format, 1, this.K);
    if ((n0 * rowBytes) % 4 !== 0 || ((n0 * per) % 4 !== 0 && part.zeros)) throw new Error(`QuantizedWeight.assignRows: row ${n0} does not start a whole int32 word`);
    this.backend.write(this.data.storage, asWords(part.data), (n0 * rowBytes) / 4);
    this.backend.write(this.scales.storage, part.scales, n0 * per);
    if (this.zeros && part.zeros) this.backend.write(this.zeros.storage, asWords(part.zeros), (n0 * per) / 4);
  }

  /** The packed arrays, read back to the host. */
  toArrays(): QuantizedArrays {
    const count = quantScaleCount(this.format, this.N, this.K);
    return {
      format: this.format, N: this.N, K: this.K,
      data: wordsToBytes(this.data.data() as Int32Array, quantDataBytes(this.format, this.N, this.K)),
      scales: (this.scales.data() as Float32Array).slice(),
      zeros: this.zeros ? wordsToBytes(this.zeros.data() as Int32Array, count) : null,
    };
  }

  /** The float32 (N, K) matrix: for export and for a gradient's one-layer temporary, never for inference. */
  dequantize(): Tensor {
    const out = new Tensor(this.backend.alloc('float32', this.N * this.K, true), [this.N, this.K]);
    const ids = new Tensor(this.backend.upload(Int32Array.from({ length: this.N }, (_, i) => i), 'int32'), [this.N]);
    this.backend.quantEmbedding(this.storage, ids.storage, this.N, out.storage);
    ids.dispose();
    return out;
  }

  dispose(): void {
    for (const t of [this.data, this.scales, this.zeros]) if (t && !t.isDisposed) t.dispose();
  }
}


/** y = act(x Wᵀ + b) with W quantized: the dequantization runs inside the backend's kernel. */
export function quantLinear(x: Tensor, w: QuantizedWeight, bias?: Tensor | null, activation?: 'gelu' | 'relu'): Tensor {
  const grad = isGradEnabled() && (x.requiresGrad || !!bias?.requiresGrad);
  if (activation && grad) {
    const y = quantLinear(x, w, bias);
    return activation === 'gelu' ? gelu(y, 'tanh') : relu(y);
  }
  x.assertLive('quantLinear');
  if (x.backend !== w.backend || (bias && bias.backend !== x.backend)) throw new Error(`quantLinear: input on ${x.backend.name}, weight on ${w.backend.name}${bias ? `, bias on ${bias.backend.name}` : ''}`);
  if (x.dtype !== 'float32') throw new Error(`quantLinear: input must be float32, got ${x.dtype}`);
  const { N, K } = w;
  if (x.shape[x.ndim - 1] !== K) throw new ShapeError(`quantLinear: input ${fmt(x.shape)} does not match ${w.format} weight ${fmt([N, K])} (expected last dim ${K})`);
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== N)) throw new ShapeError(`quantLinear: bias ${fmt(bias.shape)} does not match ${w.format} weight ${fmt([N, K])}`);
  const rows = x.size / K;
  const out = new Tensor(x.backend.alloc('float32', rows * N, true), [...x.shape.slice(0, -1), N]);
  noGrad(() => {
    const xc = contiguous(x);
    const bc = bias ? contiguous(bias) : null;
    x.backend.quantMatmul({ x: xc.storage, w: w.storage, out: out.storage, M: rows, bias: bc?.storage ?? null, activation });
  });
  const inputs = bias ? [x, bias] : [x];
  return record(out, 'quantLinear', inputs, (g) => {
    const g2 = reshape(g, [rows, N]);
    let gx: Tensor | null = null;
    if (x.requiresGrad) {
      const deq = w.dequantize(); // one layer, for this backward only
      gx = reshape(matmul(g2, deq), x.shape); // (rows, N) @ (N, K)
      deq.dispose();
    }
    return bias ? [gx, bias.requiresGrad ? sum(g2, 0) : null] : [gx];
  });
}

/** out[..., :] = dequantized row ids[...] of a quantized (V, C) table. */
export function quantEmbedding(w: QuantizedWeight, ids: Tensor): Tensor {
  ids.assertLive('quantEmbedding');
  if (ids.dtype !== 'int32') throw new Error(`quantEmbedding: ids must be int32, got ${ids.dtype}`);
  if (ids.backend !== w.backend) throw new Error(`quantEmbedding: ids on ${ids.backend.name}, table on ${w.backend.name}`);
  const idc = contiguous(ids);
  const out = new Tensor(w.backend.alloc('float32', ids.size * w.K, true), [...ids.shape, w.K]);
  w.backend.quantEmbedding(w.storage, idc.storage, ids.size, out.storage);
  return out;
}
