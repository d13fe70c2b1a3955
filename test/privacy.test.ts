// Memorisation and membership measurements: ROC AUC against the pairwise definition, the
// skew-normal fit and CDF, exact canary exposure (pruned tree walk) against ranking every
// candidate, and greedy extraction.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Generator, RefBackend, tensor } from '../src/index.js';
import { GPT, gptConfig } from '../src/models/gpt.js';
import {
  exposureExact, exposureExtrapolated, extractionRate, fitSkewNormal, logNormalCdf, logSkewNormalCdf, rocAuc, rocAucInterval, rocCurve, secretLogPerplexities, windowLosses, type CanaryFormat,
} from '../src/eval/privacy.js';

const REF = new RefBackend();

function pairwiseAuc(p: number[], n: number[]): number {
  let s = 0;
  for (const a of p) for (const b of n) s += a > b ? 1 : a === b ? 0.5 : 0;
  return s / (p.length * n.length);
}

test('rocAuc equals the pairwise probability, ties counting one half', () => {
  assert.equal(rocAuc([3, 4, 5], [0, 1, 2]), 1);
  assert.equal(rocAuc([0, 1], [2, 3]), 0);
  assert.equal(rocAuc([1, 1], [1, 1]), 0.5);
  assert.equal(rocAuc([2, 1], [1, 0]), 0.875); // pairs: (2>1)(2>0)(1=1)(1>0) = 3.5/4
  const g = new Generator(4);
  for (let r = 0; r < 20; r++) {
    const p = Array.from({ length: 1 + g.randint(30) }, () => g.randint(8) + 1);
    const n = Array.from({ length: 1 + g.randint(30) }, () => g.randint(8));
    assert.ok(Math.abs(rocAuc(p, n) - pairwiseAuc(p, n)) < 1e-12);
    // The trapezoid area under rocCurve is the same number.
    const c = rocCurve(p, n);
    let area = 0;
    for (let i = 1; i < c.length; i++) area += ((c[i]!.fpr - c[i - 1]!.fpr) * (c[i]!.tpr + c[i - 1]!.tpr)) / 2;
    assert.ok(Math.abs(area - pairwiseAuc(p, n)) < 1e-12);
  }
  assert.throws(() => rocAuc([], [1]), /needs positives and negatives/);
  const sep = rocAucInterval([5, 6, 7], [1, 2, 3], new Generator(1), 200);
  assert.deepEqual([sep.estimate, sep.low, sep.high], [1, 1, 1]);
  const g2 = new Generator(3);
  const p = Array.from({ length: 300 }, () => g2.normal() + 0.5);
  const n = Array.from({ length: 300 }, () => g2.normal());
  const iv = rocAucInterval(p, n, g2, 300);
  // AUC of N(0.5,1) against N(0,1) is Φ(0.5/√2) = 0.638.
  assert.ok(iv.low < iv.estimate && iv.estimate < iv.high && iv.low < 0.638 && 0.638 < iv.high, JSON.stringify(iv));
});

test('skew-normal: the moment fit recovers the parameters and the CDF matches the normal at alpha 0', () => {
  for (const z of [-1, 0, 0.7]) assert.ok(Math.abs(logSkewNormalCdf(z, { xi: 0, omega: 1, alpha: 0 }) - logNormalCdf(z)) < 1e-6);
  // Φ(-10) = 7.619853024160527e-24.
  assert.ok(Math.abs(logNormalCdf(-10) - Math.log(7.619853024160527e-24)) < 1e-3);
  const g = new Generator(11);
  const truth = { xi: 10, omega: 2, alpha: 3 };
  const d = truth.alpha / Math.sqrt(1 + truth.alpha ** 2);
  const xs = Array.from({ length: 40000 }, () => {
    const u0 = g.normal();
    const v = g.normal();
    return truth.xi + truth.omega * (d * Math.abs(u0) + Math.sqrt(1 - d * d) * v);
  });
  const fit = fitSkewNormal(xs);
  assert.ok(Math.abs(fit.xi - 10) < 0.1 && Math.abs(fit.omega - 2) < 0.1 && Math.abs(fit.alpha - 3) < 0.8, JSON.stringify(fit));
  // The fitted CDF at the sample's 1 % quantile is near 1 %.
  const sorted = [...xs].sort((a, b) => a - b);
  const q01 = sorted[400]!;
  assert.ok(Math.abs(Math.exp(logSkewNormalCdf(q01, fit)) - 0.01) < 0.003);
});

function tinyLM(seed: number): GPT {
  return new GPT(gptConfig({ n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 14, dropout: 0, bias: true }), { backend: REF, dtype: 'float64', seed });
}

