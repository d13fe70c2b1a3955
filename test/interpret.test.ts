// Interpretability (src/eval/interpret.ts) on tiny models: attention probabilities (rows sum to
// 1, equal a softmax computed directly from the layer's weights, and P·V equals the fused
// kernel's output in every layer of GPT, the HF decoder families and the BERT classifier), the
// logit lens (its last layer is the model's logits), integrated gradients' completeness,
// gradient × input against a finite difference, head ablation against zeroed output-projection
// columns, the viz document and clear errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  attentionMaps, attentionProbabilities, attributions, buildVizDocument, headAblation, lensLogits, logitLens, lossOn,
} from '../src/eval/interpret.js';
import { heatmapSvg } from '../src/eval/heatmap.js';
import { BertModel, type BertConfig } from '../src/models/bert.js';
import type { DecoderLM } from '../src/models/decoder.js';
import { GPT } from '../src/models/gpt.js';
import { loadDecoderDir } from '../src/models/hf-decoder-files.js';
import { loadHFBertDir } from '../src/models/hf-bert-files.js';
import type { HFBert } from '../src/models/hf-bert.js';
import type { Module } from '../src/nn/module.js';
import {
  add, getBackend, matmul, noGrad, permute, RefBackend, reshape, softmax, split, tensor, tidy, type Tensor,
} from '../src/index.js';
import { assertClose } from './helpers.js';

const cpu = await getBackend('cpu');
const ref = new RefBackend();
const GPT_TINY = { n_layer: 2, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 37, dropout: 0 };
const IDS = [3, 17, 5, 5, 30, 2, 11, 8];
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/hf-decoders', import.meta.url));
const HF_BERT_CLS = fileURLToPath(new URL('../../test/fixtures/hf-bert/bert-cls', import.meta.url));
const BERT_TINY: Partial<BertConfig> = { n_layer: 2, n_head: 2, d_model: 8, d_ff: 16, dropout: 0, max_len: 16, vocab_size: 12, pad_id: 0, cls_id: 1, sep_id: 2, mask_id: 3, n_classes: 2, classifier_dropout: 0 };

/** Every layer's P (from the probe's queries and keys) times V equals the kernel's output y, and
 *  every row of P sums to 1 with nothing on masked keys. */
function checkPV(sites: { probe: unknown }[], run: () => void, label: string): void {
  let seen = 0;
  sites.forEach((s, l) => {
    s.probe = {
      observe: (view: { q: Tensor; k: Tensor; v: Tensor }, y: Tensor) => {
        const P = attentionProbabilities(view as Parameters<typeof attentionProbabilities>[0]);
        const [, H, Tq, D] = view.q.shape as number[] as [number, number, number, number];
        const [, Hkv, Tk] = view.k.shape as number[] as [number, number, number];
        const v = view.v.data();
        const yd = y.data();
        const expect = new Float64Array(H * Tq * D);
        for (let h = 0; h < H; h++) {
          const kh = Math.floor(h / (H / Hkv));
          for (let i = 0; i < Tq; i++) {
            const row = P[h]![i]!;
            assertClose([row.reduce((a, b) => a + b, 0)], [1], 0, 1e-9, `${label} layer ${l} head ${h} row ${i} sum`);
            for (let j = 0; j < Tk; j++) for (let d = 0; d < D; d++) expect[(h * Tq + i) * D + d]! += row[j]! * v[(kh * Tk + j) * D + d]!;
          }
        }
        assertClose(yd, expect, 1e-4, 1e-5, `${label} layer ${l}: P·V against the kernel`);
        seen++;
        return y;
      },
    };
  });
  try {
    noGrad(() => tidy(run));
  } finally {
    for (const s of sites) s.probe = null;
  }
  assert.equal(seen, sites.length, `${label}: every layer reported`);
}

