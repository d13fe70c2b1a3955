// The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017):
// a shared source/target token embedding, scaled by √d_model and added to sinusoidal
// positions; an encoder stack over the source (padding masked) whose output, the memory, is
// attended by every decoder layer; a causal decoder; and an output projection tied to the
// embedding. Trained with label-smoothed cross-entropy, padding ignored.
// Names: embed.weight, encoder.layers.{i}.{self_attn.{q,k,v,out}_proj, ffn.c_fc, ffn.c_proj,
// norm1, norm2}, decoder.layers.{i}.{self_attn, cross_attn, ffn, norm1..3}, and
// encoder.norm / decoder.norm with pre-norm only.
// The encoder stack (Encoder) and the fields and checks both stacks share are encoder.ts's,
// which BERT builds on too. EncoderModel is the encoder alone (this model's embedding and
// positions) exposing hidden states.
// `attention` (and its attn_* / performer_* / linformer_k settings, as in GPT) picks the
// self-attention of both stacks; cross-attention stays dense. linformer is encoder-only.
import type { Backend } from '../backend/backend.js';
import { ATTENTION_FIELDS } from '../nn/attention-config.js';
import {
  clearAttentionCache, DecoderLayer, emptyAttentionCache, reorderAttentionCache, type DecoderLayerCache,
} from '../nn/encoder-decoder-layers.js';
import { Dropout, Embedding, LayerNorm } from '../nn/layers.js';
import { Module, ModuleList } from '../nn/module.js';
import { SinusoidalPositionalEncoding } from '../nn/positional.js';
import { add, crossEntropy, fmt, Generator, linear, mul, type DType, type Tensor } from '../tensor/index.js';
import {
  countTrainingForward, Encoder, featureGeneratorFor, layerOptions, paddingMask, stackProblems, type PerformerRedraw, type StackParts,
  type TransformerStackFields,
} from './encoder.js';

/** max_len bounds source and target alike; the vocabulary is shared by both. */
export interface Seq2SeqConfig extends TransformerStackFields {
  n_layer_enc: number;
  n_layer_dec: number;
  bos_id: number;
  eos_id: number;
  /** ε of label smoothing (the paper's 0.1). */
  label_smoothing: number;
}

/** The paper's base model (vocabulary size is the WMT En-De shared BPE's 37000). */
export const SEQ2SEQ_BASE_CONFIG: Readonly<Seq2SeqConfig> = Object.freeze({
  n_layer_enc: 6,
  n_layer_dec: 6,
  n_head: 8,
  d_model: 512,
  d_ff: 2048,
  dropout: 0.1,
  max_len: 512,
  vocab_size: 37000,
  pad_id: 0,
  bos_id: 1,
  eos_id: 2,
  norm_placement: 'post',
  activation: 'relu',
  label_smoothing: 0.1,
});

/** Every field a Seq2SeqConfig may hold (the attention ones are optional). */
export const SEQ2SEQ_FIELDS: readonly string[] = [...Object.keys(SEQ2SEQ_BASE_CONFIG), ...ATTENTION_FIELDS];
const FIELDS = SEQ2SEQ_FIELDS;

/** Where a decoder's causal self-attention makes linformer impossible (for its message). */
const DECODER_CAUSAL = 'the decoder (attention sets the self-attention of both stacks)';

/**
 * Fills the base model's defaults into a partial config and validates it (one error listing
 * every problem: the stack's as in encoder.ts's stackProblems, then the decoder's ids and
 * label_smoothing). encoderOnly: no decoder is built, so linformer is allowed.
 */
export function seq2seqConfig(partial: Partial<Seq2SeqConfig> = {}, opts: { encoderOnly?: boolean } = {}): Seq2SeqConfig {
  const problems: string[] = [];
  for (const k of Object.keys(partial)) if (!FIELDS.includes(k)) problems.push(`unknown field '${k}' (known: ${FIELDS.join(', ')})`);
  const defined = Object.fromEntries(Object.entries(partial).filter(([k, v]) => v !== undefined && FIELDS.includes(k)));
  const c = { ...SEQ2SEQ_BASE_CONFIG, ...defined } as Seq2SeqConfig;
  stackProblems(c, { n_layer_enc: c.n_layer_enc, n_layer_dec: c.n_layer_dec }, opts.encoderOnly ? null : DECODER_CAUSAL, problems);
  for (const k of ['bos_id', 'eos_id'] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 0 || (Number.isInteger(c.vocab_size) && c[k] >= c.vocab_size)) {
      problems.push(`${k} must be a token id in [0, vocab_size=${String(c.vocab_size)}), got ${String(c[k])}`);
    }
  }
  if (c.bos_id === c.pad_id) problems.push(`bos_id and pad_id must differ (both ${c.pad_id}): the decoder's first input would be masked as padding`);
  if (c.eos_id === c.pad_id) problems.push(`eos_id and pad_id must differ (both ${c.pad_id}): eos is a target the loss must not ignore`);
  if (typeof c.label_smoothing !== 'number' || !(c.label_smoothing >= 0 && c.label_smoothing < 1)) {
    problems.push(`label_smoothing must be in [0, 1), got ${String(c.label_smoothing)}`);
  }
  if (problems.length) throw new Error(`Seq2SeqConfig: ${problems.join('; ')}`);
  return c;
}

