// Options a library call does not take are refused with the nearest valid name, never ignored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW, beamSearch, generate, getBackend, GPT, EncoderDecoder } from '../src/index.js';
import { checkOptions, nearestNames } from '../src/util/options.js';

test('nearest names: edit distance and snake_case / camelCase folded', () => {
  assert.deepEqual(nearestNames('top_k', ['topK', 'topP', 'temperature']), ['topK']);
  assert.deepEqual(nearestNames('max_new_tokens', ['maxNewTokens', 'seed']), ['maxNewTokens']);
  assert.deepEqual(nearestNames('max_iter', ['max_iters', 'max_tokens']), ['max_iters']);
  assert.deepEqual(nearestNames('zzz', ['topK']), []);
  assert.doesNotThrow(() => checkOptions('f', { a: 1, b: undefined }, ['a']));
});

test('generate, beam search, AdamW and getBackend refuse unknown options with "did you mean"', async () => {
  const backend = await getBackend('ref');
  const model = new GPT({ n_layer: 1, n_head: 2, n_embd: 8, block_size: 8, vocab_size: 10 }, { backend, seed: 1 });
  assert.throws(() => generate(model, [1, 2], { top_k: 40 } as never), /^Error: generate: unknown option top_k; did you mean topK\?$/);
  assert.throws(() => generate(model, [1, 2], { max_new_tokens: 4, temprature: 1 } as never), /unknown option max_new_tokens; did you mean maxNewTokens\?; unknown option temprature; did you mean temperature\?/);
  assert.equal(generate(model, [1, 2], { maxNewTokens: 3, topK: 4, seed: 1 }).tokens.length, 3, 'valid options still work');
  assert.throws(() => new AdamW(model.parameters(), { weight_decay: 0.1 } as never), /AdamW: unknown option weight_decay; did you mean weightDecay\?/);
  await assert.rejects(getBackend('ref', { thread: 2 } as never), /getBackend: unknown option thread; did you mean threads\?/);
  const s2s = new EncoderDecoder({ n_layer_enc: 1, n_layer_dec: 1, n_head: 2, d_model: 8, d_ff: 16, max_len: 8, vocab_size: 10, pad_id: 0, bos_id: 1, eos_id: 2 }, { backend, seed: 1 });
  assert.throws(() => beamSearch(s2s, [[3, 4]], { beam_size: 2 } as never), /beamSearch: unknown option beam_size; did you mean beamSize\?/);
  model.dispose();
  s2s.dispose();
});
