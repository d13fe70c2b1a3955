// attn tokenize: text → token ids as a JSON array.
import { readFile } from 'node:fs/promises';
import { BpeTokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { requireFile, tokenizerFrom } from './common.js';

export async function runTokenize(f: Flags): Promise<void> {
  const spec = f.required('tokenizer', "'gpt2' or a directory");
  const text = f.string('text');
  const file = f.string('file');
  const allowSpecial = f.bool('allow_special');
  f.done();
  if ((text === undefined) === (file === undefined)) throw new UsageError('tokenize: give exactly one of --text or --file');
  if (file !== undefined) await requireFile('tokenize', 'file', file);
  const input = text ?? (await readFile(file!, 'utf8'));
  const tok = await tokenizerFrom('tokenize', spec);
  // Without --allow_special, text such as <|endoftext|> is encoded as ordinary characters.
  const ids = tok instanceof BpeTokenizer ? tok.encode(input, allowSpecial ? { allowedSpecial: 'all' } : { disallowedSpecial: [] }) : tok.encode(input);
  process.stdout.write(`${JSON.stringify(ids)}\n`);
}
