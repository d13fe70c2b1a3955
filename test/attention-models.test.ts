// The `attention` field in the encoder-decoder and the encoder models: every variant trains
// (finite loss, a finite gradient on every parameter) on the ref and cpu backends; local with a
// window covering the sequence equals dense; cached decoding equals recomputing the prefix;
// unknown variants and a linformer decoder are refused with reasons; the bidirectional linear
// attention matches finite differences and a direct evaluation; the fields survive a checkpoint's
// config.json round trip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { elu1, Generator, getBackend, noGrad, RefBackend, tensor, tidy, type Backend, type Tensor } from '../src/index.js';
import { EncoderDecoder, EncoderModel, SEQ2SEQ_FIELDS, seq2seqConfig, type Seq2SeqConfig } from '../src/models/seq2seq.js';
import { BertModel, bertConfig, type BertConfig } from '../src/models/bert.js';
import { gptConfig } from '../src/models/gpt.js';
import type { AttentionFields } from '../src/nn/attention-config.js';
import { linearAttention } from '../src/nn/linear-attention.js';
import { greedyDecode } from '../src/generate/beam.js';
import { bertCheckpointConfig } from '../src/models/bert-checkpoint.js';
import { seq2seqConfigJson } from '../src/models/seq2seq-checkpoint.js';
import { finetuneConfig } from '../src/tasks/classification.js';
import { pretrainConfig } from '../src/tasks/masked-lm.js';
import { modelConfigFor, seq2seqTrainConfig } from '../src/tasks/translation.js';
import { assertClose, gradcheck, randTensor } from './helpers.js';

const ref = new RefBackend();
const TINY: Partial<Seq2SeqConfig> = {
  n_layer_enc: 2, n_layer_dec: 2, n_head: 2, d_model: 8, d_ff: 16, dropout: 0, max_len: 16, vocab_size: 11,
};

const VARIANTS: [string, AttentionFields][] = [
  ['dense', { attention: 'dense' }],
  ['local', { attention: 'local', attn_window: 2 }],
  ['strided', { attention: 'strided', attn_stride: 2 }],
  ['fixed', { attention: 'fixed', attn_stride: 3, attn_summary: 1 }],
  ['linear', { attention: 'linear' }],
  ['performer', { attention: 'performer', performer_features: 8 }],
  ['linformer', { attention: 'linformer', linformer_k: 4 }],
];

function ids(rows: number[][], backend: Backend): Tensor {
  return tensor(Int32Array.from(rows.flat()), { backend, dtype: 'int32', shape: [rows.length, rows[0]!.length] });
}

/** Every parameter has a gradient, all finite. */
function checkGrads(named: [string, Tensor][], what: string): void {
  assert.ok(named.length > 0);
  for (const [name, p] of named) {
    assert.ok(p.grad, `${what}: ${name} has no gradient`);
    const g = p.grad.data();
    for (let i = 0; i < g.length; i++) assert.ok(Number.isFinite(g[i]!), `${what}: ${name} gradient ${i} is ${g[i]}`);
  }
}

// Rows padded with pad_id 0, so the key masks are exercised.
const SRC = [[3, 4, 5, 6, 7, 2], [8, 9, 2, 0, 0, 0]];
const TGT_IN = [[1, 5, 4, 3, 6], [1, 9, 8, 0, 0]];
const TGT_OUT = [[5, 4, 3, 6, 2], [9, 8, 2, 0, 0]];

