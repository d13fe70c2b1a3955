// BERT-style encoder: MLM masking statistics, shapes, float64 gradcheck of the classification
// path, a tiny fine-tune, checkpoint round trip, eval classify, LoRA trains only adapters.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Generator, getBackend, noGrad, RefBackend, tensor } from '../src/index.js';
import { BertModel, IGNORE_INDEX, maskTokens, padBatch, type BertConfig } from '../src/models/bert.js';
import { encodeSentence, labelSubset, parseTsv } from '../src/data/sentences.js';
import { accuracyOf, evaluateClassifier } from '../src/eval/classify.js';
import { loadBertCheckpoint } from '../src/models/bert-checkpoint.js';
import { finetuneClassifier, finetuneConfig } from '../src/tasks/classification.js';
import { pretrainMLM } from '../src/tasks/masked-lm.js';
import { runEvalClassify } from '../src/cli/eval-classify.js';
import { Flags, parseArgs } from '../src/cli/args.js';
import { assertClose, gradcheck } from './helpers.js';

const ref = new RefBackend();
const TINY: Partial<BertConfig> = { n_layer: 2, n_head: 2, d_model: 8, d_ff: 16, dropout: 0, max_len: 16, vocab_size: 12, pad_id: 0, cls_id: 1, sep_id: 2, mask_id: 3, n_classes: 2, classifier_dropout: 0 };

const ids = (rows: number[][], backend = ref as never) => padBatch(rows, 0, backend);

test('MLM masking: 15% selected, 80/10/10, specials never touched, deterministic', () => {
  const V = 100;
  const specials = [0, 1, 2, 3];
  const g = new Generator(5);
  const src = Array.from({ length: 200_000 }, (_, i) => (i % 10 === 0 ? specials[i % 4]! : 4 + g.randint(V - 4)));
  const opts = { vocabSize: V, maskId: 3, specialIds: specials, prob: 0.15 };
  const a = maskTokens(src, { ...opts, generator: new Generator(1) });
  const b = maskTokens(src, { ...opts, generator: new Generator(1) });
  assert.deepEqual(a, b);
  let eligible = 0;
  let sel = 0;
  let masked = 0;
  let kept = 0;
  let random = 0;
  for (let i = 0; i < src.length; i++) {
    const t = src[i]!;
    if (specials.includes(t)) {
      assert.equal(a.labels[i], IGNORE_INDEX);
      assert.equal(a.input[i], t);
      continue;
    }
    eligible++;
    if (a.labels[i] === IGNORE_INDEX) {
      assert.equal(a.input[i], t);
      continue;
    }
    sel++;
    assert.equal(a.labels[i], t);
    if (a.input[i] === 3) masked++;
    else if (a.input[i] === t) kept++;
    else {
      random++;
      assert.ok(!specials.includes(a.input[i]!));
    }
  }
  assert.ok(Math.abs(sel / eligible - 0.15) < 0.005, `selected ${sel / eligible}`);
  assert.ok(Math.abs(masked / sel - 0.8) < 0.01, `masked ${masked / sel}`);
  // A random draw equals the original 1% of the time: kept ≈ 0.1 + 0.001, random ≈ 0.099.
  assert.ok(Math.abs(kept / sel - 0.1) < 0.01, `kept ${kept / sel}`);
  assert.ok(Math.abs(random / sel - 0.1) < 0.01, `random ${random / sel}`);
  const c = maskTokens(src, { ...opts, generator: new Generator(2) });
  assert.notDeepEqual(a.labels, c.labels);
});

