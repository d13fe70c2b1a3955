// The one training-config vocabulary: every field any task takes, its type, default, check and
// one-line meaning. A concept has one name in every task (nanoGPT's and the Hugging Face config's
// where they have one); each task picks the fields it uses and may change their defaults. The CLI
// flags, `--help` and the validation all come from this table.
import { DEVICE_NAMES } from '../backend/index.js';
import { ATTENTION_DEFAULTS, ATTENTION_KINDS, attentionProblems, type FullAttentionFields } from '../nn/attention-config.js';
import { nearestNames } from '../util/options.js';

export type TaskName = 'lm' | 'translation' | 'classification' | 'masked-lm' | 'sft' | 'reward' | 'dpo' | 'ppo';
export const TASK_NAMES: readonly TaskName[] = ['lm', 'translation', 'classification', 'masked-lm', 'sft', 'reward', 'dpo', 'ppo'];

type Check = 'lr' | 'pos-int' | 'nonneg-int' | 'int' | 'pos' | 'nonneg' | 'unit' | 'unit-closed' | 'seed' | 'path' | 'any';

interface FieldSpec {
  default: number | string | boolean;
  doc: string;
  /** Allowed values of a string field. */
  choices?: readonly string[];
  check?: Check;
  /** The tasks that take the field (absent: every task). */
  tasks?: readonly TaskName[];
}

const ENC: readonly TaskName[] = ['classification', 'masked-lm'];
const MODELS: readonly TaskName[] = ['lm', 'translation', 'classification', 'masked-lm'];
const TOKENIZED: readonly TaskName[] = ['translation', 'classification', 'masked-lm'];
/** The alignment tasks (src/tasks/sft.ts, reward.ts, dpo.ts, ppo.ts): they start from a causal model. */
const ALIGN: readonly TaskName[] = ['sft', 'reward', 'dpo', 'ppo'];

