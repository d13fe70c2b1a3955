// attn for Node: everything in the main entry plus the pieces that touch the file system:
// datasets on disk, safetensors files, checkpoints, the trainer and Hugging Face directories.
export * from './index.js';
export { loadDataset, loadTokens, prepareDataset, readDatasetMeta, readTokenizerFiles, META_FILE, TRAIN_FILE, VAL_FILE, type Dataset, type PrepareOptions } from './data/files.js';
export * from './data/dataset.js';
export * from './io/files.js';
export * from './io/checkpoint.js';
export * from './train/loop.js';
export * from './train/config.js';
export { train, trainConfig, parseTrainConfigValue, modelConfigOf, trainStep, estimateLoss, LM_TASK, TRAIN_DEFAULTS, type TrainConfig, type TrainResult } from './tasks/lm.js';
export { trainSeq2Seq, seq2seqTrainConfig, TRANSLATION_TASK } from './tasks/translation.js';
export { finetuneClassifier, finetuneConfig, CLASSIFICATION_TASK } from './tasks/classification.js';
export { pretrainMLM, pretrainConfig, MASKED_LM_TASK } from './tasks/masked-lm.js';
export { loadGPTCheckpoint, gptConfigFromCheckpointJson, type LoadedGPT } from './models/gpt-checkpoint.js';
export { loadSeq2SeqCheckpoint } from './models/seq2seq-checkpoint.js';
export { loadBertCheckpoint } from './models/bert-checkpoint.js';
export { loadHFGPT2, saveHFGPT2, type LoadHFOptions } from './models/hf-gpt2-files.js';
export * from './nn/lora-files.js';
export { load, save, type Loaded, type AnyModel } from './models/files.js';
export { DecoderLM, DECODER_FAMILIES, type DecoderConfig, type DecoderFamily } from './models/decoder.js';
export { decoderConfigFromHF, decoderConfigToHF, decoderFamilyOf } from './models/hf-decoder.js';
export { loadDecoderDir, saveDecoderDir } from './models/hf-decoder-files.js';
export { HFBert, type HFBertConfig } from './models/hf-bert.js';
export { loadHFBertDir, saveHFBertDir, bertConfigFromHF } from './models/hf-bert-files.js';
export { T5Model, type T5Config } from './models/t5.js';
export { loadT5Dir, saveT5Dir } from './models/hf-t5-files.js';
export { t5ConfigFromHF, t5ConfigToHF } from './models/hf-t5.js';
export { chatTemplateOf, renderChat, type ChatMessage, type ChatTemplate } from './generate/chat.js';
