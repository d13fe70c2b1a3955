// attn logprobs: log P(tokens[i+1] | tokens[0..i]) for every position, as JSON.
import { logSoftmax, noGrad, tensor, tidy } from '../tensor/index.js';
import { BpeTokenizer, loadTokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, describeQuantized, LOAD_DTYPES, loadModelDir, quantSpecFromFlags, tokenizerOfModel } from './common.js';

export async function runLogprobs(f: Flags): Promise<void> {
  const dir = f.required('model', 'a model directory');
  const adapter = f.string('adapter');
  const text = f.string('text');
  const tokensFlag = f.string('tokens');
  const dtype = f.choice('dtype', LOAD_DTYPES) ?? 'float32';
  if (dtype === 'float16' || dtype === 'bfloat16') throw new UsageError('logprobs: --dtype takes float32, int8, int4 or int4z (scores in half precision: use attn sample --dtype)');
  const quant = quantSpecFromFlags(f, dtype);
  const backend = await backendFromFlags(f);
  f.done();
  if ((text === undefined) === (tokensFlag === undefined)) throw new UsageError('logprobs: give exactly one of --text or --tokens');
  const model = await loadModelDir('logprobs', dir, backend, adapter, quant);
  process.stderr.write(describeQuantized(model));
  let ids: number[];
  if (tokensFlag !== undefined) {
    ids = tokensFlag.split(',').map((s, i) => {
      const n = Number(s.trim());
      if (s.trim() === '' || !Number.isInteger(n)) throw new UsageError(`logprobs: --tokens item ${i} ('${s}') is not an integer`);
      if (n < 0 || n >= model.config.vocab_size) throw new UsageError(`logprobs: token ${n} is out of range [0, ${model.config.vocab_size})`);
      return n;
    });
  } else {
    let tok;
    try {
      tok = await tokenizerOfModel(dir, model);
    } catch {
      throw new UsageError(`logprobs: ${dir} has no tokenizer files; pass --tokens instead of --text`);
    }
    ids = tok instanceof BpeTokenizer ? tok.encode(text!, { disallowedSpecial: [] }) : tok.encode(text!);
  }
  if (ids.length === 0) throw new UsageError('logprobs: no tokens given');
  const T = model.config.block_size;
  if (ids.length > T) throw new UsageError(`logprobs: ${ids.length} tokens exceed the model's context of ${T}`);
  const logprobs = noGrad(() =>
    tidy(() => {
      const { logits } = model.forward(tensor(ids, { backend, dtype: 'int32', shape: [1, ids.length] })); // (1, T, V)
      const lp = logSoftmax(logits, -1).data();
      const V = model.config.vocab_size;
      const out: number[] = [];
      for (let i = 0; i + 1 < ids.length; i++) out.push(lp[i * V + ids[i + 1]!]!);
      return out;
    }),
  );
  process.stdout.write(`${JSON.stringify({ tokens: ids, logprobs })}\n`);
}
