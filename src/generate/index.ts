// Autoregressive generation: feed the context, process the last position's logits, pick a
// token, append it, repeat. One loop (`steps`) serves generate() (synchronous, the whole
// result) and generateStream() (an async generator of tokens and text pieces).
//
// The KV cache: the prompt is prefilled in one forward, then each step feeds only the newest
// token. A model with a context of block_size cannot place a token beyond it, and cached keys
// carry their absolute positions (learned and sinusoidal tables are added at the input; RoPE
// rotates every layer's inputs, which depend on all earlier positions), so a full cache cannot
// simply slide. When it is full the cache is emptied and re-prefilled from the last
// `cacheRefill` tokens (default block_size). With the default, each step past block_size
// therefore costs a full forward, exactly like uncached generation — and yields the same
// tokens as it, since both see the last block_size tokens. A smaller cacheRefill buys
// block_size - cacheRefill cheap steps per refill at the price of a shorter context right
// after each refill (outputs then differ from uncached generation).
//
// Uncached generation crops the context to its last block_size tokens every step (nanoGPT).
import type { Backend } from '../backend/backend.js';
import type { ForwardCacheOptions, KVCache } from '../nn/attention.js';
import { slice, tensor } from '../tensor/ops.js';
import { Generator as Rng } from '../tensor/random.js';
import { getDefaultBackend, noGrad, tidy, type Tensor } from '../tensor/tensor.js';
import { checkOptions } from '../util/options.js';
import { SAMPLING_OPTIONS, selectToken, validateSamplingOptions, type SamplingOptions } from './sampling.js';

export * from './sampling.js';

/** What generation needs of a model; GPT provides it. */
export interface LanguageModel {
  readonly config: { readonly block_size: number; readonly vocab_size: number };
  training: boolean;
  train(mode?: boolean): unknown;
  /** idx int32 (1, T) → logits (1, T, V). */
  forward(idx: Tensor): { logits: Tensor };
  forwardWithCache(idx: Tensor, cache: KVCache, opts?: ForwardCacheOptions): { logits: Tensor };
  createKVCache(): KVCache;
  parameters(): Tensor[];
}

export type StopReason = 'length' | 'eot' | 'stop';

export interface GenerateOptions extends SamplingOptions {
  /** Upper bound on new tokens (default 256). */
  maxNewTokens?: number;
  /** Seeds the draws (ignored when greedy). Without seed or generator, a random seed. */
  seed?: number;
  /** Draws from this generator instead (it advances; takes precedence over seed). */
  generator?: Rng;
  /** Stop once this token (or one of these, e.g. Llama 3's <|eot_id|> and <|end_of_text|>) is
   *  produced; it ends `tokens` but not `text`. */
  eotToken?: number | readonly number[];
  /** Stop once the decoded continuation contains one of these; `text` ends before it. Needs decode. */
  stopStrings?: readonly string[];
  /** Token ids → text (e.g. tokenizer.decode): enables `text`, stop strings and text pieces. */
  decode?: (ids: number[]) => string;
  /** Prefill once, then feed one token per step (default true). */
  useCache?: boolean;
  /** Tokens kept when a full cache is re-prefilled (1 .. block_size, default block_size). */
  cacheRefill?: number;
  /** Called with each token as it is produced, and the text it completes ('' while buffered). */
  onToken?: (token: number, text: string) => void;
  /** Backend of the input ids (default: the model's parameters', else the default backend). */
  backend?: Backend;
}

export interface GenerateResult {
  /** The new token ids, including a final eotToken or the token that completed a stop string. */
  tokens: number[];
  stopReason: StopReason;
  /** decode(tokens) without the eot token and cut before a stop string (when decode is given). */
  text?: string;
  /** The stop string that ended generation, when stopReason is 'stop'. */
  stopString?: string;
}

export interface StreamEvent {
  token: number;
  /**
   * Text that became final with this token: '' while a multi-byte character is still split
   * (the decoded text ends in U+FFFD) or the end might be the start of a stop string. The
   * pieces of a stream join to its result's text.
   */
  text: string;
}

/** Generates up to maxNewTokens after promptIds; runs in eval mode without gradients. */
export function generate(model: LanguageModel, promptIds: readonly number[], opts: GenerateOptions = {}): GenerateResult {
  const it = steps(model, promptIds, opts);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}

