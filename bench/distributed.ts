// The α–β (latency–bandwidth) model of this machine's MPI, measured: run under mpirun with 2 or
// more ranks (docs/distributed.md). Ranks 0 and 1 ping-pong messages of 4 B to 16 MiB
// (one-way time t(n) = α + n·β, fitted by least squares), then every rank times MPI_Allreduce
// of float32 buffers against the ring model 2(p−1)·α + 2(p−1)/p · n·β. Prints JSON lines.
//   mpirun --oversubscribe --allow-run-as-root -np 2 node dist/bench/distributed.js
import { mpiBinding } from '../src/train/parallel/mpi.js';

const b = mpiBinding();
if (!b.mpi) throw new Error(`no MPI: ${b.why}`);
const mpi = b.mpi;
const { rank, size, host } = mpi.init();
if (size < 2) throw new Error('run under mpirun with at least 2 ranks');

const sizes = [1, 16, 256, 4096, 65536, 262144, 1048576, 4194304]; // float32 elements
const reps = (n: number): number => (n <= 4096 ? 200 : n <= 262144 ? 30 : 6);

// Ping-pong between ranks 0 and 1: the median round trip / 2.
const pingpong: { bytes: number; us: number }[] = [];
for (const n of sizes) {
  const buf = new Float32Array(n);
  const times: number[] = [];
  mpi.barrier();
  for (let r = 0; r < reps(n) + 2; r++) {
    const t0 = mpi.wtime();
    if (rank === 0) {
      mpi.send(buf, 1, 7);
      mpi.recv(buf, 1, 7);
    } else if (rank === 1) {
      mpi.recv(buf, 0, 7);
      mpi.send(buf, 0, 7);
    }
    if (r >= 2) times.push((mpi.wtime() - t0) / 2);
  }
  times.sort((x, y) => x - y);
  pingpong.push({ bytes: 4 * n, us: times[times.length >> 1]! * 1e6 });
}

// Least squares t = α + bytes·β.
function fit(points: { x: number; y: number }[]): { a: number; b: number } {
  const n = points.length;
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const p of points) {
    sx += p.x;
    sy += p.y;
    sxx += p.x * p.x;
    sxy += p.x * p.y;
  }
  const bb = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  return { a: (sy - bb * sx) / n, b: bb };
}
// α from the small messages (where latency dominates), β from the large ones.
const alphaUs = fit(pingpong.filter((p) => p.bytes <= 16384).map((p) => ({ x: p.bytes, y: p.us }))).a;
// (16 MiB is reported but left out of the fit: on an oversubscribed host it measures the scheduler.)
const betaUsPerByte = fit(pingpong.filter((p) => p.bytes >= 262144 && p.bytes <= 4194304).map((p) => ({ x: p.bytes, y: p.us }))).b;

const allreduce: { bytes: number; us: number; model_us: number }[] = [];
for (const n of sizes) {
  const buf = new Float32Array(n).fill(1);
  const times: number[] = [];
  for (let r = 0; r < reps(n) + 2; r++) {
    mpi.barrier();
    const t0 = mpi.wtime();
    mpi.allreduce(buf);
    if (r >= 2) times.push(mpi.wtime() - t0);
  }
  times.sort((x, y) => x - y);
  const model = 2 * (size - 1) * alphaUs + (2 * (size - 1) / size) * 4 * n * betaUsPerByte;
  allreduce.push({ bytes: 4 * n, us: times[times.length >> 1]! * 1e6, model_us: model });
}

if (rank === 0) {
  console.log(JSON.stringify({ ranks: size, host, transport: process.env['OMPI_MCA_btl'] ?? 'default (shared memory on one host)' }));
  for (const p of pingpong) console.log(JSON.stringify({ pingpong_bytes: p.bytes, one_way_us: Number(p.us.toFixed(2)) }));
  console.log(JSON.stringify({ alpha_us: Number(alphaUs.toFixed(2)), beta_ns_per_byte: Number((betaUsPerByte * 1000).toFixed(4)), bandwidth_GBps: Number((1 / betaUsPerByte / 1000).toFixed(2)) }));
  for (const a of allreduce) console.log(JSON.stringify({ allreduce_bytes: a.bytes, us: Number(a.us.toFixed(1)), ring_model_us: Number(a.model_us.toFixed(1)) }));
}
mpi.finalize();
