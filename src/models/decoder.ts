// The decoder-only language models of today's Hugging Face Hub, with their module names, so a
// checkpoint's tensors map one to one (model.layers.{i}.self_attn.q_proj.weight, ...):
//   llama   (Touvron et al. 2023): pre-norm RMSNorm, SwiGLU MLP, RoPE, grouped-query attention;
//   mistral (Jiang et al. 2023):   llama + sliding-window attention;
//   qwen2   (Qwen team 2024):      llama + q/k/v biases (+ optional sliding window on upper layers);
//   qwen3   (Qwen team 2025):      llama + a per-head RMSNorm on q and k before RoPE;
//   phi     (Phi-2, Microsoft 2023): LayerNorm, attention and MLP in parallel off one norm,
//            RoPE on a fraction of each head, GELU MLP (fc1, fc2), biases everywhere.
// The Hugging Face config.json mapping is hf-decoder.ts; reading and writing directories is
// hf-decoder-files.ts.
import type { Backend } from '../backend/backend.js';
import { fusedDecodeStep } from './decoder-fused.js';
import { appendToCache, KVCache, KVPool, pooledStepAttention, type AttentionProbe, type ForwardCacheOptions, type KVLayerCache, type PooledStep, type PromptChunk, finishPooledStep, planPooledStep, stepOutputRows } from '../nn/attention.js';
import { Embedding, LayerNorm, Linear, RMSNorm } from '../nn/layers.js';
import { Module, ModuleList } from '../nn/module.js';
import { ScaledRope, type RopeScaling } from '../nn/positional.js';
import {
  add, checkpoint, concat, crossEntropy, fmt, gelu, Generator, linear, permute, reshape, scaledDotProductAttention, slice, swiglu, tensor,
  type DType, type Tensor,
} from '../tensor/index.js';

export type DecoderFamily = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'phi';
export const DECODER_FAMILIES: readonly DecoderFamily[] = ['llama', 'mistral', 'qwen2', 'qwen3', 'phi'];

/** A decoder's architecture, in Hugging Face's field names where it has them. */
export interface DecoderConfig {
  model_type: DecoderFamily;
  vocab_size: number;
  hidden_size: number;
  /** The MLP's hidden width. */
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  /** Features per head; hidden_size / num_attention_heads unless the config says otherwise. */
  head_dim: number;
  /** The trained context (RoPE scaling's reference length). */
  max_position_embeddings: number;
  /** rms_norm_eps (llama family) or layer_norm_eps (phi). */
  norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScaling | null;
  /** Fraction of each head that RoPE rotates (phi: 0.4; others 1). */
  partial_rotary_factor: number;
  /** Biases on q, k, v. */
  qkv_bias: boolean;
  /** Bias on the attention output projection. */
  o_bias: boolean;
  mlp_bias: boolean;
  lm_head_bias: boolean;
  tie_word_embeddings: boolean;
  /** silu: SwiGLU (gate_proj, up_proj, down_proj); gelu_new / gelu: a two-layer MLP (fc1, fc2). */
  hidden_act: 'silu' | 'gelu_new' | 'gelu';
  /** Keys each query sees (itself included) on sliding-window layers; null = full causal. */
  sliding_window: number | null;
  /** Layers from this index on use the sliding window (qwen2's max_window_layers; 0 = all). */
  sliding_window_from: number;
  /** Per-head norm of q and k before RoPE: qwen3's RMSNorm, phi's optional LayerNorm. */
  qk_norm: boolean;
  /** Longest sequence a forward accepts (max_position_embeddings; × factor for dynamic RoPE). */
  block_size: number;
  bos_token_id: number | null;
  /** One id or several (Llama 3 instruct stops at any of them). */
  eos_token_id: number | number[] | null;
}

export interface DecoderOptions {
  backend?: Backend;
  dtype?: DType;
  seed?: number;
  /** false: weights left at zero, to be loaded (saves drawing them). */
  init?: boolean;
}

interface Build {
  backend?: Backend;
  dtype?: DType;
  generator: Generator;
  skipInit: boolean;
}

const isPhi = (cfg: DecoderConfig): boolean => cfg.model_type === 'phi';

