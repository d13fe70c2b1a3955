// Node edge of the tokenizers: loading tokenizer files (writing them is ./files.ts's
// writeFiles, which the tokenizers' save methods use). node:fs is imported on demand inside
// each function, so importing this module (through ./index.ts) is harmless in a browser; only
// calling these functions needs Node.
import { BpeTokenizer } from './bpe.js';
import { CHAR_TOKENIZER_FILE, CharTokenizer } from './char.js';
import type { Tokenizer } from './types.js';
import { fs, join, type Fs } from './files.js';

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

/**
 * Loads the tokenizer saved in dir, by the files found there, in this order:
 *   char_tokenizer.json      -> CharTokenizer (attn's own format, see char.ts)
 *   tokenizer.json           -> BpeTokenizer (Hugging Face format, byte-level BPE)
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
    return json.type === 'char' ? CharTokenizer.fromJSON(text) : BpeTokenizer.fromHuggingFaceJson(text);
  }
  const char = await readIfExists(f, join(dir, CHAR_TOKENIZER_FILE));
  if (char !== undefined) return CharTokenizer.fromJSON(char);
  const hf = await readIfExists(f, join(dir, 'tokenizer.json'));
  if (hf !== undefined) return BpeTokenizer.fromHuggingFaceJson(hf);
  const enc = await readIfExists(f, join(dir, 'encoder.json'));
  const bpe = await readIfExists(f, join(dir, 'vocab.bpe'));
  if (enc !== undefined && bpe !== undefined) return BpeTokenizer.fromGpt2Files(enc, bpe);
  throw new Error(`no tokenizer in ${dir}: expected ${CHAR_TOKENIZER_FILE}, tokenizer.json, or encoder.json + vocab.bpe`);
}
