// Multi-head causal self-attention (GPT-2's `attn`): one c_attn projection makes q, k and v,
// the fused scaledDotProductAttention kernel attends in (B, H, T, D) layout without building
// the T×T matrix, and c_proj mixes the heads back. An optional KV cache keeps past keys and
// values so generation feeds one new token per step instead of the whole prefix.
// Variants: grouped-query attention (fewer k/v heads, each shared by a group of query heads),
// sparse patterns of the fused kernel (local, strided, fixed), and causal linear attention
// (elu+1 features or Performer random features) with a running state instead of a KV cache.
import {
  concat, contiguous, elu1, expand, fmt, noGrad, permute, reshape, scaledDotProductAttention, slice, split, tidy, unsqueeze, zeros,
  type Generator, type Tensor,
} from '../tensor/index.js';
import type { AttentionSparsity, Backend } from '../backend/backend.js';
import { tensor } from '../tensor/ops.js';
import type { DType } from '../tensor/dtype.js';
import { Dropout, Linear, type InitOptions } from './layers.js';
import { causalLinearAttention, LinearAttentionState, PerformerFeatureMap } from './linear-attention.js';
import { Module } from './module.js';
import type { RotaryEmbedding } from './positional.js';

/** One layer's cached keys and values, (B, Hkv, Tpast, D) each, or null before the first step;
 *  linear-attention layers keep running sums in `state` instead. */
export interface KVLayerCache {
  k: Tensor | null;
  v: Tensor | null;
  state?: LinearAttentionState | null;
  /** Preallocated (B, Hkv, capacity, D) storage that k and v are views of (dense layers):
   *  a step writes its new keys in place instead of copying the whole cache. */
  kBuf?: Tensor | null;
  vBuf?: Tensor | null;
}

/** Options of a model's forwardWithCache. */
export interface ForwardCacheOptions {
  /** Logits of the last position only, (B, 1, V): what a prompt's prefill needs. */
  lastOnly?: boolean;
}

/** What a layer keeps between generation steps. */
export type LayerCacheKind = 'kv' | 'state';

/**
 * Keys and values of every layer for the tokens seen so far. The tensors are kept (they
 * outlive tidy() scopes) and detached (no graph): call dispose() when generation is done.
 */
export class KVCache {
  readonly layers: KVLayerCache[];
  /** Number of tokens cached, i.e. the position of the next token. */
  length = 0;

  /** kinds[i]: what layer i keeps (default 'kv' for every layer). */
  constructor(nLayer: number, kinds?: readonly LayerCacheKind[]) {
    this.layers = Array.from({ length: nLayer }, (_, i) => ({ k: null, v: null, state: kinds?.[i] === 'state' ? new LinearAttentionState() : null }));
  }

  /** Empties the cache (frees its tensors). */
  reset(): void {
    for (const l of this.layers) {
      for (const t of [l.k, l.v, l.kBuf, l.vBuf]) t?.dispose();
      l.k = null;
      l.v = null;
      l.kBuf = null;
      l.vBuf = null;
      l.state?.reset();
    }
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
    this.length = 0;
  }

  /** Other buffers a step keeps with this cache (a fused decode step's scratch), freed with it. */
  readonly owned: Tensor[] = [];

  dispose(): void {
    this.reset();
  }
}

/**
 * Appends t (B, Hkv, T, D) to the layer's cached keys or values and returns all of them,
 * (B, Hkv, Tpast + T, D): a view of a buffer that grows by doubling, so a step copies only its
 * own T rows (a concat would copy the whole cache every step).
 */
export function appendToCache(layer: KVLayerCache, key: 'k' | 'v', t: Tensor): Tensor {
  const [B, Hkv, T, D] = t.shape as [number, number, number, number];
  const past = layer[key]?.shape[2] ?? 0;
  return noGrad(() => {
    const buf = reserveCache(layer, key, [B, Hkv, past + T, D], t.backend, t.dtype);
    const dst = slice(buf, 2, past, past + T);
    t.backend.copyInto(t.storage, t.layout, dst.storage, dst.layout);
    dst.dispose();
    return setCacheLength(layer, key, past + T);
  });
}

/** The layer's (B, Hkv, capacity, D) buffer for `key`, grown (doubling, at least 64 positions,
 *  the cached positions copied over) so that it holds shape[2] positions. */
