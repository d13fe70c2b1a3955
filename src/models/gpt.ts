// GPT: a decoder-only Transformer language model (Radford et al. 2018/2019), laid out as
// nanoGPT's model.py with GPT-2's parameter names so Hugging Face checkpoints map directly:
//   transformer.wte, transformer.wpe, transformer.h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2,
//   mlp.c_fc, mlp.c_proj}, transformer.ln_f, lm_head (absent when tied to wte).
// The config also reaches the common variants: sinusoidal or rotary positions, post-norm,
// RMSNorm, ReLU or SwiGLU MLPs, no biases, untied head, and attention variants: grouped-query
// (n_kv_head), sparse (local, strided, fixed), linear and Performer; and mixture-of-experts
// feed-forward layers (moe_*: transformer.h.{i}.mlp.router, mlp.experts.{e}.c_fc, ...).
import { gptFusedDecodeStep } from './decoder-fused.js';
import type { Backend } from '../backend/backend.js';
import { ATTENTION_DEFAULTS, attentionProblems, sparsityOf, type AttentionFields } from '../nn/attention-config.js';
import { CausalSelfAttention, checkSegments, KVCache, KVPool, type ForwardCacheOptions, type KVLayerCache, type PooledStep, type PromptChunk, type Segments, finishPooledStep, planPooledStep, stepOutputRows } from '../nn/attention.js';
import { Dropout, Embedding, LayerNorm, Linear, RMSNorm } from '../nn/layers.js';
import { swigluHidden, MLP, type MLPActivation } from '../nn/mlp.js';
import { Module, ModuleList } from '../nn/module.js';
import { MoE } from '../nn/moe.js';
import { LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding } from '../nn/positional.js';
import { add, checkpoint, concat, crossEntropy, fmt, Generator, linear, slice, tensor, unsqueeze, type DType, type Tensor } from '../tensor/index.js';

export type PosEncoding = 'learned' | 'sinusoidal' | 'rope';
export type { NormPlacement } from '../nn/encoder-decoder-layers.js';
import type { NormPlacement } from '../nn/encoder-decoder-layers.js';
export type NormKind = 'layernorm' | 'rmsnorm';
// The attention fields are shared with the encoder and encoder-decoder models.
export { ATTENTION_DEFAULTS, sparsityOf, type AttentionKind } from '../nn/attention-config.js';

export interface GPTConfig extends AttentionFields {
  n_layer: number;
  n_head: number;
  n_embd: number;
  /** Longest sequence (context length); GPT-2's n_positions. */
  block_size: number;
  vocab_size: number;
  /** Dropout on embeddings and residual branches, active in training mode only. */
  dropout: number;
  /** Biases in Linear layers and LayerNorms. */
  bias: boolean;
  /** lm_head shares wte's matrix (GPT-2; Press & Wolf 2017). */
  tie_embeddings: boolean;
  pos_encoding: PosEncoding;
  /** 'pre': x + f(norm(x)) (GPT-2); 'post': norm(x + f(x)) (the 2017 Transformer, no ln_f). */
  norm_placement: NormPlacement;
  norm: NormKind;
  /** 'gelu' is GPT-2's tanh approximation; 'gelu_exact' the erf form. */
  activation: MLPActivation;
  layer_norm_epsilon: number;
  // Attention variants (AttentionFields): optional, absent = ATTENTION_DEFAULTS (so GPT-2
  // configs stay as they were); GPT's attention is causal, so 'linformer' is refused.
  /** Key/value heads, dividing n_head (1 = multi-query); absent = n_head (multi-head). */
  n_kv_head?: number;
  // Mixture of experts: optional, absent = MOE_DEFAULTS (dense).
  /** Experts per MoE layer; 0 = dense MLPs everywhere. */
  moe_experts?: number;
  /** Experts each token is sent to (1: Switch; 2: GShard / Mixtral). */
  moe_top_k?: 1 | 2;
  /** Training capacity per expert = ceil(factor · tokens · top_k / experts); eval never drops. */
  moe_capacity_factor?: number;
  /** Load-balancing loss coefficient α; the aux losses are added to the training loss. */
  moe_aux_loss_coef?: number;
  /** Layer i (0-based) is MoE when (i + 1) % moe_every === 0 (1: every layer, 2: every other). */
  moe_every?: number;
  /** Per-expert hidden width; absent = the dense MLP's width / moe_top_k (rounded up), so the
   *  active parameters per token match the dense MLP. */
  moe_hidden?: number;
}

