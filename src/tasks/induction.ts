// Attention-only language models for the induction-head probe (Olsson et al. 2022): a ProbeLM
// without MLPs trained as the lm task trains (next-token cross-entropy on a prepared dataset,
// Tiny Shakespeare characters by default), evaluated at every eval_interval with
//   - the validation loss at every context position and the in-context-learning score from it,
//   - each head's prefix-matching and previous-token scores on random tokens repeated twice,
//   - each head's copying score (its OV circuit read through the unembedding),
//   - the loss on the second repeat of the random tokens (what induction heads make small).
// The training loop (src/train/loop.ts) does the optimizer, schedule, checkpoints and metrics.
import { join } from 'node:path';
import { BatchSampler, rngStateFromJson, rngStateToJson, type Batch } from '../data/sampler.js';
import { loadDataset } from '../data/files.js';
import type { TensorEntry } from '../io/safetensors.js';
import { copyingScore, headScores, iclScore, iclWindows, repeatedRandomTokens } from '../eval/icl.js';
import { idsTensor, ProbeLM, type ProbeTransformerConfig } from '../models/probe-transformer.js';
import type { Module } from '../nn/module.js';
import { Generator, noGrad, tidy, type Tensor } from '../tensor/index.js';
import type { Task, TaskRun } from '../train/loop.js';

const seedFor = (seed: number, salt: number): number => (seed ^ salt) >>> 0;

/** The ProbeLM config a training config describes (attention-only). */
export function attnOnlyConfig(cfg: { n_layer: number; n_head: number; n_embd: number; block_size: number }, vocab_size: number): ProbeTransformerConfig & { vocab_size: number } {
  return { n_layer: cfg.n_layer, n_head: cfg.n_head, n_embd: cfg.n_embd, block_size: cfg.block_size, mlp: false, vocab_size };
}

/** A module's tensors for a checkpoint, by their state-dict names (no layout changes). */
export function moduleTensors(model: Module): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of model.stateDict()) out.set(name, { dtype: 'F32', shape: [...t.shape], data: t.data() });
  return out;
}

/** What one probe of an attention-only model measured. */
export interface InductionProbe {
  /** Mean validation loss at each target position 0 .. T-1. */
  lossByPosition: number[];
  icl_score: number;
  /** Per layer, per head. */
  prefixMatching: number[][];
  previousToken: number[][];
  copying: number[][];
  /** Mean loss on the first and on the second copy of the repeated random tokens. */
  repeatLoss: [number, number];
}

