// The quantized matmul and embedding kernels of the cpu backend against the ref backend: the
// WebAssembly kernels (the backend built with ATTN_NATIVE=0; relaxed-SIMD and SIMD-only builds,
// 1 and 2 threads) and the default cpu backend (the native addon where it is built). Every
// format (int8, int4, int4z) at M in {1, 3, 17}, K in {32, 96, 800} (and 50 for int8),
// N in {1, 5, 64}, with and without bias, each activation; embeddings equal dequantizeRows.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../src/backend/backend.js';
import { CpuBackend, WasmRuntime } from '../src/backend/cpu/index.js';
import * as A from '../src/index.js';
import { Generator, RefBackend } from '../src/index.js';
import { QUANT_FORMATS, dequantizeRows, quantize, type QuantizedArrays } from '../src/tensor/quantize.js';
import { cases, checkQuantEmbedding, freeQuant, randomF32, uploadQuant, type Case } from './quant-helpers.js';

const ref = new RefBackend();
/** out of quantMatmul on `be` for case c (seeded inputs). */
function runMatmul(be: Backend, c: Case, q: QuantizedArrays, x: Float32Array, bias: Float32Array | null): Float32Array {
  const w = uploadQuant(be, q);
  const xs = be.upload(x, 'float32');
  const bs = bias ? be.upload(bias, 'float32') : null;
  const out = be.alloc('float32', c.M * c.N);
  be.quantMatmul({ x: xs, w, out, M: c.M, bias: bs, activation: c.act });
  const res = Float32Array.from(be.read(out));
  freeQuant(be, w);
  for (const s of [xs, bs, out]) if (s) be.free(s);
  return res;
}

/**
 * Every case on `be` against ref. Tolerance: |got − want| <= 1e-5 (|want| + Σ_k |x[m,k] w[n,k]| + |bias[n]|),
 * float32 accumulation against the ref's float64 (relative to the terms' magnitude, so
 * cancelling sums are not held to an impossible bound).
 */
function checkMatmulCases(be: Backend, filter: (c: Case) => boolean = () => true): number {
  let worst = 0;
  let n = 0;
  for (const c of cases()) {
    if (!filter(c)) continue;
    const g = new Generator(1000 + c.M * 7 + c.K * 13 + c.N * 31 + (c.bias ? 1 : 0));
    const q = quantize(randomF32(c.N * c.K, g, 0.5), c.N, c.K, c.format);
    const x = randomF32(c.M * c.K, g);
    const bias = c.bias ? randomF32(c.N, g) : null;
    const want = runMatmul(ref, c, q, x, bias);
    const got = runMatmul(be, c, q, x, bias);
    const deq = dequantizeRows(q);
    for (let m = 0; m < c.M; m++) {
      for (let j = 0; j < c.N; j++) {
        let mag = bias ? Math.abs(bias[j]!) : 0;
        for (let k = 0; k < c.K; k++) mag += Math.abs(x[m * c.K + k]! * deq[j * c.K + k]!);
        const i = m * c.N + j;
        const err = Math.abs(got[i]! - want[i]!) / (Math.abs(want[i]!) + mag);
        if (!(err <= 1e-5)) assert.fail(`${be.name} ${JSON.stringify(c)}: out[${m}, ${j}] = ${got[i]} vs ref ${want[i]} (error ${err})`);
        worst = Math.max(worst, err);
      }
    }
    n++;
  }
  assert.ok(n > 0);
  return worst;
}

// The WebAssembly path: cpu backends made with ATTN_NATIVE=0 (read when a backend is constructed).
const wasm: { be: CpuBackend; label: string }[] = [];
const kernelsRun = new Map<string, number>();

before(async () => {
  const saved = process.env.ATTN_NATIVE;
  process.env.ATTN_NATIVE = '0';
  try {
    for (const [threads, relaxedSimd] of [[2, true], [1, true], [2, false]] as const) {
      const rt = await WasmRuntime.create({ threads, relaxedSimd });
      const be = new CpuBackend(rt);
      assert.equal(be.native, null);
      // Count the kernels run, so a silent fallback to the JS kernel fails the test.
      const run = rt.run.bind(rt);
      rt.run = (kernel, args, nt) => {
        kernelsRun.set(kernel, (kernelsRun.get(kernel) ?? 0) + 1);
        run(kernel, args, nt);
      };
      wasm.push({ be, label: `${threads} threads, ${rt.relaxedSimd ? 'relaxed SIMD' : 'SIMD'}` });
    }
  } finally {
    if (saved === undefined) delete process.env.ATTN_NATIVE;
    else process.env.ATTN_NATIVE = saved;
  }
});

