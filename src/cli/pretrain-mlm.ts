// attn pretrain-mlm: masked-LM pre-training of a BERT-style encoder on unlabeled sentences.
import { dataPaths, pretrainConfig, pretrainMLM, PRETRAIN_DEFAULTS, type PretrainConfig } from '../train/classify.js';
import { openDevice } from '../backend/index.js';
import { type Flags, UsageError } from './args.js';
import { requireFile, shippedData } from './common.js';
import { configFromFlags } from './finetune.js';
import { ProgressBar } from './progress.js';

export const PRETRAIN_MLM_HELP = `attn pretrain-mlm --out DIR [--data FILE[,FILE...]] [--FIELD VALUE ...]

Masked-LM pre-training (BERT: 15% of tokens selected; 80% [MASK], 10% random, 10% kept) of an
encoder on unlabeled sentences, after training a BPE of --vocab_size on them. Writes DIR/best
(lowest held-out MLM loss), DIR/last, metrics.jsonl and loss.svg; use DIR/best as
'attn finetune --init_from'. --init_from DIR continues pre-training from such a checkpoint (its
model and BPE; pass the same --data and --seed so the held-out sentences stay held out).

  --data FILE[,FILE...]  a .tsv (its sentence column, labels ignored) or a text file, one sentence
                         per line, either optionally gzipped (.gz); several files, comma-separated,
                         are concatenated (default data/sst2/train.tsv)
  --FIELD VALUE          n_layer (2), n_head (4), d_model (128), d_ff (512), max_len (64),
                         vocab_size (4000), dropout (0.1), positions learned|sinusoidal,
                         batch_size (64), max_iters (3000), epochs, learning_rate (1e-3),
                         warmup_iters (100), lr_decay linear|cosine, mask_prob (0.15),
                         val_fraction (0.02), eval_interval (500), eval_batches (20), seed,
                         device cpu|webgpu|auto|ref, threads, init_from (scratch)`;

export async function runPretrainMLM(f: Flags): Promise<void> {
  const out = f.required('out', 'an output directory');
  const data = f.string('data');
  const base: Record<string, unknown> = { ...configFromFlags('pretrain-mlm', PRETRAIN_DEFAULTS, f), out_dir: out };
  if (data !== undefined) base['data'] = data;
  let cfg: PretrainConfig;
  try {
    cfg = pretrainConfig(base);
  } catch (e) {
    throw new UsageError(`pretrain-mlm: ${(e as Error).message.replace(/^PretrainConfig: /, '')}`);
  }
  let paths: string[];
  try {
    paths = dataPaths(cfg.data).map(shippedData);
  } catch (e) {
    throw new UsageError(`pretrain-mlm: --data: ${(e as Error).message}`);
  }
  for (const p of paths) await requireFile('pretrain-mlm', 'data', p);
  cfg = { ...cfg, data: paths.join(',') };
  const backend = await openDevice(cfg.device!, { threads: cfg.threads! });
  const log = (s: string) => process.stderr.write(`${s}\n`);
  let bar: ProgressBar | null = null;
  const say = (s: string) => (bar ? bar.log(s) : log(s));
  const r = await pretrainMLM(cfg, {
    onStart: (i) => {
      log(`pre-training a ${(i.numParams / 1e6).toFixed(2)}M-parameter encoder on ${i.backend.name}: ${i.examples} sentences, ${i.maxIters} steps of ${cfg.batch_size}; out: ${cfg.out_dir}`);
      bar = new ProgressBar(i.maxIters, { label: 'mlm', unit: 'sent/s' });
    },
    onProgress: (step, _t, rate, loss) => bar?.update(step, rate, `loss ${loss.toFixed(4)}`),
    onEval: (e) => say(`step ${e.step}: train loss ${e.train_loss.toFixed(4)}, val MLM loss ${e.val_loss.toFixed(4)}${e.saved.length ? ` (saved ${e.saved.join(', ')})` : ''}`),
    onMessage: say,
  }, { backend });
  (bar as ProgressBar | null)?.finish();
  console.log(JSON.stringify({ steps: r.iter, best_val_loss: r.best_val_loss, model: r.best_dir }));
}
