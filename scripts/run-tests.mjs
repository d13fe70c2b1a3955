// Runs every compiled test file with Node's built-in test runner.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const dir = 'dist/test';
const only = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => join(dir, f));
if (files.length === 0) {
  console.error('no test files found in dist/test (did the build run?)');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);

// float16 arithmetic needs an adapter with shader-f16. Where .ci/run fetched Mesa 25's lavapipe
// (ATTN_VULKAN_ICD: its ICD file; ATTN_VULKAN_LIB: the loader's folder), the float16 test file
// runs again on it, and must find shader-f16 there.
const half = files.filter((f) => f.includes('webgpu-half'));
if (process.env.ATTN_VULKAN_ICD && half.length) {
  console.log(`\n# webgpu-half again on Vulkan (${process.env.ATTN_VULKAN_ICD}), for float16 arithmetic`);
  const env = {
    ...process.env, VK_ICD_FILENAMES: process.env.ATTN_VULKAN_ICD, ATTN_WEBGPU_BACKEND: 'vulkan', ATTN_REQUIRE_F16: '1',
    LD_LIBRARY_PATH: [process.env.ATTN_VULKAN_LIB, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
  };
  const v = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...half], { stdio: 'inherit', env });
  process.exit(v.status ?? 1);
}
process.exit(0);
