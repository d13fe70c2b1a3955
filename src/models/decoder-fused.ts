// The fused decode step of a Llama-style DecoderLM, and of attn's GPT (gptFusedDecodeStep): batch
// 1, one new token, in one backend call (Backend.decodeStep; the native cpu backend's
// native/decode.cc). On small models the per-op
// JavaScript of a forward costs more than its arithmetic; this path runs the same kernels in the
// same order on flat buffers, so its logits are those of forwardWithCache. Models it does not
// cover (phi's parallel block and LayerNorm, GELU MLPs, dynamic RoPE, bf16/f16 weights, LoRA
// adapters, attention probes) and backends without decodeStep take
// the op-by-op path.
import type { Backend, Storage, DecodeBuffer, DecodeLayerPlan, DecodeMatrix, DecodePlan, GPTDecodeLayerPlan, GPTDecodePlan } from '../backend/backend.js';
import { reserveCache, setCacheLength, type KVCache } from '../nn/attention.js';
import { LayerNorm, Linear, RMSNorm, type Embedding } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import type { RotaryEmbedding, ScaledRope } from '../nn/positional.js';
import { empty, isGradEnabled, type Tensor } from '../tensor/index.js';

/** What the fused step reads of a DecoderLM (decoder.ts), stated here so that the two files do
 *  not import each other. */
interface FusableLayer {
  readonly self_attn: {
    readonly q_proj: Linear; readonly k_proj: Linear; readonly v_proj: Linear; readonly out: Linear;
    readonly qNorm: LayerNorm | RMSNorm | null; readonly kNorm: LayerNorm | RMSNorm | null;
    readonly window: number | null; readonly probe: unknown;
  };
  readonly input_layernorm: LayerNorm | RMSNorm;
  readonly post_attention_layernorm: LayerNorm | RMSNorm | null;
  readonly mlp: { readonly gate: Linear | null; readonly up: Linear; readonly down: Linear };
}
export interface FusableDecoder extends Pick<Module, 'namedModules' | 'training'> {
  readonly config: { readonly hidden_size: number; readonly num_attention_heads: number; readonly num_key_value_heads: number; readonly head_dim: number; readonly intermediate_size: number; readonly vocab_size: number; readonly norm_eps: number };
  readonly rope: ScaledRope;
  readonly model: { readonly embed_tokens: Embedding; readonly layers: { readonly items: readonly FusableLayer[] }; readonly finalNorm: LayerNorm | RMSNorm };
  readonly lm_head: Linear | null;
}


/** Per cache: the encoded plan and the buffers it was encoded with. */
interface CachePlan { encoded: unknown; kBufs: Tensor[]; vBufs: Tensor[]; cos: Tensor | null }

/** Off: every step runs op by op (tests and benchmarks compare the two; ATTN_FUSED_DECODE=0
 *  turns it off for a process). */
