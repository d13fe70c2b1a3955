// The `attention` config field shared by every model (GPT, the encoder-decoder, the encoder
// models): the variant names, their defaults, the fused kernel's sparse pattern for a config,
// and the validation messages, kept in one place so every model accepts and refuses the same way.
import type { AttentionSparsity } from '../backend/backend.js';

/** 'linformer' is bidirectional only: refused wherever attention is causal (GPT, a decoder). */
export type AttentionKind = 'dense' | 'local' | 'strided' | 'fixed' | 'linear' | 'linformer' | 'performer';

export const ATTENTION_KINDS: readonly AttentionKind[] = ['dense', 'local', 'strided', 'fixed', 'linear', 'linformer', 'performer'];

/** The optional attention fields of a model config; absent = ATTENTION_DEFAULTS. */
export interface AttentionFields {
  /** dense: full softmax; local: keys within attn_window (causal: the last attn_window); strided /
   *  fixed: the sparse patterns of Child et al. 2019; linear: elu+1 features; performer: FAVOR+
   *  random features; linformer: keys/values projected along the sequence (encoders only). */
  attention?: AttentionKind;
  /** local: keys per query (causal: including itself; bidirectional: |i - j| < attn_window). */
  attn_window?: number;
  /** strided: the stride; fixed: the block length. */
  attn_stride?: number;
  /** fixed: summary positions at the end of each block. */
  attn_summary?: number;
  /** performer: random features m per head. */
  performer_features?: number;
  /** performer: training forward calls between feature redraws; 0 = never. */
  performer_redraw_interval?: number;
  /** linformer: projected sequence length k. */
  linformer_k?: number;
}

export type FullAttentionFields = Required<AttentionFields>;

/** Defaults of the optional attention fields. */
export const ATTENTION_DEFAULTS: Readonly<FullAttentionFields> = Object.freeze({
  attention: 'dense' as AttentionKind,
  attn_window: 256,
  attn_stride: 64,
  attn_summary: 8,
  performer_features: 64,
  performer_redraw_interval: 1000,
  linformer_k: 64,
});

export const ATTENTION_FIELDS = Object.keys(ATTENTION_DEFAULTS);

/** The attention fields of cfg with the absent ones at their defaults. */
export function fullAttentionFields(cfg: AttentionFields): FullAttentionFields {
  const out: Record<string, unknown> = { ...ATTENTION_DEFAULTS };
  for (const k of ATTENTION_FIELDS) {
    const v = (cfg as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = v;
  }
  return out as unknown as FullAttentionFields;
}

/** The fused kernel's sparse pattern for the config, or null (dense and the linear kinds). */
export function sparsityOf(cfg: Pick<FullAttentionFields, 'attention' | 'attn_window' | 'attn_stride' | 'attn_summary'>): AttentionSparsity | null {
  switch (cfg.attention) {
    case 'local': return { kind: 'window', window: cfg.attn_window };
    case 'strided': return { kind: 'strided', stride: cfg.attn_stride };
    case 'fixed': return { kind: 'fixed', block: cfg.attn_stride, summary: cfg.attn_summary };
    default: return null;
  }
}

/**
 * Problems with the attention fields of cfg (defaults filled in), appended to `problems`.
 * causalIn names where attention is causal ('GPT', 'the decoder'), which refuses linformer;
 * null when every attention layer is bidirectional.
 */
export function attentionProblems(cfg: FullAttentionFields, causalIn: string | null, problems: string[]): void {
  for (const k of ['attn_window', 'attn_stride', 'attn_summary', 'performer_features', 'linformer_k'] as const) {
    const v = cfg[k];
    if (!Number.isInteger(v) || v < 1) problems.push(`${k} must be a positive integer, got ${String(v)}`);
  }
  const ri = cfg.performer_redraw_interval;
  if (!Number.isInteger(ri) || ri < 0) problems.push(`performer_redraw_interval must be a non-negative integer (0 = never), got ${String(ri)}`);
  if (cfg.attention === 'fixed' && Number.isInteger(cfg.attn_summary) && Number.isInteger(cfg.attn_stride) && cfg.attn_summary > cfg.attn_stride) {
    problems.push(`attn_summary (${cfg.attn_summary}) must not exceed the block length attn_stride (${cfg.attn_stride}) for 'fixed' attention`);
  }
  if (!ATTENTION_KINDS.includes(cfg.attention)) {
    problems.push(`attention must be one of ${ATTENTION_KINDS.map((a) => `'${a}'`).join(', ')}, got '${String(cfg.attention)}'`);
  } else if (cfg.attention === 'linformer' && causalIn !== null) {
    problems.push(`attention 'linformer' cannot be used in ${causalIn}: linformer projects along the sequence, so it cannot be causal; use it in an encoder`);
  }
}
