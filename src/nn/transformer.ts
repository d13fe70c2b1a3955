// The encoder-decoder Transformer's layers (Vaswani et al. 2017, "Attention Is All You Need"):
// MultiHeadAttention with separate q/k/v projections (self- or cross-attention, key padding
// mask, causal flag, caches), EncoderLayer (self-attn, FFN) and DecoderLayer (causal self-attn,
// cross-attn over the encoder's memory, FFN). Each sublayer is a residual branch with dropout
// on its output and a LayerNorm placed 'post' (the paper: x = LN(x + f(x))) or 'pre'
// (x = x + f(LN(x)); the stack then needs a final norm).
import {
  concat, contiguous, embedding, fmt, noGrad, permute, reshape, scaledDotProductAttention, tensor,
  add, type Tensor,
} from '../tensor/index.js';
import { Dropout, LayerNorm, Linear, type InitOptions } from './layers.js';
import { MLP, type MLPActivation } from './mlp.js';
import { Module } from './module.js';

/** Keys and values kept between decoding steps, (B, H, Tk, D) each; null until first filled.
 *  Tensors are kept (outlive tidy scopes) and detached. */
export interface AttentionCache {
  k: Tensor | null;
  v: Tensor | null;
}

export function emptyAttentionCache(): AttentionCache {
  return { k: null, v: null };
}

function owned(t: Tensor): Tensor {
  const c = noGrad(() => contiguous(t));
  return (c === t ? t.detach() : c).keep(); // contiguous, graph-free, own handle
}

function storeCache(cache: AttentionCache, k: Tensor, v: Tensor): void {
  cache.k?.dispose();
  cache.v?.dispose();
  cache.k = owned(k);
  cache.v = owned(v);
}

/** Picks rows of t (B, ...) along dim 0 → (rows.length, ...), without recording a graph. */
export function selectRows(t: Tensor, rows: readonly number[]): Tensor {
  return noGrad(() => {
    const B = t.shape[0]!;
    const rest = t.shape.slice(1);
    const flat = reshape(contiguous(t), [B, t.size / B]); // (B, N)
    const idx = tensor(Int32Array.from(rows), { backend: t.backend, dtype: 'int32', shape: [rows.length] });
    return reshape(embedding(flat, idx), [rows.length, ...rest]); // (R, ...)
  });
}

/** Reorders (or subsets) a cache's rows in place: row i becomes old row rows[i]. */
export function reorderAttentionCache(cache: AttentionCache, rows: readonly number[]): void {
  for (const key of ['k', 'v'] as const) {
    const t = cache[key];
    if (!t) continue;
    cache[key] = selectRows(t, rows).keep();
    t.dispose();
  }
}

export interface AttentionCallOptions {
  /** (B, Tk) int32, 1 = attend, 0 = padding; Tk counts cached keys too. */
  keyMask?: Tensor | null;
  /** Query i sees keys up to (cached + i) only (bottom-right aligned). */
  causal?: boolean;
  /** Self-attention: new keys/values are appended. Cross-attention: filled once from the
   *  memory, then reused (the memory is not projected again). */
  cache?: AttentionCache;
}

