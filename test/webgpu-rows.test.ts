// The webgpu row kernels (softmax, layerNorm, rmsNorm), losses and indexing against the ref
// backend: through the tensor API (forward and gradients) and through direct backend calls
// (rows longer than a workgroup, null weights, repeated indices, out-of-range reports).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend, Storage } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { Generator, RefBackend, type Tensor } from '../src/index.js';
import { assertClose, randomArray } from './helpers.js';
import { compareBackends, type CompareOptions, type Input } from './backend-compare.js';
import { webgpu } from './webgpu-helpers.js';

const ref = new RefBackend();

function compare(be: Backend, name: string, inputs: Input[], f: (...xs: Tensor[]) => Tensor, opts: CompareOptions = {}): void {
  compareBackends([be], name, inputs, f, opts);
}

/**
 * Runs `call` on ref (float32 storages) and on be with the same inputs; compares the named
 * outputs. Inputs are float arrays or {ints}; outputs are sizes, optionally pre-filled (for the
 * accumulating kernels).
 */
function direct(
  be: Backend, name: string,
  inputs: Record<string, ArrayLike<number> | { ints: ArrayLike<number> } | null>,
  outputs: Record<string, number | ArrayLike<number>>,
  call: (b: Backend, s: Record<string, Storage | null>) => void,
  rtol = 2e-5, atol = 2e-5,
): void {
  const run = (b: Backend): Record<string, ArrayLike<number>> => {
    const s: Record<string, Storage | null> = {};
    for (const [k, v] of Object.entries(inputs)) {
      if (v === null) s[k] = null;
      else if ('ints' in v) s[k] = b.upload(v.ints, 'int32');
      else s[k] = b.upload(v, 'float32');
    }
    for (const [k, v] of Object.entries(outputs)) {
      s[k] = typeof v === 'number' ? b.alloc('float32', v) : b.upload(v, 'float32');
    }
    call(b, s);
    const res: Record<string, ArrayLike<number>> = {};
    for (const k of Object.keys(outputs)) res[k] = b.read(s[k]!);
    for (const v of Object.values(s)) if (v) b.free(v);
    return res;
  };
  const want = run(ref);
  const got = run(be);
  for (const k of Object.keys(outputs)) assertClose(got[k]!, want[k]!, rtol, atol, `${name}: ${k}`);
}

const rand = (n: number, seed: number, scale = 1): Float64Array => randomArray(n, new Generator(seed), scale);

test('webgpu: softmax, logSoftmax, layerNorm, rmsNorm through the tensor API', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  for (const n of [1, 3, 17, 129, 1000]) {
    compare(be, `softmax ${n}`, [{ shape: [3, n] }], (x) => A.softmax(x));
    compare(be, `logSoftmax ${n}`, [{ shape: [3, n] }], (x) => A.logSoftmax(x));
    compare(be, `softmax of transposed ${n}`, [{ shape: [n, 3] }], (x) => A.softmax(A.transpose(x)));
    compare(be, `layerNorm ${n}`, [{ shape: [5, n] }, { shape: [n] }, { shape: [n] }], (x, w, b) => A.layerNorm(x, w, b), { rtol: 1e-4, atol: 1e-4 });
    compare(be, `layerNorm of transposed ${n}`, [{ shape: [n, 4] }, { shape: [n] }, { shape: [n] }], (x, w, b) => A.layerNorm(A.transpose(x), w, b), { rtol: 1e-4, atol: 1e-4 });
    compare(be, `rmsNorm ${n}`, [{ shape: [4, n] }, { shape: [n] }], (x, w) => A.rmsNorm(x, w), { rtol: 1e-4, atol: 1e-4 });
  }
});

test('webgpu: embedding, gather, crossEntropy through the tensor API', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  for (const n of [1, 17, 129]) {
    compare(be, `embedding ${n}`, [{ shape: [n, 7] }, { shape: [3, 5], kind: { ints: n } }], (w, ids) => A.embedding(w, ids));
    compare(be, `gather ${n}`, [{ shape: [4, n] }, { shape: [4, 2], kind: { ints: n } }], (x, i) => A.gather(x, 1, i));
    compare(be, `crossEntropy ${n}`, [{ shape: [6, n] }, { shape: [6], kind: { ints: n } }], (x, tg) => A.crossEntropy(x, tg, { labelSmoothing: 0.1 }), { rtol: 1e-4, atol: 1e-5 });
  }
  // 1,600 ids: the backward splits them into chunks summed by a second kernel
  compare(be, 'embedding, many ids', [{ shape: [50, 16] }, { shape: [8, 200], kind: { ints: 50 } }], (w, ids) => A.embedding(w, ids), { rtol: 1e-4, atol: 1e-5 });
  compare(be, 'crossEntropy ignore', [{ shape: [3, 1000] }], (x) => A.crossEntropy(x, A.tensor([5, -100, 999], { backend: x.backend, dtype: 'int32' })), { rtol: 1e-4, atol: 1e-5 });
});

