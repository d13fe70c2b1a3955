// Interpretability of a trained model on one text:
//  - attention maps of every layer and head, recomputed from the queries and keys each softmax
//    attention module hands its probe (the fused kernel never builds the T×T matrix);
//  - the logit lens (nostalgebraist 2020): each layer's residual stream read out through the
//    final norm and the LM head, top-k next tokens per layer and position;
//  - token attributions of one scalar output (a next-token logit, or a classifier's class logit):
//    gradient × input, and integrated gradients (Sundararajan et al. 2017) from an all-zero
//    token-embedding baseline, whose attributions sum to f(x) − f(baseline) (completeness) up to
//    the Riemann sum's error;
//  - head ablation (Michel et al. 2019): the loss on the text with one head's output zeroed.
// GPT (attn and GPT-2), the Hugging Face decoder families (DecoderLM), and the classifiers of
// src/tasks/classification.ts: attn's BertModel and Hugging Face BERT (HFBert). buildVizDocument gathers all of it into the JSON `attn viz` shows.
import type { AttentionSparsity } from '../backend/backend.js';
import { BertModel } from '../models/bert.js';
import { DecoderLM } from '../models/decoder.js';
import { paddingMask } from '../models/encoder.js';
import { GPT } from '../models/gpt.js';
import { HFBert } from '../models/hf-bert.js';
import type { AttentionProbe, AttentionProbeView } from '../nn/attention.js';
import type { Module } from '../nn/module.js';
import {
  add, arange, backward, crossEntropy, mul, noGrad, reshape, slice, softmax, sum, tensor, tidy, withGrad, zeros,
  type DType, type Tensor,
} from '../tensor/index.js';
import type { Tokenizer } from '../tokenizers/index.js';
import type { AttributionDoc, LensEntry, VizDocument } from './interpret-doc.js';

export type { AttributionDoc, LensEntry, VizDocument } from './interpret-doc.js';

/** The models this module explains. */
export type InterpretableModel = GPT | DecoderLM | BertModel | HFBert;

/** A module whose forward calls its probe (CausalSelfAttention, DecoderAttention, MultiHeadAttention). */
interface ProbeSite {
  probe: AttentionProbe | null;
  readonly kind?: string;
}

/** The pieces of a model's forward that interpretation takes apart. */
interface Parts {
  kind: VizDocument['model']['kind'];
  nLayer: number;
  nHead: number;
  sites: ProbeSite[];
  backend: Tensor['backend'];
  dtype: DType;
  /** Token embeddings (B, T, C): what attributions vary (positions are added after). */
  embed(ids: Tensor): Tensor;
  /** Causal models: the residual streams [after the embeddings, after block 1, …, after block L]. */
  streams?(e: Tensor): Tensor[];
  /** Causal models: final norm + LM head, x (B, T, C) → logits (B, T, V). */
  readout?(x: Tensor): Tensor;
  /** Classifiers: token embeddings and ids → class logits (B, K). */
  classify?(e: Tensor, ids: Tensor): Tensor;
  /** Classifiers: K. */
  nClasses?: number;
  vocabSize: number;
  /** The model's own forward, for attention maps and ablation (logits). */
  forward(ids: Tensor): Tensor;
}

