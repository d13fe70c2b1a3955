// The one interface every backend implements. The tensor layer owns shapes, views and
// autograd; a backend only moves numbers. Conventions used by every method:
//  - Storage is an opaque buffer made by the same backend; `size` is in elements.
//  - A Layout describes a strided view in *elements*: shape, strides (may be 0 for a
//    broadcast dim, any value for permuted views), offset of element [0,...,0].
//  - Unless a parameter says "layout", the argument is a contiguous run of elements
//    starting at element 0 of the storage.
//  - Outputs are written, never accumulated, unless the parameter says "accumulate".
//  - Float math in float32 storage may be done in float32 or float64; results must agree
//    with float64 math to float32 rounding (relative 1e-5 for reductions of ~1e4 terms).
import type { DType, TypedArray } from '../tensor/dtype.js';
import type { QuantFormat } from '../tensor/quantize.js';

export interface Storage {
  readonly backend: Backend;
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
  /** Tensors that reference this storage; managed by the tensor layer. */
  refs: number;
  /** Set by Backend.free; any later use is an error. */
  freed: boolean;
}

export interface Layout {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
}

export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'tanh' | 'relu' | 'gelu' | 'gelu_erf'
  | 'silu' | 'sigmoid' | 'abs' | 'sin' | 'cos' | 'square' | 'recip' | 'sign' | 'elu1';
// gelu: tanh approximation 0.5x(1+tanh(√(2/π)(x+0.044715x³))); gelu_erf: 0.5x(1+erf(x/√2)).
// elu1: elu(x)+1 (x>0 ? x+1 : exp(x)), the linear-attention feature map.

/** Unary ops whose backward needs the input x: gx = gy * f'(x). */
export type UnaryGradOp = 'relu' | 'gelu' | 'gelu_erf' | 'silu' | 'sigmoid' | 'tanh' | 'elu1';

export type BinaryOp =
  | 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'max' | 'min'
  | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge';
// Comparisons write 1 or 0 in the output dtype.

export type ReduceOp = 'sum' | 'max' | 'min' | 'argmax';

export type Activation = 'none' | 'relu' | 'gelu';

export interface MatmulArgs {
  /** out[b, m, n] = act( Σ_k A[b, m, k] · B[b, k, n] + bias[n] ) (+ out if accumulate). */
  a: Storage; aOffset: number; aBatchStride: number;
  /** transA false: A[b,m,k] at aOffset + b*aBatchStride + m*lda + k; true: + k*lda + m. */
  transA: boolean; lda: number; // lda (and ldb) may be 0 or less than the row length: a broadcast operand
  b: Storage; bOffset: number; bBatchStride: number;
  /** transB false: B[b,k,n] at bOffset + b*bBatchStride + k*ldb + n; true: + n*ldb + k. */
  transB: boolean; ldb: number;
  /** Contiguous (batch, M, N) from element 0. */
  out: Storage;
  batch: number; M: number; N: number; K: number;
  bias?: Storage | null;
  activation?: Activation;
  accumulate?: boolean;
  /** 'bfloat16': A and B rounded to bfloat16 (nearest even), products accumulated in float32
   *  (mixed precision; see tensor/precision.ts). Default float32. */
  precision?: 'float32' | 'bfloat16';
}

/**
 * A weight-only quantized (N, K) weight (PyTorch's (out, in)) on a backend, in the packed layouts
 * of tensor/quantize.ts. Byte arrays live in int32 storages as little-endian words (byte i is
 * bits 8(i%4).. of word i/4), padded with zeros to whole words.
 */
