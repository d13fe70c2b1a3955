// attn probe icl induction|regression|few-shot: the in-context-learning probes of issue 21.
//   induction   trains attention-only Transformers (1 and 2 layers by default) and follows the
//               in-context-learning score and every head's prefix-matching, previous-token and
//               copying scores over training (Olsson et al. 2022);
//   regression  trains a Transformer on in-context linear regression prompts and sets its error
//               against the number of examples beside least squares, 3-NN and averaging (Garg et al. 2022);
//   few-shot    scores language-model checkpoints on SST-2 defined only in the prompt, k = 0, 1, 4, 16.
// Every run is the one training loop (metrics.jsonl, loss.svg, checkpoints under --out).
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { linePlotSvg, type PlotSeries } from '../eval/plot.js';
import { writeFileAtomic } from '../io/files.js';
import { FIELDS, parseFieldValue } from '../train/config.js';
import { runTraining, type LoopHooks } from '../train/loop.js';
import { inductionTask, type InductionProbe } from '../tasks/induction.js';
import { baselinePredictions, errorByExamples, regressionEvalSet, regressionTask, type BaselineName, type RegressionCurriculum } from '../tasks/icl-regression.js';
import { answerStrings, fewShotAccuracy, readLabeledTsv, SST2_TEMPLATE, type FewShotResult } from '../eval/few-shot.js';
import { iclWindows } from '../eval/icl.js';
import { BpeTokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, loadModelDir, requireDir, tokenizerOfModel } from './common.js';

export const PROBE_ICL_HELP = `attn probe icl induction|regression|few-shot [options]

induction: trains attention-only Transformers (no MLPs) on a prepared dataset (Tiny Shakespeare
characters by default) and evaluates every --eval_interval updates: the in-context-learning score
(mean loss over the last T/16 positions minus the mean loss around position T/10, T = block_size),
and per head the prefix-matching and previous-token scores on random tokens repeated twice and the
copying score of its OV circuit. Writes DIR/L<n>/ (the run), DIR/induction.json and the plots
DIR/icl-score.svg, DIR/prefix-matching.svg, DIR/loss-by-position.svg, DIR/heads-L<n>.svg.
  --out DIR              (default out/icl/induction)
  --layers LIST          model depths, one run each (default 1,2)
  --repeat_fraction P    share of training rows replaced by a random segment of frequent tokens
                         repeated periodically (period 8..48), where copying always pays (default 0)
  --repeat_length N      random tokens per copy in the probe (default min(50, tokens with ≥ 0.1 % of the training text − 1, block_size/2))

regression: a Transformer (read-in, pre-norm blocks with MLPs, read-out) on prompts of --n_points
pairs (x, w·x), x and w ~ N(0, I_d), trained to predict every y from the pairs before it; then the
squared error / d against the number of in-context examples on 1024 fresh prompts, beside least
squares, 3-nearest-neighbours and averaging. Writes DIR/regression.json, DIR/regression.svg and
DIR/regression-training.svg (the error at k = 1, d, 2d, n − 1 over training).
  --out DIR              (default out/icl/regression)
  --d N                  dimension of x (default 5)
  --n_points N           pairs per prompt (default 4·d)
  --curriculum_dims N    curriculum: train first with N effective dimensions (x's other coordinates
                         0), growing by --curriculum_dims_inc (default 1) every --curriculum_interval
                         updates (default 500) up to d; Garg et al. start at d/4
  --curriculum_points N  curriculum: train first on prompts of N pairs, growing by
                         --curriculum_points_inc (default 2) at the same interval up to --n_points.
                         Either flag turns the curriculum on (the other then starts full); give the
                         same flags again with --init_from resume

  Both: any training field of 'attn train' by name (--max_iters, --eval_interval, --n_layer,
  --n_head, --n_embd, --block_size, --batch_size, --learning_rate, --seed, --dataset, --max_minutes,
  --device, --threads, ...), over the probe's defaults (induction: 4 heads, 64 wide, context 256,
  batch 16, lr 1e-3, 2000 updates, eval every 100; regression: 4 layers, 4 heads, 64 wide,
  batch 64, lr 3e-4, 4000 updates, eval every 250). --init_from resume continues the runs in --out.

few-shot: accuracy of language models on SST-2 given only in the prompt, k demonstrations drawn
at random per query from the pool; the answer is the label word with the higher log-probability.
Writes DIR/few-shot.json, DIR/few-shot.svg (accuracy against k) and DIR/emergence.svg (against N).
  --models DIR,DIR       checkpoint directories (any model attn loads; required)
  --out DIR              (default out/icl/few-shot)
  --k LIST               demonstrations (default 0,1,4,16); those that do not fit the context are dropped
  --queries FILE         labelled sentences, TSV (default data/sst2/test.tsv: the GLUE dev set, 872)
  --pool FILE            demonstrations, TSV (default data/sst2/train.tsv)
  --max_demo_words N     only pool sentences of at most N words (default 12), so 16 fit a short context
  --limit N              score only the first N queries (default all)
  --template T           with {text} and {label} (default "${SST2_TEMPLATE.replace('\n', '\\n')}")
  --labels A,B           label words, label 0 first (default negative,positive)
  --seed N               draws the demonstrations (default 1234)
  --calibrate            also answer with contextual calibration (Zhao et al. 2021): each label's
                         probability divided by its mean after content-free queries ("N/A", "",
                         "[MASK]") with the same demonstrations; 4 scorings per query
  --recall               in-context recall: one of the k demonstrations is the query itself with its
                         label, so the answer can be copied from the prompt (induction, Olsson et al.
                         2022); k = 0 is then the plain task
  --device D, --threads N`;

