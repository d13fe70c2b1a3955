// GPU benchmark: attn's webgpu backend beside PyTorch CUDA, measured in the same run.
//   node dist/bench/gpu.js [--quick] [--only matmul,train,toloss,profile,decode] [--to-loss 1.47]
//     [--toloss-max-s 420] [--toloss-set key=value,...] [--skip-torch] [--python PATH] [--json] [--out FILE]
// (a) matmul float32 4096³ TFLOP/s; (b) training tokens/s of the shakespeare-char preset's
// model (6 layers, 6 heads, 384 wide, T 256, dropout 0.2) at batch 64; (c) with --to-loss (or
// toloss in --only), wall time of `attn train --preset shakespeare-char --device webgpu`
// until the validation loss reaches the goal. The PyTorch peer (bench/peers/torch_gpu.py)
// measures (a) with TF32 off and on and (b) in eager mode. --toloss-set overrides fields of the
// preset for (c) only (e.g. max_iters=1500,lr_decay_iters=1500,eval_iters=100: a schedule that
// ends where the preset's run starts to overfit); the report names them. --quick shrinks every size (256³,
// a 2-layer model) so that the whole script can be checked on a software adapter. Tables go
// to stdout, progress to stderr.
// (d) decode, only with --only decode: GPT-2 124M shape (random weights), batch 1, prefill of
// 128 tokens and 64 greedy KV-cache steps, weights float32 and float16 (Module.halfWeights),
// beside PyTorch CUDA eager float32 and float16 (bench/peers/torch_gpt.py).
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend, noGrad, slice, tensor, tidy, type Tensor } from '../src/index.js';
import { bytesPerElement } from '../src/tensor/dtype.js';
import { generate } from '../src/generate/index.js';
import type { WebGPUBackend } from '../src/backend/webgpu/index.js';
import { prepareDataset } from '../src/data/files.js';
import { gatherBatch } from '../src/data/sampler.js';
import { GPT, GPT2_CONFIG, type GPTConfig } from '../src/models/gpt.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { AdamW } from '../src/train/optim.js';
import { preset } from '../src/train/presets.js';
import { modelConfigOf, readQueuedStats, train, trainConfig, trainStep, trainStepQueued, type TrainConfig } from '../src/tasks/lm.js';
import { log, machineInfo, now, num, randomFloats, ratio, scriptArgs, spotCheckMatmul, table, writeJsonIfAsked } from './util.js';

const cli = scriptArgs();
const { args, flag, opt } = cli;
const quick = flag('quick');
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SHAKESPEARE = join(ROOT, 'data/tinyshakespeare/input.txt');

/** The issue's goals. */
const TARGETS = { matmulVsTorchTf32Off: 0.5, toLoss: 1.47, toLossSeconds: 300 };

// ---------------------------------------------------------------- cases

const MATMUL_N = quick ? 256 : 4096;
const BATCH = quick ? 4 : 64;

/** The shakespeare-char preset's fields (the model, and for --to-loss the whole run). */
function presetConfig(): Partial<TrainConfig> {
  const p = preset('shakespeare-char');
  // A 2-layer, 64-wide model with the same recipe: seconds per step on a software adapter.
  return quick ? { ...p, n_layer: 2, n_head: 2, n_embd: 64, block_size: 64 } : p;
}

/** The GPT of the preset with the character vocabulary of Tiny Shakespeare (65). */
function modelConfig(vocab: number): GPTConfig {
  return modelConfigOf(trainConfig({ ...presetConfig(), device: 'webgpu' }), vocab);
}

const TRAIN_TIMING = quick ? { warmup_steps: 1, min_steps: 2, min_s: 0 } : { warmup_steps: 5, min_steps: 20, min_s: 10 };
const MATMUL_TIMING = quick ? { warmup: 2, samples: 2, min_sample_ms: 50 } : { warmup: 5, samples: 5, min_sample_ms: 1000 };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

// ---------------------------------------------------------------- attn: matmul

interface MatmulResult {
  n: number;
  tflops_best: number;
  tflops_median: number;
  ms_best: number;
  reps: number;
  samples_ms: number[];
  max_rel_err: number;
}

