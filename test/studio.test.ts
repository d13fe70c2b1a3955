// The studio's trainer and "Inside" views in Node (the page runs the same compiled modules):
// training lowers the loss, a resumable checkpoint continues exactly, the downloaded checkpoint
// and LoRA adapter load with the Node loaders and score the same, attention maps reproduce the
// attention output, PCA recovers known components, and the memory refusal.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { getBackend } from '../src/backend/index.js';
import { buildStudio } from '../src/cli/studio.js';
import { loadGPTCheckpoint } from '../src/models/gpt-checkpoint.js';
import { GPT, gptConfig } from '../src/models/gpt.js';
import { loadAdapters } from '../src/nn/lora-files.js';
import { add, logSoftmax, noGrad, permute, reshape, split, tensor, tidy, matmul } from '../src/tensor/index.js';
import { attentionMaps, nextTokenDistribution, pca2d } from '../src/studio/inside.js';
import { estimateTrainingMemory, memoryRefusal, STUDIO_SIZES, StudioTrainer, type CheckpointFiles } from '../src/studio/trainer.js';
import { CharTokenizer } from '../src/tokenizers/char.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const TEXT = readFileSync(join(REPO, 'data/tinyshakespeare/input.txt'), 'utf8');
const ROOT = mkdtempSync(join(tmpdir(), 'attn-studio-'));
process.on('exit', () => rmSync(ROOT, { recursive: true, force: true }));
const backend = await getBackend('cpu');
const SETTINGS = { batch_size: 8, max_iters: 200, lr_decay_iters: 200, eval_iters: 4 };

function writeDir(dir: string, files: CheckpointFiles): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  return dir;
}

/** log P(ids[i+1] | ids[..i]) as `attn logprobs` computes it. */
function nodeLogprobs(model: GPT, ids: number[]): number[] {
  return noGrad(() => tidy(() => {
    const lp = logSoftmax(model.forward(tensor(ids, { dtype: 'int32', shape: [1, ids.length], backend: model.parameters()[0]!.backend })).logits, -1).data();
    const V = model.config.vocab_size;
    return ids.slice(1).map((t, i) => lp[i * V + t]!);
  }));
}

const maxDiff = (a: number[], b: number[]): number => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

test('studio trainer: loss falls; a resumable checkpoint continues exactly; the download scores the same in Node', () => {
  const t = StudioTrainer.create(TEXT, { ...STUDIO_SIZES['tiny'] }, { backend, settings: SETTINGS });
  const before = t.evaluate();
  for (let i = 0; i < 150; i++) t.step();
  const after = t.evaluate();
  assert.ok(after.val_loss < before.val_loss - 1, `val loss ${before.val_loss} → ${after.val_loss}`);
  assert.equal(t.tokens, 150 * 8 * 64);

  // Resume: the stored files give a trainer whose next updates equal the original's.
  const stored = t.checkpointFiles({ resumable: true });
  const r = StudioTrainer.fromFiles(stored, null, { backend });
  assert.equal(r.iter, 150);
  for (let i = 0; i < 3; i++) assert.equal(r.step().loss, t.step().loss, `resumed step ${i}`);
  r.dispose();

  // The download is the checkpoint layout: Node's loader reads it and scores the same.
  const dir = writeDir(join(ROOT, 'page-ckpt'), t.checkpointFiles());
  return (async () => {
    const { model } = await loadGPTCheckpoint(dir, { backend });
    const text = 'ROMEO:\nWhat light through yonder window breaks?';
    const page = t.logprobs(text);
    assert.ok(maxDiff(nodeLogprobs(model, page.tokens), page.logprobs) <= 1e-5);
    model.dispose();
    // And a checkpoint Node wrote loads in the studio and scores the same.
    const files: CheckpointFiles = {};
    for (const n of ['config.json', 'model.safetensors', 'char_tokenizer.json']) files[n] = readFileSync(join(dir, n));
    const back = StudioTrainer.fromFiles(files, TEXT, { backend });
    const d = maxDiff(back.logprobs(text).logprobs, page.logprobs);
    assert.ok(d <= 1e-6, `page -> files -> page: ${d}`);
    back.dispose();
    t.dispose();
  })();
});

