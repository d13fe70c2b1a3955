// attn probe canaries | memorisation | membership: what a trained model keeps of its training text.
//   canaries      write a training text with random secrets inserted k times each
//   memorisation  canary exposure (exact and extrapolated) and verbatim extraction
//   membership    membership inference by loss and by a reference model's loss ratio (ROC AUC)
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../io/files.js';
import { exposureExact, exposureExtrapolated, extractionRate, rocAucInterval, windowLosses, type CanaryFormat, type CausalLM } from '../eval/privacy.js';
import { Generator } from '../tensor/index.js';
import type { Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, loadModelDir, tokenizerOfModel } from './common.js';

export const PROBE_PRIVACY_HELP = `
  attn probe canaries --data FILE --out FILE --canaries FILE.json [--k 1,4,16,64] [--digits 6] [--per_k 1] [--seed N] [--train_fraction 0.9]
      Inserts random secrets ("my secret number is 8 3 1 5 0 7") into a training text, each k times,
      as whole lines at random line starts within the first train_fraction of the text (the part
      'attn train --data' trains on), and a first line "0 1 2 3 4 5 6 7 8 9" so a character-level
      vocabulary holds every digit. Writes the text and the canaries (secret, k) as JSON.

  attn probe memorisation --model DIR --canaries FILE.json [--samples 2000] [--exact true|false]
                          [--extraction_text FILE --extraction_n 200 --prefix_len 32 --length 50] [--json FILE]
      Exposure of each canary (Carlini et al. 2019): exact by ranking over all 10^digits secrets
      (a pruned walk of the digit tree) and extrapolated from a skew-normal (and a normal) fitted
      to --samples random secrets. With --extraction_text: the share of prefixes of that text whose
      greedy continuation reproduces the next --length tokens verbatim.

  attn probe membership --model DIR --members FILE --nonmembers FILE [--reference DIR] [--n 500] [--window 64] [--seed N] [--json FILE]
      Membership inference on --n windows of --window tokens from each file: ROC AUC of the score
      -loss (loss threshold) and, with --reference, of loss_ref - loss (the reference-model ratio,
      in log space).

  --device cpu|ref, --threads N`;

export { probeCanaries, probeMemorisation, probeMembership };

export const CANARY_PREFIX = 'my secret number is ';

interface CanaryFile {
  prefix: string;
  digits: number;
  canaries: { secret: number[]; k: number }[];
}

async function probeCanaries(f: Flags): Promise<void> {
  const data = f.required('data', 'a text file');
  const out = f.required('out', 'the output text file');
  const file = f.required('canaries', 'the canaries JSON file to write');
  const ks = (f.string('k') ?? '1,4,16,64').split(',').map((s) => Number(s));
  const digits = f.number('digits', { integer: true, min: 1, max: 12 }) ?? 6;
  const perK = f.number('per_k', { integer: true, min: 1 }) ?? 1;
  const seed = f.number('seed', { integer: true, min: 0 }) ?? 1;
  const trainFraction = f.number('train_fraction', { min: 0, max: 1 }) ?? 0.9;
  f.done();
  for (const k of ks) if (!(Number.isInteger(k) && k >= 1)) throw new UsageError(`probe canaries: --k must list positive integers, got '${k}'`);
  const text = await readFile(data, 'utf8');
  const g = new Generator(seed);
  const canaries = ks.flatMap((k) => Array.from({ length: perK }, () => ({ secret: Array.from({ length: digits }, () => g.randint(10)), k })));
  // Line starts in the training part (leaving room for the inserted text, which lengthens it).
  const limit = Math.floor(text.length * trainFraction * 0.95);
  const starts: number[] = [0];
  for (let i = text.indexOf('\n'); i >= 0 && i + 1 < limit; i = text.indexOf('\n', i + 1)) starts.push(i + 1);
  const inserts: { at: number; line: string }[] = [];
  for (const c of canaries) {
    const line = `${CANARY_PREFIX}${c.secret.join(' ')}\n`;
    for (let j = 0; j < c.k; j++) inserts.push({ at: starts[g.randint(starts.length)]!, line });
  }
  inserts.sort((a, b) => a.at - b.at);
  let result = '';
  let pos = 0;
  for (const ins of inserts) {
    result += text.slice(pos, ins.at) + ins.line;
    pos = ins.at;
  }
  result += text.slice(pos);
  // A character-level vocabulary holds only characters of the text: one line with every digit
  // puts all of the secret space in it (the canaries alone may miss some digits).
  result = `0 1 2 3 4 5 6 7 8 9\n${result}`;
  const body: CanaryFile = { prefix: CANARY_PREFIX, digits, canaries };
  await writeFileAtomic(out, result);
  await writeFileAtomic(file, JSON.stringify(body, null, 1) + '\n');
  process.stdout.write(`${canaries.length} canaries (${inserts.length} lines) inserted into ${out}; secrets in ${file}\n`);
}

