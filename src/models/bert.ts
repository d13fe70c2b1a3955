// BERT (Devlin et al. 2019) in small: the Transformer encoder (src/models/encoder.ts's Encoder;
// pre-norm and GELU by default) over token embeddings (× √d_model) + learned or sinusoidal
// positions, an embedding LayerNorm and dropout, with [CLS] at position 0. Two heads:
//   MLMHead: dense → GELU → LayerNorm → decoder tied to the token embedding, + bias;
//   ClassificationHead: pooled [CLS] (or the mean of the non-padding positions, `pooling:
//   'mean'`) → dense → tanh → dropout → linear to n_classes. Masked-LM pre-training never
//   trains the [CLS] output (BERT's next-sentence task did), so mean pooling lets a classifier
//   start from representations the pre-training shaped.
// The masked-LM objective: 15% of the non-special tokens are selected; of those 80% become
// [MASK], 10% a random token, 10% stay; the loss is over the selected positions only.
// Names: embed.weight, pos.weight (learned), embed_norm, encoder.layers.{i}..., encoder.norm,
// mlm_head.{dense, norm, bias}, cls_head.{dense, out}.
// `attention` picks the encoder's self-attention variant, as in GPT (linformer allowed: bidirectional).
import type { Backend } from '../backend/backend.js';
import { ATTENTION_FIELDS } from '../nn/attention-config.js';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { LearnedPositionalEmbedding, SinusoidalPositionalEncoding } from '../nn/positional.js';
import {
  add, crossEntropy, div, embedding, fmt, gelu, Generator, linear, maximum, mul, reshape, slice, sum, tanh, tensor, to, type DType, type Tensor,
} from '../tensor/index.js';
import { countTrainingForward, Encoder, featureGeneratorFor, paddingMask, stackProblems, type PerformerRedraw, type TransformerStackFields } from './encoder.js';

/** max_len counts the whole input, [CLS] and [SEP] included. */
export interface BertConfig extends TransformerStackFields {
  n_layer: number;
  cls_id: number;
  sep_id: number;
  mask_id: number;
  positions: 'learned' | 'sinusoidal';
  /** Build the masked-LM head. */
  mlm_head: boolean;
  /** Classes of the classification head; 0: no head. */
  n_classes: number;
  /** Dropout before the classifier's output layer. */
  classifier_dropout: number;
  /** What the classifier reads: the [CLS] position or the mean over non-padding positions. */
  pooling: 'cls' | 'mean';
  /**
   * Prompt-based classification (Schick & Schütze 2021; Gao et al. 2021, "LM-BFF"): one token id
   * per class. When set, no classification head is built: the MLM head scores these tokens at
   * the [MASK] of `prompt_suffix`, so fine-tuning starts from what pre-training learned instead
   * of a random head. Empty: the ordinary head.
   */
  verbalizers: readonly number[];
  /** Token ids appended after the sentence (before [SEP]) in prompt mode; holds mask_id once. */
  prompt_suffix: readonly number[];
}

export const BERT_DEFAULTS: Readonly<BertConfig> = Object.freeze({
  n_layer: 4,
  n_head: 4,
  d_model: 256,
  d_ff: 1024,
  dropout: 0.1,
  max_len: 128,
  vocab_size: 8000,
  pad_id: 0,
  cls_id: 1,
  sep_id: 2,
  mask_id: 3,
  norm_placement: 'pre',
  activation: 'gelu',
  positions: 'learned',
  mlm_head: true,
  n_classes: 0,
  classifier_dropout: 0.1,
  pooling: 'cls',
  verbalizers: [],
  prompt_suffix: [],
});

const FIELDS = [...Object.keys(BERT_DEFAULTS), ...ATTENTION_FIELDS];

