#!/usr/bin/env node
// attn's command line. Each command lives in its own module and is loaded on demand.
import { Flags, parseArgs, UsageError } from './args.js';

interface Command {
  summary: string;
  help: string;
  booleans?: string[];
  /** Takes a subcommand as its first positional (in f.parsed.positionals). */
  subcommand?: boolean;
  run: (f: Flags) => Promise<void>;
}

const COMMANDS: Record<string, Command> = {
  train: {
    summary: 'train a GPT (presets shakespeare-char, shakespeare-char-tiny, or a JSON config) or the encoder-decoder (multi30k-de-en)',
    help: `attn train [--preset NAME | --config FILE.json] [--out DIR] [--FIELD VALUE ...]

Trains a decoder-only Transformer, nanoGPT style, with a progress bar (loss, tokens/s, time left).
Any field of the training config can be set by name, e.g. --max_iters 50 --batch_size 8 --device cpu.

  --preset NAME        shakespeare-char (6 layers, 6 heads, 384 wide, context 256, dropout 0.2)
                       multi30k-de-en (the 2017 encoder-decoder on Multi30k German→English; BLEU-vs-time in metrics.jsonl)
                       shakespeare-char-tiny (4 layers, 4 heads, 128 wide, context 64, batch 12, 2000 iters)
  --config FILE        a JSON object of config fields (flags override it)
  --out DIR            where checkpoints (DIR/best, DIR/last), metrics.jsonl and loss.svg go
  --data FILE|DIR      a text file (prepared on the fly with a character tokenizer) or a prepared directory
  --init_from resume   continue the run in --out from DIR/last
  --device cpu|webgpu|auto|ref     backend (default cpu); --threads N
  --sample N           print N generated characters at the end (default 300; 0 for none)`,
    subcommand: true, // attn train reward (docs/alignment.md)
    run: async (f) => (await import('./train.js')).runTrain(f),
  },
  sample: {
    summary: 'generate text from a trained model',
    help: `attn sample --model DIR [--prompt TEXT] [options]

  --model DIR            a checkpoint directory (config.json + model.safetensors + tokenizer files):
                         attn's, Hugging Face GPT-2, llama, mistral, qwen2, qwen3 or phi, or a
                         LoRA adapter directory (its base model with the adapters on)
  --adapter DIR          PEFT LoRA adapters to apply to --model (unmerged)
  --prompt TEXT          the start of the text (default: a newline, or <|endoftext|> for GPT-2 vocabularies)
  --max_new_tokens N     tokens to generate (default 500)
  --temperature T        0 means greedy (default 0.8)
  --top_k K, --top_p P   truncate the distribution before sampling
  --repetition_penalty R penalise tokens already in the context (1 = off)
  --stop TEXT            stop when TEXT is produced (may be repeated as --stop=a --stop=b is not supported: use | to separate)
  --seed N               reproducible sampling (default 1337)
  --num_samples N        independent samples (default 1)
  --no_cache             generate without the KV cache
  --dtype D              how the weight matrices are stored: float32 (default), float16 (--device
                         webgpu) or bfloat16 (--device cpu): half the memory, arithmetic in float32;
                         or int8, int4, int4z: weight-only quantization (see below)
  --quantize_embeddings, --quantize_head   with --dtype int*: the token embedding / a separate LM
                         head quantized too (default: they stay float32)
  --f16_math             with --dtype float16, on an adapter with shader-f16: the large matmuls
                         in float16 arithmetic (about 1e-3 relative error; float32 elsewhere)
  --device cpu|webgpu|auto|ref, --threads N`,
    booleans: ['no_cache', 'f16_math', 'quantize_embeddings', 'quantize_head'],
    run: async (f) => (await import('./sample.js')).runSample(f),
  },
  translate: {
    summary: 'translate sentences on stdin with an encoder-decoder checkpoint (beam search or greedy)',
    help: '',
    booleans: ['greedy'],
    run: async (f) => (await import('./translate.js')).runTranslate(f),
  },
  finetune: {
    summary: 'fine-tune a language model (attn finetune lm --init_from DIR --data FILE [--lora_r 8]) or an encoder classifier (attn finetune --task sst2), full or LoRA; align one (attn finetune sft|dpo|ppo, docs/alignment.md)',
    help: '',
    booleans: ['quiet'],
    subcommand: true,
    run: async (f) => (await import('./finetune.js')).runFinetune(f),
  },
  chat: {
    summary: 'chat with a chat model in the terminal (its chat template, streamed replies)',
    help: `attn chat --model DIR [--system TEXT] [options]

An interactive conversation: each line you type is a user turn; the reply streams as it is
generated and the conversation is kept (rendered with the model's chat template from
tokenizer_config.json, by @huggingface/jinja). Generation stops at the model's end-of-turn ids
(config.json and generation_config.json eos_token_id, the template's eos_token). An empty line or
Ctrl-D ends it. Piped input works too: one user turn per line.

  --model DIR            a model directory with tokenizer.json and a chat template, or a LoRA
                         adapter directory (its base with the adapters on)
  --adapter DIR          PEFT LoRA adapters to apply to --model
  --system TEXT          a system message first
  --dtype int8|int4|int4z weight-only quantization of every linear layer as it loads (int8 per
                         output channel; int4 groups of 32, symmetric; int4z with zero points);
                         an 'attn quantize' directory loads quantized by itself
  --quantize_embeddings  with --dtype int*: the token embedding too (and a tied LM head)
  --quantize_head        with --dtype int*: a separate LM head too
  --max_new_tokens N     at most N tokens per reply (default 512)
  --temperature T        0 is greedy (default 0.7); --top_p P (default 0.9), --top_k K
  --seed N               reproducible replies (default 1337)
  --device cpu|webgpu|auto|ref, --threads N`,
    booleans: ['quantize_embeddings', 'quantize_head'],
    run: async (f) => (await import('./chat.js')).runChat(f),
  },
  serve: {
    summary: 'serve a model over the OpenAI HTTP API (completions, chat, streaming) with continuous batching',
    help: `attn serve --model DIR [options]

An OpenAI-compatible HTTP server (docs/serve.md): GET /v1/models, POST /v1/completions,
POST /v1/chat/completions (the model's chat template, else plain "role: content" lines),
stream: true as server-sent events, GET /health, GET /metrics (Prometheus text). Requests join
and leave one batched decode step at every token (continuous batching). SIGTERM or Ctrl-C stops
accepting, finishes the running requests and exits.

  --model DIR            a model directory (attn checkpoint, Hugging Face llama/mistral/qwen/phi/
                         GPT-2, a .gguf file) or a LoRA adapter directory
  --adapter DIR          PEFT LoRA adapters to apply to --model
  --dtype int8|int4|int4z weight-only quantization while loading (default float32)
  --host H               address to listen on (default 127.0.0.1)
  --port N               port (default 8080; 0 picks a free one)
  --api-key KEY          require 'Authorization: Bearer KEY' on /v1/* (or ATTN_API_KEY)
  --max-batch N          sequences decoded together (default 16)
  --max-tokens N         largest max_tokens a request may ask for (default 4096)
  --max-queue N          sequences that may wait for a slot; more get 429 (default 4 x max-batch)
  --max-body BYTES       largest request body; larger get 413 (default 1048576)
  --model-name NAME      the id clients send as 'model' (default the directory's name)
  --quiet                no request log on stderr
  --device cpu|webgpu|auto|ref, --threads N`,
    booleans: ['quiet', 'quantize_embeddings', 'quantize_head'],
    run: async (f) => (await import('./serve.js')).runServe(f),
  },
  studio: {
    summary: 'serve the studio page: train, fine-tune (LoRA) and look inside a GPT in a browser tab',
    help: `attn studio [--port N] | --out DIR

Serves the studio (docs/studio.md) on 127.0.0.1 with the cross-origin isolation headers and prints
its URL: pick a text (Tiny Shakespeare is bundled), a model size and attention variant, and train
in the tab on WebGPU or the Web Worker cpu backend, with checkpoints kept in browser storage.

  --port N     port to listen on (default 8080; 0 picks a free one)
  --out DIR    instead of serving, write the page and the modules it needs as static files`,
    run: async (f) => (await import('./studio.js')).runStudio(f),
  },
  export: {
    summary: 'write a llama or GPT-2 model as a GGUF file (llama.cpp), or a GPT or decoder as ONNX',
    help: `attn export gguf --model DIR --out FILE.gguf [--type f32|f16|q8_0|q4_0|q4_1]
attn export onnx --model DIR --out FILE.onnx [--weights float32|int8|int4] [--quantize_head] [--quantize_embeddings] [--int8_op matmulnbits|dequantize] [--max_positions N] [--external_data]

Writes a Hugging Face llama directory (q and k rows in llama.cpp's interleaved rotary order) or
a GPT-2-shaped attn GPT (llama.cpp's gpt2 architecture) as GGUF, with the directory's tokenizer
(tokenizer.ggml.* and tokenizer.huggingface.json). The block types quantize the 2-D weights whose
rows are whole blocks of 32; norms stay f32. 'attn sample|logprobs --model FILE.gguf' reads it.

onnx: a GPT (GPT-2's layout and attn's variants of it), llama, mistral, qwen2, qwen3 or phi
directory as one ONNX file (opset 17) in ONNX Runtime GenAI's layout (input_ids, attention_mask,
position_ids, past_key_values.N.key/value -> logits, present.N.key/value), config and tokenizer
files copied beside it (docs/onnx.md). int8/int4 are attn's own quantization (int8 per row, int4
groups of 32) as com.microsoft.MatMulNBits. --external_data writes the weights to FILE.onnx.data
(ONNX external data); a model past protobuf's 2 GiB gets it anyway.`,
    subcommand: true,
    run: async (f) => (await import('./export.js')).runExport(f),
  },
  merge: {
    summary: 'merge LoRA adapters into their base model and save the result (Hugging Face layout)',
    help: `attn merge --model BASE --adapter DIR --out OUT

Loads BASE (a Hugging Face decoder or an attn GPT checkpoint), applies the PEFT adapters in DIR
(adapter_config.json + adapter_model.safetensors), folds W + (alpha/r)·B·A into the weights and
writes OUT with the base's tokenizer: a plain model any loader reads.

  --model BASE           the base model directory (default: the adapter's base_model_name_or_path)
  --adapter DIR          the adapter directory (required)
  --out OUT              where the merged model goes (required)
  --dtype float32|bfloat16   tensor type of the written weights (default float32)`,
    run: async (f) => (await import('./merge.js')).runMerge(f),
  },
  quantize: {
    summary: 'quantize a model\'s linear layers to int8 or int4 and save it (loads back quantized)',
    help: `attn quantize --model DIR --dtype int8|int4|int4z --out OUT [--quantize_embeddings] [--quantize_head]

Weight-only quantization of every linear layer of a Hugging Face llama, mistral, qwen2, qwen3 or
phi directory, read one tensor at a time (the float model is never in memory): int8 per output
channel (symmetric), int4 in groups of 32 (symmetric, as llama.cpp's Q4_0) or int4z (groups of
32 with zero points). OUT holds config.json with quantization_config, model.safetensors with
the packed levels ({module}.weight I8/U8, {module}.weight_scale F32, {module}.weight_zero_point
U8) and the tokenizer files; sample, logprobs, chat and load() read it quantized. The matmul
kernels read the packed weights directly (native, WebAssembly and WebGPU).

  --model DIR            the float model directory (required)
  --dtype int8|int4|int4z  the format (required)
  --out OUT              where the quantized model goes (required)
  --quantize_embeddings  the token embedding too (a tied LM head reads it quantized)
  --quantize_head        a separate LM head too`,
    booleans: ['quantize_embeddings', 'quantize_head'],
    run: async (f) => (await import('./quantize.js')).runQuantize(f),
  },
  'pretrain-mlm': {
    summary: 'pre-train a BERT-style encoder with masked-language modelling on unlabeled text',
    help: '',
    run: async (f) => (await import('./pretrain-mlm.js')).runPretrainMLM(f),
  },
  logprobs: {
    summary: 'print the log-probability of each token given the ones before it, as JSON',
    help: `attn logprobs --model DIR (--text TEXT | --tokens 1,2,3)

Prints {"tokens":[...],"logprobs":[...]} where logprobs[i] is the natural-log probability of
tokens[i+1] given tokens[0..i].

  --model DIR            a checkpoint directory (required): attn's, Hugging Face GPT-2, llama,
                         mistral, qwen2, qwen3, phi, or a LoRA adapter directory
  --adapter DIR          PEFT LoRA adapters to apply to --model
  --text TEXT            the text, encoded with the checkpoint's tokenizer
  --tokens 1,2,3         or the token ids themselves
  --dtype int8|int4|int4z weight-only quantization of every linear layer as it loads (int8 per
                         output channel; int4 groups of 32, symmetric; int4z with zero points);
                         an 'attn quantize' directory loads quantized by itself
  --quantize_embeddings  with --dtype int*: the token embedding too (and a tied LM head)
  --quantize_head        with --dtype int*: a separate LM head too
  --device D             cpu (default), webgpu, auto or ref
  --threads N            CPU threads (default: one per core)`,
    booleans: ['quantize_embeddings', 'quantize_head'],
    run: async (f) => (await import('./logprobs.js')).runLogprobs(f),
  },
  viz: {
    summary: 'attention maps, logit lens, attributions and head ablation of a text, in a local web page',
    help: `attn viz --model DIR --text TEXT [--port 0] [--out FILE.json] [--k 5] [--steps 32] [--no_ablation] [--max_tokens 64] [--device cpu|webgpu|auto|ref]

Interpretability of one text (docs/interpretability.md): the attention of every layer and head,
the logit lens (top --k next tokens read from each layer's residual stream), token attributions
(gradient × input and integrated gradients with --steps steps) of the next-token prediction or,
for a classifier from 'attn finetune', of its predicted class, and head ablation (the loss change
with each head zeroed; --no_ablation skips its layers × heads forwards).

Serves the page and /doc.json on 127.0.0.1 only (port 0: any free port) and prints the URL;
Ctrl-C stops it. With --out, writes the JSON document instead and exits.`,
    booleans: ['no_ablation'],
    run: async (f) => (await import('./viz.js')).runViz(f),
  },
  tokenize: {
    summary: 'print the token ids of a text as a JSON array',
    help: `attn tokenize --tokenizer (gpt2 | DIR) (--text TEXT | --file FILE)

  --tokenizer gpt2     GPT-2's byte-level BPE (ids identical to tiktoken's gpt2 encoding)
  --tokenizer DIR      a directory with tokenizer.json, encoder.json + vocab.bpe, or char_tokenizer.json
  --allow_special      encode <|endoftext|> and other special tokens as such`,
    booleans: ['allow_special'],
    run: async (f) => (await import('./tokenize.js')).runTokenize(f),
  },
  prepare: {
    summary: 'turn a text file into token-id files with a train/validation split',
    help: `attn prepare --input FILE --out DIR [--tokenizer char|gpt2|bpe|DIR] [--vocab_size N] [--val_fraction F] [--cda_pairs FILE]

Writes DIR/train.bin and DIR/val.bin (uint16 when the vocabulary fits, else uint32), DIR/meta.json
and the tokenizer files, for 'attn train --dataset DIR'.

  --input FILE           the text (required)
  --out DIR              where the files go (required)
  --tokenizer T          char (default): one id per character; gpt2: GPT-2's BPE; bpe: train a
                         byte-level BPE of --vocab_size tokens on the text; DIR: the tokenizer files there
  --vocab_size N         with --tokenizer bpe: the vocabulary size, at least 257 (no default)
  --val_fraction F       share of the tokens, from the end, held out for validation (default 0.1)
  --cda_pairs FILE       counterfactual data augmentation (e.g. data/bias/gender-pairs.tsv): the
                         word-swapped copy of each training line holding a listed word is added to
                         train.bin; val.bin stays the un-augmented text's (use the same --tokenizer DIR)`,
    run: async (f) => (await import('./prepare.js')).runPrepare(f),
  },
  eval: {
    summary: 'evaluation: corpus BLEU of translations (sacreBLEU-compatible), accuracy of a classifier, perplexity (ppl) and multiple-choice scoring (mc) of a language model',
    help: `attn eval bleu --hyp FILE --ref FILE[,FILE2,...] [--lowercase] [--tokenize 13a|none]

Prints {"bleu":…, "precisions":[…4], "bp":…, "sys_len":…, "ref_len":…} computed as sacreBLEU does
by default (13a tokenisation, 4-grams, brevity penalty, exp smoothing) on detokenised text.

  --hyp FILE             system output, one segment per line (required)
  --ref FILE[,FILE2]     references, one file per reference set (required)
  --lowercase            compare lower-cased (default: cased)
  --tokenize 13a|none    sacreBLEU's tokenisation (default 13a)`,
    subcommand: true,
    booleans: ['lowercase'],
    run: async (f) => (await import('./eval.js')).runEval(f),
  },
  sweep: {
    summary: 'scaling laws: train a grid of GPTs over size and tokens (attn sweep), fit Kaplan and Chinchilla laws to it (attn sweep fit)',
    help: '',
    subcommand: true,
    run: async (f) => (await import('./sweep.js')).runSweepCommand(f),
  },
  info: {
    summary: 'show the backend, and a model\'s parameters, config and FLOPs per token',
    help: `attn info [--model DIR | --preset NAME] [--device cpu|webgpu|auto|ref] [--threads N]

Prints the backend (kernels, threads, the WebGPU adapter) and the machine; with a model, its
parameter count, FLOPs per token and config.

  --model DIR            a GPT checkpoint directory (default: none)
  --preset NAME          or a language-model preset's model (default: none)
  --device D             cpu (default), webgpu, auto or ref
  --threads N            CPU threads (default: one per core)`,
    run: async (f) => (await import('./info.js')).runInfo(f),
  },
  bench: {
    summary: 'benchmarks: `attn bench attention` times attention variants as the context doubles',
    help: `attn bench attention [options]

Time and peak memory of one attention layer's forward + backward (projections included) for each
variant as T doubles: naive (softmax(QKᵀ)V materialised with plain ops), dense (the fused kernel)
and every other variant the model has (local, strided, fixed, linear, linformer, performer;
missing ones are reported as skipped). Peak memory is the largest backend heap in use during
the step minus before it (exact on cpu: every allocation is observed).

  --min_t N, --max_t N   context lengths, doubling (default 128 .. 8192)
  --batch_size B         (default 1); --n_embd C (384), --n_head H (6), --head_dim D (C/H)
  --variants a,b         a subset (default all)
  --max_s S              stop a variant once a step takes over S seconds (default 10)
  --reps N               timed repeats per cell after a warm-up, within ~2 s (default 3; the fastest is reported)
  --json                 one JSON object per row on stdout (variant, T, ms, peak_bytes, ...)
  --out DIR              write attention-time.svg, attention-memory.svg and attention.json
  --attn_window, --attn_stride, --attn_summary, --n_kv_head, --performer_features,
  --linformer_k ...      passed to the model's attention config
  --device cpu|webgpu|auto|ref, --threads N`,
    booleans: ['json'],
    subcommand: true,
    run: async (f) => {
      const sub = f.parsed.positionals[0];
      if (sub !== 'attention') throw new UsageError(`bench: ${sub === undefined ? 'missing subcommand' : `unknown subcommand '${sub}'`} (known: attention)`);
      if (f.parsed.positionals.length > 1) throw new UsageError(`bench: unexpected argument '${f.parsed.positionals[1]}'`);
      return (await import('./bench-attention.js')).runBenchAttention(f);
    },
  },
  probe: {
    summary: 'probes of what models learn and keep: in-context learning (icl), canary exposure and extraction, membership inference, bias',
    help: 'attn probe <probe> [options]: see attn probe --help',
    subcommand: true,
    run: async (f) => (await import('./probe.js')).runProbe(f),
  },
  compare: {
    summary: 'train the same small GPT with each attention variant (and MoE) and compare them',
    help: `attn compare [--variants dense,local,...] [--out DIR] [options]

Trains one small GPT per variant on Tiny Shakespeare (character level, prepared into --data on
first use) with the same token budget, and prints validation loss, tokens/s and peak memory
side by side; writes DIR/<variant>/ (checkpoints, metrics), DIR/compare.svg (validation-loss
curves) and DIR/compare.json. 'moe' is an MoE FFN model (8 experts, top-2) with as many active
parameters as the dense one. Variants the code base lacks are reported as skipped.

  --variants LIST        dense, local, strided, fixed, linear, linformer, performer, moe (default all)
  --out DIR              (default out/compare)
  --max_iters N (200), --batch_size B (8), --block_size T (128), --n_layer L (2), --n_embd C (64),
  --n_head H (4), --eval_interval N (max_iters/5), --eval_iters N (10), --learning_rate (1e-3),
  --warmup_iters (20), --seed, --data DIR (data/shakespeare_char)
  --attn_window (block_size/4), --attn_stride (≈√block_size), --attn_summary, --n_kv_head,
  --performer_features, --linformer_k ...   the variants' settings
  --json                 also print one JSON object per variant on stdout
  --device cpu|webgpu|auto|ref, --threads N`,
    booleans: ['json'],
    run: async (f) => (await import('./compare.js')).runCompare(f),
  },
};

