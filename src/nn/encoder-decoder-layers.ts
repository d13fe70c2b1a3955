// The layers of the encoder-decoder Transformer (Vaswani et al. 2017, "Attention Is All You
// Need"; stacked in models/seq2seq.ts, and the encoder's in models/encoder.ts for BERT too):
// MultiHeadAttention with separate q/k/v projections (self- or cross-attention, key padding
// mask, causal flag, caches), EncoderLayer (self-attn, FFN) and DecoderLayer (causal self-attn,
// cross-attn over the encoder's memory, FFN). Each sublayer is a residual branch with dropout
// on its output and a LayerNorm placed 'post' (the paper: x = LN(x + f(x))) or 'pre'
// (x = x + f(LN(x)); the stack then needs a final norm).
// Self-attention takes any AttentionKind (see attention-config.ts): the sparse kinds go through
// the fused kernel's sparsity (bottom-right aligned, so the decoder's KV cache works unchanged),
// linear and performer use feature maps (causal: chunked with a running-sum cache), linformer
// projects keys/values along the sequence (bidirectional only). Cross-attention is always dense.
import type { AttentionSparsity } from '../backend/backend.js';
import {
  concat, contiguous, elu1, embedding, fmt, noGrad, permute, reshape, scaledDotProductAttention, slice, tensor,
  add, mul, to, type Generator, type Tensor,
} from '../tensor/index.js';
import type { AttentionKind } from './attention-config.js';
import type { AttentionProbe } from './attention.js';
import { Dropout, LayerNorm, Linear, normalTensor, type InitOptions } from './layers.js';
import {
  causalLinearAttention, linearAttention, LinearAttentionState, linformerProject, PerformerFeatureMap,
} from './linear-attention.js';
import { MLP, type MLPActivation } from './mlp.js';
import { Module } from './module.js';

/** Keys and values kept between decoding steps, (B, H, Tk, D) each; null until first filled.
 *  Linear and performer self-attention keep running sums in `state` instead.
 *  Tensors are kept (outlive tidy scopes) and detached. */
export interface AttentionCache {
  k: Tensor | null;
  v: Tensor | null;
  state?: LinearAttentionState | null;
}

export function emptyAttentionCache(): AttentionCache {
  return { k: null, v: null, state: null };
}

