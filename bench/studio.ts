// Training tokens/s of the studio page (headless Chromium: the cpu backend on Web Workers, and
// optionally SwiftShader's WebGPU) against the same model trained in Node: `attn train`'s loop
// (src/tasks/lm.ts → src/train/loop.ts) and the studio's own trainer run in Node.
//   npm run build && node dist/bench/studio.js [--size tiny] [--steps 80] [--batch 8] [--webgpu] [--webgpu-steps 8]
// Rates are taken between update 10 (or the first after it) and the last, so start-up, shader
// compilation and the first evaluation are left out. The machine may be shared: rerun to compare.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/index.js';
import { startStudioServer } from '../src/cli/studio.js';
import { prepareDataset } from '../src/data/files.js';
import { train } from '../src/tasks/lm.js';
import { STUDIO_SIZES, StudioTrainer } from '../src/studio/trainer.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { machineInfo, parseArgs, table } from './util.js';
import type { CpuBackend } from '../src/backend/cpu/index.js';

const args = parseArgs(process.argv.slice(2));
const size = String(args.get('size') ?? 'tiny');
const steps = Number(args.get('steps') ?? 80);
const batch = Number(args.get('batch') ?? 8);
const gpuSteps = Number(args.get('webgpu-steps') ?? 8);
const shape = STUDIO_SIZES[size];
if (!shape) throw new Error(`--size must be one of ${Object.keys(STUDIO_SIZES).join(', ')}`);
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const TEXT = readFileSync(join(REPO, 'data/tinyshakespeare/input.txt'), 'utf8');
const tokensPerStep = batch * shape.block_size;
const WARM = 10;
const cpuBackend = (await getBackend('cpu')) as unknown as CpuBackend;
// In Node the cpu backend runs the native addon's kernels where it is built (a page cannot).
const nodeCpu = `cpu (Node, ${cpuBackend.native ? 'native kernels' : 'WebAssembly'}, ${cpuBackend.rt.threads} threads)`;
const rows: string[][] = [];
const say = (s: string): void => void process.stderr.write(`${s}\n`);

/** tokens/s between the first sample at or after update WARM and the last: [update, seconds]. */
function rate(samples: [number, number][]): number {
  const first = samples.find(([i]) => i >= Math.min(WARM, samples[samples.length - 1]![0] - 1))!;
  const last = samples[samples.length - 1]!;
  return ((last[0] - first[0]) * tokensPerStep) / (last[1] - first[1]);
}

// 1. attn train (the one loop) in Node, cpu backend.
const tmp = mkdtempSync(join(tmpdir(), 'attn-bench-studio-'));
try {
  const data = join(tmp, 'data');
  await prepareDataset({ text: TEXT, tokenizer: CharTokenizer.fromText(TEXT), outDir: data });
  const loopSamples: [number, number][] = [];
  const t0 = performance.now();
  await train({
    out_dir: join(tmp, 'run'), dataset: data, device: 'cpu', ...shape, batch_size: batch, dropout: 0, bias: false,
    learning_rate: 1e-2, min_lr: 1e-3, warmup_iters: 20, lr_decay_iters: steps, max_iters: steps, eval_interval: 1_000_000, eval_iters: 1, log_interval: 1_000_000, seed: 1337,
  }, { onProgress: (step) => loopSamples.push([step, (performance.now() - t0) / 1000]) });
  const node = rate(loopSamples);
  rows.push(['Node: attn train (src/train/loop.ts)', nodeCpu, String(steps), node.toFixed(0)]);
  say(`attn train: ${node.toFixed(0)} tokens/s`);

  // 2. The studio's trainer in Node (the code the page runs).
  const t = StudioTrainer.create(TEXT, { ...shape }, { backend: await getBackend('cpu'), settings: { batch_size: batch, max_iters: steps, lr_decay_iters: steps } });
  const own: [number, number][] = [];
  const t1 = performance.now();
  for (let i = 0; i < steps; i++) own.push([t.step().iter, (performance.now() - t1) / 1000]);
  t.dispose();
  rows.push(['Node: studio trainer (src/studio/trainer.ts)', nodeCpu, String(steps), rate(own).toFixed(0)]);
  say(`studio trainer in Node: ${rate(own).toFixed(0)} tokens/s`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

// 3. The page in headless Chromium.
const CHROMIUM = process.env.ATTN_CHROMIUM ?? '/usr/bin/chromium';
interface Page {
  goto(u: string): Promise<unknown>; fill(s: string, v: string): Promise<void>; click(s: string): Promise<void>; selectOption(s: string, v: string): Promise<unknown>;
  waitForFunction(f: string, a?: unknown, o?: { timeout: number }): Promise<unknown>; evaluate<T>(f: string): Promise<T>; textContent(s: string): Promise<string | null>;
}
if (existsSync(CHROMIUM)) {
  const pw = (await import('playwright-core' as string)) as { chromium: { launch(o: unknown): Promise<{ newPage(): Promise<Page>; close(): Promise<void> }> } };
  const { server, url } = await startStudioServer({ port: 0 });
  const browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage', '--no-first-run', '--enable-unsafe-webgpu'] });
  const cases = [{ query: '?device=cpu', n: steps }, ...(args.has('webgpu') ? [{ query: '', n: gpuSteps }] : [])];
  try {
    for (const c of cases) {
      const page = await browser.newPage();
      await page.goto(url + c.query);
      await page.waitForFunction(`['ready', 'error'].includes(document.body.dataset.state)`, undefined, { timeout: 120_000 });
      const label = (await page.textContent('#backend')) ?? '?';
      await page.evaluate(`document.getElementById('clear-storage').click()`);
      await page.selectOption('#size', size);
      await page.fill('#steps', String(c.n));
      await page.fill('#eval-every', String(c.n));
      await page.fill('#batch', String(batch));
      await page.evaluate(`document.getElementById('auto-sample').checked = false`);
      await page.click('#train');
      await page.waitForFunction(`['done', 'error', 'refused'].includes(document.body.dataset.state)`, undefined, { timeout: 1_800_000 });
      const recs = await page.evaluate<{ iter: number; elapsedSec: number }[]>('window.studio.records');
      if (!recs.length) throw new Error(`${label}: ${await page.textContent('#status')}`);
      // The last record carries the final evaluation's time: left out.
      const r = rate(recs.slice(0, recs.length > 2 ? -1 : undefined).map((x) => [x.iter, x.elapsedSec]));
      rows.push([`page in headless Chromium`, label, String(c.n), r.toFixed(0)]);
      say(`page (${label}): ${r.toFixed(0)} tokens/s`);
    }
  } finally {
    await browser.close();
    server.close();
  }
} else {
  say(`${CHROMIUM} is missing: the page rows are left out`);
}

const m = machineInfo();
console.log(`Training tokens/s, studio '${size}' model (${shape.n_layer} layers, ${shape.n_embd} wide, context ${shape.block_size}), batch ${batch}; ${m.cpu}, ${m.threads} threads, Node ${m.node}; ${new Date().toISOString()}\n`);
console.log(table(['run', 'backend', 'updates', 'tokens/s'], rows, ['l', 'l', 'r', 'r']));
