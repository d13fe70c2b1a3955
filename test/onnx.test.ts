// ONNX export of the decoder families, run in onnxruntime-node (its bundled CPU runtime): the
// logits of the full sequence and of KV-cached steps (past_key_values in, present.* out) match
// attn's forward and forwardWithCache within 1e-4; a left-padded batch of 2 through
// attention_mask; int8 and int4 exports against attn's dequantized weights; refusals; and the
// protobuf encoder's wire format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { getBackend, noGrad, tensor, tidy } from '../src/index.js';
import { ProtoWriter, readVarint } from '../src/io/protobuf.js';
import { DecoderLM } from '../src/models/decoder.js';
import { fullGPTConfig, GPT, type GPTConfig } from '../src/models/gpt.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { exportDecoderONNX, saveDecoderONNX, type DecoderOnnxOptions } from '../src/models/onnx-decoder.js';
import { dequantizeRows, quantize, type QuantFormat } from '../src/tensor/quantize.js';

const cpu = await getBackend('cpu');
const TOL = 1e-4;

const FAMILIES: Record<string, Record<string, unknown>> = {
  'llama, GQA 4/2, rope llama3, untied': { model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 97, max_position_embeddings: 64, tie_word_embeddings: false, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } },
  'qwen2, q/k/v biases, tied, window 5 on layer 1': { model_type: 'qwen2', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 1, vocab_size: 97, max_position_embeddings: 64, tie_word_embeddings: true, use_sliding_window: true, sliding_window: 5, max_window_layers: 1 },
  'qwen3, q/k norm, head_dim 32': { model_type: 'qwen3', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32, vocab_size: 97, max_position_embeddings: 64, tie_word_embeddings: true, rope_scaling: { rope_type: 'linear', factor: 2 } },
  'phi, partial rotary 0.5, gelu_new, biases': { model_type: 'phi', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 97, max_position_embeddings: 64, partial_rotary_factor: 0.5, hidden_act: 'gelu_new' },
  // attn's GPT (a config with n_layer): GPT-2's layout, and the variants the export covers.
  'gpt, GPT-2 layout (learned positions, biases, tanh GELU, tied)': { n_layer: 2, n_head: 4, n_embd: 64, block_size: 32, vocab_size: 97, dropout: 0, bias: true, tie_embeddings: true },
  'gpt, rope, GQA 4/2, RMSNorm, SwiGLU, no biases, untied': { n_layer: 2, n_head: 4, n_kv_head: 2, n_embd: 64, block_size: 32, vocab_size: 97, dropout: 0, bias: false, tie_embeddings: false, pos_encoding: 'rope', norm: 'rmsnorm', activation: 'swiglu' },
  'gpt, erf GELU, biases, untied': { n_layer: 2, n_head: 2, n_embd: 64, block_size: 32, vocab_size: 97, dropout: 0, bias: true, tie_embeddings: false, activation: 'gelu_exact' },
};

type LM = DecoderLM | GPT;

/** Layers, kv heads, head size and vocabulary of either kind of model. */
function dims(model: LM): { L: number; Hkv: number; D: number; V: number } {
  if (model instanceof GPT) {
    const c = fullGPTConfig(model.config);
    return { L: c.n_layer, Hkv: c.n_kv_head, D: c.n_embd / c.n_head, V: c.vocab_size };
  }
  const c = model.config;
  return { L: c.num_hidden_layers, Hkv: c.num_key_value_heads, D: c.head_dim, V: c.vocab_size };
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/** A DecoderLM (or a GPT for a config with n_layer) with every parameter drawn (biases and norm
 *  weights too, not zeros and ones). */
function randomModel(hf: Record<string, unknown>, seed = 1): LM {
  const model = 'n_layer' in hf ? new GPT(hf as Partial<GPTConfig>, { backend: cpu, seed, init: false }) : new DecoderLM(decoderConfigFromHF(hf), { backend: cpu, seed, init: false });
  const r = rng(seed * 7919);
  const state = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, p] of model.namedParameters()) {
    const isNorm = /norm|layernorm|\.ln_/.test(name);
    const d = Float32Array.from({ length: p.size }, () => {
      const u = (r() + r() + r() - 1.5) * 2; // roughly N(0, 1)
      return isNorm && name.endsWith('weight') ? 1 + 0.2 * u : (name.endsWith('bias') ? 0.1 : name.includes('embed') || name.includes('.wte') || name.includes('.wpe') ? 0.5 : 0.08) * u;
    });
    state.set(name, { shape: p.shape as number[], data: d });
  }
  model.loadStateDict(state);
  model.eval();
  return model;
}