/** Every field, in the order `--help` lists them. */
export const FIELDS = {
  // ---- run
  out_dir: { default: 'out/lm', check: 'path', doc: 'where checkpoints (OUT/best, OUT/last), metrics.jsonl and the SVG plots go' },
  init_from: { default: 'scratch', check: 'path', doc: "'scratch', 'resume' (continue OUT/last exactly) or a checkpoint directory to start from" },
  device: { default: 'cpu', choices: DEVICE_NAMES, doc: 'backend: cpu (fastest CPU kernels), webgpu, auto or ref (plain TypeScript)' },
  threads: { default: 0, check: 'nonneg-int', doc: 'CPU threads; 0 = one per core' },
  seed: { default: 1337, check: 'seed', doc: 'seeds the weights, batches, dropout and masks' },
  checkpoint_activations: { default: false, tasks: ['lm'], doc: "recompute each block's activations in the backward pass: less memory, one more forward" },
  dtype: { default: 'float32', choices: ['float32', 'bfloat16', 'float64'], doc: 'arithmetic: bfloat16 = mixed precision (bfloat16 matmuls accumulating in float32; float32 weights, optimizer state and other ops; cpu, ref or webgpu device); float64 on the ref device, lm task only' },
  // ---- length and batches
  max_iters: { default: 600000, check: 'nonneg-int', doc: 'optimizer updates in the whole run' },
  epochs: { default: 0, check: 'nonneg', tasks: ENC, doc: '> 0: passes over the training examples, instead of max_iters' },
  max_minutes: { default: 0, check: 'nonneg', doc: 'wall-clock budget in minutes, evaluations included (0: none); stops at an update boundary' },
  batch_size: { default: 12, check: 'pos-int', tasks: ['lm', 'classification', 'masked-lm', 'translation', ...ALIGN], doc: 'rows per micro-batch (translation: fine-tuning a Hugging Face T5 only; attn\'s encoder-decoder batches by max_tokens)' },
  max_tokens: { default: 4096, check: 'pos-int', tasks: ['translation'], doc: 'token budget per batch (rows × the longer padded side)' },
  gradient_accumulation_steps: { default: 1, check: 'pos-int', doc: 'micro-batches per update (their gradients are averaged)' },
  // ---- optimizer and schedule
  learning_rate: { default: 6e-4, check: 'lr', doc: 'peak learning rate (0 holds the weights still)' },
  lr_decay: { default: 'cosine', choices: ['cosine', 'linear', 'noam', 'constant'], doc: "after warmup: cosine or linear to min_lr at lr_decay_iters, noam (1/√step), or constant" },
  warmup_iters: { default: -1, check: 'int', doc: 'linear warmup updates (-1: 2 % of max_iters, at most 2000)' },
  lr_decay_iters: { default: 0, check: 'nonneg-int', doc: 'the update where the decay reaches min_lr (0: max_iters)' },
  min_lr: { default: -1, check: 'any', doc: 'the floor of the decay (-1: learning_rate / 10)' },
  weight_decay: { default: 0.1, check: 'nonneg', doc: 'AdamW decoupled weight decay, on matrices and embeddings' },
  beta1: { default: 0.9, check: 'unit', doc: 'AdamW β1' },
  beta2: { default: 0.95, check: 'unit', doc: 'AdamW β2' },
  eps: { default: 1e-8, check: 'pos', doc: 'AdamW ε' },
  grad_clip: { default: 1.0, check: 'nonneg', doc: 'clip the global gradient norm to this (0: no clipping)' },
  // ---- differential privacy (DP-SGD, src/train/dp.ts)
  dp_clip: { default: 0, check: 'nonneg', tasks: ['lm', 'classification'], doc: 'DP-SGD: clip each example\'s gradient to this L2 norm C, with Poisson batches and an RDP accountant (0: off; grad_clip and gradient accumulation are then not used)' },
  dp_noise: { default: 0, check: 'nonneg', tasks: ['lm', 'classification'], doc: 'DP-SGD: noise multiplier σ (Gaussian noise of standard deviation σ·dp_clip on the summed gradients)' },
  dp_sample_rate: { default: 0, check: 'nonneg', tasks: ['lm', 'classification'], doc: 'DP-SGD: probability q that an example is in a batch (0: batch_size × gradient_accumulation_steps / examples)' },
  dp_delta: { default: 1e-5, check: 'unit', tasks: ['lm', 'classification'], doc: 'DP-SGD: the δ at which ε is reported in metrics.jsonl' },
  // ---- evaluation, logging, checkpoints
  eval_interval: { default: 2000, check: 'nonneg-int', doc: 'evaluate and checkpoint every this many updates, and at the end (0: only at the end)' },
  eval_iters: { default: 200, check: 'pos-int', tasks: ['lm', 'masked-lm', ...ALIGN], doc: 'batches averaged per evaluation' },
  eval_max: { default: 0, check: 'nonneg-int', tasks: ['classification'], doc: 'dev examples evaluated (0: all)' },
  eval_max_tokens: { default: 6000, check: 'pos-int', tasks: ['translation'], doc: 'token budget of evaluation batches (val loss and decoding)' },
  eval_only: { default: false, tasks: ['lm'], doc: 'evaluate once and exit' },
  always_save_checkpoint: { default: true, doc: 'save OUT/last at every evaluation; false: only when the validation metric improves' },
  log_interval: { default: 1, check: 'pos-int', doc: 'write a metrics.jsonl record every this many updates' },
  // ---- data
  dataset: { default: 'data/shakespeare_char', check: 'path', tasks: ['lm', 'translation'], doc: "lm: a prepared folder (train.bin, val.bin, meta.json); translation: a folder of {split}.{lang}[.gz] files" },
  data: { default: '', tasks: ['lm', 'masked-lm', ...ALIGN], doc: "lm: a text file, prepared (character level) into data/NAME, or with --init_from a Hugging Face decoder, text or JSONL ({\"text\": ...} per line) tokenized with the model's tokenizer; masked-lm: sentences (.tsv or text, .gz allowed), comma-separated" },
  val_fraction: { default: 0.02, check: 'unit', tasks: ['masked-lm'], doc: 'share of the sentences held out for validation' },
  train_file: { default: 'data/sst2/train.tsv', check: 'path', tasks: ['classification'], doc: 'labeled training sentences (TSV: sentence, label)' },
  dev_file: { default: 'data/sst2/dev.tsv', check: 'path', tasks: ['classification'], doc: 'labeled dev sentences: picks the best checkpoint' },
  label_fraction: { default: 1, check: 'unit-closed', tasks: ['classification'], doc: 'use a seeded fraction of the training labels' },
  cda_pairs: { default: '', tasks: ['classification'], doc: 'counterfactual data augmentation: a word-pair TSV (e.g. data/bias/gender-pairs.tsv); each training sentence holding a listed word is added again with the words swapped' },
  src_lang: { default: 'de', tasks: ['translation'], doc: 'source language suffix of the data files' },
  source_prefix: { default: '', tasks: ['translation'], doc: 'with --init_from a Hugging Face T5: the task prefix put before each source sentence (e.g. "translate German to English: ")' },
  tgt_lang: { default: 'en', tasks: ['translation'], doc: 'target language suffix' },
  train_split: { default: 'train', tasks: ['translation'], doc: 'training split name' },
  val_split: { default: 'val', tasks: ['translation'], doc: 'validation split name' },
  test_split: { default: 'test_2016_flickr', tasks: ['translation'], doc: 'test split name (scored at the end by the CLI)' },
  train_limit: { default: 0, check: 'nonneg-int', tasks: ['translation'], doc: 'use only the first N training pairs (0: all)' },
  val_limit: { default: 0, check: 'nonneg-int', tasks: ['translation'], doc: 'use only the first N validation pairs (0: all)' },
  vocab_size: { default: 8000, check: 'pos-int', tasks: TOKENIZED, doc: 'size of the BPE trained on the training text (from scratch only)' },
  tokenizer: { default: '', tasks: ['translation'], doc: 'a tokenizer.json (or its folder) to use instead of training one' },
  mask_prob: { default: 0.15, check: 'unit', tasks: ['masked-lm'], doc: 'share of tokens selected for masked-LM prediction' },
  // ---- model
  block_size: { default: 1024, check: 'pos-int', tasks: [...MODELS, ...ALIGN], doc: 'context length: the longest sequence the model reads' },
  model_type: { default: 'gpt', choices: ['gpt', 'llama', 'mistral', 'qwen2', 'qwen3', 'phi'], tasks: ['lm'], doc: "lm from scratch: attn's GPT, or a Hugging Face decoder family built from n_layer, n_head, n_kv_head, n_embd, block_size (saved in that family's layout)" },
  n_layer: { default: 12, check: 'pos-int', tasks: ['lm', 'classification', 'masked-lm'], doc: 'Transformer blocks' },
  n_layer_enc: { default: 3, check: 'pos-int', tasks: ['translation'], doc: 'encoder blocks' },
  n_layer_dec: { default: 3, check: 'pos-int', tasks: ['translation'], doc: 'decoder blocks' },
  n_head: { default: 12, check: 'pos-int', tasks: MODELS, doc: 'attention heads' },
  n_kv_head: { default: 0, check: 'nonneg-int', tasks: ['lm'], doc: 'key/value heads (grouped-query attention); 0 = n_head' },
  n_embd: { default: 768, check: 'pos-int', tasks: MODELS, doc: 'model width' },
  n_inner: { default: 0, check: 'nonneg-int', tasks: ['translation', 'classification', 'masked-lm'], doc: 'MLP width (0: 4 × n_embd)' },
  dropout: { default: 0.0, check: 'unit', tasks: [...MODELS, ...ALIGN], doc: 'dropout probability' },
  bias: { default: false, tasks: ['lm'], doc: 'biases in the linears and norms' },
  tie_embeddings: { default: true, tasks: ['lm'], doc: 'the LM head shares the token embedding' },
  pos_encoding: { default: 'learned', choices: ['learned', 'sinusoidal', 'rope'], tasks: ['lm', 'classification', 'masked-lm'], doc: 'positions: learned, sinusoidal or rotary (rope: GPT only)' },
  norm_placement: { default: 'pre', choices: ['pre', 'post'], tasks: MODELS, doc: 'norm before (pre) or after (post) each sublayer' },
  norm: { default: 'layernorm', choices: ['layernorm', 'rmsnorm'], tasks: ['lm'], doc: 'LayerNorm or RMSNorm' },
  activation: { default: 'gelu', choices: ['gelu', 'gelu_exact', 'relu', 'swiglu'], tasks: ['lm', 'translation'], doc: 'MLP activation (translation: relu or gelu)' },
  layer_norm_epsilon: { default: 1e-5, check: 'pos', tasks: ['lm'], doc: 'ε of the norms' },
  label_smoothing: { default: 0.1, check: 'unit', tasks: ['translation'], doc: 'label smoothing of the cross-entropy' },
  attention: { default: ATTENTION_DEFAULTS.attention, choices: ATTENTION_KINDS, tasks: MODELS, doc: 'self-attention variant: dense, local, strided, fixed, linear, performer (linformer: encoders only)' },
  attn_window: { default: ATTENTION_DEFAULTS.attn_window, check: 'pos-int', tasks: MODELS, doc: 'local: keys per query' },
  attn_stride: { default: ATTENTION_DEFAULTS.attn_stride, check: 'pos-int', tasks: MODELS, doc: 'strided: the stride; fixed: the block length' },
  attn_summary: { default: ATTENTION_DEFAULTS.attn_summary, check: 'pos-int', tasks: MODELS, doc: 'fixed: summary positions per block' },
  performer_features: { default: ATTENTION_DEFAULTS.performer_features, check: 'pos-int', tasks: MODELS, doc: 'performer: random features per head' },
  performer_redraw_interval: { default: ATTENTION_DEFAULTS.performer_redraw_interval, check: 'nonneg-int', tasks: MODELS, doc: 'performer: forward calls between feature redraws (0: never)' },
  linformer_k: { default: ATTENTION_DEFAULTS.linformer_k, check: 'pos-int', tasks: MODELS, doc: 'linformer: projected sequence length' },
  moe_experts: { default: 0, check: 'nonneg-int', tasks: ['lm'], doc: 'experts per mixture-of-experts layer (0: dense MLPs)' },
  moe_top_k: { default: 1, check: 'pos-int', tasks: ['lm'], doc: 'experts per token (1 or 2)' },
  moe_capacity_factor: { default: 1.25, check: 'pos', tasks: ['lm'], doc: 'training capacity per expert, as a multiple of its fair share' },
  moe_aux_loss_coef: { default: 0.01, check: 'nonneg', tasks: ['lm'], doc: 'load-balancing loss coefficient' },
  moe_every: { default: 1, check: 'pos-int', tasks: ['lm'], doc: 'every k-th block is a mixture of experts' },
  // ---- classification
  n_classes: { default: 2, check: 'pos-int', tasks: ['classification'], doc: 'classes' },
  classifier_dropout: { default: 0.1, check: 'unit', tasks: ['classification'], doc: 'dropout before the classification head' },
  pooling: { default: 'cls', choices: ['cls', 'mean'], tasks: ['classification'], doc: 'the head reads [CLS] or the mean of the tokens' },
  prompt: { default: '', tasks: ['classification'], doc: 'prompt-based classification: a template holding [MASK] once, after each sentence' },
  verbalizers: { default: 'terrible,great', tasks: ['classification'], doc: 'with prompt: one word per class, label 0 first' },
  lora_rank: { default: 0, check: 'nonneg-int', tasks: ['classification', 'lm', ...ALIGN], doc: '> 0: LoRA adapters of this rank (classification: on the encoder linears, merged when saved; lm: on --lora_target of a Hugging Face decoder, saved unmerged in the PEFT layout); --lora_r is the same' },
  lora_alpha: { default: 0, check: 'nonneg', tasks: ['classification', 'lm', ...ALIGN], doc: 'LoRA scale numerator (0: lora_rank)' },
  lora_target: { default: 'q_proj,v_proj', tasks: ['lm', ...ALIGN], doc: "lm: comma-separated module names that get adapters (PEFT's target_modules)" },
  lora_dropout: { default: 0, check: 'unit', tasks: ['lm', ...ALIGN], doc: "lm: dropout on the adapters' input" },
  // ---- alignment (docs/alignment.md)
  pack: { default: true, tasks: ['sft'], doc: 'lay several examples end to end in each row, attention never crossing them (attn GPTs)' },
  ref_model: { default: '', tasks: ['dpo', 'ppo'], doc: 'the frozen reference model (default: init_from)' },
  beta: { default: 0.1, check: 'pos', tasks: ['dpo'], doc: "DPO's β (the KL strength); IPO's τ" },
  dpo_loss: { default: 'dpo', choices: ['dpo', 'ipo'], tasks: ['dpo'], doc: 'dpo: −log σ(β·margin) (Rafailov et al. 2023); ipo: (margin − 1/(2β))² (Azar et al. 2023)' },
  reward_model: { default: '', tasks: ['ppo'], doc: "what scores a response: an 'attn train reward' checkpoint, or an attn classifier (the probability of label 1)" },
  kl_coef: { default: 0.05, check: 'nonneg', tasks: ['ppo'], doc: 'the per-token KL penalty coefficient (the initial one when kl_target > 0)' },
  kl_target: { default: 0, check: 'nonneg', tasks: ['ppo'], doc: '> 0: adapt kl_coef toward this KL per response (Ziegler et al. 2019); 0: fixed' },
  kl_horizon: { default: 10000, check: 'pos', tasks: ['ppo'], doc: "the adaptive controller's horizon, in responses" },
  ppo_epochs: { default: 4, check: 'pos-int', tasks: ['ppo'], doc: 'passes over each rollout batch' },
  rollout_batch: { default: 16, check: 'pos-int', tasks: ['ppo'], doc: 'responses sampled per rollout (split into batches of batch_size)' },
  ppo_clip: { default: 0.2, check: 'unit', tasks: ['ppo'], doc: "the policy ratio's clip range ε" },
  value_clip: { default: 0.2, check: 'nonneg', tasks: ['ppo'], doc: "the value's clip range around the rollout's value (0: none)" },
  vf_coef: { default: 0.1, check: 'nonneg', tasks: ['ppo'], doc: 'weight of the value loss' },
  gamma: { default: 1, check: 'unit-closed', tasks: ['ppo'], doc: 'discount' },
  gae_lambda: { default: 0.95, check: 'unit-closed', tasks: ['ppo'], doc: "GAE's λ" },
  max_new_tokens: { default: 32, check: 'pos-int', tasks: ['ppo'], doc: 'the longest sampled response' },
  temperature: { default: 1, check: 'pos', tasks: ['ppo'], doc: 'sampling temperature of the rollouts' },
  // ---- translation decoding at evaluation
  decode_len_a: { default: 1, check: 'nonneg', tasks: ['translation'], doc: 'greedy decoding for val BLEU stops after a·source length + b tokens' },
  decode_len_b: { default: 10, check: 'nonneg-int', tasks: ['translation'], doc: 'see decode_len_a' },
} as const satisfies Record<string, FieldSpec>;

