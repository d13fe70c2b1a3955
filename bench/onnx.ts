// attn against ONNX Runtime (onnxruntime-node, its bundled CPU runtime) on identical weights:
// a random-weight Llama of the GPT-2 124M shape and a small Llama, exported by attn's own ONNX
// exporter (src/models/onnx-decoder.ts). Prefill (batch 1, 128 tokens) and greedy decode with
// the KV cache (batch 1, 64 steps), float32, int8 and int4: the attn side quantizes its model
// with quantizeModel (linear layers; embedding and tied head float32) and the export carries
// those very quantized matrices (int8 and int4 as com.microsoft.MatMulNBits, float32
// arithmetic: accuracy_level 0). 2 threads each (ORT: intraOpNumThreads 2, sequential).
// Every cell runs in its own child process, one after the other, so RSS is each engine's own:
// "rss" is the resident set once the model is ready, "peak" the child's maximum.
//   node dist/bench/onnx.js [--only gpt2,small] [--prec float32,int8,int4] [--embeddings] [--steps 64] [--prefill 128] [--json FILE]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from '../src/generate/index.js';
import { getBackend, noGrad, slice, tensor, tidy } from '../src/index.js';
import { saveONNX } from '../src/io/onnx.js';
import { DecoderLM } from '../src/models/decoder.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { exportDecoderONNX } from '../src/models/onnx-decoder.js';
import { quantizeModel } from '../src/nn/quantized.js';
import { machineInfo, now, parseArgs, table } from './util.js';

const THREADS = 2;
const CONFIGS: Record<string, Record<string, unknown>> = {
  // GPT-2 124M's shape as a Llama: 12 layers, 768 wide, 12 heads, MLP 3072, GPT-2's vocabulary, tied.
  gpt2: { model_type: 'llama', hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 12, vocab_size: 50257, max_position_embeddings: 1024, tie_word_embeddings: true, bos_token_id: null, eos_token_id: null },
  small: { model_type: 'llama', hidden_size: 256, intermediate_size: 768, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 4096, max_position_embeddings: 512, tie_word_embeddings: true, bos_token_id: null, eos_token_id: null },
};
type Prec = 'float32' | 'int8' | 'int4';

const args = parseArgs(process.argv.slice(2));
const PREFILL = Number(args.get('prefill') ?? 128);
const STEPS = Number(args.get('steps') ?? 64);
const PREFILL_REPS = Number(args.get('prefill_reps') ?? 3);
/** ORT-side export variants: --int8_op dequantize (DequantizeLinear → MatMul, which ORT runs as a
 *  dynamic int8 matmul), --accuracy_level 4 (MatMulNBits with int8 activations). */
const EMBEDDINGS = args.has('embeddings');
/** Untimed full decodes before the timed one, on both engines. */
const WARM_DECODES = 2;
const EXPORT_ARGS = ['int8_op', 'accuracy_level'].flatMap((k) => (args.has(k) ? [`--${k}`, String(args.get(k))] : []));

function prompt(n: number, V: number): number[] {
  let s = 12345;
  return Array.from({ length: n }, () => {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    return (s >>> 0) % V;
  });
}

const rss = (): number => process.memoryUsage().rss;
const peak = (): number => process.resourceUsage().maxRSS * 1024;

async function buildModel(cfgName: string, prec: Prec): Promise<DecoderLM> {
  const be = await getBackend('cpu', { threads: THREADS });
  const model = new DecoderLM(decoderConfigFromHF(CONFIGS[cfgName]!), { backend: be, seed: 7 });
  model.eval();
  // --embeddings: the token embedding (and so the tied head, GPT-2's largest matrix) quantized too.
  if (prec !== 'float32') quantizeModel(model, { format: prec, embeddings: EMBEDDINGS });
  return model;
}

/** Child: build (same seed), quantize, export the very weights to `file`. */
async function childExport(cfgName: string, prec: Prec, file: string): Promise<Record<string, unknown>> {
  const model = await buildModel(cfgName, prec);
  const int8Op = args.get('int8_op') === 'dequantize' ? 'dequantize' as const : 'matmulnbits' as const;
  const ex = exportDecoderONNX(model, { weights: prec, int8Op, accuracyLevel: Number(args.get('accuracy_level') ?? 0) });
  const bytes = saveONNX(file, ex.model);
  model.dispose();
  return { bytes, kept_float: ex.keptFloat.length };
}

