// The webgpu buffer pool, on a stand-in device (no adapter needed): size classes, and a free
// list that stays bounded when shapes vary from step to step (it once grew until the GPU ran
// out of memory: masked-LM batches met a new size class at almost every step).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../src/backend/webgpu/executor.js';

class FakeBuffer {
  destroyed = false;
  constructor(readonly size: number) {}
  destroy(): void {
    this.destroyed = true;
  }
}

function fakeDevice(): { device: GPUDevice; created: FakeBuffer[] } {
  const g = globalThis as Record<string, unknown>;
  g['GPUBufferUsage'] ??= { STORAGE: 128, COPY_SRC: 4, COPY_DST: 8 };
  const created: FakeBuffer[] = [];
  const device = {
    createBuffer: ({ size }: { size: number }) => {
      const b = new FakeBuffer(size);
      created.push(b);
      return b;
    },
  } as unknown as GPUDevice;
  return { device, created };
}

test('webgpu pool: size classes are powers of two to 1 MiB, then 8 per doubling', () => {
  assert.equal(BufferPool.sizeClass(1), 16);
  assert.equal(BufferPool.sizeClass(1000), 1024);
  assert.equal(BufferPool.sizeClass(1 << 20), 1 << 20);
  assert.equal(BufferPool.sizeClass((1 << 20) + 1), (1 << 20) + (1 << 17));
  for (const bytes of [3_000_001, 37_000_000, 524_288_000, 1e9 + 3]) {
    const c = BufferPool.sizeClass(bytes);
    assert.ok(c >= bytes && c <= bytes * 1.125 + 4, `${bytes} -> ${c}`);
    assert.equal(c % 4, 0);
  }
});

test('webgpu pool: varying shapes keep the free list within its budget, least recently used out first', () => {
  const { device, created } = fakeDevice();
  const MiB = 1 << 20;
  const pool = new BufferPool(device, 64 * MiB);
  // A "step" allocates four buffers whose sizes depend on a varying length, then frees them.
  const step = (len: number) => {
    const got = [1, 2, 3, 4].map((k) => {
      const size = BufferPool.sizeClass(k * len * 64 * 1024);
      const b = pool.take(size) ?? (pool.overBudget(0) && pool.evict(), pool.create(size));
      return b;
    });
    for (const b of got) pool.put(b);
  };
  for (let i = 0; i < 400; i++) step(8 + ((i * 37) % 57));
  assert.equal(pool.bytesInUse, 0);
  // The peak in use is at most 10 x 64 x 64 KiB = 40 MiB (plus class rounding): the budget is
  // twice that, or its 64 MiB floor.
  assert.ok(pool.peakInUse <= 45 * MiB, `peak ${pool.peakInUse}`);
  assert.equal(pool.budget(), Math.max(64 * MiB, 2 * pool.peakInUse));
  assert.ok(pool.bytesPooled <= pool.budget() + 45 * MiB, `pooled ${pool.bytesPooled} vs budget ${pool.budget()}`);
  const live = created.filter((b) => !b.destroyed).reduce((s, b) => s + b.size, 0);
  assert.equal(live, pool.bytesPooled, 'every buffer not destroyed is in the free list');
  assert.ok(created.some((b) => b.destroyed), 'some classes were evicted');
  // The shapes used last are still pooled: repeating the last step creates nothing.
  const before = created.length;
  step(8 + ((399 * 37) % 57));
  assert.equal(created.length, before);
  // A fixed shape, once warm, never allocates again.
  for (let i = 0; i < 5; i++) step(20);
  const warm = created.length;
  for (let i = 0; i < 50; i++) step(20);
  assert.equal(created.length, warm);
});
