// A minimal Protocol Buffers encoder (proto2/proto3 wire format), enough to write ONNX files:
// each field is a tag (field number << 3 | wire type) as a varint, then
//   wire type 0 (varint):           the value, 7 bits a byte, low bits first, high bit = more;
//                                   negative int32/int64 as their 64-bit two's complement (10 bytes);
//   wire type 2 (length-delimited): a varint byte length, then the bytes (strings, bytes, nested
//                                   messages, packed repeated scalars);
//   wire type 5 (fixed32):          4 bytes little-endian (float).
// Messages are built bottom-up: a nested message is encoded first, then written as bytes. Pure:
// no file access. Large payloads (tensor raw_data) are kept as references, never copied until
// toBytes() (or written piecewise by chunks()).

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LEN = 2;
export const WIRE_FIXED32 = 5;

/** Bytes of a varint holding a non-negative integer or bigint below 2^64. */
function varintBytes(v: number | bigint): number[] {
  let x = typeof v === 'bigint' ? v : BigInt(v);
  if (x < 0n) x = BigInt.asUintN(64, x); // int64 two's complement, as protobuf writes negative ints
  if (x >= 1n << 64n) throw new RangeError(`protobuf: varint ${String(v)} does not fit 64 bits`);
  const out: number[] = [];
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return out;
}

/** Fast path for small non-negative safe integers (tags, lengths). */
function pushVarint(out: number[], v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) {
    for (const b of varintBytes(v)) out.push(b);
    return;
  }
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

/** An encoded message under construction: a list of byte pieces. */
export class ProtoWriter {
  private readonly parts: Uint8Array[] = [];
  private pending: number[] = [];
  private size = 0;

  private flush(): void {
    if (this.pending.length) {
      this.parts.push(Uint8Array.from(this.pending));
      this.pending = [];
    }
  }

  private raw(bytes: number[]): void {
    for (const b of bytes) this.pending.push(b);
    this.size += bytes.length;
  }

  private big(bytes: Uint8Array): void {
    if (bytes.length < 64) {
      for (const b of bytes) this.pending.push(b);
    } else {
      this.flush();
      this.parts.push(bytes);
    }
    this.size += bytes.length;
  }

  private tag(field: number, wire: number): void {
    if (!Number.isInteger(field) || field < 1 || field > 0x1fffffff) throw new RangeError(`protobuf: bad field number ${field}`);
    const b: number[] = [];
    pushVarint(b, field * 8 + wire);
    this.raw(b);
  }

  /** Encoded length so far. */
  get length(): number {
    return this.size;
  }

  /** int32, int64, uint64, bool, enum (varint). */
  varint(field: number, v: number | bigint | boolean): this {
    this.tag(field, WIRE_VARINT);
    const b: number[] = [];
    if (typeof v === 'boolean') b.push(v ? 1 : 0);
    else if (typeof v === 'number' && !Number.isInteger(v)) throw new RangeError(`protobuf: varint field ${field} got ${v}`);
    else pushVarint(b, v as number);
    this.raw(b);
    return this;
  }

  /** float (fixed32, little-endian). */
  float(field: number, v: number): this {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.raw([...b]);
    return this;
  }

  /** bytes (length-delimited). The array is referenced, not copied. */
  bytes(field: number, data: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    const b: number[] = [];
    pushVarint(b, data.length);
    this.raw(b);
    this.big(data);
    return this;
  }

  /** string (UTF-8, length-delimited). */
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  /** A nested message. */
  message(field: number, m: ProtoWriter): this {
    this.tag(field, WIRE_LEN);
    const b: number[] = [];
    pushVarint(b, m.length);
    this.raw(b);
    this.flush();
    for (const p of m.chunks()) this.parts.push(p);
    this.size += m.length;
    return this;
  }

  /** A packed repeated varint field (int64s, int32s). */
  packedVarints(field: number, vs: readonly (number | bigint)[]): this {
    if (!vs.length) return this;
    const b: number[] = [];
    for (const v of vs) {
      if (typeof v === 'number') pushVarint(b, v);
      else for (const x of varintBytes(v)) b.push(x);
    }
    return this.bytes(field, Uint8Array.from(b));
  }

  /** A packed repeated float field. */
  packedFloats(field: number, vs: readonly number[] | Float32Array): this {
    if (!vs.length) return this;
    const f = Float32Array.from(vs);
    return this.bytes(field, new Uint8Array(f.buffer, f.byteOffset, f.byteLength));
  }

  /** The encoded pieces, in order (write them one after the other). */
  chunks(): Uint8Array[] {
    this.flush();
    return this.parts;
  }

  /** The whole encoding as one array. */
  toBytes(): Uint8Array {
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const p of this.chunks()) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

/** Decodes a varint at `offset` (for tests and small readers): [value, next offset]. */
export function readVarint(buf: Uint8Array, offset: number): [bigint, number] {
  let v = 0n;
  let shift = 0n;
  for (let i = offset; i < buf.length; i++) {
    const b = buf[i]!;
    v |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return [v, i + 1];
    shift += 7n;
    if (shift > 63n) break;
  }
  throw new RangeError(`protobuf: truncated or overlong varint at byte ${offset}`);
}
