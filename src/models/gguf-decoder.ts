// A llama-architecture DecoderLM as a GGUF file (llama.cpp's names and metadata keys, as its
// specification and converter define them) and back:
//   token_embd.weight, blk.{i}.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
//   ffn_gate, ffn_up, ffn_down}.weight, output_norm.weight, output.weight (absent when tied);
//   llama.{context_length, embedding_length, block_count, feed_forward_length,
//   rope.dimension_count, rope.freq_base, attention.head_count, attention.head_count_kv,
//   attention.layer_norm_rms_epsilon}.
// llama.cpp rotates interleaved pairs (2i, 2i+1) where Hugging Face rotates halves (i, i+D/2),
// so q and k rows are permuted within each head on the way out (as llama.cpp's converter does)
// and back on the way in. Quantized files: the 2-D weights whose rows are whole 32-blocks become
// Q8_0 or Q4_0; norms stay F32.
import { open, rename, rm } from 'node:fs/promises';
import type { Backend } from '../backend/backend.js';
import { tempSibling } from '../io/files.js';
import {
  decodeGGML, encodeGGML, ggmlBytes, GGMLType, GGML_TYPE_NAMES, GGUFError, GGUFValueType, parseGGUFHeader, q4_0ToInt4, serializeGGUFHeader, type GGUFHeader, type GGUFValue,
} from '../io/gguf.js';
import type { Module } from '../nn/module.js';
import { buildQuantized } from '../nn/layers.js';
import { floatStateDict, quantizedWeights, settleQuantized, type QuantizeSpec } from '../nn/quantized.js';
import { fmt, quantize, type DType } from '../tensor/index.js';
import { HfTokenizer, type HfTokenizerConfigJson, type Tokenizer } from '../tokenizers/index.js';
import { DecoderLM, type DecoderConfig } from './decoder.js';
import { GPT, gptConfig } from './gpt.js';
import { gpt2ConfigToHF } from './hf-gpt2.js';
import { decoderConfigFromHF } from './hf-decoder.js';

export type GGUFWeightType = 'f32' | 'f16' | 'q8_0' | 'q4_0' | 'q4_1';
const TYPE_OF: Record<GGUFWeightType, GGMLType> = { f32: GGMLType.F32, f16: GGMLType.F16, q8_0: GGMLType.Q8_0, q4_0: GGMLType.Q4_0, q4_1: GGMLType.Q4_1 };
/** general.file_type (llama.cpp's LLAMA_FTYPE): all F32, mostly F16, Q4_0, Q8_0. */
const FILE_TYPE: Record<GGUFWeightType, number> = { f32: 0, f16: 1, q4_0: 2, q4_1: 3, q8_0: 7 };

