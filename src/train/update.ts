// One update's building blocks, shared by the loop (loop.ts) and the gradient transforms that
// run their own forward and backward passes (DP-SGD's per-example gradients, dp.ts).
import { add, concat, div, mul, noGrad, reshape, tidy, type Tensor } from '../tensor/index.js';

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