export interface Seq2SeqOptions {
  backend?: Backend;
  dtype?: DType;
  /** Seeds the initial weights and the dropout masks (default 0). */
  seed?: number;
  /** false: leave the weights at zero, to be loaded from a checkpoint. */
  init?: boolean;
}

function checkIds(what: string, ids: Tensor, cfg: Seq2SeqConfig, offset = 0): void {
  if (ids.dtype !== 'int32' || ids.ndim !== 2) throw new Error(`EncoderDecoder: ${what} must be int32 (B, T), got ${ids.dtype} ${fmt(ids.shape)}`);
  if (offset + ids.shape[1]! > cfg.max_len) throw new Error(`EncoderDecoder: ${what} reaches position ${offset + ids.shape[1]!}, max_len is ${cfg.max_len}`);
}

/** A stack of decoder layers, with a final norm for pre-norm. */
export class Decoder extends Module {
  readonly layers: ModuleList<DecoderLayer>;
  readonly norm: LayerNorm | null;

  constructor(cfg: Seq2SeqConfig, o: StackParts) {
    super();
    this.layers = this.registerModule('layers', new ModuleList<DecoderLayer>());
    for (let i = 0; i < cfg.n_layer_dec; i++) this.layers.push(new DecoderLayer(cfg.d_model, cfg.n_head, layerOptions(cfg, o)));
    this.norm = cfg.norm_placement === 'pre' ? this.registerModule('norm', new LayerNorm(cfg.d_model, { backend: o.backend, dtype: o.dtype })) : null;
  }

  forward(x: Tensor, memory: Tensor | null, memoryMask: Tensor | null, tgtMask: Tensor | null, cache?: DecoderCache): Tensor {
    this.layers.items.forEach((l, i) => {
      x = l.forward(x, memory, { memoryMask, tgtMask, cache: cache?.layers[i] });
    });
    return this.norm ? this.norm.forward(x) : x;
  }
}

/** The decoder's caches for incremental decoding: per layer, the self-attention's keys and
 *  values so far and the memory's keys and values (computed once). dispose() when done. */
export class DecoderCache {
  readonly layers: DecoderLayerCache[];
  /** Target tokens seen so far (the position of the next one). */
  length = 0;

  constructor(nLayer: number) {
    this.layers = Array.from({ length: nLayer }, () => ({ self: emptyAttentionCache(), cross: emptyAttentionCache() }));
  }

  /** Row i becomes old row rows[i] (beam reordering, dropping finished sentences). With
   *  crossToo false the memory's keys/values stay (valid when rows only permute beams of the
   *  same sentences, whose memories are equal). */
  reorder(rows: readonly number[], crossToo = true): void {
    for (const l of this.layers) {
      reorderAttentionCache(l.self, rows);
      if (crossToo) reorderAttentionCache(l.cross, rows);
    }
  }

  dispose(): void {
    for (const l of this.layers) {
      clearAttentionCache(l.self);
      clearAttentionCache(l.cross);
    }
    this.length = 0;
  }
}

export interface Seq2SeqOutput {
  logits: Tensor; // (B, T, V)
  /** Label-smoothed cross-entropy, mean over non-pad targets. */
  loss?: Tensor;
}

/** The encoder's result: memory (B, S, C) and the source padding mask (B, S) int32. */
export interface Encoded {
  memory: Tensor;
  srcMask: Tensor;
}

/** Embedding × √d_model + positions, then dropout. */
function embed(e: Embedding, pe: SinusoidalPositionalEncoding, drop: Dropout, ids: Tensor, scale: number, offset: number): Tensor {
  const x = mul(e.forward(ids), scale); // (B, T, C)
  return drop.forward(add(x, pe.positions(ids.shape[1]!, offset)));
}

