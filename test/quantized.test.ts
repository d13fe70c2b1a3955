// Weight-only quantized models: a quantized model computes exactly what a float model with the
// dequantized weights computes (to float32 rounding), with and without the KV cache; the
// checkpoint of a quantized model reloads bit for bit; float weights quantized as they stream in
// equal a quantized copy; gradients reach the input of a quantized layer; bad input is refused.
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { mkdtempSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dequantizeRows, getBackend, linear, mul, noGrad, sum, quantize, QuantizedWeight, quantLinear, tensor, type QuantFormat } from '../src/index.js';
import { DecoderLM } from '../src/models/decoder.js';
import { GPT } from '../src/models/gpt.js';
import { loadGGUF, saveGGUF } from '../src/models/gguf-decoder.js';
import { GGMLType, parseGGUFHeader } from '../src/io/gguf.js';
import { modelToCheckpointTensors } from '../src/models/checkpoint-format.js';
import { load, save } from '../src/models/files.js';
import { loadGPTCheckpoint } from '../src/models/gpt-checkpoint.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { loadDecoderDir, saveDecoderDir } from '../src/models/hf-decoder-files.js';
import { matrixModules, quantizeModel, type QuantizeSpec } from '../src/nn/quantized.js';
import { applyLora, mergeLora } from '../src/nn/lora.js';
import { AdamW } from '../src/train/optim.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { assertClose } from './helpers.js';

const cpu = await getBackend('cpu');
const root = mkdtempSync(join(tmpdir(), 'attn-quant-'));
const FORMATS: QuantFormat[] = ['int8', 'int4', 'int4z'];

function llama(seed: number): DecoderLM {
  const cfg = decoderConfigFromHF({
    model_type: 'llama', vocab_size: 96, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: false,
  });
  return new DecoderLM(cfg, { backend: cpu, seed }).eval();
}

/** A float copy of `model` whose matrices hold what spec would quantize them to. */
function dequantizedTwin(make: () => DecoderLM | GPT, spec: QuantizeSpec, quantizedNames: string[]): DecoderLM | GPT {
  const twin = make();
  const byName = new Map(matrixModules(twin));
  for (const wname of quantizedNames) {
    const m = byName.get(wname.replace(/\.weight$/, ''))!;
    const [N, K] = m.matrixShape();
    const deq = dequantizeRows(quantize(m.weight.data() as Float32Array, N, K, spec.format));
    cpu.write(m.weight.storage, deq, m.weight.offset);
  }
  return twin;
}

const ids = (T: number, V: number, seed: number): number[] => Array.from({ length: T }, (_, i) => (i * 37 + seed * 11 + 5) % V);

function logits(model: DecoderLM | GPT, tokens: number[]): Float32Array {
  return noGrad(() => model.forward(tensor([tokens], { dtype: 'int32', backend: cpu })).logits.data() as Float32Array);
}

for (const format of FORMATS) {
  test(`${format}: a quantized llama equals the float llama with dequantized weights; the KV cache agrees`, () => {
    const model = llama(1);
    const spec: QuantizeSpec = { format, embeddings: true, head: true };
    const report = quantizeModel(model, spec);
    // q, k, v, o, gate, up, down per layer, the embedding and the head.
    assert.equal(report.quantized.length, 2 * 7 + 2);
    assert.equal(report.kept.length, 0);
    const ratio = report.quantizedBytes / report.floatBytes;
    assert.ok(format === 'int8' ? ratio < 0.27 : ratio < 0.17, `${format}: ${ratio.toFixed(3)} of float32`);
    const twin = dequantizedTwin(() => llama(1), spec, report.quantized);
    const tokens = ids(20, 96, 3);
    assertClose(logits(model, tokens), logits(twin, tokens), 1e-4, 1e-4, `${format} logits`);
    // Decode one token at a time through the cache: the same rows as the full forward.
    const full = logits(model, tokens);
    const cache = model.createKVCache();
    const stepped: number[] = [];
    noGrad(() => {
      stepped.push(...(model.forwardWithCache(tensor([tokens.slice(0, 8)], { dtype: 'int32', backend: cpu }), cache).logits.data() as Float32Array));
      for (let t = 8; t < tokens.length; t++) stepped.push(...(model.forwardWithCache(tensor([[tokens[t]!]], { dtype: 'int32', backend: cpu }), cache).logits.data() as Float32Array));
    });
    assertClose(stepped, full, 1e-4, 1e-4, `${format} cached decode`);
  });
}

