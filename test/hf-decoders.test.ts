// Parity of the Hugging Face decoder families (llama, mistral, qwen2, qwen3, phi) with an
// independent PyTorch reference (tools/hf_decoders_reference.py, float64): tiny random-weight
// checkpoints in the HF layout (float32, bfloat16, float16; one sharded) under
// test/fixtures/hf-decoders, each with the log-softmax of every position. Checked: the full
// forward, the KV cache (prefill then one token at a time, past the sliding window), every
// rope_scaling type, bf16, the save round trip, clear refusals of bad checkpoints, and a PEFT
// LoRA adapter's forward and gradients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import { getBackend, logSoftmax, noGrad, RefBackend, tensor, tidy, withMatmulPrecision } from '../src/index.js';
import { readSafetensorsFile, writeSafetensorsFile } from '../src/io/files.js';
import type { DecoderLM } from '../src/models/decoder.js';
import { loadDecoderDir, saveDecoderDir } from '../src/models/hf-decoder-files.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { loadAdapters, saveAdapters } from '../src/nn/lora-files.js';
import { applyLora, mergeLora } from '../src/nn/lora.js';
import { webgpu } from './webgpu-helpers.js';

const ROOT = fileURLToPath(new URL('../../test/fixtures/hf-decoders', import.meta.url));
const CASES = readdirSync(ROOT).sort();
const cpu = await getBackend('cpu');

interface Expected {
  tokens: number[];
  log_softmax: number[];
  vocab_size: number;
  lora?: { log_softmax: number[]; loss: number; grads: Record<string, number[]> };
}
const expectedOf = (c: string): Expected => JSON.parse(readFileSync(join(ROOT, c, 'expected.json'), 'utf8')) as Expected;

function logSoftmaxOf(model: DecoderLM, tokens: number[], backend: Backend = cpu): Float32Array | Float64Array {
  return noGrad(() => tidy(() => logSoftmax(model.forward(tensor(Int32Array.from(tokens), { backend, shape: [1, tokens.length] })).logits, -1).data() as Float32Array));
}

