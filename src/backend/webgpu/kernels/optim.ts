// WGSL kernels: optimizer updates (AdamW, in place, one thread per element).
import { PRELUDE, groupsFor, threadEntry, type KernelFn, type BufRef } from './common.js';

const WG = 64;

// params: 0 n, 1 lr, 2 beta1, 3 1-beta1, 4 beta2, 5 1-beta2, 6 eps, 7 weightDecay, 8 1/bc1, 9 1/bc2.
// The complements are taken in float64 on the host: 1 - beta2 in float32 would lose digits.
const ADAMW = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
` + threadEntry(WG, 'i', 'pu(0u)') + /* wgsl */ `
  let g = grad[i];
  let mi = pf(2u) * m[i] + pf(3u) * g;
  let vi = pf(4u) * v[i] + pf(5u) * g * g;
  m[i] = mi;
  v[i] = vi;
  let w = param[i];
  param[i] = w - pf(1u) * ((mi * pf(8u)) / (sqrt(vi * pf(9u)) + pf(6u)) + pf(7u) * w);
}
`;

const adamw: KernelFn = (ctx, a) => {
  const n = a.n as number;
  if (n === 0) return;
  const beta1 = a.beta1 as number;
  const beta2 = a.beta2 as number;
  const p = ctx.params().u32(n)
    .f32(a.lr as number).f32(beta1).f32(1 - beta1).f32(beta2).f32(1 - beta2)
    .f32(a.eps as number).f32(a.weightDecay as number).f32(1 / (a.bc1 as number)).f32(1 / (a.bc2 as number));
  ctx.dispatch({
    code: ADAMW,
    buffers: [ctx.buf(a.param as BufRef), ctx.buf(a.grad as BufRef), ctx.buf(a.m as BufRef), ctx.buf(a.v as BufRef)],
    params: p,
    groups: groupsFor(n, WG),
  });
};

export const OPTIM_KERNELS: Record<string, KernelFn> = { adamw };
