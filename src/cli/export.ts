// attn export gguf: a llama or GPT-2-shaped model directory as one GGUF file (llama.cpp's format).
// attn export onnx: a decoder (llama, mistral, qwen2, qwen3, phi, or attn's GPT / GPT-2) as one .onnx file with past
// key/values (ONNX Runtime GenAI's layout), its config and tokenizer files copied beside it.
import { basename } from 'node:path';
import { DecoderLM } from '../models/decoder.js';
import { GPT } from '../models/gpt.js';
import { saveGGUF, type GGUFWeightType } from '../models/gguf-decoder.js';
import { gptOnnxUnsupported, ONNX_WEIGHTS, saveDecoderONNX } from '../models/onnx-decoder.js';
import { loadTokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { backendFromFlags, loadModelDir } from './common.js';

export async function runExport(f: Flags): Promise<void> {
  const format = f.parsed.positionals[0];
  if (format === 'onnx') return runExportOnnx(f);
  if (format !== 'gguf') throw new UsageError(`export: give the format, 'attn export gguf --model DIR --out FILE.gguf' or 'attn export onnx --model DIR --out FILE.onnx' (got ${format === undefined ? 'none' : `'${format}'`})`);
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

async function runExportOnnx(f: Flags): Promise<void> {
  const dir = f.required('model', 'a GPT, llama, mistral, qwen2, qwen3 or phi model directory');
  const out = f.required('out', 'the .onnx file to write');
  const weights = f.choice('weights', ONNX_WEIGHTS) ?? 'float32';
  const int8Op = f.choice('int8_op', ['matmulnbits', 'dequantize'] as const);
  const quantizeHead = f.bool('quantize_head');
  const quantizeEmbeddings = f.bool('quantize_embeddings');
  const maxPos = f.string('max_positions');
  const maxPositions = maxPos === undefined ? undefined : Number(maxPos);
  // External data by request; past protobuf's 2 GiB it is chosen anyway.
  const externalData = f.bool('external_data') ? `${basename(out)}.data` : undefined;
  const backend = await backendFromFlags(f);
  f.done();
  const model = await loadModelDir('export', dir, backend);
  try {
    if (!(model instanceof DecoderLM) && !(model instanceof GPT)) throw new UsageError(`export onnx: ${dir} is not a GPT or a decoder of the llama, mistral, qwen2, qwen3 or phi family`);
    const why = model instanceof GPT ? gptOnnxUnsupported(model, { weights, int8Op, maxPositions }) : null;
    if (why) throw new UsageError(`export onnx: ${dir}: ${why}`);
    const r = saveDecoderONNX(model, out, { weights, int8Op, quantizeHead, quantizeEmbeddings, maxPositions, externalData, modelDir: dir });
    for (const k of r.keptFloat) process.stderr.write(`kept float32: ${k}\n`);
    const size = (b: number): string => (b < 2 ** 20 ? `${(b / 1024).toFixed(1)} KiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);
    const ext = r.externalData ? `, weights in ${r.externalData} (${size(r.externalBytes)})` : '';
    process.stderr.write(`wrote ${out} (${weights}, ${size(r.bytes)}${ext})${r.copied.length ? `, copied ${r.copied.join(', ')}` : ''}\n`);
  } finally {
    model.dispose();
  }
}
