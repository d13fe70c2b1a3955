// The data and training layers on tiny models (ref backend, a few ms per step): datasets on
// disk, the batch sampler, learning-rate schedules, gradient accumulation and clipping, the
// training loop's outputs, bitwise-exact resume, divergence stops, corrupt checkpoints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BatchSampler, bytesToTokens, gatherBatch, loadDataset, loadTokens, prepareDataset, readDatasetMeta, splitTokens, tokenDType, tokensToBytes,
  type Batch,
} from '../src/data/index.js';
import { getBackend, liveTensorCount, matmulPrecision, noGrad, tensor } from '../src/index.js';
import { GPT } from '../src/models/gpt.js';
import { loadHFGPT2 } from '../src/models/hf-gpt2-files.js';
import { gpt2StateToHF } from '../src/models/hf-gpt2.js';
import { CharTokenizer, loadTokenizer } from '../src/tokenizers/index.js';
import { saveCheckpoint } from '../src/io/checkpoint.js';
import { AdamW } from '../src/train/optim.js';
import { preset, PRESETS } from '../src/train/presets.js';
import { constantLr, cosineLr, makeSchedule, noamLr } from '../src/train/schedule.js';
import { lossPlotSvg, type MetricsRecord } from '../src/eval/plot.js';
import { checkpointConfigJson, loadGPTCheckpoint, modelToCheckpointTensors } from '../src/models/gpt-checkpoint.js';
import { accumulateGradients, parseTrainConfigValue, train, trainConfig, trainStep, type TrainConfig } from '../src/tasks/lm.js';
import { clipGradNorm, gradNorm, readResumeConfig, TrainingDivergedError, type StepMetrics } from '../src/train/loop.js';

const INPUT = fileURLToPath(new URL('../../data/tinyshakespeare/input.txt', import.meta.url));
const TEXT = readFileSync(INPUT, 'utf8');
const ROOT = mkdtempSync(join(tmpdir(), 'attn-train-'));
const DATASET = join(ROOT, 'shakespeare_char');
process.on('exit', () => rmSync(ROOT, { recursive: true, force: true }));

let prepared: Promise<void> | null = null;
function dataset(): Promise<string> {
  prepared ??= prepareDataset({ text: TEXT, tokenizer: CharTokenizer.fromText(TEXT), outDir: DATASET }).then(() => undefined);
  return prepared.then(() => DATASET);
}

/** A model small enough for the ref backend: ~25k parameters, a few ms per step. */
function tinyConfig(out: string, extra: Partial<TrainConfig> = {}): Partial<TrainConfig> {
  return {
    out_dir: join(ROOT, out), dataset: DATASET, device: 'ref',
    n_layer: 2, n_head: 2, n_embd: 32, block_size: 16, batch_size: 4, dropout: 0, bias: false,
    learning_rate: 1e-2, min_lr: 1e-3, warmup_iters: 5, lr_decay_iters: 50, max_iters: 50,
    eval_interval: 25, eval_iters: 2, log_interval: 1, weight_decay: 0.1, grad_clip: 1.0, beta2: 0.99, seed: 7,
    ...extra,
  };
}

function readJsonl(path: string): MetricsRecord[] {
  return readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as MetricsRecord);
}

/** Element names balance and nest: a small well-formedness check for hand-written XML. */
function assertWellFormedXml(xml: string): void {
  const stack: string[] = [];
  for (const m of xml.matchAll(/<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<[^>]*>?/g)) {
    if (m[2] === undefined) assert.fail(`malformed tag ${JSON.stringify(m[0])}`);
    if (m[4]) continue; // self-closing
    if (m[1]) assert.equal(stack.pop(), m[2], `</${m[2]}> closes the wrong element`);
    else stack.push(m[2]);
  }
  assert.deepEqual(stack, [], 'unclosed elements');
}

// ---------------------------------------------------------------- schedules

