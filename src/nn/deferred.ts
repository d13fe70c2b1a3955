// Weights whose values come later, and perhaps only in part. Inside buildDeferred() a layer's
// normal(0, std) matrix (normalTensor) gets its shape on a storage of no elements, and the
// generator's state before its draw is noted; the generator still moves past the whole draw, so
// every later weight gets the values it gets in an ordinary build. Loading a checkpoint into
// such a tensor (Module.loadStateDict) notes the loaded values instead of writing them. Whoever
// built the model then reads each deferred weight as a stream (readDeferred), keeping what it
// needs: a tensor-parallel rank keeps its rows or columns and never holds the whole matrix; or
// it materializes the whole weight (a replicated one).
import { Generator, getDefaultBackend, Tensor, type DType } from '../tensor/index.js';
import type { Backend } from '../backend/backend.js';

type Source =
  | { kind: 'normal'; std: number; state: number[] }
  | { kind: 'zeros' }
  | { kind: 'values'; data: ArrayLike<number> };

const pending = new WeakMap<Tensor, Source>();
let depth = 0;

/** Runs build() with every normal-initialized weight deferred (see the file's comment). */
export function buildDeferred<T>(build: () => T): T {
  depth++;
  try {
    return build();
  } finally {
    depth--;
  }
}

/** Whether a buildDeferred() is running. */
export function deferring(): boolean {
  return depth > 0;
}

/**
 * A deferred normal(0, std) weight (zeros when `generator` is null: a weight about to be loaded).
 * The generator moves past the n draws an ordinary build makes, so the stream after it is the same.
 */
export function deferredNormal(shape: number[], std: number, opts: { backend?: Backend; dtype?: DType }, generator: Generator | null): Tensor {
  const dtype: DType = opts.dtype ?? 'float32';
  const backend = opts.backend ?? getDefaultBackend();
  const t = new Tensor(backend.alloc(dtype, 0), shape);
  if (!generator) {
    pending.set(t, { kind: 'zeros' });
    return t;
  }
  const state = generator.getState();
  for (let i = 0; i < t.size; i++) generator.normal();
  pending.set(t, { kind: 'normal', std, state });
  return t;
}

export function isDeferred(t: Tensor): boolean {
  return pending.has(t);
}

/** Notes `data` (kept by reference, not copied) as a deferred weight's values. */
export function setDeferredValues(t: Tensor, data: ArrayLike<number>): void {
  if (!pending.has(t)) throw new Error(`setDeferredValues: ${t.name ?? 'the tensor'} is not deferred`);
  if (data.length !== t.size) throw new Error(`setDeferredValues: ${data.length} values for ${t.name ?? 'a tensor'} of ${t.size}`);
  pending.set(t, { kind: 'values', data });
}

/** Rows of the draw handed over at once: bounds the memory a stream holds. */
const CHUNK = 1 << 16;

/**
 * Hands a deferred weight's values over in row-major order, CHUNK at a time: visit(start, values)
 * with `start` the flat index of values[0]. Stops after element `end` (default: all). The values are
 * the float32 (or float64) ones an ordinary build holds: randn's mean + std·normal(), rounded to the dtype.
 */
export function readDeferred(t: Tensor, visit: (start: number, values: ArrayLike<number>) => void, end = t.size): void {
  const src = pending.get(t);
  if (!src) throw new Error(`readDeferred: ${t.name ?? 'the tensor'} is not deferred`);
  const n = Math.min(end, t.size);
  if (src.kind === 'values') {
    for (let at = 0; at < n; at += CHUNK) visit(at, subarray(src.data, at, Math.min(at + CHUNK, n)));
    return;
  }
  const buf = t.dtype === 'float64' ? new Float64Array(CHUNK) : new Float32Array(CHUNK);
  let draw: (() => number) | null = null;
  if (src.kind === 'normal') {
    // A generator of its own at the noted state: the model's generator has moved on.
    const g = new Generator();
    g.setState(src.state);
    const std = src.std;
    draw = (): number => 0 + std * g.normal();
  }
  for (let at = 0; at < n; at += CHUNK) {
    const len = Math.min(CHUNK, n - at);
    const out = len === CHUNK ? buf : buf.subarray(0, len);
    if (draw) for (let i = 0; i < len; i++) out[i] = draw();
    else out.fill(0);
    visit(at, out);
  }
}

/** The weight's whole values on its own storage; it is an ordinary tensor afterwards. */
export function materializeDeferred(t: Tensor): void {
  const all = t.dtype === 'float64' ? new Float64Array(t.size) : new Float32Array(t.size);
  readDeferred(t, (start, v) => all.set(v, start));
  t.setStorage(t.backend.upload(all, t.dtype));
  pending.delete(t);
}

/** Forgets a deferred weight's source once its holder has taken what it needs. */
export function settleDeferred(t: Tensor): void {
  pending.delete(t);
}

function subarray(a: ArrayLike<number>, lo: number, hi: number): ArrayLike<number> {
  const s = a as unknown as { subarray?: (lo: number, hi: number) => ArrayLike<number> };
  return typeof s.subarray === 'function' ? s.subarray(lo, hi) : Array.prototype.slice.call(a, lo, hi) as number[];
}
