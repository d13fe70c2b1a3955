// Compares two training runs' out directories (after npx tsc): per-step train losses from
// metrics.jsonl (largest relative difference, and each step's) and the final weights in last/
// (largest elementwise absolute difference, the metric test/distributed.test.ts asserts, then the
// TOP tensors by it with their count above 1e-5 and ||a − b|| / ||a||).
//   node tools/compare-runs.mjs REF_DIR OTHER_DIR [TOP]
import { readFileSync } from 'node:fs';
import { loadCheckpoint } from '../dist/src/io/checkpoint.js';

const [ref, got, top = '5'] = process.argv.slice(2);
if (!ref || !got) {
  console.error('usage: node tools/compare-runs.mjs REF_DIR OTHER_DIR [TOP]');
  process.exit(2);
}
const losses = (d) => new Map(readFileSync(`${d}/metrics.jsonl`, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
  .filter((r) => r.train_loss !== undefined).map((r) => [r.step, r.train_loss]));
const a = losses(ref);
const b = losses(got);
const perStep = [...a].filter(([s]) => b.has(s)).map(([s, v]) => Math.abs(v - b.get(s)) / Math.abs(v));
const A = await loadCheckpoint(`${ref}/last`);
const B = await loadCheckpoint(`${got}/last`);
const rows = [];
for (const [name, t] of A.tensors) {
  const u = B.tensors.get(name);
  if (!u) throw new Error(`${got}/last has no ${name}`);
  let worst = 0, above = 0, d2 = 0, n2 = 0;
  for (let i = 0; i < t.data.length; i++) {
    const d = Math.abs(t.data[i] - u.data[i]);
    if (d > worst) worst = d;
    if (d > 1e-5) above++;
    d2 += d * d;
    n2 += t.data[i] * t.data[i];
  }
  rows.push({ name, worst, above, normRel: Math.sqrt(d2 / n2) });
}
rows.sort((x, y) => y.worst - x.worst);
console.log(`losses: largest relative difference ${Math.max(0, ...perStep).toExponential(2)}; per step ${perStep.map((x) => x.toExponential(1)).join(' ')}`);
console.log(`weights: largest absolute difference ${rows[0].worst.toExponential(2)} (${rows[0].name})`);
for (const r of rows.slice(0, Number(top))) console.log(`  ${r.name}: max abs ${r.worst.toExponential(2)}, ${r.above} elements above 1e-5, norm-relative ${r.normRel.toExponential(2)}`);
