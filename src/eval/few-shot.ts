// Few-shot prompting (Brown et al. 2020): a task defined only in the prompt. k labelled
// demonstrations, then the query, each written with a template such as
//   "Review: {text}\nSentiment: {label}\n\n"
// and the answer is the label whose continuation the language model finds more probable
// (summed log-probability of its tokens after "Sentiment:"). No weights change.
import { logSoftmax, noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import type { Backend } from '../backend/backend.js';
import { Generator } from '../tensor/index.js';
import { argmaxLogits, softmaxLogits } from '../generate/sampling.js';

/** What scoring needs of a causal language model. */
export interface ScoringModel {
  forward(idx: Tensor): { logits: Tensor };
  readonly config: { block_size: number; vocab_size: number };
}

export interface LabeledText {
  text: string;
  label: number;
}

/** Rows of a `sentence<TAB>label` TSV (a header row whose label is not an integer is skipped). */
export function readLabeledTsv(text: string, what = 'TSV'): LabeledText[] {
  const out: LabeledText[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const tab = line.lastIndexOf('\t');
    const label = Number(line.slice(tab + 1).trim());
    if (tab < 0 || !Number.isInteger(label)) {
      if (i === 0) return; // header
      throw new Error(`${what}: line ${i + 1} is not 'sentence<TAB>integer label'`);
    }
    out.push({ text: line.slice(0, tab).trim(), label });
  });
  return out;
}

export interface FewShotOptions {
  /** Demonstrations per query. */
  k: number;
  /** With {text} and {label}; one example (demonstration or query) per use. */
  template: string;
  /** Between examples. */
  separator: string;
  /** The label words, label 0 first. */
  labels: readonly string[];
  seed: number;
  /**
   * Also answer with contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): each
   * label's probability (normalised over the labels) divided by its mean probability when the
   * same demonstrations are followed by content-free queries ("N/A", "", "[MASK]"). It removes
   * the prompt's bias towards one label, which is what keeps small models at one answer.
   */
  calibrate?: boolean;
  /**
   * In-context recall: one of the k demonstrations (at a random place) is the query itself with
   * its label, so the answer can be copied from the prompt, as an induction head copies what
   * followed the earlier occurrence of the current token (Olsson et al. 2022). It asks for no
   * knowledge of the task, only for using the context.
   */
  recall?: boolean;
}

/** The content-free queries of contextual calibration (Zhao et al. 2021, section 5). */
export const CONTENT_FREE_QUERIES = ['N/A', '', '[MASK]'] as const;

export const SST2_TEMPLATE = 'Review: {text}\nSentiment: {label}';

/** The prompt before the answer: k demonstrations then the query with its label cut off. */
export function fewShotPrompt(demos: readonly LabeledText[], query: string, o: Pick<FewShotOptions, 'template' | 'separator' | 'labels'>): string {
  const cut = o.template.indexOf('{label}');
  if (cut < 0 || !o.template.includes('{text}')) throw new Error(`few-shot template must hold {text} and {label}, got ${JSON.stringify(o.template)}`);
  if (o.template.indexOf('{text}') > cut) throw new Error('few-shot template: {text} must come before {label}');
  const fill = (t: string, l: string): string => o.template.replace('{text}', t).replace('{label}', l);
  const shots = demos.map((d) => {
    const l = o.labels[d.label];
    if (l === undefined) throw new Error(`demonstration label ${d.label} has no label word (labels: ${o.labels.join(', ')})`);
    return fill(d.text, l) + o.separator;
  });
  // The space before the label goes with the answer (BPE vocabularies hold ' positive', not 'positive').
  return shots.join('') + o.template.slice(0, cut).replace(/\s+$/, '').replace('{text}', query);
}

/** The answers scored after the prompt: the whitespace before {label} in the template, then each label word. */
export function answerStrings(o: Pick<FewShotOptions, 'template' | 'labels'>): string[] {
  const ws = /\s*$/.exec(o.template.slice(0, o.template.indexOf('{label}')))![0];
  return o.labels.map((l) => ws + l);
}

/** The length of the longest common prefix of two id lists. */
function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/**
 * Summed log-probability of each candidate continuation after `context`, from the ids of
 * context + candidate (the candidate's tokens are those past the common prefix with the context's
 * ids, so merges across the boundary are scored as the model would see them). The prompt is cut
 * from the left to fit the model's context.
 */