export function reserveCache(layer: KVLayerCache, key: 'k' | 'v', shape: readonly [number, number, number, number], backend: Backend, dtype: DType): Tensor {
  const bufKey = key === 'k' ? 'kBuf' : 'vBuf';
  const [B, Hkv, needed, D] = shape;
  const past = layer[key]?.shape[2] ?? 0;
  let buf = layer[bufKey] ?? null;
  if (!buf || buf.shape[0] !== B || buf.shape[2] < needed) {
    const cap = Math.max(needed, 2 * (buf?.shape[2] ?? 0), 64);
    const grown = noGrad(() => zeros([B, Hkv, cap, D], { backend, dtype }).keep());
    const old = layer[key];
    if (old && past) {
      const dst = slice(grown, 2, 0, past);
      backend.copyInto(old.storage, old.layout, dst.storage, dst.layout);
      dst.dispose();
    }
    buf?.dispose();
    layer[bufKey] = buf = grown;
  }
  return buf;
}

/** Points the layer's `key` view at the first `length` positions of its buffer. */
export function setCacheLength(layer: KVLayerCache, key: 'k' | 'v', length: number): Tensor {
  const buf = (key === 'k' ? layer.kBuf : layer.vBuf)!;
  const all = noGrad(() => slice(buf, 2, 0, length).keep());
  layer[key]?.dispose();
  layer[key] = all;
  return all;
}

/**
 * The KV caches of a batch of independent sequences for continuous batching: one
 * (slots, Hkv, capacity, D) buffer per layer for keys and one for values, slot i holding
 * sequence i's first lengths[i] positions. The running sequences occupy slots 0 .. B-1, so one
 * decode step attends over a view of the first B slots (no copy) with a keyMask marking each
 * row's own valid positions. Capacity grows by doubling.
 */
export class KVPool {
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  readonly lengths: number[];
  capacity = 0;

  constructor(readonly nLayer: number, readonly slots: number, readonly nKvHead: number, readonly headDim: number, readonly backend: Backend, readonly dtype: DType = 'float32', capacity = 64) {
    this.lengths = new Array<number>(slots).fill(0);
    this.reserve(capacity);
  }

  /** Makes room for `need` positions in every slot. */
  reserve(need: number): void {
    if (need <= this.capacity) return;
    const cap = Math.max(need, 2 * this.capacity, 16);
    noGrad(() => {
      for (const list of [this.k, this.v]) {
        for (let l = 0; l < this.nLayer; l++) {
          const grown = zeros([this.slots, this.nKvHead, cap, this.headDim], { backend: this.backend, dtype: this.dtype }).keep();
          const old = list[l];
          if (old) {
            const dst = slice(grown, 2, 0, this.capacity);
            this.backend.copyInto(old.storage, old.layout, dst.storage, dst.layout);
            dst.dispose();
            old.dispose();
          }
          list[l] = grown;
        }
      }
    });
    this.capacity = cap;
  }

  /** Copies a prefilled cache (batch 1) into `slot`. */
  load(slot: number, cache: KVCache): void {
    const T = cache.length;
    this.reserve(T + 1);
    tidy(() => noGrad(() => {
      cache.layers.forEach((layer, l) => {
        for (const [src, list] of [[layer.k, this.k], [layer.v, this.v]] as const) {
          if (!src || src.shape[2] !== T) throw new Error(`KVPool.load: layer ${l} holds ${src?.shape[2] ?? 0} positions, the cache says ${T}`);
          const dst = slice(slice(list[l]!, 0, slot, slot + 1), 2, 0, T);
          this.backend.copyInto(src.storage, src.layout, dst.storage, dst.layout);
          dst.dispose();
        }
      });
    }));
    this.lengths[slot] = T;
  }

  /** Moves slot `from`'s positions into slot `to` (to keep the running slots a prefix). */
  move(from: number, to: number): void {
    const T = this.lengths[from]!;
    if (from !== to && T > 0) {
      tidy(() => noGrad(() => {
        for (const list of [this.k, this.v]) {
          for (const buf of list) {
            const src = slice(slice(buf, 0, from, from + 1), 2, 0, T);
            const dst = slice(slice(buf, 0, to, to + 1), 2, 0, T);
            this.backend.copyInto(src.storage, src.layout, dst.storage, dst.layout);
            src.dispose();
            dst.dispose();
          }
        }
      }));
    }
    this.lengths[to] = T;
    if (from !== to) this.lengths[from] = 0;
  }