export type FieldName = keyof typeof FIELDS;
type Widen<T> = T extends number ? number : T extends string ? string : T extends boolean ? boolean : T;
/** A whole config: every field, resolved. Tasks read the fields they take. */
export type TrainingConfig = { -readonly [K in FieldName]: Widen<(typeof FIELDS)[K]['default']> };

const SPECS = FIELDS as unknown as Record<string, FieldSpec>;

/** The fields a task takes. */
export function taskFields(task: TaskName): FieldName[] {
  return (Object.keys(FIELDS) as FieldName[]).filter((k) => !SPECS[k]!.tasks || SPECS[k]!.tasks!.includes(task));
}

/** The message for a field name that is not in the vocabulary (or not taken by the task). */
export function unknownFieldMessage(k: string, task?: TaskName): string {
  const all = Object.keys(FIELDS);
  if (task && all.includes(k)) return `field '${k}' does not apply to ${task} training (it is for ${SPECS[k]!.tasks!.join(', ')})`;
  const valid = task ? taskFields(task) : all;
  const close = nearestNames(k, valid);
  return `unknown field '${k}'${close.length ? ` (did you mean ${close.map((c) => `'${c}'`).join(' or ')}?)` : ''}`;
}

const show = (v: unknown): string => (typeof v === 'string' ? `'${v}'` : String(v));

