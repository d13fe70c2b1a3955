// The tensor layer: shapes, dtypes, autograd and the ops. Importing it installs the methods.
import './methods.js';
export * from './dtype.js';
export * from './shape.js';
export * from './random.js';
export * from './ops.js';
export { backward, setLeafGradientHook, type BackwardOptions, type LeafGradientHook } from './autograd.js';
export { checkpoint } from './checkpoint.js';
export * from './precision.js';
export { Tensor, tidy, noGrad, withGrad, isGradEnabled, setDefaultBackend, getDefaultBackend, liveTensorCount, record, type GradNode } from './tensor.js';
export * from './quantize.js';
export { QuantizedWeight, quantLinear, quantEmbedding } from './quantized.js';
