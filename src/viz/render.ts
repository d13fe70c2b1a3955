// The views of `attn viz` as a browser module (DOM only, no framework): each render function
// draws one section of a VizDocument (src/eval/interpret-doc.ts) into an element, so another page
// (the studio) can import and place them on its own. renderViz draws all four.
//   renderAttention: a token strip (click a token: what it attends to, as shading and a list),
//     layer and head selectors, and a grid of every layer's and head's attention matrix
//     (click one to select it);
//   renderLens: the logit lens table (layers × positions, top-1 with the top-k as a tooltip);
//   renderAttributions: gradient × input and integrated gradients as coloured tokens;
//   renderAblation: the head-ablation heat map (SVG) and its table.
import type { AttributionDoc, VizDocument } from '../eval/interpret-doc.js';
import { divergingColor, heatmapSvg } from '../eval/heatmap.js';

type Attrs = Record<string, string | number>;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c);
  return e;
}

/** A token's text made visible (spaces and newlines shown). */
export function showToken(t: string): string {
  return t.replace(/\n/g, '↵').replace(/ /g, '·') || '∅';
}

export interface AttentionState {
  layer: number;
  head: number;
  /** The clicked token (query position). */
  query: number;
}

export interface AttentionView {
  readonly state: AttentionState;
  /** Selects a layer, head and/or query and redraws. */
  select(s: Partial<AttentionState>): void;
}

/** The attention viewer. The tokens carry data-index and, after a selection, data-weight (the
 *  selected query's probability of attending to them). */
export function renderAttention(root: HTMLElement, doc: VizDocument): AttentionView {
  const L = doc.attention.length;
  const H = doc.attention[0]?.length ?? 0;
  const T = doc.tokens.length;
  const state: AttentionState = { layer: 0, head: 0, query: T - 1 };
  root.replaceChildren();
  root.classList.add('viz-attention');
  const layerSel = el('select', { id: 'viz-layer' }, ...Array.from({ length: L }, (_, l) => el('option', { value: l }, `layer ${l + 1}`)));
  const headSel = el('select', { id: 'viz-head' }, ...Array.from({ length: H }, (_, h) => el('option', { value: h }, `head ${h + 1}`)));
  const status = el('p', { id: 'viz-selected', class: 'viz-status' });
  const strip = el('div', { class: 'viz-tokens', id: 'viz-attn-tokens' });
  const tokens = doc.tokens.map((t, i) => {
    const s = el('span', { class: 'viz-token', 'data-index': i, title: `#${doc.ids[i]}` }, showToken(t));
    s.addEventListener('click', () => view.select({ query: i }));
    strip.append(s);
    return s;
  });
  const list = el('ol', { class: 'viz-row', id: 'viz-row', start: 0 });
  const grid = el('div', { class: 'viz-grid', id: 'viz-grid' });
  const cell = Math.max(2, Math.min(8, Math.floor(96 / Math.max(T, 1))));
  const maps: HTMLCanvasElement[][] = [];
  for (let l = 0; l < L; l++) {
    const row = el('div', { class: 'viz-grid-row' }, el('span', { class: 'viz-grid-label' }, `L${l + 1}`));
    maps.push([]);
    for (let h = 0; h < H; h++) {
      const c = el('canvas', { width: T * cell, height: T * cell, class: 'viz-map', 'data-layer': l, 'data-head': h, title: `layer ${l + 1}, head ${h + 1}` });
      c.addEventListener('click', () => view.select({ layer: l, head: h }));
      maps[l]!.push(c);
      row.append(c);
    }
    grid.append(row);
  }
  layerSel.addEventListener('change', () => view.select({ layer: Number(layerSel.value) }));
  headSel.addEventListener('change', () => view.select({ head: Number(headSel.value) }));
  root.append(el('div', { class: 'viz-controls' }, layerSel, ' ', headSel), strip, status, list,
    el('h3', {}, 'All layers and heads (rows: layers; click a map to select it)'), grid);

  const drawMap = (c: HTMLCanvasElement, P: number[][], selected: boolean) => {
    const g = c.getContext('2d');
    if (!g) return;
    g.fillStyle = '#fff';
    g.fillRect(0, 0, c.width, c.height);
    for (let i = 0; i < T; i++) {
      for (let j = 0; j < T; j++) {
        const p = P[i]![j]!;
        g.fillStyle = i === state.query ? `rgba(214,39,40,${Math.sqrt(p)})` : `rgba(31,119,180,${Math.sqrt(p)})`;
        g.fillRect(j * cell, i * cell, cell, cell);
      }
    }
    c.classList.toggle('selected', selected);
  };
  const draw = () => {
    layerSel.value = String(state.layer);
    headSel.value = String(state.head);
    const P = doc.attention[state.layer]![state.head]!;
    const row = P[state.query]!;
    const max = Math.max(...row, 1e-12);
    tokens.forEach((s, j) => {
      s.dataset['weight'] = String(row[j]!);
      s.style.background = `rgba(214,39,40,${(row[j]! / max).toFixed(3)})`;
      s.classList.toggle('query', j === state.query);
    });
    status.textContent = `layer ${state.layer + 1}, head ${state.head + 1}: token ${state.query} ${JSON.stringify(doc.tokens[state.query])} attends to`;
    const order = row.map((p, j) => [p, j] as const).filter(([p]) => p > 0).sort((a, b) => b[0] - a[0]);
    list.replaceChildren(...order.map(([p, j]) => el('li', { 'data-key': j }, `${showToken(doc.tokens[j]!)} (${j}): ${p.toFixed(4)}`)));
    maps.forEach((r, l) => r.forEach((c, h) => drawMap(c, doc.attention[l]![h]!, l === state.layer && h === state.head)));
  };
  const view: AttentionView = {
    state,
    select(s) {
      if (s.layer !== undefined && s.layer >= 0 && s.layer < L) state.layer = s.layer;
      if (s.head !== undefined && s.head >= 0 && s.head < H) state.head = s.head;
      if (s.query !== undefined && s.query >= 0 && s.query < T) state.query = s.query;
      draw();
    },
  };
  if (T > 0 && L > 0) draw();
  return view;
}

