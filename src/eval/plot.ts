// A small, dependency-free SVG line plot: several named series, linear or log axes (decade
// ticks), axis labels, a legend and a title. Pure: it returns the SVG text.

export interface PlotSeries {
  name: string;
  /** [x, y] pairs; pairs with a non-finite coordinate (or ≤ 0 on a log axis) are gaps. */
  points: readonly (readonly [number, number])[];
  color?: string;
  /** Draw a dot at each point (default true). */
  markers?: boolean;
  dashed?: boolean;
}

export interface LinePlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  logX?: boolean;
  logY?: boolean;
  width?: number;
  height?: number;
  /** Tick positions to use instead of the automatic ones. */
  xTicks?: readonly number[];
  yTicks?: readonly number[];
  xFormat?: (v: number) => string;
  yFormat?: (v: number) => string;
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export const xmlEscape = (s: string): string => s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Ticks at round steps (1, 2, 5 × 10^k) covering [lo, hi]. */
export function linearTicks(lo: number, hi: number, target = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const r = raw / mag;
  const step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  const ticks: number[] = [];
  for (let i = Math.ceil(lo / step - 1e-9); i * step <= hi + step * 1e-9; i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

/** The decades 10^k with lo ≤ 10^k ≤ hi (lo, hi > 0). */
export function decadeTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let k = Math.ceil(Math.log10(lo) - 1e-9); k <= Math.floor(Math.log10(hi) + 1e-9); k++) out.push(Number((10 ** k).toPrecision(12)));
  return out;
}

/** Short number labels: 0.001, 0.5, 12, 1k, 2.5M, 1e-7. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e15 || a < 1e-4) return v.toExponential(0).replace('e+', 'e');
  const units: [number, string][] = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [u, s] of units) if (a >= u) return `${Number((v / u).toPrecision(3))}${s}`;
  return String(Number(v.toPrecision(3)));
}

/** Byte counts in binary units: 512 B, 4 KiB, 1.5 GiB. */
export function formatBytes(v: number): string {
  const a = Math.abs(v);
  const units: [number, string][] = [[2 ** 40, 'TiB'], [2 ** 30, 'GiB'], [2 ** 20, 'MiB'], [2 ** 10, 'KiB']];
  for (const [u, s] of units) if (a >= u) return `${Number((v / u).toPrecision(3))} ${s}`;
  return `${Math.round(v)} B`;
}

interface Axis {
  lo: number;
  hi: number;
  log: boolean;
  ticks: number[];
}

function makeAxis(values: number[], log: boolean, given?: readonly number[]): Axis {
  let lo = values.length ? Math.min(...values) : log ? 1 : 0;
  let hi = values.length ? Math.max(...values) : log ? 10 : 1;
  if (log) {
    if (given) {
      // The data and the given ticks, a little padded.
      const ticks = given.filter((t) => t > 0);
      for (const t of ticks) [lo, hi] = [Math.min(lo, t), Math.max(hi, t)];
      return { lo: lo / 1.15, hi: hi * 1.15, log, ticks };
    }
    // Whole decades, so the decade ticks frame the data.
    lo = 10 ** Math.floor(Math.log10(lo) + 1e-9);
    hi = 10 ** Math.ceil(Math.log10(hi) - 1e-9);
    if (hi <= lo) hi = lo * 10;
    return { lo, hi, log, ticks: decadeTicks(lo, hi) };
  }
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(lo))) [lo, hi] = [lo - 0.5, hi + 0.5];
  else {
    const pad = (hi - lo) * 0.05;
    [lo, hi] = [lo - pad, hi + pad];
  }
  const ticks = given ? [...given] : linearTicks(lo, hi);
  if (given) for (const t of ticks) [lo, hi] = [Math.min(lo, t), Math.max(hi, t)];
  return { lo, hi, log, ticks };
}

const usable = (v: number, log: boolean): boolean => Number.isFinite(v) && (!log || v > 0);

