// The browser example end to end: trains a tiny character GPT for a few steps, serves the
// repository (dist/ and examples/browser/) and the checkpoint with the cross-origin isolation
// headers, opens the page in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), clicks Generate and checks the streamed text and a screenshot, once on
// WebGPU (SwiftShader's software Vulkan adapter) and once on the cpu fallback (?device=cpu).
// Skipped when Chromium or playwright-core is missing, unless ATTN_REQUIRE_BROWSER=1.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { inflateSync } from 'node:zlib';
import { prepareDataset } from '../src/data/files.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { generate } from '../src/generate/index.js';
import { loadGPTCheckpoint } from '../src/models/gpt-checkpoint.js';
import { train } from '../src/tasks/lm.js';
import { CHROMIUM, CHROMIUM_ARGS, loadPlaywright, REQUIRE_BROWSER } from './browser-helpers.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** Width, height and the RGB(A) rows of an 8-bit PNG, enough for a screenshot check. */
function decodePng(png: Buffer): { width: number; height: number; channels: number; rows: Uint8Array[] } {
  assert.equal(png.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'PNG signature');
  let at = 8;
  let width = 0, height = 0, channels = 0;
  const idat: Buffer[] = [];
  while (at < png.length) {
    const len = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    const body = png.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      assert.equal(body[8], 8, 'bit depth 8');
      assert.equal(body[12], 0, 'not interlaced');
      channels = ({ 2: 3, 6: 4 } as Record<number, number>)[body[9]!] ?? assert.fail(`colour type ${body[9]}`);
    } else if (type === 'IDAT') idat.push(body);
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const rows: Uint8Array[] = [];
  let prev = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = new Uint8Array(stride);
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? out[i - channels]! : 0;
      const b = prev[i]!;
      const c = i >= channels ? prev[i - channels]! : 0;
      let p = 0;
      if (filter === 1) p = a;
      else if (filter === 2) p = b;
      else if (filter === 3) p = (a + b) >> 1;
      else if (filter === 4) {
        const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      out[i] = (line[i]! + p) & 255;
    }
    rows.push(out);
    prev = out;
  }
  return { width, height, channels, rows };
}

/** Share of pixels that differ clearly from the background (the most common grey level). */
function inkShare(png: Buffer): { width: number; height: number; ink: number } {
  const { width, height, channels, rows } = decodePng(png);
  const hist = new Map<number, number>();
  const grey = (r: Uint8Array, x: number): number => Math.round((r[x * channels]! + r[x * channels + 1]! + r[x * channels + 2]!) / 3);
  for (const r of rows) for (let x = 0; x < width; x++) hist.set(grey(r, x), (hist.get(grey(r, x)) ?? 0) + 1);
  const bg = [...hist.entries()].sort((a, b) => b[1] - a[1])[0]![0];
  let ink = 0;
  for (const r of rows) for (let x = 0; x < width; x++) if (Math.abs(grey(r, x) - bg) > 40) ink++;
  return { width, height, ink: ink / (width * height) };
}

const TEXT = readFileSync(join(REPO, 'data/tinyshakespeare/input.txt'), 'utf8');
const ROOT = mkdtempSync(join(tmpdir(), 'attn-browser-'));
process.on('exit', () => rmSync(ROOT, { recursive: true, force: true }));

/** A checkpoint of a tiny char GPT after a few training steps: ROOT/run/last. */
async function makeCheckpoint(): Promise<string> {
  const data = join(ROOT, 'data');
  await prepareDataset({ text: TEXT, tokenizer: CharTokenizer.fromText(TEXT), outDir: data });
  await train({
    out_dir: join(ROOT, 'run'), dataset: data, device: 'cpu',
    n_layer: 2, n_head: 4, n_embd: 64, block_size: 64, batch_size: 8, dropout: 0, bias: false,
    learning_rate: 1e-2, min_lr: 1e-3, warmup_iters: 20, lr_decay_iters: 600, max_iters: 600,
    eval_interval: 600, eval_iters: 1, log_interval: 100, seed: 7,
  });
  return join(ROOT, 'run', 'last');
}

const pw = await loadPlaywright();
const skip = typeof pw === 'string' && !REQUIRE_BROWSER ? pw : false;

