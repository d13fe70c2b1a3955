// attn viz: interpretability of a model on one text (src/eval/interpret.ts) as a JSON document,
// served with its page (src/viz/render.ts) on 127.0.0.1, or written to a file with --out.
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { encodeSentence, specialIdsOf } from '../data/sentences.js';
import { heatmapSvg, heatmapTable } from '../eval/heatmap.js';
import { buildVizDocument, type InterpretableModel, type VizDocument } from '../eval/interpret.js';
import { writeFileAtomic } from '../io/files.js';
import { encodeForHFBert } from '../eval/classify.js';
import { BERT_MODEL_TYPE, loadBertCheckpoint } from '../models/bert-checkpoint.js';
import { loadHFBertDir } from '../models/hf-bert-files.js';
import { readHFConfig } from '../models/hf-decoder-files.js';
import { BpeTokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, loadModelDir, requireDir, tokenizerOfModel } from './common.js';

const STATIC: Record<string, string> = {
  '/src/viz/render.js': '../viz/render.js',
  '/src/eval/heatmap.js': '../eval/heatmap.js',
  '/src/eval/plot.js': '../eval/plot.js',
};

/** The page: loads doc.json and draws it with src/viz/render.js. */
export const VIZ_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>attn viz</title></head>
<body><div id="app">loading…</div>
<script type="module">
import { renderViz, VIZ_CSS } from './src/viz/render.js';
const style = document.createElement('style');
style.textContent = VIZ_CSS;
document.head.append(style);
const doc = await (await fetch('./doc.json')).json();
window.vizView = renderViz(document.getElementById('app'), doc);
window.vizReady = true;
</script></body></html>
`;

/** Serves doc and its page on 127.0.0.1:port (0: any free port). */
export async function serveViz(doc: VizDocument, port = 0): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const json = JSON.stringify(doc);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET') return send(405, 'text/plain', 'GET only\n');
    if (path === '/' || path === '/index.html') return send(200, 'text/html', VIZ_PAGE);
    if (path === '/doc.json') return send(200, 'application/json', json);
    const file = STATIC[path];
    if (!file) return send(404, 'text/plain', `no ${path}\n`);
    readFile(new URL(file, import.meta.url), 'utf8').then(
      (body) => send(200, 'text/javascript', body),
      (e: Error) => send(500, 'text/plain', `${e.message}\n`),
    );
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => ok());
  });
  const { port: bound } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${bound}/`,
    server,
    close: () => new Promise<void>((ok) => {
      server.close(() => ok());
      server.closeAllConnections(); // keep-alive connections would hold close() open
    }),
  };
}

/** The model of DIR (a causal LM, or an 'attn finetune' classifier), its tokenizer and the ids of text. */
async function loadFor(dir: string, text: string, backend: Awaited<ReturnType<typeof backendFromFlags>>): Promise<{ model: InterpretableModel; tok: Tokenizer; ids: number[]; description: string }> {
  let config: Record<string, unknown> = {};
  if (!dir.endsWith('.gguf')) {
    await requireDir('viz', 'model', dir);
    config = await readHFConfig(dir).catch(() => ({}));
  }
  if (config['model_type'] === BERT_MODEL_TYPE) {
    const { model, tokenizer } = await loadBertCheckpoint(dir, { backend });
    if (!model.cls_head) throw new UsageError(`viz: ${dir} is an encoder without a classification head (n_classes 0): fine-tune it with 'attn finetune' first`);
    const ids = encodeSentence(tokenizer, text, specialIdsOf(tokenizer), model.config.max_len);
    return { model, tok: tokenizer, ids, description: `classifier (${model.config.n_classes} classes)` };
  }
  if (config['model_type'] === 'bert') {
    const { model } = await loadHFBertDir(dir, { backend });
    if (!model.classifier) throw new UsageError(`viz: ${dir} is a Hugging Face BERT without a classification head: fine-tune it with 'attn finetune --task sst2 --init_from ${dir}' first`);
    const tokenizer = await loadTokenizer(dir);
    const ids = encodeForHFBert(tokenizer, text, model.config.max_position_embeddings);
    return { model, tok: tokenizer, ids, description: `Hugging Face BERT classifier (${model.config.num_labels} classes)` };
  }
  const model = await loadModelDir('viz', dir, backend);
  let tok: Tokenizer;
  try {
    tok = await tokenizerOfModel(dir, model);
  } catch (e) {
    throw new UsageError(`viz: ${dir} has no tokenizer (${(e as Error).message})`);
  }
  const ids = tok instanceof BpeTokenizer ? tok.encode(text, { disallowedSpecial: [] }) : tok.encode(text);
  const kind = 'model_type' in model.config ? String(model.config.model_type) : 'GPT';
  return { model, tok, ids, description: `${kind} language model` };
}

export async function runViz(f: Flags): Promise<void> {
  const dir = f.required('model', 'a model directory');
  const text = f.required('text', 'the text to explain');
  const out = f.string('out');
  const port = f.number('port', { integer: true, min: 0, max: 65535 }) ?? 0;
  const k = f.number('k', { integer: true, min: 1, max: 50 }) ?? 5;
  const steps = f.number('steps', { integer: true, min: 1, max: 1024 }) ?? 32;
  const maxTokens = f.number('max_tokens', { integer: true, min: 1 }) ?? 64;
  const noAblation = f.bool('no_ablation');
  const backend = await backendFromFlags(f);
  f.done();
  const { model, tok, ids, description } = await loadFor(dir, text, backend);
  if (ids.length === 0) throw new UsageError('viz: the text has no tokens');
  if (ids.length > maxTokens) throw new UsageError(`viz: the text is ${ids.length} tokens, over --max_tokens ${maxTokens} (the attention maps grow as layers × heads × tokens²)`);
  const t0 = Date.now();
  let doc: VizDocument;
  try {
    doc = buildVizDocument(model, tok, text, ids, { k, steps, ablation: !noAblation, description });
  } catch (e) {
    throw new UsageError(`viz: ${(e as Error).message}`);
  }
  process.stderr.write(`viz: ${ids.length} tokens, ${doc.model.layers} layers × ${doc.model.heads} heads in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  if (out !== undefined) {
    await writeFileAtomic(out, `${JSON.stringify(doc)}\n`);
    process.stderr.write(`viz: wrote ${out}\n`);
    if (doc.ablation) {
      // The ablation also as a heat map beside the JSON and a table on standard output.
      const svg = `${out.replace(/\.json$/i, '')}.ablation.svg`;
      const names = (n: number) => Array.from({ length: n }, (_, i) => String(i + 1));
      await writeFileAtomic(svg, `${heatmapSvg(doc.ablation.delta, {
        title: `loss change when a head is zeroed (intact ${doc.ablation.base.toFixed(4)})`, rowLabel: 'layer', colLabel: 'head',
        rowNames: names(doc.model.layers), colNames: names(doc.model.heads), cell: doc.model.heads > 16 ? 20 : 36,
      })}\n`);
      process.stderr.write(`viz: wrote ${svg}\n`);
      console.log(`head ablation: ${doc.ablation.metric}, intact ${doc.ablation.base.toFixed(4)}; the change with one head zeroed (layers and heads from 1)\n`);
      console.log(heatmapTable(doc.ablation.delta, 'layer', 'head', 4, 1));
    }
    return;
  }
  const { url, close } = await serveViz(doc, port);
  console.log(url);
  // Serve until Ctrl-C or SIGTERM (the command returns, and the process ends, only then).
  await new Promise<void>((done) => {
    const stop = () => void close().then(done);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