/** Multi-head attention with PyTorch-like names q_proj, k_proj, v_proj, out_proj. */
export class MultiHeadAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  readonly headDim: number;

  constructor(readonly dModel: number, readonly nHead: number, opts: InitOptions & { bias?: boolean } = {}) {
    super();
    if (!(Number.isInteger(nHead) && nHead > 0 && dModel % nHead === 0)) {
      throw new Error(`MultiHeadAttention: d_model (${dModel}) must be divisible by n_head (${nHead})`);
    }
    this.headDim = dModel / nHead;
    const lin = { ...opts, bias: opts.bias ?? true };
    this.q_proj = this.registerModule('q_proj', new Linear(dModel, dModel, lin));
    this.k_proj = this.registerModule('k_proj', new Linear(dModel, dModel, lin));
    this.v_proj = this.registerModule('v_proj', new Linear(dModel, dModel, lin));
    this.out_proj = this.registerModule('out_proj', new Linear(dModel, dModel, lin));
  }

  private heads(t: Tensor): Tensor {
    const [B, T] = t.shape as [number, number];
    return permute(reshape(t, [B, T, this.nHead, this.headDim]), [0, 2, 1, 3]); // (B, H, T, D)
  }

  private check(x: Tensor, what: string): void {
    if (x.ndim !== 3 || x.shape[2] !== this.dModel) throw new Error(`MultiHeadAttention: ${what} ${fmt(x.shape)} must be (B, T, ${this.dModel})`);
  }

  /** Self-attention over x (B, T, C) → (B, T, C). With a cache, x holds only the new tokens. */
  selfAttention(x: Tensor, opts: AttentionCallOptions = {}): Tensor {
    this.check(x, 'input');
    let k = this.heads(this.k_proj.forward(x)); // (B, H, T, D)
    let v = this.heads(this.v_proj.forward(x));
    const cache = opts.cache;
    if (cache) {
      if (cache.k && cache.k.shape[0] !== x.shape[0]) {
        throw new Error(`MultiHeadAttention: batch of ${x.shape[0]} does not match the cache's batch of ${cache.k.shape[0]}`);
      }
      if (cache.k && cache.v) {
        k = concat([cache.k, k], 2); // (B, H, Tpast + T, D)
        v = concat([cache.v, v], 2);
      }
      storeCache(cache, k, v);
    }
    return this.attend(x, k, v, opts);
  }

  /** Cross-attention of x (B, Tq, C) over memory (B, Tk, C) → (B, Tq, C). With a filled
   *  cache, memory may be null (its keys and values are taken from the cache). */
  crossAttention(x: Tensor, memory: Tensor | null, opts: Omit<AttentionCallOptions, 'causal'> = {}): Tensor {
    this.check(x, 'query');
    const cache = opts.cache;
    let k: Tensor;
    let v: Tensor;
    if (cache?.k && cache.v) {
      k = cache.k;
      v = cache.v;
    } else {
      if (!memory) throw new Error('MultiHeadAttention.crossAttention: no memory given and the cache is empty');
      this.check(memory, 'memory');
      if (memory.shape[0] !== x.shape[0]) throw new Error(`MultiHeadAttention: query batch ${x.shape[0]} and memory batch ${memory.shape[0]} differ`);
      k = this.heads(this.k_proj.forward(memory)); // (B, H, Tk, D)
      v = this.heads(this.v_proj.forward(memory));
      if (cache) storeCache(cache, k, v);
    }
    if (k.shape[0] !== x.shape[0]) throw new Error(`MultiHeadAttention: batch of ${x.shape[0]} does not match the cache's batch of ${k.shape[0]}`);
    return this.attend(x, k, v, { keyMask: opts.keyMask, causal: false });
  }

  /** General form: query (B, Tq, C) over key/value (B, Tk, C); null keyValue = self-attention. */
  forward(query: Tensor, keyValue: Tensor | null = null, opts: AttentionCallOptions = {}): Tensor {
    return keyValue === null ? this.selfAttention(query, opts) : this.crossAttention(query, keyValue, opts);
  }

  private attend(x: Tensor, k: Tensor, v: Tensor, opts: AttentionCallOptions): Tensor {
    const [B, T, C] = x.shape as [number, number, number];
    const q = this.heads(this.q_proj.forward(x)); // (B, H, T, D)
    const y = scaledDotProductAttention(q, k, v, { causal: opts.causal ?? false, keyMask: opts.keyMask ?? null }); // (B, H, T, D)
    return this.out_proj.forward(reshape(permute(y, [0, 2, 1, 3]), [B, T, C])); // (B, T, C)
  }
}

export type NormPlacement = 'post' | 'pre';

export interface TransformerLayerOptions extends InitOptions {
  dFF: number;
  dropout?: number;
  norm_placement?: NormPlacement;
  activation?: MLPActivation;
  layerNormEps?: number;
  /** Draws the dropout masks. */
  dropoutGenerator?: InitOptions['generator'];
}

function layerParts(dModel: number, o: TransformerLayerOptions) {
  const init = { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: o.std };
  const norm = () => new LayerNorm(dModel, { backend: o.backend, dtype: o.dtype, eps: o.layerNormEps ?? 1e-5 });
  return { init, norm };
}

