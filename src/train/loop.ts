// The one training loop. It owns what is the same for every model: the device, the optimizer and
// its saved state, gradient accumulation, gradient transforms and clipping, the learning-rate
// schedule, the evaluation cadence, best/last checkpoints (atomic saves), exact resume, the
// NaN/inf stop, the time budget, metrics.jsonl, the loss plot and the hooks a progress display
// or Ctrl-C handler uses. A task (src/tasks) supplies what differs: the model, batch → loss,
// evaluation metrics and what its checkpoint holds. Nothing here prints.
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { openDevice, type DeviceName } from '../backend/index.js';
import { lossPlotSvg, type MetricsRecord } from '../eval/plot.js';
import { CheckpointError, checkShapes, loadCheckpoint, saveCheckpoint, TRAINER_STATE_FILE, OPTIMIZER_FILE, type LoadedCheckpoint } from '../io/checkpoint.js';
import { writeFileAtomic } from '../io/files.js';
import type { TensorEntry } from '../io/safetensors.js';
import { Dropout } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { rngStateFromJson, rngStateToJson } from '../data/sampler.js';
import { setMatmulPrecision, type Tensor } from '../tensor/index.js';
import { resolveConfig, type TaskDefaults, type TrainingConfig } from './config.js';
import { AdamW } from './optim.js';
import { DpRun, type DpExamples } from './dp.js';
import { Generator } from '../tensor/random.js';
import { scheduleOf } from './schedule.js';
import { readQueuedStats, TrainingDivergedError, updateStep, updateStepQueued, type BatchLoss, type GradientTransform, type LossSource, type StepOptions } from './update.js';

export { accumulateOnDevice, clipAndStep, clipGradNorm, gradNorm, readQueuedStats, scaleGrads, TrainingDivergedError, updateStep, updateStepQueued, type BatchLoss, type GradientTransform, type LossSource, type StepOptions } from './update.js';

export type { MetricsRecord } from '../eval/plot.js';
export const LAST_DIR = 'last';
export const BEST_DIR = 'best';
export const METRICS_FILE = 'metrics.jsonl';
export const PLOT_FILE = 'loss.svg';
const STATE_FORMAT = 'attn-trainer-state';

// ---------------------------------------------------------------- what a task supplies

/** A task's model, data and metrics for one run (what Task.open returns). */
export interface TaskRun<B> {
  /** The model trained and saved; its Dropout generators are saved for exact resume. */
  model: Module;
  /** The parameters the optimizer updates (default: those with requiresGrad). */
  params?: Tensor[];
  /** Names of `parts` of every BatchLoss, in a fixed order (logged as record fields). */
  parts?: readonly string[];
  /** Replaces cfg.max_iters once the data is known (e.g. from epochs). */
  maxIters?: number;
  nextBatch(): B;
  /** Tokens (or examples) a batch holds, for tokens/s and the running count. */
  sizeOf(b: B): number;
  loss(b: B): BatchLoss;
  /** After each micro-batch's forward and backward (k: micro-batches in the update). */
  afterMicroBatch?(k: number): void;
  /** Extra fields for the update's metrics record (read once per update, then reset). */
  stepRecord?(): Record<string, unknown>;
  /** Validation metrics (val_loss at least), with the model in eval mode and no gradients. */
  evaluate(step: number): Promise<Record<string, number>> | Record<string, number>;
  /** What a checkpoint holds beside the optimizer and the trainer state. */
  checkpoint(): { config: object; model: Map<string, TensorEntry>; tokenizerFiles?: Record<string, string | Uint8Array> };
  /** Sampler positions and other task state, merged into trainer_state.json. */
  state(): Record<string, unknown>;
  setState(state: Record<string, unknown>): void;
  /** Extra plots from the records (e.g. bleu.svg), written at each evaluation. */
  plots?(records: readonly MetricsRecord[]): Record<string, string>;
  /** Merged into the onStart info. */
  info?: Record<string, unknown>;
  /** Frees what the run holds beside the model (a frozen reference model, ...). */
  dispose?(): void;
  /** The training set as separate examples, for DP-SGD's Poisson sampling (dp_clip > 0). */
  dpExamples?: DpExamples<B>;
}

