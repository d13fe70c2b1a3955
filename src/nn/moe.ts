// Mixture-of-experts feed-forward layer (Shazeer et al. 2017; GShard; Switch Transformer).
// A linear router scores E expert MLPs per token; each token goes to its top-k experts, each
// expert takes at most `capacity` tokens, and the outputs are summed weighted by the gates.
// Routing (top-k, capacity) is decided in JS on values read once per forward; everything that
// carries gradients (dispatch, gates, combine) is a differentiable row gather.
import {
  add, concat, div, embedding, gather, mean, mul, reshape, softmax, sum, tensor, zeros, type Generator, type Tensor,
} from '../tensor/index.js';
import { Linear, type InitOptions } from './layers.js';
import { MLP, swigluHidden, type MLPActivation } from './mlp.js';
import { Module, ModuleList } from './module.js';

export interface MoEOptions extends InitOptions {
  /** Number of experts E. */
  experts: number;
  /** Experts per token (default 1, Switch). 2 is GShard/Mixtral style. */
  topK?: 1 | 2;
  /** capacity per expert = ceil(capacityFactor · N · k / E) (default 1.25); Infinity: no dropping. */
  capacityFactor?: number;
  /** Used in eval mode (default Infinity: no dropping, so a token's output never depends on
   *  the rest of the batch and KV-cached generation matches a full forward). */
  evalCapacityFactor?: number;
  /** As MLP (default 'gelu'). */
  activation?: MLPActivation;
  /** Per-expert hidden width. Default: the dense MLP's width (4C; swigluHidden(C) for SwiGLU)
   *  divided by topK, rounded up, so the active expert parameters per token match one dense
   *  MLP for topK = 1 and for topK = 2 (two half-width experts). Pass 4C for Mixtral-style
   *  full-width experts (active parameters then k times the dense MLP's). */
  hidden?: number;
  /** Load-balancing loss coefficient α (default 0.01). */
  auxLossCoef?: number;
  /** Expert biases (default true, as MLP). The router has none. */
  bias?: boolean;
  dropout?: number;
  /** std of each expert's output projection (GPT-2 scales it with depth). */
  projStd?: number;
  /** std of the router weight (default: std, else PyTorch's Linear init). */
  routerStd?: number;
  dropoutGenerator?: Generator;
}

export interface MoEStats {
  /** Share of the N·k routing choices (first and second, before capacity) per expert; sums to 1. */
  tokensPerExpert: number[];
  /** Share of the N·k choices dropped for capacity. */
  dropped: number;
}

/** The routing decided for one forward (plain JS; exported for tests and diagnostics). */
export interface MoERouting {
  /** choice[j][n]: token n's (j+1)-th expert. */
  choice: Int32Array[];
  /** slot[j][n]: row of token n's j-th choice in the concatenated expert outputs, or -1 if dropped. */
  slot: Int32Array[];
  /** tokens[e]: token indices sent to expert e, in slot order. */
  tokens: number[][];
  capacity: number;
}

/** Top-k per row of probs (N, E), ties to the lower index, then capacity assignment: all first
 *  choices in token order, then all second choices (so a first choice never loses its place
 *  to another token's second choice). */
export function routeTokens(probs: Float32Array, N: number, E: number, k: number, capacityFactor: number): MoERouting {
  const choice: Int32Array[] = [];
  for (let j = 0; j < k; j++) choice.push(new Int32Array(N));
  for (let n = 0; n < N; n++) {
    const row = n * E;
    let b1 = 0;
    for (let e = 1; e < E; e++) if (probs[row + e]! > probs[row + b1]!) b1 = e;
    choice[0]![n] = b1;
    if (k === 2) {
      let b2 = b1 === 0 ? 1 : 0;
      for (let e = b2 + 1; e < E; e++) if (e !== b1 && probs[row + e]! > probs[row + b2]!) b2 = e;
      choice[1]![n] = b2;
    }
  }
  const capacity = Math.ceil((capacityFactor * N * k) / E);
  const tokens: number[][] = Array.from({ length: E }, () => []);
  for (let j = 0; j < k; j++) {
    for (let n = 0; n < N; n++) {
      const list = tokens[choice[j]![n]!]!;
      if (list.length < capacity) list.push(n);
    }
  }
  // Rows of the concatenated expert outputs: expert e's block starts after experts < e.
  const slot: Int32Array[] = [];
  for (let j = 0; j < k; j++) slot.push(new Int32Array(N).fill(-1));
  let base = 0;
  for (let e = 0; e < E; e++) {
    const list = tokens[e]!;
    // A token appears at most once per expert (its two choices differ).
    for (let s = 0; s < list.length; s++) {
      const n = list[s]!;
      const j = choice[0]![n] === e ? 0 : 1;
      slot[j]![n] = base + s;
    }
    base += list.length;
  }
  return { choice, slot, tokens, capacity };
}