function tokens(n: number, V: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * V));
}

const i64 = (vals: number[], dims: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(vals.map(BigInt)), dims);

async function session(model: LM, opts: DecoderOnnxOptions = {}): Promise<ort.InferenceSession> {
  const bytes = exportDecoderONNX(model, opts).model.toBytes();
  // DequantizeLinear → MatMul is rewritten by ORT into a dynamic int8 matmul (activations
  // quantized too) unless QDQ transformations are off: the export itself is checked here.
  const extra = opts.int8Op === 'dequantize' ? { extra: { session: { disable_quant_qdq: '1' } } } : {};
  return ort.InferenceSession.create(bytes, { intraOpNumThreads: 2, executionMode: 'sequential', ...extra });
}

type Feeds = Record<string, ort.Tensor>;

/** Feeds for a batch of rows (each row's ids, its left padding), with past. */
function feeds(model: LM, ids: number[][], pad: number[], past: Feeds | null, pastLen: number): Feeds {
  const { L, Hkv, D } = dims(model);
  const B = ids.length;
  const T = ids[0]!.length;
  const S = pastLen + T;
  const mask: number[] = [];
  const pos: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < S; j++) mask.push(j < pad[b]! ? 0 : 1);
    for (let t = 0; t < T; t++) pos.push(Math.max(0, pastLen + t - pad[b]!));
  }
  const f: Feeds = { input_ids: i64(ids.flat(), [B, T]), attention_mask: i64(mask, [B, S]), position_ids: i64(pos, [B, T]) };
  for (let i = 0; i < L; i++) {
    for (const kv of ['key', 'value']) {
      f[`past_key_values.${i}.${kv}`] = past ? past[`present.${i}.${kv}`]! : new ort.Tensor('float32', new Float32Array(0), [B, Hkv, 0, D]);
    }
  }
  return f;
}

function attnLogits(model: LM, ids: number[]): Float32Array {
  return noGrad(() => tidy(() => model.forward(tensor(Int32Array.from(ids), { backend: cpu, dtype: 'int32', shape: [1, ids.length] })).logits.data() as Float32Array));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>, aOff = 0, bOff = 0, n = Math.min(a.length, b.length)): number {
  let m = 0;
  for (let i = 0; i < n; i++) m = Math.max(m, Math.abs(a[aOff + i]! - b[bOff + i]!));
  return m;
}

