// attn serve (src/serve): the OpenAI API over HTTP with continuous batching, exercised with the
// official `openai` client and raw HTTP on 127.0.0.1 (ephemeral ports), on a tiny random llama
// with a character tokenizer and a chat template.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { getBackend, logSoftmax, noGrad, slice, tensor, tidy } from '../src/index.js';
import { loadModelDir } from '../src/cli/common.js';
import { DecoderLM } from '../src/models/decoder.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { saveDecoderDir } from '../src/models/hf-decoder-files.js';
import { ApiServer } from '../src/serve/server.js';
import { chatTemplateOf } from '../src/generate/chat.js';
import { CharTokenizer, loadTokenizer } from '../src/tokenizers/index.js';

const cpu = await getBackend('cpu');
const root = mkdtempSync(join(tmpdir(), 'attn-serve-'));
const dir = join(root, 'tiny-llama');
const CHARS = ' abcdefghijklmnopqrstuvwxyz.,:!?\n';
const TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
{
  const tok = new CharTokenizer([...CHARS]);
  const cfg = decoderConfigFromHF({ model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 96 });
  const m = new DecoderLM(cfg, { backend: cpu, seed: 7 });
  await saveDecoderDir(m, dir, { hfConfig: {} });
  m.dispose();
  await tok.save(dir);
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: TEMPLATE }));
}
const model = await loadModelDir('test', dir, cpu);
const tokenizer = await loadTokenizer(dir);
const KEY = 'sk-test-key';
const servers: ApiServer[] = [];

async function start(extra: Partial<ConstructorParameters<typeof ApiServer>[0]> = {}): Promise<{ app: ApiServer; url: string; client: OpenAI }> {
  const app = new ApiServer({ model, tokenizer, modelId: 'tiny', backend: cpu, chatTemplate: chatTemplateOf({ chat_template: TEMPLATE }), apiKey: KEY, maxBatch: 8, maxBodyBytes: 4096, ...extra });
  const { port } = await app.listen(0, '127.0.0.1');
  servers.push(app);
  const url = `http://127.0.0.1:${port}`;
  return { app, url, client: new OpenAI({ apiKey: KEY, baseURL: `${url}/v1`, maxRetries: 0, timeout: 20_000 }) };
}

after(async () => {
  for (const s of servers) await s.shutdown();
  model.dispose();
  await rm(root, { recursive: true, force: true });
});

const main = await start();

