// What the alignment tasks (sft, reward, dpo, ppo) share: loading a causal model with its
// tokenizer and chat template, reading chat and preference JSONL, turning a prompt and a response
// into token ids with the prompt masked out of the loss, packing examples into rows, padding
// batches, an epoch sampler whose position is saved for exact resume, and checkpoints with LoRA
// adapters folded in.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { chatTemplateOf, renderChat, type ChatMessage, type ChatTemplate } from '../generate/chat.js';
import { CheckpointError } from '../io/checkpoint.js';
import type { TensorEntry } from '../io/safetensors.js';
import { checkpointConfigJson, CONV1D, modelToCheckpointTensors } from '../models/checkpoint-format.js';
import { DecoderLM } from '../models/decoder.js';
import { loadGPTCheckpoint } from '../models/gpt-checkpoint.js';
import { GPT } from '../models/gpt.js';
import { loadDecoderDir, readHFConfig } from '../models/hf-decoder-files.js';
import { decoderConfigToHF, decoderFamilyOf } from '../models/hf-decoder.js';
import type { Segments } from '../nn/attention.js';
import { applyLora, type LoraHandle } from '../nn/lora.js';
import { matmul, mul, noGrad, tensor, tidy, Generator, type Tensor } from '../tensor/index.js';
import { BpeTokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { IGNORE, sequenceLogProbs } from '../train/alignment.js';
import { selectToken } from '../generate/index.js';
import { linePlotSvg, type MetricsRecord, type PlotSeries } from '../eval/plot.js';
import type { TrainingConfig } from '../train/config.js';

export type CausalLM = GPT | DecoderLM;

export interface LoadedPolicy {
  model: CausalLM;
  tokenizer: Tokenizer;
  /** The tokenizer files to copy into every checkpoint (tokenizer_config.json included). */
  tokenizerFiles: Record<string, string>;
  /** The model's chat template, or attn's plain one when it has none. */
  template: ChatTemplate;
  /** Where the template came from. */
  templateFrom: 'model' | 'plain';
  /** config.json of a Hugging Face decoder (kept when saving). */
  hfConfig: Record<string, unknown> | null;
  eos: number | undefined;
}

/**
 * A role-tagged plain-text template for models without one (attn's own GPTs): each message is
 * "<role>: <content>" on its own lines, the assistant's ending with the end-of-text token.
 */
export const PLAIN_CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";

/** A GPT checkpoint (attn train) or a Hugging Face decoder directory, its tokenizer and template. */
export async function loadPolicy(dir: string, backend: Backend, what = 'init_from'): Promise<LoadedPolicy> {
  if (!existsSync(join(dir, 'config.json'))) throw new Error(`${what} ${dir}: not a model directory (no config.json)`);
  const hf = await readHFConfig(dir);
  let model: CausalLM;
  let hfConfig: Record<string, unknown> | null = null;
  if (decoderFamilyOf(hf) !== null) {
    const d = await loadDecoderDir(dir, { backend });
    model = d.model;
    hfConfig = d.hfConfig;
  } else {
    model = (await loadGPTCheckpoint(dir, { backend })).model;
  }
  let tokenizer: Tokenizer;
  try {
    tokenizer = await loadTokenizer(dir);
  } catch (e) {
    model.dispose();
    throw new CheckpointError(dir, `no tokenizer to read the data with (${(e as Error).message})`);
  }
  const configPath = join(dir, 'tokenizer_config.json');
  const tokConfig = existsSync(configPath) ? JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown> : {};
  const jinjaPath = join(dir, 'chat_template.jinja');
  const jinja = existsSync(jinjaPath) ? await readFile(jinjaPath, 'utf8') : undefined;
  const eos = model instanceof DecoderLM ? model.eosTokenIds[0] ?? tokenizer.eotToken : tokenizer.eotToken;
  const own = chatTemplateOf(tokConfig, jinja);
  const template = own ?? { source: PLAIN_CHAT_TEMPLATE, bosToken: null, eosToken: eos !== undefined ? tokenizer.decode([eos]) : null };
  const tokenizerFiles = { ...tokenizer.toFiles() };
  if (Object.keys(tokConfig).length && !tokenizerFiles['tokenizer_config.json']) tokenizerFiles['tokenizer_config.json'] = JSON.stringify(tokConfig, null, 2);
  if (jinja !== undefined) tokenizerFiles['chat_template.jinja'] = jinja;
  return { model, tokenizer, tokenizerFiles, template, templateFrom: own ? 'model' : 'plain', hfConfig, eos };
}

/** Text → ids, with special-token text allowed (a rendered chat holds its template's tokens). */
export function encodeText(tok: Tokenizer, text: string): number[] {
  return tok instanceof BpeTokenizer ? tok.encode(text, { disallowedSpecial: [] }) : tok.encode(text);
}

/** A tokenized example: ids and, per id, whether it is scored (a response token). */
export interface Example {
  ids: number[];
  scored: boolean[];
}

/**
 * A conversation as ids, scored only on the assistant's turns: each assistant message is the part
 * its rendering adds after the rendering of the messages before it with the generation prompt
 * (the template's assistant header stays unscored). Pieces are tokenized one by one, so the
 * boundary between prompt and response never falls inside a token.
 */
export function renderConversation(template: ChatTemplate, tok: Tokenizer, messages: readonly ChatMessage[]): Example {
  const ids: number[] = [];
  const scored: boolean[] = [];
  let done = '';
  const push = (text: string, score: boolean): void => {
    for (const id of encodeText(tok, text)) {
      ids.push(id);
      scored.push(score);
    }
  };
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const before = renderChat(template, messages.slice(0, i), { addGenerationPrompt: true });
    const after = renderChat(template, messages.slice(0, i + 1), { addGenerationPrompt: false });
    if (!before.startsWith(done) || !after.startsWith(before)) throw new Error(`chat template: the rendering of message ${i + 1} does not extend the rendering before it, so the assistant's tokens cannot be told apart`);
    push(before.slice(done.length), false);
    push(after.slice(before.length), true);
    done = after;
  });
  const all = renderChat(template, messages, { addGenerationPrompt: false });
  if (!all.startsWith(done)) throw new Error('chat template: the whole conversation does not extend its rendered assistant turns');
  push(all.slice(done.length), false);
  return { ids, scored };
}