export interface TaskContext {
  backend: Backend;
  /** out_dir/last when resuming (weights to load into the model the task builds). */
  resume: LoadedCheckpoint | null;
  say(text: string): void;
  /** The parallel strategy draws or loads the model's weights itself, keeping only its part
   *  (tensor parallel): a task that can builds its model inside buildDeferred (src/nn/deferred.ts). */
  deferWeights?: boolean;
}

export interface Task<B = unknown> extends TaskDefaults {
  /** Fields that shape the model: on resume they are taken from the saved config. */
  archFields: readonly string[];
  /** The evaluation metric that picks OUT/best, and its direction. */
  best: { metric: string; higher: boolean };
  /** Evaluate before the first update too (nanoGPT does). */
  evalAtStart?: boolean;
  /** Title of loss.svg. */
  title?(cfg: TrainingConfig): string;
  open(cfg: TrainingConfig, ctx: TaskContext): Promise<TaskRun<B>>;
}

// ---------------------------------------------------------------- hooks, results

export interface StartInfo {
  config: TrainingConfig;
  model: Module;
  optimizer: AdamW;
  /** The update training starts from (0, or the checkpoint's on resume). */
  startIter: number;
  maxIters: number;
  resumed: boolean;
  numParams: number;
  trainable: number;
  backend: Backend;
  [extra: string]: unknown;
}

/** A metrics record of one update (what onLog receives). */
export type StepMetrics = MetricsRecord & { train_loss: number; grad_norm: number; dt_ms: number; tokens_per_s: number };

export interface EvalResult {
  /** Updates done when evaluated. */
  step: number;
  /** The evaluation's training loss where the task measures one, else the last update's. */
  train_loss: number;
  val_loss: number;
  /** The best value of the task's best metric so far. */
  best: number;
  /** Checkpoints this evaluation wrote ('last', 'best'). */
  saved: string[];
  elapsed_s: number;
  [metric: string]: number | string[];
}


export interface LoopHooks {
  onStart?(info: StartInfo): void;
  /** Every metrics record of an update written to metrics.jsonl. */
  onLog?(metrics: StepMetrics): void;
  onEval?(result: EvalResult): void;
  /** After every update: updates done, their total, smoothed tokens/s, its loss, seconds so far. */
  onProgress?(step: number, maxIters: number, tokensPerS: number, loss: number, elapsedS: number): void;
  /** Notes worth showing a person (resume details, changed settings). */
  onMessage?(text: string): void;
  /** Aborting stops at the next update boundary, after saving out_dir/last. */
  signal?: AbortSignal;
}

export interface LoopOptions {
  /** An open backend to use instead of opening cfg.device. */
  backend?: Backend;
  gradientTransforms?: readonly GradientTransform[];
  /** Training over several processes (src/train/parallel): this process's part of it. */
  parallel?: ParallelStrategy;
}

/**
 * One rank's part in a distributed run (src/train/parallel). Every rank runs the same loop and
 * draws the same micro-batches; the strategy picks its share, makes the update across ranks (its
 * collectives keep the weights the same everywhere) and gathers sharded optimizer state for a
 * checkpoint, which only the writer saves (as it writes metrics and plots).
 */
