// A scaling sweep: a grid of GPTs over model size N (non-embedding parameters) and training
// tokens D, each run trained by the one loop (runTraining with the lm task) with a cosine
// schedule fitted to its own length, results appended to one JSONL. Finished runs are skipped on
// restart (a killed sweep continues where it stopped); a total time budget stops it between runs.
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { GPT } from '../models/gpt.js';
import { loadDataset } from '../data/files.js';
import { LAST_DIR, runTraining, type LoopHooks } from '../train/loop.js';
import { TrainingDivergedError } from '../train/update.js';
import { LM_TASK } from './lm.js';

export const SWEEP_RESULTS_FILE = 'results.jsonl';
/** Runs that diverged (NaN/inf): one JSON line each; a later sweep skips them until the line goes. */
export const SWEEP_FAILED_FILE = 'failed.jsonl';

/** A model shape of the grid. */
export interface SweepShape {
  n_layer: number;
  n_embd: number;
  n_head: number;
}

/** One planned run: a shape trained for `iters` updates. */
export interface SweepRun extends SweepShape {
  name: string;
  iters: number;
  /** Non-embedding parameters (Kaplan et al. 2020's N). */
  N: number;
  /** Training tokens: iters × batch_size × block_size. */
  D: number;
  /** Training FLOPs, Kaplan's estimate including attention (see trainingFlops). */
  C: number;
  learning_rate: number;
}

/** A finished run, one JSONL line. */
export interface SweepResult extends SweepRun {
  /** All parameters, embeddings included. */
  params: number;
  /** 6·N·D alone, for comparison with papers that leave attention out. */
  C_6ND: number;
  val_loss: number;
  train_loss: number;
  wall_s: number;
  block_size: number;
  batch_size: number;
  vocab_size: number;
  dataset: string;
  seed: number;
  finished_at: string;
}

export interface SweepOptions {
  /** A prepared dataset folder (train.bin, val.bin, meta.json). */
  dataset: string;
  out: string;
  shapes: readonly SweepShape[];
  iters: readonly number[];
  /** Explicit extra runs ("held-out" ones), beside the grid. */
  extra?: readonly { shape: SweepShape; iters: number }[];
  /** Leave out grid runs above this many FLOPs (0: none left out); explicit runs always stay. */
  maxCompute?: number;
  block_size: number;
  batch_size: number;
  eval_iters: number;
  seed: number;
  device: string;
  threads?: number;
  /** Total wall-clock budget of this invocation in minutes (0: none). */
  maxMinutes?: number;
  /** Keep each run's final weights (out/runs/NAME/best) up to this many parameters (0: keep none). */
  keepModelsUpTo?: number;
  /** Learning rate as a function of N and the shape (default: kaplanLearningRate). */
  lrOf?: (N: number, shape: SweepShape) => number;
}

/** Non-embedding parameters: everything but the token and learned position tables (the LM head
 *  is tied to the token table). Kaplan et al. 2020, section 2.1. */
export function nonEmbeddingParams(shape: SweepShape, vocab_size: number, block_size: number): number {
  const cfg = { ...shape, vocab_size, block_size, bias: false, tie_embeddings: true };
  return GPT.countParameters(cfg) - vocab_size * shape.n_embd - block_size * shape.n_embd;
}

/** Training FLOPs of D tokens: 3 × the forward pass 2N + 2·n_layer·n_ctx·d_model (Kaplan et al.
 *  2020, Table 1), i.e. 6·N·D plus attention's 6·n_layer·n_ctx·d_model·D. */
export function trainingFlops(N: number, D: number, shape: SweepShape, n_ctx: number): number {
  return 6 * N * D + 6 * shape.n_layer * n_ctx * shape.n_embd * D;
}

/** The learning rate Kaplan et al. 2020 fitted against N (their eq. D.1):
 *  0.003239 − 0.0001395·ln N. */
export function kaplanLearningRate(N: number): number {
  return 0.003239 - 0.0001395 * Math.log(N);
}

export const runName = (s: SweepShape, iters: number): string => `L${s.n_layer}-d${s.n_embd}-h${s.n_head}-i${iters}`;

/**
 * A run named as the sweep names them (L4-d144-h4-i4000) but not trained yet, with the N, D and C
 * it would have in the sweep of `runs` (their context, batch and vocabulary, which must agree) and
 * no loss (NaN): what `attn sweep fit --heldout` predicts before the run exists.
 */