/**
 * generate() as an async generator of tokens with their text pieces; its return value is the
 * GenerateResult. It yields to the event loop after each token so output can be flushed and
 * the consumer can stop early (break), which frees the cache at once.
 */
export async function* generateStream(model: LanguageModel, promptIds: readonly number[], opts: GenerateOptions = {}): AsyncGenerator<StreamEvent, GenerateResult, undefined> {
  const it = steps(model, promptIds, opts);
  try {
    for (;;) {
      const r = it.next();
      if (r.done) return r.value;
      yield r.value;
      await macrotask();
    }
  } finally {
    it.return(undefined as never); // runs the loop's cleanup if the consumer stopped early
  }
}

function macrotask(): Promise<void> {
  const g = globalThis as { setImmediate?: (f: () => void) => unknown };
  return new Promise((resolve) => (g.setImmediate ? g.setImmediate(resolve) : setTimeout(resolve, 0)));
}

const GENERATE_OPTIONS = [...SAMPLING_OPTIONS, 'maxNewTokens', 'seed', 'generator', 'eotToken', 'stopStrings', 'decode', 'useCache', 'cacheRefill', 'onToken', 'backend'];

function validate(model: LanguageModel, promptIds: readonly number[], o: GenerateOptions): void {
  checkOptions('generate', o, GENERATE_OPTIONS);
  validateSamplingOptions(o);
  const { block_size: block, vocab_size: V } = model.config;
  const problems: string[] = [];
  const n = o.maxNewTokens ?? 256;
  if (!Number.isInteger(n) || n < 0) problems.push(`maxNewTokens must be an integer ≥ 0, got ${n}`);
  if (promptIds.length === 0) problems.push('the prompt is empty: give at least one token (e.g. the end-of-text token)');
  const bad = promptIds.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= V);
  if (bad >= 0) problems.push(`prompt token ${promptIds[bad]} at position ${bad} is not an id in [0, ${V})`);
  if (o.cacheRefill !== undefined && !(Number.isInteger(o.cacheRefill) && o.cacheRefill >= 1 && o.cacheRefill <= block)) {
    problems.push(`cacheRefill must be an integer in [1, block_size=${block}], got ${o.cacheRefill}`);
  }
  if (o.stopStrings?.length && !o.decode) problems.push('stopStrings need a decode function');
  if (o.stopStrings?.some((s) => s.length === 0)) problems.push('stopStrings must not contain the empty string');
  for (const e of eotList(o.eotToken)) {
    if (!(Number.isInteger(e) && e >= 0 && e < V)) problems.push(`eotToken must be an id in [0, ${V}), got ${e}`);
  }
  if (problems.length) throw new Error(`generate: ${problems.join('; ')}`);
}

