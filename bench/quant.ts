// Weight-only quantization: decode and prefill speed, resident memory and (with --model) the
// perplexity cost of int8, int4 and int4z against float32, on the native cpu path.
//   node dist/bench/quant.js [--only speed,quality,load] [--min_s 6] [--repeat 3] [--a8] [--variants float32,int4,int4+a8] [--shapes gpt2-124M] [--model DIR] [--json FILE]
// speed: the GPT-2 124M shape (12 layers, 768 wide, 50257 vocabulary, tied head) and a Llama of
// the same size, random weights, batch 1: prefill of 128 tokens, then KV-cache decode of 32. Each
// cell runs in a child process of its own, so its resident set (peak RSS) is that model's: the
// quantized models are built with their matrices born quantized (no float copy ever exists).
// quality: a Llama trained here (--model DIR: e.g. the command in docs/quantization.md), mean
// cross-entropy on Tiny Shakespeare's validation split.
import { spawnSync } from 'node:child_process';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from '../src/generate/index.js';
import { crossEntropy, getBackend, noGrad, quantize, slice, tensor, tidy, type QuantFormat } from '../src/index.js';
import type { CpuBackend } from '../src/backend/cpu/index.js';
import { DecoderLM } from '../src/models/decoder.js';
import { GPT } from '../src/models/gpt.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { load, save } from '../src/models/files.js';
import { loadDecoderDir, saveDecoderDir } from '../src/models/hf-decoder-files.js';
import { buildQuantized } from '../src/nn/layers.js';
import { matrixModules, settleQuantized, type QuantizeSpec } from '../src/nn/quantized.js';
import { loadTokenizer } from '../src/tokenizers/index.js';
import { machineInfo, now, parseArgs, randomFloats, table, xorshift32 } from './util.js';

const args = parseArgs(process.argv.slice(2));
const THREADS = 2;
const PREFILL = 128;
const DECODE = 32;
const minS = Number(args.get('min_s') ?? 6);
type Precision = 'float32' | QuantFormat;
const PRECISIONS: Precision[] = ['float32', 'int8', 'int4', 'int4z'];
// speed only: the int4 formats again with int8 activations (--a8: on processors with AVX-512 VNNI)
// --variants float32,int4,int4+a8 picks some; --shapes gpt2-124M picks a shape
const SPEED_VARIANTS: string[] = args.get('variants') ? String(args.get('variants')).split(',')
  : [...PRECISIONS, ...(args.get('a8') ? ['int4+a8', 'int4z+a8'] : [])];
const SHAPES = {
  'gpt2-124M': { kind: 'gpt', cfg: { vocab_size: 50257, block_size: 1024, n_layer: 12, n_head: 12, n_embd: 768, tie_embeddings: true, bias: true } },
  'llama-124M': { kind: 'llama', cfg: { model_type: 'llama', vocab_size: 50257, hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 12, max_position_embeddings: 1024, tie_word_embeddings: true } },
} as const;
type ShapeName = keyof typeof SHAPES;

/** Weights: uniform with std 0.02, drawn (and quantized) on the host 2048 rows at a time, so
 *  the peak resident set is the model's and not a float copy of its largest matrix. */
function fillRandom(model: GPT | DecoderLM, be: Awaited<ReturnType<typeof getBackend>>): void {
  let seed = 1;
  for (const [, m] of matrixModules(model)) {
    const [N, K] = m.matrixShape();
    for (let n0 = 0; n0 < N; n0 += 2048) {
      const rows = Math.min(2048, N - n0);
      const w = randomFloats(rows * K, seed++);
      for (let i = 0; i < w.length; i++) w[i] = w[i]! * 0.035;
      if (m.quant) m.quant.assignRows(n0, quantize(w, rows, K, m.quant.format));
      else be.write(m.weight.storage, w, m.weight.offset + n0 * K);
    }
  }
}

/** Resident set after full collections, so the figure is what stays resident; V8 frees large
 *  array buffers on a background thread, hence the pauses. */
async function rssNow(): Promise<number> {
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let i = 0; i < 2; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 300));
  }
  return process.memoryUsage().rss / 2 ** 20;
}