function benchMatmul(be: WebGPUBackend, n: number, path?: 'general' | 'tiled'): MatmulResult {
  const aData = randomFloats(n * n, 1);
  const bData = randomFloats(n * n, 2);
  const a = be.upload(aData, 'float32');
  const b = be.upload(bData, 'float32');
  const out = be.alloc('float32', n * n);
  const mm = () =>
    be.matmul({
      a, aOffset: 0, aBatchStride: 0, transA: false, lda: n,
      b, bOffset: 0, bBatchStride: 0, transB: false, ldb: n,
      out, batch: 1, M: n, N: n, K: n,
      // The webgpu kernel reads an extra `path` arg forcing one shader (not part of MatmulArgs).
      ...(path ? { path } : {}),
    } as Parameters<WebGPUBackend['matmul']>[0]);
  try {
    for (let i = 0; i < MATMUL_TIMING.warmup; i++) mm();
    be.sync();
    // One synced call sizes the samples; the GPU runs queued products back to back, and the
    // read at the end of each sample waits for the last.
    const t1 = now();
    mm();
    be.sync();
    const single = Math.max(now() - t1, 1e-3);
    const reps = Math.max(3, Math.min(1000, Math.ceil(MATMUL_TIMING.min_sample_ms / single)));
    const samples: number[] = [];
    for (let s = 0; s < MATMUL_TIMING.samples; s++) {
      const ts = now();
      for (let r = 0; r < reps; r++) mm();
      be.sync();
      samples.push((now() - ts) / reps);
    }
    const flops = 2 * n * n * n;
    const best = Math.min(...samples);
    const err = spotCheckMatmul({ name: '', M: n, K: n, N: n }, aData, bData, be.read(out));
    return {
      n, tflops_best: flops / (best * 1e9), tflops_median: flops / (median(samples) * 1e9), ms_best: best, reps, samples_ms: samples, max_rel_err: err,
    };
  } finally {
    be.free(a);
    be.free(b);
    be.free(out);
  }
}

// ---------------------------------------------------------------- attn: training throughput

interface TrainResult {
  steps: number;
  elapsed_s: number;
  tokens_per_s: number;
  best_step_ms: number;
  median_step_ms: number;
  params: number;
  last_loss: number;
  /** Per step: time this thread spent blocked on the step's reads (GPU and device thread). */
  wait_ms_per_step: number;
  /** Updates per read-back of the losses (1: trainStep's read per update). */
  read_every: number;
}

/** The preset's model and optimizer on Tiny Shakespeare's characters, as the trainer makes them. */
// ---------------------------------------------------------------- attn: GPT-2 decode

const DECODE_PROMPT = quick ? 16 : 128;
const DECODE_STEPS = quick ? 8 : 64;
const DECODE_MIN_S = quick ? 0.5 : 5;

function decodeConfig(): GPTConfig {
  return quick ? { ...GPT2_CONFIG, n_layer: 2, n_head: 2, n_embd: 64, block_size: 64, vocab_size: 500 } : { ...GPT2_CONFIG };
}

interface DecodeResult {
  dtype: 'float32' | 'float16';
  weight_mib: number;
  prefill_tokens_per_s: number;
  prefill_best_ms: number;
  decode_tokens_per_s: number;
  decode_reps: number;
}

function benchDecode(be: WebGPUBackend, dtype: 'float32' | 'float16'): DecodeResult {
  const cfg = decodeConfig();
  const model = new GPT(cfg, { backend: be, seed: 0 });
  model.eval();
  try {
    if (dtype === 'float16') model.halfWeights();
    const weightMib = model.parameters().reduce((s, p) => s + p.size * bytesPerElement(p.dtype), 0) / 2 ** 20;
    let seed = 7;
    const prompt = Array.from({ length: DECODE_PROMPT }, () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % cfg.vocab_size);
    const P = DECODE_PROMPT;
    const prefill = () => {
      const t = now();
      noGrad(() => tidy(() => {
        const logits: Tensor = model.forward(tensor(Int32Array.from(prompt), { backend: be, dtype: 'int32', shape: [1, P] })).logits;
        return slice(logits, 1, P - 1, P).data()[0];
      }));
      return now() - t;
    };
    for (let i = 0; i < 3; i++) prefill();
    const times: number[] = [];
    while (times.length < 5 || times.reduce((a, b) => a + b, 0) < DECODE_MIN_S * 1e3) times.push(prefill());
    const run = (): number => {
      const stamps: number[] = [];
      generate(model, prompt, { greedy: true, maxNewTokens: DECODE_STEPS + 1, backend: be, onToken: () => stamps.push(now()) });
      return (stamps[DECODE_STEPS]! - stamps[0]!) / 1e3;
    };
    run();
    let total = 0;
    let reps = 0;
    while (reps < 2 || total < DECODE_MIN_S) {
      total += run();
      reps++;
    }
    return {
      dtype, weight_mib: weightMib,
      prefill_tokens_per_s: (P * times.length * 1e3) / times.reduce((a, b) => a + b, 0), prefill_best_ms: Math.min(...times),
      decode_tokens_per_s: (DECODE_STEPS * reps) / total, decode_reps: reps,
    };
  } finally {
    model.dispose();
  }
}

/** PyTorch CUDA eager decode of the same shape (bench/peers/torch_gpt.py, infer section). */
function runTorchDecode(python: string, dtype: 'float32' | 'float16'): Cell | string {
  const spec = {
    section: 'infer', cfg: decodeConfig(), prefill_tokens: DECODE_PROMPT, decode_tokens: DECODE_STEPS,
    device: 'cuda', dtype, warmup_steps: 2, warmup_s: 1, min_s: DECODE_MIN_S, min_reps: 2, parts: ['prefill', 'decode'],
  };
  const r = spawnSync(python, [join(ROOT, 'bench/peers/torch_gpt.py'), JSON.stringify(spec)], { encoding: 'utf8', timeout: 300_000 });
  if (r.error) return `${python}: ${r.error.message}`;
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    const out = JSON.parse(line) as Cell;
    return typeof out.error === 'string' ? out.error : out;
  } catch {
    return `no JSON from torch_gpt.py (exit ${String(r.status)}): ${(r.stderr || r.stdout).slice(-400)}`;
  }
}

