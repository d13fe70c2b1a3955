// attn bench attention: time and peak memory of one attention layer's forward + backward for
// each attention variant as the context T doubles, to show the quadratic cost of dense
// attention against the sub-quadratic variants.
//
// Every layer includes its input/output projections (c_attn, c_proj). `naive` materialises
// softmax(QKᵀ/√D + causal mask)·V with plain ops; `dense` is the model's fused kernel; the other
// variants are built as the model builds them: a 1-layer GPT with `attention: <variant>`, of
// which only transformer.h[0].attn is run. Variants the code base does not (yet) have are
// reported as skipped.
//
// Peak memory: on the cpu backend the runtime's malloc is wrapped for the duration of a step, so
// the largest bytes-in-use (live wasm heap blocks, transients and kernel scratch included) is
// exact; peak_bytes = that maximum − bytes in use before the step. Elsewhere it is sampled after
// the forward and after the backward (process array buffers). rss_bytes is the growth of the
// process RSS over the cell (the wasm heap never shrinks, so it is 0 once a larger cell ran).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { GPT, type GPTConfig } from '../models/gpt.js';
import { Linear } from '../nn/layers.js';
import {
  matmul, maskedFill, noGrad, permute, randn, reshape, softmax, split, sum, tidy, transpose, trilMask, compare, type Tensor,
} from '../tensor/index.js';
import { coerceLike, type Flags, UsageError } from './args.js';
import { backendFromFlags } from './common.js';
import { formatBytes, linePlotSvg } from '../eval/plot.js';

export const ATTENTION_VARIANTS = ['naive', 'dense', 'local', 'strided', 'fixed', 'linear', 'linformer', 'performer'] as const;
/** Variants the issue expects to be sub-quadratic. */
const TARGET_VARIANTS = ['local', 'linear', 'performer'];
/** GPT config fields passed through from flags when given. */
const PASS_THROUGH = ['n_kv_head', 'attn_window', 'attn_stride', 'attn_summary', 'performer_features', 'performer_redraw_interval', 'linformer_k'];

export interface BenchRow {
  variant: string;
  T: number;
  B: number;
  C: number;
  H: number;
  /** Fastest timed forward + backward (ms); ms_median: their median. */
  ms: number;
  ms_median: number;
  ms_forward: number;
  peak_bytes: number | null;
  rss_bytes: number;
  reps: number;
}

interface Layer {
  forward(x: Tensor): Tensor;
  parameters(): Tensor[];
  dispose(): void;
}

interface Width {
  B: number;
  C: number;
  H: number;
}

/** softmax(QKᵀ/√D + causal mask)·V through plain ops: the (B, H, T, T) matrices exist. */
class NaiveAttention implements Layer {
  readonly c_attn: Linear;
  readonly c_proj: Linear;
  constructor(readonly w: Width, readonly backend: Backend, T: number) {
    this.c_attn = new Linear(w.C, 3 * w.C, { backend, std: 0.02 });
    this.c_proj = new Linear(w.C, w.C, { backend, std: 0.02 });
    this.mask = noGrad(() => compare('eq', trilMask(T, T, 0, { backend, dtype: 'float32' }), 0)).keep(); // (T, T), 1 above the diagonal
  }
  private readonly mask: Tensor;
  parameters(): Tensor[] {
    return [...this.c_attn.parameters(), ...this.c_proj.parameters()];
  }
  forward(x: Tensor): Tensor {
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.w.H;
    const D = C / H;
    const [q, k, v] = split(this.c_attn.forward(x), C, -1).map((t) => permute(reshape(t, [B, T, H, D]), [0, 2, 1, 3])) as [Tensor, Tensor, Tensor];
    const scores = matmul(q, transpose(k, -2, -1)).mul(1 / Math.sqrt(D)); // (B, H, T, T)
    const p = softmax(maskedFill(scores, this.mask, -Infinity), -1);
    const y = matmul(p, v); // (B, H, T, D)
    return this.c_proj.forward(reshape(permute(y, [0, 2, 1, 3]), [B, T, C]));
  }
  dispose(): void {
    this.c_attn.dispose();
    this.c_proj.dispose();
    this.mask.dispose();
  }
}