/** One cell, in this (child) process: build, fill, time prefill and decode, report peak RSS. */
async function speedCell(shape: ShapeName, variant: Precision | `${QuantFormat}+a8` | 'none'): Promise<Record<string, number>> {
  const be = await getBackend('cpu', { threads: THREADS });
  // FORMAT+a8: int8 activations (CpuBackend.setQuantActivations; AVX-512 VNNI only)
  const precision = variant.replace('+a8', '') as Precision | 'none';
  if (variant.endsWith('+a8') && (be as CpuBackend).setQuantActivations('int8') !== 'int8') throw new Error('int8 activations need the native kernels on an AVX-512 VNNI processor');
  if (precision === 'none') return { peak_rss_mib: process.resourceUsage().maxRSS / 1024, loaded_rss_mib: await rssNow() }; // the runtime alone
  const s = SHAPES[shape];
  const build = () => (s.kind === 'gpt' ? new GPT(s.cfg, { backend: be, init: false }) : new DecoderLM(decoderConfigFromHF(s.cfg), { backend: be, init: false }));
  // The token embedding (the tied head) is quantized too: it is the largest matrix of both shapes.
  const spec: QuantizeSpec | null = precision === 'float32' ? null : { format: precision, embeddings: true };
  const weightBytes = (): number => matrixModules(model).reduce((t, [, m]) => t + (m.quant ? m.quant.bytes : 4 * m.matrixShape()[0] * m.matrixShape()[1]), 0);
  const model = spec ? buildQuantized(spec, build) : build();
  if (spec) settleQuantized(model, spec);
  fillRandom(model, be);
  model.eval();
  const loadedRss = await rssNow(); // the model in memory, before any forward
  const rnd = xorshift32(7);
  const prompt = Array.from({ length: PREFILL }, () => Math.floor(rnd() * 50257 / 2 ** 32) % 50257);
  const prefill = (): void => {
    noGrad(() => tidy(() => slice(model.forward(tensor(prompt, { backend: be, dtype: 'int32', shape: [1, PREFILL] })).logits, 1, PREFILL - 1, PREFILL).data()));
  };
  prefill();
  let t0 = now();
  let n = 0;
  while (n < 2 || now() - t0 < minS * 500) {
    prefill();
    n++;
  }
  const prefillTps = (n * PREFILL) / ((now() - t0) / 1000);
  const decode = (): number => {
    const stamps: number[] = [];
    generate(model, prompt.slice(0, 16), { greedy: true, maxNewTokens: DECODE + 1, backend: be, onToken: () => stamps.push(now()) });
    return (stamps[DECODE]! - stamps[0]!) / 1000;
  };
  // Untimed decodes first: the JavaScript around the kernels reaches V8's optimised code only
  // after some hundred calls.
  for (let w = 0; w < 3; w++) decode();
  let total = 0;
  let reps = 0;
  while (reps < 2 || total < minS / 2) {
    total += decode();
    reps++;
  }
  return { prefill_tokens_per_s: prefillTps, decode_tokens_per_s: (reps * DECODE) / total, peak_rss_mib: process.resourceUsage().maxRSS / 1024, loaded_rss_mib: loadedRss, matrix_mib: weightBytes() / 2 ** 20 };
}

/** Mean cross-entropy of the trained model on up to 200 validation windows, and the size of its
 *  weights file as attn quantize writes it. variant: float32, int8, int4, int4z, or with '+all' the
 *  token embedding and the head quantized too. */
