// The neural-network layer: Module and the building blocks of Transformers.
export * from './module.js';
export * from './layers.js';
export * from './positional.js';
export * from './mlp.js';
export * from './attention.js';
export * from './linear-attention.js';
export * from './moe.js';
export * from './lora.js';
export * from './encoder-decoder-layers.js';
export * from './quantized.js';
