#!/usr/bin/env node
// The occupational probe along training, without and with counterfactual data augmentation
// (scripts/lm-bias-experiment.sh): reads WORKDIR/{lm,lm_cda}/snap/iter-*/{ppl,occ}.json and
// writes a markdown table, the comparison at equal validation loss, a JSON summary and two SVG
// plots (the he–she gap and Pearson r against validation loss).
//   npm run build && node tools/lm-bias-table.mjs WORKDIR docs/figures/bias [FIRST_LATE_UPDATE]
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { linePlotSvg } from '../dist/src/eval/plot.js';

const [W, OUT, LATE_ARG] = process.argv.slice(2);
if (!W || !OUT) {
  console.error('usage: node tools/lm-bias-table.mjs WORKDIR OUT_DIR [FIRST_LATE_UPDATE (1000)]');
  process.exit(2);
}
const RUNS = [['lm', 'no CDA'], ['lm_cda', 'with CDA']];
const load = (run) => {
  const dir = join(W, run, 'snap');
  return readdirSync(dir).filter((d) => existsSync(join(dir, d, 'occ.json')) && existsSync(join(dir, d, 'ppl.json'))).sort().map((d) => {
    const occ = JSON.parse(readFileSync(join(dir, d, 'occ.json'), 'utf8'));
    const ppl = JSON.parse(readFileSync(join(dir, d, 'ppl.json'), 'utf8'));
    return { step: Number(d.slice(5)), nll: ppl.nll, gap: occ.mean_gap, r: occ.pearson, freq: occ.frequent, minCount: occ.min_count };
  });
};
const data = Object.fromEntries(RUNS.map(([run]) => [run, load(run)]));
const f3 = (x) => (x >= 0 ? '+' : '−') + Math.abs(x).toFixed(3);
const ci = (i) => `${f3(i.estimate)} [${f3(i.low)}, ${f3(i.high)}]`;
const lines = ['| run | update | val loss (120k tokens) | mean log p(he) − log p(she) | Pearson r, 60 occupations | Pearson r, frequent occupations |', '| --- | ---: | ---: | --- | --- | --- |'];
for (const [run, name] of RUNS) {
  for (const s of data[run]) lines.push(`| ${name} | ${s.step} | ${s.nll.toFixed(4)} | ${ci(s.gap)} | ${ci(s.r)} | ${s.freq ? `${ci(s.freq.pearson)} (n = ${s.freq.n})` : '–'} |`);
}
// Equal validation loss: the worse of the two runs' best losses; each run's figures are read at
// it by linear interpolation between the two snapshots that bracket it (nearest when none does).
const level = Math.max(...RUNS.map(([run]) => Math.min(...data[run].map((s) => s.nll))));
const at = (snaps, get) => {
  for (let i = 1; i < snaps.length; i++) {
    const a = snaps[i - 1], b = snaps[i];
    if ((a.nll - level) * (b.nll - level) <= 0 && a.nll !== b.nll) {
      const t = (a.nll - level) / (a.nll - b.nll);
      return { value: get(a) + t * (get(b) - get(a)), between: [a.step, b.step] };
    }
  }
  const near = snaps.reduce((p, s) => (Math.abs(s.nll - level) < Math.abs(p.nll - level) ? s : p));
  return { value: get(near), between: [near.step, near.step] };
};
const nearest = (snaps) => snaps.reduce((p, s) => (Math.abs(s.nll - level) < Math.abs(p.nll - level) ? s : p));
const summary = { level, runs: {} };
lines.push('', `At equal validation loss ${level.toFixed(4)} (interpolated between the bracketing snapshots; intervals from the nearest snapshot):`, '',
  '| run | snapshots | nearest (val loss) | mean gap | its 95 % interval | Pearson r | its 95 % interval |', '| --- | --- | --- | ---: | --- | ---: | --- |');
