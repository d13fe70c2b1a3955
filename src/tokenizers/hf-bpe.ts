// The BPE model of a Hugging Face tokenizer.json, as `tokenizers` defines it (models/bpe):
// a pre-token is cut into characters (each looked up in the vocabulary, the later ones with
// `continuing_subword_prefix`, the last with `end_of_word_suffix`); a character missing from the
// vocabulary becomes its UTF-8 bytes as <0xNN> tokens (`byte_fallback`) or the `unk_token`
// (consecutive ones fused into one with `fuse_unk`), or is dropped when there is neither; then
// the pair of adjacent symbols with the lowest merge rank is merged, leftmost first, until no
// pair has a rank. `ignore_merges` first looks the whole pre-token up in the vocabulary.
//
// Symbols are token ids and the merge table is keyed by id pairs (an open-addressing int32
// table), so the merge loop does no string work; results are cached per pre-token.
import { BYTE_TO_CHAR, bytesToByteLevel, utf8Bytes } from './bytes.js';
import { heapMerge, PairTable } from './pair-table.js';

/** The model object of tokenizer.json (type BPE). */
export interface HfBpeJson {
  type?: string;
  vocab?: Record<string, number>;
  merges?: (string | [string, string])[];
  unk_token?: string | null;
  byte_fallback?: boolean;
  fuse_unk?: boolean;
  ignore_merges?: boolean;
  continuing_subword_prefix?: string | null;
  end_of_word_suffix?: string | null;
  dropout?: number | null;
}

/** Pieces up to this many symbols merge with an O(n^2) scan; longer ones use a heap. */
const SHORT_PIECE = 48;
/** The pre-token -> ids cache is cleared when it reaches this many entries. */
const CACHE_LIMIT = 200_000;
/** Pre-tokens longer than this are not cached (a long one is rarely seen twice). */
const CACHE_MAX_LENGTH = 256;

export class HfBpeModel {
  /** Token string -> id, as in the file. */
  readonly vocab: Map<string, number>;
  readonly unkToken: string | null;
  readonly byteFallback: boolean;
  readonly fuseUnk: boolean;
  readonly ignoreMerges: boolean;
  readonly prefix: string;
  readonly suffix: string;
  /** Largest id in the vocabulary + 1. */
  readonly size: number;

  private readonly unkId: number;
  /** (left id, right id) -> merge rank; mergeIds[rank] is the merged token's id. */
  private readonly ranks: PairTable;
  private readonly mergeIds: Int32Array;
  /** Code point -> id of the single-character token (fast path without prefix/suffix). */
  private readonly charIds = new Map<number, number>();
  /** Byte -> id of the byte-level character's token (-1: none). */
  private readonly byteLevelIds = new Int32Array(256).fill(-1);
  /** Byte -> id of <0xNN> (-1: none). */
  private readonly fallbackIds = new Int32Array(256).fill(-1);
  private readonly plain: boolean;
  /**
   * A character that merges never join to a preceding different character (SentencePiece's ▁
   * in Llama-2-style vocabularies): a pre-token can be cut before each run of it and the parts
   * merged (and cached) independently with the same result. -1 when no such character.
   */
  private readonly wordStart: number;
  private readonly cache = new Map<string, number | number[]>();
  private readonly bytes: number[] = [];

