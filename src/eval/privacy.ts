// Memorisation and privacy measurements on a causal language model:
// - canary exposure (Carlini et al. 2019, "The Secret Sharer"): a secret of random digits put in
//   the training text; its log-perplexity ranked among every candidate of the secret space, exact
//   by a pruned walk over the digit tree, or extrapolated from a fit to sampled candidates;
// - extraction: greedy continuations of training prefixes that reproduce the text verbatim;
// - membership inference: per-example losses scored by ROC AUC (by the loss, or by its
//   difference to a reference model's loss).
import type { Backend } from '../backend/backend.js';
import { noGrad, tensor, tidy, type Generator, type Tensor } from '../tensor/index.js';

/** What these measurements need of a model: logits (B, T, V) for int32 ids (B, T). */
export interface CausalLM {
  forward(idx: Tensor): { logits: Tensor };
  parameters(): Tensor[];
  readonly training: boolean;
  train(on?: boolean): unknown;
}

function backendOf(model: CausalLM): Backend {
  return model.parameters()[0]!.backend;
}

/**
 * For equal-length sequences, the log-softmax rows the model gives at the asked positions:
 * out[i][j] is the (V,) log-distribution of the token after seqs[i][positions[j]]. Batched.
 */
export function nextTokenLogProbs(model: CausalLM, seqs: readonly (readonly number[])[], positions: readonly number[], batch = 256): Float64Array[][] {
  const out: Float64Array[][] = [];
  if (seqs.length === 0) return out;
  const L = seqs[0]!.length;
  for (const s of seqs) if (s.length !== L) throw new Error(`nextTokenLogProbs: sequences must have equal lengths (${s.length} vs ${L})`);
  for (const p of positions) if (!(Number.isInteger(p) && p >= 0 && p < L)) throw new RangeError(`nextTokenLogProbs: position ${p} outside a sequence of ${L}`);
  const wasTraining = model.training;
  model.train(false);
  try {
    const backend = backendOf(model);
    for (let s = 0; s < seqs.length; s += batch) {
      const chunk = seqs.slice(s, s + batch);
      const ids = new Int32Array(chunk.length * L);
      chunk.forEach((q, i) => ids.set(q, i * L));
      const logits = noGrad(() => tidy(() => model.forward(tensor(ids, { shape: [chunk.length, L], dtype: 'int32', backend })).logits.keep()));
      const V = logits.shape[2]!;
      const data = logits.data();
      logits.dispose();
      for (let i = 0; i < chunk.length; i++) {
        out.push(positions.map((p) => logSoftmaxRow(data, (i * L + p) * V, V)));
      }
    }
    return out;
  } finally {
    model.train(wasTraining);
  }
}

function logSoftmaxRow(data: ArrayLike<number>, off: number, V: number): Float64Array {
  let m = -Infinity;
  for (let v = 0; v < V; v++) m = Math.max(m, data[off + v]!);
  let s = 0;
  for (let v = 0; v < V; v++) s += Math.exp(data[off + v]! - m);
  const lse = m + Math.log(s);
  const row = new Float64Array(V);
  for (let v = 0; v < V; v++) row[v] = data[off + v]! - lse;
  return row;
}

/** A canary's format: context ids, then secret digits separated by a separator token. */
export interface CanaryFormat {
  /** Token ids before the first digit ("my secret number is "). */
  prefix: readonly number[];
  /** Token ids of the digits 0..9 (the secret space is digitIds^length). */
  digitIds: readonly number[];
  /** Token between digits (a space), or null for adjacent digits. */
  separator: number | null;
  length: number;
}

/** The ids of a secret (digit values 0..9) in the format: d1 sep d2 sep ... dn. */
export function secretIds(f: CanaryFormat, digits: readonly number[]): number[] {
  const out: number[] = [];
  digits.forEach((d, i) => {
    if (i > 0 && f.separator !== null) out.push(f.separator);
    out.push(f.digitIds[d]!);
  });
  return out;
}

/** Log-perplexity (−Σ log p, nats) of each secret after the prefix, separators included. */
export function secretLogPerplexities(model: CanaryModel, f: CanaryFormat, secrets: readonly (readonly number[])[], batch = 256): Float64Array {
  const seqs = secrets.map((d) => [...f.prefix, ...secretIds(f, d)]);
  const L = seqs[0]?.length ?? 0;
  const first = f.prefix.length - 1;
  const positions = Array.from({ length: L - 1 - first }, (_, i) => first + i);
  const rows = nextTokenLogProbs(model, seqs, positions, batch);
  return Float64Array.from(rows.map((r, i) => -r.reduce((s, row, j) => s + row[seqs[i]![first + j + 1]!]!, 0)));
}

