// Timing, formatting and argument helpers shared by the benchmarks (Node only).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { availableParallelism, cpus, totalmem } from 'node:os';

export const now = (): number => performance.now();

export interface TimingOptions {
  /** Call fn for at least this long before timing: V8 tiers WebAssembly up from its baseline
   *  compiler only after a function has run a while (a single warm-up call gives half speed). */
  warmupMs: number;
  /** Number of timed samples; each sample repeats fn until it lasts at least minSampleMs. */
  samples: number;
  minSampleMs: number;
  /** Stop taking samples once this much time went by (at least one sample is always taken). */
  maxMs?: number;
}

export interface Timing {
  /** Milliseconds per call: fastest sample and median sample. */
  best: number;
  median: number;
  samples: number[];
  /** Calls per sample. */
  reps: number;
}

/** Times fn (synchronous). `sync`, when given, runs at the end of every sample, inside the timing. */
export function measure(fn: () => void, opts: TimingOptions, sync?: () => void): Timing {
  const t0 = now();
  let calls = 0;
  do {
    fn();
    calls++;
  } while (now() - t0 < opts.warmupMs);
  sync?.();
  // One more call (a second warm-up for slow kernels) to choose the repetitions per sample.
  const t1 = now();
  fn();
  sync?.();
  const single = Math.max(now() - t1, 1e-3);
  const reps = Math.max(1, Math.ceil(opts.minSampleMs / single));
  const samples: number[] = [];
  const start = now();
  for (let s = 0; s < opts.samples; s++) {
    const ts = now();
    for (let r = 0; r < reps; r++) fn();
    sync?.();
    samples.push((now() - ts) / reps);
    if (opts.maxMs !== undefined && now() - start > opts.maxMs) break;
  }
  return summarise(samples, reps);
}

export function summarise(samples: number[], reps: number): Timing {
  const sorted = [...samples].sort((a, b) => a - b);
  return { best: sorted[0]!, median: sorted[Math.floor((sorted.length - 1) / 2)]!, samples, reps };
}

// ---------------------------------------------------------------- formatting

/** A number with about `sig` significant digits, without exponent for ordinary sizes. */
export function num(x: number | null | undefined, sig = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const mag = Math.floor(Math.log10(Math.abs(x)));
  const decimals = Math.max(0, Math.min(6, sig - 1 - mag));
  return x.toFixed(decimals);
}

/** A ratio a / b as "0.53×", or a dash when either side is missing. */
export function ratio(a: number | null | undefined, b: number | null | undefined): string {
  if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–';
  return `${(a / b).toFixed(2)}×`;
}

export type Align = 'l' | 'r';