function partsOf(model: InterpretableModel): Parts {
  const w = model.parameters()[0];
  if (!w) throw new Error('interpret: the model has no parameters');
  const common = { backend: w.backend, dtype: (w.dtype === 'float64' ? 'float64' : 'float32') as DType };
  if (model instanceof GPT) {
    const t = model.transformer;
    return {
      ...common,
      kind: 'gpt',
      vocabSize: model.config.vocab_size,
      nLayer: model.config.n_layer,
      nHead: model.config.n_head,
      sites: t.h.items.map((b) => b.attn),
      embed: (ids) => t.wte.forward(ids),
      streams: (e) => {
        const T = e.shape[1]!;
        let x = e;
        if (t.wpe) x = add(x, t.wpe.positions(T, 0));
        else if (t.pe) x = add(x, t.pe.positions(T, 0));
        x = t.drop.forward(x);
        const out = [x];
        for (const b of t.h.items) out.push((x = b.forward(x)));
        return out;
      },
      readout: (x) => {
        const h = t.ln_f ? t.ln_f.forward(x) : x; // post-norm blocks already end in a norm
        return model.lm_head ? model.lm_head.forward(h) : t.wte.project(h);
      },
      forward: (ids) => model.forward(ids).logits,
    };
  }
  if (model instanceof DecoderLM) {
    const m = model.model;
    return {
      ...common,
      kind: 'decoder',
      vocabSize: model.config.vocab_size,
      nLayer: model.config.num_hidden_layers,
      nHead: model.config.num_attention_heads,
      sites: m.layers.items.map((l) => l.self_attn),
      embed: (ids) => m.embed_tokens.forward(ids),
      streams: (e) => {
        let x = e;
        const out = [x];
        for (const l of m.layers.items) out.push((x = l.forward(x)));
        return out;
      },
      readout: (x) => {
        const h = m.finalNorm.forward(x);
        return model.lm_head ? model.lm_head.forward(h) : m.embed_tokens.project(h);
      },
      forward: (ids) => model.forward(ids).logits,
    };
  }
  if (model instanceof BertModel) {
    if (model.promptMode || !model.cls_head) {
      throw new Error('interpret: a BertModel is explained through its classification head; this one has none (n_classes 0 or prompt-based verbalizers)');
    }
    const layers = model.encoder.layers.items;
    const head = model.cls_head;
    return {
      ...common,
      kind: 'classifier',
      vocabSize: model.config.vocab_size,
      nClasses: model.config.n_classes,
      nLayer: layers.length,
      nHead: layers[0]?.self_attn.nHead ?? 0,
      sites: layers.map((l) => l.self_attn),
      // BertModel.forward: embeddings scaled by √d_model, positions added, then embed_norm.
      embed: (ids) => mul(model.embed.forward(ids), Math.sqrt(model.config.d_model)),
      classify: (e, ids) => {
        const mask = paddingMask(ids, model.config.pad_id);
        const x = add(e, model.pos.positions(e.shape[1]!));
        const h = model.drop.forward(model.embed_norm.forward(x));
        return head.forward(model.encoder.forward(h, mask), mask);
      },
      forward: (ids) => model.classify(ids),
    };
  }
  if (model instanceof HFBert) {
    if (!model.classifier || !model.bert.pooler) throw new Error('interpret: a Hugging Face BERT is explained through its classification head; this one has none (not a *ForSequenceClassification)');
    const layers = model.bert.encoder.layer.items;
    const emb = model.bert.embeddings;
    const encode = (e: Tensor): Tensor => {
      // HFBert.encode from the word embeddings on (one unpadded sentence: no attention mask).
      const [B, T] = e.shape as [number, number];
      const pos = emb.position_embeddings.forward(arange(0, T, 1, { backend: e.backend, dtype: 'int32' }));
      let x = add(add(e, pos), emb.token_type_embeddings.forward(zeros([B, T], { backend: e.backend, dtype: 'int32' })));
      x = emb.dropout.forward(emb.LayerNorm.forward(x));
      for (const l of layers) x = l.forward(x, null);
      return x;
    };
    return {
      ...common,
      kind: 'classifier',
      nLayer: layers.length,
      nHead: model.config.num_attention_heads,
      nClasses: model.config.num_labels,
      vocabSize: model.config.vocab_size,
      sites: layers.map((l) => l.attention.self),
      embed: (ids) => emb.word_embeddings.forward(ids),
      classify: (e) => model.classifyLogits(encode(e)),
      forward: (ids) => model.classifyLogits(model.encode(ids)),
    };
  }
  throw new Error('interpret: the model must be a GPT, a DecoderLM (llama, mistral, qwen2, qwen3, phi), or a BertModel or Hugging Face BERT classifier');
}

/** Runs fn in eval mode (no dropout) and with every parameter's gradient off (attributions need
 *  gradients of the input only), restoring both after. */
function inspecting<T>(model: Module, fn: () => T): T {
  const wasTraining = model.training;
  const params = model.parameters();
  const flags = params.map((p) => p.requiresGrad);
  model.eval();
  for (const p of params) p.requiresGrad = false;
  try {
    return fn();
  } finally {
    params.forEach((p, i) => (p.requiresGrad = flags[i]!));
    if (wasTraining) model.train();
  }
}

