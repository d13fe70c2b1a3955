// Training the 2017 encoder-decoder (src/models/seq2seq.ts) on a parallel corpus: shared BPE,
// length-grouped token-budget batches, Adam(0.9, 0.98, 1e-9) with the inverse-square-root
// warmup schedule, label smoothing, periodic evaluation of val loss and greedy val BLEU (logged
// with wall-clock seconds to metrics.jsonl, plotted to bleu.svg), checkpoints best (by val BLEU)
// and last (with optimizer and trainer state, so a resumed run continues exactly). A
// max_minutes wall-clock budget stops the run at a step boundary. Nothing here prints.
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { DEVICE_NAMES, openDevice, type DeviceName } from '../backend/index.js';
import { rngStateFromJson, rngStateToJson } from '../data/sampler.js';
import {
  encodePairs, evalBatches, LengthBatchSampler, makeBatch, readParallel, specialIds, trainTranslationTokenizer,
  type EncodedPair, type SpecialIds, type TranslationBatch,
} from '../data/translation.js';
import { corpusBleu } from '../eval/bleu.js';
import { linePlotSvg } from '../eval/plot.js';
import { beamSearch, greedyDecode } from '../generate/beam.js';
import { writeFileAtomic } from '../io/files.js';
import type { TensorEntry } from '../io/safetensors.js';
import { ATTENTION_DEFAULTS, ATTENTION_FIELDS, attentionProblems, type FullAttentionFields } from '../nn/attention-config.js';
import { EncoderDecoder, SEQ2SEQ_FIELDS, seq2seqConfig, type Seq2SeqConfig } from '../models/seq2seq.js';
import { noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import { BpeTokenizer } from '../tokenizers/bpe.js';
import { CheckpointError, checkShapes, loadCheckpoint, saveCheckpoint, type LoadedCheckpoint } from './checkpoint.js';
import { AdamW } from './optim.js';
import { noamLr } from './schedule.js';
import {
  BEST_DIR, checkpointTensorsToState, clipGradNorm, dropoutGenerators, LAST_DIR, METRICS_FILE, modelToCheckpointTensors, TrainingDivergedError, type LoopHooks,
} from './trainer.js';

export const SEQ2SEQ_MODEL_TYPE = 'attn_seq2seq';
export const BLEU_PLOT_FILE = 'bleu.svg';
const STATE_FORMAT = 'attn-seq2seq-trainer-state';

/** The Seq2SeqConfig fields a training config sets as they are. */
type ModelFields = 'n_layer_enc' | 'n_layer_dec' | 'n_head' | 'd_model' | 'd_ff' | 'dropout' | 'label_smoothing' | 'max_len' | 'norm_placement' | 'activation';

/** The model fields mean what they do in Seq2SeqConfig; the attention fields pick the model's
 *  self-attention variant (see attention-config.ts); cross-attention stays dense. */
export interface Seq2SeqTrainConfig extends Pick<Seq2SeqConfig, ModelFields>, FullAttentionFields {
  out_dir: string;
  /** Directory of {split}.{lang}[.gz] files. */
  data_dir: string;
  src_lang: string;
  tgt_lang: string;
  train_split: string;
  val_split: string;
  test_split: string;
  /** Use only the first N training / validation pairs (0: all). */
  train_limit: number;
  val_limit: number;
  /** Shared BPE size (specials included); ignored when `tokenizer` names one. */
  vocab_size: number;
  /** A tokenizer.json (or its directory) to use instead of training one. */
  tokenizer: string;
  /** lr(step) = lr_factor · d_model^-0.5 · min(n^-0.5, n · warmup^-1.5), n = step + 1. */
  lr_factor: number;
  warmup_steps: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  /** Global gradient-norm clip (0: none). */
  grad_clip: number;
  /** Token budget per batch: rows × the longer padded side. */
  max_tokens: number;
  max_steps: number;
  /** Wall-clock budget in minutes, evaluation included (0: none). */
  max_minutes: number;
  eval_interval: number;
  /** Token budget of evaluation batches (val loss and decoding). */
  eval_max_tokens: number;
  /** Greedy decoding length limit for val BLEU: a·src_len + b new tokens. */
  decode_len_a: number;
  decode_len_b: number;
  log_interval: number;
  seed: number;
  device: DeviceName;
  /** 0: all cores. */
  threads: number;
  init_from: 'scratch' | 'resume';
}

/** The 2017 model shrunk for a 2-core CPU: the defaults' and the multi30k-de-en preset's. */
export const SEQ2SEQ_SMALL_MODEL = Object.freeze({
  n_layer_enc: 3,
  n_layer_dec: 3,
  n_head: 4,
  d_model: 256,
  d_ff: 1024,
  dropout: 0.1,
  label_smoothing: 0.1,
  max_len: 128,
});

export const SEQ2SEQ_TRAIN_DEFAULTS: Readonly<Seq2SeqTrainConfig> = Object.freeze({
  out_dir: 'out-seq2seq',
  data_dir: 'data/multi30k',
  src_lang: 'de',
  tgt_lang: 'en',
  train_split: 'train',
  val_split: 'val',
  test_split: 'test_2016_flickr',
  train_limit: 0,
  val_limit: 0,
  vocab_size: 8000,
  tokenizer: '',
  ...SEQ2SEQ_SMALL_MODEL,
  norm_placement: 'post',
  activation: 'relu',
  lr_factor: 0.3,
  warmup_steps: 200,
  beta1: 0.9,
  beta2: 0.98,
  eps: 1e-9,
  weight_decay: 0,
  grad_clip: 1.0,
  max_tokens: 4096,
  max_steps: 100000,
  max_minutes: 0,
  eval_interval: 50,
  eval_max_tokens: 6000,
  decode_len_a: 1,
  decode_len_b: 10,
  log_interval: 10,
  seed: 1337,
  device: 'cpu',
  threads: 0,
  init_from: 'scratch',
  ...ATTENTION_DEFAULTS,
});

const CHOICES: Record<string, readonly string[]> = {
  norm_placement: ['post', 'pre'], activation: ['relu', 'gelu'], device: DEVICE_NAMES, init_from: ['scratch', 'resume'],
};
const POS_INTS = ['vocab_size', 'n_layer_enc', 'n_layer_dec', 'n_head', 'd_model', 'd_ff', 'max_len', 'max_tokens', 'max_steps', 'eval_interval', 'eval_max_tokens', 'log_interval'] as const;
const NONNEG_INTS = ['train_limit', 'val_limit', 'warmup_steps', 'threads', 'seed'] as const;
const ARCH = ['n_layer_enc', 'n_layer_dec', 'n_head', 'd_model', 'd_ff', 'max_len', 'norm_placement', 'activation', ...ATTENTION_FIELDS as (keyof FullAttentionFields)[]] as const;

/** Defaults filled in and every field checked (one error naming all problems). */
export function seq2seqTrainConfig(partial: Partial<Seq2SeqTrainConfig> | Record<string, unknown> = {}): Seq2SeqTrainConfig {
  const problems: string[] = [];
  for (const k of Object.keys(partial)) if (!Object.hasOwn(SEQ2SEQ_TRAIN_DEFAULTS, k)) problems.push(`unknown field '${k}'`);
  const given = Object.fromEntries(Object.entries(partial).filter(([k, v]) => v !== undefined && Object.hasOwn(SEQ2SEQ_TRAIN_DEFAULTS, k)));
  const c = { ...SEQ2SEQ_TRAIN_DEFAULTS, ...given } as Seq2SeqTrainConfig;
  const r = c as unknown as Record<string, unknown>;
  for (const [k, def] of Object.entries(SEQ2SEQ_TRAIN_DEFAULTS)) if (typeof r[k] !== typeof def) problems.push(`${k} must be a ${typeof def}, got ${JSON.stringify(r[k])}`);
  for (const k of POS_INTS) if (!(Number.isInteger(c[k]) && c[k] >= 1)) problems.push(`${k} must be a positive integer, got ${String(c[k])}`);
  for (const k of NONNEG_INTS) if (!(Number.isInteger(c[k]) && c[k] >= 0)) problems.push(`${k} must be a non-negative integer, got ${String(c[k])}`);
  for (const [k, allowed] of Object.entries(CHOICES)) if (!allowed.includes(r[k] as string)) problems.push(`${k} must be one of ${allowed.join(', ')}, got '${String(r[k])}'`);
  for (const k of ['lr_factor', 'eps'] as const) if (!(c[k] > 0)) problems.push(`${k} must be positive, got ${c[k]}`);
  for (const k of ['weight_decay', 'grad_clip', 'max_minutes', 'decode_len_a', 'decode_len_b'] as const) if (!(c[k] >= 0)) problems.push(`${k} must be ≥ 0, got ${c[k]}`);
  for (const k of ['beta1', 'beta2', 'dropout', 'label_smoothing'] as const) if (!(c[k] >= 0 && c[k] < 1)) problems.push(`${k} must be in [0, 1), got ${c[k]}`);
  if (c.d_model % c.n_head !== 0) problems.push(`d_model (${c.d_model}) must be divisible by n_head (${c.n_head})`);
  attentionProblems(c, 'the decoder', problems);
  if (problems.length) throw new Error(`Seq2SeqTrainConfig: ${problems.join('; ')}`);
  return c;
}

/** A command-line string for a field, typed by its default. */
export function parseSeq2SeqConfigValue(key: string, text: string): unknown {
  if (!Object.hasOwn(SEQ2SEQ_TRAIN_DEFAULTS, key)) throw new Error(`unknown field '${key}' (known: ${Object.keys(SEQ2SEQ_TRAIN_DEFAULTS).join(', ')})`);
  const def = SEQ2SEQ_TRAIN_DEFAULTS[key as keyof Seq2SeqTrainConfig];
  if (typeof def === 'number') {
    const v = text.trim() === '' ? NaN : Number(text);
    if (!Number.isFinite(v)) throw new Error(`${key} must be a number, got '${text}'`);
    return v;
  }
  if (typeof def === 'boolean') return text === 'true' || text === '1';
  return text;
}

// ---------------------------------------------------------------- checkpoints

/** The model's Seq2SeqConfig with the tokenizer's vocabulary and special ids. */
export function modelConfigFor(cfg: Seq2SeqTrainConfig, vocabSize: number, ids: SpecialIds): Seq2SeqConfig {
  return seq2seqConfig({
    n_layer_enc: cfg.n_layer_enc, n_layer_dec: cfg.n_layer_dec, n_head: cfg.n_head, d_model: cfg.d_model, d_ff: cfg.d_ff,
    dropout: cfg.dropout, max_len: cfg.max_len, vocab_size: vocabSize, ...ids, norm_placement: cfg.norm_placement,
    activation: cfg.activation, label_smoothing: cfg.label_smoothing,
    // Only the attention fields that differ from the defaults, so dense models' config.json is as before.
    ...Object.fromEntries(ATTENTION_FIELDS.filter((k) => cfg[k as keyof FullAttentionFields] !== ATTENTION_DEFAULTS[k as keyof FullAttentionFields]).map((k) => [k, cfg[k as keyof FullAttentionFields]])),
  });
}

export function seq2seqConfigJson(config: Seq2SeqConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model_type: SEQ2SEQ_MODEL_TYPE, architectures: ['AttnEncoderDecoder'], ...config, ...extra };
}