function trainingSetup(be: WebGPUBackend) {
  const text = readFileSync(SHAKESPEARE, 'utf8');
  const tok = CharTokenizer.fromText(text);
  const ids = tok.encode(text);
  const cfg = modelConfig(tok.vocabSize);
  const p = presetConfig();
  const model = new GPT(cfg, { backend: be, seed: 1337 });
  model.train(true);
  const optim = new AdamW(model.parameters(), { lr: p.learning_rate!, weightDecay: p.weight_decay!, betas: [0.9, p.beta2!] });
  const dispose = () => {
    model.dispose();
    optim.zeroGrad();
    for (const st of optim.stateTensors()) {
      st.m.dispose();
      st.v.dispose();
    }
  };
  return { ids, cfg, p, model, optim, T: cfg.block_size, dispose };
}

function benchTrain(be: WebGPUBackend): TrainResult {
  const { ids, p, model, optim, T, dispose } = trainingSetup(be);
  let seed = 12345;
  const offset = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % (ids.length - T - 1);
  };
  const batch = () => [gatherBatch(ids, Array.from({ length: BATCH }, offset), T)];
  // The trainer's update on webgpu: forward, backward, clip and AdamW queued with nothing read
  // (trainStepQueued), the losses and norms read once per log interval of the preset, as
  // `attn train --device webgpu` does. --train-read-each-step: trainStep, one read per update.
  const eachStep = flag('train-read-each-step');
  const every = p.log_interval ?? 10;
  let queue: { step: number; stats: Tensor }[] = [];
  let last = NaN;
  let n = 0;
  const step = () => {
    if (eachStep) {
      last = trainStep(model, optim, batch(), { gradClip: p.grad_clip! }).loss;
      return;
    }
    queue.push({ step: n, stats: trainStepQueued(model, optim, batch(), { gradClip: p.grad_clip! }).stats });
    n++;
    if (queue.length >= every) {
      last = readQueuedStats(queue).at(-1)!.loss;
      queue = [];
    }
  };
  try {
    for (let i = 0; i < TRAIN_TIMING.warmup_steps; i++) step();
    if (queue.length) last = readQueuedStats(queue).at(-1)!.loss;
    queue = [];
    const times: number[] = [];
    const wait0 = be.waitMs;
    const t0 = now();
    // Whole log intervals, so every timed update is read back inside the timing.
    while (times.length < TRAIN_TIMING.min_steps || now() - t0 < TRAIN_TIMING.min_s * 1e3 || queue.length > 0) {
      const ts = now();
      step();
      times.push(now() - ts);
    }
    const elapsed = (now() - t0) / 1e3;
    return {
      steps: times.length, elapsed_s: elapsed, tokens_per_s: (times.length * BATCH * T) / elapsed,
      best_step_ms: Math.min(...times), median_step_ms: median(times), params: model.numParameters(), last_loss: last,
      wait_ms_per_step: (be.waitMs - wait0) / times.length, read_every: eachStep ? 1 : every,
    };
  } finally {
    dispose();
  }
}

// ---------------------------------------------------------------- attn: where a training step's time goes

interface ProfileRow {
  kernel: string;
  calls: number;
  ms_per_step: number;
  share: number;
}

interface ProfileResult {
  /** 'timestamps': GPU time per kernel from timestamp queries (ATTN_WEBGPU_PROFILE=1), each
   *  kernel in a compute pass of its own; 'synced': wall time of each call synced alone. */
  method: 'timestamps' | 'synced';
  steps: number;
  /** Sum of the timed kernels per step (each synced alone, so launch gaps are excluded). */
  kernel_ms_per_step: number;
  /** The same steps' wall time with every kernel synced (includes the round trips). */
  synced_step_ms: number;
  /** One sync with nothing queued, subtracted from each call's time. */
  round_trip_ms: number;
  rows: ProfileRow[];
}

/** Backend methods timed one by one. */
const PROFILED = [
  'copy', 'copyInto', 'fill', 'unary', 'unaryBackward', 'binary', 'binaryScalar', 'where', 'reduce', 'cumsum', 'matmul',
  'softmax', 'softmaxBackward', 'layerNorm', 'layerNormBackward', 'rmsNorm', 'rmsNormBackward', 'embedding',
  'embeddingBackward', 'gather', 'scatterAdd', 'crossEntropy', 'crossEntropyBackward', 'attention', 'attentionBackward',
  'dropoutMask', 'adamw',
] as const;

