// Attention without the softmax over T keys:
//  - causal linear attention (Katharopoulos et al. 2020): out_i = φ(q_i)·S_i / (φ(q_i)·z_i) with
//    S_i = Σ_{j≤i} φ(k_j) v_jᵀ and z_i = Σ_{j≤i} φ(k_j), computed in chunks: inside a chunk a masked
//    (L×L) product, across chunks a carried (F×D) state, so memory is O(T·F + T·L) and autograd
//    differentiates it; generation carries (S, z) in a LinearAttentionState instead of a KV cache;
//  - Performer / FAVOR+ (Choromanski et al. 2021): positive orthogonal random features whose
//    products estimate exp(q·k/√D), fed to the same causal machinery;
//  - Linformer (Wang et al. 2020): keys and values projected along the sequence from T to k
//    rows; bidirectional only (for encoders).
import {
  add, concat, contiguous, div, exp, fmt, matmul, max, mul, noGrad, permute, reshape, scaledDotProductAttention, slice, split,
  square, sub, sum, tensor, to, transpose, tril, zeros, cumsum, unsqueeze, type Generator, type Tensor,
} from '../tensor/index.js';
import { Dropout, Linear, normalTensor, type InitOptions } from './layers.js';
import { Module, type ModuleOptions } from './module.js';

/** A contiguous, graph-free, kept copy of t (outlives tidy scopes). */
function keepDetached(t: Tensor): Tensor {
  const c = noGrad(() => contiguous(t));
  return (c === t ? t.detach() : c).keep();
}

/**
 * One layer's running sums for causal linear attention: S (B, H, F, D) and z (B, H, F, 1), or
 * null before the first token. Kept and detached; dispose() when done.
 */
export class LinearAttentionState {
  S: Tensor | null = null;
  z: Tensor | null = null;
  /** Tokens summed so far (the position of the next one). */
  length = 0;

  /** Replaces the sums (takes detached, kept copies; frees the old ones). */
  set(S: Tensor, z: Tensor): void {
    const s = keepDetached(S);
    const zz = keepDetached(z);
    const n = this.length;
    this.reset();
    this.S = s;
    this.z = zz;
    this.length = n;
  }

  reset(): void {
    this.S?.dispose();
    this.z?.dispose();
    this.S = null;
    this.z = null;
    this.length = 0;
  }

  dispose(): void {
    this.reset();
  }
}

export interface CausalLinearAttentionOptions {
  /** Tokens per chunk (default 64). */
  chunk?: number;
  /** Added to the denominator (default 1e-6). */
  eps?: number;
  /** Sums of earlier tokens to continue from; updated with these tokens' sums. */
  state?: LinearAttentionState;
}

/**
 * Causal linear attention from feature-mapped queries and keys (positive features):
 * phiQ, phiK (B, H, T, F), v (B, H, T, D) -> (B, H, T, D).
 */
