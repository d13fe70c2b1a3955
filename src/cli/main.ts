#!/usr/bin/env node
// attn's command line. Each command lives in its own module and is loaded on demand.
import { Flags, parseArgs, UsageError } from './args.js';

interface Command {
  summary: string;
  help: string;
  booleans?: string[];
  run: (f: Flags) => Promise<void>;
}

const COMMANDS: Record<string, Command> = {
  train: {
    summary: 'train a GPT (presets shakespeare-char, shakespeare-char-tiny, or a JSON config)',
    help: `attn train [--preset NAME | --config FILE.json] [--out DIR] [--FIELD VALUE ...]

Trains a decoder-only Transformer, nanoGPT style, with a progress bar (loss, tokens/s, time left).
Any field of the training config can be set by name, e.g. --max_iters 50 --batch_size 8 --device cpu.

  --preset NAME        shakespeare-char (6 layers, 6 heads, 384 wide, context 256, dropout 0.2)
                       shakespeare-char-tiny (4 layers, 4 heads, 128 wide, context 64, batch 12, 2000 iters)
  --config FILE        a JSON object of config fields (flags override it)
  --out DIR            where checkpoints (DIR/best, DIR/last), metrics.jsonl and loss.svg go
  --data FILE|DIR      a text file (prepared on the fly with a character tokenizer) or a prepared directory
  --init_from resume   continue the run in --out from DIR/last
  --device cpu|ref     backend (default cpu); --threads N
  --sample N           print N generated characters at the end (default 300; 0 for none)`,
    run: async (f) => (await import('./train.js')).runTrain(f),
  },
  sample: {
    summary: 'generate text from a trained model',
    help: `attn sample --model DIR [--prompt TEXT] [options]

  --model DIR            a checkpoint directory (config.json + model.safetensors + tokenizer files)
  --prompt TEXT          the start of the text (default: a newline, or <|endoftext|> for GPT-2 vocabularies)
  --max_new_tokens N     tokens to generate (default 500)
  --temperature T        0 means greedy (default 0.8)
  --top_k K, --top_p P   truncate the distribution before sampling
  --repetition_penalty R penalise tokens already in the context (1 = off)
  --stop TEXT            stop when TEXT is produced (may be repeated as --stop=a --stop=b is not supported: use | to separate)
  --seed N               reproducible sampling (default 1337)
  --num_samples N        independent samples (default 1)
  --no_cache             generate without the KV cache
  --device cpu|ref, --threads N`,
    booleans: ['no_cache'],
    run: async (f) => (await import('./sample.js')).runSample(f),
  },
  logprobs: {
    summary: 'print the log-probability of each token given the ones before it, as JSON',
    help: `attn logprobs --model DIR (--text TEXT | --tokens 1,2,3)

Prints {"tokens":[...],"logprobs":[...]} where logprobs[i] is the natural-log probability of
tokens[i+1] given tokens[0..i].
  --device cpu|ref, --threads N`,
    run: async (f) => (await import('./logprobs.js')).runLogprobs(f),
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
    help: `attn prepare --input FILE --out DIR [--tokenizer char|gpt2|bpe|DIR] [--vocab_size N] [--val_fraction F]

Writes DIR/train.bin and DIR/val.bin (uint16 when the vocabulary fits, else uint32), DIR/meta.json
and the tokenizer files. --tokenizer bpe trains a byte-level BPE of --vocab_size tokens on the text.`,
    run: async (f) => (await import('./prepare.js')).runPrepare(f),
  },
  info: {
    summary: 'show the backend, and a model\'s parameters, config and FLOPs per token',
    help: `attn info [--model DIR | --preset NAME] [--device cpu|ref] [--threads N]`,
    run: async (f) => (await import('./info.js')).runInfo(f),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  const lines = Object.entries(COMMANDS).map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`);
  return `attn: the Transformer and GPT language models in TypeScript

Usage: attn <command> [options]

Commands:
${lines.join('\n')}

Run 'attn <command> --help' for a command's options.`;
}

export async function main(argv: readonly string[]): Promise<number> {
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
      console.log(cmd.help);
      return 0;
    }
    if (parsed.positionals.length > 0) throw new UsageError(`${name}: unexpected argument '${parsed.positionals[0]}' (options are written --name value)`);
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
    console.error(`attn ${name}: ${err.message}`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
// Worker threads of the cpu backend are unref'd; exit explicitly so nothing lingers.
process.exit(code);