test('GPT attention maps: rows sum to 1, causal, equal softmax(q·k/√D) computed from the weights', () => {
  for (const variant of [{}, { n_kv_head: 1 }, { pos_encoding: 'rope' as const }, { norm_placement: 'post' as const }]) {
    const model = new GPT({ ...GPT_TINY, ...variant }, { backend: cpu, seed: 3 }).eval();
    const maps = attentionMaps(model, IDS);
    assert.equal(maps.length, 2);
    const T = IDS.length;
    // Direct: run the embeddings and blocks by hand, project q and k with c_attn, softmax.
    noGrad(() => tidy(() => {
      const t = model.transformer;
      const ids = tensor(IDS, { backend: cpu, dtype: 'int32', shape: [1, T] });
      let x = t.wte.forward(ids);
      if (t.wpe) x = add(x, t.wpe.positions(T, 0));
      t.h.items.forEach((block, l) => {
        if (t.rope) {
          // RoPE rotates inside the module: the direct check of that variant is P·V below.
          x = block.forward(x);
          return;
        }
        const h = variant.norm_placement === 'post' ? x : block.ln_1.forward(x);
        const C = 16, H = 2, D = 8, Hkv = model.config.n_kv_head ?? H;
        const [q0, k0] = split(block.attn.c_attn.forward(h), [C, Hkv * D, Hkv * D], -1);
        const heads = (u: Tensor, n: number) => permute(reshape(u, [1, T, n, D]), [0, 2, 1, 3]);
        const q = heads(q0!, H);
        let k = heads(k0!, Hkv);
        if (Hkv !== H) k = add(k, tensor(new Float32Array(H * T * D), { backend: cpu, shape: [1, H, T, D] })); // broadcast the one kv head
        const mask = new Float32Array(T * T).map((_, i) => (i % T > Math.floor(i / T) ? -Infinity : 0));
        const P = softmax(add(matmul(q, permute(k, [0, 1, 3, 2])).mul(1 / Math.sqrt(D)), tensor(mask, { backend: cpu, shape: [T, T] })), -1).data();
        assertClose(maps[l]!.flat(2), P, 1e-5, 1e-6, `${JSON.stringify(variant)} layer ${l}`);
        x = block.forward(x);
      });
    }));
    for (const layer of maps) {
      for (const head of layer) {
        head.forEach((row, i) => {
          assertClose([row.reduce((a, b) => a + b, 0)], [1], 0, 1e-9, 'row sum');
          assert.ok(row.slice(i + 1).every((p) => p === 0), 'no attention to later tokens');
        });
      }
    }
    checkPV(model.transformer.h.items.map((b) => b.attn), () => void model.forward(tensor(IDS, { backend: cpu, dtype: 'int32', shape: [1, T] })), `GPT ${JSON.stringify(variant)}`);
    model.dispose();
  }
});