/** The logit lens: one row per layer (embeddings first), one column per position. */
export function renderLens(root: HTMLElement, doc: VizDocument): void {
  root.replaceChildren();
  if (!doc.lens) {
    root.append(el('p', {}, 'No logit lens: this model is a classifier.'));
    return;
  }
  const lens = doc.lens;
  const head = el('tr', {}, el('th', {}, 'after'), ...doc.tokens.map((t, i) => el('th', { title: `position ${i}` }, showToken(t))));
  const rows = lens.top.map((layer, l) => el('tr', {}, el('th', {}, lens.labels[l]!), ...layer.map((top, t) => {
    const best = top[0]!;
    const td = el('td', { title: top.map((e) => `${JSON.stringify(e.token)} ${e.p.toFixed(3)}`).join('\n'), 'data-layer': l, 'data-position': t }, showToken(best.token), el('small', {}, ` ${best.p.toFixed(2)}`));
    td.style.background = `rgba(44,160,44,${best.p.toFixed(3)})`;
    return td;
  })));
  root.append(el('p', {}, `Top-1 next token read from each layer's residual stream (final norm + LM head); hover for the top ${lens.k}. The last row is the model's own prediction.`),
    el('table', { class: 'viz-lens', id: 'viz-lens' }, el('thead', {}, head), el('tbody', {}, ...rows)));
}

function attributionRow(name: string, values: readonly number[], doc: VizDocument): HTMLElement {
  const max = Math.max(...values.map(Math.abs), 1e-12);
  return el('div', { class: 'viz-attr-row' }, el('span', { class: 'viz-attr-name' }, name), ...values.map((v, i) => {
    const s = el('span', { class: 'viz-token', title: v.toFixed(5), 'data-value': v }, showToken(doc.tokens[i]!));
    s.style.background = divergingColor(v, max);
    return s;
  }));
}

