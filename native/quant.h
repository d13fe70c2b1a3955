// Weight-only quantized linear layers: out = act(x · deq(W)ᵀ + bias) with W held as int8 per
// output row or int4 in groups of 32 (src/tensor/quantize.ts has the layouts). Weights are
// widened to float32 in registers (decode) or one panel of rows at a time (prefill); the whole
// matrix is never dequantized.
#pragma once
#include <cstdint>

namespace attn {

enum QuantFormat { QUANT_INT8 = 0, QUANT_INT4 = 1, QUANT_INT4Z = 2 };

struct QuantMatmulArgs {
  int format;
  /** int8: N·K signed bytes; int4/int4z: N·K/32 groups of 16 bytes (element j low nibble, j+16 high). */
  const uint8_t* data;
  /** int8: N; int4/int4z: N·K/32. */
  const float* scales;
  /** int4z: N·K/32 zero points; null otherwise (int4: 8). */
  const uint8_t* zeros;
  int64_t N, K;
  /** (M, K) and (M, N), contiguous. */
  const float* x;
  int64_t M;
  const float* bias;
  int act;
  float* out;
};

void quant_matmul(const QuantMatmulArgs& a, int threads);
/** int4/int4z with few rows of x (decode) on AVX-512 VNNI: x quantized to int8 in groups of 32
 *  per call, as llama.cpp does for its 4-bit types (faster, with the activations' rounding).
 *  Off by default; returns whether it is on (false where the processor lacks VNNI). */
bool set_quant_int8_activations(bool on);

}  // namespace attn