/** A GPTConfig with every optional field filled in. */
export type FullGPTConfig = Required<GPTConfig>;

/** GPT-2's layer layout, shared by GPT2_CONFIG and the trainer's (nanoGPT's) defaults. */
export const GPT2_LAYOUT: Readonly<Pick<GPTConfig, 'tie_embeddings' | 'pos_encoding' | 'norm_placement' | 'norm' | 'activation' | 'layer_norm_epsilon'>> = Object.freeze({
  tie_embeddings: true,
  pos_encoding: 'learned',
  norm_placement: 'pre',
  norm: 'layernorm',
  activation: 'gelu',
  layer_norm_epsilon: 1e-5,
});

/** GPT-2 small (124M). */
export const GPT2_CONFIG: Readonly<GPTConfig> = Object.freeze({
  n_layer: 12,
  n_head: 12,
  n_embd: 768,
  block_size: 1024,
  vocab_size: 50257,
  dropout: 0,
  bias: true,
  ...GPT2_LAYOUT,
});

/** Defaults of the optional mixture-of-experts fields (moe_hidden's depends on the config). */
export const MOE_DEFAULTS = Object.freeze({
  moe_experts: 0,
  moe_top_k: 1 as 1 | 2,
  moe_capacity_factor: 1.25,
  moe_aux_loss_coef: 0.01,
  moe_every: 1,
});

/** The dense MLP's hidden width for a config. */
function denseHidden(cfg: Pick<GPTConfig, 'n_embd' | 'activation'>): number {
  return cfg.activation === 'swiglu' ? swigluHidden(cfg.n_embd) : 4 * cfg.n_embd;
}

/** cfg with the absent optional fields at their defaults. */
export function fullGPTConfig(cfg: GPTConfig): FullGPTConfig {
  const defined = Object.fromEntries(Object.entries(cfg).filter(([, v]) => v !== undefined));
  const out = { ...ATTENTION_DEFAULTS, ...MOE_DEFAULTS, n_kv_head: cfg.n_head, ...defined } as FullGPTConfig;
  if (cfg.moe_hidden === undefined) out.moe_hidden = Math.ceil(denseHidden(cfg) / out.moe_top_k);
  return out;
}

/** Whether layer i (0-based) of cfg is a mixture-of-experts layer. */
export function isMoELayer(cfg: FullGPTConfig, i: number): boolean {
  return cfg.moe_experts > 0 && (i + 1) % cfg.moe_every === 0;
}

const KNOWN_FIELDS = [...Object.keys(GPT2_CONFIG), 'n_kv_head', ...Object.keys(ATTENTION_DEFAULTS), ...Object.keys(MOE_DEFAULTS), 'moe_hidden'];

const CHOICES = {
  pos_encoding: ['learned', 'sinusoidal', 'rope'],
  norm_placement: ['pre', 'post'],
  norm: ['layernorm', 'rmsnorm'],
  activation: ['gelu', 'gelu_exact', 'relu', 'swiglu'],
} as const;

