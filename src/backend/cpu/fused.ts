// JS side of the fused WebAssembly kernels (assembly/fused.ts): one wrapper per Backend
// method. Wrappers pick the thread count, size the per-thread scratch, validate what a
// kernel cannot report (cross-entropy targets) and pass byte pointers (0 = absent).
import { checkSparsity, type AttentionSparsity } from '../backend.js';

/** What the wrappers need from the wasm runtime (runtime.ts implements it). */
export interface KernelRunner {
  /** Runs exports[kernel](tid, nt, ...args) on `threads` threads (default all) and waits. */
  run(kernel: string, args: number[], threads?: number): void;
  /** Base of a per-thread scratch area; thread t uses [base + t * bytesPerThread, ...). */
  scratch(bytesPerThread: number): number;
  readonly threads: number;
  i32(ptr: number, n: number): Int32Array;
}

/** A storage of the cpu backend: a byte offset into the shared memory. */
export interface Ptr {
  readonly ptr: number;
}

const p0 = (s: Ptr | null | undefined): number => (s ? s.ptr : 0);

/** Threads worth waking for `work` units when each should get at least `minPerThread`. */
function threadsFor(rt: KernelRunner, work: number, minPerThread: number): number {
  return Math.max(1, Math.min(rt.threads, Math.floor(work / minPerThread)));
}

// Rounded to 64 bytes so each thread's scratch starts on its own cache line.
const align64 = (n: number): number => Math.ceil(n / 64) * 64;

// ---------------------------------------------------------------- attention

/** Kernel encoding of a sparse pattern: [kind, p1, p2] (kind codes as in assembly/fused.ts). */
function sparseArgs(op: string, s: AttentionSparsity | null | undefined, Tq: number, Tk: number): [number, number, number] {
  checkSparsity(op, s);
  if (!s) return [0, 0, 0];
  // |i' - j| < max(Tq, Tk) always, so larger windows and strides mean the same; capping keeps
  // the kernel's i32 arithmetic from overflowing
  const cap = Math.max(Tq, Tk) + 1;
  switch (s.kind) {
    case 'window': return [1, Math.min(s.window, cap), 0];
    case 'strided': return [2, Math.min(s.stride, cap), 0];
    case 'fixed': return [3, s.block, s.summary];
  }
}

/** Query and key block size of the attention kernels (mirrors attnBlock in assembly/fused.ts). */
export function attentionBlock(D: number): number {
  return roundUp8(D) <= 128 ? 64 : 32;
}

const roundUp8 = (n: number): number => (n + 7) & ~7;

/** Per-thread scratch bytes of attention_fwd / attention_bwd (mirrors their layouts). */
export function attentionScratchBytes(D: number, backward: boolean): number {
  const Dp = roundUp8(D);
  const blk = attentionBlock(D);
  const floats = backward ? blk * (9 * Dp + 2 * blk + 3) : blk * (4 * Dp + blk + 4);
  return align64(4 * floats);
}

export interface AttentionPtrArgs {
  /** q (B, H, Tq, D), k and v (B, H, Tk, D), out (B, H, Tq, D), lse (B, H, Tq). */
  q: Ptr; k: Ptr; v: Ptr; out: Ptr; lse: Ptr;
  B: number; H: number; Tq: number; Tk: number; D: number;
  scale: number;
  /** Query i sees key j iff j <= i + Tk - Tq. */
  causal: boolean;
  /** (B, Tk) int32, 1 = attend. */
  keyMask?: Ptr | null;
  sparsity?: AttentionSparsity | null;
}

export interface AttentionBackwardPtrArgs extends AttentionPtrArgs {
  gout: Ptr; gq: Ptr; gk: Ptr; gv: Ptr;
}