/** Residual branch with the configured norm placement and dropout on the sublayer output. */
function residual(placement: NormPlacement, x: Tensor, norm: LayerNorm, drop: Dropout, f: (h: Tensor) => Tensor): Tensor {
  if (placement === 'pre') return add(x, drop.forward(f(norm.forward(x))));
  return norm.forward(add(x, drop.forward(f(x)))); // (B, T, C)
}

/** Self-attention then feed-forward. Names: self_attn, ffn (c_fc, c_proj), norm1, norm2. */
export class EncoderLayer extends Module {
  readonly self_attn: MultiHeadAttention;
  readonly ffn: MLP;
  readonly norm1: LayerNorm;
  readonly norm2: LayerNorm;
  readonly dropout: Dropout;
  readonly placement: NormPlacement;

  constructor(dModel: number, nHead: number, o: TransformerLayerOptions) {
    super();
    const { init, norm } = layerParts(dModel, o);
    this.placement = o.norm_placement ?? 'post';
    this.self_attn = this.registerModule('self_attn', new MultiHeadAttention(dModel, nHead, init));
    this.ffn = this.registerModule('ffn', new MLP(dModel, o.activation ?? 'relu', { ...init, hidden: o.dFF }));
    this.norm1 = this.registerModule('norm1', norm());
    this.norm2 = this.registerModule('norm2', norm());
    this.dropout = this.registerModule('dropout', new Dropout(o.dropout ?? 0, o.dropoutGenerator ?? o.generator));
  }

  /** x (B, S, C), keyMask (B, S) int32 → (B, S, C). */
  forward(x: Tensor, keyMask: Tensor | null = null): Tensor {
    x = residual(this.placement, x, this.norm1, this.dropout, (h) => this.self_attn.selfAttention(h, { keyMask }));
    return residual(this.placement, x, this.norm2, this.dropout, (h) => this.ffn.forward(h));
  }
}

/** One decoder layer's caches: its self-attention's keys/values and the memory's. */
export interface DecoderLayerCache {
  self: AttentionCache;
  cross: AttentionCache;
}

/** Causal self-attention, cross-attention over the memory, feed-forward.
 *  Names: self_attn, cross_attn, ffn, norm1, norm2, norm3. */
export class DecoderLayer extends Module {
  readonly self_attn: MultiHeadAttention;
  readonly cross_attn: MultiHeadAttention;
  readonly ffn: MLP;
  readonly norm1: LayerNorm;
  readonly norm2: LayerNorm;
  readonly norm3: LayerNorm;
  readonly dropout: Dropout;
  readonly placement: NormPlacement;

  constructor(dModel: number, nHead: number, o: TransformerLayerOptions) {
    super();
    const { init, norm } = layerParts(dModel, o);
    this.placement = o.norm_placement ?? 'post';
    this.self_attn = this.registerModule('self_attn', new MultiHeadAttention(dModel, nHead, init));
    this.cross_attn = this.registerModule('cross_attn', new MultiHeadAttention(dModel, nHead, init));
    this.ffn = this.registerModule('ffn', new MLP(dModel, o.activation ?? 'relu', { ...init, hidden: o.dFF }));
    this.norm1 = this.registerModule('norm1', norm());
    this.norm2 = this.registerModule('norm2', norm());
    this.norm3 = this.registerModule('norm3', norm());
    this.dropout = this.registerModule('dropout', new Dropout(o.dropout ?? 0, o.dropoutGenerator ?? o.generator));
  }

  /**
   * x (B, T, C) target states (only the new positions when cached), memory (B, S, C) (null
   * when cache.cross is filled), memoryMask (B, S), tgtMask (B, Tpast + T) or null → (B, T, C).
   */
  forward(x: Tensor, memory: Tensor | null, opts: { memoryMask?: Tensor | null; tgtMask?: Tensor | null; cache?: DecoderLayerCache } = {}): Tensor {
    const p = this.placement;
    x = residual(p, x, this.norm1, this.dropout, (h) => this.self_attn.selfAttention(h, { causal: true, keyMask: opts.tgtMask ?? null, cache: opts.cache?.self }));
    x = residual(p, x, this.norm2, this.dropout, (h) => this.cross_attn.crossAttention(h, memory, { keyMask: opts.memoryMask ?? null, cache: opts.cache?.cross }));
    return residual(p, x, this.norm3, this.dropout, (h) => this.ffn.forward(h));
  }
}
