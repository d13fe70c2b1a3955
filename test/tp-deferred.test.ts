// Deferred weights (src/nn/deferred.ts), which let a tensor-parallel rank build only its shards:
// a GPT built deferred holds no float of its normal-initialized matrices, yet the values read
// back (whole, or one rank's rows/columns as a stream) are exactly an ordinary build's with the
// same seed; checkpoint values loaded into it are noted, not written; and the loop's AdamW can
// be made without moments. No MPI needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPT } from '../src/models/gpt.js';
import { buildDeferred, isDeferred, materializeDeferred, readDeferred } from '../src/nn/deferred.js';
import { drawShard, extractShard, partRange, type ShardSpec } from '../src/train/parallel/tensor-parallel.js';
import { AdamW } from '../src/train/optim.js';
import type { Tensor } from '../src/tensor/index.js';

// n_embd 160: mlp.c_fc is 640 x 160 = 102,400 values, more than one chunk of the stream (65,536).
const CONFIG = { n_layer: 2, n_embd: 160, n_head: 4, vocab_size: 65, block_size: 16, dropout: 0, bias: true };

function named(m: GPT): Map<string, Tensor> {
  return new Map(m.namedParameters());
}

function same(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`${what}: element ${i}: ${b[i]} vs ${a[i]}`);
}

for (const tie of [true, false]) {
  test(`a GPT built deferred (${tie ? 'tied' : 'untied'} head) holds none of its matrices and reads back an ordinary build's values, whole or as one rank's shard`, () => {
    const whole = new GPT({ ...CONFIG, tie_embeddings: tie }, { seed: 7 });
    const lazy = buildDeferred(() => new GPT({ ...CONFIG, tie_embeddings: tie }, { seed: 7 }));
    const w = named(whole);
    let deferred = 0;
    for (const [name, p] of named(lazy)) {
      const ref = w.get(name)!;
      assert.deepEqual(p.shape, ref.shape, name);
      if (!isDeferred(p)) {
        // Biases and norm gains are built as always (they are small).
        same(ref.data(), p.data(), name);
        continue;
      }
      deferred++;
      assert.equal(p.storage.size, 0, `${name} holds no floats`);
      const all = new Float32Array(p.size);
      readDeferred(p, (start, v) => all.set(v, start));
      same(ref.data(), all, name);
      if (p.ndim !== 2) continue;
      const [rows, cols] = p.shape as [number, number];
      // Two ranks' rows (one range, and three ranges as c_attn's q, k and v parts) and columns.
      const specs: ShardSpec[] = [
        { axis: 0, ranges: [partRange(rows, 2, 1)] },
        { axis: 0, ranges: [[0, 3], [Math.floor(rows / 2), Math.floor(rows / 2) + 2], [rows - 1, rows]] },
        { axis: 1, ranges: [partRange(cols, 2, 0)] },
        { axis: 1, ranges: [[1, 4], [cols - 5, cols]] },
      ];
      for (const spec of specs) same(extractShard(ref.data(), ref.shape, spec), drawShard(p, spec), `${name} shard ${JSON.stringify(spec)}`);
    }
    // Every matrix and embedding: wte, wpe, c_attn, c_proj, c_fc, c_proj per layer (and lm_head untied).
    assert.equal(deferred, 2 + 4 * CONFIG.n_layer + (tie ? 0 : 1));
    // Materialized, a deferred weight is an ordinary tensor with the ordinary build's values.
    const wpe = lazy.transformer.wpe!.weight;
    materializeDeferred(wpe);
    assert.equal(isDeferred(wpe), false);
    same(whole.transformer.wpe!.weight.data(), wpe.data(), 'wpe materialized');
    whole.dispose();
  });
}

test('a checkpoint loaded into a deferred GPT is noted, not written; AdamW without moments allocates none', () => {
  const src = new GPT(CONFIG, { seed: 3 });
  const lazy = buildDeferred(() => new GPT(CONFIG, { init: false }));
  const fc = lazy.transformer.h.items[1]!.mlp as unknown as { c_fc: { weight: Tensor } };
  assert.ok(isDeferred(fc.c_fc.weight), 'init: false builds deferred zeros');
  const zeros = drawShard(fc.c_fc.weight, { axis: 0, ranges: [[0, 2]] });
  assert.ok(zeros.every((v) => v === 0));
  lazy.loadStateDict(src.stateDict());
  for (const [name, p] of named(lazy)) {
    const ref = named(src).get(name)!;
    if (!isDeferred(p)) {
      same(ref.data(), p.data(), name);
      continue;
    }
    assert.equal(p.storage.size, 0, `${name}: still no floats after the load`);
    const spec: ShardSpec = { axis: 1, ranges: [partRange(p.shape[1] ?? 1, 2, 1)] };
    same(extractShard(ref.data(), ref.shape, spec), drawShard(p, spec), `${name}: rank 1's columns of the loaded values`);
  }
  const params = lazy.parameters();
  const opt = new AdamW(params, { moments: false });
  for (const s of opt.stateTensors()) {
    assert.deepEqual(s.m.shape, s.param.shape);
    assert.equal(s.m.storage.size + s.v.storage.size, 0);
  }
  assert.throws(() => opt.stepUpdate(), /moments were released/);
  src.dispose();
});