export interface ParallelStrategy {
  readonly rank: number;
  readonly size: number;
  /** Whether this process writes checkpoints, metrics.jsonl and plots (rank 0). */
  readonly writer: boolean;
  /** This rank's micro-batches of an update's (the same on every rank). */
  share<B>(batches: readonly B[]): B[];
  /** updateStep across the ranks: the same values, norm and weights on each. */
  update<B>(src: LossSource<B>, params: readonly Tensor[], opt: AdamW, batches: readonly B[], o: StepOptions): { values: number[]; gradNorm: number };
  /** Fields for the update's metrics record (communication times). */
  stepRecord?(): Record<string, unknown>;
  /** The full moments per parameter for a checkpoint (a collective: every rank calls it). */
  optimizerState?(opt: AdamW): { m: Float32Array; v: Float32Array }[];
  /** A resumed checkpoint's moments per parameter (instead of writing them into the optimizer's tensors). */
  loadOptimizerState?(opt: AdamW, state: { m: ArrayLike<number>; v: ArrayLike<number> }[]): void;
  /** Whether the strategy's own optimizer holds every moment this rank needs: the loop's AdamW then allocates none. */
  readonly ownMoments?: boolean;
  /** Whether the task should build its model deferred (TaskContext.deferWeights): attach() then gives the weights their values. */
  readonly defersWeights?: boolean;
  /** Once the task's model and parameters exist (before any update). */
  attach?(model: Module, params: readonly Tensor[]): void;
  /** Before an evaluation (a collective): e.g. every stage's weights to every rank. */
  beforeEvaluate?(): void;
  /** Before every checkpoint (a collective): the writer's model gets whole weights to save. */
  beforeSave?(): void;
  /** After the checkpoint is written (every rank): e.g. release the writer's whole weights again. */
  afterSave?(): void;
}

export interface LoopResult {
  /** Updates done. */
  iter: number;
  /** Best value of the task's best metric (±Infinity when never evaluated after an update). */
  best: number;
  best_eval: Record<string, number> | null;
  last_eval: EvalResult | null;
  stopped: boolean;
  /** 'max_iters', 'max_minutes', 'signal' or 'eval_only'. */
  stop_reason: string;
  out_dir: string;
  best_dir: string;
  elapsed_s: number;
  config: TrainingConfig;
}

/** A non-finite loss or gradient norm; `step` is the update (-1 when unknown). */
// ---------------------------------------------------------------- one update

// ---------------------------------------------------------------- state on disk

/** The distinct generators of the model's Dropout layers (saved for exact resume). */
export function dropoutGenerators(model: Module): Generator[] {
  const gens: Generator[] = [];
  for (const [, m] of model.namedModules()) if (m instanceof Dropout && !gens.includes(m.generator)) gens.push(m.generator);
  return gens;
}

interface LoopState {
  format: typeof STATE_FORMAT;
  version: 2;
  task: string;
  /** Updates done; training resumes with this one. */
  iter: number;
  best: number | null;
  last_eval: ({ step: number } & Record<string, number>) | null;
  optimizer_step: number;
  tokens: number;
  elapsed_s: number;
  rng: { dropout: (number | null)[][] };
  config: TrainingConfig;
  [taskState: string]: unknown;
}

const isObj = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);

function parseLoopState(json: Record<string, unknown>, path: string, task: string): LoopState {
  const problems: string[] = [];
  const int = (k: string): void => {
    if (!(Number.isInteger(json[k]) && (json[k] as number) >= 0)) problems.push(`'${k}' must be a non-negative integer, got ${JSON.stringify(json[k])}`);
  };
  if (json['format'] !== STATE_FORMAT || json['version'] !== 2) problems.push(`not an attn trainer state (format ${JSON.stringify(json['format'])}, version ${JSON.stringify(json['version'])})`);
  else if (json['task'] !== task) problems.push(`a checkpoint of ${String(json['task'])} training, not ${task}`);
  int('iter');
  int('optimizer_step');
  int('tokens');
  if (typeof json['elapsed_s'] !== 'number') problems.push(`'elapsed_s' must be a number`);
  if (json['best'] !== null && typeof json['best'] !== 'number') problems.push(`'best' must be a number or null`);
  const rng = json['rng'];
  if (!isObj(rng) || !Array.isArray(rng['dropout'])) problems.push(`'rng.dropout' must be a list of generator states`);
  if (!isObj(json['config'])) problems.push(`'config' must be an object`);
  const le = json['last_eval'];
  if (le !== null && !(isObj(le) && Number.isInteger(le['step']))) problems.push(`'last_eval' must be null or {step, ...metrics}`);
  if (problems.length) throw new CheckpointError(path, problems.join('; '));
  return json as unknown as LoopState;
}

