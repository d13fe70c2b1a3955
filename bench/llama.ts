// Llama-architecture benchmark: attn's DecoderLM (the Hugging Face llama family) beside a plain
// PyTorch CPU Llama (bench/peers/torch_llama.py) in the same run, one after the other, same
// threads: training tokens/s of a small char-level Llama, and inference (prefill, KV-cache decode)
// of a ~110M Llama with grouped-query attention and a 32k vocabulary.
//   node dist/bench/llama.js [--only train,infer] [--min_s 10] [--json FILE]
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { generate } from '../src/generate/index.js';
import { getBackend, noGrad, slice, tensor, tidy } from '../src/index.js';
import { DecoderLM } from '../src/models/decoder.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';
import { AdamW } from '../src/train/optim.js';
import { machineInfo, now, parseArgs, table } from './util.js';

const args = parseArgs(process.argv.slice(2));
const only = new Set(String(args.get('only') ?? 'train,infer').split(','));
const minS = Number(args.get('min_s') ?? 10);
const THREADS = 2;

const TRAIN_CFG = { model_type: 'llama', hidden_size: 384, intermediate_size: 1024, num_hidden_layers: 6, num_attention_heads: 6, num_key_value_heads: 2, vocab_size: 65, max_position_embeddings: 256, tie_word_embeddings: true, rope_theta: 10000 };
const INFER_CFG = { model_type: 'llama', hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 4, vocab_size: 32000, max_position_embeddings: 1024, tie_word_embeddings: true, rope_theta: 10000 };
const BATCH = 8;
const PREFILL = 128;
const DECODE = 32;

function torchCell(spec: Record<string, unknown>): Record<string, unknown> | string {
  const script = fileURLToPath(new URL('../../bench/peers/torch_llama.py', import.meta.url));
  // The best PyTorch setting on 2 cores (../shared/notes/measured-here.md): 1 torch thread, 2
  // OpenBLAS threads; 2 + 2 oversubscribes the cores and is 2-4x slower.
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(THREADS), OMP_NUM_THREADS: '1' };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync('/usr/bin/python3', [script], { input: JSON.stringify({ ...spec, threads: 1 }), encoding: 'utf8', env, timeout: 600_000 });
  if (r.status !== 0) return `torch failed: ${(r.stderr ?? '').trim().split('\n').slice(-2).join(' ')}`;
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

function tokens(n: number, V: number, seed: number): Int32Array {
  let s = seed >>> 0 || 1;
  return Int32Array.from({ length: n }, () => {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    return (s >>> 0) % V;
  });
}

async function attnTrain(): Promise<Record<string, unknown>> {
  const be = await getBackend('cpu', { threads: THREADS });
  const model = new DecoderLM(decoderConfigFromHF(TRAIN_CFG), { backend: be });
  model.train();
  const opt = new AdamW(model.parameters(), { lr: 1e-3, weightDecay: 0.1 });
  const T = TRAIN_CFG.max_position_embeddings;
  let seed = 1;
  const step = (): void => tidy(() => {
    const x = tensor(tokens(BATCH * T, 65, seed++), { backend: be, dtype: 'int32', shape: [BATCH, T] });
    const y = tensor(tokens(BATCH * T, 65, seed++), { backend: be, dtype: 'int32', shape: [BATCH, T] });
    const { loss } = model.forward(x, y);
    opt.zeroGrad();
    loss!.backward();
    opt.stepUpdate();
    loss!.item();
  });
  for (let i = 0; i < 2; i++) step();
  const t0 = now();
  let n = 0;
  while (n < 3 || now() - t0 < minS * 1000) {
    step();
    n++;
  }
  const el = (now() - t0) / 1000;
  const out = { steps: n, elapsed_s: el, tokens_per_s: (n * BATCH * T) / el, params: model.numParameters(), peak_rss: process.resourceUsage().maxRSS * 1024 };
  model.dispose();
  return out;
}

