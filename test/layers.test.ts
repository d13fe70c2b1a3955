// The layering the README promises, checked on the sources: inference commands and the library's
// inference modules never reach src/train or src/tasks, and src has no import cycles (static or dynamic).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../src', import.meta.url));

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Module → the modules it imports (static, dynamic and re-exports), as paths relative to src. */
function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const f of files(SRC)) {
    const text = readFileSync(f, 'utf8');
    const deps = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)\.js'/g)].map((m) => relative(SRC, resolve(dirname(f), m[1]!)) + '.ts');
    g.set(relative(SRC, f), deps);
  }
  return g;
}

function reach(g: Map<string, string[]>, from: string): Set<string> {
  const seen = new Set<string>();
  const stack = [from];
  while (stack.length) {
    const m = stack.pop()!;
    if (seen.has(m)) continue;
    seen.add(m);
    stack.push(...(g.get(m) ?? []));
  }
  return seen;
}

test('inference never imports train/ or tasks/', () => {
  const g = graph();
  for (const m of ['cli/sample.ts', 'cli/logprobs.ts', 'cli/translate.ts', 'cli/eval.ts', 'cli/tokenize.ts', 'generate/index.ts', 'generate/translate.ts', 'models/files.ts', 'eval/classify.ts', 'eval/translation.ts']) {
    assert.ok(g.has(m), `${m} exists`);
    const bad = [...reach(g, m)].filter((x) => x.startsWith('train/') || x.startsWith('tasks/'));
    assert.deepEqual(bad, [], `${m} reaches ${bad.join(', ')}`);
  }
  // A lower layer never imports a higher one.
  const order = ['util', 'tensor', 'backend', 'nn', 'models', 'tokenizers', 'data', 'io', 'eval', 'generate', 'train', 'tasks', 'cli'];
  const rank = (m: string): number => order.indexOf(m.split('/')[0]!);
  for (const [m, deps] of g) {
    if (rank(m) < 0) continue;
    for (const d of deps) if (['train', 'tasks', 'cli'].includes(d.split('/')[0]!) && rank(d) > rank(m)) assert.fail(`${m} imports ${d}`);
  }
});

test('src has no import cycles', () => {
  const g = graph();
  const state = new Map<string, 1 | 2>(); // 1: on the path, 2: done
  const cycles: string[] = [];
  const visit = (m: string, path: string[]): void => {
    state.set(m, 1);
    for (const d of g.get(m) ?? []) {
      if (!g.has(d)) continue;
      if (state.get(d) === 1) cycles.push([...path.slice(path.indexOf(d)), d].join(' -> '));
      else if (!state.has(d)) visit(d, [...path, d]);
    }
    state.set(m, 2);
  };
  for (const m of g.keys()) if (!state.has(m)) visit(m, [m]);
  assert.deepEqual(cycles, []);
});
