// ONNX export of attn's decoder LMs (DecoderLM: llama, mistral, qwen2, qwen3, phi; and attn's GPT,
// GPT-2's architecture, buildGPTONNX) in the layout
// of ONNX Runtime GenAI and transformers.js decoders:
//   inputs   input_ids       int64 [batch_size, sequence_length]
//            attention_mask  int64 [batch_size, total_sequence_length]   (1 = token, 0 = padding)
//            position_ids    int64 [batch_size, sequence_length]
//            past_key_values.{i}.key / .value  float32 [batch_size, kv_heads, past_sequence_length, head_dim]
//   outputs  logits          float32 [batch_size, sequence_length, vocab]
//            present.{i}.key / .value  float32 [batch_size, kv_heads, total_sequence_length, head_dim]
// The graph reproduces DecoderLM's forward with opset-17 ops: RMSNorm as Pow/ReduceMean/Add/Sqrt/
// Div/Mul (ONNX Runtime fuses it to SimplifiedLayerNormalization), LayerNormalization (phi), RoPE
// from cos/sin tables gathered at position_ids (half-split rotation, partial rotary, linear and
// llama3 scalings as attn computes the frequencies), grouped-query attention without copying the
// kv heads (q grouped per kv head), a causal mask over total_sequence_length (a query at row i of
// the new tokens sees keys j ≤ past + i, and j > past + i − window on sliding-window layers)
// joined with attention_mask, tied embeddings as one matrix.
// Weights: float32, or attn's own quantization (src/tensor/quantize.ts) so ONNX Runtime runs the
// very weights attn runs: int8 (per output row) as DequantizeLinear → MatMul or as
// com.microsoft.MatMulNBits bits 8, int4 (Q4_0 groups of 32) as com.microsoft.MatMulNBits bits 4,
// block 32, zero point 8 (repacked nibbles).
import { copyFileSync, existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { encodeModel, ExternalData, float, OnnxGraph, OnnxType, saveONNX, type Dim } from '../io/onnx.js';
import type { Embedding, Linear, LayerNorm, RMSNorm } from '../nn/layers.js';
import { RMSNorm as RMSNormClass } from '../nn/layers.js';
import { ropeInverseFrequencies } from '../nn/positional.js';
import { quantize, dequantizeRows, quantUnsupported, type QuantizedArrays } from '../tensor/quantize.js';
import type { Tensor } from '../tensor/index.js';
import type { MLP } from '../nn/mlp.js';
import { DecoderLM, type DecoderAttention, type DecoderConfig } from './decoder.js';
import { fullGPTConfig, GPT } from './gpt.js';

export type OnnxWeights = 'float32' | 'int8' | 'int4';
export const ONNX_WEIGHTS: readonly OnnxWeights[] = ['float32', 'int8', 'int4'];

export interface DecoderOnnxOptions {
  /** The linear layers' weights (default float32). */
  weights?: OnnxWeights;
  /** int8 only: 'matmulnbits' (com.microsoft.MatMulNBits, bits 8, zero point 128, the row's
   *  scale in each block of 32; the default: ONNX Runtime computes in float32 on the very
   *  weights attn holds) or 'dequantize' (standard opset: DequantizeLinear per output channel →
   *  MatMul; ONNX Runtime's default optimizations rewrite that into a dynamic int8 matmul that
   *  also quantizes the activations, unless session option session.disable_quant_qdq = 1). */
  int8Op?: 'dequantize' | 'matmulnbits';
  /** Quantize a separate lm_head too (default false, as quantizeModel). */
  quantizeHead?: boolean;
  /** Quantize the embedding table too (default false, as quantizeModel); a tied head then
   *  reads the quantized table. Its rows are looked up from the quantized matrix (int8: int8
   *  rows × the row's scale; int4: stored as the dequantized float32 rows). */
  quantizeEmbeddings?: boolean;
  /** MatMulNBits' accuracy_level (0: float32 arithmetic on the dequantized weights, the
   *  default; 4: activations quantized to int8, faster, not attn's arithmetic). */
  accuracyLevel?: number;
  /** Rows of the RoPE tables: the longest position id + 1 (default the model's block_size). */
  maxPositions?: number;
  /** ONNX external data: initializers of 1 KiB or more written to this side file (a name beside
   *  the .onnx) instead of inside it; needed past protobuf's 2 GiB. saveDecoderONNX picks
   *  `<file>.data` by itself when the weights would not fit. */
  externalData?: string;
}

export interface DecoderOnnxExport {
  graph: OnnxGraph;
  /** Weights left in float32 because the format cannot hold them (e.g. int4 rows not whole groups). */
  keptFloat: string[];
  /** Encoded size in bytes (the .onnx file; external data apart). */
  bytes: number;
  /** The external data, when opts.externalData asked for it. */
  external: ExternalData | null;
}

const FLOAT = OnnxType.FLOAT;
const INT64 = OnnxType.INT64;
const NEG = -3.4028234663852886e38; // float32's lowest: a masked score (a fully masked row stays finite)
const MS = 'com.microsoft';

function floats(t: Tensor): Float32Array {
  if (t.dtype === 'float32') return t.data() as Float32Array;
  const w = t.to('float32');
  try {
    return Float32Array.from(w.data() as Float32Array);
  } finally {
    w.dispose();
  }
}

function transpose2d(src: ArrayLike<number>, N: number, K: number, out: Float32Array | Int8Array): void {
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) out[k * N + n] = src[n * K + k]!;
}