/** A prompt (text, or chat messages rendered with the generation prompt) and a response. */
export function promptResponse(template: ChatTemplate, tok: Tokenizer, prompt: string | readonly ChatMessage[], response: string, eos?: number): Example {
  const p = typeof prompt === 'string' ? prompt : renderChat(template, prompt, { addGenerationPrompt: true });
  const pi = encodeText(tok, p);
  const ri = encodeText(tok, response);
  if (eos !== undefined) ri.push(eos);
  return { ids: [...pi, ...ri], scored: [...pi.map(() => false), ...ri.map(() => true)] };
}

/**
 * Inputs and targets of an example of at most block + 1 ids: x = ids[0 .. n-1), y = ids[1 .. n)
 * where scored, else IGNORE. Longer examples keep their first block + 1 ids.
 */
export function shiftExample(e: Example, block: number): { x: number[]; y: number[] } {
  const n = Math.min(e.ids.length, block + 1);
  const x = e.ids.slice(0, n - 1);
  const y = e.ids.slice(1, n).map((id, t) => (e.scored[t + 1] ? id : IGNORE));
  return { x, y };
}

/** A batch of rows: x and y int32 (B, T) flat, and for packed rows the segments of each. */
export interface RowBatch {
  x: Int32Array;
  y: Int32Array;
  B: number;
  T: number;
  segments?: number[][];
}

/** Rows right-padded to the longest (x 0, y IGNORE): padding after a causal row changes nothing before it. */
export function padRows(rows: readonly { x: number[]; y: number[] }[]): RowBatch {
  const B = rows.length;
  const T = Math.max(1, ...rows.map((r) => r.x.length));
  const x = new Int32Array(B * T);
  const y = new Int32Array(B * T).fill(IGNORE);
  rows.forEach((r, b) => {
    x.set(r.x, b * T);
    y.set(r.y, b * T);
  });
  return { x, y, B, T };
}

