// The pipeline stages of a Hugging Face tokenizer.json other than the model: normalizers,
// pre-tokenizers, decoders and post-processors, each built from its JSON object with the
// semantics of the `tokenizers` library. Unknown or malformed components are refused with an
// error naming the JSON path and the type.
import { PrecompiledCharsMap } from './hf-precompiled.js';
import { BYTE_TO_CHAR, bytesToByteLevel, utf8Bytes } from './bytes.js';
import { compileHfRegex, escapeRegexLiteral } from './hf-regex.js';
import { GPT2_PATTERN } from './pretokenize.js';

/** A component object of tokenizer.json. */
export type HfComponentJson = { type?: unknown; [key: string]: unknown };

/** A pattern object: {"String": "..."} (literal) or {"Regex": "..."} (Oniguruma). */
export type HfPatternJson = { String?: string; Regex?: string };

const typeName = (j: HfComponentJson): string => (typeof j.type === 'string' ? j.type : JSON.stringify(j.type));

function expectObject(j: unknown, where: string): HfComponentJson {
  if (j === null || typeof j !== 'object' || Array.isArray(j)) throw new Error(`tokenizer.json: ${where} is not an object`);
  return j as HfComponentJson;
}

function expectArray(j: unknown, where: string): unknown[] {
  if (!Array.isArray(j)) throw new Error(`tokenizer.json: ${where} is not an array`);
  return j;
}

function optString(j: HfComponentJson, key: string, where: string, dflt: string): string {
  const v = j[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'string') throw new Error(`tokenizer.json: ${where}.${key} is not a string`);
  return v;
}

function optBool(j: HfComponentJson, key: string, where: string, dflt: boolean): boolean {
  const v = j[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new Error(`tokenizer.json: ${where}.${key} is not a boolean`);
  return v;
}

/** A global regex for a pattern object: literal for String, translated Oniguruma for Regex. */
export function patternRegex(p: unknown, where: string): RegExp {
  const o = expectObject(p, where) as HfPatternJson;
  if (typeof o.String === 'string') {
    if (o.String === '') throw new Error(`tokenizer.json: ${where}.String is empty`);
    return new RegExp(escapeRegexLiteral(o.String), 'gu');
  }
  if (typeof o.Regex === 'string') {
    try {
      return compileHfRegex(o.Regex, 'gu');
    } catch (e) {
      throw new Error(`tokenizer.json: ${where}.Regex: ${(e as Error).message}`);
    }
  }
  throw new Error(`tokenizer.json: ${where} must be {"String": ...} or {"Regex": ...}, got ${JSON.stringify(p)}`);
}

// ---- normalizers ----

export type Normalizer = (text: string) => string;

/** Lowercase as `tokenizers` does it, character by character (no final-sigma rule). */
function lowercase(s: string): string {
  if (!s.includes('\u03a3')) return s.toLowerCase();
  return s.split('\u03a3').map((p) => p.toLowerCase()).join('\u03c3');
}

// BertNormalizer's classes: what clean_text removes or turns into a space, whitespace as BERT
// counts it, and the CJK ideograph blocks handle_chinese_chars surrounds with spaces.
const BERT_CLEAN = /[\0\uFFFD\p{C}\p{White_Space}]/gu;
const BERT_CONTROL = /^\p{C}$/u;
const CJK = /[\u{4E00}-\u{9FFF}\u{3400}-\u{4DBF}\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B820}-\u{2CEAF}\u{F900}-\u{FAFF}\u{2F800}-\u{2FA1F}]/gu;

const WS_START = /^\p{White_Space}+/u;
const WS_END = /\p{White_Space}+$/u;

