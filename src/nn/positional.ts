// Position information. Attention is permutation-invariant, so order must be injected:
//  - learned: a trained vector per position (GPT-2's wpe), added to the token embeddings;
//  - sinusoidal: the fixed table of "Attention Is All You Need" (2017), added likewise;
//  - RoPE (Su et al., 2021): rotates q and k so that q·k depends on the relative offset.
// Each takes a position offset so that a KV cache can continue a sequence.
import { arange, concat, fmt, mul, add, sub, slice, tensor, type Tensor } from '../tensor/index.js';
import { Embedding, type InitOptions } from './layers.js';
import { Module, type ModuleOptions } from './module.js';

function checkRange(what: string, offset: number, T: number, max: number): void {
  if (offset < 0 || offset + T > max) {
    throw new RangeError(`${what}: positions [${offset}, ${offset + T}) exceed the table of ${max} positions (block_size)`);
  }
}

/** Learned absolute positions: an Embedding of (maxLen, dim). */
export class LearnedPositionalEmbedding extends Embedding {
  constructor(readonly maxLen: number, dim: number, opts: InitOptions = {}) {
    super(maxLen, dim, opts);
  }

  /** (T, dim) vectors of positions offset … offset+T-1. */
  positions(T: number, offset = 0): Tensor {
    checkRange('LearnedPositionalEmbedding', offset, T, this.maxLen);
    return this.forward(arange(offset, offset + T, 1, { backend: this.weight.backend }));
  }
}

/** PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); no parameters. */
export class SinusoidalPositionalEncoding extends Module {
  readonly table: Tensor; // (maxLen, dim)

  constructor(readonly maxLen: number, readonly dim: number, opts: ModuleOptions = {}) {
    super();
    const v = new Float64Array(maxLen * dim);
    for (let pos = 0; pos < maxLen; pos++) {
      for (let i = 0; i < dim; i += 2) {
        const angle = pos / Math.pow(10000, i / dim);
        v[pos * dim + i] = Math.sin(angle);
        if (i + 1 < dim) v[pos * dim + i + 1] = Math.cos(angle);
      }
    }
    this.table = this.registerBuffer('table', tensor(v, { shape: [maxLen, dim], backend: opts.backend, dtype: opts.dtype ?? 'float32' }));
  }

  /** (T, dim) rows of the table for positions offset … offset+T-1 (a view). */
  positions(T: number, offset = 0): Tensor {
    checkRange('SinusoidalPositionalEncoding', offset, T, this.maxLen);
    return slice(this.table, 0, offset, offset + T);
  }
}

/**
 * Rotary position embedding, GPT-NeoX / Hugging Face LLaMA "half-split" convention: dimension
 * i of the first half is paired with dimension i + D/2 (not the interleaved pairs 2i, 2i+1 of
 * the paper and Meta's original LLaMA code; the two differ by a fixed permutation of q and k's
 * features, so checkpoints convert by permuting those weights). Pair i at position p rotates
 * by angle p·θᵢ, θᵢ = base^(-2i/D).
 */
export class RotaryEmbedding extends Module {
  readonly cos: Tensor; // (maxLen, D/2)
  readonly sin: Tensor; // (maxLen, D/2)

  constructor(readonly headDim: number, readonly maxLen: number, opts: ModuleOptions & { base?: number } = {}) {
    super();
    if (headDim % 2 !== 0) throw new Error(`RotaryEmbedding: head dim must be even, got ${headDim}`);
    const base = opts.base ?? 10000;
    const half = headDim / 2;
    const c = new Float64Array(maxLen * half);
    const s = new Float64Array(maxLen * half);
    for (let p = 0; p < maxLen; p++) {
      for (let i = 0; i < half; i++) {
        const angle = p * Math.pow(base, (-2 * i) / headDim);
        c[p * half + i] = Math.cos(angle);
        s[p * half + i] = Math.sin(angle);
      }
    }
    const o = { shape: [maxLen, half], backend: opts.backend, dtype: opts.dtype ?? 'float32' } as const;
    this.cos = this.registerBuffer('cos', tensor(c, o));
    this.sin = this.registerBuffer('sin', tensor(s, o));
  }

  /** Rotates x (B, H, T, D) whose first token sits at position `offset`. */
  apply(x: Tensor, offset = 0): Tensor {
    const D = x.shape[x.ndim - 1]!;
    const T = x.shape[x.ndim - 2]!;
    if (D !== this.headDim) throw new Error(`RotaryEmbedding: input ${fmt(x.shape)} has head dim ${D}, expected ${this.headDim}`);
    checkRange('RotaryEmbedding', offset, T, this.maxLen);
    const half = D / 2;
    const cos = slice(this.cos, 0, offset, offset + T); // (T, D/2), broadcasts over B and H
    const sin = slice(this.sin, 0, offset, offset + T);
    const x1 = slice(x, -1, 0, half); // (B, H, T, D/2)
    const x2 = slice(x, -1, half);
    // (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin): a 2-D rotation of each pair.
    return concat([sub(mul(x1, cos), mul(x2, sin)), add(mul(x2, cos), mul(x1, sin))], -1);
  }
}