/** A name for one call: the method, and for the big kernels the shape that decides its cost. */
function kernelKey(name: string, a: unknown[]): string {
  const o = a[0] as Record<string, unknown>;
  if (name === 'matmul') return `matmul ${o.batch as number}×${o.M as number}×${o.N as number}×${o.K as number}${o.transA ? ' Aᵀ' : ''}${o.transB ? ' Bᵀ' : ''}${o.bias ? ' +bias' : ''}${o.activation && o.activation !== 'none' ? ` ${String(o.activation)}` : ''}${o.accumulate ? ' +=' : ''}`;
  if (name === 'unary' || name === 'binary' || name === 'binaryScalar' || name === 'unaryBackward' || name === 'reduce') return `${name} ${String(a[0])}`;
  return name;
}

/**
 * Times every backend call of a few training steps by syncing before and after it. The GPU
 * then idles between kernels, so the sum is a lower bound of a step and the split is what
 * matters: it names the kernels worth tuning.
 */
function benchProfile(be: WebGPUBackend, steps: number): ProfileResult {
  const { ids, p, model, optim, T, dispose } = trainingSetup(be);
  const offsets = () => Array.from({ length: BATCH }, (_, i) => (i * 7919 * T) % (ids.length - T - 1));
  const step = () => trainStep(model, optim, [gatherBatch(ids, offsets(), T)], { gradClip: p.grad_clip! });
  const acc = new Map<string, { calls: number; ms: number }>();
  const target = be as unknown as Record<string, (...a: unknown[]) => unknown>;
  const originals = new Map<string, (...a: unknown[]) => unknown>();
  try {
    step();
    step();
    if (be.kernelTimes() !== null) {
      const t0 = now();
      for (let i = 0; i < steps; i++) step();
      const wall = (now() - t0) / steps;
      const times = be.kernelTimes() ?? [];
      const total = times.reduce((a, r) => a + r.ms, 0);
      const rows = times
        .map((r) => ({ kernel: r.kernel, calls: r.calls / steps, ms_per_step: r.ms / steps, share: r.ms / total }))
        .sort((x, y) => y.ms_per_step - x.ms_per_step);
      return { method: 'timestamps', steps, kernel_ms_per_step: total / steps, synced_step_ms: wall, round_trip_ms: 0, rows };
    }
    // The cost of a sync with nothing queued: subtracted from every timed call below.
    const rt0 = now();
    for (let i = 0; i < 50; i++) be.sync();
    const roundTrip = (now() - rt0) / 50;
    for (const name of PROFILED) {
      const orig = target[name];
      if (typeof orig !== 'function') continue;
      originals.set(name, orig);
      target[name] = (...a: unknown[]) => {
        be.sync();
        const t = now();
        const r = orig.apply(be, a);
        be.sync();
        const key = kernelKey(name, a);
        const e = acc.get(key) ?? { calls: 0, ms: 0 };
        e.calls++;
        e.ms += Math.max(0, now() - t - roundTrip);
        acc.set(key, e);
        return r;
      };
    }
    const t0 = now();
    for (let i = 0; i < steps; i++) step();
    const wall = (now() - t0) / steps;
    let total = 0;
    for (const e of acc.values()) total += e.ms;
    const rows = [...acc.entries()]
      .map(([kernel, e]) => ({ kernel, calls: e.calls / steps, ms_per_step: e.ms / steps, share: e.ms / total }))
      .sort((x, y) => y.ms_per_step - x.ms_per_step);
    return { method: 'synced', steps, kernel_ms_per_step: total / steps, synced_step_ms: wall, round_trip_ms: roundTrip, rows };
  } finally {
    for (const [name, f] of originals) target[name] = f;
    dispose();
  }
}

// ---------------------------------------------------------------- attn: time to a validation loss

interface ToLossResult {
  goal: number;
  reached: boolean;
  wall_s: number;
  /** Seconds from train()'s first step to the evaluation that reached the goal. */
  train_s: number | null;
  step: number;
  val_loss: number;
  evals: { step: number; val_loss: number; wall_s: number }[];
  max_s: number;
}

/** --toloss-set key=value,...: numeric fields of TrainConfig for the to-loss run. */
function toLossOverrides(spec: string): Partial<TrainConfig> {
  const out: Record<string, number> = {};
  for (const kv of spec.split(',').map((x) => x.trim()).filter(Boolean)) {
    const [k, v] = kv.split('=');
    const n = Number(v);
    if (!k || v === undefined || !Number.isFinite(n)) throw new Error(`--toloss-set: expected key=number, got '${kv}'`);
    out[k] = n;
  }
  return out as Partial<TrainConfig>;
}