const TRAIN_FIELDS = new Set(Object.keys(FIELDS));

/** The training fields among the flags not read yet, typed by the lm vocabulary. */
function trainingFields(f: Flags): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of f.rest()) {
    if (!TRAIN_FIELDS.has(k)) throw new UsageError(`probe icl: unknown option --${k} (see 'attn probe icl --help')`);
    out[k] = parseFieldValue(k, v, 'lm');
    f.string(k);
  }
  return out;
}

function intList(f: Flags, name: string, dflt: number[]): number[] {
  const s = f.string(name);
  if (s === undefined) return dflt;
  return s.split(',').map((p) => {
    const n = Number(p.trim());
    if (p.trim() === '' || !Number.isInteger(n) || n < 0) throw new UsageError(`probe icl: --${name} needs non-negative integers separated by commas, got '${s}'`);
    return n;
  });
}

/** Progress on stderr: one line per evaluation. */
function hooksFor(label: string, extra: (r: Record<string, unknown>) => string): LoopHooks {
  return {
    onMessage: (t) => process.stderr.write(`[${label}] ${t}\n`),
    onEval: (r) => process.stderr.write(`[${label}] step ${r.step}: val ${r.val_loss.toFixed(4)}${extra(r as unknown as Record<string, unknown>)} (${r.elapsed_s.toFixed(0)} s)\n`),
  };
}

const fmt = (v: number, d = 3): string => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');

// ---------------------------------------------------------------- induction heads

