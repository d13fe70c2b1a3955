// Pieces shared by the commands: backend choice, model and tokenizer loading with clear errors.
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../backend/backend.js';
import { DEVICE_NAMES, openDevice, type DeviceName } from '../backend/index.js';
import { loadGPTCheckpoint } from '../models/gpt-checkpoint.js';
import type { GPT } from '../models/gpt.js';
import { loadGpt2Tokenizer, loadTokenizer, type Tokenizer } from '../tokenizers/index.js';
import { type Flags, UsageError } from './args.js';

export const DEVICES = DEVICE_NAMES;

/** --device cpu|webgpu|auto|ref (default cpu) and --threads N. */
export async function backendFromFlags(f: Flags): Promise<Backend> {
  const device = f.string('device') ?? 'cpu';
  if (!(DEVICES as readonly string[]).includes(device)) throw new UsageError(`${f.command}: unknown --device '${device}' (known: ${DEVICES.join(', ')})`);
  const threads = f.number('threads', { integer: true, min: 1 });
  return openDevice(device as DeviceName, threads === undefined ? {} : { threads });
}

export async function requireDir(command: string, flag: string, path: string): Promise<void> {
  let s;
  try {
    s = await stat(path);
  } catch {
    throw new UsageError(`${command}: --${flag} ${path}: no such directory`);
  }
  if (!s.isDirectory()) throw new UsageError(`${command}: --${flag} ${path} is not a directory`);
}

export async function requireFile(command: string, flag: string, path: string): Promise<void> {
  let s;
  try {
    s = await stat(path);
  } catch {
    throw new UsageError(`${command}: --${flag} ${path}: no such file`);
  }
  if (!s.isFile()) throw new UsageError(`${command}: --${flag} ${path} is not a file`);
}

/** A model directory: config.json + model.safetensors (attn checkpoints and Hugging Face GPT-2). */
export async function loadModelDir(command: string, dir: string, backend: Backend): Promise<GPT> {
  await requireDir(command, 'model', dir);
  return (await loadGPTCheckpoint(dir, { backend })).model;
}

/** 'gpt2' for GPT-2's own tokenizer, else a directory (or file) holding tokenizer files. */
export async function tokenizerFrom(command: string, spec: string): Promise<Tokenizer> {
  if (spec === 'gpt2') return loadGpt2Tokenizer();
  try {
    await stat(spec);
  } catch {
    throw new UsageError(`${command}: tokenizer '${spec}' not found (give 'gpt2' or a directory with tokenizer files)`);
  }
  return loadTokenizer(spec);
}

/**
 * A default data path such as data/sst2/train.tsv: relative to the working directory when it
 * exists there, else the copy shipped with the package (so commands work from any directory).
 */
export function shippedData(path: string): string {
  if (!path.startsWith('data/') || existsSync(path)) return path;
  const shipped = fileURLToPath(new URL(`../../../${path}`, import.meta.url));
  return existsSync(shipped) ? shipped : path;
}
