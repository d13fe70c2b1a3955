// Hugging Face GPT-2 parity: attn loads a random-weight GPT-2 saved in HF's layout
// (test/fixtures/gpt2-tiny, made by tools/make_gpt2_fixture.py with PyTorch) and reproduces
// the log-probabilities HF's GPT2LMHeadModel computes, on the ref and cpu backends; saving
// and reloading round-trips exactly; checkpoints without the `transformer.` prefix load too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import { getBackend, logSoftmax, noGrad, RefBackend, Tensor, tensor, tidy, type DType } from '../src/index.js';
import { readSafetensorsFile, writeSafetensorsFile } from '../src/io/files.js';
import type { GPT } from '../src/models/gpt.js';
import { loadHFGPT2, saveHFGPT2 } from '../src/models/hf-gpt2-files.js';
import { gpt2ConfigFromHF, gpt2ConfigToHF, gpt2StateFromHF } from '../src/models/hf-gpt2.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/gpt2-tiny', import.meta.url));

interface Expected {
  sequences: { tokens: number[]; next_token_logprobs: number[] }[];
  logits: { tokens: number[]; values: number[][] };
}
const expected = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as Expected;
const hfConfig = JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8')) as Record<string, unknown>;
const ref = new RefBackend();

/** Largest |attn - HF| over every next-token log-prob and the short sequence's logits. */
function maxError(model: GPT, backend: Backend): number {
  const V = model.config.vocab_size;
  let worst = 0;
  noGrad(() =>
    tidy(() => {
      for (const seq of expected.sequences) {
        const T = seq.tokens.length;
        const idx = tensor(Int32Array.from(seq.tokens), { backend, shape: [1, T] });
        const lp = logSoftmax(model.forward(idx).logits, -1).data(); // (1, T, V)
        seq.next_token_logprobs.forEach((want, t) => {
          worst = Math.max(worst, Math.abs(lp[t * V + seq.tokens[t + 1]!]! - want));
        });
      }
      const { tokens, values } = expected.logits;
      const logits = model.forward(tensor(Int32Array.from(tokens), { backend, shape: [1, tokens.length] })).logits.data();
      values.flat().forEach((want, i) => (worst = Math.max(worst, Math.abs(logits[i]! - want))));
    }),
  );
  return worst;
}

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'attn-gpt2-'));
}

test('config.json maps to a GPT-2 GPTConfig and back', () => {
  const cfg = gpt2ConfigFromHF(hfConfig);
  assert.deepEqual(
    { ...cfg },
    {
      n_layer: 2, n_head: 4, n_embd: 32, block_size: 32, vocab_size: 100, dropout: 0.1, bias: true, tie_embeddings: true,
      pos_encoding: 'learned', norm_placement: 'pre', norm: 'layernorm', activation: 'gelu', layer_norm_epsilon: 1e-5,
    },
  );
  const back = gpt2ConfigToHF(cfg);
  for (const k of ['n_layer', 'n_head', 'n_embd', 'n_positions', 'vocab_size', 'layer_norm_epsilon', 'activation_function', 'tie_word_embeddings', 'model_type']) {
    assert.deepEqual(back[k], hfConfig[k], k);
  }
  assert.deepEqual(back['architectures'], ['GPT2LMHeadModel']);
  assert.equal(gpt2ConfigFromHF({ ...hfConfig, activation_function: 'gelu' }).activation, 'gelu_exact');
  assert.equal(gpt2ConfigFromHF({ ...hfConfig, activation_function: 'relu' }).activation, 'relu');
  assert.throws(() => gpt2ConfigFromHF({ ...hfConfig, model_type: 'llama' }), /model_type is 'llama'/);
  assert.throws(() => gpt2ConfigFromHF({ ...hfConfig, activation_function: 'swish' }), /activation_function 'swish'/);
  assert.throws(() => gpt2ConfigToHF({ ...cfg, pos_encoding: 'rope' }), /pos_encoding 'rope'/);
});

test('matches Hugging Face GPT-2 log-probs on ref (float32 and float64)', async () => {
  for (const [dtype, tol] of [['float32', 1e-4], ['float64', 1e-9]] as [DType, number][]) {
    const model = await loadHFGPT2(FIXTURE, { backend: ref, dtype });
    assert.equal(model.training, false, 'loaded models are in eval mode');
    const err = maxError(model, ref);
    assert.ok(err < tol, `${dtype}: max |attn - HF| = ${err} (tolerance ${tol})`);
    model.dispose();
  }
});

