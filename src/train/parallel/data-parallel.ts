// Data parallelism over MPI ranks. Every rank holds the whole model and draws the same
// micro-batches; rank r trains on its contiguous share of them, so the ranks together see the
// single-process run's global batch. Gradients are summed across ranks and divided by the
// world size (each rank's loss is already the mean over its share), which gives the
// single-process mean gradient up to float rounding.
//
// Plain data parallel (zero=0): gradients are all-reduced in buckets (parameters in reverse
// order, as the backward pass completes them), each bucket started with MPI_Iallreduce as soon
// as autograd reports its last gradient complete (setLeafGradientHook) during the update's last
// micro-batch, so the exchange overlaps the rest of the backward pass; every rank then makes the
// same AdamW update.
//
// ZeRO stage 1 (zero=1; Rajbhandari et al., 2020): the flat gradient is reduce-scattered, rank r
// keeps the AdamW moments of its 1/N slice only and updates that slice of the weights (with the
// backend's own AdamW kernel, per parameter segment), then the slices are all-gathered into every
// rank's weights. A checkpoint gathers the moments so it is an ordinary attn checkpoint.
import { mul, Tensor } from '../../tensor/index.js';
import type { Storage } from '../../backend/backend.js';
import { accumulateOnDevice, clipAndStep, gradNorm, TrainingDivergedError, type LossSource, type ParallelStrategy, type StepOptions } from '../loop.js';
import type { AdamW } from '../optim.js';
import type { MpiBinding } from './mpi.js';
import { GradientBuckets } from './buckets.js';

export interface DataParallelOptions {
  /** ZeRO stage: 0 (replicated optimizer state) or 1 (sharded). */
  zero: 0 | 1;
  /** Gradient bucket size in MiB (zero=0). */
  bucketMiB: number;
  /** Overlap buckets with the backward pass (zero=0); false: one blocking all-reduce per bucket after it. */
  overlap: boolean;
  /** Test-only fault injection: 'nan' or 'throw' on this rank at this update. */
  fault?: { kind: 'nan' | 'throw'; rank: number; step: number };
}

/** One parameter's part in this rank's ZeRO-1 slice, with its moments on the backend. */
interface Segment {
  index: number;
  /** Offsets in the parameter and in the slice. */
  from: number;
  at: number;
  n: number;
  decay: boolean;
  param: Storage;
  grad: Storage;
  m: Storage;
  v: Storage;
}

export class DataParallel implements ParallelStrategy {
  readonly writer: boolean;
  /** ZeRO-1 keeps its slice's moments itself: the loop's AdamW allocates none (it only named them). */
  get ownMoments(): boolean {
    return this.o.zero === 1;
  }
  private buckets: GradientBuckets | null = null;
  private segments: Segment[] | null = null;
  private offsets: number[] = [];
  private total = 0;
  private shard = 0;
  private record: Record<string, unknown> = {};

  constructor(private readonly mpi: MpiBinding, readonly rank: number, readonly size: number, private readonly o: DataParallelOptions) {
    this.writer = rank === 0;
  }

  share<B>(batches: readonly B[]): B[] {
    if (batches.length % this.size !== 0) {
      throw new Error(`--parallel dp=${this.size}: gradient_accumulation_steps (${batches.length}) must be a multiple of dp, so each rank trains on an equal share of the global batch`);
    }
    const k = batches.length / this.size;
    return batches.slice(this.rank * k, this.rank * k + k);
  }

  stepRecord(): Record<string, unknown> {
    const r = this.record;
    this.record = {};
    return r;
  }