/** Commands whose help lives in their own module. */
async function helpOf(name: string, cmd: Command, sub?: string): Promise<string> {
  if (name === 'probe') return (await import('./probe.js')).probeHelp(sub);
  if (name === 'train') return (await import('./train.js')).trainHelp();
  if (name === 'translate') return (await import('./translate.js')).TRANSLATE_HELP;
  if (name === 'finetune') return (await import('./finetune.js')).FINETUNE_HELP;
  if (name === 'pretrain-mlm') return (await import('./pretrain-mlm.js')).PRETRAIN_MLM_HELP;
  if (name === 'sweep') return (await import('./sweep.js')).SWEEP_HELP;
  if (name === 'eval') return `${cmd.help}\n\n${(await import('./eval-classify.js')).EVAL_CLASSIFY_HELP}\n\n${(await import('./eval-lm.js')).EVAL_LM_HELP}`;
  return cmd.help;
}

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  const lines = Object.entries(COMMANDS).map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`);
  return `attn: the Transformer and GPT language models in TypeScript

Usage: attn <command> [options]

Commands:
${lines.join('\n')}

Commands that compute take --device cpu|webgpu|auto|ref (default cpu; auto = a hardware GPU
through WebGPU when there is one, else cpu). --verbose (any command) also shows what native
libraries print, such as the WebGPU driver's warnings. Run 'attn <command> --help' for a
command's options.`;
}

