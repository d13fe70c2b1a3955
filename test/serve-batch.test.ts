// The batched decode step of continuous batching (GPT.decodeBatch, DecoderLM.decodeBatch, the
// pooled step with joining prompts): each row, with its own cache and position, gets the logits
// forwardWithCache gives it alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getBackend, noGrad, slice, tensor, tidy, type Tensor } from '../src/index.js';
import { DecoderLM } from '../src/models/decoder.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { GPT, type PosEncoding } from '../src/models/gpt.js';
import type { KVCache, KVPool } from '../src/nn/attention.js';

const cpu = await getBackend('cpu');
type M = GPT | DecoderLM;

function ids(a: number[]): Tensor {
  return tensor(Int32Array.from(a), { backend: cpu, dtype: 'int32', shape: [1, a.length] });
}

function rowOf(logits: Tensor, i: number): Float32Array {
  return Float32Array.from(slice(slice(logits, 0, i, i + 1), 1, logits.shape[1]! - 1, logits.shape[1]!).data());
}

function check(model: M, prompts: number[][], steps: number): void {
  model.eval();
  const solo = prompts.map(() => model.createKVCache());
  const batch = prompts.map(() => model.createKVCache());
  try {
    noGrad(() => {
      // prefill each alone, in both sets of caches
      const next = prompts.map((p, i) => tidy(() => {
        model.forwardWithCache(ids(p), batch[i]!);
        const l = rowOf(model.forwardWithCache(ids(p), solo[i]!).logits, 0);
        return l.indexOf(Math.max(...l));
      }));
      for (let s = 0; s < steps; s++) {
        // rows leave: the last row stops one step early each other step
        const live = prompts.map((_, i) => i).filter((i) => !(s >= 2 && i === prompts.length - 1));
        tidy(() => {
          const bl = model.decodeBatch(tensor(Int32Array.from(live.map((i) => next[i]!)), { backend: cpu, dtype: 'int32', shape: [live.length, 1] }), live.map((i) => batch[i]! as KVCache)).logits;
          live.forEach((i, r) => {
            const a = rowOf(model.forwardWithCache(ids([next[i]!]), solo[i]!).logits, 0);
            const b = rowOf(bl, r);
            let d = 0;
            for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
            assert.ok(d < 1e-4, `row ${i} step ${s}: max |Δlogit| ${d}`);
            next[i] = a.indexOf(Math.max(...a));
          });
        });
      }
    });
  } finally {
    for (const c of [...solo, ...batch]) c.dispose();
  }
}

/** decodePooled: sequences join (prefilled alone, loaded into the next slot) and leave (the
 *  last slot moves into the freed one) between steps; each row matches its solo cache. */
function checkPooled(model: M, prompts: number[][], steps: number): void {
  model.eval();
  const pool = model.createKVPool(3) as KVPool;
  assert.ok(pool);
  const solo = prompts.map(() => model.createKVCache());
  try {
    noGrad(() => {
      const next: number[] = [];
      const slots: number[] = []; // slot -> sequence
      const join = (i: number) => tidy(() => {
        const tmp = model.createKVCache();
        model.forwardWithCache(ids(prompts[i]!), tmp);
        pool.load(slots.length, tmp);
        tmp.dispose();
        const l = rowOf(model.forwardWithCache(ids(prompts[i]!), solo[i]!).logits, 0);
        next[i] = l.indexOf(Math.max(...l));
        slots.push(i);
      });
      join(0);
      join(1);
      for (let s = 0; s < steps; s++) {
        if (s === 2) join(2);
        if (s === 3) { // sequence 0 leaves: the last slot moves into slot 0
          pool.move(slots.length - 1, 0);
          slots[0] = slots[slots.length - 1]!;
          slots.pop();
        }
        if (s === 4) join(3);
        tidy(() => {
          const B = slots.length;
          const bl = model.decodePooled(tensor(Int32Array.from(slots.map((i) => next[i]!)), { backend: cpu, dtype: 'int32', shape: [B, 1] }), pool).logits;
          slots.forEach((i, r) => {
            const a = rowOf(model.forwardWithCache(ids([next[i]!]), solo[i]!).logits, 0);
            const b = rowOf(bl, r);
            let d = 0;
            for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
            assert.ok(d < 1e-4, `sequence ${i} (slot ${r}) step ${s}: max |Δlogit| ${d}`);
            next[i] = a.indexOf(Math.max(...a));
          });
        });
      }
    });
  } finally {
    pool.dispose();
    for (const c of solo) c.dispose();
  }
}