  update<B>(src: LossSource<B>, params: readonly Tensor[], opt: AdamW, batches: readonly B[], o: StepOptions): { values: number[]; gradNorm: number } {
    const step = o.step ?? -1;
    const fault = this.o.fault && this.o.fault.rank === this.rank && this.o.fault.step === step ? this.o.fault.kind : null;
    if (fault === 'throw') throw new Error(`injected fault (ATTN_FAULT) at step ${step}`);
    if (this.o.zero === 1 && (o.transforms?.length ?? 0) > 0) throw new Error('--parallel zero=1 does not apply gradient transforms; use zero=0');
    opt.zeroGrad();
    try {
      const overlap = this.o.zero === 0 && this.o.overlap;
      if (overlap) this.prepareBuckets(params);
      const buckets = this.buckets;
      let calls = 0;
      const t0 = performance.now();
      let tBackward = 0;
      const local: LossSource<B> = {
        parts: src.parts,
        afterMicroBatch: src.afterMicroBatch,
        loss: (b) => {
          const r = src.loss(b);
          if (++calls === batches.length && buckets) {
            buckets.begin();
            tBackward = performance.now();
          }
          return fault === 'nan' ? { ...r, loss: mul(r.loss, NaN) } : r;
        },
      };
      let sums: Tensor;
      try {
        sums = accumulateOnDevice(local, batches);
      } finally {
        buckets?.end();
      }
      const tEnd = performance.now();
      const localValues = Float32Array.from(sums.data());
      sums.dispose();
      // Every rank's values, so a non-finite one is named by its rank on all of them.
      const n = localValues.length;
      const all = new Float32Array(n * this.size);
      this.mpi.allgather(localValues, all);
      const values: number[] = [];
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let r = 0; r < this.size; r++) acc += all[r * n + j]!;
        values.push(acc / this.size);
      }
      for (let r = 0; r < this.size; r++) {
        if (!Number.isFinite(all[r * n]!)) throw new TrainingDivergedError(step, `the training loss on rank ${r}`, all[r * n]!);
      }
      if (this.o.zero === 1) return { values, gradNorm: this.zeroStep(params, opt, o) };
      // The allgather above waited for the slowest rank's backward (skew_ms, the ranks' load
      // imbalance); the gradient exchange still to be done after it is what overlap did not hide.
      const tWait = performance.now();
      if (buckets) buckets.finish();
      else {
        this.prepareBuckets(params);
        this.buckets!.blocking();
      }
      const tDone = performance.now();
      this.record = {
        compute_ms: round(tEnd - t0), backward_overlapped_ms: overlap ? round(tEnd - tBackward) : 0, skew_ms: round(tWait - tEnd), comm_exposed_ms: round(tDone - tWait),
        comm_bytes: 4 * this.totalOf(params),
      };
      for (const t of o.transforms ?? []) t(params, { step });
      const norm = gradNorm(params);
      clipAndStep(params, opt, norm, step, o);
      return { values, gradNorm: norm };
    } finally {
      opt.zeroGrad();
    }
  }

  private totalOf(params: readonly Tensor[]): number {
    let n = 0;
    for (const p of params) n += p.size;
    return n;
  }

  // ------------------------------------------------------------ plain data parallel

  private prepareBuckets(params: readonly Tensor[]): void {
    this.buckets ??= new GradientBuckets(this.mpi, this.size, params, this.o.bucketMiB);
  }

  // ------------------------------------------------------------ ZeRO-1

  /** This rank's slice [rank·shard, (rank+1)·shard) of the flat parameters, split by parameter. */
  private prepareSegments(params: readonly Tensor[], opt: AdamW): void {
    if (this.segments) return;
    this.offsets = [];
    let total = 0;
    for (const p of params) {
      this.offsets.push(total);
      total += p.size;
    }
    this.total = total;
    this.shard = Math.ceil(total / this.size);
    const lo = this.rank * this.shard;
    const hi = Math.min(total, lo + this.shard);
    const segs: Segment[] = [];
    params.forEach((p, i) => {
      const a = Math.max(lo, this.offsets[i]!);
      const b = Math.min(hi, this.offsets[i]! + p.size);
      if (a >= b) return;
      const n = b - a;
      const be = p.backend;
      segs.push({
        index: i, from: a - this.offsets[i]!, at: a - lo, n, decay: p.ndim >= 2,
        param: be.alloc('float32', n), grad: be.alloc('float32', n), m: be.alloc('float32', n), v: be.alloc('float32', n),
      });
    });
    for (const s of segs) {
      const z = new Float32Array(s.n);
      params[0]!.backend.write(s.m, z, 0);
      params[0]!.backend.write(s.v, z, 0);
    }
    this.segments = segs;
    // The full-size moments are not needed any more: this rank keeps its slice's.
    opt.releaseMoments();
  }

  private zeroStep(params: readonly Tensor[], opt: AdamW, o: StepOptions): number {
    this.prepareSegments(params, opt);
    const N = this.size;
    const flat = new Float32Array(this.shard * N);
    params.forEach((p, i) => {
      if (p.grad) flat.set(p.grad.data() as Float32Array, this.offsets[i]!);
    });
    const t0 = performance.now();
    const g = new Float32Array(this.shard);
    this.mpi.reduceScatter(flat, g);
    const inv = Math.fround(1 / N);
    let local = 0;
    for (let i = 0; i < g.length; i++) {
      const x = Math.fround(g[i]! * inv);
      g[i] = x;
      local += x * x;
    }
    const sq = new Float64Array([local]);
    this.mpi.allreduce(sq);
    const tComm1 = performance.now() - t0;
    const norm = Math.sqrt(sq[0]!);
    if (!Number.isFinite(norm)) throw new TrainingDivergedError(o.step ?? -1, 'the gradient norm', norm);
    const maxNorm = o.gradClip ?? 0;
    if (maxNorm > 0 && norm > maxNorm) {
      const f = Math.fround(maxNorm / (norm + 1e-6));
      for (let i = 0; i < g.length; i++) g[i] = g[i]! * f;
    }
    if (o.lr !== undefined) opt.lr = o.lr;
    opt.step++;
    const bc1 = 1 - Math.pow(opt.beta1, opt.step);
    const bc2 = 1 - Math.pow(opt.beta2, opt.step);
    const mine = new Float32Array(this.shard);
    for (const s of this.segments!) {
      const p = params[s.index]!;
      const be = p.backend;
      const pd = p.data() as Float32Array;
      be.write(s.param, pd.subarray(s.from, s.from + s.n), 0);
      be.write(s.grad, g.subarray(s.at, s.at + s.n), 0);
      be.adamw({ param: s.param, grad: s.grad, m: s.m, v: s.v, n: s.n, lr: opt.lr, beta1: opt.beta1, beta2: opt.beta2, eps: opt.eps, weightDecay: s.decay ? opt.weightDecay : 0, bc1, bc2 });
      mine.set(be.read(s.param) as Float32Array, s.at);
    }
    const t1 = performance.now();
    const full = new Float32Array(this.shard * N);
    this.mpi.allgather(mine, full);
    const tComm2 = performance.now() - t1;
    params.forEach((p, i) => p.backend.write(p.storage, full.subarray(this.offsets[i]!, this.offsets[i]! + p.size), p.offset));
    this.record = { comm_exposed_ms: round(tComm1 + tComm2), comm_bytes: 4 * 2 * this.shard * N };
    return norm;
  }

  optimizerState(opt: AdamW): { m: Float32Array; v: Float32Array }[] {
    const st = opt.stateTensors();
    if (this.o.zero === 0) return st.map((s) => ({ m: Float32Array.from(s.m.data()), v: Float32Array.from(s.v.data()) }));
    this.prepareSegments(st.map((s) => s.param), opt);
    const gather = (which: 'm' | 'v'): Float32Array => {
      const mine = new Float32Array(this.shard);
      for (const s of this.segments!) mine.set(st[s.index]!.param.backend.read(s[which]) as Float32Array, s.at);
      const full = new Float32Array(this.shard * this.size);
      this.mpi.allgather(mine, full);
      return full;
    };
    const m = gather('m');
    const v = gather('v');
    return st.map((s, i) => ({ m: m.slice(this.offsets[i]!, this.offsets[i]! + s.param.size), v: v.slice(this.offsets[i]!, this.offsets[i]! + s.param.size) }));
  }

  loadOptimizerState(opt: AdamW, state: { m: ArrayLike<number>; v: ArrayLike<number> }[]): void {
    const st = opt.stateTensors();
    if (this.o.zero === 0) {
      st.forEach((s, i) => {
        s.m.backend.write(s.m.storage, state[i]!.m, 0);
        s.v.backend.write(s.v.storage, state[i]!.v, 0);
      });
      return;
    }
    this.prepareSegments(st.map((s) => s.param), opt);
    for (const s of this.segments!) {
      const be = st[s.index]!.param.backend;
      be.write(s.m, Float32Array.from(state[s.index]!.m as ArrayLike<number>).subarray(s.from, s.from + s.n), 0);
      be.write(s.v, Float32Array.from(state[s.index]!.v as ArrayLike<number>).subarray(s.from, s.from + s.n), 0);
    }
  }
}

const round = (ms: number): number => Math.round(ms * 1000) / 1000;
