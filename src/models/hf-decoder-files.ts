// The Node edge of the decoder families: a Hugging Face model directory (config.json, then
// model.safetensors or the shards that model.safetensors.index.json lists, float32, float16 or
// bfloat16) read into a DecoderLM, and written back in the same layout.
//
// Loading streams: every shard's header is read and checked against the model first (a
// missing, unexpected or mis-shaped tensor is refused, naming it and both shapes), then tensors
// are read one at a time straight into the model's parameters, so a checkpoint is never held
// in memory beside the model.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { CheckpointError } from '../io/checkpoint.js';
import { exists, openSafetensorsFile, writeFileAtomic, writeSafetensorsFile, type SafetensorsReader } from '../io/files.js';
import type { SafetensorsDType, TensorEntry } from '../io/safetensors.js';
import { fmt, quantize, type DType, type QuantFormat, type QuantizedArrays, type Tensor } from '../tensor/index.js';
import { buildQuantized } from '../nn/layers.js';
import { quantizationConfig, quantizedEntries, quantizedWeights, quantSpecOf, settleQuantized, type QuantizeSpec } from '../nn/quantized.js';
import type { Module } from '../nn/module.js';
import { DecoderLM, type DecoderConfig } from './decoder.js';
import { decoderConfigFromHF, decoderConfigToHF } from './hf-decoder.js';

export interface LoadedDecoder {
  model: DecoderLM;
  config: DecoderConfig;
  /** config.json as read (save() keeps its other fields). */
  hfConfig: Record<string, unknown>;
}

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';

/** The weight files of a model directory: model.safetensors, or the shards of its index. */
export async function weightFiles(dir: string): Promise<string[]> {
  if (await exists(join(dir, SINGLE))) return [join(dir, SINGLE)];
  const indexPath = join(dir, INDEX);
  if (!(await exists(indexPath))) throw new CheckpointError(dir, `neither ${SINGLE} nor ${INDEX} (only safetensors weights are read, not pytorch_model.bin)`);
  let index: { weight_map?: Record<string, string> };
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8')) as typeof index;
  } catch (e) {
    throw new CheckpointError(indexPath, `invalid JSON: ${(e as Error).message}`);
  }
  if (!index.weight_map || typeof index.weight_map !== 'object') throw new CheckpointError(indexPath, 'no weight_map');
  const files = [...new Set(Object.values(index.weight_map))];
  for (const f of files) if (!(await exists(join(dir, f)))) throw new CheckpointError(indexPath, `lists shard ${f}, which is missing`);
  return files.map((f) => join(dir, f));
}

/** Reads config.json of a directory. */
export async function readHFConfig(dir: string): Promise<Record<string, unknown>> {
  const path = join(dir, 'config.json');
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(code === 'ENOENT' ? dir : path, code === 'ENOENT' ? 'not a model directory (no config.json)' : `invalid JSON: ${(e as Error).message}`);
  }
}

const FLOAT = new Set<SafetensorsDType>(['F32', 'F16', 'BF16', 'F64']);

/**
 * Streams the weights of `files` into `model`: headers first, every name and shape checked,
 * then one tensor at a time. `rename` maps a file's tensor name to the model's, to null to skip
 * it, or to { copyOf } for a copy of a parameter (T5's embed_tokens of `shared`): a copy is
 * shape-checked and read only when the file lacks the parameter itself.
 */