/** A packed row: examples laid end to end (first fit, in order), the rest padding. */
export interface PackedRow {
  x: number[];
  y: number[];
  /** Lengths of the examples in the row, then the padding's (when any). */
  segments: number[];
}

/**
 * Packs shifted examples into rows of `block` tokens, each example whole in one row (first fit
 * over the rows opened so far, in order), padding the remainder as its own segment.
 */
export function packExamples(examples: readonly { x: number[]; y: number[] }[], block: number): PackedRow[] {
  const rows: PackedRow[] = [];
  for (const e of examples) {
    if (e.x.length === 0) continue;
    if (e.x.length > block) throw new Error(`packExamples: an example of ${e.x.length} tokens exceeds the block of ${block}`);
    let row = rows.find((r) => r.x.length + e.x.length <= block);
    if (!row) rows.push((row = { x: [], y: [], segments: [] }));
    row.x.push(...e.x);
    row.y.push(...e.y);
    row.segments.push(e.x.length);
  }
  for (const r of rows) {
    const pad = block - r.x.length;
    if (pad > 0) {
      r.x.push(...new Array<number>(pad).fill(0));
      r.y.push(...new Array<number>(pad).fill(IGNORE));
      r.segments.push(pad);
    }
  }
  return rows;
}

export function packedBatch(rows: readonly PackedRow[], block: number): RowBatch {
  const B = rows.length;
  const x = new Int32Array(B * block);
  const y = new Int32Array(B * block);
  rows.forEach((r, b) => {
    x.set(r.x, b * block);
    y.set(r.y, b * block);
  });
  return { x, y, B, T: block, segments: rows.map((r) => [...r.segments]) };
}

export function batchTensors(b: RowBatch, backend: Backend): { x: Tensor; y: Tensor } {
  return {
    x: tensor(b.x, { shape: [b.B, b.T], dtype: 'int32', backend }),
    y: tensor(b.y, { shape: [b.B, b.T], dtype: 'int32', backend }),
  };
}

/** Logits of a causal model; packed rows (segments) need attn's GPT. */
export function logitsOf(model: CausalLM, x: Tensor, segments?: Segments): Tensor {
  if (segments && !(model instanceof GPT)) throw new Error('packed rows (pack true) need an attn GPT; pass --pack false for a Hugging Face decoder');
  return model instanceof GPT ? model.forward(x, undefined, { segments }).logits : model.forward(x).logits;
}

/**
 * Visits 0 .. n-1 in a fresh seeded order each epoch; its state (epoch, position) is all that
 * exact resume needs, the order being a function of the seed and the epoch.
 */
export class EpochSampler {
  epoch = 0;
  pos = 0;
  private order: number[];
  constructor(readonly n: number, readonly seed: number) {
    if (n < 1) throw new Error('EpochSampler: nothing to sample');
    this.order = this.orderOf(0);
  }
  private orderOf(epoch: number): number[] {
    const g = new Generator((this.seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0);
    const o = Array.from({ length: this.n }, (_, i) => i);
    for (let i = this.n - 1; i > 0; i--) {
      const j = g.randint(i + 1);
      [o[i], o[j]] = [o[j]!, o[i]!];
    }
    return o;
  }
  take(k: number): number[] {
    const out: number[] = [];
    while (out.length < k) {
      if (this.pos >= this.n) {
        this.epoch++;
        this.pos = 0;
        this.order = this.orderOf(this.epoch);
      }
      out.push(this.order[this.pos++]!);
    }
    return out;
  }
  state(): { epoch: number; pos: number } {
    return { epoch: this.epoch, pos: this.pos };
  }
  setState(s: unknown): void {
    const st = s as { epoch?: unknown; pos?: unknown } | undefined;
    if (!st || !Number.isInteger(st.epoch) || !Number.isInteger(st.pos)) throw new Error('sampler state must hold integer epoch and pos');
    this.epoch = st.epoch as number;
    this.pos = st.pos as number;
    this.order = this.orderOf(this.epoch);
  }
}

/** Reads JSONL objects, naming the file and line of a bad one. */
export async function readJsonl(file: string): Promise<{ line: number; value: Record<string, unknown> }[]> {
  const raw = await readFile(file, 'utf8');
  const out: { line: number; value: Record<string, unknown> }[] = [];
  raw.split('\n').forEach((text, i) => {
    if (text.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: not JSON (${(e as Error).message})`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${file}:${i + 1}: each line must be a JSON object`);
    out.push({ line: i + 1, value: v as Record<string, unknown> });
  });
  if (out.length === 0) throw new Error(`${file}: no examples`);
  return out;
}

/** A messages array as chat messages, or an error naming where. */
export function messagesOf(v: unknown, where: string): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw new Error(`${where}: "messages" must be a non-empty array of {"role", "content"}`);
  return v.map((m, i) => {
    const r = m as { role?: unknown; content?: unknown };
    if (typeof r?.role !== 'string' || typeof r.content !== 'string') throw new Error(`${where}: message ${i + 1} needs string "role" and "content"`);
    return { role: r.role, content: r.content };
  });
}

