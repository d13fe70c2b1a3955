// Element-wise kernels: fill, strided copy with dtype conversion, unary (+ backward), binary
// (tensor or scalar operand), where (one shader per family; the op and the dtypes are parameters).
import type { BinaryOp, UnaryGradOp, UnaryOp } from '../../backend.js';
import { contiguousStrides } from '../../../tensor/shape.js';
import { PRELUDE, MAX_RANK, collapse, groupsFor, type KernelContext, type KernelFn, type BufRef, type Layout, type Params } from './common.js';

const WG = 64;

/** WGSL: decode element i of a strided layout stored at params [base..]: rank at base, then
 *  shape[MAX_RANK], then strides[MAX_RANK] (i32), then offset. */
const STRIDED = /* wgsl */ `
fn strided_index(i: u32, base: u32, rank: u32, stridesBase: u32, offset: i32) -> u32 {
  var rem = i;
  var idx = offset;
  for (var d = i32(rank) - 1; d >= 0; d--) {
    let n = pu(base + u32(d));
    let c = rem % n;
    rem = rem / n;
    idx += i32(c) * pi(stridesBase + u32(d));
  }
  return u32(idx);
}
`;

/** Writes n, rank, shape[MAX_RANK] and one strides[MAX_RANK] block + offset per layout. */
function writeLayouts(p: Params, shape: readonly number[], layouts: { strides: readonly number[]; offset: number }[]): void {
  const c = collapse(shape, layouts.map((l) => l.strides));
  if (c.shape.length > MAX_RANK) throw new Error(`webgpu: rank ${c.shape.length} above ${MAX_RANK}`);
  p.u32(c.shape.reduce((a, b) => a * b, 1)).u32(c.shape.length);
  for (let d = 0; d < MAX_RANK; d++) p.u32(c.shape[d] ?? 1);
  layouts.forEach((l, t) => {
    for (let d = 0; d < MAX_RANK; d++) p.i32(c.strides[t]![d] ?? 0);
    p.i32(l.offset);
  });
}
// Word positions written by writeLayouts: n=0, rank=1, shape=2..9, layout t strides at
// 10 + t*9, its offset at 10 + t*9 + 8.

const dtypeCode = (r: BufRef): number => (r.dtype === 'int32' ? 1 : 0);

// ---------------------------------------------------------------- fill

const FILL = PRELUDE + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = linear_id(wid, nwg, li, ${WG}u);
  if (i >= pu(0u)) { return; }
  out[pu(1u) + i] = pu(2u);
}
`;

const fill: KernelFn = (ctx, a) => {
  const out = a.out as BufRef;
  const n = a.n as number;
  const p = ctx.params().u32(n).u32(a.offset as number);
  if (out.dtype === 'int32') p.i32(Math.trunc(a.value as number)); else p.f32(a.value as number);
  ctx.dispatch({ code: FILL, buffers: [ctx.buf(out)], params: p, groups: groupsFor(n, WG) });
};

// ---------------------------------------------------------------- copy

const COPY = PRELUDE + STRIDED + /* wgsl */ `
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
// params: layouts of x (t=0) and out (t=1, contiguous unless copyInto), then at 28: xdtype, outdtype
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = linear_id(wid, nwg, li, ${WG}u);
  if (i >= pu(0u)) { return; }
  let src = strided_index(i, 2u, pu(1u), 10u, pi(18u));
  let dst = strided_index(i, 2u, pu(1u), 19u, pi(27u));
  let v = x[src];
  let xt = pu(28u);
  let ot = pu(29u);
  if (xt == ot) { out[dst] = v; }
  else if (xt == 0u) { out[dst] = bitcast<u32>(i32(bitcast<f32>(v))); }
  else { out[dst] = bitcast<u32>(f32(bitcast<i32>(v))); }
}
`;

const copy: KernelFn = (ctx, a) => {
  const x = a.x as BufRef;
  const xl = a.xl as Layout;
  const out = a.out as BufRef;
  const outLayout = a.outLayout as Layout | undefined;
  const p = ctx.params();
  writeLayouts(p, xl.shape, [xl, outLayout ?? { strides: contiguousStrides(xl.shape), offset: 0 }]);
  p.u32(dtypeCode(x)).u32(dtypeCode(out));
  const n = xl.shape.reduce((s, d) => s * d, 1);
  ctx.dispatch({ code: COPY, buffers: [ctx.buf(x), ctx.buf(out)], params: p, groups: groupsFor(n, WG) });
};

export const ELEMENTWISE_KERNELS: Record<string, KernelFn> = {
  fill,
  copy,
  copyInto: copy,
};

export { writeLayouts, STRIDED, dtypeCode };