export function buildNormalizer(j: unknown, where = 'normalizer'): Normalizer | null {
  if (j === null || j === undefined) return null;
  const o = expectObject(j, where);
  switch (o.type) {
    case 'Sequence': {
      const list = expectArray(o.normalizers, `${where}.normalizers`).map((n, i) => buildNormalizer(n, `${where}.normalizers[${i}]`));
      const fns = list.filter((f): f is Normalizer => f !== null);
      if (fns.length === 1) return fns[0];
      return (s) => {
        for (const f of fns) s = f(s);
        return s;
      };
    }
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD': {
      const form = o.type;
      return (s) => s.normalize(form);
    }
    case 'Lowercase':
      return lowercase;
    case 'Strip': {
      const left = optBool(o, 'strip_left', where, true);
      const right = optBool(o, 'strip_right', where, true);
      return (s) => {
        if (left) s = s.replace(WS_START, '');
        if (right) s = s.replace(WS_END, '');
        return s;
      };
    }
    case 'StripAccents':
      return (s) => s.replace(/\p{M}/gu, '');
    case 'Prepend': {
      const pre = optString(o, 'prepend', where, '');
      // Only a non-empty text gets the prefix.
      return (s) => (s.length > 0 ? pre + s : s);
    }
    case 'Replace': {
      const re = patternRegex(o.pattern, `${where}.pattern`);
      const content = optString(o, 'content', where, '');
      const lit = (o.pattern as HfPatternJson).String;
      if (typeof lit === 'string') return (s) => s.replaceAll(lit, content);
      return (s) => s.replace(re, () => content);
    }
    case 'Precompiled': {
      const map = typeof o.precompiled_charsmap === 'string' && o.precompiled_charsmap !== '' ? new PrecompiledCharsMap(o.precompiled_charsmap, where) : null;
      return map ? (s) => map.normalize(s) : (s) => s; // an empty map normalizes nothing
    }
    case 'BertNormalizer': {
      const clean = optBool(o, 'clean_text', where, true);
      const chinese = optBool(o, 'handle_chinese_chars', where, true);
      const lower = optBool(o, 'lowercase', where, true);
      const strip = o.strip_accents === null || o.strip_accents === undefined ? lower : optBool(o, 'strip_accents', where, lower);
      return (s) => {
        // clean_text: NUL, U+FFFD and other control characters (category C, but tab, newline and
        // carriage return) removed; whitespace becomes a space.
        if (clean) s = s.replace(BERT_CLEAN, (c) => (c === '\t' || c === '\n' || c === '\r' ? ' ' : c === '\0' || c === '\uFFFD' || BERT_CONTROL.test(c) ? '' : ' '));
        if (chinese) s = s.replace(CJK, ' $& ');
        if (strip) s = s.normalize('NFD').replace(/\p{Mn}/gu, '');
        return lower ? lowercase(s) : s;
      };
    }
    default:
      throw new Error(`tokenizer.json: ${where}: normalizer type ${typeName(o)} is not supported (Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Prepend, Replace, BertNormalizer, Precompiled)`);
  }
}

// ---- pre-tokenizers ----

/** Receives the pieces of a pre-tokenizer stage. atStart: the piece begins the input text. */
export interface PieceSink {
  piece(text: string, atStart: boolean): void;
}

export type SplitBehavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';
const BEHAVIORS: readonly SplitBehavior[] = ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'];

/** A pre-tokenizer stage: splits (or rewrites) a piece and passes the results on. */
export abstract class PreStage implements PieceSink {
  next: PieceSink | null = null;
  abstract piece(text: string, atStart: boolean): void;
  protected emit(text: string, atStart: boolean): void {
    if (text.length > 0) this.next!.piece(text, atStart);
  }
}

/**
 * Splits by the matches of a global regex with a `tokenizers` SplitDelimiterBehavior. Matches
 * are found as Oniguruma's find_iter does: left to right, an empty match right after the
 * previous match skipped.
 */
export class SplitStage extends PreStage {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  private readonly flags: boolean[] = [];

  constructor(
    readonly re: RegExp,
    readonly behavior: SplitBehavior,
    readonly invert: boolean,
  ) {
    super();
  }