/** Frees a cache's tensors and empties it. */
export function clearAttentionCache(cache: AttentionCache): void {
  cache.k?.dispose();
  cache.v?.dispose();
  cache.k = null;
  cache.v = null;
  cache.state?.reset();
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
  const st = cache.state;
  if (st?.S && st.z) st.set(selectRows(st.S, rows), selectRows(st.z, rows)); // set keeps the length
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

export interface MultiHeadAttentionOptions extends InitOptions {
  bias?: boolean;
  /** Self-attention's variant (default 'dense'); cross-attention is always dense. */
  kind?: AttentionKind;
  /** For local, strided and fixed (see sparsityOf). */
  sparsity?: AttentionSparsity | null;
  /** performer: random features m (default 64). */
  performerFeatures?: number;
  /** Draws the performer's initial features (default: generator). */
  featureGenerator?: Generator;
  /** linformer: the longest sequence (E and F have this many columns). */
  maxLen?: number;
  /** linformer: the projected length k (default 64). */
  linformerK?: number;
  /** Tokens per chunk of causal linear attention (default 64). */
  linearChunk?: number;
}

/** Multi-head attention with PyTorch-like names q_proj, k_proj, v_proj, out_proj (and
 *  feature_map.omega for performer, E and F for linformer). */
export class MultiHeadAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  readonly headDim: number;
  readonly kind: AttentionKind;
  readonly sparsity: AttentionSparsity | null;
  readonly linearChunk: number;
  /** The random features, when kind is 'performer'. */
  readonly feature_map: PerformerFeatureMap | null;
  /** Linformer's projections (k, maxLen) for keys and values, when kind is 'linformer'. */
  readonly E: Tensor | null;
  readonly F: Tensor | null;
  /** Inspection hook (see AttentionProbe in attention.ts); null in normal use. */
  probe: AttentionProbe | null = null;

  constructor(readonly dModel: number, readonly nHead: number, opts: MultiHeadAttentionOptions = {}) {
    super();
    if (!(Number.isInteger(nHead) && nHead > 0 && dModel % nHead === 0)) {
      throw new Error(`MultiHeadAttention: d_model (${dModel}) must be divisible by n_head (${nHead})`);
    }
    this.headDim = dModel / nHead;
    this.kind = opts.kind ?? 'dense';
    this.sparsity = opts.sparsity ?? null;
    this.linearChunk = opts.linearChunk ?? 64;
    const init = { backend: opts.backend, dtype: opts.dtype, generator: opts.generator, skipInit: opts.skipInit, std: opts.std };
    const lin = { ...init, bias: opts.bias ?? true };
    this.q_proj = this.registerModule('q_proj', new Linear(dModel, dModel, lin));
    this.k_proj = this.registerModule('k_proj', new Linear(dModel, dModel, lin));
    this.v_proj = this.registerModule('v_proj', new Linear(dModel, dModel, lin));
    this.out_proj = this.registerModule('out_proj', new Linear(dModel, dModel, lin));
    this.feature_map = this.kind === 'performer'
      ? this.registerModule('feature_map', new PerformerFeatureMap(this.headDim, opts.performerFeatures ?? 64, {
        backend: opts.backend, dtype: opts.dtype, generator: opts.featureGenerator ?? opts.generator, skipInit: opts.skipInit,
      }))
      : null;
    if (this.kind === 'linformer') {
      const maxLen = opts.maxLen;
      const k = opts.linformerK ?? 64;
      if (!(Number.isInteger(maxLen) && maxLen! >= 1)) throw new Error('MultiHeadAttention: linformer needs maxLen, the longest sequence');
      this.E = this.registerParameter('E', normalTensor([k, maxLen!], 1 / Math.sqrt(k), init));
      this.F = this.registerParameter('F', normalTensor([k, maxLen!], 1 / Math.sqrt(k), init));
    } else {
      this.E = null;
      this.F = null;
    }
  }

  /** Whether a cache of this layer's self-attention keeps running sums rather than keys/values. */
  get isLinear(): boolean {
    return this.kind === 'linear' || this.kind === 'performer';
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
    if (this.isLinear) return this.linearSelfAttention(x, opts);
    if (this.kind === 'linformer') return this.linformerSelfAttention(x, opts);
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
    // The cache keeps every key, so sparse patterns (stated on absolute positions, bottom-right
    // aligned like causal) see the same keys as a full recomputation.
    return this.attend(x, k, v, opts, this.sparsity);
  }

  /** Cross-attention of x (B, Tq, C) over memory (B, Tk, C) → (B, Tq, C). With a filled
   *  cache, memory may be null (its keys and values are taken from the cache). Always dense:
   *  the attention kind applies to self-attention only. */
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
    return this.attend(x, k, v, { keyMask: opts.keyMask, causal: false }, null);
  }

  /** General form: query (B, Tq, C) over key/value (B, Tk, C); null keyValue = self-attention. */
  forward(query: Tensor, keyValue: Tensor | null = null, opts: AttentionCallOptions = {}): Tensor {
    return keyValue === null ? this.selfAttention(query, opts) : this.crossAttention(query, keyValue, opts);
  }

  private attend(x: Tensor, k: Tensor, v: Tensor, opts: AttentionCallOptions, sparsity: AttentionSparsity | null): Tensor {
    const q = this.heads(this.q_proj.forward(x)); // (B, H, T, D)
    let y = scaledDotProductAttention(q, k, v, { causal: opts.causal ?? false, keyMask: opts.keyMask ?? null, sparsity }); // (B, H, T, D)
    if (this.probe) y = this.probe.observe({ q, k, v, scale: 1 / Math.sqrt(this.headDim), causal: opts.causal ?? false, sparsity, keyMask: opts.keyMask ?? null }, y);
    return this.merge(y);
  }

  /** (B, H, T, D) → out_proj of the re-assembled heads (B, T, C). */
  private merge(y: Tensor): Tensor {
    const [B, , T] = y.shape as [number, number, number, number];
    return this.out_proj.forward(reshape(permute(y, [0, 2, 1, 3]), [B, T, this.dModel]));
  }

  /** linear / performer. Causal: chunked prefix sums, the cache holding (S, z); bidirectional:
   *  φ(Q)(φ(K)ᵀV) normalised by φ(Q)·Σφ(K), padded keys left out. */
  private linearSelfAttention(x: Tensor, opts: AttentionCallOptions): Tensor {
    const q = this.heads(this.q_proj.forward(x)); // (B, H, T, D)
    const k = this.heads(this.k_proj.forward(x));
    const v = this.heads(this.v_proj.forward(x));
    const fm = this.feature_map;
    const phiQ = fm ? fm.forward(q, true) : elu1(q); // (B, H, T, F)
    let phiK = fm ? fm.forward(k, false) : elu1(k);
    if (!opts.causal) {
      if (opts.cache) throw new Error(`MultiHeadAttention: bidirectional '${this.kind}' attention has no cache (only causal self-attention is decoded step by step)`);
      return this.merge(linearAttention(phiQ, phiK, v, { keyMask: opts.keyMask ?? null }));
    }
    const [B, , T] = q.shape as [number, number, number, number];
    const cache = opts.cache;
    if (cache && !cache.state) cache.state = new LinearAttentionState();
    const state = cache?.state ?? undefined;
    if (state?.S && state.S.shape[0] !== B) {
      throw new Error(`MultiHeadAttention: batch of ${B} does not match the cached state's batch of ${state.S.shape[0]}`);
    }
    const m = opts.keyMask;
    if (m) {
      // The mask covers cached keys too; only the new ones enter the sums.
      const mNew = m.shape[1] === T ? m : slice(m, 1, m.shape[1]! - T, m.shape[1]!);
      phiK = linearMask(phiK, mNew);
    }
    return this.merge(causalLinearAttention(phiQ, phiK, v, { chunk: this.linearChunk, state }));
  }

  /** Linformer: keys/values projected from T to k rows, then dense attention (bidirectional). */
  private linformerSelfAttention(x: Tensor, opts: AttentionCallOptions): Tensor {
    if (opts.causal || opts.cache) {
      throw new Error(`MultiHeadAttention: 'linformer' cannot be causal (it projects along the sequence); use it in an encoder`);
    }
    const T = x.shape[1]!;
    if (T > this.E!.shape[1]!) throw new Error(`MultiHeadAttention: sequence of ${T} exceeds linformer's maxLen ${this.E!.shape[1]}`);
    const q = this.heads(this.q_proj.forward(x)); // (B, H, T, D)
    const [kp, vp] = linformerProject(this.E!, this.F!, this.heads(this.k_proj.forward(x)), this.heads(this.v_proj.forward(x)), opts.keyMask);
    return this.merge(scaledDotProductAttention(q, kp, vp)); // (B, H, T, D)
  }
}