  /** The (B, Tk) int32 key mask of a decode step over slots 0 .. B-1 (Tk = longest + 1): row i
   *  attends to its lengths[i] cached positions and the new one written at lengths[i]. */
  stepMask(B: number): Tensor {
    let Tk = 0;
    for (let i = 0; i < B; i++) Tk = Math.max(Tk, this.lengths[i]! + 1);
    this.reserve(Tk);
    const m = new Int32Array(B * Tk);
    for (let i = 0; i < B; i++) m.fill(1, i * Tk, i * Tk + this.lengths[i]! + 1);
    return tensor(m, { backend: this.backend, dtype: 'int32', shape: [B, Tk] });
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
    this.k.length = 0;
    this.v.length = 0;
    this.capacity = 0;
  }
}

/**
 * Attention of one decode step over a KVPool's first B slots: k, v (B, Hkv, 1, D) are written at
 * each row's own position, then one fused attention call covers every row, q (B, H, 1, D)
 * against the pool's keys with `mask` (from pool.stepMask(B)). Returns (B, H, 1, D).
 */
export function pooledDecodeAttention(q: Tensor, k: Tensor, v: Tensor, pool: KVPool, layer: number, mask: Tensor): Tensor {
  const B = q.shape[0]!;
  const Tk = mask.shape[1]!;
  const K = pool.k[layer]!;
  const V = pool.v[layer]!;
  // Row i's (1, Hkv, 1, D) goes to slot i at position lengths[i]: layouts of the two views, built
  // directly (a tensor per view costs more than the copy of 2 x Hkv x D floats at 8 rows).
  for (const [src, buf] of [[k, K], [v, V]] as const) {
    const sl = src.layout;
    const bl = buf.layout;
    const shape = [1, sl.shape[1]!, 1, sl.shape[3]!];
    const from = Array.from({ length: B }, (_, i) => i * sl.strides[0]!);
    const to = Array.from({ length: B }, (_, i) => i * bl.strides[0]! + pool.lengths[i]! * bl.strides[2]!);
    const be = src.backend;
    if (be.copyBlocks) be.copyBlocks(src.storage, { shape, strides: sl.strides, offset: sl.offset }, buf.storage, { shape, strides: bl.strides, offset: bl.offset }, from, to);
    else for (let i = 0; i < B; i++) be.copyInto(src.storage, { shape, strides: sl.strides, offset: sl.offset + from[i]! }, buf.storage, { shape, strides: bl.strides, offset: bl.offset + to[i]! });
  }
  const keys = slice(slice(K, 0, 0, B), 2, 0, Tk);
  const values = slice(slice(V, 0, 0, B), 2, 0, Tk);
  return scaledDotProductAttention(q, keys, values, { keyMask: mask }); // (B, H, 1, D)
}

/**
 * One step of continuous batching over a KVPool: B decode rows (slots 0 .. B-1, one token each,
 * at pool.lengths[i]) and prompt chunks of sequences joining in other slots, all in one forward
 * so every weight matmul runs once for every token of the step.
 */
export interface PooledStep {
  /** Decode rows: the first B rows of the step, for slots 0 .. B-1. */
  decodeRows: number;
  /** (B, Tk) key mask of the decode rows (pool.stepMask(B)); null when B = 0. */
  mask: Tensor | null;
  /** Prompt chunks, after the decode rows in this order: chunk j's `count` tokens go to `slot`
   *  at positions start .. start + count - 1. */
  chunks: readonly { slot: number; start: number; count: number }[];
}

/** A joining sequence's prompt tokens for a step: they go to `slot` from pool.lengths[slot]. */
export interface PromptChunk {
  slot: number;
  tokens: readonly number[];
}

/**
 * Plans a step over `pool`: B decode tokens for slots 0 .. B-1 and prompt chunks for other,
 * distinct slots. Checks the slots and the context, makes room, and returns the step, the
 * token ids and the position of every row in row order.
 */