after(() => {
  for (const { be } of wasm) be.rt.dispose();
});

test('WebAssembly quantMatmul matches ref: every format, M, K, N, bias and activation', () => {
  const worst: string[] = [];
  for (const { be, label } of wasm) {
    // The second and third builds without the N = 5 cases.
    const filter = label.startsWith('2 threads, relaxed') ? undefined : (c: Case) => c.N !== 5;
    kernelsRun.clear();
    const err = checkMatmulCases(be, filter);
    let n = 0;
    for (const c of cases()) if (!filter || filter(c)) n++;
    assert.equal(kernelsRun.get('quant_matmul'), n, `${label}: the wasm kernel ran for every case`);
    worst.push(`${label}: ${err.toExponential(2)}`);
  }
  console.log(`worst error: ${worst.join('; ')}`);
});

test('WebAssembly quantEmbedding equals dequantizeRows; out-of-range ids are refused', () => {
  kernelsRun.clear();
  for (const { be } of wasm.slice(0, 2)) checkQuantEmbedding(be);
  assert.equal(kernelsRun.get('quant_embedding'), 2 * 7, 'the wasm kernel ran for every valid call');
});

test('WebAssembly quantEmbedding on 2 threads: many ids, equal to dequantizeRows', () => {
  const be = wasm[0]!.be;
  for (const format of QUANT_FORMATS) {
    const [N, K, n] = [41, 832, 150];
    const g = new Generator(77);
    const q = quantize(randomF32(N * K, g), N, K, format);
    const deq = dequantizeRows(q);
    const idList = Int32Array.from({ length: n }, () => g.randint(N));
    const w = uploadQuant(be, q);
    const ids = be.upload(idList, 'int32');
    const out = be.alloc('float32', n * K);
    kernelsRun.clear();
    be.quantEmbedding(w, ids, n, out);
    assert.equal(kernelsRun.get('quant_embedding'), 1);
    const got = be.read(out);
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < K; k++) {
        if (!Object.is(got[i * K + k], deq[idList[i]! * K + k])) assert.fail(`${format}: row ${i} element ${k}`);
      }
    }
    freeQuant(be, w);
    be.free(ids);
    be.free(out);
  }
});

test('WebAssembly quantMatmul on 2 threads: a product large enough to split, against 1 thread', () => {
  const [two, one] = [wasm[0]!.be, wasm[1]!.be];
  for (const format of QUANT_FORMATS) {
    const c: Case = { format, M: 9, K: 256, N: 203, bias: true, act: 'gelu' };
    const g = new Generator(5);
    const q = quantize(randomF32(c.N * c.K, g), c.N, c.K, format);
    const x = randomF32(c.M * c.K, g);
    const bias = randomF32(c.N, g);
    assert.deepEqual(runMatmul(two, c, q, x, bias), runMatmul(one, c, q, x, bias), format);
    const c1 = { ...c, M: 1 };
    assert.deepEqual(runMatmul(two, c1, q, x.subarray(0, c.K), bias), runMatmul(one, c1, q, x.subarray(0, c.K), bias), `${format} M=1`);
  }
});

test('the default cpu backend (native kernels where built) matches ref', async () => {
  const be = await A.getBackend('cpu');
  checkMatmulCases(be, (c) => c.act !== 'relu' || c.N === 64);
  checkQuantEmbedding(be);
});

/** x quantized as native/quant.cc's quantize_row does: int8 per group of 32, scale max|x| / 127,
 *  round half to even; then Σ_g s_g dx_g Σ_j (level_j - z_g) q_j in float64. */