test('cosine schedule: warmup, cosine decay and floor match nanoGPT get_lr by hand', () => {
  const o = { learning_rate: 1e-3, warmup_iters: 100, lr_decay_iters: 5000, min_lr: 1e-4 };
  assert.equal(cosineLr(0, o), 1e-3 * 1 / 101);
  assert.equal(cosineLr(49, o), 1e-3 * 50 / 101);
  assert.equal(cosineLr(99, o), 1e-3 * 100 / 101);
  assert.equal(cosineLr(100, o), 1e-3); // ratio 0: cos 0 = 1
  const mid = 100 + (5000 - 100) / 2;
  assert.ok(Math.abs(cosineLr(mid, o) - (1e-3 + 1e-4) / 2) < 1e-15);
  const q = 100 + (5000 - 100) / 4; // cos(π/4)
  assert.ok(Math.abs(cosineLr(q, o) - (1e-4 + 0.5 * (1 + Math.SQRT1_2) * 9e-4)) < 1e-15);
  assert.ok(Math.abs(cosineLr(5000, o) - 1e-4) < 1e-15);
  assert.equal(cosineLr(5001, o), 1e-4);
  assert.equal(cosineLr(1e6, o), 1e-4);
  for (let it = 101; it < 5000; it += 97) assert.ok(cosineLr(it, o) < cosineLr(it - 1, o), `decreasing at ${it}`);
  assert.equal(cosineLr(3, { ...o, warmup_iters: 0, lr_decay_iters: 0 }), 1e-4); // no division by zero
});

test('constant and Noam schedules', () => {
  assert.equal(constantLr(123, { learning_rate: 3e-4 }), 3e-4);
  const o = { d_model: 512, warmup_iters: 4000 };
  // n = it + 1; at n = warmup both branches agree: d^-0.5 · w^-0.5.
  assert.ok(Math.abs(noamLr(3999, o) - 512 ** -0.5 * 4000 ** -0.5) < 1e-15);
  assert.ok(Math.abs(noamLr(0, o) - 512 ** -0.5 * 4000 ** -1.5) < 1e-18);
  assert.ok(Math.abs(noamLr(15999, o) - 512 ** -0.5 * 16000 ** -0.5) < 1e-15);
  assert.ok(noamLr(1000, o) < noamLr(2000, o) && noamLr(8000, o) < noamLr(4000, o));
  assert.equal(noamLr(9, { ...o, factor: 2 }), 2 * noamLr(9, o));
  assert.equal(makeSchedule({ kind: 'noam', ...o })(77), noamLr(77, o));
  assert.equal(makeSchedule({ kind: 'constant', learning_rate: 0.5 })(9), 0.5);
  const c = { learning_rate: 1, warmup_iters: 2, lr_decay_iters: 10, min_lr: 0.1 };
  assert.equal(makeSchedule({ kind: 'cosine', ...c })(5), cosineLr(5, c));
});

// ---------------------------------------------------------------- data

test('prepareDataset writes uint16 train.bin / val.bin (90/10), meta.json and the tokenizer', async () => {
  const dir = await dataset();
  const meta = await readDatasetMeta(dir);
  const n = [...TEXT].length;
  assert.equal(meta.vocab_size, 65);
  assert.equal(meta.dtype, 'uint16');
  assert.equal(meta.tokenizer, 'char');
  assert.equal(meta.train_tokens, Math.floor(n * 0.9));
  assert.equal(meta.train_tokens + meta.val_tokens, n);
  assert.equal((await stat(join(dir, 'train.bin'))).size, meta.train_tokens * 2);
  const tok = await loadTokenizer(dir);
  const train = await loadTokens(join(dir, 'train.bin'), 'uint16');
  const val = await loadTokens(join(dir, 'val.bin'), 'uint16');
  assert.equal(tok.decode(train.subarray(0, 40)), TEXT.slice(0, 40));
  assert.equal(tok.decode(val.subarray(val.length - 30)), TEXT.slice(TEXT.length - 30));
  assert.equal(tok.decode(train.subarray(train.length - 5)) + tok.decode(val.subarray(0, 5)), TEXT.slice(meta.train_tokens - 5, meta.train_tokens + 5));
  // little-endian on disk, whatever the host
  const raw = readFileSync(join(dir, 'train.bin'));
  assert.equal(raw[0]! | (raw[1]! << 8), train[0]);
  const ds = await loadDataset(dir);
  assert.deepEqual([ds.train.length, ds.val.length], [meta.train_tokens, meta.val_tokens]);
});

