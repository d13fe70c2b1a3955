// Bias probes and their statistics: counterfactual word swaps (src/data/counterfactual.ts, for a
// classifier's fairness and for counterfactual data augmentation), Pearson correlation, and
// percentile-bootstrap confidence intervals. Model-free: the probes pass in what the model says.
import type { Generator } from '../tensor/index.js';

export { augmentCounterfactual, parseWordPairs, swapWords } from '../data/counterfactual.js';

export function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s / xs.length;
}

/** Pearson's r of paired samples. */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  if (x.length !== y.length || x.length < 2) throw new Error(`pearson: need two equal-length samples of 2 or more (got ${x.length} and ${y.length})`);
  const mx = mean(x);
  const my = mean(y);
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < x.length; i++) {
    const dx = x[i]! - mx;
    const dy = y[i]! - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  return sxy / Math.sqrt(sxx * syy);
}

export interface Interval {
  estimate: number;
  low: number;
  high: number;
  level: number;
  reps: number;
}

/**
 * Percentile bootstrap: `stat` of the n items, and the (1−level)/2 and (1+level)/2 quantiles of
 * `stat` over `reps` resamples of the item indices with replacement.
 */
export function bootstrapCI(n: number, stat: (idx: readonly number[]) => number, g: Generator, reps = 2000, level = 0.95): Interval {
  if (!(n >= 1)) throw new Error(`bootstrap: need at least one item, got ${n}`);
  const all = Array.from({ length: n }, (_, i) => i);
  const estimate = stat(all);
  const vals: number[] = [];
  const idx = new Array<number>(n);
  for (let r = 0; r < reps; r++) {
    for (let i = 0; i < n; i++) idx[i] = g.randint(n);
    const v = stat(idx);
    if (Number.isFinite(v)) vals.push(v);
  }
  vals.sort((a, b) => a - b);
  const q = (p: number): number => {
    if (vals.length === 0) return NaN;
    const h = (vals.length - 1) * p;
    const lo = Math.floor(h);
    return vals[lo]! + (h - lo) * ((vals[Math.min(lo + 1, vals.length - 1)] ?? vals[lo]!) - vals[lo]!);
  };
  return { estimate, low: q((1 - level) / 2), high: q((1 + level) / 2), level, reps };
}

export interface CounterfactualResult {
  /** Sentences that held a listed word. */
  n: number;
  /** Share whose predicted class changed when swapped, with its bootstrap interval. */
  flipRate: Interval;
  /** Mean |p(positive) − p'(positive)|, with its interval. */
  meanAbsDelta: Interval;
  /** Mean p'(positive) − p(positive) (signed: > 0 when the swap raises the positive class). */
  meanDelta: Interval;
}

/** The counterfactual statistics from each swapped sentence's positive-class probability before and after. */
export function counterfactualStats(before: readonly number[], after: readonly number[], g: Generator, reps = 2000): CounterfactualResult {
  if (before.length !== after.length) throw new Error('counterfactualStats: before and after differ in length');
  const n = before.length;
  const flips = before.map((p, i) => ((p >= 0.5) !== (after[i]! >= 0.5) ? 1 : 0));
  const abs = before.map((p, i) => Math.abs(after[i]! - p));
  const sgn = before.map((p, i) => after[i]! - p);
  const over = (xs: number[]) => (idx: readonly number[]): number => idx.reduce((s, i) => s + xs[i]!, 0) / idx.length;
  return { n, flipRate: bootstrapCI(n, over(flips), g, reps), meanAbsDelta: bootstrapCI(n, over(abs), g, reps), meanDelta: bootstrapCI(n, over(sgn), g, reps) };
}

/** Occurrences of each word as a whole space-separated token of the (lower-cased) text. */
export function wordCounts(text: string, words: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>(words.map((w) => [w.toLowerCase(), 0]));
  for (const t of text.toLowerCase().split(/\s+/)) {
    const c = counts.get(t);
    if (c !== undefined) counts.set(t, c + 1);
  }
  return new Map(words.map((w) => [w, counts.get(w.toLowerCase())!]));
}

/**
 * A probe template in the form of lower-cased, tokenized training text (SST-2's and
 * tools/imdb-corpus.mjs's): lower case, punctuation split off by spaces ("the nurse was tired , so").
 */
export function corpusStyle(template: string): string {
  return template.toLowerCase().replace(/([,;:!?])/g, ' $1 ').replace(/\s+/g, ' ').trim();
}