export function causalLinearAttention(phiQ: Tensor, phiK: Tensor, v: Tensor, opts: CausalLinearAttentionOptions = {}): Tensor {
  if (phiQ.ndim !== 4 || phiK.ndim !== 4 || v.ndim !== 4) {
    throw new Error(`causalLinearAttention: inputs must be 4-D (B, H, T, ·), got ${fmt(phiQ.shape)}, ${fmt(phiK.shape)}, ${fmt(v.shape)}`);
  }
  const [B, H, T, F] = phiQ.shape as [number, number, number, number];
  const D = v.shape[3]!;
  const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  if (!same(phiK.shape, [B, H, T, F]) || !same(v.shape, [B, H, T, D])) {
    throw new Error(`causalLinearAttention: phiQ ${fmt(phiQ.shape)}, phiK ${fmt(phiK.shape)} and v ${fmt(v.shape)} do not match`);
  }
  const L = Math.max(1, Math.floor(opts.chunk ?? 64));
  const eps = opts.eps ?? 1e-6;
  const st = opts.state;
  if (st?.S && (st.S.shape[0] !== B || st.S.shape[1] !== H || st.S.shape[2] !== F || st.S.shape[3] !== D)) {
    throw new Error(`causalLinearAttention: state ${fmt(st.S.shape)} does not match (B, H, F, D) = ${fmt([B, H, F, D])}`);
  }
  if (T === 0) return zeros([B, H, 0, D], { backend: v.backend, dtype: v.dtype });
  // All chunks at once, as a batch dimension: padding to a whole number of chunks, then
  // (B, H, nC, L, ·) views. The carried state becomes an exclusive prefix sum over chunks, so
  // forward and backward are O(T) (a loop of slices would make the backward O(T²/L)).
  const nC = Math.ceil(T / L);
  const pad = nC * L - T;
  const padT = (x: Tensor): Tensor => (pad === 0 ? x : concat([x, zeros([B, H, pad, x.shape[3]!], { backend: x.backend, dtype: x.dtype })], 2));
  const q5 = reshape(padT(phiQ), [B, H, nC, L, F]);
  const k5 = reshape(padT(phiK), [B, H, nC, L, F]);
  const v5 = reshape(padT(v), [B, H, nC, L, D]);
  const a = tril(matmul(q5, transpose(k5))); // (B, H, nC, L, L), j ≤ i inside each chunk
  let num = matmul(a, v5); // (B, H, nC, L, D)
  let den = sum(a, -1, true); // (B, H, nC, L, 1)
  const kt = transpose(k5); // (B, H, nC, F, L)
  const dS = matmul(kt, v5); // (B, H, nC, F, D): each chunk's Σ φ(k) vᵀ
  const dz = sum(kt, -1, true); // (B, H, nC, F, 1)
  let Sx = sub(cumsum(dS, 2), dS); // state before each chunk
  let zx = sub(cumsum(dz, 2), dz);
  const S0 = st?.S ?? null; // (B, H, F, D)
  const z0 = st?.z ?? null; // (B, H, F, 1)
  if (S0 && z0) {
    Sx = add(Sx, unsqueeze(S0, 2));
    zx = add(zx, unsqueeze(z0, 2));
  }
  num = add(num, matmul(q5, Sx));
  den = add(den, matmul(q5, zx));
  const out = reshape(div(num, add(den, eps)), [B, H, nC * L, D]);
  if (st) {
    const S = sum(dS, 2);
    const z = sum(dz, 2);
    st.set(S0 ? add(S0, S) : S, z0 ? add(z0, z) : z);
    st.length += T;
  }
  return pad === 0 ? out : slice(out, 2, 0, T);
}

/**
 * Bidirectional linear attention: out_i = φ(q_i)·(Σ_j φ(k_j) v_jᵀ) / (φ(q_i)·Σ_j φ(k_j)), over
 * feature-mapped phiQ (B, H, Tq, F), phiK (B, H, Tk, F) and v (B, H, Tk, D) -> (B, H, Tq, D).
 * keyMask (B, Tk) int32 (0 = padding) zeroes the padded keys' features, so they add nothing to
 * either sum. O(T·F·D): the (Tq×Tk) matrix is never formed.
 */
export function linearAttention(phiQ: Tensor, phiK: Tensor, v: Tensor, opts: { keyMask?: Tensor | null; eps?: number } = {}): Tensor {
  if (phiQ.ndim !== 4 || phiK.ndim !== 4 || v.ndim !== 4) {
    throw new Error(`linearAttention: inputs must be 4-D (B, H, T, ·), got ${fmt(phiQ.shape)}, ${fmt(phiK.shape)}, ${fmt(v.shape)}`);
  }
  const [B, H, , F] = phiQ.shape as [number, number, number, number];
  const Tk = phiK.shape[2]!;
  if (phiK.shape[0] !== B || phiK.shape[1] !== H || phiK.shape[3] !== F || v.shape[0] !== B || v.shape[1] !== H || v.shape[2] !== Tk) {
    throw new Error(`linearAttention: phiQ ${fmt(phiQ.shape)}, phiK ${fmt(phiK.shape)} and v ${fmt(v.shape)} do not match`);
  }
  const m = opts.keyMask;
  if (m) {
    if (m.ndim !== 2 || m.shape[0] !== B || m.shape[1] !== Tk) throw new Error(`linearAttention: keyMask ${fmt(m.shape)} must be (B, Tk) = ${fmt([B, Tk])}`);
    phiK = mul(phiK, reshape(to(m, phiK.dtype), [B, 1, Tk, 1]));
  }
  const kv = matmul(transpose(phiK), v); // (B, H, F, D)
  const z = sum(phiK, 2, true); // (B, H, 1, F)
  const num = matmul(phiQ, kv); // (B, H, Tq, D)
  const den = sum(mul(phiQ, z), -1, true); // (B, H, Tq, 1)
  return div(num, add(den, opts.eps ?? 1e-6));
}

