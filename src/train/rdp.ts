// The Rényi-DP accountant of DP-SGD: the Poisson-subsampled Gaussian mechanism (Mironov, Talwar
// and Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism"), composed over
// the updates and converted to (ε, δ). Each update adds N(0, σ²C²) to a sum of per-example
// gradients clipped to norm C, over a batch where every example is present with probability q.
//
// A_α = E_{z~N(0,σ²)} [((1-q) + q·exp((2z-1)/(2σ²)))^α], and the RDP of one update at order α is
// log(A_α) / (α - 1). For integer α the binomial expansion is a finite sum (§3.2 of the paper);
// for fractional α the paper splits the integral at z0 = σ² log(1/q - 1) + 1/2 into two series
// with erfc weights (§3.3), summed here in log space with signs (the binomial coefficients of a
// fractional α change sign).

/** The order grid of Opacus's RDPAccountant (1.1 … 10.9 in steps of 0.1, then 12 … 63). */
export const DEFAULT_ORDERS: readonly number[] = [...Array.from({ length: 99 }, (_, i) => 1 + (i + 1) / 10), ...Array.from({ length: 52 }, (_, i) => 12 + i)];

/** The order grid of TensorFlow Privacy's 2019 tutorials (the grid its published figures used). */
export const TF_PRIVACY_ORDERS: readonly number[] = [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, ...Array.from({ length: 59 }, (_, i) => 5 + i), 128, 256, 512];

const LOG_HALF = Math.log(0.5);

/** log(exp(a) + exp(b)). */
function logAdd(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const m = Math.max(a, b);
  return m + Math.log1p(Math.exp(-Math.abs(a - b)));
}

/** log|Γ(x)| (Lanczos, g = 7, n = 9; relative error about 1e-15 for x > 0). */
function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  x -= 1;
  let a = c[0]!;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i]! / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** sign and log|C(α, k)| of the generalized binomial coefficient α(α-1)…(α-k+1)/k!. */
function logBinom(alpha: number, k: number): { sign: number; log: number } {
  if (Number.isInteger(alpha) && k > alpha) return { sign: 0, log: -Infinity };
  // Γ(α+1) / (Γ(k+1) Γ(α-k+1)); Γ of a negative non-integer has a sign: count the factors α-j < 0.
  let sign = 1;
  for (let j = 0; j < k; j++) if (alpha - j < 0) sign = -sign;
  const log = logGamma(alpha + 1) - logGamma(k + 1) - logGamma(alpha - k + 1);
  return { sign, log };
}

/** erfc(x) to about 1e-14 relative: the Taylor series of erf near 0, a continued fraction beyond. */
export function erfc(x: number): number {
  if (x < 0) return 2 - erfc(-x);
  return Math.exp(logErfcPositive(x));
}

/** log erfc(x), finite far into both tails. */
export function logErfc(x: number): number {
  if (x < 0) return Math.log(2 - erfc(-x));
  return logErfcPositive(x);
}