function checkField(k: string, v: unknown, problems: string[]): void {
  const s = SPECS[k]!;
  const bad = (want: string): void => void problems.push(`${k} must be ${want}, got ${show(v)}`);
  if (s.choices) {
    if (!s.choices.includes(v as string)) bad(`one of ${s.choices.map((a) => `'${a}'`).join(', ')}`);
    return;
  }
  if (typeof s.default === 'boolean') {
    if (typeof v !== 'boolean') bad('true or false');
    return;
  }
  if (typeof s.default === 'string') {
    if (typeof v !== 'string') bad('a string');
    else if (s.check === 'path' && v === '') bad('a non-empty path');
    return;
  }
  const n = typeof v === 'number' && Number.isFinite(v) ? v : NaN;
  switch (s.check) {
    case 'pos-int': if (!(Number.isInteger(v) && n >= 1)) bad('a positive integer'); break;
    case 'nonneg-int': if (!(Number.isInteger(v) && n >= 0)) bad('a non-negative integer'); break;
    case 'int': if (!Number.isInteger(v)) bad('an integer'); break;
    case 'pos': if (!(n > 0)) bad('a positive number'); break;
    case 'lr': if (!(n >= 0)) problems.push(`${k} must be a positive number, got ${show(v)} (or 0, which holds the weights still)`); break;
    case 'nonneg': if (!(n >= 0)) bad('a non-negative number'); break;
    case 'unit': if (!(n >= 0 && n < 1)) bad('in [0, 1)'); break;
    case 'unit-closed': if (!(n > 0 && n <= 1)) bad('in (0, 1]'); break;
    case 'seed': if (!(Number.isInteger(v) && n >= 0 && n < 2 ** 32)) bad('an integer in [0, 2^32)'); break;
    default: if (Number.isNaN(n)) bad('a number');
  }
}