/** A buffer of a DecodePlan: a float32 storage and the element where the buffer starts. */
export interface DecodeBuffer { readonly storage: Storage; readonly offset: number }
/** A matrix of a DecodePlan: float32 (N, K) rows, or quantized; with its bias. */
export interface DecodeMatrix { readonly float: DecodeBuffer | null; readonly quant: QuantWeightStorage | null; readonly bias: DecodeBuffer | null; readonly N: number; readonly K: number }
export interface DecodeLayerPlan {
  readonly inNorm: DecodeBuffer;
  readonly postNorm: DecodeBuffer;
  /** Per-head RMSNorm of q and k (qwen3), or null. */
  readonly qNorm: DecodeBuffer | null;
  readonly kNorm: DecodeBuffer | null;
  /** Sliding window (keys seen, itself included), 0 = full causal. */
  readonly window: number;
  readonly q: DecodeMatrix; readonly k: DecodeMatrix; readonly v: DecodeMatrix; readonly o: DecodeMatrix;
  readonly gate: DecodeMatrix; readonly up: DecodeMatrix; readonly down: DecodeMatrix;
  /** (1, Hkv, capacity, D) key and value caches. */
  readonly kCache: DecodeBuffer; readonly vCache: DecodeBuffer; readonly capacity: number;
}
/** Everything one fused decode step of a Llama-style decoder reads and writes (Backend.decodeStep):
 *  RMSNorm (eps) before attention and MLP, RoPE of rd features from tables (positions, rd/2),
 *  grouped-query attention, SwiGLU MLP, the embedding, the head. Scratch buffers: x, h (C),
 *  q, qRot, att (H·D), k, kRot, v (Hkv·D), lse (H), gate, up, act (I), o (C), rstd (max(H, Hkv)). */
export interface DecodePlan {
  readonly kind?: 'llama';
  readonly C: number; readonly H: number; readonly Hkv: number; readonly D: number; readonly rd: number; readonly I: number; readonly V: number;
  readonly eps: number;
  /** The token embedding (V, C): float32 rows, or quantized rows dequantized as looked up. */
  readonly embed: DecodeMatrix;
  readonly finalNorm: DecodeBuffer;
  readonly head: DecodeMatrix;
  readonly cos: DecodeBuffer; readonly sin: DecodeBuffer;
  readonly scratch: { readonly x: Storage; readonly h: Storage; readonly q: Storage; readonly qRot: Storage; readonly k: Storage; readonly kRot: Storage; readonly v: Storage;
    readonly att: Storage; readonly lse: Storage; readonly gate: Storage; readonly up: Storage; readonly act: Storage; readonly o: Storage; readonly rstd: Storage };
  readonly layers: readonly DecodeLayerPlan[];
}

/** The GPT's layer of a GPTDecodePlan: pre-norm block, fused q/k/v projection, a two-matrix MLP. */
export interface GPTDecodeLayerPlan {
  readonly ln1: DecodeBuffer; readonly ln1Bias: DecodeBuffer | null; readonly ln2: DecodeBuffer; readonly ln2Bias: DecodeBuffer | null;
  readonly qkv: DecodeMatrix; readonly attnProj: DecodeMatrix; readonly fc: DecodeMatrix; readonly mlpProj: DecodeMatrix;
  readonly kCache: DecodeBuffer; readonly vCache: DecodeBuffer; readonly capacity: number;
}
/** attn's GPT for Backend.decodeStep: token embedding plus a position table's row (or RoPE of rd
 *  features on q and k), LayerNorm (or RMSNorm) pre-norm blocks, the MLP's activation fused into
 *  its first matmul ('gelu' tanh or 'relu'), the final norm, the head. Scratch: x, h, o (C),
 *  qkv (C + 2·Hkv·D), qRot (C), kRot (Hkv·D), att (C), lse (H), fc (I), mean, rstd (1). */
export interface GPTDecodePlan {
  readonly kind: 'gpt';
  readonly C: number; readonly H: number; readonly Hkv: number; readonly D: number; readonly I: number; readonly V: number;
  readonly eps: number; readonly rms: boolean; readonly activation: 'gelu' | 'relu'; readonly rd: number;
  readonly wte: DecodeMatrix; readonly positions: DecodeMatrix | null; readonly cos: DecodeBuffer | null; readonly sin: DecodeBuffer | null;
  readonly lnf: DecodeBuffer; readonly lnfBias: DecodeBuffer | null; readonly head: DecodeMatrix;
  readonly scratch: { readonly x: Storage; readonly h: Storage; readonly qkv: Storage; readonly qRot: Storage; readonly kRot: Storage; readonly att: Storage;
    readonly lse: Storage; readonly fc: Storage; readonly o: Storage; readonly mean: Storage; readonly rstd: Storage };
  readonly layers: readonly GPTDecodeLayerPlan[];
}

