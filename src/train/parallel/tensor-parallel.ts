// Tensor parallelism for the GPT language model (lm task), as Megatron-LM splits it (Shoeybi et
// al., 2019): within every block the attention heads are split across the t ranks (c_attn's q,
// k and v rows of a rank's heads: column-parallel; c_proj's matching input columns: row-
// parallel) and so is the MLP's hidden width (c_fc column-parallel, c_proj row-parallel). Each
// half of a block then needs one all-reduce forward (after the row-parallel matmul, the operator
// Megatron calls g) and one backward (of the gradient of its replicated input, operator f):
// two per block each way. The token embedding is vocabulary-parallel (rank r owns rows
// [v_r, v_{r+1}) of wte: a masked lookup, then an all-reduce) and so is the head with the
// cross-entropy: each rank computes its slice of the logits and only the row maxima, the sums of
// exponentials and the target logits are all-reduced, never the full logits. Norms, position
// embeddings and the biases of the row-parallel layers are replicated; their gradients come out
// the same on every rank, as every rank sees the whole residual stream and its whole gradient.
//
// Every rank trains on all of the update's micro-batches and holds only its shards of the split
// parameters (and the replicated ones): the model's whole tensors keep their shapes on storages
// of no elements. Its AdamW holds moments for what it holds. Evaluation runs the sharded forward (the task's model.forward(x, y)
// is this rank's lossOf). A checkpoint gathers the shards and their moments to tp rank 0
// (point-to-point), whose model holds the whole weights only while the checkpoint is written, so
// it is an ordinary attn checkpoint; resuming slices the full weights and moments into shards
// again, so a tp run resumes on one process or at another world size, and starts from any
// checkpoint.
//
// With dp × tp (`dp=N,tp=M`), o.dp is this rank's data-parallel group (the same shards in the
// other tp groups): its tp group trains on its share of the micro-batches and each rank averages
// its gradients with its dp peers before the norm, in buckets overlapped with the last
// micro-batch's backward as plain dp does (buckets.ts). Only the writer's tp group gathers for a
// checkpoint.
//
// The lm task builds the model deferred (defersWeights; src/nn/deferred.ts): its matrices have
// shapes and no floats, and attach() draws (or takes from the loaded checkpoint) only this rank's
// rows or columns of each, as a stream, so no rank ever holds a whole split matrix; the loop's
// AdamW allocates no moments (ownMoments). A model built whole (another path) is cut instead.
import { add, backward, contiguous, div, embedding, gelu, linear, matmul, matmulPrecision, mul, noGrad, permute, record, relu, reshape, scaledDotProductAttention, split, sum, swiglu, tensor, tidy, transpose, zeros, Tensor } from '../../tensor/index.js';
import type { Module } from '../../nn/module.js';
import { GPT, type Block, type GPTOutput } from '../../models/gpt.js';
import { MLP } from '../../nn/mlp.js';
import { scaleGrads, TrainingDivergedError, type LossSource, type ParallelStrategy, type StepOptions } from '../loop.js';
import { AdamW } from '../optim.js';
import { allFinite, dpShare, nonFiniteOrigin, type DpGroup, type Fault, type MpiBinding } from './mpi.js';
import { GradientBuckets } from './buckets.js';
import { isDeferred, materializeDeferred, readDeferred, settleDeferred } from '../../nn/deferred.js';

/** What the lm task's batches hold (src/tasks/lm.ts). */
export interface TokenBatch {
  x: ArrayLike<number>;
  y: ArrayLike<number>;
  batchSize: number;
  blockSize: number;
}

/** Which part of a full parameter a rank holds: the listed [lo, hi) ranges along `axis`, concatenated. */
export interface ShardSpec {
  axis: 0 | 1;
  ranges: [number, number][];
}

/** [lo, hi) of part r when n things are split into t nearly equal contiguous parts. */
export function partRange(n: number, t: number, r: number): [number, number] {
  return [Math.floor((r * n) / t), Math.floor(((r + 1) * n) / t)];
}

type Floats = Float32Array | Float64Array;
const floatsOf = (dtype: string, n: number): Floats => (dtype === 'float64' ? new Float64Array(n) : new Float32Array(n));

/** The shard of a row-major (rows, cols) or (rows,) array that `spec` names (float64 stays float64). */
export function extractShard(full: ArrayLike<number>, shape: readonly number[], spec: ShardSpec, dtype = 'float32'): Floats {
  const cols = shape[1] ?? 1;
  const rows = shape[0]!;
  const width = spec.ranges.reduce((a, [lo, hi]) => a + hi - lo, 0);
  if (spec.axis === 0) {
    const out = floatsOf(dtype, width * cols);
    let at = 0;
    for (const [lo, hi] of spec.ranges) {
      for (let i = lo * cols; i < hi * cols; i++) out[at++] = full[i]!;
    }
    return out;
  }
  const out = floatsOf(dtype, rows * width);
  let at = 0;
  for (let i = 0; i < rows; i++) {
    for (const [lo, hi] of spec.ranges) for (let j = lo; j < hi; j++) out[at++] = full[i * cols + j]!;
  }
  return out;
}

/** Writes a shard back into its place in the full array (the inverse of extractShard). */
export function placeShard(shard: ArrayLike<number>, full: Floats, shape: readonly number[], spec: ShardSpec): void {
  const cols = shape[1] ?? 1;
  const rows = shape[0]!;
  let at = 0;
  if (spec.axis === 0) {
    for (const [lo, hi] of spec.ranges) for (let i = lo * cols; i < hi * cols; i++) full[i] = shard[at++]!;
    return;
  }
  for (let i = 0; i < rows; i++) {
    for (const [lo, hi] of spec.ranges) for (let j = lo; j < hi; j++) full[i * cols + j] = shard[at++]!;
  }
}

