// Measures of in-context learning, as pure functions on plain arrays (tested on hand-made inputs):
//   - the in-context-learning score of Olsson et al. 2022 ("In-context Learning and Induction
//     Heads"): the loss late in the context minus the loss early in it (more negative = the
//     model uses more of its context);
//   - per-head prefix-matching and previous-token scores on sequences of random tokens repeated
//     twice, and a copying score of a head's OV circuit;
//   - the baselines of in-context linear regression (Garg et al. 2022, Figure 2): least squares,
//     k-nearest neighbours and averaging.
import type { Generator } from '../tensor/index.js';

// ---------------------------------------------------------------- ICL score

/** Mean of values[from .. to) (clipped to the array). */
function windowMean(values: ArrayLike<number>, from: number, to: number): number {
  let s = 0;
  let n = 0;
  for (let i = Math.max(0, from); i < Math.min(values.length, to); i++) {
    s += values[i]!;
    n++;
  }
  if (n === 0) throw new RangeError(`window [${from}, ${to}) holds no position of a ${values.length}-long loss curve`);
  return s / n;
}

/** Positions (0-based target indices) whose mean loss stands for "early" and "late" in context. */
export interface IclWindows {
  early: readonly [number, number];
  late: readonly [number, number];
}

/** Olsson's 50th and 500th tokens, scaled to a context of T: windows of ±T/64 around T/10 and
 *  the last T/16 positions (T = 256: positions 22..30 and 240..255). */
export function iclWindows(T: number): IclWindows {
  const w = Math.max(1, Math.round(T / 64));
  const e = Math.round(T / 10);
  return { early: [Math.max(0, e - w), e + w + 1], late: [T - Math.max(1, Math.round(T / 16)), T] };
}

/** Loss at the late window minus loss at the early window of a per-position mean loss curve. */
export function iclScore(lossByPosition: ArrayLike<number>, windows: IclWindows = iclWindows(lossByPosition.length)): number {
  return windowMean(lossByPosition, windows.late[0], windows.late[1]) - windowMean(lossByPosition, windows.early[0], windows.early[1]);
}

// ---------------------------------------------------------------- repeated random tokens

/**
 * B rows of n random tokens followed by the same n tokens again (2n per row), drawn from `allowed`
 * (default: every id below vocab). Within a row the first n are drawn without replacement when
 * n ≤ the pool, so each token's earlier occurrence is unique.
 */
export function repeatedRandomTokens(gen: Generator, vocab: number, n: number, B: number, allowed?: readonly number[]): Int32Array {
  if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`repeatedRandomTokens: n must be a positive integer, got ${n}`);
  const out = new Int32Array(B * 2 * n);
  const pool = allowed ? [...allowed] : Array.from({ length: vocab }, (_, i) => i);
  vocab = pool.length;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < n; i++) {
      let t: number;
      if (n <= vocab) {
        const j = i + gen.randint(vocab - i); // partial Fisher-Yates
        [pool[i], pool[j]] = [pool[j]!, pool[i]!];
        t = pool[i]!;
      } else t = pool[gen.randint(vocab)]!;
      out[b * 2 * n + i] = t;
      out[b * 2 * n + n + i] = t;
    }
  }
  return out;
}

/**
 * Per-head attention scores of patterns (B, H, T, T) (row = query, column = key, rows summing to 1)
 * on token rows (B, T):
 *  - prefixMatching: for queries at `from` and after, the attention on keys j ≥ 1 whose previous
 *    token equals the query's token (the position right after an earlier occurrence: where an
 *    induction head looks), averaged over the queries that have such a key;
 *  - previousToken: the attention on key i−1 from query i, averaged over i ≥ 1.
 */
export function headScores(patterns: ArrayLike<number>, tokens: ArrayLike<number>, B: number, H: number, T: number, from: number): { prefixMatching: number[]; previousToken: number[] } {
  if (patterns.length !== B * H * T * T) throw new RangeError(`headScores: patterns hold ${patterns.length} values, expected B·H·T·T = ${B * H * T * T}`);
  if (tokens.length !== B * T) throw new RangeError(`headScores: tokens hold ${tokens.length} values, expected B·T = ${B * T}`);
  const prefixMatching: number[] = [];
  const previousToken: number[] = [];
  for (let h = 0; h < H; h++) {
    let pm = 0;
    let pmN = 0;
    let prev = 0;
    let prevN = 0;
    for (let b = 0; b < B; b++) {
      const base = (b * H + h) * T * T;
      const tok = (i: number): number => tokens[b * T + i]!;
      for (let i = 1; i < T; i++) {
        prev += patterns[base + i * T + i - 1]!;
        prevN++;
        if (i < from) continue;
        let s = 0;
        let any = false;
        for (let j = 1; j <= i; j++) {
          if (tok(j - 1) === tok(i)) {
            s += patterns[base + i * T + j]!;
            any = true;
          }
        }
        if (any) {
          pm += s;
          pmN++;
        }
      }
    }
    prefixMatching.push(pmN ? pm / pmN : NaN);
    previousToken.push(prevN ? prev / prevN : NaN);
  }
  return { prefixMatching, previousToken };
}

/**
 * Copying score of a head's OV circuit M (V × V: row t = the logit change when the head attends
 * to token t): per row, the share of the other tokens whose logit M raises less than token t's own;
 * averaged over rows. 1 = the attended token is always the one promoted most (copying), 0.5 ≈ a
 * random matrix, 0 = always demoted most.
 */