/** Fills GPT-2's defaults into a partial config and validates it; throws one error listing every problem. */
export function gptConfig(partial: Partial<GPTConfig> = {}): GPTConfig {
  const problems: string[] = [];
  for (const k of Object.keys(partial)) {
    if (!KNOWN_FIELDS.includes(k)) problems.push(`unknown field '${k}' (known: ${KNOWN_FIELDS.join(', ')})`);
  }
  const defined = Object.fromEntries(Object.entries(partial).filter(([k, v]) => v !== undefined && KNOWN_FIELDS.includes(k)));
  const result = { ...GPT2_CONFIG, ...defined } as GPTConfig;
  const cfg = fullGPTConfig(result); // validated with the defaults filled in
  for (const k of ['n_layer', 'n_head', 'n_embd', 'block_size', 'vocab_size', 'n_kv_head'] as const) {
    const v = cfg[k];
    if (!Number.isInteger(v) || v < 1) problems.push(`${k} must be a positive integer, got ${String(v)}`);
  }
  if (Number.isInteger(cfg.n_head) && Number.isInteger(cfg.n_kv_head) && cfg.n_head > 0 && cfg.n_kv_head > 0 && cfg.n_head % cfg.n_kv_head !== 0) {
    problems.push(`n_head (${cfg.n_head}) must be divisible by n_kv_head (${cfg.n_kv_head}): each key/value head serves an equal group of query heads`);
  }
  attentionProblems(cfg, 'GPT', problems);
  if (!(Number.isInteger(cfg.moe_experts) && cfg.moe_experts >= 0)) problems.push(`moe_experts must be a non-negative integer (0 = dense), got ${String(cfg.moe_experts)}`);
  if (cfg.moe_top_k !== 1 && cfg.moe_top_k !== 2) problems.push(`moe_top_k must be 1 or 2, got ${String(cfg.moe_top_k)}`);
  else if (Number.isInteger(cfg.moe_experts) && cfg.moe_experts > 0 && cfg.moe_top_k > cfg.moe_experts) {
    problems.push(`moe_top_k (${cfg.moe_top_k}) must not exceed moe_experts (${cfg.moe_experts})`);
  }
  if (!(typeof cfg.moe_capacity_factor === 'number' && cfg.moe_capacity_factor > 0 && Number.isFinite(cfg.moe_capacity_factor))) {
    problems.push(`moe_capacity_factor must be a positive finite number, got ${String(cfg.moe_capacity_factor)}`);
  }
  if (!(typeof cfg.moe_aux_loss_coef === 'number' && cfg.moe_aux_loss_coef >= 0 && Number.isFinite(cfg.moe_aux_loss_coef))) {
    problems.push(`moe_aux_loss_coef must be a non-negative finite number, got ${String(cfg.moe_aux_loss_coef)}`);
  }
  if (!(Number.isInteger(cfg.moe_every) && cfg.moe_every >= 1)) problems.push(`moe_every must be a positive integer, got ${String(cfg.moe_every)}`);
  else if (cfg.moe_experts > 0 && Number.isInteger(cfg.n_layer) && cfg.moe_every > cfg.n_layer) {
    problems.push(`moe_every (${cfg.moe_every}) exceeds n_layer (${cfg.n_layer}): no layer would be a mixture of experts`);
  }
  if (result.moe_hidden !== undefined && !(Number.isInteger(cfg.moe_hidden) && cfg.moe_hidden >= 1)) problems.push(`moe_hidden must be a positive integer, got ${String(cfg.moe_hidden)}`);
  if (typeof cfg.dropout !== 'number' || !(cfg.dropout >= 0 && cfg.dropout < 1)) problems.push(`dropout must be in [0, 1), got ${String(cfg.dropout)}`);
  if (typeof cfg.layer_norm_epsilon !== 'number' || !(cfg.layer_norm_epsilon > 0)) problems.push(`layer_norm_epsilon must be positive, got ${String(cfg.layer_norm_epsilon)}`);
  for (const k of ['bias', 'tie_embeddings'] as const) {
    if (typeof cfg[k] !== 'boolean') problems.push(`${k} must be true or false, got ${String(cfg[k])}`);
  }
  for (const [k, allowed] of Object.entries(CHOICES)) {
    const v = cfg[k as keyof typeof CHOICES];
    if (!(allowed as readonly string[]).includes(v)) problems.push(`${k} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got '${String(v)}'`);
  }
  if (Number.isInteger(cfg.n_embd) && Number.isInteger(cfg.n_head) && cfg.n_head > 0) {
    if (cfg.n_embd % cfg.n_head !== 0) problems.push(`n_embd (${cfg.n_embd}) must be divisible by n_head (${cfg.n_head})`);
    else if (cfg.pos_encoding === 'rope' && (cfg.n_embd / cfg.n_head) % 2 !== 0) {
      problems.push(`rope needs an even head size, but n_embd / n_head = ${cfg.n_embd / cfg.n_head}`);
    }
  }
  if (problems.length) throw new Error(`GPTConfig: ${problems.join('; ')}`);
  return result;
}

export interface GPTOptions {
  backend?: Backend;
  dtype?: DType;
  /** Seeds the initial weights and the dropout masks (default 0). */
  seed?: number;
  /** Draws the initial weights (overrides seed for them). */
  generator?: Generator;
  /** false: leave the weights at zero, to be loaded from a checkpoint (saves drawing them). */
  init?: boolean;
}

export interface GPTOutput {
  logits: Tensor; // (B, T, V)
  /** The training objective: ceLoss plus auxLoss (when the model has MoE layers). */
  loss?: Tensor;
  /** Mean cross-entropy over the targets that are not -100. */
  ceLoss?: Tensor;
  /** Sum of the MoE layers' load-balancing losses (scalar); absent for dense models. */
  auxLoss?: Tensor;
}

