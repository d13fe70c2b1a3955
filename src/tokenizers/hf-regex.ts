// Hugging Face `tokenizers` compiles the regexes of tokenizer.json (Split pre-tokenizers, Replace
// normalizers and decoders) with Oniguruma. This module translates that dialect into a JavaScript
// RegExp source for the 'u' flag that Node 20 accepts, keeping the meaning:
//
//   (?i:...), (?-i:...), a leading (?i)   scoped case-insensitivity. JavaScript (before V8 12.5)
//                                         has no scoped modifiers, so each literal character in
//                                         scope becomes the class of the characters equal to it
//                                         under Unicode simple case folding, as Oniguruma
//                                         matches them: 's' -> [sSſ] (U+017F folds to s),
//                                         'k' -> [kKK] (Kelvin sign). Classes in scope are
//                                         closed the same way.
//   \s \S \d \D \w \W \h \H               Oniguruma's Unicode meanings: \s is White_Space (a
//                                         JavaScript \s also takes U+FEFF and misses U+0085),
//                                         \d is \p{Nd}, \w is letters, marks, Nd, Pc.
//   . ^ $ \A \z \Z \b \B                  '.' excludes only \n; ^ and $ are always line anchors.
//   (?>...), X*+ X++ X?+                  atomic groups and possessive quantifiers, as a
//                                         lookahead that captures plus a backreference.
//   X{,n}                                 X{0,n}; X{n,m}+ is (X{n,m})+ as in Oniguruma's Ruby
//                                         syntax, not possessive.
//   (...), (?<name>...)                   become non-capturing (only whole matches are used).
//
// Refused with an error naming the construct: backreferences, \G \K \R \X, nested classes and
// class intersection, option letters other than i, an isolated (?i) after the start of a group
// (Oniguruma extends it over later alternatives), atomic groups inside lookbehind.
// Multi-character case folds (ß ~ ss, ﬁ ~ fi) are not applied; none of the common tokenizer
// patterns has a literal those would reach.

/** The JavaScript source (for flags 'u' or 'gu') of an Oniguruma pattern from tokenizer.json. */
export function translateRegex(pattern: string): string {
  return new Translator(pattern).translate();
}

/** Translates and compiles; errors name the pattern. */
export function compileHfRegex(pattern: string, flags = 'gu'): RegExp {
  let src: string;
  try {
    src = translateRegex(pattern);
  } catch (e) {
    throw new Error(`regex ${JSON.stringify(pattern)}: ${(e as Error).message}`);
  }
  try {
    return new RegExp(src, flags);
  } catch (e) {
    throw new Error(`regex ${JSON.stringify(pattern)} (as JavaScript ${JSON.stringify(src)}) does not compile: ${(e as Error).message}`);
  }
}

/** Escapes s for use as a literal in a 'u' regex. */
export function escapeRegexLiteral(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
}

// Oniguruma's Unicode \w (UTS #18 Annex C): Alphabetic, Mark, Decimal_Number,
// Connector_Punctuation, Join_Control. The *_BODY forms go inside a class.
const WORD_BODY = '\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}';
const WORD = `[${WORD_BODY}]`;
const NOT_WORD = `[^${WORD_BODY}]`;
const HEX_BODY = '0-9A-Fa-f';

/** Escapes outside classes that stand for a set or an assertion. */
const ESCAPES: Record<string, string> = {
  s: '\\p{White_Space}',
  S: '\\P{White_Space}',
  d: '\\p{Nd}',
  D: '\\P{Nd}',
  w: WORD,
  W: NOT_WORD,
  h: `[${HEX_BODY}]`,
  H: `[^${HEX_BODY}]`,
  A: '(?<![^])',
  z: '(?![^])',
  Z: '(?=\\n?(?![^]))',
  b: `(?:(?<=${WORD})(?!${WORD})|(?<!${WORD})(?=${WORD}))`,
  B: `(?:(?<=${WORD})(?=${WORD})|(?<!${WORD})(?!${WORD}))`,
};
/** Single-character escapes (both in and out of classes). */
const CHAR_ESCAPES: Record<string, number> = { t: 9, n: 10, v: 11, f: 12, r: 13, a: 7, e: 27 };
/** Escapes inside a class that stand for a set: body text to splice into the JS class. */
const CLASS_SETS: Record<string, string> = {
  s: '\\p{White_Space}',
  S: '\\P{White_Space}',
  d: '\\p{Nd}',
  D: '\\P{Nd}',
  w: WORD_BODY,
  h: HEX_BODY,
};
const UNSUPPORTED_ESCAPES: Record<string, string> = {
  G: '\\G (search start anchor)',
  K: '\\K (keep)',
  R: '\\R (general newline)',
  X: '\\X (extended grapheme cluster)',
  N: '\\N',
  O: '\\O',
  y: '\\y',
  Y: '\\Y',
  k: 'backreference \\k<...>',
  g: 'subexpression call \\g<...>',
};