/** A library error as a CLI user should read it: without the internal function names
 *  ("gpt2ConfigFromHF: ...") that say where it was raised. */
export function userMessage(message: string): string {
  return message.replace(/(^|: )[a-z][a-z0-9]*[A-Z][A-Za-z0-9]*: /g, '$1');
}

export async function main(argv: readonly string[]): Promise<number> {
  // --verbose (any command): also show what native libraries print (e.g. the WebGPU driver's warnings).
  if (argv.includes('--verbose')) {
    process.env.ATTN_VERBOSE = '1';
    argv = argv.filter((a) => a !== '--verbose');
  }
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    console.log('attn 0.1.0');
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`attn: unknown command '${name}' (commands: ${Object.keys(COMMANDS).join(', ')}; see attn --help)`);
    return 2;
  }
  try {
    const parsed = parseArgs(rest, new Set(['help', ...(cmd.booleans ?? [])]));
    if (parsed.flags.has('help')) {
      console.log(await helpOf(name, cmd, parsed.positionals[0]));
      return 0;
    }
    if (parsed.positionals.length > 0 && !cmd.subcommand) throw new UsageError(`${name}: unexpected argument '${parsed.positionals[0]}' (options are written --name value)`);
    await cmd.run(new Flags(parsed, name));
    return 0;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (process.env.ATTN_DEBUG) console.error(err.stack);
    if (e instanceof UsageError) {
      console.error(`attn ${err.message}`);
      return 2;
    }
    if (err.code === 'ENOENT') {
      console.error(`attn ${name}: no such file or directory: ${err.path ?? err.message}`);
      return 2;
    }
    console.error(`attn ${name}: ${userMessage(err.message)}`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
// Worker threads of the cpu backend are unref'd; exit explicitly so nothing lingers.
// A command may set process.exitCode (130: stopped by Ctrl-C after saving).
process.exit(code !== 0 ? code : Number(process.exitCode ?? 0));
