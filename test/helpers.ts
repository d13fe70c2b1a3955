// Shared test helpers: random inputs, closeness checks, and a float64 finite-difference gradient check.
import assert from 'node:assert/strict';
import type { Backend } from '../src/backend/backend.js';
import type { GPTConfig } from '../src/models/gpt.js';
import { AdamW, Generator, noGrad, tensor, Tensor, tidy, type DType, type Module } from '../src/index.js';

export function randomArray(n: number, g: Generator, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = g.normal() * scale;
  return a;
}

/** (B, T) int32 token ids in [0, V), seeded. */
export function randomIds(backend: Backend, B: number, T: number, V: number, seed: number): Tensor {
  const g = new Generator(seed);
  return tensor(Int32Array.from({ length: B * T }, () => g.randint(V)), { backend, shape: [B, T] });
}

/** The small GPT the model tests build on: 2 layers, 2 heads, 16 wide, 16 positions, 37 tokens. */
export const TINY_GPT: Readonly<Partial<GPTConfig>> = Object.freeze({ n_layer: 2, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 37 });

export function randTensor(shape: number[], backend: Backend, g: Generator, opts: { dtype?: DType; requiresGrad?: boolean; scale?: number } = {}): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tensor(randomArray(n, g, opts.scale ?? 1), { shape, backend, dtype: opts.dtype ?? 'float64', requiresGrad: opts.requiresGrad ?? false });
}

/** max |a-b| / (atol + rtol |b|) <= 1, with a message naming the worst element. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol: number, what = ''): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} vs ${expected.length}`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(a) !== Number.isNaN(e)) assert.fail(`${what}: NaN mismatch at ${i}: ${a} vs ${e}`);
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (a !== e) assert.fail(`${what}: non-finite mismatch at ${i}: ${a} vs ${e}`);
      continue;
    }
    const r = Math.abs(a - e) / (atol + rtol * Math.abs(e));
    if (r > worst) {
      worst = r;
      at = i;
    }
  }
  if (worst > 1) assert.fail(`${what}: element ${at} differs: ${actual[at]} vs expected ${expected[at]} (${worst.toFixed(2)}x the tolerance rtol=${rtol}, atol=${atol})`);
}

/**
 * Checks d(Σ w·f(inputs))/d(input) from backward() against central differences in float64.
 * `f` must be deterministic. Inputs must be float64 tensors with requiresGrad.
 */
export function gradcheck(name: string, f: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: { eps?: number; rtol?: number; atol?: number; seed?: number } = {}): void {
  const eps = opts.eps ?? 1e-6;
  const rtol = opts.rtol ?? 1e-5;
  const atol = opts.atol ?? 1e-7;
  const g = new Generator(opts.seed ?? 7);
  const backend = inputs[0]!.backend;
  // A random weighting makes the scalar objective sensitive to every output element.
  const out0 = noGrad(() => f(...inputs));
  const w = tensor(randomArray(out0.size, g), { shape: out0.shape, backend, dtype: 'float64' });
  const objective = (): number => noGrad(() => tidy(() => f(...inputs).mul(w).sum().item()));
  for (const x of inputs) {
    x.grad?.dispose();
    x.grad = null;
  }
  tidy(() => {
    f(...inputs).mul(w).sum().backward();
  });
  inputs.forEach((x, idx) => {
    if (!x.requiresGrad) return;
    assert.ok(x.grad, `${name}: input ${idx} got no gradient`);
    const analytic = x.grad.data();
    const numeric = new Float64Array(x.size);
    // Perturb the storage elements behind x (x is contiguous at offset 0 in these tests).
    const base = x.data();
    for (let i = 0; i < x.size; i++) {
      const orig = base[i]!;
      backend.write(x.storage, [orig + eps], i);
      const fp = objective();
      backend.write(x.storage, [orig - eps], i);
      const fm = objective();
      backend.write(x.storage, [orig], i);
      numeric[i] = (fp - fm) / (2 * eps);
    }
    assertClose(analytic, numeric, rtol, atol, `${name}: d/d(input ${idx})`);
  });
  out0.dispose();
  w.dispose();
}

/**
 * Checks a float64 model's whole backward pass at once: every parameter gets a gradient that is
 * not all zero, and the loss's derivative along a random direction (Generator(4)) matches central
 * differences (eps 1e-5, atol 1e-8). One direction covers every parameter in two extra forwards,
 * where a per-element check would need two per element. `loss` runs the forward.
 */
export function checkDirectionalGradient(model: Module, loss: () => Tensor, label: string, rtol = 1e-5): void {
  const lossAt = () => noGrad(() => tidy(() => loss().item()));
  tidy(() => loss().backward());
  const g = new Generator(4);
  let predicted = 0;
  const dirs = new Map<Tensor, Float64Array>();
  for (const [name, p] of model.namedParameters()) {
    assert.ok(p.grad, `${name} got no gradient`);
    const gd = p.grad.data();
    assert.ok(gd.some((v) => v !== 0), `${name}'s gradient is all zero`);
    const d = Float64Array.from({ length: p.size }, () => g.normal());
    dirs.set(p, d);
    for (let i = 0; i < d.length; i++) predicted += gd[i]! * d[i]!;
  }
  const eps = 1e-5;
  const shift = (s: number) => {
    for (const [p, d] of dirs) p.backend.write(p.storage, p.data().map((v, i) => v + s * d[i]!), 0);
  };
  shift(eps);
  const up = lossAt();
  shift(-2 * eps);
  const down = lossAt();
  shift(eps);
  assertClose([predicted], [(up - down) / (2 * eps)], rtol, 1e-8, `${label}: directional derivative`);
}

/** 15 AdamW steps (lr 1e-2) on one fixed batch must cut the loss by more than 1 nat: a quick
 *  check that a model trains at all. `loss` runs the forward. */
export function assertFewStepsReduceLoss(model: Module, loss: () => Tensor, label = ''): void {
  const opt = new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0.1, betas: [0.9, 0.95] });
  const losses: number[] = [];
  for (let s = 0; s < 15; s++) {
    losses.push(tidy(() => {
      const l = loss();
      opt.zeroGrad();
      l.backward();
      opt.stepUpdate();
      return l.item();
    }));
  }
  opt.zeroGrad();
  assert.ok(losses[14]! < losses[0]! - 1, `${label ? `${label}: ` : ''}loss ${losses[0]} -> ${losses[14]}`);
}
