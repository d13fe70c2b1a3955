// Language modelling (nanoGPT's train.py): a GPT on a prepared token dataset, next-token
// cross-entropy (plus the MoE load-balancing loss), evaluated as the mean loss over eval_iters
// batches of each split. The loop (src/train/loop.ts) does the rest.
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { BatchSampler, gatherBatch, type Batch } from '../data/sampler.js';
import { loadDataset, prepareDataset, readTokenizerFiles } from '../data/files.js';
import { CheckpointError, type LoadedCheckpoint } from '../io/checkpoint.js';
import { checkpointConfigJson, modelToCheckpointTensors } from '../models/checkpoint-format.js';
import { gptConfigFromCheckpointJson, loadGPTCheckpoint, loadGPTTensors } from '../models/gpt-checkpoint.js';
import { GPT, gptConfig, type GPTConfig } from '../models/gpt.js';
import { DecoderLM, type DecoderFamily } from '../models/decoder.js';
import { loadDecoderDir, readHFConfig } from '../models/hf-decoder-files.js';
import { decoderConfigFromHF, decoderConfigToHF, decoderFamilyOf } from '../models/hf-decoder.js';
import { checkpointTensorsToState } from '../models/checkpoint-format.js';
import { serializeSafetensors } from '../io/safetensors.js';
import { adapterConfig, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../nn/lora-files.js';
import { adapterState, applyLora, loadAdapterState, peftAdapterState, type LoraHandle } from '../nn/lora.js';
import { BpeTokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import type { Module } from '../nn/module.js';
import { MoE } from '../nn/moe.js';
import { buildDeferred } from '../nn/deferred.js';
import { noGrad, tensor, tidy, type Tensor } from '../tensor/index.js';
import { CharTokenizer } from '../tokenizers/index.js';
import { parseFieldValue, resolveConfig, type TrainingConfig } from '../train/config.js';
import { accumulateOnDevice, readQueuedStats as readStats, runTraining, updateStep, updateStepQueued, type EvalResult, type LoopHooks, type LoopOptions, type StartInfo, type StepMetrics, type StepOptions, type Task, type TaskContext, type TaskRun } from '../train/loop.js';
import type { AdamW } from '../train/optim.js';

export type TrainConfig = TrainingConfig;

/** A language-model batch: x and y (x shifted by one), B × T token ids. */
export type { Batch };

const ARCH_FIELDS = ['model_type', 'block_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd', 'bias', 'tie_embeddings', 'pos_encoding', 'norm_placement', 'norm', 'activation', 'layer_norm_epsilon',
  'attention', 'attn_window', 'attn_stride', 'attn_summary', 'performer_features', 'performer_redraw_interval', 'linformer_k',
  'moe_experts', 'moe_top_k', 'moe_capacity_factor', 'moe_aux_loss_coef', 'moe_every'] as const;

/** The GPTConfig a training config describes, for a vocabulary of vocab_size. */
export function modelConfigOf(cfg: TrainConfig, vocab_size: number): GPTConfig {
  return gptConfig({
    n_layer: cfg.n_layer, n_head: cfg.n_head, n_embd: cfg.n_embd, block_size: cfg.block_size, vocab_size,
    dropout: cfg.dropout, bias: cfg.bias, tie_embeddings: cfg.tie_embeddings, pos_encoding: cfg.pos_encoding as GPTConfig['pos_encoding'],
    norm_placement: cfg.norm_placement as GPTConfig['norm_placement'], norm: cfg.norm as GPTConfig['norm'], activation: cfg.activation as GPTConfig['activation'],
    layer_norm_epsilon: cfg.layer_norm_epsilon, attention: cfg.attention as GPTConfig['attention'], n_kv_head: cfg.n_kv_head === 0 ? undefined : cfg.n_kv_head,
    attn_window: cfg.attn_window, attn_stride: cfg.attn_stride, attn_summary: cfg.attn_summary, performer_features: cfg.performer_features,
    performer_redraw_interval: cfg.performer_redraw_interval, linformer_k: cfg.linformer_k,
    // Dense models leave the moe_* fields out (their defaults), keeping config.json as it was.
    ...(cfg.moe_experts > 0 ? {
      moe_experts: cfg.moe_experts, moe_top_k: cfg.moe_top_k as 1 | 2, moe_capacity_factor: cfg.moe_capacity_factor,
      moe_aux_loss_coef: cfg.moe_aux_loss_coef, moe_every: cfg.moe_every,
    } : {}),
  });
}

/** Routing statistics of an update, averaged over its micro-batches; keys are layer indices. */
interface MoEStepStats {
  util: Record<string, number[]>;
  dropped: Record<string, number>;
}

/** [layer index, MoE] for each mixture-of-experts layer of the model. */
function moeLayersOf(model: Module): [string, MoE][] {
  const out: [string, MoE][] = [];
  for (const [name, m] of model.namedModules()) if (m instanceof MoE) out.push([/\.h\.(\d+)\./.exec(`.${name}.`)?.[1] ?? name, m]);
  return out;
}

function batchTensors(b: Batch, backend: Backend): [Tensor, Tensor] {
  const shape = [b.batchSize, b.blockSize];
  return [tensor(b.x, { shape, dtype: 'int32', backend }), tensor(b.y, { shape, dtype: 'int32', backend })]; // (B, T) each
}

const backendOf = (model: Module): Backend => model.parameters()[0]!.backend;

/** A causal language model the lm task trains: attn's GPT or a Hugging Face decoder family. */
export type LMModel = GPT | DecoderLM;

/** Batch → loss for a GPT, with the MoE routing statistics of each micro-batch collected. */
function lmSource(model: LMModel) {
  const moeLayers = moeLayersOf(model);
  let moe: MoEStepStats = { util: {}, dropped: {} };
  return {
    parts: moeLayers.length ? ['ce_loss', 'moe_aux_loss'] : ['ce_loss'],
    loss(b: Batch) {
      const [x, y] = batchTensors(b, backendOf(model));
      const out = model.forward(x, y);
      if (!out.loss) throw new Error('the model returned no loss');
      const aux = 'auxLoss' in out ? (out.auxLoss as Tensor | undefined) : undefined;
      return { loss: out.loss, parts: { ce_loss: out.ceLoss ?? out.loss, ...(aux ? { moe_aux_loss: aux } : {}) } };
    },
    afterMicroBatch(k: number) {
      for (const [layer, m] of moeLayers) {
        const st = m.lastStats;
        if (!st) continue;
        const u = (moe.util[layer] ??= new Array<number>(st.tokensPerExpert.length).fill(0));
        st.tokensPerExpert.forEach((f, e) => (u[e]! += f / k));
        moe.dropped[layer] = (moe.dropped[layer] ?? 0) + st.dropped / k;
      }
    },
    stepRecord(): Record<string, unknown> {
      if (!moeLayers.length) return {};
      const r = { moe_util: moe.util, moe_dropped: moe.dropped };
      moe = { util: {}, dropped: {} };
      return r;
    },
  };
}

/** Mean cross-entropy over `iters` batches of the sampler, in eval mode without gradients (MoE aux
 *  losses left out); summed on the backend and read once, so a GPU runs the batches back to back. */
export function estimateLoss(model: LMModel, sampler: BatchSampler, iters: number): number {
  const wasTraining = model.training;
  model.eval();
  let total = null as Tensor | null;
  try {
    for (let i = 0; i < iters; i++) {
      const b = sampler.next();
      const prev = total;
      total = noGrad(() => tidy(() => {
        const [x, y] = batchTensors(b, backendOf(model));
        const { loss, ceLoss } = model.forward(x, y);
        const l = ceLoss ?? loss!;
        return prev ? prev.add(l) : l;
      }));
      prev?.dispose();
    }
    return total ? total.item() / iters : NaN;
  } finally {
    total?.dispose();
    model.train(wasTraining);
  }
}

// Distinct streams per purpose, so the batches do not depend on how the weights were drawn.
const seedFor = (seed: number, salt: number): number => (seed ^ salt) >>> 0;

/** A text file named by `data`: prepared (character level) into data/NAME once, then reused. */
async function preparedDataFolder(file: string, say: (s: string) => void): Promise<string> {
  const dir = join('data', basename(file, extname(file)));
  const meta = join(dir, 'meta.json');
  if (existsSync(meta) && statSync(meta).mtimeMs >= statSync(file).mtimeMs) {
    const m = JSON.parse(await readFile(meta, 'utf8')) as { source?: string };
    if (m.source === file) return dir;
  }
  if (existsSync(meta)) {
    const m = JSON.parse(await readFile(meta, 'utf8')) as { source?: string };
    if (m.source !== file) throw new Error(`${dir} holds a dataset prepared from ${m.source ?? 'another source'}; rename ${file} or pass a prepared --dataset`);
  }
  const text = await readFile(file, 'utf8');
  say(`preparing ${file} (character level) into ${dir}`);
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: dir, source: file });
  return dir;
}

