// bfloat16 weight storage on the cpu backend: conversions, the matmul_bf16b kernel (gemv for
// one row, both layouts of B, bias, activation, ragged sizes, two threads; gemm for more
// rows), embedding, a GPT after halfWeights() against the same GPT with its weights rounded to
// bfloat16 in float32, and the CLI's --dtype bfloat16.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as A from '../src/index.js';
import { floatBitsToBf16Bits, fromBf16Bits, toBf16Bits } from '../src/tensor/half.js';
import { GPT } from '../src/models/gpt.js';
import { generate } from '../src/generate/index.js';
import { assertClose } from './helpers.js';

const cpu = await A.getBackend('cpu', { threads: 2 });

function randomValues(n: number, seed: number, scale = 1): Float32Array {
  const g = new A.Generator(seed);
  return Float32Array.from({ length: n }, () => (g.random() * 2 - 1) * scale);
}

test('bfloat16: to() rounds to nearest even on the host, widening is exact', () => {
  const values = [0, -0, 1, -2, 1 / 3, 257, 259, 3.3895313892515355e38, 3.4e38, 1e-40, Infinity, -Infinity, NaN];
  const h = A.tensor(values, { backend: cpu }).to('bfloat16');
  assert.equal(h.dtype, 'bfloat16');
  const bits = h.data();
  assert.ok(bits instanceof Uint16Array);
  assert.deepEqual(Array.from(bits), Array.from(toBf16Bits(values)));
  assert.equal(bits[2], 0x3f80); // 1
  assert.equal(bits[5], 0x4380); // 257 ties to even: 256
  assert.equal(bits[6], 0x4382); // 259 ties to even: 260
  assert.equal(bits[8], 0x7f80); // 3.4e38 rounds past the largest bfloat16: inf
  assert.equal(bits[12], 0x7fc0); // the default NaN
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  f[0] = 1 / 3;
  assert.equal(bits[4], floatBitsToBf16Bits(u[0]!));
  assert.deepEqual(Array.from(h.to('float32').data()), Array.from(fromBf16Bits(bits)));
  assert.throws(() => A.tensor([1, 2], { backend: cpu, dtype: 'bfloat16' }), /Uint16Array of its bits/);
});

test('bfloat16: matmul with a bfloat16 right operand equals float32 on the widened values', () => {
  // [M, N, K]: gemv (one row) with ragged N and K, both layouts; gemm; two threads (large N).
  const cases: [number, number, number][] = [[1, 5, 3], [1, 37, 21], [1, 64, 768], [1, 3000, 100], [7, 33, 19], [64, 96, 300]];
  for (const [M, N, K] of cases) {
    const a = A.tensor(randomValues(M * K, M + N + K), { backend: cpu, shape: [M, K] });
    const w = A.tensor(randomValues(K * N, K), { backend: cpu, shape: [K, N] }).to('bfloat16');
    const wide = w.to('float32');
    assertClose(A.matmul(a, w).data(), A.matmul(a, wide).data(), 1e-5, 1e-5, `matmul ${M}x${N}x${K}`);
    // linear reads W (out, in) transposed, with a fused bias; and GELU through the fused MLP path.
    const wl = A.tensor(randomValues(N * K, N + 1), { backend: cpu, shape: [N, K] }).to('bfloat16');
    const bias = A.tensor(randomValues(N, 3), { backend: cpu });
    assertClose(A.linear(a, wl, bias).data(), A.linear(a, wl.to('float32'), bias).data(), 1e-5, 1e-5, `linear ${M}x${N}x${K}`);
  }
});

test('bfloat16: embedding rows, and the ops that refuse it', () => {
  const V = 29;
  const C = 11;
  const w = A.tensor(randomValues(V * C, 5, 3), { backend: cpu, shape: [V, C] }).to('bfloat16');
  const ids = A.tensor(Int32Array.from([0, 28, 4, 4]), { backend: cpu, dtype: 'int32', shape: [4] });
  const rows = A.embedding(w, ids);
  assert.equal(rows.dtype, 'float32');
  assert.deepEqual(Array.from(rows.data()), Array.from(A.embedding(w.to('float32'), ids).data()));
  assert.throws(() => A.embedding(w, A.tensor(Int32Array.from([29]), { backend: cpu, dtype: 'int32', shape: [1] })), /index 29 at position 0 is out of range \[0, 29\)/);
  assert.throws(() => A.add(w, w), /bfloat16 is a storage dtype for weights/);
  assert.throws(() => A.concat([w, w], 0), /bfloat16 is a storage dtype for weights/);
  assert.throws(() => A.contiguous(A.transpose(w)), /bfloat16 tensors are not copied/);
  assert.throws(() => A.matmul(A.tensor(new Uint16Array(4), { backend: cpu, dtype: 'bfloat16', shape: [2, 2] }), A.ones([2, 2], { backend: cpu })), /dtypes differ|bfloat16/);
});

test('bfloat16: a GPT after halfWeights() computes what float32 computes on bfloat16-rounded weights', () => {
  const cfg = { n_layer: 2, n_head: 4, n_embd: 64, block_size: 32, vocab_size: 50, dropout: 0, bias: true };
  const half = new GPT(cfg, { backend: cpu, seed: 3 }).eval();
  const rounded = new GPT(cfg, { backend: cpu, seed: 3 }).eval();
  const saved = half.halfWeights();
  for (const [name, p] of half.namedParameters()) assert.equal(p.dtype, p.ndim >= 2 ? 'bfloat16' : 'float32', name);
  assert.ok(saved > 0);
  for (const p of rounded.parameters()) {
    if (p.ndim < 2) continue;
    cpu.write(p.storage, fromBf16Bits(toBf16Bits(p.data())), 0);
  }
  const ids = A.tensor(Int32Array.from({ length: 2 * 20 }, (_, i) => (i * 7) % 50), { backend: cpu, dtype: 'int32', shape: [2, 20] });
  assertClose(half.forward(ids).logits.data(), rounded.forward(ids).logits.data(), 1e-4, 1e-5, 'logits');
  assert.deepEqual(
    generate(half, [1, 2, 3], { maxNewTokens: 12, greedy: true }).tokens,
    generate(rounded, [1, 2, 3], { maxNewTokens: 12, greedy: true }).tokens,
  );
});

test('attn sample --dtype bfloat16 on cpu', () => {
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'attn-bf16-cli-'));
  try {
    const out = join(dir, 'run');
    const tr = spawnSync(process.execPath, [main, 'train', '--preset', 'shakespeare-char-tiny', '--max_iters', '3', '--eval_interval', '3',
      '--eval_iters', '1', '--n_layer', '1', '--n_embd', '32', '--n_head', '2', '--block_size', '16', '--batch_size', '2', '--out', out], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(tr.status, 0, `train failed:\n${tr.stdout}\n${tr.stderr}`);
    const sa = spawnSync(process.execPath, [main, 'sample', '--model', join(out, 'best'), '--dtype', 'bfloat16', '--max_new_tokens', '8', '--temperature', '0'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(sa.status, 0, `sample failed:\n${sa.stdout}\n${sa.stderr}`);
    assert.match(sa.stderr, /weights stored as bfloat16: [\d.]+ MiB saved/);
    assert.ok(sa.stdout.trim().length > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
