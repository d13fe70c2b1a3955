// The webgpu backend's plumbing: upload, read (contiguous, strided, chunked), write, fill,
// dtype conversion, frees, and errors reported from the device thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../src/index.js';
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
