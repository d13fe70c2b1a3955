// Sentence classification (SST-2 style): an encoder with a classification head, or prompt-based
// through the MLM head's scores of one word per class; from scratch or from a pre-trained
// checkpoint, full or LoRA (merged when saved), on a seeded fraction of the labels. OUT/best is
// the best dev accuracy. The loop (src/train/loop.ts) does the rest.
import { readFile } from 'node:fs/promises';
import { augmentCounterfactual, parseWordPairs } from '../data/counterfactual.js';
import { labelSubset, encodeSentence, type LabeledExample, promptIds, PROMPT_MASK, readTsv, specialIdsOf, trainSentenceTokenizer, type SpecialIds } from '../data/sentences.js';
import { accuracyOf, encodeForHFBert, hfBertAccuracy, hfBertClassifyLoss, maskPositionsOf, padMultiple } from '../eval/classify.js';
import { CheckpointError } from '../io/checkpoint.js';
import { HFBert } from '../models/hf-bert.js';
import { bertConfigToHF, loadHFBertDir } from '../models/hf-bert-files.js';
import { readHFConfig } from '../models/hf-decoder-files.js';
import { BERT_MODEL_TYPE, bertCheckpointConfig, bertStateEntries, loadBertCheckpoint } from '../models/bert-checkpoint.js';
import { BertModel, padBatch, type BertConfig } from '../models/bert.js';
import { applyLora, type LoraHandle } from '../nn/lora.js';
import type { StateValue } from '../nn/module.js';
import { Generator, tensor } from '../tensor/index.js';
import { loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { resolveConfig, type TrainingConfig } from '../train/config.js';
import { runTraining, type EvalResult, type LoopHooks, type LoopOptions, type Task, type TaskContext, type TaskRun } from '../train/loop.js';
import { checkEncoder, ENCODER_ARCH, ENCODER_DEFAULTS, encoderFields, epochBatches } from './encoder.js';

export type FinetuneConfig = TrainingConfig;

/** LoRA targets: every linear of the encoder layers. */
export const ENCODER_LORA_TARGETS = /^encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|ffn\.c_fc|ffn\.c_proj)$/;