/** Attributions as coloured tokens (red: raises the output, blue: lowers it) with the
 *  completeness check of integrated gradients. */
export function renderAttributions(root: HTMLElement, doc: VizDocument): void {
  root.replaceChildren();
  if (doc.classes) root.append(el('p', {}, `class probabilities: ${doc.classes.probs.map((p, c) => `${c}: ${p.toFixed(3)}`).join(', ')} (predicted ${doc.classes.predicted})`));
  for (const a of doc.attributions as AttributionDoc[]) {
    root.append(el('div', { class: 'viz-attr' },
      el('h3', {}, a.target),
      attributionRow('gradient × input', a.gradInput, doc),
      attributionRow(`integrated gradients (${a.steps} steps)`, a.integratedGradients, doc),
      el('p', { class: 'viz-status' }, `Σ IG = ${a.sum.toFixed(4)}; f(x) − f(0) = ${(a.fInput - a.fBaseline).toFixed(4)} (f(x) = ${a.fInput.toFixed(4)})`)));
  }
}

/** The head-ablation heat map and table. */
export function renderAblation(root: HTMLElement, doc: VizDocument): void {
  root.replaceChildren();
  const a = doc.ablation;
  if (!a) {
    root.append(el('p', {}, 'No head ablation in this document.'));
    return;
  }
  const figure = el('div', { class: 'viz-heatmap', id: 'viz-ablation' });
  figure.innerHTML = heatmapSvg(a.delta, {
    title: `loss change when a head is zeroed (intact ${a.base.toFixed(4)})`, rowLabel: 'layer', colLabel: 'head',
    rowNames: a.delta.map((_, l) => String(l + 1)), colNames: (a.delta[0] ?? []).map((_, h) => String(h + 1)),
    cell: a.delta[0] && a.delta[0].length > 16 ? 20 : 36,
  });
  root.append(el('p', {}, `${a.metric}: red heads hurt the text when removed, blue ones help.`), figure);
}

export const VIZ_CSS = `
body { font-family: sans-serif; margin: 1.5em; color: #222; }
section { margin-bottom: 2em; }
.viz-token { display: inline-block; padding: 2px 4px; margin: 1px; border: 1px solid #ccc; border-radius: 3px; cursor: pointer; font-family: monospace; white-space: pre; }
.viz-token.query { outline: 2px solid #222; }
.viz-grid-row { display: flex; align-items: center; gap: 4px; margin: 2px 0; }
.viz-grid-label { width: 2.5em; font-size: 12px; }
.viz-map { border: 1px solid #ccc; cursor: pointer; image-rendering: pixelated; }
.viz-map.selected { outline: 2px solid #d62728; }
.viz-lens td, .viz-lens th { font-family: monospace; padding: 2px 4px; border: 1px solid #eee; white-space: pre; }
.viz-attr-name { display: inline-block; width: 16em; font-size: 12px; }
.viz-status { color: #555; font-size: 13px; }
.viz-row { font-family: monospace; font-size: 12px; columns: 3; }
`;

/** All four views into root, under headings. Returns the attention view (for selection). */
export function renderViz(root: HTMLElement, doc: VizDocument): AttentionView {
  const section = (id: string, title: string) => {
    const body = el('div', { id });
    root.append(el('section', {}, el('h2', {}, title), body));
    return body;
  };
  root.replaceChildren(el('h1', {}, 'attn viz'), el('p', { class: 'viz-status' }, `${doc.model.description}: ${doc.model.layers} layers × ${doc.model.heads} heads, ${doc.tokens.length} tokens`));
  const view = renderAttention(section('viz-attention', 'Attention (click a token)'), doc);
  renderLens(section('viz-lens-section', 'Logit lens'), doc);
  renderAttributions(section('viz-attributions', 'Token attributions'), doc);
  renderAblation(section('viz-ablation-section', 'Head ablation'), doc);
  return view;
}
