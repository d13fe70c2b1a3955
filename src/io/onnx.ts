// ONNX model files (onnx.proto, IR version 8, opset 17): ModelProto, GraphProto, NodeProto,
// AttributeProto, TensorProto (initializers as little-endian raw_data), ValueInfoProto with
// named dynamic dimensions. A graph is built node by node with OnnxGraph, then encoded with the
// protobuf writer (src/io/protobuf.ts). Models over protobuf's 2 GB limit go out with ONNX's
// external data: the large initializers' bytes in a side file (TensorProto.data_location
// EXTERNAL, external_data location/offset/length), as onnx.external_data_helper writes it.
// Pure apart from saveONNX.
import { closeSync, openSync, renameSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import { ProtoWriter } from './protobuf.js';

export const ONNX_IR_VERSION = 8; // ONNX 1.10+: opset 17 needs IR ≥ 8
export const ONNX_OPSET = 17;
/** protobuf's message size limit: bigger models need ONNX external data. */
export const ONNX_MAX_BYTES = 2 ** 31 - 1;

/** TensorProto.DataType values. */
export enum OnnxType { FLOAT = 1, UINT8 = 2, INT8 = 3, INT32 = 6, INT64 = 7, BOOL = 9, FLOAT16 = 10 }
const TYPE_BYTES: Record<OnnxType, number> = { 1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 9: 1, 10: 2 };

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new Error('onnx: a big-endian host is not supported (raw_data is little-endian)');

/** A float attribute (plain numbers are ints). */
export interface FloatAttr { float: number }
export const float = (x: number): FloatAttr => ({ float: x });
/** A tensor attribute (Constant's value). */
export interface TensorAttr { tensor: OnnxTensor }
export type AttrValue = number | FloatAttr | string | number[] | TensorAttr;

export interface OnnxTensor {
  name: string;
  type: OnnxType;
  dims: number[];
  /** Little-endian bytes: product(dims) × the type's size. */
  raw: Uint8Array;
}

/** A dimension: a fixed size or a named dynamic one. */
export type Dim = number | string;
export interface ValueInfo { name: string; type: OnnxType; shape: Dim[] }

export interface OnnxNode {
  op: string;
  inputs: string[];
  outputs: string[];
  name: string;
  attrs: Record<string, AttrValue>;
  domain: string;
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function tensorOf(name: string, type: OnnxType, dims: number[], data: ArrayBufferView): OnnxTensor {
  const raw = bytesOf(data);
  const n = dims.reduce((a, b) => a * b, 1);
  if (raw.length !== n * TYPE_BYTES[type]) throw new RangeError(`onnx: tensor '${name}' of dims [${dims.join(', ')}] needs ${n * TYPE_BYTES[type]} bytes, got ${raw.length}`);
  return { name, type, dims, raw };
}

/** A graph under construction: nodes in topological order (each added after its inputs). */
export class OnnxGraph {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  /** Custom-op domains used (e.g. com.microsoft) with their versions. */
  readonly domains = new Map<string, number>();
  private readonly names = new Set<string>();
  private readonly constants = new Map<string, string>();
  private counter = 0;

  constructor(readonly name: string) {}

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`onnx: the name '${name}' is used twice in graph '${this.name}'`);
    this.names.add(name);
    return name;
  }

  /** A fresh value name with this prefix. */
  fresh(prefix: string): string {
    let n: string;
    do n = `${prefix}_${this.counter++}`; while (this.names.has(n));
    return n;
  }

  input(name: string, type: OnnxType, shape: Dim[]): string {
    this.inputs.push({ name: this.claim(name), type, shape });
    return name;
  }

  /** Marks an existing value as a graph output (renaming it through Identity if needed). */
  output(value: string, name: string, type: OnnxType, shape: Dim[]): string {
    if (value !== name) this.node('Identity', [value], {}, { outputs: [name] });
    this.outputs.push({ name, type, shape });
    return name;
  }

  initializer(name: string, type: OnnxType, dims: number[], data: ArrayBufferView): string {
    this.initializers.push(tensorOf(this.claim(name), type, dims, data));
    return name;
  }

  /** A shared small constant initializer (deduplicated by value). */
  constant(type: OnnxType.FLOAT | OnnxType.INT64 | OnnxType.BOOL, values: number[], dims: number[] = [values.length]): string {
    const key = `${type}|${dims.join(',')}|${values.join(',')}`;
    const known = this.constants.get(key);
    if (known) return known;
    const data = type === OnnxType.FLOAT ? Float32Array.from(values)
      : type === OnnxType.INT64 ? BigInt64Array.from(values.map((v) => BigInt(v)))
        : Uint8Array.from(values.map((v) => (v ? 1 : 0)));
    const name = this.initializer(this.fresh(type === OnnxType.FLOAT ? 'const_f' : type === OnnxType.INT64 ? 'const_i' : 'const_b'), type, dims, data);
    this.constants.set(key, name);
    return name;
  }

  /** Scalar constants (dims []). */
  scalarF(v: number): string {
    return this.constant(OnnxType.FLOAT, [v], []);
  }
  scalarI(v: number): string {
    return this.constant(OnnxType.INT64, [v], []);
  }
  ints(vs: number[]): string {
    return this.constant(OnnxType.INT64, vs);
  }

  /** Adds a node; returns its output names (fresh unless given). '' inputs are omitted optionals. */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, o: { outputs?: string[] | number; name?: string; domain?: string } = {}): string[] {
    const outs = Array.isArray(o.outputs) ? o.outputs.map((n) => this.claim(n)) : Array.from({ length: o.outputs ?? 1 }, () => this.claim(this.fresh(op)));
    const domain = o.domain ?? '';
    if (domain && !this.domains.has(domain)) this.domains.set(domain, 1);
    this.nodes.push({ op, inputs, outputs: outs, name: o.name ?? this.fresh(`n_${op}`), attrs, domain });
    return outs;
  }

  /** A one-output node. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, o: { name?: string; domain?: string; output?: string } = {}): string {
    return this.node(op, inputs, attrs, { ...o, outputs: o.output ? [o.output] : 1 })[0]!;
  }
}

// ---- encoding (onnx.proto field numbers) ----

const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, INTS: 7 } as const;

/** Initializers' bytes kept out of the protobuf: one side file, each tensor at an offset aligned
 *  to 4096 bytes (so a runtime may map it), as onnx's external-data writer aligns. */
