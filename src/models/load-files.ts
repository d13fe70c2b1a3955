// A model directory given as its files' bytes (a folder or files a page was handed, or anything
// else without a file system): the families `attn logprobs` and `attn sample` load from a
// directory (src/cli/common.ts loadModelDir), decided the same way (config.json's family:
// llama / mistral / qwen2 / qwen3 / phi as a DecoderLM, else an attn or Hugging Face GPT-2
// checkpoint as a GPT) and read by the same pure pieces the Node loaders use
// (decoderConfigFromHF, gptConfigFromJson, gptStateFromCheckpoint, parseSafetensors,
// tokenizerFromHuggingFace). Float32, float16 and bfloat16 weights; a single model.safetensors
// or the shards model.safetensors.index.json lists. Quantized checkpoints are refused.
import type { Backend } from '../backend/backend.js';
import { parseSafetensors, parseSafetensorsHeader, type LoadedTensor } from '../io/safetensors.js';
import type { StateValue } from '../nn/module.js';
import { quantSpecOf } from '../nn/quantized.js';
import type { DType } from '../tensor/index.js';
import { BpeTokenizer } from '../tokenizers/bpe.js';
import { CHAR_TOKENIZER_FILE, CharTokenizer } from '../tokenizers/char.js';
import { tokenizerFromHuggingFace } from '../tokenizers/io.js';
import type { Tokenizer } from '../tokenizers/types.js';
import { DecoderLM, type DecoderConfig, type DecoderFamily } from './decoder.js';
import { GPT, type GPTConfig } from './gpt.js';
import { decoderConfigFromHF, decoderFamilyOf } from './hf-decoder.js';
import { gptConfigFromJson, gptStateFromCheckpoint } from './load-url.js';

/** A directory's files by name (the base name: a folder's paths are cut to their last part). */
export type ModelFiles = Readonly<Record<string, Uint8Array>>;

export type LoadedFromFiles =
  | { kind: 'gpt'; model: GPT; config: GPTConfig; tokenizer: Tokenizer | null; hfConfig: Record<string, unknown> }
  | { kind: DecoderFamily; model: DecoderLM; config: DecoderConfig; tokenizer: Tokenizer | null; hfConfig: Record<string, unknown> };

const fromUtf8 = new TextDecoder();
const text = (files: ModelFiles, name: string): string | undefined => (files[name] ? fromUtf8.decode(files[name]) : undefined);

function parseJson(files: ModelFiles, name: string): Record<string, unknown> {
  const s = text(files, name);
  if (s === undefined) throw new Error(`the model's files have no ${name}${name === 'config.json' ? ' (not a model directory)' : ''}`);
  try {
    const v = JSON.parse(s) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${name}: invalid JSON: ${(e as Error).message}`);
  }
}

/** The tokenizer among `files`, looked for in loadTokenizer's order (src/tokenizers/io.ts); null when none. */
export function tokenizerFromFiles(files: ModelFiles): Tokenizer | null {
  const char = text(files, CHAR_TOKENIZER_FILE);
  if (char !== undefined) return CharTokenizer.fromJSON(char);
  const hf = text(files, 'tokenizer.json');
  if (hf !== undefined) return tokenizerFromHuggingFace(hf, text(files, 'tokenizer_config.json'));
  const enc = text(files, 'encoder.json');
  const bpe = text(files, 'vocab.bpe');
  if (enc !== undefined && bpe !== undefined) return BpeTokenizer.fromGpt2Files(enc, bpe);
  return null;
}

/** The weight files' names: model.safetensors, or the shards model.safetensors.index.json lists. */
function weightFileNames(files: ModelFiles): string[] {
  if (files['model.safetensors']) return ['model.safetensors'];
  if (!files['model.safetensors.index.json']) throw new Error('the model\'s files have neither model.safetensors nor model.safetensors.index.json (only safetensors weights are read, not pytorch_model.bin)');
  const map = parseJson(files, 'model.safetensors.index.json')['weight_map'];
  if (!map || typeof map !== 'object') throw new Error('model.safetensors.index.json: no weight_map');
  const shards = [...new Set(Object.values(map as Record<string, string>))];
  for (const shard of shards) if (!files[shard]) throw new Error(`model.safetensors.index.json lists shard ${shard}, which is not among the files given`);
  return shards;
}

/**
 * Bytes the weights take once loaded in float32 (4 a value, whatever the files store), read from
 * the safetensors headers only: what a page checks against its memory before loading.
 */
export function float32WeightBytes(files: ModelFiles): number {
  let values = 0;
  for (const name of weightFileNames(files)) {
    const bytes = files[name]!;
    for (const info of parseSafetensorsHeader(bytes, bytes.length, name).tensors.values()) values += info.shape.reduce((a, b) => a * b, 1);
  }
  return 4 * values;
}

/** The weight tensors: model.safetensors, or every shard of model.safetensors.index.json. */
function weightTensors(files: ModelFiles): Map<string, LoadedTensor> {
  const out = new Map<string, LoadedTensor>();
  for (const shard of weightFileNames(files)) {
    for (const [name, t] of parseSafetensors(files[shard]!, shard).tensors) {
      if (out.has(name)) throw new Error(`tensor '${name}' appears in two shards (${shard})`);
      out.set(name, t);
    }
  }
  return out;
}

/**
 * Loads the model directory held in `files` (config.json, the weights, the tokenizer files) in
 * eval mode on opts.backend, as loadModelDir does from a directory.
 */
export function loadModelFromFiles(files: ModelFiles, opts: { backend?: Backend; dtype?: DType } = {}): LoadedFromFiles {
  const hfConfig = parseJson(files, 'config.json');
  let quantized: boolean;
  try {
    quantized = quantSpecOf(hfConfig) !== null;
  } catch (e) {
    throw new Error(`config.json: ${(e as Error).message}`);
  }
  if (quantized) throw new Error('config.json: a quantized checkpoint (attn quantize); the page loads float32, float16 or bfloat16 weights');
  const tokenizer = tokenizerFromFiles(files);
  const family = decoderFamilyOf(hfConfig);
  const tensors = weightTensors(files);
  if (family !== null) {
    let config: DecoderConfig;
    try {
      config = decoderConfigFromHF(hfConfig);
    } catch (e) {
      throw new Error(`config.json: ${(e as Error).message}`);
    }
    const state = new Map<string, StateValue>();
    // transformers writes lm_head.weight even when tied; it is the embedding's copy (as loadDecoderDir skips it).
    for (const [name, t] of tensors) if (!(config.tie_word_embeddings && name === 'lm_head.weight')) state.set(name, { shape: t.shape, data: t.data });
    const model = new DecoderLM(config, { backend: opts.backend, dtype: opts.dtype, init: false });
    try {
      model.loadStateDict(state);
    } catch (e) {
      model.dispose();
      throw new Error(`model.safetensors (${config.model_type}): ${(e as Error).message}`);
    }
    return { kind: family, model: model.eval(), config, tokenizer, hfConfig };
  }
  let config: GPTConfig;
  try {
    config = gptConfigFromJson(hfConfig);
  } catch (e) {
    throw new Error(`config.json: ${(e as Error).message}`);
  }
  const model = new GPT(config, { backend: opts.backend, dtype: opts.dtype, init: false });
  try {
    model.loadStateDict(gptStateFromCheckpoint(tensors, config));
  } catch (e) {
    model.dispose();
    throw new Error(`model.safetensors: ${(e as Error).message}`);
  }
  return { kind: 'gpt', model: model.eval(), config, tokenizer, hfConfig };
}
