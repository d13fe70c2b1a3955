// attn sample: stream generated text from a checkpoint, token by token.
import { generateStream } from '../generate/index.js';
import { BpeTokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, describeQuantized, LOAD_DTYPES, loadModelDir, quantSpecFromFlags, tokenizerOfModel, stopIdsOf } from './common.js';

export async function runSample(f: Flags): Promise<void> {
  const dir = f.required('model', 'a model directory');
  const adapter = f.string('adapter');
  const prompt = f.string('prompt');
  const maxNewTokens = f.number('max_new_tokens', { integer: true, min: 1 }) ?? 500;
  const temperature = f.number('temperature', { min: 0 }) ?? 0.8;
  const topK = f.number('top_k', { integer: true, min: 1 });
  const topP = f.number('top_p', { min: 0, max: 1 });
  const repetitionPenalty = f.number('repetition_penalty', { min: 0 });
  const stop = f.string('stop');
  const seed = f.number('seed', { integer: true }) ?? 1337;
  const numSamples = f.number('num_samples', { integer: true, min: 1 }) ?? 1;
  const noCache = f.bool('no_cache');
  const dtype = f.choice('dtype', LOAD_DTYPES) ?? 'float32';
  const quant = quantSpecFromFlags(f, dtype);
  // Read by the webgpu device thread (MATMUL_TUNING.f16Math), so set before it starts.
  if (f.bool('f16_math')) process.env.ATTN_WEBGPU_F16_MATH = '1';
  const backend = await backendFromFlags(f);
  f.done();
  if ((dtype === 'float16' || dtype === 'bfloat16') && !backend.supports(dtype)) {
    throw new UsageError(`sample: --dtype ${dtype} needs a backend that stores it (float16: --device webgpu; bfloat16: --device cpu); this is ${backend.name}`);
  }
  const model = await loadModelDir('sample', dir, backend, adapter, quant);
  process.stderr.write(describeQuantized(model));
  if (dtype === 'float16' || dtype === 'bfloat16') {
    const saved = model.halfWeights(dtype);
    process.stderr.write(`weights stored as ${dtype}: ${(saved / 2 ** 20).toFixed(1)} MiB saved\n`);
  }
  let tok: Tokenizer;
  try {
    tok = await tokenizerOfModel(dir, model);
  } catch {
    throw new UsageError(`sample: ${dir} has no tokenizer files (tokenizer.json, encoder.json + vocab.bpe, or char_tokenizer.json)`);
  }
  const eot = tok.eotToken;
  const stopIds = stopIdsOf(model, tok);
  const start = prompt ?? (eot !== undefined ? '' : '\n');
  const promptIds = tok instanceof BpeTokenizer ? tok.encode(start, { allowedSpecial: 'all' }) : tok.encode(start);
  if (promptIds.length === 0 && eot !== undefined) promptIds.push(eot);
  if (promptIds.length === 0) throw new UsageError('sample: the prompt encodes to no tokens');
  for (let s = 0; s < numSamples; s++) {
    if (numSamples > 1) process.stdout.write(s === 0 ? '' : '\n---------------\n');
    process.stdout.write(prompt ?? '');
    const stream = generateStream(model, promptIds, {
      maxNewTokens, temperature, topK, topP, repetitionPenalty, seed: seed + s, eotToken: stopIds,
      stopStrings: stop ? stop.split('|') : undefined, decode: (ids) => tok.decode(ids), useCache: !noCache, backend,
    });
    for await (const ev of stream) process.stdout.write(ev.text);
    process.stdout.write('\n');
  }
  model.dispose();
}