/** The logit effect of each head's OV circuit, M_h = LN(W_E) W_V^h W_O^h diag(g_f) W_U (V × V). */
export function ovCircuits(model: ProbeLM, layer: number): Float64Array[] {
  const { n_embd: C, n_head: H, vocab_size: V } = model.cfg;
  const D = C / H;
  const E = model.wte.weight.data(); // (V, C)
  const blk = model.body.h.at(layer);
  const g1 = blk.ln_1.weight.data();
  const Wqkv = blk.attn.c_attn.weight.data(); // (3C, C): out × in
  const Wo = blk.attn.c_proj.weight.data(); // (C, C)
  const gf = model.body.ln_f.weight.data();
  const U = model.lm_head.weight.data(); // (V, C)
  // LayerNorm of each embedding row (what the head reads of a token at its own position).
  const En = new Float64Array(V * C);
  for (let t = 0; t < V; t++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += E[t * C + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (E[t * C + c]! - m) ** 2;
    const r = 1 / Math.sqrt(v / C + 1e-5);
    for (let c = 0; c < C; c++) En[t * C + c] = (E[t * C + c]! - m) * r * g1[c]!;
  }
  const out: Float64Array[] = [];
  for (let h = 0; h < H; h++) {
    const M = new Float64Array(V * V);
    const vh = new Float64Array(D);
    const o = new Float64Array(C);
    for (let t = 0; t < V; t++) {
      for (let d = 0; d < D; d++) {
        let s = 0;
        const row = (2 * C + h * D + d) * C;
        for (let c = 0; c < C; c++) s += En[t * C + c]! * Wqkv[row + c]!;
        vh[d] = s;
      }
      for (let c = 0; c < C; c++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += Wo[c * C + h * D + d]! * vh[d]!;
        o[c] = s * gf[c]!;
      }
      for (let u = 0; u < V; u++) {
        let s = 0;
        for (let c = 0; c < C; c++) s += U[u * C + c]! * o[c]!;
        M[t * V + u] = s;
      }
    }
    out.push(M);
  }
  return out;
}

/**
 * Probes an attention-only model: per-position validation loss over `batches` (B × T each), head
 * scores on `repeatRows` rows of `repeatLength` random tokens repeated twice.
 */
export function probeInduction(model: ProbeLM, batches: readonly Batch[], opts: { repeatLength: number; repeatRows: number; seed: number; allowed?: readonly number[] }): InductionProbe {
  const backend = model.wte.weight.backend;
  const wasTraining = model.training;
  model.eval();
  try {
    const T = batches[0]!.blockSize;
    const sums = new Float64Array(T);
    let rows = 0;
    for (const b of batches) {
      const l = tidy(() => model.tokenLosses(idsTensor(b.x, b.batchSize, T, backend), idsTensor(b.y, b.batchSize, T, backend)).data());
      for (let r = 0; r < b.batchSize; r++) for (let t = 0; t < T; t++) sums[t]! += l[r * T + t]!;
      rows += b.batchSize;
    }
    const lossByPosition = Array.from(sums, (s) => s / rows);
    const { n_layer: L, n_head: H, vocab_size: V } = model.cfg;
    const n = opts.repeatLength;
    const R = opts.repeatRows;
    const toks = repeatedRandomTokens(new Generator(opts.seed), V, n, R, opts.allowed);
    const T2 = 2 * n;
    const prefixMatching: number[][] = [];
    const previousToken: number[][] = [];
    let repeatLoss: [number, number] = [NaN, NaN];
    noGrad(() => tidy(() => {
      const patterns: Tensor[] = [];
      // Inputs are the first 2n−1 tokens; targets the next ones (target i is token i+1).
      const x = new Int32Array(R * (T2 - 1));
      const y = new Int32Array(R * (T2 - 1));
      for (let r = 0; r < R; r++) for (let i = 0; i < T2 - 1; i++) {
        x[r * (T2 - 1) + i] = toks[r * T2 + i]!;
        y[r * (T2 - 1) + i] = toks[r * T2 + i + 1]!;
      }
      const xt = idsTensor(x, R, T2 - 1, backend);
      const { logits } = model.forward(xt, undefined, patterns);
      const ce = model.tokenLosses(xt, idsTensor(y, R, T2 - 1, backend)).data();
      // Targets 0 .. n-2 lie in the first copy (unpredictable); targets n .. 2n-2 in the second.
      let a = 0;
      let bsum = 0;
      for (let r = 0; r < R; r++) for (let i = 0; i < T2 - 1; i++) {
        if (i < n - 1) a += ce[r * (T2 - 1) + i]!;
        else if (i >= n) bsum += ce[r * (T2 - 1) + i]!;
      }
      repeatLoss = [a / (R * (n - 1)), bsum / (R * (n - 1))];
      logits.dispose();
      const xs = x;
      for (const p of patterns) {
        const s = headScores(p.data(), xs, R, H, T2 - 1, n);
        prefixMatching.push(s.prefixMatching);
        previousToken.push(s.previousToken);
      }
    }));
    const copying = Array.from({ length: L }, (_, l) => ovCircuits(model, l).map((M) => copyingScore(M, V)));
    return { lossByPosition, icl_score: iclScore(lossByPosition, iclWindows(T)), prefixMatching, previousToken, copying, repeatLoss };
  } finally {
    model.train(wasTraining);
  }
}

/** The flat metrics record of a probe (pm_l1h0, prev_l0h2, copy_l1h0, ...). */
export function probeRecord(p: InductionProbe): Record<string, number> {
  const r: Record<string, number> = { icl_score: p.icl_score, repeat_loss_first: p.repeatLoss[0], repeat_loss_second: p.repeatLoss[1] };
  p.prefixMatching.forEach((hs, l) => hs.forEach((v, h) => (r[`pm_l${l}h${h}`] = v)));
  p.previousToken.forEach((hs, l) => hs.forEach((v, h) => (r[`prev_l${l}h${h}`] = v)));
  p.copying.forEach((hs, l) => hs.forEach((v, h) => (r[`copy_l${l}h${h}`] = v)));
  r['max_prefix_matching'] = Math.max(...p.prefixMatching.flat());
  r['max_previous_token'] = Math.max(...p.previousToken.flat());
  return r;
}

export interface InductionTaskOptions {
  /** Random tokens per copy in the repeated sequences (default min(50, frequent tokens − 1, (block_size + 1) / 2)). */
  repeatLength?: number;
  repeatRows?: number;
  /**
   * Share of training rows replaced by a random segment of frequent tokens repeated periodically
   * (period drawn from 8 .. 48, distinct tokens within a period): text in which copying from
   * earlier in the context always pays, so induction heads form within a CPU budget (default 0:
   * the dataset only).
   */
  repeatFraction?: number;
  /** Called with every evaluation's probe (the CLI keeps the curves and plots). */
  onProbe?(step: number, probe: InductionProbe): void;
}

/** The attention-only LM task (field vocabulary of the lm task; the model is always attention-only). */
export function inductionTask(opts: InductionTaskOptions = {}): Task<Batch> {
  return {
    task: 'lm',
    defaults: { n_layer: 2, n_head: 4, n_embd: 64, block_size: 256, batch_size: 16, learning_rate: 1e-3, weight_decay: 0.0, eval_iters: 8, eval_interval: 100, max_iters: 2000, dropout: 0 },
    archFields: ['n_layer', 'n_head', 'n_embd', 'block_size'],
    best: { metric: 'val_loss', higher: false },
    evalAtStart: true,
    title: (cfg) => `attention-only, ${cfg.n_layer} layer${cfg.n_layer > 1 ? 's' : ''}`,
    async open(cfg, ctx): Promise<TaskRun<Batch>> {
      const data = await loadDataset(cfg.dataset);
      for (const [split, ids] of [['train', data.train], ['val', data.val]] as const) {
        if (ids.length <= cfg.block_size) throw new Error(`the ${split} split of ${data.dir} has ${ids.length} tokens, too few for block_size ${cfg.block_size}`);
      }
      const V = data.meta.vocab_size;
      const model = new ProbeLM(attnOnlyConfig(cfg, V), { backend: ctx.backend, seed: cfg.seed, init: !ctx.resume });
      if (ctx.resume) model.loadStateDict(new Map([...ctx.resume.tensors].map(([k, e]) => [k, { shape: e.shape, data: e.data }])));
      const o = { batchSize: cfg.batch_size, blockSize: cfg.block_size };
      const train = new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x2545f491) });
      // The same validation batches at every evaluation, so the curves over training are comparable.
      const valBatches = (() => {
        const s = new BatchSampler(data.val, { ...o, seed: seedFor(cfg.seed, 0x7f4a7c15) });
        return Array.from({ length: cfg.eval_iters }, () => s.next());
      })();
      // Random tokens come from those at least 0.1 % of the training text: rare characters (digits,
      // '$', '&') are barely trained, and sequences of them probe the embeddings more than the heads.
      const counts = new Float64Array(V);
      for (let i = 0; i < data.train.length; i++) counts[data.train[i]!]!++;
      const allowed = [...counts.keys()].filter((t) => counts[t]! >= 1e-3 * data.train.length);
      const repeatLength = opts.repeatLength ?? Math.min(50, allowed.length - 1, Math.floor((cfg.block_size + 1) / 2));
      if (repeatLength < 2) throw new Error(`too few frequent tokens (${allowed.length}) for the repeated-token probe`);
      if (2 * repeatLength - 1 > cfg.block_size) throw new Error(`repeat length ${repeatLength} needs block_size ≥ ${2 * repeatLength - 1}, got ${cfg.block_size}`);
      const mix = opts.repeatFraction ?? 0;
      if (!(mix >= 0 && mix <= 1)) throw new Error(`repeat fraction must be in [0, 1], got ${mix}`);
      const mixGen = new Generator(seedFor(cfg.seed, 0x3c6ef372));
      const nextBatch = (): Batch => {
        const b = train.next();
        if (mix === 0) return b;
        const T = b.blockSize;
        for (let r = 0; r < b.batchSize; r++) {
          if (mixGen.random() >= mix) continue;
          const period = Math.min(allowed.length, 8 + mixGen.randint(41));
          const seg = repeatedRandomTokens(mixGen, V, period, 1, allowed).subarray(0, period);
          for (let t = 0; t < T; t++) {
            b.x[r * T + t] = seg[t % period]!;
            b.y[r * T + t] = seg[(t + 1) % period]!;
          }
        }
        return b;
      };
      model.train();
      return {
        model,
        info: { modelConfig: model.cfg, tokensPerIter: cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size },
        nextBatch,
        sizeOf: (b) => b.batchSize * b.blockSize,
        loss(b) {
          const x = idsTensor(b.x, b.batchSize, b.blockSize, ctx.backend);
          const y = idsTensor(b.y, b.batchSize, b.blockSize, ctx.backend);
          return { loss: model.forward(x, y).loss! };
        },
        evaluate(step) {
          const p = probeInduction(model, valBatches, { repeatLength, repeatRows: opts.repeatRows ?? 16, seed: seedFor(cfg.seed, 0x51ed270b), allowed });
          opts.onProbe?.(step, p);
          const val = p.lossByPosition.reduce((s, v) => s + v, 0) / p.lossByPosition.length;
          return { val_loss: val, ...probeRecord(p) };
        },
        checkpoint: () => ({ config: { attn_checkpoint: 'attn_probe_lm', ...model.cfg }, model: moduleTensors(model) }),
        state: () => ({ samplers: { train: train.state() }, repeat_mix: rngStateToJson(mixGen) }),
        setState(s) {
          const sm = s['samplers'] as { train?: never } | undefined;
          if (!sm?.train) throw new Error(`'samplers' must hold the train sampler's state (${join(cfg.out_dir, 'last')})`);
          train.setState(sm.train);
          if (s['repeat_mix'] !== undefined) rngStateFromJson(mixGen, s['repeat_mix'], "trainer_state 'repeat_mix'");
        },
      };
    },
  };
}