/** A parsed class: its JS body (for [body] or [^body]), code points/ranges listed literally. */
interface ClassParts {
  negated: boolean;
  /** JS class body pieces for set escapes (\p{..}, \s, ...), spliced unchanged. */
  sets: string[];
  /** Literal code points and ranges, [lo, hi] inclusive. */
  ranges: [number, number][];
}

class Translator {
  private i = 0;
  private atomic = 0;
  private lookbehind = 0;

  constructor(private readonly src: string) {}

  translate(): string {
    let ci = false;
    // A leading (?i) (or (?-i)) applies to the whole pattern.
    const lead = /^\(\?(-?)i\)/.exec(this.src);
    if (lead) {
      ci = lead[1] === '';
      this.i = lead[0].length;
    }
    const out = this.alternation(ci);
    if (this.i < this.src.length) throw this.error(`unmatched ')'`);
    return out;
  }

  private error(msg: string, at = this.i): Error {
    return new Error(`${msg} at offset ${at}`);
  }

  private peek(k = 0): string {
    return this.src[this.i + k] ?? '';
  }

  /** alternatives separated by '|', up to an unmatched ')' or the end. */
  private alternation(ci: boolean): string {
    let out = this.sequence(ci);
    while (this.peek() === '|') {
      this.i++;
      out += '|' + this.sequence(ci);
    }
    return out;
  }

  private sequence(ci: boolean): string {
    let out = '';
    for (;;) {
      const c = this.peek();
      if (c === '' || c === '|' || c === ')') return out;
      const start = this.i;
      const atom = this.atom(ci);
      if (atom === null) continue; // nothing emitted (e.g. a comment group)
      out += this.quantified(atom, start);
    }
  }

  /** One atom, or null when the construct emits nothing. */
  private atom(ci: boolean): string | null {
    const c = this.peek();
    switch (c) {
      case '(':
        return this.group(ci);
      case '[':
        return this.charClass(ci);
      case '.':
        this.i++;
        return '[^\\n]';
      case '^':
        this.i++;
        return '(?<![^\\n])';
      case '$':
        this.i++;
        return '(?![^\\n])';
      case '\\':
        return this.escape(ci);
      case '*':
      case '+':
      case '?':
        throw this.error(`quantifier '${c}' with nothing to repeat`);
      case '{':
        if (/^\{(\d+(,\d*)?|,\d+)\}/.test(this.src.slice(this.i))) throw this.error(`quantifier with nothing to repeat`);
        this.i++;
        return '\\{';
      default: {
        const cp = this.src.codePointAt(this.i)!;
        this.i += cp > 0xffff ? 2 : 1;
        return literal(cp, ci);
      }
    }
  }

  private quantified(atom: string, atomStart: number): string {
    let out = atom;
    for (;;) {
      const c = this.peek();
      let q: string;
      if (c === '*' || c === '+' || c === '?') {
        q = c;
        this.i++;
      } else if (c === '{') {
        const m = /^\{(\d+)?(,)?(\d+)?\}/.exec(this.src.slice(this.i));
        if (!m || (m[1] === undefined && m[3] === undefined)) return out; // a literal '{' follows
        this.i += m[0].length;
        q = m[2] === undefined ? `{${m[1]}}` : `{${m[1] ?? '0'},${m[3] ?? ''}}`;
        // Oniguruma (Ruby syntax): {n,m}+ is a repetition of the interval, not possessive;
        // {n,m}? is lazy.
        if (this.peek() === '?') {
          this.i++;
          out = `${wrap(out)}${q}?`;
          continue;
        }
        out = `${wrap(out)}${q}`;
        if (this.peek() === '+' || this.peek() === '*') out = `(?:${out})`;
        continue;
      } else {
        return out;
      }
      // *, +, ? followed by ? (lazy) or + (possessive)
      if (this.peek() === '?') {
        this.i++;
        out = `${wrap(out)}${q}?`;
      } else if (this.peek() === '+') {
        this.i++;
        out = this.atomicWrap(`${wrap(out)}${q}`, atomStart);
      } else {
        out = `${wrap(out)}${q}`;
      }
      // A further quantifier applies to the whole repeated atom.
      if (this.peek() === '*' || this.peek() === '+' || this.peek() === '?') out = `(?:${out})`;
    }
  }

