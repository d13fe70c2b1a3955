// GPT with mixture-of-experts layers: config validation, parameter names and counts (total
// vs active), loss = cross-entropy + aux, float64 gradients through the whole model, KV-cached
// generation, and the trainer (metrics, checkpoint reload, resume).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDataset } from '../src/data/index.js';
import { generate } from '../src/generate/index.js';
import { crossEntropy, Generator, noGrad, RefBackend, softmax, tensor, tidy, type Tensor } from '../src/index.js';
import { GPT, GPT2_CONFIG, gptConfig, type GPTConfig } from '../src/models/gpt.js';
import { gpt2ConfigToHF } from '../src/models/hf-gpt2.js';
import type { MoE } from '../src/nn/moe.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import type { MetricsRecord } from '../src/eval/plot.js';
import { checkpointConfigJson, loadGPTCheckpoint } from '../src/models/gpt-checkpoint.js';
import { train, trainConfig, type TrainConfig } from '../src/tasks/lm.js';
import { gradcheck, randomArray } from './helpers.js';

const ref = new RefBackend();
const TINY: Partial<GPTConfig> = { n_layer: 2, n_head: 2, n_embd: 8, block_size: 8, vocab_size: 11, bias: false };

test('config: defaults stay GPT-2; moe fields are validated with clear messages', () => {
  assert.deepEqual(gptConfig(), GPT2_CONFIG);
  const bad: [Partial<GPTConfig>, RegExp][] = [
    [{ moe_experts: -1 }, /moe_experts must be a non-negative integer/],
    [{ moe_experts: 2.5 }, /moe_experts must be a non-negative integer/],
    [{ moe_experts: 4, moe_top_k: 3 as 1 }, /moe_top_k must be 1 or 2/],
    [{ moe_experts: 1, moe_top_k: 2 }, /moe_top_k \(2\) must not exceed moe_experts \(1\)/],
    [{ moe_experts: 4, moe_capacity_factor: 0 }, /moe_capacity_factor must be a positive finite number/],
    [{ moe_experts: 4, moe_aux_loss_coef: -1 }, /moe_aux_loss_coef must be a non-negative/],
    [{ moe_experts: 4, moe_every: 0 }, /moe_every must be a positive integer/],
    [{ moe_experts: 4, moe_every: 3 }, /moe_every \(3\) exceeds n_layer \(2\)/],
    [{ moe_experts: 4, moe_hidden: 0 }, /moe_hidden must be a positive integer/],
  ];
  for (const [over, re] of bad) assert.throws(() => gptConfig({ ...TINY, ...over }), re, JSON.stringify(over));
  assert.doesNotThrow(() => gptConfig({ ...TINY, moe_experts: 4, moe_top_k: 2, moe_every: 2 }));
  // Trainer fields.
  assert.throws(() => trainConfig({ moe_top_k: 3 as 1 }), /moe_top_k must be 1 or 2/);
  assert.throws(() => trainConfig({ moe_experts: -2 }), /moe_experts must be a non-negative integer/);
  assert.throws(() => trainConfig({ moe_capacity_factor: 0 }), /moe_capacity_factor must be a positive number/);
  assert.throws(() => trainConfig({ n_layer: 2, moe_experts: 4, moe_every: 4 }), /moe_every \(4\) exceeds n_layer/);
  // Not GPT-2: refused by gpt2ConfigToHF, saved as attn_gpt.
  const moe = gptConfig({ ...TINY, bias: true, moe_experts: 4 });
  assert.throws(() => gpt2ConfigToHF(moe), /moe_experts 4/);
  assert.throws(() => gpt2ConfigToHF({ ...TINY, bias: true, attention: 'local' }), /attention 'local'/);
  assert.throws(() => gpt2ConfigToHF({ ...TINY, bias: true, n_kv_head: 1 }), /n_kv_head 1/);
  assert.equal(checkpointConfigJson(moe)['model_type'], 'attn_gpt');
  assert.equal(checkpointConfigJson(gptConfig({ ...TINY, bias: true }))['model_type'], 'gpt2');
});

