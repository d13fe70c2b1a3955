// The position-wise feed-forward block: expand, non-linearity, project back.
//   gelu / relu: c_proj(act(c_fc(x)))                 (GPT-2; hidden = 4C)
//   swiglu:      c_proj(silu(c_fc(x)) * c_fc2(x))     (Shazeer 2020, LLaMA's W2(silu(x W1) * x W3))
import { gelu, swiglu, type Generator, type Tensor } from '../tensor/index.js';
import { Dropout, Linear, type InitOptions } from './layers.js';
import { Module } from './module.js';

/** 'gelu' is GPT-2's tanh approximation (HF "gelu_new"); 'gelu_exact' the erf form (HF "gelu"). */
export type MLPActivation = 'gelu' | 'gelu_exact' | 'relu' | 'swiglu';

/** LLaMA's SwiGLU width: 2/3 of 4C (so its three matrices cost about what two 4C ones do),
 *  rounded up to a multiple of 8. */
export function swigluHidden(nEmbd: number): number {
  return Math.ceil((8 * nEmbd) / 3 / 8) * 8;
}

export interface MLPOptions extends InitOptions {
  bias?: boolean;
  dropout?: number;
  /** Hidden width; default 4C, or swigluHidden(C) for SwiGLU. */
  hidden?: number;
  /** std of the output projection's weights (GPT-2 scales it down with depth). */
  projStd?: number;
  /** Draws the dropout masks (default: the init generator, else the global one). */
  dropoutGenerator?: Generator;
}

export class MLP extends Module {
  readonly c_fc: Linear; // (C -> hidden); the gate W1 for SwiGLU
  readonly c_fc2: Linear | null; // (C -> hidden); SwiGLU's W3 only
  readonly c_proj: Linear; // (hidden -> C)
  readonly dropout: Dropout;

  constructor(nEmbd: number, readonly activation: MLPActivation, opts: MLPOptions = {}) {
    super();
    const hidden = opts.hidden ?? (activation === 'swiglu' ? swigluHidden(nEmbd) : 4 * nEmbd);
    const lin = { backend: opts.backend, dtype: opts.dtype, generator: opts.generator, std: opts.std, skipInit: opts.skipInit, bias: opts.bias ?? true };
    this.c_fc = this.registerModule('c_fc', new Linear(nEmbd, hidden, lin));
    this.c_fc2 = activation === 'swiglu' ? this.registerModule('c_fc2', new Linear(nEmbd, hidden, lin)) : null;
    this.c_proj = this.registerModule('c_proj', new Linear(hidden, nEmbd, { ...lin, std: opts.projStd ?? opts.std }));
    this.dropout = this.registerModule('dropout', new Dropout(opts.dropout ?? 0, opts.dropoutGenerator ?? opts.generator));
  }

  forward(x: Tensor): Tensor {
    let a: Tensor; // (B, T, hidden)
    switch (this.activation) {
      case 'gelu': a = this.c_fc.forwardActivated(x, 'gelu'); break;
      case 'gelu_exact': a = gelu(this.c_fc.forward(x), 'none'); break;
      case 'relu': a = this.c_fc.forwardActivated(x, 'relu'); break;
      case 'swiglu': a = swiglu(this.c_fc.forward(x), this.c_fc2!.forward(x)); break;
    }
    return this.dropout.forward(this.c_proj.forward(a)); // (B, T, C)
  }
}
