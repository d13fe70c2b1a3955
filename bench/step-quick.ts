// Quick look at continuous batching's model step: GPT-2 124M shape, decodePooled at B rows.
//   node dist/bench/step-quick.js [--rows 1,2,4,8,16] [--steps 20]
import { getBackend } from '../src/index.js';
import { GPT, GPT2_CONFIG } from '../src/models/gpt.js';
import { noGrad, tensor, tidy } from '../src/tensor/index.js';
import { scriptArgs } from './util.js';

const { opt } = scriptArgs();
const backend = await getBackend('cpu');
const model = new GPT(GPT2_CONFIG, { backend, seed: 0 }).eval();
const rowsList = opt('rows', '1,2,4,8,16').split(',').map(Number);
const steps = Number(opt('steps', '20'));
for (const B of rowsList) {
  const pool = model.createKVPool(B)!;
  for (let i = 0; i < B; i++) pool.lengths[i] = 16 + i;
  pool.reserve(16 + B + steps + 8);
  const idx = () => tensor(Int32Array.from({ length: B }, (_, i) => (i * 7) % 50257), { backend, dtype: 'int32', shape: [B, 1] });
  const times: number[] = [];
  let cpu0 = process.cpuUsage();
  for (let s = 0; s < steps + 3; s++) {
    if (s === 3) cpu0 = process.cpuUsage();
    const t0 = performance.now();
    tidy(() => noGrad(() => { model.decodePooled(idx(), pool).logits.data(); }));
    if (s >= 3) times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const med = times[times.length >> 1]!;
  // CPU time (all threads) per step: steadier than wall time on a shared machine.
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / steps;
  console.log(`B=${B}: median ${med.toFixed(1)} ms/step, ${(B * 1000 / med).toFixed(0)} tokens/s, cpu ${cpuMs.toFixed(1)} ms/step`);
  pool.dispose();
}
