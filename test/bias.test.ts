// Bias-probe statistics: the word-pair table and swaps, counterfactual augmentation, Pearson's r,
// the percentile bootstrap (its coverage on a known mean), and the counterfactual statistics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { augmentCounterfactual, bootstrapCI, counterfactualStats, parseWordPairs, pearson, swapWords } from '../src/eval/bias.js';
import { Generator } from '../src/index.js';

const PAIRS = fileURLToPath(new URL('../../data/bias/gender-pairs.tsv', import.meta.url));
const OCC = fileURLToPath(new URL('../../data/bias/occupations-bls.tsv', import.meta.url));

test('word pairs swap whole tokens in both directions; the shipped list parses', () => {
  const p = parseWordPairs('# c\nhe\tshe\nhis\ther\nhim\ther\nking\tqueen\n');
  assert.equal(swapWords('he saw the queen .', p), 'she saw the king .');
  assert.equal(swapWords('she gave her book', p), 'he gave his book'); // "her" -> the first pair naming it
  assert.equal(swapWords('the shepherd', p), null); // no partial-word swaps
  assert.equal(swapWords('He left', p), 'She left');
  assert.throws(() => parseWordPairs('he she\n'), /expected "word<TAB>word"/);
  const shipped = parseWordPairs(readFileSync(PAIRS, 'utf8'));
  assert.ok(shipped.size >= 90);
  assert.equal(shipped.get('actress'), 'actor');
  const aug = augmentCounterfactual([{ sentence: 'a man on a boat', label: 1 }, { sentence: 'a boat', label: 0 }], shipped);
  assert.deepEqual(aug, [{ sentence: 'a man on a boat', label: 1 }, { sentence: 'a boat', label: 0 }, { sentence: 'a woman on a boat', label: 1 }]);
  const occ = readFileSync(OCC, 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).slice(1);
  assert.equal(occ.length, 60);
  for (const l of occ) {
    const [, pct, year] = l.split('\t');
    assert.ok(Number(pct) >= 0 && Number(pct) <= 100 && (year === '2015' || year === '2016'), l);
  }
});

test('pearson and the bootstrap interval', () => {
  assert.ok(Math.abs(pearson([1, 2, 3, 4], [2, 4, 6, 8]) - 1) < 1e-12);
  assert.ok(Math.abs(pearson([1, 2, 3, 4], [8, 6, 4, 2]) + 1) < 1e-12);
  // r of (1,2,3,4,5) and (2,1,4,3,5) = 0.8.
  assert.ok(Math.abs(pearson([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) - 0.8) < 1e-12);
  // Coverage: the 95 % interval of a sample mean holds the true mean about 95 % of the time.
  const g = new Generator(8);
  let covered = 0;
  const trials = 100;
  for (let t = 0; t < trials; t++) {
    const xs = Array.from({ length: 60 }, () => g.normal());
    const ci = bootstrapCI(xs.length, (idx) => idx.reduce((s, i) => s + xs[i]!, 0) / idx.length, g, 400);
    assert.ok(ci.low <= ci.estimate && ci.estimate <= ci.high);
    if (ci.low <= 0 && 0 <= ci.high) covered++;
  }
  assert.ok(covered >= 85 && covered <= 100, `coverage ${covered}/${trials}`);
});

test('counterfactual statistics: flips, mean absolute and signed change', () => {
  const r = counterfactualStats([0.9, 0.2, 0.6, 0.4], [0.8, 0.7, 0.4, 0.4], new Generator(1), 200);
  assert.equal(r.n, 4);
  assert.ok(Math.abs(r.flipRate.estimate - 0.5) < 1e-12); // 0.2->0.7 and 0.6->0.4 flip
  assert.ok(Math.abs(r.meanAbsDelta.estimate - (0.1 + 0.5 + 0.2 + 0) / 4) < 1e-12);
  assert.ok(Math.abs(r.meanDelta.estimate - (-0.1 + 0.5 - 0.2 + 0) / 4) < 1e-12);
  assert.ok(r.flipRate.low >= 0 && r.flipRate.high <= 1);
});
