// LoRA (Hu et al., 2021): low-rank adapters on frozen Linear layers. A wrapped layer computes
//   y = base(x) + (alpha / rank) · B(A(dropout(x))),   A (rank, in), B (out, rank),
// with B zero at the start, so the wrapped model equals the base until B is trained.
//
// The adapters are registered on the Linear itself, so they appear in namedParameters() and
// stateDict() as `<module>.lora_A` and `<module>.lora_B` (e.g. transformer.h.0.attn.c_attn.lora_A),
// and the Linear's forward is replaced on that instance: every caller of `layer.forward(x)`
// gets the adapter; code that reads `layer.weight` directly (e.g. a tied head) does not.
// This file is browser-safe; saving and loading adapter files is in lora-files.ts.
import type { LoadedTensor, SafetensorsDType, TensorEntry } from '../io/safetensors.js';
import {
  add, dropout as dropoutOp, fmt, Generator, linear, matmul, mul, noGrad, rand, randn, sameShape, zeros, type Tensor,
} from '../tensor/index.js';
import { Linear } from './layers.js';
import type { Module, StateValue } from './module.js';

export interface LoraOptions {
  /** Rank r of the update (a positive integer). */
  rank: number;
  /** Scaling numerator: the update is multiplied by alpha / rank (default: rank, i.e. scale 1). */
  alpha?: number;
  /**
   * Which modules get adapters. Strings are module-name patterns as in PEFT: a module matches
   * when its dotted name equals the pattern or ends with '.' + pattern ('c_attn',
   * 'attn.c_proj', 'transformer.h.0.mlp.c_fc'). A RegExp is tested against the full dotted
   * name (anchor it yourself). Every matching module must be a Linear.
   */
  targets: string[] | RegExp;
  /** Dropout on the adapter's input, active in training mode only (default 0). */
  dropout?: number;
  /** Seeds A's initialisation and the dropout masks (default 0). */
  seed?: number;
  /** 'kaiming' (default): A ~ U(-1/√in, 1/√in), PyTorch's Linear init as PEFT uses;
   *  'gaussian': A ~ N(0, 1/rank). B is zero either way. */
  init?: 'kaiming' | 'gaussian';
}

/** One adapted layer. */
export interface LoraLayer {
  /** The module's dotted name in the model. */
  readonly name: string;
  readonly module: Linear;
  /** (rank, in) */
  readonly A: Tensor;
  /** (out, rank) */
  readonly B: Tensor;
}

/** What applyLora did, for training (trainableParameters), saving and merging. */
export class LoraHandle {
  /** alpha / rank. */
  readonly scale: number;
  private active = true;

  constructor(
    readonly model: Module,
    readonly rank: number,
    readonly alpha: number,
    readonly targets: string[] | RegExp,
    readonly dropout: number,
    readonly seed: number,
    readonly init: 'kaiming' | 'gaussian',
    readonly layers: readonly LoraLayer[],
    /** requiresGrad of every model parameter before applyLora, restored by merge/remove. */
    private readonly frozen: ReadonlyMap<Tensor, boolean>,
  ) {
    this.scale = alpha / rank;
  }

  /** False once mergeLora or removeLora has run. */
  get isActive(): boolean {
    return this.active;
  }

  /** The adapter tensors [A, B, A, B, …] in layer order: what the optimizer should update. */
  trainableParameters(): Tensor[] {
    this.check('trainableParameters');
    return this.layers.flatMap((l) => [l.A, l.B]);
  }

  /** The adapter tensors with their dotted names (`<module>.lora_A`, `<module>.lora_B`). */
  namedAdapterParameters(): [string, Tensor][] {
    this.check('namedAdapterParameters');
    return this.layers.flatMap((l): [string, Tensor][] => [[`${l.name}.lora_A`, l.A], [`${l.name}.lora_B`, l.B]]);
  }

  /** Values with requiresGrad, and all values of the model (adapters included). */
  counts(): { trainable: number; total: number } {
    let trainable = 0;
    let total = 0;
    for (const [, p] of this.model.namedParameters()) {
      total += p.size;
      if (p.requiresGrad) trainable += p.size;
    }
    return { trainable, total };
  }

  /** "trainable params: N of M (x%)". */
  summary(): string {
    const { trainable, total } = this.counts();
    const pct = total > 0 ? (100 * trainable) / total : 0;
    return `trainable params: ${trainable.toLocaleString('en-US')} of ${total.toLocaleString('en-US')} (${pct.toFixed(4)}%)`;
  }

  /** @internal Restores the model's parameter flags and marks the handle spent. */
  finish(): void {
    for (const [p, rg] of this.frozen) p.requiresGrad = rg;
    this.active = false;
  }

  /** @internal */
  check(op: string): void {
    if (!this.active) throw new Error(`lora ${op}: the adapters were already merged or removed`);
  }
}

