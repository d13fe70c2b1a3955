// Pieces shared by the commands: backend choice, model and tokenizer loading with clear errors.
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../backend/backend.js';
import { DEVICE_NAMES, openDevice, type DeviceName } from '../backend/index.js';
import type { DecoderLM } from '../models/decoder.js';
import { loadGPTCheckpoint } from '../models/gpt-checkpoint.js';
import { GPT } from '../models/gpt.js';
import { loadDecoderDir, readHFConfig } from '../models/hf-decoder-files.js';
import { decoderFamilyOf } from '../models/hf-decoder.js';
import { ADAPTER_CONFIG_FILE, loadAdapters } from '../nn/lora-files.js';
import { quantizedWeights, type QuantizeSpec } from '../nn/quantized.js';
import { chatTemplateOf, type ChatTemplate } from '../generate/chat.js';
import { loadGpt2Tokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';

export const DEVICES = DEVICE_NAMES;

/** --device cpu|webgpu|auto|ref (default cpu) and --threads N. */
export async function backendFromFlags(f: Flags): Promise<Backend> {
  const device = f.string('device') ?? 'cpu';
  if (!(DEVICES as readonly string[]).includes(device)) throw new UsageError(`${f.command}: unknown --device '${device}' (known: ${DEVICES.join(', ')})`);
  const threads = f.number('threads', { integer: true, min: 1 });
  return openDevice(device as DeviceName, threads === undefined ? {} : { threads });
}

export async function requireDir(command: string, flag: string, path: string): Promise<void> {
  let s;
  try {
    s = await stat(path);
  } catch {
    throw new UsageError(`${command}: --${flag} ${path}: no such directory`);
  }
  if (!s.isDirectory()) throw new UsageError(`${command}: --${flag} ${path} is not a directory`);
}

export async function requireFile(command: string, flag: string, path: string): Promise<void> {
  let s;
  try {
    s = await stat(path);
  } catch {
    throw new UsageError(`${command}: --${flag} ${path}: no such file`);
  }
  if (!s.isFile()) throw new UsageError(`${command}: --${flag} ${path} is not a file`);
}

/** A causal language model the commands generate from and score with. */
export type CausalModel = GPT | DecoderLM;

/** A model directory: config.json + safetensors weights (attn checkpoints, Hugging Face GPT-2,
 *  llama, mistral, qwen2, qwen3, phi). */
export async function loadModelDir(command: string, dir: string, backend: Backend, adapter?: string, quant?: QuantizeSpec): Promise<CausalModel> {
  if (dir.endsWith('.gguf') && adapter === undefined) {
    await requireFile(command, 'model', dir);
    const { loadGGUF } = await import('../models/gguf-decoder.js');
    const r = await loadGGUF(dir, { backend, quantize: quant });
    if (r.tokenizer) ggufTokenizers.set(r.model, r.tokenizer);
    return r.model;
  }
  await requireDir(command, 'model', dir);
  // A PEFT adapter directory (attn finetune lm --lora_r): its base model with the adapters on.
  if (adapter === undefined && existsSync(join(dir, ADAPTER_CONFIG_FILE))) {
    const base = await adapterBaseOf(dir);
    if (!base) throw new UsageError(`${command}: ${dir} holds LoRA adapters without base_model_name_or_path; pass --model BASE --adapter ${dir}`);
    return loadModelDir(command, base, backend, dir, quant);
  }
  // Decoder families quantize while the weights stream in (or load an attn quantize checkpoint);
  // a GPT is built quantized and its matrices quantized from the file's host copy.
  const hfConfig = await readHFConfig(dir);
  const model = decoderFamilyOf(hfConfig) !== null ? (await loadDecoderDir(dir, { backend, quantize: quant })).model : (await loadGPTCheckpoint(dir, { backend, quantize: quant })).model;
  if (adapter !== undefined) {
    await requireDir(command, 'adapter', adapter);
    try {
      await loadAdapters(model, adapter, { dropout: 0 });
    } catch (e) {
      model.dispose();
      throw e;
    }
  }
  return model.eval();
}

/** --dtype for commands that load a model: float32 (default), float16/bfloat16 (halfWeights) or
 *  int8/int4/int4z (weight-only quantization of every Linear; --quantize_embeddings and
 *  --quantize_head add the token embedding and the LM head). */
export const LOAD_DTYPES = ['float32', 'float16', 'bfloat16', 'int8', 'int4', 'int4z'] as const;
export type LoadDType = (typeof LOAD_DTYPES)[number];

export function quantSpecFromFlags(f: Flags, dtype: LoadDType): QuantizeSpec | undefined {
  const embeddings = f.bool('quantize_embeddings');
  const head = f.bool('quantize_head');
  if (dtype !== 'int8' && dtype !== 'int4' && dtype !== 'int4z') {
    if (embeddings || head) throw new UsageError(`--quantize_embeddings and --quantize_head go with --dtype int8, int4 or int4z (not ${dtype})`);
    return undefined;
  }
  return { format: dtype, embeddings, head };
}

/** A line for stderr on what a quantized model holds. */
export function describeQuantized(model: CausalModel): string {
  const qs = quantizedWeights(model);
  if (!qs.size) return '';
  let bytes = 0;
  let floatBytes = 0;
  for (const q of qs.values()) {
    bytes += q.bytes;
    floatBytes += 4 * q.N * q.K;
  }
  const format = [...qs.values()][0]!.format;
  return `weights quantized to ${format}: ${qs.size} matrices, ${(bytes / 2 ** 20).toFixed(1)} MiB (float32: ${(floatBytes / 2 ** 20).toFixed(1)} MiB)\n`;
}

/** The tokenizers embedded in the GGUF files loadModelDir read, by model. */
const ggufTokenizers = new WeakMap<object, Tokenizer>();

/** A model's tokenizer: the one its GGUF file embeds, else the files of its directory. */
export async function tokenizerOfModel(dir: string, model: object): Promise<Tokenizer> {
  const embedded = ggufTokenizers.get(model);
  if (embedded) return embedded;
  if (dir.endsWith('.gguf')) throw new Error(`${dir} embeds no tokenizer`);
  return loadTokenizer(dir);
}

/** base_model_name_or_path of an adapter directory's adapter_config.json (null when absent). */
export async function adapterBaseOf(dir: string): Promise<string | null> {
  const path = join(dir, ADAPTER_CONFIG_FILE);
  let cfg: { base_model_name_or_path?: unknown };
  try {
    cfg = JSON.parse(await readFile(path, 'utf8')) as typeof cfg;
  } catch (e) {
    throw new UsageError(`${path}: ${(e as Error).message}`);
  }
  return typeof cfg.base_model_name_or_path === 'string' ? cfg.base_model_name_or_path : null;
}

/** The ids generation stops at: the model's eos ids (config.json), else the tokenizer's end of text. */
export function stopIdsOf(model: CausalModel, tok: Tokenizer | null): number[] {
  const ids = 'eosTokenIds' in model ? model.eosTokenIds : [];
  return ids.length ? ids : tok?.eotToken !== undefined ? [tok.eotToken] : [];
}

/** 'gpt2' for GPT-2's own tokenizer, else a directory (or file) holding tokenizer files. */
export async function tokenizerFrom(command: string, spec: string): Promise<Tokenizer> {
  if (spec === 'gpt2') return loadGpt2Tokenizer();
  try {
    await stat(spec);
  } catch {
    throw new UsageError(`${command}: tokenizer '${spec}' not found (give 'gpt2' or a directory with tokenizer files)`);
  }
  return loadTokenizer(spec);
}

/**
 * A default data path such as data/sst2/train.tsv: relative to the working directory when it
 * exists there, else the copy shipped with the package (so commands work from any directory).
 */
export function shippedData(path: string): string {
  if (!path.startsWith('data/') || existsSync(path)) return path;
  const shipped = fileURLToPath(new URL(`../../../${path}`, import.meta.url));
  return existsSync(shipped) ? shipped : path;
}

/** The chat template of a model directory (tokenizer_config.json or chat_template.jinja). */
export async function templateOf(dir: string): Promise<ChatTemplate | null> {
  const cfgPath = join(dir, 'tokenizer_config.json');
  const jinjaPath = join(dir, 'chat_template.jinja');
  const cfg = existsSync(cfgPath) ? (JSON.parse(await readFile(cfgPath, 'utf8')) as Record<string, unknown>) : {};
  const jinja = existsSync(jinjaPath) ? await readFile(jinjaPath, 'utf8') : undefined;
  return chatTemplateOf(cfg, jinja);
}

/** eos_token_id of generation_config.json (one id or several), which chat models stop at. */
export async function generationStopIds(dir: string): Promise<number[]> {
  const p = join(dir, 'generation_config.json');
  if (!existsSync(p)) return [];
  const e = (JSON.parse(await readFile(p, 'utf8')) as { eos_token_id?: unknown }).eos_token_id;
  return typeof e === 'number' ? [e] : Array.isArray(e) ? e.filter((x): x is number => typeof x === 'number') : [];
}
