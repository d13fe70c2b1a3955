// Training a GPT on a prepared token dataset, after nanoGPT's train.py: a flat snake_case
// config, gradient accumulation, global-norm clipping, AdamW with a warmup + cosine schedule,
// periodic evaluation on both splits, checkpoints in the Hugging Face layout that a resumed
// run continues exactly (same batches, same schedule, same dropout masks), metrics.jsonl and
// an SVG loss plot. Nothing here prints: progress goes to the hooks (see consoleReporter).
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { BatchSampler, rngStateFromJson, rngStateToJson, type Batch, type SamplerState } from '../data/sampler.js';
import { loadDataset, readTokenizerFiles, type Dataset } from '../data/files.js';
import { DEVICE_NAMES, openDevice, type DeviceName } from '../backend/index.js';
import { writeFileAtomic } from '../io/files.js';
import type { LoadedTensor, TensorEntry } from '../io/safetensors.js';
import { fullGPTConfig, GPT, GPT2_LAYOUT, gptConfig, MOE_DEFAULTS, type GPTConfig } from '../models/gpt.js';
import { ATTENTION_DEFAULTS, type FullAttentionFields } from '../nn/attention-config.js';
import { canonicalCheckpointTensors, checkpointConfigJson, checkpointShapes, checkpointTensorsToState, gptConfigFromJson, modelToCheckpointTensors, nonFloatTensorProblem } from '../models/checkpoint-format.js';
import { Dropout } from '../nn/layers.js';
import type { Module, StateValue } from '../nn/module.js';
import { MoE } from '../nn/moe.js';
import { add, concat, div, minimum, mul, noGrad, reshape, sqrt, square, sum, tensor, tidy, zeros, type DType, type Generator, type Tensor } from '../tensor/index.js';
import { CheckpointError, checkShapes, loadCheckpoint, saveCheckpoint, TRAINER_STATE_FILE, OPTIMIZER_FILE, MODEL_FILE, type LoadedCheckpoint } from './checkpoint.js';
import { AdamW } from './optim.js';
import { constantLr, cosineLr } from './schedule.js';

// ---------------------------------------------------------------- config

/** The mixture-of-experts fields, as in GPTConfig (moe_hidden is left at its default). */
type MoEFields = Required<Pick<GPTConfig, 'moe_experts' | 'moe_top_k' | 'moe_capacity_factor' | 'moe_aux_loss_coef' | 'moe_every'>>;

/** The attention fields (FullAttentionFields) and moe_* (MoEFields) mean what they do in GPTConfig. */
export interface TrainConfig extends FullAttentionFields, MoEFields {
  /** Where checkpoints (last/, best/), metrics.jsonl and loss.svg go. */
  out_dir: string;
  /** Evaluate (and checkpoint) every this many iterations, and at the end. */
  eval_interval: number;
  /** Write a metrics record every this many iterations. */
  log_interval: number;
  /** Batches averaged per split at each evaluation. */
  eval_iters: number;
  /** Evaluate once and exit. */
  eval_only: boolean;
  /** Save out_dir/last at every evaluation; false: only when val loss improves. */
  always_save_checkpoint: boolean;
  /** 'resume' continues the run saved in out_dir/last. */
  init_from: 'scratch' | 'resume';
  /** A directory prepareDataset wrote (train.bin, val.bin, meta.json, tokenizer files). */
  dataset: string;
  gradient_accumulation_steps: number;
  /** Micro-batch size: an iteration sees gradient_accumulation_steps * batch_size * block_size tokens. */
  batch_size: number;
  block_size: number;
  n_layer: number;
  n_head: number;
  n_embd: number;
  dropout: number;
  bias: boolean;
  tie_embeddings: GPTConfig['tie_embeddings'];
  pos_encoding: GPTConfig['pos_encoding'];
  norm_placement: GPTConfig['norm_placement'];
  norm: GPTConfig['norm'];
  activation: GPTConfig['activation'];
  layer_norm_epsilon: number;
  /** Key/value heads (grouped-query attention); 0 = n_head. */
  n_kv_head: number;
  /** Peak learning rate. */
  learning_rate: number;
  /** Number of optimizer updates in the whole run. */
  max_iters: number;
  weight_decay: number;
  beta1: number;
  beta2: number;
  /** Clip the global gradient norm to this; 0 disables clipping. */
  grad_clip: number;
  /** Warmup + cosine decay (nanoGPT's get_lr); false: constant learning_rate. */
  decay_lr: boolean;
  warmup_iters: number;
  lr_decay_iters: number;
  min_lr: number;
  device: DeviceName;
  /** Worker threads for the cpu device; 0 = one per core. */
  threads: number;
  seed: number;
  dtype: 'float32' | 'float64';
}

// `attention` is named apart so the fields keep their order (for messages) with n_kv_head after it.
const { attention: _attention, ...ATTENTION_SETTING_DEFAULTS } = ATTENTION_DEFAULTS;

/** nanoGPT's train.py defaults (GPT-2 124M on OpenWebText), with attn's GPT variant fields. */
export const TRAIN_DEFAULTS: Readonly<TrainConfig> = Object.freeze({
  out_dir: 'out',
  eval_interval: 2000,
  log_interval: 1,
  eval_iters: 200,
  eval_only: false,
  always_save_checkpoint: true,
  init_from: 'scratch',
  dataset: 'data/shakespeare_char',
  gradient_accumulation_steps: 1,
  batch_size: 12,
  block_size: 1024,
  n_layer: 12,
  n_head: 12,
  n_embd: 768,
  dropout: 0.0,
  bias: false,
  ...GPT2_LAYOUT,
  attention: ATTENTION_DEFAULTS.attention,
  n_kv_head: 0,
  ...ATTENTION_SETTING_DEFAULTS,
  ...MOE_DEFAULTS,
  learning_rate: 6e-4,
  max_iters: 600000,
  weight_decay: 1e-1,
  beta1: 0.9,
  beta2: 0.95,
  grad_clip: 1.0,
  decay_lr: true,
  warmup_iters: 2000,
  lr_decay_iters: 600000,
  min_lr: 6e-5,
  device: 'cpu',
  threads: 0,
  seed: 1337,
  dtype: 'float32',
});

/** The TrainConfig fields that shape the model (taken from the checkpoint on resume). */
// (n_kv_head is left out: 0 here means n_head there; the model is built from the checkpoint's config.)
const ARCH_FIELDS = ['block_size', 'n_layer', 'n_head', 'n_embd', 'bias', 'tie_embeddings', 'pos_encoding', 'norm_placement', 'norm', 'activation', 'layer_norm_epsilon',
  'attention', 'attn_window', 'attn_stride', 'attn_summary', 'performer_features', 'performer_redraw_interval', 'linformer_k',
  'moe_experts', 'moe_top_k', 'moe_capacity_factor', 'moe_aux_loss_coef', 'moe_every'] as const;

const CHOICES: Partial<Record<keyof TrainConfig, readonly string[]>> = {
  init_from: ['scratch', 'resume'],
  device: DEVICE_NAMES,
  dtype: ['float32', 'float64'],
  pos_encoding: ['learned', 'sinusoidal', 'rope'],
  norm_placement: ['pre', 'post'],
  norm: ['layernorm', 'rmsnorm'],
  activation: ['gelu', 'gelu_exact', 'relu', 'swiglu'],
  attention: ['dense', 'local', 'strided', 'fixed', 'linear', 'linformer', 'performer'],
};
const POSITIVE_INTS = ['eval_interval', 'log_interval', 'eval_iters', 'gradient_accumulation_steps', 'batch_size', 'block_size', 'n_layer', 'n_head', 'n_embd',
  'attn_window', 'attn_stride', 'attn_summary', 'performer_features', 'linformer_k', 'moe_every'] as const;
