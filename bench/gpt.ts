// GPT-level benchmark: training throughput of two small GPTs and GPT-2 124M inference (prefill,
// KV-cache decode), attn's cpu backend beside PyTorch CPU measured in the same run.
//   node dist/bench/gpt.js [--quick] [--only train,prefill,decode] [--skip-bf16] [--json] [--out FILE]
// Inference also runs attn with bfloat16 weights (one extra column) unless --skip-bf16.
//     [--skip-torch] [--python PATH] [--torch-settings 1/2,2/2] [--keep-openblas-env]
//     [--threads N] [--skip-1t] [--min-s S]
// Every cell (one engine, one setting, one model) runs in its own process, one after another,
// so that peak RSS is per cell and thread pools never overlap. Tables go to stdout, progress
// to stderr.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/index.js';
import { AdamW, getBackend, noGrad, setMatmulPrecision, slice, tensor, tidy, type Tensor } from '../src/index.js';
import { generate } from '../src/generate/index.js';
import { GPT, GPT2_CONFIG, type GPTConfig } from '../src/models/gpt.js';
import { hardwareThreads, log, machineInfo, now, num, ratio, scriptArgs, table, writeJsonIfAsked, xorshift32 } from './util.js';

const TORCH_INSTALL_HINT = 'apt-get install python3-torch libopenblas0-pthread';

const cli = scriptArgs();
const { args, flag, opt } = cli;

// ---------------------------------------------------------------- cases

/** The shared recipe: pre-LN, GELU (tanh), no biases, tied head, learned positions, dropout 0. */
const SMALL: Partial<GPTConfig> = {
  dropout: 0, bias: false, tie_embeddings: true, norm_placement: 'pre', norm: 'layernorm',
  activation: 'gelu', pos_encoding: 'learned', vocab_size: 65,
};

interface TrainCase {
  key: string;
  label: string;
  cfg: Partial<GPTConfig>;
  batch: number;
  /** attn (all threads) ÷ PyTorch best must reach this. */
  target: number;
}

const TRAIN_CASES: TrainCase[] = [
  { key: '6L384', label: '6 layers, 6 heads, 384 wide, B 8, T 256', cfg: { ...SMALL, n_layer: 6, n_head: 6, n_embd: 384, block_size: 256 }, batch: 8, target: 1.2 },
  { key: '4L128', label: '4 layers, 4 heads, 128 wide, B 16, T 64', cfg: { ...SMALL, n_layer: 4, n_head: 4, n_embd: 128, block_size: 64 }, batch: 16, target: 1.5 },
];

const PREFILL = 128;
const DECODE = 32;
const INFER_TARGETS = { prefill: 1.2, decode: 2.5 };
/** bfloat16 mixed-precision training ÷ float32 training (attn, all threads). */
const BF16_TRAIN_TARGET = 1.3;
/** The engine label of the bfloat16-weights inference row. */
const BF16_LABEL = (threads: number) => `attn ${threads}t bf16`;

/** Timing rules shared with the torch peer (same field names). */
interface Timing {
  warmup_steps: number;
  warmup_s: number;
  min_steps: number;
  min_s: number;
}

// ---------------------------------------------------------------- child: one attn cell

interface TrainSpec extends Timing { section: 'train'; threads: number; cfg: Partial<GPTConfig>; batch: number; precision?: 'bfloat16' }
interface InferSpec extends Timing { section: 'infer'; threads: number; parts: string[]; prefill_tokens: number; decode_tokens: number; weights?: 'bfloat16' }
type ChildSpec = TrainSpec | InferSpec;

/** xorshift32 token ids in [0, V). */
function tokenSource(seed: number): (n: number, V: number) => Int32Array {
  const next = xorshift32(seed);
  return (n, V) => {
    const a = new Int32Array(n);
    for (let i = 0; i < n; i++) a[i] = next() % V;
    return a;
  };
}

/** Calls fn at least warmup_steps times and for at least warmup_s seconds. */
function warm(fn: () => unknown, t: Timing): void {
  const t0 = now();
  for (let n = 0; n < t.warmup_steps || now() - t0 < t.warmup_s * 1e3; n++) fn();
}

function memoryStats(be: Backend): { bytesInUse: number; heapBytes: number } | null {
  const f = (be as unknown as { memoryStats?: () => { bytesInUse: number; heapBytes: number } }).memoryStats;
  return typeof f === 'function' ? f.call(be) : null;
}