test('token files: uint32 above 65536 ids, split fractions, errors name the file', async () => {
  assert.equal(tokenDType(65536), 'uint16');
  assert.equal(tokenDType(65537), 'uint32');
  const ids = [0, 1, 65535, 65536, 100000, 2 ** 32 - 1];
  assert.deepEqual([...bytesToTokens(tokensToBytes(ids, 'uint32'), 'uint32')], ids);
  assert.throws(() => tokensToBytes([65536], 'uint16'), /65536 at position 0 does not fit uint16/);
  assert.throws(() => bytesToTokens(new Uint8Array(3), 'uint16', 'x.bin'), /x\.bin: 3 bytes/);
  const { train, val } = splitTokens(new Uint16Array(10).map((_, i) => i), 0.1);
  assert.deepEqual([[...train].length, [...val]], [9, [9]]);
  const dir = join(ROOT, 'bad-dataset');
  const tok = CharTokenizer.fromText('abc');
  await prepareDataset({ text: 'abcabcabcabc', tokenizer: tok, outDir: dir, valFraction: 0.25 });
  const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual([meta['train_tokens'], meta['val_tokens']], [9, 3]);
  await writeFile(join(dir, 'meta.json'), JSON.stringify({ ...meta, train_tokens: 10 }));
  await assert.rejects(loadDataset(dir), (e: Error) => e.message.includes(join(dir, 'train.bin')) && /holds 9 tokens, but meta\.json says 10/.test(e.message));
  await writeFile(join(dir, 'meta.json'), '{"format": "attn-dataset"');
  await assert.rejects(loadDataset(dir), /meta\.json: invalid JSON/);
  await assert.rejects(loadDataset(join(ROOT, 'nowhere')), /does not exist/);
});

test('BatchSampler: seeded, y is x shifted by one, and state() / setState() resume the stream', () => {
  const tokens = new Uint16Array(1000).map((_, i) => (i * 7) % 65);
  const a = new BatchSampler(tokens, { batchSize: 4, blockSize: 8, seed: 3 });
  const b = new BatchSampler(tokens, { batchSize: 4, blockSize: 8, seed: 3 });
  const c = new BatchSampler(tokens, { batchSize: 4, blockSize: 8, seed: 4 });
  const ba = a.next();
  assert.deepEqual(ba, b.next());
  assert.notDeepEqual(ba.x, c.next().x);
  assert.equal(ba.x.length, 32);
  for (let r = 0; r < 4; r++) {
    const start = tokens.indexOf(ba.x[r * 8]!); // the sequence is periodic, so find the row by content
    assert.ok(start >= 0);
    for (let t = 0; t < 7; t++) assert.equal(ba.y[r * 8 + t], ba.x[r * 8 + t + 1]);
    assert.equal(ba.y[r * 8 + 7], (ba.x[r * 8 + 7]! + 7) % 65);
  }
  assert.deepEqual(gatherBatch(tokens, [0, 992 - 1], 8).y.slice(0, 3), Int32Array.from([7, 14, 21]));
  assert.throws(() => gatherBatch(tokens, [992], 8), /offset 992/);
  for (let i = 0; i < 5; i++) a.next();
  const saved = JSON.parse(JSON.stringify(a.state())) as ReturnType<BatchSampler['state']>;
  assert.equal(saved.batches, 6);
  const expected = [a.next(), a.next(), a.next()];
  const resumed = new BatchSampler(tokens, { batchSize: 4, blockSize: 8, seed: 999 });
  resumed.setState(saved);
  assert.deepEqual([resumed.next(), resumed.next(), resumed.next()], expected);
  assert.equal(resumed.state().batches, 9);
  assert.throws(() => resumed.setState({ rng: [1, 2], batches: 0 }), /4 uint32 words/);
  assert.throws(() => new BatchSampler(tokens.subarray(0, 8), { batchSize: 1, blockSize: 8 }), /too few/);
  // offsets cover the whole range [0, n - T)
  const s = new BatchSampler(new Uint16Array(12), { batchSize: 400, blockSize: 8, seed: 1 });
  assert.deepEqual(new Set(s.nextOffsets()), new Set([0, 1, 2, 3]));
});

// ---------------------------------------------------------------- config