export interface TaskDefaults {
  task: TaskName;
  /** The task's own defaults over the vocabulary's. */
  defaults: Partial<TrainingConfig>;
  /** Cross-field problems of the task (divisibility, choices the task narrows). */
  check?(cfg: TrainingConfig, problems: string[]): void;
}

/**
 * Fills the task's defaults into a partial config and checks it: one error naming every unknown
 * field (with the nearest valid name), every field the task does not take, and every bad value.
 * `undefined` counts as absent. Derived defaults (warmup_iters -1, lr_decay_iters 0, min_lr -1)
 * are resolved from max_iters and learning_rate, so a short run gets a schedule that fits it.
 */
export function resolveConfig(t: TaskDefaults, partial: Record<string, unknown>, what = 'config'): TrainingConfig {
  const problems: string[] = [];
  const fields = new Set<string>(taskFields(t.task));
  for (const k of Object.keys(partial)) if (!fields.has(k) && partial[k] !== undefined) problems.push(unknownFieldMessage(k, t.task));
  const base: Record<string, unknown> = {};
  for (const k of fields) base[k] = SPECS[k]!.default;
  Object.assign(base, t.defaults);
  for (const [k, v] of Object.entries(partial)) if (v !== undefined && fields.has(k)) base[k] = v;
  for (const k of fields) checkField(k, base[k], problems);
  const cfg = base as TrainingConfig;
  // Derived defaults and cross-field checks run even beside other problems (one error lists all).
  const int = (v: unknown): v is number => Number.isInteger(v);
  if (int(cfg.warmup_iters) && cfg.warmup_iters < 0 && int(cfg.max_iters)) cfg.warmup_iters = Math.min(2000, Math.ceil(cfg.max_iters * 0.02));
  if (cfg.lr_decay_iters === 0) cfg.lr_decay_iters = cfg.max_iters;
  if (typeof cfg.min_lr === 'number' && cfg.min_lr < 0) cfg.min_lr = cfg.learning_rate / 10;
  if (cfg.lr_decay !== 'noam' && cfg.lr_decay !== 'constant') {
    if (cfg.min_lr > cfg.learning_rate && cfg.learning_rate >= 0) problems.push(`min_lr (${cfg.min_lr}) must not exceed learning_rate (${cfg.learning_rate})`);
    if (cfg.lr_decay_iters < cfg.warmup_iters && partial['lr_decay_iters'] !== undefined) problems.push(`lr_decay_iters (${cfg.lr_decay_iters}) must be at least warmup_iters (${cfg.warmup_iters})`);
  }
  if (fields.has('attention')) attentionProblems(cfg as unknown as FullAttentionFields, t.task === 'lm' ? 'GPT' : t.task === 'translation' ? 'the decoder' : null, problems);
  if (fields.has('n_head') && int(cfg.n_embd) && int(cfg.n_head) && cfg.n_head > 0 && cfg.n_embd % cfg.n_head !== 0) problems.push(`n_embd (${cfg.n_embd}) must be divisible by n_head (${cfg.n_head})`);
  t.check?.(cfg, problems);
  if (problems.length) throw new Error(`${what}: ${[...new Set(problems)].join('; ')}`);
  return cfg;
}

