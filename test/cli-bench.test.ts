// attn bench attention and attn compare as a user runs them: child processes on the built CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function attn(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: ROOT, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('bench attention --json: one row per variant and T, with time and peak memory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'attn-bench-'));
  try {
    const r = attn(['bench', 'attention', '--min_t', '128', '--max_t', '256', '--n_embd', '64', '--n_head', '2', '--reps', '1', '--threads', '2', '--json', '--out', dir]);
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { variant: string; T: number; ms: number; peak_bytes: number });
    const variants = new Set(rows.map((x) => x.variant));
    assert.ok(variants.has('naive') && variants.has('dense'), [...variants].join(','));
    for (const x of rows) {
      assert.ok([128, 256].includes(x.T));
      assert.ok(x.ms > 0 && Number.isFinite(x.ms));
      assert.ok(x.peak_bytes > 0);
    }
    for (const v of variants) assert.deepEqual(rows.filter((x) => x.variant === v).map((x) => x.T), [128, 256]);
    // The naive materialised attention needs more memory than the fused kernel as T grows.
    const at = (v: string, T: number) => rows.find((x) => x.variant === v && x.T === T)!.peak_bytes;
    assert.ok(at('naive', 256) > at('dense', 256));
    assert.match(r.stderr, /targets at T=256/);
    for (const f of ['attention-time.svg', 'attention-memory.svg', 'attention.json']) assert.ok(existsSync(join(dir, f)), f);
    assert.ok(readFileSync(join(dir, 'attention-time.svg'), 'utf8').includes('</svg>'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench: bad subcommands and variants are usage errors', () => {
  let r = attn(['bench']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /missing subcommand.*attention/);
  r = attn(['bench', 'nope']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown subcommand 'nope'/);
  r = attn(['bench', 'attention', '--variants', 'dense,bogus']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown variant 'bogus' \(known: naive, dense/);
  r = attn(['train', 'extra']);
  assert.equal(r.code, 2);
});

test('compare: trains a tiny model per variant and writes the table, compare.json and compare.svg', () => {
  const dir = mkdtempSync(join(tmpdir(), 'attn-compare-'));
  try {
    const r = attn(['compare', '--variants', 'dense', '--max_iters', '3', '--n_layer', '1', '--n_embd', '32', '--n_head', '2', '--block_size', '32', '--batch_size', '2', '--eval_iters', '2', '--threads', '2', '--data', join(dir, 'data'), '--out', dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /variant\s+params\s+active\s+val loss/);
    assert.match(r.stdout, /^dense\s+0\.0\d+M\s+0\.0\d+M\s+\d\.\d{4}/m);
    const json = JSON.parse(readFileSync(join(dir, 'compare.json'), 'utf8')) as { rows: { variant: string; val_loss: number; tokens_per_s: number; peak_heap_bytes: number; tokens: number }[] };
    assert.equal(json.rows.length, 1);
    const row = json.rows[0]!;
    assert.equal(row.variant, 'dense');
    assert.ok(row.val_loss > 0 && row.tokens_per_s > 0 && row.peak_heap_bytes > 0);
    assert.equal(row.tokens, 3 * 2 * 32);
    assert.ok(readFileSync(join(dir, 'compare.svg'), 'utf8').includes('</svg>'));
    assert.ok(existsSync(join(dir, 'dense', 'metrics.jsonl')));
    const bad = attn(['compare', '--variants', 'densee']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown variant 'densee' \(known: dense, local/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