async function runInduction(f: Flags): Promise<void> {
  const out = f.string('out') ?? 'out/icl/induction';
  const layers = intList(f, 'layers', [1, 2]);
  const repeatLength = f.number('repeat_length', { integer: true, min: 2 });
  const repeatFraction = f.number('repeat_fraction', { min: 0, max: 1 }) ?? 0;
  const fields = trainingFields(f);
  f.done();
  const runs: { layers: number; tokensPerStep: number; probes: { step: number; probe: InductionProbe }[]; blockSize: number }[] = [];
  for (const L of layers) {
    if (L < 1) throw new UsageError('probe icl: --layers must be positive');
    const probes: { step: number; probe: InductionProbe }[] = [];
    const task = inductionTask({ repeatLength, repeatFraction, onProbe: (step, probe) => probes.push({ step, probe }) });
    const res = await runTraining(task, { ...fields, n_layer: L, out_dir: join(out, `L${L}`) }, hooksFor(`${L}L`, (r) => ` icl ${fmt(r['icl_score'] as number)} max-pm ${fmt(r['max_prefix_matching'] as number)} rep2 ${fmt(r['repeat_loss_second'] as number, 2)}`));
    runs.push({ layers: L, tokensPerStep: res.config.batch_size * res.config.block_size * res.config.gradient_accumulation_steps, probes, blockSize: res.config.block_size });
  }
  const T = runs[0]?.blockSize ?? 0;
  const w = iclWindows(T);
  const summary = runs.map((r) => ({
    layers: r.layers,
    tokens_per_step: r.tokensPerStep,
    icl_windows: w,
    evaluations: r.probes.map(({ step, probe: p }) => ({
      step, tokens: step * r.tokensPerStep, icl_score: p.icl_score, repeat_loss: p.repeatLoss,
      prefix_matching: p.prefixMatching, previous_token: p.previousToken, copying: p.copying,
    })),
    final_loss_by_position: r.probes.at(-1)?.probe.lossByPosition ?? [],
  }));
  await mkdir(out, { recursive: true });
  await writeFileAtomic(join(out, 'induction.json'), `${JSON.stringify(summary, null, 1)}\n`);
  const series = (key: (p: InductionProbe) => number, name: (L: number) => string): PlotSeries[] =>
    runs.map((r, i) => ({ name: name(r.layers), points: r.probes.filter((p) => p.step > 0).map(({ step, probe }) => [step * r.tokensPerStep, key(probe)] as const), markers: false, color: ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e'][i % 4] }));
  const xLabel = 'training tokens';
  await writeFileAtomic(join(out, 'icl-score.svg'), linePlotSvg(series((p) => p.icl_score, (L) => `${L}-layer attention-only`), {
    title: `ICL score: loss at positions ${w.late[0]}..${w.late[1] - 1} minus loss at ${w.early[0]}..${w.early[1] - 1}`, xLabel, yLabel: 'nats', logX: true,
  }));
  await writeFileAtomic(join(out, 'prefix-matching.svg'), linePlotSvg([
    ...series((p) => Math.max(...p.prefixMatching.flat()), (L) => `${L}L: best head's prefix matching`),
    ...series((p) => Math.max(...p.previousToken.flat()), (L) => `${L}L: best head's previous token`).map((s) => ({ ...s, dashed: true })),
  ], { title: 'head scores on repeated random tokens', xLabel, yLabel: 'attention', logX: true }));
  await writeFileAtomic(join(out, 'loss-by-position.svg'), linePlotSvg(runs.map((r, i) => ({
    name: `${r.layers}L`, markers: false, color: ['#1f77b4', '#d62728', '#2ca02c'][i % 3],
    points: (r.probes.at(-1)?.probe.lossByPosition ?? []).map((v, t) => [t + 1, v] as const),
  })), { title: 'validation loss by context position (end of training)', xLabel: 'token index', yLabel: 'nats', logX: true }));
  for (const r of runs) {
    const last = r.probes.at(-1)?.probe;
    if (!last) continue;
    const heads: PlotSeries[] = [];
    last.prefixMatching.forEach((hs, l) => hs.forEach((_, h) => heads.push({
      name: `layer ${l} head ${h}`, markers: false, dashed: l === 0,
      points: r.probes.filter((p) => p.step > 0).map(({ step, probe }) => [step * r.tokensPerStep, probe.prefixMatching[l]![h]!] as const),
    })));
    await writeFileAtomic(join(out, `heads-L${r.layers}.svg`), linePlotSvg(heads, { title: `${r.layers}-layer model: prefix-matching score of each head`, xLabel, yLabel: 'attention', logX: true }));
  }
  // The table: at the end of each run.
  console.log('layers  step  tokens      val_loss  icl_score  max_prefix_matching  max_previous_token  repeat_loss(1st, 2nd)');
  for (const r of summary) {
    const e = r.evaluations.at(-1)!;
    const loss = r.final_loss_by_position.reduce((s, v) => s + v, 0) / r.final_loss_by_position.length;
    console.log(`${String(r.layers).padEnd(7)} ${String(e.step).padEnd(5)} ${String(e.tokens).padEnd(11)} ${fmt(loss).padEnd(9)} ${fmt(e.icl_score).padEnd(10)} ${fmt(Math.max(...e.prefix_matching.flat())).padEnd(20)} ${fmt(Math.max(...e.previous_token.flat())).padEnd(19)} ${fmt(e.repeat_loss[0], 2)}, ${fmt(e.repeat_loss[1], 2)}`);
  }
  console.log(`wrote ${join(out, 'induction.json')} and the plots in ${out}`);
}

// ---------------------------------------------------------------- in-context regression

async function runRegression(f: Flags): Promise<void> {
  const out = f.string('out') ?? 'out/icl/regression';
  const d = f.number('d', { integer: true, min: 1 }) ?? 5;
  const n = f.number('n_points', { integer: true, min: 2 }) ?? 4 * d;
  const dimsStart = f.number('curriculum_dims', { integer: true, min: 1, max: d });
  const pointsStart = f.number('curriculum_points', { integer: true, min: 1, max: n });
  const dimsInc = f.number('curriculum_dims_inc', { integer: true, min: 0 }) ?? 1;
  const pointsInc = f.number('curriculum_points_inc', { integer: true, min: 0 }) ?? 2;
  const interval = f.number('curriculum_interval', { integer: true, min: 1 }) ?? 500;
  const curriculum: RegressionCurriculum | undefined = dimsStart === undefined && pointsStart === undefined ? undefined
    : { dims_start: dimsStart ?? d, dims_inc: dimsInc, points_start: pointsStart ?? n, points_inc: pointsInc, interval };
  const fields = trainingFields(f);
  f.done();
  let last: { step: number; errors: number[] } | null = null;
  const task = regressionTask({ d, n_points: n, curriculum, onEval: (step, errors) => (last = { step, errors }) });
  const res = await runTraining(task, { ...fields, out_dir: out }, hooksFor('regression', (r) => [d, 2 * d, n - 1].filter((k, i, a) => k < n && a.indexOf(k) === i).map((k) => ` err(k=${k}) ${fmt(r[`err_k${k}`] as number)}`).join('')));
  const final = last as { step: number; errors: number[] } | null;
  if (!final) throw new Error('regression: the run ended without an evaluation');
  const evalSet = regressionEvalSet(res.config.seed, n, d);
  const names: BaselineName[] = ['least_squares', 'nearest_3', 'averaging', 'zero'];
  const curves: Record<string, number[]> = { transformer: final.errors };
  for (const b of names) curves[b] = errorByExamples(baselinePredictions(b, evalSet), evalSet);
  await writeFileAtomic(join(out, 'regression.json'), `${JSON.stringify({ d, n_points: n, eval_prompts: evalSet.B, step: final.step, ...(curriculum ? { curriculum } : {}), normalised_squared_error: curves }, null, 1)}\n`);
  const label: Record<string, string> = { transformer: 'Transformer', least_squares: 'least squares', nearest_3: '3-nearest neighbours', averaging: 'averaging', zero: 'zero (predict 0)' };
  const colors: Record<string, string> = { transformer: '#000000', least_squares: '#ff7f0e', nearest_3: '#2ca02c', averaging: '#1f77b4', zero: '#7f7f7f' };
  await writeFileAtomic(join(out, 'regression.svg'), linePlotSvg(Object.entries(curves).map(([k, v]) => ({
    name: label[k]!, color: colors[k], dashed: k === 'zero', points: v.map((e, i) => [i, e] as const),
  })), { title: `in-context linear regression, d = ${d}: squared error / d`, xLabel: 'in-context examples', yLabel: 'squared error / d' }));
  // The error at a few prompt lengths over training, from the run's evaluations (log scale: the
  // interesting part is how close to 0 it gets for k ≥ d).
  const evals = (await readFile(join(out, 'metrics.jsonl'), 'utf8')).split('\n').filter((l) => l.includes('"err_k0"')).map((l) => JSON.parse(l) as Record<string, number>);
  const ks = [1, d, 2 * d, n - 1].filter((k, i, a) => k < n && a.indexOf(k) === i);
  await writeFileAtomic(join(out, 'regression-training.svg'), linePlotSvg(ks.map((k, i) => ({
    name: `k = ${k}`, color: ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728'][i], points: evals.map((r) => [r['step']!, r[`err_k${k}`]!] as const),
  })), { title: `in-context linear regression, d = ${d}: error over training`, xLabel: 'update', yLabel: 'squared error / d', logY: true }));
  console.log(`k    ${Object.keys(curves).map((k) => k.padEnd(14)).join(' ')}`);
  for (let k = 0; k < n; k++) console.log(`${String(k).padEnd(4)} ${Object.values(curves).map((v) => fmt(v[k]!, 4).padEnd(14)).join(' ')}`);
  console.log(`wrote ${join(out, 'regression.json')}, ${join(out, 'regression.svg')} and ${join(out, 'regression-training.svg')}`);
}

// ---------------------------------------------------------------- few-shot prompting

async function runFewShot(f: Flags): Promise<void> {
  const modelsFlag = f.required('models', 'checkpoint directories separated by commas');
  const out = f.string('out') ?? 'out/icl/few-shot';
  const ks = intList(f, 'k', [0, 1, 4, 16]);
  const queriesFile = f.string('queries') ?? 'data/sst2/test.tsv';
  const poolFile = f.string('pool') ?? 'data/sst2/train.tsv';
  const maxWords = f.number('max_demo_words', { integer: true, min: 1 }) ?? 12;
  const limit = f.number('limit', { integer: true, min: 1 });
  const template = (f.string('template') ?? SST2_TEMPLATE).replace(/\\n/g, '\n');
  const labels = (f.string('labels') ?? 'negative,positive').split(',');
  const seed = f.number('seed', { integer: true, min: 0 }) ?? 1234;
  const calibrate = f.bool('calibrate');
  const recall = f.bool('recall');
  const backend = await backendFromFlags(f);
  f.done();
  if (labels.length < 2 || labels.some((l) => l.trim() === '')) throw new UsageError('probe icl few-shot: --labels needs at least two non-empty words');
  const allQueries = readLabeledTsv(await readFile(queriesFile, 'utf8'), queriesFile);
  const queries = limit ? allQueries.slice(0, limit) : allQueries;
  const pool = readLabeledTsv(await readFile(poolFile, 'utf8'), poolFile).filter((e) => e.text.split(/\s+/).length <= maxWords && e.label < labels.length);
  for (const q of queries) if (q.label >= labels.length) throw new Error(`${queriesFile}: label ${q.label} has no label word (--labels ${labels.join(',')})`);
  const majority = Math.max(...labels.map((_, l) => queries.filter((q) => q.label === l).length)) / queries.length;
  const rows: (FewShotResult & { model: string; params: number })[] = [];
  process.stderr.write(`few-shot: ${queries.length} queries, a pool of ${pool.length} demonstrations of ≤ ${maxWords} words; answers ${answerStrings({ template, labels }).map((s) => JSON.stringify(s)).join(' / ')}\n`);
  const dirs = modelsFlag.split(',').map((s) => s.trim()).filter(Boolean);
  // Every directory checked before the first is scored (a typo in the last should not cost minutes).
  for (const dir of dirs) if (!dir.endsWith('.gguf')) await requireDir('probe icl few-shot', 'models', dir);
  for (const dir of dirs) {
    const model = await loadModelDir('probe icl', dir, backend);
    const tok = await tokenizerOfModel(dir, model);
    const encode = (s: string): number[] => (tok instanceof BpeTokenizer ? tok.encode(s, { disallowedSpecial: [] }) : tok.encode(s));
    const params = model.numParameters();
    for (const k of ks) {
      const t0 = Date.now();
      const r = fewShotAccuracy(model, backend, encode, queries, pool, { k, template, separator: '\n\n', labels, seed, calibrate, recall });
      rows.push({ model: dir, params, ...r });
      const cal = r.calibrated ? `, calibrated ${fmt(r.calibrated.accuracy)}` : '';
      process.stderr.write(`  ${dir} (${params} parameters) k=${k}: accuracy ${fmt(r.accuracy)}${cal} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
    }
    model.dispose();
  }
  await mkdir(out, { recursive: true });
  await writeFileAtomic(join(out, 'few-shot.json'), `${JSON.stringify({ queries: queriesFile, n: queries.length, majority_class: majority, template, labels, seed, max_demo_words: maxWords, calibrate, recall, rows }, null, 1)}\n`);
  const byModel = [...new Set(rows.map((r) => r.model))];
  await writeFileAtomic(join(out, 'few-shot.svg'), linePlotSvg([
    ...byModel.map((m) => ({ name: `${m} (${rows.find((r) => r.model === m)!.params} params)`, points: rows.filter((r) => r.model === m).map((r) => [r.k, r.accuracy] as const) })),
    ...(calibrate ? byModel.map((m) => ({ name: `${m}, calibrated`, dashed: true, points: rows.filter((r) => r.model === m).map((r) => [r.k, r.calibrated!.accuracy] as const) })) : []),
    { name: 'majority class', dashed: true, markers: false, color: '#7f7f7f', points: [[Math.min(...ks), majority], [Math.max(...ks), majority]] },
  ], { title: `${recall ? 'in-context recall of SST-2 labels' : 'SST-2 defined in the prompt'}: accuracy against k`, xLabel: 'demonstrations k', yLabel: 'accuracy' }));
  await writeFileAtomic(join(out, 'emergence.svg'), linePlotSvg([
    ...ks.map((k) => ({ name: `k = ${k}`, points: rows.filter((r) => r.k === k).map((r) => [r.params, r.accuracy] as const).sort((a, b) => a[0] - b[0]) })),
    ...(calibrate ? ks.map((k) => ({ name: `k = ${k}, calibrated`, dashed: true, points: rows.filter((r) => r.k === k).map((r) => [r.params, r.calibrated!.accuracy] as const).sort((a, b) => a[0] - b[0]) })) : []),
    { name: 'majority class', dashed: true, markers: false, color: '#7f7f7f', points: [[Math.min(...rows.map((r) => r.params)), majority], [Math.max(...rows.map((r) => r.params)), majority]] },
  ], { title: `${recall ? 'in-context recall of SST-2 labels' : 'SST-2 in the prompt'}: accuracy against model size`, xLabel: 'parameters', yLabel: 'accuracy', logX: true }));
  const se = (p: number, n: number): number => Math.sqrt((p * (1 - p)) / n);
  console.log(`majority class: ${fmt(majority)} of ${queries.length} (one standard error of an accuracy near 0.5: ±${fmt(se(0.5, queries.length))})`);
  const w = Math.max(29, ...rows.map((r) => r.model.length));
  console.log(`${'model'.padEnd(w)} params      k   accuracy  predicted_positive  mean_shots_fitted${calibrate ? '  calibrated  calibrated_positive' : ''}`);
  for (const r of rows) {
    const cal = r.calibrated ? `  ${fmt(r.calibrated.accuracy).padEnd(10)}  ${fmt(r.calibrated.predicted_1)}` : '';
    console.log(`${r.model.padEnd(w)} ${String(r.params).padEnd(11)} ${String(r.k).padEnd(3)} ${fmt(r.accuracy).padEnd(9)} ${fmt(r.predicted_1).padEnd(19)} ${fmt(r.mean_shots, 1).padEnd(17)}${cal}`);
  }
  console.log(`wrote ${join(out, 'few-shot.json')}, few-shot.svg and emergence.svg`);
}

export async function runProbeIcl(f: Flags): Promise<void> {
  const part = f.parsed.positionals[1];
  if (f.parsed.positionals.length > 2) throw new UsageError(`probe icl: unexpected argument '${f.parsed.positionals[2]}'`);
  if (part === 'induction') return runInduction(f);
  if (part === 'regression') return runRegression(f);
  if (part === 'few-shot') return runFewShot(f);
  throw new UsageError(`probe icl: ${part === undefined ? 'missing part' : `unknown part '${part}'`} (induction, regression or few-shot)`);
}
