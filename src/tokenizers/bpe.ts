// Byte-level BPE (GPT-2 style): text -> UTF-8 bytes -> pieces by the pre-tokenisation regex ->
// merges applied by rank inside each piece. Also reads and writes GPT-2's encoder.json +
// vocab.bpe and Hugging Face's tokenizer.json. Pure TypeScript: file access lives in
// ./files.ts (writing) and ./io.ts (loading).
import { BYTE_TO_CHAR, byteLevelToBytes, bytesToByteLevel, utf8Bytes, utf8Decode } from './bytes.js';
import { GPT2_PATTERN, compilePattern, specialsRegex, splitOnSpecials } from './pretokenize.js';
import type { Tokenizer } from './types.js';
import { writeFiles } from './files.js';
import { heapMerge, PairTable } from './pair-table.js';

/** Which special tokens encode() may meet: 'all', or a list of their strings. */
export type SpecialTokenSet = 'all' | Iterable<string>;

export interface EncodeOptions {
  /** Special tokens to encode as their own id when they occur in the text. Default: none. */
  allowedSpecial?: SpecialTokenSet;
  /**
   * Special tokens whose presence in the text is an error (as in tiktoken: text from users
   * should not be able to smuggle in control tokens). Default 'all', i.e. every special token
   * that is not allowed. Pass [] to encode them as ordinary text instead.
   */
  disallowedSpecial?: SpecialTokenSet;
}

/** Unicode normalisations a Hugging Face tokenizer.json may ask for (applied before splitting). */
export type NormalizationForm = 'NFC' | 'NFD' | 'NFKC' | 'NFKD';

export interface BpeSpec {
  /** Token (GPT-2 byte-level string) -> id. May also hold the special tokens. */
  vocab: ReadonlyMap<string, number> | Readonly<Record<string, number>>;
  /** Merges in rank order, as pairs of byte-level token strings. */
  merges: ReadonlyArray<readonly [string, string]>;
  /** Special token text -> id. */
  specialTokens?: ReadonlyMap<string, number> | Readonly<Record<string, number>>;
  /** Pre-tokenisation regex (JavaScript syntax, compiled with flags 'gu'). Default GPT-2's. */
  pattern?: string;
  /** Look a whole piece up in the vocabulary before merging (Hugging Face `ignore_merges`). */
  ignoreMerges?: boolean;
  /** Prepend a space to text not starting with one (Hugging Face ByteLevel `add_prefix_space`). */
  addPrefixSpace?: boolean;
  normalization?: NormalizationForm;
}

export type BpeFormat = 'huggingface' | 'gpt2';

/** Names an end-of-text token is known by, in order of preference. */
const EOT_NAMES = ['<|endoftext|>', '<|end_of_text|>', '</s>', '<eos>'];

/** Pieces up to this many bytes merge with a plain O(n^2) scan; longer ones use a heap. */
const SHORT_PIECE = 64;
/** The piece -> ids cache is cleared when it reaches this size (bounds memory on huge corpora). */
const CACHE_LIMIT = 200_000;

const entriesOf = <V>(m: ReadonlyMap<string, V> | Readonly<Record<string, V>>): [string, V][] =>
  m instanceof Map ? [...m.entries()] : Object.entries(m as Record<string, V>);

export class BpeTokenizer implements Tokenizer {
  readonly kind = 'bpe' as const;
  readonly vocabSize: number;
  readonly eotToken?: number;
  readonly pattern: string;
  readonly specialTokens: ReadonlyMap<string, number>;
  readonly ignoreMerges: boolean;
  readonly addPrefixSpace: boolean;
  readonly normalization?: NormalizationForm;

