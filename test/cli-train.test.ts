// attn train as a new user runs it (child processes on the built CLI, in a scratch working
// directory): one config vocabulary with "did you mean" for every bad name, --data FILE in a
// folder of its own, a schedule that fits a short run, --help from the vocabulary, a sample
// prompt the vocabulary cannot encode, Ctrl-C.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { finetuneConfig } from '../src/tasks/classification.js';
import { seq2seqTrainConfig } from '../src/tasks/translation.js';
import { trainConfig } from '../src/tasks/lm.js';
import { FIELDS, taskFields } from '../src/train/config.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const SHAKESPEARE = fileURLToPath(new URL('../../data/tinyshakespeare/input.txt', import.meta.url));
const CWD = mkdtempSync(join(tmpdir(), 'attn-cli-train-'));
process.on('exit', () => rmSync(CWD, { recursive: true, force: true }));

function attn(args: string[], timeout = 120_000): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: CWD, timeout });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const TINY = ['--n_layer', '1', '--n_head', '2', '--n_embd', '32', '--block_size', '32', '--batch_size', '8', '--eval_iters', '4', '--device', 'cpu', '--threads', '2'];

test('one vocabulary: unknown keys in the library, a JSON config and on the command line are refused with the nearest name', () => {
  assert.throws(() => trainConfig({ max_iter: 5 }), /unknown field 'max_iter' \(did you mean 'max_iters'\?\)/);
  assert.throws(() => trainConfig({ maxIters: 5 }), /did you mean 'max_iters'\?/);
  assert.throws(() => finetuneConfig({ moe_experts: 4 }), /field 'moe_experts' does not apply to classification training \(it is for lm\)/);
  assert.throws(() => seq2seqTrainConfig({ max_steps: 5 }), /unknown field 'max_steps'/);
  // The same concept has the same name in every task.
  for (const k of ['max_iters', 'learning_rate', 'warmup_iters', 'n_embd', 'n_head', 'block_size', 'out_dir', 'eval_interval', 'seed', 'device'] as const) {
    for (const t of ['lm', 'translation', 'classification', 'masked-lm'] as const) assert.ok(taskFields(t).includes(k), `${t} takes ${k}`);
  }
  const flag = attn(['train', '--max_iter', '5']);
  assert.equal(flag.code, 2, flag.stderr);
  assert.match(flag.stderr, /--max_iter: unknown field 'max_iter' \(did you mean 'max_iters'\?\)/);
  writeFileSync(join(CWD, 'bad.json'), JSON.stringify({ n_layers: 2, learning_rate: 1e-3 }));
  const json = attn(['train', '--config', 'bad.json']);
  assert.equal(json.code, 2, json.stderr);
  assert.match(json.stderr, /unknown field 'n_layers' \(did you mean 'n_layer'\?\)/);
  assert.doesNotMatch(json.stderr, /TrainConfig|resolveConfig/, 'no internal names');
});

test('--help lists every field of the task with its default and meaning', () => {
  const r = attn(['train', '--help']);
  assert.equal(r.code, 0);
  for (const k of Object.keys(FIELDS)) assert.match(r.stdout, new RegExp(`--${k} `), k);
  assert.match(r.stdout, /--max_iters N +optimizer updates in the whole run \(default 600000\)/);
  assert.match(r.stdout, /--lr_decay cosine\|linear\|noam\|constant/);
  const ft = attn(['finetune', '--help']);
  assert.match(ft.stdout, /--label_fraction N +use a seeded fraction of the training labels \(default 1\)/);
});

