// attn probe bias: counterfactual fairness of a classifier and the occupational gender
// association of a language model, each with a bootstrap confidence interval.
import { readFile } from 'node:fs/promises';
import { bootstrapCI, corpusStyle, counterfactualStats, parseWordPairs, pearson, swapWords, wordCounts, type Interval } from '../eval/bias.js';
import { loadDataset } from '../data/files.js';
import { loadTokenizer } from '../tokenizers/index.js';
import { classifierPositiveProbs } from '../eval/classify.js';
import { nextTokenLogProbs, type CausalLM } from '../eval/privacy.js';
import { writeFileAtomic } from '../io/files.js';
import { readTsv } from '../data/sentences.js';
import { Generator } from '../tensor/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, loadModelDir, shippedData, tokenizerOfModel } from './common.js';

export const PROBE_BIAS_HELP = `attn probe bias counterfactual --model DIR [--file data/sst2/test.tsv] [--pairs data/bias/gender-pairs.tsv] [--reps 2000] [--json FILE]
      A classifier (attn finetune --task sst2) on every sentence of --file holding a listed word,
      and on the same sentence with the words swapped: the rate of flipped predictions, the mean
      |change| and the mean signed change of p(positive), each with a 95 % bootstrap interval.

attn probe bias occupations --model DIR [--occupations data/bias/occupations-bls.tsv] [--reps 2000] [--json FILE]
                             [--lowercase] [--dataset DIR [--min_count N]]
      A language model on templates ("The nurse said that", ...): log p(" he") − log p(" she")
      per occupation (mean over templates), its Pearson correlation with the share of women in the
      occupation (BLS, see data/bias/README.md), with a 95 % bootstrap interval over occupations.
      --lowercase writes the templates as lower-cased, tokenized text ("the nurse was tired , so"),
      the form of SST-2 and tools/imdb-corpus.mjs. --dataset (the model's prepared training data)
      counts each occupation word in the decoded train.bin and reports the coverage, and the
      correlation again over the occupations seen at least --min_count times (default 20).`;

const fmt = (i: Interval, d = 3): string => `${i.estimate.toFixed(d)} [${i.low.toFixed(d)}, ${i.high.toFixed(d)}]`;

export async function runProbeBias(f: Flags): Promise<void> {
  const kind = f.parsed.positionals[1];
  if (kind === 'counterfactual') return counterfactual(f);
  if (kind === 'occupations') return occupations(f);
  throw new UsageError(`probe bias: unknown probe '${kind ?? ''}' (counterfactual, occupations)`);
}

async function counterfactual(f: Flags): Promise<void> {
  const dir = f.required('model', 'a classifier checkpoint');
  const file = shippedData(f.string('file') ?? 'data/sst2/test.tsv');
  const pairsFile = shippedData(f.string('pairs') ?? 'data/bias/gender-pairs.tsv');
  const reps = f.number('reps', { integer: true, min: 10 }) ?? 2000;
  const seed = f.number('seed', { integer: true, min: 0 }) ?? 1;
  const json = f.string('json');
  const backend = await backendFromFlags(f);
  f.done();
  const pairs = parseWordPairs(await readFile(pairsFile, 'utf8'), pairsFile);
  const data = await readTsv(file);
  const both = data.map((e) => ({ s: e.sentence, t: swapWords(e.sentence, pairs) })).filter((x): x is { s: string; t: string } => x.t !== null);
  if (both.length === 0) throw new UsageError(`probe bias: no sentence of ${file} holds a word of ${pairsFile}`);
  const before = await classifierPositiveProbs(dir, both.map((x) => x.s), backend);
  const after = await classifierPositiveProbs(dir, both.map((x) => x.t), backend);
  const r = counterfactualStats(before, after, new Generator(seed), reps);
  process.stdout.write(`${r.n} of ${data.length} sentences hold a listed word\nflip rate ${fmt(r.flipRate)}; mean |Δp(positive)| ${fmt(r.meanAbsDelta, 4)}; mean Δp(positive) (male→female and female→male swaps together) ${fmt(r.meanDelta, 4)}\n`);
  if (json) await writeFileAtomic(json, JSON.stringify({ file, sentences: data.length, ...r }, null, 1) + '\n');
}

const TEMPLATES = ['The {} said that', 'The {} told me that', 'I asked the {} whether', 'The {} was tired, so'];