  private readonly vocab: Map<string, number>;
  private readonly mergeList: [string, string][];
  /** id -> bytes it stands for (special tokens: their UTF-8 text). */
  private readonly idBytes: (Uint8Array | undefined)[];
  /** byte value -> id of its single-byte token (-1: none). */
  private readonly byteIds = new Int32Array(256).fill(-1);
  /** (left id, right id) -> merge rank; mergeIds[rank] is the merged token's id. */
  private readonly mergeRanks: PairTable;
  private readonly mergeIds: Int32Array;
  private readonly re: RegExp;
  private readonly cache = new Map<string, number[]>();
  private readonly specialRes = new Map<string, RegExp | undefined>();
  private readonly scratch: number[] = [];

  constructor(spec: BpeSpec) {
    this.vocab = new Map(entriesOf(spec.vocab));
    const specials = new Map(entriesOf(spec.specialTokens ?? {}));
    this.specialTokens = specials;
    this.pattern = spec.pattern ?? GPT2_PATTERN;
    this.re = compilePattern(this.pattern);
    this.ignoreMerges = spec.ignoreMerges ?? false;
    this.addPrefixSpace = spec.addPrefixSpace ?? false;
    this.normalization = spec.normalization;

    let maxId = -1;
    for (const [tok, id] of [...this.vocab, ...specials]) {
      if (!Number.isInteger(id) || id < 0) throw new Error(`token ${JSON.stringify(tok)} has invalid id ${id}`);
      if (id > maxId) maxId = id;
    }
    this.vocabSize = maxId + 1;
    this.idBytes = new Array(this.vocabSize);
    for (const [tok, id] of this.vocab) {
      // A vocabulary entry outside the byte-level alphabet can only be an added token written
      // as plain text; take its UTF-8 bytes.
      this.idBytes[id] = byteLevelToBytes(tok) ?? new Uint8Array(utf8Bytes(tok));
    }
    for (const [tok, id] of specials) this.idBytes[id] = new Uint8Array(utf8Bytes(tok));
    for (let b = 0; b < 256; b++) this.byteIds[b] = this.vocab.get(BYTE_TO_CHAR[b]) ?? -1;

    this.mergeList = spec.merges.map(([a, b]) => [a, b]);
    this.mergeIds = new Int32Array(this.mergeList.length);
    this.mergeRanks = new PairTable(this.mergeList.length);
    this.mergeList.forEach(([a, b], rank) => {
      const ia = this.vocab.get(a);
      const ib = this.vocab.get(b);
      const ic = this.vocab.get(a + b);
      if (ia === undefined || ib === undefined || ic === undefined) {
        const missing = ia === undefined ? a : ib === undefined ? b : a + b;
        throw new Error(`merge ${rank} (${JSON.stringify(a)} ${JSON.stringify(b)}): token ${JSON.stringify(missing)} is not in the vocabulary`);
      }
      // A pair listed twice keeps its first (best) rank, as a rank table built in order would.
      if (this.mergeRanks.get(ia, ib) < 0) this.mergeRanks.set(ia, ib, rank);
      this.mergeIds[rank] = ic;
    });
    for (const name of EOT_NAMES) {
      const id = specials.get(name);
      if (id !== undefined) {
        this.eotToken = id;
        break;
      }
    }
  }

  /** Number of merges (ranks). */
  get numMerges(): number {
    return this.mergeList.length;
  }

  /** The merges in rank order, as byte-level token strings. */
  merges(): [string, string][] {
    return this.mergeList.map(([a, b]) => [a, b]);
  }

  /** Token string (byte-level form) -> id, specials excluded unless they are in the vocabulary. */
  vocabEntries(): [string, number][] {
    return [...this.vocab.entries()];
  }

  /** Id of a token given in byte-level form ('Ġthe') or of a special token; undefined if none. */
  tokenToId(token: string): number | undefined {
    return this.specialTokens.get(token) ?? this.vocab.get(token);
  }

  /** A token's byte-level form ('Ġthe'), or a special token's text; undefined for unknown ids. */
  idToToken(id: number): string | undefined {
    for (const [s, i] of this.specialTokens) if (i === id) return s;
    const b = this.idBytes[id];
    return b === undefined ? undefined : bytesToByteLevel(b);
  }