function checkIds(model: InterpretableModel, ids: readonly number[]): void {
  const V = partsOf(model).vocabSize;
  if (ids.length === 0) throw new Error('interpret: no tokens to explain');
  ids.forEach((id, i) => {
    if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new Error(`interpret: token ${i} (${String(id)}) is outside the vocabulary [0, ${V})`);
  });
}

function idsTensor(parts: Parts, ids: readonly number[], rows = 1): Tensor {
  const data = new Int32Array(rows * ids.length);
  for (let r = 0; r < rows; r++) data.set(ids, r * ids.length);
  return tensor(data, { backend: parts.backend, dtype: 'int32', shape: [rows, ids.length] });
}

/** Whether query position i' (aligned to the keys, as causal is) may see key j under the
 *  kernel's rules (AttentionSparsity in backend.ts). */
function keyVisible(i2: number, j: number, causal: boolean, s: AttentionSparsity | null): boolean {
  const d = i2 - j;
  if (causal && d < 0) return false;
  if (!s) return true;
  switch (s.kind) {
    case 'window': return Math.abs(d) < s.window;
    case 'strided': return Math.abs(d) < s.stride || d % s.stride === 0;
    case 'fixed': return Math.floor(j / s.block) === Math.floor(i2 / s.block) || j % s.block >= s.block - s.summary;
  }
}

/**
 * The attention probabilities of batch row `row` of one attention call: [head][query][key],
 * softmax(scale · q·k) over the visible keys (causal, sparse pattern, key mask); a query with no
 * visible key gets a row of zeros, as the kernel outputs 0 there. Grouped kv heads: query head h
 * reads kv head floor(h / (H / Hkv)).
 */
export function attentionProbabilities(view: AttentionProbeView, row = 0): number[][][] {
  const [, H, Tq, D] = view.q.shape as [number, number, number, number];
  const [, Hkv, Tk] = view.k.shape as [number, number, number, number];
  const q = noGrad(() => view.q.data());
  const k = noGrad(() => view.k.data());
  const mask = view.keyMask ? view.keyMask.data() : null;
  const group = H / Hkv;
  const out: number[][][] = [];
  const scores = new Float64Array(Tk);
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / group);
    const head: number[][] = [];
    for (let i = 0; i < Tq; i++) {
      const i2 = i + Tk - Tq;
      const qo = ((row * H + h) * Tq + i) * D;
      let max = -Infinity;
      for (let j = 0; j < Tk; j++) {
        if (!keyVisible(i2, j, view.causal, view.sparsity) || (mask && mask[row * Tk + j] === 0)) {
          scores[j] = -Infinity;
          continue;
        }
        const ko = ((row * Hkv + kh) * Tk + j) * D;
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qo + d]! * k[ko + d]!;
        scores[j] = s * view.scale;
        if (scores[j]! > max) max = scores[j]!;
      }
      const p = new Array<number>(Tk).fill(0);
      if (max > -Infinity) {
        let z = 0;
        for (let j = 0; j < Tk; j++) z += scores[j] === -Infinity ? 0 : Math.exp(scores[j]! - max);
        for (let j = 0; j < Tk; j++) p[j] = scores[j] === -Infinity ? 0 : Math.exp(scores[j]! - max) / z;
      }
      head.push(p);
    }
    out.push(head);
  }
  return out;
}

/** Sets a probe on every layer's attention for the duration of fn. */
function withProbes<T>(parts: Parts, probeOf: (layer: number) => AttentionProbe | null, fn: () => T): T {
  parts.sites.forEach((s, l) => (s.probe = probeOf(l)));
  try {
    return fn();
  } finally {
    for (const s of parts.sites) s.probe = null;
  }
}

/** attention[layer][head][query][key] of the model on ids (one sequence). Throws for layers
 *  without softmax attention (linear, performer, linformer). */
export function attentionMaps(model: InterpretableModel, ids: readonly number[]): number[][][][] {
  checkIds(model, ids);
  const parts = partsOf(model);
  const maps: (number[][][] | null)[] = parts.sites.map(() => null);
  inspecting(model, () => withProbes(parts, (l) => ({
    observe: (view, y) => {
      maps[l] = attentionProbabilities(view);
      return y;
    },
  }), () => noGrad(() => tidy(() => {
    parts.forward(idsTensor(parts, ids));
  }))));
  return maps.map((m, l) => {
    if (!m) throw new Error(`interpret: layer ${l}'s attention (${parts.sites[l]!.kind ?? 'unknown kind'}) has no softmax probabilities to show`);
    return m;
  });
}

