// attn serve's HTTP side: the OpenAI API on Node's own http module. No framework: the server
// needs a handful of routes, and owning the request and response objects directly gives full
// control of what matters here — reading a body with a hard size limit, streaming server-sent
// events token by token, holding a sequence out of the batch while its client's socket is full
// (backpressure), noticing a client that went away at once, and draining on SIGTERM.
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Backend } from '../backend/backend.js';
import type { CausalModel } from '../cli/common.js';
import { renderChat, type ChatTemplate } from '../generate/chat.js';
import { BpeTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { ApiError, badRequest } from './errors.js';
import { Metrics } from './metrics.js';
import { Scheduler, Sequence, type SequenceEvents, type TokenLogprob } from './scheduler.js';
import { parseChat, parseCompletion, type ChatParams, type CompletionParams } from './validate.js';

/** The template of models without one (attn's GPT checkpoints, base models): "role: content"
 *  lines, then "assistant:". */
export const PLAIN_CHAT_TEMPLATE: ChatTemplate = {
  source: "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
  bosToken: null,
  eosToken: null,
};

export interface ServeOptions {
  model: CausalModel;
  tokenizer: Tokenizer;
  /** The id clients name in `model` (GET /v1/models lists it). */
  modelId: string;
  backend: Backend;
  /** The model's chat template; null: PLAIN_CHAT_TEMPLATE. */
  chatTemplate?: ChatTemplate | null;
  /** Ids completions stop at (the model's eos). */
  stopIds?: readonly number[];
  /** Ids chat completions stop at (eos, end of turn). Default stopIds. */
  chatStopIds?: readonly number[];
  /** Clients must send `Authorization: Bearer KEY` on /v1/*. */
  apiKey?: string;
  /** Sequences decoded together (default 16). */
  maxBatch?: number;
  /** Largest max_tokens a request may ask for (default 4096). */
  maxTokens?: number;
  /** Sequences that may wait for a slot (default 4 · maxBatch); more get 429. */
  maxQueue?: number;
  /** Largest request body in bytes (default 1 MiB); larger get 413. */
  maxBodyBytes?: number;
  /** One line per request (method, path, status, ms); default none. */
  log?: (line: string) => void;
}

interface Choice {
  seq: Sequence;
  index: number;
  promptTokens: number;
}

export class ApiServer {
  readonly server: Server;
  readonly scheduler: Scheduler;
  readonly metrics: Metrics;
  private draining = false;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly o: Required<Omit<ServeOptions, 'apiKey' | 'log' | 'chatTemplate'>> & Pick<ServeOptions, 'apiKey' | 'log'> & { chatTemplate: ChatTemplate };
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(opts: ServeOptions) {
    const maxBatch = opts.maxBatch ?? 16;
    this.o = {
      ...opts,
      chatTemplate: opts.chatTemplate ?? PLAIN_CHAT_TEMPLATE,
      stopIds: opts.stopIds ?? [],
      chatStopIds: opts.chatStopIds ?? opts.stopIds ?? [],
      maxBatch,
      maxTokens: opts.maxTokens ?? 4096,
      maxQueue: opts.maxQueue ?? 4 * maxBatch,
      maxBodyBytes: opts.maxBodyBytes ?? 2 ** 20,
    };
    this.metrics = new Metrics(() => ({ queue: this.scheduler.queueLength, batch: this.scheduler.batchSize, running: this.inFlight.size }));
    this.scheduler = new Scheduler(opts.model, { maxBatch, maxQueue: this.o.maxQueue, backend: opts.backend, metrics: this.metrics });
    this.server = createServer((req, res) => {
      const done = this.handle(req, res).catch((e: unknown) => this.fail(res, e)).finally(() => this.inFlight.delete(done));
      this.inFlight.add(done);
    });
    this.server.on('clientError', (_e, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Listens (port 0: an ephemeral port); resolves with the address. */
  listen(port: number, host = '127.0.0.1'): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting connections, lets the running requests finish, then closes. */
  async shutdown(): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections();
    await this.scheduler.idle();
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
    this.server.closeAllConnections();
    await closed;
    this.scheduler.dispose();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const path = (req.url ?? '/').split('?')[0]!;
    const endpoint = path.startsWith('/v1/models') ? '/v1/models' : path;
    res.on('finish', () => {
      this.metrics.request(endpoint, res.statusCode);
      this.o.log?.(`${req.method} ${path} ${res.statusCode} ${(performance.now() - t0).toFixed(0)}ms`);
    });
    try {
      if (this.draining) {
        res.setHeader('Connection', 'close');
        throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
      }
      if (req.method === 'GET' && path === '/health') return json(res, 200, { status: 'ok' });
      if (req.method === 'GET' && path === '/metrics') {
        res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(this.metrics.text());
        return;
      }
      if (!path.startsWith('/v1/')) throw new ApiError(404, `no route ${req.method} ${path}`, 'not_found_error', null, 'unknown_url');
      this.authorize(req);
      if (req.method === 'GET' && path === '/v1/models') return json(res, 200, { object: 'list', data: [this.modelCard()] });
      if (req.method === 'GET' && path.startsWith('/v1/models/')) {
        const id = decodeURIComponent(path.slice('/v1/models/'.length));
        if (id !== this.o.modelId) throw new ApiError(404, `the model '${id}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
        return json(res, 200, this.modelCard());
      }
      if (req.method === 'POST' && path === '/v1/completions') return await this.completions(req, res, parseCompletion(await readJson(req, this.o.maxBodyBytes)));
      if (req.method === 'POST' && path === '/v1/chat/completions') return await this.chat(req, res, parseChat(await readJson(req, this.o.maxBodyBytes)));
      throw new ApiError(404, `no route ${req.method} ${path}`, 'not_found_error', null, 'unknown_url');
    } catch (e) {
      this.fail(res, e);
    }
  }

  /** Answers with the error (500 for anything that is not an ApiError); the server lives on. */
  private fail(res: ServerResponse, e: unknown): void {
    const err = e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error', null, 'internal_error');
    if (!(e instanceof ApiError)) this.o.log?.(`500: ${(e as Error)?.stack ?? String(e)}`);
    try {
      if (res.headersSent) {
        if (!res.writableEnded) res.end(`data: ${JSON.stringify(err.body())}\n\n`);
        return;
      }
      if (err.status === 413) res.setHeader('Connection', 'close');
      json(res, err.status, err.body());
    } catch {
      res.destroy();
    }
  }

  private authorize(req: IncomingMessage): void {
    const key = this.o.apiKey;
    if (key === undefined) return;
    const h = req.headers['authorization'] ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(h);
    const given = Buffer.from(m?.[1]?.trim() ?? '');
    const want = Buffer.from(key);
    if (!m) throw new ApiError(401, "you didn't provide an API key: send it as 'Authorization: Bearer KEY'", 'invalid_request_error', null, 'invalid_api_key');
    if (given.length !== want.length || !timingSafeEqual(given, want)) throw new ApiError(401, 'incorrect API key provided', 'invalid_request_error', null, 'invalid_api_key');
  }

  private modelCard(): { id: string; object: 'model'; created: number; owned_by: string; context_length: number } {
    return { id: this.o.modelId, object: 'model', created: this.created, owned_by: 'attn', context_length: this.o.model.config.block_size };
  }

  private checkModel(model: string): void {
    if (model !== this.o.modelId) throw badRequest(`the model '${model}' does not exist (this server serves '${this.o.modelId}')`, 'model', 'model_not_found');
  }

  private encode(text: string, chat: boolean): number[] {
    const tok = this.o.tokenizer;
    if (tok instanceof BpeTokenizer) return tok.encode(text, { allowedSpecial: 'all' });
    if (chat && tok.kind === 'hf') return (tok as Tokenizer & { encode(t: string, o?: { addSpecialTokens?: boolean }): number[] }).encode(text, { addSpecialTokens: false });
    return tok.encode(text);
  }

  private checkPrompt(ids: number[], param: string): number[] {
    const V = this.o.model.config.vocab_size;
    const block = this.o.model.config.block_size;
    if (ids.length === 0) {
      const eot = this.o.tokenizer.eotToken;
      if (eot === undefined) throw badRequest('the prompt encodes to no tokens', param, 'empty_prompt');
      ids = [eot];
    }
    const bad = ids.find((t) => !(Number.isInteger(t) && t >= 0 && t < V));
    if (bad !== undefined) throw badRequest(`prompt token ${bad} is not an id in [0, ${V})`, param, 'invalid_value');
    if (ids.length > block) {
      throw badRequest(`this model's maximum context length is ${block} tokens; the prompt has ${ids.length}`, param, 'context_length_exceeded');
    }
    return ids;
  }

  private maxTokensOf(p: { maxTokens: number | undefined }, dflt: number): number {
    if (p.maxTokens !== undefined && p.maxTokens > this.o.maxTokens) throw badRequest(`'max_tokens' is ${p.maxTokens}; this server allows at most ${this.o.maxTokens} (--max-tokens)`, 'max_tokens', 'invalid_value');
    return p.maxTokens ?? Math.min(dflt, this.o.maxTokens);
  }

  private sequences(prompts: number[][], p: CompletionParams | ChatParams, maxTokens: number, stopIds: readonly number[], events: SequenceEvents): Choice[] {
    const out: Choice[] = [];
    const stop = new Set(stopIds);
    const decode = (ids: number[]): string => this.o.tokenizer.decode(ids);
    prompts.forEach((ids, pi) => {
      for (let j = 0; j < p.n; j++) {
        const index = pi * p.n + j;
        const seed = p.seed !== undefined ? (p.seed + index) >>> 0 : randomInt(2 ** 32 - 1);
        const seq = new Sequence({
          promptIds: ids, maxTokens, temperature: p.temperature, topP: p.topP, topK: p.topK, seed, stopIds: stop, stopStrings: p.stop, logprobs: p.logprobs,
        }, events, decode);
        out.push({ seq, index, promptTokens: ids.length });
      }
    });
    return out;
  }

  private async completions(req: IncomingMessage, res: ServerResponse, p: CompletionParams): Promise<void> {
    this.checkModel(p.model);
    const prompts = p.prompts.map((x) => this.checkPrompt(typeof x === 'string' ? this.encode(x, false) : x, 'prompt'));
    const maxTokens = this.maxTokensOf(p, 16);
    const id = `cmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const base = { id, object: 'text_completion', created, model: this.o.modelId };
    const lpOf = (lps: TokenLogprob[], offset0: number) => {
      let off = offset0;
      const tokens = lps.map((l) => this.tokenText(l.token));
      const text_offset = tokens.map((t) => {
        const o = off;
        off += t.length;
        return o;
      });
      return {
        tokens, token_logprobs: lps.map((l) => l.logprob), text_offset,
        top_logprobs: lps.map((l) => Object.fromEntries(l.top.map((x) => [this.tokenText(x.token), x.logprob]))),
      };
    };
    await this.run(req, res, p, prompts, maxTokens, this.o.stopIds, {
      chunk: (c, text, lp, textSoFar) => ({ ...base, choices: [{ index: c.index, text, logprobs: lp && p.logprobs !== null ? lpOf([lp], textSoFar) : null, finish_reason: null }] }),
      finalChunk: (c) => ({ ...base, choices: [{ index: c.index, text: '', logprobs: null, finish_reason: c.seq.finishReason }] }),
      whole: (cs, usage) => ({
        ...base,
        choices: cs.map((c) => ({ index: c.index, text: c.seq.text, logprobs: p.logprobs !== null ? lpOf(c.seq.logprobs, 0) : null, finish_reason: c.seq.finishReason })),
        usage,
      }),
      usageChunk: (usage) => ({ ...base, choices: [], usage }),
    });
  }

  private async chat(req: IncomingMessage, res: ServerResponse, p: ChatParams): Promise<void> {
    this.checkModel(p.model);
    let text: string;
    try {
      text = renderChat(this.o.chatTemplate, p.messages, { addGenerationPrompt: true });
    } catch (e) {
      throw badRequest((e as Error).message, 'messages', 'invalid_messages');
    }
    const ids = this.checkPrompt(this.encode(text, true), 'messages');
    const maxTokens = this.maxTokensOf(p, this.o.model.config.block_size);
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const base = { id, object: 'chat.completion.chunk', created, model: this.o.modelId, system_fingerprint: null };
    const entry = (t: { token: number; logprob: number }) => {
      const s = this.tokenText(t.token);
      return { token: s, logprob: t.logprob, bytes: [...Buffer.from(s, 'utf8')] };
    };
    const lpOf = (lps: TokenLogprob[]) => ({ content: lps.map((l) => ({ ...entry(l), top_logprobs: l.top.map(entry) })), refusal: null });
    await this.run(req, res, p, [ids], maxTokens, this.o.chatStopIds, {
      first: (c) => ({ ...base, choices: [{ index: c.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] }),
      chunk: (c, t, lp) => ({ ...base, choices: [{ index: c.index, delta: { content: t }, logprobs: lp && p.logprobs !== null ? lpOf([lp]) : null, finish_reason: null }] }),
      finalChunk: (c) => ({ ...base, choices: [{ index: c.index, delta: {}, logprobs: null, finish_reason: c.seq.finishReason }] }),
      whole: (cs, usage) => ({
        ...base,
        object: 'chat.completion',
        choices: cs.map((c) => ({
          index: c.index, message: { role: 'assistant', content: c.seq.text, refusal: null }, logprobs: p.logprobs !== null ? lpOf(c.seq.logprobs) : null, finish_reason: c.seq.finishReason,
        })),
        usage,
      }),
      usageChunk: (usage) => ({ ...base, choices: [], usage }),
    });
  }

  private tokenText(id: number): string {
    return this.o.tokenizer.decode([id]);
  }

  /** Queues a request's sequences and answers: one JSON body, or a stream of chunks. */
  private run(req: IncomingMessage, res: ServerResponse, p: CompletionParams | ChatParams, prompts: number[][], maxTokens: number, stopIds: readonly number[], shape: {
    first?: (c: Choice) => unknown;
    chunk: (c: Choice, text: string, lp: TokenLogprob | null, textSoFar: number) => unknown;
    finalChunk: (c: Choice) => unknown;
    whole: (cs: Choice[], usage: Usage) => unknown;
    usageChunk: (usage: Usage) => unknown;
  }): Promise<void> {
    return new Promise<void>((resolve) => {
      let left = 0;
      let ended = false;
      const textLen = new Map<Sequence, number>();
      const byId = new Map<Sequence, Choice>();
      const send = (obj: unknown): void => {
        if (ended || res.writableEnded) return;
        if (!res.write(`data: ${JSON.stringify(obj)}\n\n`)) {
          for (const c of choices) c.seq.paused = c.seq.state === 'running';
          res.once('drain', () => {
            for (const c of choices) if (c.seq.state === 'running') this.scheduler.resume(c.seq);
          });
        }
      };
      const usage = (): Usage => {
        const prompt_tokens = prompts.reduce((s, x) => s + x.length, 0) * p.n;
        const completion_tokens = choices.reduce((s, c) => s + c.seq.out.length, 0);
        return { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
      };
      const end = (): void => {
        if (ended) return;
        if (p.stream) {
          if (p.includeUsage) send(shape.usageChunk(usage()));
          ended = true;
          if (!res.writableEnded) res.end('data: [DONE]\n\n');
        } else {
          ended = true;
          json(res, 200, shape.whole([...choices].sort((a, b) => a.index - b.index), usage()));
        }
        resolve();
      };
      const events: SequenceEvents = {
        onToken: (seq, _token, text, lp) => {
          if (!p.stream) return;
          const c = byId.get(seq)!;
          const so = textLen.get(seq) ?? 0;
          if (text !== '' || lp) send(shape.chunk(c, text, lp, so));
          textLen.set(seq, so + text.length);
        },
        onFinish: (seq) => {
          if (p.stream) send(shape.finalChunk(byId.get(seq)!));
          if (--left === 0) end();
        },
        onError: (_seq, err) => {
          for (const c of choices) this.scheduler.cancel(c.seq);
          if (!ended) {
            ended = true;
            this.fail(res, new ApiError(500, `generation failed: ${err.message}`, 'server_error', null, 'internal_error'));
            resolve();
          }
        },
      };
      const choices = this.sequences(prompts, p, maxTokens, stopIds, events);
      left = choices.length;
      for (const c of choices) byId.set(c.seq, c);
      // A client that goes away frees its slots at once.
      res.on('close', () => {
        if (ended) return;
        ended = true;
        for (const c of choices) this.scheduler.cancel(c.seq);
        resolve();
      });
      this.scheduler.submit(choices.map((c) => c.seq)); // throws 429: the caller answers it
      if (p.stream) {
        res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
        res.flushHeaders();
        if (shape.first) for (const c of choices) send(shape.first(c));
      }
      void req;
    });
  }
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s) });
  res.end(s);
}

/** The body as JSON: 413 past `limit` bytes, 400 when it does not parse. */
function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    const tooLarge = (): ApiError => new ApiError(413, `the request body exceeds the limit of ${limit} bytes`, 'invalid_request_error', null, 'request_too_large');
    const chunks: Buffer[] = [];
    let size = 0;
    let over = Number.isFinite(declared) && declared > limit;
    if (over && declared > 16 * limit) {
      // Not worth reading: answer now, then close the connection.
      reject(tooLarge());
      req.on('error', () => {});
      return;
    }
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) over = true;
      if (size > 16 * limit) {
        req.destroy();
        return;
      }
      if (!over) chunks.push(c);
    });
    req.on('error', (e) => reject(e));
    req.on('aborted', () => reject(new ApiError(400, 'the request was aborted', 'invalid_request_error', null, 'aborted')));
    req.on('end', () => {
      if (over) return reject(tooLarge());
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(badRequest(`the body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json'));
      }
    });
  });
}