function shardShape(shape: readonly number[], spec: ShardSpec): number[] {
  const width = spec.ranges.reduce((a, [lo, hi]) => a + hi - lo, 0);
  const s = [...shape];
  s[spec.axis] = width;
  return s;
}

/** One block's shards. */
interface BlockShards {
  qkvW: Tensor;
  qkvB: Tensor | null;
  attnProjW: Tensor;
  fcW: Tensor;
  fcB: Tensor | null;
  fc2W: Tensor | null;
  fc2B: Tensor | null;
  mlpProjW: Tensor;
}

/**
 * The floats a tp rank all-reduces in one update of m micro-batches of B × T tokens, width C, L
 * blocks: per block 2 forward (attention and MLP outputs) and 2 backward (the gradients of their
 * inputs), B·T·C each; the embedding's forward and the head input's backward, B·T·C each; the
 * cross-entropy's row maxima (B·T), then its sums of exponentials and target logits (2·B·T
 * float64s, that is 4·B·T float32s' bytes, one call).
 */
export function tpAllReduceFloats(L: number, B: number, T: number, C: number, m: number): number {
  return m * ((4 * L + 2) * B * T * C + 5 * B * T);
}

/**
 * The part of a deferred weight (src/nn/deferred.ts) that `spec` names, read from its value
 * stream chunk by chunk: the whole weight is never held (only the stream's chunk).
 */
export function drawShard(p: Tensor, spec: ShardSpec): Floats {
  const rows = p.shape[0]!;
  const cols = p.shape[1] ?? 1;
  const width = spec.ranges.reduce((a, [lo, hi]) => a + hi - lo, 0);
  const out = floatsOf(p.dtype, spec.axis === 0 ? width * cols : rows * width);
  // Where each range starts in a shard row (axis 1) or in the shard (axis 0).
  const bases: number[] = [];
  let w = 0;
  for (const [lo, hi] of spec.ranges) {
    bases.push(spec.axis === 0 ? w * cols : w);
    w += hi - lo;
  }
  const end = spec.axis === 0 ? Math.max(...spec.ranges.map(([, hi]) => hi)) * cols : rows * cols;
  readDeferred(p, (start, v) => {
    const stop = start + v.length;
    if (spec.axis === 0) {
      spec.ranges.forEach(([lo, hi], k) => {
        const a = Math.max(start, lo * cols);
        const b = Math.min(stop, hi * cols);
        for (let i = a; i < b; i++) out[bases[k]! + i - lo * cols] = v[i - start]!;
      });
      return;
    }
    for (let r = Math.floor(start / cols); r * cols < stop; r++) {
      spec.ranges.forEach(([lo, hi], k) => {
        const a = Math.max(start, r * cols + lo);
        const b = Math.min(stop, r * cols + hi);
        for (let i = a; i < b; i++) out[r * width + bases[k]! + i - r * cols - lo] = v[i - start]!;
      });
    }
  }, end);
  return out;
}

/**
 * A row-parallel layer's bias, added once to the summed output: y + b, one float32 rounding as
 * in one process's matmul epilogue, and its gradient summed over the rows of the (rows, N)
 * output gradient as one process's linear backward sums it (a broadcast add's backward would
 * reduce the (B, T, N) gradient in another order).
 */
function rowBias(y: Tensor, bias: Tensor): Tensor {
  const n = bias.size;
  const rows = y.size / n;
  const out = noGrad(() => add(y, bias));
  return record(out, 'tp_row_bias', [y, bias], (g) => [g, sum(reshape(g, [rows, n]), 0)]);
}

/** The process's resident-memory high-water mark so far, MiB (Node's maxRSS). */
function peakRssMiB(): number {
  return Math.round(process.resourceUsage().maxRSS / 102.4) / 10;
}

export class TensorParallel implements ParallelStrategy {
  readonly writer: boolean;
  /** The lm task builds the model deferred: attach() draws or loads only this rank's shards. */
  readonly defersWeights = true;
  /** This rank's AdamW holds the moments of its shards and the replicated parameters: the loop's allocates none. */
  readonly ownMoments = true;
  private gpt: GPT | null = null;
  /** Sharded parameter → its spec and the shard tensor this rank trains. */
  private shards = new Map<Tensor, { spec: ShardSpec; shard: Tensor }>();
  private shardTensors = new Set<Tensor>();
  private blocks: BlockShards[] = [];
  private wteShard: Tensor | null = null;
  private headShard: Tensor | null = null;
  private vocab: [number, number] = [0, 0];
  /** What this rank's AdamW updates, index for index with the loop's parameters. */
  private trained: Tensor[] = [];
  private opt: AdamW | null = null;
  private floats = 0;
  private calls = 0;
  /** Parameter floats: the whole model's, and what this rank holds (its shards and the replicated ones). */
  private paramFloats = { whole: 0, held: 0, peak: 0 };
  /** The writer's whole weights, given values for a checkpoint (released again after it). */
  private materialized = false;
  /** Index of the first all-reduce of the update this rank fed a non-finite value (-1: none). */
  private firstNonFinite = -1;
  /** ATTN_FAULT's NaN, pending for this rank's next embedding output. */
  private poison = false;
  private dpMs = 0;
  private dpBytes = 0;
  private buckets: GradientBuckets | null = null;
  private commMs = 0;
  private record: Record<string, unknown> = {};

  /**
   * mpi: the binding, or a groupView of this rank's tensor-parallel group; rank and size within
   * that group. o.dp: the data-parallel group (the ranks holding the same shards in the other tp
   * groups) for dp × tp; o.writer: whether this rank writes (default: tp rank 0).
   */
  constructor(private readonly mpi: MpiBinding, readonly rank: number, readonly size: number, private readonly o: { writer?: boolean; dp?: DpGroup; fault?: Fault; bucketMiB?: number; overlap?: boolean; exact?: boolean } = {}) {
    this.writer = o.writer ?? rank === 0;
    this.exact = (o.exact ?? false) && size > 1;
  }