async function openModel(f: Flags, flag: string): Promise<{ model: CausalLM & { dispose(): void }; tok: Tokenizer; block: number }> {
  const dir = f.required(flag, 'a model directory');
  const backend = await backendFromFlags(f);
  const model = (await loadModelDir('probe', dir, backend)) as unknown as CausalLM & { dispose(): void; config?: { block_size?: number } };
  const tok = await tokenizerOfModel(dir, model);
  return { model, tok, block: model.config?.block_size ?? 1024 };
}

function encodeOne(tok: Tokenizer, s: string, what: string): number {
  const ids = tok.encode(s);
  if (ids.length !== 1) throw new UsageError(`probe: ${what} '${s}' is ${ids.length} tokens in this model's tokenizer; the canary probe needs one token per digit and separator (a character-level model)`);
  return ids[0]!;
}

async function probeMemorisation(f: Flags): Promise<void> {
  const file = f.required('canaries', 'the canaries JSON file');
  const samples = f.number('samples', { integer: true, min: 10 }) ?? 2000;
  const exact = f.string('exact') !== 'false';
  const extractionText = f.string('extraction_text');
  const nExtract = f.number('extraction_n', { integer: true, min: 1 }) ?? 200;
  const prefixLen = f.number('prefix_len', { integer: true, min: 1 }) ?? 32;
  const length = f.number('length', { integer: true, min: 1 }) ?? 50;
  const seed = f.number('seed', { integer: true, min: 0 }) ?? 1;
  const json = f.string('json');
  const { model, tok, block } = await openModel(f, 'model');
  f.done();
  const spec = JSON.parse(await readFile(file, 'utf8')) as CanaryFile;
  const fmt: CanaryFormat = {
    prefix: tok.encode(spec.prefix), digitIds: Array.from({ length: 10 }, (_, d) => encodeOne(tok, String(d), 'the digit')),
    separator: encodeOne(tok, ' ', 'the separator'), length: spec.digits,
  };
  const g = new Generator(seed);
  const rows: Record<string, unknown>[] = [];
  const t0 = performance.now();
  for (const c of spec.canaries) {
    const ex = exact ? exposureExact(model, fmt, c.secret) : null;
    const xp = exposureExtrapolated(model, fmt, c.secret, samples, g);
    const row = {
      k: c.k, secret: c.secret.join(''), log_perplexity: xp.logPerplexity,
      ...(ex ? { rank: ex.rank, exposure_exact: ex.exposure, expanded: ex.expanded } : {}),
      exposure_skewnormal: xp.exposure, exposure_normal: xp.exposureNormal, extrapolation_capped: xp.capped, max_exposure: Math.log2(10 ** spec.digits),
    };
    rows.push(row);
    process.stdout.write(`k=${String(c.k).padStart(3)} secret ${row.secret}: log-ppl ${xp.logPerplexity.toFixed(2)}${ex ? `, rank ${ex.rank}/${ex.space}, exposure ${ex.exposure.toFixed(2)} (exact; ${ex.expanded} prefixes scored)` : ''}, extrapolated ${xp.exposure.toFixed(2)} (skew-normal) / ${xp.exposureNormal.toFixed(2)} (normal)${xp.capped ? ' (capped at log2 of the secret space: the canary lies beyond every sampled secret)' : ''}\n`);
  }
  let extraction: Record<string, unknown> | null = null;
  if (extractionText) {
    const ids = tok.encode(await readFile(extractionText, 'utf8'));
    const span = prefixLen + length;
    if (ids.length <= span) throw new UsageError(`probe: --extraction_text has ${ids.length} tokens, fewer than prefix_len + length (${span})`);
    const offsets = Array.from({ length: nExtract }, () => g.randint(ids.length - span));
    const r = extractionRate(model, ids, offsets, prefixLen, length, block);
    extraction = { ...r, prefix_len: prefixLen, length };
    process.stdout.write(`extraction: ${r.extracted}/${r.total} prefixes (${(100 * r.rate).toFixed(1)} %) continue ${length} tokens verbatim; mean verbatim run ${r.meanMatched.toFixed(1)} tokens\n`);
  }
  process.stdout.write(`(${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
  if (json) await writeFileAtomic(json, JSON.stringify({ canaries: rows, extraction }, null, 1) + '\n');
  model.dispose();
}

function windowsOf(ids: readonly number[], n: number, len: number, g: Generator): number[][] {
  if (ids.length <= len + 1) throw new UsageError(`probe: a text of ${ids.length} tokens is too short for windows of ${len}`);
  return Array.from({ length: n }, () => {
    const o = g.randint(ids.length - len - 1);
    return ids.slice(o, o + len + 1);
  });
}

async function probeMembership(f: Flags): Promise<void> {
  const members = f.required('members', 'a text the model was trained on');
  const nonmembers = f.required('nonmembers', 'a text the model was not trained on');
  const refDir = f.string('reference');
  const n = f.number('n', { integer: true, min: 2 }) ?? 500;
  const win = f.number('window', { integer: true, min: 2 }) ?? 64;
  const seed = f.number('seed', { integer: true, min: 0 }) ?? 1;
  const json = f.string('json');
  const { model, tok, block } = await openModel(f, 'model');
  const ref = refDir ? await openModel(f, 'reference') : null;
  f.done();
  if (win > block) throw new UsageError(`probe: --window ${win} exceeds the model's block size ${block}`);
  const g = new Generator(seed);
  const inW = windowsOf(tok.encode(await readFile(members, 'utf8')), n, win, g);
  const outW = windowsOf(tok.encode(await readFile(nonmembers, 'utf8')), n, win, g);
  const lin = windowLosses(model, inW);
  const lout = windowLosses(model, outW);
  const mean = (a: Float64Array): number => a.reduce((s, v) => s + v, 0) / a.length;
  const ci = (x: { estimate: number; low: number; high: number }): string => `${x.estimate.toFixed(4)} [${x.low.toFixed(4)}, ${x.high.toFixed(4)}]`;
  const lossCI = rocAucInterval(lin.map((v) => -v), lout.map((v) => -v), g);
  const aucLoss = lossCI.estimate;
  const result: Record<string, number> = { n, window: win, loss_members: mean(lin), loss_nonmembers: mean(lout), auc_loss: aucLoss, auc_loss_low: lossCI.low, auc_loss_high: lossCI.high };
  process.stdout.write(`loss: members ${mean(lin).toFixed(4)}, non-members ${mean(lout).toFixed(4)}; ROC AUC (loss threshold) ${ci(lossCI)} (95 % bootstrap)\n`);
  if (ref) {
    const rin = windowLosses(ref.model, inW);
    const rout = windowLosses(ref.model, outW);
    const ratioCI = rocAucInterval(rin.map((v, i) => v - lin[i]!), rout.map((v, i) => v - lout[i]!), g);
    Object.assign(result, { ref_loss_members: mean(rin), ref_loss_nonmembers: mean(rout), auc_ratio: ratioCI.estimate, auc_ratio_low: ratioCI.low, auc_ratio_high: ratioCI.high });
    process.stdout.write(`reference: members ${mean(rin).toFixed(4)}, non-members ${mean(rout).toFixed(4)}; ROC AUC (reference ratio) ${ci(ratioCI)} (95 % bootstrap)\n`);
    ref.model.dispose();
  }
  if (json) await writeFileAtomic(json, JSON.stringify(result, null, 1) + '\n');
  model.dispose();
}
