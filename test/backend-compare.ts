// Runs an op on the ref backend and on other backends with the same random inputs and compares
// outputs and input gradients (shared by the cpu and webgpu op tests).
import assert from 'node:assert/strict';
import type { Backend } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { Generator, RefBackend, type Tensor } from '../src/index.js';
import { assertClose, randomArray } from './helpers.js';

export interface Input {
  shape: number[];
  kind?: 'float' | 'positive' | { ints: number };
}

export interface CompareOptions {
  rtol?: number;
  atol?: number;
  grad?: boolean;
}

const ref = new RefBackend();

/** Runs f on ref and on each of `backends` with the same inputs; compares outputs and input gradients. */
export function compareBackends(backends: Backend[], name: string, inputs: Input[], f: (...xs: Tensor[]) => Tensor, opts: CompareOptions = {}): void {
  const g = new Generator(name.length * 7919);
  const values = inputs.map((inp) => {
    const n = inp.shape.reduce((a, b) => a * b, 1);
    if (typeof inp.kind === 'object') {
      const k = inp.kind.ints;
      return Int32Array.from({ length: n }, () => g.randint(k));
    }
    const v = randomArray(n, g);
    if (inp.kind === 'positive') for (let i = 0; i < n; i++) v[i] = Math.abs(v[i]!) + 0.5;
    return v;
  });
  const run = (be: Backend) =>
    A.tidy(() => {
      const xs = inputs.map((inp, i) => {
        const isInt = typeof inp.kind === 'object';
        return A.tensor(values[i]!, { backend: be, shape: inp.shape, dtype: isInt ? 'int32' : 'float32', requiresGrad: !isInt && opts.grad !== false });
      });
      const out = f(...xs);
      const result = { out: out.data(), grads: [] as (ArrayLike<number> | null)[] };
      if (opts.grad !== false && out.requiresGrad) {
        const w = A.tensor(randomArray(out.size, new Generator(3)), { backend: be, shape: out.shape, dtype: 'float32' });
        out.mul(w).sum().backward();
        result.grads = xs.map((x) => x.grad?.data() ?? null);
        for (const x of xs) x.grad?.dispose();
      }
      return result;
    });
  const expected = run(ref);
  const rtol = opts.rtol ?? 2e-5;
  const atol = opts.atol ?? 2e-5;
  for (const be of backends) {
    const got = run(be);
    assertClose(got.out, expected.out, rtol, atol, `${name} forward on ${be.name}`);
    expected.grads.forEach((eg, i) => {
      if (!eg) return;
      assert.ok(got.grads[i], `${name}: no gradient for input ${i} on ${be.name}`);
      assertClose(got.grads[i]!, eg, rtol, atol, `${name} grad of input ${i} on ${be.name}`);
    });
  }
}
