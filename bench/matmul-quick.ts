// Quick matmul throughput check of the cpu backend's wasm kernel: GFLOP/s for a few shapes on
// 1 and 2 threads. Usage: node dist/bench/matmul-quick.js [--simd] (--simd forces the
// mul + add build). The full benchmark lives elsewhere.
import { createCpuBackend } from '../src/backend/cpu/index.js';

const forceSimd = process.argv.includes('--simd');
const be = await createCpuBackend({ threads: 2, relaxedSimd: !forceSimd });
const rt = be.rt;
const scratchBytes = Number(rt.exports.matmul_scratch_bytes());

function rand(n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.random() * 2 - 1;
  return x;
}

function timeIt(fn: () => void, seconds: number): number {
  let reps = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < seconds * 1000) {
    fn();
    reps++;
    t = performance.now();
  }
  return (t - t0) / 1000 / reps;
}

console.log(`build: ${rt.relaxedSimd ? 'relaxed SIMD (FMA)' : 'SIMD (mul + add)'}`);
const shapes: [number, number, number][] = [[384, 384, 384], [1024, 1024, 1024], [256, 3072, 768]];
for (const [M, N, K] of shapes) {
  const a = be.upload(rand(M * K), 'float32');
  const b = be.upload(rand(K * N), 'float32');
  const out = be.alloc('float32', M * N);
  const scratch = rt.scratch(scratchBytes);
  const args = [be.ptr(a), 0, K, 0, be.ptr(b), 0, N, 0, be.ptr(out), 1, M, N, K, 0, 0, 0, scratch, scratchBytes];
  const row: string[] = [];
  for (const threads of [1, 2]) {
    const call = () => rt.run('matmul_f32', args, threads);
    timeIt(call, 0.4); // let V8 tier the kernel up
    let best = Infinity;
    for (let r = 0; r < 3; r++) best = Math.min(best, timeIt(call, 0.25));
    row.push(`${threads} thread${threads > 1 ? 's' : ''}: ${(2 * M * N * K / best / 1e9).toFixed(1)} GFLOP/s`);
  }
  console.log(`${M}x${N}x${K} (MxNxK)  ${row.join('  ')}`);
  be.free(a); be.free(b); be.free(out);
}
be.dispose();
