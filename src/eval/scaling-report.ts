// The analysis of a sweep's results: every fit of src/eval/scaling.ts on the runs at or below a
// compute limit, the held-out prediction, the SVG plots and a Markdown summary. Pure (no I/O).
import { linePlotSvg, linearTicks, PALETTE, type PlotSeries } from './plot.js';
import {
  bestPerN, bootstrap, chinchillaAt, chinchillaGrid, chinchillaOptimal, computeFrontier, fitChinchilla, fitChinchillaOnce, fitOptimalAllocation, fitPowerLaw,
  isoFlopProfiles, commonDAcrossN, commonNAcrossD, powerLawAt, type ChinchillaFit, type IsoFlopProfile, type PowerLawFit, type ScalingPoint,
} from './scaling.js';

/** What the analysis reads of a result line (the sweep's SweepResult has these and more). */
export interface RunRecord {
  name: string;
  N: number;
  D: number;
  C: number;
  val_loss: number;
  n_layer?: number;
  n_embd?: number;
  n_head?: number;
  iters?: number;
  wall_s?: number;
  params?: number;
}

export interface ScalingAnalysis {
  fit_max_compute: number;
  fit_runs: string[];
  kaplan_N: PowerLawFit & { runs: string[]; selection: LOfNRuns };
  kaplan_D: PowerLawFit & { runs: string[] };
  kaplan_C: PowerLawFit & { runs: string[] };
  chinchilla3: ChinchillaFit;
  isoflop: { profiles: IsoFlopProfile[]; allocation: ReturnType<typeof fitOptimalAllocation> | null; error?: string };
  tokens_per_param: { approach3: { C: number; N_opt: number; D_opt: number; tokensPerParam: number }[]; approach2: { C: number; tokensPerParam: number; interior: boolean }[] };
  prediction: null | {
    run: string; N: number; D: number; C: number; ratio_to_largest_fit_compute: number;
    measured: number;
    approach3: { predicted: number; ci: [number, number]; error_pct: number };
    kaplan_C: { predicted: number; error_pct: number };
  };
}

const toPoint = (r: RunRecord): ScalingPoint => ({ N: r.N, D: r.D, C: r.C, L: r.val_loss, name: r.name });

/** All fits on the runs with C ≤ fitMaxCompute (the held-out run left out), and its prediction. */
/** Which runs enter Kaplan's L(N): 'envelope' (default), each size's best run over every run but
 *  the held-out one, the compute cap not applied (L(N) describes sizes trained as far as the grid
 *  goes; the cap only serves the prediction); 'common_d', the sizes at the D most of them share,
 *  within the cap (the first sweep's choice, which compares undertrained models). */
export type LOfNRuns = 'envelope' | 'common_d';