export class EncoderDecoder extends Module implements PerformerRedraw {
  readonly config: Seq2SeqConfig;
  /** Draws the performer's features (initial and redrawn). */
  readonly featureGenerator: Generator;
  /** Forward calls in training mode (counts performer_redraw_interval). */
  trainingForwards = 0;
  readonly embed: Embedding; // shared by source, target and the output projection
  readonly pe: SinusoidalPositionalEncoding;
  readonly drop: Dropout;
  readonly encoder: Encoder;
  readonly decoder: Decoder;

  constructor(config: Partial<Seq2SeqConfig> = {}, opts: Seq2SeqOptions = {}) {
    super();
    const cfg = seq2seqConfig(config);
    this.config = Object.freeze(cfg);
    const seed = opts.seed ?? 0;
    this.featureGenerator = featureGeneratorFor(seed);
    const o: StackParts = {
      backend: opts.backend, dtype: opts.dtype, generator: new Generator(seed),
      dropoutGenerator: new Generator((seed ^ 0x5eed5eed) >>> 0), featureGenerator: this.featureGenerator, skipInit: opts.init === false,
    };
    // N(0, d^-1/2): the √d-scaled input embedding then has unit variance.
    this.embed = this.registerModule('embed', new Embedding(cfg.vocab_size, cfg.d_model, { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: cfg.d_model ** -0.5 }));
    this.pe = this.registerModule('pe', new SinusoidalPositionalEncoding(cfg.max_len, cfg.d_model, { backend: o.backend, dtype: o.dtype }));
    this.drop = this.registerModule('drop', new Dropout(cfg.dropout, o.dropoutGenerator));
    this.encoder = this.registerModule('encoder', new Encoder(cfg, cfg.n_layer_enc, o));
    this.decoder = this.registerModule('decoder', new Decoder(cfg, o));
    for (const [name, p] of this.namedParameters()) p.name = name;
  }

  /** src (B, S) → memory (B, S, C) and its padding mask. */
  encode(src: Tensor): Encoded {
    checkIds('src', src, this.config);
    const srcMask = paddingMask(src, this.config.pad_id);
    const x = embed(this.embed, this.pe, this.drop, src, Math.sqrt(this.config.d_model), 0);
    return { memory: this.encoder.forward(x, srcMask), srcMask };
  }

  /** Full (teacher-forced) decoder: tgtIn (B, T) over the memory → logits (B, T, V). */
  decode(tgtIn: Tensor, enc: Encoded): Tensor {
    checkIds('tgtIn', tgtIn, this.config);
    const tgtMask = paddingMask(tgtIn, this.config.pad_id);
    const x = embed(this.embed, this.pe, this.drop, tgtIn, Math.sqrt(this.config.d_model), 0);
    return this.project(this.decoder.forward(x, enc.memory, enc.srcMask, tgtMask));
  }

  /**
   * Incremental decoding: tokens (B, T) are the target tokens after the cache.length already
   * seen (usually T = 1). The first call fills the memory's keys/values into the cache; later
   * calls may pass the same enc (its memory is not projected again). Logits (B, T, V) equal
   * the matching rows of decode() over the whole prefix (for prefixes without padding).
   */
  decodeStep(tokens: Tensor, enc: Encoded, cache: DecoderCache): Tensor {
    checkIds('tokens', tokens, this.config, cache.length);
    if (cache.layers.length !== this.config.n_layer_dec) throw new Error(`EncoderDecoder.decodeStep: the cache has ${cache.layers.length} layers, the decoder ${this.config.n_layer_dec}`);
    const x = embed(this.embed, this.pe, this.drop, tokens, Math.sqrt(this.config.d_model), cache.length);
    const h = this.decoder.forward(x, enc.memory, enc.srcMask, null, cache);
    cache.length += tokens.shape[1]!;
    return this.project(h);
  }

  createCache(): DecoderCache {
    return new DecoderCache(this.config.n_layer_dec);
  }