/** What kind of model a config.json describes, for messages. */
export function describeModelKind(json: Record<string, unknown>): string {
  const t = json['model_type'];
  if (t === 'gpt2' || t === 'attn_gpt' || json['attn'] !== undefined) return `a GPT language model (model_type '${String(t ?? 'attn_gpt')}')`;
  if (typeof t === 'string') return `a '${t}' model`;
  return 'a config.json without model_type';
}

export class WrongModelKindError extends Error {
  constructor(readonly path: string, readonly kind: string) {
    super(`${path} holds ${kind}, not an encoder-decoder translation model (model_type '${SEQ2SEQ_MODEL_TYPE}')`);
    this.name = 'WrongModelKindError';
  }
}

export interface LoadedSeq2Seq {
  model: EncoderDecoder;
  config: Seq2SeqConfig;
  tokenizer: BpeTokenizer;
  checkpoint: LoadedCheckpoint;
}

function loadWeights(model: EncoderDecoder, ckpt: LoadedCheckpoint): void {
  const expected = new Map<string, readonly number[]>();
  for (const [name, t] of model.stateDict()) expected.set(name, [...t.shape]);
  checkShapes(expected, ckpt.tensors, join(ckpt.dir, 'model.safetensors'));
  model.loadStateDict(checkpointTensorsToState(ckpt.tensors));
}

