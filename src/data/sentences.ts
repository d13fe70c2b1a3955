// Sentence data for the encoder tasks: GLUE-style TSV files, unlabeled sentence files, the
// sentence BPE with [PAD] [CLS] [SEP] [MASK], encoding with a prompt suffix, seeded label subsets
// and an epoch sampler that resumes.
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { Generator } from '../tensor/random.js';
import { BpeTokenizer, trainBpe, type Tokenizer } from '../tokenizers/index.js';
import { rngStateFromJson, rngStateToJson } from './sampler.js';

export const SPECIAL_TOKENS = { pad: '[PAD]', cls: '[CLS]', sep: '[SEP]', mask: '[MASK]' } as const;

export interface LabeledExample {
  sentence: string;
  label: number;
}

/** A GLUE-style TSV: header `sentence<TAB>label`, integer labels. Errors name file and line. */
export function parseTsv(text: string, path = 'tsv'): LabeledExample[] {
  const lines = text.split(/\r?\n/);
  const header = (lines[0] ?? '').split('\t').map((s) => s.trim());
  const si = header.indexOf('sentence');
  const li = header.indexOf('label');
  if (si < 0 || li < 0) throw new Error(`${path}: the header must name the columns 'sentence' and 'label' (tab-separated), found ${JSON.stringify(lines[0] ?? '')}`);
  const out: LabeledExample[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') continue;
    const cols = line.split('\t');
    const label = Number(cols[li]);
    if (cols.length <= Math.max(si, li) || !Number.isInteger(label) || label < 0) throw new Error(`${path}:${i + 1}: expected a sentence and a non-negative integer label, got ${JSON.stringify(line.slice(0, 80))}`);
    out.push({ sentence: cols[si]!, label });
  }
  if (out.length === 0) throw new Error(`${path}: no examples`);
  return out;
}

export async function readTsv(path: string): Promise<LabeledExample[]> {
  return parseTsv(await readFile(path, 'utf8'), path);
}

/** The paths of a data field: one path, or several separated by commas. */
export function dataPaths(spec: string): string[] {
  const paths = spec.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (paths.length === 0) throw new Error(`no data file named in '${spec}'`);
  return paths;
}

/**
 * Unlabeled sentences: the sentence column of a .tsv with a header, else one per non-empty line.
 * A name ending in .gz is gunzipped first (x.tsv.gz is a .tsv). Several files, separated by
 * commas, are read in order and concatenated.
 */
export async function readSentences(spec: string): Promise<string[]> {
  const out: string[] = [];
  for (const path of dataPaths(spec)) {
    const raw = await readFile(path);
    const gz = path.endsWith('.gz');
    const text = (gz ? gunzipSync(raw) : raw).toString('utf8');
    const name = gz ? path.slice(0, -3) : path;
    const got = name.endsWith('.tsv') ? parseTsv(text, path).map((e) => e.sentence) : text.split(/\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0);
    for (const s of got) out.push(s);
  }
  return out;
}

/** A byte-level BPE trained on the sentences, with [PAD] [CLS] [SEP] [MASK] as its last ids. */
export function trainSentenceTokenizer(sentences: readonly string[], vocabSize: number): BpeTokenizer {
  return trainBpe(sentences.map((s) => ` ${s.trim()}`), vocabSize, { specialTokens: Object.values(SPECIAL_TOKENS) });
}

export interface SpecialIds {
  pad_id: number;
  cls_id: number;
  sep_id: number;
  mask_id: number;
}

export function specialIdsOf(tok: Tokenizer): SpecialIds {
  const sp = tok instanceof BpeTokenizer ? tok.specialTokens : new Map<string, number>();
  const get = (s: string): number => {
    const id = sp.get(s);
    if (id === undefined) throw new Error(`the tokenizer has no ${s} token`);
    return id;
  };
  return { pad_id: get(SPECIAL_TOKENS.pad), cls_id: get(SPECIAL_TOKENS.cls), sep_id: get(SPECIAL_TOKENS.sep), mask_id: get(SPECIAL_TOKENS.mask) };
}

