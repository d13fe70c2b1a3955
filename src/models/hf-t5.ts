// Hugging Face config.json <-> T5Config for T5ForConditionalGeneration (model_type "t5"): the
// original T5 (v1.0: relu feed-forward, lm_head tied to the embedding) and T5 v1.1 / Flan-T5
// (gated-gelu, separate lm_head). Fields config.json leaves out take transformers' T5Config
// defaults (num_decoder_layers: num_layers; tie_word_embeddings: true; ...).
import { checkT5Config, type T5Config, type T5FeedForward } from './t5.js';

/** transformers' T5Config defaults (t5-small's architecture). */
const DEFAULTS: Record<string, unknown> = {
  vocab_size: 32128,
  d_model: 512,
  d_kv: 64,
  d_ff: 2048,
  num_layers: 6,
  num_heads: 8,
  relative_attention_num_buckets: 32,
  relative_attention_max_distance: 128,
  layer_norm_epsilon: 1e-6,
  feed_forward_proj: 'relu',
  tie_word_embeddings: true,
  pad_token_id: 0,
  eos_token_id: 1,
};

const FEED_FORWARD: readonly T5FeedForward[] = ['relu', 'gated-gelu'];

/** T5Config from a Hugging Face config.json object (model_type "t5"). */
export function t5ConfigFromHF(json: Record<string, unknown>): T5Config {
  const fail = (msg: string): never => {
    throw new Error(`t5ConfigFromHF: ${msg}`);
  };
  if (json['model_type'] !== 't5') {
    fail(`model_type ${JSON.stringify(json['model_type'])} is not 't5'${json['model_type'] === 'mt5' || json['model_type'] === 'umt5' ? ' (mT5 / umT5 are not supported)' : ''}`);
  }
  const j: Record<string, unknown> = { ...DEFAULTS };
  for (const [k, v] of Object.entries(json)) if (v !== undefined && v !== null) j[k] = v;
  const int = (k: string, min = 1): number => {
    const v = j[k];
    return typeof v === 'number' && Number.isInteger(v) && v >= min ? v : fail(`'${k}' must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  };
  const ff = j['feed_forward_proj'];
  if (typeof ff !== 'string' || !(FEED_FORWARD as readonly string[]).includes(ff)) {
    fail(`feed_forward_proj ${JSON.stringify(ff)} is not supported (supported: ${FEED_FORWARD.map((f) => `'${f}'`).join(', ')})`);
  }
  if (typeof j['tie_word_embeddings'] !== 'boolean') fail(`'tie_word_embeddings' must be true or false, got ${JSON.stringify(j['tie_word_embeddings'])}`);
  const eps = j['layer_norm_epsilon'];
  if (typeof eps !== 'number' || !(eps >= 0)) fail(`'layer_norm_epsilon' must be a number >= 0, got ${JSON.stringify(eps)}`);
  if (json['is_encoder_decoder'] === false) fail('is_encoder_decoder is false: only the encoder-decoder T5ForConditionalGeneration is supported');
  const numLayers = int('num_layers');
  const pad = int('pad_token_id', 0);
  const cfg: T5Config = {
    model_type: 't5',
    vocab_size: int('vocab_size'),
    d_model: int('d_model'),
    d_kv: int('d_kv'),
    d_ff: int('d_ff'),
    num_layers: numLayers,
    num_decoder_layers: j['num_decoder_layers'] === undefined ? numLayers : int('num_decoder_layers'),
    num_heads: int('num_heads'),
    relative_attention_num_buckets: int('relative_attention_num_buckets'),
    relative_attention_max_distance: int('relative_attention_max_distance'),
    layer_norm_epsilon: eps as number,
    feed_forward_proj: ff as T5FeedForward,
    tie_word_embeddings: j['tie_word_embeddings'] as boolean,
    pad_token_id: pad,
    eos_token_id: int('eos_token_id', 0),
    // T5 starts decoding at the pad id; transformers refuses a missing one, attn takes pad.
    decoder_start_token_id: j['decoder_start_token_id'] === undefined ? pad : int('decoder_start_token_id', 0),
  };
  try {
    return checkT5Config(cfg);
  } catch (e) {
    return fail((e as Error).message);
  }
}

/**
 * A Hugging Face config.json object for cfg. `base` (the config the model was loaded from)
 * keeps the fields attn does not model (dropout_rate, task_specific_params, torch_dtype, …);
 * the architecture fields are always written from cfg.
 */
export function t5ConfigToHF(cfg: T5Config, base: Record<string, unknown> = {}): Record<string, unknown> {
  const gated = cfg.feed_forward_proj === 'gated-gelu';
  return {
    ...base,
    architectures: ['T5ForConditionalGeneration'],
    model_type: 't5',
    is_encoder_decoder: true,
    vocab_size: cfg.vocab_size,
    d_model: cfg.d_model,
    d_kv: cfg.d_kv,
    d_ff: cfg.d_ff,
    num_layers: cfg.num_layers,
    num_decoder_layers: cfg.num_decoder_layers,
    num_heads: cfg.num_heads,
    relative_attention_num_buckets: cfg.relative_attention_num_buckets,
    relative_attention_max_distance: cfg.relative_attention_max_distance,
    layer_norm_epsilon: cfg.layer_norm_epsilon,
    feed_forward_proj: cfg.feed_forward_proj,
    // What transformers derives from feed_forward_proj (and writes).
    dense_act_fn: gated ? 'gelu_new' : 'relu',
    is_gated_act: gated,
    tie_word_embeddings: cfg.tie_word_embeddings,
    pad_token_id: cfg.pad_token_id,
    eos_token_id: cfg.eos_token_id,
    decoder_start_token_id: cfg.decoder_start_token_id,
  };
}
