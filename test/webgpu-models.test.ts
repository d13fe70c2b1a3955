// Issue #6: every model family gives the results of cpu on webgpu, from the same weights (same
// seed: weights are drawn on the host, dropout masks on each backend from the same hash). Per family on tiny configs: the loss
// and every parameter gradient (float32, ~1e-4 relative), then a few AdamW steps with matching
// losses; generation (KV cache, linear attention's running state, seq2seq greedy and beam) gives
// the same tokens; and one train + sample run through the real CLI on webgpu.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import { Generator, getBackend, liveTensorCount, tensor, tidy, type Tensor } from '../src/index.js';
import type { WebGPUBackend } from '../src/backend/webgpu/index.js';
import { GPT, type GPTConfig } from '../src/models/gpt.js';
import { EncoderDecoder, type Seq2SeqConfig } from '../src/models/seq2seq.js';
import { BertModel, IGNORE_INDEX, padBatch, type BertConfig } from '../src/models/bert.js';
import type { Module } from '../src/nn/module.js';
import { applyLora } from '../src/nn/lora.js';
import { AdamW } from '../src/train/optim.js';
import { generate } from '../src/generate/index.js';
import { beamSearch, greedyDecode } from '../src/generate/beam.js';
import { webgpu } from './webgpu-helpers.js';

const LOSS_RTOL = 1e-4;
const GRAD_RTOL = 1e-4;

interface RunResult {
  loss: number;
  grads: Map<string, Float32Array | Float64Array>;
  stepLosses: number[];
}

/** Loss and gradients of a fresh model, then `steps` AdamW updates with their losses. */
function runModel(model: Module, lossFn: () => Tensor, steps = 3): RunResult {
  const loss = tidy(() => {
    const l = lossFn();
    l.backward();
    return l.item();
  });
  const grads = new Map<string, Float32Array | Float64Array>();
  for (const [n, p] of model.namedParameters()) {
    if (p.grad) grads.set(n, p.grad.data() as Float32Array | Float64Array);
  }
  model.zeroGrad();
  const params = model.parameters().filter((p) => p.requiresGrad);
  const opt = new AdamW(params, { lr: 1e-2, weightDecay: 0.1 });
  const stepLosses: number[] = [];
  for (let s = 0; s < steps; s++) {
    opt.zeroGrad();
    stepLosses.push(tidy(() => {
      const l = lossFn();
      l.backward();
      return l.item();
    }));
    opt.stepUpdate();
  }
  opt.zeroGrad();
  for (const st of opt.stateTensors()) {
    st.m.dispose();
    st.v.dispose();
  }
  return { loss, grads, stepLosses };
}