/** Why attn cannot export this model, or null. */
export function onnxUnsupported(model: DecoderLM, opts: DecoderOnnxOptions = {}): string | null {
  const cfg = model.config;
  const w = opts.weights ?? 'float32';
  if (!ONNX_WEIGHTS.includes(w)) return `weights must be one of ${ONNX_WEIGHTS.join(', ')}, got '${String(w)}'`;
  if (opts.int8Op !== undefined && !['dequantize', 'matmulnbits'].includes(opts.int8Op)) return `int8Op must be dequantize or matmulnbits, got '${String(opts.int8Op)}'`;
  const scaling = cfg.rope_scaling?.rope_type;
  const maxPos = opts.maxPositions ?? cfg.block_size;
  if (scaling === 'dynamic' && maxPos > cfg.max_position_embeddings) {
    return `rope_scaling 'dynamic' changes the frequencies with the sequence length past max_position_embeddings (${cfg.max_position_embeddings}); export with maxPositions ≤ ${cfg.max_position_embeddings}`;
  }
  if (scaling !== undefined && !['linear', 'llama3', 'dynamic'].includes(scaling)) return `rope_scaling '${scaling}' is not exported`;
  if (!Number.isInteger(maxPos) || maxPos < 1) return `maxPositions must be a positive integer, got ${String(maxPos)}`;
  for (const [name, m] of model.namedModules()) {
    if (Object.prototype.hasOwnProperty.call(m, 'forward')) return `module '${name}' carries an adapter (LoRA): merge it first ('attn merge')`;
  }
  return null;
}

class Exporter {
  readonly g: OnnxGraph;
  readonly keptFloat: string[] = [];
  private readonly weights: OnnxWeights;
  private readonly int8Op: 'dequantize' | 'matmulnbits';
  private readonly acc: number;
  /** Quantized arrays by parameter name, so a tied matrix is quantized once. */
  private readonly quant = new Map<string, QuantizedArrays | null>();
  /** Initializer names already emitted per (parameter, layout). */
  private readonly emitted = new Map<string, string>();

  /** emb, embName: the token embedding and its parameter name (stored once when tied). */
  constructor(readonly emb: Embedding, readonly embName: string, readonly opts: DecoderOnnxOptions, graphName = 'attn_decoder') {
    this.g = new OnnxGraph(graphName);
    this.weights = opts.weights ?? 'float32';
    this.int8Op = opts.int8Op ?? 'matmulnbits';
    this.acc = opts.accuracyLevel ?? 0;
  }

  /** The matrix of a Linear or Embedding as attn holds it (already quantized: its own arrays)
   *  or as the options quantize it; null: float32. */
  quantized(name: string, m: Linear | Embedding, want: boolean): QuantizedArrays | null {
    if (!this.quant.has(name)) {
      const held = (m as { quant?: { toArrays(): QuantizedArrays } | null }).quant;
      let q: QuantizedArrays | null = null;
      if (held) {
        q = held.toArrays();
      } else if (want && this.weights !== 'float32') {
        const w = m.weight;
        const [N, K] = w.shape as [number, number];
        const why = quantUnsupported(this.weights, N, K);
        if (why) this.keptFloat.push(`${name} (${why})`);
        else q = quantize(floats(w), N, K, this.weights);
      }
      if (q && q.format === 'int4z' && q.K % 32 !== 0) throw new Error(`exportDecoderONNX: ${name} is int4z with ${q.K} columns`);
      this.quant.set(name, q);
    }
    return this.quant.get(name)!;
  }

  private once(key: string, make: () => string): string {
    let n = this.emitted.get(key);
    if (!n) {
      n = make();
      this.emitted.set(key, n);
    }
    return n;
  }

