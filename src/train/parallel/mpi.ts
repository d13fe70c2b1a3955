// MPI through the native addon (native/mpi.cc): what a distributed run calls, and why it is
// missing when it is (no addon, or an addon built where mpicc was not found).
import { readFileSync } from 'node:fs';
import { nativeAddon } from '../../backend/cpu/platform-node.js';
import { tensor, type Tensor } from '../../tensor/index.js';

/** Buffers MPI reduces and moves: float32, float64, int32, or bfloat16 bits in a Uint16Array. */
export type MpiBuffer = Float32Array | Float64Array | Int32Array | Uint16Array;
export type MpiOp = 'sum' | 'max' | 'min';

/** The addon's `mpi` object (native/mpi.cc). Every call runs on the JavaScript thread. */
export interface MpiBinding {
  init(): { rank: number; size: number; library: string; host: string };
  finalize(): void;
  initialized(): boolean;
  /** Ends every rank of the job (mpirun names the rank that called it). */
  abort(code: number): void;
  wtime(): number;
  /** comm: an id from split() (absent: every rank). */
  allreduce(buf: MpiBuffer, op?: MpiOp, comm?: number): void;
  /** Starts an in-place all-reduce; test/wait take the id it returns. comm: as allreduce's, where
   *  iallreduceComm says the addon takes it (older ones ran every iallreduce over the world). */
  iallreduce(buf: MpiBuffer, op?: MpiOp, comm?: number): number;
  iallreduceComm?: boolean;
  /** True once the request is complete; each call also drives MPI's progress engine. */
  test(id: number): boolean;
  wait(id: number): void;
  reduceScatter(send: MpiBuffer, recv: MpiBuffer, op?: MpiOp): void;
  allgather(send: MpiBuffer, recv: MpiBuffer): void;
  send(buf: MpiBuffer, dest: number, tag?: number): void;
  recv(buf: MpiBuffer, source: number, tag?: number): void;
  /** Non-blocking point-to-point; test/wait take the id (the buffer must stay untouched until then). */
  isend(buf: MpiBuffer, dest: number, tag?: number, comm?: number): number;
  irecv(buf: MpiBuffer, source: number, tag?: number, comm?: number): number;
  bcast(buf: MpiBuffer, root?: number, comm?: number): void;
  barrier(): void;
  /** MPI_Comm_split of the world (every rank calls it): the ranks of one color form a group,
   *  ordered by key; comm is its id for allreduce. Absent in addons built before it. */
  split?(color: number, key: number): { comm: number; rank: number; size: number };
}

/**
 * A view of the binding whose allreduce, iallreduce, bcast, isend and irecv run within one group from split()
 * (the ranks of one tensor-parallel or pipeline group, or of one data-parallel group; ranks are
 * the group's); the calls the binding has no group form of throw rather than mix the groups up.
 */
/** A data-parallel group of model-parallel groups (dp × tp, dp × pp): this group's index and count. */
export interface DpGroup { mpi: MpiBinding; rank: number; size: number }

/** The micro-batches of an update that a group trains on: all of them without dp, else group
 *  `dp.rank`'s equal share of the global batch (`what` names the group in the error). */
export function dpShare<B>(batches: readonly B[], dp: DpGroup | undefined, what: string): B[] {
  if (!dp) return [...batches];
  if (batches.length % dp.size !== 0) {
    throw new Error(`--parallel dp=${dp.size}: gradient_accumulation_steps (${batches.length}) must be a multiple of dp, so each ${what} trains on an equal share of the global batch`);
  }
  const k = batches.length / dp.size;
  return batches.slice(dp.rank * k, dp.rank * k + k);
}

/**
 * The loss and the gradients of `params` (each the mean over this group's share) averaged over
 * the data-parallel group in one all-reduce of one buffer; gradients absent count as zero and
 * are created. Returns the mean loss and the bytes all-reduced.
 */
export function averageOverDpGroup(dp: DpGroup, params: readonly Tensor[], loss: number): { loss: number; bytes: number } {
  let n = 1;
  for (const p of params) n += p.size;
  const buf = new Float32Array(n);
  buf[0] = loss;
  let at = 1;
  for (const p of params) {
    if (p.grad) buf.set(p.grad.data() as Float32Array, at);
    at += p.size;
  }
  dp.mpi.allreduce(buf);
  const inv = Math.fround(1 / dp.size);
  for (let i = 0; i < n; i++) buf[i] = buf[i]! * inv;
  at = 1;
  for (const p of params) {
    const g = buf.subarray(at, at + p.size);
    if (p.grad) p.grad.backend.write(p.grad.storage, g, p.grad.offset);
    else p.grad = tensor(g, { shape: [...p.shape], backend: p.backend, dtype: p.dtype }).keep();
    at += p.size;
  }
  return { loss: buf[0]!, bytes: 4 * n };
}

