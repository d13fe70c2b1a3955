// attn sweep: trains a grid of GPTs over size and tokens (src/tasks/sweep.ts), and `attn sweep fit`
// fits the scaling laws to its results and draws the plots (src/eval/scaling.ts).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type Flags, UsageError } from './args.js';
import { kaplanLearningRate, parseShape, runSweep, type SweepShape } from '../tasks/sweep.js';
import { shippedData } from './common.js';
import { ProgressBar } from './progress.js';

export const SWEEP_HELP = `attn sweep --dataset DIR --out DIR --shapes LxDxH,... --iters N,... [options]
attn sweep fit --results FILE.jsonl --out DIR [--fit_max_compute C] [--heldout NAME] [--bootstrap B] [--l_of_n envelope|common_d]

Trains every (shape, iterations) pair of the grid, cheapest first, each with the one training loop,
a cosine schedule fitted to its length (2 % warmup, decay to lr/10 at its last update), no
dropout, and the learning rate Kaplan et al. 2020 fitted against N (0.003239 − 0.0001395·ln N).
Each finished run is one line of OUT/results.jsonl (N non-embedding parameters, D tokens, C
FLOPs = 6ND + 6·n_layer·n_ctx·n_embd·D, final val loss, wall time); run again, finished runs are
skipped and a run killed half way starts again; a run that diverges (NaN/inf) goes to OUT/failed.jsonl
and the sweep goes on (later calls skip it until its line is deleted). Final weights stay in OUT/runs/NAME/best.

  --dataset DIR          a prepared dataset (default data/shakespeare_char: Tiny Shakespeare characters)
  --out DIR              where results.jsonl and runs/ go (required)
  --shapes LIST          model shapes, LAYERSxWIDTHxHEADS, comma-separated (e.g. 1x32x2,2x64x2)
  --iters LIST           iterations of each shape, comma-separated (e.g. 125,250,500)
  --max_compute C        leave out grid runs above C FLOPs (e.g. 5e12)
  --run LxDxH@ITERS,...  explicit extra runs (a held-out one), kept whatever --max_compute says
  --block_size T         context (default 64); --batch_size B (default 16)
  --eval_iters N         validation batches of the final loss (default 100; the same batches for every run)
  --max_minutes M        total budget; the runs left are named and a later call continues (default: none)
  --keep_models_upto P   keep the final weights of runs up to P parameters (default 20000000)
  --lr_scale S           multiply Kaplan's learning rate by S (default 1; small models with batches of
                         ~1k tokens train faster with a larger one: probe it, docs/scaling.md)
  --lr_per_width K       learning rate K / n_embd instead (Adam's 1/width rule of μP, Yang et al.
                         2021, applied to every weight; K = 0.4 on Tiny Shakespeare, docs/scaling.md)
  --seed N (1337), --device cpu|webgpu|auto|ref, --threads N

attn sweep fit: the Kaplan L(N), L(D), L(C) power laws, Chinchilla approaches 2 (IsoFLOP
profiles) and 3 (L(N,D) = E + A/N^α + B/D^β, Huber on log L, L-BFGS from a grid of starts),
bootstrap intervals and R², and the held-out prediction: the fits use only runs with
C <= --fit_max_compute and predict --heldout (a run name; one not in the results yet, e.g.
L4-d144-h4-i12000, is predicted from its name before it is trained, so the prediction can be
written down first); L(N) takes each size's best run (all runs but the held-out one;
--l_of_n common_d: the D most sizes share, within the cap). Writes OUT/fits.json and SVG plots.`;

function list<T>(f: Flags, name: string, parse: (s: string) => T): T[] {
  const v = f.string(name);
  if (v === undefined) return [];
  return v.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    try {
      return parse(s);
    } catch (e) {
      throw new UsageError(`sweep: --${name}: ${(e as Error).message}`);
    }
  });
}

const positiveInt = (s: string): number => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`'${s}' is not a positive integer`);
  return n;
};

