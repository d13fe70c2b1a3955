// Profiling aid: times training steps of a small GPT on the cpu backend (node --cpu-prof to see where time goes).
import * as A from '../src/index.js';
import { GPT } from '../src/models/gpt.js';
import { AdamW } from '../src/train/optim.js';

const [layers, width, heads, B, T, steps] = (process.argv[2] ?? '4,128,4,16,64,20').split(',').map(Number) as number[];
const backend = await A.useBackend('cpu', {});
const model = new GPT({ n_layer: layers!, n_head: heads!, n_embd: width!, block_size: T!, vocab_size: 65, bias: false, dropout: 0 }, { backend });
const opt = new AdamW(model.parameters(), { lr: 1e-3 });
const g = new A.Generator(0);
const ids = () => A.tensor(Int32Array.from({ length: B! * T! }, () => g.randint(65)), { shape: [B!, T!], backend });
let t0 = 0;
for (let s = 0; s < steps! + 3; s++) {
  if (s === 3) t0 = performance.now();
  A.tidy(() => {
    const { loss } = model.forward(ids(), ids());
    opt.zeroGrad();
    loss!.backward();
    opt.stepUpdate();
  });
}
const ms = (performance.now() - t0) / steps!;
console.log(`${ms.toFixed(1)} ms/step, ${((B! * T!) / ms * 1000).toFixed(0)} tokens/s`);
process.exit(0);
