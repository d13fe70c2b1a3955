// The alignment losses (src/train/alignment.ts) against a PyTorch float64 reference
// (tools/alignment_reference.py → test/fixtures/alignment/reference.json) within 1e-5, values and
// gradients, and their backward against finite differences in float64.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import * as A from '../src/index.js';
import { Generator, RefBackend, type Tensor } from '../src/index.js';
import {
  AdaptiveKLController, bradleyTerryLoss, gae, klShapedRewards, logSigmoid, ppoPolicyLoss, ppoValueLoss, preferenceLoss, sequenceLogProbs, whiten, type PreferenceLossKind,
} from '../src/train/alignment.js';
import { assertClose, gradcheck, randTensor } from './helpers.js';

const ref = JSON.parse(readFileSync(new URL('../../test/fixtures/alignment/reference.json', import.meta.url), 'utf8')) as Record<string, Record<string, never>>;
const be = new RefBackend();
const f64 = (data: number[], shape: number[], requiresGrad = false): Tensor => A.tensor(data, { backend: be, dtype: 'float64', shape, requiresGrad });
const i32 = (data: number[], shape: number[]): Tensor => A.tensor(data, { backend: be, dtype: 'int32', shape });
const TOL = 1e-5;
const close = (a: ArrayLike<number>, e: ArrayLike<number>, what: string): void => assertClose(a, e, TOL, TOL, what);

test('DPO (two βs) and IPO from logits with masked prompts: loss, implicit rewards and logit gradients match PyTorch', () => {
  const inp = ref['pref_inputs'] as Record<string, number[]>;
  const shape = inp['shape']!;
  for (const key of ['dpo_beta0.1', 'dpo_beta2.0', 'ipo_beta0.5']) {
    const r = ref[key] as Record<string, number[] & number & string>;
    const lc = f64(inp['logits_chosen']!, shape, true);
    const lr = f64(inp['logits_rejected']!, shape, true);
    const pc = sequenceLogProbs(lc, i32(inp['targets_chosen']!, shape.slice(0, 2)));
    const pr = sequenceLogProbs(lr, i32(inp['targets_rejected']!, shape.slice(0, 2)));
    const out = preferenceLoss(pc, pr, f64(inp['ref_chosen']!, [3]), f64(inp['ref_rejected']!, [3]), r['beta'], r['kind'] as PreferenceLossKind);
    close(pc.data(), r['policy_chosen'], `${key} policy chosen log-probs`);
    close(pr.data(), r['policy_rejected'], `${key} policy rejected log-probs`);
    close([out.loss.item()], [r['loss']], `${key} loss`);
    close(out.chosenRewards.data(), r['chosen_rewards'], `${key} chosen rewards`);
    close(out.rejectedRewards.data(), r['rejected_rewards'], `${key} rejected rewards`);
    out.loss.backward();
    close(lc.grad!.data(), r['grad_logits_chosen'], `${key} d/d chosen logits`);
    close(lr.grad!.data(), r['grad_logits_rejected'], `${key} d/d rejected logits`);
  }
});

test('Bradley–Terry loss and its gradients match PyTorch', () => {
  const r = ref['bradley_terry'] as Record<string, number[] & number>;
  const c = f64(r['chosen'], [8], true);
  const j = f64(r['rejected'], [8], true);
  const loss = bradleyTerryLoss(c, j);
  close([loss.item()], [r['loss']], 'loss');
  loss.backward();
  close(c.grad!.data(), r['grad_chosen'], 'd/d chosen');
  close(j.grad!.data(), r['grad_rejected'], 'd/d rejected');
});

test('PPO: KL-shaped rewards, GAE, whitening, clipped policy and value losses and gradients match PyTorch', () => {
  const r = ref['ppo'] as Record<string, number[] & number>;
  const [B, L] = r['shape'] as unknown as [number, number];
  const lengths = r['lengths'] as unknown as number[];
  const mask = new Float64Array(B * L);
  const rewards = new Float64Array(B * L);
  const adv = new Float64Array(B * L);
  const ret = new Float64Array(B * L);
  const row = (a: number[], i: number, n: number) => a.slice(i * L, i * L + n);
  lengths.forEach((n, i) => {
    const rw = klShapedRewards(row(r['old_logp'], i, n), row(r['ref_logp'], i, n), r['scores'][i]!, r['kl_coef']);
    const g = gae(rw, row(r['old_values'], i, n), r['gamma'], r['lambda']);
    for (let t = 0; t < n; t++) {
      mask[i * L + t] = 1;
      rewards[i * L + t] = rw[t]!;
      adv[i * L + t] = g.advantages[t]!;
      ret[i * L + t] = g.returns[t]!;
    }
  });
  close(rewards, r['rewards'], 'KL-shaped rewards');
  close(adv, r['advantages'], 'GAE advantages');
  close(ret, r['returns'], 'returns');
  const valid = [...mask.keys()].filter((k) => mask[k] === 1);
  const w = whiten(Float64Array.from(valid, (k) => adv[k]!));
  const white = new Float64Array(B * L);
  valid.forEach((k, j) => (white[k] = w[j]!));
  close(white, r['whitened'], 'whitened advantages');

  const m = f64([...mask], [B, L]);
  const lp = f64(r['new_logp'], [B, L], true);
  const pg = ppoPolicyLoss(lp, f64(r['old_logp'], [B, L]), f64([...white], [B, L]), m, r['clip']);
  close([pg.item()], [r['policy_loss']], 'policy loss');
  pg.backward();
  close(lp.grad!.data(), r['grad_logp'], 'd policy loss / d log-probs');
  const v = f64(r['new_values'], [B, L], true);
  const vf = ppoValueLoss(v, f64(r['old_values'], [B, L]), f64([...ret], [B, L]), m, r['value_clip']);
  close([vf.item()], [r['value_loss']], 'value loss');
  vf.backward();
  close(v.grad!.data(), r['grad_values'], 'd value loss / d values');
});