export async function runSweepCommand(f: Flags): Promise<void> {
  const sub = f.parsed.positionals[0];
  if (sub === 'fit') return (await import('./sweep-fit.js')).runSweepFit(f);
  if (sub !== undefined && sub !== 'run') throw new UsageError(`sweep: unknown subcommand '${sub}' (known: run, fit)`);
  const dataset = f.string('dataset') ?? shippedData('data/shakespeare_char');
  const out = f.required('out', 'a folder for results.jsonl and the runs');
  const shapes = list(f, 'shapes', parseShape);
  const iters = list(f, 'iters', positiveInt);
  const extra = list(f, 'run', (s) => {
    const [shape, it] = s.split('@');
    if (it === undefined) throw new Error(`a run is written LxDxH@ITERS, got '${s}'`);
    return { shape: parseShape(shape!) as SweepShape, iters: positiveInt(it) };
  });
  const maxCompute = f.number('max_compute', { min: 0 }) ?? 0;
  const block_size = f.number('block_size', { integer: true, min: 1 }) ?? 64;
  const batch_size = f.number('batch_size', { integer: true, min: 1 }) ?? 16;
  const eval_iters = f.number('eval_iters', { integer: true, min: 1 }) ?? 100;
  const maxMinutes = f.number('max_minutes', { min: 0 }) ?? 0;
  const keepModelsUpTo = f.number('keep_models_upto', { min: 0 }) ?? 20e6;
  const seed = f.number('seed', { integer: true, min: 0 }) ?? 1337;
  const lrScale = f.number('lr_scale', { min: 0 }) ?? 1;
  const lrPerWidth = f.number('lr_per_width', { min: 0 });
  if (lrPerWidth !== undefined && lrScale !== 1) throw new UsageError('sweep: give --lr_scale or --lr_per_width, not both');
  const device = f.string('device') ?? 'cpu';
  const threads = f.number('threads', { integer: true, min: 1 });
  f.done();
  if ((shapes.length === 0 || iters.length === 0) && extra.length === 0) throw new UsageError('sweep: give --shapes and --iters (a grid), or --run');
  if (!existsSync(join(dataset, 'meta.json'))) throw new UsageError(`sweep: ${dataset} is not a prepared dataset (no meta.json); make one with: attn prepare --input data/tinyshakespeare/input.txt --out ${dataset}`);
  let bar: ProgressBar | null = null;
  const summary = await runSweep({
    dataset, out, shapes, iters, extra, maxCompute, block_size, batch_size, eval_iters, seed, device, ...(threads ? { threads } : {}), maxMinutes, keepModelsUpTo,
    ...(lrScale !== 1 ? { lrOf: (N: number) => lrScale * kaplanLearningRate(N) } : {}),
    ...(lrPerWidth !== undefined ? { lrOf: (_N: number, s: SweepShape) => lrPerWidth / s.n_embd } : {}),
  }, {
    onSkip: (r, why) => process.stderr.write(`skip ${r.name}: ${why}\n`),
    onRunStart: (i, n, r) => {
      process.stderr.write(`run ${i + 1}/${n} ${r.name}: N ${r.N}, D ${r.D}, C ${r.C.toExponential(2)}, lr ${r.learning_rate.toPrecision(3)}\n`);
      bar = new ProgressBar(r.iters, { label: r.name, unit: 'tok/s' });
    },
    onRunEnd: (r) => {
      bar?.finish?.();
      process.stderr.write(`  ${r.name}: val loss ${r.val_loss.toFixed(4)} in ${r.wall_s.toFixed(1)} s\n`);
    },
    loop: { onProgress: (step, _max, tps, loss) => bar?.update(step, tps, `loss ${loss.toFixed(3)}`) },
  });
  process.stderr.write(`sweep: ${summary.trained.length} trained, ${summary.failed.length ? `${summary.failed.length} diverged (failed.jsonl), ` : ''}${summary.skipped} skipped (finished or diverged before), ${summary.leftOver.length} left${summary.leftOver.length ? ` (${summary.leftOver.map((r) => r.name).join(', ')}): run the same command again to continue` : ''}; results in ${summary.resultsPath}\n`);
}
