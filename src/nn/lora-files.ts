// The Node edge of LoRA: an adapter directory holds adapter_model.safetensors (only the
// lora_A / lora_B tensors) and adapter_config.json (PEFT's field names, plus `modules`, the
// exact names of the adapted layers, and `base_model`, what the adapters were trained on).
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exists, readSafetensorsFile, writeFileAtomic, writeSafetensorsFile } from '../io/files.js';
import { applyLora, loadAdapterState, peftAdapterState, removeLora, type LoraHandle } from './lora.js';
import type { Module } from './module.js';

export { ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE, adapterConfig, type AdapterConfig, type SaveAdaptersOptions } from './lora-config.js';
import { adapterConfig, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, type AdapterConfig, type SaveAdaptersOptions } from './lora-config.js';

/** Writes `dir`/adapter_model.safetensors (PEFT's tensor names) and `dir`/adapter_config.json (atomically each). */
export async function saveAdapters(handle: LoraHandle, dir: string, opts: SaveAdaptersOptions = {}): Promise<void> {
  const config = adapterConfig(handle, opts);
  await mkdir(dir, { recursive: true });
  await writeSafetensorsFile(join(dir, ADAPTER_WEIGHTS_FILE), peftAdapterState(handle), { format: 'pt' });
  await writeFileAtomic(join(dir, ADAPTER_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
}

export interface LoadAdaptersOptions {
  /** Overrides the saved lora_dropout (e.g. 0 for inference). */
  dropout?: number;
}

/**
 * Applies the adapters saved in `dir` to `model` (applyLora with the saved rank, alpha and
 * targets, then their weights) and returns the handle. On any error the model is left as it was.
 */
export async function loadAdapters(model: Module, dir: string, opts: LoadAdaptersOptions = {}): Promise<LoraHandle> {
  const cfgPath = join(dir, ADAPTER_CONFIG_FILE);
  const weightsPath = join(dir, ADAPTER_WEIGHTS_FILE);
  for (const p of [cfgPath, weightsPath]) if (!(await exists(p))) throw new Error(`loadAdapters: ${p} does not exist`);
  let raw: Partial<AdapterConfig>;
  try {
    raw = JSON.parse(await readFile(cfgPath, 'utf8')) as Partial<AdapterConfig>;
  } catch (e) {
    throw new Error(`loadAdapters: ${cfgPath}: ${(e as Error).message}`);
  }
  if (raw.peft_type !== undefined && raw.peft_type !== 'LORA') throw new Error(`loadAdapters: ${cfgPath}: peft_type is '${String(raw.peft_type)}', only 'LORA' is supported`);
  if (raw.fan_in_fan_out) throw new Error(`loadAdapters: ${cfgPath}: fan_in_fan_out adapters (Conv1D layouts) are not supported`);
  const tm = raw.target_modules;
  const targets = typeof tm === 'string' ? new RegExp(`^(?:${tm})$`) : Array.isArray(tm) && tm.length ? tm : raw.modules;
  if (!targets || typeof raw.r !== 'number') throw new Error(`loadAdapters: ${cfgPath} needs r and target_modules`);
  if (raw.modules) {
    const names = new Set(model.namedModules().map(([n]) => n));
    const missing = raw.modules.filter((n) => !names.has(n));
    if (missing.length) throw new Error(`loadAdapters: ${dir} adapts modules this model does not have: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`);
  }
  const weights = (await readSafetensorsFile(weightsPath)).tensors;
  const handle = applyLora(model, {
    rank: raw.r,
    alpha: raw.lora_alpha ?? raw.r,
    targets,
    dropout: opts.dropout ?? raw.lora_dropout ?? 0,
    seed: raw.seed ?? 0,
    init: raw.init_lora_weights === 'gaussian' ? 'gaussian' : 'kaiming',
  });
  try {
    if (raw.modules) {
      const got = handle.layers.map((l) => l.name);
      if (got.length !== raw.modules.length || got.some((n, i) => n !== raw.modules![i])) {
        throw new Error(`target_modules select ${got.length} layers in this model, the adapters were saved for ${raw.modules.length}: ${raw.modules.slice(0, 5).join(', ')}${raw.modules.length > 5 ? ', …' : ''}`);
      }
    }
    loadAdapterState(handle, weights);
  } catch (e) {
    removeLora(handle);
    throw new Error(`loadAdapters ${dir}: ${(e as Error).message}`);
  }
  return handle;
}