/** Warms fn up, then calls it at least min_steps times and for at least min_s seconds: the
 *  milliseconds of each call and the seconds of the whole timed loop. */
function warmAndTime(fn: () => unknown, t: Timing): { times: number[]; elapsed: number } {
  warm(fn, t);
  const times: number[] = [];
  const t0 = now();
  while (times.length < t.min_steps || now() - t0 < t.min_s * 1e3) {
    const ts = now();
    fn();
    times.push(now() - ts);
  }
  return { times, elapsed: (now() - t0) / 1e3 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

async function childTrain(s: TrainSpec): Promise<Record<string, unknown>> {
  const be = await getBackend('cpu', { threads: s.threads });
  const model = new GPT(s.cfg, { backend: be, seed: 0 });
  model.train(true);
  const opt = new AdamW(model.parameters(), { lr: 1e-3, weightDecay: 0.1 });
  const { batch: B } = s;
  const T = model.config.block_size;
  const V = model.config.vocab_size;
  const tokens = tokenSource(7);
  const ids = (a: Int32Array) => tensor(a, { backend: be, dtype: 'int32', shape: [B, T] });
  if (s.precision) setMatmulPrecision(s.precision);
  const step = () =>
    tidy(() => {
      const { loss } = model.forward(ids(tokens(B * T, V)), ids(tokens(B * T, V)));
      opt.zeroGrad();
      loss!.backward();
      opt.stepUpdate();
      return loss!.item();
    });
  const { times, elapsed } = warmAndTime(step, s);
  opt.zeroGrad();
  return {
    steps: times.length, elapsed_s: elapsed, tokens_per_s: (times.length * B * T) / elapsed,
    best_step_ms: Math.min(...times), median_step_ms: median(times), params: GPT.countParameters(s.cfg),
    rss: process.memoryUsage().rss, peak_rss: process.resourceUsage().maxRSS * 1024, backend_memory: memoryStats(be),
  };
}

async function childInfer(s: InferSpec): Promise<Record<string, unknown>> {
  const be = await getBackend('cpu', { threads: s.threads });
  const out: Record<string, unknown> = { rss_before_model: process.memoryUsage().rss };
  const t = now();
  const model = new GPT(GPT2_CONFIG, { backend: be, seed: 0 });
  model.train(false);
  // The weight matrices stored as bfloat16 (Module.halfWeights): the bf16 row of the table.
  if (s.weights === 'bfloat16') model.halfWeights('bfloat16');
  out.init_s = (now() - t) / 1e3;
  const P = s.prefill_tokens;
  const N = s.decode_tokens;
  const prompt = tokenSource(11)(P, model.config.vocab_size);
  if (s.parts.includes('prefill')) {
    // One forward over the prompt (logits for every position), reading the last row as a user would.
    const forward = () =>
      noGrad(() => tidy(() => {
        const logits: Tensor = model.forward(tensor(prompt, { backend: be, dtype: 'int32', shape: [1, P] })).logits;
        return slice(logits, 1, P - 1, P).data()[0];
      }));
    const { times } = warmAndTime(forward, s);
    const total = times.reduce((a, b) => a + b, 0) / 1e3;
    out.prefill = { reps: times.length, best_ms: Math.min(...times), median_ms: median(times), tokens_per_s: (P * times.length) / total };
  }
  if (s.parts.includes('decode')) {
    // generate() prefills the prompt, then feeds one token per step; the time from the first
    // new token to the (N+1)-th covers N single-token steps with the cache.
    const run = (): number => {
      const stamps: number[] = [];
      generate(model, Array.from(prompt), { greedy: true, maxNewTokens: N + 1, backend: be, onToken: () => stamps.push(now()) });
      return (stamps[N]! - stamps[0]!) / 1e3;
    };
    warm(run, s);
    let total = 0;
    let reps = 0;
    while (reps < s.min_steps || total < s.min_s) {
      total += run();
      reps++;
    }
    out.decode = { reps, tokens: N * reps, elapsed_s: total, tokens_per_s: (N * reps) / total };
  }
  out.rss_after = process.memoryUsage().rss;
  out.peak_rss = process.resourceUsage().maxRSS * 1024;
  out.backend_memory = memoryStats(be);
  out.params = GPT.countParameters(GPT2_CONFIG);
  return out;
}

// ---------------------------------------------------------------- parent: running cells

type Cell = Record<string, unknown>;

function lastJson(stdout: string): Cell | null {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Cell;
  } catch {
    return null;
  }
}

function tail(s: string | null | undefined): string {
  return (s ?? '').trim().split('\n').slice(-2).join(' ').slice(0, 300);
}

/** Runs one attn cell in a fresh Node process; a string says why it failed. */
function runAttn(spec: ChildSpec, timeoutS: number): Cell | string {
  const script = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [...process.execArgv, script, '--child', JSON.stringify(spec)], {
    encoding: 'utf8', maxBuffer: 1 << 20, timeout: timeoutS * 1e3, stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (r.error) return `attn cell failed: ${r.error.message}`;
  if (r.status !== 0) return `attn cell exited ${r.status ?? r.signal}: ${tail(r.stderr)}`;
  return lastJson(r.stdout) ?? `attn cell: unreadable output ${tail(r.stdout)}`;
}

interface TorchSetting { torch: number; blas: number; label: string }

function parseTorchSettings(s: string): TorchSetting[] {
  return s.split(',').filter(Boolean).map((x) => {
    const [t, b] = x.split('/').map(Number);
    if (!Number.isInteger(t) || !Number.isInteger(b) || t! < 1 || b! < 1) throw new Error(`--torch-settings: '${x}' is not TORCH_THREADS/OPENBLAS_THREADS`);
    return { torch: t!, blas: b!, label: `torch ${t}t/OB ${b}t` };
  });
}

function findTorchScript(): string | null {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const p of [resolve(here, '../../bench/peers/torch_gpt.py'), resolve(here, 'peers/torch_gpt.py'), resolve('bench/peers/torch_gpt.py')]) {
    if (existsSync(p)) return p;
  }
  return null;
}

class TorchPeer {
  /** Set once torch proves missing: later cells are skipped with this reason. */
  missing: string | null = null;
  info: Cell | null = null;

  constructor(private readonly python: string, private readonly keepEnv: boolean) {
    if (!existsSync(python)) this.missing = `${python} not found; install: ${TORCH_INSTALL_HINT}`;
    else if (!findTorchScript()) this.missing = 'bench/peers/torch_gpt.py not found';
  }

  run(setting: TorchSetting, spec: object, timeoutS: number): Cell | string {
    if (this.missing) return this.missing;
    const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(setting.blas), OMP_NUM_THREADS: String(setting.torch) };
    if (!this.keepEnv) {
      // As in bench/kernels.ts: these force a kernel choice; OpenBLAS picks its own without them.
      delete env.OPENBLAS_CORETYPE;
      delete env.OPENBLAS_L2_SIZE;
    }
    const r = spawnSync(this.python, [findTorchScript()!], {
      input: JSON.stringify({ ...spec, torch_threads: setting.torch }), env, encoding: 'utf8', maxBuffer: 1 << 20, timeout: timeoutS * 1e3,
    });
    if (r.error) return `torch cell failed: ${r.error.message}`;
    const res = lastJson(r.stdout ?? '');
    if (res && typeof res.error === 'string') {
      if (/not importable/.test(res.error)) this.missing = `PyTorch is not installed for ${this.python} (${res.error}); install: ${TORCH_INSTALL_HINT}`;
      return this.missing ?? res.error;
    }
    if (r.status !== 0 || !res) return `torch cell exited ${r.status ?? r.signal}: ${tail(r.stderr)}`;
    this.info ??= res;
    return res;
  }
}

