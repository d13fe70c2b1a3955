// attn pretrain-mlm: masked-LM pre-training of an encoder on the one loop (the masked-lm task).
import { fieldHelp } from '../train/config.js';
import { MASKED_LM_TASK } from '../tasks/masked-lm.js';
import type { Flags } from './args.js';
import { runTaskCommand } from './train.js';

export const PRETRAIN_MLM_HELP = `attn pretrain-mlm --out DIR [--data FILE[,FILE...]] [--FIELD VALUE ...]

Masked-LM pre-training (BERT: 15% of tokens selected; 80% [MASK], 10% random, 10% kept) of an
encoder on unlabeled sentences, after training a BPE of --vocab_size on them. Writes OUT/best
(lowest held-out MLM loss), OUT/last, OUT/metrics.jsonl and OUT/loss.svg; use OUT/best as
'attn finetune --init_from'. --init_from DIR continues pre-training from such a checkpoint (its
model and BPE; pass the same --data and --seed so the held-out sentences stay held out). The
same as 'attn train --task masked-lm'; prints {"steps","best_val_loss","model"} at the end.

  --out DIR                          the same as --out_dir
  --config FILE, --quiet             as for attn train

${fieldHelp(MASKED_LM_TASK)}`;

export async function runPretrainMLM(f: Flags): Promise<void> {
  const r = await runTaskCommand(f, { command: 'pretrain-mlm', task: 'masked-lm', base: {} });
  if (r) console.log(JSON.stringify({ steps: r.result.iter, best_val_loss: r.result.best_eval?.['val_loss'] ?? null, model: r.result.best_dir }));
}
