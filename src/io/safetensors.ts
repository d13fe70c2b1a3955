// The safetensors format (https://github.com/huggingface/safetensors), as pure functions over
// bytes so that they run anywhere (Node, browsers, workers). Layout:
//   [u64 little-endian N] [N bytes of UTF-8 JSON header] [data buffer]
// The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets
// relative to the buffer start) and may hold "__metadata__": {string: string}.
//
// Reading follows the reference implementation's rules: the tensors must tile the buffer
// exactly (no overlaps, no holes, no trailing bytes) and each byte range must be exactly
// numel(shape) × dtype size. Anything else is refused with a SafetensorsError naming the file.
//
// Writing produces what the reference writer produces for the same input: compact JSON with
// "__metadata__" first, tensors laid out by dtype (widest first, so every tensor starts at a
// multiple of its element size) then by name, the header padded with spaces to a multiple of 8.

import { floatBitsToBf16Bits, floatBitsToHalfBits, getHalfTable, halfBitsToFloatBits } from '../tensor/half.js';

/** Every dtype name the format defines (the ones attn can read are listed in READABLE). */
const KNOWN_DTYPES = [
  'BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2',
  'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'C64', 'F64', 'I64', 'U64',
] as const;

export type SafetensorsDType = 'BOOL' | 'U8' | 'I8' | 'I16' | 'U16' | 'F16' | 'BF16' | 'I32' | 'U32' | 'F32' | 'F64' | 'I64' | 'U64';

/** Bytes per element of the dtypes attn reads and writes. */
const DTYPE_SIZE: Record<SafetensorsDType, number> = {
  BOOL: 1, U8: 1, I8: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
};

/** Order of the reference implementation's dtype enum; the writer sorts by it, descending. */
const DTYPE_RANK: Record<SafetensorsDType, number> = {
  BOOL: 0, U8: 1, I8: 2, I16: 5, U16: 6, F16: 7, BF16: 8, I32: 9, U32: 10, F32: 11, F64: 12, I64: 13, U64: 14,
};

/** The reference implementation refuses headers above 100 MB; so do we (it also bounds the allocation). */
export const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsError extends Error {
  readonly fileName: string;
  constructor(fileName: string, problem: string) {
    super(`${fileName}: ${problem}`);
    this.name = 'SafetensorsError';
    this.fileName = fileName;
  }
}

/** A tensor as read: float dtypes come back as Float32Array (F32, F16, BF16) or Float64Array (F64), integer and bool dtypes as Int32Array. */
export interface LoadedTensor {
  dtype: SafetensorsDType;
  shape: number[];
  data: Float32Array | Float64Array | Int32Array;
}

export interface SafeTensors {
  /** In file (offset) order. */
  tensors: Map<string, LoadedTensor>;
  /** The "__metadata__" object; {} when the file has none. */
  metadata: Record<string, string>;
}

/** A tensor to write. `data` holds numel(shape) numbers in row-major order. */
export interface TensorEntry {
  dtype: SafetensorsDType;
  shape: readonly number[];
  data: ArrayLike<number>;
}

