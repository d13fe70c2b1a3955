// The webgpu backend's plumbing: upload, read (contiguous, strided, chunked), write, fill,
// dtype conversion, frees, and errors reported from the device thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../src/index.js';
import type { Backend } from '../src/backend/backend.js';
import { webgpu } from './webgpu-helpers.js';

test('webgpu: upload, read, strided copy, fill, write, dtype conversion', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const x = A.tensor([1, 2, 3, 4, 5, 6], { backend: be, shape: [2, 3] });
  assert.deepEqual(Array.from(x.data()), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(Array.from(A.transpose(x).data()), [1, 4, 2, 5, 3, 6]);
  assert.deepEqual(Array.from(A.slice(x, 1, 1, 3).data()), [2, 3, 5, 6]);
  assert.deepEqual(Array.from(A.zeros([5], { backend: be }).data()), [0, 0, 0, 0, 0]);
  const ints = A.tensor([1.7, -2.5, 3], { backend: be }).to('int32');
  assert.equal(ints.dtype, 'int32');
  assert.deepEqual(Array.from(ints.data()), [1, -2, 3]);
  assert.deepEqual(Array.from(ints.to('float32').data()), [1, -2, 3]);
  const big = A.tensor(Float32Array.from({ length: 5_000_000 }, (_, i) => i % 1000), { backend: be });
  const back = big.data();
  assert.equal(back.length, 5_000_000);
  assert.equal(back[4_999_999], 999);
  be.write(x.storage, [9, 8], 4);
  assert.deepEqual(Array.from(x.data()), [1, 2, 3, 4, 9, 8]);
});

test('webgpu: refuses float64 and storages of other backends', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  assert.throws(() => A.tensor([1], { backend: be, dtype: 'float64' }), /float64/);
  const other = A.tensor([1]);
  assert.throws(() => A.add(A.tensor([1], { backend: be }), other), /different backends/);
});

test('dropout masks: drawn on the device, the same bits on ref, cpu and webgpu, kept at rate 1 - p', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const cpu = await A.getBackend('cpu');
  const n = 100_003;
  for (const p of [0.1, 0.2, 0.5, 0.9]) {
    const backends: Backend[] = [A.refBackend(), cpu, be];
    const masks: Float32Array[] = backends.map((b) => {
      const x = A.ones([n], { backend: b });
      return A.dropout(x, p, true, new A.Generator(42)).data() as Float32Array;
    });
    assert.deepEqual(Array.from(masks[1]!), Array.from(masks[0]!), `cpu mask differs from ref at p=${p}`);
    assert.deepEqual(Array.from(masks[2]!), Array.from(masks[0]!), `webgpu mask differs from ref at p=${p}`);
    const kept = masks[0]!.reduce((s: number, v: number) => s + (v !== 0 ? 1 : 0), 0) / n;
    assert.ok(Math.abs(kept - (1 - p)) < 0.005, `p=${p}: kept ${kept}`);
    assert.ok(masks[0]!.every((v) => v === 0 || Math.abs(v - 1 / (1 - p)) < 1e-6), 'kept values are scaled by 1/(1-p)');
  }
  // Two calls on one generator draw different masks.
  const g = new A.Generator(1);
  const a = A.dropout(A.ones([1000]), 0.5, true, g).data();
  const b = A.dropout(A.ones([1000]), 0.5, true, g).data();
  assert.notDeepEqual(Array.from(a), Array.from(b));
});

test('webgpu: copies by rows of vec4 (permuted heads, slices, concat, int32) match ref', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const ref = new A.RefBackend();
  const g = new A.Generator(7);
  const data = Float32Array.from({ length: 2 * 5 * 3 * 8 }, () => g.random() * 2 - 1);
  const cases: [string, (x: A.Tensor) => A.Tensor][] = [
    // (B, T, H, D) -> (B, H, T, D): last dim contiguous in runs of 8 on both sides
    ['permute heads', (x) => A.contiguous(A.permute(x, [0, 2, 1, 3]))],
    // runs of 4 from an offset that is a multiple of 4
    ['slice of the last dim', (x) => A.contiguous(A.slice(x, 3, 4, 8))],
    // runs of 2: the element-wise path
    ['odd runs', (x) => A.contiguous(A.slice(x, 3, 2, 4))],
    ['concat on dim 1', (x) => A.concat([x, A.slice(x, 1, 1, 3)], 1)],
    ['int32 permute', (x) => A.contiguous(A.permute(x.mul(100).to('int32'), [2, 0, 1, 3]))],
    ['whole tensor', (x) => A.contiguous(x)],
  ];
  for (const [name, f] of cases) {
    const want = f(A.tensor(data, { backend: ref, shape: [2, 5, 3, 8] })).data();
    const got = f(A.tensor(data, { backend: be, shape: [2, 5, 3, 8] })).data();
    assert.deepEqual(Array.from(got), Array.from(want), name);
  }
});