  /**
   * Text -> token ids. Special tokens are split out first (those in allowedSpecial become their
   * id); the rest is cut into pieces by the pattern and each piece is merged independently.
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const allowed = this.resolveSpecials(opts.allowedSpecial ?? []);
    const disallowed =
      opts.disallowedSpecial === undefined || opts.disallowedSpecial === 'all'
        ? [...this.specialTokens.keys()].filter((s) => !allowed.includes(s))
        : this.resolveSpecials(opts.disallowedSpecial);
    for (const s of disallowed) {
      const at = text.indexOf(s);
      if (at >= 0) {
        throw new Error(
          `text contains the special token ${JSON.stringify(s)} at index ${at}; pass ` +
            `{ allowedSpecial: [${JSON.stringify(s)}] } to encode it as that token, or ` +
            `{ disallowedSpecial: [] } to encode it as ordinary text`,
        );
      }
    }
    const out: number[] = [];
    splitOnSpecials(
      text,
      this.specialsRegexFor(allowed),
      (t) => this.encodeOrdinaryInto(t, out),
      (s) => out.push(this.specialTokens.get(s)!),
    );
    return out;
  }

  /** Text -> ids with no special-token handling at all: '<|endoftext|>' is just text here. */
  encodeOrdinary(text: string): number[] {
    const out: number[] = [];
    if (text.length > 0) this.encodeOrdinaryInto(text, out);
    return out;
  }

  /** Ids -> the bytes they stand for. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    let total = 0;
    for (let i = 0; i < ids.length; i++) total += this.bytesOf(ids[i]).length;
    const buf = new Uint8Array(total);
    let at = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.bytesOf(ids[i]);
      buf.set(b, at);
      at += b.length;
    }
    return buf;
  }

  /**
   * Ids -> text. A token may end inside a multi-byte character, so the bytes are joined first;
   * invalid UTF-8 (e.g. a sequence cut short) becomes U+FFFD, as GPT-2's errors='replace'.
   */
  decode(ids: ArrayLike<number>): string {
    return utf8Decode(this.decodeBytes(ids));
  }

  /** The bytes of one token (for streaming decoders that assemble characters themselves). */
  tokenBytes(id: number): Uint8Array {
    return this.bytesOf(id).slice();
  }

  /** Files for `format`: tokenizer.json (default) or encoder.json + vocab.bpe. */
  toFiles(format: BpeFormat = 'huggingface'): Record<string, string> {
    if (format === 'gpt2') return this.toGpt2Files();
    return { 'tokenizer.json': this.toHuggingFaceJson() };
  }

  async save(dir: string, format: BpeFormat = 'huggingface'): Promise<void> {
    await writeFiles(dir, this.toFiles(format));
  }

  /**
   * GPT-2's own files. encoder.json holds every token (special ones as their text) and
   * vocab.bpe the merges, one "left right" a line after a version header. The format has no
   * place for a pre-tokenisation pattern, so only GPT-2's pattern can be saved this way.
   */
  toGpt2Files(): { 'encoder.json': string; 'vocab.bpe': string } {
    if (this.pattern !== GPT2_PATTERN || this.ignoreMerges || this.addPrefixSpace || this.normalization) {
      throw new Error('GPT-2 files cannot hold a custom pattern or Hugging Face options; save as tokenizer.json');
    }
    const all = new Map(this.vocab);
    for (const [s, id] of this.specialTokens) all.set(s, id);
    return {
      'encoder.json': jsonObject(all, ''),
      'vocab.bpe': '#version: 0.2\n' + this.mergeList.map(([a, b]) => `${a} ${b}\n`).join(''),
    };
  }

