// In-context linear regression (Garg et al. 2022, "What Can Transformers Learn In-Context? A Case
// Study of Simple Function Classes"): each prompt holds n pairs (x_i, w·x_i) with x_i, w ~ N(0, I_d)
// drawn afresh per prompt, laid out as 2n vectors x_1, y_1, x_2, y_2, … (x tokens (x, 0), y tokens (y, 0, …, 0, 1)).
// A VectorTransformer reads them and predicts y_i at the position of x_i, seeing the i−1 earlier
// pairs; the objective is the squared error averaged over every i (so over every prompt length).
// Errors are reported divided by d, as the paper's Figure 2 does (predicting 0 scores 1).
// Optional curriculum (the paper's section 3 / Appendix A): training starts with few effective
// dimensions (x's trailing coordinates set to 0, so y depends on the first d_eff only) and few
// points, and both grow every `interval` updates; evaluation always uses the full d and n.
import type { Backend } from '../backend/backend.js';
import { averagingWeights, dot, leastSquaresWeights, nearestNeighboursPredict } from '../eval/icl.js';
import { VectorTransformer } from '../models/probe-transformer.js';
import { rngStateFromJson, rngStateToJson } from '../data/sampler.js';
import { Generator, mean, noGrad, reshape, slice, square, sub, tensor, tidy, type Tensor } from '../tensor/index.js';
import type { Task, TaskRun } from '../train/loop.js';
import { moduleTensors } from './induction.js';

/** A batch of regression prompts: xs (B, n, d), ys (B, n), row-major float64. */
export interface RegressionBatch {
  xs: Float64Array;
  ys: Float64Array;
  B: number;
  n: number;
  d: number;
}

/** B prompts of n pairs, each with its own w ~ N(0, I_d); y = w·x (no noise). With dEff < d the
 *  coordinates dEff… of every x are 0 (Garg et al.'s truncated dimensions: the curriculum). */
export function sampleRegressionPrompts(gen: Generator, B: number, n: number, d: number, dEff = d): RegressionBatch {
  if (!(Number.isInteger(dEff) && dEff >= 1 && dEff <= d)) throw new Error(`regression prompts: effective dimension must be an integer in 1..${d}, got ${dEff}`);
  const xs = new Float64Array(B * n * d);
  const ys = new Float64Array(B * n);
  const w = new Float64Array(d);
  for (let b = 0; b < B; b++) {
    for (let a = 0; a < d; a++) w[a] = gen.normal();
    for (let i = 0; i < n; i++) {
      const o = (b * n + i) * d;
      for (let a = 0; a < dEff; a++) xs[o + a] = gen.normal();
      ys[b * n + i] = dot(w, xs, d, o);
    }
  }
  return { xs, ys, B, n, d };
}

/** A curriculum: effective dimensions and points start low and grow by their increment every
 *  `interval` updates, up to the task's d and n (Garg et al.: dims 5→20 by 1, points 11→41 by 2,
 *  every 2,000 updates). */
export interface RegressionCurriculum {
  dims_start: number;
  dims_inc: number;
  points_start: number;
  points_inc: number;
  interval: number;
}

/** The curriculum's (effective dimension, points) at update `step` (0-based) for a task of d, n. */
export function curriculumAt(c: RegressionCurriculum, step: number, d: number, n: number): { dims: number; points: number } {
  const stages = Math.floor(step / c.interval);
  return { dims: Math.min(d, c.dims_start + stages * c.dims_inc), points: Math.min(n, c.points_start + stages * c.points_inc) };
}

/** Problems with a curriculum for a task of d, n (empty when it is usable). */
export function curriculumProblems(c: RegressionCurriculum, d: number, n: number): string[] {
  const out: string[] = [];
  const int = (k: keyof RegressionCurriculum, min: number, max = Infinity): void => {
    const v = c[k];
    if (!(Number.isInteger(v) && v >= min && v <= max)) out.push(`curriculum ${k} must be an integer in ${min}..${max === Infinity ? '∞' : max}, got ${v}`);
  };
  int('dims_start', 1, d);
  int('points_start', 1, n);
  int('dims_inc', 0);
  int('points_inc', 0);
  int('interval', 1);
  return out;
}

