// Quick timing of the fused attention kernels, one thread: B=1, H=6, D=64, causal, T = 256 and
// 1024, both builds (relaxed-SIMD FMA and plain SIMD). FLOPs counted honestly for causal:
// forward 2 matmuls over the visible half, 2·2·T²·D/2 per head; backward 2.5x that.
// Usage: node dist/bench/attention-quick.js [T...]
import { TestRunner, type Variant } from '../test/fused-harness.js';
import * as F from '../src/backend/cpu/fused.js';

function fill(n: number, amp: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296 * 2 - 1) * amp;
  }
  return a;
}

/** Best ms per call over 7 samples of ~100 ms each (the machine is shared: best filters out interference), after ~0.5 s of warm-up (V8 tiers up). */
function time(fn: () => void): number {
  const t0 = performance.now();
  let calls = 0;
  while (performance.now() - t0 < 500 || calls < 2) { fn(); calls++; }
  const per = (performance.now() - t0) / calls;
  const reps = Math.max(1, Math.round(100 / per));
  let best = Infinity;
  for (let s = 0; s < 7; s++) {
    const t = performance.now();
    for (let r = 0; r < reps; r++) fn();
    best = Math.min(best, (performance.now() - t) / reps);
  }
  return best;
}

const Ts = process.argv.slice(2).map(Number).filter((t) => t > 0);
const B = 1, H = 6, D = 64;
for (const variant of ['relaxed', 'plain'] as Variant[]) {
  for (const T of Ts.length ? Ts : [256, 1024]) {
    const rt = new TestRunner(variant, 1);
    const n = B * H * T * D;
    const q = rt.upload(fill(n, 1, 1)), k = rt.upload(fill(n, 1, 2)), v = rt.upload(fill(n, 1, 3));
    const gout = rt.upload(fill(n, 1, 4));
    const out = rt.output(n), lse = rt.output(B * H * T);
    const gq = rt.output(n), gk = rt.output(n), gv = rt.output(n);
    const args = { q, k, v, out, lse, B, H, Tq: T, Tk: T, D, scale: 1 / Math.sqrt(D), causal: true };
    const fwd = time(() => F.attention(rt, args));
    const bwd = time(() => F.attentionBackward(rt, { ...args, gout, gq, gk, gv }));
    const fwdFlops = B * H * 2 * 2 * T * T * D / 2;
    const bwdFlops = 2.5 * fwdFlops;
    console.log(`${variant.padEnd(7)} T=${String(T).padStart(4)}  fwd ${fwd.toFixed(2).padStart(7)} ms ` +
      `${(fwdFlops / fwd / 1e6).toFixed(1).padStart(5)} GFLOP/s   bwd ${bwd.toFixed(2).padStart(7)} ms ` +
      `${(bwdFlops / bwd / 1e6).toFixed(1).padStart(5)} GFLOP/s`);
  }
}