/**
 * A command-line value for a field, typed by its default: numbers ('3e-4'), booleans ('true',
 * 'false', '1', '0'), strings as they are. Throws for unknown fields (with the nearest name).
 */
export function parseFieldValue(key: string, text: string, task?: TaskName): number | string | boolean {
  if (!Object.hasOwn(FIELDS, key) || (task && !taskFields(task).includes(key as FieldName))) throw new Error(unknownFieldMessage(key, task));
  const def = SPECS[key]!.default;
  if (typeof def === 'number') {
    const v = text.trim() === '' ? NaN : Number(text);
    if (!Number.isFinite(v)) throw new Error(`${key} must be a number, got '${text}'`);
    return v;
  }
  if (typeof def === 'boolean') {
    const t = text.toLowerCase();
    if (t === 'true' || t === '1') return true;
    if (t === 'false' || t === '0') return false;
    throw new Error(`${key} must be true or false, got '${text}'`);
  }
  return text;
}

/** `--help` lines for a task's fields: the flag, its default and its meaning. */
export function fieldHelp(t: TaskDefaults, skip: readonly string[] = []): string {
  const lines: string[] = [];
  for (const k of taskFields(t.task)) {
    if (skip.includes(k)) continue;
    const d = (t.defaults as Record<string, unknown>)[k] ?? SPECS[k]!.default;
    const s = SPECS[k]!;
    const flag = `--${k} ${s.choices ? s.choices.join('|') : typeof d === 'boolean' ? 'true|false' : typeof d === 'number' ? 'N' : 'S'}`;
    const dflt = typeof d === 'string' ? (d === '' ? '""' : d) : String(d);
    lines.push(`  ${flag.padEnd(34)} ${s.doc} (default ${dflt})`);
  }
  return lines.join('\n');
}