export function analyseSweep(runs: readonly RunRecord[], opts: { fitMaxCompute?: number; heldout?: string; bootstrap?: number; seed?: number; isoflopPerDecade?: number; gridThin?: number; lOfN?: LOfNRuns } = {}): ScalingAnalysis {
  const B = opts.bootstrap ?? 500;
  const seed = opts.seed ?? 1;
  const held = opts.heldout ? runs.find((r) => r.name === opts.heldout) : undefined;
  if (opts.heldout && !held) throw new Error(`the held-out run '${opts.heldout}' is not among the results`);
  const limit = opts.fitMaxCompute ?? Infinity;
  const fitRuns = runs.filter((r) => r.C <= limit && r !== held);
  if (fitRuns.length < 5) throw new Error(`only ${fitRuns.length} runs at or below ${limit} FLOPs: the fits need at least 5`);
  const pts = fitRuns.map(toPoint);
  const names = (ps: ScalingPoint[]): string[] => ps.map((p) => p.name!);
  // A grid this small has no run that is unlimited by data or by size: L(N) compares the sizes at
  // the D they all share, L(D) the size with the most D values (see commonDAcrossN).
  const lOfN = opts.lOfN ?? 'envelope';
  const nSet = lOfN === 'envelope' ? bestPerN(runs.filter((r) => r !== held).map(toPoint)) : commonDAcrossN(pts);
  const dSet = commonNAcrossD(pts);
  const cSet = computeFrontier(pts);
  const kaplan_N = { ...fitPowerLaw(nSet.map((p) => p.N), nSet.map((p) => p.L), { bootstrap: B, seed }), runs: names(nSet), selection: lOfN };
  const kaplan_D = { ...fitPowerLaw(dSet.map((p) => p.D), dSet.map((p) => p.L), { bootstrap: B, seed }), runs: names(dSet) };
  const kaplan_C = { ...fitPowerLaw(cSet.map((p) => p.C), cSet.map((p) => p.L), { bootstrap: B, seed }), runs: names(cSet) };
  // The paper's full grid of starts (every gridThin-th when asked, for quick checks).
  const grid = chinchillaGrid().filter((_, i) => i % (opts.gridThin ?? 1) === 0);
  const chinchilla3 = fitChinchilla(pts, { starts: grid });
  // The bootstrap of approach 3 also carries the held-out prediction of each resample.
  const few = [[Math.log(chinchilla3.A), Math.log(chinchilla3.B), Math.log(chinchilla3.E), chinchilla3.alpha, chinchilla3.beta], ...grid.filter((_, i) => i % Math.max(1, Math.round(150 / (opts.gridThin ?? 1))) === 0)];
  const bs = bootstrap(pts.length, (idx) => {
    const p = fitChinchillaOnce(idx.map((i) => pts[i]!), few, 1e-3).p;
    return { E: p.E, A: p.A, B: p.B, alpha: p.alpha, beta: p.beta, pred: held ? chinchillaAt(p, held.N, held.D) : 0 };
  }, Math.min(B, 200), seed);
  chinchilla3.ci = { E: bs.ci.E, A: bs.ci.A, B: bs.ci.B, alpha: bs.ci.alpha, beta: bs.ci.beta };
  chinchilla3.bootstrap_samples = bs.samples;

  const Cs = pts.map((p) => p.C);
  const perDecade = opts.isoflopPerDecade ?? 4;
  const lo = Math.ceil(Math.log10(Math.min(...Cs)) * perDecade);
  const hi = Math.floor(Math.log10(Math.max(...Cs)) * perDecade);
  const levels = Array.from({ length: Math.max(0, hi - lo + 1) }, (_, i) => 10 ** ((lo + i) / perDecade));
  const profiles = isoFlopProfiles(pts, levels);
  let allocation: ScalingAnalysis['isoflop']['allocation'] = null;
  let error: string | undefined;
  try {
    allocation = fitOptimalAllocation(profiles, { bootstrap: B, seed });
  } catch (e) {
    error = (e as Error).message;
  }
  const tpC = [Math.max(...Cs), ...(held ? [held.C] : []), 1e15, 1e18];
  const tokens_per_param = {
    approach3: tpC.map((C) => {
      const o = chinchillaOptimal(chinchilla3, C);
      return { C, N_opt: o.N, D_opt: o.D, tokensPerParam: o.tokensPerParam };
    }),
    approach2: profiles.map((p) => ({ C: p.C, tokensPerParam: p.D_opt / p.N_opt, interior: p.interior })),
  };
  let prediction: ScalingAnalysis['prediction'] = null;
  if (held) {
    const p3 = chinchillaAt(chinchilla3, held.N, held.D);
    const pc = powerLawAt(kaplan_C, held.C);
    const err = (p: number): number => (100 * (p - held.val_loss)) / held.val_loss;
    prediction = {
      run: held.name, N: held.N, D: held.D, C: held.C, ratio_to_largest_fit_compute: held.C / Math.max(...Cs), measured: held.val_loss,
      approach3: { predicted: p3, ci: bs.ci.pred, error_pct: err(p3) },
      kaplan_C: { predicted: pc, error_pct: err(pc) },
    };
  }
  return {
    fit_max_compute: limit, fit_runs: names(pts), kaplan_N, kaplan_D, kaplan_C, chinchilla3, isoflop: { profiles, allocation, ...(error ? { error } : {}) }, tokens_per_param, prediction,
  };
}