const NONNEGATIVE_INTS = ['max_iters', 'warmup_iters', 'lr_decay_iters', 'threads', 'n_kv_head', 'performer_redraw_interval', 'moe_experts'] as const;

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

function unknownField(k: string): string {
  const close = Object.keys(TRAIN_DEFAULTS).filter((f) => editDistance(f, k.toLowerCase()) <= 2 || f === k.toLowerCase().replace(/-/g, '_'));
  return `unknown field '${k}'${close.length ? ` (did you mean ${close.map((c) => `'${c}'`).join(' or ')}?)` : ''}`;
}

/**
 * Fills the defaults into a partial config and validates it; throws one error naming every
 * unknown field and bad value. `undefined` values count as absent.
 */
export function trainConfig(partial: Partial<TrainConfig> | Record<string, unknown> = {}): TrainConfig {
  const problems: string[] = [];
  for (const k of Object.keys(partial)) if (!Object.hasOwn(TRAIN_DEFAULTS, k)) problems.push(unknownField(k));
  const given = Object.fromEntries(Object.entries(partial).filter(([k, v]) => v !== undefined && Object.hasOwn(TRAIN_DEFAULTS, k)));
  const cfg = { ...TRAIN_DEFAULTS, ...given } as TrainConfig;
  const show = (v: unknown): string => (typeof v === 'string' ? `'${v}'` : String(v));
  const bad = (k: string, want: string): void => {
    problems.push(`${k} must be ${want}, got ${show(cfg[k as keyof TrainConfig])}`);
  };
  const num = (k: keyof TrainConfig): number | undefined => {
    const v = cfg[k];
    return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  };
  for (const k of POSITIVE_INTS) if (!(Number.isInteger(cfg[k]) && cfg[k] >= 1)) bad(k, 'a positive integer');
  for (const k of NONNEGATIVE_INTS) if (!(Number.isInteger(cfg[k]) && cfg[k] >= 0)) bad(k, 'a non-negative integer');
  if (!(Number.isInteger(cfg.seed) && cfg.seed >= 0 && cfg.seed < 2 ** 32)) bad('seed', 'an integer in [0, 2^32)');
  for (const k of ['eval_only', 'always_save_checkpoint', 'bias', 'tie_embeddings', 'decay_lr'] as const) {
    if (typeof cfg[k] !== 'boolean') bad(k, 'true or false');
  }
  for (const k of ['out_dir', 'dataset'] as const) if (typeof cfg[k] !== 'string' || cfg[k] === '') bad(k, 'a non-empty path');
  for (const [k, allowed] of Object.entries(CHOICES)) {
    if (!allowed.includes(cfg[k as keyof TrainConfig] as string)) bad(k, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  }
  const lr = num('learning_rate');
  if (lr === undefined || lr <= 0) bad('learning_rate', 'a positive number');
  const minLr = num('min_lr');
  if (minLr === undefined || minLr < 0) bad('min_lr', 'a non-negative number');
  else if (lr !== undefined && cfg.decay_lr === true && minLr > lr) problems.push(`min_lr (${minLr}) must not exceed learning_rate (${lr})`);
  for (const k of ['weight_decay', 'grad_clip'] as const) if (!(num(k)! >= 0)) bad(k, 'a non-negative number');
  for (const k of ['beta1', 'beta2'] as const) if (!(num(k)! >= 0 && cfg[k] < 1)) bad(k, 'in [0, 1)');
  if (!(num('dropout')! >= 0 && cfg.dropout < 1)) bad('dropout', 'in [0, 1)');
  if (!(num('layer_norm_epsilon')! > 0)) bad('layer_norm_epsilon', 'a positive number');
  if (cfg.decay_lr === true && Number.isInteger(cfg.lr_decay_iters) && Number.isInteger(cfg.warmup_iters) && cfg.lr_decay_iters < cfg.warmup_iters) {
    problems.push(`lr_decay_iters (${cfg.lr_decay_iters}) must be at least warmup_iters (${cfg.warmup_iters})`);
  }
  if (Number.isInteger(cfg.n_embd) && Number.isInteger(cfg.n_head) && cfg.n_head > 0) {
    if (cfg.n_embd % cfg.n_head !== 0) problems.push(`n_embd (${cfg.n_embd}) must be divisible by n_head (${cfg.n_head})`);
    else if (cfg.pos_encoding === 'rope' && (cfg.n_embd / cfg.n_head) % 2 !== 0) problems.push(`rope needs an even head size, but n_embd / n_head = ${cfg.n_embd / cfg.n_head}`);
  }
  if (Number.isInteger(cfg.n_head) && cfg.n_head > 0 && Number.isInteger(cfg.n_kv_head) && cfg.n_kv_head > 0 && cfg.n_head % cfg.n_kv_head !== 0) {
    problems.push(`n_head (${cfg.n_head}) must be divisible by n_kv_head (${cfg.n_kv_head})`);
  }
  if (cfg.moe_top_k !== 1 && cfg.moe_top_k !== 2) bad('moe_top_k', '1 or 2');
  else if (Number.isInteger(cfg.moe_experts) && cfg.moe_experts > 0 && cfg.moe_top_k > cfg.moe_experts) problems.push(`moe_top_k (${cfg.moe_top_k}) must not exceed moe_experts (${cfg.moe_experts})`);
  if (!(num('moe_capacity_factor')! > 0)) bad('moe_capacity_factor', 'a positive number');
  if (!(num('moe_aux_loss_coef')! >= 0)) bad('moe_aux_loss_coef', 'a non-negative number');
  if (cfg.moe_experts > 0 && Number.isInteger(cfg.moe_every) && Number.isInteger(cfg.n_layer) && cfg.moe_every > cfg.n_layer) {
    problems.push(`moe_every (${cfg.moe_every}) exceeds n_layer (${cfg.n_layer}): no layer would be a mixture of experts`);
  }
  if (cfg.attention === 'linformer') problems.push(`attention 'linformer' cannot train a GPT: linformer projects along the sequence, so it cannot be causal; use it in an encoder`);
  if (problems.length) throw new Error(`TrainConfig: ${problems.join('; ')}`);
  return cfg;
}

/**
 * Parses a command-line value for a field by the type of its default: numbers ('3e-4'),
 * booleans ('true', 'false', '1', '0'), strings as they are. Throws for unknown fields.
 */
export function parseTrainConfigValue(key: string, text: string): TrainConfig[keyof TrainConfig] {
  if (!Object.hasOwn(TRAIN_DEFAULTS, key)) throw new Error(`TrainConfig: ${unknownField(key)}`);
  const def = TRAIN_DEFAULTS[key as keyof TrainConfig];
  if (typeof def === 'number') {
    const v = text.trim() === '' ? NaN : Number(text);
    if (!Number.isFinite(v)) throw new Error(`TrainConfig: ${key} must be a number, got '${text}'`);
    return v;
  }
  if (typeof def === 'boolean') {
    const t = text.toLowerCase();
    if (t === 'true' || t === '1') return true;
    if (t === 'false' || t === '0') return false;
    throw new Error(`TrainConfig: ${key} must be true or false, got '${text}'`);
  }
  return text;
}

/** The GPTConfig a TrainConfig describes, for a vocabulary of vocab_size. */
export function modelConfigOf(cfg: TrainConfig, vocab_size: number): GPTConfig {
  return gptConfig({
    n_layer: cfg.n_layer, n_head: cfg.n_head, n_embd: cfg.n_embd, block_size: cfg.block_size, vocab_size,
    dropout: cfg.dropout, bias: cfg.bias, tie_embeddings: cfg.tie_embeddings, pos_encoding: cfg.pos_encoding,
    norm_placement: cfg.norm_placement, norm: cfg.norm, activation: cfg.activation, layer_norm_epsilon: cfg.layer_norm_epsilon,
    attention: cfg.attention, n_kv_head: cfg.n_kv_head === 0 ? undefined : cfg.n_kv_head, attn_window: cfg.attn_window,
    attn_stride: cfg.attn_stride, attn_summary: cfg.attn_summary, performer_features: cfg.performer_features,
    performer_redraw_interval: cfg.performer_redraw_interval, linformer_k: cfg.linformer_k,
    // Dense models leave the moe_* fields out (their defaults), keeping config.json as it was.
    ...(cfg.moe_experts > 0 ? {
      moe_experts: cfg.moe_experts, moe_top_k: cfg.moe_top_k, moe_capacity_factor: cfg.moe_capacity_factor,
      moe_aux_loss_coef: cfg.moe_aux_loss_coef, moe_every: cfg.moe_every,
    } : {}),
  });
}

// ---------------------------------------------------------------- checkpoint tensors

// The format itself is Node-free (the URL loader shares it); re-exported for existing importers.
export { checkpointConfigJson, checkpointTensorsToState, modelToCheckpointTensors } from '../models/checkpoint-format.js';

/** The GPTConfig of a checkpoint's config.json: attn's own under "attn", else a Hugging Face GPT-2 config. */
export function gptConfigFromCheckpointJson(json: Record<string, unknown>, path = 'config.json'): GPTConfig {
  try {
    return gptConfigFromJson(json);
  } catch (e) {
    throw new CheckpointError(path, (e as Error).message);
  }
}

export interface LoadedGPT {
  model: GPT;
  config: GPTConfig;
  checkpoint: LoadedCheckpoint;
}

/**
 * Loads a checkpoint directory this trainer wrote (or a Hugging Face GPT-2 one) into a GPT,
 * in eval mode. Errors name the file at fault.
 */
export async function loadGPTCheckpoint(dir: string, opts: { backend?: Backend; dtype?: DType; requireOptimizer?: boolean } = {}): Promise<LoadedGPT> {
  const ckpt = await loadCheckpoint(dir, { requireOptimizer: opts.requireOptimizer });
  const config = gptConfigFromCheckpointJson(ckpt.config, join(ckpt.dir, 'config.json'));
  const model = new GPT(config, { backend: opts.backend, dtype: opts.dtype, init: false });
  try {
    loadModelTensors(model, ckpt);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model: model.eval(), config, checkpoint: ckpt };
}

function loadModelTensors(model: Module, ckpt: LoadedCheckpoint): void {
  const file = join(ckpt.dir, MODEL_FILE);
  // GPT2Model checkpoints (no 'transformer.' prefix) and tied lm_head copies, as HF writes them.
  const expected = checkpointShapes(model);
  const tensors = canonicalCheckpointTensors(ckpt.tensors, !expected.has('lm_head.weight'));
  checkShapes(expected, tensors, file);
  const problem = nonFloatTensorProblem(tensors);
  if (problem !== null) throw new CheckpointError(file, problem);
  model.loadStateDict(checkpointTensorsToState(tensors));
}

// ---------------------------------------------------------------- one training step

/** What the step functions need of a model: a Module whose forward returns a loss. */
export interface LossModel extends Module {
  /** loss: the objective minimised; ceLoss (optional): its cross-entropy part, for logging. */
  forward(idx: Tensor, targets?: Tensor): { loss?: Tensor; ceLoss?: Tensor; auxLoss?: Tensor };
}

/** Routing statistics of a step, averaged over its micro-batches; keys are layer indices. */
export interface MoEStepStats {
  /** Mean of the MoE layers' aux losses summed (what the loss adds to the cross-entropy). */
  auxLoss: number;
  /** Share of the routed choices per expert. */
  util: Record<string, number[]>;
  /** Share of the routed choices dropped for capacity. */
  dropped: Record<string, number>;
}

/** [layer index, MoE] for each mixture-of-experts layer of the model (by module name). */
function moeLayersOf(model: Module): [string, MoE][] {
  const out: [string, MoE][] = [];
  for (const [name, m] of model.namedModules()) {
    if (m instanceof MoE) out.push([/\.h\.(\d+)\./.exec(`.${name}.`)?.[1] ?? name, m]);
  }
  return out;
}

interface Accumulated {
  loss: number;
  ceLoss: number;
  moe: MoEStepStats | null;
}

/**
 * Forward and backward over the micro-batches, gradients scaled by 1/k. The losses stay on
 * the device as one (3,) tensor [loss, cross-entropy, aux] of means over the micro-batches,
 * so a GPU backend is not made to wait for a read-back between micro-batches.
 */
function accumulateOnDevice(model: LossModel, batches: readonly Batch[]): { sums: Tensor; moe: MoEStepStats | null } {
  const backend = backendOf(model);
  const k = batches.length;
  const moeLayers = moeLayersOf(model);
  const moe: MoEStepStats | null = moeLayers.length ? { auxLoss: 0, util: {}, dropped: {} } : null;
  let sums: Tensor | null = null;
  for (const b of batches) {
    const next: Tensor = tidy(() => {
      const [x, y] = batchTensors(b, backend);
      const out = model.forward(x, y);
      const loss = out.loss;
      if (!loss) throw new Error('accumulateGradients: the model returned no loss');
      (k > 1 ? div(loss, k) : loss).backward();
      return noGrad(() => {
        const scalars = [loss, out.ceLoss ?? loss, out.auxLoss ?? mul(loss, 0)].map((t) => reshape(t, [1]));
        const part = div(concat(scalars), k);
        return sums ? add(sums, part) : part;
      });
    });
    sums?.dispose();
    sums = next;
    if (moe) {
      for (const [layer, m] of moeLayers) {
        const st = m.lastStats;
        if (!st) continue;
        const u = (moe.util[layer] ??= new Array<number>(st.tokensPerExpert.length).fill(0));
        st.tokensPerExpert.forEach((f, e) => (u[e]! += f / k));
        moe.dropped[layer] = (moe.dropped[layer] ?? 0) + st.dropped / k;
      }
    }
  }
  return { sums: sums!, moe };
}

function accumulate(model: LossModel, batches: readonly Batch[]): Accumulated {
  const { sums, moe } = accumulateOnDevice(model, batches);
  const [loss, ce, aux] = sums.data();
  sums.dispose();
  if (moe) moe.auxLoss = aux!;
  return { loss: loss!, ceLoss: ce!, moe };
}

/** A non-finite loss or gradient norm; `step` is the iteration (-1 when unknown). */
export class TrainingDivergedError extends Error {
  constructor(readonly step: number, readonly what: string, readonly value: number, detail = '') {
    super(`training diverged at step ${step}: ${what} is ${value}${detail ? `; ${detail}` : ''}`);
    this.name = 'TrainingDivergedError';
  }
}

function batchTensors(b: Batch, backend: Backend): [Tensor, Tensor] {
  const shape = [b.batchSize, b.blockSize];
  return [tensor(b.x, { shape, dtype: 'int32', backend }), tensor(b.y, { shape, dtype: 'int32', backend })]; // (B, T) each
}

function backendOf(model: Module): Backend {
  const p = model.parameters()[0];
  if (!p) throw new Error('the model has no parameters');
  return p.backend;
}

/**
 * Forward and backward over each micro-batch, adding the gradients of loss / k into the
 * parameters' .grad (so k micro-batches of B/k rows give the gradient of one batch of B).
 * Returns the mean loss; stops at the first non-finite loss and returns it.
 */
export function accumulateGradients(model: LossModel, batches: readonly Batch[]): number {
  return accumulate(model, batches).loss;
}

/** The global L2 norm of the parameters' gradients, √(Σ Σ g²), computed with the ops.
 *  Parameters without a gradient (e.g. experts that got no tokens) count as zero. */
export function gradNorm(params: readonly Tensor[]): number {
  const sq = gradNormSquared(params);
  if (!sq) return 0;
  const v = sq.item();
  sq.dispose();
  return Math.sqrt(v);
}

/** Σ Σ g² over the parameters' gradients as a one-element tensor (null when none has one). */
function gradNormSquared(params: readonly Tensor[]): Tensor | null {
  return noGrad(() =>
    tidy(() => {
      let acc: Tensor | null = null;
      for (const p of params) {
        if (!p.grad) continue;
        const s = sum(square(p.grad)); // scalar
        acc = acc ? add(acc, s) : s;
      }
      return acc ? reshape(acc, [1]) : null;
    }),
  );
}

/** Multiplies every gradient by `factor`, in place. */
export function scaleGrads(params: readonly Tensor[], factor: number): void {
  noGrad(() => {
    for (const p of params) {
      const g = p.grad;
      if (!g) continue;
      if (g.isContiguous() && g.offset === 0 && g.storage.refs === 1) {
        g.backend.binaryScalar('mul', g.storage, g.layout, factor, false, g.storage);
      } else {
        // A view or a shared buffer: replace rather than write through it.
        p.grad = mul(g, factor).keep();
        g.dispose();
      }
    }
  });
}

/**
 * torch.nn.utils.clip_grad_norm_: when the global norm exceeds maxNorm (> 0), scales every
 * gradient by maxNorm / (norm + 1e-6). Returns the norm before clipping.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  const norm = gradNorm(params);
  if (maxNorm > 0 && Number.isFinite(norm) && norm > maxNorm) scaleGrads(params, maxNorm / (norm + 1e-6));
  return norm;
}

export interface StepOptions {
  /** Learning rate for this update (default: the optimizer's current one). */
  lr?: number;
  /** Global gradient-norm limit; 0 or absent: no clipping. */
  gradClip?: number;
  /** The iteration, for error messages. */
  step?: number;
}