/** The training config saved in out_dir/last (for a CLI that resumes without restating it). */
export async function readResumeConfig(outDir: string): Promise<Record<string, unknown>> {
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
  if (!isObj(json) || !isObj(json['config'])) throw new CheckpointError(path, 'must hold a JSON object with the run\'s config');
  return json['config'];
}

/** metrics.jsonl records of an earlier session before update `before` (cut-short lines skipped). */
async function readMetrics(path: string, before: number): Promise<MetricsRecord[]> {
  const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return '';
    throw e;
  });
  const out: MetricsRecord[] = [];
  for (const line of text.split('\n')) {
    try {
      const r = JSON.parse(line) as MetricsRecord;
      if (typeof r.step === 'number' && r.step < before) out.push(r);
    } catch {
      // empty, or cut short by a crash
    }
  }
  return out;
}

/** Parameter names for the optimizer's state tensors, by identity. */
function paramNames(model: Module, params: readonly Tensor[]): string[] {
  const byTensor = new Map(model.namedParameters().map(([n, p]) => [p, n] as const));
  return params.map((p, i) => byTensor.get(p) ?? `param.${i}`);
}

// ---------------------------------------------------------------- the loop

/** { rss_mib } where the process can say (Node), else nothing. */
function residentMiB(): { rss_mib?: number } {
  const mu = typeof process !== 'undefined' ? process.memoryUsage : undefined;
  return mu?.rss ? { rss_mib: Math.round((mu.rss() / 2 ** 20) * 10) / 10 } : {};
}

const nextTick = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * Trains `task` per `input` (a partial config in the one vocabulary). Per update `it` (0-based):
 * every eval_interval updates (at 0 too when the task says so) and at the end it evaluates, saves
 * OUT/last (always_save_checkpoint, or when the metric improved) and OUT/best (when it improved;
 * never at 0), then makes one update from gradient_accumulation_steps micro-batches. A
 * non-finite loss or gradient norm throws TrainingDivergedError naming the update, leaving the
 * checkpoints as they were. init_from 'resume' continues OUT/last exactly (same batches,
 * schedule, dropout masks).
 */
export async function runTraining<B>(task: Task<B>, input: Record<string, unknown>, hooks: LoopHooks = {}, opts: LoopOptions = {}): Promise<LoopResult> {
  const cfg = resolveConfig(task, input, task.task);
  const backend = opts.backend ?? (await openDevice(cfg.device as DeviceName, { threads: cfg.threads }));
  if (cfg.dtype === 'float64' && (task.task !== 'lm' || !backend.supports('float64'))) {
    throw new Error(`dtype float64 trains the lm task on the ref device only (here: the ${task.task} task on the ${backend.name} device)`);
  }
  // Mixed precision: every matmul of the run, forward, backward and evaluation, rounds its
  // operands to bfloat16 (process-wide while the run lasts, like torch.autocast).
  const prev = setMatmulPrecision(cfg.dtype === 'bfloat16' ? 'bfloat16' : 'float32');
  try {
    return await trainWith(task, input, cfg, backend, hooks, opts);
  } finally {
    setMatmulPrecision(prev);
  }
}

