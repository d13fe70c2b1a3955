// The Unigram model of a tokenizer.json (Kudo 2018; SentencePiece's, T5's and many multilingual
// models'), as the Hugging Face `tokenizers` library defines it: a pre-token is segmented into
// the vocabulary pieces whose log-probabilities sum highest (Viterbi over character positions;
// on equal scores the piece found first, the shorter, wins); a character no piece covers is the
// unknown token, scored min_score - 10; consecutive unknowns fuse into one; with byte_fallback an
// unknown piece becomes its UTF-8 bytes' <0xNN> tokens instead.

export interface HfUnigramJson {
  type?: string;
  vocab?: [string, number][];
  unk_id?: number | null;
  byte_fallback?: boolean;
}

const UNK_PENALTY = 10;

export class HfUnigramModel {
  readonly vocab: Map<string, number>;
  readonly size: number;
  private readonly scores: Float64Array;
  private readonly unkId: number;
  private readonly unkScore: number;
  private readonly maxPieceChars: number;
  private readonly byteFallback: boolean;
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly cache = new Map<string, number[]>();

  constructor(j: HfUnigramJson) {
    if (!Array.isArray(j.vocab)) throw new Error('tokenizer.json: model.vocab of the Unigram model is missing (a list of [piece, score])');
    this.vocab = new Map();
    this.scores = new Float64Array(j.vocab.length);
    let min = Infinity;
    let maxChars = 1;
    j.vocab.forEach((e, i) => {
      if (!Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'number') throw new Error(`tokenizer.json: model.vocab[${i}] is not a [piece, score] pair`);
      if (!this.vocab.has(e[0])) this.vocab.set(e[0], i);
      this.scores[i] = e[1];
      if (e[1] < min) min = e[1];
      const n = [...e[0]].length;
      if (n > maxChars) maxChars = n;
    });
    this.size = j.vocab.length;
    this.maxPieceChars = maxChars;
    if (j.unk_id === undefined || j.unk_id === null) throw new Error('tokenizer.json: the Unigram model has no unk_id (attn needs one)');
    if (!(Number.isInteger(j.unk_id) && j.unk_id >= 0 && j.unk_id < this.size)) throw new Error(`tokenizer.json: model.unk_id ${j.unk_id} is outside the vocabulary of ${this.size}`);
    this.unkId = j.unk_id;
    this.unkScore = min - UNK_PENALTY;
    this.byteFallback = j.byte_fallback ?? false;
    if (this.byteFallback) {
      for (let b = 0; b < 256; b++) this.byteIds[b] = this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`) ?? -1;
    }
  }

  encode(piece: string, out: number[]): void {
    let ids = this.cache.get(piece);
    if (!ids) {
      ids = this.segment(piece);
      if (this.cache.size >= 100_000) this.cache.clear();
      this.cache.set(piece, ids);
    }
    for (const id of ids) out.push(id);
  }

  private segment(text: string): number[] {
    const chars = Array.from(text);
    const n = chars.length;
    if (n === 0) return [];
    // best[i]: the best score of a segmentation of chars[0, i); from[i], id[i]: its last piece.
    const best = new Float64Array(n + 1).fill(-Infinity);
    const from = new Int32Array(n + 1).fill(-1);
    const ids = new Int32Array(n + 1).fill(-1);
    best[0] = 0;
    for (let s = 0; s < n; s++) {
      if (best[s] === -Infinity) continue;
      let single = false;
      let piece = '';
      for (let e = s + 1; e <= Math.min(n, s + this.maxPieceChars); e++) {
        piece += chars[e - 1];
        const id = this.vocab.get(piece);
        if (id === undefined) continue;
        const cand = best[s]! + this.scores[id]!;
        if (from[e] === -1 || cand > best[e]!) {
          best[e] = cand;
          from[e] = s;
          ids[e] = id;
        }
        if (e === s + 1) single = true;
      }
      if (!single) {
        const cand = best[s]! + this.unkScore;
        if (from[s + 1] === -1 || cand > best[s + 1]!) {
          best[s + 1] = cand;
          from[s + 1] = s;
          ids[s + 1] = this.unkId;
        }
      }
    }
    // Back from the end; consecutive unknowns fuse into one piece.
    const pieces: [number, number, number][] = []; // [id, start, end]
    for (let e = n; e > 0; e = from[e]!) pieces.push([ids[e]!, from[e]!, e]);
    pieces.reverse();
    const out: number[] = [];
    for (let i = 0; i < pieces.length; i++) {
      const [id, start] = pieces[i]!;
      if (id !== this.unkId) {
        out.push(id);
        continue;
      }
      let end = pieces[i]![2];
      while (i + 1 < pieces.length && pieces[i + 1]![0] === this.unkId) end = pieces[++i]![2];
      if (this.byteFallback) {
        const bytes = new TextEncoder().encode(chars.slice(start, end).join(''));
        if ([...bytes].every((b) => this.byteIds[b]! >= 0)) {
          for (const b of bytes) out.push(this.byteIds[b]!);
          continue;
        }
      }
      out.push(this.unkId);
    }
    return out;
  }
}
