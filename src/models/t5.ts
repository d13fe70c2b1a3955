// T5 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
// Transformer") as Hugging Face's T5ForConditionalGeneration, with its module names, so a
// checkpoint's tensors map one to one:
//   shared.weight                                        the token embedding of both stacks
//   encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight
//   encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight   (buckets, heads)
//   encoder.block.{i}.layer.{0,1}.layer_norm.weight
//   encoder.block.{i}.layer.1.DenseReluDense.{wi | wi_0, wi_1}.weight, .wo.weight
//   encoder.final_layer_norm.weight
//   decoder.block.{i}.layer.0.SelfAttention.*  (+ relative_attention_bias in block 0)
//   decoder.block.{i}.layer.1.EncDecAttention.{q,k,v,o}.weight   (no position bias)
//   decoder.block.{i}.layer.2.DenseReluDense.*, layer.{0,1,2}.layer_norm.weight
//   decoder.final_layer_norm.weight, lm_head.weight (untied models only)
// No biases anywhere. Pre-norm residual blocks whose norm is a scale-only RMS norm (no mean
// subtraction). Attention is not scaled by 1/√d; instead a learned bias per head and relative
// position bucket is added to the scores (computed from block 0's table, shared by the stack).
// Feed-forward: v1.0 relu (wo(relu(wi x))); v1.1 gated-gelu (wo(gelu_new(wi_0 x) · wi_1 x)).
// Tied models (v1.0) project with `shared` after scaling the decoder output by d_model^-0.5.
// The config.json mapping is hf-t5.ts; reading and writing directories is hf-t5-files.ts.
import type { Backend } from '../backend/backend.js';
import { appendToCache, KVCache, type KVLayerCache } from '../nn/attention.js';
import { Embedding, Linear, RMSNorm } from '../nn/layers.js';
import { Module, ModuleList } from '../nn/module.js';
import {
  add, argmax, crossEntropy, embedding, fmt, gelu, Generator, linear, matmul, mul, noGrad, permute, relu, reshape,
  scaledDotProductAttention, softmax, tensor, tidy, to, transpose, unsqueeze, type DType, type Tensor,
} from '../tensor/index.js';

export type T5FeedForward = 'relu' | 'gated-gelu';

/** A T5's architecture, in Hugging Face's config.json field names. */
export interface T5Config {
  model_type: 't5';
  vocab_size: number;
  d_model: number;
  /** Features per head (inner attention width = num_heads · d_kv, not necessarily d_model). */
  d_kv: number;
  d_ff: number;
  /** Encoder blocks. */
  num_layers: number;
  /** Decoder blocks (config.json may leave it out: num_layers). */
  num_decoder_layers: number;
  num_heads: number;
  relative_attention_num_buckets: number;
  relative_attention_max_distance: number;
  layer_norm_epsilon: number;
  feed_forward_proj: T5FeedForward;
  /** lm_head is `shared` (and the decoder output is scaled by d_model^-0.5 before it). */
  tie_word_embeddings: boolean;
  pad_token_id: number;
  eos_token_id: number;
  decoder_start_token_id: number;
}

/** The fields a T5Config must be given; the rest default as in transformers' T5Config. */
export type T5ConfigInput = Pick<T5Config, 'vocab_size' | 'd_model' | 'd_kv' | 'd_ff' | 'num_layers' | 'num_heads'> & Partial<T5Config>;

/** A full, checked T5Config from the required fields and the defaults of transformers' T5Config. */
export function t5Config(c: T5ConfigInput): T5Config {
  return checkT5Config({
    model_type: 't5',
    vocab_size: c.vocab_size,
    d_model: c.d_model,
    d_kv: c.d_kv,
    d_ff: c.d_ff,
    num_layers: c.num_layers,
    num_decoder_layers: c.num_decoder_layers ?? c.num_layers,
    num_heads: c.num_heads,
    relative_attention_num_buckets: c.relative_attention_num_buckets ?? 32,
    relative_attention_max_distance: c.relative_attention_max_distance ?? 128,
    layer_norm_epsilon: c.layer_norm_epsilon ?? 1e-6,
    feed_forward_proj: c.feed_forward_proj ?? 'relu',
    tie_word_embeddings: c.tie_word_embeddings ?? true,
    pad_token_id: c.pad_token_id ?? 0,
    eos_token_id: c.eos_token_id ?? 1,
    decoder_start_token_id: c.decoder_start_token_id ?? 0,
  });
}