export interface QuantWeightStorage {
  readonly format: QuantFormat;
  readonly N: number;
  readonly K: number;
  /** int8: N·K signed bytes, row n at byte n·K; int4/int4z: N·K/32 groups of 16 bytes. */
  readonly data: Storage;
  /** float32: int8 N (per row); int4/int4z N·K/32 (per group, row-major). */
  readonly scales: Storage;
  /** int4z: N·K/32 zero-point bytes (0..15); null for int8 and int4 (whose zero point is 8). */
  readonly zeros: Storage | null;
}

export interface QuantMatmulArgs {
  /** out[m, n] = act( Σ_k x[m, k] · scale(n, k) · level(n, k) + bias[n] ): x (M, K) and out (M, N)
   *  contiguous float32 from element 0; the weight is never dequantized as a whole. */
  x: Storage; w: QuantWeightStorage; out: Storage; M: number;
  bias?: Storage | null;
  activation?: Activation;
}

/** Element (b, h, t, d) of a (B, H, T, D) attention operand at offset + b·strides[0] + h·strides[1] + t·strides[2] + d. */
export interface AttentionView {
  offset: number;
  strides: readonly [number, number, number];
}

export interface AttentionArgs {
  /** q: (B, H, Tq, D), k and v: (B, H, Tk, D), out: (B, H, Tq, D); contiguous. */
  q: Storage; k: Storage; v: Storage; out: Storage;
  /** (B, H, Tq) log-sum-exp of the scaled, masked scores of each query row (saved for backward). */
  lse: Storage;
  B: number; H: number; Tq: number; Tk: number; D: number;
  /** Backends with `stridedAttention` only: q, k, v and out as strided views of their storages
   *  (the last dim contiguous), e.g. the heads of one fused qkv projection read in place and the
   *  output written in (B, T, H, D) order. Absent: all four contiguous from element 0. */
  views?: { q: AttentionView; k: AttentionView; v: AttentionView; out: AttentionView } | null;
  /** Key/value heads (grouped-query attention): k and v are (B, Hkv, Tk, D), and query head h
   *  reads kv head floor(h / (H / Hkv)). Only backends with `groupedKV` get Hkv < H; default H. */
  Hkv?: number;
  scale: number;
  /** Causal: query i (0-based) sees keys j <= i + (Tk - Tq) (bottom-right aligned, so a KV cache works). */
  causal: boolean;
  /** Optional (B, Tk) int32 key mask: 1 = attend, 0 = padding. A row with no visible key outputs 0. */
  keyMask?: Storage | null;
  /** Optional sparse pattern, ANDed with causal and keyMask (see AttentionSparsity). */
  sparsity?: AttentionSparsity | null;
}

/**
 * Sparse attention patterns, stated on i' = i + Tk - Tq (query i aligned to the keys the
 * way causal is) and the offset d = i' - j of key j; causal further requires d >= 0:
 *  - window w: |d| < w (causal: the w most recent keys, i' - w < j <= i').
 *  - strided l (Child et al. 2019): |d| < l, or d ≡ 0 (mod l).
 *  - fixed l, c (Child et al. 2019): floor(j / l) == floor(i' / l) (same block of l keys), or
 *    j mod l >= l - c (the last c "summary" columns of every block).
 * window, stride, block and summary are integers >= 1, summary <= block. Kernels skip key
 * blocks (of 64) with no visible key: window costs O(T·w); fixed O(T·(l + 64·T/l)) (one key
 * block per summary run); strided O(T·(l + 128·T/l)), as a stride diagonal crosses a block
 * whenever l < 128, so strided saves work only for strides well above 128.
 */
export type AttentionSparsity =
  | { kind: 'window'; window: number }
  | { kind: 'strided'; stride: number }
  | { kind: 'fixed'; block: number; summary: number };

