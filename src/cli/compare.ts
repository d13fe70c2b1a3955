// attn compare: trains the same small GPT on Tiny Shakespeare once per attention variant (and a
// mixture-of-experts model) under the same token budget, and reports validation loss, tokens/s
// and peak memory side by side (a table, DIR/compare.json and DIR/compare.svg).
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { prepareDataset } from '../data/index.js';
import { openDevice, type DeviceName } from '../backend/index.js';
import { CharTokenizer } from '../tokenizers/index.js';
import { train, trainConfig, TRAIN_DEFAULTS, type TrainConfig } from '../tasks/lm.js';
import { formatBytes, linePlotSvg } from '../eval/plot.js';
import type { Module } from '../nn/module.js';
import { type Flags, UsageError } from './args.js';
import { trackPeak } from './bench-attention.js';
import { ProgressBar, formatRate } from './progress.js';
import { bundledShakespeare } from './train.js';

export const COMPARE_VARIANTS = ['dense', 'local', 'strided', 'fixed', 'linear', 'linformer', 'performer', 'moe'] as const;

export interface CompareRow {
  variant: string;
  /** Why it did not run (then the numbers are null). */
  skipped?: string;
  val_loss: number | null;
  best_val_loss: number | null;
  train_loss: number | null;
  tokens_per_s: number | null;
  tokens: number;
  params: number | null;
  /** Parameters a token passes through (MoE: only top-k experts count). */
  active_params: number | null;
  /** Peak backend bytes in use above the start of the run (weights, optimizer state, activations). */
  peak_heap_bytes: number | null;
  /** Largest process RSS seen during the run (process-wide: the wasm heap only grows). */
  peak_rss_bytes: number | null;
  seconds: number | null;
  /** [step, val_loss] at each evaluation. */
  val_curve: [number, number][];
}

const has = (k: string): boolean => Object.hasOwn(TRAIN_DEFAULTS, k);
const firstKnown = (names: readonly string[]): string | undefined => names.find(has);

/** The extra TrainConfig fields a variant needs, or why it cannot be trained. */
export function variantFields(variant: string, n_embd: number): Record<string, unknown> | string {
  if (variant === 'moe') {
    const experts = firstKnown(['n_experts', 'n_expert', 'moe_experts', 'num_experts', 'moe_num_experts']);
    const topk = firstKnown(['moe_top_k', 'n_experts_per_tok', 'experts_per_token', 'n_active_experts', 'moe_k', 'top_k_experts', 'expert_top_k']);
    if (!experts || !topk) return 'not available (the training config has no mixture-of-experts fields)';
    const fields: Record<string, unknown> = { [experts]: 8, [topk]: 2 };
    // Active parameters equal the dense model's: each of the 2 active experts is half as wide as the dense MLP (4C / 2).
    const hidden = firstKnown(['moe_hidden', 'expert_hidden', 'moe_expert_hidden', 'moe_d_ff', 'expert_d_ff', 'moe_hidden_size', 'moe_ffn_hidden']);
    const mult = firstKnown(['moe_expert_mult', 'expert_mult', 'moe_mult']);
    // Without a sizing field, MoE's default expert width (dense width / top-k) already matches.
    if (hidden) fields[hidden] = (4 * n_embd) / 2;
    else if (mult) fields[mult] = 2;
    return fields;
  }
  if (!has('attention')) return variant === 'dense' ? {} : 'not available (the training config has no attention field)';
  return { attention: variant };
}

/** Total minus the experts a token skips, for every module shaped like an MoE layer (duck-typed). */
function activeParams(model: Module, total: number): number {
  let skipped = 0;
  for (const [, m] of model.namedModules()) {
    const moe = m as unknown as { numExperts?: unknown; topK?: unknown; experts?: { at?(i: number): Module } };
    if (typeof moe.numExperts === 'number' && typeof moe.topK === 'number' && typeof moe.experts?.at === 'function') {
      skipped += (moe.numExperts - moe.topK) * moe.experts.at(0).numParameters();
    }
  }
  return total - skipped;
}

async function ensureShakespeare(dir: string, say: (s: string) => void): Promise<void> {
  if (existsSync(join(dir, 'meta.json'))) return;
  const src = bundledShakespeare();
  if (!existsSync(src)) throw new UsageError(`compare: dataset ${dir} not found; run 'attn prepare' or pass --data`);
  const text = await readFile(src, 'utf8');
  say(`preparing Tiny Shakespeare (character level) into ${dir}`);
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: dir });
}

