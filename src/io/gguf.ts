// GGUF, llama.cpp's model file (version 3, as its published specification docs/gguf.md lays
// it out): "GGUF", the version, the tensor and metadata counts, typed key/value metadata, tensor
// infos (name, dims innermost first, ggml type, offset), padding to general.alignment, then the
// tensor data. Tensor types here: F32, F16, BF16, and the block quantizations Q8_0 (32 int8 and
// an f16 scale) and Q4_0 (32 4-bit values offset by 8 and an f16 scale). Pure: no file access.
import { floatBitsToBf16Bits, floatBitsToHalfBits, halfBitsToFloatBits } from '../tensor/half.js';
import type { QuantizedArrays } from '../tensor/quantize.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

export enum GGUFValueType { UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12 }

/** ggml tensor types attn reads and writes. */
export enum GGMLType { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 }
export const GGML_TYPE_NAMES: Record<number, string> = { 0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 8: 'Q8_0', 30: 'BF16' };

/** A metadata value with its GGUF type (arrays: of one element type). */
export type GGUFValue =
  | { type: GGUFValueType.STRING; value: string }
  | { type: GGUFValueType.UINT32 | GGUFValueType.INT32 | GGUFValueType.FLOAT32 | GGUFValueType.UINT64 | GGUFValueType.FLOAT64 | GGUFValueType.UINT8 | GGUFValueType.INT8 | GGUFValueType.UINT16 | GGUFValueType.INT16 | GGUFValueType.INT64; value: number }
  | { type: GGUFValueType.BOOL; value: boolean }
  | { type: GGUFValueType.ARRAY; itemType: GGUFValueType; value: (string | number | boolean)[] };

export interface GGUFTensorInfo {
  name: string;
  /** ggml order: dims[0] is the innermost (a (rows, cols) matrix has dims [cols, rows]). */
  dims: number[];
  type: GGMLType;
  /** Byte offset in the data section. */
  offset: number;
}

export interface GGUFHeader {
  version: number;
  metadata: Map<string, GGUFValue>;
  tensors: GGUFTensorInfo[];
  alignment: number;
  /** Absolute byte offset of the data section. */
  dataStart: number;
}

export class GGUFError extends Error {
  constructor(readonly fileName: string, problem: string) {
    super(`${fileName}: ${problem}`);
    this.name = 'GGUFError';
  }
}

const BLOCK = 32;
/** Bytes of n elements of a type (n a multiple of 32 for the block types). */
export function ggmlBytes(type: GGMLType, n: number): number {
  switch (type) {
    case GGMLType.F32: return 4 * n;
    case GGMLType.F16: case GGMLType.BF16: return 2 * n;
    case GGMLType.Q8_0: return (n / BLOCK) * 34;
    case GGMLType.Q4_0: return (n / BLOCK) * 18;
    case GGMLType.Q4_1: return (n / BLOCK) * 20;
  }
}

// ---------------------------------------------------------------- quantization

const f16 = new Float32Array(1);
const f16bits = new Uint32Array(f16.buffer);
const toHalf = (x: number): number => {
  f16[0] = x;
  return floatBitsToHalfBits(f16bits[0]!);
};
const fromHalf = (h: number): number => {
  f16bits[0] = halfBitsToFloatBits(h);
  return f16[0]!;
};

