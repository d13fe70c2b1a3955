// Element types. Storage is always one of these typed arrays. float16 and bfloat16 are storage
// types for weights (a Uint16Array of IEEE binary16 bits, or of the top halves of float32s;
// see half.ts): the backends that support one (webgpu: float16, cpu: bfloat16) widen it to
// float32 for arithmetic, and only the ops that read weights accept it (linear, matmul as the
// right operand, embedding, to, and views).
export type DType = 'float32' | 'float64' | 'int32' | 'float16' | 'bfloat16';
export type TypedArray = Float32Array | Float64Array | Int32Array | Uint16Array;

export const DTYPES: readonly DType[] = ['float32', 'float64', 'int32', 'float16', 'bfloat16'];

export function bytesPerElement(dtype: DType): number {
  return dtype === 'float64' ? 8 : dtype === 'float16' || dtype === 'bfloat16' ? 2 : 4;
}

/** float16 and bfloat16: stored as 16-bit patterns, widened to float32 by the ops that read them. */
export function isHalf(dtype: DType): boolean {
  return dtype === 'float16' || dtype === 'bfloat16';
}

export function newArray(dtype: DType, n: number): TypedArray {
  switch (dtype) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'int32': return new Int32Array(n);
    case 'float16':
    case 'bfloat16': return new Uint16Array(n);
  }
}

export function isFloat(dtype: DType): boolean {
  return dtype !== 'int32';
}
