// Hugging Face config.json <-> DecoderConfig for the llama, mistral, qwen2, qwen3 and phi
// families, with each family's defaults as transformers' configuration classes define them
// (a field absent from config.json takes the class default). Pure: no file access.
import type { RopeScaling } from '../nn/positional.js';
import { checkDecoderConfig, DECODER_FAMILIES, type DecoderConfig, type DecoderFamily } from './decoder.js';

/** architectures[0] -> model_type, for configs that omit model_type. */
const ARCHITECTURES: Record<string, DecoderFamily> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  PhiForCausalLM: 'phi',
};

/** The family's *ForCausalLM class name, which save() writes in `architectures`. */
export const ARCHITECTURE_OF: Record<DecoderFamily, string> = Object.fromEntries(Object.entries(ARCHITECTURES).map(([a, f]) => [f, a])) as Record<DecoderFamily, string>;

/** The Hugging Face model_type of a config.json object when it is one of the decoder families, else null. */
export function decoderFamilyOf(json: Record<string, unknown>): DecoderFamily | null {
  const t = json['model_type'];
  if (typeof t === 'string') return (DECODER_FAMILIES as readonly string[]).includes(t) ? (t as DecoderFamily) : null;
  const arch = Array.isArray(json['architectures']) ? String(json['architectures'][0]) : '';
  return ARCHITECTURES[arch] ?? null;
}

// transformers' defaults per family (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config, PhiConfig).
const DEFAULTS: Record<DecoderFamily, Record<string, unknown>> = {
  llama: { vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, max_position_embeddings: 2048, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, hidden_act: 'silu', bos_token_id: 1, eos_token_id: 2 },
  mistral: { attention_bias: false, vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 4096 * 32, rms_norm_eps: 1e-6, rope_theta: 10000, sliding_window: 4096, tie_word_embeddings: false, hidden_act: 'silu', bos_token_id: 1, eos_token_id: 2 },
  qwen2: { vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 10000, use_sliding_window: false, sliding_window: 4096, max_window_layers: 28, tie_word_embeddings: false, hidden_act: 'silu', bos_token_id: null, eos_token_id: null },
  qwen3: { vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, head_dim: 128, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, use_sliding_window: false, sliding_window: 4096, max_window_layers: 28, tie_word_embeddings: false, hidden_act: 'silu', bos_token_id: null, eos_token_id: null },
  phi: { vocab_size: 51200, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 24, num_attention_heads: 32, max_position_embeddings: 2048, layer_norm_eps: 1e-5, rope_theta: 10000, partial_rotary_factor: 0.5, qk_layernorm: false, tie_word_embeddings: false, hidden_act: 'gelu_new', bos_token_id: 1, eos_token_id: 2 },
};

function ropeScalingFromHF(v: unknown, fail: (m: string) => never): RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object') return fail(`rope_scaling must be an object or null, got ${JSON.stringify(v)}`);
  const o = v as Record<string, unknown>;
  const type = o['rope_type'] ?? o['type'];
  if (type === 'default') return null;
  const factor = o['factor'];
  if (typeof factor !== 'number' || !(factor >= 1)) return fail(`rope_scaling.factor must be a number >= 1, got ${JSON.stringify(factor)}`);
  if (type === 'linear' || type === 'dynamic') return { rope_type: type, factor };
  if (type === 'llama3') {
    const num = (k: string): number => {
      const x = o[k];
      return typeof x === 'number' && x > 0 ? x : fail(`rope_scaling.${k} must be a positive number for llama3 scaling, got ${JSON.stringify(x)}`);
    };
    const lo = num('low_freq_factor');
    const hi = num('high_freq_factor');
    if (!(hi > lo)) fail(`rope_scaling: high_freq_factor (${hi}) must exceed low_freq_factor (${lo})`);
    return { rope_type: 'llama3', factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position_embeddings: num('original_max_position_embeddings') };
  }
  return fail(`rope_scaling type '${String(type)}' is not supported (supported: default, linear, dynamic, llama3)`);
}