type CanaryModel = CausalLM;

export interface ExactExposure {
  /** 1 + the number of candidates with a strictly lower log-perplexity. */
  rank: number;
  /** Candidates in the secret space (10^length). */
  space: number;
  /** log2(space) − log2(rank). */
  exposure: number;
  /** The canary's log-perplexity (nats). */
  logPerplexity: number;
  /** Model evaluations the pruned walk needed (prefixes expanded). */
  expanded: number;
}

/**
 * Exact exposure: the rank of the canary's log-perplexity among all 10^length secrets. Walks the
 * digit tree a level at a time, expanding only prefixes whose partial log-perplexity is still
 * below the canary's (the terms are ≥ 0, so a prefix at or above it holds no better secret);
 * each level's prefixes are scored in batches. Ties count against the canary (strictly lower only).
 */
export function exposureExact(model: CanaryModel, f: CanaryFormat, canary: readonly number[], batch = 256): ExactExposure {
  if (canary.length !== f.length) throw new Error(`the canary has ${canary.length} digits, the format ${f.length}`);
  const target = secretLogPerplexities(model, f, [canary], batch)[0]!;
  const n = f.length;
  // Frontier: digit prefixes with their partial log-perplexity (below target).
  let frontier: { digits: number[]; score: number }[] = [{ digits: [], score: 0 }];
  let better = 0;
  let expanded = 0;
  for (let level = 0; level < n && frontier.length > 0; level++) {
    // The sequence up to and including the separator before digit `level`: its last row is the
    // distribution of that digit; the row before it scores the separator.
    const seqs = frontier.map((node) => [...f.prefix, ...secretIds(f, node.digits), ...(level > 0 && f.separator !== null ? [f.separator] : [])]);
    const L = seqs[0]!.length;
    const withSep = level > 0 && f.separator !== null;
    const positions = withSep ? [L - 2, L - 1] : [L - 1];
    const rows = nextTokenLogProbs(model, seqs, positions, batch);
    expanded += frontier.length;
    const next: { digits: number[]; score: number }[] = [];
    frontier.forEach((node, i) => {
      const sepCost = withSep ? -rows[i]![0]![f.separator!]! : 0;
      const dist = rows[i]![positions.length - 1]!;
      for (let d = 0; d < 10; d++) {
        const s = node.score + sepCost - dist[f.digitIds[d]!]!;
        if (s >= target) continue;
        if (level === n - 1) better++;
        else next.push({ digits: [...node.digits, d], score: s });
      }
    });
    frontier = next;
  }
  const space = 10 ** n;
  const rank = better + 1;
  return { rank, space, exposure: Math.log2(space) - Math.log2(rank), logPerplexity: target, expanded };
}

/** Skew-normal parameters (location ξ, scale ω, shape α). */
export interface SkewNormal {
  xi: number;
  omega: number;
  alpha: number;
}

/**
 * A skew-normal fitted to samples by the method of moments (Azzalini): the sample skewness fixes
 * δ = α/√(1+α²), then ω and ξ follow from the variance and mean. |skewness| is capped just
 * below the family's limit (0.9953).
 */
export function fitSkewNormal(xs: ArrayLike<number>): SkewNormal {
  const n = xs.length;
  if (n < 3) throw new Error(`a skew-normal fit needs at least 3 samples, got ${n}`);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += xs[i]!;
  mean /= n;
  let m2 = 0;
  let m3 = 0;
  for (let i = 0; i < n; i++) {
    const d = xs[i]! - mean;
    m2 += d * d;
    m3 += d * d * d;
  }
  m2 /= n;
  m3 /= n;
  const g1max = 0.99;
  const g1 = Math.max(-g1max, Math.min(g1max, m3 / m2 ** 1.5));
  // γ1 = (4-π)/2 · (δ√(2/π))³ / (1 - 2δ²/π)^(3/2), solved for |δ√(2/π)| = b.
  const t = Math.cbrt(Math.abs(g1) * 2 / (4 - Math.PI)) ** 2; // = b² / (1 - b²)
  const b = Math.sqrt(t / (1 + t)) * Math.sign(g1);
  const delta = b / Math.sqrt(2 / Math.PI);
  const omega = Math.sqrt(m2 / (1 - (2 * delta * delta) / Math.PI));
  const xi = mean - omega * delta * Math.sqrt(2 / Math.PI);
  const alpha = delta / Math.sqrt(Math.max(1e-12, 1 - delta * delta));
  return { xi, omega, alpha };
}

