// WGSL kernels: the weight-only quantized linear (quantMatmul) and embedding (quantEmbedding).
// Formats as tensor/quantize.ts packs them; the byte arrays (data, zeros) are int32 storages
// read as little-endian u32 words, bytes taken out with shifts. Format codes: 0 int8 (one f32
// scale per weight row), 1 int4 and 2 int4z (groups of 32 along K: four words a group, byte j
// holding element j in its low nibble and j + 16 in its high one; one f32 scale a group, and
// for int4z a zero-point byte a group; int4's zero point is 8).
//
// quantMatmul: one workgroup of 64 threads per (output column n, block of up to 8 rows of x).
// The threads stride over the weight row: int4 a group (4 words) at a time, whose 32 levels
// (q − z) are unpacked once into registers and dotted with each row of the block, the sum
// times the group's scale; int8 a word (4 bytes) at a time, Σ q·x times the row scale at the
// end. A shared-memory tree adds the 64 partials of each row; the epilogue is the float
// matmul's (bias, then the activation: relu, or gelu in its tanh form).
// quantEmbedding: one thread per output element, dequantized as scale · (q − z) (one f32
// rounding, as dequantizeRows); an id out of range is reported (the next read throws) and its
// row written as 0.
import { PRELUDE, entry, grid, groupsFor, storage, type BufRef, type KernelFn } from './common.js';
import { errorBinding, opId } from './errors.js';
import { GELU } from './matmul.js';

const WG = 64;
/** Rows of x per workgroup (private accumulators per thread). */
const MB = 8;
const FORMAT: Record<string, number> = { int8: 0, int4: 1, int4z: 2 };
const ACT: Record<string, number> = { none: 0, relu: 1, gelu: 2 };

// The float matmul's activation (gelu_tanh, activate), as the ref applies it.
const ACTIVATE = GELU;

// Byte b of the zero-point array; nibble levels of a word: the low (or high) nibbles of its
// four bytes minus z.
const UNPACK = /* wgsl */ `
fn zero_at(b: u32) -> f32 {
  return f32((zeros[b >> 2u] >> ((b & 3u) * 8u)) & 255u);
}
fn lo_levels(w: u32, z: f32) -> vec4<f32> {
  return vec4<f32>(f32(w & 15u), f32((w >> 8u) & 15u), f32((w >> 16u) & 15u), f32((w >> 24u) & 15u)) - vec4<f32>(z);
}
fn hi_levels(w: u32, z: f32) -> vec4<f32> {
  return vec4<f32>(f32((w >> 4u) & 15u), f32((w >> 12u) & 15u), f32((w >> 20u) & 15u), f32(w >> 28u)) - vec4<f32>(z);
}
fn int8_at(w: u32, t: u32) -> f32 {
  return f32(bitcast<i32>(w << (24u - 8u * t)) >> 24u);
}
`;

// params: format 0, N 1, K 2, M 3, mBlocks 4, hasBias 5, act 6
const QUANT_MATMUL = PRELUDE + storage('f32', ['data:u32', 'scales', 'zeros:u32', 'x', 'bias'], ['out']) + UNPACK + ACTIVATE + /* wgsl */ `
var<workgroup> red: array<f32, ${MB * WG}>;
fn xv(i: u32) -> vec4<f32> {
  return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}
` + entry(WG) + /* wgsl */ `
  let fmt = pu(0u);
  let N = pu(1u);
  let K = pu(2u);
  let M = pu(3u);
  let t = wid.x + wid.y * nwg.x;
  if (t >= N * pu(4u)) { return; }
  let n = t % N;
  let m0 = (t / N) * ${MB}u;
  let mc = min(${MB}u, M - m0);
  var acc: array<f32, ${MB}>;
  for (var r = 0u; r < ${MB}u; r++) { acc[r] = 0.0; }
  if (fmt == 0u) {
    // int8: the words covering bytes [n K, n K + K), each read by one thread.
    let b0 = n * K;
    let b1 = b0 + K;
    for (var wi = b0 / 4u + li; wi < (b1 + 3u) / 4u; wi += ${WG}u) {
      let w = data[wi];
      for (var s = 0u; s < 4u; s++) {
        let b = wi * 4u + s;
        if (b < b0 || b >= b1) { continue; }
        let q = int8_at(w, s);
        let k = b - b0;
        for (var r = 0u; r < mc; r++) { acc[r] = fma(q, x[(m0 + r) * K + k], acc[r]); }
      }
    }
  } else {
    let G = K / 32u;
    for (var g = li; g < G; g += ${WG}u) {
      let gi = n * G + g;
      let sc = scales[gi];
      var z = 8.0;
      if (fmt == 2u) { z = zero_at(gi); }
      var lv: array<vec4<f32>, 8>;
      for (var i = 0u; i < 4u; i++) {
        let w = data[gi * 4u + i];
        lv[i] = lo_levels(w, z);      // elements 4i .. 4i + 3
        lv[i + 4u] = hi_levels(w, z); // elements 16 + 4i .. 16 + 4i + 3
      }
      for (var r = 0u; r < mc; r++) {
        let xb = (m0 + r) * K + g * 32u;
        var d = 0.0;
        for (var i = 0u; i < 8u; i++) { d += dot(lv[i], xv(xb + 4u * i)); }
        acc[r] = fma(sc, d, acc[r]);
      }
    }
  }
  for (var r = 0u; r < ${MB}u; r++) { red[r * ${WG}u + li] = acc[r]; }
  workgroupBarrier();
  for (var h = ${WG / 2}u; h >= 1u; h >>= 1u) {
    if (li < h) {
      for (var r = 0u; r < mc; r++) { red[r * ${WG}u + li] += red[r * ${WG}u + li + h]; }
    }
    workgroupBarrier();
  }
  if (li < mc) {
    var s = red[li * ${WG}u];
    if (fmt == 0u) { s *= scales[n]; }
    if (pu(5u) != 0u) { s += bias[n]; }
    out[(m0 + li) * N + n] = activate(s, pu(6u));
  }
}
`;

