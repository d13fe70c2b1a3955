// binding.gyp asks this whether to build native/mpi.cc and with which flags: `have` prints 1 when
// an MPI C compiler wrapper (mpicc, Open MPI's or MPICH's) answers --showme and its mpi.h exists,
// else 0 (the addon then builds without MPI); `cflags` / `libs` print its flags. ATTN_MPI=0 hides
// it (to build and test the addon without MPI); ATTN_MPICC names another wrapper.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

function showme(what) {
  if (process.env.ATTN_MPI === '0') return null;
  const r = spawnSync(process.env.ATTN_MPICC ?? 'mpicc', [`--showme:${what}`], { encoding: 'utf8' });
  return r.status === 0 && !r.error ? r.stdout.trim().split(/\s+/).filter((s) => s) : null;
}

const compile = showme('compile');
const link = showme('link');
const includes = (compile ?? []).filter((f) => f.startsWith('-I')).map((f) => f.slice(2));
const have = compile !== null && link !== null && includes.some((d) => existsSync(join(d, 'mpi.h')));
const what = process.argv[2];
if (what === 'have') console.log(have ? '1' : '0');
else if (what === 'cflags') console.log(have ? compile.join(' ') : '');
else if (what === 'libs') {
  // An rpath for each library folder, so the addon loads without LD_LIBRARY_PATH.
  const dirs = link?.filter((f) => f.startsWith('-L')).map((f) => `-Wl,-rpath,${f.slice(2)}`) ?? [];
  console.log(have ? [...link, ...dirs].join(' ') : '');
} else if (what === 'why') console.log(have ? 'found' : process.env.ATTN_MPI === '0' ? 'ATTN_MPI=0 at build' : 'no mpicc with mpi.h found at build');
else {
  console.error('usage: node scripts/mpi-flags.mjs have|cflags|libs|why');
  process.exit(2);
}