  /**
   * @param byteLevel the pre-tokens given to encode() are raw text whose UTF-8 bytes are the
   * symbols (a ByteLevel pre-tokenizer's mapping, applied here instead of as strings).
   */
  constructor(
    json: HfBpeJson,
    readonly byteLevel: boolean,
  ) {
    if (json.vocab === undefined || json.vocab === null || typeof json.vocab !== 'object' || Array.isArray(json.vocab)) {
      throw new Error('tokenizer.json: model.vocab is missing or not an object of token -> id');
    }
    if (!Array.isArray(json.merges)) throw new Error('tokenizer.json: model.merges is missing or not an array');
    if (json.dropout !== undefined && json.dropout !== null && json.dropout !== 0) {
      throw new Error(`tokenizer.json: BPE dropout ${json.dropout} is not supported (encoding would be random)`);
    }
    this.vocab = new Map();
    let maxId = -1;
    const vocab = json.vocab;
    for (const tok in vocab) {
      const id = vocab[tok];
      if (!Number.isInteger(id) || id < 0) throw new Error(`tokenizer.json: model.vocab[${JSON.stringify(tok)}] is ${JSON.stringify(id)}, not a non-negative integer id`);
      this.vocab.set(tok, id);
      if (id > maxId) maxId = id;
    }
    this.size = maxId + 1;
    this.unkToken = json.unk_token ?? null;
    this.unkId = this.unkToken === null ? -1 : (this.vocab.get(this.unkToken) ?? -1);
    if (this.unkToken !== null && this.unkId < 0) throw new Error(`tokenizer.json: model.unk_token ${JSON.stringify(this.unkToken)} is not in the vocabulary`);
    this.byteFallback = json.byte_fallback ?? false;
    this.fuseUnk = json.fuse_unk ?? false;
    this.ignoreMerges = json.ignore_merges ?? false;
    this.prefix = json.continuing_subword_prefix ?? '';
    this.suffix = json.end_of_word_suffix ?? '';
    this.plain = this.prefix === '' && this.suffix === '';

    for (const [tok, id] of this.vocab) {
      const cp = tok.codePointAt(0);
      if (cp !== undefined && tok.length === (cp > 0xffff ? 2 : 1)) this.charIds.set(cp, id);
    }
    for (let b = 0; b < 256; b++) {
      this.byteLevelIds[b] = this.vocab.get(BYTE_TO_CHAR[b]) ?? -1;
      this.fallbackIds[b] = this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`) ?? -1;
    }

    // Merges: "left right" strings (exactly one space) or [left, right] pairs.
    const merges = json.merges;
    const n = merges.length;
    this.ranks = new PairTable(n);
    this.mergeIds = new Int32Array(n);
    // Whether some merge joins a token not ending in ▁ to one starting with ▁ (see wordStart).
    let joinsBeforeWordStart = false;
    let rank = 0;
    for (let i = 0; i < n; i++) {
      const m = merges[i];
      let a: string;
      let b: string;
      if (typeof m === 'string') {
        const sp = m.indexOf(' ');
        if (sp < 0 || m.indexOf(' ', sp + 1) >= 0) {
          if (m.startsWith('#version')) continue;
          throw new Error(`tokenizer.json: model.merges[${i}] ${JSON.stringify(m)} is not "left right" (one space)`);
        }
        a = m.slice(0, sp);
        b = m.slice(sp + 1);
      } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
        a = m[0];
        b = m[1];
      } else {
        throw new Error(`tokenizer.json: model.merges[${i}] ${JSON.stringify(m)} is neither "left right" nor ["left", "right"]`);
      }
      const ia = this.vocab.get(a);
      const ib = this.vocab.get(b);
      // With a continuing_subword_prefix the right part loses it in the merged token.
      const merged = a + (this.prefix ? b.slice(this.prefix.length) : b);
      const ic = this.vocab.get(merged);
      if (ia === undefined || ib === undefined || ic === undefined) {
        const missing = ia === undefined ? a : ib === undefined ? b : merged;
        throw new Error(`tokenizer.json: model.merges[${i}] (${JSON.stringify(a)} ${JSON.stringify(b)}): token ${JSON.stringify(missing)} is not in the vocabulary`);
      }
      // A pair listed twice takes its later rank, as the `tokenizers` merge map does.
      this.ranks.set(ia, ib, rank);
      this.mergeIds[rank] = ic;
      if (b.charCodeAt(0) === 0x2581 && a.charCodeAt(a.length - 1) !== 0x2581) joinsBeforeWordStart = true;
      rank++;
    }
    this.wordStart = !byteLevel && this.plain && !this.ignoreMerges && this.vocab.has('\u2581') && !joinsBeforeWordStart ? 0x2581 : -1;
  }

  /** Appends the ids of one pre-token to out. */
  encode(piece: string, out: number[]): void {
    if (piece.length === 0) return;
    const ws = this.wordStart;
    if (ws >= 0 && piece.length > 1) {
      // Cut before each ▁ that follows another character.
      let start = 0;
      let j = piece.indexOf('\u2581', 1);
      while (j > 0) {
        if (piece.charCodeAt(j - 1) !== ws) {
          this.encodeCached(start === 0 && j === piece.length ? piece : piece.slice(start, j), out);
          start = j;
        }
        j = piece.indexOf('\u2581', j + 1);
      }
      this.encodeCached(start === 0 ? piece : piece.slice(start), out);
      return;
    }
    this.encodeCached(piece, out);
  }

  private encodeCached(piece: string, out: number[]): void {
    let ids = this.cache.get(piece);
    if (ids === undefined) {
      const r = this.mergeWord(piece);
      ids = r.length === 1 ? r[0] : r;
      if (piece.length <= CACHE_MAX_LENGTH) {
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(piece, ids);
      }
    }
    if (typeof ids === 'number') out.push(ids);
    else for (let i = 0; i < ids.length; i++) out.push(ids[i]);
  }

  /** Drops the pre-token cache. */
  clearCache(): void {
    this.cache.clear();
  }

  /** BPE of one pre-token, uncached. */
  private mergeWord(piece: string): number[] {
    if (this.ignoreMerges) {
      const whole = this.vocab.get(this.byteLevel ? bytesToByteLevel(utf8Bytes(piece, (this.bytes.length = 0, this.bytes))) : piece);
      if (whole !== undefined) return [whole];
    }
    const sym = this.symbols(piece);
    if (sym.length < 2) return sym;
    return sym.length > SHORT_PIECE ? this.mergeLong(sym) : this.mergeShort(sym);
  }

  /** The initial symbols (ids) of a pre-token. */
  private symbols(piece: string): number[] {
    const sym: number[] = [];
    if (this.byteLevel) {
      const bytes = this.bytes;
      bytes.length = 0;
      utf8Bytes(piece, bytes);
      if (this.plain) {
        let ok = true;
        for (let i = 0; i < bytes.length; i++) {
          const id = this.byteLevelIds[bytes[i]];
          if (id < 0) {
            ok = false;
            break;
          }
          sym.push(id);
        }
        if (ok) return sym;
        sym.length = 0;
      }
      return this.symbolsOfChars(bytesToByteLevel(bytes), sym);
    }
    if (this.plain) {
      // Fast path: every character known.
      for (let i = 0; i < piece.length; i++) {
        const cp = piece.codePointAt(i)!;
        if (cp > 0xffff) i++;
        const id = this.charIds.get(cp);
        if (id === undefined) {
          sym.length = 0;
          return this.symbolsOfChars(piece, sym);
        }
        sym.push(id);
      }
      return sym;
    }
    return this.symbolsOfChars(piece, sym);
  }

  /** The general character walk of `tokenizers`' merge_word (prefix/suffix, fallback, unk). */
  private symbolsOfChars(word: string, sym: number[]): number[] {
    let unk = -1; // pending unk id (fused ones count once)
    for (let i = 0; i < word.length; ) {
      const cp = word.codePointAt(i)!;
      const len = cp > 0xffff ? 2 : 1;
      let s = word.slice(i, i + len);
      if (i > 0 && this.prefix) s = this.prefix + s;
      i += len;
      if (i >= word.length && this.suffix) s = s + this.suffix;
      const id = this.plain ? this.charIds.get(cp) : this.vocab.get(s);
      if (id !== undefined) {
        if (unk >= 0) {
          sym.push(unk);
          unk = -1;
        }
        sym.push(id);
        continue;
      }
      if (this.byteFallback) {
        const bytes = utf8Bytes(s);
        let all = true;
        for (const b of bytes) if (this.fallbackIds[b] < 0) all = false;
        if (all) {
          // As in `tokenizers`, a pending unk is not flushed before the byte tokens.
          for (const b of bytes) sym.push(this.fallbackIds[b]);
          continue;
        }
      }
      if (this.unkId >= 0) {
        if (unk >= 0 && !this.fuseUnk) sym.push(unk);
        unk = this.unkId;
      }
      // no unk token: the character is dropped
    }
    if (unk >= 0) sym.push(unk);
    return sym;
  }

  private rank(a: number, b: number): number {
    return this.ranks.get(a, b);
  }

  /** Lowest rank first, leftmost on ties: an O(n^2) scan, fine for short pieces. */
  private mergeShort(sym: number[]): number[] {
    const n = sym.length;
    const ranks: number[] = new Array(n - 1);
    for (let i = 0; i < n - 1; i++) ranks[i] = this.rank(sym[i], sym[i + 1]);
    for (;;) {
      let best = -1;
      let at = -1;
      for (let i = 0; i < ranks.length; i++) {
        const r = ranks[i];
        if (r >= 0 && (best < 0 || r < best)) {
          best = r;
          at = i;
        }
      }
      if (at < 0) return sym;
      sym[at] = this.mergeIds[best];
      sym.splice(at + 1, 1);
      ranks.splice(at, 1);
      if (at > 0) ranks[at - 1] = this.rank(sym[at - 1], sym[at]);
      if (at < ranks.length) ranks[at] = this.rank(sym[at], sym[at + 1]);
    }
  }

  /**
   * The same rule in O(n log n) for long pieces: symbols in a linked list, candidate pairs in a
   * min-heap keyed by rank * 2^32 + position, stale entries skipped when popped.
   */
  private mergeLong(sym: number[]): number[] {
    return heapMerge(sym, (a, b) => this.rank(a, b), this.mergeIds);
  }
}
