// Weight-only quantization of a model's matrices (every Linear; embeddings and the LM head when
// asked), in place, and the safetensors entries of a quantized model.
//
// On disk (attn's layout, beside the float parameters in model.safetensors):
//   {name}.weight             I8 (N, K) for int8; U8 (N, K/2) for int4 and int4z (groups of 32
//                             packed as llama.cpp's Q4_0 packs a block)
//   {name}.weight_scale       F32 (N, 1) for int8; F32 (N, K/32) for int4 and int4z
//   {name}.weight_zero_point  U8 (N, K/32), int4z only
// and config.json's "quantization_config": { "quant_method": "attn", "format", "group_size",
// "modules": [...] } lists the quantized modules.
import { dequantizeRows, QuantizedWeight, type QuantFormat, type QuantizedArrays } from '../tensor/index.js';
import { Embedding, Linear, MatrixModule } from './layers.js';
import type { Module } from './module.js';

export interface QuantizeSpec {
  format: QuantFormat;
  /** Quantize Embedding tables too (a tied LM head then reads the quantized table). Default false. */
  embeddings?: boolean;
  /** Quantize a separate LM head (a Linear named lm_head). Default false. */
  head?: boolean;
}

export interface QuantizeReport {
  /** Names of the quantized matrices (module name + '.weight'). */
  quantized: string[];
  /** Matrices left in float, with the reason. */
  kept: { name: string; why: string }[];
  /** Bytes of the quantized matrices before (float32) and after. */
  floatBytes: number;
  quantizedBytes: number;
}

/** Whether spec quantizes module `name` (a Linear or Embedding), else why not. */
export function quantizeWhyNot(name: string, m: MatrixModule, spec: QuantizeSpec): string | null {
  if (m instanceof Embedding && m.constructor !== Embedding) return 'a positional table';
  if (m instanceof Embedding && !spec.embeddings) return 'an embedding (quantize with embeddings: true / --quantize_embeddings)';
  if (m instanceof Linear && /(^|\.)lm_head$/.test(name) && !spec.head) return 'the LM head (quantize with head: true / --quantize_head)';
  const [N, K] = m.matrixShape();
  if (spec.format !== 'int8' && K % 32 !== 0) return `${K} columns are not whole groups of 32`;
  void N;
  return null;
}

/** The model's Linear and Embedding modules by name. */
export function matrixModules(model: Module): [string, MatrixModule][] {
  return model.namedModules().filter((e): e is [string, MatrixModule] => e[1] instanceof MatrixModule);
}

/** Quantizes the model's matrices in place (each float weight released as soon as it is packed). */
export function quantizeModel(model: Module, spec: QuantizeSpec): QuantizeReport {
  const report: QuantizeReport = { quantized: [], kept: [], floatBytes: 0, quantizedBytes: 0 };
  for (const [name, m] of matrixModules(model)) {
    const wname = name ? `${name}.weight` : 'weight';
    if (m.quant) {
      if (m.quant.format !== spec.format) report.kept.push({ name: wname, why: `already ${m.quant.format}` });
      else report.quantized.push(wname);
      continue;
    }
    const why = quantizeWhyNot(name, m, spec);
    if (why) {
      report.kept.push({ name: wname, why });
      continue;
    }
    const [N, K] = m.matrixShape();
    m.quantize(spec.format);
    report.quantized.push(wname);
    report.floatBytes += 4 * N * K;
    report.quantizedBytes += m.quant!.bytes;
  }
  return report;
}

/** After a buildQuantized() build: the matrices not to be quantized (spec's rules, or a checkpoint's
 *  list of modules) go back to zeroed float weights. */
export function settleQuantized(model: Module, which: QuantizeSpec | ReadonlySet<string>): void {
  for (const [name, m] of matrixModules(model)) {
    if (!m.quant) continue;
    const keep = which instanceof Set ? which.has(name) : !quantizeWhyNot(name, m, which as QuantizeSpec);
    if (!keep) m.unquantize(false);
  }
}

/** The quantized matrices by parameter name (module name + '.weight'). */
export function quantizedWeights(model: Module): Map<string, QuantizedWeight> {
  const out = new Map<string, QuantizedWeight>();
  for (const [name, m] of matrixModules(model)) if (m.quant) out.set(name ? `${name}.weight` : 'weight', m.quant);
  return out;
}

