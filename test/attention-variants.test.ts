// Attention variants of GPT: grouped-query heads, sparse patterns (local, strided, fixed),
// causal linear attention (elu+1) and Performer (FAVOR+), plus the Linformer module for encoders.
// Config validation, gradients in float64, the chunked linear form against a naive O(T²) one,
// cached generation against uncached, and a few training steps each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  concat, elu1, Generator, matmul, RefBackend, tensor, tidy, transpose, type Tensor,
} from '../src/index.js';
import { generate } from '../src/generate/index.js';
import { fullGPTConfig, GPT, GPT2_CONFIG, gptConfig, type GPTConfig } from '../src/models/gpt.js';
import {
  causalLinearAttention, LinearAttentionState, LinformerSelfAttention, orthogonalGaussianFeatures, PerformerFeatureMap,
} from '../src/nn/linear-attention.js';
import { checkpointConfigJson, gptConfigFromCheckpointJson } from '../src/models/gpt-checkpoint.js';
import { modelConfigOf, trainConfig } from '../src/tasks/lm.js';
import { assertClose, assertFewStepsReduceLoss, checkDirectionalGradient, gradcheck, randomIds, randTensor, TINY_GPT } from './helpers.js';

const ref = new RefBackend();
const TINY = TINY_GPT;
const ids = (B: number, T: number, V: number, seed: number): Tensor => randomIds(ref, B, T, V, seed);

const VARIANTS: [string, Partial<GPTConfig>][] = [
  ['gqa', { n_head: 4, n_kv_head: 2 }],
  ['mqa', { n_head: 4, n_kv_head: 1 }],
  ['local', { attention: 'local', attn_window: 3 }],
  ['strided', { attention: 'strided', attn_stride: 2 }],
  ['fixed', { attention: 'fixed', attn_stride: 3, attn_summary: 1 }],
  ['linear', { attention: 'linear' }],
  ['linear-gqa-rope', { attention: 'linear', n_head: 4, n_kv_head: 2, pos_encoding: 'rope' }],
  ['performer', { attention: 'performer', performer_features: 12, performer_redraw_interval: 0 }],
];

// ---------------------------------------------------------------- config