test('trainConfig: defaults, and one error naming every unknown field and bad value', () => {
  const cfg = trainConfig({ n_layer: 3 });
  assert.equal(cfg.n_layer, 3);
  assert.equal(cfg.learning_rate, 6e-4);
  assert.throws(
    () => trainConfig({ n_layyer: 3, batch_size: 0, learning_rate: -1, device: 'gpu', beta2: 1, n_embd: 30, n_head: 4, dropout: 1 } as never),
    (e: Error) => ["unknown field 'n_layyer' (did you mean 'n_layer'?)", 'batch_size must be a positive integer, got 0', 'learning_rate must be a positive number, got -1',
      "device must be one of 'cpu', 'webgpu', 'auto', 'ref', got 'gpu'", 'beta2 must be in [0, 1), got 1', 'n_embd (30) must be divisible by n_head (4)', 'dropout must be in [0, 1)']
      .every((s) => e.message.includes(s)) || assert.fail(e.message),
  );
  assert.throws(() => trainConfig({ min_lr: 1, learning_rate: 0.1 }), /min_lr \(1\) must not exceed learning_rate/);
  assert.throws(() => trainConfig({ max_iters: '10' } as never), /max_iters must be a non-negative integer, got '10'/);
  assert.equal(parseTrainConfigValue('learning_rate', '3e-4'), 3e-4);
  assert.equal(parseTrainConfigValue('bias', 'true'), true);
  assert.equal(parseTrainConfigValue('device', 'ref'), 'ref');
  assert.throws(() => parseTrainConfigValue('max_iter', '1'), /did you mean 'max_iters'/);
  assert.throws(() => parseTrainConfigValue('batch_size', 'x'), /batch_size must be a number/);
  for (const name of Object.keys(PRESETS)) trainConfig(preset(name));
  assert.deepEqual(
    [preset('shakespeare-char-tiny').n_embd, preset('shakespeare-char-tiny').max_iters, preset('shakespeare-char').n_embd, preset('shakespeare-char').dropout],
    [128, 2000, 384, 0.2],
  );
  assert.throws(() => preset('toString'), /unknown preset 'toString'/);
});

// ---------------------------------------------------------------- step mechanics

/** One batch of B rows, and the same rows as k micro-batches. */
function batchAndMicro(tokens: ArrayLike<number>, offsets: number[], T: number, k: number): [Batch, Batch[]] {
  const per = offsets.length / k;
  return [gatherBatch(tokens, offsets, T), Array.from({ length: k }, (_, i) => gatherBatch(tokens, offsets.slice(i * per, (i + 1) * per), T))];
}

test('gradient accumulation: k micro-batches of B/k give the update of one batch of B', async () => {
  const backend = await getBackend('ref');
  const ds = await loadDataset(await dataset());
  const cfg = { n_layer: 2, n_head: 2, n_embd: 16, block_size: 8, vocab_size: 65, dropout: 0, bias: true };
  const offsets = [5, 1000, 20000, 300000, 7, 123456, 99, 500000];
  for (const [k, dtype] of [[2, 'float64'], [4, 'float64'], [4, 'float32']] as const) {
    const one = new GPT(cfg, { backend, seed: 1, dtype });
    const acc = new GPT(cfg, { backend, seed: 1, dtype });
    const o1 = new AdamW(one.parameters(), { lr: 1e-2, weightDecay: 0.1 });
    const o2 = new AdamW(acc.parameters(), { lr: 1e-2, weightDecay: 0.1 });
    for (let step = 0; step < 3; step++) {
      const [batch, micro] = batchAndMicro(ds.train, offsets.map((o) => o + step * 31), 8, k);
      const r1 = trainStep(one, o1, [batch], { gradClip: 0.5 });
      const r2 = trainStep(acc, o2, micro, { gradClip: 0.5 });
      const tol = dtype === 'float64' ? 1e-10 : 1e-5;
      assert.ok(Math.abs(r1.loss - r2.loss) < tol, `loss ${r1.loss} vs ${r2.loss}`);
      assert.ok(Math.abs(r1.gradNorm - r2.gradNorm) < tol * r1.gradNorm, `grad norm ${r1.gradNorm} vs ${r2.gradNorm}`);
    }
    const p1 = one.stateDict();
    let worst = 0;
    for (const [name, t] of acc.stateDict()) {
      const a = t.data();
      const b = p1.get(name)!.data();
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    }
    assert.ok(worst < 1e-5, `k=${k} ${dtype}: parameters differ by ${worst}`);
    assert.ok(one.parameters().every((p) => p.grad === null), 'trainStep leaves no gradients behind');
    one.dispose();
    acc.dispose();
  }
});