/** A Markdown pipe table with padded columns (first column left-aligned, the rest right). */
export function table(headers: string[], rows: string[][], align?: Align[]): string {
  const al = align ?? headers.map((_, i) => (i === 0 ? 'l' : 'r'));
  const width = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const pad = (s: string, i: number) => (al[i] === 'l' ? s.padEnd(width[i]!) : s.padStart(width[i]!));
  const line = (cells: string[]) => `| ${cells.map((c, i) => pad(c ?? '', i)).join(' | ')} |`;
  const sep = `|${width.map((w, i) => (al[i] === 'l' ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(headers), sep, ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------- machine and arguments

export function hardwareThreads(): number {
  try {
    return Math.max(1, availableParallelism());
  } catch {
    return Math.max(1, cpus().length);
  }
}

/** CPU model (from /proc/cpuinfo when readable), thread count, memory, Node and V8 versions. */
export function machineInfo(): { cpu: string; threads: number; memGiB: number; node: string; v8: string; flags: string[] } {
  let cpu = cpus()[0]?.model?.trim() ?? 'unknown cpu';
  let flags: string[] = [];
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const model = /^model name\s*:\s*(.+)$/m.exec(info);
    if (model) cpu = model[1]!.trim();
    const f = /^flags\s*:\s*(.+)$/m.exec(info);
    if (f) flags = f[1]!.split(/\s+/).filter((x) => /^(avx2|fma|avx512f|avx512_bf16|avx_vnni)$/.test(x));
  } catch {
    // Not Linux: os.cpus() is enough.
  }
  return { cpu, threads: hardwareThreads(), memGiB: totalmem() / 2 ** 30, node: process.version, v8: process.versions.v8, flags };
}

/** Minimal flag parser: --name, --name value, --name=value. */
export function parseArgs(argv: string[]): Map<string, string | true> {
  const out = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    if (eq > 0) {
      out.set(a.slice(2, eq), a.slice(eq + 1));
    } else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) {
      out.set(a.slice(2), argv[++i]!);
    } else {
      out.set(a.slice(2), true);
    }
  }
  return out;
}

/** A benchmark script's arguments: the parsed map, `flag` (present?) and `opt` (a string value,
 *  or the default when absent or given bare). */
export function scriptArgs(argv: string[] = process.argv.slice(2)): {
  args: Map<string, string | true>; flag: (k: string) => boolean; opt: (k: string, d: string) => string;
} {
  const args = parseArgs(argv);
  return {
    args,
    flag: (k) => args.has(k),
    opt: (k, d) => {
      const v = args.get(k);
      return typeof v === 'string' ? v : d;
    },
  };
}

export type ScriptArgs = ReturnType<typeof scriptArgs>;

/** With --json or --out FILE, writes doc() to FILE (default `defaultFile`) as indented JSON. */
export function writeJsonIfAsked(cli: ScriptArgs, defaultFile: string, doc: () => unknown): void {
  if (!(cli.flag('json') || cli.args.has('out'))) return;
  const file = cli.opt('out', defaultFile);
  mkdirSync(dirname(resolve(file)), { recursive: true });
  writeFileSync(file, JSON.stringify(doc(), null, 2) + '\n');
  log(`wrote ${file}`);
}

/** Progress goes to stderr so that stdout holds only the tables (or JSON). */
export const log = (s: string): void => {
  process.stderr.write(s + '\n');
};

/** A xorshift32 stream of uint32 values (0 seeds as 1), the benchmarks' deterministic inputs. */
export function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** Deterministic pseudo-random floats in [-1, 1) (xorshift32), for filling benchmark inputs. */
export function randomFloats(n: number, seed = 1): Float32Array {
  const a = new Float32Array(n);
  const next = xorshift32(seed);
  for (let i = 0; i < n; i++) a[i] = next() / 2 ** 31 - 1;
  return a;
}

// ---------------------------------------------------------------- matmul shapes

/** out (M, N) = A (M, K) · B (K, N). A is stored (K, M) when transA, B (N, K) when transB. */
export interface MatmulShape {
  name: string;
  M: number;
  K: number;
  N: number;
  transA?: boolean;
  transB?: boolean;
  /** What it is, for the table. */
  note?: string;
}

export const matmulFlops = (s: MatmulShape): number => 2 * s.M * s.K * s.N;

/** Largest error of a few entries of out against float64 sums, relative to Σ|a·b| of each entry. */
export function spotCheckMatmul(s: MatmulShape, a: ArrayLike<number>, b: ArrayLike<number>, out: ArrayLike<number>, points = 8): number {
  let worst = 0;
  let seed = 12345;
  const next = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  for (let p = 0; p < points; p++) {
    const m = next(s.M);
    const n = next(s.N);
    let sum = 0;
    let mag = 0;
    for (let k = 0; k < s.K; k++) {
      const av = s.transA ? a[k * s.M + m]! : a[m * s.K + k]!;
      const bv = s.transB ? b[n * s.K + k]! : b[k * s.N + n]!;
      sum += av * bv;
      mag += Math.abs(av * bv);
    }
    worst = Math.max(worst, Math.abs(out[m * s.N + n]! - sum) / (mag || 1));
  }
  return worst;
}