/** An SVG line plot of the series. */
export function linePlotSvg(series: readonly PlotSeries[], opts: LinePlotOptions = {}): string {
  const W = opts.width ?? 720;
  const H = opts.height ?? 440;
  const logX = opts.logX ?? false;
  const logY = opts.logY ?? false;
  const legendW = Math.min(220, 40 + 7 * Math.max(4, ...series.map((s) => s.name.length)));
  const m = { l: 72, r: 24 + (series.length ? legendW + 12 : 0), t: 40, b: 54 };
  const pw = Math.max(10, W - m.l - m.r);
  const ph = Math.max(10, H - m.t - m.b);
  const ok = (p: readonly [number, number]): boolean => usable(p[0], logX) && usable(p[1], logY);
  const pts = series.flatMap((s) => s.points.filter(ok));
  const xa = makeAxis(pts.map((p) => p[0]), logX, opts.xTicks);
  const ya = makeAxis(pts.map((p) => p[1]), logY, opts.yTicks);
  const frac = (a: Axis, v: number): number => (a.log ? (Math.log10(v) - Math.log10(a.lo)) / (Math.log10(a.hi) - Math.log10(a.lo)) : (v - a.lo) / (a.hi - a.lo));
  const sx = (x: number): number => m.l + frac(xa, x) * pw;
  const sy = (y: number): number => m.t + (1 - frac(ya, y)) * ph;
  const f = (v: number): string => v.toFixed(1);
  const xf = opts.xFormat ?? formatTick;
  const yf = opts.yFormat ?? formatTick;
  const inX = (v: number): boolean => v >= xa.lo * (1 - 1e-9) && v <= xa.hi * (1 + 1e-9);
  const inY = (v: number): boolean => v >= ya.lo - Math.abs(ya.lo) * 1e-9 && v <= ya.hi + Math.abs(ya.hi) * 1e-9;
  const xt = xa.ticks.filter(inX);
  const yt = ya.ticks.filter(inY);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  if (opts.title) out.push(`<text x="${f(m.l + pw / 2)}" y="22" text-anchor="middle" font-size="15">${xmlEscape(opts.title)}</text>`);
  // Grid: minor lines at 2..9 × 10^k on log axes, then the ticks.
  out.push('<g stroke="#f0f0f0" stroke-width="1">');
  for (const [a, vert] of [[xa, true], [ya, false]] as const) {
    if (!a.log) continue;
    for (let k = Math.floor(Math.log10(a.lo)); k < Math.ceil(Math.log10(a.hi)); k++) {
      for (let d = 2; d <= 9; d++) {
        const v = d * 10 ** k;
        if (v <= a.lo || v >= a.hi) continue;
        out.push(vert ? `<line x1="${f(sx(v))}" y1="${m.t}" x2="${f(sx(v))}" y2="${m.t + ph}"/>` : `<line x1="${m.l}" y1="${f(sy(v))}" x2="${m.l + pw}" y2="${f(sy(v))}"/>`);
      }
    }
  }
  out.push('</g>');
  out.push('<g stroke="#dddddd" stroke-width="1">');
  for (const v of xt) out.push(`<line x1="${f(sx(v))}" y1="${m.t}" x2="${f(sx(v))}" y2="${m.t + ph}"/>`);
  for (const v of yt) out.push(`<line x1="${m.l}" y1="${f(sy(v))}" x2="${m.l + pw}" y2="${f(sy(v))}"/>`);
  out.push('</g>');
  out.push(`<g stroke="black" stroke-width="1"><line x1="${m.l}" y1="${m.t + ph}" x2="${m.l + pw}" y2="${m.t + ph}"/><line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${m.t + ph}"/>`);
  for (const v of xt) out.push(`<line x1="${f(sx(v))}" y1="${m.t + ph}" x2="${f(sx(v))}" y2="${m.t + ph + 5}"/>`);
  for (const v of yt) out.push(`<line x1="${m.l - 5}" y1="${f(sy(v))}" x2="${m.l}" y2="${f(sy(v))}"/>`);
  out.push('</g>');
  for (const v of xt) out.push(`<text class="xtick" x="${f(sx(v))}" y="${m.t + ph + 19}" text-anchor="middle">${xmlEscape(xf(v))}</text>`);
  for (const v of yt) out.push(`<text class="ytick" x="${m.l - 8}" y="${f(sy(v) + 4)}" text-anchor="end">${xmlEscape(yf(v))}</text>`);
  if (opts.xLabel) out.push(`<text x="${f(m.l + pw / 2)}" y="${H - 12}" text-anchor="middle">${xmlEscape(opts.xLabel)}</text>`);
  if (opts.yLabel) out.push(`<text x="16" y="${f(m.t + ph / 2)}" text-anchor="middle" transform="rotate(-90 16 ${f(m.t + ph / 2)})">${xmlEscape(opts.yLabel)}</text>`);
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    // Missing points split the line into runs.
    const runs: (readonly [number, number])[][] = [[]];
    for (const p of s.points) {
      if (ok(p)) runs[runs.length - 1]!.push(p);
      else if (runs[runs.length - 1]!.length) runs.push([]);
    }
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    for (const r of runs) {
      if (r.length >= 2) out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.8"${dash} points="${r.map(([x, y]) => `${f(sx(x))},${f(sy(y))}`).join(' ')}"/>`);
      if (s.markers ?? true) for (const [x, y] of r) out.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3" fill="${color}"/>`);
      else if (r.length === 1) out.push(`<circle cx="${f(sx(r[0]![0]))}" cy="${f(sy(r[0]![1]))}" r="2" fill="${color}"/>`);
    }
  });
  if (series.length) {
    const lx = m.l + pw + 12;
    out.push(`<g class="legend"><rect x="${lx}" y="${m.t}" width="${legendW}" height="${12 + series.length * 20}" fill="white" stroke="#999"/>`);
    series.forEach((s, i) => {
      const color = s.color ?? PALETTE[i % PALETTE.length]!;
      const y = m.t + 16 + i * 20;
      out.push(`<line x1="${lx + 8}" y1="${y}" x2="${lx + 32}" y2="${y}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
      if (s.markers ?? true) out.push(`<circle cx="${lx + 20}" cy="${y}" r="3" fill="${color}"/>`);
      out.push(`<text x="${lx + 40}" y="${y + 4}">${xmlEscape(s.name)}</text>`);
    });
    out.push('</g>');
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/**
 * One line of a training run's metrics.jsonl. Records of updates (every log_interval) carry
 * train_loss (the mean objective of that update's batches, before it), its logged parts (e.g.
 * ce_loss, moe_aux_loss), lr, grad_norm, dt_ms and tokens_per_s; records of evaluation steps
 * also carry the task's metrics (val_loss, eval_train_loss, val_accuracy, val_bleu, ...). The
 * record of the evaluation after the last update has no training fields.
 */
export interface MetricsRecord {
  step: number;
  train_loss?: number;
  /** Cross-entropy part of train_loss (language models). */
  ce_loss?: number;
  /** Sum over MoE layers of the load-balancing losses (included in train_loss). */
  moe_aux_loss?: number;
  /** Layer index → share of the routed choices per expert (sums to 1). */
  moe_util?: Record<string, number[]>;
  /** Layer index → share of the routed choices dropped for capacity. */
  moe_dropped?: Record<string, number>;
  lr: number;
  grad_norm?: number;
  dt_ms?: number;
  tokens_per_s?: number;
  /** Resident memory of the process in MiB (Node only). */
  rss_mib?: number;
  /** Training tokens (or examples) processed so far, this record's update included. */
  tokens: number;
  elapsed_s: number;
  val_loss?: number;
  eval_train_loss?: number;
  [metric: string]: unknown;
}

/** Train loss (per logged update) and val loss (at evaluations) against the update, as SVG. */
export function lossPlotSvg(records: readonly MetricsRecord[], opts: { title?: string; width?: number; height?: number } = {}): string {
  const pick = (k: 'train_loss' | 'val_loss') => records.filter((r) => typeof r[k] === 'number').map((r) => [r.step, r[k] as number] as const);
  return linePlotSvg([
    { name: 'train', color: PALETTE[0], markers: false, points: pick('train_loss') },
    { name: 'val', color: PALETTE[1], markers: true, points: pick('val_loss') },
  ], { title: opts.title ?? 'loss', xLabel: 'step', yLabel: 'loss', width: opts.width, height: opts.height });
}