test('gradient clipping: the global norm is √Σg², and clipping caps it', async () => {
  const backend = await getBackend('ref');
  const ds = await loadDataset(await dataset());
  const model = new GPT({ n_layer: 1, n_head: 2, n_embd: 16, block_size: 8, vocab_size: 65, dropout: 0 }, { backend, seed: 2 });
  const params = model.parameters();
  accumulateGradients(model, [gatherBatch(ds.train, [0, 50, 900], 8)]);
  let ss = 0;
  for (const p of params) for (const g of p.grad!.data()) ss += g * g;
  const norm = gradNorm(params);
  assert.ok(Math.abs(norm - Math.sqrt(ss)) < 1e-5 * norm, `${norm} vs ${Math.sqrt(ss)}`);
  const before = params.map((p) => Float64Array.from(p.grad!.data()));
  assert.equal(clipGradNorm(params, norm * 2), norm); // under the limit: untouched
  params.forEach((p, i) => assert.deepEqual(Float64Array.from(p.grad!.data()), before[i]));
  const limit = norm / 4;
  assert.equal(clipGradNorm(params, limit), norm);
  const after = gradNorm(params);
  assert.ok(after <= limit * (1 + 1e-5) && after > limit * 0.999, `clipped norm ${after}, limit ${limit}`);
  // direction kept
  const g0 = params[0]!.grad!.data();
  assert.ok(Math.abs(g0[3]! / before[0]![3]! - limit / (norm + 1e-6)) < 1e-4);
  model.dispose();
});

// ---------------------------------------------------------------- the training loop

test('train: the loss falls over 50 steps; metrics.jsonl, loss.svg and HF-layout checkpoints are written', async () => {
  await dataset();
  const logs: StepMetrics[] = [];
  const evals: number[] = [];
  const progress: number[] = [];
  const live = new Map<number, number>();
  const cfg = tinyConfig('falls');
  const result = await train(cfg, {
    onLog: (m) => logs.push(m),
    onEval: (e) => evals.push(e.step),
    onProgress: (step, max, tps, loss) => {
      assert.equal(max, 50);
      assert.ok(tps > 0 && Number.isFinite(loss));
      progress.push(step);
      live.set(step, liveTensorCount());
    },
  });
  assert.equal(live.get(49), live.get(10), 'live tensors hold steady across steps');
  assert.equal(result.iter, 50);
  assert.deepEqual(evals, [0, 25, 50]);
  assert.deepEqual(progress, Array.from({ length: 50 }, (_, i) => i + 1));
  assert.equal(logs.length, 50);
  const first = logs[0]!.train_loss;
  const last10 = logs.slice(-10).reduce((s, m) => s + m.train_loss, 0) / 10;
  assert.ok(Math.abs(first - Math.log(65)) < 0.3, `initial loss ${first} should be near ln 65`);
  assert.ok(last10 < first - 0.7, `loss fell only from ${first} to ${last10}`);

  const out = cfg.out_dir!;
  const records = readJsonl(join(out, 'metrics.jsonl'));
  assert.equal(records.length, 51);
  for (const r of records.slice(0, 50)) {
    for (const k of ['step', 'train_loss', 'lr', 'tokens_per_s', 'grad_norm', 'tokens'] as const) assert.equal(typeof r[k], 'number', `${k} in ${JSON.stringify(r)}`);
  }
  assert.deepEqual(records.filter((r) => r.val_loss !== undefined).map((r) => r.step), [0, 25, 50]);
  assert.equal(records[3]!.lr, cosineLr(3, trainConfig(cfg)));
  assert.ok(records[50]!.val_loss! < records[0]!.val_loss! - 0.5, 'val loss fell');
  assert.equal(records[49]!.tokens, 50 * 4 * 16);

  const svg = await readFile(join(out, 'loss.svg'), 'utf8');
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assertWellFormedXml(svg);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 2);
  assert.equal((svg.match(/<circle /g) ?? []).length, 3 + 1); // val points + legend marker
  assert.match(svg, />train</);
  assert.match(svg, />val</);
  assert.match(svg, />step</);

  // last/ and best/: HF layout; this variant (bias: false) is not GPT-2, so config.json is attn's
  for (const [name, files] of [['last', ['char_tokenizer.json', 'config.json', 'model.safetensors', 'optimizer.safetensors', 'trainer_state.json']], ['best', ['char_tokenizer.json', 'config.json', 'model.safetensors', 'trainer_state.json']]] as const) {
    const dir = join(out, name);
    const loaded = await loadGPTCheckpoint(dir);
    assert.deepEqual(loaded.checkpoint.tokenizerFiles, ['char_tokenizer.json']);
    for (const f of files) await stat(join(dir, f));
    assert.equal(loaded.config.bias, false);
    assert.equal(loaded.checkpoint.config['model_type'], 'attn_gpt');
    assert.ok(loaded.checkpoint.tensors.has('transformer.h.0.attn.c_attn.weight'));
    assert.deepEqual(loaded.checkpoint.tensors.get('transformer.h.0.mlp.c_fc.weight')!.shape, [32, 128]); // Conv1D [in, out]
    assert.equal((loaded.checkpoint.trainerState as { iter: number }).iter, 50);
    loaded.model.dispose();
  }
  assert.equal((await readResumeConfig(out)).max_iters, 50);
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
  const evalOnly = await train({ ...cfg, init_from: 'resume', eval_only: true });
  assert.equal(evalOnly.iter, 50);
  assert.ok(evalOnly.last_eval!.val_loss < records[0]!.val_loss!);
  assert.equal(readFileSync(join(out, 'metrics.jsonl'), 'utf8'), lines, 'eval_only leaves the metrics alone');
});