/** A preference pair: a prompt (text or messages) and a chosen and a rejected response. */
export interface PreferencePair {
  prompt: string | ChatMessage[];
  chosen: string;
  rejected: string;
}

export async function readPreferencePairs(file: string): Promise<PreferencePair[]> {
  return (await readJsonl(file)).map(({ line, value }) => {
    const where = `${file}:${line}`;
    const p = value['prompt'];
    const prompt = typeof p === 'string' ? p : messagesOf(p, where);
    const { chosen, rejected } = value;
    if (typeof chosen !== 'string' || typeof rejected !== 'string') throw new Error(`${where}: each line needs "prompt", "chosen" and "rejected" (strings; prompt may be messages)`);
    return { prompt, chosen, rejected };
  });
}

/** The last tenth of a list (at least one, and at least one left to train on) is held out. */
export function holdOut<T>(items: readonly T[], what: string): { train: T[]; val: T[] } {
  if (items.length < 2) throw new Error(`${what}: needs at least 2 examples (one to train on, one held out), got ${items.length}`);
  const nVal = Math.max(1, Math.floor(items.length / 10));
  return { train: items.slice(0, items.length - nVal), val: items.slice(items.length - nVal) };
}

/** Checkpoint tensors of a causal model, LoRA adapters folded into their weights (not in place). */
export function policyTensors(model: CausalLM, lora: LoraHandle | null): Map<string, TensorEntry> {
  const all = modelToCheckpointTensors(model);
  for (const k of [...all.keys()]) if (/\.lora_[AB]$/.test(k)) all.delete(k);
  if (lora?.isActive) {
    for (const l of lora.layers) {
      const key = `${l.name}.weight`;
      const e = all.get(key);
      if (!e) continue;
      const w = l.module.weight;
      const delta = noGrad(() => tidy(() => mul(matmul(l.B, l.A), lora.scale).data())); // (out, in)
      const [o, i] = w.shape as [number, number];
      // GPT-2's Conv1D weights are saved transposed, (in, out).
      const transposed = model instanceof GPT && CONV1D.test(key);
      const data = Float32Array.from(e.data as ArrayLike<number>);
      for (let r = 0; r < o; r++) for (let c = 0; c < i; c++) data[transposed ? c * o + r : r * i + c]! += delta[r * i + c]!;
      all.set(key, { ...e, data });
    }
  }
  return all;
}

/** config.json of a policy checkpoint (a GPT's, or the decoder's Hugging Face config). */
export function policyConfig(model: CausalLM, hfConfig: Record<string, unknown> | null): Record<string, unknown> {
  return model instanceof GPT ? checkpointConfigJson(model.config) as Record<string, unknown> : { ...decoderConfigToHF(model.config, hfConfig ?? {}), torch_dtype: 'float32' };
}

/** LoRA adapters on a policy per cfg (lora_rank > 0), or null. attn GPTs take c_attn when
 *  lora_target is left at the decoder default. */
