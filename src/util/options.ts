// Names a user got slightly wrong: the nearest valid names, for "did you mean" messages.
// No imports, so every layer (and the browser build) can use it.

/** Levenshtein distance. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** snake_case, kebab-case and camelCase folded to one form. */
const fold = (s: string): string => s.replace(/[-_]/g, '').toLowerCase();

/** The valid names within edit distance 2 of `name`, or equal to it up to case and separators. */
export function nearestNames(name: string, valid: readonly string[]): string[] {
  const same = valid.filter((v) => fold(v) === fold(name));
  if (same.length) return same;
  return valid.filter((v) => editDistance(v, name.toLowerCase()) <= 2);
}

/**
 * Refuses option names a call does not take, naming the nearest valid one: an options object
 * with a misspelt key would otherwise be silently ignored ("unknown option top_k; did you mean topK?").
 */
export function checkOptions(what: string, given: object | undefined, valid: readonly string[]): void {
  if (!given) return;
  const bad = Object.keys(given).filter((k) => !valid.includes(k) && (given as Record<string, unknown>)[k] !== undefined);
  if (bad.length === 0) return;
  const say = (k: string): string => {
    const near = nearestNames(k, valid);
    return `unknown option ${k}${near.length ? `; did you mean ${near.join(' or ')}?` : ` (options: ${valid.join(', ')})`}`;
  };
  throw new Error(`${what}: ${bad.map(say).join('; ')}`);
}
