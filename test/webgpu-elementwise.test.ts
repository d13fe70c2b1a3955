// The webgpu element-wise and reduction kernels against the ref backend (forward and gradients),
// on awkward sizes and non-contiguous views (the cases of cpu-vs-ref), plus int32 operands,
// NaN handling and a size past one dispatch dimension (2-D grids).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { RefBackend, type Tensor } from '../src/index.js';
import { compareBackends, comparerFor, elementwiseCases, OP_SIZES, type Input } from './backend-compare.js';
import { webgpu } from './webgpu-helpers.js';

const ref = new RefBackend();

test('webgpu: element-wise ops at awkward sizes and on non-contiguous views', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const compare = comparerFor([be]);
  for (const n of OP_SIZES) {
    elementwiseCases(compare, n);
  }
});

test('webgpu: every unary and binary op, scalar operands, where', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const compare = comparerFor([be]);
  const x = [{ shape: [7, 19] }];
  compare('rsqrt', [{ shape: [7, 19], kind: 'positive' }], (v) => A.rsqrt(v));
  compare('abs', x, (v) => A.abs(v));
  compare('sin', x, (v) => A.sin(v));
  compare('cos', x, (v) => A.cos(v));
  compare('square', x, (v) => A.square(v));
  compare('reciprocal', [{ shape: [7, 19], kind: 'positive' }], (v) => A.reciprocal(v));
  compare('sign', x, (v) => A.sign(v), { grad: false });
  compare('elu1', x, (v) => A.elu1(v));
  // Large arguments: tanh, sigmoid and gelus saturate without NaN; erf tails.
  compare('saturating unaries', x, (v) => {
    const big = A.mul(v, 40);
    return A.stack([A.tanh(big), A.sigmoid(big), A.gelu(big), A.gelu(big, 'none'), A.silu(big), A.gelu(A.mul(v, 4), 'none')]);
  });
  compare('pow tensor', [{ shape: [5, 9], kind: 'positive' }, { shape: [9] }], (a, b) => A.pow(a, b));
  compare('maximum/minimum', [{ shape: [4, 9] }, { shape: [4, 1] }], (a, b) => A.add(A.maximum(a, b), A.minimum(a, b)));
  compare('maximum scalar', x, (v) => A.add(A.maximum(v, 0.1), A.minimum(v, -0.2)));
  compare('rsub / rdiv scalars', [{ shape: [7, 19], kind: 'positive' }], (v) => A.add(A.rsub(v, 1), A.div(A.mul(v, 3), 2)));
  for (const op of ['eq', 'ne', 'lt', 'le', 'gt', 'ge'] as const) {
    compare(`compare ${op}`, [{ shape: [6, 5] }, { shape: [5] }], (a, b) => {
      const b2 = A.where(A.compare('gt', b, 0), b, A.slice(a, 0, 0, 1)); // some equal pairs
      return A.add(A.compare(op, a, b2), A.compare(op, a, 0.25));
    }, { grad: false });
  }
  compare('where', [{ shape: [17, 3] }, { shape: [3] }], (a, b) => A.where(A.compare('gt', a, 0), a, b));
  compare('where scalar, transposed cond', [{ shape: [3, 17] }, { shape: [17, 3] }], (c, a) => A.where(A.compare('lt', A.transpose(c), 0), 2.5, a));
  // A tensor used twice accumulates its gradient in place (out aliases an input).
  compare('gradient accumulation', [{ shape: [33] }], (v) => A.mul(A.exp(v), A.add(v, v)));
});

test('webgpu: NaN and infinity semantics match ref', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const vals = [NaN, Infinity, -Infinity, 0, -0, 1, -1, 2.5, -2.5, 3, -3, 0.5];
  const m = vals.length;
  const av: number[] = [];
  const bv: number[] = [];
  for (const p of vals) for (const q of vals) { av.push(p); bv.push(q); }
  const run = (bk: Backend, f: (a: Tensor, b: Tensor) => Tensor): number[] => A.tidy(() => {
    const a = A.tensor(av, { backend: bk, shape: [m * m] });
    const b = A.tensor(bv, { backend: bk, shape: [m * m] });
    return Array.from(f(a, b).data());
  });
  const same = (name: string, f: (a: Tensor, b: Tensor) => Tensor): void => {
    const exp = run(ref, f);
    const got = run(be, f);
    for (let i = 0; i < exp.length; i++) {
      const e = exp[i]!;
      const g = got[i]!;
      const ok = Number.isNaN(e) ? Number.isNaN(g) : Math.abs(g - e) <= 1e-5 * Math.abs(e) || g === e;
      assert.ok(ok, `${name}: ${av[i % av.length]} , ${bv[i % bv.length]} → ${g}, expected ${e} (element ${i})`);
    }
  };
  same('pow', (a, b) => A.pow(a, b));
  same('maximum', (a, b) => A.maximum(a, b));
  same('minimum', (a, b) => A.minimum(a, b));
  same('comparisons', (a, b) => A.concat((['eq', 'ne', 'lt', 'le', 'gt', 'ge'] as const).map((op) => A.compare(op, a, b))));
  same('unaries', (a) => A.concat([A.relu(a), A.sign(a), A.tanh(a), A.sigmoid(a), A.exp(a), A.elu1(a), A.abs(a)]));
  same('where on NaN cond', (a, b) => A.where(a, b, 7));
  same('max/min/argmax with NaN', (a) => {
    const r = A.reshape(a, [m, m]);
    return A.concat([A.max(r, 1), A.min(r, 1), A.max(r, 0), A.argmax(r, 1).to('float32'), A.argmax(r, 0).to('float32'),
      A.sum(r, 1), A.sum(r, 0), A.reshape(A.cumsum(r, 1), [m * m]), A.reshape(A.cumsum(r, 0), [m * m])]);
  });
  same('float → int conversion', (a) => A.mul(a, 1e10).to('int32').to('float32'));
});

