// GPT and the nn modules under it: config validation, parameter names and counts, shapes,
// loss at init, KV-cache decoding against the full forward, every variant's gradients
// (checked against a float64 finite difference along a random direction), and training.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Generator, noGrad, RefBackend, tensor, tidy, type Tensor,
} from '../src/index.js';
import { GPT, GPT2_CONFIG, gptConfig, type GPTConfig } from '../src/models/gpt.js';
import {
  Dropout, KVCache, LayerNorm, Linear, MLP, Module, ModuleList, RotaryEmbedding, SinusoidalPositionalEncoding,
} from '../src/nn/index.js';
import { assertClose, assertFewStepsReduceLoss, checkDirectionalGradient, randomIds, TINY_GPT } from './helpers.js';

const ref = new RefBackend();
const TINY = TINY_GPT;
const ids = (B: number, T: number, V: number, seed: number): Tensor => randomIds(ref, B, T, V, seed);

// ---------------------------------------------------------------- config

test('config: GPT-2 defaults, and validation names every problem', () => {
  assert.deepEqual(gptConfig(), { ...GPT2_CONFIG });
  assert.equal(GPT2_CONFIG.vocab_size, 50257);
  const bad: [Partial<GPTConfig> & Record<string, unknown>, RegExp][] = [
    [{ n_embd: 100, n_head: 3 }, /n_embd \(100\) must be divisible by n_head \(3\)/],
    [{ n_layer: 0 }, /n_layer must be a positive integer, got 0/],
    [{ block_size: 1.5 }, /block_size must be a positive integer/],
    [{ dropout: 1 }, /dropout must be in \[0, 1\), got 1/],
    [{ pos_encoding: 'alibi' as never }, /pos_encoding must be one of 'learned', 'sinusoidal', 'rope', got 'alibi'/],
    [{ activation: 'tanh' as never }, /activation must be one of/],
    [{ n_embd: 12, n_head: 4, pos_encoding: 'rope' }, /rope needs an even head size, but n_embd \/ n_head = 3/],
    [{ layer_norm_epsilon: 0 }, /layer_norm_epsilon must be positive/],
    [{ n_heads: 4 } as never, /unknown field 'n_heads'/],
  ];
  for (const [cfg, re] of bad) {
    assert.throws(() => gptConfig(cfg), re, JSON.stringify(cfg));
    assert.throws(() => new GPT(cfg), re);
  }
  // Several problems are reported together.
  assert.throws(() => gptConfig({ n_layer: -1, dropout: 2 }), /n_layer.*; dropout/);
});

test('GPT-2 124M: 124,439,808 parameters counted without allocating; FLOPs per token', () => {
  assert.equal(GPT.countParameters(), 124_439_808);
  assert.equal(GPT.countParameters({ tie_embeddings: false }), 124_439_808 + 50257 * 768);
  // nanoGPT / PaLM: 6N (N without wpe) + 12·L·H·D·T
  assert.equal(GPT.flopsPerToken(), 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 12 * 64 * 1024);
  assert.equal(GPT.flopsPerToken({}, 256), 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 12 * 64 * 256);
});

// ---------------------------------------------------------------- structure

test('parameter names follow GPT-2; tied head has no lm_head; countParameters matches the modules', () => {
  const m = new GPT(TINY, { backend: ref });
  const names = m.namedParameters().map(([n]) => n);
  const layer = (i: number) => ['ln_1.weight', 'ln_1.bias', 'attn.c_attn.weight', 'attn.c_attn.bias', 'attn.c_proj.weight', 'attn.c_proj.bias',
    'ln_2.weight', 'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias'].map((n) => `transformer.h.${i}.${n}`);
  assert.deepEqual(names, ['transformer.wte.weight', 'transformer.wpe.weight', ...layer(0), ...layer(1), 'transformer.ln_f.weight', 'transformer.ln_f.bias']);
  assert.equal(m.parameters()[0]!.name, 'transformer.wte.weight');
  assert.deepEqual(m.transformer.h.at(0).attn.c_attn.weight.shape, [48, 16]); // (out, in) as PyTorch
  assert.equal(m.numParameters(), GPT.countParameters(TINY));
  assert.deepEqual([...m.stateDict().keys()], names);
  m.dispose();
});