  /** x (..., K) @ W^T (+ b) for a (N, K) weight named `name`. */
  matmul(x: string, name: string, m: Linear | Embedding, bias: Tensor | null, want = true): string {
    const g = this.g;
    const q = this.quantized(name, m, want);
    const [N, K] = q ? [q.N, q.K] : (m.weight.shape as [number, number]);
    let y: string;
    if (!q) {
      const wt = this.once(`${name}:T`, () => {
        const t = new Float32Array(N * K);
        transpose2d(floats(m.weight), N, K, t);
        return g.initializer(`${name}.T`, FLOAT, [K, N], t);
      });
      y = g.op('MatMul', [x, wt]);
    } else if (q.format === 'int8' && this.int8Op === 'dequantize') {
      const [qt, s] = this.int8Transposed(name, q);
      y = g.op('MatMul', [x, g.op('DequantizeLinear', [qt, s], { axis: 1 })]);
    } else {
      const [b, s, z] = this.nbits(name, q);
      y = g.op('MatMulNBits', z ? [x, b, s, z] : [x, b, s], { K, N, bits: q.format === 'int8' ? 8 : 4, block_size: 32, accuracy_level: this.acc }, { domain: MS });
    }
    return bias ? g.op('Add', [y, this.vector(`${name.replace(/weight$/, 'bias')}`, bias)]) : y;
  }

  /** int8 (K, N) transposed data and the N scales (DequantizeLinear axis 1). */
  private int8Transposed(name: string, q: QuantizedArrays): [string, string] {
    const data = this.once(`${name}:i8T`, () => {
      const t = new Int8Array(q.N * q.K);
      transpose2d(new Int8Array(q.data.buffer, q.data.byteOffset, q.data.length), q.N, q.K, t);
      return this.g.initializer(`${name}.int8_T`, OnnxType.INT8, [q.K, q.N], t);
    });
    const s = this.once(`${name}:s`, () => this.g.initializer(`${name}.scales`, FLOAT, [q.N], q.scales));
    return [data, s];
  }

  /** MatMulNBits' B [N, K/32, blob] and scales [N·K/32]. */
  private nbits(name: string, q: QuantizedArrays): [string, string, string | null] {
    const blocks = Math.ceil(q.K / 32); // int8 rows are padded to whole blocks (zero levels)
    if (q.format === 'int8') {
      const b = this.once(`${name}:u8`, () => {
        const u = new Uint8Array(q.N * blocks * 32).fill(128);
        for (let n = 0; n < q.N; n++) {
          for (let k = 0; k < q.K; k++) u[n * blocks * 32 + k] = (q.data[n * q.K + k]! + 128) & 255; // int8 + 128 (zero point 128)
        }
        return this.g.initializer(`${name}.u8`, OnnxType.UINT8, [q.N, blocks, 32], u);
      });
      const s = this.once(`${name}:s32`, () => {
        const s = new Float32Array(q.N * blocks);
        for (let n = 0; n < q.N; n++) s.fill(q.scales[n]!, n * blocks, (n + 1) * blocks);
        return this.g.initializer(`${name}.block_scales`, FLOAT, [q.N * blocks], s);
      });
      return [b, s, null];
    }
    // Q4_0 packs byte j of a group as (element j, element j + 16); MatMulNBits as (2j, 2j + 1).
    const b = this.once(`${name}:u4`, () => {
      const u = new Uint8Array(q.data.length);
      const lv = new Uint8Array(32);
      for (let gi = 0; gi < q.N * blocks; gi++) {
        const o = gi * 16;
        for (let j = 0; j < 16; j++) {
          lv[j] = q.data[o + j]! & 15;
          lv[j + 16] = q.data[o + j]! >> 4;
        }
        for (let j = 0; j < 16; j++) u[o + j] = lv[2 * j]! | (lv[2 * j + 1]! << 4);
      }
      return this.g.initializer(`${name}.u4`, OnnxType.UINT8, [q.N, blocks, 16], u);
    });
    const s = this.once(`${name}:s`, () => this.g.initializer(`${name}.scales`, FLOAT, [q.N * blocks], q.scales));
    // int4z: MatMulNBits' zero points, two 4-bit values a byte (low nibble first), a row padded to whole bytes.
    const zeros = q.zeros;
    const z = zeros ? this.once(`${name}:z`, () => {
      const per = Math.ceil(blocks / 2);
      const u = new Uint8Array(q.N * per);
      for (let n = 0; n < q.N; n++) for (let j = 0; j < blocks; j++) u[n * per + (j >> 1)]! |= zeros[n * blocks + j]! << ((j & 1) * 4);
      return this.g.initializer(`${name}.zero_points`, OnnxType.UINT8, [q.N * per], u);
    }) : null;
    return [b, s, z];
  }

  vector(name: string, t: Tensor): string {
    return this.once(name, () => this.g.initializer(name, FLOAT, [t.size], floats(t)));
  }

