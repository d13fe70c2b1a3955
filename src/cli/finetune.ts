// attn finetune --task sst2: sentence classification on the one loop (the classification task),
// then the best checkpoint's accuracy on the test TSV as one JSON line.
import { fieldHelp } from '../train/config.js';
import { CLASSIFICATION_TASK } from '../tasks/classification.js';
import { type Flags, UsageError } from './args.js';
import { shippedData } from './common.js';
import { runTaskCommand, testAccuracy } from './train.js';

const TASKS: Record<string, { train: string; dev: string; test: string }> = {
  sst2: { train: 'data/sst2/train.tsv', dev: 'data/sst2/dev.tsv', test: 'data/sst2/test.tsv' },
};

export const FINETUNE_HELP = `attn finetune --task sst2 [--init_from DIR] [--label_fraction F] [--out DIR] [--FIELD VALUE ...]

Trains a BERT-style encoder classifier on SST-2 (data/sst2/train.tsv; dev accuracy on
data/sst2/dev.tsv picks OUT/best), then prints {"accuracy","n",...} on data/sst2/test.tsv (the
GLUE SST-2 dev set). From scratch it trains a BPE of --vocab_size on the training sentences;
--init_from DIR starts from an 'attn pretrain-mlm' checkpoint (its architecture and tokenizer).
The same as 'attn train --task classification'. Writes OUT/best, OUT/last, OUT/metrics.jsonl,
OUT/loss.svg.

  --task sst2                        the data set (sst2 only)
  --test_file F|none                 the TSV scored at the end (default data/sst2/test.tsv)
  --out DIR                          the same as --out_dir
  --config FILE, --quiet             as for attn train

${fieldHelp(CLASSIFICATION_TASK)}`;

export async function runFinetune(f: Flags): Promise<void> {
  const name = f.string('task') ?? 'sst2';
  const t = TASKS[name];
  if (!t) throw new UsageError(`finetune: unknown --task '${name}' (known: ${Object.keys(TASKS).join(', ')})`);
  const testFile = f.string('test_file') ?? shippedData(t.test);
  const r = await runTaskCommand(f, { command: 'finetune', task: 'classification', base: { train_file: t.train, dev_file: t.dev } });
  if (r && !r.result.stopped) await testAccuracy(r.cfg, r.result, testFile);
}
