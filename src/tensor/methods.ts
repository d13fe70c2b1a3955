// The fluent API: tensor methods that forward to the ops (x.add(y) is add(x, y)).
import { backward, type BackwardOptions } from './autograd.js';
import type { DType } from './dtype.js';
import * as ops from './ops.js';
import type { Shape } from './shape.js';
import { Tensor } from './tensor.js';

declare module './tensor.js' {
  interface Tensor {
    backward(grad?: Tensor, opts?: BackwardOptions): void;
    /** A tensor on the same storage that is cut from the graph. */
    detach(): Tensor;
    add(b: Tensor | number): Tensor;
    sub(b: Tensor | number): Tensor;
    mul(b: Tensor | number): Tensor;
    div(b: Tensor | number): Tensor;
    pow(p: Tensor | number): Tensor;
    neg(): Tensor;
    exp(): Tensor;
    log(): Tensor;
    sqrt(): Tensor;
    tanh(): Tensor;
    relu(): Tensor;
    gelu(approximate?: 'tanh' | 'none'): Tensor;
    silu(): Tensor;
    sigmoid(): Tensor;
    sum(dims?: number | readonly number[], keepdim?: boolean): Tensor;
    mean(dims?: number | readonly number[], keepdim?: boolean): Tensor;
    max(dim?: number, keepdim?: boolean): Tensor;
    argmax(dim?: number, keepdim?: boolean): Tensor;
    matmul(b: Tensor): Tensor;
    reshape(shape: Shape): Tensor;
    view(shape: Shape): Tensor;
    flatten(startDim?: number, endDim?: number): Tensor;
    permute(dims: readonly number[]): Tensor;
    transpose(dim0?: number, dim1?: number): Tensor;
    slice(dim: number, start: number, end?: number, step?: number): Tensor;
    expand(shape: Shape): Tensor;
    unsqueeze(dim: number): Tensor;
    squeeze(dim?: number): Tensor;
    contiguous(): Tensor;
    softmax(dim?: number): Tensor;
    logSoftmax(dim?: number): Tensor;
    to(dtype: DType): Tensor;
  }
}

const P = Tensor.prototype;
P.backward = function (grad, opts) {
  backward(this, grad, opts);
};
P.detach = function () {
  return new Tensor(this.storage, this.shape, this.strides, this.offset);
};
P.add = function (b) { return ops.add(this, b); };
P.sub = function (b) { return ops.sub(this, b); };
P.mul = function (b) { return ops.mul(this, b); };
P.div = function (b) { return ops.div(this, b); };
P.pow = function (p) { return ops.pow(this, p); };
P.neg = function () { return ops.neg(this); };
P.exp = function () { return ops.exp(this); };
P.log = function () { return ops.log(this); };
P.sqrt = function () { return ops.sqrt(this); };
P.tanh = function () { return ops.tanh(this); };
P.relu = function () { return ops.relu(this); };
P.gelu = function (approximate) { return ops.gelu(this, approximate); };
P.silu = function () { return ops.silu(this); };
P.sigmoid = function () { return ops.sigmoid(this); };
P.sum = function (dims, keepdim) { return ops.sum(this, dims, keepdim); };
P.mean = function (dims, keepdim) { return ops.mean(this, dims, keepdim); };
P.max = function (dim, keepdim) { return ops.max(this, dim, keepdim); };
P.argmax = function (dim, keepdim) { return ops.argmax(this, dim, keepdim); };
P.matmul = function (b) { return ops.matmul(this, b); };
P.reshape = function (shape) { return ops.reshape(this, shape); };
P.view = function (shape) { return ops.view(this, shape); };
P.flatten = function (s, e) { return ops.flatten(this, s, e); };
P.permute = function (dims) { return ops.permute(this, dims); };
P.transpose = function (a, b) { return ops.transpose(this, a, b); };
P.slice = function (d, s, e, st) { return ops.slice(this, d, s, e, st); };
P.expand = function (shape) { return ops.expand(this, shape); };
P.unsqueeze = function (d) { return ops.unsqueeze(this, d); };
P.squeeze = function (d) { return ops.squeeze(this, d); };
P.contiguous = function () { return ops.contiguous(this); };
P.softmax = function (d) { return ops.softmax(this, d); };
P.logSoftmax = function (d) { return ops.logSoftmax(this, d); };
P.to = function (dtype) { return ops.to(this, dtype); };
