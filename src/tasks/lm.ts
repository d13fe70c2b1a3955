// Language modelling (nanoGPT's train.py): a GPT on a prepared token dataset, next-token
// cross-entropy (plus the MoE load-balancing loss), evaluated as the mean loss over eval_iters
// batches of each split. The loop (src/train/loop.ts) does the rest.
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { BatchSampler, type Batch } from '../data/sampler.js';
import { loadDataset, prepareDataset, readTokenizerFiles } from '../data/files.js';
import { CheckpointError } from '../io/checkpoint.js';
import { checkpointConfigJson, modelToCheckpointTensors } from '../models/checkpoint-format.js';
import { gptConfigFromCheckpointJson, loadGPTCheckpoint, loadGPTTensors } from '../models/gpt-checkpoint.js';
import { GPT, gptConfig, type GPTConfig } from '../models/gpt.js';
import type { Module } from '../nn/module.js';
import { MoE } from '../nn/moe.js';
import { noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import { CharTokenizer } from '../tokenizers/index.js';
import { parseFieldValue, resolveConfig, type TrainingConfig } from '../train/config.js';
import { accumulateOnDevice, readQueuedStats as readStats, runTraining, updateStep, updateStepQueued, type EvalResult, type LoopHooks, type LoopOptions, type StartInfo, type StepMetrics, type StepOptions, type Task } from '../train/loop.js';
import type { AdamW } from '../train/optim.js';

export type TrainConfig = TrainingConfig;

/** A language-model batch: x and y (x shifted by one), B × T token ids. */
export type { Batch };

const ARCH_FIELDS = ['block_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd', 'bias', 'tie_embeddings', 'pos_encoding', 'norm_placement', 'norm', 'activation', 'layer_norm_epsilon',
  'attention', 'attn_window', 'attn_stride', 'attn_summary', 'performer_features', 'performer_redraw_interval', 'linformer_k',
  'moe_experts', 'moe_top_k', 'moe_capacity_factor', 'moe_aux_loss_coef', 'moe_every'] as const;

/** The GPTConfig a training config describes, for a vocabulary of vocab_size. */
export function modelConfigOf(cfg: TrainConfig, vocab_size: number): GPTConfig {
  return gptConfig({
    n_layer: cfg.n_layer, n_head: cfg.n_head, n_embd: cfg.n_embd, block_size: cfg.block_size, vocab_size,
    dropout: cfg.dropout, bias: cfg.bias, tie_embeddings: cfg.tie_embeddings, pos_encoding: cfg.pos_encoding as GPTConfig['pos_encoding'],
    norm_placement: cfg.norm_placement as GPTConfig['norm_placement'], norm: cfg.norm as GPTConfig['norm'], activation: cfg.activation as GPTConfig['activation'],
    layer_norm_epsilon: cfg.layer_norm_epsilon, attention: cfg.attention as GPTConfig['attention'], n_kv_head: cfg.n_kv_head === 0 ? undefined : cfg.n_kv_head,
    attn_window: cfg.attn_window, attn_stride: cfg.attn_stride, attn_summary: cfg.attn_summary, performer_features: cfg.performer_features,
    performer_redraw_interval: cfg.performer_redraw_interval, linformer_k: cfg.linformer_k,
    // Dense models leave the moe_* fields out (their defaults), keeping config.json as it was.
    ...(cfg.moe_experts > 0 ? {
      moe_experts: cfg.moe_experts, moe_top_k: cfg.moe_top_k as 1 | 2, moe_capacity_factor: cfg.moe_capacity_factor,
      moe_aux_loss_coef: cfg.moe_aux_loss_coef, moe_every: cfg.moe_every,
    } : {}),
  });
}

/** Routing statistics of an update, averaged over its micro-batches; keys are layer indices. */
interface MoEStepStats {
  util: Record<string, number[]>;
  dropped: Record<string, number>;
}

/** [layer index, MoE] for each mixture-of-experts layer of the model. */
function moeLayersOf(model: Module): [string, MoE][] {
  const out: [string, MoE][] = [];
  for (const [name, m] of model.namedModules()) if (m instanceof MoE) out.push([/\.h\.(\d+)\./.exec(`.${name}.`)?.[1] ?? name, m]);
  return out;
}

function batchTensors(b: Batch, backend: Backend): [Tensor, Tensor] {
  const shape = [b.batchSize, b.blockSize];
  return [tensor(b.x, { shape, dtype: 'int32', backend }), tensor(b.y, { shape, dtype: 'int32', backend })]; // (B, T) each
}

const backendOf = (model: Module): Backend => model.parameters()[0]!.backend;

/** Batch → loss for a GPT, with the MoE routing statistics of each micro-batch collected. */
function lmSource(model: GPT) {
  const moeLayers = moeLayersOf(model);
  let moe: MoEStepStats = { util: {}, dropped: {} };
  return {
    parts: moeLayers.length ? ['ce_loss', 'moe_aux_loss'] : ['ce_loss'],
    loss(b: Batch) {
      const [x, y] = batchTensors(b, backendOf(model));
      const out = model.forward(x, y);
      if (!out.loss) throw new Error('the model returned no loss');
      return { loss: out.loss, parts: { ce_loss: out.ceLoss ?? out.loss, ...(out.auxLoss ? { moe_aux_loss: out.auxLoss } : {}) } };
    },
    afterMicroBatch(k: number) {
      for (const [layer, m] of moeLayers) {
        const st = m.lastStats;
        if (!st) continue;
        const u = (moe.util[layer] ??= new Array<number>(st.tokensPerExpert.length).fill(0));
        st.tokensPerExpert.forEach((f, e) => (u[e]! += f / k));
        moe.dropped[layer] = (moe.dropped[layer] ?? 0) + st.dropped / k;
      }
    },
    stepRecord(): Record<string, unknown> {
      if (!moeLayers.length) return {};
      const r = { moe_util: moe.util, moe_dropped: moe.dropped };
      moe = { util: {}, dropped: {} };
      return r;
    },
  };
}

/** Mean cross-entropy over `iters` batches of the sampler, in eval mode without gradients (MoE aux
 *  losses left out); summed on the backend and read once, so a GPU runs the batches back to back. */
export function estimateLoss(model: GPT, sampler: BatchSampler, iters: number): number {
  const wasTraining = model.training;
  model.eval();
  let total = null as Tensor | null;
  try {
    for (let i = 0; i < iters; i++) {
      const b = sampler.next();
      const prev = total;
      total = noGrad(() => tidy(() => {
        const [x, y] = batchTensors(b, backendOf(model));
        const { loss, ceLoss } = model.forward(x, y);
        const l = ceLoss ?? loss!;
        return prev ? prev.add(l) : l;
      }));
      prev?.dispose();
    }
    return total ? total.item() / iters : NaN;
  } finally {
    total?.dispose();
    model.train(wasTraining);
  }
}

// Distinct streams per purpose, so the batches do not depend on how the weights were drawn.
const seedFor = (seed: number, salt: number): number => (seed ^ salt) >>> 0;

/** A text file named by `data`: prepared (character level) into data/NAME once, then reused. */
async function preparedDataFolder(file: string, say: (s: string) => void): Promise<string> {
  const dir = join('data', basename(file, extname(file)));
  const meta = join(dir, 'meta.json');
  if (existsSync(meta) && statSync(meta).mtimeMs >= statSync(file).mtimeMs) {
    const m = JSON.parse(await readFile(meta, 'utf8')) as { source?: string };
    if (m.source === file) return dir;
  }
  if (existsSync(meta)) {
    const m = JSON.parse(await readFile(meta, 'utf8')) as { source?: string };
    if (m.source !== file) throw new Error(`${dir} holds a dataset prepared from ${m.source ?? 'another source'}; rename ${file} or pass a prepared --dataset`);
  }
  const text = await readFile(file, 'utf8');
  say(`preparing ${file} (character level) into ${dir}`);
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: dir, source: file });
  return dir;
}