/** The prompt vectors (B, 2n, d + 1): (x_i, 0) at 2i, (y_i, 0, …, 0, 1) at 2i + 1. The last
 *  component marks y tokens (Garg et al. tell them apart by position alone; the mark spares a
 *  small model learning parity from its position embeddings). */
export function promptVectors(batch: RegressionBatch): Float32Array {
  const { xs, ys, B, n, d } = batch;
  const w = d + 1;
  const out = new Float32Array(B * 2 * n * w);
  for (let b = 0; b < B; b++) for (let i = 0; i < n; i++) {
    const o = (b * 2 * n + 2 * i) * w;
    for (let a = 0; a < d; a++) out[o + a] = xs[(b * n + i) * d + a]!;
    out[o + w] = ys[b * n + i]!;
    out[o + w + d] = 1;
  }
  return out;
}

/** The model's prediction of every y_i, (B, n) as a tensor (graph kept). */
export function predictY(model: VectorTransformer, batch: RegressionBatch, backend: Backend): Tensor {
  const { B, n, d } = batch;
  const x = tensor(promptVectors(batch), { shape: [B, 2 * n, d + 1], backend });
  const out = model.forward(x); // (B, 2n, 1)
  return reshape(slice(out, 1, 0, 2 * n, 2), [B, n]); // the x positions
}

/** Squared error / d against the number of in-context examples k = 0 … n−1, averaged over prompts. */
export function errorByExamples(pred: ArrayLike<number>, batch: RegressionBatch): number[] {
  const { ys, B, n, d } = batch;
  const err = new Array<number>(n).fill(0);
  for (let b = 0; b < B; b++) for (let i = 0; i < n; i++) err[i]! += (pred[b * n + i]! - ys[b * n + i]!) ** 2 / (d * B);
  return err;
}

export type BaselineName = 'least_squares' | 'nearest_3' | 'averaging' | 'zero';

/** A baseline's prediction of every y_i from the i earlier pairs of its own prompt, (B, n). */
export function baselinePredictions(name: BaselineName, batch: RegressionBatch): Float64Array {
  const { xs, ys, B, n, d } = batch;
  const out = new Float64Array(B * n);
  for (let b = 0; b < B; b++) {
    const px = xs.subarray(b * n * d, (b + 1) * n * d);
    const py = ys.subarray(b * n, (b + 1) * n);
    for (let i = 0; i < n; i++) {
      const xq = px.subarray(i * d, (i + 1) * d);
      let v = 0;
      if (name === 'least_squares') v = dot(leastSquaresWeights(px, py, i, d), xq, d);
      else if (name === 'averaging') v = dot(averagingWeights(px, py, i, d), xq, d);
      else if (name === 'nearest_3') v = nearestNeighboursPredict(px, py, i, d, xq, 3);
      out[b * n + i] = v;
    }
  }
  return out;
}

export interface RegressionTaskOptions {
  /** Dimension of x (the paper: 20). */
  d: number;
  /** Pairs per prompt (the paper: 2d + 1 for d = 20, i.e. 41). */
  n_points: number;
  /** Prompts in the fixed evaluation set. */
  evalPrompts?: number;
  /** Grow the effective dimension and the prompt length during training (none: full from the start). */
  curriculum?: RegressionCurriculum;
  onEval?(step: number, errors: number[]): void;
}

/** The fixed evaluation prompts of a run with this seed. */
export function regressionEvalSet(seed: number, n: number, d: number, count = 1024): RegressionBatch {
  return sampleRegressionPrompts(new Generator((seed ^ 0x7f4a7c15) >>> 0), count, n, d);
}