// params: format 0, N 1, K 2, n 3, op 4. Thread e = (i, k) of out.
const QUANT_EMBEDDING = PRELUDE + storage('u32', ['data', 'scales:f32', 'zeros', 'ids:i32'], ['out:f32']) + errorBinding(6) + UNPACK + entry(WG) + /* wgsl */ `
  let e = linear_id(wid, nwg, li, ${WG}u);
  let fmt = pu(0u);
  let N = pu(1u);
  let K = pu(2u);
  if (e >= pu(3u) * K) { return; }
  let i = e / K;
  let k = e - i * K;
  let id = ids[i];
  if (id < 0 || u32(id) >= N) {
    if (k == 0u) { report(1u, id, N, pu(4u)); }
    out[e] = 0.0;
    return;
  }
  let row = u32(id);
  if (fmt == 0u) {
    let b = row * K + k;
    out[e] = scales[row] * int8_at(data[b >> 2u], b & 3u);
    return;
  }
  let gi = row * (K / 32u) + k / 32u;
  let j = k % 32u;
  let byte = (data[gi * 4u + (j % 16u) / 4u] >> (8u * (j % 4u))) & 255u;
  var q = byte & 15u;
  if (j >= 16u) { q = byte >> 4u; }
  var z = 8.0;
  if (fmt == 2u) { z = zero_at(gi); }
  out[e] = scales[gi] * (f32(q) - z);
}
`;

const quantMatmul: KernelFn = (ctx, a) => {
  const M = a.M as number;
  const N = a.N as number;
  const K = a.K as number;
  if (M === 0 || N === 0) return;
  const act = ACT[(a.activation as string | undefined) ?? 'none'];
  if (act === undefined) throw new Error(`webgpu: quantMatmul: unknown activation ${String(a.activation)}`);
  const data = ctx.buf(a.data as BufRef);
  const x = ctx.buf(a.x as BufRef);
  const bias = a.bias ? ctx.buf(a.bias as BufRef) : null;
  const mBlocks = Math.ceil(M / MB);
  const p = ctx.params().u32(FORMAT[a.format as string]!).u32(N).u32(K).u32(M).u32(mBlocks).u32(bias ? 1 : 0).u32(act);
  ctx.dispatch({
    code: QUANT_MATMUL,
    // Absent zeros and bias: data and x stand in for the unused bindings (never read).
    buffers: [data, ctx.buf(a.scales as BufRef), a.zeros ? ctx.buf(a.zeros as BufRef) : data, x, bias ?? x, ctx.buf(a.out as BufRef)],
    params: p,
    groups: grid(N * mBlocks),
  });
};

const quantEmbedding: KernelFn = (ctx, a) => {
  const n = a.n as number;
  const K = a.K as number;
  if (n === 0) return;
  const data = ctx.buf(a.data as BufRef);
  const p = ctx.params().u32(FORMAT[a.format as string]!).u32(a.N as number).u32(K).u32(n).u32(opId('quantEmbedding'));
  ctx.dispatch({
    code: QUANT_EMBEDDING,
    buffers: [data, ctx.buf(a.scales as BufRef), a.zeros ? ctx.buf(a.zeros as BufRef) : data, ctx.buf(a.ids as BufRef), ctx.buf(a.out as BufRef), ctx.errorBuffer],
    params: p,
    groups: groupsFor(n * K, WG),
  });
};

export const QUANT_KERNELS: Record<string, KernelFn> = { quantMatmul, quantEmbedding };
