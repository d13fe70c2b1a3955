// The alignment tasks on tiny models: SFT scores only the assistant's tokens and packed rows
// compute what their examples compute alone; DPO with a very large β stays within 1e-3 KL of
// the reference while a small β moves away; DPO resumes exactly; a reward model and PPO run
// through the one loop and log their metrics.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { crossEntropy, GPT, noGrad, tensor, tidy } from '../src/index.js';
import { saveCheckpoint } from '../src/io/checkpoint.js';
import { checkpointConfigJson, modelToCheckpointTensors } from '../src/models/checkpoint-format.js';
import { loadGPTCheckpoint } from '../src/models/gpt-checkpoint.js';
import { CharTokenizer } from '../src/tokenizers/index.js';
import { IGNORE, tokenLogProbs } from '../src/train/alignment.js';
import { runTraining, type Task } from '../src/train/loop.js';
import { PLAIN_CHAT_TEMPLATE, packedBatch, packExamples, renderConversation, shiftExample } from '../src/tasks/alignment-common.js';
import { DPO_TASK } from '../src/tasks/dpo.js';
import { PPO_TASK } from '../src/tasks/ppo.js';
import { REWARD_TASK, loadRewardModel } from '../src/tasks/reward.js';
import { SFT_TASK, sftLoss } from '../src/tasks/sft.js';
import { assertClose } from './helpers.js';

const ROOT = mkdtempSync(join(tmpdir(), 'attn-align-'));
after(() => rmSync(ROOT, { recursive: true, force: true }));
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz :!.,\n';
const tok = CharTokenizer.fromText(ALPHABET);
const template = { source: PLAIN_CHAT_TEMPLATE, bosToken: null, eosToken: null };
const tiny = (over: Record<string, unknown> = {}) => new GPT({ n_layer: 2, n_head: 2, n_embd: 16, block_size: 64, vocab_size: tok.vocabSize, bias: true, ...over }, { seed: 3 });

/** A tiny GPT checkpoint directory with its character tokenizer. */
async function tinyCheckpoint(name: string): Promise<string> {
  const dir = join(ROOT, name);
  const model = tiny();
  await saveCheckpoint(dir, { config: checkpointConfigJson(model.config), model: modelToCheckpointTensors(model), tokenizerFiles: tok.toFiles() });
  model.dispose();
  return dir;
}

const quiet = { onMessage: () => {} };

test('SFT: prompt tokens carry no target and no gradient; only the assistant turn is scored', () => {
  const messages = [{ role: 'user', content: 'hi there' }, { role: 'assistant', content: 'hello!' }, { role: 'user', content: 'bye' }, { role: 'assistant', content: 'ok.' }];
  const ex = renderConversation(template, tok, messages);
  const scoredText = tok.decode(ex.ids.filter((_, i) => ex.scored[i]));
  assert.equal(scoredText, 'hello!ok.');
  const { x, y } = shiftExample(ex, 64);
  const model = tiny();
  const b = { x: Int32Array.from(x), y: Int32Array.from(y), B: 1, T: x.length };
  // d loss / d logits is zero at every prompt position.
  const logits = noGrad(() => model.forward(tensor(b.x, { shape: [1, b.T], dtype: 'int32' })).logits);
  logits.requiresGrad = true;
  crossEntropy(logits, tensor(b.y, { shape: [1, b.T], dtype: 'int32' }), { ignoreIndex: IGNORE }).backward();
  const g = logits.grad!.data();
  const V = tok.vocabSize;
  y.forEach((t, pos) => {
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.abs(g[pos * V + v]!);
    if (t === IGNORE) assert.equal(s, 0, `prompt position ${pos} has a gradient`);
    else assert.ok(s > 0, `assistant position ${pos} has no gradient`);
  });
  // Changing the prompt's targets does not change the loss; the model's loss equals the
  // mean over the assistant's targets.
  const l1 = noGrad(() => sftLoss(model, b).item());
  const y2 = Int32Array.from(b.y, (t) => (t === IGNORE ? IGNORE : t));
  const l2 = noGrad(() => sftLoss(model, { ...b, y: y2 }).item());
  assert.equal(l1, l2);
  const lp = noGrad(() => tokenLogProbs(model.forward(tensor(b.x, { shape: [1, b.T], dtype: 'int32' })).logits, tensor(b.y, { shape: [1, b.T], dtype: 'int32' })).data());
  const n = y.filter((t) => t !== IGNORE).length;
  assertClose([l1], [-Array.from(lp).reduce((a, v) => a + v, 0) / n], 1e-5, 1e-6, 'mean over assistant tokens');
  model.dispose();
});

