// The objectives of alignment, as functions over tensors (autograd through each): the summed
// log-probability of a response, DPO and IPO against a frozen reference, the Bradley–Terry
// loss of a reward model, PPO's clipped policy and value losses, generalized advantage
// estimation and the per-token KL penalty with its fixed or adaptive coefficient.
// Formulas: DPO, Rafailov et al. 2023 eq. 7; IPO, Azar et al. 2023 eq. 17 (the sampled form);
// Bradley–Terry, InstructGPT (Ouyang et al. 2022) eq. 1; PPO, Schulman et al. 2017 eq. 7 and
// GAE, Schulman et al. 2016 eq. 16; the KL-shaped reward and the adaptive controller, Ziegler
// et al. 2019 §2.2. Every loss is composed of ops whose backward is already checked (gradcheck).
import {
  abs, add, crossEntropy, div, exp, log, maximum, mean, minimum, mul, neg, reshape, square, sub, sum, type Tensor,
} from '../tensor/index.js';

/** Targets that carry no loss (prompt tokens, padding): PyTorch's ignore_index. */
export const IGNORE = -100;

/**
 * log π(y_t | x, y_<t) of every target: logits (B, T, V), targets int32 (B, T) with IGNORE where
 * the token is not scored. Returns (B, T), zero at ignored positions (and no gradient there).
 */
export function tokenLogProbs(logits: Tensor, targets: Tensor): Tensor {
  return neg(crossEntropy(logits, targets, { ignoreIndex: IGNORE, reduction: 'none' }));
}

/** Σ_t log π(y_t | ...) over the scored targets of each row: (B, T, V), (B, T) → (B,). */
export function sequenceLogProbs(logits: Tensor, targets: Tensor): Tensor {
  return sum(tokenLogProbs(logits, targets), 1);
}

/** log σ(x), stable for large |x|: min(x, 0) − log(1 + e^−|x|). */
export function logSigmoid(x: Tensor): Tensor {
  return sub(minimum(x, 0), log(add(exp(neg(abs(x))), 1)));
}

export type PreferenceLossKind = 'dpo' | 'ipo';

export interface PreferenceLoss {
  /** Mean over the pairs (scalar). */
  loss: Tensor;
  /** β (log π(y_w) − log π_ref(y_w)) per pair: DPO's implicit reward of the chosen response. */
  chosenRewards: Tensor;
  /** The same for the rejected response. */
  rejectedRewards: Tensor;
}

/**
 * DPO (sigmoid): −log σ(β [(π_w − ref_w) − (π_l − ref_l)]), or IPO: ([(π_w − ref_w) − (π_l −
 * ref_l)] − 1/(2β))², each the mean over pairs. The four inputs are (N,) summed log-probs of the
 * chosen (w) and rejected (l) responses under the policy and the frozen reference.
 */
export function preferenceLoss(policyChosen: Tensor, policyRejected: Tensor, refChosen: Tensor, refRejected: Tensor, beta: number, kind: PreferenceLossKind = 'dpo'): PreferenceLoss {
  if (!(beta > 0) || !Number.isFinite(beta)) throw new RangeError(`preferenceLoss: beta must be a positive finite number, got ${beta}`);
  const chosenRatio = sub(policyChosen, refChosen);
  const rejectedRatio = sub(policyRejected, refRejected);
  const h = sub(chosenRatio, rejectedRatio);
  const loss = kind === 'ipo' ? mean(square(sub(h, 1 / (2 * beta)))) : mean(neg(logSigmoid(mul(h, beta))));
  return { loss, chosenRewards: mul(chosenRatio, beta), rejectedRewards: mul(rejectedRatio, beta) };
}

/** The reward model's pairwise loss: mean −log σ(r_chosen − r_rejected) over (N,) scores. */
export function bradleyTerryLoss(chosen: Tensor, rejected: Tensor): Tensor {
  return mean(neg(logSigmoid(sub(chosen, rejected))));
}

/** Σ x·mask / Σ mask (a mean over the valid positions); mask holds 0/1 and carries no gradient. */
export function maskedMean(x: Tensor, mask: Tensor): Tensor {
  return div(sum(mul(x, mask)), maximum(sum(mask), 1));
}

/**
 * PPO's clipped surrogate, negated to be minimized: −mean_t min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t)
 * with ρ_t = exp(log π(a_t) − log π_old(a_t)), over the positions where mask is 1.
 */
export function ppoPolicyLoss(logProbs: Tensor, oldLogProbs: Tensor, advantages: Tensor, mask: Tensor, clip: number): Tensor {
  const ratio = exp(sub(logProbs, oldLogProbs));
  const clipped = minimum(maximum(ratio, 1 - clip), 1 + clip);
  return maskedMean(neg(minimum(mul(ratio, advantages), mul(clipped, advantages))), mask);
}

