// Multi-head causal self-attention (GPT-2's `attn`): one c_attn projection makes q, k and v,
// the fused scaledDotProductAttention kernel attends in (B, H, T, D) layout without building
// the T×T matrix, and c_proj mixes the heads back. An optional KV cache keeps past keys and
// values so generation feeds one new token per step instead of the whole prefix.
import {
  concat, contiguous, fmt, noGrad, permute, reshape, scaledDotProductAttention, split, type Generator, type Tensor,
} from '../tensor/index.js';
import { Dropout, Linear, type InitOptions } from './layers.js';
import { Module } from './module.js';
import type { RotaryEmbedding } from './positional.js';

/** One layer's cached keys and values, (B, H, Tpast, D) each, or null before the first step. */
export interface KVLayerCache {
  k: Tensor | null;
  v: Tensor | null;
}

/**
 * Keys and values of every layer for the tokens seen so far. The tensors are kept (they
 * outlive tidy() scopes) and detached (no graph): call dispose() when generation is done.
 */
export class KVCache {
  readonly layers: KVLayerCache[];
  /** Number of tokens cached, i.e. the position of the next token. */
  length = 0;

  constructor(nLayer: number) {
    this.layers = Array.from({ length: nLayer }, () => ({ k: null, v: null }));
  }

  /** Empties the cache (frees its tensors). */
  reset(): void {
    for (const l of this.layers) {
      l.k?.dispose();
      l.v?.dispose();
      l.k = null;
      l.v = null;
    }
    this.length = 0;
  }

  dispose(): void {
    this.reset();
  }
}

/** Stores t in the cache: a contiguous, graph-free, kept tensor; frees what it replaces. */
function store(layer: KVLayerCache, key: 'k' | 'v', t: Tensor): void {
  const c = noGrad(() => contiguous(t));
  const owned = c === t ? t.detach() : c;
  layer[key]?.dispose();
  layer[key] = owned.keep();
}

export interface CausalSelfAttentionOptions extends InitOptions {
  bias?: boolean;
  /** Dropout on the output projection. (The fused kernel has no dropout on the attention
   *  probabilities, which nanoGPT's flash path also applies; this one does not.) */
  dropout?: number;
  projStd?: number;
  /** Rotates q and k (shared across layers: it holds only fixed tables). */
  rope?: RotaryEmbedding | null;
  dropoutGenerator?: Generator;
}

export class CausalSelfAttention extends Module {
  readonly c_attn: Linear; // (C -> 3C): q, k, v for all heads at once
  readonly c_proj: Linear; // (C -> C)
  readonly resid_dropout: Dropout;
  readonly headDim: number;
  readonly rope: RotaryEmbedding | null;

  constructor(readonly nEmbd: number, readonly nHead: number, opts: CausalSelfAttentionOptions = {}) {
    super();
    if (nEmbd % nHead !== 0) throw new Error(`CausalSelfAttention: n_embd ${nEmbd} is not divisible by n_head ${nHead}`);
    this.headDim = nEmbd / nHead;
    const lin = { backend: opts.backend, dtype: opts.dtype, generator: opts.generator, std: opts.std, skipInit: opts.skipInit, bias: opts.bias ?? true };
    this.c_attn = this.registerModule('c_attn', new Linear(nEmbd, 3 * nEmbd, lin));
    this.c_proj = this.registerModule('c_proj', new Linear(nEmbd, nEmbd, { ...lin, std: opts.projStd ?? opts.std }));
    this.resid_dropout = this.registerModule('resid_dropout', new Dropout(opts.dropout ?? 0, opts.dropoutGenerator ?? opts.generator));
    this.rope = opts.rope ?? null; // not registered: its tables belong to the model
  }

  /** x (B, T, C) -> (B, T, C). With a cache, x holds the new tokens only; they attend to the
   *  cached ones too, and their keys and values are appended to the cache. */
  forward(x: Tensor, cache?: KVLayerCache): Tensor {
    if (x.ndim !== 3 || x.shape[2] !== this.nEmbd) throw new Error(`CausalSelfAttention: input ${fmt(x.shape)} must be (B, T, ${this.nEmbd})`);
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.nHead;
    const D = this.headDim;
    const qkv = this.c_attn.forward(x); // (B, T, 3C)
    let [q, k, v] = split(qkv, C, -1).map((t) => permute(reshape(t, [B, T, H, D]), [0, 2, 1, 3])) as [Tensor, Tensor, Tensor]; // (B, H, T, D)
    const past = cache?.k ? cache.k.shape[2]! : 0;
    if (cache?.k && cache.k.shape[0] !== B) {
      throw new Error(`CausalSelfAttention: batch of ${B} does not match the KV cache's batch of ${cache.k.shape[0]}`);
    }
    if (this.rope) {
      q = this.rope.apply(q, past);
      k = this.rope.apply(k, past);
    }
    if (cache) {
      if (cache.k && cache.v) {
        k = concat([cache.k, k], 2); // (B, H, Tpast + T, D)
        v = concat([cache.v, v], 2);
      }
      store(cache, 'k', k);
      store(cache, 'v', v);
    }
    // Causal masking is bottom-right aligned: new query i sees keys up to past + i.
    const y = scaledDotProductAttention(q, k, v, { causal: true }); // (B, H, T, D)
    const merged = reshape(permute(y, [0, 2, 1, 3]), [B, T, C]); // re-assemble the heads
    return this.resid_dropout.forward(this.c_proj.forward(merged)); // (B, T, C)
  }
}
