// The data layer: token datasets on disk (nanoGPT's train.bin / val.bin) and batch sampling.
export {
  bytesPerToken, bytesToTokens, DATASET_FORMAT, findOutOfVocab, parseDatasetMeta, splitTokens, tokenDType, tokensToBytes,
  type DatasetMeta, type TokenArray, type TokenDType,
} from './dataset.js';
export {
  BatchSampler, gatherBatch, rngStateFromJson, rngStateToJson, type Batch, type BatchSamplerOptions, type SamplerState,
} from './sampler.js';
export {
  loadDataset, loadTokens, META_FILE, prepareDataset, readDatasetMeta, readTokenizerFiles, TRAIN_FILE, VAL_FILE,
  type Dataset, type PrepareOptions,
} from './files.js';
