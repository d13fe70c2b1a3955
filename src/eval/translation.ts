// Translation quality: corpus BLEU of a model's translations, and of a checkpoint on a split.
import type { Backend } from '../backend/backend.js';
import { readParallel } from '../data/translation.js';
import { translateIds, type TranslateOptions } from '../generate/translate.js';
import { loadSeq2SeqCheckpoint } from '../models/seq2seq-checkpoint.js';
import type { EncoderDecoder } from '../models/seq2seq.js';
import type { BpeTokenizer } from '../tokenizers/bpe.js';
import { corpusBleu } from './bleu.js';

/** BLEU of the model's translations of `src` against `refs` (detokenised by tokenizer.decode). */
export function translationBleu(model: EncoderDecoder, tok: BpeTokenizer, srcIds: readonly (readonly number[])[], refs: readonly string[], o: TranslateOptions = {}): { bleu: number; hyps: string[] } {
  const hyps = translateIds(model, srcIds, o).map((ids) => tok.decode(ids).trim());
  return { bleu: corpusBleu(hyps, refs).bleu, hyps };
}

/** BLEU of a checkpoint on a split of a parallel corpus folder (beam 4 by default). */
export async function evaluateCheckpointBleu(dir: string, data: { dataset: string; src_lang: string; tgt_lang: string; split: string }, o: TranslateOptions & { backend?: Backend } = {}): Promise<{ bleu: number; sentences: number }> {
  const { model, tokenizer, config } = await loadSeq2SeqCheckpoint(dir, { backend: o.backend });
  try {
    const text = await readParallel(data.dataset, data.split, data.src_lang, data.tgt_lang);
    const src = text.src.map((s) => tokenizer.encodeOrdinary(s.trim()).slice(0, config.max_len));
    const { bleu } = translationBleu(model, tokenizer, src, text.tgt, { beam: 4, lengthPenalty: 0.6, batchSize: 64, ...o });
    return { bleu, sentences: src.length };
  } finally {
    model.dispose();
  }
}