for (const pos of ['learned', 'rope'] as const) {
  test(`SFT packing (${pos} positions): each example's token losses in a packed row equal the example alone`, () => {
    const model = tiny({ pos_encoding: pos });
    model.eval();
    const convs = [
      [{ role: 'user', content: 'abc' }, { role: 'assistant', content: 'def' }],
      [{ role: 'user', content: 'why' }, { role: 'assistant', content: 'because.' }],
      [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a long answer here' }],
      [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }],
    ];
    const exs = convs.map((c) => shiftExample(renderConversation(template, tok, c), 64));
    const rows = packExamples(exs, 64);
    assert.ok(rows.length < exs.length, 'several examples share a row');
    const packed = packedBatch(rows, 64);
    const lpPacked = noGrad(() => tidy(() => tokenLogProbs(model.forward(tensor(packed.x, { shape: [packed.B, 64], dtype: 'int32' }), undefined, { segments: packed.segments }).logits,
      tensor(packed.y, { shape: [packed.B, 64], dtype: 'int32' })).data()));
    // Walk the rows in packing order and compare each segment with the example alone.
    let e = 0;
    rows.forEach((r, b) => {
      let s = 0;
      for (const len of r.segments) {
        if (e < exs.length && exs[e]!.x.length === len && r.x.slice(s, s + len).every((v, i) => v === exs[e]!.x[i])) {
          const ex = exs[e]!;
          const alone = noGrad(() => tidy(() => tokenLogProbs(model.forward(tensor(ex.x, { shape: [1, len], dtype: 'int32' })).logits, tensor(ex.y, { shape: [1, len], dtype: 'int32' })).data()));
          assertClose(lpPacked.subarray(b * 64 + s, b * 64 + s + len), alone, 1e-5, 1e-5, `example ${e} (${pos})`);
          e++;
        }
        s += len;
      }
    });
    assert.equal(e, exs.length, 'every example was found in the packed rows');
    // Without segments the packed row would mix examples: the losses differ.
    const mixed = noGrad(() => tidy(() => tokenLogProbs(model.forward(tensor(packed.x, { shape: [packed.B, 64], dtype: 'int32' })).logits, tensor(packed.y, { shape: [packed.B, 64], dtype: 'int32' })).data()));
    assert.ok(mixed.some((v, i) => Math.abs(v - lpPacked[i]!) > 1e-4), 'segments change the result');
    model.dispose();
  });
}

test('SFT through the loop (packed): the held-out loss falls', async () => {
  const init = await tinyCheckpoint('sft-init');
  const data = join(ROOT, 'chat.jsonl');
  const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `say ${'abc'[i % 3]}` }, { role: 'assistant', content: `${'abc'[i % 3]!.repeat(3)}!` }] }));
  writeFileSync(data, lines.join('\n') + '\n');
  const r = await runTraining(SFT_TASK, { init_from: init, data, out_dir: join(ROOT, 'sft'), max_iters: 30, batch_size: 4, block_size: 64, learning_rate: 3e-3, eval_interval: 30, eval_iters: 4 }, quiet);
  const recs = readFileSync(join(ROOT, 'sft', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
  const first = recs.find((x) => x['val_loss'] !== undefined)!['val_loss']!;
  assert.ok(r.best < first * 0.7, `val loss ${first} -> ${r.best}`);
  const saved = await loadGPTCheckpoint(join(ROOT, 'sft', 'best'));
  saved.model.dispose();
});

/** Preference pairs: chosen responses are 'yes', rejected 'no'. */
function writePairs(file: string, n: number): void {
  const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ prompt: `q ${'abcde'[i % 5]}: `, chosen: 'yes.', rejected: 'no.' }));
  writeFileSync(file, lines.join('\n') + '\n');
}