  norm(x: string, n: LayerNorm | RMSNorm, name: string): string {
    const g = this.g;
    if (n instanceof RMSNormClass) {
      const ms = g.op('ReduceMean', [g.op('Pow', [x, g.scalarF(2)])], { axes: [-1], keepdims: 1 });
      const r = g.op('Sqrt', [g.op('Add', [ms, g.scalarF(n.eps)])]);
      return g.op('Mul', [g.op('Div', [x, r]), this.vector(`${name}.weight`, n.weight)]);
    }
    const ln = n as LayerNorm;
    const bias = ln.bias ? this.vector(`${name}.bias`, ln.bias) : g.constant(FLOAT, new Array<number>(ln.dim).fill(0));
    return g.op('LayerNormalization', [x, this.vector(`${name}.weight`, ln.weight), bias], { axis: -1, epsilon: float(ln.eps) });
  }

  /** The float32 embedding matrix (V, C), stored once. */
  floatEmbedding(): string {
    const emb = this.emb.weight;
    return this.once(`${this.embName}:rows`, () => this.g.initializer(this.embName, FLOAT, emb.shape as number[], floats(emb)));
  }

  /** The embedding of input_ids (B, T, C). */
  embed(ids: string): string {
    const g = this.g;
    const name = this.embName;
    const q = this.quantized(name, this.emb, this.opts.quantizeEmbeddings ?? false);
    if (!q) return g.op('Gather', [this.floatEmbedding(), ids]);
    if (q.format === 'int8') {
      const rows = this.once(`${name}:i8`, () => g.initializer(`${name}.int8`, OnnxType.INT8, [q.N, q.K], q.data));
      const s = this.once(`${name}:s`, () => g.initializer(`${name}.scales`, FLOAT, [q.N], q.scales));
      const v = g.op('Cast', [g.op('Gather', [rows, ids])], { to: FLOAT });
      return g.op('Mul', [v, g.op('Unsqueeze', [g.op('Gather', [s, ids]), g.ints([-1])])]);
    }
    return g.op('Gather', [this.once(`${name}:deq`, () => g.initializer(`${name}.dequantized`, FLOAT, [q.N, q.K], dequantizeRows(q))), ids]);
  }

  /** The LM head over x (B, T, C): its own matrix, or tied to the embedding (quantized with it,
   *  or float32 through Gemm's transB so the table is stored once). */
  head(x: string, ids: string, lmHead: Linear | null, lmHeadName: string, C: number, V: number): string {
    const g = this.g;
    if (lmHead) return this.matmul(x, lmHeadName, lmHead, lmHead.bias, this.opts.quantizeHead ?? false);
    if (this.quantized(this.embName, this.emb, this.opts.quantizeEmbeddings ?? false)) return this.matmul(x, this.embName, this.emb, null);
    const flat = g.op('Gemm', [g.op('Reshape', [x, g.ints([-1, C])]), this.floatEmbedding()], { transB: 1 });
    return g.op('Reshape', [flat, g.op('Concat', [g.op('Shape', [ids]), g.ints([V])], { axis: 0 })]);
  }
}

/** The graph's inputs: input_ids, attention_mask, position_ids and each layer's past (key, value). */
function cachedInputs(g: OnnxGraph, L: number, Hkv: number, D: number): { ids: string; mask: string; pos: string; past: [string, string][] } {
  const B: Dim = 'batch_size';
  const ids = g.input('input_ids', INT64, [B, 'sequence_length']);
  const mask = g.input('attention_mask', INT64, [B, 'total_sequence_length']);
  const pos = g.input('position_ids', INT64, [B, 'sequence_length']);
  const past: [string, string][] = [];
  for (let i = 0; i < L; i++) {
    past.push([g.input(`past_key_values.${i}.key`, FLOAT, [B, Hkv, 'past_sequence_length', D]), g.input(`past_key_values.${i}.value`, FLOAT, [B, Hkv, 'past_sequence_length', D])]);
  }
  return { ids, mask, pos, past };
}

/** logits and each layer's present (key, value) as the graph's outputs. */
function cachedOutputs(g: OnnxGraph, logits: string, L: number, Hkv: number, D: number, V: number): void {
  const B: Dim = 'batch_size';
  g.output(logits, 'logits', FLOAT, [B, 'sequence_length', V]);
  for (let i = 0; i < L; i++) {
    g.outputs.push({ name: `present.${i}.key`, type: FLOAT, shape: [B, Hkv, 'total_sequence_length', D] });
    g.outputs.push({ name: `present.${i}.value`, type: FLOAT, shape: [B, Hkv, 'total_sequence_length', D] });
  }
}

/** The mask (B, 1, T, S) for a window (null: none): key j visible to new token i iff j ≤ past + i,
 *  attention_mask[b, j] = 1, and past + i − j < window on sliding-window layers. */