export function copyingScore(M: ArrayLike<number>, V: number): number {
  if (M.length !== V * V) throw new RangeError(`copyingScore: M holds ${M.length} values, expected ${V}×${V}`);
  if (V < 2) throw new RangeError('copyingScore: needs at least 2 tokens');
  let total = 0;
  for (let t = 0; t < V; t++) {
    const own = M[t * V + t]!;
    let below = 0;
    for (let s = 0; s < V; s++) if (s !== t && M[t * V + s]! < own) below++;
    total += below / (V - 1);
  }
  return total / V;
}

// ---------------------------------------------------------------- in-context regression baselines

/** Solves A x = b (n × n, row-major) by Gaussian elimination with partial pivoting; null if singular. */
function solve(A: Float64Array, b: Float64Array, n: number): Float64Array | null {
  const a = Float64Array.from(A);
  const x = Float64Array.from(b);
  const scale = Math.max(1e-300, ...Array.from(a, Math.abs));
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r * n + c]!) > Math.abs(a[p * n + c]!)) p = r;
    if (Math.abs(a[p * n + c]!) <= 1e-12 * scale) return null;
    if (p !== c) {
      for (let k = 0; k < n; k++) [a[c * n + k], a[p * n + k]] = [a[p * n + k]!, a[c * n + k]!];
      [x[c], x[p]] = [x[p]!, x[c]!];
    }
    for (let r = c + 1; r < n; r++) {
      const f = a[r * n + c]! / a[c * n + c]!;
      if (f === 0) continue;
      for (let k = c; k < n; k++) a[r * n + k]! -= f * a[c * n + k]!;
      x[r]! -= f * x[c]!;
    }
  }
  for (let r = n - 1; r >= 0; r--) {
    let s = x[r]!;
    for (let k = r + 1; k < n; k++) s -= a[r * n + k]! * x[k]!;
    x[r] = s / a[r * n + r]!;
  }
  return x;
}

/**
 * The minimum-norm least-squares weights for k examples xs (k × d, row-major) and ys (k):
 * (XᵀX)⁻¹Xᵀy when k ≥ d, Xᵀ(XXᵀ)⁻¹y when k < d (the solution Garg et al. use below d examples).
 * Zero weights for k = 0.
 */
export function leastSquaresWeights(xs: ArrayLike<number>, ys: ArrayLike<number>, k: number, d: number): Float64Array {
  const w = new Float64Array(d);
  if (k === 0) return w;
  if (xs.length < k * d || ys.length < k) throw new RangeError(`leastSquaresWeights: ${k} examples of dimension ${d} need ${k * d} x values and ${k} y values`);
  if (k >= d) {
    const G = new Float64Array(d * d);
    const r = new Float64Array(d);
    for (let i = 0; i < k; i++) {
      for (let a = 0; a < d; a++) {
        r[a]! += xs[i * d + a]! * ys[i]!;
        for (let b = 0; b < d; b++) G[a * d + b]! += xs[i * d + a]! * xs[i * d + b]!;
      }
    }
    const sol = solve(G, r, d);
    if (sol) return sol;
  }
  // Rank-deficient or k < d: the minimum-norm solution through the k × k Gram matrix K of the
  // examples. When K is singular too (repeated or dependent examples), the ridge solution
  // Xᵀ(K + λI)⁻¹y with λ a 1e-10 share of K's mean diagonal: it tends to the minimum-norm solution
  // as λ → 0 and differs from it by O(λ) here.
  const K = new Float64Array(k * k);
  let trace = 0;
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
    let s = 0;
    for (let a = 0; a < d; a++) s += xs[i * d + a]! * xs[j * d + a]!;
    K[i * k + j] = s;
    if (i === j) trace += s;
  }
  const y = Float64Array.from({ length: k }, (_, i) => ys[i]!);
  let alpha = k < d ? solve(Float64Array.from(K), y, k) : null;
  if (!alpha) {
    const lambda = 1e-10 * Math.max(trace / k, Number.MIN_VALUE);
    for (let i = 0; i < k; i++) K[i * k + i]! += lambda;
    alpha = solve(K, y, k) ?? new Float64Array(k);
  }
  for (let i = 0; i < k; i++) for (let a = 0; a < d; a++) w[a]! += alpha[i]! * xs[i * d + a]!;
  return w;
}

/** Averaging (Garg et al.): ŵ = (1/k) Σ yᵢ xᵢ; zero for k = 0. */
export function averagingWeights(xs: ArrayLike<number>, ys: ArrayLike<number>, k: number, d: number): Float64Array {
  const w = new Float64Array(d);
  for (let i = 0; i < k; i++) for (let a = 0; a < d; a++) w[a]! += (ys[i]! * xs[i * d + a]!) / k;
  return w;
}

/** k-nearest neighbours: the mean y of the `neighbours` examples nearest xq (all when fewer); 0 for none. */
export function nearestNeighboursPredict(xs: ArrayLike<number>, ys: ArrayLike<number>, k: number, d: number, xq: ArrayLike<number>, neighbours = 3): number {
  if (k === 0) return 0;
  const dist: [number, number][] = [];
  for (let i = 0; i < k; i++) {
    let s = 0;
    for (let a = 0; a < d; a++) s += (xs[i * d + a]! - xq[a]!) ** 2;
    dist.push([s, i]);
  }
  dist.sort((p, q) => p[0] - q[0] || p[1] - q[1]);
  const use = dist.slice(0, Math.min(neighbours, k));
  return use.reduce((s, [, i]) => s + ys[i]!, 0) / use.length;
}

export const dot = (w: ArrayLike<number>, x: ArrayLike<number>, d: number, offset = 0): number => {
  let s = 0;
  for (let a = 0; a < d; a++) s += w[a]! * x[offset + a]!;
  return s;
};
