// One update: accumulate, transform, clip, AdamW (updateStep), and its building blocks, shared by
// the loop (loop.ts, which re-exports them), data parallel, the gradient transforms that run
// their own forward and backward passes (DP-SGD's per-example gradients, dp.ts), and the studio
// page's trainer (no file access here, so a browser runs it).
import { add, concat, div, minimum, mul, noGrad, reshape, sqrt, square, sum, tensor, tidy, zeros, type Tensor } from '../tensor/index.js';
import type { AdamW } from './optim.js';

/** One micro-batch's objective (graph kept) and named scalar parts to log (e.g. ce_loss). */
export interface BatchLoss {
  loss: Tensor;
  parts?: Record<string, Tensor>;
}

export class TrainingDivergedError extends Error {
  constructor(readonly step: number, readonly what: string, readonly value: number, detail = '') {
    super(`training diverged at step ${step}: ${what} is ${value}${detail ? `; ${detail}` : ''}`);
    this.name = 'TrainingDivergedError';
  }
}

/** What an update needs of a task: batch → loss, and a hook after each micro-batch. */
export interface LossSource<B> {
  loss(b: B): BatchLoss;
  afterMicroBatch?(k: number): void;
  parts?: readonly string[];
}

/**
 * Forward and backward over the micro-batches, gradients scaled by 1/k. The loss and its parts
 * stay on the device as one (1 + parts,) tensor of means, so a GPU is not made to wait.
 */
export function accumulateOnDevice<B>(src: LossSource<B>, batches: readonly B[]): Tensor {
  const k = batches.length;
  let sums: Tensor | null = null;
  for (const b of batches) {
    const next: Tensor = tidy(() => {
      const { loss, parts } = src.loss(b);
      (k > 1 ? div(loss, k) : loss).backward();
      return noGrad(() => {
        const scalars = [loss, ...(src.parts ?? []).map((p) => parts?.[p] ?? mul(loss, 0))].map((t) => reshape(t, [1]));
        const part = div(concat(scalars), k);
        return sums ? add(sums, part) : part;
      });
    });
    sums?.dispose();
    sums = next;
    src.afterMicroBatch?.(k);
  }
  return sums!;
}

/** Changes the gradients after the backward pass, before the norm and clipping (per update). */
export type GradientTransform = (params: readonly Tensor[], ctx: { step: number }) => void;

// ---------------------------------------------------------------- one update

/** Σ Σ g² over the parameters' gradients as a (1,) tensor (null when none has one). */
function gradNormSquared(params: readonly Tensor[]): Tensor | null {
  return noGrad(() =>
    tidy(() => {
      let acc: Tensor | null = null;
      for (const p of params) {
        if (!p.grad) continue;
        const s = sum(square(p.grad));
        acc = acc ? add(acc, s) : s;
      }
      return acc ? reshape(acc, [1]) : null;
    }),
  );
}

/** The global L2 norm of the gradients; parameters without one count as zero. */
export function gradNorm(params: readonly Tensor[]): number {
  const sq = gradNormSquared(params);
  if (!sq) return 0;
  const v = sq.item();
  sq.dispose();
  return Math.sqrt(v);
}

/** Multiplies every gradient by `factor` (a number, or a (1,) tensor on the device). */
export function scaleGrads(params: readonly Tensor[], factor: number | Tensor): void {
  noGrad(() => {
    for (const p of params) {
      const g = p.grad;
      if (!g) continue;
      if (typeof factor === 'number' && g.isContiguous() && g.offset === 0 && g.storage.refs === 1) {
        g.backend.binaryScalar('mul', g.storage, g.layout, factor, false, g.storage);
      } else {
        // A view, a shared buffer or a device factor: replace rather than write through it.
        p.grad = mul(g, factor).keep();
        g.dispose();
      }
    }
  });
}

/** torch.nn.utils.clip_grad_norm_: scales by maxNorm / (norm + 1e-6) above maxNorm; returns the norm. */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  const norm = gradNorm(params);
  if (maxNorm > 0 && Number.isFinite(norm) && norm > maxNorm) scaleGrads(params, maxNorm / (norm + 1e-6));
  return norm;
}

export interface StepOptions {
  /** Learning rate of this update (default: the optimizer's). */
  lr?: number;
  /** Global gradient-norm limit; 0 or absent: no clipping. */
  gradClip?: number;
  /** The update's index, for error messages. */
  step?: number;
  transforms?: readonly GradientTransform[];
}