type Norm = LayerNorm | RMSNorm;

interface BuildOptions {
  backend?: Backend;
  dtype?: DType;
  generator: Generator;
  dropoutGenerator: Generator;
  /** Draws the performer's random features (initial ones). */
  featureGenerator: Generator;
  skipInit: boolean;
}

function makeNorm(cfg: GPTConfig, o: BuildOptions): Norm {
  const opts = { backend: o.backend, dtype: o.dtype, eps: cfg.layer_norm_epsilon };
  return cfg.norm === 'rmsnorm' ? new RMSNorm(cfg.n_embd, opts) : new LayerNorm(cfg.n_embd, { ...opts, bias: cfg.bias });
}

/** One Transformer layer: attention then MLP (or MoE), each a residual branch with a norm. */
export class Block extends Module {
  readonly ln_1: Norm;
  readonly attn: CausalSelfAttention;
  readonly ln_2: Norm;
  readonly mlp: MLP | MoE;

  constructor(readonly cfg: FullGPTConfig, o: BuildOptions, rope: RotaryEmbedding | null, layer = 0) {
    super();
    // GPT-2 scales the residual projections by 1/√(2·n_layer): each layer adds two branches to
    // the residual stream, so this keeps its variance from growing with depth.
    const projStd = 0.02 / Math.sqrt(2 * cfg.n_layer);
    const common = { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: 0.02, projStd, bias: cfg.bias, dropout: cfg.dropout, dropoutGenerator: o.dropoutGenerator };
    this.ln_1 = this.registerModule('ln_1', makeNorm(cfg, o));
    this.attn = this.registerModule('attn', new CausalSelfAttention(cfg.n_embd, cfg.n_head, {
      ...common, rope, kind: cfg.attention as CausalSelfAttention['kind'], nKvHead: cfg.n_kv_head, sparsity: sparsityOf(cfg),
      performerFeatures: cfg.performer_features, featureGenerator: o.featureGenerator,
    }));
    this.ln_2 = this.registerModule('ln_2', makeNorm(cfg, o));
    this.mlp = this.registerModule('mlp', isMoELayer(cfg, layer)
      ? new MoE(cfg.n_embd, {
        ...common, experts: cfg.moe_experts, topK: cfg.moe_top_k, capacityFactor: cfg.moe_capacity_factor,
        auxLossCoef: cfg.moe_aux_loss_coef, activation: cfg.activation, hidden: cfg.moe_hidden,
      })
      : new MLP(cfg.n_embd, cfg.activation, common));
  }

  forward(x: Tensor, cache?: KVLayerCache, segments?: Segments): Tensor {
    if (this.cfg.norm_placement === 'pre') {
      x = add(x, this.attn.forward(this.ln_1.forward(x), cache, segments)); // (B, T, C)
      return add(x, this.mlp.forward(this.ln_2.forward(x)));
    }
    x = this.ln_1.forward(add(x, this.attn.forward(x, cache, segments)));
    return this.ln_2.forward(add(x, this.mlp.forward(x)));
  }

  /** forward() for the rows of a PooledStep (GPT.stepPooled). */
  decodePooled(x: Tensor, pool: KVPool, layer: number, step: PooledStep): Tensor {
    if (this.cfg.norm_placement === 'pre') {
      x = add(x, this.attn.decodePooled(this.ln_1.forward(x), pool, layer, step));
      return add(x, this.mlp.forward(this.ln_2.forward(x)));
    }
    x = this.ln_1.forward(add(x, this.attn.decodePooled(x, pool, layer, step)));
    return this.ln_2.forward(add(x, this.mlp.forward(x)));
  }

  /** forward() for one new token of each of B sequences with their own caches (decodeBatch). */
  decodeBatch(x: Tensor, caches: readonly KVLayerCache[], pasts: readonly number[]): Tensor {
    if (this.cfg.norm_placement === 'pre') {
      x = add(x, this.attn.decodeBatch(this.ln_1.forward(x), caches, pasts));
      return add(x, this.mlp.forward(this.ln_2.forward(x)));
    }
    x = this.ln_1.forward(add(x, this.attn.decodeBatch(x, caches, pasts)));
    return this.ln_2.forward(add(x, this.mlp.forward(x)));
  }
}

