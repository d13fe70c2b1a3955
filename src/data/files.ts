// The Node edge of the data layer: a dataset directory holds
//   train.bin, val.bin   token ids, little-endian uint16 (or uint32), nanoGPT's format
//   meta.json            DatasetMeta (see ./dataset.ts)
//   tokenizer files      whatever Tokenizer.toFiles() returns, so loadTokenizer(dir) works
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeFileAtomic } from '../io/files.js';
import type { Tokenizer } from '../tokenizers/index.js';
import { counterfactualLines } from './counterfactual.js';
import {
  bytesPerToken, bytesToTokens, DATASET_FORMAT, findOutOfVocab, parseDatasetMeta, splitTokens, tokenDType, tokensToBytes,
  type DatasetMeta, type TokenArray, type TokenDType,
} from './dataset.js';

export const TRAIN_FILE = 'train.bin';
export const VAL_FILE = 'val.bin';
export const META_FILE = 'meta.json';

export interface PrepareOptions {
  text: string;
  tokenizer: Tokenizer;
  /** Fraction of tokens, taken from the end, held out for validation (default 0.1). */
  valFraction?: number;
  outDir: string;
  /** Recorded in meta.json: the file the text came from. */
  source?: string;
  /**
   * Counterfactual data augmentation of the training split (see counterfactualLines): the
   * swapped copies of the training lines holding a listed word are appended to train.bin, after
   * the split, so val.bin is the un-augmented text's, token for token. `source` names the pair
   * file in meta.json.
   */
  cda?: { pairs: ReadonlyMap<string, string>; source: string };
}

/**
 * Tokenises `text`, splits it (first 90% train, last 10% val by default) and writes
 * train.bin, val.bin, meta.json and the tokenizer's files into outDir. Each file is replaced
 * atomically; meta.json is written last, so a directory with a meta.json is complete.
 */
export async function prepareDataset(opts: PrepareOptions): Promise<DatasetMeta> {
  const valFraction = opts.valFraction ?? 0.1;
  if (!(valFraction >= 0 && valFraction < 1)) throw new RangeError(`prepareDataset: valFraction must be in [0, 1), got ${valFraction}`);
  const tok = opts.tokenizer;
  const dtype = tokenDType(tok.vocabSize);
  const ids = tok.encode(opts.text);
  const bad = findOutOfVocab(ids, tok.vocabSize);
  if (bad >= 0) throw new Error(`prepareDataset: the tokenizer produced id ${ids[bad]} at position ${bad}, outside its vocabulary of ${tok.vocabSize}`);
  const split = splitTokens(ids, valFraction);
  const { val } = split;
  let train: ArrayLike<number> = split.train;
  let cda: DatasetMeta['cda'];
  if (opts.cda) {
    // Only lines wholly inside the training split are swapped: the line the split cuts belongs in
    // part to the validation text, which must not leak into training in any form.
    const trainText = tok.decode(split.train);
    const whole = trainText.slice(0, trainText.lastIndexOf('\n') + 1);
    const lines = counterfactualLines(whole, opts.cda.pairs);
    const extra = lines.length ? tok.encode((trainText.endsWith('\n') ? '' : '\n') + lines.join('\n') + '\n') : [];
    const joined = new Array<number>(split.train.length + extra.length);
    for (let i = 0; i < split.train.length; i++) joined[i] = split.train[i]!;
    for (let i = 0; i < extra.length; i++) joined[split.train.length + i] = extra[i]!;
    train = joined;
    cda = { pairs: opts.cda.source, lines: lines.length, tokens: extra.length };
  }
  const files = tok.toFiles();
  const reserved = [TRAIN_FILE, VAL_FILE, META_FILE].find((f) => f in files);
  if (reserved) throw new Error(`prepareDataset: the tokenizer wants to write '${reserved}', a dataset file name`);
  const meta: DatasetMeta = {
    format: DATASET_FORMAT,
    version: 1,
    vocab_size: tok.vocabSize,
    dtype,
    train_tokens: train.length,
    val_tokens: val.length,
    val_fraction: valFraction,
    tokenizer: tok.kind,
    tokenizer_files: Object.keys(files).sort(),
    ...(tok.eotToken !== undefined ? { eot_token: tok.eotToken } : {}),
    ...(opts.source !== undefined ? { source: opts.source } : {}),
    ...(cda ? { cda } : {}),
  };
  const dir = resolve(opts.outDir);
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, TRAIN_FILE), tokensToBytes(train, dtype));
  await writeFileAtomic(join(dir, VAL_FILE), tokensToBytes(val, dtype));
  for (const [name, text] of Object.entries(files)) await writeFileAtomic(join(dir, name), text);
  await writeFileAtomic(join(dir, META_FILE), JSON.stringify(meta, null, 2) + '\n');
  return meta;
}

/** Reads a .bin token file (little-endian ids of `dtype`); errors name the file. */
export async function loadTokens(path: string, dtype: TokenDType): Promise<TokenArray> {
  bytesPerToken(dtype);
  const bytes = await readFile(path);
  return bytesToTokens(bytes, dtype, path);
}

/** Reads and validates meta.json of a dataset directory. */
export async function readDatasetMeta(dir: string): Promise<DatasetMeta> {
  const path = join(resolve(dir), META_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      const isDir = await stat(resolve(dir)).then((s) => s.isDirectory(), () => false);
      throw new Error(isDir ? `${path}: missing; is ${dir} a prepared dataset (prepareDataset writes it)?` : `dataset directory ${resolve(dir)} does not exist`);
    }
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: invalid JSON: ${(e as Error).message}`);
  }
  return parseDatasetMeta(json, path);
}

export interface Dataset {
  /** Absolute path of the directory. */
  dir: string;
  meta: DatasetMeta;
  train: TokenArray;
  val: TokenArray;
}

/** Loads meta.json, train.bin and val.bin, checking token counts and ids against meta.json. */
export async function loadDataset(dir: string): Promise<Dataset> {
  dir = resolve(dir);
  const meta = await readDatasetMeta(dir);
  const load = async (name: string, expected: number): Promise<TokenArray> => {
    const path = join(dir, name);
    const ids = await loadTokens(path, meta.dtype);
    if (ids.length !== expected) throw new Error(`${path}: holds ${ids.length} tokens, but ${META_FILE} says ${expected}`);
    const bad = findOutOfVocab(ids, meta.vocab_size);
    if (bad >= 0) throw new Error(`${path}: token ${ids[bad]} at position ${bad} is outside the vocabulary of ${meta.vocab_size} in ${META_FILE}`);
    return ids;
  };
  return { dir, meta, train: await load(TRAIN_FILE, meta.train_tokens), val: await load(VAL_FILE, meta.val_tokens) };
}

/** The tokenizer files named in meta.json, by name (to copy into checkpoints). */
export async function readTokenizerFiles(dir: string, meta: DatasetMeta): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of meta.tokenizer_files) out[name] = await readFile(join(resolve(dir), name), 'utf8');
  return out;
}