export interface StepResult {
  /** Mean loss over the micro-batches (before the update): the objective, aux losses included. */
  loss: number;
  /** Its cross-entropy part (equal to loss for dense models). */
  ceLoss: number;
  /** Routing statistics, for models with MoE layers. */
  moe: MoEStepStats | null;
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

/**
 * One optimizer update: accumulate gradients over the micro-batches, clip, AdamW. A
 * non-finite loss or gradient norm throws TrainingDivergedError before anything changes.
 */
export function trainStep(model: LossModel, opt: AdamW, batches: readonly Batch[], opts: StepOptions = {}): StepResult {
  if (batches.length === 0) throw new Error('trainStep: no batches');
  const step = opts.step ?? -1;
  const params = model.parameters();
  opt.zeroGrad();
  try {
    // One read-back per update: the losses and the squared gradient norm together.
    const { sums, moe } = accumulateOnDevice(model, batches);
    const normSq = gradNormSquared(params);
    const values = noGrad(() => tidy(() => (normSq ? concat([sums, normSq]) : sums).data()));
    sums.dispose();
    normSq?.dispose();
    const [loss, ceLoss, aux] = [values[0]!, values[1]!, values[2]!];
    if (moe) moe.auxLoss = aux;
    if (!Number.isFinite(loss)) throw new TrainingDivergedError(step, 'the training loss', loss);
    const norm = normSq ? Math.sqrt(values[3]!) : 0;
    if (!Number.isFinite(norm)) throw new TrainingDivergedError(step, 'the gradient norm', norm);
    const maxNorm = opts.gradClip ?? 0;
    if (maxNorm > 0 && norm > maxNorm) scaleGrads(params, maxNorm / (norm + 1e-6));
    if (opts.lr !== undefined) opt.lr = opts.lr;
    opt.stepUpdate();
    return { loss, ceLoss, moe, gradNorm: norm };
  } finally {
    opt.zeroGrad(); // the gradients are dead weight until the next step
  }
}

/**
 * trainStep with nothing read back: the losses and the squared gradient norm stay on the
 * backend as `stats` = [loss, ceLoss, auxLoss, normSq] (4,), and clipping happens there too
 * (as torch.nn.utils.clip_grad_norm_: gradients times min(1, gradClip / (norm + 1e-6))). A GPU
 * then runs update after update while the host queues the next; the caller reads a window of
 * stats at once (readQueuedStats), which also finds a non-finite loss or norm and its step.
 */
export function trainStepQueued(model: LossModel, opt: AdamW, batches: readonly Batch[], opts: StepOptions = {}): { stats: Tensor; moe: MoEStepStats | null } {
  if (batches.length === 0) throw new Error('trainStep: no batches');
  const params = model.parameters();
  opt.zeroGrad();
  try {
    const { sums, moe } = accumulateOnDevice(model, batches);
    const normSq = gradNormSquared(params);
    const stats = noGrad(() => tidy(() => concat([sums, normSq ?? zeros([1], { backend: sums.backend })]))).keep();
    sums.dispose();
    const maxNorm = opts.gradClip ?? 0;
    if (maxNorm > 0 && normSq) {
      const scale = noGrad(() => tidy(() => minimum(div(tensor([maxNorm], { backend: normSq.backend }), add(sqrt(normSq), 1e-6)), 1)));
      noGrad(() => {
        for (const p of params) {
          const g = p.grad;
          if (!g) continue;
          p.grad = mul(g, scale).keep(); // (1,) broadcast over the gradient
          g.dispose();
        }
      });
      scale.dispose();
    }
    normSq?.dispose();
    if (opts.lr !== undefined) opt.lr = opts.lr;
    opt.stepUpdate();
    return { stats, moe };
  } finally {
    opt.zeroGrad();
  }
}

/**
 * Reads the stats of queued steps (trainStepQueued) in one read and disposes them: per step
 * the loss, the cross-entropy, the aux loss and the gradient norm. The first step whose loss
 * or norm is not finite throws TrainingDivergedError with that step.
 */
export function readQueuedStats(queue: readonly { step: number; stats: Tensor }[]): { step: number; loss: number; ceLoss: number; auxLoss: number; gradNorm: number }[] {
  if (queue.length === 0) return [];
  const values = noGrad(() => tidy(() => concat(queue.map((q) => q.stats)).data()));
  for (const q of queue) q.stats.dispose();
  return queue.map((q, i) => {
    const [loss, ceLoss, auxLoss, normSq] = [values[4 * i]!, values[4 * i + 1]!, values[4 * i + 2]!, values[4 * i + 3]!];
    if (!Number.isFinite(loss)) throw new TrainingDivergedError(q.step, 'the training loss', loss);
    const gradNorm = Math.sqrt(normSq);
    if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(q.step, 'the gradient norm', gradNorm);
    return { step: q.step, loss, ceLoss, auxLoss, gradNorm };
  });
}

/** Mean loss over `iters` batches from the sampler, in eval mode (no dropout) without gradients:
 *  the cross-entropy (ceLoss) when the model reports it, so MoE aux losses are left out. The
 *  losses are summed on the backend and read once, so a GPU runs the batches back to back. */
export function estimateLoss(model: LossModel, sampler: BatchSampler, iters: number): number {
  const backend = backendOf(model);
  const wasTraining = model.training;
  model.eval();
  let total = null as Tensor | null;
  try {
    for (let i = 0; i < iters; i++) {
      const b = sampler.next();
      const prev = total;
      total = noGrad(() =>
        tidy(() => {
          const [x, y] = batchTensors(b, backend);
          const { loss, ceLoss } = model.forward(x, y);
          if (!loss) throw new Error('estimateLoss: the model returned no loss');
          const l = ceLoss ?? loss;
          return prev ? prev.add(l) : l;
        }),
      );
      prev?.dispose();
    }
    return total ? total.item() / iters : NaN;
  } finally {
    total?.dispose();
    model.train(wasTraining);
  }
}

// ---------------------------------------------------------------- metrics and the loss plot

/**
 * One line of metrics.jsonl. Training records (every log_interval steps) carry train_loss
 * (the mean loss of that step's batches, before its update: the objective minimised, MoE aux
 * losses included), ce_loss (its cross-entropy part), lr, grad_norm, dt_ms and tokens_per_s,
 * and for MoE models moe_aux_loss, moe_util and moe_dropped; records of evaluation steps also
 * carry val_loss and eval_train_loss (mean cross-entropy over eval_iters batches of the model
 * as it was before that step's update). The record of
 * the final evaluation, after the last update, has no training fields.
 */
export interface MetricsRecord {
  step: number;
  train_loss?: number;
  /** Cross-entropy part of train_loss. */
  ce_loss?: number;
  /** Sum over MoE layers of the load-balancing losses (included in train_loss). */
  moe_aux_loss?: number;
  /** Layer index → share of the routed choices per expert (sums to 1). */
  moe_util?: Record<string, number[]>;
  /** Layer index → share of the routed choices dropped for capacity. */
  moe_dropped?: Record<string, number>;
  lr: number;
  grad_norm?: number;
  dt_ms?: number;
  tokens_per_s?: number;
  /** Training tokens processed so far, this record's step included. */
  tokens: number;
  elapsed_s: number;
  val_loss?: number;
  eval_train_loss?: number;
}

/** A record from a training step (what onLog receives). */
export type StepMetrics = MetricsRecord & { train_loss: number; grad_norm: number; dt_ms: number; tokens_per_s: number };

export interface EvalResult {
  /** Updates done when evaluated. */
  step: number;
  train_loss: number;
  val_loss: number;
  best_val_loss: number;
  /** Checkpoints written by this evaluation ('last', 'best'). */
  saved: string[];
}

export interface PlotOptions {
  title?: string;
  width?: number;
  height?: number;
}

function niceTicks(lo: number, hi: number, target: number): { ticks: number[]; step: number } {
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const r = raw / mag;
  const step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  const ticks: number[] = [];
  for (let i = Math.ceil(lo / step - 1e-9); i * step <= hi + step * 1e-9; i++) ticks.push(i * step);
  return { ticks, step };
}

function tickLabel(v: number, step: number): string {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(decimals);
}

const xmlEscape = (s: string): string => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * An SVG line plot of train_loss (per logged step) and val_loss (at evaluations) against
 * step, with axes, ticks, grid and a legend. Hand-written SVG 1.1, no dependency.
 */
export function lossPlotSvg(records: readonly MetricsRecord[], opts: PlotOptions = {}): string {
  const W = opts.width ?? 720;
  const H = opts.height ?? 420;
  const m = { l: 64, r: 24, t: 40, b: 52 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const finite = (v: number | undefined): v is number => typeof v === 'number' && Number.isFinite(v);
  const series = [
    { name: 'train', color: '#1f77b4', markers: false, points: records.filter((r) => finite(r.train_loss)).map((r) => [r.step, r.train_loss!] as const) },
    { name: 'val', color: '#d62728', markers: true, points: records.filter((r) => finite(r.val_loss)).map((r) => [r.step, r.val_loss!] as const) },
  ];
  const all = series.flatMap((s) => s.points);
  let [x0, x1] = all.length ? [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))] : [0, 1];
  let [y0, y1] = all.length ? [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))] : [0, 1];
  if (x1 <= x0) [x0, x1] = [x0 - 1, x0 + 1];
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 0.5, y0 + 0.5];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const sx = (x: number): number => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number): number => m.t + (1 - (y - y0) / (y1 - y0)) * ph;
  const f = (v: number): string => v.toFixed(1);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${xmlEscape(opts.title ?? 'loss')}</text>`);
  const xt = niceTicks(x0, x1, 6);
  const yt = niceTicks(y0, y1, 6);
  out.push('<g stroke="#e5e5e5" stroke-width="1">');
  for (const v of xt.ticks) out.push(`<line x1="${f(sx(v))}" y1="${m.t}" x2="${f(sx(v))}" y2="${m.t + ph}"/>`);
  for (const v of yt.ticks) out.push(`<line x1="${m.l}" y1="${f(sy(v))}" x2="${m.l + pw}" y2="${f(sy(v))}"/>`);
  out.push('</g>');
  out.push(`<g stroke="black" stroke-width="1"><line x1="${m.l}" y1="${m.t + ph}" x2="${m.l + pw}" y2="${m.t + ph}"/><line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${m.t + ph}"/>`);
  for (const v of xt.ticks) out.push(`<line x1="${f(sx(v))}" y1="${m.t + ph}" x2="${f(sx(v))}" y2="${m.t + ph + 5}"/>`);
  for (const v of yt.ticks) out.push(`<line x1="${m.l - 5}" y1="${f(sy(v))}" x2="${m.l}" y2="${f(sy(v))}"/>`);
  out.push('</g>');
  for (const v of xt.ticks) out.push(`<text x="${f(sx(v))}" y="${m.t + ph + 19}" text-anchor="middle">${tickLabel(v, xt.step)}</text>`);
  for (const v of yt.ticks) out.push(`<text x="${m.l - 8}" y="${f(sy(v) + 4)}" text-anchor="end">${tickLabel(v, yt.step)}</text>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 12}" text-anchor="middle">step</text>`);
  out.push(`<text x="16" y="${m.t + ph / 2}" text-anchor="middle" transform="rotate(-90 16 ${m.t + ph / 2})">loss</text>`);
  for (const s of series) {
    if (!s.points.length) continue;
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${s.points.map(([x, y]) => `${f(sx(x))},${f(sy(y))}`).join(' ')}"/>`);
    if (s.markers) for (const [x, y] of s.points) out.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3" fill="${s.color}"/>`);
  }
  const lx = m.l + pw - 92;
  out.push(`<g><rect x="${lx}" y="${m.t + 8}" width="84" height="46" fill="white" stroke="#999"/>`);
  series.forEach((s, i) => {
    const y = m.t + 24 + i * 20;
    out.push(`<line x1="${lx + 8}" y1="${y}" x2="${lx + 32}" y2="${y}" stroke="${s.color}" stroke-width="2"/>`);
    if (s.markers) out.push(`<circle cx="${lx + 20}" cy="${y}" r="3" fill="${s.color}"/>`);
    out.push(`<text x="${lx + 40}" y="${y + 4}">${s.name}</text>`);
  });
  out.push('</g>');
  out.push('</svg>');
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------- the training loop