/** Throws naming the first field that is out of range; returns cfg. */
export function checkT5Config(cfg: T5Config): T5Config {
  const posInt = ['vocab_size', 'd_model', 'd_kv', 'd_ff', 'num_layers', 'num_decoder_layers', 'num_heads', 'relative_attention_num_buckets', 'relative_attention_max_distance'] as const;
  for (const k of posInt) {
    const v = cfg[k];
    if (!(Number.isInteger(v) && v > 0)) throw new Error(`T5Config: ${k} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  if (cfg.model_type !== 't5') throw new Error(`T5Config: model_type must be 't5', got ${JSON.stringify(cfg.model_type)}`);
  if (cfg.relative_attention_num_buckets < 4) throw new Error(`T5Config: relative_attention_num_buckets must be at least 4 (two directions, exact and logarithmic halves), got ${cfg.relative_attention_num_buckets}`);
  if (!(typeof cfg.layer_norm_epsilon === 'number' && cfg.layer_norm_epsilon >= 0)) throw new Error(`T5Config: layer_norm_epsilon must be a number >= 0, got ${JSON.stringify(cfg.layer_norm_epsilon)}`);
  if (cfg.feed_forward_proj !== 'relu' && cfg.feed_forward_proj !== 'gated-gelu') throw new Error(`T5Config: feed_forward_proj must be 'relu' or 'gated-gelu', got ${JSON.stringify(cfg.feed_forward_proj)}`);
  if (typeof cfg.tie_word_embeddings !== 'boolean') throw new Error(`T5Config: tie_word_embeddings must be true or false, got ${JSON.stringify(cfg.tie_word_embeddings)}`);
  for (const k of ['pad_token_id', 'eos_token_id', 'decoder_start_token_id'] as const) {
    const v = cfg[k];
    if (!(Number.isInteger(v) && v >= 0 && v < cfg.vocab_size)) throw new Error(`T5Config: ${k} must be an id in [0, ${cfg.vocab_size}), got ${JSON.stringify(v)}`);
  }
  return cfg;
}

/**
 * The T5 bucket of a relative position (key position − query position).
 *
 * bidirectional (encoder): half of the buckets are for keys after the query, half for keys at
 * or before it. Causal (decoder): only distances into the past count; keys after the query
 * share bucket 0 (the causal mask removes them). Within a direction of n buckets, distances
 * below n/2 each have their own bucket; distances from n/2 up to max_distance are spread over
 * the other n/2 buckets logarithmically, n/2 + ⌊ln(d / (n/2)) / ln(max_distance / (n/2)) ·
 * (n − n/2)⌋, and everything farther shares the last bucket.
 */
export function relativePositionBucket(relativePosition: number, bidirectional: boolean, numBuckets: number, maxDistance: number): number {
  let n = numBuckets;
  let base = 0;
  let d: number;
  if (bidirectional) {
    n = Math.floor(n / 2);
    if (relativePosition > 0) base = n;
    d = Math.abs(relativePosition);
  } else {
    d = Math.max(-relativePosition, 0);
  }
  const exact = Math.floor(n / 2);
  if (d < exact) return base + d;
  const far = exact + Math.trunc((Math.log(d / exact) / Math.log(maxDistance / exact)) * (n - exact));
  return base + Math.min(far, n - 1);
}

/** Additive value of a masked score: exp() of it is 0 in float32, and it is finite so a row
 *  with every key masked stays a (uniform) distribution instead of NaN. */
const MASKED = -1e9;

export interface T5Options {
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

function lin(inF: number, outF: number, std: number, o: Build): Linear {
  return new Linear(inF, outF, { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std, bias: false });
}

function t5Norm(cfg: T5Config, o: Build): RMSNorm {
  return new RMSNorm(cfg.d_model, { backend: o.backend, dtype: o.dtype, eps: cfg.layer_norm_epsilon });
}

/** T5Attention: q, k, v, o without biases, no 1/√d scaling, and (block 0 of each stack's
 *  self-attention) the relative position bias table. */
export class T5Attention extends Module {
  readonly q: Linear; // (C -> H·Dkv)
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear; // (H·Dkv -> C)
  /** (num_buckets, num_heads), or null in the blocks that reuse block 0's bias. */
  readonly relative_attention_bias: Embedding | null;

  constructor(readonly cfg: T5Config, hasRelativeBias: boolean, o: Build) {
    super();
    const C = cfg.d_model;
    const inner = cfg.num_heads * cfg.d_kv;
    // Mesh TensorFlow's initialisation (the paper's code): no 1/√d in the scores, so q is drawn smaller.
    this.q = this.registerModule('q', lin(C, inner, (C * cfg.d_kv) ** -0.5, o));
    this.k = this.registerModule('k', lin(C, inner, C ** -0.5, o));
    this.v = this.registerModule('v', lin(C, inner, C ** -0.5, o));
    this.o = this.registerModule('o', lin(inner, C, inner ** -0.5, o));
    this.relative_attention_bias = hasRelativeBias
      ? this.registerModule('relative_attention_bias', new Embedding(cfg.relative_attention_num_buckets, cfg.num_heads, { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: C ** -0.5 }))
      : null;
  }

  /** (B, T, C) -> (B, H, T, Dkv). */
  heads(proj: Linear, x: Tensor): Tensor {
    const [B, T] = x.shape as [number, number, number];
    return permute(reshape(proj.forward(x), [B, T, this.cfg.num_heads, this.cfg.d_kv]), [0, 2, 1, 3]);
  }

  /** (B, H, T, Dkv) -> o(...) (B, T, C). */
  merge(y: Tensor): Tensor {
    const [B, H, T, D] = y.shape as [number, number, number, number];
    return this.o.forward(reshape(permute(y, [0, 2, 1, 3]), [B, T, H * D]));
  }

  /**
   * Self-attention of x (B, T, C) with an additive bias (1 or B, H, T, Tk) holding the position
   * bias and every mask. With a cache, x holds the new tokens only and Tk = cached + T.
   */
  selfAttention(x: Tensor, bias: Tensor, cache?: KVLayerCache): Tensor {
    const q = this.heads(this.q, x);
    let k = this.heads(this.k, x);
    let v = this.heads(this.v, x);
    if (cache) {
      if (cache.k && cache.k.shape[0] !== x.shape[0]) throw new Error(`T5Attention: batch of ${x.shape[0]} does not match the KV cache's batch of ${cache.k.shape[0]}`);
      k = appendToCache(cache, 'k', k); // (B, H, past + T, Dkv)
      v = appendToCache(cache, 'v', v);
    }
    const scores = add(matmul(q, transpose(k)), bias); // (B, H, T, Tk), unscaled
    return this.merge(matmul(softmax(scores, -1), v));
  }

  /** Cross-attention of x (B, T, C) over keys and values (B, H, S, Dkv) of the encoder output;
   *  keyMask (B, S) int32, 0 at padding. No position bias: the fused kernel, unscaled. */
  crossAttention(x: Tensor, k: Tensor, v: Tensor, keyMask: Tensor | null): Tensor {
    const q = this.heads(this.q, x);
    return this.merge(scaledDotProductAttention(q, k, v, { scale: 1, keyMask }));
  }
}