  piece(text: string, atStart: boolean): void {
    if (this.behavior === 'Isolated') {
      // The hot path (Llama-3, Qwen, GPT-2): every gap and every match is a piece.
      const re = this.re;
      re.lastIndex = 0;
      let end = 0;
      let lastMatchEnd = -1;
      let m: RegExpExecArray | null;
      while ((m = re.exec(text)) !== null) {
        const s = m.index;
        const len = m[0].length;
        if (len === 0) {
          // An empty match makes no piece, but the text before it is cut there.
          re.lastIndex = s + (text.codePointAt(s)! > 0xffff ? 2 : 1);
          if (s === lastMatchEnd) continue;
          if (s > end) this.next!.piece(text.slice(end, s), atStart && end === 0);
          end = s;
          lastMatchEnd = s;
          continue;
        }
        if (s > end) this.next!.piece(text.slice(end, s), atStart && end === 0);
        this.next!.piece(s === 0 && len === text.length ? text : text.slice(s, s + len), atStart && s === 0);
        end = s + len;
        lastMatchEnd = end;
      }
      if (end < text.length) this.next!.piece(end === 0 ? text : text.slice(end), atStart && end === 0);
      return;
    }
    // General case: the (offsets, is_match) list of `tokenizers`' find_matches, then the behavior.
    const starts = this.starts;
    const ends = this.ends;
    const flags = this.flags;
    starts.length = ends.length = flags.length = 0;
    const re = this.re;
    re.lastIndex = 0;
    let prev = 0;
    let lastMatchEnd = -1;
    let m: RegExpExecArray | null;
    while ((m = re.exec(text)) !== null) {
      const s = m.index;
      const e = s + m[0].length;
      if (s === e) {
        re.lastIndex = s + (text.codePointAt(s)! > 0xffff ? 2 : 1);
        if (s === lastMatchEnd) continue;
      }
      if (prev !== s) {
        starts.push(prev);
        ends.push(s);
        flags.push(false);
      }
      starts.push(s);
      ends.push(e);
      flags.push(true);
      prev = e;
      lastMatchEnd = e;
      if (s === e && s >= text.length) break;
    }
    if (prev !== text.length) {
      starts.push(prev);
      ends.push(text.length);
      flags.push(false);
    }
    if (this.invert) for (let i = 0; i < flags.length; i++) flags[i] = !flags[i];
    const n = flags.length;
    switch (this.behavior) {
      case 'Removed':
        for (let i = 0; i < n; i++) if (!flags[i]) this.emit(text.slice(starts[i], ends[i]), atStart && starts[i] === 0);
        return;
      // Runs of parts joined left to right: Contiguous joins neighbours of the same kind,
      // MergedWithPrevious a match onto the piece before it.
      case 'Contiguous':
        return this.joinRuns(text, starts, ends, atStart, (i, prevMatch) => flags[i] === prevMatch, flags);
      case 'MergedWithPrevious':
        return this.joinRuns(text, starts, ends, atStart, (i, prevMatch) => flags[i]! && !prevMatch, flags);
      case 'MergedWithNext': {
        // Right to left: a match not preceded (on its right) by a match joins the piece after it.
        const outS: number[] = [];
        const outE: number[] = [];
        let prevMatch = false;
        for (let i = n - 1; i >= 0; i--) {
          if (flags[i] && !prevMatch && outS.length > 0) outS[outS.length - 1] = starts[i];
          else {
            outS.push(starts[i]);
            outE.push(ends[i]);
          }
          prevMatch = flags[i];
        }
        for (let k = outS.length - 1; k >= 0; k--) this.emit(text.slice(outS[k], outE[k]), atStart && outS[k] === 0);
        return;
      }
    }
  }

  /** Emits the parts, each joined to the piece before it when join(i, whether part i-1 matched). */
  private joinRuns(text: string, starts: number[], ends: number[], atStart: boolean, join: (i: number, prevMatch: boolean) => boolean, flags: boolean[]): void {
    let s = -1;
    let e = 0;
    let prevMatch = false;
    for (let i = 0; i < flags.length; i++) {
      if (s >= 0 && join(i, prevMatch)) e = ends[i]!;
      else {
        if (s >= 0) this.emit(text.slice(s, e), atStart && s === 0);
        s = starts[i]!;
        e = ends[i]!;
      }
      prevMatch = flags[i]!;
    }
    if (s >= 0) this.emit(text.slice(s, e), atStart && s === 0);
  }
}

/**
 * ByteLevel: an optional leading space, GPT-2's split (with Oniguruma's \s, see GPT2_PATTERN),
 * then each byte of the piece as its printable stand-in character. As the last stage the
 * mapping is left to the model (which reads the UTF-8 bytes directly): `terminal`.
 */
export class ByteLevelStage extends PreStage {
  private readonly split: SplitStage | null;
  terminal = false;