export function planPooledStep(pool: KVPool, decode: readonly number[], chunks: readonly PromptChunk[], blockSize: number, who: string): { step: PooledStep; ids: Int32Array; positions: number[] } {
  const B = decode.length;
  if (B > pool.slots) throw new Error(`${who}: ${B} decode rows for a pool of ${pool.slots} slots`);
  const ids: number[] = [...decode];
  const positions = pool.lengths.slice(0, B);
  if (positions.some((p) => p + 1 > blockSize)) throw new Error(`${who}: a sequence is at the context of ${blockSize} tokens`);
  const seen = new Set<number>();
  const planned: { slot: number; start: number; count: number }[] = [];
  let need = 0;
  for (const c of chunks) {
    if (!Number.isInteger(c.slot) || c.slot < B || c.slot >= pool.slots || seen.has(c.slot)) {
      throw new Error(`${who}: a prompt chunk's slot ${c.slot} must be a distinct slot in ${B} .. ${pool.slots - 1} (slots 0 .. ${B - 1} decode)`);
    }
    if (c.tokens.length === 0) throw new Error(`${who}: an empty prompt chunk for slot ${c.slot}`);
    seen.add(c.slot);
    const start = pool.lengths[c.slot]!;
    if (start + c.tokens.length > blockSize) throw new Error(`${who}: slot ${c.slot}: ${start} cached + ${c.tokens.length} new tokens exceed the context of ${blockSize}`);
    planned.push({ slot: c.slot, start, count: c.tokens.length });
    for (let t = 0; t < c.tokens.length; t++) {
      ids.push(c.tokens[t]!);
      positions.push(start + t);
    }
    need = Math.max(need, start + c.tokens.length);
  }
  pool.reserve(need);
  const mask = B > 0 ? pool.stepMask(B) : null;
  return { step: { decodeRows: B, mask, chunks: planned }, ids: Int32Array.from(ids), positions };
}

/** The rows of a step's output that predict a next token, (B + chunks, 1, C): every decode row
 *  and each chunk's last. */
export function stepOutputRows(x: Tensor, step: PooledStep): Tensor {
  if (!step.chunks.length) return x;
  const parts: Tensor[] = step.decodeRows > 0 ? [slice(x, 0, 0, step.decodeRows)] : [];
  let row = step.decodeRows;
  for (const c of step.chunks) {
    row += c.count;
    parts.push(slice(x, 0, row - 1, row));
  }
  return parts.length === 1 ? parts[0]! : concat(parts, 0);
}

/** Advances the pool's lengths past a step. */
export function finishPooledStep(pool: KVPool, step: PooledStep): void {
  for (let i = 0; i < step.decodeRows; i++) pool.lengths[i]! += 1;
  for (const c of step.chunks) pool.lengths[c.slot] = c.start + c.count;
}

/** Rows of the step (decode rows, then every chunk's tokens). */
export function pooledStepRows(step: PooledStep): number {
  let n = step.decodeRows;
  for (const c of step.chunks) n += c.count;
  return n;
}

/**
 * Attention of a PooledStep: q (N, H, 1, D), k and v (N, Hkv, 1, D) in the step's row order,
 * not yet rotated. The decode rows go through pooledDecodeAttention; each chunk is written into
 * its slot and attends causally over that slot's positions, exactly as a prefill of those tokens
 * on the sequence's own cache would. `rotate` applies RoPE to (1, heads, T, D) from a position.
 * Returns (N, H, 1, D).
 */
export function pooledStepAttention(q: Tensor, k: Tensor, v: Tensor, pool: KVPool, layer: number, step: PooledStep, rotate: ((t: Tensor, start: number) => Tensor) | null): Tensor {
  const B = step.decodeRows;
  const ys: Tensor[] = [];
  if (B > 0) {
    let qd = step.chunks.length ? slice(q, 0, 0, B) : q;
    let kd = step.chunks.length ? slice(k, 0, 0, B) : k;
    const vd = step.chunks.length ? slice(v, 0, 0, B) : v;
    if (rotate) {
      const pos = pool.lengths.slice(0, B);
      qd = rotateRows(qd, pos, rotate);
      kd = rotateRows(kd, pos, rotate);
    }
    ys.push(pooledDecodeAttention(qd, kd, vd, pool, layer, step.mask!));
  }
  let row = B;
  for (const c of step.chunks) {
    const seq = (t: Tensor) => permute(slice(t, 0, row, row + c.count), [2, 1, 0, 3]); // (1, heads, T, D)
    let qc = seq(q);
    let kc = seq(k);
    const vc = seq(v);
    if (rotate) {
      qc = rotate(qc, c.start);
      kc = rotate(kc, c.start);
    }
    const end = c.start + c.count;
    noGrad(() => {
      for (const [src, buf] of [[kc, pool.k[layer]!], [vc, pool.v[layer]!]] as const) {
        const d = slice(slice(buf, 0, c.slot, c.slot + 1), 2, c.start, end);
        src.backend.copyInto(src.storage, src.layout, d.storage, d.layout);
        d.dispose();
      }
    });
    const keys = slice(slice(pool.k[layer]!, 0, c.slot, c.slot + 1), 2, 0, end);
    const values = slice(slice(pool.v[layer]!, 0, c.slot, c.slot + 1), 2, 0, end);
    const y = scaledDotProductAttention(qc, keys, values, { causal: true }); // (1, H, T, D), bottom-right aligned
    ys.push(permute(y, [2, 1, 0, 3])); // (T, H, 1, D)
    row += c.count;
  }
  return ys.length === 1 ? ys[0]! : concat(ys, 0);
}

