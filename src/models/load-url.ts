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
import { GPT, gptConfig, type GPTConfig } from './gpt.js';
import { gpt2ConfigFromHF, gpt2StateFromHF } from './hf-gpt2.js';

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

/** The GPTConfig of a checkpoint's config.json: attn's own under "attn", else a Hugging Face GPT-2 config. */
export function gptConfigFromJson(json: Record<string, unknown>): GPTConfig {
  const attn = json['attn'];
  if (attn !== undefined) {
    if (attn === null || typeof attn !== 'object' || Array.isArray(attn)) throw new Error('config.json: "attn" must be an object');
    return gptConfig(attn as Partial<GPTConfig>);
  }
  return gpt2ConfigFromHF(json);
}

/**
 * A checkpoint's tensors as a GPT state dict. attn writes the GPT-2 layout (Conv1D weights
 * stored [in, out]), plus SwiGLU's second input projection mlp.c_fc2 stored the same way.
 */
export function gptStateFromCheckpoint(tensors: ReadonlyMap<string, LoadedTensor>, config: GPTConfig): Map<string, StateValue> {
  const state = gpt2StateFromHF(tensors, { tieEmbeddings: config.tie_embeddings });
  for (const [name, v] of state) {
    if (!/^transformer\.h\.\d+\.mlp\.c_fc2\.weight$/.test(name) || v.shape.length !== 2) continue;
    const [i, o] = v.shape as [number, number];
    const data = (v as { data: ArrayLike<number> }).data; // plain values: gpt2StateFromHF makes no tensors
    const t = new Float32Array(i * o);
    for (let r = 0; r < i; r++) for (let c = 0; c < o; c++) t[c * i + r] = data[r * o + c]!;
    state.set(name, { shape: [o, i], data: t });
  }
  return state;
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
