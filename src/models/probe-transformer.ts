// Small Transformers for the in-context-learning probes (`attn probe icl`):
//   - an attention-only language model (no MLPs), as in Elhage et al. 2021 and Olsson et al. 2022,
//     whose attention patterns can be read out per head (prefix matching, previous token);
//   - a vector-reading Transformer for in-context linear regression (Garg et al. 2022): a linear
//     read-in of each x or y vector, GPT-2-style pre-norm blocks with MLPs, a linear read-out.
// Training uses the fused attention kernel; `patterns: true` computes softmax(QKᵀ/√D) with plain
// ops instead and returns it, (B, H, T, T) per layer.
import type { Backend } from '../backend/backend.js';
import { Embedding, LayerNorm, Linear } from '../nn/layers.js';
import { MLP } from '../nn/mlp.js';
import { Module, ModuleList } from '../nn/module.js';
import { LearnedPositionalEmbedding } from '../nn/positional.js';
import {
  add, crossEntropy, Generator, matmul, where, mul, noGrad, permute, reshape, scaledDotProductAttention, softmax, split, tensor, transpose, trilMask,
  type Tensor,
} from '../tensor/index.js';

export interface ProbeTransformerConfig {
  n_layer: number;
  n_head: number;
  n_embd: number;
  block_size: number;
  /** false: attention-only (the residual stream is embeddings plus attention outputs). */
  mlp: boolean;
}

export interface ProbeBuildOptions {
  backend?: Backend;
  seed?: number;
  /** false: leave weights at zero (to be loaded). */
  init?: boolean;
}