/** Rotates each row of x (B, H, 1, D) or (B, 1, H, D) at its own position. */
export function rotateRows(x: Tensor, positions: readonly number[], rotate: (row: Tensor, pos: number) => Tensor): Tensor {
  const B = x.shape[0]!;
  if (B === 1) return rotate(x, positions[0]!);
  const rows: Tensor[] = [];
  for (let i = 0; i < B; i++) rows.push(rotate(slice(x, 0, i, i + 1), positions[i]!));
  return concat(rows, 0);
}

/** The softmax attention one layer just computed, as handed to an AttentionProbe: enough to
 *  recompute its probabilities (the fused kernel never builds them). */
export interface AttentionProbeView {
  /** Queries (B, H, Tq, D) and keys (B, Hkv, Tk, D), after RoPE and any q/k norm. */
  q: Tensor;
  k: Tensor;
  /** Values (B, Hkv, Tk, D). */
  v: Tensor;
  scale: number;
  causal: boolean;
  sparsity: AttentionSparsity | null;
  /** (B, Tk) int32, 1 = attend, when padding is masked. */
  keyMask: Tensor | null;
}

/**
 * An inspection hook on a softmax attention module (interpretability: src/eval/interpret.ts):
 * when a module's `probe` is set, each forward calls observe() with its queries and keys and the
 * heads' outputs y (B, H, Tq, D) before the output projection, and goes on with what it returns
 * (y itself, or y with heads zeroed for ablation). Unset (the default), the forward is unchanged.
 */
export interface AttentionProbe {
  observe(view: AttentionProbeView, y: Tensor): Tensor;
}

/** The attention kinds a causal layer supports. */
export type CausalAttentionKind = 'dense' | 'local' | 'strided' | 'fixed' | 'linear' | 'performer';

export interface CausalSelfAttentionOptions extends InitOptions {
  /** Default 'dense'. */
  kind?: CausalAttentionKind;
  /** Key/value heads (divides nHead; default nHead). */
  nKvHead?: number;
  /** For local, strided and fixed. */
  sparsity?: AttentionSparsity | null;
  /** Random features m for performer (default 64). */
  performerFeatures?: number;
  /** Draws the performer's initial features (default: generator). */
  featureGenerator?: Generator;
  /** Tokens per chunk of causal linear attention (default 64). */
  linearChunk?: number;
  bias?: boolean;
  /** Dropout on the output projection. (The fused kernel has no dropout on the attention
   *  probabilities, which nanoGPT's flash path also applies; this one does not.) */
  dropout?: number;
  projStd?: number;
  /** Rotates q and k (shared across layers: it holds only fixed tables). */
  rope?: RotaryEmbedding | null;
  dropoutGenerator?: Generator;
}

/** (B, Hkv, T, D) -> (B, Hkv·groups, T, D): each k/v head repeated for its group of query heads. */
function repeatKv(t: Tensor, groups: number): Tensor {
  if (groups === 1) return t;
  const [B, Hkv, T, D] = t.shape as [number, number, number, number];
  return reshape(expand(unsqueeze(t, 2), [B, Hkv, groups, T, D]), [B, Hkv * groups, T, D]);
}

/**
 * Packed rows: segments[b] lists the lengths of the sequences laid end to end in row b (summing
 * to T). Attention is block-diagonal: a token sees only the earlier tokens of its own sequence,
 * and each sequence's positions start at 0, so a packed row computes what each sequence alone would.
 */