/** The `transformer` container of GPT-2's names. */
export class GPTTransformer extends Module {
  readonly wte: Embedding;
  readonly wpe: LearnedPositionalEmbedding | null;
  /** The fixed sinusoidal table (no parameters), when pos_encoding is 'sinusoidal'. */
  readonly pe: SinusoidalPositionalEncoding | null;
  /** Rotary tables shared by every layer, when pos_encoding is 'rope'. */
  readonly rope: RotaryEmbedding | null;
  readonly drop: Dropout;
  readonly h: ModuleList<Block>;
  /** Final norm before the head; pre-norm only (post-norm blocks already end in a norm). */
  readonly ln_f: Norm | null;

  constructor(cfg: FullGPTConfig, o: BuildOptions) {
    super();
    const C = cfg.n_embd;
    const init = { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: 0.02 };
    this.wte = this.registerModule('wte', new Embedding(cfg.vocab_size, C, init));
    this.wpe = cfg.pos_encoding === 'learned' ? this.registerModule('wpe', new LearnedPositionalEmbedding(cfg.block_size, C, init)) : null;
    const fixed = { backend: o.backend, dtype: o.dtype };
    this.pe = cfg.pos_encoding === 'sinusoidal' ? this.registerModule('pe', new SinusoidalPositionalEncoding(cfg.block_size, C, fixed)) : null;
    this.rope = cfg.pos_encoding === 'rope' ? this.registerModule('rope', new RotaryEmbedding(C / cfg.n_head, cfg.block_size, fixed)) : null;
    this.drop = this.registerModule('drop', new Dropout(cfg.dropout, o.dropoutGenerator));
    this.h = this.registerModule('h', new ModuleList<Block>());
    for (let i = 0; i < cfg.n_layer; i++) this.h.push(new Block(cfg, o, this.rope, i));
    this.ln_f = cfg.norm_placement === 'pre' ? this.registerModule('ln_f', makeNorm(cfg, o)) : null;
  }
}

export class GPT extends Module {
  readonly config: GPTConfig;
  readonly transformer: GPTTransformer;
  /** The output projection when untied; tied models reuse transformer.wte.weight. */
  readonly lm_head: Linear | null;
  /** Draws the performer's redrawn features. */
  readonly featureGenerator: Generator;
  /** Forward calls in training mode (counts performer_redraw_interval). */
  trainingForwards = 0;
  /**
   * Recompute each block's activations in the backward pass instead of keeping them (activation
   * checkpointing): less memory for one more forward per block. Gradients are the same.
   */
  checkpointActivations = false;

  constructor(config: Partial<GPTConfig> = {}, opts: GPTOptions = {}) {
    super();
    const cfg = gptConfig(config);
    this.config = Object.freeze(cfg);
    const seed = opts.seed ?? 0;
    const o: BuildOptions = {
      backend: opts.backend,
      dtype: opts.dtype,
      generator: opts.generator ?? new Generator(seed),
      // A separate stream for dropout masks, so training does not depend on how many draws init made.
      dropoutGenerator: new Generator((seed ^ 0x5eed5eed) >>> 0),
      featureGenerator: new Generator((seed ^ 0x0fea7055) >>> 0),
      skipInit: opts.init === false,
    };
    // Redraws continue the stream that drew the initial features.
    this.featureGenerator = o.featureGenerator;
    this.transformer = this.registerModule('transformer', new GPTTransformer(fullGPTConfig(cfg), o));
    this.lm_head = cfg.tie_embeddings
      ? null
      : this.registerModule('lm_head', new Linear(cfg.n_embd, cfg.vocab_size, { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: 0.02, bias: false }));
    for (const [name, p] of this.namedParameters()) p.name = name; // for error messages
  }

  /** The generators a block draws from (its dropout masks), for replaying them on recomputation. */
  private dropoutGenerators(block: Block): Generator[] {
    const out: Generator[] = [];
    for (const [, m] of block.namedModules()) if (m instanceof Dropout && !out.includes(m.generator)) out.push(m.generator);
    return out;
  }

  /** idx int32 (B, T) → logits (B, T, V); with targets int32 (B, T) also the mean loss (-100 ignored).
   *  opts.segments: packed rows (see Segments): attention never crosses sequences, positions restart. */
  forward(idx: Tensor, targets?: Tensor, opts: { segments?: Segments } = {}): GPTOutput {
    const { attention, performer_redraw_interval: every } = fullGPTConfig(this.config);
    if (this.training && attention === 'performer') {
      if (every > 0 && this.trainingForwards > 0 && this.trainingForwards % every === 0) this.redrawFeatures();
      this.trainingForwards++;
    }
    const logits = this.head(this.hidden(idx, undefined, opts.segments));
    if (!targets) return { logits };
    const ceLoss = crossEntropy(logits, targets, { ignoreIndex: -100 });
    const moe = this.moeLayers();
    if (moe.length === 0) return { logits, loss: ceLoss, ceLoss };
    let auxLoss = moe[0]![1].lastAuxLoss!;
    for (const [, m] of moe.slice(1)) auxLoss = add(auxLoss, m.lastAuxLoss!);
    return { logits, loss: add(ceLoss, auxLoss), ceLoss, auxLoss };
  }