test('embeddings and the head stay float unless asked; a GPT quantizes too', () => {
  const model = llama(2);
  const report = quantizeModel(model, { format: 'int8' });
  assert.deepEqual(report.kept.map((k) => k.name).sort(), ['lm_head.weight', 'model.embed_tokens.weight']);
  assert.match(report.kept[0]!.why, /embedding|LM head/);
  const gpt = new GPT({ vocab_size: 80, block_size: 32, n_layer: 2, n_head: 2, n_embd: 64, tie_embeddings: true }, { backend: cpu, seed: 4 }).eval();
  const r2 = quantizeModel(gpt, { format: 'int4', embeddings: true });
  assert.ok(r2.quantized.includes('transformer.wte.weight'));
  const twin = dequantizedTwin(() => new GPT({ vocab_size: 80, block_size: 32, n_layer: 2, n_head: 2, n_embd: 64, tie_embeddings: true }, { backend: cpu, seed: 4 }).eval(), { format: 'int4' }, r2.quantized);
  const tokens = ids(16, 80, 1);
  assertClose(logits(gpt, tokens), logits(twin, tokens), 1e-4, 1e-4, 'gpt int4 with a quantized tied head');
});

test('a quantized checkpoint reloads bit for bit; float weights quantized while streaming equal quantizeModel', async () => {
  const floatDir = join(root, 'float');
  await saveDecoderDir(llama(3), floatDir);
  for (const format of FORMATS) {
    const model = llama(3);
    quantizeModel(model, { format, head: true });
    const dir = join(root, format);
    await saveDecoderDir(model, dir);
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { quantization_config: { format: string; modules: string[] } };
    assert.equal(cfg.quantization_config.format, format);
    assert.equal(cfg.quantization_config.modules.length, 15);
    const size = statSync(join(dir, 'model.safetensors')).size / statSync(join(floatDir, 'model.safetensors')).size;
    assert.ok(size < (format === 'int8' ? 0.4 : 0.3), `${format} file is ${size.toFixed(3)} of float32 (the float embedding included)`);
    const back = (await loadDecoderDir(dir, { backend: cpu })).model;
    assert.ok(back.lm_head!.quant && !back.model.embed_tokens.quant);
    const tokens = ids(12, 96, 7);
    assert.deepEqual(logits(back, tokens), logits(model, tokens));
    const streamed = (await loadDecoderDir(floatDir, { backend: cpu, quantize: { format, head: true } })).model;
    assert.deepEqual(logits(streamed, tokens), logits(model, tokens));
    await assert.rejects(loadDecoderDir(dir, { backend: cpu, quantize: { format: format === 'int8' ? 'int4' : 'int8' } }), /quantized as .* loads as/);
  }
});

test('a GPT checkpoint loaded with quantize is built quantized and equals quantizeModel on the float load (Conv1D layout)', async () => {
  const cfg = { vocab_size: 80, block_size: 32, n_layer: 2, n_head: 2, n_embd: 64, tie_embeddings: true };
  const dir = join(root, 'gpt-float');
  await save(dir, new GPT(cfg, { backend: cpu, seed: 6 }).eval());
  const tokens = ids(16, 80, 2);
  for (const format of FORMATS) {
    const spec: QuantizeSpec = { format, embeddings: true };
    const reference = (await loadGPTCheckpoint(dir, { backend: cpu })).model;
    quantizeModel(reference, spec);
    const loaded = (await load(dir, { backend: cpu, quantize: spec })).model as GPT;
    const names = matrixModules(loaded).filter(([, m]) => m.quant).map(([n]) => n);
    assert.equal(names.length, 9, `${format}: c_attn, c_proj, c_fc, mlp c_proj of 2 layers and wte are quantized`);
    assert.deepEqual(logits(loaded, tokens), logits(reference, tokens));
  }
});

