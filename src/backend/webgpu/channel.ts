// The engine thread's end of the link to the device thread: batches go out as messages, a
// read blocks in Atomics.wait until the device thread has filled the shared reply area.
import { REPLY_DATA_BYTES, REPLY_HEADER_BYTES, STATE_DONE, STATE_IDLE, STATUS_OK, STATUS_RANGE_ERROR, type AdapterDescription, type BatchMsg } from './protocol.js';

export interface DeviceChannel {
  readonly adapter: AdapterDescription;
  post(msg: BatchMsg | { type: 'lose' }): void;
  /** Blocks until the reply to the read just posted; returns a copy of the bytes. */
  waitReply(): Uint8Array;
  close(): Promise<void>;
}

/** The reply area both threads share. */
export function makeReplyBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(REPLY_HEADER_BYTES + REPLY_DATA_BYTES);
}

export function sharedChannel(reply: SharedArrayBuffer, adapter: AdapterDescription, post: (msg: BatchMsg) => void, close: () => Promise<void>): DeviceChannel {
  const ctrl = new Int32Array(reply, 0, 4);
  const data = new Uint8Array(reply, REPLY_HEADER_BYTES, REPLY_DATA_BYTES);
  return {
    adapter,
    // 'lose' (tests only) goes the same way; a host that does not know it ignores it.
    post: post as (msg: BatchMsg | { type: 'lose' }) => void,
    close,
    waitReply(): Uint8Array {
      for (;;) {
        if (Atomics.load(ctrl, 0) === STATE_DONE) break;
        // A minute at a time, so a lost device thread is reported instead of hanging forever.
        const r = Atomics.wait(ctrl, 0, STATE_IDLE, 60_000);
        if (r === 'timed-out' && Atomics.load(ctrl, 0) !== STATE_DONE) throw new Error('webgpu: the device thread did not answer within 60 s');
      }
      const status = Atomics.load(ctrl, 1);
      const len = Atomics.load(ctrl, 2);
      const bytes = data.slice(0, len);
      Atomics.store(ctrl, 0, STATE_IDLE);
      if (status === STATUS_OK) return bytes;
      const message = new TextDecoder().decode(bytes);
      if (status === STATUS_RANGE_ERROR) throw new RangeError(message);
      throw new Error(`webgpu: ${message}`);
    },
  };
}