  /** The mixture-of-experts layers as [layer index, MoE]. */
  moeLayers(): [number, MoE][] {
    const out: [number, MoE][] = [];
    this.transformer.h.items.forEach((b, i) => {
      if (b.mlp instanceof MoE) out.push([i, b.mlp]);
    });
    return out;
  }

  /**
   * Incremental decoding: idx (B, T) holds only the tokens after those already in `cache`
   * (whose length gives their positions); their keys and values are appended to the cache.
   * The logits equal the matching rows of forward() over the whole sequence; with `lastOnly`
   * only the last position's (B, 1, V), sparing a prompt's prefill the head on every other row.
   */
  forwardWithCache(idx: Tensor, cache: KVCache, opts: ForwardCacheOptions = {}): GPTOutput {
    if (cache.layers.length !== this.config.n_layer) {
      throw new Error(`GPT.forwardWithCache: the cache has ${cache.layers.length} layers, the model ${this.config.n_layer}`);
    }
    // One token of one sequence: the whole step in one backend call where it is covered.
    if (idx.ndim === 2 && idx.shape[1] === 1 && idx.dtype === 'int32' && cache.length + 1 <= this.config.block_size) {
      const fused = gptFusedDecodeStep(this, idx, cache);
      if (fused) return { logits: fused };
    }
    let h = this.hidden(idx, cache); // (B, T, C)
    const T = idx.shape[1]!;
    if (opts.lastOnly && T > 1) h = slice(h, 1, T - 1, T); // (B, 1, C): the head for the last position only
    return { logits: this.head(h) };
  }

  /** An empty cache for this model: keys and values, or running sums for linear attention
   *  layers (dispose() it when done). */
  createKVCache(): KVCache {
    return new KVCache(this.config.n_layer, this.transformer.h.items.map((b) => b.attn.cacheKind));
  }

  /**
   * Continuous batching's decode step: idx int32 (B, 1) holds the next token of B independent
   * sequences, caches[i] the KV cache (batch 1) of sequence i, whose length is that token's
   * position (each row gets its own position embedding). Every weight matmul runs once for all
   * rows; each cache grows by one. Row i's logits equal forwardWithCache(idx[i], caches[i]).
   */
  decodeBatch(idx: Tensor, caches: readonly KVCache[]): GPTOutput {
    const cfg = this.config;
    const t = this.transformer;
    if (idx.dtype !== 'int32' || idx.ndim !== 2 || idx.shape[1] !== 1) throw new Error(`GPT.decodeBatch: idx must be int32 (B, 1), got ${idx.dtype} ${fmt(idx.shape)}`);
    const B = idx.shape[0]!;
    if (caches.length !== B) throw new Error(`GPT.decodeBatch: ${B} rows but ${caches.length} caches`);
    const pasts = caches.map((c) => c.length);
    for (const c of caches) {
      if (c.layers.length !== cfg.n_layer) throw new Error(`GPT.decodeBatch: a cache has ${c.layers.length} layers, the model ${cfg.n_layer}`);
      if (c.length + 1 > cfg.block_size) throw new Error(`GPT.decodeBatch: a sequence of ${c.length} cached tokens is at block_size ${cfg.block_size}`);
    }
    let x = t.wte.forward(idx); // (B, 1, C)
    if (t.wpe) x = add(x, t.wpe.forward(tensor(Int32Array.from(pasts), { backend: idx.backend, dtype: 'int32', shape: [B, 1] })));
    else if (t.pe) x = add(x, concat(pasts.map((p) => unsqueeze(t.pe!.positions(1, p), 0)), 0));
    x = t.drop.forward(x);
    t.h.items.forEach((block, i) => {
      x = block.decodeBatch(x, caches.map((c) => c.layers[i]!), pasts);
    });
    if (t.ln_f) x = t.ln_f.forward(x);
    for (const c of caches) c.length += 1;
    return { logits: this.lm_head ? this.lm_head.forward(x) : t.wte.project(x) }; // (B, 1, V)
  }

