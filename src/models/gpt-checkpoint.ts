// Reading a GPT checkpoint directory (attn's own, or a Hugging Face GPT-2 one) into a model:
// the Node side of checkpoint-format.ts. Inference and training both load through here.
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError, checkShapes, loadCheckpoint, MODEL_FILE, type LoadedCheckpoint } from '../io/checkpoint.js';
import { buildQuantized } from '../nn/layers.js';
import { buildDeferred } from '../nn/deferred.js';
import type { Module } from '../nn/module.js';
import { quantizedWeights, settleQuantized, type QuantizeSpec } from '../nn/quantized.js';
import { quantize, type DType } from '../tensor/index.js';
import { canonicalCheckpointTensors, checkpointShapes, checkpointTensorsToState, gptConfigFromJson, nonFloatTensorProblem } from './checkpoint-format.js';
import { GPT, type GPTConfig } from './gpt.js';

export { checkpointConfigJson, checkpointTensorsToState, modelToCheckpointTensors } from './checkpoint-format.js';

/** The GPTConfig of a checkpoint's config.json: attn's own under "attn", else a Hugging Face GPT-2 config. */
export function gptConfigFromCheckpointJson(json: Record<string, unknown>, path = 'config.json'): GPTConfig {
  const kinds: Record<string, string> = {
    attn_seq2seq: 'an encoder-decoder translation model (attn translate reads it)', attn_bert: 'a BERT-style encoder (attn eval classify reads it)',
    bert: 'a Hugging Face BERT encoder (attn.load reads it)', t5: 'a Hugging Face T5 encoder-decoder (attn.load reads it)',
  };
  const t = json['model_type'];
  if (typeof t === 'string' && kinds[t]) throw new CheckpointError(path, `holds ${kinds[t]}, not a GPT language model (model_type '${t}')`);
  try {
    return gptConfigFromJson(json);
  } catch (e) {
    throw new CheckpointError(path, (e as Error).message);
  }
}

/** Loads a checkpoint's weights into a GPT built from its config (errors name the file). */
export function loadGPTTensors(model: Module, ckpt: LoadedCheckpoint): void {
  const file = join(ckpt.dir, MODEL_FILE);
  // GPT2Model checkpoints (no 'transformer.' prefix) and tied lm_head copies, as HF writes them.
  const expected = checkpointShapes(model);
  const tensors = canonicalCheckpointTensors(ckpt.tensors, !expected.has('lm_head.weight'));
  checkShapes(expected, tensors, file);
  const problem = nonFloatTensorProblem(tensors);
  if (problem !== null) throw new CheckpointError(file, problem);
  const state = checkpointTensorsToState(tensors);
  // Matrices of a model built quantized are quantized from the host copy: the backend never
  // holds them in float (its memory does not shrink once grown).
  for (const [name, q] of quantizedWeights(model)) {
    const data = (state.get(name) as { readonly data: ArrayLike<number> }).data;
    q.assign(quantize(data instanceof Float32Array ? data : Float32Array.from(data), q.N, q.K, q.format));
    state.delete(name);
  }
  model.loadStateDict(state);
}

export interface LoadedGPT {
  model: GPT;
  config: GPTConfig;
  checkpoint: LoadedCheckpoint;
}

/** A GPT checkpoint directory (attn's or Hugging Face GPT-2's) as a model in eval mode;
 *  `quantize`: its matrices held as int8/int4, built so and quantized as they load. */
export async function loadGPTCheckpoint(dir: string, opts: { backend?: Backend; dtype?: DType; requireOptimizer?: boolean; quantize?: QuantizeSpec; deferred?: boolean } = {}): Promise<LoadedGPT> {
  const ckpt = await loadCheckpoint(dir, { requireOptimizer: opts.requireOptimizer });
  const config = gptConfigFromCheckpointJson(ckpt.config, join(ckpt.dir, 'config.json'));
  const build = (): GPT => new GPT(config, { backend: opts.backend, dtype: opts.dtype, init: false });
  const spec = opts.quantize;
  // deferred: the weights are noted, not written (src/nn/deferred.ts); the caller gives them values.
  const model = spec ? buildQuantized(spec, build) : opts.deferred ? buildDeferred(build) : build();
  if (spec) settleQuantized(model, spec);
  try {
    loadGPTTensors(model, ckpt);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model: model.eval(), config, checkpoint: ckpt };
}
