// Every op's backward against central finite differences in float64 on the ref backend.
import { test } from 'node:test';
import * as A from '../src/index.js';
import { Generator, RefBackend, type Tensor } from '../src/index.js';
import { gradcheck, randTensor } from './helpers.js';

const be = new RefBackend();
const g = new Generator(1234);
const r = (shape: number[], scale = 1) => randTensor(shape, be, g, { requiresGrad: true, scale });
const pos = (shape: number[]) => {
  const t = randTensor(shape, be, g, { scale: 1 });
  const p = A.noGrad(() => A.add(A.abs(t), 0.5));
  p.requiresGrad = true;
  return p;
};
const ints = (values: number[], shape: number[]) => A.tensor(values, { backend: be, dtype: 'int32', shape });

test('element-wise binary ops with broadcasting', () => {
  gradcheck('add', (a, b) => A.add(a, b), [r([2, 3]), r([3])]);
  gradcheck('sub', (a, b) => A.sub(a, b), [r([2, 1, 3]), r([4, 1])]);
  gradcheck('mul', (a, b) => A.mul(a, b), [r([2, 3]), r([2, 1])]);
  gradcheck('div', (a, b) => A.div(a, b), [r([3, 2]), pos([2])]);
  gradcheck('pow scalar', (a) => A.pow(a, 3), [r([5])]);
  gradcheck('pow tensor', (a, b) => A.pow(a, b), [pos([4]), r([4])]);
  gradcheck('maximum', (a, b) => A.maximum(a, b), [r([6]), r([6])]);
  gradcheck('minimum', (a, b) => A.minimum(a, b), [r([6]), r([1])]);
  gradcheck('scalar ops', (a) => A.rsub(A.div(A.mul(A.sub(A.add(a, 2), 1), 3), 4), 5), [r([3])]);
});

test('element-wise unary ops', () => {
  const unary: [string, (x: Tensor) => Tensor, boolean][] = [
    ['neg', A.neg, false], ['exp', A.exp, false], ['log', A.log, true], ['sqrt', A.sqrt, true],
    ['rsqrt', A.rsqrt, true], ['abs', A.abs, false], ['sin', A.sin, false], ['cos', A.cos, false],
    ['square', A.square, false], ['reciprocal', A.reciprocal, true], ['tanh', A.tanh, false],
    ['relu', A.relu, false], ['sigmoid', A.sigmoid, false], ['silu', A.silu, false], ['elu1', A.elu1, false],
    ['gelu tanh', (x) => A.gelu(x, 'tanh'), false], ['gelu erf', (x) => A.gelu(x, 'none'), false],
  ];
  for (const [name, f, positive] of unary) gradcheck(name, f, [positive ? pos([7]) : r([7])]);
});

test('views: reshape, permute, transpose, slice with step, expand, squeeze, contiguous', () => {
  gradcheck('reshape', (a) => A.reshape(a, [3, -1]), [r([2, 3, 2])]);
  gradcheck('permute', (a) => A.permute(a, [2, 0, 1]).contiguous(), [r([2, 3, 4])]);
  gradcheck('transpose+mul', (a) => A.mul(A.transpose(a, 0, 1), 2), [r([3, 4])]);
  gradcheck('slice', (a) => A.slice(a, 1, 1, 6, 2), [r([2, 7])]);
  gradcheck('expand', (a) => A.mul(A.expand(a, [3, 2, 4]), A.expand(a, [3, 2, 4])), [r([2, 1])]);
  gradcheck('unsqueeze/squeeze', (a) => A.squeeze(A.unsqueeze(a, 1), 1), [r([3, 2])]);
  gradcheck('flatten', (a) => A.flatten(A.permute(a, [1, 0, 2]), 1), [r([2, 3, 2])]);
});

