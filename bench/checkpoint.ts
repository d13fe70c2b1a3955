// Activation checkpointing: peak memory and step time of one training step (forward, backward)
// of the 6-layer, 384-wide GPT at context 1024, with and without recomputing the blocks.
//   npm run build && node dist/bench/checkpoint.js [--batch 4] [--block 1024] [--reps 3]
import { getBackend, noGrad, tensor, tidy } from '../src/index.js';
import { trackPeak } from '../src/cli/bench-attention.js';
import { formatBytes } from '../src/eval/plot.js';
import { GPT } from '../src/models/gpt.js';
import { machineInfo, now, parseArgs, ratio, table } from './util.js';

const args = parseArgs(process.argv.slice(2));
const B = Number(args.get('batch') ?? 4);
const T = Number(args.get('block') ?? 1024);
const reps = Number(args.get('reps') ?? 3);
const backend = await getBackend('cpu');
const model = new GPT({ n_layer: 6, n_head: 6, n_embd: 384, block_size: T, vocab_size: 65, dropout: 0.2, bias: false }, { backend, seed: 1 }).train();
const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % 65);
const x = tensor(ids, { shape: [B, T], dtype: 'int32', backend });
const y = tensor(ids.map((v) => (v + 1) % 65), { shape: [B, T], dtype: 'int32', backend });
const gradBytes = model.numParameters() * 4;

function step(): { ms: number; peak: number } {
  for (const p of model.parameters()) {
    p.grad?.dispose();
    p.grad = null;
  }
  const peak = trackPeak(backend);
  const t0 = now();
  tidy(() => {
    const loss = model.forward(x, y).loss!;
    loss.backward();
    noGrad(() => loss.item());
  });
  const ms = now() - t0;
  return { ms, peak: peak.stop() };
}

const rows: string[][] = [];
const res: Record<string, { ms: number; act: number }> = {};
for (const ck of [false, true]) {
  model.checkpointActivations = ck;
  step(); // warm-up
  let best = Infinity;
  let peak = 0;
  for (let r = 0; r < reps; r++) {
    const s = step();
    best = Math.min(best, s.ms);
    peak = Math.max(peak, s.peak);
  }
  // Activation memory: the step's peak above the weights, less the gradients it must hold anyway.
  const act = peak - gradBytes;
  res[String(ck)] = { ms: best, act };
  rows.push([ck ? 'checkpointed' : 'plain', formatBytes(peak), formatBytes(act), `${best.toFixed(0)} ms`, `${Math.round((B * T) / (best / 1000))}`]);
}
const m = machineInfo();
console.log(`GPT 6 × 384, batch ${B}, context ${T}, dropout 0.2, cpu backend (${m.cpu}, ${m.threads} threads); best of ${reps} steps`);
console.log(table(['blocks', 'peak above weights', 'activations (peak - gradients)', 'step (fwd + bwd)', 'tokens/s'], rows, ['l', 'r', 'r', 'r', 'r']));
console.log(`activation memory: ${ratio(res['false']!.act, res['true']!.act)} less with checkpointing; step time ${ratio(res['true']!.ms, res['false']!.ms)} of the plain step`);
