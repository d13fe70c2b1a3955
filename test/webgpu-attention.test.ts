// The webgpu attention kernels against the ref backend: direct backend.attention /
// attentionBackward calls (out, lse, gq, gk, gv) over causal, full, Tq < Tk, Tq > Tk, key masks
// with fully masked rows and the sparse patterns; then the same cases through
// A.scaledDotProductAttention, which also needs the webgpu element-wise and reduce kernels.
// Every direct case runs both webgpu paths (forced through the kernels' `path` arg): scores
// through the matmul shaders ('products') and the flash-style kernels ('flash').
import { test } from 'node:test';
import type { AttentionSparsity, Backend, Storage } from '../src/backend/backend.js';
import * as A from '../src/index.js';
import { Generator, RefBackend, type Tensor } from '../src/index.js';
import { assertClose, randomArray } from './helpers.js';
import { attentionMaskAndViewCases, comparerFor } from './backend-compare.js';
import { webgpu } from './webgpu-helpers.js';

const ref = new RefBackend();

const window = (w: number): AttentionSparsity => ({ kind: 'window', window: w });
const strided = (l: number): AttentionSparsity => ({ kind: 'strided', stride: l });
const fixed = (l: number, c: number): AttentionSparsity => ({ kind: 'fixed', block: l, summary: c });
const label = (s: AttentionSparsity | null): string => !s ? 'dense'
  : s.kind === 'window' ? `window ${s.window}` : s.kind === 'strided' ? `strided ${s.stride}` : `fixed ${s.block}/${s.summary}`;

interface Case {
  B: number; H: number; Tq: number; Tk: number; D: number;
  causal: boolean;
  sparsity?: AttentionSparsity | null;
  mask?: number[] | null;
}

/** Forward then backward on one backend with the given inputs; returns everything read back. */
function runDirect(be: Backend, c: Case, vals: Float64Array[], path?: 'flash' | 'products'): Record<string, Float32Array | Float64Array | Int32Array> {
  const { B, H, Tq, Tk, D } = c;
  const up = (x: ArrayLike<number>): Storage => be.upload(x, 'float32');
  const [q, k, v, gout] = vals.map(up) as [Storage, Storage, Storage, Storage];
  const keyMask = c.mask ? be.upload(c.mask, 'int32') : null;
  const out = be.alloc('float32', B * H * Tq * D);
  const lse = be.alloc('float32', B * H * Tq);
  // `path` is read by the webgpu kernels only (not part of AttentionArgs).
  const args = { q, k, v, out, lse, B, H, Tq, Tk, D, scale: 1 / Math.sqrt(D), causal: c.causal, keyMask, sparsity: c.sparsity ?? null, ...(path ? { path } : {}) };
  be.attention(args);
  const gq = be.alloc('float32', B * H * Tq * D);
  const gk = be.alloc('float32', B * H * Tk * D);
  const gv = be.alloc('float32', B * H * Tk * D);
  be.attentionBackward({ ...args, gout, gq, gk, gv });
  const res = { out: be.read(out), lse: be.read(lse), gq: be.read(gq), gk: be.read(gk), gv: be.read(gv) };
  for (const s of [q, k, v, gout, out, lse, gq, gk, gv]) be.free(s);
  if (keyMask) be.free(keyMask);
  return res as Record<string, Float32Array | Float64Array | Int32Array>;
}

function compareDirect(gpu: Backend, c: Case): void {
  const name = `${c.B}x${c.H}x${c.Tq}x${c.Tk}x${c.D} causal=${c.causal} ${label(c.sparsity ?? null)}${c.mask ? ' keyMask' : ''}`;
  const g = new Generator(c.Tq * 131 + c.Tk * 7 + c.D + name.length);
  const { B, H, Tq, Tk, D } = c;
  const vals = [B * H * Tq * D, B * H * Tk * D, B * H * Tk * D, B * H * Tq * D].map((n) => randomArray(n, g));
  const want = runDirect(ref, c, vals);
  for (const path of ['products', 'flash'] as const) {
    const got = runDirect(gpu, c, vals, path);
    for (const what of ['out', 'lse', 'gq', 'gk', 'gv']) assertClose(got[what]!, want[what]!, 2e-4, 2e-5, `${name} ${path} ${what}`);
  }
}