export type Segments = readonly (readonly number[])[];

/** Checks that segments describe B rows of T tokens. */
export function checkSegments(segments: Segments, B: number, T: number): void {
  if (segments.length !== B) throw new Error(`packed segments: ${segments.length} rows of segments for a batch of ${B}`);
  segments.forEach((row, b) => {
    let n = 0;
    for (const len of row) {
      if (!(Number.isInteger(len) && len >= 1)) throw new Error(`packed segments: row ${b} has a segment of length ${len}; lengths must be positive integers`);
      n += len;
    }
    if (n !== T) throw new Error(`packed segments: row ${b}'s segments sum to ${n}, not the row's ${T} tokens`);
  });
}

/** Causal attention within each segment of each row (q, k, v (B, H|Hkv, T, D)); RoPE restarts at 0 per segment. */
function segmentedAttention(q: Tensor, k: Tensor, v: Tensor, segments: Segments, rope: RotaryEmbedding | null): Tensor {
  const [B, , T] = q.shape as [number, number, number, number];
  checkSegments(segments, B, T);
  const rows: Tensor[] = [];
  for (let b = 0; b < B; b++) {
    const parts: Tensor[] = [];
    let s = 0;
    for (const len of segments[b]!) {
      const piece = (t: Tensor): Tensor => slice(slice(t, 0, b, b + 1), 2, s, s + len);
      let qs = piece(q);
      let ks = piece(k);
      if (rope) {
        qs = rope.apply(qs, 0);
        ks = rope.apply(ks, 0);
      }
      parts.push(scaledDotProductAttention(qs, ks, piece(v), { causal: true }));
      s += len;
    }
    rows.push(parts.length === 1 ? parts[0]! : concat(parts, 2));
  }
  return rows.length === 1 ? rows[0]! : concat(rows, 0); // (B, H, T, D)
}

export class CausalSelfAttention extends Module {
  readonly c_attn: Linear; // (C -> C + 2·Hkv·D): q, k, v for all heads at once (3C when Hkv = H)
  readonly c_proj: Linear; // (C -> C)
  readonly resid_dropout: Dropout;
  readonly headDim: number;
  readonly nKvHead: number;
  readonly kind: CausalAttentionKind;
  readonly sparsity: AttentionSparsity | null;
  readonly linearChunk: number;
  /** The random features, when kind is 'performer'. */
  readonly feature_map: PerformerFeatureMap | null;
  readonly rope: RotaryEmbedding | null;
  /** Inspection hook (see AttentionProbe); null in normal use. */
  probe: AttentionProbe | null = null;

  constructor(readonly nEmbd: number, readonly nHead: number, opts: CausalSelfAttentionOptions = {}) {
    super();
    if (nEmbd % nHead !== 0) throw new Error(`CausalSelfAttention: n_embd ${nEmbd} is not divisible by n_head ${nHead}`);
    this.headDim = nEmbd / nHead;
    this.nKvHead = opts.nKvHead ?? nHead;
    if (!(Number.isInteger(this.nKvHead) && this.nKvHead >= 1 && nHead % this.nKvHead === 0)) {
      throw new Error(`CausalSelfAttention: n_head ${nHead} is not divisible by n_kv_head ${this.nKvHead}`);
    }
    this.kind = opts.kind ?? 'dense';
    this.sparsity = opts.sparsity ?? null;
    this.linearChunk = opts.linearChunk ?? 64;
    const lin = { backend: opts.backend, dtype: opts.dtype, generator: opts.generator, std: opts.std, skipInit: opts.skipInit, bias: opts.bias ?? true };
    this.c_attn = this.registerModule('c_attn', new Linear(nEmbd, nEmbd + 2 * this.nKvHead * this.headDim, lin));
    this.c_proj = this.registerModule('c_proj', new Linear(nEmbd, nEmbd, { ...lin, std: opts.projStd ?? opts.std }));
    this.resid_dropout = this.registerModule('resid_dropout', new Dropout(opts.dropout ?? 0, opts.dropoutGenerator ?? opts.generator));
    this.feature_map = this.kind === 'performer'
      ? this.registerModule('feature_map', new PerformerFeatureMap(this.headDim, opts.performerFeatures ?? 64, {
        backend: opts.backend, dtype: opts.dtype, generator: opts.featureGenerator ?? opts.generator, skipInit: opts.skipInit,
      }))
      : null;
    this.rope = opts.rope ?? null; // not registered: its tables belong to the model
  }

