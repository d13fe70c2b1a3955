// The error buffer shared by the kernels and the executor: four u32 words (error code,
// offending value, limit, op id). A kernel that finds a bad index reports into it; the
// executor reads it back with the next read and throws, naming the op.

/** Error codes the kernels write into the error buffer (word 0); words 1..3: value, limit, op. */
export const ERROR_TEXT: Record<number, string> = {
  1: 'index out of range',
  2: 'target out of range',
};

/** Op ids (word 3 of the error buffer) and the names the executor reports them by. */
export const KERNEL_OP_NAMES = ['?', 'embedding', 'embeddingBackward', 'gather', 'scatterAdd', 'crossEntropy', 'crossEntropyBackward', 'quantEmbedding'];

/** The op id the executor turns back into the op's name. */
export function opId(name: string): number {
  const i = KERNEL_OP_NAMES.indexOf(name);
  return i < 0 ? 0 : i;
}

/** WGSL: report(code, value, limit, op) into the error buffer bound at `binding`; the first report wins. */
export function errorBinding(binding: number): string {
  return /* wgsl */ `
@group(0) @binding(${binding}) var<storage, read_write> err: array<atomic<u32>, 4>;
fn report(code: u32, value: i32, limit: u32, op: u32) {
  loop {
    let r = atomicCompareExchangeWeak(&err[0], 0u, code);
    if (r.exchanged) {
      atomicStore(&err[1], bitcast<u32>(value));
      atomicStore(&err[2], limit);
      atomicStore(&err[3], op);
      return;
    }
    // A weak exchange may fail spuriously: retry only while nothing is reported.
    if (r.old_value != 0u) { return; }
  }
}
`;
}
