// Checkpoint directories: round trips, crash safety at every step of a save, recovery from
// the debris a crash leaves, and clear errors for missing or corrupt files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RefBackend, tensor } from '../src/index.js';
import { SafetensorsError } from '../src/io/safetensors.js';
import {
  CheckpointError, checkShapes, entryToTensor, loadCheckpoint, saveCheckpoint, type CheckpointContents,
} from '../src/io/checkpoint.js';

const backend = new RefBackend();

async function withDir(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'attn-ckpt-'));
  try {
    await fn(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** A small checkpoint whose every part depends on `version`. */
function contents(version: number, withOptimizer = true): CheckpointContents {
  const w = tensor([1, 2, 3, 4, 5, 6].map((x) => x * version), { shape: [2, 3], backend });
  const b = tensor([version, -version], { shape: [2], backend, dtype: 'float64' });
  const ids = tensor([version, 0, -1], { shape: [3], backend, dtype: 'int32' });
  return {
    config: { model_type: 'gpt2', n_embd: 3, version },
    model: new Map([['h.0.w', w], ['h.0.b', b], ['ids', ids]]),
    tokenizerFiles: { 'tokenizer.json': JSON.stringify({ version }), 'merges.txt': new Uint8Array([104, 105]) },
    ...(withOptimizer
      ? {
          optimizer: { 'h.0.w.exp_avg': { dtype: 'F32' as const, shape: [2, 3], data: new Float32Array(6).fill(version / 10) } },
          trainerState: { global_step: version * 100, best_loss: 1 / version },
        }
      : {}),
  };
}

/** The directory's siblings other than the checkpoint itself (debris). */
async function debris(root: string): Promise<string[]> {
  return (await readdir(root)).filter((n) => n !== 'ckpt').sort();
}

async function checkVersion(dir: string, version: number): Promise<void> {
  const c = await loadCheckpoint(dir, { requireOptimizer: true });
  assert.equal(c.config.version, version, 'config version');
  assert.deepEqual(c.tensors.get('h.0.w')!.data, new Float32Array([1, 2, 3, 4, 5, 6].map((x) => x * version)));
  assert.deepEqual(c.trainerState, { global_step: version * 100, best_loss: 1 / version });
  assert.equal(await readFile(join(dir, 'tokenizer.json'), 'utf8'), JSON.stringify({ version }));
}

test('save then load: config, tensors of each dtype, tokenizer files, optimizer, trainer state', async () => {
  await withDir(async (root) => {
    const dir = join(root, 'ckpt');
    await saveCheckpoint(dir, contents(2));
    const c = await loadCheckpoint(dir, { requireOptimizer: true });
    assert.equal(c.dir, dir);
    assert.deepEqual(c.config, { model_type: 'gpt2', n_embd: 3, version: 2 });
    assert.deepEqual(c.metadata, { format: 'pt' }); // transformers refuses files without it
    assert.deepEqual([...c.tensors.keys()].sort(), ['h.0.b', 'h.0.w', 'ids']);
    const w = c.tensors.get('h.0.w')!;
    assert.equal(w.dtype, 'F32');
    assert.deepEqual(w.shape, [2, 3]);
    assert.deepEqual(c.tensors.get('h.0.b'), { dtype: 'F64', shape: [2], data: new Float64Array([2, -2]) });
    assert.deepEqual(c.tensors.get('ids'), { dtype: 'I32', shape: [3], data: new Int32Array([2, 0, -1]) });
    assert.deepEqual(c.optimizer!.get('h.0.w.exp_avg')!.data, new Float32Array(6).fill(0.2));
    assert.deepEqual(c.trainerState, { global_step: 200, best_loss: 0.5 });
    assert.deepEqual(c.tokenizerFiles, ['merges.txt', 'tokenizer.json']);
    assert.deepEqual([...(await readFile(join(dir, 'merges.txt')))], [104, 105]);
    // Back into attn tensors.
    const t = entryToTensor(w, { backend });
    assert.equal(t.dtype, 'float32');
    assert.deepEqual(t.shape, [2, 3]);
    assert.deepEqual(t.toArray(), [2, 4, 6, 8, 10, 12]);
    assert.equal(entryToTensor(c.tensors.get('ids')!, { backend }).dtype, 'int32');
    // config.json is readable JSON for other tools.
    assert.equal(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')).model_type, 'gpt2');
    assert.deepEqual(await debris(root), []);
  });
});

test('saving over a checkpoint replaces it whole and leaves no debris', async () => {
  await withDir(async (root) => {
    const dir = join(root, 'ckpt');
    await saveCheckpoint(dir, contents(1));
    await saveCheckpoint(dir, contents(2, false));
    const c = await loadCheckpoint(dir);
    assert.equal(c.config.version, 2);
    assert.equal(c.optimizer, undefined, 'files of the old checkpoint must not survive');
    assert.equal(c.trainerState, undefined);
    assert.deepEqual(await debris(root), []);
  });
});

test('a crash at any step of a save leaves the old or the new checkpoint, whole', async () => {
  const steps = ['file:config.json', 'file:model.safetensors', 'file:tokenizer.json', 'file:merges.txt', 'file:optimizer.safetensors', 'file:trainer_state.json', 'tmp-complete', 'old-moved', 'new-moved', 'done'];
  for (const crashAt of steps) {
    await withDir(async (root) => {
      const dir = join(root, 'ckpt');
      await saveCheckpoint(dir, contents(1));
      const seen: string[] = [];
      const crash = new Error(`simulated crash at ${crashAt}`);
      await assert.rejects(
        saveCheckpoint(dir, contents(2), {
          onStep: (s) => {
            seen.push(s);
            if (s === crashAt) throw crash;
          },
        }),
        (e: unknown) => e === crash,
      );
      assert.equal(seen.at(-1), crashAt, `step ${crashAt} was never reached (saw ${seen.join(', ')})`);
      // Before the new directory is renamed in, the old checkpoint is the whole one.
      const expected = steps.indexOf(crashAt) >= steps.indexOf('new-moved') ? 2 : 1;
      await checkVersion(dir, expected);
      assert.deepEqual(await debris(root), [], `debris after recovering from a crash at ${crashAt}`);
      // And the next save works normally.
      await saveCheckpoint(dir, contents(3));
      await checkVersion(dir, 3);
    });
  }
});

test('recovery from hand-made crash debris: only .old, stale temps with partial files', async () => {
  await withDir(async (root) => {
    const dir = join(root, 'ckpt');
    await saveCheckpoint(dir, contents(1));
    // Crash between "dir → dir.old" and "tmp → dir": dir is gone, the new temp is partial.
    const { rename } = await import('node:fs/promises');
    await rename(dir, `${dir}.old`);
    await mkdir(`${dir}.tmp-99999-0`);
    await writeFile(join(`${dir}.tmp-99999-0`, 'config.json'), '{"version": 2');
    await writeFile(join(`${dir}.tmp-99999-0`, 'model.safetensors'), new Uint8Array([1, 2, 3]));
    await mkdir(`${dir}.tmp-12-3`);
    await checkVersion(dir, 1);
    assert.deepEqual(await debris(root), []);

    // Crash after "tmp → dir" but before removing dir.old: dir is the new one.
    await saveCheckpoint(join(root, 'other'), contents(5));
    await rename(join(root, 'other'), `${dir}.old`);
    await checkVersion(dir, 1);
    assert.deepEqual(await debris(root), []);

    // Unrelated siblings are left alone.
    await writeFile(join(root, 'ckpt2.tmp-1-1'), 'x');
    await writeFile(join(root, 'notes.txt'), 'x');
    await loadCheckpoint(dir);
    assert.deepEqual(await debris(root), ['ckpt2.tmp-1-1', 'notes.txt']);
  });
});

test('a save that fails before the swap (bad input) leaves the old checkpoint untouched', async () => {
  await withDir(async (root) => {
    const dir = join(root, 'ckpt');
    await saveCheckpoint(dir, contents(1));
    const bad = contents(2);
    bad.model = { w: { dtype: 'I32', shape: [1], data: [0.5] } };
    await assert.rejects(saveCheckpoint(dir, bad), /not a valid I32 value/);
    await assert.rejects(saveCheckpoint(dir, { ...contents(2), trainerState: undefined }), /optimizer state needs trainerState too/);
    await assert.rejects(saveCheckpoint(dir, { ...contents(2), tokenizerFiles: { '../evil': 'x' } }), /must be a plain file name/);
    await assert.rejects(saveCheckpoint(dir, { ...contents(2), tokenizerFiles: { 'config.json': 'x' } }), /'config.json' is reserved/);
    await assert.rejects(saveCheckpoint(dir, { ...contents(2), config: [] as unknown as object }), /config must be an object/);
    await checkVersion(dir, 1);
    assert.deepEqual(await debris(root), []);
  });
});

test('refuses to replace a directory that is not a checkpoint', async () => {
  await withDir(async (root) => {
    const dir = join(root, 'ckpt');
    await mkdir(dir);
    await writeFile(join(dir, 'precious.txt'), 'keep me');
    await assert.rejects(saveCheckpoint(dir, contents(1)), (e: unknown) => e instanceof CheckpointError && /refusing to replace what does not look like a checkpoint/.test(e.message));
    assert.equal(await readFile(join(dir, 'precious.txt'), 'utf8'), 'keep me');
    // An empty directory is fine.
    const empty = join(root, 'empty');
    await mkdir(empty);
    await saveCheckpoint(empty, contents(1));
    await checkVersion(empty, 1);
  });
});

test('load errors name the directory or file and the problem', async () => {
  await withDir(async (root) => {
    const dir = join(root, 'ckpt');
    const err = (re: RegExp, path: string) => (e: unknown): boolean => {
      assert.ok(e instanceof CheckpointError || e instanceof SafetensorsError, `unexpected error ${String(e)}`);
      assert.ok(e.message.startsWith(`${path}: `), `message does not name ${path}: ${e.message}`);
      assert.match(e.message, re);
      return true;
    };
    await assert.rejects(loadCheckpoint(dir), err(/checkpoint directory does not exist/, dir));

    await saveCheckpoint(dir, contents(1, false));
    await assert.rejects(loadCheckpoint(dir, { requireOptimizer: true }), err(/missing optimizer.safetensors \(optimizer state is required to resume training\)/, dir));

    await saveCheckpoint(dir, contents(1));
    await unlink(join(dir, 'trainer_state.json'));
    await assert.rejects(loadCheckpoint(dir, { requireOptimizer: true }), err(/missing trainer_state.json \(trainer state is required/, dir));
    assert.equal((await loadCheckpoint(dir)).trainerState, undefined, 'without requireOptimizer it loads');

    await saveCheckpoint(dir, contents(1));
    await writeFile(join(dir, 'trainer_state.json'), '{"global_step": 3,}');
    await assert.rejects(loadCheckpoint(dir), err(/invalid JSON: .*JSON/, join(dir, 'trainer_state.json')));

    await saveCheckpoint(dir, contents(1));
    await writeFile(join(dir, 'config.json'), '{"n_embd": ');
    await assert.rejects(loadCheckpoint(dir), err(/invalid JSON: /, join(dir, 'config.json')));
    await writeFile(join(dir, 'config.json'), '[1, 2]');
    await assert.rejects(loadCheckpoint(dir), err(/must hold a JSON object, found an array/, join(dir, 'config.json')));
    await unlink(join(dir, 'config.json'));
    await assert.rejects(loadCheckpoint(dir), err(/missing config.json/, dir));

    await saveCheckpoint(dir, contents(1));
    await unlink(join(dir, 'model.safetensors'));
    await assert.rejects(loadCheckpoint(dir), err(/missing model.safetensors/, dir));

    // Truncated or damaged weights: the SafetensorsError names the file.
    await saveCheckpoint(dir, contents(1));
    const model = join(dir, 'model.safetensors');
    const bytes = await readFile(model);
    for (const cut of [4, 20, bytes.length - 1]) {
      await writeFile(model, bytes.subarray(0, cut));
      await assert.rejects(loadCheckpoint(dir), err(/truncated/, model));
    }
    const flipped = Buffer.from(bytes);
    flipped[8] = 0x21;
    await writeFile(model, flipped);
    await assert.rejects(loadCheckpoint(dir), err(/header is not valid JSON/, model));
    await saveCheckpoint(dir, contents(1));
    const opt = join(dir, 'optimizer.safetensors');
    await writeFile(opt, (await readFile(opt)).subarray(0, 30));
    await assert.rejects(loadCheckpoint(dir, { requireOptimizer: true }), err(/truncated/, opt));
  });
});

test('checkShapes lists missing, unexpected and misshapen tensors in one error', () => {
  const expected = new Map<string, number[]>([['a', [2, 3]], ['b', [4]], ['c', []], ['d', [1]]]);
  const loaded = new Map<string, { shape: number[] }>([['a', { shape: [3, 2] }], ['c', { shape: [] }], ['d', { shape: [1, 1] }], ['z', { shape: [1] }]]);
  assert.throws(
    () => checkShapes(expected, loaded, 'ckpt/model.safetensors'),
    (e: unknown) => {
      assert.ok(e instanceof CheckpointError);
      assert.equal(
        e.message,
        "ckpt/model.safetensors: tensors do not match the model:\n" +
          "  missing (1): 'b'\n" +
          "  unexpected (1): 'z'\n" +
          "  wrong shape (2): 'a': expected [2, 3], found [3, 2], 'd': expected [1], found [1, 1]",
      );
      return true;
    },
  );
  checkShapes(new Map([['a', [2, 3]]]), new Map([['a', { shape: [2, 3] }]]), 'x'); // no throw
  const many = new Map(Array.from({ length: 25 }, (_, i) => [`p${i}`, [1]] as [string, number[]]));
  assert.throws(() => checkShapes(many, new Map(), 'x'), /missing \(25\): 'p0', .*'p19', \.\.\. and 5 more/);
});