export async function streamWeightsInto(model: Module, files: string[], rename: (name: string) => string | null | { copyOf: string } = (n) => n, what = 'model'): Promise<void> {
  const params = model.stateDict();
  // Quantized matrices take either a float tensor (quantized as it is read) or attn's packed
  // entries: the levels under the weight's own name, beside it {module}.weight_scale and
  // {module}.weight_zero_point (nn/quantized.ts).
  const quantized = quantizedWeights(model);
  const shapeOf = (name: string): readonly number[] | undefined => params.get(name)?.shape ?? quantized.get(name)?.shape;
  const readers: SafetensorsReader[] = [];
  try {
    const where = new Map<string, [SafetensorsReader, string]>();
    const copies = new Map<string, [SafetensorsReader, string]>();
    const packed = new Map<string, SafetensorsReader>(); // name -> the file with its packed entries
    const seen = new Map<string, string>();
    for (const f of files) {
      const r = await openSafetensorsFile(f);
      readers.push(r);
      for (const [fileName, info] of r.header.tensors) {
        const side = /^(.*)\.weight_(scale|zero_point)$/.exec(fileName);
        if (side && quantized.has(`${side[1]}.weight`)) continue; // read with its levels
        const to = rename(fileName);
        if (to === null) continue;
        const name = typeof to === 'string' ? to : to.copyOf;
        const shape = shapeOf(name);
        if (!shape) throw new CheckpointError(f, `unexpected tensor '${fileName}' ${fmt(info.shape)}: the ${what} has no such parameter`);
        if (seen.has(fileName)) throw new CheckpointError(f, `tensor '${fileName}' appears in two shards (${seen.get(fileName)})`);
        seen.set(fileName, f);
        if (typeof to === 'string' && where.has(name)) throw new CheckpointError(f, `tensor '${name}' appears twice (${where.get(name)![0].path})`);
        const q = quantized.get(name);
        if (q && (info.dtype === 'I8' || info.dtype === 'U8')) {
          checkPackedEntries(f, r, fileName, q.format, q.N, q.K);
          packed.set(name, r);
        } else {
          if (!FLOAT.has(info.dtype)) throw new CheckpointError(f, `tensor '${fileName}' has dtype ${info.dtype}, expected a float type${q ? ` (or attn's packed ${q.format})` : ''}`);
          if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
            throw new CheckpointError(f, `tensor '${fileName}' has shape ${fmt(info.shape)}, the model expects ${fmt(shape)}${typeof to === 'string' ? '' : ` (that of ${name})`}`);
          }
        }
        if (typeof to === 'string') where.set(name, [r, fileName]);
        else if (!copies.has(name)) copies.set(name, [r, fileName]);
      }
    }
    for (const [name, src] of copies) if (!where.has(name)) where.set(name, src);
    const missing = [...params.keys(), ...quantized.keys()].filter((n) => !where.has(n));
    if (missing.length) {
      throw new CheckpointError(files.length === 1 ? files[0]! : join(files[0]!, '..'), `missing tensor${missing.length > 1 ? 's' : ''} ${missing.slice(0, 6).map((n) => `'${n}' ${fmt(shapeOf(n)!)}`).join(', ')}${missing.length > 6 ? `, … (${missing.length} in all)` : ''}`);
    }
    for (const [name, [r, fileName]] of where) {
      const q = quantized.get(name);
      if (q) {
        if (packed.has(name)) q.assign(await readPacked(r, fileName, q.format, q.N, q.K));
        else q.assign(quantize((await r.read(fileName)).data as Float32Array, q.N, q.K, q.format));
        continue;
      }
      const t = params.get(name)!;
      const v = await r.read(fileName);
      t.backend.write(t.storage, v.data, t.offset);
    }
  } finally {
    for (const r of readers) await r.close();
  }
}

/** The dtypes and shapes attn's packed entries of a quantized (N, K) matrix must have. */
function packedLayout(format: QuantFormat, N: number, K: number): Record<'levels' | 'scale' | 'zero_point', [SafetensorsDType, number[]] | null> {
  return format === 'int8'
    ? { levels: ['I8', [N, K]], scale: ['F32', [N, 1]], zero_point: null }
    : { levels: ['U8', [N, K / 2]], scale: ['F32', [N, K / 32]], zero_point: format === 'int4z' ? ['U8', [N, K / 32]] : null };
}

function checkPackedEntries(file: string, r: SafetensorsReader, levels: string, format: QuantFormat, N: number, K: number): void {
  const base = levels.replace(/\.weight$/, '');
  const want = packedLayout(format, N, K);
  for (const part of ['levels', 'scale', 'zero_point'] as const) {
    const name = part === 'levels' ? levels : `${base}.weight_${part}`;
    const info = r.header.tensors.get(name);
    const w = want[part];
    if (!w) continue;
    if (!info) throw new CheckpointError(file, `quantized '${levels}' (${format}) has no '${name}' beside it`);
    if (info.dtype !== w[0] || info.shape.length !== w[1].length || info.shape.some((d, i) => d !== w[1][i])) {
      throw new CheckpointError(file, `'${name}' is ${info.dtype} ${fmt(info.shape)}, a ${format} (${N}, ${K}) weight needs ${w[0]} ${fmt(w[1])}`);
    }
  }
}

async function readPacked(r: SafetensorsReader, levels: string, format: QuantFormat, N: number, K: number): Promise<QuantizedArrays> {
  const base = levels.replace(/\.weight$/, '');
  const bytes = (name: string): Promise<Uint8Array> => r.readBytes(name); // I8 and U8 as stored: the packed bytes
  return {
    format, N, K,
    data: await bytes(levels),
    scales: Float32Array.from((await r.read(`${base}.weight_scale`)).data),
    zeros: format === 'int4z' ? await bytes(`${base}.weight_zero_point`) : null,
  };
}

/** Loads a Hugging Face llama / mistral / qwen2 / qwen3 / phi directory, in eval mode. */
export async function loadDecoderDir(dir: string, opts: { backend?: Backend; dtype?: DType; quantize?: QuantizeSpec } = {}): Promise<LoadedDecoder> {
  const hfConfig = await readHFConfig(dir);
  let config: DecoderConfig;
  try {
    config = decoderConfigFromHF(hfConfig);
  } catch (e) {
    throw new CheckpointError(join(dir, 'config.json'), (e as Error).message);
  }
  const files = await weightFiles(dir);
  // A quantized checkpoint (attn quantize), or float weights quantized as they stream in
  // (opts.quantize): the matrices are born quantized, never float.
  let saved: ReturnType<typeof quantSpecOf>;
  try {
    saved = quantSpecOf(hfConfig);
  } catch (e) {
    throw new CheckpointError(join(dir, 'config.json'), (e as Error).message);
  }
  if (saved && opts.quantize && opts.quantize.format !== saved.format) {
    throw new CheckpointError(join(dir, 'config.json'), `the checkpoint is quantized as ${saved.format}; it loads as ${saved.format} only (asked for ${opts.quantize.format})`);
  }
  const format = saved?.format ?? opts.quantize?.format;
  const build = () => new DecoderLM(config, { backend: opts.backend, dtype: opts.dtype, init: false });
  const model = format ? buildQuantized({ format, embeddings: true }, build) : build();
  if (saved) settleQuantized(model, saved.modules);
  else if (opts.quantize) settleQuantized(model, opts.quantize);
  try {
    // transformers writes lm_head.weight even when tied; it is the embedding's copy.
    await streamWeightsInto(model, files, (n) => (config.tie_word_embeddings && n === 'lm_head.weight' ? null : n), `${config.model_type} model`);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model: model.eval(), config, hfConfig };
}

export interface SaveDecoderOptions {
  /** config.json fields to keep (the loaded one's). */
  hfConfig?: Record<string, unknown>;
  /** Tensor dtype in the file (default float32). */
  dtype?: 'float32' | 'bfloat16';
  /** Largest shard in bytes (default 2 GiB): bigger models are written as
   *  model-0000k-of-0000n.safetensors with model.safetensors.index.json, as save_pretrained does. */
  maxShardBytes?: number;
}

/** Writes config.json and model.safetensors as transformers' save_pretrained does (atomic per file). */
export async function saveDecoderDir(model: DecoderLM, dir: string, opts: SaveDecoderOptions = {}): Promise<void> {
  const bf16 = opts.dtype === 'bfloat16';
  const width = bf16 ? 2 : 4;
  const maxShard = opts.maxShardBytes ?? 2 ** 31;
  // Shards of whole tensors in name order, each at most maxShard bytes (a larger tensor alone).
  const quantized = quantizedWeights(model);
  type Item = [string, Tensor | QuantizedArrays];
  const items: Item[] = [...model.stateDict()];
  for (const [name, q] of quantized) items.push([name, q.toArrays()]);
  const bytesOf = (v: Tensor | QuantizedArrays): number => ('format' in v ? v.data.length + v.scales.byteLength + (v.zeros?.length ?? 0) : v.size * width);
  const shards: Item[][] = [[]];
  let size = 0;
  let total = 0;
  for (const [name, t] of items) {
    const bytes = bytesOf(t);
    if (size > 0 && size + bytes > maxShard) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push([name, t]);
    size += bytes;
    total += bytes;
  }
  const config = decoderConfigToHF(model.config, opts.hfConfig);
  config['torch_dtype'] = bf16 ? 'bfloat16' : 'float32';
  const format = quantized.size ? [...quantized.values()][0]!.format : null;
  if (format) config['quantization_config'] = quantizationConfig(model, format);
  else delete config['quantization_config'];
  await mkdir(dir, { recursive: true });
  const n = shards.length;
  const fileOf = (i: number): string => (n === 1 ? SINGLE : `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);
  for (let i = 0; i < n; i++) {
    // One shard serialized at a time. The serializer rounds to bfloat16 (nearest even) itself.
    const entries = new Map<string, TensorEntry>();
    for (const [name, t] of shards[i]!) {
      if ('format' in t) {
        for (const [n, e] of quantizedEntries(name, t)) entries.set(n, { dtype: e.dtype, shape: e.shape, data: e.dtype === 'I8' ? new Int8Array(e.bytes.buffer, e.bytes.byteOffset, e.bytes.length) : e.dtype === 'F32' ? new Float32Array(e.bytes.slice().buffer) : e.bytes });
      } else entries.set(name, { dtype: bf16 ? 'BF16' : 'F32', shape: [...t.shape], data: Float32Array.from(t.data()) });
    }
    await writeSafetensorsFile(join(dir, fileOf(i)), entries, { format: 'pt' });
  }
  if (n > 1) {
    const weightMap = Object.fromEntries(shards.flatMap((sh, i) => sh.flatMap(([name, t]) => ('format' in t ? quantizedEntries(name, t).map(([n]) => n) : [name]).map((n) => [n, fileOf(i)]))));
    await writeFileAtomic(join(dir, INDEX), `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`);
  }
  // A layout left from an earlier save would shadow this one (model.safetensors is read first).
  await rm(join(dir, n === 1 ? INDEX : SINGLE), { force: true });
  await writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}