/** Defaults filled in and validated (one error naming every problem). */
export function bertConfig(partial: Partial<BertConfig> | Record<string, unknown> = {}): BertConfig {
  const problems: string[] = [];
  for (const k of Object.keys(partial)) if (!FIELDS.includes(k)) problems.push(`unknown field '${k}' (known: ${FIELDS.join(', ')})`);
  const defined = Object.fromEntries(Object.entries(partial).filter(([k, v]) => v !== undefined && FIELDS.includes(k)));
  const c = { ...BERT_DEFAULTS, ...defined } as BertConfig;
  stackProblems(c, { n_layer: c.n_layer }, null, problems);
  const ids = ['pad_id', 'cls_id', 'sep_id', 'mask_id'] as const;
  for (const k of ids) {
    if (!Number.isInteger(c[k]) || c[k] < 0 || c[k] >= c.vocab_size) problems.push(`${k} must be a token id in [0, vocab_size=${String(c.vocab_size)}), got ${String(c[k])}`);
  }
  if (new Set(ids.map((k) => c[k])).size !== ids.length) problems.push(`pad_id, cls_id, sep_id and mask_id must all differ`);
  if (c.positions !== 'learned' && c.positions !== 'sinusoidal') problems.push(`positions must be 'learned' or 'sinusoidal', got '${String(c.positions)}'`);
  if (typeof c.mlm_head !== 'boolean') problems.push(`mlm_head must be true or false`);
  if (!Number.isInteger(c.n_classes) || c.n_classes < 0 || c.n_classes === 1) problems.push(`n_classes must be 0 (no head) or an integer ≥ 2, got ${String(c.n_classes)}`);
  if (c.pooling !== 'cls' && c.pooling !== 'mean') problems.push(`pooling must be 'cls' or 'mean', got '${String(c.pooling)}'`);
  if (!(c.classifier_dropout >= 0 && c.classifier_dropout < 1)) problems.push(`classifier_dropout must be in [0, 1), got ${String(c.classifier_dropout)}`);
  const tokenList = (k: 'verbalizers' | 'prompt_suffix'): number[] => {
    const v = c[k] as unknown;
    if (!Array.isArray(v) || v.some((x) => !Number.isInteger(x) || x < 0 || x >= c.vocab_size)) {
      problems.push(`${k} must be a list of token ids in [0, vocab_size=${String(c.vocab_size)}), got ${JSON.stringify(v)}`);
      return [];
    }
    return v as number[];
  };
  const verbalizers = tokenList('verbalizers');
  const suffix = tokenList('prompt_suffix');
  if (verbalizers.length > 0) {
    if (!c.mlm_head) problems.push('prompt-based classification (verbalizers) needs the MLM head (mlm_head true)');
    if (verbalizers.length !== c.n_classes) problems.push(`${verbalizers.length} verbalizers for n_classes=${String(c.n_classes)} (one token per class)`);
    if (new Set(verbalizers).size !== verbalizers.length) problems.push('the verbalizers must be different tokens');
    if (suffix.filter((x) => x === c.mask_id).length !== 1) problems.push(`prompt_suffix must hold mask_id (${String(c.mask_id)}) exactly once, got ${JSON.stringify(suffix)}`);
  } else if (suffix.length > 0) problems.push('prompt_suffix is set without verbalizers');
  if (suffix.length + 3 > c.max_len) problems.push(`prompt_suffix (${suffix.length} tokens) leaves no room in max_len ${String(c.max_len)}`);
  if (problems.length) throw new Error(`BertConfig: ${problems.join('; ')}`);
  return c;
}

export interface BertOptions {
  backend?: Backend;
  dtype?: DType;
  /** Seeds the initial weights and the dropout masks (default 0). */
  seed?: number;
  /** false: weights left at zero, to be loaded. */
  init?: boolean;
}

interface InitParts {
  backend?: Backend;
  dtype?: DType;
  generator: Generator;
  skipInit: boolean;
}

/** dense + GELU + LayerNorm, then logits against the (tied) token embedding + a bias. */
export class MLMHead extends Module {
  readonly dense: Linear;
  readonly norm: LayerNorm;
  readonly bias: Tensor; // (V)

  constructor(d: number, vocab: number, o: InitParts) {
    super();
    this.dense = this.registerModule('dense', new Linear(d, d, o));
    this.norm = this.registerModule('norm', new LayerNorm(d, { backend: o.backend, dtype: o.dtype }));
    this.bias = this.registerParameter('bias', tensor(new Float32Array(vocab), { backend: o.backend, dtype: o.dtype ?? 'float32', shape: [vocab] }));
  }

  /** h (..., C), tied embedding (V, C) → (..., V). */
  forward(h: Tensor, embedWeight: Tensor): Tensor {
    return linear(this.transform(h), embedWeight, this.bias);
  }

