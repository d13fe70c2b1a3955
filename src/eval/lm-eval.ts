// Language-model evaluation: sliding-window perplexity and bits per byte of a text (as Hugging
// Face's "Perplexity of fixed-length models" guide computes it), and multiple-choice scoring by
// log-likelihood with acc and acc_norm (as EleutherAI's lm-evaluation-harness defines them).
// Works on any causal model whose forward gives (1, T, V) logits: attn's GPT and every decoder
// family attn loads.
import { logSoftmax, noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';

/** What scoring needs of a model. */
export interface ScoringModel {
  forward(idx: Tensor): { logits: Tensor };
  config: { block_size: number; vocab_size: number };
  parameters(): Tensor[];
}

/** log P(ids[i+1] | ids[0..i]) for i = 0 … n−2, natural log, from one forward pass (n ≤ block_size). */
export function tokenLogprobs(model: ScoringModel, ids: readonly number[]): number[] {
  if (ids.length < 2) return [];
  if (ids.length > model.config.block_size) throw new Error(`tokenLogprobs: ${ids.length} tokens exceed the model's context of ${model.config.block_size}`);
  const backend = model.parameters()[0]!.backend;
  const V = model.config.vocab_size;
  return noGrad(() => tidy(() => {
    const { logits } = model.forward(tensor([...ids], { backend, dtype: 'int32', shape: [1, ids.length] })); // (1, T, V)
    const lp = logSoftmax(logits, -1).data();
    const out: number[] = [];
    for (let i = 0; i + 1 < ids.length; i++) out.push(lp[i * V + ids[i + 1]!]!);
    return out;
  }));
}

export interface PerplexityResult {
  /** exp(mean negative log-likelihood per scored token). */
  ppl: number;
  /** Mean negative log-likelihood per scored token, in nats. */
  nll: number;
  /** Total negative log-likelihood in nats. */
  nll_sum: number;
  /** Tokens scored (each once): all but the first when stride < max_length. */
  tokens: number;
  /** Windows (forward passes). */
  windows: number;
  /** Positions of the tokens not scored (the first; each window's first when stride = max_length). */
  unscored: number[];
  max_length: number;
  stride: number;
}

/**
 * Sliding-window perplexity, the Hugging Face guide's loop: windows of max_length tokens start
 * every `stride` tokens; each window scores only the tokens the previous window did not (its last
 * end_loc − prev_end_loc), with the rest as context. With stride < max_length every token after the
 * first is scored once, with at least max_length − stride tokens of context (fewer at the start);
 * with stride = max_length the windows are disjoint and, as in the guide, each window's first token
 * goes unscored. The mean is weighted by tokens (the guide's current form).
 */
export function slidingWindowPerplexity(model: ScoringModel, ids: readonly number[], opts: { maxLength?: number; stride?: number } = {}): PerplexityResult {
  const maxLength = opts.maxLength ?? model.config.block_size;
  const stride = opts.stride ?? maxLength;
  if (!(Number.isInteger(maxLength) && maxLength >= 2 && maxLength <= model.config.block_size)) throw new Error(`perplexity: max_length must be an integer in [2, ${model.config.block_size}] (the model's context), got ${maxLength}`);
  if (!(Number.isInteger(stride) && stride >= 1 && stride <= maxLength)) throw new Error(`perplexity: stride must be an integer in [1, max_length ${maxLength}], got ${stride}`);
  if (ids.length < 2) throw new Error(`perplexity: the text has ${ids.length} token${ids.length === 1 ? '' : 's'}; at least 2 are needed`);
  let nllSum = 0;
  let tokens = 0;
  let windows = 0;
  let prevEnd = 0;
  const unscored: number[] = [];
  for (let begin = 0; begin < ids.length; begin += stride) {
    const end = Math.min(begin + maxLength, ids.length);
    const trgLen = end - prevEnd; // targets new to this window
    const lp = tokenLogprobs(model, ids.slice(begin, end)); // lp[j] scores ids[begin + j + 1]
    // The targets are ids[end − trgLen … end − 1]; the window's first token has no prediction.
    if (end - trgLen <= begin) unscored.push(begin);
    for (let t = Math.max(end - trgLen, begin + 1); t < end; t++) {
      nllSum -= lp[t - begin - 1]!;
      tokens++;
    }
    windows++;
    prevEnd = end;
    if (end === ids.length) break;
  }
  const nll = nllSum / tokens;
  return { ppl: Math.exp(nll), nll, nll_sum: nllSum, tokens, windows, unscored, max_length: maxLength, stride };
}

/** Bits per UTF-8 byte: a total negative log-likelihood (nats) over the bytes it covers. */
export const bitsPerByte = (nllSumNats: number, bytes: number): number => nllSumNats / Math.LN2 / bytes;

/** One multiple-choice item: a context, its choices, the index of the right one. */
export interface ChoiceItem {
  context: string;
  choices: string[];
  label: number;
}

export interface ChoiceScore {
  /** Sum of the log-probabilities of each choice's tokens given the context. */
  loglikelihoods: number[];
  /** Whether each choice is the greedy continuation (every token the argmax). */
  greedy: boolean[];
  pred: number;
  pred_norm: number;
}

/**
 * log P(continuation | context): the continuation's token log-probabilities summed, as
 * lm-evaluation-harness's loglikelihood request does. Longer than the context window, the input is
 * cut from the left (the harness's (context + continuation)[−(max_length + 1):]).
 */
export function loglikelihood(model: ScoringModel, contextIds: readonly number[], continuationIds: readonly number[]): { ll: number; greedy: boolean } {
  if (contextIds.length === 0) throw new Error('loglikelihood: the context has no tokens (an empty context needs a start token)');
  if (continuationIds.length === 0) throw new Error('loglikelihood: the continuation has no tokens');
  const T = model.config.block_size;
  const all = [...contextIds, ...continuationIds];
  const input = all.slice(-(T + 1), -1); // what the model reads
  const target = all.slice(-(T + 1)).slice(1);
  if (continuationIds.length > input.length) throw new Error(`loglikelihood: a continuation of ${continuationIds.length} tokens does not fit the model's context of ${T}`);
  const backend = model.parameters()[0]!.backend;
  const V = model.config.vocab_size;
  return noGrad(() => tidy(() => {
    const { logits } = model.forward(tensor(input, { backend, dtype: 'int32', shape: [1, input.length] }));
    const lp = logSoftmax(logits, -1).data();
    let ll = 0;
    let greedy = true;
    for (let i = input.length - continuationIds.length; i < input.length; i++) {
      const row = i * V;
      const want = target[i]!;
      ll += lp[row + want]!;
      for (let v = 0; v < V && greedy; v++) if (lp[row + v]! > lp[row + want]!) greedy = false;
    }
    return { ll, greedy };
  }));
}

/**
 * The harness's split of a (context, continuation) pair into tokens: trailing spaces of the
 * context move to the continuation, the pair is encoded whole, and the continuation's tokens are
 * those after the context's own encoding (so a merge across the boundary stays with the choice).
 */
export function encodePair(encode: (s: string) => number[], context: string, continuation: string): [number[], number[]] {
  const spaces = context.length - context.trimEnd().length;
  if (spaces > 0) {
    continuation = context.slice(context.length - spaces) + continuation;
    context = context.slice(0, context.length - spaces);
  }
  const whole = encode(context + continuation);
  const ctx = encode(context);
  return [ctx, whole.slice(ctx.length)];
}

/** Code points of a string (Python's len, which the harness's acc_norm divides by). */
export const charLength = (s: string): number => [...s].length;

/**
 * Scores one item: each choice's continuation is `delimiter + choice` (the harness's
 * target_delimiter, default " "); pred is the argmax of the log-likelihoods (acc), pred_norm the
 * argmax of log-likelihood / the choice's length in characters (acc_norm; ties: the first).
 */
export function scoreChoices(model: ScoringModel, encode: (s: string) => number[], item: ChoiceItem, delimiter = ' '): ChoiceScore {
  const lls: number[] = [];
  const greedy: boolean[] = [];
  for (const choice of item.choices) {
    const [ctx, cont] = encodePair(encode, item.context, delimiter + choice);
    const r = loglikelihood(model, ctx, cont);
    lls.push(r.ll);
    greedy.push(r.greedy);
  }
  const argmax = (xs: number[]): number => xs.reduce((b, x, i) => (x > xs[b]! ? i : b), 0);
  return { loglikelihoods: lls, greedy, pred: argmax(lls), pred_norm: argmax(lls.map((ll, i) => ll / charLength(item.choices[i]!))) };
}

/** Parses a JSONL of {context, choices, label}; errors name the line and the field. */
export function parseChoiceItems(text: string, source = 'input'): ChoiceItem[] {
  const out: ChoiceItem[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${source}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw new Error(`${where}: not a JSON object`);
    }
    const o = v as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error(`${where}: not a JSON object`);
    if (typeof o['context'] !== 'string') throw new Error(`${where}: 'context' must be a string`);
    const choices = o['choices'];
    if (!Array.isArray(choices) || choices.length < 2 || choices.some((c) => typeof c !== 'string' || c === '')) throw new Error(`${where}: 'choices' must be an array of at least 2 non-empty strings`);
    const label = o['label'];
    if (!Number.isInteger(label) || (label as number) < 0 || (label as number) >= choices.length) throw new Error(`${where}: 'label' must be an integer index into choices (0 to ${choices.length - 1}), got ${JSON.stringify(label)}`);
    out.push({ context: o['context'] as string, choices: choices as string[], label: label as number });
  });
  if (out.length === 0) throw new Error(`${source}: no items`);
  return out;
}

export interface ChoiceEval {
  acc: number;
  acc_norm: number;
  /** Standard errors of the two accuracies (sample standard deviation / √n, as the harness reports). */
  acc_stderr: number;
  acc_norm_stderr: number;
  n: number;
}

export function summariseChoices(items: readonly ChoiceItem[], scores: readonly ChoiceScore[]): ChoiceEval {
  const n = items.length;
  const acc = scores.filter((s, i) => s.pred === items[i]!.label).length / n;
  const accNorm = scores.filter((s, i) => s.pred_norm === items[i]!.label).length / n;
  // The harness's mean_stderr: sqrt(p(1−p)·n/(n−1) / n).
  const se = (p: number): number => (n > 1 ? Math.sqrt((p * (1 - p)) / (n - 1)) : NaN);
  return { acc, acc_norm: accNorm, acc_stderr: se(acc), acc_norm_stderr: se(accNorm), n };
}