/** DenseReluDense: wo(relu(wi x)) (v1.0) or wo(gelu_new(wi_0 x) · wi_1 x) (v1.1). */
export class T5DenseFF extends Module {
  readonly wi: Linear | null;
  readonly wi_0: Linear | null;
  readonly wi_1: Linear | null;
  readonly wo: Linear;

  constructor(readonly cfg: T5Config, o: Build) {
    super();
    const C = cfg.d_model;
    const F = cfg.d_ff;
    if (cfg.feed_forward_proj === 'relu') {
      this.wi = this.registerModule('wi', lin(C, F, C ** -0.5, o));
      this.wi_0 = this.wi_1 = null;
    } else {
      this.wi = null;
      this.wi_0 = this.registerModule('wi_0', lin(C, F, C ** -0.5, o));
      this.wi_1 = this.registerModule('wi_1', lin(C, F, C ** -0.5, o));
    }
    this.wo = this.registerModule('wo', lin(F, C, F ** -0.5, o));
  }

  forward(x: Tensor): Tensor {
    if (this.wi) return this.wo.forward(this.wi.forwardActivated(x, 'relu'));
    return this.wo.forward(mul(gelu(this.wi_0!.forward(x), 'tanh'), this.wi_1!.forward(x)));
  }
}

/** layer.{0}: T5LayerSelfAttention (SelfAttention, layer_norm). */
export class T5LayerSelfAttention extends Module {
  readonly SelfAttention: T5Attention;
  readonly layer_norm: RMSNorm;

