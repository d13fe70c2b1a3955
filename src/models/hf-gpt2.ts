// Hugging Face GPT-2 interop: config.json fields and state-dict names/layouts, on plain
// {dtype, shape, data} entries (what safetensors reads and writes), so it runs anywhere.
// The differences from attn's layout:
//  - HF's GPT-2 uses Conv1D for attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj, whose
//    weight is stored [in, out] (y = x W + b); attn's Linear is [out, in] as torch.nn.Linear,
//    so those four are transposed on the way in and out.
//  - Names come with the `transformer.` prefix (GPT2LMHeadModel) or without it (GPT2Model,
//    e.g. the original `gpt2` upload); both load, and saving writes the prefix.
//  - attn.bias / attn.masked_bias are causal-mask buffers of old checkpoints: ignored.
//  - lm_head.weight is absent when tied to wte (and dropped if present).
import { refuseQuantized } from '../nn/quantized.js';
import type { TensorEntry } from '../io/safetensors.js';
import type { StateValue } from '../nn/module.js';
import { fullGPTConfig, GPT, gptConfig, type GPTConfig } from './gpt.js';

/** A tensor as read from or written to a checkpoint file. */
export interface HFEntry {
  /** safetensors dtype name ('F32', 'F16', …); float types arrive already decoded to numbers. */
  dtype?: string;
  shape: readonly number[];
  data: ArrayLike<number>;
}

const CONV1D = /^transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;
const MASK_BUFFER = /^transformer\.h\.\d+\.attn\.(bias|masked_bias)$/;
const FLOAT_DTYPES = new Set(['F32', 'F64', 'F16', 'BF16']);

const ACT_FROM_HF: Record<string, GPTConfig['activation']> = {
  gelu_new: 'gelu', // GPT-2's tanh approximation
  gelu_pytorch_tanh: 'gelu', // the same function, computed by PyTorch's kernel
  gelu_fast: 'gelu', // the same tanh formula, written differently
  gelu: 'gelu_exact', // erf
  relu: 'relu',
};

const ACT_TO_HF: Partial<Record<GPTConfig['activation'], string>> = { gelu: 'gelu_new', gelu_exact: 'gelu', relu: 'relu' };