/** Seconds-cheap task: prompts are drawn on the fly; the lm field vocabulary names the model. */
export function regressionTask(opts: RegressionTaskOptions): Task<RegressionBatch> {
  const { d, n_points: n } = opts;
  if (!(Number.isInteger(d) && d >= 1)) throw new Error(`regression: d must be a positive integer, got ${d}`);
  if (!(Number.isInteger(n) && n >= 1)) throw new Error(`regression: n_points must be a positive integer, got ${n}`);
  const cur = opts.curriculum;
  if (cur) {
    const problems = curriculumProblems(cur, d, n);
    if (problems.length) throw new Error(`regression: ${problems.join('; ')}`);
  }
  return {
    task: 'lm',
    defaults: { n_layer: 4, n_head: 4, n_embd: 64, block_size: 2 * n, batch_size: 64, learning_rate: 3e-4, weight_decay: 0, eval_interval: 250, max_iters: 4000, dropout: 0, grad_clip: 1 },
    archFields: ['n_layer', 'n_head', 'n_embd', 'block_size'],
    best: { metric: 'val_loss', higher: false },
    evalAtStart: true,
    title: () => `in-context linear regression, d = ${d}`,
    check(cfg, problems) {
      if (cfg.block_size < 2 * n) problems.push(`block_size (${cfg.block_size}) must be at least 2 × n_points = ${2 * n}`);
    },
    async open(cfg, ctx): Promise<TaskRun<RegressionBatch>> {
      const model = new VectorTransformer({ n_layer: cfg.n_layer, n_head: cfg.n_head, n_embd: cfg.n_embd, block_size: cfg.block_size, mlp: true, d_in: d + 1, d_out: 1 }, { backend: ctx.backend, seed: cfg.seed, init: !ctx.resume });
      if (ctx.resume) model.loadStateDict(new Map([...ctx.resume.tensors].map(([k, e]) => [k, { shape: e.shape, data: e.data }])));
      const gen = new Generator((cfg.seed ^ 0x2545f491) >>> 0);
      const evalSet = regressionEvalSet(cfg.seed, n, d, opts.evalPrompts ?? 1024);
      model.train();
      // Batches drawn so far; with gradient accumulation an update draws several, and the
      // curriculum follows updates. Saved in the trainer state so a resumed run continues it.
      let drawn = 0;
      let stage = { dims: d, points: n };
      return {
        model,
        info: { modelConfig: model.cfg, ...(cur ? { curriculum: cur } : {}) },
        nextBatch: () => {
          if (cur) stage = curriculumAt(cur, Math.floor(drawn / cfg.gradient_accumulation_steps), d, n);
          drawn++;
          return sampleRegressionPrompts(gen, cfg.batch_size, stage.points, d, stage.dims);
        },
        stepRecord: () => (cur ? { curriculum_dims: stage.dims, curriculum_points: stage.points } : {}),
        sizeOf: (b) => b.B * 2 * b.n,
        loss(b) {
          const y = tensor(Float32Array.from(b.ys), { shape: [b.B, b.n], backend: ctx.backend });
          return { loss: mean(square(sub(predictY(model, b, ctx.backend), y))) };
        },
        evaluate(step) {
          model.eval();
          try {
            const pred = noGrad(() => tidy(() => predictY(model, evalSet, ctx.backend).data()));
            const errors = errorByExamples(pred, evalSet);
            opts.onEval?.(step, errors);
            const rec: Record<string, number> = { val_loss: errors.reduce((s, v) => s + v, 0) / n };
            errors.forEach((e, k) => (rec[`err_k${k}`] = e));
            return rec;
          } finally {
            model.train();
          }
        },
        checkpoint: () => ({ config: { attn_checkpoint: 'attn_icl_regression', ...model.cfg, n_points: n, ...(cur ? { curriculum: cur } : {}) }, model: moduleTensors(model) }),
        state: () => ({ prompts: rngStateToJson(gen), batches_drawn: drawn }),
        setState(s) {
          rngStateFromJson(gen, s['prompts'], "trainer_state 'prompts'");
          // Checkpoints from before the curriculum existed hold no count: one batch per update then.
          const saved = s['batches_drawn'] ?? (typeof s['iter'] === 'number' ? s['iter'] * cfg.gradient_accumulation_steps : undefined);
          if (!(Number.isInteger(saved) && (saved as number) >= 0)) throw new Error(`trainer_state 'batches_drawn' must be a non-negative integer, got ${JSON.stringify(saved)}`);
          drawn = saved as number;
        },
      };
    },
  };
}