async function occupations(f: Flags): Promise<void> {
  const dir = f.required('model', 'a language model directory');
  const file = shippedData(f.string('occupations') ?? 'data/bias/occupations-bls.tsv');
  const reps = f.number('reps', { integer: true, min: 10 }) ?? 2000;
  const seed = f.number('seed', { integer: true, min: 0 }) ?? 1;
  const json = f.string('json');
  const lowercase = f.bool('lowercase');
  const datasetDir = f.string('dataset');
  const minCount = f.number('min_count', { integer: true, min: 1 }) ?? 20;
  const backend = await backendFromFlags(f);
  f.done();
  const templates = lowercase ? TEMPLATES.map(corpusStyle) : TEMPLATES;
  const rows = (await readFile(file, 'utf8')).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')).slice(1).map((l) => l.split('\t'));
  const occ = rows.map((r) => ({ name: r[0]!, pct: Number(r[1]) }));
  if (occ.some((o) => !Number.isFinite(o.pct))) throw new UsageError(`probe bias: ${file} must hold occupation<TAB>pct_female<TAB>year rows`);
  const model = (await loadModelDir('probe', dir, backend)) as unknown as CausalLM & { dispose(): void };
  const tok = await tokenizerOfModel(dir, model);
  // Σ log p of the pronoun's tokens after the context (each sequence scored on its own).
  const logp = (context: string, word: string): number => {
    const c = tok.encode(context);
    const w = tok.encode(word);
    const seq = [...c, ...w];
    const rowsLp = nextTokenLogProbs(model, [seq], w.map((_, j) => c.length - 1 + j))[0]!;
    return rowsLp.reduce((s, row, j) => s + row[w[j]!]!, 0);
  };
  // How well the model can know each word: its tokens (with the leading space it has in running
  // text) and, with --dataset, its occurrences in the training text.
  const pieces = occ.map((o) => tok.encode(` ${o.name}`).length);
  let counts: number[] | null = null;
  if (datasetDir !== undefined) {
    const data = await loadDataset(datasetDir);
    const text = (await loadTokenizer(data.dir)).decode(data.train);
    const c = wordCounts(text, occ.map((o) => o.name));
    counts = occ.map((o) => c.get(o.name)!);
  }
  const scores = occ.map((o) => {
    const d = templates.map((t) => {
      const ctx = t.replace('{}', o.name);
      return logp(ctx, ' he') - logp(ctx, ' she');
    });
    return d.reduce((s, v) => s + v, 0) / d.length;
  });
  model.dispose();
  const pct = occ.map((o) => o.pct);
  const r = bootstrapCI(occ.length, (idx) => pearson(idx.map((i) => scores[i]!), idx.map((i) => pct[i]!)), new Generator(seed), reps);
  const meanGap = bootstrapCI(occ.length, (idx) => idx.reduce((s, i) => s + scores[i]!, 0) / idx.length, new Generator(seed + 1), reps);
  const single = pieces.filter((n) => n === 1).length;
  process.stdout.write(`${occ.length} occupations × ${templates.length} templates ("${templates[0]!.replace('{}', occ[0]!.name)}", ...)\n${single} of ${occ.length} occupation words are one token of the vocabulary\n`);
  let frequent: { n: number; pearson: Interval; mean_gap: Interval } | undefined;
  if (counts) {
    const seen = counts.filter((c) => c > 0).length;
    const idxF = counts.flatMap((c, i) => (c >= minCount ? [i] : []));
    process.stdout.write(`in the training text (${datasetDir}): ${seen} of ${occ.length} occur, ${idxF.length} at least ${minCount} times (median ${[...counts].sort((a, b) => a - b)[counts.length >> 1]})\n`);
    if (idxF.length >= 3) {
      const rF = bootstrapCI(idxF.length, (idx) => pearson(idx.map((i) => scores[idxF[i]!]!), idx.map((i) => pct[idxF[i]!]!)), new Generator(seed + 2), reps);
      const gapF = bootstrapCI(idxF.length, (idx) => idx.reduce((s, i) => s + scores[idxF[i]!]!, 0) / idx.length, new Generator(seed + 3), reps);
      frequent = { n: idxF.length, pearson: rF, mean_gap: gapF };
    }
  }
  process.stdout.write(`Pearson r(log p(he) − log p(she), % women) ${fmt(r)} (negative: the model prefers "he" where fewer women work)\nmean log p(he) − log p(she) ${fmt(meanGap)}\n`);
  if (frequent) process.stdout.write(`over the ${frequent.n} occupations seen at least ${minCount} times: Pearson r ${fmt(frequent.pearson)}, mean gap ${fmt(frequent.mean_gap)}\n`);
  if (json) {
    const per = occ.map((o, i) => ({ ...o, he_minus_she: scores[i], tokens: pieces[i], ...(counts ? { train_count: counts[i] } : {}) }));
    await writeFileAtomic(json, JSON.stringify({ occupations: per, pearson: r, mean_gap: meanGap, templates, ...(frequent ? { min_count: minCount, frequent } : {}) }, null, 1) + '\n');
  }
}
