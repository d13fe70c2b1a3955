// attn train (and finetune, pretrain-mlm): any task on the one loop, from a preset or a JSON
// config, every field settable by a flag of its name; a progress bar with loss, tokens/s and
// time left; Ctrl-C saves OUT/last and exits 130; what each task adds at the end (a sample, a
// test BLEU, a test accuracy).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDevice } from '../backend/index.js';
import { prepareDataset } from '../data/files.js';
import { dataPaths } from '../data/sentences.js';
import { evaluateClassifier } from '../eval/classify.js';
import { evaluateCheckpointBleu } from '../eval/translation.js';
import { generate } from '../generate/index.js';
import { CLASSIFICATION_TASK } from '../tasks/classification.js';
import { LM_TASK } from '../tasks/lm.js';
import { MASKED_LM_TASK } from '../tasks/masked-lm.js';
import { TRANSLATION_TASK } from '../tasks/translation.js';
import { DPO_TASK } from '../tasks/dpo.js';
import { PPO_TASK } from '../tasks/ppo.js';
import { REWARD_TASK } from '../tasks/reward.js';
import { SFT_TASK } from '../tasks/sft.js';
import { CharTokenizer, loadTokenizer } from '../tokenizers/index.js';
import { fieldHelp, parseFieldValue, resolveConfig, TASK_NAMES, type TaskName, type TrainingConfig } from '../train/config.js';
import { BEST_DIR, LAST_DIR, METRICS_FILE, PLOT_FILE, readResumeConfig, runTraining, TrainingDivergedError, type EvalResult, type LoopResult, type Task } from '../train/loop.js';
import { presetNames, taskPreset } from '../train/presets.js';
import { parseParallel, runRanked, startDistributed, type ParallelSpec } from '../train/distributed.js';
import { type Flags, UsageError } from './args.js';
import { loadModelDir, requireDir, requireFile, shippedData, stopIdsOf } from './common.js';
import { ProgressBar } from './progress.js';

export const TASKS: Record<TaskName, Task<never>> = {
  lm: LM_TASK as Task<never>, translation: TRANSLATION_TASK as Task<never>, classification: CLASSIFICATION_TASK as Task<never>, 'masked-lm': MASKED_LM_TASK as Task<never>,
  sft: SFT_TASK as Task<never>, reward: REWARD_TASK as Task<never>, dpo: DPO_TASK as Task<never>, ppo: PPO_TASK as Task<never>,
};

/** Tiny Shakespeare as shipped in the package (data/tinyshakespeare/input.txt). */
export function bundledShakespeare(): string {
  return fileURLToPath(new URL('../../../data/tinyshakespeare/input.txt', import.meta.url));
}

/** The flags `attn train` reads itself (the rest are config fields). */
const OWN_FLAGS = `  --preset NAME                      ${'a named configuration (it picks the task): ' + presetNames().join(', ')}
  --task NAME                        ${TASK_NAMES.join(', ')} (default lm, or the preset's)
  --config FILE                      a JSON object of config fields (flags override it)
  --out DIR                          the same as --out_dir
  --data FILE                        lm: a text file, prepared (character level) into data/NAME; masked-lm: sentence files
  --sample N                         lm: print N generated tokens at the end (default 300; 0 for none)
  --test FILE|none                   classification: score this TSV at the end (default data/sst2/test.tsv);
                                     translation: 'none' skips the test BLEU of OUT/best
  --quiet                            no summary line at the end
  --parallel dp=N[,zero=1]|pp=N|tp=N under mpirun -np N: data parallel over N ranks (rank 0 logs and
                                     saves); zero=1 shards the AdamW state (ZeRO-1); also bucket_mb=MiB,
                                     overlap=0|1; pp=N: the lm GPT's layers in N stages, 1F1B over the
                                     gradient_accumulation_steps micro-batches; tp=N: the lm GPT's heads,
                                     MLP and vocabulary split over N ranks (Megatron-LM), exact=1: its
                                     split sums in one process's order (serial; bitwise one process's
                                     results); dp=N,tp=M and dp=N,pp=M: N groups of M ranks
                                     (docs/distributed.md)`;

