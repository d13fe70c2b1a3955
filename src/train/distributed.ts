// `attn train --parallel dp=N[,zero=1] | pp=N | tp=N` under mpirun: one process is one rank. This parses the
// spec, starts MPI through the native addon, checks the world size and returns the loop's
// ParallelStrategy; runRanked turns an error on one rank into a stop of every rank.
import { groupView, mpiBinding, type DpGroup, type MpiBinding } from './parallel/mpi.js';
import { DataParallel, type DataParallelOptions } from './parallel/data-parallel.js';
import { PipelineParallel } from './parallel/pipeline.js';
import { TensorParallel } from './parallel/tensor-parallel.js';
import { TrainingDivergedError, type ParallelStrategy } from './loop.js';

export interface ParallelSpec {
  dp: number;
  tp: number;
  pp: number;
  zero: 0 | 1;
  bucketMiB: number;
  overlap: boolean;
  /** tp: the split sums in one process's order (serial), for results bitwise one process's. */
  exact: boolean;
}

const KEYS = ['dp', 'tp', 'pp', 'zero', 'bucket_mb', 'overlap', 'exact'];

/** "dp=2,zero=1" → the spec; a bad key or value is an error naming it. */
export function parseParallel(spec: string): ParallelSpec {
  const out: ParallelSpec = { dp: 1, tp: 1, pp: 1, zero: 0, bucketMiB: 4, overlap: true, exact: false };
  for (const part of spec.split(',').map((s) => s.trim()).filter((s) => s)) {
    const m = /^([a-z_]+)=(.+)$/.exec(part);
    if (!m || !KEYS.includes(m[1]!)) throw new Error(`--parallel: '${part}' is not KEY=VALUE with KEY one of ${KEYS.join(', ')}`);
    const [, k, v] = m as unknown as [string, string, string];
    const num = Number(v);
    if (k === 'bucket_mb') {
      if (!(num > 0)) throw new Error(`--parallel: bucket_mb must be a positive number of MiB, got '${v}'`);
      out.bucketMiB = num;
    } else if (k === 'overlap') {
      if (v !== '0' && v !== '1') throw new Error(`--parallel: overlap must be 0 or 1, got '${v}'`);
      out.overlap = v === '1';
    } else if (k === 'exact') {
      if (v !== '0' && v !== '1') throw new Error(`--parallel: exact must be 0 or 1, got '${v}'`);
      out.exact = v === '1';
    } else if (k === 'zero') {
      if (v !== '0' && v !== '1') throw new Error(`--parallel: zero must be 0 or 1 (ZeRO stage 1), got '${v}'`);
      out.zero = v === '1' ? 1 : 0;
    } else {
      if (!Number.isInteger(num) || num < 1) throw new Error(`--parallel: ${k} must be a positive integer, got '${v}'`);
      out[k as 'dp' | 'tp' | 'pp'] = num;
    }
  }
  if (out.tp > 1 && (out.pp > 1 || out.zero)) throw new Error(`--parallel: tp=N runs alone or with dp=M for now (not with pp or zero)`);
  if (out.pp > 1 && out.zero) throw new Error(`--parallel: pp=N runs alone or with dp=M for now (not with zero)`);
  if (out.exact && out.tp === 1) throw new Error(`--parallel: exact=1 orders tensor parallelism's split sums, so it needs tp=N`);
  return out;
}

/** ATTN_FAULT=nan@RANK:STEP or throw@RANK:STEP (tests of the fault paths). */
function faultFromEnv(): DataParallelOptions['fault'] {
  const s = process.env['ATTN_FAULT'];
  if (!s) return undefined;
  const m = /^(nan|throw)@(\d+):(\d+)$/.exec(s);
  if (!m) throw new Error(`ATTN_FAULT=${s}: expected nan@RANK:STEP or throw@RANK:STEP`);
  return { kind: m[1] as 'nan' | 'throw', rank: Number(m[2]), step: Number(m[3]) };
}

export interface Distributed {
  mpi: MpiBinding;
  rank: number;
  size: number;
  strategy: ParallelStrategy;
  library: string;
}

