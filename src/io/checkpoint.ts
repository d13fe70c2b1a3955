// Checkpoint directories in the Hugging Face layout:
//   config.json, model.safetensors, tokenizer files, and for resuming training
//   optimizer.safetensors + trainer_state.json.
// Saving is crash-safe: everything is written and fsynced into a fresh sibling directory
// `<dir>.tmp-<pid>-<n>`, then swapped in with renames (dir → dir.old, tmp → dir, remove
// dir.old). At every instant either `dir` or `dir.old` is a whole checkpoint, and loading
// (or the next save) first recovers from whatever a crash left. The names `<dir>.old` and
// `<dir>.tmp-*` are therefore reserved. One writer per checkpoint directory at a time.
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { exists, fsyncDir, readSafetensorsFile, tempSibling, writeFileSynced } from './files.js';
import { serializeSafetensors, type LoadedTensor, type TensorEntry } from './safetensors.js';
import type { Backend } from '../backend/backend.js';
import { tensor, Tensor, type DType } from '../tensor/index.js';

export const CONFIG_FILE = 'config.json';
export const MODEL_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_STATE_FILE = 'trainer_state.json';
const RESERVED = new Set([CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE]);

export class CheckpointError extends Error {
  /** The directory or file the problem is about. */
  readonly path: string;
  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.name = 'CheckpointError';
    this.path = path;
  }
}

/** Tensors to save: attn tensors or ready-made entries, by name. */
export type TensorSource = Map<string, Tensor | TensorEntry> | Record<string, Tensor | TensorEntry>;

export interface CheckpointContents {
  /** Written as config.json. */
  config: object;
  /** Written as model.safetensors. */
  model: TensorSource;
  /** Extra model.safetensors metadata; `format: "pt"` is always included, since transformers refuses files without it. */
  modelMetadata?: Record<string, string>;
  /** Other files (tokenizer.json, vocab.json, merges.txt, ...), by plain file name. */
  tokenizerFiles?: Record<string, string | Uint8Array>;
  /** Written as optimizer.safetensors; needs trainerState too (a resume needs both). */
  optimizer?: TensorSource;
  /** Written as trainer_state.json (step counts, learning-rate schedule position, RNG seeds, ...). */
  trainerState?: object;
}

export interface SaveOptions {
  /**
   * For tests: called after each step ('file:<name>', 'tmp-complete', 'old-moved',
   * 'new-moved', 'done'). A throw simulates a crash at that point: saveCheckpoint rethrows it
   * and leaves the disk exactly as it is, without cleaning up.
   */
  onStep?: (step: string) => void | Promise<void>;
}

export interface LoadOptions {
  /** Also require optimizer.safetensors and trainer_state.json (resuming training). */
  requireOptimizer?: boolean;
}

export interface LoadedCheckpoint {
  /** Absolute path of the checkpoint directory. */
  dir: string;
  config: Record<string, unknown>;
  /** model.safetensors, in file order. */
  tensors: Map<string, LoadedTensor>;
  /** model.safetensors "__metadata__". */
  metadata: Record<string, string>;
  optimizer?: Map<string, LoadedTensor>;
  trainerState?: Record<string, unknown>;
  /** Names of the other files in the directory (tokenizer files, generation config, ...), sorted; read them from `dir`. */
  tokenizerFiles: string[];
}

/** The safetensors entry for an attn tensor (float32 → F32, float64 → F64, int32 → I32). */
export function tensorEntry(t: Tensor): TensorEntry {
  const dtype = t.dtype === 'float64' ? 'F64' : t.dtype === 'int32' ? 'I32' : 'F32';
  return { dtype, shape: [...t.shape], data: t.data() };
}

/**
 * An attn tensor from a loaded entry. The dtype defaults to the array's (Float32Array →
 * float32, Float64Array → float64, Int32Array → int32).
 */
export function entryToTensor(e: LoadedTensor, opts: { backend?: Backend; dtype?: DType } = {}): Tensor {
  const dtype = opts.dtype ?? (e.data instanceof Float64Array ? 'float64' : e.data instanceof Int32Array ? 'int32' : 'float32');
  return tensor(e.data, { shape: e.shape, dtype, ...(opts.backend ? { backend: opts.backend } : {}) });
}

function toEntries(src: TensorSource): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  for (const [name, v] of src instanceof Map ? src : Object.entries(src)) out.set(name, v instanceof Tensor ? tensorEntry(v) : v);
  return out;
}

const isPlainObject = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);

