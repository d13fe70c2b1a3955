// A 10,000-step training loop on a small model holds steady memory: the tensors alive and the
// backend's bytes in use are the same at step 10,000 as after warm-up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { AdamW } from '../src/index.js';
import { batchAt, forwardLoss, initParams, type TinyConfig } from './tiny-gpt.js';
import { charTokens } from './tiny-gpt-ref.test.js';

/** Bytes the backend holds, when it can tell (the cpu backend's wasm heap). */
function heapBytes(b: Backend): number | null {
  const stats = (b as { memoryStats?: () => { bytesInUse: number } }).memoryStats;
  return stats ? stats.call(b).bytesInUse : null;
}

test('10,000 training steps hold steady memory', async () => {
  const backend = await A.getBackend('cpu', { threads: 1 });
  const { tokens, vocab } = charTokens(20_000);
  const cfg: TinyConfig = { vocab, nLayer: 1, nHead: 2, nEmbd: 8, blockSize: 8 };
  const B = 2;
  const p = initParams(cfg, backend, 0);
  const opt = new AdamW(p.values(), { lr: 1e-3 });
  let liveAfterWarmup = 0;
  let heapAfterWarmup: number | null = null;
  for (let s = 0; s < 10_000; s++) {
    const [idx, tgt] = batchAt(tokens, B, cfg.blockSize, s);
    A.tidy(() => {
      const loss = forwardLoss(cfg, p, A.tensor(idx, { backend, shape: [B, cfg.blockSize] }), A.tensor(tgt, { backend, shape: [B, cfg.blockSize] }));
      opt.zeroGrad();
      loss.backward();
      opt.stepUpdate();
    });
    if (s === 99) {
      liveAfterWarmup = A.liveTensorCount();
      heapAfterWarmup = heapBytes(backend);
    }
  }
  assert.equal(A.liveTensorCount(), liveAfterWarmup, 'live tensors grew between step 100 and step 10,000');
  const heap = heapBytes(backend);
  if (heap !== null && heapAfterWarmup !== null) assert.equal(heap, heapAfterWarmup, 'backend bytes in use grew');
});