export function trainHelp(task?: TaskName): string {
  const tasks = task ? [task] : TASK_NAMES;
  return `attn train [--preset NAME | --task NAME] [--config FILE.json] [--out DIR] [--FIELD VALUE ...]

Trains a model with the one training loop: a GPT language model (lm, nanoGPT style), the 2017
encoder-decoder (translation), a BERT-style classifier (classification) or masked-LM pre-training
(masked-lm). Writes OUT/best and OUT/last (checkpoints in the Hugging Face layout; last/ also holds
optimizer.safetensors and trainer_state.json for --init_from resume), OUT/metrics.jsonl and
OUT/loss.svg (translation also OUT/bleu.svg). Ctrl-C saves OUT/last and exits with code 130.

${OWN_FLAGS}

Config fields (each one also a JSON key of --config):
${tasks.map((t) => `\n${t}:\n${fieldHelp(TASKS[t])}`).join('\n')}`;
}

async function readConfigFile(command: string, path: string): Promise<Record<string, unknown>> {
  await requireFile(command, 'config', path);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new UsageError(`${command}: --config ${path} is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`${command}: --config ${path} must hold a JSON object`);
  return json as Record<string, unknown>;
}

/** The dataset folder of an lm run: the preset's (made from the bundled corpus on first use). */
async function ensureLmDataset(dir: string, say: (s: string) => void): Promise<void> {
  if (existsSync(join(dir, 'meta.json'))) return;
  if (dir !== 'data/shakespeare_char') throw new UsageError(`train: dataset ${dir} not found; run 'attn prepare' or pass --data FILE`);
  const text = await readFile(bundledShakespeare(), 'utf8');
  say(`preparing Tiny Shakespeare (character level) into ${dir}`);
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: dir });
}

export interface TaskCommand {
  command: string;
  task: TaskName;
  /** Fields before the flags (a preset's, a command's own defaults). */
  base: Record<string, unknown>;
}

const fmt = (k: string, v: number): string => (k.endsWith('accuracy') ? `${(v * 100).toFixed(2)}%` : k.endsWith('bleu') ? v.toFixed(2) : v.toFixed(4));

/** One line per evaluation: every metric, accuracy in percent and BLEU to two decimals. */
function evalLine(e: EvalResult): string {
  const metrics = Object.entries(e).filter(([k, v]) => typeof v === 'number' && !['step', 'best', 'elapsed_s', 'train_loss', 'eval_train_loss'].includes(k)) as [string, number][];
  // before the first update a task that measures no training loss has none to show
  const train = Number.isFinite(e.train_loss) ? `train loss ${e.train_loss.toFixed(4)}, ` : '';
  return `step ${e.step}: ${train}${metrics.map(([k, v]) => `${k.replace(/_/g, ' ').replace('bleu', 'BLEU')} ${fmt(k, v)}`).join(', ')}${e.saved.length ? ` (saved ${e.saved.join(', ')})` : ''}`;
}

/** Reads flags into a config for the task, runs the loop with a progress bar and Ctrl-C handling. */
/** Other names a flag is known by (PEFT's r for the LoRA rank). */
const FLAG_ALIASES: Record<string, string> = { lora_r: 'lora_rank' };

export async function runTaskCommand(f: Flags, c: TaskCommand): Promise<{ cfg: TrainingConfig; result: LoopResult; rank?: number } | null> {
  const task = TASKS[c.task];
  const configFile = f.string('config');
  const out = f.string('out');
  const quiet = f.bool('quiet');
  const parallelFlag = f.string('parallel');
  let spec: ParallelSpec | undefined;
  try {
    if (parallelFlag !== undefined) spec = parseParallel(parallelFlag);
  } catch (e) {
    throw new UsageError(`${c.command}: ${(e as Error).message}`);
  }
  let base: Record<string, unknown> = { ...c.base };
  if (configFile !== undefined) {
    const json = await readConfigFile(c.command, configFile);
    delete json['task'];
    base = { ...base, ...json };
  }
  if (out !== undefined) base['out_dir'] = out;
  for (const [flag, v] of f.rest()) {
    const k = FLAG_ALIASES[flag] ?? flag;
    try {
      base[k] = parseFieldValue(k, v, c.task);
    } catch (e) {
      throw new UsageError(`${c.command}: --${k}: ${(e as Error).message}`);
    }
  }
  const resuming = base['init_from'] === 'resume';
  if (resuming && Object.keys(c.base).length === 0 && configFile === undefined) {
    // Resuming restates nothing: take the saved run's config, then apply the flags again.
    base = { ...(await readResumeConfig(String(base['out_dir'] ?? task.defaults.out_dir ?? 'out/lm'))), ...base };
  }
  let cfg: TrainingConfig;
  try {
    cfg = resolveConfig(task, base, c.task);
  } catch (e) {
    throw new UsageError(`${c.command}: ${(e as Error).message.replace(/^[\w-]+: /, '')}`);
  }
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  if (spec && spec.dp > 1 && cfg.gradient_accumulation_steps % spec.dp !== 0) {
    throw new UsageError(`${c.command}: --parallel dp=${spec.dp} needs gradient_accumulation_steps (${cfg.gradient_accumulation_steps}) to be a multiple of ${spec.dp}: each rank takes an equal share of the global batch`);
  }
  const dist = spec ? startDistributed(spec) : null;
  // Default data paths resolve to the copies shipped with the package.
  if (c.task === 'lm' && cfg.data === '') {
    // One rank prepares a missing dataset while the others wait for it.
    if (!dist || dist.rank === 0) await ensureLmDataset(cfg.dataset, log);
    dist?.mpi.barrier();
  }
  if (c.task === 'lm' && cfg.data !== '') await requireFile(c.command, 'data', cfg.data);
  if (c.task === 'translation') {
    cfg.dataset = shippedData(cfg.dataset);
    await requireDir(c.command, 'dataset', cfg.dataset);
  }
  if (c.task === 'classification') {
    cfg.train_file = shippedData(cfg.train_file);
    cfg.dev_file = shippedData(cfg.dev_file);
    await requireFile(c.command, 'train_file', cfg.train_file);
    await requireFile(c.command, 'dev_file', cfg.dev_file);
  }
  if (c.task === 'masked-lm') {
    const paths = dataPaths(cfg.data).map(shippedData);
    for (const p of paths) await requireFile(c.command, 'data', p);
    cfg.data = paths.join(',');
  }
  if (cfg.init_from !== 'scratch' && cfg.init_from !== 'resume') await requireDir(c.command, 'init_from', cfg.init_from);
  if (dist && dist.rank > 0) {
    // Rank 0 speaks for the job; the others only report an error of their own. A divergence is
    // every rank's (the loss was reduced) and rank 0 reports it, naming the rank it came from.
    try {
      const result = await runRanked(dist, () => runTraining(task, cfg as unknown as Record<string, unknown>, {}, { parallel: dist.strategy }), log);
      return { cfg, result, rank: dist.rank };
    } catch (e) {
      // Stopped as every rank did; rank 0 exits with 1, so mpirun names the rank that printed.
      if (!(e instanceof TrainingDivergedError)) throw e;
      return null;
    }
  }
  if (dist && spec!.tp > 1) log(`parallel: tensor parallel over ${spec!.tp} ranks (heads, MLP and vocabulary split)${spec!.dp > 1 ? ` × data parallel over ${spec!.dp}` : ''} over ${dist.library.split(',')[0]}`);
  else if (dist && spec!.pp > 1) log(`parallel: ${spec!.pp} pipeline stages (1F1B over ${cfg.gradient_accumulation_steps / spec!.dp} micro-batches)${spec!.dp > 1 ? ` × data parallel over ${spec!.dp}` : ''} over ${dist.library.split(',')[0]}`);
  else if (dist) log(`parallel: ${dist.size} ranks, data parallel${spec!.zero ? ' with ZeRO-1' : ` (buckets of ${spec!.bucketMiB} MiB${spec!.overlap ? ', overlapped with backward' : ''})`} over ${dist.library.split(',')[0]}`);
  const byTime = cfg.max_minutes > 0;
  let bar: ProgressBar | null = null;
  const say = (s: string): void => (bar ? bar.log(s) : log(s));
  const ac = new AbortController();
  const onSig = (): void => {
    if (ac.signal.aborted) process.exit(130);
    ac.abort();
    say('stopping at the next step and saving OUT/last (Ctrl-C again to quit now)');
  };
  process.on('SIGINT', onSig);
  let result: LoopResult;
  try {
    const hooks: Parameters<typeof runTraining>[2] = {
      signal: ac.signal,
      onStart: (i) => {
        const r = i.config;
        const sched = r.lr_decay === 'constant' ? `constant ${r.learning_rate}` : r.lr_decay === 'noam'
          ? `warmup ${r.warmup_iters} to ${r.learning_rate.toExponential(2)}, then 1/√step`
          : `warmup ${r.warmup_iters}, ${r.lr_decay} from ${r.learning_rate} to ${Number(r.min_lr.toPrecision(6))} at step ${r.lr_decay_iters}`;
        log(`${i.resumed ? 'resuming' : 'training'} ${c.task}: ${(i.numParams / 1e6).toFixed(2)}M parameters${i.trainable < i.numParams ? ` (${(i.trainable / 1e6).toFixed(2)}M trainable)` : ''} on ${i.backend.name}, steps ${i.startIter} to ${i.maxIters}${byTime ? ` or ${r.max_minutes} minutes` : ''}; learning rate: ${sched}; out: ${r.out_dir}`);
        bar = byTime ? new ProgressBar(Math.round(r.max_minutes * 60), { label: `${c.command} (s)`, unit: 'tok/s' }) : new ProgressBar(i.maxIters, { label: c.command, unit: c.task === 'lm' || c.task === 'translation' ? 'tok/s' : 'ex/s' });
      },
      onProgress: (step, _max, tps, loss, el) => bar?.update(byTime ? Math.min(Math.round(el), Math.round(cfg.max_minutes * 60)) : step, tps, `step ${step} loss ${loss.toFixed(4)}`),
      onEval: (e) => say(evalLine(e)),
      onMessage: say,
    };
    const train = (): Promise<LoopResult> => runTraining(task, cfg as unknown as Record<string, unknown>, hooks, dist ? { parallel: dist.strategy } : {});
    result = dist ? await runRanked(dist, train, log) : await train();
  } finally {
    process.off('SIGINT', onSig);
    (bar as ProgressBar | null)?.finish();
  }
  const o = cfg.out_dir;
  if (!quiet) {
    const extra = c.task === 'translation' ? `, ${o}/bleu.svg` : '';
    log(`done (${result.stop_reason}): ${result.iter} steps in ${(result.elapsed_s / 60).toFixed(1)} min; wrote ${o}/${BEST_DIR}, ${o}/${LAST_DIR}, ${o}/${METRICS_FILE}, ${o}/${PLOT_FILE}${extra}`);
  }
  if (result.stopped) process.exitCode = 130;
  return { cfg, result, ...(dist ? { rank: 0 } : {}) };
}

/** lm: a sample from OUT/best; a prompt the vocabulary cannot encode is a warning, not a failure. */
async function sampleAfter(cfg: TrainingConfig, chars: number): Promise<void> {
  const dir = existsSync(join(cfg.out_dir, BEST_DIR, 'config.json')) ? join(cfg.out_dir, BEST_DIR) : join(cfg.out_dir, LAST_DIR);
  if (chars <= 0 || !existsSync(join(dir, 'config.json'))) return;
  const backend = await openDevice(cfg.device as 'cpu', { threads: cfg.threads });
  const model = await loadModelDir('train', dir, backend);
  try {
    const tok = await loadTokenizer(dir);
    let prompt: number[];
    try {
      // A Hugging Face tokenizer starts with its BOS; a fine-tuned one continues the data's text.
      prompt = tok.encode(tok.kind === 'char' ? '\n' : '');
    } catch (e) {
      process.stderr.write(`warning: no sample: the vocabulary cannot encode the prompt "\\n" (${(e as Error).message})\n`);
      return;
    }
    if (prompt.length === 0) prompt = tok.encode('\n');
    const { text } = generate(model, prompt, { maxNewTokens: chars, temperature: 0.8, topK: 200, seed: cfg.seed, decode: (ids) => tok.decode(ids), eotToken: stopIdsOf(model, tok) });
    console.log(`--- a sample from ${dir} (temperature 0.8, top-k 200) ---\n${text}`);
  } finally {
    model.dispose();
  }
}

/** attn train: --preset NAME or --task NAME (default lm). */
export async function runTrain(f: Flags): Promise<void> {
  const presetName = f.string('preset');
  // `attn train reward` is `attn train --task reward`.
  const sub = f.parsed.positionals[0];
  if (sub !== undefined && (sub !== 'reward' || f.parsed.positionals.length > 1)) throw new UsageError(`train: unexpected argument '${sub === 'reward' ? f.parsed.positionals[1] : sub}' (options are written --name value; 'attn train reward' trains a reward model)`);
  const taskFlag = f.string('task') ?? (sub === 'reward' ? 'reward' : undefined);
  const dataFlag = f.string('data');
  const sample = f.number('sample', { integer: true, min: 0 }) ?? 300;
  const test = f.string('test');
  let task: TaskName = 'lm';
  let base: Record<string, unknown> = {};
  if (presetName !== undefined) {
    try {
      ({ task, config: base } = taskPreset(presetName));
    } catch (e) {
      throw new UsageError(`train: ${(e as Error).message}`);
    }
  }
  if (taskFlag !== undefined) {
    if (!(TASK_NAMES as readonly string[]).includes(taskFlag)) throw new UsageError(`train: unknown --task '${taskFlag}' (known: ${TASK_NAMES.join(', ')})`);
    if (presetName !== undefined && taskFlag !== task) throw new UsageError(`train: preset '${presetName}' is for ${task}, not ${taskFlag}`);
    task = taskFlag as TaskName;
  }
  if (dataFlag !== undefined) {
    if (task === 'lm' && existsSync(dataFlag) && existsSync(join(dataFlag, 'meta.json'))) base['dataset'] = dataFlag;
    else if (task === 'lm' || task === 'masked-lm' || task === 'sft' || task === 'reward' || task === 'dpo' || task === 'ppo') base['data'] = dataFlag;
    else if (task === 'translation') base['dataset'] = dataFlag;
    else throw new UsageError(`train: --data does not apply to ${task} (use --train_file and --dev_file)`);
    // A run on a file of its own gets an out folder of its own.
    if (task === 'lm' && base['data'] !== undefined && presetName === undefined) base['out_dir'] ??= join('out', basename(dataFlag, extname(dataFlag)));
  }
  const r = await runTaskCommand(f, { command: 'train', task, base });
  if (!r || r.result.stopped || (r.rank ?? 0) > 0) return;
  if (task === 'lm') await sampleAfter(r.cfg, sample);
  if (task === 'translation' && test !== 'none') await testBleu(r.cfg, r.result);
  if (task === 'classification' && test !== 'none') await testAccuracy(r.cfg, r.result, test ?? shippedData('data/sst2/test.tsv'));
}

async function testBleu(cfg: TrainingConfig, res: LoopResult): Promise<void> {
  const best = join(cfg.out_dir, BEST_DIR);
  if (!existsSync(join(best, 'config.json'))) return void process.stderr.write('no best checkpoint (no evaluation ran): skipping the test BLEU\n');
  const backend = await openDevice(cfg.device as 'cpu', { threads: cfg.threads });
  const t = await evaluateCheckpointBleu(best, { dataset: cfg.dataset, src_lang: cfg.src_lang, tgt_lang: cfg.tgt_lang, split: cfg.test_split }, { backend, beam: 4, maxLenA: 1.5, maxLenB: 10 });
  console.log(JSON.stringify({ test_bleu: Number(t.bleu.toFixed(2)), split: cfg.test_split, sentences: t.sentences, beam: 4, checkpoint: best, best_val_bleu: Number(res.best.toFixed(2)), steps: res.iter, elapsed_s: Math.round(res.elapsed_s) }));
}

/** classification: the best checkpoint's accuracy on a test TSV, as one JSON line. */
export async function testAccuracy(cfg: TrainingConfig, res: LoopResult, testFile: string): Promise<void> {
  const dir = existsSync(join(res.best_dir, 'config.json')) ? res.best_dir : join(cfg.out_dir, LAST_DIR);
  const out: Record<string, unknown> = { init_from: cfg.init_from, label_fraction: cfg.label_fraction, dev_accuracy: res.best_eval?.['val_accuracy'], model: dir };
  if (testFile !== 'none') {
    await requireFile('train', 'test', testFile);
    const backend = await openDevice(cfg.device as 'cpu', { threads: cfg.threads });
    const ev = await evaluateClassifier(dir, testFile, { backend });
    Object.assign(out, { test_file: testFile, accuracy: ev.accuracy, n: ev.n });
  }
  console.log(JSON.stringify(out));
}