export function attention(rt: KernelRunner, a: AttentionPtrArgs): void {
  const { B, H, Tq, Tk, D } = a;
  if (B * H * Tq * D === 0) return;
  const units = B * H * Math.ceil(Tq / attentionBlock(D));
  const nt = Math.min(rt.threads, units);
  const per = attentionScratchBytes(D, false);
  const scratch = rt.scratch(per);
  rt.run('attention_fwd', [a.q.ptr, a.k.ptr, a.v.ptr, a.out.ptr, a.lse.ptr, B, H, Tq, Tk, D,
    a.scale, a.causal ? 1 : 0, p0(a.keyMask), ...sparseArgs('attention', a.sparsity, Tq, Tk), scratch, per], nt);
}

/** Work is split by head (B * H units): dQ of a head is accumulated by one thread. */
export function attentionBackward(rt: KernelRunner, a: AttentionBackwardPtrArgs): void {
  const { B, H, Tq, Tk, D } = a;
  if (B * H * D === 0 || Tq + Tk === 0) return;
  const nt = Math.min(rt.threads, B * H);
  const per = attentionScratchBytes(D, true);
  const scratch = rt.scratch(per);
  rt.run('attention_bwd', [a.q.ptr, a.k.ptr, a.v.ptr, a.out.ptr, a.lse.ptr, a.gout.ptr,
    a.gq.ptr, a.gk.ptr, a.gv.ptr, B, H, Tq, Tk, D, a.scale, a.causal ? 1 : 0, p0(a.keyMask),
    ...sparseArgs('attentionBackward', a.sparsity, Tq, Tk), scratch, per], nt);
}

// ---------------------------------------------------------------- row kernels

/** Tuning knob: a thread should get at least this many elements before it is worth waking
 *  (tests set 1 to exercise the work split on tiny inputs). */
export const fusedTuning = { minElemsPerThread: 16384 };

function rowThreads(rt: KernelRunner, rows: number, n: number): number {
  return Math.min(rows, threadsFor(rt, rows * n, fusedTuning.minElemsPerThread));
}

export function softmax(rt: KernelRunner, x: Ptr, rows: number, n: number, log: boolean, out: Ptr): void {
  if (rows * n === 0) return;
  rt.run('softmax_fwd', [x.ptr, out.ptr, rows, n, log ? 1 : 0], rowThreads(rt, rows, n));
}

export function softmaxBackward(rt: KernelRunner, y: Ptr, gy: Ptr, rows: number, n: number, log: boolean, gx: Ptr): void {
  if (rows * n === 0) return;
  rt.run('softmax_bwd', [y.ptr, gy.ptr, gx.ptr, rows, n, log ? 1 : 0], rowThreads(rt, rows, n));
}

export function layerNorm(rt: KernelRunner, x: Ptr, w: Ptr | null, b: Ptr | null, rows: number, n: number,
  eps: number, out: Ptr, mean: Ptr, rstd: Ptr): void {
  if (rows * n === 0) return;
  rt.run('layernorm_fwd', [x.ptr, p0(w), p0(b), out.ptr, mean.ptr, rstd.ptr, rows, n, eps],
    rowThreads(rt, rows, n));
}

/** gw and gb: each thread sums its rows into f64 partials in scratch, then
 *  norm_params_reduce adds the partials (columns split over threads). */
export function layerNormBackward(rt: KernelRunner, x: Ptr, w: Ptr | null, mean: Ptr, rstd: Ptr, gy: Ptr,
  rows: number, n: number, gx: Ptr, gw: Ptr | null, gb: Ptr | null): void {
  if (n === 0) return;
  const want = gw !== null || gb !== null;
  const nt = Math.max(1, rowThreads(rt, rows, n));
  const per = want ? align64(16 * n) : 0;
  const scratch = want ? rt.scratch(per) : 0;
  rt.run('layernorm_bwd', [x.ptr, p0(w), mean.ptr, rstd.ptr, gy.ptr, gx.ptr, rows, n, want ? 1 : 0,
    scratch, per], nt);
  if (want) {
    rt.run('norm_params_reduce', [scratch, per, nt, n, p0(gw), p0(gb)], threadsFor(rt, n * nt, fusedTuning.minElemsPerThread));
  }
}