export class MoE extends Module {
  readonly router: Linear; // (C -> E), no bias
  readonly experts: ModuleList<MLP>;
  readonly numExperts: number;
  readonly topK: 1 | 2;
  readonly capacityFactor: number;
  readonly evalCapacityFactor: number;
  readonly auxLossCoef: number;
  readonly hidden: number;
  /** α·E·Σ f_i P_i from the last forward (scalar). Made inside the caller's tidy scope like
   *  the output: add it to the loss before that scope ends; it is not kept. */
  lastAuxLoss: Tensor | null = null;
  lastStats: MoEStats | null = null;
  lastRouting: MoERouting | null = null;

  constructor(readonly nEmbd: number, opts: MoEOptions) {
    super();
    const E = opts.experts;
    if (!(Number.isInteger(E) && E >= 1)) throw new RangeError(`MoE: experts must be a positive integer, got ${E}`);
    const k = opts.topK ?? 1;
    if (k !== 1 && k !== 2) throw new RangeError(`MoE: topK must be 1 or 2, got ${String(k)}`);
    if (k > E) throw new RangeError(`MoE: topK ${k} exceeds experts ${E}`);
    const cf = opts.capacityFactor ?? 1.25;
    const ecf = opts.evalCapacityFactor ?? Infinity;
    if (!(cf > 0) || !(ecf > 0)) throw new RangeError(`MoE: capacity factors must be > 0, got ${cf} and ${ecf}`);
    const activation = opts.activation ?? 'gelu';
    const dense = activation === 'swiglu' ? swigluHidden(nEmbd) : 4 * nEmbd;
    this.numExperts = E;
    this.topK = k;
    this.capacityFactor = cf;
    this.evalCapacityFactor = ecf;
    this.auxLossCoef = opts.auxLossCoef ?? 0.01;
    this.hidden = opts.hidden ?? Math.ceil(dense / k);
    const init = { backend: opts.backend, dtype: opts.dtype, generator: opts.generator, skipInit: opts.skipInit };
    this.router = this.registerModule('router', new Linear(nEmbd, E, { ...init, std: opts.routerStd ?? opts.std, bias: false }));
    this.experts = this.registerModule('experts', new ModuleList<MLP>());
    for (let e = 0; e < E; e++) {
      this.experts.push(new MLP(nEmbd, activation, {
        ...init, std: opts.std, hidden: this.hidden, bias: opts.bias, dropout: opts.dropout, projStd: opts.projStd, dropoutGenerator: opts.dropoutGenerator,
      }));
    }
  }

  forward(x: Tensor): Tensor {
    const shape = x.shape;
    const C = shape[shape.length - 1]!;
    if (C !== this.nEmbd) throw new Error(`MoE: expected last dim ${this.nEmbd}, got ${C}`);
    const N = x.size / C;
    const E = this.numExperts;
    const k = this.topK;
    const be = x.backend;
    const x2 = reshape(x, [N, C]);
    const probs = softmax(this.router.forward(x2), -1); // (N, E)
    const r = routeTokens(Float32Array.from(probs.data()), N, E, k, this.training ? this.capacityFactor : this.evalCapacityFactor);

    // Dispatch: each non-empty expert runs on its gathered rows; a zero row is appended for drops.
    const outs: Tensor[] = [];
    for (let e = 0; e < E; e++) {
      const list = r.tokens[e]!;
      if (list.length === 0) continue;
      const idx = tensor(Int32Array.from(list), { backend: be, dtype: 'int32' });
      outs.push(this.experts.at(e).forward(embedding(x2, idx)));
    }
    const S = outs.reduce((a, t) => a + t.shape[0]!, 0);
    outs.push(zeros([1, C], { backend: be, dtype: x.dtype }));
    const all = concat(outs, 0); // (S + 1, C)

    // Combine: gather each token's slot rows, weight by its gate (top-2: renormalised pair).
    const gates: Tensor[] = [];
    for (let j = 0; j < k; j++) gates.push(gather(probs, 1, tensor(r.choice[j]!, { backend: be, dtype: 'int32', shape: [N, 1] })));
    if (k === 2) {
      const denom = add(gates[0]!, gates[1]!);
      gates[0] = div(gates[0]!, denom);
      gates[1] = div(gates[1]!, denom);
    }
    let y: Tensor | null = null;
    for (let j = 0; j < k; j++) {
      const rows = Int32Array.from(r.slot[j]!, (s) => (s < 0 ? S : s));
      const part = mul(embedding(all, tensor(rows, { backend: be, dtype: 'int32' })), gates[j]!);
      y = y ? add(y, part) : part;
    }

    // Switch load balancing: α·E·Σ_i f_i·P_i, f from first choices (a constant), P differentiable.
    const counts = new Float64Array(E);
    const first = r.choice[0]!;
    for (let n = 0; n < N; n++) counts[first[n]!]! += 1;
    const f = tensor(counts.map((c) => c / N), { backend: be, dtype: x.dtype });
    this.lastAuxLoss = mul(sum(mul(mean(probs, 0), f)), this.auxLossCoef * E);

    const chosen = new Array<number>(E).fill(0);
    for (let j = 0; j < k; j++) for (let n = 0; n < N; n++) chosen[r.choice[j]![n]!]! += 1;
    this.lastStats = { tokensPerExpert: chosen.map((c) => c / (N * k)), dropped: (N * k - S) / (N * k) };
    this.lastRouting = r;
    return reshape(y!, shape);
  }
}