/** Loads a checkpoint this trainer wrote (eval mode); refuses other kinds, saying what they are. */
export async function loadSeq2SeqCheckpoint(dir: string, opts: { backend?: Backend; requireOptimizer?: boolean } = {}): Promise<LoadedSeq2Seq> {
  const ckpt = await loadCheckpoint(dir, { requireOptimizer: opts.requireOptimizer });
  const cfgPath = join(ckpt.dir, 'config.json');
  if (ckpt.config['model_type'] !== SEQ2SEQ_MODEL_TYPE) throw new WrongModelKindError(ckpt.dir, describeModelKind(ckpt.config));
  let config: Seq2SeqConfig;
  try {
    config = seq2seqConfig(Object.fromEntries(SEQ2SEQ_FIELDS.map((k) => [k, ckpt.config[k]])) as Partial<Seq2SeqConfig>);
  } catch (e) {
    throw new CheckpointError(cfgPath, (e as Error).message);
  }
  const tokPath = join(ckpt.dir, 'tokenizer.json');
  let tokenizer: BpeTokenizer;
  try {
    tokenizer = BpeTokenizer.fromHuggingFaceJson(await readFile(tokPath, 'utf8'));
  } catch (e) {
    throw new CheckpointError(tokPath, (e as Error).message);
  }
  const model = new EncoderDecoder(config, { backend: opts.backend, init: false });
  try {
    loadWeights(model, ckpt);
  } catch (e) {
    model.dispose();
    throw e;
  }
  model.eval();
  return { model, config, tokenizer, checkpoint: ckpt };
}