/** Logits by prefilling `prefill` tokens, then feeding one token per step through the KV cache. */
function cachedLogSoftmax(model: DecoderLM, tokens: number[], prefill: number, backend: Backend = cpu): number[] {
  const cache = model.createKVCache();
  const out: number[] = [];
  try {
    noGrad(() => {
      for (let at = 0; at < tokens.length;) {
        const n = at === 0 ? prefill : 1;
        tidy(() => {
          const lp = logSoftmax(model.forwardWithCache(tensor(Int32Array.from(tokens.slice(at, at + n)), { backend, shape: [1, n] }), cache).logits, -1).data();
          out.push(...lp);
        });
        at += n;
      }
    });
  } finally {
    cache.dispose();
  }
  return out;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

for (const c of CASES) {
  test(`hf ${c}: log-probabilities match the PyTorch reference within 1e-4, with and without the KV cache`, async (t) => {
    const exp = expectedOf(c);
    const { model, config } = await loadDecoderDir(join(ROOT, c), { backend: cpu });
    try {
      const full = logSoftmaxOf(model, exp.tokens);
      const d = maxDiff(full, exp.log_softmax);
      t.diagnostic(`${c}: ${exp.tokens.length} positions, max |attn - torch| = ${d.toExponential(2)}`);
      assert.ok(d < 1e-4, `${c}: full forward differs by ${d}`);
      // Dynamic NTK scaling changes every frequency once a sequence passes the trained context,
      // so (in transformers too) cached decoding past it differs from one long forward; check
      // the cache within the trained context there.
      const n = config.rope_scaling?.rope_type === 'dynamic' ? config.max_position_embeddings : exp.tokens.length;
      const cached = cachedLogSoftmax(model, exp.tokens.slice(0, n), 3);
      const want = config.rope_scaling?.rope_type === 'dynamic' ? logSoftmaxOf(model, exp.tokens.slice(0, n)) : exp.log_softmax;
      const dc = maxDiff(cached, want);
      t.diagnostic(`${c}: KV cache (prefill 3, then 1 token per step to ${n}${config.sliding_window ? `, window ${config.sliding_window}` : ''}) max diff ${dc.toExponential(2)}`);
      assert.ok(dc < 1e-4, `${c}: cached decoding differs by ${dc}`);
    } finally {
      model.dispose();
    }
  });
}

test('hf decoders: bfloat16 weights and bfloat16 matmuls stay close to the float64 reference', async (t) => {
  for (const c of CASES) {
    const exp = expectedOf(c);
    const { model } = await loadDecoderDir(join(ROOT, c), { backend: cpu });
    try {
      model.halfWeights('bfloat16');
      const lp = withMatmulPrecision('bfloat16', () => logSoftmaxOf(model, exp.tokens));
      // bf16 keeps 8 bits of mantissa: errors of a few 1e-2 in log-probabilities are expected.
      const d = maxDiff(lp, exp.log_softmax);
      t.diagnostic(`${c} bf16: max diff ${d.toFixed(4)}`);
      assert.ok(d < 0.15, `${c}: bf16 differs by ${d}`);
    } finally {
      model.dispose();
    }
  }
});

test('hf decoders: save writes the Hugging Face layout and loads back to the same logits (float32 exact, bfloat16 rounded)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-hfdec-'));
  try {
    for (const c of CASES) {
      const exp = expectedOf(c);
      const a = await loadDecoderDir(join(ROOT, c), { backend: cpu });
      await saveDecoderDir(a.model, join(dir, c), { hfConfig: a.hfConfig });
      const b = await loadDecoderDir(join(dir, c), { backend: cpu });
      assert.deepEqual([...logSoftmaxOf(b.model, exp.tokens)], [...logSoftmaxOf(a.model, exp.tokens)], `${c}: round trip changed the logits`);
      assert.deepEqual(b.config, a.config);
      const saved = JSON.parse(readFileSync(join(dir, c, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(saved['model_type'], a.config.model_type);
      const names = [...(await readSafetensorsFile(join(dir, c, 'model.safetensors'))).tensors.keys()].sort();
      assert.deepEqual(names, [...a.model.stateDict().keys()].sort());
      await saveDecoderDir(a.model, join(dir, `${c}-bf16`), { hfConfig: a.hfConfig, dtype: 'bfloat16' });
      const st = await readSafetensorsFile(join(dir, `${c}-bf16`, 'model.safetensors'));
      assert.ok([...st.tensors.values()].every((e) => e.dtype === 'BF16'));
      // Sharded: shards of at most 4 KiB and an index; loads back to the same logits.
      await saveDecoderDir(a.model, join(dir, `${c}-sharded`), { hfConfig: a.hfConfig, maxShardBytes: 4096 });
      const index = JSON.parse(readFileSync(join(dir, `${c}-sharded`, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
      assert.ok(new Set(Object.values(index.weight_map)).size > 2);
      const sh = await loadDecoderDir(join(dir, `${c}-sharded`), { backend: cpu });
      assert.deepEqual([...logSoftmaxOf(sh.model, exp.tokens)], [...logSoftmaxOf(a.model, exp.tokens)], `${c}: sharded round trip`);
      sh.model.dispose();
      a.model.dispose();
      b.model.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('hf decoders: a missing, unexpected or mis-shaped tensor is refused naming it and both shapes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-hfdec-bad-'));
  try {
    const src = join(ROOT, 'llama');
    const st = await readSafetensorsFile(join(src, 'model.safetensors'));
    const write = async (name: string, edit: (m: Map<string, { dtype: 'F32'; shape: number[]; data: ArrayLike<number> }>) => void) => {
      const m = new Map([...st.tensors].map(([k, v]) => [k, { dtype: 'F32' as const, shape: v.shape, data: v.data }]));
      edit(m);
      await mkdir(join(dir, name), { recursive: true });
      await writeFile(join(dir, name, 'config.json'), readFileSync(join(src, 'config.json')));
      await writeSafetensorsFile(join(dir, name, 'model.safetensors'), m);
    };
    await write('missing', (m) => m.delete('model.layers.1.mlp.up_proj.weight'));
    await assert.rejects(loadDecoderDir(join(dir, 'missing'), { backend: cpu }), /missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight' \[40, 16\]/);
    await write('extra', (m) => m.set('model.layers.0.self_attn.rotary_emb.inv_freq', { dtype: 'F32', shape: [2], data: [1, 2] }));
    await assert.rejects(loadDecoderDir(join(dir, 'extra'), { backend: cpu }), /unexpected tensor 'model\.layers\.0\.self_attn\.rotary_emb\.inv_freq'/);
    await write('shape', (m) => m.set('model.norm.weight', { dtype: 'F32', shape: [15], data: new Float32Array(15) }));
    await assert.rejects(loadDecoderDir(join(dir, 'shape'), { backend: cpu }), /'model\.norm\.weight' has shape \[15\], the model expects \[16\]/);
    assert.throws(() => decoderConfigFromHF({ model_type: 'llama', hidden_size: 16, num_attention_heads: 4, rope_scaling: { rope_type: 'yarn', factor: 4 } }), /rope_scaling type 'yarn' is not supported/);
    assert.throws(() => decoderConfigFromHF({ model_type: 'gemma' }), /model_type 'gemma' is not a decoder family/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('hf llama + PEFT LoRA adapter: forward and adapter gradients match the PyTorch reference', async (t) => {
  const exp = expectedOf('llama');
  const want = exp.lora!;
  const ref = new RefBackend();
  const { model } = await loadDecoderDir(join(ROOT, 'llama'), { backend: ref, dtype: 'float64' });
  try {
    const handle = await loadAdapters(model, join(ROOT, 'llama', 'adapter'));
    assert.deepEqual(handle.layers.map((l) => l.name), ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
    const d = maxDiff(logSoftmaxOf(model, exp.tokens, ref), want.log_softmax);
    assert.ok(d < 1e-6, `LoRA forward differs by ${d}`);
    model.train();
    const T = exp.tokens.length;
    tidy(() => {
      const idx = tensor(Int32Array.from(exp.tokens.slice(0, T - 1)), { backend: ref, shape: [1, T - 1] });
      const targets = tensor(Int32Array.from(exp.tokens.slice(1)), { backend: ref, shape: [1, T - 1] });
      const loss = model.forward(idx, targets).loss!;
      assert.ok(Math.abs(loss.item() - want.loss) < 1e-9, `loss ${loss.item()} vs ${want.loss}`);
      loss.backward();
    });
    let worst = 0;
    for (const l of handle.layers) {
      worst = Math.max(worst, maxDiff(l.A.grad!.data(), want.grads[`${l.name}.lora_A`]!), maxDiff(l.B.grad!.data(), want.grads[`${l.name}.lora_B`]!));
    }
    t.diagnostic(`LoRA gradients (float64): max diff ${worst.toExponential(2)}`);
    assert.ok(worst < 1e-8, `LoRA gradients differ by ${worst}`);
  } finally {
    model.dispose();
  }
});

test('hf decoders on webgpu: every family matches the reference within 1e-4, with and without the KV cache; float16 weights stay close', async (t) => {
  const gpu = await webgpu();
  if (typeof gpu === 'string') return t.skip(`no webgpu: ${gpu}`);
  for (const c of CASES) {
    const exp = expectedOf(c);
    const { model, config } = await loadDecoderDir(join(ROOT, c), { backend: gpu });
    try {
      const d = maxDiff(logSoftmaxOf(model, exp.tokens, gpu), exp.log_softmax);
      const n = config.rope_scaling?.rope_type === 'dynamic' ? config.max_position_embeddings : exp.tokens.length;
      const want = config.rope_scaling?.rope_type === 'dynamic' ? logSoftmaxOf(model, exp.tokens.slice(0, n), gpu) : exp.log_softmax;
      const dc = maxDiff(cachedLogSoftmax(model, exp.tokens.slice(0, n), 3, gpu), want);
      t.diagnostic(`${c} webgpu: full ${d.toExponential(2)}, cached ${dc.toExponential(2)}`);
      assert.ok(d < 1e-4 && dc < 1e-4, `${c} on webgpu: full ${d}, cached ${dc}`);
      if (c === 'qwen3') {
        model.halfWeights('float16');
        const dh = maxDiff(logSoftmaxOf(model, exp.tokens, gpu), exp.log_softmax);
        t.diagnostic(`${c} webgpu float16 weights: ${dh.toFixed(4)}`);
        assert.ok(dh < 0.05, `${c}: float16 weights differ by ${dh}`);
      }
    } finally {
      model.dispose();
    }
  }
});

test('hf decoders: LoRA on every family: only adapters train, the PEFT files load back, merging keeps the logits', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-hfdec-lora-'));
  try {
    for (const c of CASES) {
      const exp = expectedOf(c);
      const { model } = await loadDecoderDir(join(ROOT, c), { backend: cpu });
      const targets = c === 'phi' ? ['q_proj', 'v_proj', 'dense', 'fc1'] : ['q_proj', 'v_proj', 'o_proj', 'gate_proj'];
      const h = applyLora(model, { rank: 2, alpha: 4, targets, seed: 3 });
      assert.equal(h.layers.length, 4 * model.config.num_hidden_layers, c);
      for (const l of h.layers) noGrad(() => l.B.backend.write(l.B.storage, Float32Array.from({ length: l.B.size }, (_, i) => Math.sin(i + 1) * 0.1), l.B.offset));
      model.train();
      tidy(() => {
        const T = exp.tokens.length;
        const x = tensor(Int32Array.from(exp.tokens.slice(0, T - 1)), { backend: cpu, shape: [1, T - 1] });
        const y = tensor(Int32Array.from(exp.tokens.slice(1)), { backend: cpu, shape: [1, T - 1] });
        model.forward(x, y).loss!.backward();
      });
      const withGrad = model.namedParameters().filter(([, p]) => p.grad).map(([n]) => n);
      assert.equal(withGrad.length, 2 * h.layers.length, `${c}: only the adapters get gradients`);
      model.eval();
      const adapted = logSoftmaxOf(model, exp.tokens);
      await saveAdapters(h, join(dir, c), { baseModel: join(ROOT, c), taskType: 'CAUSAL_LM' });
      const again = await loadDecoderDir(join(ROOT, c), { backend: cpu });
      await loadAdapters(again.model, join(dir, c));
      assert.ok(maxDiff(logSoftmaxOf(again.model, exp.tokens), adapted) < 1e-6, `${c}: adapters saved and loaded`);
      again.model.dispose();
      mergeLora(h);
      assert.ok(maxDiff(logSoftmaxOf(model, exp.tokens), adapted) < 1e-4, `${c}: merged`);
      model.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('hf decoders on webgpu with bfloat16 matmuls: the logits of the cpu bf16 kernels', async (t) => {
  const gpu = await webgpu();
  if (typeof gpu === 'string') return t.skip(`no webgpu: ${gpu}`);
  for (const c of ['llama', 'qwen3', 'phi']) {
    const exp = expectedOf(c);
    const onCpu = await loadDecoderDir(join(ROOT, c), { backend: cpu });
    const onGpu = await loadDecoderDir(join(ROOT, c), { backend: gpu });
    try {
      const a = withMatmulPrecision('bfloat16', () => logSoftmaxOf(onCpu.model, exp.tokens));
      const b = withMatmulPrecision('bfloat16', () => logSoftmaxOf(onGpu.model, exp.tokens, gpu));
      const f32 = logSoftmaxOf(onGpu.model, exp.tokens, gpu);
      const d = maxDiff(a, b);
      t.diagnostic(`${c}: webgpu bf16 vs cpu bf16 ${d.toExponential(2)}; bf16 vs f32 on webgpu ${maxDiff(b, f32).toExponential(2)}`);
      assert.ok(d < 1e-4, `${c}: webgpu bf16 differs from cpu bf16 by ${d}`);
      assert.ok(maxDiff(b, f32) > 1e-4, `${c}: bf16 changed nothing on webgpu`);
    } finally {
      onCpu.model.dispose();
      onGpu.model.dispose();
    }
  }
});
