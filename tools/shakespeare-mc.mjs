// Writes a small multiple-choice set for `attn eval mc` from the Tiny Shakespeare validation
// split (the last 10 % of the characters): each item's context is CTX characters of the text, its
// choices the true next LEN characters and three spans of LEN characters from elsewhere in the
// split, in a seeded random order. Usage: node tools/shakespeare-mc.mjs [N] [CTX] [LEN] > items.jsonl
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const [n = 100, ctx = 48, len = 16] = process.argv.slice(2).map(Number);
const text = readFileSync(fileURLToPath(new URL('../data/tinyshakespeare/input.txt', import.meta.url)), 'utf8');
const val = text.slice(Math.floor(text.length * 0.9));
let s = 12345;
const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
const pos = () => Math.floor(rand() * (val.length - ctx - len - 1));
for (let i = 0; i < n; i++) {
  const p = pos();
  const right = val.slice(p + ctx, p + ctx + len);
  const choices = [right];
  while (choices.length < 4) {
    const q = pos();
    const c = val.slice(q, q + len);
    if (!choices.includes(c) && c.trim() !== '') choices.push(c);
  }
  // Shuffle; the label follows the true continuation.
  for (let k = choices.length - 1; k > 0; k--) {
    const j = Math.floor(rand() * (k + 1));
    [choices[k], choices[j]] = [choices[j], choices[k]];
  }
  process.stdout.write(JSON.stringify({ context: val.slice(p, p + ctx), choices, label: choices.indexOf(right) }) + '\n');
}