test('webgpu: int32 element-wise ops, where, reductions', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const compare = (name: string, inputs: Input[], f: (...xs: Tensor[]) => Tensor): void =>
    compareBackends([be], name, inputs, f, { grad: false, rtol: 0, atol: 0 });
  const ints = (shape: number[], k = 20): Input => ({ shape, kind: { ints: k } });
  compare('int add/sub/mul bcast', [ints([5, 7]), ints([7])], (a, b) => A.stack([A.add(a, b), A.sub(a, b), A.mul(a, b), A.maximum(a, b), A.minimum(a, b)]));
  compare('int div (truncates, by zero gives 0)', [ints([5, 7]), ints([7], 4)], (a, b) => A.div(A.sub(a, 10), A.sub(b, 1)));
  compare('int pow', [ints([5, 7], 6), ints([7], 6)], (a, b) => A.pow(A.sub(a, 3), A.sub(b, 1)));
  compare('int scalars', [ints([5, 7])], (a) => A.stack([A.add(a, 3), A.rsub(a, 5), A.mul(a, -2), A.div(a, 3), A.mul(a, 0.5), A.pow(a, 2)]));
  for (const op of ['eq', 'ne', 'lt', 'le', 'gt', 'ge'] as const) {
    compare(`int compare ${op}`, [ints([6, 5], 4), ints([5], 4)], (a, b) => A.stack([A.compare(op, a, b), A.compare(op, a, 2)]));
  }
  compare('int unaries', [ints([9, 4])], (a) => { const s = A.sub(a, 10); return A.stack([A.neg(s), A.abs(s), A.relu(s), A.sign(s), A.square(s)]); });
  compare('int where', [ints([4, 6], 2), ints([6]), ints([4, 1])], (c, a, b) => A.where(c, a, b));
  compare('float where on int cond', [ints([4, 6], 2), { shape: [6] }], (c, a) => A.where(c, a, -1));
  compare('int sum/max/min', [ints([4, 300, 3])], (a) => {
    const s = A.sub(a, 10);
    return A.concat([A.sum(s, 1), A.max(s, 1), A.min(s, 1), A.sum(s, 2), A.max(s, 0)].map((r) => A.reshape(r, [r.size])));
  });
  compare('int argmax', [ints([5, 300], 50), ints([3, 7, 4], 3)], (a, b) => A.concat([A.argmax(a, 1), A.reshape(A.argmax(b, 1), [12]), A.argmax(a, 0)]));
  compare('int cumsum', [ints([3, 700]), ints([4, 5, 3])], (a, b) => A.concat([A.reshape(A.cumsum(a, 1), [2100]), A.reshape(A.cumsum(b, 1), [60])]));
});

test('webgpu: reductions and cumsum at awkward sizes and on views', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const compare = comparerFor([be]);
  for (const n of OP_SIZES) {
    compare(`sum dim ${n}`, [{ shape: [3, n] }], (x) => A.sum(x, 1));
    compare(`sum dim0 ${n}`, [{ shape: [n, 5] }], (x) => A.sum(x, 0));
    compare(`mean all ${n}`, [{ shape: [n, 2] }], (x) => A.mean(x));
    compare(`max ${n}`, [{ shape: [2, n] }], (x) => A.max(x, -1));
    compare(`min dim0 ${n}`, [{ shape: [n, 3] }], (x) => A.min(x, 0));
    compare(`argmax ${n}`, [{ shape: [2, n] }], (x) => A.argmax(x, -1), { grad: false });
    compare(`argmax dim0 ${n}`, [{ shape: [n, 3] }], (x) => A.argmax(x, 0), { grad: false });
    compare(`cumsum ${n}`, [{ shape: [2, n] }], (x) => A.cumsum(x, 1));
    compare(`cumsum dim0 ${n}`, [{ shape: [n, 3] }], (x) => A.cumsum(x, 0));
    compare(`sum of transposed ${n}`, [{ shape: [n, 3] }], (x) => A.sum(A.transpose(x), 1));
  }
  compare('long sum (1e5 terms)', [{ shape: [2, 100000] }], (x) => A.sum(x, 1), { rtol: 1e-5, atol: 1e-4 });
  compare('long sum inner > 1', [{ shape: [20000, 3] }], (x) => A.sum(x, 0), { rtol: 1e-5, atol: 1e-4 });
  compare('argmax ties (first maximum)', [{ shape: [3, 600], kind: { ints: 4 } }], (x) => A.argmax(x.to('float32'), 1), { grad: false });
});

test('webgpu: an element-wise op past 65535 workgroups (2-D grid)', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const n = 65535 * 64 + 12345;
  const data = Float32Array.from({ length: n }, (_, i) => (i % 1013) - 500);
  A.tidy(() => {
    const x = A.tensor(data, { backend: be });
    const y = A.add(A.mul(x, 2), x).data(); // binaryScalar then binary, both on a 2-D grid
    for (let i = 0; i < n; i += 1) {
      if (y[i] !== 3 * data[i]!) assert.fail(`element ${i}: ${y[i]} vs ${3 * data[i]!}`);
    }
    const total = data.reduce((s, v) => s + v, 0);
    assert.ok(Math.abs(A.sum(x).item() - total) <= 1e-6 * Math.abs(total), 'sum of all');
  });
});
