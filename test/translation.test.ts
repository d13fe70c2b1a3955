// The translation pipeline: length-grouped token-budget batches, a tiny trainSeq2Seq run on a
// Multi30k slice (metrics, checkpoints, exact resume), and the translate command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Flags, parseArgs } from '../src/cli/args.js';
import { runTranslate } from '../src/cli/translate.js';
import { LengthBatchSampler, pairCost, readParallel, type EncodedPair } from '../src/data/translation.js';
import { Generator } from '../src/tensor/random.js';
import { loadSeq2SeqCheckpoint } from '../src/models/seq2seq-checkpoint.js';
import { seq2seqTrainConfig, trainSeq2Seq, type Seq2SeqMetrics } from '../src/tasks/translation.js';
import { seq2seqPreset } from '../src/train/presets.js';

const DATA = fileURLToPath(new URL('../../data/multi30k', import.meta.url));
const IDS = { pad_id: 0, bos_id: 1, eos_id: 2 };

function randomPairs(n: number, seed: number): EncodedPair[] {
  const g = new Generator(seed);
  const seq = (len: number): number[] => Array.from({ length: len }, () => 3 + g.randint(50));
  return Array.from({ length: n }, () => ({ src: seq(1 + g.randint(30)), tgt: seq(g.randint(30)) }));
}

const epochBatches = (s: LengthBatchSampler) => Array.from({ length: s.epochLength }, () => s.next());

test('length batches: within the budget, padded correctly, every pair once per epoch, seeded', () => {
  const pairs = randomPairs(300, 1);
  const budget = 120;
  const s = new LengthBatchSampler(pairs, IDS, budget, 7);
  for (let epoch = 0; epoch < 2; epoch++) {
    const seen = new Array<number>(pairs.length).fill(0);
    for (const b of epochBatches(s)) {
      assert.ok(b.batchSize * Math.max(b.srcLen, b.tgtLen) <= budget || b.batchSize === 1, 'within the token budget');
      assert.equal(Math.max(...b.indices.map((i) => pairCost(pairs[i]!))), Math.max(b.srcLen, b.tgtLen));
      b.indices.forEach((idx, r) => {
        seen[idx]!++;
        const p = pairs[idx]!;
        const srcRow = [...b.src.subarray(r * b.srcLen, (r + 1) * b.srcLen)];
        assert.deepEqual(srcRow, [...p.src, ...new Array(b.srcLen - p.src.length).fill(IDS.pad_id)]);
        const pad = new Array(b.tgtLen - p.tgt.length - 1).fill(IDS.pad_id);
        assert.deepEqual([...b.tgtIn.subarray(r * b.tgtLen, (r + 1) * b.tgtLen)], [IDS.bos_id, ...p.tgt, ...pad]);
        assert.deepEqual([...b.tgtOut.subarray(r * b.tgtLen, (r + 1) * b.tgtLen)], [...p.tgt, IDS.eos_id, ...pad]);
      });
    }
    assert.ok(seen.every((c) => c === 1), `epoch ${epoch}: every pair exactly once`);
  }
  // Deterministic for a seed; another seed or epoch orders differently.
  const a = new LengthBatchSampler(pairs, IDS, budget, 7);
  assert.deepEqual(a.batchesOf(0), new LengthBatchSampler(pairs, IDS, budget, 7).batchesOf(0));
  assert.notDeepEqual(a.batchesOf(0), a.batchesOf(1));
  assert.notDeepEqual(a.batchesOf(0), new LengthBatchSampler(pairs, IDS, budget, 8).batchesOf(0));
  // A pair longer than the budget gets a batch of its own.
  const big = new LengthBatchSampler([{ src: new Array(50).fill(5), tgt: [5] }, ...pairs.slice(0, 10)], IDS, 20, 0);
  assert.ok(epochBatches(big).some((b) => b.batchSize === 1 && b.srcLen === 50));
});

test('length batches: the sampler state resumes exactly, across epochs', () => {
  const pairs = randomPairs(100, 2);
  const a = new LengthBatchSampler(pairs, IDS, 100, 3);
  const n = a.epochLength;
  for (let i = 0; i < n - 2; i++) a.next();
  const st = JSON.parse(JSON.stringify(a.state()));
  const b = new LengthBatchSampler(pairs, IDS, 100, 3);
  b.setState(st);
  for (let i = 0; i < n + 5; i++) assert.deepEqual(b.next().indices, a.next().indices);
  assert.throws(() => new LengthBatchSampler(pairs, IDS, 100, 4).setState(st), /seed/);
});

test('multi30k files read aligned', async () => {
  const val = await readParallel(DATA, 'val', 'de', 'en');
  assert.equal(val.src.length, 1014);
  assert.equal(val.tgt.length, 1014);
  assert.equal(seq2seqTrainConfig(seq2seqPreset('multi30k-de-en')).n_embd, 256);
});