function norm(cfg: DecoderConfig, dim: number, o: Build): LayerNorm | RMSNorm {
  const opts = { backend: o.backend, dtype: o.dtype, eps: cfg.norm_eps };
  return isPhi(cfg) ? new LayerNorm(dim, opts) : new RMSNorm(dim, opts);
}

function lin(inF: number, outF: number, bias: boolean, o: Build): Linear {
  return new Linear(inF, outF, { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: 0.02, bias });
}

/** self_attn: q/k/v projections, optional per-head q/k norm, RoPE, fused causal attention. */
export class DecoderAttention extends Module {
  readonly q_proj: Linear; // (C -> H·Dh)
  readonly k_proj: Linear; // (C -> Hkv·Dh)
  readonly v_proj: Linear;
  /** o_proj (phi: dense): (H·Dh -> C). */
  readonly out: Linear;
  readonly qNorm: LayerNorm | RMSNorm | null;
  readonly kNorm: LayerNorm | RMSNorm | null;
  /** Inspection hook (see AttentionProbe); null in normal use. */
  probe: AttentionProbe | null = null;

  constructor(readonly cfg: DecoderConfig, readonly rope: ScaledRope, readonly window: number | null, o: Build) {
    super();
    const C = cfg.hidden_size;
    const D = cfg.head_dim;
    this.q_proj = this.registerModule('q_proj', lin(C, cfg.num_attention_heads * D, cfg.qkv_bias, o));
    this.k_proj = this.registerModule('k_proj', lin(C, cfg.num_key_value_heads * D, cfg.qkv_bias, o));
    this.v_proj = this.registerModule('v_proj', lin(C, cfg.num_key_value_heads * D, cfg.qkv_bias, o));
    this.out = this.registerModule(isPhi(cfg) ? 'dense' : 'o_proj', lin(cfg.num_attention_heads * D, C, cfg.o_bias, o));
    const qk = isPhi(cfg) ? ['q_layernorm', 'k_layernorm'] : ['q_norm', 'k_norm'];
    this.qNorm = cfg.qk_norm ? this.registerModule(qk[0]!, norm(cfg, D, o)) : null;
    this.kNorm = cfg.qk_norm ? this.registerModule(qk[1]!, norm(cfg, D, o)) : null;
  }

  /** x (B, T, C) -> (B, T, C); with a cache, x holds the new tokens only. */
  forward(x: Tensor, cache?: KVLayerCache): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const H = this.cfg.num_attention_heads;
    const Hkv = this.cfg.num_key_value_heads;
    const D = this.cfg.head_dim;
    const past = cache?.k ? cache.k.shape[2]! : 0;
    if (cache?.k && cache.k.shape[0] !== B) throw new Error(`DecoderAttention: batch of ${B} does not match the KV cache's batch of ${cache.k.shape[0]}`);
    // (B, T, h·D) -> (B, h, T, D); q and k are normed per head and rotated while still
    // contiguous (B, T, h, D), so the head split costs no copy.
    const heads = (t: Tensor, h: number, n: LayerNorm | RMSNorm | null, rotate: boolean): Tensor => {
      let r = reshape(t, [B, T, h, D]);
      if (n) r = n.forward(r); // over each head's D features
      if (rotate) r = this.rope.apply(r, past, 'bthd');
      return permute(r, [0, 2, 1, 3]);
    };
    const q = heads(this.q_proj.forward(x), H, this.qNorm, true);
    let k = heads(this.k_proj.forward(x), Hkv, this.kNorm, true);
    let v = heads(this.v_proj.forward(x), Hkv, null, false);
    if (cache) {
      k = appendToCache(cache, 'k', k); // (B, Hkv, past + T, D)
      v = appendToCache(cache, 'v', v);
    }
    const sparsity = this.window !== null ? { kind: 'window' as const, window: this.window } : null;
    let y = scaledDotProductAttention(q, k, v, { causal: true, sparsity }); // (B, H, T, D), kv heads grouped
    if (this.probe) y = this.probe.observe({ q, k, v, scale: 1 / Math.sqrt(D), causal: true, sparsity, keyMask: null }, y);
    return this.out.forward(reshape(permute(y, [0, 2, 1, 3]), [B, T, H * D]));
  }
}

/** forward() for one new token of each of B sequences, each with its own cache and position:
 *  the projections are one matmul for all rows, norm/RoPE/attention run per row. */
