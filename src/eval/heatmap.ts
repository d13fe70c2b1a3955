// A heat map as a standalone SVG (head ablation: layers × heads): a diverging scale, blue for
// negative, white at 0, red for positive, symmetric around 0 so the colours compare across cells.
import { xmlEscape } from './plot.js';

export interface HeatmapOptions {
  title?: string;
  rowLabel?: string;
  colLabel?: string;
  /** Row and column names (default: 0, 1, …). */
  rowNames?: string[];
  colNames?: string[];
  /** Cell size in pixels (default 36). */
  cell?: number;
  /** Digits of the value written in each cell (default 3; cells under 28 px get none). */
  digits?: number;
}

/** The fill of value v on a scale whose ends are ±max. */
export function divergingColor(v: number, max: number): string {
  const s = max > 0 ? Math.max(-1, Math.min(1, v / max)) : 0;
  const fade = (c: number) => Math.round(255 - (255 - c) * Math.abs(s));
  // Towards #d62728 (red) above 0, #1f77b4 (blue) below.
  const [r, g, b] = s >= 0 ? [fade(0xd6), fade(0x27), fade(0x28)] : [fade(0x1f), fade(0x77), fade(0xb4)];
  return `rgb(${r},${g},${b})`;
}

/** values[row][col] → an SVG document. */
export function heatmapSvg(values: readonly (readonly number[])[], opts: HeatmapOptions = {}): string {
  const rows = values.length;
  const cols = rows ? values[0]!.length : 0;
  if (!values.every((r) => r.length === cols)) throw new Error('heatmapSvg: every row needs the same number of columns');
  const cell = opts.cell ?? 36;
  const digits = opts.digits ?? 3;
  const left = 70, top = opts.title ? 46 : 28, right = 90, bottom = 40;
  // Wide enough for the title (about 7 px a character at 13 px).
  const W = Math.max(left + cols * cell + right, Math.ceil((opts.title?.length ?? 0) * 7 + 16)), H = top + rows * cell + bottom;
  let max = 0;
  for (const r of values) for (const v of r) if (Number.isFinite(v)) max = Math.max(max, Math.abs(v));
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`];
  if (opts.title) out.push(`<text x="8" y="18" font-size="13">${xmlEscape(opts.title)}</text>`);
  values.forEach((r, i) => {
    const y = top + i * cell;
    out.push(`<text x="${left - 6}" y="${y + cell / 2 + 4}" text-anchor="end">${xmlEscape(opts.rowNames?.[i] ?? String(i))}</text>`);
    r.forEach((v, j) => {
      const x = left + j * cell;
      out.push(`<rect class="cell" x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${divergingColor(v, max)}" stroke="#ddd"><title>${xmlEscape(`${opts.rowLabel ?? 'row'} ${opts.rowNames?.[i] ?? i}, ${opts.colLabel ?? 'column'} ${opts.colNames?.[j] ?? j}: ${v}`)}</title></rect>`);
      if (cell >= 28) out.push(`<text x="${x + cell / 2}" y="${y + cell / 2 + 4}" text-anchor="middle" font-size="9">${v.toFixed(digits)}</text>`);
    });
  });
  for (let j = 0; j < cols; j++) out.push(`<text x="${left + j * cell + cell / 2}" y="${top - 6}" text-anchor="middle">${xmlEscape(opts.colNames?.[j] ?? String(j))}</text>`);
  if (opts.colLabel) out.push(`<text x="${left + (cols * cell) / 2}" y="${top + rows * cell + 18}" text-anchor="middle">${xmlEscape(opts.colLabel)}</text>`);
  if (opts.rowLabel) out.push(`<text x="14" y="${top + (rows * cell) / 2}" text-anchor="middle" transform="rotate(-90 14 ${top + (rows * cell) / 2})">${xmlEscape(opts.rowLabel)}</text>`);
  // Colour key: −max … 0 … +max.
  const kx = left + cols * cell + 24, kh = Math.max(rows * cell, 60);
  for (let s = 0; s < 20; s++) out.push(`<rect x="${kx}" y="${top + (s * kh) / 20}" width="14" height="${kh / 20 + 0.5}" fill="${divergingColor(max * (1 - (2 * s) / 19), max)}"/>`);
  out.push(`<text x="${kx + 18}" y="${top + 8}">${(+max.toPrecision(3)).toString()}</text>`, `<text x="${kx + 18}" y="${top + kh / 2 + 4}">0</text>`, `<text x="${kx + 18}" y="${top + kh}">${(-max.toPrecision(3)).toString()}</text>`);
  out.push('</svg>');
  return out.join('\n');
}

/** values[row][col] as a Markdown table, rows and columns numbered from `first`. */
export function heatmapTable(values: readonly (readonly number[])[], rowLabel = 'layer', colLabel = 'head', digits = 4, first = 0): string {
  const cols = values[0]?.length ?? 0;
  const head = `| ${rowLabel} \\ ${colLabel} | ${Array.from({ length: cols }, (_, j) => j + first).join(' | ')} |`;
  const sep = `|---|${'---|'.repeat(cols)}`;
  return [head, sep, ...values.map((r, i) => `| ${i + first} | ${r.map((v) => v.toFixed(digits)).join(' | ')} |`)].join('\n');
}