async function childAttn(cfgName: string, prec: Prec): Promise<Record<string, unknown>> {
  const model = await buildModel(cfgName, prec);
  const be = await getBackend('cpu', { threads: THREADS });
  const V = model.config.vocab_size;
  const ids = prompt(PREFILL, V);
  const ready = rss();
  const prefill = (): number => noGrad(() => tidy(() => slice(model.forward(tensor(Int32Array.from(ids), { backend: be, dtype: 'int32', shape: [1, PREFILL] })).logits, 1, PREFILL - 1, PREFILL).data()[0]!));
  prefill();
  const t0 = now();
  for (let i = 0; i < PREFILL_REPS; i++) prefill();
  const prefillS = (now() - t0) / 1000 / PREFILL_REPS;
  const stamps: number[] = [];
  // Two full decodes first: the JavaScript around the kernels reaches V8's optimised code only
  // after some hundred calls (ORT's side warms up the same way below).
  for (let w = 0; w < WARM_DECODES; w++) generate(model, ids, { greedy: true, maxNewTokens: STEPS + 1, backend: be });
  const r = generate(model, ids, { greedy: true, maxNewTokens: STEPS + 1, backend: be, onToken: () => stamps.push(now()) });
  const decodeS = (stamps[STEPS]! - stamps[0]!) / 1000;
  model.dispose();
  return { prefill_tps: PREFILL / prefillS, decode_tps: STEPS / decodeS, rss: ready, peak: peak(), tokens: r.tokens.slice(0, 8) };
}