test('parameter names; counts: total vs active, dense vs top-2 of 8 at matching active parameters', () => {
  const C = 8;
  const L = 2;
  const m = new GPT({ ...TINY, moe_experts: 3, moe_every: 2 }, { backend: ref });
  const names = m.namedParameters().map(([n]) => n);
  assert.ok(names.includes('transformer.h.0.mlp.c_fc.weight'), 'layer 0 stays dense');
  for (const n of ['router.weight', 'experts.0.c_fc.weight', 'experts.2.c_proj.weight']) assert.ok(names.includes(`transformer.h.1.mlp.${n}`), n);
  assert.ok(!names.includes('transformer.h.1.mlp.router.bias'));
  assert.deepEqual(m.moeLayers().map(([i]) => i), [1]);
  assert.equal(m.numParameters(), GPT.countParameters(m.config));

  const dense = { ...TINY };
  const moe = { ...TINY, moe_experts: 8, moe_top_k: 2 as const };
  const d = new GPT(dense, { backend: ref });
  const e = new GPT(moe, { backend: ref });
  assert.equal(d.numParameters(), GPT.countParameters(dense));
  assert.equal(e.numParameters(), GPT.countParameters(moe));
  assert.equal(GPT.countActiveParameters(dense), GPT.countParameters(dense));
  // Half-width experts (2C): two of them hold the dense MLP's 8C² weights; the router adds C·E.
  assert.equal((e.transformer.h.at(0).mlp as MoE).hidden, 2 * C);
  assert.equal(GPT.countActiveParameters(moe), GPT.countParameters(dense) + L * C * 8);
  assert.equal(GPT.countParameters(moe), GPT.countParameters(dense) + L * (C * 8 + 6 * 4 * C * C));
  assert.equal(GPT.flopsPerToken(moe), GPT.flopsPerToken(dense) + 6 * L * C * 8);
  // SwiGLU with biases and an explicit width.
  const sw = { ...TINY, bias: true, activation: 'swiglu' as const, moe_experts: 3, moe_hidden: 5 };
  const s = new GPT(sw, { backend: ref });
  assert.equal(s.numParameters(), GPT.countParameters(sw));
  const expert = 2 * (C * 5 + 5) + 5 * C + C;
  assert.equal(GPT.countParameters(sw) - GPT.countActiveParameters(sw), L * 2 * expert);
  for (const x of [m, d, e, s]) x.dispose();
});

/** Overwrites each router with N(0, 1) weights, so routing decisions are far from ties. */
function sharpenRouters(m: GPT, g: Generator): void {
  for (const [, moe] of m.moeLayers()) {
    const w = moe.router.weight;
    w.backend.write(w.storage, randomArray(w.size, g), 0);
  }
}

/** Smallest gap between the top k+1 router probabilities of any token in any MoE layer. */
function routingGap(m: GPT, run: () => void, k: number): number {
  let gap = Infinity;
  const restore: (() => void)[] = [];
  for (const [, moe] of m.moeLayers()) {
    const router = moe.router;
    const orig = router.forward.bind(router);
    router.forward = (x: Tensor): Tensor => {
      const y = orig(x);
      const p = softmax(y, -1).data();
      const E = moe.numExperts;
      for (let n = 0; n < p.length / E; n++) {
        const s = Array.from(p.slice(n * E, n * E + E)).sort((a, b) => b - a);
        for (let j = 0; j < k; j++) gap = Math.min(gap, s[j]! - s[j + 1]!);
      }
      return y;
    };
    restore.push(() => {
      router.forward = orig;
    });
  }
  try {
    run();
  } finally {
    for (const r of restore) r();
  }
  return gap;
}

function ids(values: number[], B: number, T: number): Tensor {
  return tensor(Int32Array.from(values), { backend: ref, dtype: 'int32', shape: [B, T] });
}

for (const k of [1, 2] as const) {
  test(`top-${k}: loss = ce + aux; float64 gradcheck through the GPT (routing well separated)`, () => {
    const B = 2;
    const T = 6;
    const cfg: Partial<GPTConfig> = { ...TINY, moe_experts: 4, moe_top_k: k, moe_capacity_factor: 1, moe_hidden: 6, moe_aux_loss_coef: 0.1 };
    let found: { m: GPT; x: Tensor; y: Tensor } | null = null;
    for (let seed = 1; seed < 100 && !found; seed++) {
      const g = new Generator(500 + seed);
      const m = new GPT(cfg, { backend: ref, dtype: 'float64', seed });
      sharpenRouters(m, g);
      const x = ids(Array.from({ length: B * T }, () => Math.floor(g.random() * 11)), B, T);
      const y = ids(Array.from({ length: B * T }, () => Math.floor(g.random() * 11)), B, T);
      const gap = routingGap(m, () => noGrad(() => tidy(() => void m.forward(x, y))), k);
      const used = m.moeLayers().every(([, moe]) => moe.lastRouting!.tokens.filter((t) => t.length > 0).length >= 2);
      const drops = m.moeLayers().some(([, moe]) => moe.lastStats!.dropped > 0);
      if (gap > 0.02 && used && drops) found = { m, x, y };
      else m.dispose();
    }
    assert.ok(found, 'no well-separated seed');
    const { m, x, y } = found;

    tidy(() => {
      const out = noGrad(() => m.forward(x, y));
      const aux = m.moeLayers().reduce((s, [, moe]) => s + moe.lastAuxLoss!.item(), 0);
      assert.ok(out.auxLoss && out.ceLoss);
      assert.ok(Math.abs(out.auxLoss.item() - aux) < 1e-14);
      assert.ok(aux > 0);
      assert.ok(Math.abs(out.ceLoss.item() - crossEntropy(out.logits, y).item()) < 1e-14);
      assert.ok(Math.abs(out.loss!.item() - (out.ceLoss.item() + aux)) < 1e-14);
    });
    // Dense: loss and ceLoss agree, no auxLoss.
    const dense = new GPT(TINY, { backend: ref, dtype: 'float64' });
    tidy(() => {
      const out = noGrad(() => dense.forward(x, y));
      assert.equal(out.auxLoss, undefined);
      assert.equal(out.loss!.item(), out.ceLoss!.item());
    });
    dense.dispose();

    // Parameters on every path: embeddings, attention, routers, an expert with tokens in each layer.
    const params: Tensor[] = [m.transformer.wte.weight, m.transformer.h.at(0).attn.c_attn.weight];
    for (const [, moe] of m.moeLayers()) {
      params.push(moe.router.weight);
      const e = moe.lastRouting!.tokens.findIndex((t) => t.length > 0);
      params.push(moe.experts.at(e).c_fc.weight, moe.experts.at(e).c_proj.weight);
    }
    gradcheck(`gpt moe top-${k}`, () => m.forward(x, y).loss!, params, { rtol: 1e-5, atol: 1e-8 });
    m.dispose();
  });
}