  /** exact=1: the split sums in one process's order, rank after rank (rowParallel, columnLinear). */
  private readonly exact: boolean;

  /** This rank's world rank (tp groups are consecutive world ranks). */
  private worldRank(r = this.rank): number {
    return (this.o.dp?.rank ?? 0) * this.size + r;
  }

  /** Which part of each split parameter rank `rank` holds (the model is checked by attach). */
  private specsFor(model: GPT, rank: number): Map<Tensor, ShardSpec> {
    const t = this.size;
    const cfg = model.config;
    const H = cfg.n_head;
    const Hkv = cfg.n_kv_head ?? H;
    const C = cfg.n_embd;
    const D = C / H;
    const tr = model.transformer;
    const [h0, h1] = partRange(H, t, rank);
    const [k0, k1] = partRange(Hkv, t, rank);
    const vocab = partRange(cfg.vocab_size, t, rank);
    const specs = new Map<Tensor, ShardSpec>();
    const rows = (...ranges: [number, number][]): ShardSpec => ({ axis: 0, ranges });
    const cols = (...ranges: [number, number][]): ShardSpec => ({ axis: 1, ranges });
    specs.set(tr.wte.weight, rows(vocab));
    if (model.lm_head) specs.set(model.lm_head.weight, rows(vocab));
    for (const b of tr.h.items) {
      const a = b.attn;
      const mlp = b.mlp as MLP;
      const qkv = rows([h0 * D, h1 * D], [C + k0 * D, C + k1 * D], [C + Hkv * D + k0 * D, C + Hkv * D + k1 * D]);
      specs.set(a.c_attn.weight, qkv);
      if (a.c_attn.bias) specs.set(a.c_attn.bias, qkv);
      specs.set(a.c_proj.weight, cols([h0 * D, h1 * D]));
      const f = partRange(mlp.c_fc.outFeatures, t, rank);
      for (const lin of [mlp.c_fc, mlp.c_fc2]) {
        if (!lin) continue;
        specs.set(lin.weight, rows(f));
        if (lin.bias) specs.set(lin.bias, rows(f));
      }
      specs.set(mlp.c_proj.weight, cols(f));
    }
    return specs;
  }

  attach(model: Module, params: readonly Tensor[]): void {
    const t = this.size;
    if (!(model instanceof GPT)) throw new Error('--parallel tp=N splits the GPT language model (the lm task) only');
    const cfg = model.config;
    const kind = (cfg as unknown as Record<string, unknown>)['attention'];
    if (model.moeLayers().length || (kind !== undefined && kind !== 'dense') || model.checkpointActivations) {
      throw new Error(`--parallel tp=${t}: mixture-of-experts, attention other than dense, and activation checkpointing are not supported`);
    }
    const H = cfg.n_head;
    const Hkv = cfg.n_kv_head ?? H;
    if (H % t !== 0) throw new Error(`--parallel tp=${t}: n_head (${H}) must be a multiple of tp, so each rank gets whole heads`);
    if (Hkv % t !== 0) throw new Error(`--parallel tp=${t}: n_kv_head (${Hkv}) must be a multiple of tp`);
    if (cfg.vocab_size < t) throw new Error(`--parallel tp=${t}: the vocabulary (${cfg.vocab_size}) is smaller than tp`);
    const tr = model.transformer;
    for (const b of tr.h.items) {
      const a = b.attn;
      if (!(b.mlp instanceof MLP)) throw new Error(`--parallel tp=${t}: every block needs a dense MLP`);
      if (a.c_attn.quant || a.c_proj.quant || b.mlp.c_fc.quant || b.mlp.c_proj.quant) throw new Error(`--parallel tp=${t}: quantized weights do not train`);
      const hidden = b.mlp.c_fc.outFeatures;
      if (hidden % t !== 0) throw new Error(`--parallel tp=${t}: the MLP width (${hidden}) must be a multiple of tp`);
    }
    this.vocab = partRange(cfg.vocab_size, t, this.rank);
    const specs = this.specsFor(model, this.rank);
    // The loop's parameters are the trainable ones: a frozen sharded one would train here.
    const trainable = new Set(params);
    for (const p of specs.keys()) if (!trainable.has(p)) throw new Error(`--parallel tp=${t}: parameter ${p.name ?? '?'} is frozen; tp trains whole models only`);
    let whole = 0;
    for (const p of params) whole += p.size;
    // Parameter floats this rank holds as attach goes (the model's storages, then its shards):
    // their high-water mark is what building the model cost this rank.
    let now = 0;
    for (const p of params) now += p.storage.size;
    let peak = now;
    const grow = (n: number): void => {
      now += n;
      peak = Math.max(peak, now);
    };
    for (const [p, spec] of specs) {
      // A deferred weight (the lm task built the model deferred) is read as a stream and only
      // this rank's rows or columns are kept; a model built whole is cut (and released) instead.
      const deferred = isDeferred(p);
      const data = deferred ? drawShard(p, spec) : extractShard(p.data(), p.shape, spec, p.dtype);
      const shard = tensor(data, { shape: shardShape(p.shape, spec), backend: p.backend, dtype: p.dtype }).keep();
      grow(shard.size);
      shard.requiresGrad = true;
      shard.name = `${p.name ?? '?'} (tp shard ${this.rank} of ${t})`;
      this.shards.set(p, { spec, shard });
      this.shardTensors.add(shard);
      // The shard is what trains and what the forward reads: the whole tensor keeps its shape
      // and no memory, and gets its values back only while the writer saves a checkpoint.
      if (deferred) settleDeferred(p);
      else {
        grow(-p.storage.size);
        release(p);
      }
    }
    // The replicated parameters built deferred get their whole values.
    for (const p of model.parameters()) {
      if (!isDeferred(p)) continue;
      materializeDeferred(p);
      grow(p.size);
    }
    let held = 0;
    for (const p of params) held += this.shards.get(p)?.shard.size ?? p.size;
    this.paramFloats = { whole, held, peak };
    const sh = (p: Tensor | null | undefined): Tensor | null => (p ? this.shards.get(p)!.shard : null);
    this.wteShard = sh(tr.wte.weight);
    this.headShard = model.lm_head ? sh(model.lm_head.weight) : this.wteShard;
    this.blocks = tr.h.items.map((b) => {
      const mlp = b.mlp as MLP;
      return {
        qkvW: sh(b.attn.c_attn.weight)!, qkvB: sh(b.attn.c_attn.bias), attnProjW: sh(b.attn.c_proj.weight)!,
        fcW: sh(mlp.c_fc.weight)!, fcB: sh(mlp.c_fc.bias), fc2W: sh(mlp.c_fc2?.weight), fc2B: sh(mlp.c_fc2?.bias), mlpProjW: sh(mlp.c_proj.weight)!,
      };
    });
    this.trained = params.map((p) => this.shards.get(p)?.shard ?? p);
    this.gpt = model;
    // The task evaluates with model.forward(x, y): on this rank that is the sharded forward (a
    // collective, as every rank of the group evaluates the same batches). The whole logits exist
    // nowhere, so a forward without targets (sampling) is refused; sample from the checkpoint.
    const forward = (idx: Tensor, targets?: Tensor): GPTOutput => {
      if (!targets) throw new Error(`--parallel tp=${t}: rank ${this.rank} holds its slice of the vocabulary's logits only; generate from the checkpoint instead`);
      const [B, T] = idx.shape as [number, number];
      const loss = this.lossOf({ x: idx.data(), y: targets.data(), batchSize: B, blockSize: T });
      return { logits: loss, loss, ceLoss: loss };
    };
    (model as unknown as { forward: typeof forward }).forward = forward;
  }