/** The end of every update: stop on a non-finite gradient norm, clip to o.gradClip, set the
 *  learning rate, step the optimizer (the loop's update and data parallel's share it). */
export function clipAndStep(params: readonly Tensor[], opt: AdamW, norm: number, step: number, o: StepOptions): void {
  if (!Number.isFinite(norm)) throw new TrainingDivergedError(step, 'the gradient norm', norm);
  const maxNorm = o.gradClip ?? 0;
  if (maxNorm > 0 && norm > maxNorm) scaleGrads(params, maxNorm / (norm + 1e-6));
  if (o.lr !== undefined) opt.lr = o.lr;
  opt.stepUpdate();
}

/**
 * One optimizer update: accumulate, transform, clip, AdamW. Reads back once: the loss, its parts
 * and the gradient norm. A non-finite loss or norm throws TrainingDivergedError before any
 * weight changes. Returns [loss, ...parts] and the norm before clipping.
 */
export function updateStep<B>(src: LossSource<B>, params: readonly Tensor[], opt: AdamW, batches: readonly B[], o: StepOptions = {}): { values: number[]; gradNorm: number } {
  if (batches.length === 0) throw new Error('an update needs at least one batch');
  const step = o.step ?? -1;
  opt.zeroGrad();
  try {
    const sums = accumulateOnDevice(src, batches);
    for (const t of o.transforms ?? []) t(params, { step });
    const normSq = gradNormSquared(params);
    const all = noGrad(() => tidy(() => (normSq ? concat([sums, normSq]) : sums).data()));
    sums.dispose();
    normSq?.dispose();
    const n = 1 + (src.parts?.length ?? 0);
    const values = Array.from(all.subarray(0, n));
    if (!Number.isFinite(values[0]!)) throw new TrainingDivergedError(step, 'the training loss', values[0]!);
    const norm = normSq ? Math.sqrt(all[n]!) : 0;
    clipAndStep(params, opt, norm, step, o);
    return { values, gradNorm: norm };
  } finally {
    opt.zeroGrad(); // dead weight until the next update
  }
}

/**
 * updateStep with nothing read back: the stats [loss, ...parts, normSq] stay on the device and
 * clipping happens there (gradients × min(1, clip / (norm + 1e-6))), so a GPU runs update after
 * update; readQueuedStats reads a window of them at once and finds a non-finite one's step.
 */
export function updateStepQueued<B>(src: LossSource<B>, params: readonly Tensor[], opt: AdamW, batches: readonly B[], o: StepOptions = {}): Tensor {
  if (batches.length === 0) throw new Error('an update needs at least one batch');
  opt.zeroGrad();
  try {
    const sums = accumulateOnDevice(src, batches);
    for (const t of o.transforms ?? []) t(params, { step: o.step ?? -1 });
    const normSq = gradNormSquared(params);
    const stats = noGrad(() => tidy(() => concat([sums, normSq ?? zeros([1], { backend: sums.backend })]))).keep();
    sums.dispose();
    const maxNorm = o.gradClip ?? 0;
    if (maxNorm > 0 && normSq) {
      const scale = noGrad(() => tidy(() => minimum(div(tensor([maxNorm], { backend: normSq.backend }), add(sqrt(normSq), 1e-6)), 1)));
      scaleGrads(params, scale);
      scale.dispose();
    }
    normSq?.dispose();
    if (o.lr !== undefined) opt.lr = o.lr;
    opt.stepUpdate();
    return stats;
  } finally {
    opt.zeroGrad();
  }
}

/** Reads queued stats in one read and disposes them: per update [loss, ...parts] and the norm. */
export function readQueuedStats(queue: readonly { step: number; stats: Tensor }[]): { step: number; values: number[]; gradNorm: number }[] {
  if (queue.length === 0) return [];
  const w = queue[0]!.stats.size;
  const all = noGrad(() => tidy(() => concat(queue.map((q) => q.stats)).data()));
  for (const q of queue) q.stats.dispose();
  return queue.map((q, i) => {
    const values = Array.from(all.subarray(w * i, w * i + w - 1));
    if (!Number.isFinite(values[0]!)) throw new TrainingDivergedError(q.step, 'the training loss', values[0]!);
    const gradNorm = Math.sqrt(all[w * i + w - 1]!);
    if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(q.step, 'the gradient norm', gradNorm);
    return { step: q.step, values, gradNorm };
  });
}