test('webgpu attention kernels match ref: causal, full, Tq < Tk, Tq > Tk, D up to 200', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  for (const [B, H, Tq, Tk, D] of [[1, 1, 1, 1, 16], [2, 3, 3, 3, 16], [1, 2, 17, 17, 64], [1, 1, 129, 129, 64],
    [1, 2, 5, 129, 16], [1, 1, 12, 7, 8], [1, 1, 70, 100, 20], [1, 1, 33, 40, 128], [1, 1, 3, 0, 8], [1, 2, 9, 11, 200]] as const) {
    for (const causal of [true, false]) compareDirect(be, { B, H, Tq, Tk, D, causal });
  }
});

test('webgpu attention kernels match ref: key mask with fully masked rows', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  // batch 0: keys 6..8 padded; batch 1: every key padded (all its rows see nothing)
  const mask = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
  for (const causal of [true, false]) {
    compareDirect(be, { B: 2, H: 2, Tq: 9, Tk: 9, D: 16, causal, mask });
    compareDirect(be, { B: 2, H: 1, Tq: 4, Tk: 9, D: 16, causal, mask, sparsity: window(3) });
  }
  // the first key padded: with causal, query 0 sees nothing
  const first = Array.from({ length: 2 * 70 }, (_, i) => (i % 70 === 0 || i % 7 === 3 ? 0 : 1));
  compareDirect(be, { B: 2, H: 1, Tq: 70, Tk: 70, D: 16, causal: true, mask: first });
  compareDirect(be, { B: 2, H: 1, Tq: 70, Tk: 70, D: 16, causal: true, mask: first, sparsity: fixed(16, 4) });
});

test('webgpu attention kernels match ref: window, strided and fixed sparsity', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const patterns = [window(1), window(3), window(16), window(100), strided(1), strided(3), strided(16), strided(100),
    fixed(4, 1), fixed(3, 2), fixed(5, 5), fixed(16, 4), fixed(100, 7), window(1 << 30), strided(1 << 30), fixed(1 << 30, 1)];
  for (const s of patterns) {
    for (const causal of [true, false]) {
      compareDirect(be, { B: 1, H: 2, Tq: 17, Tk: 17, D: 16, causal, sparsity: s });
      compareDirect(be, { B: 1, H: 1, Tq: 129, Tk: 129, D: 16, causal, sparsity: s });
      compareDirect(be, { B: 1, H: 2, Tq: 5, Tk: 129, D: 16, causal, sparsity: s });
      compareDirect(be, { B: 1, H: 1, Tq: 100, Tk: 60, D: 8, causal, sparsity: s });
    }
  }
  // D = 64 stages 30 keys a tile: more tiles, so more of them are skipped
  for (const s of [window(40), strided(40), fixed(40, 2), fixed(64, 16)]) {
    for (const causal of [true, false]) compareDirect(be, { B: 2, H: 1, Tq: 129, Tk: 129, D: 64, causal, sparsity: s });
  }
});

test('webgpu scaledDotProductAttention matches ref, forward and gradients', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const tol = { rtol: 2e-4, atol: 2e-5 };
  const compare = comparerFor([be]);
  for (const [B, H, Tq, Tk, D] of [[1, 1, 1, 1, 16], [2, 3, 3, 3, 16], [1, 2, 17, 17, 64], [1, 2, 5, 129, 16]]) {
    const shapes = [{ shape: [B!, H!, Tq!, D!] }, { shape: [B!, H!, Tk!, D!] }, { shape: [B!, H!, Tk!, D!] }];
    compare(`attention causal ${Tq}x${Tk}x${D}`, shapes, (q, k, v) => A.scaledDotProductAttention(q, k, v, { causal: true }), tol);
    compare(`attention full ${Tq}x${Tk}x${D}`, shapes, (q, k, v) => A.scaledDotProductAttention(q, k, v), tol);
  }
  attentionMaskAndViewCases(compare, tol);
  for (const s of [window(3), strided(4), fixed(5, 2)]) {
    compare(`attention ${label(s)}`, [{ shape: [1, 2, 17, 16] }, { shape: [1, 2, 17, 16] }, { shape: [1, 2, 17, 16] }],
      (q, k, v) => A.scaledDotProductAttention(q, k, v, { causal: true, sparsity: s }), tol);
  }
});
