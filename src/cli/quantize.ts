// attn quantize: a decoder directory's linear layers quantized (int8, int4, int4z) as they stream
// in, saved in attn's quantized layout with the tokenizer files.
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exists } from '../io/files.js';
import { DecoderLM } from '../models/decoder.js';
import { readHFConfig, saveDecoderDir } from '../models/hf-decoder-files.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, describeQuantized, loadModelDir, quantSpecFromFlags, requireDir } from './common.js';

/** The files beside the weights that travel with a model. */
const SIDE_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json', 'chat_template.jinja',
  'vocab.json', 'merges.txt', 'tokenizer.model', 'char_tokenizer.json', 'encoder.json', 'vocab.bpe'];

export async function runQuantize(f: Flags): Promise<void> {
  const dir = f.required('model', 'the float model directory');
  const out = f.required('out', 'where the quantized model goes');
  const dtype = f.choice('dtype', ['int8', 'int4', 'int4z'] as const);
  if (!dtype) throw new UsageError('quantize: --dtype int8, int4 or int4z is required');
  const spec = quantSpecFromFlags(f, dtype)!;
  const backend = await backendFromFlags(f);
  f.done();
  await requireDir('quantize', 'model', dir);
  if (await exists(join(dir, 'adapter_config.json'))) throw new UsageError(`quantize: ${dir} holds LoRA adapters; merge them first (attn merge), then quantize the merged model`);
  const hfConfig = await readHFConfig(dir);
  if (hfConfig['quantization_config']) throw new UsageError(`quantize: ${dir} is already quantized (${JSON.stringify((hfConfig['quantization_config'] as { format?: string }).format)})`);
  const model = await loadModelDir('quantize', dir, backend, undefined, spec);
  if (!(model instanceof DecoderLM)) {
    model.dispose();
    throw new UsageError(`quantize: ${dir} is an attn GPT checkpoint; quantized checkpoints are written for the Hugging Face decoder families (llama, mistral, qwen2, qwen3, phi). Load a GPT quantized with 'attn sample|logprobs --dtype ${dtype}' instead`);
  }
  await saveDecoderDir(model, out, { hfConfig });
  for (const name of SIDE_FILES) if (await exists(join(dir, name))) await copyFile(join(dir, name), join(out, name));
  process.stderr.write(describeQuantized(model));
  process.stderr.write(`wrote ${out}\n`);
  model.dispose();
}