/** A raw HTTP request: status, headers and body text. */
function raw(url: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

test('GET /v1/models, /health and /metrics', async () => {
  const list = await main.client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ['tiny']);
  const health = await raw(main.url, 'GET', '/health');
  assert.equal(health.status, 200);
  assert.deepEqual(JSON.parse(health.body), { status: 'ok' });
  const metrics = await raw(main.url, 'GET', '/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.body, /# TYPE attn_requests_total counter/);
  assert.match(metrics.body, /attn_requests_total\{endpoint="\/v1\/models",status="200"\} 1/);
  assert.equal(metric(metrics.body, 'attn_queue_length'), 0);
});

test('completions: text, usage, finish_reason, seeds, n, stop', async () => {
  const r = await main.client.completions.create({ model: 'tiny', prompt: 'hello there', max_tokens: 8, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0]!;
  assert.equal(typeof c.text, 'string');
  assert.equal(r.usage!.prompt_tokens, 'hello there'.length);
  assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
  assert.equal(c.finish_reason, 'length');
  assert.equal(r.usage!.completion_tokens, 8);
  const again = await main.client.completions.create({ model: 'tiny', prompt: 'hello there', max_tokens: 8, temperature: 0 });
  assert.equal(again.choices[0]!.text, c.text, 'greedy is deterministic');
  const s1 = await main.client.completions.create({ model: 'tiny', prompt: 'abc', max_tokens: 12, temperature: 1, seed: 42, n: 3 });
  const s2 = await main.client.completions.create({ model: 'tiny', prompt: 'abc', max_tokens: 12, temperature: 1, seed: 42, n: 3 });
  assert.deepEqual(s1.choices.map((x) => x.index), [0, 1, 2]);
  assert.deepEqual(s2.choices.map((x) => x.text), s1.choices.map((x) => x.text), 'a seed reproduces the samples');
  assert.notEqual(new Set(s1.choices.map((x) => x.text)).size, 1, 'the n choices differ');
  // stop: cut before the first occurrence of a string the greedy text contains
  const long = await main.client.completions.create({ model: 'tiny', prompt: 'hello there', max_tokens: 30, temperature: 0 });
  const t = long.choices[0]!.text;
  const stop = t.slice(5, 7);
  const cut = await main.client.completions.create({ model: 'tiny', prompt: 'hello there', max_tokens: 30, temperature: 0, stop: [stop, 'QQ'] });
  assert.equal(cut.choices[0]!.text, t.slice(0, t.indexOf(stop)));
  assert.equal(cut.choices[0]!.finish_reason, 'stop');
  // token-id prompts and a list of prompts
  const ids = await main.client.completions.create({ model: 'tiny', prompt: tokenizer.encode('hello there'), max_tokens: 8, temperature: 0 });
  assert.equal(ids.choices[0]!.text, c.text);
  const two = await main.client.completions.create({ model: 'tiny', prompt: ['hello there', 'abc'], max_tokens: 4, temperature: 0 });
  assert.equal(two.choices.length, 2);
  assert.equal(two.choices[0]!.text, c.text.slice(0, 4));
});

test('completions logprobs match the model\'s log-softmax; chat logprobs have top_logprobs', async () => {
  const r = await main.client.completions.create({ model: 'tiny', prompt: 'hello', max_tokens: 5, temperature: 0, logprobs: 3 });
  const lp = r.choices[0]!.logprobs!;
  assert.equal(lp.tokens!.length, 5);
  assert.equal(lp.tokens!.join(''), r.choices[0]!.text);
  assert.equal(lp.top_logprobs!.length, 5);
  for (const top of lp.top_logprobs!) assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 3);
  const want = tidy(() => noGrad(() => {
    const ids = tokenizer.encode('hello');
    const logits = model.forward(tensor(Int32Array.from(ids), { backend: cpu, dtype: 'int32', shape: [1, ids.length] })).logits;
    return Array.from(logSoftmax(slice(logits, 1, ids.length - 1, ids.length), -1).data());
  }));
  const first = tokenizer.encode(lp.tokens![0]!)[0]!;
  assert.ok(Math.abs(lp.token_logprobs![0]! - want[first]!) < 1e-4, `${lp.token_logprobs![0]} vs ${want[first]}`);
  assert.ok(Math.abs(Math.max(...want) - lp.token_logprobs![0]!) < 1e-4, 'greedy picks the most likely token');
  const chat = await main.client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
  const content = chat.choices[0]!.logprobs!.content!;
  assert.equal(content.length, 4);
  for (const e of content) {
    assert.equal(e.top_logprobs.length, 2);
    assert.ok(e.logprob <= 0);
    assert.deepEqual(e.bytes, [...Buffer.from(e.token)]);
  }
});

test('chat completions and streaming (SSE ending in [DONE]) give the same text', async () => {
  const messages = [{ role: 'system' as const, content: 'be brief' }, { role: 'user' as const, content: 'hello' }];
  const whole = await main.client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0.8, seed: 3 });
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0]!.message.role, 'assistant');
  const prompt = 'system: be brief\nuser: hello\nassistant:';
  assert.equal(whole.usage!.prompt_tokens, prompt.length, 'the chat template renders the prompt');
  const stream = await main.client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0.8, seed: 3, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish: string | null = null;
  let role = '';
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      text += ch.delta.content ?? '';
      if (ch.delta.role) role = ch.delta.role;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.equal(text, whole.choices[0]!.message.content);
  assert.equal(finish, whole.choices[0]!.finish_reason);
  assert.deepEqual(usage, whole.usage);
  // completions stream, raw: the last event is [DONE]
  const r = await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'abc', max_tokens: 4, temperature: 0, stream: true }));
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /text\/event-stream/);
  const events = r.body.split('\n\n').filter((e) => e !== '');
  assert.equal(events.at(-1), 'data: [DONE]');
  const parsed = events.slice(0, -1).map((e) => JSON.parse(e.slice('data: '.length)) as { choices: { text: string; finish_reason: string | null }[] });
  assert.equal(parsed.at(-1)!.choices[0]!.finish_reason, 'length');
  const plain = await main.client.completions.create({ model: 'tiny', prompt: 'abc', max_tokens: 4, temperature: 0 });
  assert.equal(parsed.map((p) => p.choices[0]!.text).join(''), plain.choices[0]!.text);
});

