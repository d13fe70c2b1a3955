// DP-SGD and its accountant: per-example clipping (every clipped per-example gradient has norm
// ≤ C), σ = 0 with C = ∞ equal to the ordinary update, the noise's scale, Poisson batches, the
// RDP accountant against tools/rdp_reference.py (mpmath quadrature) and against published
// (ε, δ), and the loop reporting ε in metrics.jsonl.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gatherBatch, prepareDataset, type Batch } from '../src/data/index.js';
import { Generator, RefBackend, tensor } from '../src/index.js';
import { GPT, gptConfig } from '../src/models/gpt.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { dpUpdateStep, poissonSample } from '../src/train/dp.js';
import { updateStep, type LossSource } from '../src/train/loop.js';
import { AdamW } from '../src/train/optim.js';
import { dpSgdEpsilon, epsilonFromRdp, erfc, rdpSubsampledGaussian, TF_PRIVACY_ORDERS, DEFAULT_ORDERS, RdpAccountant } from '../src/train/rdp.js';
import { train } from '../src/tasks/lm.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/rdp_reference.json', import.meta.url));
const TEXT = readFileSync(fileURLToPath(new URL('../../data/tinyshakespeare/input.txt', import.meta.url)), 'utf8');
const ROOT = mkdtempSync(join(tmpdir(), 'attn-dp-'));
process.on('exit', () => rmSync(ROOT, { recursive: true, force: true }));

const REF = new RefBackend();
const T = 8;
const VOCAB = 11;

function tinyModel(dtype: 'float32' | 'float64' = 'float64'): GPT {
  return new GPT(gptConfig({ n_layer: 1, n_head: 2, n_embd: 8, block_size: T, vocab_size: VOCAB, dropout: 0, bias: true }), { backend: REF, dtype, seed: 3 });
}

/** 12 random sequences of T + 1 tokens laid end to end; example i is the window at i·T. */
const tokens = (() => {
  const g = new Generator(9);
  return Array.from({ length: 12 * T + 1 }, () => g.randint(VOCAB));
})();
const batchOf = (idx: readonly number[]): Batch => gatherBatch(tokens, idx.map((i) => i * T), T);

function sourceOf(model: GPT): LossSource<Batch> {
  return {
    loss(b) {
      const backend = model.parameters()[0]!.backend;
      const x = tensor(b.x, { shape: [b.batchSize, b.blockSize], dtype: 'int32', backend });
      const y = tensor(b.y, { shape: [b.batchSize, b.blockSize], dtype: 'int32', backend });
      return { loss: model.forward(x, y).loss! };
    },
  };
}

const sqNorm = (gs: Float64Array[]): number => gs.reduce((s, g) => s + g.reduce((a, v) => a + v * v, 0), 0);
const gradsOf = (params: readonly { grad: { data(): ArrayLike<number> } | null }[]): Float64Array[] => params.map((p) => Float64Array.from(p.grad ? p.grad.data() : []));

test('per-example clipping: each clipped per-example gradient has L2 norm <= C', () => {
  for (const dtype of ['float32', 'float64'] as const) {
    const model = tinyModel(dtype);
    const params = model.parameters();
    const C = 0.05;
    for (let i = 0; i < 6; i++) {
      // One example, no noise, divided by 1: the optimizer receives exactly its clipped gradient.
      const opt = new AdamW(params, { lr: 0, weightDecay: 0 });
      let seen: Float64Array[] = [];
      const origStep = opt.stepUpdate.bind(opt);
      opt.stepUpdate = () => {
        seen = gradsOf(params);
        origStep();
      };
      let before = NaN;
      dpUpdateStep(sourceOf(model), params, opt, [batchOf([i])], { clip: C, noise: 0, expectedBatchSize: 1, generator: new Generator(1), onExample: (_, n) => (before = n) });
      const after = Math.sqrt(sqNorm(seen));
      assert.ok(before > C, `example ${i}: its gradient norm ${before} should exceed C for the test to bite`);
      assert.ok(after <= C, `${dtype} example ${i}: clipped norm ${after} > C = ${C}`);
      assert.ok(after > C * (1 - 1e-5), `${dtype} example ${i}: clipped norm ${after} should be C up to the margin`);
    }
    // A batch: every example is reported clipped to <= C, and the summed result is within B·C.
    const opt = new AdamW(params, { lr: 0, weightDecay: 0 });
    let sum: Float64Array[] = [];
    const origStep = opt.stepUpdate.bind(opt);
    opt.stepUpdate = () => {
      sum = gradsOf(params);
      origStep();
    };
    const clippedNorms: number[] = [];
    const r = dpUpdateStep(sourceOf(model), params, opt, [0, 1, 2, 3, 4].map((i) => batchOf([i])), { clip: C, noise: 0, expectedBatchSize: 1, generator: new Generator(1), onExample: (_, __, c) => clippedNorms.push(c) });
    assert.equal(clippedNorms.length, 5);
    for (const c of clippedNorms) assert.ok(c <= C);
    assert.equal(r.clippedFraction, 1);
    assert.ok(Math.sqrt(sqNorm(sum)) <= 5 * C);
    model.dispose();
  }
});

