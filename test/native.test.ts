// The native kernels (native/, C++): every kernel set the processor has (AVX-512, AVX2 + FMA,
// portable), forced in turn with ATTN_NATIVE_ISA in child processes, against the ref backend on
// awkward shapes; ATTN_NATIVE=0 falls back to WebAssembly and `attn info` says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  abs, add, AdamW, crossEntropy, div, embedding, exp, gelu, swiglu, layerNorm, logSoftmax, maximum, minimum, mul, rmsNorm, softmax, sub, Generator, getBackend, linear, log, matmul, neg, noGrad, randn, reciprocal, relu, rsqrt, scaledDotProductAttention, sigmoid, silu, sqrt, square, tanh, tensor, withMatmulPrecision,
  type AttentionOptions, type Tensor,
} from '../src/index.js';
import type { CpuBackend } from '../src/backend/cpu/index.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const SELF = fileURLToPath(import.meta.url);
const ADDON = fileURLToPath(new URL('../../build/Release/attn_native.node', import.meta.url));
const ISA = process.env.ATTN_TEST_ISA;

/** Max relative error of the cpu backend's matmul family against ref. */
async function compareWithRef(): Promise<{ worst: number; cases: number; kernels: string }> {
  const cpu = (await getBackend('cpu')) as CpuBackend;
  const ref = await getBackend('ref');
  const g = new Generator(5);
  let worst = 0;
  let cases = 0;
  const mv = (t: Tensor): Tensor => tensor(noGrad(() => t.data()), { shape: [...t.shape], backend: cpu });
  const check = (a: Float32Array | Float64Array, b: Float32Array | Float64Array, what: string): void => {
    assert.equal(a.length, b.length, what);
    for (let i = 0; i < a.length; i++) {
      const e = Math.abs(a[i]! - b[i]!) / (1 + Math.abs(b[i]!));
      if (!(e < 2e-4)) assert.fail(`${what}: element ${i}: ${a[i]} vs ${b[i]}`);
      worst = Math.max(worst, e);
    }
    cases++;
  };
  // [7, 40, 70] and [5, 300, 37] with tB take the 2-8-row kernel: its 4-row groups and remainders, 4-row weight blocks and
  // remainders, K tails.
  const shapes = [[1, 7, 33], [7, 33, 1], [33, 1023, 7], [13, 5, 70], [1, 300, 200], [64, 256, 96], [100, 513, 37], [2, 1, 9], [7, 40, 70], [5, 300, 37]];
  for (const [M, K, N] of shapes) {
    for (const tA of [false, true]) for (const tB of [false, true]) {
      const aShape = tA ? [K!, M!] : [M!, K!];
      const bShape = tB ? [N!, K!] : [K!, N!];
      const a = randn(aShape, { generator: g, backend: ref });
      const b = randn(bShape, { generator: g, backend: ref });
      const prod = (x: typeof a, y: typeof b) => matmul(tA ? x.transpose(0, 1) : x, tB ? y.transpose(0, 1) : y);
      const want = noGrad(() => prod(a, b).data());
      const got = noGrad(() => prod(mv(a), mv(b)).data());
      check(got as Float32Array, want as Float64Array, `matmul ${M}x${K}x${N} tA=${tA} tB=${tB}`);
    }
    // linear: x W^T + bias with fused activations (the epilogues), batched rows.
    const x = randn([3, M!, K!], { generator: g, backend: ref });
    const w = randn([N!, K!], { generator: g, backend: ref });
    const bias = randn([N!], { generator: g, backend: ref });
    for (const act of ['none', 'relu', 'gelu'] as const) {
      const f = (xx: typeof x, ww: typeof w, bb: typeof bias) => {
        const y = linear(xx, ww, bb);
        return act === 'relu' ? relu(y) : act === 'gelu' ? gelu(y) : y;
      };
      check(noGrad(() => f(mv(x), mv(w), mv(bias)).data()) as Float32Array, noGrad(() => f(x, w, bias).data()) as Float64Array, `linear ${act} ${M}x${K}x${N}`);
    }
    // batched, each item its own B
    const ab = randn([4, M!, K!], { generator: g, backend: ref });
    const bb = randn([4, K!, N!], { generator: g, backend: ref });
    check(noGrad(() => matmul(mv(ab), mv(bb)).data()) as Float32Array, noGrad(() => matmul(ab, bb).data()) as Float64Array, `batched ${M}x${K}x${N}`);
    // accumulate into a gradient: the backward of x W^T + b
    const xs = randn([M!, K!], { generator: g, backend: ref, requiresGrad: true });
    const ws = randn([N!, K!], { generator: g, backend: ref, requiresGrad: true });
    const grads = (xx: typeof xs, ww: typeof ws) => {
      const y = add(linear(xx, ww), linear(xx, ww));
      y.sum().backward();
      return [xx.grad!.data(), ww.grad!.data()];
    };
    const xc = mv(xs);
    xc.requiresGrad = true;
    const wc = mv(ws);
    wc.requiresGrad = true;
    const [gx, gw] = grads(xc, wc);
    const [rx, rw] = grads(xs, ws);
    check(gx as Float32Array, rx as Float64Array, `dX ${M}x${K}x${N}`);
    check(gw as Float32Array, rw as Float64Array, `dW ${M}x${K}x${N}`);
  }
  // bfloat16 precision: the BF16 dot kernel (pairs of k, odd K padded) or the rounding emulation
  // must equal ref's exact emulation; and it must really round (differ from float32).
  let bf16Gap = 0;
  for (const [M, K, N] of [[1, 7, 33], [13, 33, 70], [37, 1023, 5], [64, 256, 96], [100, 513, 37]]) {
    for (const tA of [false, true]) for (const tB of [false, true]) {
      const a = randn(tA ? [K!, M!] : [M!, K!], { generator: g, backend: ref });
      const b = randn(tB ? [N!, K!] : [K!, N!], { generator: g, backend: ref });
      const prod = (x: typeof a, y: typeof b) => matmul(tA ? x.transpose(0, 1) : x, tB ? y.transpose(0, 1) : y);
      const want = withMatmulPrecision('bfloat16', () => noGrad(() => prod(a, b).data()));
      const got = withMatmulPrecision('bfloat16', () => noGrad(() => prod(mv(a), mv(b)).data()));
      check(got as Float32Array, want as Float64Array, `bf16 matmul ${M}x${K}x${N} tA=${tA} tB=${tB}`);
      const exact = noGrad(() => prod(a, b).data());
      for (let i = 0; i < exact.length; i++) bf16Gap = Math.max(bf16Gap, Math.abs(got[i]! - exact[i]!) / (1 + Math.abs(exact[i]!)));
    }
  }
  assert.ok(bf16Gap > 1e-3, `bfloat16 precision rounds the operands (largest gap to float32 ${bf16Gap})`);
  // Fused attention, forward and backward: causal, padding, a window, Tq != Tk (a cache), odd sizes.
  const cases2: { B: number; H: number; Tq: number; Tk: number; D: number; opts: AttentionOptions; pad?: boolean; Hkv?: number; perm?: boolean }[] = [
    // q, k, v as (B, T, H, D) tensors viewed as (B, H, T, D): read in place through strides.
    { B: 2, H: 3, Tq: 70, Tk: 70, D: 16, opts: { causal: true }, perm: true },
    { B: 1, H: 4, Hkv: 2, Tq: 9, Tk: 40, D: 8, opts: { causal: true }, perm: true, pad: true },
    { B: 2, H: 6, Hkv: 2, Tq: 70, Tk: 70, D: 16, opts: { causal: true } }, // grouped-query heads read in place
    { B: 1, H: 4, Hkv: 1, Tq: 3, Tk: 90, D: 8, opts: { causal: true }, pad: true },
    { B: 2, H: 3, Tq: 70, Tk: 70, D: 16, opts: { causal: true } },
    { B: 1, H: 2, Tq: 5, Tk: 133, D: 8, opts: { causal: true } },
    { B: 2, H: 1, Tq: 65, Tk: 65, D: 33, opts: { causal: false }, pad: true },
    { B: 1, H: 2, Tq: 200, Tk: 200, D: 16, opts: { causal: true, sparsity: { kind: 'window', window: 70 } } },
    { B: 1, H: 1, Tq: 130, Tk: 130, D: 8, opts: { causal: true, sparsity: { kind: 'fixed', block: 32, summary: 4 } } },
    { B: 1, H: 1, Tq: 1, Tk: 1, D: 4, opts: { causal: true } },
    // one query row (a decode step) takes the direct path: padding, grouped heads, strides, a
    // head size that is not a multiple of 16, a window
    { B: 3, H: 4, Hkv: 2, Tq: 1, Tk: 90, D: 64, opts: { causal: true }, pad: true, perm: true },
    { B: 2, H: 3, Tq: 1, Tk: 50, D: 33, opts: { causal: false }, pad: true },
    { B: 2, H: 2, Tq: 1, Tk: 77, D: 16, opts: { causal: true, sparsity: { kind: 'window', window: 20 } } },
  ];
  for (const c of cases2) {
    const mk = (T: number, H = c.H) => randn(c.perm ? [c.B, T, H, c.D] : [c.B, H, T, c.D], { generator: g, backend: ref, requiresGrad: true });
    const P = (t: Tensor) => (c.perm ? t.permute([0, 2, 1, 3]) : t);
    const [q, k, v] = [mk(c.Tq), mk(c.Tk, c.Hkv), mk(c.Tk, c.Hkv)];
    const gout = randn([c.B, c.H, c.Tq, c.D], { generator: g, backend: ref });
    const maskData = Int32Array.from({ length: c.B * c.Tk }, (_, i) => (c.pad && i % c.Tk >= c.Tk - 7 * (1 + (i >= c.Tk ? 1 : 0)) ? 0 : 1));
    const run = (qq: Tensor, kk: Tensor, vv: Tensor, be: typeof ref) => {
      const keyMask = c.pad ? tensor(maskData, { shape: [c.B, c.Tk], dtype: 'int32', backend: be }) : undefined;
      const o = scaledDotProductAttention(P(qq), P(kk), P(vv), { ...c.opts, ...(keyMask ? { keyMask } : {}) });
      o.mul(be === ref ? gout : mv(gout)).sum().backward();
      return [o.data(), qq.grad!.data(), kk.grad!.data(), vv.grad!.data()];
    };
    const want = run(q, k, v, ref);
    const qc = mv(q), kc = mv(k), vc = mv(v);
    for (const t of [qc, kc, vc]) t.requiresGrad = true;
    const got = run(qc, kc, vc, cpu);
    ['out', 'dq', 'dk', 'dv'].forEach((what, i) => check(got[i] as Float32Array, want[i] as Float64Array, `attention ${what} ${JSON.stringify(c)}`));
  }
  // Sums over each axis and the element-wise maps the addon takes over.
  const xr = randn([5, 37, 9], { generator: g, backend: ref });
  for (const axis of [0, 1, 2]) check(noGrad(() => mv(xr).sum(axis).data()) as Float32Array, noGrad(() => xr.sum(axis).data()) as Float64Array, `sum axis ${axis}`);
  const big = randn([300, 700], { generator: g, backend: ref });
  check(noGrad(() => mv(big).sum().reshape([1]).data()) as Float32Array, noGrad(() => big.sum().reshape([1]).data()) as Float64Array, 'sum all (threads)');
  const pos = noGrad(() => add(abs(xr), 0.5));
  const maps: [string, (t: Tensor) => Tensor, boolean][] = [
    ['neg', neg, false], ['square', square, false], ['abs', abs, false], ['relu', relu, false], ['sqrt', sqrt, true], ['reciprocal', reciprocal, true],
    ['rsqrt', rsqrt, true], ['exp', exp, false], ['log', log, true], ['tanh', tanh, false], ['sigmoid', sigmoid, false], ['silu', silu, false],
  ];
  for (const [name, f, positive] of maps) {
    const src = positive ? pos : xr;
    check(noGrad(() => f(mv(src)).data()) as Float32Array, noGrad(() => f(src).data()) as Float64Array, `unary ${name}`);
  }
  // Binary ops over broadcast rows and columns, big enough for two threads, with NaN and ±0 for max/min.
  const wide = randn([70, 1100], { generator: g, backend: ref });
  const row = randn([1, 1100], { generator: g, backend: ref });
  const col = randn([70, 1], { generator: g, backend: ref });
  const specials = tensor(Float32Array.from({ length: 1100 }, (_, i) => [NaN, 0, -0, 1][i % 4]!), { shape: [1, 1100], backend: ref });
  const bins: [string, (x: Tensor, y: Tensor) => Tensor][] = [['add', add], ['sub', sub], ['mul', mul], ['div', div], ['maximum', maximum], ['minimum', minimum]];
  for (const [name, f] of bins) {
    for (const [label, y] of [['same', wide], ['row', row], ['col', col], ['specials', specials]] as const) {
      const want = noGrad(() => f(wide, y).data());
      const got = noGrad(() => f(mv(wide), mv(y)).data());
      // NaN, ±inf and ±0 exactly; the rest within the tolerance.
      for (let i = 0; i < want.length; i++) {
        if (!Number.isFinite(want[i]!) || want[i] === 0) assert.ok(Object.is(got[i], want[i]), `${name} ${label}: element ${i}: ${got[i]} vs ${want[i]}`);
      }
      const finite = (v: number) => (Number.isFinite(v) ? v : 0);
      check(got.map(finite) as Float32Array, want.map(finite) as Float64Array, `binary ${name} ${label}`);
    }
  }
  // Row kernels, forward and backward (gradients through a random upstream gradient): norms with
  // and without weight and bias, softmax and log-softmax, cross-entropy with ignored rows and label
  // smoothing; row lengths that are no multiple of any vector width, and enough rows for threads.
  const grads = (f: (ts: Tensor[]) => Tensor, inputs: Tensor[], backend: 'cpu' | 'ref'): Float32Array[] => {
    const xs = inputs.map((t) => {
      const c = backend === 'cpu' ? mv(t) : tensor(noGrad(() => t.data()), { shape: [...t.shape], backend: ref });
      c.requiresGrad = true;
      return c;
    });
    const y = f(xs);
    const gy = randn(y.shape, { generator: new Generator(9), backend: backend === 'cpu' ? cpu : ref });
    y.mul(gy).sum().backward();
    return [y.data() as Float32Array, ...xs.map((t) => t.grad!.data() as Float32Array)];
  };
  for (const n of [1, 7, 33, 1023]) {
    for (const rows of [13, 300]) {
      // Native: every other row far from zero with a small spread (mean 300, std 0.05), which the
      // WebAssembly layer norm (float sums) gets only to about 1e-3.
      const far = cpu.native ? 1 : 0;
      const x = noGrad(() => randn([rows, n], { generator: g, backend: ref }).mul(tensor(Float32Array.from({ length: rows }, (_, r) => (r % 2 && far ? 0.05 : 1)), { shape: [rows, 1], backend: ref }))
        .add(tensor(Float32Array.from({ length: rows }, (_, r) => (r % 2 && far ? 300 : 0)), { shape: [rows, 1], backend: ref })));
      const w = randn([n], { generator: g, backend: ref });
      const b = randn([n], { generator: g, backend: ref });
      const row: [string, (ts: Tensor[]) => Tensor, Tensor[]][] = [
        ['layerNorm w b', (t) => layerNorm(t[0]!, t[1]!, t[2]!), [x, w, b]],
        ['layerNorm', (t) => layerNorm(t[0]!, null, null), [x]],
        ['rmsNorm w', (t) => rmsNorm(t[0]!, t[1]!), [x, w]],
        ['rmsNorm', (t) => rmsNorm(t[0]!, null), [x]],
        ['softmax', (t) => softmax(t[0]!), [x]],
        ['logSoftmax', (t) => logSoftmax(t[0]!), [x]],
        ['gelu', (t) => gelu(t[0]!), [x]],
        ['swiglu', (t) => swiglu(t[0]!, t[1]!), [x, x.mul(0.5).add(1)]],
      ];
      for (const [name, f, ins] of row) {
        const got = grads(f, ins, 'cpu'), want = grads(f, ins, 'ref');
        got.forEach((gv, i) => check(gv, want[i]!, `${name} ${rows}x${n} ${i ? `grad ${i}` : 'out'}`));
      }
      const targets = Int32Array.from({ length: rows }, (_, i) => (i % 5 === 3 ? -100 : (i * 7) % n));
      for (const labelSmoothing of [0, 0.1]) {
        const f = (t: Tensor[]) => crossEntropy(t[0]!, tensor(targets, { shape: [rows], dtype: 'int32', backend: t[0]!.backend }), { labelSmoothing, reduction: 'none' });
        const got = grads(f, [x], 'cpu'), want = grads(f, [x], 'ref');
        got.forEach((gv, i) => check(gv, want[i]!, `crossEntropy smoothing ${labelSmoothing} ${rows}x${n} ${i ? 'grad' : 'loss'}`));
      }
    }
  }
  // Embedding forward and backward (repeated ids accumulate), float32 and bfloat16 tables.
  for (const [V, C, n] of [[50, 7, 13], [300, 256, 500]] as const) {
    const ids = Int32Array.from({ length: n }, (_, i) => (i * 37) % V);
    const wt = randn([V, C], { generator: g, backend: ref });
    const f = (t: Tensor[]) => embedding(t[0]!, tensor(ids, { shape: [n], dtype: 'int32', backend: t[0]!.backend }));
    const got = grads(f, [wt], 'cpu'), want = grads(f, [wt], 'ref');
    got.forEach((gv, i) => check(gv, want[i]!, `embedding ${V}x${C} n=${n} ${i ? 'grad' : 'out'}`));
    const half = mv(wt).to('bfloat16');
    const rounded = noGrad(() => half.to('float32').data());
    check(noGrad(() => embedding(half, tensor(ids, { shape: [n], dtype: 'int32', backend: cpu })).data()) as Float32Array,
      noGrad(() => embedding(tensor(rounded, { shape: [V, C], backend: ref }), tensor(ids, { shape: [n], dtype: 'int32', backend: ref })).data()) as Float64Array, `embedding bf16 ${V}x${C}`);
    assert.throws(() => embedding(mv(wt), tensor(Int32Array.from([1, V]), { shape: [2], dtype: 'int32', backend: cpu })), /embedding: index 50|embedding: index 300/);
  }
  // AdamW: three steps on the same gradients.
  for (const n of [5, 1000, 70001]) {
    const run = (backend: typeof ref) => {
      const p = tensor(noGrad(() => randn([n], { generator: new Generator(n), backend: ref }).data()), { shape: [n], backend, requiresGrad: true });
      const opt = new AdamW([p], { lr: 0.01, weightDecay: 0.1 });
      for (let s = 0; s < 3; s++) {
        p.grad = tensor(Float32Array.from({ length: n }, (_, i) => Math.sin(i + s)), { shape: [n], backend });
        opt.stepUpdate();
      }
      return p.data();
    };
    check(run(cpu) as Float32Array, run(ref) as Float64Array, `adamw n=${n}`);
  }
  return { worst, cases, kernels: cpu.describeKernels() };
}

