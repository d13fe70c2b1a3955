// attn serve under load: the official `openai` client streams completions from a server in a
// child process on 127.0.0.1 (a GPT of GPT-2 124M's shape with random weights and GPT-2's
// tokenizer), c workers at a time for c = 1, 4, 8, 16, each level bounded in requests and in time.
// Reports aggregate generated tokens/s, p50/p99 time to first token, mean decode batch, and the
// server's resident memory before and after.
//   node dist/bench/serve.js [--levels 1,4,8,16] [--seconds 25] [--per-stream 8] [--max-tokens 32] [--small] [--raw] [--profile DIR] [--json] [--out FILE]
// --per-stream N: each level runs at most N x c requests (default 8).
// --small: a 4-layer, 256-wide GPT (for a quick look). The server side is `--server` of this file.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { getBackend } from '../src/index.js';
import { GPT, GPT2_CONFIG } from '../src/models/gpt.js';
import { ApiServer } from '../src/serve/server.js';
import { GPT2_EOT, loadGpt2Tokenizer } from '../src/tokenizers/index.js';
import { log, machineInfo, num, scriptArgs, table, writeJsonIfAsked } from './util.js';

const cli = scriptArgs();
const { flag, opt } = cli;

if (flag('server')) {
  // The server process: build the model, serve on an ephemeral port, print it.
  const backend = await getBackend('cpu');
  const cfg = flag('small') ? { ...GPT2_CONFIG, n_layer: 4, n_embd: 256, n_head: 4 } : GPT2_CONFIG;
  const model = new GPT(cfg, { backend, seed: 0 }).eval();
  const tokenizer = await loadGpt2Tokenizer();
  const app = new ApiServer({ model, tokenizer, modelId: 'gpt2-shape', backend, stopIds: [GPT2_EOT], maxBatch: 16, maxQueue: 64 });
  const { port } = await app.listen(0, '127.0.0.1');
  process.stdout.write(`port ${port} pid ${process.pid}\n`);
  process.on('SIGTERM', () => void app.shutdown().then(() => process.exit(0)));
  await new Promise<void>(() => {});
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function metricsOf(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(attn_[a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

const levels = opt('levels', '1,4,8,16').split(',').map(Number);
const seconds = Number(opt('seconds', '25'));
const maxTokens = Number(opt('max-tokens', '32'));
const perStream = Number(opt('per-stream', '8'));
const script = fileURLToPath(import.meta.url);
const profile = cli.args.get('profile'); // --profile DIR: the server runs under --cpu-prof
const child = spawn(process.execPath, [...(typeof profile === 'string' ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : []), script, '--server', ...(flag('small') ? ['--small'] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
const { port, pid } = await new Promise<{ port: number; pid: number }>((resolve, reject) => {
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const m = /port (\d+) pid (\d+)/.exec(out);
    if (m) resolve({ port: Number(m[1]), pid: Number(m[2]) });
  });
  child.on('exit', (c) => reject(new Error(`server exited ${c}`)));
});
const url = `http://127.0.0.1:${port}`;
const client = new OpenAI({ apiKey: 'none', baseURL: `${url}/v1`, maxRetries: 0, timeout: 120_000 });
const PROMPTS = ['The meaning of life is', 'Once upon a time, in a land far away,', 'In 1905 Albert Einstein published', 'def fibonacci(n):', 'The weather today', 'My favourite recipe for bread'];

/** --raw: a bare node:http client that only counts the events (no SDK parsing), to see what the
 *  client's own CPU costs on a 2-core machine. */
function oneRaw(i: number): Promise<{ ttft: number; tokens: number }> {
  const t0 = performance.now();
  const body = JSON.stringify({ model: 'gpt2-shape', prompt: PROMPTS[i % PROMPTS.length]!, max_tokens: maxTokens, temperature: 0.8, seed: i, stream: true, stream_options: { include_usage: true } });
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/v1/completions', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let ttft = NaN;
      let tail = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (Number.isNaN(ttft)) ttft = performance.now() - t0;
        tail = (tail + d).slice(-400);
      });
      res.on('end', () => {
        const m = /"completion_tokens":(\d+)/.exec(tail);
        resolve({ ttft, tokens: m ? Number(m[1]) : 0 });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function one(i: number): Promise<{ ttft: number; tokens: number }> {
  if (flag('raw')) return oneRaw(i);
  const t0 = performance.now();
  let ttft = NaN;
  let tokens = 0;
  const stream = await client.completions.create({
    model: 'gpt2-shape', prompt: PROMPTS[i % PROMPTS.length]!, max_tokens: maxTokens, temperature: 0.8, seed: i, stream: true, stream_options: { include_usage: true },
  });
  for await (const ch of stream) {
    if (Number.isNaN(ttft) && ch.choices.length) ttft = performance.now() - t0;
    if (ch.usage) tokens = ch.usage.completion_tokens;
  }
  return { ttft, tokens };
}

log(`attn serve load (${flag('raw') ? 'bare node:http client' : 'openai client'}): ${flag('small') ? 'small GPT' : 'GPT-2 124M shape'}, random weights, max_tokens ${maxTokens}, ${seconds} s or ${perStream} × c requests per level`);
await one(0); // warm-up: V8 and the kernels
await one(1);
// and every level's batch once, untimed: the first steps at a new batch size grow the KV pool,
// fault in its pages and compile the batched paths (the first 8-stream level used to run 5-15 %
// slower than a second one right after it)
for (const c of [...new Set(levels)]) await Promise.all(Array.from({ length: c }, (_, i) => one(10_000 + i)));
const rssBefore = rssMiB(pid);
const rows: { streams: number; requests: number; tokens: number; seconds: number; tokens_per_s: number; ttft_p50_ms: number; ttft_p99_ms: number; mean_batch: number; split: Record<string, number> }[] = [];
const pc = (f: number): string => `${(100 * f).toFixed(0)} %`;
let n = 100;
for (const c of levels) {
  const m0 = await metricsOf(url);
  const deadline = performance.now() + seconds * 1000;
  const limit = perStream * c; // requests per level
  let started = 0;
  const ttfts: number[] = [];
  let tokens = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async () => {
    while (started < limit && performance.now() < deadline) {
      started++;
      const r = await one(n++);
      ttfts.push(r.ttft);
      tokens += r.tokens;
    }
  }));
  const dt = (performance.now() - t0) / 1000;
  const m1 = await metricsOf(url);
  const meanBatch = (m1['attn_decode_rows_total']! - m0['attn_decode_rows_total']!) / (m1['attn_decode_steps_total']! - m0['attn_decode_steps_total']!);
  // where the server's time went: its scheduler's phases as fractions of the level's wall time
  const phase = (p: string): number => (m1[`attn_step_seconds_total{phase="${p}"}`]! - m0[`attn_step_seconds_total{phase="${p}"}`]!) / dt;
  const split = { prefill: phase('prefill'), forward: phase('forward'), sample: phase('sample') };
  rows.push({ streams: c, requests: ttfts.length, tokens, seconds: dt, tokens_per_s: tokens / dt, ttft_p50_ms: pct(ttfts, 50), ttft_p99_ms: pct(ttfts, 99), mean_batch: meanBatch, split });
  log(`  ${c} streams: ${ttfts.length} requests, ${tokens} tokens in ${dt.toFixed(1)} s: ${num(tokens / dt)} tokens/s, TTFT p50 ${num(pct(ttfts, 50))} ms p99 ${num(pct(ttfts, 99))} ms, mean batch ${meanBatch.toFixed(2)}; server time: prefill ${pc(split.prefill)}, decode forward ${pc(split.forward)}, sampling+events ${pc(split.sample)}, other ${pc(1 - split.prefill - split.forward - split.sample)}`);
}
const rssAfter = rssMiB(pid);
const m = await metricsOf(url);
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
// A level listed more than once (--levels 1,8,1,8: alternating, so that drift in this machine's
// speed hits both alike) counts as all its rows together: their tokens over their seconds.
const rate = (c: number): number | undefined => {
  const rs = rows.filter((r) => r.streams === c);
  return rs.length ? rs.reduce((n, r) => n + r.tokens, 0) / rs.reduce((t, r) => t + r.seconds, 0) : undefined;
};
const base = rate(1);
log('');
log(table(['streams', 'requests', 'tokens', 'tokens/s', 'vs 1 stream', 'TTFT p50 ms', 'TTFT p99 ms', 'mean batch'],
  rows.map((r) => [String(r.streams), String(r.requests), String(r.tokens), num(r.tokens_per_s), base ? `${(r.tokens_per_s / base).toFixed(2)}x` : '', num(r.ttft_p50_ms), num(r.ttft_p99_ms), r.mean_batch.toFixed(2)])));
log(`server RSS: ${rssBefore.toFixed(0)} MiB after warm-up, ${rssAfter.toFixed(0)} MiB after the run (${(((rssAfter - rssBefore) / rssBefore) * 100).toFixed(1)} %); 5xx answers: ${Object.keys(m).length ? 'see /metrics' : '?'}`);
const eight = rate(8);
if (base && eight) log(`target: 8 streams ≥ 4x one stream's tokens/s: ${(eight / base).toFixed(2)}x ${eight / base >= 4 ? 'met' : 'NOT met'}`);
writeJsonIfAsked(cli, 'bench/results/serve.json', () => ({ machine: machineInfo(), client: flag('raw') ? 'node:http' : 'openai', model: flag('small') ? 'small' : 'gpt2-124M-shape', max_tokens: maxTokens, rows, rss_mib: { before: rssBefore, after: rssAfter } }));