async function qualityCell(dir: string, variant: string): Promise<Record<string, number>> {
  const be = await getBackend('cpu', { threads: THREADS });
  // PRECISION[+all][+a8][+decode]: all: embedding and head quantized too; a8: int8 activations
  // (decode matmuls only, so with +decode); decode: the loss from one token at a time through the
  // KV cache (the decode kernels) instead of whole windows (the prefill kernels)
  const [precision, ...flags] = variant.split('+') as [Precision, ...string[]];
  const all = flags.includes('all');
  const stepwise = flags.includes('decode');
  if (flags.includes('a8') && (be as CpuBackend).setQuantActivations('int8') !== 'int8') throw new Error('int8 activations need the native kernels on an AVX-512 VNNI processor');
  const quant = precision === 'float32' ? undefined : { format: precision, embeddings: all, head: all };
  const model = (await loadDecoderDir(dir, { backend: be, quantize: quant })).model;
  const tok = await loadTokenizer(dir);
  const text = readFileSync(fileURLToPath(new URL('../../../shared/data/tinyshakespeare/input.txt', import.meta.url)), 'utf8');
  const val = tok.encode(text.slice(Math.floor(text.length * 0.9)));
  const T = Math.min(128, model.config.block_size);
  const windows = Math.min(200, Math.floor((val.length - 1) / T));
  let sum = 0;
  for (let w = 0; w < windows; w++) {
    const x = val.slice(w * T, w * T + T);
    const y = val.slice(w * T + 1, w * T + T + 1);
    if (!stepwise) {
      sum += noGrad(() => tidy(() => crossEntropy(model.forward(tensor(x, { backend: be, dtype: 'int32', shape: [1, T] })).logits, tensor(y, { backend: be, dtype: 'int32', shape: [1, T] })).item()));
      continue;
    }
    const cache = model.createKVCache();
    let s = 0;
    for (let t = 0; t < T; t++) {
      s += noGrad(() => tidy(() => crossEntropy(model.forwardWithCache(tensor([x[t]!], { backend: be, dtype: 'int32', shape: [1, 1] }), cache).logits, tensor([y[t]!], { backend: be, dtype: 'int32', shape: [1, 1] })).item()));
    }
    cache.dispose();
    sum += s / T;
  }
  const out = mkdtempSync(join(tmpdir(), 'attn-quant-bench-'));
  await saveDecoderDir(model, out);
  const fileBytes = statSync(join(out, 'model.safetensors')).size;
  rmSync(out, { recursive: true, force: true });
  return { val_loss: sum / windows, windows, T, file_bytes: fileBytes };
}

/** Writes the float32 checkpoint of a shape (random weights) to dir, as attn writes checkpoints;
 *  with a precision, loads that checkpoint quantized and writes it as attn quantize does. */
async function prepareCell(shape: ShapeName, dir: string, precision: Precision): Promise<Record<string, number>> {
  const be = await getBackend('cpu', { threads: THREADS });
  const s = SHAPES[shape];
  if (precision === 'float32') {
    const model = s.kind === 'gpt' ? new GPT(s.cfg, { backend: be, init: false }) : new DecoderLM(decoderConfigFromHF(s.cfg), { backend: be, init: false });
    fillRandom(model, be);
    if (model instanceof DecoderLM) await saveDecoderDir(model, dir, { hfConfig: { ...s.cfg } });
    else await save(dir, model);
  } else {
    const { model } = await load(`${dir.slice(0, dir.lastIndexOf('-'))}-float32`, { backend: be, quantize: { format: precision, embeddings: true } });
    await saveDecoderDir(model as DecoderLM, dir);
  }
  return {};
}

/** Loads a checkpoint directory in this (child) process the way a user does (attn.load, or
 *  --dtype on the CLI) and reports the resident set it leaves after collection. */
async function loadCell(dir: string, precision: Precision | 'none'): Promise<Record<string, number>> {
  const be = await getBackend('cpu', { threads: THREADS });
  const spec: QuantizeSpec | undefined = precision === 'float32' || precision === 'none' ? undefined : { format: precision, embeddings: true };
  const { model } = await load(dir, { backend: be, quantize: spec });
  const m = model as GPT | DecoderLM;
  const matrixBytes = matrixModules(m).reduce((t, [, q]) => t + (q.quant ? q.quant.bytes : 4 * q.matrixShape()[0] * q.matrixShape()[1]), 0);
  return { loaded_rss_mib: await rssNow(), peak_rss_mib: process.resourceUsage().maxRSS / 1024, matrix_mib: matrixBytes / 2 ** 20 };
}

