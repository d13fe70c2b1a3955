// attn serve under a bounded mixed load on 127.0.0.1: 1,000 requests at 16-way concurrency (memory compared after the first 300) —
// completions, streamed chats, clients that disconnect mid-stream, and bad requests of every
// kind — must give no 5xx, leave no slot or queue entry behind, and keep resident memory within
// 10 %. A model step that throws answers 500 and the server keeps serving.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { join } from 'node:path';
import { getBackend, liveTensorCount } from '../src/index.js';
import { loadModelDir, type CausalModel } from '../src/cli/common.js';
import { DecoderLM } from '../src/models/decoder.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { saveDecoderDir } from '../src/models/hf-decoder-files.js';
import { ApiServer } from '../src/serve/server.js';
import { CharTokenizer, loadTokenizer } from '../src/tokenizers/index.js';

const cpu = await getBackend('cpu');
setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;
const root = mkdtempSync(join(tmpdir(), 'attn-serve-load-'));
const dir = join(root, 'tiny');
{
  const tok = new CharTokenizer([...' abcdefghijklmnopqrstuvwxyz.,:!?\n']);
  const cfg = decoderConfigFromHF({ model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 96 });
  const m = new DecoderLM(cfg, { backend: cpu, seed: 9 });
  await saveDecoderDir(m, dir, { hfConfig: {} });
  m.dispose();
  await tok.save(dir);
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:" }));
}
const model = await loadModelDir('test', dir, cpu);
const tokenizer = await loadTokenizer(dir);
after(async () => {
  model.dispose();
  await rm(root, { recursive: true, force: true });
});

function call(port: number, path: string, body: string | null, opts: { key?: string; abortAfterFirstChunk?: boolean } = {}): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: body === null ? 'GET' : 'POST', headers: { authorization: `Bearer ${opts.key ?? 'k'}`, 'content-type': 'application/json' } }, (res) => {
      res.on('data', () => {
        if (opts.abortAfterFirstChunk) {
          req.destroy();
          resolve(res.statusCode!);
        }
      });
      res.on('end', () => resolve(res.statusCode!));
      res.on('error', () => resolve(res.statusCode!));
      res.on('close', () => resolve(res.statusCode!));
    });
    req.on('error', () => resolve(-1));
    req.end(body ?? undefined);
  });
}

function mixed(i: number): { path: string; body: string | null; key?: string; abort?: boolean; want: number[] } {
  const good = { model: 'tiny', max_tokens: 1 + (i % 9), temperature: (i % 3) * 0.5, seed: i };
  switch (i % 10) {
    case 0: case 1: case 2: return { path: '/v1/completions', body: JSON.stringify({ ...good, prompt: 'abc'.repeat(1 + (i % 5)), n: 1 + (i % 2) }), want: [200, 429] };
    case 3: return { path: '/v1/chat/completions', body: JSON.stringify({ ...good, messages: [{ role: 'user', content: 'hi' }], stream: true }), want: [200, 429] };
    case 4: return { path: '/v1/completions', body: JSON.stringify({ ...good, max_tokens: 60, prompt: 'x', stream: true }), abort: true, want: [200, 429, -1] };
    case 5: return { path: '/v1/completions', body: '{"model": "tiny", "prompt": ', want: [400] };
    case 6: return { path: '/v1/completions', body: JSON.stringify({ ...good, model: 'other', prompt: 'a' }), want: [400] };
    case 7: return { path: '/v1/completions', body: JSON.stringify({ ...good, prompt: 'a'.repeat(300) }), want: [400] };
    case 8: return { path: '/v1/models', body: null, key: 'wrong', want: [401] };
    default: return { path: '/v1/completions', body: JSON.stringify({ ...good, prompt: 'a'.repeat(9000) }), want: [413] };
  }
}