function causalMasks(g: OnnxGraph, ids: string, mask: string): (window: number | null) => string {
  const S = g.op('Squeeze', [g.op('Shape', [mask], { start: 1, end: 2 }), g.ints([0])]);
  const T = g.op('Squeeze', [g.op('Shape', [ids], { start: 1, end: 2 }), g.ints([0])]);
  const kpos = g.op('Range', [g.scalarI(0), S, g.scalarI(1)]); // (S)
  const qpos = g.op('Unsqueeze', [g.op('Range', [g.op('Sub', [S, T]), S, g.scalarI(1)]), g.ints([1])]); // (T, 1)
  const padding = g.op('Unsqueeze', [g.op('Cast', [mask], { to: OnnxType.BOOL }), g.ints([1, 2])]); // (B, 1, 1, S)
  const causal = g.op('And', [g.op('LessOrEqual', [kpos, qpos]), padding]);
  const masks = new Map<number | null, string>([[null, causal]]);
  return (window) => {
    if (!masks.has(window)) masks.set(window, g.op('And', [causal, g.op('Less', [g.op('Sub', [qpos, kpos]), g.scalarI(window!)])]));
    return masks.get(window)!;
  };
}

/** Softmax attention of q (B, H, T, D) over layer i's past + new k, v (B, Hkv, T, D), writing
 *  present.{i}.key/value; returns (B, T, H·D). q is grouped per kv head, so k and v are never repeated. */
function attendCached(g: OnnxGraph, q: string, k: string, v: string, past: [string, string], i: number, mask: string, H: number, Hkv: number, D: number): string {
  const rep = H / Hkv;
  const presentK = g.op('Concat', [past[0], k], { axis: 2 }, { output: `present.${i}.key` });
  const presentV = g.op('Concat', [past[1], v], { axis: 2 }, { output: `present.${i}.value` });
  const qs = g.op('Mul', [q, g.scalarF(1 / Math.sqrt(D))]);
  const qg = rep > 1 ? g.op('Reshape', [qs, g.ints([0, Hkv, -1, D])]) : qs; // (B, Hkv, rep·T, D)
  let scores = g.op('MatMul', [qg, g.op('Transpose', [presentK], { perm: [0, 1, 3, 2] })]); // (B, Hkv, rep·T, S)
  if (rep > 1) scores = g.op('Reshape', [scores, g.ints([0, H, -1, 0])]); // (B, H, T, S)
  let probs = g.op('Softmax', [g.op('Where', [mask, scores, g.scalarF(NEG)])], { axis: -1 });
  if (rep > 1) probs = g.op('Reshape', [probs, g.ints([0, Hkv, -1, 0])]);
  let y = g.op('MatMul', [probs, presentV]); // (B, Hkv, rep·T, D)
  if (rep > 1) y = g.op('Reshape', [y, g.ints([0, H, -1, D])]);
  return g.op('Reshape', [g.op('Transpose', [y], { perm: [0, 2, 1, 3] }), g.ints([0, 0, H * D])]);
}

/** GELU of u: GPT-2's tanh approximation, or the erf form. */
function geluOp(g: OnnxGraph, u: string, tanh: boolean): string {
  if (tanh) { // 0.5·u·(1 + tanh(√(2/π)·(u + 0.044715·u³)))
    const inner = g.op('Mul', [g.op('Add', [u, g.op('Mul', [g.op('Pow', [u, g.scalarF(3)]), g.scalarF(0.044715)])]), g.scalarF(Math.sqrt(2 / Math.PI))]);
    return g.op('Mul', [g.op('Mul', [u, g.scalarF(0.5)]), g.op('Add', [g.op('Tanh', [inner]), g.scalarF(1)])]);
  }
  return g.op('Mul', [g.op('Mul', [u, g.scalarF(0.5)]), g.op('Add', [g.op('Erf', [g.op('Div', [u, g.scalarF(Math.SQRT2)])]), g.scalarF(1)])]);
}

/** Rotates x (B, T, h, D)'s first 2·half features by (x1·cos − x2·sin, x2·cos + x1·sin), cos and sin
 *  (B, T, 1, half) gathered at position_ids. */
function rotateHalf(g: OnnxGraph, x: string, cos: string, sin: string, half: number, D: number): string {
  const rot = 2 * half;
  const parts = rot < D ? g.node('Split', [x, g.ints([half, half, D - rot])], { axis: 3 }, { outputs: 3 }) : g.node('Split', [x, g.ints([half, half])], { axis: 3 }, { outputs: 2 });
  const [x1, x2] = parts as [string, string];
  const o1 = g.op('Sub', [g.op('Mul', [x1, cos]), g.op('Mul', [x2, sin])]);
  const o2 = g.op('Add', [g.op('Mul', [x2, cos]), g.op('Mul', [x1, sin])]);
  return g.op('Concat', rot < D ? [o1, o2, parts[2]!] : [o1, o2], { axis: 3 });
}

