// The WordPiece model of a tokenizer.json (BERT's; Schuster & Nakajima 2012, Wu et al. 2016), as
// the Hugging Face `tokenizers` library defines it: each pre-token is split greedily into the
// longest vocabulary entries from its start, every piece after the first looked up with the
// continuing-subword prefix ("##"); a word with no such split, or longer than
// max_input_chars_per_word characters, is one unknown token.

export interface HfWordPieceJson {
  type?: string;
  vocab?: Record<string, number>;
  unk_token?: string;
  continuing_subword_prefix?: string;
  max_input_chars_per_word?: number;
}

export class HfWordPieceModel {
  readonly vocab: Map<string, number>;
  readonly size: number;
  readonly prefix: string;
  readonly maxChars: number;
  private readonly unkId: number;
  private readonly cache = new Map<string, number[]>();

  constructor(j: HfWordPieceJson) {
    if (!j.vocab || typeof j.vocab !== 'object') throw new Error('tokenizer.json: model.vocab of the WordPiece model is missing');
    this.vocab = new Map(Object.entries(j.vocab));
    let max = -1;
    for (const [tok, id] of this.vocab) {
      if (!Number.isInteger(id) || id < 0) throw new Error(`tokenizer.json: model.vocab[${JSON.stringify(tok)}] is ${JSON.stringify(id)}, not a non-negative integer`);
      if (id > max) max = id;
    }
    this.size = max + 1;
    this.prefix = j.continuing_subword_prefix ?? '##';
    this.maxChars = j.max_input_chars_per_word ?? 100;
    const unk = j.unk_token ?? '[UNK]';
    const unkId = this.vocab.get(unk);
    if (unkId === undefined) throw new Error(`tokenizer.json: the WordPiece unk_token ${JSON.stringify(unk)} is not in the vocabulary`);
    this.unkId = unkId;
  }

  encode(word: string, out: number[]): void {
    let ids = this.cache.get(word);
    if (!ids) {
      ids = this.split(word);
      if (this.cache.size >= 100_000) this.cache.clear();
      this.cache.set(word, ids);
    }
    for (const id of ids) out.push(id);
  }

  private split(word: string): number[] {
    const chars = Array.from(word); // code points, as Rust's chars
    if (chars.length > this.maxChars) return [this.unkId];
    const out: number[] = [];
    for (let start = 0; start < chars.length;) {
      let end = chars.length;
      let found = -1;
      while (start < end) {
        const piece = (start > 0 ? this.prefix : '') + chars.slice(start, end).join('');
        const id = this.vocab.get(piece);
        if (id !== undefined) {
          found = id;
          break;
        }
        end--;
      }
      if (found < 0) return [this.unkId];
      out.push(found);
      start = end;
    }
    return out;
  }
}