/** A 1-layer GPT config for the variant (without the `attention` field when withField is false). */
function configOf(variant: string, T: number, w: Width, extra: Record<string, unknown>, withField: boolean): Record<string, unknown> {
  const cfg: Record<string, unknown> = { n_layer: 1, n_head: w.H, n_embd: w.C, block_size: T, vocab_size: 16, dropout: 0, ...extra };
  if (withField) cfg['attention'] = variant;
  return cfg;
}

type LinformerCtor = new (nEmbd: number, nHead: number, maxLen: number, k: number, opts: { backend?: Backend; std?: number }) => Layer;
let linformerCtor: LinformerCtor | null | undefined;

/** The Linformer module, when src/nn has one (looked up at run time). */
async function loadLinformer(): Promise<LinformerCtor | null> {
  if (linformerCtor === undefined) {
    try {
      const path = '../nn/linear-attention.js';
      const mod = (await import(path)) as Record<string, unknown>;
      linformerCtor = typeof mod['LinformerSelfAttention'] === 'function' ? (mod['LinformerSelfAttention'] as LinformerCtor) : null;
    } catch {
      linformerCtor = null;
    }
  }
  return linformerCtor;
}

/** Builds a variant's layer, or says why it cannot. */
function buildLayer(variant: string, T: number, w: Width, backend: Backend, extra: Record<string, unknown>): Layer | string {
  if (variant === 'naive') return new NaiveAttention(w, backend, T);
  let model: GPT;
  try {
    model = new GPT(configOf(variant, T, w, extra, true) as Partial<GPTConfig>, { backend });
  } catch (e) {
    const msg = (e as Error).message;
    // Before the `attention` field exists, dense is the only attention there is.
    if (variant === 'dense' && /unknown field 'attention'/.test(msg)) model = new GPT(configOf(variant, T, w, extra, false) as Partial<GPTConfig>, { backend });
    // GPT refuses Linformer (it cannot be causal): measure the bidirectional module itself.
    else if (variant === 'linformer' && linformerCtor) return new linformerCtor(w.C, w.H, T, Number(extra['linformer_k'] ?? 64), { backend, std: 0.02 });
    else return /unknown field 'attention'/.test(msg) ? 'not available (GPTConfig has no attention field)' : `not available (${msg.replace(/^GPTConfig: /, '')})`;
  }
  const block = model.transformer.h.at(0) as unknown as { attn: { forward(x: Tensor): Tensor } };
  return { forward: (x) => block.attn.forward(x), parameters: () => model.parameters(), dispose: () => model.dispose() };
}

export interface PeakTracker {
  /** Folds the current bytes in use into the peak (the malloc hook does this on every allocation). */
  sample(): void;
  /** Removes the hook; returns the peak bytes in use above the start. */
  stop(): number;
}

/** Starts tracking the backend's peak bytes in use (see the header). */
export function trackPeak(backend: Backend): PeakTracker {
  const b = backend as unknown as { rt?: { malloc?: (n: number) => number; liveBytes?: number }; memoryStats?: () => { bytesInUse: number } };
  const rt = b.rt;
  if (rt && typeof rt.malloc === 'function' && typeof rt.liveBytes === 'number') {
    const start = rt.liveBytes;
    let peak = start;
    const own = Object.hasOwn(rt, 'malloc');
    const orig = rt.malloc;
    rt.malloc = function (n: number): number {
      const p = orig.call(rt, n);
      if (rt.liveBytes! > peak) peak = rt.liveBytes!;
      return p;
    };
    return {
      sample: () => {
        if (rt.liveBytes! > peak) peak = rt.liveBytes!;
      },
      stop: () => {
        if (own) rt.malloc = orig;
        else delete rt.malloc;
        return peak - start;
      },
    };
  }
  const used = (): number => (typeof b.memoryStats === 'function' ? b.memoryStats().bytesInUse : process.memoryUsage().arrayBuffers);
  const start = used();
  let peak = start;
  return {
    sample: () => {
      peak = Math.max(peak, used());
    },
    stop: () => peak - start,
  };
}