test('KV-cached greedy generation equals uncached (eval: no capacity drops)', () => {
  const m = new GPT({ ...TINY, block_size: 24, moe_experts: 4, moe_top_k: 2, moe_capacity_factor: 0.5 }, { backend: ref, seed: 3 });
  sharpenRouters(m, new Generator(9));
  m.eval();
  const prompt = [1, 4, 2, 7];
  const a = generate(m, prompt, { greedy: true, maxNewTokens: 16, useCache: true });
  const b = generate(m, prompt, { greedy: true, maxNewTokens: 16, useCache: false });
  assert.deepEqual(a.tokens, b.tokens);
  assert.equal(a.tokens.length, 16);
  m.dispose();
});

test('trainer: metrics carry moe_util / moe_dropped / ce_loss; checkpoint reloads and resumes exactly', async () => {
  const root = mkdtempSync(join(tmpdir(), 'attn-moe-'));
  try {
    const g = new Generator(4);
    const words = ['the', 'king', 'of', 'a', 'moe', 'gate', 'routes', 'tokens', 'to', 'experts'];
    const text = Array.from({ length: 4000 }, () => words[Math.floor(g.random() * words.length)]).join(' ');
    const data = join(root, 'data');
    await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: data });
    const cfg = (out: string, extra: Partial<TrainConfig> = {}): Partial<TrainConfig> => ({
      out_dir: join(root, out), dataset: data, device: 'ref', n_layer: 2, n_head: 2, n_embd: 16, block_size: 8, batch_size: 4,
      bias: false, learning_rate: 1e-2, min_lr: 1e-3, warmup_iters: 1, lr_decay_iters: 6, max_iters: 6, eval_interval: 3, eval_iters: 2,
      moe_experts: 4, moe_top_k: 2, moe_every: 2, moe_capacity_factor: 1, seed: 5, ...extra,
    });
    await train(cfg('straight'));
    const recs = readFileSync(join(root, 'straight', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as MetricsRecord);
    const steps = recs.filter((r) => r.train_loss !== undefined);
    assert.equal(steps.length, 6);
    for (const r of steps) {
      assert.deepEqual(Object.keys(r.moe_util!), ['1']);
      assert.equal(r.moe_util!['1']!.length, 4);
      assert.ok(Math.abs(r.moe_util!['1']!.reduce((a, b) => a + b, 0) - 1) < 1e-9);
      assert.ok(r.moe_dropped!['1']! >= 0 && r.moe_dropped!['1']! < 1);
      assert.ok(r.moe_aux_loss! > 0);
      assert.ok(Math.abs(r.ce_loss! + r.moe_aux_loss! - r.train_loss!) < 1e-5, `${r.ce_loss} + ${r.moe_aux_loss} vs ${r.train_loss}`);
    }

    const dir = join(root, 'straight', 'last');
    assert.equal(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')).model_type, 'attn_gpt');
    const loaded = await loadGPTCheckpoint(dir, { backend: ref });
    assert.equal(loaded.config.moe_experts, 4);
    assert.deepEqual(loaded.model.moeLayers().map(([i]) => i), [1]);
    assert.equal(loaded.model.numParameters(), GPT.countParameters(loaded.config));
    loaded.model.dispose();

    await train(cfg('split', { max_iters: 3 }));
    await train(cfg('split', { init_from: 'resume' }));
    const weights = (out: string) => readFileSync(join(root, out, 'last', 'model.safetensors'));
    assert.ok(weights('split').equals(weights('straight')), 'resumed weights are bitwise equal');
    const losses = (out: string) => readFileSync(join(root, out, 'metrics.jsonl'), 'utf8').trim().split('\n')
      .map((l) => JSON.parse(l) as MetricsRecord).map((r) => [r.step, r.train_loss, r.moe_util, r.val_loss]);
    assert.deepEqual(losses('split'), losses('straight'));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