  constructor(cfg: T5Config, hasRelativeBias: boolean, o: Build) {
    super();
    this.SelfAttention = this.registerModule('SelfAttention', new T5Attention(cfg, hasRelativeBias, o));
    this.layer_norm = this.registerModule('layer_norm', t5Norm(cfg, o));
  }

  forward(x: Tensor, bias: Tensor, cache?: KVLayerCache): Tensor {
    return add(x, this.SelfAttention.selfAttention(this.layer_norm.forward(x), bias, cache));
  }
}

/** Decoder layer.1: T5LayerCrossAttention (EncDecAttention, layer_norm). */
export class T5LayerCrossAttention extends Module {
  readonly EncDecAttention: T5Attention;
  readonly layer_norm: RMSNorm;

  constructor(cfg: T5Config, o: Build) {
    super();
    this.EncDecAttention = this.registerModule('EncDecAttention', new T5Attention(cfg, false, o));
    this.layer_norm = this.registerModule('layer_norm', t5Norm(cfg, o));
  }

  forward(x: Tensor, kv: CrossKV, keyMask: Tensor | null): Tensor {
    return add(x, this.EncDecAttention.crossAttention(this.layer_norm.forward(x), kv.k, kv.v, keyMask));
  }
}

/** The last layer of a block: T5LayerFF (DenseReluDense, layer_norm). */
export class T5LayerFF extends Module {
  readonly DenseReluDense: T5DenseFF;
  readonly layer_norm: RMSNorm;

  constructor(cfg: T5Config, o: Build) {
    super();
    this.DenseReluDense = this.registerModule('DenseReluDense', new T5DenseFF(cfg, o));
    this.layer_norm = this.registerModule('layer_norm', t5Norm(cfg, o));
  }

  forward(x: Tensor): Tensor {
    return add(x, this.DenseReluDense.forward(this.layer_norm.forward(x)));
  }
}

/** Keys and values of the encoder output for one decoder block, (B, H, S, Dkv) each. */
export interface CrossKV {
  k: Tensor;
  v: Tensor;
}

/** block.{i}: layer.0 self-attention, (decoder) layer.1 cross-attention, then the feed-forward. */
export class T5Block extends Module {
  readonly layer: ModuleList<Module>;
  readonly selfAttn: T5LayerSelfAttention;
  readonly crossAttn: T5LayerCrossAttention | null;
  readonly ff: T5LayerFF;

  constructor(cfg: T5Config, isDecoder: boolean, index: number, o: Build) {
    super();
    this.layer = this.registerModule('layer', new ModuleList<Module>());
    this.selfAttn = new T5LayerSelfAttention(cfg, index === 0, o);
    this.layer.push(this.selfAttn);
    this.crossAttn = isDecoder ? new T5LayerCrossAttention(cfg, o) : null;
    if (this.crossAttn) this.layer.push(this.crossAttn);
    this.ff = new T5LayerFF(cfg, o);
    this.layer.push(this.ff);
  }
}

/** encoder / decoder: the blocks and the final norm. The token embedding is the model's `shared`. */
export class T5Stack extends Module {
  readonly block: ModuleList<T5Block>;
  readonly final_layer_norm: RMSNorm;

