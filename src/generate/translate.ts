// Translating many sentences with an encoder-decoder: batched by length, greedy or beam search,
// results in input order.
import type { EncoderDecoder } from '../models/seq2seq.js';
import { beamSearch, greedyDecode } from './beam.js';

export interface TranslateOptions {
  /** Beam size; 1 (or greedy): greedy decoding. */
  beam?: number;
  greedy?: boolean;
  lengthPenalty?: number;
  /** Rows per decoding batch at most. */
  batchSize?: number;
  /** Token budget per decoding batch (rows × longest source). */
  maxTokens?: number;
  maxLenA?: number;
  maxLenB?: number;
}

/** Translates token sequences batched by length; results in input order (ids, without bos/eos). */
export function translateIds(model: EncoderDecoder, srcs: readonly (readonly number[])[], o: TranslateOptions = {}): number[][] {
  const out: number[][] = srcs.map(() => []);
  const order = srcs.map((_, i) => i).filter((i) => srcs[i]!.length > 0).sort((a, b) => srcs[a]!.length - srcs[b]!.length || a - b);
  const rows = o.batchSize ?? 64;
  const budget = o.maxTokens ?? Infinity;
  const dec = { maxLenA: o.maxLenA ?? 1, maxLenB: o.maxLenB ?? 10 };
  for (let i = 0; i < order.length;) {
    let j = i + 1;
    while (j < order.length && j - i < rows && (j - i + 1) * srcs[order[j]!]!.length <= budget) j++;
    const chunk = order.slice(i, j);
    const batch = chunk.map((k) => srcs[k]!);
    const greedy = o.greedy || (o.beam ?? 1) <= 1;
    const hyps = greedy ? greedyDecode(model, batch, dec).map((h) => h.tokens) : beamSearch(model, batch, { ...dec, beamSize: o.beam, lengthPenalty: o.lengthPenalty ?? 0.6 }).map((hs) => hs[0]?.tokens ?? []);
    chunk.forEach((k, r) => (out[k] = hyps[r]!));
    i = j;
  }
  return out;
}
