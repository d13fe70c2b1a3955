// Module: the base of every layer. It keeps an ordered registry of parameters, buffers and
// child modules so that a model's tensors have PyTorch/GPT-2 dotted names
// (`transformer.h.0.attn.c_attn.weight`), which is what checkpoints and optimizers key on.
// Registration is explicit (registerParameter / registerModule): JS has no __setattr__ hook.
import type { Backend } from '../backend/backend.js';
import { fmt, noGrad, sameShape, Tensor, to, type DType, type Generator } from '../tensor/index.js';
import { isDeferred, setDeferredValues } from './deferred.js';

/** Marks t as a trainable parameter: requiresGrad, and kept so tidy() scopes never free it. */
export function parameter(t: Tensor, name?: string): Tensor {
  t.requiresGrad = true;
  if (name !== undefined) t.name = name;
  return t.keep();
}

/** Where a module's tensors are made. Every field is optional; the default backend, float32
 *  and the default generator otherwise. */
export interface ModuleOptions {
  backend?: Backend;
  dtype?: DType;
  /** Draws the initial weights, so a seeded generator reproduces a model exactly. */
  generator?: Generator;
}

/** A value loadStateDict accepts: a tensor (any backend) or plain values with a shape. */
export type StateValue = Tensor | { readonly shape: readonly number[]; readonly data: ArrayLike<number> };

export interface LoadStateDictOptions {
  /** Missing or unexpected keys are an error (default true). Shape mismatches always are. */
  strict?: boolean;
}

export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

export class Module {
  /** Training mode: dropout is active. Set for the whole tree with train() / eval(). */
  training = true;
  private readonly _parameters = new Map<string, Tensor | null>();
  private readonly _buffers = new Map<string, { t: Tensor; persistent: boolean }>();
  private readonly _modules = new Map<string, Module>();

  /** Registers (or replaces) a parameter under `name`; null reserves the name (e.g. no bias). */
  registerParameter<T extends Tensor | null>(name: string, t: T): T {
    checkName(name);
    if (t) parameter(t);
    this._parameters.set(name, t);
    return t;
  }

  /** A non-trainable tensor owned by the module (e.g. a fixed position table). Persistent
   *  buffers are saved in stateDict(); the default is not (they can be recomputed). */
  registerBuffer(name: string, t: Tensor, persistent = false): Tensor {
    checkName(name);
    this._buffers.set(name, { t: t.keep(), persistent });
    return t;
  }

  registerModule<M extends Module>(name: string, m: M): M {
    checkName(name);
    this._modules.set(name, m);
    return m;
  }

  /** Direct children with their names. */
  namedChildren(): [string, Module][] {
    return [...this._modules];
  }

  /** This module and every descendant, depth first, with dotted names ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, m] of this._modules) out.push(...m.namedModules(join(prefix, n)));
    return out;
  }

  /** Parameters with dotted names, in registration order. A tensor shared by two modules
   *  (tied weights) appears once, under its first name, as in PyTorch. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const seen = new Set<Tensor>();
    const out: [string, Tensor][] = [];
    for (const [mName, m] of this.namedModules(prefix)) {
      for (const [n, p] of m._parameters) {
        if (!p || seen.has(p)) continue;
        seen.add(p);
        out.push([join(mName, n), p]);
      }
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [mName, m] of this.namedModules(prefix)) {
      for (const [n, b] of m._buffers) out.push([join(mName, n), b.t]);
    }
    return out;
  }

  /**
   * Stores every weight matrix (parameters of two or more dims: linear weights, embeddings) in
   * 16 bits, in place, for inference: half their memory, and the matmuls and the embedding
   * lookup read the halves directly, widening them to float32 for the arithmetic. `dtype`
   * defaults to what the backend stores: float16 on webgpu, bfloat16 on cpu (whose decode
   * kernels are memory-bound, and bfloat16 widens with one shift). Biases and norms stay
   * float32; the converted parameters stop requiring gradients. Returns the bytes saved.
   */
  halfWeights(dtype?: 'float16' | 'bfloat16'): number {
    let saved = 0;
    for (const [name, p] of this.namedParameters()) {
      if (p.ndim < 2 || p.dtype !== 'float32') continue;
      const be = p.backend;
      const want = dtype ?? (be.supports('float16') ? 'float16' : be.supports('bfloat16') ? 'bfloat16' : null);
      if (!want || !be.supports(want)) {
        const has = (['float16', 'bfloat16'] as const).filter((d) => be.supports(d));
        throw new Error(`halfWeights: the ${be.name} backend does not store ${dtype ?? 'float16 or bfloat16'} (${has.length ? `it stores ${has.join(' and ')}` : 'webgpu stores float16, cpu bfloat16'}); '${name}' stays float32`);
      }
      p.castInPlace(want, (t) => noGrad(() => to(t, want)));
      p.requiresGrad = false;
      saved += p.size * 2;
    }
    return saved;
  }