export function policyLora(model: CausalLM, cfg: TrainingConfig, say: (s: string) => void): LoraHandle | null {
  if (cfg.lora_rank <= 0) return null;
  let targets = cfg.lora_target.split(',').map((t) => t.trim()).filter((t) => t);
  if (model instanceof GPT && cfg.lora_target === 'q_proj,v_proj') targets = ['c_attn'];
  const handle = applyLora(model, { rank: cfg.lora_rank, alpha: cfg.lora_alpha > 0 ? cfg.lora_alpha : cfg.lora_rank, targets, dropout: cfg.lora_dropout, seed: cfg.seed });
  say(`LoRA rank ${cfg.lora_rank} on ${handle.layers.length} layers (${targets.join(', ')}); ${handle.summary()}; checkpoints hold the adapters folded in`);
  return handle;
}

/** Problems every alignment task shares (checked with the config). */
export function alignmentProblems(task: string, cfg: TrainingConfig, problems: string[], needsData = true): void {
  if (cfg.init_from === 'scratch') problems.push(`${task} starts from a trained model: pass --init_from DIR (an attn GPT checkpoint or a Hugging Face decoder)`);
  if (needsData && cfg.data === '') problems.push(`${task} needs --data FILE (JSONL)`);
  if (cfg.init_from === 'resume' && cfg.lora_rank > 0) problems.push(`resuming a LoRA ${task} run is not supported (its checkpoints hold the adapters folded in); start it again`);
}

/** A sampled response: its ids, and per token the policy's and the reference's log-probs. */
export interface SampledResponse {
  prompt: number[];
  response: number[];
  text: string;
}

/** Responses decoded together at most (each keeps its own KV cache; the weight matmuls are shared). */
export const SAMPLE_ROWS = 64;

/**
 * Samples one response per prompt with the KV cache (src/generate), drawing from `gen` (which
 * advances, so a saved state replays the same draws). The response stops at eos or maxNew tokens.
 *
 * The prompts are decoded together: each is prefilled on its own cache, then every step feeds
 * the newest token of all unfinished responses through one `decodeBatch` (B, 1) forward, so the
 * weight matmuls run once per step instead of once per response (rollouts were a loop of
 * batch-1 steps, see docs/alignment.md). Response i draws from its own generator, seeded by the
 * i-th uint32 of `gen`: its tokens are those of generate() with that generator, whichever
 * responses share its batch.
 */
export function sampleResponses(model: CausalLM, tok: Tokenizer, prompts: readonly number[][], o: { maxNew: number; temperature: number; gen: Generator; eos?: number }): SampledResponse[] {
  const wasTraining = model.training;
  model.eval();
  try {
    const seeds = prompts.map(() => o.gen.nextUint32());
    const out: number[][] = [];
    for (let s = 0; s < prompts.length; s += SAMPLE_ROWS) out.push(...sampleTogether(model, prompts.slice(s, s + SAMPLE_ROWS), seeds.slice(s, s + SAMPLE_ROWS), o));
    return prompts.map((p, i) => ({ prompt: p, response: out[i]!, text: tok.decode(out[i]!.filter((t) => t !== o.eos)) }));
  } finally {
    model.train(wasTraining);
  }
}