test('GPT sparse patterns: the recomputed probabilities are the kernel\'s (P·V = y)', () => {
  for (const variant of [{ attention: 'local' as const, attn_window: 3 }, { attention: 'strided' as const, attn_stride: 3 }, { attention: 'fixed' as const, attn_stride: 4, attn_summary: 1 }]) {
    const model = new GPT({ ...GPT_TINY, ...variant }, { backend: cpu, seed: 4 }).eval();
    checkPV(model.transformer.h.items.map((b) => b.attn), () => void model.forward(tensor(IDS, { backend: cpu, dtype: 'int32', shape: [1, IDS.length] })), variant.attention);
    const maps = attentionMaps(model, IDS);
    if (variant.attention === 'local') assert.ok(maps[0]![0]![7]!.slice(0, 5).every((p) => p === 0), 'window of 3: keys 0..4 unseen from query 7');
    model.dispose();
  }
  const linear = new GPT({ ...GPT_TINY, attention: 'linear' }, { backend: cpu }).eval();
  assert.throws(() => attentionMaps(linear, IDS), /layer 0's attention \(linear\) has no softmax probabilities/);
});

test('HF decoder families (GQA, sliding window, phi): P·V equals the kernel in every layer; the lens ends at the logits', async () => {
  for (const family of ['llama', 'qwen2', 'phi', 'mistral']) {
    const { model } = await loadDecoderDir(join(FIXTURES, family), { backend: cpu }) as { model: DecoderLM };
    model.eval();
    const ids = [1, 7, 33, 9, 9, 50, 4, 12, 40, 3];
    checkPV(model.model.layers.items.map((l) => l.self_attn), () => void model.forward(tensor(ids, { backend: cpu, dtype: 'int32', shape: [1, ids.length] })), family);
    const lens = lensLogits(model, ids);
    assert.equal(lens.length, model.config.num_hidden_layers + 1);
    const logits = noGrad(() => tidy(() => model.forward(tensor(ids, { backend: cpu, dtype: 'int32', shape: [1, ids.length] })).logits.data()));
    assertClose(lens[lens.length - 1]!, logits, 1e-5, 1e-5, `${family} lens at the last layer`);
    model.dispose();
  }
});

test('BERT classifier: P·V equals the kernel with padding masked; padded keys get no attention', () => {
  const bert = new BertModel(BERT_TINY, { backend: cpu, seed: 13 }).eval();
  const ids = [1, 5, 9, 4, 11, 2, 0, 0]; // two pads at the end
  checkPV(bert.encoder.layers.items.map((l) => l.self_attn), () => void bert.classify(tensor(ids, { backend: cpu, dtype: 'int32', shape: [1, ids.length] })), 'BERT');
  const maps = attentionMaps(bert, ids);
  for (const layer of maps) for (const head of layer) for (const row of head) assert.deepEqual(row.slice(6), [0, 0]);
  assert.ok(maps[0]![0]![0]![5]! > 0, 'bidirectional: the first token sees the last real one');
  bert.dispose();
});

test('Hugging Face BERT classifier: P·V equals the kernel; IG completeness for each of its 3 classes; ablation = zeroed columns', async () => {
  const load = async () => (await loadHFBertDir(HF_BERT_CLS, { backend: cpu })).model;
  const m: HFBert = await load();
  const ids = [2, 9, 14, 7, 21, 3];
  checkPV(m.bert.encoder.layer.items.map((l) => l.attention.self), () => void m.classifyLogits(m.encode(tensor(ids, { backend: cpu, dtype: 'int32', shape: [1, ids.length] }))), 'HF BERT');
  for (const cls of [0, 1, 2]) {
    const a = attributions(m, ids, { kind: 'class', cls }, { steps: 64 });
    assertClose([a.sum], [a.fInput - a.fBaseline], 1e-2, 1e-4, `HF BERT class ${cls}`);
  }
  const table = headAblation(m, ids, { label: 1 });
  const fresh = await load();
  const D = fresh.config.hidden_size / fresh.config.num_attention_heads;
  zeroHeadColumns(fresh.bert.encoder.layer.items[1]!.attention.output.dense.weight, 0, D);
  assertClose([table.base + table.delta[1]![0]!], [lossOn(fresh, ids, { label: 1 })], 1e-5, 1e-6, 'HF BERT ablation');
  const doc = buildVizDocument(m, null, 'ids', ids, { steps: 4, ablation: false });
  assert.equal(doc.model.kind, 'classifier');
  assert.equal(doc.classes!.probs.length, 3);
  fresh.dispose();
  m.dispose();
});

test('logit lens: the last layer equals the model\'s logits; top-k are sorted probabilities', () => {
  for (const variant of [{}, { norm_placement: 'post' as const }, { tie_embeddings: false }]) {
    const model = new GPT({ ...GPT_TINY, ...variant }, { backend: cpu, seed: 5 }).eval();
    const lens = lensLogits(model, IDS);
    assert.equal(lens.length, 3);
    const logits = noGrad(() => tidy(() => model.forward(tensor(IDS, { backend: cpu, dtype: 'int32', shape: [1, IDS.length] })).logits.data()));
    assertClose(lens[2]!, logits, 1e-6, 1e-6, `${JSON.stringify(variant)} last layer`);
    const top = logitLens(model, IDS, 4);
    assert.deepEqual(top.labels, ['embed', 'layer 1', 'layer 2']);
    const V = 37;
    for (let t = 0; t < IDS.length; t++) {
      const row = Array.from(logits.subarray(t * V, (t + 1) * V));
      const best = row.indexOf(Math.max(...row));
      const entries = top.top[2]![t]!;
      assert.equal(entries[0]!.id, best, `position ${t}: top-1 is the argmax of the logits`);
      for (let i = 1; i < entries.length; i++) assert.ok(entries[i - 1]!.p >= entries[i]!.p);
      const z = row.reduce((a, v) => a + Math.exp(v), 0);
      assertClose([entries[0]!.p], [Math.exp(row[best]!) / z], 1e-5, 1e-7, 'probability');
    }
    model.dispose();
  }
});

test('integrated gradients: completeness (Σ attributions = f(x) − f(0)); grad × input against a finite difference', () => {
  // float64 on the ref backend, so the only error left is the Riemann sum's.
  const model = new GPT({ ...GPT_TINY, pos_encoding: 'rope', tie_embeddings: false }, { backend: ref, dtype: 'float64', seed: 6 }).eval();
  const target = { kind: 'token' as const, position: 5, token: 9 };
  const coarse = attributions(model, IDS, target, { steps: 8 });
  const fine = attributions(model, IDS, target, { steps: 64 });
  const gap = fine.fInput - fine.fBaseline;
  assert.ok(Math.abs(gap) > 1e-3, `f(x) − f(0) = ${gap} is not degenerate`);
  const errCoarse = Math.abs(coarse.sum - gap);
  const errFine = Math.abs(fine.sum - gap);
  assert.ok(errFine < 2e-3 * Math.abs(gap) + 1e-6, `64 steps: Σ IG ${fine.sum} vs f(x) − f(0) ${gap}`);
  assert.ok(errFine <= errCoarse, `more steps, smaller error (${errFine} vs ${errCoarse})`);
  // Tokens after the target position cannot change a causal model's logit there.
  for (let t = 6; t < IDS.length; t++) {
    assert.equal(fine.integratedGradients[t], 0);
    assert.equal(fine.gradInput[t], 0);
  }
  // Σ grad×input = d/dα f(α·e) at α = 1, the slope along the input: a central difference with
  // the (untied) token embedding table scaled by α.
  const gi = fine.gradInput.reduce((a, b) => a + b, 0);
  const h = 1e-5;
  const fAt = (alpha: number): number => {
    const wte = model.transformer.wte.weight;
    const saved = Float64Array.from(wte.data());
    wte.backend.write(wte.storage, saved.map((v) => v * alpha), wte.offset);
    try {
      return attributions(model, IDS, target, { steps: 1 }).fInput;
    } finally {
      wte.backend.write(wte.storage, saved, wte.offset);
    }
  };
  assertClose([gi], [(fAt(1 + h) - fAt(1 - h)) / (2 * h)], 1e-5, 1e-7, 'Σ grad×input = directional derivative');
  // Parameters are left as they were: no gradient, still trainable.
  for (const p of model.parameters()) {
    assert.equal(p.grad, null);
    assert.equal(p.requiresGrad, true);
  }
  model.dispose();
});

test('integrated gradients of a classifier\'s decision: completeness; a float32 GPT within 1%', () => {
  const bert = new BertModel(BERT_TINY, { backend: ref, dtype: 'float64', seed: 7 }).eval();
  const ids = [1, 5, 9, 4, 11, 6, 2];
  for (const cls of [0, 1]) {
    const a = attributions(bert, ids, { kind: 'class', cls }, { steps: 64 });
    const gap = a.fInput - a.fBaseline;
    assertClose([a.sum], [gap], 5e-3, 1e-6, `class ${cls}: Σ IG against f(x) − f(0)`);
  }
  assert.throws(() => attributions(bert, ids, { kind: 'token', position: 0, token: 1 }), /needs a language model/);
  assert.throws(() => attributions(bert, ids, { kind: 'class', cls: 2 }), /outside the 2 classes/);
  const gpt = new GPT(GPT_TINY, { backend: cpu, seed: 8 }).eval();
  const a = attributions(gpt, IDS, { kind: 'token', position: 7, token: 1 }, { steps: 32 });
  assertClose([a.sum], [a.fInput - a.fBaseline], 1e-2, 1e-4, 'float32 cpu GPT');
  gpt.dispose();
  bert.dispose();
});

/** Zeroes the input columns of head h in an output projection's weight (out, H·D). */
function zeroHeadColumns(weight: Tensor, head: number, D: number): void {
  const [out, inF] = weight.shape as [number, number];
  const w = Float32Array.from(weight.data());
  for (let o = 0; o < out; o++) for (let d = 0; d < D; d++) w[o * inF + head * D + d] = 0;
  weight.backend.write(weight.storage, w, weight.offset);
}

test('head ablation equals the model with that head\'s output-projection columns zeroed', async () => {
  const cases: { label: string; model: () => Promise<Module & { dispose(): void }>; weight: (m: never, l: number) => Tensor; D: number; ids: number[] }[] = [
    { label: 'GPT', model: async () => new GPT(GPT_TINY, { backend: cpu, seed: 9 }).eval(), weight: (m: GPT, l) => m.transformer.h.items[l]!.attn.c_proj.weight, D: 8, ids: IDS },
    { label: 'llama (GQA)', model: async () => (await loadDecoderDir(join(FIXTURES, 'llama'), { backend: cpu })).model.eval(), weight: (m: DecoderLM, l) => m.model.layers.items[l]!.self_attn.out.weight, D: 4, ids: [1, 7, 33, 9, 50, 4] },
    { label: 'BERT classifier', model: async () => new BertModel(BERT_TINY, { backend: cpu, seed: 10 }).eval(), weight: (m: BertModel, l) => m.encoder.layers.items[l]!.self_attn.out_proj.weight, D: 4, ids: [1, 5, 9, 4, 11, 2] },
  ];
  for (const c of cases) {
    const m = await c.model();
    const table = headAblation(m as never, c.ids, { label: 1 });
    assert.equal(table.delta.length, 2);
    for (const [layer, head] of [[0, 1], [1, 0]] as const) {
      const fresh = await c.model();
      zeroHeadColumns(c.weight(fresh as never, layer), head, c.D);
      const zeroed = lossOn(fresh as never, c.ids, { label: 1 });
      assertClose([table.base + table.delta[layer]![head]!], [zeroed], 1e-5, 1e-6, `${c.label} layer ${layer} head ${head}`);
      assert.ok(Math.abs(table.delta[layer]![head]!) > 1e-7, `${c.label}: ablating changes the loss`);
      fresh.dispose();
    }
    assert.throws(() => lossOn(m as never, c.ids, { ablate: { layer: 5, head: 0 } }), /no head 0 in layer 5/);
    m.dispose();
  }
});

test('viz document: every section filled and consistent; heat map SVG; bad input refused', () => {
  const model = new GPT(GPT_TINY, { backend: cpu, seed: 11 }).eval();
  const doc = buildVizDocument(model, null, 'ids', IDS, { steps: 8, k: 3 });
  assert.equal(doc.tokens.length, IDS.length);
  assert.equal(doc.attention.length, 2);
  assert.equal(doc.attention[0]!.length, 2);
  assert.equal(doc.lens!.top.length, 3);
  assert.equal(doc.lens!.top[0]![0]!.length, 3);
  assert.equal(doc.attributions.length, 2);
  assert.equal(doc.ablation!.delta.length, 2);
  assert.equal(doc.ablation!.delta[0]!.length, 2);
  JSON.parse(JSON.stringify(doc));
  const svg = heatmapSvg(doc.ablation!.delta, { title: 'loss change', rowLabel: 'layer', colLabel: 'head' });
  assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal((svg.match(/<rect class="cell"/g) ?? []).length, 4);
  assert.throws(() => attentionMaps(model, [3, 99]), /token 1 \(99\) is outside the vocabulary \[0, 37\)/);
  assert.throws(() => attentionMaps(model, []), /no tokens/);
  assert.throws(() => attributions(model, IDS, { kind: 'token', position: 8, token: 1 }), /position 8 is outside the 8 tokens/);
  assert.throws(() => attributions(model, IDS, { kind: 'class', cls: 0 }), /needs a classifier/);
  // The probes are gone after use: the normal forward is untouched.
  assert.ok(model.transformer.h.items.every((b) => b.attn.probe === null));
  const bert = new BertModel(BERT_TINY, { backend: cpu, seed: 12 }).eval();
  const bdoc = buildVizDocument(bert, null, 'ids', [1, 5, 9, 2], { steps: 8 });
  assert.equal(bdoc.lens, null);
  assert.equal(bdoc.classes!.probs.length, 2);
  assert.equal(bdoc.attention[0]![0]![0]!.length, 4);
  bert.dispose();
  model.dispose();
});
