// The Node edge of T5: a Hugging Face T5ForConditionalGeneration directory (config.json, then
// model.safetensors or the shards model.safetensors.index.json lists; float32, float16 or
// bfloat16 tensors) read into a T5Model, and written back in the same layout.
//
// Loading streams, as hf-decoder-files.ts: every shard's header is checked against the model
// first (a missing, unexpected or mis-shaped tensor is refused, naming it and both shapes),
// then tensors are read one at a time straight into the model's parameters.
// transformers files may hold encoder.embed_tokens.weight and decoder.embed_tokens.weight (the
// stacks' references to `shared`) and, for tied models, lm_head.weight: they are copies, checked
// for shape and skipped (a file with only an embed_tokens copy and no shared.weight loads
// `shared` from the copy). Saving writes shared.weight only, as save_pretrained does.
import { refuseQuantized } from '../nn/quantized.js';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError } from '../io/checkpoint.js';
import { writeFileAtomic, writeSafetensorsFile } from '../io/files.js';
import type { TensorEntry } from '../io/safetensors.js';
import { noGrad, to, type DType, type Tensor } from '../tensor/index.js';
import { readHFConfig, streamWeightsInto, weightFiles } from './hf-decoder-files.js';
import { t5ConfigFromHF, t5ConfigToHF } from './hf-t5.js';
import { T5Model, type T5Config } from './t5.js';

export interface LoadedT5 {
  model: T5Model;
  config: T5Config;
  /** config.json as read (saveT5Dir keeps its other fields). */
  hfConfig: Record<string, unknown>;
}

/** Copies of shared.weight that transformers files may hold. */
const EMBED_COPIES = ['encoder.embed_tokens.weight', 'decoder.embed_tokens.weight'];

/** Streams the tensors of `files` into `model` (headers first, every name and shape checked). */
export async function streamT5WeightsInto(model: T5Model, files: string[]): Promise<void> {
  const tied = model.config.tie_word_embeddings;
  await streamWeightsInto(model, files, (n) => (EMBED_COPIES.includes(n) || (tied && n === 'lm_head.weight') ? { copyOf: 'shared.weight' } : n), 't5 model');
}

/** Loads a Hugging Face T5ForConditionalGeneration directory (model_type "t5"), in eval mode. */
export async function loadT5Dir(dir: string, opts: { backend?: Backend; dtype?: DType } = {}): Promise<LoadedT5> {
  const hfConfig = await readHFConfig(dir);
  let config: T5Config;
  try {
    config = t5ConfigFromHF(hfConfig);
  } catch (e) {
    throw new CheckpointError(join(dir, 'config.json'), (e as Error).message);
  }
  const files = await weightFiles(dir);
  const model = new T5Model(config, { backend: opts.backend, dtype: opts.dtype, init: false });
  try {
    await streamT5WeightsInto(model, files);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model: model.eval(), config, hfConfig };
}

export interface SaveT5Options {
  /** config.json fields to keep (the loaded one's). */
  hfConfig?: Record<string, unknown>;
  /** Tensor dtype in the file (default float32; half types are rounded to nearest even). */
  dtype?: 'float32' | 'bfloat16' | 'float16';
}

const FILE_DTYPE = { float32: 'F32', bfloat16: 'BF16', float16: 'F16' } as const;

/** Writes config.json and model.safetensors as transformers' save_pretrained does (atomic per file). */
export async function saveT5Dir(model: T5Model, dir: string, opts: SaveT5Options = {}): Promise<void> {
  const dtype = opts.dtype ?? 'float32';
  refuseQuantized(model, 'saveT5Dir');
  const entries = new Map<string, TensorEntry>();
  for (const [name, t] of model.stateDict()) entries.set(name, { dtype: FILE_DTYPE[dtype], shape: [...t.shape], data: float32Values(t) });
  const config = t5ConfigToHF(model.config, opts.hfConfig);
  config['torch_dtype'] = dtype;
  await mkdir(dir, { recursive: true });
  await writeSafetensorsFile(join(dir, 'model.safetensors'), entries, { format: 'pt' });
  await writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

/** A parameter's values as float32 numbers (half-stored weights widened, not their bits). */
function float32Values(t: Tensor): Float32Array {
  if (t.dtype === 'float16' || t.dtype === 'bfloat16') {
    return noGrad(() => {
      const w = to(t, 'float32');
      const v = Float32Array.from(w.data());
      w.dispose();
      return v;
    });
  }
  return Float32Array.from(t.data());
}