/** The logits read from every residual stream (layer 0 = the embeddings): [layer] (T·V),
 *  each through the final norm and the LM head. Causal models only. */
export function lensLogits(model: GPT | DecoderLM, ids: readonly number[]): Float32Array[] {
  checkIds(model, ids);
  const parts = partsOf(model);
  return inspecting(model, () => noGrad(() => tidy(() => {
    const streams = parts.streams!(parts.embed(idsTensor(parts, ids)));
    return streams.map((x) => Float32Array.from(parts.readout!(x).data()));
  })));
}

/** Logit lens: top-k next tokens (with probabilities) per layer and position. */
export function logitLens(model: GPT | DecoderLM, ids: readonly number[], k = 5, tokenText: (id: number) => string = String): { k: number; labels: string[]; top: LensEntry[][][] } {
  const V = model.config.vocab_size;
  const T = ids.length;
  const layers = lensLogits(model, ids);
  const top = layers.map((logits) => {
    const rows: LensEntry[][] = [];
    for (let t = 0; t < T; t++) {
      const row = logits.subarray(t * V, (t + 1) * V);
      let max = -Infinity;
      for (const v of row) if (v > max) max = v;
      let z = 0;
      for (const v of row) z += Math.exp(v - max);
      // Partial selection of the k largest (V is large, k small).
      const best: number[] = [];
      for (let i = 0; i < V; i++) {
        if (best.length < k || row[i]! > row[best[best.length - 1]!]!) {
          best.push(i);
          best.sort((a, b) => row[b]! - row[a]!);
          if (best.length > k) best.pop();
        }
      }
      rows.push(best.map((id) => ({ id, token: tokenText(id), p: Math.exp(row[id]! - max) / z })));
    }
    return rows;
  });
  return { k, labels: layers.map((_, l) => (l === 0 ? 'embed' : `layer ${l}`)), top };
}

/** What an attribution explains: a next-token logit at a position, or a class logit. */
export type AttributionTarget = { kind: 'token'; position: number; token: number } | { kind: 'class'; cls: number };

/** Token attributions: the document's entry without its words (interpret-doc.ts). */
export type Attributions = Omit<AttributionDoc, 'target'>;

/**
 * Token attributions of one scalar output f(e) of the token embeddings e (T, C): gradient × input
 * Σ_c e·∂f/∂e, and integrated gradients Σ_c e · mean_k ∂f/∂e(α_k e) over `steps` midpoints
 * α_k = (k + ½)/steps from the baseline e = 0 (positions stay). The steps run as batches of
 * `chunk` rows through one forward and backward each.
 */