/** Throws a RangeError naming op unless s is a valid AttentionSparsity (or absent). */
export function checkSparsity(op: string, s: AttentionSparsity | null | undefined): void {
  if (!s) return;
  const posInt = (what: string, x: unknown): void => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > 2 ** 30) {
      throw new RangeError(`${op}: sparsity ${what} must be an integer in [1, 2^30], got ${String(x)}`);
    }
  };
  switch (s.kind) {
    case 'window': posInt('window', s.window); break;
    case 'strided': posInt('stride', s.stride); break;
    case 'fixed':
      posInt('block', s.block);
      posInt('summary', s.summary);
      if (s.summary > s.block) throw new RangeError(`${op}: sparsity summary (${s.summary}) must be <= block (${s.block})`);
      break;
    default: throw new RangeError(`${op}: unknown sparsity kind ${JSON.stringify((s as { kind?: unknown }).kind)}`);
  }
}

export interface AttentionBackwardArgs extends AttentionArgs {
  gout: Storage;
  /** Outputs (written): gradients of q, k, v, same shapes as q, k, v. */
  gq: Storage; gk: Storage; gv: Storage;
}

export interface AdamWArgs {
  /** In place over n elements: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
   *  p -= lr * ( (m / bc1) / (sqrt(v / bc2) + eps) + wd * p ). */
  param: Storage; grad: Storage; m: Storage; v: Storage; n: number;
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number;
  /** Bias corrections 1 - beta1^t and 1 - beta2^t. */
  bc1: number; bc2: number;
}

/**
 * The counter-based hash behind dropout masks: a uint32 for element i of a mask with key
 * (seed0, seed1). Two rounds of murmur3's finaliser over the index mixed with the key; every
 * backend computes the same bits, so the same seed gives the same mask on cpu and webgpu.
 */