  private atomicWrap(inner: string, at: number): string {
    if (this.lookbehind > 0) throw this.error('atomic group or possessive quantifier inside lookbehind is not supported', at);
    const name = `__atomic${this.atomic++}`;
    return `(?:(?=(?<${name}>${inner}))\\k<${name}>)`;
  }

  private group(ci: boolean): string | null {
    const start = this.i;
    const rest = this.src.slice(this.i);
    let m: RegExpExecArray | null;
    let open: string;
    let innerCi = ci;
    let kind: 'plain' | 'look' | 'lookbehind' | 'atomic' = 'plain';
    if (rest.startsWith('(?#')) {
      const end = this.src.indexOf(')', this.i);
      if (end < 0) throw this.error('unterminated comment group');
      this.i = end + 1;
      return null;
    } else if (rest.startsWith('(?:')) {
      open = '(?:';
    } else if (rest.startsWith('(?=') || rest.startsWith('(?!')) {
      open = rest.slice(0, 3);
      kind = 'look';
    } else if (rest.startsWith('(?<=') || rest.startsWith('(?<!')) {
      open = rest.slice(0, 4);
      kind = 'lookbehind';
    } else if (rest.startsWith('(?>')) {
      open = '(?>';
      kind = 'atomic';
    } else if ((m = /^\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>/.exec(rest)) || (m = /^\(\?'([A-Za-z_][A-Za-z0-9_]*)'/.exec(rest))) {
      open = m[0]; // named capture: non-capturing here
    } else if ((m = /^\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])/.exec(rest))) {
      const on = m[1];
      const off = m[2] ?? '';
      for (const f of on + off) {
        if (f !== 'i') throw this.error(`option '${f}' in ${m[0]} is not supported (only i)`);
      }
      if (on.includes('i')) innerCi = true;
      if (off.includes('i')) innerCi = false;
      if (m[3] === ')') {
        // An isolated option group. Only meaningful here at the start of a group, where it
        // covers the rest of that group (Oniguruma also covers later alternatives).
        throw this.error(`isolated option group ${m[0]} is only supported at the start of the pattern; use (?i:...)`);
      }
      open = m[0];
    } else if (rest.startsWith('(?')) {
      throw this.error(`group syntax ${JSON.stringify(rest.slice(0, 4))} is not supported`);
    } else {
      open = '(';
    }
    this.i += open.length;
    if (kind === 'lookbehind') this.lookbehind++;
    const inner = this.alternation(innerCi);
    if (kind === 'lookbehind') this.lookbehind--;
    if (this.peek() !== ')') throw this.error(`unterminated group`, start);
    this.i++;
    switch (kind) {
      case 'look':
        return `${open}${inner})`;
      case 'lookbehind':
        return `${open}${inner})`;
      case 'atomic':
        return this.atomicWrap(inner, start);
      default:
        return `(?:${inner})`;
    }
  }

  /** A backslash escape outside a class. */
  private escape(ci: boolean): string {
    const at = this.i;
    const c = this.src[this.i + 1];
    if (c === undefined) throw this.error('pattern ends with a backslash');
    if (c === 'p' || c === 'P') return this.property();
    if (ESCAPES[c] !== undefined) {
      this.i += 2;
      return ESCAPES[c];
    }
    const cp = this.charEscape();
    if (cp !== undefined) return literal(cp, ci);
    if (UNSUPPORTED_ESCAPES[c] !== undefined) throw this.error(`${UNSUPPORTED_ESCAPES[c]} is not supported`, at);
    if (c >= '1' && c <= '9') throw this.error(`backreference \\${c} is not supported`, at);
    throw this.error(`escape \\${c} is not supported`, at);
  }

  /**
   * A character escape (\t, \x41, \x{263a}, \u2581, \0, \\, \., ...) at this.i: its code
   * point, advancing past it; undefined (not advancing) when the escape is not one.
   */
  private charEscape(): number | undefined {
    const rest = this.src.slice(this.i);
    const c = rest[1];
    let m: RegExpExecArray | null;
    if (CHAR_ESCAPES[c] !== undefined) {
      this.i += 2;
      return CHAR_ESCAPES[c];
    }
    if ((m = /^\\x\{([0-9A-Fa-f]{1,8})\}/.exec(rest)) || (m = /^\\x([0-9A-Fa-f]{1,2})/.exec(rest)) || (m = /^\\u([0-9A-Fa-f]{4})/.exec(rest))) {
      const v = parseInt(m[1], 16);
      if (v > 0x10ffff) throw this.error(`code point ${m[0]} is out of range`);
      this.i += m[0].length;
      return v;
    }
    if ((m = /^\\0([0-7]{0,2})/.exec(rest))) {
      this.i += m[0].length;
      return parseInt(m[1] || '0', 8);
    }
    if ((m = /^\\c([A-Za-z])/.exec(rest))) {
      this.i += 3;
      return m[1].toUpperCase().charCodeAt(0) & 31;
    }
    if (c !== undefined && !/[0-9A-Za-z]/.test(c)) {
      const cp = rest.codePointAt(1)!;
      this.i += cp > 0xffff ? 3 : 2;
      return cp;
    }
    return undefined;
  }

  /** \p{Name}, \p{^Name}, \P{Name} at this.i -> JS \p{...}/\P{...}. */
  private property(): string {
    const m = /^\\([pP])\{(\^?)([^}]*)\}/.exec(this.src.slice(this.i));
    if (!m) throw this.error(`malformed property escape`);
    this.i += m[0].length;
    const negated = (m[1] === 'P') !== (m[2] === '^');
    return propertyEscape(m[3], negated, (msg) => this.error(msg));
  }

  private charClass(ci: boolean): string {
    const parts = this.classParts();
    return renderClass(parts, ci);
  }

  /** Parses [...] at this.i into its parts. */
  private classParts(): ClassParts {
    const start = this.i;
    this.i++; // [
    const parts: ClassParts = { negated: false, sets: [], ranges: [] };
    if (this.peek() === '^') {
      parts.negated = true;
      this.i++;
    }
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === '') throw this.error('unterminated character class', start);
      if (c === ']' && !first) {
        this.i++;
        return parts;
      }
      first = false;
      if (c === '[') {
        if (/^\[:\^?[a-z]+:\]/.test(this.src.slice(this.i))) throw this.error('POSIX bracket classes are not supported');
        throw this.error('nested character classes are not supported');
      }
      if (c === '&' && this.peek(1) === '&') throw this.error('character class intersection (&&) is not supported');
      // One class item: a set escape, or a single code point possibly starting a range.
      let lo: number;
      if (c === '\\') {
        const e = this.src[this.i + 1];
        if (e === 'p' || e === 'P') {
          const m = /^\\([pP])\{(\^?)([^}]*)\}/.exec(this.src.slice(this.i));
          if (!m) throw this.error('malformed property escape');
          this.i += m[0].length;
          parts.sets.push(propertyEscape(m[3], (m[1] === 'P') !== (m[2] === '^'), (msg) => this.error(msg), true));
          continue;
        }
        if (e !== undefined && CLASS_SETS[e] !== undefined) {
          this.i += 2;
          parts.sets.push(CLASS_SETS[e]);
          continue;
        }
        if (e === 'W' || e === 'H') throw this.error(`\\${e} inside a character class is not supported`);
        if (e === 'b') {
          this.i += 2;
          lo = 8; // backspace inside a class
        } else {
          const cp = this.charEscape();
          if (cp === undefined) throw this.error(`escape \\${e} is not supported in a character class`);
          lo = cp;
        }
      } else {
        lo = this.src.codePointAt(this.i)!;
        this.i += lo > 0xffff ? 2 : 1;
      }
      // A range lo-hi (a '-' before ']' is literal).
      if (this.peek() === '-' && this.peek(1) !== ']' && this.peek(1) !== '') {
        this.i++;
        let hi: number;
        if (this.peek() === '\\') {
          const cp = this.charEscape();
          if (cp === undefined) throw this.error('a range must end in a single character');
          hi = cp;
        } else if (this.peek() === '[') {
          throw this.error('nested character classes are not supported');
        } else {
          hi = this.src.codePointAt(this.i)!;
          this.i += hi > 0xffff ? 2 : 1;
        }
        if (hi < lo) throw this.error(`character class range out of order`);
        parts.ranges.push([lo, hi]);
      } else {
        parts.ranges.push([lo, lo]);
      }
    }
  }
}

