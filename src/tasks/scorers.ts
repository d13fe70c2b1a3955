// What scores a sampled response in RLHF: an 'attn train reward' model (its scalar), or an attn
// sentence classifier (the probability of label 1: the DPO paper's sentiment ground truth).
import type { Backend } from '../backend/backend.js';
import { encodeSentence, specialIdsOf } from '../data/sentences.js';
import { loadBertCheckpoint } from '../models/bert-checkpoint.js';
import { padBatch } from '../models/bert.js';
import { readHFConfig } from '../models/hf-decoder-files.js';
import { noGrad, softmax, tidy } from '../tensor/index.js';
import { loadRewardModel, REWARD_CHECKPOINT } from './reward.js';

export interface Scorer {
  kind: 'reward-model' | 'classifier';
  /** Scores of prompt + response texts, without gradients. */
  score(prompts: readonly string[], responses: readonly string[]): number[];
  dispose(): void;
}

export async function loadScorer(dir: string, backend: Backend): Promise<Scorer> {
  const cfg = await readHFConfig(dir);
  if (cfg['attn_checkpoint'] === REWARD_CHECKPOINT) {
    const r = await loadRewardModel(dir, backend);
    return { kind: 'reward-model', score: (p, res) => r.score(p, res), dispose: () => r.model.dispose() };
  }
  const { model, tokenizer, config } = await loadBertCheckpoint(dir, { backend });
  if (!model.cls_head) {
    model.dispose();
    throw new Error(`reward_model ${dir}: an encoder without a classification head cannot score responses`);
  }
  model.eval();
  const ids = specialIdsOf(tokenizer);
  return {
    kind: 'classifier',
    score(prompts, responses) {
      const out: number[] = [];
      for (let s = 0; s < prompts.length; s += 32) {
        const rows = prompts.slice(s, s + 32).map((p, i) => encodeSentence(tokenizer, p + responses[s + i]!, ids, config.max_len));
        noGrad(() => tidy(() => {
          const probs = softmax(model.classify(padBatch(rows, config.pad_id, backend)), -1).data();
          const C = probs.length / rows.length;
          for (let i = 0; i < rows.length; i++) out.push(probs[i * C + 1]!);
        }));
      }
      return out;
    },
    dispose: () => model.dispose(),
  };
}
