// Reading a GPT checkpoint directory (attn's own, or a Hugging Face GPT-2 one) into a model:
// the Node side of checkpoint-format.ts. Inference and training both load through here.
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError, checkShapes, loadCheckpoint, MODEL_FILE, type LoadedCheckpoint } from '../io/checkpoint.js';
import type { Module } from '../nn/module.js';
import type { DType } from '../tensor/index.js';
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
  model.loadStateDict(checkpointTensorsToState(tensors));
}

export interface LoadedGPT {
  model: GPT;
  config: GPTConfig;
  checkpoint: LoadedCheckpoint;
}

/** A GPT checkpoint directory (attn's or Hugging Face GPT-2's) as a model in eval mode. */
export async function loadGPTCheckpoint(dir: string, opts: { backend?: Backend; dtype?: DType; requireOptimizer?: boolean } = {}): Promise<LoadedGPT> {
  const ckpt = await loadCheckpoint(dir, { requireOptimizer: opts.requireOptimizer });
  const config = gptConfigFromCheckpointJson(ckpt.config, join(ckpt.dir, 'config.json'));
  const model = new GPT(config, { backend: opts.backend, dtype: opts.dtype, init: false });
  try {
    loadGPTTensors(model, ckpt);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model: model.eval(), config, checkpoint: ckpt };
}