  /** A KVPool for decodePooled with `slots` sequences (null when a layer's attention needs the
   *  per-row decodeBatch: linear kinds or sparse patterns). */
  createKVPool(slots: number): KVPool | null {
    const a = this.transformer.h.items[0]!.attn;
    if (!this.transformer.h.items.every((b) => b.attn.poolable)) return null;
    return new KVPool(this.config.n_layer, slots, a.nKvHead, a.headDim, this.transformer.wte.weight.backend); // float32 activations
  }

  /**
   * Continuous batching's decode step over a KVPool: idx int32 (B, 1) holds the next token of
   * the sequences in slots 0 .. B-1, at positions pool.lengths[i]. Every weight matmul and each
   * layer's attention run once for all rows; each slot's length grows by one. Row i's logits
   * equal forwardWithCache of that token on sequence i's own cache.
   */
  decodePooled(idx: Tensor, pool: KVPool): GPTOutput {
    if (idx.dtype !== 'int32' || idx.ndim !== 2 || idx.shape[1] !== 1) throw new Error(`GPT.decodePooled: idx must be int32 (B, 1), got ${idx.dtype} ${fmt(idx.shape)}`);
    if (pool.nLayer !== this.config.n_layer) throw new Error(`GPT.decodePooled: a pool of ${pool.nLayer} layers for a model of ${this.config.n_layer}`);
    return this.stepPooled(Array.from(idx.data()), [], pool);
  }

  /**
   * One step of continuous batching: the decode tokens of slots 0 .. B-1 (B = decode.length) and
   * the prompt chunks of sequences joining in other slots, in one forward: every weight matmul
   * runs once over all the step's tokens, so a joining prompt rides along with the decode rows
   * instead of taking a forward of its own. Logits (B + chunks, 1, V): each decode row's, then
   * each chunk's last token's; they equal forwardWithCache on each sequence's own cache.
   */
  stepPooled(decode: readonly number[], chunks: readonly PromptChunk[], pool: KVPool): GPTOutput {
    const cfg = this.config;
    const t = this.transformer;
    if (pool.nLayer !== cfg.n_layer) throw new Error(`GPT.stepPooled: a pool of ${pool.nLayer} layers for a model of ${cfg.n_layer}`);
    const { step, ids, positions } = planPooledStep(pool, decode, chunks, cfg.block_size, 'GPT.stepPooled');
    const N = ids.length;
    const backend = t.wte.weight.backend;
    let x = t.wte.forward(tensor(ids, { backend, dtype: 'int32', shape: [N, 1] })); // (N, 1, C)
    if (t.wpe) x = add(x, t.wpe.forward(tensor(Int32Array.from(positions), { backend, dtype: 'int32', shape: [N, 1] })));
    else if (t.pe) x = add(x, concat(positions.map((p) => unsqueeze(t.pe!.positions(1, p), 0)), 0));
    x = t.drop.forward(x);
    t.h.items.forEach((block, i) => {
      x = block.decodePooled(x, pool, i, step);
    });
    x = stepOutputRows(x, step); // (B + chunks, 1, C)
    if (t.ln_f) x = t.ln_f.forward(x);
    finishPooledStep(pool, step);
    return { logits: this.lm_head ? this.lm_head.forward(x) : t.wte.project(x) }; // (B + chunks, 1, V)
  }

  /** Draws new performer features in every layer (no-op for other kinds). */
  redrawFeatures(generator: Generator = this.featureGenerator): void {
    for (const b of this.transformer.h.items) b.attn.feature_map?.redraw(generator);
  }

  /** The language-model head: hidden states (B, T, C) → logits (B, T, V). */
  head(x: Tensor): Tensor {
    return this.lm_head ? this.lm_head.forward(x) : this.transformer.wte.project(x);
  }

