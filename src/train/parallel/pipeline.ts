// Pipeline parallelism for the GPT language model (lm task): the blocks are split into S
// contiguous stages, one per rank; stage 0 also holds the embeddings, the last stage the final
// norm, the head and the loss. Every rank draws the same micro-batches (the whole update's); the
// micro-batches flow through the stages in the 1F1B order (Narayanan et al., 2021, PipeDream-
// Flush): stage s runs S−s−1 forwards, then alternates one forward and one backward, then drains
// the backwards. Activations go forward and their gradients back with MPI_Isend / MPI_Irecv.
//
// A tied embedding (wte used by the head) lives on the first and the last stage; its two
// gradients are summed across ranks before the update (Megatron-LM does the same). Each rank
// updates only the parameters of its stage; before an evaluation or a checkpoint every
// parameter (and, for a checkpoint, its AdamW moments) is broadcast from the rank that owns it,
// so evaluation and the checkpoint are those of the whole model.
//
// Not yet: activation memory is released at the end of the update, not after each
// micro-batch's backward (the schedule and the bubble are 1F1B's, the memory is not).
import { add, backward, crossEntropy, div, mul, tensor, tidy, type Tensor } from '../../tensor/index.js';
import type { Module } from '../../nn/module.js';
import { GPT } from '../../models/gpt.js';
import { gradNorm, scaleGrads, TrainingDivergedError, type LossSource, type ParallelStrategy, type StepOptions } from '../loop.js';
import type { AdamW } from '../optim.js';
import { allFinite, averageOverDpGroup, dpShare, nonFiniteOrigin, type DpGroup, type Fault, type MpiBinding } from './mpi.js';

/** What the lm task's batches hold (src/tasks/lm.ts). */
interface TokenBatch {
  x: ArrayLike<number>;
  y: ArrayLike<number>;
  batchSize: number;
  blockSize: number;
}

export class PipelineParallel implements ParallelStrategy {
  readonly writer: boolean;
  private gpt: GPT | null = null;
  private first = 0;
  private last = 0;
  /** Rank that owns each parameter (its stage); the tied embedding: stage 0. */
  private owner = new Map<Tensor, number>();
  private tied: Tensor | null = null;
  private record: Record<string, unknown> = {};
  private dpBytes = 0;

  /**
   * mpi: the binding, or a groupView of this rank's pipeline; rank and size within it. o.dp: the
   * data-parallel group (the same stage in the other pipelines) for dp × pp; o.writer: whether
   * this rank writes (default: stage 0).
   */
  constructor(private readonly mpi: MpiBinding, readonly rank: number, readonly size: number, private readonly o: { writer?: boolean; dp?: DpGroup; fault?: Fault } = {}) {
    this.writer = o.writer ?? rank === 0;
  }

  /** A stage's world rank (pipelines are consecutive world ranks). */
  private worldRank(r = this.rank): number {
    return (this.o.dp?.rank ?? 0) * this.size + r;
  }

  attach(model: Module, params: readonly Tensor[]): void {
    if (!(model instanceof GPT)) throw new Error('--parallel pp=N splits the GPT language model (the lm task) only');
    const cfg = model.config as unknown as Record<string, unknown>;
    if (model.moeLayers().length || cfg['attention'] === 'performer' || model.checkpointActivations) {
      throw new Error('--parallel pp=N: mixture-of-experts, performer attention and activation checkpointing are not supported');
    }
    if (cfg['norm_placement'] !== undefined && cfg['norm_placement'] !== 'pre') throw new Error('--parallel pp=N needs pre-norm blocks');
    const L = model.transformer.h.items.length;
    if (L < this.size) throw new Error(`--parallel pp=${this.size}: the model has ${L} layers, fewer than the stages`);
    // Stage s: layers [⌊sL/S⌋, ⌊(s+1)L/S⌋).
    const lo = (s: number): number => Math.floor((s * L) / this.size);
    this.first = lo(this.rank);
    this.last = lo(this.rank + 1);
    const t = model.transformer;
    const mark = (m: Module | null, stage: number): void => {
      for (const p of m?.parameters() ?? []) if (!this.owner.has(p)) this.owner.set(p, stage);
    };
    mark(t.wte, 0);
    mark(t.wpe as Module | null, 0);
    t.h.items.forEach((b, i) => {
      let s = 0;
      while (s + 1 < this.size && i >= lo(s + 1)) s++;
      mark(b, s);
    });
    mark(t.ln_f as Module | null, this.size - 1);
    mark(model.lm_head, this.size - 1);
    this.tied = model.lm_head ? null : t.wte.weight;
    for (const p of params) if (!this.owner.has(p)) throw new Error(`--parallel pp: parameter ${p.name ?? '?'} has no stage`);
    this.gpt = model;
  }

