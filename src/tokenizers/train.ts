// Learning byte-level BPE merges from a corpus.
//
// The corpus is split on special tokens and pre-tokenised with the same regex that encoding
// uses, so merges never cross a piece boundary. Identical pieces are counted once with their
// frequency (a 1 MB text has ~300k pieces but ~30k distinct ones). Pair counts are kept up to
// date incrementally: a merge only revisits the words that contain the merged pair (found via a
// pair -> words index), and the best pair comes from a max-heap whose stale entries are skipped
// when popped.
//
// Tie-breaking (deterministic): the pair with the highest count wins; among equal counts, the
// pair with the smaller left id, then the smaller right id. Base tokens have id = byte value and
// new tokens are numbered in the order they are created, so ties go to lower bytes and to older
// tokens. Within a word, occurrences of the pair merge left to right without overlap ("aaa" ->
// "aa a"), which is also what encoding does.
import { BYTE_TO_CHAR, utf8Bytes } from './bytes.js';
import { BpeTokenizer } from './bpe.js';
import { GPT2_PATTERN, compilePattern, forEachPiece, specialsRegex, splitOnSpecials } from './pretokenize.js';

export interface TrainBpeOptions {
  /** Special tokens (e.g. '<|endoftext|>'): removed from the training text and given the last ids. */
  specialTokens?: string[];
  /** Pre-tokenisation regex; default GPT-2's. */
  pattern?: string;
  /** Stop early when the best pair occurs fewer times than this (default 2: a pair seen once
   *  compresses nothing beyond that one place). */
  minFrequency?: number;
  /** Called every `progressEvery` merges (default 500) with the number of merges so far. */
  onProgress?: (merges: number, target: number) => void;
  progressEvery?: number;
}

/**
 * Learns a byte-level BPE tokenizer with `vocabSize` tokens in all: the 256 byte tokens, the
 * learned merges and the special tokens (which take the last ids, as '<|endoftext|>' does in
 * GPT-2). Training stops early, with a smaller vocabulary, when no pair reaches minFrequency.
 * `corpus` is one text or several documents (pieces never span two documents).
 */
