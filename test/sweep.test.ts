// attn sweep: two tiny runs through the one training loop, one JSONL line each with N, D and C as
// defined; run again with a second run added, the finished one is skipped and kept as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDataset } from '../src/data/index.js';
import { GPT } from '../src/models/gpt.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { writeFileSync } from 'node:fs';
import { Flags, parseArgs } from '../src/cli/args.js';
import { runEvalMc, runEvalPpl } from '../src/cli/eval-lm.js';
import { kaplanLearningRate, nonEmbeddingParams, parseShape, planSweep, readSweepResults, runSweep, trainingFlops, type SweepOptions } from '../src/tasks/sweep.js';

/** A character-level dataset of a repeated line in root/data, and root/sweep for the sweep's output. */
async function tinySweepFolder(root: string): Promise<{ text: string; data: string; out: string }> {
  const text = 'to be or not to be, that is the question. '.repeat(40);
  const data = join(root, 'data');
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: data });
  return { text, data, out: join(root, 'sweep') };
}

test('sweep plan: N excludes the embeddings, C = 6ND + attention, cheapest first, max_compute filters the grid only', () => {
  const s = parseShape('2x16x2');
  assert.deepEqual(s, { n_layer: 2, n_embd: 16, n_head: 2 });
  // Per block (no biases): 2 norms (2C) + attention 4C² + MLP 8C²; one final norm.
  assert.equal(nonEmbeddingParams(s, 30, 8), 2 * (2 * 16 + 12 * 16 * 16) + 16);
  assert.equal(nonEmbeddingParams(s, 30, 8), GPT.countParameters({ ...s, vocab_size: 30, block_size: 8, bias: false }) - 30 * 16 - 8 * 16);
  assert.equal(trainingFlops(100, 10, s, 8), 6 * 100 * 10 + 6 * 2 * 8 * 16 * 10);
  assert.ok(Math.abs(kaplanLearningRate(1e6) - (0.003239 - 0.0001395 * Math.log(1e6))) < 1e-15);
  const plan = planSweep({ shapes: [parseShape('1x16x2'), s], iters: [4, 2], block_size: 8, batch_size: 2, maxCompute: 1.3e6, extra: [{ shape: parseShape('2x32x2'), iters: 50 }] }, 30);
  // C: L1 i2 0.62M, L1 i4 1.25M, L2 i2 1.24M, L2 i4 2.5M (left out), the explicit run 33M.
  assert.deepEqual(plan.map((r) => r.name), ['L1-d16-h2-i2', 'L2-d16-h2-i2', 'L1-d16-h2-i4', 'L2-d32-h2-i50']);
  for (const r of plan) if (r.name !== 'L2-d32-h2-i50') assert.ok(r.C <= 1.3e6, `${r.name}: ${r.C}`);
  assert.ok(plan.some((r) => r.name === 'L2-d32-h2-i50' && r.C > 1.3e6), 'explicit runs stay whatever max_compute says');
  for (let i = 1; i < plan.length; i++) assert.ok(plan[i - 1]!.C <= plan[i]!.C);
  // --lr_per_width: the learning rate of each run from its shape.
  const perWidth = planSweep({ shapes: [parseShape('1x16x2'), parseShape('2x32x2')], iters: [2], block_size: 8, batch_size: 2, lrOf: (_N, sh) => 0.4 / sh.n_embd }, 30);
  assert.deepEqual(perWidth.map((r) => r.learning_rate), [0.4 / 16, 0.4 / 32]);
  assert.throws(() => parseShape('2x15x2'), /not divisible/);
  assert.throws(() => parseShape('2-16-2'), /LAYERSxWIDTHxHEADS/);
});

