// Compares two training runs' out directories (after npx tsc): per-step train losses from
// metrics.jsonl (largest relative difference, and each step's) and the final weights in last/
// (largest elementwise absolute difference, the metric test/distributed.test.ts asserts, then the
// TOP tensors by it with their count above 1e-5 and ||a − b|| / ||a||), and two relative
// summaries: the largest norm-relative difference over tensors, max ||a − b|| / ||a||, and the
// largest elementwise relative one, max |a − b| / |a| over the elements with a ≠ 0 (dominated
// by weights near zero, so also its 99.9th percentile and the count above 1e-5).
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
const rel = [];
let relMax = { v: 0, name: '', a: 0, b: 0 };
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
    if (t.data[i] !== 0) {
      const r = d / Math.abs(t.data[i]);
      rel.push(r);
      if (r > relMax.v) relMax = { v: r, name, a: t.data[i], b: u.data[i] };
    }
  }
  rows.push({ name, worst, above, normRel: Math.sqrt(d2 / n2) });
}
rows.sort((x, y) => y.worst - x.worst);
console.log(`losses: largest relative difference ${Math.max(0, ...perStep).toExponential(2)}; per step ${perStep.map((x) => x.toExponential(1)).join(' ')}`);
console.log(`weights: largest absolute difference ${rows[0].worst.toExponential(2)} (${rows[0].name})`);
const byNorm = rows.reduce((x, y) => (y.normRel > x.normRel ? y : x));
console.log(`weights: largest norm-relative difference ${byNorm.normRel.toExponential(2)} (${byNorm.name})`);
const sorted = Float64Array.from(rel).sort();
const p999 = sorted[Math.min(sorted.length - 1, Math.floor(0.999 * sorted.length))] ?? 0;
const over = sorted.length - sorted.findIndex((r) => r > 1e-5);
console.log(`weights: largest elementwise relative difference ${relMax.v.toExponential(2)} (${relMax.name}: ${relMax.b} vs ${relMax.a}); 99.9th percentile ${p999.toExponential(2)}; ${sorted.findIndex((r) => r > 1e-5) < 0 ? 0 : over} of ${sorted.length} elements above 1e-5`);
for (const r of rows.slice(0, Number(top))) console.log(`  ${r.name}: max abs ${r.worst.toExponential(2)}, ${r.above} elements above 1e-5, norm-relative ${r.normRel.toExponential(2)}`);
