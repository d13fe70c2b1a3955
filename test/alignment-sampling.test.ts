// PPO's rollouts and the experiment's samples decode all responses together (one decodeBatch
// forward per step, each response on its own KV cache). Each response must be exactly what
// generate() gives for its prompt with its own generator, whatever else shares the batch:
// prompts of different lengths, a prompt that leaves less room than maxNew, an eos stop.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generate, Generator, GPT } from '../src/index.js';
import { DecoderLM } from '../src/models/decoder.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { SAMPLE_ROWS, sampleResponses } from '../src/tasks/alignment-common.js';

const tok = CharTokenizer.fromText('abcdefghijklmnopqrstuvwxyz .!\n');

for (const pos of ['learned', 'rope'] as const) {
  test(`batched sampling (${pos} positions) gives each response generate()'s tokens with its own seed`, () => {
    const model = new GPT({ n_layer: 2, n_head: 2, n_embd: 16, block_size: 32, vocab_size: tok.vocabSize, bias: true, pos_encoding: pos }, { seed: 5 });
    model.train(); // sampleResponses must switch to eval and back
    const texts = ['a', 'the film was', 'bad.', 'it is good and very long indeed x', 'ok'];
    const prompts = texts.map((t) => tok.encode(t.slice(0, 30)));
    const eos = tok.encode('.')[0]!;
    for (const [temperature, withEos] of [[1, false], [0.7, true]] as const) {
      const got = sampleResponses(model, tok, prompts, { maxNew: 12, temperature, gen: new Generator(99), ...(withEos ? { eos } : {}) });
      const seeds = new Generator(99);
      prompts.forEach((p, i) => {
        const max = Math.min(12, 32 - p.length);
        const want = generate(model, p, { maxNewTokens: max, temperature, generator: new Generator(seeds.nextUint32()), ...(withEos ? { eotToken: eos } : {}) }).tokens;
        assert.deepEqual(got[i]!.response, want, `response ${i} (temperature ${temperature}${withEos ? ', eos' : ''})`);
        assert.ok(got[i]!.response.length <= max);
        assert.equal(got[i]!.text, tok.decode(want.filter((t) => !withEos || t !== eos)));
      });
      // The responses differ from one another (the seeds are not shared).
      assert.ok(new Set(got.map((g) => g.text)).size > 1);
    }
    assert.equal(model.training, true);
    model.dispose();
  });
}

test(`batched sampling splits more than ${SAMPLE_ROWS} prompts into batches without changing any response`, () => {
  const model = new GPT({ n_layer: 1, n_head: 2, n_embd: 8, block_size: 16, vocab_size: tok.vocabSize, bias: true }, { seed: 2 });
  const prompts = Array.from({ length: SAMPLE_ROWS + 3 }, (_, i) => tok.encode('abcdefg'.slice(0, 1 + (i % 7))));
  const all = sampleResponses(model, tok, prompts, { maxNew: 4, temperature: 1, gen: new Generator(7) });
  const seeds = new Generator(7);
  const last = prompts.length - 1;
  for (let i = 0; i < last; i++) seeds.nextUint32();
  const want = generate(model, prompts[last]!, { maxNewTokens: 4, temperature: 1, generator: new Generator(seeds.nextUint32()) }).tokens;
  assert.deepEqual(all[last]!.response, want);
  assert.throws(() => sampleResponses(model, tok, [tok.encode('abcdefghijklmnop')], { maxNew: 4, temperature: 1, gen: new Generator(1) }), /leaves no room/);
  model.dispose();
});

test('batched sampling of a Hugging Face-style decoder (Llama, grouped-query attention) matches generate() too', () => {
  const model = new DecoderLM(decoderConfigFromHF({ model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32 }), { seed: 4 });
  const prompts = ['a', 'good film', 'it was bad'].map((t) => tok.encode(t));
  const got = sampleResponses(model, tok, prompts, { maxNew: 10, temperature: 1, gen: new Generator(3) });
  const seeds = new Generator(3);
  prompts.forEach((p, i) => {
    assert.deepEqual(got[i]!.response, generate(model, p, { maxNewTokens: 10, temperature: 1, generator: new Generator(seeds.nextUint32()) }).tokens, `response ${i}`);
  });
  model.dispose();
});