export const fusedDecode = { enabled: (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.['ATTN_FUSED_DECODE'] !== '0' };

const scratchOf = new WeakMap<KVCache, Tensor[]>();
const plans = new WeakMap<KVCache, CachePlan | null>();

const buffer = (t: Tensor): DecodeBuffer => ({ storage: t.storage, offset: t.offset });

function float32(t: Tensor | null | undefined): boolean {
  return !t || (t.dtype === 'float32' && t.isContiguous());
}

/** A Linear (or a tied embedding as the head) as the plan's matrix; null when not covered. */
function matrix(m: Linear | Embedding, bias: Tensor | null): DecodeMatrix | null {
  const [N, K] = m.matrixShape();
  if (!float32(bias)) return null;
  if (m.quant) return { float: null, quant: m.quant.storage, bias: bias ? buffer(bias) : null, N, K };
  if (!float32(m.weight)) return null;
  return { float: buffer(m.weight), quant: null, bias: bias ? buffer(bias) : null, N, K };
}

/** Why the model takes the op-by-op path (a reason), or null when the fused step covers it. */
export function fusedDecodeUnsupported(model: FusableDecoder): string | null {
  const be = backendOf(model);
  if (!be.decodeStep || !be.encodeDecodePlan) return 'the backend has no fused decode step';
  if (model.training) return 'training mode';
  if (model.rope.spec.scaling?.rope_type === 'dynamic') return 'dynamic RoPE scaling';
  const emb = model.model.embed_tokens;
  if (!emb.quant && !float32(emb.weight)) return 'the embedding is not float32';
  if (!(model.model.finalNorm instanceof RMSNorm)) return 'LayerNorm';
  for (const [name, m] of model.namedModules()) {
    if (Object.prototype.hasOwnProperty.call(m, 'forward')) return `module '${name}' carries an adapter`;
  }
  for (const layer of model.model.layers.items) {
    const a = layer.self_attn;
    if (!layer.post_attention_layernorm || !(layer.input_layernorm instanceof RMSNorm) || !(layer.post_attention_layernorm instanceof RMSNorm)) return 'not a pre-norm RMSNorm block';
    if (!layer.mlp.gate) return 'not a SwiGLU MLP';
    if (a.probe) return 'an attention probe is attached';
    if ((a.qNorm && !(a.qNorm instanceof RMSNorm)) || (a.kNorm && !(a.kNorm instanceof RMSNorm))) return 'q/k LayerNorm';
  }
  return null;
}

/** The backend a table lives on, float or quantized (a model's: its embedding's). */
function tableBackend(emb: Embedding): Backend {
  return emb.quant ? emb.quant.backend : emb.weight.backend;
}

function backendOf(model: FusableDecoder): Backend {
  return tableBackend(model.model.embed_tokens);
}

/** Scratch buffers of the given sizes for this cache's steps, kept with (and freed by) the cache. */
function scratchFor(cache: KVCache, be: Backend, sizes: Record<string, number>): Record<string, Storage> {
  let s = scratchOf.get(cache);
  if (!s || s.some((t) => t.isDisposed)) {
    s = Object.values(sizes).map((n) => empty([n], { backend: be }).keep());
    cache.owned.push(...s);
    scratchOf.set(cache, s);
  }
  const out: Record<string, Storage> = {};
  Object.keys(sizes).forEach((k, i) => { out[k] = s![i]!.storage; });
  return out;
}

/** The plan for this model and cache as they are now, or null when a weight is not covered. */
function buildPlan(model: FusableDecoder, cache: KVCache, cos: Tensor, sin: Tensor): DecodePlan | null {
  const c = model.config;
  const be = backendOf(model);
  const layers: DecodeLayerPlan[] = [];
  for (const [i, layer] of model.model.layers.items.entries()) {
    const a = layer.self_attn;
    const mlp = layer.mlp;
    const ms = [matrix(a.q_proj, a.q_proj.bias), matrix(a.k_proj, a.k_proj.bias), matrix(a.v_proj, a.v_proj.bias), matrix(a.out, a.out.bias),
      matrix(mlp.gate!, mlp.gate!.bias), matrix(mlp.up, mlp.up.bias), matrix(mlp.down, mlp.down.bias)];
    if (ms.some((m) => m === null)) return null;
    const [q, k, v, o, gate, up, down] = ms as DecodeMatrix[];
    const l = cache.layers[i]!;
    const norms = [layer.input_layernorm, layer.post_attention_layernorm!, a.qNorm, a.kNorm].map((n) => (n ? (n as RMSNorm).weight : null));
    if (!norms.every(float32)) return null;
    layers.push({
      inNorm: buffer(norms[0]!), postNorm: buffer(norms[1]!), qNorm: norms[2] ? buffer(norms[2]) : null, kNorm: norms[3] ? buffer(norms[3]) : null,
      window: a.window ?? 0, q: q!, k: k!, v: v!, o: o!, gate: gate!, up: up!, down: down!,
      kCache: buffer(l.kBuf!), vCache: buffer(l.vBuf!), capacity: l.kBuf!.shape[2]!,
    });
  }
  const emb = model.model.embed_tokens;
  const embed = matrix(emb, null);
  const head = model.lm_head ? matrix(model.lm_head, model.lm_head.bias) : embed;
  const finalNorm = (model.model.finalNorm as RMSNorm).weight;
  if (!embed || !head || !float32(finalNorm)) return null;
  return {
    C: c.hidden_size, H: c.num_attention_heads, Hkv: c.num_key_value_heads, D: c.head_dim, rd: model.rope.spec.dim, I: c.intermediate_size, V: c.vocab_size,
    eps: c.norm_eps, embed, finalNorm: buffer(finalNorm), head, cos: buffer(cos), sin: buffer(sin),
    scratch: scratchFor(cache, be, {
      x: c.hidden_size, h: c.hidden_size, q: c.num_attention_heads * c.head_dim, qRot: c.num_attention_heads * c.head_dim, k: c.num_key_value_heads * c.head_dim,
      kRot: c.num_key_value_heads * c.head_dim, v: c.num_key_value_heads * c.head_dim, att: c.num_attention_heads * c.head_dim, lse: c.num_attention_heads,
      gate: c.intermediate_size, up: c.intermediate_size, act: c.intermediate_size, o: c.hidden_size, rstd: Math.max(c.num_attention_heads, c.num_key_value_heads),
    }) as unknown as DecodePlan['scratch'], layers,
  };
}

/** What the common step needs of a model kind: its coverage check, scratch sizes and plan. */
interface FusedKind<M> {
  unsupported(model: M): string | null;
  backend(model: M): Backend;
  kv(model: M): { Hkv: number; D: number; V: number };
  /** The RoPE tables for positions below end (or null when the model has none). */
  tables(model: M, end: number): [Tensor, Tensor] | null;
  plan(model: M, cache: KVCache, tables: [Tensor, Tensor] | null): DecodePlan | GPTDecodePlan | null;
}

function fusedStep<M extends object>(kind: FusedKind<M>, model: M, idx: Tensor, cache: KVCache): Tensor | null {
  if (!fusedDecode.enabled || idx.shape[0] !== 1 || idx.shape[1] !== 1 || isGradEnabled()) return null;
  let cp = plans.get(cache);
  if (cp === null) return null; // this cache's model was found not covered
  if (cp === undefined && kind.unsupported(model) !== null) {
    plans.set(cache, null);
    return null;
  }
  const be = kind.backend(model);
  const { Hkv, D, V } = kind.kv(model);
  const pos = cache.length;
  const tables = kind.tables(model, pos + 1);
  // Room for this token in every layer's cache; a grown buffer or table means a new plan.
  const shape = [1, Hkv, pos + 1, D] as const;
  const kBufs = cache.layers.map((l) => reserveCache(l, 'k', shape, be, 'float32'));
  const vBufs = cache.layers.map((l) => reserveCache(l, 'v', shape, be, 'float32'));
  if (!cp || cp.cos !== (tables?.[0] ?? null) || kBufs.some((b, i) => b !== cp!.kBufs[i]) || vBufs.some((b, i) => b !== cp!.vBufs[i])) {
    const plan = kind.plan(model, cache, tables);
    if (!plan) {
      plans.set(cache, null);
      return null;
    }
    cp = { encoded: be.encodeDecodePlan!(plan), kBufs, vBufs, cos: tables?.[0] ?? null };
    plans.set(cache, cp);
  }
  const token = idx.data()[0]!;
  const logits = empty([1, 1, V], { backend: be });
  try {
    be.decodeStep!(cp.encoded, token, pos, logits.storage);
  } catch (e) {
    logits.dispose();
    throw e;
  }
  for (const l of cache.layers) {
    setCacheLength(l, 'k', pos + 1);
    setCacheLength(l, 'v', pos + 1);
  }
  cache.length = pos + 1;
  return logits;
}

const LLAMA: FusedKind<FusableDecoder> = {
  unsupported: fusedDecodeUnsupported,
  backend: backendOf,
  kv: (m) => ({ Hkv: m.config.num_key_value_heads, D: m.config.head_dim, V: m.config.vocab_size }),
  tables: (m, end) => m.rope.tablesUpTo(end),
  plan: (m, cache, t) => buildPlan(m, cache, t![0], t![1]),
};

/**
 * forwardWithCache for one token of one sequence in one backend call: the logits (1, 1, V), the
 * cache grown by one; null (nothing done) where the model or backend is not covered, and the
 * caller runs the forward op by op.
 */
export function fusedDecodeStep(model: FusableDecoder, idx: Tensor, cache: KVCache): Tensor | null {
  return fusedStep(LLAMA, model, idx, cache);
}

// ---------------------------------------------------------------- attn's GPT

/** What the fused step reads of a GPT (gpt.ts), stated here so that the two files do not import each other. */
interface FusableBlock {
  readonly ln_1: Module; readonly ln_2: Module;
  readonly attn: {
    readonly c_attn: Linear; readonly c_proj: Linear; readonly nHead: number; readonly nKvHead: number; readonly headDim: number;
    readonly kind: string; readonly sparsity: unknown; readonly probe: unknown; readonly cacheKind: 'kv' | 'state';
  };
  readonly mlp: Module;
}
export interface FusableGPT extends Pick<Module, 'namedModules' | 'training'> {
  readonly config: { readonly norm_placement?: string; readonly vocab_size?: number };
  readonly transformer: {
    readonly wte: Embedding; readonly wpe: Embedding | null; readonly pe: { readonly table: Tensor } | null; readonly rope: RotaryEmbedding | null;
    readonly h: { readonly items: readonly FusableBlock[] }; readonly ln_f: Module | null;
  };
  readonly lm_head: Linear | null;
}

interface GPTMlp { readonly c_fc: Linear; readonly c_fc2: Linear | null; readonly c_proj: Linear; readonly activation: string }
const isNorm = (m: Module | null): m is LayerNorm | RMSNorm => m instanceof LayerNorm || m instanceof RMSNorm;

/** Why the GPT takes the op-by-op path (a reason), or null when the fused step covers it. */
export function gptFusedDecodeUnsupported(model: FusableGPT): string | null {
  const t = model.transformer;
  const be = tableBackend(t.wte);
  if (!be.decodeStep || !be.encodeDecodePlan) return 'the backend has no fused decode step';
  if (model.training) return 'training mode';
  if ((model.config.norm_placement ?? 'pre') !== 'pre' || !isNorm(t.ln_f)) return 'not pre-norm';
  if (!t.wte.quant && !float32(t.wte.weight)) return 'the embedding is not float32';
  if (t.pe && !float32(t.pe.table)) return 'the position table is not float32';
  for (const [name, m] of model.namedModules()) {
    if (Object.prototype.hasOwnProperty.call(m, 'forward')) return `module '${name}' carries an adapter`;
  }
  const rms = t.ln_f instanceof RMSNorm;
  for (const b of t.h.items) {
    const a = b.attn;
    if (a.kind !== 'dense' || a.sparsity || a.cacheKind !== 'kv') return `attention '${a.kind}'`;
    if (a.probe) return 'an attention probe is attached';
    if (!isNorm(b.ln_1) || !isNorm(b.ln_2) || (b.ln_1 instanceof RMSNorm) !== rms || (b.ln_2 instanceof RMSNorm) !== rms) return 'mixed norms';
    const mlp = b.mlp as unknown as Partial<GPTMlp>;
    if (!mlp.c_fc || !mlp.c_proj || (mlp.activation !== 'gelu' && mlp.activation !== 'relu')) return `MLP '${mlp.activation ?? 'mixture of experts'}'`;
  }
  return null;
}

const normBuffers = (n: LayerNorm | RMSNorm): [DecodeBuffer, DecodeBuffer | null] | null => {
  const b = n instanceof LayerNorm ? n.bias : null;
  return float32(n.weight) && float32(b) ? [buffer(n.weight), b ? buffer(b) : null] : null;
};


function gptPlan(model: FusableGPT, cache: KVCache, tables: [Tensor, Tensor] | null): GPTDecodePlan | null {
  const t = model.transformer;
  const b0 = t.h.items[0]!.attn;
  const H = b0.nHead, Hkv = b0.nKvHead, D = b0.headDim, C = H * D;
  const mlp0 = t.h.items[0]!.mlp as unknown as GPTMlp;
  const I = mlp0.c_fc.matrixShape()[0];
  const be = GPT_KIND.backend(model);
  const scratch = scratchFor(cache, be, { x: C, h: C, qkv: C + 2 * Hkv * D, qRot: C, kRot: Hkv * D, att: C, lse: H, fc: I, o: C, mean: 1, rstd: 1 });
  const layers: GPTDecodeLayerPlan[] = [];
  for (const [i, b] of t.h.items.entries()) {
    const mlp = b.mlp as unknown as GPTMlp;
    const ms = [matrix(b.attn.c_attn, b.attn.c_attn.bias), matrix(b.attn.c_proj, b.attn.c_proj.bias), matrix(mlp.c_fc, mlp.c_fc.bias), matrix(mlp.c_proj, mlp.c_proj.bias)];
    const n1 = normBuffers(b.ln_1 as LayerNorm | RMSNorm), n2 = normBuffers(b.ln_2 as LayerNorm | RMSNorm);
    if (ms.some((m) => m === null) || !n1 || !n2) return null;
    const l = cache.layers[i]!;
    layers.push({
      ln1: n1[0], ln1Bias: n1[1], ln2: n2[0], ln2Bias: n2[1], qkv: ms[0]!, attnProj: ms[1]!, fc: ms[2]!, mlpProj: ms[3]!,
      kCache: buffer(l.kBuf!), vCache: buffer(l.vBuf!), capacity: l.kBuf!.shape[2]!,
    });
  }
  const wte = matrix(t.wte, null);
  const positions = t.wpe ? matrix(t.wpe, null) : t.pe ? { float: buffer(t.pe.table), quant: null, bias: null, N: t.pe.table.shape[0]!, K: t.pe.table.shape[1]! } : null;
  const head = model.lm_head ? matrix(model.lm_head, model.lm_head.bias) : wte;
  const nf = normBuffers(t.ln_f as LayerNorm | RMSNorm);
  if (!wte || !head || !nf || ((t.wpe || t.pe) && !positions)) return null;
  const ln = t.ln_f as LayerNorm | RMSNorm;
  return {
    kind: 'gpt', C, H, Hkv, D, I, V: wte.N, eps: ln.eps, rms: ln instanceof RMSNorm, activation: mlp0.activation as 'gelu' | 'relu', rd: tables ? D : 0,
    wte, positions, cos: tables ? buffer(tables[0]) : null, sin: tables ? buffer(tables[1]) : null, lnf: nf[0], lnfBias: nf[1], head,
    scratch: scratch as unknown as GPTDecodePlan['scratch'], layers,
  };
}

const GPT_KIND: FusedKind<FusableGPT> = {
  unsupported: gptFusedDecodeUnsupported,
  backend: (m) => tableBackend(m.transformer.wte),
  kv: (m) => {
    const a = m.transformer.h.items[0]!.attn;
    return { Hkv: a.nKvHead, D: a.headDim, V: m.transformer.wte.matrixShape()[0] };
  },
  tables: (m) => (m.transformer.rope ? [m.transformer.rope.cos, m.transformer.rope.sin] : null),
  plan: gptPlan,
};

/** GPT.forwardWithCache for one token of one sequence in one backend call (see fusedDecodeStep). */
export function gptFusedDecodeStep(model: FusableGPT, idx: Tensor, cache: KVCache): Tensor | null {
  return fusedStep(GPT_KIND, model, idx, cache);
}
