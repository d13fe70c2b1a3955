// The reward model of InstructGPT (Ouyang et al. 2022 §3.5): a GPT with a scalar head on its
// last layer's hidden state at the last token, trained on preference pairs {prompt, chosen,
// rejected} with the Bradley–Terry loss −log σ(r(x, y_w) − r(x, y_l)); the held-out pairs'
// pairwise accuracy picks OUT/best. OUT/best is a model directory (config.json: attn_reward_model)
// that the ppo task scores responses with.
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError, loadCheckpoint } from '../io/checkpoint.js';
import type { TensorEntry } from '../io/safetensors.js';
import { checkpointConfigJson } from '../models/checkpoint-format.js';
import { gptConfigFromCheckpointJson } from '../models/gpt-checkpoint.js';
import { GPT } from '../models/gpt.js';
import { Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { compare, gather, Generator, mean, noGrad, reshape, slice, sub, tensor, tidy, to, type Tensor } from '../tensor/index.js';
import { loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { bradleyTerryLoss } from '../train/alignment.js';
import type { Task, TaskRun } from '../train/loop.js';
import { alignmentPlot, alignmentProblems, EpochSampler, holdOut, loadPolicy, promptResponse, readPreferencePairs, type PreferencePair } from './alignment-common.js';
import type { ChatTemplate } from '../generate/chat.js';

export const REWARD_CHECKPOINT = 'attn_reward_model';

/** A GPT body and a scalar head on the hidden state of each row's last token. */
export class RewardModel extends Module {
  readonly gpt: GPT;
  readonly score: Linear;
  constructor(gpt: GPT, opts: { seed?: number; init?: boolean } = {}) {
    super();
    this.gpt = this.registerModule('gpt', gpt);
    const w = gpt.transformer.wte.weight;
    const generator = new Generator(((opts.seed ?? 0) ^ 0x5c0e) >>> 0);
    this.score = this.registerModule('score', new Linear(gpt.config.n_embd, 1, { backend: w.backend, dtype: w.dtype, std: 0.02, bias: true, skipInit: opts.init === false, generator }));
  }

  /** x int32 (B, T) right-padded, lengths[b] the tokens of row b → rewards (B,). */
  forward(x: Tensor, lengths: readonly number[]): Tensor {
    const h = this.gpt.hidden(x); // (B, T, C)
    const [B, , C] = h.shape as [number, number, number];
    const idx = new Int32Array(B * C);
    lengths.forEach((n, b) => idx.fill(n - 1, b * C, (b + 1) * C));
    const last = gather(h, 1, tensor(idx, { shape: [B, 1, C], dtype: 'int32', backend: h.backend })); // (B, 1, C)
    return reshape(this.score.forward(last), [B]);
  }
}

/** Token rows (prompt + response, at most block tokens) of texts, right-padded. */
export function scoreRows(rows: readonly number[][], backend: Backend): { x: Tensor; lengths: number[] } {
  const T = Math.max(1, ...rows.map((r) => r.length));
  const x = new Int32Array(rows.length * T);
  rows.forEach((r, b) => x.set(r, b * T));
  return { x: tensor(x, { shape: [rows.length, T], dtype: 'int32', backend }), lengths: rows.map((r) => Math.max(1, r.length)) };
}

/** A pair's two rows of ids (prompt + response), each cut to the model's context. */
function pairRows(p: PreferencePair, template: ChatTemplate, tok: Tokenizer, block: number): [number[], number[]] {
  const c = promptResponse(template, tok, p.prompt, p.chosen).ids.slice(0, block);
  const r = promptResponse(template, tok, p.prompt, p.rejected).ids.slice(0, block);
  return [c, r];
}

export interface LoadedReward {
  model: RewardModel;
  tokenizer: Tokenizer;
  template: ChatTemplate;
  /** Rewards of prompt + response texts (no gradient), in batches. */
  score(prompts: readonly (string | { role: string; content: string }[])[], responses: readonly string[], batch?: number): number[];
}

/** An 'attn train reward' checkpoint directory. */
export async function loadRewardModel(dir: string, backend: Backend): Promise<LoadedReward> {
  const ckpt = await loadCheckpoint(dir);
  if (ckpt.config['attn_checkpoint'] !== REWARD_CHECKPOINT) throw new CheckpointError(join(dir, 'config.json'), `not a reward model (attn_checkpoint is '${String(ckpt.config['attn_checkpoint'])}', expected '${REWARD_CHECKPOINT}')`);
  const gcfg = gptConfigFromCheckpointJson(ckpt.config['gpt'] as Record<string, unknown>, join(dir, 'config.json'));
  const model = new RewardModel(new GPT(gcfg, { backend, init: false }), { init: false });
  model.loadStateDict(new Map([...ckpt.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }])));
  model.eval();
  const tokenizer = await loadTokenizer(dir);
  const template = { source: String(ckpt.config['chat_template'] ?? ''), bosToken: null, eosToken: null };
  const block = gcfg.block_size;
  return {
    model, tokenizer, template,
    score(prompts, responses, batch = 16) {
      const out: number[] = [];
      for (let s = 0; s < prompts.length; s += batch) {
        const rows = prompts.slice(s, s + batch).map((p, i) => promptResponse(template, tokenizer, p, responses[s + i]!).ids.slice(0, block));
        noGrad(() => tidy(() => {
          const { x, lengths } = scoreRows(rows, backend);
          out.push(...model.forward(x, lengths).data());
        }));
      }
      return out;
    },
  };
}

