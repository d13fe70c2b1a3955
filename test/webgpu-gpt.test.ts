// The GPT model of the GPT issue trained 50 steps with AdamW on Tiny Shakespeare (characters)
// on cpu and on webgpu from the same initial weights: the losses must agree within 1e-3
// relative. Then the KV-cached greedy generation must give the same tokens on both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import { getBackend, liveTensorCount } from '../src/index.js';
import { GPT } from '../src/models/gpt.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { AdamW } from '../src/train/optim.js';
import { loadGPTCheckpoint } from '../src/models/gpt-checkpoint.js';
import { train, trainStep } from '../src/tasks/lm.js';
import { TrainingDivergedError, type StepMetrics } from '../src/train/loop.js';
import { prepareDataset } from '../src/data/index.js';
import type { WebGPUBackend } from '../src/backend/webgpu/index.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gatherBatch } from '../src/data/sampler.js';
import { generate } from '../src/generate/index.js';
import { webgpu } from './webgpu-helpers.js';

const TEXT = readFileSync(fileURLToPath(new URL('../../data/tinyshakespeare/input.txt', import.meta.url)), 'utf8').slice(0, 200_000);

function run(backend: Backend, steps: number): { losses: number[]; sample: number[] } {
  const tok = CharTokenizer.fromText(TEXT);
  const ids = tok.encode(TEXT);
  const cfg = { n_layer: 2, n_head: 4, n_embd: 64, block_size: 32, vocab_size: tok.vocabSize, dropout: 0, bias: true };
  const model = new GPT(cfg, { backend, seed: 11 });
  const opt = new AdamW(model.parameters(), { lr: 3e-3, weightDecay: 0.1, betas: [0.9, 0.99] });
  const losses: number[] = [];
  for (let step = 0; step < steps; step++) {
    const offsets = Array.from({ length: 4 }, (_, b) => (step * 7919 + b * 40_009) % (ids.length - 40));
    losses.push(trainStep(model, opt, [gatherBatch(ids, offsets, 32)], { gradClip: 1 }).loss);
  }
  model.eval();
  const sample = generate(model, tok.encode('ROMEO:'), { maxNewTokens: 20, greedy: true }).tokens;
  model.dispose();
  opt.zeroGrad();
  for (const st of opt.stateTensors()) {
    st.m.dispose();
    st.v.dispose();
  }
  return { losses, sample: Array.from(sample) };
}

test('webgpu: GPT trains 50 steps with the losses of cpu (1e-3 relative), generates the same tokens', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const cpu = await getBackend('cpu');
  const before = liveTensorCount();
  const liveStorages = (be as WebGPUBackend).live;
  const a = run(cpu, 50);
  const b = run(be, 50);
  assert.equal((be as WebGPUBackend).live, liveStorages, 'every device buffer of the run was freed');
  for (let i = 0; i < a.losses.length; i++) {
    const rel = Math.abs(a.losses[i]! - b.losses[i]!) / Math.abs(a.losses[i]!);
    assert.ok(rel < 1e-3, `step ${i}: cpu loss ${a.losses[i]} vs webgpu ${b.losses[i]} (relative ${rel.toExponential(2)})`);
  }
  assert.ok(a.losses[49]! < a.losses[0]! - 0.5, `the loss falls: ${a.losses[0]} -> ${a.losses[49]}`);
  assert.deepEqual(b.sample, a.sample);
  assert.equal(liveTensorCount(), before, 'no tensors leak');
});

test('webgpu train(): updates are queued and read once per log interval; the logged losses match cpu, and a NaN names its step', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const dir = mkdtempSync(join(tmpdir(), 'attn-queued-'));
  try {
    await prepareDataset({ text: TEXT, tokenizer: CharTokenizer.fromText(TEXT), outDir: join(dir, 'data') });
    const base = {
      dataset: join(dir, 'data'), n_layer: 1, n_head: 2, n_embd: 32, block_size: 16, batch_size: 4, dropout: 0,
      max_iters: 12, eval_interval: 6, eval_iters: 1, log_interval: 4, seed: 5, grad_clip: 0.5, learning_rate: 3e-3,
    };
    const logged = async (device: 'cpu' | 'webgpu') => {
      const recs: StepMetrics[] = [];
      await train({ ...base, device, out_dir: join(dir, device) }, { onLog: (m) => recs.push(m) });
      return recs;
    };
    const cpu = await logged('cpu');
    const gpu = await logged('webgpu');
    assert.deepEqual(gpu.map((r) => r.step), cpu.map((r) => r.step));
    assert.ok(cpu.length >= 4, `logged steps ${cpu.map((r) => r.step).join(', ')}`);
    for (let i = 0; i < cpu.length; i++) {
      const [a, b] = [cpu[i]!, gpu[i]!];
      assert.ok(Math.abs(a.train_loss - b.train_loss) / a.train_loss < 1e-3, `step ${a.step}: loss ${a.train_loss} vs ${b.train_loss}`);
      assert.ok(Math.abs(a.grad_norm - b.grad_norm) / a.grad_norm < 1e-2, `step ${a.step}: grad norm ${a.grad_norm} vs ${b.grad_norm}`);
      assert.ok(b.dt_ms > 0 && Number.isFinite(b.tokens_per_s));
    }
    // A NaN written into the weights after step 4 makes step 5's loss NaN. The queue is read
    // after step 7 (before the evaluation at 8), which names step 5 and leaves step 4's checkpoint.
    let model: GPT | null = null;
    await assert.rejects(
      train({ ...base, device: 'webgpu', out_dir: join(dir, 'nan'), eval_interval: 4, log_interval: 10 }, {
        onStart: (info) => {
          model = info.model as GPT;
        },
        onProgress: (step) => {
          if (step === 5) {
            const w = model!.transformer.wte.weight;
            w.backend.write(w.storage, [NaN], 0);
          }
        },
      }),
      (e: Error) => {
        assert.ok(e instanceof TrainingDivergedError, String(e));
        assert.equal(e.step, 5);
        assert.match(e.message, /\(step 4\) is untouched/);
        return true;
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('webgpu: a device lost mid-run stops training, and the last checkpoint stays loadable', async (t) => {
  // Last test of this file (its own process): it destroys the shared device.
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const dir = mkdtempSync(join(tmpdir(), 'attn-lost-'));
  try {
    await prepareDataset({ text: TEXT, tokenizer: CharTokenizer.fromText(TEXT), outDir: join(dir, 'data') });
    const cfg = {
      out_dir: join(dir, 'run'), dataset: join(dir, 'data'), device: 'webgpu' as const,
      n_layer: 1, n_head: 2, n_embd: 16, block_size: 8, batch_size: 2, dropout: 0, max_iters: 8,
      eval_interval: 3, eval_iters: 1, log_interval: 1, seed: 3,
    };
    await assert.rejects(
      train(cfg, {
        onProgress: (step: number) => {
          if (step === 4) (be as WebGPUBackend).simulateDeviceLoss();
        },
      }),
      /device lost/,
    );
    const loaded = await loadGPTCheckpoint(join(dir, 'run', 'last'), { backend: await getBackend('cpu') });
    assert.equal(loaded.checkpoint.trainerState?.['iter'], 3, 'the checkpoint of the last evaluation before the loss');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
