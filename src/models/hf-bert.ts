// BERT (Devlin et al. 2019) as Hugging Face lays it out, for checkpoints from the Hub: post-norm
// encoder layers, word + position + token-type embeddings with a LayerNorm, GELU (erf), the
// pooler (dense + tanh on [CLS]), the masked-LM head (transform dense → GELU → LayerNorm, decoder
// tied to the word embeddings, + bias) and the sequence-classification head (pooled → classifier).
// Module names are transformers' (bert.encoder.layer.3.attention.self.query, cls.predictions...),
// so a checkpoint's tensors are this model's stateDict() one to one. attn's own BERT-style
// encoder (bert.ts: pre-norm, scaled embeddings) stays as it is; this is the Hub's.
import type { Backend } from '../backend/backend.js';
import type { AttentionProbe } from '../nn/attention.js';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers.js';
import { Module, ModuleList } from '../nn/module.js';
import {
  add, arange, crossEntropy, fmt, gelu, Generator, linear, permute, reshape, scaledDotProductAttention, slice, tanh, zeros,
  type DType, type Tensor,
} from '../tensor/index.js';

export interface HFBertConfig {
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  /** 'gelu' is the erf form (BERT's), 'gelu_new' the tanh approximation. */
  hidden_act: 'gelu' | 'gelu_new' | 'relu';
  max_position_embeddings: number;
  type_vocab_size: number;
  layer_norm_eps: number;
  pad_token_id: number;
  /** Build the masked-LM head (cls.predictions). */
  mlm_head: boolean;
  /** Build the pooler (bert.pooler). */
  pooler: boolean;
  /** Classes of the sequence-classification head (classifier); 0: none. */
  num_labels: number;
  hidden_dropout_prob: number;
}

interface Build {
  backend?: Backend;
  dtype?: DType;
  generator: Generator;
  skipInit: boolean;
}

const lin = (i: number, o: number, b: Build): Linear => new Linear(i, o, { backend: b.backend, dtype: b.dtype, generator: b.generator, skipInit: b.skipInit, std: 0.02 });
const ln = (c: HFBertConfig, b: Build): LayerNorm => new LayerNorm(c.hidden_size, { backend: b.backend, dtype: b.dtype, eps: c.layer_norm_eps });

function act(c: HFBertConfig, x: Tensor): Tensor {
  return c.hidden_act === 'relu' ? x.relu() : gelu(x, c.hidden_act === 'gelu' ? 'none' : 'tanh');
}

class BertSelfAttention extends Module {
  readonly query: Linear;
  readonly key: Linear;
  readonly value: Linear;
  /** Inspection hook (see AttentionProbe in nn/attention.ts); null in normal use. */
  probe: AttentionProbe | null = null;
  constructor(c: HFBertConfig, b: Build) {
    super();
    this.query = this.registerModule('query', lin(c.hidden_size, c.hidden_size, b));
    this.key = this.registerModule('key', lin(c.hidden_size, c.hidden_size, b));
    this.value = this.registerModule('value', lin(c.hidden_size, c.hidden_size, b));
  }
}

class BertDenseNorm extends Module {
  readonly dense: Linear;
  readonly LayerNorm: LayerNorm;
  readonly dropout: Dropout;
  constructor(c: HFBertConfig, inF: number, b: Build) {
    super();
    this.dense = this.registerModule('dense', lin(inF, c.hidden_size, b));
    this.LayerNorm = this.registerModule('LayerNorm', ln(c, b));
    this.dropout = this.registerModule('dropout', new Dropout(c.hidden_dropout_prob, b.generator));
  }
  /** LayerNorm(residual + dropout(dense(h))): BERT's post-norm residual. */
  forward(h: Tensor, residual: Tensor): Tensor {
    return this.LayerNorm.forward(add(residual, this.dropout.forward(this.dense.forward(h))));
  }
}

class BertAttention extends Module {
  readonly self: BertSelfAttention;
  readonly output: BertDenseNorm;
  constructor(c: HFBertConfig, b: Build) {
    super();
    this.self = this.registerModule('self', new BertSelfAttention(c, b));
    this.output = this.registerModule('output', new BertDenseNorm(c, c.hidden_size, b));
  }
}

class BertIntermediate extends Module {
  readonly dense: Linear;
  constructor(c: HFBertConfig, b: Build) {
    super();
    this.dense = this.registerModule('dense', lin(c.hidden_size, c.intermediate_size, b));
  }
}

