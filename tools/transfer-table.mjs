#!/usr/bin/env node
// The accuracy table of docs/transfer.md from tools/transfer-sweep.sh's results.jsonl (one or
// more files): for each (init, label fraction, seed) the variant (learning rate, LoRA) with the
// best dev accuracy is kept, and its test accuracy reported; then the mean over seeds and the
// paired difference pre-trained minus scratch.
//   node tools/transfer-table.mjs bench/results/transfer-h100-session4.jsonl
import { readFileSync } from 'node:fs';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node tools/transfer-table.mjs RESULTS.jsonl [...]');
  process.exit(2);
}
const rows = files.flatMap((f) => readFileSync(f, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l)));
const best = new Map(); // "init|fraction|seed" -> row
for (const r of rows) {
  if (!r.result) continue;
  const key = `${r.init}|${r.fraction}|${r.seed}`;
  const cur = best.get(key);
  if (!cur || r.result.dev_accuracy > cur.result.dev_accuracy) best.set(key, r);
}
const pct = (x) => (100 * x).toFixed(2);
const fractions = [...new Set(rows.map((r) => r.fraction))].sort((a, b) => b - a);
console.log('| labels | seed | from scratch (dev; chosen) | pre-trained (dev; chosen) | difference |');
console.log('|---:|---:|---:|---:|---:|');
for (const f of fractions) {
  const seeds = [...new Set(rows.filter((r) => r.fraction === f).map((r) => r.seed))];
  const diffs = [];
  const means = { scratch: [], pre: [] };
  for (const s of seeds) {
    const a = best.get(`scratch|${f}|${s}`);
    const b = best.get(`pre|${f}|${s}`);
    const cell = (r) => (r ? `${pct(r.result.accuracy)} % (${pct(r.result.dev_accuracy)}; ${r.variant ?? r.lr})` : '–');
    const d = a && b ? 100 * (b.result.accuracy - a.result.accuracy) : null;
    if (a) means.scratch.push(a.result.accuracy);
    if (b) means.pre.push(b.result.accuracy);
    if (d !== null) diffs.push(d);
    console.log(`| ${f * 100} % | ${s} | ${cell(a)} | ${cell(b)} | ${d === null ? '–' : (d >= 0 ? '+' : '') + d.toFixed(1)} |`);
  }
  if (seeds.length > 1) {
    const mean = (xs) => xs.reduce((x, y) => x + y, 0) / xs.length;
    const md = mean(diffs);
    console.log(`| ${f * 100} %, mean of ${seeds.length} | | ${pct(mean(means.scratch))} % | ${pct(mean(means.pre))} % | **${md >= 0 ? '+' : ''}${md.toFixed(1)}** (${Math.min(...diffs).toFixed(1)} to ${Math.max(...diffs).toFixed(1)}) |`);
  }
}