test('GPT-2 initialisation: std 0.02, residual projections 0.02/sqrt(2L), zero biases, unit LN; seeded', () => {
  const cfg = { n_layer: 4, n_head: 2, n_embd: 64, block_size: 8, vocab_size: 500 };
  const m = new GPT(cfg, { backend: ref, seed: 3 });
  const std = (t: Tensor) => {
    const d = t.data();
    let s = 0;
    for (const v of d) s += v * v;
    return Math.sqrt(s / d.length);
  };
  const b = m.transformer.h.at(1);
  const mlp = b.mlp as MLP;
  assert.ok(Math.abs(std(m.transformer.wte.weight) - 0.02) < 0.001);
  assert.ok(Math.abs(std(mlp.c_fc.weight) - 0.02) < 0.001);
  const proj = 0.02 / Math.sqrt(8);
  assert.ok(Math.abs(std(b.attn.c_proj.weight) - proj) < 0.0007, `${std(b.attn.c_proj.weight)} vs ${proj}`);
  assert.ok(Math.abs(std(mlp.c_proj.weight) - proj) < 0.0005);
  assert.ok(b.attn.c_attn.bias!.toArray().every((v) => v === 0));
  assert.ok(b.ln_1.weight.toArray().every((v) => v === 1));
  const again = new GPT(cfg, { backend: ref, seed: 3 });
  const other = new GPT(cfg, { backend: ref, seed: 4 });
  assert.deepEqual((again.transformer.h.at(3).mlp as MLP).c_fc.weight.data(), (m.transformer.h.at(3).mlp as MLP).c_fc.weight.data());
  assert.notDeepEqual(other.transformer.wte.weight.data(), m.transformer.wte.weight.data());
  for (const x of [m, again, other]) x.dispose();
});

// ---------------------------------------------------------------- forward

test('forward: shapes, loss at init near ln(V), -100 targets ignored, errors name the sizes', () => {
  const m = new GPT(TINY, { backend: ref });
  tidy(() => {
    const idx = ids(4, 16, 37, 1);
    const { logits, loss } = m.forward(idx, ids(4, 16, 37, 2));
    assert.deepEqual(logits.shape, [4, 16, 37]);
    assert.deepEqual(loss!.shape, []);
    assert.ok(Math.abs(loss!.item() - Math.log(37)) < 0.05, `loss ${loss!.item()} vs ln 37 = ${Math.log(37)}`);
    assert.equal(m.forward(idx).loss, undefined);
    // Targets of -100 drop out of the mean.
    const t = ids(4, 16, 37, 2);
    const half = t.toArray().map((v, i) => (i % 2 ? -100 : v));
    const lossHalf = m.forward(idx, tensor(Int32Array.from(half), { backend: ref, shape: [4, 16] })).loss!.item();
    const rows = m.forward(idx).logits.logSoftmax(-1).data();
    let s = 0;
    half.forEach((v, i) => {
      if (v !== -100) s -= rows[i * 37 + v]!;
    });
    assert.ok(Math.abs(lossHalf - s / 32) < 1e-5);
  });
  assert.throws(() => tidy(() => m.forward(ids(1, 17, 37, 0))), /length T=17, block_size is only 16/);
  assert.throws(() => tidy(() => m.forward(tensor([[1, 2]], { backend: ref }))), /idx must be int32 \(B, T\), got float32/);
  m.dispose();
});

/** Full forward vs a prompt of 3 then one token at a time through the KV cache. */
function cachedVsFull(cfg: Partial<GPTConfig>): number {
  const m = new GPT(cfg, { backend: ref, seed: 11 }).eval();
  const [B, T, V] = [2, cfg.block_size!, cfg.vocab_size!];
  const idx = ids(B, T, V, 5);
  const cache = m.createKVCache();
  let worst = 0;
  noGrad(() =>
    tidy(() => {
      const full = m.forward(idx).logits.data(); // (B, T, V)
      let t = 0;
      for (const n of [3, ...Array<number>(T - 3).fill(1)]) {
        const step = m.forwardWithCache(idx.slice(1, t, t + n), cache).logits.data(); // (B, n, V)
        for (let b = 0; b < B; b++) {
          for (let i = 0; i < n * V; i++) worst = Math.max(worst, Math.abs(step[b * n * V + i]! - full[(b * T + t) * V + i]!));
        }
        t += n;
      }
      assert.equal(cache.length, T);
      assert.throws(() => m.forwardWithCache(idx.slice(1, 0, 1), cache), new RegExp(`${T} cached \\+ 1 new tokens = ${T + 1} exceed block_size ${T}`));
    }),
  );
  cache.dispose();
  m.dispose();
  return worst;
}