export const LM_TASK: Task<Batch> = {
  task: 'lm',
  defaults: {},
  archFields: ARCH_FIELDS,
  best: { metric: 'val_loss', higher: false },
  evalAtStart: true,
  title: (cfg) => `loss: ${basename(cfg.dataset)}`,
  check(cfg, problems) {
    if (Number.isInteger(cfg.n_embd / cfg.n_head) && cfg.pos_encoding === 'rope' && (cfg.n_embd / cfg.n_head) % 2 !== 0) problems.push(`rope needs an even head size, but n_embd / n_head = ${cfg.n_embd / cfg.n_head}`);
    if (cfg.n_kv_head > 0 && cfg.n_head % cfg.n_kv_head !== 0) problems.push(`n_head (${cfg.n_head}) must be divisible by n_kv_head (${cfg.n_kv_head})`);
    if (cfg.moe_top_k !== 1 && cfg.moe_top_k !== 2) problems.push(`moe_top_k must be 1 or 2, got ${cfg.moe_top_k}`);
    else if (cfg.moe_experts > 0 && cfg.moe_top_k > cfg.moe_experts) problems.push(`moe_top_k (${cfg.moe_top_k}) must not exceed moe_experts (${cfg.moe_experts})`);
    if (cfg.checkpoint_activations && cfg.moe_experts > 0) problems.push('checkpoint_activations cannot be used with moe_experts yet: the routing statistics and aux losses would be taken from the recomputation');
    if (cfg.moe_experts > 0 && cfg.moe_every > cfg.n_layer) problems.push(`moe_every (${cfg.moe_every}) exceeds n_layer (${cfg.n_layer}): no layer would be a mixture of experts`);
  },
  async open(cfg, ctx) {
    const { backend, resume, say } = ctx;
    if (await isDecoderRun(cfg, resume)) return openDecoderRun(cfg, ctx);
    if (cfg.data !== '') cfg.dataset = await preparedDataFolder(cfg.data, say);
    const data = await loadDataset(cfg.dataset);
    const tokenizerFiles = await readTokenizerFiles(data.dir, data.meta);
    for (const [split, ids] of [['train', data.train], ['val', data.val]] as const) {
      if (ids.length <= cfg.block_size) throw new Error(`the ${split} split of ${data.dir} has ${ids.length} tokens, too few for block_size ${cfg.block_size}`);
    }
    const o = { batchSize: cfg.batch_size, blockSize: cfg.block_size };
    const train = new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x2545f491) });
    const evalTrain = new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x9e3779b9) });
    const evalVal = new BatchSampler(data.val, { ...o, seed: seedFor(cfg.seed, 0x7f4a7c15) });
    let model: GPT;
    // A tensor-parallel rank builds the shapes and draws or loads only its shards (attach).
    // (A flag, not ctx, in the closure: ctx holds the resumed checkpoint, which the run lets go.)
    const defer = ctx.deferWeights === true;
    const build = (make: () => GPT): GPT => (defer ? buildDeferred(make) : make());
    const from = resume ?? null;
    if (from) {
      const mc = gptConfigFromCheckpointJson(from.config, join(from.dir, 'config.json'));
      if (mc.vocab_size !== data.meta.vocab_size) throw new CheckpointError(join(from.dir, 'config.json'), `vocab_size ${mc.vocab_size} does not match the dataset's ${data.meta.vocab_size} (${data.dir})`);
      model = build(() => new GPT({ ...mc, dropout: cfg.dropout }, { backend, dtype: masterDtype(cfg), init: false, seed: cfg.seed }));
      try {
        loadGPTTensors(model, from);
      } catch (e) {
        model.dispose();
        throw e;
      }
    } else if (cfg.init_from !== 'scratch') {
      // Fine-tuning: the checkpoint's model (and shape), trained on this dataset.
      const loaded = await loadGPTCheckpoint(cfg.init_from, { backend, dtype: masterDtype(cfg), deferred: defer });
      if (loaded.config.vocab_size !== data.meta.vocab_size) {
        loaded.model.dispose();
        throw new CheckpointError(join(cfg.init_from, 'config.json'), `vocab_size ${loaded.config.vocab_size} does not match the dataset's ${data.meta.vocab_size} (${data.dir})`);
      }
      model = loaded.model;
      say(`starting from ${cfg.init_from} (${(model.numParameters() / 1e6).toFixed(2)}M parameters)`);
    } else {
      model = build(() => new GPT(modelConfigOf(cfg, data.meta.vocab_size), { backend, dtype: masterDtype(cfg), seed: cfg.seed }));
    }
    return lmRun(cfg, model, data, () => ({ config: checkpointConfigJson(model.config), model: modelToCheckpointTensors(model), tokenizerFiles }));
  },
};

