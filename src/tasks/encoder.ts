// What the two encoder tasks (classification, masked-lm) share: their defaults (the recipe of
// docs/transfer.md), the BertConfig a training config describes, and checks.
import { ATTENTION_DEFAULTS, ATTENTION_FIELDS, type FullAttentionFields } from '../nn/attention-config.js';
import type { BertConfig } from '../models/bert.js';
import { EpochSampler } from '../data/sentences.js';
import type { Generator } from '../tensor/index.js';
import type { TrainingConfig } from '../train/config.js';

// vocab_size 4000 and, for fine-tuning, batches of 128 at 1e-3 for 1000 steps: the recipe of
// docs/transfer.md (80.0 % on SST-2 from scratch).
export const ENCODER_DEFAULTS: Partial<TrainingConfig> = {
  n_layer: 2, n_head: 4, n_embd: 128, n_inner: 512, dropout: 0.1, block_size: 64, pos_encoding: 'learned', norm_placement: 'pre', vocab_size: 4000,
  batch_size: 32, max_iters: 2000, learning_rate: 5e-4, min_lr: 0, warmup_iters: 100, lr_decay: 'linear', weight_decay: 0.01, grad_clip: 1,
  eval_interval: 250, log_interval: 10, beta2: 0.999,
};

export const ENCODER_ARCH = ['n_layer', 'n_head', 'n_embd', 'n_inner', 'block_size', 'pos_encoding', 'norm_placement', ...ATTENTION_FIELDS];

export function checkEncoder(cfg: TrainingConfig, problems: string[]): void {
  if (cfg.pos_encoding === 'rope') problems.push(`pos_encoding must be 'learned' or 'sinusoidal' for an encoder, got 'rope'`);
  if (cfg.max_iters === 0 && !(cfg.epochs > 0)) problems.push('max_iters or epochs must be positive');
}

/** The model fields of a BertConfig from a training config (attention fields only where they differ). */
export function encoderFields(cfg: TrainingConfig): Partial<BertConfig> {
  return {
    n_layer: cfg.n_layer, n_head: cfg.n_head, d_model: cfg.n_embd, d_ff: cfg.n_inner || 4 * cfg.n_embd, dropout: cfg.dropout, max_len: cfg.block_size,
    positions: cfg.pos_encoding as BertConfig['positions'], norm_placement: cfg.norm_placement as BertConfig['norm_placement'],
    ...Object.fromEntries(ATTENTION_FIELDS.filter((k) => cfg[k as keyof FullAttentionFields] !== ATTENTION_DEFAULTS[k as keyof FullAttentionFields]).map((k) => [k, cfg[k as keyof FullAttentionFields]])),
  };
}

/** Updates for the data: epochs over n examples when epochs > 0, else max_iters. */
export function itersFor(cfg: TrainingConfig, n: number): number {
  return cfg.epochs > 0 ? Math.max(1, Math.ceil((cfg.epochs * n) / cfg.batch_size)) : cfg.max_iters;
}

/** Shuffled epochs of batch_size example indices over n examples, as a task run's batch fields. */
export function epochBatches(cfg: TrainingConfig, n: number, g: Generator) {
  const sampler = new EpochSampler(n, cfg.batch_size, g);
  return {
    sampler,
    maxIters: itersFor(cfg, n),
    info: { examples: n },
    nextBatch: (): number[] => sampler.next(),
    sizeOf: (idx: number[]): number => idx.length,
  };
}
