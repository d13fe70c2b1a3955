// Hugging Face BERT directories: config.json <-> HFBertConfig (transformers' BertConfig
// defaults), and the weights streamed in (hf-decoder-files.ts's reader) or written back. The
// heads come from the checkpoint: cls.predictions.* gives the masked-LM head, a
// *ForSequenceClassification config (num_labels / id2label) the classifier. BertModel files
// (no `bert.` prefix) load too; BertForPreTraining's next-sentence head and the tied decoder
// copies are skipped.
import { refuseQuantized } from '../nn/quantized.js';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError } from '../io/checkpoint.js';
import { openSafetensorsFile, writeFileAtomic, writeSafetensorsFile } from '../io/files.js';
import type { TensorEntry } from '../io/safetensors.js';
import type { DType } from '../tensor/index.js';
import { HFBert, type HFBertConfig } from './hf-bert.js';
import { readHFConfig, streamWeightsInto, weightFiles } from './hf-decoder-files.js';

const ACTS: Record<string, HFBertConfig['hidden_act']> = { gelu: 'gelu', gelu_new: 'gelu_new', gelu_pytorch_tanh: 'gelu_new', relu: 'relu' };

/** HFBertConfig from config.json; `heads` says which heads the checkpoint holds. */
export function bertConfigFromHF(json: Record<string, unknown>, heads: { mlm: boolean; pooler: boolean }): HFBertConfig {
  const fail = (m: string): never => {
    throw new Error(`bertConfigFromHF: ${m}`);
  };
  if (json['model_type'] !== undefined && json['model_type'] !== 'bert') fail(`model_type is '${String(json['model_type'])}', expected 'bert'`);
  const num = (k: string, d: number): number => {
    const v = json[k] ?? d;
    return typeof v === 'number' ? v : fail(`'${k}' must be a number, got ${JSON.stringify(v)}`);
  };
  const act = String(json['hidden_act'] ?? 'gelu');
  const pet = json['position_embedding_type'] ?? 'absolute';
  if (pet !== 'absolute') fail(`position_embedding_type '${String(pet)}' is not supported (absolute)`);
  const arch = Array.isArray(json['architectures']) ? String(json['architectures'][0]) : '';
  const id2label = json['id2label'] && typeof json['id2label'] === 'object' ? Object.keys(json['id2label'] as object).length : 0;
  const labels = arch.endsWith('ForSequenceClassification') ? (typeof json['num_labels'] === 'number' ? (json['num_labels'] as number) : id2label || 2) : 0;
  return {
    vocab_size: num('vocab_size', 30522),
    hidden_size: num('hidden_size', 768),
    num_hidden_layers: num('num_hidden_layers', 12),
    num_attention_heads: num('num_attention_heads', 12),
    intermediate_size: num('intermediate_size', 3072),
    hidden_act: ACTS[act] ?? fail(`hidden_act '${act}' is not supported (gelu, gelu_new, relu)`),
    max_position_embeddings: num('max_position_embeddings', 512),
    type_vocab_size: num('type_vocab_size', 2),
    layer_norm_eps: num('layer_norm_eps', 1e-12),
    pad_token_id: num('pad_token_id', 0),
    hidden_dropout_prob: num('hidden_dropout_prob', 0.1),
    mlm_head: heads.mlm,
    pooler: heads.pooler || labels > 0,
    num_labels: labels,
  };
}

/** Tensor names of a checkpoint -> the model's (`bert.` prefix added to BertModel names; skipped: null). */
function bertName(n: string): string | null {
  if (n.startsWith('cls.seq_relationship.') || n === 'cls.predictions.decoder.weight' || n === 'cls.predictions.decoder.bias') return null;
  if (n.endsWith('.position_ids')) return null; // a buffer some transformers versions saved
  if (n.startsWith('bert.') || n.startsWith('cls.') || n.startsWith('classifier.')) return n;
  return `bert.${n}`;
}

/** Loads a Hugging Face BERT directory (BertForPreTraining / ForMaskedLM / ForSequenceClassification / BertModel), in eval mode. */
export async function loadHFBertDir(dir: string, opts: { backend?: Backend; dtype?: DType } = {}): Promise<{ model: HFBert; config: HFBertConfig; hfConfig: Record<string, unknown> }> {
  const hfConfig = await readHFConfig(dir);
  const files = await weightFiles(dir);
  const names = new Set<string>();
  for (const f of files) {
    const r = await openSafetensorsFile(f);
    for (const n of r.header.tensors.keys()) names.add(bertName(n) ?? '');
    await r.close();
  }
  let config: HFBertConfig;
  try {
    config = bertConfigFromHF(hfConfig, { mlm: names.has('cls.predictions.bias'), pooler: names.has('bert.pooler.dense.weight') });
  } catch (e) {
    throw new CheckpointError(join(dir, 'config.json'), (e as Error).message);
  }
  const model = new HFBert(config, { backend: opts.backend, dtype: opts.dtype, init: false });
  try {
    await streamWeightsInto(model, files, bertName, 'BERT model');
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model: model.eval(), config, hfConfig };
}

/** config.json for a model: `base` (the file it was loaded from) keeps the fields attn does not model. */
export function bertConfigToHF(c: HFBertConfig, base: Record<string, unknown> = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {
    ...base,
    architectures: [c.num_labels > 0 ? 'BertForSequenceClassification' : c.mlm_head ? 'BertForMaskedLM' : 'BertModel'],
    model_type: 'bert', vocab_size: c.vocab_size, hidden_size: c.hidden_size, num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads, intermediate_size: c.intermediate_size, hidden_act: c.hidden_act,
    max_position_embeddings: c.max_position_embeddings, type_vocab_size: c.type_vocab_size, layer_norm_eps: c.layer_norm_eps,
    pad_token_id: c.pad_token_id, hidden_dropout_prob: c.hidden_dropout_prob, torch_dtype: 'float32',
  };
  if (c.num_labels > 0) {
    out['num_labels'] = c.num_labels;
    const labels = Array.from({ length: c.num_labels }, (_, i) => `LABEL_${i}`);
    const kept = base['id2label'] && Object.keys(base['id2label'] as object).length === c.num_labels;
    if (!kept) Object.assign(out, { id2label: Object.fromEntries(labels.map((l, i) => [String(i), l])), label2id: Object.fromEntries(labels.map((l, i) => [l, i])) });
  }
  return out;
}

/** Writes config.json and model.safetensors in transformers' layout (BertForMaskedLM / ForSequenceClassification names). */
export async function saveHFBertDir(model: HFBert, dir: string, opts: { hfConfig?: Record<string, unknown> } = {}): Promise<void> {
  refuseQuantized(model, 'saveHFBertDir');
  const entries = new Map<string, TensorEntry>();
  for (const [name, t] of model.stateDict()) entries.set(name, { dtype: 'F32', shape: [...t.shape], data: Float32Array.from(t.data()) });
  await mkdir(dir, { recursive: true });
  await writeSafetensorsFile(join(dir, 'model.safetensors'), entries, { format: 'pt' });
  await writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(bertConfigToHF(model.config, opts.hfConfig), null, 2)}\n`);
}