for (const pos of ['learned', 'sinusoidal', 'rope'] as const) {
  test(`KV-cached decoding equals the full forward (${pos})`, () => {
    const err = cachedVsFull({ ...TINY, block_size: 10, pos_encoding: pos });
    assert.ok(err < 1e-5, `max |cached - full| = ${err}`);
  });
}

test('KV cache also works post-norm with SwiGLU and RMSNorm, and frees its tensors', () => {
  assert.ok(cachedVsFull({ ...TINY, block_size: 8, pos_encoding: 'rope', norm_placement: 'post', norm: 'rmsnorm', activation: 'swiglu', bias: false }) < 1e-5);
  const c = new KVCache(2);
  assert.equal(c.length, 0);
  c.dispose();
});

// ---------------------------------------------------------------- variants and gradients

const VARIANTS: [string, Partial<GPTConfig>][] = [
  ['gpt-2', {}],
  ['post-norm', { norm_placement: 'post' }],
  ['rmsnorm', { norm: 'rmsnorm' }],
  ['swiglu', { activation: 'swiglu' }],
  ['relu', { activation: 'relu' }],
  ['gelu_exact', { activation: 'gelu_exact' }],
  ['no bias', { bias: false }],
  ['untied', { tie_embeddings: false }],
  ['sinusoidal', { pos_encoding: 'sinusoidal' }],
  ['rope', { pos_encoding: 'rope' }],
  ['llama-like', { pos_encoding: 'rope', norm: 'rmsnorm', activation: 'swiglu', bias: false, tie_embeddings: false }],
];

for (const [label, variant] of VARIANTS) {
  test(`variant ${label}: forward + backward reach every parameter; gradient matches finite differences`, () => {
    const cfg = { ...TINY, n_embd: 8, block_size: 6, vocab_size: 11, ...variant };
    const m = new GPT(cfg, { backend: ref, dtype: 'float64', seed: 2 });
    assert.equal(m.numParameters(), GPT.countParameters(cfg), 'countParameters');
    const names = m.namedParameters().map(([n]) => n);
    assert.equal(names.includes('lm_head.weight'), cfg.tie_embeddings === false);
    assert.equal(names.some((n) => n.endsWith('.bias')), cfg.bias !== false);
    const idx = ids(2, 6, 11, 9);
    const tgt = ids(2, 6, 11, 10);
    checkDirectionalGradient(m, () => m.forward(idx, tgt).loss!, label);
    m.dispose();
  });
}

test('a few AdamW steps reduce the loss on a tiny batch', () => {
  const m = new GPT({ ...TINY, pos_encoding: 'rope', activation: 'swiglu' }, { backend: ref, seed: 1 });
  const idx = ids(4, 16, 37, 21);
  const tgt = ids(4, 16, 37, 22);
  assertFewStepsReduceLoss(m, () => m.forward(idx, tgt).loss!);
  m.dispose();
});

test('dropout: seeded and reproducible in training mode, off in eval mode', () => {
  const cfg = { ...TINY, dropout: 0.2 };
  const a = new GPT(cfg, { backend: ref, seed: 5 });
  const b = new GPT(cfg, { backend: ref, seed: 5 });
  const idx = ids(2, 8, 37, 1);
  const tgt = ids(2, 8, 37, 2);
  const loss = (m: GPT) => noGrad(() => tidy(() => m.forward(idx, tgt).loss!.item()));
  const la = loss(a);
  assert.equal(la, loss(b));
  assert.notEqual(la, loss(a)); // fresh masks each call
  a.eval();
  assert.ok((a.transformer.h.at(1).mlp as MLP).dropout.training === false && !a.training);
  assert.equal(loss(a), loss(a));
  a.train();
  assert.ok(a.transformer.drop.training);
  a.dispose();
  b.dispose();
});