export interface StartInfo {
  config: TrainConfig;
  modelConfig: GPTConfig;
  model: GPT;
  optimizer: AdamW;
  /** The iteration training starts from (0, or the checkpoint's on resume). */
  startIter: number;
  resumed: boolean;
  numParams: number;
  /** Tokens per optimizer update. */
  tokensPerIter: number;
  backend: Backend;
}

/** The hooks every training loop here calls (this one and trainSeq2Seq's). */
export interface LoopHooks<Start, Log, Eval> {
  /** Called once the model is built (and loaded, on resume), before the first step. */
  onStart?(info: Start): void;
  /** Every metrics record written to metrics.jsonl from a training step. */
  onLog?(metrics: Log): void;
  /** After each evaluation (and the checkpoints it wrote). */
  onEval?(result: Eval): void;
  /** Notes worth showing a person (resume details, changed settings). */
  onMessage?(text: string): void;
  /** Aborting stops training at the next step boundary, after saving out_dir/last. */
  signal?: AbortSignal;
}

export interface TrainHooks extends LoopHooks<StartInfo, StepMetrics, EvalResult> {
  /** After every update: steps done, total, smoothed tokens/s, that step's loss. */
  onProgress?(step: number, maxIters: number, tokensPerS: number, loss: number): void;
}