  /** h (M, C) → logits (M, K) of just the tokens `ids` (K): the rows of the full logits' columns. */
  forwardTokens(h: Tensor, embedWeight: Tensor, ids: Tensor): Tensor {
    const V = this.bias.shape[0]!;
    const w = embedding(embedWeight, ids); // (K, C)
    const b = reshape(embedding(reshape(this.bias, [V, 1]), ids), [ids.shape[0]!]); // (K)
    return linear(this.transform(h), w, b);
  }

  private transform(h: Tensor): Tensor {
    return this.norm.forward(gelu(this.dense.forward(h)));
  }
}

/** Pooled [CLS] (or mean) → dense → tanh → dropout → linear to n_classes. */
export class ClassificationHead extends Module {
  readonly dense: Linear;
  readonly drop: Dropout;
  readonly out: Linear;

  constructor(d: number, nClasses: number, p: number, o: InitParts, dropoutGenerator: Generator, readonly pooling: 'cls' | 'mean' = 'cls') {
    super();
    this.dense = this.registerModule('dense', new Linear(d, d, o));
    this.drop = this.registerModule('drop', new Dropout(p, dropoutGenerator));
    this.out = this.registerModule('out', new Linear(d, nClasses, o));
  }

  /** hidden (B, T, C), mask (B, T) int32 (0 at padding) → logits (B, n_classes). */
  forward(hidden: Tensor, mask?: Tensor): Tensor {
    const [B, T, C] = hidden.shape as [number, number, number];
    let pooled: Tensor; // (B, C)
    if (this.pooling === 'mean') {
      if (!mask) throw new Error('ClassificationHead: mean pooling needs the padding mask');
      const keep = reshape(to(mask, hidden.dtype), [B, T, 1]); // (B, T, 1)
      const count = maximum(sum(keep, 1), 1); // (B, 1)
      pooled = div(sum(mul(hidden, keep), 1), count);
    } else {
      pooled = reshape(slice(hidden, 1, 0, 1), [B, C]);
    }
    return this.out.forward(this.drop.forward(tanh(this.dense.forward(pooled))));
  }
}

export class BertModel extends Module implements PerformerRedraw {
  readonly config: BertConfig;
  /** Draws the performer's features (initial and redrawn). */
  readonly featureGenerator: Generator;
  /** Forward calls in training mode (counts performer_redraw_interval). */
  trainingForwards = 0;
  readonly embed: Embedding;
  readonly pos: LearnedPositionalEmbedding | SinusoidalPositionalEncoding;
  readonly embed_norm: LayerNorm;
  readonly drop: Dropout;
  readonly encoder: Encoder;
  readonly mlm_head: MLMHead | null;
  readonly cls_head: ClassificationHead | null;

  constructor(config: Partial<BertConfig> = {}, opts: BertOptions = {}) {
    super();
    const cfg = bertConfig(config);
    this.config = Object.freeze(cfg);
    const seed = opts.seed ?? 0;
    const generator = new Generator(seed);
    const dropoutGenerator = new Generator((seed ^ 0x5eed5eed) >>> 0);
    const o: InitParts = { backend: opts.backend, dtype: opts.dtype, generator, skipInit: opts.init === false };
    const C = cfg.d_model;
    this.embed = this.registerModule('embed', new Embedding(cfg.vocab_size, C, { ...o, std: C ** -0.5 }));
    this.pos = this.registerModule('pos', cfg.positions === 'learned'
      ? new LearnedPositionalEmbedding(cfg.max_len, C, { ...o, std: 0.1 })
      : new SinusoidalPositionalEncoding(cfg.max_len, C, { backend: o.backend, dtype: o.dtype }));
    this.embed_norm = this.registerModule('embed_norm', new LayerNorm(C, { backend: o.backend, dtype: o.dtype }));
    this.drop = this.registerModule('drop', new Dropout(cfg.dropout, dropoutGenerator));
    this.featureGenerator = featureGeneratorFor(seed);
    this.encoder = this.registerModule('encoder', new Encoder(cfg, cfg.n_layer, { ...o, dropoutGenerator, featureGenerator: this.featureGenerator }));
    this.mlm_head = cfg.mlm_head ? this.registerModule('mlm_head', new MLMHead(C, cfg.vocab_size, o)) : null;
    this.cls_head = cfg.n_classes > 0 && cfg.verbalizers.length === 0 ? this.registerModule('cls_head', new ClassificationHead(C, cfg.n_classes, cfg.classifier_dropout, o, dropoutGenerator, cfg.pooling)) : null;
    for (const [name, p] of this.namedParameters()) p.name = name;
  }

