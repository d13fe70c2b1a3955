// Kernel benchmark: matmul, fused attention and layer norm of attn's backends beside peers
// measured in the same run (OpenBLAS through numpy, TensorFlow.js wasm).
//   node dist/bench/kernels.js [--quick] [--json --out FILE] [--backend auto|cpu|ref] [--threads N]
//     [--only matmul,attention,layernorm,memory] [--skip-numpy] [--skip-tfjs] [--tiny]
//     [--python PATH] [--keep-openblas-env] [--mem-max-s S]
// Tables go to stdout, progress to stderr. attn kernels are called on the Backend directly
// with storages made once, so the figures are the kernels' own, without tensor-layer costs.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AttentionArgs, Backend, MatmulArgs, Storage } from '../src/index.js';
import { getBackend } from '../src/index.js';
import { loadTfjs, TFJS_INSTALL_HINT, type TfjsPeer } from './peers/tfjs.js';
import {
  hardwareThreads, log, machineInfo, matmulFlops, measure, num, randomFloats, ratio, scriptArgs, spotCheckMatmul, table, writeJsonIfAsked,
  type MatmulShape, type Timing, type TimingOptions,
} from './util.js';

const NUMPY_INSTALL_HINT = 'apt-get install python3-numpy libopenblas0-pthread';
const ERR_LIMIT = 1e-3; // spot-check tolerance (relative to Σ|a·b|)

const cli = scriptArgs();
const { args, flag, opt } = cli;

interface Engine {
  label: string;
  threads: number;
  be: Backend;
}

// ---------------------------------------------------------------- storages

/** A float32 storage of n pseudo-random values, written in chunks (no full-size JS array). */
function randomStorage(be: Backend, n: number, seed: number): Storage {
  const s = be.alloc('float32', n);
  const chunk = randomFloats(Math.min(n, 1 << 16), seed);
  for (let off = 0; off < n; off += chunk.length) {
    be.write(s, off + chunk.length <= n ? chunk : chunk.subarray(0, n - off), off);
  }
  return s;
}

function freeAll(be: Backend, ss: (Storage | null)[]): void {
  for (const s of ss) if (s) be.free(s);
}

// ---------------------------------------------------------------- attn backends

async function loadEngines(which: string, allThreads: number): Promise<{ engines: Engine[]; note: string | null }> {
  if (which !== 'ref') {
    try {
      const one = await getBackend('cpu', { threads: 1 });
      const engines: Engine[] = [{ label: 'attn 1t', threads: 1, be: one }];
      if (allThreads > 1) engines.push({ label: `attn ${allThreads}t`, threads: allThreads, be: await getBackend('cpu', { threads: allThreads }) });
      return { engines, note: null };
    } catch (e) {
      if (which === 'cpu') throw e;
      const msg = (e as Error).message.split('\n')[0];
      return { engines: [{ label: 'attn ref', threads: 1, be: await getBackend('ref') }], note: `cpu backend not loadable (${msg}); measuring the ref backend` };
    }
  }
  return { engines: [{ label: 'attn ref', threads: 1, be: await getBackend('ref') }], note: null };
}

/** Whatever the backend says about itself (kernel variant, relaxed SIMD), if anything. */
function describeBackend(be: Backend): string {
  const parts: string[] = [];
  const add = (k: string, v: unknown) => {
    if (['string', 'number', 'boolean'].includes(typeof v)) parts.push(`${k}=${String(v)}`);
  };
  // The cpu backend keeps its runtime (relaxedSimd, threads) on `rt`; look there too.
  for (const o of [be, (be as unknown as { rt?: unknown }).rt] as Record<string, unknown>[]) {
    if (!o || typeof o !== 'object') continue;
    for (const k of ['relaxedSimd', 'simd', 'variant', 'kernel']) add(k, o[k]);
    for (const k of ['features', 'info']) {
      const v = o[k];
      if (v && typeof v === 'object') for (const [kk, vv] of Object.entries(v)) add(kk, vv);
    }
  }
  return parts.length ? parts.join(', ') : 'backend does not report its kernel variant';
}

/** Backend-reported memory in bytes (a WebAssembly.Memory or a stats method), or null. */
function backendMemoryBytes(be: Backend): { bytes: number; source: string } | null {
  const o = be as unknown as Record<string, unknown>;
  for (const k of ['memoryStats', 'stats', 'memoryInfo']) {
    const f = o[k];
    if (typeof f !== 'function') continue;
    try {
      const r = (f as () => unknown).call(be) as Record<string, unknown> | null;
      for (const field of ['heapBytes', 'wasmBytes', 'memoryBytes', 'bytes', 'peakBytes', 'highWaterBytes']) {
        const v = r?.[field];
        if (typeof v === 'number') return { bytes: v, source: `${k}().${field}` };
      }
    } catch {
      // Not a stats method after all.
    }
  }
  // The wasm memory only grows, so its size after a step is that step's high-water mark
  // (coarse: the cpu runtime grows it by at least a quarter at a time).
  for (const [obj, path] of [[o, ''], [o.rt as Record<string, unknown> | undefined, 'rt.']] as const) {
    const m = obj?.memory;
    if (m instanceof WebAssembly.Memory) return { bytes: m.buffer.byteLength, source: `${path}memory.buffer.byteLength` };
  }
  return null;
}