// ---------------------------------------------------------------- plots

const logRange = (lo: number, hi: number, n = 40): number[] => Array.from({ length: n }, (_, i) => lo * (hi / lo) ** (i / (n - 1)));
const lossTicks = (ls: number[]): number[] => linearTicks(Math.min(...ls), Math.max(...ls), 6).filter((t) => t > 0);

/** The SVG plots of a sweep: loss against N, D and C with the fits, the IsoFLOP profiles, and N_opt(C). */
export function scalingPlots(runs: readonly RunRecord[], a: ScalingAnalysis): Record<string, string> {
  const fitNames = new Set(a.fit_runs);
  const held = a.prediction ? runs.find((r) => r.name === a.prediction!.run) : undefined;
  // A held-out run predicted before it is trained has no loss yet: only its prediction is drawn.
  const measured = held !== undefined && Number.isFinite(held.val_loss);
  // Every run is drawn, those above the fit's compute cap too (they can enter L(N)).
  void fitNames;
  const all = [...runs];
  const ls = all.map((r) => r.val_loss).filter(Number.isFinite).concat(a.prediction ? [a.prediction.approach3.predicted, a.prediction.kaplan_C.predicted] : []);
  const yTicks = lossTicks(ls);
  const common = { logX: true, logY: true, yTicks, yLabel: 'validation loss (nats per token)' };
  // Series per size and per D come from the fitted runs; the held-out run is its own series.
  const byN = [...new Set(all.filter((r) => r !== held).map((r) => r.N))].sort((x, y) => x - y);
  const byD = [...new Set(all.filter((r) => r !== held).map((r) => r.D))].sort((x, y) => x - y);
  const out: Record<string, string> = {};

  // L against N: one line per D, the Kaplan fit and approach 3 at the largest D.
  const sN: PlotSeries[] = byD.map((D, i) => ({ name: `D = ${fmt(D)}`, color: PALETTE[i % PALETTE.length], points: all.filter((r) => r.D === D && r !== held).sort((x, y) => x.N - y.N).map((r) => [r.N, r.val_loss] as const) }));
  const envelope = a.kaplan_N.runs.map((n) => runs.find((r) => r.name === n)!).filter(Boolean);
  if (a.kaplan_N.selection === 'envelope') sN.push({ name: 'best run of each size (L(N) fit)', color: '#000000', points: envelope.map((r) => [r.N, r.val_loss] as const) });
  const nR = logRange(Math.min(...byN), Math.max(...byN));
  sN.push({ name: `Kaplan L(N): α_N ${a.kaplan_N.alpha.toFixed(3)}`, color: '#000000', dashed: true, markers: false, points: nR.map((n) => [n, powerLawAt(a.kaplan_N, n)] as const) });
  if (measured) sN.push({ name: `held out (${held.name})`, color: '#e377c2', points: [[held.N, held.val_loss]] });
  out['loss_vs_N.svg'] = linePlotSvg(sN, { ...common, title: 'loss against non-embedding parameters N', xLabel: 'N (non-embedding parameters)' });

  // L against D: one line per N, the Kaplan fit.
  const sD: PlotSeries[] = byN.map((N, i) => ({ name: `N = ${fmt(N)}`, color: PALETTE[i % PALETTE.length], points: all.filter((r) => r.N === N && r !== held).sort((x, y) => x.D - y.D).map((r) => [r.D, r.val_loss] as const) }));
  const dR = logRange(Math.min(...byD), Math.max(...byD));
  sD.push({ name: `Kaplan L(D): α_D ${a.kaplan_D.alpha.toFixed(3)}`, color: '#000000', dashed: true, markers: false, points: dR.map((d) => [d, powerLawAt(a.kaplan_D, d)] as const) });
  if (measured) sD.push({ name: `held out (${held.name})`, color: '#e377c2', points: [[held.D, held.val_loss]] });
  out['loss_vs_D.svg'] = linePlotSvg(sD, { ...common, title: 'loss against training tokens D', xLabel: 'D (tokens)' });

  // L against C: every run by N, the frontier fit, the held-out run and its predictions.
  const sC: PlotSeries[] = byN.map((N, i) => ({ name: `N = ${fmt(N)}`, color: PALETTE[i % PALETTE.length], points: all.filter((r) => r.N === N && r !== held).sort((x, y) => x.C - y.C).map((r) => [r.C, r.val_loss] as const) }));
  const Cmax = held ? held.C : Math.max(...all.map((r) => r.C));
  const cR = logRange(Math.min(...all.map((r) => r.C)), Cmax);
  sC.push({ name: `frontier L(C): α_C ${a.kaplan_C.alpha.toFixed(3)}`, color: '#000000', dashed: true, markers: false, points: cR.map((c) => [c, powerLawAt(a.kaplan_C, c)] as const) });
  if (held && a.prediction) {
    if (measured) sC.push({ name: `held out, measured ${held.val_loss.toFixed(3)}`, color: '#e377c2', points: [[held.C, held.val_loss]] });
    sC.push({ name: `predicted (approach 3) ${a.prediction.approach3.predicted.toFixed(3)}`, color: '#7f7f7f', points: [[held.C, a.prediction.approach3.predicted]] });
  }
  out['loss_vs_C.svg'] = linePlotSvg(sC, { ...common, title: 'loss against training compute C', xLabel: 'C (FLOPs)' });

  // IsoFLOP profiles: the interpolated points and each parabola.
  const sI: PlotSeries[] = [];
  a.isoflop.profiles.forEach((p, i) => {
    const color = PALETTE[i % PALETTE.length];
    sI.push({ name: `C = ${p.C.toExponential(1)}${p.interior ? '' : ' (min. outside)'}`, color, points: p.points.map((q) => [q.N, q.L] as const) });
    const ns = p.points.map((q) => q.N);
    const r = logRange(Math.min(...ns), Math.max(...ns), 30);
    sI.push({ name: '', color, dashed: true, markers: false, points: r.map((n) => [n, p.parabola[0] + p.parabola[1] * Math.log(n) + p.parabola[2] * Math.log(n) ** 2] as const) });
  });
  const iso = sI.filter((s) => s.name !== '');
  const isoLines = sI.filter((s) => s.name === '');
  out['isoflop.svg'] = linePlotSvg([...iso, ...isoLines.map((s, i) => ({ ...s, name: i === 0 ? 'parabolas in ln N' : '' }))], {
    ...common, yTicks: lossTicks(a.isoflop.profiles.flatMap((p) => p.points.map((q) => q.L)).concat(yTicks)), title: 'IsoFLOP profiles (loss at fixed compute, interpolated from the grid)', xLabel: 'N (non-embedding parameters)',
  });

  // N_opt(C): approach 2's minima and law, approach 3's closed form.
  const inner = a.isoflop.profiles.filter((p) => p.interior);
  const cs = a.isoflop.profiles.map((p) => p.C).concat(held ? [held.C] : []);
  const sO: PlotSeries[] = [{ name: 'approach 2: IsoFLOP minima', points: inner.map((p) => [p.C, p.N_opt] as const) }];
  if (a.isoflop.allocation) {
    const al = a.isoflop.allocation;
    sO.push({ name: `approach 2: N_opt ∝ C^${al.a.toFixed(2)}`, dashed: true, markers: false, points: logRange(Math.min(...cs), Math.max(...cs)).map((c) => [c, al.kN * c ** al.a] as const) });
  }
  if (cs.length) sO.push({ name: `approach 3: N_opt ∝ C^${(a.chinchilla3.beta / (a.chinchilla3.alpha + a.chinchilla3.beta)).toFixed(2)}`, dashed: true, markers: false, points: logRange(Math.min(...cs), Math.max(...cs)).map((c) => [c, chinchillaOptimal(a.chinchilla3, c).N] as const) });
  out['optimal_N.svg'] = linePlotSvg(sO, { logX: true, logY: true, title: 'compute-optimal model size', xLabel: 'C (FLOPs)', yLabel: 'N_opt (non-embedding parameters)' });
  return out;
}