const wrap = (atom: string): string => {
  // An atom that is already a group, a class or a single escaped/literal char repeats as is;
  // anything longer (e.g. an emitted class expansion followed by text) is grouped.
  if (isSingleAtom(atom)) return atom;
  return `(?:${atom})`;
};

function isSingleAtom(s: string): boolean {
  if (s.length === 0) return false;
  if (s.startsWith('(?:') || s.startsWith('[')) {
    // A single group or class only if its closing bracket is the last character.
    const open = s[0] === '(' ? '(' : '[';
    const close = open === '(' ? ')' : ']';
    let depth = 0;
    let inClass = false;
    for (let i = 0; i < s.length; i++) {
      const c = s[i];
      if (c === '\\') {
        i++;
        continue;
      }
      if (open === '(') {
        if (inClass) {
          if (c === ']') inClass = false;
          continue;
        }
        if (c === '[') inClass = true;
        else if (c === '(') depth++;
        else if (c === ')') {
          depth--;
          if (depth === 0) return i === s.length - 1;
        }
      } else if (c === close) {
        return i === s.length - 1;
      }
    }
    return false;
  }
  if (/^\\[pP]\{[^}]*\}$/.test(s)) return true;
  if (/^\\(u\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|.)$/u.test(s)) return true;
  return [...s].length === 1;
}