test('config: attention fields are optional, default to dense multi-head; errors name the problem', () => {
  assert.deepEqual(gptConfig(), { ...GPT2_CONFIG }); // GPT-2's config is unchanged
  assert.equal(fullGPTConfig(gptConfig()).attention, 'dense');
  assert.equal(fullGPTConfig(gptConfig({ n_head: 4, n_embd: 16 })).n_kv_head, 4);
  assert.equal(gptConfig({ n_head: 4, n_embd: 16, n_kv_head: 2 }).n_kv_head, 2);
  assert.equal(gptConfig({ attention: 'linear' }).attention, 'linear');
  const bad: [Partial<GPTConfig>, RegExp][] = [
    [{ attention: 'flash' as never }, /attention must be one of 'dense', 'local', 'strided', 'fixed', 'linear', 'linformer', 'performer', got 'flash'/],
    [{ n_head: 4, n_embd: 16, n_kv_head: 3 }, /n_head \(4\) must be divisible by n_kv_head \(3\)/],
    [{ n_kv_head: 0 }, /n_kv_head must be a positive integer, got 0/],
    [{ attention: 'local', attn_window: 0 }, /attn_window must be a positive integer, got 0/],
    [{ attn_stride: 1.5 }, /attn_stride must be a positive integer/],
    [{ attention: 'fixed', attn_stride: 4, attn_summary: 5 }, /attn_summary \(5\) must not exceed the block length attn_stride \(4\)/],
    [{ performer_features: 0 }, /performer_features must be a positive integer/],
    [{ performer_redraw_interval: -1 }, /performer_redraw_interval must be a non-negative integer/],
    [{ attention: 'linformer' }, /linformer projects along the sequence, so it cannot be causal; use it in an encoder/],
  ];
  for (const [cfg, re] of bad) {
    assert.throws(() => gptConfig(cfg), re, JSON.stringify(cfg));
    assert.throws(() => new GPT(cfg), re);
  }
  // TrainConfig carries the fields; n_kv_head 0 there means n_head.
  const tc = trainConfig({ n_head: 4, n_embd: 16, attention: 'performer', performer_features: 8 });
  const mc = modelConfigOf(tc, 10);
  assert.equal(fullGPTConfig(mc).n_kv_head, 4);
  assert.equal(mc.attention, 'performer');
  assert.equal(mc.performer_features, 8);
  assert.equal(modelConfigOf(trainConfig({ n_head: 4, n_embd: 16, n_kv_head: 2 }), 10).n_kv_head, 2);
  assert.throws(() => trainConfig({ n_head: 4, n_embd: 16, n_kv_head: 3 }), /n_head \(4\) must be divisible by n_kv_head \(3\)/);
  assert.throws(() => trainConfig({ attention: 'sparse' as never }), /attention must be one of/);
  assert.throws(() => trainConfig({ attention: 'linformer' }), /cannot be causal/);
  // Checkpoints: variants are not GPT-2 (model_type attn_gpt) and round-trip through "attn".
  for (const v of [{ n_kv_head: 2 }, { attention: 'performer', performer_features: 8 }] as const) {
    const c = gptConfig({ ...TINY, n_head: 4, ...v });
    const json = checkpointConfigJson(c);
    assert.equal(json['model_type'], 'attn_gpt');
    assert.deepEqual(gptConfigFromCheckpointJson(JSON.parse(JSON.stringify(json))), c);
  }
  assert.equal(checkpointConfigJson(gptConfig(TINY))['model_type'], 'gpt2');
});

test('GQA layout: c_attn makes C + 2·n_kv_head·D outputs; multi-head keeps GPT-2 names and shapes', () => {
  const mha = new GPT(TINY, { backend: ref });
  const gqa = new GPT({ ...TINY, n_head: 4, n_kv_head: 1 }, { backend: ref });
  const shapes = (m: GPT) => new Map(m.namedParameters().map(([n, p]) => [n, p.shape]));
  assert.deepEqual(shapes(mha).get('transformer.h.0.attn.c_attn.weight'), [48, 16]);
  assert.deepEqual(shapes(gqa).get('transformer.h.0.attn.c_attn.weight'), [16 + 2 * 4, 16]);
  assert.deepEqual([...shapes(mha).keys()], [...shapes(gqa).keys()]);
  assert.equal(gqa.numParameters(), GPT.countParameters(gqa.config));
  mha.dispose();
  gqa.dispose();
});

test('sparse kinds reach the kernel: a window covering the block equals dense, a short one differs', () => {
  const idx = ids(2, 16, 37, 6);
  const logits = (v: Partial<GPTConfig>) => {
    const m = new GPT({ ...TINY, ...v }, { backend: ref, dtype: 'float64', seed: 3 });
    const out = tidy(() => m.forward(idx).logits.data());
    m.dispose();
    return out;
  };
  const dense = logits({});
  assertClose(logits({ attention: 'local', attn_window: 16 }), dense, 1e-12, 1e-12, 'wide window');
  for (const v of [{ attention: 'local', attn_window: 2 }, { attention: 'strided', attn_stride: 2 }, { attention: 'fixed', attn_stride: 4, attn_summary: 1 }] as const) {
    const l = logits(v);
    let diff = 0;
    for (let i = 0; i < l.length; i++) diff = Math.max(diff, Math.abs(l[i]! - dense[i]!));
    assert.ok(diff > 1e-6, `${v.attention} equals dense`);
  }
});

// ---------------------------------------------------------------- gradients

