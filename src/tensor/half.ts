// IEEE binary16 ("half", dtype float16) and bfloat16 conversions. Such tensors store the bits
// in a Uint16Array; backends that support the dtype widen them to float32 for arithmetic.

/** float32 bit patterns of all 65536 half values, built on first use. */
let halfTable: Uint32Array | null = null;

/** Exact IEEE binary16 → binary32, as bits (every half is exactly a float). */
export function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf, or NaN keeping its payload
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0; // rebias 15 → 127
  if (mant === 0) return sign >>> 0;
  // Subnormal half: mant × 2^-24, normal as a float. Shift the leading 1 up to bit 10.
  let e = 113; // biased float exponent of 2^-14
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

export function getHalfTable(): Uint32Array {
  if (!halfTable) {
    halfTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfBitsToFloatBits(h);
  }
  return halfTable;
}

/**
 * binary32 bits → binary16 bits, rounding to nearest, ties to even; overflow goes to ±inf.
 * NaN stays a quiet NaN with its sign and the top of its payload, so that reading a half
 * file and writing it back is the identity (the default NaN gives 0x7e00, as in PyTorch).
 */
export function floatBitsToHalfBits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 127;
  if (e > 15) return sign | 0x7c00;
  if (e >= -14) {
    // Normal half. A mantissa that rounds up past 0x3ff carries into the exponent, which is
    // right, and into 0x7c00 (inf) when it overflows.
    let v = ((e + 15) << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (v & 1) === 1)) v++;
    return sign | v;
  }
  // Subnormal half (or zero): value = m × 2^-24 with m = significand × 2^(e + 1).
  const shift = -e - 1; // ≥ 14
  if (shift > 24 || exp === 0) return sign; // below half the smallest subnormal (float subnormals too)
  const sig = mant | 0x800000;
  let v = sig >>> shift;
  const rest = sig & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (v & 1) === 1)) v++;
  return sign | v; // rounding up to 0x400 gives the smallest normal, correctly
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Half bits of each value, rounding to nearest, ties to even (as a float32 first). */
export function toHalfBits(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]!;
    out[i] = floatBitsToHalfBits(u32[0]!);
  }
  return out;
}

/** The float32 values of half bits (exact). */
export function fromHalfBits(bits: ArrayLike<number>): Float32Array {
  const table = getHalfTable();
  const out = new Float32Array(bits.length);
  const o = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) o[i] = table[bits[i]! & 0xffff]!;
  return out;
}

/**
 * binary32 bits → bfloat16 bits, rounding to nearest, ties to even; overflow rounds to ±inf.
 * NaN is truncated and made quiet, keeping sign and payload (the default NaN gives 0x7fc0).
 */
export function floatBitsToBf16Bits(b: number): number {
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bfloat16 bits of each value, rounding to nearest, ties to even (as a float32 first). */
export function toBf16Bits(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]!;
    out[i] = floatBitsToBf16Bits(u32[0]!);
  }
  return out;
}

/** The float32 values of bfloat16 bits (exact: the bits are a float32's top half). */
export function fromBf16Bits(bits: ArrayLike<number>): Float32Array {
  const out = new Float32Array(bits.length);
  const o = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) o[i] = (bits[i]! & 0xffff) << 16;
  return out;
}
