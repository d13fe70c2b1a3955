// Reductions and element-wise maps over contiguous float32 arrays.
#pragma once
#include <cstdint>
#include <vector>

namespace attn {

/** out[o, i] = sum_j x[o, j, i] over a contiguous (outer, n, inner) array. */
void reduce_sum(const float* x, int64_t outer, int64_t n, int64_t inner, float* out, int threads);

/** out[i0,i1,i2,i3 at os] = x[... at xs] over a 4-D shape, strides in 32-bit elements. */
void copy_strided(const uint32_t* x, uint32_t* out, const int64_t shape[4], const int64_t xs[4], const int64_t os[4], int threads);

/**
 * out[o * inner + i] = a[o * a_outer + i * a_inner] op b[o * b_outer + i * b_inner] (inner strides
 * 0 or 1); op: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min (max/min propagate NaN, as WebAssembly's).
 * False for an unknown op.
 */
bool binary2d(int op, const float* a, int64_t a_inner, int64_t a_outer, const float* b, int64_t b_inner, int64_t b_outer,
              float* out, int64_t outer, int64_t inner, int threads);

enum UnaryCode { U_NEG = 0, U_SQUARE, U_ABS, U_RELU, U_SQRT, U_RECIP, U_RSQRT, U_EXP, U_LOG, U_TANH, U_SIGMOID, U_SILU, U_GELU };
/** out[i] = f(x[i]); false when op is not one of UnaryCode. */
bool unary(int op, const float* x, float* out, int64_t n, int threads);

}  // namespace attn
