// Two "hosts" on this machine: two network namespaces joined by a veth pair (10.231.R.1 and
// 10.231.R.2), each with its own hostname (a UTS namespace), mpirun in the first launching the
// second rank's daemon through a stand-in for ssh (ip netns exec), and Open MPI's TCP transport
// between them. The dp=2 losses match the single-process run's, and the bytes through the veth
// pair per update match the all-reduce formula. Needs root and iproute2 (skipped otherwise;
// ATTN_REQUIRE_MPI=1 makes a missing MPI a failure, as in test/distributed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mpiBinding } from '../src/train/parallel/mpi.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const DATASET = fileURLToPath(new URL('../../data/shakespeare_char', import.meta.url));
const CWD = mkdtempSync(join(tmpdir(), 'attn-netns-'));
const tag = String(process.pid % 100000);
const NS = [`attnA${tag}`, `attnB${tag}`];
const subnet = `10.231.${process.pid % 250}`;
const IP = [`${subnet}.1`, `${subnet}.2`];
const VETH = [`va${tag}`, `vb${tag}`];

const sh = (cmd: string[]): { ok: boolean; out: string } => {
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 20_000 });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
};

function setUp(): string {
  if (process.getuid?.() !== 0) return 'not root (ip netns needs it)';
  if (!sh(['mpirun', '--version']).ok) return 'mpirun not found';
  const b = mpiBinding();
  if (!b.mpi) return `MPI binding: ${b.why}`;
  const steps = [
    ['ip', 'netns', 'add', NS[0]!], ['ip', 'netns', 'add', NS[1]!],
    ['ip', 'link', 'add', VETH[0]!, 'type', 'veth', 'peer', 'name', VETH[1]!],
    ['ip', 'link', 'set', VETH[0]!, 'netns', NS[0]!], ['ip', 'link', 'set', VETH[1]!, 'netns', NS[1]!],
    ['ip', '-n', NS[0]!, 'addr', 'add', `${IP[0]}/24`, 'dev', VETH[0]!], ['ip', '-n', NS[1]!, 'addr', 'add', `${IP[1]}/24`, 'dev', VETH[1]!],
    ['ip', '-n', NS[0]!, 'link', 'set', VETH[0]!, 'up'], ['ip', '-n', NS[1]!, 'link', 'set', VETH[1]!, 'up'],
    ['ip', '-n', NS[0]!, 'link', 'set', 'lo', 'up'], ['ip', '-n', NS[1]!, 'link', 'set', 'lo', 'up'],
  ];
  for (const s of steps) {
    const r = sh(s);
    if (!r.ok) return `${s.join(' ')}: ${r.out.trim()}`;
  }
  return '';
}

const why = setUp();
process.on('exit', () => {
  for (const n of NS) sh(['ip', 'netns', 'del', n]); // deleting a namespace deletes its end of the veth pair
  rmSync(CWD, { recursive: true, force: true });
});
if (why && process.env['ATTN_REQUIRE_MPI'] === '1' && /MPI|mpirun/.test(why)) throw new Error(`ATTN_REQUIRE_MPI=1 but ${why}`);

// ssh's stand-in for Open MPI's launcher: "HOST COMMAND..." runs COMMAND in HOST's namespace.
const RSH = join(CWD, 'netns-rsh');
writeFileSync(RSH, `#!/bin/sh
host=$1; shift
case "$host" in ${IP[0]}) ns=${NS[0]}; hn=node-a;; ${IP[1]}) ns=${NS[1]}; hn=node-b;; *) echo "netns-rsh: unknown host $host" >&2; exit 1;; esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $hn; $*"
`);
chmodSync(RSH, 0o755);

const ARGS = [
  'train', '--preset', 'shakespeare-char', '--dataset', DATASET, '--n_layer', '2', '--n_embd', '96', '--batch_size', '2', '--block_size', '32',
  '--gradient_accumulation_steps', '2', '--dropout', '0', '--warmup_iters', '5', '--lr_decay_iters', '20', '--max_iters', '10', '--eval_interval', '10', '--eval_iters', '1',
  '--log_interval', '1', '--device', 'cpu', '--threads', '1', '--sample', '0', '--quiet',
];

function txBytes(ns: string, dev: string): number {
  return Number(sh(['ip', 'netns', 'exec', ns, 'cat', `/sys/class/net/${dev}/statistics/tx_bytes`]).out.trim());
}

function losses(dir: string): number[] {
  return readFileSync(join(CWD, dir, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l) as { train_loss?: number; comm_bytes?: number })
    .filter((r) => r.train_loss !== undefined).map((r) => r.train_loss!);
}

test('dp=2 across two network namespaces over TCP: the single-process losses, and the all-reduce bytes on the wire', { skip: why ? `no netns run: ${why}` : false }, () => {
  const single = spawnSync(process.execPath, [CLI, ...ARGS, '--out', 'single'], { encoding: 'utf8', cwd: CWD, timeout: 60_000 });
  assert.equal(single.status, 0, single.stderr);
  const before = txBytes(NS[0]!, VETH[0]!);
  const mpirun = ['mpirun', '--allow-run-as-root', '-np', '2', '--host', `${IP[0]}:1,${IP[1]}:1`, '--mca', 'plm_rsh_agent', RSH,
    '--mca', 'btl', 'tcp,self', '--mca', 'btl_tcp_if_include', `${subnet}.0/24`, '--mca', 'oob_tcp_if_include', `${subnet}.0/24`,
    process.execPath, CLI, ...ARGS, '--out', 'netns', '--parallel', 'dp=2'].map((a) => `'${a}'`).join(' ');
  const r = spawnSync('ip', ['netns', 'exec', NS[0]!, 'unshare', '--uts', 'sh', '-c', `hostname node-a; ${mpirun}`], { encoding: 'utf8', cwd: CWD, timeout: 90_000 });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const sent = txBytes(NS[0]!, VETH[0]!) - before;
  const a = losses('single');
  const b = losses('netns');
  assert.equal(b.length, 10);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= 1e-5 * Math.abs(x), `step ${i}: ${b[i]} over TCP vs ${x}`));
  // Ring all-reduce over p ranks sends 2(p-1)/p of the gradient per rank per update: all of it for p = 2.
  const rec = JSON.parse(readFileSync(join(CWD, 'netns', 'metrics.jsonl'), 'utf8').split('\n')[1]!) as { comm_bytes: number };
  const formula = 10 * rec.comm_bytes;
  process.stdout.write(`veth ${VETH[0]} sent ${sent} bytes for 10 updates; the all-reduce formula says ${formula} (+ launch, wire-up and small collectives)\n`);
  assert.ok(sent >= formula && sent <= formula * 1.3 + 2e6, `bytes on the wire ${sent} vs formula ${formula}`);
});