/** Where one tensor lies, from the header. begin/end are relative to the data buffer. */
export interface TensorInfo {
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** In offset order. */
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** N, the header's byte length. */
  headerLength: number;
  /** Absolute offset of the data buffer in the file (8 + N). */
  dataStart: number;
  /** Byte length of the data buffer. */
  dataLength: number;
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const fmtShape = (s: readonly number[]): string => `[${s.join(', ')}]`;

/** Reads the u64 header length; exact because it is compared against sizes far below 2^53. */
function readU64(bytes: Uint8Array, at: number): number {
  const dv = new DataView(bytes.buffer, bytes.byteOffset + at, 8);
  return dv.getUint32(0, true) + dv.getUint32(4, true) * 2 ** 32;
}

/**
 * Parses and validates the header. `prefix` holds at least the first 8 + N bytes of the file
 * (the whole file is fine); `fileSize` is the size of the whole file. Exposed so that a reader
 * can validate a file before reading its tensors one by one.
 */
export function parseSafetensorsHeader(prefix: Uint8Array, fileSize: number, fileName = 'safetensors'): SafetensorsHeader {
  const fail = (problem: string): never => {
    throw new SafetensorsError(fileName, problem);
  };
  if (fileSize < 8) fail(`file is ${fileSize} bytes, shorter than the 8-byte header length prefix (truncated or not a safetensors file)`);
  if (prefix.length < 8) fail(`need the first 8 bytes to read the header length, got ${prefix.length}`);
  const n = readU64(prefix, 0);
  if (n > fileSize - 8) fail(`header length ${n} is larger than the ${fileSize - 8} bytes that follow the prefix (truncated or not a safetensors file)`);
  if (n > MAX_HEADER_BYTES) fail(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (prefix.length < 8 + n) fail(`need the first ${8 + n} bytes to read the header, got ${prefix.length}`);

  let text = '';
  try {
    // ignoreBOM keeps a leading BOM so that JSON.parse refuses it, as the reference does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(prefix.subarray(8, 8 + n));
  } catch {
    fail('header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail(`header must be a JSON object, got ${json === null ? 'null' : Array.isArray(json) ? 'an array' : typeof json}`);

  const dataLength = fileSize - 8 - n;
  const metadata: Record<string, string> = {};
  const infos: [string, TensorInfo][] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail('"__metadata__" must be an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`"__metadata__" value for "${k}" must be a string, got ${JSON.stringify(v)}`);
        // defineProperty so that a key named "__proto__" stays a plain key.
        Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      continue;
    }
    infos.push([name, tensorInfo(name, raw, dataLength, fail)]);
  }

  // The tensors must tile [0, dataLength): sort by position and walk.
  infos.sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev = '';
  for (const [name, info] of infos) {
    if (info.begin < pos) fail(`tensor '${name}' (bytes ${info.begin}..${info.end}) overlaps tensor '${prev}' (ends at ${pos})`);
    if (info.begin > pos) fail(`bytes ${pos}..${info.begin} of the data buffer belong to no tensor (hole before '${name}')`);
    pos = info.end;
    prev = name;
  }
  if (pos < dataLength) fail(`${dataLength - pos} unused bytes after the last tensor (the data buffer is ${dataLength} bytes, tensors end at ${pos})`);

  return { tensors: new Map(infos), metadata, headerLength: n, dataStart: 8 + n, dataLength };
}

function tensorInfo(name: string, raw: unknown, dataLength: number, fail: (p: string) => never): TensorInfo {
  const what = `tensor '${name}'`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(`${what}: entry must be an object with dtype, shape and data_offsets`);
  const r = raw as Record<string, unknown>;
  const dtype = r['dtype'];
  if (typeof dtype !== 'string') fail(`${what}: dtype is missing or not a string`);
  if (!Object.hasOwn(DTYPE_SIZE, dtype as string)) {
    if ((KNOWN_DTYPES as readonly string[]).includes(dtype as string)) fail(`${what}: dtype ${dtype as string} is not supported by attn (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
    fail(`${what}: unknown dtype ${JSON.stringify(dtype)}`);
  }
  const shape = r['shape'];
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`${what}: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  const offs = r['data_offsets'];
  if (offs === undefined) fail(`${what}: data_offsets is missing`);
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) fail(`${what}: data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(offs)}`);
  const [begin, end] = offs as [number, number];
  if (end < begin) fail(`${what}: data_offsets [${begin}, ${end}] are reversed (end before begin)`);
  const dt = dtype as SafetensorsDType;
  let count = 1;
  for (const d of shape as number[]) count *= d;
  const need = count * DTYPE_SIZE[dt];
  if (!Number.isSafeInteger(need)) fail(`${what}: shape ${fmtShape(shape as number[])} is too large`);
  if (end - begin !== need) fail(`${what}: ${dt} with shape ${fmtShape(shape as number[])} needs ${need} bytes, but data_offsets [${begin}, ${end}] span ${end - begin}`);
  if (end > dataLength) fail(`${what}: data_offsets [${begin}, ${end}] run past the end of the ${dataLength}-byte data buffer (truncated file?)`);
  return { dtype: dt, shape: [...(shape as number[])], begin, end };
}

// ---------------------------------------------------------------- element conversions

// The binary16 and bfloat16 conversions live with their dtypes (tensor/half.ts); re-exported here.
export { floatBitsToBf16Bits, floatBitsToHalfBits, halfBitsToFloatBits };


/** Reverses each `width`-byte group in place (only used on big-endian hosts). */
function swapBytes(u8: Uint8Array, width: number): void {
  if (width === 1) return;
  for (let i = 0; i < u8.length; i += width) {
    for (let a = i, z = i + width - 1; a < z; a++, z--) {
      const t = u8[a]!;
      u8[a] = u8[z]!;
      u8[z] = t;
    }
  }
}

/**
 * Decodes one tensor's bytes (exactly info.end - info.begin of them). When `owned` is true the
 * bytes are a private, offset-0 buffer that the result may reuse instead of copying.
 */
export function decodeTensor(name: string, info: TensorInfo, bytes: Uint8Array, fileName = 'safetensors', owned = false): LoadedTensor {
  const { dtype, shape } = info;
  const width = DTYPE_SIZE[dtype];
  if (bytes.length !== info.end - info.begin) throw new SafetensorsError(fileName, `tensor '${name}': expected ${info.end - info.begin} bytes, got ${bytes.length}`);
  const n = bytes.length / width;
  // An aligned, private, host-order copy of the bytes.
  // new Uint8Array(bytes) copies; a Node Buffer's slice() would be a view of its whole pool.
  const u8 = owned && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes);
  if (!LITTLE_ENDIAN_HOST) swapBytes(u8, width);
  const buf = u8.buffer as ArrayBuffer;
  let data: Float32Array | Float64Array | Int32Array;
  switch (dtype) {
    case 'F32': data = new Float32Array(buf, 0, n); break;
    case 'F64': data = new Float64Array(buf, 0, n); break;
    case 'I32': data = new Int32Array(buf, 0, n); break;
    case 'BF16': {
      const src = new Uint16Array(buf, 0, n);
      data = new Float32Array(n);
      const out = new Uint32Array(data.buffer);
      for (let i = 0; i < n; i++) out[i] = src[i]! << 16; // bf16 is the top half of a float32
      break;
    }
    case 'F16': {
      const src = new Uint16Array(buf, 0, n);
      const table = getHalfTable();
      data = new Float32Array(n);
      const out = new Uint32Array(data.buffer);
      for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
      break;
    }
    case 'I64':
    case 'U64': {
      const w = new Int32Array(buf, 0, n * 2); // (low, high) word pairs
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const lo = w[2 * i]!;
        const hi = w[2 * i + 1]!;
        // Fits in int32 when the high word is the sign extension of the low one (U64: both non-negative).
        if (dtype === 'I64' ? hi !== lo >> 31 : hi !== 0 || lo < 0) {
          const big = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
          const v = dtype === 'I64' ? BigInt.asIntN(64, big) : big;
          throw new SafetensorsError(fileName, `tensor '${name}': ${dtype} element ${i} = ${v} does not fit in int32`);
        }
        out[i] = lo;
      }
      data = out;
      break;
    }
    case 'U32': {
      const src = new Uint32Array(buf, 0, n);
      for (let i = 0; i < n; i++) if (src[i]! > 0x7fffffff) throw new SafetensorsError(fileName, `tensor '${name}': U32 element ${i} = ${src[i]} does not fit in int32`);
      data = new Int32Array(buf, 0, n);
      break;
    }
    case 'I16': data = Int32Array.from(new Int16Array(buf, 0, n)); break;
    case 'U16': data = Int32Array.from(new Uint16Array(buf, 0, n)); break;
    case 'I8': data = Int32Array.from(new Int8Array(buf, 0, n)); break;
    case 'U8': data = Int32Array.from(u8); break;
    case 'BOOL': data = Int32Array.from(u8, (v) => (v !== 0 ? 1 : 0)); break;
  }
  return { dtype, shape: [...shape], data };
}

/** Parses a whole safetensors file held in memory. The returned arrays are copies. */
export function parseSafetensors(bytes: Uint8Array, fileName = 'safetensors'): SafeTensors {
  const header = parseSafetensorsHeader(bytes, bytes.length, fileName);
  const tensors = new Map<string, LoadedTensor>();
  for (const [name, info] of header.tensors) {
    const at = header.dataStart;
    tensors.set(name, decodeTensor(name, info, bytes.subarray(at + info.begin, at + info.end), fileName));
  }
  return { tensors, metadata: header.metadata };
}

// ---------------------------------------------------------------- writing

/** Integer range each integer dtype accepts on write. */
const INT_RANGE: Partial<Record<SafetensorsDType, [number, number]>> = {
  BOOL: [0, 1], U8: [0, 255], I8: [-128, 127], I16: [-32768, 32767], U16: [0, 65535],
  I32: [-(2 ** 31), 2 ** 31 - 1], U32: [0, 2 ** 32 - 1],
  I64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER], U64: [0, Number.MAX_SAFE_INTEGER],
};

/** Compares strings by their UTF-8 bytes, as the reference (Rust) sorts names. */
function compareUtf8(a: string, b: string): number {
  if (a === b) return 0;
  const enc = new TextEncoder();
  const x = enc.encode(a);
  const y = enc.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

function checkEntry(name: string, e: TensorEntry): number {
  const what = `serializeSafetensors: tensor '${name}'`;
  if (name === '__metadata__') throw new Error(`serializeSafetensors: '__metadata__' is reserved and cannot name a tensor`);
  if (!e || typeof e !== 'object') throw new Error(`${what}: expected {dtype, shape, data}`);
  if (!Object.hasOwn(DTYPE_SIZE, e.dtype)) throw new Error(`${what}: cannot write dtype ${JSON.stringify(e.dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new Error(`${what}: shape must be a list of non-negative integers, got ${JSON.stringify(e.shape)}`);
  let n = 1;
  for (const d of e.shape) n *= d;
  if (e.data.length !== n) throw new Error(`${what}: ${e.data.length} values do not fill shape ${fmtShape(e.shape)}`);
  const range = INT_RANGE[e.dtype];
  if (range && !(e.data instanceof Int32Array && range[0] <= -(2 ** 31) && range[1] >= 2 ** 31 - 1)) {
    for (let i = 0; i < n; i++) {
      const v = e.data[i]!;
      if (!Number.isInteger(v) || v < range[0] || v > range[1]) throw new Error(`${what}: element ${i} = ${v} is not a valid ${e.dtype} value (integers in [${range[0]}, ${range[1]}])`);
    }
  }
  return n * DTYPE_SIZE[e.dtype];
}

/** Writes `n` values of entry `e` into `dst` (its byte range, aligned to the element size). */
function encodeInto(e: TensorEntry, dst: Uint8Array): void {
  const n = e.data.length;
  const buf = dst.buffer as ArrayBuffer;
  const at = dst.byteOffset;
  switch (e.dtype) {
    case 'F32': new Float32Array(buf, at, n).set(e.data); break;
    case 'F64': new Float64Array(buf, at, n).set(e.data); break;
    case 'I32': new Int32Array(buf, at, n).set(e.data); break;
    case 'U32': new Uint32Array(buf, at, n).set(e.data); break;
    case 'I16': new Int16Array(buf, at, n).set(e.data); break;
    case 'U16': new Uint16Array(buf, at, n).set(e.data); break;
    case 'I8': new Int8Array(buf, at, n).set(e.data); break;
    case 'U8':
    case 'BOOL': dst.set(e.data); break;
    case 'I64':
    case 'U64': {
      const w = new Uint32Array(buf, at, 2 * n);
      for (let i = 0; i < n; i++) {
        const v = e.data[i]!;
        const hi = Math.floor(v / 2 ** 32); // exact for safe integers; negative values borrow
        w[2 * i] = v - hi * 2 ** 32;
        w[2 * i + 1] = hi >>> 0;
      }
      break;
    }
    case 'F16':
    case 'BF16': {
      const f = Float32Array.from(e.data); // round to float32 first (documented)
      const bits = new Uint32Array(f.buffer);
      const out = new Uint16Array(buf, at, n);
      const conv = e.dtype === 'F16' ? floatBitsToHalfBits : floatBitsToBf16Bits;
      for (let i = 0; i < n; i++) out[i] = conv(bits[i]!);
      break;
    }
  }
  if (!LITTLE_ENDIAN_HOST) swapBytes(dst, DTYPE_SIZE[e.dtype]);
}

/**
 * Serializes tensors (and optional string metadata) into safetensors bytes, byte for byte what
 * the reference implementation writes for the same tensors: tensors ordered by dtype (widest
 * first: U64, I64, F64, F32, U32, I32, BF16, F16, U16, I16, I8, U8, BOOL) then by name, so the
 * input order does not matter. Metadata keys keep their given order; `__metadata__` is written
 * only when metadata is given. F16/BF16 values are rounded to float32 first, then to the
 * half type with round-to-nearest-even; F32 from float64 rounds to nearest; integer dtypes
 * refuse non-integers and out-of-range values.
 */
export function serializeSafetensors(entries: Map<string, TensorEntry> | Record<string, TensorEntry>, metadata?: Record<string, string>): Uint8Array {
  const list: [string, TensorEntry, number][] = [];
  for (const [name, e] of entries instanceof Map ? entries : Object.entries(entries)) list.push([name, e, checkEntry(name, e)]);
  list.sort(([an, a], [bn, b]) => DTYPE_RANK[b.dtype] - DTYPE_RANK[a.dtype] || compareUtf8(an, bn));

  const parts: string[] = [];
  if (metadata !== undefined) {
    const kv: string[] = [];
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`serializeSafetensors: metadata value for '${k}' must be a string, got ${typeof v}`);
      kv.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  let offset = 0;
  for (const [name, e, nbytes] of list) {
    parts.push(`${JSON.stringify(name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${offset},${offset + nbytes}]}`);
    offset += nbytes;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const n = Math.ceil(json.length / 8) * 8; // spaces pad the header so the buffer starts 8-aligned
  const out = new Uint8Array(8 + n + offset);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, n % 2 ** 32, true);
  dv.setUint32(4, Math.floor(n / 2 ** 32), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + n);
  let at = 8 + n;
  for (const [, e, nbytes] of list) {
    encodeInto(e, out.subarray(at, at + nbytes));
    at += nbytes;
  }
  return out;
}
