// A Hugging Face tokenizer.json (+ tokenizer_config.json) as the `tokenizers` library runs it:
//
//   text -> split on added tokens (leftmost-longest; single_word, lstrip, rstrip honoured)
//        -> each other stretch normalized, then split on the added tokens marked `normalized`
//        -> pre-tokenizers -> BPE model per piece -> post-processor (special tokens)
//   ids  -> tokens (special ones dropped if asked) -> decoders -> text
//        -> clean_up_tokenization_spaces from tokenizer_config.json (as transformers does)
//
// What is supported is listed in ./hf-components.ts (normalizers, pre-tokenizers, decoders,
// post-processors), ./hf-bpe.ts (the BPE model) and ./hf-regex.ts (Oniguruma patterns
// translated for JavaScript). Pure TypeScript: no file access (save() imports node:fs on
// demand through ./files.ts), so it runs in a browser as well.
import { writeFiles } from './files.js';
import { HfBpeModel, type HfBpeJson } from './hf-bpe.js';
import { HfUnigramModel, type HfUnigramJson } from './hf-unigram.js';
import { HfWordPieceModel, type HfWordPieceJson } from './hf-wordpiece.js';
import {
  ByteLevelStage,
  buildDecoder,
  buildNormalizer,
  buildPostProcessor,
  buildPreTokenizer,
  type Decoder,
  type Normalizer,
  type PieceSink,
  type PostProcessor,
  type PreStage,
} from './hf-components.js';
import type { Tokenizer } from './types.js';

/** An entry of tokenizer.json's added_tokens. */
export interface HfAddedTokenJson {
  id: number;
  content: string;
  single_word?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
  special?: boolean;
}

/** The parts of tokenizer.json read here (the components are checked as they are built). */
export interface HfTokenizerFileJson {
  version?: string;
  added_tokens?: HfAddedTokenJson[];
  normalizer?: unknown;
  pre_tokenizer?: unknown;
  model?: HfBpeJson;
  post_processor?: unknown;
  decoder?: unknown;
  [key: string]: unknown;
}

/** A special token in tokenizer_config.json: its text, or an AddedToken-like object. */
export type HfConfigToken = string | { content: string; [key: string]: unknown } | null;

/** The parts of tokenizer_config.json read here. */
export interface HfTokenizerConfigJson {
  bos_token?: HfConfigToken;
  eos_token?: HfConfigToken;
  unk_token?: HfConfigToken;
  pad_token?: HfConfigToken;
  additional_special_tokens?: HfConfigToken[];
  chat_template?: string | { name: string; template: string }[] | null;
  clean_up_tokenization_spaces?: boolean;
  split_special_tokens?: boolean;
  [key: string]: unknown;
}

export interface HfEncodeOptions {
  /** Apply the post-processor's special tokens (Llama's BOS). Default true, as in `tokenizers`. */
  addSpecialTokens?: boolean;
  /** A second text, for pair templates (encoded after the first, as TemplateProcessing's B). */
  pair?: string;
}

export interface HfDecodeOptions {
  /** Leave out special tokens (added tokens marked special). Default false. */
  skipSpecialTokens?: boolean;
  /** transformers' clean-up of spaces before punctuation. Default: tokenizer_config's
   *  clean_up_tokenization_spaces (false without a config). */
  cleanUpTokenizationSpaces?: boolean;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
}

/** Names an end-of-text token may have, used as eotToken without a tokenizer_config.json. */
const EOT_NAMES = ['<|endoftext|>', '<|end_of_text|>', '</s>', '<eos>', '<|im_end|>'];

// As the `regex` crate reads \w and \s (single_word, lstrip, rstrip).
const WORD_CHAR = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;
const ENDS_WITH_WORD = new RegExp(WORD_CHAR.source + '$', 'u');
const STARTS_WITH_WORD = new RegExp('^' + WORD_CHAR.source, 'u');
const TRAILING_SPACE = /\p{White_Space}*$/u;
const LEADING_SPACE = /^\p{White_Space}*/u;