for (const backendName of ['ref', 'cpu'] as const) {
  test(`every attention variant: encoder and encoder-decoder forward + backward (${backendName})`, async () => {
    const backend = backendName === 'ref' ? ref : await getBackend('cpu');
    for (const [name, fields] of VARIANTS) {
      tidy(() => {
        const enc = new EncoderModel({ ...TINY, n_layer: 2, ...fields } as never, { backend, seed: 1 });
        enc.train();
        const { hidden, mask } = enc.forward(ids(SRC, backend));
        assert.deepEqual(hidden.shape, [2, 6, 8]);
        const loss = hidden.mul(hidden).mean();
        assert.ok(Number.isFinite(loss.item()), `${name}: encoder loss ${loss.item()}`);
        loss.backward();
        checkGrads(enc.namedParameters(), `${name} encoder (${backendName})`);
        assert.deepEqual([...mask.data()], [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);

        const bert = new BertModel({ n_layer: 1, n_head: 2, d_model: 8, d_ff: 16, dropout: 0, max_len: 16, vocab_size: 11, n_classes: 2, mlm_head: false, ...fields } as Partial<BertConfig>, { backend, seed: 2 });
        const { loss: bl } = bert.classifyLoss(ids(SRC, backend), tensor(Int32Array.from([0, 1]), { backend, dtype: 'int32', shape: [2] }));
        assert.ok(Number.isFinite(bl.item()), `${name}: bert loss`);
        bl.backward();
        checkGrads(bert.namedParameters(), `${name} bert (${backendName})`);

        if (name === 'linformer') {
          assert.throws(() => new EncoderDecoder({ ...TINY, ...fields }), /cannot be used in the decoder.*cannot be causal/);
          return;
        }
        const m = new EncoderDecoder({ ...TINY, ...fields }, { backend, seed: 1 });
        m.train();
        const out = m.forward(ids(SRC, backend), ids(TGT_IN, backend), ids(TGT_OUT, backend));
        assert.ok(Number.isFinite(out.loss!.item()), `${name}: seq2seq loss ${out.loss!.item()}`);
        out.loss!.backward();
        checkGrads(m.namedParameters(), `${name} encoder-decoder (${backendName})`);
      });
    }
  });
}

test('local attention with a window covering the sequence equals dense', async () => {
  for (const backend of [ref, await getBackend('cpu')]) {
    tidy(() => noGrad(() => {
      const dense = new EncoderDecoder({ ...TINY }, { backend, seed: 3 });
      const local = new EncoderDecoder({ ...TINY, attention: 'local', attn_window: 16 }, { backend, seed: 3 });
      const narrow = new EncoderDecoder({ ...TINY, attention: 'local', attn_window: 2 }, { backend, seed: 3 });
      for (const m of [dense, local, narrow]) m.eval();
      const a = dense.forward(ids(SRC, backend), ids(TGT_IN, backend)).logits.data();
      const b = local.forward(ids(SRC, backend), ids(TGT_IN, backend)).logits.data();
      assertClose(b, a, 0, 1e-6, `encoder-decoder local vs dense (${backend.name})`);
      const c = narrow.forward(ids(SRC, backend), ids(TGT_IN, backend)).logits.data();
      assert.ok(Array.from(c).some((x, i) => Math.abs(x - a[i]!) > 1e-4), 'a narrow window changes the result');

      const ed = new EncoderModel({ ...TINY, n_layer: 2 } as never, { backend, seed: 4 });
      const el = new EncoderModel({ ...TINY, n_layer: 2, attention: 'local', attn_window: 6 } as never, { backend, seed: 4 });
      assertClose(el.forward(ids(SRC, backend)).hidden.data(), ed.forward(ids(SRC, backend)).hidden.data(), 0, 1e-6, `encoder local vs dense (${backend.name})`);
    }));
  }
});

test('decoder: cached decoding equals recomputing the full prefix, for every causal variant', () => {
  const src = [[3, 4, 5, 6, 2], [7, 8, 2, 0, 0]];
  for (const [name, fields] of VARIANTS) {
    if (name === 'linformer') continue;
    tidy(() => noGrad(() => {
      const m = new EncoderDecoder({ ...TINY, ...fields }, { backend: ref, dtype: 'float64', seed: 5 });
      m.eval();
      const enc = m.encode(ids(src, ref));
      const prefix = [[1, 5, 4, 3, 6, 7], [1, 9, 8, 3, 4, 5]];
      const full = m.decode(ids(prefix, ref), enc); // (2, 6, V)
      const V = TINY.vocab_size!;
      const cache = m.createCache();
      try {
        // One token, then two at once, then the rest: the cache must not care how steps are cut.
        const cuts = [[0, 1], [1, 3], [3, 6]];
        for (const [a, b] of cuts) {
          const step = m.decodeStep(ids(prefix.map((r) => r.slice(a, b)), ref), enc, cache); // (2, b - a, V)
          const want = full.slice(1, a!, b!).contiguous().data();
          assertClose(step.data(), want, 1e-9, 1e-9, `${name} positions ${a}..${b}`);
          assert.equal(step.size, 2 * (b! - a!) * V);
        }
        // Beam-style reordering of the cache rows (self and cross) keeps it consistent.
        cache.reorder([1, 0]);
        const encSwap = m.encode(ids([src[1]!, src[0]!], ref));
        const next = m.decodeStep(ids([[6], [2]], ref), encSwap, cache).data();
        const cache2 = m.createCache();
        try {
          m.decodeStep(ids([prefix[1]!, prefix[0]!], ref), encSwap, cache2);
          const want = m.decodeStep(ids([[6], [2]], ref), encSwap, cache2).data();
          assertClose(next, want, 1e-9, 1e-9, `${name} after reorder`);
        } finally {
          cache2.dispose();
        }
      } finally {
        cache.dispose();
      }
      const withCache = greedyDecode(m, src, { maxLenB: 8, useCache: true });
      const without = greedyDecode(m, src, { maxLenB: 8, useCache: false });
      assert.deepEqual(withCache.map((h) => h.tokens), without.map((h) => h.tokens), `${name} greedy`);
      for (let i = 0; i < src.length; i++) assert.ok(Math.abs(withCache[i]!.logProb - without[i]!.logProb) < 1e-9);
    }));
  }
});

test('unknown attention variants list the known ones; linformer is refused in a decoder with the reason', () => {
  const known = /attention must be one of 'dense', 'local', 'strided', 'fixed', 'linear', 'linformer', 'performer', got 'flash'/;
  assert.throws(() => seq2seqConfig({ attention: 'flash' as never }), known);
  assert.throws(() => new EncoderDecoder({ ...TINY, attention: 'flash' as never }), known);
  assert.throws(() => new EncoderModel({ ...TINY, n_layer: 1, attention: 'flash' as never } as never), known);
  assert.throws(() => bertConfig({ attention: 'flash' as never }), known);
  assert.throws(() => gptConfig({ attention: 'flash' as never }), known);
  const refused = /attention 'linformer' cannot be used in the decoder.*linformer projects along the sequence, so it cannot be causal; use it in an encoder/;
  assert.throws(() => seq2seqConfig({ attention: 'linformer' }), refused);
  assert.throws(() => gptConfig({ attention: 'linformer' }), /cannot be used in GPT: linformer projects along the sequence/);
  assert.doesNotThrow(() => bertConfig({ attention: 'linformer' }));
  assert.doesNotThrow(() => new EncoderModel({ ...TINY, n_layer: 1, attention: 'linformer', linformer_k: 4 } as never, { init: false }));
  // The other fields are checked as in GPT.
  assert.throws(() => seq2seqConfig({ attention: 'fixed', attn_stride: 4, attn_summary: 5 }), /attn_summary \(5\) must not exceed the block length attn_stride \(4\)/);
  assert.throws(() => bertConfig({ attn_window: 0 }), /attn_window must be a positive integer, got 0/);
  assert.throws(() => seq2seqConfig({ performer_redraw_interval: -1 }), /performer_redraw_interval must be a non-negative integer/);
  // Absent fields stay absent: configs written before the field existed are unchanged.
  assert.equal('attention' in seq2seqConfig(), false);
  assert.equal('attention' in bertConfig(), false);
});

test('bidirectional linear attention: finite differences, a direct evaluation, padded keys left out', () => {
  const g = new Generator(11);
  const [B, H, T, D] = [2, 2, 4, 3];
  const q = randTensor([B, H, T, D], ref, g, { requiresGrad: true });
  const k = randTensor([B, H, T, D], ref, g, { requiresGrad: true });
  const v = randTensor([B, H, T, D], ref, g, { requiresGrad: true });
  const mask = tensor(Int32Array.from([1, 1, 1, 1, 1, 1, 0, 0]), { backend: ref, dtype: 'int32', shape: [B, T] });
  gradcheck('linear attention', (a, b, c) => linearAttention(elu1(a), elu1(b), c, { keyMask: mask }), [q, k, v]);
  gradcheck('linear attention, no mask', (a, b, c) => linearAttention(elu1(a), elu1(b), c), [q, k, v]);

  // Direct: out_i = Σ_j s_ij v_j / Σ_j s_ij with s_ij = φ(q_i)·φ(k_j) over unmasked j.
  const out = noGrad(() => linearAttention(elu1(q), elu1(k), v, { keyMask: mask })).data();
  const phi = (x: number) => (x > 0 ? x + 1 : Math.exp(x));
  const [qd, kd, vd, md] = [q.data(), k.data(), v.data(), mask.data()];
  const want = new Float64Array(out.length);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < T; i++) {
    const base = (b * H + h) * T;
    let den = 0;
    const num = new Float64Array(D);
    for (let j = 0; j < T; j++) {
      if (!md[b * T + j]) continue;
      let s = 0;
      for (let d = 0; d < D; d++) s += phi(qd[(base + i) * D + d]!) * phi(kd[(base + j) * D + d]!);
      den += s;
      for (let d = 0; d < D; d++) num[d] += s * vd[(base + j) * D + d]!;
    }
    for (let d = 0; d < D; d++) want[(base + i) * D + d] = num[d]! / (den + 1e-6);
  }
  assertClose(out, want, 1e-10, 1e-12, 'linear attention vs direct');
});