  constructor(readonly cfg: T5Config, readonly isDecoder: boolean, o: Build) {
    super();
    this.block = this.registerModule('block', new ModuleList<T5Block>());
    const n = isDecoder ? cfg.num_decoder_layers : cfg.num_layers;
    for (let i = 0; i < n; i++) this.block.push(new T5Block(cfg, isDecoder, i, o));
    this.final_layer_norm = this.registerModule('final_layer_norm', t5Norm(cfg, o));
  }

  /** Block 0's relative position bias table (num_buckets, num_heads). */
  get relativeBias(): Embedding {
    return this.block.at(0).selfAttn.SelfAttention.relative_attention_bias!;
  }

  /**
   * The position bias (1, H, Tq, Tk) of queries at positions past … past+Tq−1 over keys at
   * 0 … Tk−1, bidirectional in the encoder, causal (later keys masked) in the decoder.
   */
  positionBias(Tq: number, Tk: number, past: number): Tensor {
    const cfg = this.cfg;
    const table = this.relativeBias.weight;
    const ids = new Int32Array(Tq * Tk);
    const causalMask = this.isDecoder && Tk - 1 > past ? new Float32Array(Tq * Tk) : null; // some key after some query
    for (let i = 0; i < Tq; i++) {
      const qp = past + i;
      for (let j = 0; j < Tk; j++) {
        ids[i * Tk + j] = relativePositionBucket(j - qp, !this.isDecoder, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance);
        if (causalMask && j > qp) causalMask[i * Tk + j] = MASKED;
      }
    }
    const rows = embedding(table, tensor(ids, { backend: table.backend, dtype: 'int32', shape: [Tq, Tk] })); // (Tq, Tk, H)
    let bias = unsqueeze(permute(rows, [2, 0, 1]), 0); // (1, H, Tq, Tk)
    if (causalMask) bias = add(bias, floatLike(causalMask, [Tq, Tk], bias));
    return bias;
  }
}

/** values as a tensor of `like`'s backend and dtype. */
function floatLike(values: Float32Array, shape: number[], like: Tensor): Tensor {
  const t = tensor(values, { backend: like.backend, dtype: 'float32', shape });
  return like.dtype === 'float32' ? t : to(t, like.dtype);
}

/** The state of incremental decoding: the decoder's self-attention keys and values, and the
 *  encoder output's keys and values of every block (projected once, on the first step). */
export class T5Cache {
  readonly self: KVCache;
  cross: CrossKV[] | null = null;

  constructor(readonly numLayers: number) {
    this.self = new KVCache(numLayers);
  }

  /** Decoder tokens seen so far (the position of the next one). */
  get length(): number {
    return this.self.length;
  }

  /** Empties the cache (frees its tensors); it may be used for a new source afterwards. */
  reset(): void {
    this.self.reset();
    for (const c of this.cross ?? []) {
      c.k.dispose();
      c.v.dispose();
    }
    this.cross = null;
  }

  dispose(): void {
    this.reset();
  }
}

export interface T5Output {
  /** (B, T, V). */
  logits: Tensor;
  /** Mean cross-entropy over the labels that are not -100 (when labels are given). */
  loss?: Tensor;
}

export interface T5GenerateOptions {
  maxNewTokens: number;
  /** Generation of a row stops after it emits one of these (default: config.eos_token_id; null: never). */
  eosTokenId?: number | readonly number[] | null;
  /** false: recompute the whole decoder prefix at every step (the reference for the cache). Default true. */
  useCache?: boolean;
}

/** T5ForConditionalGeneration: encoder, decoder and the language-model head. */
export class T5Model extends Module {
  readonly config: T5Config;
  readonly shared: Embedding;
  readonly encoder: T5Stack;
  readonly decoder: T5Stack;
  /** Absent when tied to `shared`. */
  readonly lm_head: Linear | null;

  constructor(config: T5Config, opts: T5Options = {}) {
    super();
    const cfg = checkT5Config({ ...config });
    this.config = Object.freeze(cfg);
    const o: Build = { backend: opts.backend, dtype: opts.dtype, generator: new Generator(opts.seed ?? 0), skipInit: opts.init === false };
    this.shared = this.registerModule('shared', new Embedding(cfg.vocab_size, cfg.d_model, { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: 1 }));
    this.encoder = this.registerModule('encoder', new T5Stack(cfg, false, o));
    this.decoder = this.registerModule('decoder', new T5Stack(cfg, true, o));
    this.lm_head = cfg.tie_word_embeddings ? null : this.registerModule('lm_head', lin(cfg.d_model, cfg.vocab_size, cfg.d_model ** -0.5, o));
    for (const [name, p] of this.namedParameters()) p.name = name;
  }