interface TrieNode {
  next: Map<number, TrieNode>;
  token?: AddedToken;
}

/**
 * Finds added tokens in text the way `tokenizers`' AddedVocabulary does: leftmost-longest
 * matches of all contents (an Aho-Corasick automaton there, a trie walked from each candidate
 * start here), then the single_word / lstrip / rstrip rules.
 */
class AddedTokenSplitter {
  private readonly root: TrieNode = { next: new Map() };
  /** Matches any first code unit of a token: skips quickly to candidate starts. */
  private readonly first: RegExp;

  constructor(tokens: AddedToken[], contentOf: (t: AddedToken) => string) {
    const firsts = new Set<number>();
    for (const t of tokens) {
      const s = contentOf(t);
      if (s.length === 0) continue;
      let node = this.root;
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        let n = node.next.get(c);
        if (!n) node.next.set(c, (n = { next: new Map() }));
        node = n;
      }
      node.token ??= t; // the same content twice: the first entry wins
      firsts.add(s.charCodeAt(0));
    }
    const cls = [...firsts].map((c) => `\\u${c.toString(16).padStart(4, '0')}`).join('');
    this.first = new RegExp(cls ? `[${cls}]` : '[]', 'g');
  }

  /**
   * Calls onText(start, end) for the stretches between tokens (never empty) and onToken for
   * each token found, in order. skip: tokens to leave as text (split_special_tokens).
   */
  split(text: string, onText: (start: number, end: number) => void, onToken: (t: AddedToken) => void, skipSpecial: boolean): void {
    const first = this.first;
    let done = 0; // end of the last token (start of the pending text)
    let pos = 0;
    while (pos < text.length) {
      first.lastIndex = pos;
      const m = first.exec(text);
      if (m === null) break;
      const s = m.index;
      // Longest token starting at s.
      let node: TrieNode | undefined = this.root;
      let tok: AddedToken | undefined;
      let end = s;
      for (let i = s; i < text.length; i++) {
        node = node.next.get(text.charCodeAt(i));
        if (!node) break;
        if (node.token) {
          tok = node.token;
          end = i + 1;
        }
      }
      if (!tok) {
        pos = s + 1;
        continue;
      }
      pos = end;
      if (skipSpecial && tok.special) continue;
      if (tok.singleWord) {
        const startOk = s === 0 || !ENDS_WITH_WORD.test(text.slice(0, s));
        const stopOk = end === text.length || !STARTS_WITH_WORD.test(text.slice(end));
        if (!startOk || !stopOk) continue;
      }
      let start = s;
      if (tok.lstrip) start = Math.max(TRAILING_SPACE.exec(text.slice(done, s))!.index + done, done);
      if (tok.rstrip) end += LEADING_SPACE.exec(text.slice(end))![0].length;
      if (start > done) onText(done, start);
      onToken(tok);
      done = end;
      pos = end;
    }
    if (done < text.length) onText(done, text.length);
  }
}

const configToken = (t: HfConfigToken | undefined): string | undefined => {
  if (t === null || t === undefined) return undefined;
  if (typeof t === 'string') return t;
  if (typeof t === 'object' && typeof t.content === 'string') return t.content;
  return undefined;
};