  constructor(
    readonly addPrefixSpace: boolean,
    useRegex: boolean,
  ) {
    super();
    this.split = useRegex ? new SplitStage(new RegExp(GPT2_PATTERN, 'gu'), 'Isolated', false) : null;
    if (this.split) this.split.next = { piece: (t, a) => this.mapped(t, a) };
  }

  piece(text: string, atStart: boolean): void {
    if (this.addPrefixSpace && text.charCodeAt(0) !== 32) text = ' ' + text;
    if (this.split) this.split.piece(text, atStart);
    else this.mapped(text, atStart);
  }

  private mapped(text: string, atStart: boolean): void {
    this.emit(this.terminal ? text : bytesToByteLevel(utf8Bytes(text)), atStart);
  }
}

/** Metaspace: spaces -> the replacement character, optional prefix, split before each one. */
export class MetaspaceStage extends PreStage {
  private readonly split: SplitStage | null;

  constructor(
    readonly replacement: string,
    readonly prependScheme: 'always' | 'first' | 'never',
    split: boolean,
  ) {
    super();
    this.split = split ? new SplitStage(new RegExp(escapeRegexLiteral(replacement), 'gu'), 'MergedWithNext', false) : null;
    if (this.split) this.split.next = { piece: (t, a) => this.emit(t, a) };
  }

  piece(text: string, atStart: boolean): void {
    text = text.replaceAll(' ', this.replacement);
    if (!text.startsWith(this.replacement) && (this.prependScheme === 'always' || (this.prependScheme === 'first' && atStart))) {
      text = this.replacement + text;
    }
    if (this.split) this.split.piece(text, atStart);
    else this.emit(text, atStart);
  }
}