/** phiK (B, H, T, F) with padded keys (mask (B, T) 0) zeroed. */
function linearMask(phiK: Tensor, mask: Tensor): Tensor {
  const [B, , T] = phiK.shape as [number, number, number, number];
  return mul(phiK, reshape(to(mask, phiK.dtype), [B, 1, T, 1]));
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
  /** Self-attention's variant and its settings (cross-attention stays dense). */
  selfAttention?: Pick<MultiHeadAttentionOptions, 'kind' | 'sparsity' | 'performerFeatures' | 'featureGenerator' | 'maxLen' | 'linformerK' | 'linearChunk'>;
}

/** Makers of the sublayers both layer kinds share; each layer calls them in its own order, which
 *  fixes the parameter order and the generator draws of initialisation. */
function layerParts(dModel: number, nHead: number, o: TransformerLayerOptions) {
  const init = { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: o.std };
  return {
    init,
    placement: o.norm_placement ?? 'post',
    norm: () => new LayerNorm(dModel, { backend: o.backend, dtype: o.dtype, eps: o.layerNormEps ?? 1e-5 }),
    selfAttention: () => new MultiHeadAttention(dModel, nHead, { ...init, ...o.selfAttention }),
    ffn: () => new MLP(dModel, o.activation ?? 'relu', { ...init, hidden: o.dFF }),
    dropout: () => new Dropout(o.dropout ?? 0, o.dropoutGenerator ?? o.generator),
  };
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
    const p = layerParts(dModel, nHead, o);
    this.placement = p.placement;
    this.self_attn = this.registerModule('self_attn', p.selfAttention());
    this.ffn = this.registerModule('ffn', p.ffn());
    this.norm1 = this.registerModule('norm1', p.norm());
    this.norm2 = this.registerModule('norm2', p.norm());
    this.dropout = this.registerModule('dropout', p.dropout());
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
    const p = layerParts(dModel, nHead, o);
    this.placement = p.placement;
    this.self_attn = this.registerModule('self_attn', p.selfAttention());
    this.cross_attn = this.registerModule('cross_attn', new MultiHeadAttention(dModel, nHead, p.init));
    this.ffn = this.registerModule('ffn', p.ffn());
    this.norm1 = this.registerModule('norm1', p.norm());
    this.norm2 = this.registerModule('norm2', p.norm());
    this.norm3 = this.registerModule('norm3', p.norm());
    this.dropout = this.registerModule('dropout', p.dropout());
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