export interface TrainResult {
  /** Updates done. */
  iter: number;
  best_val_loss: number;
  last_eval: EvalResult | null;
  /** True when hooks.signal stopped the run early. */
  stopped: boolean;
  out_dir: string;
}

export const LAST_DIR = 'last';
export const BEST_DIR = 'best';
export const METRICS_FILE = 'metrics.jsonl';
export const PLOT_FILE = 'loss.svg';
const TRAINER_STATE_FORMAT = 'attn-trainer-state';

/** trainer_state.json. */
export interface TrainerState {
  format: typeof TRAINER_STATE_FORMAT;
  version: 1;
  /** Updates done; training resumes with this iteration. */
  iter: number;
  best_val_loss: number | null;
  last_eval: { step: number; train_loss: number; val_loss: number } | null;
  optimizer_step: number;
  tokens: number;
  elapsed_s: number;
  samplers: { train: SamplerState; eval_train: SamplerState; eval_val: SamplerState };
  /** States of the dropout Generators, in module order. */
  rng: { dropout: (number | null)[][] };
  config: TrainConfig;
  model_config: GPTConfig;
}

// Distinct streams per purpose, so the batches do not depend on how the weights were drawn.
const seedFor = (seed: number, salt: number): number => (seed ^ salt) >>> 0;

