// Character-level tokenizer: one token per Unicode code point seen in the training text.
import type { Tokenizer } from './types.js';
import { writeFiles } from './files.js';

/** File name under which a CharTokenizer is saved (see loadTokenizer). */
export const CHAR_TOKENIZER_FILE = 'char_tokenizer.json';

/** The saved form: { "type": "char", "version": 1, "chars": [...] }, chars in id order. */
export interface CharTokenizerJson {
  type: 'char';
  version: 1;
  chars: string[];
}

const byCodePoint = (a: string, b: string): number => a.codePointAt(0)! - b.codePointAt(0)!;

export class CharTokenizer implements Tokenizer {
  readonly kind = 'char' as const;
  readonly eotToken?: number = undefined;
  /** id -> character (one code point each). */
  readonly chars: readonly string[];
  private readonly ids: Map<string, number>;

  constructor(chars: Iterable<string>) {
    this.chars = [...chars];
    this.ids = new Map();
    this.chars.forEach((c, i) => {
      if ([...c].length !== 1) throw new Error(`char tokenizer entry ${i} (${JSON.stringify(c)}) is not one character`);
      if (this.ids.has(c)) throw new Error(`char tokenizer has ${JSON.stringify(c)} twice`);
      this.ids.set(c, i);
    });
  }

  /**
   * The distinct code points of text, sorted by code point. Iterating with for..of walks code
   * points, so a character outside the BMP (an emoji) is one token rather than two surrogates.
   */
  static fromText(text: string): CharTokenizer {
    const seen = new Set<string>();
    for (const ch of text) seen.add(ch);
    return new CharTokenizer([...seen].sort(byCodePoint));
  }

  get vocabSize(): number {
    return this.chars.length;
  }

  encode(text: string): number[] {
    const out: number[] = [];
    let pos = 0; // in code points, as a person counts characters
    for (const ch of text) {
      const id = this.ids.get(ch);
      if (id === undefined) {
        const cp = ch.codePointAt(0)!;
        const hex = cp.toString(16).toUpperCase().padStart(4, '0');
        throw new Error(
          `character ${JSON.stringify(ch)} (U+${hex}) at position ${pos} is not in the char tokenizer's vocabulary (${this.chars.length} characters)`,
        );
      }
      out.push(id);
      pos++;
    }
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    let s = '';
    for (let i = 0; i < ids.length; i++) {
      const c = this.chars[ids[i]];
      if (c === undefined) throw new Error(`token id ${ids[i]} at position ${i} is not in the char vocabulary (size ${this.chars.length})`);
      s += c;
    }
    return s;
  }

  toJSON(): CharTokenizerJson {
    return { type: 'char', version: 1, chars: [...this.chars] };
  }

  static fromJSON(json: string | CharTokenizerJson): CharTokenizer {
    const j = (typeof json === 'string' ? JSON.parse(json) : json) as CharTokenizerJson;
    if (j?.type !== 'char' || !Array.isArray(j.chars)) throw new Error('not a char tokenizer JSON ({"type": "char", "chars": [...]})');
    return new CharTokenizer(j.chars);
  }

  toFiles(): Record<string, string> {
    return { [CHAR_TOKENIZER_FILE]: JSON.stringify(this.toJSON()) + '\n' };
  }

  async save(dir: string): Promise<void> {
    await writeFiles(dir, this.toFiles());
  }
}