/** The ONNX graph of a DecoderLM (see the file comment for its inputs and outputs). */
export function buildDecoderONNX(model: DecoderLM, opts: DecoderOnnxOptions = {}): { graph: OnnxGraph; keptFloat: string[] } {
  if (!(model instanceof DecoderLM)) throw new TypeError('exportDecoderONNX: the model is not a DecoderLM (llama, mistral, qwen2, qwen3, phi)');
  const why = onnxUnsupported(model, opts);
  if (why) throw new Error(`exportDecoderONNX: ${why}`);
  const cfg: DecoderConfig = model.config;
  const ex = new Exporter(model.model.embed_tokens, 'model.embed_tokens.weight', opts);
  const g = ex.g;
  const L = cfg.num_hidden_layers;
  const H = cfg.num_attention_heads;
  const Hkv = cfg.num_key_value_heads;
  const D = cfg.head_dim;
  const { ids, mask, pos, past } = cachedInputs(g, L, Hkv, D);

  // RoPE tables (maxPositions, rot/2), as ScaledRope builds them: angle = f32(p · inv), cos/sin.
  const half = model.rope.spec.dim / 2;
  const maxPos = opts.maxPositions ?? cfg.block_size;
  const inv = ropeInverseFrequencies(model.rope.spec, model.rope.spec.maxPositions);
  const cosT = new Float32Array(maxPos * half);
  const sinT = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(p * inv[i]!);
      cosT[p * half + i] = Math.cos(a);
      sinT[p * half + i] = Math.sin(a);
    }
  }
  const cosTab = g.initializer('rope.cos', FLOAT, [maxPos, half], cosT);
  const sinTab = g.initializer('rope.sin', FLOAT, [maxPos, half], sinT);
  const cos = g.op('Unsqueeze', [g.op('Gather', [cosTab, pos]), g.ints([2])]); // (B, T, 1, half)
  const sin = g.op('Unsqueeze', [g.op('Gather', [sinTab, pos]), g.ints([2])]);
  const maskFor = causalMasks(g, ids, mask);

  const attention = (h: string, a: DecoderAttention, i: number): string => {
    const p = `model.layers.${i}.self_attn`;
    const heads = (lin: Linear, n: string, count: number, normM: LayerNorm | RMSNorm | null, normName: string, rotate: boolean): string => {
      let r = g.op('Reshape', [ex.matmul(h, `${p}.${n}.weight`, lin, lin.bias), g.ints([0, 0, count, D])]); // (B, T, h, D)
      if (normM) r = ex.norm(r, normM, `${p}.${normName}`);
      if (rotate) r = rotateHalf(g, r, cos, sin, half, D);
      return g.op('Transpose', [r], { perm: [0, 2, 1, 3] }); // (B, h, T, D)
    };
    const phi = cfg.model_type === 'phi';
    const q = heads(a.q_proj, 'q_proj', H, a.qNorm, phi ? 'q_layernorm' : 'q_norm', true);
    const k = heads(a.k_proj, 'k_proj', Hkv, a.kNorm, phi ? 'k_layernorm' : 'k_norm', true);
    const v = heads(a.v_proj, 'v_proj', Hkv, null, '', false);
    const y = attendCached(g, q, k, v, past[i]!, i, maskFor(a.window), H, Hkv, D);
    return ex.matmul(y, `${p}.${phi ? 'dense' : 'o_proj'}.weight`, a.out, a.out.bias);
  };

  const mlp = (h: string, i: number): string => {
    const m = model.model.layers.items[i]!.mlp;
    const p = `model.layers.${i}.mlp`;
    if (m.gate) {
      const gate = ex.matmul(h, `${p}.gate_proj.weight`, m.gate, m.gate.bias);
      const up = ex.matmul(h, `${p}.up_proj.weight`, m.up, m.up.bias);
      return ex.matmul(g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]), `${p}.down_proj.weight`, m.down, m.down.bias);
    }
    const u = ex.matmul(h, `${p}.fc1.weight`, m.up, m.up.bias);
    return ex.matmul(geluOp(g, u, cfg.hidden_act === 'gelu_new'), `${p}.fc2.weight`, m.down, m.down.bias);
  };

  let x = ex.embed(ids);
  model.model.layers.items.forEach((layer, i) => {
    const p = `model.layers.${i}`;
    const h = ex.norm(x, layer.input_layernorm, `${p}.input_layernorm`);
    if (!layer.post_attention_layernorm) {
      x = g.op('Add', [g.op('Add', [attention(h, layer.self_attn, i), mlp(h, i)]), x]);
    } else {
      x = g.op('Add', [x, attention(h, layer.self_attn, i)]);
      x = g.op('Add', [x, mlp(ex.norm(x, layer.post_attention_layernorm, `${p}.post_attention_layernorm`), i)]);
    }
  });
  x = ex.norm(x, model.model.finalNorm, cfg.model_type === 'phi' ? 'model.final_layernorm' : 'model.norm');
  cachedOutputs(g, ex.head(x, ids, model.lm_head, 'lm_head.weight', cfg.hidden_size, cfg.vocab_size), L, Hkv, D, cfg.vocab_size);
  return { graph: g, keptFloat: ex.keptFloat };
}