export function scoreContinuations(model: ScoringModel, backend: Backend, encode: (s: string) => number[], context: string, candidates: readonly string[]): number[] {
  const ctx = encode(context);
  const T = model.config.block_size;
  const full = candidates.map((c) => encode(context + c));
  // Common case: each answer is one token after the context's own ids, so one forward scores all.
  if (ctx.length >= 1 && full.every((ids) => ids.length === ctx.length + 1 && commonPrefix(ctx, ids) === ctx.length)) {
    const x = ctx.slice(Math.max(0, ctx.length - T));
    return noGrad(() => tidy(() => {
      const lp = logSoftmax(model.forward(tensor(x, { backend, dtype: 'int32', shape: [1, x.length] })).logits, -1).data();
      const V = model.config.vocab_size;
      return full.map((ids) => lp[(x.length - 1) * V + ids[ids.length - 1]!]!);
    }));
  }
  return candidates.map((c, ci) => {
    let ids = full[ci]!;
    let start = commonPrefix(ctx, ids);
    if (start === ids.length) start = ids.length - 1; // the candidate merged into the context: score its last token
    if (ids.length > T + 1) {
      const drop = ids.length - (T + 1);
      ids = ids.slice(drop);
      start = Math.max(1, start - drop);
    }
    return noGrad(() => tidy(() => {
      const x = ids.slice(0, -1);
      const lp = logSoftmax(model.forward(tensor(x, { backend, dtype: 'int32', shape: [1, x.length] })).logits, -1).data();
      const V = model.config.vocab_size;
      let s = 0;
      for (let i = start; i < ids.length; i++) s += lp[(i - 1) * V + ids[i]!]!;
      return s;
    }));
  });
}

export interface FewShotResult {
  k: number;
  n: number;
  accuracy: number;
  /** Share of the queries answered with label 1 (a model that always says one label shows 0 or 1). */
  predicted_1: number;
  /** Mean demonstrations that fit in the model's context (≤ k). */
  mean_shots: number;
  /** With `calibrate`: the same queries answered after contextual calibration. */
  calibrated?: { accuracy: number; predicted_1: number };
}

/**
 * Contextual calibration's answer: argmax over labels of p(label | query) / p̄(label), p̄ the mean
 * over the content-free queries of the label probabilities (all normalised over the labels).
 */
export function calibratedAnswer(queryScores: readonly number[], contentFreeScores: readonly (readonly number[])[]): number {
  // Scores are summed log-probabilities: their softmax is each label's probability among the labels.
  const p = softmaxLogits(queryScores);
  const free = contentFreeScores.map((c) => softmaxLogits(c));
  const mean = p.map((_, i) => free.reduce((s, f) => s + f[i]!, 0) / free.length);
  return argmaxLogits(p.map((v, i) => v / mean[i]!));
}

/**
 * Accuracy on `queries` with k demonstrations drawn at random (seeded, per query) from `pool`;
 * demonstrations that do not fit the model's context are dropped from the front.
 */
export function fewShotAccuracy(model: ScoringModel, backend: Backend, encode: (s: string) => number[], queries: readonly LabeledText[], pool: readonly LabeledText[], o: FewShotOptions): FewShotResult {
  if (o.k > 0 && pool.length < o.k) throw new Error(`few-shot: ${o.k} demonstrations asked for, but the pool holds ${pool.length}`);
  const gen = new Generator(o.seed);
  const candidates = answerStrings(o);
  let correct = 0;
  let ones = 0;
  let shots = 0;
  let calCorrect = 0;
  let calOnes = 0;
  for (const q of queries) {
    const picked = new Set<number>();
    while (picked.size < o.k) picked.add(gen.randint(pool.length));
    let demos = [...picked].map((i) => pool[i]!);
    // Drop demonstrations from the front until the prompt and the longest answer fit.
    const longest = Math.max(...candidates.map((c) => encode(c).length));
    // Estimate from the pieces' lengths (BPE merges across the joins only shorten it), then check exactly.
    const pieceLen = demos.map((d) => encode(fewShotPrompt([d], '', o)).length);
    let total = encode(fewShotPrompt([], q.text, o)).length + pieceLen.reduce((s, v) => s + v, 0);
    while (demos.length > 0 && total + longest > model.config.block_size + 1) {
      total -= pieceLen.shift()!;
      demos = demos.slice(1);
    }
    while (demos.length > 0 && encode(fewShotPrompt(demos, q.text, o)).length + longest > model.config.block_size + 1) demos = demos.slice(1);
    if (o.recall && demos.length > 0) {
      // The query takes a random demonstration's place; then others go from the front until it fits.
      let at = gen.randint(demos.length);
      demos = demos.map((d, i) => (i === at ? q : d));
      while (demos.length > 1 && encode(fewShotPrompt(demos, q.text, o)).length + longest > model.config.block_size + 1) {
        const drop = at === 0 ? 1 : 0;
        demos = demos.filter((_, i) => i !== drop);
        if (drop < at) at--;
      }
    }
    shots += demos.length;
    const scores = scoreContinuations(model, backend, encode, fewShotPrompt(demos, q.text, o), candidates);
    const best = argmaxLogits(scores);
    if (best === q.label) correct++;
    if (best === 1) ones++;
    if (o.calibrate) {
      // The same demonstrations; scoreContinuations cuts a prompt that is too long from the left.
      const free = CONTENT_FREE_QUERIES.map((c) => scoreContinuations(model, backend, encode, fewShotPrompt(demos, c, o), candidates));
      const cal = calibratedAnswer(scores, free);
      if (cal === q.label) calCorrect++;
      if (cal === 1) calOnes++;
    }
  }
  const n = queries.length;
  return {
    k: o.k, n, accuracy: correct / n, predicted_1: ones / n, mean_shots: shots / n,
    ...(o.calibrate ? { calibrated: { accuracy: calCorrect / n, predicted_1: calOnes / n } } : {}),
  };
}