  /** ids (B, T) int32 → { hidden (B, T, C), mask (B, T) int32, 0 at padding }. */
  forward(ids: Tensor): { hidden: Tensor; mask: Tensor } {
    if (ids.dtype !== 'int32' || ids.ndim !== 2) throw new Error(`BertModel: ids must be int32 (B, T), got ${ids.dtype} ${fmt(ids.shape)}`);
    const T = ids.shape[1]!;
    if (T > this.config.max_len) throw new Error(`BertModel: length ${T} exceeds max_len ${this.config.max_len}`);
    countTrainingForward(this, this.config);
    const mask = paddingMask(ids, this.config.pad_id);
    const x = add(mul(this.embed.forward(ids), Math.sqrt(this.config.d_model)), this.pos.positions(T)); // (B, T, C)
    const h = this.drop.forward(this.embed_norm.forward(x));
    return { hidden: this.encoder.forward(h, mask), mask };
  }

  /** True when classes are read from the MLM head at a prompt's [MASK] (config.verbalizers). */
  get promptMode(): boolean {
    return this.config.verbalizers.length > 0;
  }

  /**
   * ids (B, T) → classification logits (B, n_classes). In prompt mode the logits are the MLM
   * head's scores of the verbalizer tokens at each row's last [MASK]; maskPositions (B) gives
   * those positions (found in ids when left out, which reads ids back from a GPU).
   */
  classify(ids: Tensor, maskPositions?: ArrayLike<number>): Tensor {
    if (this.promptMode) return this.promptLogits(ids, maskPositions);
    if (!this.cls_head) throw new Error('BertModel.classify: the model has no classification head (n_classes is 0)');
    const { hidden, mask } = this.forward(ids);
    return this.cls_head.forward(hidden, mask);
  }

  /** Logits and the mean cross-entropy against labels (B) int32. */
  classifyLoss(ids: Tensor, labels: Tensor, maskPositions?: ArrayLike<number>): { logits: Tensor; loss: Tensor } {
    const logits = this.classify(ids, maskPositions);
    return { logits, loss: crossEntropy(logits, labels) };
  }

  private promptLogits(ids: Tensor, maskPositions?: ArrayLike<number>): Tensor {
    const [B, T] = ids.shape as [number, number];
    const pos = maskPositions ?? lastMaskPositions(ids.data(), B, T, this.config.mask_id);
    if (pos.length !== B) throw new Error(`BertModel.classify: ${pos.length} mask positions for ${B} rows`);
    const rows = new Int32Array(B);
    for (let b = 0; b < B; b++) {
      const p = pos[b]!;
      if (!(Number.isInteger(p) && p >= 0 && p < T)) throw new Error(`BertModel.classify: row ${b} has no [MASK] to read (position ${p}, length ${T})`);
      rows[b] = b * T + p;
    }
    const { hidden } = this.forward(ids);
    const be = ids.backend;
    const sel = embedding(reshape(hidden, [B * T, this.config.d_model]), tensor(rows, { backend: be, dtype: 'int32', shape: [B] })); // (B, C)
    const verb = tensor(Int32Array.from(this.config.verbalizers), { backend: be, dtype: 'int32', shape: [this.config.verbalizers.length] });
    return this.mlm_head!.forwardTokens(sel, this.embed.weight, verb); // (B, K)
  }

  /** Full MLM logits (B, T, V) (for inspection; training uses mlmLoss). */
  mlmLogits(ids: Tensor): Tensor {
    if (!this.mlm_head) throw new Error('BertModel: the model has no MLM head (mlm_head is false)');
    return this.mlm_head.forward(this.forward(ids).hidden, this.embed.weight);
  }