test('matches Hugging Face GPT-2 log-probs on cpu', async () => {
  const cpu = await getBackend('cpu');
  const model = await loadHFGPT2(FIXTURE, { backend: cpu });
  const err = maxError(model, cpu);
  assert.ok(err < 1e-4, `cpu: max |attn - HF| = ${err}`);
  model.dispose();
});

test('KV-cached decoding of the HF model reproduces the reference log-probs', async () => {
  const model = await loadHFGPT2(FIXTURE, { backend: ref });
  const seq = expected.sequences[0]!;
  const cache = model.createKVCache();
  let worst = 0;
  noGrad(() => {
    for (let t = 0; t < seq.tokens.length - 1; t++) {
      tidy(() => {
        const idx = tensor([seq.tokens[t]!], { backend: ref, dtype: 'int32', shape: [1, 1] });
        const lp = logSoftmax(model.forwardWithCache(idx, cache).logits, -1).data();
        worst = Math.max(worst, Math.abs(lp[seq.tokens[t + 1]!]! - seq.next_token_logprobs[t]!));
      });
    }
  });
  cache.dispose();
  assert.ok(worst < 1e-4, `max error ${worst}`);
  model.dispose();
});

test('save with saveHFGPT2 and reload: identical tensors, HF layout on disk', async () => {
  const dir = await tempDir();
  try {
    const model = await loadHFGPT2(FIXTURE, { backend: ref });
    await saveHFGPT2(model, dir);
    const again = await loadHFGPT2(dir, { backend: ref });
    const a = model.stateDict();
    const b = again.stateDict();
    assert.deepEqual([...b.keys()], [...a.keys()]);
    for (const [k, t] of a) assert.deepEqual(b.get(k)!.data(), t.data(), k);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))['n_positions'], 32);

    // On disk: every weight of the original file bit for bit (Conv1D still [in, out]),
    // minus the mask buffers; no lm_head since it is tied.
    const orig = (await readSafetensorsFile(join(FIXTURE, 'model.safetensors'))).tensors;
    const saved = await readSafetensorsFile(join(dir, 'model.safetensors'));
    assert.equal(saved.metadata['format'], 'pt');
    const want = [...orig.keys()].filter((k) => !k.endsWith('.attn.bias')).sort();
    assert.deepEqual([...saved.tensors.keys()].sort(), want);
    for (const k of want) {
      assert.deepEqual(saved.tensors.get(k)!.shape, orig.get(k)!.shape, k);
      assert.deepEqual(saved.tensors.get(k)!.data, orig.get(k)!.data, k);
    }
    model.dispose();
    again.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a checkpoint without the transformer. prefix (GPT2Model names) loads the same', async () => {
  const dir = await tempDir();
  try {
    const orig = (await readSafetensorsFile(join(FIXTURE, 'model.safetensors'))).tensors;
    const bare = new Map([...orig].map(([k, v]) => [k.replace(/^transformer\./, ''), v]));
    assert.ok(!bare.has('transformer.wte.weight') && bare.has('wte.weight') && bare.has('h.0.attn.bias'));
    await writeSafetensorsFile(join(dir, 'model.safetensors'), bare);
    await writeFile(join(dir, 'config.json'), JSON.stringify(hfConfig));
    const a = await loadHFGPT2(FIXTURE, { backend: ref });
    const b = await loadHFGPT2(dir, { backend: ref });
    for (const [k, t] of a.stateDict()) assert.deepEqual(b.stateDict().get(k)!.data(), t.data(), k);
    assert.ok(maxError(b, ref) < 1e-4);
    a.dispose();
    b.dispose();

    // The mapping itself: Conv1D transposed to [out, in], buffers dropped, a tied lm_head dropped.
    const state = gpt2StateFromHF(new Map([...bare, ['lm_head.weight', orig.get('transformer.wte.weight')!]]));
    assert.deepEqual(state.get('transformer.h.0.attn.c_attn.weight')!.shape, [96, 32]);
    assert.deepEqual(state.get('transformer.h.1.mlp.c_proj.weight')!.shape, [32, 128]);
    assert.ok(!state.has('transformer.h.0.attn.bias') && !state.has('lm_head.weight'));
    const w = orig.get('transformer.h.0.mlp.c_fc.weight')!; // [32, 128]
    const wt = state.get('transformer.h.0.mlp.c_fc.weight')!; // [128, 32]
    const wtData = wt instanceof Tensor ? wt.data() : wt.data;
    assert.equal(wtData[5 * 32 + 3], w.data[3 * 128 + 5]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