test('1,000 mixed requests at 16-way concurrency: no 5xx, no slot left behind, memory flat', async () => {
  const app = new ApiServer({ model, tokenizer, modelId: 'tiny', backend: cpu, apiKey: 'k', maxBatch: 16, maxQueue: 32, maxBodyBytes: 8192 });
  const { port } = await app.listen(0);
  const statuses = new Map<number, number>();
  const deadline = Date.now() + 25_000;
  let next = 0;
  const runTo = async (end: number) => {
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < end && Date.now() < deadline) {
        const r = mixed(next++);
        const status = await call(port, r.path, r.body, { key: r.key, abortAfterFirstChunk: r.abort });
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        assert.ok(r.want.includes(status), `request ${next - 1} (${r.path}): status ${status}, wanted ${r.want.join('/')}`);
      }
    }));
  };
  await runTo(300); // warm-up: V8's heap and code, the pool's capacity, the sockets
  gc();
  const rss0 = process.memoryUsage().rss;
  const live0 = liveTensorCount();
  const heap0 = process.memoryUsage().heapUsed;
  const total = Number(process.env['SERVE_LOAD_TOTAL'] ?? 1000);
  for (let end = 400; end <= total; end += 100) {
    await runTo(end);
    gc(); // V8 keeps pages it has not collected; a collection per 100 requests shows the trend
    if (process.env['SERVE_LOAD_DEBUG']) console.log(end, (process.memoryUsage().rss / 2 ** 20).toFixed(1));
  }
  assert.equal(next, total, 'all requests ran within the time limit');
  gc();
  const rss1 = process.memoryUsage().rss;
  assert.equal(liveTensorCount(), live0, 'no tensor leaks');
  if (process.env['SERVE_LOAD_DEBUG']) console.log({ rss0, rss1, heap0, heap1: process.memoryUsage().heapUsed, ext: process.memoryUsage().external, ab: process.memoryUsage().arrayBuffers });
  const t0 = Date.now();
  while ((app.scheduler.batchSize || app.scheduler.queueLength) && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 10));
  assert.equal(app.scheduler.batchSize, 0);
  assert.equal(app.scheduler.queueLength, 0);
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  assert.doesNotMatch(metrics, /status="5\d\d"/, 'no 5xx');
  assert.ok([...statuses.keys()].every((s) => s < 500), JSON.stringify([...statuses]));
  assert.ok(Math.abs(rss1 - rss0) / rss0 < 0.1, `RSS ${(rss0 / 2 ** 20).toFixed(0)} -> ${(rss1 / 2 ** 20).toFixed(0)} MiB`);
  await app.shutdown();
});

test('a model step that throws answers 500 and the server keeps serving', async () => {
  // A model whose prefill fails on prompts of 13 tokens and whose decode fails past 20 cached.
  const faulty = new Proxy(model, {
    get(target, prop, recv) {
      if (prop === 'forwardWithCache') return (idx: { shape: number[] }, cache: unknown) => {
        if (idx.shape[1] === 13) throw new Error('injected prefill fault');
        return (target as DecoderLM).forwardWithCache(idx as never, cache as never);
      };
      if (prop === 'createKVPool') return () => null; // the per-row path, whose caches we can see
      if (prop === 'decodeBatch') return (idx: never, caches: { length: number }[]) => {
        if (caches.some((c) => c.length > 20)) throw new Error('injected decode fault');
        return (target as DecoderLM).decodeBatch(idx, caches as never);
      };
      return Reflect.get(target, prop, recv) as unknown;
    },
  }) as CausalModel;
  const app = new ApiServer({ model: faulty, tokenizer, modelId: 'tiny', backend: cpu, maxBatch: 4 });
  const { port } = await app.listen(0);
  const body = (prompt: string, max: number, stream = false) => JSON.stringify({ model: 'tiny', prompt, max_tokens: max, temperature: 0, stream });
  assert.equal(await call(port, '/v1/completions', body('a'.repeat(13), 3)), 500);
  assert.equal(await call(port, '/v1/completions', body('abc', 40)), 500);
  assert.equal(await call(port, '/v1/completions', body('abc', 5)), 200);
  assert.equal(await call(port, '/v1/completions', body('abc', 40, true)), 200); // the stream ends with an error event
  assert.equal(await call(port, '/v1/completions', body('abcd', 3)), 200);
  assert.equal(app.scheduler.batchSize, 0);
  await app.shutdown();
});