for (const [run, name] of RUNS) {
  const g = at(data[run], (s) => s.gap.estimate);
  const r = at(data[run], (s) => s.r.estimate);
  const n = nearest(data[run]);
  summary.runs[run] = { gap: g.value, r: r.value, between: g.between, nearest: n };
  lines.push(`| ${name} | ${g.between.join('–')} | ${n.step} (${n.nll.toFixed(4)}) | ${f3(g.value)} | [${f3(n.gap.low)}, ${f3(n.gap.high)}] | ${f3(r.value)} | [${f3(n.r.low)}, ${f3(n.r.high)}] |`);
}
// The bootstrap intervals resample occupations, not training: the figures also move from one
// snapshot to the next, so their mean and standard deviation over the late snapshots are given.
const LATE = Number(LATE_ARG ?? 1000);
const msd = (xs) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return [m, Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1))];
};
lines.push('', `Over the snapshots from update ${LATE} on (mean ± standard deviation across snapshots):`, '',
  '| run | snapshots | val loss | mean gap | Pearson r | Pearson r, frequent |', '| --- | ---: | --- | --- | --- | --- |');
for (const [run, name] of RUNS) {
  const late = data[run].filter((s) => s.step >= LATE);
  const pm = ([m, sd]) => `${f3(m)} ± ${sd.toFixed(3)}`;
  const row = { n: late.length, nll: [Math.min(...late.map((s) => s.nll)), Math.max(...late.map((s) => s.nll))], gap: msd(late.map((s) => s.gap.estimate)), r: msd(late.map((s) => s.r.estimate)), rFreq: late.every((s) => s.freq) ? msd(late.map((s) => s.freq.pearson.estimate)) : null };
  summary.runs[run].late = row;
  lines.push(`| ${name} | ${row.n} | ${row.nll[1].toFixed(3)} → ${row.nll[0].toFixed(3)} | ${pm(row.gap)} | ${pm(row.r)} | ${row.rFreq ? pm(row.rFreq) : '–'} |`);
}
// Each occupation seen at least min_count times, at each run's last snapshot.
const lastOcc = Object.fromEntries(RUNS.map(([run]) => {
  const last = data[run].at(-1);
  return [run, JSON.parse(readFileSync(join(W, run, 'snap', `iter-${String(last.step).padStart(5, '0')}`, 'occ.json'), 'utf8'))];
}));
const minCount = lastOcc.lm.min_count ?? 20;
lines.push('', `Occupations seen at least ${minCount} times in the training text, at each run's last snapshot (log p(he) − log p(she), mean of the 4 templates):`, '',
  `| occupation | BLS % women | count in the training text | no CDA (update ${data.lm.at(-1).step}) | with CDA (update ${data.lm_cda.at(-1).step}) |`, '| --- | ---: | ---: | ---: | ---: |');
lastOcc.lm.occupations.forEach((o, i) => {
  const c = lastOcc.lm_cda.occupations[i];
  if ((o.train_count ?? 0) >= minCount) lines.push(`| ${o.name} | ${o.pct} | ${o.train_count} | ${f3(o.he_minus_she)} | ${f3(c.he_minus_she)} |`);
});
writeFileSync(join(OUT, 'lm-probe-table.md'), lines.join('\n') + '\n');
writeFileSync(join(OUT, 'lm-probe-summary.json'), JSON.stringify({ ...summary, snapshots: data }, null, 1) + '\n');
const series = (get) => RUNS.map(([run, name]) => ({ name, points: data[run].map((s) => [s.nll, get(s)]) }));
const common = { xLabel: 'validation loss, nats per token (120k IMDb tokens; training runs right to left)', width: 720, height: 420 };
writeFileSync(join(OUT, 'lm-probe-gap.svg'), linePlotSvg(series((s) => s.gap.estimate), { ...common, title: 'IMDb GPT (4 × 128): mean log p(he) − log p(she) over 60 occupations × 4 templates', yLabel: 'nats' }));
writeFileSync(join(OUT, 'lm-probe-pearson.svg'), linePlotSvg(series((s) => s.r.estimate), { ...common, title: 'Pearson r(log p(he) − log p(she), BLS % women), 60 occupations', yLabel: 'r' }));
process.stdout.write(lines.join('\n') + '\n');