/** Why attn's GPT cannot be exported as it is, or null. The graph covers GPT-2's layout and the
 *  variants the one-graph form expresses: learned or rotary positions, pre-norm with LayerNorm or
 *  RMSNorm, GELU (tanh or erf), ReLU or SwiGLU MLPs, biases or none, multi-head or grouped kv heads,
 *  tied or untied head. */
export function gptOnnxUnsupported(model: GPT, opts: DecoderOnnxOptions = {}): string | null {
  const cfg = fullGPTConfig(model.config);
  const w = opts.weights ?? 'float32';
  if (!ONNX_WEIGHTS.includes(w)) return `weights must be one of ${ONNX_WEIGHTS.join(', ')}, got '${String(w)}'`;
  if (opts.int8Op !== undefined && !['dequantize', 'matmulnbits'].includes(opts.int8Op)) return `int8Op must be dequantize or matmulnbits, got '${String(opts.int8Op)}'`;
  if (cfg.pos_encoding === 'sinusoidal') return "pos_encoding 'sinusoidal' is not exported (learned and rope are)";
  if (cfg.norm_placement !== 'pre') return `norm_placement '${cfg.norm_placement}' is not exported (pre is)`;
  if (cfg.attention !== 'dense') return `attention '${cfg.attention}' is not exported (dense is)`;
  if (cfg.moe_experts > 0) return 'mixture-of-experts layers are not exported';
  const maxPos = opts.maxPositions ?? cfg.block_size;
  if (!Number.isInteger(maxPos) || maxPos < 1 || maxPos > cfg.block_size) return `maxPositions must be an integer in [1, ${cfg.block_size}], got ${String(maxPos)}`;
  for (const [name, m] of model.namedModules()) {
    if (Object.prototype.hasOwnProperty.call(m, 'forward')) return `module '${name}' carries an adapter (LoRA): merge it first ('attn merge')`;
  }
  return null;
}

/** The ONNX graph of attn's GPT (GPT-2's names: transformer.h.{i}.attn.c_attn ...), with the same
 *  inputs and outputs as a DecoderLM's. */
export function buildGPTONNX(model: GPT, opts: DecoderOnnxOptions = {}): { graph: OnnxGraph; keptFloat: string[] } {
  const why = gptOnnxUnsupported(model, opts);
  if (why) throw new Error(`exportDecoderONNX: ${why}`);
  const cfg = fullGPTConfig(model.config);
  const t = model.transformer;
  const ex = new Exporter(t.wte, 'transformer.wte.weight', opts, 'attn_gpt');
  const g = ex.g;
  const L = cfg.n_layer;
  const H = cfg.n_head;
  const Hkv = cfg.n_kv_head;
  const C = cfg.n_embd;
  const D = C / H;
  const { ids, mask, pos, past } = cachedInputs(g, L, Hkv, D);
  const maxPos = opts.maxPositions ?? cfg.block_size;

  let x = ex.embed(ids); // (B, T, C)
  if (t.wpe) {
    const table = floats(t.wpe.weight).subarray(0, maxPos * C);
    x = g.op('Add', [x, g.op('Gather', [g.initializer('transformer.wpe.weight', FLOAT, [maxPos, C], table), pos])]);
  }
  // Rotary: attn's own tables (maxLen, D/2), gathered at position_ids.
  let rope: ((r: string) => string) | null = null;
  if (t.rope) {
    const half = D / 2;
    const tab = (name: string, v: Tensor): string => g.op('Unsqueeze', [g.op('Gather', [g.initializer(name, FLOAT, [maxPos, half], floats(v).subarray(0, maxPos * half)), pos]), g.ints([2])]);
    const cos = tab('rope.cos', t.rope.cos);
    const sin = tab('rope.sin', t.rope.sin);
    rope = (r) => rotateHalf(g, r, cos, sin, half, D);
  }
  const causal = causalMasks(g, ids, mask)(null);
  t.h.items.forEach((block, i) => {
    const p = `transformer.h.${i}`;
    const a = block.attn;
    const qkv = ex.matmul(ex.norm(x, block.ln_1 as LayerNorm | RMSNorm, `${p}.ln_1`), `${p}.attn.c_attn.weight`, a.c_attn, a.c_attn.bias); // (B, T, C + 2·Hkv·D)
    const [q0, k0, v0] = g.node('Split', [qkv, g.ints([C, Hkv * D, Hkv * D])], { axis: 2 }, { outputs: 3 }) as [string, string, string];
    const heads = (r: string, count: number, rotate: boolean): string => {
      let y = g.op('Reshape', [r, g.ints([0, 0, count, D])]); // (B, T, h, D)
      if (rotate && rope) y = rope(y);
      return g.op('Transpose', [y], { perm: [0, 2, 1, 3] }); // (B, h, T, D)
    };
    const y = attendCached(g, heads(q0, H, true), heads(k0, Hkv, true), heads(v0, Hkv, false), past[i]!, i, causal, H, Hkv, D);
    x = g.op('Add', [x, ex.matmul(y, `${p}.attn.c_proj.weight`, a.c_proj, a.c_proj.bias)]);
    const m = block.mlp as MLP;
    const h = ex.norm(x, block.ln_2 as LayerNorm | RMSNorm, `${p}.ln_2`);
    const u = ex.matmul(h, `${p}.mlp.c_fc.weight`, m.c_fc, m.c_fc.bias);
    let act: string;
    if (m.activation === 'swiglu') act = g.op('Mul', [g.op('Mul', [u, g.op('Sigmoid', [u])]), ex.matmul(h, `${p}.mlp.c_fc2.weight`, m.c_fc2!, m.c_fc2!.bias)]);
    else if (m.activation === 'relu') act = g.op('Relu', [u]);
    else act = geluOp(g, u, m.activation === 'gelu');
    x = g.op('Add', [x, ex.matmul(act, `${p}.mlp.c_proj.weight`, m.c_proj, m.c_proj.bias)]);
  });
  x = ex.norm(x, t.ln_f as LayerNorm | RMSNorm, 'transformer.ln_f');
  cachedOutputs(g, ex.head(x, ids, model.lm_head, 'lm_head.weight', C, cfg.vocab_size), L, Hkv, D, cfg.vocab_size);
  return { graph: g, keptFloat: ex.keptFloat };
}

