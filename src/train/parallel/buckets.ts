// Gradient buckets all-reduced across a data-parallel group, each started with MPI_Iallreduce as
// soon as autograd reports its last gradient complete (setLeafGradientHook), or all of them
// blocking after the backward pass. Plain data parallel (data-parallel.ts) and the dp part of
// dp × tp (tensor-parallel.ts) share it.
import { setLeafGradientHook, Tensor } from '../../tensor/index.js';
import type { MpiBinding } from './mpi.js';

interface Bucket {
  params: Tensor[];
  offsets: number[];
  size: number;
  ready: number;
  buf: Float32Array | null;
  req: number;
  done: boolean;
}

export class GradientBuckets {
  private readonly buckets: Bucket[] = [];
  private readonly bucketOf = new Map<Tensor, Bucket>();
  /** Floats in all buckets (every parameter once). */
  readonly floats: number;

  /** mpi: the binding or a group view (its iallreduce runs within the group); size: the group's ranks. */
  constructor(private readonly mpi: MpiBinding, private readonly size: number, params: readonly Tensor[], bucketMiB: number) {
    const cap = Math.max(1, Math.floor((bucketMiB * 2 ** 20) / 4));
    let cur: Bucket | null = null;
    let floats = 0;
    // Reverse order: the backward pass finishes the last layers' gradients first.
    for (let i = params.length - 1; i >= 0; i--) {
      const p = params[i]!;
      if (!cur || (cur.size > 0 && cur.size + p.size > cap)) {
        cur = { params: [], offsets: [], size: 0, ready: 0, buf: null, req: 0, done: false };
        this.buckets.push(cur);
      }
      cur.params.push(p);
      cur.offsets.push(cur.size);
      cur.size += p.size;
      floats += p.size;
      this.bucketOf.set(p, cur);
    }
    this.floats = floats;
  }

  /** Before the backward pass whose gradients are complete ones: start buckets as they fill. */
  begin(): void {
    for (const b of this.buckets) {
      b.ready = 0;
      b.buf = null;
      b.req = 0;
      b.done = false;
    }
    setLeafGradientHook((t) => this.onLeaf(t));
  }

  /** After that backward pass (also when it threw). */
  end(): void {
    setLeafGradientHook(null);
  }

  /** A parameter's gradient is complete: start its bucket once the bucket is full, and progress the others. */
  private onLeaf(t: Tensor): void {
    const b = this.bucketOf.get(t);
    if (b && ++b.ready === b.params.length) this.start(b);
    this.progress();
  }

  private start(b: Bucket): void {
    const buf = new Float32Array(b.size);
    b.params.forEach((p, j) => {
      if (p.grad) buf.set(p.grad.data() as Float32Array, b.offsets[j]!);
    });
    b.buf = buf;
    b.req = this.mpi.iallreduce(buf);
  }

  /** MPI moves non-blocking collectives forward only inside MPI calls: test the ones in flight. */
  private progress(): void {
    for (const b of this.buckets) if (b.req && !b.done) b.done = this.mpi.test(b.req);
  }

  /** Waits for the buckets in flight (starting any not started: a parameter without a gradient
   *  this update counts as zeros) and writes the group's mean gradients back. */
  finish(): void {
    for (const b of this.buckets) if (!b.buf) this.start(b);
    for (const b of this.buckets) {
      if (!b.done) this.mpi.wait(b.req);
      b.done = true;
      this.writeBack(b);
    }
  }

  /** No overlap: each bucket all-reduced after the backward pass, one at a time (MPI_Allreduce,
   *  so it also runs on an addon whose iallreduce has no group form). */
  blocking(): void {
    for (const b of this.buckets) {
      const buf = new Float32Array(b.size);
      b.params.forEach((p, j) => {
        if (p.grad) buf.set(p.grad.data() as Float32Array, b.offsets[j]!);
      });
      b.buf = buf;
      this.mpi.allreduce(buf);
      b.done = true;
      this.writeBack(b);
    }
  }

  /** Summed gradients / group size into each parameter's .grad. */
  private writeBack(b: Bucket): void {
    const buf = b.buf!;
    const inv = Math.fround(1 / this.size);
    for (let i = 0; i < buf.length; i++) buf[i] = buf[i]! * inv;
    b.params.forEach((p, j) => {
      const g = buf.subarray(b.offsets[j]!, b.offsets[j]! + p.size);
      if (!p.grad) {
        p.grad = new Tensor(p.backend.upload(g, 'float32'), p.shape).keep();
        return;
      }
      p.grad.backend.write(p.grad.storage, g, p.grad.offset);
    });
  }
}
