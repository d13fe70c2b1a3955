// attn viz in headless Chromium (Debian's /usr/bin/chromium through playwright-core, as
// test/browser.test.ts): serves the viz document of a tiny char GPT on 127.0.0.1, opens the page,
// clicks a token and checks that the token strip and the list show that token's attention row of
// the selected layer and head, switches head through the all-heads grid and layer through the
// selector, checks the lens, attribution and ablation sections, and takes a screenshot.
// ATTN_UPDATE_FIGURES=1 trains the model for a few hundred steps first and writes the screenshots
// under docs/figures/ (otherwise the weights are random and nothing is written); ATTN_VIZ_MODEL=DIR
// uses that char GPT checkpoint (same tokenizer: tinyshakespeare's characters) instead.
// Skipped when Chromium or playwright-core is missing, unless ATTN_REQUIRE_BROWSER=1.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { serveViz } from '../src/cli/viz.js';
import { prepareDataset } from '../src/data/files.js';
import { buildVizDocument } from '../src/eval/interpret.js';
import { loadGPTCheckpoint } from '../src/models/gpt-checkpoint.js';
import { GPT } from '../src/models/gpt.js';
import { getBackend } from '../src/index.js';
import { train } from '../src/tasks/lm.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { CHROMIUM, CHROMIUM_ARGS, loadPlaywright, REQUIRE_BROWSER } from './browser-helpers.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const UPDATE = process.env.ATTN_UPDATE_FIGURES === '1';

const TEXT = readFileSync(join(REPO, 'data/tinyshakespeare/input.txt'), 'utf8');
const PROMPT = 'ROMEO: But soft, what light';

/** A tiny char GPT: random weights, or (ATTN_UPDATE_FIGURES=1) trained for the figures, or the
 *  char GPT checkpoint ATTN_VIZ_MODEL names. */
