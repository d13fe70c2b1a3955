// attn train: nanoGPT-style training from a preset or JSON config, with any field overridden
// by a flag of its name; a progress bar with loss, tokens/s and time left; a sample at the end.
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { prepareDataset } from '../data/index.js';
import { generate } from '../generate/index.js';
import { openDevice } from '../backend/index.js';
import { CharTokenizer, loadTokenizer } from '../tokenizers/index.js';
import { preset, presetNames } from '../train/presets.js';
import { isSeq2SeqPreset, seq2seqPreset, seq2seqPresetNames } from '../train/seq2seq-presets.js';
import { runTrainSeq2Seq } from './train-seq2seq.js';
import { BEST_DIR, LAST_DIR, loadGPTCheckpoint, parseTrainConfigValue, readResumeConfig, train, trainConfig, type TrainConfig } from '../train/trainer.js';
import { type Flags, UsageError } from './args.js';
import { requireFile } from './common.js';
import { ProgressBar } from './progress.js';

/** Tiny Shakespeare as shipped in the package (data/tinyshakespeare/input.txt). */
export function bundledShakespeare(): string {
  return fileURLToPath(new URL('../../../data/tinyshakespeare/input.txt', import.meta.url));
}

async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  await requireFile('train', 'config', path);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new UsageError(`train: --config ${path} is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`train: --config ${path} must hold a JSON object`);
  return json as Record<string, unknown>;
}

/** A text file is prepared with a character tokenizer into dir; a prepared directory is used as is. */
async function ensureDataset(dataFlag: string | undefined, datasetDir: string, say: (s: string) => void): Promise<string> {
  if (dataFlag !== undefined) {
    let s;
    try {
      s = await stat(dataFlag);
    } catch {
      throw new UsageError(`train: --data ${dataFlag}: no such file or directory`);
    }
    if (s.isDirectory()) return dataFlag;
    const text = await readFile(dataFlag, 'utf8');
    say(`preparing ${dataFlag} with a character tokenizer into ${datasetDir}`);
    await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: datasetDir });
    return datasetDir;
  }
  if (existsSync(join(datasetDir, 'meta.json'))) return datasetDir;
  // The presets name data/shakespeare_char: make it from the bundled corpus on first use.
  const src = bundledShakespeare();
  if (!existsSync(src)) throw new UsageError(`train: dataset ${datasetDir} not found; run 'attn prepare' or pass --data`);
  const text = await readFile(src, 'utf8');
  say(`preparing Tiny Shakespeare (character level) into ${datasetDir}`);
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: datasetDir });
  return datasetDir;
}

export async function runTrain(f: Flags): Promise<void> {
  const presetName = f.string('preset');
  const configFile = f.string('config');
  const out = f.string('out');
  const dataFlag = f.string('data');
  const sampleChars = f.number('sample', { integer: true, min: 0 }) ?? 300;
  const quiet = f.bool('quiet');
  // The encoder-decoder presets have their own trainer.
  if (presetName !== undefined && isSeq2SeqPreset(presetName)) return runTrainSeq2Seq(f, seq2seqPreset(presetName));
  let base: Record<string, unknown> = {};
  if (presetName !== undefined) {
    if (!presetNames().includes(presetName)) throw new UsageError(`train: unknown preset '${presetName}' (known: ${[...presetNames(), ...seq2seqPresetNames()].join(', ')})`);
    base = { ...preset(presetName) };
  }
  if (configFile !== undefined) base = { ...base, ...(await readConfigFile(configFile)) };
  if (out !== undefined) base['out_dir'] = out;
  // Every other flag is a config field by name.
  for (const [k, v] of f.rest()) {
    try {
      base[k] = parseTrainConfigValue(k, v);
    } catch (e) {
      throw new UsageError(`train: --${k}: ${(e as Error).message.replace(/^TrainConfig: /, '')}`);
    }
  }
  if (base['init_from'] === 'resume' && presetName === undefined && configFile === undefined) {
    // Resuming restates nothing: take the saved run's config, then apply the flags again.
    const saved = await readResumeConfig(String(base['out_dir'] ?? 'out'));
    base = { ...saved, ...base };
  }
  let cfg: TrainConfig;
  try {
    cfg = trainConfig(base);
  } catch (e) {
    throw new UsageError(`train: ${(e as Error).message.replace(/^TrainConfig: /, '')}`);
  }
  const log = (s: string) => process.stderr.write(`${s}\n`);
  cfg = { ...cfg, dataset: await ensureDataset(dataFlag, cfg.dataset, log) };
  let bar: ProgressBar | null = null;
  let lastLoss = NaN;
  const result = await train(cfg, {
    onStart: (i) => {
      log(`${i.resumed ? 'resuming' : 'training'} a ${(i.numParams / 1e6).toFixed(2)}M-parameter GPT on ${i.backend.name} from step ${i.startIter} to ${cfg.max_iters}, ${i.tokensPerIter} tokens per step; out: ${cfg.out_dir}`);
      bar = new ProgressBar(cfg.max_iters, { label: 'train', unit: 'tok/s' });
    },
    onProgress: (step, total, tps, loss) => {
      lastLoss = loss;
      bar?.update(step, tps, `loss ${loss.toFixed(4)}`);
    },
    onEval: (e) => {
      const line = `step ${e.step}: train loss ${e.train_loss.toFixed(4)}, val loss ${e.val_loss.toFixed(4)}${e.saved.length ? ` (saved ${e.saved.join(', ')})` : ''}`;
      if (bar) bar.log(line);
      else log(line);
    },
    onMessage: (s) => (bar ? bar.log(s) : log(s)),
  });
  (bar as ProgressBar | null)?.finish();
  if (!quiet) log(`done: ${result.iter} steps, best val loss ${result.best_val_loss.toFixed(4)}, last train loss ${lastLoss.toFixed(4)}; checkpoints in ${cfg.out_dir}/${BEST_DIR} and ${cfg.out_dir}/${LAST_DIR}, metrics in ${cfg.out_dir}/metrics.jsonl, plot in ${cfg.out_dir}/loss.svg`);
  if (sampleChars > 0) {
    const dir = existsSync(join(cfg.out_dir, BEST_DIR, 'config.json')) ? join(cfg.out_dir, BEST_DIR) : join(cfg.out_dir, LAST_DIR);
    if (!existsSync(join(dir, 'config.json'))) return;
    const backend = await openDevice(cfg.device!, { threads: cfg.threads! });
    const { model } = await loadGPTCheckpoint(dir, { backend });
    const tok = await loadTokenizer(dir);
    const prompt = tok.encode('\n');
    const { text } = generate(model, prompt, { maxNewTokens: sampleChars, temperature: 0.8, topK: 200, seed: cfg.seed, decode: (ids) => tok.decode(ids) });
    console.log(`--- a sample from ${dir} (temperature 0.8, top-k 200) ---\n${text}`);
    model.dispose();
  }
}
