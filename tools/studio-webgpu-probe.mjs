// Times training updates of the studio page on Chromium's WebGPU (SwiftShader where there is no
// GPU): serves the page, trains `steps` updates of `size` at `batch`, and prints the median
// seconds an update (update 2 to the one before last: the first waits for shader compilation,
// the last includes an evaluation) and when the first update was done.
//   node tools/studio-webgpu-probe.mjs [steps=30] [batch=4] [size=micro] [trace]
// trace: '1' logs a line per read back (ATTN_WEBGPU_TRACE: dispatches, encoding and waiting
// time); 'kernels' also runs every kernel alone and lists the slowest (serialized, so slower in
// all). ROOT=DIR times another build of the repository (e.g. an older commit's, built with tsc);
// PAGE_ENV='{"ATTN_WEBGPU_MATMUL":"general"}' sets variables the page's device thread reads.
import { fileURLToPath } from 'node:url';

const root = process.env.ROOT ?? fileURLToPath(new URL('..', import.meta.url));
const { startStudioServer } = await import(`${root}/dist/src/cli/studio.js`);
const { CHROMIUM, CHROMIUM_ARGS } = await import(`${root}/dist/test/browser-helpers.js`);
const pw = await import('playwright-core');
const [steps = '30', batch = '4', size = 'micro', trace = ''] = process.argv.slice(2);
const { server, url } = await startStudioServer({ port: 0 });
const browser = await pw.chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
const T0 = performance.now();
const t = () => ((performance.now() - T0) / 1000).toFixed(1);
try {
  const page = await browser.newPage();
  const env = { ...(trace ? { ATTN_WEBGPU_TRACE: trace } : {}), ...JSON.parse(process.env.PAGE_ENV ?? '{}') };
  await page.addInitScript(`globalThis.process = { env: ${JSON.stringify(env)} }`);
  page.on('console', (m) => { if (m.text().startsWith('webgpu')) console.log(`[${t()} s] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`pageerror: ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(`['ready', 'error'].includes(document.body.dataset.state)`, undefined, { timeout: 120_000 });
  console.log(`backend: ${await page.textContent('#backend')}`);
  await page.selectOption('#size', size);
  await page.fill('#steps', steps);
  await page.fill('#eval-every', steps);
  await page.fill('#batch', batch);
  await page.fill('#lr', '0.02');
  await page.click('#train');
  await page.waitForFunction(`['done', 'error'].includes(document.body.dataset.state)`, undefined, { timeout: 590_000 });
  if ((await page.evaluate('document.body.dataset.state')) === 'error') throw new Error(await page.textContent('#status'));
  const recs = await page.evaluate('window.studio.records.map((r) => [r.iter, r.elapsedSec])');
  const evals = await page.evaluate('window.studio.evals.map((e) => e.val_loss.toFixed(3))');
  const d = [];
  for (let i = 1; i < recs.length - 1; i++) d.push((recs[i][1] - recs[i - 1][1]) / (recs[i][0] - recs[i - 1][0]));
  d.sort((a, b) => a - b);
  console.log(`${size}, batch ${batch}, ${steps} updates: first update done at ${recs[0][1].toFixed(1)} s, median ${d[d.length >> 1]?.toFixed(2)} s an update, ` +
    `all ${recs[recs.length - 1][1].toFixed(1)} s; val loss ${evals.join(' → ')}`);
} finally {
  await browser.close();
  server.close();
}
