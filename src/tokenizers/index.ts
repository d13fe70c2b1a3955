// Tokenizers: character level, byte-level BPE (GPT-2's, or trained here) and Hugging Face
// tokenizer.json files (HfTokenizer: Llama, Mistral, Qwen, GPT-2 from the Hub). Everything here is
// pure TypeScript over strings and numbers; the functions that touch files (save, loadTokenizer,
// loadGpt2Tokenizer) import node:fs only when called, so the rest also runs in a browser.
//
// Files (loadTokenizer picks the first present in a directory):
//   char_tokenizer.json       CharTokenizer, attn's own: {"type": "char", "version": 1, "chars": [...]}
//   tokenizer.json            Hugging Face format: BpeTokenizer for what BpeTokenizer.save writes,
//                             HfTokenizer (+ tokenizer_config.json) for any other
//   encoder.json + vocab.bpe  GPT-2's format (BpeTokenizer.save(dir, 'gpt2'))
export type { Tokenizer, TokenizerKind } from './types.js';
export { CharTokenizer, CHAR_TOKENIZER_FILE, type CharTokenizerJson } from './char.js';
export {
  BpeTokenizer,
  parseMergesText,
  type BpeFormat,
  type BpeSpec,
  type EncodeOptions,
  type HfTokenizerJson,
  type NormalizationForm,
  type SpecialTokenSet,
} from './bpe.js';
export {
  HfTokenizer,
  cleanUpTokenization,
  type HfAddedTokenJson,
  type HfConfigToken,
  type HfDecodeOptions,
  type HfEncodeOptions,
  type HfTokenizerConfigJson,
  type HfTokenizerFileJson,
} from './hf-tokenizer.js';
export { compileHfRegex, translateRegex } from './hf-regex.js';
export { trainBpe, type TrainBpeOptions } from './train.js';
export { GPT2_PATTERN, pretokenize } from './pretokenize.js';
export { BYTE_TO_CHAR, bytesToByteLevel, byteLevelToBytes } from './bytes.js';
export { GPT2_EOT, gpt2FromFiles, loadGpt2Tokenizer } from './gpt2.js';
export { isAttnBpeJson, loadTokenizer, loadGpt2Files, tokenizerFromHuggingFace } from './io.js';
export { writeFiles } from './files.js';
