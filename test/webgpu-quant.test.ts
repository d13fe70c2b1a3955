// The webgpu quantized matmul and embedding against the ref backend: every format (int8, int4,
// int4z) at M in {1, 3, 17}, K in {32, 96, 800} (and 50 for int8), N in {1, 5, 64}, with and
// without bias, each activation; embeddings equal dequantizeRows exactly; ids out of range are
// refused at the next read. Skipped where there is no adapter (see webgpu-helpers.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../src/backend/backend.js';
import { Generator, getBackend, noGrad, RefBackend, tensor } from '../src/index.js';
import { DecoderLM } from '../src/models/decoder.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { quantizeModel } from '../src/nn/quantized.js';
import { QUANT_FORMATS, dequantizeRows, quantize, type QuantizedArrays } from '../src/tensor/quantize.js';
import { cases, checkQuantEmbedding, freeQuant, randomF32, uploadQuant, type Case } from './quant-helpers.js';
import { webgpu } from './webgpu-helpers.js';

const ref = new RefBackend();
/** Queues quantMatmul on `be` for case c and returns the output storage (and what to free). */
function queueMatmul(be: Backend, c: Case, q: QuantizedArrays, x: Float32Array, bias: Float32Array | null): { out: ReturnType<Backend['alloc']>; free: () => void } {
  const w = uploadQuant(be, q);
  const xs = be.upload(x, 'float32');
  const bs = bias ? be.upload(bias, 'float32') : null;
  const out = be.alloc('float32', c.M * c.N);
  be.quantMatmul({ x: xs, w, out, M: c.M, bias: bs, activation: c.act });
  return { out, free: () => { freeQuant(be, w); for (const s of [xs, bs, out]) if (s) be.free(s); } };
}

test('webgpu: quantMatmul matches ref for every format, M, K, N, bias and activation', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  let worst = 0;
  let n = 0;
  for (const c of cases()) {
    const g = new Generator(1000 + c.M * 7 + c.K * 13 + c.N * 31 + (c.bias ? 1 : 0));
    const q = quantize(randomF32(c.N * c.K, g, 0.5), c.N, c.K, c.format);
    const x = randomF32(c.M * c.K, g);
    const bias = c.bias ? randomF32(c.N, g) : null;
    const r = queueMatmul(ref, c, q, x, bias);
    const want = Float32Array.from(ref.read(r.out));
    r.free();
    const gq = queueMatmul(be, c, q, x, bias);
    const got = be.read(gq.out);
    gq.free();
    // |got − want| <= 1e-5 (|want| + Σ_k |x w| + |bias|): float32 sums against the ref's float64.
    const deq = dequantizeRows(q);
    for (let m = 0; m < c.M; m++) {
      for (let j = 0; j < c.N; j++) {
        let mag = bias ? Math.abs(bias[j]!) : 0;
        for (let k = 0; k < c.K; k++) mag += Math.abs(x[m * c.K + k]! * deq[j * c.K + k]!);
        const i = m * c.N + j;
        const err = Math.abs(got[i]! - want[i]!) / (Math.abs(want[i]!) + mag);
        if (!(err <= 1e-5)) assert.fail(`webgpu ${JSON.stringify(c)}: out[${m}, ${j}] = ${got[i]} vs ref ${want[i]} (error ${err})`);
        worst = Math.max(worst, err);
      }
    }
    n++;
  }
  console.log(`webgpu quantMatmul: ${n} cases, worst error ${worst.toExponential(2)}`);
});

test('webgpu: quantEmbedding equals dequantizeRows; out-of-range ids throw a RangeError at the next read', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  checkQuantEmbedding(be, /embedding/i, [[0, 37], [-1]]);
});

test('webgpu: quantMatmul and quantEmbedding refuse storages too small for the weight', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const q = quantize(randomF32(4 * 64, new Generator(1)), 4, 64, 'int4z');
  const w = uploadQuant(be, q);
  const x = be.alloc('float32', 64);
  const out = be.alloc('float32', 3);
  assert.throws(() => be.quantMatmul({ x, w, out, M: 1 }), /quantMatmul: out has 3 elements but 4 are needed/);
  assert.throws(() => be.quantMatmul({ x, w: { ...w, zeros: null }, out, M: 1 }), /zero points/);
  assert.throws(() => be.quantEmbedding(w, x, 1, out), /ids must be int32/);
  freeQuant(be, w);
  be.free(x);
  be.free(out);
});

test('webgpu: a quantized llama gives the cpu\'s quantized logits (int8 and int4, embedding and head too)', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const cpu = await getBackend('cpu');
  const cfg = decoderConfigFromHF({
    model_type: 'llama', vocab_size: 64, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 1, num_attention_heads: 2,
    num_key_value_heads: 1, max_position_embeddings: 32, tie_word_embeddings: true,
  });
  const ids = [[3, 14, 15, 9, 26, 5, 35, 8]];
  for (const format of ['int8', 'int4'] as const) {
    const logits = (backend: Backend): Float32Array => {
      const m = new DecoderLM(cfg, { backend, seed: 5 }).eval();
      quantizeModel(m, { format, embeddings: true });
      const out = noGrad(() => m.forward(tensor(ids, { backend, dtype: 'int32' })).logits.data() as Float32Array);
      m.dispose();
      return out;
    };
    const a = logits(be), b = logits(cpu);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst < 1e-4, `${format}: webgpu and cpu logits differ by ${worst}`);
  }
});