  /**
   * srcIds int32 (B, S) → the encoder's output (B, S, d_model). srcMask int32 (B, S), 1 for
   * tokens and 0 for padding; without it every position is attended (as transformers does
   * without an attention_mask).
   */
  encode(srcIds: Tensor, srcMask?: Tensor | null): Tensor {
    this.checkIds('srcIds', srcIds);
    const [B, S] = srcIds.shape as [number, number];
    if (srcMask) checkMask(srcMask, B, S);
    let x = this.shared.forward(srcIds); // (B, S, C)
    let bias = this.encoder.positionBias(S, S, 0); // (1, H, S, S)
    if (srcMask) bias = add(bias, keyMaskBias(srcMask, bias)); // + (B, 1, 1, S)
    for (const block of this.encoder.block) {
      x = block.selfAttn.forward(x, bias);
      x = block.ff.forward(x);
    }
    return this.encoder.final_layer_norm.forward(x);
  }

  /** Teacher-forced decoder: decoderInputIds (B, T) over the encoder output (B, S, C) → logits (B, T, V). */
  decode(decoderInputIds: Tensor, encoderHidden: Tensor, srcMask?: Tensor | null): Tensor {
    this.checkIds('decoderInputIds', decoderInputIds);
    const cross = this.decoder.block.items.map((b) => this.crossKV(b, encoderHidden));
    return this.runDecoder(decoderInputIds, cross, srcMask ?? null, undefined);
  }

  /**
   * srcIds (B, S) and decoderInputIds (B, T) → logits (B, T, V); with labels (B, T) int32 also
   * the mean cross-entropy (-100 ignored). decoderInputIds null: labels shifted right
   * (decoder_start_token_id first, -100 read as pad_token_id), as transformers does.
   */
  forward(srcIds: Tensor, decoderInputIds: Tensor | null, labels?: Tensor, opts: { srcMask?: Tensor | null } = {}): T5Output {
    if (!decoderInputIds && !labels) throw new Error('T5Model.forward: give decoderInputIds, labels, or both');
    if (labels && (labels.dtype !== 'int32' || labels.ndim !== 2)) throw new Error(`T5Model.forward: labels must be int32 (B, T), got ${labels.dtype} ${fmt(labels.shape)}`);
    const decIn = decoderInputIds ?? this.shiftRight(labels!);
    if (labels && (labels.shape[0] !== decIn.shape[0] || labels.shape[1] !== decIn.shape[1])) {
      throw new Error(`T5Model.forward: labels ${fmt(labels.shape)} must be shaped like decoderInputIds ${fmt(decIn.shape)}`);
    }
    if (decIn.shape[0] !== srcIds.shape[0]) throw new Error(`T5Model.forward: ${srcIds.shape[0]} source rows but ${decIn.shape[0]} decoder rows`);
    const logits = this.decode(decIn, this.encode(srcIds, opts.srcMask), opts.srcMask);
    if (!labels) return { logits };
    return { logits, loss: crossEntropy(logits, labels, { ignoreIndex: -100 }) };
  }