/** The encoded ONNX model of a DecoderLM or attn's GPT: the graph, its bytes, and the weights kept float32. */
export function exportDecoderONNX(model: DecoderLM | GPT, opts: DecoderOnnxOptions = {}): DecoderOnnxExport & { model: ReturnType<typeof encodeModel> } {
  const weights = opts.weights ?? 'float32';
  let graph: OnnxGraph;
  let keptFloat: string[];
  let metadata: Record<string, string>;
  if (model instanceof GPT) {
    ({ graph, keptFloat } = buildGPTONNX(model, opts));
    const cfg = fullGPTConfig(model.config);
    metadata = { model_type: 'gpt2', weights, num_hidden_layers: String(cfg.n_layer), num_key_value_heads: String(cfg.n_kv_head), head_dim: String(cfg.n_embd / cfg.n_head) };
  } else {
    ({ graph, keptFloat } = buildDecoderONNX(model, opts));
    const cfg = model.config;
    metadata = { model_type: cfg.model_type, weights, num_hidden_layers: String(cfg.num_hidden_layers), num_key_value_heads: String(cfg.num_key_value_heads), head_dim: String(cfg.head_dim) };
  }
  const external = opts.externalData ? new ExternalData(opts.externalData) : null;
  const encoded = encodeModel(graph, { docString: `attn ${metadata['model_type']} decoder, ${weights} weights`, metadata }, external ?? undefined);
  return { graph, keptFloat, bytes: encoded.length, model: encoded, external };
}

/** The files optimum copies beside model.onnx. */
export const ONNX_SIDE_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'char_tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'vocab.json', 'merges.txt'];

/** Writes the model to `path` (.onnx) and copies the model directory's config and tokenizer
 *  files beside it; returns the bytes written and the files copied. Weights past protobuf's
 *  limit go to `<file>.data` (ONNX external data) unless opts.externalData names the file. */
export function saveDecoderONNX(model: DecoderLM | GPT, path: string, opts: DecoderOnnxOptions & { modelDir?: string } = {}): { bytes: number; copied: string[]; keptFloat: string[]; externalData: string | null; externalBytes: number } {
  let ex: ReturnType<typeof exportDecoderONNX>;
  try {
    ex = exportDecoderONNX(model, opts);
  } catch (e) {
    if (opts.externalData || !(e instanceof RangeError) || !/2 GiB/.test(e.message)) throw e;
    ex = exportDecoderONNX(model, { ...opts, externalData: `${basename(path)}.data` });
  }
  const bytes = saveONNX(path, ex.model, ex.external ?? undefined);
  const copied: string[] = [];
  if (opts.modelDir) {
    const outDir = dirname(path);
    for (const f of ONNX_SIDE_FILES) {
      const src = join(opts.modelDir, f);
      const dst = join(outDir, f);
      if (existsSync(src) && resolve(src) !== resolve(dst)) {
        copyFileSync(src, dst);
        copied.push(f);
      }
    }
  }
  return { bytes, copied, keptFloat: ex.keptFloat, externalData: ex.external?.location ?? null, externalBytes: ex.external?.length ?? 0 };
}