export const CLASSIFICATION_TASK: Task<number[]> = {
  task: 'classification',
  defaults: { ...ENCODER_DEFAULTS, out_dir: 'out/classification', batch_size: 128, learning_rate: 1e-3, max_iters: 1000, eval_interval: 200 },
  archFields: ENCODER_ARCH,
  best: { metric: 'val_accuracy', higher: true },
  check(cfg, problems) {
    checkEncoder(cfg, problems);
    if (cfg.prompt !== '') {
      if (cfg.prompt.split(PROMPT_MASK).length !== 2) problems.push(`prompt must hold ${PROMPT_MASK} exactly once, got ${JSON.stringify(cfg.prompt)}`);
      const k = cfg.verbalizers.split(',').filter((w) => w.trim() !== '').length;
      if (k !== cfg.n_classes) problems.push(`${k} verbalizers ('${cfg.verbalizers}') for n_classes=${cfg.n_classes}: one word per class`);
    }
    if (cfg.init_from === 'resume' && cfg.lora_rank > 0) problems.push('resuming a LoRA fine-tune is not supported (its checkpoints hold merged weights); start it again');
  },
  async open(cfg, ctx) {
    const { backend, resume, say } = ctx;
    const allTrain = await readTsv(cfg.train_file);
    let dev = await readTsv(cfg.dev_file);
    if (cfg.eval_max > 0 && dev.length > cfg.eval_max) dev = labelSubset(dev, cfg.eval_max / dev.length, cfg.seed + 7);
    let trainEx = labelSubset(allTrain, cfg.label_fraction, cfg.seed);
    if (cfg.cda_pairs !== '') {
      const n0 = trainEx.length;
      trainEx = augmentCounterfactual(trainEx, parseWordPairs(await readFile(cfg.cda_pairs, 'utf8'), cfg.cda_pairs));
      say(`counterfactual data augmentation (${cfg.cda_pairs}): ${trainEx.length - n0} swapped copies added`);
    }
    for (const e of [...trainEx, ...dev]) if (e.label >= cfg.n_classes) throw new Error(`label ${e.label} is outside n_classes=${cfg.n_classes}`);
    say(`${trainEx.length} labeled training examples (label_fraction ${cfg.label_fraction}), ${dev.length} dev examples`);
    const hfFrom = resume ? (resume.config['model_type'] === 'bert' ? resume.dir : null)
      : cfg.init_from !== 'scratch' && (await readHFConfig(cfg.init_from))['model_type'] === 'bert' ? cfg.init_from : null;
    if (hfFrom) return openHFBert(cfg, ctx, trainEx, dev, hfFrom);
    const prompted = cfg.prompt !== '';
    const head = { n_classes: cfg.n_classes, mlm_head: prompted, classifier_dropout: cfg.classifier_dropout, dropout: cfg.dropout, pooling: cfg.pooling as BertConfig['pooling'] };
    // Prompt mode: the template and verbalizers as ids of the model's own vocabulary.
    const promptFields = (t: Tokenizer): Partial<BertConfig> => {
      if (!prompted) return {};
      const p = promptIds(t, cfg.prompt, cfg.verbalizers, specialIdsOf(t).mask_id);
      say(`prompt-based classification: "<sentence> ${cfg.prompt}", verbalizers ${cfg.verbalizers} (ids ${p.verbalizers.join(', ')})`);
      return { prompt_suffix: p.suffix, verbalizers: p.verbalizers };
    };
    let model: BertModel;
    let tok: Tokenizer;
    const from = resume ? resume.dir : cfg.init_from === 'scratch' ? null : cfg.init_from;
    if (!from) {
      say(`training a ${cfg.vocab_size}-token BPE on the ${allTrain.length} training sentences`);
      tok = trainSentenceTokenizer(allTrain.map((e) => e.sentence), cfg.vocab_size);
      model = new BertModel({ ...promptFields(tok), ...encoderFields(cfg), vocab_size: tok.vocabSize, ...specialIdsOf(tok), ...head }, { backend, seed: cfg.seed });
    } else {
      const saved = await loadTokenizer(from);
      const loaded = await loadBertCheckpoint(from, { backend, override: { ...head, ...promptFields(saved) }, tokenizer: saved });
      model = loaded.model;
      tok = loaded.tokenizer;
      // A fresh head, seeded (the loader left it at zero unless the checkpoint had one of the right size).
      const hadHead = loaded.config.n_classes > 0 && (loaded.json['attn_bert'] as BertConfig).n_classes === cfg.n_classes;
      if (!hadHead && model.cls_head) {
        const src = new BertModel({ ...loaded.config }, { backend, seed: cfg.seed });
        const fresh = new Map<string, StateValue>();
        for (const [n, t] of src.stateDict()) if (n.startsWith('cls_head.')) fresh.set(n, t);
        model.loadStateDict(fresh, { strict: false });
        src.dispose();
      }
      if (!resume) say(`initialised from ${from} (${model.config.n_layer} layers, ${model.config.d_model} wide, vocabulary ${model.config.vocab_size})`);
    }
    model.train();
    const mc = model.config;
    const sp: SpecialIds = { pad_id: mc.pad_id, cls_id: mc.cls_id, sep_id: mc.sep_id, mask_id: mc.mask_id };
    const trainRows = trainEx.map((e) => encodeSentence(tok, e.sentence, sp, mc.max_len, mc.prompt_suffix));
    const trainLabels = trainEx.map((e) => e.label);
    const devRows = dev.map((e) => encodeSentence(tok, e.sentence, sp, mc.max_len, mc.prompt_suffix));
    const devLabels = dev.map((e) => e.label);
    let lora: LoraHandle | null = null;
    if (cfg.lora_rank > 0) {
      lora = applyLora(model, { rank: cfg.lora_rank, alpha: cfg.lora_alpha > 0 ? cfg.lora_alpha : cfg.lora_rank, targets: ENCODER_LORA_TARGETS, seed: cfg.seed });
      if (model.cls_head) for (const p of model.cls_head.parameters()) p.requiresGrad = true; // the new head trains fully
      say(`LoRA rank ${cfg.lora_rank} on ${lora.layers.length} encoder linears; ${lora.summary()}`);
    }
    const { sampler, ...batches } = epochBatches(cfg, trainRows.length, new Generator(cfg.seed + 3));
    const extra = { task: 'classification', labels: Array.from({ length: cfg.n_classes }, (_, i) => String(i)), training: { ...cfg } };
    return {
      model,
      ...batches,
      dpExamples: { count: trainRows.length, batchOf: (idx) => [...idx] },
      loss: (idx) => {
        const rows = idx.map((i) => trainRows[i]!);
        const ids = padBatch(rows, mc.pad_id, backend, padMultiple(backend));
        const y = tensor(Int32Array.from(idx.map((i) => trainLabels[i]!)), { backend, dtype: 'int32', shape: [idx.length] });
        return { loss: model.classifyLoss(ids, y, maskPositionsOf(rows, model)).loss };
      },
      evaluate: () => {
        const a = accuracyOf(model, devRows, devLabels);
        return { val_loss: a.loss, val_accuracy: a.accuracy };
      },
      checkpoint: () => ({ config: bertCheckpointConfig(model.config, extra), model: bertStateEntries(model, lora), tokenizerFiles: tok.toFiles() }),
      state: () => ({ sampler: sampler.state() }),
      setState: (s) => sampler.setState(s['sampler']),
    };
  },
};

