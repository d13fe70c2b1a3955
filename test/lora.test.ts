// LoRA adapters on a small GPT: identity at init, only adapters train, merging, saving and
// loading adapters on their own, a float64 gradient check, errors, and the cpu backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from '../src/backend/backend.js';
import { AdamW, Generator, getBackend, noGrad, RefBackend, tensor, tidy, type DType, type Tensor } from '../src/index.js';
import { GPT, type GPTConfig } from '../src/models/gpt.js';
import { Linear } from '../src/nn/layers.js';
import { Module } from '../src/nn/module.js';
import { adapterState, applyLora, loadAdapterState, mergeLora, removeLora, type LoraHandle } from '../src/nn/lora.js';
import { ADAPTER_CONFIG_FILE, loadAdapters, saveAdapters, type AdapterConfig } from '../src/nn/lora-files.js';
import { assertClose, gradcheck, randTensor } from './helpers.js';

const ref = new RefBackend();
const TINY: Partial<GPTConfig> = { n_layer: 2, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 37, tie_embeddings: false };

function ids(B: number, T: number, V: number, seed: number, backend: Backend = ref): Tensor {
  const g = new Generator(seed);
  return tensor(Int32Array.from({ length: B * T }, () => g.randint(V)), { backend, shape: [B, T] });
}

function logitsOf(model: GPT, idx: Tensor): Float32Array | Float64Array {
  return noGrad(() => tidy(() => model.forward(idx).logits.data())) as Float32Array | Float64Array;
}

function assertExactlyEqual(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`${what}: element ${i}: ${a[i]} vs ${b[i]}`);
}

/** Sets every lora_B to small random values (as if trained), so the adapters matter. */
function randomizeB(h: LoraHandle, seed: number): void {
  const g = new Generator(seed);
  for (const l of h.layers) {
    const v = Array.from({ length: l.B.size }, () => 0.05 * g.normal());
    l.B.backend.write(l.B.storage, v, l.B.offset);
  }
}

function makeModel(dtype: DType, backend: Backend = ref, cfg: Partial<GPTConfig> = TINY): GPT {
  return new GPT(cfg, { backend, dtype, seed: 3 }).eval();
}