test('--data FILE: prepared into its own folder, a schedule that fits the run, the loss falls; the preset data is untouched', () => {
  // The preset's corpus first (one step), then a file of our own with no newline in it.
  const preset = attn(['train', '--preset', 'shakespeare-char-tiny', '--max_iters', '1', '--eval_iters', '1', '--sample', '0', '--device', 'cpu', '--threads', '2']);
  assert.equal(preset.code, 0, preset.stderr);
  const presetMeta = join(CWD, 'data', 'shakespeare_char', 'meta.json');
  const before = readFileSync(presetMeta, 'utf8');
  const mtime = statSync(presetMeta).mtimeMs;
  const text = readFileSync(SHAKESPEARE, 'utf8').slice(0, 60_000).replace(/\n/g, ' ');
  writeFileSync(join(CWD, 'mine.txt'), text);
  const r = attn(['train', '--data', 'mine.txt', '--max_iters', '300', '--eval_interval', '150', '--sample', '20', ...TINY]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /preparing mine\.txt \(character level\) into data\/mine/);
  assert.match(r.stderr, /learning rate: warmup 6, cosine from 0\.0006 to 0\.00006 at step 300/, 'the schedule follows max_iters');
  assert.match(r.stderr, /warning: no sample: the vocabulary cannot encode the prompt/);
  assert.ok(existsSync(join(CWD, 'data', 'mine', 'meta.json')));
  assert.equal(readFileSync(presetMeta, 'utf8'), before);
  assert.equal(statSync(presetMeta).mtimeMs, mtime, 'the preset data was not rewritten');
  const recs = readFileSync(join(CWD, 'out', 'mine', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; train_loss?: number; val_loss?: number });
  const vals = recs.filter((x) => x.val_loss !== undefined).map((x) => x.val_loss!);
  assert.ok(vals.length === 3 && vals[2]! < vals[0]! - 0.5, `val loss ${vals.join(' -> ')}`);
  for (const f of ['best/model.safetensors', 'last/optimizer.safetensors', 'loss.svg']) assert.ok(existsSync(join(CWD, 'out', 'mine', f)), f);
  // A later preset run trains on the preset's corpus (65 characters), not on mine.txt.
  const again = attn(['train', '--preset', 'shakespeare-char-tiny', '--max_iters', '1', '--eval_iters', '1', '--sample', '0', '--device', 'cpu', '--threads', '2', '--out', 'out/again']);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(JSON.parse(readFileSync(join(CWD, 'out', 'again', 'last', 'config.json'), 'utf8')).vocab_size ?? JSON.parse(readFileSync(join(CWD, 'out', 'again', 'last', 'config.json'), 'utf8')).attn?.vocab_size, 65);
});

test('Ctrl-C saves OUT/last and exits with 130; --init_from resume continues from it', async () => {
  writeFileSync(join(CWD, 'sig.txt'), readFileSync(SHAKESPEARE, 'utf8').slice(0, 30_000));
  const child = spawn(process.execPath, [CLI, 'train', '--data', 'sig.txt', '--max_iters', '100000', '--eval_interval', '0', '--log_interval', '1', '--sample', '0', ...TINY], { cwd: CWD });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const metrics = join(CWD, 'out', 'sig', 'metrics.jsonl');
  const t0 = Date.now();
  while (!(existsSync(metrics) && readFileSync(metrics, 'utf8').split('\n').length > 3) && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGINT');
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  assert.equal(code, 130, err);
  const state = JSON.parse(readFileSync(join(CWD, 'out', 'sig', 'last', 'trainer_state.json'), 'utf8')) as { iter: number };
  assert.ok(state.iter > 0, err);
  const r = attn(['train', '--out', 'out/sig', '--init_from', 'resume', '--max_iters', String(state.iter + 2), '--sample', '0']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`resuming from .* at step ${state.iter}`));
});

test('errors a CLI user reads name no internal functions', () => {
  writeFileSync(join(CWD, 'config.json'), JSON.stringify({ model_type: 'llama', n_layer: 2 }));
  writeFileSync(join(CWD, 'model.safetensors'), Buffer.alloc(16));
  const r = attn(['logprobs', '--model', '.', '--text', 'hi']);
  assert.notEqual(r.code, 0);
  assert.doesNotMatch(r.stderr, /[a-z][a-z0-9]*[A-Z][A-Za-z0-9]*: /, r.stderr);
});

test('the CLI wrote only under out/ and data/ (and the files this test made); eval prints two decimals', () => {
  const made = new Set(['out', 'data', 'mine.txt', 'sig.txt', 'bad.json', 'config.json', 'model.safetensors', 'hyp.txt', 'ref.txt']);
  writeFileSync(join(CWD, 'hyp.txt'), 'the cat sat on the mat\n');
  writeFileSync(join(CWD, 'ref.txt'), 'the cat sat on a mat\n');
  const r = attn(['eval', 'bleu', '--hyp', 'hyp.txt', '--ref', 'ref.txt']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^BLEU \d+\.\d\d \(/);
  assert.ok(JSON.parse(r.stdout).bleu > 0);
  const extra = readdirSync(CWD).filter((f) => !made.has(f));
  assert.deepEqual(extra, [], 'nothing else in the working directory');
});
