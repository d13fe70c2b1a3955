// Tensor: a strided view of a backend Storage, plus what autograd needs.
// Memory is owned by storages with a reference count: every Tensor on a storage holds one
// reference, dispose() drops it, and the storage goes back to its backend at zero. tidy()
// scopes dispose whatever was made inside them and not returned or kept, so a training loop
// holds steady memory without relying on the garbage collector; a FinalizationRegistry is the
// safety net for tensors that escape every scope.
import type { Backend, Layout, Storage } from '../backend/backend.js';
import type { DType, TypedArray } from './dtype.js';
import { contiguousStrides, fmt, numel, type Shape } from './shape.js';

/** A recorded op: how to turn the gradient of its output into gradients of its inputs. */
export interface GradNode {
  readonly op: string;
  inputs: Tensor[];
  /** null once the graph was released by a backward pass. */
  backward: ((g: Tensor) => (Tensor | null | undefined)[]) | null;
}

// ---- global state: default backend, grad mode, scopes ----
let defaultBackend: Backend | null = null;
export function setDefaultBackend(b: Backend): void {
  defaultBackend = b;
}
export function getDefaultBackend(): Backend {
  if (!defaultBackend) throw new Error('no backend is set: import attn from its index, or call setDefaultBackend()');
  return defaultBackend;
}

let gradEnabled = true;
export function isGradEnabled(): boolean {
  return gradEnabled;
}
/** Runs fn with gradient recording off (like torch.no_grad()). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs fn with gradient recording on, even inside noGrad (a backward pass that recomputes). */
export function withGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

const scopes: Set<Tensor>[] = [];

/** Runs fn; disposes every tensor created inside that is not part of its result or kept. */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  const survivors = new Set<Tensor>();
  collectTensors(result, survivors);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (survivors.has(t)) {
      parent?.add(t);
    } else if (!t.isKept && !t.isDisposed) {
      t.dispose();
    }
  }
  return result;
}

function collectTensors(x: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || x === null || typeof x !== 'object') return;
  if (x instanceof Tensor) {
    out.add(x);
    return;
  }
  if (Array.isArray(x)) for (const v of x) collectTensors(v, out, depth + 1);
  else if (x instanceof Map) for (const v of x.values()) collectTensors(v, out, depth + 1);
  else if (Object.getPrototypeOf(x) === Object.prototype) for (const v of Object.values(x)) collectTensors(v, out, depth + 1);
}

function releaseStorage(s: Storage): void {
  s.refs--;
  if (s.refs === 0 && !s.freed) s.backend.free(s);
}

const finalizer = new FinalizationRegistry<Storage>(releaseStorage);

let liveTensors = 0;
/** Number of tensors not yet disposed (for leak tests and diagnostics). */
export function liveTensorCount(): number {
  return liveTensors;
}

export class Tensor {
  /** Replaced only by castInPlace (module.halfWeights()) and setStorage (model-parallel shards); otherwise fixed. */
  private _storage: Storage;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  requiresGrad: boolean;
  grad: Tensor | null = null;
  node: GradNode | null = null;
  /** Optional name, used in error messages and checkpoints. */
  name: string | undefined;
  private _disposed = false;
  private _kept = false;

  constructor(storage: Storage, shape: Shape, strides?: readonly number[], offset = 0, requiresGrad = false) {
    if (storage.freed) throw new Error('cannot make a tensor on a freed storage');
    this._storage = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    this.requiresGrad = requiresGrad;
    storage.refs++;
    liveTensors++;
    finalizer.register(this, storage, this);
    scopes[scopes.length - 1]?.add(this);
  }

  get storage(): Storage {
    return this._storage;
  }
  get backend(): Backend {
    return this.storage.backend;
  }

