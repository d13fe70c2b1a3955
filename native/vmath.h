// Scalar math written so that loops over it vectorise (inlined into per-instruction-set bodies).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace attn {

#define INLINE inline __attribute__((always_inline))

constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

/** e^x, vectorisable (Cephes' expf polynomial after reduction by ln 2); e^-inf = 0. */
INLINE float vexp(float x) {
  const float xc = std::min(std::max(x, -87.3f), 88.7f);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float s;
  std::memcpy(&s, &bits, 4);
  return x == NEG_INF ? 0.f : p * s;
}

}  // namespace attn
