// DP-SGD (Abadi et al. 2016) as one update of the training loop: a Poisson-sampled batch (each
// training example present with probability q), the gradient of each example computed on its own
// and clipped to L2 norm ≤ C, the clipped gradients summed, N(0, σ²C²) added to every
// coordinate, and the sum divided by the expected batch size qN. The optimizer (AdamW) then
// steps on that gradient; anything after the noise is post-processing and costs no privacy.
//
// Per-example gradients are computed per example: one forward and backward per example of the
// batch (batch size 1), its norm read back, the scaled gradient added to a running sum. That is
// B times the passes of an ordinary batch of B, but exact for any model (layer norm, attention,
// tied embeddings) with no per-layer rules; the models this is meant for are small.
import { add, mul, noGrad, randn, tidy, zerosLike, type Generator, type Tensor } from '../tensor/index.js';
import { accumulateOnDevice, TrainingDivergedError, type LossSource } from './update.js';
import type { AdamW } from './optim.js';
import { RdpAccountant } from './rdp.js';

/** A task's training set seen as N separate examples, for Poisson sampling. */
export interface DpExamples<B> {
  /** N: the examples a Poisson batch is drawn from. */
  count: number;
  /** The batch holding exactly these examples (one index for a per-example pass). */
  batchOf(indices: readonly number[]): B;
}

/** Indices of a Poisson batch: each of 0..n-1 independently with probability q (in order). */
export function poissonSample(n: number, q: number, g: Generator): number[] {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`the DP sampling rate q must be in [0, 1], got ${q}`);
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (g.random() < q) out.push(i);
  return out;
}

export interface DpStepOptions {
  /** C: the per-example L2 norm limit (Infinity: no clipping). */
  clip: number;
  /** σ: the noise multiplier; the noise's standard deviation is σC. */
  noise: number;
  /** qN: what the summed gradient is divided by (a fixed number, so the sensitivity stays C). */
  expectedBatchSize: number;
  /** Draws the noise (seeded and saved by the loop for exact resume). */
  generator: Generator;
  lr?: number;
  step?: number;
  /** Sees each example's gradient norm before and after clipping (for tests and statistics). */
  onExample?(index: number, norm: number, clippedNorm: number): void;
}

export interface DpStepResult {
  /** [loss, ...parts], each the mean over the batch's examples (NaN for an empty batch). */
  values: number[];
  /** The norm of the final (noisy, averaged) gradient the optimizer used. */
  gradNorm: number;
  /** Examples in the Poisson batch. */
  batchSize: number;
  /** Share of the batch's examples whose gradient was scaled down. */
  clippedFraction: number;
}

/** Σ g² over the parameters' gradients, in float64. */
function squaredNorm(params: readonly Tensor[]): number {
  let s = 0;
  for (const p of params) {
    if (!p.grad) continue;
    const d = p.grad.data();
    for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
  }
  return s;
}

/**
 * One DP-SGD update from `examples` (each a batch of one example): per-example gradients clipped
 * to norm ≤ C, summed, noised with N(0, σ²C²), divided by expectedBatchSize, then AdamW.
 * With σ = 0 and C = ∞ it is the ordinary update on the mean loss of a batch of those examples
 * when expectedBatchSize equals their count. A non-finite loss or norm throws before any weight
 * changes.
 */