  /** labels (B, T) → decoder inputs: decoder_start_token_id, then labels[:, :-1] with -100 → pad. */
  shiftRight(labels: Tensor): Tensor {
    const [B, T] = labels.shape as [number, number];
    const src = labels.data();
    const out = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      out[b * T] = this.config.decoder_start_token_id;
      for (let t = 1; t < T; t++) {
        const y = src[b * T + t - 1]!;
        out[b * T + t] = y === -100 ? this.config.pad_token_id : y;
      }
    }
    return tensor(out, { backend: labels.backend, dtype: 'int32', shape: [B, T] });
  }

  createCache(): T5Cache {
    return new T5Cache(this.config.num_decoder_layers);
  }

  /**
   * Incremental decoding: tokens (B, T) are the decoder tokens after the cache.length already
   * seen (usually T = 1). The first call projects encoderHidden (B, S, C) into every block's
   * cross-attention keys and values and keeps them in the cache; later calls reuse them (pass
   * the same encoderHidden and srcMask). Logits (B, T, V) equal decode()'s matching rows.
   */
  decodeStep(tokens: Tensor, encoderHidden: Tensor, cache: T5Cache, srcMask?: Tensor | null): Tensor {
    this.checkIds('tokens', tokens);
    if (cache.numLayers !== this.config.num_decoder_layers) throw new Error(`T5Model.decodeStep: the cache has ${cache.numLayers} layers, the decoder ${this.config.num_decoder_layers}`);
    if (!cache.cross) {
      cache.cross = noGrad(() => this.decoder.block.items.map((b) => {
        const kv = this.crossKV(b, encoderHidden);
        return { k: kv.k.keep(), v: kv.v.keep() };
      }));
    }
    if (cache.cross[0]!.k.shape[0] !== tokens.shape[0]) throw new Error(`T5Model.decodeStep: batch of ${tokens.shape[0]} does not match the cache's batch of ${cache.cross[0]!.k.shape[0]}`);
    return this.runDecoder(tokens, cache.cross, srcMask ?? null, cache);
  }

  /**
   * Greedy decoding of each source row (unpadded token ids; rows may differ in length: they
   * are padded with pad_token_id and masked). Returns the new tokens of each row, at most
   * maxNewTokens, up to and including the first end-of-sequence id. Runs without gradients.
   */
  greedyGenerate(srcIds: number[][], opts: T5GenerateOptions): number[][] {
    const cfg = this.config;
    const B = srcIds.length;
    if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0) throw new Error(`T5Model.greedyGenerate: maxNewTokens must be an integer >= 0, got ${opts.maxNewTokens}`);
    if (B === 0) return [];
    const S = Math.max(...srcIds.map((r) => r.length));
    if (S === 0) throw new Error('T5Model.greedyGenerate: every source row is empty');
    const eosOpt = opts.eosTokenId === undefined ? cfg.eos_token_id : opts.eosTokenId;
    const eos = new Set<number>(eosOpt === null ? [] : typeof eosOpt === 'number' ? [eosOpt] : eosOpt);
    const ids = new Int32Array(B * S).fill(cfg.pad_token_id);
    const mask = new Int32Array(B * S);
    srcIds.forEach((row, b) => row.forEach((t, s) => {
      ids[b * S + s] = t;
      mask[b * S + s] = 1;
    }));
    const backend = this.shared.weight.backend;
    const out: number[][] = srcIds.map(() => []);
    const done = new Array<boolean>(B).fill(false);
    const useCache = opts.useCache ?? true;
    const cache = useCache ? this.createCache() : null;
    const prefix: number[][] = srcIds.map(() => [cfg.decoder_start_token_id]);
    noGrad(() => {
      const srcMask = tensor(mask, { backend, dtype: 'int32', shape: [B, S] }).keep();
      const enc = tidy(() => this.encode(tensor(ids, { backend, dtype: 'int32', shape: [B, S] }), srcMask)).keep();
      try {
        for (let step = 0; step < opts.maxNewTokens && done.some((d) => !d); step++) {
          const next = tidy(() => {
            let logits: Tensor;
            if (cache) {
              const last = Int32Array.from(prefix.map((p) => p[p.length - 1]!));
              logits = this.decodeStep(tensor(last, { backend, dtype: 'int32', shape: [B, 1] }), enc, cache, srcMask);
            } else {
              const T = prefix[0]!.length;
              logits = this.decode(tensor(Int32Array.from(prefix.flat()), { backend, dtype: 'int32', shape: [B, T] }), enc, srcMask);
            }
            const T = logits.shape[1]!;
            const lastRow = reshape(logits, [B, T, cfg.vocab_size]);
            return Array.from(argmax(lastRow, -1).data()).filter((_, i) => i % T === T - 1);
          });
          for (let b = 0; b < B; b++) {
            if (done[b]) {
              prefix[b]!.push(cfg.pad_token_id);
              continue;
            }
            const t = next[b]!;
            out[b]!.push(t);
            prefix[b]!.push(t);
            if (eos.has(t)) done[b] = true;
          }
        }
      } finally {
        cache?.dispose();
        enc.dispose();
        srcMask.dispose();
      }
    });
    return out;
  }

  /** Parameters (a tied head counted once; the file's embed_tokens copies are not parameters). */
  static countParameters(cfg: T5Config): number {
    const C = cfg.d_model;
    const inner = cfg.num_heads * cfg.d_kv;
    const attn = 4 * C * inner;
    const ff = (cfg.feed_forward_proj === 'relu' ? 2 : 3) * C * cfg.d_ff;
    const bias = cfg.relative_attention_num_buckets * cfg.num_heads;
    const enc = cfg.num_layers * (attn + ff + 2 * C) + bias + C;
    const dec = cfg.num_decoder_layers * (2 * attn + ff + 3 * C) + bias + C;
    const head = cfg.tie_word_embeddings ? 0 : cfg.vocab_size * C;
    return cfg.vocab_size * C + enc + dec + head;
  }

  /** The encoder output's keys and values for one decoder block. */
  private crossKV(block: T5Block, encoderHidden: Tensor): CrossKV {
    if (encoderHidden.ndim !== 3 || encoderHidden.shape[2] !== this.config.d_model) throw new Error(`T5Model: the encoder output ${fmt(encoderHidden.shape)} must be (B, S, ${this.config.d_model})`);
    const a = block.crossAttn!.EncDecAttention;
    return { k: a.heads(a.k, encoderHidden), v: a.heads(a.v, encoderHidden) };
  }

  private runDecoder(ids: Tensor, cross: CrossKV[], srcMask: Tensor | null, cache: T5Cache | undefined): Tensor {
    const [B, T] = ids.shape as [number, number];
    const S = cross[0]?.k.shape[2] ?? 0;
    if (cross[0] && cross[0].k.shape[0] !== B) throw new Error(`T5Model: ${B} decoder rows but the encoder output has ${cross[0].k.shape[0]}`);
    if (srcMask) checkMask(srcMask, B, S);
    const past = cache?.length ?? 0;
    let x = this.shared.forward(ids); // (B, T, C)
    const bias = this.decoder.positionBias(T, past + T, past); // (1, H, T, past + T), causal
    this.decoder.block.items.forEach((block, i) => {
      x = block.selfAttn.forward(x, bias, cache?.self.layers[i]);
      x = block.crossAttn!.forward(x, cross[i]!, srcMask);
      x = block.ff.forward(x);
    });
    if (cache) cache.self.length += T;
    x = this.decoder.final_layer_norm.forward(x);
    if (this.lm_head) return this.lm_head.forward(x);
    return this.shared.project(mul(x, this.config.d_model ** -0.5)); // tied: rescaled, as in Mesh TensorFlow
  }

  private checkIds(what: string, ids: Tensor): void {
    if (ids.dtype !== 'int32' || ids.ndim !== 2) throw new Error(`T5Model: ${what} must be int32 (B, T), got ${ids.dtype} ${fmt(ids.shape)}`);
    if (ids.shape[1] === 0) throw new Error(`T5Model: ${what} is empty ${fmt(ids.shape)}`);
  }
}

function checkMask(mask: Tensor, B: number, S: number): void {
  if (mask.dtype !== 'int32' || mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== S) {
    throw new Error(`T5Model: srcMask must be int32 (B, S) = ${fmt([B, S])}, got ${mask.dtype} ${fmt(mask.shape)}`);
  }
}

/** srcMask (B, S) (1 = token) → additive (B, 1, 1, S): 0 at tokens, MASKED at padding. */
function keyMaskBias(mask: Tensor, like: Tensor): Tensor {
  const [B, S] = mask.shape as [number, number];
  const m = mask.data();
  const v = new Float32Array(B * S);
  for (let i = 0; i < v.length; i++) v[i] = m[i] ? 0 : MASKED;
  return floatLike(v, [B, 1, 1, S], like);
}
