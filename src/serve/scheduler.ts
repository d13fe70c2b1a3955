// Continuous batching. Every sequence (one choice of one request) holds its own KV cache, its
// own sampling parameters and its own seeded generator. The loop runs one step at a time, each
// in its own macrotask so the HTTP server keeps reading and writing between steps:
//   1. sequences that were cancelled (client gone) or finished have already left;
//   2. waiting sequences join while slots are free;
//   3. one forward feeds the newest token of every running sequence and the whole prompt of
//      every joining one — one matmul per weight for all of the step's tokens, one fused
//      attention call per layer for the decode rows and one per joining prompt — and each
//      sequence is sampled with its own parameters and generator (a joining one gets its first
//      token). The KV caches live in a KVPool (model.stepPooled): one (maxBatch, Hkv, T, D)
//      buffer per layer, the running sequences in slots 0 .. B-1, each decode row attending to
//      its own positions through a key mask, a joining prompt written into the next free slot.
//      Models whose attention cannot share a pool (sliding windows, sparse patterns) keep one
//      cache per sequence: a joining prompt is prefilled alone, and model.decodeBatch batches
//      the matmuls and loops the attention core over rows;
//   4. a sequence that hit a stop id, a stop string, max_tokens or the context leaves at once
//      and frees its slot.
// A sequence therefore sees exactly the computation it would see alone, and with the same seed
// yields the same tokens whoever else is in the batch (test/serve.test.ts).
import type { Backend } from '../backend/backend.js';
import { TextTracker } from '../generate/index.js';
import { argmaxLogits, selectToken } from '../generate/sampling.js';
import type { KVCache, KVPool } from '../nn/attention.js';
import { slice, tensor } from '../tensor/ops.js';
import { Generator } from '../tensor/random.js';
import { noGrad, tidy, type Tensor } from '../tensor/tensor.js';
import type { CausalModel } from '../cli/common.js';
import { ApiError } from './errors.js';
import type { Metrics } from './metrics.js';

export interface SequenceParams {
  promptIds: number[];
  maxTokens: number;
  /** 0: greedy. */
  temperature: number;
  topP: number;
  topK?: number;
  seed: number;
  stopIds: ReadonlySet<number>;
  stopStrings: readonly string[];
  /** Alternatives reported per token (0: only the chosen token's logprob); null: no logprobs. */
  logprobs: number | null;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
  top: { token: number; logprob: number }[];
}

export type FinishReason = 'stop' | 'length';

export interface SequenceEvents {
  /** A token was produced; `text` is the part of the completion that became final (may be ''). */
  onToken(seq: Sequence, token: number, text: string, logprob: TokenLogprob | null): void;
  /** The sequence ended (not called when cancelled). */
  onFinish(seq: Sequence): void;
  /** The sequence failed (its request gets a 500). */
  onError(seq: Sequence, err: Error): void;
}

export class Sequence {
  cache: KVCache | null = null;
  readonly out: number[] = [];
  readonly logprobs: TokenLogprob[] = [];
  /** The completion's text once finished (cut before a stop string, without a stop token). */
  text = '';
  finishReason: FinishReason | null = null;
  state: 'waiting' | 'running' | 'done' = 'waiting';
  /** Held out of decode steps while its client's socket is full (backpressure). */
  paused = false;
  /** The token sampled last and not yet fed to the model. */
  pending = -1;
  readonly rng: Generator;
  readonly created = performance.now();
  firstTokenAt: number | null = null;
  private readonly tracker: TextTracker;

  constructor(readonly params: SequenceParams, readonly events: SequenceEvents, decode: (ids: number[]) => string) {
    this.rng = new Generator(params.seed);
    this.tracker = new TextTracker(decode, params.stopStrings);
  }

  /** Records a sampled token; returns whether the sequence is done. */
  accept(token: number, lp: TokenLogprob | null, blockSize: number): boolean {
    this.out.push(token);
    if (lp) this.logprobs.push(lp);
    const p = this.params;
    let reason: FinishReason | null = p.stopIds.has(token) ? 'stop' : this.out.length >= p.maxTokens || p.promptIds.length + this.out.length > blockSize ? 'length' : null;
    const piece = this.tracker.update(reason === 'stop' ? this.out.slice(0, -1) : this.out, reason !== null);
    if (this.tracker.stopString !== undefined) reason = 'stop';
    if (this.firstTokenAt === null) this.firstTokenAt = performance.now();
    this.pending = token;
    this.events.onToken(this, token, piece, lp);
    if (reason) {
      this.finishReason = reason;
      this.text = this.tracker.final ?? '';
    }
    return reason !== null;
  }
}

export interface SchedulerOptions {
  maxBatch: number;
  /** Sequences that may wait for a slot; more are refused with 429. */
  maxQueue: number;
  backend: Backend;
  metrics?: Metrics;
  /** Prompt tokens that may join one pooled step (default 2048; a longer prompt joins alone). */
  prefillTokens?: number;
}

