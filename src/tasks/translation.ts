// Translation with the 2017 encoder-decoder (src/models/seq2seq.ts) on a parallel corpus: a
// shared BPE, length-grouped token-budget batches, label-smoothed cross-entropy, evaluated by val
// loss and greedy val BLEU (plotted against wall-clock minutes to bleu.svg); OUT/best is the
// best BLEU. The loop (src/train/loop.ts) does the rest.

import type { Backend } from '../backend/backend.js';
import {
  encodePairs, evalBatches, LengthBatchSampler, makeBatch, readParallel, specialIds, trainTranslationTokenizer,
  type EncodedPair, type SpecialIds, type TranslationBatch,
} from '../data/translation.js';
import { linePlotSvg, type MetricsRecord } from '../eval/plot.js';
import { translationBleu } from '../eval/translation.js';
import { modelToCheckpointTensors } from '../models/checkpoint-format.js';
import { loadSeq2SeqTensors, readBpeTokenizer, seq2seqConfigJson, seq2seqConfigOfCheckpoint } from '../models/seq2seq-checkpoint.js';
import { EncoderDecoder, seq2seqConfig, type Seq2SeqConfig } from '../models/seq2seq.js';
import { ATTENTION_DEFAULTS, ATTENTION_FIELDS, type FullAttentionFields } from '../nn/attention-config.js';
import { noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import type { BpeTokenizer } from '../tokenizers/bpe.js';
import { resolveConfig, type TrainingConfig } from '../train/config.js';
import { runTraining, type EvalResult, type LoopHooks, type Task, type TaskContext, type TaskRun } from '../train/loop.js';
import { corpusBleu } from '../eval/bleu.js';
import { CheckpointError } from '../io/checkpoint.js';
import { readHFConfig } from '../models/hf-decoder-files.js';
import { loadT5Dir } from '../models/hf-t5-files.js';
import { t5ConfigToHF } from '../models/hf-t5.js';
import { Generator } from '../tensor/index.js';
import { loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { epochBatches } from './encoder.js';

export const BLEU_PLOT_FILE = 'bleu.svg';
export type Seq2SeqTrainConfig = TrainingConfig;
export type Seq2SeqMetrics = MetricsRecord & { epoch?: number; val_bleu?: number; eval_s?: number };

/** The 2017 model shrunk for a 2-core CPU: the task's defaults (and the multi30k-de-en preset's). */
export const SEQ2SEQ_SMALL_MODEL = Object.freeze({
  n_layer_enc: 3, n_layer_dec: 3, n_head: 4, n_embd: 256, n_inner: 1024, dropout: 0.1, label_smoothing: 0.1, block_size: 128,
});

const ARCH = ['n_layer_enc', 'n_layer_dec', 'n_head', 'n_embd', 'n_inner', 'block_size', 'norm_placement', 'activation', ...ATTENTION_FIELDS];

/** The model's Seq2SeqConfig with the tokenizer's vocabulary and special ids. */
export function modelConfigFor(cfg: TrainingConfig, vocabSize: number, ids: SpecialIds): Seq2SeqConfig {
  return seq2seqConfig({
    n_layer_enc: cfg.n_layer_enc, n_layer_dec: cfg.n_layer_dec, n_head: cfg.n_head, d_model: cfg.n_embd, d_ff: cfg.n_inner || 4 * cfg.n_embd,
    dropout: cfg.dropout, max_len: cfg.block_size, vocab_size: vocabSize, ...ids, norm_placement: cfg.norm_placement as 'pre' | 'post',
    activation: cfg.activation as 'relu' | 'gelu', label_smoothing: cfg.label_smoothing,
    // Only the attention fields that differ from the defaults, so dense models' config.json is as before.
    ...Object.fromEntries(ATTENTION_FIELDS.filter((k) => cfg[k as keyof FullAttentionFields] !== ATTENTION_DEFAULTS[k as keyof FullAttentionFields]).map((k) => [k, cfg[k as keyof FullAttentionFields]])),
  });
}

function batchTensors(b: TranslationBatch, backend: Backend): [Tensor, Tensor, Tensor] {
  const t = (a: Int32Array, T: number): Tensor => tensor(a, { backend, dtype: 'int32', shape: [b.batchSize, T] });
  return [t(b.src, b.srcLen), t(b.tgtIn, b.tgtLen), t(b.tgtOut, b.tgtLen)];
}

/** Label-smoothed loss per target token over all pairs (eval mode, no dropout). */
export function seq2seqValLoss(model: EncoderDecoder, pairs: readonly EncodedPair[], ids: SpecialIds, maxTokens: number): number {
  const backend = model.embed.weight.backend;
  const was = model.training;
  model.eval();
  try {
    let total = 0;
    let n = 0;
    for (const idx of evalBatches(pairs, maxTokens)) {
      const b = makeBatch(pairs, idx, ids);
      total += noGrad(() => tidy(() => model.forward(...batchTensors(b, backend)).loss!.item())) * b.tgtTokens;
      n += b.tgtTokens;
    }
    return total / n;
  } finally {
    model.train(was);
  }
}

/** Val BLEU against wall-clock minutes. */
export function bleuPlotSvg(records: readonly MetricsRecord[], title = 'val BLEU'): string {
  const pts = records.filter((r) => typeof r['val_bleu'] === 'number').map((r) => [r.elapsed_s / 60, r['val_bleu'] as number] as const);
  return linePlotSvg([{ name: 'val BLEU (greedy)', points: pts }], { title, xLabel: 'minutes', yLabel: 'BLEU' });
}

export const TRANSLATION_TASK: Task<TranslationBatch> = {
  task: 'translation',
  defaults: {
    out_dir: 'out/translation', dataset: 'data/multi30k', ...SEQ2SEQ_SMALL_MODEL, norm_placement: 'post', activation: 'relu', vocab_size: 8000,
    // Noam's schedule, peak 0.3 · 256^-0.5 · 200^-0.5 ≈ 1.33e-3 at update 200.
    lr_decay: 'noam', learning_rate: 0.3 / Math.sqrt(256 * 200), warmup_iters: 200, beta1: 0.9, beta2: 0.98, eps: 1e-9, weight_decay: 0, grad_clip: 1.0,
    max_iters: 100000, eval_interval: 50, log_interval: 10,
  },
  archFields: ARCH,
  best: { metric: 'val_bleu', higher: true },
  title: (cfg) => `loss: ${cfg.src_lang}→${cfg.tgt_lang}`,
  check(cfg, problems) {
    if (cfg.activation !== 'relu' && cfg.activation !== 'gelu') problems.push(`activation must be one of 'relu', 'gelu' for translation, got '${cfg.activation}'`);
  },
  async open(cfg, ctx) {
    const { backend, resume, say } = ctx;
    const [trainText, valText] = await Promise.all([
      readParallel(cfg.dataset, cfg.train_split, cfg.src_lang, cfg.tgt_lang, cfg.train_limit),
      readParallel(cfg.dataset, cfg.val_split, cfg.src_lang, cfg.tgt_lang, cfg.val_limit),
    ]);
    const t5From = resume ? (resume.config['model_type'] === 't5' ? resume.dir : null)
      : cfg.init_from !== 'scratch' && (await readHFConfig(cfg.init_from))['model_type'] === 't5' ? cfg.init_from : null;
    // The loop hands a run's own batches back to it, so a run with another batch type fits.
    if (t5From) return (await openT5(cfg, ctx, trainText, valText, t5From)) as unknown as TaskRun<TranslationBatch>;
    let tok: BpeTokenizer;
    if (resume) tok = await readBpeTokenizer(resume.dir);
    else if (cfg.tokenizer) tok = await readBpeTokenizer(cfg.tokenizer);
    else {
      say(`training a ${cfg.vocab_size}-token BPE on ${trainText.src.length} ${cfg.src_lang}+${cfg.tgt_lang} training pairs`);
      tok = trainTranslationTokenizer([...trainText.src, ...trainText.tgt], cfg.vocab_size);
    }
    const ids = specialIds(tok);
    const tokenizerFiles = tok.toFiles();
    const trainPairs = encodePairs(tok, trainText, cfg.block_size);
    const valPairs = encodePairs(tok, valText, cfg.block_size);
    const modelConfig = resume ? seq2seqConfigOfCheckpoint(resume) : modelConfigFor(cfg, tok.vocabSize, ids);
    const model = new EncoderDecoder(modelConfig, { backend, seed: cfg.seed, init: !resume });
    if (resume) {
      try {
        loadSeq2SeqTensors(model, resume);
      } catch (e) {
        model.dispose();
        throw e;
      }
    }
    model.train(true);
    const sampler = new LengthBatchSampler(trainPairs, ids, cfg.max_tokens, cfg.seed);
    const valSrc = valPairs.map((p) => p.src);
    return {
      model,
      info: { modelConfig, trainPairs: trainPairs.length, valPairs: valPairs.length, batchesPerEpoch: sampler.epochLength },
      nextBatch: () => sampler.next(),
      sizeOf: (b) => b.srcTokens + b.tgtTokens,
      loss: (b) => ({ loss: model.forward(...batchTensors(b, backend)).loss! }),
      stepRecord: () => ({ epoch: sampler.epoch }),
      evaluate: (): Record<string, number> => {
        const valLoss = seq2seqValLoss(model, valPairs, ids, cfg.eval_max_tokens);
        if (!Number.isFinite(valLoss)) return { val_loss: valLoss };
        const { bleu } = translationBleu(model, tok, valSrc, valText.tgt, { greedy: true, batchSize: 256, maxTokens: cfg.eval_max_tokens, maxLenA: cfg.decode_len_a, maxLenB: cfg.decode_len_b });
        return { val_loss: valLoss, val_bleu: bleu };
      },
      checkpoint: () => ({ config: seq2seqConfigJson(modelConfig, { src_lang: cfg.src_lang, tgt_lang: cfg.tgt_lang }), model: modelToCheckpointTensors(model), tokenizerFiles }),
      state: () => ({ sampler: sampler.state() }),
      setState: (s) => sampler.setState(s['sampler']),
      plots: (records) => ({ [BLEU_PLOT_FILE]: bleuPlotSvg(records, `val BLEU, ${cfg.src_lang}→${cfg.tgt_lang}`) }),
    };
  },
};

// ---------------------------------------------------------------- Hugging Face T5

/** A T5 sentence: its tokenizer's ids (ending with </s> from the post-processor), cut to max keeping the last. */
function encodeT5(tok: Tokenizer, text: string, max: number): number[] {
  const ids = tok.encode(text);
  return ids.length <= max ? ids : [...ids.slice(0, max - 1), ids[ids.length - 1]!];
}

/** Fine-tuning a Hugging Face T5 on the parallel corpus: sources as its tokenizer encodes
 *  source_prefix + sentence, labels the target's ids (-100 padding), decoder inputs shifted
 *  right by the model; val loss and greedy val BLEU; saved in the Hugging Face layout. */
async function openT5(cfg: TrainingConfig, { backend, say }: TaskContext, trainText: { src: string[]; tgt: string[] }, valText: { src: string[]; tgt: string[] }, from: string): Promise<TaskRun<number[]>> {
  let tok: Tokenizer;
  try {
    tok = await loadTokenizer(from);
  } catch (e) {
    throw new CheckpointError(from, `no tokenizer.json to read the sentences with (${(e as Error).message})`);
  }
  const { model, hfConfig, config } = await loadT5Dir(from, { backend });
  model.train(true);
  const max = cfg.block_size;
  const enc = (t: { src: string[]; tgt: string[] }) => t.src.map((s, i) => ({ src: encodeT5(tok, cfg.source_prefix + s, max), tgt: encodeT5(tok, t.tgt[i]!, max) }));
  const train = enc(trainText);
  const val = enc(valText);
  say(`fine-tuning ${from} (T5, ${config.num_layers}+${config.num_decoder_layers} layers, ${config.d_model} wide): ${train.length} training and ${val.length} validation pairs${cfg.source_prefix ? `, prefix ${JSON.stringify(cfg.source_prefix)}` : ''}`);
  const pad = config.pad_token_id;
  const tensors = (rows: { src: number[]; tgt: number[] }[]): { src: Tensor; mask: Tensor; labels: Tensor } => {
    const S = Math.max(...rows.map((r) => r.src.length));
    const T = Math.max(...rows.map((r) => r.tgt.length));
    const src = new Int32Array(rows.length * S).fill(pad);
    const mask = new Int32Array(rows.length * S);
    const labels = new Int32Array(rows.length * T).fill(-100);
    rows.forEach((r, b) => {
      r.src.forEach((id, s) => { src[b * S + s] = id; mask[b * S + s] = 1; });
      r.tgt.forEach((id, t) => (labels[b * T + t] = id));
    });
    const t = (a: Int32Array, n: number) => tensor(a, { backend, dtype: 'int32', shape: [rows.length, n] });
    return { src: t(src, S), mask: t(mask, S), labels: t(labels, T) };
  };
  const loss = (rows: { src: number[]; tgt: number[] }[]): Tensor => {
    const b = tensors(rows);
    return model.forward(b.src, null, b.labels, { srcMask: b.mask }).loss!;
  };
  const { sampler, ...batches } = epochBatches(cfg, train.length, new Generator(cfg.seed + 5));
  return {
    model,
    ...batches,
    sizeOf: (idx) => idx.reduce((n, i) => n + train[i]!.src.length + train[i]!.tgt.length, 0),
    loss: (idx) => ({ loss: loss(idx.map((i) => train[i]!)) }),
    evaluate: (): Record<string, number> => {
      const was = model.training;
      model.eval();
      try {
        let total = 0;
        let n = 0;
        for (let s = 0; s < val.length; s += 64) {
          const rows = val.slice(s, s + 64);
          const tokens = rows.reduce((k, r) => k + r.tgt.length, 0);
          total += noGrad(() => tidy(() => loss(rows).item())) * tokens;
          n += tokens;
        }
        const hyps: string[] = [];
        for (let s = 0; s < val.length; s += 64) {
          const rows = val.slice(s, s + 64);
          const got = model.greedyGenerate(rows.map((r) => r.src), { maxNewTokens: Math.ceil(cfg.decode_len_a * Math.max(...rows.map((r) => r.src.length)) + cfg.decode_len_b) });
          for (const g of got) hyps.push((tok as Tokenizer & { decode(ids: number[], o?: { skipSpecialTokens?: boolean }): string }).decode(g, { skipSpecialTokens: true }).trim());
        }
        return { val_loss: total / n, val_bleu: corpusBleu(hyps, valText.tgt).bleu };
      } finally {
        model.train(was);
      }
    },
    checkpoint: () => ({ config: t5ConfigToHF(model.config, hfConfig), model: modelToCheckpointTensors(model), tokenizerFiles: tok.toFiles() }),
    state: () => ({ sampler: sampler.state() }),
    setState: (s) => sampler.setState(s['sampler']),
    plots: (records) => ({ [BLEU_PLOT_FILE]: bleuPlotSvg(records, `val BLEU, ${cfg.src_lang}→${cfg.tgt_lang} (T5)`) }),
  };
}

/** Defaults filled in and every field checked (one error naming all problems). */
export function seq2seqTrainConfig(partial: Record<string, unknown> = {}): Seq2SeqTrainConfig {
  return resolveConfig(TRANSLATION_TASK, partial, 'Seq2SeqTrainConfig');
}

export interface Seq2SeqTrainResult {
  step: number;
  best_val_bleu: number;
  last_eval: EvalResult | null;
  /** Why it stopped: 'max_iters', 'max_minutes' or 'signal'. */
  stop_reason: string;
  out_dir: string;
  elapsed_s: number;
}

/** Trains the encoder-decoder with the one loop; resumes from out_dir/last with init_from 'resume'. */
export async function trainSeq2Seq(input: Record<string, unknown>, hooks: LoopHooks = {}): Promise<Seq2SeqTrainResult> {
  const r = await runTraining(TRANSLATION_TASK, input, hooks);
  return { step: r.iter, best_val_bleu: r.best, last_eval: r.last_eval, stop_reason: r.stop_reason, out_dir: r.out_dir, elapsed_s: r.elapsed_s };
}

