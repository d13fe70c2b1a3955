// Counterfactual data augmentation of a language model's training text (attn prepare --cda_pairs)
// and the occupational probe's helpers (word counts, templates in the corpus's form).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { counterfactualLines, parseWordPairs } from '../src/data/counterfactual.js';
import { loadDataset, prepareDataset } from '../src/data/files.js';
import { corpusStyle, wordCounts } from '../src/eval/bias.js';
import { BpeTokenizer, CharTokenizer, trainBpe } from '../src/tokenizers/index.js';

const PAIRS = parseWordPairs('he\tshe\nhis\ther\nking\tqueen\n');
// 10 lines; with valFraction 0.25 the split falls inside line 8 ("the queen and he ..."), whose
// swap must not be added, and lines 9–10 are validation only.
const LINES = [
  'he saw the river .', 'a quiet day .', 'the king spoke to her .', 'rain fell .', 'she ran home .',
  'nothing here .', 'his horse was old .', 'the queen and he walked a long way home .', 'he left .', 'the end of her .',
];
const TEXT = LINES.join('\n') + '\n';

test('counterfactualLines: the swapped copy of each line holding a listed word, in order', () => {
  assert.deepEqual(counterfactualLines('he ran .\na dog .\nher king .\n', PAIRS), ['she ran .', 'his queen .']);
  assert.deepEqual(counterfactualLines('a dog .', PAIRS), []);
});

for (const kind of ['char', 'bpe'] as const) {
  test(`prepareDataset with cda (${kind}): val.bin unchanged, train.bin = train + swapped whole training lines`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'attn-cda-'));
    try {
      const tok = kind === 'char' ? CharTokenizer.fromText(TEXT) : trainBpe(TEXT, 300);
      const plain = await prepareDataset({ text: TEXT, tokenizer: tok, valFraction: 0.25, outDir: join(dir, 'plain') });
      const aug = await prepareDataset({ text: TEXT, tokenizer: tok, valFraction: 0.25, outDir: join(dir, 'cda'), cda: { pairs: PAIRS, source: 'pairs.tsv' } });
      const p = await loadDataset(join(dir, 'plain'));
      const a = await loadDataset(join(dir, 'cda'));
      assert.deepEqual(Array.from(a.val), Array.from(p.val)); // validation is the un-augmented text's
      assert.equal(aug.val_tokens, plain.val_tokens);
      assert.deepEqual(Array.from(a.train.slice(0, p.train.length)), Array.from(p.train));
      const trainText = tok.decode(p.train);
      const cut = trainText.slice(trainText.lastIndexOf('\n') + 1);
      assert.ok(cut.length > 0 && LINES[7]!.startsWith(cut), `the split should cut line 8, cut '${cut}'`);
      // Lines 1, 3, 5, 7 hold listed words and lie wholly in train; line 8 is cut, 9–10 are val.
      const added = tok.decode(a.train.slice(p.train.length));
      assert.equal(added, '\nshe saw the river .\nthe queen spoke to his .\nhe ran home .\nher horse was old .\n');
      assert.deepEqual(aug.cda, { pairs: 'pairs.tsv', lines: 4, tokens: a.train.length - p.train.length });
      assert.equal(plain.cda, undefined);
      if (kind === 'bpe') assert.ok(tok instanceof BpeTokenizer);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('word counts and templates in the corpus form', () => {
  const c = wordCounts('The nurse said .\nnurses and a Nurse , the doctor-nurse\tnurse', ['nurse', 'doctor', 'Clerk']);
  assert.deepEqual([...c], [['nurse', 3], ['doctor', 0], ['Clerk', 0]]);
  assert.equal(corpusStyle('The {} was tired, so'), 'the {} was tired , so');
  assert.equal(corpusStyle('I asked the {} whether'), 'i asked the {} whether');
});

test('attn prepare --cda_pairs: the CLI writes the augmented dataset and names a bad pair file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-cda-cli-'));
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', cwd: dir, timeout: 60_000 });
  try {
    await writeFile(join(dir, 'text.txt'), TEXT);
    await writeFile(join(dir, 'pairs.tsv'), 'he\tshe\nhis\ther\nking\tqueen\n');
    await writeFile(join(dir, 'bad.tsv'), 'he she\n');
    assert.equal(run('prepare', '--input', 'text.txt', '--out', 'plain', '--val_fraction', '0.25').status, 0);
    const ok = run('prepare', '--input', 'text.txt', '--out', 'cda', '--tokenizer', 'plain', '--val_fraction', '0.25', '--cda_pairs', 'pairs.tsv');
    assert.equal(ok.status, 0, ok.stderr);
    // 4 swapped lines of 75 characters, 3 newlines between them, one before (the split cuts a line) and one after.
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'cda', 'meta.json'), 'utf8')).cda, { pairs: 'pairs.tsv', lines: 4, tokens: 80 });
    assert.deepEqual(await readFile(join(dir, 'cda', 'val.bin')), await readFile(join(dir, 'plain', 'val.bin')));
    const missing = run('prepare', '--input', 'text.txt', '--out', 'x', '--cda_pairs', 'nope.tsv');
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /--cda_pairs nope\.tsv: no such file/);
    const bad = run('prepare', '--input', 'text.txt', '--out', 'x', '--cda_pairs', 'bad.tsv');
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /bad\.tsv, line 1: expected "word<TAB>word"/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
