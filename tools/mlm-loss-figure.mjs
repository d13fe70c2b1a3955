#!/usr/bin/env node
// docs/figures/mlm-heldout-loss.svg: the held-out masked-LM loss of the CPU pre-training runs of
// docs/transfer.md against the sentences seen, from their metrics.jsonl files in bench/results.
// A continued run (pretrain-mlm --init_from) is drawn from where the run it continues stopped.
//   npm run build && node tools/mlm-loss-figure.mjs > docs/figures/mlm-heldout-loss.svg
import { readFileSync } from 'node:fs';
import { linePlotSvg } from '../dist/src/eval/plot.js';

const R = 'bench/results/';
const evals = (file, offset = 0) => readFileSync(R + file, 'utf8').split('\n').filter((l) => l.trim())
  .map((l) => JSON.parse(l)).filter((r) => r.val_loss !== undefined).map((r) => [(r.tokens + offset) / 1e3, r.val_loss]);
const imdb = evals('transfer-cpu-session6-mlm-imdb-metrics.jsonl');
const series = [
  { name: 'SST-2 sentences (0.6 M words), sixth attempt', points: evals('transfer-cpu-session5-mlm-sst2-metrics.jsonl') },
  { name: 'SST-2 + WordNet glosses (2.8 M words)', points: evals('transfer-cpu-session5-mlm-wordnet-metrics.jsonl') },
  { name: 'SST-2 + IMDb reviews (13.8 M words), seventh attempt', points: imdb },
  { name: 'the same, continued (--init_from, lr 5e-4)', points: [imdb.at(-1), ...evals('transfer-cpu-session6-mlm-imdb-continued-metrics.jsonl', imdb.at(-1)[0] * 1e3)], dashed: true },
];
process.stdout.write(linePlotSvg(series, {
  title: 'Masked-LM pre-training of the 0.94 M-parameter encoder, 2-core CPU',
  xLabel: 'sentences seen (thousands)', yLabel: 'held-out MLM loss (nats)',
}));
