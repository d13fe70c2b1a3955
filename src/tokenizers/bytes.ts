// Byte-level helpers shared by the BPE tokenizers: GPT-2's byte <-> printable-character table
// and UTF-8 conversion. Pure TypeScript, no platform APIs beyond TextDecoder.

/**
 * GPT-2's reversible byte -> character table. Vocabulary files store tokens as strings, so
 * every byte needs a visible, non-whitespace character: the bytes that are already printable
 * Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves and the other 68 (controls,
 * space, NBSP, soft hyphen) take the code points 256, 257, ... in byte order. That is why a
 * leading space shows up as 'Ġ' (256 + 32) in GPT-2's merges.
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) out[b] = String.fromCharCode(printable(b) ? b : next++);
  return out;
})();

/** Inverse of BYTE_TO_CHAR, indexed by UTF-16 code unit (all table characters are < 0x144). */
const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(512).fill(-1);
  BYTE_TO_CHAR.forEach((c, b) => (t[c.charCodeAt(0)] = b));
  return t;
})();

/** Bytes -> GPT-2 byte-level string (as stored in encoder.json / vocab.bpe / tokenizer.json). */
export function bytesToByteLevel(bytes: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]];
  return s;
}

/** GPT-2 byte-level string -> bytes, or undefined when a character is outside the table. */
export function byteLevelToBytes(s: string): Uint8Array | undefined {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const b = c < 512 ? CHAR_TO_BYTE[c] : -1;
    if (b < 0) return undefined;
    out[i] = b;
  }
  return out;
}

/**
 * UTF-8 bytes of s, appended to `out`. Written by hand (not TextEncoder) because it runs per
 * pre-token and pushing into a reused array avoids an allocation each time. A lone surrogate
 * becomes U+FFFD (EF BF BD), exactly as TextEncoder does.
 */
export function utf8Bytes(s: string, out: number[] = []): number[] {
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out.push(c);
      continue;
    }
    if (c < 0x800) {
      out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
        continue;
      }
      c = 0xfffd; // lone surrogate
    }
    out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return out;
}

// fatal: false makes invalid sequences decode to U+FFFD, like Python's errors='replace' that
// GPT-2's decoder uses (both replace each maximal invalid subpart by one U+FFFD).
let decoder: TextDecoder | undefined;

/** UTF-8 -> string, invalid sequences replaced by U+FFFD. */
export function utf8Decode(bytes: Uint8Array): string {
  decoder ??= new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  return decoder.decode(bytes);
}