for (const [label, variant] of VARIANTS) {
  test(`variant ${label}: every parameter gets a gradient matching finite differences (float64)`, () => {
    const cfg = { ...TINY, n_embd: 8, block_size: 6, vocab_size: 11, ...variant };
    const m = new GPT(cfg, { backend: ref, dtype: 'float64', seed: 2 });
    assert.equal(m.numParameters(), GPT.countParameters(cfg), 'countParameters');
    const idx = ids(2, 6, 11, 9);
    const tgt = ids(2, 6, 11, 10);
    // performer: the query stabiliser is treated as a constant; it cancels up to the eps of the denominator.
    checkDirectionalGradient(m, () => m.forward(idx, tgt).loss!, label, label === 'performer' ? 1e-4 : 1e-5);
    m.dispose();
  });
}

/** The causal linear form written directly: out_i = Σ_{j≤i} (φq_i·φk_j) v_j / (Σ_{j≤i} φq_i·φk_j + eps). */
function naiveCausalLinear(phiQ: Tensor, phiK: Tensor, v: Tensor, eps: number): Float64Array {
  const [B, H, T, F] = phiQ.shape as number[] as [number, number, number, number];
  const D = v.shape[3]!;
  const q = phiQ.data();
  const k = phiK.data();
  const vv = v.data();
  const out = new Float64Array(B * H * T * D);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < T; i++) {
      let den = 0;
      const num = new Float64Array(D);
      for (let j = 0; j <= i; j++) {
        let a = 0;
        for (let f = 0; f < F; f++) a += q[(bh * T + i) * F + f]! * k[(bh * T + j) * F + f]!;
        den += a;
        for (let d = 0; d < D; d++) num[d]! += a * vv[(bh * T + j) * D + d]!;
      }
      for (let d = 0; d < D; d++) out[(bh * T + i) * D + d] = num[d]! / (den + eps);
    }
  }
  return out;
}

test('chunked causal linear attention equals the naive O(T²) form, any chunk, continued from a state', () => {
  const g = new Generator(3);
  tidy(() => {
    const phiQ = elu1(randTensor([2, 3, 10, 4], ref, g));
    const phiK = elu1(randTensor([2, 3, 10, 4], ref, g));
    const v = randTensor([2, 3, 10, 5], ref, g);
    const want = naiveCausalLinear(phiQ, phiK, v, 1e-6);
    for (const chunk of [1, 3, 4, 10, 64]) {
      assertClose(causalLinearAttention(phiQ, phiK, v, { chunk }).data(), want, 1e-10, 1e-12, `chunk ${chunk}`);
    }
    // Two calls through a state equal one call over the whole sequence.
    const st = new LinearAttentionState();
    const sl = (t: Tensor, a: number, b: number) => t.slice(2, a, b);
    const first = causalLinearAttention(sl(phiQ, 0, 7), sl(phiK, 0, 7), sl(v, 0, 7), { chunk: 3, state: st });
    const second = causalLinearAttention(sl(phiQ, 7, 10), sl(phiK, 7, 10), sl(v, 7, 10), { chunk: 3, state: st });
    assert.equal(st.length, 10);
    assertClose(concat([first, second], 2).data(), want, 1e-10, 1e-12, 'through a state');
    st.dispose();
  });
  // Gradients of the chunked form.
  const q = randTensor([1, 2, 5, 3], ref, g, { requiresGrad: true });
  const k = randTensor([1, 2, 5, 3], ref, g, { requiresGrad: true });
  const v = randTensor([1, 2, 5, 2], ref, g, { requiresGrad: true });
  gradcheck('causal linear attention', (a, b, c) => causalLinearAttention(elu1(a), elu1(b), c, { chunk: 2 }), [q, k, v]);
});