  /** Whether generation keeps running sums ('state') rather than keys and values ('kv'). */
  get cacheKind(): 'kv' | 'state' {
    return this.kind === 'linear' || this.kind === 'performer' ? 'state' : 'kv';
  }

  /** x (B, T, C) -> (B, T, C). With a cache, x holds the new tokens only; they attend to the
   *  cached ones too, and their keys and values are appended to the cache. */
  forward(x: Tensor, cache?: KVLayerCache, segments?: Segments): Tensor {
    if (x.ndim !== 3 || x.shape[2] !== this.nEmbd) throw new Error(`CausalSelfAttention: input ${fmt(x.shape)} must be (B, T, ${this.nEmbd})`);
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.nHead;
    const Hkv = this.nKvHead;
    const D = this.headDim;
    const qkv = this.c_attn.forward(x); // (B, T, C + 2·Hkv·D)
    const heads = (t: Tensor, h: number) => permute(reshape(t, [B, T, h, D]), [0, 2, 1, 3]);
    const [q0, k0, v0] = Hkv === H ? split(qkv, C, -1) : split(qkv, [C, Hkv * D, Hkv * D], -1);
    let q = heads(q0!, H); // (B, H, T, D)
    let k = heads(k0!, Hkv); // (B, Hkv, T, D)
    let v = heads(v0!, Hkv);
    if (this.cacheKind === 'state') return this.linearForward(q, k, v, cache, [B, T, C]);
    if (segments) {
      if (cache || this.sparsity) throw new Error('CausalSelfAttention: packed segments take dense attention without a KV cache');
      return this.output(segmentedAttention(q, k, v, segments, this.rope), [B, T, C]);
    }
    const past = cache?.k ? cache.k.shape[2]! : 0;
    if (cache?.k && cache.k.shape[0] !== B) {
      throw new Error(`CausalSelfAttention: batch of ${B} does not match the KV cache's batch of ${cache.k.shape[0]}`);
    }
    if (this.rope) {
      q = this.rope.apply(q, past);
      k = this.rope.apply(k, past);
    }
    if (cache) {
      k = appendToCache(cache, 'k', k); // (B, Hkv, Tpast + T, D)
      v = appendToCache(cache, 'v', v);
    }
    // Causal masking is bottom-right aligned: new query i sees keys up to past + i.
    // Sparse patterns align the same way (stated on absolute key positions, so the cache keeps all keys).
    // Grouped kv heads go in as they are: the kernel maps each query head to its kv head.
    let y = scaledDotProductAttention(q, k, v, { causal: true, sparsity: this.sparsity }); // (B, H, T, D)
    if (this.probe) y = this.probe.observe({ q, k, v, scale: 1 / Math.sqrt(D), causal: true, sparsity: this.sparsity, keyMask: null }, y);
    return this.output(y, [B, T, C]);
  }

  /**
   * One decode step for B independent sequences (continuous batching): x (B, 1, C) holds each
   * sequence's newest token, caches[i] is sequence i's own layer cache (batch 1) and pasts[i]
   * its length (the token's position). The projections run as one (B, ·) matmul each; only the
   * attention core, which is small at decode, runs per row over that row's own keys, with RoPE
   * at that row's position. Row i equals forward(x[i:i+1], caches[i]).
   */
  decodeBatch(x: Tensor, caches: readonly KVLayerCache[], pasts: readonly number[]): Tensor {
    if (x.ndim !== 3 || x.shape[1] !== 1 || x.shape[2] !== this.nEmbd) throw new Error(`CausalSelfAttention.decodeBatch: input ${fmt(x.shape)} must be (B, 1, ${this.nEmbd})`);
    if (this.cacheKind !== 'kv') throw new Error(`CausalSelfAttention.decodeBatch: ${this.kind} attention keeps running sums; batched decode needs a KV cache`);
    const [B, T, C] = x.shape as [number, number, number];
    if (caches.length !== B || pasts.length !== B) throw new Error(`CausalSelfAttention.decodeBatch: ${B} rows, ${caches.length} caches, ${pasts.length} positions`);
    const H = this.nHead;
    const Hkv = this.nKvHead;
    const D = this.headDim;
    const qkv = this.c_attn.forward(x); // (B, 1, C + 2·Hkv·D): one matmul for every row
    const heads = (t: Tensor, h: number) => permute(reshape(t, [B, T, h, D]), [0, 2, 1, 3]);
    const [q0, k0, v0] = Hkv === H ? split(qkv, C, -1) : split(qkv, [C, Hkv * D, Hkv * D], -1);
    const q = heads(q0!, H); // (B, H, 1, D)
    const k = heads(k0!, Hkv);
    const v = heads(v0!, Hkv);
    const ys: Tensor[] = [];
    for (let i = 0; i < B; i++) {
      let qi = slice(q, 0, i, i + 1);
      let ki = slice(k, 0, i, i + 1);
      let vi = slice(v, 0, i, i + 1);
      if (this.rope) {
        qi = this.rope.apply(qi, pasts[i]!);
        ki = this.rope.apply(ki, pasts[i]!);
      }
      ki = appendToCache(caches[i]!, 'k', ki);
      vi = appendToCache(caches[i]!, 'v', vi);
      ys.push(scaledDotProductAttention(qi, ki, vi, { causal: true, sparsity: this.sparsity })); // (1, H, 1, D)
    }
    return this.output(B === 1 ? ys[0]! : concat(ys, 0), [B, T, C]);
  }

