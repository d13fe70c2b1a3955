// The fused decode step (src/models/decoder-fused.ts, native/decode.cc) against the op-by-op
// forward on the same cache: attn's GPT (GPT-2 layout; rope, GQA, RMSNorm, ReLU; sinusoidal), and llama (untied), qwen2 (q/k/v biases, GQA 4/1, sliding window, tied),
// qwen3 (q/k norm, head_dim 32), float32 and each quantized format (embedding included), past the cache's first
// capacity of 64 (a grown buffer means a new plan), alternating with op-by-op steps on the same
// cache; the models it does not cover say why and run op by op.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getBackend, noGrad, tensor, tidy, type QuantFormat } from '../src/index.js';
import { DecoderLM } from '../src/models/decoder.js';
import { fusedDecode, fusedDecodeStep, fusedDecodeUnsupported, gptFusedDecodeUnsupported } from '../src/models/decoder-fused.js';
import { GPT, type GPTConfig } from '../src/models/gpt.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { quantizeModel } from '../src/nn/quantized.js';

const cpu = await getBackend('cpu');
const native = !!cpu.decodeStep;

const FAMILIES: Record<string, Record<string, unknown>> = {
  llama: { model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 97, max_position_embeddings: 256, tie_word_embeddings: false },
  qwen2: { model_type: 'qwen2', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 1, vocab_size: 97, max_position_embeddings: 256, tie_word_embeddings: true, use_sliding_window: true, sliding_window: 5, max_window_layers: 1 },
  qwen3: { model_type: 'qwen3', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32, vocab_size: 97, max_position_embeddings: 256, tie_word_embeddings: true },
};

const ids = Array.from({ length: 90 }, (_, i) => (i * 31 + 7) % 97);

/** Logits of steps 5.. after a 5-token prefill; `fused(t)` says whether step t may take the fused path. */
function steps(m: DecoderLM | GPT, fused: (t: number) => boolean): Float32Array[] {
  return noGrad(() => {
    const cache = m.createKVCache();
    const out: Float32Array[] = [];
    try {
      tidy(() => m.forwardWithCache(tensor([ids.slice(0, 5)], { backend: cpu, dtype: 'int32' }), cache));
      for (let t = 5; t < ids.length; t++) {
        fusedDecode.enabled = fused(t);
        out.push(tidy(() => m.forwardWithCache(tensor([[ids[t]!]], { backend: cpu, dtype: 'int32' }), cache).logits.data() as Float32Array));
      }
      assert.equal(cache.length, ids.length);
      assert.equal(cache.layers[0]!.k!.shape[2], ids.length);
    } finally {
      fusedDecode.enabled = true;
      cache.reset();
    }
    return out;
  });
}

for (const [family, hf] of Object.entries(FAMILIES)) {
  for (const format of [null, 'int8', 'int4', 'int4z'] as (QuantFormat | null)[]) {
    test(`fused decode, ${family} ${format ?? 'float32'}: the logits of every step equal the op-by-op forward's`, { skip: !native && 'no native addon' }, () => {
      const m = new DecoderLM(decoderConfigFromHF(hf), { backend: cpu, seed: 3 }).eval();
      try {
        if (format) quantizeModel(m, { format, head: true, embeddings: true }); // the embedding (and a tied head) too
        assert.equal(fusedDecodeUnsupported(m), null);
        const ref = steps(m, () => false);
        const all = steps(m, () => true);
        const mixed = steps(m, (t) => t % 3 !== 0); // the two paths share the cache
        for (let i = 0; i < ref.length; i++) {
          assert.deepEqual(all[i], ref[i], `step ${i + 5}`);
          assert.deepEqual(mixed[i], ref[i], `step ${i + 5}, alternating`);
        }
      } finally {
        m.dispose();
      }
    });
  }
}

