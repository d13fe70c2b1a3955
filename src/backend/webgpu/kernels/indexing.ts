// Indexing kernels: embedding, gather and their accumulating backwards. Values are copied as
// u32 bit patterns, so float32 and int32 storages share one shader. An index out of range is
// reported through the error buffer (the next read throws a RangeError) and its element is
// written as 0 or skipped, never read or written out of bounds. Without float atomics, the
// accumulating kernels give every output element to exactly one thread.
import { PRELUDE, entry, storage, groupsFor, type KernelFn, type BufRef } from './common.js';
import { halfLoad } from './half.js';
import { errorBinding, opId } from './errors.js';

const WG = 64;

// ---------------------------------------------------------------- embedding

// params: n, C, V, op. Thread t = (i, c). With `half`, the table is float16 (packed pairs,
// see half.ts) and out float32; else rows are copied as u32 bits.
function embeddingCode(half: boolean): string {
  return PRELUDE + storage('u32', ['weight', 'ids:i32'], [half ? 'out:f32' : 'out']) + errorBinding(4) + (half ? halfLoad('weight') : '') + entry(WG) + /* wgsl */ `
  let t = linear_id(wid, nwg, li, ${WG}u);
  let C = pu(1u);
  let V = pu(2u);
  if (t >= pu(0u) * C) { return; }
  let i = t / C;
  let c = t - i * C;
  let id = ids[i];
  if (id < 0 || u32(id) >= V) {
    if (c == 0u) { report(1u, id, V, pu(3u)); }
    out[t] = ${half ? '0.0' : '0u'};
    return;
  }
  out[t] = ${half ? 'weight_at(u32(id) * C + c)' : 'weight[u32(id) * C + c]'};
}
`;
}
const EMBEDDING = embeddingCode(false);
const EMBEDDING_HALF = embeddingCode(true);

// Thread t = (id chunk s, vocabulary block blk, column c) owns out[s][blk's rows, c]: it scans
// the ids of chunk s and adds the gy rows whose id falls in its block. With one chunk out is
// gw itself; with S > 1 each chunk adds into its own zeroed slice of a scratch buffer and
// EMBEDDING_SUM adds the slices into gw (more threads, each scanning n / S ids).
// params: n, C, V, rowsPerBlock, blocks, op, chunk (ids per chunk), S
const EMBEDDING_BACKWARD = PRELUDE + storage('f32', ['gy', 'ids:i32'], ['gw']) + errorBinding(4) + entry(WG) + /* wgsl */ `
  let t = linear_id(wid, nwg, li, ${WG}u);
  let n = pu(0u);
  let C = pu(1u);
  let V = pu(2u);
  let per = C * pu(4u);
  if (t >= per * pu(7u)) { return; }
  let s = t / per;
  let u = t - s * per;
  let blk = u / C;
  let c = u - blk * C;
  let lo = blk * pu(3u);
  let hi = min(V, lo + pu(3u));
  let base = s * V * C;
  let i1 = min(n, (s + 1u) * pu(6u));
  for (var i = s * pu(6u); i < i1; i++) {
    let id = ids[i];
    if (id < 0 || u32(id) >= V) {
      if (u == 0u) { report(1u, id, V, pu(5u)); }
      continue;
    }
    let r = u32(id);
    if (r >= lo && r < hi) { gw[base + r * C + c] += gy[i * C + c]; }
  }
}
`;

// gw[e] += Σ_s part[s * VC + e]. params: VC, S
const EMBEDDING_SUM = PRELUDE + storage('f32', ['part'], ['gw']) + entry(WG) + /* wgsl */ `
  let e = linear_id(wid, nwg, li, ${WG}u);
  let VC = pu(0u);
  if (e >= VC) { return; }
  var acc = gw[e];
  for (var s = 0u; s < pu(1u); s++) { acc += part[s * VC + e]; }
  gw[e] = acc;
}
`;

/** Id chunks for embeddingBackward: enough threads to fill a GPU when the vocabulary is small,
 *  within a 64 MiB scratch buffer and at least 256 ids a chunk. */
function embeddingChunks(n: number, V: number, C: number, threads: number): number {
  let S = 1;
  while (S < 64 && threads * S * 2 <= 1 << 18 && n / (S * 2) >= 256 && S * 2 * V * C * 4 <= 64 << 20) S *= 2;
  return S;
}

const embedding: KernelFn = (ctx, a) => {
  const n = a.n as number;
  const C = a.C as number;
  const p = ctx.params().u32(n).u32(C).u32(a.V as number).u32(opId('embedding'));
  ctx.dispatch({
    code: (a.weight as BufRef).dtype === 'float16' ? EMBEDDING_HALF : EMBEDDING,
    buffers: [ctx.buf(a.weight as BufRef), ctx.buf(a.ids as BufRef), ctx.buf(a.out as BufRef), ctx.errorBuffer],
    params: p,
    groups: groupsFor(n * C, WG),
  });
};