test('encoder: padded positions do not change the other rows, for every variant', () => {
  for (const [name, fields] of VARIANTS) {
    tidy(() => noGrad(() => {
      const m = new EncoderModel({ ...TINY, n_layer: 2, ...fields } as never, { backend: ref, dtype: 'float64', seed: 6 });
      m.eval();
      const a = m.forward(ids([[3, 4, 5, 0, 0, 0]], ref)).hidden.slice(1, 0, 3).contiguous().data();
      const b = m.forward(ids([[3, 4, 5]], ref)).hidden.data();
      assertClose(a, b, 1e-9, 1e-9, `${name}: padding leaked`);
    }));
  }
});

test('attention fields survive the checkpoint config round trip, and so do the weights', () => {
  const s2s = seq2seqConfig({ ...TINY, attention: 'performer', performer_features: 8, performer_redraw_interval: 5 });
  const json = JSON.parse(JSON.stringify(seq2seqConfigJson(s2s))) as Record<string, unknown>;
  // As loadSeq2SeqCheckpoint reads it.
  const back = seq2seqConfig(Object.fromEntries(SEQ2SEQ_FIELDS.map((k) => [k, json[k]])) as Partial<Seq2SeqConfig>);
  assert.deepEqual(back, s2s);
  const oldJson = JSON.parse(JSON.stringify(seq2seqConfigJson(seq2seqConfig(TINY)))) as Record<string, unknown>;
  assert.equal(oldJson['attention'], undefined);

  const bc = bertConfig({ n_layer: 1, d_model: 8, n_head: 2, d_ff: 16, vocab_size: 11, attention: 'linformer', linformer_k: 4 });
  const bjson = JSON.parse(JSON.stringify(bertCheckpointConfig(bc))) as Record<string, unknown>;
  assert.deepEqual(bertConfig(bjson['attn_bert'] as Record<string, unknown>), bc);

  tidy(() => noGrad(() => {
    for (const [cfg, extra] of [[{ ...TINY, attention: 'performer', performer_features: 8 }, 'feature_map.omega'], [{ ...TINY, attention: 'local', attn_window: 3 }, null]] as const) {
      const a = new EncoderDecoder(cfg as Partial<Seq2SeqConfig>, { backend: ref, seed: 7 });
      const state = a.stateDict();
      if (extra) assert.ok([...state.keys()].some((k) => k.endsWith(extra)), `${extra} saved`);
      const b = new EncoderDecoder(back.attention === cfg.attention ? back : cfg as Partial<Seq2SeqConfig>, { backend: ref, init: false });
      b.loadStateDict(state);
      for (const m of [a, b]) m.eval();
      assertClose(b.forward(ids(SRC, ref), ids(TGT_IN, ref)).logits.data(), a.forward(ids(SRC, ref), ids(TGT_IN, ref)).logits.data(), 0, 0, 'reloaded');
    }
    const a = new BertModel(bc, { backend: ref, seed: 8 });
    assert.ok(a.stateDict().has('encoder.layers.0.self_attn.E'));
    const b = new BertModel(bertConfig(bjson['attn_bert'] as Record<string, unknown>), { backend: ref, init: false });
    b.loadStateDict(a.stateDict());
    for (const m of [a, b]) m.eval();
    assertClose(b.forward(ids(SRC, ref)).hidden.data(), a.forward(ids(SRC, ref)).hidden.data(), 0, 0, 'bert reloaded');
  }));
});

