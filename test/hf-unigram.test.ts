// Unigram tokenizer.json (SentencePiece's model: T5, many multilingual models) against
// @huggingface/tokenizers (the oracle). No Unigram file ships with the packages here, so the
// test builds one from SST-2's training sentences (▁-words and word endings scored by their
// log frequency, characters at a low score, some characters left out so that unknowns occur),
// with T5's Metaspace pre-tokenizer and decoder and its `</s>` template, once without and once
// with byte fallback, and compares ids and decodes on SST-2 dev sentences and a fuzz set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Tokenizer as Oracle } from '@huggingface/tokenizers';
import { HfTokenizer } from '../src/tokenizers/index.js';
import { compareWithOracle } from './tokenizer-oracle.js';

const SST2 = fileURLToPath(new URL('../../data/sst2/', import.meta.url));
const sentences = (f: string): string[] => readFileSync(SST2 + f, 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t')[0]!);

function buildTokenizerJson(byteFallback: boolean): object {
  const words = new Map<string, number>();
  for (const s of sentences('train.tsv').slice(0, 20000)) for (const w of s.split(/\s+/)) if (w) words.set(w, (words.get(w) ?? 0) + 1);
  const total = [...words.values()].reduce((a, b) => a + b, 0);
  const vocab: [string, number][] = [['<pad>', 0], ['</s>', 0], ['<unk>', 0]];
  const seen = new Set(vocab.map((v) => v[0]));
  const add = (p: string, score: number) => {
    if (!seen.has(p)) {
      seen.add(p);
      vocab.push([p, score]);
    }
  };
  if (byteFallback) for (let b = 0; b < 256; b++) add(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 0);
  const chars = new Set<string>();
  for (const w of words.keys()) for (const c of w) if (!'qzxj0123'.includes(c)) chars.add(c);
  for (const c of [...chars].sort()) add(c, -14);
  add('\u2581', -4);
  const byFreq = [...words.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  for (const [w, n] of byFreq.slice(0, 1200)) if (!/[qzxj0-3]/.test(w)) add(`\u2581${w}`, Math.log(n / total));
  const endings = new Map<string, number>();
  for (const [w, n] of byFreq) for (const k of [2, 3]) if (w.length > k + 1) endings.set(w.slice(-k), (endings.get(w.slice(-k)) ?? 0) + n);
  for (const [e, n] of [...endings.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 300)) if (!/[qzxj0-3]/.test(e)) add(e, Math.log(n / total) - 2);
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special('<pad>', 0), special('</s>', 1), special('<unk>', 2)],
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true },
    post_processor: { type: 'TemplateProcessing', single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }, { Sequence: { id: 'B', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      special_tokens: { '</s>': { id: '</s>', ids: [1], tokens: ['</s>'] } } },
    decoder: byteFallback
      ? { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true }] }
      : { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 2, vocab, byte_fallback: byteFallback },
  };
}

function fuzz(n: number): string[] {
  let s = 777;
  const r = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const parts = ['quiz', 'jazz', 'xyz', '2023', 'the movie', 'unbelievably', 'Ein Hund läuft', 'naïve café', '東京', '😀', 'a  b', ' lead', 'trail ', '</s>', '<unk>', "don't", '...', 'zzz-qqq', 'overwhelming', 'Ångström'];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = 1 + Math.floor(r() * 5);
    const bits: string[] = [];
    for (let j = 0; j < k; j++) bits.push(parts[Math.floor(r() * parts.length)]!);
    out.push(bits.join(r() < 0.6 ? ' ' : ''));
  }
  return out;
}

/** Runs of <0xNN> ids (3 .. 258 in the byte-fallback vocabulary) folded into one <unk> (2). */
function foldBytes(ids: number[]): number[] {
  const out: number[] = [];
  for (const id of ids) {
    const isByte = id >= 3 && id < 259;
    if (isByte && out[out.length - 1] === -1) continue;
    out.push(isByte ? -1 : id);
  }
  return out.map((id) => (id === -1 ? 2 : id));
}

for (const byteFallback of [false, true]) {
  test(`Unigram tokenizer.json${byteFallback ? ' with byte fallback' : ''}: ids and decodes identical to @huggingface/tokenizers on SST-2 and a fuzz set`, (t) => {
    const json = buildTokenizerJson(byteFallback);
    // As T5's tokenizer_config.json: transformers' clean-up after the decoder's.
    const config = { clean_up_tokenization_spaces: true };
    const ours = new HfTokenizer(json as never, config);
    const oracle = new Oracle(json, config);
    const texts = [...sentences('dev.tsv').slice(0, 3000), ...fuzz(300)];
    // The oracle has no byte fallback in its Unigram model (the Rust library turns an unknown
    // piece into its <0xNN> tokens when all exist): compare with each run of byte tokens folded
    // back into one unknown, and check separately that the bytes decode to the text.
    const { tokens, mismatches, firstBad } = compareWithOracle(ours, oracle, texts, (text) => (byteFallback ? foldBytes(ours.encode(text)) : ours.encode(text)));
    t.diagnostic(`${texts.length} texts, ${tokens} tokens compared, ${mismatches} mismatches; vocabulary ${ours.vocabSize}`);
    assert.equal(mismatches, 0, firstBad);
    // Characters outside the vocabulary: one <unk> each run, or (byte fallback) their bytes, which decode back.
    const odd = 'jazz quiz 2023 東京 😀';
    const ids = ours.encode(odd, { addSpecialTokens: false });
    if (byteFallback) assert.equal(ours.decode(ids), odd);
    else assert.ok(ids.includes(2) && ours.decode(ids, { skipSpecialTokens: false }).includes('<unk>'));
  });
}
