// Cross-entropy with label smoothing and an ignored target. Forward: one workgroup per row
// (online log-sum-exp and the row sum in one pass, then shared-memory reductions), or one
// thread per row for a short vocabulary (rows.ts, SERIAL_MAX_N). Backward:
// one thread per logit (it needs only the saved lse). A target outside [0, V) that is not
// ignoreIndex is reported through the error buffer (the next read throws a RangeError) and
// its row gets loss 0 / gradient 0 instead of an out-of-bounds read.
import { PRELUDE, entry, storage, groupsFor, type KernelFn, type BufRef } from './common.js';
import { rowPick, rowVariants } from './rows.js';
import { errorBinding, opId } from './errors.js';

const WG = 64;

// params: N, V, ignoreIndex, smoothing, op
const CROSS_ENTROPY = rowVariants((m) => PRELUDE + m.reduce + storage('f32', ['logits', 'targets:i32'], ['losses', 'lse']) + errorBinding(5) + m.main + /* wgsl */ `
  var acc = vec2<f32>(LOW, 0.0);
  var sx = 0.0;
  for (var j = li; j < n; j += WG) {
    let v = logits[base + j];
    acc = lse_push(acc, v);
    sx += v;
  }
` + m.wgReduce('acc', 't', 'lse', 0) + m.wgReduce('vec2<f32>(sx, 0.0)', 'sum2', 'sum', 1) + /* wgsl */ `
  let sum = sum2.x;
  if (li != 0u) { return; }
  let l = t.x + log(t.y);
  lse[row] = l;
  let tgt = targets[row];
  let eps = pf(3u);
  if (tgt == pi(2u)) {
    losses[row] = 0.0;
  } else if (tgt < 0 || u32(tgt) >= n) {
    report(2u, tgt, n, pu(4u));
    losses[row] = 0.0;
  } else {
    losses[row] = l - ((1.0 - eps) * logits[base + u32(tgt)] + eps * sum / f32(n));
  }
}
`);

// gx[r, j] = scale[r] (exp(x - lse[r]) - (1-ε) [j == t] - ε/V). params: N, V, ignoreIndex, smoothing, op
const CROSS_ENTROPY_BACKWARD = PRELUDE + storage('f32', ['logits', 'targets:i32', 'lse', 'scale'], ['gx']) + errorBinding(6) + entry(WG) + /* wgsl */ `
  let t = linear_id(wid, nwg, li, ${WG}u);
  let V = pu(1u);
  if (t >= pu(0u) * V) { return; }
  let r = t / V;
  let j = t - r * V;
  let tgt = targets[r];
  if (tgt == pi(2u)) { gx[t] = 0.0; return; }
  if (tgt < 0 || u32(tgt) >= V) {
    if (j == 0u) { report(2u, tgt, V, pu(4u)); }
    gx[t] = 0.0;
    return;
  }
  let eps = pf(3u);
  var g = exp(logits[t] - lse[r]) - eps / f32(V);
  if (j == u32(tgt)) { g -= 1.0 - eps; }
  gx[t] = scale[r] * g;
}
`;

const crossEntropy: KernelFn = (ctx, a) => {
  const N = a.N as number;
  const p = ctx.params().u32(N).u32(a.V as number).i32(a.ignoreIndex as number).f32(a.smoothing as number).u32(opId('crossEntropy'));
  ctx.dispatch({
    ...rowPick(CROSS_ENTROPY, N, a.V as number),
    buffers: [ctx.buf(a.logits as BufRef), ctx.buf(a.targets as BufRef), ctx.buf(a.losses as BufRef), ctx.buf(a.lse as BufRef), ctx.errorBuffer],
    params: p,
  });
};

const crossEntropyBackward: KernelFn = (ctx, a) => {
  const N = a.N as number;
  const V = a.V as number;
  const p = ctx.params().u32(N).u32(V).i32(a.ignoreIndex as number).f32(a.smoothing as number).u32(opId('crossEntropyBackward'));
  ctx.dispatch({
    code: CROSS_ENTROPY_BACKWARD,
    buffers: [
      ctx.buf(a.logits as BufRef), ctx.buf(a.targets as BufRef), ctx.buf(a.lse as BufRef), ctx.buf(a.scale as BufRef),
      ctx.buf(a.gx as BufRef), ctx.errorBuffer,
    ],
    params: p,
    groups: groupsFor(N * V, WG),
  });
};

export const LOSS_KERNELS: Record<string, KernelFn> = {
  crossEntropy,
  crossEntropyBackward,
};