  /** Whether decodePooled serves this layer (dense, no sparse pattern). */
  get poolable(): boolean {
    return this.kind === 'dense' && !this.sparsity;
  }

  /**
   * One decode step for the sequences in a KVPool's slots 0 .. B-1: x (B, 1, C) holds each
   * one's newest token. The projections are one matmul each and the attention one fused call
   * for all rows (pooledDecodeAttention); RoPE rotates each row at its own position.
   */
  decodePooled(x: Tensor, pool: KVPool, layer: number, step: PooledStep): Tensor {
    if (!this.poolable) throw new Error(`CausalSelfAttention.decodePooled: ${this.kind} attention${this.sparsity ? ' with a sparse pattern' : ''} needs decodeBatch`);
    const [N, T, C] = x.shape as [number, number, number]; // (N, 1, C): the step's rows
    const H = this.nHead;
    const Hkv = this.nKvHead;
    const D = this.headDim;
    const qkv = this.c_attn.forward(x);
    const heads = (t: Tensor, h: number) => permute(reshape(t, [N, T, h, D]), [0, 2, 1, 3]);
    const [q0, k0, v0] = Hkv === H ? split(qkv, C, -1) : split(qkv, [C, Hkv * D, Hkv * D], -1);
    const rotate = this.rope ? (t: Tensor, p: number) => this.rope!.apply(t, p) : null;
    return this.output(pooledStepAttention(heads(q0!, H), heads(k0!, Hkv), heads(v0!, Hkv), pool, layer, step, rotate), [N, T, C]);
  }

  private output(y: Tensor, [B, T, C]: [number, number, number]): Tensor {
    const merged = reshape(permute(y, [0, 2, 1, 3]), [B, T, C]); // re-assemble the heads
    return this.resid_dropout.forward(this.c_proj.forward(merged)); // (B, T, C)
  }

  /** Causal linear attention (elu+1 or Performer features); the cache holds (S, z). */
  private linearForward(q: Tensor, k: Tensor, v: Tensor, cache: KVLayerCache | undefined, btc: [number, number, number]): Tensor {
    const B = btc[0];
    if (cache && !cache.state) cache.state = new LinearAttentionState();
    const state = cache?.state ?? undefined;
    if (state?.S && state.S.shape[0] !== B) {
      throw new Error(`CausalSelfAttention: batch of ${B} does not match the cached state's batch of ${state.S.shape[0]}`);
    }
    if (this.rope) {
      const past = state?.length ?? 0;
      q = this.rope.apply(q, past);
      k = this.rope.apply(k, past);
    }
    const groups = this.nHead / this.nKvHead;
    k = repeatKv(k, groups); // (B, H, T, D)
    v = repeatKv(v, groups);
    const fm = this.feature_map;
    const phiQ = fm ? fm.forward(q, true) : elu1(q); // (B, H, T, F)
    const phiK = fm ? fm.forward(k, false) : elu1(k);
    const y = causalLinearAttention(phiQ, phiK, v, { chunk: this.linearChunk, state }); // (B, H, T, D)
    return this.output(y, btc);
  }
}