if (args.get('cell')) {
  const [what, a, precision] = String(args.get('cell')).split('|') as [string, string, Precision];
  const r = what === 'speed' ? await speedCell(a as ShapeName, precision as Precision | `${QuantFormat}+a8`)
    : what === 'prepare' ? await prepareCell(a.split('@')[0] as ShapeName, a.split('@')[1]!, precision)
    : what === 'load' ? await loadCell(a, precision)
    : await qualityCell(a, precision as string);
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0);
}

function child(cell: string): Record<string, number> | string {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--cell', cell, '--min_s', String(minS)], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) return `failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' ')}`;
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>;
}

/** Each speed cell runs REPEAT times (fresh processes); the table shows each figure's median, as
 *  this machine's timings move by 20-30 % from run to run. */
const REPEAT = Number(args.get('repeat') ?? 3);
function medianOf(runs: (Record<string, number> | string)[]): Record<string, number> | string {
  const ok = runs.filter((r): r is Record<string, number> => typeof r !== 'string');
  if (!ok.length) return runs[0]!;
  const out: Record<string, number> = { runs: ok.length };
  for (const k of Object.keys(ok[0]!)) {
    const v = ok.map((r) => r[k]!).sort((a, b) => a - b);
    out[k] = v[Math.floor((v.length - 1) / 2)]!;
  }
  return out;
}