/** sampleResponses for one batch of prompts (model in eval mode). */
function sampleTogether(model: CausalLM, prompts: readonly number[][], seeds: readonly number[], o: { maxNew: number; temperature: number; eos?: number }): number[][] {
  const backend = model.parameters()[0]!.backend;
  const V = model.config.vocab_size;
  const rows = prompts.map((p, i) => {
    const room = model.config.block_size - p.length;
    if (p.length === 0) throw new Error('sampleResponses: an empty prompt (give at least one token)');
    if (room < 1) throw new Error(`a prompt of ${p.length} tokens leaves no room in the model's context of ${model.config.block_size}`);
    return { ctx: [...p], out: [] as number[], max: Math.min(o.maxNew, room), gen: new Generator(seeds[i]!), cache: model.createKVCache() };
  });
  const ids = (a: readonly number[], shape: number[]): Tensor => tensor(Int32Array.from(a), { backend, dtype: 'int32', shape });
  const rowOf = (data: ArrayLike<number>, k: number): Float32Array => {
    const r = new Float32Array(V); // a copy: selectToken edits its logits in place
    for (let j = 0; j < V; j++) r[j] = data[k * V + j]!;
    return r;
  };
  try {
    // Prefill: the prompts differ in length, so each runs alone (one forward each).
    let active = rows.map((_, i) => i).filter((i) => rows[i]!.max > 0);
    let logits = active.map((i) => noGrad(() => tidy(() => rowOf(model.forwardWithCache(ids(rows[i]!.ctx, [1, rows[i]!.ctx.length]), rows[i]!.cache, { lastOnly: true }).logits.data(), 0))));
    while (active.length) {
      const next: number[] = [];
      active.forEach((i, k) => {
        const r = rows[i]!;
        const t = selectToken(logits[k]!, r.ctx, { temperature: o.temperature }, r.gen);
        r.ctx.push(t);
        r.out.push(t);
        if (t !== o.eos && r.out.length < r.max) next.push(i);
      });
      if (!next.length) break;
      const data = noGrad(() => tidy(() => model.decodeBatch(ids(next.map((i) => rows[i]!.out.at(-1)!), [next.length, 1]), next.map((i) => rows[i]!.cache)).logits.data()));
      logits = next.map((_, k) => rowOf(data, k));
      active = next;
    }
  } finally {
    for (const r of rows) r.cache.dispose();
  }
  return rows.map((r) => r.out);
}

/** Per-token log-probs (B, T) of the responses of rows prompt + response (targets outside the
 *  response IGNORE), and the padded batch they came from. */
export function responseBatch(items: readonly { prompt: number[]; response: number[] }[]): RowBatch {
  return padRows(items.map(({ prompt, response }) => {
    const ids = [...prompt, ...response];
    return { x: ids.slice(0, -1), y: ids.slice(1).map((id, t) => (t + 1 >= prompt.length ? id : IGNORE)) };
  }));
}

/**
 * A Monte-Carlo estimate of KL(π‖π_ref) per sequence: the mean over sampled responses of
 * Σ_t log π(y_t) − log π_ref(y_t) (what the DPO paper's Figure 2 puts on its x axis).
 */
export function sequenceKL(policy: CausalLM, ref: CausalLM, items: readonly { prompt: number[]; response: number[] }[], batch = 8): number {
  let total = 0;
  for (let s = 0; s < items.length; s += batch) {
    const b = responseBatch(items.slice(s, s + batch));
    total += noGrad(() => tidy(() => {
      const { x, y } = batchTensors(b, policy.parameters()[0]!.backend);
      const lp = sequenceLogProbs(logitsOf(policy, x), y).data();
      const { x: xr, y: yr } = batchTensors(b, ref.parameters()[0]!.backend);
      const lr = sequenceLogProbs(logitsOf(ref, xr), yr).data();
      let t = 0;
      for (let i = 0; i < lp.length; i++) t += lp[i]! - lr[i]!;
      return t;
    }));
  }
  return total / Math.max(items.length, 1);
}

/** Freezes a model: eval mode, no parameter requires a gradient. */
export function freeze<M extends CausalLM>(m: M): M {
  for (const p of m.parameters()) p.requiresGrad = false;
  m.eval();
  return m;
}

/**
 * The alignment metrics of a run drawn against the update (alignment.svg): each key of the
 * records that has a finite value, training records and evaluations as separate series.
 */
export function alignmentPlot(records: readonly MetricsRecord[], keys: readonly string[], title: string): Record<string, string> {
  const series: PlotSeries[] = [];
  for (const k of keys) {
    const points = records.map((r) => [r.step, (r as unknown as Record<string, number>)[k]] as const).filter(([, v]) => typeof v === 'number' && Number.isFinite(v)) as [number, number][];
    if (points.length) series.push({ name: k.replace(/_/g, ' '), points, markers: points.length < 40 });
  }
  return series.length ? { 'alignment.svg': linePlotSvg(series, { title, xLabel: 'update' }) } : {};
}