// ---------------------------------------------------------------- evaluation

function batchTensors(b: TranslationBatch, backend: Backend): [Tensor, Tensor, Tensor] {
  const t = (a: Int32Array, T: number): Tensor => tensor(a, { backend, dtype: 'int32', shape: [b.batchSize, T] });
  return [t(b.src, b.srcLen), t(b.tgtIn, b.tgtLen), t(b.tgtOut, b.tgtLen)];
}

/** Label-smoothed loss per target token over all pairs (eval mode, no dropout). */
export function seq2seqValLoss(model: EncoderDecoder, pairs: readonly EncodedPair[], ids: SpecialIds, maxTokens: number): number {
  const backend = model.embed.weight.backend;
  const was = model.training;
  model.eval();
  try {
    let total = 0;
    let n = 0;
    for (const idx of evalBatches(pairs, maxTokens)) {
      const b = makeBatch(pairs, idx, ids);
      total += noGrad(() => tidy(() => model.forward(...batchTensors(b, backend)).loss!.item())) * b.tgtTokens;
      n += b.tgtTokens;
    }
    return total / n;
  } finally {
    model.train(was);
  }
}

export interface TranslateOptions {
  /** Beam size; 1 or 'greedy' false: greedy decoding. */
  beam?: number;
  greedy?: boolean;
  lengthPenalty?: number;
  /** Rows per decoding batch at most. */
  batchSize?: number;
  /** Token budget per decoding batch (rows × longest source). */
  maxTokens?: number;
  maxLenA?: number;
  maxLenB?: number;
}

/** Translates token sequences batched by length; results in input order (ids, without bos/eos). */
export function translateIds(model: EncoderDecoder, srcs: readonly (readonly number[])[], o: TranslateOptions = {}): number[][] {
  const out: number[][] = srcs.map(() => []);
  const order = srcs.map((_, i) => i).filter((i) => srcs[i]!.length > 0).sort((a, b) => srcs[a]!.length - srcs[b]!.length || a - b);
  const rows = o.batchSize ?? 64;
  const budget = o.maxTokens ?? Infinity;
  const dec = { maxLenA: o.maxLenA ?? 1, maxLenB: o.maxLenB ?? 10 };
  for (let i = 0; i < order.length;) {
    let j = i + 1;
    while (j < order.length && j - i < rows && (j - i + 1) * srcs[order[j]!]!.length <= budget) j++;
    const chunk = order.slice(i, j);
    const batch = chunk.map((k) => srcs[k]!);
    const greedy = o.greedy || (o.beam ?? 1) <= 1;
    const hyps = greedy ? greedyDecode(model, batch, dec).map((h) => h.tokens) : beamSearch(model, batch, { ...dec, beamSize: o.beam, lengthPenalty: o.lengthPenalty ?? 0.6 }).map((hs) => hs[0]?.tokens ?? []);
    chunk.forEach((k, r) => (out[k] = hyps[r]!));
    i = j;
  }
  return out;
}

