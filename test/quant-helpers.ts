// What the quantized-kernel tests share: packed weights uploaded as a backend's storages, the
// grid of cases (every format, M, K, N, bias and activation), seeded inputs.
import type { Activation, Backend, QuantWeightStorage } from '../src/backend/backend.js';
import type { Generator } from '../src/index.js';
import { QUANT_FORMATS, type QuantFormat, type QuantizedArrays } from '../src/tensor/quantize.js';

export const ACTS: Activation[] = ['none', 'relu', 'gelu'];

/** Bytes as the little-endian int32 words of a storage (padded to whole words). */
export function words(bytes: Uint8Array): Int32Array {
  const padded = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
  padded.set(bytes);
  return new Int32Array(padded.buffer);
}

export function uploadQuant(be: Backend, q: QuantizedArrays): QuantWeightStorage {
  return {
    format: q.format, N: q.N, K: q.K,
    data: be.upload(words(q.data), 'int32'),
    scales: be.upload(q.scales, 'float32'),
    zeros: q.zeros ? be.upload(words(q.zeros), 'int32') : null,
  };
}

export function freeQuant(be: Backend, w: QuantWeightStorage): void {
  be.free(w.data);
  be.free(w.scales);
  if (w.zeros) be.free(w.zeros);
}

export function randomF32(n: number, g: Generator, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = g.normal() * scale;
  return a;
}

export interface Case { format: QuantFormat; M: number; K: number; N: number; bias: boolean; act: Activation }

export function* cases(): IterableIterator<Case> {
  for (const format of QUANT_FORMATS) {
    for (const K of format === 'int8' ? [32, 50, 96, 800] : [32, 96, 800]) {
      for (const M of [1, 3, 17]) {
        for (const N of [1, 5, 64]) {
          for (const bias of [false, true]) {
            for (const act of ACTS) yield { format, M, K, N, bias, act };
          }
        }
      }
    }
  }
}

