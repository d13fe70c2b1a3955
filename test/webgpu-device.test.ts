// Choosing the device: --device webgpu insists (no adapter is a clear one-line error),
// --device auto falls back to cpu with a notice, attn info prints the adapter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isSoftwareAdapter } from '../src/backend/index.js';
import { webgpu } from './webgpu-helpers.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function attn(args: string[], env: Record<string, string> = {}): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  // Dawn's own warnings on stderr are not ours to judge.
  const err = r.stderr.split('\n').filter((l) => l && !l.startsWith('Warning:') && !/^\s+at /.test(l)).join('\n');
  return { code: r.status, out: r.stdout, err };
}

test('--device webgpu without an adapter: one clear line and exit code 1, no stack trace', () => {
  // ATTN_WEBGPU_BACKEND=none looks for no adapter: a machine without a GPU driver, wherever
  // the test runs (CI has Mesa's software adapters, a GPU machine a real one).
  const r = attn(['info', '--device', 'webgpu'], { ATTN_WEBGPU_BACKEND: 'none' });
  assert.notEqual(r.code, 0);
  assert.match(r.err, /^attn info: webgpu: no WebGPU adapter \(tried: none\)$/m);
  assert.doesNotMatch(r.err, /node:internal|\.js:\d+/);
});

test('--device auto: no adapter or a software one falls back to cpu with a notice', () => {
  const r = attn(['info', '--device', 'auto'], { ATTN_WEBGPU_BACKEND: 'none' });
  assert.equal(r.code, 0);
  assert.match(r.err, /device auto: no WebGPU .*; using cpu/);
  assert.match(r.out, /^backend: cpu/m);
  assert.ok(isSoftwareAdapter('OpenGL ES 3.2 Mesa 22.3.6 llvmpipe') && isSoftwareAdapter('Google SwiftShader') && !isSoftwareAdapter('NVIDIA H100 80GB HBM3'));
});

test('attn info --device webgpu prints the adapter', async (t) => {
  const be = await webgpu();
  if (typeof be === 'string') return t.skip(be);
  const r = attn(['info', '--device', 'webgpu']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^backend: webgpu$/m);
  assert.match(r.out, /^adapter: .+ via Dawn \w+$/m);
  assert.match(r.out, /^adapter limits: .*maxStorageBufferBindingSize=\d+/m);
});