  /** Every stage of a pipeline takes the same micro-batches; with dp, its pipeline's share. */
  share<B>(batches: readonly B[]): B[] {
    return dpShare(batches, this.o.dp, 'pipeline');
  }


  stepRecord(): Record<string, unknown> {
    const r = this.record;
    this.record = {};
    return r;
  }

  private owns(p: Tensor): boolean {
    return this.owner.get(p) === this.rank || (p === this.tied && this.rank === this.size - 1);
  }

  update<B>(src: LossSource<B>, params: readonly Tensor[], opt: AdamW, batches: readonly B[], o: StepOptions): { values: number[]; gradNorm: number } {
    const gpt = this.gpt;
    if (!gpt) throw new Error('PipelineParallel: attach() was not called');
    if ((o.transforms?.length ?? 0) > 0) throw new Error('--parallel pp=N does not apply gradient transforms');
    void src;
    const step = o.step ?? -1;
    const S = this.size;
    const s = this.rank;
    const m = batches.length;
    const isFirst = s === 0;
    const isLast = s === S - 1;
    const t = gpt.transformer;
    const be = t.wte.weight.backend;
    opt.zeroGrad();
    let wait = 0;
    const t0 = performance.now();
    const fault = this.o.fault && this.o.fault.rank === this.worldRank() && this.o.fault.step === step ? this.o.fault.kind : null;
    if (fault === 'throw') throw new Error(`injected fault (ATTN_FAULT) at step ${step}`);
    // The first micro-batch whose output (activations sent on, or the loss) went non-finite
    // while its input was finite: where a NaN started (-1: not on this stage).
    let firstNonFinite = -1;
    const waitFor = (id: number): void => {
      const w = performance.now();
      this.mpi.wait(id);
      wait += performance.now() - w;
    };
    try {
      let lossSum = Math.fround(0);
      let sent = 0;
      const sends: number[] = [];
      tidy(() => {
        // Per micro-batch: this stage's input (a leaf on later stages) and output.
        const inputs: (Tensor | null)[] = [];
        const outputs: Tensor[] = [];
        const forward = (i: number): void => {
          const b = batches[i] as unknown as TokenBatch;
          const B = b.batchSize;
          const T = b.blockSize;
          const C = t.wte.weight.shape[1]!;
          let x: Tensor;
          let inputFinite = true;
          if (isFirst) {
            const idx = tensor(b.x, { shape: [B, T], dtype: 'int32', backend: be });
            x = t.wte.forward(idx);
            if (t.wpe) x = add(x, t.wpe.positions(T, 0));
            else if (t.pe) x = add(x, t.pe.positions(T, 0));
            x = t.drop.forward(x);
            inputs.push(null);
          } else {
            const buf = new Float32Array(B * T * C);
            waitFor(this.mpi.irecv(buf, s - 1, 2 * i));
            inputFinite = allFinite(buf);
            x = tensor(buf, { shape: [B, T, C], backend: be });
            x.requiresGrad = true; // a leaf: its gradient goes back to the previous stage
            inputs.push(x);
          }
          for (let l = this.first; l < this.last; l++) x = t.h.items[l]!.forward(x);
          if (fault === 'nan' && i === 0) x = mul(x, NaN);
          if (isLast) {
            if (t.ln_f) x = t.ln_f.forward(x);
            const logits = gpt.lm_head ? gpt.lm_head.forward(x) : t.wte.project(x);
            const y = tensor(b.y, { shape: [B, T], dtype: 'int32', backend: be });
            x = crossEntropy(logits, y, { ignoreIndex: -100 });
            if (firstNonFinite < 0 && inputFinite && !Number.isFinite(x.item())) firstNonFinite = i;
          } else {
            const out = Float32Array.from(x.data());
            if (firstNonFinite < 0 && inputFinite && !allFinite(out)) firstNonFinite = i;
            sent += out.byteLength;
            sends.push(this.mpi.isend(out, s + 1, 2 * i));
          }
          outputs.push(x);
        };
        const backwardOf = (i: number): void => {
          const out = outputs[i]!;
          if (isLast) {
            lossSum = Math.fround(lossSum + Math.fround(out.item() / m));
            backward(m > 1 ? div(out, m) : out);
          } else {
            const g = new Float32Array(out.size);
            waitFor(this.mpi.irecv(g, s + 1, 2 * i + 1));
            backward(out, tensor(g, { shape: [...out.shape], backend: be }));
          }
          const inp = inputs[i];
          if (inp) {
            const g = Float32Array.from(inp.grad!.data());
            sent += g.byteLength;
            sends.push(this.mpi.isend(g, s - 1, 2 * i + 1));
            inp.grad!.dispose();
            inp.grad = null;
          }
        };
        const warm = Math.min(S - s - 1, m);
        for (let i = 0; i < warm; i++) forward(i);
        for (let i = warm; i < m; i++) {
          forward(i);
          backwardOf(i - warm);
        }
        for (let i = m - warm; i < m; i++) backwardOf(i);
        for (const id of sends) waitFor(id);
      });
      // The loss (and its parts: ce_loss is the loss for a dense GPT) from the last stage.
      const vals = new Float32Array([lossSum]);
      this.mpi.bcast(vals, S - 1);
      if (this.o.dp) vals[0] = this.averageOverDp(params, vals[0]!);
      const values = [vals[0]!, vals[0]!];
      if (!Number.isFinite(values[0]!)) {
        // Every stage sees it (the last stage broadcast it): which stage's output went bad first.
        const from = nonFiniteOrigin(this.mpi, s, S, firstNonFinite, (r) => this.worldRank(r), this.o.dp);
        throw new TrainingDivergedError(step, from.length ? `the training loss (the first non-finite activations came from rank ${from.join(', ')})` : 'the training loss', values[0]!);
      }
      // The tied embedding's two gradients (embedding on stage 0, head on the last) summed.
      if (this.tied) {
        const g = this.tied.grad ? Float32Array.from(this.tied.grad.data()) : new Float32Array(this.tied.size);
        if (s !== 0 && s !== S - 1) g.fill(0);
        this.mpi.allreduce(g);
        if (isFirst || isLast) this.setGrad(this.tied, g);
      }
      const mine = params.filter((p) => this.owns(p));
      for (const p of params) {
        if (!this.owns(p) && p.grad) {
          p.grad.dispose();
          p.grad = null;
        }
      }
      // Global norm: each parameter counted once (the tied one on stage 0).
      const local = gradNorm(mine.filter((p) => !(p === this.tied && !isFirst)));
      const sq = new Float64Array([local * local]);
      this.mpi.allreduce(sq);
      const norm = Math.sqrt(sq[0]!);
      if (!Number.isFinite(norm)) throw new TrainingDivergedError(step, 'the gradient norm', norm);
      const maxNorm = o.gradClip ?? 0;
      if (maxNorm > 0 && norm > maxNorm) scaleGrads(mine, maxNorm / (norm + 1e-6));
      if (o.lr !== undefined) opt.lr = o.lr;
      opt.stepUpdate(); // parameters without a gradient (other stages') are left alone
      const total = performance.now() - t0;
      this.record = { pp_step_ms: round(total), pp_wait_ms: round(wait), comm_bytes: sent, bubble_measured: round(wait / total), bubble_1f1b: round((S - 1) / (m + S - 1)), ...(this.o.dp ? { dp_comm_bytes: this.dpBytes } : {}) };
      return { values, gradNorm: norm };
    } finally {
      opt.zeroGrad();
    }
  }