for (const [label, hf] of Object.entries(FAMILIES)) {
  test(`onnx ${label}: full forward, cached steps and a left-padded batch match attn`, async () => {
    const model = randomModel(hf);
    const { V, Hkv, D } = dims(model);
    try {
      const sess = await session(model);
      const ids = tokens(12, V, 3);
      const ref = attnLogits(model, ids);
      // Full sequence, no past.
      const full = await sess.run(feeds(model, [ids], [0], null, 0));
      assert.deepEqual(full['logits']!.dims, [1, 12, V]);
      const dFull = maxDiff(full['logits']!.data as Float32Array, ref);
      assert.ok(dFull < TOL, `full: max |diff| ${dFull}`);
      assert.deepEqual(full['present.1.key']!.dims, [1, Hkv, 12, D]);

      // With past: a prefix of 7, then 3 tokens, then 1, then 1; against attn's KV cache.
      const cache = model.createKVCache();
      let past: Feeds | null = null;
      let at = 0;
      try {
        for (const n of [7, 3, 1, 1]) {
          const chunk = ids.slice(at, at + n);
          const attnOut = noGrad(() => tidy(() => model.forwardWithCache(tensor(Int32Array.from(chunk), { backend: cpu, dtype: 'int32', shape: [1, n] }), cache).logits.data() as Float32Array));
          const out: Feeds = await sess.run(feeds(model, [chunk], [0], past, at));
          assert.deepEqual(out['present.0.value']!.dims, [1, Hkv, at + n, D]);
          const d = maxDiff(out['logits']!.data as Float32Array, attnOut);
          assert.ok(d < TOL, `cached step at ${at} (+${n}): max |diff| ${d}`);
          // …and the same rows of the full forward.
          const dRef = maxDiff(out['logits']!.data as Float32Array, ref, 0, at * V, n * V);
          assert.ok(dRef < TOL, `cached step at ${at} vs full forward: ${dRef}`);
          past = out;
          at += n;
        }
      } finally {
        cache.dispose();
      }

      // Batch of 2: row 0 is 9 tokens, row 1 is 6 tokens left-padded by 3; then one cached step.
      const a = tokens(9, V, 5);
      const b = tokens(6, V, 6);
      const padded = await sess.run(feeds(model, [a, [0, 0, 0, ...b]], [0, 3], null, 0));
      const la = padded['logits']!.data as Float32Array;
      assert.ok(maxDiff(la, attnLogits(model, a), 0, 0, 9 * V) < TOL, 'batch row 0');
      const dB = maxDiff(la, attnLogits(model, b), (9 + 3) * V, 0, 6 * V);
      assert.ok(dB < TOL, `batch row 1 (left-padded): ${dB}`);
      const next = [tokens(1, V, 7)[0]!, tokens(1, V, 8)[0]!];
      const step = await sess.run(feeds(model, [[next[0]!], [next[1]!]], [0, 3], padded, 9));
      const ls = step['logits']!.data as Float32Array;
      const refA = attnLogits(model, [...a, next[0]!]);
      const refB = attnLogits(model, [...b, next[1]!]);
      assert.ok(maxDiff(ls, refA, 0, 9 * V, V) < TOL, 'batch step row 0');
      const dStep = maxDiff(ls, refB, V, 6 * V, V);
      assert.ok(dStep < TOL, `batch step row 1 (left-padded): ${dStep}`);
      await sess.release();
    } finally {
      model.dispose();
    }
  });
}

/** attn's reference for a quantized export: every quantized matrix replaced by its dequantized rows. */
function dequantizedTwin(hf: Record<string, unknown>, format: QuantFormat, names: (n: string) => boolean): LM {
  const model = randomModel(hf);
  const state = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, p] of model.namedParameters()) {
    if (p.ndim !== 2 || !names(name)) continue;
    const [N, K] = p.shape as [number, number];
    state.set(name, { shape: [N, K], data: dequantizeRows(quantize(p.data() as Float32Array, N, K, format)) });
  }
  model.loadStateDict(state, { strict: false });
  return model;
}

const isLinear = (n: string): boolean => /self_attn|mlp|\.attn\./.test(n);
const QUANT_CASES: [string, Record<string, unknown>, DecoderOnnxOptions, (n: string) => boolean][] = [
  ['int8 llama (MatMulNBits bits 8)', FAMILIES['llama, GQA 4/2, rope llama3, untied']!, { weights: 'int8' }, isLinear],
  ['int8 llama (MatMulNBits bits 8), head and embeddings too', FAMILIES['llama, GQA 4/2, rope llama3, untied']!, { weights: 'int8', quantizeHead: true, quantizeEmbeddings: true }, () => true],
  ['int8 qwen2 (DequantizeLinear), tied table quantized', FAMILIES['qwen2, q/k/v biases, tied, window 5 on layer 1']!, { weights: 'int8', int8Op: 'dequantize', quantizeEmbeddings: true }, () => true],
  ['int8 llama, rows of 40 and 48 columns (blocks padded)', { ...FAMILIES['llama, GQA 4/2, rope llama3, untied']!, hidden_size: 40, intermediate_size: 48 }, { weights: 'int8' }, isLinear],
  ['int4 llama (MatMulNBits bits 4)', FAMILIES['llama, GQA 4/2, rope llama3, untied']!, { weights: 'int4', quantizeHead: true }, (n) => isLinear(n) || n.startsWith('lm_head')],
  ['int4 phi, embeddings too', FAMILIES['phi, partial rotary 0.5, gelu_new, biases']!, { weights: 'int4', quantizeEmbeddings: true, quantizeHead: true }, () => true],
  ['int8 gpt (GPT-2 layout), the tied table too', FAMILIES['gpt, GPT-2 layout (learned positions, biases, tanh GELU, tied)']!, { weights: 'int8', quantizeEmbeddings: true }, (n) => isLinear(n) || n.endsWith('wte.weight')],
  // SwiGLU's hidden width here (176) is not whole groups of 32: ReLU's 4·C is
  ['int4 gpt (rope, GQA, ReLU), untied head too', { ...FAMILIES['gpt, rope, GQA 4/2, RMSNorm, SwiGLU, no biases, untied']!, activation: 'relu' }, { weights: 'int4', quantizeHead: true }, (n) => isLinear(n) || n.startsWith('lm_head')],
];

