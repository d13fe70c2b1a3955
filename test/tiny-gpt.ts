// A tiny GPT-like stack written directly with the ops (embedding, causal attention, GELU MLP,
// pre-LayerNorm, tied LM head, cross-entropy), used to compare backends and to watch memory.
import type { Backend } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { AdamW, Generator, type Tensor } from '../src/index.js';

export interface TinyConfig {
  vocab: number;
  nLayer: number;
  nHead: number;
  nEmbd: number;
  blockSize: number;
}

export type Params = Map<string, Tensor>;

/** GPT-2 style initialisation drawn in JS (so every backend gets the same numbers). */
export function initParams(cfg: TinyConfig, backend: Backend, seed = 0, dtype: A.DType = 'float32'): Params {
  const g = new Generator(seed);
  const p: Params = new Map();
  const C = cfg.nEmbd;
  const make = (name: string, shape: number[], std: number | 'ones' | 'zeros') => {
    let t: Tensor;
    if (std === 'ones') t = A.ones(shape, { backend, dtype });
    else if (std === 'zeros') t = A.zeros(shape, { backend, dtype });
    else t = A.randn(shape, { backend, dtype, std, generator: g });
    t.requiresGrad = true;
    t.name = name;
    p.set(name, t.keep());
  };
  make('wte', [cfg.vocab, C], 0.02);
  make('wpe', [cfg.blockSize, C], 0.02);
  const projStd = 0.02 / Math.sqrt(2 * cfg.nLayer);
  for (let l = 0; l < cfg.nLayer; l++) {
    make(`h${l}.ln1.w`, [C], 'ones');
    make(`h${l}.ln1.b`, [C], 'zeros');
    make(`h${l}.attn.w`, [3 * C, C], 0.02);
    make(`h${l}.attn.b`, [3 * C], 'zeros');
    make(`h${l}.proj.w`, [C, C], projStd);
    make(`h${l}.proj.b`, [C], 'zeros');
    make(`h${l}.ln2.w`, [C], 'ones');
    make(`h${l}.ln2.b`, [C], 'zeros');
    make(`h${l}.fc.w`, [4 * C, C], 0.02);
    make(`h${l}.fc.b`, [4 * C], 'zeros');
    make(`h${l}.fc2.w`, [C, 4 * C], projStd);
    make(`h${l}.fc2.b`, [C], 'zeros');
  }
  make('lnf.w', [C], 'ones');
  make('lnf.b', [C], 'zeros');
  return p;
}

/** Mean cross-entropy of next-token prediction; idx and targets are int32 (B, T). */
export function forwardLoss(cfg: TinyConfig, p: Params, idx: Tensor, targets: Tensor): Tensor {
  const P = (n: string) => p.get(n)!;
  const [B, T] = idx.shape as [number, number];
  const C = cfg.nEmbd;
  const H = cfg.nHead;
  const D = C / H;
  const pos = A.arange(0, T, 1, { backend: idx.backend });
  let x = A.add(A.embedding(P('wte'), idx), A.embedding(P('wpe'), pos)); // (B, T, C)
  for (let l = 0; l < cfg.nLayer; l++) {
    const h = A.layerNorm(x, P(`h${l}.ln1.w`), P(`h${l}.ln1.b`));
    const qkv = A.linear(h, P(`h${l}.attn.w`), P(`h${l}.attn.b`)); // (B, T, 3C)
    const [q, k, v] = A.split(qkv, C, -1).map((t) => A.permute(A.reshape(t, [B, T, H, D]), [0, 2, 1, 3])); // (B, H, T, D)
    const y = A.scaledDotProductAttention(q!, k!, v!, { causal: true }); // (B, H, T, D)
    const merged = A.reshape(A.permute(y, [0, 2, 1, 3]), [B, T, C]);
    x = A.add(x, A.linear(merged, P(`h${l}.proj.w`), P(`h${l}.proj.b`)));
    const h2 = A.layerNorm(x, P(`h${l}.ln2.w`), P(`h${l}.ln2.b`));
    const m = A.linear(A.gelu(A.linear(h2, P(`h${l}.fc.w`), P(`h${l}.fc.b`))), P(`h${l}.fc2.w`), P(`h${l}.fc2.b`));
    x = A.add(x, m);
  }
  x = A.layerNorm(x, P('lnf.w'), P('lnf.b'));
  const logits = A.linear(x, P('wte')); // tied head, (B, T, V)
  return A.crossEntropy(logits, targets);
}

/** Deterministic batches from a token stream: (idx, targets) as int32 arrays of B*T. */
export function batchAt(tokens: Int32Array, B: number, T: number, step: number): [Int32Array, Int32Array] {
  const g = new Generator(1000 + step);
  const idx = new Int32Array(B * T);
  const tgt = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const start = g.randint(tokens.length - T - 1);
    for (let t = 0; t < T; t++) {
      idx[b * T + t] = tokens[start + t]!;
      tgt[b * T + t] = tokens[start + t + 1]!;
    }
  }
  return [idx, tgt];
}

/** Trains for `steps` AdamW steps and returns the loss of each step. */
export function train(cfg: TinyConfig, backend: Backend, tokens: Int32Array, steps: number, B: number, lr = 3e-3): number[] {
  const p = initParams(cfg, backend, 0);
  const opt = new AdamW(p.values(), { lr, weightDecay: 0.1, betas: [0.9, 0.95] });
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const [idx, tgt] = batchAt(tokens, B, cfg.blockSize, s);
    const loss = A.tidy(() => {
      const l = forwardLoss(cfg, p, A.tensor(idx, { backend, shape: [B, cfg.blockSize] }), A.tensor(tgt, { backend, shape: [B, cfg.blockSize] }));
      opt.zeroGrad();
      l.backward();
      opt.stepUpdate();
      return l.item();
    });
    losses.push(loss);
  }
  opt.zeroGrad();
  return losses;
}