  /** Every rank of a tp group takes the same micro-batches; with dp, its group's share. */
  share<B>(batches: readonly B[]): B[] {
    return dpShare(batches, this.o.dp, 'group');
  }


  /** dp × tp: this rank's gradients in buckets over its dp group (the same shards in every tp
   *  group), as plain dp does; overlapped with the last micro-batch's backward unless overlap=0
   *  (or the addon predates group iallreduce). */
  private dpBuckets(): { buckets: GradientBuckets; overlap: boolean } | null {
    const dp = this.o.dp;
    if (!dp) return null;
    this.buckets ??= new GradientBuckets(dp.mpi, dp.size, this.trained, this.o.bucketMiB ?? 4);
    return { buckets: this.buckets, overlap: (this.o.overlap ?? true) && dp.mpi.iallreduceComm === true };
  }

  /** dp × tp after the backward pass: the rest of the buckets, and the groups' mean loss. */
  private averageOverDp(loss: number, dp: { buckets: GradientBuckets; overlap: boolean }): number {
    const t0 = performance.now();
    if (dp.overlap) dp.buckets.finish();
    else dp.buckets.blocking();
    const l = new Float32Array([loss]);
    this.o.dp!.mpi.allreduce(l);
    this.dpMs = performance.now() - t0;
    this.dpBytes = 4 * (dp.buckets.floats + 1);
    return l[0]! * Math.fround(1 / this.o.dp!.size);
  }

  stepRecord(): Record<string, unknown> {
    const r = this.record;
    this.record = {};
    return r;
  }

  /** This rank's AdamW (over shards and replicated parameters); the loop's moments are freed. */
  private optimizer(opt: AdamW): AdamW {
    if (!this.opt) {
      this.opt = new AdamW(this.trained, { lr: opt.lr, betas: [opt.beta1, opt.beta2], eps: opt.eps, weightDecay: opt.weightDecay });
      opt.releaseMoments();
    }
    return this.opt;
  }

  // ------------------------------------------------------------ communication

  private allreduce(buf: Float32Array | Float64Array, op: 'sum' | 'max' = 'sum'): void {
    // The first of this update's all-reduces whose contribution from this rank was not finite.
    if (this.firstNonFinite < 0 && !allFinite(buf)) this.firstNonFinite = this.calls;
    const t0 = performance.now();
    this.mpi.allreduce(buf, op);
    this.commMs += performance.now() - t0;
    this.floats += buf.length * (buf instanceof Float64Array ? 2 : 1);
    this.calls++;
  }

  private allreduced(x: Tensor): Tensor {
    const d = x.dtype === 'float64' ? Float64Array.from(x.data()) : Float32Array.from(x.data());
    this.allreduce(d);
    return tensor(d, { shape: [...x.shape], backend: x.backend, dtype: x.dtype });
  }

  /** Megatron's f: the identity forward, the gradient all-reduced backward (a replicated input of a column-parallel layer). */
  private copyIn(x: Tensor): Tensor {
    const out = new Tensor(x.storage, x.shape, x.strides, x.offset);
    return record(out, 'tp_copy', [x], (g) => [this.allreduced(g)]);
  }

  /**
   * A row-parallel layer's output: each rank's partial sum over its part of the input width,
   * summed across ranks by g. With exact=1 (`--parallel tp=N,exact=1`; docs/distributed.md) the sum is made in one process's order instead: one process's kernel
   * runs one FMA chain per output element over the whole width in order, and the ranks' parts
   * are consecutive pieces of it, so rank r continues rank r−1's chain (the matmul with
   * accumulate on the partial it receives) and the last rank broadcasts the result, which is
   * then bitwise one process's; the ranks wait for each other, so the layer runs serially.
   */
  private rowParallel(x: Tensor, w: Tensor, bias: Tensor | null): Tensor {
    const partial = linear(x, w, null);
    const summed = this.exact ? this.chainedOut(x, w, partial) : this.reduceOut(partial);
    return bias ? rowBias(summed, bias) : summed;
  }