export function attributions(model: InterpretableModel, ids: readonly number[], target: AttributionTarget, opts: { steps?: number; chunk?: number } = {}): Attributions {
  checkIds(model, ids);
  const steps = opts.steps ?? 32;
  const chunk = opts.chunk ?? 8;
  if (!(Number.isInteger(steps) && steps >= 1)) throw new Error(`interpret: integrated-gradient steps must be a positive integer, got ${String(steps)}`);
  const parts = partsOf(model);
  const T = ids.length;
  if (target.kind === 'token') {
    if (!parts.streams) throw new Error('interpret: a next-token target needs a language model; this is a classifier (use a class target)');
    if (!(Number.isInteger(target.position) && target.position >= 0 && target.position < T)) throw new Error(`interpret: target position ${target.position} is outside the ${T} tokens`);
    if (!(Number.isInteger(target.token) && target.token >= 0 && target.token < parts.vocabSize)) throw new Error(`interpret: target token ${target.token} is outside the vocabulary`);
  } else {
    if (!parts.classify) throw new Error('interpret: a class target needs a classifier; this is a language model (use a token target)');
    const K = parts.nClasses ?? 0;
    if (!(Number.isInteger(target.cls) && target.cls >= 0 && target.cls < K)) throw new Error(`interpret: class ${target.cls} is outside the ${K} classes`);
  }
  // f for a batch of embeddings (n, T, C) → (n).
  const f = (e: Tensor, idsN: Tensor): Tensor => {
    const n = e.shape[0]!;
    if (target.kind === 'token') {
      const streams = parts.streams!(e);
      const last = slice(streams[streams.length - 1]!, 1, target.position, target.position + 1); // (n, 1, C)
      return reshape(slice(parts.readout!(last), 2, target.token, target.token + 1), [n]);
    }
    return reshape(slice(parts.classify!(e, idsN), 1, target.cls, target.cls + 1), [n]);
  };
  return inspecting(model, () => {
    const e0 = noGrad(() => tidy(() => Float64Array.from(parts.embed(idsTensor(parts, ids)).data())));
    const C = e0.length / T;
    // f and ∂f/∂e at e = α·e0 for each α.
    const at = (alphas: number[]): { f: number[]; grad: Float64Array } => {
      const n = alphas.length;
      const data = parts.dtype === 'float64' ? new Float64Array(n * T * C) : new Float32Array(n * T * C);
      alphas.forEach((a, r) => {
        for (let i = 0; i < T * C; i++) data[r * T * C + i] = a * e0[i]!;
      });
      return withGrad(() => tidy(() => {
        const e = tensor(data, { backend: parts.backend, dtype: parts.dtype, shape: [n, T, C], requiresGrad: true });
        const out = f(e, idsTensor(parts, ids, n));
        const fv = Array.from(out.data());
        backward(sum(out));
        const grad = Float64Array.from(e.grad!.data());
        e.grad!.dispose();
        e.grad = null;
        return { f: fv, grad };
      }));
    };
    const perToken = (g: Float64Array, rows: number, scale: number): number[] => {
      const out = new Array<number>(T).fill(0);
      for (let r = 0; r < rows; r++) {
        for (let t = 0; t < T; t++) {
          let s = 0;
          for (let c = 0; c < C; c++) s += e0[t * C + c]! * g[(r * T + t) * C + c]!;
          out[t]! += s * scale;
        }
      }
      return out;
    };
    const ends = at([0, 1]);
    const gradInput = perToken(ends.grad.subarray(T * C), 1, 1);
    const integrated = new Array<number>(T).fill(0);
    for (let s0 = 0; s0 < steps; s0 += chunk) {
      const alphas: number[] = [];
      for (let s = s0; s < Math.min(steps, s0 + chunk); s++) alphas.push((s + 0.5) / steps);
      const part = perToken(at(alphas).grad, alphas.length, 1 / steps);
      part.forEach((v, t) => (integrated[t]! += v));
    }
    return { gradInput, integratedGradients: integrated, steps, fInput: ends.f[1]!, fBaseline: ends.f[0]!, sum: integrated.reduce((a, b) => a + b, 0) };
  });
}

/** The probe that zeroes head `head` of its layer's attention output (before the projection). */
function zeroHead(head: number, nHead: number): AttentionProbe {
  return {
    observe: (_view, y) => {
      const g = new Array<number>(nHead).fill(1);
      g[head] = 0;
      return mul(y, tensor(g, { backend: y.backend, dtype: y.dtype, shape: [1, nHead, 1, 1] }));
    },
  };
}

/** The loss of the model on ids: mean next-token cross-entropy (causal), or the cross-entropy of
 *  `label` (classifier). `ablate` zeroes one head. */
export function lossOn(model: InterpretableModel, ids: readonly number[], opts: { label?: number; ablate?: { layer: number; head: number } } = {}): number {
  checkIds(model, ids);
  const parts = partsOf(model);
  if (parts.kind !== 'classifier' && ids.length < 2) throw new Error('interpret: the loss of a language model on a text needs at least 2 tokens');
  const a = opts.ablate;
  if (a && !(a.layer >= 0 && a.layer < parts.nLayer && a.head >= 0 && a.head < parts.nHead)) throw new Error(`interpret: no head ${a.head} in layer ${a.layer} (${parts.nLayer} layers of ${parts.nHead} heads)`);
  return inspecting(model, () => withProbes(parts, (l) => (a && l === a.layer ? zeroHead(a.head, parts.nHead) : null), () => noGrad(() => tidy(() => {
    const logits = parts.forward(idsTensor(parts, ids));
    if (parts.kind === 'classifier') {
      const label = opts.label ?? 0;
      return crossEntropy(logits, tensor([label], { backend: parts.backend, dtype: 'int32', shape: [1] })).item();
    }
    const T = ids.length;
    const V = logits.shape[2]!;
    const pred = reshape(slice(logits, 1, 0, T - 1), [T - 1, V]);
    return crossEntropy(pred, tensor(ids.slice(1), { backend: parts.backend, dtype: 'int32', shape: [T - 1] })).item();
  }))));
}