test('checkpoint tensors round-trip every GPT variant (rope, RMSNorm, SwiGLU, post-norm, untied head)', async () => {
  const backend = await getBackend('ref');
  const idx = tensor(Int32Array.from([1, 5, 9, 2, 7, 3]), { shape: [1, 6], dtype: 'int32', backend });
  const variants = [
    { pos_encoding: 'rope', norm: 'rmsnorm', activation: 'swiglu', bias: false, tie_embeddings: false },
    { pos_encoding: 'sinusoidal', norm_placement: 'post', activation: 'relu' },
    { activation: 'gelu_exact', bias: true },
  ] as const;
  for (const [i, v] of variants.entries()) {
    const cfg = { n_layer: 2, n_head: 2, n_embd: 16, block_size: 8, vocab_size: 11, dropout: 0, ...v };
    const model = new GPT(cfg, { backend, seed: 3 + i });
    const dir = join(ROOT, `variant-${i}`);
    await saveCheckpoint(dir, { config: checkpointConfigJson(model.config), model: modelToCheckpointTensors(model) });
    const loaded = await loadGPTCheckpoint(dir, { backend });
    assert.deepEqual(loaded.config, model.config);
    const [a, b] = noGrad(() => [model.eval().forward(idx).logits.data(), loaded.model.forward(idx).logits.data()]);
    assert.deepEqual(a, b, `variant ${JSON.stringify(v)}`);
    model.dispose();
    loaded.model.dispose();
  }
});