async function childOrt(cfgName: string, file: string): Promise<Record<string, unknown>> {
  const ort = await import('onnxruntime-node');
  const cfg = decoderConfigFromHF(CONFIGS[cfgName]!);
  const sess = await ort.InferenceSession.create(file, { intraOpNumThreads: THREADS, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' });
  const ready = rss();
  const V = cfg.vocab_size;
  const L = cfg.num_hidden_layers;
  const ids = prompt(PREFILL, V);
  const i64 = (v: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims);
  type Feeds = Record<string, InstanceType<typeof ort.Tensor>>;
  const emptyKV = new ort.Tensor('float32', new Float32Array(0), [1, cfg.num_key_value_heads, 0, cfg.head_dim]);
  const feeds = (chunk: number[], pastLen: number, past: Feeds | null): Feeds => {
    const f: Feeds = {
      input_ids: i64(chunk, [1, chunk.length]),
      attention_mask: i64(new Array<number>(pastLen + chunk.length).fill(1), [1, pastLen + chunk.length]),
      position_ids: i64(chunk.map((_, i) => pastLen + i), [1, chunk.length]),
    };
    for (let i = 0; i < L; i++) {
      f[`past_key_values.${i}.key`] = past ? past[`present.${i}.key`]! : emptyKV;
      f[`past_key_values.${i}.value`] = past ? past[`present.${i}.value`]! : emptyKV;
    }
    return f;
  };
  const argmaxLast = (logits: Float32Array, T: number): number => {
    let best = 0;
    const o = (T - 1) * V;
    for (let v = 1; v < V; v++) if (logits[o + v]! > logits[o + best]!) best = v;
    return best;
  };
  await sess.run(feeds(ids, 0, null));
  const t0 = now();
  for (let i = 0; i < PREFILL_REPS; i++) await sess.run(feeds(ids, 0, null));
  const prefillS = (now() - t0) / 1000 / PREFILL_REPS;
  // Greedy decode: prefill, then one token per step with past (presents fed back as pasts).
  const decodeOnce = async (): Promise<void> => {
    let o = await sess.run(feeds(ids, 0, null));
    let t = argmaxLast(o['logits']!.data as Float32Array, PREFILL);
    for (let s = 0; s < STEPS; s++) {
      o = await sess.run(feeds([t], PREFILL + s, o as Feeds));
      t = argmaxLast(o['logits']!.data as Float32Array, 1);
    }
  };
  for (let w = 0; w < WARM_DECODES; w++) await decodeOnce();
  let out = await sess.run(feeds(ids, 0, null));
  let next = argmaxLast(out['logits']!.data as Float32Array, PREFILL);
  const tokens = [next];
  const t1 = now();
  for (let s = 0; s < STEPS; s++) {
    out = await sess.run(feeds([next], PREFILL + s, out as Feeds));
    next = argmaxLast(out['logits']!.data as Float32Array, 1);
    tokens.push(next);
  }
  const decodeS = (now() - t1) / 1000;
  await sess.release();
  return { prefill_tps: PREFILL / prefillS, decode_tps: STEPS / decodeS, rss: ready, peak: peak(), tokens: tokens.slice(0, 8) };
}

function spawnChild(childArgs: string[]): Record<string, unknown> {
  const script = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [script, ...childArgs, ...(EMBEDDINGS ? ['--embeddings'] : []), '--prefill', String(PREFILL), '--steps', String(STEPS), '--prefill_reps', String(PREFILL_REPS)], { encoding: 'utf8', timeout: 600_000, maxBuffer: 1 << 26 });
  if (r.status !== 0) return { error: (r.stderr ?? '').trim().split('\n').slice(-3).join(' ') };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

const child = args.get('child');
if (child) {
  const cfgName = String(args.get('cfg'));
  const prec = String(args.get('prec')) as Prec;
  const file = String(args.get('file'));
  const out = child === 'export' ? await childExport(cfgName, prec, file) : child === 'attn' ? await childAttn(cfgName, prec) : await childOrt(cfgName, file);
  process.stdout.write(`${JSON.stringify(out)}\n`);
} else {
  const only = String(args.get('only') ?? 'small,gpt2').split(',');
  const precs = String(args.get('prec') ?? 'float32,int8,int4').split(',') as Prec[];
  const dir = mkdtempSync(join(tmpdir(), 'attn-bench-onnx-'));
  const results: Record<string, unknown> = { machine: machineInfo(), threads: THREADS, prefill_tokens: PREFILL, decode_steps: STEPS, cells: [] as unknown[] };
  const rows: string[][] = [];
  const mib = (b: unknown): string => (typeof b === 'number' ? `${(b / 2 ** 20).toFixed(0)}` : 'n/a');
  const n = (x: unknown): string => (typeof x === 'number' ? x.toFixed(x >= 100 ? 0 : 1) : 'n/a');
  const ratio = (a: unknown, b: unknown): string => (typeof a === 'number' && typeof b === 'number' ? `${(a / b).toFixed(2)}x` : 'n/a');
  try {
    for (const cfgName of only) {
      for (const prec of precs) {
        const file = join(dir, `${cfgName}-${prec}.onnx`);
        const t0 = now();
        const exp = spawnChild(['--child', 'export', '--cfg', cfgName, '--prec', prec, '--file', file, ...EXPORT_ARGS]);
        const attn = spawnChild(['--child', 'attn', '--cfg', cfgName, '--prec', prec]);
        const ort = exp['error'] ? { error: 'no export' } : spawnChild(['--child', 'ort', '--cfg', cfgName, '--file', file]);
        rmSync(file, { force: true });
        (results['cells'] as unknown[]).push({ cfg: cfgName, prec, export: exp, attn, ort, wall_s: (now() - t0) / 1000 });
        process.stderr.write(`${cfgName} ${prec}: ${JSON.stringify({ exp, attn, ort })}\n`);
        const err = (attn['error'] ?? ort['error'] ?? exp['error']) as string | undefined;
        rows.push([cfgName, prec, mib(exp['bytes']),
          n(attn['prefill_tps']), n(ort['prefill_tps']), ratio(attn['prefill_tps'], ort['prefill_tps']),
          n(attn['decode_tps']), n(ort['decode_tps']), ratio(attn['decode_tps'], ort['decode_tps']),
          `${mib(attn['rss'])} / ${mib(attn['peak'])}`, `${mib(ort['rss'])} / ${mib(ort['peak'])}`,
          err ? `error: ${err.slice(0, 80)}` : JSON.stringify(attn['tokens']) === JSON.stringify(ort['tokens']) ? 'same' : 'differ']);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`attn vs onnxruntime-node ${(await import('onnxruntime-node')).env.versions.node}, ${THREADS} threads, batch 1, prefill ${PREFILL} tokens, decode ${STEPS} steps (tokens/s)\n`);
  process.stdout.write(`${table(['model', 'weights', '.onnx MiB', 'prefill attn', 'prefill ORT', 'attn/ORT', 'decode attn', 'decode ORT', 'attn/ORT', 'attn RSS/peak MiB', 'ORT RSS/peak MiB', 'greedy tokens'], rows)}\n`);
  const json = args.get('json');
  if (typeof json === 'string') writeFileSync(json, JSON.stringify(results, null, 2));
}