test('webgpu: row kernels on rows longer than a workgroup, with and without weights (direct calls)', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  for (const [rows, n] of [[3, 1000], [2, 5000], [130, 7]] as const) {
    const size = rows * n;
    const x = rand(size, 1 + n, 2);
    const gy = rand(size, 2 + n);
    for (const log of [false, true]) {
      direct(be, `softmax ${rows}x${n} log=${log}`, { x }, { out: size }, (b, s) => b.softmax(s.x!, rows, n, log, s.out!));
      // y from the ref forward, so both backends differentiate the same point.
      const yOut = ref.alloc('float32', size);
      ref.softmax(ref.upload(x, 'float32'), rows, n, log, yOut);
      direct(be, `softmaxBackward ${rows}x${n} log=${log}`, { y: ref.read(yOut), gy }, { gx: size },
        (b, s) => b.softmaxBackward(s.y!, s.gy!, rows, n, log, s.gx!));
    }
    const w = rand(n, 3 + n);
    const bias = rand(n, 4 + n);
    for (const [wi, bi] of [[w, bias], [null, null], [w, null]] as const) {
      const tag = `${rows}x${n} w=${wi !== null} b=${bi !== null}`;
      direct(be, `layerNorm ${tag}`, { x, w: wi, b: bi }, { out: size, mean: rows, rstd: rows },
        (b, s) => b.layerNorm(s.x!, s.w!, s.b!, rows, n, 1e-5, s.out!, s.mean!, s.rstd!), 1e-4, 1e-4);
      const mean = ref.alloc('float32', rows);
      const rstd = ref.alloc('float32', rows);
      ref.layerNorm(ref.upload(x, 'float32'), null, null, rows, n, 1e-5, ref.alloc('float32', size), mean, rstd);
      const saved = { mean: ref.read(mean), rstd: ref.read(rstd) };
      for (const grads of [[true, true], [false, false], [true, false], [false, true]] as const) {
        const outs: Record<string, number> = { gx: size };
        if (grads[0]) outs.gw = n;
        if (grads[1]) outs.gb = n;
        direct(be, `layerNormBackward ${tag} gw=${grads[0]} gb=${grads[1]}`, { x, w: wi, mean: saved.mean, rstd: saved.rstd, gy }, outs,
          (b, s) => b.layerNormBackward(s.x!, s.w!, s.mean!, s.rstd!, s.gy!, rows, n, s.gx!, s.gw ?? null, s.gb ?? null), 1e-4, 1e-4);
      }
      direct(be, `rmsNorm ${tag}`, { x, w: wi }, { out: size, rstd: rows },
        (b, s) => b.rmsNorm(s.x!, s.w!, rows, n, 1e-5, s.out!, s.rstd!), 1e-4, 1e-4);
      ref.rmsNorm(ref.upload(x, 'float32'), null, rows, n, 1e-5, ref.alloc('float32', size), rstd);
      const rs = ref.read(rstd);
      for (const withGw of [true, false]) {
        const outs: Record<string, number> = { gx: size };
        if (withGw) outs.gw = n;
        direct(be, `rmsNormBackward ${tag} gw=${withGw}`, { x, w: wi, rstd: rs, gy }, outs,
          (b, s) => b.rmsNormBackward(s.x!, s.w!, s.rstd!, s.gy!, rows, n, s.gx!, s.gw ?? null), 1e-4, 1e-4);
      }
    }
  }
});

test('webgpu: crossEntropy on long rows, smoothing, ignored and per-row scale (direct calls)', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  for (const [N, V] of [[4, 5000], [70, 3]] as const) {
    const x = rand(N * V, 7 + V, 3);
    const targets = Int32Array.from({ length: N }, (_, r) => (r % 3 === 1 ? -1 : (r * 7919) % V));
    for (const eps of [0, 0.1]) {
      direct(be, `crossEntropy ${N}x${V} eps=${eps}`, { x, t: { ints: targets } }, { losses: N, lse: N },
        (b, s) => b.crossEntropy(s.x!, s.t!, N, V, -1, eps, s.losses!, s.lse!), 1e-5, 1e-5);
      const lse = ref.alloc('float32', N);
      ref.crossEntropy(ref.upload(x, 'float32'), ref.upload(targets, 'int32'), N, V, -1, eps, ref.alloc('float32', N), lse);
      direct(be, `crossEntropyBackward ${N}x${V} eps=${eps}`, { x, t: { ints: targets }, lse: ref.read(lse), scale: rand(N, 9) }, { gx: N * V },
        (b, s) => b.crossEntropyBackward(s.x!, s.t!, s.lse!, s.scale!, N, V, -1, eps, s.gx!), 1e-5, 1e-6);
    }
  }
});