export function decoderAttentionDecodeBatch(a: DecoderAttention, x: Tensor, caches: readonly KVLayerCache[], pasts: readonly number[]): Tensor {
  const [B, T] = x.shape as [number, number, number];
  if (T !== 1 || caches.length !== B || pasts.length !== B) throw new Error(`DecoderAttention.decodeBatch: x ${fmt(x.shape)} must be (B, 1, C) with B caches and positions`);
  const H = a.cfg.num_attention_heads;
  const Hkv = a.cfg.num_key_value_heads;
  const D = a.cfg.head_dim;
  const qAll = a.q_proj.forward(x); // (B, 1, H·D)
  const kAll = a.k_proj.forward(x);
  const vAll = a.v_proj.forward(x);
  const sparsity = a.window !== null ? { kind: 'window' as const, window: a.window } : null;
  const ys: Tensor[] = [];
  for (let i = 0; i < B; i++) {
    const heads = (t: Tensor, h: number, n: LayerNorm | RMSNorm | null, rotate: boolean): Tensor => {
      let r = reshape(slice(t, 0, i, i + 1), [1, 1, h, D]);
      if (n) r = n.forward(r);
      if (rotate) r = a.rope.apply(r, pasts[i]!, 'bthd');
      return permute(r, [0, 2, 1, 3]);
    };
    const q = heads(qAll, H, a.qNorm, true);
    const k = appendToCache(caches[i]!, 'k', heads(kAll, Hkv, a.kNorm, true));
    const v = appendToCache(caches[i]!, 'v', heads(vAll, Hkv, null, false));
    ys.push(scaledDotProductAttention(q, k, v, { causal: true, sparsity })); // (1, H, 1, D)
  }
  const y = B === 1 ? ys[0]! : concat(ys, 0);
  return a.out.forward(reshape(permute(y, [0, 2, 1, 3]), [B, T, H * D]));
}

/** One step of the sequences in a KVPool (no sliding window): decode rows and joining prompts'
 *  chunks (PooledStep); the projections are one matmul each over all rows, norms batched. */
export function decoderAttentionDecodePooled(a: DecoderAttention, x: Tensor, pool: KVPool, layer: number, step: PooledStep): Tensor {
  const [N, T] = x.shape as [number, number, number];
  if (a.window !== null) throw new Error('DecoderAttention.decodePooled: a sliding-window layer needs decodeBatch');
  const H = a.cfg.num_attention_heads;
  const Hkv = a.cfg.num_key_value_heads;
  const D = a.cfg.head_dim;
  const heads = (t: Tensor, h: number, n: LayerNorm | RMSNorm | null): Tensor => {
    let r = reshape(t, [N, T, h, D]);
    if (n) r = n.forward(r);
    return permute(r, [0, 2, 1, 3]); // (N, h, 1, D)
  };
  const q = heads(a.q_proj.forward(x), H, a.qNorm);
  const k = heads(a.k_proj.forward(x), Hkv, a.kNorm);
  const v = heads(a.v_proj.forward(x), Hkv, null);
  const y = pooledStepAttention(q, k, v, pool, layer, step, (t, p) => a.rope.apply(t, p));
  return a.out.forward(reshape(permute(y, [0, 2, 1, 3]), [N, T, H * D]));
}

/** mlp: SwiGLU (gate_proj, up_proj, down_proj) or phi's fc2(gelu(fc1(x))). */
export class DecoderMLP extends Module {
  readonly up: Linear; // up_proj / fc1: (C -> I)
  readonly gate: Linear | null; // gate_proj: (C -> I), SwiGLU only
  readonly down: Linear; // down_proj / fc2: (I -> C)

  constructor(readonly cfg: DecoderConfig, o: Build) {
    super();
    const C = cfg.hidden_size;
    const I = cfg.intermediate_size;
    if (cfg.hidden_act === 'silu') {
      this.gate = this.registerModule('gate_proj', lin(C, I, cfg.mlp_bias, o));
      this.up = this.registerModule('up_proj', lin(C, I, cfg.mlp_bias, o));
      this.down = this.registerModule('down_proj', lin(I, C, cfg.mlp_bias, o));
    } else {
      this.gate = null;
      this.up = this.registerModule('fc1', lin(C, I, cfg.mlp_bias, o));
      this.down = this.registerModule('fc2', lin(I, C, cfg.mlp_bias, o));
    }
  }