/** log of the standard normal CDF Φ(z), accurate far into the lower tail. */
export function logNormalCdf(z: number): number {
  if (z > -5) return Math.log(0.5 * erfcApprox(-z / Math.SQRT2));
  // Asymptotic series for the tail: Φ(z) ≈ φ(z)/|z| · (1 - 1/z² + 3/z⁴ - 15/z⁶).
  const z2 = z * z;
  return -0.5 * z2 - Math.log(-z) - 0.5 * Math.log(2 * Math.PI) + Math.log(1 - 1 / z2 + 3 / (z2 * z2) - 15 / (z2 * z2 * z2));
}

function erfcApprox(x: number): number {
  // Numerical Recipes' erfcc (Chebyshev), fractional error < 1.2e-7: ample for exposures.
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? r : 2 - r;
}

/**
 * log of the skew-normal CDF at x: F(x) = Φ(z) − 2 T(z, α) with Owen's T, computed here by
 * integrating the density 2 φ(u) Φ(αu) on the left of z (Simpson, in log space for the tail).
 */
export function logSkewNormalCdf(x: number, p: SkewNormal): number {
  const z = (x - p.xi) / p.omega;
  const lo = Math.min(z, 0) - 40;
  const steps = 4000;
  const h = (z - lo) / steps;
  const logDens = (u: number): number => Math.log(2) - 0.5 * u * u - 0.5 * Math.log(2 * Math.PI) + logNormalCdf(p.alpha * u);
  let m = -Infinity;
  const vals = new Float64Array(steps + 1);
  for (let i = 0; i <= steps; i++) {
    vals[i] = logDens(lo + i * h);
    m = Math.max(m, vals[i]!);
  }
  let s = 0;
  for (let i = 0; i <= steps; i++) s += (i === 0 || i === steps ? 1 : i % 2 ? 4 : 2) * Math.exp(vals[i]! - m);
  return m + Math.log((s * h) / 3);
}

export interface ExtrapolatedExposure {
  /** −log2 F(canary) under the fitted skew-normal, at most log2 |R| (no rank in a space of |R|
   *  secrets gives more; past the sampled secrets the fit's tail can claim hundreds of bits). */
  exposure: number;
  /** The same under a normal fit (the paper's simpler choice), capped alike. */
  exposureNormal: number;
  /** Whether either figure hit the cap: the canary lies beyond every sampled secret, where only
   *  the exact walk ranks it. */
  capped: boolean;
  fit: SkewNormal;
  samples: number;
  logPerplexity: number;
}

/**
 * The paper's extrapolation (§4.3): score `samples` secrets drawn uniformly, fit a distribution to
 * their log-perplexities, and read the canary's exposure as −log2 of its CDF there.
 */
export function exposureExtrapolated(model: CanaryModel, f: CanaryFormat, canary: readonly number[], samples: number, g: Generator, batch = 256): ExtrapolatedExposure {
  const secrets = Array.from({ length: samples }, () => Array.from({ length: f.length }, () => g.randint(10)));
  const xs = secretLogPerplexities(model, f, secrets, batch);
  const target = secretLogPerplexities(model, f, [canary], batch)[0]!;
  const fit = fitSkewNormal(xs);
  let mean = 0;
  for (const x of xs) mean += x;
  mean /= xs.length;
  let v = 0;
  for (const x of xs) v += (x - mean) ** 2;
  const sd = Math.sqrt(v / (xs.length - 1));
  const max = f.length * Math.log2(10);
  const skew = -logSkewNormalCdf(target, fit) / Math.LN2;
  const normal = -logNormalCdf((target - mean) / sd) / Math.LN2;
  return {
    exposure: Math.min(skew, max), exposureNormal: Math.min(normal, max), capped: skew > max || normal > max,
    fit, samples, logPerplexity: target,
  };
}

/**
 * ROC AUC of scores where positives should score higher: the probability that a random positive
 * outscores a random negative, ties counting one half (the Mann–Whitney U statistic / (n₊n₋)).
 */
export function rocAuc(positives: ArrayLike<number>, negatives: ArrayLike<number>): number {
  const np = positives.length;
  const nn = negatives.length;
  if (np === 0 || nn === 0) throw new Error(`ROC AUC needs positives and negatives (got ${np} and ${nn})`);
  const all: { s: number; pos: boolean }[] = [];
  for (let i = 0; i < np; i++) all.push({ s: positives[i]!, pos: true });
  for (let i = 0; i < nn; i++) all.push({ s: negatives[i]!, pos: false });
  for (const a of all) if (Number.isNaN(a.s)) throw new Error('ROC AUC: a score is NaN');
  all.sort((a, b) => a.s - b.s);
  // Mid-ranks over runs of ties.
  let rankSumPos = 0;
  for (let i = 0; i < all.length;) {
    let j = i;
    while (j + 1 < all.length && all[j + 1]!.s === all[i]!.s) j++;
    const mid = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) if (all[k]!.pos) rankSumPos += mid;
    i = j + 1;
  }
  return (rankSumPos - (np * (np + 1)) / 2) / (np * nn);
}