test('performer: orthogonal features; φ(q)·φ(k) estimates exp(q·k/√D); chunked form equals naive', () => {
  const g = new Generator(5);
  const D = 4;
  const w = orthogonalGaussianFeatures(6, D, g); // one full block of 4 rows and 2 of the next
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < i; j++) {
      let dot = 0;
      for (let c = 0; c < D; c++) dot += w[i * D + c]! * w[j * D + c]!;
      assert.ok(Math.abs(dot) < 1e-9, `rows ${i}, ${j} not orthogonal: ${dot}`);
    }
  }
  const fm = new PerformerFeatureMap(D, 8192, { backend: ref, dtype: 'float64', generator: new Generator(1) });
  tidy(() => {
    const q = randTensor([1, 1, 3, D], ref, g, { scale: 0.5 });
    const k = randTensor([1, 1, 3, D], ref, g, { scale: 0.5 });
    // φ(q) is scaled by its own row stabiliser; compare ratios across keys, where it cancels.
    const est = matmul(fm.forward(q, true), transpose(fm.forward(k, false))).data(); // (3, 3)
    const exact = matmul(q, transpose(k)).data().map((x) => Math.exp(x / Math.sqrt(D)));
    for (let i = 0; i < 3; i++) {
      for (let j = 1; j < 3; j++) {
        const r = est[i * 3 + j]! / est[i * 3]!;
        const e = exact[i * 3 + j]! / exact[i * 3]!;
        assert.ok(Math.abs(r / e - 1) < 0.1, `ratio ${r} vs ${e}`);
      }
    }
    const small = new PerformerFeatureMap(D, 6, { backend: ref, dtype: 'float64', generator: new Generator(2) });
    const x = randTensor([2, 2, 9, D], ref, g);
    const y = randTensor([2, 2, 9, D], ref, g);
    const v = randTensor([2, 2, 9, 3], ref, g);
    const pq = small.forward(x, true);
    const pk = small.forward(y, false);
    assertClose(causalLinearAttention(pq, pk, v, { chunk: 4 }).data(), naiveCausalLinear(pq, pk, v, 1e-6), 1e-10, 1e-12, 'performer chunked');
    small.dispose();
  });
  fm.dispose();
});

test('performer: features are a saved buffer, redrawn every performer_redraw_interval training forwards, fixed in eval', () => {
  const m = new GPT({ ...TINY, attention: 'performer', performer_features: 8, performer_redraw_interval: 2 }, { backend: ref, seed: 1 });
  const name = 'transformer.h.0.attn.feature_map.omega';
  assert.ok(m.stateDict().has(name), 'omega is in the state dict');
  assert.ok(!m.namedParameters().some(([n]) => n === name), 'omega is not a parameter');
  const omega = () => Array.from(m.stateDict().get(name)!.data());
  const idx = ids(1, 8, 37, 1);
  const w0 = omega();
  tidy(() => m.forward(idx));
  tidy(() => m.forward(idx));
  assert.deepEqual(omega(), w0, 'unchanged before the interval');
  tidy(() => m.forward(idx)); // the third call starts with a redraw
  const w1 = omega();
  assert.notDeepEqual(w1, w0);
  m.eval();
  for (let i = 0; i < 4; i++) tidy(() => m.forward(idx));
  assert.deepEqual(omega(), w1, 'fixed in eval mode');
  m.redrawFeatures(new Generator(9));
  assert.notDeepEqual(omega(), w1);
  // Same seed, same features.
  const again = new GPT(m.config, { backend: ref, seed: 1 });
  assert.deepEqual(Array.from(again.stateDict().get(name)!.data()), w0);
  m.dispose();
  again.dispose();
});

// ---------------------------------------------------------------- generation

const GEN: [string, Partial<GPTConfig>][] = [
  ['dense gqa', { n_head: 4, n_kv_head: 2 }],
  ['local', { attention: 'local', attn_window: 4 }],
  ['strided', { attention: 'strided', attn_stride: 3 }],
  ['fixed', { attention: 'fixed', attn_stride: 4, attn_summary: 2 }],
  ['linear', { attention: 'linear' }],
  ['linear rope', { attention: 'linear', pos_encoding: 'rope' }],
  ['performer', { attention: 'performer', performer_features: 16 }],
];