// ---------------------------------------------------------------- attn kernels

function attnMatmul(e: Engine, s: MatmulShape, opts: TimingOptions): Timing & { error: number } {
  const be = e.be;
  const aData = randomFloats(s.M * s.K, 1);
  const bData = randomFloats(s.K * s.N, 2);
  const a = be.upload(aData, 'float32');
  const b = be.upload(bData, 'float32');
  const out = be.alloc('float32', s.M * s.N);
  const margs: MatmulArgs = {
    a, aOffset: 0, aBatchStride: 0, transA: s.transA ?? false, lda: s.transA ? s.M : s.K,
    b, bOffset: 0, bBatchStride: 0, transB: s.transB ?? false, ldb: s.transB ? s.K : s.N,
    out, batch: 1, M: s.M, N: s.N, K: s.K,
  };
  const t = measure(() => be.matmul(margs), opts);
  const error = spotCheckMatmul(s, aData, bData, be.read(out));
  freeAll(be, [a, b, out]);
  return { ...t, error };
}

const ATT = { B: 1, H: 6, D: 64 };
/** Nominal FLOPs of causal attention forward: 4·T²·D per head, halved by the mask. */
const attnFwdFlops = (T: number) => (ATT.B * ATT.H * 4 * T * T * ATT.D) / 2;
/** Forward + backward: backward counted as 2.5× forward. */
const attnFlops = (T: number) => 3.5 * attnFwdFlops(T);

interface AttnBufs {
  base: AttentionArgs;
  gout: Storage; gq: Storage; gk: Storage; gv: Storage;
  all: Storage[];
}

function attnBuffers(be: Backend, T: number): AttnBufs {
  const n = ATT.B * ATT.H * T * ATT.D;
  const q = randomStorage(be, n, 11);
  const k = randomStorage(be, n, 12);
  const v = randomStorage(be, n, 13);
  const gout = randomStorage(be, n, 14);
  const out = be.alloc('float32', n);
  const lse = be.alloc('float32', ATT.B * ATT.H * T);
  const gq = be.alloc('float32', n);
  const gk = be.alloc('float32', n);
  const gv = be.alloc('float32', n);
  const base: AttentionArgs = { q, k, v, out, lse, B: ATT.B, H: ATT.H, Tq: T, Tk: T, D: ATT.D, scale: 1 / Math.sqrt(ATT.D), causal: true, keyMask: null };
  return { base, gout, gq, gk, gv, all: [q, k, v, gout, out, lse, gq, gk, gv] };
}

function attnStep(be: Backend, b: AttnBufs): void {
  be.attention(b.base);
  be.attentionBackward({ ...b.base, gout: b.gout, gq: b.gq, gk: b.gk, gv: b.gv });
}

function attnAttention(e: Engine, T: number, opts: TimingOptions): { fwd: Timing; step: Timing } {
  const b = attnBuffers(e.be, T);
  const fwd = measure(() => e.be.attention(b.base), opts);
  const step = measure(() => attnStep(e.be, b), opts);
  freeAll(e.be, b.all);
  return { fwd, step };
}

function attnLayerNorm(e: Engine, rows: number, n: number, opts: TimingOptions): { fwd: Timing; bwd: Timing } {
  const be = e.be;
  const x = randomStorage(be, rows * n, 21);
  const dy = randomStorage(be, rows * n, 22);
  const w = randomStorage(be, n, 23);
  const bias = randomStorage(be, n, 24);
  const out = be.alloc('float32', rows * n);
  const gx = be.alloc('float32', rows * n);
  const mean = be.alloc('float32', rows);
  const rstd = be.alloc('float32', rows);
  const gw = be.alloc('float32', n);
  const gb = be.alloc('float32', n);
  const fwd = measure(() => be.layerNorm(x, w, bias, rows, n, 1e-5, out, mean, rstd), opts);
  const bwd = measure(() => be.layerNormBackward(x, w, mean, rstd, dy, rows, n, gx, gw, gb), opts);
  freeAll(be, [x, dy, w, bias, out, gx, mean, rstd, gw, gb]);
  return { fwd, bwd };
}

// ---------------------------------------------------------------- memory (child process per T)

interface MemResult {
  T: number;
  tensorBytes: number;
  rss: number;
  arrayBuffers: number;
  backend: { bytes: number; source: string } | null;
  ms: number;
}