/** Test-only fault injection (ATTN_FAULT=nan@RANK:STEP or throw@RANK:STEP): world rank and update. */
export interface Fault { kind: 'nan' | 'throw'; rank: number; step: number }

/**
 * After a non-finite loss that every rank of a model-parallel group sees (it was all-reduced or
 * broadcast): the world ranks whose own contribution went non-finite first (`mine`: this rank's
 * index of its first non-finite output in the update, -1 if none; a NaN spreads to every rank at
 * the next exchange, so the origin has the smallest index). A collective of the group, and with
 * `dp` (dp × tp, dp × pp: the loss was averaged over the groups, so every rank of the world is
 * here) of its data-parallel group too: the groups' tables are merged, so a NaN raised in another
 * group is named as well. Empty when no rank reported one (e.g. a non-finite batch).
 */
export function nonFiniteOrigin(mpi: MpiBinding, rank: number, size: number, mine: number, worldRank: (r: number) => number, dp?: DpGroup): number[] {
  const NONE = 1e15;
  const at = new Float64Array(size).fill(NONE);
  at[rank] = mine >= 0 ? mine : NONE;
  mpi.allreduce(at, 'min');
  let table = at;
  let toWorld = worldRank;
  if (dp && dp.size > 1) {
    // Group g's rank r is world rank g·size + r (groups are consecutive world ranks): each group
    // writes its row of the world's table and a min over the dp group merges them.
    table = new Float64Array(dp.size * size).fill(NONE);
    table.set(at, dp.rank * size);
    dp.mpi.allreduce(table, 'min');
    toWorld = (i) => i;
  }
  const first = Math.min(...table);
  if (first === NONE) return [];
  return [...table.keys()].filter((r) => table[r] === first).map(toWorld);
}

/** Whether every element is finite (the scan is cheap next to the copy that made the buffer). */
export function allFinite(buf: ArrayLike<number>): boolean {
  for (let i = 0; i < buf.length; i++) if (!Number.isFinite(buf[i]!)) return false;
  return true;
}

export function groupView(mpi: MpiBinding, comm: number): MpiBinding {
  const no = (what: string) => (): never => {
    throw new Error(`MPI group view: ${what} runs over every rank, not within the group`);
  };
  return {
    init: () => mpi.init(), finalize: () => mpi.finalize(), initialized: () => mpi.initialized(), abort: (code) => mpi.abort(code), wtime: () => mpi.wtime(),
    allreduce: (buf, op) => mpi.allreduce(buf, op ?? 'sum', comm),
    bcast: (buf, root) => mpi.bcast(buf, root ?? 0, comm),
    isend: (buf, dest, tag) => mpi.isend(buf, dest, tag ?? 0, comm),
    irecv: (buf, source, tag) => mpi.irecv(buf, source, tag ?? 0, comm),
    test: (id) => mpi.test(id), wait: (id) => mpi.wait(id),
    iallreduce: mpi.iallreduceComm ? (buf, op) => mpi.iallreduce(buf, op ?? 'sum', comm) : no('iallreduce (this native addon predates its group form: run npm run build:native)'),
    iallreduceComm: mpi.iallreduceComm, reduceScatter: no('reduceScatter'), allgather: no('allgather'), send: no('send'), recv: no('recv'), barrier: no('barrier'),
  };
}

/** The MPI binding, or why there is none (for `attn info` and the --parallel error). */
export function mpiBinding(): { mpi: MpiBinding; why?: undefined } | { mpi: null; why: string } {
  const a = nativeAddon();
  if (!a.kernels) return { mpi: null, why: `the native addon is not loaded: ${a.why}` };
  const mpi = (a.kernels as unknown as { mpi?: MpiBinding }).mpi;
  if (mpi) return { mpi };
  let why = 'the native addon was built without it';
  try {
    const line = readFileSync(new URL('../../../../build/native-build.log', import.meta.url), 'utf8').split('\n').find((l) => l.startsWith('mpi: '));
    if (line) why += ` (${line.slice(5)})`;
  } catch {
    // no build log
  }
  return { mpi: null, why: `${why}; install Open MPI (openmpi-bin, libopenmpi-dev) and run npm run build:native` };
}

/** One line for `attn info`. */
export function describeMpi(): string {
  const b = mpiBinding();
  if (!b.mpi) return `MPI: not available (${b.why})`;
  const launched = process.env['OMPI_COMM_WORLD_SIZE'] ?? process.env['PMI_SIZE'];
  return `MPI: available in the native addon${launched ? ` (launched with ${launched} ranks)` : ' (run under mpirun for --parallel)'}`;
}