/** Encodes float values as a ggml type (the block types: rows of a multiple of 32). */
export function encodeGGML(type: GGMLType, x: ArrayLike<number>): Uint8Array {
  const n = x.length;
  const out = new Uint8Array(ggmlBytes(type, n));
  const dv = new DataView(out.buffer);
  switch (type) {
    case GGMLType.F32: for (let i = 0; i < n; i++) dv.setFloat32(4 * i, x[i]!, true); break;
    case GGMLType.F16: for (let i = 0; i < n; i++) dv.setUint16(2 * i, toHalf(x[i]!), true); break;
    case GGMLType.BF16: for (let i = 0; i < n; i++) { f16[0] = x[i]!; dv.setUint16(2 * i, floatBitsToBf16Bits(f16bits[0]!), true); } break;
    case GGMLType.Q8_0:
      for (let b = 0; b < n / BLOCK; b++) {
        let amax = 0;
        for (let j = 0; j < BLOCK; j++) amax = Math.max(amax, Math.abs(x[b * BLOCK + j]!));
        const d = amax / 127;
        const id = d ? 1 / d : 0;
        dv.setUint16(b * 34, toHalf(d), true);
        for (let j = 0; j < BLOCK; j++) dv.setInt8(b * 34 + 2 + j, Math.round(x[b * BLOCK + j]! * id));
      }
      break;
    case GGMLType.Q4_0:
      for (let b = 0; b < n / BLOCK; b++) {
        // The value of largest magnitude maps to -8: d = max / -8, q = x/d + 8 in [0, 15].
        let amax = 0;
        let max = 0;
        for (let j = 0; j < BLOCK; j++) {
          const v = x[b * BLOCK + j]!;
          if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; }
        }
        const d = max / -8;
        const id = d ? 1 / d : 0;
        dv.setUint16(b * 18, toHalf(d), true);
        for (let j = 0; j < BLOCK / 2; j++) {
          const q0 = Math.min(15, Math.trunc(x[b * BLOCK + j]! * id + 8.5));
          const q1 = Math.min(15, Math.trunc(x[b * BLOCK + j + 16]! * id + 8.5));
          out[b * 18 + 2 + j] = q0 | (q1 << 4);
        }
      }
      break;
    case GGMLType.Q4_1:
      // With a minimum: x ≈ m + d·q, q in [0, 15], d = (max - min) / 15.
      for (let b = 0; b < n / BLOCK; b++) {
        let min = Infinity;
        let max = -Infinity;
        for (let j = 0; j < BLOCK; j++) {
          const v = x[b * BLOCK + j]!;
          if (v < min) min = v;
          if (v > max) max = v;
        }
        const d = (max - min) / 15;
        const id = d ? 1 / d : 0;
        dv.setUint16(b * 20, toHalf(d), true);
        dv.setUint16(b * 20 + 2, toHalf(min), true);
        for (let j = 0; j < BLOCK / 2; j++) {
          const q0 = Math.min(15, Math.trunc((x[b * BLOCK + j]! - min) * id + 0.5));
          const q1 = Math.min(15, Math.trunc((x[b * BLOCK + j + 16]! - min) * id + 0.5));
          out[b * 20 + 4 + j] = q0 | (q1 << 4);
        }
      }
      break;
  }
  return out;
}

/** Decodes n elements of a ggml type to float32. */
export function decodeGGML(type: GGMLType, bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (type) {
    case GGMLType.F32: for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true); break;
    case GGMLType.F16: for (let i = 0; i < n; i++) out[i] = fromHalf(dv.getUint16(2 * i, true)); break;
    case GGMLType.BF16: { const u = new Uint32Array(out.buffer); for (let i = 0; i < n; i++) u[i] = dv.getUint16(2 * i, true) << 16; break; }
    case GGMLType.Q8_0:
      for (let b = 0; b < n / BLOCK; b++) {
        const d = fromHalf(dv.getUint16(b * 34, true));
        for (let j = 0; j < BLOCK; j++) out[b * BLOCK + j] = d * dv.getInt8(b * 34 + 2 + j);
      }
      break;
    case GGMLType.Q4_0:
      for (let b = 0; b < n / BLOCK; b++) {
        const d = fromHalf(dv.getUint16(b * 18, true));
        for (let j = 0; j < BLOCK / 2; j++) {
          const q = bytes[b * 18 + 2 + j]!;
          out[b * BLOCK + j] = ((q & 0x0f) - 8) * d;
          out[b * BLOCK + j + 16] = ((q >> 4) - 8) * d;
        }
      }
      break;
    case GGMLType.Q4_1:
      for (let b = 0; b < n / BLOCK; b++) {
        const d = fromHalf(dv.getUint16(b * 20, true));
        const m = fromHalf(dv.getUint16(b * 20 + 2, true));
        for (let j = 0; j < BLOCK / 2; j++) {
          const q = bytes[b * 20 + 4 + j]!;
          out[b * BLOCK + j] = (q & 0x0f) * d + m;
          out[b * BLOCK + j + 16] = (q >> 4) * d + m;
        }
      }
      break;
    default:
      throw new Error(`ggml type ${String(type)} is not supported`);
  }
  return out;
}

// ---------------------------------------------------------------- header

class Writer {
  private buf = new Uint8Array(1 << 16);
  private dv = new DataView(this.buf.buffer);
  n = 0;
  private room(k: number): void {
    if (this.n + k <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.n + k) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.n));
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }
  u8(v: number): void { this.room(1); this.dv.setUint8(this.n, v); this.n += 1; }
  i8(v: number): void { this.room(1); this.dv.setInt8(this.n, v); this.n += 1; }
  u16(v: number): void { this.room(2); this.dv.setUint16(this.n, v, true); this.n += 2; }
  i16(v: number): void { this.room(2); this.dv.setInt16(this.n, v, true); this.n += 2; }
  u32(v: number): void { this.room(4); this.dv.setUint32(this.n, v, true); this.n += 4; }
  i32(v: number): void { this.room(4); this.dv.setInt32(this.n, v, true); this.n += 4; }
  f32(v: number): void { this.room(4); this.dv.setFloat32(this.n, v, true); this.n += 4; }
  f64(v: number): void { this.room(8); this.dv.setFloat64(this.n, v, true); this.n += 8; }
  u64(v: number): void { this.room(8); this.dv.setBigUint64(this.n, BigInt(v), true); this.n += 8; }
  i64(v: number): void { this.room(8); this.dv.setBigInt64(this.n, BigInt(v), true); this.n += 8; }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.room(b.length);
    this.buf.set(b, this.n);
    this.n += b.length;
  }
  bytes(): Uint8Array { return this.buf.subarray(0, this.n); }
}