test('webgpu: embeddingBackward and scatterAdd accumulate repeated indices (direct calls)', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  for (const [n, V, C] of [[40, 5, 3], [300, 50, 70], [9, 200, 1]] as const) {
    const ids = Int32Array.from({ length: n }, (_, i) => (i * i * 31 + 7) % V);
    direct(be, `embedding n=${n} V=${V} C=${C}`, { w: rand(V * C, 11), ids: { ints: ids } }, { out: n * C },
      (b, s) => b.embedding(s.w!, V, C, s.ids!, n, s.out!));
    direct(be, `embeddingBackward n=${n} V=${V} C=${C}`, { gy: rand(n * C, 12), ids: { ints: ids } }, { gw: rand(V * C, 13) },
      (b, s) => b.embeddingBackward(s.gy!, s.ids!, n, V, C, s.gw!), 1e-5, 1e-5);
  }
  for (const [outer, n, inner, k] of [[3, 4, 5, 9], [2, 1000, 1, 3000], [1, 2, 130, 1]] as const) {
    const index = Int32Array.from({ length: outer * k * inner }, (_, i) => (i * 13 + (i >> 2)) % n);
    direct(be, `gather ${outer}x${n}x${inner} k=${k}`, { x: rand(outer * n * inner, 14), index: { ints: index } }, { out: outer * k * inner },
      (b, s) => b.gather(s.x!, outer, n, inner, s.index!, k, s.out!));
    direct(be, `scatterAdd ${outer}x${n}x${inner} k=${k}`, { gy: rand(outer * k * inner, 15), index: { ints: index } }, { gx: rand(outer * n * inner, 16) },
      (b, s) => b.scatterAdd(s.gy!, outer, n, inner, s.index!, k, s.gx!), 1e-5, 1e-5);
  }
});

test('webgpu: out-of-range ids, indices and targets throw a RangeError at the next read', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const w = be.upload([1, 2, 3, 4, 5, 6], 'float32'); // (V=3, C=2)
  const bad = be.upload([0, 3, 1], 'int32');
  const out = be.alloc('float32', 6);
  be.embedding(w, 3, 2, bad, 3, out);
  assert.throws(() => be.read(out), (e: unknown) => e instanceof RangeError && /embedding/.test(e.message) && /3/.test(e.message));
  // Reported once: the next read is clean, and the valid rows were written.
  const got = Array.from(be.read(out));
  assert.deepEqual([got[0], got[1], got[4], got[5]], [1, 2, 3, 4]);

  const neg = be.upload([-1], 'int32');
  const gw = be.alloc('float32', 6);
  be.embeddingBackward(be.upload([1, 1], 'float32'), neg, 1, 3, 2, gw);
  assert.throws(() => be.read(gw), RangeError);

  const g = be.alloc('float32', 3);
  be.gather(w, 1, 6, 1, bad, 3, g);
  be.read(g); // ids 0, 3, 1 are all < 6
  be.gather(w, 2, 3, 1, be.upload([0, 5, 1, 2, 0, 1], 'int32'), 3, be.alloc('float32', 6));
  assert.throws(() => be.read(g), (e: unknown) => e instanceof RangeError && /gather/.test(e.message));
  be.scatterAdd(be.upload([1, 1, 1], 'float32'), 1, 2, 1, bad, 3, be.alloc('float32', 2));
  assert.throws(() => be.read(g), (e: unknown) => e instanceof RangeError && /scatterAdd/.test(e.message));

  const logits = be.upload([0, 1, 2, 3, 4, 5], 'float32'); // (N=2, V=3)
  const losses = be.alloc('float32', 2);
  const lse = be.alloc('float32', 2);
  be.crossEntropy(logits, be.upload([2, 3], 'int32'), 2, 3, -100, 0, losses, lse);
  assert.throws(() => be.read(losses), (e: unknown) => e instanceof RangeError && /crossEntropy/.test(e.message));
  const gx = be.alloc('float32', 6);
  be.crossEntropyBackward(logits, be.upload([-5, 0], 'int32'), lse, be.upload([1, 1], 'float32'), 2, 3, -100, 0, gx);
  assert.throws(() => be.read(gx), (e: unknown) => e instanceof RangeError && /crossEntropyBackward/.test(e.message));
  // The ignored target is not an error.
  be.crossEntropy(logits, be.upload([-100, 0], 'int32'), 2, 3, -100, 0, losses, lse);
  assert.equal(be.read(losses)[0], 0);
});