function logErfcPositive(x: number): number {
  if (x < 2) {
    // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)).
    let term = x;
    let sum = x;
    for (let n = 1; n < 200; n++) {
      term *= (-x * x) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.log(1 - (2 / Math.sqrt(Math.PI)) * sum);
  }
  // erfc(x) = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))) by the modified Lentz method.
  const tiny = 1e-300;
  let f = x;
  let c = x;
  let d = 0;
  for (let n = 1; n < 500; n++) {
    const a = n / 2;
    d = x + a * d;
    d = Math.abs(d) < tiny ? tiny : d;
    c = x + a / c;
    c = Math.abs(c) < tiny ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return -x * x - 0.5 * Math.log(Math.PI) - Math.log(f);
}

/** log A_α for integer α ≥ 2: Σ_k C(α,k) (1-q)^(α-k) q^k exp((k²-k)/(2σ²)). */
function logAInteger(q: number, sigma: number, alpha: number): number {
  let acc = -Infinity;
  for (let k = 0; k <= alpha; k++) {
    const lb = logBinom(alpha, k).log;
    acc = logAdd(acc, lb + (alpha - k) * Math.log1p(-q) + k * Math.log(q) + ((k * k - k) / (2 * sigma * sigma)));
  }
  return acc;
}

/** log A_α for fractional α > 1: the two erfc-weighted series of §3.3, with signed terms. */
function logAFractional(q: number, sigma: number, alpha: number): number {
  const s2 = sigma * sigma;
  const z0 = s2 * Math.log(1 / q - 1) + 0.5;
  // Positive and negative parts summed apart, so cancellation happens once at the end.
  let pos = -Infinity;
  let neg = -Infinity;
  for (let k = 0; k < 100000; k++) {
    const b = logBinom(alpha, k);
    const j = alpha - k;
    const t0 = b.log + k * Math.log(q) + j * Math.log1p(-q) + (k * k - k) / (2 * s2) + LOG_HALF + logErfc((k - z0) / (Math.SQRT2 * sigma));
    const t1 = b.log + j * Math.log(q) + k * Math.log1p(-q) + (j * j - j) / (2 * s2) + LOG_HALF + logErfc((z0 - j) / (Math.SQRT2 * sigma));
    const both = logAdd(t0, t1);
    if (b.sign > 0) pos = logAdd(pos, both);
    else neg = logAdd(neg, both);
    if (k > alpha && Math.max(t0, t1) < -40 + Math.max(pos, 0)) break;
  }
  if (neg === -Infinity) return pos;
  return pos + Math.log1p(-Math.exp(neg - pos));
}

function checkRdpArgs(q: number, sigma: number, alpha: number): void {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`the sampling rate q must be in [0, 1], got ${q}`);
  if (!(sigma >= 0)) throw new RangeError(`the noise multiplier σ must be a non-negative number, got ${sigma}`);
  if (!(alpha > 1) || !Number.isFinite(alpha)) throw new RangeError(`the Rényi order α must be a finite number above 1, got ${alpha}`);
}

/** RDP ε(α) of one update of the Poisson-subsampled Gaussian mechanism (rate q, noise multiplier σ). */
export function rdpSubsampledGaussian(q: number, sigma: number, alpha: number): number {
  checkRdpArgs(q, sigma, alpha);
  if (q === 0) return 0;
  if (sigma === 0) return Infinity;
  if (q === 1) return alpha / (2 * sigma * sigma);
  const logA = Number.isInteger(alpha) ? logAInteger(q, sigma, alpha) : logAFractional(q, sigma, alpha);
  return logA / (alpha - 1);
}

export type RdpConversion = 'improved' | 'classic';

/**
 * (ε, δ) from RDP values at `orders`. 'classic' is Mironov 2017 (Prop. 3): ε = rdp + log(1/δ)/(α-1);
 * 'improved' is Balle et al. 2020 (Thm. 21), used by Opacus and current TensorFlow Privacy:
 * ε = rdp + log((α-1)/α) - (log δ + log α)/(α-1). Returns the best ε and its order.
 */
export function epsilonFromRdp(orders: readonly number[], rdp: readonly number[], delta: number, conversion: RdpConversion = 'improved'): { epsilon: number; order: number } {
  if (!(delta > 0 && delta < 1)) throw new RangeError(`δ must be in (0, 1), got ${delta}`);
  if (orders.length !== rdp.length || orders.length === 0) throw new RangeError(`need one RDP value per order (${orders.length} orders, ${rdp.length} values)`);
  let best = { epsilon: Infinity, order: NaN };
  orders.forEach((a, i) => {
    const r = rdp[i]!;
    const eps = conversion === 'classic'
      ? r + Math.log(1 / delta) / (a - 1)
      : r + Math.log((a - 1) / a) - (Math.log(delta) + Math.log(a)) / (a - 1);
    if (eps < best.epsilon) best = { epsilon: Math.max(0, eps), order: a };
  });
  return best;
}

export interface AccountantOptions {
  orders?: readonly number[];
  conversion?: RdpConversion;
}

/** ε after `steps` updates at rate q and noise multiplier σ, for δ. */
export function dpSgdEpsilon(q: number, sigma: number, steps: number, delta: number, o: AccountantOptions = {}): { epsilon: number; order: number } {
  if (!(Number.isInteger(steps) && steps >= 0)) throw new RangeError(`steps must be a non-negative integer, got ${steps}`);
  const orders = o.orders ?? DEFAULT_ORDERS;
  return epsilonFromRdp(orders, orders.map((a) => steps * rdpSubsampledGaussian(q, sigma, a)), delta, o.conversion);
}

/**
 * Tracks the privacy spent as training goes: the per-update RDP is computed once for (q, σ) at
 * each order, and composition over updates is a sum (here a multiplication by their count).
 */
export class RdpAccountant {
  readonly orders: readonly number[];
  private readonly perStep: number[];
  steps = 0;

  constructor(readonly q: number, readonly sigma: number, readonly delta: number, private readonly o: AccountantOptions = {}) {
    this.orders = o.orders ?? DEFAULT_ORDERS;
    this.perStep = this.orders.map((a) => rdpSubsampledGaussian(q, sigma, a));
    if (!(delta > 0 && delta < 1)) throw new RangeError(`δ must be in (0, 1), got ${delta}`);
  }

  step(n = 1): void {
    this.steps += n;
  }

  /** ε spent so far for the accountant's δ (and the order that gave it). */
  epsilon(): { epsilon: number; order: number } {
    if (this.steps === 0) return { epsilon: 0, order: NaN };
    return epsilonFromRdp(this.orders, this.perStep.map((r) => r * this.steps), this.delta, this.o.conversion);
  }
}
