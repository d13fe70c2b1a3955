// Logit processing and token selection for one position, in plain TypeScript over the row of
// logits read back from the model. A row is V numbers, so there is nothing to gain from
// running this on a backend, and plain arrays make every step easy to check by hand.
// Processors work in place and mark removed tokens with -Infinity, like Hugging Face's.
import type { Generator } from '../tensor/random.js';

export interface SamplingOptions {
  /** Divides the logits; 0 means greedy (argmax). Default 1. */
  temperature?: number;
  /** Greedy decoding (argmax after the repetition penalty), whatever the other options. */
  greedy?: boolean;
  /** Keep the k most likely tokens (ties with the k-th are kept too); 0 or undefined: off. */
  topK?: number;
  /** Nucleus: keep the smallest set of most likely tokens whose probability is ≥ p; 1: off. */
  topP?: number;
  /** CTRL's penalty (Keskar et al. 2019) on tokens already in the context; 1: off. */
  repetitionPenalty?: number;
}

/** Throws one error naming every invalid option. */
export const SAMPLING_OPTIONS = ['temperature', 'greedy', 'topK', 'topP', 'repetitionPenalty'] as const;

export function validateSamplingOptions(o: SamplingOptions): void {
  const problems: string[] = [];
  if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature))) problems.push(`temperature must be a finite number ≥ 0, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) problems.push(`topK must be an integer ≥ 0, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) problems.push(`topP must be in (0, 1], got ${o.topP}`);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) {
    problems.push(`repetitionPenalty must be a finite number > 0, got ${o.repetitionPenalty}`);
  }
  if (problems.length) throw new Error(`sampling options: ${problems.join('; ')}`);
}

/**
 * Penalises every distinct token of `context`: positive logits are divided by `penalty`,
 * negative ones multiplied, so a penalty > 1 always makes the token less likely (dividing a
 * negative logit would raise it). Each token is penalised once however often it occurred.
 */
export function applyRepetitionPenalty(logits: Float32Array, context: ArrayLike<number>, penalty: number): Float32Array {
  if (penalty === 1) return logits;
  const seen = new Set<number>();
  for (let i = 0; i < context.length; i++) {
    const id = context[i]!;
    if (id < 0 || id >= logits.length || seen.has(id)) continue;
    seen.add(id);
    const l = logits[id]!;
    logits[id] = l > 0 ? l / penalty : l * penalty;
  }
  return logits;
}

export function applyTemperature(logits: Float32Array, temperature: number): Float32Array {
  if (temperature === 1) return logits;
  if (!(temperature > 0)) throw new Error(`applyTemperature: temperature must be > 0 (use greedy for 0), got ${temperature}`);
  for (let i = 0; i < logits.length; i++) logits[i] = logits[i]! / temperature;
  return logits;
}

/** Sets every logit below the k-th largest to -Infinity. */
export function applyTopK(logits: Float32Array, k: number): Float32Array {
  if (!(k > 0) || k >= logits.length) return logits;
  const sorted = Float32Array.from(logits).sort(); // ascending, NaN last
  let finite = sorted.length;
  while (finite > 0 && Number.isNaN(sorted[finite - 1])) finite--;
  const kth = k <= finite ? sorted[finite - k]! : -Infinity;
  for (let i = 0; i < logits.length; i++) if (!(logits[i]! >= kth)) logits[i] = -Infinity;
  return logits;
}

/**
 * Keeps the smallest set of most likely tokens whose total probability reaches p (at least one
 * token); the rest become -Infinity. Among equal logits at the boundary the lower id is kept.
 */
export function applyTopP(logits: Float32Array, p: number): Float32Array {
  if (p >= 1) return logits;
  const probs = softmaxLogits(logits);
  const order: number[] = [];
  for (let i = 0; i < logits.length; i++) if (probs[i]! > 0) order.push(i);
  order.sort((a, b) => probs[b]! - probs[a]! || a - b);
  const keep = new Uint8Array(logits.length);
  let cum = 0;
  for (const i of order) {
    keep[i] = 1;
    cum += probs[i]!;
    if (cum >= p) break;
  }
  if (order.length === 0) keep[argmaxLogits(logits)] = 1;
  for (let i = 0; i < logits.length; i++) if (!keep[i]) logits[i] = -Infinity;
  return logits;
}

/** Index of the largest logit (the first on ties; NaN never wins). */
export function argmaxLogits(logits: ArrayLike<number>): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/** Softmax in float64 (max subtracted first, so large logits do not overflow). */
export function softmaxLogits(logits: ArrayLike<number>): Float64Array {
  const n = logits.length;
  const out = new Float64Array(n);
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i]! > m) m = logits[i]!;
  if (m === -Infinity) throw new Error('softmax: every logit is -Infinity (or NaN): nothing to sample');
  let total = 0;
  for (let i = 0; i < n; i++) {
    const e = logits[i]! > -Infinity ? Math.exp(logits[i]! - m) : 0; // NaN > x is false: NaN gets 0
    out[i] = e;
    total += e;
  }
  for (let i = 0; i < n; i++) out[i]! /= total;
  return out;
}

/** Draws an index with probability softmax(logits) by inverting the cumulative sum. */
export function sampleLogits(logits: ArrayLike<number>, generator: Generator): number {
  const probs = softmaxLogits(logits);
  const r = generator.random();
  let cum = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    cum += probs[i]!;
    last = i;
    if (r < cum) return i;
  }
  return last; // r landed in the rounding gap above the final cumulative sum
}

/** True when the options select the argmax rather than a draw. */
export function isGreedy(o: SamplingOptions): boolean {
  return o.greedy === true || o.temperature === 0;
}

/**
 * Applies the processors in Hugging Face's order — repetition penalty, temperature, top-k,
 * top-p — to `logits` (in place). Greedy decoding only applies the penalty: the others never
 * change the argmax.
 */
export function processLogits(logits: Float32Array, context: ArrayLike<number>, o: SamplingOptions): Float32Array {
  applyRepetitionPenalty(logits, context, o.repetitionPenalty ?? 1);
  if (isGreedy(o)) return logits;
  applyTemperature(logits, o.temperature ?? 1);
  if (o.topK) applyTopK(logits, o.topK);
  if (o.topP !== undefined) applyTopP(logits, o.topP);
  return logits;
}

/** Processes `logits` (in place) and picks the next token: argmax when greedy, else a draw. */
export function selectToken(logits: Float32Array, context: ArrayLike<number>, o: SamplingOptions, generator: Generator): number {
  processLogits(logits, context, o);
  return isGreedy(o) ? argmaxLogits(logits) : sampleLogits(logits, generator);
}