export const LM_TASK: Task<Batch> = {
  task: 'lm',
  defaults: {},
  archFields: ARCH_FIELDS,
  best: { metric: 'val_loss', higher: false },
  evalAtStart: true,
  title: (cfg) => `loss: ${basename(cfg.dataset)}`,
  check(cfg, problems) {
    if (Number.isInteger(cfg.n_embd / cfg.n_head) && cfg.pos_encoding === 'rope' && (cfg.n_embd / cfg.n_head) % 2 !== 0) problems.push(`rope needs an even head size, but n_embd / n_head = ${cfg.n_embd / cfg.n_head}`);
    if (cfg.n_kv_head > 0 && cfg.n_head % cfg.n_kv_head !== 0) problems.push(`n_head (${cfg.n_head}) must be divisible by n_kv_head (${cfg.n_kv_head})`);
    if (cfg.moe_top_k !== 1 && cfg.moe_top_k !== 2) problems.push(`moe_top_k must be 1 or 2, got ${cfg.moe_top_k}`);
    else if (cfg.moe_experts > 0 && cfg.moe_top_k > cfg.moe_experts) problems.push(`moe_top_k (${cfg.moe_top_k}) must not exceed moe_experts (${cfg.moe_experts})`);
    if (cfg.checkpoint_activations && cfg.moe_experts > 0) problems.push('checkpoint_activations cannot be used with moe_experts yet: the routing statistics and aux losses would be taken from the recomputation');
    if (cfg.moe_experts > 0 && cfg.moe_every > cfg.n_layer) problems.push(`moe_every (${cfg.moe_every}) exceeds n_layer (${cfg.n_layer}): no layer would be a mixture of experts`);
  },
  async open(cfg, { backend, resume, say }) {
    if (cfg.data !== '') cfg.dataset = await preparedDataFolder(cfg.data, say);
    const data = await loadDataset(cfg.dataset);
    const tokenizerFiles = await readTokenizerFiles(data.dir, data.meta);
    for (const [split, ids] of [['train', data.train], ['val', data.val]] as const) {
      if (ids.length <= cfg.block_size) throw new Error(`the ${split} split of ${data.dir} has ${ids.length} tokens, too few for block_size ${cfg.block_size}`);
    }
    const o = { batchSize: cfg.batch_size, blockSize: cfg.block_size };
    const train = new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x2545f491) });
    const evalTrain = new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x9e3779b9) });
    const evalVal = new BatchSampler(data.val, { ...o, seed: seedFor(cfg.seed, 0x7f4a7c15) });
    let model: GPT;
    const from = resume ?? null;
    if (from) {
      const mc = gptConfigFromCheckpointJson(from.config, join(from.dir, 'config.json'));
      if (mc.vocab_size !== data.meta.vocab_size) throw new CheckpointError(join(from.dir, 'config.json'), `vocab_size ${mc.vocab_size} does not match the dataset's ${data.meta.vocab_size} (${data.dir})`);
      model = new GPT({ ...mc, dropout: cfg.dropout }, { backend, dtype: masterDtype(cfg), init: false, seed: cfg.seed });
      try {
        loadGPTTensors(model, from);
      } catch (e) {
        model.dispose();
        throw e;
      }
    } else if (cfg.init_from !== 'scratch') {
      // Fine-tuning: the checkpoint's model (and shape), trained on this dataset.
      const loaded = await loadGPTCheckpoint(cfg.init_from, { backend, dtype: masterDtype(cfg) });
      if (loaded.config.vocab_size !== data.meta.vocab_size) {
        loaded.model.dispose();
        throw new CheckpointError(join(cfg.init_from, 'config.json'), `vocab_size ${loaded.config.vocab_size} does not match the dataset's ${data.meta.vocab_size} (${data.dir})`);
      }
      model = loaded.model;
      say(`starting from ${cfg.init_from} (${(model.numParameters() / 1e6).toFixed(2)}M parameters)`);
    } else {
      model = new GPT(modelConfigOf(cfg, data.meta.vocab_size), { backend, dtype: masterDtype(cfg), seed: cfg.seed });
    }
    model.train();
    model.checkpointActivations = cfg.checkpoint_activations;
    const src = lmSource(model);
    return {
      model,
      ...src,
      info: { modelConfig: model.config, tokensPerIter: cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size },
      nextBatch: () => train.next(),
      sizeOf: (b) => b.batchSize * b.blockSize,
      evaluate: () => {
        const trainLoss = estimateLoss(model, evalTrain, cfg.eval_iters);
        const valLoss = estimateLoss(model, evalVal, cfg.eval_iters);
        return { val_loss: valLoss, eval_train_loss: trainLoss };
      },
      checkpoint: () => ({ config: checkpointConfigJson(model.config), model: modelToCheckpointTensors(model), tokenizerFiles }),
      state: () => ({ samplers: { train: train.state(), eval_train: evalTrain.state(), eval_val: evalVal.state() } }),
      setState(s) {
        const sm = s['samplers'] as Record<string, never> | undefined;
        if (!sm || !sm['train'] || !sm['eval_train'] || !sm['eval_val']) throw new Error(`'samplers' must hold train, eval_train and eval_val states`);
        train.setState(sm['train']);
        evalTrain.setState(sm['eval_train']);
        evalVal.setState(sm['eval_val']);
      },
    };
  },
};