  /**
   * Converts this tensor's values to `dtype` in place: the tensor object stays (modules keep
   * referring to it) and gets a new storage, like assigning param.data in PyTorch. Only for a
   * contiguous tensor that owns its whole storage, with no gradient history.
   */
  castInPlace(dtype: DType, convert: (t: Tensor) => Tensor): void {
    this.assertLive('castInPlace');
    if (this.dtype === dtype) return;
    if (this.node) throw new Error('castInPlace: the tensor has gradient history');
    if (this.offset !== 0 || this.storage.size !== this.size || !this.isContiguous()) {
      throw new Error(`castInPlace: tensor of shape ${fmt(this.shape)} is a view, not a whole storage`);
    }
    const converted = convert(this);
    if (converted.dtype !== dtype || converted.size !== this.size) throw new Error('castInPlace: the conversion gave the wrong dtype or size');
    const next = converted.storage;
    next.refs++;
    converted.dispose();
    const old = this._storage;
    this._storage = next;
    // The finalizer releases the storage it was given: hand it the new one.
    finalizer.unregister(this);
    finalizer.register(this, next, this);
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
    releaseStorage(old);
  }
  /**
   * Moves this tensor onto `next`, a storage of its dtype holding either all of its elements or
   * none (size 0: the tensor keeps its shape and no memory; kernels refuse it as too small). For a
   * model-parallel rank whose parameter trains as a shard elsewhere: the whole tensor is released,
   * and given values again only while a checkpoint is written. Whole contiguous tensors only.
   */
  setStorage(next: Storage): void {
    this.assertLive('setStorage');
    if (this.node) throw new Error('setStorage: the tensor has gradient history');
    if (this.offset !== 0 || !this.isContiguous() || (this.storage.size !== this.size && this.storage.size !== 0)) {
      throw new Error(`setStorage: tensor of shape ${fmt(this.shape)} is a view, not a whole storage`);
    }
    if (next.dtype !== this.dtype || (next.size !== this.size && next.size !== 0)) {
      throw new Error(`setStorage: a ${next.dtype} storage of ${next.size} elements for a ${this.dtype} tensor of ${this.size} (it must hold all of them or none)`);
    }
    if (next.freed) throw new Error('setStorage: the storage is freed');
    next.refs++;
    const old = this._storage;
    this._storage = next;
    finalizer.unregister(this);
    finalizer.register(this, next, this);
    releaseStorage(old);
  }
  get dtype(): DType {
    return this.storage.dtype;
  }
  get ndim(): number {
    return this.shape.length;
  }
  get size(): number {
    return numel(this.shape);
  }
  get isDisposed(): boolean {
    return this._disposed;
  }
  get isKept(): boolean {
    return this._kept;
  }
  get layout(): Layout {
    return { shape: this.shape, strides: this.strides, offset: this.offset };
  }

  isContiguous(): boolean {
    let s = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== s) return false;
      s *= this.shape[i]!;
    }
    return true;
  }

  /** Exempts this tensor from the enclosing tidy() scopes (parameters, optimizer state, caches). */
  keep(): this {
    this._kept = true;
    for (const s of scopes) s.delete(this);
    return this;
  }

  /** Releases this tensor's reference to its storage now. Safe to call twice. */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    liveTensors--;
    finalizer.unregister(this);
    for (const s of scopes) s.delete(this);
    this.node = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
    releaseStorage(this.storage);
  }

  /** Throws if this tensor can no longer be read. */
  assertLive(op: string): void {
    if (this._disposed) throw new Error(`${op}: tensor${this.name ? ` '${this.name}'` : ''} of shape ${fmt(this.shape)} was disposed`);
  }

  /** A contiguous copy of the values as a typed array (float32 → Float32Array, …). */
  data(): TypedArray {
    this.assertLive('data');
    return this.backend.read(this.storage, this.layout);
  }

  toArray(): number[] {
    return Array.from(this.data());
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item: tensor of shape ${fmt(this.shape)} has ${this.size} elements, not 1`);
    return this.data()[0]!;
  }

  /** Nested arrays, like torch's tolist(). */
  tolist(): unknown {
    const flat = this.data();
    const build = (dim: number, off: number): unknown => {
      if (dim === this.shape.length) return flat[off];
      const n = this.shape[dim]!;
      const step = numel(this.shape.slice(dim + 1));
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) out.push(build(dim + 1, off + i * step));
      return out;
    };
    return build(0, 0);
  }

  toString(): string {
    return `Tensor(shape=${fmt(this.shape)}, dtype=${this.dtype}, backend=${this.backend.name}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

/** Records a node on `out` when grad mode is on and some input needs a gradient. */
export function record(out: Tensor, op: string, inputs: Tensor[], backward: (g: Tensor) => (Tensor | null | undefined)[]): Tensor {
  if (!gradEnabled) return out;
  let needs = false;
  for (const t of inputs) if (t.requiresGrad) needs = true;
  if (!needs) return out;
  out.requiresGrad = true;
  out.node = { op, inputs, backward };
  return out;
}