/** Head ablation: delta[layer][head] = loss with that head zeroed − the intact loss. */
export function headAblation(model: InterpretableModel, ids: readonly number[], opts: { label?: number } = {}): { metric: string; base: number; delta: number[][] } {
  const parts = partsOf(model);
  const base = lossOn(model, ids, opts);
  const delta = Array.from({ length: parts.nLayer }, (_, layer) =>
    Array.from({ length: parts.nHead }, (_, head) => lossOn(model, ids, { ...opts, ablate: { layer, head } }) - base));
  const metric = parts.kind === 'classifier' ? `cross-entropy of class ${opts.label ?? 0}` : 'mean next-token cross-entropy (nats)';
  return { metric, base, delta };
}

/** Class probabilities of a classifier on ids. */
export function classProbabilities(model: BertModel | HFBert, ids: readonly number[]): number[] {
  const parts = partsOf(model);
  return inspecting(model, () => noGrad(() => tidy(() => Array.from(softmax(parts.forward(idsTensor(parts, ids)), -1).data()))));
}

const round = (x: number, digits = 4): number => {
  const s = 10 ** digits;
  return Math.round(x * s) / s;
};

export interface VizOptions {
  /** Top-k of the logit lens (default 5). */
  k?: number;
  /** Integrated-gradient steps (default 32). */
  steps?: number;
  /** Run head ablation (L·H forwards; default true). */
  ablation?: boolean;
  description?: string;
}

/**
 * Everything `attn viz` shows for one text: attention maps, the logit lens (language models),
 * attributions (the next-token prediction after the last token; a classifier's predicted class)
 * and head ablation.
 */
export function buildVizDocument(model: InterpretableModel, tok: Tokenizer | null, text: string, ids: readonly number[], opts: VizOptions = {}): VizDocument {
  checkIds(model, ids);
  const parts = partsOf(model);
  const tokenText = (id: number): string => (tok ? tok.decode([id]) : `#${id}`);
  const attention = attentionMaps(model, ids).map((layer) => layer.map((head) => head.map((row) => row.map((p) => round(p, 5)))));
  const doc: VizDocument = {
    version: 1,
    model: { kind: parts.kind, layers: parts.nLayer, heads: parts.nHead, description: opts.description ?? parts.kind },
    text,
    tokens: ids.map(tokenText),
    ids: [...ids],
    attention,
    lens: null,
    attributions: [],
    ablation: null,
  };
  const toDoc = (a: Attributions, what: string): AttributionDoc => ({
    target: what,
    gradInput: a.gradInput.map((v) => round(v, 5)),
    integratedGradients: a.integratedGradients.map((v) => round(v, 5)),
    steps: a.steps,
    fInput: round(a.fInput, 6),
    fBaseline: round(a.fBaseline, 6),
    sum: round(a.sum, 6),
  });
  let label: number | undefined;
  if (model instanceof BertModel || model instanceof HFBert) {
    const probs = classProbabilities(model, ids);
    label = probs.indexOf(Math.max(...probs));
    doc.classes = { probs: probs.map((p) => round(p, 5)), predicted: label };
    doc.attributions.push(toDoc(attributions(model, ids, { kind: 'class', cls: label }, { steps: opts.steps }), `logit of class ${label} (the prediction)`));
  } else {
    doc.lens = logitLens(model, ids, opts.k ?? 5, tokenText);
    const last = ids.length - 1;
    const next = doc.lens.top[doc.lens.top.length - 1]![last]![0]!;
    doc.attributions.push(toDoc(attributions(model, ids, { kind: 'token', position: last, token: next.id }, { steps: opts.steps }),
      `logit of ${JSON.stringify(next.token)}, the top prediction after the last token`));
    if (ids.length >= 2) {
      const prev = ids.length - 2;
      doc.attributions.push(toDoc(attributions(model, ids, { kind: 'token', position: prev, token: ids[last]! }, { steps: opts.steps }),
        `logit of the text's last token ${JSON.stringify(tokenText(ids[last]!))} at the position before it`));
    }
  }
  if (opts.ablation !== false && (parts.kind === 'classifier' || ids.length >= 2)) doc.ablation = headAblation(model, ids, { label });
  return doc;
}
