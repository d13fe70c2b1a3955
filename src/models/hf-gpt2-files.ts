// The Node edge of the Hugging Face GPT-2 interop: a model directory holds config.json and
// model.safetensors (or shards listed in model.safetensors.index.json).
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { exists, readSafetensorsFile, writeFileAtomic, writeSafetensorsFile } from '../io/files.js';
import type { LoadedTensor } from '../io/safetensors.js';
import type { DType } from '../tensor/index.js';
import { GPT } from './gpt.js';
import { gpt2ConfigFromHF, gpt2ConfigToHF, gpt2StateFromHF, gpt2StateToHF } from './hf-gpt2.js';

export interface LoadHFOptions {
  backend?: Backend;
  dtype?: DType;
}

async function readWeights(dir: string): Promise<Map<string, LoadedTensor>> {
  const single = join(dir, 'model.safetensors');
  if (await exists(single)) return (await readSafetensorsFile(single)).tensors;
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (!(await exists(indexPath))) {
    throw new Error(`loadHFGPT2: ${dir} has neither model.safetensors nor model.safetensors.index.json (only safetensors weights are read, not pytorch_model.bin)`);
  }
  const index = JSON.parse(await readFile(indexPath, 'utf8')) as { weight_map?: Record<string, string> };
  const files = [...new Set(Object.values(index.weight_map ?? {}))];
  const all = new Map<string, LoadedTensor>();
  for (const f of files) for (const [k, v] of (await readSafetensorsFile(join(dir, f))).tensors) all.set(k, v);
  return all;
}

/** Loads a Hugging Face GPT-2 directory into a GPT, in eval mode (like from_pretrained). */
export async function loadHFGPT2(dir: string, opts: LoadHFOptions = {}): Promise<GPT> {
  const json = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const cfg = gpt2ConfigFromHF(json);
  const weights = await readWeights(dir);
  const model = new GPT(cfg, { backend: opts.backend, dtype: opts.dtype, init: false });
  try {
    model.loadStateDict(gpt2StateFromHF(weights, { tieEmbeddings: cfg.tie_embeddings }));
  } catch (e) {
    model.dispose();
    throw new Error(`loadHFGPT2 ${dir}: ${(e as Error).message}`);
  }
  return model.eval();
}

/** Writes config.json and model.safetensors that Hugging Face's GPT2LMHeadModel loads. */
export async function saveHFGPT2(model: GPT, dir: string): Promise<void> {
  const config = gpt2ConfigToHF(model.config);
  await mkdir(dir, { recursive: true });
  await writeSafetensorsFile(join(dir, 'model.safetensors'), gpt2StateToHF(model), { format: 'pt' });
  await writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}