  /** dp × pp: the pipelines' losses and this stage's gradients (each the mean over its share)
   *  averaged with the same stage of the other pipelines, in one buffer. Before the tied
   *  embedding's sum, so both of its stages average their own part. */
  private averageOverDp(params: readonly Tensor[], loss: number): number {
    const r = averageOverDpGroup(this.o.dp!, params.filter((p) => this.owns(p)), loss);
    this.dpBytes = r.bytes;
    return r.loss;
  }


  private setGrad(p: Tensor, g: Float32Array): void {
    if (p.grad) p.grad.backend.write(p.grad.storage, g, p.grad.offset);
    else p.grad = tensor(g, { shape: [...p.shape], backend: p.backend }).keep();
  }

  /** Every parameter from the rank that owns it (before an evaluation or a checkpoint). */
  beforeEvaluate(): void {
    for (const [p, owner] of this.owner) {
      const d = Float32Array.from(p.data());
      this.mpi.bcast(d, owner);
      if (owner !== this.rank) p.backend.write(p.storage, d, p.offset);
    }
  }

  optimizerState(opt: AdamW): { m: Float32Array; v: Float32Array }[] {
    this.beforeEvaluate();
    return opt.stateTensors().map((st) => {
      const owner = this.owner.get(st.param)!;
      const m = Float32Array.from(st.m.data());
      const v = Float32Array.from(st.v.data());
      this.mpi.bcast(m, owner);
      this.mpi.bcast(v, owner);
      return { m, v };
    });
  }
}

const round = (x: number): number => Math.round(x * 1000) / 1000;