test('errors: 400 with an OpenAI error object, 401, 404, 413; the client raises its typed exceptions', async () => {
  const check = (r: { status: number; body: string }, status: number, param: string | null, code?: string) => {
    assert.equal(r.status, status, r.body);
    const e = (JSON.parse(r.body) as { error: { message: string; type: string; param: string | null; code: string | null } }).error;
    assert.equal(typeof e.message, 'string');
    if (status === 400) assert.equal(e.type, 'invalid_request_error');
    assert.equal(e.param, param);
    if (code) assert.equal(e.code, code);
  };
  check(await raw(main.url, 'POST', '/v1/completions', '{"model": "tiny", "prompt": '), 400, null, 'invalid_json');
  check(await raw(main.url, 'POST', '/v1/completions', '[1, 2]'), 400, null);
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny' })), 400, 'prompt', 'missing_required_parameter');
  check(await raw(main.url, 'POST', '/v1/chat/completions', JSON.stringify({ model: 'tiny' })), 400, 'messages', 'missing_required_parameter');
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ prompt: 'a' })), 400, 'model', 'missing_required_parameter');
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'a', max_tokens: 'many' })), 400, 'max_tokens', 'invalid_type');
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'a', temperature: 5 })), 400, 'temperature', 'invalid_value');
  check(await raw(main.url, 'POST', '/v1/chat/completions', JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 3 }] })), 400, 'messages[0].content', 'invalid_type');
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'nope', prompt: 'a' })), 400, 'model', 'model_not_found');
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'a'.repeat(200) })), 400, 'prompt', 'context_length_exceeded');
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'a', max_tokens: 99999 })), 400, 'max_tokens');
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'a' }), { authorization: 'Bearer wrong' }), 401, null, 'invalid_api_key');
  check(await raw(main.url, 'GET', '/v1/models', undefined, { authorization: '' }), 401, null, 'invalid_api_key');
  check(await raw(main.url, 'GET', '/v2/nothing'), 404, null);
  check(await raw(main.url, 'POST', '/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'a'.repeat(5000) })), 413, null, 'request_too_large');
  check(await raw(main.url, 'POST', '/v1/completions', Buffer.alloc(200_000, 32)), 413, null, 'request_too_large');
  // the openai client's typed exceptions
  await assert.rejects(main.client.completions.create({ model: 'nope', prompt: 'a' }), OpenAI.BadRequestError);
  await assert.rejects(main.client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x'.repeat(120) }] }), (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.code, 'context_length_exceeded');
    assert.equal(e.param, 'messages');
    return true;
  });
  const wrong = new OpenAI({ apiKey: 'wrong', baseURL: `${main.url}/v1`, maxRetries: 0 });
  await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
  // the server is still serving
  const ok = await main.client.completions.create({ model: 'tiny', prompt: 'a', max_tokens: 2 });
  assert.equal(ok.choices.length, 1);
});

test('a full queue answers 429 (RateLimitError); a client that disconnects mid-stream frees its slot at once', async () => {
  const { app, url, client } = await start({ maxBatch: 1, maxQueue: 0 });
  // one long stream holds the only slot
  const ac = new AbortController();
  const stream = await client.completions.create({ model: 'tiny', prompt: 'abc', max_tokens: 80, temperature: 0.7, seed: 1, stream: true }, { signal: ac.signal });
  const it = stream[Symbol.asyncIterator]();
  await it.next();
  assert.equal(app.scheduler.batchSize, 1);
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'a', max_tokens: 2 }), OpenAI.RateLimitError);
  const m1 = (await raw(url, 'GET', '/metrics')).body;
  assert.equal(metric(m1, 'attn_batch_size'), 1);
  assert.match(m1, /attn_requests_total\{endpoint="\/v1\/completions",status="429"\} 1/);
  ac.abort(); // the client goes away mid-stream
  const t0 = Date.now();
  while ((app.scheduler.batchSize as number) !== 0 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
  assert.equal(app.scheduler.batchSize, 0, 'the slot is free');
  assert.ok(Date.now() - t0 < 500, `freed after ${Date.now() - t0} ms`);
  assert.equal(metric((await raw(url, 'GET', '/metrics')).body, 'attn_batch_size'), 0);
  const ok = await client.completions.create({ model: 'tiny', prompt: 'a', max_tokens: 3 });
  assert.equal(ok.choices[0]!.finish_reason, 'length');
});