async function makeModel(tok: CharTokenizer): Promise<GPT> {
  const cfg = { n_layer: 2, n_head: 4, n_embd: 64, block_size: 64, vocab_size: tok.vocabSize, dropout: 0, bias: false };
  const given = process.env.ATTN_VIZ_MODEL;
  if (given) return (await loadGPTCheckpoint(given, { backend: await getBackend('cpu') })).model.eval();
  if (!UPDATE) return new GPT(cfg, { backend: await getBackend('cpu'), seed: 3 }).eval();
  const root = mkdtempSync(join(tmpdir(), 'attn-viz-'));
  try {
    await prepareDataset({ text: TEXT, tokenizer: tok, outDir: join(root, 'data') });
    await train({
      out_dir: join(root, 'run'), dataset: join(root, 'data'), device: 'cpu', ...cfg,
      learning_rate: 1e-2, min_lr: 1e-3, warmup_iters: 20, lr_decay_iters: 600, max_iters: 600,
      eval_interval: 600, eval_iters: 1, log_interval: 200, seed: 7,
    });
    return (await loadGPTCheckpoint(join(root, 'run', 'last'), { backend: await getBackend('cpu') })).model.eval();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const pw = await loadPlaywright();
const skip = typeof pw === 'string' && !REQUIRE_BROWSER ? pw : false;

test('attn viz page: clicking a token shows its attention row (layer/head selectors, all-heads grid), lens, attributions, ablation; screenshot', { skip, timeout: 600_000 }, async () => {
  if (typeof pw === 'string') assert.fail(pw);
  const tok = CharTokenizer.fromText(TEXT);
  const model = await makeModel(tok);
  const ids = tok.encode(PROMPT);
  // The figures use 64 integrated-gradient steps (completeness within a fraction of a percent); the
  // check itself needs only a few.
  const figures = UPDATE || !!process.env.ATTN_VIZ_MODEL;
  const doc = buildVizDocument(model, tok, PROMPT, ids, { steps: figures ? 64 : 16, k: 5, description: figures ? 'character GPT trained on tinyshakespeare' : 'character GPT, random weights' });
  model.dispose();
  const { url, close } = await serveViz(doc, 0);
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const browser = await pw.chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS.filter((a) => a !== '--enable-unsafe-webgpu'), headless: true });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const logs: string[] = [];
  page.on('console', (m) => logs.push(m.text?.() ?? ''));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  /** data-weight of every token of the attention strip. */
  const weights = async (): Promise<number[]> => page.evaluate<number[]>(`[...document.querySelectorAll('#viz-attn-tokens .viz-token')].map((s) => Number(s.dataset.weight))`);
  const expectRow = async (layer: number, head: number, query: number, what: string) => {
    const got = await weights();
    const want = doc.attention[layer]![head]![query]!;
    assert.equal(got.length, want.length, what);
    assert.deepEqual(got, want, `${what}: the page shows the document's row`);
    // Causal: nothing after the query.
    assert.ok(got.slice(query + 1).every((w) => w === 0), `${what}: attends to later tokens`);
    const status = (await page.textContent('#viz-selected')) ?? '';
    assert.ok(status.startsWith(`layer ${layer + 1}, head ${head + 1}: token ${query} `), `${what}: status ${status}`);
    // The list names the most attended key first.
    const first = await page.evaluate<string>(`document.querySelector('#viz-row li').dataset.key`);
    assert.equal(Number(first), want.indexOf(Math.max(...want)), `${what}: most attended key listed first`);
  };
  try {
    await page.goto(url);
    await page.waitForFunction('window.vizReady === true', undefined, { timeout: 20_000 });
    assert.deepEqual(logs.filter((l) => l.startsWith('pageerror')), []);
    const q = 9;
    await page.click(`#viz-attn-tokens .viz-token[data-index="${q}"]`);
    await expectRow(0, 0, q, 'layer 1 head 1');
    // All-heads grid: click layer 2, head 3's map.
    await page.click('#viz-grid canvas[data-layer="1"][data-head="2"]');
    await expectRow(1, 2, q, 'grid: layer 2 head 3');
    await page.selectOption('#viz-layer', '0');
    await expectRow(0, 2, q, 'selector: layer 1 head 3');
    const q2 = ids.length - 1;
    await page.click(`#viz-attn-tokens .viz-token[data-index="${q2}"]`);
    await expectRow(0, 2, q2, 'last token');
    // The other sections.
    const lensCells = await page.evaluate<number>(`document.querySelectorAll('#viz-lens td').length`);
    assert.equal(lensCells, (doc.model.layers + 1) * ids.length);
    const lastTop = await page.evaluate<string>(`document.querySelector('#viz-lens td[data-layer="${doc.model.layers}"][data-position="${q2}"]').firstChild.textContent`);
    assert.equal(lastTop, doc.lens!.top[doc.model.layers]![q2]![0]!.token.replace(/ /g, '·').replace(/\n/g, '↵'));
    const attr = await page.evaluate<number[]>(`[...document.querySelectorAll('#viz-attributions .viz-attr:first-child .viz-attr-row:nth-of-type(2) .viz-token')].map((s) => Number(s.dataset.value))`);
    assert.deepEqual(attr, doc.attributions[0]!.integratedGradients);
    const cells = await page.evaluate<number>(`document.querySelectorAll('#viz-ablation svg rect.cell').length`);
    assert.equal(cells, doc.model.layers * doc.model.heads);
    await page.click(`#viz-attn-tokens .viz-token[data-index="${q}"]`);
    const shot = await page.screenshot({ fullPage: true });
    assert.equal(shot.subarray(1, 4).toString('latin1'), 'PNG');
    assert.ok(shot.length > 10_000, `screenshot of ${shot.length} bytes`);
    if (UPDATE) {
      mkdirSync(join(REPO, 'docs/figures'), { recursive: true });
      writeFileSync(join(REPO, 'docs/figures/viz-page.png'), shot);
      writeFileSync(join(REPO, 'docs/figures/viz-ablation.svg'), (await page.evaluate<string>(`document.querySelector('#viz-ablation').innerHTML`)) + '\n');
    }
  } finally {
    await page.close();
    await browser.close();
    await close();
  }
});
