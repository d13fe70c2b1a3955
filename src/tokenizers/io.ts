// Node edge of the tokenizers: loading tokenizer files (writing them is ./files.ts's
// writeFiles, which the tokenizers' save methods use). node:fs is imported on demand inside
// each function, so importing this module (through ./index.ts) is harmless in a browser; only
// calling these functions needs Node.
import { BpeTokenizer } from './bpe.js';
import { CHAR_TOKENIZER_FILE, CharTokenizer } from './char.js';
import type { Tokenizer } from './types.js';
import { fs, join, type Fs } from './files.js';
import { HfTokenizer, type HfTokenizerFileJson } from './hf-tokenizer.js';

async function readIfExists(f: Fs, path: string): Promise<string | undefined> {
  try {
    return await f.readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Reads GPT-2's encoder.json and vocab.bpe from dir. */
export async function loadGpt2Files(dir: string): Promise<BpeTokenizer> {
  const f = await fs();
  const [enc, bpe] = await Promise.all([f.readFile(join(dir, 'encoder.json'), 'utf8'), f.readFile(join(dir, 'vocab.bpe'), 'utf8')]);
  return BpeTokenizer.fromGpt2Files(enc, bpe);
}

type Json = Record<string, unknown>;
const isObj = (x: unknown): x is Json => x !== null && typeof x === 'object' && !Array.isArray(x);

/**
 * Whether a parsed tokenizer.json has the shape BpeTokenizer.toHuggingFaceJson writes (so attn's
 * own files keep loading as BpeTokenizer): a plain byte-level BPE (no unk, byte fallback,
 * subword affixes or dropout), at most a Unicode normalizer, a ByteLevel pre-tokenizer (or
 * Split(Regex, Isolated) + ByteLevel without regex), a ByteLevel decoder, no post-processor, and
 * added tokens that are all special with no matching flags. Tokenizers from the Hub differ in
 * at least one of these (GPT-2's has a ByteLevel post-processor, Llama's a template).
 */
export function isAttnBpeJson(j: unknown): boolean {
  if (!isObj(j) || j.post_processor !== null || !isObj(j.model)) return false;
  const m = j.model;
  if (m.type !== 'BPE' || m.unk_token != null || m.byte_fallback === true || m.fuse_unk === true || m.dropout != null) return false;
  if ((m.continuing_subword_prefix ?? '') !== '' || (m.end_of_word_suffix ?? '') !== '') return false;
  const n = j.normalizer;
  if (n !== null && !(isObj(n) && ['NFC', 'NFD', 'NFKC', 'NFKD'].includes(n.type as string) && Object.keys(n).length === 1)) return false;
  if (!isObj(j.decoder) || j.decoder.type !== 'ByteLevel') return false;
  const p = j.pre_tokenizer;
  const byteLevel = (x: unknown, regex: boolean) => isObj(x) && x.type === 'ByteLevel' && (x.use_regex ?? true) === regex;
  const preOk =
    byteLevel(p, true) ||
    (isObj(p) &&
      p.type === 'Sequence' &&
      Array.isArray(p.pretokenizers) &&
      p.pretokenizers.length === 2 &&
      isObj(p.pretokenizers[0]) &&
      p.pretokenizers[0].type === 'Split' &&
      isObj(p.pretokenizers[0].pattern) &&
      typeof p.pretokenizers[0].pattern.Regex === 'string' &&
      (p.pretokenizers[0].behavior ?? 'Isolated') === 'Isolated' &&
      !p.pretokenizers[0].invert &&
      byteLevel(p.pretokenizers[1], false));
  if (!preOk) return false;
  const added = j.added_tokens ?? [];
  return Array.isArray(added) && added.every((t) => isObj(t) && t.special === true && !t.single_word && !t.lstrip && !t.rstrip && !t.normalized);
}

/**
 * A tokenizer.json's text (and tokenizer_config.json's, when present) -> tokenizer: the files
 * attn writes load as BpeTokenizer (see isAttnBpeJson), every other as HfTokenizer.
 */
export function tokenizerFromHuggingFace(tokenizerJson: string, configJson?: string): BpeTokenizer | HfTokenizer {
  let parsed: unknown;
  try {
    parsed = JSON.parse(tokenizerJson);
  } catch (e) {
    throw new Error(`tokenizer.json is not valid JSON: ${(e as Error).message}`);
  }
  if (isAttnBpeJson(parsed)) return BpeTokenizer.fromHuggingFaceJson(parsed as never);
  return new HfTokenizer(parsed as HfTokenizerFileJson, configJson, tokenizerJson);
}

/**
 * Loads the tokenizer saved in dir, by the files found there, in this order:
 *   char_tokenizer.json      -> CharTokenizer (attn's own format, see char.ts)
 *   tokenizer.json           -> BpeTokenizer when attn wrote it (see isAttnBpeJson), else
 *                               HfTokenizer with tokenizer_config.json beside it if present
 *   encoder.json + vocab.bpe -> BpeTokenizer (GPT-2's format)
 * dir may also be the path of one of those files.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const f = await fs();
  const st = await f.stat(dir);
  if (st.isFile()) {
    const name = dir.slice(dir.lastIndexOf('/') + 1);
    const parent = dir.slice(0, Math.max(dir.lastIndexOf('/'), 0)) || '.';
    const text = await f.readFile(dir, 'utf8');
    if (name === 'encoder.json' || name === 'vocab.bpe') return loadGpt2Files(parent);
    const json = JSON.parse(text) as { type?: string };
    if (json.type === 'char') return CharTokenizer.fromJSON(text);
    return tokenizerFromHuggingFace(text, await readIfExists(f, join(parent, 'tokenizer_config.json')));
  }
  const char = await readIfExists(f, join(dir, CHAR_TOKENIZER_FILE));
  if (char !== undefined) return CharTokenizer.fromJSON(char);
  const hf = await readIfExists(f, join(dir, 'tokenizer.json'));
  if (hf !== undefined) return tokenizerFromHuggingFace(hf, await readIfExists(f, join(dir, 'tokenizer_config.json')));
  const enc = await readIfExists(f, join(dir, 'encoder.json'));
  const bpe = await readIfExists(f, join(dir, 'vocab.bpe'));
  if (enc !== undefined && bpe !== undefined) return BpeTokenizer.fromGpt2Files(enc, bpe);
  throw new Error(`no tokenizer in ${dir}: expected ${CHAR_TOKENIZER_FILE}, tokenizer.json, or encoder.json + vocab.bpe`);
}