/** In a fresh process: memory growth of one attention forward + backward at sequence length T. */
async function memChild(T: number, backend: string, threads: number): Promise<void> {
  const be = backend === 'ref' ? await getBackend('ref') : await getBackend('cpu', { threads });
  const e: Engine = { label: `attn ${threads}t`, threads, be };
  const warm = attnBuffers(e.be, 64); // first use: code, workers and small scratch set up
  attnStep(e.be, warm);
  freeAll(e.be, warm.all);
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const m0 = process.memoryUsage();
  const h0 = backendMemoryBytes(e.be);
  const b = attnBuffers(e.be, T);
  const t0 = performance.now();
  attnStep(e.be, b);
  const ms = performance.now() - t0;
  gc?.();
  const m1 = process.memoryUsage();
  const h1 = backendMemoryBytes(e.be);
  const tensorBytes = b.all.reduce((s, x) => s + x.size * 4, 0);
  const r: MemResult = {
    T, tensorBytes, ms,
    rss: m1.rss - m0.rss,
    arrayBuffers: m1.arrayBuffers - m0.arrayBuffers,
    backend: h0 && h1 ? { bytes: h1.bytes - h0.bytes, source: h1.source } : null,
  };
  process.stdout.write(JSON.stringify(r) + '\n');
}

function runMemChild(T: number, backend: string, threads: number): MemResult | string {
  const script = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, ['--expose-gc', ...process.execArgv, script, '--attn-mem-child', String(T), '--backend', backend, '--threads', String(threads)], {
    encoding: 'utf8', maxBuffer: 1 << 20,
  });
  if (r.status !== 0) return `exit ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-2).join(' ')}`;
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as MemResult;
  } catch {
    return `unreadable output: ${r.stdout.slice(0, 200)}`;
  }
}

// ---------------------------------------------------------------- numpy / OpenBLAS peer

interface PyTiming { best_ms: number; median_ms: number; reps: number }
interface NumpyResult {
  threads: number;
  numpy: string;
  blas: { library: string | null; corename: string | null; config: string | null; threads: number | null; source: string | null };
  matmul: (PyTiming & { name: string })[];
  attention: (PyTiming & { name: string })[];
  layernorm: { name: string; forward: PyTiming; backward: PyTiming }[];
}

function findPeerScript(): string | null {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const p of [resolve(here, '../../bench/peers/numpy_kernels.py'), resolve(here, 'peers/numpy_kernels.py'), resolve('bench/peers/numpy_kernels.py')]) {
    if (existsSync(p)) return p;
  }
  return null;
}