function rel(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/**
 * Max |a - b| over the tensor relative to max |b| (elementwise relative is meaningless near 0),
 * with a floor of 1e-3 of the largest gradient of the model: some gradients are analytically
 * zero (a key projection's bias: softmax ignores a per-query constant) and hold only rounding.
 */
function gradRel(a: ArrayLike<number>, b: ArrayLike<number>, globalScale: number): number {
  let diff = 0;
  for (let i = 0; i < b.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
  return diff / Math.max(maxAbs(b), 1e-3 * globalScale, 1e-30);
}

/** Checks gpu against cpu; returns the worst relative loss and gradient differences. */
function compareRuns(what: string, gpu: RunResult, cpu: RunResult, stepRtol = 1e-4): string {
  assert.ok(Number.isFinite(cpu.loss), `${what}: finite loss`);
  assert.ok(rel(gpu.loss, cpu.loss) < LOSS_RTOL, `${what}: loss webgpu ${gpu.loss} vs cpu ${cpu.loss}`);
  assert.deepEqual([...gpu.grads.keys()], [...cpu.grads.keys()], `${what}: the same parameters get gradients`);
  assert.ok(cpu.grads.size > 0, `${what}: some gradients`);
  const globalScale = Math.max(...[...cpu.grads.values()].map(maxAbs));
  let worstGrad = 0;
  for (const [n, g] of cpu.grads) {
    const r = gradRel(gpu.grads.get(n)!, g, globalScale);
    assert.ok(r < GRAD_RTOL, `${what}: gradient of ${n} differs by ${r.toExponential(2)} of its scale`);
    worstGrad = Math.max(worstGrad, r);
  }
  let worstStep = 0;
  cpu.stepLosses.forEach((l, i) => {
    const r = rel(gpu.stepLosses[i]!, l);
    assert.ok(r < stepRtol, `${what}: AdamW step ${i} loss webgpu ${gpu.stepLosses[i]} vs cpu ${l}`);
    worstStep = Math.max(worstStep, r);
  });
  assert.ok(cpu.stepLosses.at(-1)! < cpu.stepLosses[0]!, `${what}: the loss falls over the steps (${cpu.stepLosses.join(', ')})`);
  return `${what}: loss ${rel(gpu.loss, cpu.loss).toExponential(1)}, gradients ${worstGrad.toExponential(1)}, AdamW steps ${worstStep.toExponential(1)}`;
}

function ids(rows: number[][], backend: Backend): Tensor {
  return tensor(Int32Array.from(rows.flat()), { backend, dtype: 'int32', shape: [rows.length, rows[0]!.length] });
}

function randomRows(seed: number, B: number, T: number, V: number): number[][] {
  const g = new Generator(seed);
  return Array.from({ length: B }, () => Array.from({ length: T }, () => g.randint(V)));
}

/** Scales a weight in place (sharper distributions, so greedy choices are not near-ties). */
function scaleWeight(w: Tensor, s: number): void {
  w.backend.write(w.storage, Array.from(w.data(), (x) => x * s), w.offset);
}

async function backends(t: { skip: (why: string) => void }): Promise<[Backend, Backend] | null> {
  const be = await webgpu();
  if (typeof be === 'string') {
    t.skip(be);
    return null;
  }
  return [await getBackend('cpu'), be];
}

// ---------------------------------------------------------------- GPT variants

const GPT_TINY: Partial<GPTConfig> = { n_layer: 2, n_head: 4, n_embd: 16, block_size: 16, vocab_size: 23, dropout: 0, bias: true };
const GPT_VARIANTS: [string, Partial<GPTConfig>][] = [
  ['modern (rope, rmsnorm, swiglu, no bias, untied)', { pos_encoding: 'rope', norm: 'rmsnorm', activation: 'swiglu', bias: false, tie_embeddings: false }],
  ['GQA (n_kv_head 2 of 4) + rope', { n_kv_head: 2, pos_encoding: 'rope' }],
  ['post-norm, sinusoidal', { norm_placement: 'post', pos_encoding: 'sinusoidal' }],
  ['local attention', { attention: 'local', attn_window: 4 }],
  ['strided attention', { attention: 'strided', attn_stride: 3 }],
  ['fixed attention', { attention: 'fixed', attn_stride: 4, attn_summary: 1 }],
  ['linear attention', { attention: 'linear' }],
  ['performer attention', { attention: 'performer', performer_features: 8 }],
  ['MoE (4 experts, top-2)', { moe_experts: 4, moe_top_k: 2 }],
  ['dropout 0.1 (masks drawn on the device from a seeded key, the same bits as cpu)', { dropout: 0.1 }],
];

function gptRun(backend: Backend, cfg: Partial<GPTConfig>): RunResult {
  const model = new GPT({ ...GPT_TINY, ...cfg }, { backend, seed: 5 });
  assert.ok(model.parameters().every((p) => p.backend === backend), 'the weights live on the backend');
  const x = ids(randomRows(1, 2, 12, 23), backend);
  const y = ids(randomRows(2, 2, 12, 23), backend);
  const r = runModel(model, () => model.forward(x, y).loss!);
  model.dispose();
  x.dispose();
  y.dispose();
  return r;
}

test('webgpu models: GPT variants give the loss, gradients and AdamW losses of cpu', async (t) => {
  const bs = await backends(t);
  if (!bs) return;
  const [cpu, gpu] = bs;
  const tensorsBefore = liveTensorCount();
  const buffersBefore = (gpu as WebGPUBackend).live;
  const losses = new Map<string, number>();
  for (const [name, cfg] of GPT_VARIANTS) {
    const want = gptRun(cpu, cfg);
    t.diagnostic(compareRuns(`GPT ${name}`, gptRun(gpu, cfg), want));
    losses.set(name, want.loss);
  }
  assert.equal((gpu as WebGPUBackend).live, buffersBefore, 'every device buffer was freed');
  assert.equal(liveTensorCount(), tensorsBefore, 'no tensors leak');
  // The dropout variant's masks were applied (and, the losses being equal, were the same masks).
  const dense = new GPT(GPT_TINY, { backend: cpu, seed: 5 });
  const x = ids(randomRows(1, 2, 12, 23), cpu);
  const y = ids(randomRows(2, 2, 12, 23), cpu);
  const noDropout = tidy(() => dense.forward(x, y).loss!.item());
  dense.dispose();
  const dropped = losses.get(GPT_VARIANTS.at(-1)![0])!;
  assert.ok(Math.abs(dropped - noDropout) > 1e-4, `dropout changes the loss (${dropped} vs ${noDropout})`);
});

// ---------------------------------------------------------------- GPT generation

function gptGenerate(backend: Backend, cfg: Partial<GPTConfig>, useCache: boolean): number[] {
  const model = new GPT({ ...GPT_TINY, tie_embeddings: false, ...cfg }, { backend, seed: 9 }).eval();
  // Larger attention outputs make the tokens depend on the context; a larger head avoids near-ties.
  scaleWeight(model.lm_head!.weight, 10);
  for (const b of model.transformer.h.items) scaleWeight(b.attn.c_proj.weight, 10);
  const out = generate(model, [1, 2, 3], { maxNewTokens: 10, greedy: true, useCache }).tokens;
  model.dispose();
  return out;
}

test('webgpu models: greedy GPT generation with the KV cache (dense, GQA, sparse) and the linear/performer running state equals cpu and no cache', async (t) => {
  const bs = await backends(t);
  if (!bs) return;
  const [cpu, gpu] = bs;
  for (const [name, cfg] of [
    ['dense', {}], ['GQA + rope', { n_kv_head: 2, pos_encoding: 'rope' }], ['linear attention', { attention: 'linear' }],
    ['local attention', { attention: 'local', attn_window: 4 }], ['strided attention', { attention: 'strided', attn_stride: 3 }],
    ['fixed attention', { attention: 'fixed', attn_stride: 4, attn_summary: 1 }], ['performer attention', { attention: 'performer', performer_features: 8 }],
  ] as [string, Partial<GPTConfig>][]) {
    const want = gptGenerate(cpu, cfg, false);
    assert.equal(want.length, 10);
    assert.ok(new Set(want).size > 1, `${name}: not one repeated token (${want.join(' ')})`);
    assert.deepEqual(gptGenerate(gpu, cfg, true), want, `${name}: webgpu with cache`);
    assert.deepEqual(gptGenerate(gpu, cfg, false), want, `${name}: webgpu without cache`);
    assert.deepEqual(gptGenerate(cpu, cfg, true), want, `${name}: cpu with cache`);
  }
});

// ---------------------------------------------------------------- encoder-decoder

const S2S_TINY: Partial<Seq2SeqConfig> = {
  n_layer_enc: 2, n_layer_dec: 2, n_head: 2, d_model: 16, d_ff: 32, dropout: 0, max_len: 32, vocab_size: 13,
};
// pad 0, bos 1, eos 2: rows of different lengths, padded.
const SRC = [[3, 4, 5, 6, 2], [7, 8, 2, 0, 0]];
const TGT_IN = [[1, 9, 10, 11], [1, 12, 0, 0]];
const TGT_OUT = [[9, 10, 11, 2], [12, 2, 0, 0]];

test('webgpu models: encoder-decoder loss (padding masks, label smoothing), gradients, AdamW steps', async (t) => {
  const bs = await backends(t);
  if (!bs) return;
  const run = (backend: Backend, cfg: Partial<Seq2SeqConfig>): RunResult => {
    const m = new EncoderDecoder({ ...S2S_TINY, ...cfg }, { backend, seed: 3 });
    const [src, tin, tout] = [ids(SRC, backend), ids(TGT_IN, backend), ids(TGT_OUT, backend)];
    const r = runModel(m, () => m.forward(src, tin, tout).loss!);
    m.dispose();
    return r;
  };
  for (const [name, cfg] of [['post-norm', {}], ['pre-norm', { norm_placement: 'pre' }]] as [string, Partial<Seq2SeqConfig>][]) {
    t.diagnostic(compareRuns(`seq2seq ${name}`, run(bs[1], cfg), run(bs[0], cfg)));
  }
});

test('webgpu models: encoder-decoder greedy and beam search give the tokens of cpu', async (t) => {
  const bs = await backends(t);
  if (!bs) return;
  const srcs = [[3, 4, 5, 2], [6, 7, 8, 9, 10, 2], [11, 2]];
  const decode = (backend: Backend) => {
    const m = new EncoderDecoder(S2S_TINY, { backend, seed: 21 }).eval();
    scaleWeight(m.embed.weight, 2);
    const greedy = greedyDecode(m, srcs, { maxLenB: 6 });
    const beams = beamSearch(m, srcs, { maxLenB: 6, beamSize: 3 });
    m.dispose();
    return { greedy: greedy.map((h) => h.tokens), beams: beams.map((hs) => hs.map((h) => h.tokens)), logProbs: beams.map((hs) => hs[0]!.logProb) };
  };
  const want = decode(bs[0]);
  const got = decode(bs[1]);
  assert.deepEqual(got.greedy, want.greedy, 'greedy');
  assert.deepEqual(got.beams, want.beams, 'beam search');
  got.logProbs.forEach((lp, i) => assert.ok(rel(lp, want.logProbs[i]!) < 1e-4, `beam ${i} log-prob ${lp} vs ${want.logProbs[i]}`));
  assert.ok(want.greedy.some((tk) => tk.length > 1), 'some greedy output has several tokens');
});

// ---------------------------------------------------------------- BERT-style encoder

const BERT_TINY: Partial<BertConfig> = {
  n_layer: 2, n_head: 2, d_model: 16, d_ff: 32, dropout: 0, max_len: 16, vocab_size: 20, pad_id: 0, cls_id: 1, sep_id: 2, mask_id: 3,
  n_classes: 3, classifier_dropout: 0, mlm_head: true,
};
const BERT_ROWS = [[1, 3, 6, 7, 3, 9, 2], [1, 10, 3, 12, 2]];
const MLM_LABELS = [[IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX, 8, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 11, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]];

test('webgpu models: BERT MLM and classification losses, gradients and AdamW steps equal cpu', async (t) => {
  const bs = await backends(t);
  if (!bs) return;
  const run = (backend: Backend, kind: 'mlm' | 'cls'): RunResult => {
    const m = new BertModel(BERT_TINY, { backend, seed: 4 });
    const x = padBatch(BERT_ROWS, 0, backend);
    const labels = ids(MLM_LABELS, backend);
    const y = tensor(Int32Array.from([2, 0]), { backend, dtype: 'int32', shape: [2] });
    const r = runModel(m, () => (kind === 'mlm' ? m.mlmLoss(x, labels).loss : m.classifyLoss(x, y).loss));
    m.dispose();
    return r;
  };
  for (const kind of ['mlm', 'cls'] as const) t.diagnostic(compareRuns(`BERT ${kind}`, run(bs[1], kind), run(bs[0], kind)));
});

// ---------------------------------------------------------------- LoRA

test('webgpu models: LoRA on GPT: only the adapters get gradients, equal to cpu', async (t) => {
  const bs = await backends(t);
  if (!bs) return;
  const run = (backend: Backend): RunResult & { adapters: string[] } => {
    const model = new GPT({ ...GPT_TINY, tie_embeddings: false }, { backend, seed: 3 });
    const h = applyLora(model, { rank: 2, alpha: 4, targets: ['c_attn', 'attn.c_proj'], seed: 1 });
    // B starts at zero: random values make A's gradients non-zero too.
    const g = new Generator(8);
    for (const l of h.layers) l.B.backend.write(l.B.storage, Array.from({ length: l.B.size }, () => 0.05 * g.normal()), l.B.offset);
    const x = ids(randomRows(1, 2, 12, 23), backend);
    const y = ids(randomRows(2, 2, 12, 23), backend);
    const r = runModel(model, () => model.forward(x, y).loss!);
    const adapters = model.namedParameters().filter(([, p]) => h.trainableParameters().includes(p)).map(([n]) => n);
    model.dispose();
    return { ...r, adapters };
  };
  const want = run(bs[0]);
  const got = run(bs[1]);
  assert.equal(want.adapters.length, 8);
  assert.deepEqual([...got.grads.keys()].sort(), [...want.adapters].sort(), 'exactly the adapters have gradients on webgpu');
  t.diagnostic(compareRuns('LoRA GPT', got, want));
});

// ---------------------------------------------------------------- the CLI

test('webgpu models: the CLI trains and samples with --device webgpu', async (t) => {
  const bs = await backends(t);
  if (!bs) return;
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'attn-webgpu-cli-'));
  try {
    const out = join(dir, 'run');
    const tr = spawnSync(process.execPath, [main, 'train', '--preset', 'shakespeare-char-tiny', '--device', 'webgpu', '--max_iters', '3', '--eval_interval', '3',
      '--eval_iters', '1', '--n_layer', '1', '--n_embd', '32', '--n_head', '2', '--block_size', '16', '--batch_size', '2', '--out', out], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(tr.status, 0, `train failed:\n${tr.stdout}\n${tr.stderr}`);
    assert.match(tr.stdout + tr.stderr, /step 3: train loss [\d.]+, val loss [\d.]+/);
    for (const f of ['best/config.json', 'best/model.safetensors', 'last/model.safetensors', 'metrics.jsonl']) assert.ok(existsSync(join(out, f)), `${f} exists`);
    const sa = spawnSync(process.execPath, [main, 'sample', '--model', join(out, 'best'), '--device', 'webgpu', '--max_new_tokens', '5'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(sa.status, 0, `sample failed:\n${sa.stdout}\n${sa.stderr}`);
    assert.ok(sa.stdout.trim().length > 0, 'sample prints text');
    // Weights stored as float16: greedy text from the half model; cpu refuses the option.
    const greedy = ['sample', '--model', join(out, 'best'), '--max_new_tokens', '8', '--temperature', '0'];
    const half = spawnSync(process.execPath, [main, ...greedy, '--device', 'webgpu', '--dtype', 'float16'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(half.status, 0, `sample --dtype float16 failed:\n${half.stdout}\n${half.stderr}`);
    assert.match(half.stderr, /weights stored as float16: [\d.]+ MiB saved/);
    assert.ok(half.stdout.trim().length > 0, 'the half model prints text');
    const onCpu = spawnSync(process.execPath, [main, ...greedy, '--device', 'cpu', '--dtype', 'float16'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(onCpu.status, 2);
    assert.match(onCpu.stderr, /--dtype float16 needs a backend that stores it \(float16: --device webgpu; bfloat16: --device cpu\); this is cpu/);
    // int8 weights on webgpu (the quantized kernels), and a dtype that does not exist.
    const q = spawnSync(process.execPath, [main, ...greedy, '--device', 'webgpu', '--dtype', 'int8'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(q.status, 0, `sample --dtype int8 failed:\n${q.stdout}\n${q.stderr}`);
    assert.match(q.stderr, /weights quantized to int8: 4 matrices/);
    assert.ok(q.stdout.trim().length > 0, 'the int8 model prints text');
    const bad = spawnSync(process.execPath, [main, ...greedy, '--dtype', 'int3'], { encoding: 'utf8', timeout: 60_000 });
    assert.match(bad.stderr, /--dtype must be one of float32, float16, bfloat16, int8, int4, int4z, got 'int3'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
