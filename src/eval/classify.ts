// Classifier evaluation: accuracy of an encoder on encoded sentences, and of a checkpoint on a TSV
// (fine-tuned, or zero-shot through a prompt and the MLM head).
import type { Backend } from '../backend/backend.js';
import { encodeSentence, promptIds, readTsv, specialIdsOf, type SpecialIds } from '../data/sentences.js';
import { CheckpointError } from '../io/checkpoint.js';
import { loadBertCheckpoint } from '../models/bert-checkpoint.js';
import { padBatch, type BertConfig, type BertModel } from '../models/bert.js';
import { HFBert } from '../models/hf-bert.js';
import type { Module } from '../nn/module.js';
import { loadHFBertDir } from '../models/hf-bert-files.js';
import { readHFConfig } from '../models/hf-decoder-files.js';
import { argmax, crossEntropy, noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import { loadTokenizer, type Tokenizer } from '../tokenizers/index.js';

/** Sequence lengths are rounded up to this on a GPU (see padRows); the CPU pays for padding. */
export function padMultiple(backend: Backend): number {
  return backend.name === 'webgpu' ? 8 : 1;
}

/** Each row's [MASK] position (the last one): where a prompt-mode model reads the classes. */
export function maskPositionsOf(rows: readonly (readonly number[])[], model: BertModel): Int32Array | undefined {
  if (!model.promptMode) return undefined;
  return Int32Array.from(rows.map((r) => r.lastIndexOf(model.config.mask_id)));
}

/** Accuracy and mean loss over encoded rows in batches sorted by length, with lossOf(batch rows'
 *  indices) giving each batch's logits and mean loss, in eval mode without gradients. */
function accuracyOver(model: Module, rows: readonly number[][], labels: readonly number[], batchSize: number,
  lossOf: (idx: number[]) => { logits: Tensor; loss: Tensor }): { accuracy: number; loss: number; n: number } {
  const wasTraining = model.training;
  model.eval();
  const order = rows.map((_, i) => i).sort((a, b) => rows[a]!.length - rows[b]!.length);
  let correct = 0;
  let lossSum = 0;
  try {
    for (let s = 0; s < order.length; s += batchSize) {
      const idx = order.slice(s, s + batchSize);
      noGrad(() => tidy(() => {
        const { logits, loss } = lossOf(idx);
        const pred = argmax(logits, -1).data();
        idx.forEach((i, k) => { if (pred[k] === labels[i]) correct++; });
        lossSum += loss.item() * idx.length;
      }));
    }
  } finally {
    model.train(wasTraining);
  }
  const n = rows.length;
  return { accuracy: n ? correct / n : NaN, loss: n ? lossSum / n : NaN, n };
}

/** Accuracy (and mean loss) of the model on encoded examples, in eval mode, batched by length. */
export function accuracyOf(model: BertModel, rows: readonly number[][], labels: readonly number[], batchSize = 64): { accuracy: number; loss: number; n: number } {
  const be = model.embed.weight.backend;
  return accuracyOver(model, rows, labels, batchSize, (idx) => {
    const ids = padBatch(idx.map((i) => rows[i]!), model.config.pad_id, be, padMultiple(be));
    const y = tensor(Int32Array.from(idx.map((i) => labels[i]!)), { backend: be, dtype: 'int32', shape: [idx.length] });
    return model.classifyLoss(ids, y, maskPositionsOf(idx.map((i) => rows[i]!), model));
  });
}

/** Accuracy of a fine-tuned checkpoint on a sentence/label TSV. */
export async function evaluateClassifier(modelDir: string, tsvPath: string, opts: { backend?: Backend; prompt?: { template: string; verbalizers: string } } = {}): Promise<{ accuracy: number; n: number }> {
  if (!opts.prompt && (await readHFConfig(modelDir).catch(() => ({} as Record<string, unknown>)))['model_type'] === 'bert') return evaluateHFBert(modelDir, tsvPath, opts.backend);
  let override: Partial<BertConfig> | undefined;
  let tok: Tokenizer | undefined;
  if (opts.prompt) {
    // Zero-shot: the checkpoint's MLM head read at the prompt's [MASK], no training.
    tok = await loadTokenizer(modelDir);
    const p = promptIds(tok, opts.prompt.template, opts.prompt.verbalizers, specialIdsOf(tok).mask_id);
    override = { mlm_head: true, n_classes: p.verbalizers.length, prompt_suffix: p.suffix, verbalizers: p.verbalizers };
  }
  const { model, tokenizer, config } = await loadBertCheckpoint(modelDir, { backend: opts.backend, override, tokenizer: tok });
  try {
    if (!model.cls_head && !model.promptMode) throw new CheckpointError(modelDir, 'the model has no classification head (a pre-trained MLM checkpoint? fine-tune it first)');
    const data = await readTsv(tsvPath);
    const bad = data.find((e) => e.label >= config.n_classes);
    if (bad) throw new Error(`${tsvPath}: label ${bad.label} is outside the model's ${config.n_classes} classes`);
    const sp: SpecialIds = { pad_id: config.pad_id, cls_id: config.cls_id, sep_id: config.sep_id, mask_id: config.mask_id };
    const rows = data.map((e) => encodeSentence(tokenizer, e.sentence, sp, config.max_len, config.prompt_suffix));
    const r = accuracyOf(model, rows, data.map((e) => e.label));
    return { accuracy: r.accuracy, n: r.n };
  } finally {
    model.dispose();
  }
}

// ---------------------------------------------------------------- Hugging Face BERT

/** A sentence as a Hugging Face BERT reads it: its tokenizer's ids ([CLS] … [SEP] from the
 *  post-processor), cut to maxLen keeping the final [SEP]. */
export function encodeForHFBert(tok: Tokenizer, sentence: string, maxLen: number): number[] {
  const ids = tok.encode(sentence);
  return ids.length <= maxLen ? ids : [...ids.slice(0, maxLen - 1), ids[ids.length - 1]!];
}

/** Rows padded to the longest with pad, and the attention mask (1 real, 0 padding), (B, T) int32 each. */
export function hfBertBatch(rows: readonly (readonly number[])[], pad: number, backend: Backend): { ids: Tensor; mask: Tensor } {
  const T = Math.max(...rows.map((r) => r.length));
  const ids = new Int32Array(rows.length * T).fill(pad);
  const mask = new Int32Array(rows.length * T);
  rows.forEach((r, b) => r.forEach((id, t) => { ids[b * T + t] = id; mask[b * T + t] = 1; }));
  return { ids: tensor(ids, { backend, dtype: 'int32', shape: [rows.length, T] }), mask: tensor(mask, { backend, dtype: 'int32', shape: [rows.length, T] }) };
}

/** Mean cross-entropy of a Hugging Face BERT classifier on a batch of encoded rows. */
export function hfBertClassifyLoss(model: HFBert, rows: readonly (readonly number[])[], labels: readonly number[]): { logits: Tensor; loss: Tensor } {
  const be = model.bert.embeddings.word_embeddings.weight.backend;
  const { ids, mask } = hfBertBatch(rows, model.config.pad_token_id, be);
  const logits = model.classifyLogits(model.encode(ids, mask)); // (B, classes)
  return { logits, loss: crossEntropy(logits, tensor(Int32Array.from(labels), { backend: be, dtype: 'int32', shape: [labels.length] })) };
}

/** Accuracy and mean loss of a Hugging Face BERT classifier, in eval mode, batched by length. */
export function hfBertAccuracy(model: HFBert, rows: readonly number[][], labels: readonly number[], batchSize = 64): { accuracy: number; loss: number; n: number } {
  return accuracyOver(model, rows, labels, batchSize, (idx) => hfBertClassifyLoss(model, idx.map((i) => rows[i]!), idx.map((i) => labels[i]!)));
}

async function evaluateHFBert(modelDir: string, tsvPath: string, backend: Backend | undefined): Promise<{ accuracy: number; n: number }> {
  const { model } = await loadHFBertDir(modelDir, { backend });
  try {
    if (!model.classifier) throw new CheckpointError(modelDir, 'the BERT model has no classification head (classifier): fine-tune it first');
    const tok = await loadTokenizer(modelDir);
    const data = await readTsv(tsvPath);
    const bad = data.find((e) => e.label >= model.config.num_labels);
    if (bad) throw new Error(`${tsvPath}: label ${bad.label} is outside the model's ${model.config.num_labels} classes`);
    const rows = data.map((e) => encodeForHFBert(tok, e.sentence, model.config.max_position_embeddings));
    const r = hfBertAccuracy(model, rows, data.map((e) => e.label));
    return { accuracy: r.accuracy, n: r.n };
  } finally {
    model.dispose();
  }
}

/** p(class 1) for each sentence from an attn classifier checkpoint (eval mode, batched by length). */
export async function classifierPositiveProbs(modelDir: string, sentences: readonly string[], backend?: Backend, batchSize = 64): Promise<number[]> {
  const { model, tokenizer, config } = await loadBertCheckpoint(modelDir, { backend });
  try {
    if (!model.cls_head || config.n_classes !== 2) throw new CheckpointError(modelDir, 'needs a two-class classifier (attn finetune --task sst2)');
    const sp: SpecialIds = { pad_id: config.pad_id, cls_id: config.cls_id, sep_id: config.sep_id, mask_id: config.mask_id };
    const rows = sentences.map((s) => encodeSentence(tokenizer, s, sp, config.max_len, config.prompt_suffix));
    const be = model.embed.weight.backend;
    const out = new Array<number>(rows.length).fill(NaN);
    const order = rows.map((_, i) => i).sort((a, b) => rows[a]!.length - rows[b]!.length);
    const wasTraining = model.training;
    model.eval();
    try {
      for (let s = 0; s < order.length; s += batchSize) {
        const idx = order.slice(s, s + batchSize);
        const logits = noGrad(() => tidy(() => {
          const ids = padBatch(idx.map((i) => rows[i]!), config.pad_id, be, padMultiple(be));
          const y = tensor(new Int32Array(idx.length), { backend: be, dtype: 'int32', shape: [idx.length] });
          return model.classifyLoss(ids, y, maskPositionsOf(idx.map((i) => rows[i]!), model)).logits.keep();
        }));
        const d = logits.data();
        logits.dispose();
        idx.forEach((i, k) => {
          const a = d[2 * k]!;
          const b = d[2 * k + 1]!;
          out[i] = 1 / (1 + Math.exp(a - b));
        });
      }
    } finally {
      model.train(wasTraining);
    }
    return out;
  } finally {
    model.dispose();
  }
}
