// The webgpu backend for tests: made once per test process. Where no adapter exists the
// webgpu tests are skipped with the reason, unless ATTN_REQUIRE_WEBGPU=1 (set by .ci/run,
// which installs Mesa) turns that into a failure.
import type { Backend } from '../src/backend/backend.js';
import * as A from '../src/index.js';

let made: Promise<Backend | string> | null = null;

/** The webgpu backend, or the reason there is none. */
export function webgpu(): Promise<Backend | string> {
  made ??= A.getBackend('webgpu').catch((e: unknown) => {
    const why = e instanceof Error ? e.message : String(e);
    if (process.env.ATTN_REQUIRE_WEBGPU === '1') throw new Error(`ATTN_REQUIRE_WEBGPU=1 but ${why}`);
    return why;
  });
  return made;
}
