// attn eval classify: accuracy of a fine-tuned encoder (attn finetune) on a sentence/label TSV.
import { stat } from 'node:fs/promises';
import { evaluateClassifier } from '../train/classify.js';
import { CheckpointError } from '../train/checkpoint.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, requireDir, requireFile } from './common.js';

export const EVAL_CLASSIFY_HELP = `attn eval classify --model DIR --file F.tsv [--device cpu|webgpu|auto|ref] [--threads N]

Accuracy of a classifier written by 'attn finetune' on a TSV with a header 'sentence<TAB>label'.
Prints {"accuracy":…,"n":…}.`;

export async function runEvalClassify(f: Flags): Promise<void> {
  const model = f.required('model', 'a fine-tuned checkpoint directory');
  const file = f.required('file', 'a TSV file (sentence<TAB>label)');
  const backend = await backendFromFlags(f);
  f.done();
  await requireDir('eval classify', 'model', model);
  await requireFile('eval classify', 'file', file);
  try {
    await stat(`${model}/config.json`);
  } catch {
    throw new UsageError(`eval classify: --model ${model} has no config.json (not a checkpoint directory)`);
  }
  let r;
  try {
    r = await evaluateClassifier(model, file, { backend });
  } catch (e) {
    if (e instanceof CheckpointError || e instanceof Error) throw new UsageError(`eval classify: ${e.message}`);
    throw e;
  }
  console.log(JSON.stringify({ accuracy: r.accuracy, n: r.n }));
}
