// The fused decode step of a Llama-style DecoderLM: batch 1, one new token, in one backend call
// (Backend.decodeStep; the native cpu backend's native/decode.cc). On small models the per-op
// JavaScript of a forward costs more than its arithmetic; this path runs the same kernels in the
// same order on flat buffers, so its logits are those of forwardWithCache. Models it does not
// cover (phi's parallel block and LayerNorm, GELU MLPs, dynamic RoPE, bf16/f16 weights, LoRA
// adapters, attention probes) and backends without decodeStep take
// the op-by-op path.
import type { Backend, DecodeBuffer, DecodeLayerPlan, DecodeMatrix, DecodePlan } from '../backend/backend.js';
import { reserveCache, setCacheLength, type KVCache } from '../nn/attention.js';
import { Linear, RMSNorm, type Embedding, type LayerNorm } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import type { ScaledRope } from '../nn/positional.js';
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

interface Scratch { tensors: Tensor[]; plan: DecodePlan['scratch'] }

/** Per cache: the encoded plan and the buffers it was encoded with. */
interface CachePlan { encoded: unknown; kBufs: Tensor[]; vBufs: Tensor[]; cos: Tensor }

/** Off: every step runs op by op (tests and benchmarks compare the two; ATTN_FUSED_DECODE=0
 *  turns it off for a process). */
export const fusedDecode = { enabled: (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.['ATTN_FUSED_DECODE'] !== '0' };

const scratchOf = new WeakMap<FusableDecoder, Scratch>();
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

/** The model's backend (its embedding's, float or quantized). */
function backendOf(model: FusableDecoder): Backend {
  const emb = model.model.embed_tokens;
  return emb.quant ? emb.quant.backend : emb.weight.backend;
}

function scratch(model: FusableDecoder, be: Backend): Scratch {
  let s = scratchOf.get(model);
  if (!s) {
    const c = model.config;
    const H = c.num_attention_heads;
    const Hkv = c.num_key_value_heads;
    const D = c.head_dim;
    const sizes = { x: c.hidden_size, h: c.hidden_size, q: H * D, qRot: H * D, k: Hkv * D, kRot: Hkv * D, v: Hkv * D, att: H * D, lse: H, gate: c.intermediate_size, up: c.intermediate_size, act: c.intermediate_size, o: c.hidden_size, rstd: Math.max(H, Hkv) };
    const tensors: Tensor[] = [];
    const plan: Record<string, unknown> = {};
    for (const [k, n] of Object.entries(sizes)) {
      const t = empty([n], { backend: be }).keep();
      tensors.push(t);
      plan[k] = t.storage;
    }
    s = { tensors, plan: plan as unknown as DecodePlan['scratch'] };
    scratchOf.set(model, s);
  }
  return s;
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
    scratch: scratch(model, be).plan, layers,
  };
}

/**
 * forwardWithCache for one token of one sequence in one backend call: the logits (1, 1, V), the
 * cache grown by one; null (nothing done) where the model or backend is not covered, and the
 * caller runs the forward op by op.
 */
export function fusedDecodeStep(model: FusableDecoder, idx: Tensor, cache: KVCache): Tensor | null {
  if (!fusedDecode.enabled || idx.shape[0] !== 1 || idx.shape[1] !== 1 || isGradEnabled()) return null;
  let cp = plans.get(cache);
  if (cp === null) return null; // this cache's model was found not covered
  if (cp === undefined && fusedDecodeUnsupported(model) !== null) {
    plans.set(cache, null);
    return null;
  }
  const be = backendOf(model);
  const c = model.config;
  const pos = cache.length;
  const tables = model.rope.tablesUpTo(pos + 1)!;
  // Room for this token in every layer's cache; a grown buffer or table means a new plan.
  const shape = [1, c.num_key_value_heads, pos + 1, c.head_dim] as const;
  const kBufs = cache.layers.map((l) => reserveCache(l, 'k', shape, be, 'float32'));
  const vBufs = cache.layers.map((l) => reserveCache(l, 'v', shape, be, 'float32'));
  if (!cp || cp.cos !== tables[0] || kBufs.some((b, i) => b !== cp!.kBufs[i]) || vBufs.some((b, i) => b !== cp!.vBufs[i])) {
    const plan = buildPlan(model, cache, tables[0], tables[1]);
    if (!plan) {
      plans.set(cache, null);
      return null;
    }
    cp = { encoded: be.encodeDecodePlan!(plan), kBufs, vBufs, cos: tables[0] };
    plans.set(cache, cp);
  }
  const token = idx.data()[0]!;
  const logits = empty([1, 1, c.vocab_size], { backend: be });
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
