// The studio's trainer: a character-level GPT trained on a text (or a loaded checkpoint of any
// family attn loads, GPT or llama / mistral / qwen2 / qwen3 / phi, with its own tokenizer,
// fine-tuned with LoRA), with nothing that needs a file system, so a browser tab (a Web Worker)
// runs it. It is built from the same pieces as
// `attn train` (src/train/loop.ts, which imports node:fs and so cannot load in a page): the GPT
// and its loss, AdamW (train/optim.ts), the schedule (train/schedule.ts), BatchSampler with the
// lm task's seeds, the 90/10 split of prepareDataset, and the checkpoint layout of
// models/checkpoint-format.ts serialized by io/safetensors.ts. What it does not share with the
// loop: gradient accumulation, the queued (read-back-free) GPU update, metrics.jsonl, atomic
// saves (the page stores files in the browser), dropout RNG state in resumes, and MoE statistics.
import type { Backend } from '../backend/backend.js';
import { splitTokens } from '../data/dataset.js';
import { BatchSampler, type Batch, type SamplerState } from '../data/sampler.js';
import { generate } from '../generate/index.js';
import { parseSafetensors, serializeSafetensors, type TensorEntry } from '../io/safetensors.js';
import { checkpointConfigJson, modelToCheckpointTensors } from '../models/checkpoint-format.js';
import { DecoderLM } from '../models/decoder.js';
import { decoderConfigToHF } from '../models/hf-decoder.js';
import { float32WeightBytes, loadModelFromFiles } from '../models/load-files.js';
import { GPT, gptConfig, type GPTConfig } from '../models/gpt.js';
import { refuseQuantized } from '../nn/quantized.js';
import { adapterState, applyLora, peftAdapterState, type LoraHandle } from '../nn/lora.js';
import { adapterConfig, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../nn/lora-config.js';
import { add, logSoftmax, noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import { BpeTokenizer } from '../tokenizers/bpe.js';
import { CHAR_TOKENIZER_FILE, CharTokenizer } from '../tokenizers/char.js';
import type { Tokenizer } from '../tokenizers/types.js';
import { AdamW } from '../train/optim.js';
import { scheduleOf, type LrSchedule } from '../train/schedule.js';
import { updateStep, type LossSource } from '../train/update.js';

/** The model sizes the page offers (character level; vocab_size comes from the text). */
export const STUDIO_SIZES: Readonly<Record<string, Pick<GPTConfig, 'n_layer' | 'n_head' | 'n_embd' | 'block_size'>>> = Object.freeze({
  // A first look in seconds, and the size a software adapter (SwiftShader in CI) trains for a
  // few hundred updates in a couple of minutes.
  micro: { n_layer: 2, n_head: 4, n_embd: 32, block_size: 32 },
  tiny: { n_layer: 2, n_head: 4, n_embd: 64, block_size: 64 },
  small: { n_layer: 4, n_head: 4, n_embd: 128, block_size: 128 },
  // nanoGPT's shakespeare-char "baby GPT".
  medium: { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256 },
  // GPT-2 small's shape: offered so that the page can say why it will not train it.
  gpt2: { n_layer: 12, n_head: 12, n_embd: 768, block_size: 1024 },
});

/** Training settings: the names of `attn train`'s fields (src/train/config.ts). */
export interface StudioTrainSettings {
  batch_size: number;
  learning_rate: number;
  min_lr: number;
  warmup_iters: number;
  lr_decay_iters: number;
  lr_decay: 'cosine' | 'linear' | 'constant' | 'noam';
  max_iters: number;
  weight_decay: number;
  beta1: number;
  beta2: number;
  grad_clip: number;
  eval_iters: number;
  seed: number;
}

export const STUDIO_TRAIN_DEFAULTS: Readonly<StudioTrainSettings> = Object.freeze({
  batch_size: 8, learning_rate: 1e-2, min_lr: 1e-3, warmup_iters: 20, lr_decay_iters: 2000, lr_decay: 'cosine',
  max_iters: 2000, weight_decay: 0.1, beta1: 0.9, beta2: 0.99, grad_clip: 1, eval_iters: 4, seed: 1337,
});

/** Bytes a training run needs, by part, for the refusal before training. */
export interface MemoryEstimate {
  parameters: number;
  /** Weights, gradients and AdamW's two moments: 16 bytes a parameter in float32. */
  stateBytes: number;
  /** Activations kept for the backward pass of one batch (an estimate, float32). */
  activationBytes: number;
  totalBytes: number;
  /** The largest single buffer (attention scores or logits), which a GPU binding must hold. */
  largestBufferBytes: number;
}

/**
 * What training `c` with `batch` sequences a step needs. Activations per token and layer: the
 * block's inputs, norms, q/k/v, attention output, MLP hidden (4C, before and after the
 * activation) and residuals (~16C), plus the attention probabilities and scores (2·H·T); then the
 * logits, their softmax and gradient (3V). A rough upper estimate, stated as one.
 */
export function estimateTrainingMemory(c: GPTConfig, batch: number): MemoryEstimate {
  const P = GPT.countParameters(c);
  const T = c.block_size;
  const tokens = batch * T;
  const perLayer = 16 * c.n_embd + 2 * c.n_head * T;
  const activations = 4 * tokens * (c.n_layer * perLayer + 3 * c.vocab_size);
  const largest = 4 * Math.max(batch * c.n_head * T * T, tokens * c.vocab_size, c.vocab_size * c.n_embd);
  return { parameters: P, stateBytes: 16 * P, activationBytes: activations, totalBytes: 16 * P + activations, largestBufferBytes: largest };
}

/** Why `c` cannot train within `budgetBytes` (and `maxBufferBytes` per buffer), or null when it fits. */
export function memoryRefusal(c: GPTConfig, batch: number, budgetBytes: number, maxBufferBytes = Infinity): string | null {
  const m = estimateTrainingMemory(c, batch);
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
  if (m.totalBytes > budgetBytes) {
    return `too large for this device: training ${(m.parameters / 1e6).toFixed(1)}M parameters with batch ${batch} × ${c.block_size} needs about ${mib(m.totalBytes)} ` +
      `(${mib(m.stateBytes)} of weights, gradients and AdamW moments, ${mib(m.activationBytes)} of activations), over the budget of ${mib(budgetBytes)}`;
  }
  if (m.largestBufferBytes > maxBufferBytes) return `too large for this device: one buffer of ${mib(m.largestBufferBytes)} exceeds the adapter's limit of ${mib(maxBufferBytes)}`;
  return null;
}

/**
 * Why the checkpoint in `files` cannot be loaded within `budgetBytes`, or null when it fits: its
 * weights in float32 (a bfloat16 checkpoint doubles), read from the safetensors headers before
 * anything is allocated.
 */
export function loadRefusal(files: CheckpointFiles, budgetBytes: number): string | null {
  const bytes = float32WeightBytes(files);
  if (bytes <= budgetBytes) return null;
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(b < 2 ** 20 ? 2 : 0)} MiB`;
  return `too large for this device: the checkpoint's weights take ${mib(bytes)} in float32, over the budget of ${mib(budgetBytes)} (?budget=MiB raises it; WebAssembly memory holds 4 GiB at most)`;
}

/** Characters of `text` that `tok` cannot encode, as a readable list (empty when none; a
 *  subword tokenizer is taken to encode any text, as byte-level BPE does). */
export function unknownChars(tok: Tokenizer, text: string): string[] {
  if (!(tok instanceof CharTokenizer)) return [];
  const known = new Set(tok.chars);
  const out = new Set<string>();
  for (const ch of text) if (!known.has(ch)) out.add(ch);
  return [...out];
}

/** Token ids of `text` as `attn logprobs` encodes it (special-token text is plain text). */
export function encodeText(tok: Tokenizer, text: string): number[] {
  return tok instanceof BpeTokenizer ? tok.encode(text, { disallowedSpecial: [] }) : tok.encode(text);
}

/**
 * The context a loaded model trains on in the page: its own, at most 256 tokens (a Hugging Face
 * decoder's max_position_embeddings, often 32k, would make one batch larger than a tab's memory).
 * Every studio size but the refused gpt2 one is within it.
 */
export const STUDIO_MAX_TRAIN_CONTEXT = 256;

/** The LoRA targets the page uses on each kind of model: the attention projections. */
export function studioLoraTargets(model: GPT | DecoderLM): string[] {
  if (model instanceof GPT) return ['c_attn', 'c_proj'];
  return model.config.model_type === 'phi' ? ['q_proj', 'k_proj', 'v_proj', 'dense'] : ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
}

// The lm task's sampler seeds (src/tasks/lm.ts), so a page run draws the batches `attn train` would.
const seedFor = (seed: number, salt: number): number => (seed ^ salt) >>> 0;

export interface StudioStep {
  iter: number;
  loss: number;
  gradNorm: number;
  lr: number;
}

/** The files of a checkpoint directory, by name (what `attn train` writes into out/last). */
export type CheckpointFiles = Record<string, Uint8Array>;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
const jsonFile = (v: unknown): Uint8Array => utf8.encode(`${JSON.stringify(v, null, 2)}\n`);

export interface StudioTrainerOptions {
  backend?: Backend;
  settings?: Partial<StudioTrainSettings>;
}

/** A GPT being trained (or a loaded GPT or decoder fine-tuned with LoRA) on one text. */
export class StudioTrainer {
  readonly settings: StudioTrainSettings;
  iter = 0;
  /** Tokens trained on so far. */
  tokens = 0;
  lora: LoraHandle | null = null;
  private opt: AdamW;
  private schedule: LrSchedule;
  private train!: BatchSampler;
  private evalTrain!: BatchSampler;
  private evalVal!: BatchSampler;
  private params: Tensor[];
  /** What the LoRA adapters were trained on (recorded as base_model_name_or_path). */
  private loraBase = '';

  /** Tokens a training sequence holds (the model's context, at most STUDIO_MAX_TRAIN_CONTEXT). */
  readonly context: number;
  /** The tokenizer's files as they were loaded (written back with a decoder's download). */
  private tokenizerFiles: Record<string, Uint8Array> = {};
  /** config.json as loaded (a decoder's download keeps its other fields). */
  private hfConfig: Record<string, unknown> = {};

  private constructor(readonly model: GPT | DecoderLM, readonly tokenizer: Tokenizer, text: string, settings: StudioTrainSettings) {
    this.settings = settings;
    this.context = Math.min(model.config.block_size, STUDIO_MAX_TRAIN_CONTEXT);
    this.params = model.parameters();
    this.opt = this.makeOptimizer(this.params);
    this.schedule = scheduleOf(settings);
    this.setText(text);
    model.train();
  }

  /** A new model of `config` (vocab_size from the text's characters) on `text`. */
  static create(text: string, config: Partial<GPTConfig>, opts: StudioTrainerOptions = {}): StudioTrainer {
    const settings = { ...STUDIO_TRAIN_DEFAULTS, ...opts.settings };
    const tok = CharTokenizer.fromText(text);
    const model = new GPT(gptConfig({ dropout: 0, bias: false, ...config, vocab_size: tok.vocabSize }), { backend: opts.backend, seed: settings.seed });
    return new StudioTrainer(model, tok, text, settings);
  }

  /**
   * A checkpoint directory's files (written by `attn train`, by checkpointFiles, or a Hugging Face
   * llama / mistral / qwen2 / qwen3 / phi / GPT-2 folder): the model and its tokenizer, read by
   * loadModelFromFiles as `attn logprobs` reads a directory, and, when optimizer.safetensors and
   * trainer_state.json are there, the optimizer, step and samplers, so training resumes where it
   * stopped.
   */
  static fromFiles(files: CheckpointFiles, text: string | null, opts: StudioTrainerOptions = {}): StudioTrainer {
    const loaded = loadModelFromFiles(files, { backend: opts.backend });
    const tok = loaded.tokenizer;
    if (!tok) {
      loaded.model.dispose();
      throw new Error(`the checkpoint has no tokenizer files (${CHAR_TOKENIZER_FILE}, tokenizer.json, or encoder.json + vocab.bpe)`);
    }
    // The studio trains without dropout (its resumes hold no dropout RNG state).
    let model: GPT | DecoderLM = loaded.model;
    if (model instanceof GPT && (model.config.dropout ?? 0) > 0) {
      const plain = new GPT({ ...model.config, dropout: 0 }, { backend: opts.backend, init: false });
      plain.loadStateDict(model.stateDict());
      model.dispose();
      model = plain;
    }
    let t: StudioTrainer;
    let state: Record<string, unknown> | null;
    let saved: { settings?: Partial<StudioTrainSettings>; text?: string; samplers?: Record<string, SamplerState>; tokens?: number };
    try {
      state = files['trainer_state.json'] ? (JSON.parse(fromUtf8.decode(files['trainer_state.json'])) as Record<string, unknown>) : null;
      saved = (state?.['studio'] ?? {}) as typeof saved;
      const settings = { ...STUDIO_TRAIN_DEFAULTS, ...saved.settings, ...opts.settings };
      const body = text ?? saved.text ?? null;
      if (body === null) throw new Error('no text to train on: the checkpoint does not hold one, give one');
      const bad = unknownChars(tok, body);
      if (bad.length) throw new Error(`the text has ${bad.length} characters the checkpoint's tokenizer does not know: ${JSON.stringify(bad.slice(0, 10).join(''))}`);
      t = new StudioTrainer(model, tok, body, settings);
    } catch (e) {
      model.dispose();
      throw e;
    }
    t.hfConfig = loaded.hfConfig;
    for (const name of TOKENIZER_FILES) if (files[name]) t.tokenizerFiles[name] = files[name];
    if (state && files['optimizer.safetensors']) {
      try {
        t.restore(state, files['optimizer.safetensors'], saved);
      } catch (e) {
        t.dispose();
        throw e;
      }
    }
    return t;
  }

  private makeOptimizer(params: Tensor[]): AdamW {
    const s = this.settings;
    return new AdamW(params, { lr: s.learning_rate, betas: [s.beta1, s.beta2], weightDecay: s.weight_decay });
  }

  /** Trains on `text` from now on (the fine-tuning text): 90% train, 10% val, as prepareDataset splits. */
  setText(text: string): void {
    const bad = unknownChars(this.tokenizer, text);
    if (bad.length) throw new Error(`the text has ${bad.length} characters the model's vocabulary lacks: ${JSON.stringify(bad.slice(0, 10).join(''))}`);
    const ids = Int32Array.from(encodeText(this.tokenizer, text));
    const { train, val } = splitTokens(ids, 0.1);
    const T = this.context;
    const unit = this.tokenizer instanceof CharTokenizer ? 'characters' : 'tokens';
    for (const [name, split] of [['train', train], ['validation', val]] as const) {
      if (split.length <= T) throw new Error(`the ${name} split has ${split.length} ${unit}, too few for a context of ${T}: give a longer text`);
    }
    const o = { batchSize: this.settings.batch_size, blockSize: T };
    const seed = this.settings.seed;
    this.train = new BatchSampler(train, { ...o, seed: seedFor(seed, 0x2545f491) });
    this.evalTrain = new BatchSampler(train, { ...o, seed: seedFor(seed, 0x9e3779b9) });
    this.evalVal = new BatchSampler(val, { ...o, seed: seedFor(seed, 0x7f4a7c15) });
    this.text = text;
  }

  /** The text being trained on (kept in the browser checkpoint so a reload can resume). */
  text = '';

  private batchTensors(b: Batch): [Tensor, Tensor] {
    const shape = [b.batchSize, b.blockSize];
    const backend = this.params[0]!.backend;
    return [tensor(b.x, { shape, dtype: 'int32', backend }), tensor(b.y, { shape, dtype: 'int32', backend })];
  }

  /** One AdamW update on one batch: the loop's own update (train/update.ts updateStep: forward and
   *  backward, global-norm clipping, AdamW, one read back). */
  step(): StudioStep {
    const lr = this.schedule(this.iter);
    const b = this.train.next();
    const src: LossSource<Batch> = { loss: (batch) => {
      const [x, y] = this.batchTensors(batch);
      return { loss: this.model.forward(x, y).loss! };
    } };
    const { values, gradNorm } = updateStep(src, this.params, this.opt, [b], { lr, gradClip: this.settings.grad_clip, step: this.iter });
    this.iter++;
    this.tokens += b.batchSize * b.blockSize;
    return { iter: this.iter, loss: values[0]!, gradNorm, lr };
  }

  /** Mean loss over eval_iters batches of each split, in eval mode without gradients (lm's estimateLoss). */
  evaluate(): { train_loss: number; val_loss: number } {
    const mean = (s: BatchSampler): number => {
      let total = 0;
      for (let i = 0; i < this.settings.eval_iters; i++) {
        const b = s.next();
        total += noGrad(() => tidy(() => {
          const [x, y] = this.batchTensors(b);
          return this.model.forward(x, y).loss!.item();
        }));
      }
      return total / this.settings.eval_iters;
    };
    this.model.eval();
    try {
      return { train_loss: mean(this.evalTrain), val_loss: mean(this.evalVal) };
    } finally {
      this.model.train();
    }
  }

  /** The prompt and a continuation drawn from the model as it is (eval mode for the draw, then training again). */
  sample(prompt: string, o: { maxNewTokens: number; temperature: number; topK?: number; seed?: number }): string {
    const bad = unknownChars(this.tokenizer, prompt);
    if (bad.length) throw new Error(`the prompt has characters the model does not know: ${JSON.stringify(bad.join(''))}`);
    const ids = prompt ? encodeText(this.tokenizer, prompt) : [this.tokenizer.eotToken ?? 0];
    this.model.eval();
    try {
      return prompt + generate(this.model, ids, { maxNewTokens: o.maxNewTokens, temperature: o.temperature, topK: o.topK || undefined, seed: o.seed ?? 1, decode: (x) => this.tokenizer.decode(x) }).text!;
    } finally {
      this.model.train();
    }
  }

  /** log P(ids[i+1] | ids[0..i]) for each position, as `attn logprobs` computes them. */
  logprobs(text: string): { tokens: number[]; logprobs: number[] } {
    const ids = encodeText(this.tokenizer, text);
    if (ids.length > this.model.config.block_size) throw new Error(`${ids.length} tokens exceed the model's context of ${this.model.config.block_size}`);
    this.model.eval();
    try {
      const V = this.model.config.vocab_size;
      const lp = noGrad(() => tidy(() => logSoftmax(this.model.forward(tensor(ids, { dtype: 'int32', shape: [1, ids.length], backend: this.params[0]!.backend })).logits, -1).data()));
      const out: number[] = [];
      for (let i = 0; i + 1 < ids.length; i++) out.push(lp[i * V + ids[i + 1]!]!);
      return { tokens: ids, logprobs: out };
    } finally {
      this.model.train();
    }
  }

  /**
   * The checkpoint as `attn train` writes it: config.json, model.safetensors (the Hugging Face
   * GPT-2 layout of checkpoint-format.ts) and char_tokenizer.json (a loaded decoder: its
   * config.json and weights as saveDecoderDir writes them, float32, and the tokenizer files it
   * came with); with `resumable`, also
   * optimizer.safetensors and trainer_state.json (with the text, for the browser's own resume).
   * A LoRA run writes the base model (adapters left out); adapterFiles() has the adapters.
   */
  checkpointFiles(o: { resumable?: boolean } = {}): CheckpointFiles {
    if (this.lora && o.resumable) throw new Error('a LoRA run is stored as its base checkpoint and the adapter files');
    const m = this.model;
    const files: CheckpointFiles = m instanceof GPT
      ? {
        'config.json': jsonFile(checkpointConfigJson(m.config)),
        'model.safetensors': serializeSafetensors(withoutAdapters(modelToCheckpointTensors(m)), { format: 'pt', attn_step: String(this.iter) }),
      }
      : {
        'config.json': jsonFile({ ...decoderConfigToHF(m.config, this.hfConfig), torch_dtype: 'float32' }),
        'model.safetensors': serializeSafetensors(withoutAdapters(decoderTensors(m)), { format: 'pt' }),
      };
    if (this.tokenizer instanceof CharTokenizer) files[CHAR_TOKENIZER_FILE] = utf8.encode(`${JSON.stringify(this.tokenizer.toJSON())}\n`);
    else Object.assign(files, this.tokenizerFiles);
    if (o.resumable) {
      const byTensor = new Map(this.model.namedParameters().map(([n, p]) => [p, n] as const));
      const optimizer = new Map<string, TensorEntry>();
      this.opt.stateTensors().forEach((s, i) => {
        const name = byTensor.get(s.param) ?? `param.${i}`;
        optimizer.set(`${name}.m`, { dtype: 'F32', shape: [...s.m.shape], data: s.m.data() });
        optimizer.set(`${name}.v`, { dtype: 'F32', shape: [...s.v.shape], data: s.v.data() });
      });
      files['optimizer.safetensors'] = serializeSafetensors(optimizer, { format: 'pt' });
      files['trainer_state.json'] = jsonFile({
        format: 'attn-studio', version: 1, iter: this.iter, optimizer_step: this.opt.step, tokens: this.tokens,
        studio: {
          settings: this.settings, text: this.text, tokens: this.tokens,
          samplers: { train: this.train.state(), eval_train: this.evalTrain.state(), eval_val: this.evalVal.state() },
        },
      });
    }
    return files;
  }

  private restore(state: Record<string, unknown>, optimizerBytes: Uint8Array, saved: { samplers?: Record<string, SamplerState>; tokens?: number }): void {
    const iter = state['iter'];
    if (!Number.isInteger(iter)) throw new Error(`trainer_state.json: 'iter' must be an integer, got ${JSON.stringify(iter)}`);
    const tensors = parseSafetensors(optimizerBytes, 'optimizer.safetensors').tensors;
    const byTensor = new Map(this.model.namedParameters().map(([n, p]) => [p, n] as const));
    for (const [i, s] of this.opt.stateTensors().entries()) {
      const name = byTensor.get(s.param) ?? `param.${i}`;
      const m = tensors.get(`${name}.m`);
      const v = tensors.get(`${name}.v`);
      if (!m || !v || m.data.length !== s.m.size || v.data.length !== s.v.size) throw new Error(`optimizer.safetensors: the moments of ${name} are missing or of the wrong size`);
      s.m.backend.write(s.m.storage, m.data, 0);
      s.v.backend.write(s.v.storage, v.data, 0);
    }
    this.opt.step = Number(state['optimizer_step'] ?? iter);
    this.iter = iter as number;
    this.tokens = saved.tokens ?? 0;
    if (saved.samplers) {
      this.train.setState(saved.samplers['train']!);
      this.evalTrain.setState(saved.samplers['eval_train']!);
      this.evalVal.setState(saved.samplers['eval_val']!);
    }
  }

  /**
   * Starts LoRA fine-tuning on `text`: the base weights freeze, adapters of `rank` go on
   * `targets` (attn's GPT names: c_attn, c_proj, c_fc; a decoder's q_proj, k_proj, v_proj,
   * o_proj, ...; default studioLoraTargets), a fresh AdamW trains them only, and the step count and
   * schedule restart.
   */
  startLora(text: string, o: { rank: number; alpha?: number; targets?: string[]; baseName?: string; settings?: Partial<StudioTrainSettings> }): string {
    if (this.lora) throw new Error('LoRA adapters are already on this model');
    Object.assign(this.settings, o.settings ?? {});
    this.setText(text);
    const targets = o.targets ?? studioLoraTargets(this.model);
    this.lora = applyLora(this.model, { rank: o.rank, alpha: o.alpha ?? o.rank, targets, seed: this.settings.seed });
    this.loraBase = o.baseName ?? 'attn-studio-base';
    this.params = this.lora.trainableParameters();
    this.opt = this.makeOptimizer(this.params);
    this.schedule = scheduleOf(this.settings);
    this.iter = 0;
    this.tokens = 0;
    return this.lora.summary();
  }

  /** adapter_config.json and adapter_model.safetensors, as saveAdapters writes them. */
  adapterFiles(): CheckpointFiles {
    if (!this.lora) throw new Error('no LoRA adapters: start a fine-tune first');
    const cfg = adapterConfig(this.lora, { baseModel: this.loraBase, taskType: 'CAUSAL_LM' });
    return {
      [ADAPTER_CONFIG_FILE]: jsonFile(cfg),
      [ADAPTER_WEIGHTS_FILE]: serializeSafetensors(peftAdapterState(this.lora), { format: 'pt' }),
    };
  }

  /** The adapters under attn's names (for tests). */
  adapterTensors(): Map<string, TensorEntry> {
    if (!this.lora) throw new Error('no LoRA adapters');
    return adapterState(this.lora);
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** The tokenizer files a loaded checkpoint may hold (loadTokenizer's, and tokenizer_config.json beside tokenizer.json). */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'encoder.json', 'vocab.bpe'];

/** A LoRA-wrapped model's base weights (adapter tensors left out); the entries themselves when no adapters. */
function withoutAdapters(all: Map<string, TensorEntry>): Map<string, TensorEntry> {
  for (const name of [...all.keys()]) if (/lora_[AB]/.test(name)) all.delete(name);
  return all;
}

/** A decoder's weights under its own (transformers') names, float32, as saveDecoderDir writes them. */
function decoderTensors(model: DecoderLM): Map<string, TensorEntry> {
  refuseQuantized(model, 'saving a checkpoint');
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of model.stateDict()) out.set(name, { dtype: 'F32', shape: [...t.shape], data: Float32Array.from(t.data()) });
  return out;
}