test('studio LoRA: fine-tunes on a second text; the adapter loads with loadAdapters and scores the same', async () => {
  const t = StudioTrainer.create(TEXT, { ...STUDIO_SIZES['tiny'] }, { backend, settings: SETTINGS });
  for (let i = 0; i < 30; i++) t.step();
  const base = writeDir(join(ROOT, 'lora-base'), t.checkpointFiles());
  const second = TEXT.slice(100_000, 140_000).toUpperCase();
  assert.throws(() => t.startLora('ünïcode text', { rank: 4 }), /characters the model's vocabulary lacks/);
  const summary = t.startLora(second, { rank: 4, targets: ['c_attn', 'c_proj'], baseName: base });
  assert.match(summary, /trainable params/);
  const e0 = t.evaluate().val_loss;
  for (let i = 0; i < 40; i++) t.step();
  assert.ok(t.evaluate().val_loss < e0, 'LoRA lowers the loss on the second text');
  const adapter = writeDir(join(ROOT, 'lora-adapter'), t.adapterFiles());
  const { model } = await loadGPTCheckpoint(base, { backend });
  await loadAdapters(model, adapter, { dropout: 0 });
  model.eval();
  const page = t.logprobs('KING HENRY:\nWHAT SAY YOU?');
  assert.ok(maxDiff(nodeLogprobs(model, page.tokens), page.logprobs) <= 1e-5);
  model.dispose();
  t.dispose();
});

test('inside: attention maps are causal distributions that reproduce the attention output; next-token top-k', () => {
  const tok = CharTokenizer.fromText(TEXT);
  for (const extra of [{}, { pos_encoding: 'rope' as const, n_kv_head: 2 }, { attention: 'local' as const, attn_window: 5 }]) {
    const model = new GPT({ n_layer: 2, n_head: 4, n_embd: 32, block_size: 32, vocab_size: tok.vocabSize, bias: false, ...extra }, { backend, seed: 3 });
    model.eval();
    const ids = tok.encode('First Citizen:\nBefore we');
    const T = ids.length;
    const maps = attentionMaps(model, ids);
    assert.equal(maps.probs.length, 2);
    assert.equal(maps.probs[0]!.length, 4);
    for (const layer of maps.probs) for (const m of layer) for (let i = 0; i < T; i++) {
      let s = 0;
      for (let j = 0; j < T; j++) {
        if (j > i) assert.equal(m[i * T + j], 0);
        s += m[i * T + j]!;
      }
      assert.ok(Math.abs(s - 1) < 1e-5);
    }
    // Layer 0: Σ_j p_ij v_j through c_proj equals the attention module's own output.
    noGrad(() => tidy(() => {
      const t = model.transformer;
      let x = t.wte.forward(tensor(ids, { dtype: 'int32', shape: [1, T], backend: t.wte.weight.backend }));
      if (t.wpe) x = add(x, t.wpe.positions(T, 0));
      const b = t.h.items[0]!;
      const h = b.ln_1.forward(x);
      const want = b.attn.forward(h).data();
      const a = b.attn;
      const [, , v0] = split(a.c_attn.forward(h), [a.nHead * a.headDim, a.nKvHead * a.headDim, a.nKvHead * a.headDim], -1);
      const v = permute(reshape(v0!, [1, T, a.nKvHead, a.headDim]), [0, 2, 1, 3]).contiguous(); // (1, Hkv, T, D)
      const heads = [];
      for (let hh = 0; hh < a.nHead; hh++) {
        const p = tensor(maps.probs[0]![hh]!, { shape: [T, T], backend: v.backend });
        const vh = reshape(split(v, 1, 1)[Math.floor((hh * a.nKvHead) / a.nHead)]!, [T, a.headDim]);
        heads.push(matmul(p, vh)); // (T, D)
      }
      const y = reshape(permute(reshape(tensor(heads.flatMap((q) => [...q.data()]), { shape: [a.nHead, T, a.headDim], backend: v.backend }), [a.nHead, T, a.headDim]), [1, 0, 2]).contiguous(), [1, T, a.nHead * a.headDim]);
      const got = a.c_proj.forward(y).data();
      let d = 0;
      for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(want[i]! - got[i]!));
      assert.ok(d < 1e-5, `attention output differs by ${d} (${JSON.stringify(extra)})`);
    }));
    const top = nextTokenDistribution(model, ids, 5);
    assert.equal(top.length, 5);
    assert.ok(top[0]!.p >= top[4]!.p);
    const all = nextTokenDistribution(model, ids, tok.vocabSize).reduce((s, x) => s + x.p, 0);
    assert.ok(Math.abs(all - 1) < 1e-5);
    model.dispose();
  }
});

