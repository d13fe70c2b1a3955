// attn: the Transformer and the language models built on it, in TypeScript. This entry works
// in Node and in browsers; Node-only pieces (files, checkpoints, the trainer) are in ./node.ts.
// The `ref` backend is the default at first; `await useBackend('cpu')` switches to WebAssembly.
export * from './tensor/index.js';
export type * from './backend/backend.js';
export { RefBackend } from './backend/ref/index.js';
import { useBackend, type BackendName } from './backend/index.js';
export { getBackend, useBackend, refBackend, BACKEND_NAMES, type BackendName } from './backend/index.js';
export * from './nn/index.js';
export * from './models/gpt.js';
export * from './models/hf-gpt2.js';
export {
  Encoder, countTrainingForward, featureGeneratorFor, paddingMask, redrawPerformerFeatures, stackProblems,
  type PerformerRedraw, type StackParts, type TransformerStackFields,
} from './models/encoder.js';
export * from './models/seq2seq.js';
export * from './models/bert.js';
export * from './tokenizers/index.js';
export * from './generate/index.js';
export * from './generate/beam.js';
export * from './eval/bleu.js';
export { attentionMaps, attentionProbabilities, attributions, buildVizDocument, headAblation, lensLogits, logitLens, type AttributionTarget, type InterpretableModel, type VizDocument } from './eval/interpret.js';
export * from './eval/scaling.js';
export * from './eval/lm-eval.js';
export * from './io/safetensors.js';
export { BatchSampler, gatherBatch, type Batch, type BatchSamplerOptions, type SamplerState } from './data/sampler.js';
export { AdamW, type AdamWOptions } from './train/optim.js';
export * from './train/schedule.js';
export { PRESETS, preset, presetNames } from './train/presets.js';
export * from './models/load-url.js';
export { hostWebGPUForWorker, connectWebGPUFromPage, type HostOptions, type WorkerLike } from './backend/webgpu/browser.js';
export type { WebGPUBackend } from './backend/webgpu/index.js';
export type { AdapterDescription } from './backend/webgpu/protocol.js';

// In Node the fastest backend there is (cpu: WebAssembly SIMD kernels on all cores) is the
// default for new tensors, so forgetting useBackend() never means the slow reference backend.
// ATTN_BACKEND=ref (or any backend name) picks another; browsers call useBackend() themselves
// (the cpu backend there runs on Web Workers the page provides).
const nodeEnv = typeof process !== 'undefined' && typeof process.versions?.node === 'string' ? process.env : null;
if (nodeEnv) await useBackend((nodeEnv['ATTN_BACKEND'] as BackendName | undefined) ?? 'cpu');