export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private scheduled = false;
  private idleWaiters: (() => void)[] = [];
  /** The running sequences' caches (slot i: running[i]); null: one KVCache per sequence. */
  readonly pool: KVPool | null;

  constructor(readonly model: CausalModel, readonly opts: SchedulerOptions) {
    this.pool = model.createKVPool(opts.maxBatch);
  }

  dispose(): void {
    this.pool?.dispose();
  }

  get queueLength(): number {
    return this.waiting.length;
  }

  /** Sequences holding a slot (a KV cache). */
  get batchSize(): number {
    return this.running.length;
  }

  /** Queues the sequences of one request, all or none (429 when the queue cannot hold them). */
  submit(seqs: Sequence[]): void {
    const free = this.opts.maxBatch - this.running.length;
    if (this.waiting.length + seqs.length > this.opts.maxQueue + Math.max(0, free)) {
      throw new ApiError(429, `the server is busy: ${this.waiting.length} sequences queued (--max-queue ${this.opts.maxQueue}); retry later`, 'rate_limit_error', null, 'queue_full');
    }
    this.waiting.push(...seqs);
    this.kick();
  }

  /** Removes a sequence (its client went away): its slot and cache are freed now. */
  cancel(seq: Sequence): void {
    if (seq.state === 'done') return;
    const w = this.waiting.indexOf(seq);
    if (w >= 0) this.waiting.splice(w, 1);
    this.release(seq);
  }

  resume(seq: Sequence): void {
    seq.paused = false;
    this.kick();
  }

  /** Resolves once nothing is waiting or running. */
  idle(): Promise<void> {
    if (!this.waiting.length && !this.running.length) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private release(seq: Sequence): void {
    seq.state = 'done';
    const i = this.running.indexOf(seq);
    if (i >= 0) {
      const last = this.running.length - 1;
      if (this.pool) {
        // keep the running slots a prefix: the last one moves into the freed slot
        this.pool.move(last, i);
        this.pool.lengths[last] = 0;
        this.running[i] = this.running[last]!;
        this.running.pop();
      } else this.running.splice(i, 1);
    }
    seq.cache?.dispose();
    seq.cache = null;
  }

  private kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.step());
  }

  private step(): void {
    this.scheduled = false;
    try {
      if (this.pool) this.stepPooled(this.pool);
      else {
        this.admit();
        this.decode();
      }
    } catch (e) {
      // A failure of the model step fails the sequences in it, never the server.
      for (const s of [...this.running]) this.fail(s, e as Error);
    }
    const work = this.waiting.length > 0 || this.running.some((s) => !s.paused);
    if (work) this.kick();
    else if (!this.waiting.length && !this.running.length) {
      const ws = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of ws) w();
    }
  }

  private fail(seq: Sequence, err: Error): void {
    this.release(seq);
    try {
      seq.events.onError(seq, err);
    } catch {
      /* the request is gone */
    }
  }

  private finish(seq: Sequence): void {
    this.release(seq);
    seq.events.onFinish(seq);
  }

  /**
   * One step over the pool: waiting sequences join while slots are free (their prompts, up to
   * opts.prefillTokens of them per step, at least one prompt) and ride along with the running
   * sequences' decode rows in one forward (model.stepPooled), so a joining prompt costs no
   * forward of its own; then every row is sampled. Every running sequence holds slot i =
   * running[i] and, after the step, the joined ones are running too.
   */
  private stepPooled(pool: KVPool): void {
    const block = this.model.config.block_size;
    const B = this.running.length;
    const joins: Sequence[] = [];
    let budget = this.opts.prefillTokens ?? 2048;
    while (this.waiting.length && B + joins.length < this.opts.maxBatch) {
      const seq = this.waiting[0]!;
      const n = seq.params.promptIds.length;
      if (joins.length && n > budget) break;
      this.waiting.shift();
      if (n === 0 || n >= block) { // the server's checks refuse these with a 400 first
        seq.state = 'running';
        this.fail(seq, new Error(`a prompt of ${n} tokens cannot start in a context of ${block}`));
        continue;
      }
      budget -= n;
      seq.state = 'running';
      joins.push(seq);
    }
    const active = this.running.some((s) => !s.paused);
    if (!joins.length && !active) return;
    const t0 = performance.now();
    const nDecode = active ? this.running.length : 0;
    // logits row i belongs to order[i]: the running sequences' decode rows, then the joins' last positions
    const order = [...(active ? this.running : []), ...joins];
    const logits = tidy(() => noGrad(() => {
      // a step whose rows are all paused has nothing to decode: only the joins run
      const decode = active ? this.running.map((s) => s.pending) : [];
      const l = this.model.stepPooled(decode, joins.map((s, j) => ({ slot: B + j, tokens: s.params.promptIds })), pool).logits; // (rows, 1, V)
      return this.readLogits(l, order);
    }));
    const t1 = performance.now();
    const rows = [...this.running];
    if (nDecode) rows.forEach((s, i) => { if (s.paused) pool.lengths[i]! -= 1; });
    this.running.push(...joins);
    if (this.opts.metrics) {
      if (nDecode) {
        this.opts.metrics.decodeSteps++;
        this.opts.metrics.decodeRows += nDecode;
      }
      for (const s of joins) this.opts.metrics.promptTokens += s.params.promptIds.length;
    }
    order.forEach((seq, i) => {
      if (seq.state !== 'running' || seq.paused) return; // cancelled by an earlier row's callback, or paused
      try {
        this.sample(seq, logits.row(i), block, logits.drawn[i]!);
      } catch (e) {
        this.fail(seq, e as Error);
      }
    });
    if (this.opts.metrics) {
      const prefill = joins.length ? (t1 - t0) * (joins.reduce((n, s) => n + s.params.promptIds.length, 0) / (nDecode + joins.reduce((n, s) => n + s.params.promptIds.length, 0))) : 0;
      this.opts.metrics.stepSeconds.prefill += prefill / 1000;
      this.opts.metrics.stepSeconds.forward += (t1 - t0 - prefill) / 1000;
      this.opts.metrics.stepSeconds.sample += (performance.now() - t1) / 1000;
    }
  }

  /** Without a pool: prefills waiting sequences (each alone, into its own cache) while slots are
   *  free and samples their first token. */
  private admit(): void {
    const block = this.model.config.block_size;
    while (this.waiting.length && this.running.length < this.opts.maxBatch) {
      const seq = this.waiting.shift()!;
      seq.state = 'running';
      this.running.push(seq);
      try {
        const t0 = performance.now();
        seq.cache = this.model.createKVCache();
        const ids = seq.params.promptIds;
        const row = tidy(() => noGrad(() => {
          const logits = this.model.forwardWithCache(tensor(Int32Array.from(ids), { backend: this.opts.backend, dtype: 'int32', shape: [1, ids.length] }), seq.cache!, { lastOnly: true }).logits;
          return readRow(logits, 0, 0);
        }));
        const t1 = performance.now();
        if (this.opts.metrics) this.opts.metrics.promptTokens += ids.length;
        this.sample(seq, row, block);
        if (this.opts.metrics) {
          this.opts.metrics.stepSeconds.prefill += (t1 - t0) / 1000;
          this.opts.metrics.stepSeconds.sample += (performance.now() - t1) / 1000;
        }
      } catch (e) {
        this.fail(seq, e as Error);
      }
    }
  }

  /** One batched forward for the running sequences (each with its own cache; paused ones sit
   *  the step out), then a token for each. */
  private decode(): void {
    const block = this.model.config.block_size;
    const rows = this.running.filter((s) => !s.paused);
    if (!rows.length) return;
    const B = rows.length;
    const t0 = performance.now();
    const logits = tidy(() => noGrad(() => {
      const idx = tensor(Int32Array.from(rows.map((s) => s.pending)), { backend: this.opts.backend, dtype: 'int32', shape: [B, 1] });
      return this.readLogits(this.model.decodeBatch(idx, rows.map((s) => s.cache!)).logits, rows); // (B, 1, V)
    }));
    const t1 = performance.now();
    if (this.opts.metrics) {
      this.opts.metrics.decodeSteps++;
      this.opts.metrics.decodeRows += B;
    }
    rows.forEach((seq, i) => {
      if (seq.state !== 'running') return; // cancelled by an earlier row's callback
      try {
        this.sample(seq, logits.row(i), block, logits.drawn[i]!);
      } catch (e) {
        this.fail(seq, e as Error);
      }
    });
    if (this.opts.metrics) {
      this.opts.metrics.stepSeconds.forward += (t1 - t0) / 1000;
      this.opts.metrics.stepSeconds.sample += (performance.now() - t1) / 1000;
    }
  }

  /**
   * The step's logits (rows, 1, V), row i for seqs[i]: the rows that sample at a temperature and
   * nothing else (no top-p or top-k, no logprobs) are drawn by the backend where it can
   * (Backend.sampleTempered: one call for all rows, on its threads), the rest read back once.
   */
  private readLogits(l: Tensor, seqs: Sequence[]): { drawn: (number | null)[]; row: (i: number) => Float32Array | null } {
    const V = l.shape[2]!;
    const drawn: (number | null)[] = seqs.map(() => null);
    const draw = this.opts.backend.sampleTempered;
    if (draw && l.dtype === 'float32' && l.isContiguous()) {
      const at = seqs.flatMap((seq, i) => (seq.state === 'running' && !seq.paused && onBackend(seq.params) ? [i] : []));
      if (at.length) {
        // one uniform per row from its own generator: the draw sampleTempered would make
        const u = Float64Array.from(at, (i) => seqs[i]!.rng.random());
        const tokens = draw.call(this.opts.backend, l.storage, l.offset, V, Int32Array.from(at), Float64Array.from(at, (i) => seqs[i]!.params.temperature), u);
        at.forEach((i, j) => { drawn[i] = tokens[j]!; });
      }
    }
    if (drawn.every((d) => d !== null)) return { drawn, row: () => null };
    const d = l.data(); // one read for every row
    const all = d instanceof Float32Array ? d : Float32Array.from(d);
    return { drawn, row: (i) => all.subarray(i * V, (i + 1) * V) };
  }

  /** A token for seq from its logits row, or the one the backend drew (-1: no finite logit). */
  private sample(seq: Sequence, logits: Float32Array | null, block: number, drawn: number | null = null): void {
    const p = seq.params;
    let lp: TokenLogprob | null = null;
    if (drawn === -1) throw new Error('sampling: every logit is -Infinity (or NaN)');
    if (drawn === null && !logits) throw new Error('sampling: no logits for this row');
    const logProbs = p.logprobs !== null ? logSoftmax(logits!) : null;
    const ctx = p.promptIds.length ? p.promptIds.concat(seq.out) : seq.out;
    const token = drawn !== null ? drawn
      : p.temperature === 0 ? argmaxLogits(logits!)
        : p.topP >= 1 && !p.topK ? sampleTempered(logits!, p.temperature, seq.rng)
          : selectToken(logits!, ctx, { temperature: p.temperature, topP: p.topP, topK: p.topK }, seq.rng);
    if (logProbs) lp = { token, logprob: logProbs[token]!, top: topN(logProbs, p.logprobs!) };
    this.opts.metrics?.tokens(1);
    if (seq.out.length === 0 && this.opts.metrics) {
      this.opts.metrics.ttftSum += (performance.now() - seq.created) / 1000;
      this.opts.metrics.ttftCount++;
    }
    const done = seq.accept(token, lp, block);
    if (done && seq.state === 'running') this.finish(seq);
  }
}