/** stepPooled: joining prompts ride along with the decode rows in one forward (steps 0, 2 and
 *  4), a sequence leaves at step 3; every decode row and every joined prompt's last token get
 *  the logits forwardWithCache gives that sequence on its own cache. */
function checkStepPooled(model: M, prompts: number[][], steps: number): void {
  model.eval();
  const pool = model.createKVPool(4) as KVPool;
  const solo = prompts.map(() => model.createKVCache());
  const joinsAt = new Map<number, number[]>([[0, [0, 1]], [2, [2]], [4, [3]]]);
  const near = (a: Float32Array, b: Float32Array, what: string) => {
    let d = 0;
    for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
    assert.ok(d < 1e-4, `${what}: max |Δlogit| ${d}`);
  };
  try {
    noGrad(() => {
      const next: number[] = [];
      const slots: number[] = [];
      for (let s = 0; s < steps; s++) {
        if (s === 3) {
          pool.move(slots.length - 1, 0);
          pool.lengths[slots.length - 1] = 0;
          slots[0] = slots[slots.length - 1]!;
          slots.pop();
        }
        const joining = joinsAt.get(s) ?? [];
        tidy(() => {
          const B = slots.length;
          const out = model.stepPooled(slots.map((i) => next[i]!), joining.map((i, j) => ({ slot: B + j, tokens: prompts[i]! })), pool).logits;
          assert.deepEqual(out.shape.slice(0, 2), [B + joining.length, 1]);
          slots.forEach((i, r) => {
            const a = rowOf(model.forwardWithCache(ids([next[i]!]), solo[i]!).logits, 0);
            near(a, rowOf(out, r), `sequence ${i} (slot ${r}) step ${s}`);
            next[i] = a.indexOf(Math.max(...a));
          });
          joining.forEach((i, j) => {
            const a = rowOf(model.forwardWithCache(ids(prompts[i]!), solo[i]!).logits, 0);
            near(a, rowOf(out, B + j), `prompt of sequence ${i} joining at step ${s}`);
            next[i] = a.indexOf(Math.max(...a));
          });
        });
        slots.push(...joining);
      }
    });
    assert.throws(() => model.stepPooled([1], [{ slot: 0, tokens: [2] }], pool), /slot 0 must be a distinct slot/);
  } finally {
    pool.dispose();
    for (const c of solo) c.dispose();
  }
}

for (const pos of ['learned', 'rope', 'sinusoidal'] as PosEncoding[]) {
  test(`GPT (${pos}).decodeBatch and decodePooled rows equal forwardWithCache alone`, () => {
    const m = new GPT({ n_layer: 2, n_head: 2, n_embd: 16, block_size: 64, vocab_size: 40, pos_encoding: pos }, { backend: cpu, seed: 3 });
    check(m, [[1, 2, 3], [5], [7, 8, 9, 10, 11, 12], [4, 4]], 6);
    checkPooled(m, [[1, 2, 3], [5], [7, 8, 9, 10, 11, 12], [4, 4, 30]], 7);
    checkStepPooled(m, [[1, 2, 3], [5], [7, 8, 9, 10, 11, 12], [4, 4, 30]], 7);
    m.dispose();
  });
}

test('a GPT with a sparse pattern has no pool (the scheduler uses decodeBatch)', () => {
  const m = new GPT({ n_layer: 1, n_head: 2, n_embd: 16, block_size: 64, vocab_size: 40, attention: 'local', attn_window: 8 }, { backend: cpu, seed: 3 });
  assert.equal(m.createKVPool(4), null);
  check(m, [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]], 4);
  m.dispose();
});

test('GPT with grouped kv heads: decodeBatch rows equal forwardWithCache', () => {
  const m = new GPT({ n_layer: 2, n_head: 4, n_kv_head: 2, n_embd: 16, block_size: 64, vocab_size: 40, pos_encoding: 'rope' }, { backend: cpu, seed: 4 });
  check(m, [[1, 2], [3, 4, 5, 6, 7]], 5);
  checkPooled(m, [[1, 2], [3, 4, 5, 6, 7], [9], [10, 11]], 6);
  checkStepPooled(m, [[1, 2], [3, 4, 5, 6, 7], [9], [10, 11]], 6);
  m.dispose();
});

