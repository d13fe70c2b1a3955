// float16 weight storage on the webgpu backend: conversions (bits as tensor/half.ts makes them,
// the reference tested in safetensors.test.ts), matmul with a half right operand on both shaders
// and split-K, linear, embedding, a GPT after halfWeights() against the same GPT with its
// weights rounded to half in float32, and the errors for everything else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '../src/index.js';
import type { Backend } from '../src/backend/backend.js';
import { fromHalfBits, toHalfBits } from '../src/tensor/half.js';
import { GPT } from '../src/models/gpt.js';
import { generate } from '../src/generate/index.js';
import { assertClose } from './helpers.js';
import { webgpu } from './webgpu-helpers.js';

function randomValues(n: number, seed: number, scale = 1): Float32Array {
  const g = new A.Generator(seed);
  return Float32Array.from({ length: n }, () => (g.random() * 2 - 1) * scale);
}

test('webgpu float16: to() rounds on the host to nearest even, widening is exact', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const values = [0, -0, 1, -2, 1 / 3, 2049, 2051, 65504, 65519, 65520, -1e6, 6e-8, 1e-9, 5.96e-8, 6.1035e-5, Infinity, -Infinity, NaN, 0.1];
  const x = A.tensor(values, { backend: be });
  const h = x.to('float16');
  assert.equal(h.dtype, 'float16');
  const bits = h.data();
  assert.ok(bits instanceof Uint16Array);
  assert.deepEqual(Array.from(bits), Array.from(toHalfBits(values)));
  assert.equal(bits[5], 0x6800); // 2049 ties to even: 2048
  assert.equal(bits[6], 0x6802); // 2051 ties to even: 2052
  assert.equal(bits[9], 0x7c00); // 65520 overflows to inf
  const back = h.to('float32').data();
  assert.deepEqual(Array.from(back), Array.from(fromHalfBits(bits)));
  // Odd lengths and an uploaded bit pattern round-trip; a float16 tensor made from bits.
  const odd = A.tensor(new Uint16Array([0x3c00, 0xc000, 0x7bff]), { backend: be, dtype: 'float16', shape: [3] });
  assert.equal(odd.dtype, 'float16');
  assert.deepEqual(Array.from(odd.to('float32').data()), [1, -2, 65504]);
  assert.throws(() => A.tensor([1, 2], { backend: be, dtype: 'float16' }), /float16 data must be a Uint16Array of its bits/);
});

test('webgpu float16: matmul and linear with half weights match float32 on the widened weights', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const cases: [number, number, number][] = [
    [5, 7, 3], // general shader, ragged
    [33, 130, 70], // general shader
    [128, 128, 64], // tiled, aligned (vec4 loads of halves)
    [130, 133, 67], // tiled, unaligned (scalar loads)
    [64, 64, 1024], // split-K (one output tile, long K)
  ];
  for (const [M, N, K] of cases) {
    const a = A.tensor(randomValues(M * K, M + N), { backend: be, shape: [M, K] });
    const w = A.tensor(randomValues(K * N, K), { backend: be, shape: [K, N] }).to('float16');
    const wide = w.to('float32');
    assertClose(A.matmul(a, w).data(), A.matmul(a, wide).data(), 1e-5, 1e-5, `matmul ${M}x${N}x${K}`);
    // linear: weight (out, in) = (N, K), read transposed; fused bias.
    const wl = A.tensor(randomValues(N * K, N + 1), { backend: be, shape: [N, K] }).to('float16');
    const bias = A.tensor(randomValues(N, 3), { backend: be });
    assertClose(A.linear(a, wl, bias).data(), A.linear(a, wl.to('float32'), bias).data(), 1e-5, 1e-5, `linear ${M}x${N}x${K}`);
  }
});

