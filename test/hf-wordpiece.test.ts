// WordPiece tokenizer.json (BERT's: BertNormalizer, BertPreTokenizer, WordPiece model and
// decoder, [CLS]/[SEP] template) against @huggingface/tokenizers (the oracle). No BERT
// vocabulary ships with the packages here, so the test builds one from SST-2's training
// sentences (whole words, single characters, frequent word endings as ##pieces) and compares
// ids and decodes on SST-2 dev sentences and on a fuzz set (accents, CJK, control characters,
// unknown characters, punctuation runs, over-long words).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Tokenizer as Oracle } from '@huggingface/tokenizers';
import { HfTokenizer } from '../src/tokenizers/index.js';
import { compareWithOracle } from './tokenizer-oracle.js';

const SST2 = fileURLToPath(new URL('../../data/sst2/', import.meta.url));
const sentences = (f: string): string[] => readFileSync(SST2 + f, 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t')[0]!);

function buildTokenizerJson(): object {
  const words = new Map<string, number>();
  for (const s of sentences('train.tsv').slice(0, 20000)) {
    for (const w of s.normalize('NFD').replace(/\p{Mn}/gu, '').toLowerCase().split(/[\s\p{P}!-/:-@[-`{-~]+/u)) if (w) words.set(w, (words.get(w) ?? 0) + 1);
  }
  const vocab: Record<string, number> = {};
  const add = (t: string) => {
    if (!(t in vocab)) vocab[t] = Object.keys(vocab).length;
  };
  for (const t of ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']) add(t);
  const chars = new Set<string>();
  for (const w of words.keys()) for (const c of w) chars.add(c);
  for (const c of '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~') chars.add(c);
  for (const c of [...chars].sort()) {
    add(c);
    add(`##${c}`);
  }
  const byFreq = [...words.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  for (const [w] of byFreq.slice(0, 1500)) add(w);
  const endings = new Map<string, number>();
  for (const [w, n] of byFreq) for (const k of [2, 3, 4]) if (w.length > k + 1) endings.set(w.slice(-k), (endings.get(w.slice(-k)) ?? 0) + n);
  for (const [e] of [...endings.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 400)) add(`##${e}`);
  const special = (content: string) => ({ id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'].map(special),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: '[SEP]', type_id: 1 } }],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [vocab['[CLS]']], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [vocab['[SEP]']], tokens: ['[SEP]'] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}

function fuzz(n: number): string[] {
  let s = 12345;
  const r = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const parts = ['Café', 'naïve', 'ÉCOLE', '北京大学', '東京', 'a\u0000b', 'x\u0085y', 'tab\there', 'nbsp\u00a0space', '\u200bzero', 'emoji 😀 here', '!!!', '...', "don't", "it's", 'co-op', '$100', '3.14', 'x'.repeat(120), '\ufffd', 'Ångström', 'ǅ', 'İstanbul', '[CLS]', '[SEP] x', ' [MASK] ', 'the movie', 'unbelievably', 'overwhelming'];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = 1 + Math.floor(r() * 6);
    const bits: string[] = [];
    for (let j = 0; j < k; j++) bits.push(parts[Math.floor(r() * parts.length)]!);
    out.push(bits.join(r() < 0.5 ? ' ' : ''));
  }
  return out;
}

test('WordPiece (BERT) tokenizer.json: ids and decodes identical to @huggingface/tokenizers on SST-2 and a fuzz set', (t) => {
  const json = buildTokenizerJson();
  // As bert-base-uncased's tokenizer_config.json: transformers' clean-up after the decoder's.
  const config = { clean_up_tokenization_spaces: true, do_lower_case: true };
  const ours = new HfTokenizer(json as never, config);
  const oracle = new Oracle(json, config);
  const texts = [...sentences('dev.tsv'), ...fuzz(400)];
  const { tokens, mismatches, firstBad } = compareWithOracle(ours, oracle, texts);
  t.diagnostic(`${texts.length} texts, ${tokens} tokens compared, ${mismatches} mismatches; vocabulary ${ours.vocabSize}`);
  assert.equal(mismatches, 0, firstBad);
  assert.deepEqual(ours.encode('The movie, unbelievably!', { addSpecialTokens: false }).length > 0, true);
});
