// Pre-tokenisation: the regex that cuts text into the pieces BPE works on (merges never cross
// a piece boundary), and the splitting of text around special tokens.

/**
 * GPT-2's pattern: the English contractions, then an optional space followed by a run of
 * letters, of digits, or of other non-space symbols, then whitespace. `\s+(?!\S)` takes a run
 * of whitespace minus its last character when a word follows, so that the space goes with the
 * word (" world"), and the final `\s+` takes whitespace at the end of the text.
 *
 * `\s` is written `\p{White_Space}` on purpose: Python's `regex` module (used by GPT-2's
 * encoder.py) and the Rust engines of tiktoken and Hugging Face `tokenizers` take `\s` as the
 * Unicode White_Space property, whereas a JavaScript `\s` also matches U+FEFF and misses
 * U+0085. Written this way the split follows the reference tokenizers on those two characters
 * too (js-tiktoken, which uses a plain `\s`, differs from them there).
 */
export const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

/** Compiles a pre-tokenisation pattern with the flags the matcher needs (global, Unicode). */
export function compilePattern(pattern: string): RegExp {
  try {
    return new RegExp(pattern, 'gu');
  } catch (e) {
    throw new Error(`pre-tokenisation pattern does not compile as a JavaScript regex: ${(e as Error).message}`);
  }
}

/**
 * Calls fn for each piece of text, in order. The pattern must be global; its lastIndex is
 * reset. A pattern that fails to match somewhere (a custom one may) would silently drop text,
 * so the gaps are passed on as pieces too.
 */
export function forEachPiece(text: string, re: RegExp, fn: (piece: string) => void): void {
  re.lastIndex = 0;
  let end = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    const piece = m[0];
    if (m.index > end) fn(text.slice(end, m.index));
    if (piece.length === 0) {
      re.lastIndex++; // an empty match would loop forever
      continue;
    }
    fn(piece);
    end = m.index + piece.length;
  }
  if (end < text.length) fn(text.slice(end));
}

/** The pieces of text as an array (convenient for inspection and tests). */
export function pretokenize(text: string, pattern: string | RegExp = GPT2_PATTERN): string[] {
  const re = typeof pattern === 'string' ? compilePattern(pattern) : pattern;
  const out: string[] = [];
  forEachPiece(text, re, (p) => out.push(p));
  return out;
}

const escapeRegex = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * A regex matching any of the given literal strings, longest first so that a special token
 * that is a prefix of another one does not win. Undefined when there are none.
 */
export function specialsRegex(specials: Iterable<string>): RegExp | undefined {
  const list = [...new Set(specials)].filter((s) => s.length > 0);
  if (list.length === 0) return undefined;
  list.sort((a, b) => b.length - a.length || (a < b ? -1 : a > b ? 1 : 0));
  return new RegExp(list.map(escapeRegex).join('|'), 'gu');
}

/**
 * Splits text around the special tokens matched by `re` (from specialsRegex): calls onText for
 * the ordinary stretches (never empty) and onSpecial for each special token, in order.
 */
export function splitOnSpecials(
  text: string,
  re: RegExp | undefined,
  onText: (text: string) => void,
  onSpecial: (token: string) => void,
): void {
  if (!re) {
    if (text.length > 0) onText(text);
    return;
  }
  re.lastIndex = 0;
  let end = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    if (m.index > end) onText(text.slice(end, m.index));
    onSpecial(m[0]);
    end = m.index + m[0].length;
  }
  if (end < text.length) onText(text.slice(end));
}