/** attn's GPTConfig from a Hugging Face GPT-2 config.json object. */
export function gpt2ConfigFromHF(json: Record<string, unknown>): GPTConfig {
  const fail = (msg: string): never => {
    throw new Error(`gpt2ConfigFromHF: ${msg}`);
  };
  if (json['model_type'] !== undefined && json['model_type'] !== 'gpt2') fail(`model_type is '${String(json['model_type'])}', expected 'gpt2'`);
  const num = (key: string, fallback?: number): number => {
    const v = json[key] ?? fallback;
    if (typeof v !== 'number') return fail(`field '${key}' must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const n_embd = num('n_embd');
  const act = (json['activation_function'] ?? 'gelu_new') as string;
  const activation = ACT_FROM_HF[act] ?? fail(`activation_function '${act}' is not supported (known: ${Object.keys(ACT_FROM_HF).join(', ')})`);
  const nInner = json['n_inner'];
  if (nInner !== undefined && nInner !== null && nInner !== 4 * n_embd) fail(`n_inner ${String(nInner)} is not supported (attn's MLP is 4 * n_embd = ${4 * n_embd})`);
  if (json['scale_attn_weights'] === false) fail('scale_attn_weights: false is not supported');
  if (json['scale_attn_by_inverse_layer_idx'] === true) fail('scale_attn_by_inverse_layer_idx: true is not supported');
  if (json['add_cross_attention'] === true) fail('add_cross_attention: true is not supported');
  const tie = json['tie_word_embeddings'] ?? true;
  if (typeof tie !== 'boolean') fail(`tie_word_embeddings must be true or false, got ${JSON.stringify(tie)}`);
  return gptConfig({
    n_layer: num('n_layer'),
    n_head: num('n_head'),
    n_embd,
    block_size: num('n_positions', json['n_ctx'] as number | undefined),
    vocab_size: num('vocab_size'),
    // attn has one dropout rate (embeddings and residual branches); HF's default is 0.1.
    dropout: num('resid_pdrop', 0.1),
    bias: true,
    tie_embeddings: tie as boolean,
    pos_encoding: 'learned',
    norm_placement: 'pre',
    norm: 'layernorm',
    activation,
    layer_norm_epsilon: num('layer_norm_epsilon', 1e-5),
  });
}

/** A Hugging Face GPT-2 config.json object; throws for configs GPT-2's architecture cannot express. */
export function gpt2ConfigToHF(config: Partial<GPTConfig>): Record<string, unknown> {
  const cfg = gptConfig(config);
  const unsupported: string[] = [];
  if (cfg.pos_encoding !== 'learned') unsupported.push(`pos_encoding '${cfg.pos_encoding}' (GPT-2 has learned positions)`);
  if (cfg.norm_placement !== 'pre') unsupported.push(`norm_placement '${cfg.norm_placement}' (GPT-2 is pre-norm)`);
  if (cfg.norm !== 'layernorm') unsupported.push(`norm '${cfg.norm}' (GPT-2 uses LayerNorm)`);
  if (!cfg.bias) unsupported.push('bias: false (GPT-2 has biases)');
  const act = ACT_TO_HF[cfg.activation];
  if (!act) unsupported.push(`activation '${cfg.activation}'`);
  const full = fullGPTConfig(cfg);
  if (full.attention !== 'dense') unsupported.push(`attention '${full.attention}' (GPT-2 has dense attention)`);
  if (full.n_kv_head !== full.n_head) unsupported.push(`n_kv_head ${full.n_kv_head} (GPT-2 has ${full.n_head} key/value heads, one per query head)`);
  if (full.moe_experts > 0) unsupported.push(`moe_experts ${full.moe_experts} (GPT-2 has dense MLPs, no mixture of experts)`);
  if (unsupported.length) throw new Error(`gpt2ConfigToHF: not expressible as a Hugging Face GPT-2: ${unsupported.join(', ')}`);
  const out: Record<string, unknown> = {
    activation_function: act,
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: cfg.dropout,
    embd_pdrop: cfg.dropout,
    initializer_range: 0.02,
    layer_norm_epsilon: cfg.layer_norm_epsilon,
    model_type: 'gpt2',
    n_ctx: cfg.block_size,
    n_embd: cfg.n_embd,
    n_head: cfg.n_head,
    n_inner: null,
    n_layer: cfg.n_layer,
    n_positions: cfg.block_size,
    resid_pdrop: cfg.dropout,
    scale_attn_weights: true,
    tie_word_embeddings: cfg.tie_embeddings,
    vocab_size: cfg.vocab_size,
  };
  // <|endoftext|> in GPT-2's own vocabulary; unknown for other vocabularies.
  if (cfg.vocab_size === 50257) Object.assign(out, { bos_token_id: 50256, eos_token_id: 50256 });
  return out;
}

/** [rows, cols] row-major -> [cols, rows], keeping the array type (float32 stays float32). */
function transpose2d(data: ArrayLike<number>, rows: number, cols: number): Float32Array | Float64Array {
  const out = data instanceof Float32Array ? new Float32Array(rows * cols) : new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

function entriesOf<E>(entries: ReadonlyMap<string, E> | Record<string, E>): Iterable<[string, E]> {
  return entries instanceof Map ? entries.entries() : Object.entries(entries as Record<string, E>);
}

/**
 * HF GPT-2 tensors -> a state dict for GPT.loadStateDict (attn names, [out, in] Linear weights).
 * `tieEmbeddings` (default true) drops a redundant lm_head.weight.
 */
export function gpt2StateFromHF(
  entries: ReadonlyMap<string, HFEntry> | Record<string, HFEntry>,
  opts: { tieEmbeddings?: boolean } = {},
): Map<string, StateValue> {
  const tied = opts.tieEmbeddings ?? true;
  const out = new Map<string, StateValue>();
  for (const [rawName, e] of entriesOf(entries)) {
    const name = rawName.startsWith('transformer.') || rawName.startsWith('lm_head.') ? rawName : `transformer.${rawName}`;
    if (MASK_BUFFER.test(name)) continue;
    if (name === 'lm_head.weight' && tied) continue;
    if (e.dtype !== undefined && !FLOAT_DTYPES.has(e.dtype)) throw new Error(`gpt2StateFromHF: tensor '${rawName}' has dtype ${e.dtype}, expected a float type`);
    if (out.has(name)) throw new Error(`gpt2StateFromHF: tensor '${name}' appears both with and without the 'transformer.' prefix`);
    if (CONV1D.test(name)) {
      if (e.shape.length !== 2) throw new Error(`gpt2StateFromHF: Conv1D weight '${rawName}' must be 2-D [in, out], got [${e.shape.join(', ')}]`);
      const [inF, outF] = e.shape as [number, number];
      out.set(name, { shape: [outF, inF], data: transpose2d(e.data, inF, outF) });
    } else {
      out.set(name, { shape: e.shape, data: e.data });
    }
  }
  return out;
}

/**
 * A GPT's weights as HF GPT2LMHeadModel tensors ('transformer.'-prefixed names, Conv1D
 * [in, out] weights, no lm_head when tied, no mask buffers), F32 (F64 for float64 models).
 * `prefix: false` writes GPT2Model names (no 'transformer.'). Throws for non-GPT-2 configs.
 */
export function gpt2StateToHF(model: GPT, opts: { prefix?: boolean } = {}): Map<string, TensorEntry> {
  gpt2ConfigToHF(model.config); // refuses what HF's GPT-2 cannot hold
  refuseQuantized(model, 'saving a GPT-2 checkpoint');
  const prefix = opts.prefix ?? true;
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of model.stateDict()) {
    const dtype = t.dtype === 'float64' ? 'F64' : 'F32';
    const hfName = prefix || !name.startsWith('transformer.') ? name : name.slice('transformer.'.length);
    const values = t.data();
    if (CONV1D.test(name)) {
      const [outF, inF] = t.shape as [number, number];
      out.set(hfName, { dtype, shape: [inF, outF], data: transpose2d(values, outF, inF) });
    } else {
      out.set(hfName, { dtype, shape: [...t.shape], data: values });
    }
  }
  return out;
}
