// Corpus BLEU and 13a tokenisation against hand-worked numbers. Every expected value below was
// also checked against sacreBLEU 2.6.0 (BLEU() defaults: 13a, exp smoothing, mixed case).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bleuFromStats, closestRefLength, corpusBleu, tokenize13a } from '../src/eval/bleu.js';
import { readLines, runEvalBleu } from '../src/cli/eval.js';
import { Flags, parseArgs, UsageError } from '../src/cli/args.js';

const close = (a: number, b: number, what: string, tol = 1e-9): void => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} != ${b}`);
const closeAll = (a: readonly number[], b: readonly number[], what: string): void => {
  assert.equal(a.length, b.length, what);
  a.forEach((x, i) => close(x, b[i]!, `${what}[${i}]`));
};

test('13a tokenisation', () => {
  const cases: [string, string][] = [
    ['Hello, world!', 'Hello , world !'],
    ['He said "hi".', 'He said " hi " .'],
    // Entities are decoded in the order quot, amp, lt, gt, so &amp;quot; ends as a literal &quot;.
    ['Tom &amp; Jerry &lt;3 &quot;yes&quot; &gt;', 'Tom & Jerry < 3 " yes " >'],
    ['&amp;quot; &amp;lt;', '& quot ; <'],
    // Hyphens split only after a digit; a leading minus stays on its number.
    ['state-of-the-art, 1990-2000, e-mail, -5 and 3-4', 'state-of-the-art , 1990 - 2000 , e-mail , -5 and 3 - 4'],
    // Period and comma stay inside numbers, split elsewhere.
    ['1,000.50 dollars.', '1,000.50 dollars .'],
    ['costs 3.5, not 4.', 'costs 3.5 , not 4 .'],
    ['.5 and 5. and 5.,', '. 5 and 5 . and 5 . ,'],
    ['U.S. $5.00 (50%)', 'U . S . $ 5.00 ( 50 % )'],
    ["don't 'quoted' it's", "don't 'quoted' it's"],
    ['a/b c:d x@y {z} [w] #1 ~ ^ _ | `q` +=*', 'a / b c : d x @ y { z } [ w ] # 1 ~ ^ _ | ` q ` + = *'],
    ['a <skipped> b', 'a b'],
    ['line-\nbreak\nnext', 'linebreak next'],
    ['  lots   of\tspace  ', 'lots of space'],
    ['Ein Hund läuft über die Straße.', 'Ein Hund läuft über die Straße .'],
    ['', ''],
  ];
  for (const [input, want] of cases) assert.equal(tokenize13a(input), want, JSON.stringify(input));
});

test('perfect match is 100', () => {
  // 7 tokens (the final '.' is split off): every n-gram matches, p_n = 100, BP = 1.
  const r = corpusBleu(['The cat sat on the mat.'], ['The cat sat on the mat.']);
  close(r.bleu, 100, 'bleu');
  closeAll(r.precisions, [100, 100, 100, 100], 'precisions');
  assert.deepEqual([r.bp, r.sys_len, r.ref_len], [1, 7, 7]);
  assert.deepEqual(r.counts, [7, 6, 5, 4]);
  assert.deepEqual(r.totals, [7, 6, 5, 4]);
});

test('exp smoothing: one zero order', () => {
  // hyp "the cat is on the mat" vs ref "the cat sat on the mat":
  // 1-grams 5/6 (all but "is"), 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the mat),
  // 4-grams 0/3 → exp smoothing: 100 / (2^1 · 3) = 16.67.
  // BLEU = 100 · (5/6 · 3/5 · 1/4 · 1/6)^(1/4) = 100 · 48^(-1/4) = 37.9918 (sacreBLEU: 37.99178428257963).
  const r = corpusBleu(['the cat is on the mat'], ['the cat sat on the mat']);
  assert.deepEqual(r.counts, [5, 3, 1, 0]);
  assert.deepEqual(r.totals, [6, 5, 4, 3]);
  closeAll(r.precisions, [500 / 6, 60, 25, 100 / 6], 'precisions');
  close(r.bleu, 100 * 48 ** -0.25, 'bleu');
  close(r.bleu, 37.99178428257963, 'bleu vs sacreBLEU');
});

test('exp smoothing: the factor doubles for each zero order', () => {
  // hyp "the cat is on a mat": 1-grams 4/6, 2-grams 1/5, 3-grams 0/4 → 100/(2·4) = 12.5,
  // 4-grams 0/3 → 100/(4·3) = 8.33. BLEU = 100 · (4/6 · 1/5 · 1/8 · 1/12)^(1/4) = 100 · 720^(-1/4) = 19.3049.
  const r = corpusBleu(['the cat is on a mat'], ['the cat sat on the mat']);
  assert.deepEqual(r.counts, [4, 1, 0, 0]);
  closeAll(r.precisions, [400 / 6, 20, 12.5, 100 / 12], 'precisions');
  close(r.bleu, 100 * 720 ** -0.25, 'bleu');
  close(r.bleu, 19.304869754804482, 'bleu vs sacreBLEU');
});

test('brevity penalty below 1', () => {
  // hyp is the first 5 of the ref's 6 tokens: every n-gram matches, BP = exp(1 - 6/5) = e^-0.2 = 0.81873.
  const r = corpusBleu(['the cat sat on the'], ['the cat sat on the mat']);
  close(r.bp, Math.exp(-0.2), 'bp');
  close(r.bleu, 100 * Math.exp(-0.2), 'bleu');
  close(r.bleu, 81.87307530779823, 'bleu vs sacreBLEU');
  assert.deepEqual([r.sys_len, r.ref_len], [5, 6]);
});

test('no 4-grams in the hypothesis at all: BLEU 0 (as sacreBLEU without effective order)', () => {
  // 3 tokens: 1..3-gram precisions are 100, the 4-gram total is 0 so p4 stays 0 (log floored); BP = e^(1-2).
  const r = corpusBleu(['the cat sat'], ['the cat sat on the mat']);
  close(r.bleu, 0, 'bleu');
  closeAll(r.precisions, [100, 100, 100, 0], 'precisions');
  close(r.bp, Math.exp(-1), 'bp');
  // With effective order the average runs over 1..3 only: 100 · BP.
  close(corpusBleu(['the cat sat'], ['the cat sat on the mat'], { effectiveOrder: true }).bleu, 100 * Math.exp(-1), 'eff');
});

test('no matches at all: 0 with zero precisions', () => {
  const r = corpusBleu(['x y z w'], ['a b c d']);
  assert.equal(r.bleu, 0);
  assert.deepEqual(r.precisions, [0, 0, 0, 0]);
  assert.deepEqual(r.totals, [4, 3, 2, 1]);
});

test('multiple references: clipped by the max count over refs, closest ref length', () => {
  // hyp "the cat is on the mat"; refs "the cat sat on the mat" and "there is a cat on the mat".
  // 1-grams 6/6 ("is" from ref 2), 2-grams 3/5, 3-grams 1/4, 4-grams 0/3 → 100/6.
  // BLEU = 100 · (1 · 3/5 · 1/4 · 1/6)^(1/4) = 100 · 40^(-1/4) = 39.7635; ref lengths 6, 7 → 6.
  const r = corpusBleu(['the cat is on the mat'], [['the cat sat on the mat'], ['there is a cat on the mat']]);
  assert.deepEqual(r.counts, [6, 3, 1, 0]);
  close(r.bleu, 100 * 40 ** -0.25, 'bleu');
  close(r.bleu, 39.76353643835254, 'bleu vs sacreBLEU');
  assert.equal(r.ref_len, 6);
  // Tie (hyp 6, refs 5 and 7): the shorter one, so no penalty.
  const t = corpusBleu(['a b c d e f'], [['a b c d e'], ['a b c d e f g']]);
  assert.equal(t.ref_len, 5);
  close(t.bleu, 100, 'tie bleu');
  assert.equal(closestRefLength(6, [7, 5]), 5);
  assert.equal(closestRefLength(6, [8, 4, 7]), 7);
  // An empty reference in one stream is skipped for that segment.
  assert.equal(corpusBleu(['a b c d'], [[''], ['a b c d']]).bleu, corpusBleu(['a b c d'], ['a b c d']).bleu);
  assert.throws(() => corpusBleu(['a'], [[''], ['']]), /no non-empty reference/);
});

test('empty hypothesis lines count 0 tokens but their reference length', () => {
  // Segment 1 matches perfectly (6 tokens); segment 2 is empty against a 2-token ref.
  // sys_len 6, ref_len 8: BP = exp(1 - 8/6) = e^(-1/3) = 0.71653, precisions 100.
  const r = corpusBleu(['the cat sat on the mat', ''], ['the cat sat on the mat', 'a dog']);
  assert.deepEqual([r.sys_len, r.ref_len], [6, 8]);
  close(r.bp, Math.exp(-1 / 3), 'bp');
  close(r.bleu, 100 * Math.exp(-1 / 3), 'bleu');
  close(r.bleu, 71.65313105737896, 'bleu vs sacreBLEU');
  const all = corpusBleu(['', ''], ['the cat', 'a dog']);
  assert.deepEqual([all.bleu, all.bp, all.sys_len, all.ref_len], [0, 0, 0, 4]);
});

test('tokenisation and case matter', () => {
  // "The cat, the dog." → The cat , the dog . (6 tokens); the ref is already tokenised and lowercase,
  // so only "The" misses: 5/6, 4/5, 3/4, 2/3 → 100 · (5/6·4/5·3/4·2/3)^(1/4) = 100 · 3^(-1/4) = 75.98.
  const r = corpusBleu(['The cat, the dog.'], ['the cat , the dog .']);
  close(r.bleu, 100 * 3 ** -0.25, 'bleu');
  close(r.bleu, 75.98356856515926, 'bleu vs sacreBLEU');
  close(corpusBleu(['The cat, the dog.'], ['the cat , the dog .'], { lowercase: true }).bleu, 100, 'lowercase');
});

test('bleuFromStats matches corpusBleu', () => {
  const r = bleuFromStats([5, 3, 1, 0], [6, 5, 4, 3], 6, 6);
  close(r.bleu, 37.99178428257963, 'bleu');
});

test('mismatched lengths are an error naming both counts', () => {
  assert.throws(() => corpusBleu(['a', 'b'], ['a']), /2 hypotheses but reference stream 1 has 1 lines/);
});

test('readLines splits on \\n only and drops the final newline', () => {
  assert.deepEqual(readLines(''), []);
  assert.deepEqual(readLines('a\nb\n'), ['a', 'b']);
  assert.deepEqual(readLines('a\nb'), ['a', 'b']);
  assert.deepEqual(readLines('\n'), ['']);
  assert.deepEqual(readLines('a\r\nb\r\n'), ['a\r', 'b\r']); // the \r is stripped when scoring
});

async function captureBleu(argv: string[]): Promise<Record<string, unknown>> {
  const out: string[] = [];
  const orig = console.log;
  console.log = (s: string) => out.push(s);
  try {
    await runEvalBleu(new Flags(parseArgs(argv, new Set(['lowercase'])), 'eval'));
  } finally {
    console.log = orig;
  }
  return JSON.parse(out.join('\n')) as Record<string, unknown>;
}

test('attn eval bleu: files, comma-separated refs, errors', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-bleu-'));
  try {
    const hyp = join(dir, 'hyp.txt');
    const ref1 = join(dir, 'ref1.txt');
    const ref2 = join(dir, 'ref2.txt');
    const short = join(dir, 'short.txt');
    await writeFile(hyp, 'the cat is on the mat\nthe cat sat on the mat\r\n');
    await writeFile(ref1, 'the cat sat on the mat\nthe cat sat on the mat\n');
    await writeFile(ref2, 'there is a cat on the mat\na dog\n');
    await writeFile(short, 'one line\n');
    const one = await captureBleu(['--hyp', hyp, '--ref', ref1]);
    assert.deepEqual(Object.keys(one), ['bleu', 'precisions', 'bp', 'sys_len', 'ref_len']);
    // Segment 1 as in the single-ref test, segment 2 perfect: counts 11/12, 8/10, 5/8, 3/6.
    close(one.bleu as number, 100 * ((11 / 12) * (8 / 10) * (5 / 8) * (3 / 6)) ** 0.25, 'bleu');
    const two = await captureBleu(['--hyp', hyp, '--ref', `${ref1},${ref2}`]);
    close(two.bleu as number, corpusBleu(['the cat is on the mat', 'the cat sat on the mat'], [['the cat sat on the mat', 'the cat sat on the mat'], ['there is a cat on the mat', 'a dog']]).bleu, 'two refs');
    await assert.rejects(captureBleu(['--hyp', hyp, '--ref', short]), (e: Error) => e instanceof UsageError && /has 2 lines/.test(e.message) && /has 1\b/.test(e.message));
    await assert.rejects(captureBleu(['--hyp', join(dir, 'missing.txt'), '--ref', ref1]), (e: Error) => e instanceof UsageError && /no such file/.test(e.message));
    await assert.rejects(captureBleu(['--hyp', hyp]), UsageError);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
