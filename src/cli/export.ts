// attn export gguf: a llama or GPT-2-shaped model directory as one GGUF file (llama.cpp's format).
import { DecoderLM } from '../models/decoder.js';
import { GPT } from '../models/gpt.js';
import { saveGGUF, type GGUFWeightType } from '../models/gguf-decoder.js';
import { loadTokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, loadModelDir } from './common.js';

export async function runExport(f: Flags): Promise<void> {
  const format = f.parsed.positionals[0];
  if (format !== 'gguf') throw new UsageError(`export: give the format, 'attn export gguf --model DIR --out FILE.gguf' (got ${format === undefined ? 'none' : `'${format}'`})`);
  const dir = f.required('model', 'a llama or GPT-2 model directory');
  const out = f.required('out', 'the .gguf file to write');
  const type = (f.choice('type', ['f32', 'f16', 'q8_0', 'q4_0', 'q4_1'] as const) ?? 'f16') as GGUFWeightType;
  const backend = await backendFromFlags(f);
  f.done();
  const model = await loadModelDir('export', dir, backend);
  try {
    if (!(model instanceof DecoderLM) && !(model instanceof GPT)) throw new UsageError(`export: ${dir} is neither a llama nor a GPT-2-shaped model`);
    const tokenizer = await loadTokenizer(dir).catch(() => null);
    await saveGGUF(model, out, { type, name: dir.split('/').filter(Boolean).pop() ?? 'attn', tokenizer });
    process.stderr.write(`wrote ${out} (${type})\n`);
  } finally {
    model.dispose();
  }
}