/** Runs the numpy peer with OpenBLAS on `threads` threads; a string says why it could not. */
function runNumpy(python: string, spec: object, threads: number, keepEnv: boolean): NumpyResult | string {
  if (!existsSync(python)) return `${python} not found; install: ${NUMPY_INSTALL_HINT}`;
  const script = findPeerScript();
  if (!script) return 'bench/peers/numpy_kernels.py not found';
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
  if (!keepEnv) {
    // Some machines set these to force a kernel (e.g. Haswell on an AVX-512 CPU): numpy slows down.
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
  }
  let out: string;
  try {
    out = execFileSync(python, [script], { input: JSON.stringify(spec), env, encoding: 'utf8', maxBuffer: 16 << 20, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    const text = `${err.stdout ?? ''}${err.stderr ?? ''}`;
    if (/numpy/i.test(text) && /(No module|not importable)/i.test(text)) return `numpy is not installed for ${python}; install: ${NUMPY_INSTALL_HINT}`;
    return `numpy peer failed: ${text.trim().split('\n').slice(-1)[0] ?? err.message}`;
  }
  const r = JSON.parse(out) as NumpyResult & { error?: string };
  if (r.error) return `${r.error}; install: ${NUMPY_INSTALL_HINT}`;
  return { ...r, threads };
}

// ---------------------------------------------------------------- main

interface Row { [k: string]: unknown }

async function main(): Promise<void> {
  const memT = args.get('attn-mem-child');
  if (typeof memT === 'string') return memChild(Number(memT), opt('backend', 'auto'), Number(opt('threads', String(hardwareThreads()))));

  const quick = flag('quick');
  const allThreads = Math.max(1, Number(opt('threads', String(hardwareThreads()))));
  const only = new Set(opt('only', 'matmul,attention,layernorm,memory').split(','));
  const rows: Row[] = [];
  const mach = machineInfo();

  const { engines, note } = await loadEngines(opt('backend', 'auto'), allThreads);
  const isRef = engines[0]!.be.name === 'ref';
  const tiny = flag('tiny') || isRef; // the ref backend is plain JS loops: shrink the sizes
  if (note) log(`note: ${note}`);
  if (tiny) log('note: tiny sizes (dimensions / 4, short sequences)');

  // Timing settings: the first measurement of each engine and kernel warms up 0.4 s (V8 tier-up);
  // later ones reuse the optimised code and warm up briefly (quick) or as long (full).
  const base: TimingOptions = quick ? { warmupMs: 100, samples: 3, minSampleMs: 20, maxMs: 1500 } : { warmupMs: 400, samples: 7, minSampleMs: 100, maxMs: 8000 };
  const warmed = new Set<string>();
  const timing = (key: string): TimingOptions => {
    const first = !warmed.has(key);
    warmed.add(key);
    return first ? { ...base, warmupMs: 400 } : base;
  };

  // ---- shapes ----
  const d = (x: number) => (tiny ? Math.max(8, Math.round(x / 4)) : x);
  const rowsBT = d(2048);
  const C = d(384);
  const matmulShapes: MatmulShape[] = [
    { name: `${d(384)}³`, M: d(384), K: d(384), N: d(384) },
    { name: `${d(1024)}³`, M: d(1024), K: d(1024), N: d(1024) },
    { name: `${d(256)}×${d(768)}×${d(3072)}`, M: d(256), K: d(768), N: d(3072) },
    { name: 'QKV proj', M: rowsBT, K: C, N: 3 * C, transB: true, note: 'GPT fwd x·Wᵀ' },
    { name: 'attn out-proj', M: rowsBT, K: C, N: C, transB: true, note: 'GPT fwd x·Wᵀ' },
    { name: 'MLP up', M: rowsBT, K: C, N: 4 * C, transB: true, note: 'GPT fwd x·Wᵀ' },
    { name: 'MLP down', M: rowsBT, K: 4 * C, N: C, transB: true, note: 'GPT fwd x·Wᵀ' },
    { name: 'LM head', M: rowsBT, K: C, N: 65, transB: true, note: 'GPT fwd x·Wᵀ, vocab 65' },
    { name: 'MLP up dX', M: rowsBT, K: 4 * C, N: C, note: 'GPT bwd dX = dY·W' },
    { name: 'MLP up dW', M: 4 * C, K: rowsBT, N: C, transA: true, note: 'GPT bwd dW = dYᵀ·X' },
    // GPT-2 124M's linear layers at 512 rows (issue 17's shapes).
    { name: 'GPT-2 768×768', M: d(512), K: d(768), N: d(768), transB: true, note: 'x·Wᵀ, 512 rows' },
    { name: 'GPT-2 768×3072', M: d(512), K: d(768), N: d(3072), transB: true, note: 'x·Wᵀ, 512 rows' },
    { name: 'GPT-2 3072×768', M: d(512), K: d(3072), N: d(768), transB: true, note: 'x·Wᵀ, 512 rows' },
  ];
  const attnT = tiny ? [64, 256] : [256, 1024];
  const memTs = tiny ? [64, 128, 256, 512] : [256, 1024, 2048, 4096];
  const ln = { rows: rowsBT, n: C };
  const bigSquare = matmulShapes[1]!;

  // ---- peers first: numpy runs in subprocesses while attn's workers do not exist yet ----
  const numpy = new Map<number, NumpyResult>();
  const skips: string[] = [];
  const openblasEnv = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'].filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]}`);
  if (flag('skip-numpy')) skips.push('numpy/OpenBLAS: skipped (--skip-numpy)');
  else {
    const spec = {
      warmup_s: quick ? 0.1 : 0.4, samples: base.samples, min_sample_s: base.minSampleMs / 1000, max_s: (base.maxMs ?? 5000) / 1000,
      matmul: only.has('matmul') ? matmulShapes : [],
      attention: only.has('attention') ? attnT.map((T) => ({ name: `T=${T}`, ...ATT, T, causal: true })) : [],
      layernorm: only.has('layernorm') ? [{ name: 'ln', ...ln }] : [],
    };
    for (const th of [...new Set([1, allThreads])]) {
      log(`numpy/OpenBLAS, ${th} thread(s)…`);
      const r = runNumpy(opt('python', '/usr/bin/python3'), spec, th, flag('keep-openblas-env'));
      if (typeof r === 'string') {
        skips.push(`numpy/OpenBLAS: skipped: ${r}`);
        break;
      }
      numpy.set(th, r);
    }
  }
  const np0 = [...numpy.values()][0];
  const obLabel = (th: number) => (np0 && !np0.blas.corename ? `numpy BLAS ${th}t` : `OpenBLAS ${th}t`);
  if (np0 && !np0.blas.corename) skips.push(`numpy's BLAS is not OpenBLAS (${np0.blas.library ?? 'unknown'}); for OpenBLAS: ${NUMPY_INSTALL_HINT}`);

  // ---- attn ----
  const mm = new Map<string, Map<string, Timing & { error: number }>>(); // shape → engine → timing
  if (only.has('matmul')) {
    for (const s of matmulShapes) {
      const per = new Map<string, Timing & { error: number }>();
      for (const e of engines) {
        const t = attnMatmul(e, s, timing(`${e.label}:matmul`));
        per.set(e.label, t);
        log(`matmul ${s.name.padEnd(16)} ${e.label.padEnd(8)} ${num(matmulFlops(s) / t.best / 1e6)} GFLOP/s`);
      }
      mm.set(s.name, per);
    }
  }
  const att = new Map<string, { fwd: Timing; step: Timing }>(); // `${engine}:${T}`
  if (only.has('attention')) {
    for (const T of attnT) {
      for (const e of engines) {
        const r = attnAttention(e, T, timing(`${e.label}:attention`));
        att.set(`${e.label}:${T}`, r);
        log(`attention T=${T} ${e.label.padEnd(8)} ${num(r.step.best)} ms fwd+bwd`);
      }
    }
  }
  const lnr = new Map<string, { fwd: Timing; bwd: Timing }>();
  if (only.has('layernorm')) {
    for (const e of engines) {
      lnr.set(e.label, attnLayerNorm(e, ln.rows, ln.n, timing(`${e.label}:layernorm`)));
      log(`layerNorm ${e.label}`);
    }
  }

  // ---- tfjs ----
  let tfjs: TfjsPeer | null = null;
  const tfr = new Map<string, Timing & { error: number }>();
  const tfPlain = new Map<string, Timing & { error: number }>(); // transposed shapes, operands stored plain
  if (flag('skip-tfjs')) skips.push('tfjs wasm: skipped (--skip-tfjs)');
  else if (only.has('matmul')) {
    const r = await loadTfjs();
    if ('skip' in r) skips.push(`tfjs wasm: skipped: ${r.skip}`);
    else {
      tfjs = r;
      for (const s of matmulShapes) {
        const t = r.matmul(s, timing('tfjs:matmul'));
        tfr.set(s.name, t);
        log(`matmul ${s.name.padEnd(16)} tfjs     ${num(matmulFlops(s) / t.best / 1e6)} GFLOP/s`);
        if (s.transA || s.transB) {
          // tfjs's transposed products are much slower than its plain ones: measure both, so the
          // ratio is taken against tfjs's best layout.
          const tp = r.matmul(s, timing('tfjs:matmul'), true);
          tfPlain.set(s.name, tp);
          log(`matmul ${s.name.padEnd(16)} tfjs (plain layout) ${num(matmulFlops(s) / tp.best / 1e6)} GFLOP/s`);
        }
      }
    }
  }

  // ---- memory ----
  const mem: (MemResult | string)[] = [];
  if (only.has('memory')) {
    const last = engines[engines.length - 1]!;
    // A cold step at the largest T can take long while attention is slow: skip what would
    // exceed --mem-max-s at the rate measured above.
    const maxS = Number(opt('mem-max-s', quick ? '15' : '120'));
    const measured = attnT.map((T) => att.get(`${last.label}:${T}`)).filter((x) => x !== undefined);
    const rate = measured.length ? attnFlops(attnT[measured.length - 1]!) / measured[measured.length - 1]!.step.best : null; // FLOP per ms
    for (const T of memTs) {
      const est = rate ? attnFlops(T) / rate / 1000 : 0;
      if (est > maxS) {
        mem.push(`T=${T} skipped: one step would take ~${num(est)} s at the measured rate (--mem-max-s ${maxS})`);
        continue;
      }
      log(`attention memory T=${T} (${last.label}, fresh process)…`);
      mem.push(runMemChild(T, isRef ? 'ref' : 'cpu', last.threads));
    }
  }

  // ---------------------------------------------------------------- report
  const out: string[] = [];
  const p = (s = '') => out.push(s);
  const relaxed = engines.map((e) => `${e.label}: ${describeBackend(e.be)}`).join('; ');
  p(`# attn kernel benchmark${quick ? ' (--quick: few samples, noisy)' : ''}`);
  p();
  p(`machine: ${mach.cpu}, ${mach.threads} hardware threads${mach.flags.length ? ` (${mach.flags.join(' ')})` : ''}, ${num(mach.memGiB)} GiB, Node ${mach.node} (V8 ${mach.v8})`);
  p(`attn: ${engines.map((e) => `${e.label} = ${e.be.name} backend, ${e.threads} thread(s)`).join('; ')}${tiny ? '; TINY sizes' : ''}`);
  p(`attn kernels: ${relaxed}`);
  if (note) p(`note: ${note}`);
  if (np0) {
    p(`numpy ${np0.numpy}, ${np0.blas.config ?? np0.blas.library ?? 'unknown BLAS'}; kernel: ${np0.blas.corename ?? 'unknown'} (via ${np0.blas.source ?? '–'}); threads per run: ${[...numpy.keys()].join(', ')} (OPENBLAS_NUM_THREADS)`);
    if (openblasEnv.length) p(`  ${openblasEnv.join(', ')} ${flag('keep-openblas-env') ? 'kept' : 'set here and unset for the numpy peer (they force a slower kernel); --keep-openblas-env keeps them'}`);
  }
  if (tfjs) p(`TensorFlow.js ${tfjs.version} wasm backend, ${tfjs.threads} thread(s), SIMD ${tfjs.simd ? 'on' : 'off'}`);
  for (const s of skips) p(s);
  p(`timing: ${base.samples} samples of ≥ ${base.minSampleMs} ms after ≥ ${base.warmupMs} ms warm-up (0.4 s for the first use of each kernel); best sample shown`);
  p();

  const gf = (s: MatmulShape, t: Timing | undefined) => (t ? matmulFlops(s) / t.best / 1e6 : null);
  const npMs = (th: number, section: 'matmul' | 'attention', name: string) => numpy.get(th)?.[section].find((x) => x.name === name)?.best_ms ?? null;
  const last = engines[engines.length - 1]!;

  if (only.has('matmul')) {
    p(`## matmul, float32, GFLOP/s (M×K×N; GPT rows: one training step of a 6-layer, 384-wide model, B·T = ${rowsBT}; ·Wᵀ and dYᵀ operands are read transposed in place)`);
    p();
    // The machine's limit: the native kernel set's register-only FMA rate on each engine's threads.
    const native = (last.be as unknown as { native?: { fmaPeak(s: number, t: number): number } | null }).native ?? null;
    const peak = new Map(engines.map((e) => [e.label, native ? native.fmaPeak(0.3, e.threads) : null]));
    const hdr = ['shape', 'M×K×N', 'note', ...engines.map((e) => e.label)];
    const npThreads = engines.map((e) => e.threads).filter((th) => numpy.has(th));
    for (const th of [...new Set(npThreads)]) hdr.push(obLabel(th));
    if (tfjs) hdr.push('tfjs wasm', 'tfjs, no transposes');
    for (const e of engines) if (numpy.has(e.threads)) hdr.push(`${e.label} ÷ ${obLabel(e.threads)}`);
    if (tfjs) hdr.push(`${last.label} ÷ tfjs best`);
    if (native) hdr.push(`${last.label} ÷ peak`);
    const body: string[][] = [];
    const bad: string[] = [];
    for (const s of matmulShapes) {
      const per = mm.get(s.name)!;
      const mark = (t: (Timing & { error: number }) | undefined, who: string) => {
        if (t && !(t.error <= ERR_LIMIT)) {
          bad.push(`${who} at ${s.name}: spot-check error ${t.error.toExponential(1)}`);
          return ' !';
        }
        return '';
      };
      const row = [s.name, `${s.M}×${s.K}×${s.N}`, s.note ?? ''];
      for (const e of engines) row.push(num(gf(s, per.get(e.label))) + mark(per.get(e.label), e.label));
      const npG = (th: number) => {
        const ms = npMs(th, 'matmul', s.name);
        return ms ? matmulFlops(s) / ms / 1e6 : null;
      };
      for (const th of [...new Set(npThreads)]) row.push(num(npG(th)));
      const tf = tfr.get(s.name);
      const tp = tfPlain.get(s.name);
      if (tfjs) row.push(num(gf(s, tf)) + mark(tf, 'tfjs'), tp ? num(gf(s, tp)) + mark(tp, 'tfjs plain') : '');
      for (const e of engines) if (numpy.has(e.threads)) row.push(ratio(gf(s, per.get(e.label)), npG(e.threads)));
      const tfBest = Math.max(gf(s, tf) ?? -Infinity, gf(s, tp) ?? -Infinity);
      if (tfjs) row.push(ratio(gf(s, per.get(last.label)), Number.isFinite(tfBest) ? tfBest : null));
      if (native) row.push(ratio(gf(s, per.get(last.label)), peak.get(last.label)));
      body.push(row);
      for (const e of engines) {
        const t = per.get(e.label)!;
        rows.push({ section: 'matmul', shape: s.name, M: s.M, K: s.K, N: s.N, transA: !!s.transA, transB: !!s.transB, engine: e.label, backend: e.be.name, threads: e.threads, best_ms: t.best, median_ms: t.median, gflops: gf(s, t), spot_error: t.error });
      }
      for (const [th, r] of numpy) {
        const x = r.matmul.find((m) => m.name === s.name);
        if (x) rows.push({ section: 'matmul', shape: s.name, M: s.M, K: s.K, N: s.N, transA: !!s.transA, transB: !!s.transB, engine: obLabel(th), threads: th, best_ms: x.best_ms, median_ms: x.median_ms, gflops: matmulFlops(s) / x.best_ms / 1e6 });
      }
      if (tf) rows.push({ section: 'matmul', shape: s.name, M: s.M, K: s.K, N: s.N, transA: !!s.transA, transB: !!s.transB, engine: 'tfjs wasm', threads: tfjs?.threads, best_ms: tf.best, median_ms: tf.median, gflops: gf(s, tf), spot_error: tf.error });
      if (tp) rows.push({ section: 'matmul', shape: s.name, M: s.M, K: s.K, N: s.N, transA: false, transB: false, engine: 'tfjs wasm (no transposes)', threads: tfjs?.threads, best_ms: tp.best, median_ms: tp.median, gflops: gf(s, tp), spot_error: tp.error });
    }
    p(table(hdr, body, hdr.map((_, i) => (i < 3 ? 'l' : 'r'))));
    if (native) p(`peak: the machine's float32 limit measured by the native kernel set's register-only FMA loop (${engines.map((e) => `${e.label} ${num(peak.get(e.label))} GFLOP/s`).join(', ')}).`);
    for (const [label, g] of peak) if (g !== null) rows.push({ section: 'matmul', shape: 'fma peak', engine: label, gflops: g });
    if (tfjs && tfPlain.size) p('tfjs, no transposes: the same product with both operands stored untransposed (tfjs transposes slowly); ratios use the faster tfjs figure.');
    for (const b of bad) p(`! ${b}`);
    p();
  }

  if (only.has('attention')) {
    p(`## attention forward + backward, causal, B=${ATT.B} H=${ATT.H} D=${ATT.D} (FLOPs: forward 2·T²·D per head, total 3.5× forward)`);
    p();
    const hdr = ['T', 'engine', 'fwd ms', 'fwd+bwd ms', 'GFLOP/s', `÷ own ${bigSquare.name} matmul`];
    const body: string[][] = [];
    for (const T of attnT) {
      for (const e of engines) {
        const r = att.get(`${e.label}:${T}`)!;
        const g = attnFlops(T) / r.step.best / 1e6;
        const mmG = gf(bigSquare, mm.get(bigSquare.name)?.get(e.label));
        body.push([String(T), e.label, num(r.fwd.best), num(r.step.best), num(g), ratio(g, mmG)]);
        rows.push({ section: 'attention', T, ...ATT, causal: true, engine: e.label, threads: e.threads, fwd_best_ms: r.fwd.best, best_ms: r.step.best, median_ms: r.step.median, gflops: g, matmul_ratio: mmG ? g / mmG : null });
      }
      for (const [th, nr] of numpy) {
        const ms = nr.attention.find((a) => a.name === `T=${T}`)?.best_ms;
        if (!ms) continue;
        const g = attnFlops(T) / ms / 1e6;
        const mmMs = npMs(th, 'matmul', bigSquare.name);
        body.push([String(T), `numpy naive ${th}t`, '', num(ms), num(g), ratio(g, mmMs ? matmulFlops(bigSquare) / mmMs / 1e6 : null)]);
        rows.push({ section: 'attention', T, ...ATT, causal: true, engine: `numpy naive ${th}t`, threads: th, best_ms: ms, gflops: g });
      }
    }
    p(table(hdr, body, ['r', 'l', 'r', 'r', 'r', 'r']));
    if (numpy.size) p('numpy naive: reference point only, materialises softmax(QKᵀ) (B, H, T, T) and computes the masked half too; same nominal FLOP count.');
    p();
  }

  if (only.has('memory') && mem.length) {
    p(`## attention memory, forward + backward, ${last.label}, fresh process per T (growth after allocating q, k, v, dO, O, lse, dQ, dK, dV and one step)`);
    p();
    const src = mem.find((m): m is MemResult => typeof m !== 'string' && m.backend !== null)?.backend?.source;
    const heapCol = src?.includes('memory.buffer') ? 'wasm memory growth MB' : 'backend heap growth MB';
    const hdr = ['T', 'tensors MB', 'rss growth MB', heapCol, 'rss − tensors MB', 'rss growth ÷ T, KB', 'B·H T×T scores would be MB', 'step ms (cold)'];
    const body: string[][] = [];
    const notes: string[] = [];
    for (const m of mem) {
      if (typeof m === 'string') {
        notes.push(m);
        continue;
      }
      const MB = (x: number) => num(x / 2 ** 20);
      body.push([String(m.T), MB(m.tensorBytes), MB(m.rss), m.backend ? MB(m.backend.bytes) : '–', MB(m.rss - m.tensorBytes), num(m.rss / m.T / 1024), MB(ATT.B * ATT.H * m.T * m.T * 4), num(m.ms)]);
      rows.push({ section: 'attention_memory', engine: last.label, ...m });
    }
    if (body.length) p(table(hdr, body));
    for (const n of notes) p(`- ${n}`);
    p(`rss: process.memoryUsage().rss delta (includes touched WebAssembly memory pages)${src ? `; ${heapCol}: ${src} (high-water, grows in steps of ≥ 25 %)` : '; backend heap: not exposed by this backend'}. Linear growth: rss ÷ T stays flat.`);
    p();
  }

  if (only.has('layernorm')) {
    const bytesF = 2 * ln.rows * ln.n * 4;
    const bytesB = 3 * ln.rows * ln.n * 4;
    p(`## layer norm ${ln.rows}×${ln.n}, GB/s (forward reads x, writes y; backward reads x, dy, writes dx; small vectors ignored)`);
    p();
    const hdr = ['engine', 'fwd µs', 'fwd GB/s', 'bwd µs', 'bwd GB/s', 'fwd+bwd GB/s'];
    const body: string[][] = [];
    const addRow = (label: string, th: number, f: number, b: number) => {
      body.push([label, num(f * 1e3), num(bytesF / f / 1e6), num(b * 1e3), num(bytesB / b / 1e6), num((bytesF + bytesB) / (f + b) / 1e6)]);
      rows.push({ section: 'layernorm', rows: ln.rows, n: ln.n, engine: label, threads: th, fwd_best_ms: f, bwd_best_ms: b, fwd_gbps: bytesF / f / 1e6, bwd_gbps: bytesB / b / 1e6 });
    };
    for (const e of engines) {
      const r = lnr.get(e.label)!;
      addRow(e.label, e.threads, r.fwd.best, r.bwd.best);
    }
    for (const [th, nr] of numpy) {
      const x = nr.layernorm[0];
      if (x) addRow(`numpy unfused ${th}t`, th, x.forward.best_ms, x.backward.best_ms);
    }
    p(table(hdr, body));
    p();
  }

  // ---- targets ----
  const targetsAt = out.length;
  p('## targets');
  p();
  const verdict = (v: number | null, goal: number) => (v === null ? 'n/a' : v >= goal ? 'PASS' : 'MISS');
  if (only.has('matmul')) {
    const a = gf(bigSquare, mm.get(bigSquare.name)?.get(last.label));
    const obMs = npMs(last.threads, 'matmul', bigSquare.name);
    const ob = obMs ? matmulFlops(bigSquare) / obMs / 1e6 : null;
    const tf = gf(bigSquare, tfr.get(bigSquare.name));
    const r1 = a !== null && ob !== null ? a / ob : null;
    const r2 = a !== null && tf !== null ? a / tf : null;
    p(`- matmul ${bigSquare.name}, ${last.label} ≥ 0.9× ${obLabel(last.threads)}: ${ratio(a, ob)} → ${verdict(r1, 0.9)}`);
    for (const name of ['GPT-2 768×768', 'GPT-2 768×3072', 'GPT-2 3072×768']) {
      const s2 = matmulShapes.find((x) => x.name === name)!;
      const g = gf(s2, mm.get(name)?.get(last.label));
      const ms = npMs(last.threads, 'matmul', name);
      const o = ms ? matmulFlops(s2) / ms / 1e6 : null;
      p(`- matmul ${name} (512 rows), ${last.label} ≥ 0.9× ${obLabel(last.threads)}: ${ratio(g, o)} → ${verdict(g !== null && o !== null ? g / o : null, 0.9)}`);
    }
    p(`- matmul ${bigSquare.name}, ${last.label} ≥ 3.5× tfjs wasm: ${ratio(a, tf)} → ${verdict(r2, 3.5)}`);
  }
  if (only.has('attention') && only.has('matmul')) {
    for (const e of engines) {
      const mmG = gf(bigSquare, mm.get(bigSquare.name)?.get(e.label));
      const parts = attnT.map((T) => {
        const r = att.get(`${e.label}:${T}`)!;
        const g = attnFlops(T) / r.step.best / 1e6;
        return `T=${T}: ${ratio(g, mmG)} → ${verdict(mmG ? g / mmG : null, 0.5)}`;
      });
      p(`- attention fwd+bwd within 2× of the matmul rate (≥ 0.5× own ${bigSquare.name}), ${e.label}: ${parts.join('; ')}`);
    }
  }
  if (out.length === targetsAt + 2) out.length = targetsAt; // no target applies to this selection
  else if (tiny) p('- (tiny sizes: the targets are defined for the full sizes)');

  process.stdout.write(out.join('\n') + '\n');

  writeJsonIfAsked(cli, 'bench/results/kernels.json', () => ({
    date: new Date().toISOString(), quick, tiny, machine: mach,
    engines: engines.map((e) => ({ label: e.label, backend: e.be.name, threads: e.threads, kernels: describeBackend(e.be) })),
    numpy: np0 ? { version: np0.numpy, blas: np0.blas, unsetEnv: flag('keep-openblas-env') ? [] : openblasEnv } : null,
    tfjs: tfjs ? { version: tfjs.version, threads: tfjs.threads, simd: tfjs.simd } : null,
    skips, rows,
  }));
}

main().then(
  () => process.exit(0), // the cpu backend's workers are unref'd, but tfjs may hold handles
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