  /**
   * GPT-2's files -> tokenizer. Entries of encoder.json that are neither a single byte nor the
   * result of a merge (GPT-2: only '<|endoftext|>') are taken as special tokens.
   */
  static fromGpt2Files(encoderJson: string, vocabBpe: string): BpeTokenizer {
    const enc = JSON.parse(encoderJson) as Record<string, number>;
    const merges = parseMergesText(vocabBpe);
    const vocab = new Map(Object.entries(enc));
    const produced = new Set<string>(BYTE_TO_CHAR);
    for (const [a, b] of merges) produced.add(a + b);
    const specials = new Map<string, number>();
    for (const [tok, id] of vocab) if (!produced.has(tok)) specials.set(tok, id);
    return new BpeTokenizer({ vocab, merges, specialTokens: specials });
  }

  /**
   * Hugging Face tokenizer.json text. Written like the GPT-2 file on the Hugging Face hub:
   * BPE model, byte-level pre-tokenizer and decoder, special tokens as added_tokens (and in the
   * vocabulary, so their ids are kept), merges as "left right" strings (read by every version of
   * the `tokenizers` library; newer ones also accept pairs).
   */
  toHuggingFaceJson(): string {
    const byteLevel = (regex: boolean) => ({
      type: 'ByteLevel',
      add_prefix_space: this.addPrefixSpace,
      trim_offsets: true,
      use_regex: regex,
    });
    const pre =
      this.pattern === GPT2_PATTERN
        ? byteLevel(true)
        : {
            type: 'Sequence',
            pretokenizers: [
              { type: 'Split', pattern: { Regex: this.pattern }, behavior: 'Isolated', invert: false },
              byteLevel(false),
            ],
          };
    const added = [...this.specialTokens]
      .sort((x, y) => x[1] - y[1])
      .map(([content, id]) => ({
        id,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      }));
    const all = new Map(this.vocab);
    for (const [s, id] of this.specialTokens) all.set(s, id);
    const head = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: this.normalization ? { type: this.normalization } : null,
      pre_tokenizer: pre,
      post_processor: null,
      decoder: byteLevel(true),
    };
    const model = {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: this.ignoreMerges,
    };
    // Built by hand so that the vocabulary keeps id order (JSON.stringify of an object would put
    // integer-like keys such as "0" first) and the file stays one entry per line.
    const indent = (s: string) => s.replace(/\n/g, '\n  ');
    const modelText =
      JSON.stringify(model, null, 2).slice(0, -2) +
      ',\n  "vocab": ' +
      indent(jsonObject(all, '')) +
      ',\n  "merges": [\n' +
      this.mergeList.map(([a, b]) => '    ' + JSON.stringify(`${a} ${b}`)).join(',\n') +
      '\n  ]\n}';
    return JSON.stringify(head, null, 2).slice(0, -2) + ',\n  "model": ' + indent(modelText) + '\n}\n';
  }

  /**
   * Hugging Face tokenizer.json (text or parsed) -> tokenizer. Byte-level BPE models only: a
   * ByteLevel pre-tokenizer (GPT-2 regex), or Split(regex) + ByteLevel(use_regex: false) with a
   * regex that JavaScript can compile. Every entry of added_tokens becomes a special token
   * (split out before pre-tokenisation when allowed, see encode()).
   */
  static fromHuggingFaceJson(json: string | HfTokenizerJson): BpeTokenizer {
    const tj = (typeof json === 'string' ? JSON.parse(json) : json) as HfTokenizerJson;
    const model = tj.model;
    if (!model || (model.type !== undefined && model.type !== 'BPE')) {
      throw new Error(`tokenizer.json: model type ${JSON.stringify(model?.type)} is not supported (only BPE)`);
    }
    if (model.continuing_subword_prefix || model.end_of_word_suffix || model.byte_fallback) {
      throw new Error('tokenizer.json: BPE with subword prefixes/suffixes or byte_fallback is not byte-level BPE; not supported');
    }
    const merges = (model.merges ?? []).map((m, i): [string, string] => {
      if (Array.isArray(m) && m.length === 2) return [String(m[0]), String(m[1])];
      if (typeof m === 'string') {
        const parts = m.split(' ');
        if (parts.length === 2) return [parts[0], parts[1]];
      }
      throw new Error(`tokenizer.json: merge ${i} (${JSON.stringify(m)}) is neither "a b" nor ["a", "b"]`);
    });
    const specials = new Map<string, number>();
    for (const t of tj.added_tokens ?? []) specials.set(t.content, t.id);
    const vocab = new Map(Object.entries(model.vocab ?? {}));

    let pattern = GPT2_PATTERN;
    let addPrefixSpace = false;
    const pre = tj.pre_tokenizer;
    const list = pre?.type === 'Sequence' ? pre.pretokenizers ?? [] : pre ? [pre] : [];
    let sawByteLevel = false;
    let custom: string | undefined;
    for (const p of list) {
      if (p.type === 'ByteLevel') {
        sawByteLevel = true;
        addPrefixSpace = p.add_prefix_space ?? false;
        if (p.use_regex === false && custom === undefined) custom = '';
      } else if (p.type === 'Split' && p.pattern?.Regex !== undefined && (p.behavior ?? 'Isolated') === 'Isolated' && !p.invert) {
        custom = p.pattern.Regex;
      } else {
        throw new Error(`tokenizer.json: pre-tokenizer ${JSON.stringify(p.type)} is not supported (ByteLevel, or Split(Isolated) + ByteLevel)`);
      }
    }
    if (!sawByteLevel) throw new Error('tokenizer.json: not a byte-level BPE (no ByteLevel pre-tokenizer)');
    if (custom !== undefined) pattern = custom === '' ? '[^]+' : custom;

    let normalization: NormalizationForm | undefined;
    const norm = tj.normalizer;
    if (norm) {
      if (norm.type === 'NFC' || norm.type === 'NFD' || norm.type === 'NFKC' || norm.type === 'NFKD') normalization = norm.type;
      else throw new Error(`tokenizer.json: normalizer ${JSON.stringify(norm.type)} is not supported`);
    }
    return new BpeTokenizer({
      vocab,
      merges,
      specialTokens: specials,
      pattern,
      ignoreMerges: model.ignore_merges ?? false,
      addPrefixSpace,
      normalization,
    });
  }

  // ---- internals ----

  private bytesOf(id: number): Uint8Array {
    const b = this.idBytes[id];
    if (b === undefined) throw new Error(`token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
    return b;
  }

  private resolveSpecials(set: SpecialTokenSet): string[] {
    if (set === 'all') return [...this.specialTokens.keys()];
    const out = [...set];
    for (const s of out) {
      if (!this.specialTokens.has(s)) throw new Error(`${JSON.stringify(s)} is not a special token of this tokenizer`);
    }
    return out;
  }

  private specialsRegexFor(allowed: string[]): RegExp | undefined {
    if (allowed.length === 0) return undefined;
    const key = [...allowed].sort().join('\u0000');
    if (!this.specialRes.has(key)) this.specialRes.set(key, specialsRegex(allowed));
    return this.specialRes.get(key);
  }

  private encodeOrdinaryInto(text: string, out: number[]): void {
    if (this.normalization) text = text.normalize(this.normalization);
    if (this.addPrefixSpace && !text.startsWith(' ')) text = ' ' + text;
    // The pattern loop of forEachPiece, inlined: this is the hot path of encoding.
    const re = this.re;
    re.lastIndex = 0;
    let end = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(text)) !== null) {
      const piece = m[0];
      if (m.index > end) this.encodePiece(text.slice(end, m.index), out);
      if (piece.length === 0) {
        re.lastIndex++;
        continue;
      }
      this.encodePiece(piece, out);
      end = m.index + piece.length;
    }
    if (end < text.length) this.encodePiece(text.slice(end), out);
  }

  private encodePiece(piece: string, out: number[]): void {
    let ids = this.cache.get(piece);
    if (ids === undefined) {
      ids = this.mergePiece(piece);
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(piece, ids);
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]);
  }

  private rank(a: number, b: number): number {
    const r = this.mergeRanks.get(a, b);
    return r < 0 ? Infinity : r;
  }

  /** BPE on one piece: repeatedly merge the adjacent pair of lowest rank (leftmost on ties). */
  private mergePiece(piece: string): number[] {
    const bytes = this.scratch;
    bytes.length = 0;
    utf8Bytes(piece, bytes);
    if (this.ignoreMerges) {
      const whole = this.vocab.get(bytesToByteLevel(bytes));
      if (whole !== undefined) return [whole];
    }
    const n = bytes.length;
    const sym: number[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const id = this.byteIds[bytes[i]];
      if (id < 0) throw new Error(`byte 0x${bytes[i].toString(16).padStart(2, '0')} has no token in this vocabulary`);
      sym[i] = id;
    }
    if (n < 2) return sym;
    if (n > SHORT_PIECE) return this.mergeLong(sym);
    const ranks: number[] = new Array(n - 1);
    for (let i = 0; i < n - 1; i++) ranks[i] = this.rank(sym[i], sym[i + 1]);
    for (;;) {
      let best = Infinity;
      let at = -1;
      for (let i = 0; i < ranks.length; i++) {
        if (ranks[i] < best) {
          best = ranks[i];
          at = i;
        }
      }
      if (at < 0) break;
      sym[at] = this.mergeIds[best];
      sym.splice(at + 1, 1);
      ranks.splice(at, 1);
      if (at > 0) ranks[at - 1] = this.rank(sym[at - 1], sym[at]);
      if (at < ranks.length) ranks[at] = this.rank(sym[at], sym[at + 1]);
    }
    return sym;
  }

  /**
   * The same rule for long pieces (a long run of spaces or symbols) in O(n log n): symbols in a
   * linked list, candidate pairs in a min-heap keyed by (rank, position), entries checked
   * against the current pair when popped instead of being removed when they go stale.
   */
  private mergeLong(sym: number[]): number[] {
    return heapMerge(sym, (a, b) => this.rank(a, b), this.mergeIds);
  }
}

/** Shape of the parts of a Hugging Face tokenizer.json that are read here. */
export interface HfTokenizerJson {
  added_tokens?: { id: number; content: string; special?: boolean }[];
  normalizer?: { type: string } | null;
  pre_tokenizer?: HfPreTokenizer | null;
  model?: {
    type?: string;
    vocab?: Record<string, number>;
    merges?: (string | [string, string])[];
    continuing_subword_prefix?: string | null;
    end_of_word_suffix?: string | null;
    byte_fallback?: boolean;
    ignore_merges?: boolean;
  };
}
interface HfPreTokenizer {
  type: string;
  add_prefix_space?: boolean;
  use_regex?: boolean;
  pattern?: { Regex?: string; String?: string };
  behavior?: string;
  invert?: boolean;
  pretokenizers?: HfPreTokenizer[];
}

/** vocab.bpe / merges.txt text -> merges. Only a first line starting "#version" is a header
 *  (later lines may begin with '#': GPT-2 merges '#' with '#'). */
export function parseMergesText(text: string): [string, string][] {
  const lines = text.split('\n');
  const out: [string, string][] = [];
  lines.forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '' || (i === 0 && line.startsWith('#version'))) return;
    const parts = line.split(' ');
    if (parts.length !== 2) throw new Error(`merges line ${i + 1} (${JSON.stringify(line)}) is not "left right"`);
    out.push([parts[0], parts[1]]);
  });
  return out;
}

/** A JSON object of string -> number in ascending value order, one entry a line. */
function jsonObject(m: Map<string, number>, indent: string): string {
  const entries = [...m].sort((x, y) => x[1] - y[1]);
  if (entries.length === 0) return '{}';
  return '{\n' + entries.map(([k, v]) => `${indent}  ${JSON.stringify(k)}: ${v}`).join(',\n') + `\n${indent}}`;
}
