// "Inside": what a GPT computes for a prompt, as plain arrays a page can draw: the attention
// probabilities of every layer and head, the next-token distribution, and the token embeddings
// projected to 2-D by PCA. Each view is a pure function of (model, token ids), so another view
// (the logit lens, attributions) can be added beside these without touching them.
import { attentionMaps as probedAttentionMaps } from '../eval/interpret.js';
import { DecoderLM } from '../models/decoder.js';
import type { GPT } from '../models/gpt.js';
import { add, logSoftmax, noGrad, permute, reshape, slice, split, tensor, tidy, type Tensor } from '../tensor/index.js';

export interface AttentionMaps {
  layers: number;
  heads: number;
  /** Sequence length: each map is T × T, row i the query, column j the key (0 above the diagonal). */
  T: number;
  /** probs[layer][head]: T·T probabilities, row-major. */
  probs: Float32Array[][];
}

/** Whether query i sees key j under the model's attention pattern (causal, then its sparsity). */
function visibleFn(model: GPT): (i: number, j: number) => boolean {
  const c = model.config;
  const kind = c.attention ?? 'dense';
  if (kind === 'dense') return (i, j) => j <= i;
  if (kind === 'local') return (i, j) => j <= i && i - j < (c.attn_window ?? 1);
  if (kind === 'strided') {
    const s = c.attn_stride ?? 1;
    return (i, j) => j <= i && (i - j < s || (i - j) % s === 0);
  }
  if (kind === 'fixed') {
    const b = c.attn_stride ?? 1;
    const summary = c.attn_summary ?? 1;
    return (i, j) => j <= i && (Math.floor(j / b) === Math.floor(i / b) || j % b >= b - summary);
  }
  throw new Error(`attention maps: '${kind}' attention has no softmax probabilities to show (it is not softmax attention)`);
}

/**
 * softmax(q·kᵀ/√D) of each layer and head for `ids` (one sequence), recomputed from the block's
 * own q and k (after RoPE when the model uses it) while the blocks run as usual, so layer l's map
 * is the one the model's forward uses. Query heads share kv heads as the kernels map them.
 */
export function attentionMaps(model: GPT | DecoderLM, ids: readonly number[]): AttentionMaps {
  if (model instanceof DecoderLM) return decoderAttentionMaps(model, ids);
  const cfg = model.config;
  const T = ids.length;
  if (T < 1 || T > cfg.block_size) throw new Error(`attention maps: ${T} tokens, the model takes 1 to ${cfg.block_size}`);
  const visible = visibleFn(model);
  const t = model.transformer;
  const wasTraining = model.training;
  model.eval();
  const probs: Float32Array[][] = [];
  try {
    noGrad(() => tidy(() => {
      const backend = t.wte.weight.backend;
      let x: Tensor = t.wte.forward(tensor(ids as number[], { dtype: 'int32', shape: [1, T], backend }));
      if (t.wpe) x = add(x, t.wpe.positions(T, 0));
      else if (t.pe) x = add(x, t.pe.positions(T, 0));
      for (const block of t.h.items) {
        const a = block.attn;
        const h = cfg.norm_placement === 'post' ? x : block.ln_1.forward(x);
        const H = a.nHead;
        const Hkv = a.nKvHead;
        const D = a.headDim;
        const qkv = a.c_attn.forward(h);
        const [q0, k0] = split(qkv, [H * D, Hkv * D, Hkv * D], -1);
        let q = permute(reshape(q0!, [1, T, H, D]), [0, 2, 1, 3]);
        let k = permute(reshape(k0!, [1, T, Hkv, D]), [0, 2, 1, 3]);
        if (a.rope) {
          q = a.rope.apply(q, 0);
          k = a.rope.apply(k, 0);
        }
        const qd = q.contiguous().data();
        const kd = k.contiguous().data();
        const layer: Float32Array[] = [];
        const scale = 1 / Math.sqrt(D);
        const s = new Float64Array(T);
        for (let hh = 0; hh < H; hh++) {
          const kvh = Math.floor((hh * Hkv) / H);
          const map = new Float32Array(T * T);
          for (let i = 0; i < T; i++) {
            let max = -Infinity;
            for (let j = 0; j < T; j++) {
              if (!visible(i, j)) {
                s[j] = -Infinity;
                continue;
              }
              let dot = 0;
              for (let d = 0; d < D; d++) dot += qd[(hh * T + i) * D + d]! * kd[(kvh * T + j) * D + d]!;
              s[j] = dot * scale;
              if (s[j]! > max) max = s[j]!;
            }
            let z = 0;
            for (let j = 0; j < T; j++) z += s[j] === -Infinity ? 0 : Math.exp(s[j]! - max);
            for (let j = 0; j < T; j++) map[i * T + j] = s[j] === -Infinity ? 0 : Math.exp(s[j]! - max) / z;
          }
          layer.push(map);
        }
        probs.push(layer);
        x = block.forward(x);
      }
    }));
  } finally {
    model.train(wasTraining);
  }
  return { layers: cfg.n_layer, heads: cfg.n_head, T, probs };
}

/**
 * A decoder family's maps (llama, qwen, ...), through the interpretability probes of
 * src/eval/interpret.ts, which observe each layer's own q and k (after q/k norm and RoPE) and its
 * sliding window.
 */
