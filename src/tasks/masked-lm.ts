// Masked-LM pre-training (BERT: 15 % of the tokens selected; 80 % [MASK], 10 % random, 10 % kept)
// of an encoder on unlabeled sentences, from scratch (after training a BPE on them) or continued
// from a checkpoint (its model and BPE). OUT/best is the lowest held-out MLM loss.
import { join } from 'node:path';
import { encodeSentence, readSentences, shuffled, specialIdsOf, trainSentenceTokenizer, type SpecialIds } from '../data/sentences.js';
import { rngStateFromJson, rngStateToJson } from '../data/sampler.js';
import { padMultiple } from '../eval/classify.js';
import { CheckpointError } from '../io/checkpoint.js';
import { bertCheckpointConfig, bertStateEntries, loadBertCheckpoint } from '../models/bert-checkpoint.js';
import { BertModel, IGNORE_INDEX, maskTokens, padRows } from '../models/bert.js';
import { Generator, noGrad, tensor, tidy } from '../tensor/index.js';
import type { Tokenizer } from '../tokenizers/index.js';
import { resolveConfig, type TrainingConfig } from '../train/config.js';
import { runTraining, type LoopHooks, type LoopOptions, type Task } from '../train/loop.js';
import type { ClassifyTrainResult } from './classification.js';
import { checkEncoder, ENCODER_ARCH, ENCODER_DEFAULTS, encoderFields, epochBatches } from './encoder.js';

export type PretrainConfig = TrainingConfig;

export const MASKED_LM_TASK: Task<number[]> = {
  task: 'masked-lm',
  defaults: { ...ENCODER_DEFAULTS, out_dir: 'out/masked-lm', learning_rate: 1e-3, max_iters: 3000, batch_size: 64, eval_interval: 500, eval_iters: 20, data: 'data/sst2/train.tsv' },
  archFields: ENCODER_ARCH,
  best: { metric: 'val_loss', higher: false },
  check: checkEncoder,
  async open(cfg, { backend, resume, say }) {
    // Continued pre-training: the checkpoint's model and BPE, read (and refused) before the data.
    // With the same data, seed and val_fraction the held-out sentences are those of the first run.
    const from = resume ? resume.dir : cfg.init_from === 'scratch' ? null : cfg.init_from;
    const loaded = from ? await loadBertCheckpoint(from, { backend, override: { dropout: cfg.dropout } }) : null;
    if (loaded && !loaded.config.mlm_head) {
      loaded.model.dispose();
      throw new CheckpointError(join(from!, 'config.json'), 'this encoder has no masked-LM head (a fine-tuned classifier?); continue pre-training from an \'attn pretrain-mlm\' checkpoint');
    }
    let sentences: string[];
    try {
      sentences = await readSentences(cfg.data);
      if (sentences.length < 2) throw new Error(`${cfg.data}: need at least 2 sentences`);
    } catch (e) {
      loaded?.model.dispose();
      throw e;
    }
    const g = new Generator(cfg.seed);
    const order = shuffled(sentences.length, g);
    const nVal = Math.max(1, Math.round(cfg.val_fraction * sentences.length));
    const valS = order.slice(0, nVal).map((i) => sentences[i]!);
    const trainS = order.slice(nVal).map((i) => sentences[i]!);
    let tok: Tokenizer;
    let model: BertModel;
    if (!loaded) {
      say(`training a ${cfg.vocab_size}-token BPE on ${trainS.length} sentences`);
      tok = trainSentenceTokenizer(trainS, cfg.vocab_size);
      model = new BertModel({ ...encoderFields(cfg), vocab_size: tok.vocabSize, ...specialIdsOf(tok), mlm_head: true, n_classes: 0 }, { backend, seed: cfg.seed });
    } else {
      tok = loaded.tokenizer;
      model = loaded.model.train();
      if (!resume) say(`continuing from ${from} (${model.config.n_layer} layers, ${model.config.d_model} wide, vocabulary ${model.config.vocab_size})`);
    }
    model.train();
    const mc = model.config;
    const sp: SpecialIds = { pad_id: mc.pad_id, cls_id: mc.cls_id, sep_id: mc.sep_id, mask_id: mc.mask_id };
    const enc = (ss: string[]) => ss.map((s) => encodeSentence(tok, s, sp, mc.max_len));
    const train = enc(trainS);
    const val = enc(valS);
    const maskOpts = { vocabSize: mc.vocab_size, maskId: sp.mask_id, specialIds: [sp.pad_id, sp.cls_id, sp.sep_id, sp.mask_id], prob: cfg.mask_prob };
    const { sampler, ...batches } = epochBatches(cfg, train.length, g);
    const maskGen = new Generator(cfg.seed + 1);
    const mlmBatch = (rows: number[][], gen: Generator) => {
      const ids = padRows(rows, sp.pad_id, padMultiple(backend));
      let m = maskTokens(ids.data, { ...maskOpts, generator: gen });
      // A batch with nothing selected (tiny batches): select the first real token of row 0.
      if (!m.labels.some((l) => l !== IGNORE_INDEX)) {
        const input = m.input.slice();
        const labels = m.labels.slice();
        labels[1] = input[1]!;
        input[1] = sp.mask_id;
        m = { input, labels };
      }
      return model.mlmLoss(tensor(m.input, { backend, dtype: 'int32', shape: ids.shape }), m.labels);
    };
    const extra = { task: 'mlm', training: { ...cfg } };
    return {
      model,
      ...batches,
      loss: (idx) => ({ loss: mlmBatch(idx.map((i) => train[i]!), maskGen).loss }),
      evaluate: () => {
        const eg = new Generator(cfg.seed + 2); // the same masks every evaluation
        let sum = 0;
        let cnt = 0;
        for (let b = 0; b < cfg.eval_iters && b * cfg.batch_size < val.length; b++) {
          const rows = val.slice(b * cfg.batch_size, (b + 1) * cfg.batch_size);
          noGrad(() => tidy(() => {
            const { loss, count } = mlmBatch(rows, eg);
            sum += loss.item() * count;
            cnt += count;
          }));
        }
        return { val_loss: sum / Math.max(cnt, 1) };
      },
      checkpoint: () => ({ config: bertCheckpointConfig(model.config, extra), model: bertStateEntries(model), tokenizerFiles: tok.toFiles() }),
      state: () => ({ sampler: sampler.state(), mask_rng: rngStateToJson(maskGen) }),
      setState: (s) => {
        sampler.setState(s['sampler']);
        rngStateFromJson(maskGen, s['mask_rng'], 'mask_rng');
      },
    };
  },
};

export function pretrainConfig(partial: Record<string, unknown> = {}): PretrainConfig {
  return resolveConfig(MASKED_LM_TASK, partial, 'PretrainConfig');
}

/** Masked-LM pre-training on unlabeled sentences with the one loop. */
export async function pretrainMLM(input: Record<string, unknown>, hooks: LoopHooks = {}, opts: LoopOptions = {}): Promise<ClassifyTrainResult> {
  const r = await runTraining(MASKED_LM_TASK, input, hooks, opts);
  return { iter: r.iter, out_dir: r.out_dir, best_dir: r.best_dir, last_eval: r.last_eval, best_val_loss: r.best_eval?.['val_loss'] ?? NaN };
}
