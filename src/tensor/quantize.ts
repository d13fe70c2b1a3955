// Weight-only quantization of a (N, K) weight (PyTorch's (out, in)) into the packed layouts the
// quantized matmul kernels of every backend read. Pure functions over typed arrays.
//  - int8: per output channel (row), symmetric: w ≈ s[n] · q[n, k], q in [-127, 127], s = max|w| / 127.
//    data: N rows of K signed bytes.
//  - int4: groups of 32 along K, symmetric as llama.cpp's Q4_0: d = m / -8 where m is the value of
//    largest magnitude in the group, q = clamp(floor(w / d + 8.5), 0, 15), w ≈ d · (q - 8).
//  - int4z: groups of 32 with a zero point: the group's range widened to hold 0 is split in 15
//    steps s, z = round(-min / s) in [0, 15], q = clamp(round(w / s) + z, 0, 15), w ≈ s · (q - z).
//  int4 data: N rows of K/32 groups of 16 bytes, as Q4_0 packs a block: byte j of a group holds
//  element j in its low nibble and element j + 16 in its high nibble (so SIMD unpacks a group with
//  one mask and one shift). scales: N · K/32 float32, row-major; zeros (int4z): N · K/32 bytes.

export type QuantFormat = 'int8' | 'int4' | 'int4z';
export const QUANT_FORMATS: readonly QuantFormat[] = ['int8', 'int4', 'int4z'];
/** Elements per int4 group (one scale, and one zero point for int4z). */
export const QUANT_GROUP = 32;

export interface QuantizedArrays {
  format: QuantFormat;
  N: number;
  K: number;
  /** int8: N·K bytes; int4/int4z: N·K/2 bytes. */
  data: Uint8Array;
  /** int8: N; int4/int4z: N·K/32. */
  scales: Float32Array;
  /** int4z: N·K/32 zero points (0..15); null otherwise. */
  zeros: Uint8Array | null;
}

/** Bytes of the packed data of a (N, K) weight. */
export function quantDataBytes(format: QuantFormat, N: number, K: number): number {
  return format === 'int8' ? N * K : (N * K) / 2;
}

/** Number of scales (and of int4z zero points) of a (N, K) weight. */
export function quantScaleCount(format: QuantFormat, N: number, K: number): number {
  return format === 'int8' ? N : (N * K) / QUANT_GROUP;
}

/** Why a (N, K) weight cannot take this format, or null. */
export function quantUnsupported(format: QuantFormat, N: number, K: number): string | null {
  if (!Number.isInteger(N) || !Number.isInteger(K) || N < 1 || K < 1) return `shape (${N}, ${K}) is not a matrix`;
  if (format !== 'int8' && K % QUANT_GROUP !== 0) return `${format} needs rows of whole groups of ${QUANT_GROUP}, got ${K} columns`;
  return null;
}

/** Round half away from zero (C's roundf), as llama.cpp quantizes. */
function roundAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

export function quantize(w: Float32Array, N: number, K: number, format: QuantFormat): QuantizedArrays {
  const why = quantUnsupported(format, N, K);
  if (why) throw new RangeError(`quantize ${format}: ${why}`);
  if (w.length !== N * K) throw new RangeError(`quantize ${format}: ${w.length} values for shape (${N}, ${K})`);
  const data = new Uint8Array(quantDataBytes(format, N, K));
  const scales = new Float32Array(quantScaleCount(format, N, K));
  if (format === 'int8') {
    const q = new Int8Array(data.buffer);
    for (let n = 0; n < N; n++) {
      let amax = 0;
      for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(w[n * K + k]!));
      const s = Math.fround(amax / 127);
      const inv = s > 0 ? 1 / s : 0;
      for (let k = 0; k < K; k++) q[n * K + k] = Math.max(-127, Math.min(127, roundAway(w[n * K + k]! * inv)));
      scales[n] = s;
    }
    return { format, N, K, data, scales, zeros: null };
  }
  const G = QUANT_GROUP;
  const groups = K / G;
  const zeros = format === 'int4z' ? new Uint8Array(N * groups) : null;
  const q = new Uint8Array(G);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      const base = n * K + g * G;
      const gi = n * groups + g;
      if (format === 'int4') {
        let m = 0;
        for (let j = 0; j < G; j++) if (Math.abs(w[base + j]!) > Math.abs(m)) m = w[base + j]!;
        const d = Math.fround(m / -8);
        const inv = d !== 0 ? Math.fround(1 / d) : 0;
        for (let j = 0; j < G; j++) q[j] = Math.min(15, Math.floor(Math.fround(w[base + j]! * inv) + 8.5));
        scales[gi] = d;
      } else {
        let lo = 0;
        let hi = 0;
        for (let j = 0; j < G; j++) {
          lo = Math.min(lo, w[base + j]!);
          hi = Math.max(hi, w[base + j]!);
        }
        const s = Math.fround((hi - lo) / 15);
        const inv = s > 0 ? 1 / s : 0;
        const z = s > 0 ? Math.max(0, Math.min(15, roundAway(-lo * inv))) : 0;
        for (let j = 0; j < G; j++) q[j] = Math.max(0, Math.min(15, roundAway(w[base + j]! * inv) + z));
        scales[gi] = s;
        zeros![gi] = z;
      }
      const out = gi * (G / 2);
      for (let j = 0; j < G / 2; j++) data[out + j] = q[j]! | (q[j + G / 2]! << 4);
    }
  }
  return { format, N, K, data, scales, zeros };
}

/** The integer level of element (n, k) minus its zero point: w[n, k] = scale · level. */
export function quantLevel(a: QuantizedArrays, n: number, k: number): number {
  if (a.format === 'int8') return (a.data[n * a.K + k]! << 24) >> 24;
  const G = QUANT_GROUP;
  const gi = n * (a.K / G) + Math.floor(k / G);
  const j = k % G;
  const byte = a.data[gi * (G / 2) + (j % (G / 2))]!;
  const q = j < G / 2 ? byte & 15 : byte >> 4;
  return q - (a.zeros ? a.zeros[gi]! : 8);
}

/** The scale of element (n, k). */
export function quantScale(a: QuantizedArrays, n: number, k: number): number {
  return a.format === 'int8' ? a.scales[n]! : a.scales[n * (a.K / QUANT_GROUP) + Math.floor(k / QUANT_GROUP)]!;
}

/** Rows [n0, n1) of the weight as float32 (w = scale · level): for tests, export and embedding rows. */
export function dequantizeRows(a: QuantizedArrays, n0 = 0, n1 = a.N): Float32Array {
  const out = new Float32Array((n1 - n0) * a.K);
  for (let n = n0; n < n1; n++) {
    for (let k = 0; k < a.K; k++) out[(n - n0) * a.K + k] = Math.fround(quantScale(a, n, k) * quantLevel(a, n, k));
  }
  return out;
}