  /** The last layer's hidden states (B, T, C), after the final norm: what the head reads (a
   *  reward or value head reads them too). */
  hidden(idx: Tensor, cache?: KVCache, segments?: Segments): Tensor {
    const cfg = this.config;
    const t = this.transformer;
    if (idx.dtype !== 'int32' || idx.ndim !== 2) throw new Error(`GPT: idx must be int32 (B, T), got ${idx.dtype} ${fmt(idx.shape)}`);
    const T = idx.shape[1]!;
    const past = cache?.length ?? 0;
    if (past + T > cfg.block_size) {
      throw new Error(cache
        ? `GPT: ${past} cached + ${T} new tokens = ${past + T} exceed block_size ${cfg.block_size}`
        : `GPT: cannot forward a sequence of length T=${T}, block_size is only ${cfg.block_size}`);
    }
    let x = t.wte.forward(idx); // token embeddings (B, T, C)
    if (segments) {
      checkSegments(segments, idx.shape[0]!, T);
      // Each packed sequence's positions start at 0: (B, T, C) assembled per row and segment.
      const table = t.wpe ?? t.pe;
      if (table) x = add(x, concat(segments.map((row) => unsqueeze(concat(row.map((len) => table.positions(len, 0)), 0), 0)), 0));
    } else if (t.wpe) x = add(x, t.wpe.positions(T, past)); // + (T, C), broadcast over B
    else if (t.pe) x = add(x, t.pe.positions(T, past));
    x = t.drop.forward(x);
    t.h.items.forEach((block, i) => {
      // Activation checkpointing: the block's activations are recomputed in the backward pass.
      x = this.checkpointActivations && !cache ? checkpoint((h) => block.forward(h, undefined, segments), x, this.dropoutGenerators(block)) : block.forward(x, cache?.layers[i], segments);
    });
    if (t.ln_f) x = t.ln_f.forward(x);
    if (cache) cache.length += T;
    return x;
  }

  /** Parameters of a config, computed without allocating (GPT-2 124M: 124,439,808); every expert counts. */
  static countParameters(config: Partial<GPTConfig> = {}): number {
    return countParams(fullGPTConfig(gptConfig(config)), false);
  }

  /** Parameters used per token: as countParameters, but each MoE layer counts its router and
   *  top_k experts only. Equals countParameters for dense models. */
  static countActiveParameters(config: Partial<GPTConfig> = {}): number {
    return countParams(fullGPTConfig(gptConfig(config)), true);
  }

  /**
   * Training FLOPs per token, the PaLM appendix B estimate nanoGPT uses for MFU:
   * 6N (forward + backward through every weight a token uses, N the active parameters without
   * the position table, which is a lookup) + 12·L·H·D·T (attention's QKᵀ and AV matmuls, forward and backward, at context T).
   */
  static flopsPerToken(config: Partial<GPTConfig> = {}, T?: number): number {
    const cfg = fullGPTConfig(gptConfig(config));
    const N = GPT.countActiveParameters(cfg) - (cfg.pos_encoding === 'learned' ? cfg.block_size * cfg.n_embd : 0);
    const D = cfg.n_embd / cfg.n_head;
    // Keys each query meets (rough for the sparse patterns; the feature count for the linear kinds).
    const ctx = T ?? cfg.block_size;
    const keys = cfg.attention === 'local' ? Math.min(ctx, cfg.attn_window)
      : cfg.attention === 'linear' ? D
        : cfg.attention === 'performer' ? cfg.performer_features
          : ctx;
    return 6 * N + 12 * cfg.n_layer * cfg.n_head * D * keys;
  }

  flopsPerToken(T?: number): number {
    return GPT.flopsPerToken(this.config, T);
  }
}

function countParams(cfg: FullGPTConfig, activeOnly: boolean): number {
  const C = cfg.n_embd;
  const b = cfg.bias ? 1 : 0;
  const norm = cfg.norm === 'rmsnorm' ? C : C * (1 + b);
  const qkv = C + 2 * cfg.n_kv_head * (C / cfg.n_head);
  const attn = C * qkv + b * qkv + C * C + b * C;
  const mlpOf = (hid: number): number =>
    (cfg.activation === 'swiglu' ? 2 * (C * hid + b * hid) : C * hid + b * hid) + hid * C + b * C;
  const dense = mlpOf(denseHidden(cfg));
  const moe = C * cfg.moe_experts + (activeOnly ? cfg.moe_top_k : cfg.moe_experts) * mlpOf(cfg.moe_hidden);
  let layers = 0;
  for (let i = 0; i < cfg.n_layer; i++) layers += 2 * norm + attn + (isMoELayer(cfg, i) ? moe : dense);
  const emb = cfg.vocab_size * C + (cfg.pos_encoding === 'learned' ? cfg.block_size * C : 0);
  return emb + layers + (cfg.norm_placement === 'pre' ? norm : 0) + (cfg.tie_embeddings ? 0 : cfg.vocab_size * C);
}