/**
 * Linformer's projection along the sequence: keys and values (B, H, T, D) -> (B, H, k, D)
 * through the first T columns of E, F (k, maxLen). Padded positions (keyMask 0) are zeroed
 * first so they contribute nothing.
 */
export function linformerProject(E: Tensor, F: Tensor, k: Tensor, v: Tensor, keyMask?: Tensor | null): [Tensor, Tensor] {
  const [B, , T] = k.shape as [number, number, number, number];
  if (keyMask) {
    const m = reshape(to(keyMask, k.dtype), [B, 1, T, 1]);
    k = mul(k, m);
    v = mul(v, m);
  }
  return [matmul(slice(E, 1, 0, T), k), matmul(slice(F, 1, 0, T), v)]; // (k, T) @ (B, H, T, D)
}

/** φ(x) = elu(x) + 1, the linear transformer's feature map. */
export { elu1 as eluFeatureMap } from '../tensor/index.js';

/**
 * m random rows of dimension D for FAVOR+: blocks of D orthonormal rows (Gram–Schmidt of a
 * Gaussian matrix), each row rescaled by an independent chi(D) norm so rows are marginally
 * Gaussian. Row-major (m, D).
 */
export function orthogonalGaussianFeatures(m: number, D: number, g: Generator): Float64Array {
  const out = new Float64Array(m * D);
  for (let start = 0; start < m; start += D) {
    const rows = Math.min(D, m - start);
    const q = new Float64Array(D * D);
    for (let i = 0; i < D; i++) {
      for (;;) {
        for (let c = 0; c < D; c++) q[i * D + c] = g.normal();
        for (let j = 0; j < i; j++) {
          let dot = 0;
          for (let c = 0; c < D; c++) dot += q[i * D + c]! * q[j * D + c]!;
          for (let c = 0; c < D; c++) q[i * D + c]! -= dot * q[j * D + c]!;
        }
        let n2 = 0;
        for (let c = 0; c < D; c++) n2 += q[i * D + c]! ** 2;
        if (n2 > 1e-20) {
          const inv = 1 / Math.sqrt(n2);
          for (let c = 0; c < D; c++) q[i * D + c]! *= inv;
          break;
        }
      }
    }
    for (let i = 0; i < rows; i++) {
      let chi2 = 0;
      for (let c = 0; c < D; c++) chi2 += g.normal() ** 2;
      const norm = Math.sqrt(chi2);
      for (let c = 0; c < D; c++) out[(start + i) * D + c] = q[i * D + c]! * norm;
    }
  }
  return out;
}

/** FAVOR+ positive random features; `omega` (m, D) is a saved, untrained buffer. */
export class PerformerFeatureMap extends Module {
  readonly omega: Tensor; // (m, D)

  constructor(readonly headDim: number, readonly numFeatures: number, opts: ModuleOptions & { generator?: Generator; skipInit?: boolean } = {}) {
    super();
    const v = opts.generator && !opts.skipInit ? orthogonalGaussianFeatures(numFeatures, headDim, opts.generator) : new Float64Array(numFeatures * headDim);
    this.omega = this.registerBuffer('omega', tensor(v, { shape: [numFeatures, headDim], backend: opts.backend, dtype: opts.dtype ?? 'float32' }), true);
  }

  /** Draws new features in place. */
  redraw(g: Generator): void {
    const v = orthogonalGaussianFeatures(this.numFeatures, this.headDim, g);
    this.omega.backend.write(this.omega.storage, v, this.omega.offset);
  }

  /**
   * x (B, H, T, D) -> φ(x) (B, H, T, m) = exp(ωx' − |x'|²/2 − s)/√m with x' = x·D^(-1/4).
   * Queries subtract their own row max s (it cancels in the ratio); keys use s = 0, so a key's
   * features do not depend on the others (and cached sums stay valid).
   */
  forward(x: Tensor, isQuery: boolean): Tensor {
    const xs = mul(x, this.headDim ** -0.25);
    const proj = matmul(xs, transpose(this.omega)); // (B, H, T, m)
    let logits = sub(proj, mul(sum(square(xs), -1, true), 0.5));
    if (isQuery) {
      const stab = noGrad(() => max(logits, -1, true)).detach(); // (B, H, T, 1)
      logits = sub(logits, stab);
    }
    return mul(exp(logits), 1 / Math.sqrt(this.numFeatures));
  }
}

