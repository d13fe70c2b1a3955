// RLHF with PPO (Ziegler et al. 2019; Ouyang et al. 2022): a policy with a value head, a frozen
// reference model and a scorer (a reward model or a classifier). Each rollout samples responses
// to rollout_batch prompts with the KV cache, scores them, shapes per-token rewards with the KL
// penalty −c (log π − log π_ref) (c fixed, or adapted toward kl_target), estimates advantages
// with GAE (γ, λ), whitens them, then makes ppo_epochs passes of minibatch updates with the
// clipped policy objective and the clipped value loss. Each update of the one loop is one
// minibatch; the rollout buffer, the samplers and the KL coefficient are saved for exact resume.
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseSafetensors, serializeSafetensors, type TensorEntry } from '../io/safetensors.js';
import { GPT } from '../models/gpt.js';
import { Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { rngStateFromJson, rngStateToJson } from '../data/sampler.js';
import { add, Generator, mul, noGrad, reshape, tensor, tidy, type Tensor } from '../tensor/index.js';
import {
  AdaptiveKLController, FixedKLController, gae, klShapedRewards, ppoPolicyLoss, ppoValueLoss, tokenLogProbs, whiten, type KLController,
} from '../train/alignment.js';
import type { Task, TaskRun } from '../train/loop.js';
import {
  alignmentPlot, alignmentProblems, batchTensors, encodeText, EpochSampler, freeze, loadPolicy, messagesOf, policyConfig, policyTensors, readJsonl, responseBatch, sampleResponses,
} from './alignment-common.js';
import { renderChat } from '../generate/chat.js';
import { loadScorer } from './scorers.js';

const VALUE_HEAD_FILE = 'value_head.safetensors';

/** The policy GPT and its value head V(s_t) on the last layer's hidden states. */
export class PolicyWithValue extends Module {
  readonly policy: GPT;
  readonly value_head: Linear;
  constructor(policy: GPT, seed = 0) {
    super();
    this.policy = this.registerModule('policy', policy);
    const w = policy.transformer.wte.weight;
    const generator = new Generator((seed ^ 0x7a1e) >>> 0);
    this.value_head = this.registerModule('value_head', new Linear(policy.config.n_embd, 1, { backend: w.backend, dtype: w.dtype, std: 0.02, bias: true, generator }));
  }
  /** x (B, T) → logits (B, T, V) and values (B, T). */
  forward(x: Tensor): { logits: Tensor; values: Tensor } {
    const h = this.policy.hidden(x);
    const [B, T] = x.shape as [number, number];
    return { logits: this.policy.head(h), values: reshape(this.value_head.forward(h), [B, T]) };
  }
}

/** One rollout's responses and what PPO needs of them, per response token (JSON-able for resume). */
interface Rollout {
  prompt: number[][];
  response: number[][];
  oldLogp: number[][];
  oldValues: number[][];
  advantages: number[][];
  returns: number[][];
  stats: Record<string, number>;
}

interface PpoBatch {
  idx: number[];
}

/** Per-token values laid out like responseBatch's targets: (B, T) flat with 0 outside responses. */
function spread(items: Rollout, idx: readonly number[], T: number, field: 'oldLogp' | 'oldValues' | 'advantages' | 'returns'): { data: Float32Array; mask: Float32Array } {
  const data = new Float32Array(idx.length * T);
  const mask = new Float32Array(idx.length * T);
  idx.forEach((i, b) => {
    const start = items.prompt[i]!.length - 1; // target index of the first response token
    items[field][i]!.forEach((v, t) => {
      data[b * T + start + t] = v;
      mask[b * T + start + t] = 1;
    });
  });
  return { data, mask };
}

export const PPO_TASK: Task<PpoBatch> = {
  task: 'ppo',
  defaults: { out_dir: 'out/ppo', max_iters: 64, batch_size: 8, block_size: 256, learning_rate: 1e-5, eval_interval: 16, eval_iters: 2, weight_decay: 0, grad_clip: 1, beta2: 0.999 },
  archFields: ['ref_model', 'reward_model'],
  best: { metric: 'reward', higher: true },
  evalAtStart: true,
  title: (cfg) => `PPO (KL coefficient ${cfg.kl_coef}${cfg.kl_target > 0 ? `, target ${cfg.kl_target}` : ''})`,
  check(cfg, problems) {
    alignmentProblems('ppo', cfg, problems);
    if (cfg.init_from !== 'resume' && cfg.reward_model === '') problems.push('ppo needs --reward_model DIR (an attn reward model or classifier)');
    if (cfg.lora_rank > 0) problems.push('ppo trains every weight of the policy (lora_rank is not supported here)');
  },
  async open(cfg, { backend, resume, say }): Promise<TaskRun<PpoBatch>> {
    if (!resume && cfg.ref_model === '') cfg.ref_model = cfg.init_from;
    const pol = await loadPolicy(resume ? resume.dir : cfg.init_from, backend);
    if (!(pol.model instanceof GPT)) {
      pol.model.dispose();
      throw new Error('ppo: the policy must be an attn GPT checkpoint (its value head reads the GPT hidden states)');
    }
    const model = new PolicyWithValue(pol.model, cfg.seed);
    if (resume && existsSync(join(resume.dir, VALUE_HEAD_FILE))) {
      const st = parseSafetensors(new Uint8Array(await readFile(join(resume.dir, VALUE_HEAD_FILE))), VALUE_HEAD_FILE);
      model.value_head.loadStateDict(new Map([...st.tensors].map(([n, t]) => [n, { shape: t.shape, data: t.data }])));
    }
    const ref = freeze((await loadPolicy(cfg.ref_model, backend, 'ref_model')).model);
    const scorer = await loadScorer(cfg.reward_model, backend);
    const tok = pol.tokenizer;
    // Prompts: JSONL {"prompt": text or messages} per line, or plain text, one prompt a line.
    const lines = cfg.data.endsWith('.jsonl')
      ? (await readJsonl(cfg.data)).map(({ line, value }) => {
        const p = value['prompt'];
        return typeof p === 'string' ? p : renderChat(pol.template, messagesOf(p, `${cfg.data}:${line}`), { addGenerationPrompt: true });
      })
      : (await readFile(cfg.data, 'utf8')).split('\n').filter((l) => l.trim() !== '');
    const nEval = Math.min(Math.max(1, Math.floor(lines.length / 10)), cfg.eval_iters * cfg.rollout_batch);
    const evalPrompts = lines.slice(lines.length - nEval);
    const trainPrompts = lines.slice(0, lines.length - nEval);
    if (trainPrompts.length === 0) throw new Error(`${cfg.data}: needs at least 2 prompts`);
    const promptIds = (p: string): number[] => encodeText(tok, p);
    const sampler = new EpochSampler(trainPrompts.length, cfg.seed);
    const rolloutGen = new Generator((cfg.seed ^ 0x5a17ab1e) >>> 0);
    const kl: KLController = cfg.kl_target > 0 ? new AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) : new FixedKLController(cfg.kl_coef);
    const perRollout = Math.ceil(cfg.rollout_batch / cfg.batch_size) * cfg.ppo_epochs;
    let rollout: Rollout | null = null;
    let cursor = 0; // minibatches of this rollout done
    let pendingStats: Record<string, number> | null = null;

    /** Samples, scores and prepares one rollout (no gradients). */
    const makeRollout = (prompts: string[], gen: Generator, klCoef: number): Rollout => {
      const ids = prompts.map(promptIds);
      const sampled = sampleResponses(pol.model, tok, ids, { maxNew: cfg.max_new_tokens, temperature: cfg.temperature, gen, eos: pol.eos });
      const scores = scorer.score(prompts, sampled.map((s) => s.text));
      const items = sampled.map((s) => ({ prompt: s.prompt, response: s.response.length ? s.response : [pol.eos ?? 0] }));
      const r: Rollout = { prompt: [], response: [], oldLogp: [], oldValues: [], advantages: [], returns: [], stats: {} };
      model.eval();
      let klSum = 0;
      let len = 0;
      for (let s = 0; s < items.length; s += cfg.batch_size) {
        const part = items.slice(s, s + cfg.batch_size);
        const b = responseBatch(part);
        noGrad(() => tidy(() => {
          const { x, y } = batchTensors(b, backend);
          const out = model.forward(x);
          const lp = tokenLogProbs(out.logits, y).data();
          const v = out.values.data();
          const lr = tokenLogProbs(ref.forward(x).logits, y).data();
          part.forEach((it, k) => {
            const i = s + k;
            const start = it.prompt.length - 1;
            const n = it.response.length;
            const at = (a: ArrayLike<number>) => Array.from({ length: n }, (_, t) => a[k * b.T + start + t]!);
            const logp = at(lp);
            const refLogp = at(lr);
            const values = at(v);
            const rewards = klShapedRewards(logp, refLogp, scores[i]!, klCoef);
            const g = gae(rewards, values, cfg.gamma, cfg.gae_lambda);
            r.prompt.push(it.prompt);
            r.response.push(it.response);
            r.oldLogp.push(logp);
            r.oldValues.push(values);
            r.advantages.push(Array.from(g.advantages));
            r.returns.push(Array.from(g.returns));
            for (let t = 0; t < n; t++) klSum += logp[t]! - refLogp[t]!;
            len += n;
          });
        }));
      }
      model.train();
      // Advantages whitened over every response token of the rollout.
      const flat = whiten(Float64Array.from(r.advantages.flat()));
      let o = 0;
      r.advantages = r.advantages.map((a) => a.map(() => flat[o++]!));
      const meanScore = scores.reduce((a, b) => a + b, 0) / scores.length;
      r.stats = { reward: meanScore, kl: klSum / items.length, kl_coef: klCoef, response_len: len / items.length };
      return r;
    };

    const checkpointTensors = (): Map<string, TensorEntry> => policyTensors(pol.model, null);
    say(`ppo: ${trainPrompts.length} prompts (${evalPrompts.length} held out for evaluation); scorer ${cfg.reward_model} (${scorer.kind}); ${perRollout} minibatch updates per rollout of ${cfg.rollout_batch}`);
    model.train();
    return {
      model,
      parts: ['policy_loss', 'value_loss'],
      nextBatch() {
        if (!rollout || cursor >= perRollout) {
          rollout = makeRollout(sampler.take(cfg.rollout_batch).map((i) => trainPrompts[i]!), rolloutGen, kl.value);
          kl.update(rollout.stats['kl']!, cfg.rollout_batch);
          pendingStats = rollout.stats;
          cursor = 0;
        }
        const nMb = Math.ceil(cfg.rollout_batch / cfg.batch_size);
        const epoch = Math.floor(cursor / nMb);
        const mb = cursor % nMb;
        // A seeded permutation per (rollout position, epoch): the same after a resume.
        const g = new Generator((cfg.seed + 7919 * epoch + 104729 * sampler.epoch + sampler.pos) >>> 0);
        const order = Array.from({ length: cfg.rollout_batch }, (_, i) => i);
        for (let i = order.length - 1; i > 0; i--) {
          const j = g.randint(i + 1);
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
        cursor++;
        return { idx: order.slice(mb * cfg.batch_size, (mb + 1) * cfg.batch_size) };
      },
      sizeOf: (b) => b.idx.reduce((a, i) => a + rollout!.prompt[i]!.length + rollout!.response[i]!.length, 0),
      loss(b) {
        const r = rollout!;
        const batch = responseBatch(b.idx.map((i) => ({ prompt: r.prompt[i]!, response: r.response[i]! })));
        const { x, y } = batchTensors(batch, backend);
        const out = model.forward(x);
        const logp = tokenLogProbs(out.logits, y);
        const shape = [batch.B, batch.T];
        const t = (a: Float32Array) => tensor(a, { shape, backend });
        const old = spread(r, b.idx, batch.T, 'oldLogp');
        const mask = t(old.mask);
        const pl = ppoPolicyLoss(logp, t(old.data), t(spread(r, b.idx, batch.T, 'advantages').data), mask, cfg.ppo_clip);
        const vl = ppoValueLoss(out.values, t(spread(r, b.idx, batch.T, 'oldValues').data), t(spread(r, b.idx, batch.T, 'returns').data), mask, cfg.value_clip);
        return { loss: add(pl, mul(vl, cfg.vf_coef)), parts: { policy_loss: pl, value_loss: vl } };
      },
      stepRecord() {
        // The training rollout's statistics, named apart from the evaluation's reward and kl.
        const s = pendingStats ? { rollout_reward: pendingStats['reward'], rollout_kl: pendingStats['kl'], kl_coef: pendingStats['kl_coef'], response_len: pendingStats['response_len'] } : {};
        pendingStats = null;
        return s;
      },
      evaluate() {
        // Reward and KL of greedy-free samples on the held-out prompts, from a fixed stream.
        const r = makeRollout(evalPrompts, new Generator((cfg.seed ^ 0xe7a1) >>> 0), kl.value);
        return { val_loss: -r.stats['reward']!, reward: r.stats['reward']!, kl: r.stats['kl']!, kl_coef: kl.value, response_len: r.stats['response_len']! };
      },
      checkpoint() {
        const vh = new Map<string, TensorEntry>();
        for (const [k, t] of model.value_head.stateDict()) vh.set(k, { dtype: 'F32', shape: [...t.shape], data: t.data() });
        return {
          config: { ...policyConfig(pol.model, null), attn_ppo: { ref_model: cfg.ref_model, reward_model: cfg.reward_model } },
          model: checkpointTensors(),
          tokenizerFiles: { ...pol.tokenizerFiles, [VALUE_HEAD_FILE]: serializeSafetensors(vh) },
        };
      },
      plots: (records) => alignmentPlot(records, ['rollout_reward', 'rollout_kl', 'reward', 'kl', 'kl_coef', 'policy_loss', 'value_loss'], `PPO: reward, KL(π‖π_ref) per response, KL coefficient`),
      state: () => ({ sampler: sampler.state(), rollout_rng: rngStateToJson(rolloutGen), kl_coef: kl.value, rollout, cursor }),
      setState(s) {
        sampler.setState(s['sampler']);
        rngStateFromJson(rolloutGen, s['rollout_rng'], 'rollout_rng');
        if (typeof s['kl_coef'] !== 'number') throw new Error("'kl_coef' must be a number");
        kl.value = s['kl_coef'];
        rollout = (s['rollout'] as Rollout | null) ?? null;
        cursor = Number(s['cursor'] ?? 0);
      },
      dispose() {
        ref.dispose();
        scorer.dispose();
      },
    };
  },
};
