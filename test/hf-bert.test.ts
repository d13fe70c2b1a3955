// Hugging Face BERT against an independent PyTorch reference (tools/hf_bert_reference.py,
// float64): the masked-LM log-probabilities of a padded batch with token types (a
// BertForPreTraining file: its next-sentence head skipped), the classifier logits (a bfloat16
// BertForSequenceClassification file), BertModel names without the `bert.` prefix, the save
// round trip, and a mis-shaped tensor refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend, logSoftmax, noGrad, tensor, tidy, type Backend } from '../src/index.js';
import { readSafetensorsFile, writeSafetensorsFile } from '../src/io/files.js';
import type { HFBert } from '../src/models/hf-bert.js';
import { loadHFBertDir, saveHFBertDir } from '../src/models/hf-bert-files.js';
import { webgpu } from './webgpu-helpers.js';
import { evaluateClassifier } from '../src/eval/classify.js';
import { finetuneClassifier } from '../src/tasks/classification.js';

const SST2 = fileURLToPath(new URL('../../data/sst2', import.meta.url));

const ROOT = fileURLToPath(new URL('../../test/fixtures/hf-bert', import.meta.url));
const cpu = await getBackend('cpu');
interface Expected { ids: number[][]; attention_mask: number[][]; token_type_ids: number[][]; vocab_size: number; mlm_log_softmax?: number[]; classifier_logits?: number[] }
const expOf = (c: string): Expected => JSON.parse(readFileSync(join(ROOT, c, 'expected.json'), 'utf8')) as Expected;

function run(model: HFBert, e: Expected, backend: Backend = cpu): { mlm?: number[]; cls?: number[] } {
  return noGrad(() => tidy(() => {
    const t = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { backend, dtype: 'int32', shape: [rows.length, rows[0]!.length] });
    const h = model.encode(t(e.ids), t(e.attention_mask), t(e.token_type_ids));
    return {
      ...(model.cls ? { mlm: [...logSoftmax(model.mlmLogits(h), -1).data()] } : {}),
      ...(model.classifier ? { cls: [...model.classifyLogits(h).data()] } : {}),
    };
  }));
}

/** Max difference over the non-padding positions (padding rows' outputs are not defined by a mask). */
function maxDiff(a: number[], b: number[], e: Expected, perPosition: number): number {
  let m = 0;
  const T = e.ids[0]!.length;
  for (let i = 0; i < a.length; i++) {
    const pos = Math.floor(i / perPosition);
    if (perPosition > 0 && e.attention_mask[Math.floor(pos / T)]![pos % T] === 0) continue;
    m = Math.max(m, Math.abs(a[i]! - b[i]!));
  }
  return m;
}

test('hf bert: masked-LM log-probabilities and classifier logits match the PyTorch reference within 1e-4 (cpu and webgpu)', async (t) => {
  const gpu = await webgpu();
  for (const backend of [cpu, ...(typeof gpu === 'string' ? [] : [gpu])]) {
    const mlm = await loadHFBertDir(join(ROOT, 'bert-mlm'), { backend });
    const e = expOf('bert-mlm');
    const d = maxDiff(run(mlm.model, e, backend).mlm!, e.mlm_log_softmax!, e, e.vocab_size);
    t.diagnostic(`${backend.name} bert-mlm: max |attn - torch| ${d.toExponential(2)}`);
    assert.ok(d < 1e-4, `mlm differs by ${d}`);
    assert.equal(mlm.model.classifier, null);
    mlm.model.dispose();
    const cls = await loadHFBertDir(join(ROOT, 'bert-cls'), { backend });
    const ec = expOf('bert-cls');
    const dc = maxDiff(run(cls.model, ec, backend).cls!, ec.classifier_logits!, ec, 0);
    t.diagnostic(`${backend.name} bert-cls (bf16 file, 3 labels): max diff ${dc.toExponential(2)}`);
    assert.ok(dc < 1e-4, `classifier differs by ${dc}`);
    assert.equal(cls.config.num_labels, 3);
    cls.model.dispose();
  }
});