async function benchToLoss(goal: number, maxS: number, overrides: Partial<TrainConfig>): Promise<ToLossResult> {
  // A private prepared copy of Tiny Shakespeare and a scratch out_dir: nothing of the user's is touched.
  const work = join(tmpdir(), `attn-bench-gpu-${process.pid}`);
  const dataset = join(work, 'shakespeare_char');
  const text = readFileSync(SHAKESPEARE, 'utf8');
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: dataset });
  const base = presetConfig();
  const cfg: Partial<TrainConfig> = {
    ...base, dataset, out_dir: join(work, 'out'), device: 'webgpu', batch_size: BATCH,
    // --quick: evaluate often and cheaply so the loop's plumbing shows in seconds.
    ...(quick ? { eval_interval: 5, eval_iters: 2, max_iters: 200, lr_decay_iters: 200, warmup_iters: 5 } : {}),
    ...overrides,
  };
  const stop = new AbortController();
  const evals: ToLossResult['evals'] = [];
  let hit: { step: number; val_loss: number; wall_s: number } | null = null;
  let firstStep: number | null = null;
  const t0 = now();
  try {
    await train(cfg, {
      signal: stop.signal,
      onStart: () => {
        firstStep = now();
      },
      onEval: (e) => {
        const wall = (now() - t0) / 1e3;
        evals.push({ step: e.step, val_loss: e.val_loss, wall_s: wall });
        log(`  step ${e.step}: val loss ${e.val_loss.toFixed(4)} at ${wall.toFixed(1)} s`);
        if (!hit && e.val_loss <= goal) {
          hit = { step: e.step, val_loss: e.val_loss, wall_s: wall };
          stop.abort();
        }
      },
      onProgress: () => {
        if ((now() - t0) / 1e3 > maxS) stop.abort();
      },
    });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const h = hit as { step: number; val_loss: number; wall_s: number } | null;
  const last = evals[evals.length - 1];
  return {
    goal, reached: h !== null, wall_s: h ? h.wall_s : (now() - t0) / 1e3,
    train_s: h && firstStep !== null ? h.wall_s - (firstStep - t0) / 1e3 : null,
    step: h?.step ?? last?.step ?? 0, val_loss: h?.val_loss ?? last?.val_loss ?? NaN, evals, max_s: maxS,
  };
}

// ---------------------------------------------------------------- PyTorch peer

type Cell = Record<string, unknown>;