for (const [label, hf, opts, names] of QUANT_CASES) {
  test(`onnx ${label}: logits match attn on the dequantized weights`, async () => {
    const float = randomModel(hf);
    const twin = dequantizedTwin(hf, opts.weights as QuantFormat, names);
    try {
      const { keptFloat } = exportDecoderONNX(float, opts);
      assert.deepEqual(keptFloat, []);
      const sess = await session(float, opts);
      const ids = tokens(10, dims(float).V, 9);
      const out = await sess.run(feeds(float, [ids], [0], null, 0));
      const got = out['logits']!.data as Float32Array;
      const d = maxDiff(got, attnLogits(twin, ids));
      assert.ok(d < TOL, `max |diff| ${d}`);
      assert.ok(maxDiff(got, attnLogits(float, ids)) > 10 * d, 'the quantized logits differ from the float model\'s');
      await sess.release();
    } finally {
      float.dispose();
      twin.dispose();
    }
  });
}

test('onnx: matrices attn already holds quantized (int4z with zero points here) are exported as they are', async () => {
  const hf = FAMILIES['qwen3, q/k norm, head_dim 32']!;
  const model = randomModel(hf);
  const twin = dequantizedTwin(hf, 'int4z', isLinear);
  try {
    for (const [name, m] of model.namedModules()) {
      if (!isLinear(name) || !('weight' in m)) continue;
      const w = (m as unknown as { weight: { shape: number[]; data(): Float32Array } }).weight;
      if (w.shape.length !== 2) continue; // q_norm, k_norm
      const arrays = quantize(w.data(), w.shape[0]!, w.shape[1]!, 'int4z');
      Object.assign(m, { quant: { toArrays: () => arrays } }); // the shape of attn's QuantizedWeight
    }
    const sess = await session(model); // weights: float32 for the rest
    const ids = tokens(10, model.config.vocab_size, 4);
    const out = await sess.run(feeds(model, [ids], [0], null, 0));
    const d = maxDiff(out['logits']!.data as Float32Array, attnLogits(twin, ids));
    assert.ok(d < TOL, `max |diff| ${d}`);
    await sess.release();
  } finally {
    model.dispose();
    twin.dispose();
  }
});

