// Random training batches from a token stream, as nanoGPT's get_batch: B random offsets,
// x = tokens[i : i+T], y = tokens[i+1 : i+1+T]. Seeded, and its position can be saved and
// restored, so a resumed run draws exactly the batches the uninterrupted run would have.
import { Generator } from '../tensor/random.js';

/** One batch of next-token examples, row-major int32 (batchSize, blockSize). */
export interface Batch {
  x: Int32Array;
  /** x shifted left by one: y[b, t] is the token after x[b, t]. */
  y: Int32Array;
  batchSize: number;
  blockSize: number;
}

export interface BatchSamplerOptions {
  batchSize: number;
  blockSize: number;
  seed?: number;
}

/** What state() returns: the generator's words (null for its unset Box–Muller spare) and a draw count. */
export interface SamplerState {
  rng: (number | null)[];
  /** Batches drawn so far (informational; the RNG words alone fix what comes next). */
  batches: number;
}

/** A Generator's state as JSON-safe values: NaN (its "no spare normal" mark) becomes null. */
export function rngStateToJson(g: Generator): (number | null)[] {
  return g.getState().map((v) => (Number.isNaN(v) ? null : v));
}

/** Restores what rngStateToJson saved; `what` names the source in errors. */
export function rngStateFromJson(g: Generator, state: unknown, what = 'generator state'): void {
  const ok = Array.isArray(state) && (state.length === 4 || state.length === 5)
    && state.slice(0, 4).every((w) => Number.isInteger(w) && w >= 0 && w < 2 ** 32)
    && (state[4] === undefined || state[4] === null || typeof state[4] === 'number')
    && !state.slice(0, 4).every((w) => w === 0); // xoshiro never leaves the all-zero state
  if (!ok) throw new Error(`${what}: expected 4 uint32 words (not all zero) and an optional number or null, got ${JSON.stringify(state)}`);
  g.setState((state as (number | null)[]).map((v) => (v === null ? NaN : v)));
}

/** The batch starting at each offset (one row per offset). */
export function gatherBatch(tokens: ArrayLike<number>, offsets: readonly number[], blockSize: number): Batch {
  const B = offsets.length;
  const T = blockSize;
  const x = new Int32Array(B * T);
  const y = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const i = offsets[b]!;
    if (!(Number.isInteger(i) && i >= 0 && i + T < tokens.length)) {
      throw new RangeError(`gatherBatch: offset ${i} needs tokens up to ${i + T}, but there are ${tokens.length}`);
    }
    for (let t = 0; t < T; t++) {
      x[b * T + t] = tokens[i + t]!;
      y[b * T + t] = tokens[i + t + 1]!;
    }
  }
  return { x, y, batchSize: B, blockSize: T };
}

export class BatchSampler {
  readonly batchSize: number;
  readonly blockSize: number;
  private readonly rng: Generator;
  private drawn = 0;

  constructor(readonly tokens: ArrayLike<number>, opts: BatchSamplerOptions) {
    const { batchSize, blockSize } = opts;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`BatchSampler: batchSize must be a positive integer, got ${batchSize}`);
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError(`BatchSampler: blockSize must be a positive integer, got ${blockSize}`);
    if (tokens.length <= blockSize) {
      throw new RangeError(`BatchSampler: ${tokens.length} tokens are too few for blockSize ${blockSize} (need at least ${blockSize + 1})`);
    }
    this.batchSize = batchSize;
    this.blockSize = blockSize;
    this.rng = new Generator(opts.seed ?? 0);
  }

  /** The next batch's start offsets, uniform in [0, tokens - blockSize). */
  nextOffsets(): number[] {
    const span = this.tokens.length - this.blockSize;
    const out: number[] = [];
    for (let b = 0; b < this.batchSize; b++) out.push(this.rng.randint(span));
    this.drawn++;
    return out;
  }

  next(): Batch {
    return gatherBatch(this.tokens, this.nextOffsets(), this.blockSize);
  }

  state(): SamplerState {
    return { rng: rngStateToJson(this.rng), batches: this.drawn };
  }

  /** Continues from a state() (validated first; a bad state changes nothing). */
  setState(state: SamplerState): void {
    const batches = (state as Partial<SamplerState> | null)?.batches;
    if (!(Number.isInteger(batches) && batches! >= 0)) throw new Error(`BatchSampler.setState: 'batches' must be a non-negative integer, got ${JSON.stringify(batches)}`);
    rngStateFromJson(this.rng, state.rng, 'BatchSampler.setState: rng');
    this.drawn = batches!;
  }
}