interface PairBatch {
  rows: number[][];
  n: number;
}

export const REWARD_TASK: Task<PairBatch> = {
  task: 'reward',
  defaults: { out_dir: 'out/reward', max_iters: 300, batch_size: 8, block_size: 256, learning_rate: 1e-4, eval_interval: 50, eval_iters: 50, weight_decay: 0 },
  archFields: [],
  best: { metric: 'accuracy', higher: true },
  evalAtStart: true,
  title: () => 'reward model: Bradley–Terry loss',
  check(cfg, problems) {
    alignmentProblems('reward', cfg, problems);
    if (cfg.lora_rank > 0) problems.push('the reward model trains every weight (lora_rank is not supported here)');
  },
  async open(cfg, { backend, resume, say }): Promise<TaskRun<PairBatch>> {
    let model: RewardModel;
    let tokenizerFiles: Record<string, string>;
    let template: ChatTemplate;
    let tok: Tokenizer;
    if (resume) {
      const r = await loadRewardModel(resume.dir, backend);
      model = r.model;
      tok = r.tokenizer;
      template = r.template;
      tokenizerFiles = tok.toFiles();
    } else {
      const pol = await loadPolicy(cfg.init_from, backend);
      if (!(pol.model instanceof GPT)) {
        pol.model.dispose();
        throw new Error(`reward: ${cfg.init_from} is a Hugging Face decoder; the reward model's body is an attn GPT checkpoint`);
      }
      model = new RewardModel(pol.model, { seed: cfg.seed });
      tok = pol.tokenizer;
      template = pol.template;
      tokenizerFiles = pol.tokenizerFiles;
    }
    const block = Math.min(cfg.block_size, model.gpt.config.block_size);
    const { train, val } = holdOut(await readPreferencePairs(cfg.data), cfg.data);
    const sampler = new EpochSampler(train.length, cfg.seed);
    const batchOf = (pairs: PreferencePair[]): PairBatch => {
      const rows = pairs.map((p) => pairRows(p, template, tok, block));
      return { rows: [...rows.map((r) => r[0]), ...rows.map((r) => r[1])], n: pairs.length };
    };
    const scores = (b: PairBatch): { chosen: Tensor; rejected: Tensor } => {
      const { x, lengths } = scoreRows(b.rows, backend);
      const r = model.forward(x, lengths);
      return { chosen: slice(r, 0, 0, b.n), rejected: slice(r, 0, b.n, 2 * b.n) };
    };
    if (!resume) say(`reward: ${train.length} training pairs, ${val.length} held out; a scalar head on ${cfg.init_from}`);
    model.train();
    return {
      model,
      parts: ['accuracy', 'margin'],
      nextBatch: () => batchOf(sampler.take(cfg.batch_size).map((i) => train[i]!)),
      sizeOf: (b) => b.rows.reduce((a, r) => a + r.length, 0),
      loss(b) {
        const { chosen, rejected } = scores(b);
        const margin = noGrad(() => mean(sub(chosen, rejected)));
        const accuracy = noGrad(() => mean(to(compare('gt', chosen, rejected), chosen.dtype)));
        return { loss: bradleyTerryLoss(chosen, rejected), parts: { accuracy, margin } };
      },
      evaluate() {
        model.eval();
        let loss = 0;
        let correct = 0;
        let margin = 0;
        try {
          for (let s = 0, k = 0; s < val.length && k < cfg.eval_iters; s += cfg.batch_size, k++) {
            const b = batchOf(val.slice(s, s + cfg.batch_size));
            noGrad(() => tidy(() => {
              const { chosen, rejected } = scores(b);
              loss += bradleyTerryLoss(chosen, rejected).item() * b.n;
              const c = chosen.data();
              const r = rejected.data();
              for (let i = 0; i < b.n; i++) {
                if (c[i]! > r[i]!) correct++;
                margin += c[i]! - r[i]!;
              }
            }));
          }
        } finally {
          model.train();
        }
        const n = Math.min(val.length, cfg.eval_iters * cfg.batch_size);
        return { val_loss: loss / n, accuracy: correct / n, margin: margin / n };
      },
      checkpoint() {
        const tensors = new Map<string, TensorEntry>();
        for (const [k, t] of model.stateDict()) tensors.set(k, { dtype: 'F32', shape: [...t.shape], data: t.data() });
        return { config: { attn_checkpoint: REWARD_CHECKPOINT, gpt: checkpointConfigJson(model.gpt.config), chat_template: template.source }, model: tensors, tokenizerFiles };
      },
      plots: (records) => alignmentPlot(records, ['accuracy', 'margin'], 'reward model: pairwise accuracy and margin'),
      state: () => ({ sampler: sampler.state() }),
      setState: (s) => sampler.setState(s['sampler']),
    };
  },
};
