// The encoder-decoder's checkpoint directory: config.json (model_type 'attn_seq2seq' and the
// Seq2SeqConfig), model.safetensors and the shared BPE's tokenizer.json.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError, checkShapes, loadCheckpoint, type LoadedCheckpoint } from '../io/checkpoint.js';
import { BpeTokenizer } from '../tokenizers/bpe.js';
import { checkpointTensorsToState } from './checkpoint-format.js';
import { EncoderDecoder, SEQ2SEQ_FIELDS, seq2seqConfig, type Seq2SeqConfig } from './seq2seq.js';

export const SEQ2SEQ_MODEL_TYPE = 'attn_seq2seq';

export function seq2seqConfigJson(config: Seq2SeqConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model_type: SEQ2SEQ_MODEL_TYPE, architectures: ['AttnEncoderDecoder'], ...config, ...extra };
}

/** What kind of model a config.json describes, for messages. */
export function describeModelKind(json: Record<string, unknown>): string {
  const t = json['model_type'];
  if (t === 'gpt2' || t === 'attn_gpt' || json['attn'] !== undefined) return `a GPT language model (model_type '${String(t ?? 'attn_gpt')}')`;
  if (typeof t === 'string') return `a '${t}' model`;
  return 'a config.json without model_type';
}

export class WrongModelKindError extends Error {
  constructor(readonly path: string, readonly kind: string) {
    super(`${path} holds ${kind}, not an encoder-decoder translation model (model_type '${SEQ2SEQ_MODEL_TYPE}')`);
    this.name = 'WrongModelKindError';
  }
}

export interface LoadedSeq2Seq {
  model: EncoderDecoder;
  config: Seq2SeqConfig;
  tokenizer: BpeTokenizer;
  checkpoint: LoadedCheckpoint;
}

/** Loads a checkpoint's weights into an encoder-decoder of its config (errors name the file). */
export function loadSeq2SeqTensors(model: EncoderDecoder, ckpt: LoadedCheckpoint): void {
  const expected = new Map<string, readonly number[]>();
  for (const [name, t] of model.stateDict()) expected.set(name, [...t.shape]);
  checkShapes(expected, ckpt.tensors, join(ckpt.dir, 'model.safetensors'));
  model.loadStateDict(checkpointTensorsToState(ckpt.tensors));
}

/** The config.json of an encoder-decoder checkpoint as a Seq2SeqConfig; refuses other kinds. */
export function seq2seqConfigOfCheckpoint(ckpt: LoadedCheckpoint): Seq2SeqConfig {
  if (ckpt.config['model_type'] !== SEQ2SEQ_MODEL_TYPE) throw new WrongModelKindError(ckpt.dir, describeModelKind(ckpt.config));
  try {
    return seq2seqConfig(Object.fromEntries(SEQ2SEQ_FIELDS.map((k) => [k, ckpt.config[k]])) as Partial<Seq2SeqConfig>);
  } catch (e) {
    throw new CheckpointError(join(ckpt.dir, 'config.json'), (e as Error).message);
  }
}

/** A tokenizer.json (or the folder holding one) as the BPE it describes; errors name the file. */
export async function readBpeTokenizer(path: string): Promise<BpeTokenizer> {
  const p = path.endsWith('.json') ? path : join(path, 'tokenizer.json');
  try {
    return BpeTokenizer.fromHuggingFaceJson(await readFile(p, 'utf8'));
  } catch (e) {
    throw new CheckpointError(p, (e as Error).message);
  }
}

/** Loads a checkpoint the translation task wrote (eval mode); refuses other kinds, saying what they are. */
export async function loadSeq2SeqCheckpoint(dir: string, opts: { backend?: Backend; requireOptimizer?: boolean } = {}): Promise<LoadedSeq2Seq> {
  const ckpt = await loadCheckpoint(dir, { requireOptimizer: opts.requireOptimizer });
  const config = seq2seqConfigOfCheckpoint(ckpt);
  const tokenizer = await readBpeTokenizer(ckpt.dir);
  const model = new EncoderDecoder(config, { backend: opts.backend, init: false });
  try {
    loadSeq2SeqTensors(model, ckpt);
  } catch (e) {
    model.dispose();
    throw e;
  }
  model.eval();
  return { model, config, tokenizer, checkpoint: ckpt };
}