  forward(x: Tensor): Tensor {
    if (this.gate) return this.down.forward(swiglu(this.gate.forward(x), this.up.forward(x))); // silu(gate) * up
    const h = this.cfg.hidden_act === 'gelu_new' ? this.up.forwardActivated(x, 'gelu') : gelu(this.up.forward(x), 'none');
    return this.down.forward(h);
  }
}

/** layers.{i}: pre-norm attention then MLP (phi: both off one norm, added together). */
export class DecoderLayer extends Module {
  readonly input_layernorm: LayerNorm | RMSNorm;
  readonly self_attn: DecoderAttention;
  readonly post_attention_layernorm: LayerNorm | RMSNorm | null;
  readonly mlp: DecoderMLP;

  constructor(readonly cfg: DecoderConfig, rope: ScaledRope, layer: number, o: Build) {
    super();
    const windowed = cfg.sliding_window !== null && layer >= cfg.sliding_window_from;
    this.input_layernorm = this.registerModule('input_layernorm', norm(cfg, cfg.hidden_size, o));
    this.self_attn = this.registerModule('self_attn', new DecoderAttention(cfg, rope, windowed ? cfg.sliding_window : null, o));
    this.post_attention_layernorm = isPhi(cfg) ? null : this.registerModule('post_attention_layernorm', norm(cfg, cfg.hidden_size, o));
    this.mlp = this.registerModule('mlp', new DecoderMLP(cfg, o));
  }

  forward(x: Tensor, cache?: KVLayerCache): Tensor {
    if (!this.post_attention_layernorm) {
      const h = this.input_layernorm.forward(x); // phi: one norm feeds both branches
      return add(add(this.self_attn.forward(h, cache), this.mlp.forward(h)), x);
    }
    x = add(x, this.self_attn.forward(this.input_layernorm.forward(x), cache)); // (B, T, C)
    return add(x, this.mlp.forward(this.post_attention_layernorm.forward(x)));
  }

  /** forward() for the rows of a PooledStep (DecoderLM.stepPooled). */
  decodePooled(x: Tensor, pool: KVPool, layer: number, step: PooledStep): Tensor {
    if (!this.post_attention_layernorm) {
      const h = this.input_layernorm.forward(x);
      return add(add(decoderAttentionDecodePooled(this.self_attn, h, pool, layer, step), this.mlp.forward(h)), x);
    }
    x = add(x, decoderAttentionDecodePooled(this.self_attn, this.input_layernorm.forward(x), pool, layer, step));
    return add(x, this.mlp.forward(this.post_attention_layernorm.forward(x)));
  }

  /** forward() for one new token of each of B sequences with their own caches (DecoderLM.decodeBatch). */
  decodeBatch(x: Tensor, caches: readonly KVLayerCache[], pasts: readonly number[]): Tensor {
    if (!this.post_attention_layernorm) {
      const h = this.input_layernorm.forward(x);
      return add(add(decoderAttentionDecodeBatch(this.self_attn, h, caches, pasts), this.mlp.forward(h)), x);
    }
    x = add(x, decoderAttentionDecodeBatch(this.self_attn, this.input_layernorm.forward(x), caches, pasts));
    return add(x, this.mlp.forward(this.post_attention_layernorm.forward(x)));
  }
}

/** The `model` container: embed_tokens, layers, the final norm (phi: final_layernorm). */
export class DecoderBody extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: ModuleList<DecoderLayer>;
  readonly finalNorm: LayerNorm | RMSNorm;

  constructor(cfg: DecoderConfig, rope: ScaledRope, o: Build) {
    super();
    this.embed_tokens = this.registerModule('embed_tokens', new Embedding(cfg.vocab_size, cfg.hidden_size, { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: 0.02 }));
    this.layers = this.registerModule('layers', new ModuleList<DecoderLayer>());
    for (let i = 0; i < cfg.num_hidden_layers; i++) this.layers.push(new DecoderLayer(cfg, rope, i, o));
    this.finalNorm = this.registerModule(isPhi(cfg) ? 'final_layernorm' : 'norm', norm(cfg, cfg.hidden_size, o));
  }
}

