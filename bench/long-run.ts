// Throughput and memory over a long run: the main job's recipe trained for many steps in a child
// process (the CLI, as a user runs it), then its metrics.jsonl read back: tokens/s of the last
// tenth against the first (must stay ≥ 0.9×) and the resident memory curve (must stay flat).
//   npm run build && node dist/bench/long-run.js [--steps 10000] [--preset shakespeare-char-tiny] [--out DIR]
// Writes DIR/long-run.svg (RSS and tokens/s against the step) and prints a table.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { linearTicks, linePlotSvg, type MetricsRecord } from '../src/eval/plot.js';
import { machineInfo, num, parseArgs, table } from './util.js';

const args = parseArgs(process.argv.slice(2));
const steps = Number(args.get('steps') ?? 10000);
const preset = String(args.get('preset') ?? 'shakespeare-char-tiny');
const outDir = String(args.get('out') ?? 'bench/results');
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const runDir = join(tmpdir(), `attn-long-run-${process.pid}`);

const t0 = Date.now();
const r = spawnSync(process.execPath, [CLI, 'train', '--preset', preset, '--max_iters', String(steps), '--lr_decay_iters', String(steps),
  '--eval_interval', String(Math.max(1, Math.round(steps / 10))), '--log_interval', '10', '--out_dir', runDir, '--sample', '0'], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
const wall = (Date.now() - t0) / 1000;
if (r.status !== 0) throw new Error(`training failed (${r.status}): ${r.stderr.slice(-2000)}`);
const recs = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as MetricsRecord);
rmSync(runDir, { recursive: true, force: true });

// Step records (not step 0, whose time includes the first compile); evaluations excluded by dt_ms.
const logged = recs.filter((m) => m.step > 0 && m.tokens_per_s !== undefined && m.rss_mib !== undefined);
const tenth = Math.max(1, Math.floor(logged.length / 10));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const tpsFirst = median(logged.slice(0, tenth).map((m) => m.tokens_per_s!));
const tpsLast = median(logged.slice(-tenth).map((m) => m.tokens_per_s!));
const rss = logged.map((m) => [m.step, m.rss_mib!] as [number, number]);
const rssAt = (frac: number): number => rss[Math.min(rss.length - 1, Math.floor(frac * rss.length))]![1];
// Least-squares slope of RSS over the second half, in MiB per 1000 steps.
const half = rss.slice(Math.floor(rss.length / 2));
const mx = half.reduce((s, p) => s + p[0], 0) / half.length;
const my = half.reduce((s, p) => s + p[1], 0) / half.length;
const slope = (half.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0) / half.reduce((s, p) => s + (p[0] - mx) ** 2, 0)) * 1000;

const mach = machineInfo();
const out: string[] = [];
out.push(`# long run: ${preset}, ${steps} steps`, '');
out.push(`machine: ${mach.cpu}, ${mach.threads} threads, Node ${mach.node}; wall time ${num(wall)} s (evaluations included)`, '');
out.push(table(['', 'value'], [
  ['tokens/s, median of the first tenth', num(tpsFirst)],
  ['tokens/s, median of the last tenth', num(tpsLast)],
  ['last ÷ first (target ≥ 0.9)', `${(tpsLast / tpsFirst).toFixed(3)} ${tpsLast / tpsFirst >= 0.9 ? '✓' : '✗'}`],
  ['RSS at 10% / 50% / end, MiB', `${num(rssAt(0.1))} / ${num(rssAt(0.5))} / ${num(rss[rss.length - 1]![1])}`],
  ['RSS max, MiB', num(Math.max(...rss.map((p) => p[1])))],
  ['RSS slope over the second half, MiB per 1000 steps', slope.toFixed(2)],
]));
process.stdout.write(out.join('\n') + '\n');

mkdirSync(outDir, { recursive: true });
// From 0, so that flat looks flat and growth looks like growth.
const svg = linePlotSvg([{ name: 'RSS (MiB)', points: rss, markers: false }], { title: `resident memory over ${steps} steps (${preset})`, xLabel: 'step', yLabel: 'MiB', yTicks: linearTicks(0, Math.max(...rss.map((p) => p[1])) * 1.1) });
writeFileSync(join(outDir, 'long-run-rss.svg'), svg);
const tps = logged.map((m) => [m.step, m.tokens_per_s!] as [number, number]);
writeFileSync(join(outDir, 'long-run-tokens.svg'), linePlotSvg([{ name: 'tokens/s', points: tps, markers: false }], { title: `training tokens/s over ${steps} steps (${preset})`, xLabel: 'step', yLabel: 'tokens/s' }));
writeFileSync(join(outDir, 'long-run.json'), JSON.stringify({ date: new Date().toISOString(), preset, steps, wall_s: wall, tps_first: tpsFirst, tps_last: tpsLast, rss_slope_mib_per_1000: slope, rss, tps }) + '\n');
process.stdout.write(`wrote ${join(outDir, 'long-run-rss.svg')}, long-run-tokens.svg, long-run.json\n`);