export interface LinformerOptions extends InitOptions {
  bias?: boolean;
  dropout?: number;
  projStd?: number;
  dropoutGenerator?: Generator;
}

/**
 * Linformer self-attention, bidirectional: x (B, T, C) -> (B, T, C) with T ≤ maxLen. Keys and
 * values (B, H, T, D) become (B, H, k, D) through learned E, F (k, maxLen), shared by the heads;
 * padded positions (keyMask 0) are zeroed before the projection so they contribute nothing.
 */
export class LinformerSelfAttention extends Module {
  readonly c_attn: Linear; // (C -> 3C)
  readonly c_proj: Linear; // (C -> C)
  readonly E: Tensor; // (k, maxLen) for keys
  readonly F: Tensor; // (k, maxLen) for values
  readonly resid_dropout: Dropout;
  readonly headDim: number;

  constructor(readonly nEmbd: number, readonly nHead: number, readonly maxLen: number, readonly k: number, opts: LinformerOptions = {}) {
    super();
    if (nEmbd % nHead !== 0) throw new Error(`LinformerSelfAttention: n_embd ${nEmbd} is not divisible by n_head ${nHead}`);
    if (!(Number.isInteger(k) && k >= 1)) throw new Error(`LinformerSelfAttention: k must be a positive integer, got ${k}`);
    this.headDim = nEmbd / nHead;
    const lin = { backend: opts.backend, dtype: opts.dtype, generator: opts.generator, std: opts.std, skipInit: opts.skipInit, bias: opts.bias ?? true };
    this.c_attn = this.registerModule('c_attn', new Linear(nEmbd, 3 * nEmbd, lin));
    this.c_proj = this.registerModule('c_proj', new Linear(nEmbd, nEmbd, { ...lin, std: opts.projStd ?? opts.std }));
    const pinit = { backend: opts.backend, dtype: opts.dtype, generator: opts.generator, skipInit: opts.skipInit };
    this.E = this.registerParameter('E', normalTensor([k, maxLen], 1 / Math.sqrt(k), pinit));
    this.F = this.registerParameter('F', normalTensor([k, maxLen], 1 / Math.sqrt(k), pinit));
    this.resid_dropout = this.registerModule('resid_dropout', new Dropout(opts.dropout ?? 0, opts.dropoutGenerator ?? opts.generator));
  }

  /** x (B, T, C), keyMask int32 (B, T) with 1 = token, 0 = padding. */
  forward(x: Tensor, keyMask?: Tensor | null): Tensor {
    if (x.ndim !== 3 || x.shape[2] !== this.nEmbd) throw new Error(`LinformerSelfAttention: input ${fmt(x.shape)} must be (B, T, ${this.nEmbd})`);
    const [B, T, C] = x.shape as [number, number, number];
    if (T > this.maxLen) throw new Error(`LinformerSelfAttention: sequence of ${T} exceeds maxLen ${this.maxLen}`);
    if (keyMask && (keyMask.ndim !== 2 || keyMask.shape[0] !== B || keyMask.shape[1] !== T)) {
      throw new Error(`LinformerSelfAttention: keyMask ${fmt(keyMask.shape)} must be (B, T) = ${fmt([B, T])}`);
    }
    const H = this.nHead;
    const D = this.headDim;
    const [q, k, v] = split(this.c_attn.forward(x), C, -1).map((t) => permute(reshape(t, [B, T, H, D]), [0, 2, 1, 3])) as [Tensor, Tensor, Tensor]; // (B, H, T, D)
    const [kp, vp] = linformerProject(this.E, this.F, k, v, keyMask); // (B, H, k, D)
    const y = scaledDotProductAttention(q, kp, vp); // (B, H, T, D)
    const merged = reshape(permute(y, [0, 2, 1, 3]), [B, T, C]);
    return this.resid_dropout.forward(this.c_proj.forward(merged));
  }
}
