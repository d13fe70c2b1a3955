// attn finetune: `lm` (a causal language model, full or LoRA), `translation` (a Hugging Face T5),
// or --task sst2: sentence classification on the one loop (the classification task), then the
// best checkpoint's accuracy on the test TSV as one JSON line.
import { fieldHelp } from '../train/config.js';
import { CLASSIFICATION_TASK } from '../tasks/classification.js';
import { type Flags, UsageError } from './args.js';
import { shippedData } from './common.js';
import { runTaskCommand, testAccuracy } from './train.js';

const TASKS: Record<string, { train: string; dev: string; test: string }> = {
  sst2: { train: 'data/sst2/train.tsv', dev: 'data/sst2/dev.tsv', test: 'data/sst2/test.tsv' },
};

export const FINETUNE_HELP = `attn finetune lm --init_from DIR --data FILE [--lora_r R --lora_alpha A --lora_target q_proj,v_proj] [--out DIR] [--FIELD VALUE ...]

Fine-tunes a causal language model on the one loop (the lm task): a Hugging Face decoder
(llama, mistral, qwen2, qwen3, phi) or an attn checkpoint. --data is plain text or JSONL with a
"text" field per line, tokenized with the model's tokenizer (documents end with its EOS); the
last tenth is the validation split. Without the LoRA flags every weight trains and OUT/best is a
Hugging Face model directory; with --lora_r the base stays frozen and OUT/best holds the adapters
unmerged in the PEFT layout (adapter_config.json, adapter_model.safetensors): sample with
'attn sample --model OUT/best' (or --model BASE --adapter OUT/best), fold them in with 'attn merge'.
Fine-tuning defaults: 200 updates, learning rate 1e-4 (LoRA 1e-3), batch 4, block 128,
evaluation every 50 updates on 20 batches, no weight decay, out/finetune-lm.

attn finetune translation --init_from T5_DIR [--source_prefix "translate German to English: "] [--dataset data/multi30k] [--FIELD VALUE ...]

Fine-tunes a Hugging Face T5 (with its tokenizer.json) on a parallel corpus (the translation
task): sources are source_prefix + sentence, targets the reference; val loss and greedy val BLEU
pick OUT/best, written in the T5 layout ('attn translate --model OUT/best --prefix ...' reads it).
Defaults: 1000 updates of 16 pairs, learning rate 3e-4 with linear decay, out/finetune-translation.

attn finetune sft --init_from DIR --data chat.jsonl [--pack true|false] [--lora_r R] [--FIELD VALUE ...]
attn finetune dpo --init_from DIR --data pairs.jsonl [--dpo_loss dpo|ipo] [--beta B] [--ref_model DIR]
attn finetune ppo --init_from DIR --data prompts.txt --reward_model DIR [--kl_coef C | --kl_target K] [--ppo_epochs 4]
attn train reward --init_from DIR --data pairs.jsonl

Alignment (docs/alignment.md): SFT on chat JSONL ({"messages": [...]}, loss on the assistant's
tokens only, rendered with the model's chat template); DPO or IPO on preference pairs
({"prompt", "chosen", "rejected"}) against a frozen reference; PPO with a value head, KL penalty
and GAE against a reward model or a classifier; a reward model (GPT + scalar head, Bradley-Terry).
'attn train --help' lists their fields under sft, dpo, ppo and reward.

attn finetune --task sst2 [--init_from DIR] [--label_fraction F] [--out DIR] [--FIELD VALUE ...]

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

/** The lm task's defaults for fine-tuning (the pre-training defaults are nanoGPT's). */
const LM_FINETUNE_DEFAULTS = {
  out_dir: 'out/finetune-lm', max_iters: 200, batch_size: 4, block_size: 128, eval_interval: 50, eval_iters: 20,
  weight_decay: 0, dropout: 0,
};

/** The translation task's defaults for fine-tuning a T5 (the task's own are the 2017 model's from scratch). */
const TRANSLATION_FINETUNE_DEFAULTS = {
  out_dir: 'out/finetune-translation', max_iters: 1000, batch_size: 16, learning_rate: 3e-4, lr_decay: 'linear', warmup_iters: 50, eval_interval: 250,
  block_size: 128, weight_decay: 0, source_prefix: 'translate German to English: ',
};

export async function runFinetune(f: Flags): Promise<void> {
  const sub = f.parsed.positionals[0];
  if (sub !== undefined && !['lm', 'translation', 'sft', 'dpo', 'ppo'].includes(sub)) throw new UsageError(`finetune: unknown subcommand '${sub}' (attn finetune lm|translation|sft|dpo|ppo ..., or attn finetune --task sst2)`);
  if (f.parsed.positionals.length > 1) throw new UsageError(`finetune: unexpected argument '${f.parsed.positionals[1]}'`);
  if (sub === 'lm') {
    if (!f.has('init_from')) throw new UsageError('finetune lm: --init_from DIR is required (a Hugging Face decoder or an attn checkpoint)');
    const lora = f.has('lora_r') || f.has('lora_rank');
    // Resuming restates nothing: the saved run's config is taken as it was.
    const base = f.parsed.flags.get('init_from') === 'resume' ? {} : { ...LM_FINETUNE_DEFAULTS, learning_rate: lora ? 1e-3 : 1e-4 };
    await runTaskCommand(f, { command: 'finetune lm', task: 'lm', base });
    return;
  }
  if (sub === 'sft' || sub === 'dpo' || sub === 'ppo') {
    // Alignment (docs/alignment.md): the task's own defaults; the data is --data FILE.
    await runTaskCommand(f, { command: `finetune ${sub}`, task: sub, base: {} });
    return;
  }
  if (sub === 'translation') {
    if (!f.has('init_from')) throw new UsageError('finetune translation: --init_from DIR is required (a Hugging Face T5 directory with its tokenizer.json)');
    const base = f.parsed.flags.get('init_from') === 'resume' ? {} : TRANSLATION_FINETUNE_DEFAULTS;
    await runTaskCommand(f, { command: 'finetune translation', task: 'translation', base });
    return;
  }
  const name = f.string('task') ?? 'sst2';
  const t = TASKS[name];
  if (!t) throw new UsageError(`finetune: unknown --task '${name}' (known: ${Object.keys(TASKS).join(', ')})`);
  const testFile = f.string('test_file') ?? shippedData(t.test);
  const r = await runTaskCommand(f, { command: 'finetune', task: 'classification', base: { train_file: t.train, dev_file: t.dev } });
  if (r && !r.result.stopped) await testAccuracy(r.cfg, r.result, testFile);
}