test('browser example: generates text with webgpu (float32 and float16 weights), with the cpu backend, and falls back to cpu without an adapter; screenshot not blank', { skip, timeout: 600_000 }, async () => {
  if (typeof pw === 'string') assert.fail(pw);
  const ckpt = await makeCheckpoint();
  const tok = CharTokenizer.fromJSON(readFileSync(join(ckpt, 'char_tokenizer.json'), 'utf8'));
  const vocab = new Set(tok.decode([...Array(tok.vocabSize).keys()]));
  // What the page should produce: the same sampling (seed, temperature) in Node on the ref backend.
  const { model } = await loadGPTCheckpoint(ckpt);
  const expected = generate(model, tok.encode('ROMEO:\n'), { maxNewTokens: 120, temperature: 0.8, seed: 1337, decode: (x) => tok.decode(x) }).text!;
  model.dispose();
  const { serve } = (await import(join(REPO, 'examples/browser/serve.mjs'))) as {
    serve(o: { port: number; mounts: Record<string, string> }): Promise<{ server: { close(): void }; url: string }>;
  };
  const { server, url } = await serve({ port: 0, mounts: { '/test-checkpoint/': ckpt } });
  const gpuBrowser = await pw.chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  // Without --enable-unsafe-webgpu headless Chromium offers no adapter: the page must fall back.
  const plainBrowser = await pw.chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS.filter((a) => a !== '--enable-unsafe-webgpu'), headless: true });
  const cases = [
    { name: 'webgpu', browser: gpuBrowser, query: '', backend: /^webgpu \(/ },
    { name: 'cpu (?device=cpu)', browser: gpuBrowser, query: '&device=cpu', backend: /^cpu \(\d+ Web Workers\)$/ },
    { name: 'cpu (no adapter)', browser: plainBrowser, query: '', backend: /^cpu \(\d+ Web Workers\)$/ },
    // Weights in 16 bits: the text need not match the float32 reference token for token.
    { name: 'webgpu, float16 weights', browser: gpuBrowser, query: '&weights=16', backend: /^webgpu \(.*\), weights float16 \([\d.]+ MiB saved\)$/, loose: true },
  ];
  try {
    for (const c of cases) {
      const device = c.name;
      const page = await c.browser.newPage({ viewport: { width: 900, height: 640 } });
      const logs: string[] = [];
      page.on('console', (m) => logs.push(m.text?.() ?? ''));
      page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
      try {
        await page.goto(`${url}examples/browser/?checkpoint=/test-checkpoint/${c.query}`);
        await page.waitForFunction(`['ready', 'error'].includes(document.body.dataset.state)`, undefined, { timeout: 120_000 });
        const ready = await page.textContent('#status');
        assert.match(ready ?? '', /^ready/, `${device}: ${ready}\n${logs.join('\n')}`);
        const label = (await page.textContent('#backend')) ?? '';
        assert.match(label, c.backend, `${device}: ${ready}`);
        if (c.browser === plainBrowser) assert.match(ready ?? '', /no WebGPU: .*falling back to the cpu backend/);
        await page.fill('#prompt', 'ROMEO:\n');
        await page.fill('#tokens', '120');
        await page.click('#generate');
        await page.waitForFunction(`['done', 'error'].includes(document.body.dataset.state)`, undefined, { timeout: 300_000 });
        const status = (await page.textContent('#status')) ?? '';
        assert.match(status, /tokens in/, `${device}: ${status}\n${logs.join('\n')}`);
        const out = (await page.textContent('#output')) ?? '';
        assert.ok(out.startsWith('ROMEO:\n'), out);
        const generated = out.slice('ROMEO:\n'.length);
        assert.ok(generated.length >= 60, `${device}: only ${JSON.stringify(generated)}`);
        for (const ch of generated) assert.ok(vocab.has(ch), `${device}: ${JSON.stringify(ch)} is not in the checkpoint's vocabulary`);
        // One uniform draw per token: rounding differences flip a token only when a draw lands
        // within ~1e-6 of a boundary, so the start of the text must match the reference.
        if (!('loose' in c)) assert.equal(generated.slice(0, 40), expected.slice(0, 40), `${device}: the text differs from the ref backend's`);
        const shot = await page.screenshot({ fullPage: false });
        const { width, height, ink } = inkShare(shot);
        assert.equal(width, 900);
        assert.equal(height, 640);
        // Text on a plain background: some ink, far from all of it.
        assert.ok(ink > 0.01 && ink < 0.5, `${device}: screenshot ink share ${ink}`);
        // The committed figure is refreshed on request only, so a test run leaves the tree clean.
        if (c.name === 'webgpu' && process.env.ATTN_UPDATE_FIGURES === '1') {
          mkdirSync(join(REPO, 'docs/figures'), { recursive: true });
          writeFileSync(join(REPO, 'docs/figures/browser-example.png'), shot);
        }
        process.stdout.write(`# ${device}: ${label}; ${status}\n# ${JSON.stringify(generated)}\n`);
      } finally {
        await page.close();
      }
    }
  } finally {
    await gpuBrowser.close();
    await plainBrowser.close();
    server.close();
  }
});