/**
 * The value loss with the value clipping of OpenAI's PPO implementations (Ziegler et al.'s
 * lm-human-preferences among them): ½ mean_t max((V − R)², (V_old + clip(V − V_old, ±c) − R)²).
 * clip 0 or less: the plain ½ mean (V − R)².
 */
export function ppoValueLoss(values: Tensor, oldValues: Tensor, returns: Tensor, mask: Tensor, clip: number): Tensor {
  const plain = square(sub(values, returns));
  if (!(clip > 0)) return mul(maskedMean(plain, mask), 0.5);
  const clippedV = add(oldValues, minimum(maximum(sub(values, oldValues), -clip), clip));
  return mul(maskedMean(maximum(plain, square(sub(clippedV, returns))), mask), 0.5);
}

/**
 * Generalized advantage estimation over one episode of n steps: δ_t = r_t + γ V_{t+1} − V_t
 * (V_n = 0: the episode ends), A_t = Σ_k (γλ)^k δ_{t+k}, returns R_t = A_t + V_t.
 */
export function gae(rewards: ArrayLike<number>, values: ArrayLike<number>, gamma: number, lambda: number): { advantages: Float64Array; returns: Float64Array } {
  const n = rewards.length;
  if (values.length !== n) throw new Error(`gae: ${n} rewards but ${values.length} values`);
  const advantages = new Float64Array(n);
  const returns = new Float64Array(n);
  let next = 0;
  for (let t = n - 1; t >= 0; t--) {
    const nextValue = t + 1 < n ? values[t + 1]! : 0;
    const delta = rewards[t]! + gamma * nextValue - values[t]!;
    next = delta + gamma * lambda * next;
    advantages[t] = next;
    returns[t] = next + values[t]!;
  }
  return { advantages, returns };
}

/**
 * The KL-shaped per-token rewards of Ziegler et al. 2019: r_t = −c (log π(a_t) − log π_ref(a_t)),
 * plus the score of the whole response at its last token.
 */
export function klShapedRewards(logProbs: ArrayLike<number>, refLogProbs: ArrayLike<number>, score: number, klCoef: number): Float64Array {
  const n = logProbs.length;
  if (refLogProbs.length !== n) throw new Error(`klShapedRewards: ${n} log-probs but ${refLogProbs.length} reference log-probs`);
  const r = new Float64Array(n);
  for (let t = 0; t < n; t++) r[t] = -klCoef * (logProbs[t]! - refLogProbs[t]!);
  if (n > 0) r[n - 1]! += score;
  return r;
}

/** Normalizes advantages to mean 0 and standard deviation 1 over the batch (as PPO2 does). */
export function whiten(xs: Float64Array): Float64Array {
  const n = xs.length;
  if (n < 2) return Float64Array.from(xs, () => 0);
  let m = 0;
  for (const x of xs) m += x;
  m /= n;
  let v = 0;
  for (const x of xs) v += (x - m) ** 2;
  const sd = Math.sqrt(v / (n - 1));
  return Float64Array.from(xs, (x) => (x - m) / (sd + 1e-8));
}

/** The KL coefficient: fixed, or adapted toward a target KL (Ziegler et al. 2019 §2.2). */
export interface KLController {
  value: number;
  /** After a rollout batch: its mean KL(π‖π_ref) per response and the episodes it held. */
  update(kl: number, steps: number): void;
}

export class FixedKLController implements KLController {
  constructor(public value: number) {}
  update(): void {}
}

/**
 * β_{t+1} = β_t (1 + K_β e_t), e_t = clip(KL_t / KL_target − 1, −0.2, 0.2), K_β = steps / horizon:
 * the proportional controller of Ziegler et al. 2019 (their horizon 10000 episodes).
 */
export class AdaptiveKLController implements KLController {
  constructor(public value: number, readonly target: number, readonly horizon: number) {
    if (!(target > 0)) throw new RangeError(`AdaptiveKLController: the target KL must be positive, got ${target}`);
    if (!(horizon > 0)) throw new RangeError(`AdaptiveKLController: the horizon must be positive, got ${horizon}`);
  }
  update(kl: number, steps: number): void {
    const error = Math.min(Math.max(kl / this.target - 1, -0.2), 0.2);
    this.value *= 1 + (error * steps) / this.horizon;
  }
}

/** (N,) → a (N,) view as a column, for broadcasting a per-sequence value over tokens. */
export const column = (x: Tensor): Tensor => reshape(x, [x.shape[0]!, 1]);
