// Scaling-law fits, pure math (no I/O): Kaplan et al. 2020's power laws L(N), L(D), L(C) by
// least squares in log space; Hoffmann et al. 2022 (Chinchilla) approach 2 (IsoFLOP profiles →
// N_opt(C), D_opt(C)) and approach 3 (L(N, D) = E + A/N^α + B/D^β, Huber loss on log L, L-BFGS
// from a grid of starts, as the paper's appendix D.2 does); bootstrap intervals and R².

// ---------------------------------------------------------------- small tools

/** A seeded uniform [0, 1) stream (mulberry32), so bootstrap intervals are reproducible. */
export function seededUniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The q-quantile (0 ≤ q ≤ 1) of values, linearly interpolated (numpy's default). */
export function quantile(values: readonly number[], q: number): number {
  const s = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const pos = q * (s.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

/** 1 − SS_res / SS_tot. */
export function rSquared(observed: readonly number[], predicted: readonly number[]): number {
  const n = observed.length;
  const mean = observed.reduce((a, b) => a + b, 0) / n;
  let res = 0;
  let tot = 0;
  for (let i = 0; i < n; i++) {
    res += (observed[i]! - predicted[i]!) ** 2;
    tot += (observed[i]! - mean) ** 2;
  }
  return tot === 0 ? NaN : 1 - res / tot;
}

/** Ordinary least squares y ≈ a + b·x. */
export function linearFit(x: readonly number[], y: readonly number[]): { a: number; b: number } {
  const n = x.length;
  if (n < 2 || y.length !== n) throw new Error(`a line needs at least 2 points (x and y of one length), got ${n} and ${y.length}`);
  const mx = x.reduce((s, v) => s + v, 0) / n;
  const my = y.reduce((s, v) => s + v, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i]! - mx) * (y[i]! - my);
    sxx += (x[i]! - mx) ** 2;
  }
  if (sxx === 0) throw new Error('a line through points that all share one x is undefined');
  const b = sxy / sxx;
  return { a: my - b * mx, b };
}

/** Least squares y ≈ c0 + c1·x + c2·x² (normal equations, solved by Cramer's rule). */
export function quadraticFit(x: readonly number[], y: readonly number[]): [number, number, number] {
  if (x.length < 3) throw new Error(`a parabola needs at least 3 points, got ${x.length}`);
  // Centre x so the normal equations stay well conditioned.
  const mx = x.reduce((s, v) => s + v, 0) / x.length;
  const S = [0, 0, 0, 0, 0];
  const T = [0, 0, 0];
  x.forEach((xv, i) => {
    const u = xv - mx;
    for (let k = 0; k < 5; k++) S[k]! += u ** k;
    for (let k = 0; k < 3; k++) T[k]! += y[i]! * u ** k;
  });
  const M = [[S[0]!, S[1]!, S[2]!], [S[1]!, S[2]!, S[3]!], [S[2]!, S[3]!, S[4]!]];
  const det3 = (m: number[][]): number => m[0]![0]! * (m[1]![1]! * m[2]![2]! - m[1]![2]! * m[2]![1]!) - m[0]![1]! * (m[1]![0]! * m[2]![2]! - m[1]![2]! * m[2]![0]!) + m[0]![2]! * (m[1]![0]! * m[2]![1]! - m[1]![1]! * m[2]![0]!);
  const d = det3(M);
  if (d === 0) throw new Error('a parabola through fewer than 3 distinct x is undefined');
  const col = (j: number): number[][] => M.map((row, r) => row.map((v, c) => (c === j ? T[r]! : v)));
  const [u0, u1, u2] = [det3(col(0)) / d, det3(col(1)) / d, det3(col(2)) / d];
  // Back from u = x − mx.
  return [u0 - u1 * mx + u2 * mx * mx, u1 - 2 * u2 * mx, u2];
}

/** Percentile bootstrap: `fit` on `b` resamples (with replacement) of n points; 95 % intervals of
 *  each named value. Resamples whose fit throws or is non-finite are left out (and counted). */
export function bootstrap<K extends string>(n: number, fit: (idx: number[]) => Record<K, number>, b = 1000, seed = 1): { ci: Record<K, [number, number]>; samples: number; failed: number } {
  const rand = seededUniform(seed);
  const acc = new Map<K, number[]>();
  let failed = 0;
  for (let r = 0; r < b; r++) {
    const idx = Array.from({ length: n }, () => Math.floor(rand() * n));
    let v: Record<K, number>;
    try {
      v = fit(idx);
    } catch {
      failed++;
      continue;
    }
    if (Object.values<number>(v).some((x) => !Number.isFinite(x))) {
      failed++;
      continue;
    }
    for (const [k, x] of Object.entries(v) as [K, number][]) {
      if (!acc.has(k)) acc.set(k, []);
      acc.get(k)!.push(x);
    }
  }
  const ci = {} as Record<K, [number, number]>;
  for (const [k, xs] of acc) ci[k] = [quantile(xs, 0.025), quantile(xs, 0.975)];
  return { ci, samples: b - failed, failed };
}

// ---------------------------------------------------------------- L-BFGS

export interface LbfgsResult {
  x: number[];
  f: number;
  iters: number;
  converged: boolean;
}

/**
 * Minimises f (returning [value, gradient]) by L-BFGS (Nocedal and Wright 2006, algorithm 7.4,
 * two-loop recursion with history m) with a backtracking Armijo line search; stops when the
 * gradient's max-norm is below gtol or f stops falling (relative change below ftol).
 */
export function lbfgs(f: (x: readonly number[]) => [number, number[]], x0: readonly number[], opts: { m?: number; maxIter?: number; gtol?: number; ftol?: number } = {}): LbfgsResult {
  const m = opts.m ?? 10;
  const maxIter = opts.maxIter ?? 500;
  const gtol = opts.gtol ?? 1e-10;
  const ftol = opts.ftol ?? 1e-15;
  const dot = (a: readonly number[], b: readonly number[]): number => a.reduce((s, v, i) => s + v * b[i]!, 0);
  let x = [...x0];
  let [fx, g] = f(x);
  const S: number[][] = [];
  const Y: number[][] = [];
  let it = 0;
  for (; it < maxIter; it++) {
    if (!Number.isFinite(fx) || Math.max(...g.map(Math.abs)) < gtol) break;
    // Two-loop recursion: d = −H·g.
    const q = [...g];
    const alphas: number[] = [];
    for (let i = S.length - 1; i >= 0; i--) {
      const rho = 1 / dot(Y[i]!, S[i]!);
      const a = rho * dot(S[i]!, q);
      alphas[i] = a;
      for (let j = 0; j < q.length; j++) q[j]! -= a * Y[i]![j]!;
    }
    const gamma = S.length ? dot(S[S.length - 1]!, Y[Y.length - 1]!) / dot(Y[Y.length - 1]!, Y[Y.length - 1]!) : 1 / Math.max(1, Math.sqrt(dot(g, g)));
    for (let j = 0; j < q.length; j++) q[j]! *= gamma;
    for (let i = 0; i < S.length; i++) {
      const rho = 1 / dot(Y[i]!, S[i]!);
      const bta = rho * dot(Y[i]!, q);
      for (let j = 0; j < q.length; j++) q[j]! += S[i]![j]! * (alphas[i]! - bta);
    }
    let d = q.map((v) => -v);
    let slope = dot(g, d);
    if (!(slope < 0)) {
      // Not a descent direction (curvature went wrong): restart from steepest descent.
      S.length = 0;
      Y.length = 0;
      d = g.map((v) => -v / Math.max(1, Math.sqrt(dot(g, g))));
      slope = dot(g, d);
    }
    let step = 1;
    let xn: number[] = x;
    let fn = fx;
    let gn = g;
    let accepted = false;
    for (let k = 0; k < 60; k++) {
      xn = x.map((v, j) => v + step * d[j]!);
      [fn, gn] = f(xn);
      if (Number.isFinite(fn) && fn <= fx + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
      step *= 0.5;
    }
    if (!accepted) break;
    const s = xn.map((v, j) => v - x[j]!);
    const y = gn.map((v, j) => v - g[j]!);
    if (dot(s, y) > 1e-16) {
      S.push(s);
      Y.push(y);
      if (S.length > m) {
        S.shift();
        Y.shift();
      }
    }
    const df = Math.abs(fx - fn);
    x = xn;
    g = gn;
    const prev = fx;
    fx = fn;
    if (df <= ftol * Math.max(1, Math.abs(prev))) {
      it++;
      break;
    }
  }
  return { x, f: fx, iters: it, converged: Math.max(...g.map(Math.abs)) < Math.max(gtol, 1e-6) };
}

// ---------------------------------------------------------------- Kaplan power laws

/** L(X) = (X_c / X)^α, fitted as log L = α·log X_c − α·log X by least squares. */
export interface PowerLawFit {
  alpha: number;
  Xc: number;
  /** R² of log L (the space of the fit) and of L. */
  r2_log: number;
  r2: number;
  n: number;
  ci?: { alpha: [number, number]; Xc: [number, number] };
}

export const powerLawAt = (p: Pick<PowerLawFit, 'alpha' | 'Xc'>, x: number): number => (p.Xc / x) ** p.alpha;

function fitPowerLawOnce(x: readonly number[], L: readonly number[]): { alpha: number; Xc: number } {
  for (const [i, v] of x.entries()) if (!(v > 0 && L[i]! > 0)) throw new Error(`a power law needs positive x and L, got x ${v}, L ${L[i]} at point ${i}`);
  const { a, b } = linearFit(x.map(Math.log), L.map(Math.log));
  const alpha = -b;
  return { alpha, Xc: Math.exp(a / alpha) };
}

/** Kaplan's L(X) = (X_c/X)^α with R² and (bootstrap > 0) 95 % percentile-bootstrap intervals. */
export function fitPowerLaw(x: readonly number[], L: readonly number[], opts: { bootstrap?: number; seed?: number } = {}): PowerLawFit {
  const p = fitPowerLawOnce(x, L);
  const pred = x.map((v) => powerLawAt(p, v));
  const out: PowerLawFit = { ...p, r2_log: rSquared(L.map(Math.log), pred.map(Math.log)), r2: rSquared(L, pred), n: x.length };
  if ((opts.bootstrap ?? 0) > 0) {
    const bs = bootstrap(x.length, (idx) => fitPowerLawOnce(idx.map((i) => x[i]!), idx.map((i) => L[i]!)), opts.bootstrap, opts.seed ?? 1);
    out.ci = { alpha: bs.ci.alpha, Xc: bs.ci.Xc };
  }
  return out;
}

/** A run of a sweep as the fits read it. */
export interface ScalingPoint {
  N: number;
  D: number;
  C: number;
  L: number;
  name?: string;
}

/** Per N, the run with the most data (Kaplan's L(N) wants runs not limited by data). */
export function mostDataPerN(points: readonly ScalingPoint[]): ScalingPoint[] {
  const best = new Map<number, ScalingPoint>();
  for (const p of points) if (!best.has(p.N) || p.D > best.get(p.N)!.D) best.set(p.N, p);
  return [...best.values()].sort((a, b) => a.N - b.N);
}

/** Per N, its lowest loss over every D trained (the envelope over D): Kaplan et al. 2020 fit L(N)
 *  to models trained near convergence or early stopped, which the best run of each size
 *  approximates when the grid's longest runs are long enough for that size. */
export function bestPerN(points: readonly ScalingPoint[]): ScalingPoint[] {
  const best = new Map<number, ScalingPoint>();
  for (const p of points) if (!best.has(p.N) || p.L < best.get(p.N)!.L) best.set(p.N, p);
  return [...best.values()].sort((a, b) => a.N - b.N);
}

/** The runs of one D across model sizes: the D that the most sizes share (ties: the larger D),
 *  so L(N) compares sizes on equal data rather than mixing budgets. */
export function commonDAcrossN(points: readonly ScalingPoint[]): ScalingPoint[] {
  return commonAcross(points, (p) => p.D, (p) => p.N);
}

/** The runs of one N across D: the size with the most D values (ties: the larger N). */
export function commonNAcrossD(points: readonly ScalingPoint[]): ScalingPoint[] {
  return commonAcross(points, (p) => p.N, (p) => p.D);
}

function commonAcross(points: readonly ScalingPoint[], key: (p: ScalingPoint) => number, along: (p: ScalingPoint) => number): ScalingPoint[] {
  const groups = new Map<number, ScalingPoint[]>();
  for (const p of points) {
    if (!groups.has(key(p))) groups.set(key(p), []);
    groups.get(key(p))!.push(p);
  }
  let pick: [number, ScalingPoint[]] | null = null;
  for (const g of groups.entries()) if (!pick || g[1].length > pick[1].length || (g[1].length === pick[1].length && g[0] > pick[0])) pick = g;
  return pick ? [...pick[1]].sort((a, b) => along(a) - along(b)) : [];
}

/** Per D, the run of the largest model (Kaplan's L(D) wants runs not limited by size). */
export function largestModelPerD(points: readonly ScalingPoint[]): ScalingPoint[] {
  const best = new Map<number, ScalingPoint>();
  for (const p of points) if (!best.has(p.D) || p.N > best.get(p.D)!.N) best.set(p.D, p);
  return [...best.values()].sort((a, b) => a.D - b.D);
}

/** The compute frontier: the runs whose loss is below that of every run with less compute. */
export function computeFrontier(points: readonly ScalingPoint[]): ScalingPoint[] {
  const sorted = [...points].sort((a, b) => a.C - b.C || a.L - b.L);
  const out: ScalingPoint[] = [];
  let best = Infinity;
  for (const p of sorted) if (p.L < best) {
    out.push(p);
    best = p.L;
  }
  return out;
}

// ---------------------------------------------------------------- Chinchilla approach 3

export interface ChinchillaParams {
  E: number;
  A: number;
  B: number;
  alpha: number;
  beta: number;
}

export const chinchillaAt = (p: ChinchillaParams, N: number, D: number): number => p.E + p.A / N ** p.alpha + p.B / D ** p.beta;

/** log-sum-exp of three numbers and their softmax weights. */
function lse3(u: number, v: number, w: number): [number, number, number, number] {
  const m = Math.max(u, v, w);
  const eu = Math.exp(u - m);
  const ev = Math.exp(v - m);
  const ew = Math.exp(w - m);
  const s = eu + ev + ew;
  return [m + Math.log(s), eu / s, ev / s, ew / s];
}

/**
 * The paper's objective over θ = (a, b, e, α, β) with A = e^a, B = e^b, E = e^e:
 * Σ Huber_δ(LSE(a − α·log N, b − β·log D, e) − log L), and its gradient.
 */
export function chinchillaObjective(points: readonly ScalingPoint[], delta: number): (t: readonly number[]) => [number, number[]] {
  const lnN = points.map((p) => Math.log(p.N));
  const lnD = points.map((p) => Math.log(p.D));
  const lnL = points.map((p) => Math.log(p.L));
  return (t) => {
    const [a, b, e, al, be] = t as [number, number, number, number, number];
    let f = 0;
    const g = [0, 0, 0, 0, 0];
    for (let i = 0; i < lnN.length; i++) {
      const [l, w1, w2, w3] = lse3(a - al * lnN[i]!, b - be * lnD[i]!, e);
      const r = l - lnL[i]!;
      const ar = Math.abs(r);
      f += ar <= delta ? 0.5 * r * r : delta * (ar - 0.5 * delta);
      const h = ar <= delta ? r : delta * Math.sign(r);
      g[0]! += h * w1;
      g[1]! += h * w2;
      g[2]! += h * w3;
      g[3]! -= h * w1 * lnN[i]!;
      g[4]! -= h * w2 * lnD[i]!;
    }
    return [f, g];
  };
}

/** The paper's grid of initialisations (appendix D.2): α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1},
 *  a, b ∈ {0, 5, …, 25}: 4500 starts. */
export function chinchillaGrid(): number[][] {
  const out: number[][] = [];
  const r = (lo: number, hi: number, st: number): number[] => Array.from({ length: Math.round((hi - lo) / st) + 1 }, (_, i) => lo + i * st);
  for (const al of r(0, 2, 0.5)) for (const be of r(0, 2, 0.5)) for (const e of r(-1, 1, 0.5)) for (const a of r(0, 25, 5)) for (const b of r(0, 25, 5)) out.push([a, b, e, al, be]);
  return out;
}

export interface ChinchillaFit extends ChinchillaParams {
  /** The objective at the optimum, and how many starts were tried. */
  objective: number;
  starts: number;
  r2: number;
  r2_log: number;
  n: number;
  ci?: Record<keyof ChinchillaParams, [number, number]>;
  bootstrap_samples?: number;
}

export function fitChinchillaOnce(points: readonly ScalingPoint[], starts: readonly number[][], delta: number): { p: ChinchillaParams; objective: number } {
  if (points.length < 5) throw new Error(`L(N, D) has 5 parameters: it needs at least 5 runs, got ${points.length}`);
  const obj = chinchillaObjective(points, delta);
  let best: LbfgsResult | null = null;
  for (const s of starts) {
    const r = lbfgs(obj, s, { maxIter: 300 });
    if (Number.isFinite(r.f) && (!best || r.f < best.f)) best = r;
  }
  if (!best) throw new Error('no start of the L(N, D) fit reached a finite objective');
  const [a, b, e, alpha, beta] = best.x as [number, number, number, number, number];
  return { p: { E: Math.exp(e), A: Math.exp(a), B: Math.exp(b), alpha, beta }, objective: best.f };
}

/**
 * Chinchilla approach 3: E + A/N^α + B/D^β by the paper's Huber objective (δ = 1e-3) on log L,
 * L-BFGS from every start of the grid (chinchillaGrid, or `starts`). The bootstrap refits each
 * resample from the full fit's optimum and a thinned grid (every `thin`-th start).
 */
export function fitChinchilla(points: readonly ScalingPoint[], opts: { delta?: number; starts?: readonly number[][]; bootstrap?: number; seed?: number; thin?: number } = {}): ChinchillaFit {
  const delta = opts.delta ?? 1e-3;
  const starts = opts.starts ?? chinchillaGrid();
  const { p, objective } = fitChinchillaOnce(points, starts, delta);
  const pred = points.map((q) => chinchillaAt(p, q.N, q.D));
  const out: ChinchillaFit = {
    ...p, objective, starts: starts.length, n: points.length,
    r2: rSquared(points.map((q) => q.L), pred), r2_log: rSquared(points.map((q) => Math.log(q.L)), pred.map(Math.log)),
  };
  if ((opts.bootstrap ?? 0) > 0) {
    const thin = opts.thin ?? 150;
    const few = [[Math.log(p.A), Math.log(p.B), Math.log(p.E), p.alpha, p.beta], ...starts.filter((_, i) => i % thin === 0)];
    const bs = bootstrap(points.length, (idx) => {
      const r = fitChinchillaOnce(idx.map((i) => points[i]!), few, delta).p;
      return { E: r.E, A: r.A, B: r.B, alpha: r.alpha, beta: r.beta };
    }, opts.bootstrap, opts.seed ?? 1);
    out.ci = bs.ci;
    out.bootstrap_samples = bs.samples;
  }
  return out;
}

/** The compute-optimal split of C = 6·N·D under L(N, D) (the paper's eq. 4):
 *  N_opt = G·(C/6)^(β/(α+β)), D_opt = (C/6)^(α/(α+β)) / G, G = (αA/(βB))^(1/(α+β)). */
export function chinchillaOptimal(p: ChinchillaParams, C: number): { N: number; D: number; tokensPerParam: number } {
  const G = ((p.alpha * p.A) / (p.beta * p.B)) ** (1 / (p.alpha + p.beta));
  const N = G * (C / 6) ** (p.beta / (p.alpha + p.beta));
  const D = (C / 6) ** (p.alpha / (p.alpha + p.beta)) / G;
  return { N, D, tokensPerParam: D / N };
}

// ---------------------------------------------------------------- Chinchilla approach 2

export interface IsoFlopProfile {
  C: number;
  /** (N, L) along the profile. */
  points: { N: number; L: number }[];
  /** The parabola in log N fitted to L: L ≈ c0 + c1·ln N + c2·(ln N)². */
  parabola: [number, number, number];
  N_opt: number;
  D_opt: number;
  /** Whether the minimum lies inside the profile's N range (else N_opt is an extrapolation). */
  interior: boolean;
}

/**
 * IsoFLOP profiles from a grid of runs: for each compute C of `levels`, each model size whose runs
 * span C gets its loss at C by interpolating ln L linearly in ln C between its two nearest runs
 * (a size's runs differ only in D, and C is proportional to D there). Profiles with at least
 * `minPoints` sizes get a parabola in ln N (as the paper fits; only the sizes within
 * `halfWidthDecades` of the lowest point when given) and its minimum N_opt; D_opt = C / (6·N_opt).
 */
export function isoFlopProfiles(points: readonly ScalingPoint[], levels: readonly number[], minPoints = 3, halfWidthDecades = Infinity): IsoFlopProfile[] {
  const bySize = new Map<number, ScalingPoint[]>();
  for (const p of points) {
    if (!bySize.has(p.N)) bySize.set(p.N, []);
    bySize.get(p.N)!.push(p);
  }
  for (const runs of bySize.values()) runs.sort((a, b) => a.C - b.C);
  const out: IsoFlopProfile[] = [];
  for (const C of levels) {
    const prof: { N: number; L: number }[] = [];
    for (const [N, runs] of [...bySize.entries()].sort((a, b) => a[0] - b[0])) {
      if (runs.length < 2 || C < runs[0]!.C * (1 - 1e-9) || C > runs[runs.length - 1]!.C * (1 + 1e-9)) continue;
      let k = runs.findIndex((r) => r.C >= C * (1 - 1e-9));
      if (k === 0) k = 1;
      const [lo, hi] = [runs[k - 1]!, runs[k]!];
      const t = (Math.log(C) - Math.log(lo.C)) / (Math.log(hi.C) - Math.log(lo.C));
      prof.push({ N, L: Math.exp(Math.log(lo.L) + t * (Math.log(hi.L) - Math.log(lo.L))) });
    }
    if (prof.length < minPoints) continue;
    // A parabola is only a local model of the profile: fit it near the lowest point when asked.
    const low = prof.reduce((a, b) => (b.L < a.L ? b : a));
    const near = prof.filter((q) => Math.abs(Math.log10(q.N / low.N)) <= halfWidthDecades + 1e-9);
    if (near.length < 3) continue;
    const lnN = near.map((q) => Math.log(q.N));
    const par = quadraticFit(lnN, near.map((q) => q.L));
    const c2 = par[2];
    const vertex = c2 > 0 ? -par[1] / (2 * c2) : NaN;
    const interior = c2 > 0 && vertex >= Math.min(...lnN) && vertex <= Math.max(...lnN);
    const N_opt = Math.exp(vertex);
    out.push({ C, points: prof, parabola: par, N_opt, D_opt: C / (6 * N_opt), interior });
  }
  return out;
}

/** Approach 2's laws N_opt ∝ C^a and D_opt ∝ C^b, fitted to the profiles' minima (interior ones
 *  only, unless `all`), with bootstrap intervals over those minima. */
export function fitOptimalAllocation(profiles: readonly IsoFlopProfile[], opts: { bootstrap?: number; seed?: number; all?: boolean } = {}): {
  a: number; b: number; kN: number; kD: number; n: number; r2_N: number; ci?: { a: [number, number]; b: [number, number] };
} {
  const use = profiles.filter((p) => Number.isFinite(p.N_opt) && (opts.all || p.interior));
  if (use.length < 2) throw new Error(`N_opt(C) needs at least 2 IsoFLOP profiles with a minimum inside their range, got ${use.length}`);
  const lnC = use.map((p) => Math.log(p.C));
  const fitN = linearFit(lnC, use.map((p) => Math.log(p.N_opt)));
  const fitD = linearFit(lnC, use.map((p) => Math.log(p.D_opt)));
  const pred = lnC.map((c) => fitN.a + fitN.b * c);
  const out: { a: number; b: number; kN: number; kD: number; n: number; r2_N: number; ci?: { a: [number, number]; b: [number, number] } } = {
    a: fitN.b, b: fitD.b, kN: Math.exp(fitN.a), kD: Math.exp(fitD.a), n: use.length, r2_N: rSquared(use.map((p) => Math.log(p.N_opt)), pred),
  };
  if ((opts.bootstrap ?? 0) > 0 && use.length >= 3) {
    const bs = bootstrap(use.length, (idx) => ({
      a: linearFit(idx.map((i) => lnC[i]!), idx.map((i) => Math.log(use[i]!.N_opt))).b,
      b: linearFit(idx.map((i) => lnC[i]!), idx.map((i) => Math.log(use[i]!.D_opt))).b,
    }), opts.bootstrap, opts.seed ?? 1);
    out.ci = bs.ci;
  }
  return out;
}