  /** rowParallel's sum with exact=1: rank after rank, continuing one FMA chain. */
  private chainedOut(x: Tensor, w: Tensor, partial: Tensor): Tensor {
    const [N, K] = w.shape as [number, number];
    const rows = x.size / K;
    const buf = floatsOf(partial.dtype, partial.size);
    const t0 = performance.now();
    if (this.rank === 0) buf.set(partial.data());
    else {
      this.mpi.wait(this.mpi.irecv(buf, this.rank - 1, TAG_CHAIN));
      const out = tensor(buf, { shape: [rows, N], backend: partial.backend, dtype: partial.dtype });
      noGrad(() => {
        const x2 = contiguous(reshape(x, [rows, K]));
        partial.backend.matmul({
          a: x2.storage, aOffset: x2.offset, aBatchStride: 0, transA: false, lda: K,
          b: w.storage, bOffset: w.offset, bBatchStride: 0, transB: true, ldb: K,
          out: out.storage, batch: 1, M: rows, N, K, bias: null, precision: matmulPrecision(), accumulate: true,
        });
      });
      buf.set(out.data());
      out.dispose();
    }
    if (this.firstNonFinite < 0 && !allFinite(buf)) this.firstNonFinite = this.calls;
    const sends = this.rank < this.size - 1 ? 1 : 0;
    if (sends) this.mpi.wait(this.mpi.isend(buf, this.rank + 1, TAG_CHAIN));
    this.mpi.bcast(buf, this.size - 1);
    this.commMs += performance.now() - t0;
    // comm_bytes with exact=1: the floats of the messages this rank sends and of the broadcast.
    this.floats += (sends + 1) * buf.length * (buf instanceof Float64Array ? 2 : 1);
    this.calls++;
    return record(tensor(buf, { shape: [...partial.shape], backend: partial.backend, dtype: partial.dtype }), 'tp_chain', [partial], (g) => [g]);
  }

  /** f on a column-parallel layer's replicated input; with exact=1 the layer's own op (columnLinear) sums the gradient instead. */
  private fIn(x: Tensor): Tensor {
    return this.exact ? x : this.copyIn(x);
  }

  /**
   * A column-parallel layer x·Wᵀ + b on this rank's rows of W. With exact=1 its input gradient
   * is summed in one process's order (rowParallel's, backward): one process
   * computes dx = dy·W as one FMA chain per element over all of W's rows in order; `parts` are
   * this rank's row ranges of its shard in that order (c_attn: its q, k and v rows, which sit
   * between the other ranks' in one process's W), and the running sum passes rank to rank
   * through the parts, each rank continuing the chain over its rows; the last broadcasts it.
   */
  private columnLinear(x: Tensor, w: Tensor, b: Tensor | null, parts: [number, number][]): Tensor {
    if (!this.exact) return linear(x, w, b);
    const [Ns, C] = w.shape as [number, number];
    const rows = x.size / C;
    const y = noGrad(() => linear(x, w, b));
    return record(y, 'tp_column_linear', b ? [x, w, b] : [x, w], (g) => {
      const g2 = contiguous(reshape(g, [rows, Ns]));
      const x2 = reshape(x, [rows, C]);
      const buf = floatsOf(g.dtype, rows * C);
      const t0 = performance.now();
      const t = this.size;
      let sends = 0;
      for (let p = 0; p < parts.length; p++) {
        for (let r = 0; r < t; r++) {
          if (this.rank !== r) continue;
          if (p > 0 || r > 0) this.mpi.wait(this.mpi.irecv(buf, r === 0 ? t - 1 : r - 1, TAG_CHAIN));
          const [lo, hi] = parts[p]!;
          if (hi > lo) {
            const acc = tensor(buf, { shape: [rows, C], backend: g.backend, dtype: g.dtype });
            g.backend.matmul({
              a: g2.storage, aOffset: g2.offset + lo, aBatchStride: 0, transA: false, lda: Ns,
              b: w.storage, bOffset: w.offset + lo * C, bBatchStride: 0, transB: false, ldb: C,
              out: acc.storage, batch: 1, M: rows, N: C, K: hi - lo, bias: null, precision: matmulPrecision(), accumulate: true,
            });
            buf.set(acc.data());
            acc.dispose();
          }
          if (p < parts.length - 1 || r < t - 1) {
            this.mpi.wait(this.mpi.isend(buf, r === t - 1 ? 0 : r + 1, TAG_CHAIN));
            sends++;
          }
        }
      }
      this.mpi.bcast(buf, t - 1);
      this.commMs += performance.now() - t0;
      this.floats += (sends + 1) * buf.length * (buf instanceof Float64Array ? 2 : 1);
      this.calls++;
      return [
        reshape(tensor(buf, { shape: [rows, C], backend: g.backend, dtype: g.dtype }), x.shape),
        matmul(transpose(g2), x2),
        b ? sum(g2, 0) : null,
      ];
    });
  }

  /** Megatron's g: partial sums all-reduced forward, the gradient passed through backward. */
  private reduceOut(x: Tensor): Tensor {
    return record(this.allreduced(x), 'tp_reduce', [x], (g) => [g]);
  }

  // ------------------------------------------------------------ the sharded forward