/** This file run as a plain script (not under --test) with ATTN_TEST_ISA: one kernel set, forced by the parent. */
function child(env: Record<string, string>): ReturnType<typeof spawnSync> {
  const { NODE_TEST_CONTEXT: _, ...rest } = process.env;
  return spawnSync(process.execPath, [SELF], { encoding: 'utf8', env: { ...rest, ...env } });
}

if (ISA !== undefined) {
  console.log(JSON.stringify(await compareWithRef()));
} else {
  test('the native addon was built, and each kernel set the processor has matches ref', { skip: existsSync(ADDON) ? false : 'no native addon built here (see build/native-build.log)' }, () => {
    const info = spawnSync(process.execPath, [CLI, 'info'], { encoding: 'utf8' });
    const best = /native (avx512-bf16|avx512|avx2|portable)/.exec(info.stdout)?.[1];
    assert.ok(best, `${info.stdout}${info.stderr}${String(info.error ?? "")} status ${info.status} signal ${info.signal}`);
    const all = ['portable', 'avx2', 'avx512', 'avx512-bf16'];
    const sets = all.slice(0, all.indexOf(best!) + 1);
    for (const isa of sets) {
      const r = child({ ATTN_NATIVE_ISA: isa, ATTN_TEST_ISA: isa });
      assert.equal(r.status, 0, `${isa}: ${String(r.stdout).slice(-2000)}${String(r.stderr).slice(-2000)}`);
      const line = String(r.stdout).split('\n').find((l) => l.includes('"worst"'));
      assert.ok(line, String(r.stdout));
      const res = JSON.parse(line!.replace(/^[^{]*/, '')) as { worst: number; cases: number; kernels: string };
      assert.match(res.kernels, new RegExp(`^native ${isa}[ ,]`), 'the forced kernel set ran');
      assert.ok(res.cases >= 100 && res.worst < 2e-4, `${isa}: ${JSON.stringify(res)}`);
    }
  });

  test('ATTN_NATIVE=0: the WebAssembly kernels run, attn info says so, results match ref', () => {
    const info = spawnSync(process.execPath, [CLI, 'info'], { encoding: 'utf8', env: { ...process.env, ATTN_NATIVE: '0' } });
    assert.match(info.stdout, /backend: cpu \(WebAssembly SIMD.*native kernels not used: ATTN_NATIVE=0\)/);
    const r = child({ ATTN_NATIVE: '0', ATTN_TEST_ISA: 'wasm' });
    assert.equal(r.status, 0, String(r.stderr).slice(-2000));
    assert.match(String(r.stdout), /"kernels":"WebAssembly SIMD/);
  });

  test('the WebGPU driver\'s warnings reach the user only with --verbose', { skip: existsSync(ADDON) ? false : 'no native addon' }, () => {
    const quiet = spawnSync(process.execPath, [CLI, 'info', '--device', 'webgpu'], { encoding: 'utf8', timeout: 120_000 });
    if (quiet.status !== 0) return; // no adapter here: nothing prints warnings
    const loud = spawnSync(process.execPath, [CLI, 'info', '--device', 'webgpu', '--verbose'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(loud.status, 0, loud.stderr);
    assert.match(quiet.stdout, /^backend: webgpu/);
    assert.doesNotMatch(quiet.stderr, /Warning/);
    // What --verbose shows is whatever the driver says (this one's software adapters do warn).
    if (/Warning/.test(loud.stderr)) assert.ok(loud.stderr.length > quiet.stderr.length);
  });
}