/** BLEU of the model's translations of `src` against `refs` (detokenised by tokenizer.decode). */
export function translationBleu(model: EncoderDecoder, tok: BpeTokenizer, srcIds: readonly (readonly number[])[], refs: readonly string[], o: TranslateOptions = {}): { bleu: number; hyps: string[] } {
  const hyps = translateIds(model, srcIds, o).map((ids) => tok.decode(ids).trim());
  return { bleu: corpusBleu(hyps, refs).bleu, hyps };
}

// ---------------------------------------------------------------- metrics and plot

export interface Seq2SeqMetrics {
  /** Updates done. */
  step: number;
  /** Wall-clock seconds since the run began (evaluation time included, resumed sessions summed). */
  elapsed_s: number;
  /** Non-pad source + target tokens trained on so far. */
  tokens: number;
  lr: number;
  epoch: number;
  train_loss?: number;
  grad_norm?: number;
  tokens_per_s?: number;
  val_loss?: number;
  val_bleu?: number;
  /** Seconds the evaluation took. */
  eval_s?: number;
}

/** Val BLEU against wall-clock minutes. */
export function bleuPlotSvg(records: readonly Seq2SeqMetrics[], title = 'val BLEU'): string {
  const pts = records.filter((r) => typeof r.val_bleu === 'number').map((r) => [r.elapsed_s / 60, r.val_bleu!] as const);
  return linePlotSvg([{ name: 'val BLEU (greedy)', points: pts }], { title, xLabel: 'minutes', yLabel: 'BLEU' });
}

// ---------------------------------------------------------------- the loop

interface TrainerState {
  format: typeof STATE_FORMAT;
  version: 1;
  step: number;
  optimizer_step: number;
  tokens: number;
  elapsed_s: number;
  best_val_bleu: number | null;
  last_eval: { step: number; val_loss: number; val_bleu: number } | null;
  sampler: unknown;
  rng: { dropout: (number | null)[][] };
  config: Seq2SeqTrainConfig;
}

export interface Seq2SeqStartInfo {
  config: Seq2SeqTrainConfig;
  modelConfig: Seq2SeqConfig;
  numParams: number;
  startStep: number;
  resumed: boolean;
  trainPairs: number;
  valPairs: number;
  batchesPerEpoch: number;
  backend: Backend;
}

export interface Seq2SeqEval {
  step: number;
  elapsed_s: number;
  val_loss: number;
  val_bleu: number;
  best_val_bleu: number;
  saved: string[];
}

export interface Seq2SeqHooks extends LoopHooks<Seq2SeqStartInfo, Seq2SeqMetrics, Seq2SeqEval> {
  /** After every update: steps done, tokens/s (smoothed), the step's loss, elapsed seconds. */
  onProgress?(step: number, tokensPerS: number, loss: number, elapsedS: number): void;
}

export interface Seq2SeqTrainResult {
  step: number;
  best_val_bleu: number;
  last_eval: Seq2SeqEval | null;
  /** Why it stopped: 'max_steps', 'max_minutes' or 'signal'. */
  stop_reason: string;
  out_dir: string;
  elapsed_s: number;
}

async function readRecords(path: string, upTo: number): Promise<Seq2SeqMetrics[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const out: Seq2SeqMetrics[] = [];
  for (const line of text.split('\n')) {
    try {
      const r = JSON.parse(line) as Seq2SeqMetrics;
      if (typeof r.step === 'number' && r.step <= upTo) out.push(r);
    } catch {
      // empty or cut-short line
    }
  }
  return out;
}

async function loadTokenizerFile(path: string): Promise<BpeTokenizer> {
  const p = path.endsWith('.json') ? path : join(path, 'tokenizer.json');
  return BpeTokenizer.fromHuggingFaceJson(await readFile(p, 'utf8'));
}

