// Corpus BLEU computed the way sacreBLEU does by default (BLEU|tok:13a|smooth:exp|case:mixed|eff:no):
// mteval-v13a tokenisation, n-grams up to 4, clipped counts summed over the corpus, the brevity
// penalty from the closest reference length per segment, and NIST "exp" smoothing.

export type SmoothMethod = 'exp' | 'none' | 'floor' | 'add-k';

export interface BleuOptions {
  /** Lowercase hypotheses and references first (default false). */
  lowercase?: boolean;
  /** '13a' (default) or 'none' (split on whitespace only). */
  tokenize?: '13a' | 'none';
  /** Default 'exp'. */
  smoothMethod?: SmoothMethod;
  /** For 'floor' (default 0.1) and 'add-k' (default 1). */
  smoothValue?: number;
  /** Default 4. */
  maxNgramOrder?: number;
  /** Average only over orders up to the last with any hypothesis n-grams (default false, as for corpus BLEU). */
  effectiveOrder?: boolean;
}

export interface BleuResult {
  /** 0..100. */
  bleu: number;
  /** Per-order precisions in percent (smoothed). */
  precisions: number[];
  bp: number;
  sys_len: number;
  ref_len: number;
  /** Clipped matches per order. */
  counts: number[];
  /** Hypothesis n-grams per order. */
  totals: number[];
}

// Python's str.isspace() set (what str.split()/rstrip() use), which differs slightly from JS \s.
const PY_WS = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_WS_RUN = new RegExp(`[${PY_WS}]+`, 'gu');
const PY_WS_TRAIL = new RegExp(`[${PY_WS}]+$`, 'u');

/** Python's ' '.join(s.split()). */
function squeeze(s: string): string {
  return s.replace(PY_WS_RUN, ' ').replace(/^ | $/g, '');
}

// mteval-v13a's punctuation rules. Class 1: ASCII symbols except ' , - . (space..&, (..+, /, :..@, [..`, {..~).
const SYMBOL = /([\x20-\x26\x28-\x2b\x2f\x3a-\x40\x5b-\x60\x7b-\x7e])/gu;
const PERIOD_COMMA_AFTER_NONDIGIT = /([^0-9])([.,])/gu;
const PERIOD_COMMA_BEFORE_NONDIGIT = /([.,])([^0-9])/gu;
const DASH_AFTER_DIGIT = /([0-9])(-)/gu;

/** mteval-v13a tokenisation (sacreBLEU's '13a'); returns the tokens joined by single spaces. */
export function tokenize13a(line: string): string {
  let s = line
    .replaceAll('<skipped>', '')
    .replaceAll('-\n', '')
    .replaceAll('\n', ' ')
    .replaceAll('&quot;', '"')
    .replaceAll('&amp;', '&')
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>');
  s = ` ${s} `;
  s = s.replace(SYMBOL, ' $1 ');
  s = s.replace(PERIOD_COMMA_AFTER_NONDIGIT, '$1 $2 ');
  s = s.replace(PERIOD_COMMA_BEFORE_NONDIGIT, ' $1 $2');
  s = s.replace(DASH_AFTER_DIGIT, '$1 $2 ');
  return squeeze(s);
}

function preprocess(sent: string, opts: BleuOptions): string[] {
  let s = opts.lowercase ? sent.toLowerCase() : sent;
  s = s.replace(PY_WS_TRAIL, '');
  const tok = (opts.tokenize ?? '13a') === '13a' ? tokenize13a(s) : squeeze(s);
  return tok === '' ? [] : tok.split(' ');
}

/** Counts of all 1..maxN-grams, keyed by order and the tokens joined by spaces (tokens never hold a space). */
function ngramCounts(tokens: readonly string[], maxN: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let n = 1; n <= maxN; n++) {
    for (let i = 0; i + n <= tokens.length; i++) {
      const key = `${n}:${tokens.slice(i, i + n).join(' ')}`;
      m.set(key, (m.get(key) ?? 0) + 1);
    }
  }
  return m;
}

/** The reference length closest to hypLen; ties go to the shorter reference. */
export function closestRefLength(hypLen: number, refLens: readonly number[]): number {
  let bestDiff = -1;
  let best = -1;
  for (const r of refLens) {
    const d = Math.abs(hypLen - r);
    if (bestDiff === -1 || d < bestDiff) {
      bestDiff = d;
      best = r;
    } else if (d === bestDiff && r < best) best = r;
  }
  return best;
}