const TINY = {
  dataset: DATA, train_limit: 200, val_limit: 16, vocab_size: 320, n_layer_enc: 1, n_layer_dec: 1, n_head: 2, n_embd: 16, n_inner: 32,
  block_size: 48, max_tokens: 300, eval_interval: 2, eval_max_tokens: 2000, log_interval: 1, decode_len_a: 0, decode_len_b: 6,
  warmup_iters: 4, learning_rate: 0.25, // Noam: 2 · 16^-0.5 · 4^-0.5
  device: 'ref' as const, seed: 5,
};

test('tiny trainSeq2Seq: metrics with val BLEU, checkpoints that reload, exact resume, translate CLI', async () => {
  const root = mkdtempSync(join(tmpdir(), 'attn-s2s-'));
  try {
    const outA = join(root, 'a');
    const outB = join(root, 'b');
    const evals: number[] = [];
    const resA = await trainSeq2Seq({ ...TINY, out_dir: outA, max_iters: 4 }, { onEval: (e) => evals.push(e.step) });
    assert.equal(resA.step, 4);
    assert.deepEqual(evals, [2, 4]);
    const recA = (await readFile(join(outA, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Seq2SeqMetrics);
    const evalRecs = recA.filter((r) => r.val_bleu !== undefined);
    assert.equal(evalRecs.length, 2);
    for (const r of evalRecs) assert.ok(Number.isFinite(r.val_bleu) && Number.isFinite(r.val_loss) && r.elapsed_s > 0);
    assert.match(await readFile(join(outA, 'bleu.svg'), 'utf8'), /<svg/);
    const cfgJson = JSON.parse(await readFile(join(outA, 'best', 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfgJson['model_type'], 'attn_seq2seq');
    const loaded = await loadSeq2SeqCheckpoint(join(outA, 'last'));
    assert.equal(loaded.config.vocab_size, loaded.tokenizer.vocabSize);
    assert.equal(loaded.tokenizer.idToToken(loaded.config.pad_id), '<pad>');

    // Two sessions (2 steps, then resume to 4) end where one session of 4 does.
    await trainSeq2Seq({ ...TINY, out_dir: outB, max_iters: 2 });
    await trainSeq2Seq({ ...TINY, out_dir: outB, max_iters: 4, init_from: 'resume' });
    const recB = (await readFile(join(outB, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Seq2SeqMetrics);
    const strip = (rs: Seq2SeqMetrics[]) => rs.map((r) => [r.step, r.train_loss, r.val_loss, r.val_bleu, r.lr, r.tokens]);
    assert.deepEqual(strip(recB), strip(recA));
    const lb = await loadSeq2SeqCheckpoint(join(outB, 'last'));
    for (const [name, t] of loaded.model.stateDict()) assert.deepEqual(lb.model.stateDict().get(name)!.data(), t.data(), name);
    lb.model.dispose();
    loaded.model.dispose();

    // translate: order kept, empty lines kept, long lines truncated with a warning.
    const long = Array.from({ length: 60 }, () => 'Hund').join(' ');
    const input = 'Ein Hund läuft.\n\nZwei Männer spielen Fußball.\n' + long + '\n';
    for (const extra of [['--greedy'], ['--beam', '2']]) {
      let out = '';
      let err = '';
      await runTranslate(new Flags(parseArgs(['--model', join(outA, 'best'), '--device', 'ref', '--batch_size', '2', ...extra], new Set(['greedy'])), 'translate'), {
        input, stdout: (s) => (out += s), stderr: (s) => (err += s),
      });
      const lines = out.split('\n');
      assert.equal(lines.length, 5, JSON.stringify(out));
      assert.equal(lines[1], '');
      assert.equal(lines[4], '');
      assert.match(err, /line 4 .*truncated/);
      assert.doesNotMatch(err, /line [123] /);
    }
    // A GPT checkpoint is refused, saying what it is.
    const gpt = join(root, 'gpt');
    await mkdir(gpt);
    await writeFile(join(gpt, 'config.json'), JSON.stringify({ model_type: 'gpt2', n_layer: 2 }));
    await assert.rejects(
      runTranslate(new Flags(parseArgs(['--model', gpt, '--device', 'ref']), 'translate'), { input: 'x\n', stdout: () => {}, stderr: () => {} }),
      /GPT language model \(model_type 'gpt2'\), not an encoder-decoder/,
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a diverging trainSeq2Seq run stops naming the step', async () => {
  const root = mkdtempSync(join(tmpdir(), 'attn-s2s-nan-'));
  try {
    await assert.rejects(
      trainSeq2Seq({ ...TINY, out_dir: root, max_iters: 20, eval_interval: 100, learning_rate: 1e30, warmup_iters: 1, grad_clip: 0 }),
      (e: Error) => e.name === 'TrainingDivergedError' && /diverged at step \d+/.test(e.message),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