/** A Llama / Mistral / Qwen / Phi causal language model (Hugging Face's *ForCausalLM). */
export class DecoderLM extends Module {
  readonly config: DecoderConfig;
  readonly model: DecoderBody;
  /** Absent when tied to model.embed_tokens. */
  readonly lm_head: Linear | null;
  readonly rope: ScaledRope;
  /** Recompute each layer's activations in the backward pass (less memory, one more forward). */
  checkpointActivations = false;

  constructor(config: DecoderConfig, opts: DecoderOptions = {}) {
    super();
    const cfg = checkDecoderConfig(config);
    this.config = Object.freeze({ ...cfg });
    const o: Build = { backend: opts.backend, dtype: opts.dtype, generator: new Generator(opts.seed ?? 0), skipInit: opts.init === false };
    const rotary = Math.floor(cfg.head_dim * cfg.partial_rotary_factor);
    this.rope = new ScaledRope({ dim: rotary, base: cfg.rope_theta, scaling: cfg.rope_scaling, maxPositions: cfg.max_position_embeddings }, { backend: o.backend, dtype: o.dtype });
    this.model = this.registerModule('model', new DecoderBody(cfg, this.rope, o));
    this.lm_head = cfg.tie_word_embeddings ? null : this.registerModule('lm_head', lin(cfg.hidden_size, cfg.vocab_size, cfg.lm_head_bias, o));
    for (const [name, p] of this.namedParameters()) p.name = name;
  }

  /** idx int32 (B, T) → logits (B, T, V); with targets int32 (B, T) also the mean loss (-100 ignored). */
  forward(idx: Tensor, targets?: Tensor): { logits: Tensor; loss?: Tensor; ceLoss?: Tensor } {
    const logits = this.run(idx, undefined);
    if (!targets) return { logits };
    const loss = crossEntropy(logits, targets, { ignoreIndex: -100 });
    return { logits, loss, ceLoss: loss };
  }

  /** idx (B, T) holds only the tokens after those in `cache`; logits equal forward()'s rows
   *  (with `lastOnly`, the last position's only: (B, 1, V)). */
  forwardWithCache(idx: Tensor, cache: KVCache, opts: ForwardCacheOptions = {}): { logits: Tensor } {
    if (cache.layers.length !== this.config.num_hidden_layers) throw new Error(`DecoderLM.forwardWithCache: the cache has ${cache.layers.length} layers, the model ${this.config.num_hidden_layers}`);
    return { logits: this.run(idx, cache, opts.lastOnly ?? false) };
  }

  createKVCache(): KVCache {
    return new KVCache(this.config.num_hidden_layers);
  }

  /**
   * Continuous batching's decode step: idx int32 (B, 1) holds the next token of B independent
   * sequences, caches[i] sequence i's KV cache (batch 1), whose length is the token's position
   * (RoPE rotates each row at its own). Every weight matmul runs once for all rows; each cache
   * grows by one. Row i's logits equal forwardWithCache(idx[i], caches[i]).
   */
  decodeBatch(idx: Tensor, caches: readonly KVCache[]): { logits: Tensor } {
    const cfg = this.config;
    if (idx.dtype !== 'int32' || idx.ndim !== 2 || idx.shape[1] !== 1) throw new Error(`DecoderLM.decodeBatch: idx must be int32 (B, 1), got ${idx.dtype} ${fmt(idx.shape)}`);
    const B = idx.shape[0]!;
    if (caches.length !== B) throw new Error(`DecoderLM.decodeBatch: ${B} rows but ${caches.length} caches`);
    const pasts = caches.map((c) => c.length);
    for (const c of caches) {
      if (c.layers.length !== cfg.num_hidden_layers) throw new Error(`DecoderLM.decodeBatch: a cache has ${c.layers.length} layers, the model ${cfg.num_hidden_layers}`);
      if (c.length + 1 > cfg.block_size) throw new Error(`DecoderLM.decodeBatch: a sequence of ${c.length} cached tokens is at the context of ${cfg.block_size}`);
    }
    let x = this.model.embed_tokens.forward(idx); // (B, 1, C)
    this.model.layers.items.forEach((layer, i) => {
      x = layer.decodeBatch(x, caches.map((c) => c.layers[i]!), pasts);
    });
    x = this.model.finalNorm.forward(x);
    for (const c of caches) c.length += 1;
    return { logits: this.lm_head ? this.lm_head.forward(x) : this.model.embed_tokens.project(x) };
  }