const GPTS: Record<string, Partial<GPTConfig>> = {
  'GPT-2 layout (learned positions, biases, tanh GELU, tied)': { n_layer: 2, n_head: 4, n_embd: 64, block_size: 128, vocab_size: 97, dropout: 0, bias: true, tie_embeddings: true },
  'rope, GQA 4/2, RMSNorm, ReLU, no biases, untied': { n_layer: 2, n_head: 4, n_kv_head: 2, n_embd: 64, block_size: 128, vocab_size: 97, dropout: 0, bias: false, tie_embeddings: false, pos_encoding: 'rope', norm: 'rmsnorm', activation: 'relu' },
  'sinusoidal positions': { n_layer: 1, n_head: 2, n_embd: 64, block_size: 128, vocab_size: 97, dropout: 0, pos_encoding: 'sinusoidal' },
};

for (const [label, cfg] of Object.entries(GPTS)) {
  for (const format of [null, 'int8', 'int4'] as (QuantFormat | null)[]) {
    test(`fused decode, GPT ${label} ${format ?? 'float32'}: every step equals the op-by-op forward`, { skip: !native && 'no native addon' }, () => {
      const m = new GPT(cfg, { backend: cpu, seed: 5 }).eval();
      try {
        if (format) quantizeModel(m, { format, head: true, embeddings: true });
        assert.equal(gptFusedDecodeUnsupported(m), null);
        const ref = steps(m, () => false);
        const all = steps(m, () => true);
        const mixed = steps(m, (t) => t % 3 !== 0);
        for (let i = 0; i < ref.length; i++) {
          assert.deepEqual(all[i], ref[i], `step ${i + 5}`);
          assert.deepEqual(mixed[i], ref[i], `step ${i + 5}, alternating`);
        }
      } finally {
        m.dispose();
      }
    });
  }
}

test('fused decode: what it does not cover runs op by op, and says why', { skip: !native && 'no native addon' }, () => {
  const phi = new DecoderLM(decoderConfigFromHF({ model_type: 'phi', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 1, num_attention_heads: 4, vocab_size: 97, max_position_embeddings: 64 }), { backend: cpu }).eval();
  assert.match(fusedDecodeUnsupported(phi)!, /pre-norm RMSNorm|LayerNorm/);
  const swiglu = new GPT({ ...GPTS['sinusoidal positions']!, activation: 'swiglu' }, { backend: cpu });
  assert.match(gptFusedDecodeUnsupported(swiglu.eval())!, /MLP 'swiglu'/);
  const moe = new GPT({ ...GPTS['sinusoidal positions']!, moe_experts: 2 }, { backend: cpu });
  assert.match(gptFusedDecodeUnsupported(moe.eval())!, /MLP 'mixture of experts'/);
  const post = new GPT({ ...GPTS['sinusoidal positions']!, norm_placement: 'post' }, { backend: cpu });
  assert.equal(gptFusedDecodeUnsupported(post.eval()), 'not pre-norm');
  for (const g of [swiglu, moe, post]) g.dispose();
  const llama = new DecoderLM(decoderConfigFromHF(FAMILIES['llama']!), { backend: cpu }).eval();
  llama.train();
  assert.equal(fusedDecodeUnsupported(llama), 'training mode');
  llama.eval();
  const cache = llama.createKVCache();
  try {
    noGrad(() => tidy(() => llama.forwardWithCache(tensor([[1, 2]], { backend: cpu, dtype: 'int32' }), cache)));
    // With gradients on, or two tokens at once, the op-by-op forward runs.
    assert.equal(fusedDecodeStep(llama, tensor([[3]], { backend: cpu, dtype: 'int32' }), cache), null);
    assert.throws(() => noGrad(() => fusedDecodeStep(llama, tensor([[97]], { backend: cpu, dtype: 'int32' }), cache)), /token 97 is outside the vocabulary/);
  } finally {
    cache.reset();
    phi.dispose();
    llama.dispose();
  }
});