export function maskHash(seed0: number, seed1: number, i: number): number {
  let h = (Math.imul(i, 0x9e3779b9) ^ seed0) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h = (h ^ (h >>> 16) ^ seed1) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The integer form of a drop probability p, compared with 24 hash bits (exact on every backend). */
export function dropThreshold(p: number): number {
  return Math.min(16777216, Math.ceil(p * 16777216));
}

export interface Backend {
  readonly name: string;
  /** Whether tensors of this dtype may live on this backend. */
  supports(dtype: DType): boolean;
  /** Whether attention takes fewer key/value heads than query heads (AttentionArgs.Hkv); where
   *  not, the ops layer repeats each kv head for its group first. */
  readonly groupedKV?: boolean;
  /** SwiGLU's gating, out = silu(gate) · up over n contiguous float32 elements, and its backward,
   *  in one pass each; backends without them get silu and mul from the ops layer. */
  swiglu?(gate: Storage, up: Storage, n: number, out: Storage): void;
  swigluBackward?(gate: Storage, up: Storage, gy: Storage, n: number, gGate: Storage, gUp: Storage): void;
  /**
   * Rotary position embedding of `rows` contiguous rows of D features: row r sits at position
   * (r / H) % T + offset (rows of (B, T, H, D); H = 1 for (B, H, T, D)); its first rd features
   * rotate in half-split pairs (i, i + rd/2) by the angles whose cos and sin tables (rd/2 per
   * position, from position 0) are given; the rest are copied. inverse rotates back (the
   * backward pass). Backends without it get the rotation from slices, muls and a concat.
   */
  rope?(x: Storage, cos: Storage, sin: Storage, out: Storage, rows: number, H: number, T: number, D: number, rd: number, offset: number, inverse: boolean): void;
  /** Whether attention reads q, k, v and writes out through AttentionArgs.views (no copies). */
  readonly stridedAttention?: boolean;
  /**
   * One decode step of a Llama-style decoder (batch 1, one token) in one call: the encoded plan
   * (encodeDecodePlan) names every weight, cache and scratch buffer; the step writes the token's
   * keys and values into the caches at `pos` and the logits to `logits`. The kernels and their
   * order are those of the op-by-op forward, so the logits are the same. Backends without it
   * (or without a plan for a model) run the forward op by op.
   */
  encodeDecodePlan?(plan: DecodePlan | GPTDecodePlan): unknown;
  decodeStep?(encoded: unknown, token: number, pos: number, logits: Storage): void;
  /**
   * Sampling at a temperature, for a server's decode rows: for each i, a draw from
   * softmax(row rows[i] / temperatures[i]) of the float32 (rows, V) logits starting at element
   * `offset` of `logits`, by inverse CDF at uniforms[i] in [0, 1) (the caller's generator); -1
   * for a row whose logits are all -inf or NaN. The weights are float32, so a draw may differ
   * from a float64 sampler's where the uniform falls within rounding of a boundary. Backends
   * without it leave sampling to the caller (on the logits it reads back).
   */
  sampleTempered?(logits: Storage, offset: number, V: number, rows: Int32Array, temperatures: Float64Array, uniforms: Float64Array): Int32Array;

  // ---- memory ----
  /** A zero-filled storage of `size` elements; with `uninitialized`, contents unspecified
   *  (the caller writes every element before anything reads it), which spares a GPU backend
   *  the zero-fill of a reused buffer. CPU backends may zero anyway. */
  alloc(dtype: DType, size: number, uninitialized?: boolean): Storage;
  upload(data: ArrayLike<number>, dtype: DType): Storage;
  /** A fresh contiguous copy of the elements described by layout (all of s when omitted). */
  read(s: Storage, layout?: Layout): TypedArray;
  /** Elements [offset, offset + dst.length) of a float32 storage into dst, an array the caller
   *  reuses (a decode loop's logits row): no fresh array, whose first touch of each page costs
   *  more than the copy on some machines. Backends without it: read(). */
  readInto?(s: Storage, offset: number, dst: Float32Array): void;
  free(s: Storage): void;
  /** Overwrite elements [offset, offset + data.length) of s. */
  write(s: Storage, data: ArrayLike<number>, offset: number): void;

  // ---- element-wise (layouts may be non-contiguous or broadcast; out is contiguous in outShape order) ----
  /** out[i] = x[layout(i)], converting dtype when out.dtype differs (float→int truncates toward zero). */
  copy(x: Storage, xl: Layout, out: Storage): void;
  /** Strided write: out[outLayout(i)] = x[xLayout(i)], shapes equal. Used by concat and setters. */
  copyInto(x: Storage, xl: Layout, out: Storage, outLayout: Layout): void;
  /** Copies blocks of one shape: block i is x's layout xl moved by xShift[i] elements, copied to out's
   *  layout ol moved by outShift[i] (a decode step's rows into a KV pool, each at its own position,
   *  in one call). Backends without it: copyInto per block. */
  copyBlocks?(x: Storage, xl: Layout, out: Storage, ol: Layout, xShift: readonly number[], outShift: readonly number[]): void;
  fill(out: Storage, value: number, offset: number, n: number): void;
  unary(op: UnaryOp, x: Storage, xl: Layout, out: Storage): void;
  /** Contiguous n elements: gx = gy * f'(x). */
  unaryBackward(op: UnaryGradOp, x: Storage, gy: Storage, gx: Storage, n: number): void;
  /** al and bl are already broadcast to the output shape (stride 0 on broadcast dims). */
  binary(op: BinaryOp, a: Storage, al: Layout, b: Storage, bl: Layout, out: Storage): void;
  /** out[i] = a[i] op s (or s op a[i] when reversed). */
  binaryScalar(op: BinaryOp, a: Storage, al: Layout, s: number, reversed: boolean, out: Storage): void;
  /** out[i] = cond[i] != 0 ? a[i] : b[i]; layouts broadcast to the output shape. */
  where(cond: Storage, cl: Layout, a: Storage, al: Layout, b: Storage, bl: Layout, out: Storage): void;

  // ---- reductions over the middle axis of a contiguous (outer, n, inner) view ----
  /** out is (outer, inner); argmax writes int32 indices (first maximum). */
  reduce(op: ReduceOp, x: Storage, outer: number, n: number, inner: number, out: Storage): void;
  /** Inclusive prefix sum along the middle axis: out[o, j, i] = Σ_{j' ≤ j} x[o, j', i]; out is (outer, n, inner). */
  cumsum(x: Storage, outer: number, n: number, inner: number, out: Storage): void;

  // ---- linear algebra ----
  matmul(args: MatmulArgs): void;

  /** Weight-only quantized linear (int8, int4, int4z; see QuantMatmulArgs). */
  quantMatmul(args: QuantMatmulArgs): void;
  /** out[i, :] = dequantized row ids[i] of w (N = vocabulary, K = width): a quantized embedding. */
  quantEmbedding(w: QuantWeightStorage, ids: Storage, n: number, out: Storage): void;

  // ---- fused row kernels over contiguous (rows, n) ----
  /** Softmax (or log-softmax) along the last axis. */
  softmax(x: Storage, rows: number, n: number, log: boolean, out: Storage): void;
  /** softmax: gx = y (gy - Σ gy y); log-softmax: gx = gy - exp(y) Σ gy. y is the forward output. */
  softmaxBackward(y: Storage, gy: Storage, rows: number, n: number, log: boolean, gx: Storage): void;
  /** y = (x - mean) * rstd * w + b; w and b of length n or null (1 and 0). Writes mean and rstd (rows). */
  layerNorm(x: Storage, w: Storage | null, b: Storage | null, rows: number, n: number, eps: number,
    out: Storage, mean: Storage, rstd: Storage): void;
  /** Writes gx; writes (not accumulates) gw and gb when given. */
  layerNormBackward(x: Storage, w: Storage | null, mean: Storage, rstd: Storage, gy: Storage,
    rows: number, n: number, gx: Storage, gw: Storage | null, gb: Storage | null): void;
  /** y = x * rstd * w, rstd = 1/sqrt(mean(x²) + eps). */
  rmsNorm(x: Storage, w: Storage | null, rows: number, n: number, eps: number, out: Storage, rstd: Storage): void;
  rmsNormBackward(x: Storage, w: Storage | null, rstd: Storage, gy: Storage, rows: number, n: number,
    gx: Storage, gw: Storage | null): void;

  // ---- indexing (indices are int32; out of range throws a RangeError naming the index and the limit) ----
  /** out[i, :] = weight[ids[i], :]; weight (V, C), ids n, out (n, C). */
  embedding(weight: Storage, V: number, C: number, ids: Storage, n: number, out: Storage): void;
  /** gw (V, C) += gy[i, :] at row ids[i]; gw accumulate. */
  embeddingBackward(gy: Storage, ids: Storage, n: number, V: number, C: number, gw: Storage): void;
  /** torch.gather on contiguous x (outer, n, inner) with index (outer, k, inner): out[o,j,i] = x[o, idx[o,j,i], i]. */
  gather(x: Storage, outer: number, n: number, inner: number, index: Storage, k: number, out: Storage): void;
  /** Backward of gather: gx (outer, n, inner) += scatter of gy (outer, k, inner); gx accumulate. */
  scatterAdd(gy: Storage, outer: number, n: number, inner: number, index: Storage, k: number, gx: Storage): void;

  // ---- losses ----
  /** Rows of logits (N, V), int32 targets (N). Per row: loss = lse - [(1-ε) x[t] + ε mean(x)],
   *  0 where target == ignoreIndex. Writes losses (N) and lse (N). Targets out of [0, V) (and not
   *  ignoreIndex) throw a RangeError. */
  crossEntropy(logits: Storage, targets: Storage, N: number, V: number, ignoreIndex: number,
    smoothing: number, losses: Storage, lse: Storage): void;
  /** gx[r] = scale[r] * (softmax(x[r]) - (1-ε) onehot(t) - ε/V); rows with ignored targets get 0.
   *  scale is per row (N): the upstream gradient of that row's loss. */
  crossEntropyBackward(logits: Storage, targets: Storage, lse: Storage, scale: Storage, N: number, V: number,
    ignoreIndex: number, smoothing: number, gx: Storage): void;

  // ---- attention ----
  /** Scaled dot-product attention. Memory beyond q, k, v, out and lse must not grow as Tq·Tk. */
  attention(args: AttentionArgs): void;
  attentionBackward(args: AttentionBackwardArgs): void;

  // ---- random ----
  /** Dropout mask over n contiguous elements: out[i] = (maskHash(seed0, seed1, i) >>> 8) >=
   *  dropThreshold(p) ? scale : 0 (kept with probability 1 - p). Drawn on the device, so
   *  training with dropout uploads nothing per step. */
  dropoutMask(out: Storage, n: number, p: number, scale: number, seed0: number, seed1: number): void;

  // ---- optimizer ----
  adamw(args: AdamWArgs): void;
}