type Checkpoint = ReturnType<TaskRun<Batch>['checkpoint']>;

/** The run of a language model on token splits: batches, evaluation, sampler state. */
function lmRun(cfg: TrainConfig, model: LMModel, data: { train: ArrayLike<number>; val: ArrayLike<number>; dir?: string }, checkpoint: () => Checkpoint, extra: Partial<TaskRun<Batch>> = {}): TaskRun<Batch> {
  for (const [split, ids] of [['train', data.train], ['val', data.val]] as const) {
    if (ids.length <= cfg.block_size) throw new Error(`the ${split} split${data.dir ? ` of ${data.dir}` : ''} has ${ids.length} tokens, too few for block_size ${cfg.block_size}`);
  }
  const o = { batchSize: cfg.batch_size, blockSize: cfg.block_size };
  const train = new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x2545f491) });
  const evalTrain = new BatchSampler(data.train, { ...o, seed: seedFor(cfg.seed, 0x9e3779b9) });
  const evalVal = new BatchSampler(data.val, { ...o, seed: seedFor(cfg.seed, 0x7f4a7c15) });
  model.train();
  model.checkpointActivations = cfg.checkpoint_activations;
  const src = lmSource(model);
  return {
    model,
    ...src,
    info: { modelConfig: model.config, tokensPerIter: cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size },
    nextBatch: () => train.next(),
    sizeOf: (b) => b.batchSize * b.blockSize,
    // DP-SGD's examples: the non-overlapping block_size windows of the training tokens.
    dpExamples: {
      count: Math.floor((data.train.length - 1) / cfg.block_size),
      batchOf: (idx) => gatherBatch(data.train, idx.map((i) => i * cfg.block_size), cfg.block_size),
    },
    evaluate: () => {
      const trainLoss = estimateLoss(model, evalTrain, cfg.eval_iters);
      const valLoss = estimateLoss(model, evalVal, cfg.eval_iters);
      return { val_loss: valLoss, eval_train_loss: trainLoss };
    },
    checkpoint,
    state: () => ({ samplers: { train: train.state(), eval_train: evalTrain.state(), eval_val: evalVal.state() } }),
    setState(s) {
      const sm = s['samplers'] as Record<string, never> | undefined;
      if (!sm || !sm['train'] || !sm['eval_train'] || !sm['eval_val']) throw new Error(`'samplers' must hold train, eval_train and eval_val states`);
      train.setState(sm['train']);
      evalTrain.setState(sm['eval_train']);
      evalVal.setState(sm['eval_val']);
    },
    ...extra,
  };
}

