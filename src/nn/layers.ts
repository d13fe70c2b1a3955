// The basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout. Weight layouts and
// parameter names are PyTorch's, so checkpoints map one to one.
import {
  defaultGenerator, dropout, embedding, full, gelu, getDefaultBackend, layerNorm, linear, quantEmbedding, QuantizedWeight, quantLinear, quantUnsupported, rand, randn, relu, rmsNorm, zeros,
  type Generator, type QuantFormat, type Tensor,
} from '../tensor/index.js';
import { Module, type ModuleOptions } from './module.js';
import { deferredNormal, deferring } from './deferred.js';

/** How a weight is drawn: PyTorch's default for the layer, or normal(0, std). */
export interface InitOptions extends ModuleOptions {
  /** Draw weights from normal(0, std) and set biases to zero (GPT-2 style). */
  std?: number;
  /** Leave weights at zero without drawing (they are about to be loaded from a checkpoint). */
  skipInit?: boolean;
}

export function normalTensor(shape: number[], std: number, opts: InitOptions): Tensor {
  if (deferring()) return deferredNormal(shape, std, opts, opts.skipInit ? null : opts.generator ?? defaultGenerator);
  if (opts.skipInit) return zeroTensor(shape, opts);
  return randn(shape, { std, backend: opts.backend, dtype: opts.dtype, generator: opts.generator ?? defaultGenerator });
}

export function zeroTensor(shape: number[], opts: ModuleOptions): Tensor {
  return zeros(shape, { backend: opts.backend, dtype: opts.dtype });
}

export function onesTensor(shape: number[], opts: ModuleOptions): Tensor {
  return full(shape, 1, { backend: opts.backend, dtype: opts.dtype });
}

/**
 * Layers built inside buildQuantized() get their (out, in) matrices as zeroed quantized weights
 * from the start, so a quantized checkpoint loads without a float copy of the model ever existing.
 */
let quantizedBuild: { format: QuantFormat; embeddings: boolean } | null = null;

/** Runs build() with every Linear (and, with `embeddings`, every Embedding) born quantized. */
export function buildQuantized<T>(spec: { format: QuantFormat; embeddings?: boolean }, build: () => T): T {
  const saved = quantizedBuild;
  quantizedBuild = { format: spec.format, embeddings: spec.embeddings ?? false };
  try {
    return build();
  } finally {
    quantizedBuild = saved;
  }
}

/** A zeroed quantized (N, K) weight when buildQuantized is on and the shape takes its format. */
function bornQuantized(N: number, K: number, opts: ModuleOptions, embeddingTable: boolean): QuantizedWeight | null {
  const q = quantizedBuild;
  if (!q || (embeddingTable && !q.embeddings) || quantUnsupported(q.format, N, K)) return null;
  return QuantizedWeight.zeros(q.format, N, K, opts.backend ?? getDefaultBackend());
}

/** A module whose (out, in) weight matrix may be held quantized (Linear, Embedding). */
export abstract class MatrixModule extends Module {
  protected floatWeight: Tensor | null = null;
  /** The quantized matrix, or null while the weight is float. */
  quant: QuantizedWeight | null = null;

  /** The float weight; a quantized layer has none (see quant). */
  get weight(): Tensor {
    if (!this.floatWeight) throw new Error(`${this.constructor.name}: the weight is quantized (${this.quant?.format}); read .quant, or .quant.dequantize() for a float copy`);
    return this.floatWeight;
  }

  protected setFloatWeight(t: Tensor | null): void {
    this.floatWeight = this.registerParameter('weight', t);
  }

  /** Holds the matrix as `q` from now on; the float weight (if any) is released. */
  setQuantized(q: QuantizedWeight): void {
    const [N, K] = this.matrixShape();
    if (q.N !== N || q.K !== K) throw new Error(`${this.constructor.name}: quantized weight (${q.N}, ${q.K}) does not match (${N}, ${K})`);
    this.floatWeight?.dispose();
    this.setFloatWeight(null);
    this.quant?.dispose();
    this.quant = q;
  }