test('continuous batching: a request gives the same tokens and logprobs alone and with others joining and leaving', async () => {
  const { app, client } = await start({ maxBatch: 8 });
  const A = { model: 'tiny', prompt: 'the quick brown fox', max_tokens: 40, logprobs: 2 };
  const runA = (temperature: number) => client.completions.create({ ...A, temperature, seed: 11 });
  for (const temperature of [0, 0.9]) {
    const alone = await runA(temperature);
    const steps0 = app.metrics.decodeSteps;
    const rows0 = app.metrics.decodeRows;
    // B starts first and runs long; A joins; C and D join mid-way and leave early; E streams.
    // Each joins once the server has run decode steps since the last one came (not after fixed
    // sleeps, which a slow or a fast machine turns into no overlap).
    const afterSteps = async (n: number): Promise<void> => {
      const target = app.metrics.decodeSteps + n;
      const t0 = Date.now();
      while (app.metrics.decodeSteps < target && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 1));
    };
    const others: Promise<unknown>[] = [client.completions.create({ model: 'tiny', prompt: 'zz', max_tokens: 60, temperature: 1, seed: 2 })];
    await afterSteps(1);
    const a = runA(temperature);
    await afterSteps(2);
    others.push(client.completions.create({ model: 'tiny', prompt: 'hello world, how', max_tokens: 5, temperature: 0.5, seed: 3, n: 2 }));
    await afterSteps(2);
    others.push(client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hey' }], max_tokens: 7, temperature: 1.2, top_p: 0.9, seed: 4 }));
    others.push((async () => {
      let s = '';
      for await (const ch of await client.completions.create({ model: 'tiny', prompt: 'stream', max_tokens: 20, temperature: 0, stream: true })) s += ch.choices[0]?.text ?? '';
      return s;
    })());
    const batched = await a;
    await Promise.all(others);
    const x = alone.choices[0]!;
    const y = batched.choices[0]!;
    assert.equal(y.text, x.text, `temperature ${temperature}: same text`);
    assert.deepEqual(y.logprobs!.tokens, x.logprobs!.tokens);
    x.logprobs!.token_logprobs!.forEach((v, i) => assert.ok(Math.abs(v - y.logprobs!.token_logprobs![i]!) < 1e-4, `logprob ${i}: ${v} vs ${y.logprobs!.token_logprobs![i]}`));
    const meanBatch = (app.metrics.decodeRows - rows0) / (app.metrics.decodeSteps - steps0);
    // One request at a time would give 137 rows in 132 steps (1.04: C's n = 2); together, about 2.
    assert.ok(meanBatch > 1.3, `the decode steps were batched (mean batch ${meanBatch.toFixed(2)})`);
  }
});

test('SIGTERM: stops accepting, finishes the running request, exits 0', async () => {
  const cliPath = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const child = spawn(process.execPath, [cliPath, 'serve', '--model', dir, '--port', '0', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const client = new OpenAI({ apiKey: 'none', baseURL: `${url}/v1`, maxRetries: 0 });
  const stream = await client.completions.create({ model: 'tiny-llama', prompt: 'abc', max_tokens: 60, temperature: 0, stream: true });
  let text = '';
  let finish: string | null = null;
  let signalled = false;
  for await (const ch of stream) {
    text += ch.choices[0]?.text ?? '';
    if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
    if (!signalled) {
      signalled = true;
      child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 50));
      // no new connections
      await assert.rejects(fetch(`${url}/health`));
    }
  }
  assert.ok(finish === 'length' || finish === 'stop', 'the running request finished');
  assert.ok(text.length > 0);
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /SIGTERM/);
});
