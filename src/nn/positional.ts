// Position information. Attention is permutation-invariant, so order must be injected:
//  - learned: a trained vector per position (GPT-2's wpe), added to the token embeddings;
//  - sinusoidal: the fixed table of "Attention Is All You Need" (2017), added likewise;
//  - RoPE (Su et al., 2021): rotates q and k so that q·k depends on the relative offset.
// Each takes a position offset so that a KV cache can continue a sequence.
import { arange, fmt, rotary, slice, tensor, type Tensor } from '../tensor/index.js';
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
    return rotary(x, this.cos, this.sin, { layout: 'bhtd', offset });
  }
}

/**
 * How Hugging Face configs stretch RoPE past the trained context (config.json `rope_scaling`):
 *  - linear (Chen et al. 2023, position interpolation): every frequency divided by factor;
 *  - dynamic (NTK-aware, as in transformers' dynamic_rope_update): once a sequence is longer
 *    than the original context L, the base grows to base·(factor·T/L - (factor-1))^(d/(d-2));
 *  - llama3 (Meta's Llama 3.1 recipe): long wavelengths divided by factor, short ones kept,
 *    the band between interpolated smoothly.
 */
export type RopeScaling =
  | { rope_type: 'linear'; factor: number }
  | { rope_type: 'dynamic'; factor: number }
  | { rope_type: 'llama3'; factor: number; low_freq_factor: number; high_freq_factor: number; original_max_position_embeddings: number };

export interface RopeSpec {
  /** Features rotated per head (the first `dim`; Phi rotates a fraction of the head). Even. */
  dim: number;
  base: number;
  scaling: RopeScaling | null;
  /** The context the frequencies were trained for (max_position_embeddings). */
  maxPositions: number;
}

const f32 = Math.fround;

/**
 * The inverse frequencies θᵢ (dim/2 of them) for sequences of seqLen positions, rounded to
 * float32 at each step as transformers computes them in float32 (so angles agree bit for bit
 * far more often than a float64 computation would).
 */
export function ropeInverseFrequencies(spec: RopeSpec, seqLen: number): Float64Array {
  const { dim, scaling } = spec;
  let base = spec.base;
  if (scaling?.rope_type === 'dynamic' && seqLen > spec.maxPositions) {
    base = base * Math.pow((scaling.factor * seqLen) / spec.maxPositions - (scaling.factor - 1), dim / (dim - 2));
  }
  const half = dim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = f32(1 / f32(Math.pow(f32(base), f32((2 * i) / dim))));
  if (scaling?.rope_type === 'linear') for (let i = 0; i < half; i++) inv[i] = f32(inv[i]! / scaling.factor);
  if (scaling?.rope_type === 'llama3') {
    const { factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position_embeddings: L } = scaling;
    const lowWavelen = L / lo;
    const highWavelen = L / hi;
    for (let i = 0; i < half; i++) {
      const f = inv[i]!;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowWavelen) inv[i] = f32(f / factor); // long wavelengths: interpolated
      else if (wavelen >= highWavelen) {
        const smooth = (L / wavelen - lo) / (hi - lo); // the band between: a blend
        inv[i] = f32((1 - smooth) * (f / factor) + smooth * f);
      }
    }
  }
  return inv;
}

/**
 * RoPE with Hugging Face's scalings and partial rotation, half-split convention as
 * RotaryEmbedding. Tables are built on demand (growing by doubling), so any length works;
 * dynamic scaling rebuilds them for sequences past the original context.
 */
export class ScaledRope {
  private cos: Tensor | null = null; // (capacity, dim/2)
  private sin: Tensor | null = null;
  private tableSeqLen = 0; // the seqLen the frequencies were computed for (dynamic)

  constructor(readonly spec: RopeSpec, private readonly opts: ModuleOptions = {}) {
    if (spec.dim % 2 !== 0 || spec.dim < 2) throw new Error(`ScaledRope: rotary dim must be even and positive, got ${spec.dim}`);
  }

  private build(rows: number, seqLen: number): void {
    const half = this.spec.dim / 2;
    const inv = ropeInverseFrequencies(this.spec, seqLen);
    const c = new Float64Array(rows * half);
    const s = new Float64Array(rows * half);
    for (let p = 0; p < rows; p++) {
      for (let i = 0; i < half; i++) {
        const angle = f32(p * inv[i]!);
        c[p * half + i] = Math.cos(angle);
        s[p * half + i] = Math.sin(angle);
      }
    }
    this.dispose();
    const o = { shape: [rows, half], backend: this.opts.backend, dtype: this.opts.dtype ?? 'float32' } as const;
    this.cos = tensor(c, o).keep();
    this.sin = tensor(s, o).keep();
    this.tableSeqLen = seqLen;
  }

  /** The cos and sin tables (rows ≥ offset + T, dim/2), from position 0. */
  private tables(T: number, offset: number): [Tensor, Tensor] {
    const end = offset + T;
    const dynamic = this.spec.scaling?.rope_type === 'dynamic';
    // Dynamic scaling: the frequencies of a forward depend on its sequence length once past the
    // original context (transformers recomputes them from max(position_ids) + 1).
    const seqLen = dynamic && end > this.spec.maxPositions ? end : this.spec.maxPositions;
    const cap = this.cos?.shape[0] ?? 0;
    if (!this.cos || cap < end || (dynamic && this.tableSeqLen !== seqLen)) {
      // Past the original context a dynamic table serves one length only: build just that.
      this.build(seqLen > this.spec.maxPositions ? end : Math.max(end, 2 * cap, 64), seqLen);
    }
    return [this.cos!, this.sin!];
  }

  /** The cos and sin tables (rows ≥ end, dim/2) that apply() uses for positions below end; null
   *  with dynamic scaling, whose tables depend on the sequence's length. */
  tablesUpTo(end: number): [Tensor, Tensor] | null {
    return this.spec.scaling?.rope_type === 'dynamic' ? null : this.tables(end, 0);
  }

  /** Rotates the first spec.dim features of x, (B, H, T, D) or (B, T, H, D) per `layout`,
   *  whose first token is at `offset` (one fused op; see rotary). */
  apply(x: Tensor, offset = 0, layout: 'bhtd' | 'bthd' = 'bhtd'): Tensor {
    const T = x.shape[layout === 'bthd' ? 1 : 2]!;
    const D = x.shape[3]!;
    if (this.spec.dim > D) throw new Error(`ScaledRope: input ${fmt(x.shape)} has head dim ${D}, fewer than the ${this.spec.dim} rotary features`);
    const [cos, sin] = this.tables(T, offset);
    return rotary(x, cos, sin, { layout, offset, rotaryDim: this.spec.dim });
  }

  dispose(): void {
    this.cos?.dispose();
    this.sin?.dispose();
    this.cos = this.sin = null;
  }
}