function num(v: number | null, digits: number): string {
  return v === null ? '-' : v.toFixed(digits);
}

export function compareSvg(rows: readonly CompareRow[], title: string): string {
  const series = rows.filter((r) => r.val_curve.length).map((r) => ({ name: r.variant, points: r.val_curve }));
  return linePlotSvg(series, { title, xLabel: 'step', yLabel: 'validation loss' });
}

export async function runCompare(f: Flags): Promise<void> {
  const list = f.string('variants');
  const variants = list ? list.split(',').map((s) => s.trim()).filter(Boolean) : [...COMPARE_VARIANTS];
  for (const v of variants) {
    if (!(COMPARE_VARIANTS as readonly string[]).includes(v)) throw new UsageError(`compare: unknown variant '${v}' (known: ${COMPARE_VARIANTS.join(', ')})`);
  }
  const out = f.string('out') ?? 'out/compare';
  const dataset = f.string('data') ?? 'data/shakespeare_char';
  const int = (k: string, d: number, min = 1): number => f.number(k, { integer: true, min }) ?? d;
  const max_iters = int('max_iters', 200);
  const base: Partial<TrainConfig> = {
    dataset,
    max_iters,
    batch_size: int('batch_size', 8),
    block_size: int('block_size', 128),
    n_layer: int('n_layer', 2),
    n_embd: int('n_embd', 64),
    n_head: int('n_head', 4),
    eval_interval: int('eval_interval', Math.max(1, Math.floor(max_iters / 5))),
    eval_iters: int('eval_iters', 10),
    learning_rate: f.number('learning_rate', { min: 0 }) ?? 1e-3,
    warmup_iters: Math.min(int('warmup_iters', 20, 0), max_iters),
    lr_decay_iters: Math.max(max_iters, 1),
    min_lr: 1e-4,
    beta2: 0.99,
    dropout: 0,
    always_save_checkpoint: false,
    device: (f.string('device') ?? 'cpu') as TrainConfig['device'],
    threads: int('threads', 0, 0),
    seed: int('seed', 1337, 0),
  };
  // Sparse patterns scaled to the context, so local/strided/fixed differ from dense at small T.
  const T = base.block_size!;
  const stride = Math.max(2, 2 ** Math.round(Math.log2(Math.sqrt(T))));
  const attnDefaults: Record<string, number> = { attn_window: Math.max(1, Math.floor(T / 4)), attn_stride: stride, attn_summary: Math.max(1, Math.min(8, stride / 2)) };
  for (const k of ['attn_window', 'attn_stride', 'attn_summary', 'n_kv_head', 'performer_features', 'performer_redraw_interval', 'linformer_k']) {
    const v = f.number(k, { integer: true, min: 0 }) ?? attnDefaults[k];
    if (v !== undefined && has(k)) (base as Record<string, unknown>)[k] = v;
  }
  const json = f.bool('json');
  f.done();
  const say = (s: string) => process.stderr.write(`${s}\n`);
  // Validate the shared config once (bad sizes fail before any training).
  try {
    trainConfig({ ...base, out_dir: join(out, 'x') });
  } catch (e) {
    throw new UsageError(`compare: ${(e as Error).message.replace(/^TrainConfig: /, '')}`);
  }
  await ensureShakespeare(dataset, say);
  await mkdir(out, { recursive: true });
  const backend = await openDevice(base.device as DeviceName, { threads: base.threads! });
  const rows: CompareRow[] = [];
  for (const variant of variants) {
    const empty: CompareRow = { variant, val_loss: null, best_val_loss: null, train_loss: null, tokens_per_s: null, tokens: 0, params: null, active_params: null, peak_heap_bytes: null, peak_rss_bytes: null, seconds: null, val_curve: [] };
    const extra = variantFields(variant, base.n_embd!);
    if (typeof extra === 'string') {
      say(`${variant}: skipped: ${extra}`);
      rows.push({ ...empty, skipped: extra });
      continue;
    }
    let cfg: TrainConfig;
    try {
      cfg = trainConfig({ ...base, ...extra, out_dir: join(out, variant) });
    } catch (e) {
      const why = `not available (${(e as Error).message.replace(/^TrainConfig: /, '')})`;
      say(`${variant}: skipped: ${why}`);
      rows.push({ ...empty, skipped: why });
      continue;
    }
    const row = { ...empty };
    let stepMs = 0;
    let tokens = 0;
    let lastTrain = NaN;
    let rss = process.memoryUsage().rss;
    let bar: ProgressBar | null = null;
    const t0 = performance.now();
    const peak = trackPeak(backend);
    try {
      const result = await train(cfg, {
        onStart: (i) => {
          row.params = i.numParams;
          row.active_params = activeParams(i.model, i.numParams);
          say(`${variant}: ${(i.numParams / 1e6).toFixed(3)}M parameters, ${i.tokensPerIter} tokens per step, ${cfg.max_iters} steps -> ${cfg.out_dir}`);
          bar = new ProgressBar(cfg.max_iters, { label: variant, unit: 'tok/s' });
        },
        onLog: (m) => {
          stepMs += m.dt_ms;
          tokens = m.tokens;
          lastTrain = m.train_loss;
          rss = Math.max(rss, process.memoryUsage().rss);
        },
        onProgress: (step, _total, tps, loss) => (bar as ProgressBar | null)?.update(step, tps, `loss ${loss.toFixed(4)}`),
        onEval: (e) => {
          row.val_curve.push([e.step, e.val_loss]);
          (bar as ProgressBar | null)?.log(`${variant}: step ${e.step}: train loss ${e.train_loss.toFixed(4)}, val loss ${e.val_loss.toFixed(4)}`);
        },
      });
      (bar as ProgressBar | null)?.finish();
      row.val_loss = result.last_eval?.val_loss ?? null;
      row.best_val_loss = Number.isFinite(result.best_val_loss) ? result.best_val_loss : null;
    } catch (e) {
      (bar as ProgressBar | null)?.finish();
      const why = `failed: ${(e as Error).message}`;
      say(`${variant}: ${why}`);
      row.skipped = why;
    } finally {
      row.peak_heap_bytes = peak.stop();
    }
    row.train_loss = Number.isFinite(lastTrain) ? lastTrain : null;
    row.tokens = tokens;
    row.tokens_per_s = stepMs > 0 ? tokens / (stepMs / 1000) : null;
    row.peak_rss_bytes = Math.max(rss, process.memoryUsage().rss);
    row.seconds = (performance.now() - t0) / 1000;
    rows.push(row);
    if (json) console.log(JSON.stringify(row));
  }
  // The table.
  const head = ['variant', 'params', 'active', 'val loss', 'best val', 'train loss', 'tok/s', 'peak heap', 'peak RSS', 'time'];
  const cells = rows.map((r) =>
    r.skipped && r.val_loss === null
      ? [r.variant, r.skipped]
      : [r.variant, r.params === null ? '-' : `${(r.params / 1e6).toFixed(3)}M`, r.active_params === null ? '-' : `${(r.active_params / 1e6).toFixed(3)}M`, num(r.val_loss, 4), num(r.best_val_loss, 4), num(r.train_loss, 4), r.tokens_per_s === null ? '-' : formatRate(r.tokens_per_s),
        r.peak_heap_bytes === null ? '-' : formatBytes(r.peak_heap_bytes), r.peak_rss_bytes === null ? '-' : formatBytes(r.peak_rss_bytes), `${num(r.seconds, 1)} s`],
  );
  const widths = head.map((h, i) => Math.max(h.length, ...cells.filter((c) => c.length > 2).map((c) => c[i]!.length)));
  const line = (c: string[]) => (c.length === 2 ? `${c[0]!.padEnd(widths[0]!)}  ${c[1]}` : c.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  '));
  const print = json ? say : (s: string) => console.log(s);
  print(`same token budget: ${max_iters} steps × ${base.batch_size} × ${base.block_size} tokens; ${base.n_layer} layers, ${base.n_embd} wide, ${base.n_head} heads`);
  print(line(head));
  for (const c of cells) print(line(c));
  const title = `validation loss, Tiny Shakespeare (${base.n_layer}×${base.n_embd}, T=${base.block_size})`;
  await writeFile(join(out, 'compare.svg'), compareSvg(rows, title));
  await writeFile(join(out, 'compare.json'), JSON.stringify({ config: base, rows }, null, 2) + '\n');
  print(`wrote ${join(out, 'compare.svg')} and ${join(out, 'compare.json')}`);
}