const embeddingBackward: KernelFn = (ctx, a) => {
  const n = a.n as number;
  const C = a.C as number;
  const V = a.V as number;
  if (C === 0 || n === 0) return;
  // Enough vocabulary blocks for a few thousand threads when C is small; each thread still scans
  // every id, so more blocks only add id reads.
  let blocks = Math.max(1, Math.min(V, 64, Math.ceil(8192 / C)));
  const rowsPerBlock = Math.max(1, Math.ceil(V / blocks));
  blocks = Math.max(1, Math.ceil(V / rowsPerBlock));
  const S = embeddingChunks(n, V, C, C * blocks);
  const chunk = Math.ceil(n / S);
  const gw = ctx.buf(a.gw as BufRef);
  const out = S > 1 ? ctx.scratch(S * V * C * 4) : gw;
  const p = ctx.params().u32(n).u32(C).u32(V).u32(rowsPerBlock).u32(blocks).u32(opId('embeddingBackward')).u32(chunk).u32(S);
  ctx.dispatch({
    code: EMBEDDING_BACKWARD,
    buffers: [ctx.buf(a.gy as BufRef), ctx.buf(a.ids as BufRef), out, ctx.errorBuffer],
    params: p,
    groups: groupsFor(C * blocks * S, WG),
  });
  if (S > 1) {
    ctx.dispatch({ code: EMBEDDING_SUM, buffers: [out, gw], params: ctx.params().u32(V * C).u32(S), groups: groupsFor(V * C, WG) });
  }
};

// ---------------------------------------------------------------- gather / scatterAdd

// params: outer, n, inner, k, op. Thread p = (o, j, i) of out.
const GATHER = PRELUDE + storage('u32', ['x', 'index:i32'], ['out']) + errorBinding(4) + entry(WG) + /* wgsl */ `
  let p = linear_id(wid, nwg, li, ${WG}u);
  let n = pu(1u);
  let inner = pu(2u);
  let k = pu(3u);
  if (p >= pu(0u) * k * inner) { return; }
  let i = p % inner;
  let o = p / (k * inner);
  let idx = index[p];
  if (idx < 0 || u32(idx) >= n) {
    report(1u, idx, n, pu(4u));
    out[p] = 0u;
    return;
  }
  out[p] = x[(o * n + u32(idx)) * inner + i];
}
`;

// Thread q = (o, i) owns column (o, :, i) of gx and walks the k indices of that column in order.
// params: outer, n, inner, k, op
const SCATTER_ADD = PRELUDE + storage('f32', ['gy', 'index:i32'], ['gx']) + errorBinding(4) + entry(WG) + /* wgsl */ `
  let q = linear_id(wid, nwg, li, ${WG}u);
  let n = pu(1u);
  let inner = pu(2u);
  let k = pu(3u);
  if (q >= pu(0u) * inner) { return; }
  let o = q / inner;
  let i = q - o * inner;
  for (var j = 0u; j < k; j++) {
    let p = (o * k + j) * inner + i;
    let idx = index[p];
    if (idx < 0 || u32(idx) >= n) {
      report(1u, idx, n, pu(4u));
      continue;
    }
    gx[(o * n + u32(idx)) * inner + i] += gy[p];
  }
}
`;

const gather: KernelFn = (ctx, a) => {
  const outer = a.outer as number;
  const inner = a.inner as number;
  const k = a.k as number;
  const p = ctx.params().u32(outer).u32(a.n as number).u32(inner).u32(k).u32(opId('gather'));
  ctx.dispatch({
    code: GATHER,
    buffers: [ctx.buf(a.x as BufRef), ctx.buf(a.index as BufRef), ctx.buf(a.out as BufRef), ctx.errorBuffer],
    params: p,
    groups: groupsFor(outer * k * inner, WG),
  });
};

const scatterAdd: KernelFn = (ctx, a) => {
  const outer = a.outer as number;
  const inner = a.inner as number;
  const p = ctx.params().u32(outer).u32(a.n as number).u32(inner).u32(a.k as number).u32(opId('scatterAdd'));
  ctx.dispatch({
    code: SCATTER_ADD,
    buffers: [ctx.buf(a.gy as BufRef), ctx.buf(a.index as BufRef), ctx.buf(a.gx as BufRef), ctx.errorBuffer],
    params: p,
    groups: groupsFor(outer * inner, WG),
  });
};

export const INDEXING_KERNELS: Record<string, KernelFn> = {
  embedding,
  embeddingBackward,
  gather,
  scatterAdd,
};