/** [CLS] tokens [suffix] [SEP], the tokens truncated so the whole fits maxLen. */
export function encodeSentence(tok: Tokenizer, s: string, ids: SpecialIds, maxLen: number, suffix: readonly number[] = []): number[] {
  const body = encodeText(tok, ` ${s.trim()}`);
  return [ids.cls_id, ...body.slice(0, Math.max(0, maxLen - 2 - suffix.length)), ...suffix, ids.sep_id];
}

function encodeText(tok: Tokenizer, text: string): number[] {
  return tok instanceof BpeTokenizer ? tok.encodeOrdinary(text) : tok.encode(text);
}

/** The marker of the masked slot in a prompt template. */
export const PROMPT_MASK = '[MASK]';

/**
 * A prompt template (text after the sentence, holding [MASK] once, e.g. "it was [MASK] .") and
 * one verbalizer word per class (e.g. "terrible,great"), as token ids. Each word must be one
 * token of the vocabulary (with its leading space, as it would follow another word).
 */
export function promptIds(tok: Tokenizer, template: string, words: string, maskId: number): { suffix: number[]; verbalizers: number[] } {
  const parts = template.split(PROMPT_MASK);
  if (parts.length !== 2) throw new Error(`prompt must hold ${PROMPT_MASK} exactly once, got ${JSON.stringify(template)}`);
  const piece = (t: string) => (t.trim() === '' ? [] : encodeText(tok, ` ${t.trim()}`));
  const suffix = [...piece(parts[0]!), maskId, ...piece(parts[1]!)];
  const verbalizers = words.split(',').map((w) => w.trim()).filter((w) => w !== '').map((w) => {
    const ids = encodeText(tok, ` ${w}`);
    if (ids.length !== 1) throw new Error(`verbalizer '${w}' is ${ids.length} tokens in this vocabulary (${JSON.stringify(ids)}); each must be a single token`);
    return ids[0]!;
  });
  return { suffix, verbalizers };
}

/** A seeded subset of ceil(fraction·n) examples (at least 1), in their original order. */
export function labelSubset<T>(items: readonly T[], fraction: number, seed: number): T[] {
  if (!(fraction > 0 && fraction <= 1)) throw new Error(`label_fraction must be in (0, 1], got ${fraction}`);
  if (fraction === 1) return [...items];
  const k = Math.max(1, Math.ceil(fraction * items.length));
  const idx = shuffled(items.length, new Generator(seed));
  return idx.slice(0, k).sort((a, b) => a - b).map((i) => items[i]!);
}

export function shuffled(n: number, g: Generator): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = g.randint(i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** Endless epochs of shuffled batches of indices; state() / setState() resume the stream. */
export class EpochSampler {
  private order: number[] = [];
  private at = 0;
  constructor(private readonly n: number, private readonly batch: number, private readonly g: Generator) {}
  state(): { rng: (number | null)[]; order: number[]; at: number } {
    return { rng: rngStateToJson(this.g), order: [...this.order], at: this.at };
  }
  setState(s: unknown): void {
    const st = s as { rng?: unknown; order?: unknown; at?: unknown } | undefined;
    if (!st || !Array.isArray(st.order) || !Number.isInteger(st.at)) throw new Error(`an epoch sampler state needs rng, order and at, got ${JSON.stringify(s)?.slice(0, 80)}`);
    rngStateFromJson(this.g, st.rng, 'sampler rng');
    this.order = (st.order as number[]).slice();
    this.at = st.at as number;
  }
  next(): number[] {
    const out: number[] = [];
    while (out.length < Math.min(this.batch, this.n)) {
      if (this.at >= this.order.length) {
        this.order = shuffled(this.n, this.g);
        this.at = 0;
      }
      out.push(this.order[this.at++]!);
    }
    return out;
  }
}