/** HF parameter name -> GGUF tensor name (null: not stored). */
function ggufName(name: string): string {
  if (name === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (name === 'model.norm.weight') return 'output_norm.weight';
  if (name === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(name);
  const parts: Record<string, string> = {
    input_layernorm: 'attn_norm', 'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k', 'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
    post_attention_layernorm: 'ffn_norm', 'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down',
  };
  if (m && parts[m[2]!]) return `blk.${m[1]}.${parts[m[2]!]}.weight`;
  throw new Error(`GGUF: parameter '${name}' has no llama.cpp name`);
}

/** Rows of one head in Hugging Face's half-split order -> llama.cpp's interleaved order (inverse: back). */
function permuteHeads(data: Float32Array, heads: number, cols: number, inverse: boolean): Float32Array {
  const rows = data.length / cols;
  const D = rows / heads;
  const half = D / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const hf = h * D + j * half + i; // row in the half-split layout
        const gg = h * D + 2 * i + j; // row in the interleaved layout
        const [from, to] = inverse ? [gg, hf] : [hf, gg];
        out.set(data.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

function checkExportable(cfg: DecoderConfig): void {
  const problems: string[] = [];
  if (cfg.model_type !== 'llama') problems.push(`model_type '${cfg.model_type}' (the llama architecture only)`);
  if (cfg.qkv_bias || cfg.o_bias || cfg.mlp_bias) problems.push('biases');
  if (cfg.rope_scaling && cfg.rope_scaling.rope_type !== 'linear') problems.push(`rope_scaling '${cfg.rope_scaling.rope_type}'`);
  if (cfg.partial_rotary_factor !== 1) problems.push('partial rotary');
  if (problems.length) throw new Error(`GGUF export: not expressible in llama.cpp's llama architecture: ${problems.join(', ')}`);
}

/** llama.cpp metadata for a config. */
function metadataOf(cfg: DecoderConfig, type: GGUFWeightType, name: string): Map<string, GGUFValue> {
  const u32 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT32, value });
  const f32 = (value: number): GGUFValue => ({ type: GGUFValueType.FLOAT32, value });
  const m = new Map<string, GGUFValue>([
    ['general.architecture', { type: GGUFValueType.STRING, value: 'llama' }],
    ['general.name', { type: GGUFValueType.STRING, value: name }],
    ['general.file_type', u32(FILE_TYPE[type])],
    ['general.alignment', u32(32)],
    ['llama.context_length', u32(cfg.max_position_embeddings)],
    ['llama.embedding_length', u32(cfg.hidden_size)],
    ['llama.block_count', u32(cfg.num_hidden_layers)],
    ['llama.feed_forward_length', u32(cfg.intermediate_size)],
    ['llama.rope.dimension_count', u32(cfg.head_dim)],
    ['llama.rope.freq_base', f32(cfg.rope_theta)],
    ['llama.attention.head_count', u32(cfg.num_attention_heads)],
    ['llama.attention.head_count_kv', u32(cfg.num_key_value_heads)],
    ['llama.attention.layer_norm_rms_epsilon', f32(cfg.norm_eps)],
    ['llama.vocab_size', u32(cfg.vocab_size)],
  ]);
  if (cfg.head_dim * cfg.num_attention_heads !== cfg.hidden_size) {
    m.set('llama.attention.key_length', u32(cfg.head_dim));
    m.set('llama.attention.value_length', u32(cfg.head_dim));
  }
  if (cfg.rope_scaling?.rope_type === 'linear') {
    m.set('llama.rope.scaling.type', { type: GGUFValueType.STRING, value: 'linear' });
    m.set('llama.rope.scaling.factor', f32(cfg.rope_scaling.factor));
  }
  if (cfg.bos_token_id !== null) m.set('tokenizer.ggml.bos_token_id', u32(cfg.bos_token_id));
  const eos = Array.isArray(cfg.eos_token_id) ? cfg.eos_token_id[0] : cfg.eos_token_id;
  if (eos !== null && eos !== undefined) m.set('tokenizer.ggml.eos_token_id', u32(eos));
  return m;
}

interface TensorOut {
  name: string;
  dims: number[];
  type: GGMLType;
  /** The values in the file's order (called once, when the tensor is written). */
  values(): Float32Array;
}

/** The ggml type of a parameter: vectors F32; matrices the file's type (block types need rows of whole 32-blocks, else F16). */
function typeFor(shape: readonly number[], type: GGUFWeightType): GGMLType {
  if (shape.length === 1) return GGMLType.F32;
  if (!type.startsWith('q')) return TYPE_OF[type];
  return shape[shape.length - 1]! % 32 === 0 ? TYPE_OF[type] : GGMLType.F16;
}

/** Writes a GGUF file atomically (a temporary sibling renamed over `path`), one tensor converted at a time. */
async function writeGGUFFile(path: string, metadata: Map<string, GGUFValue>, tensors: TensorOut[]): Promise<void> {
  const { header, offsets } = serializeGGUFHeader(metadata, tensors);
  const tmp = tempSibling(path);
  const fh = await open(tmp, 'wx');
  try {
    await fh.write(header, 0, header.length, 0);
    for (let i = 0; i < tensors.length; i++) {
      const bytes = encodeGGML(tensors[i]!.type, tensors[i]!.values());
      await fh.write(bytes, 0, bytes.length, header.length + offsets[i]!);
    }
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
}

/** Extra metadata: the tokenizer's (tokenizerMetadata), then opts.metadata. */
function withExtras(m: Map<string, GGUFValue>, opts: { metadata?: Map<string, GGUFValue>; tokenizer?: Tokenizer | null }): Map<string, GGUFValue> {
  for (const [k, v] of (opts.tokenizer ? tokenizerMetadata(opts.tokenizer) : null) ?? []) m.set(k, v);
  for (const [k, v] of opts.metadata ?? []) m.set(k, v);
  return m;
}

export interface SaveGGUFOptions {
  type?: GGUFWeightType;
  name?: string;
  metadata?: Map<string, GGUFValue>;
  tokenizer?: Tokenizer | null;
}

/**
 * Writes a model as GGUF: a llama-architecture DecoderLM (q and k rows permuted to llama.cpp's
 * interleaved rotary pairs) or a GPT-2-shaped GPT (llama.cpp's gpt2 architecture).
 */
export async function saveGGUF(model: DecoderLM | GPT, path: string, opts: SaveGGUFOptions = {}): Promise<void> {
  const type = opts.type ?? 'f16';
  if (model instanceof GPT) return saveGPT2GGUF(model, path, type, opts);
  const cfg = model.config;
  checkExportable(cfg);
  const tensors: TensorOut[] = [];
  for (const [hfName, p] of floatStateDict(model)) {
    const name = ggufName(hfName);
    const heads = /\.attn_q\.weight$/.test(name) ? cfg.num_attention_heads : /\.attn_k\.weight$/.test(name) ? cfg.num_key_value_heads : 0;
    tensors.push({
      name, dims: [...p.shape].reverse(), type: typeFor(p.shape, type),
      values: () => (heads ? permuteHeads(Float32Array.from(p.data()), heads, cfg.hidden_size, false) : Float32Array.from(p.data())),
    });
  }
  await writeGGUFFile(path, withExtras(metadataOf(cfg, type, opts.name ?? 'attn'), opts), tensors);
}

/** The DecoderConfig of a llama GGUF's metadata. */
export function decoderConfigFromGGUF(meta: Map<string, GGUFValue>, file: string, vocabFromEmbedding: number): DecoderConfig {
  const arch = meta.get('general.architecture')?.value;
  if (arch !== 'llama') throw new GGUFError(file, `architecture '${String(arch)}' is not supported (llama, gpt2)`);
  const num = (k: string, d?: number): number => {
    const v = meta.get(k)?.value;
    if (typeof v === 'number') return v;
    if (d !== undefined) return d;
    throw new GGUFError(file, `metadata '${k}' is missing`);
  };
  const C = num('llama.embedding_length');
  const H = num('llama.attention.head_count');
  const scalingType = meta.get('llama.rope.scaling.type')?.value;
  try {
    return decoderConfigFromHF({
      model_type: 'llama', vocab_size: num('llama.vocab_size', vocabFromEmbedding), hidden_size: C, intermediate_size: num('llama.feed_forward_length'),
      num_hidden_layers: num('llama.block_count'), num_attention_heads: H, num_key_value_heads: num('llama.attention.head_count_kv', H),
      head_dim: num('llama.attention.key_length', C / H), max_position_embeddings: num('llama.context_length'),
      rms_norm_eps: num('llama.attention.layer_norm_rms_epsilon', 1e-5), rope_theta: num('llama.rope.freq_base', 10000),
      rope_scaling: scalingType === 'linear' ? { rope_type: 'linear', factor: num('llama.rope.scaling.factor') } : null,
      tie_word_embeddings: false, bos_token_id: num('tokenizer.ggml.bos_token_id', -1) >= 0 ? num('tokenizer.ggml.bos_token_id') : null,
      eos_token_id: num('tokenizer.ggml.eos_token_id', -1) >= 0 ? num('tokenizer.ggml.eos_token_id') : null,
    });
  } catch (e) {
    throw new GGUFError(file, (e as Error).message);
  }
}

/** Reads a GGUF header from an open file, reading more of it until the header fits. */
async function readHeader(fh: Awaited<ReturnType<typeof open>>, path: string): Promise<GGUFHeader> {
  const size = (await fh.stat()).size;
  let prefixLen = Math.min(size, 1 << 20);
  for (;;) {
    const prefix = new Uint8Array(prefixLen);
    await fh.read(prefix, 0, prefixLen, 0);
    try {
      return parseGGUFHeader(prefix, size, path);
    } catch (e) {
      // A header longer than the prefix read: read more, up to the whole file.
      if (e instanceof GGUFError && /the header ends early/.test(e.message) && prefixLen < size) prefixLen = Math.min(size, prefixLen * 4);
      else throw e;
    }
  }
}

/**
 * Checks every tensor of the file against the model's parameters (`names`: GGUF name -> param
 * name; nothing missing, nothing unexpected, dims right), then reads them one at a time into
 * the parameters, `transform` adjusting a tensor's values (the q/k permutation).
 */
async function streamInto(fh: Awaited<ReturnType<typeof open>>, path: string, header: GGUFHeader, model: Module, names: Map<string, string>,
  transform: (ggufName: string, data: Float32Array) => Float32Array = (_, d) => d): Promise<void> {
  const params = model.stateDict();
  // Matrices born quantized (loadGGUF with quantize) are quantized one tensor at a time.
  const quantized = quantizedWeights(model);
  const shapeOf = (name: string): readonly number[] => params.get(name)?.shape ?? quantized.get(name)!.shape;
  const infos = new Map(header.tensors.map((t) => [t.name, t]));
  for (const t of header.tensors) if (!names.has(t.name)) throw new GGUFError(path, `unexpected tensor '${t.name}' (${GGML_TYPE_NAMES[t.type]} [${t.dims.join(', ')}])`);
  for (const [g, name] of names) {
    const info = infos.get(g);
    const want = [...shapeOf(name)].reverse();
    if (!info) throw new GGUFError(path, `missing tensor '${g}' ${fmt(want)}`);
    if (info.dims.length !== want.length || info.dims.some((d, i) => d !== want[i])) throw new GGUFError(path, `tensor '${g}' has dims [${info.dims.join(', ')}], the model expects [${want.join(', ')}]`);
  }
  for (const [g, name] of names) {
    const info = infos.get(g)!;
    const size = shapeOf(name).reduce((a, b) => a * b, 1);
    const bytes = new Uint8Array(ggmlBytes(info.type, size));
    await fh.read(bytes, 0, bytes.length, header.dataStart + info.offset);
    const q = quantized.get(name);
    if (q && q.format === 'int4' && info.type === GGMLType.Q4_0) {
      const rows = rowPermutation(g, q.N, q.K, transform);
      if (rows) { // Q4_0 blocks are attn's int4 groups: taken over as they are, no requantizing
        q.assign(q4_0ToInt4(bytes, q.N, q.K, (n) => rows[n]!));
        continue;
      }
    }
    const values = transform(g, decodeGGML(info.type, bytes, size));
    if (q) q.assign(quantize(values, q.N, q.K, q.format));
    else {
      const p = params.get(name)!;
      p.backend.write(p.storage, values, p.offset);
    }
  }
}

/** The rows `transform` moves tensor g's (N, K) rows to (out row -> file row), found by
 *  transforming each row's index; null when it does more than move whole rows. */
function rowPermutation(g: string, N: number, K: number, transform: (ggufName: string, data: Float32Array) => Float32Array): Int32Array | null {
  const index = new Float32Array(N * K);
  for (let n = 0; n < N; n++) index.fill(n, n * K, (n + 1) * K);
  const moved = transform(g, index);
  const rows = new Int32Array(N);
  for (let n = 0; n < N; n++) {
    const r = moved[n * K]!;
    if (!Number.isInteger(r) || r < 0 || r >= N) return null;
    for (let k = 1; k < K; k++) if (moved[n * K + k] !== r) return null;
    rows[n] = r;
  }
  return rows;
}

/**
 * Loads a GGUF file of the llama or gpt2 architecture (eval mode), one tensor at a time, with
 * the tokenizer it embeds. Nothing is kept when a check fails.
 */
export async function loadGGUF(path: string, opts: { backend?: Backend; dtype?: DType; quantize?: QuantizeSpec } = {}): Promise<{ model: DecoderLM | GPT; metadata: Map<string, GGUFValue>; tokenizer: HfTokenizer | null }> {
  const fh = await open(path, 'r');
  try {
    const header = await readHeader(fh, path);
    const arch = header.metadata.get('general.architecture')?.value;
    const infos = new Map(header.tensors.map((t) => [t.name, t]));
    const embed = infos.get('token_embd.weight');
    if (!embed) throw new GGUFError(path, "no 'token_embd.weight' tensor");
    const tied = !infos.has('output.weight');
    let model: DecoderLM | GPT;
    let names: Map<string, string>;
    let transform: ((g: string, d: Float32Array) => Float32Array) | undefined;
    // With opts.quantize the matrices are born quantized: no float copy of the model exists.
    const spec = opts.quantize;
    const build = <M extends Module>(make: () => M): M => {
      if (!spec) return make();
      const m = buildQuantized({ format: spec.format, embeddings: true }, make);
      settleQuantized(m, spec);
      return m;
    };
    const keysOf = (m: Module): string[] => [...m.stateDict().keys(), ...quantizedWeights(m).keys()];
    if (arch === 'gpt2') {
      model = build(() => new GPT(gpt2ConfigFromGGUF(header.metadata, path, embed.dims[1]!, tied), { backend: opts.backend, dtype: opts.dtype, init: false }));
      names = new Map(keysOf(model).map((n) => [gpt2GGUFName(n), n]));
    } else {
      const cfg = decoderConfigFromGGUF(header.metadata, path, embed.dims[1]!);
      const dm = build(() => new DecoderLM({ ...cfg, tie_word_embeddings: tied }, { backend: opts.backend, dtype: opts.dtype, init: false }));
      model = dm;
      names = new Map(keysOf(dm).map((n) => [ggufName(n), n]));
      transform = (g, d) => (/\.attn_q\.weight$/.test(g) ? permuteHeads(d, cfg.num_attention_heads, cfg.hidden_size, true)
        : /\.attn_k\.weight$/.test(g) ? permuteHeads(d, cfg.num_key_value_heads, cfg.hidden_size, true) : d);
    }
    try {
      await streamInto(fh, path, header, model, names, transform);
    } catch (e) {
      model.dispose();
      throw e;
    }
    return { model: model.eval(), metadata: header.metadata, tokenizer: tokenizerFromGGUF(header.metadata) };
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------- GPT-2

/** attn GPT parameter name -> llama.cpp's gpt2 tensor name. */
function gpt2GGUFName(name: string): string {
  const fixed: Record<string, string> = {
    'transformer.wte.weight': 'token_embd.weight', 'transformer.wpe.weight': 'position_embd.weight', 'transformer.ln_f.weight': 'output_norm.weight',
    'transformer.ln_f.bias': 'output_norm.bias', 'lm_head.weight': 'output.weight',
  };
  if (fixed[name]) return fixed[name]!;
  const m = /^transformer\.h\.(\d+)\.(ln_1|attn\.c_attn|attn\.c_proj|ln_2|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$/.exec(name);
  const parts: Record<string, string> = { ln_1: 'attn_norm', 'attn.c_attn': 'attn_qkv', 'attn.c_proj': 'attn_output', ln_2: 'ffn_norm', 'mlp.c_fc': 'ffn_up', 'mlp.c_proj': 'ffn_down' };
  if (m) return `blk.${m[1]}.${parts[m[2]!]}.${m[3]}`;
  throw new Error(`GGUF: parameter '${name}' has no llama.cpp gpt2 name`);
}

async function saveGPT2GGUF(model: GPT, path: string, type: GGUFWeightType, opts: SaveGGUFOptions): Promise<void> {
  const c = model.config;
  try {
    gpt2ConfigToHF(c); // refuses what GPT-2's architecture cannot hold
  } catch (e) {
    throw new Error(`GGUF export: ${(e as Error).message}`);
  }
  const u32 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT32, value });
  const m = new Map<string, GGUFValue>([
    ['general.architecture', { type: GGUFValueType.STRING, value: 'gpt2' }],
    ['general.name', { type: GGUFValueType.STRING, value: opts.name ?? 'attn' }],
    ['general.file_type', u32(FILE_TYPE[type])],
    ['general.alignment', u32(32)],
    ['gpt2.context_length', u32(c.block_size)],
    ['gpt2.embedding_length', u32(c.n_embd)],
    ['gpt2.feed_forward_length', u32(4 * c.n_embd)],
    ['gpt2.block_count', u32(c.n_layer)],
    ['gpt2.attention.head_count', u32(c.n_head)],
    ['gpt2.attention.layer_norm_epsilon', { type: GGUFValueType.FLOAT32, value: c.layer_norm_epsilon }],
  ]);
  const tensors: TensorOut[] = [...floatStateDict(model)].map(([n, p]) => ({ name: gpt2GGUFName(n), dims: [...p.shape].reverse(), type: typeFor(p.shape, type), values: () => Float32Array.from(p.data()) }));
  await writeGGUFFile(path, withExtras(m, opts), tensors);
}

/** The GPTConfig of a gpt2 GGUF's metadata. */
function gpt2ConfigFromGGUF(meta: Map<string, GGUFValue>, file: string, vocab: number, tied: boolean) {
  const num = (k: string, d?: number): number => {
    const v = meta.get(k)?.value;
    if (typeof v === 'number') return v;
    if (d !== undefined) return d;
    throw new GGUFError(file, `metadata '${k}' is missing`);
  };
  const C = num('gpt2.embedding_length');
  if (num('gpt2.feed_forward_length', 4 * C) !== 4 * C) throw new GGUFError(file, `gpt2.feed_forward_length ${num('gpt2.feed_forward_length')} is not 4 x embedding_length (attn's GPT-2 MLP)`);
  try {
    return gptConfig({
      n_layer: num('gpt2.block_count'), n_head: num('gpt2.attention.head_count'), n_embd: C, block_size: num('gpt2.context_length'), vocab_size: vocab,
      dropout: 0, bias: true, tie_embeddings: tied, pos_encoding: 'learned', norm_placement: 'pre', norm: 'layernorm', activation: 'gelu',
      layer_norm_epsilon: num('gpt2.attention.layer_norm_epsilon', 1e-5),
    });
  } catch (e) {
    throw new GGUFError(file, (e as Error).message);
  }
}

// ---------------------------------------------------------------- the tokenizer

/** Pre-tokenizer regexes of the byte-level BPE families, by llama.cpp's tokenizer.ggml.pre name. */
const PRE_REGEX: Record<string, string> = {
  default: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
  'llama-bpe': "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

interface TokenizerJsonLike {
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[]; byte_fallback?: boolean; unk_token?: string };
  added_tokens?: { id: number; content: string; special?: boolean }[];
  pre_tokenizer?: unknown;
  decoder?: unknown;
}

/**
 * The tokenizer as GGUF metadata: llama.cpp's tokenizer.ggml.* keys (model 'gpt2' for byte-level
 * BPE, 'llama' for SentencePiece-style BPE with byte fallback; tokens by id, token types, merges,
 * scores from the merge ranks, special ids), tokenizer.chat_template, and the whole
 * tokenizer.json as tokenizer.huggingface.json up to 9.5 MB (which loadGGUF prefers). Null for a
 * tokenizer without a BPE tokenizer.json (attn's character tokenizer).
 */
export function tokenizerMetadata(tok: Tokenizer): Map<string, GGUFValue> | null {
  const files = tok.toFiles();
  const text = files['tokenizer.json'];
  if (text === undefined) return null;
  const j = JSON.parse(text) as TokenizerJsonLike;
  if (j.model?.type !== undefined && j.model.type !== 'BPE') return null;
  const vocab = j.model?.vocab ?? {};
  const added = j.added_tokens ?? [];
  const V = tok.vocabSize;
  const tokens: string[] = Array.from({ length: V }, (_, i) => `[PAD${i}]`);
  const types: number[] = new Array<number>(V).fill(5); // unused until filled
  const byteLevel = JSON.stringify(j.pre_tokenizer ?? null).includes('ByteLevel') || JSON.stringify(j.decoder ?? null).includes('ByteLevel');
  for (const [t, id] of Object.entries(vocab)) {
    if (id < V) {
      tokens[id] = t;
      types[id] = !byteLevel && /^<0x[0-9A-F]{2}>$/.test(t) ? 6 : 1;
    }
  }
  for (const a of added) if (a.id < V) { tokens[a.id] = a.content; types[a.id] = a.special ? 3 : 4; }
  if (j.model?.unk_token !== undefined && vocab[j.model.unk_token] !== undefined) types[vocab[j.model.unk_token]!] = 2;
  const merges = (j.model?.merges ?? []).map((m) => (typeof m === 'string' ? m : m.join(' ')));
  const str = (value: string): GGUFValue => ({ type: GGUFValueType.STRING, value });
  const u32 = (value: number): GGUFValue => ({ type: GGUFValueType.UINT32, value });
  const m = new Map<string, GGUFValue>([
    ['tokenizer.ggml.model', str(byteLevel ? 'gpt2' : 'llama')],
    ['tokenizer.ggml.tokens', { type: GGUFValueType.ARRAY, itemType: GGUFValueType.STRING, value: tokens }],
    ['tokenizer.ggml.token_type', { type: GGUFValueType.ARRAY, itemType: GGUFValueType.INT32, value: types }],
  ]);
  if (byteLevel) {
    const pre = JSON.stringify(j.pre_tokenizer ?? null);
    m.set('tokenizer.ggml.pre', str(pre.includes('\\\\p{N}{1,3}') ? 'llama-bpe' : pre.includes('|\\\\p{N}|') ? 'qwen2' : 'default'));
    m.set('tokenizer.ggml.merges', { type: GGUFValueType.ARRAY, itemType: GGUFValueType.STRING, value: merges });
  } else {
    // SentencePiece-style: a merged token scores by its merge's rank (earlier merges score higher).
    const scores = new Array<number>(V).fill(0);
    merges.forEach((mg, r) => {
      const id = vocab[mg.replace(' ', '')];
      if (id !== undefined && scores[id] === 0) scores[id] = -(r + 1);
    });
    m.set('tokenizer.ggml.scores', { type: GGUFValueType.ARRAY, itemType: GGUFValueType.FLOAT32, value: scores });
  }
  const hf = tok as Tokenizer & { bosTokenId?: number; eosTokenId?: number; chatTemplate?: string };
  if (hf.bosTokenId !== undefined) m.set('tokenizer.ggml.bos_token_id', u32(hf.bosTokenId));
  const eos = hf.eosTokenId ?? tok.eotToken;
  if (eos !== undefined) m.set('tokenizer.ggml.eos_token_id', u32(eos));
  if (j.model?.unk_token !== undefined && vocab[j.model.unk_token] !== undefined) m.set('tokenizer.ggml.unknown_token_id', u32(vocab[j.model.unk_token]!));
  if (hf.chatTemplate) m.set('tokenizer.chat_template', str(hf.chatTemplate));
  // Readers cap metadata strings (@huggingface/gguf at 10 MB; Qwen's tokenizer.json is 11 MB):
  // a larger file is left out, and a byte-level BPE is rebuilt from the ggml keys (exactly, as tested).
  if (new TextEncoder().encode(text).length <= 9_500_000) m.set('tokenizer.huggingface.json', str(text));
  return m;
}

/**
 * The tokenizer a GGUF file embeds: tokenizer.huggingface.json when present (exact), else a
 * byte-level BPE rebuilt from tokenizer.ggml.* ('gpt2' model: tokens, merges, the pre-tokenizer
 * regex of tokenizer.ggml.pre), else null.
 */
export function tokenizerFromGGUF(meta: Map<string, GGUFValue>): HfTokenizer | null {
  const s = (k: string): string | undefined => (typeof meta.get(k)?.value === 'string' ? (meta.get(k)!.value as string) : undefined);
  const n = (k: string): number | undefined => (typeof meta.get(k)?.value === 'number' ? (meta.get(k)!.value as number) : undefined);
  const arr = (k: string): (string | number | boolean)[] | undefined => { const v = meta.get(k); return v?.type === GGUFValueType.ARRAY ? v.value : undefined; };
  const tokens = arr('tokenizer.ggml.tokens') as string[] | undefined;
  const nameOf = (k: string): string | undefined => { const id = n(k); return id !== undefined && tokens ? tokens[id] : undefined; };
  const config = { chat_template: s('tokenizer.chat_template'), bos_token: nameOf('tokenizer.ggml.bos_token_id') ?? null, eos_token: nameOf('tokenizer.ggml.eos_token_id') ?? null };
  const json = s('tokenizer.huggingface.json');
  if (json !== undefined) return new HfTokenizer(json, config);
  if (s('tokenizer.ggml.model') === 'llama' && tokens) return spmTokenizer(tokens, (arr('tokenizer.ggml.scores') ?? []) as number[], (arr('tokenizer.ggml.token_type') ?? []) as number[], n('tokenizer.ggml.bos_token_id'), n('tokenizer.ggml.unknown_token_id'), config);
  if (s('tokenizer.ggml.model') !== 'gpt2' || !tokens) return null;
  const types = (arr('tokenizer.ggml.token_type') ?? []) as number[];
  const vocab: Record<string, number> = {};
  const added: object[] = [];
  tokens.forEach((t, i) => {
    if (types[i] === 3 || types[i] === 4) added.push({ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: types[i] === 4, special: types[i] === 3 });
    vocab[t] = i;
  });
  const regex = PRE_REGEX[s('tokenizer.ggml.pre') ?? 'default'] ?? PRE_REGEX['default']!;
  return new HfTokenizer({
    version: '1.0', added_tokens: added, normalizer: null,
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
    post_processor: null, decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', vocab, merges: arr('tokenizer.ggml.merges') as string[], ignore_merges: s('tokenizer.ggml.pre') === 'llama-bpe' },
  } as never, config);
}

/**
 * A SentencePiece-style BPE (Llama 2's layout: ▁ for spaces, byte fallback) from llama.cpp's
 * 'llama' vocabulary: merges are every split of a scored token into two tokens, ordered by the
 * token's score (highest first), then by the parts' ids, as Hugging Face's converter orders them.
 */
function spmTokenizer(tokens: string[], scores: number[], types: number[], bos: number | undefined, unk: number | undefined, config: HfTokenizerConfigJson): HfTokenizer {
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => (vocab[t] = i));
  const merged: [number, number, number][] = []; // [token id, left id, right id]
  tokens.forEach((t, id) => {
    if (types[id] !== 1 && types[id] !== undefined) return; // normal tokens only
    const chars = [...t];
    for (let k = 1; k < chars.length; k++) {
      const l = vocab[chars.slice(0, k).join('')];
      const r = vocab[chars.slice(k).join('')];
      if (l !== undefined && r !== undefined) merged.push([id, l, r]);
    }
  });
  merged.sort((a, b) => (scores[b[0]] ?? 0) - (scores[a[0]] ?? 0) || a[1] - b[1] || a[2] - b[2]);
  const special = tokens.flatMap((t, i) => (types[i] === 3 || types[i] === 2 ? [{ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }] : []));
  return new HfTokenizer({
    version: '1.0', added_tokens: special,
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: bos === undefined ? null : { type: 'TemplateProcessing', single: [{ SpecialToken: { id: tokens[bos]!, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [], special_tokens: { [tokens[bos]!]: { id: tokens[bos]!, ids: [bos], tokens: [tokens[bos]!] } } },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', vocab, merges: merged.map(([, l, r]) => `${tokens[l]} ${tokens[r]}`), byte_fallback: true, fuse_unk: true, unk_token: unk !== undefined ? tokens[unk] : null },
  } as never, config);
}