test('reductions: sum, mean, max, min over dims', () => {
  gradcheck('sum all', (a) => A.sum(a), [r([3, 4])]);
  gradcheck('sum dims keepdim', (a) => A.sum(a, [0, 2], true), [r([2, 3, 4])]);
  gradcheck('mean dim', (a) => A.mean(a, -1), [r([3, 5])]);
  gradcheck('max dim', (a) => A.max(a, 1), [r([3, 5])]);
  gradcheck('min dim keepdim', (a) => A.min(a, 0, true), [r([4, 3])]);
  gradcheck('sum of permuted', (a) => A.sum(A.permute(a, [1, 0]), 1), [r([3, 4])]);
  gradcheck('cumsum', (a) => A.cumsum(a, 1), [r([2, 5, 3])]);
  gradcheck('cumsum of transposed', (a) => A.cumsum(A.transpose(a), -1), [r([4, 3])]);
});

test('matmul: plain, batched with broadcasting, transposed operands, vectors; linear', () => {
  gradcheck('matmul 2d', (a, b) => A.matmul(a, b), [r([3, 4]), r([4, 5])]);
  gradcheck('matmul batched broadcast', (a, b) => A.matmul(a, b), [r([2, 3, 4]), r([4, 2])]);
  gradcheck('matmul 4d broadcast', (a, b) => A.matmul(a, b), [r([2, 1, 3, 4]), r([1, 3, 4, 2])]);
  gradcheck('matmul transposed views', (a, b) => A.matmul(A.transpose(a), A.transpose(b)), [r([4, 3]), r([5, 4])]);
  gradcheck('matmul vector', (a, b) => A.matmul(a, b), [r([4]), r([4, 3])]);
  gradcheck('matmul permuted batch', (a, b) => A.matmul(A.permute(a, [1, 0, 2]), b), [r([3, 2, 4]), r([2, 4, 3])]);
  gradcheck('linear with bias', (x, w, b) => A.linear(x, w, b), [r([2, 3, 4]), r([5, 4]), r([5])]);
  gradcheck('linear no bias', (x, w) => A.linear(x, w), [r([3, 4]), r([2, 4])]);
});

test('softmax, log-softmax, layer norm, RMS norm', () => {
  gradcheck('softmax last', (a) => A.softmax(a), [r([3, 5])]);
  gradcheck('softmax dim 0', (a) => A.softmax(a, 0), [r([3, 4])]);
  gradcheck('logSoftmax', (a) => A.logSoftmax(a, -1), [r([2, 6])]);
  gradcheck('layerNorm', (x, w, b) => A.layerNorm(x, w, b, 1e-5), [r([3, 6]), r([6]), r([6])]);
  gradcheck('layerNorm no affine', (x) => A.layerNorm(x, null, null), [r([2, 5])]);
  gradcheck('rmsNorm', (x, w) => A.rmsNorm(x, w, 1e-6), [r([3, 6]), r([6])]);
});

test('indexing: embedding, gather, where, maskedFill, tril', () => {
  gradcheck('embedding', (w) => A.embedding(w, ints([1, 3, 1, 0, 2, 1], [2, 3])), [r([4, 3])]);
  gradcheck('gather', (x) => A.gather(x, 1, ints([0, 2, 2, 1, 0, 0], [3, 2])), [r([3, 4])]);
  const cond = A.tensor([1, 0, 1, 0, 0, 1], { backend: be, dtype: 'float64', shape: [2, 3] });
  gradcheck('where', (a, b) => A.where(cond, a, b), [r([2, 3]), r([3])]);
  gradcheck('maskedFill', (a) => A.maskedFill(a, cond, -3), [r([2, 3])]);
  gradcheck('tril', (a) => A.tril(a), [r([2, 3, 3])]);
});

test('concat, stack, split', () => {
  gradcheck('concat', (a, b) => A.concat([a, b], 1), [r([2, 3]), r([2, 2])]);
  gradcheck('stack', (a, b) => A.stack([a, b], 1), [r([2, 3]), r([2, 3])]);
  gradcheck('split', (a) => {
    const [p, q] = A.split(a, [1, 3], 1);
    return A.mul(A.sum(p!, 1, true), q!);
  }, [r([2, 4])]);
});