for (const dtype of ['float32', 'float64'] as const) {
  const tol = dtype === 'float32' ? 1e-5 : 1e-12;

  test(`lora ${dtype}: identity at init, names, counts, only adapters get gradients`, () => {
    const model = makeModel(dtype);
    const idx = ids(2, 8, 37, 1);
    const before = logitsOf(model, idx);
    const namesBefore = model.namedParameters().map(([n]) => n);
    const h = applyLora(model, { rank: 4, alpha: 8, targets: ['c_attn', 'attn.c_proj'] });
    assert.deepEqual(h.layers.map((l) => l.name), [
      'transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj', 'transformer.h.1.attn.c_attn', 'transformer.h.1.attn.c_proj',
    ]);
    const names = model.namedParameters().map(([n]) => n);
    assert.ok(names.includes('transformer.h.0.attn.c_attn.lora_A'));
    assert.ok(names.includes('transformer.h.1.attn.c_proj.lora_B'));
    assert.equal(names.length, namesBefore.length + 8);
    assert.deepEqual(h.layers[0]!.A.shape, [4, 16]);
    assert.deepEqual(h.layers[0]!.B.shape, [48, 4]);
    assert.equal(h.layers[0]!.A.dtype, dtype);
    assertExactlyEqual(logitsOf(model, idx), before, 'logits at init');

    const adapterValues = 2 * (4 * 16 + 48 * 4) + 2 * (4 * 16 + 16 * 4);
    const { trainable, total } = h.counts();
    assert.equal(trainable, adapterValues);
    assert.equal(total, model.numParameters());
    assert.match(h.summary(), /^trainable params: 768 of [\d,]+ \(\d+\.\d+%\)$/);

    const targets = ids(2, 8, 37, 2);
    tidy(() => model.forward(idx, targets).loss!.backward());
    const adapters = new Set(h.trainableParameters());
    for (const [n, p] of model.namedParameters()) {
      if (adapters.has(p)) assert.ok(p.grad, `${n} has a gradient`);
      else assert.equal(p.grad, null, `${n} (frozen) has no gradient`);
    }
    // B is zero, so A's gradient is zero and B's is not.
    assert.ok(h.layers[0]!.B.grad!.toArray().some((v) => v !== 0));
    model.dispose();
  });

  test(`lora ${dtype}: AdamW on adapters changes the output; merge matches; names restored`, () => {
    const model = makeModel(dtype);
    const idx = ids(2, 8, 37, 1);
    const targets = ids(2, 8, 37, 2);
    const base = logitsOf(model, idx);
    const namesBefore = model.namedParameters().map(([n]) => n);
    const weightBefore = model.transformer.wte.weight.data();
    const h = applyLora(model, { rank: 2, alpha: 4, targets: /\.(c_attn|c_fc)$/, dropout: 0.1, seed: 5 });
    assert.equal(h.layers.length, 4);
    const opt = new AdamW(h.trainableParameters(), { lr: 1e-2, weightDecay: 0 });
    model.train();
    const loss0 = tidy(() => model.forward(idx, targets).loss!.item());
    for (let s = 0; s < 5; s++) {
      opt.zeroGrad();
      tidy(() => model.forward(idx, targets).loss!.backward());
      opt.stepUpdate();
    }
    model.eval();
    const adapted = logitsOf(model, idx);
    assert.ok(adapted.some((v, i) => Math.abs(v - base[i]!) > 1e-4), 'training the adapters changed the logits');
    assert.ok(tidy(() => model.forward(idx, targets).loss!.item()) < loss0, 'loss went down');
    // Frozen weights did not move.
    assertExactlyEqual(model.transformer.wte.weight.data(), weightBefore, 'wte unchanged');

    mergeLora(h);
    assert.equal(h.isActive, false);
    assert.deepEqual(model.namedParameters().map(([n]) => n), namesBefore);
    assert.deepEqual([...model.stateDict().keys()].filter((k) => k.includes('lora')), []);
    assert.ok(model.parameters().every((p) => p.requiresGrad), 'requiresGrad restored');
    assertClose(logitsOf(model, idx), adapted, 0, tol, 'merged vs adapters');
    assert.throws(() => h.trainableParameters(), /already merged or removed/);
    model.dispose();
  });

  test(`lora ${dtype}: adapters save and load into a fresh copy of the base`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'attn-lora-'));
    try {
      const model = makeModel(dtype);
      const idx = ids(1, 10, 37, 4);
      const h = applyLora(model, { rank: 3, alpha: 6, targets: ['mlp.c_fc', 'mlp.c_proj', 'lm_head'], dropout: 0.05 });
      randomizeB(h, 9);
      const expected = logitsOf(model, idx);
      await saveAdapters(h, dir, { baseModel: 'tiny' });
      const cfg = JSON.parse(await readFile(join(dir, ADAPTER_CONFIG_FILE), 'utf8')) as AdapterConfig;
      assert.equal(cfg.peft_type, 'LORA');
      assert.equal(cfg.r, 3);
      assert.equal(cfg.lora_alpha, 6);
      assert.equal(cfg.lora_dropout, 0.05);
      assert.deepEqual(cfg.target_modules, ['mlp.c_fc', 'mlp.c_proj', 'lm_head']);
      assert.equal(cfg.base_model_name_or_path, 'tiny');
      assert.equal(cfg.base_model?.class, 'GPT');
      assert.equal(cfg.base_model?.num_parameters, makeModel(dtype).numParameters());
      assert.equal(cfg.modules?.length, 5);
      assert.deepEqual([...adapterState(h).keys()].slice(0, 2), ['transformer.h.0.mlp.c_fc.lora_A', 'transformer.h.0.mlp.c_fc.lora_B']);

      const fresh = makeModel(dtype);
      const h2 = await loadAdapters(fresh, dir);
      assert.equal(h2.scale, 2);
      assertExactlyEqual(logitsOf(fresh.eval(), idx), expected, 'loaded adapters');
      // And into a model of the other dtype (values converted).
      const other = makeModel(dtype === 'float32' ? 'float64' : 'float32');
      await loadAdapters(other, dir);
      assertClose(logitsOf(other, idx), expected, 0, 1e-5, 'other dtype');
      model.dispose();
      fresh.dispose();
      other.dispose();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('lora: float64 gradcheck of the adapted Linear (x, A, B; base frozen)', () => {
  const g = new Generator(11);
  const net = new Module();
  const lin = net.registerModule('proj', new Linear(5, 4, { backend: ref, dtype: 'float64', generator: g }));
  const h = applyLora(net, { rank: 3, alpha: 5, targets: /^proj$/, seed: 2 });
  assert.deepEqual(net.namedParameters().map(([n]) => n), ['proj.weight', 'proj.bias', 'proj.lora_A', 'proj.lora_B']);
  randomizeB(h, 12);
  const x = randTensor([2, 3, 5], ref, g, { requiresGrad: true });
  gradcheck('lora linear', (xx) => lin.forward(xx), [x, h.layers[0]!.A, h.layers[0]!.B]);
  assert.equal(lin.weight.grad, null);
  assert.equal(lin.bias!.grad, null);
});

test('lora: errors', async () => {
  const model = makeModel('float32');
  assert.throws(() => applyLora(model, { rank: 0, targets: ['c_attn'] }), /rank must be a positive integer, got 0/);
  assert.throws(() => applyLora(model, { rank: 1.5, targets: ['c_attn'] }), /rank must be a positive integer/);
  assert.throws(() => applyLora(model, { rank: 2, targets: ['q_proj'] }),
    /no module matches targets \['q_proj'\]; Linear modules include: transformer\.h\.0\.attn\.c_attn, transformer\.h\.0\.attn\.c_proj/);
  assert.throws(() => applyLora(model, { rank: 2, targets: ['attn'] }), /not Linear: transformer\.h\.0\.attn \(CausalSelfAttention\)/);
  assert.throws(() => applyLora(model, { rank: 2, targets: [] }), /non-empty list/);
  assert.throws(() => applyLora(model, { rank: 2, targets: ['c_attn'], dropout: 1 }), /dropout must be in \[0, 1\)/);
  // Nothing was changed by the failed calls.
  assert.ok(model.parameters().every((p) => p.requiresGrad));
  const h = applyLora(model, { rank: 2, targets: ['c_attn'] });
  assert.throws(() => applyLora(model, { rank: 2, targets: ['c_attn'] }), /already has LoRA adapters/);
  assert.throws(() => loadAdapterState(h, new Map([['transformer.h.0.attn.c_attn.lora_A', { shape: [3, 16], data: new Float32Array(48) }]])),
    /tensor transformer\.h\.0\.attn\.c_attn\.lora_A has shape \[3, 16\] in the adapters but \[2, 16\] in the model/);

  const dir = await mkdtemp(join(tmpdir(), 'attn-lora-'));
  try {
    await saveAdapters(h, dir);
    removeLora(h);
    assert.ok(model.parameters().every((p) => p.requiresGrad));
    // Same module names, other widths: the shape mismatch names the tensor, the model stays as it was.
    const wide = makeModel('float32', ref, { ...TINY, n_embd: 24 });
    const names = wide.namedParameters().map(([n]) => n);
    await assert.rejects(loadAdapters(wide, dir), /loadAdapters .*: lora: cannot load adapters: tensor transformer\.h\.0\.attn\.c_attn\.lora_A has shape \[2, 16\] in the adapters but \[2, 24\] in the model/);
    assert.deepEqual(wide.namedParameters().map(([n]) => n), names);
    assert.ok(wide.parameters().every((p) => p.requiresGrad));
    // Fewer layers: modules missing.
    const shallow = makeModel('float32', ref, { ...TINY, n_layer: 1 });
    await assert.rejects(loadAdapters(shallow, dir), /adapts modules this model does not have: transformer\.h\.1\.attn\.c_attn/);
    await assert.rejects(loadAdapters(shallow, join(dir, 'nope')), /does not exist/);
    wide.dispose();
    shallow.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  model.dispose();
});

test('lora: cpu backend (identity at init, training step, merge)', async () => {
  const cpu = await getBackend('cpu');
  const model = makeModel('float32', cpu);
  const idx = ids(2, 8, 37, 1, cpu);
  const targets = ids(2, 8, 37, 2, cpu);
  const base = logitsOf(model, idx);
  const h = applyLora(model, { rank: 4, targets: ['c_attn', 'c_fc'] });
  assertExactlyEqual(logitsOf(model, idx), base, 'cpu logits at init');
  const opt = new AdamW(h.trainableParameters(), { lr: 1e-2 });
  for (let s = 0; s < 3; s++) {
    opt.zeroGrad();
    tidy(() => model.forward(idx, targets).loss!.backward());
    opt.stepUpdate();
  }
  for (const [n, p] of model.namedParameters()) if (!n.includes('lora')) assert.equal(p.grad, null, n);
  const adapted = logitsOf(model, idx);
  assert.ok(adapted.some((v, i) => v !== base[i]));
  mergeLora(h);
  assertClose(logitsOf(model, idx), adapted, 0, 1e-5, 'cpu merged');
  model.dispose();
});