/** Starts MPI and the strategy for `spec`; the world size must be dp·tp·pp. */
export function startDistributed(spec: ParallelSpec): Distributed {
  const b = mpiBinding();
  if (!b.mpi) throw new Error(`--parallel needs MPI: ${b.why}`);
  const { rank, size, library } = b.mpi.init();
  const want = spec.dp * spec.tp * spec.pp;
  if (size !== want) {
    b.mpi.finalize();
    const label = spec.pp > 1 ? `${spec.dp > 1 ? `dp=${spec.dp},` : ''}pp=${spec.pp}` : spec.tp > 1 ? `${spec.dp > 1 ? `dp=${spec.dp},` : ''}tp=${spec.tp}` : `dp=${spec.dp}`;
    throw new Error(`--parallel ${label}: the job has ${size} rank${size === 1 ? '' : 's'} but needs ${want} (launch with mpirun -np ${want})`);
  }
  const strategy = spec.pp > 1
    ? pipelineParallel(b.mpi, rank, spec)
    : spec.tp > 1
      ? tensorParallel(b.mpi, rank, spec)
      : new DataParallel(b.mpi, rank, size, { zero: spec.zero, bucketMiB: spec.bucketMiB, overlap: spec.overlap, fault: faultFromEnv() });
  return { mpi: b.mpi, rank, size, strategy, library };
}

/**
 * dp × (model-parallel groups of m): world rank w is rank w mod m of group ⌊w/m⌋ (a group is m
 * consecutive ranks, as Megatron-LM places them, so on a multi-core host it shares memory), and
 * the ranks holding the same part in every group form its data-parallel group.
 */
function modelParallelGroups(mpi: MpiBinding, rank: number, m: number, kind: string): { group: DpGroup; dp: DpGroup } {
  if (!mpi.split) throw new Error(`--parallel dp=N,${kind}=M needs MPI_Comm_split, which this native addon was built without: run npm run build:native`);
  const group = mpi.split(Math.floor(rank / m), rank);
  const dp = mpi.split(rank % m, rank);
  return { group: { mpi: groupView(mpi, group.comm), rank: group.rank, size: group.size }, dp: { mpi: groupView(mpi, dp.comm), rank: dp.rank, size: dp.size } };
}

/** pp alone, or dp × pp (pipelines of pp stages). */
function pipelineParallel(mpi: MpiBinding, rank: number, spec: ParallelSpec): PipelineParallel {
  if (spec.dp === 1) return new PipelineParallel(mpi, rank, spec.pp, { fault: faultFromEnv() });
  const { group, dp } = modelParallelGroups(mpi, rank, spec.pp, 'pp');
  return new PipelineParallel(group.mpi, group.rank, group.size, { writer: rank === 0, dp, fault: faultFromEnv() });
}

/** tp alone, or dp × tp (tp groups of tp ranks). */
function tensorParallel(mpi: MpiBinding, rank: number, spec: ParallelSpec): TensorParallel {
  if (spec.dp === 1) return new TensorParallel(mpi, rank, spec.tp, { fault: faultFromEnv(), exact: spec.exact });
  const { group, dp } = modelParallelGroups(mpi, rank, spec.tp, 'tp');
  return new TensorParallel(group.mpi, group.rank, group.size, { writer: rank === 0, dp, fault: faultFromEnv(), bucketMiB: spec.bucketMiB, overlap: spec.overlap, exact: spec.exact });
}

/**
 * Runs a rank's work. A TrainingDivergedError is the same on every rank (its stats are reduced
 * first), so each one stops by itself and rank 0 reports it; any other error is this rank's
 * alone and the others would wait for it in their next collective, so it is reported with the
 * rank and MPI_Abort ends the whole job (mpirun then names the rank too).
 */
export async function runRanked<T>(d: Distributed, work: () => Promise<T>, report: (text: string) => void): Promise<T> {
  try {
    const r = await work();
    d.mpi.finalize();
    return r;
  } catch (e) {
    if (e instanceof TrainingDivergedError) {
      d.mpi.finalize();
      throw e;
    }
    report(`rank ${d.rank} of ${d.size}: ${(e as Error).message}; stopping every rank`);
    d.mpi.abort(1);
    throw e;
  }
}