test('a packed entry of the wrong shape or a missing scale is refused, naming the file and tensor', async () => {
  const dir = join(root, 'int8');
  const cfgPath = join(dir, 'config.json');
  const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as { quantization_config: { format: string } };
  cfg.quantization_config.format = 'int4';
  await writeFile(cfgPath, JSON.stringify(cfg));
  await assert.rejects(loadDecoderDir(dir, { backend: cpu }), (e: Error) => /model\.safetensors/.test(e.message) && /weight.*I8 .*needs U8/.test(e.message));
});

test('gradients reach the input and the bias of a quantized linear', () => {
  const N = 6, K = 64;
  const w = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 0.7));
  const q = QuantizedWeight.fromArrays(quantize(w, N, K, 'int4z'), cpu);
  const deq = tensor(Array.from(dequantizeRows(q.toArrays())), { backend: cpu }).reshape([N, K]);
  const xs = Array.from({ length: 3 * K }, (_, i) => Math.cos(i));
  const x1 = tensor(xs, { backend: cpu }).reshape([3, K]);
  x1.requiresGrad = true;
  const b1 = tensor([1, 2, 3, 4, 5, 6], { backend: cpu, requiresGrad: true });
  const y1 = quantLinear(x1, q, b1, 'gelu');
  sum(mul(y1, y1)).backward();
  const x2 = tensor(xs, { backend: cpu }).reshape([3, K]);
  x2.requiresGrad = true;
  const b2 = tensor([1, 2, 3, 4, 5, 6], { backend: cpu, requiresGrad: true });
  const y2 = linear(x2, deq, b2, 'gelu');
  sum(mul(y2, y2)).backward();
  assertClose(x1.grad!.data(), x2.grad!.data(), 1e-4, 1e-5, 'input gradient');
  assertClose(b1.grad!.data(), b2.grad!.data(), 1e-4, 1e-5, 'bias gradient');
});

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
function attn(...a: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...a], { encoding: 'utf8', timeout: 120_000 });
}

test('attn quantize writes a directory that logprobs reads quantized, equal to --dtype on the float one', async () => {
  const floatDir = join(root, 'float'); // written by the checkpoint test above
  await new CharTokenizer([...'abcdefghijklmnopqrstuvwxyz .,;:!?\'\nABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-()"&*+/<=>@[]^_`{|}~#$%']).save(floatDir);
  const out = join(root, 'cli-int4');
  const q = attn('quantize', '--model', floatDir, '--dtype', 'int4', '--quantize_head', '--out', out);
  assert.equal(q.status, 0, q.stderr);
  assert.match(q.stderr, /weights quantized to int4: 15 matrices/);
  const text = 'the king speaks.';
  const a = attn('logprobs', '--model', out, '--text', text);
  const b = attn('logprobs', '--model', floatDir, '--text', text, '--dtype', 'int4', '--quantize_head');
  const c = attn('logprobs', '--model', floatDir, '--text', text);
  for (const r of [a, b, c]) assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(a.stdout), JSON.parse(b.stdout));
  assert.notDeepEqual(JSON.parse(a.stdout).logprobs, JSON.parse(c.stdout).logprobs);
  const bad = attn('quantize', '--model', out, '--dtype', 'int8', '--out', join(root, 'again'));
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /already quantized/);
  const noFormat = attn('logprobs', '--model', floatDir, '--text', text, '--quantize_head');
  assert.notEqual(noFormat.status, 0);
  assert.match(noFormat.stderr, /go with --dtype int8, int4 or int4z/);
});

