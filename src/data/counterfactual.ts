// Counterfactual word swaps: a two-way table of word pairs (data/bias/gender-pairs.tsv), a
// sentence with its listed words swapped, and counterfactual data augmentation of training
// examples (the classification task's cda_pairs).

/** A two-way swap table from "a<TAB>b" lines ('#' comments); the first pair naming a word wins. */
export function parseWordPairs(text: string, what = 'word pairs'): Map<string, string> {
  const map = new Map<string, string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const parts = line.split('\t');
    if (parts.length !== 2 || parts.some((p) => p.trim() === '' || /\s/.test(p.trim()))) throw new Error(`${what}, line ${i + 1}: expected "word<TAB>word", got ${JSON.stringify(raw)}`);
    const [a, b] = parts.map((p) => p.trim().toLowerCase()) as [string, string];
    if (!map.has(a)) map.set(a, b);
    if (!map.has(b)) map.set(b, a);
  });
  if (map.size === 0) throw new Error(`${what}: no pairs`);
  return map;
}

/** The sentence with every whole (space-separated, case-insensitive) listed word swapped; null when none is. */
export function swapWords(sentence: string, pairs: ReadonlyMap<string, string>): string | null {
  let changed = false;
  const out = sentence.split(' ').map((w) => {
    const s = pairs.get(w.toLowerCase());
    if (s === undefined) return w;
    changed = true;
    return w === w.toLowerCase() ? s : w[0] === w[0]!.toUpperCase() ? s[0]!.toUpperCase() + s.slice(1) : s;
  });
  return changed ? out.join(' ') : null;
}

/** Counterfactual data augmentation: the examples plus a swapped copy of each that has a listed word. */
export function augmentCounterfactual<E extends { sentence: string }>(examples: readonly E[], pairs: ReadonlyMap<string, string>): E[] {
  const out: E[] = [...examples];
  for (const e of examples) {
    const s = swapWords(e.sentence, pairs);
    if (s !== null) out.push({ ...e, sentence: s });
  }
  return out;
}

/**
 * Counterfactual augmentation of running text (a language model's training text, one sentence a
 * line): the swapped copy of every line holding a listed word, in the order of the text. Lines
 * without one are not repeated, as augmentCounterfactual leaves such examples single.
 */
export function counterfactualLines(text: string, pairs: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const s = swapWords(line, pairs);
    if (s !== null) out.push(s);
  }
  return out;
}
