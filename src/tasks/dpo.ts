// Direct preference optimisation (Rafailov et al. 2023): the policy is trained on preference
// pairs against a frozen reference model (a second copy, no gradients) with the DPO loss
// −log σ(β [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]), or IPO's squared
// form (dpo_loss ipo). The reference's log-probs are computed once per batch, without a graph.
// Logged per update: the implicit rewards β·log π/π_ref of the chosen and rejected responses,
// their margin and the pairwise accuracy; per evaluation the same on the held-out pairs and the
// mean per-token KL(π‖π_ref) of the next-token distributions over the held-out responses.
import { crossEntropy, exp, logSoftmax, mean, mul, noGrad, slice, sub, sum, tidy, to, compare, type Tensor } from '../tensor/index.js';
import { IGNORE, preferenceLoss, sequenceLogProbs, type PreferenceLossKind } from '../train/alignment.js';
import type { Task, TaskRun } from '../train/loop.js';
import {
  alignmentPlot, alignmentProblems, batchTensors, EpochSampler, freeze, holdOut, loadPolicy, logitsOf, padRows, policyConfig, policyLora, policyTensors, promptResponse,
  readPreferencePairs, shiftExample, type CausalLM, type PreferencePair, type RowBatch,
} from './alignment-common.js';

/** chosen rows then rejected rows of n pairs. */
interface DpoBatch extends RowBatch {
  n: number;
}

/**
 * Mean over the scored positions of KL(π(·|context) ‖ π_ref(·|context)), exact over the vocabulary:
 * Σ_v p(v) (log p(v) − log q(v)).
 */
export function tokenKL(policyLogits: Tensor, refLogits: Tensor, targets: Tensor): number {
  return noGrad(() => tidy(() => {
    const lp = logSoftmax(policyLogits, -1);
    const lq = logSoftmax(refLogits, -1);
    const perPos = sum(mul(exp(lp), sub(lp, lq)), -1); // (B, T)
    const mask = to(compare('ne', targets, IGNORE), perPos.dtype);
    const n = sum(mask).item();
    return n > 0 ? sum(mul(perPos, mask)).item() / n : 0;
  }));
}

export const DPO_TASK: Task<DpoBatch> = {
  task: 'dpo',
  defaults: { out_dir: 'out/dpo', max_iters: 200, batch_size: 8, block_size: 256, learning_rate: 1e-5, eval_interval: 50, eval_iters: 20, weight_decay: 0, grad_clip: 10 },
  // The reference is the run's first model: a resumed run takes the saved one.
  archFields: ['ref_model'],
  best: { metric: 'val_loss', higher: false },
  evalAtStart: true,
  title: (cfg) => `${cfg.dpo_loss.toUpperCase()} loss (β ${cfg.beta})`,
  check(cfg, problems) {
    alignmentProblems('dpo', cfg, problems);
  },
  async open(cfg, { backend, resume, say }): Promise<TaskRun<DpoBatch>> {
    if (!resume && cfg.ref_model === '') cfg.ref_model = cfg.init_from;
    const pol = await loadPolicy(resume ? resume.dir : cfg.init_from, backend);
    const model = pol.model;
    const ref = freeze((await loadPolicy(cfg.ref_model, backend, 'ref_model')).model);
    if (ref.config.vocab_size !== model.config.vocab_size) {
      model.dispose();
      ref.dispose();
      throw new Error(`dpo: the reference ${cfg.ref_model} has a vocabulary of ${ref.config.vocab_size}, the policy ${model.config.vocab_size}`);
    }
    const block = Math.min(cfg.block_size, model.config.block_size);
    const { train, val } = holdOut(await readPreferencePairs(cfg.data), cfg.data);
    const sampler = new EpochSampler(train.length, cfg.seed);
    const rowOf = (p: PreferencePair, response: string) => shiftExample(promptResponse(pol.template, pol.tokenizer, p.prompt, response, pol.eos), block);
    const batchOf = (pairs: PreferencePair[]): DpoBatch => ({ ...padRows([...pairs.map((p) => rowOf(p, p.chosen)), ...pairs.map((p) => rowOf(p, p.rejected))]), n: pairs.length });
    const kind = cfg.dpo_loss as PreferenceLossKind;
    const lora = policyLora(model, cfg, say);
    /** The loss and its logged parts on a batch; the reference's log-probs without a graph. */
    const lossOf = (b: DpoBatch) => {
      const { x, y } = batchTensors(b, backend);
      const refLp = noGrad(() => sequenceLogProbs(logitsOf(ref, x), y));
      const lp = sequenceLogProbs(logitsOf(model, x), y);
      const n = b.n;
      const out = preferenceLoss(slice(lp, 0, 0, n), slice(lp, 0, n, 2 * n), slice(refLp, 0, 0, n), slice(refLp, 0, n, 2 * n), cfg.beta, kind);
      const parts = noGrad(() => ({
        chosen_reward: mean(out.chosenRewards),
        rejected_reward: mean(out.rejectedRewards),
        margin: mean(sub(out.chosenRewards, out.rejectedRewards)),
        accuracy: mean(to(compare('gt', out.chosenRewards, out.rejectedRewards), out.loss.dtype)),
      }));
      return { loss: out.loss, parts };
    };
    if (!resume) say(`${kind}: β ${cfg.beta}, ${train.length} pairs, ${val.length} held out; frozen reference ${cfg.ref_model}`);
    model.train();
    return {
      model,
      params: lora ? lora.trainableParameters() : undefined,
      parts: ['chosen_reward', 'rejected_reward', 'margin', 'accuracy'],
      nextBatch: () => batchOf(sampler.take(cfg.batch_size).map((i) => train[i]!)),
      sizeOf: (b) => b.B * b.T,
      loss: lossOf,
      evaluate() {
        model.eval();
        const acc: Record<string, number> = { val_loss: 0, chosen_reward: 0, rejected_reward: 0, margin: 0, accuracy: 0, kl: 0, nll_chosen: 0 };
        let n = 0;
        try {
          for (let s = 0, k = 0; s < val.length && k < cfg.eval_iters; s += cfg.batch_size, k++) {
            const b = batchOf(val.slice(s, s + cfg.batch_size));
            noGrad(() => tidy(() => {
              const { loss, parts } = lossOf(b);
              acc['val_loss']! += loss.item() * b.n;
              for (const [k2, t] of Object.entries(parts)) acc[k2]! += t.item() * b.n;
              const { x, y } = batchTensors(b, backend);
              const pl = logitsOf(model, x);
              acc['kl']! += tokenKL(pl, logitsOf(ref, x), y) * b.n;
              acc['nll_chosen']! += crossEntropy(slice(pl, 0, 0, b.n), slice(y, 0, 0, b.n), { ignoreIndex: IGNORE }).item() * b.n;
            }));
            n += b.n;
          }
        } finally {
          model.train();
        }
        return Object.fromEntries(Object.entries(acc).map(([k, v]) => [k, v / Math.max(n, 1)]));
      },
      checkpoint: () => ({ config: policyConfig(model, pol.hfConfig), model: policyTensors(model, lora), tokenizerFiles: pol.tokenizerFiles }),
      plots: (records) => alignmentPlot(records, ['chosen_reward', 'rejected_reward', 'margin', 'accuracy', 'kl'], `${cfg.dpo_loss.toUpperCase()} (β ${cfg.beta}): implicit rewards, margin, accuracy, KL`),
      state: () => ({ sampler: sampler.state() }),
      setState: (s) => sampler.setState(s['sampler']),
      dispose: () => ref.dispose(),
    };
  },
};
