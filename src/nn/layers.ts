// The basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout. Weight layouts and
// parameter names are PyTorch's, so checkpoints map one to one.
import {
  defaultGenerator, dropout, embedding, full, gelu, layerNorm, linear, rand, randn, relu, rmsNorm, zeros,
  type Generator, type Tensor,
} from '../tensor/index.js';
import { Module, type ModuleOptions } from './module.js';

/** How a weight is drawn: PyTorch's default for the layer, or normal(0, std). */
export interface InitOptions extends ModuleOptions {
  /** Draw weights from normal(0, std) and set biases to zero (GPT-2 style). */
  std?: number;
  /** Leave weights at zero without drawing (they are about to be loaded from a checkpoint). */
  skipInit?: boolean;
}

export function normalTensor(shape: number[], std: number, opts: InitOptions): Tensor {
  if (opts.skipInit) return zeroTensor(shape, opts);
  return randn(shape, { std, backend: opts.backend, dtype: opts.dtype, generator: opts.generator ?? defaultGenerator });
}

export function zeroTensor(shape: number[], opts: ModuleOptions): Tensor {
  return zeros(shape, { backend: opts.backend, dtype: opts.dtype });
}

export function onesTensor(shape: number[], opts: ModuleOptions): Tensor {
  return full(shape, 1, { backend: opts.backend, dtype: opts.dtype });
}

/** y = x Wᵀ + b, W (out, in) as in PyTorch. */
export class Linear extends Module {
  readonly weight: Tensor; // (out, in)
  readonly bias: Tensor | null; // (out)

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: InitOptions & { bias?: boolean } = {}) {
    super();
    const hasBias = opts.bias ?? true;
    if (opts.std !== undefined || opts.skipInit) {
      this.weight = this.registerParameter('weight', normalTensor([outFeatures, inFeatures], opts.std ?? 0, opts));
      this.bias = this.registerParameter('bias', hasBias ? zeroTensor([outFeatures], opts) : null);
    } else {
      // PyTorch's default: U(-1/√in, 1/√in) for weight and bias.
      const k = 1 / Math.sqrt(inFeatures);
      const u = (shape: number[]) => rand(shape, { low: -k, high: k, backend: opts.backend, dtype: opts.dtype, generator: opts.generator ?? defaultGenerator });
      this.weight = this.registerParameter('weight', u([outFeatures, inFeatures]));
      this.bias = this.registerParameter('bias', hasBias ? u([outFeatures]) : null);
    }
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias); // (..., in) -> (..., out)
  }

  /** act(forward(x)), the activation fused into the matmul in inference; an adapter that
   *  replaced forward on this instance (LoRA) keeps its forward. */
  forwardActivated(x: Tensor, activation: 'gelu' | 'relu'): Tensor {
    if (Object.prototype.hasOwnProperty.call(this, 'forward')) {
      const y = this.forward(x);
      return activation === 'gelu' ? gelu(y, 'tanh') : relu(y);
    }
    return linear(x, this.weight, this.bias, activation);
  }
}

/** A lookup table of `num` vectors of size `dim`; weight (num, dim). */
export class Embedding extends Module {
  readonly weight: Tensor;

  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, opts: InitOptions = {}) {
    super();
    // PyTorch's default is N(0, 1); GPT-2 uses N(0, 0.02).
    this.weight = this.registerParameter('weight', normalTensor([numEmbeddings, embeddingDim], opts.std ?? 1, opts));
  }

  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids); // (...) -> (..., dim)
  }
}

/** LayerNorm over the last dim with a gain and (optionally) a bias. */
export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly eps: number;

  constructor(readonly dim: number, opts: ModuleOptions & { bias?: boolean; eps?: number } = {}) {
    super();
    this.eps = opts.eps ?? 1e-5;
    this.weight = this.registerParameter('weight', onesTensor([dim], opts));
    this.bias = this.registerParameter('bias', (opts.bias ?? true) ? zeroTensor([dim], opts) : null);
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** RMSNorm (Zhang & Sennrich, 2019): LayerNorm without centring or bias, as in LLaMA. */
export class RMSNorm extends Module {
  readonly weight: Tensor;
  readonly eps: number;

  constructor(readonly dim: number, opts: ModuleOptions & { eps?: number } = {}) {
    super();
    this.eps = opts.eps ?? 1e-6;
    this.weight = this.registerParameter('weight', onesTensor([dim], opts));
  }

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

/** Inverted dropout, active only in training mode; masks come from a seeded generator. */
export class Dropout extends Module {
  constructor(readonly p: number, readonly generator: Generator = defaultGenerator) {
    super();
    if (!(p >= 0 && p < 1)) throw new RangeError(`Dropout: p must be in [0, 1), got ${p}`);
  }

  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training, this.generator);
  }
}
