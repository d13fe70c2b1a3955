// float16 storage (dtype 'float16': weights stored as IEEE halves). A half storage is an
// array<u32> of packed pairs (element 2w in the low half of word w), read with unpack2x16float,
// which is core WGSL: no shader-f16 is needed, so every adapter stores halves; arithmetic stays
// float32. Halves are made on the host (ops.to rounds there, to nearest even), so the device
// only widens.
import { PRELUDE, storage, threadEntry, groupsFor, type KernelFn, type BufRef } from './common.js';

const WG = 64;

/** WGSL: element i (a u32 index) of the packed half array `name`, as f32. */
export function halfLoad(name: string): string {
  return `fn ${name}_at(i: u32) -> f32 { return unpack2x16float(${name}[i >> 1u])[i & 1u]; }\n`;
}

// params: n, x offset (in elements).
const FROM_HALF = PRELUDE + storage('u32', ['x'], ['out:f32']) + halfLoad('x') + threadEntry(WG, 'i', 'pu(0u)') + /* wgsl */ `
  out[i] = x_at(pu(1u) + i);
}
`;

/** copy() from float16 to float32: contiguous source (its offset), contiguous output. */
export function halfCopy(ctx: Parameters<KernelFn>[0], x: BufRef, offset: number, n: number, out: BufRef): void {
  if (n === 0) return;
  if (x.dtype === 'float16' && out.dtype === 'float32') {
    ctx.dispatch({ code: FROM_HALF, buffers: [ctx.buf(x), ctx.buf(out)], params: ctx.params().u32(n).u32(offset), groups: groupsFor(n, WG) });
  } else {
    throw new Error(`webgpu: copy from ${x.dtype} to ${out.dtype}: float16 widens to float32 only (ops.to rounds to float16 on the host)`);
  }
}