const FORMAT: CanaryFormat = { prefix: [12, 11, 12], digitIds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], separator: 10, length: 3 };

test('exact exposure: the pruned tree walk ranks the canary as ranking all 10^3 candidates does', () => {
  const model = tinyLM(5);
  const all = Array.from({ length: 1000 }, (_, i) => [Math.floor(i / 100), Math.floor(i / 10) % 10, i % 10]);
  const lp = secretLogPerplexities(model, FORMAT, all);
  for (const canary of [[3, 1, 4], [0, 0, 0], [9, 9, 9], [2, 7, 1]]) {
    const e = exposureExact(model, FORMAT, canary);
    const idx = canary[0]! * 100 + canary[1]! * 10 + canary[2]!;
    const brute = 1 + Array.from(lp).filter((v) => v < lp[idx]!).length;
    assert.equal(e.rank, brute, `canary ${canary}`);
    assert.ok(Math.abs(e.logPerplexity - lp[idx]!) < 1e-9);
    assert.ok(Math.abs(e.exposure - (Math.log2(1000) - Math.log2(brute))) < 1e-12);
    assert.ok(e.expanded <= 111);
  }
  // The extrapolation lands near the exact exposure for a mid-ranked canary.
  const x = exposureExtrapolated(model, FORMAT, [2, 7, 1], 600, new Generator(3));
  const exact = exposureExact(model, FORMAT, [2, 7, 1]).exposure;
  assert.ok(Math.abs(x.exposure - exact) < 1.5, `extrapolated ${x.exposure} vs exact ${exact}`);
  assert.ok(!x.capped && x.exposure <= Math.log2(1000) && x.exposureNormal <= Math.log2(1000));
  model.dispose();
});

test('extraction and window losses on a tiny model', () => {
  const model = tinyLM(6);
  const tokens = Array.from({ length: 200 }, (_, i) => i % 14);
  const r = extractionRate(model, tokens, [0, 20, 40], 5, 4, 16);
  assert.equal(r.total, 3);
  assert.ok(r.rate >= 0 && r.rate <= 1 && r.meanMatched <= 4);
  // Windows of block_size + 1 tokens (inputs and the last target) fit a model of block 16.
  const losses = windowLosses(model, [tokens.slice(0, 17), tokens.slice(17, 34)]);
  assert.equal(losses.length, 2);
  for (const l of losses) assert.ok(l > 0 && l < 10);
  // Equal to the model's own mean cross-entropy of x = w[0..16), y = w[1..17).
  const w = tokens.slice(17, 34);
  const x = tensor(w.slice(0, 16), { shape: [1, 16], dtype: 'int32', backend: REF });
  const y = tensor(w.slice(1), { shape: [1, 16], dtype: 'int32', backend: REF });
  const own = model.forward(x, y).loss!.item();
  assert.ok(Math.abs(losses[1]! - own) < 1e-9, `${losses[1]} vs ${own}`);
  model.dispose();
});

test('attn probe canaries: each secret k times as whole lines in the training part, and every digit in the text', async () => {
  const { spawnSync } = await import('node:child_process');
  const { mkdtempSync, readFileSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const { fileURLToPath } = await import('node:url');
  const dir = mkdtempSync(join(tmpdir(), 'attn-canary-'));
  try {
    const text = Array.from({ length: 400 }, (_, i) => `line ${'abcdefghij'[i % 10]} of the text`).join('\n') + '\n';
    writeFileSync(join(dir, 'in.txt'), text);
    const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const r = spawnSync(process.execPath, [main, 'probe', 'canaries', '--data', join(dir, 'in.txt'), '--out', join(dir, 'out.txt'), '--canaries', join(dir, 'c.json'), '--k', '1,3', '--digits', '4', '--seed', '2'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const spec = JSON.parse(readFileSync(join(dir, 'c.json'), 'utf8')) as { prefix: string; digits: number; canaries: { secret: number[]; k: number }[] };
    assert.deepEqual(spec.canaries.map((c) => c.k), [1, 3]);
    const out = readFileSync(join(dir, 'out.txt'), 'utf8');
    const lines = out.split('\n');
    assert.equal(lines[0], '0 1 2 3 4 5 6 7 8 9');
    const trainEnd = Math.floor(out.length * 0.9);
    for (const c of spec.canaries) {
      const line = `${spec.prefix}${c.secret.join(' ')}`;
      assert.equal(lines.filter((l) => l === line).length, c.k);
      assert.ok(out.lastIndexOf(line) < trainEnd, 'a canary inside the validation split');
    }
    // The original lines are all there, in order.
    assert.equal(lines.filter((l) => l.startsWith('line ')).join('\n') + '\n', text);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