const fmt = (v: number): string => (v >= 1e6 ? `${(v / 1e6).toPrecision(3)}M` : v >= 1e3 ? `${(v / 1e3).toPrecision(3)}k` : String(v));
const ci = (c?: [number, number], d = 3): string => (c ? ` [${c[0].toFixed(d)}, ${c[1].toFixed(d)}]` : '');
const sci = (v: number): string => v.toExponential(2);

/** A Markdown summary: the runs table, each fit with its interval and R², the prediction. */
export function scalingMarkdown(runs: readonly RunRecord[], a: ScalingAnalysis): string {
  const fitNames = new Set(a.fit_runs);
  const L: string[] = [];
  L.push('| run | n_layer × n_embd × n_head | N (non-emb.) | D (tokens) | C (FLOPs) | val loss | wall s | in fit |');
  L.push('|---|---|---:|---:|---:|---:|---:|---|');
  for (const r of [...runs].sort((x, y) => x.N - y.N || x.D - y.D)) {
    L.push(`| ${r.name} | ${r.n_layer ?? '?'} × ${r.n_embd ?? '?'} × ${r.n_head ?? '?'} | ${r.N.toLocaleString('en-US')} | ${r.D.toLocaleString('en-US')} | ${sci(r.C)} | ${Number.isFinite(r.val_loss) ? r.val_loss.toFixed(4) : 'not trained yet'} | ${r.wall_s?.toFixed(0) ?? '?'} | ${fitNames.has(r.name) ? 'yes' : a.prediction?.run === r.name ? 'held out' : a.kaplan_N.runs.includes(r.name) ? 'L(N) only' : 'no'} |`);
  }
  L.push('');
  L.push(`Fits on ${a.fit_runs.length} runs with C ≤ ${sci(a.fit_max_compute)} FLOPs; 95 % percentile-bootstrap intervals in brackets; R² of log L (the fit's space) and of L.`);
  L.push('');
  L.push('| law | exponent | scale | R² (log L) | R² (L) | runs |');
  L.push('|---|---|---|---:|---:|---:|');
  const lOfNWhere = a.kaplan_N.selection === 'envelope' ? 'best run of each size' : `at D = ${a.kaplan_N.runs.length ? fmt(runs.find((r) => r.name === a.kaplan_N.runs[0])!.D) : '?'}`;
  L.push(`| Kaplan L(N) = (N_c/N)^α_N, ${lOfNWhere} | α_N = ${a.kaplan_N.alpha.toFixed(4)}${ci(a.kaplan_N.ci?.alpha, 4)} | N_c = ${sci(a.kaplan_N.Xc)} | ${a.kaplan_N.r2_log.toFixed(4)} | ${a.kaplan_N.r2.toFixed(4)} | ${a.kaplan_N.n} |`);
  L.push(`| Kaplan L(D) = (D_c/D)^α_D, at N = ${a.kaplan_D.runs.length ? fmt(runs.find((r) => r.name === a.kaplan_D.runs[0])!.N) : '?'} | α_D = ${a.kaplan_D.alpha.toFixed(4)}${ci(a.kaplan_D.ci?.alpha, 4)} | D_c = ${sci(a.kaplan_D.Xc)} | ${a.kaplan_D.r2_log.toFixed(4)} | ${a.kaplan_D.r2.toFixed(4)} | ${a.kaplan_D.n} |`);
  L.push(`| Kaplan L(C) frontier = (C_c/C)^α_C | α_C = ${a.kaplan_C.alpha.toFixed(4)}${ci(a.kaplan_C.ci?.alpha, 4)} | C_c = ${sci(a.kaplan_C.Xc)} | ${a.kaplan_C.r2_log.toFixed(4)} | ${a.kaplan_C.r2.toFixed(4)} | ${a.kaplan_C.n} |`);
  const c3 = a.chinchilla3;
  L.push(`| Chinchilla 3: E + A/N^α + B/D^β | α = ${c3.alpha.toFixed(4)}${ci(c3.ci?.alpha, 4)}, β = ${c3.beta.toFixed(4)}${ci(c3.ci?.beta, 4)} | E = ${c3.E.toFixed(4)}${ci(c3.ci?.E, 4)}, A = ${c3.A.toPrecision(4)}${c3.ci ? ` [${c3.ci.A[0].toPrecision(3)}, ${c3.ci.A[1].toPrecision(3)}]` : ''}, B = ${c3.B.toPrecision(4)}${c3.ci ? ` [${c3.ci.B[0].toPrecision(3)}, ${c3.ci.B[1].toPrecision(3)}]` : ''} | ${c3.r2_log.toFixed(4)} | ${c3.r2.toFixed(4)} | ${c3.n} |`);
  const al = a.isoflop.allocation;
  if (al) L.push(`| Chinchilla 2: N_opt ∝ C^a, D_opt ∝ C^b | a = ${al.a.toFixed(3)}${ci(al.ci?.a)}, b = ${al.b.toFixed(3)}${ci(al.ci?.b)} | from ${al.n} IsoFLOP minima | ${al.r2_N.toFixed(4)} (ln N_opt) | | ${al.n} |`);
  else L.push(`| Chinchilla 2 | not fitted: ${a.isoflop.error ?? ''} | | | | |`);
  L.push('');
  L.push(`Approach 3's optimal split gives N_opt ∝ C^${(c3.beta / (c3.alpha + c3.beta)).toFixed(3)}, D_opt ∝ C^${(c3.alpha / (c3.alpha + c3.beta)).toFixed(3)} (Chinchilla: 0.46 and 0.54).`);
  L.push('');
  L.push('| C (FLOPs) | approach 3: N_opt | D_opt | tokens per parameter |');
  L.push('|---:|---:|---:|---:|');
  for (const t of a.tokens_per_param.approach3) L.push(`| ${sci(t.C)} | ${fmt(Math.round(t.N_opt))} | ${fmt(Math.round(t.D_opt))} | ${t.tokensPerParam.toFixed(1)} |`);
  if (a.tokens_per_param.approach2.length) {
    L.push('');
    L.push('| C (FLOPs) | IsoFLOP N_opt | tokens per parameter | minimum inside the profile |');
    L.push('|---:|---:|---:|---|');
    a.isoflop.profiles.forEach((p) => L.push(`| ${sci(p.C)} | ${Number.isFinite(p.N_opt) ? fmt(Math.round(p.N_opt)) : '—'} | ${Number.isFinite(p.N_opt) ? (p.D_opt / p.N_opt).toFixed(1) : '—'} | ${p.interior ? 'yes' : 'no'} |`));
  }
  if (a.prediction) {
    const p = a.prediction;
    L.push('');
    L.push(`Held-out run ${p.run}: N ${p.N.toLocaleString('en-US')}, D ${p.D.toLocaleString('en-US')}, C ${sci(p.C)} = ${p.ratio_to_largest_fit_compute.toFixed(1)} × the largest compute in the fit.`);
    L.push('');
    L.push('| predictor | predicted | measured | error |');
    L.push('|---|---:|---:|---:|');
    const m = Number.isFinite(p.measured) ? p.measured.toFixed(4) : 'not trained yet';
    const e = (pct: number): string => (Number.isFinite(pct) ? `${pct >= 0 ? '+' : ''}${pct.toFixed(2)} %` : '—');
    L.push(`| Chinchilla approach 3, L(N, D) | ${p.approach3.predicted.toFixed(4)}${ci(p.approach3.ci, 4)} | ${m} | ${e(p.approach3.error_pct)} |`);
    L.push(`| Kaplan frontier L(C) | ${p.kaplan_C.predicted.toFixed(4)} | ${m} | ${e(p.kaplan_C.error_pct)} |`);
  }
  return L.join('\n') + '\n';
}