test('cross-entropy with ignore index, label smoothing and reductions', () => {
  const t = ints([2, -100, 0, 4], [4]);
  gradcheck('crossEntropy mean', (x) => A.crossEntropy(x, t), [r([4, 5])]);
  gradcheck('crossEntropy smoothing', (x) => A.crossEntropy(x, t, { labelSmoothing: 0.1 }), [r([4, 5])]);
  gradcheck('crossEntropy sum', (x) => A.crossEntropy(x, t, { reduction: 'sum' }), [r([4, 5])]);
  gradcheck('crossEntropy none 3d', (x) => A.crossEntropy(x, ints([1, 0, 2, 1, 1, 0], [2, 3]), { reduction: 'none' }), [r([2, 3, 3])]);
});

test('dropout (fixed seed) backward', () => {
  gradcheck('dropout', (x) => A.dropout(x, 0.3, true, new Generator(5)), [r([20])]);
});

test('scaled dot-product attention: full, causal, Tq < Tk, key padding', () => {
  gradcheck('attention', (q, k, v) => A.scaledDotProductAttention(q, k, v), [r([1, 2, 3, 4]), r([1, 2, 3, 4]), r([1, 2, 3, 4])]);
  gradcheck('attention causal', (q, k, v) => A.scaledDotProductAttention(q, k, v, { causal: true }), [r([2, 1, 4, 3]), r([2, 1, 4, 3]), r([2, 1, 4, 3])]);
  gradcheck('attention causal Tq<Tk', (q, k, v) => A.scaledDotProductAttention(q, k, v, { causal: true }), [r([1, 1, 2, 3]), r([1, 1, 5, 3]), r([1, 1, 5, 3])]);
  const keyMask = ints([1, 1, 0, 1, 1, 1, 1, 0], [2, 4]);
  gradcheck('attention keyMask', (q, k, v) => A.scaledDotProductAttention(q, k, v, { keyMask }), [r([2, 2, 3, 2]), r([2, 2, 4, 2]), r([2, 2, 4, 2])]);
});

test('rotary position embedding: both layouts, partial rotation, an offset; fused equals the composite rotation', () => {
  const table = (rows: number, half: number) => {
    const c = new Float64Array(rows * half), s = new Float64Array(rows * half);
    for (let p = 0; p < rows; p++) for (let i = 0; i < half; i++) {
      c[p * half + i] = Math.cos(p * 0.7 ** i);
      s[p * half + i] = Math.sin(p * 0.7 ** i);
    }
    return [A.tensor(c, { backend: be, shape: [rows, half] }), A.tensor(s, { backend: be, shape: [rows, half] })] as const;
  };
  const [cos, sin] = table(9, 2);
  gradcheck('rotary bhtd', (x) => A.rotary(x, cos, sin, { layout: 'bhtd', offset: 2 }), [r([2, 3, 4, 4])]);
  gradcheck('rotary bthd partial', (x) => A.rotary(x, cos, sin, { layout: 'bthd', offset: 5, rotaryDim: 4 }), [r([2, 4, 3, 6])]);
  // The fused kernel against slices and muls (a backend without rope), both layouts.
  const x = r([2, 4, 3, 6]);
  const fused = A.rotary(x, cos, sin, { layout: 'bthd', offset: 1, rotaryDim: 4 }).data();
  const x1 = A.slice(x, -1, 0, 2), x2 = A.slice(x, -1, 2, 4);
  const c = A.reshape(A.slice(cos, 0, 1, 5), [4, 1, 2]), s = A.reshape(A.slice(sin, 0, 1, 5), [4, 1, 2]);
  const want = A.concat([A.sub(A.mul(x1, c), A.mul(x2, s)), A.add(A.mul(x2, c), A.mul(x1, s)), A.slice(x, -1, 4)], -1).data();
  for (let i = 0; i < want.length; i++) if (Math.abs(fused[i]! - want[i]!) > 1e-12) throw new Error(`rotary: element ${i}: ${fused[i]} vs ${want[i]}`);
});
