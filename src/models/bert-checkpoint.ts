// The encoder's checkpoint directory: config.json (model_type 'attn_bert', the BertConfig under
// "attn_bert", plus what the task adds), model.safetensors (LoRA adapters merged) and the tokenizer.
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError, loadCheckpoint, saveCheckpoint } from '../io/checkpoint.js';
import type { TensorEntry } from '../io/safetensors.js';
import type { Module } from '../nn/module.js';
import type { LoraHandle } from '../nn/lora.js';
import type { StateValue } from '../nn/module.js';
import { add, matmul, mul, noGrad, tidy, type Tensor } from '../tensor/index.js';
import { loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { BertModel, bertConfig, type BertConfig } from './bert.js';

export const BERT_MODEL_TYPE = 'attn_bert';

export function bertCheckpointConfig(config: BertConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { architectures: ['AttnBert'], model_type: BERT_MODEL_TYPE, attn_bert: { ...config }, ...extra };
}

/** The model's tensors for saving; with active LoRA adapters, the merged weights (model unchanged). */
export function bertStateEntries(model: Module, lora: LoraHandle | null = null): Map<string, TensorEntry> {
  const adapted = new Map<string, { A: Tensor; B: Tensor }>();
  if (lora?.isActive) for (const l of lora.layers) adapted.set(`${l.name}.weight`, { A: l.A, B: l.B });
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of model.stateDict()) {
    if (/\.lora_[AB]$/.test(name)) continue;
    const dtype = t.dtype === 'float64' ? 'F64' : 'F32';
    const ad = adapted.get(name);
    const data = ad ? noGrad(() => tidy(() => add(t, mul(matmul(ad.B, ad.A), lora!.scale)).data())) : t.data();
    out.set(name, { dtype, shape: [...t.shape], data });
  }
  return out;
}

export async function saveBert(dir: string, model: BertModel, tok: Tokenizer, extra: Record<string, unknown>, lora: LoraHandle | null = null): Promise<void> {
  await saveCheckpoint(dir, { config: bertCheckpointConfig(model.config, extra), model: bertStateEntries(model, lora), tokenizerFiles: tok.toFiles() });
}

export interface LoadedBert {
  model: BertModel;
  tokenizer: Tokenizer;
  config: BertConfig;
  json: Record<string, unknown>;
}

/** A BertModel checkpoint directory, in eval mode. Refuses other model kinds with a clear error. */
export async function loadBertCheckpoint(dir: string, opts: { backend?: Backend; override?: Partial<BertConfig>; tokenizer?: Tokenizer } = {}): Promise<LoadedBert> {
  const ckpt = await loadCheckpoint(dir);
  const path = join(ckpt.dir, 'config.json');
  if (ckpt.config['model_type'] !== BERT_MODEL_TYPE) throw new CheckpointError(path, `model_type is '${String(ckpt.config['model_type'])}', expected '${BERT_MODEL_TYPE}' (an encoder written by 'attn pretrain-mlm' or 'attn finetune')`);
  let saved: BertConfig;
  try {
    saved = bertConfig(ckpt.config['attn_bert'] as Record<string, unknown>);
  } catch (e) {
    throw new CheckpointError(path, (e as Error).message);
  }
  const config = bertConfig({ ...saved, ...opts.override });
  const model = new BertModel(config, { backend: opts.backend, init: false });
  const state = new Map<string, StateValue>();
  for (const [n, t] of ckpt.tensors) state.set(n, { shape: t.shape, data: t.data });
  const own = model.stateDict();
  // Heads the new config drops or adds are left out / keep their fresh values (filled below).
  const heads = (n: string) => (n.startsWith('mlm_head.') && !config.mlm_head) || (n.startsWith('cls_head.') && !saved.n_classes);
  for (const n of [...state.keys()]) if (!own.has(n)) state.delete(n);
  const missing = [...own.keys()].filter((n) => !state.has(n) && !n.startsWith('cls_head.') && !heads(n));
  if (missing.length) throw new CheckpointError(join(ckpt.dir, 'model.safetensors'), `missing tensors: ${missing.join(', ')}`);
  try {
    model.loadStateDict(state, { strict: false });
  } catch (e) {
    throw new CheckpointError(join(ckpt.dir, 'model.safetensors'), (e as Error).message);
  }
  const tokenizer = opts.tokenizer ?? (await loadTokenizer(ckpt.dir)); // given: already read from dir by the caller
  return { model: model.eval(), tokenizer, config, json: ckpt.config };
}