  /** Quantizes the float weight in place. */
  quantize(format: QuantFormat): void {
    this.setQuantized(QuantizedWeight.quantize(this.weight, format));
  }

  /** Back to a float weight (zeros unless `values`: the dequantized matrix). */
  unquantize(values = true): void {
    if (!this.quant) return;
    const q = this.quant;
    const w = values ? q.dequantize() : zeros(this.matrixShape(), { backend: q.backend });
    q.dispose();
    this.quant = null;
    this.setFloatWeight(w.keep());
  }

  /** The (N, K) shape of the matrix. */
  abstract matrixShape(): [number, number];

  /** x · Wᵀ with this matrix (a Linear's forward without bias; a tied embedding as the LM head). */
  project(x: Tensor, bias?: Tensor | null): Tensor {
    return this.quant ? quantLinear(x, this.quant, bias) : linear(x, this.weight, bias);
  }
}

/** y = x Wᵀ + b, W (out, in) as in PyTorch. */
export class Linear extends MatrixModule {
  readonly bias: Tensor | null; // (out)

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: InitOptions & { bias?: boolean } = {}) {
    super();
    const hasBias = opts.bias ?? true;
    const q = bornQuantized(outFeatures, inFeatures, opts, false);
    if (q) {
      this.setFloatWeight(null); // keeps the parameter order (weight, bias) for unquantize()
      this.quant = q;
      this.bias = this.registerParameter('bias', hasBias ? zeroTensor([outFeatures], opts) : null);
    } else if (opts.std !== undefined || opts.skipInit) {
      this.setFloatWeight(normalTensor([outFeatures, inFeatures], opts.std ?? 0, opts));
      this.bias = this.registerParameter('bias', hasBias ? zeroTensor([outFeatures], opts) : null);
    } else {
      // PyTorch's default: U(-1/√in, 1/√in) for weight and bias.
      const k = 1 / Math.sqrt(inFeatures);
      const u = (shape: number[]) => rand(shape, { low: -k, high: k, backend: opts.backend, dtype: opts.dtype, generator: opts.generator ?? defaultGenerator });
      this.setFloatWeight(u([outFeatures, inFeatures]));
      this.bias = this.registerParameter('bias', hasBias ? u([outFeatures]) : null);
    }
  }

  matrixShape(): [number, number] {
    return [this.outFeatures, this.inFeatures];
  }

  forward(x: Tensor): Tensor {
    return this.project(x, this.bias); // (..., in) -> (..., out)
  }

  /** act(forward(x)), the activation fused into the matmul in inference; an adapter that
   *  replaced forward on this instance (LoRA) keeps its forward. */
  forwardActivated(x: Tensor, activation: 'gelu' | 'relu'): Tensor {
    if (Object.prototype.hasOwnProperty.call(this, 'forward')) {
      const y = this.forward(x);
      return activation === 'gelu' ? gelu(y, 'tanh') : relu(y);
    }
    return this.quant ? quantLinear(x, this.quant, this.bias, activation) : linear(x, this.weight, this.bias, activation);
  }
}

/** A lookup table of `num` vectors of size `dim`; weight (num, dim). */
export class Embedding extends MatrixModule {
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, opts: InitOptions = {}) {
    super();
    // Token tables only: subclasses (learned positions) read their weight directly.
    const q = new.target === Embedding ? bornQuantized(numEmbeddings, embeddingDim, opts, true) : null;
    // PyTorch's default is N(0, 1); GPT-2 uses N(0, 0.02).
    if (q) {
      this.setFloatWeight(null);
      this.quant = q;
    } else this.setFloatWeight(normalTensor([numEmbeddings, embeddingDim], opts.std ?? 1, opts));
  }

  matrixShape(): [number, number] {
    return [this.numEmbeddings, this.embeddingDim];
  }

  forward(ids: Tensor): Tensor {
    return this.quant ? quantEmbedding(this.quant, ids) : embedding(this.weight, ids); // (...) -> (..., dim)
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
