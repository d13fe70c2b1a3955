// Builds the native addon (native/, binding.gyp) with node-gyp during `npm ci`. It never fails
// the install: without a compiler or Node's headers attn runs on its WebAssembly kernels, and
// build/native-build.log keeps the reason, which `attn info` shows. ATTN_NATIVE=0 skips it.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const root = join(dirname(new URL(import.meta.url).pathname), '..');
const log = join(root, 'build', 'native-build.log');
mkdirSync(join(root, 'build'), { recursive: true });
if (process.env.ATTN_NATIVE === '0') {
  writeFileSync(log, 'error: skipped (ATTN_NATIVE=0 at install)\n');
  process.exit(0);
}
// node-gyp: npm's own copy (npm passes its path), else one on PATH.
let gyp = process.env.npm_config_node_gyp;
if (!gyp || !existsSync(gyp)) {
  try {
    gyp = createRequire(join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'package.json')).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    gyp = undefined;
  }
}
// Build against the headers installed with Node (nothing is downloaded).
const args = ['rebuild'];
const prefix = join(dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node.h'))) args.push(`--nodedir=${prefix}`);
const r = gyp ? spawnSync(process.execPath, [gyp, ...args], { cwd: root, encoding: 'utf8' }) : { status: 1, stdout: '', stderr: 'error: node-gyp not found' };
// Whether native/mpi.cc went in (binding.gyp asks scripts/mpi-flags.mjs), for `attn info`.
const mpi = spawnSync(process.execPath, [join(root, 'scripts', 'mpi-flags.mjs'), 'why'], { encoding: 'utf8' }).stdout?.trim() || 'unknown';
writeFileSync(log, `${r.stdout ?? ''}${r.stderr ?? ''}${r.status === 0 ? '' : `\nerror: node-gyp exited with ${r.status}\n`}mpi: ${mpi}\n`);
if (r.status === 0) console.log('attn: native kernels built (build/Release/attn_native.node)');
else console.log(`attn: the native kernels did not build (see build/native-build.log); attn will use its WebAssembly kernels`);
