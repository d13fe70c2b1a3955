// attn.load / attn.save: any checkpoint directory attn writes or reads, whatever the model
// family, with its tokenizer. The family comes from config.json's model_type.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError, saveCheckpoint } from '../io/checkpoint.js';
import { exists } from '../io/files.js';
import { ADAPTER_CONFIG_FILE, loadAdapters } from '../nn/lora-files.js';
import type { QuantizeSpec } from '../nn/quantized.js';
import type { DType } from '../tensor/index.js';
import { BpeTokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { BERT_MODEL_TYPE, bertCheckpointConfig, bertStateEntries, loadBertCheckpoint } from './bert-checkpoint.js';
import { BertModel } from './bert.js';
import { checkpointConfigJson, modelToCheckpointTensors } from './checkpoint-format.js';
import { DecoderLM } from './decoder.js';
import { HFBert } from './hf-bert.js';
import { loadHFBertDir, saveHFBertDir } from './hf-bert-files.js';
import { loadT5Dir, saveT5Dir } from './hf-t5-files.js';
import { T5Model } from './t5.js';
import { loadGPTCheckpoint } from './gpt-checkpoint.js';
import { GPT } from './gpt.js';
import { loadDecoderDir, saveDecoderDir } from './hf-decoder-files.js';
import { decoderFamilyOf } from './hf-decoder.js';
import { loadSeq2SeqCheckpoint, SEQ2SEQ_MODEL_TYPE, seq2seqConfigJson } from './seq2seq-checkpoint.js';
import { EncoderDecoder } from './seq2seq.js';

export type AnyModel = GPT | DecoderLM | BertModel | EncoderDecoder | HFBert | T5Model;

export interface Loaded {
  /** In eval mode. */
  model: AnyModel;
  /** 'gpt' (attn's GPT or Hugging Face GPT-2), 'decoder' (Hugging Face llama, mistral, qwen2,
   *  qwen3, phi), 'encoder' (attn's BERT-style), 'encoder-decoder' (attn's 2017 model), 'hf-bert'
   *  (Hugging Face BERT) or 't5' (Hugging Face T5). */
  kind: 'gpt' | 'decoder' | 'encoder' | 'encoder-decoder' | 'hf-bert' | 't5';
  /** The directory's tokenizer, or null when it holds none. */
  tokenizer: Tokenizer | null;
}

/** The tokenizer files of a directory, including Hugging Face GPT-2's vocab.json + merges.txt. */
async function tokenizerOf(dir: string): Promise<Tokenizer | null> {
  try {
    return await loadTokenizer(dir);
  } catch {
    const [vocab, merges] = await Promise.all(['vocab.json', 'merges.txt'].map((f) => readFile(join(dir, f), 'utf8').catch(() => undefined)));
    return vocab !== undefined && merges !== undefined ? BpeTokenizer.fromGpt2Files(vocab, merges) : null;
  }
}

/**
 * Loads a checkpoint directory: a GPT (attn's or Hugging Face GPT-2's), an encoder (attn
 * pretrain-mlm, finetune) or an encoder-decoder (translation), on the backend given or the
 * default one. Errors name the file at fault. `quantize`: the linear layers of a GPT or decoder
 * held as int8/int4 (decoders quantize while streaming; a quantized directory loads quantized
 * without it).
 */
export async function load(dir: string, opts: { backend?: Backend; dtype?: DType; quantize?: QuantizeSpec } = {}): Promise<Loaded> {
  const backend = opts.backend;
  // A PEFT adapter directory: its base model (base_model_name_or_path) with the adapters on.
  const adapterPath = join(dir, ADAPTER_CONFIG_FILE);
  if (await exists(adapterPath)) {
    const base = (JSON.parse(await readFile(adapterPath, 'utf8')) as { base_model_name_or_path?: unknown }).base_model_name_or_path;
    if (typeof base !== 'string') throw new CheckpointError(adapterPath, 'LoRA adapters without base_model_name_or_path: load the base, then loadAdapters(model, dir)');
    const r = await load(base, opts);
    await loadAdapters(r.model, dir, { dropout: 0 });
    return { ...r, tokenizer: (await tokenizerOf(dir)) ?? r.tokenizer };
  }
  const path = join(dir, 'config.json');
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new CheckpointError((e as NodeJS.ErrnoException).code === 'ENOENT' ? dir : path, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not a checkpoint directory (no config.json)' : `invalid JSON: ${(e as Error).message}`);
  }
  if (decoderFamilyOf(config) !== null) {
    const r = await loadDecoderDir(dir, { backend, dtype: opts.dtype, quantize: opts.quantize });
    return { model: r.model, kind: 'decoder', tokenizer: await tokenizerOf(dir) };
  }
  if (config['model_type'] === 'bert') {
    const r = await loadHFBertDir(dir, { backend, dtype: opts.dtype });
    return { model: r.model, kind: 'hf-bert', tokenizer: await tokenizerOf(dir) };
  }
  if (config['model_type'] === 't5') {
    const r = await loadT5Dir(dir, { backend, dtype: opts.dtype });
    return { model: r.model, kind: 't5', tokenizer: await tokenizerOf(dir) };
  }
  if (config['model_type'] === BERT_MODEL_TYPE) {
    const r = await loadBertCheckpoint(dir, { backend });
    return { model: r.model, kind: 'encoder', tokenizer: r.tokenizer };
  }
  if (config['model_type'] === SEQ2SEQ_MODEL_TYPE) {
    const r = await loadSeq2SeqCheckpoint(dir, { backend });
    return { model: r.model, kind: 'encoder-decoder', tokenizer: r.tokenizer };
  }
  const r = await loadGPTCheckpoint(dir, { backend, dtype: opts.dtype, quantize: opts.quantize });
  return { model: r.model, kind: 'gpt', tokenizer: await tokenizerOf(dir) };
}

/**
 * Saves a model (and its tokenizer) as a checkpoint directory that load() and the CLI read;
 * atomic per file. A DecoderLM is written in the Hugging Face layout (hfConfig: the config.json
 * fields to keep, e.g. the one it was loaded from).
 */
export async function save(dir: string, model: AnyModel, tokenizer?: Tokenizer | null, opts: { hfConfig?: Record<string, unknown> } = {}): Promise<void> {
  const tokenizerFiles = tokenizer ? tokenizer.toFiles() : {};
  if (model instanceof DecoderLM || model instanceof HFBert || model instanceof T5Model) {
    if (model instanceof DecoderLM) await saveDecoderDir(model, dir, { hfConfig: opts.hfConfig });
    else if (model instanceof HFBert) await saveHFBertDir(model, dir, { hfConfig: opts.hfConfig });
    else await saveT5Dir(model, dir, { hfConfig: opts.hfConfig });
    if (tokenizer) await tokenizer.save(dir);
    return;
  }
  if (model instanceof GPT) return saveCheckpoint(dir, { config: checkpointConfigJson(model.config), model: modelToCheckpointTensors(model), tokenizerFiles });
  if (model instanceof BertModel) return saveCheckpoint(dir, { config: bertCheckpointConfig(model.config), model: bertStateEntries(model), tokenizerFiles });
  if (model instanceof EncoderDecoder) return saveCheckpoint(dir, { config: seq2seqConfigJson(model.config), model: modelToCheckpointTensors(model), tokenizerFiles });
  throw new TypeError(`save: a GPT, DecoderLM, BertModel or EncoderDecoder is needed, got ${(model as object)?.constructor?.name ?? typeof model}`);
}