/** The ROC curve's points (false-positive rate, true-positive rate), thresholds from high to low. */
export function rocCurve(positives: ArrayLike<number>, negatives: ArrayLike<number>): { fpr: number; tpr: number }[] {
  const all = [...Array.from(positives, (s) => ({ s, pos: true })), ...Array.from(negatives, (s) => ({ s, pos: false }))].sort((a, b) => b.s - a.s);
  const pts = [{ fpr: 0, tpr: 0 }];
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < all.length; i++) {
    if (all[i]!.pos) tp++;
    else fp++;
    if (i + 1 === all.length || all[i + 1]!.s !== all[i]!.s) pts.push({ fpr: fp / negatives.length, tpr: tp / positives.length });
  }
  return pts;
}

/** Mean next-token cross-entropy (nats) of each window (ids of length T + 1: inputs and targets). */
export function windowLosses(model: CausalLM, windows: readonly (readonly number[])[], batch = 64): Float64Array {
  if (windows.length === 0) return new Float64Array(0);
  const L = windows[0]!.length;
  const positions = Array.from({ length: L - 1 }, (_, i) => i);
  // The model reads the first L-1 tokens; the row at t scores token t+1.
  const rows = nextTokenLogProbs(model, windows.map((w) => w.slice(0, L - 1)), positions, batch);
  return Float64Array.from(rows.map((r, i) => -r.reduce((s, row, t) => s + row[windows[i]![t + 1]!]!, 0) / (L - 1)));
}

/**
 * Greedy continuation of each prefix for `length` tokens (batched, the whole context re-read each
 * step; contexts longer than the model's block are cut to their last `block` tokens).
 */
export function greedyContinuations(model: CausalLM, prefixes: readonly (readonly number[])[], length: number, block: number, batch = 128): number[][] {
  const out: number[][] = prefixes.map(() => []);
  for (let s = 0; s < prefixes.length; s += batch) {
    const ctx = prefixes.slice(s, s + batch).map((p) => [...p]);
    for (let t = 0; t < length; t++) {
      const win = ctx.map((c) => c.slice(-block));
      const rows = nextTokenLogProbs(model, win, [win[0]!.length - 1], win.length);
      rows.forEach((r, i) => {
        const row = r[0]!;
        let best = 0;
        for (let v = 1; v < row.length; v++) if (row[v]! > row[best]!) best = v;
        ctx[i]!.push(best);
        out[s + i]!.push(best);
      });
    }
  }
  return out;
}

/** Share of prefixes whose greedy continuation reproduces the true next `length` tokens exactly. */
export function extractionRate(model: CausalLM, tokens: ArrayLike<number>, offsets: readonly number[], prefixLen: number, length: number, block: number): { rate: number; extracted: number; total: number; meanMatched: number } {
  const prefixes = offsets.map((o) => Array.from({ length: prefixLen }, (_, i) => tokens[o + i]!));
  const cont = greedyContinuations(model, prefixes, length, block);
  let extracted = 0;
  let matched = 0;
  cont.forEach((c, i) => {
    let m = 0;
    while (m < length && c[m] === tokens[offsets[i]! + prefixLen + m]) m++;
    matched += m;
    if (m === length) extracted++;
  });
  return { rate: extracted / offsets.length, extracted, total: offsets.length, meanMatched: matched / offsets.length };
}

/** A 95 % percentile-bootstrap interval of the ROC AUC, resampling positives and negatives apart. */
export function rocAucInterval(positives: ArrayLike<number>, negatives: ArrayLike<number>, g: Generator, reps = 1000, level = 0.95): { estimate: number; low: number; high: number } {
  const p = Array.from(positives);
  const n = Array.from(negatives);
  const vals: number[] = [];
  for (let r = 0; r < reps; r++) {
    const ps = p.map(() => p[g.randint(p.length)]!);
    const ns = n.map(() => n[g.randint(n.length)]!);
    vals.push(rocAuc(ps, ns));
  }
  vals.sort((a, b) => a - b);
  const at = (q: number): number => vals[Math.min(vals.length - 1, Math.max(0, Math.round(q * (vals.length - 1))))]!;
  return { estimate: rocAuc(p, n), low: at((1 - level) / 2), high: at((1 + level) / 2) };
}