  /** src (B, S), tgtIn (B, T) (bos + target), tgtOut (B, T) (target + eos), pad_id padded. */
  forward(src: Tensor, tgtIn: Tensor, tgtOut?: Tensor): Seq2SeqOutput {
    countTrainingForward(this, this.config);
    const logits = this.decode(tgtIn, this.encode(src));
    if (!tgtOut) return { logits };
    if (tgtOut.dtype !== 'int32' || tgtOut.shape.join() !== tgtIn.shape.join()) {
      throw new Error(`EncoderDecoder: tgtOut ${tgtOut.dtype} ${fmt(tgtOut.shape)} must be int32 shaped like tgtIn ${fmt(tgtIn.shape)}`);
    }
    const loss = crossEntropy(logits, tgtOut, { ignoreIndex: this.config.pad_id, labelSmoothing: this.config.label_smoothing });
    return { logits, loss };
  }

  /** Output projection tied to the embedding: (B, T, C) → (B, T, V). */
  private project(h: Tensor): Tensor {
    return this.embed.project(h);
  }
}

export interface EncoderModelConfig extends TransformerStackFields {
  n_layer: number;
}

/** Encoder only (a BERT-style building block): ids (B, T) → hidden states (B, T, C). */
export class EncoderModel extends Module implements PerformerRedraw {
  readonly config: EncoderModelConfig;
  readonly featureGenerator: Generator;
  trainingForwards = 0;
  readonly embed: Embedding;
  readonly pe: SinusoidalPositionalEncoding;
  readonly drop: Dropout;
  readonly encoder: Encoder;

  constructor(config: Partial<EncoderModelConfig> = {}, opts: Seq2SeqOptions = {}) {
    super();
    const { n_layer, ...rest } = config;
    // Validated through the seq2seq config (bos/eos are unused here).
    const full = seq2seqConfig({ ...rest, n_layer_enc: n_layer ?? 6, n_layer_dec: 1, pad_id: config.pad_id ?? 0, label_smoothing: 0, ...ids(config) }, { encoderOnly: true });
    const attention = Object.fromEntries(ATTENTION_FIELDS.filter((k) => k in full).map((k) => [k, full[k as keyof Seq2SeqConfig]]));
    this.config = Object.freeze({
      n_layer: full.n_layer_enc, n_head: full.n_head, d_model: full.d_model, d_ff: full.d_ff, dropout: full.dropout,
      max_len: full.max_len, vocab_size: full.vocab_size, pad_id: full.pad_id, norm_placement: full.norm_placement, activation: full.activation,
      ...attention,
    });
    const seed = opts.seed ?? 0;
    this.featureGenerator = featureGeneratorFor(seed);
    const o: StackParts = {
      backend: opts.backend, dtype: opts.dtype, generator: new Generator(seed), dropoutGenerator: new Generator((seed ^ 0x5eed5eed) >>> 0),
      featureGenerator: this.featureGenerator, skipInit: opts.init === false,
    };
    this.embed = this.registerModule('embed', new Embedding(full.vocab_size, full.d_model, { backend: o.backend, dtype: o.dtype, generator: o.generator, skipInit: o.skipInit, std: full.d_model ** -0.5 }));
    this.pe = this.registerModule('pe', new SinusoidalPositionalEncoding(full.max_len, full.d_model, { backend: o.backend, dtype: o.dtype }));
    this.drop = this.registerModule('drop', new Dropout(full.dropout, o.dropoutGenerator));
    this.encoder = this.registerModule('encoder', new Encoder(full, full.n_layer_enc, o));
  }

  /** ids (B, T) int32 → { hidden (B, T, C), mask (B, T) int32 (0 at padding) }. */
  forward(idsT: Tensor): { hidden: Tensor; mask: Tensor } {
    if (idsT.dtype !== 'int32' || idsT.ndim !== 2) throw new Error(`EncoderModel: ids must be int32 (B, T), got ${idsT.dtype} ${fmt(idsT.shape)}`);
    if (idsT.shape[1]! > this.config.max_len) throw new Error(`EncoderModel: length ${idsT.shape[1]} exceeds max_len ${this.config.max_len}`);
    countTrainingForward(this, this.config);
    const mask = paddingMask(idsT, this.config.pad_id);
    const x = embed(this.embed, this.pe, this.drop, idsT, Math.sqrt(this.config.d_model), 0);
    return { hidden: this.encoder.forward(x, mask), mask };
  }
}

/** bos/eos ids distinct from pad for validation (the encoder never uses them). */
function ids(c: Partial<EncoderModelConfig>): Pick<Seq2SeqConfig, 'bos_id' | 'eos_id'> {
  const pad = c.pad_id ?? 0;
  const V = c.vocab_size ?? SEQ2SEQ_BASE_CONFIG.vocab_size;
  const other = pad === 0 ? Math.min(1, V - 1) : 0;
  return { bos_id: other, eos_id: other };
}
