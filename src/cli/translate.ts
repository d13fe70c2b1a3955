// attn translate: an encoder-decoder checkpoint (the translation task's best/ or last/)
// translates the lines of stdin to stdout, in order, batched by length.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { translateIds } from '../generate/translate.js';
import { loadSeq2SeqCheckpoint, WrongModelKindError, describeModelKind, SEQ2SEQ_MODEL_TYPE } from '../models/seq2seq-checkpoint.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, requireDir } from './common.js';
import type { Backend } from '../backend/backend.js';
import { loadT5Dir } from '../models/hf-t5-files.js';
import { loadTokenizer, type Tokenizer } from '../tokenizers/index.js';

export const TRANSLATE_HELP = `attn translate --model DIR [options] < input.txt > output.txt

Translates each line of stdin with an encoder-decoder checkpoint (model_type '${SEQ2SEQ_MODEL_TYPE}',
as 'attn train --preset multi30k-de-en' writes) and writes one line per input line, in order.
Empty lines stay empty; lines longer than the model's max_len tokens are truncated (with a
warning on stderr naming the line).

  --model DIR            checkpoint directory (config.json, model.safetensors, tokenizer.json)
  --beam K               beam size (default 4)
  --length_penalty A     GNMT length penalty alpha (default 0.6)
  --greedy               greedy decoding instead of beam search
  --batch_size N         sentences per decoding batch (default 64)
  --max_len_a A          at most A*source_len + B new tokens (default 1.5)
  --max_len_b B          (default 10)
  --prefix TEXT          T5: the task prefix put before each line (e.g. "translate German to English: ")
  --device cpu|webgpu|auto|ref       backend (default cpu); --threads N

A Hugging Face T5 directory (model_type 't5', with its tokenizer.json) translates too: greedy
decoding, the source as its tokenizer encodes --prefix + line.
`;

export interface TranslateIo {
  /** The input text (default: all of stdin). */
  input?: string;
  stdout?: (s: string) => void;
  stderr?: (s: string) => void;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function runTranslate(f: Flags, io: TranslateIo = {}): Promise<void> {
  const out = io.stdout ?? ((s: string) => void process.stdout.write(s));
  const err = io.stderr ?? ((s: string) => void process.stderr.write(s));
  const dir = f.required('model', 'a checkpoint directory');
  const greedy = f.bool('greedy');
  const beam = f.number('beam', { integer: true, min: 1 }) ?? 4;
  const lengthPenalty = f.number('length_penalty', { min: 0 }) ?? 0.6;
  const batchSize = f.number('batch_size', { integer: true, min: 1 }) ?? 64;
  const maxLenA = f.number('max_len_a', { min: 0 }) ?? 1.5;
  const maxLenB = f.number('max_len_b', { min: 0 }) ?? 10;
  const prefix = f.string('prefix') ?? '';
  const beamGiven = f.has('beam') && !greedy;
  const backend = await backendFromFlags(f);
  f.done();
  await requireDir('translate', 'model', dir);
  // Refuse other kinds of checkpoint before loading any weights.
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`translate: --model ${dir}: cannot read config.json (${(e as Error).message})`);
  }
  if (json['model_type'] === 't5') return translateT5(dir, backend, { prefix, batchSize, maxLenA, maxLenB, beamGiven }, io, out, err);
  if (json['model_type'] !== SEQ2SEQ_MODEL_TYPE) throw new UsageError(`translate: --model ${dir} holds ${describeModelKind(json)}, not an encoder-decoder translation model (model_type '${SEQ2SEQ_MODEL_TYPE}'); train one with 'attn train --preset multi30k-de-en'`);
  let loaded;
  try {
    loaded = await loadSeq2SeqCheckpoint(dir, { backend });
  } catch (e) {
    if (e instanceof WrongModelKindError) throw new UsageError(`translate: ${e.message}`);
    throw e;
  }
  const { model, tokenizer, config } = loaded;
  try {
    const text = io.input ?? (await readStdin());
    const lines = text.split(/\r?\n/);
    if (lines.length && lines[lines.length - 1] === '') lines.pop(); // the final newline
    const srcs = lines.map((line, i) => {
      const ids = tokenizer.encodeOrdinary(line.trim());
      if (ids.length > config.max_len) {
        err(`translate: warning: line ${i + 1} has ${ids.length} tokens, more than the model's max_len ${config.max_len}; truncated\n`);
        return ids.slice(0, config.max_len);
      }
      return ids;
    });
    const hyps = translateIds(model, srcs, { greedy, beam, lengthPenalty, batchSize, maxLenA, maxLenB });
    out(hyps.map((h, i) => (srcs[i]!.length ? tokenizer.decode(h).trim().replace(/[\r\n]+/g, ' ') : '')).map((s) => s + '\n').join(''));
  } finally {
    model.dispose();
  }
}

/** A Hugging Face T5 directory: its tokenizer.json (with --prefix, e.g. "translate German to English: "), greedy decoding. */
async function translateT5(dir: string, backend: Backend, o: { prefix: string; batchSize: number; maxLenA: number; maxLenB: number; beamGiven: boolean }, io: TranslateIo,
  out: (s: string) => void, err: (s: string) => void): Promise<void> {
  let tok: Tokenizer;
  try {
    tok = await loadTokenizer(dir);
  } catch (e) {
    throw new UsageError(`translate: ${dir} has no tokenizer.json for its T5 model (${(e as Error).message})`);
  }
  if (o.beamGiven) err('translate: T5 checkpoints decode greedily (beam search is for attn encoder-decoders); --beam ignored\n');
  const { model } = await loadT5Dir(dir, { backend });
  try {
    const text = io.input ?? (await readStdin());
    const lines = text.split(/\r?\n/);
    if (lines.length && lines[lines.length - 1] === '') lines.pop();
    const srcs = lines.map((line) => (line.trim() === '' ? [] : tok.encode(o.prefix + line.trim())));
    const hyps: number[][] = srcs.map(() => []);
    const order = srcs.map((_, i) => i).filter((i) => srcs[i]!.length > 0).sort((a, b) => srcs[a]!.length - srcs[b]!.length);
    for (let s = 0; s < order.length; s += o.batchSize) {
      const idx = order.slice(s, s + o.batchSize);
      const longest = Math.max(...idx.map((i) => srcs[i]!.length));
      const got = model.greedyGenerate(idx.map((i) => srcs[i]!), { maxNewTokens: Math.ceil(o.maxLenA * longest + o.maxLenB) });
      idx.forEach((i, k) => (hyps[i] = got[k]!));
    }
    out(hyps.map((h, i) => (srcs[i]!.length ? decodeT5(tok, h).trim().replace(/[\r\n]+/g, ' ') : '')).map((x) => x + '\n').join(''));
  } finally {
    model.dispose();
  }
}

function decodeT5(tok: Tokenizer, ids: number[]): string {
  const hf = tok as Tokenizer & { decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string };
  return hf.decode(ids, { skipSpecialTokens: true });
}
