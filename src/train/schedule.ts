// Learning-rate schedules, as functions of the 0-based iteration `it` (the update about to be made).

export type LrSchedule = (it: number) => number;

export interface CosineScheduleOptions {
  learning_rate: number;
  warmup_iters: number;
  lr_decay_iters: number;
  min_lr: number;
}

/**
 * nanoGPT's get_lr: linear warmup to learning_rate over warmup_iters, then a cosine from
 * learning_rate down to min_lr at lr_decay_iters, and min_lr after that.
 */
export function cosineLr(it: number, o: CosineScheduleOptions): number {
  // (it + 1) so that the first update already has a non-zero rate.
  if (it < o.warmup_iters) return (o.learning_rate * (it + 1)) / (o.warmup_iters + 1);
  if (it > o.lr_decay_iters) return o.min_lr;
  const span = o.lr_decay_iters - o.warmup_iters;
  if (span <= 0) return o.min_lr;
  const ratio = (it - o.warmup_iters) / span; // 0 .. 1
  const coeff = 0.5 * (1 + Math.cos(Math.PI * ratio)); // 1 .. 0
  return o.min_lr + coeff * (o.learning_rate - o.min_lr);
}

/** cosineLr with a straight line from learning_rate down to min_lr instead of the cosine. */
export function linearLr(it: number, o: CosineScheduleOptions): number {
  if (it < o.warmup_iters) return (o.learning_rate * (it + 1)) / (o.warmup_iters + 1);
  const span = Math.max(1, o.lr_decay_iters - o.warmup_iters);
  const r = Math.min(1, (it - o.warmup_iters) / span);
  return o.min_lr + (1 - r) * (o.learning_rate - o.min_lr);
}

export function constantLr(_it: number, o: { learning_rate: number }): number {
  return o.learning_rate;
}

export interface NoamScheduleOptions {
  /** The model width; the peak rate scales as d_model^-0.5. */
  d_model: number;
  warmup_iters: number;
  /** Multiplies the whole curve (default 1). */
  factor?: number;
}

/**
 * "Attention Is All You Need" §5.3: factor · d_model^-0.5 · min(n^-0.5, n · warmup^-1.5)
 * with n = it + 1: linear warmup, then decay as 1/√n; the two meet at n = warmup_iters.
 */
export function noamLr(it: number, o: NoamScheduleOptions): number {
  const n = it + 1;
  const warmup = Math.max(o.warmup_iters, 1);
  return (o.factor ?? 1) * o.d_model ** -0.5 * Math.min(n ** -0.5, n * warmup ** -1.5);
}

/**
 * noamLr scaled so that its peak, at n = warmup_iters, is learning_rate:
 * learning_rate · min(√(warmup / n), n / warmup). The same curve as noamLr with
 * factor = learning_rate · √(d_model · warmup).
 */
export function noamPeakLr(it: number, o: { learning_rate: number; warmup_iters: number }): number {
  const n = it + 1;
  const w = Math.max(o.warmup_iters, 1);
  return o.learning_rate * Math.min(Math.sqrt(w / n), n / w);
}

/** The schedule a training config names with lr_decay (cosine, linear, noam, constant). */
export function scheduleOf(c: CosineScheduleOptions & { lr_decay: string }): LrSchedule {
  switch (c.lr_decay) {
    case 'cosine': return (it) => cosineLr(it, c);
    case 'linear': return (it) => linearLr(it, c);
    case 'noam': return (it) => noamPeakLr(it, c);
    case 'constant': return (it) => constantLr(it, c);
    default: throw new Error(`unknown lr_decay '${c.lr_decay}' (known: cosine, linear, noam, constant)`);
  }
}

export type ScheduleSpec =
  | ({ kind: 'cosine' } & CosineScheduleOptions)
  | { kind: 'constant'; learning_rate: number }
  | ({ kind: 'noam' } & NoamScheduleOptions);

export function makeSchedule(spec: ScheduleSpec): LrSchedule {
  switch (spec.kind) {
    case 'cosine': return (it) => cosineLr(it, spec);
    case 'constant': return (it) => constantLr(it, spec);
    case 'noam': return (it) => noamLr(it, spec);
    default: throw new Error(`makeSchedule: unknown kind '${String((spec as { kind: unknown }).kind)}' (known: cosine, constant, noam)`);
  }
}