test('onnx export: refusals name the reason; files and side files are written', async () => {
  const model = randomModel(FAMILIES['qwen3, q/k norm, head_dim 32']!);
  try {
    assert.throws(() => exportDecoderONNX(model, { weights: 'int3' as never }), /weights must be one of float32, int8, int4, got 'int3'/);
    assert.throws(() => exportDecoderONNX(model, { int8Op: 'gemm' as never }), /int8Op must be/);
    assert.throws(() => exportDecoderONNX({} as DecoderLM), /not a DecoderLM/);
    const dyn = randomModel({ ...FAMILIES['llama, GQA 4/2, rope llama3, untied']!, rope_scaling: { rope_type: 'dynamic', factor: 2 } });
    assert.throws(() => exportDecoderONNX(dyn), /rope_scaling 'dynamic'.*maxPositions ≤ 64/);
    assert.ok(exportDecoderONNX(dyn, { maxPositions: 64 }).bytes > 0);
    dyn.dispose();
    const odd = randomModel({ ...FAMILIES['llama, GQA 4/2, rope llama3, untied']!, hidden_size: 40, intermediate_size: 48 });
    const { keptFloat } = exportDecoderONNX(odd, { weights: 'int4' });
    assert.ok(keptFloat.some((k) => /q_proj.*40 columns/.test(k)), keptFloat.join('; '));
    odd.dispose();
    const dir = mkdtempSync(join(tmpdir(), 'attn-onnx-'));
    try {
      writeFileSync(join(dir, 'config.json'), '{}');
      writeFileSync(join(dir, 'tokenizer.json'), '{}');
      const out = join(dir, 'out');
      rmSync(out, { recursive: true, force: true });
      const { mkdirSync } = await import('node:fs');
      mkdirSync(out);
      const r = saveDecoderONNX(model, join(out, 'model.onnx'), { modelDir: dir });
      assert.deepEqual(r.copied.sort(), ['config.json', 'tokenizer.json']);
      const sess = await ort.InferenceSession.create(join(out, 'model.onnx'));
      assert.equal(sess.inputNames.length, 3 + 2 * dims(model).L);
      assert.deepEqual(sess.outputNames.slice(0, 3), ['logits', 'present.0.key', 'present.0.value']);
      assert.equal(readFileSync(join(out, 'model.onnx')).length, r.bytes);
      await sess.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    model.dispose();
  }
});

test('onnx external data: the weights in a side file at aligned offsets; ONNX Runtime reads it and gives the inline file\'s logits', async () => {
  const model = randomModel(FAMILIES['gpt, GPT-2 layout (learned positions, biases, tanh GELU, tied)']!);
  const dir = mkdtempSync(join(tmpdir(), 'attn-onnx-ext-'));
  try {
    const inline = saveDecoderONNX(model, join(dir, 'inline.onnx'));
    const ext = saveDecoderONNX(model, join(dir, 'model.onnx'), { externalData: 'model.onnx.data' });
    assert.equal(inline.externalData, null);
    assert.equal(ext.externalData, 'model.onnx.data');
    const data = readFileSync(join(dir, 'model.onnx.data'));
    assert.equal(data.length, ext.externalBytes);
    assert.ok(ext.bytes < inline.bytes / 10, `the .onnx holds the graph and small tensors only (${ext.bytes} of ${inline.bytes} bytes)`);
    // Every tensor moved out is at a 4096-aligned offset: the wte table is the first one there.
    const wte = (model as GPT).transformer.wte.weight.data() as Float32Array;
    assert.deepEqual(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + wte.byteLength)), wte);
    const ids = tokens(9, 97, 2);
    const run = async (file: string): Promise<Float32Array> => {
      const sess = await ort.InferenceSession.create(join(dir, file), { intraOpNumThreads: 1 });
      const out = await sess.run(feeds(model, [ids], [0], null, 0));
      await sess.release();
      return out['logits']!.data as Float32Array;
    };
    assert.deepEqual(await run('model.onnx'), await run('inline.onnx'));
    assert.throws(() => saveDecoderONNX(model, join(dir, 'bad.onnx'), { externalData: '../elsewhere.data' }), /must be a file name beside the model/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    model.dispose();
  }
});

test('protobuf: varints, negative int64, fixed32, length-delimited, packed', () => {
  const w = new ProtoWriter().varint(1, 150).varint(2, -1).float(3, 1.5).string(4, 'hi').packedVarints(5, [3, 270]);
  const b = w.toBytes();
  assert.deepEqual([...b.slice(0, 3)], [0x08, 0x96, 0x01]); // the protobuf docs' example: field 1 = 150
  assert.equal(b[3], 0x10);
  assert.equal(readVarint(b, 4)[0], 2n ** 64n - 1n); // -1 as 10 bytes
  assert.equal(readVarint(b, 4)[1], 14);
  assert.deepEqual([...b.slice(14, 19)], [0x1d, 0x00, 0x00, 0xc0, 0x3f]);
  assert.deepEqual([...b.slice(19, 23)], [0x22, 2, 0x68, 0x69]);
  assert.deepEqual([...b.slice(23)], [0x2a, 3, 3, 0x8e, 0x02]);
  const outer = new ProtoWriter().message(7, w);
  assert.equal(outer.length, 2 + b.length);
  assert.deepEqual([...outer.toBytes().slice(2)], [...b]);
});