function get(o: unknown, ...path: string[]): number | null {
  let v: unknown = o;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function runTorch(python: string, spec: Cell, timeoutS: number): Cell | string {
  const script = join(ROOT, 'bench/peers/torch_gpu.py');
  const r = spawnSync(python, [script], {
    input: JSON.stringify(spec), encoding: 'utf8', timeout: timeoutS * 1e3, maxBuffer: 64 << 20,
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  if (r.error) return `${python}: ${r.error.message}`;
  const line = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    const j = JSON.parse(line) as Cell;
    if (typeof j.error === 'string') return j.error;
    return j;
  } catch {
    return `exit ${r.status}: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' ').slice(0, 400)}`;
  }
}

function gpuName(): string | null {
  const r = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split('\n')[0]! : null;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const onlyArg = opt('only', '');
  const only = new Set(onlyArg ? onlyArg.split(',').map((s) => s.trim()) : ['matmul', 'train']);
  const toLossArg = args.get('to-loss');
  if (toLossArg !== undefined) only.add('toloss');
  for (const s of only) if (!['matmul', 'train', 'toloss', 'profile', 'decode'].includes(s)) throw new Error(`--only: unknown part '${s}' (matmul, train, toloss, profile, decode)`);
  const goal = typeof toLossArg === 'string' ? Number(toLossArg) : quick ? 3.5 : TARGETS.toLoss;
  if (!(goal > 0)) throw new Error(`--to-loss: bad value '${String(toLossArg)}'`);
  const maxS = Number(opt('toloss-max-s', quick ? '120' : '420'));
  const overrides = toLossOverrides(opt('toloss-set', ''));
  const python = opt('python', 'python3');
  const mach = machineInfo();
  const gpu = gpuName();

  log('starting the webgpu device…');
  const be = (await getBackend('webgpu')) as WebGPUBackend;
  const ad = be.adapter;
  log(`adapter: ${ad.description || ad.device} (${ad.vendor} ${ad.architecture}, ${ad.backend})`);

  let attnMatmul: MatmulResult | null = null;
  let attnTrain: TrainResult | null = null;
  let profile: ProfileResult | null = null;
  const matmulPaths: Record<string, MatmulResult | null> = {};
  let toLoss: ToLossResult | null = null;
  const errors: string[] = [];
  const attempt = async <T>(what: string, f: () => T | Promise<T>): Promise<T | null> => {
    try {
      return await f();
    } catch (e) {
      errors.push(`${what}: ${e instanceof Error ? e.message : String(e)}`);
      log(`  ${what} failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
      return null;
    }
  };
  if (only.has('matmul')) {
    log(`matmul ${MATMUL_N}³ on webgpu…`);
    attnMatmul = await attempt('attn matmul', () => benchMatmul(be, MATMUL_N));
    if (attnMatmul) log(`  ${num(attnMatmul.tflops_best)} TFLOP/s (${num(attnMatmul.ms_best)} ms, max rel err ${attnMatmul.max_rel_err.toExponential(1)})`);
    // Each shader forced, for the record (the automatic choice is the row above).
    for (const path of ['general', 'tiled'] as const) {
      matmulPaths[path] = await attempt(`attn matmul (${path})`, () => benchMatmul(be, MATMUL_N, path));
      const r = matmulPaths[path];
      if (r) log(`  ${path}: ${num(r.tflops_best)} TFLOP/s (max rel err ${r.max_rel_err.toExponential(1)})`);
    }
  }
  if (only.has('train')) {
    log(`training tokens/s, batch ${BATCH}, on webgpu…`);
    attnTrain = await attempt('attn train', () => benchTrain(be));
    if (attnTrain) log(`  ${num(attnTrain.tokens_per_s)} tokens/s (${num((attnTrain.elapsed_s * 1e3) / attnTrain.steps)} ms/step, ${num(attnTrain.wait_ms_per_step)} of them waiting for the device)`);
  }

  const decode: Record<string, DecodeResult | Cell | null> = {};
  if (only.has('decode')) {
    for (const dtype of ['float32', 'float16'] as const) {
      log(`GPT-2 124M decode, weights ${dtype}, on webgpu…`);
      const r = await attempt(`attn decode ${dtype}`, () => benchDecode(be, dtype));
      decode[`attn_${dtype}`] = r;
      if (r) log(`  prefill ${num(r.prefill_tokens_per_s)} tokens/s, decode ${num(r.decode_tokens_per_s)} tokens/s, weights ${num(r.weight_mib)} MiB`);
    }
    if (!flag('skip-torch')) {
      for (const dtype of ['float32', 'float16'] as const) {
        log(`PyTorch CUDA decode, ${dtype}…`);
        const r = runTorchDecode(python, dtype);
        if (typeof r === 'string') errors.push(`torch decode ${dtype}: ${r}`);
        decode[`torch_${dtype}`] = typeof r === 'string' ? null : r;
      }
    }
  }

  if (only.has('profile')) {
    log('profiling training steps kernel by kernel…');
    profile = await attempt('attn profile', () => benchProfile(be, quick ? 1 : 5));
  }

  // The peer runs after attn's parts and before --to-loss, with attn's device idle.
  let torch: Cell | null = null;
  let torchMissing: string | null = null;
  const torchParts = ['matmul', 'train'].filter((p) => only.has(p));
  if (flag('skip-torch')) torchMissing = 'skipped (--skip-torch)';
  else if (torchParts.length) {
    log(`PyTorch peer (${python}: ${torchParts.join(', ')})…`);
    const text = readFileSync(SHAKESPEARE, 'utf8');
    const r = runTorch(python, {
      parts: torchParts, quick, matmul_n: MATMUL_N, batch: BATCH, cfg: modelConfig(CharTokenizer.fromText(text).vocabSize),
      lr: presetConfig().learning_rate, weight_decay: presetConfig().weight_decay, beta2: presetConfig().beta2, grad_clip: presetConfig().grad_clip,
      ...TRAIN_TIMING, matmul_timing: MATMUL_TIMING,
    }, quick ? 300 : 600);
    if (typeof r === 'string') torchMissing = r;
    else torch = r;
    // A part that failed inside the peer (out of memory, say) reports its error in place.
    for (const part of torchParts) {
      for (const k of ['tf32_off', 'tf32_on']) {
        const e = (torch?.[part] as Record<string, { error?: string }> | undefined)?.[k]?.error;
        if (e) errors.push(`torch ${part} ${k}: ${e}`);
      }
    }
    log(torch ? '  done' : `  PyTorch: ${torchMissing}`);
  }

  if (only.has('toloss')) {
    log(`shakespeare-char on webgpu until val loss ≤ ${goal} (at most ${maxS} s)…`);
    toLoss = await attempt('attn to-loss', () => benchToLoss(goal, maxS, overrides));
  }

  // ---------------------------------------------------------------- report
  const out: string[] = [];
  const p = (s = '') => out.push(s);
  const tv = torch ? String(torch.torch ?? '?') : null;
  p(`# attn GPU benchmark (webgpu)${quick ? ' (--quick: tiny sizes, for checking that it runs)' : ''}`);
  p();
  p(`machine: ${gpu ?? 'no nvidia-smi'}; ${mach.cpu}, ${mach.threads} threads; Node ${mach.node}`);
  p(`attn: webgpu backend on ${ad.description || ad.device} (vendor ${ad.vendor || '?'}, ${ad.architecture || '?'}, Dawn backend ${ad.backend}); float32`);
  if (torch) p(`PyTorch ${tv} on ${String(torch.device_name ?? torch.device)} (CUDA ${String(torch.cuda ?? '–')}), float32, eager`);
  else p(`PyTorch: ${torchMissing ?? 'not run'}`);
  p();

  const tm = (k: string) => get(torch, 'matmul', k, 'tflops_best');
  if (only.has('matmul')) {
    p(`## matmul float32 ${MATMUL_N}×${MATMUL_N}×${MATMUL_N}, TFLOP/s (2·N³ ÷ time; best of ${MATMUL_TIMING.samples} samples, each many products then one read)`);
    p();
    const rows: string[][] = [];
    const a = attnMatmul?.tflops_best ?? null;
    const err = (x: number | null | undefined) => (x == null ? '–' : x.toExponential(1));
    rows.push(['attn webgpu', num(a), num(attnMatmul?.tflops_median), num(attnMatmul?.ms_best), err(attnMatmul?.max_rel_err), '1.00×']);
    for (const [k, name] of [['tf32_off', 'torch, TF32 off'], ['tf32_on', 'torch, TF32 on']] as const) {
      rows.push([name, num(tm(k)), num(get(torch, 'matmul', k, 'tflops_median')), num(get(torch, 'matmul', k, 'ms_best')), err(get(torch, 'matmul', k, 'max_rel_err')), ratio(a, tm(k))]);
    }
    p(table(['engine', 'TFLOP/s best', 'TFLOP/s median', 'ms', 'max rel err', 'attn ÷ this'], rows));
    for (const [path, r] of Object.entries(matmulPaths)) {
      if (r) p(`shader forced to '${path}': ${num(r.tflops_best)} TFLOP/s best, ${num(r.tflops_median)} median, max rel err ${r.max_rel_err.toExponential(1)}.`);
    }
    p('max rel err: largest |out − exact| ÷ Σ|a·b| over sampled entries (float64 sums); TF32 shows as one to two orders larger.');
    const api = torch?.tf32_api as Record<string, string> | undefined;
    if (api) p(`torch TF32 switch: ${Object.entries(api).map(([k, v]) => `${k}: ${v}`).join('; ')}.`);
    p();
  }

  const tt = (k: string) => get(torch, 'train', k, 'tokens_per_s');
  if (only.has('train')) {
    const c = modelConfig(65);
    p(`## training tokens/s: ${c.n_layer} layers, ${c.n_head} heads, ${c.n_embd} wide, T ${c.block_size}, dropout ${c.dropout}, batch ${BATCH} (forward + backward + clip + AdamW; Tiny Shakespeare characters)`);
    p();
    const a = attnTrain?.tokens_per_s ?? null;
    const flopsTok = GPT.flopsPerToken(c);
    const row = (name: string, tps: number | null, ms: number | null) => [name, num(tps), num(ms), num(tps === null ? null : (tps * flopsTok) / 1e12), ratio(a, tps)];
    p(table(['engine', 'tokens/s', 'ms/step', 'TFLOP/s', 'attn ÷ this'], [
      row('attn webgpu', a, attnTrain ? (attnTrain.elapsed_s * 1e3) / attnTrain.steps : null), // wall time per update: queued updates are not timed one by one
      row('torch eager, TF32 off', tt('tf32_off'), get(torch, 'train', 'tf32_off', 'median_step_ms')),
      row('torch eager, TF32 on', tt('tf32_on'), get(torch, 'train', 'tf32_on', 'median_step_ms')),
    ]));
    p(`TFLOP/s: tokens/s × GPT.flopsPerToken (6N + attention). ${attnTrain ? `attn: updates queued, losses read every ${attnTrain.read_every} (as attn train on webgpu); ${attnTrain.steps} timed steps after ${TRAIN_TIMING.warmup_steps} warm-up, ${num(attnTrain.params / 1e6)} M parameters; per step ${num(attnTrain.wait_ms_per_step)} ms blocked on the device, the rest the engine thread issuing the step.` : ''}`);
    p();
  }

  if (profile) {
    if (profile.method === 'timestamps') {
      p(`## a training step kernel by kernel (GPU timestamps, a pass per kernel; ${profile.steps} steps)`);
      p();
      p(`sum of kernel times ${num(profile.kernel_ms_per_step)} ms per step; the same steps took ${num(profile.synced_step_ms)} ms each with a pass per kernel.`);
      p();
      p(table(['kernel', 'calls/step', 'ms/step', 'share'], profile.rows.slice(0, 40).map((r) => [r.kernel, num(r.calls), num(r.ms_per_step), `${(100 * r.share).toFixed(1)}%`])));
      p();
    } else {
    p(`## a training step kernel by kernel (each call synced alone; ${profile.steps} steps)`);
    p();
    p(`sum of kernel times ${num(profile.kernel_ms_per_step)} ms per step (each less one empty round trip, ${num(profile.round_trip_ms)} ms); synced step ${num(profile.synced_step_ms)} ms; unsynced step: see above.`);
    p();
    p(table(['kernel', 'calls/step', 'ms/step', 'share'], profile.rows.slice(0, 30).map((r) => [r.kernel, num(r.calls), num(r.ms_per_step), `${(100 * r.share).toFixed(1)}%`])));
    p();
    }
  }

  if (only.has('decode')) {
    const c = decodeConfig();
    p(`## GPT-2 124M shape (${c.n_layer} layers, ${c.n_embd} wide, vocab ${c.vocab_size}, random weights), batch 1: prefill ${DECODE_PROMPT} tokens, then ${DECODE_STEPS} greedy steps with the KV cache`);
    p();
    const a = decode['attn_float32'] as DecodeResult | null | undefined;
    const row = (name: string, r: DecodeResult | Cell | null | undefined, weights: string) => {
      const pre = (r as { prefill_tokens_per_s?: number; prefill?: { tokens_per_s: number } } | null | undefined);
      const prefill = pre?.prefill_tokens_per_s ?? pre?.prefill?.tokens_per_s ?? null;
      const dec = (r as { decode_tokens_per_s?: number; decode?: { tokens_per_s: number } } | null | undefined);
      const d = dec?.decode_tokens_per_s ?? dec?.decode?.tokens_per_s ?? null;
      return [name, weights, num(prefill), num(d), ratio(a?.decode_tokens_per_s ?? null, d)];
    };
    const h = decode['attn_float16'] as DecodeResult | null | undefined;
    p(table(['engine', 'weights', 'prefill tokens/s', 'decode tokens/s', 'attn f32 decode ÷ this'], [
      row('attn webgpu, float32', a, a ? `${num(a.weight_mib)} MiB f32` : '–'),
      row('attn webgpu, float16 weights', h, h ? `${num(h.weight_mib)} MiB (matrices f16)` : '–'),
      row('torch CUDA eager, float32', decode['torch_float32'], 'f32'),
      row('torch CUDA eager, float16 (model.half())', decode['torch_float16'], 'f16, f16 arithmetic'),
    ]));
    p('attn float16: the weight matrices stored as halves, widened to float32 in the matmul and embedding shaders (arithmetic float32); torch float16: every weight and activation half. decode: the time from the first new token to the last, over the steps after it; prefill: one forward over the prompt, reading the last logit.');
    p();
  }

  if (toLoss) {
    p(`## time to val loss ≤ ${toLoss.goal} (shakespeare-char preset, --device webgpu, batch ${BATCH}${quick ? ', --quick model and evaluation' : ''})`);
    p();
    if (Object.keys(overrides).length) p(`preset fields changed for this run: ${Object.entries(overrides).map(([k, v]) => `${k}=${String(v)}`).join(', ')}`);
    p(`evaluations (step: val loss at wall s): ${toLoss.evals.map((e) => `${e.step}: ${e.val_loss.toFixed(4)} at ${e.wall_s.toFixed(0)}`).join('; ')}`);
    p();
    p(toLoss.reached
      ? `reached val loss ${toLoss.val_loss.toFixed(4)} at step ${toLoss.step} after ${num(toLoss.wall_s)} s wall (${num(toLoss.train_s)} s from the first step; evaluations included)`
      : `not reached within ${toLoss.max_s} s: last evaluation step ${toLoss.step}, val loss ${num(toLoss.val_loss, 4)}, ${num(toLoss.wall_s)} s`);
    p();
  }

  for (const e of errors) p(`! ${e}`);
  if (errors.length) p();

  p('## targets (issue #6)');
  p();
  const targets: Cell[] = [];
  const mark = (pass: boolean | null) => (pass === null ? 'n/a' : pass ? '✓' : '✗');
  if (only.has('matmul')) {
    const r = attnMatmul && tm('tf32_off') ? attnMatmul.tflops_best / tm('tf32_off')! : null;
    const pass = r === null ? null : r >= TARGETS.matmulVsTorchTf32Off;
    p(`- matmul ${MATMUL_N}³ float32 ≥ ${TARGETS.matmulVsTorchTf32Off}× torch (TF32 off): ${r === null ? '–' : `${r.toFixed(2)}×`} ${mark(pass)}`);
    targets.push({ name: 'matmul vs torch tf32 off', goal: TARGETS.matmulVsTorchTf32Off, ratio: r, pass });
  }
  {
    const pass = toLoss ? toLoss.reached && toLoss.wall_s < TARGETS.toLossSeconds : null;
    p(`- shakespeare-char val loss ≤ ${TARGETS.toLoss} in < ${TARGETS.toLossSeconds / 60} min on an H100: ${toLoss ? `${toLoss.reached ? `${num(toLoss.wall_s)} s` : 'not reached'}${toLoss.goal !== TARGETS.toLoss ? ` (this run's goal: ${toLoss.goal})` : ''}` : 'not run (--to-loss)'} ${mark(toLoss && toLoss.goal === TARGETS.toLoss ? pass : null)}`);
    targets.push({ name: 'shakespeare-char to val 1.47', goal_s: TARGETS.toLossSeconds, goal_loss: TARGETS.toLoss, run_goal: toLoss?.goal ?? null, wall_s: toLoss?.wall_s ?? null, pass: toLoss && toLoss.goal === TARGETS.toLoss ? pass : null });
  }
  if (quick) p('- (--quick: tiny sizes; the verdicts mean nothing)');

  process.stdout.write(out.join('\n') + '\n');

  writeJsonIfAsked(cli, 'bench/results/gpu.json', () => ({
    date: new Date().toISOString(), quick, machine: { ...mach, gpu }, adapter: ad,
    toloss_overrides: overrides,
    decode: only.has('decode') ? decode : null,
    attn: { backend: 'webgpu', matmul: attnMatmul, matmul_paths: matmulPaths, profile, train: attnTrain, toloss: toLoss, batch: BATCH, model: only.has('train') ? modelConfig(65) : null },
    torch, torch_missing: torchMissing, timing: { train: TRAIN_TIMING, matmul: MATMUL_TIMING }, errors, targets,
  }));
}

main().then(
  () => process.exit(0), // the device thread is unref'd; exit without waiting for it anyway
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