// ---------------------------------------------------------------- Hugging Face decoder families

/** config.json of a LoRA run's checkpoint (the adapters are beside it in the PEFT layout). */
const LORA_CHECKPOINT = 'attn_lora_adapter';

/** Whether this run trains a Hugging Face decoder: from scratch (model_type), from a decoder
 *  directory, or resuming one. */
async function isDecoderRun(cfg: TrainConfig, resume: LoadedCheckpoint | null): Promise<boolean> {
  if (resume) return decoderFamilyOf(resume.config) !== null || resume.config['attn_checkpoint'] === LORA_CHECKPOINT;
  if (cfg.init_from === 'scratch') return cfg.model_type !== 'gpt';
  if (cfg.init_from === 'resume') return false;
  return decoderFamilyOf(await readHFConfig(cfg.init_from)) !== null;
}

/** The decoder a from-scratch run describes (n_layer, n_head, n_kv_head, n_embd, block_size). */
function scratchDecoderConfig(cfg: TrainConfig, vocab: number) {
  const family = cfg.model_type as DecoderFamily;
  const phi = family === 'phi';
  return decoderConfigFromHF({
    model_type: family, vocab_size: vocab, hidden_size: cfg.n_embd, num_hidden_layers: cfg.n_layer, num_attention_heads: cfg.n_head,
    num_key_value_heads: cfg.n_kv_head > 0 ? cfg.n_kv_head : cfg.n_head, head_dim: cfg.n_embd / cfg.n_head,
    // SwiGLU width 8C/3 rounded up to whole 32s (Llama rounds to 256): every matrix then splits
    // into int4 and GGUF blocks of 32.
    intermediate_size: phi ? 4 * cfg.n_embd : Math.ceil((8 * cfg.n_embd) / 3 / 32) * 32, max_position_embeddings: cfg.block_size,
    tie_word_embeddings: cfg.tie_embeddings, [phi ? 'layer_norm_eps' : 'rms_norm_eps']: cfg.layer_norm_epsilon, rope_theta: 10000,
    ...(family === 'mistral' ? { sliding_window: cfg.attention === 'local' ? cfg.attn_window : null } : {}),
    ...(phi ? { partial_rotary_factor: 0.5 } : {}), bos_token_id: null, eos_token_id: null,
  });
}