test('the adaptive KL controller follows Ziegler et al.\'s update', () => {
  const r = ref['adaptive_kl'] as Record<string, number & number[]>;
  const c = new AdaptiveKLController(r['init'], r['target'], r['horizon']);
  const got = r['kls'].map((kl: number) => {
    c.update(kl, r['steps']);
    return c.value;
  });
  close(got, r['values'], 'coefficients');
  assert.throws(() => new AdaptiveKLController(0.1, 0, 100), /target KL must be positive/);
  assert.throws(() => preferenceLoss(f64([0], [1]), f64([0], [1]), f64([0], [1]), f64([0], [1]), 0), /beta must be a positive/);
});

test('finite differences (float64): logSigmoid, the preference losses, Bradley–Terry, the PPO losses', () => {
  const g = new Generator(22);
  const r = (shape: number[], scale = 1) => randTensor(shape, be, g, { requiresGrad: true, scale });
  const c = (shape: number[], scale = 1) => randTensor(shape, be, g, { scale });
  gradcheck('logSigmoid', (x) => logSigmoid(x), [r([9], 4)]);
  const [rc, rr] = [c([4], 3), c([4], 3)];
  gradcheck('dpo', (a, b) => preferenceLoss(a, b, rc, rr, 0.3).loss, [r([4], 3), r([4], 3)]);
  gradcheck('ipo', (a, b) => preferenceLoss(a, b, rc, rr, 0.7, 'ipo').loss, [r([4], 3), r([4], 3)]);
  const targets = i32([1, -100, 3, 0, 2, -100], [2, 3]);
  gradcheck('sequenceLogProbs', (x) => sequenceLogProbs(x, targets), [r([2, 3, 4])]);
  gradcheck('bradleyTerry', (a, b) => bradleyTerryLoss(a, b), [r([5], 2), r([5], 2)]);
  const mask = f64([1, 1, 1, 0, 1, 1, 0, 0], [2, 4]);
  const old = c([2, 4], 0.1);
  // Ratios near, but not at, the clip edges: the objective is piecewise smooth.
  const lp = A.noGrad(() => A.add(old, f64([0.05, -0.5, 0.4, 0, 0.1, -0.05, 0, 0], [2, 4])));
  lp.requiresGrad = true;
  const advs = c([2, 4]);
  gradcheck('ppoPolicyLoss', (x) => ppoPolicyLoss(x, old, advs, mask, 0.2), [lp]);
  const oldV = c([2, 4]);
  const v = A.noGrad(() => A.add(oldV, f64([0.05, -0.5, 0.4, 0, 0.1, -0.05, 0, 0], [2, 4])));
  v.requiresGrad = true;
  const rets = c([2, 4]);
  gradcheck('ppoValueLoss', (x) => ppoValueLoss(x, oldV, rets, mask, 0.2), [v]);
});

test('finite differences (float64): packed (segmented) causal self-attention, learned and rotary positions', async () => {
  const { CausalSelfAttention, RotaryEmbedding } = await import('../src/nn/index.js');
  const g = new Generator(5);
  for (const rope of [false, true]) {
    const attn = new CausalSelfAttention(8, 2, { backend: be, dtype: 'float64', generator: g, rope: rope ? new RotaryEmbedding(4, 16, { backend: be, dtype: 'float64' }) : null });
    const x = randTensor([2, 6, 8], be, g, { requiresGrad: true });
    // (B=2, T=6) with 8 channels: small, so the finite differences stay quick.
    gradcheck(`segmented attention${rope ? ' (rope)' : ''}`, (t) => attn.forward(t, undefined, [[2, 4], [3, 1, 2]]), [x]);
    // The gradient of a segment's output reaches only its own segment's inputs.
    x.grad = null;
    const y = attn.forward(x, undefined, [[2, 4], [3, 1, 2]]);
    A.sum(A.slice(A.slice(y, 0, 0, 1), 1, 0, 2)).backward();
    const gx = x.grad!.data();
    for (let t = 2; t < 6; t++) for (let c = 0; c < 8; c++) assert.equal(gx[t * 8 + c], 0, `row 0 position ${t} is in another segment`);
  }
});
