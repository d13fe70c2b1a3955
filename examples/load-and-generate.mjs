// Load any checkpoint attn writes or reads, generate from it, and save it again.
//   npm run build
//   node dist/src/cli/main.js train --preset shakespeare-char-tiny --max_iters 300
//   node examples/load-and-generate.mjs out/shakespeare-char-tiny/best "ROMEO:"
// In a project of your own, import from 'attn/node' instead of the dist path.
import * as attn from '../dist/src/node.js';

const [dir = 'out/shakespeare-char-tiny/best', prompt = '\n'] = process.argv.slice(2);
const { model, tokenizer, kind } = await attn.load(dir); // on the fastest backend there is
if (kind !== 'gpt' || !tokenizer) throw new Error(`${dir} holds ${kind} model${tokenizer ? '' : ' without a tokenizer'}; this example generates text with a GPT`);
const { text } = attn.generate(model, tokenizer.encode(prompt), {
  maxNewTokens: 200, temperature: 0.8, topK: 40, seed: 1, decode: (ids) => tokenizer.decode(ids),
});
console.log(text);
await attn.save('out/example-copy', model, tokenizer); // config.json, model.safetensors, tokenizer files
console.error(`saved a copy in out/example-copy (${(model.numParameters() / 1e6).toFixed(2)}M parameters)`);
model.dispose();
