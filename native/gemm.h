// Single-precision matrix multiply with fused epilogues, one kernel set per instruction set,
// chosen at load: AVX-512 (F/BW/VL), AVX2 + FMA, and portable C++.
#pragma once
#include <cstdint>

namespace attn {

// avx512bf16: AVX-512 plus the BF16 dot product (vdpbf16ps), used by bfloat16-precision matmuls.
enum class Isa { portable = 0, avx2 = 1, avx512 = 2, avx512bf16 = 3 };

/** The best kernel set this processor runs, capped by `cap`. */
Isa detect_isa(Isa cap);
const char* isa_name(Isa isa);
/** Which kernel set the matmuls use (default: the best the processor has). */
void set_isa(Isa isa);
Isa current_isa();
bool cpu_has_avx512bf16();

enum Act { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2 };

/**
 * out[b, m, n] = act(sum_k A[b, m, k] B[b, k, n] + bias[n]), or with accumulate
 * out[b, m, n] += sum_k A B + bias[n] (accumulate with an activation is the caller's to split).
 * A[b,m,k] at a[b*a_batch + (trans_a ? k*lda + m : m*lda + k)], B likewise with trans_b; B holds
 * bfloat16 (the top halves of float32s) when b_bf16. out is contiguous (batch, M, N).
 */
struct GemmArgs {
  const float* a;
  int64_t a_batch, lda;
  bool trans_a;
  const void* b;
  int64_t b_batch, ldb;
  bool trans_b, b_bf16;
  float* out;
  int batch, M, N, K;
  const float* bias;
  int act;
  bool accumulate;
  /** Multiply A and B rounded to bfloat16 (round to nearest even), accumulating in float32: the
   *  BF16 dot instructions where the kernel set has them, exact float32 emulation elsewhere. */
  bool bf16_compute = false;
};

void gemm(const GemmArgs& g, int threads);
/** The kernel set's float32 FMA peak in GFLOP/s on `threads` threads: independent FMA chains on
 *  registers only (no memory traffic) for about `seconds`. The machine's limit for the benchmarks. */
double fma_peak_gflops(double seconds, int threads);
/** x[i] = act(x[i]) in place with the matmul epilogue's own code, so that a separate activation
 *  is bitwise the fused one. */
void apply_activation(float* x, int64_t n, int act, int threads);
/** gemm of one batch item on the calling thread only (for kernels that run inside the pool). */
void gemm_serial(const GemmArgs& g);

}  // namespace attn