for (const family of ['llama', 'qwen3', 'phi'] as const) {
  test(`DecoderLM (${family}).decodeBatch rows equal forwardWithCache alone`, () => {
    const cfg = decoderConfigFromHF({
      model_type: family, vocab_size: 50, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, max_position_embeddings: 64, ...(family === 'phi' ? { partial_rotary_factor: 0.5 } : {}),
    });
    const m = new DecoderLM(cfg, { backend: cpu, seed: 5 });
    check(m, [[1, 2, 3], [9], [10, 11, 12, 13, 14, 15, 16]], 6);
    checkPooled(m, [[1, 2, 3], [9], [10, 11, 12, 13, 14, 15, 16], [20, 21]], 7);
    checkStepPooled(m, [[1, 2, 3], [9], [10, 11, 12, 13, 14, 15, 16], [20, 21]], 7);
    m.dispose();
  });
}

test('the server\'s one-pass sampler draws what selectToken draws, from the same generator', async () => {
  const { sampleTempered } = await import('../src/serve/scheduler.js');
  const { selectToken } = await import('../src/generate/sampling.js');
  const { Generator } = await import('../src/tensor/random.js');
  const g0 = new Generator(1);
  const logits = Float32Array.from({ length: 5000 }, () => g0.random() * 8);
  logits[7] = -Infinity;
  for (const T of [0.3, 0.8, 1, 1.7]) {
    const a = new Generator(5);
    const b = new Generator(5);
    for (let k = 0; k < 200; k++) assert.equal(sampleTempered(logits, T, a), selectToken(Float32Array.from(logits), [], { temperature: T }, b), `T ${T} draw ${k}`);
  }
});

test('Backend.sampleTempered (native) draws what sampleTempered draws from the same uniforms', async () => {
  const cpu = await getBackend('cpu');
  if (!cpu.sampleTempered) return; // WebAssembly fallback: the server samples in JS
  const { sampleTempered } = await import('../src/serve/scheduler.js');
  const { Generator } = await import('../src/tensor/random.js');
  const g0 = new Generator(2);
  // three rows of GPT-2's vocabulary (chunk remainders), one with -inf and NaN logits, one all -inf
  const V = 50257;
  const rows = 4;
  const data = Float32Array.from({ length: rows * V }, () => (g0.random() - 0.5) * 12);
  data[V + 3] = -Infinity;
  data[V + 4] = NaN;
  data.fill(-Infinity, 3 * V, 4 * V);
  const t = tensor(data, { backend: cpu, shape: [rows, V] });
  const at = Int32Array.from([0, 1, 2, 0, 1, 2]);
  let same = 0;
  let draws = 0;
  for (const T of [0.5, 0.8, 1.3]) {
    const g = new Generator(9);
    for (let k = 0; k < 60; k++) {
      const u = Float64Array.from(at, () => g.random());
      const got = cpu.sampleTempered(t.storage, t.offset, V, at, Float64Array.from(at, () => T), u);
      at.forEach((r, i) => {
        // the JS sampler with a generator that returns exactly this uniform
        const want = sampleTempered(data.subarray(r * V, (r + 1) * V), T, { random: () => u[i]! } as unknown as InstanceType<typeof Generator>);
        draws++;
        if (got[i] === want) same++;
        assert.ok(got[i] !== 3 + V && got[i] !== 4, `row ${r}: drew a logit of weight 0`);
      });
    }
  }
  // float32 weights against float64: a draw may differ only where u lands within rounding of a boundary
  assert.ok(same >= draws - 1, `${same} of ${draws} draws equal`);
  assert.deepEqual([...cpu.sampleTempered(t.storage, t.offset, V, Int32Array.from([3, 0]), Float64Array.from([1, 1]), Float64Array.from([0.5, 0]))].map((x) => x >= 0), [false, true]);
  assert.throws(() => cpu.sampleTempered!(t.storage, t.offset, V, Int32Array.from([0]), Float64Array.from([0]), Float64Array.from([0.5])), /temperature 0 of row 0 is not positive/);
  assert.throws(() => cpu.sampleTempered!(t.storage, t.offset, V, Int32Array.from([4]), Float64Array.from([1]), Float64Array.from([0.5])), /sampleTempered/);
  t.dispose();
});