/** Fills nanoGPT's defaults into a partial config and checks it (one error naming every problem). */
export function trainConfig(partial: Record<string, unknown> = {}): TrainConfig {
  return resolveConfig(LM_TASK, partial, 'TrainConfig');
}

/** nanoGPT's train.py defaults (GPT-2 124M on OpenWebText), with attn's GPT variant fields. */
export const TRAIN_DEFAULTS: Readonly<TrainConfig> = Object.freeze(trainConfig());

/** A command-line value for an lm field, typed by its default. */
export function parseTrainConfigValue(key: string, text: string): number | string | boolean {
  return parseFieldValue(key, text, 'lm');
}

export interface TrainResult {
  iter: number;
  best_val_loss: number;
  last_eval: EvalResult | null;
  stopped: boolean;
  out_dir: string;
}

/** What onStart tells about a language-model run. */
export type LMStartInfo = StartInfo & { model: GPT; modelConfig: GPTConfig; tokensPerIter: number };
export type LMHooks = Omit<LoopHooks, 'onStart'> & { onStart?(info: LMStartInfo): void };

/** Trains a GPT on cfg.dataset with the one loop (see runTraining). */
export async function train(input: Record<string, unknown>, hooks: LMHooks = {}, opts: LoopOptions = {}): Promise<TrainResult> {
  const r = await runTraining(LM_TASK, input, hooks as LoopHooks, opts);
  return { iter: r.iter, best_val_loss: r.best, last_eval: r.last_eval, stopped: r.stopped, out_dir: r.out_dir };
}

