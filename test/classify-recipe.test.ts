// Pre-training corpus: readSentences reads one file or several comma-separated files, .tsv
// (its sentence column) or plain text (one sentence a line), either optionally gzipped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { dataPaths, readSentences } from '../src/data/sentences.js';

test('dataPaths: one path, several comma-separated, blanks dropped, none refused', () => {
  assert.deepEqual(dataPaths('a.tsv'), ['a.tsv']);
  assert.deepEqual(dataPaths('a.tsv, b.txt,,c.en.gz'), ['a.tsv', 'b.txt', 'c.en.gz']);
  assert.throws(() => dataPaths(' , '), /no data file/);
});

test('readSentences: .tsv, text, gzipped text and gzipped .tsv, concatenated in order', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-corpus-'));
  const tsv = join(dir, 'a.tsv');
  const txt = join(dir, 'b.txt');
  const gz = join(dir, 'c.en.gz');
  const tsvGz = join(dir, 'd.tsv.gz');
  await writeFile(tsv, 'sentence\tlabel\na fine film\t1\na dull one\t0\n');
  await writeFile(txt, 'First line.\n\n  second line  \n');
  await writeFile(gz, gzipSync(Buffer.from('A dog runs.\nTwo cats sleep.\n')));
  await writeFile(tsvGz, gzipSync(Buffer.from('sentence\tlabel\nzipped row\t1\n')));
  assert.deepEqual(await readSentences(tsv), ['a fine film', 'a dull one']);
  assert.deepEqual(await readSentences(gz), ['A dog runs.', 'Two cats sleep.']);
  assert.deepEqual(await readSentences(`${tsv},${txt},${gz},${tsvGz}`), [
    'a fine film', 'a dull one', 'First line.', 'second line', 'A dog runs.', 'Two cats sleep.', 'zipped row',
  ]);
  await assert.rejects(readSentences(join(dir, 'missing.txt')), /ENOENT/);
});
