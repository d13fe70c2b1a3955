// Parallel corpora for translation (Multi30k): reading (gzip or plain) line-aligned files, a
// shared source/target byte-level BPE with <pad>, <s>, </s>, and length-grouped batches under a
// token budget. Batch cost = rows × the longer of the padded source and target lengths; a pair
// above the budget alone gets a batch of its own. An epoch's batches are a pure function of
// (seed, epoch), so the sampler's state is just {epoch, pos}.
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { Generator } from '../tensor/random.js';
import { BpeTokenizer } from '../tokenizers/bpe.js';
import { trainBpe } from '../tokenizers/train.js';

export const PAD_TOKEN = '<pad>';
export const BOS_TOKEN = '<s>';
export const EOS_TOKEN = '</s>';
export const TRANSLATION_SPECIALS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN];

/** Lines of a text file, gunzipped when it ends in .gz; a final empty line is dropped. */
export async function readLines(path: string): Promise<string[]> {
  const raw = await readFile(path);
  const text = (path.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
  const lines = text.split(/\r?\n/);
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

export interface ParallelText {
  src: string[];
  tgt: string[];
}

/** dir/{split}.{src}.gz and dir/{split}.{tgt}.gz (or without .gz), checked to be aligned. */
export async function readParallel(dir: string, split: string, srcLang: string, tgtLang: string, limit = 0): Promise<ParallelText> {
  const pick = async (lang: string): Promise<string[]> => {
    const gz = join(dir, `${split}.${lang}.gz`);
    try {
      return await readLines(gz);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      return readLines(join(dir, `${split}.${lang}`));
    }
  };
  let [src, tgt] = await Promise.all([pick(srcLang), pick(tgtLang)]);
  if (src.length !== tgt.length) throw new Error(`${dir}/${split}: ${src.length} ${srcLang} lines but ${tgt.length} ${tgtLang} lines`);
  if (limit > 0) [src, tgt] = [src.slice(0, limit), tgt.slice(0, limit)];
  return { src, tgt };
}

export interface SpecialIds {
  pad_id: number;
  bos_id: number;
  eos_id: number;
}

/** A byte-level BPE of vocabSize tokens over both sides; the three specials take the last ids. */
export function trainTranslationTokenizer(texts: readonly string[], vocabSize: number): BpeTokenizer {
  return trainBpe(texts, vocabSize, { specialTokens: TRANSLATION_SPECIALS });
}

export function specialIds(tok: BpeTokenizer): SpecialIds {
  const id = (s: string): number => {
    const v = tok.tokenToId(s);
    if (v === undefined) throw new Error(`the tokenizer has no ${s} token (a translation tokenizer needs ${TRANSLATION_SPECIALS.join(' ')})`);
    return v;
  };
  return { pad_id: id(PAD_TOKEN), bos_id: id(BOS_TOKEN), eos_id: id(EOS_TOKEN) };
}

/** Ids of one sentence pair: src and tgt without bos/eos. */
export interface EncodedPair {
  src: number[];
  tgt: number[];
}

/** Encodes aligned lines (specials in the text are plain text), truncating src to maxLen and
 *  tgt to maxLen - 1 (bos or eos takes the last position). */
export function encodePairs(tok: BpeTokenizer, text: ParallelText, maxLen: number): EncodedPair[] {
  return text.src.map((s, i) => ({
    src: tok.encodeOrdinary(s.trim()).slice(0, maxLen),
    tgt: tok.encodeOrdinary(text.tgt[i]!.trim()).slice(0, maxLen - 1),
  }));
}

/** A padded batch: src (B, S), tgtIn = bos + tgt and tgtOut = tgt + eos (B, T), row-major int32. */
export interface TranslationBatch {
  src: Int32Array;
  tgtIn: Int32Array;
  tgtOut: Int32Array;
  batchSize: number;
  srcLen: number;
  tgtLen: number;
  /** Pair indices of the rows. */
  indices: number[];
  /** Non-pad target tokens (tgt + eos), what the loss averages over. */
  tgtTokens: number;
  srcTokens: number;
}

/** Padded size of a pair: the longer of its source and its target + 1. */
export const pairCost = (p: EncodedPair): number => Math.max(p.src.length, p.tgt.length + 1, 1);

export function makeBatch(pairs: readonly EncodedPair[], indices: readonly number[], ids: SpecialIds): TranslationBatch {
  const B = indices.length;
  const S = Math.max(1, ...indices.map((i) => pairs[i]!.src.length));
  const T = Math.max(...indices.map((i) => pairs[i]!.tgt.length + 1));
  const src = new Int32Array(B * S).fill(ids.pad_id);
  const tgtIn = new Int32Array(B * T).fill(ids.pad_id);
  const tgtOut = new Int32Array(B * T).fill(ids.pad_id);
  let tgtTokens = 0;
  let srcTokens = 0;
  indices.forEach((idx, b) => {
    const p = pairs[idx]!;
    src.set(p.src, b * S);
    tgtIn[b * T] = ids.bos_id;
    tgtIn.set(p.tgt, b * T + 1);
    tgtOut.set(p.tgt, b * T);
    tgtOut[b * T + p.tgt.length] = ids.eos_id;
    tgtTokens += p.tgt.length + 1;
    srcTokens += p.src.length;
  });
  return { src, tgtIn, tgtOut, batchSize: B, srcLen: S, tgtLen: T, indices: [...indices], tgtTokens, srcTokens };
}

/** Cuts `order` (sorted by length) into consecutive batches whose rows × max cost ≤ maxTokens. */
export function chunkByBudget(pairs: readonly EncodedPair[], order: readonly number[], maxTokens: number): number[][] {
  const out: number[][] = [];
  let cur: number[] = [];
  let curMax = 0;
  for (const i of order) {
    const c = pairCost(pairs[i]!);
    const m = Math.max(curMax, c);
    if (cur.length && m * (cur.length + 1) > maxTokens) {
      out.push(cur);
      cur = [];
      curMax = 0;
    }
    cur.push(i);
    curMax = Math.max(curMax, c);
  }
  if (cur.length) out.push(cur);
  return out;
}

/** Deterministic batches for evaluation: sorted by length, no shuffling. */
export function evalBatches(pairs: readonly EncodedPair[], maxTokens: number): number[][] {
  const order = pairs.map((_, i) => i).sort((a, b) => pairCost(pairs[a]!) - pairCost(pairs[b]!) || pairs[a]!.src.length - pairs[b]!.src.length || a - b);
  return chunkByBudget(pairs, order, maxTokens);
}

function shuffleInPlace<T>(xs: T[], g: Generator): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = g.randint(i + 1);
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
}

export interface LengthSamplerState {
  epoch: number;
  /** Batches of this epoch already drawn. */
  pos: number;
  seed: number;
}

/**
 * Length-grouped training batches. Each epoch: pairs in a random order, stably sorted by
 * cost (so equal lengths mix differently every epoch), cut by the token budget, and the
 * batches shuffled. Every pair appears once per epoch.
 */
export class LengthBatchSampler {
  private epochBatches: number[][] | null = null;
  epoch = 0;
  pos = 0;

  constructor(readonly pairs: readonly EncodedPair[], readonly ids: SpecialIds, readonly maxTokens: number, readonly seed = 0) {
    if (pairs.length === 0) throw new Error('LengthBatchSampler: no sentence pairs');
    if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new Error(`LengthBatchSampler: maxTokens must be a positive integer, got ${maxTokens}`);
  }

  /** The batches (pair indices) of an epoch, a pure function of (seed, epoch). */
  batchesOf(epoch: number): number[][] {
    const g = new Generator((Math.imul(this.seed ^ 0x3c6ef372, 0x9e3779b1) + epoch * 0x6a09e667) >>> 0);
    const order = this.pairs.map((_, i) => i);
    shuffleInPlace(order, g);
    const cost = order.map((i) => pairCost(this.pairs[i]!));
    const pos = order.map((_, k) => k).sort((a, b) => cost[a]! - cost[b]! || a - b);
    const batches = chunkByBudget(this.pairs, pos.map((k) => order[k]!), this.maxTokens);
    shuffleInPlace(batches, g);
    return batches;
  }

  /** Batches per epoch (of the current epoch). */
  get epochLength(): number {
    return this.current().length;
  }

  private current(): number[][] {
    return (this.epochBatches ??= this.batchesOf(this.epoch));
  }

  next(): TranslationBatch {
    if (this.pos >= this.current().length) {
      this.epoch++;
      this.pos = 0;
      this.epochBatches = null;
    }
    const idx = this.current()[this.pos++]!;
    return makeBatch(this.pairs, idx, this.ids);
  }

  state(): LengthSamplerState {
    return { epoch: this.epoch, pos: this.pos, seed: this.seed };
  }

  setState(s: unknown): void {
    const o = s as Partial<LengthSamplerState> | null;
    if (!o || !Number.isInteger(o.epoch) || !Number.isInteger(o.pos) || o.epoch! < 0 || o.pos! < 0) throw new Error(`sampler state must be {epoch, pos, seed} with non-negative integers, got ${JSON.stringify(s)}`);
    if (o.seed !== undefined && o.seed !== this.seed) throw new Error(`sampler state is for seed ${o.seed}, this sampler has seed ${this.seed}`);
    this.epoch = o.epoch!;
    this.pos = o.pos!;
    this.epochBatches = null;
  }
}