/** The generation loop: yields one event per token, returns the result. */
function* steps(model: LanguageModel, promptIds: readonly number[], opts: GenerateOptions): Generator<StreamEvent, GenerateResult, undefined> {
  validate(model, promptIds, opts);
  const block = model.config.block_size;
  const maxNew = opts.maxNewTokens ?? 256;
  const backend = opts.backend ?? model.parameters()[0]?.backend ?? getDefaultBackend();
  const rng = opts.generator ?? new Rng(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
  const ctx = [...promptIds]; // the whole context: the penalty looks at all of it, as HF does
  const out: number[] = [];
  const text = opts.decode ? new TextTracker(opts.decode, opts.stopStrings ?? []) : null;
  const refill = opts.cacheRefill ?? block;
  const eot = new Set(eotList(opts.eotToken));
  const cache = (opts.useCache ?? true) && maxNew > 0 ? model.createKVCache() : null;
  let cachedUpTo = 0; // ctx[0 .. cachedUpTo) is what the cache has seen (its tail, once cropped)
  const wasTraining = model.training;
  model.train(false);

  // The last position's logits as a plain row; every tensor of the step is freed by tidy.
  let rowBuf = new Float32Array(0);
  const nextLogits = (): Float32Array =>
    tidy(() =>
      noGrad(() => {
        let feed: number[];
        let logits: Tensor;
        if (cache) {
          feed = ctx.slice(cachedUpTo);
          if (cache.length === 0 && feed.length > block) feed = ctx.slice(-block); // long prompt
          else if (cache.length + feed.length > block) {
            cache.reset();
            feed = ctx.slice(-refill);
          }
          logits = model.forwardWithCache(ids(feed, backend), cache, { lastOnly: true }).logits; // (1, 1, V)
          cachedUpTo = ctx.length;
        } else {
          feed = ctx.slice(-block);
          logits = model.forward(ids(feed, backend)).logits;
          logits = slice(logits, 1, feed.length - 1, feed.length);
        }
        // (1, 1, V): one read per step, into one reused row where the backend can
        if (backend.readInto && logits.dtype === 'float32' && logits.isContiguous()) {
          if (rowBuf.length !== logits.size) rowBuf = new Float32Array(logits.size);
          backend.readInto(logits.storage, logits.offset, rowBuf);
          return rowBuf;
        }
        const row = logits.data();
        return row instanceof Float32Array ? row : Float32Array.from(row);
      }),
    );

  try {
    while (out.length < maxNew) {
      const token = selectToken(nextLogits(), ctx, opts, rng);
      ctx.push(token);
      out.push(token);
      let reason: StopReason | null = eot.has(token) ? 'eot' : out.length >= maxNew ? 'length' : null;
      let piece = '';
      if (text) {
        piece = text.update(reason === 'eot' ? out.slice(0, -1) : out, reason !== null);
        if (text.stopString !== undefined) reason = 'stop';
      }
      opts.onToken?.(token, piece);
      yield { token, text: piece };
      if (reason) return finish(reason);
    }
    return finish('length'); // maxNewTokens = 0
  } finally {
    cache?.dispose();
    if (wasTraining) model.train(true);
  }

  function finish(stopReason: StopReason): GenerateResult {
    const r: GenerateResult = { tokens: out, stopReason };
    if (text) r.text = text.final ?? opts.decode!(stopReason === 'eot' ? out.slice(0, -1) : out);
    if (text?.stopString !== undefined) r.stopString = text.stopString;
    return r;
  }
}

function eotList(e: number | readonly number[] | undefined): readonly number[] {
  return e === undefined ? [] : typeof e === 'number' ? [e] : e;
}

function ids(feed: number[], backend: Backend): Tensor {
  return tensor(Int32Array.from(feed), { backend, dtype: 'int32', shape: [1, feed.length] });
}

/**
 * Follows the decoded continuation and hands out the part that can no longer change: a token
 * may end inside a multi-byte UTF-8 character (decoded as a trailing U+FFFD until the rest
 * arrives), and a text that ends with the start of a stop string may still turn into it.
 * The whole continuation is decoded each step so that byte-level merges across tokens come
 * out as the tokenizer intends; that is O(n) per step, small beside a forward pass.
 */
export class TextTracker {
  private emitted = 0; // UTF-16 units of text already handed out
  /** The final text, once generation has ended. */
  final: string | undefined;
  stopString: string | undefined;

  constructor(private readonly decode: (ids: number[]) => string, private readonly stops: readonly string[]) {}

  /** Returns the newly final text; `ending` flushes everything held back. */
  update(tokens: number[], ending: boolean): string {
    const full = this.decode(tokens);
    let at = -1;
    for (const s of this.stops) {
      const i = full.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) {
        at = i;
        this.stopString = s;
      }
    }
    if (at >= 0) return this.end(full.slice(0, at));
    if (ending) return this.end(full);
    let safe = full.length;
    while (safe > this.emitted && full.charCodeAt(safe - 1) === 0xfffd) safe--;
    let hold = 0;
    for (const s of this.stops) {
      for (let L = Math.min(s.length - 1, safe - this.emitted); L > hold; L--) {
        if (full.startsWith(s.slice(0, L), safe - L)) {
          hold = L;
          break;
        }
      }
    }
    safe -= hold;
    const piece = full.slice(this.emitted, safe);
    this.emitted = safe;
    return piece;
  }

  private end(final: string): string {
    this.final = final;
    const piece = final.slice(this.emitted);
    this.emitted = final.length;
    return piece;
  }
}