/** Per-instance forward overrides, so removal can restore the class's forward. */
const wrapped = new WeakMap<Linear, LoraLayer>();

function matches(name: string, targets: string[] | RegExp): boolean {
  if (targets instanceof RegExp) return targets.test(name);
  return targets.some((t) => name === t || name.endsWith(`.${t}`));
}

/**
 * Adds LoRA adapters to every Linear of `model` that `targets` selects and freezes every other
 * parameter (requiresGrad = false), so only lora_A / lora_B train. The adapters take each
 * layer's backend and dtype. Throws if nothing matches (listing some module names), if a match
 * is not a Linear or already has adapters, or on a bad rank / alpha / dropout.
 */
export function applyLora(model: Module, opts: LoraOptions): LoraHandle {
  const rank = opts.rank;
  const alpha = opts.alpha ?? rank;
  const p = opts.dropout ?? 0;
  const seed = opts.seed ?? 0;
  const init = opts.init ?? 'kaiming';
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`applyLora: rank must be a positive integer, got ${String(rank)}`);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new Error(`applyLora: alpha must be a finite number, got ${String(alpha)}`);
  if (!(p >= 0 && p < 1)) throw new Error(`applyLora: dropout must be in [0, 1), got ${String(p)}`);
  if (init !== 'kaiming' && init !== 'gaussian') throw new Error(`applyLora: init must be 'kaiming' or 'gaussian', got '${String(init)}'`);
  let targets = opts.targets;
  if (targets instanceof RegExp) targets = new RegExp(targets.source, targets.flags.replace(/[gy]/g, '')); // no lastIndex state
  else if (!Array.isArray(targets) || targets.length === 0 || targets.some((t) => typeof t !== 'string' || t === '')) {
    throw new Error(`applyLora: targets must be a non-empty list of module names or a RegExp`);
  }

  const all = model.namedModules().filter(([n]) => n !== '');
  const hits = all.filter(([n]) => matches(n, targets));
  if (hits.length === 0) {
    const linears = all.filter(([, m]) => m instanceof Linear).map(([n]) => n);
    const shown = (linears.length ? linears : all.map(([n]) => n)).slice(0, 8);
    throw new Error(`applyLora: no module matches targets ${describeTargets(targets)}; ${linears.length ? 'Linear modules' : 'modules'} include: ${shown.join(', ')}${shown.length < (linears.length || all.length) ? ', …' : ''}`);
  }
  const notLinear = hits.filter(([, m]) => !(m instanceof Linear));
  if (notLinear.length) {
    throw new Error(`applyLora: targets ${describeTargets(targets)} match modules that are not Linear: ${notLinear.slice(0, 5).map(([n, m]) => `${n} (${m.constructor.name})`).join(', ')}${notLinear.length > 5 ? ', …' : ''}; name the Linear layers inside them (e.g. '${notLinear[0]![0]}.<child>')`);
  }
  const again = hits.filter(([, m]) => wrapped.has(m as Linear));
  if (again.length) throw new Error(`applyLora: ${again.map(([n]) => n).join(', ')} already has LoRA adapters (merge or remove them first)`);

  const frozen = new Map<Tensor, boolean>();
  for (const t of model.parameters()) {
    frozen.set(t, t.requiresGrad);
    t.requiresGrad = false;
  }
  const gen = new Generator(seed);
  const dropGen = new Generator((seed ^ 0x10ad7e57) >>> 0);
  const layers: LoraLayer[] = [];
  for (const [name, m] of hits) {
    const lin = m as Linear;
    // A quantized base (QLoRA-style): float32 adapters over the frozen int8/int4 matrix.
    const [out, inF] = lin.matrixShape();
    const co = lin.quant ? { backend: lin.quant.backend, dtype: 'float32' as const } : { backend: lin.weight.backend, dtype: lin.weight.dtype };
    const k = 1 / Math.sqrt(inF);
    const A = init === 'kaiming'
      ? rand([rank, inF], { ...co, low: -k, high: k, generator: gen })
      : randn([rank, inF], { ...co, std: 1 / rank, generator: gen });
    const B = zeros([out, rank], co);
    lin.registerParameter('lora_A', A).name = `${name}.lora_A`;
    lin.registerParameter('lora_B', B).name = `${name}.lora_B`;
    const layer: LoraLayer = { name, module: lin, A, B };
    const scale = alpha / rank;
    // Instance property shadowing Linear.prototype.forward; deleted again by unwrap().
    lin.forward = (x: Tensor): Tensor => {
      const base = lin.project(x, lin.bias);
      const h = linear(linear(dropoutOp(x, p, lin.training, dropGen), A), B); // (..., out)
      return add(base, scale === 1 ? h : mul(h, scale));
    };
    wrapped.set(lin, layer);
    layers.push(layer);
  }
  return new LoraHandle(model, rank, alpha, Array.isArray(targets) ? [...targets] : targets, p, seed, init, layers, frozen);
}