  /** Number of trainable values (shared tensors counted once). */
  numParameters(): number {
    let n = 0;
    for (const p of this.parameters()) n += p.size;
    return n;
  }

  /** Sets training mode on this module and all descendants; returns this. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Every parameter and persistent buffer by dotted name. The values are the live tensors,
   *  not copies (as in PyTorch): copy before changing them. Tied tensors appear under each name. */
  stateDict(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [mName, m] of this.namedModules()) {
      for (const [n, p] of m._parameters) if (p) out.set(join(mName, n), p);
      for (const [n, b] of m._buffers) if (b.persistent) out.set(join(mName, n), b.t);
    }
    return out;
  }

  /**
   * Copies values into this module's parameters and persistent buffers, converting dtype and
   * backend as needed. Every key and shape is checked before anything is written, so a failed
   * load leaves the module unchanged.
   */
  loadStateDict(state: ReadonlyMap<string, StateValue>, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = opts.strict ?? true;
    const own = this.stateDict();
    const missingKeys = [...own.keys()].filter((k) => !state.has(k));
    const unexpectedKeys = [...state.keys()].filter((k) => !own.has(k));
    const mismatched: string[] = [];
    for (const [k, t] of own) {
      const v = state.get(k);
      if (v && !sameShape(v.shape, t.shape)) mismatched.push(`${k}: checkpoint ${fmt(v.shape)}, model ${fmt(t.shape)}`);
      if (v && !(v instanceof Tensor) && v.data.length !== t.size) {
        mismatched.push(`${k}: ${v.data.length} values for shape ${fmt(v.shape)}`);
      }
    }
    const problems: string[] = [];
    if (mismatched.length) problems.push(`shape mismatch for ${mismatched.join('; ')}`);
    if (strict && missingKeys.length) problems.push(`missing keys: ${missingKeys.join(', ')}`);
    if (strict && unexpectedKeys.length) problems.push(`unexpected keys: ${unexpectedKeys.join(', ')}`);
    if (problems.length) throw new Error(`loadStateDict: ${problems.join('. ')}`);
    for (const [k, t] of own) {
      const v = state.get(k);
      if (!v) continue;
      const values = v instanceof Tensor ? v.data() : v.data;
      t.assertLive('loadStateDict');
      // A deferred weight (buildDeferred) notes the values; its holder takes its part of them.
      if (isDeferred(t)) {
        setDeferredValues(t, values);
        continue;
      }
      // Parameters are contiguous tensors that own their storage from element 0.
      t.backend.write(t.storage, values, t.offset);
    }
    return { missingKeys, unexpectedKeys };
  }

  /** Drops every parameter's gradient. */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Frees every parameter and buffer now; the module is unusable afterwards. */
  dispose(): void {
    for (const p of this.parameters()) p.dispose();
    for (const [, b] of this.namedBuffers()) b.dispose();
  }
}

/** Children named 0, 1, 2, … (GPT-2's `transformer.h.{i}`). */
export class ModuleList<M extends Module = Module> extends Module {
  readonly items: M[] = [];

  constructor(items: Iterable<M> = []) {
    super();
    for (const m of items) this.push(m);
  }

  push(m: M): void {
    this.registerModule(String(this.items.length), m);
    this.items.push(m);
  }

  get length(): number {
    return this.items.length;
  }

  at(i: number): M {
    const m = this.items[i];
    if (!m) throw new RangeError(`ModuleList: index ${i} out of range [0, ${this.items.length})`);
    return m;
  }

  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

function checkName(name: string): void {
  if (name === '' || name.includes('.')) throw new Error(`Module: invalid name '${name}' (non-empty, no dots)`);
}
