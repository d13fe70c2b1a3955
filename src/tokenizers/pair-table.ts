// Shared by the BPE merge loops (bpe.ts, hf-bpe.ts): a (id, id) -> int hash table and a
// binary min-heap over a plain number array.

/**
 * Open-addressing hash table (id, id) -> non-negative int. A Map keyed by a*vocab+b would do,
 * but for a 50k vocabulary those keys exceed V8's small-integer range and every lookup hashes
 * a heap number; this keeps the merge loop on plain int32 arithmetic.
 */
export class PairTable {
  private readonly left: Int32Array;
  private readonly right: Int32Array;
  private readonly vals: Int32Array;
  private readonly mask: number;

  constructor(n: number) {
    let cap = 16;
    while (cap < n * 2) cap *= 2;
    this.left = new Int32Array(cap).fill(-1);
    this.right = new Int32Array(cap);
    this.vals = new Int32Array(cap);
    this.mask = cap - 1;
  }

  private slot(a: number, b: number): number {
    let i = (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca6b)) >>> 0;
    i = (i ^ (i >>> 15)) & this.mask;
    while (this.left[i] !== -1 && (this.left[i] !== a || this.right[i] !== b)) i = (i + 1) & this.mask;
    return i;
  }

  /** The value for (a, b), or -1. */
  get(a: number, b: number): number {
    const i = this.slot(a, b);
    return this.left[i] === -1 ? -1 : this.vals[i];
  }

  set(a: number, b: number, v: number): void {
    const i = this.slot(a, b);
    this.left[i] = a;
    this.right[i] = b;
    this.vals[i] = v;
  }
}

export function heapPush(h: number[], v: number): void {
  let i = h.length;
  h.push(v);
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p] <= v) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = v;
}

export function heapPop(h: number[]): number {
  const top = h[0];
  const last = h.pop()!;
  const n = h.length;
  if (n > 0) {
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h[c + 1] < h[c]) c++;
      if (h[c] >= last) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = last;
  }
  return top;
}

/**
 * Byte-pair merging of a long piece in O(n log n): symbols in a linked list, candidate pairs in
 * a min-heap keyed by rank · 2^32 + position (lowest rank first, then leftmost; exact while
 * rank < 2^21), stale entries skipped when popped. rank(a, b) is the merge rank of a pair, or a
 * negative or infinite number when the pair does not merge; mergeIds[rank] is the merged symbol.
 * sym is consumed.
 */
export function heapMerge(sym: number[], rank: (a: number, b: number) => number, mergeIds: Int32Array): number[] {
  const n = sym.length;
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const alive = new Uint8Array(n).fill(1);
  const heap: number[] = [];
  const push = (i: number) => {
    const j = next[i]!;
    if (j < 0) return;
    const r = rank(sym[i]!, sym[j]!);
    if (r >= 0 && r !== Infinity) heapPush(heap, r * 4294967296 + i);
  };
  for (let i = 0; i < n - 1; i++) push(i);
  while (heap.length > 0) {
    const top = heapPop(heap);
    const i = top % 4294967296;
    const r = (top - i) / 4294967296;
    const j = next[i]!;
    if (!alive[i] || j < 0 || rank(sym[i]!, sym[j]!) !== r) continue; // stale
    sym[i] = mergeIds[r]!;
    alive[j] = 0;
    next[i] = next[j]!;
    if (next[j]! >= 0) prev[next[j]!] = i;
    if (prev[i]! >= 0) push(prev[i]!);
    push(i);
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]!) out.push(sym[i]!);
  return out;
}
