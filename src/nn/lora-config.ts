// adapter_config.json as a pure function of a LoRA handle (no file system), so the Node edge
// (lora-files.ts) and a browser page write the same adapter directory.
import type { LoraHandle } from './lora.js';
import type { Module } from './module.js';

export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';

/** adapter_config.json. PEFT's fields first; `modules`, `seed`, `base_model` are attn's. */
export interface AdapterConfig {
  peft_type: 'LORA';
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  /** Module-name patterns, or (a string) a regular expression that must match a whole name. */
  target_modules: string[] | string;
  bias: 'none';
  fan_in_fan_out: boolean;
  init_lora_weights: true | 'gaussian';
  base_model_name_or_path: string | null;
  /** PEFT's task type (CAUSAL_LM for language models). */
  task_type?: string;
  /** The dotted names of the adapted Linear layers. */
  modules?: string[];
  seed?: number;
  base_model?: { class: string; num_parameters: number; dtype?: string; config?: unknown };
  library?: string;
}

export interface SaveAdaptersOptions {
  /** Recorded as base_model_name_or_path (e.g. 'gpt2' or a checkpoint path). */
  baseModel?: string;
  /** PEFT's task_type, e.g. 'CAUSAL_LM'. */
  taskType?: string;
}

/** The config saveAdapters writes for a handle. */
export function adapterConfig(handle: LoraHandle, opts: SaveAdaptersOptions = {}): AdapterConfig {
  handle.check('adapterConfig');
  const t = handle.targets;
  const adapterValues = handle.trainableParameters().reduce((n, p) => n + p.size, 0);
  const first = handle.model.parameters()[0];
  const modelConfig = (handle.model as Module & { config?: unknown }).config;
  return {
    peft_type: 'LORA',
    r: handle.rank,
    lora_alpha: handle.alpha,
    lora_dropout: handle.dropout,
    // A RegExp is searched for in a name; PEFT full-matches a string, hence the .* on both sides.
    target_modules: t instanceof RegExp ? `.*(?:${t.source}).*` : [...t],
    bias: 'none',
    fan_in_fan_out: false,
    init_lora_weights: handle.init === 'gaussian' ? 'gaussian' : true,
    base_model_name_or_path: opts.baseModel ?? null,
    ...(opts.taskType ? { task_type: opts.taskType } : {}),
    modules: handle.layers.map((l) => l.name),
    seed: handle.seed,
    base_model: {
      class: handle.model.constructor.name,
      num_parameters: handle.model.numParameters() - adapterValues,
      ...(first ? { dtype: first.dtype } : {}),
      ...(modelConfig && typeof modelConfig === 'object' ? { config: modelConfig } : {}),
    },
    library: 'attn',
  };
}