export function dpUpdateStep<B>(src: LossSource<B>, params: readonly Tensor[], opt: AdamW, examples: readonly B[], o: DpStepOptions): DpStepResult {
  const { clip, noise, expectedBatchSize: denom } = o;
  if (!(clip > 0)) throw new RangeError(`the DP clipping norm C must be positive (Infinity: none), got ${clip}`);
  if (!(noise >= 0) || !Number.isFinite(noise)) throw new RangeError(`the DP noise multiplier σ must be a finite non-negative number, got ${noise}`);
  if (!(denom > 0)) throw new RangeError(`the expected batch size must be positive, got ${denom}`);
  if (noise > 0 && !Number.isFinite(clip)) throw new RangeError('DP noise needs a finite clipping norm C (the noise is σC)');
  const step = o.step ?? -1;
  const sums: (Tensor | null)[] = params.map(() => null);
  const nParts = 1 + (src.parts?.length ?? 0);
  const valueSums = new Array<number>(nParts).fill(0);
  let clipped = 0;
  try {
    for (const [i, ex] of examples.entries()) {
      opt.zeroGrad();
      const stats = accumulateOnDevice(src, [ex]);
      const v = stats.data();
      stats.dispose();
      if (!Number.isFinite(v[0]!)) throw new TrainingDivergedError(step, 'the training loss', v[0]!, `example ${i} of the DP batch`);
      for (let k = 0; k < nParts; k++) valueSums[k]! += v[k]!;
      const norm = Math.sqrt(squaredNorm(params));
      if (!Number.isFinite(norm)) throw new TrainingDivergedError(step, 'a per-example gradient norm', norm);
      // The margin keeps the float32 result at or under C (min(1, C/norm) alone can round above it).
      const factor = norm > clip ? clip / (norm * (1 + 1e-6)) : 1;
      if (factor < 1) clipped++;
      noGrad(() => {
        params.forEach((p, j) => {
          if (!p.grad) return;
          const prev = sums[j];
          sums[j] = tidy(() => {
            const g = factor === 1 ? p.grad! : mul(p.grad!, factor);
            return prev ? add(prev, g) : g === p.grad ? add(g, 0) : g;
          }).keep();
          prev?.dispose();
        });
      });
      o.onExample?.(i, norm, norm * factor);
    }
    opt.zeroGrad();
    // Every parameter gets noise, whether or not any example reached it.
    let normSq = 0;
    noGrad(() => {
      params.forEach((p, j) => {
        const g = tidy(() => {
          const base = sums[j] ?? zerosLike(p);
          const withNoise = noise > 0 ? add(base, randn([...p.shape], { generator: o.generator, std: noise * clip, dtype: p.dtype, backend: p.backend })) : base;
          return mul(withNoise, 1 / denom);
        }).keep();
        p.grad = g;
      });
      normSq = squaredNorm(params);
    });
    const gradNorm = Math.sqrt(normSq);
    if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(step, 'the gradient norm', gradNorm);
    if (o.lr !== undefined) opt.lr = o.lr;
    opt.stepUpdate();
    const n = examples.length;
    return { values: valueSums.map((s) => (n > 0 ? s / n : NaN)), gradNorm, batchSize: n, clippedFraction: n > 0 ? clipped / n : 0 };
  } finally {
    for (const s of sums) s?.dispose();
    opt.zeroGrad();
  }
}

/** The DP-SGD settings of a training config (dp_clip > 0 turns it on). */
export interface DpConfig {
  dp_clip: number;
  dp_noise: number;
  dp_sample_rate: number;
  dp_delta: number;
  batch_size: number;
  gradient_accumulation_steps: number;
  seed: number;
}

/**
 * What the loop keeps for a DP-SGD run: the examples, the rate q (dp_sample_rate, or
 * batch_size × gradient_accumulation_steps / N), one seeded generator for the Poisson draws and
 * the noise (saved in trainer_state.json for exact resume) and the RDP accountant.
 */
export class DpRun<B> {
  readonly q: number;
  readonly generator: Generator;
  readonly accountant: RdpAccountant;
  private last: DpStepResult | null = null;

  constructor(readonly cfg: DpConfig, readonly examples: DpExamples<B>, generator: Generator) {
    const n = examples.count;
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`DP-SGD needs a positive number of training examples, got ${n}`);
    this.q = cfg.dp_sample_rate > 0 ? cfg.dp_sample_rate : Math.min(1, (cfg.batch_size * cfg.gradient_accumulation_steps) / n);
    if (!(this.q > 0 && this.q <= 1)) throw new Error(`dp_sample_rate must be in (0, 1], got ${this.q}`);
    this.generator = generator;
    this.accountant = new RdpAccountant(this.q, cfg.dp_noise, cfg.dp_delta);
  }

  get expectedBatchSize(): number {
    return this.q * this.examples.count;
  }

  /** The next Poisson batch, as one batch per example. */
  sample(): B[] {
    return poissonSample(this.examples.count, this.q, this.generator).map((i) => this.examples.batchOf([i]));
  }

  update(src: LossSource<B>, params: readonly Tensor[], opt: AdamW, examples: readonly B[], o: { lr?: number; step?: number }): DpStepResult {
    const r = dpUpdateStep(src, params, opt, examples, { clip: this.cfg.dp_clip, noise: this.cfg.dp_noise, expectedBatchSize: this.expectedBatchSize, generator: this.generator, ...o });
    this.accountant.step();
    this.last = r;
    return r;
  }

  /** Fields for the update's metrics record: (ε, δ) spent so far and the batch's statistics. */
  record(): Record<string, unknown> {
    const { epsilon, order } = this.accountant.epsilon();
    return {
      dp_epsilon: epsilon, dp_delta: this.cfg.dp_delta, dp_order: order, dp_q: this.q,
      ...(this.last ? { dp_batch: this.last.batchSize, dp_clipped: this.last.clippedFraction } : {}),
    };
  }

  /** Restores the update count (the accountant's composition) after a resume. */
  resumeAt(steps: number): void {
    this.accountant.steps = steps;
  }
}
