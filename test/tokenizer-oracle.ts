// Our tokenizer against @huggingface/tokenizers on a list of texts: encode (ids) and decode of the
// oracle's ids (special tokens skipped), counting mismatches and keeping the first for the message.
import type { Tokenizer as Oracle } from '@huggingface/tokenizers';
import type { HfTokenizer } from '../src/tokenizers/index.js';

export interface OracleComparison {
  tokens: number;
  mismatches: number;
  firstBad: string;
}

/** `encodeOurs` maps a text to our ids (default ours.encode), e.g. to fold byte fallback. */
export function compareWithOracle(ours: HfTokenizer, oracle: Oracle, texts: readonly string[], encodeOurs: (text: string) => number[] = (t) => ours.encode(t)): OracleComparison {
  const r: OracleComparison = { tokens: 0, mismatches: 0, firstBad: '' };
  for (const text of texts) {
    const a = encodeOurs(text);
    const b = oracle.encode(text).ids;
    r.tokens += b.length;
    if (a.length !== b.length || a.some((v, i) => v !== b[i])) {
      r.mismatches++;
      r.firstBad ||= `${JSON.stringify(text)}: attn ${a.join(' ')} vs oracle ${b.join(' ')}`;
    }
    const da = ours.decode(b, { skipSpecialTokens: true });
    const db = oracle.decode(b, { skip_special_tokens: true });
    if (da !== db) {
      r.mismatches++;
      r.firstBad ||= `decode of ${JSON.stringify(text)}: ${JSON.stringify(da)} vs ${JSON.stringify(db)}`;
    }
  }
  return r;
}
