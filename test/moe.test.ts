// Mixture-of-experts layer: routing and capacity, a naive per-token reference, the
// load-balancing loss, float64 gradients, cpu vs ref, and a tiny training run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../src/index.js';
import { AdamW, Generator, getBackend, liveTensorCount, noGrad, RefBackend, tensor, tidy, type Backend, type Tensor } from '../src/index.js';
import { MoE, type MoEOptions } from '../src/nn/moe.js';
import { assertClose, gradcheck, randTensor } from './helpers.js';

const ref = new RefBackend();

function make(C: number, opts: Partial<MoEOptions> & { experts: number }, seed = 1, be: Backend = ref, dtype: 'float32' | 'float64' = 'float64'): MoE {
  return new MoE(C, { backend: be, dtype, generator: new Generator(seed), std: 0.5, routerStd: 1, ...opts });
}

/** Router probabilities (N, E) in float64 JS from x (N*C) and the router weight (E, C). */
function jsProbs(x: ArrayLike<number>, w: ArrayLike<number>, N: number, C: number, E: number): number[][] {
  const out: number[][] = [];
  for (let n = 0; n < N; n++) {
    const logits: number[] = [];
    for (let e = 0; e < E; e++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += x[n * C + c]! * w[e * C + c]!;
      logits.push(s);
    }
    const m = Math.max(...logits);
    const ex = logits.map((l) => Math.exp(l - m));
    const z = ex.reduce((a, b) => a + b, 0);
    out.push(ex.map((v) => v / z));
  }
  return out;
}

/** Sorted expert order per token (ties to the lower index). */
function ranking(p: number[]): number[] {
  return p.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map(([, i]) => i);
}

/** The smallest gap between consecutive ranked probabilities among the first k+1. */
function minGap(probs: number[][], k: number): number {
  let g = Infinity;
  for (const p of probs) {
    const s = [...p].sort((a, b) => b - a);
    for (let j = 0; j < Math.min(k, s.length - 1); j++) g = Math.min(g, s[j]! - s[j + 1]!);
  }
  return g;
}

/** Naive MoE: per token, in order, with its own capacity bookkeeping; experts run one row at a time. */
function naive(moe: MoE, x: Tensor): Float64Array {
  const C = moe.nEmbd;
  const E = moe.numExperts;
  const k = moe.topK;
  const N = x.size / C;
  const xv = x.data();
  const probs = jsProbs(xv, moe.router.weight.data(), N, C, E);
  const cap = Math.ceil((moe.capacityFactor * N * k) / E);
  const load = new Array<number>(E).fill(0);
  const kept: boolean[][] = probs.map(() => []);
  for (let j = 0; j < k; j++) {
    for (let n = 0; n < N; n++) {
      const e = ranking(probs[n]!)[j]!;
      kept[n]![j] = load[e]! < cap;
      if (kept[n]![j]) load[e]! += 1;
    }
  }
  const y = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    const order = ranking(probs[n]!).slice(0, k);
    const z = order.reduce((a, e) => a + probs[n]![e]!, 0);
    for (let j = 0; j < k; j++) {
      if (!kept[n]![j]) continue;
      const e = order[j]!;
      const gate = k === 1 ? probs[n]![e]! : probs[n]![e]! / z;
      const row = noGrad(() => tidy(() => moe.experts.at(e).forward(tensor(Array.from(xv.slice(n * C, n * C + C)), { backend: x.backend, dtype: x.dtype, shape: [1, C] })).data()));
      for (let c = 0; c < C; c++) y[n * C + c]! += gate * row[c]!;
    }
  }
  return y;
}

/** A seed whose routing is well separated, drops tokens, and uses every expert. */
function wellSeparated(C: number, E: number, k: 1 | 2, cf: number, B: number, T: number): { moe: MoE; x: Tensor } {
  for (let seed = 1; seed < 200; seed++) {
    const moe = make(C, { experts: E, topK: k, capacityFactor: cf, hidden: 5 }, seed);
    const x = randTensor([B, T, C], ref, new Generator(1000 + seed), { requiresGrad: true });
    const probs = jsProbs(x.data(), moe.router.weight.data(), B * T, C, E);
    noGrad(() => tidy(() => void moe.forward(x)));
    const r = moe.lastRouting!;
    if (minGap(probs, k) > 0.02 && moe.lastStats!.dropped > 0 && r.tokens.every((t) => t.length > 0)) return { moe, x };
    moe.dispose();
    x.dispose();
  }
  throw new Error('no well-separated seed');
}

test('parameter names and default widths', () => {
  const m1 = make(8, { experts: 3 });
  const names = m1.namedParameters().map(([n]) => n);
  assert.deepEqual(names.slice(0, 5), ['router.weight', 'experts.0.c_fc.weight', 'experts.0.c_fc.bias', 'experts.0.c_proj.weight', 'experts.0.c_proj.bias']);
  assert.ok(names.includes('experts.2.c_proj.weight'));
  assert.equal(m1.hidden, 32); // top-1: one expert = a dense 4C MLP
  assert.equal(m1.router.bias, null);
  assert.equal(make(8, { experts: 3, topK: 2 }).hidden, 16); // top-2: two half-width experts
  assert.equal(make(12, { experts: 2, activation: 'swiglu' }).hidden, A.swigluHidden(12));
  assert.throws(() => make(8, { experts: 1, topK: 2 }), /topK/);
});