export function rmsNorm(rt: KernelRunner, x: Ptr, w: Ptr | null, rows: number, n: number, eps: number,
  out: Ptr, rstd: Ptr): void {
  if (rows * n === 0) return;
  rt.run('rmsnorm_fwd', [x.ptr, p0(w), out.ptr, rstd.ptr, rows, n, eps], rowThreads(rt, rows, n));
}

export function rmsNormBackward(rt: KernelRunner, x: Ptr, w: Ptr | null, rstd: Ptr, gy: Ptr, rows: number,
  n: number, gx: Ptr, gw: Ptr | null): void {
  if (n === 0) return;
  const want = gw !== null;
  const nt = Math.max(1, rowThreads(rt, rows, n));
  const per = want ? align64(8 * n) : 0;
  const scratch = want ? rt.scratch(per) : 0;
  rt.run('rmsnorm_bwd', [x.ptr, p0(w), rstd.ptr, gy.ptr, gx.ptr, rows, n, want ? 1 : 0, scratch, per], nt);
  if (want) {
    rt.run('norm_params_reduce', [scratch, per, nt, n, p0(gw), 0], threadsFor(rt, n * nt, fusedTuning.minElemsPerThread));
  }
}

// ---------------------------------------------------------------- losses

function checkTargets(rt: KernelRunner, targets: Ptr, N: number, V: number, ignoreIndex: number): void {
  const t = rt.i32(targets.ptr, N);
  for (let i = 0; i < N; i++) {
    const v = t[i];
    if (v !== ignoreIndex && (v < 0 || v >= V)) {
      throw new RangeError(`crossEntropy: target ${v} at row ${i} is out of range [0, ${V})`);
    }
  }
}

export function crossEntropy(rt: KernelRunner, logits: Ptr, targets: Ptr, N: number, V: number,
  ignoreIndex: number, smoothing: number, losses: Ptr, lse: Ptr): void {
  if (N === 0) return;
  checkTargets(rt, targets, N, V, ignoreIndex);
  rt.run('cross_entropy_fwd', [logits.ptr, targets.ptr, N, V, ignoreIndex, smoothing, losses.ptr, lse.ptr],
    rowThreads(rt, N, V));
}

export function crossEntropyBackward(rt: KernelRunner, logits: Ptr, targets: Ptr, lse: Ptr, scale: Ptr,
  N: number, V: number, ignoreIndex: number, smoothing: number, gx: Ptr): void {
  if (N === 0) return;
  checkTargets(rt, targets, N, V, ignoreIndex);
  rt.run('cross_entropy_bwd', [logits.ptr, targets.ptr, lse.ptr, scale.ptr, N, V, ignoreIndex, smoothing, gx.ptr],
    rowThreads(rt, N, V));
}

// ---------------------------------------------------------------- element-wise

/** GELU (tanh approximation) of n contiguous elements. */
export function gelu(rt: KernelRunner, x: Ptr, out: Ptr, n: number): void {
  if (n === 0) return;
  rt.run('gelu_fwd', [x.ptr, out.ptr, n], threadsFor(rt, n, fusedTuning.minElemsPerThread));
}

/** gx = gy * gelu'(x) over n contiguous elements. */
export function geluBackward(rt: KernelRunner, x: Ptr, gy: Ptr, gx: Ptr, n: number): void {
  if (n === 0) return;
  rt.run('gelu_bwd', [x.ptr, gy.ptr, gx.ptr, n], threadsFor(rt, n, fusedTuning.minElemsPerThread));
}

export interface AdamWPtrArgs {
  param: Ptr; grad: Ptr; m: Ptr; v: Ptr; n: number;
  lr: number; beta1: number; beta2: number; eps: number; weightDecay: number;
  /** 1 - beta1^t and 1 - beta2^t. */
  bc1: number; bc2: number;
}

export function adamw(rt: KernelRunner, a: AdamWPtrArgs): void {
  if (a.n === 0) return;
  rt.run('adamw', [a.param.ptr, a.grad.ptr, a.m.ptr, a.v.ptr, a.n, a.lr, a.beta1, a.beta2, a.eps,
    a.weightDecay, a.bc1, a.bc2], threadsFor(rt, a.n, fusedTuning.minElemsPerThread));
}