function decoderAttentionMaps(model: DecoderLM, ids: readonly number[]): AttentionMaps {
  const T = ids.length;
  if (T < 1 || T > model.config.block_size) throw new Error(`attention maps: ${T} tokens, the model takes 1 to ${model.config.block_size}`);
  const wasTraining = model.training;
  let maps: number[][][][];
  try {
    maps = probedAttentionMaps(model, ids);
  } finally {
    model.train(wasTraining);
  }
  const probs = maps.map((layer) => layer.map((rows) => {
    const m = new Float32Array(T * T);
    rows.forEach((row, i) => m.set(row.slice(0, T), i * T));
    return m;
  }));
  return { layers: model.config.num_hidden_layers, heads: model.config.num_attention_heads, T, probs };
}

/** The k most likely next tokens after `ids`, with their probabilities, most likely first. */
export function nextTokenDistribution(model: GPT | DecoderLM, ids: readonly number[], k = 10): { id: number; p: number }[] {
  const cfg = model.config;
  const ctx = ids.slice(-cfg.block_size);
  if (ctx.length === 0) throw new Error('next-token distribution: no tokens given');
  const wasTraining = model.training;
  model.eval();
  try {
    const lp = noGrad(() => tidy(() => {
      const { logits } = model.forward(tensor(ctx as number[], { dtype: 'int32', shape: [1, ctx.length], backend: embeddingOf(model).backend }));
      return logSoftmax(slice(logits, 1, ctx.length - 1, ctx.length), -1).data();
    }));
    return [...lp].map((l, id) => ({ id, p: Math.exp(l) })).sort((a, b) => b.p - a.p).slice(0, k);
  } finally {
    model.train(wasTraining);
  }
}

/**
 * The rows of a rows × cols matrix projected on its two principal components (centred; the
 * components by power iteration with deflation on the covariance). Returns the 2-D points and
 * the share of the variance each component explains. Each component's sign is fixed so that its
 * largest-magnitude entry is positive, making the picture deterministic.
 */
export function pca2d(data: ArrayLike<number>, rows: number, cols: number): { points: [number, number][]; explained: [number, number] } {
  if (data.length !== rows * cols || rows < 1) throw new Error(`pca2d: ${data.length} values are not ${rows} × ${cols}`);
  const mean = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) mean[c]! += data[r * cols + c]! / rows;
  const X = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) X[r * cols + c] = data[r * cols + c]! - mean[c]!;
  const cov = new Float64Array(cols * cols);
  for (let r = 0; r < rows; r++) {
    for (let a = 0; a < cols; a++) {
      const xa = X[r * cols + a]!;
      if (xa === 0) continue;
      for (let b = 0; b < cols; b++) cov[a * cols + b]! += xa * X[r * cols + b]!;
    }
  }
  let trace = 0;
  for (let a = 0; a < cols; a++) trace += cov[a * cols + a]!;
  const comps: Float64Array[] = [];
  const values: number[] = [];
  for (let n = 0; n < 2; n++) {
    let v = new Float64Array(cols).map((_, i) => 1 + ((i * 7919) % 13) / 13); // fixed start, not orthogonal to much
    let lambda = 0;
    for (let it = 0; it < 500; it++) {
      const w = new Float64Array(cols);
      for (let a = 0; a < cols; a++) {
        let s = 0;
        for (let b = 0; b < cols; b++) s += cov[a * cols + b]! * v[b]!;
        w[a] = s;
      }
      for (const u of comps) {
        let d = 0;
        for (let a = 0; a < cols; a++) d += w[a]! * u[a]!;
        for (let a = 0; a < cols; a++) w[a]! -= d * u[a]!;
      }
      const norm = Math.hypot(...w);
      if (norm === 0) break;
      for (let a = 0; a < cols; a++) w[a]! /= norm;
      let change = 0;
      for (let a = 0; a < cols; a++) change = Math.max(change, Math.abs(w[a]! - v[a]!));
      v = w;
      lambda = norm;
      if (change < 1e-10) break;
    }
    let big = 0;
    for (let a = 0; a < cols; a++) if (Math.abs(v[a]!) > Math.abs(v[big]!)) big = a;
    if (v[big]! < 0) v = v.map((x) => -x);
    comps.push(v);
    values.push(lambda);
  }
  const points: [number, number][] = [];
  for (let r = 0; r < rows; r++) {
    const p = [0, 0] as [number, number];
    for (let n = 0; n < 2; n++) for (let c = 0; c < cols; c++) p[n] += X[r * cols + c]! * comps[n]![c]!;
    points.push(p);
  }
  return { points, explained: [trace > 0 ? values[0]! / trace : 0, trace > 0 ? values[1]! / trace : 0] };
}

const embeddingOf = (model: GPT | DecoderLM): Tensor => (model instanceof DecoderLM ? model.model.embed_tokens.weight : model.transformer.wte.weight);

/**
 * The token embedding table (wte, a decoder's embed_tokens) projected to 2-D: its first
 * `maxTokens` rows (all of a character vocabulary; the first ids of a subword one, whose full
 * table of 50k-150k rows would take the page minutes).
 */
export function embeddingPca(model: GPT | DecoderLM, maxTokens = 1000): { points: [number, number][]; explained: [number, number]; rows: number } {
  const w = embeddingOf(model);
  const [V, C] = w.shape as [number, number];
  const rows = Math.min(V, maxTokens);
  const data = w.data();
  return { ...pca2d(rows < V ? data.subarray(0, rows * C) : data, rows, C), rows };
}