  /**
   * Masked-LM loss: input ids (B, T) (already masked), labels (B, T) int32 (a tensor or a
   * row-major Int32Array) holding the original
   * token at selected positions and IGNORE_INDEX elsewhere. Only the selected rows go through the
   * head. Returns the mean cross-entropy and the number of selected positions.
   */
  mlmLoss(ids: Tensor, labels: Tensor | Int32Array): { loss: Tensor; count: number } {
    if (!this.mlm_head) throw new Error('BertModel: the model has no MLM head (mlm_head is false)');
    const [B, T] = ids.shape as [number, number];
    // Labels on the host (an Int32Array, row-major like ids) spare a GPU a read-back per step.
    if (labels instanceof Int32Array) {
      if (labels.length !== B * T) throw new Error(`BertModel.mlmLoss: ${labels.length} labels for ids ${fmt(ids.shape)} (want ${B * T})`);
    } else if (labels.dtype !== 'int32' || labels.shape.join() !== ids.shape.join()) throw new Error(`BertModel.mlmLoss: labels ${labels.dtype} ${fmt(labels.shape)} must be int32 shaped like ids ${fmt(ids.shape)}`);
    const lv = labels instanceof Int32Array ? labels : labels.data();
    const rows: number[] = [];
    const targets: number[] = [];
    for (let i = 0; i < lv.length; i++) if (lv[i] !== IGNORE_INDEX) { rows.push(i); targets.push(lv[i]!); }
    if (rows.length === 0) throw new Error('BertModel.mlmLoss: no position is selected');
    const { hidden } = this.forward(ids);
    const flat = reshape(hidden, [B * T, this.config.d_model]); // (B·T, C)
    const be = ids.backend;
    const sel = embedding(flat, tensor(Int32Array.from(rows), { backend: be, dtype: 'int32', shape: [rows.length] })); // (M, C)
    const logits = this.mlm_head.forward(sel, this.embed.weight); // (M, V)
    const loss = crossEntropy(logits, tensor(Int32Array.from(targets), { backend: be, dtype: 'int32', shape: [rows.length] }));
    return { loss, count: rows.length };
  }
}

/** Each row's last position holding maskId (-1 where none), ids row-major (B, T). */
export function lastMaskPositions(ids: ArrayLike<number>, B: number, T: number, maskId: number): Int32Array {
  const out = new Int32Array(B).fill(-1);
  for (let b = 0; b < B; b++) for (let t = T - 1; t >= 0; t--) if (ids[b * T + t] === maskId) { out[b] = t; break; }
  return out;
}

/** Label value of positions the MLM loss ignores. */
export const IGNORE_INDEX = -100;

export interface MaskOptions {
  vocabSize: number;
  maskId: number;
  /** Ids never selected (pad, [CLS], [SEP], [MASK], ...); also never drawn as random replacements. */
  specialIds: Iterable<number>;
  /** Selection probability (default 0.15). */
  prob?: number;
  generator: Generator;
}

/**
 * BERT's masking of a flat id array (padding included): each non-special token is selected
 * with probability prob; a selected one becomes [MASK] (80%), a random non-special token
 * (10%) or stays (10%). labels hold the original id at selected positions, IGNORE_INDEX elsewhere.
 */
export function maskTokens(ids: ArrayLike<number>, o: MaskOptions): { input: Int32Array; labels: Int32Array } {
  const p = o.prob ?? 0.15;
  const special = new Set(o.specialIds);
  if (special.size >= o.vocabSize) throw new Error('maskTokens: every id is special');
  const input = Int32Array.from(ids);
  const labels = new Int32Array(input.length).fill(IGNORE_INDEX);
  const g = o.generator;
  for (let i = 0; i < input.length; i++) {
    const t = input[i]!;
    if (special.has(t) || g.random() >= p) continue;
    labels[i] = t;
    const r = g.random();
    if (r < 0.8) input[i] = o.maskId;
    else if (r < 0.9) {
      let x;
      do x = g.randint(o.vocabSize); while (special.has(x));
      input[i] = x;
    }
  }
  return { input, labels };
}

/** Rows of ids → (B, T) int32 with T the longest row, right-padded with padId. */
export function padBatch(rows: readonly (readonly number[])[], padId: number, backend?: Backend, multiple = 1): Tensor {
  const { data, shape } = padRows(rows, padId, multiple);
  return tensor(data, { backend, dtype: 'int32', shape });
}

/** The host-side half of padBatch: rows padded with padId to the longest, rounded up to a
 *  multiple of `multiple` (a GPU then meets a few shapes again and again instead of one per
 *  length; padding masks make the result the same). */
export function padRows(rows: readonly (readonly number[])[], padId: number, multiple = 1): { data: Int32Array; shape: [number, number] } {
  const longest = Math.max(1, ...rows.map((r) => r.length));
  const T = Math.ceil(longest / multiple) * multiple;
  const out = new Int32Array(rows.length * T).fill(padId);
  rows.forEach((r, i) => out.set(r, i * T));
  return { data: out, shape: [rows.length, T] };
}