/** The format of a model's quantized matrices, or null when none is quantized. */
export function quantFormatOf(model: Module): QuantFormat | null {
  for (const [, m] of matrixModules(model)) if (m.quant) return m.quant.format;
  return null;
}

/** One safetensors entry: raw little-endian bytes with their dtype and shape. */
export interface RawTensorEntry {
  dtype: 'I8' | 'U8' | 'F32';
  shape: number[];
  bytes: Uint8Array;
}

/** The safetensors entries of one quantized matrix named `name` (…'.weight'). */
export function quantizedEntries(name: string, a: QuantizedArrays): [string, RawTensorEntry][] {
  const base = name.replace(/\.weight$/, '');
  const scales = new Uint8Array(a.scales.buffer, a.scales.byteOffset, a.scales.byteLength);
  if (a.format === 'int8') {
    return [
      [`${base}.weight`, { dtype: 'I8', shape: [a.N, a.K], bytes: a.data }],
      [`${base}.weight_scale`, { dtype: 'F32', shape: [a.N, 1], bytes: scales }],
    ];
  }
  const out: [string, RawTensorEntry][] = [
    [`${base}.weight`, { dtype: 'U8', shape: [a.N, a.K / 2], bytes: a.data }],
    [`${base}.weight_scale`, { dtype: 'F32', shape: [a.N, a.K / 32], bytes: scales }],
  ];
  if (a.zeros) out.push([`${base}.weight_zero_point`, { dtype: 'U8', shape: [a.N, a.K / 32], bytes: a.zeros }]);
  return out;
}

/** config.json's quantization_config for a model quantized with spec. */
export function quantizationConfig(model: Module, format: QuantFormat): Record<string, unknown> {
  return {
    quant_method: 'attn',
    format,
    bits: format === 'int8' ? 8 : 4,
    group_size: format === 'int8' ? -1 : 32,
    symmetric: format !== 'int4z',
    modules: [...quantizedWeights(model).keys()].map((n) => n.replace(/\.weight$/, '')),
  };
}

/** The quantization spec a config's quantization_config describes (null: not quantized). */
export function quantSpecOf(config: Record<string, unknown>): { format: QuantFormat; modules: Set<string> } | null {
  const q = config.quantization_config as Record<string, unknown> | undefined;
  if (!q) return null;
  if (q.quant_method !== 'attn') throw new Error(`quantization_config.quant_method '${String(q.quant_method)}' is not attn's (only checkpoints written by attn quantize load quantized)`);
  const format = q.format as QuantFormat;
  if (!['int8', 'int4', 'int4z'].includes(format)) throw new Error(`quantization_config.format '${String(format)}' is not int8, int4 or int4z`);
  const modules = new Set((q.modules as string[] | undefined) ?? []);
  return { format, modules };
}

/** A float view of one matrix for exporters: its shape, and its values computed on demand. */
export interface FloatMatrix {
  readonly shape: readonly number[];
  data(): Float32Array;
}

/**
 * The model's parameters with every quantized matrix as its dequantized float values (computed
 * one matrix at a time when an exporter asks): what GGUF export writes from a quantized model.
 */
export function floatStateDict(model: Module): Map<string, FloatMatrix> {
  const out = new Map<string, FloatMatrix>();
  for (const [name, t] of model.stateDict()) out.set(name, { shape: t.shape, data: () => Float32Array.from(t.data()) });
  for (const [name, q] of quantizedWeights(model)) out.set(name, { shape: q.shape, data: () => dequantizeRows(q.toArrays()) });
  return out;
}

/** Throws for a model with quantized matrices where a saver writes float tensors only. */
export function refuseQuantized(model: Module, what: string): void {
  const q = quantizedWeights(model);
  if (q.size) throw new Error(`${what}: the model holds quantized matrices (${[...q.values()][0]!.format}: ${[...q.keys()].slice(0, 2).join(', ')}${q.size > 2 ? ', …' : ''}); load it in float32 to save it this way (decoder families save quantized with saveDecoderDir)`);
}