for (const k of [1, 2] as const) {
  test(`top-${k}: forward equals a naive per-token loop (with drops)`, () => {
    const { moe, x } = wellSeparated(4, 3, k, 0.75, 2, 5);
    const y = noGrad(() => moe.forward(x));
    assert.deepEqual(y.shape, [2, 5, 4]);
    assertClose(y.data(), naive(moe, x), 1e-10, 1e-12, `top-${k} forward`);
    assert.ok(moe.lastStats!.dropped > 0);
  });

  test(`top-${k}: float64 gradcheck of output and aux loss (x, router, experts)`, () => {
    const { moe, x } = wellSeparated(4, 3, k, 0.75, 2, 4);
    const weights = moe.experts.items.flatMap((m) => [m.c_fc.weight, m.c_proj.weight, m.c_fc.bias!]);
    moe.zeroGrad();
    gradcheck(`moe top-${k}`, (xx) => moe.forward(xx), [x, moe.router.weight, ...weights]);
    moe.zeroGrad();
    gradcheck(`moe top-${k} aux`, (xx) => {
      moe.forward(xx);
      return moe.lastAuxLoss!;
    }, [x, moe.router.weight]);
    // The combined objective a model would use.
    moe.zeroGrad();
    gradcheck(`moe top-${k} y+aux`, (xx) => A.add(A.sum(A.mul(moe.forward(xx), 0.3)), moe.lastAuxLoss!), [x, moe.router.weight, ...weights.slice(0, 2)]);
  });
}

test('aux loss: uniform routing gives α; a skewed case matches hand math', () => {
  for (const k of [1, 2] as const) {
    const moe = make(4, { experts: 4, topK: k, auxLossCoef: 0.05 });
    noGrad(() => moe.router.weight.backend.fill(moe.router.weight.storage, 0, 0, moe.router.weight.size));
    const x = randTensor([3, 5, 4], ref, new Generator(3));
    tidy(() => {
      noGrad(() => moe.forward(x));
      assert.ok(Math.abs(moe.lastAuxLoss!.item() - 0.05) < 1e-12, `uniform aux ${moe.lastAuxLoss!.item()}`);
    });
    // Ties go to the lower index: everything to expert 0 (and 1 for the second choice).
    assert.deepEqual(moe.lastStats!.tokensPerExpert, k === 1 ? [1, 0, 0, 0] : [0.5, 0.5, 0, 0]);
  }
  const moe = make(4, { experts: 3, auxLossCoef: 0.01 });
  const x = randTensor([2, 6, 4], ref, new Generator(5));
  const probs = jsProbs(x.data(), moe.router.weight.data(), 12, 4, 3);
  const f = [0, 0, 0];
  const P = [0, 0, 0];
  for (const p of probs) {
    f[ranking(p)[0]!]! += 1 / 12;
    for (let e = 0; e < 3; e++) P[e]! += p[e]! / 12;
  }
  const expected = 0.01 * 3 * (f[0]! * P[0]! + f[1]! * P[1]! + f[2]! * P[2]!);
  tidy(() => {
    noGrad(() => moe.forward(x));
    assert.ok(Math.abs(moe.lastAuxLoss!.item() - expected) < 1e-12);
  });
});