/** DecoderConfig from a Hugging Face config.json object of a llama, mistral, qwen2, qwen3 or phi model. */
export function decoderConfigFromHF(json: Record<string, unknown>): DecoderConfig {
  const fail = (msg: string): never => {
    throw new Error(`decoderConfigFromHF: ${msg}`);
  };
  const family = decoderFamilyOf(json) ?? fail(`model_type '${String(json['model_type'])}' is not a decoder family attn reads (known: ${DECODER_FAMILIES.join(', ')})`);
  const j: Record<string, unknown> = { ...DEFAULTS[family] };
  for (const [k, v] of Object.entries(json)) if (v !== undefined) j[k] = v;
  const int = (k: string): number => {
    const v = j[k];
    return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : fail(`'${k}' must be a positive integer, got ${JSON.stringify(v)}`);
  };
  const num = (k: string): number => (typeof j[k] === 'number' ? (j[k] as number) : fail(`'${k}' must be a number, got ${JSON.stringify(j[k])}`));
  const bool = (k: string): boolean => (typeof j[k] === 'boolean' ? (j[k] as boolean) : fail(`'${k}' must be true or false, got ${JSON.stringify(j[k])}`));
  const idOrNull = (k: string): number | null => (typeof j[k] === 'number' ? (j[k] as number) : null);
  const hidden = int('hidden_size');
  const heads = int('num_attention_heads');
  const kvHeads = j['num_key_value_heads'] === undefined || j['num_key_value_heads'] === null ? heads : int('num_key_value_heads');
  const headDim = j['head_dim'] === undefined || j['head_dim'] === null ? hidden / heads : int('head_dim');
  if (!Number.isInteger(headDim)) fail(`hidden_size ${hidden} is not divisible by num_attention_heads ${heads} (and no head_dim is given)`);
  const act = String(j['hidden_act']);
  const phi = family === 'phi';
  const hiddenAct = phi
    ? (act === 'gelu_new' || act === 'gelu_pytorch_tanh' || act === 'gelu_fast' ? 'gelu_new' : act === 'gelu' ? 'gelu' : fail(`hidden_act '${act}' is not supported for phi (gelu_new, gelu)`))
    : act === 'silu' || act === 'swish' ? 'silu' : fail(`hidden_act '${act}' is not supported for ${family} (silu)`);
  const maxPos = int('max_position_embeddings');
  const scaling = ropeScalingFromHF(j['rope_scaling'], fail);
  let window: number | null = null;
  let windowFrom = 0;
  if (family === 'mistral') window = j['sliding_window'] === null ? null : int('sliding_window');
  if ((family === 'qwen2' || family === 'qwen3') && j['use_sliding_window'] === true) {
    window = int('sliding_window');
    windowFrom = typeof j['max_window_layers'] === 'number' ? (j['max_window_layers'] as number) : 0;
  }
  const attentionBias = family === 'qwen2' ? true : phi ? true : bool('attention_bias');
  const eos = j['eos_token_id'];
  const cfg: DecoderConfig = {
    model_type: family,
    vocab_size: int('vocab_size'),
    hidden_size: hidden,
    intermediate_size: int('intermediate_size'),
    num_hidden_layers: int('num_hidden_layers'),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    max_position_embeddings: maxPos,
    norm_eps: num(phi ? 'layer_norm_eps' : 'rms_norm_eps'),
    rope_theta: num('rope_theta'),
    rope_scaling: scaling,
    partial_rotary_factor: phi ? num('partial_rotary_factor') : typeof j['partial_rotary_factor'] === 'number' ? (j['partial_rotary_factor'] as number) : 1,
    qkv_bias: attentionBias,
    o_bias: family === 'qwen2' ? false : attentionBias,
    mlp_bias: phi ? true : family === 'llama' ? bool('mlp_bias') : false,
    lm_head_bias: phi,
    tie_word_embeddings: bool('tie_word_embeddings'),
    hidden_act: hiddenAct,
    sliding_window: window,
    sliding_window_from: windowFrom,
    qk_norm: family === 'qwen3' ? true : phi ? bool('qk_layernorm') : false,
    block_size: scaling?.rope_type === 'dynamic' ? Math.floor(maxPos * scaling.factor) : maxPos,
    bos_token_id: idOrNull('bos_token_id'),
    eos_token_id: typeof eos === 'number' ? eos : Array.isArray(eos) && eos.every((e) => typeof e === 'number') ? (eos as number[]) : null,
  };
  try {
    return checkDecoderConfig(cfg);
  } catch (e) {
    return fail((e as Error).message);
  }
}

/**
 * A Hugging Face config.json object for cfg. `base` (the config the model was loaded from) keeps
 * the fields attn does not model (token ids, torch_dtype, …); the architecture fields are
 * always written from cfg.
 */
export function decoderConfigToHF(cfg: DecoderConfig, base: Record<string, unknown> = {}): Record<string, unknown> {
  const f = cfg.model_type;
  const out: Record<string, unknown> = { ...base };
  Object.assign(out, {
    architectures: [ARCHITECTURE_OF[f]],
    model_type: f,
    vocab_size: cfg.vocab_size,
    hidden_size: cfg.hidden_size,
    intermediate_size: cfg.intermediate_size,
    num_hidden_layers: cfg.num_hidden_layers,
    num_attention_heads: cfg.num_attention_heads,
    num_key_value_heads: cfg.num_key_value_heads,
    head_dim: cfg.head_dim,
    max_position_embeddings: cfg.max_position_embeddings,
    rope_theta: cfg.rope_theta,
    rope_scaling: cfg.rope_scaling,
    hidden_act: f === 'phi' ? cfg.hidden_act : 'silu',
    tie_word_embeddings: cfg.tie_word_embeddings,
    bos_token_id: cfg.bos_token_id,
    eos_token_id: cfg.eos_token_id,
  });
  if (f === 'phi') Object.assign(out, { layer_norm_eps: cfg.norm_eps, partial_rotary_factor: cfg.partial_rotary_factor, qk_layernorm: cfg.qk_norm });
  else out['rms_norm_eps'] = cfg.norm_eps;
  if (f === 'llama') Object.assign(out, { attention_bias: cfg.qkv_bias, mlp_bias: cfg.mlp_bias });
  if (f === 'qwen3') out['attention_bias'] = cfg.qkv_bias;
  if (f === 'mistral') out['sliding_window'] = cfg.sliding_window;
  if (f === 'qwen2' || f === 'qwen3') {
    out['use_sliding_window'] = cfg.sliding_window !== null;
    if (cfg.sliding_window !== null) Object.assign(out, { sliding_window: cfg.sliding_window, max_window_layers: cfg.sliding_window_from });
  }
  return out;
}