test('resume: N/2 steps, save, resume N/2 gives bitwise the losses and weights of N straight (dropout, accumulation)', async () => {
  await dataset();
  const N = 8;
  const extra: Partial<TrainConfig> = { dropout: 0.1, bias: true, gradient_accumulation_steps: 2, max_iters: N, lr_decay_iters: N, warmup_iters: 2, eval_interval: N / 2 };
  const run = async (out: string, over: Partial<TrainConfig>, signal?: AbortController, abortAt?: number): Promise<{ losses: Map<number, number>; vals: Map<number, number> }> => {
    const losses = new Map<number, number>();
    const vals = new Map<number, number>();
    await train(tinyConfig(out, { ...extra, ...over }), {
      onLog: (m) => losses.set(m.step, m.train_loss),
      onEval: (e) => vals.set(e.step, e.val_loss),
      onProgress: (step) => {
        if (step === abortAt) signal!.abort();
      },
      ...(signal ? { signal: signal.signal } : {}),
    });
    return { losses, vals };
  };
  const straight = await run('straight', {});
  const first = await run('split', { max_iters: N / 2 });
  const messages: string[] = [];
  const second = await (async () => {
    const losses = new Map<number, number>();
    const vals = new Map<number, number>();
    await train(tinyConfig('split', { ...extra, init_from: 'resume' }), {
      onLog: (m) => losses.set(m.step, m.train_loss),
      onEval: (e) => vals.set(e.step, e.val_loss),
      onMessage: (s) => messages.push(s),
    });
    return { losses, vals };
  })();
  assert.ok(messages.some((m) => /max_iters 4 -> 8/.test(m)), messages.join('\n'));
  const joined = new Map([...first.losses, ...second.losses]);
  assert.equal(joined.size, N);
  for (const [step, loss] of straight.losses) assert.equal(joined.get(step), loss, `train loss at step ${step}`);
  assert.equal(second.vals.get(N), straight.vals.get(N));
  assert.ok(!second.vals.has(N / 2), 'the resumed step is not evaluated twice');
  const weights = (out: string) => readFileSync(join(ROOT, out, 'last', 'model.safetensors'));
  assert.ok(weights('split').equals(weights('straight')), 'final weights are bitwise equal');
  const recs = (out: string) => readJsonl(join(ROOT, out, 'metrics.jsonl')).map((r) => [r.step, r.train_loss, r.val_loss, r.lr, r.tokens]);
  assert.deepEqual(recs('split'), recs('straight'));

  // Aborting mid-interval saves last/ at that step, and resuming from there also matches.
  const ctrl = new AbortController();
  await run('aborted', {}, ctrl, 5);
  assert.equal(JSON.parse(await readFile(join(ROOT, 'aborted', 'last', 'trainer_state.json'), 'utf8')).iter, 5);
  const rest = await run('aborted', { init_from: 'resume' });
  assert.deepEqual([...rest.losses.keys()], [5, 6, 7]);
  for (const [step, loss] of rest.losses) assert.equal(loss, straight.losses.get(step));
  assert.ok(weights('aborted').equals(weights('straight')));

  // bias: true is GPT-2-expressible: the checkpoint is a Hugging Face GPT-2 directory too.
  const hf = await loadHFGPT2(join(ROOT, 'straight', 'last'));
  const mine = await loadGPTCheckpoint(join(ROOT, 'straight', 'last'));
  assert.equal(JSON.parse(await readFile(join(ROOT, 'straight', 'last', 'config.json'), 'utf8')).model_type, 'gpt2');
  const a = modelToCheckpointTensors(mine.model);
  const b = gpt2StateToHF(hf);
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, e] of a) assert.deepEqual(e.data, b.get(k)!.data, k);
  hf.dispose();
  mine.model.dispose();
});

test('a NaN loss stops training with an error naming the step; the last checkpoint stays loadable', async () => {
  await dataset();
  let model: GPT | null = null;
  const cfg = tinyConfig('nan', { max_iters: 10, eval_interval: 2 });
  await assert.rejects(
    train(cfg, {
      onStart: (info) => {
        model = info.model;
      },
      onProgress: (step) => {
        if (step === 3) {
          const w = model!.transformer.wte.weight;
          w.backend.write(w.storage, [NaN], 0);
        }
      },
    }),
    (e: Error) => {
      assert.ok(e instanceof TrainingDivergedError, String(e));
      assert.equal(e.step, 3);
      assert.match(e.message, /training diverged at step 3: the training loss is NaN/);
      assert.match(e.message, /\(step 2\) is untouched/);
      return true;
    },
  );
  const last = join(cfg.out_dir!, 'last');
  const loaded = await loadGPTCheckpoint(last, { requireOptimizer: true });
  assert.equal((loaded.checkpoint.trainerState as { iter: number }).iter, 2);
  assert.ok([...loaded.checkpoint.tensors.values()].every((t) => t.data.every(Number.isFinite)));
  loaded.model.dispose();
  // and training resumes from it
  const r = await train({ ...cfg, init_from: 'resume', max_iters: 4 });
  assert.equal(r.iter, 4);
});