class BertLayer extends Module {
  readonly attention: BertAttention;
  readonly intermediate: BertIntermediate;
  readonly output: BertDenseNorm;
  constructor(readonly c: HFBertConfig, b: Build) {
    super();
    this.attention = this.registerModule('attention', new BertAttention(c, b));
    this.intermediate = this.registerModule('intermediate', new BertIntermediate(c, b));
    this.output = this.registerModule('output', new BertDenseNorm(c, c.intermediate_size, b));
  }

  forward(x: Tensor, keyMask: Tensor | null): Tensor {
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.c.num_attention_heads;
    const D = C / H;
    const s = this.attention.self;
    const heads = (t: Tensor) => permute(reshape(t, [B, T, H, D]), [0, 2, 1, 3]); // (B, H, T, D)
    const q = heads(s.query.forward(x));
    const k = heads(s.key.forward(x));
    const v = heads(s.value.forward(x));
    let y = scaledDotProductAttention(q, k, v, { keyMask });
    if (s.probe) y = s.probe.observe({ q, k, v, scale: 1 / Math.sqrt(D), causal: false, sparsity: null, keyMask }, y);
    const a = this.attention.output.forward(reshape(permute(y, [0, 2, 1, 3]), [B, T, C]), x);
    return this.output.forward(act(this.c, this.intermediate.dense.forward(a)), a);
  }
}

class BertEmbeddings extends Module {
  readonly word_embeddings: Embedding;
  readonly position_embeddings: Embedding;
  readonly token_type_embeddings: Embedding;
  readonly LayerNorm: LayerNorm;
  readonly dropout: Dropout;
  constructor(c: HFBertConfig, b: Build) {
    super();
    const o = { backend: b.backend, dtype: b.dtype, generator: b.generator, skipInit: b.skipInit, std: 0.02 };
    this.word_embeddings = this.registerModule('word_embeddings', new Embedding(c.vocab_size, c.hidden_size, o));
    this.position_embeddings = this.registerModule('position_embeddings', new Embedding(c.max_position_embeddings, c.hidden_size, o));
    this.token_type_embeddings = this.registerModule('token_type_embeddings', new Embedding(c.type_vocab_size, c.hidden_size, o));
    this.LayerNorm = this.registerModule('LayerNorm', ln(c, b));
    this.dropout = this.registerModule('dropout', new Dropout(c.hidden_dropout_prob, b.generator));
  }
}

class BertPooler extends Module {
  readonly dense: Linear;
  constructor(c: HFBertConfig, b: Build) {
    super();
    this.dense = this.registerModule('dense', lin(c.hidden_size, c.hidden_size, b));
  }
}

/** `bert`: embeddings, encoder.layer.{i}, pooler. */
class BertBody extends Module {
  readonly embeddings: BertEmbeddings;
  readonly encoder: Module & { layer: ModuleList<BertLayer> };
  readonly pooler: BertPooler | null;
  constructor(c: HFBertConfig, b: Build) {
    super();
    this.embeddings = this.registerModule('embeddings', new BertEmbeddings(c, b));
    const enc = new Module() as Module & { layer: ModuleList<BertLayer> };
    enc.layer = enc.registerModule('layer', new ModuleList<BertLayer>());
    for (let i = 0; i < c.num_hidden_layers; i++) enc.layer.push(new BertLayer(c, b));
    this.encoder = this.registerModule('encoder', enc);
    this.pooler = c.pooler ? this.registerModule('pooler', new BertPooler(c, b)) : null;
  }
}

class MLMTransform extends Module {
  readonly dense: Linear;
  readonly LayerNorm: LayerNorm;
  constructor(c: HFBertConfig, b: Build) {
    super();
    this.dense = this.registerModule('dense', lin(c.hidden_size, c.hidden_size, b));
    this.LayerNorm = this.registerModule('LayerNorm', ln(c, b));
  }
}

/** cls.predictions: transform, then the word embeddings (tied) and a bias. */
class MLMPredictions extends Module {
  readonly transform: MLMTransform;
  readonly bias: Tensor;
  constructor(c: HFBertConfig, b: Build) {
    super();
    this.transform = this.registerModule('transform', new MLMTransform(c, b));
    this.bias = this.registerParameter('bias', zeros([c.vocab_size], { backend: b.backend, dtype: b.dtype }));
  }
}

