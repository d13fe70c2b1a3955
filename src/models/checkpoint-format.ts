// The GPT checkpoint format (config.json + model.safetensors in the Hugging Face GPT-2 layout),
// as pure functions on parsed JSON and tensors: no file system, so the trainer (Node) and the
// URL loader (browsers) share one definition of the layout.
import { quantizedWeights, refuseQuantized } from '../nn/quantized.js';
import type { LoadedTensor, TensorEntry } from '../io/safetensors.js';
import type { Module, StateValue } from '../nn/module.js';
import { gptConfig, type GPTConfig } from './gpt.js';
import { gpt2ConfigFromHF, gpt2ConfigToHF } from './hf-gpt2.js';

// Hugging Face GPT-2 stores these as Conv1D weights, [in, out]; attn's Linear is [out, in].
// c_fc2 (SwiGLU's second input projection, not in GPT-2) follows its sibling c_fc.
export const CONV1D = /^transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_fc2|mlp\.c_proj)\.weight$/;

function transpose2d(data: ArrayLike<number>, rows: number, cols: number, like: ArrayLike<number>): Float32Array | Float64Array {
  const out = like instanceof Float64Array ? new Float64Array(rows * cols) : new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c]!;
  return out;
}

/**
 * A GPT's weights under Hugging Face GPT-2 names and layouts ('transformer.'-prefixed, Conv1D
 * [in, out] block weights, no lm_head when tied). For GPT-2-expressible configs this is exactly
 * what GPT2LMHeadModel loads; other variants use the same scheme for their extra tensors.
 */
export function modelToCheckpointTensors(model: Module): Map<string, TensorEntry> {
  refuseQuantized(model, 'saving a checkpoint');
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of model.stateDict()) {
    const dtype = t.dtype === 'float64' ? 'F64' : 'F32';
    const values = t.data();
    if (CONV1D.test(name) && t.ndim === 2) {
      const [o, i] = t.shape as [number, number];
      out.set(name, { dtype, shape: [i, o], data: transpose2d(values, o, i, values) });
    } else {
      out.set(name, { dtype, shape: [...t.shape], data: values });
    }
  }
  return out;
}

/** The inverse of modelToCheckpointTensors: a state dict for GPT.loadStateDict. */
export function checkpointTensorsToState(tensors: ReadonlyMap<string, LoadedTensor>): Map<string, StateValue> {
  const out = new Map<string, StateValue>();
  for (const [name, e] of tensors) {
    if (CONV1D.test(name) && e.shape.length === 2) {
      const [i, o] = e.shape as [number, number];
      out.set(name, { shape: [o, i], data: transpose2d(e.data, i, o, e.data) });
    } else {
      out.set(name, { shape: e.shape, data: e.data });
    }
  }
  return out;
}

/** Shapes modelToCheckpointTensors writes, for checkShapes. */
export function checkpointShapes(model: Module): Map<string, readonly number[]> {
  const out = new Map<string, readonly number[]>();
  for (const [name, t] of model.stateDict()) out.set(name, CONV1D.test(name) && t.ndim === 2 ? [t.shape[1]!, t.shape[0]!] : [...t.shape]);
  // A model built quantized holds its matrices outside the state dict; the file has them as floats.
  for (const [name, q] of quantizedWeights(model)) out.set(name, CONV1D.test(name) ? [q.K, q.N] : [q.N, q.K]);
  return out;
}

/**
 * A checkpoint's tensors under GPT's state-dict names, as Hugging Face writes them too:
 * GPT2Model names (no 'transformer.' prefix) get it, old causal-mask buffers are dropped, and so
 * is lm_head.weight when `tied` (a copy of wte).
 */
export function canonicalCheckpointTensors(tensors: ReadonlyMap<string, LoadedTensor>, tied: boolean): Map<string, LoadedTensor> {
  const out = new Map<string, LoadedTensor>();
  for (const [name, t] of tensors) {
    if (/^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$/.test(name)) continue;
    const full = name.startsWith('transformer.') || name.startsWith('lm_head.') ? name : `transformer.${name}`;
    if (full === 'lm_head.weight' && tied) continue;
    out.set(full, t);
  }
  return out;
}

/** The first tensor that is not of a float type, as a problem message; null when all are. */
export function nonFloatTensorProblem(tensors: ReadonlyMap<string, LoadedTensor>): string | null {
  for (const [name, t] of tensors) {
    if (t.dtype !== 'F32' && t.dtype !== 'F64' && t.dtype !== 'F16' && t.dtype !== 'BF16') return `tensor '${name}' has dtype ${t.dtype}, expected a float type`;
  }
  return null;
}

/**
 * config.json: the Hugging Face GPT-2 config when the variant is expressible in it (so the
 * directory loads in transformers), always with attn's full GPTConfig under "attn".
 */
export function checkpointConfigJson(config: GPTConfig): Record<string, unknown> {
  let hf: Record<string, unknown>;
  try {
    // gpt2ConfigToHF refuses what GPT-2 cannot express (attention variants, MoE, ...).
    hf = gpt2ConfigToHF(config);
  } catch {
    hf = { architectures: ['AttnGPT'], model_type: 'attn_gpt' };
  }
  return { ...hf, attn: { ...config } };
}

/** The GPTConfig of a checkpoint's config.json: attn's own under "attn", else a Hugging Face GPT-2 config. */
export function gptConfigFromJson(json: Record<string, unknown>): GPTConfig {
  const attn = json['attn'];
  if (attn !== undefined) {
    if (attn === null || typeof attn !== 'object' || Array.isArray(attn)) throw new Error('"attn" must be an object');
    return gptConfig(attn as Partial<GPTConfig>);
  }
  return gpt2ConfigFromHF(json);
}