test('inside: PCA finds the known components; memory refusal names the reason', () => {
  // Points along (1, 1)/√2 with spread 3 and along (1, -1)/√2 with spread 1: 90% and 10% of the variance.
  const r = Math.SQRT1_2;
  const pts = [[3, 0], [-3, 0], [0, 1], [0, -1]].map(([a, b]) => [r * (a! + b!), r * (a! - b!), 0]);
  const { points, explained } = pca2d(pts.flat(), 4, 3);
  assert.ok(Math.abs(explained[0] - 0.9) < 1e-9 && Math.abs(explained[1] - 0.1) < 1e-9, String(explained));
  assert.ok(Math.abs(Math.abs(points[0]![0]) - 3) < 1e-9 && Math.abs(points[0]![1]) < 1e-9);
  assert.ok(Math.abs(Math.abs(points[2]![1]) - 1) < 1e-9);

  const cfg = gptConfig({ ...STUDIO_SIZES['gpt2']!, vocab_size: 65 });
  assert.equal(estimateTrainingMemory(cfg, 8).parameters, GPT.countParameters(cfg));
  assert.match(memoryRefusal(cfg, 8, 2 * 2 ** 30) ?? '', /too large for this device: training 85\.\dM parameters .* over the budget of 2048 MiB/);
  assert.equal(memoryRefusal(gptConfig({ ...STUDIO_SIZES['tiny']!, vocab_size: 65 }), 8, 2 * 2 ** 30), null);
});

test('attn studio: serves the page on 127.0.0.1 with the isolation headers; --out writes the page and the modules it reaches', async () => {
  const child = spawn(process.execPath, [join(REPO, 'dist/src/cli/main.js'), 'studio', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const url = await new Promise<string>((ok, fail) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /attn studio: (http:\/\/127\.0\.0\.1:\d+\/examples\/studio\/)/.exec(out);
        if (m) ok(m[1]!);
      });
      child.once('exit', (code) => fail(new Error(`attn studio exited with ${code}: ${out}`)));
    });
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('cross-origin-opener-policy'), 'same-origin');
    assert.equal(page.headers.get('cross-origin-embedder-policy'), 'require-corp');
    assert.match(await page.text(), /attn studio/);
    const origin = new URL(url).origin;
    assert.equal((await fetch(`${origin}/dist/src/studio/trainer.js`)).status, 200);
    assert.equal((await fetch(`${origin}/%2e%2e/%2e%2e/etc/passwd`)).status, 404);
    assert.equal((await fetch(`${origin}/`, { redirect: 'manual' })).headers.get('location'), '/examples/studio/');
  } finally {
    child.kill('SIGTERM');
  }
  const { files } = await buildStudio(join(ROOT, 'site'));
  for (const f of ['examples/studio/index.html', 'examples/studio/worker.js', 'dist/src/studio/trainer.js', 'dist/src/studio/inside.js', 'dist/src/backend/cpu/worker.js', 'dist/src/eval/plot.js', 'data/tinyshakespeare/input.txt', '_headers']) {
    assert.ok(files.includes(f) && existsSync(join(ROOT, 'site', f)), `${f} is in the static build`);
  }
  assert.ok(!files.some((f) => f.startsWith('test') || f.startsWith('src/')), 'only the page and compiled modules');
});
