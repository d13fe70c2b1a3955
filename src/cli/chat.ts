// attn chat: an interactive conversation with a chat model in the terminal. Each turn renders the
// whole conversation with the model's chat template (tokenizer_config.json), generates the reply
// token by token to stdout, stops at the model's end-of-turn ids, and keeps the reply for the
// next turn. Lines from a pipe work too (one user turn per line), for scripts and tests.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { renderChat, type ChatMessage } from '../generate/chat.js';
import { generateStream } from '../generate/index.js';
import { BpeTokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';
import { adapterBaseOf, backendFromFlags, describeQuantized, generationStopIds, loadModelDir, quantSpecFromFlags, requireDir, stopIdsOf, templateOf } from './common.js';

/** The rendered prompt's ids: special tokens in it (the template's turn markers) are tokens,
 *  and nothing is added (the template already holds any BOS). */
function encodePrompt(tok: Tokenizer, text: string): number[] {
  if (tok instanceof BpeTokenizer) return tok.encode(text, { allowedSpecial: 'all' });
  const hf = tok as Tokenizer & { encode(text: string, opts?: { addSpecialTokens?: boolean }): number[] };
  return hf.encode(text, { addSpecialTokens: false });
}

export async function runChat(f: Flags): Promise<void> {
  let dir = f.required('model', 'a chat model directory (config.json, weights, tokenizer.json, tokenizer_config.json)');
  let adapter = f.string('adapter');
  const system = f.string('system');
  const maxNewTokens = f.number('max_new_tokens', { integer: true, min: 1 }) ?? 512;
  const temperature = f.number('temperature', { min: 0 }) ?? 0.7;
  const topP = f.number('top_p', { min: 0, max: 1 }) ?? 0.9;
  const topK = f.number('top_k', { integer: true, min: 1 });
  const seed = f.number('seed', { integer: true }) ?? 1337;
  const quant = quantSpecFromFlags(f, f.choice('dtype', ['float32', 'int8', 'int4', 'int4z'] as const) ?? 'float32');
  const backend = await backendFromFlags(f);
  f.done();
  await requireDir('chat', 'model', dir);
  if (adapter === undefined && existsSync(join(dir, 'adapter_config.json'))) {
    adapter = dir;
    dir = (await adapterBaseOf(dir)) ?? dir;
  }
  const tokDir = adapter && existsSync(join(adapter, 'tokenizer_config.json')) ? adapter : dir;
  const template = await templateOf(tokDir);
  if (!template) throw new UsageError(`chat: ${tokDir} has no chat template (tokenizer_config.json "chat_template" or chat_template.jinja); use 'attn sample' for a base model`);
  let tok: Tokenizer;
  try {
    tok = await loadTokenizer(tokDir);
  } catch (e) {
    throw new UsageError(`chat: ${tokDir}: no tokenizer (${(e as Error).message})`);
  }
  const model = await loadModelDir('chat', dir, backend, adapter, quant);
  process.stderr.write(describeQuantized(model));
  // Stop at the model's eos ids, generation_config.json's, and the template's eos token.
  const stop = new Set([...stopIdsOf(model, tok), ...(await generationStopIds(dir))]);
  if (template.eosToken) {
    const ids = encodePrompt(tok, template.eosToken);
    if (ids.length === 1) stop.add(ids[0]!);
  }
  const messages: ChatMessage[] = system ? [{ role: 'system', content: system }] : [];
  const tty = process.stdin.isTTY === true;
  const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
  if (tty) process.stdout.write(`attn chat with ${dir} (${model.config.vocab_size} tokens vocabulary); an empty line or Ctrl-D ends it\n`);
  const ask = (): void => {
    if (tty) rl.setPrompt('> ');
    if (tty) rl.prompt();
  };
  let turn = 0;
  ask();
  for await (const line of rl) {
    const text = line.trim();
    if (text === '' && tty) break;
    if (text === '') continue;
    messages.push({ role: 'user', content: text });
    const prompt = renderChat(template, messages, { addGenerationPrompt: true });
    const ids = encodePrompt(tok, prompt);
    if (ids.length >= model.config.block_size) {
      process.stdout.write(`[the conversation (${ids.length} tokens) fills the model's context of ${model.config.block_size}; start a new one]\n`);
      break;
    }
    const budget = Math.min(maxNewTokens, model.config.block_size - ids.length);
    let reply = '';
    const stream = generateStream(model, ids, {
      maxNewTokens: budget, temperature, topP, topK, seed: seed + turn++, eotToken: [...stop], decode: (x) => tok.decode(x), backend,
    });
    for await (const ev of stream) {
      reply += ev.text;
      process.stdout.write(ev.text);
    }
    process.stdout.write('\n');
    messages.push({ role: 'assistant', content: reply.trim() });
    ask();
  }
  rl.close();
  model.dispose();
}