/** transformers' clean_up_tokenization: no space before . ? ! , and English contractions. */
export function cleanUpTokenization(s: string): string {
  return s
    .replaceAll(' .', '.')
    .replaceAll(' ?', '?')
    .replaceAll(' !', '!')
    .replaceAll(' ,', ',')
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

export class HfTokenizer implements Tokenizer {
  readonly kind = 'hf' as const;
  readonly vocabSize: number;
  /** The end-of-text id: tokenizer_config's eos_token (without a config: a token named like one). */
  readonly eotToken?: number;
  readonly bosToken?: string;
  readonly bosTokenId?: number;
  readonly eosToken?: string;
  readonly eosTokenId?: number;
  /** The chat template (Jinja) of tokenizer_config.json, if any ('default' of a named list). */
  readonly chatTemplate?: string;
  /** Special added tokens: text -> id. */
  readonly specialTokens: ReadonlyMap<string, number>;
  /** Whether decode() cleans up spaces by default (tokenizer_config's clean_up_tokenization_spaces). */
  readonly cleanUpTokenizationSpaces: boolean;

  /** tokenizer.json's text, or the parsed object to serialize when asked (toFiles). */
  private readonly json: string | HfTokenizerFileJson;
  private readonly configText?: string;
  private readonly model: HfBpeModel | HfWordPieceModel | HfUnigramModel;
  private readonly normalizer: Normalizer | null;
  private readonly stages: PreStage[];
  private readonly postProcessor: PostProcessor | null;
  private readonly decoder: Decoder | null;
  private readonly added: AddedToken[];
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedByContent = new Map<string, AddedToken>();
  /** Token strings skipped by skipSpecialTokens. */
  private readonly skipSet = new Set<string>();
  private readonly rawSplitter: AddedTokenSplitter | null;
  private readonly normalizedSplitter: AddedTokenSplitter | null;
  private readonly splitSpecial: boolean;
  private readonly idTokens: (string | undefined)[];
  /** The ids being produced by encode() (the model sink appends here). */
  private out: number[] = [];
  private readonly modelSink: PieceSink;

  /**
   * @param tokenizerJson tokenizer.json, as text (kept for toFiles) or parsed
   * @param configJson tokenizer_config.json, as text or parsed (optional)
   * @param jsonText the text tokenizerJson was parsed from, when given parsed (kept for toFiles)
   */
  constructor(tokenizerJson: string | HfTokenizerFileJson, configJson?: string | HfTokenizerConfigJson | null, jsonText?: string) {
    let tj: HfTokenizerFileJson;
    if (typeof tokenizerJson === 'string') {
      try {
        tj = JSON.parse(tokenizerJson) as HfTokenizerFileJson;
      } catch (e) {
        throw new Error(`tokenizer.json is not valid JSON: ${(e as Error).message}`);
      }
      this.json = tokenizerJson;
    } else {
      tj = tokenizerJson;
      this.json = jsonText ?? tokenizerJson;
    }
    if (tj === null || typeof tj !== 'object' || Array.isArray(tj)) throw new Error('tokenizer.json is not a JSON object');
    let cfg: HfTokenizerConfigJson = {};
    if (configJson !== undefined && configJson !== null) {
      if (typeof configJson === 'string') {
        try {
          cfg = JSON.parse(configJson) as HfTokenizerConfigJson;
        } catch (e) {
          throw new Error(`tokenizer_config.json is not valid JSON: ${(e as Error).message}`);
        }
        this.configText = configJson;
      } else {
        cfg = configJson;
        this.configText = JSON.stringify(configJson, null, 2);
      }
      if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) throw new Error('tokenizer_config.json is not a JSON object');
    }

    // Model.
    const model = tj.model;
    if (model === undefined || model === null || typeof model !== 'object') throw new Error('tokenizer.json: model is missing');
    const modelType = model.type ?? (model.merges !== undefined ? 'BPE' : undefined);
    if (modelType !== 'BPE' && modelType !== 'WordPiece' && modelType !== 'Unigram') throw new Error(`tokenizer.json: model type ${JSON.stringify(modelType ?? null)} is not supported (BPE, WordPiece, Unigram)`);

    // Pipeline stages. A ByteLevel pre-tokenizer at the end hands raw text to the model, which
    // reads its UTF-8 bytes directly (no byte-level strings on the encode path).
    this.normalizer = buildNormalizer(tj.normalizer);
    this.stages = buildPreTokenizer(tj.pre_tokenizer);
    const last = this.stages[this.stages.length - 1];
    const byteLevel = last instanceof ByteLevelStage;
    if (byteLevel) last.terminal = true;
    this.model = modelType === 'WordPiece' ? new HfWordPieceModel(model as HfWordPieceJson)
      : modelType === 'Unigram' ? new HfUnigramModel(model as unknown as HfUnigramJson)
        : new HfBpeModel(model, byteLevel);
    this.modelSink = { piece: (t) => this.model.encode(t, this.out) };
    for (let i = 0; i < this.stages.length; i++) this.stages[i].next = i + 1 < this.stages.length ? this.stages[i + 1] : this.modelSink;
    this.postProcessor = buildPostProcessor(tj.post_processor);
    this.decoder = buildDecoder(tj.decoder);

    // Added tokens.
    const list = tj.added_tokens ?? [];
    if (!Array.isArray(list)) throw new Error('tokenizer.json: added_tokens is not an array');
    this.added = list.map((t, i) => {
      if (t === null || typeof t !== 'object') throw new Error(`tokenizer.json: added_tokens[${i}] is not an object`);
      if (!Number.isInteger(t.id) || t.id < 0) throw new Error(`tokenizer.json: added_tokens[${i}].id is ${JSON.stringify(t.id)}, not a non-negative integer`);
      if (typeof t.content !== 'string' || t.content === '') throw new Error(`tokenizer.json: added_tokens[${i}].content is not a non-empty string`);
      const special = t.special ?? false;
      return {
        id: t.id,
        content: t.content,
        special,
        singleWord: t.single_word ?? false,
        lstrip: t.lstrip ?? false,
        rstrip: t.rstrip ?? false,
        normalized: t.normalized ?? !special,
      };
    });
    const specials = new Map<string, number>();
    let maxId = this.model.size - 1;
    for (const t of this.added) {
      this.addedById.set(t.id, t);
      if (!this.addedByContent.has(t.content)) this.addedByContent.set(t.content, t);
      if (t.special) {
        specials.set(t.content, t.id);
        this.skipSet.add(t.content);
      }
      if (t.id > maxId) maxId = t.id;
    }
    this.specialTokens = specials;
    this.vocabSize = maxId + 1;
    // Filled by push: new Array(n) of a 100k+ length would be a slow dictionary-mode array.
    this.idTokens = [];
    for (let i = 0; i < this.vocabSize; i++) this.idTokens.push(undefined);
    for (const [tok, id] of this.model.vocab) this.idTokens[id] = tok;
    for (const t of this.added) this.idTokens[t.id] = t.content;

    const raw = this.added.filter((t) => !t.normalized);
    const norm = this.added.filter((t) => t.normalized);
    this.rawSplitter = raw.length > 0 ? new AddedTokenSplitter(raw, (t) => t.content) : null;
    const normalize = this.normalizer;
    this.normalizedSplitter = norm.length > 0 ? new AddedTokenSplitter(norm, (t) => (normalize ? normalize(t.content) : t.content)) : null;

    // tokenizer_config.json.
    this.splitSpecial = cfg.split_special_tokens === true;
    this.cleanUpTokenizationSpaces = cfg.clean_up_tokenization_spaces === true;
    for (const t of cfg.additional_special_tokens ?? []) {
      const s = configToken(t);
      if (s !== undefined) this.skipSet.add(s);
    }
    this.bosToken = configToken(cfg.bos_token);
    this.eosToken = configToken(cfg.eos_token);
    this.bosTokenId = this.bosToken === undefined ? undefined : this.tokenToId(this.bosToken);
    this.eosTokenId = this.eosToken === undefined ? undefined : this.tokenToId(this.eosToken);
    if (this.eosToken !== undefined && this.eosTokenId === undefined) throw new Error(`tokenizer_config.json: eos_token ${JSON.stringify(this.eosToken)} is not a token of tokenizer.json`);
    if (this.bosToken !== undefined && this.bosTokenId === undefined) throw new Error(`tokenizer_config.json: bos_token ${JSON.stringify(this.bosToken)} is not a token of tokenizer.json`);
    if (this.eosTokenId !== undefined) this.eotToken = this.eosTokenId;
    else if (configJson === undefined || configJson === null) {
      for (const name of EOT_NAMES) {
        const id = specials.get(name);
        if (id !== undefined) {
          this.eotToken = id;
          break;
        }
      }
    }
    const ct = cfg.chat_template;
    if (typeof ct === 'string') this.chatTemplate = ct;
    else if (Array.isArray(ct)) this.chatTemplate = ct.find((x) => x && x.name === 'default')?.template;
  }

  /** Builds a tokenizer from the contents of tokenizer.json and (optionally) tokenizer_config.json. */
  static fromFiles(files: Record<string, string>): HfTokenizer {
    const tj = files['tokenizer.json'];
    if (tj === undefined) throw new Error('HfTokenizer.fromFiles: no tokenizer.json');
    return new HfTokenizer(tj, files['tokenizer_config.json']);
  }

  /**
   * Text -> ids: added tokens (special or not) are always recognised in the text, as in
   * `tokenizers` (unless tokenizer_config says split_special_tokens); the post-processor's
   * special tokens are added unless addSpecialTokens is false.
   */
  encode(text: string, opts: HfEncodeOptions = {}): number[] {
    const a = this.encodeText(text);
    const b = opts.pair === undefined ? null : this.encodeText(opts.pair);
    const add = opts.addSpecialTokens ?? true;
    if (this.postProcessor) return this.postProcessor(a, b, add);
    return b ? a.concat(b) : a;
  }

  /** Ids -> text, through the decoders of tokenizer.json. Unknown ids are skipped, as in `tokenizers`. */
  decode(ids: ArrayLike<number>, opts: HfDecodeOptions = {}): string {
    const skip = opts.skipSpecialTokens ?? false;
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const t = this.idTokens[ids[i]];
      if (t === undefined || (skip && this.skipSet.has(t))) continue;
      tokens.push(t);
    }
    let text = this.decoder ? this.decoder(tokens).join('') : tokens.join(' ');
    if (opts.cleanUpTokenizationSpaces ?? this.cleanUpTokenizationSpaces) text = cleanUpTokenization(text);
    return text;
  }

  /** The id of a token (an added token's text, or a vocabulary entry as written in the file). */
  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.model.vocab.get(token);
  }

  /** The token of an id as written in tokenizer.json ('Ġthe', '▁the', '<s>'); undefined if none. */
  idToToken(id: number): string | undefined {
    return this.idTokens[id];
  }

  /** Whether id is a special added token. */
  isSpecial(id: number): boolean {
    return this.addedById.get(id)?.special ?? false;
  }

  /** tokenizer.json as given (and tokenizer_config.json when there is one). */
  toFiles(): Record<string, string> {
    const json = typeof this.json === 'string' ? this.json : JSON.stringify(this.json, null, 2);
    const files: Record<string, string> = { 'tokenizer.json': json };
    if (this.configText !== undefined) files['tokenizer_config.json'] = this.configText;
    return files;
  }

  async save(dir: string): Promise<void> {
    await writeFiles(dir, this.toFiles());
  }

  // ---- internals ----

  private encodeText(text: string): number[] {
    const out: number[] = [];
    this.out = out;
    if (this.rawSplitter) {
      this.rawSplitter.split(
        text,
        (s, e) => this.encodeSection(s === 0 && e === text.length ? text : text.slice(s, e), s === 0),
        (t) => out.push(t.id),
        this.splitSpecial,
      );
    } else if (text.length > 0) {
      this.encodeSection(text, true);
    }
    this.out = [];
    return out;
  }

  /** A stretch of text between added tokens: normalize, split on normalized added tokens, pre-tokenize, model. */
  private encodeSection(text: string, atStart: boolean): void {
    const norm = this.normalizer ? this.normalizer(text) : text;
    if (norm.length === 0) return;
    const splitter = this.normalizedSplitter;
    if (splitter) {
      const out = this.out;
      splitter.split(
        norm,
        (s, e) => this.preTokenize(s === 0 && e === norm.length ? norm : norm.slice(s, e), atStart && s === 0),
        (t) => out.push(t.id),
        this.splitSpecial,
      );
    } else {
      this.preTokenize(norm, atStart);
    }
  }

  private preTokenize(text: string, atStart: boolean): void {
    if (this.stages.length === 0) this.model.encode(text, this.out);
    else this.stages[0].piece(text, atStart);
  }
}