/** Sampling at a temperature with nothing else asked: what Backend.sampleTempered draws. */
function onBackend(p: SequenceParams): boolean {
  return p.temperature > 0 && p.topP >= 1 && !p.topK && p.logprobs === null;
}

const scratch = { e: new Float64Array(0) };

/**
 * A draw from softmax(logits / temperature) in one exp pass and one scan (selectToken takes four
 * passes over the 50k logits of a GPT-2 vocabulary: temperature, max, exp, normalise): the
 * inverse CDF of the unnormalised weights at r · total, r from the sequence's generator.
 */
export function sampleTempered(logits: Float32Array, temperature: number, rng: Generator): number {
  const V = logits.length;
  let m = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i]! > m) m = logits[i]!;
  if (m === -Infinity) throw new Error('sampling: every logit is -Infinity (or NaN)');
  if (scratch.e.length < V) scratch.e = new Float64Array(V);
  const e = scratch.e;
  const inv = 1 / temperature;
  let total = 0;
  for (let i = 0; i < V; i++) {
    const l = logits[i]!;
    const w = l > -Infinity ? Math.exp((l - m) * inv) : 0; // NaN > x is false: NaN weighs 0
    e[i] = w;
    total += w;
  }
  const r = rng.random() * total;
  let cum = 0;
  let last = -1;
  for (let i = 0; i < V; i++) {
    const w = e[i]!;
    if (w === 0) continue;
    cum += w;
    last = i;
    if (r < cum) return i;
  }
  return last;
}

function readRow(logits: Tensor, b: number, t: number): Float32Array {
  const r = slice(slice(logits, 0, b, b + 1), 1, t, t + 1).data();
  return r instanceof Float32Array ? Float32Array.from(r) : Float32Array.from(r);
}

/** log softmax in float64 of the raw logits (the model's distribution, before temperature). */
function logSoftmax(logits: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of logits) if (v > m) m = v;
  let s = 0;
  for (const v of logits) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

function topN(lp: Float64Array, n: number): { token: number; logprob: number }[] {
  if (n <= 0) return [];
  const best: { token: number; logprob: number }[] = [];
  for (let i = 0; i < lp.length; i++) {
    const v = lp[i]!;
    if (best.length < n || v > best[best.length - 1]!.logprob) {
      let j = best.length < n ? best.length : best.length - 1;
      if (best.length < n) best.push({ token: i, logprob: v });
      while (j > 0 && best[j - 1]!.logprob < v) {
        best[j] = best[j - 1]!;
        j--;
      }
      best[j] = { token: i, logprob: v };
    }
  }
  return best;
}