export class ExternalData {
  readonly chunks: Uint8Array[] = [];
  length = 0;
  /** location: the side file's name, relative to the .onnx file; tensors under `threshold` bytes stay inline. */
  constructor(readonly location: string, readonly threshold = 1024) {}

  /** Appends a tensor's bytes; returns its offset. */
  add(raw: Uint8Array): number {
    const pad = (4096 - (this.length % 4096)) % 4096;
    if (pad) this.chunks.push(new Uint8Array(pad));
    const offset = this.length + pad;
    this.chunks.push(raw);
    this.length = offset + raw.length;
    return offset;
  }
}

function encodeTensor(t: OnnxTensor, external?: ExternalData): ProtoWriter {
  const w = new ProtoWriter();
  w.packedVarints(1, t.dims); // dims
  w.varint(2, t.type); // data_type
  w.string(8, t.name); // name
  if (external && t.raw.length >= external.threshold) {
    const offset = external.add(t.raw);
    const entry = (k: string, v: string): ProtoWriter => new ProtoWriter().string(1, k).string(2, v); // StringStringEntryProto
    w.message(13, entry('location', external.location)); // external_data
    w.message(13, entry('offset', String(offset)));
    w.message(13, entry('length', String(t.raw.length)));
    w.varint(14, 1); // data_location: EXTERNAL
  } else {
    w.bytes(9, t.raw); // raw_data
  }
  return w;
}

