// Named training configurations: partial configs in the one vocabulary (src/train/config.ts),
// each for a task. `attn train --preset NAME` picks the task from the preset.
import type { TaskName, TrainingConfig } from './config.js';

type Preset = Partial<TrainingConfig>;

/**
 * nanoGPT's config/train_shakespeare_char.py: a 10.7M-parameter character model ("baby GPT")
 * that reaches val loss ≈ 1.47 after 5000 iterations. Meant for a fast machine.
 */
const SHAKESPEARE_CHAR: Preset = {
  out_dir: 'out/shakespeare-char',
  dataset: 'data/shakespeare_char',
  eval_interval: 250, // it overfits, so evaluate often
  eval_iters: 200,
  log_interval: 10,
  always_save_checkpoint: false, // only save when val improves
  gradient_accumulation_steps: 1,
  batch_size: 64,
  block_size: 256,
  n_layer: 6,
  n_head: 6,
  n_embd: 384,
  dropout: 0.2,
  bias: false,
  learning_rate: 1e-3, // small networks can take a higher rate
  max_iters: 5000,
  lr_decay_iters: 5000, // usually max_iters
  min_lr: 1e-4, // learning_rate / 10
  beta2: 0.99, // a little larger, since few tokens per iteration
  warmup_iters: 100,
  weight_decay: 0.1,
  grad_clip: 1.0,
};

/**
 * nanoGPT README's CPU recipe for the same data (val loss ≈ 1.88 after 2000 iterations, a
 * few minutes on a laptop): 0.8M parameters, 768 tokens per iteration. The learning rate is
 * twice nanoGPT's (2e-3, decaying to 2e-4): with 1e-3 both attn and PyTorch ended near 1.89-1.90
 * here, with 2e-3 attn reached 1.83 (docs/benchmarks.md).
 */
const SHAKESPEARE_CHAR_TINY: Preset = {
  ...SHAKESPEARE_CHAR,
  out_dir: 'out/shakespeare-char-tiny',
  eval_iters: 20,
  log_interval: 10,
  block_size: 64,
  batch_size: 12,
  n_layer: 4,
  n_head: 4,
  n_embd: 128,
  max_iters: 2000,
  lr_decay_iters: 2000,
  learning_rate: 2e-3,
  min_lr: 2e-4,
  dropout: 0.0,
};

/**
 * The 2017 encoder-decoder, shrunk for a 2-core CPU, on Multi30k German → English: 3+3 layers,
 * 256 wide, 4 heads, MLP 1024, a shared 8000-token BPE, ~4096 tokens per batch. The warmup is
 * short and the peak rate ≈ 1.3e-3 (Noam with factor 0.3, warmup 200) because a CPU hour holds
 * only a few hundred updates; stops after max_minutes of wall-clock time.
 */
const MULTI30K_DE_EN: Preset = {
  out_dir: 'out/multi30k-de-en',
  dataset: 'data/multi30k',
  src_lang: 'de',
  tgt_lang: 'en',
  vocab_size: 8000,
  n_layer_enc: 3, n_layer_dec: 3, n_head: 4, n_embd: 256, n_inner: 1024, dropout: 0.1, label_smoothing: 0.1, block_size: 128,
  lr_decay: 'noam',
  learning_rate: 0.3 / Math.sqrt(256 * 200),
  warmup_iters: 200,
  beta1: 0.9,
  beta2: 0.98,
  eps: 1e-9,
  grad_clip: 1.0,
  max_tokens: 4096,
  max_iters: 100000,
  max_minutes: 60,
  eval_interval: 50,
  log_interval: 5,
};

/** SST-2 sentence classification from scratch: the recipe of docs/transfer.md (about 80 %). */
const SST2: Preset = { out_dir: 'out/sst2', train_file: 'data/sst2/train.tsv', dev_file: 'data/sst2/dev.tsv' };

/** Every preset with its task. */
export const TASK_PRESETS: Readonly<Record<string, { task: TaskName; config: Readonly<Preset> }>> = Object.freeze({
  'shakespeare-char': { task: 'lm', config: Object.freeze(SHAKESPEARE_CHAR) },
  'shakespeare-char-tiny': { task: 'lm', config: Object.freeze(SHAKESPEARE_CHAR_TINY) },
  'multi30k-de-en': { task: 'translation', config: Object.freeze(MULTI30K_DE_EN) },
  sst2: { task: 'classification', config: Object.freeze(SST2) },
});

/** The language-model presets. */
export const PRESETS: Readonly<Record<string, Readonly<Preset>>> = Object.freeze(
  Object.fromEntries(Object.entries(TASK_PRESETS).filter(([, p]) => p.task === 'lm').map(([n, p]) => [n, p.config])),
);

export function presetNames(): string[] {
  return Object.keys(TASK_PRESETS);
}

/** A copy of the named preset's fields and its task; throws listing the known names. */
export function taskPreset(name: string): { task: TaskName; config: Preset } {
  const p = Object.hasOwn(TASK_PRESETS, name) ? TASK_PRESETS[name] : undefined;
  if (!p) throw new Error(`unknown preset '${name}' (known: ${presetNames().join(', ')})`);
  return { task: p.task, config: { ...p.config } };
}

/** A copy of the named language-model preset's fields. */
export function preset(name: string): Preset {
  const p = taskPreset(name);
  if (p.task !== 'lm') throw new Error(`preset '${name}' is for ${p.task} training, not a language model`);
  return p.config;
}

/** A copy of the named translation preset's fields. */
export function seq2seqPreset(name: string): Preset {
  const p = taskPreset(name);
  if (p.task !== 'translation') throw new Error(`preset '${name}' is for ${p.task} training, not translation`);
  return p.config;
}
