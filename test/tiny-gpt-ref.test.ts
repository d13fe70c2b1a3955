// The tiny GPT stack learns on the ref backend (a sanity check of the whole engine end to end).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { RefBackend } from '../src/index.js';
import { train, type TinyConfig } from './tiny-gpt.js';

export function charTokens(limit = 100_000): { tokens: Int32Array; vocab: number } {
  const text = readFileSync(new URL('../../data/tinyshakespeare/input.txt', import.meta.url), 'utf8').slice(0, limit);
  const chars = [...new Set(text)].sort();
  const index = new Map(chars.map((c, i) => [c, i]));
  return { tokens: Int32Array.from(text, (c) => index.get(c)!), vocab: chars.length };
}

test('tiny GPT trains on ref: loss falls from ln(V) on Tiny Shakespeare', () => {
  const { tokens, vocab } = charTokens();
  const cfg: TinyConfig = { vocab, nLayer: 1, nHead: 2, nEmbd: 16, blockSize: 16 };
  const losses = train(cfg, new RefBackend(), tokens, 60, 4, 1e-2);
  assert.ok(Math.abs(losses[0]! - Math.log(vocab)) < 0.3, `first loss ${losses[0]} should be near ln(${vocab}) = ${Math.log(vocab)}`);
  const last = losses.slice(-10).reduce((a, b) => a + b, 0) / 10;
  assert.ok(last < losses[0]! - 0.8, `loss should fall: first ${losses[0]}, mean of last 10 ${last}`);
});