interface Run {
  cfg: TrainConfig;
  model: GPT;
  opt: AdamW;
  train: BatchSampler;
  evalTrain: BatchSampler;
  evalVal: BatchSampler;
  dropout: Generator[];
  iter: number;
  bestVal: number;
  lastEval: TrainerState['last_eval'];
  tokens: number;
  elapsedBefore: number;
  records: MetricsRecord[];
}

/** The distinct generators of the model's Dropout layers (their state is saved for exact resume). */
export function dropoutGenerators(model: Module): Generator[] {
  const gens: Generator[] = [];
  for (const [, m] of model.namedModules()) if (m instanceof Dropout && !gens.includes(m.generator)) gens.push(m.generator);
  return gens;
}

function makeOptimizer(model: GPT, cfg: TrainConfig): AdamW {
  return new AdamW(model.parameters(), { lr: cfg.learning_rate, betas: [cfg.beta1, cfg.beta2], weightDecay: cfg.weight_decay });
}

function makeSamplers(cfg: TrainConfig, data: Dataset): Pick<Run, 'train' | 'evalTrain' | 'evalVal'> {
  const o = { batchSize: cfg.batch_size, blockSize: cfg.block_size };
  for (const [split, ids] of [['train', data.train], ['val', data.val]] as const) {
    if (ids.length <= cfg.block_size) throw new Error(`train: the ${split} split of ${data.dir} has ${ids.length} tokens, too few for block_size ${cfg.block_size}`);
  }
  return {
    train: new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x2545f491) }),
    evalTrain: new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x9e3779b9) }),
    evalVal: new BatchSampler(data.val, { ...o, seed: seedFor(cfg.seed, 0x7f4a7c15) }),
  };
}

function freeRun(run: Pick<Run, 'model' | 'opt'>): void {
  for (const s of run.opt.stateTensors()) {
    s.m.dispose();
    s.v.dispose();
  }
  run.model.dispose();
}

const isObj = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);

/** Validates trainer_state.json; errors name the file. */
function parseTrainerState(json: Record<string, unknown>, path: string): TrainerState {
  const problems: string[] = [];
  const int = (k: string): void => {
    if (!(Number.isInteger(json[k]) && (json[k] as number) >= 0)) problems.push(`'${k}' must be a non-negative integer, got ${JSON.stringify(json[k])}`);
  };
  if (json['format'] !== TRAINER_STATE_FORMAT || json['version'] !== 1) problems.push(`not an attn trainer state (format ${JSON.stringify(json['format'])}, version ${JSON.stringify(json['version'])})`);
  int('iter');
  int('optimizer_step');
  int('tokens');
  if (typeof json['elapsed_s'] !== 'number') problems.push(`'elapsed_s' must be a number`);
  if (json['best_val_loss'] !== null && typeof json['best_val_loss'] !== 'number') problems.push(`'best_val_loss' must be a number or null`);
  const s = json['samplers'];
  if (!isObj(s) || !['train', 'eval_train', 'eval_val'].every((k) => isObj(s[k]))) problems.push(`'samplers' must hold train, eval_train and eval_val states`);
  const rng = json['rng'];
  if (!isObj(rng) || !Array.isArray(rng['dropout'])) problems.push(`'rng.dropout' must be a list of generator states`);
  if (!isObj(json['config'])) problems.push(`'config' must be an object`);
  const le = json['last_eval'];
  if (le !== null && !(isObj(le) && Number.isInteger(le['step']) && typeof le['val_loss'] === 'number' && typeof le['train_loss'] === 'number')) problems.push(`'last_eval' must be null or {step, train_loss, val_loss}`);
  if (problems.length) throw new CheckpointError(path, problems.join('; '));
  return json as unknown as TrainerState;
}

async function freshRun(cfg: TrainConfig, data: Dataset, backend: Backend): Promise<Run> {
  const samplers = makeSamplers(cfg, data);
  const model = new GPT(modelConfigOf(cfg, data.meta.vocab_size), { backend, dtype: cfg.dtype, seed: cfg.seed });
  return {
    cfg, model, opt: makeOptimizer(model, cfg), ...samplers, dropout: dropoutGenerators(model),
    iter: 0, bestVal: Infinity, lastEval: null, tokens: 0, elapsedBefore: 0, records: [],
  };
}

/** Reads the TrainConfig saved in out_dir/last (for a CLI that resumes without restating it). */
export async function readResumeConfig(outDir: string): Promise<TrainConfig> {
  const path = join(resolve(outDir), LAST_DIR, TRAINER_STATE_FILE);
  const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw e.code === 'ENOENT' ? new CheckpointError(path, 'missing: nothing to resume') : e;
  });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(path, `invalid JSON: ${(e as Error).message}`);
  }
  if (!isObj(json)) throw new CheckpointError(path, 'must hold a JSON object');
  return trainConfig(parseTrainerState(json, path).config);
}