/** Oniguruma property names (lower case, no separators) that JavaScript spells differently. */
const PROPERTY_ALIASES: Record<string, string> = {
  any: 'Any',
  alpha: 'Alphabetic',
  space: 'White_Space',
  digit: 'Nd',
  upper: 'Uppercase',
  lower: 'Lowercase',
  punct: 'P',
  cntrl: 'Cc',
};

/** Oniguruma properties that are unions: their JS class body. */
const PROPERTY_SETS: Record<string, string> = { word: WORD_BODY, alnum: '\\p{Alphabetic}\\p{Nd}', xdigit: HEX_BODY };

/**
 * A JS \p{..}/\P{..} for an Oniguruma property name (general category, script, binary
 * property); inClass: the text to splice into a class body.
 */
function propertyEscape(name: string, negated: boolean, error: (msg: string) => Error, inClass = false): string {
  const key = name.replace(/[\s_-]/g, '').toLowerCase();
  const set = PROPERTY_SETS[key];
  if (set !== undefined) {
    if (!inClass) return `[${negated ? '^' : ''}${set}]`;
    if (negated) throw error(`negated \\p{${name}} inside a character class is not supported`);
    return set;
  }
  const p = negated ? 'P' : 'p';
  // As written, then the JavaScript alias, then as a script name (Oniguruma's \p{Han}).
  for (const cand of [name, PROPERTY_ALIASES[key], `Script=${name}`]) {
    if (cand === undefined) continue;
    try {
      new RegExp(`\\${p}{${cand}}`, 'u');
      return `\\${p}{${cand}}`;
    } catch {
      // try the next spelling
    }
  }
  throw error(`Unicode property ${JSON.stringify(name)} is not known to JavaScript`);
}

/** A JS class (or equivalent) for the parsed parts; in a case-insensitive scope closed under folding. */
function renderClass(parts: ClassParts, ci: boolean): string {
  let ranges = parts.ranges;
  if (ci) ranges = foldClosure(ranges);
  if (parts.sets.length === 0 && ranges.length === 0) return parts.negated ? '[^]' : '[]';
  const body = parts.sets.join('') + ranges.map(([lo, hi]) => (lo === hi ? classChar(lo) : `${classChar(lo)}-${classChar(hi)}`)).join('');
  return `[${parts.negated ? '^' : ''}${body}]`;
}

/** A code point as it may appear inside a JS 'u' class. */
function classChar(cp: number): string {
  if (cp < 0x20 || cp === 0x7f || (cp >= 0xd800 && cp <= 0xdfff) || cp === 0x2028 || cp === 0x2029) return `\\u{${cp.toString(16)}}`;
  const s = String.fromCodePoint(cp);
  return '\\^-[]/'.includes(s) ? '\\' + s : s;
}