/** A Hugging Face BERT with its masked-LM and/or classification heads. */
export class HFBert extends Module {
  readonly config: HFBertConfig;
  readonly bert: BertBody;
  readonly cls: (Module & { predictions: MLMPredictions }) | null;
  readonly classifier: Linear | null;
  readonly dropout: Dropout;

  constructor(config: HFBertConfig, opts: { backend?: Backend; dtype?: DType; seed?: number; init?: boolean } = {}) {
    super();
    if (config.hidden_size % config.num_attention_heads !== 0) throw new Error(`HFBert: hidden_size ${config.hidden_size} is not divisible by num_attention_heads ${config.num_attention_heads}`);
    if (config.num_labels > 0 && !config.pooler) throw new Error('HFBert: a classification head needs the pooler');
    this.config = Object.freeze({ ...config });
    const b: Build = { backend: opts.backend, dtype: opts.dtype, generator: new Generator(opts.seed ?? 0), skipInit: opts.init === false };
    this.bert = this.registerModule('bert', new BertBody(config, b));
    if (config.mlm_head) {
      const cls = new Module() as Module & { predictions: MLMPredictions };
      cls.predictions = cls.registerModule('predictions', new MLMPredictions(config, b));
      this.cls = this.registerModule('cls', cls);
    } else {
      this.cls = null;
    }
    this.classifier = config.num_labels > 0 ? this.registerModule('classifier', lin(config.hidden_size, config.num_labels, b)) : null;
    this.dropout = this.registerModule('dropout', new Dropout(config.hidden_dropout_prob, b.generator));
    for (const [name, p] of this.namedParameters()) p.name = name;
  }

  /**
   * ids int32 (B, T) → hidden states (B, T, C). attentionMask int32 (B, T): 1 for real tokens, 0
   * for padding (default all 1); tokenTypeIds (B, T) (default all 0).
   */
  encode(ids: Tensor, attentionMask?: Tensor | null, tokenTypeIds?: Tensor | null): Tensor {
    const c = this.config;
    if (ids.dtype !== 'int32' || ids.ndim !== 2) throw new Error(`HFBert: ids must be int32 (B, T), got ${ids.dtype} ${fmt(ids.shape)}`);
    const [B, T] = ids.shape as [number, number];
    if (T > c.max_position_embeddings) throw new Error(`HFBert: ${T} tokens exceed max_position_embeddings ${c.max_position_embeddings}`);
    const e = this.bert.embeddings;
    const types = tokenTypeIds ?? zeros([B, T], { backend: ids.backend, dtype: 'int32' });
    let x = add(add(e.word_embeddings.forward(ids), e.position_embeddings.forward(arange(0, T, 1, { backend: ids.backend, dtype: 'int32' }))), e.token_type_embeddings.forward(types));
    x = e.dropout.forward(e.LayerNorm.forward(x)); // (B, T, C)
    for (const layer of this.bert.encoder.layer.items) x = layer.forward(x, attentionMask ?? null);
    return x;
  }

  /** Masked-LM logits (B, T, V) of hidden states. */
  mlmLogits(hidden: Tensor): Tensor {
    if (!this.cls) throw new Error('HFBert: this model has no masked-LM head (cls.predictions)');
    const t = this.cls.predictions.transform;
    const h = t.LayerNorm.forward(act(this.config, t.dense.forward(hidden)));
    return this.bert.embeddings.word_embeddings.project(h, this.cls.predictions.bias);
  }

  /** Classification logits (B, num_labels): the pooled [CLS] state (dense + tanh), dropout, classifier. */
  classifyLogits(hidden: Tensor): Tensor {
    if (!this.classifier || !this.bert.pooler) throw new Error('HFBert: this model has no classification head (classifier)');
    const [B, , C] = hidden.shape as [number, number, number];
    const first = reshape(slice(hidden, 1, 0, 1), [B, C]);
    const pooled = tanh(this.bert.pooler.dense.forward(first));
    return this.classifier.forward(this.dropout.forward(pooled));
  }

  /** Mean cross-entropy of the masked-LM logits against labels (B, T), -100 ignored. */
  mlmLoss(ids: Tensor, labels: Tensor, attentionMask?: Tensor | null): { logits: Tensor; loss: Tensor } {
    const logits = this.mlmLogits(this.encode(ids, attentionMask));
    return { logits, loss: crossEntropy(logits, labels, { ignoreIndex: -100 }) };
  }
}