test('hf bert: BertModel names, save round trip, a mis-shaped tensor refused naming it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-hfbert-'));
  try {
    const e = expOf('bert-mlm');
    const a = await loadHFBertDir(join(ROOT, 'bert-mlm'), { backend: cpu });
    await saveHFBertDir(a.model, join(dir, 'saved'), { hfConfig: a.hfConfig });
    const b = await loadHFBertDir(join(dir, 'saved'), { backend: cpu });
    assert.deepEqual(run(b.model, e).mlm, run(a.model, e).mlm);
    // BertModel: no prefix, no heads.
    const st = await readSafetensorsFile(join(ROOT, 'bert-mlm', 'model.safetensors'));
    const body = new Map([...st.tensors].filter(([k]) => k.startsWith('bert.')).map(([k, v]) => [k.slice(5), { dtype: 'F32' as const, shape: v.shape, data: v.data }]));
    await mkdir(join(dir, 'body'), { recursive: true });
    await writeFile(join(dir, 'body', 'config.json'), JSON.stringify({ ...a.hfConfig, architectures: ['BertModel'] }));
    await writeSafetensorsFile(join(dir, 'body', 'model.safetensors'), body);
    const c = await loadHFBertDir(join(dir, 'body'), { backend: cpu });
    assert.equal(c.model.cls, null);
    const hA = noGrad(() => tidy(() => [...a.model.encode(tensor(Int32Array.from(e.ids[0]!), { backend: cpu, dtype: 'int32', shape: [1, 12] })).data()]));
    const hC = noGrad(() => tidy(() => [...c.model.encode(tensor(Int32Array.from(e.ids[0]!), { backend: cpu, dtype: 'int32', shape: [1, 12] })).data()]));
    assert.deepEqual(hC, hA);
    body.set('encoder.layer.1.intermediate.dense.weight', { dtype: 'F32', shape: [16, 40], data: new Float32Array(640) });
    await writeSafetensorsFile(join(dir, 'body', 'model.safetensors'), body);
    await assert.rejects(loadHFBertDir(join(dir, 'body'), { backend: cpu }), /'encoder\.layer\.1\.intermediate\.dense\.weight' has shape \[16, 40\], the model expects \[40, 16\]/);
    for (const m of [a.model, b.model, c.model]) m.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('finetune --task sst2 from a Hugging Face BERT directory (WordPiece tokenizer.json): a new head trains, OUT/best is a BertForSequenceClassification that eval reads', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'attn-hfbert-ft-'));
  try {
    const base = join(dir, 'base');
    await mkdir(base, { recursive: true });
    for (const f of ['config.json', 'model.safetensors']) await writeFile(join(base, f), readFileSync(join(ROOT, 'bert-mlm', f)));
    // A 50-token WordPiece vocabulary (the fixture's size): specials, letters, and ##letters.
    const letters = 'abcdefghijklmnopqrstuvwxyz';
    const vocab: Record<string, number> = {};
    for (const tkn of ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', ...letters, ...[...letters].slice(0, 19).map((c) => `##${c}`)]) vocab[tkn] = Object.keys(vocab).length;
    const special = (content: string) => ({ id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    await writeFile(join(base, 'tokenizer.json'), JSON.stringify({
      version: '1.0', added_tokens: ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'].map(special),
      normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: { type: 'BertProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2] },
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
      model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
    }));
    const r = await finetuneClassifier({
      init_from: base, out_dir: join(dir, 'out'), train_file: join(SST2, 'train.tsv'), dev_file: join(SST2, 'dev.tsv'), label_fraction: 0.01,
      eval_max: 64, max_iters: 6, eval_interval: 3, batch_size: 16, block_size: 24, learning_rate: 1e-3, warmup_iters: 0,
    });
    t.diagnostic(`best dev accuracy ${r.best_val_accuracy} after ${r.iter} updates`);
    const cfg = JSON.parse(readFileSync(join(r.best_dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(cfg['architectures'], ['BertForSequenceClassification']);
    assert.equal(cfg['num_labels'], 2);
    const ev = await evaluateClassifier(r.best_dir, join(SST2, 'test.tsv'), { backend: cpu });
    assert.equal(ev.n, 872);
    assert.ok(ev.accuracy > 0.3 && ev.accuracy < 0.8, `accuracy ${ev.accuracy}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
