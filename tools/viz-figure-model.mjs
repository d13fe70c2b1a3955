// The character GPT behind docs/interpretability.md's figures: 4 layers × 4 heads, width 128,
// 1500 updates on tinyshakespeare (val loss 1.80). Usage (after npx tsc): node tools/viz-figure-model.mjs OUT_DIR
// then OUT_DIR/run/last is the checkpoint for attn viz and ATTN_VIZ_MODEL.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { prepareDataset } from '../dist/src/data/files.js';
import { train } from '../dist/src/tasks/lm.js';
import { CharTokenizer } from '../dist/src/tokenizers/index.js';

const out = process.argv[2] ?? 'out/viz-figure';
const text = readFileSync(new URL('../data/tinyshakespeare/input.txt', import.meta.url), 'utf8');
await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: join(out, 'data') });
await train({
  out_dir: join(out, 'run'), dataset: join(out, 'data'), device: 'cpu',
  n_layer: 4, n_head: 4, n_embd: 128, block_size: 64, batch_size: 16, dropout: 0, bias: false,
  learning_rate: 3e-3, min_lr: 3e-4, warmup_iters: 50, lr_decay_iters: 1500, max_iters: 1500,
  eval_interval: 500, eval_iters: 5, log_interval: 100, seed: 7,
});
