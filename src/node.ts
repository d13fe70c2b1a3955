// attn for Node: everything in the main entry plus the pieces that touch the file system:
// datasets on disk, safetensors files, checkpoints, the trainer and Hugging Face directories.
export * from './index.js';
export { loadDataset, loadTokens, prepareDataset, readDatasetMeta, readTokenizerFiles, META_FILE, TRAIN_FILE, VAL_FILE, type Dataset, type PrepareOptions } from './data/files.js';
export * from './data/dataset.js';
export * from './io/files.js';
export * from './train/checkpoint.js';
export * from './train/trainer.js';
export { loadHFGPT2, saveHFGPT2, type LoadHFOptions } from './models/hf-gpt2-files.js';
export * from './nn/lora-files.js';
