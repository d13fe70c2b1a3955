// Optimizers. AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, one fused
// backend kernel per parameter so the update reads and writes each buffer once.
import { noGrad, Tensor, zerosLike } from '../tensor/index.js';
import { checkOptions } from '../util/options.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  /** Applied only to parameters in `decay` groups (see constructor). */
  weightDecay?: number;
  /** false: no moment buffers at all, as after releaseMoments() (a strategy that keeps its own: tp). */
  moments?: boolean;
}

interface ParamState {
  param: Tensor;
  m: Tensor;
  v: Tensor;
  decay: boolean;
}

export class AdamW {
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  step = 0;
  private readonly states: ParamState[];
  private released = false;

  /**
   * @param params the parameters; by default weight decay applies to tensors with 2 or more
   * dims (matrices and embeddings) and not to biases and norm gains, as in nanoGPT.
   */
  constructor(params: Iterable<Tensor>, opts: AdamWOptions = {}, decay: (p: Tensor) => boolean = (p) => p.ndim >= 2) {
    checkOptions('AdamW', opts, ['lr', 'betas', 'eps', 'weightDecay', 'moments']);
    this.lr = opts.lr ?? 1e-3;
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    this.states = [...params].map((param) => {
      if (!param.isContiguous() || param.offset !== 0) throw new Error(`AdamW: parameter ${param.name ?? ''} must be a contiguous tensor`);
      // Without moments, m and v keep the parameter's shape (stateTensors names them) on storages of no elements.
      const moment = (): Tensor => (opts.moments === false ? new Tensor(param.backend.alloc(param.dtype, 0), param.shape) : zerosLike(param)).keep();
      return { param, m: moment(), v: moment(), decay: decay(param) };
    });
    this.released = opts.moments === false;
  }

  /** Applies one update from the parameters' .grad (parameters without a gradient are skipped). */
  stepUpdate(): void {
    if (this.released) throw new Error('AdamW: the moments were released (a ZeRO-1 rank updates its own slice)');
    this.step++;
    const bc1 = 1 - Math.pow(this.beta1, this.step);
    const bc2 = 1 - Math.pow(this.beta2, this.step);
    noGrad(() => {
      for (const s of this.states) {
        const g = s.param.grad;
        if (!g) continue;
        s.param.backend.adamw({
          param: s.param.storage, grad: g.storage, m: s.m.storage, v: s.v.storage, n: s.param.size,
          lr: this.lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps,
          weightDecay: s.decay ? this.weightDecay : 0, bc1, bc2,
        });
      }
    });
  }

  zeroGrad(): void {
    for (const s of this.states) {
      s.param.grad?.dispose();
      s.param.grad = null;
    }
  }

  /**
   * Frees the moment buffers: a ZeRO-1 rank (src/train/parallel) keeps the moments of its own
   * slice of the parameters instead. stepUpdate then throws; stateTensors still names the
   * parameters (with disposed m and v).
   */
  releaseMoments(): void {
    for (const s of this.states) {
      s.m.dispose();
      s.v.dispose();
    }
    this.released = true;
  }

  /** Moment buffers, for checkpoints. */
  stateTensors(): { param: Tensor; m: Tensor; v: Tensor }[] {
    return this.states.map(({ param, m, v }) => ({ param, m, v }));
  }
}
