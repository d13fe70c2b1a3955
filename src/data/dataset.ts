// Token datasets as nanoGPT's prepare.py writes them: one flat stream of token ids per split,
// stored as little-endian uint16 (uint32 when the vocabulary does not fit), plus meta.json.
// Pure logic only; reading and writing files is in ./files.ts.
import type { TokenizerKind } from '../tokenizers/index.js';

export type TokenDType = 'uint16' | 'uint32';
export type TokenArray = Uint16Array | Uint32Array;

export const DATASET_FORMAT = 'attn-dataset';

/** meta.json: what a trainer needs to know about a prepared dataset. */
export interface DatasetMeta {
  format: typeof DATASET_FORMAT;
  version: 1;
  vocab_size: number;
  /** Element type of train.bin and val.bin (little-endian). */
  dtype: TokenDType;
  train_tokens: number;
  val_tokens: number;
  val_fraction: number;
  tokenizer: TokenizerKind;
  /** The tokenizer's files in the dataset directory (Tokenizer.toFiles()). */
  tokenizer_files: string[];
  /** The end-of-text id, for tokenizers that have one. */
  eot_token?: number;
  /** The text file it was prepared from, when one was named. */
  source?: string;
  /** Counterfactual data augmentation of train.bin: the pair file, the swapped lines added and their tokens. */
  cda?: { pairs: string; lines: number; tokens: number };
}

/** The narrowest dtype holding ids 0 .. vocabSize-1. */
export function tokenDType(vocabSize: number): TokenDType {
  if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new RangeError(`tokenDType: vocab size must be a positive integer, got ${vocabSize}`);
  if (vocabSize > 2 ** 32) throw new RangeError(`tokenDType: vocab size ${vocabSize} does not fit in uint32`);
  return vocabSize <= 65536 ? 'uint16' : 'uint32';
}

export function bytesPerToken(dtype: TokenDType): 2 | 4 {
  if (dtype === 'uint16') return 2;
  if (dtype === 'uint32') return 4;
  throw new Error(`unknown token dtype '${String(dtype)}' (known: uint16, uint32)`);
}

/**
 * The first (1 - valFraction) of the ids for training and the rest for validation, as
 * nanoGPT's shakespeare_char (train = data[:int(n * 0.9)]). Both are views of `ids` when it
 * is a typed array.
 */
export function splitTokens<A extends ArrayLike<number>>(ids: A & { slice(start?: number, end?: number): A }, valFraction: number): { train: A; val: A } {
  if (!(valFraction >= 0 && valFraction < 1)) throw new RangeError(`splitTokens: valFraction must be in [0, 1), got ${valFraction}`);
  const nTrain = Math.floor(ids.length * (1 - valFraction));
  return { train: ids.slice(0, nTrain), val: ids.slice(nTrain) };
}

/** Little-endian bytes of the ids; every id must fit the dtype. */
export function tokensToBytes(ids: ArrayLike<number>, dtype: TokenDType): Uint8Array {
  const size = bytesPerToken(dtype);
  const limit = size === 2 ? 0xffff : 0xffffffff;
  const out = new Uint8Array(ids.length * size);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id > limit) throw new RangeError(`tokensToBytes: token ${id} at position ${i} does not fit ${dtype}`);
    if (size === 2) dv.setUint16(i * 2, id, true);
    else dv.setUint32(i * 4, id, true);
  }
  return out;
}

/** The ids in little-endian `bytes`; `what` names the source in errors. */
export function bytesToTokens(bytes: Uint8Array, dtype: TokenDType, what = 'token data'): TokenArray {
  const size = bytesPerToken(dtype);
  if (bytes.length % size !== 0) throw new Error(`${what}: ${bytes.length} bytes is not a whole number of ${dtype} tokens (${size} bytes each)`);
  const n = bytes.length / size;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (size === 2) {
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) out[i] = dv.getUint16(i * 2, true);
    return out;
  }
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = dv.getUint32(i * 4, true);
  return out;
}

/** The first id >= vocabSize, or -1 (a dataset prepared with another tokenizer). */
export function findOutOfVocab(ids: ArrayLike<number>, vocabSize: number): number {
  for (let i = 0; i < ids.length; i++) if (ids[i]! >= vocabSize) return i;
  return -1;
}

const isObject = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);

/** Validates a parsed meta.json; `what` names the file in the error. */
export function parseDatasetMeta(json: unknown, what = 'meta.json'): DatasetMeta {
  if (!isObject(json)) throw new Error(`${what}: must hold a JSON object`);
  const problems: string[] = [];
  const count = (k: string, min: number): void => {
    const v = json[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) problems.push(`'${k}' must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  };
  if (json['format'] !== DATASET_FORMAT) problems.push(`'format' must be '${DATASET_FORMAT}', got ${JSON.stringify(json['format'])}`);
  if (json['version'] !== 1) problems.push(`'version' ${JSON.stringify(json['version'])} is not supported (expected 1)`);
  count('vocab_size', 1);
  count('train_tokens', 0);
  count('val_tokens', 0);
  if (json['dtype'] !== 'uint16' && json['dtype'] !== 'uint32') problems.push(`'dtype' must be 'uint16' or 'uint32', got ${JSON.stringify(json['dtype'])}`);
  if (json['tokenizer'] !== 'char' && json['tokenizer'] !== 'bpe') problems.push(`'tokenizer' must be 'char' or 'bpe', got ${JSON.stringify(json['tokenizer'])}`);
  const files = json['tokenizer_files'];
  if (!Array.isArray(files) || !files.every((f) => typeof f === 'string' && f !== '' && !/[/\\\0]/.test(f) && f !== '.' && f !== '..')) {
    problems.push(`'tokenizer_files' must be a list of plain file names, got ${JSON.stringify(files)}`);
  }
  if (typeof json['val_fraction'] !== 'number') problems.push(`'val_fraction' must be a number, got ${JSON.stringify(json['val_fraction'])}`);
  if (json['eot_token'] !== undefined && !(typeof json['eot_token'] === 'number' && Number.isInteger(json['eot_token']))) {
    problems.push(`'eot_token' must be an integer, got ${JSON.stringify(json['eot_token'])}`);
  }
  if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`);
  return json as unknown as DatasetMeta;
}
