// The Transformer encoder stack, shared by the 2017 encoder-decoder (seq2seq.ts: its encoder,
// and EncoderModel) and BERT (bert.ts): the fields every model built on these stacks shares
// and their checks, the Encoder (EncoderLayers from nn/encoder-decoder-layers.ts, with a final
// norm for pre-norm), the padding mask, and the performer's feature stream and redraws.
// Names under an Encoder: layers.{i}.{self_attn.{q,k,v,out}_proj, ffn.c_fc, ffn.c_proj, norm1,
// norm2}, and norm with pre-norm only.
import type { Backend } from '../backend/backend.js';
import { attentionProblems, fullAttentionFields, sparsityOf, type AttentionFields } from '../nn/attention-config.js';
import { EncoderLayer, type NormPlacement } from '../nn/encoder-decoder-layers.js';
import { LayerNorm } from '../nn/layers.js';
import { PerformerFeatureMap } from '../nn/linear-attention.js';
import { Module, ModuleList } from '../nn/module.js';
import { Generator, tensor, type DType, type Tensor } from '../tensor/index.js';

/** The sizes and settings every model built on these stacks shares (Seq2SeqConfig,
 *  EncoderModelConfig, BertConfig), declared once so they mean the same everywhere. */
export interface TransformerStackFields extends AttentionFields {
  n_head: number;
  d_model: number;
  d_ff: number;
  /** Dropout on embeddings and on every sublayer's output (training mode only). */
  dropout: number;
  /** Longest sequence (the position table's length). */
  max_len: number;
  vocab_size: number;
  pad_id: number;
  /** 'post': x = LN(x + f(x)) (the paper); 'pre': x = x + f(LN(x)) with a final norm per stack. */
  norm_placement: NormPlacement;
  activation: 'relu' | 'gelu';
}

/**
 * Pushes onto `problems` what is wrong with the stack fields of c, in this order: the layer
 * counts (name -> value) and the sizes (positive integers), d_model by n_head, pad_id,
 * dropout, norm_placement, activation, then the attention fields. causalIn: where a causal
 * self-attention makes linformer impossible (for its message), or null for an encoder alone.
 */
export function stackProblems(c: TransformerStackFields, layerCounts: Record<string, number>, causalIn: string | null, problems: string[]): void {
  const ints: [string, number][] = [...Object.entries(layerCounts), ['n_head', c.n_head], ['d_model', c.d_model], ['d_ff', c.d_ff], ['max_len', c.max_len], ['vocab_size', c.vocab_size]];
  for (const [k, v] of ints) {
    if (!Number.isInteger(v) || v < 1) problems.push(`${k} must be a positive integer, got ${String(v)}`);
  }
  if (Number.isInteger(c.d_model) && Number.isInteger(c.n_head) && c.n_head > 0 && c.d_model % c.n_head !== 0) {
    problems.push(`d_model (${c.d_model}) must be divisible by n_head (${c.n_head})`);
  }
  if (!Number.isInteger(c.pad_id) || c.pad_id < 0 || (Number.isInteger(c.vocab_size) && c.pad_id >= c.vocab_size)) {
    problems.push(`pad_id must be a token id in [0, vocab_size=${String(c.vocab_size)}), got ${String(c.pad_id)}`);
  }
  if (typeof c.dropout !== 'number' || !(c.dropout >= 0 && c.dropout < 1)) problems.push(`dropout must be in [0, 1), got ${String(c.dropout)}`);
  if (c.norm_placement !== 'post' && c.norm_placement !== 'pre') problems.push(`norm_placement must be one of 'post', 'pre', got '${String(c.norm_placement)}'`);
  if (c.activation !== 'relu' && c.activation !== 'gelu') problems.push(`activation must be one of 'relu', 'gelu', got '${String(c.activation)}'`);
  attentionProblems(fullAttentionFields(c), causalIn, problems);
}

/** What building a stack needs besides its config: where and how its weights are made. */
export interface StackParts {
  backend?: Backend;
  dtype?: DType;
  generator: Generator;
  dropoutGenerator: Generator;
  /** Draws the performer's initial features (default: generator). */
  featureGenerator?: Generator;
  skipInit: boolean;
}

/** The options of every EncoderLayer / DecoderLayer of a stack. */
export function layerOptions(cfg: TransformerStackFields, o: StackParts) {
  const a = fullAttentionFields(cfg);
  return {
    backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, dFF: cfg.d_ff, dropout: cfg.dropout,
    norm_placement: cfg.norm_placement, activation: cfg.activation, dropoutGenerator: o.dropoutGenerator,
    selfAttention: {
      kind: a.attention, sparsity: sparsityOf(a), performerFeatures: a.performer_features, featureGenerator: o.featureGenerator,
      maxLen: cfg.max_len, linformerK: a.linformer_k,
    },
  };
}

/** A separate stream for the performer's features, so adding them leaves the weights' draws alone. */
export function featureGeneratorFor(seed: number): Generator {
  return new Generator((seed ^ 0x0fea7055) >>> 0);
}

/** Draws new features for every performer feature map under m. */
export function redrawPerformerFeatures(m: Module, g: Generator): void {
  for (const [, sub] of m.namedModules()) if (sub instanceof PerformerFeatureMap) sub.redraw(g);
}

/** Model state for performer_redraw_interval: training forwards so far and the feature stream. */
export interface PerformerRedraw {
  training: boolean;
  trainingForwards: number;
  readonly featureGenerator: Generator;
}

/** Counts a training forward; every performer_redraw_interval of them redraws the features (as GPT does). */
export function countTrainingForward(model: Module & PerformerRedraw, cfg: AttentionFields): void {
  const { attention, performer_redraw_interval: every } = fullAttentionFields(cfg);
  if (!model.training || attention !== 'performer') return;
  if (every > 0 && model.trainingForwards > 0 && model.trainingForwards % every === 0) redrawPerformerFeatures(model, model.featureGenerator);
  model.trainingForwards++;
}

/** (B, T) int32 → (B, T) int32: 1 where the id is not pad_id. */
export function paddingMask(ids: Tensor, padId: number): Tensor {
  const v = ids.data();
  const m = new Int32Array(v.length);
  for (let i = 0; i < v.length; i++) m[i] = v[i] === padId ? 0 : 1;
  return tensor(m, { backend: ids.backend, dtype: 'int32', shape: ids.shape });
}

/** A stack of nLayer encoder layers, with a final norm for pre-norm. */
export class Encoder extends Module {
  readonly layers: ModuleList<EncoderLayer>;
  readonly norm: LayerNorm | null;

  constructor(cfg: TransformerStackFields, nLayer: number, o: StackParts) {
    super();
    this.layers = this.registerModule('layers', new ModuleList<EncoderLayer>());
    for (let i = 0; i < nLayer; i++) this.layers.push(new EncoderLayer(cfg.d_model, cfg.n_head, layerOptions(cfg, o)));
    this.norm = cfg.norm_placement === 'pre' ? this.registerModule('norm', new LayerNorm(cfg.d_model, { backend: o.backend, dtype: o.dtype })) : null;
  }

  /** x (B, S, C), mask (B, S) → (B, S, C). */
  forward(x: Tensor, mask: Tensor | null): Tensor {
    for (const l of this.layers) x = l.forward(x, mask);
    return this.norm ? this.norm.forward(x) : x;
  }
}