test('DPO: β → large keeps the policy within 1e-3 KL of the reference; a small β moves it away', async () => {
  const init = await tinyCheckpoint('dpo-init');
  const data = join(ROOT, 'pairs.jsonl');
  writePairs(data, 30);
  const common = { init_from: init, data, max_iters: 20, batch_size: 4, block_size: 64, learning_rate: 3e-4, eval_interval: 20, eval_iters: 5 };
  const big = await runTraining(DPO_TASK, { ...common, beta: 1e4, out_dir: join(ROOT, 'dpo-big') }, quiet);
  const small = await runTraining(DPO_TASK, { ...common, beta: 0.1, out_dir: join(ROOT, 'dpo-small') }, quiet);
  console.log(`DPO sanity: per-token KL(π‖π_ref) on held-out responses after 20 updates: β 1e4 ${big.last_eval!['kl']}, β 0.1 ${small.last_eval!['kl']}`);
  const klBig = big.last_eval!['kl'] as number;
  const klSmall = small.last_eval!['kl'] as number;
  assert.ok(klBig < 1e-3, `β 1e4: KL ${klBig}`);
  assert.ok(klSmall > 2 * klBig, `β 0.1: KL ${klSmall} against ${klBig}`);
  assert.ok((small.last_eval!['accuracy'] as number) > 0.9, 'the small-β policy prefers the chosen responses');
  const recs = readFileSync(join(ROOT, 'dpo-small', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
  for (const k of ['chosen_reward', 'rejected_reward', 'margin', 'accuracy']) assert.ok(Number.isFinite(recs[1]![k]), `metrics.jsonl has ${k}`);
  assert.match(readFileSync(join(ROOT, 'dpo-small', 'alignment.svg'), 'utf8'), /<svg[\s\S]*margin/, 'alignment.svg draws the margin');
});

test('DPO (IPO loss) resumes exactly: 4 + 4 updates equal 8', async () => {
  const init = await tinyCheckpoint('ipo-init');
  const data = join(ROOT, 'pairs2.jsonl');
  writePairs(data, 20);
  const common = { init_from: init, data, batch_size: 3, block_size: 64, learning_rate: 1e-3, eval_interval: 4, eval_iters: 2, dpo_loss: 'ipo', beta: 0.5, lr_decay: 'constant', warmup_iters: 0 };
  await runTraining(DPO_TASK, { ...common, max_iters: 8, out_dir: join(ROOT, 'ipo-a') }, quiet);
  await runTraining(DPO_TASK, { ...common, max_iters: 4, out_dir: join(ROOT, 'ipo-b') }, quiet);
  await runTraining(DPO_TASK, { ...common, max_iters: 8, out_dir: join(ROOT, 'ipo-b'), init_from: 'resume' }, quiet);
  const a = await loadGPTCheckpoint(join(ROOT, 'ipo-a', 'last'));
  const b = await loadGPTCheckpoint(join(ROOT, 'ipo-b', 'last'));
  for (const [[n, p], [, q]] of a.model.namedParameters().map((e, i) => [e, b.model.namedParameters()[i]!] as const)) assert.deepEqual(p.data(), q.data(), n);
  a.model.dispose();
  b.model.dispose();
});

test('reward model (Bradley–Terry) learns the pairs; PPO against it logs reward and KL and resumes', async () => {
  const init = await tinyCheckpoint('rm-init');
  const data = join(ROOT, 'pairs3.jsonl');
  writePairs(data, 30);
  const rm = await runTraining(REWARD_TASK, { init_from: init, data, out_dir: join(ROOT, 'rm'), max_iters: 25, batch_size: 4, block_size: 64, learning_rate: 3e-3, eval_interval: 25, eval_iters: 3 }, quiet);
  assert.ok((rm.last_eval!['accuracy'] as number) >= 0.99, `held-out pairwise accuracy ${rm.last_eval!['accuracy']}`);
  const loaded = await loadRewardModel(join(ROOT, 'rm', 'best'), tensor([0]).backend);
  const [yes, no] = loaded.score(['q a: ', 'q a: '], ['yes.', 'no.']);
  assert.ok(yes! > no!, `r(yes) ${yes} > r(no) ${no}`);
  loaded.model.dispose();

  const prompts = join(ROOT, 'prompts.txt');
  writeFileSync(prompts, Array.from({ length: 12 }, (_, i) => `q ${'abcde'[i % 5]}: `).join('\n') + '\n');
  const common = { init_from: init, data: prompts, reward_model: join(ROOT, 'rm', 'best'), batch_size: 4, rollout_batch: 4, ppo_epochs: 2, max_new_tokens: 6, block_size: 64, learning_rate: 1e-3, eval_interval: 4, eval_iters: 1, lr_decay: 'constant', warmup_iters: 0, kl_target: 1 };
  await runTraining(PPO_TASK, { ...common, max_iters: 6, out_dir: join(ROOT, 'ppo-a') }, quiet);
  await runTraining(PPO_TASK, { ...common, max_iters: 3, out_dir: join(ROOT, 'ppo-b') }, quiet);
  await runTraining(PPO_TASK, { ...common, max_iters: 6, out_dir: join(ROOT, 'ppo-b'), init_from: 'resume' }, quiet);
  const recs = readFileSync(join(ROOT, 'ppo-a', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
  assert.ok(recs.some((r) => Number.isFinite(r['rollout_reward']) && Number.isFinite(r['rollout_kl']) && Number.isFinite(r['policy_loss'])), 'the rollouts\' reward and KL and the policy loss logged');
  assert.ok(recs.some((r) => Number.isFinite(r['reward']) && Number.isFinite(r['kl'])), 'the evaluation\'s reward and KL logged');
  const a = await loadGPTCheckpoint(join(ROOT, 'ppo-a', 'last'));
  const b = await loadGPTCheckpoint(join(ROOT, 'ppo-b', 'last'));
  for (const [[n, p], [, q]] of a.model.namedParameters().map((e, i) => [e, b.model.namedParameters()[i]!] as const)) assert.deepEqual(p.data(), q.data(), n);
  a.model.dispose();
  b.model.dispose();
});

test('SFT with LoRA: only the adapters train, and the saved checkpoint (adapters folded in) computes what the adapted model did', async () => {
  const init = await tinyCheckpoint('lora-init');
  const data = join(ROOT, 'chat-lora.jsonl');
  writeFileSync(data, Array.from({ length: 12 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `hi ${'abc'[i % 3]}` }, { role: 'assistant', content: 'hello.' }] })).join('\n') + '\n');
  let adapted: GPT | null = null;
  let expected: Float32Array | null = null;
  const x = tensor(Int32Array.from(tok.encode('user: hi\nassistant: hel')), { shape: [1, 23], dtype: 'int32' });
  await runTraining(SFT_TASK, { init_from: init, data, out_dir: join(ROOT, 'sft-lora'), max_iters: 6, batch_size: 4, block_size: 64, learning_rate: 1e-2, eval_interval: 6, eval_iters: 2, lora_rank: 4, lora_alpha: 8 }, {
    ...quiet,
    onStart: (info) => {
      adapted = info.model as GPT;
      assert.equal(info.trainable, info.model.parameters().filter((p) => /lora_[AB]/.test(p.name ?? '')).reduce((a, p) => a + p.size, 0), 'only the adapters train');
    },
    onEval: (e) => {
      if (e.step === 6) expected = noGrad(() => adapted!.forward(x).logits.data() as Float32Array);
    },
  });
  const saved = await loadGPTCheckpoint(join(ROOT, 'sft-lora', 'last'));
  const got = noGrad(() => saved.model.forward(x).logits.data());
  assertClose(got, expected!, 1e-4, 1e-5, 'merged checkpoint logits');
  const base = await loadGPTCheckpoint(init);
  const before = noGrad(() => base.model.forward(x).logits.data());
  assert.ok(before.some((v, i) => Math.abs(v - expected![i]!) > 1e-3), 'the adapters changed the model');
  saved.model.dispose();
  base.model.dispose();
});

test('SFT and the reward model resume exactly: 4 + 4 updates write the weights 8 do', async () => {
  const init = await tinyCheckpoint('resume-init');
  const chat = join(ROOT, 'chat-resume.jsonl');
  writeFileSync(chat, Array.from({ length: 24 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `say ${'abc'[i % 3]}` }, { role: 'assistant', content: `${'abc'[i % 3]!.repeat(2)}.` }] })).join('\n') + '\n');
  const pairs = join(ROOT, 'pairs-resume.jsonl');
  writePairs(pairs, 20);
  const runs: [string, Task<unknown>, string][] = [['sft', SFT_TASK as Task<unknown>, chat], ['reward', REWARD_TASK as Task<unknown>, pairs]];
  for (const [name, task, data] of runs) {
    const common = { init_from: init, data, batch_size: 3, block_size: 64, learning_rate: 1e-3, eval_interval: 4, eval_iters: 2, lr_decay: 'constant', warmup_iters: 0 };
    await runTraining(task, { ...common, max_iters: 8, out_dir: join(ROOT, `${name}-a`) }, quiet);
    await runTraining(task, { ...common, max_iters: 4, out_dir: join(ROOT, `${name}-b`) }, quiet);
    await runTraining(task, { ...common, max_iters: 8, out_dir: join(ROOT, `${name}-b`), init_from: 'resume' }, quiet);
    const a = readFileSync(join(ROOT, `${name}-a`, 'last', 'model.safetensors'));
    const b = readFileSync(join(ROOT, `${name}-b`, 'last', 'model.safetensors'));
    assert.ok(a.equals(b), `${name}: the resumed run's weights differ from the straight run's`);
  }
});