test('BertModel shapes, padding mask, heads', () => {
  const m = new BertModel({ ...TINY, mlm_head: true }, { backend: ref, seed: 1 }).eval();
  const x = ids([[1, 5, 6, 7, 2], [1, 8, 2]]);
  const { hidden, mask } = m.forward(x);
  assert.deepEqual(hidden.shape, [2, 5, 8]);
  assert.deepEqual(Array.from(mask.data()), [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
  assert.deepEqual(m.classify(x).shape, [2, 2]);
  assert.deepEqual(m.mlmLogits(x).shape, [2, 5, 12]);
  // Padding does not change a row's classification.
  const alone = m.classify(ids([[1, 8, 2]])).data();
  assertClose(alone, m.classify(x).data().slice(2), 1e-5, 1e-6, 'padding invariance');
  const labels = tensor(Int32Array.from([IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 8, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]), { backend: ref, dtype: 'int32', shape: [2, 5] });
  const { loss, count } = m.mlmLoss(x, labels);
  assert.equal(count, 2);
  assert.ok(Number.isFinite(loss.item()));
  // Labels given as a host array (what pre-training passes, sparing a GPU a read-back).
  const host = m.mlmLoss(x, labels.data() as Int32Array);
  assert.equal(host.count, 2);
  assert.equal(host.loss.item(), loss.item());
  assert.throws(() => m.mlmLoss(x, new Int32Array(9)), /9 labels for ids \[2, 5\]/);
  // Rounding the padded length up (as on a GPU) changes no row's classification or MLM loss.
  const padded = padBatch([[1, 5, 6, 7, 2], [1, 8, 2]], 0, ref as never, 8);
  assert.deepEqual(padded.shape, [2, 8]);
  assertClose(m.classify(padded).data(), m.classify(x).data(), 1e-5, 1e-6, 'padded to 8');
  const labels8 = new Int32Array(16).fill(IGNORE_INDEX);
  labels8[1] = 5;
  labels8[8 + 1] = 8;
  assertClose([m.mlmLoss(padded, labels8).loss.item()], [loss.item()], 1e-5, 1e-6, 'MLM loss padded to 8');
  assert.equal(new BertModel({ ...TINY, positions: 'sinusoidal' }, { backend: ref }).forward(x).hidden.shape[2], 8);
  assert.throws(() => new BertModel({ ...TINY, cls_id: 0 }), /must all differ/);
  assert.throws(() => new BertModel({ ...TINY, d_model: 9 }), /divisible/);
});

test("pooling 'mean': the classifier reads the mean of the non-padding positions", () => {
  const m = new BertModel({ ...TINY, pooling: 'mean' }, { backend: ref, dtype: 'float64', seed: 2 }).eval();
  const x = ids([[1, 5, 6, 7, 2], [1, 8, 2]]);
  const { hidden } = m.forward(x);
  const h = hidden.data();
  const C = 8;
  // By hand: row 0 averages its 5 positions, row 1 its first 3 (2 are padding).
  const mean = new Float64Array(2 * C);
  for (const [b, n] of [[0, 5], [1, 3]] as const) {
    for (let t = 0; t < n; t++) for (let c = 0; c < C; c++) mean[b * C + c]! += h[(b * 5 + t) * C + c]! / n;
  }
  const head = m.cls_head!;
  const want = noGrad(() => head.out.forward(head.dense.forward(tensor(mean, { backend: ref, dtype: 'float64', shape: [2, C] })).tanh())).data();
  assertClose(m.classify(x).data(), want, 1e-12, 1e-12, 'mean-pooled logits');
  // Padding does not change a row's logits.
  assertClose(m.classify(ids([[1, 8, 2]])).data(), m.classify(x).data().slice(2), 1e-12, 1e-12, 'padding invariance');
  const y = tensor(Int32Array.from([1, 0]), { backend: ref, dtype: 'int32', shape: [2] });
  gradcheck('mean-pooled loss', () => m.classifyLoss(x, y).loss, [head.dense.weight, m.embed.weight], { rtol: 1e-4, atol: 1e-6 });
  assert.throws(() => new BertModel({ ...TINY, pooling: 'max' as never }), /pooling must be 'cls' or 'mean'/);
});

test('gradcheck (float64, ref): classification loss through the whole model', () => {
  const m = new BertModel({ ...TINY, vocab_size: 7, max_len: 6 }, { backend: ref, dtype: 'float64', seed: 3 }).eval();
  const x = ids([[1, 4, 5, 2], [1, 6, 2]]);
  const y = tensor(Int32Array.from([1, 0]), { backend: ref, dtype: 'int32', shape: [2] });
  const head = m.cls_head!;
  gradcheck('cls logits', () => m.classify(x), [head.dense.weight, head.out.bias!, m.embed.weight, m.encoder.layers.at(0).self_attn.q_proj.weight], { rtol: 1e-4, atol: 1e-6 });
  gradcheck('cls loss', () => m.classifyLoss(x, y).loss, [head.out.weight, m.encoder.layers.at(1).ffn.c_fc.weight], { rtol: 1e-4, atol: 1e-6 });
});

// A synthetic sentiment task: 'good'-ish words vs 'bad'-ish words.
function synthTsv(n: number, seed: number): string {
  const g = new Generator(seed);
  const pos = ['good', 'great', 'fine', 'lovely', 'superb'];
  const neg = ['bad', 'awful', 'dull', 'poor', 'boring'];
  const filler = ['the', 'film', 'is', 'a', 'movie', 'plot', 'very', 'and', 'it'];
  const lines = ['sentence\tlabel'];
  for (let i = 0; i < n; i++) {
    const label = g.randint(2);
    const words = Array.from({ length: 3 + g.randint(5) }, () => filler[g.randint(filler.length)]!);
    words.splice(g.randint(words.length + 1), 0, (label ? pos : neg)[g.randint(5)]!);
    lines.push(`${words.join(' ')} \t${label}`);
  }
  return lines.join('\n') + '\n';
}

const SMALL = { n_layer: 1, n_head: 2, n_embd: 32, n_inner: 64, block_size: 24, vocab_size: 300, dropout: 0, batch_size: 16, warmup_iters: 5, learning_rate: 3e-3, log_interval: 5, seed: 1 };

test('tiny fine-tune learns; checkpoint reload gives the same logits; eval classify', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-bert-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const train = join(dir, 'train.tsv');
  const dev = join(dir, 'dev.tsv');
  await writeFile(train, synthTsv(300, 1));
  await writeFile(dev, synthTsv(100, 2));
  const backend = await getBackend('cpu');
  const r = await finetuneClassifier({ ...SMALL, train_file: train, dev_file: dev, out_dir: join(dir, 'ft'), max_iters: 80, eval_interval: 40 }, {}, { backend });
  assert.ok(r.best_val_accuracy! > 0.75, `dev accuracy ${r.best_val_accuracy}`);
  const metrics = (await readFile(join(dir, 'ft', 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
  assert.ok(metrics.some((m) => m['val_accuracy'] !== undefined) && metrics.some((m) => m['train_loss'] !== undefined));
  const cfgJson = JSON.parse(await readFile(join(dir, 'ft', 'best', 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfgJson['model_type'], 'attn_bert');

  const ev = await evaluateClassifier(r.best_dir, dev, { backend });
  assert.equal(ev.n, 100);
  assert.equal(ev.accuracy, r.best_val_accuracy);
  // Reload twice: identical logits.
  const a = await loadBertCheckpoint(r.best_dir, { backend });
  const b = await loadBertCheckpoint(r.best_dir, { backend });
  const sp = { pad_id: a.config.pad_id, cls_id: a.config.cls_id, sep_id: a.config.sep_id, mask_id: a.config.mask_id };
  const x = padBatch([encodeSentence(a.tokenizer, 'a great film', sp, 24), encodeSentence(a.tokenizer, 'dull', sp, 24)], sp.pad_id, backend);
  assert.deepEqual(Array.from(noGrad(() => a.model.classify(x)).data()), Array.from(noGrad(() => b.model.classify(x)).data()));

  // The CLI: JSON with accuracy and n; clear errors.
  const logs: string[] = [];
  const orig = console.log;
  console.log = (s: string) => logs.push(s);
  try {
    await runEvalClassify(new Flags(parseArgs(['--model', r.best_dir, '--file', dev]), 'eval classify'));
  } finally {
    console.log = orig;
  }
  assert.deepEqual(JSON.parse(logs[0]!), { accuracy: ev.accuracy, n: 100 });
  await assert.rejects(runEvalClassify(new Flags(parseArgs(['--model', r.best_dir, '--file', join(dir, 'nope.tsv')]), 'eval classify')), /no such file/);
  await writeFile(join(dir, 'bad.tsv'), 'text\tstuff\nx\ty\n');
  await assert.rejects(runEvalClassify(new Flags(parseArgs(['--model', r.best_dir, '--file', join(dir, 'bad.tsv')]), 'eval classify')), /header must name/);
  a.model.dispose();
  b.model.dispose();
});

test('MLM pre-training then fine-tuning from it; LoRA trains only adapters and the head', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-bert-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const train = join(dir, 'train.tsv');
  const dev = join(dir, 'dev.tsv');
  await writeFile(train, synthTsv(200, 3));
  await writeFile(dev, synthTsv(60, 4));
  const backend = await getBackend('cpu');
  const p = await pretrainMLM({ ...SMALL, data: train, out_dir: join(dir, 'mlm'), max_iters: 30, eval_interval: 15, eval_iters: 2 }, {}, { backend });
  assert.ok(Number.isFinite(p.best_val_loss));
  const pre = await loadBertCheckpoint(p.best_dir, { backend });
  assert.ok(pre.model.mlm_head && !pre.model.cls_head);
  // A pre-trained checkpoint is refused by eval classify.
  await assert.rejects(evaluateClassifier(p.best_dir, dev, { backend }), /no classification head/);
  // Another model kind is refused by name.
  await mkdir(join(dir, 'other'));
  await writeFile(join(dir, 'other', 'config.json'), JSON.stringify({ model_type: 'gpt2' }));
  await copyFile(join(p.best_dir, 'model.safetensors'), join(dir, 'other', 'model.safetensors'));
  await assert.rejects(runEvalClassify(new Flags(parseArgs(['--model', join(dir, 'other'), '--file', dev]), 'eval classify')), /model_type is 'gpt2', expected 'attn_bert'/);

  // LoRA: after training, the saved non-head weights equal the base + merged update, and the
  // embedding (not adapted) is unchanged.
  let counts = { trainable: 0, total: 0 };
  const r = await finetuneClassifier({ ...SMALL, train_file: train, dev_file: dev, init_from: p.best_dir, out_dir: join(dir, 'lora'), max_iters: 20, eval_interval: 0, lora_rank: 2 }, {
    onStart: (i) => (counts = { trainable: i.trainable, total: i.numParams }),
  }, { backend });
  assert.ok(counts.trainable > 0 && counts.trainable < counts.total / 4, `trainable ${counts.trainable} of ${counts.total}`);
  const ft = await loadBertCheckpoint(join(dir, 'lora', 'last'), { backend });
  assert.deepEqual(Array.from(ft.model.embed.weight.data()), Array.from(pre.model.embed.weight.data()), 'embedding frozen');
  assert.deepEqual(Array.from(ft.model.encoder.layers.at(0).norm1.weight.data()), Array.from(pre.model.encoder.layers.at(0).norm1.weight.data()), 'norms frozen');
  const q0 = ft.model.encoder.layers.at(0).self_attn.q_proj.weight.data();
  const q1 = pre.model.encoder.layers.at(0).self_attn.q_proj.weight.data();
  assert.ok(q0.some((v, i) => v !== q1[i]), 'adapted weights changed (merged)');
  assert.ok(Number.isFinite(r.best_val_accuracy!));
  const acc = accuracyOf(ft.model, [[ft.config.cls_id, ft.config.sep_id]], [0]);
  assert.equal(acc.n, 1);

  // Continued pre-training (init_from): at learning rate 0 the weights stay, and the held-out
  // sentences and masks are the same, so the validation loss is the checkpoint's own; the BPE
  // is the checkpoint's (the vocab_size flag is ignored). A classifier without an MLM head is refused.
  const c = await pretrainMLM({ ...SMALL, vocab_size: 999, data: train, out_dir: join(dir, 'mlm2'), init_from: p.best_dir, learning_rate: 0, warmup_iters: 0, max_iters: 3, eval_interval: 3, eval_iters: 2 }, {}, { backend });
  assert.ok(Math.abs(c.best_val_loss - p.best_val_loss) < 1e-5, `val loss after continuing at lr 0: ${c.best_val_loss} vs ${p.best_val_loss}`);
  assert.equal(await readFile(join(c.best_dir, 'tokenizer.json'), 'utf8'), await readFile(join(p.best_dir, 'tokenizer.json'), 'utf8'));
  await assert.rejects(pretrainMLM({ ...SMALL, data: train, out_dir: join(dir, 'mlm3'), init_from: join(dir, 'lora', 'last'), max_iters: 1 }, {}, { backend }), /no masked-LM head/);
  pre.model.dispose();
  ft.model.dispose();
});

test('label subsets are seeded and sized; TSV errors name the line', () => {
  const items = Array.from({ length: 1000 }, (_, i) => i);
  assert.equal(labelSubset(items, 0.1, 1).length, 100);
  assert.equal(labelSubset(items, 0.01, 1).length, 10);
  assert.deepEqual(labelSubset(items, 0.1, 1), labelSubset(items, 0.1, 1));
  assert.notDeepEqual(labelSubset(items, 0.1, 1), labelSubset(items, 0.1, 2));
  assert.throws(() => parseTsv('sentence\tlabel\nok\t1\nbad\tx\n', 'f.tsv'), /f\.tsv:3/);
});

test('prompt-based classification: the MLM head scores the verbalizers at the [MASK]; gradcheck; config errors', () => {
  const cfg: Partial<BertConfig> = { ...TINY, verbalizers: [7, 9], prompt_suffix: [5, 3, 6] };
  const m = new BertModel(cfg, { backend: ref, dtype: 'float64', seed: 4 }).eval();
  assert.ok(m.promptMode && !m.cls_head && m.mlm_head);
  const x = ids([[1, 8, 10, 5, 3, 6, 2], [1, 11, 5, 3, 6, 2]]);
  const logits = m.classify(x).data(); // (2, 2); mask positions found in ids
  const full = m.mlmLogits(x).data(); // (2, 7, 12)
  const at = (b: number, t: number, v: number) => full[(b * 7 + t) * 12 + v]!;
  assertClose(logits, [at(0, 4, 7), at(0, 4, 9), at(1, 3, 7), at(1, 3, 9)], 1e-12, 1e-12, 'verbalizer columns of the MLM logits');
  assertClose(m.classify(x, [4, 3]).data(), logits, 0, 0, 'given positions');
  const y = tensor(Int32Array.from([1, 0]), { backend: ref, dtype: 'int32', shape: [2] });
  gradcheck('prompt loss', () => m.classifyLoss(x, y).loss, [m.embed.weight, m.mlm_head!.bias, m.mlm_head!.dense.weight, m.encoder.layers.at(0).ffn.c_fc.weight], { rtol: 1e-4, atol: 1e-6 });
  assert.throws(() => m.classify(ids([[1, 8, 2]])), /row 0 has no \[MASK\]/);
  assert.throws(() => new BertModel({ ...cfg, mlm_head: false }), /needs the MLM head/);
  assert.throws(() => new BertModel({ ...cfg, verbalizers: [7] }), /1 verbalizers for n_classes=2/);
  assert.throws(() => new BertModel({ ...cfg, prompt_suffix: [5, 6] }), /mask_id \(3\) exactly once/);
  assert.throws(() => new BertModel({ ...cfg, verbalizers: [7, 99] }), /verbalizers must be a list of token ids/);
});

test('prompt-based fine-tuning from scratch and from a pre-trained MLM; the checkpoint evaluates the same', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-bert-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const train = join(dir, 'train.tsv');
  const dev = join(dir, 'dev.tsv');
  await writeFile(train, synthTsv(300, 5));
  await writeFile(dev, synthTsv(100, 6));
  const backend = await getBackend('cpu');
  const prompt = { prompt: 'it is [MASK] .', verbalizers: 'bad,good', vocab_size: 600 };
  const s = await finetuneClassifier({ ...SMALL, ...prompt, train_file: train, dev_file: dev, out_dir: join(dir, 'scratch'), max_iters: 80, eval_interval: 40 }, {}, { backend });
  assert.ok(s.best_val_accuracy! > 0.75, `dev accuracy ${s.best_val_accuracy}`);
  const ev = await evaluateClassifier(s.best_dir, dev, { backend });
  assert.equal(ev.accuracy, s.best_val_accuracy);
  const saved = await loadBertCheckpoint(s.best_dir, { backend });
  assert.ok(saved.model.promptMode && saved.config.prompt_suffix.includes(saved.config.mask_id));
  // A pre-trained MLM keeps its head: the prompt reads it.
  const p = await pretrainMLM({ ...SMALL, vocab_size: 600, data: train, out_dir: join(dir, 'mlm'), max_iters: 20, eval_interval: 0, eval_iters: 1 }, {}, { backend });
  const f = await finetuneClassifier({ ...SMALL, ...prompt, train_file: train, dev_file: dev, init_from: p.best_dir, out_dir: join(dir, 'pre'), max_iters: 40, eval_interval: 0 }, {}, { backend });
  assert.ok(Number.isFinite(f.best_val_accuracy!));
  await assert.rejects(finetuneClassifier({ ...SMALL, ...prompt, verbalizers: 'bad,unbelievably', train_file: train, dev_file: dev, out_dir: join(dir, 'x'), max_iters: 1 }, {}, { backend }), /verbalizer 'unbelievably' is \d+ tokens/);
  assert.throws(() => finetuneConfig({ prompt: 'it is .' }), /hold \[MASK\] exactly once/);
  assert.throws(() => finetuneConfig({ prompt: 'it is [MASK] .', verbalizers: 'good' }), /1 verbalizers/);
  saved.model.dispose();
});
