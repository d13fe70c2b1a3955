// Loading a GPT checkpoint directory over HTTP (fetch), for browsers and anywhere without a
// file system: config.json, model.safetensors and the tokenizer files of a directory that
// `attn train` wrote (or a Hugging Face GPT-2 one), parsed by the same pure code the Node
// loader uses.
import type { Backend } from '../backend/backend.js';
import { parseSafetensors, type LoadedTensor } from '../io/safetensors.js';
import type { StateValue } from '../nn/module.js';
import type { DType } from '../tensor/index.js';
import { BpeTokenizer } from '../tokenizers/bpe.js';
import { CHAR_TOKENIZER_FILE, CharTokenizer } from '../tokenizers/char.js';
import type { Tokenizer } from '../tokenizers/types.js';
import { canonicalCheckpointTensors, checkpointTensorsToState, gptConfigFromJson, nonFloatTensorProblem } from './checkpoint-format.js';
import { GPT, type GPTConfig } from './gpt.js';

export { gptConfigFromJson } from './checkpoint-format.js';

export interface LoadFromUrlOptions {
  backend?: Backend;
  dtype?: DType;
  /** Replaces globalThis.fetch (tests, custom headers). */
  fetch?: (url: string) => Promise<Response>;
  /** Called with bytes received so far and the total when known (model.safetensors only). */
  onProgress?: (loaded: number, total: number | null) => void;
}

export interface LoadedGPTFromUrl {
  model: GPT;
  config: GPTConfig;
  /** The directory's tokenizer, or null when it has none. */
  tokenizer: Tokenizer | null;
}

const fileUrl = (base: string, name: string): string => {
  const dir = base.endsWith('/') ? base : `${base}/`;
  return new URL(name, new URL(dir, globalThis.location?.href ?? undefined)).href;
};

/** Fetches a file, or null on 404 (an optional file). */
async function fetchOptional(opts: LoadFromUrlOptions, url: string): Promise<Response | null> {
  const res = await (opts.fetch ?? globalThis.fetch)(url);
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
  return res;
}

async function fetchRequired(opts: LoadFromUrlOptions, url: string): Promise<Response> {
  const res = await fetchOptional(opts, url);
  if (!res) throw new Error(`${url}: not found (HTTP 404)`);
  return res;
}

async function readBytes(res: Response, onProgress?: LoadFromUrlOptions['onProgress']): Promise<Uint8Array> {
  const len = Number(res.headers.get('content-length'));
  const total = Number.isFinite(len) && len > 0 ? len : null;
  if (!onProgress || !res.body) return new Uint8Array(await res.arrayBuffer());
  const parts: Uint8Array[] = [];
  let loaded = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.byteLength;
    onProgress(loaded, total);
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * A checkpoint's tensors as a GPT state dict: the layout `attn train` writes (Conv1D weights
 * stored [in, out], SwiGLU's mlp.c_fc2 too) or a Hugging Face GPT-2 one.
 */
export function gptStateFromCheckpoint(tensors: ReadonlyMap<string, LoadedTensor>, config: GPTConfig): Map<string, StateValue> {
  const canonical = canonicalCheckpointTensors(tensors, config.tie_embeddings);
  const problem = nonFloatTensorProblem(canonical);
  if (problem !== null) throw new Error(problem);
  return checkpointTensorsToState(canonical);
}

/** The tokenizer of a checkpoint directory at `base`, looked for as loadTokenizer does on disk. */
export async function loadTokenizerFromUrl(base: string, opts: LoadFromUrlOptions = {}): Promise<Tokenizer | null> {
  const char = await fetchOptional(opts, fileUrl(base, CHAR_TOKENIZER_FILE));
  if (char) return CharTokenizer.fromJSON(await char.text());
  const hf = await fetchOptional(opts, fileUrl(base, 'tokenizer.json'));
  if (hf) return BpeTokenizer.fromHuggingFaceJson(await hf.text());
  const [enc, bpe] = await Promise.all([fetchOptional(opts, fileUrl(base, 'encoder.json')), fetchOptional(opts, fileUrl(base, 'vocab.bpe'))]);
  if (enc && bpe) return BpeTokenizer.fromGpt2Files(await enc.text(), await bpe.text());
  return null;
}

/**
 * Loads the checkpoint directory at URL `base` (config.json + model.safetensors + tokenizer
 * files) into a GPT in eval mode, on opts.backend (default: the current default backend).
 */
export async function loadGPTFromUrl(base: string, opts: LoadFromUrlOptions = {}): Promise<LoadedGPTFromUrl> {
  const configUrl = fileUrl(base, 'config.json');
  const modelUrl = fileUrl(base, 'model.safetensors');
  const configJson = (await (await fetchRequired(opts, configUrl)).json()) as Record<string, unknown>;
  const config = gptConfigFromJson(configJson);
  const [bytes, tokenizer] = await Promise.all([
    fetchRequired(opts, modelUrl).then((r) => readBytes(r, opts.onProgress)),
    loadTokenizerFromUrl(base, opts),
  ]);
  const { tensors } = parseSafetensors(bytes, modelUrl);
  const model = new GPT(config, { backend: opts.backend, dtype: opts.dtype, init: false });
  try {
    model.loadStateDict(gptStateFromCheckpoint(tensors, config));
  } catch (e) {
    model.dispose();
    throw new Error(`${modelUrl}: ${(e as Error).message}`);
  }
  return { model: model.eval(), config, tokenizer };
}
