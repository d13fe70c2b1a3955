// The arithmetic precision of matrix products, as torch.set_float32_matmul_precision and autocast
// choose it: 'bfloat16' multiplies float32 operands rounded to bfloat16 (round to nearest even)
// and accumulates in float32 — mixed-precision training keeps float32 master weights, optimizer
// state and every other op. Read when an op runs, so a backward pass inside the scope uses it too.
export type MatmulPrecision = 'float32' | 'bfloat16';

let current: MatmulPrecision = 'float32';

export function matmulPrecision(): MatmulPrecision {
  return current;
}

/** Sets the precision for the matmuls that follow; returns the previous one. */
export function setMatmulPrecision(p: MatmulPrecision): MatmulPrecision {
  if (p !== 'float32' && p !== 'bfloat16') throw new RangeError(`setMatmulPrecision: '${String(p)}' is not one of float32, bfloat16`);
  const prev = current;
  current = p;
  return prev;
}

/** Runs fn with the given matmul precision, restoring the previous one afterwards. */
export function withMatmulPrecision<T>(p: MatmulPrecision, fn: () => T): T {
  const prev = setMatmulPrecision(p);
  try {
    return fn();
  } finally {
    current = prev;
  }
}