test('sweep: 2 runs through runTraining; a second call skips the finished one', async () => {
  const root = mkdtempSync(join(tmpdir(), 'attn-sweep-'));
  try {
    const { text, data, out } = await tinySweepFolder(root);
    const base: SweepOptions = { dataset: data, out, shapes: [parseShape('1x16x2')], iters: [3], block_size: 8, batch_size: 2, eval_iters: 2, seed: 7, device: 'cpu', threads: 1 };
    const first = await runSweep(base);
    assert.equal(first.trained.length, 1);
    const lines1 = readFileSync(join(out, 'results.jsonl'), 'utf8');
    const [r] = await readSweepResults(join(out, 'results.jsonl'));
    assert.equal(r!.name, 'L1-d16-h2-i3');
    assert.equal(r!.D, 3 * 2 * 8);
    assert.equal(r!.N, nonEmbeddingParams(parseShape('1x16x2'), r!.vocab_size, 8));
    assert.equal(r!.C, trainingFlops(r!.N, r!.D, parseShape('1x16x2'), 8));
    assert.ok(Number.isFinite(r!.val_loss) && r!.val_loss > 0 && r!.wall_s > 0);
    assert.ok(existsSync(join(out, 'runs', r!.name, 'best', 'model.safetensors')), 'the final weights are kept');
    assert.ok(!existsSync(join(out, 'runs', r!.name, 'last')), 'the optimizer state is not');
    // The run's own metrics come from the one loop.
    const metrics = readFileSync(join(out, 'runs', r!.name, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; lr: number });
    assert.equal(metrics[metrics.length - 1]!.step, 3);
    // attn eval ppl / mc on the run's saved model (a character-level attn checkpoint).
    const model = join(out, 'runs', r!.name, 'best');
    const textFile = join(root, 'val.txt');
    writeFileSync(textFile, text.slice(0, 30));
    const ppl = await captureJson(() => runEvalPpl(new Flags(parseArgs(['ppl', '--model', model, '--file', textFile, '--stride', '4', '--threads', '1'], new Set()), 'eval')));
    assert.equal(ppl['tokens'], 29);
    assert.equal(ppl['bytes'], 29);
    assert.ok(Math.abs((ppl['bits_per_byte'] as number) - (ppl['nll'] as number) / Math.LN2) < 1e-12);
    assert.ok(Math.abs(Math.log(ppl['ppl'] as number) - (ppl['nll'] as number)) < 1e-12);
    const items = join(root, 'items.jsonl');
    writeFileSync(items, '{"context":"to be or not to","choices":[" be"," or"],"label":0}\n{"context":"that is the","choices":[" quest","th"],"label":0}\n');
    const mc = await captureJson(() => runEvalMc(new Flags(parseArgs(['mc', '--model', model, '--file', items, '--delimiter', '', '--threads', '1'], new Set()), 'eval')));
    assert.equal(mc['n'], 2);
    assert.ok([0, 0.5, 1].includes(mc['acc'] as number) && [0, 0.5, 1].includes(mc['acc_norm'] as number));
    const started: string[] = [];
    const skipped: string[] = [];
    const second = await runSweep({ ...base, iters: [3, 5] }, { onRunStart: (_i, _n, run) => started.push(run.name), onSkip: (run) => skipped.push(run.name) });
    assert.deepEqual(skipped, ['L1-d16-h2-i3']);
    assert.deepEqual(started, ['L1-d16-h2-i5']);
    assert.equal(second.skipped, 1);
    const lines2 = readFileSync(join(out, 'results.jsonl'), 'utf8');
    assert.ok(lines2.startsWith(lines1), 'the finished run is kept as it was');
    assert.equal(lines2.trim().split('\n').length, 2);
    // No budget left: nothing starts, the run is named as left over.
    const none = await runSweep({ ...base, iters: [3, 5, 7], maxMinutes: 1e-9 });
    assert.deepEqual(none.leftOver.map((x) => x.name), ['L1-d16-h2-i7']);
    // Another learning rate into the same folder: the finished runs are not reused as if equal.
    await assert.rejects(runSweep({ ...base, lrOf: (_N, shape) => 0.4 / shape.n_embd }), /L1-d16-h2-i3 was trained with learning_rate .* \(this sweep: 0\.025\)/);
    await assert.rejects(runSweep({ ...base, batch_size: 4 }), /batch_size 2 \(this sweep: 4\)/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

async function captureJson(run: () => Promise<void>): Promise<Record<string, unknown>> {
  const out: string[] = [];
  const orig = console.log;
  console.log = (s: string) => out.push(s);
  try {
    await run();
  } finally {
    console.log = orig;
  }
  return JSON.parse(out.join('\n')) as Record<string, unknown>;
}

test('sweep: a run that diverges is recorded in failed.jsonl and skipped; the others still train', async () => {
  const root = mkdtempSync(join(tmpdir(), 'attn-sweep-nan-'));
  try {
    const { data, out } = await tinySweepFolder(root);
    // 1x16x2 at an absurd learning rate: its weights overflow within a few updates
    const o: SweepOptions = {
      dataset: data, out, shapes: [parseShape('1x16x2'), parseShape('1x24x2')], iters: [4], block_size: 8, batch_size: 2, eval_iters: 2, seed: 7, device: 'cpu', threads: 1,
      lrOf: (_N, s) => (s.n_embd === 16 ? 1e30 : 1e-3),
    };
    const skipped: string[] = [];
    const first = await runSweep(o, { onSkip: (r, why) => skipped.push(`${r.name}: ${why}`) });
    assert.deepEqual(first.trained.map((r) => r.name), ['L1-d24-h2-i4']);
    assert.deepEqual(first.failed.map((f) => f.run.name), ['L1-d16-h2-i4']);
    assert.match(first.failed[0]!.reason, /training diverged at step \d+/);
    const lines = readFileSync(join(out, 'failed.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { name: string; learning_rate: number });
    assert.deepEqual(lines.map((l) => [l.name, l.learning_rate]), [['L1-d16-h2-i4', 1e30]]);
    assert.equal((await readSweepResults(join(out, 'results.jsonl'))).length, 1, 'no result for the diverged run');
    // a second call trains nothing: one run finished, one diverged before (and says how to retry)
    const second = await runSweep(o, { onSkip: (r, why) => skipped.push(`${r.name}: ${why}`) });
    assert.equal(second.trained.length + second.failed.length, 0);
    assert.ok(skipped.some((s) => /^L1-d16-h2-i4: diverged in an earlier call .*delete its line/.test(s)), skipped.join('\n'));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
