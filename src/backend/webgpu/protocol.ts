// What the engine thread sends to the thread that owns the GPU device. WebGPU reads are
// asynchronous but the engine's Backend interface is synchronous, so the device lives on a
// second thread (a Node worker; the page's main thread in a browser) and the engine thread
// blocks in Atomics.wait for read-backs. Everything else is fire-and-forget, batched.
import type { DType } from '../../tensor/dtype.js';

/** A storage as the device thread knows it: an id and an element type. */
export interface BufRef {
  readonly id: number;
  readonly dtype: DType;
}

export type Cmd =
  /** A zero-filled buffer of `bytes` bytes (uninitialized: contents unspecified). */
  | { op: 'alloc'; id: number; bytes: number; uninitialized?: boolean }
  | { op: 'free'; id: number }
  | { op: 'write'; id: number; byteOffset: number; data: ArrayBuffer }
  /** A kernel by name; args are the Backend method's arguments with storages as BufRefs. */
  | { op: 'kernel'; name: string; args: Record<string, unknown> }
  /** Read back bytes into the shared reply area (always the last command of a batch). */
  | { op: 'read'; id: number; byteOffset: number; byteLength: number };

export interface BatchMsg {
  type: 'batch';
  cmds: Cmd[];
}

/** A read of this buffer id answers with the kernel timer's totals as JSON (see
 *  GpuExecutor's KernelTimer): [{ kernel, calls, ms }], or null when kernels are not timed. */
export const KERNEL_TIMES_ID = -1;

/** Shared reply area: Int32 header [state, status, byteLength, 0] then data bytes. */
export const REPLY_HEADER_BYTES = 16;
/** Largest single read-back; longer reads are split into chunks of this size. */
export const REPLY_DATA_BYTES = 16 << 20;
export const STATE_IDLE = 0;
export const STATE_DONE = 1;
export const STATUS_OK = 0;
/** The data area holds a UTF-8 error message; status 2 = RangeError, 1 = Error. */
export const STATUS_ERROR = 1;
export const STATUS_RANGE_ERROR = 2;

/** Sent by the device thread once, after the device was made or could not be. */
export type ReadyMsg =
  | { type: 'ready'; adapter: AdapterDescription }
  | { type: 'failed'; message: string };

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  backend: string;
  features: string[];
  limits: Record<string, number>;
}
