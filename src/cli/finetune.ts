// attn finetune --task sst2: fine-tunes (or trains from scratch) an encoder classifier, with a
// progress bar; prints the held-out test accuracy as JSON at the end.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { evaluateClassifier, finetuneConfig, finetuneClassifier, FINETUNE_DEFAULTS, parseConfigValue, type FinetuneConfig } from '../train/classify.js';
import { openDevice } from '../backend/index.js';
import { type Flags, UsageError } from './args.js';
import { requireDir, requireFile, shippedData } from './common.js';
import { ProgressBar } from './progress.js';

export const FINETUNE_HELP = `attn finetune --task sst2 [--init_from DIR] [--label_fraction F] [--out DIR] [--FIELD VALUE ...]

Trains a BERT-style encoder classifier on SST-2 (data/sst2/train.tsv; dev accuracy on
data/sst2/dev.tsv picks the best checkpoint), then prints {"task","accuracy","n",...} on
data/sst2/test.tsv (the GLUE SST-2 dev set). From scratch it trains a BPE of --vocab_size on the
training sentences; --init_from DIR starts from an 'attn pretrain-mlm' checkpoint (its
architecture and tokenizer).

  --task sst2            the task (sst2 only)
  --init_from DIR        a pre-trained checkpoint (default: scratch)
  --label_fraction F     use a seeded F of the training labels (e.g. 0.1, 0.01)
  --prompt TEMPLATE      prompt-based classification: TEMPLATE follows each sentence and holds
                         [MASK] once (e.g. "it was [MASK] ."); the MLM head's scores of the
                         --verbalizers words at the mask are the classes (no new head)
  --verbalizers W0,W1    one word per class, label 0 first (default terrible,great); each must
                         be a single token of the vocabulary
  --lora_rank R          LoRA adapters on the encoder (the head trains fully); merged when saved
  --out DIR              checkpoints DIR/best, DIR/last, metrics.jsonl, loss.svg (default out-sst2)
  --test_file F          the TSV scored at the end (default data/sst2/test.tsv; 'none' to skip)
  --FIELD VALUE          any config field: n_layer (2), n_head (4), d_model (128), d_ff (512),
                         max_len (64), vocab_size (4000), dropout (0.1), positions learned|sinusoidal,
                         pooling cls|mean (what the classifier reads: [CLS] or the mean of the tokens),
                         batch_size (128), max_iters (1000), epochs (0: use max_iters), learning_rate
                         (1e-3), warmup_iters (100), lr_decay linear|cosine, weight_decay (0.01),
                         eval_interval (200), eval_max (0: all dev), seed, train_file, dev_file,
                         device cpu|webgpu|auto|ref, threads`;

const TASKS: Record<string, { train: string; dev: string; test: string }> = {
  sst2: { train: 'data/sst2/train.tsv', dev: 'data/sst2/dev.tsv', test: 'data/sst2/test.tsv' },
};

/** Flags that are config fields, typed like their defaults. */
export function configFromFlags(command: string, defaults: object, f: Flags): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of f.rest()) {
    try {
      out[k] = parseConfigValue(defaults, k, v);
    } catch (e) {
      throw new UsageError(`${command}: --${k}: ${(e as Error).message}`);
    }
  }
  return out;
}

export async function runFinetune(f: Flags): Promise<void> {
  const task = f.string('task') ?? 'sst2';
  const t = TASKS[task];
  if (!t) throw new UsageError(`finetune: unknown --task '${task}' (known: ${Object.keys(TASKS).join(', ')})`);
  const out = f.string('out');
  const testFlag = f.string('test_file');
  const quiet = f.bool('quiet');
  const base: Record<string, unknown> = { train_file: t.train, dev_file: t.dev, ...configFromFlags('finetune', FINETUNE_DEFAULTS, f) };
  if (out !== undefined) base['out_dir'] = out;
  let cfg: FinetuneConfig;
  try {
    cfg = finetuneConfig(base);
  } catch (e) {
    throw new UsageError(`finetune: ${(e as Error).message.replace(/^FinetuneConfig: /, '')}`);
  }
  cfg = { ...cfg, train_file: shippedData(cfg.train_file), dev_file: shippedData(cfg.dev_file) };
  await requireFile('finetune', 'train_file', cfg.train_file);
  await requireFile('finetune', 'dev_file', cfg.dev_file);
  if (cfg.init_from !== 'scratch') await requireDir('finetune', 'init_from', cfg.init_from);
  const testFile = testFlag ?? shippedData(t.test);
  if (testFile !== 'none') await requireFile('finetune', 'test_file', testFile);
  const backend = await openDevice(cfg.device!, { threads: cfg.threads! });
  const log = (s: string) => process.stderr.write(`${s}\n`);
  let bar: ProgressBar | null = null;
  const say = (s: string) => (bar ? bar.log(s) : log(s));
  const r = await finetuneClassifier(cfg, {
    onStart: (i) => {
      log(`fine-tuning a ${(i.numParams / 1e6).toFixed(2)}M-parameter encoder (${(i.trainable / 1e6).toFixed(2)}M trainable) on ${i.backend.name}: ${i.examples} examples, ${i.maxIters} steps of ${cfg.batch_size}; out: ${cfg.out_dir}`);
      bar = new ProgressBar(i.maxIters, { label: 'finetune', unit: 'ex/s' });
    },
    onProgress: (step, _total, rate, loss) => bar?.update(step, rate, `loss ${loss.toFixed(4)}`),
    onEval: (e) => say(`step ${e.step}: train loss ${e.train_loss.toFixed(4)}, dev loss ${e.val_loss.toFixed(4)}, dev accuracy ${((e.val_accuracy ?? NaN) * 100).toFixed(2)}%${e.saved.length ? ` (saved ${e.saved.join(', ')})` : ''}`),
    onMessage: say,
  }, { backend });
  (bar as ProgressBar | null)?.finish();
  const dir = existsSync(join(r.best_dir, 'config.json')) ? r.best_dir : join(cfg.out_dir, 'last');
  if (!quiet) log(`done: ${r.iter} steps, best dev accuracy ${((r.best_val_accuracy ?? NaN) * 100).toFixed(2)}%; checkpoints in ${cfg.out_dir}/best and ${cfg.out_dir}/last`);
  const result: Record<string, unknown> = { task, init_from: cfg.init_from, label_fraction: cfg.label_fraction, dev_accuracy: r.best_val_accuracy, model: dir };
  if (testFile !== 'none') {
    const ev = await evaluateClassifier(dir, testFile, { backend });
    Object.assign(result, { test_file: testFile, accuracy: ev.accuracy, n: ev.n });
  }
  console.log(JSON.stringify(result));
}