function encodeAttr(name: string, v: AttrValue): ProtoWriter {
  const w = new ProtoWriter();
  w.string(1, name);
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new TypeError(`onnx: attribute '${name}' = ${v} is not an integer (wrap floats in float())`);
    w.varint(3, v).varint(20, AttrType.INT);
  } else if (typeof v === 'string') w.string(4, v).varint(20, AttrType.STRING);
  else if (Array.isArray(v)) w.packedVarints(8, v).varint(20, AttrType.INTS);
  else if ('float' in v) w.float(2, v.float).varint(20, AttrType.FLOAT);
  else w.message(5, encodeTensor(v.tensor)).varint(20, AttrType.TENSOR);
  return w;
}

function encodeNode(n: OnnxNode): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.op);
  for (const [k, v] of Object.entries(n.attrs)) w.message(5, encodeAttr(k, v));
  if (n.domain) w.string(7, n.domain);
  return w;
}

function encodeValueInfo(v: ValueInfo): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) {
    const dim = new ProtoWriter();
    if (typeof d === 'number') dim.varint(1, d); // dim_value
    else dim.string(2, d); // dim_param
    shape.message(1, dim);
  }
  const tensorType = new ProtoWriter().varint(1, v.type).message(2, shape); // elem_type, shape
  const type = new ProtoWriter().message(1, tensorType); // TypeProto.tensor_type
  return new ProtoWriter().string(1, v.name).message(2, type);
}

export function encodeGraph(g: OnnxGraph, external?: ExternalData): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.message(1, encodeNode(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, encodeTensor(t, external));
  for (const i of g.inputs) w.message(11, encodeValueInfo(i));
  for (const o of g.outputs) w.message(12, encodeValueInfo(o));
  return w;
}

export interface ModelMeta {
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  /** metadata_props (key/value strings). */
  metadata?: Record<string, string>;
}

/** The ModelProto of a graph: IR version, opset imports (default domain 17 + custom domains).
 *  With `external`, initializers of its threshold or more go to its side file instead. */
export function encodeModel(g: OnnxGraph, meta: ModelMeta = {}, external?: ExternalData): ProtoWriter {
  const w = new ProtoWriter();
  w.varint(1, ONNX_IR_VERSION);
  w.string(2, meta.producerName ?? 'attn');
  w.string(3, meta.producerVersion ?? '0.1.0');
  if (meta.docString) w.string(6, meta.docString);
  w.message(7, encodeGraph(g, external));
  w.message(8, new ProtoWriter().string(1, '').varint(2, ONNX_OPSET));
  for (const [d, v] of g.domains) w.message(8, new ProtoWriter().string(1, d).varint(2, v));
  for (const [k, v] of Object.entries(meta.metadata ?? {})) w.message(14, new ProtoWriter().string(1, k).string(2, v));
  if (w.length > ONNX_MAX_BYTES) {
    throw new RangeError(`onnx: the model is ${(w.length / 2 ** 30).toFixed(2)} GiB, over protobuf's 2 GiB limit: write its weights as external data`);
  }
  return w;
}

function writeChunks(path: string, chunks: Iterable<Uint8Array>): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    for (const c of chunks) {
      let o = 0;
      while (o < c.length) o += writeSync(fd, c, o, c.length - o);
    }
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Writes an encoded model piece by piece (no copy of the whole file in memory), and its external
 *  data beside it (the side file first, so a model file never names data that is not there);
 *  each file atomically. Returns the bytes of the .onnx file. */
export function saveONNX(path: string, model: ProtoWriter, external?: ExternalData): number {
  if (external && external.length > 0) {
    if (external.location !== basename(external.location)) throw new Error(`onnx: external data location '${external.location}' must be a file name beside the model`);
    writeChunks(path.slice(0, path.length - basename(path).length) + external.location, external.chunks);
  }
  writeChunks(path, model.chunks());
  return model.length;
}