function checkConfig(cfg: ProbeTransformerConfig, what: string): void {
  const problems: string[] = [];
  for (const k of ['n_layer', 'n_head', 'n_embd', 'block_size'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] < 1) problems.push(`${k} must be a positive integer, got ${String(cfg[k])}`);
  }
  if (!problems.length && cfg.n_embd % cfg.n_head !== 0) problems.push(`n_embd (${cfg.n_embd}) must be divisible by n_head (${cfg.n_head})`);
  if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`);
}

/** Causal multi-head self-attention whose pattern can be returned. */
export class PatternAttention extends Module {
  readonly c_attn: Linear;
  readonly c_proj: Linear;
  readonly headDim: number;

  constructor(readonly nEmbd: number, readonly nHead: number, opts: { backend?: Backend; generator: Generator; skipInit: boolean; projStd: number }) {
    super();
    this.headDim = nEmbd / nHead;
    const lin = { backend: opts.backend, generator: opts.generator, skipInit: opts.skipInit, std: 0.02, bias: false };
    this.c_attn = this.registerModule('c_attn', new Linear(nEmbd, 3 * nEmbd, lin));
    this.c_proj = this.registerModule('c_proj', new Linear(nEmbd, nEmbd, { ...lin, std: opts.projStd }));
  }

  /** x (B, T, C) → (B, T, C); with `patterns`, also the (B, H, T, T) attention probabilities. */
  forward(x: Tensor, patterns?: Tensor[]): Tensor {
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.nHead;
    const D = this.headDim;
    const heads = (t: Tensor) => permute(reshape(t, [B, T, H, D]), [0, 2, 1, 3]); // (B, H, T, D)
    const [q0, k0, v0] = split(this.c_attn.forward(x), C, -1);
    const q = heads(q0!);
    const k = heads(k0!);
    const v = heads(v0!);
    let y: Tensor;
    if (patterns) {
      const scores = mul(matmul(q, transpose(k, -2, -1)), 1 / Math.sqrt(D)); // (B, H, T, T)
      const future = trilMask(T, T, 0, { backend: x.backend, dtype: 'int32' }); // 1 = may attend
      const p = softmax(where(future, scores, -Infinity), -1);
      patterns.push(p);
      y = matmul(p, v);
    } else {
      y = scaledDotProductAttention(q, k, v, { causal: true });
    }
    return this.c_proj.forward(reshape(permute(y, [0, 2, 1, 3]), [B, T, C]));
  }
}

/** A pre-norm block: attention, then (unless attention-only) an MLP, each a residual branch. */
export class ProbeBlock extends Module {
  readonly ln_1: LayerNorm;
  readonly attn: PatternAttention;
  readonly ln_2: LayerNorm | null;
  readonly mlp: MLP | null;

  constructor(cfg: ProbeTransformerConfig, o: { backend?: Backend; generator: Generator; skipInit: boolean }) {
    super();
    const projStd = 0.02 / Math.sqrt((cfg.mlp ? 2 : 1) * cfg.n_layer);
    this.ln_1 = this.registerModule('ln_1', new LayerNorm(cfg.n_embd, { backend: o.backend, bias: false }));
    this.attn = this.registerModule('attn', new PatternAttention(cfg.n_embd, cfg.n_head, { ...o, projStd }));
    this.ln_2 = cfg.mlp ? this.registerModule('ln_2', new LayerNorm(cfg.n_embd, { backend: o.backend, bias: false })) : null;
    this.mlp = cfg.mlp ? this.registerModule('mlp', new MLP(cfg.n_embd, 'gelu', { backend: o.backend, generator: o.generator, skipInit: o.skipInit, std: 0.02, projStd, bias: false })) : null;
  }

  forward(x: Tensor, patterns?: Tensor[]): Tensor {
    x = add(x, this.attn.forward(this.ln_1.forward(x), patterns));
    return this.mlp ? add(x, this.mlp.forward(this.ln_2!.forward(x))) : x;
  }
}

/** The blocks and final norm shared by both models: (B, T, C) in, (B, T, C) out. */
export class ProbeBody extends Module {
  readonly h: ModuleList<ProbeBlock>;
  readonly ln_f: LayerNorm;
  readonly wpe: LearnedPositionalEmbedding;

  constructor(readonly cfg: ProbeTransformerConfig, o: { backend?: Backend; generator: Generator; skipInit: boolean }) {
    super();
    this.wpe = this.registerModule('wpe', new LearnedPositionalEmbedding(cfg.block_size, cfg.n_embd, { backend: o.backend, generator: o.generator, skipInit: o.skipInit, std: 0.02 }));
    this.h = this.registerModule('h', new ModuleList(Array.from({ length: cfg.n_layer }, () => new ProbeBlock(cfg, o))));
    this.ln_f = this.registerModule('ln_f', new LayerNorm(cfg.n_embd, { backend: o.backend, bias: false }));
  }

  forward(x: Tensor, patterns?: Tensor[]): Tensor {
    const T = x.shape[1]!;
    if (T > this.cfg.block_size) throw new Error(`sequence of ${T} exceeds block_size ${this.cfg.block_size}`);
    x = add(x, this.wpe.positions(T, 0)); // (T, C) broadcast over the batch
    for (const b of this.h) x = b.forward(x, patterns);
    return this.ln_f.forward(x);
  }
}

/** An attention-only (or full) character/token language model with an untied unembedding. */
export class ProbeLM extends Module {
  readonly wte: Embedding;
  readonly body: ProbeBody;
  readonly lm_head: Linear;

  constructor(readonly cfg: ProbeTransformerConfig & { vocab_size: number }, opts: ProbeBuildOptions = {}) {
    super();
    checkConfig(cfg, 'ProbeLM');
    if (!Number.isInteger(cfg.vocab_size) || cfg.vocab_size < 1) throw new Error(`ProbeLM: vocab_size must be a positive integer, got ${String(cfg.vocab_size)}`);
    const o = { backend: opts.backend, generator: new Generator(opts.seed ?? 0), skipInit: opts.init === false };
    this.wte = this.registerModule('wte', new Embedding(cfg.vocab_size, cfg.n_embd, { ...o, std: 0.02 }));
    this.body = this.registerModule('body', new ProbeBody(cfg, o));
    this.lm_head = this.registerModule('lm_head', new Linear(cfg.n_embd, cfg.vocab_size, { ...o, std: 0.02, bias: false }));
  }

  /** idx (B, T) int32 → logits (B, T, V); loss (mean) when targets are given. */
  forward(idx: Tensor, targets?: Tensor, patterns?: Tensor[]): { logits: Tensor; loss?: Tensor } {
    const logits = this.lm_head.forward(this.body.forward(this.wte.forward(idx), patterns));
    return { logits, loss: targets ? crossEntropy(logits, targets) : undefined };
  }

  /** Cross-entropy at every position, (B, T), without gradients. */
  tokenLosses(idx: Tensor, targets: Tensor): Tensor {
    return noGrad(() => crossEntropy(this.forward(idx).logits, targets, { reduction: 'none' }));
  }
}

/** Reads vectors: (B, T, d_in) → (B, T, d_out) through a linear read-in and read-out. */
export class VectorTransformer extends Module {
  readonly read_in: Linear;
  readonly body: ProbeBody;
  readonly read_out: Linear;

  constructor(readonly cfg: ProbeTransformerConfig & { d_in: number; d_out: number }, opts: ProbeBuildOptions = {}) {
    super();
    checkConfig(cfg, 'VectorTransformer');
    const o = { backend: opts.backend, generator: new Generator(opts.seed ?? 0), skipInit: opts.init === false };
    this.read_in = this.registerModule('read_in', new Linear(cfg.d_in, cfg.n_embd, { ...o, std: 0.02 }));
    this.body = this.registerModule('body', new ProbeBody(cfg, o));
    this.read_out = this.registerModule('read_out', new Linear(cfg.n_embd, cfg.d_out, { ...o, std: 0.02 }));
  }

  forward(x: Tensor, patterns?: Tensor[]): Tensor {
    return this.read_out.forward(this.body.forward(this.read_in.forward(x), patterns));
  }
}

/** Token ids as a (B, T) int32 tensor. */
export function idsTensor(ids: ArrayLike<number>, B: number, T: number, backend: Backend): Tensor {
  return tensor(ids, { shape: [B, T], dtype: 'int32', backend });
}