// ---------------------------------------------------------------- nn pieces

test('Module: stateDict / loadStateDict round trip, and errors for missing, unexpected and mis-shaped keys', () => {
  class Net extends Module {
    readonly fc = this.registerModule('fc', new Linear(3, 2, { backend: ref }));
    readonly ln = this.registerModule('ln', new LayerNorm(2, { backend: ref, bias: false }));
    readonly blocks = this.registerModule('blocks', new ModuleList([new Linear(2, 2, { backend: ref, bias: false })]));
  }
  const a = new Net();
  const b = new Net();
  assert.deepEqual([...a.stateDict().keys()], ['fc.weight', 'fc.bias', 'ln.weight', 'blocks.0.weight']);
  assert.equal(a.numParameters(), 6 + 2 + 2 + 4);
  assert.deepEqual(b.loadStateDict(a.stateDict()), { missingKeys: [], unexpectedKeys: [] });
  assert.deepEqual(b.fc.weight.data(), a.fc.weight.data());
  const sd = new Map<string, Tensor | { shape: number[]; data: number[] }>(a.stateDict());
  sd.delete('ln.weight');
  sd.set('extra', { shape: [1], data: [0] });
  assert.throws(() => b.loadStateDict(sd), /missing keys: ln\.weight.*unexpected keys: extra/);
  assert.deepEqual(b.loadStateDict(sd, { strict: false }), { missingKeys: ['ln.weight'], unexpectedKeys: ['extra'] });
  sd.set('fc.weight', { shape: [3, 2], data: [1, 2, 3, 4, 5, 6] });
  assert.throws(() => b.loadStateDict(sd, { strict: false }), /fc\.weight: checkpoint \[3, 2\], model \[2, 3\]/);
  assert.deepEqual(b.fc.weight.data(), a.fc.weight.data(), 'a failed load changes nothing');
  a.eval();
  assert.ok(!a.blocks.at(0).training);
  const d = new Dropout(0.5, new Generator(1));
  d.eval();
  tidy(() => {
    const x = tensor([1, 2, 3], { backend: ref });
    assert.equal(d.forward(x), x);
  });
  a.dispose();
  b.dispose();
});

test('positional encodings: the 2017 sinusoid table; RoPE rotations preserve norms and depend only on relative offset', () => {
  const pe = new SinusoidalPositionalEncoding(8, 6, { backend: ref, dtype: 'float64' });
  const row = pe.positions(1, 5).toArray();
  assertClose(row, [Math.sin(5), Math.cos(5), Math.sin(5 / 10000 ** (2 / 6)), Math.cos(5 / 10000 ** (2 / 6)), Math.sin(5 / 10000 ** (4 / 6)), Math.cos(5 / 10000 ** (4 / 6))], 1e-12, 1e-12, 'PE row 5');
  assert.throws(() => pe.positions(4, 5), /positions \[5, 9\) exceed the table of 8 positions/);

  const rope = new RotaryEmbedding(4, 16, { backend: ref, dtype: 'float64' });
  tidy(() => {
    const g = new Generator(3);
    const vec = () => tensor(Array.from({ length: 4 }, () => g.normal()), { backend: ref, dtype: 'float64', shape: [1, 1, 1, 4] });
    const q = vec();
    const k = vec();
    const dot = (a: Tensor, b: Tensor) => a.mul(b).sum().item();
    const at = (x: Tensor, p: number) => rope.apply(x, p);
    assertClose([dot(at(q, 7), at(k, 3))], [dot(at(q, 12), at(k, 8))], 1e-12, 1e-12, 'q·k depends on p_q - p_k only');
    assertClose([dot(at(q, 9), at(q, 9))], [dot(q, q)], 1e-12, 1e-12, 'rotation keeps the norm');
    // Half-split pairing: dims (0, 2) rotate together by angle p·θ₀ = p.
    const e0 = tensor([1, 0, 0, 0], { backend: ref, dtype: 'float64', shape: [1, 1, 1, 4] });
    assertClose(at(e0, 2).toArray(), [Math.cos(2), 0, Math.sin(2), 0], 1e-12, 1e-12, 'half-split');
  });
  pe.dispose();
  rope.dispose();
});
