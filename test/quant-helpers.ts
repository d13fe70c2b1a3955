// What the quantized-kernel tests share: packed weights uploaded as a backend's storages, the
// grid of cases (every format, M, K, N, bias and activation), seeded inputs.
import assert from 'node:assert/strict';
import type { Activation, Backend, QuantWeightStorage } from '../src/backend/backend.js';
import { Generator } from '../src/index.js';
import { QUANT_FORMATS, dequantizeRows, quantize, type QuantFormat, type QuantizedArrays } from '../src/tensor/quantize.js';

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

/** Embedding rows equal dequantizeRows exactly; an id out of range is refused (a RangeError
 *  matching opName, naming the id and the limit), when the op runs or at the next read. */
export function checkQuantEmbedding(be: Backend, opName: RegExp = /quantEmbedding/, badIds: number[][] = [[0, 37], [-1], [3, 4, 42]]): void {
  for (const format of QUANT_FORMATS) {
    for (const K of format === 'int8' ? [32, 50, 800] : [32, 800]) {
      const N = 37;
      const g = new Generator(K + N);
      const q = quantize(randomF32(N * K, g), N, K, format);
      const deq = dequantizeRows(q);
      const w = uploadQuant(be, q);
      const idList = [0, N - 1, 5, 5, 17, 36, 1, 0, 12, 3, 30, 29, 8];
      const ids = be.upload(Int32Array.from(idList), 'int32');
      const out = be.alloc('float32', idList.length * K);
      be.quantEmbedding(w, ids, idList.length, out);
      const got = be.read(out);
      for (let i = 0; i < idList.length; i++) {
        const want = deq.subarray(idList[i]! * K, (idList[i]! + 1) * K);
        for (let k = 0; k < K; k++) {
          if (!Object.is(got[i * K + k], want[k])) assert.fail(`${be.name} ${format} K=${K}: row ${i} (id ${idList[i]}) element ${k}: ${got[i * K + k]} vs ${want[k]}`);
        }
      }
      for (const bad of badIds) {
        const b = be.upload(Int32Array.from(bad), 'int32');
        const o = be.alloc('float32', bad.length * K);
        const pos = bad.length - 1;
        assert.throws(() => { be.quantEmbedding(w, b, bad.length, o); be.read(o); },
          (e: unknown) => e instanceof RangeError && opName.test(e.message) && e.message.includes(String(bad[pos])) && e.message.includes(String(N)),
          `${be.name} ${format}: id ${bad[pos]} refused`);
        be.free(b);
        be.free(o);
      }
      freeQuant(be, w);
      be.free(ids);
      be.free(out);
    }
  }
}