test('a corrupt or incomplete checkpoint is refused on resume, naming the file', async () => {
  await dataset();
  const cfg = tinyConfig('corrupt', { max_iters: 2, eval_interval: 2 });
  await train(cfg);
  const last = join(cfg.out_dir!, 'last');
  const resume = { ...cfg, init_from: 'resume' as const, max_iters: 4 };
  const state = await readFile(join(last, 'trainer_state.json'), 'utf8');
  await writeFile(join(last, 'trainer_state.json'), state.slice(0, 50));
  await assert.rejects(train(resume), (e: Error) => e.message.includes(join(last, 'trainer_state.json')) && /invalid JSON/.test(e.message));
  await writeFile(join(last, 'trainer_state.json'), JSON.stringify({ ...JSON.parse(state), samplers: { train: { rng: [0, 0, 0, 0], batches: 1 }, eval_train: {}, eval_val: {} } }));
  await assert.rejects(train(resume), (e: Error) => e.message.includes('trainer_state.json') && /rng/.test(e.message));
  await writeFile(join(last, 'trainer_state.json'), state);
  const model = join(last, 'model.safetensors');
  const size = (await stat(model)).size;
  await truncate(model, size - 100);
  await assert.rejects(train(resume), (e: Error) => e.message.includes(model));
  await rm(join(last, 'optimizer.safetensors'));
  await assert.rejects(train(resume), /missing optimizer\.safetensors/);
  await rm(last, { recursive: true });
  await assert.rejects(train(resume), (e: Error) => e.message.includes(last) && /does not exist/.test(e.message));
});

test('lossPlotSvg: well-formed with no data, one point, and many', () => {
  for (const records of [[], [{ step: 0, lr: 1, tokens: 0, elapsed_s: 0, val_loss: 2 }], Array.from({ length: 300 }, (_, i) => ({ step: i, lr: 1, tokens: 0, elapsed_s: 0, train_loss: 4 / (1 + i / 30), ...(i % 50 === 0 ? { val_loss: 4.1 / (1 + i / 30) } : {}) }))]) {
    const svg = lossPlotSvg(records, { title: 'a <b> & "c"' });
    assertWellFormedXml(svg);
    assert.ok(!svg.includes('NaN') && !svg.includes('Infinity'), svg);
    assert.match(svg, /a &#60;b&#62; &#38; &#34;c&#34;/);
  }
});

test('dtype bfloat16: mixed-precision training follows float32 closely, is not float32, and restores the matmul precision', async () => {
  await dataset();
  const run = async (dtype: 'float32' | 'bfloat16', device: 'ref' | 'cpu') => {
    const losses: number[] = [];
    const r = await train(tinyConfig(`bf16-${dtype}-${device}`, { dtype, device, max_iters: 30, eval_interval: 30 }), { onLog: (m) => losses.push(m.train_loss) });
    return { losses };
  };
  const f32 = await run('float32', 'ref');
  const bf = await run('bfloat16', 'ref');
  const bfCpu = await run('bfloat16', 'cpu');
  assert.equal(matmulPrecision(), 'float32');
  assert.notDeepEqual(bf.losses, f32.losses, 'bfloat16 rounds (the losses differ from float32)');
  // Step by step the runs part only where this high learning rate makes single steps jumpy; the
  // curve is the same.
  for (let i = 0; i < 10; i++) assert.ok(Math.abs(bf.losses[i]! - f32.losses[i]!) < 0.01, `step ${i + 1}: ${bf.losses[i]} vs ${f32.losses[i]}`);
  const tail = (l: number[]) => l.slice(-10).reduce((s, x) => s + x, 0) / 10;
  assert.ok(Math.abs(tail(bf.losses) - tail(f32.losses)) < 0.03, `last 10 steps: ${tail(bf.losses)} vs ${tail(f32.losses)}`);
  // The cpu kernels (BF16 dot instructions or their emulation) against ref's exact emulation.
  for (let i = 0; i < 10; i++) assert.ok(Math.abs(bfCpu.losses[i]! - bf.losses[i]!) < 1e-3, `cpu step ${i + 1}: ${bfCpu.losses[i]} vs ${bf.losses[i]}`);
  await assert.rejects(train(tinyConfig('bf16-f64', { dtype: 'float64', device: 'cpu', max_iters: 1 })), /float64 trains the lm task on the ref device only/);
});