test('performer features are redrawn every performer_redraw_interval training forwards', () => {
  tidy(() => {
    const m = new EncoderModel({ ...TINY, n_layer: 1, attention: 'performer', performer_features: 4, performer_redraw_interval: 2 } as never, { backend: ref, seed: 9 });
    const omega = () => Array.from(m.encoder.layers.at(0).self_attn.feature_map!.omega.data());
    const x = ids([[3, 4, 5]], ref);
    m.train();
    const w0 = omega();
    m.forward(x);
    m.forward(x);
    assert.deepEqual(omega(), w0);
    m.forward(x); // the third forward follows two: a redraw
    assert.notDeepEqual(omega(), w0);
    m.eval();
    const w1 = omega();
    for (let i = 0; i < 4; i++) m.forward(x);
    assert.deepEqual(omega(), w1, 'eval forwards never redraw');
  });
});

test('the trainers take the attention fields and pass the non-default ones to the model', () => {
  const tc = seq2seqTrainConfig({ attention: 'local', attn_window: 8 });
  const mc = modelConfigFor(tc, 100, { pad_id: 0, bos_id: 1, eos_id: 2 });
  assert.equal(mc.attention, 'local');
  assert.equal(mc.attn_window, 8);
  assert.equal('attn_stride' in mc, false, 'defaults are left out of the model config');
  assert.equal('attention' in modelConfigFor(seq2seqTrainConfig(), 100, { pad_id: 0, bos_id: 1, eos_id: 2 }), false);
  assert.throws(() => seq2seqTrainConfig({ attention: 'linformer' }), /cannot be used in the decoder.*cannot be causal/);
  assert.throws(() => pretrainConfig({ attention: 'flash' }), /attention must be one of 'dense', 'local'/);
  assert.equal(finetuneConfig({ attention: 'linformer', linformer_k: 16 }).attention, 'linformer');
});