/** Trains per cfg (see the top of this file); resumes from out_dir/last with init_from 'resume'. */
export async function trainSeq2Seq(input: Partial<Seq2SeqTrainConfig> | Record<string, unknown>, hooks: Seq2SeqHooks = {}): Promise<Seq2SeqTrainResult> {
  let cfg = seq2seqTrainConfig(input);
  const say = (s: string): void => hooks.onMessage?.(s);
  const backend = await openDevice(cfg.device, { threads: cfg.threads });
  const outDir = resolve(cfg.out_dir);
  const lastDir = join(outDir, LAST_DIR);
  const bestDir = join(outDir, BEST_DIR);
  const metricsPath = join(outDir, METRICS_FILE);
  await mkdir(outDir, { recursive: true });
  const resumed = cfg.init_from === 'resume';

  let ckpt: LoadedCheckpoint | null = null;
  let state: TrainerState | null = null;
  if (resumed) {
    ckpt = await loadCheckpoint(lastDir, { requireOptimizer: true });
    if (ckpt.config['model_type'] !== SEQ2SEQ_MODEL_TYPE) throw new WrongModelKindError(ckpt.dir, describeModelKind(ckpt.config));
    state = ckpt.trainerState as unknown as TrainerState;
    if (state.format !== STATE_FORMAT) throw new CheckpointError(join(lastDir, 'trainer_state.json'), `not a seq2seq trainer state (format ${JSON.stringify(state.format)})`);
    const saved = seq2seqTrainConfig(state.config);
    const changedArch = ARCH.filter((k) => saved[k] !== cfg[k]);
    if (changedArch.length) say(`resume: using the checkpoint's model shape (${changedArch.map((k) => `${k} ${String(cfg[k])} -> ${String(saved[k])}`).join(', ')})`);
    cfg = { ...cfg, ...Object.fromEntries(ARCH.map((k) => [k, saved[k]])) };
  }

  // Data and the shared tokenizer.
  const [trainText, valText] = await Promise.all([
    readParallel(cfg.data_dir, cfg.train_split, cfg.src_lang, cfg.tgt_lang, cfg.train_limit),
    readParallel(cfg.data_dir, cfg.val_split, cfg.src_lang, cfg.tgt_lang, cfg.val_limit),
  ]);
  let tok: BpeTokenizer;
  if (resumed) tok = await loadTokenizerFile(lastDir);
  else if (cfg.tokenizer) tok = await loadTokenizerFile(cfg.tokenizer);
  else {
    say(`training a ${cfg.vocab_size}-token BPE on ${trainText.src.length} ${cfg.src_lang}+${cfg.tgt_lang} training pairs`);
    tok = trainTranslationTokenizer([...trainText.src, ...trainText.tgt], cfg.vocab_size);
  }
  const ids = specialIds(tok);
  const tokenizerFiles = tok.toFiles();
  const trainPairs = encodePairs(tok, trainText, cfg.max_len);
  const valPairs = encodePairs(tok, valText, cfg.max_len);
  const modelConfig = modelConfigFor(cfg, tok.vocabSize, ids);

  const model = new EncoderDecoder(modelConfig, { backend, seed: cfg.seed, init: !resumed });
  const opt = new AdamW(model.parameters(), { lr: 0, betas: [cfg.beta1, cfg.beta2], eps: cfg.eps, weightDecay: cfg.weight_decay });
  const sampler = new LengthBatchSampler(trainPairs, ids, cfg.max_tokens, cfg.seed);
  const dropout = dropoutGenerators(model);
  let step = 0;
  let tokens = 0;
  let elapsedBefore = 0;
  let bestBleu = -Infinity;
  let lastEval: TrainerState['last_eval'] = null;
  const free = (): void => {
    for (const s of opt.stateTensors()) {
      s.m.dispose();
      s.v.dispose();
    }
    model.dispose();
  };

  try {
    if (ckpt && state) {
      loadWeights(model, ckpt);
      const named = model.namedParameters();
      const expected = new Map<string, readonly number[]>();
      for (const [name, p] of named) {
        expected.set(`${name}.m`, p.shape);
        expected.set(`${name}.v`, p.shape);
      }
      checkShapes(expected, ckpt.optimizer!, join(lastDir, 'optimizer.safetensors'));
      opt.stateTensors().forEach((s, i) => {
        const name = named[i]![0];
        s.m.backend.write(s.m.storage, ckpt!.optimizer!.get(`${name}.m`)!.data, 0);
        s.v.backend.write(s.v.storage, ckpt!.optimizer!.get(`${name}.v`)!.data, 0);
      });
      opt.step = state.optimizer_step;
      sampler.setState(state.sampler);
      if (state.rng.dropout.length !== dropout.length) throw new CheckpointError(lastDir, `${state.rng.dropout.length} dropout generator states for ${dropout.length} generators`);
      dropout.forEach((g, i) => rngStateFromJson(g, state!.rng.dropout[i], `rng.dropout[${i}]`));
      step = state.step;
      tokens = state.tokens;
      elapsedBefore = state.elapsed_s;
      bestBleu = state.best_val_bleu ?? -Infinity;
      lastEval = state.last_eval;
      say(`resuming from ${lastDir} at step ${step}`);
    }
    const records = resumed ? await readRecords(metricsPath, step) : [];
    await writeFile(metricsPath, records.map((r) => JSON.stringify(r) + '\n').join(''));
    const writeRecord = async (r: Seq2SeqMetrics): Promise<void> => {
      records.push(r);
      await appendFile(metricsPath, JSON.stringify(r) + '\n');
    };

    hooks.onStart?.({
      config: cfg, modelConfig, numParams: model.numParameters(), startStep: step, resumed, trainPairs: trainPairs.length,
      valPairs: valPairs.length, batchesPerEpoch: sampler.epochLength, backend,
    });
    const t0 = performance.now();
    const elapsed = (): number => elapsedBefore + (performance.now() - t0) / 1000;
    const lrAt = (s: number): number => noamLr(s, { d_model: cfg.d_model, warmup_iters: cfg.warmup_steps, factor: cfg.lr_factor });
    const valSrc = valPairs.map((p) => p.src);

    const save = async (dir: string, withOptimizer: boolean): Promise<void> => {
      const st: TrainerState = {
        format: STATE_FORMAT, version: 1, step, optimizer_step: opt.step, tokens, elapsed_s: elapsed(),
        best_val_bleu: Number.isFinite(bestBleu) ? bestBleu : null, last_eval: lastEval, sampler: sampler.state(),
        rng: { dropout: dropout.map((g) => rngStateToJson(g)) }, config: cfg,
      };
      let optimizer: Map<string, TensorEntry> | undefined;
      if (withOptimizer) {
        optimizer = new Map();
        const named = model.namedParameters();
        opt.stateTensors().forEach((s, i) => {
          const name = named[i]![0];
          optimizer!.set(`${name}.m`, { dtype: 'F32', shape: [...s.m.shape], data: s.m.data() });
          optimizer!.set(`${name}.v`, { dtype: 'F32', shape: [...s.v.shape], data: s.v.data() });
        });
      }
      await saveCheckpoint(dir, {
        config: seq2seqConfigJson(modelConfig, { src_lang: cfg.src_lang, tgt_lang: cfg.tgt_lang }),
        model: modelToCheckpointTensors(model),
        modelMetadata: { attn_step: String(step) },
        tokenizerFiles,
        ...(optimizer ? { optimizer } : {}),
        trainerState: st,
      });
    };

    const evaluate = async (): Promise<Seq2SeqEval> => {
      const te = performance.now();
      const valLoss = seq2seqValLoss(model, valPairs, ids, cfg.eval_max_tokens);
      if (!Number.isFinite(valLoss)) throw new TrainingDivergedError(step, 'the validation loss', valLoss);
      const { bleu } = translationBleu(model, tok, valSrc, valText.tgt, { greedy: true, batchSize: 256, maxTokens: cfg.eval_max_tokens, maxLenA: cfg.decode_len_a, maxLenB: cfg.decode_len_b });
      lastEval = { step, val_loss: valLoss, val_bleu: bleu };
      const improved = bleu > bestBleu;
      if (improved) bestBleu = bleu;
      const at = elapsed();
      await writeRecord({ step, elapsed_s: at, tokens, lr: lrAt(step), epoch: sampler.epoch, val_loss: valLoss, val_bleu: bleu, eval_s: (performance.now() - te) / 1000 });
      const saved: string[] = [];
      if (improved) {
        await save(bestDir, false);
        saved.push(BEST_DIR);
      }
      await save(lastDir, true);
      saved.push(LAST_DIR);
      await writeFileAtomic(join(outDir, BLEU_PLOT_FILE), bleuPlotSvg(records, `val BLEU, ${cfg.src_lang}→${cfg.tgt_lang}`));
      const e: Seq2SeqEval = { step, elapsed_s: at, val_loss: valLoss, val_bleu: bleu, best_val_bleu: bestBleu, saved };
      hooks.onEval?.(e);
      return e;
    };

    let lastEvalResult: Seq2SeqEval | null = null;
    let speed = 0;
    let stopReason = 'max_steps';
    model.train(true);
    for (;;) {
      const timeUp = cfg.max_minutes > 0 && elapsed() >= cfg.max_minutes * 60;
      const aborted = hooks.signal?.aborted ?? false;
      const done = step >= cfg.max_steps || timeUp || aborted;
      if (done) stopReason = aborted ? 'signal' : step >= cfg.max_steps ? 'max_steps' : 'max_minutes';
      // Evaluate every eval_interval updates and at the end (not again for a resumed step).
      if (step > 0 && (step % cfg.eval_interval === 0 || done) && lastEval?.step !== step) lastEvalResult = await evaluate();
      if (done) break;

      const lr = lrAt(step);
      const b = sampler.next();
      const ts = performance.now();
      opt.zeroGrad();
      let loss: number;
      let norm: number;
      try {
        loss = tidy(() => {
          const out = model.forward(...batchTensors(b, backend));
          const v = out.loss!.item();
          if (Number.isFinite(v)) out.loss!.backward();
          return v;
        });
        if (!Number.isFinite(loss)) throw new TrainingDivergedError(step, 'the training loss', loss, lastEval ? `the checkpoint in ${lastDir} (step ${lastEval.step}) is untouched` : 'no checkpoint was written');
        norm = clipGradNorm(model.parameters(), cfg.grad_clip);
        if (!Number.isFinite(norm)) throw new TrainingDivergedError(step, 'the gradient norm', norm, lastEval ? `the checkpoint in ${lastDir} (step ${lastEval.step}) is untouched` : 'no checkpoint was written');
        opt.lr = lr;
        opt.stepUpdate();
      } finally {
        opt.zeroGrad();
      }
      step++;
      const n = b.srcTokens + b.tgtTokens;
      tokens += n;
      const tps = n / ((performance.now() - ts) / 1000);
      speed = speed === 0 ? tps : 0.9 * speed + 0.1 * tps;
      if (step % cfg.log_interval === 0) {
        const rec: Seq2SeqMetrics = { step, elapsed_s: elapsed(), tokens, lr, epoch: sampler.epoch, train_loss: loss, grad_norm: norm, tokens_per_s: tps };
        await writeRecord(rec);
        hooks.onLog?.(rec);
      }
      hooks.onProgress?.(step, speed, loss, elapsed());
      await new Promise<void>((r) => setImmediate(r));
    }
    return { step, best_val_bleu: bestBleu, last_eval: lastEvalResult, stop_reason: stopReason, out_dir: outDir, elapsed_s: elapsed() };
  } finally {
    free();
  }
}

/** BLEU of a checkpoint on a split of the config's data (beam 4 by default). */
export async function evaluateCheckpointBleu(dir: string, cfg: Pick<Seq2SeqTrainConfig, 'data_dir' | 'src_lang' | 'tgt_lang'> & { split: string }, o: TranslateOptions & { backend?: Backend } = {}): Promise<{ bleu: number; sentences: number }> {
  const { model, tokenizer, config } = await loadSeq2SeqCheckpoint(dir, { backend: o.backend });
  try {
    const text = await readParallel(cfg.data_dir, cfg.split, cfg.src_lang, cfg.tgt_lang);
    const src = text.src.map((s) => tokenizer.encodeOrdinary(s.trim()).slice(0, config.max_len));
    const { bleu } = translationBleu(model, tokenizer, src, text.tgt, { beam: 4, lengthPenalty: 0.6, batchSize: 64, ...o });
    return { bleu, sentences: src.length };
  } finally {
    model.dispose();
  }
}