async function trainWith<B>(task: Task<B>, input: Record<string, unknown>, cfg: TrainingConfig, backend: Backend, hooks: LoopHooks, opts: LoopOptions): Promise<LoopResult> {
  const say = (s: string): void => hooks.onMessage?.(s);
  const outDir = resolve(cfg.out_dir);
  const lastDir = join(outDir, LAST_DIR);
  const bestDir = join(outDir, BEST_DIR);
  const metricsPath = join(outDir, METRICS_FILE);
  const resumed = cfg.init_from === 'resume';
  let ckpt: LoadedCheckpoint | null = null;
  let state: LoopState | null = null;
  if (resumed) {
    ckpt = await loadCheckpoint(lastDir, { requireOptimizer: true });
    state = parseLoopState(ckpt.trainerState!, join(ckpt.dir, TRAINER_STATE_FILE), task.task);
    // The model's shape comes from the checkpoint (as nanoGPT does); the rest from this config.
    const saved = state.config as unknown as Record<string, unknown>;
    const now = cfg as unknown as Record<string, unknown>;
    const arch = task.archFields.filter((k) => saved[k] !== undefined && saved[k] !== now[k]);
    if (arch.length) say(`resume: using the checkpoint's model shape (${arch.map((k) => `${k} ${String(now[k])} -> ${String(saved[k])}`).join(', ')})`);
    const changed = Object.keys(now).filter((k) => !task.archFields.includes(k) && k !== 'init_from' && saved[k] !== undefined && saved[k] !== now[k]);
    if (changed.length) say(`resume: settings differ from the saved run: ${changed.map((k) => `${k} ${JSON.stringify(saved[k])} -> ${JSON.stringify(now[k])}`).join(', ')}`);
    cfg = { ...cfg, ...Object.fromEntries(arch.map((k) => [k, saved[k]])) };
  }
  await mkdir(outDir, { recursive: true });
  const run = await task.open(cfg, { backend, resume: ckpt, say, ...(opts.parallel?.defersWeights ? { deferWeights: true } : {}) });
  // A length known only from the data (epochs): the decay follows it unless given.
  if (run.maxIters !== undefined) cfg = { ...cfg, max_iters: run.maxIters, ...(input['lr_decay_iters'] === undefined ? { lr_decay_iters: run.maxIters } : {}) };
  const params = run.params ?? run.model.parameters().filter((p) => p.requiresGrad);
  const par = opts.parallel;
  const writer = par?.writer ?? true;
  if (par && backend.name === 'webgpu') throw new Error('--parallel trains on the cpu device only');
  par?.attach?.(run.model, params);
  const names = paramNames(run.model, params);
  const opt = new AdamW(params, { lr: cfg.learning_rate, betas: [cfg.beta1, cfg.beta2], eps: cfg.eps, weightDecay: cfg.weight_decay, ...(par?.ownMoments ? { moments: false } : {}) });
  const dropout = dropoutGenerators(run.model);
  // DP-SGD (dp_clip > 0): Poisson batches of per-example clipped, noised gradients (src/train/dp.ts).
  let dp: DpRun<B> | null = null;
  if (cfg.dp_clip > 0) {
    if (!run.dpExamples) throw new Error(`DP-SGD (dp_clip ${cfg.dp_clip}) is not available for the ${task.task} task`);
    dp = new DpRun(cfg, run.dpExamples, new Generator(cfg.seed ^ 0x5bd1e995));
  }
  const lrAt = scheduleOf(cfg);
  const higher = task.best.higher;
  const better = (a: number, b: number): boolean => (higher ? a > b : a < b);
  let iter = 0;
  let tokens = 0;
  let elapsedBefore = 0;
  let best = higher ? -Infinity : Infinity;
  let bestEval: Record<string, number> | null = null;
  let lastEval: LoopState['last_eval'] = null;
  let records: MetricsRecord[] = [];
  let queue: { step: number; stats: Tensor; extra: Record<string, unknown> }[] = [];
  const free = (): void => {
    for (const q of queue) if (!q.stats.isDisposed) q.stats.dispose();
    for (const s of opt.stateTensors()) {
      s.m.dispose();
      s.v.dispose();
    }
    run.dispose?.();
    run.model.dispose();
  };
  try {
    if (ckpt && state) {
      const expected = new Map<string, readonly number[]>();
      for (const [i, n] of names.entries()) {
        expected.set(`${n}.m`, params[i]!.shape);
        expected.set(`${n}.v`, params[i]!.shape);
      }
      checkShapes(expected, ckpt.optimizer!, join(ckpt.dir, OPTIMIZER_FILE));
      if (par?.loadOptimizerState) par.loadOptimizerState(opt, names.map((n) => ({ m: ckpt!.optimizer!.get(`${n}.m`)!.data, v: ckpt!.optimizer!.get(`${n}.v`)!.data })));
      else {
        opt.stateTensors().forEach((s, i) => {
          s.m.backend.write(s.m.storage, ckpt!.optimizer!.get(`${names[i]}.m`)!.data, 0);
          s.v.backend.write(s.v.storage, ckpt!.optimizer!.get(`${names[i]}.v`)!.data, 0);
        });
      }
      opt.step = state.optimizer_step;
      try {
        run.setState(state);
        if (state.rng.dropout.length !== dropout.length) throw new Error(`${state.rng.dropout.length} dropout generator states for ${dropout.length} generators`);
        dropout.forEach((g, i) => rngStateFromJson(g, state!.rng.dropout[i], `rng.dropout[${i}]`));
        if (dp) {
          rngStateFromJson(dp.generator, (state as unknown as Record<string, unknown>)['dp_rng'], 'dp_rng');
          dp.resumeAt(state.iter);
        }
      } catch (e) {
        throw new CheckpointError(join(ckpt.dir, TRAINER_STATE_FILE), (e as Error).message);
      }
      iter = state.iter;
      tokens = state.tokens;
      elapsedBefore = state.elapsed_s;
      best = state.best ?? best;
      lastEval = state.last_eval;
      say(`resuming from ${ckpt.dir} at step ${iter}`);
      records = await readMetrics(metricsPath, iter);
    }
    // The loaded weights and moments are in the model and the optimizer now: let their arrays go.
    ckpt = null;
    if (!cfg.eval_only && writer) await writeFile(metricsPath, records.map((r) => JSON.stringify(r) + '\n').join(''));
    let trainable = 0;
    for (const p of params) trainable += p.size;
    hooks.onStart?.({
      ...run.info, config: cfg, model: run.model, optimizer: opt, startIter: iter, maxIters: cfg.max_iters, resumed,
      numParams: run.model.numParameters(), trainable, backend,
    });
    const t0 = performance.now();
    const elapsed = (): number => elapsedBefore + (performance.now() - t0) / 1000;
    let lastSaved = resumed ? iter : -1;
    const diverged = (e: unknown): unknown => (e instanceof TrainingDivergedError
      ? new TrainingDivergedError(e.step, e.what, e.value, lastSaved >= 0 ? `the checkpoint in ${lastDir} (step ${lastSaved}) is untouched` : 'no checkpoint was written')
      : e);
    const save = async (dir: string, withOptimizer: boolean): Promise<void> => {
      par?.beforeSave?.();
      try {
        await saveNow(dir, withOptimizer);
      } finally {
        par?.afterSave?.();
      }
    };
    const saveNow = async (dir: string, withOptimizer: boolean): Promise<void> => {
      const st: LoopState = {
        ...run.state(), format: STATE_FORMAT, version: 2, task: task.task, iter, best: Number.isFinite(best) ? best : null, last_eval: lastEval,
        optimizer_step: opt.step, tokens, elapsed_s: elapsed(), rng: { dropout: dropout.map((g) => rngStateToJson(g)) }, config: cfg,
        ...(dp ? { dp_rng: rngStateToJson(dp.generator) } : {}),
      };
      let optimizer: Map<string, TensorEntry> | undefined;
      if (withOptimizer && par?.optimizerState) {
        // Sharded moments gathered from every rank (all take part; only the writer saves).
        optimizer = new Map();
        const full = par.optimizerState(opt);
        opt.stateTensors().forEach((s, i) => {
          optimizer!.set(`${names[i]}.m`, { dtype: 'F32', shape: [...s.param.shape], data: full[i]!.m });
          optimizer!.set(`${names[i]}.v`, { dtype: 'F32', shape: [...s.param.shape], data: full[i]!.v });
        });
      } else if (withOptimizer) {
        optimizer = new Map();
        opt.stateTensors().forEach((s, i) => {
          const dtype = s.m.dtype === 'float64' ? 'F64' : 'F32';
          optimizer!.set(`${names[i]}.m`, { dtype, shape: [...s.m.shape], data: s.m.data() });
          optimizer!.set(`${names[i]}.v`, { dtype, shape: [...s.v.shape], data: s.v.data() });
        });
      }
      if (!writer) return;
      const c = run.checkpoint();
      await saveCheckpoint(dir, { ...c, modelMetadata: { attn_step: String(iter) }, ...(optimizer ? { optimizer } : {}), trainerState: st });
    };
    const writeRecord = async (r: MetricsRecord): Promise<void> => {
      records.push(r);
      if (writer) await appendFile(metricsPath, JSON.stringify(r) + '\n');
    };
    const src: LossSource<B> = { loss: (b) => run.loss(b), afterMicroBatch: run.afterMicroBatch?.bind(run), parts: run.parts };
    const stepOpts = { gradClip: cfg.grad_clip, transforms: opts.gradientTransforms };

    // On a GPU the updates are queued and their stats read once per log interval (and before an
    // evaluation, a save or the end): no read-back inside an update. Elsewhere each reads its own.
    const queued = backend.name === 'webgpu' && !dp;
    let windowStart = performance.now();
    let lastLoss = NaN;
    const drain = (): { values: number[]; gradNorm: number; dt: number; extra: Record<string, unknown> } | null => {
      if (queue.length === 0) return null;
      const q = queue;
      queue = [];
      const got = readQueuedStats(q);
      const now = performance.now();
      const dt = (now - windowStart) / q.length;
      windowStart = now;
      const last = got[got.length - 1]!;
      lastLoss = last.values[0]!;
      return { values: last.values, gradNorm: last.gradNorm, dt, extra: q[q.length - 1]!.extra };
    };

    let pendingEval = resumed && lastEval?.step === iter ? lastEval : null;
    let lastEvalResult: EvalResult | null = null;
    let trainLoss = NaN;
    let speed = 0;
    let stopReason = 'max_iters';
    let stopped = false;
    for (let it = iter; ; it++) {
      iter = it;
      if (hooks.signal?.aborted && !cfg.eval_only) {
        try {
          drain();
        } catch (e) {
          throw diverged(e);
        }
        if (lastSaved !== it && it > 0) {
          await save(lastDir, true);
          lastSaved = it;
        }
        say(`stopped at step ${it}; saved ${lastDir}`);
        stopped = true;
        stopReason = 'signal';
        break;
      }
      const timeUp = cfg.max_minutes > 0 && elapsed() >= cfg.max_minutes * 60;
      if (timeUp) stopReason = 'max_minutes';
      const done = it >= cfg.max_iters || timeUp;
      const atInterval = cfg.eval_interval > 0 && it % cfg.eval_interval === 0 && (it > 0 || task.evalAtStart === true);
      if ((cfg.eval_only || done || atInterval) && (cfg.eval_only || pendingEval?.step !== it)) {
        try {
          drain();
        } catch (e) {
          throw diverged(e);
        }
        const te = performance.now();
        par?.beforeEvaluate?.();
        const metrics = await run.evaluate(it);
        for (const [k, v] of Object.entries(metrics)) if (!Number.isFinite(v)) throw diverged(new TrainingDivergedError(it, k === 'val_loss' ? 'the validation loss' : k === 'eval_train_loss' ? 'the evaluation train loss' : k, v));
        const evalS = (performance.now() - te) / 1000;
        lastEval = { step: it, ...metrics };
        const saved: string[] = [];
        if (!cfg.eval_only && it > 0) {
          const value = metrics[task.best.metric]!;
          const improved = better(value, best);
          if (improved) {
            best = value;
            bestEval = metrics;
          }
          if (cfg.always_save_checkpoint || improved) {
            await save(lastDir, true);
            lastSaved = it;
            saved.push(LAST_DIR);
          }
          if (improved) {
            await save(bestDir, false);
            saved.push(BEST_DIR);
          }
        }
        lastEvalResult = { train_loss: metrics['eval_train_loss'] ?? trainLoss, ...metrics, step: it, val_loss: metrics['val_loss']!, best, saved, elapsed_s: elapsed() };
        hooks.onEval?.(lastEvalResult);
        if (cfg.eval_only) {
          stopReason = 'eval_only';
          break;
        }
        pendingEval = lastEval;
        const evalRecord: MetricsRecord = { step: it, lr: lrAt(it), tokens, elapsed_s: elapsed(), ...metrics, eval_s: evalS };
        // After the last update no training record carries the evaluation.
        if (done) await writeRecord(evalRecord);
        const plotted = done ? records : [...records, evalRecord];
        if (writer) await writeFileAtomic(join(outDir, PLOT_FILE), lossPlotSvg(plotted, { title: task.title?.(cfg) ?? 'loss' }));
        if (writer) for (const [file, svg] of Object.entries(run.plots?.(plotted) ?? {})) await writeFileAtomic(join(outDir, file), svg);
      }
      if (done) break;

      const lr = lrAt(it);
      const start = performance.now();
      const batches: B[] = [];
      let n = 0;
      if (dp) batches.push(...dp.sample());
      for (let k = 0; !dp && k < cfg.gradient_accumulation_steps; k++) {
        const b = run.nextBatch();
        batches.push(b);
      }
      for (const b of batches) n += run.sizeOf(b);
      tokens += n;
      const withEval = pendingEval?.step === it ? pendingEval : null;
      const logNow = it % cfg.log_interval === 0 || withEval !== null;
      let values: number[];
      let norm: number;
      let dt: number;
      let extra: Record<string, unknown>;
      try {
        if (dp) {
          const r = dp.update(src, params, opt, batches, { lr, step: it });
          values = r.values;
          norm = r.gradNorm;
          dt = performance.now() - start;
          extra = { ...(run.stepRecord?.() ?? {}), ...dp.record() };
        } else if (queued) {
          if (queue.length === 0) windowStart = start;
          const stats = updateStepQueued(src, params, opt, batches, { ...stepOpts, lr, step: it });
          queue.push({ step: it, stats, extra: run.stepRecord?.() ?? {} });
          const readNow = logNow || it + 1 >= cfg.max_iters || (cfg.eval_interval > 0 && (it + 1) % cfg.eval_interval === 0) || queue.length >= 64;
          const got = readNow ? drain() : null;
          values = got?.values ?? [lastLoss];
          norm = got?.gradNorm ?? NaN;
          dt = got?.dt ?? NaN;
          extra = got?.extra ?? {};
        } else {
          const r = par ? par.update(src, params, opt, par.share(batches), { ...stepOpts, lr, step: it }) : updateStep(src, params, opt, batches, { ...stepOpts, lr, step: it });
          values = r.values;
          norm = r.gradNorm;
          dt = performance.now() - start;
          extra = { ...run.stepRecord?.(), ...par?.stepRecord?.() };
        }
      } catch (e) {
        throw diverged(e);
      }
      trainLoss = values[0]!;
      const tps = n / (dt / 1000);
      if (Number.isFinite(tps)) speed = speed === 0 ? tps : 0.9 * speed + 0.1 * tps; // smoothed for a steady ETA
      if (logNow) {
        const parts = Object.fromEntries((run.parts ?? []).map((p, i) => [p, values[i + 1]]));
        const { step: _s, ...evalFields } = withEval ?? { step: 0 };
        const rec: StepMetrics = {
          step: it, train_loss: trainLoss, ...parts, ...extra, lr, grad_norm: norm, dt_ms: dt, tokens_per_s: tps, tokens, elapsed_s: elapsed(),
          ...residentMiB(), ...(withEval ? evalFields : {}),
        };
        await writeRecord(rec);
        hooks.onLog?.(rec);
      }
      pendingEval = null;
      hooks.onProgress?.(it + 1, cfg.max_iters, speed, trainLoss, elapsed());
      await nextTick(); // lets signals, timers and the progress display run
    }
    return {
      iter, best, best_eval: bestEval, last_eval: lastEvalResult, stopped, stop_reason: stopReason, out_dir: outDir, best_dir: bestDir,
      elapsed_s: elapsed(), config: cfg,
    };
  } finally {
    free();
  }
}