/** Token ids of a fine-tuning file: text as one document, or JSONL with a "text" field per line
 *  (each document followed by the end-of-text id when the tokenizer has one). */
async function tokenizeFile(file: string, tok: Tokenizer, eos: number | undefined): Promise<Int32Array> {
  const raw = await readFile(file, 'utf8');
  const enc = (t: string): number[] => (tok instanceof BpeTokenizer ? tok.encode(t, { disallowedSpecial: [] }) : tok.encode(t));
  if (extname(file) !== '.jsonl') return Int32Array.from(enc(raw));
  const out: number[] = [];
  raw.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let doc: unknown;
    try {
      doc = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${i + 1}: not JSON (${(e as Error).message})`);
    }
    const text = (doc as { text?: unknown })?.text;
    if (typeof text !== 'string') throw new Error(`${file}:${i + 1}: each line needs a "text" string`);
    for (const id of enc(text)) out.push(id);
    if (eos !== undefined) out.push(eos);
  });
  return Int32Array.from(out);
}

/** The last tenth of the tokens (at least a block and one) is the validation split. */
function splitTokens(ids: Int32Array, block: number): { train: Int32Array; val: Int32Array } {
  const nVal = Math.min(ids.length, Math.max(block + 1, Math.floor(ids.length / 10)));
  return { train: ids.subarray(0, ids.length - nVal), val: ids.subarray(ids.length - nVal) };
}

async function openDecoderRun(cfg: TrainConfig, { backend, resume, say }: TaskContext): Promise<TaskRun<Batch>> {
  const dtype = masterDtype(cfg);
  const saved = (resume?.config['attn'] ?? {}) as { init_from?: string };
  const isLoraResume = resume?.config['attn_checkpoint'] === LORA_CHECKPOINT;
  // Where the weights (or, for LoRA, the frozen base) come from.
  const base = isLoraResume ? String(resume!.config['base_model_name_or_path']) : resume ? resume.dir : cfg.init_from;
  const fromScratch = resume ? saved.init_from === 'scratch' : cfg.init_from === 'scratch';
  let model: DecoderLM;
  let hfBase: Record<string, unknown> = {};
  let tok: Tokenizer;
  let data: { train: ArrayLike<number>; val: ArrayLike<number>; dir?: string };
  let tokenizerFiles: Record<string, string>;
  if (fromScratch && !isLoraResume) {
    if (cfg.data !== '') cfg.dataset = await preparedDataFolder(cfg.data, say);
    const ds = await loadDataset(cfg.dataset);
    tokenizerFiles = await readTokenizerFiles(ds.dir, ds.meta);
    data = ds;
    tok = await loadTokenizer(ds.dir);
    const mc = resume ? decoderConfigFromHF(resume.config) : scratchDecoderConfig(cfg, ds.meta.vocab_size);
    model = new DecoderLM(mc, { backend, dtype, seed: cfg.seed, init: !resume });
    if (resume) model.loadStateDict(checkpointTensorsToState(resume.tensors));
    if (!resume) say(`a ${mc.model_type} decoder from scratch: ${(model.numParameters() / 1e6).toFixed(2)}M parameters (saved in the Hugging Face layout)`);
  } else {
    if (isLoraResume || !resume) {
      const loaded = await loadDecoderDir(base, { backend, dtype });
      model = loaded.model;
      hfBase = loaded.hfConfig;
    } else {
      hfBase = resume.config;
      model = new DecoderLM(decoderConfigFromHF(resume.config), { backend, dtype, init: false });
      model.loadStateDict(checkpointTensorsToState(resume.tensors));
    }
    try {
      tok = await loadTokenizer(resume ? resume.dir : base);
    } catch (e) {
      throw new CheckpointError(resume ? resume.dir : base, `no tokenizer to read the fine-tuning data with (${(e as Error).message})`);
    }
    tokenizerFiles = tok.toFiles();
    if (cfg.data === '') throw new Error(`fine-tuning ${base} needs --data FILE (text, or JSONL with a "text" field per line), tokenized with its tokenizer`);
    const ids = await tokenizeFile(cfg.data, tok, model.eosTokenIds[0] ?? tok.eotToken);
    const bad = ids.findIndex((t) => t >= model.config.vocab_size);
    if (bad >= 0) throw new Error(`${cfg.data}: token ${ids[bad]} at position ${bad} is outside the model's vocabulary of ${model.config.vocab_size}`);
    data = { ...splitTokens(ids, cfg.block_size), dir: cfg.data };
    if (!resume) say(`starting from ${base} (${model.config.model_type}, ${(model.numParameters() / 1e6).toFixed(2)}M parameters); ${cfg.data}: ${data.train.length.toLocaleString('en-US')} training and ${data.val.length.toLocaleString('en-US')} validation tokens`);
  }
  if (cfg.block_size > model.config.block_size) throw new Error(`block_size ${cfg.block_size} exceeds the model's context of ${model.config.block_size}`);
  const attnInfo = { init_from: fromScratch ? 'scratch' : base };
  let lora: LoraHandle | null = null;
  if (cfg.lora_rank > 0 || isLoraResume) {
    const targets = cfg.lora_target.split(',').map((t) => t.trim()).filter((t) => t);
    lora = applyLora(model, { rank: cfg.lora_rank, alpha: cfg.lora_alpha > 0 ? cfg.lora_alpha : cfg.lora_rank, targets, dropout: cfg.lora_dropout, seed: cfg.seed });
    if (isLoraResume) loadAdapterState(lora, resume!.tensors);
    else say(`LoRA rank ${cfg.lora_rank} on ${lora.layers.length} layers (${targets.join(', ')}); ${lora.summary()}`);
    const handle = lora;
    return lmRun(cfg, model, data, () => {
      const peftConfig = adapterConfig(handle, { baseModel: base, taskType: 'CAUSAL_LM' });
      return {
        config: { attn_checkpoint: LORA_CHECKPOINT, base_model_name_or_path: base, task: 'lm' },
        model: adapterState(handle),
        tokenizerFiles: {
          ...tokenizerFiles,
          [ADAPTER_CONFIG_FILE]: `${JSON.stringify(peftConfig, null, 2)}\n`,
          [ADAPTER_WEIGHTS_FILE]: serializeSafetensors(peftAdapterState(handle), { format: 'pt' }),
        },
      };
    }, { params: handle.trainableParameters() });
  }
  return lmRun(cfg, model, data, () => ({
    config: { ...decoderConfigToHF(model.config, hfBase), torch_dtype: 'float32', attn: attnInfo },
    model: modelToCheckpointTensors(model),
    tokenizerFiles,
  }));
}

