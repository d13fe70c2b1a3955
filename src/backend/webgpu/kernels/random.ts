// Dropout masks drawn on the device with the counter-based hash of backend.ts (maskHash),
// bit for bit the masks the other backends draw for the same seed.
import { dropThreshold } from '../../backend.js';
import { PRELUDE, groupsFor, storage, threadEntry, type BufRef, type KernelFn } from './common.js';

const WG = 64;

const DROPOUT_MASK = PRELUDE + storage('f32', [], ['out']) + /* wgsl */ `
fn fmix(x: u32) -> u32 {
  var h = (x ^ (x >> 16u)) * 0x85ebca6bu;
  h = (h ^ (h >> 13u)) * 0xc2b2ae35u;
  return h ^ (h >> 16u);
}
${threadEntry(WG, 'i', 'pu(0u)')}
  let h = fmix(fmix((i * 0x9e3779b9u) ^ pu(1u)) ^ pu(2u));
  out[i] = select(0.0, pf(4u), (h >> 8u) >= pu(3u));
}
`;

const dropoutMask: KernelFn = (ctx, a) => {
  const out = a.out as BufRef;
  const n = a.n as number;
  if (out.dtype !== 'float32') throw new Error(`webgpu dropoutMask: float32 output expected, got ${out.dtype}`);
  const p = ctx.params().u32(n).u32(a.seed0 as number).u32(a.seed1 as number).u32(dropThreshold(a.p as number)).f32(a.scale as number);
  ctx.dispatch({ code: DROPOUT_MASK, buffers: [ctx.buf(out)], params: p, groups: groupsFor(n, WG) });
};

export const RANDOM_KERNELS: Record<string, KernelFn> = { dropoutMask };
