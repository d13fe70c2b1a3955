// Tokenizers: character level and byte-level BPE (GPT-2's, or trained here). Everything here is
// pure TypeScript over strings and numbers; the functions that touch files (save, loadTokenizer,
// loadGpt2Tokenizer) import node:fs only when called, so the rest also runs in a browser.
//
// Files (loadTokenizer picks the first present in a directory):
//   char_tokenizer.json       CharTokenizer, attn's own: {"type": "char", "version": 1, "chars": [...]}
//   tokenizer.json            Hugging Face format, byte-level BPE (what BpeTokenizer.save writes)
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
export { trainBpe, type TrainBpeOptions } from './train.js';
export { GPT2_PATTERN, pretokenize } from './pretokenize.js';
export { BYTE_TO_CHAR, bytesToByteLevel, byteLevelToBytes } from './bytes.js';
export { GPT2_EOT, gpt2FromFiles, loadGpt2Tokenizer } from './gpt2.js';
export { loadTokenizer, loadGpt2Files } from './io.js';
export { writeFiles } from './files.js';
