// attn eval classify: accuracy of a fine-tuned encoder (attn finetune) on a sentence/label TSV.
import { stat } from 'node:fs/promises';
import { evaluateClassifier } from '../eval/classify.js';
import { CheckpointError } from '../io/checkpoint.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, requireDir, requireFile } from './common.js';

export const EVAL_CLASSIFY_HELP = `attn eval classify --model DIR --file F.tsv [--prompt TEMPLATE [--verbalizers W0,W1]] [--device cpu|webgpu|auto|ref] [--threads N]

Accuracy of a classifier written by 'attn finetune' on a TSV with a header 'sentence<TAB>label'.
Prints {"accuracy":…,"n":…}.

With --prompt, a masked-LM checkpoint (attn pretrain-mlm) classifies with no training at all
(zero-shot): TEMPLATE follows each sentence and holds [MASK] once (e.g. "it was [MASK] ."), and
the class is the --verbalizers word (default terrible,great; label 0 first) the MLM head scores
highest at the mask.`;

export async function runEvalClassify(f: Flags): Promise<void> {
  const model = f.required('model', 'a fine-tuned checkpoint directory');
  const file = f.required('file', 'a TSV file (sentence<TAB>label)');
  const prompt = f.string('prompt');
  const verbalizers = f.string('verbalizers');
  if (verbalizers !== undefined && prompt === undefined) throw new UsageError('eval classify: --verbalizers needs --prompt');
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
    r = await evaluateClassifier(model, file, { backend, prompt: prompt === undefined ? undefined : { template: prompt, verbalizers: verbalizers ?? 'terrible,great' } });
  } catch (e) {
    if (e instanceof CheckpointError || e instanceof Error) throw new UsageError(`eval classify: ${e.message}`);
    throw e;
  }
  // JSON on stdout keeps full precision for scripts; people read two decimals on stderr.
  process.stderr.write(`accuracy ${(r.accuracy * 100).toFixed(2)}% (${r.n} sentences)\n`);
  console.log(JSON.stringify({ accuracy: r.accuracy, n: r.n }));
}