function writeScalar(w: Writer, t: GGUFValueType, v: string | number | boolean): void {
  switch (t) {
    case GGUFValueType.UINT8: w.u8(v as number); break;
    case GGUFValueType.INT8: w.i8(v as number); break;
    case GGUFValueType.UINT16: w.u16(v as number); break;
    case GGUFValueType.INT16: w.i16(v as number); break;
    case GGUFValueType.UINT32: w.u32(v as number); break;
    case GGUFValueType.INT32: w.i32(v as number); break;
    case GGUFValueType.FLOAT32: w.f32(v as number); break;
    case GGUFValueType.BOOL: w.u8(v ? 1 : 0); break;
    case GGUFValueType.STRING: w.str(v as string); break;
    case GGUFValueType.UINT64: w.u64(v as number); break;
    case GGUFValueType.INT64: w.i64(v as number); break;
    case GGUFValueType.FLOAT64: w.f64(v as number); break;
    default: throw new Error(`gguf: cannot write a scalar of type ${t}`);
  }
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * A Q4_0 tensor of N rows of K as attn int4 arrays, taken over rather than requantized: both pack
 * a block of 32 the same way (byte j holds values j and j + 16, low nibble first) and mean
 * (q - 8) · d, so only the f16 scales widen to float32. `rowOf(n)` is the file row that becomes
 * row n (a permutation; default the same row).
 */
export function q4_0ToInt4(bytes: Uint8Array, N: number, K: number, rowOf: (n: number) => number = (n) => n): QuantizedArrays {
  if (K % BLOCK !== 0 || bytes.length !== (N * K / BLOCK) * 18) throw new RangeError(`q4_0ToInt4: ${bytes.length} bytes are not the Q4_0 blocks of (${N}, ${K})`);
  const groups = K / BLOCK;
  const data = new Uint8Array((N * K) / 2);
  const scales = new Float32Array(N * groups);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let n = 0; n < N; n++) {
    const src = rowOf(n);
    for (let g = 0; g < groups; g++) {
      const b = (src * groups + g) * 18;
      scales[n * groups + g] = fromHalf(dv.getUint16(b, true));
      data.set(bytes.subarray(b + 2, b + 18), (n * groups + g) * 16);
    }
  }
  return { format: 'int4', N, K, data, scales, zeros: null };
}

/**
 * The header bytes (through the padding before the data) for metadata and tensors of the given
 * types and dims; returns them with each tensor's data offset.
 */
export function serializeGGUFHeader(metadata: Map<string, GGUFValue>, tensors: { name: string; dims: number[]; type: GGMLType }[], alignment = GGUF_DEFAULT_ALIGNMENT): { header: Uint8Array; offsets: number[]; dataBytes: number } {
  const w = new Writer();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(metadata.size);
  for (const [k, v] of metadata) {
    w.str(k);
    w.u32(v.type);
    if (v.type === GGUFValueType.ARRAY) {
      w.u32(v.itemType);
      w.u64(v.value.length);
      for (const x of v.value) writeScalar(w, v.itemType, x);
    } else {
      writeScalar(w, v.type, v.value);
    }
  }
  const offsets: number[] = [];
  let off = 0;
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(off);
    offsets.push(off);
    off = alignUp(off + ggmlBytes(t.type, t.dims.reduce((a, b) => a * b, 1)), alignment);
  }
  const pad = alignUp(w.n, alignment) - w.n;
  for (let i = 0; i < pad; i++) w.u8(0);
  return { header: w.bytes().slice(), offsets, dataBytes: off };
}