function describeTargets(t: string[] | RegExp): string {
  return t instanceof RegExp ? String(t) : `[${t.map((s) => `'${s}'`).join(', ')}]`;
}

function unwrap(l: LoraLayer): void {
  Reflect.deleteProperty(l.module, 'forward');
  l.module.registerParameter('lora_A', null); // a null slot is invisible to namedParameters/stateDict
  l.module.registerParameter('lora_B', null);
  wrapped.delete(l.module);
  l.A.dispose();
  l.B.dispose();
}

/**
 * Folds each adapter into its base weight, W += (alpha/rank)·B·A, and removes the adapters:
 * the model is an ordinary one again with the parameter names it had before applyLora, and
 * every parameter's requiresGrad is restored. The handle cannot be used afterwards.
 */
export function mergeLora(handle: LoraHandle): Module {
  handle.check('mergeLora');
  const q = handle.layers.find((l) => l.module.quant);
  if (q) throw new Error(`mergeLora: '${q.name}' is quantized (${q.module.quant!.format}); merge into the float model, then quantize`);
  noGrad(() => {
    for (const l of handle.layers) {
      const w = l.module.weight;
      w.assertLive('mergeLora');
      const delta = matmul(l.B, l.A); // (out, in)
      const merged = add(w, handle.scale === 1 ? delta : mul(delta, handle.scale));
      w.backend.write(w.storage, merged.data(), w.offset); // parameters are contiguous from their offset
      delta.dispose();
      merged.dispose();
    }
  });
  for (const l of handle.layers) unwrap(l);
  handle.finish();
  return handle.model;
}

/** Drops the adapters without merging: the model computes exactly what it did before applyLora. */
export function removeLora(handle: LoraHandle): Module {
  handle.check('removeLora');
  for (const l of handle.layers) unwrap(l);
  handle.finish();
  return handle.model;
}

function safetensorsDType(t: Tensor): SafetensorsDType {
  switch (t.dtype) {
    case 'float32': return 'F32';
    case 'float64': return 'F64';
    default: throw new Error(`lora: adapter ${t.name ?? ''} has dtype ${t.dtype}, expected a float dtype`);
  }
}

/** The adapter tensors as safetensors entries, keyed `<module>.lora_A` / `<module>.lora_B` (values copied). */
export function adapterState(handle: LoraHandle): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of handle.namedAdapterParameters()) {
    out.set(name, { dtype: safetensorsDType(t), shape: [...t.shape], data: t.data() });
  }
  return out;
}

/** The adapter tensors under PEFT's names (`base_model.model.<module>.lora_A.weight`), as
 *  PEFT's save_pretrained writes adapter_model.safetensors. */
export function peftAdapterState(handle: LoraHandle): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  for (const [k, e] of adapterState(handle)) out.set(`base_model.model.${k}.weight`, e);
  return out;
}

/**
 * The canonical name of an adapter key: ours (`m.lora_A`) or PEFT's
 * (`base_model.model.m.lora_A.weight`, `….lora_A.default.weight`).
 */
export function adapterKey(key: string): string {
  const m = /^(?:base_model\.model\.)?(.+\.lora_[AB])(?:\.default)?(?:\.weight)?$/.exec(key);
  return m ? m[1]! : key;
}

/**
 * Copies adapter values into the handle's lora_A / lora_B (dtype converted). Every name and
 * shape is checked before anything is written; a mismatch names the tensor.
 */
export function loadAdapterState(handle: LoraHandle, state: ReadonlyMap<string, StateValue | LoadedTensor>): void {
  handle.check('loadAdapterState');
  const given = new Map<string, StateValue | LoadedTensor>();
  for (const [k, v] of state) given.set(adapterKey(k), v);
  const own = new Map(handle.namedAdapterParameters());
  const problems: string[] = [];
  for (const [k, t] of own) {
    const v = given.get(k);
    if (!v) {
      problems.push(`missing tensor ${k}`);
      continue;
    }
    if (!sameShape(v.shape, t.shape)) {
      problems.push(`tensor ${k} has shape ${fmt(v.shape)} in the adapters but ${fmt(t.shape)} in the model (rank ${handle.rank})`);
    } else if ('data' in v && typeof v.data !== 'function' && v.data.length !== t.size) {
      problems.push(`tensor ${k} has ${v.data.length} values for shape ${fmt(v.shape)}`);
    }
  }
  const extra = [...given.keys()].filter((k) => !own.has(k));
  if (extra.length) problems.push(`unexpected tensors ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', …' : ''}`);
  if (problems.length) throw new Error(`lora: cannot load adapters: ${problems.join('; ')}`);
  for (const [k, t] of own) {
    const v = given.get(k)!;
    const values = typeof v.data === 'function' ? (v as Tensor).data() : (v.data as ArrayLike<number>);
    t.assertLive('loadAdapterState');
    t.backend.write(t.storage, values, t.offset);
  }
}
