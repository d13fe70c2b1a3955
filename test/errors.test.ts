// Bad input gets a clear error: shape mismatches name the op and both shapes, out-of-range
// indices are errors, and misuse of backward says what went wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../src/index.js';
import { RefBackend } from '../src/index.js';

const backend = new RefBackend();
const t = (shape: number[], requiresGrad = false) => A.ones(shape, { backend, requiresGrad });
const ids = (v: number[]) => A.tensor(v, { backend, dtype: 'int32' });

test('shape mismatches name the op and both shapes', () => {
  assert.throws(() => A.add(t([2, 3]), t([4])), /add: shapes \[2, 3\] and \[4\] cannot be broadcast/);
  assert.throws(() => A.matmul(t([2, 3]), t([4, 5])), /matmul: shapes \[2, 3\] and \[4, 5\] do not match/);
  assert.throws(() => A.linear(t([2, 3]), t([5, 4])), /linear: input \[2, 3\] does not match weight \[5, 4\]/);
  assert.throws(() => A.reshape(t([2, 3]), [4, 2]), /reshape: cannot reshape \[2, 3\]/);
  assert.throws(() => A.concat([t([2, 3]), t([3, 3])], 1), /concat: shapes \[2, 3\] and \[3, 3\] differ outside dim 1/);
  assert.throws(() => A.crossEntropy(t([4, 5]), ids([1, 2, 3])), /crossEntropy: targets \[3\] do not match logits \[4, 5\]/);
  assert.throws(() => A.scaledDotProductAttention(t([1, 2, 3, 4]), t([1, 2, 3, 5]), t([1, 2, 3, 5])), /attention: q \[1, 2, 3, 4\], k \[1, 2, 3, 5\]/);
  assert.throws(() => A.sum(t([2, 3]), 2), /sum: dim 2 is out of range for a tensor of rank 2/);
});

test('indices out of range are errors, not garbage', () => {
  assert.throws(() => A.embedding(t([4, 3]), ids([0, 4])), (e: unknown) => e instanceof RangeError && /embedding: index 4 at position 1 is out of range \[0, 4\)/.test(e.message));
  assert.throws(() => A.embedding(t([4, 3]), ids([-1])), RangeError);
  assert.throws(() => A.gather(t([2, 3]), 1, A.tensor([[0], [3]], { backend, dtype: 'int32' })), RangeError);
  assert.throws(() => A.crossEntropy(t([2, 3]), ids([0, 7])), RangeError);
  assert.throws(() => A.embedding(t([4, 3]), t([2])), /indices must be int32/);
});

test('backward misuse says what is wrong', () => {
  const x = t([3], true);
  const y = A.mul(x, 2);
  assert.throws(() => y.backward(), /non-scalar tensor of shape \[3\] without a gradient/);
  const loss = A.sum(A.mul(x, x));
  loss.backward();
  assert.throws(() => loss.backward(), /already freed by an earlier backward; pass \{ retainGraph: true \}/);
  assert.throws(() => A.sum(t([2])).backward(), /does not require grad/);
  const z = A.sum(A.mul(x, 3));
  z.backward(undefined, { retainGraph: true });
  z.backward();
  assert.deepEqual(x.grad!.toArray(), [2 + 3 + 3, 2 + 3 + 3, 2 + 3 + 3]); // gradients accumulate across calls
});

test('disposed tensors and mixed backends are refused', () => {
  const x = t([2]);
  x.dispose();
  assert.throws(() => A.add(x, 1), /was disposed/);
  const other = A.ones([2], { backend: new RefBackend() });
  assert.throws(() => A.add(t([2]), other), /different backends/);
});

test('noGrad and detach stop recording; tidy frees what it made', () => {
  const x = t([2], true);
  const y = A.noGrad(() => A.mul(x, 2));
  assert.equal(y.requiresGrad, false);
  assert.equal(A.mul(x, 2).detach().requiresGrad, false);
  const before = A.liveTensorCount();
  const kept = A.tidy(() => {
    A.add(x, 1);
    A.mul(x, 3);
    return A.exp(x);
  });
  assert.equal(A.liveTensorCount(), before + 1);
  kept.dispose();
  assert.equal(A.liveTensorCount(), before);
});