/** A literal code point outside a class; in a case-insensitive scope, the class of its case variants. */
function literal(cp: number, ci: boolean): string {
  if (ci) {
    const members = foldMembers(cp);
    if (members.length > 1) return `[${members.map(classChar).join('')}]`;
  }
  if (cp < 0x20 || cp === 0x7f || (cp >= 0xd800 && cp <= 0xdfff) || cp === 0x2028 || cp === 0x2029) return `\\u{${cp.toString(16)}}`;
  const s = String.fromCodePoint(cp);
  return escapeRegexLiteral(s);
}

// ---- Unicode simple case folding, taken from the JavaScript engine itself ----

let foldTable: Map<number, number[]> | undefined;

/**
 * Code point -> all code points equal to it under Unicode simple case folding (including
 * itself), for every code point that has case variants. Built once, on first use, by linking
 * each character to its upper- and lowercase mappings when a case-insensitive 'u' regex (whose
 * matching is defined by simple case folding) confirms they are equal: ſ joins S (and so s),
 * K (Kelvin) joins k, while ı (dotless i) stays apart from I, as in Oniguruma.
 */
function foldClasses(): Map<number, number[]> {
  if (foldTable) return foldTable;
  const parent = new Map<number, number>();
  const find = (x: number): number => {
    let r = x;
    while (parent.has(r) && parent.get(r) !== r) r = parent.get(r)!;
    parent.set(x, r);
    return r;
  };
  const union = (a: number, b: number) => {
    const ra = find(a);
    const rb = find(b);
    if (ra !== rb) parent.set(Math.max(ra, rb), Math.min(ra, rb));
  };
  const single = (s: string): number | undefined => {
    const cp = s.codePointAt(0)!;
    return s.length === (cp > 0xffff ? 2 : 1) ? cp : undefined;
  };
  // Cased characters all lie below U+1F000 (the last cased block, Adlam, ends at U+1E95F).
  for (let cp = 0; cp < 0x1f000; cp++) {
    if (cp === 0xd800) cp = 0xe000;
    const s = String.fromCodePoint(cp);
    const lower = s.toLowerCase();
    const upper = s.toUpperCase();
    if (lower === s && upper === s) continue;
    let re: RegExp | undefined;
    for (const t of [lower, upper]) {
      const other = t === s ? undefined : single(t);
      if (other === undefined) continue;
      re ??= new RegExp(`^${escapeRegexLiteral(s)}$`, 'iu');
      if (re.test(t)) {
        if (!parent.has(cp)) parent.set(cp, cp);
        if (!parent.has(other)) parent.set(other, other);
        union(cp, other);
      }
    }
  }
  const groups = new Map<number, number[]>();
  for (const cp of parent.keys()) {
    const r = find(cp);
    let g = groups.get(r);
    if (!g) groups.set(r, (g = []));
    g.push(cp);
  }
  foldTable = new Map();
  for (const g of groups.values()) {
    g.sort((a, b) => a - b);
    for (const cp of g) foldTable.set(cp, g);
  }
  return foldTable;
}

/** All code points case-fold-equal to cp (sorted, including cp). */
export function foldMembers(cp: number): number[] {
  return foldClasses().get(cp) ?? [cp];
}

/** Ranges closed under simple case folding (the original ranges plus every fold variant). */
function foldClosure(ranges: [number, number][]): [number, number][] {
  const table = foldClasses();
  const extra = new Set<number>();
  const inRanges = (cp: number) => ranges.some(([lo, hi]) => cp >= lo && cp <= hi);
  // Small ranges: look each member up; large ones: scan the (few thousand) cased characters.
  const total = ranges.reduce((n, [lo, hi]) => n + hi - lo + 1, 0);
  if (total <= 4096) {
    for (const [lo, hi] of ranges) for (let cp = lo; cp <= hi; cp++) for (const m of table.get(cp) ?? []) extra.add(m);
  } else {
    for (const [cp, members] of table) if (inRanges(cp)) for (const m of members) extra.add(m);
  }
  const out = ranges.slice();
  for (const m of [...extra].sort((a, b) => a - b)) if (!inRanges(m)) out.push([m, m]);
  return out;
}