function withPeak(backend: Backend, fn: (sample: () => void) => void): number {
  const t = trackPeak(backend);
  let peak = 0;
  try {
    fn(t.sample);
  } finally {
    peak = t.stop(); // always unhooks
  }
  return peak;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/** One timed forward + backward; returns [total ms, forward ms]. */
function step(layer: Layer, params: Tensor[], x: Tensor, sample: () => void): [number, number] {
  const t0 = performance.now();
  let t1 = t0;
  tidy(() => {
    const y = layer.forward(x);
    const loss = sum(y);
    loss.item(); // forces completion
    t1 = performance.now();
    sample();
    loss.backward();
    sample();
  });
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
  return [performance.now() - t0, t1 - t0];
}

export interface BenchOptions {
  variants: readonly string[];
  minT: number;
  maxT: number;
  width: Width;
  maxS: number;
  reps: number;
  extra: Record<string, unknown>;
  /** Each finished row, and each message (skip reasons). */
  onRow?(row: BenchRow): void;
  onNote?(variant: string, text: string): void;
}

/** Measures every (variant, T) cell; a variant stops at the first cell over maxS or out of memory. */
export function benchAttention(backend: Backend, o: BenchOptions): BenchRow[] {
  const rows: BenchRow[] = [];
  for (const variant of o.variants) {
    if (variant === 'linformer' && linformerCtor) o.onNote?.(variant, `bidirectional LinformerSelfAttention (GPT cannot use it), k=${Number(o.extra['linformer_k'] ?? 64)}`);
    for (let T = o.minT; T <= o.maxT; T *= 2) {
      const rss0 = process.memoryUsage().rss;
      let layer: Layer | string;
      try {
        layer = buildLayer(variant, T, o.width, backend, o.extra);
      } catch (e) {
        o.onNote?.(variant, `skipped: ${(e as Error).message}`);
        break;
      }
      if (typeof layer === 'string') {
        o.onNote?.(variant, `skipped: ${layer}`);
        break;
      }
      const allParams = layer.parameters();
      const x = randn([o.width.B, T, o.width.C], { backend }).keep();
      let row: BenchRow | null = null;
      let stop = '';
      try {
        const times: number[] = [];
        const fwd: number[] = [];
        // The first step is a warm-up whose peak memory counts (later steps reuse the heap).
        const peak = withPeak(backend, (sample) => {
          const [t, f] = step(layer as Layer, allParams, x, sample);
          times.push(t);
          fwd.push(f);
        });
        // Timed repeats after the warm-up: at least one (unless the warm-up hit --max_s), up to `reps` within ~2 s.
        const more = o.reps === 0 || times[0]! > o.maxS * 1000 ? 0 : Math.max(1, Math.min(o.reps, Math.floor(2000 / Math.max(times[0]!, 1))));
        if (more > 0) {
          times.length = 0;
          fwd.length = 0;
          for (let r = 0; r < more; r++) {
            const [t, f] = step(layer as Layer, allParams, x, () => {});
            times.push(t);
            fwd.push(f);
          }
        }
        // The fastest repeat: the least disturbed by other work on the machine.
        const ms = Math.min(...times);
        row = { variant, T, B: o.width.B, C: o.width.C, H: o.width.H, ms, ms_median: median(times), ms_forward: Math.min(...fwd), peak_bytes: peak, rss_bytes: Math.max(0, process.memoryUsage().rss - rss0), reps: times.length };
        if (ms > o.maxS * 1000 && T * 2 <= o.maxT) stop = `skipped T ≥ ${T * 2}: T=${T} took ${(ms / 1000).toFixed(1)} s > --max_s ${o.maxS}`;
      } catch (e) {
        const msg = (e as Error).message;
        stop = /heap exhausted|out of memory|Array buffer allocation|Invalid typed array length/i.test(msg) ? `out of memory at T=${T} (${msg}); larger T skipped` : `failed at T=${T}: ${msg}`;
      } finally {
        x.dispose();
        layer.dispose();
      }
      if (row) {
        rows.push(row);
        o.onRow?.(row);
      }
      if (stop) {
        o.onNote?.(variant, stop);
        break;
      }
    }
  }
  return rows;
}

// ---------------------------------------------------------------- the issue's targets

export interface TargetCheck {
  variant: string;
  /** naive peak at the largest T / this variant's peak there (≥ 10 wanted). */
  memoryRatio: number | null;
  memoryNote: string;
  /** Mean time growth per doubling from T=1024 on (≤ 2.2 wanted), and the worst single doubling. */
  growth: number | null;
  worstGrowth: number | null;
  memoryOk: boolean;
  timeOk: boolean;
}

/** Mean and worst ms(2T)/ms(T) for T ≥ from. */
export function growthPerDoubling(rows: readonly BenchRow[], variant: string, from = 1024): { mean: number; worst: number } | null {
  const r = rows.filter((x) => x.variant === variant && x.T >= from).sort((a, b) => a.T - b.T);
  if (r.length < 2) return null;
  let worst = 0;
  for (let i = 1; i < r.length; i++) worst = Math.max(worst, r[i]!.ms / r[i - 1]!.ms);
  const doublings = Math.log2(r[r.length - 1]!.T / r[0]!.T);
  return { mean: (r[r.length - 1]!.ms / r[0]!.ms) ** (1 / doublings), worst };
}

/** Naive dense memory at T: measured, or extrapolated quadratically from its largest measured T. */
function naiveMemoryAt(rows: readonly BenchRow[], T: number): { bytes: number; note: string } | null {
  const n = rows.filter((r) => r.variant === 'naive' && r.peak_bytes !== null).sort((a, b) => a.T - b.T);
  const exact = n.find((r) => r.T === T);
  if (exact) return { bytes: exact.peak_bytes!, note: 'measured' };
  const last = n[n.length - 1];
  if (!last || last.T > T) return null;
  return { bytes: last.peak_bytes! * (T / last.T) ** 2, note: `naive extrapolated ∝T² from T=${last.T}` };
}

export function checkTargets(rows: readonly BenchRow[], T: number): TargetCheck[] {
  const naive = naiveMemoryAt(rows, T);
  return TARGET_VARIANTS.map((variant) => {
    const at = rows.find((r) => r.variant === variant && r.T === T);
    const ratio = naive && at?.peak_bytes ? naive.bytes / at.peak_bytes : null;
    const g = growthPerDoubling(rows, variant);
    return {
      variant,
      memoryRatio: ratio,
      memoryNote: !at ? `no measurement at T=${T}` : !naive ? 'no naive measurement' : naive.note,
      growth: g?.mean ?? null,
      worstGrowth: g?.worst ?? null,
      memoryOk: ratio !== null && ratio >= 10,
      timeOk: g !== null && g.mean <= 2.2,
    };
  });
}

// ---------------------------------------------------------------- the command

function pad(s: string, n: number, left = false): string {
  return left ? s.padStart(n) : s.padEnd(n);
}

export function plotsOf(rows: readonly BenchRow[]): { time: string; memory: string } {
  const variants = [...new Set(rows.map((r) => r.variant))];
  const Ts = [...new Set(rows.map((r) => r.T))].sort((a, b) => a - b);
  const series = (key: 'ms' | 'peak_bytes') =>
    variants.map((v) => ({ name: v, dashed: v === 'naive', points: rows.filter((r) => r.variant === v).map((r) => [r.T, key === 'ms' ? r.ms : r.peak_bytes === null ? NaN : r.peak_bytes / 2 ** 20] as const) }));
  const common = { logX: true, logY: true, xLabel: 'context length T (tokens)', xTicks: Ts, xFormat: (v: number) => String(v) };
  const w = rows[0];
  const shape = w ? ` (B=${w.B}, C=${w.C}, H=${w.H})` : '';
  return {
    time: linePlotSvg(series('ms'), { ...common, title: `attention forward+backward time${shape}`, yLabel: 'time per step (ms)' }),
    memory: linePlotSvg(series('peak_bytes'), { ...common, title: `attention peak memory${shape}`, yLabel: 'peak memory above baseline (MiB)' }),
  };
}

export async function runBenchAttention(f: Flags): Promise<void> {
  const minT = f.number('min_t', { integer: true, min: 1 }) ?? 128;
  const maxT = f.number('max_t', { integer: true, min: 1 }) ?? 8192;
  if (maxT < minT) throw new UsageError(`bench: --max_t ${maxT} is below --min_t ${minT}`);
  const B = f.number('batch_size', { integer: true, min: 1 }) ?? 1;
  const H = f.number('n_head', { integer: true, min: 1 }) ?? 6;
  const D = f.number('head_dim', { integer: true, min: 1 });
  const C = f.number('n_embd', { integer: true, min: 1 }) ?? (D !== undefined ? D * H : 384);
  if (C % H !== 0) throw new UsageError(`bench: --n_embd ${C} is not divisible by --n_head ${H}`);
  if (D !== undefined && C !== D * H) throw new UsageError(`bench: --n_embd ${C} != --n_head ${H} × --head_dim ${D}`);
  const maxS = f.number('max_s', { min: 0 }) ?? 10;
  const reps = f.number('reps', { integer: true, min: 0 }) ?? 3;
  const json = f.bool('json');
  const out = f.string('out');
  const variantsFlag = f.string('variants');
  const variants = variantsFlag ? variantsFlag.split(',').map((s) => s.trim()).filter(Boolean) : [...ATTENTION_VARIANTS];
  for (const v of variants) {
    if (!(ATTENTION_VARIANTS as readonly string[]).includes(v)) throw new UsageError(`bench: unknown variant '${v}' (known: ${ATTENTION_VARIANTS.join(', ')})`);
  }
  const extra: Record<string, unknown> = {};
  for (const k of PASS_THROUGH) {
    const v = f.string(k);
    if (v !== undefined) extra[k] = coerceLike(`bench: --${k}`, undefined, v);
  }
  const backend = await backendFromFlags(f);
  f.done();
  if (variants.includes('linformer')) await loadLinformer();
  const say = (s: string) => (json ? process.stderr.write(`${s}\n`) : console.log(s));
  say(`attention forward+backward, ${backend.name} backend, B=${B} C=${C} H=${H} D=${C / H}, T=${minT}..${maxT}, --max_s ${maxS}`);
  if (!json) say(`${pad('variant', 10)} ${pad('T', 6, true)} ${pad('ms', 10, true)} ${pad('fwd ms', 10, true)} ${pad('peak', 11, true)} ${pad('RSS +', 11, true)}`);
  const rows = benchAttention(backend, {
    variants, minT, maxT, width: { B, C, H }, maxS, reps, extra,
    onRow: (r) => {
      if (json) console.log(JSON.stringify(r));
      else say(`${pad(r.variant, 10)} ${pad(String(r.T), 6, true)} ${pad(r.ms.toFixed(1), 10, true)} ${pad(r.ms_forward.toFixed(1), 10, true)} ${pad(r.peak_bytes === null ? '-' : formatBytes(r.peak_bytes), 11, true)} ${pad(formatBytes(r.rss_bytes), 11, true)}`);
    },
    onNote: (v, s) => say(`${pad(v, 10)} ${s}`),
  });
  // The issue's targets, at the largest T asked for.
  const checks = checkTargets(rows, maxT);
  say(`targets at T=${maxT}: ≥ 10× less peak memory than naive dense; time growth ≤ 2.2× per doubling from T=1024 (dense ≈ 4×)`);
  const dg = growthPerDoubling(rows, 'dense');
  const ng = growthPerDoubling(rows, 'naive');
  if (dg || ng) say(`  reference growth per doubling: ${[ng && `naive ${ng.mean.toFixed(2)}×`, dg && `dense ${dg.mean.toFixed(2)}×`].filter(Boolean).join(', ')}`);
  for (const c of checks) {
    const mem = c.memoryRatio === null ? `memory ✗ (${c.memoryNote})` : `memory ${c.memoryOk ? '✓' : '✗'} ${c.memoryRatio.toFixed(1)}× less (${c.memoryNote})`;
    const time = c.growth === null ? 'time ✗ (fewer than two sizes ≥ 1024)' : `time ${c.timeOk ? '✓' : '✗'} ${c.growth.toFixed(2)}× per doubling (worst ${c.worstGrowth!.toFixed(2)}×)`;
    say(`  ${pad(c.variant, 10)} ${mem}; ${time}`);
  }
  if (out !== undefined) {
    await mkdir(out, { recursive: true });
    const p = plotsOf(rows);
    await writeFile(join(out, 'attention-time.svg'), p.time);
    await writeFile(join(out, 'attention-memory.svg'), p.memory);
    await writeFile(join(out, 'attention.json'), JSON.stringify({ backend: backend.name, B, C, H, D: C / H, max_s: maxS, rows, targets: checks }, null, 2) + '\n');
    say(`wrote ${join(out, 'attention-time.svg')}, ${join(out, 'attention-memory.svg')} and ${join(out, 'attention.json')}`);
  }
}