/** Fills nanoGPT's defaults into a partial config and checks it (one error naming every problem). */
export function trainConfig(partial: Record<string, unknown> = {}): TrainConfig {
  return resolveConfig(LM_TASK, partial, 'TrainConfig');
}

/** nanoGPT's train.py defaults (GPT-2 124M on OpenWebText), with attn's GPT variant fields. */
export const TRAIN_DEFAULTS: Readonly<TrainConfig> = Object.freeze(trainConfig());

/** A command-line value for an lm field, typed by its default. */
export function parseTrainConfigValue(key: string, text: string): number | string | boolean {
  return parseFieldValue(key, text, 'lm');
}

export interface TrainResult {
  iter: number;
  best_val_loss: number;
  last_eval: EvalResult | null;
  stopped: boolean;
  out_dir: string;
}

/** What onStart tells about a language-model run. */
export type LMStartInfo = StartInfo & { model: GPT; modelConfig: GPTConfig; tokensPerIter: number };
export type LMHooks = Omit<LoopHooks, 'onStart'> & { onStart?(info: LMStartInfo): void };

/** Trains a GPT on cfg.dataset with the one loop (see runTraining). */
export async function train(input: Record<string, unknown>, hooks: LMHooks = {}, opts: LoopOptions = {}): Promise<TrainResult> {
  const r = await runTraining(LM_TASK, input, hooks as LoopHooks, opts);
  return { iter: r.iter, best_val_loss: r.best, last_eval: r.last_eval, stopped: r.stopped, out_dir: r.out_dir };
}