async function resumeRun(cfg0: TrainConfig, data: Dataset, backend: Backend, say: (s: string) => void): Promise<Run> {
  const dir = join(resolve(cfg0.out_dir), LAST_DIR);
  const ckpt = await loadCheckpoint(dir, { requireOptimizer: true });
  const statePath = join(ckpt.dir, TRAINER_STATE_FILE);
  const state = parseTrainerState(ckpt.trainerState!, statePath);
  const modelConfig = gptConfigFromCheckpointJson(ckpt.config, join(ckpt.dir, 'config.json'));
  // The model's shape comes from the checkpoint (as nanoGPT does); the rest from this config.
  const cfg: TrainConfig = { ...cfg0 };
  const changedArch: string[] = [];
  const fullModel = fullGPTConfig(modelConfig);
  for (const k of ARCH_FIELDS) {
    if (cfg[k] !== fullModel[k]) changedArch.push(`${k} ${String(cfg[k])} -> ${String(fullModel[k])}`);
    (cfg as unknown as Record<string, unknown>)[k] = fullModel[k];
  }
  if (changedArch.length) say(`resume: using the checkpoint's model shape (${changedArch.join(', ')})`);
  const changed = Object.keys(TRAIN_DEFAULTS).filter((k) => !(ARCH_FIELDS as readonly string[]).includes(k) && k !== 'init_from' && (state.config as unknown as Record<string, unknown>)[k] !== (cfg as unknown as Record<string, unknown>)[k]);
  if (changed.length) say(`resume: settings differ from the saved run: ${changed.map((k) => `${k} ${JSON.stringify((state.config as unknown as Record<string, unknown>)[k])} -> ${JSON.stringify((cfg as unknown as Record<string, unknown>)[k])}`).join(', ')}`);
  if (modelConfig.vocab_size !== data.meta.vocab_size) {
    throw new CheckpointError(join(ckpt.dir, 'config.json'), `vocab_size ${modelConfig.vocab_size} does not match the dataset's ${data.meta.vocab_size} (${data.dir})`);
  }
  const samplers = makeSamplers(cfg, data);
  const model = new GPT({ ...modelConfig, dropout: cfg.dropout }, { backend, dtype: cfg.dtype, init: false, seed: cfg.seed });
  const opt = makeOptimizer(model, cfg);
  const run: Run = {
    cfg, model, opt, ...samplers, dropout: dropoutGenerators(model),
    iter: state.iter, bestVal: state.best_val_loss ?? Infinity, lastEval: state.last_eval,
    tokens: state.tokens, elapsedBefore: state.elapsed_s, records: [],
  };
  try {
    loadModelTensors(model, ckpt);
    const optPath = join(ckpt.dir, OPTIMIZER_FILE);
    const named = model.namedParameters();
    const expected = new Map<string, readonly number[]>();
    for (const [name, p] of named) {
      expected.set(`${name}.m`, p.shape);
      expected.set(`${name}.v`, p.shape);
    }
    checkShapes(expected, ckpt.optimizer!, optPath);
    opt.stateTensors().forEach((s, i) => {
      const name = named[i]![0];
      s.m.backend.write(s.m.storage, ckpt.optimizer!.get(`${name}.m`)!.data, 0);
      s.v.backend.write(s.v.storage, ckpt.optimizer!.get(`${name}.v`)!.data, 0);
    });
    opt.step = state.optimizer_step;
    try {
      run.train.setState(state.samplers.train);
      run.evalTrain.setState(state.samplers.eval_train);
      run.evalVal.setState(state.samplers.eval_val);
      if (state.rng.dropout.length !== run.dropout.length) throw new Error(`${state.rng.dropout.length} dropout generator states for ${run.dropout.length} generators`);
      run.dropout.forEach((g, i) => rngStateFromJson(g, state.rng.dropout[i], `rng.dropout[${i}]`));
    } catch (e) {
      throw new CheckpointError(statePath, (e as Error).message);
    }
  } catch (e) {
    freeRun(run);
    throw e;
  }
  say(`resuming from ${ckpt.dir} at step ${state.iter}`);
  return run;
}

async function saveRun(run: Run, dir: string, tokenizerFiles: Record<string, string>, elapsed: number, withOptimizer: boolean): Promise<void> {
  const state: TrainerState = {
    format: TRAINER_STATE_FORMAT,
    version: 1,
    iter: run.iter,
    best_val_loss: Number.isFinite(run.bestVal) ? run.bestVal : null,
    last_eval: run.lastEval,
    optimizer_step: run.opt.step,
    tokens: run.tokens,
    elapsed_s: elapsed,
    samplers: { train: run.train.state(), eval_train: run.evalTrain.state(), eval_val: run.evalVal.state() },
    rng: { dropout: run.dropout.map((g) => rngStateToJson(g)) },
    config: run.cfg,
    model_config: run.model.config,
  };
  let optimizer: Map<string, TensorEntry> | undefined;
  if (withOptimizer) {
    optimizer = new Map();
    const named = run.model.namedParameters();
    run.opt.stateTensors().forEach((s, i) => {
      const name = named[i]![0];
      const dtype = s.m.dtype === 'float64' ? 'F64' : 'F32';
      optimizer!.set(`${name}.m`, { dtype, shape: [...s.m.shape], data: s.m.data() });
      optimizer!.set(`${name}.v`, { dtype, shape: [...s.v.shape], data: s.v.data() });
    });
  }
  await saveCheckpoint(dir, {
    config: checkpointConfigJson(run.model.config),
    model: modelToCheckpointTensors(run.model),
    modelMetadata: { attn_step: String(run.iter) },
    tokenizerFiles,
    ...(optimizer ? { optimizer } : {}),
    trainerState: state,
  });
}

/** metrics.jsonl records of an earlier session, up to (not including) step `before`. */
async function readMetrics(path: string, before: number): Promise<MetricsRecord[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: MetricsRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as MetricsRecord;
      if (typeof r.step === 'number' && r.step < before) out.push(r);
    } catch {
      // a line cut short by a crash
    }
  }
  return out;
}

const nextTick = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * Trains a GPT on cfg.dataset as nanoGPT's train.py does. Per iteration `it` (0-based): every
 * eval_interval iterations (and after the last update) it evaluates both splits, saves
 * out_dir/last (always_save_checkpoint) and out_dir/best (when val improved; not at step 0),
 * then makes one update from gradient_accumulation_steps micro-batches. max_iters updates in
 * all. A non-finite loss throws TrainingDivergedError naming the step, leaving the
 * checkpoints as they were.
 */