  /** A KVPool for decodePooled with `slots` sequences (null with sliding-window layers, which
   *  need the per-row decodeBatch). */
  createKVPool(slots: number): KVPool | null {
    if (this.model.layers.items.some((l) => l.self_attn.window !== null)) return null;
    const w = this.model.embed_tokens.weight;
    return new KVPool(this.config.num_hidden_layers, slots, this.config.num_key_value_heads, this.config.head_dim, w.backend);
  }

  /**
   * Continuous batching's decode step over a KVPool: idx int32 (B, 1) holds the next token of
   * the sequences in slots 0 .. B-1, at positions pool.lengths[i] (RoPE rotates each row at its
   * own). Every weight matmul and each layer's attention run once for all rows; each slot's
   * length grows by one. Row i's logits equal forwardWithCache on sequence i's own cache.
   */
  decodePooled(idx: Tensor, pool: KVPool): { logits: Tensor } {
    if (idx.dtype !== 'int32' || idx.ndim !== 2 || idx.shape[1] !== 1) throw new Error(`DecoderLM.decodePooled: idx must be int32 (B, 1), got ${idx.dtype} ${fmt(idx.shape)}`);
    if (pool.nLayer !== this.config.num_hidden_layers) throw new Error(`DecoderLM.decodePooled: a pool of ${pool.nLayer} layers for a model of ${this.config.num_hidden_layers}`);
    return this.stepPooled(Array.from(idx.data()), [], pool);
  }

  /** Continuous batching's step with joining prompts riding along (GPT.stepPooled): logits
   *  (B + chunks, 1, V) of the decode rows and of each chunk's last token. */
  stepPooled(decode: readonly number[], chunks: readonly PromptChunk[], pool: KVPool): { logits: Tensor } {
    const cfg = this.config;
    if (pool.nLayer !== cfg.num_hidden_layers) throw new Error(`DecoderLM.stepPooled: a pool of ${pool.nLayer} layers for a model of ${cfg.num_hidden_layers}`);
    const { step, ids } = planPooledStep(pool, decode, chunks, cfg.block_size, 'DecoderLM.stepPooled');
    const w = this.model.embed_tokens.weight;
    let x = this.model.embed_tokens.forward(tensor(ids, { backend: w.backend, dtype: 'int32', shape: [ids.length, 1] })); // (N, 1, C)
    this.model.layers.items.forEach((layer, i) => {
      x = layer.decodePooled(x, pool, i, step);
    });
    x = this.model.finalNorm.forward(stepOutputRows(x, step));
    finishPooledStep(pool, step);
    return { logits: this.lm_head ? this.lm_head.forward(x) : this.model.embed_tokens.project(x) };
  }

  /** The ids generation stops at (config.json's eos_token_id, one or several). */
  get eosTokenIds(): number[] {
    const e = this.config.eos_token_id;
    return e === null ? [] : Array.isArray(e) ? [...e] : [e];
  }

  private run(idx: Tensor, cache: KVCache | undefined, lastOnly = false): Tensor {
    const cfg = this.config;
    if (idx.dtype !== 'int32' || idx.ndim !== 2) throw new Error(`DecoderLM: idx must be int32 (B, T), got ${idx.dtype} ${fmt(idx.shape)}`);
    const T = idx.shape[1]!;
    const past = cache?.length ?? 0;
    if (past + T > cfg.block_size) {
      throw new Error(cache
        ? `DecoderLM: ${past} cached + ${T} new tokens = ${past + T} exceed the context of ${cfg.block_size}`
        : `DecoderLM: cannot forward a sequence of length T=${T}, the context is ${cfg.block_size}`);
    }
    // One token of one sequence: the whole step in one backend call where it is covered.
    const fused = cache && T === 1 ? fusedDecodeStep(this, idx, cache) : null;
    if (fused) return fused;
    let x = this.model.embed_tokens.forward(idx); // (B, T, C)
    this.model.layers.items.forEach((layer, i) => {
      x = this.checkpointActivations && !cache && this.training ? checkpoint((h) => layer.forward(h), x) : layer.forward(x, cache?.layers[i]);
    });
    if (lastOnly && T > 1) x = slice(x, 1, T - 1, T); // (B, 1, C)
    x = this.model.finalNorm.forward(x);
    if (cache) cache.length += T;
    return this.lm_head ? this.lm_head.forward(x) : this.model.embed_tokens.project(x); // (B, T, V)
  }

