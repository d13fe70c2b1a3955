// The Node edge of the io layer: durable file writes and safetensors files on disk.
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { decodeTensor, MAX_HEADER_BYTES, parseSafetensorsHeader, serializeSafetensors, SafetensorsError, type LoadedTensor, type SafeTensors, type SafetensorsHeader, type TensorEntry } from './safetensors.js';

let tmpCounter = 0;

/** A name for a temporary sibling of `path` that no other writer (process or call) picks. */
export function tempSibling(path: string): string {
  return join(dirname(path), `${basename(path)}.tmp-${process.pid}-${tmpCounter++}`);
}

/**
 * fsyncs a directory so that renames and creations inside it survive a power loss. Some
 * platforms (Windows) cannot open directories; there the rename is as durable as it gets.
 */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EACCES') throw e;
  } finally {
    await fh?.close();
  }
}

/** Writes a new file and fsyncs it (fails if the file exists: callers write fresh names). */
export async function writeFileSynced(path: string, data: Uint8Array | string): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `path` with `data` atomically: readers see the old file or the new one, never a
 * mix, even across a crash. Writes a temporary file in the same directory (rename is only
 * atomic within a file system), fsyncs it, renames it over `path`, then fsyncs the directory.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = tempSibling(path);
  try {
    await writeFileSynced(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dirname(path));
}

/** Reads exactly `length` bytes at `position` (fs reads may return short counts). */
async function readExactly(fh: FileHandle, into: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    // Reads are capped below 2 GiB, the most one read() call accepts.
    const { bytesRead } = await fh.read(into, done, Math.min(into.length - done, 1 << 30), position + done);
    if (bytesRead === 0) throw new SafetensorsError(path, `file ended early while reading bytes ${position}..${position + into.length} (was it modified during the read?)`);
    done += bytesRead;
  }
}

/** A safetensors file opened for reading one tensor at a time (close() when done). */
export interface SafetensorsReader {
  readonly path: string;
  readonly header: SafetensorsHeader;
  /** Reads and decodes one tensor (float types to Float32Array, F64 to Float64Array). */
  read(name: string): Promise<LoadedTensor>;
  /** Reads one tensor's bytes as stored (little-endian), undecoded: packed integer data. */
  readBytes(name: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Opens a safetensors file and validates its header against the file size; reads no tensor. */
export async function openSafetensorsFile(path: string): Promise<SafetensorsReader> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const lenBytes = new Uint8Array(Math.min(8, size));
    await readExactly(fh, lenBytes, 0, path);
    // Read the header only when its length is plausible; otherwise the parser reports the
    // bad length from the prefix alone (and no huge buffer is allocated).
    const dv = new DataView(lenBytes.buffer);
    const n = size >= 8 ? dv.getUint32(0, true) + dv.getUint32(4, true) * 2 ** 32 : Infinity;
    const prefix = new Uint8Array(n <= size - 8 && n <= MAX_HEADER_BYTES ? 8 + n : lenBytes.length);
    prefix.set(lenBytes);
    if (prefix.length > 8) await readExactly(fh, prefix.subarray(8), 8, path);
    const header = parseSafetensorsHeader(prefix, size, path);
    return {
      path,
      header,
      async read(name: string): Promise<LoadedTensor> {
        const info = header.tensors.get(name);
        if (!info) throw new SafetensorsError(path, `no tensor '${name}'`);
        const bytes = new Uint8Array(info.end - info.begin);
        await readExactly(fh, bytes, header.dataStart + info.begin, path);
        return decodeTensor(name, info, bytes, path, true);
      },
      async readBytes(name: string): Promise<Uint8Array> {
        const info = header.tensors.get(name);
        if (!info) throw new SafetensorsError(path, `no tensor '${name}'`);
        const bytes = new Uint8Array(info.end - info.begin);
        await readExactly(fh, bytes, header.dataStart + info.begin, path);
        return bytes;
      },
      close: () => fh.close(),
    };
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/**
 * Reads a safetensors file. The header is validated against the file size before any tensor
 * is read, and tensors are read one at a time straight into their arrays, so memory peaks at
 * the result rather than the file plus the result (and files over 2 GiB work).
 */
export async function readSafetensorsFile(path: string): Promise<SafeTensors> {
  const r = await openSafetensorsFile(path);
  try {
    const tensors = new Map<string, LoadedTensor>();
    for (const name of r.header.tensors.keys()) tensors.set(name, await r.read(name));
    return { tensors, metadata: r.header.metadata };
  } finally {
    await r.close();
  }
}

/** Writes a safetensors file atomically (see serializeSafetensors for the layout). */
export async function writeSafetensorsFile(path: string, entries: Map<string, TensorEntry> | Record<string, TensorEntry>, metadata?: Record<string, string>): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(entries, metadata));
}

/** True when `path` exists (any kind of entry). */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}