const only = new Set(String(args.get('only') ?? 'speed,quality').split(','));
const results: Record<string, unknown> = { machine: machineInfo(), threads: THREADS, prefill_tokens: PREFILL, decode_tokens: DECODE };
const f1 = (x: number): string => x.toFixed(1);
if (only.has('speed')) {
  const runtime = child('speed|gpt2-124M|none');
  const base0 = typeof runtime === 'string' ? 0 : runtime['loaded_rss_mib']!;
  results['runtime_rss_mib'] = base0;
  const shapes = (args.get('shapes') ? String(args.get('shapes')).split(',') : Object.keys(SHAPES)) as ShapeName[];
  for (const shape of shapes) {
    const cells: Record<string, Record<string, number> | string> = {};
    const rows: string[][] = [];
    for (const p of SPEED_VARIANTS) {
      const c = medianOf(Array.from({ length: REPEAT }, () => child(`speed|${shape}|${p}`)));
      cells[p] = c;
      const base = cells['float32'];
      if (typeof c === 'string' || typeof base === 'string') {
        rows.push([p, typeof c === 'string' ? c : 'n/a', '', '', '', '', '', '', '', '']);
        continue;
      }
      const x = (k: string, digits = 2): string => `${(c[k]! / base[k]!).toFixed(digits)}x`;
      const above = (r: Record<string, number>): number => r['loaded_rss_mib']! - base0;
      rows.push([p, f1(c['decode_tokens_per_s']!), x('decode_tokens_per_s'), f1(c['prefill_tokens_per_s']!), x('prefill_tokens_per_s'),
        f1(c['matrix_mib']!), x('matrix_mib', 3), f1(above(c)), `${(above(c) / above(base)).toFixed(3)}x`, f1(c['peak_rss_mib']!)]);
    }
    results[shape] = cells;
    console.log(`\n${shape}, batch 1, ${THREADS} threads, native cpu (${(results['machine'] as { cpu: string }).cpu}); every matrix quantized, the token embedding (tied head) too; medians of ${REPEAT} runs`);
    console.log(table(['weights', 'decode tok/s', 'vs f32', `prefill ${PREFILL} tok/s`, 'vs f32', 'matrices MiB', 'vs f32', `loaded RSS above runtime's ${f1(base0)} MiB`, 'vs f32', 'peak RSS MiB'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']));
  }
}
if (only.has('load')) {
  // Resident memory the way a user gets it: a checkpoint on disk, loaded in a fresh process.
  // GPT: the float checkpoint loaded with --dtype (quantized as it loads). Llama: the same, and
  // the directory attn quantize writes, loaded as it is.
  const root = mkdtempSync(join(tmpdir(), 'attn-quant-load-'));
  try {
    const runtime = child('speed|gpt2-124M|none');
    const base0 = typeof runtime === 'string' ? 0 : runtime['loaded_rss_mib']!;
    for (const shape of Object.keys(SHAPES) as ShapeName[]) {
      const floatDir = join(root, `${shape}-float32`);
      const prep = child(`prepare|${shape}@${floatDir}|float32`);
      if (typeof prep === 'string') throw new Error(prep);
      const rows: string[][] = [];
      const cells: Record<string, Record<string, number> | string> = {};
      const variants: [string, string, Precision][] = PRECISIONS.map((p) => [p === 'float32' ? 'float32' : `${p} (--dtype on load)`, floatDir, p]);
      if (SHAPES[shape].kind === 'llama') {
        for (const p of PRECISIONS.slice(1)) {
          const qDir = join(root, `${shape}-${p}`);
          const r = child(`prepare|${shape}@${qDir}|${p}`);
          if (typeof r === 'string') throw new Error(r);
          variants.push([`${p} (quantized directory)`, qDir, 'none' as Precision]);
        }
      }
      for (const [label, dir, p] of variants) {
        const c = medianOf(Array.from({ length: REPEAT }, () => child(`load|${dir}|${p}`)));
        cells[label] = c;
        const base = cells['float32'];
        if (typeof c === 'string' || typeof base === 'string') {
          rows.push([label, typeof c === 'string' ? c : 'n/a', '', '', '', '']);
          continue;
        }
        const above = (r: Record<string, number>): number => r['loaded_rss_mib']! - base0;
        rows.push([label, f1(c['matrix_mib']!), `${(c['matrix_mib']! / base['matrix_mib']!).toFixed(3)}x`, f1(above(c)), `${(above(c) / above(base)).toFixed(3)}x`, f1(c['peak_rss_mib']!)]);
      }
      results[`load-${shape}`] = { runtime_rss_mib: base0, cells };
      console.log(`\n${shape}: a checkpoint loaded in a fresh process, resident set after collection (medians of ${REPEAT} runs); the token embedding (tied head) quantized too`);
      console.log(table(['weights', 'matrices MiB', 'vs f32', `loaded RSS above runtime's ${f1(base0)} MiB`, 'vs f32', 'peak RSS MiB'], rows, ['l', 'r', 'r', 'r', 'r', 'r']));
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
const model = args.get('model');
if (only.has('quality') && typeof model === 'string') {
  const cells: Record<string, Record<string, number> | string> = {};
  const rows: string[][] = [];
  // --a8: the int4 formats' loss also from the decode kernels (one token at a time), with float32
  // and with int8 activations, against float32's decode loss
  const extra = args.get('a8') ? ['float32+decode', 'int4+decode', 'int4+a8+decode', 'int4z+decode', 'int4z+a8+decode', 'int4+all+decode', 'int4+all+a8+decode'] : [];
  for (const v of ['float32', 'int8', 'int4', 'int4z', 'int8+all', 'int4+all', 'int4z+all', ...extra]) {
    const c = child(`quality|${model}|${v}`);
    cells[v] = c;
    const base = cells[v.endsWith('+decode') ? 'float32+decode' : 'float32'];
    if (typeof c === 'string' || typeof base === 'string') {
      rows.push([v, typeof c === 'string' ? c : 'n/a', '', '', '', '']);
      continue;
    }
    const ppl = Math.exp(c['val_loss']!);
    const basePpl = Math.exp(base['val_loss']!);
    rows.push([v.replace('+all', ' + embedding, head').replace('+a8', ', int8 activations').replace('+decode', ' (decode)'), c['val_loss']!.toFixed(4), ppl.toFixed(4), `${(((ppl / basePpl) - 1) * 100).toFixed(2)} %`,
      (c['file_bytes']! / 1024).toFixed(0), `${(c['file_bytes']! / base['file_bytes']!).toFixed(3)}x`]);
  }
  results['quality'] = { model, cells };
  console.log(`\nperplexity on Tiny Shakespeare validation (${model}); file: model.safetensors as attn quantize writes it`);
  console.log(table(['weights', 'val loss', 'perplexity', 'change', 'file KiB', 'vs f32'], rows, ['l', 'r', 'r', 'r', 'r', 'r']));
}
const jsonOut = args.get('json');
if (typeof jsonOut === 'string') writeFileSync(jsonOut, `${JSON.stringify(results, null, 2)}\n`);