  /** Parameters, counting a tied head once. */
  static countParameters(cfg: DecoderConfig): number {
    const C = cfg.hidden_size;
    const D = cfg.head_dim;
    const H = cfg.num_attention_heads;
    const Hkv = cfg.num_key_value_heads;
    const I = cfg.intermediate_size;
    const phi = cfg.model_type === 'phi';
    const normP = (n: number) => (phi ? 2 * n : n);
    const qkv = C * (H + 2 * Hkv) * D + (cfg.qkv_bias ? (H + 2 * Hkv) * D : 0);
    const o = H * D * C + (cfg.o_bias ? C : 0);
    const mlp = (cfg.hidden_act === 'silu' ? 3 : 2) * C * I + (cfg.mlp_bias ? (cfg.hidden_act === 'silu' ? 2 * I : I) + C : 0);
    const layer = normP(C) * (phi ? 1 : 2) + qkv + o + mlp + (cfg.qk_norm ? 2 * normP(D) : 0);
    const head = cfg.tie_word_embeddings ? 0 : cfg.vocab_size * C + (cfg.lm_head_bias ? cfg.vocab_size : 0);
    return cfg.vocab_size * C + cfg.num_hidden_layers * layer + normP(C) + head;
  }

  /** Training FLOPs per token at context T (6N + 12·L·H·Dh·T, as GPT.flopsPerToken). */
  flopsPerToken(T = this.config.block_size): number {
    const cfg = this.config;
    const keys = cfg.sliding_window !== null ? Math.min(T, cfg.sliding_window) : T;
    // An untied input embedding is a lookup, not a matmul; a tied one is also the head.
    const N = DecoderLM.countParameters(cfg) - (cfg.tie_word_embeddings ? 0 : cfg.vocab_size * cfg.hidden_size);
    return 6 * N + 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * keys;
  }

  override dispose(): void {
    super.dispose();
    this.rope.dispose();
  }
}

/** Throws one error listing every problem of a DecoderConfig; returns it unchanged. */
export function checkDecoderConfig(cfg: DecoderConfig): DecoderConfig {
  const problems: string[] = [];
  if (!DECODER_FAMILIES.includes(cfg.model_type)) problems.push(`model_type must be one of ${DECODER_FAMILIES.join(', ')}, got '${String(cfg.model_type)}'`);
  for (const k of ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'head_dim', 'max_position_embeddings', 'block_size'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] < 1) problems.push(`${k} must be a positive integer, got ${String(cfg[k])}`);
  }
  if (Number.isInteger(cfg.num_key_value_heads) && cfg.num_attention_heads % cfg.num_key_value_heads !== 0) {
    problems.push(`num_attention_heads (${cfg.num_attention_heads}) must be divisible by num_key_value_heads (${cfg.num_key_value_heads})`);
  }
  const rotary = Math.floor(cfg.head_dim * cfg.partial_rotary_factor);
  if (!(cfg.partial_rotary_factor > 0 && cfg.partial_rotary_factor <= 1) || rotary % 2 !== 0 || rotary < 2) {
    problems.push(`partial_rotary_factor ${cfg.partial_rotary_factor} of head_dim ${cfg.head_dim} must give an even number of rotary features (got ${rotary})`);
  }
  if (!(cfg.norm_eps > 0)) problems.push(`the norm epsilon must be positive, got ${String(cfg.norm_eps)}`);
  if (!(cfg.rope_theta > 0)) problems.push(`rope_theta must be positive, got ${String(cfg.rope_theta)}`);
  if (cfg.sliding_window !== null && !(Number.isInteger(cfg.sliding_window) && cfg.sliding_window >= 1)) problems.push(`sliding_window must be a positive integer or null, got ${String(cfg.sliding_window)}`);
  if (!['silu', 'gelu_new', 'gelu'].includes(cfg.hidden_act)) problems.push(`hidden_act must be silu, gelu_new or gelu, got '${String(cfg.hidden_act)}'`);
  if (problems.length) throw new Error(`DecoderConfig: ${problems.join('; ')}`);
  return cfg;
}
