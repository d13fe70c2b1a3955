// attn prepare: text file → train.bin / val.bin / meta.json + tokenizer files.
import { readFile } from 'node:fs/promises';
import { prepareDataset } from '../data/index.js';
import { parseWordPairs } from '../data/counterfactual.js';
import { CharTokenizer, trainBpe, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { requireFile, tokenizerFrom } from './common.js';

/** Builds the tokenizer a spec names: char (from the text), bpe (trained on it), gpt2, or a directory. */
export async function makeTokenizer(command: string, spec: string, text: string, vocabSize?: number): Promise<Tokenizer> {
  if (spec === 'char') return CharTokenizer.fromText(text);
  if (spec === 'bpe') {
    if (vocabSize === undefined) throw new UsageError(`${command}: --tokenizer bpe needs --vocab_size N`);
    if (vocabSize < 257) throw new UsageError(`${command}: --vocab_size must be at least 257 for byte-level BPE, got ${vocabSize}`);
    return trainBpe(text, vocabSize, { specialTokens: ['<|endoftext|>'] });
  }
  return tokenizerFrom(command, spec);
}

export async function runPrepare(f: Flags): Promise<void> {
  const input = f.required('input', 'a text file');
  const outDir = f.required('out', 'an output directory');
  const spec = f.string('tokenizer') ?? 'char';
  const vocabSize = f.number('vocab_size', { integer: true, min: 1 });
  const valFraction = f.number('val_fraction', { min: 0, max: 0.99 }) ?? 0.1;
  const cdaPairs = f.string('cda_pairs');
  f.done();
  await requireFile('prepare', 'input', input);
  if (cdaPairs !== undefined) await requireFile('prepare', 'cda_pairs', cdaPairs);
  const text = await readFile(input, 'utf8');
  const tokenizer = await makeTokenizer('prepare', spec, text, vocabSize);
  const cda = cdaPairs !== undefined ? { pairs: parseWordPairs(await readFile(cdaPairs, 'utf8'), cdaPairs), source: cdaPairs } : undefined;
  const meta = await prepareDataset({ text, tokenizer, valFraction, outDir, ...(cda ? { cda } : {}) });
  console.log(JSON.stringify(meta));
}