export function untrainedRun(name: string, runs: readonly Pick<SweepResult, 'name' | 'block_size' | 'batch_size' | 'vocab_size'>[]): SweepResult {
  const m = /^L(\d+)-d(\d+)-h(\d+)-i(\d+)$/.exec(name);
  if (!m) throw new Error(`'${name}' is neither among the results nor a run name such as L4-d144-h4-i4000`);
  const shape = parseShape(`${m[1]}x${m[2]}x${m[3]}`);
  const iters = Number(m[4]);
  if (iters < 1) throw new Error(`'${name}': at least one iteration`);
  const same = (k: 'block_size' | 'batch_size' | 'vocab_size'): number => {
    const vals = [...new Set(runs.map((r) => r[k]))];
    if (vals.length !== 1 || !Number.isInteger(vals[0])) throw new Error(`cannot size the untrained run ${name}: the results' ${k} is ${vals.length === 1 ? 'missing' : `not one value (${vals.join(', ')})`}`);
    return vals[0]!;
  };
  const [block_size, batch_size, vocab_size] = [same('block_size'), same('batch_size'), same('vocab_size')];
  const N = nonEmbeddingParams(shape, vocab_size, block_size);
  const D = iters * batch_size * block_size;
  return {
    name, ...shape, iters, N, D, C: trainingFlops(N, D, shape, block_size), learning_rate: NaN, params: NaN, C_6ND: 6 * N * D,
    val_loss: NaN, train_loss: NaN, wall_s: NaN, block_size, batch_size, vocab_size, dataset: '', seed: NaN, finished_at: '',
  };
}

/** "LxDxH" (n_layer × n_embd × n_head), e.g. "2x64x2". */
export function parseShape(text: string): SweepShape {
  const m = /^(\d+)x(\d+)x(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`a model shape is written LAYERSxWIDTHxHEADS (e.g. 2x64x2), got '${text}'`);
  const [n_layer, n_embd, n_head] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (n_layer < 1 || n_embd < 1 || n_head < 1) throw new Error(`shape '${text}': every number must be at least 1`);
  if (n_embd % n_head !== 0) throw new Error(`shape '${text}': n_embd ${n_embd} is not divisible by n_head ${n_head}`);
  return { n_layer, n_embd, n_head };
}

/** The runs of a sweep, cheapest first (a time budget then cuts the dearest). */
export function planSweep(o: Pick<SweepOptions, 'shapes' | 'iters' | 'extra' | 'maxCompute' | 'block_size' | 'batch_size' | 'lrOf'>, vocab_size: number): SweepRun[] {
  const lrOf = o.lrOf ?? kaplanLearningRate;
  const make = (shape: SweepShape, iters: number): SweepRun => {
    if (!(Number.isInteger(iters) && iters >= 1)) throw new Error(`iterations must be positive integers, got ${iters}`);
    const N = nonEmbeddingParams(shape, vocab_size, o.block_size);
    const D = iters * o.batch_size * o.block_size;
    return { name: runName(shape, iters), ...shape, iters, N, D, C: trainingFlops(N, D, shape, o.block_size), learning_rate: lrOf(N, shape) };
  };
  const runs: SweepRun[] = [];
  for (const s of o.shapes) for (const it of o.iters) {
    const r = make(s, it);
    if (!o.maxCompute || r.C <= o.maxCompute) runs.push(r);
  }
  for (const e of o.extra ?? []) {
    const r = make(e.shape, e.iters);
    if (!runs.some((x) => x.name === r.name)) runs.push(r);
  }
  return runs.sort((a, b) => a.C - b.C);
}

/** The results of a JSONL file (empty when absent); a bad line is an error naming it. */
export async function readSweepResults(path: string): Promise<SweepResult[]> {
  if (!existsSync(path)) return [];
  const lines = (await readFile(path, 'utf8')).split('\n');
  const out: SweepResult[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let r: SweepResult;
    try {
      r = JSON.parse(line) as SweepResult;
    } catch {
      throw new Error(`${path}:${i + 1}: not a JSON line`);
    }
    for (const k of ['name', 'N', 'D', 'C', 'val_loss'] as const) if (r[k] === undefined) throw new Error(`${path}:${i + 1}: the result has no '${k}'`);
    out.push(r);
  });
  return out;
}

export interface SweepHooks {
  /** Before a run: its index among those still to do, their count, the run. */
  onRunStart?(i: number, n: number, run: SweepRun): void;
  onRunEnd?(result: SweepResult): void;
  onSkip?(run: SweepRun, why: string): void;
  /** Hooks of each run's training loop (progress bars). */
  loop?: LoopHooks;
}

export interface SweepSummary {
  planned: number;
  skipped: number;
  trained: SweepResult[];
  /** Runs not started (or stopped unfinished) because the budget ran out. */
  leftOver: SweepRun[];
  /** Runs that diverged in this call (recorded in failed.jsonl; the sweep went on without them). */
  failed: { run: SweepRun; reason: string }[];
  resultsPath: string;
}

