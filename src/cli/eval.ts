// attn eval: evaluation metrics on text files. `attn eval bleu` prints sacreBLEU-compatible corpus BLEU.
import { readFile, stat } from 'node:fs/promises';
import { corpusBleu } from '../eval/bleu.js';
import { type Flags, UsageError } from './args.js';

export const EVAL_SUMMARY = 'evaluation metrics: `attn eval bleu` scores translations (sacreBLEU-compatible corpus BLEU)';

export const EVAL_HELP = `attn eval bleu --hyp FILE --ref FILE[,FILE2,...] [--lowercase] [--tokenize 13a|none]

Corpus BLEU as sacreBLEU computes it by default (BLEU|tok:13a|smooth:exp|case:mixed|eff:no):
mteval-v13a tokenisation, 1..4-grams, brevity penalty from the closest reference length, exp
smoothing. Files hold one detokenised segment per line; line i of each --ref file is a reference
for line i of --hyp (several comma-separated --ref files give several references per segment).
Prints {"bleu":…,"precisions":[p1,p2,p3,p4],"bp":…,"sys_len":…,"ref_len":…} (bleu and
precisions in percent, unrounded).

  --hyp FILE           system output
  --ref FILES          reference file(s), comma-separated
  --lowercase          case-insensitive BLEU
  --tokenize 13a|none  tokenizer (default 13a)`;

/** Flags that take no value (for the command table). */
export const EVAL_BOOLEANS = ['lowercase'];

/** Lines of a text file as sacreBLEU reads them: split on \n only, no final empty line after a trailing newline. */
export function readLines(text: string): string[] {
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

async function readTextFile(flag: string, path: string): Promise<string[]> {
  let s;
  try {
    s = await stat(path);
  } catch {
    throw new UsageError(`eval bleu: --${flag} ${path}: no such file`);
  }
  if (!s.isFile()) throw new UsageError(`eval bleu: --${flag} ${path} is not a file`);
  return readLines(await readFile(path, 'utf8'));
}

export async function runEvalBleu(f: Flags): Promise<void> {
  const hypPath = f.required('hyp', 'a file of system output, one segment per line');
  const refSpec = f.required('ref', 'a reference file (several: comma-separated)');
  const lowercase = f.bool('lowercase');
  const tokenize = f.string('tokenize') ?? '13a';
  if (tokenize !== '13a' && tokenize !== 'none') throw new UsageError(`eval bleu: unknown --tokenize '${tokenize}' (known: 13a, none)`);
  f.done();
  const refPaths = refSpec.split(',').map((s) => s.trim()).filter(Boolean);
  if (refPaths.length === 0) throw new UsageError('eval bleu: --ref needs a reference file');

  const hyps = await readTextFile('hyp', hypPath);
  const refs: string[][] = [];
  for (const p of refPaths) {
    const lines = await readTextFile('ref', p);
    if (lines.length !== hyps.length) {
      throw new UsageError(`eval bleu: line counts differ: --hyp ${hypPath} has ${hyps.length} lines, --ref ${p} has ${lines.length}`);
    }
    refs.push(lines);
  }
  for (let i = 0; i < hyps.length; i++) {
    if (refs.every((r) => r[i] === '')) throw new UsageError(`eval bleu: reference line ${i + 1} is empty in every --ref file`);
  }
  const r = corpusBleu(hyps, refs, { lowercase, tokenize });
  // JSON on stdout keeps full precision for scripts; people read two decimals on stderr.
  process.stderr.write(`BLEU ${r.bleu.toFixed(2)} (${r.precisions.map((p) => p.toFixed(1)).join('/')}, BP ${r.bp.toFixed(3)}, ${hyps.length} segments)\n`);
  console.log(JSON.stringify({ bleu: r.bleu, precisions: r.precisions, bp: r.bp, sys_len: r.sys_len, ref_len: r.ref_len }));
}

/** `attn eval SUB`: dispatches on the subcommand (f.parsed.positionals[0]). */
export async function runEval(f: Flags): Promise<void> {
  const sub = f.parsed.positionals[0];
  if (sub !== 'bleu' && sub !== 'classify' && sub !== 'ppl' && sub !== 'mc') throw new UsageError(`eval: ${sub === undefined ? 'missing subcommand' : `unknown subcommand '${sub}'`} (known: bleu, classify, ppl, mc)`);
  if (f.parsed.positionals.length > 1) throw new UsageError(`eval: unexpected argument '${f.parsed.positionals[1]}'`);
  if (sub === 'classify') return (await import('./eval-classify.js')).runEvalClassify(f);
  if (sub === 'ppl') return (await import('./eval-lm.js')).runEvalPpl(f);
  if (sub === 'mc') return (await import('./eval-lm.js')).runEvalMc(f);
  return runEvalBleu(f);
}
