// attn eval ppl / attn eval mc: sliding-window perplexity and bits per byte of a text file, and
// multiple-choice log-likelihood scoring of a JSONL, on any model directory attn loads.
import { readFile, writeFile } from 'node:fs/promises';
import { bitsPerByte, parseChoiceItems, scoreChoices, slidingWindowPerplexity, summariseChoices } from '../eval/lm-eval.js';
import { BpeTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, describeQuantized, LOAD_DTYPES, loadModelDir, quantSpecFromFlags, requireFile, tokenizerOfModel, type CausalModel } from './common.js';

export const EVAL_LM_HELP = `attn eval ppl --model DIR --file TEXT [--stride S] [--max_length T]

Perplexity and bits per byte of a text file, with the sliding window of Hugging Face's guide
"Perplexity of fixed-length models": windows of T tokens (default: the model's context) start every
S tokens (default T: disjoint windows); each scores only the tokens the window before did not.
With S < T every token after the first is scored once, with at least T − S tokens of context; with
S = T each window's first token goes unscored, as in the guide. Prints
{"ppl", "nll" (nats per token), "bits_per_byte" (total nats / ln 2 / the UTF-8 bytes of the text
less those of the unscored tokens), "tokens", "bytes", "windows", "max_length", "stride"}.

attn eval mc --model DIR --file ITEMS.jsonl [--delimiter " "] [--limit N] [--details OUT.jsonl]

Multiple-choice scoring as EleutherAI's lm-evaluation-harness does it: each line is
{"context": "...", "choices": ["...", ...], "label": i}; each choice scores the summed log-probability
of delimiter + choice after the context (trailing spaces of the context move to the choice;
inputs longer than the context window are cut from the left). acc: the argmax of the
log-likelihoods is the label; acc_norm: the argmax of log-likelihood / the choice's length in
characters (Unicode code points, as Python's len). Prints {"acc", "acc_norm", "acc_stderr",
"acc_norm_stderr", "n"}; --details writes each item's log-likelihoods.

Both: --model DIR (attn checkpoint, Hugging Face GPT-2, llama, mistral, qwen2, qwen3, phi, a .gguf
file, a LoRA adapter directory), --adapter DIR, --dtype float32|int8|int4|int4z, --device, --threads.`;

/** The model, its tokenizer and an encode that reads special-token text as plain text. */
async function load(command: string, f: Flags, extra: () => void): Promise<{ model: CausalModel; tok: Tokenizer; encode: (s: string) => number[] }> {
  const dir = f.required('model', 'a model directory');
  const adapter = f.string('adapter');
  const dtype = f.choice('dtype', LOAD_DTYPES) ?? 'float32';
  if (dtype === 'float16' || dtype === 'bfloat16') throw new UsageError(`${command}: --dtype takes float32, int8, int4 or int4z`);
  const quant = quantSpecFromFlags(f, dtype);
  const backend = await backendFromFlags(f);
  extra();
  f.done();
  const model = await loadModelDir(command, dir, backend, adapter, quant);
  process.stderr.write(describeQuantized(model));
  let tok: Tokenizer;
  try {
    tok = await tokenizerOfModel(dir, model);
  } catch {
    throw new UsageError(`${command}: ${dir} has no tokenizer files`);
  }
  const encode = (s: string): number[] => (tok instanceof BpeTokenizer ? tok.encode(s, { disallowedSpecial: [] }) : tok.encode(s));
  return { model, tok, encode };
}

export async function runEvalPpl(f: Flags): Promise<void> {
  const file = f.required('file', 'a text file');
  await requireFile('eval ppl', 'file', file);
  let stride: number | undefined;
  let maxLength: number | undefined;
  const { model, tok, encode } = await load('eval ppl', f, () => {
    stride = f.number('stride', { integer: true, min: 1 });
    maxLength = f.number('max_length', { integer: true, min: 2 });
  });
  const text = await readFile(file, 'utf8');
  const ids = encode(text);
  const T = maxLength ?? model.config.block_size;
  if (T > model.config.block_size) throw new UsageError(`eval ppl: --max_length ${T} exceeds the model's context of ${model.config.block_size}`);
  if (stride !== undefined && stride > T) throw new UsageError(`eval ppl: --stride ${stride} exceeds the window of ${T} tokens`);
  const r = slidingWindowPerplexity(model, ids, { maxLength: T, stride: stride ?? T });
  // Tokens never predicted (the first; each window's first with disjoint windows): their bytes are not counted.
  const enc = new TextEncoder();
  const bytes = enc.encode(text).length - r.unscored.reduce((s, t) => s + enc.encode(tok.decode([ids[t]!])).length, 0);
  const bpb = bitsPerByte(r.nll_sum, bytes);
  process.stderr.write(`perplexity ${r.ppl.toFixed(4)}, ${bpb.toFixed(4)} bits per byte (${r.tokens} tokens, ${r.windows} windows of ${r.max_length}, stride ${r.stride})\n`);
  console.log(JSON.stringify({ ppl: r.ppl, nll: r.nll, bits_per_byte: bpb, tokens: r.tokens, bytes, windows: r.windows, max_length: r.max_length, stride: r.stride }));
}

export async function runEvalMc(f: Flags): Promise<void> {
  const file = f.required('file', 'a JSONL of {context, choices, label}');
  await requireFile('eval mc', 'file', file);
  let delimiter = ' ';
  let limit: number | undefined;
  let details: string | undefined;
  const { model, encode } = await load('eval mc', f, () => {
    delimiter = f.string('delimiter') ?? ' ';
    limit = f.number('limit', { integer: true, min: 1 });
    details = f.string('details');
  });
  let items = parseChoiceItems(await readFile(file, 'utf8'), file);
  if (limit !== undefined) items = items.slice(0, limit);
  const scores = items.map((it) => scoreChoices(model, encode, it, delimiter));
  const s = summariseChoices(items, scores);
  if (details) await writeFile(details, scores.map((sc, i) => JSON.stringify({ label: items[i]!.label, ...sc }) + '\n').join(''));
  process.stderr.write(`acc ${s.acc.toFixed(4)} ± ${s.acc_stderr.toFixed(4)}, acc_norm ${s.acc_norm.toFixed(4)} ± ${s.acc_norm_stderr.toFixed(4)} (${s.n} items)\n`);
  console.log(JSON.stringify(s));
}
