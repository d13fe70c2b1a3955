// Activation checkpointing: a block's activations recomputed in the backward pass give the same
// gradients (dropout masks replayed), in float64 on ref and on the cpu backend, and in the loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getBackend, noGrad, tensor } from '../src/index.js';
import { GPT } from '../src/models/gpt.js';
import { trainConfig } from '../src/tasks/lm.js';

const CFG = { n_layer: 3, n_head: 2, n_embd: 16, block_size: 8, vocab_size: 11, dropout: 0.2 };

async function grads(device: 'ref' | 'cpu', checkpointed: boolean): Promise<{ loss: number; grads: Map<string, Float64Array | Float32Array> }> {
  const backend = await getBackend(device);
  const dtype = device === 'ref' ? 'float64' : 'float32';
  const model = new GPT(CFG, { backend, dtype, seed: 4 }).train();
  model.checkpointActivations = checkpointed;
  const idx = tensor(Int32Array.from([1, 5, 9, 2, 7, 3, 4, 0, 2, 2, 8, 6, 1, 0, 10, 3]), { shape: [2, 8], dtype: 'int32', backend });
  const y = tensor(Int32Array.from([5, 9, 2, 7, 3, 4, 0, 2, 2, 8, 6, 1, 0, 10, 3, 1]), { shape: [2, 8], dtype: 'int32', backend });
  let loss = 0;
  for (let rep = 0; rep < 2; rep++) { // two steps: the dropout stream continues the same way
    const l = model.forward(idx, y).loss!;
    l.backward();
    loss += l.item();
  }
  const out = new Map<string, Float64Array | Float32Array>();
  for (const [n, p] of model.namedParameters()) out.set(n, noGrad(() => p.grad!.data()) as Float64Array | Float32Array);
  model.dispose();
  return { loss, grads: out };
}

for (const device of ['ref', 'cpu'] as const) {
  test(`checkpointed blocks give the same loss and gradients (${device}, dropout 0.2)`, async () => {
    const a = await grads(device, false);
    const b = await grads(device, true);
    assert.equal(b.loss, a.loss);
    for (const [n, g] of a.grads) assert.deepEqual(b.grads.get(n), g, n);
  });
}

test('checkpoint_activations is a training field; refused with mixture-of-experts layers', () => {
  assert.equal(trainConfig({ checkpoint_activations: true }).checkpoint_activations, true);
  assert.throws(() => trainConfig({ checkpoint_activations: true, moe_experts: 4 }), /checkpoint_activations cannot be used with moe_experts/);
});