export interface LMStepResult {
  /** Mean loss over the micro-batches (before the update), aux losses included. */
  loss: number;
  ceLoss: number;
  gradNorm: number;
  moe: { auxLoss: number; util: Record<string, number[]>; dropped: Record<string, number> } | null;
}

/** One update of a GPT from micro-batches (the loop's update, for scripts and tests). */
export function trainStep(model: GPT, opt: AdamW, batches: readonly Batch[], opts: StepOptions = {}): LMStepResult {
  const src = lmSource(model);
  const { values, gradNorm } = updateStep(src, model.parameters(), opt, batches, opts);
  const extra = src.stepRecord() as { moe_util?: Record<string, number[]>; moe_dropped?: Record<string, number> };
  return { loss: values[0]!, ceLoss: values[1]!, gradNorm, moe: extra.moe_util ? { auxLoss: values[2]!, util: extra.moe_util, dropped: extra.moe_dropped! } : null };
}

/** trainStep with nothing read back: stats [loss, ce, (aux), normSq] stay on the device. */
export function trainStepQueued(model: GPT, opt: AdamW, batches: readonly Batch[], opts: StepOptions = {}): { stats: Tensor } {
  return { stats: updateStepQueued(lmSource(model), model.parameters(), opt, batches, opts) };
}

/** Reads queued trainStepQueued stats: per update its loss and gradient norm. */
export function readQueuedStats(queue: readonly { step: number; stats: Tensor }[]): { step: number; loss: number; gradNorm: number }[] {
  return readStats(queue).map((q) => ({ step: q.step, loss: q.values[0]!, gradNorm: q.gradNorm }));
}

/** Adds the gradients of each micro-batch's loss / k into .grad; returns the mean loss. */
export function accumulateGradients(model: GPT, batches: readonly Batch[]): number {
  const sums = accumulateOnDevice(lmSource(model), batches);
  const v = sums.data()[0]!;
  sums.dispose();
  return v;
}

export type { StepMetrics, EvalResult };

/** The weights' dtype: bfloat16 training keeps float32 master weights (its matmuls round). */
function masterDtype(cfg: TrainingConfig): 'float32' | 'float64' {
  return cfg.dtype === 'float64' ? 'float64' : 'float32';
}