function int8ActivationMatmul(q: QuantizedArrays, x: Float32Array, M: number, bias: Float32Array | null): { out: Float64Array; mag: Float64Array } {
  const { N, K } = q;
  const G = K / 32;
  const f = Math.fround;
  const rint = (v: number) => { const r = Math.round(v); return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r; };
  const out = new Float64Array(M * N);
  const mag = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    const xq = new Int8Array(K);
    const dx = new Float64Array(G);
    for (let g = 0; g < G; g++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[m * K + g * 32 + j]!));
      dx[g] = f(amax / 127);
      const inv = amax > 0 ? f(127 / amax) : 0;
      for (let j = 0; j < 32; j++) xq[g * 32 + j] = Math.max(-127, Math.min(127, rint(f(x[m * K + g * 32 + j]! * inv))));
    }
    for (let n = 0; n < N; n++) {
      let acc = bias ? bias[n]! : 0;
      let a = bias ? Math.abs(bias[n]!) : 0;
      for (let g = 0; g < G; g++) {
        const z = q.zeros ? q.zeros[n * G + g]! : 8;
        let d = 0;
        for (let j = 0; j < 16; j++) {
          const b = q.data[(n * G + g) * 16 + j]!;
          d += ((b & 15) - z) * xq[g * 32 + j]! + ((b >> 4) - z) * xq[g * 32 + j + 16]!;
          a += Math.abs(q.scales[n * G + g]! * dx[g]! * ((b & 15) - z) * xq[g * 32 + j]!) + Math.abs(q.scales[n * G + g]! * dx[g]! * ((b >> 4) - z) * xq[g * 32 + j + 16]!);
        }
        acc += q.scales[n * G + g]! * dx[g]! * d;
      }
      out[m * N + n] = acc;
      mag[m * N + n] = a;
    }
  }
  return { out, mag };
}

test('int8 activations for int4 decode (native, AVX-512 VNNI): the int8 arithmetic exactly, float32 where they do not apply', async (t) => {
  const be = (await A.getBackend('cpu')) as CpuBackend;
  if (be.setQuantActivations('int8') !== 'int8') {
    t.skip('no native kernels with AVX-512 VNNI here');
    return;
  }
  try {
    for (const format of ['int4', 'int4z'] as const) {
      for (const [M, K, N] of [[1, 64, 5], [3, 128, 64], [8, 768, 37], [5, 192, 16]] as const) {
        const c: Case = { format, M, K, N, bias: N !== 64, act: 'none' };
        const g = new Generator(M * 131 + K + N);
        const q = quantize(randomF32(N * K, g, 0.5), N, K, format);
        const x = randomF32(M * K, g);
        x[3] = 0; // a group may hold zeros; another is all zeros
        if (K >= 128) x.fill(0, 64, 96);
        const bias = c.bias ? randomF32(N, g) : null;
        const got = runMatmul(be, c, q, x, bias);
        const want = int8ActivationMatmul(q, x, M, bias);
        for (let i = 0; i < M * N; i++) {
          const err = Math.abs(got[i]! - want.out[i]!) / (Math.abs(want.out[i]!) + want.mag[i]!);
          if (!(err <= 1e-5)) assert.fail(`${format} M=${M} K=${K} N=${N}: out[${i}] = ${got[i]} vs ${want.out[i]} (error ${err})`);
        }
        // gelu applied to the same sums
        const gelu = runMatmul(be, { ...c, act: 'gelu' }, q, x, bias);
        for (let i = 0; i < M * N; i++) {
          const v = got[i]!;
          const w = 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
          assert.ok(Math.abs(gelu[i]! - w) <= 1e-5 * (1 + Math.abs(w)), `${format} gelu ${i}: ${gelu[i]} vs ${w}`);
        }
      }
    }
    // where they do not apply the float32 path runs: K not a multiple of 64, more than 8 rows, int8 weights
    be.setQuantActivations('float32');
    const g = new Generator(3);
    const samples: [Case, QuantizedArrays, Float32Array][] = [
      [{ format: 'int4', M: 2, K: 96, N: 7, bias: false, act: 'none' }, quantize(randomF32(7 * 96, g), 7, 96, 'int4'), randomF32(2 * 96, g)],
      [{ format: 'int4z', M: 9, K: 128, N: 7, bias: false, act: 'none' }, quantize(randomF32(7 * 128, g), 7, 128, 'int4z'), randomF32(9 * 128, g)],
      [{ format: 'int8', M: 1, K: 64, N: 7, bias: false, act: 'none' }, quantize(randomF32(7 * 64, g), 7, 64, 'int8'), randomF32(64, g)],
    ];
    const floats = samples.map(([c, q, x]) => runMatmul(be, c, q, x, null));
    be.setQuantActivations('int8');
    samples.forEach(([c, q, x], i) => assert.deepEqual(runMatmul(be, c, q, x, null), floats[i], `${c.format} M=${c.M} K=${c.K}`));
  } finally {
    assert.equal(be.setQuantActivations('float32'), 'float32');
  }
});