test('DP-SGD with sigma = 0 and C = infinity is the ordinary AdamW update on the batch mean (float64)', () => {
  const idx = [1, 4, 5, 9];
  const a = tinyModel();
  const b = tinyModel();
  const pa = a.parameters();
  const pb = b.parameters();
  const optA = new AdamW(pa, { lr: 1e-2, weightDecay: 0.1 });
  const optB = new AdamW(pb, { lr: 1e-2, weightDecay: 0.1 });
  let gB: Float64Array[] = [];
  for (let step = 0; step < 3; step++) {
    const r = dpUpdateStep(sourceOf(a), pa, optA, idx.map((i) => batchOf([i])), { clip: Infinity, noise: 0, expectedBatchSize: idx.length, generator: new Generator(1) });
    const u = updateStep(sourceOf(b), pb, optB, [batchOf(idx)], { gradClip: 0, transforms: [(ps) => void (gB = gradsOf(ps))] });
    assert.ok(gB.length > 0);
    assert.ok(Math.abs(r.values[0]! - u.values[0]!) < 1e-12, `step ${step}: DP mean loss ${r.values[0]} vs batch loss ${u.values[0]}`);
    assert.ok(Math.abs(r.gradNorm - u.gradNorm) < 1e-12 * Math.max(1, u.gradNorm), `step ${step}: gradient norm ${r.gradNorm} vs ${u.gradNorm}`);
    assert.equal(r.clippedFraction, 0);
  }
  pa.forEach((p, i) => {
    const x = p.data();
    const y = pb[i]!.data();
    for (let j = 0; j < x.length; j++) assert.ok(Math.abs(x[j]! - y[j]!) < 1e-12, `parameter ${i}[${j}]: ${x[j]} vs ${y[j]}`);
  });
  a.dispose();
  b.dispose();
});

test('the noise has standard deviation sigma*C / expected batch size, and an empty batch still steps', () => {
  const model = tinyModel('float32');
  const params = model.parameters();
  const opt = new AdamW(params, { lr: 0, weightDecay: 0 });
  let seen: Float64Array[] = [];
  const origStep = opt.stepUpdate.bind(opt);
  opt.stepUpdate = () => {
    seen = gradsOf(params);
    origStep();
  };
  const sigma = 1.5;
  const C = 0.2;
  const denom = 3;
  const r = dpUpdateStep(sourceOf(model), params, opt, [], { clip: C, noise: sigma, expectedBatchSize: denom, generator: new Generator(5) });
  assert.equal(r.batchSize, 0);
  const all = seen.flatMap((g) => Array.from(g));
  const n = all.length;
  const mean = all.reduce((s, v) => s + v, 0) / n;
  const sd = Math.sqrt(all.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1));
  const want = (sigma * C) / denom;
  assert.ok(n > 500, `${n} coordinates`);
  assert.ok(Math.abs(sd - want) < (4 * want) / Math.sqrt(2 * n), `noise sd ${sd} vs ${want} over ${n} coordinates`);
  assert.ok(Math.abs(mean) < (4 * want) / Math.sqrt(n));
  assert.throws(() => dpUpdateStep(sourceOf(model), params, opt, [], { clip: Infinity, noise: 1, expectedBatchSize: 1, generator: new Generator(5) }), /finite clipping norm/);
  assert.throws(() => dpUpdateStep(sourceOf(model), params, opt, [], { clip: 0, noise: 1, expectedBatchSize: 1, generator: new Generator(5) }), /clipping norm C must be positive/);
  model.dispose();
});