function fmtShape(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/**
 * Checks loaded tensors against the shapes a model expects, and throws one CheckpointError
 * listing every missing tensor, unexpected tensor and wrong shape (name, expected, found).
 */
export function checkShapes(expected: Map<string, readonly number[]>, loaded: Map<string, { shape: readonly number[] }>, fileName: string): void {
  const missing: string[] = [];
  const unexpected: string[] = [];
  const wrong: string[] = [];
  for (const [name, shape] of expected) {
    const got = loaded.get(name);
    if (!got) missing.push(name);
    else if (got.shape.length !== shape.length || got.shape.some((d, i) => d !== shape[i])) wrong.push(`'${name}': expected ${fmtShape(shape)}, found ${fmtShape(got.shape)}`);
  }
  for (const name of loaded.keys()) if (!expected.has(name)) unexpected.push(name);
  if (!missing.length && !unexpected.length && !wrong.length) return;
  const list = (items: string[], quote: boolean): string => {
    const shown = items.slice(0, 20).map((s) => (quote ? `'${s}'` : s));
    return shown.join(', ') + (items.length > 20 ? `, ... and ${items.length - 20} more` : '');
  };
  const lines = ['tensors do not match the model:'];
  if (missing.length) lines.push(`  missing (${missing.length}): ${list(missing, true)}`);
  if (unexpected.length) lines.push(`  unexpected (${unexpected.length}): ${list(unexpected, true)}`);
  if (wrong.length) lines.push(`  wrong shape (${wrong.length}): ${list(wrong, false)}`);
  throw new CheckpointError(fileName, lines.join('\n'));
}

/** Temp directories of saves in progress in this process, which recovery must not delete. */
const activeTemps = new Set<string>();

/** Wraps what an onStep hook threw, so that it skips the cleanup a real error gets. */
class SimulatedCrash {
  constructor(readonly error: unknown) {}
}

/**
 * Brings a checkpoint location back to a clean state after a crash: if `dir` is missing but
 * `dir.old` exists (crash between the two renames), `dir.old` is the whole old checkpoint and
 * is renamed back; if both exist (crash before the final removal), `dir` is the whole new
 * one and `dir.old` is removed; leftover `dir.tmp-*` directories are removed.
 */
export async function recoverCheckpoint(dir: string): Promise<void> {
  dir = resolve(dir);
  const parent = dirname(dir);
  const old = `${dir}.old`;
  const hasDir = await exists(dir);
  if (await exists(old)) {
    if (hasDir) await rm(old, { recursive: true, force: true });
    else {
      await rename(old, dir);
      await fsyncDir(parent);
    }
  }
  let names: string[];
  try {
    names = await readdir(parent);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  const prefix = `${basename(dir)}.tmp-`;
  for (const name of names) {
    const p = join(parent, name);
    if (name.startsWith(prefix) && !activeTemps.has(p)) await rm(p, { recursive: true, force: true });
  }
}

/**
 * Saves a checkpoint directory crash-safely (see the top of this file), replacing any
 * checkpoint already at `dir`. Refuses to replace a non-empty directory holding none of the
 * checkpoint files (config.json, model.safetensors, ...), so a wrong path cannot wipe unrelated files.
 */
export async function saveCheckpoint(dir: string, contents: CheckpointContents, opts: SaveOptions = {}): Promise<void> {
  dir = resolve(dir);
  const parent = dirname(dir);
  const old = `${dir}.old`;
  const step = async (name: string): Promise<void> => {
    if (!opts.onStep) return;
    try {
      await opts.onStep(name);
    } catch (e) {
      throw new SimulatedCrash(e);
    }
  };

  // Validate and serialize everything before touching the disk.
  if (!isPlainObject(contents.config)) throw new CheckpointError(dir, 'config must be an object');
  if (contents.optimizer && !isPlainObject(contents.trainerState)) throw new CheckpointError(dir, 'optimizer state needs trainerState too (a resume needs both)');
  if (contents.trainerState !== undefined && !isPlainObject(contents.trainerState)) throw new CheckpointError(dir, 'trainerState must be an object');
  const files: [string, string | Uint8Array][] = [
    [CONFIG_FILE, JSON.stringify(contents.config, null, 2) + '\n'],
    [MODEL_FILE, serializeSafetensors(toEntries(contents.model), { format: 'pt', ...contents.modelMetadata })],
  ];
  for (const [name, data] of Object.entries(contents.tokenizerFiles ?? {})) {
    if (!name || name === '.' || name === '..' || /[/\\\0]/.test(name)) throw new CheckpointError(dir, `tokenizer file name ${JSON.stringify(name)} must be a plain file name`);
    if (RESERVED.has(name)) throw new CheckpointError(dir, `tokenizer file name '${name}' is reserved for the checkpoint itself`);
    files.push([name, data]);
  }
  if (contents.optimizer) files.push([OPTIMIZER_FILE, serializeSafetensors(toEntries(contents.optimizer), { format: 'pt' })]);
  if (contents.trainerState !== undefined) files.push([TRAINER_STATE_FILE, JSON.stringify(contents.trainerState, null, 2) + '\n']);

  try {
    await recoverCheckpoint(dir);
    if (await exists(dir)) {
      const st = await stat(dir);
      if (!st.isDirectory()) throw new CheckpointError(dir, 'exists and is not a directory; refusing to replace it');
      const present = await readdir(dir);
      if (present.length > 0 && !present.some((n) => RESERVED.has(n))) throw new CheckpointError(dir, `exists, is not empty and has none of ${[...RESERVED].join(', ')}; refusing to replace what does not look like a checkpoint`);
    }
    await mkdir(parent, { recursive: true });

    const tmp = tempSibling(dir);
    activeTemps.add(tmp);
    try {
      await mkdir(tmp);
      for (const [name, data] of files) {
        await writeFileSynced(join(tmp, name), data);
        await step(`file:${name}`);
      }
      await fsyncDir(tmp);
    } catch (e) {
      // A real failure (disk full, ...) cleans up; a simulated crash leaves the debris.
      if (!(e instanceof SimulatedCrash)) await rm(tmp, { recursive: true, force: true });
      throw e;
    } finally {
      activeTemps.delete(tmp);
    }
    await step('tmp-complete');

    const hadOld = await exists(dir);
    if (hadOld) {
      await rename(dir, old);
      await fsyncDir(parent);
      await step('old-moved');
    }
    try {
      await rename(tmp, dir);
    } catch (e) {
      // Put the old checkpoint back rather than leave it to the next recovery.
      if (hadOld) await rename(old, dir).catch(() => undefined);
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
    await fsyncDir(parent);
    await step('new-moved');
    if (hadOld) await rm(old, { recursive: true, force: true });
    await step('done');
  } catch (e) {
    if (e instanceof SimulatedCrash) throw e.error;
    throw e;
  }
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  const text = await readFile(path, 'utf8');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(path, `invalid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(v)) throw new CheckpointError(path, `must hold a JSON object, found ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
  return v;
}

/**
 * Loads a checkpoint directory after recovering from any interrupted save. Returns plain
 * data; building model parameters from it (and checkShapes) is the model's job. Errors name
 * the directory or file and the problem: a missing directory or file, invalid JSON, or a
 * corrupt safetensors file (SafetensorsError).
 */
export async function loadCheckpoint(dir: string, opts: LoadOptions = {}): Promise<LoadedCheckpoint> {
  dir = resolve(dir);
  await recoverCheckpoint(dir);
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new CheckpointError(dir, 'checkpoint directory does not exist');
    throw e;
  }
  if (!st.isDirectory()) throw new CheckpointError(dir, 'is not a directory');
  const entries = await readdir(dir, { withFileTypes: true });
  const names = new Set(entries.map((e) => e.name));
  const need = (name: string, why: string): void => {
    if (!names.has(name)) throw new CheckpointError(dir, `missing ${name}${why}`);
  };
  need(CONFIG_FILE, '');
  need(MODEL_FILE, '');
  if (opts.requireOptimizer) {
    need(OPTIMIZER_FILE, ' (optimizer state is required to resume training)');
    need(TRAINER_STATE_FILE, ' (trainer state is required to resume training)');
  }
  const config = await readJson(join(dir, CONFIG_FILE));
  const model = await readSafetensorsFile(join(dir, MODEL_FILE));
  const out: LoadedCheckpoint = {
    dir,
    config,
    tensors: model.tensors,
    metadata: model.metadata,
    tokenizerFiles: entries.filter((e) => e.isFile() && !RESERVED.has(e.name)).map((e) => e.name).sort(),
  };
  if (names.has(OPTIMIZER_FILE)) out.optimizer = (await readSafetensorsFile(join(dir, OPTIMIZER_FILE))).tensors;
  if (names.has(TRAINER_STATE_FILE)) out.trainerState = await readJson(join(dir, TRAINER_STATE_FILE));
  return out;
}
