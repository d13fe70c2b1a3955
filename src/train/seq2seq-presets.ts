// Named configurations for trainSeq2Seq (partial configs over SEQ2SEQ_TRAIN_DEFAULTS).
import { SEQ2SEQ_SMALL_MODEL, type Seq2SeqTrainConfig } from './seq2seq-trainer.js';

/**
 * The 2017 encoder-decoder, shrunk for a 2-core CPU, on Multi30k German → English: 3+3 layers,
 * d_model 256, 4 heads, d_ff 1024, a shared 8000-token BPE, ~4096 tokens per batch. The warmup
 * is short and the peak rate ≈ 1.3e-3 (lr_factor 0.3, warmup 200) because a CPU hour holds only
 * a few hundred updates; stops after max_minutes of wall-clock time.
 */
const MULTI30K_DE_EN: Partial<Seq2SeqTrainConfig> = {
  out_dir: 'out-multi30k-de-en',
  data_dir: 'data/multi30k',
  src_lang: 'de',
  tgt_lang: 'en',
  vocab_size: 8000,
  ...SEQ2SEQ_SMALL_MODEL,
  lr_factor: 0.3,
  warmup_steps: 200,
  beta1: 0.9,
  beta2: 0.98,
  eps: 1e-9,
  grad_clip: 1.0,
  max_tokens: 4096,
  max_steps: 100000,
  max_minutes: 60,
  eval_interval: 50,
  log_interval: 5,
};

export const SEQ2SEQ_PRESETS: Readonly<Record<string, Readonly<Partial<Seq2SeqTrainConfig>>>> = Object.freeze({
  'multi30k-de-en': Object.freeze(MULTI30K_DE_EN),
});

export function seq2seqPresetNames(): string[] {
  return Object.keys(SEQ2SEQ_PRESETS);
}

export function isSeq2SeqPreset(name: string): boolean {
  return Object.hasOwn(SEQ2SEQ_PRESETS, name);
}

export function seq2seqPreset(name: string): Partial<Seq2SeqTrainConfig> {
  const p = isSeq2SeqPreset(name) ? SEQ2SEQ_PRESETS[name] : undefined;
  if (!p) throw new Error(`unknown seq2seq preset '${name}' (known: ${seq2seqPresetNames().join(', ')})`);
  return { ...p };
}