class Reader {
  private dv: DataView;
  pos = 0;
  constructor(private readonly b: Uint8Array, private readonly file: string) {
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  private need(k: number): void {
    if (this.pos + k > this.b.length) throw new GGUFError(this.file, `the header ends early (needed ${k} bytes at offset ${this.pos}, file header has ${this.b.length}): truncated?`);
  }
  u8(): number { this.need(1); return this.dv.getUint8(this.pos++); }
  i8(): number { this.need(1); return this.dv.getInt8(this.pos++); }
  u16(): number { this.need(2); const v = this.dv.getUint16(this.pos, true); this.pos += 2; return v; }
  i16(): number { this.need(2); const v = this.dv.getInt16(this.pos, true); this.pos += 2; return v; }
  u32(): number { this.need(4); const v = this.dv.getUint32(this.pos, true); this.pos += 4; return v; }
  i32(): number { this.need(4); const v = this.dv.getInt32(this.pos, true); this.pos += 4; return v; }
  f32(): number { this.need(4); const v = this.dv.getFloat32(this.pos, true); this.pos += 4; return v; }
  f64(): number { this.need(8); const v = this.dv.getFloat64(this.pos, true); this.pos += 8; return v; }
  u64(): number {
    this.need(8);
    const v = this.dv.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GGUFError(this.file, `a 64-bit count ${v} at offset ${this.pos - 8} is beyond 2^53`);
    return Number(v);
  }
  i64(): number { this.need(8); const v = this.dv.getBigInt64(this.pos, true); this.pos += 8; return Number(v); }
  str(): string {
    const n = this.u64();
    this.need(n);
    const s = new TextDecoder('utf-8', { fatal: false }).decode(this.b.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
}

function readScalar(r: Reader, t: GGUFValueType, file: string): string | number | boolean {
  switch (t) {
    case GGUFValueType.UINT8: return r.u8();
    case GGUFValueType.INT8: return r.i8();
    case GGUFValueType.UINT16: return r.u16();
    case GGUFValueType.INT16: return r.i16();
    case GGUFValueType.UINT32: return r.u32();
    case GGUFValueType.INT32: return r.i32();
    case GGUFValueType.FLOAT32: return r.f32();
    case GGUFValueType.BOOL: return r.u8() !== 0;
    case GGUFValueType.STRING: return r.str();
    case GGUFValueType.UINT64: return r.u64();
    case GGUFValueType.INT64: return r.i64();
    case GGUFValueType.FLOAT64: return r.f64();
    default: throw new GGUFError(file, `unknown metadata value type ${t} at offset ${r.pos - 4}`);
  }
}

/**
 * Parses the header from the first bytes of a file (`prefix`; a header longer than it throws a
 * truncation error, so read more and retry). `fileSize` checks every tensor's data lies inside.
 */
export function parseGGUFHeader(prefix: Uint8Array, fileSize: number, file = 'gguf'): GGUFHeader {
  const r = new Reader(prefix, file);
  if (prefix.length < 8) throw new GGUFError(file, `${prefix.length} bytes: too short for a GGUF file`);
  const magic = r.u32();
  if (magic !== GGUF_MAGIC) throw new GGUFError(file, `not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')}, expected "GGUF")`);
  const version = r.u32();
  if (version !== 2 && version !== 3) throw new GGUFError(file, `GGUF version ${version} is not supported (2, 3)`);
  const nTensors = r.u64();
  const nKv = r.u64();
  const metadata = new Map<string, GGUFValue>();
  for (let i = 0; i < nKv; i++) {
    const key = r.str();
    const type = r.u32() as GGUFValueType;
    if (type === GGUFValueType.ARRAY) {
      const itemType = r.u32() as GGUFValueType;
      const n = r.u64();
      const value: (string | number | boolean)[] = [];
      for (let j = 0; j < n; j++) value.push(readScalar(r, itemType, file));
      metadata.set(key, { type, itemType, value });
    } else {
      metadata.set(key, { type, value: readScalar(r, type, file) } as GGUFValue);
    }
  }
  const align = metadata.get('general.alignment');
  const alignment = align && typeof align.value === 'number' ? align.value : GGUF_DEFAULT_ALIGNMENT;
  const tensors: GGUFTensorInfo[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = r.str();
    const nd = r.u32();
    const dims: number[] = [];
    for (let j = 0; j < nd; j++) dims.push(r.u64());
    const type = r.u32();
    if (GGML_TYPE_NAMES[type] === undefined) throw new GGUFError(file, `tensor '${name}' has ggml type ${type}, not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1)`);
    const offset = r.u64();
    tensors.push({ name, dims, type: type as GGMLType, offset });
  }
  const dataStart = alignUp(r.pos, alignment);
  for (const t of tensors) {
    const n = t.dims.reduce((a, b) => a * b, 1);
    if ((t.type === GGMLType.Q8_0 || t.type === GGMLType.Q4_0 || t.type === GGMLType.Q4_1) && t.dims[0]! % BLOCK !== 0) throw new GGUFError(file, `tensor '${t.name}': rows of ${t.dims[0]} are not whole blocks of ${BLOCK}`);
    const end = dataStart + t.offset + ggmlBytes(t.type, n);
    if (end > fileSize) throw new GGUFError(file, `tensor '${t.name}' ends at byte ${end}, beyond the file's ${fileSize} bytes (truncated?)`);
  }
  return { version, metadata, tensors, alignment, dataStart };
}