// ---------------------------------------------------------------- main

const isCell = (x: Cell | string | undefined): x is Cell => typeof x === 'object' && x !== null;
const get = (x: Cell | string | undefined, ...path: string[]): number | null => {
  let v: unknown = x;
  for (const k of path) v = isCell(v as Cell) ? (v as Cell)[k] : undefined;
  return typeof v === 'number' ? v : null;
};
const MB = (b: number | null) => (b === null ? '–' : `${num(b / 2 ** 20)} MB`);

async function main(): Promise<void> {
  const childArg = args.get('child');
  if (typeof childArg === 'string') {
    const spec = JSON.parse(childArg) as ChildSpec;
    const r = spec.section === 'train' ? await childTrain(spec) : await childInfer(spec);
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }

  const quick = flag('quick');
  const only = new Set(opt('only', 'train,prefill,decode').split(',').map((s) => s.trim()).filter(Boolean));
  for (const s of only) if (!['train', 'prefill', 'decode'].includes(s)) throw new Error(`--only: unknown section '${s}' (known: train, prefill, decode)`);
  const allThreads = Math.max(1, Number(opt('threads', String(hardwareThreads()))));
  const attnThreads = flag('skip-1t') || allThreads === 1 ? [allThreads] : [allThreads, 1];
  const attnLabel = (th: number) => `attn ${th}t`;
  const settings = parseTorchSettings(opt('torch-settings', '1/2,2/2'));
  const minS = Number(opt('min-s', quick ? '0' : '10'));
  const timing: Timing = quick ? { warmup_steps: 1, warmup_s: 0, min_steps: 3, min_s: minS } : { warmup_steps: 2, warmup_s: 1, min_steps: 3, min_s: minS };
  const inferTiming: Timing = quick ? { warmup_steps: 1, warmup_s: 0, min_steps: 1, min_s: minS } : { ...timing, min_steps: 1 };
  const timeoutS = Number(opt('cell-timeout-s', quick ? '900' : '3600'));
  const python = opt('python', '/usr/bin/python3');
  const keepEnv = flag('keep-openblas-env');
  const openblasEnv = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'].filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]}`);
  const torch = flag('skip-torch') ? null : new TorchPeer(python, keepEnv);
  const skips: string[] = [];
  if (!torch) skips.push('PyTorch: skipped (--skip-torch)');
  const mach = machineInfo();
  const rows: Record<string, unknown>[] = [];

  // ---- training: for each model, attn cells then torch cells, back to back ----
  const train = new Map<string, Map<string, Cell | string>>(); // case → engine label → result
  if (only.has('train')) {
    for (const c of TRAIN_CASES) {
      const per = new Map<string, Cell | string>();
      train.set(c.key, per);
      for (const th of attnThreads) {
        log(`train ${c.key}: ${attnLabel(th)}…`);
        per.set(attnLabel(th), runAttn({ section: 'train', threads: th, cfg: c.cfg, batch: c.batch, ...timing }, timeoutS));
      }
      if (!flag('skip-bf16')) {
        log(`train ${c.key}: ${BF16_LABEL(allThreads)}…`);
        per.set(BF16_LABEL(allThreads), runAttn({ section: 'train', threads: allThreads, cfg: c.cfg, batch: c.batch, precision: 'bfloat16', ...timing }, timeoutS));
      }
      for (const st of torch ? settings : []) {
        log(`train ${c.key}: ${st.label}…`);
        per.set(st.label, torch!.run(st, { section: 'train', cfg: c.cfg, batch: c.batch, ...timing }, timeoutS));
      }
      for (const [engine, r] of per) {
        log(`  ${engine}: ${isCell(r) ? `${num(get(r, 'tokens_per_s'))} tokens/s` : r}`);
        rows.push({ section: 'train', model: c.key, config: c.cfg, batch: c.batch, engine, ...(isCell(r) ? r : { error: r }) });
      }
    }
  }

  // ---- GPT-2 124M inference: prefill and decode in one process per engine ----
  const parts = ['prefill', 'decode'].filter((p) => only.has(p));
  const infer = new Map<string, Cell | string>();
  if (parts.length) {
    const spec = { section: 'infer' as const, parts, prefill_tokens: PREFILL, decode_tokens: DECODE, ...inferTiming };
    for (const th of attnThreads) {
      log(`GPT-2 124M ${parts.join(' + ')}: ${attnLabel(th)}…`);
      infer.set(attnLabel(th), runAttn({ ...spec, threads: th }, timeoutS));
    }
    if (!flag('skip-bf16')) {
      log(`GPT-2 124M ${parts.join(' + ')}: ${BF16_LABEL(allThreads)}…`);
      infer.set(BF16_LABEL(allThreads), runAttn({ ...spec, threads: allThreads, weights: 'bfloat16' }, timeoutS));
      // Its peer: PyTorch with the whole model in bfloat16 (model.to(torch.bfloat16)), which
      // oneDNN runs with AVX512-BF16 where the CPU has it.
      for (const st of torch ? settings : []) {
        log(`GPT-2 124M ${parts.join(' + ')}: ${st.label} bf16…`);
        infer.set(`${st.label} bf16`, torch!.run(st, { ...spec, cfg: GPT2_CONFIG, dtype: 'bfloat16' }, timeoutS));
      }
    }
    for (const st of torch ? settings : []) {
      log(`GPT-2 124M ${parts.join(' + ')}: ${st.label}…`);
      infer.set(st.label, torch!.run(st, { ...spec, cfg: GPT2_CONFIG }, timeoutS));
    }
    for (const [engine, r] of infer) {
      log(`  ${engine}: ${isCell(r) ? parts.map((p) => `${p} ${num(get(r, p, 'tokens_per_s'))} tokens/s`).join(', ') : r}`);
      rows.push({ section: 'infer', model: 'gpt2-124M', parts, engine, ...(isCell(r) ? r : { error: r }) });
    }
  }
  if (torch?.missing) skips.push(`PyTorch: skipped: ${torch.missing}`);

  // ---------------------------------------------------------------- report
  const out: string[] = [];
  const p = (s = '') => out.push(s);
  const engines = [...attnThreads.map(attnLabel), ...(torch && !torch.missing ? settings.map((s) => s.label) : [])];
  const torchLabels = torch && !torch.missing ? settings.map((s) => s.label) : [];
  const top = attnLabel(allThreads);
  /** The best torch figure among the settings, and which setting it was. */
  const bestTorch = (val: (label: string) => number | null): { v: number; label: string } | null => {
    let best: { v: number; label: string } | null = null;
    for (const l of torchLabels) {
      const v = val(l);
      if (v !== null && (!best || v > best.v)) best = { v, label: l };
    }
    return best;
  };
  const ratioCell = (a: number | null, b: { v: number; label: string } | null) => (b ? `${ratio(a, b.v)} (${b.label})` : '–');

  p(`# attn GPT benchmark${quick ? ' (--quick: a few steps, noisy; for checking that it runs)' : ''}`);
  p();
  p(`machine: ${mach.cpu}, ${mach.threads} hardware threads${mach.flags.length ? ` (${mach.flags.join(' ')})` : ''}, ${num(mach.memGiB)} GiB, Node ${mach.node} (V8 ${mach.v8})`);
  p(`attn: cpu backend (${(await getBackend('cpu') as unknown as { describeKernels?: () => string }).describeKernels?.() ?? 'WebAssembly'}), ${attnThreads.map((t) => `${t} thread(s)`).join(' and ')}; float32`);
  const ti = torch?.info;
  if (ti) {
    const blas = (ti.blas ?? {}) as Record<string, unknown>;
    p(`PyTorch ${String(ti.torch)} (${python}), float32, ${ti.sdpa ? 'scaled_dot_product_attention' : 'attention written out (no scaled_dot_product_attention)'}; BLAS: ${String(blas.config ?? blas.library ?? 'unknown')}, kernel ${String(blas.corename ?? 'unknown')}`);
    p(`PyTorch settings (one process each): ${settings.map((s) => `${s.label} = torch.set_num_threads(${s.torch}), OPENBLAS_NUM_THREADS=${s.blas}, OMP_NUM_THREADS=${s.torch}`).join('; ')}`);
    if (openblasEnv.length) p(`  ${openblasEnv.join(', ')} ${keepEnv ? 'kept for PyTorch (--keep-openblas-env)' : 'set here and unset for PyTorch (OpenBLAS picks its own kernel); --keep-openblas-env keeps them'}`);
  }
  for (const s of skips) p(s);
  p(`timing: warm-up ≥ ${timing.warmup_steps} step(s)${timing.warmup_s ? ` and ≥ ${timing.warmup_s} s` : ''}, then ≥ ${timing.min_steps} steps${minS ? ` and ≥ ${minS} s` : ''} per cell; each cell in a fresh process`);
  p();

  if (train.size) {
    p('## training, tokens/s (forward + backward + AdamW step; random tokens, vocab 65, pre-LN, GELU, no bias, tied head, dropout 0)');
    p();
    const trainBf16 = flag('skip-bf16') ? [] : [BF16_LABEL(allThreads)];
    const hdr = ['model', 'params', ...engines, ...trainBf16, ...trainBf16.map(() => 'bf16 ÷ f32'), `${top} ÷ PyTorch best`, ...(attnThreads.length > 1 ? [`${attnLabel(1)} ÷ PyTorch best`] : []), `${top} ms/step`, `${top} GFLOP/s`];
    const body: string[][] = [];
    const errs: string[] = [];
    for (const c of TRAIN_CASES) {
      const per = train.get(c.key);
      if (!per) continue;
      const tps = (l: string) => get(per.get(l), 'tokens_per_s');
      const best = bestTorch(tps);
      const row = [c.label, num(GPT.countParameters(c.cfg) / 1e6) + ' M', ...engines.map((l) => num(tps(l)))];
      for (const l of trainBf16) row.push(num(tps(l)), ratio(tps(l), tps(top) ?? NaN));
      row.push(ratioCell(tps(top), best));
      if (attnThreads.length > 1) row.push(ratioCell(tps(attnLabel(1)), best));
      row.push(num(get(per.get(top), 'median_step_ms')));
      const f = tps(top);
      row.push(num(f === null ? null : (f * GPT.flopsPerToken(c.cfg)) / 1e9));
      body.push(row);
      for (const [l, r] of per) if (!isCell(r) && r !== torch?.missing) errs.push(`${c.key} ${l}: ${r}`);
    }
    p(table(hdr, body));
    p('GFLOP/s: tokens/s × 6N + attention FLOPs per token (GPT.flopsPerToken).');
    if (trainBf16.length) p(`${trainBf16[0]}: mixed precision (setMatmulPrecision('bfloat16'), as --dtype bfloat16 does): every matmul rounds its operands to bfloat16 and accumulates in float32 (the AVX512-BF16 dot product where the CPU has it); weights, optimizer state and the other ops stay float32.`);
    for (const e of errs) p(`! ${e}`);
    p();
  }

  if (infer.size) {
    p(`## GPT-2 124M shape (12 layers, 12 heads, 768 wide, vocab 50257, random weights), batch 1, float32, no gradients`);
    p();
    const bf16 = infer.has(BF16_LABEL(allThreads)) ? [BF16_LABEL(allThreads)] : [];
    const torchBf16 = bf16.length ? torchLabels.map((l) => `${l} bf16`).filter((l) => infer.has(l)) : [];
    const bestTorchBf16 = (val: (label: string) => number | null): { v: number; label: string } | null => {
      let best: { v: number; label: string } | null = null;
      for (const l of torchBf16) {
        const v = val(l);
        if (v !== null && (!best || v > best.v)) best = { v, label: l };
      }
      return best;
    };
    const cols = [...engines.slice(0, attnThreads.length), ...bf16, ...engines.slice(attnThreads.length), ...torchBf16];
    const hdr = ['', ...cols, `${top} ÷ PyTorch best`, ...(attnThreads.length > 1 ? [`${attnLabel(1)} ÷ PyTorch best`] : []), ...bf16.map((l) => `${l} ÷ PyTorch best (f32; bf16)`)];
    const body: string[][] = [];
    const what: Record<string, string> = {
      prefill: `prefill ${PREFILL} tokens, tokens/s`,
      decode: `decode ${DECODE} tokens after ${PREFILL} (KV cache, greedy), tokens/s`,
    };
    for (const part of parts) {
      const tps = (l: string) => get(infer.get(l), part, 'tokens_per_s');
      const best = bestTorch(tps);
      const row = [what[part]!, ...cols.map((l) => num(tps(l)))];
      row.push(ratioCell(tps(top), best));
      if (attnThreads.length > 1) row.push(ratioCell(tps(attnLabel(1)), best));
      for (const l of bf16) row.push(`${ratioCell(tps(l), best)}; ${ratioCell(tps(l), bestTorchBf16(tps))}`);
      body.push(row);
    }
    p(table(hdr, body));
    p(`prefill: one forward over ${PREFILL} tokens (logits at every position), tokens/s = ${PREFILL} ÷ its time. decode: attn through generate() (greedy), PyTorch a plain loop with a preallocated KV cache; timed over the ${DECODE} steps after the first new token.`);
    if (bf16.length) p(`${bf16[0]}: the same model with its weight matrices stored as bfloat16 (model.halfWeights('bfloat16'), 238 MiB instead of 475), widened to float32 inside the kernels (float32 arithmetic). PyTorch … bf16: the whole model in bfloat16 (model.to(torch.bfloat16)). The last column compares attn bf16 with the best float32 PyTorch, then with the best bfloat16 PyTorch. The targets below compare the float32 columns.`);
    for (const [l, r] of infer) if (!isCell(r) && r !== torch?.missing) p(`! ${l}: ${r}`);
    p();
    p('### memory (GPT-2 124M inference process; weights alone are 475 MiB in float32)');
    p();
    const mrows: string[][] = [];
    for (const l of [...engines, ...[...infer.keys()].filter((k) => k.endsWith(' bf16'))]) {
      const r = infer.get(l);
      if (!isCell(r)) continue;
      const bm = (r.backend_memory ?? null) as { bytesInUse: number; heapBytes: number } | null;
      mrows.push([
        l, MB(get(r, 'rss_before_model')), MB(get(r, 'rss_after')), MB(get(r, 'peak_rss')),
        bm ? `${MB(bm.heapBytes)} (${MB(bm.bytesInUse)} in use)` : '–', num(get(r, 'init_s')),
      ]);
    }
    p(table(['engine', 'RSS before model', 'RSS after', 'peak RSS', 'wasm heap (live storages)', 'model init s'], mrows));
    p('RSS: process.memoryUsage().rss / /proc/self/status VmRSS; peak: getrusage ru_maxrss (process.resourceUsage().maxRSS); wasm heap: cpu backend memoryStats().');
    p();
  }

  // ---- targets ----
  p('## targets (attn all threads ÷ best PyTorch setting)');
  p();
  const targets: Record<string, unknown>[] = [];
  const verdict = (name: string, a: number | null, b: { v: number; label: string } | null, goal: number) => {
    const r = a !== null && b ? a / b.v : null;
    const mark = r === null ? 'n/a' : r >= goal ? '✓' : '✗';
    p(`- ${name} ≥ ${goal}× PyTorch best: ${r === null ? '–' : `${r.toFixed(2)}×`}${b ? ` (${top} vs ${b.label})` : ''} ${mark}`);
    targets.push({ name, goal, ratio: r, pass: r === null ? null : r >= goal, attn: top, torch: b?.label ?? null });
  };
  for (const c of TRAIN_CASES) {
    const per = train.get(c.key);
    if (!per) continue;
    const tps = (l: string) => get(per.get(l), 'tokens_per_s');
    verdict(`training ${c.key === '6L384' ? '6L/384' : '4L/128'}`, tps(top), bestTorch(tps), c.target);
  }
  for (const c of TRAIN_CASES) {
    const per = train.get(c.key);
    const bf = get(per?.get(BF16_LABEL(allThreads)), 'tokens_per_s');
    const f32 = get(per?.get(top), 'tokens_per_s');
    if (bf === null || f32 === null) continue;
    const r = bf / f32;
    p(`- bfloat16 training ${c.key} ≥ ${BF16_TRAIN_TARGET}× float32 (attn): ${r.toFixed(2)}× ${r >= BF16_TRAIN_TARGET ? '✓' : '✗'}`);
    targets.push({ name: `bf16 training ${c.key}`, goal: BF16_TRAIN_TARGET, ratio: r, pass: r >= BF16_TRAIN_TARGET, attn: BF16_LABEL(allThreads), torch: null });
  }
  for (const part of ['decode', 'prefill'].filter((x) => parts.includes(x))) {
    const tps = (l: string) => get(infer.get(l), part, 'tokens_per_s');
    verdict(`GPT-2 124M ${part}`, tps(top), bestTorch(tps), INFER_TARGETS[part as 'decode' | 'prefill']);
  }
  if (quick) p('- (--quick: too few steps for the verdicts to mean much)');

  process.stdout.write(out.join('\n') + '\n');

  writeJsonIfAsked(cli, 'bench/results/gpt.json', () => ({
    date: new Date().toISOString(), quick, machine: mach, timing, infer_timing: inferTiming,
    attn: { backend: 'cpu', threads: attnThreads },
    torch: ti ? { version: ti.torch, python, blas: ti.blas, sdpa: ti.sdpa, settings, openblasEnv, openblasEnvKept: keepEnv } : null,
    skips, rows, targets,
  }));
}

main().then(
  () => process.exit(0), // the cpu backend's workers are unref'd; exit without waiting anyway
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