for (const [label, variant] of GEN) {
  test(`generation ${label}: cached logits match the full forward; greedy with the cache equals without`, () => {
    const m = new GPT({ ...TINY, ...variant }, { backend: ref, dtype: 'float64', seed: 3 }).eval();
    const idx = ids(2, 12, 37, 4);
    tidy(() => {
      const full = m.forward(idx).logits; // (2, 12, V)
      const cache = m.createKVCache();
      const parts = [m.forwardWithCache(idx.slice(1, 0, 5), cache).logits];
      for (let t = 5; t < 12; t++) parts.push(m.forwardWithCache(idx.slice(1, t, t + 1), cache).logits);
      assertClose(concat(parts, 1).data(), full.data(), 1e-9, 1e-10, `${label} cached logits`);
      cache.dispose();
    });
    const prompt = [1, 5, 9];
    const a = generate(m, prompt, { greedy: true, maxNewTokens: 25, useCache: true });
    const b = generate(m, prompt, { greedy: true, maxNewTokens: 25, useCache: false });
    assert.deepEqual(a.tokens, b.tokens);
    m.dispose();
  });
}

// ---------------------------------------------------------------- training

for (const [label, variant] of VARIANTS) {
  test(`variant ${label}: a few AdamW steps reduce the loss`, () => {
    const m = new GPT({ ...TINY, ...variant, performer_redraw_interval: 5 }, { backend: ref, seed: 1 });
    const idx = ids(4, 16, 37, 21);
    const tgt = ids(4, 16, 37, 22);
    assertFewStepsReduceLoss(m, () => m.forward(idx, tgt).loss!, label);
    m.dispose();
  });
}

// ---------------------------------------------------------------- linformer

test('linformer: shapes, padded positions do not leak, gradients match finite differences', () => {
  const g = new Generator(8);
  const att = new LinformerSelfAttention(8, 2, 6, 3, { backend: ref, dtype: 'float64', generator: new Generator(1), std: 0.3 });
  const mask = tensor(Int32Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]), { backend: ref, shape: [2, 6] });
  tidy(() => {
    const x = randTensor([2, 6, 8], ref, g);
    const y = att.forward(x, mask);
    assert.deepEqual(y.shape, [2, 6, 8]);
    // Changing the padded tokens of row 1 changes nothing at its real positions, nor in row 0.
    const x2d = x.data().slice();
    for (let t = 4; t < 6; t++) for (let c = 0; c < 8; c++) x2d[(6 + t) * 8 + c] = 10 * g.normal();
    const y2 = att.forward(tensor(x2d, { backend: ref, dtype: 'float64', shape: [2, 6, 8] }), mask).data();
    const y1 = y.data();
    for (let i = 0; i < 6 * 8 + 4 * 8; i++) assert.ok(Math.abs(y1[i]! - y2[i]!) < 1e-12, `output ${i} depends on padding`);
    // Shorter sequences use the first T columns of E and F.
    assert.deepEqual(att.forward(randTensor([1, 4, 8], ref, g)).shape, [1, 4, 8]);
    assert.throws(() => att.forward(randTensor([1, 7, 8], ref, g)), /exceeds maxLen 6/);
  });
  const x = randTensor([2, 4, 8], ref, g, { requiresGrad: true });
  const m4 = tensor(Int32Array.from([1, 1, 1, 1, 1, 1, 1, 0]), { backend: ref, shape: [2, 4] });
  gradcheck('linformer input', (a) => att.forward(a, m4), [x]);
  tidy(() => att.forward(x, m4).sum().backward());
  for (const [n, p] of att.namedParameters()) assert.ok(p.grad && p.grad.data().some((v) => v !== 0), `${n} got no gradient`);
  att.dispose();
});