test('GGUF export of a quantized llama writes its dequantized matrices; float-only savers refuse a quantized model', async () => {
  const model = llama(5);
  quantizeModel(model, { format: 'int8', embeddings: true, head: true });
  const path = join(root, 'q.gguf');
  await saveGGUF(model, path, { type: 'f32' });
  const back = (await loadGGUF(path, { backend: cpu })).model;
  const tokens = ids(10, 96, 2);
  assertClose(logits(back, tokens), logits(model, tokens), 1e-4, 1e-4, 'GGUF f32 of an int8 model');
  const gpt = new GPT({ vocab_size: 40, block_size: 16, n_layer: 1, n_head: 2, n_embd: 32 }, { backend: cpu, seed: 1 });
  quantizeModel(gpt, { format: 'int8' });
  assert.throws(() => modelToCheckpointTensors(gpt), /saving a checkpoint: the model holds quantized matrices \(int8/);
});

test('LoRA adapters train on a quantized base (QLoRA-style); merging into it is refused', () => {
  const model = llama(6);
  quantizeModel(model, { format: 'int4' });
  const tokens = ids(16, 96, 4);
  const before = logits(model, tokens);
  const h = applyLora(model, { rank: 4, alpha: 8, targets: ['q_proj', 'v_proj'] });
  assert.deepEqual(logits(model, tokens), before, 'B = 0: the adapted model is the base');
  model.train();
  const x = tensor([tokens.slice(0, 15)], { dtype: 'int32', backend: cpu });
  const y = tensor([tokens.slice(1, 16)], { dtype: 'int32', backend: cpu });
  const trainable = model.parameters().filter((p) => p.requiresGrad);
  assert.equal(trainable.length, 2 * 2 * 2, 'only the adapters train (A and B of q and v in 2 layers)');
  const opt = new AdamW(trainable, { lr: 1e-2, weightDecay: 0 });
  let first = 0;
  let last = 0;
  for (let s = 0; s < 8; s++) {
    opt.zeroGrad();
    const { loss } = model.forward(x, y);
    loss!.backward();
    opt.stepUpdate();
    if (s === 0) first = loss!.item();
    last = loss!.item();
  }
  assert.ok(last < first, `loss ${first} -> ${last}`);
  assert.throws(() => mergeLora(h), /is quantized \(int4\); merge into the float model, then quantize/);
});

test('a GGUF file loads quantized tensor by tensor, equal to quantizing the loaded float model', async () => {
  const path = join(root, 'f32.gguf');
  await saveGGUF(llama(7), path, { type: 'f32' });
  for (const format of ['int8', 'int4'] as const) {
    const direct = (await loadGGUF(path, { backend: cpu, quantize: { format, embeddings: true, head: true } })).model;
    const after = (await loadGGUF(path, { backend: cpu })).model;
    quantizeModel(after, { format, embeddings: true, head: true });
    const tokens = ids(12, 96, 9);
    assert.ok(direct instanceof DecoderLM && direct.lm_head!.quant && direct.model.embed_tokens.quant);
    assert.deepEqual(logits(direct, tokens), logits(after, tokens));
  }
});

test('a Q4_0 GGUF loads as int4 by taking its blocks over: every int4 matrix equals the file\'s Q4_0 values exactly (q/k rows permuted)', async () => {
  const path = join(root, 'q4.gguf');
  await saveGGUF(llama(8), path, { type: 'q4_0' });
  // Make every Q4_0 block non-canonical (no level 0, so the largest magnitude is not at -8, as
  // other quantizers write them): requantizing would change such blocks, taking them over not.
  const file = new Uint8Array(await readFile(path));
  const header = parseGGUFHeader(file, file.length, path);
  for (const t of header.tensors) {
    if (t.type !== GGMLType.Q4_0) continue;
    const n = t.dims.reduce((a, b) => a * b, 1);
    for (let b = header.dataStart + t.offset; b < header.dataStart + t.offset + (n / 32) * 18; b += 18) {
      for (let j = 2; j < 18; j++) file[b + j] = file[b + j]! | 0x11;
    }
  }
  await writeFile(path, file);
  const direct = (await loadGGUF(path, { backend: cpu, quantize: { format: 'int4', embeddings: true, head: true } })).model;
  const float = (await loadGGUF(path, { backend: cpu })).model; // the Q4_0 values, decoded
  const floats = new Map(matrixModules(float).map(([name, m]) => [name, m.weight.data()]));
  let taken = 0;
  for (const [name, m] of matrixModules(direct)) {
    if (!m.quant) continue;
    assert.equal(m.quant.format, 'int4', name);
    assert.deepEqual(m.quant.dequantize().data(), floats.get(name), `${name}: int4 values differ from the Q4_0 file's`);
    taken++;
  }
  assert.ok(taken >= 7, `${taken} matrices compared`);
});