test('Poisson sampling: each example independently with probability q', () => {
  const g = new Generator(2);
  const n = 2000;
  const q = 0.05;
  const counts = new Array<number>(n).fill(0);
  let total = 0;
  const rounds = 200;
  for (let r = 0; r < rounds; r++) {
    const s = poissonSample(n, q, g);
    total += s.length;
    for (const i of s) counts[i]!++;
    for (let k = 1; k < s.length; k++) assert.ok(s[k]! > s[k - 1]!);
  }
  const mean = total / rounds;
  assert.ok(Math.abs(mean - q * n) < 4 * Math.sqrt((q * (1 - q) * n) / rounds), `mean batch ${mean} vs ${q * n}`);
  // First and second half of the examples are drawn alike (no position bias).
  const half = (a: number, b: number): number => counts.slice(a, b).reduce((s, v) => s + v, 0);
  assert.ok(Math.abs(half(0, n / 2) - half(n / 2, n)) < 4 * Math.sqrt(total));
  assert.throws(() => poissonSample(10, 1.5, g), /sampling rate q/);
});

test('erfc against known values', () => {
  // Abramowitz & Stegun Table 7.1 values of erfc.
  for (const [x, v] of [[0, 1], [0.5, 0.4795001221869535], [1, 0.15729920705028513], [2, 0.004677734981047266], [3, 2.209049699858544e-5], [5, 1.5374597944280349e-12], [-1, 1.8427007929497148]] as const) {
    assert.ok(Math.abs(erfc(x) - v) <= 1e-13 * Math.max(v, 1e-300) + 1e-16, `erfc(${x}) = ${erfc(x)}, want ${v}`);
  }
});

interface Fixture {
  rdp: { q: number; sigma: number; alpha: number; rdp: number }[];
  epsilon: { q: number; sigma: number; steps: number; delta: number; orders: 'opacus' | 'tf2019'; conversion: 'classic' | 'improved'; epsilon: number; order: number }[];
}

test('RDP of the subsampled Gaussian matches the mpmath quadrature of tools/rdp_reference.py (integer and fractional orders)', () => {
  const fx = JSON.parse(readFileSync(FIXTURE, 'utf8')) as Fixture;
  assert.ok(fx.rdp.length >= 90);
  let fractional = 0;
  for (const c of fx.rdp) {
    const got = rdpSubsampledGaussian(c.q, c.sigma, c.alpha);
    if (!Number.isInteger(c.alpha)) fractional++;
    // log A_α is the log of a sum near 1: double precision leaves a few ulps of 1 (~1e-15) absolute.
    assert.ok(Math.abs(got - c.rdp) <= 1e-9 * Math.abs(c.rdp) + 2e-15 / (c.alpha - 1), `q ${c.q} σ ${c.sigma} α ${c.alpha}: ${got} vs reference ${c.rdp}`);
  }
  assert.ok(fractional >= 30);
  for (const c of fx.epsilon) {
    const got = dpSgdEpsilon(c.q, c.sigma, c.steps, c.delta, { orders: c.orders === 'opacus' ? DEFAULT_ORDERS : TF_PRIVACY_ORDERS, conversion: c.conversion });
    assert.ok(Math.abs(got.epsilon - c.epsilon) < 1e-7 * c.epsilon, `${JSON.stringify(c)}: ε ${got.epsilon}`);
    assert.equal(got.order, c.order);
  }
});

test('the accountant reproduces published (epsilon, delta) figures', () => {
  const q = 256 / 60000;
  const classic = { orders: TF_PRIVACY_ORDERS, conversion: 'classic' as const };
  const steps = (epochs: number): number => Math.floor((epochs * 60000) / 256);
  // TensorFlow Privacy, tutorials/README.md, "Select Parameters" table (MNIST, N = 60000, batch 256, δ = 1e-5).
  const tf: [number, number, number, number][] = [[1.12, 60, 2.92, 0.005], [1.2, 10, 1.20, 0.005], [0.6, 30, 9.74, 0.04]];
  for (const [sigma, epochs, published, tol] of tf) {
    const e = dpSgdEpsilon(q, sigma, steps(epochs), 1e-5, classic).epsilon;
    assert.ok(Math.abs(e - published) <= tol, `σ ${sigma}, ${epochs} epochs: ε ${e} vs published ${published}`);
  }
  // Bu, Dong, Long and Su 2020 ("Deep Learning with Gaussian Differential Privacy"), Figure 4: the
  // moments accountant gives (1.34, 1e-5) for σ = 1.3 at epoch 20, (8.68, 1e-5) for σ = 0.7 at epoch 70.
  assert.ok(Math.abs(dpSgdEpsilon(q, 1.3, steps(20), 1e-5, classic).epsilon - 1.34) <= 0.011);
  assert.ok(Math.abs(dpSgdEpsilon(q, 0.7, steps(70), 1e-5, classic).epsilon - 8.68) <= 0.005);
  // Abadi et al. 2016, §3.1: q = 0.01, σ = 4, δ = 1e-5, T = 10000 gives ε ≈ 1.26 by the moments accountant.
  assert.ok(Math.abs(dpSgdEpsilon(0.01, 4, 10000, 1e-5, classic).epsilon - 1.26) <= 0.005);
});

