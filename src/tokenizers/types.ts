// The interface every tokenizer in attn implements (re-exported by ./index.ts).

export type TokenizerKind = 'char' | 'bpe' | 'hf';

export interface Tokenizer {
  readonly kind: TokenizerKind;
  /** One more than the largest token id (ids are 0 .. vocabSize-1). */
  readonly vocabSize: number;
  /** The end-of-text token id, for tokenizers that have one (GPT-2: 50256). */
  readonly eotToken?: number;
  encode(text: string): number[];
  decode(ids: ArrayLike<number>): string;
  /** The files that represent this tokenizer: file name -> contents (pure, browser-safe). */
  toFiles(): Record<string, string>;
  /** Writes toFiles() into dir (created if needed). Node only: fs is imported on demand. */
  save(dir: string): Promise<void>;
}
