#!/usr/bin/env node
// Where one PPO iteration's time goes (docs/alignment.md, run 3): for a rollout of N prompts ×
// M new tokens from the experiment's GPT, times (a) sampling one response at a time with
// generate() (how rollouts were drawn before), (b) sampleResponses (all responses decoded
// together), (c) scoring with the classifier, (d) the policy and reference forwards over the
// rollout, and (e) one minibatch's forward + backward. Each timing is the median of `reps`.
// Usage (after npx tsc): ATTN_NUM_THREADS=1 node tools/ppo-profile.mjs EXP_DIR [N=32] [M=48] [reps=3]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const [dir, nArg = '32', mArg = '48', repsArg = '3'] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node tools/ppo-profile.mjs EXP_DIR (holding gpt/best, cls/best, prompts_ppo.txt) [N] [M] [reps]');
  process.exit(2);
}
const N = Number(nArg), M = Number(mArg), reps = Number(repsArg);
const L = await import('../dist/src/tasks/alignment-common.js');
const { loadScorer } = await import('../dist/src/tasks/scorers.js');
const { Generator, noGrad, tidy, sum, tensor } = await import('../dist/src/tensor/index.js');
const { generate } = await import('../dist/src/generate/index.js');
const { tokenLogProbs } = await import('../dist/src/train/alignment.js');
const { openDevice } = await import('../dist/src/backend/index.js');
const backend = await openDevice('cpu');
const pol = await L.loadPolicy(join(dir, 'gpt/best'), backend);
const ref = L.freeze((await L.loadPolicy(join(dir, 'gpt/best'), backend)).model);
const scorer = await loadScorer(join(dir, 'cls/best'), backend);
const prompts = readFileSync(join(dir, 'prompts_ppo.txt'), 'utf8').split('\n').filter((l) => l).slice(0, N);
const ids = prompts.map((p) => L.encodeText(pol.tokenizer, p));

const time = (f) => {
  const ts = [];
  let r;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    r = f();
    ts.push(performance.now() - t0);
  }
  ts.sort((a, b) => a - b);
  return { ms: ts[Math.floor(ts.length / 2)], r };
};
const rows = [];
const seq = time(() => {
  const gen = new Generator(1);
  pol.model.eval();
  return ids.map((p) => generate(pol.model, p, { maxNewTokens: M, temperature: 1, generator: new Generator(gen.nextUint32()) }).tokens);
});
rows.push(['sampling, one response at a time (generate)', seq.ms]);
const bat = time(() => L.sampleResponses(pol.model, pol.tokenizer, ids, { maxNew: M, temperature: 1, gen: new Generator(1) }));
rows.push(['sampling, all together (sampleResponses)', bat.ms]);
// Same seeds, same tokens: the two ways draw the same responses.
const same = bat.r.every((s, i) => s.response.join() === seq.r[i].join());
const texts = bat.r.map((s) => s.text);
rows.push(['scoring (classifier)', time(() => scorer.score(prompts, texts)).ms]);
const items = bat.r.map((s) => ({ prompt: s.prompt, response: s.response }));
rows.push(['policy + reference forwards (batches of 16)', time(() => L.sequenceKL(pol.model, ref, items, 16)).ms]);
pol.model.train();
const mb = L.responseBatch(items.slice(0, 16));
rows.push(['one minibatch of 16: forward + backward', time(() => tidy(() => {
  const { x, y } = L.batchTensors(mb, backend);
  const loss = sum(tokenLogProbs(L.logitsOf(pol.model, x), y));
  loss.backward();
  for (const p of pol.model.parameters()) p.grad = null;
  return 0;
})).ms]);
console.log(`PPO iteration pieces, rollout of ${N} prompts × ${M} new tokens, median of ${reps} (ms); batched == sequential tokens: ${same}`);
for (const [k, v] of rows) console.log(`${k.padEnd(48)} ${v.toFixed(0).padStart(8)}`);
console.log(`sampling speed-up: ${(seq.ms / bat.ms).toFixed(2)}x`);