test('accountant edge cases and the improved conversion is never worse than the classic one', () => {
  assert.equal(rdpSubsampledGaussian(0, 1, 2), 0);
  assert.ok(Math.abs(rdpSubsampledGaussian(1, 2, 3) - 3 / 8) < 1e-15); // the full-batch Gaussian: α/(2σ²)
  assert.throws(() => rdpSubsampledGaussian(0.1, 1, 1), /order α/);
  assert.throws(() => epsilonFromRdp([2], [1], 0), /δ must be in/);
  const acc = new RdpAccountant(0.01, 1.1, 1e-5);
  assert.equal(acc.epsilon().epsilon, 0);
  let prev = 0;
  for (let k = 0; k < 5; k++) {
    acc.step(100);
    const e = acc.epsilon().epsilon;
    assert.ok(e > prev);
    prev = e;
    const c = dpSgdEpsilon(0.01, 1.1, acc.steps, 1e-5, { conversion: 'classic' }).epsilon;
    assert.ok(e <= c + 1e-12);
  }
});

test('attn train with dp_clip/dp_noise: Poisson batches and epsilon in metrics.jsonl as training goes', async () => {
  const data = join(ROOT, 'dp_char');
  const text = TEXT.slice(0, 12000);
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: data, valFraction: 0.1 });
  const out = join(ROOT, 'dp_run');
  const cfg = {
    out_dir: out, dataset: data, device: 'ref', n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, batch_size: 4, dropout: 0,
    learning_rate: 1e-2, max_iters: 6, eval_interval: 3, eval_iters: 1, log_interval: 1, seed: 3, dp_clip: 1, dp_noise: 1.1, dp_delta: 1e-5,
  };
  await train(cfg);
  const recs = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>).filter((r) => r['dp_epsilon'] !== undefined);
  assert.equal(recs.length, 6);
  const n = Math.floor((Math.floor(text.length * 0.9) - 1) / 16);
  for (const r of recs) {
    const q = 4 / n;
    assert.ok(Math.abs(r['dp_q']! - q) < 1e-12, `q ${r['dp_q']} vs ${q}`);
    const want = dpSgdEpsilon(q, 1.1, r['step']! + 1, 1e-5).epsilon;
    assert.ok(Math.abs(r['dp_epsilon']! - want) < 1e-12, `step ${r['step']}: ε ${r['dp_epsilon']} vs ${want}`);
    assert.ok(r['dp_clipped']! >= 0 && r['dp_clipped']! <= 1);
  }
  assert.ok(recs[5]!['dp_epsilon']! > recs[0]!['dp_epsilon']!);
  // Exact resume continues the Poisson draws and the noise: resume at 3 → the same weights as straight through.
  const out2 = join(ROOT, 'dp_run2');
  await train({ ...cfg, out_dir: out2, max_iters: 3, lr_decay_iters: 6, warmup_iters: 0 });
  await train({ ...cfg, out_dir: out2, init_from: 'resume', max_iters: 6, lr_decay_iters: 6, warmup_iters: 0 });
  const out3 = join(ROOT, 'dp_run3');
  await train({ ...cfg, out_dir: out3, max_iters: 6, lr_decay_iters: 6, warmup_iters: 0 });
  const a = readFileSync(join(out2, 'last', 'model.safetensors'));
  const b = readFileSync(join(out3, 'last', 'model.safetensors'));
  assert.ok(a.equals(b), 'resumed DP run differs from the uninterrupted one');
  await assert.rejects(train({ ...cfg, out_dir: join(ROOT, 'bad'), dp_sample_rate: 1.5 }), /dp_sample_rate must be in/);
});