  private attention(b: Block, s: BlockShards, x: Tensor): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const a = b.attn;
    const D = a.headDim;
    const Hl = a.nHead / this.size;
    const Hkvl = a.nKvHead / this.size;
    // (B, T, (Hl + 2·Hkvl)·D): this rank's heads; its q, k and v rows, in one process's row order
    const qkv = this.columnLinear(x, s.qkvW, s.qkvB, [[0, Hl * D], [Hl * D, (Hl + Hkvl) * D], [(Hl + Hkvl) * D, (Hl + 2 * Hkvl) * D]]);
    const heads = (u: Tensor, h: number): Tensor => permute(reshape(u, [B, T, h, D]), [0, 2, 1, 3]);
    const [q0, k0, v0] = split(qkv, [Hl * D, Hkvl * D, Hkvl * D], -1);
    let q = heads(q0!, Hl);
    let k = heads(k0!, Hkvl);
    const v = heads(v0!, Hkvl);
    if (a.rope) {
      q = a.rope.apply(q, 0);
      k = a.rope.apply(k, 0);
    }
    const y = scaledDotProductAttention(q, k, v, { causal: true, sparsity: a.sparsity });
    const merged = reshape(permute(y, [0, 2, 1, 3]), [B, T, Hl * D]);
    const out = this.rowParallel(merged, s.attnProjW, a.c_proj.bias); // row-parallel: partial sums over heads
    return a.resid_dropout.forward(out);
  }

  private mlp(b: Block, s: BlockShards, x: Tensor): Tensor {
    const m = b.mlp as MLP;
    let h: Tensor;
    const col = (w: Tensor, bias: Tensor | null): Tensor => this.columnLinear(x, w, bias, [[0, w.shape[0]!]]);
    switch (m.activation) {
      case 'gelu': h = this.exact ? gelu(col(s.fcW, s.fcB), 'tanh') : linear(x, s.fcW, s.fcB, 'gelu'); break;
      case 'gelu_exact': h = gelu(col(s.fcW, s.fcB), 'none'); break;
      case 'relu': h = this.exact ? relu(col(s.fcW, s.fcB)) : linear(x, s.fcW, s.fcB, 'relu'); break;
      case 'swiglu': h = swiglu(col(s.fcW, s.fcB), col(s.fc2W!, s.fc2B)); break;
    }
    return m.dropout.forward(this.rowParallel(h, s.mlpProjW, m.c_proj.bias));
  }

  private block(b: Block, s: BlockShards, x: Tensor): Tensor {
    if (b.cfg.norm_placement === 'pre') {
      x = add(x, this.attention(b, s, this.fIn(b.ln_1.forward(x))));
      return add(x, this.mlp(b, s, this.fIn(b.ln_2.forward(x))));
    }
    x = b.ln_1.forward(add(x, this.attention(b, s, this.fIn(x))));
    return b.ln_2.forward(add(x, this.mlp(b, s, this.fIn(x))));
  }

  /** The mean cross-entropy of one micro-batch, computed from this rank's slice of the vocabulary
   *  (a collective: every rank calls it with the same batch). */
  lossOf(batch: TokenBatch): Tensor {
    const gpt = this.gpt;
    if (!gpt) throw new Error('TensorParallel: attach() was not called');
    const tr = gpt.transformer;
    const be = tr.wte.weight.backend;
    const dtype = tr.wte.weight.dtype;
    const B = batch.batchSize;
    const T = batch.blockSize;
    const N = B * T;
    const [v0, v1] = this.vocab;
    const Vr = v1 - v0;
    // Vocabulary-parallel embedding: rows this rank does not own contribute zeros.
    const local = new Int32Array(N);
    const own = new Float32Array(N);
    for (let i = 0; i < N; i++) {
      const id = batch.x[i]!;
      if (id >= v0 && id < v1) {
        local[i] = id - v0;
        own[i] = 1;
      }
    }
    let x = mul(embedding(this.wteShard!, tensor(local, { shape: [B, T], dtype: 'int32', backend: be })), tensor(own, { shape: [B, T, 1], backend: be, dtype }));
    if (this.poison) {
      this.poison = false;
      x = mul(x, NaN);
    }
    x = this.reduceOut(x);
    if (tr.wpe) x = add(x, tr.wpe.positions(T, 0));
    else if (tr.pe) x = add(x, tr.pe.positions(T, 0));
    x = tr.drop.forward(x);
    tr.h.items.forEach((b, l) => {
      x = this.block(b, this.blocks[l]!, x);
    });
    if (tr.ln_f) x = tr.ln_f.forward(x);
    const logits = reshape(this.columnLinear(this.fIn(x), this.headShard!, null, [[0, Vr]]), [N, Vr]); // this rank's columns of the logits
    return this.crossEntropy(logits, batch, B, T);
  }

  /**
   * Vocabulary-parallel cross-entropy with the single-process kernel's rounding. The row maxima
   * are all-reduced (max is exact); each rank's exponentials exp(x − max) come from the backend's
   * own cross-entropy backward kernel (the same exp approximation as the fused crossEntropy of one
   * process), summed in float64 and all-reduced in float64 together with the target logit (0 on
   * the ranks that do not own it), so log Σ, lse = max + log Σ and lse − x[t] are rounded as the
   * kernel rounds them; the gradient is that kernel's softmax − onehot on this rank's columns.
   */
  private crossEntropy(logits: Tensor, batch: TokenBatch, B: number, T: number): Tensor {
    const be = logits.backend;
    const dtype = logits.dtype;
    const rnd = dtype === 'float64' ? (v: number): number => v : Math.fround;
    const [N, Vr] = logits.shape as [number, number];
    const [v0, v1] = this.vocab;
    const W = Vr + 1; // a spare column: the target index of rows whose target another rank owns
    const ld = logits.data();
    const rowMax = floatsOf(dtype, N);
    const padded = floatsOf(dtype, N * W);
    for (let i = 0; i < N; i++) {
      let mx = -Infinity;
      for (let j = 0; j < Vr; j++) {
        const v = ld[i * Vr + j]!;
        padded[i * W + j] = v;
        if (v > mx) mx = v;
      }
      rowMax[i] = mx;
    }
    this.allreduce(rowMax, 'max');
    for (let i = 0; i < N; i++) padded[i * W + Vr] = rowMax[i]!;
    const spare = new Int32Array(N).fill(Vr);
    const localTarget = new Int32Array(N);
    let count = 0;
    const both = new Float64Array(2 * N); // Σ exp(x − max), then the target logit
    for (let i = 0; i < N; i++) {
      const y = batch.y[i]!;
      if (y === -100) localTarget[i] = -100;
      else {
        count++;
        localTarget[i] = y >= v0 && y < v1 ? y - v0 : Vr;
        if (y >= v0 && y < v1) both[N + i] = ld[i * Vr + y - v0]!;
      }
    }
    const xs = tensor(padded, { shape: [N, W], backend: be, dtype });
    const soft = (lse: Floats, scale: Floats, targets: Int32Array): Floats => {
      const out = zeros([N, W], { backend: be, dtype });
      const lt = tensor(lse, { shape: [N], backend: be, dtype });
      const st = tensor(scale, { shape: [N], backend: be, dtype });
      const tt = tensor(targets, { shape: [N], backend: be, dtype: 'int32' });
      be.crossEntropyBackward(xs.storage, tt.storage, lt.storage, st.storage, N, W, -100, 0, out.storage);
      const d = out.data() as Floats;
      for (const t of [out, lt, st, tt]) t.dispose();
      return d;
    };
    // scale 1, lse = the row max, target the spare column: the kernel writes exp(x − max) itself.
    const e = soft(rowMax, floatsOf(dtype, N).fill(1), spare);
    for (let i = 0; i < N; i++) {
      let s = 0;
      for (let j = 0; j < Vr; j++) s += e[i * W + j]!;
      both[i] = s;
    }
    this.allreduce(both);
    const lse = floatsOf(dtype, N);
    const rows = floatsOf(dtype, N);
    for (let i = 0; i < N; i++) {
      lse[i] = rnd(rowMax[i]! + rnd(Math.log(both[i]!)));
      rows[i] = localTarget[i] === -100 ? 0 : rnd(lse[i]! - both[N + i]!);
    }
    const out = noGrad(() => div(sum(tensor(rows, { shape: [B, T], backend: be, dtype })), Math.max(count, 1)));
    return record(out, 'tp_cross_entropy', [logits], (g) => {
      const scale = floatsOf(dtype, N).fill(rnd(g.item() / Math.max(count, 1)));
      const gx = soft(lse, scale, localTarget);
      const mine = floatsOf(dtype, N * Vr);
      for (let i = 0; i < N; i++) mine.set(gx.subarray(i * W, i * W + Vr), i * Vr);
      xs.dispose();
      return [tensor(mine, { shape: [N, Vr], backend: be, dtype })];
    });
  }

  // ------------------------------------------------------------ the update

  update<B>(src: LossSource<B>, params: readonly Tensor[], opt: AdamW, batches: readonly B[], o: StepOptions): { values: number[]; gradNorm: number } {
    if (!this.gpt) throw new Error('TensorParallel: attach() was not called');
    if ((o.transforms?.length ?? 0) > 0) throw new Error('--parallel tp=N does not apply gradient transforms');
    void params;
    const step = o.step ?? -1;
    const mine = this.optimizer(opt);
    const m = batches.length;
    const fault = this.o.fault && this.o.fault.rank === this.worldRank() && this.o.fault.step === step ? this.o.fault.kind : null;
    if (fault === 'throw') throw new Error(`injected fault (ATTN_FAULT) at step ${step}`);
    this.poison = fault === 'nan';
    this.floats = 0;
    this.calls = 0;
    this.firstNonFinite = -1;
    this.commMs = 0;
    const t0 = performance.now();
    opt.zeroGrad();
    mine.zeroGrad();
    try {
      let lossSum = Math.fround(0);
      const dp = this.dpBuckets();
      let backwardMs = 0;
      batches.forEach((b, i) => {
        tidy(() => {
          const l = this.lossOf(b as unknown as TokenBatch);
          lossSum = Math.fround(lossSum + Math.fround(l.item() / m));
          // The last backward completes the gradients: its buckets go out as they fill.
          const last = dp?.overlap === true && i === m - 1;
          if (last) dp.buckets.begin();
          const tb = performance.now();
          try {
            backward(m > 1 ? div(l, m) : l);
          } finally {
            if (last) dp.buckets.end();
          }
          if (i === m - 1) backwardMs = performance.now() - tb;
        });
      });
      // Every rank of a tp group computed the same loss (its parts were all-reduced).
      if (dp) lossSum = this.averageOverDp(lossSum, dp);
      const values = [lossSum, ...(src.parts ?? []).map(() => lossSum)];
      if (!Number.isFinite(lossSum)) {
        // Every rank of the group sees it (the loss was all-reduced): which one fed it in first.
        const from = nonFiniteOrigin(this.mpi, this.rank, this.size, this.firstNonFinite, (r) => this.worldRank(r), this.o.dp);
        throw new TrainingDivergedError(step, from.length ? `the training loss (the first non-finite partial sums came from rank ${from.join(', ')})` : 'the training loss', lossSum);
      }
      const norm = this.globalNorm();
      if (!Number.isFinite(norm)) throw new TrainingDivergedError(step, 'the gradient norm', norm);
      const maxNorm = o.gradClip ?? 0;
      if (maxNorm > 0 && norm > maxNorm) scaleGrads(this.trained, maxNorm / (norm + 1e-6));
      mine.lr = o.lr ?? opt.lr;
      mine.step = opt.step;
      mine.stepUpdate();
      opt.step = mine.step;
      opt.lr = mine.lr;
      this.record = { tp_step_ms: round(performance.now() - t0), comm_ms: round(this.commMs), comm_bytes: 4 * this.floats, tp_allreduces: this.calls, tp_param_floats: this.paramFloats.held, tp_param_peak_floats: this.paramFloats.peak, rss_peak_mib: peakRssMiB(), ...(dp ? { dp_comm_ms: round(this.dpMs), dp_comm_bytes: this.dpBytes, dp_overlap: dp.overlap ? 1 : 0, last_backward_ms: round(backwardMs) } : {}) };
      return { values, gradNorm: norm };
    } finally {
      mine.zeroGrad();
      opt.zeroGrad();
    }
  }

  /**
   * The global gradient norm rounded as one process rounds it (update.ts: each parameter's
   * Σ g² by the sum kernel, which squares in float32 and adds in float64, then those sums added
   * in float32 in the parameters' order): each shard's float64 partial sums are all-reduced in
   * one float64 buffer (one entry per split parameter) and rounded once per parameter, so the
   * whole parameter's sum is rounded as the kernel rounds it, not as two rounded halves.
   */
  private globalNorm(): number {
    const f = this.trained[0]?.dtype === 'float64' ? (v: number): number => v : Math.fround;
    const sumSq = (p: Tensor): number => {
      if (!p.grad) return 0;
      const g = p.grad.data();
      let s = 0;
      for (let i = 0; i < g.length; i++) s += f(g[i]! * g[i]!);
      return s;
    };
    const split = this.trained.filter((p) => !this.isReplicated(p));
    const partial = new Float64Array(split.map(sumSq));
    this.allreduce(partial);
    const whole = new Map(split.map((p, i) => [p, partial[i]!]));
    let acc = 0;
    for (const p of this.trained) acc = f(acc + f(whole.get(p) ?? sumSq(p)));
    return Math.sqrt(acc);
  }

  private isReplicated(p: Tensor): boolean {
    return !this.shardTensors.has(p);
  }

  // ------------------------------------------------------------ whole weights and moments

  /** Whether this rank's tp group holds the writer (with dp × tp, group 0): only it gathers. */
  private gathers(): boolean {
    return !this.o.dp || this.o.dp.rank === 0;
  }

  /**
   * Every rank's shard of each split parameter to tp rank 0 (point-to-point, so no other rank
   * holds a whole tensor): `pick(p, shard)` is what a rank sends of parameter p (its weights or a
   * moment). Rank 0 gets the whole tensors, the others null; a collective of the writer's group.
   */
  private gatherToRoot(pick: (p: Tensor, i: number) => ArrayLike<number>, tagBase: number): Map<Tensor, Floats> | null {
    const parts = [...this.shards.entries()];
    if (this.rank !== 0) {
      const sent: number[] = [];
      const bufs: Floats[] = [];
      parts.forEach(([p], i) => {
        const data = pick(p, i);
        const b = floatsOf(p.dtype, data.length);
        b.set(data);
        bufs.push(b); // untouched until its send completes
        sent.push(this.mpi.isend(b, 0, tagBase + i));
      });
      for (const id of sent) this.mpi.wait(id);
      return null;
    }
    const specsOf = Array.from({ length: this.size }, (_, r) => (r === 0 ? null : this.specsFor(this.gpt!, r)));
    const out = new Map<Tensor, Floats>();
    parts.forEach(([p, { spec }], i) => {
      const whole = floatsOf(p.dtype, p.size);
      placeShard(pick(p, i), whole, p.shape, spec);
      for (let r = 1; r < this.size; r++) {
        const sp = specsOf[r]!.get(p)!;
        const n = shardShape(p.shape, sp).reduce((a, b) => a * b, 1);
        const buf = floatsOf(p.dtype, n);
        this.mpi.wait(this.mpi.irecv(buf, r, tagBase + i));
        placeShard(buf, whole, p.shape, sp);
      }
      out.set(p, whole);
    });
    return out;
  }

  /** The sharded forward evaluates: nothing to gather. */
  beforeEvaluate(): void {}

  /** The writer's model gets its whole weights, gathered from the shards, to save them. */
  beforeSave(): void {
    if (!this.gathers()) return;
    const whole = this.gatherToRoot((p) => this.shards.get(p)!.shard.data(), TAG_WEIGHTS);
    if (!whole || !this.writer) return;
    for (const [p, data] of whole) p.setStorage(p.backend.upload(data, p.dtype));
    this.materialized = true;
  }

  afterSave(): void {
    if (!this.materialized) return;
    for (const p of this.shards.keys()) release(p);
    this.materialized = false;
  }

  optimizerState(opt: AdamW): { m: Float32Array; v: Float32Array }[] {
    const st = this.optimizer(opt).stateTensors();
    const index = new Map(opt.stateTensors().map((s, i) => [s.param, i]));
    const moment = (k: 'm' | 'v') => (p: Tensor): ArrayLike<number> => st[index.get(p)!]![k].data();
    const ms = this.gathers() ? this.gatherToRoot(moment('m'), TAG_M) : null;
    const vs = this.gathers() ? this.gatherToRoot(moment('v'), TAG_V) : null;
    // Only the writer saves them: the other ranks return nothing (the loop discards theirs).
    return opt.stateTensors().map((full, i) => {
      if (!this.writer) return { m: new Float32Array(0), v: new Float32Array(0) };
      const s = st[i]!;
      if (!this.shards.has(full.param)) return { m: Float32Array.from(s.m.data()), v: Float32Array.from(s.v.data()) };
      return { m: Float32Array.from(ms!.get(full.param)!), v: Float32Array.from(vs!.get(full.param)!) };
    });
  }

  loadOptimizerState(opt: AdamW, state: { m: ArrayLike<number>; v: ArrayLike<number> }[]): void {
    const st = this.optimizer(opt).stateTensors();
    opt.stateTensors().forEach((full, i) => {
      const s = st[i]!;
      const sh = this.shards.get(full.param);
      const take = (a: ArrayLike<number>): ArrayLike<number> => (sh ? extractShard(a, full.param.shape, sh.spec, s.m.dtype) : a);
      s.m.backend.write(s.m.storage, take(state[i]!.m), 0);
      s.v.backend.write(s.v.storage, take(state[i]!.v), 0);
    });
  }
}

/** Message tags of the gathers to rank 0 (plus the parameter's index). */
const TAG_WEIGHTS = 1000;
const TAG_M = 2000;
const TAG_V = 3000;
const TAG_CHAIN = 4000;

/** A whole parameter's memory given back: it keeps its shape on a storage of no elements. */
function release(p: Tensor): void {
  p.setStorage(p.backend.alloc(p.dtype, 0));
}

const round = (x: number): number => Math.round(x * 1000) / 1000;