test('capacity: drops in token order, first choices before second choices', () => {
  // Router = identity, so the logits are x itself.
  const C = 3;
  const moe = make(C, { experts: 3, topK: 2, capacityFactor: 0.75, hidden: 4 });
  moe.router.weight.backend.write(moe.router.weight.storage, [1, 0, 0, 0, 1, 0, 0, 0, 1], 0);
  // token 0: first 0, second 2; token 1: first 2, second 1. capacity = ceil(0.75·2·2/3) = 1,
  // so token 1's first choice (expert 2) beats token 0's second choice.
  const x = tensor([2, 0, 1, 0, 1, 2], { backend: ref, dtype: 'float64', shape: [1, 2, C] });
  const y = noGrad(() => moe.forward(x));
  const r = moe.lastRouting!;
  assert.equal(r.capacity, 1);
  assert.deepEqual(r.tokens, [[0], [1], [1]]);
  assert.equal(moe.lastStats!.dropped, 0.25);
  assert.deepEqual(moe.lastStats!.tokensPerExpert, [0.25, 0.25, 0.5]);
  assertClose(y.data(), naive(moe, x), 1e-10, 1e-12, 'capacity forward');
  // Token 0 keeps only its first choice, weighted by its renormalised gate.
  const p = jsProbs([2, 0, 1], [1, 0, 0, 0, 1, 0, 0, 0, 1], 1, 3, 3)[0]!;
  const e0 = noGrad(() => moe.experts.at(0).forward(tensor([2, 0, 1], { backend: ref, dtype: 'float64', shape: [1, C] }))).data();
  assertClose(y.data().slice(0, C), Array.from(e0, (v) => (v * p[0]!) / (p[0]! + p[2]!)), 1e-12, 1e-14, 'token 0');

  // All ties (zero router): everything wants expert 0; only the first `capacity` tokens get it.
  const m1 = make(C, { experts: 3, topK: 1, capacityFactor: 1, hidden: 4 });
  m1.router.weight.backend.fill(m1.router.weight.storage, 0, 0, m1.router.weight.size);
  const x1 = randTensor([2, 3, C], ref, new Generator(9));
  const y1 = noGrad(() => m1.forward(x1)).data();
  assert.equal(m1.lastRouting!.capacity, 2);
  assert.ok(Math.abs(m1.lastStats!.dropped - 4 / 6) < 1e-12);
  const e = noGrad(() => m1.experts.at(0).forward(A.slice(A.reshape(x1, [6, C]), 0, 0, 2))).data();
  assertClose(y1.slice(0, 2 * C), Array.from(e, (v) => v / 3), 1e-12, 1e-14, 'kept tokens');
  assert.deepEqual(Array.from(y1.slice(2 * C)), new Array(4 * C).fill(0));

  // Eval mode: no dropping by default.
  m1.eval();
  noGrad(() => m1.forward(x1));
  assert.equal(m1.lastStats!.dropped, 0);
  assert.equal(m1.lastRouting!.capacity, Infinity);

  // No dropping with a large enough factor.
  const m2 = make(C, { experts: 3, topK: 2, capacityFactor: 3, hidden: 4 });
  noGrad(() => m2.forward(x1));
  assert.equal(m2.lastStats!.dropped, 0);
});

test('cpu backend equals ref (float32 forward and gradients)', async () => {
  const cpu = await getBackend('cpu');
  for (const k of [1, 2] as const) {
    const opts = { experts: 4, topK: k, capacityFactor: 1, activation: 'swiglu' as const };
    const mr = make(16, opts, 11, ref, 'float32');
    const mc = make(16, { ...opts, skipInit: true }, 11, cpu, 'float32');
    mc.loadStateDict(mr.stateDict());
    const xs = randTensor([2, 12, 16], ref, new Generator(4), { dtype: 'float32' }).data();
    const run = (m: MoE, be: Backend) => tidy(() => {
      m.zeroGrad();
      const x = tensor(xs, { backend: be, dtype: 'float32', shape: [2, 12, 16] });
      const y = m.forward(x);
      A.add(A.sum(A.mul(y, y)), m.lastAuxLoss!).backward();
      return { y: y.data(), grads: m.parameters().map((p) => p.grad ? p.grad.data() : new Float32Array(p.size)), stats: m.lastStats };
    });
    const a = run(mr, ref);
    const b = run(mc, cpu);
    assert.deepEqual(b.stats, a.stats);
    assertClose(b.y, a.y, 1e-4, 1e-5, `top-${k} y`);
    a.grads.forEach((g, i) => assertClose(b.grads[i]!, g, 1e-3, 1e-5, `top-${k} grad ${i}`));
    mr.dispose();
    mc.dispose();
  }
});

for (const k of [1, 2] as const) test(`top-${k}: tiny training run: loss falls, experts stay in use, nothing leaks`, () => {
  const C = 8;
  const E = 4;
  const g = new Generator(21);
  const teacher = randTensor([C, C], ref, g, { dtype: 'float32', scale: 1 }).keep();
  const moe = new MoE(C, { experts: E, topK: k, capacityFactor: 1.25, backend: ref, generator: new Generator(2), std: 0.1, auxLossCoef: 0.01 });
  const opt = new AdamW(moe.parameters(), { lr: 1e-2, weightDecay: 0 });
  const losses: number[] = [];
  const use = new Array<number>(E).fill(0);
  let live = -1;
  const steps = 150;
  for (let s = 0; s < steps; s++) {
    tidy(() => {
      opt.zeroGrad();
      const x = randTensor([4, 16, C], ref, g, { dtype: 'float32' });
      const target = A.tanh(A.matmul(x, teacher));
      const out = A.add(x, moe.forward(x));
      const mse = A.mean(A.square(A.sub(out, A.add(x, target))));
      A.add(mse, moe.lastAuxLoss!).backward();
      opt.stepUpdate();
      losses.push(mse.item());
      if (s >= steps - 30) moe.lastStats!.tokensPerExpert.forEach((f, e) => (use[e]! += f / 30));
    });
    if (s === 5) live = liveTensorCount();
    if (s > 5) assert.equal(liveTensorCount(), live, `step ${s}: tensors leaked`);
  }
  const avg = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  const first = avg(losses.slice(0, 10));
  const last = avg(losses.slice(-10));
  assert.ok(last < 0.5 * first, `loss ${first} -> ${last}`);
  for (const u of use) assert.ok(u > 0.08 && u < 0.5, `utilisation ${use.map((v) => v.toFixed(2)).join(' ')}`);
  teacher.dispose();
});
