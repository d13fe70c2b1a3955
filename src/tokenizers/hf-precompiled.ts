// The Precompiled normalizer of a tokenizer.json: SentencePiece's compiled normalization rules
// (nmt_nfkc and the like, the `precompiled_charsmap` of a SentencePiece model), as the Hugging
// Face `tokenizers` library applies them. The blob is a u32 (little-endian) byte length, a
// darts-clone double-array trie of that many bytes over UTF-8 keys, then the replacement strings,
// each ended by a NUL. Text is taken grapheme by grapheme: a grapheme under 6 bytes is looked up
// whole, else (or when that finds nothing) each of its characters; a key found is replaced by
// the string at its value's offset (the first, shortest match, as the library takes it).

/** A darts-clone double array: commonPrefixSearch over bytes. */
class DoubleArray {
  constructor(private readonly units: Uint32Array) {}

  /** Values of every key that is a prefix of bytes[0, n), shortest first. */
  prefixes(bytes: Uint8Array, n: number): number[] {
    const u = this.units;
    const out: number[] = [];
    let pos = 0;
    let unit = u[pos]!;
    pos ^= offset(unit);
    for (let i = 0; i < n; i++) {
      const c = bytes[i]!;
      if (c === 0) break;
      pos ^= c;
      unit = u[pos]!;
      if (label(unit) !== c) return out;
      pos ^= offset(unit);
      if (hasLeaf(unit)) out.push(u[pos]! & 0x7fffffff);
    }
    return out;
  }
}

const hasLeaf = (unit: number): boolean => ((unit >>> 8) & 1) === 1;
// The label keeps bit 31 (set on leaf units), so a leaf never matches a byte.
const label = (unit: number): number => (unit & 0x800000ff) >>> 0;
const offset = (unit: number): number => (unit >>> 10) << ((unit & (1 << 9)) >>> 6);

function decodeBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export class PrecompiledCharsMap {
  private readonly trie: DoubleArray;
  private readonly normalized: Uint8Array;
  private readonly utf8 = new TextEncoder();
  private readonly text = new TextDecoder();
  private readonly graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
  private readonly cache = new Map<string, string>();

  constructor(base64: string, where = 'normalizer') {
    let blob: Uint8Array;
    try {
      blob = decodeBase64(base64);
    } catch {
      throw new Error(`tokenizer.json: ${where}.precompiled_charsmap is not base64`);
    }
    if (blob.length < 4) throw new Error(`tokenizer.json: ${where}.precompiled_charsmap is ${blob.length} bytes, too short for its header`);
    const trieBytes = new DataView(blob.buffer, blob.byteOffset, 4).getUint32(0, true);
    if (trieBytes % 4 !== 0 || 4 + trieBytes > blob.length) throw new Error(`tokenizer.json: ${where}.precompiled_charsmap declares a trie of ${trieBytes} bytes in a blob of ${blob.length}`);
    const units = new Uint32Array(trieBytes / 4);
    const dv = new DataView(blob.buffer, blob.byteOffset + 4, trieBytes);
    for (let i = 0; i < units.length; i++) units[i] = dv.getUint32(4 * i, true);
    this.trie = new DoubleArray(units);
    this.normalized = blob.subarray(4 + trieBytes);
  }

  /** The replacement of a chunk whose key is a prefix of it, or null. */
  private transform(chunk: string): string | null {
    const bytes = this.utf8.encode(chunk);
    const found = this.trie.prefixes(bytes, bytes.length);
    if (found.length === 0) return null;
    const start = found[0]!;
    let end = start;
    while (end < this.normalized.length && this.normalized[end] !== 0) end++;
    return this.text.decode(this.normalized.subarray(start, end));
  }

  normalize(s: string): string {
    let out = '';
    for (const { segment: g } of this.graphemes.segment(s)) {
      let r = this.cache.get(g);
      if (r === undefined) {
        r = (this.utf8.encode(g).length < 6 ? this.transform(g) : null) ?? [...g].map((c) => this.transform(c) ?? c).join('');
        if (this.cache.size > 50_000) this.cache.clear();
        this.cache.set(g, r);
      }
      out += r;
    }
    return out;
  }
}