export function buildPreTokenizer(j: unknown, where = 'pre_tokenizer'): PreStage[] {
  if (j === null || j === undefined) return [];
  const o = expectObject(j, where);
  switch (o.type) {
    case 'Sequence':
      return expectArray(o.pretokenizers, `${where}.pretokenizers`).flatMap((p, i) => buildPreTokenizer(p, `${where}.pretokenizers[${i}]`));
    case 'Split': {
      const behavior = o.behavior === undefined ? 'Isolated' : o.behavior;
      if (!BEHAVIORS.includes(behavior as SplitBehavior)) throw new Error(`tokenizer.json: ${where}.behavior ${JSON.stringify(o.behavior)} is not one of ${BEHAVIORS.join(', ')}`);
      return [new SplitStage(patternRegex(o.pattern, `${where}.pattern`), behavior as SplitBehavior, optBool(o, 'invert', where, false))];
    }
    case 'ByteLevel':
      return [new ByteLevelStage(optBool(o, 'add_prefix_space', where, true), optBool(o, 'use_regex', where, true))];
    case 'Metaspace': {
      const replacement = optString(o, 'replacement', where, '\u2581');
      if ([...replacement].length !== 1) throw new Error(`tokenizer.json: ${where}.replacement must be one character`);
      const s = o.prepend_scheme ?? 'always';
      if (s !== 'always' && s !== 'first' && s !== 'never') throw new Error(`tokenizer.json: ${where}.prepend_scheme ${JSON.stringify(s)} is not always, first or never`);
      // add_prefix_space: false (older files) means never.
      const scheme = o.add_prefix_space === false ? 'never' : s;
      return [new MetaspaceStage(replacement, scheme, optBool(o, 'split', where, true))];
    }
    case 'Digits':
      return [new SplitStage(/\p{N}/gu, optBool(o, 'individual_digits', where, false) ? 'Isolated' : 'Contiguous', false)];
    case 'Whitespace':
      // \w+|[^\w\s]+ kept, the rest (whitespace) removed.
      return [new SplitStage(compileHfRegex('\\w+|[^\\w\\s]+'), 'Removed', true)];
    case 'WhitespaceSplit':
      return [new SplitStage(/\p{White_Space}/gu, 'Removed', false)];
    case 'Punctuation': {
      const behavior = o.behavior === undefined ? 'Isolated' : o.behavior;
      if (!BEHAVIORS.includes(behavior as SplitBehavior)) throw new Error(`tokenizer.json: ${where}.behavior ${JSON.stringify(o.behavior)} is not one of ${BEHAVIORS.join(', ')}`);
      return [new SplitStage(/[\p{P}!-/:-@[-`{-~]/gu, behavior as SplitBehavior, false)];
    }
    case 'BertPreTokenizer':
      // Whitespace removed, then every punctuation character (ASCII punctuation or Unicode P*) its own piece.
      return [new SplitStage(/\p{White_Space}/gu, 'Removed', false), new SplitStage(/[\p{P}!-/:-@[-`{-~]/gu, 'Isolated', false)];
    default:
      throw new Error(`tokenizer.json: ${where}: pre-tokenizer type ${typeName(o)} is not supported (Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer)`);
  }
}

// ---- decoders ----

export type Decoder = (tokens: string[]) => string[];

let lossy: TextDecoder | undefined;
let strict: TextDecoder | undefined;

/** Byte-level stand-in character (UTF-16 code unit) -> byte; -1 for other characters. */
const CHAR_BYTE: Int16Array = (() => {
  const t = new Int16Array(512).fill(-1);
  BYTE_TO_CHAR.forEach((c, b) => (t[c.charCodeAt(0)] = b));
  return t;
})();
let decodeBuf = new Uint8Array(1 << 16);

/**
 * ByteLevel: every token's characters back to bytes (a token with any other character: its
 * UTF-8 instead), all tokens joined, then one lossy UTF-8 decode (U+FFFD per maximal invalid
 * subpart, as Rust's from_utf8_lossy).
 */
function byteLevelDecode(tokens: string[]): string[] {
  let at = 0;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    // Worst case 3 bytes per UTF-16 unit (the UTF-8 fallback).
    if (at + 3 * t.length > decodeBuf.length) {
      const bigger = new Uint8Array(Math.max(decodeBuf.length * 2, at + 3 * t.length));
      bigger.set(decodeBuf.subarray(0, at));
      decodeBuf = bigger;
    }
    const buf = decodeBuf;
    let j = 0;
    for (; j < t.length; j++) {
      const c = t.charCodeAt(j);
      const b = c < 512 ? CHAR_BYTE[c] : -1;
      if (b < 0) break;
      buf[at + j] = b;
    }
    if (j === t.length) at += j;
    else for (const b of utf8Bytes(t)) buf[at++] = b;
  }
  lossy ??= new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  return [lossy.decode(decodeBuf.subarray(0, at))];
}

const HEX = /^[0-9A-Fa-f]$/;

/** The byte of a <0xNN> token (Rust's u8::from_str_radix on the two characters), or -1. */
function fallbackByte(t: string): number {
  if (t.length !== 6 || !t.startsWith('<0x') || t.charCodeAt(5) !== 62) return -1;
  const a = t[3];
  const b = t[4];
  if (!HEX.test(b) || !(HEX.test(a) || a === '+')) return -1;
  return a === '+' ? parseInt(b, 16) : parseInt(a + b, 16);
}

/** ByteFallback: runs of <0xNN> tokens -> their text; a run that is not valid UTF-8 -> one U+FFFD per byte. */
function byteFallbackDecode(tokens: string[]): string[] {
  const out: string[] = [];
  const run: number[] = [];
  const flush = () => {
    if (run.length === 0) return;
    strict ??= new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    try {
      out.push(strict.decode(new Uint8Array(run)));
    } catch {
      for (let k = 0; k < run.length; k++) out.push('\ufffd');
    }
    run.length = 0;
  };
  for (const t of tokens) {
    const b = fallbackByte(t);
    if (b >= 0) run.push(b);
    else {
      flush();
      out.push(t);
    }
  }
  flush();
  return out;
}

/** Strip: up to `start` leading and `stop` trailing copies of the character `content` from every token. */
function stripDecoder(content: string, start: number, stop: number): Decoder {
  const n = content.length;
  return (tokens) =>
    tokens.map((t) => {
      let s = 0;
      for (let k = 0; k < start && t.startsWith(content, s); k++) s += n;
      let e = t.length;
      for (let k = 0; k < stop && e - n >= s && t.endsWith(content, e); k++) e -= n;
      return s === 0 && e === t.length ? t : t.slice(s, e);
    });
}

export function buildDecoder(j: unknown, where = 'decoder'): Decoder | null {
  if (j === null || j === undefined) return null;
  const o = expectObject(j, where);
  switch (o.type) {
    case 'Sequence': {
      const list = expectArray(o.decoders, `${where}.decoders`).map((d, i) => buildDecoder(d, `${where}.decoders[${i}]`));
      const fns = list.filter((f): f is Decoder => f !== null);
      return (tokens) => {
        for (const f of fns) tokens = f(tokens);
        return tokens;
      };
    }
    case 'ByteLevel':
      return byteLevelDecode;
    case 'ByteFallback':
      return byteFallbackDecode;
    case 'Fuse':
      return (tokens) => [tokens.join('')];
    case 'Replace': {
      const re = patternRegex(o.pattern, `${where}.pattern`);
      const content = optString(o, 'content', where, '');
      const lit = (o.pattern as HfPatternJson).String;
      // In place: every decoder gets an array of its own (decode() and each stage make new ones).
      if (typeof lit === 'string') {
        return (tokens) => {
          for (let i = 0; i < tokens.length; i++) if (tokens[i].includes(lit)) tokens[i] = tokens[i].replaceAll(lit, content);
          return tokens;
        };
      }
      return (tokens) => {
        for (let i = 0; i < tokens.length; i++) tokens[i] = tokens[i].replace(re, () => content);
        return tokens;
      };
    }
    case 'Strip': {
      const content = optString(o, 'content', where, ' ');
      if ([...content].length !== 1) throw new Error(`tokenizer.json: ${where}.content must be one character`);
      const num = (k: string): number => {
        const v = o[k] ?? 0;
        if (!Number.isInteger(v) || (v as number) < 0) throw new Error(`tokenizer.json: ${where}.${k} is not a non-negative integer`);
        return v as number;
      };
      return stripDecoder(content, num('start'), num('stop'));
    }
    case 'Metaspace': {
      const replacement = optString(o, 'replacement', where, '\u2581');
      let scheme = o.prepend_scheme ?? 'always';
      if (o.add_prefix_space === false) scheme = 'never';
      // Every replacement character becomes a space, except in the first token where (unless
      // the scheme is 'never') they are removed, as `tokenizers` does.
      return (tokens) => tokens.map((t, i) => t.replaceAll(replacement, i === 0 && scheme !== 'never' ? '' : ' '));
    }
    case 'WordPiece': {
      const prefix = optString(o, 'prefix', where, '##');
      const cleanup = optBool(o, 'cleanup', where, true);
      // A token that continues a word loses its prefix; any other gets a space before it.
      return (tokens) => tokens.map((t, i) => {
        let r = i > 0 ? (t.startsWith(prefix) ? t.slice(prefix.length) : ` ${t}`) : t;
        if (cleanup) r = cleanUpWordPiece(r);
        return r;
      });
    }
    case 'BPEDecoder': {
      const suffix = optString(o, 'suffix', where, '</w>');
      return (tokens) => tokens.map((t, i) => (suffix ? t.replaceAll(suffix, i === tokens.length - 1 ? '' : ' ') : t));
    }
    default:
      throw new Error(`tokenizer.json: ${where}: decoder type ${typeName(o)} is not supported (Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, BPEDecoder, WordPiece)`);
  }
}

/** The WordPiece decoder's clean-up: no space before . ? ! , and English contractions. */
function cleanUpWordPiece(s: string): string {
  return s.replaceAll(' .', '.').replaceAll(' ?', '?').replaceAll(' !', '!').replaceAll(' ,', ',').replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(" do not", " don't").replaceAll(" 's", "'s").replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

// ---- post-processors ----

/** Adds special tokens around the ids of one text (b: the second of a pair, or null). */
export type PostProcessor = (a: number[], b: number[] | null, addSpecialTokens: boolean) => number[];

/** One processor: the ids of the text(s) after it; a template joins a pair into one (b: null). */
type PostStep = (a: number[], b: number[] | null, add: boolean) => [number[], number[] | null];

type TemplateItem = { special: number[] } | { seq: 'A' | 'B' };

function templateOf(items: unknown, specials: Map<string, number[]>, where: string): TemplateItem[] {
  return expectArray(items, where).map((it, i) => {
    const o = expectObject(it, `${where}[${i}]`);
    if (o.SpecialToken !== undefined) {
      const st = expectObject(o.SpecialToken, `${where}[${i}].SpecialToken`);
      const ids = specials.get(st.id as string);
      if (ids === undefined) throw new Error(`tokenizer.json: ${where}[${i}]: special token ${JSON.stringify(st.id)} is not in special_tokens`);
      return { special: ids };
    }
    if (o.Sequence !== undefined) {
      const sq = expectObject(o.Sequence, `${where}[${i}].Sequence`);
      if (sq.id !== 'A' && sq.id !== 'B') throw new Error(`tokenizer.json: ${where}[${i}].Sequence.id must be "A" or "B"`);
      return { seq: sq.id };
    }
    throw new Error(`tokenizer.json: ${where}[${i}] is neither {"SpecialToken": ...} nor {"Sequence": ...}`);
  });
}

function applyTemplate(t: TemplateItem[], a: number[], b: number[] | null): number[] {
  const out: number[] = [];
  for (const it of t) {
    if ('special' in it) for (const id of it.special) out.push(id);
    else {
      const s = it.seq === 'A' ? a : (b ?? []);
      for (let i = 0; i < s.length; i++) out.push(s[i]);
    }
  }
  return out;
}

function buildPostStep(j: unknown, where: string): PostStep | null {
  if (j === null || j === undefined) return null;
  const o = expectObject(j, where);
  switch (o.type) {
    case 'TemplateProcessing': {
      const specials = new Map<string, number[]>();
      const st = o.special_tokens === undefined ? {} : expectObject(o.special_tokens, `${where}.special_tokens`);
      for (const [name, v] of Object.entries(st)) {
        const e = expectObject(v, `${where}.special_tokens[${JSON.stringify(name)}]`);
        const ids = expectArray(e.ids, `${where}.special_tokens[${JSON.stringify(name)}].ids`);
        if (!ids.every((x) => Number.isInteger(x) && (x as number) >= 0)) throw new Error(`tokenizer.json: ${where}.special_tokens[${JSON.stringify(name)}].ids are not token ids`);
        specials.set(typeof e.id === 'string' ? e.id : name, ids as number[]);
      }
      const single = templateOf(o.single, specials, `${where}.single`);
      const pair = o.pair === undefined || o.pair === null ? null : templateOf(o.pair, specials, `${where}.pair`);
      return (a, b, add) => {
        if (!add) return [a, b];
        if (b === null) return [applyTemplate(single, a, null), null];
        if (!pair) throw new Error(`tokenizer.json: ${where} has no pair template`);
        return [applyTemplate(pair, a, b), null];
      };
    }
    case 'BertProcessing':
    case 'RobertaProcessing': {
      const tokId = (k: string): number => {
        const v = o[k];
        if (!Array.isArray(v) || v.length !== 2 || !Number.isInteger(v[1])) throw new Error(`tokenizer.json: ${where}.${k} is not [token, id]`);
        return v[1] as number;
      };
      const cls = tokId('cls');
      const sep = tokId('sep');
      const roberta = o.type === 'RobertaProcessing';
      return (a, b, add) => {
        if (!add) return [a, b];
        const out = [cls, ...a, sep];
        if (b) out.push(...(roberta ? [sep] : []), ...b, sep);
        return [out, null];
      };
    }
    case 'ByteLevel':
      return (a, b) => [a, b]; // it only adjusts offsets
    case 'Sequence': {
      const steps = expectArray(o.processors, `${where}.processors`)
        .map((p, i) => buildPostStep(p, `${where}.processors[${i}]`))
        .filter((f): f is PostStep => f !== null);
      return (a, b, add) => {
        let r: [number[], number[] | null] = [a, b];
        for (const f of steps) r = f(r[0], r[1], add);
        return r;
      };
    }
    default:
      throw new Error(`tokenizer.json: ${where}: post-processor type ${typeName(o)} is not supported (TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence)`);
  }
}

export function buildPostProcessor(j: unknown, where = 'post_processor'): PostProcessor | null {
  const step = buildPostStep(j, where);
  if (!step) return null;
  return (a, b, add) => {
    const [x, y] = step(a, b, add);
    return y ? x.concat(y) : x;
  };
}