export async function train(input: Partial<TrainConfig> | Record<string, unknown>, hooks: TrainHooks = {}): Promise<TrainResult> {
  const cfg0 = trainConfig(input);
  const say = (s: string): void => hooks.onMessage?.(s);
  const backend = await openDevice(cfg0.device, { threads: cfg0.threads });
  if (!backend.supports(cfg0.dtype)) throw new Error(`train: the ${cfg0.device} device does not support ${cfg0.dtype}`);
  const data = await loadDataset(cfg0.dataset);
  const tokenizerFiles = await readTokenizerFiles(data.dir, data.meta);
  const outDir = resolve(cfg0.out_dir);
  await mkdir(outDir, { recursive: true });
  const resumed = cfg0.init_from === 'resume';
  if (!resumed && !cfg0.eval_only && (await stat(join(outDir, LAST_DIR)).then(() => true, () => false))) {
    say(`starting from scratch: the checkpoints in ${outDir} will be replaced`);
  }
  const run = resumed ? await resumeRun(cfg0, data, backend, say) : await freshRun(cfg0, data, backend);
  const cfg = run.cfg;
  const lastDir = join(outDir, LAST_DIR);
  const metricsPath = join(outDir, METRICS_FILE);
  let lastSaved = resumed ? run.iter : -1;
  /** Updates queued on a GPU whose stats are not read yet (see `queued` below). */
  let queue: { step: number; stats: Tensor; moe: MoEStepStats | null }[] = [];
  try {
    if (resumed) run.records = await readMetrics(metricsPath, run.iter);
    if (!cfg.eval_only) await writeFile(metricsPath, run.records.map((r) => JSON.stringify(r) + '\n').join(''));
    const tokensPerIter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size;
    hooks.onStart?.({
      config: cfg, modelConfig: run.model.config, model: run.model, optimizer: run.opt, startIter: run.iter, resumed,
      numParams: run.model.numParameters(), tokensPerIter, backend,
    });
    const lrAt = (it: number): number => (cfg.decay_lr ? cosineLr(it, cfg) : constantLr(it, cfg));
    const t0 = performance.now();
    const elapsed = (): number => run.elapsedBefore + (performance.now() - t0) / 1000;
    const diverged = (step: number, what: string, value: number): TrainingDivergedError =>
      new TrainingDivergedError(step, what, value, lastSaved >= 0 ? `the checkpoint in ${lastDir} (step ${lastSaved}) is untouched` : 'no checkpoint was written');
    // The evaluation at the resumed step already happened (and was logged) before the save.
    let pendingEval = resumed && run.lastEval?.step === run.iter ? run.lastEval : null;
    let speed = 0;
    let stopped = false;
    // On a GPU the updates are queued (trainStepQueued) and their losses and gradient norms read
    // together once per log interval, and before an evaluation, a save or the end: no read-back
    // inside an update, so the GPU runs update after update. Elsewhere each update reads its own.
    const queued = backend.name === 'webgpu';
    queue = [];
    let windowStart = performance.now();
    let lastLoss = NaN;
    /** Reads the queued steps' stats: the last one's, with the mean wall time per queued step. */
    const drain = (): { res: StepResult; dt: number } | null => {
      if (queue.length === 0) return null;
      const q = queue;
      queue = [];
      let got: ReturnType<typeof readQueuedStats>;
      try {
        got = readQueuedStats(q);
      } catch (e) {
        for (const x of q) if (!x.stats.isDisposed) x.stats.dispose();
        if (e instanceof TrainingDivergedError) throw diverged(e.step, e.what, e.value);
        throw e;
      }
      const now = performance.now();
      const dt = (now - windowStart) / q.length;
      windowStart = now;
      const last = got[got.length - 1]!;
      const moe = q[q.length - 1]!.moe;
      if (moe) moe.auxLoss = last.auxLoss;
      lastLoss = last.loss;
      return { res: { loss: last.loss, ceLoss: last.ceLoss, moe, gradNorm: last.gradNorm }, dt };
    };
    let lastEvalResult: EvalResult | null = null;

    const writeRecord = async (r: MetricsRecord): Promise<void> => {
      run.records.push(r);
      await appendFile(metricsPath, JSON.stringify(r) + '\n');
    };

    for (let it = run.iter; ; it++) {
      run.iter = it;
      if (hooks.signal?.aborted && !cfg.eval_only) {
        drain(); // a diverged queued step throws here, before anything is saved
        if (lastSaved !== it && it > 0) {
          await saveRun(run, lastDir, tokenizerFiles, elapsed(), true);
          lastSaved = it;
        }
        say(`stopped at step ${it}; saved ${lastDir}`);
        stopped = true;
        break;
      }
      const evalNow = cfg.eval_only || it % cfg.eval_interval === 0 || it >= cfg.max_iters;
      if (evalNow && (cfg.eval_only || pendingEval?.step !== it)) {
        const trainLoss = estimateLoss(run.model, run.evalTrain, cfg.eval_iters);
        const valLoss = estimateLoss(run.model, run.evalVal, cfg.eval_iters);
        if (!Number.isFinite(trainLoss)) throw diverged(it, 'the evaluation train loss', trainLoss);
        if (!Number.isFinite(valLoss)) throw diverged(it, 'the validation loss', valLoss);
        run.lastEval = { step: it, train_loss: trainLoss, val_loss: valLoss };
        const saved: string[] = [];
        if (!cfg.eval_only && it > 0) {
          const improved = valLoss < run.bestVal;
          if (improved) run.bestVal = valLoss;
          if (cfg.always_save_checkpoint || improved) {
            await saveRun(run, lastDir, tokenizerFiles, elapsed(), true);
            lastSaved = it;
            saved.push(LAST_DIR);
          }
          if (improved) {
            await saveRun(run, join(outDir, BEST_DIR), tokenizerFiles, elapsed(), false);
            saved.push(BEST_DIR);
          }
        }
        lastEvalResult = { step: it, train_loss: trainLoss, val_loss: valLoss, best_val_loss: run.bestVal, saved };
        hooks.onEval?.(lastEvalResult);
        if (cfg.eval_only) break;
        pendingEval = run.lastEval;
        const evalRecord: MetricsRecord = { step: it, lr: lrAt(it), tokens: run.tokens, elapsed_s: elapsed(), val_loss: valLoss, eval_train_loss: trainLoss };
        // After the last update there is no training record to carry the evaluation.
        if (it >= cfg.max_iters) await writeRecord(evalRecord);
        const plotted = it >= cfg.max_iters ? run.records : [...run.records, evalRecord];
        await writeFileAtomic(join(outDir, PLOT_FILE), lossPlotSvg(plotted, { title: `loss: ${basename(data.dir)}` }));
      }
      if (it >= cfg.max_iters) break;

      const lr = lrAt(it);
      const start = performance.now();
      const batches: Batch[] = [];
      for (let k = 0; k < cfg.gradient_accumulation_steps; k++) batches.push(run.train.next());
      const withEval = pendingEval?.step === it ? pendingEval : null;
      const logNow = it % cfg.log_interval === 0 || withEval !== null;
      let res: StepResult;
      let dt: number;
      run.tokens += tokensPerIter;
      if (queued) {
        if (queue.length === 0) windowStart = start;
        const q = trainStepQueued(run.model, run.opt, batches, { lr, gradClip: cfg.grad_clip, step: it });
        queue.push({ step: it, stats: q.stats, moe: q.moe });
        const readNow = logNow || it + 1 >= cfg.max_iters || (it + 1) % cfg.eval_interval === 0 || queue.length >= 64;
        const got = readNow ? drain() : null;
        if (got) {
          res = got.res;
          dt = got.dt;
          const tps = tokensPerIter / (dt / 1000);
          speed = speed === 0 ? tps : 0.9 * speed + 0.1 * tps;
        } else {
          res = { loss: lastLoss, ceLoss: lastLoss, moe: null, gradNorm: NaN };
          dt = NaN;
        }
      } else {
        try {
          res = trainStep(run.model, run.opt, batches, { lr, gradClip: cfg.grad_clip, step: it });
        } catch (e) {
          if (e instanceof TrainingDivergedError) throw diverged(it, e.what, e.value);
          throw e;
        }
        dt = performance.now() - start;
        const tps = tokensPerIter / (dt / 1000);
        speed = speed === 0 ? tps : 0.9 * speed + 0.1 * tps; // smoothed for a steady ETA
      }
      const tps = tokensPerIter / (dt / 1000);
      if (logNow) {
        const rec: StepMetrics = {
          step: it, train_loss: res.loss, ce_loss: res.ceLoss,
          ...(res.moe ? { moe_aux_loss: res.moe.auxLoss, moe_util: res.moe.util, moe_dropped: res.moe.dropped } : {}),
          lr, grad_norm: res.gradNorm, dt_ms: dt, tokens_per_s: tps, tokens: run.tokens, elapsed_s: elapsed(),
          ...(withEval ? { val_loss: withEval.val_loss, eval_train_loss: withEval.train_loss } : {}),
        };
        await writeRecord(rec);
        hooks.onLog?.(rec);
      }
      pendingEval = null;
      // Queued: the loss of the last read step (at most a log interval old).
      hooks.onProgress?.(it + 1, cfg.max_iters, speed, res.loss);
      await nextTick(); // lets signals, timers and the progress display run
    }
    drain();
    return { iter: run.iter, best_val_loss: run.bestVal, last_eval: lastEvalResult, stopped, out_dir: outDir };
  } finally {
    for (const q of queue) if (!q.stats.isDisposed) q.stats.dispose();
    freeRun(run);
  }
}

// ---------------------------------------------------------------- console output

export interface ConsoleReporterOptions {
  /** Where lines go (default: process.stdout). */
  write?: (text: string) => void;
}

/** Hooks that print nanoGPT-style lines ("iter 10: loss 2.5012, time 61.2ms, lr 1.00e-4"). */
export function consoleReporter(opts: ConsoleReporterOptions = {}): TrainHooks {
  const write = opts.write ?? ((s: string) => void process.stdout.write(s));
  return {
    onStart: (i) => write(`${i.resumed ? 'resuming' : 'training'} a ${(i.numParams / 1e6).toFixed(2)}M-parameter GPT on ${i.backend.name} from step ${i.startIter}, ${i.tokensPerIter} tokens per iteration\n`),
    onLog: (m) => write(`iter ${m.step}: loss ${m.train_loss.toFixed(4)}, time ${m.dt_ms.toFixed(1)}ms, lr ${m.lr.toExponential(2)}, ${Math.round(m.tokens_per_s)} tok/s\n`),
    onEval: (e) => write(`step ${e.step}: train loss ${e.train_loss.toFixed(4)}, val loss ${e.val_loss.toFixed(4)}${e.saved.length ? ` (saved ${e.saved.join(', ')})` : ''}\n`),
    onMessage: (s) => write(`${s}\n`),
  };
}
