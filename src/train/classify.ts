// Encoder training: masked-LM pre-training on unlabeled sentences (pretrainMLM) and sentence
// classification fine-tuning (finetuneClassifier), from scratch or from a pre-trained
// checkpoint, optionally with LoRA adapters (merged before saving), on a fraction of the labels.
// Checkpoints (best/, last/) hold config.json (model_type 'attn_bert'), model.safetensors and
// the tokenizer; metrics.jsonl and loss.svg sit in out_dir.
import { appendFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { Backend } from '../backend/backend.js';
import { DEVICE_NAMES, openDevice, type DeviceName } from '../backend/index.js';
import { ATTENTION_DEFAULTS, ATTENTION_FIELDS, attentionProblems, type AttentionKind, type FullAttentionFields } from '../nn/attention-config.js';
import { BertModel, bertConfig, IGNORE_INDEX, maskTokens, padBatch, padRows, type BertConfig } from '../models/bert.js';
import { applyLora, mergeLora, type LoraHandle } from '../nn/lora.js';
import type { StateValue } from '../nn/module.js';
import { add, argmax, Generator, matmul, mul, noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import { BpeTokenizer, loadTokenizer, trainBpe, type Tokenizer } from '../tokenizers/index.js';
import { CheckpointError, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { AdamW } from './optim.js';
import { BEST_DIR, clipGradNorm, LAST_DIR, lossPlotSvg, METRICS_FILE, PLOT_FILE, type MetricsRecord } from './trainer.js';
import type { TensorEntry } from '../io/safetensors.js';

export const BERT_MODEL_TYPE = 'attn_bert';
export const SPECIAL_TOKENS = { pad: '[PAD]', cls: '[CLS]', sep: '[SEP]', mask: '[MASK]' } as const;

// ---------------------------------------------------------------- data

export interface LabeledExample {
  sentence: string;
  label: number;
}

/** A GLUE-style TSV: header `sentence<TAB>label`, integer labels. Errors name file and line. */
export function parseTsv(text: string, path = 'tsv'): LabeledExample[] {
  const lines = text.split(/\r?\n/);
  const header = (lines[0] ?? '').split('\t').map((s) => s.trim());
  const si = header.indexOf('sentence');
  const li = header.indexOf('label');
  if (si < 0 || li < 0) throw new Error(`${path}: the header must name the columns 'sentence' and 'label' (tab-separated), found ${JSON.stringify(lines[0] ?? '')}`);
  const out: LabeledExample[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') continue;
    const cols = line.split('\t');
    const label = Number(cols[li]);
    if (cols.length <= Math.max(si, li) || !Number.isInteger(label) || label < 0) throw new Error(`${path}:${i + 1}: expected a sentence and a non-negative integer label, got ${JSON.stringify(line.slice(0, 80))}`);
    out.push({ sentence: cols[si]!, label });
  }
  if (out.length === 0) throw new Error(`${path}: no examples`);
  return out;
}

export async function readTsv(path: string): Promise<LabeledExample[]> {
  return parseTsv(await readFile(path, 'utf8'), path);
}

/** The paths of a data field: one path, or several separated by commas. */
export function dataPaths(spec: string): string[] {
  const paths = spec.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (paths.length === 0) throw new Error(`no data file named in '${spec}'`);
  return paths;
}

/**
 * Unlabeled sentences: the sentence column of a .tsv with a header, else one per non-empty line.
 * A name ending in .gz is gunzipped first (x.tsv.gz is a .tsv). Several files, separated by
 * commas, are read in order and concatenated.
 */
export async function readSentences(spec: string): Promise<string[]> {
  const out: string[] = [];
  for (const path of dataPaths(spec)) {
    const raw = await readFile(path);
    const gz = path.endsWith('.gz');
    const text = (gz ? gunzipSync(raw) : raw).toString('utf8');
    const name = gz ? path.slice(0, -3) : path;
    const got = name.endsWith('.tsv') ? parseTsv(text, path).map((e) => e.sentence) : text.split(/\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0);
    for (const s of got) out.push(s);
  }
  return out;
}

/** A byte-level BPE trained on the sentences, with [PAD] [CLS] [SEP] [MASK] as its last ids. */
export function trainSentenceTokenizer(sentences: readonly string[], vocabSize: number): BpeTokenizer {
  return trainBpe(sentences.map((s) => ` ${s.trim()}`), vocabSize, { specialTokens: Object.values(SPECIAL_TOKENS) });
}

export interface SpecialIds {
  pad_id: number;
  cls_id: number;
  sep_id: number;
  mask_id: number;
}

export function specialIdsOf(tok: Tokenizer): SpecialIds {
  const sp = tok instanceof BpeTokenizer ? tok.specialTokens : new Map<string, number>();
  const get = (s: string): number => {
    const id = sp.get(s);
    if (id === undefined) throw new Error(`the tokenizer has no ${s} token`);
    return id;
  };
  return { pad_id: get(SPECIAL_TOKENS.pad), cls_id: get(SPECIAL_TOKENS.cls), sep_id: get(SPECIAL_TOKENS.sep), mask_id: get(SPECIAL_TOKENS.mask) };
}

/** [CLS] tokens [suffix] [SEP], the tokens truncated so the whole fits maxLen. */
export function encodeSentence(tok: Tokenizer, s: string, ids: SpecialIds, maxLen: number, suffix: readonly number[] = []): number[] {
  const body = encodeText(tok, ` ${s.trim()}`);
  return [ids.cls_id, ...body.slice(0, Math.max(0, maxLen - 2 - suffix.length)), ...suffix, ids.sep_id];
}

function encodeText(tok: Tokenizer, text: string): number[] {
  return tok instanceof BpeTokenizer ? tok.encodeOrdinary(text) : tok.encode(text);
}

/** The marker of the masked slot in a prompt template. */
export const PROMPT_MASK = '[MASK]';

/**
 * A prompt template (text after the sentence, holding [MASK] once, e.g. "it was [MASK] .") and
 * one verbalizer word per class (e.g. "terrible,great"), as token ids. Each word must be one
 * token of the vocabulary (with its leading space, as it would follow another word).
 */
export function promptIds(tok: Tokenizer, template: string, words: string, maskId: number): { suffix: number[]; verbalizers: number[] } {
  const parts = template.split(PROMPT_MASK);
  if (parts.length !== 2) throw new Error(`prompt must hold ${PROMPT_MASK} exactly once, got ${JSON.stringify(template)}`);
  const piece = (t: string) => (t.trim() === '' ? [] : encodeText(tok, ` ${t.trim()}`));
  const suffix = [...piece(parts[0]!), maskId, ...piece(parts[1]!)];
  const verbalizers = words.split(',').map((w) => w.trim()).filter((w) => w !== '').map((w) => {
    const ids = encodeText(tok, ` ${w}`);
    if (ids.length !== 1) throw new Error(`verbalizer '${w}' is ${ids.length} tokens in this vocabulary (${JSON.stringify(ids)}); each must be a single token`);
    return ids[0]!;
  });
  return { suffix, verbalizers };
}

/** Each row's [MASK] position (the last one): where a prompt-mode model reads the classes. */
function maskPositionsOf(rows: readonly (readonly number[])[], model: BertModel): Int32Array | undefined {
  if (!model.promptMode) return undefined;
  return Int32Array.from(rows.map((r) => r.lastIndexOf(model.config.mask_id)));
}

/** A seeded subset of ceil(fraction·n) examples (at least 1), in their original order. */
export function labelSubset<T>(items: readonly T[], fraction: number, seed: number): T[] {
  if (!(fraction > 0 && fraction <= 1)) throw new Error(`label_fraction must be in (0, 1], got ${fraction}`);
  if (fraction === 1) return [...items];
  const k = Math.max(1, Math.ceil(fraction * items.length));
  const idx = shuffled(items.length, new Generator(seed));
  return idx.slice(0, k).sort((a, b) => a - b).map((i) => items[i]!);
}

function shuffled(n: number, g: Generator): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = g.randint(i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** Endless epochs of shuffled batches of indices. */
class EpochSampler {
  private order: number[] = [];
  private at = 0;
  constructor(private readonly n: number, private readonly batch: number, private readonly g: Generator) {}
  next(): number[] {
    const out: number[] = [];
    while (out.length < Math.min(this.batch, this.n)) {
      if (this.at >= this.order.length) {
        this.order = shuffled(this.n, this.g);
        this.at = 0;
      }
      out.push(this.order[this.at++]!);
    }
    return out;
  }
}

// ---------------------------------------------------------------- configs

interface ModelFields {
  n_layer: number;
  n_head: number;
  d_model: number;
  d_ff: number;
  dropout: number;
  max_len: number;
  positions: 'learned' | 'sinusoidal';
  norm_placement: 'pre' | 'post';
  /** BPE vocabulary trained on the training sentences (from scratch only). */
  vocab_size: number;
  // The encoder's self-attention variant (see attention-config.ts); from scratch only.
  attention: AttentionKind;
  attn_window: number;
  attn_stride: number;
  attn_summary: number;
  performer_features: number;
  performer_redraw_interval: number;
  linformer_k: number;
}

interface OptimFields {
  out_dir: string;
  batch_size: number;
  /** Updates; with epochs > 0, derived from it instead. */
  max_iters: number;
  epochs: number;
  learning_rate: number;
  min_lr: number;
  warmup_iters: number;
  lr_decay: 'linear' | 'cosine';
  weight_decay: number;
  grad_clip: number;
  eval_interval: number;
  log_interval: number;
  seed: number;
  device: DeviceName;
  threads: number;
}

export interface FinetuneConfig extends ModelFields, OptimFields {
  train_file: string;
  dev_file: string;
  /** 'scratch' or a checkpoint directory written by pretrainMLM (or finetuneClassifier). */
  init_from: string;
  label_fraction: number;
  n_classes: number;
  classifier_dropout: number;
  /** The classifier reads the [CLS] position ('cls') or the mean of the non-padding ones. */
  pooling: 'cls' | 'mean';
  /**
   * Prompt-based classification: a template after the sentence holding [MASK] (e.g. "it was
   * [MASK] ."); the MLM head's scores of the `verbalizers` words at the mask are the class
   * logits. Empty: an ordinary classification head.
   */
  prompt: string;
  /** One word per class, comma-separated, label 0 first (prompt mode only). */
  verbalizers: string;
  /** > 0: LoRA adapters of this rank on the encoder's linears; the head trains fully. */
  lora_rank: number;
  lora_alpha: number;
  /** Dev examples evaluated (0: all). */
  eval_max: number;
}

export interface PretrainConfig extends ModelFields, OptimFields {
  /** Unlabeled sentences: a .tsv (sentence column) or a text file (one per line), .gz allowed; several comma-separated. */
  data: string;
  /** Share of the sentences held out for the validation loss. */
  val_fraction: number;
  mask_prob: number;
  /** Validation batches per evaluation. */
  eval_batches: number;
  /** 'scratch', or an 'attn pretrain-mlm' checkpoint to continue pre-training (its model and BPE; the model fields are ignored). */
  init_from: string;
}

// vocab_size 4000 and, for fine-tuning, batches of 128 at 1e-3 for 1000 steps: the recipe of
// docs/transfer.md (80.0 % on SST-2 from scratch; the earlier 8000 / 32 / 5e-4 reached 77.9 %).
const MODEL_DEFAULTS: ModelFields = {
  n_layer: 2, n_head: 4, d_model: 128, d_ff: 512, dropout: 0.1, max_len: 64, positions: 'learned', norm_placement: 'pre', vocab_size: 4000,
  ...ATTENTION_DEFAULTS,
};
const OPTIM_DEFAULTS: Omit<OptimFields, 'out_dir'> = {
  batch_size: 32, max_iters: 2000, epochs: 0, learning_rate: 5e-4, min_lr: 0, warmup_iters: 100, lr_decay: 'linear',
  weight_decay: 0.01, grad_clip: 1, eval_interval: 250, log_interval: 10, seed: 1337, device: 'cpu', threads: 0,
};

export const FINETUNE_DEFAULTS: Readonly<FinetuneConfig> = Object.freeze({
  ...MODEL_DEFAULTS, ...OPTIM_DEFAULTS, out_dir: 'out-sst2', batch_size: 128, learning_rate: 1e-3, max_iters: 1000, eval_interval: 200,
  train_file: 'data/sst2/train.tsv', dev_file: 'data/sst2/dev.tsv', init_from: 'scratch', label_fraction: 1, n_classes: 2,
  classifier_dropout: 0.1, pooling: 'cls', prompt: '', verbalizers: 'terrible,great', lora_rank: 0, lora_alpha: 0, eval_max: 0,
});

export const PRETRAIN_DEFAULTS: Readonly<PretrainConfig> = Object.freeze({
  ...MODEL_DEFAULTS, ...OPTIM_DEFAULTS, out_dir: 'out-mlm', learning_rate: 1e-3, max_iters: 3000, batch_size: 64, eval_interval: 500,
  data: 'data/sst2/train.tsv', val_fraction: 0.02, mask_prob: 0.15, eval_batches: 20, init_from: 'scratch',
});

function fillConfig<T extends object>(what: string, defaults: T, partial: Record<string, unknown>): T {
  const problems: string[] = [];
  const out: Record<string, unknown> = { ...(defaults as Record<string, unknown>) };
  for (const [k, v] of Object.entries(partial)) {
    if (v === undefined) continue;
    if (!(k in defaults)) { problems.push(`unknown field '${k}' (known: ${Object.keys(defaults).join(', ')})`); continue; }
    const d = (defaults as Record<string, unknown>)[k];
    if (typeof d === 'number' && (typeof v !== 'number' || !Number.isFinite(v))) problems.push(`${k} must be a number, got ${JSON.stringify(v)}`);
    else if (typeof d === 'string' && typeof v !== 'string') problems.push(`${k} must be a string, got ${JSON.stringify(v)}`);
    else out[k] = v;
  }
  const c = out as Record<string, number | string>;
  for (const k of ['batch_size', 'n_layer', 'n_head', 'd_model', 'd_ff', 'max_len', 'vocab_size'] as const) {
    if (!Number.isInteger(c[k]) || (c[k] as number) < 1) problems.push(`${k} must be a positive integer, got ${String(c[k])}`);
  }
  for (const k of ['max_iters', 'warmup_iters', 'eval_interval', 'log_interval', 'threads'] as const) {
    if (!Number.isInteger(c[k]) || (c[k] as number) < 0) problems.push(`${k} must be a non-negative integer, got ${String(c[k])}`);
  }
  if (!['linear', 'cosine'].includes(String(c['lr_decay']))) problems.push(`lr_decay must be 'linear' or 'cosine', got '${String(c['lr_decay'])}'`);
  if (!(DEVICE_NAMES as readonly string[]).includes(String(c['device']))) problems.push(`device must be one of ${DEVICE_NAMES.join(', ')}, got '${String(c['device'])}'`);
  if ('label_fraction' in c && !((c['label_fraction'] as number) > 0 && (c['label_fraction'] as number) <= 1)) problems.push(`label_fraction must be in (0, 1], got ${String(c['label_fraction'])}`);
  if ('lora_rank' in c && (!Number.isInteger(c['lora_rank']) || (c['lora_rank'] as number) < 0)) problems.push(`lora_rank must be a non-negative integer`);
  if ((c['max_iters'] as number) === 0 && !((c['epochs'] as number) > 0)) problems.push('max_iters or epochs must be positive');
  attentionProblems(c as unknown as FullAttentionFields, null, problems); // an encoder: linformer allowed
  if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`);
  return out as T;
}

/** The attention fields that differ from the defaults (so dense models' config.json is as before). */
function attentionOverrides(cfg: ModelFields): Partial<BertConfig> {
  return Object.fromEntries(ATTENTION_FIELDS.filter((k) => cfg[k as keyof FullAttentionFields] !== ATTENTION_DEFAULTS[k as keyof FullAttentionFields])
    .map((k) => [k, cfg[k as keyof FullAttentionFields]]));
}

export function finetuneConfig(partial: Partial<FinetuneConfig> | Record<string, unknown> = {}): FinetuneConfig {
  const c = fillConfig('FinetuneConfig', FINETUNE_DEFAULTS, partial as Record<string, unknown>);
  // Checked here as well as by the model, so a bad value fails before the tokenizer is trained.
  if (c.pooling !== 'cls' && c.pooling !== 'mean') throw new Error(`FinetuneConfig: pooling must be 'cls' or 'mean', got '${String(c.pooling)}'`);
  if (c.prompt !== '') {
    if (c.prompt.split(PROMPT_MASK).length !== 2) throw new Error(`FinetuneConfig: prompt must hold ${PROMPT_MASK} exactly once, got ${JSON.stringify(c.prompt)}`);
    const k = c.verbalizers.split(',').filter((w) => w.trim() !== '').length;
    if (k !== c.n_classes) throw new Error(`FinetuneConfig: ${k} verbalizers ('${c.verbalizers}') for n_classes=${c.n_classes}: one word per class`);
  }
  return c;
}

export function pretrainConfig(partial: Partial<PretrainConfig> | Record<string, unknown> = {}): PretrainConfig {
  return fillConfig('PretrainConfig', PRETRAIN_DEFAULTS, partial as Record<string, unknown>);
}

/** A flag's text converted to the type of the field's default (numbers, strings). */
export function parseConfigValue(defaults: object, key: string, text: string): number | string {
  if (!(key in defaults)) throw new Error(`unknown field '${key}' (known: ${Object.keys(defaults).join(', ')})`);
  const d = (defaults as Record<string, unknown>)[key];
  if (typeof d === 'number') {
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n)) throw new Error(`${key} needs a number, got '${text}'`);
    return n;
  }
  return text;
}

/** Warmup then linear or cosine decay to min_lr at the last update. */
export function lrAt(it: number, c: Pick<OptimFields, 'learning_rate' | 'min_lr' | 'warmup_iters' | 'lr_decay'>, total: number): number {
  if (it < c.warmup_iters) return (c.learning_rate * (it + 1)) / (c.warmup_iters + 1);
  const span = Math.max(1, total - c.warmup_iters);
  const r = Math.min(1, (it - c.warmup_iters) / span);
  const coeff = c.lr_decay === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * r)) : 1 - r;
  return c.min_lr + coeff * (c.learning_rate - c.min_lr);
}

// ---------------------------------------------------------------- checkpoints

export function bertCheckpointConfig(config: BertConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { architectures: ['AttnBert'], model_type: BERT_MODEL_TYPE, attn_bert: { ...config }, ...extra };
}

/** The model's tensors for saving; with active LoRA adapters, the merged weights (model unchanged). */
export function bertStateEntries(model: BertModel, lora: LoraHandle | null = null): Map<string, TensorEntry> {
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

async function saveBert(dir: string, model: BertModel, tok: Tokenizer, extra: Record<string, unknown>, lora: LoraHandle | null = null): Promise<void> {
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

// ---------------------------------------------------------------- evaluation

/** Accuracy (and mean loss) of the model on encoded examples, in eval mode, batched by length. */
export function accuracyOf(model: BertModel, rows: readonly number[][], labels: readonly number[], batchSize = 64): { accuracy: number; loss: number; n: number } {
  const wasTraining = model.training;
  model.eval();
  const order = rows.map((_, i) => i).sort((a, b) => rows[a]!.length - rows[b]!.length);
  let correct = 0;
  let lossSum = 0;
  const be = model.embed.weight.backend;
  try {
    for (let s = 0; s < order.length; s += batchSize) {
      const idx = order.slice(s, s + batchSize);
      noGrad(() => tidy(() => {
        const ids = padBatch(idx.map((i) => rows[i]!), model.config.pad_id, be, padMultiple(be));
        const y = tensor(Int32Array.from(idx.map((i) => labels[i]!)), { backend: be, dtype: 'int32', shape: [idx.length] });
        const { logits, loss } = model.classifyLoss(ids, y, maskPositionsOf(idx.map((i) => rows[i]!), model));
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

/** Accuracy of a fine-tuned checkpoint on a sentence/label TSV. */
export async function evaluateClassifier(modelDir: string, tsvPath: string, opts: { backend?: Backend; prompt?: { template: string; verbalizers: string } } = {}): Promise<{ accuracy: number; n: number }> {
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

// ---------------------------------------------------------------- training loops

export interface ClassifyStartInfo {
  model: BertModel;
  numParams: number;
  trainable: number;
  maxIters: number;
  examples: number;
  backend: Backend;
}

export interface ClassifyEvalResult {
  step: number;
  train_loss: number;
  val_loss: number;
  /** Dev accuracy (fine-tuning only). */
  val_accuracy?: number;
  saved: string[];
}

export interface ClassifyHooks {
  onStart?(info: ClassifyStartInfo): void;
  /** After every update: steps done, total, examples/s, that step's loss. */
  onProgress?(step: number, maxIters: number, examplesPerS: number, loss: number): void;
  onEval?(r: ClassifyEvalResult): void;
  onMessage?(text: string): void;
  signal?: AbortSignal;
}

export interface ClassifyTrainResult {
  iter: number;
  out_dir: string;
  best_dir: string;
  last_eval: ClassifyEvalResult | null;
  best_val_accuracy?: number;
  best_val_loss: number;
}

interface LoopSpec {
  cfg: OptimFields;
  model: BertModel;
  params: Tensor[];
  total: number;
  hooks: ClassifyHooks;
  /** One micro-batch's loss (graph kept) and its example count. */
  batchLoss(it: number): { loss: Tensor; examples: number };
  evaluate(): { val_loss: number; val_accuracy?: number };
  /** Higher is better. */
  score(e: { val_loss: number; val_accuracy?: number }): number;
  save(dir: string): Promise<void>;
}

async function runLoop(s: LoopSpec): Promise<{ iter: number; last: ClassifyEvalResult | null; best: { val_loss: number; val_accuracy?: number } | null }> {
  const { cfg, model, hooks } = s;
  await mkdir(cfg.out_dir, { recursive: true });
  const metricsPath = join(cfg.out_dir, METRICS_FILE);
  await rm(metricsPath, { force: true });
  const records: MetricsRecord[] = [];
  const write = async (r: MetricsRecord & Record<string, unknown>) => {
    records.push(r);
    await appendFile(metricsPath, JSON.stringify(r) + '\n');
  };
  const opt = new AdamW(s.params, { lr: cfg.learning_rate, weightDecay: cfg.weight_decay, betas: [0.9, 0.999] });
  const t0 = performance.now();
  let rate = 0;
  let examples = 0;
  let bestScore = -Infinity;
  let best: { val_loss: number; val_accuracy?: number } | null = null;
  let last: ClassifyEvalResult | null = null;
  let trainLoss = NaN;
  let it = 0;
  const evalNow = async (step: number) => {
    const e = s.evaluate();
    const saved: string[] = [];
    await s.save(join(cfg.out_dir, LAST_DIR));
    saved.push(LAST_DIR);
    const sc = s.score(e);
    if (sc > bestScore) {
      bestScore = sc;
      best = e;
      await s.save(join(cfg.out_dir, BEST_DIR));
      saved.push(BEST_DIR);
    }
    last = { step, train_loss: trainLoss, ...e, saved };
    await write({ step, lr: opt.lr, tokens: examples, elapsed_s: (performance.now() - t0) / 1000, ...e });
    hooks.onEval?.(last);
  };
  model.train();
  for (; it < s.total; it++) {
    if (hooks.signal?.aborted) break;
    const ts = performance.now();
    const lr = lrAt(it, cfg, s.total);
    opt.zeroGrad();
    let n = 0;
    const loss = tidy(() => {
      const r = s.batchLoss(it);
      n = r.examples;
      // Backward is queued before the loss is read, so a GPU runs both while the host waits
      // once (reading first would drain it between the forward and the backward).
      r.loss.backward();
      return r.loss.item();
    });
    if (!Number.isFinite(loss)) throw new Error(`training diverged at step ${it}: the loss is ${loss}`);
    const norm = clipGradNorm(s.params, cfg.grad_clip);
    opt.lr = lr;
    opt.stepUpdate();
    opt.zeroGrad();
    examples += n;
    trainLoss = loss;
    const dt = performance.now() - ts;
    rate = rate === 0 ? (n * 1000) / dt : 0.9 * rate + 0.1 * ((n * 1000) / dt);
    if (cfg.log_interval > 0 && (it % cfg.log_interval === 0 || it === s.total - 1)) {
      await write({ step: it, train_loss: loss, lr, grad_norm: norm, dt_ms: dt, tokens: examples, elapsed_s: (performance.now() - t0) / 1000 });
    }
    hooks.onProgress?.(it + 1, s.total, rate, loss);
    if (cfg.eval_interval > 0 && (it + 1) % cfg.eval_interval === 0 && it + 1 < s.total) await evalNow(it + 1);
  }
  await evalNow(it);
  await writeFile(join(cfg.out_dir, PLOT_FILE), lossPlotSvg(records, { title: 'loss' }));
  return { iter: it, last, best };
}

/** Sequence lengths are rounded up to this on a GPU (see padRows); the CPU pays for padding. */
function padMultiple(backend: Backend): number {
  return backend.name === 'webgpu' ? 8 : 1;
}

function itersFor(cfg: OptimFields, n: number): number {
  return cfg.epochs > 0 ? Math.max(1, Math.ceil((cfg.epochs * n) / cfg.batch_size)) : cfg.max_iters;
}

async function backendFor(cfg: OptimFields, given?: Backend): Promise<Backend> {
  return given ?? openDevice(cfg.device, { threads: cfg.threads });
}

/** Masked-LM pre-training on unlabeled sentences. */
export async function pretrainMLM(input: Partial<PretrainConfig> | Record<string, unknown>, hooks: ClassifyHooks = {}, opts: { backend?: Backend } = {}): Promise<ClassifyTrainResult> {
  const cfg = pretrainConfig(input);
  const backend = await backendFor(cfg, opts.backend);
  // Continued pre-training: the checkpoint's model and BPE, read (and refused) before the data.
  // With the same data, seed and val_fraction the held-out sentences are the same ones as in the
  // run that wrote it.
  const loaded = cfg.init_from === 'scratch' ? null : await loadBertCheckpoint(cfg.init_from, { backend, override: { dropout: cfg.dropout } });
  if (loaded && !loaded.config.mlm_head) {
    loaded.model.dispose();
    throw new CheckpointError(join(cfg.init_from, 'config.json'), 'this encoder has no masked-LM head (a fine-tuned classifier?); continue pre-training from an \'attn pretrain-mlm\' checkpoint');
  }
  let sentences: string[];
  try {
    sentences = await readSentences(cfg.data);
    if (sentences.length < 2) throw new Error(`${cfg.data}: need at least 2 sentences`);
  } catch (e) {
    loaded?.model.dispose();
    throw e;
  }
  const g = new Generator(cfg.seed);
  const order = shuffled(sentences.length, g);
  const nVal = Math.max(1, Math.round(cfg.val_fraction * sentences.length));
  const valS = order.slice(0, nVal).map((i) => sentences[i]!);
  const trainS = order.slice(nVal).map((i) => sentences[i]!);
  let tok: Tokenizer;
  let model: BertModel;
  if (!loaded) {
    hooks.onMessage?.(`training a ${cfg.vocab_size}-token BPE on ${trainS.length} sentences`);
    tok = trainSentenceTokenizer(trainS, cfg.vocab_size);
    model = new BertModel({
      n_layer: cfg.n_layer, n_head: cfg.n_head, d_model: cfg.d_model, d_ff: cfg.d_ff, dropout: cfg.dropout, max_len: cfg.max_len,
      vocab_size: tok.vocabSize, ...specialIdsOf(tok), positions: cfg.positions, norm_placement: cfg.norm_placement, mlm_head: true, n_classes: 0,
      ...attentionOverrides(cfg),
    }, { backend, seed: cfg.seed });
  } else {
    tok = loaded.tokenizer;
    model = loaded.model.train();
    hooks.onMessage?.(`continuing from ${cfg.init_from} (${model.config.n_layer} layers, ${model.config.d_model} wide, vocabulary ${model.config.vocab_size})`);
  }
  const mc = model.config;
  const sp: SpecialIds = { pad_id: mc.pad_id, cls_id: mc.cls_id, sep_id: mc.sep_id, mask_id: mc.mask_id };
  const enc = (ss: string[]) => ss.map((s) => encodeSentence(tok, s, sp, mc.max_len));
  const train = enc(trainS);
  const val = enc(valS);
  const specials = [sp.pad_id, sp.cls_id, sp.sep_id, sp.mask_id];
  const maskOpts = { vocabSize: mc.vocab_size, maskId: sp.mask_id, specialIds: specials, prob: cfg.mask_prob };
  const sampler = new EpochSampler(train.length, cfg.batch_size, g);
  const maskGen = new Generator(cfg.seed + 1);
  const total = itersFor(cfg, train.length);
  const mlmBatch = (rows: number[][], gen: Generator) => {
    const ids = padRows(rows, sp.pad_id, padMultiple(backend));
    let m = maskTokens(ids.data, { ...maskOpts, generator: gen });
    // A batch with nothing selected (tiny batches): select the first real token of row 0.
    if (!m.labels.some((l) => l !== IGNORE_INDEX)) {
      const input = m.input.slice();
      const labels = m.labels.slice();
      labels[1] = input[1]!;
      input[1] = sp.mask_id;
      m = { input, labels };
    }
    const shape = ids.shape;
    return model.mlmLoss(tensor(m.input, { backend, dtype: 'int32', shape }), m.labels);
  };
  hooks.onStart?.({ model, numParams: model.numParameters(), trainable: model.numParameters(), maxIters: total, examples: train.length, backend });
  const extra = { task: 'mlm', training: { ...cfg } };
  try {
    const r = await runLoop({
      cfg, model, params: model.parameters(), total, hooks,
      batchLoss: () => {
        const idx = sampler.next();
        return { loss: mlmBatch(idx.map((i) => train[i]!), maskGen).loss, examples: idx.length };
      },
      evaluate: () => {
        const wasTraining = model.training;
        model.eval();
        const eg = new Generator(cfg.seed + 2); // the same masks every evaluation
        let sum = 0;
        let cnt = 0;
        for (let b = 0; b < cfg.eval_batches && b * cfg.batch_size < val.length; b++) {
          const rows = val.slice(b * cfg.batch_size, (b + 1) * cfg.batch_size);
          noGrad(() => tidy(() => {
            const { loss, count } = mlmBatch(rows, eg);
            sum += loss.item() * count;
            cnt += count;
          }));
        }
        model.train(wasTraining);
        return { val_loss: sum / Math.max(cnt, 1) };
      },
      score: (e) => -e.val_loss,
      save: (dir) => saveBert(dir, model, tok, extra),
    });
    const b = r.best as { val_loss: number } | null;
    return { iter: r.iter, out_dir: cfg.out_dir, best_dir: join(cfg.out_dir, BEST_DIR), last_eval: r.last, best_val_loss: b?.val_loss ?? NaN };
  } finally {
    model.dispose();
  }
}

/** LoRA targets: every linear of the encoder layers. */
export const ENCODER_LORA_TARGETS = /^encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|ffn\.c_fc|ffn\.c_proj)$/;

/** Sentence classification: fine-tunes a pre-trained encoder (init_from DIR) or trains from scratch. */
export async function finetuneClassifier(input: Partial<FinetuneConfig> | Record<string, unknown>, hooks: ClassifyHooks = {}, opts: { backend?: Backend } = {}): Promise<ClassifyTrainResult> {
  const cfg = finetuneConfig(input);
  const backend = await backendFor(cfg, opts.backend);
  const allTrain = await readTsv(cfg.train_file);
  let dev = await readTsv(cfg.dev_file);
  if (cfg.eval_max > 0 && dev.length > cfg.eval_max) dev = labelSubset(dev, cfg.eval_max / dev.length, cfg.seed + 7);
  const trainEx = labelSubset(allTrain, cfg.label_fraction, cfg.seed);
  for (const e of [...trainEx, ...dev]) if (e.label >= cfg.n_classes) throw new Error(`label ${e.label} is outside n_classes=${cfg.n_classes}`);
  hooks.onMessage?.(`${trainEx.length} labeled training examples (label_fraction ${cfg.label_fraction}), ${dev.length} dev examples`);

  let model: BertModel;
  let tok: Tokenizer;
  const prompted = cfg.prompt !== '';
  const head = { n_classes: cfg.n_classes, mlm_head: prompted, classifier_dropout: cfg.classifier_dropout, dropout: cfg.dropout, pooling: cfg.pooling };
  // Prompt mode: the template and verbalizers as ids of the model's own vocabulary.
  const promptFields = (t: Tokenizer): Partial<BertConfig> => {
    if (!prompted) return {};
    const p = promptIds(t, cfg.prompt, cfg.verbalizers, specialIdsOf(t).mask_id);
    hooks.onMessage?.(`prompt-based classification: "<sentence> ${cfg.prompt}", verbalizers ${cfg.verbalizers} (ids ${p.verbalizers.join(', ')})`);
    return { prompt_suffix: p.suffix, verbalizers: p.verbalizers };
  };
  if (cfg.init_from === 'scratch') {
    hooks.onMessage?.(`training a ${cfg.vocab_size}-token BPE on the ${allTrain.length} training sentences`);
    tok = trainSentenceTokenizer(allTrain.map((e) => e.sentence), cfg.vocab_size);
    model = new BertModel({ ...promptFields(tok),
      n_layer: cfg.n_layer, n_head: cfg.n_head, d_model: cfg.d_model, d_ff: cfg.d_ff, max_len: cfg.max_len, vocab_size: tok.vocabSize,
      ...specialIdsOf(tok), positions: cfg.positions, norm_placement: cfg.norm_placement, ...head, ...attentionOverrides(cfg),
    }, { backend, seed: cfg.seed });
  } else {
    const saved = await loadTokenizer(cfg.init_from);
    const loaded = await loadBertCheckpoint(cfg.init_from, { backend, override: { ...head, ...promptFields(saved) }, tokenizer: saved });
    model = loaded.model;
    tok = loaded.tokenizer;
    // A fresh head, seeded (the loader left it at zero unless the checkpoint had one of the right size).
    const src = new BertModel({ ...loaded.config }, { backend, seed: cfg.seed });
    const hadHead = loaded.config.n_classes > 0 && (loaded.json['attn_bert'] as BertConfig).n_classes === cfg.n_classes;
    if (!hadHead && model.cls_head) {
      const fresh = new Map<string, StateValue>();
      for (const [n, t] of src.stateDict()) if (n.startsWith('cls_head.')) fresh.set(n, t);
      model.loadStateDict(fresh, { strict: false });
    }
    src.dispose();
    model.train();
    hooks.onMessage?.(`initialised from ${cfg.init_from} (${model.config.n_layer} layers, ${model.config.d_model} wide, vocabulary ${model.config.vocab_size})`);
  }
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
    hooks.onMessage?.(`LoRA rank ${cfg.lora_rank} on ${lora.layers.length} encoder linears; ${lora.summary()}`);
  }
  const params = model.parameters().filter((p) => p.requiresGrad);
  const total = itersFor(cfg, trainRows.length);
  const g = new Generator(cfg.seed + 3);
  const sampler = new EpochSampler(trainRows.length, cfg.batch_size, g);
  let trainable = 0;
  for (const p of params) trainable += p.size;
  hooks.onStart?.({ model, numParams: model.numParameters(), trainable, maxIters: total, examples: trainRows.length, backend });
  const extra = { task: 'classification', labels: Array.from({ length: cfg.n_classes }, (_, i) => String(i)), training: { ...cfg } };
  try {
    const r = await runLoop({
      cfg, model, params, total, hooks,
      batchLoss: () => {
        const idx = sampler.next();
        const rows = idx.map((i) => trainRows[i]!);
        const ids = padBatch(rows, mc.pad_id, backend, padMultiple(backend));
        const y = tensor(Int32Array.from(idx.map((i) => trainLabels[i]!)), { backend, dtype: 'int32', shape: [idx.length] });
        return { loss: model.classifyLoss(ids, y, maskPositionsOf(rows, model)).loss, examples: idx.length };
      },
      evaluate: () => {
        const a = accuracyOf(model, devRows, devLabels);
        return { val_loss: a.loss, val_accuracy: a.accuracy };
      },
      score: (e) => e.val_accuracy ?? -e.val_loss,
      save: (dir) => saveBert(dir, model, tok, extra, lora),
    });
    if (lora) mergeLora(lora);
    const b = r.best as { val_loss: number; val_accuracy?: number } | null;
    return { iter: r.iter, out_dir: cfg.out_dir, best_dir: join(cfg.out_dir, BEST_DIR), last_eval: r.last, best_val_accuracy: b?.val_accuracy, best_val_loss: b?.val_loss ?? NaN };
  } finally {
    model.dispose();
  }
}
