// attn viz from the command line on a tiny char GPT checkpoint (two training steps): --out writes
// the document; without it the page, its modules and /doc.json are served on 127.0.0.1 and the
// URL printed; bad input gets a clear error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareDataset } from '../src/data/files.js';
import type { VizDocument } from '../src/eval/interpret.js';
import { train } from '../src/tasks/lm.js';
import { CharTokenizer } from '../src/tokenizers/index.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ROOT = mkdtempSync(join(tmpdir(), 'attn-viz-cli-'));
process.on('exit', () => rmSync(ROOT, { recursive: true, force: true }));
const TEXT = 'To be, or not to be, that is the question:\nWhether tis nobler in the mind to suffer\n'.repeat(20);

async function checkpoint(): Promise<string> {
  await prepareDataset({ text: TEXT, tokenizer: CharTokenizer.fromText(TEXT), outDir: join(ROOT, 'data') });
  await train({
    out_dir: join(ROOT, 'run'), dataset: join(ROOT, 'data'), device: 'cpu', n_layer: 2, n_head: 2, n_embd: 16, block_size: 32,
    batch_size: 2, dropout: 0, max_iters: 2, eval_interval: 2, eval_iters: 1, log_interval: 1, seed: 1, warmup_iters: 0,
  });
  return join(ROOT, 'run', 'last');
}

test('attn viz --out writes the document; the server serves page, modules and JSON on 127.0.0.1; clear errors', async () => {
  const dir = await checkpoint();
  const out = join(ROOT, 'doc.json');
  const r = spawnSync(process.execPath, [CLI, 'viz', '--model', dir, '--text', 'to be or not', '--out', out, '--steps', '4'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(readFileSync(out, 'utf8')) as VizDocument;
  assert.equal(doc.tokens.join(''), 'to be or not');
  assert.equal(doc.attention.length, 2);
  assert.equal(doc.attention[0]!.length, 2);
  assert.equal(doc.attention[1]![1]![11]!.length, 12);
  assert.equal(doc.lens!.top.length, 3);
  assert.equal(doc.ablation!.delta.length, 2);
  assert.match(r.stderr, /12 tokens, 2 layers × 2 heads/);
  // The ablation as a table on stdout and a heat map beside the JSON.
  const table = r.stdout.split('\n').filter((l) => l.startsWith('| '));
  assert.equal(table.length, 3);
  assert.equal(table[0], '| layer \\ head | 1 | 2 |');
  assert.equal(Number(table[2]!.split('|')[3]), Number(doc.ablation!.delta[1]![1]!.toFixed(4)));
  assert.equal((readFileSync(join(ROOT, 'doc.ablation.svg'), 'utf8').match(/<rect class="cell"/g) ?? []).length, 4);

  const bad = spawnSync(process.execPath, [CLI, 'viz', '--model', dir, '--text', 'to be or not', '--max_tokens', '5'], { encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /12 tokens, over --max_tokens 5/);
  const none = spawnSync(process.execPath, [CLI, 'viz', '--model', join(ROOT, 'nowhere'), '--text', 'x'], { encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(none.status, 0);
  assert.match(none.stderr, /nowhere/);

  const child = spawn(process.execPath, [CLI, 'viz', '--model', dir, '--text', 'to be', '--port', '0', '--no_ablation', '--steps', '2']);
  try {
    const url = await new Promise<string>((ok, fail) => {
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(buf);
        if (m) ok(m[0]);
      });
      child.once('exit', (code) => fail(new Error(`viz exited with ${code}`)));
    });
    const page = await (await fetch(url)).text();
    assert.match(page, /import \{ renderViz, VIZ_CSS \} from '\.\/src\/viz\/render\.js'/);
    const served = (await (await fetch(`${url}doc.json`)).json()) as VizDocument;
    assert.equal(served.tokens.join(''), 'to be');
    assert.equal(served.ablation, null);
    for (const m of ['src/viz/render.js', 'src/eval/heatmap.js', 'src/eval/plot.js']) {
      const res = await fetch(url + m);
      assert.equal(res.status, 200, m);
      assert.match(res.headers.get('content-type') ?? '', /javascript/);
    }
    assert.equal((await fetch(`${url}../package.json`)).status, 404);
    assert.equal((await fetch(`${url}src/cli/main.js`)).status, 404, 'only the viz modules are served');
  } finally {
    child.kill('SIGTERM');
  }
});

test('attn viz on a Hugging Face BERT classifier directory (WordPiece tokenizer.json): attributions of its predicted class', () => {
  const dir = join(ROOT, 'hf-bert-cls');
  mkdirSync(dir, { recursive: true });
  const fixture = fileURLToPath(new URL('../../test/fixtures/hf-bert/bert-cls', import.meta.url));
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(fixture, f), join(dir, f));
  // The fixture's 50-token WordPiece vocabulary: specials, letters, and ##letters (as test/hf-bert.test.ts).
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const vocab: Record<string, number> = {};
  for (const t of ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', ...letters, ...[...letters].slice(0, 19).map((c) => `##${c}`)]) vocab[t] = Object.keys(vocab).length;
  const special = (content: string) => ({ id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', added_tokens: ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'].map(special),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  }));
  const out = join(ROOT, 'bert-doc.json');
  const r = spawnSync(process.execPath, [CLI, 'viz', '--model', dir, '--text', 'a fine day', '--out', out, '--steps', '8'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(readFileSync(out, 'utf8')) as VizDocument;
  assert.equal(doc.ids[0], 2, '[CLS] first');
  assert.equal(doc.ids[doc.ids.length - 1], 3, '[SEP] last');
  assert.equal(doc.model.kind, 'classifier');
  assert.equal(doc.classes!.probs.length, 3);
  assert.equal(doc.attention.length, 2);
  assert.equal(doc.attention[0]!.length, 4);
  assert.equal(doc.lens, null);
  assert.match(doc.attributions[0]!.target, new RegExp(`class ${doc.classes!.predicted}`));
});