const pyLog = (x: number): number => (x === 0 ? -9999999999 : Math.log(x));

/** BLEU from summed statistics (sacreBLEU's compute_bleu). */
export function bleuFromStats(
  counts: readonly number[],
  totals: readonly number[],
  sysLen: number,
  refLen: number,
  opts: BleuOptions = {},
): BleuResult {
  const method = opts.smoothMethod ?? 'exp';
  const maxN = opts.maxNgramOrder ?? 4;
  const value = opts.smoothValue ?? (method === 'floor' ? 0.1 : 1);
  const correct = [...counts];
  const total = [...totals];
  const bp = sysLen < refLen ? (sysLen > 0 ? Math.exp(1 - refLen / sysLen) : 0) : 1;
  const precisions: number[] = new Array<number>(maxN).fill(0);
  const result = (bleu: number): BleuResult => ({ bleu, precisions, bp, sys_len: sysLen, ref_len: refLen, counts: [...counts], totals: [...totals] });
  // No matches at all: 0, with unsmoothed zero precisions.
  if (!correct.some((c) => c !== 0)) return result(0);
  let smooth = 1;
  let effOrder = maxN;
  for (let n = 1; n <= maxN; n++) {
    if (method === 'add-k' && n > 1) {
      correct[n - 1]! += value;
      total[n - 1]! += value;
    }
    if (total[n - 1] === 0) break;
    if (opts.effectiveOrder) effOrder = n;
    if (correct[n - 1] === 0) {
      if (method === 'exp') {
        smooth *= 2;
        precisions[n - 1] = 100 / (smooth * total[n - 1]!);
      } else if (method === 'floor') precisions[n - 1] = (100 * value) / total[n - 1]!;
    } else precisions[n - 1] = (100 * correct[n - 1]!) / total[n - 1]!;
  }
  let sum = 0;
  for (let i = 0; i < effOrder; i++) sum += pyLog(precisions[i]!);
  return result(bp * Math.exp(sum / effOrder));
}

/**
 * Corpus BLEU. refs is one reference stream (string[] aligned with hyps) or several streams
 * (string[][], refs[k][i] is reference k of segment i, as in sacreBLEU). Empty references are
 * skipped for that segment; a segment with none left is an error.
 */
export function corpusBleu(hyps: readonly string[], refs: readonly string[] | readonly (readonly string[])[], opts: BleuOptions = {}): BleuResult {
  const streams: readonly (readonly string[])[] = refs.length > 0 && typeof refs[0] === 'string' ? [refs as readonly string[]] : (refs as readonly (readonly string[])[]);
  if (streams.length === 0) throw new Error('corpusBleu: no references');
  for (const [k, s] of streams.entries()) {
    if (s.length !== hyps.length) throw new Error(`corpusBleu: ${hyps.length} hypotheses but reference stream ${k + 1} has ${s.length} lines`);
  }
  const maxN = opts.maxNgramOrder ?? 4;
  const counts: number[] = new Array<number>(maxN).fill(0);
  const totals: number[] = new Array<number>(maxN).fill(0);
  let sysLen = 0;
  let refLen = 0;
  for (let i = 0; i < hyps.length; i++) {
    const refMax = new Map<string, number>();
    const refLens: number[] = [];
    for (const s of streams) {
      const r = s[i]!;
      if (!r) continue;
      const toks = preprocess(r, opts);
      refLens.push(toks.length);
      for (const [g, c] of ngramCounts(toks, maxN)) if (c > (refMax.get(g) ?? 0)) refMax.set(g, c);
    }
    if (refLens.length === 0) throw new Error(`corpusBleu: segment ${i + 1} has no non-empty reference`);
    const hypToks = preprocess(hyps[i]!, opts);
    sysLen += hypToks.length;
    refLen += closestRefLength(hypToks.length, refLens);
    for (const [g, c] of ngramCounts(hypToks, maxN)) {
      const n = Number(g.slice(0, g.indexOf(':')));
      totals[n - 1]! += c;
      counts[n - 1]! += Math.min(c, refMax.get(g) ?? 0);
    }
  }
  return bleuFromStats(counts, totals, sysLen, refLen, opts);
}