test('webgpu float16 arithmetic (adapters with shader-f16): the tiled shader in f16, within half precision', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  // Only adapters with shader-f16 can run it (Mesa 25 lavapipe here; not the CI's GLES adapter
  // nor the H100's Vulkan adapter under Dawn): elsewhere the option falls back to float32.
  const features = (be as unknown as { adapter: { features: string[] } }).adapter.features;
  if (!features.includes('shader-f16')) {
    // scripts/run-tests.mjs runs this file a second time on lavapipe with ATTN_REQUIRE_F16=1.
    if (process.env.ATTN_REQUIRE_F16 === '1') assert.fail('ATTN_REQUIRE_F16=1 but this adapter has no shader-f16');
    return t.skip('this adapter has no shader-f16');
  }
  const cases: [number, number, number, number | undefined][] = [[128, 128, 256, undefined], [130, 133, 67, undefined], [64, 64, 1024, 4]];
  for (const [M, N, K, splitK] of cases) {
    const aValues = randomValues(M * K, M + 7);
    const a = A.tensor(aValues, { backend: be, shape: [M, K] });
    const w = A.tensor(randomValues(K * N, K + 1), { backend: be, shape: [K, N] }).to('float16');
    const wide = fromHalfBits(w.data());
    const run = (f16Math: boolean) => {
      const out = A.zeros([M, N], { backend: be });
      be.matmul({
        a: a.storage, aOffset: 0, aBatchStride: 0, transA: false, lda: K, b: w.storage, bOffset: 0, bBatchStride: 0, transB: false, ldb: N,
        out: out.storage, batch: 1, M, N, K, path: 'tiled', f16Math, ...(splitK ? { splitK } : {}),
      } as Parameters<typeof be.matmul>[0]);
      return out.data();
    };
    const exact = new Float64Array(M * N);
    const scale = new Float64Array(M * N);
    const ah = fromHalfBits(toHalfBits(aValues)); // staged slices round A to half
    for (let m = 0; m < M; m++) {
      for (let k = 0; k < K; k++) {
        for (let n = 0; n < N; n++) {
          exact[m * N + n]! += ah[m * K + k]! * wide[k * N + n]!;
          scale[m * N + n]! += Math.abs(ah[m * K + k]! * wide[k * N + n]!);
        }
      }
    }
    const got = run(true);
    const f32 = run(false);
    let worst = 0;
    let differs = false;
    for (let i = 0; i < M * N; i++) {
      worst = Math.max(worst, Math.abs(got[i]! - exact[i]!) / scale[i]!);
      if (got[i] !== f32[i]) differs = true;
    }
    assert.ok(worst < 2e-3, `${M}x${N}x${K}: error ${worst.toExponential(2)} of sum |a b|`);
    assert.ok(differs, `${M}x${N}x${K}: the f16 path gave exactly the float32 result (did it run?)`);
  }
});

test('webgpu float16: embedding rows of a half table', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const V = 37;
  const C = 13;
  const w = A.tensor(randomValues(V * C, 5, 3), { backend: be, shape: [V, C] }).to('float16');
  const ids = A.tensor(Int32Array.from([0, 36, 5, 5, 17]), { backend: be, dtype: 'int32', shape: [5] });
  const rows = A.embedding(w, ids);
  assert.equal(rows.dtype, 'float32');
  assert.deepEqual(Array.from(rows.data()), Array.from(A.embedding(w.to('float32'), ids).data()));
  const bad = A.tensor(Int32Array.from([0, 37]), { backend: be, dtype: 'int32', shape: [2] });
  assert.throws(() => A.embedding(w, bad).data(), /37/);
});

test('webgpu float16: a GPT after halfWeights() computes what float32 computes on half-rounded weights', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const cfg = { n_layer: 2, n_head: 4, n_embd: 64, block_size: 32, vocab_size: 50, dropout: 0, bias: true };
  const half = new GPT(cfg, { backend: be, seed: 3 }).eval();
  const rounded = new GPT(cfg, { backend: be, seed: 3 }).eval();
  const before = half.parameters().reduce((s, p) => s + p.size * 4, 0);
  const saved = half.halfWeights();
  // Every matrix (wte, wpe, the attention and MLP weights) is now half; biases and norms are not.
  for (const [name, p] of half.namedParameters()) assert.equal(p.dtype, p.ndim >= 2 ? 'float16' : 'float32', name);
  assert.ok(saved > 0.45 * before, `saved ${saved} of ${before} bytes`);
  for (const p of rounded.parameters()) {
    if (p.ndim < 2) continue;
    be.write(p.storage, fromHalfBits(toHalfBits(p.data())), 0);
  }
  const ids = A.tensor(Int32Array.from({ length: 2 * 20 }, (_, i) => (i * 7) % 50), { backend: be, dtype: 'int32', shape: [2, 20] });
  assertClose(half.forward(ids).logits.data(), rounded.forward(ids).logits.data(), 1e-4, 1e-5, 'logits');
  const a = generate(half, [1, 2, 3], { maxNewTokens: 12, greedy: true }).tokens;
  const b = generate(rounded, [1, 2, 3], { maxNewTokens: 12, greedy: true }).tokens;
  assert.deepEqual(a, b);
});

test('float16 errors: other ops refuse it, backends without it say so', async (t) => {
  const cpu = await A.getBackend('cpu');
  const m = new GPT({ n_layer: 1, n_head: 2, n_embd: 16, block_size: 8, vocab_size: 11, dropout: 0, bias: true }, { backend: cpu, seed: 1 });
  assert.throws(() => m.halfWeights('float16'), /cpu backend does not store float16 \(it stores bfloat16\)/);
  assert.throws(() => A.tensor(new Uint16Array(2), { backend: cpu }), /pass dtype 'float16' or 'bfloat16'/);
  assert.throws(() => A.tensor([1, 2], { backend: cpu }).to('float16'), /does not support float16/);
  const be: Backend | string = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const h = A.tensor([1, 2, 3, 4], { backend: be }).to('float16');
  assert.throws(() => A.add(h, h), /float16 is a storage dtype for weights/);
  assert.throws(() => A.matmul(h.reshape([2, 2]), A.tensor([1, 2, 3, 4], { backend: be, shape: [2, 2] })), /dtypes differ|float16/);
  assert.throws(() => A.softmax(h, -1), /float16/);
});
