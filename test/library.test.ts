// attn.load / attn.save: every model family round-trips through a checkpoint directory with its
// tokenizer, and a Hugging Face GPT-2 directory loads as it is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CharTokenizer, getBackend, noGrad, tensor, type Tensor } from '../src/index.js';
import { specialIdsOf, trainSentenceTokenizer } from '../src/data/sentences.js';
import { BertModel } from '../src/models/bert.js';
import { GPT } from '../src/models/gpt.js';
import { EncoderDecoder } from '../src/models/seq2seq.js';
import { load, save } from '../src/node.js';

const ROOT = mkdtempSync(join(tmpdir(), 'attn-lib-'));
process.on('exit', () => rmSync(ROOT, { recursive: true, force: true }));
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/gpt2-tiny', import.meta.url));

test('save then load: GPT, encoder and encoder-decoder give the same outputs; the tokenizer comes back', async () => {
  const backend = await getBackend('ref');
  const ids = (rows: number[][]): Tensor => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length], dtype: 'int32', backend });
  const tok = CharTokenizer.fromText('hello world');
  const gpt = new GPT({ n_layer: 1, n_head: 2, n_embd: 16, block_size: 8, vocab_size: tok.vocabSize, dropout: 0 }, { backend, seed: 1 }).eval();
  await save(join(ROOT, 'gpt'), gpt, tok);
  const a = await load(join(ROOT, 'gpt'), { backend });
  assert.equal(a.kind, 'gpt');
  assert.deepEqual(a.tokenizer!.encode('hello'), tok.encode('hello'));
  const x = ids([[1, 2, 3, 4]]);
  assert.deepEqual(noGrad(() => (a.model as GPT).forward(x).logits.data()), noGrad(() => gpt.forward(x).logits.data()));

  const stok = trainSentenceTokenizer(['the cat sat', 'a dog ran'], 270);
  const bert = new BertModel({ n_layer: 1, n_head: 2, d_model: 8, d_ff: 16, max_len: 8, vocab_size: stok.vocabSize, ...specialIdsOf(stok), n_classes: 2, mlm_head: true, dropout: 0 }, { backend, seed: 2 }).eval();
  await save(join(ROOT, 'bert'), bert, stok);
  const b = await load(join(ROOT, 'bert'), { backend });
  assert.equal(b.kind, 'encoder');
  assert.deepEqual(b.tokenizer!.encode(' the cat'), stok.encode(' the cat'));
  const y = ids([[1, 5, 6, 2]]);
  assert.deepEqual(noGrad(() => (b.model as BertModel).classify(y).data()), noGrad(() => bert.classify(y).data()));

  const s2s = new EncoderDecoder({ n_layer_enc: 1, n_layer_dec: 1, n_head: 2, d_model: 8, d_ff: 16, max_len: 8, vocab_size: 10, pad_id: 0, bos_id: 1, eos_id: 2, dropout: 0 }, { backend, seed: 3 }).eval();
  await save(join(ROOT, 's2s'), s2s);
  const c = await load(join(ROOT, 's2s'), { backend }).catch((e: Error) => e);
  // An encoder-decoder checkpoint needs its shared BPE (tokenizer.json): refused, naming the file.
  assert.ok(c instanceof Error && /tokenizer\.json/.test(c.message), String(c));
  for (const m of [gpt, a.model, bert, b.model, s2s]) m.dispose();
});

test('load: a Hugging Face GPT-2 directory as it is; a folder that is not a checkpoint is refused', async () => {
  const backend = await getBackend('ref');
  const r = await load(FIXTURE, { backend });
  assert.equal(r.kind, 'gpt');
  assert.ok(r.model instanceof GPT);
  r.model.dispose();
  await assert.rejects(load(ROOT, { backend }), /not a checkpoint directory \(no config\.json\)/);
});

test('without useBackend the fastest backend (cpu) is the default in Node; ATTN_BACKEND picks another', () => {
  const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
  const script = `const a = await import(${JSON.stringify(index)}); const t = a.matmul(a.tensor([1, 2, 3, 4], { shape: [2, 2] }), a.tensor([1, 0, 0, 1], { shape: [2, 2] })); console.log(t.backend.name, Array.from(t.data()).join(','));`;
  const file = join(ROOT, 'default-backend.mjs');
  writeFileSync(file, script);
  const run = (env: Record<string, string>) => spawnSync(process.execPath, [file], { encoding: 'utf8', env: { ...process.env, ...env } });
  const cpu = run({});
  assert.equal(cpu.status, 0, cpu.stderr);
  assert.equal(cpu.stdout.trim(), 'cpu 1,2,3,4');
  const ref = run({ ATTN_BACKEND: 'ref' });
  assert.equal(ref.stdout.trim(), 'ref 1,2,3,4', ref.stderr);
});