export function trainBpe(corpus: string | readonly string[], vocabSize: number, opts: TrainBpeOptions = {}): BpeTokenizer {
  const specials = [...new Set(opts.specialTokens ?? [])];
  const pattern = opts.pattern ?? GPT2_PATTERN;
  const minFrequency = Math.max(1, opts.minFrequency ?? 2);
  const targetTokens = vocabSize - specials.length;
  if (!Number.isInteger(vocabSize) || targetTokens < 256) {
    throw new Error(`vocabSize ${vocabSize} must be an integer of at least 256 + the ${specials.length} special tokens`);
  }

  // 1. Distinct pieces and their counts.
  const re = compilePattern(pattern);
  const specialRe = specialsRegex(specials);
  const pieceCounts = new Map<string, number>();
  const count = (piece: string) => pieceCounts.set(piece, (pieceCounts.get(piece) ?? 0) + 1);
  for (const doc of typeof corpus === 'string' ? [corpus] : corpus) {
    splitOnSpecials(doc, specialRe, (t) => forEachPiece(t, re, count), () => {});
  }

  // 2. Each distinct piece as a word of symbol ids (initially its bytes).
  const words: Int32Array[] = [];
  const lens: number[] = [];
  const freqs: number[] = [];
  const scratch: number[] = [];
  for (const [piece, f] of pieceCounts) {
    scratch.length = 0;
    utf8Bytes(piece, scratch);
    if (scratch.length < 2) continue; // a single byte has no pair to merge
    words.push(Int32Array.from(scratch));
    lens.push(scratch.length);
    freqs.push(f);
  }
  pieceCounts.clear();

  // 3. Pair counts and the pair -> words index. Pair (a, b) is the number a*K + b, with K above
  // every id that can occur, so keys stay small integers (fast Map keys) for usual sizes.
  const K = vocabSize;
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  const addWord = (key: number, w: number) => {
    const list = pairWords.get(key);
    if (list === undefined) pairWords.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  for (let w = 0; w < words.length; w++) {
    const s = words[w];
    for (let i = 0; i + 1 < lens[w]; i++) {
      const key = s[i] * K + s[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + freqs[w]);
      addWord(key, w);
    }
  }
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  // 4. Merge loop.
  const tokStr: string[] = [...BYTE_TO_CHAR];
  const strId = new Map<string, number>(tokStr.map((s, i) => [s, i]));
  const merges: [string, string][] = [];
  const stamp = new Int32Array(words.length).fill(-1);
  const delta = new Map<number, number>();
  let nextId = 256;
  const every = opts.progressEvery ?? 500;
  while (nextId < targetTokens && heap.size > 0) {
    const c0 = heap.topCount();
    const key = heap.pop();
    if (pairCount.get(key) !== c0) continue; // stale entry
    if (c0 < minFrequency) break;
    const a = Math.floor(key / K);
    const b = key - a * K;
    const str = tokStr[a] + tokStr[b];
    // Two merges can spell the same bytes ("ab"+"c", "a"+"bc"); the token then keeps one id.
    let c = strId.get(str);
    if (c === undefined) {
      c = nextId++;
      tokStr.push(str);
      strId.set(str, c);
    }
    merges.push([tokStr[a], tokStr[b]]);

    delta.clear();
    const ws = pairWords.get(key) ?? [];
    pairWords.delete(key);
    const m = merges.length;
    for (const w of ws) {
      if (stamp[w] === m) continue;
      stamp[w] = m;
      const s = words[w];
      const n = lens[w];
      const f = freqs[w];
      let found = false;
      for (let i = 0; i + 1 < n; i++) {
        if (s[i] === a && s[i + 1] === b) {
          found = true;
          break;
        }
      }
      if (!found) continue; // index entry left over from before an earlier merge
      // Remove the word's old pairs, merge in place, add its new pairs; the deltas of pairs the
      // merge did not touch cancel out.
      for (let i = 0; i + 1 < n; i++) {
        const k = s[i] * K + s[i + 1];
        delta.set(k, (delta.get(k) ?? 0) - f);
      }
      let j = 0;
      for (let i = 0; i < n; i++) {
        if (i + 1 < n && s[i] === a && s[i + 1] === b) {
          s[j++] = c;
          i++;
        } else s[j++] = s[i];
      }
      lens[w] = j;
      for (let i = 0; i + 1 < j; i++) {
        const k = s[i] * K + s[i + 1];
        delta.set(k, (delta.get(k) ?? 0) + f);
        if (s[i] === c || s[i + 1] === c) addWord(k, w); // only pairs with c are new to the word
      }
    }
    for (const [k, d] of delta) {
      if (d === 0) continue;
      const v = (pairCount.get(k) ?? 0) + d;
      if (v > 0) {
        pairCount.set(k, v);
        heap.push(v, k);
      } else pairCount.delete(k);
    }
    if (opts.onProgress && merges.length % every === 0) opts.onProgress(merges.length, targetTokens - 256);
  }

  const vocab = new Map<string, number>();
  for (let id = 0; id < tokStr.length; id++) vocab.set(tokStr[id], id);
  const specialTokens = new Map<string, number>(specials.map((s, i) => [s, nextId + i]));
  return new BpeTokenizer({ vocab, merges, specialTokens, pattern });
}

/** Max-heap of (count, pair key): higher count first, then smaller key. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  topCount(): number {
    return this.counts[0];
  }

  private before(c1: number, k1: number, c2: number, k2: number): boolean {
    return c1 > c2 || (c1 === c2 && k1 < k2);
  }

  push(count: number, key: number): void {
    const C = this.counts;
    const Kk = this.keys;
    let i = Kk.length;
    C.push(count);
    Kk.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(count, key, C[p], Kk[p])) break;
      C[i] = C[p];
      Kk[i] = Kk[p];
      i = p;
    }
    C[i] = count;
    Kk[i] = key;
  }

  /** Removes the top entry and returns its key. */
  pop(): number {
    const C = this.counts;
    const Kk = this.keys;
    const top = Kk[0];
    const lc = C.pop()!;
    const lk = Kk.pop()!;
    const n = Kk.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        let ch = 2 * i + 1;
        if (ch >= n) break;
        if (ch + 1 < n && this.before(C[ch + 1], Kk[ch + 1], C[ch], Kk[ch])) ch++;
        if (!this.before(C[ch], Kk[ch], lc, lk)) break;
        C[i] = C[ch];
        Kk[i] = Kk[ch];
        i = ch;
      }
      C[i] = lc;
      Kk[i] = lk;
    }
    return top;
  }
}
