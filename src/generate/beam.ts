// Decoding for the encoder-decoder Transformer: batched greedy decoding and batched beam
// search, both incremental (the decoder's self-attention cache grows by one token per step;
// the memory's keys/values are projected once), plus one-sentence-at-a-time versions for the
// throughput comparison.
//
// Sources are token lists (padded here with pad_id); each output starts after bos_id and ends
// at eos_id (not included in `tokens`) or at the length limit, a·srcLen + b new tokens
// (maxLenA = 0, maxLenB = 50 by default, so src_len + 50 with maxLenA = 1), capped by max_len.
// Sentences that finish leave the batch: their cache rows are dropped.
//
// Beam search ranks partial hypotheses by their summed log-probability and scores finished ones
// with a length penalty: 'gnmt' (default, Wu et al. 2016): score = logP / ((5 + len) / 6)^α;
// 'simple': score = logP / len^α; len counts the generated tokens including eos; α = 0.6
// by default (the 2017 paper's). At each step the 2K best continuations of a sentence's K
// beams are taken in order: eos among the first K ends a hypothesis, the others fill the K
// live beams. A sentence is done once it has K finished hypotheses (as fairseq) or reaches its
// length limit (then its live beams count as unfinished hypotheses).
import type { Encoded, EncoderDecoder } from '../models/seq2seq.js';
import { selectRows } from '../nn/encoder-decoder-layers.js';
import { logSoftmax, noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import { checkOptions } from '../util/options.js';

export interface Seq2SeqDecodeOptions {
  /** New tokens at most a·srcLen + b (defaults a = 0, b = 50), and at most max_len. */
  maxLenA?: number;
  maxLenB?: number;
}

export interface GreedyOptions extends Seq2SeqDecodeOptions {
  /** Feed one token per step through the caches (default true); false re-runs the whole
   *  decoder over the prefix each step (for checking the cache). */
  useCache?: boolean;
}

export interface BeamSearchOptions extends Seq2SeqDecodeOptions {
  /** Beams per sentence K (default 4). */
  beamSize?: number;
  /** α of the length penalty (default 0.6; 0 ranks by log-probability alone). */
  lengthPenalty?: number;
  lengthPenaltyKind?: 'gnmt' | 'simple';
}

export interface Hypothesis {
  /** Generated ids, without bos and the final eos. */
  tokens: number[];
  /** Summed log-probability of the generated tokens (eos included when finished). */
  logProb: number;
  /** logProb divided by the length penalty (greedy: logProb). */
  score: number;
  /** Ended with eos (false: stopped at the length limit). */
  finished: boolean;
}

/** The length penalty lp(len) that divides a hypothesis' log-probability. */
export function lengthPenalty(len: number, alpha: number, kind: 'gnmt' | 'simple' = 'gnmt'): number {
  if (alpha === 0) return 1;
  return kind === 'gnmt' ? Math.pow((5 + len) / 6, alpha) : Math.pow(Math.max(len, 1), alpha);
}

interface Setup {
  /** The encoded batch of every source sentence. */
  enc0: Encoded;
  /** New-token limit per sentence. */
  maxNew: number[];
  /** The (R, S) source mask of the given sentences, one row each. */
  maskOf(sentences: readonly number[]): Tensor;
}

/** Checks the options and sources, and encodes the sources (padded to the longest). */
function setup(model: EncoderDecoder, srcs: readonly (readonly number[])[], o: Seq2SeqDecodeOptions): Setup {
  const cfg = model.config;
  const a = o.maxLenA ?? 0;
  const b = o.maxLenB ?? 50;
  if (srcs.length === 0) throw new Error('seq2seq decode: no source sentences');
  if (!(a >= 0 && b >= 0 && Number.isFinite(a) && Number.isFinite(b)) || a * 0 !== 0) throw new Error(`seq2seq decode: maxLenA and maxLenB must be ≥ 0, got ${a}, ${b}`);
  const S = Math.max(1, ...srcs.map((s) => s.length));
  if (S > cfg.max_len) throw new Error(`seq2seq decode: a source of ${S} tokens exceeds max_len ${cfg.max_len}`);
  const flat = new Int32Array(srcs.length * S).fill(cfg.pad_id);
  srcs.forEach((s, i) => s.forEach((t, j) => {
    if (!Number.isInteger(t) || t < 0 || t >= cfg.vocab_size) throw new Error(`seq2seq decode: source ${i} token ${t} at ${j} is not an id in [0, ${cfg.vocab_size})`);
    flat[i * S + j] = t;
  }));
  const backend = model.embed.weight.backend;
  const srcT = tensor(flat, { backend, dtype: 'int32', shape: [srcs.length, S] });
  const maxNew = srcs.map((s) => Math.max(1, Math.min(cfg.max_len, Math.floor(a * s.length + b))));
  const enc0 = model.encode(srcT);
  // The full mask is read back once; rows for any subset of sentences are cut from it on the host.
  const fullMask = Int32Array.from(enc0.srcMask.data());
  return { enc0, maxNew, maskOf: (sentences) => maskRows(enc0, fullMask, S, sentences) };
}

/** Host int32 (R, S) mask of the given source rows. */
function maskRows(enc: Encoded, full: Int32Array, S: number, sentences: readonly number[]): Tensor {
  const m = new Int32Array(sentences.length * S);
  sentences.forEach((s, i) => m.set(full.subarray(s * S, (s + 1) * S), i * S));
  return tensor(m, { backend: enc.srcMask.backend, dtype: 'int32', shape: [sentences.length, S] });
}

/** Log-softmax of row r of logits (R, V) on the host, in float64. */
/** Row r of the (R, V) log-probabilities, as a view (no copy). */
function logProbs(data: Float32Array | Float64Array, r: number, V: number): Float32Array | Float64Array {
  return data.subarray(r * V, (r + 1) * V);
}

/** Runs fn in eval mode without gradients, restoring training mode after. */
function inEval<T>(model: EncoderDecoder, fn: () => T): T {
  const was = model.training;
  model.train(false);
  try {
    return tidy(() => noGrad(fn));
  } finally {
    if (was) model.train(true);
  }
}

/**
 * One decoder step for rows whose prefixes are `prefixes` (each starting with bos): with the
 * cache, feeds only the last token; otherwise the whole prefix. Returns log-probabilities
 * (R, V) on the host: the log-softmax runs on the backend (its fused, threaded kernel), which
 * left the host loop only the top-k scan.
 */
function stepLogits(model: EncoderDecoder, enc: Encoded, prefixes: number[][], cache: ReturnType<EncoderDecoder['createCache']> | null): Float32Array | Float64Array {
  return tidy(() => {
    const R = prefixes.length;
    const backend = enc.memory.backend;
    if (cache) {
      const last = Int32Array.from(prefixes, (p) => p[p.length - 1]!);
      return logSoftmax(model.decodeStep(tensor(last, { backend, dtype: 'int32', shape: [R, 1] }), enc, cache), -1).data() as Float32Array | Float64Array; // (R, 1, V)
    }
    const L = prefixes[0]!.length;
    const ids = Int32Array.from(prefixes.flat());
    const logits = model.decode(tensor(ids, { backend, dtype: 'int32', shape: [R, L] }), enc); // (R, L, V)
    return logSoftmax(logits.slice(1, L - 1, L), -1).data() as Float32Array | Float64Array;
  });
}

const DECODE_OPTIONS = ['maxLenA', 'maxLenB', 'useCache', 'beamSize', 'lengthPenalty', 'lengthPenaltyKind'];

/** Batched greedy decoding: the most likely next token each step. */
export function greedyDecode(model: EncoderDecoder, srcs: readonly (readonly number[])[], opts: GreedyOptions = {}): Hypothesis[] {
  // Beam options are accepted (and unused) so one options object can serve both decoders.
  checkOptions('greedyDecode', opts, DECODE_OPTIONS);
  const cfg = model.config;
  const V = cfg.vocab_size;
  return inEval(model, () => {
    const { enc0, maxNew, maskOf } = setup(model, srcs, opts);
    let enc: Encoded = enc0;
    const cache = (opts.useCache ?? true) ? model.createCache() : null;
    const out: Hypothesis[] = srcs.map(() => ({ tokens: [], logProb: 0, score: 0, finished: false }));
    let active = srcs.map((_, i) => i); // row r decodes sentence active[r]
    const prefix = srcs.map(() => [cfg.bos_id]);
    try {
      while (active.length) {
        const data = stepLogits(model, enc, active.map((s) => prefix[s]!), cache);
        const keep: number[] = [];
        active.forEach((s, r) => {
          const lp = logProbs(data, r, V);
          let best = 0;
          for (let v = 1; v < V; v++) if (lp[v]! > lp[best]!) best = v;
          const h = out[s]!;
          h.logProb += lp[best]!;
          if (best === cfg.eos_id) h.finished = true;
          else {
            h.tokens.push(best);
            prefix[s]!.push(best);
          }
          if (!h.finished && h.tokens.length < maxNew[s]!) keep.push(r);
        });
        if (keep.length === active.length) continue;
        const next = keep.map((r) => active[r]!);
        if (next.length) {
          if (cache) {
            cache.reorder(keep);
            enc = { memory: enc.memory, srcMask: maskOf(next) }; // memory is cached
          } else {
            enc = { memory: selectRows(enc.memory, keep), srcMask: maskOf(next) };
          }
        }
        active = next;
      }
    } finally {
      cache?.dispose();
    }
    for (const h of out) h.score = h.logProb;
    return out;
  });
}

/** Indices of the n largest values, largest first (ties: lower index first). */
function topIndices(x: ArrayLike<number>, n: number): number[] {
  const top: number[] = [];
  for (let v = 0; v < x.length; v++) {
    if (top.length === n && !(x[v]! > x[top[n - 1]!]!)) continue;
    let i = top.length === n ? n - 1 : top.length;
    while (i > 0 && x[v]! > x[top[i - 1]!]!) i--;
    top.splice(i, 0, v);
    if (top.length > n) top.pop();
  }
  return top;
}

interface Beam {
  tokens: number[]; // without bos
  logProb: number;
}

/** Batched beam search; per sentence, its hypotheses best first (at most beamSize). */
export function beamSearch(model: EncoderDecoder, srcs: readonly (readonly number[])[], opts: BeamSearchOptions = {}): Hypothesis[][] {
  const cfg = model.config;
  const V = cfg.vocab_size;
  checkOptions('beamSearch', opts, DECODE_OPTIONS);
  const K = opts.beamSize ?? 4;
  const alpha = opts.lengthPenalty ?? 0.6;
  const kind = opts.lengthPenaltyKind ?? 'gnmt';
  if (!(Number.isInteger(K) && K >= 1)) throw new Error(`beamSearch: beamSize must be a positive integer, got ${K}`);
  if (!(alpha >= 0 && Number.isFinite(alpha))) throw new Error(`beamSearch: lengthPenalty must be ≥ 0, got ${alpha}`);
  if (kind !== 'gnmt' && kind !== 'simple') throw new Error(`beamSearch: lengthPenaltyKind must be 'gnmt' or 'simple', got '${String(kind)}'`);
  const hyp = (b: Beam, finished: boolean): Hypothesis => ({
    tokens: b.tokens, logProb: b.logProb, finished, score: b.logProb / lengthPenalty(b.tokens.length + (finished ? 1 : 0), alpha, kind),
  });
  return inEval(model, () => {
    const { enc0, maxNew, maskOf } = setup(model, srcs, opts);
    let enc: Encoded = enc0;
    const cache = model.createCache();
    const finished: Hypothesis[][] = srcs.map(() => []);
    let live: Beam[][] = srcs.map(() => [{ tokens: [], logProb: 0 }]);
    let rowSentence = srcs.map((_, i) => i); // row r belongs to sentence rowSentence[r]
    try {
      while (rowSentence.length) {
        // Rows in sentence order; each sentence's live beams are consecutive.
        const prefixes: number[][] = [];
        const rowOf: number[][] = srcs.map(() => []);
        rowSentence.forEach((s, r) => {
          const b = live[s]![rowOf[s]!.length]!;
          rowOf[s]!.push(r);
          prefixes.push([cfg.bos_id, ...b.tokens]);
        });
        const data = stepLogits(model, enc, prefixes, cache);
        const nextRows: number[] = [];
        const nextSentence: number[] = [];
        const nextLive: Beam[][] = srcs.map(() => []);
        for (const s of new Set(rowSentence)) {
          // The 2K best (beam, token) continuations, ties to the lower beam then token.
          const cand: { r: number; b: number; v: number; lp: number }[] = [];
          rowOf[s]!.forEach((r, bi) => {
            const lp = logProbs(data, r, V);
            const base = live[s]![bi]!.logProb;
            for (const v of topIndices(lp, 2 * K)) cand.push({ r, b: bi, v, lp: base + lp[v]! });
          });
          cand.sort((x, y) => y.lp - x.lp || x.b - y.b || x.v - y.v);
          const nl: { beam: Beam; row: number }[] = [];
          for (let i = 0; i < Math.min(2 * K, cand.length) && nl.length < K; i++) {
            const c = cand[i]!;
            if (c.lp === -Infinity) break;
            const parent = live[s]![c.b]!;
            if (c.v === cfg.eos_id) {
              if (i < K) finished[s]!.push(hyp({ tokens: parent.tokens, logProb: c.lp }, true));
              continue;
            }
            nl.push({ beam: { tokens: [...parent.tokens, c.v], logProb: c.lp }, row: c.r });
          }
          const atLimit = nl.length > 0 && nl[0]!.beam.tokens.length >= maxNew[s]!;
          if (finished[s]!.length >= K || nl.length === 0 || atLimit) {
            if (finished[s]!.length < K) for (const x of nl) finished[s]!.push(hyp(x.beam, false));
            continue; // done
          }
          for (const x of nl) {
            nextLive[s]!.push(x.beam);
            nextRows.push(x.row);
            nextSentence.push(s);
          }
        }
        if (nextRows.length) {
          // The memory's keys/values move only when a row changes sentence.
          const crossToo = nextSentence.length !== rowSentence.length || nextSentence.some((s, i) => s !== rowSentence[i]);
          cache.reorder(nextRows, crossToo);
          if (crossToo) enc = { memory: enc.memory, srcMask: maskOf(nextSentence) };
        }
        rowSentence = nextSentence;
        live = nextLive;
      }
    } finally {
      cache.dispose();
    }
    return finished.map((f) => f.sort((x, y) => y.score - x.score).slice(0, K));
  });
}

/** greedyDecode one sentence at a time (batch of 1, no padding). */
export function greedyDecodeEach(model: EncoderDecoder, srcs: readonly (readonly number[])[], opts: GreedyOptions = {}): Hypothesis[] {
  return srcs.map((s) => greedyDecode(model, [s], opts)[0]!);
}

/** beamSearch one sentence at a time (batch of 1, no padding). */
export function beamSearchEach(model: EncoderDecoder, srcs: readonly (readonly number[])[], opts: BeamSearchOptions = {}): Hypothesis[][] {
  return srcs.map((s) => beamSearch(model, [s], opts)[0]!);
}
