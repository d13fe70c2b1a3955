// attn train --preset multi30k-de-en: trains the encoder-decoder (src/train/seq2seq-trainer.ts),
// any config field overridden by a flag of its name; a progress bar with tokens/s and time
// left; at the end the test BLEU of the best checkpoint (beam 4) as JSON on stdout.
// Wiring (src/cli/train.ts, runTrain): right after reading --preset, before anything else:
//   if (presetName !== undefined && isSeq2SeqPreset(presetName)) return runTrainSeq2Seq(f, seq2seqPreset(presetName));
// with `import { isSeq2SeqPreset, seq2seqPreset } from '../train/seq2seq-presets.js'` and
// `import { runTrainSeq2Seq } from './train-seq2seq.js'`. Resuming: `attn train --preset
// multi30k-de-en --init_from resume` (or without --preset: runTrainSeq2Seq(f, {}) reads the
// saved config from out_dir/last).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDevice } from '../backend/index.js';
import { seq2seqPreset, isSeq2SeqPreset, seq2seqPresetNames } from '../train/seq2seq-presets.js';
import { BLEU_PLOT_FILE, evaluateCheckpointBleu, parseSeq2SeqConfigValue, seq2seqTrainConfig, trainSeq2Seq, type Seq2SeqTrainConfig } from '../train/seq2seq-trainer.js';
import { BEST_DIR, LAST_DIR, METRICS_FILE } from '../train/trainer.js';
import { type Flags, UsageError } from './args.js';
import { ProgressBar } from './progress.js';

export async function runTrainSeq2Seq(f: Flags, base: Record<string, unknown>): Promise<void> {
  base = { ...base };
  const presetName = f.string('preset');
  if (presetName !== undefined && Object.keys(base).length === 0) {
    if (!isSeq2SeqPreset(presetName)) throw new UsageError(`train: unknown seq2seq preset '${presetName}' (known: ${seq2seqPresetNames().join(', ')})`);
    base = { ...seq2seqPreset(presetName) };
  }
  const configFile = f.string('config');
  if (configFile !== undefined) {
    try {
      base = { ...base, ...(JSON.parse(await readFile(configFile, 'utf8')) as Record<string, unknown>) };
    } catch (e) {
      throw new UsageError(`train: --config ${configFile}: ${(e as Error).message}`);
    }
  }
  const out = f.string('out');
  if (out !== undefined) base['out_dir'] = out;
  const quiet = f.bool('quiet');
  const testFlag = f.string('test'); // --test false skips the final test BLEU
  const testBeam = f.number('test_beam', { integer: true, min: 1 }) ?? 4;
  for (const [k, v] of f.rest()) {
    try {
      base[k] = parseSeq2SeqConfigValue(k, v);
    } catch (e) {
      throw new UsageError(`train: --${k}: ${(e as Error).message}`);
    }
  }
  if (base['init_from'] === 'resume' && presetName === undefined && configFile === undefined) {
    const path = join(String(base['out_dir'] ?? 'out-seq2seq'), LAST_DIR, 'trainer_state.json');
    try {
      const saved = (JSON.parse(await readFile(path, 'utf8')) as { config: Record<string, unknown> }).config;
      base = { ...saved, ...base };
    } catch (e) {
      throw new UsageError(`train: cannot resume: ${path}: ${(e as Error).message}`);
    }
  }
  let cfg: Seq2SeqTrainConfig;
  try {
    cfg = seq2seqTrainConfig(base);
  } catch (e) {
    throw new UsageError(`train: ${(e as Error).message.replace(/^Seq2SeqTrainConfig: /, '')}`);
  }
  if (!existsSync(cfg.data_dir)) {
    // The preset names data/multi30k: fall back to the copy shipped with the package.
    const shipped = fileURLToPath(new URL('../../../data/multi30k', import.meta.url));
    if (cfg.data_dir !== 'data/multi30k' || !existsSync(shipped)) throw new UsageError(`train: --data_dir ${cfg.data_dir}: no such directory`);
    cfg = { ...cfg, data_dir: shipped };
  }
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  let bar: ProgressBar | null = null;
  const byTime = cfg.max_minutes > 0;
  const ac = new AbortController();
  const onSig = (): void => {
    if (ac.signal.aborted) process.exit(130);
    ac.abort();
    log('\nstopping at the next step (Ctrl-C again to quit now)');
  };
  process.on('SIGINT', onSig);
  let res;
  try {
    res = await trainSeq2Seq(cfg, {
      signal: ac.signal,
      onStart: (i) => {
        log(`${i.resumed ? 'resuming' : 'training'} a ${(i.numParams / 1e6).toFixed(2)}M-parameter encoder-decoder on ${i.backend.name} (${i.trainPairs} pairs, ${i.batchesPerEpoch} batches of ≤${cfg.max_tokens} tokens per epoch) from step ${i.startStep}, for ${cfg.max_steps} steps${byTime ? ` or ${cfg.max_minutes} minutes` : ''}; out: ${cfg.out_dir}`);
        bar = byTime ? new ProgressBar(Math.round(cfg.max_minutes * 60), { label: 'train (s)', unit: 'tok/s' }) : new ProgressBar(cfg.max_steps, { label: 'train', unit: 'tok/s' });
      },
      onProgress: (step, tps, loss, el) => {
        bar?.update(byTime ? Math.min(Math.round(el), Math.round(cfg.max_minutes * 60)) : step, tps, `step ${step} loss ${loss.toFixed(3)}`);
      },
      onEval: (e) => {
        const line = `step ${e.step} (${(e.elapsed_s / 60).toFixed(1)} min): val loss ${e.val_loss.toFixed(3)}, val BLEU ${e.val_bleu.toFixed(2)} (best ${e.best_val_bleu.toFixed(2)}; saved ${e.saved.join(', ')})`;
        if (bar) bar.log(line);
        else log(line);
      },
      onMessage: (s) => (bar ? bar.log(s) : log(s)),
    });
  } finally {
    process.off('SIGINT', onSig);
    (bar as ProgressBar | null)?.finish();
  }
  if (!quiet) log(`done (${res.stop_reason}): ${res.step} steps in ${(res.elapsed_s / 60).toFixed(1)} min, best val BLEU ${res.best_val_bleu.toFixed(2)}; checkpoints in ${cfg.out_dir}/${BEST_DIR} and ${cfg.out_dir}/${LAST_DIR}, metrics in ${cfg.out_dir}/${METRICS_FILE}, plot in ${cfg.out_dir}/${BLEU_PLOT_FILE}`);
  if (testFlag === 'false' || testFlag === '0') return;
  const best = join(cfg.out_dir, BEST_DIR);
  if (!existsSync(join(best, 'config.json'))) {
    log('no best checkpoint (no evaluation ran): skipping the test BLEU');
    return;
  }
  if (!quiet) log(`test BLEU of ${best} on ${cfg.test_split} (beam ${testBeam}) ...`);
  const backend = await openDevice(cfg.device!, { threads: cfg.threads! });
  const t = await evaluateCheckpointBleu(best, { data_dir: cfg.data_dir, src_lang: cfg.src_lang, tgt_lang: cfg.tgt_lang, split: cfg.test_split }, { backend, beam: testBeam, maxLenA: 1.5, maxLenB: 10 });
  console.log(JSON.stringify({ test_bleu: Number(t.bleu.toFixed(2)), split: cfg.test_split, sentences: t.sentences, beam: testBeam, checkpoint: best, best_val_bleu: Number(res.best_val_bleu.toFixed(2)), steps: res.step, elapsed_s: Math.round(res.elapsed_s) }));
}
