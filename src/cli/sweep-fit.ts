// attn sweep fit: the scaling laws of a sweep's results.jsonl, its plots and a Markdown summary.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { analyseSweep, scalingMarkdown, scalingPlots } from '../eval/scaling-report.js';
import { writeFileAtomic } from '../io/files.js';
import { readSweepResults, untrainedRun } from '../tasks/sweep.js';
import { type Flags, UsageError } from './args.js';
import { requireFile } from './common.js';

export async function runSweepFit(f: Flags): Promise<void> {
  const results = f.required('results', 'a sweep results.jsonl');
  const out = f.required('out', 'a folder for fits.json, fits.md and the plots');
  const fitMaxCompute = f.number('fit_max_compute', { min: 0 });
  const heldout = f.string('heldout');
  const bootstrap = f.number('bootstrap', { integer: true, min: 0 }) ?? 500;
  const seed = f.number('seed', { integer: true, min: 0 }) ?? 1;
  const lOfN = f.string('l_of_n') ?? 'envelope';
  if (lOfN !== 'envelope' && lOfN !== 'common_d') throw new UsageError(`sweep fit: --l_of_n is 'envelope' (each size's best run) or 'common_d' (the D most sizes share), got '${lOfN}'`);
  f.done();
  await requireFile('sweep fit', 'results', results);
  const runs = await readSweepResults(results);
  if (runs.length === 0) throw new UsageError(`sweep fit: ${results} holds no runs`);
  // A held-out run not trained yet is predicted from its name (write the prediction down first).
  if (heldout && !runs.some((r) => r.name === heldout)) {
    try {
      runs.push(untrainedRun(heldout, runs));
    } catch (e) {
      throw new UsageError(`sweep fit: --heldout ${(e as Error).message}`);
    }
    process.stderr.write(`sweep fit: ${heldout} is not trained yet: predicting its loss\n`);
  }
  const t0 = performance.now();
  const a = analyseSweep(runs, { ...(fitMaxCompute !== undefined ? { fitMaxCompute } : {}), ...(heldout ? { heldout } : {}), bootstrap, seed, lOfN });
  await mkdir(out, { recursive: true });
  await writeFileAtomic(join(out, 'fits.json'), JSON.stringify(a, null, 1) + '\n');
  const md = scalingMarkdown(runs, a);
  await writeFileAtomic(join(out, 'fits.md'), md);
  const plots = scalingPlots(runs, a);
  for (const [file, svg] of Object.entries(plots)) await writeFileAtomic(join(out, file), svg);
  process.stdout.write(md);
  const ratio = a.prediction?.ratio_to_largest_fit_compute;
  if (ratio !== undefined && ratio < 8) process.stderr.write(`sweep fit: note: the held-out run has ${ratio.toFixed(1)} × the largest compute in the fit; an extrapolation test wants 8 × or more (lower --fit_max_compute)\n`);
  process.stderr.write(`sweep fit: ${a.fit_runs.length} runs fitted in ${((performance.now() - t0) / 1000).toFixed(1)} s; wrote ${join(out, 'fits.json')}, fits.md, ${Object.keys(plots).join(', ')}\n`);
}