async function attnInfer(): Promise<Record<string, unknown>> {
  const be = await getBackend('cpu', { threads: THREADS });
  const model = new DecoderLM(decoderConfigFromHF(INFER_CFG), { backend: be });
  model.eval();
  const prompt = tokens(PREFILL, INFER_CFG.vocab_size, 11);
  const prefill = (): number => noGrad(() => tidy(() => slice(model.forward(tensor(prompt, { backend: be, dtype: 'int32', shape: [1, PREFILL] })).logits, 1, PREFILL - 1, PREFILL).data()[0]!));
  prefill();
  let t0 = now();
  let n = 0;
  while (n < 2 || now() - t0 < minS * 1000) {
    prefill();
    n++;
  }
  const prefillTps = (n * PREFILL) / ((now() - t0) / 1000);
  const decode = (): number => {
    const stamps: number[] = [];
    generate(model, Array.from(prompt), { greedy: true, maxNewTokens: DECODE + 1, backend: be, onToken: () => stamps.push(now()) });
    return (stamps[DECODE]! - stamps[0]!) / 1000;
  };
  decode();
  let total = 0;
  let reps = 0;
  t0 = now();
  while (reps < 2 || total < minS) {
    total += decode();
    reps++;
  }
  const out = { params: model.numParameters(), prefill: { reps: n, tokens_per_s: prefillTps }, decode: { reps, tokens_per_s: (reps * DECODE) / total }, peak_rss: process.resourceUsage().maxRSS * 1024 };
  model.dispose();
  return out;
}

const results: Record<string, unknown> = { machine: machineInfo(), threads: THREADS, train_cfg: TRAIN_CFG, infer_cfg: INFER_CFG, batch: BATCH, prefill_tokens: PREFILL, decode_tokens: DECODE };
const rows: string[][] = [];
const tps = (c: unknown, k?: string): number | null => {
  if (!c || typeof c !== 'object') return null;
  const o = k ? (c as Record<string, Record<string, number>>)[k] : (c as Record<string, number>);
  return o && typeof o['tokens_per_s'] === 'number' ? o['tokens_per_s'] : null;
};
const fmtRatio = (a: number | null, b: number | null): string => (a && b ? `${(a / b).toFixed(2)}x` : 'n/a');
if (only.has('train')) {
  const torch = torchCell({ threads: THREADS, section: 'train', cfg: TRAIN_CFG, batch: BATCH, min_s: minS });
  const attn = await attnTrain();
  results['train'] = { attn, torch };
  rows.push([`train 6L 384 GQA 6/2, B${BATCH} T${TRAIN_CFG.max_position_embeddings}`, tps(attn)!.toFixed(0), typeof torch === 'string' ? torch : tps(torch)!.toFixed(0), fmtRatio(tps(attn), tps(torch))]);
}
if (only.has('infer')) {
  const torch = torchCell({ threads: THREADS, section: 'infer', cfg: INFER_CFG, prefill_tokens: PREFILL, decode_tokens: DECODE, min_s: minS });
  const attn = await attnInfer();
  results['infer'] = { attn, torch };
  for (const part of ['prefill', 'decode']) {
    const t = typeof torch === 'string' ? null : tps(torch, part);
    rows.push([`${part} ${(((attn as { params: number }).params) / 1e6).toFixed(0)}M llama (12L 768, GQA 12/4, 32k vocab)`, tps(attn, part)!.toFixed(1), t === null ? String(torch) : t.toFixed(1), fmtRatio(tps(attn, part), t)]);
  }
}
console.log(`\nLlama architecture, ${THREADS} cores, ${(results['machine'] as { cpu: string }).cpu}; attn cpu backend ${THREADS} threads; PyTorch 1 torch thread + ${THREADS} OpenBLAS threads (its best setting here)`);
console.log(table(['cell', 'attn tokens/s', 'PyTorch tokens/s', 'attn / PyTorch'], rows, ['l', 'r', 'r', 'r']));
const jsonOut = args.get('json');
if (typeof jsonOut === 'string') writeFileSync(jsonOut, `${JSON.stringify(results, null, 2)}\n`);
