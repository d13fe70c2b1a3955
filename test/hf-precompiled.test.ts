// The Precompiled normalizer (SentencePiece's compiled nmt_nfkc rules) with a Unigram model, in a
// T5-style tokenizer.json made by tools/make_spm_fixture.py from a SentencePiece model trained
// there; the reference is SentencePiece 0.1.97 itself (its encode_as_ids, committed in
// expected.json): full-width letters, ligatures, circled digits, half-width katakana, combining
// accents, extra whitespace, and SST-2 / Multi30k sentences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HfTokenizer } from '../src/tokenizers/index.js';

const DIR = fileURLToPath(new URL('../../test/fixtures/spm-t5/', import.meta.url));

test('Precompiled + Unigram (a T5-style tokenizer.json): ids identical to SentencePiece on every test sentence', (t) => {
  const tok = new HfTokenizer(readFileSync(DIR + 'tokenizer.json', 'utf8'));
  const exp = JSON.parse(readFileSync(DIR + 'expected.json', 'utf8')) as { texts: string[]; ids: number[][] };
  let tokens = 0;
  let bad = 0;
  let first = '';
  exp.texts.forEach((text, i) => {
    const got = tok.encode(text, { addSpecialTokens: false });
    const want = exp.ids[i]!;
    tokens += want.length;
    if (got.length !== want.length || got.some((v, k) => v !== want[k])) {
      bad++;
      first ||= `${JSON.stringify(text)}: attn ${got.join(' ')} vs SentencePiece ${want.join(' ')}`;
    }
  });
  t.diagnostic(`${exp.texts.length} texts, ${tokens} tokens compared with SentencePiece, ${bad} mismatches`);
  assert.equal(bad, 0, first);
  // T5's template ends the source with </s>; the normalization shows in the decode.
  const ids = tok.encode('Ｈｅｌｌｏ ﬁne ①');
  assert.equal(ids[ids.length - 1], 1);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'Hello fine 1');
});

test('Precompiled: a malformed charsmap is refused naming the field', () => {
  const json = JSON.parse(readFileSync(DIR + 'tokenizer.json', 'utf8')) as Record<string, unknown>;
  assert.throws(() => new HfTokenizer({ ...json, normalizer: { type: 'Precompiled', precompiled_charsmap: 'AAAA' } } as never), /precompiled_charsmap is 3 bytes|precompiled_charsmap declares/);
  assert.throws(() => new HfTokenizer({ ...json, normalizer: { type: 'Precompiled', precompiled_charsmap: '!!!' } } as never), /precompiled_charsmap is not base64/);
});