/** LoRA targets of a Hugging Face BERT: every linear of the encoder layers. */
export const HF_BERT_LORA_TARGETS = /^bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$/;

/** Fine-tuning a Hugging Face BERT checkpoint: its WordPiece tokenizer, its encoder, a fresh
 *  (seeded) pooler-and-classifier head unless it has one of n_classes; saved in its layout. */
async function openHFBert(cfg: TrainingConfig, { backend, say }: TaskContext, trainEx: LabeledExample[], dev: LabeledExample[], from: string): Promise<TaskRun<number[]>> {
  if (cfg.prompt !== '') throw new Error('prompt-based classification of a Hugging Face BERT checkpoint is not supported yet: use its classification head (no --prompt)');
  let tok: Tokenizer;
  try {
    tok = await loadTokenizer(from);
  } catch (e) {
    throw new CheckpointError(from, `no tokenizer to read the sentences with (${(e as Error).message})`);
  }
  const src = await loadHFBertDir(from, { backend });
  let model: HFBert;
  if (src.config.num_labels === cfg.n_classes) {
    model = src.model;
  } else {
    model = new HFBert({ ...src.config, num_labels: cfg.n_classes, pooler: true, mlm_head: false }, { backend, seed: cfg.seed });
    const own = model.stateDict();
    const state = new Map<string, StateValue>();
    for (const [n, t] of src.model.stateDict()) if (own.has(n)) state.set(n, t);
    model.loadStateDict(state, { strict: false });
    src.model.dispose();
    say(`initialised from ${from} (Hugging Face BERT, ${model.config.num_hidden_layers} layers, ${model.config.hidden_size} wide, vocabulary ${model.config.vocab_size}); a new ${cfg.n_classes}-class head`);
  }
  model.train();
  let lora: LoraHandle | null = null;
  if (cfg.lora_rank > 0) {
    lora = applyLora(model, { rank: cfg.lora_rank, alpha: cfg.lora_alpha > 0 ? cfg.lora_alpha : cfg.lora_rank, targets: HF_BERT_LORA_TARGETS, seed: cfg.seed });
    for (const p of [...model.classifier!.parameters(), ...model.bert.pooler!.parameters()]) p.requiresGrad = true; // the head trains fully
    say(`LoRA rank ${cfg.lora_rank} on ${lora.layers.length} encoder linears; ${lora.summary()}`);
  }
  const maxLen = Math.min(cfg.block_size, model.config.max_position_embeddings);
  const trainRows = trainEx.map((e) => encodeForHFBert(tok, e.sentence, maxLen));
  const trainLabels = trainEx.map((e) => e.label);
  const devRows = dev.map((e) => encodeForHFBert(tok, e.sentence, maxLen));
  const devLabels = dev.map((e) => e.label);
  const { sampler, ...batches } = epochBatches(cfg, trainRows.length, new Generator(cfg.seed + 3));
  const hfConfig = src.hfConfig;
  return {
    model,
    ...batches,
    dpExamples: { count: trainRows.length, batchOf: (idx) => [...idx] },
    loss: (idx) => ({ loss: hfBertClassifyLoss(model, idx.map((i) => trainRows[i]!), idx.map((i) => trainLabels[i]!)).loss }),
    evaluate: () => {
      const a = hfBertAccuracy(model, devRows, devLabels);
      return { val_loss: a.loss, val_accuracy: a.accuracy };
    },
    checkpoint: () => ({ config: bertConfigToHF(model.config, hfConfig), model: bertStateEntries(model, lora), tokenizerFiles: tok.toFiles() }),
    state: () => ({ sampler: sampler.state() }),
    setState: (s) => sampler.setState(s['sampler']),
  };
}

export function finetuneConfig(partial: Record<string, unknown> = {}): FinetuneConfig {
  return resolveConfig(CLASSIFICATION_TASK, partial, 'FinetuneConfig');
}

export interface ClassifyTrainResult {
  iter: number;
  out_dir: string;
  best_dir: string;
  last_eval: EvalResult | null;
  best_val_accuracy?: number;
  best_val_loss: number;
}

/** Fine-tunes (or trains from scratch) a sentence classifier with the one loop. */
export async function finetuneClassifier(input: Record<string, unknown>, hooks: LoopHooks = {}, opts: LoopOptions = {}): Promise<ClassifyTrainResult> {
  const r = await runTraining(CLASSIFICATION_TASK, input, hooks, opts);
  return { iter: r.iter, out_dir: r.out_dir, best_dir: r.best_dir, last_eval: r.last_eval, best_val_accuracy: r.best_eval?.['val_accuracy'], best_val_loss: r.best_eval?.['val_loss'] ?? NaN };
}

export { BERT_MODEL_TYPE };