/** Trains the runs not yet in out/results.jsonl, cheapest first, within the time budget. */
export async function runSweep(o: SweepOptions, hooks: SweepHooks = {}): Promise<SweepSummary> {
  const data = await loadDataset(o.dataset);
  const vocab = data.meta.vocab_size;
  const plan = planSweep(o, vocab);
  const out = resolve(o.out);
  await mkdir(out, { recursive: true });
  const resultsPath = join(out, SWEEP_RESULTS_FILE);
  const finished = await readSweepResults(resultsPath);
  // A finished run is reused only if it was trained with this plan's settings: a rerun with
  // another learning rate, batch, context or seed into the same folder would mix two grids.
  for (const r of finished) {
    const p = plan.find((x) => x.name === r.name);
    if (!p) continue;
    const diff = ([['learning_rate', r.learning_rate, p.learning_rate], ['block_size', r.block_size, o.block_size], ['batch_size', r.batch_size, o.batch_size], ['seed', r.seed, o.seed]] as const)
      .filter(([, a, b]) => a !== undefined && Math.abs(a - b) > 1e-12 * Math.abs(b));
    if (diff.length) throw new Error(`${resultsPath}: run ${r.name} was trained with ${diff.map(([k, a, b]) => `${k} ${a} (this sweep: ${b})`).join(', ')}; use another --out for other settings`);
  }
  const done = new Set(finished.map((r) => r.name));
  // A run that diverged stays out of later calls (its line in failed.jsonl says why): one bad
  // learning rate must not stop every rerun of the sweep at the same place.
  const failedPath = join(out, SWEEP_FAILED_FILE);
  const failedBefore = new Map<string, string>();
  if (existsSync(failedPath)) {
    for (const line of (await readFile(failedPath, 'utf8')).split('\n')) {
      if (!line.trim()) continue;
      try {
        const f = JSON.parse(line) as { name?: unknown; reason?: unknown };
        if (typeof f.name === 'string') failedBefore.set(f.name, String(f.reason ?? ''));
      } catch {
        throw new Error(`${failedPath}: not a JSON line: ${line.slice(0, 80)}`);
      }
    }
  }
  for (const r of plan) {
    if (!done.has(r.name) && failedBefore.has(r.name)) hooks.onSkip?.(r, `diverged in an earlier call (${failedBefore.get(r.name)}); delete its line in ${failedPath} to train it again`);
  }
  const todo = plan.filter((r) => !done.has(r.name) && !failedBefore.has(r.name));
  const failed: { run: SweepRun; reason: string }[] = [];
  for (const r of plan) if (done.has(r.name)) hooks.onSkip?.(r, 'finished before');
  const t0 = performance.now();
  const trained: SweepResult[] = [];
  const leftOver: SweepRun[] = [];
  for (const [i, run] of todo.entries()) {
    const usedMin = (performance.now() - t0) / 60000;
    const left = o.maxMinutes ? o.maxMinutes - usedMin : Infinity;
    if (left <= 0) {
      leftOver.push(...todo.slice(i));
      break;
    }
    hooks.onRunStart?.(i, todo.length, run);
    const runDir = join(out, 'runs', run.name);
    // A run killed half way starts again from scratch: only finished runs are results.
    await rm(runDir, { recursive: true, force: true });
    let res: Awaited<ReturnType<typeof runTraining>>;
    try {
      res = await runTraining(LM_TASK, {
        dataset: o.dataset, out_dir: runDir, device: o.device, ...(o.threads ? { threads: o.threads } : {}), seed: o.seed,
        n_layer: run.n_layer, n_embd: run.n_embd, n_head: run.n_head, block_size: o.block_size, batch_size: o.batch_size,
        dropout: 0, bias: false, tie_embeddings: true, max_iters: run.iters, learning_rate: run.learning_rate,
        eval_interval: 0, eval_iters: o.eval_iters, log_interval: Math.max(1, Math.floor(run.iters / 20)),
        ...(Number.isFinite(left) ? { max_minutes: left } : {}),
      }, hooks.loop ?? {});
    } catch (e) {
      if (!(e instanceof TrainingDivergedError)) throw e;
      await appendFile(failedPath, JSON.stringify({ name: run.name, learning_rate: run.learning_rate, step: e.step, reason: e.message, at: new Date().toISOString() }) + '\n');
      failed.push({ run, reason: e.message });
      hooks.onSkip?.(run, `${e.message}; recorded in ${failedPath}, the sweep goes on`);
      continue;
    }
    if (res.stop_reason !== 'max_iters' || !res.last_eval) {
      leftOver.push(...todo.slice(i));
      break;
    }
    // The optimizer state is dead weight once a run is over; the final weights stay if small.
    await rm(join(runDir, LAST_DIR), { recursive: true, force: true });
    const params = GPT.countParameters({ n_layer: run.n_layer, n_embd: run.n_embd, n_head: run.n_head, vocab_size: vocab, block_size: o.block_size, bias: false, tie_embeddings: true });
    if (!(o.keepModelsUpTo === undefined || params <= o.keepModelsUpTo)) await rm(res.best_dir, { recursive: true, force: true });
    const result: SweepResult = {
      ...run, params, C_6ND: 6 * run.N * run.D, val_loss: res.last_eval.val_loss, train_loss: res.last_eval.train_loss,
      wall_s: res.elapsed_s, block_size: o.block_size, batch_size: o.batch_size, vocab_size: vocab, dataset: o.dataset, seed: o.seed,
      finished_at: new Date().toISOString(),
    };
    await appendFile(resultsPath, JSON.stringify(result) + '\n');
    trained.push(result);
    hooks.onRunEnd?.(result);
  }
  return { planned: plan.length, skipped: plan.length - todo.length, trained, leftOver, failed, resultsPath };
}