export interface LMStepResult {
  /** Mean loss over the micro-batches (before the update), aux losses included. */
  loss: number;
  ceLoss: number;
  gradNorm: number;
  moe: { auxLoss: number; util: Record<string, number[]>; dropped: Record<string, number> } | null;
}

/** One update of a GPT from micro-batches (the loop's update, for scripts and tests). */
export function trainStep(model: GPT, opt: AdamW, batches: readonly Batch[], opts: StepOptions = {}): LMStepResult {
  const src = lmSource(model);
  const { values, gradNorm } = updateStep(src, model.parameters(), opt, batches, opts);
  const extra = src.stepRecord() as { moe_util?: Record<string, number[]>; moe_dropped?: Record<string, number> };
  return { loss: values[0]!, ceLoss: values[1]!, gradNorm, moe: extra.moe_util ? { auxLoss: values[2]!, util: extra.moe_util, dropped: extra.moe_dropped! } : null };
}

/** trainStep with nothing read back: stats [loss, ce, (aux), normSq] stay on the device. */
export function trainStepQueued(model: GPT, opt: AdamW, batches: readonly Batch[], opts: StepOptions = {}): { stats: Tensor } {
  return { stats: updateStepQueued(lmSource(model), model.parameters(), opt, batches, opts) };
}

/** Reads queued trainStepQueued stats: per update its loss and gradient norm. */
export function readQueuedStats(queue: readonly { step: number; stats: Tensor }[]): { step: number; loss: number; gradNorm: number }[] {
  return readStats(queue).map((q) => ({ step: q.step, loss: q.values[0]!, gradNorm: q.gradNorm }));
}

/** Adds the gradients of each micro-batch's loss / k into .grad; returns the mean loss. */
export function accumulateGradients(model: GPT, batches: readonly Batch[]): number {
  const sums = accumulateOnDevice(lmSource(model), batches);
  const v = sums.data()[0]!;
  sums.dispose();
  return v;
}

export type { StepMetrics, EvalResult };

/** The weights' dtype: bfloat16 training keeps float32 master weights (its matmuls round). */
function masterDtype(cfg: TrainingConfig): 'float32' | 'float64' {
  return cfg.dtype === 'float64' ? 'float64' : 'float32';
}
