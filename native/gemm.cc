// GotoBLAS-style GEMM: B panels (KC x NC) and A blocks (MC x KC) are packed into strips the
// register-tiled microkernel streams through; the bias and activation are applied to each output
// tile after its last K block, while it is still in cache. Each instruction set's kernels are
// compiled with their own target attributes (never for the build machine alone) and chosen at
// load. M == 1 (decoding) takes a streaming matrix-vector path instead.
#include "gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "pool.h"

namespace attn {
namespace {

constexpr int KC = 256;
constexpr int NC = 2048;
constexpr int MC_FACTOR = 12;  // MC = MC_FACTOR * MR rows of A per packed block

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/** float32 -> bfloat16 bits, rounded to nearest even (NaNs stay NaN). */
inline uint32_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/** f rounded to the nearest bfloat16, as a float32. */
inline float round_bf16(float f) {
  const uint32_t u = bf16_bits(f) << 16;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

inline float gelu_scalar(float x) {
  const double xd = x;
  const double u = 0.7978845608028654 * (xd + 0.044715 * xd * xd * xd);
  return float(xd / (1.0 + std::exp(-2.0 * u)));
}

inline float act_scalar(float v, int act) {
  if (act == ACT_RELU) return v > 0 ? v : 0;
  if (act == ACT_GELU) return gelu_scalar(v);
  return v;
}

// ---------------------------------------------------------------- packing (any processor)

/** A rows [m0, m0+mc) x cols [k0, k0+kc) into strips of MR rows: strip s holds, per k, MR values
 *  (rounded to bfloat16 when Round: the exact emulation of a bfloat16 matmul). */
template <bool Round>
void pack_a(const GemmArgs& g, const float* a, int m0, int mc, int k0, int kc, int MR, float* dst) {
  auto cv = [](float x) { return Round ? round_bf16(x) : x; };
  for (int s = 0; s < mc; s += MR) {
    const int rows = std::min(MR, mc - s);
    float* d = dst + int64_t(s) * kc;
    if (!g.trans_a) {
      for (int r = 0; r < rows; r++) {
        const float* row = a + int64_t(m0 + s + r) * g.lda + k0;
        for (int k = 0; k < kc; k++) d[k * MR + r] = cv(row[k]);
      }
    } else {
      for (int k = 0; k < kc; k++) {
        const float* col = a + int64_t(k0 + k) * g.lda + m0 + s;
        for (int r = 0; r < rows; r++) d[k * MR + r] = cv(col[r]);
      }
    }
    if (rows < MR)
      for (int k = 0; k < kc; k++)
        for (int r = rows; r < MR; r++) d[k * MR + r] = 0.f;
  }
}

/** B rows [k0, k0+kc) x cols [n0, n0+nc) into strips of NR columns: strip s holds, per k, NR values. */
template <bool Round>
void pack_b(const GemmArgs& g, const void* b, int k0, int kc, int n0, int nc, int NR, float* dst) {
  auto cv = [](float x) { return Round ? round_bf16(x) : x; };
  for (int s = 0; s < nc; s += NR) {
    const int cols = std::min(NR, nc - s);
    float* d = dst + int64_t(s) * kc;
    for (int k = 0; k < kc; k++) {
      float* dk = d + k * NR;
      if (!g.trans_b) {
        const int64_t base = int64_t(k0 + k) * g.ldb + n0 + s;
        if (g.b_bf16) {
          const uint16_t* row = static_cast<const uint16_t*>(b) + base;
          for (int j = 0; j < cols; j++) dk[j] = bf16_to_f32(row[j]);
        } else if (Round) {
          const float* row = static_cast<const float*>(b) + base;
          for (int j = 0; j < cols; j++) dk[j] = cv(row[j]);
        } else {
          std::memcpy(dk, static_cast<const float*>(b) + base, sizeof(float) * cols);
        }
      } else {
        for (int j = 0; j < cols; j++) {
          const int64_t i = int64_t(n0 + s + j) * g.ldb + k0 + k;
          dk[j] = g.b_bf16 ? bf16_to_f32(static_cast<const uint16_t*>(b)[i]) : cv(static_cast<const float*>(b)[i]);
        }
      }
      for (int j = cols; j < NR; j++) dk[j] = 0.f;
    }
  }
}

// Pairs of bfloat16 for the dot-product kernel (only the avx512-bf16 set packs this way, so these
// are compiled for it): a word holds k = 2p in its low half and 2p + 1 in its high half.

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))

/** d[p * stride] = pair p of x[0, kc) (x contiguous; a missing x[kc] is 0). */
AVX512BF16 void pairs_strided(const float* x, int kc, uint32_t* d, int stride) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(stride));
  int k = 0;
  for (; k + 32 <= kc; k += 32) {
    const __m512i w = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
    _mm512_i32scatter_epi32(d + int64_t(k / 2) * stride, idx, w, 4);
  }
  if (k < kc) {
    const int left = kc - k;
    const __mmask16 m0 = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    const __mmask16 m1 = left <= 16 ? __mmask16(0) : __mmask16((1u << (left - 16)) - 1);
    const __m512i w = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + k + 16), _mm512_maskz_loadu_ps(m0, x + k));
    const int pairs = (left + 1) / 2;
    _mm512_mask_i32scatter_epi32(d + int64_t(k / 2) * stride, __mmask16((1u << pairs) - 1), idx, w, 4);
  }
}

alignas(64) const uint16_t kInterleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

/** d[j] = (r0[j], r1[j]) for j < n (r1 null: a zero high half). */
AVX512BF16 void pairs_of_rows(const float* r0, const float* r1, int n, uint32_t* d) {
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    const __m512 lo = _mm512_maskz_loadu_ps(m, r0 + j);
    const __m512 hi = r1 ? _mm512_maskz_loadu_ps(m, r1 + j) : _mm512_setzero_ps();
    // cvtne2ps gives [lo0..lo15, hi0..hi15] as 16-bit lanes; interleave them into words.
    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    _mm512_mask_storeu_epi32(d + j, m, _mm512_permutexvar_epi16(_mm512_loadu_si512(kInterleave), both));
  }
}

/** A strips of MR rows hold, per k pair p, MR words. */
void pack_a_pairs(const GemmArgs& g, const float* a, int m0, int mc, int k0, int kc, int MR, uint32_t* dst) {
  const int kp = (kc + 1) / 2;
  for (int s = 0; s < mc; s += MR) {
    const int rows = std::min(MR, mc - s);
    uint32_t* d = dst + int64_t(s) * kp;
    if (!g.trans_a) {
      for (int r = 0; r < rows; r++) pairs_strided(a + int64_t(m0 + s + r) * g.lda + k0, kc, d + r, MR);
    } else {
      for (int p = 0; p < kp; p++) {
        const float* c0 = a + int64_t(k0 + 2 * p) * g.lda + m0 + s;
        pairs_of_rows(c0, 2 * p + 1 < kc ? c0 + g.lda : nullptr, rows, d + p * MR);
      }
    }
    for (int p = 0; p < kp; p++)
      for (int r = rows; r < MR; r++) d[p * MR + r] = 0u;
  }
}

/** B strips of NR columns hold, per k pair p, NR words. */
void pack_b_pairs(const GemmArgs& g, const void* b, int k0, int kc, int n0, int nc, int NR, uint32_t* dst) {
  const int kp = (kc + 1) / 2;
  for (int s = 0; s < nc; s += NR) {
    const int cols = std::min(NR, nc - s);
    uint32_t* d = dst + int64_t(s) * kp;
    if (g.b_bf16) {
      const uint16_t* bh = static_cast<const uint16_t*>(b);
      for (int p = 0; p < kp; p++)
        for (int j = 0; j < NR; j++) {
          const int64_t k = k0 + 2 * p, n = n0 + s + j;
          auto at = [&](int64_t kk) { return uint32_t(bh[g.trans_b ? n * g.ldb + kk : kk * g.ldb + n]); };
          d[p * NR + j] = j >= cols ? 0u : at(k) | (2 * p + 1 < kc ? at(k + 1) << 16 : 0u);
        }
      continue;
    }
    const float* bf = static_cast<const float*>(b);
    if (!g.trans_b) {
      for (int p = 0; p < kp; p++) {
        const float* r0 = bf + int64_t(k0 + 2 * p) * g.ldb + n0 + s;
        pairs_of_rows(r0, 2 * p + 1 < kc ? r0 + g.ldb : nullptr, cols, d + p * NR);
      }
    } else {
      for (int j = 0; j < cols; j++) pairs_strided(bf + int64_t(n0 + s + j) * g.ldb + k0, kc, d + j, NR);
    }
    if (cols < NR)
      for (int p = 0; p < kp; p++)
        for (int j = cols; j < NR; j++) d[p * NR + j] = 0u;
  }
}

// ---------------------------------------------------------------- kernel sets

/** C[MR x NR] (row stride ldc) = (load_c ? C : 0) + packed A strip (kc x MR) . packed B strip (kc x NR). */
using MicroKernel = void (*)(int kc, const float* pa, const float* pb, float* c, int64_t ldc, bool load_c);
/** In place on `rows` rows of `cols` floats: x = act(x + bias[j]) (bias may be null). */
using Epilogue = void (*)(float* c, int64_t ldc, int rows, int cols, const float* bias, int act);
/** out[j] for j in [n0, n1) = sum_k a[k] B(k, j) (no bias or activation). */
using Gemv = void (*)(const GemmArgs& g, const float* a, const void* b, float* out, int n0, int n1);

/** Up to 20 rows of A against a "trans_b" B (row n of B at n * ldb: a linear layer's weight):
 *  out[m * N + j] for j in [n0, n1), m < rows; each row of B is read once for all rows of A. */
using GemvRows = void (*)(const GemmArgs& g, const float* a, int rows, const void* b, float* out, int n0, int n1);

/** Like MicroKernel over kp pairs of bfloat16 (pack_a_pairs / pack_b_pairs strips). */
using MicroKernelBf16 = void (*)(int kp, const uint32_t* pa, const uint32_t* pb, float* c, int64_t ldc, bool load_c);

/** Packers that transpose (row-major A, column-major "trans_b" B) with vector shuffles; float32
 *  packing only (null: the scalar pack_a / pack_b). */
using PackA = void (*)(const GemmArgs& g, const float* a, int m0, int mc, int k0, int kc, int MR, float* dst);
using PackB = void (*)(const GemmArgs& g, const void* b, int k0, int kc, int n0, int nc, int NR, float* dst);

struct KernelSet {
  int MR, NR;
  MicroKernel micro;
  /** null: bfloat16 precision is emulated by rounding while packing for `micro`. */
  MicroKernelBf16 micro_bf16;
  Epilogue epilogue;
  Gemv gemv;
  PackA pack_a_rows;  // for !trans_a
  PackB pack_b_cols;  // for trans_b
  GemvRows gemv_rows; // null: small M packs like any gemm
};

// ---- portable

void micro_portable(int kc, const float* pa, const float* pb, float* c, int64_t ldc, bool load_c) {
  float acc[4][8];
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < 8; j++) acc[r][j] = load_c ? c[r * ldc + j] : 0.f;
  for (int k = 0; k < kc; k++) {
    for (int r = 0; r < 4; r++)
      for (int j = 0; j < 8; j++) acc[r][j] += pa[r] * pb[j];
    pa += 4;
    pb += 8;
  }
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < 8; j++) c[r * ldc + j] = acc[r][j];
}

void epilogue_portable(float* c, int64_t ldc, int rows, int cols, const float* bias, int act) {
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < cols; j++) c[r * ldc + j] = act_scalar(c[r * ldc + j] + (bias ? bias[j] : 0.f), act);
}

void gemv_portable(const GemmArgs& g, const float* a, const void* b, float* out, int n0, int n1) {
  const float* bf = static_cast<const float*>(b);
  const uint16_t* bh = static_cast<const uint16_t*>(b);
  for (int n = n0; n < n1; n++) out[n] = 0.f;
  if (!g.trans_b) {
    for (int k = 0; k < g.K; k++) {
      const float ak = a[k];
      const int64_t row = int64_t(k) * g.ldb;
      if (g.b_bf16)
        for (int n = n0; n < n1; n++) out[n] += ak * bf16_to_f32(bh[row + n]);
      else
        for (int n = n0; n < n1; n++) out[n] += ak * bf[row + n];
    }
  } else {
    for (int n = n0; n < n1; n++) {
      const int64_t row = int64_t(n) * g.ldb;
      float s = 0.f;
      if (g.b_bf16)
        for (int k = 0; k < g.K; k++) s += a[k] * bf16_to_f32(bh[row + k]);
      else
        for (int k = 0; k < g.K; k++) s += a[k] * bf[row + k];
      out[n] = s;
    }
  }
}

// ---- AVX2 + FMA: 6 x 16 tiles (12 accumulators)

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 void micro_avx2(int kc, const float* pa, const float* pb, float* c, int64_t ldc, bool load_c) {
  __m256 c0[6], c1[6];
#pragma GCC unroll 6
  for (int r = 0; r < 6; r++) {
    c0[r] = load_c ? _mm256_loadu_ps(c + r * ldc) : _mm256_setzero_ps();
    c1[r] = load_c ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_setzero_ps();
  }
  for (int k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++) {
      const __m256 av = _mm256_broadcast_ss(pa + r);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
    pa += 6;
    pb += 16;
  }
#pragma GCC unroll 6
  for (int r = 0; r < 6; r++) {
    _mm256_storeu_ps(c + r * ldc, c0[r]);
    _mm256_storeu_ps(c + r * ldc + 8, c1[r]);
  }
}

/** e^x for x in float range (Cephes' expf polynomial after reduction by ln 2). */
AVX2 inline __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

AVX2 inline __m256 act_avx2(__m256 x, int act) {
  if (act == ACT_RELU) return _mm256_max_ps(x, _mm256_setzero_ps());
  if (act == ACT_GELU) {
    // x / (1 + e^(-2u)), u = sqrt(2/pi)(x + 0.044715 x^3): gelu's tanh form without cancellation.
    const __m256 x2 = _mm256_mul_ps(x, x);
    const __m256 t = _mm256_mul_ps(x, _mm256_fmadd_ps(x2, _mm256_set1_ps(-2.f * 0.7978845608028654f * 0.044715f), _mm256_set1_ps(-2.f * 0.7978845608028654f)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.f), exp_avx2(t)));
  }
  return x;
}

AVX2 void epilogue_avx2(float* c, int64_t ldc, int rows, int cols, const float* bias, int act) {
  for (int r = 0; r < rows; r++) {
    float* row = c + r * ldc;
    int j = 0;
    for (; j + 8 <= cols; j += 8) {
      __m256 x = _mm256_loadu_ps(row + j);
      if (bias) x = _mm256_add_ps(x, _mm256_loadu_ps(bias + j));
      _mm256_storeu_ps(row + j, act_avx2(x, act));
    }
    for (; j < cols; j++) row[j] = act_scalar(row[j] + (bias ? bias[j] : 0.f), act);
  }
}

AVX2 inline __m256 load8_avx2(const void* b, int64_t i, bool bf16) {
  if (!bf16) return _mm256_loadu_ps(static_cast<const float*>(b) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(b) + i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AVX2 inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

AVX2 void gemv_avx2(const GemmArgs& g, const float* a, const void* b, float* out, int n0, int n1) {
  const bool h = g.b_bf16;
  if (!g.trans_b) {
    int n = n0;
    for (; n + 32 <= n1; n += 32) {
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (int k = 0; k < g.K; k++) {
        const __m256 ak = _mm256_broadcast_ss(a + k);
        const int64_t i = int64_t(k) * g.ldb + n;
        s0 = _mm256_fmadd_ps(ak, load8_avx2(b, i, h), s0);
        s1 = _mm256_fmadd_ps(ak, load8_avx2(b, i + 8, h), s1);
        s2 = _mm256_fmadd_ps(ak, load8_avx2(b, i + 16, h), s2);
        s3 = _mm256_fmadd_ps(ak, load8_avx2(b, i + 24, h), s3);
      }
      _mm256_storeu_ps(out + n, s0);
      _mm256_storeu_ps(out + n + 8, s1);
      _mm256_storeu_ps(out + n + 16, s2);
      _mm256_storeu_ps(out + n + 24, s3);
    }
    if (n < n1) gemv_portable(g, a, b, out, n, n1);
    return;
  }
  for (int n = n0; n < n1; n++) {
    const int64_t row = int64_t(n) * g.ldb;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int k = 0;
    for (; k + 16 <= g.K; k += 16) {
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), load8_avx2(b, row + k, h), s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), load8_avx2(b, row + k + 8, h), s1);
    }
    float s = hsum_avx2(_mm256_add_ps(s0, s1));
    for (; k < g.K; k++) s += a[k] * (h ? bf16_to_f32(static_cast<const uint16_t*>(b)[row + k]) : static_cast<const float*>(b)[row + k]);
    out[n] = s;
  }
}

// Transposing packers. A weight read as B^T (trans_b, every linear layer's forward) and a
// row-major A are packed k-major, a transpose: 8 x 8 (and 4 x 4) blocks through registers cost a
// fraction of a scalar gather, which matters when few rows share each packed panel (prefill).

/** Rows r0..r7 (8 floats each) -> columns: out[k] = (r0[k], ..., r7[k]). */
AVX2 inline void transpose8_avx2(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/** dst[k * ld + i] = rows[i][k] for i < n (n <= 8 rows at src + i * stride), k < kc. */
AVX2 inline void transpose_rows_avx2(const float* src, int64_t stride, int n, int kc, float* dst, int ld) {
  int k = 0;
  if (n == 8) {
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * stride + k);
      transpose8_avx2(r);
      for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (k + i) * ld, r[i]);
    }
  } else if (n == 4) {
    for (; k + 4 <= kc; k += 4) {
      __m128 r0 = _mm_loadu_ps(src + k), r1 = _mm_loadu_ps(src + stride + k);
      __m128 r2 = _mm_loadu_ps(src + 2 * stride + k), r3 = _mm_loadu_ps(src + 3 * stride + k);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(dst + k * ld, r0);
      _mm_storeu_ps(dst + (k + 1) * ld, r1);
      _mm_storeu_ps(dst + (k + 2) * ld, r2);
      _mm_storeu_ps(dst + (k + 3) * ld, r3);
    }
  }
  for (; k < kc; k++)
    for (int i = 0; i < n; i++) dst[k * ld + i] = src[i * stride + k];
}

/** pack_a<false> for row-major A. */
AVX2 void pack_a_rows_avx2(const GemmArgs& g, const float* a, int m0, int mc, int k0, int kc, int MR, float* dst) {
  for (int s = 0; s < mc; s += MR) {
    const int rows = std::min(MR, mc - s);
    float* d = dst + int64_t(s) * kc;
    const float* src = a + int64_t(m0 + s) * g.lda + k0;
    int r = 0;
    for (; r + 8 <= rows; r += 8) transpose_rows_avx2(src + r * g.lda, g.lda, 8, kc, d + r, MR);
    for (; r + 4 <= rows; r += 4) transpose_rows_avx2(src + r * g.lda, g.lda, 4, kc, d + r, MR);
    for (; r < rows; r++) transpose_rows_avx2(src + r * g.lda, g.lda, 1, kc, d + r, MR);
    if (rows < MR)
      for (int k = 0; k < kc; k++)
        for (int q = rows; q < MR; q++) d[k * MR + q] = 0.f;
  }
}

/** pack_b<false> for trans_b float32 B (B(k, j) = b[j * ldb + k]). */
AVX2 void pack_b_cols_avx2(const GemmArgs& g, const void* b, int k0, int kc, int n0, int nc, int NR, float* dst) {
  const float* bf = static_cast<const float*>(b);
  for (int s = 0; s < nc; s += NR) {
    const int cols = std::min(NR, nc - s);
    float* d = dst + int64_t(s) * kc;
    const float* src = bf + int64_t(n0 + s) * g.ldb + k0;
    int j = 0;
    for (; j + 8 <= cols; j += 8) transpose_rows_avx2(src + j * g.ldb, g.ldb, 8, kc, d + j, NR);
    for (; j + 4 <= cols; j += 4) transpose_rows_avx2(src + j * g.ldb, g.ldb, 4, kc, d + j, NR);
    for (; j < cols; j++) transpose_rows_avx2(src + j * g.ldb, g.ldb, 1, kc, d + j, NR);
    if (cols < NR)
      for (int k = 0; k < kc; k++)
        for (int q = cols; q < NR; q++) d[k * NR + q] = 0.f;
  }
}

// ---- AVX-512 (F, BW, VL): 12 x 32 tiles (24 accumulators)

/** RW rows of B (a linear layer's weight) against RX rows of A, one chain per pair: each weight
 *  vector loaded feeds RX FMAs and each A vector RW, so the tile is bound by its FMAs, not its loads.
 *  H: B holds bfloat16 (a template argument, so that the loop carries no branch). */
template <int RW, int RX, bool H>
AVX2 void gemv_tile_avx2(const GemmArgs& g, const float* a, const void* b, float* out, int n) {
  const int K8 = g.K / 8 * 8;
  __m256 s[RW][RX];
#pragma GCC unroll 4
  for (int i = 0; i < RW; i++)
#pragma GCC unroll 4
    for (int m = 0; m < RX; m++) s[i][m] = _mm256_setzero_ps();
  for (int k = 0; k < K8; k += 8) {
    __m256 w[RW];
#pragma GCC unroll 4
    for (int i = 0; i < RW; i++) w[i] = load8_avx2(b, int64_t(n + i) * g.ldb + k, H);
#pragma GCC unroll 4
    for (int m = 0; m < RX; m++) {
      const __m256 x = _mm256_loadu_ps(a + m * g.lda + k);
#pragma GCC unroll 4
      for (int i = 0; i < RW; i++) s[i][m] = _mm256_fmadd_ps(x, w[i], s[i][m]);
    }
  }
  for (int i = 0; i < RW; i++) {
    const int64_t row = int64_t(n + i) * g.ldb;
    for (int m = 0; m < RX; m++) {
      float t = hsum_avx2(s[i][m]);
      for (int k = K8; k < g.K; k++) t += a[m * g.lda + k] * (H ? bf16_to_f32(static_cast<const uint16_t*>(b)[row + k]) : static_cast<const float*>(b)[row + k]);
      out[int64_t(m) * g.N + n + i] = t;
    }
  }
}

template <int RW, bool H>
AVX2 void gemv_tiles_avx2(const GemmArgs& g, const float* a, int rows, const void* b, float* out, int n) {
  for (int m0 = 0; m0 < rows; m0 += 4) {
    const float* am = a + int64_t(m0) * g.lda;
    float* om = out + int64_t(m0) * g.N;
    switch (std::min(4, rows - m0)) {
      case 1: gemv_tile_avx2<RW, 1, H>(g, am, b, om, n); break;
      case 2: gemv_tile_avx2<RW, 2, H>(g, am, b, om, n); break;
      case 3: gemv_tile_avx2<RW, 3, H>(g, am, b, om, n); break;
      default: gemv_tile_avx2<RW, 4, H>(g, am, b, om, n);
    }
  }
}

template <bool H>
AVX2 void gemv_rows_avx2_t(const GemmArgs& g, const float* a, int rows, const void* b, float* out, int n0, int n1) {
  // Two weight rows at a time for every group of up to 4 rows of A while they are in L1.
  int n = n0;
  for (; n + 2 <= n1; n += 2) gemv_tiles_avx2<2, H>(g, a, rows, b, out, n);
  for (; n < n1; n++) gemv_tiles_avx2<1, H>(g, a, rows, b, out, n);
}

AVX2 void gemv_rows_avx2(const GemmArgs& g, const float* a, int rows, const void* b, float* out, int n0, int n1) {
  if (g.b_bf16) gemv_rows_avx2_t<true>(g, a, rows, b, out, n0, n1);
  else gemv_rows_avx2_t<false>(g, a, rows, b, out, n0, n1);
}

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

AVX512 void micro_avx512(int kc, const float* pa, const float* pb, float* c, int64_t ldc, bool load_c) {
  __m512 c0[12], c1[12];
#pragma GCC unroll 12
  for (int r = 0; r < 12; r++) {
    c0[r] = load_c ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
    c1[r] = load_c ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int k = 0; k < kc; k++) {
    const __m512 b0 = _mm512_load_ps(pb), b1 = _mm512_load_ps(pb + 16);
#pragma GCC unroll 12
    for (int r = 0; r < 12; r++) {
      const __m512 av = _mm512_set1_ps(pa[r]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
    pa += 12;
    pb += 32;
  }
#pragma GCC unroll 12
  for (int r = 0; r < 12; r++) {
    _mm512_storeu_ps(c + r * ldc, c0[r]);
    _mm512_storeu_ps(c + r * ldc + 16, c1[r]);
  }
}

AVX512 inline __m512 exp_avx512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

AVX512 inline __m512 act_avx512(__m512 x, int act) {
  if (act == ACT_RELU) return _mm512_max_ps(x, _mm512_setzero_ps());
  if (act == ACT_GELU) {
    const __m512 x2 = _mm512_mul_ps(x, x);
    const __m512 t = _mm512_mul_ps(x, _mm512_fmadd_ps(x2, _mm512_set1_ps(-2.f * 0.7978845608028654f * 0.044715f), _mm512_set1_ps(-2.f * 0.7978845608028654f)));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.f), exp_avx512(t)));
  }
  return x;
}

AVX512 void epilogue_avx512(float* c, int64_t ldc, int rows, int cols, const float* bias, int act) {
  for (int r = 0; r < rows; r++) {
    float* row = c + r * ldc;
    for (int j = 0; j < cols; j += 16) {
      const __mmask16 m = cols - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - j)) - 1);
      __m512 x = _mm512_maskz_loadu_ps(m, row + j);
      if (bias) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bias + j));
      _mm512_mask_storeu_ps(row + j, m, act_avx512(x, act));
    }
  }
}

AVX512 inline __m512 load16_avx512(const void* b, int64_t i, bool bf16, __mmask16 m) {
  if (!bf16) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(b) + i);
  const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(b) + i);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512 void gemv_avx512(const GemmArgs& g, const float* a, const void* b, float* out, int n0, int n1) {
  const bool h = g.b_bf16;
  const __mmask16 all = 0xffff;
  if (!g.trans_b) {
    int n = n0;
    for (; n + 64 <= n1; n += 64) {
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (int k = 0; k < g.K; k++) {
        const __m512 ak = _mm512_set1_ps(a[k]);
        const int64_t i = int64_t(k) * g.ldb + n;
        s0 = _mm512_fmadd_ps(ak, load16_avx512(b, i, h, all), s0);
        s1 = _mm512_fmadd_ps(ak, load16_avx512(b, i + 16, h, all), s1);
        s2 = _mm512_fmadd_ps(ak, load16_avx512(b, i + 32, h, all), s2);
        s3 = _mm512_fmadd_ps(ak, load16_avx512(b, i + 48, h, all), s3);
      }
      _mm512_storeu_ps(out + n, s0);
      _mm512_storeu_ps(out + n + 16, s1);
      _mm512_storeu_ps(out + n + 32, s2);
      _mm512_storeu_ps(out + n + 48, s3);
    }
    for (; n < n1; n += 16) {
      const __mmask16 m = n1 - n >= 16 ? all : __mmask16((1u << (n1 - n)) - 1);
      __m512 s = _mm512_setzero_ps();
      for (int k = 0; k < g.K; k++) s = _mm512_fmadd_ps(_mm512_set1_ps(a[k]), load16_avx512(b, int64_t(k) * g.ldb + n, h, m), s);
      _mm512_mask_storeu_ps(out + n, m, s);
    }
    return;
  }
  for (int n = n0; n < n1; n++) {
    const int64_t row = int64_t(n) * g.ldb;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int k = 0;
    for (; k + 32 <= g.K; k += 32) {
      s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), load16_avx512(b, row + k, h, all), s0);
      s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), load16_avx512(b, row + k + 16, h, all), s1);
    }
    for (; k < g.K; k += 16) {
      const __mmask16 m = g.K - k >= 16 ? all : __mmask16((1u << (g.K - k)) - 1);
      s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), load16_avx512(b, row + k, h, m), s0);
    }
    out[n] = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  }
}

/** RW rows of B (a linear layer's weight) against RX rows of A, one chain per pair: each weight
 *  vector loaded feeds RX FMAs and each A vector RW, so the tile is bound by its FMAs, not its loads
 *  (one weight row against 4 rows of A needed 5 loads per 4 FMAs). H: B holds bfloat16, a
 *  template argument so that the loop carries no branch. */
template <int RW, int RX, bool H>
AVX512 void gemv_tile_avx512(const GemmArgs& g, const float* a, const void* b, float* out, int n) {
  const int K16 = g.K / 16 * 16;
  const int64_t ldb = g.ldb;
  const int64_t lda = g.lda;
  __m512 s[RW][RX];
#pragma GCC unroll 4
  for (int i = 0; i < RW; i++)
#pragma GCC unroll 4
    for (int m = 0; m < RX; m++) s[i][m] = _mm512_setzero_ps();
  for (int k = 0; k < K16; k += 16) {
    __m512 w[RW];
#pragma GCC unroll 4
    for (int i = 0; i < RW; i++) {
      const int64_t at = int64_t(n + i) * ldb + k;
      w[i] = H ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(b) + at))), 16))
               : _mm512_loadu_ps(static_cast<const float*>(b) + at);
      // The next block's row at the same column: the whole next block (RW rows) arrives while
      // this one computes (the hardware prefetcher alone lags behind RW interleaved rows; 1 KiB
      // ahead per row was 8-13 % faster than none, a block ahead as fast or faster, in
      // tools/gemv-rows-microbench.cc on GPT-2's head at 8 rows; noisy)
      if (!H) _mm_prefetch(reinterpret_cast<const char*>(static_cast<const float*>(b) + at + RW * ldb), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int m = 0; m < RX; m++) {
      const __m512 x = _mm512_loadu_ps(a + m * lda + k);
#pragma GCC unroll 4
      for (int i = 0; i < RW; i++) s[i][m] = _mm512_fmadd_ps(x, w[i], s[i][m]);
    }
  }
  if (K16 < g.K) {
    const __mmask16 mk = __mmask16((1u << (g.K - K16)) - 1);
#pragma GCC unroll 4
    for (int i = 0; i < RW; i++) {
      const __m512 w = load16_avx512(b, int64_t(n + i) * ldb + K16, H, mk);
#pragma GCC unroll 4
      for (int m = 0; m < RX; m++) s[i][m] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, a + m * lda + K16), w, s[i][m]);
    }
  }
  for (int i = 0; i < RW; i++)
    for (int m = 0; m < RX; m++) out[int64_t(m) * g.N + n + i] = _mm512_reduce_add_ps(s[i][m]);
}

template <int RW, bool H>
AVX512 void gemv_tiles_avx512(const GemmArgs& g, const float* a, int rows, const void* b, float* out, int n) {
  for (int m0 = 0; m0 < rows; m0 += 4) {
    const float* am = a + int64_t(m0) * g.lda;
    float* om = out + int64_t(m0) * g.N;
    switch (std::min(4, rows - m0)) {
      case 1: gemv_tile_avx512<RW, 1, H>(g, am, b, om, n); break;
      case 2: gemv_tile_avx512<RW, 2, H>(g, am, b, om, n); break;
      case 3: gemv_tile_avx512<RW, 3, H>(g, am, b, om, n); break;
      default: gemv_tile_avx512<RW, 4, H>(g, am, b, om, n);
    }
  }
}

template <bool H>
AVX512 void gemv_rows_avx512_t(const GemmArgs& g, const float* a, int rows, const void* b, float* out, int n0, int n1) {
  // Four weight rows at a time (16 chains) for every group of up to 4 rows of A, so the 4 rows
  // stay in L1 while the second group reads them: the weight is streamed from memory once.
  int n = n0;
  for (; n + 4 <= n1; n += 4) gemv_tiles_avx512<4, H>(g, a, rows, b, out, n);
  for (; n < n1; n++) gemv_tiles_avx512<1, H>(g, a, rows, b, out, n);
}

AVX512 void gemv_rows_avx512(const GemmArgs& g, const float* a, int rows, const void* b, float* out, int n0, int n1) {
  if (g.b_bf16) gemv_rows_avx512_t<true>(g, a, rows, b, out, n0, n1);
  else gemv_rows_avx512_t<false>(g, a, rows, b, out, n0, n1);
}

// ---- AVX-512 BF16: the same 12 x 32 tiles, two k per vdpbf16ps

AVX512BF16 void micro_avx512bf16(int kp, const uint32_t* pa, const uint32_t* pb, float* c, int64_t ldc, bool load_c) {
  __m512 c0[12], c1[12];
#pragma GCC unroll 12
  for (int r = 0; r < 12; r++) {
    c0[r] = load_c ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
    c1[r] = load_c ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int p = 0; p < kp; p++) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(pb), b1 = (__m512bh)_mm512_load_si512(pb + 16);
#pragma GCC unroll 12
    for (int r = 0; r < 12; r++) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(pa[r]));
      c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
    }
    pa += 12;
    pb += 32;
  }
#pragma GCC unroll 12
  for (int r = 0; r < 12; r++) {
    _mm512_storeu_ps(c + r * ldc, c0[r]);
    _mm512_storeu_ps(c + r * ldc + 16, c1[r]);
  }
}

const KernelSet SETS[4] = {
    {4, 8, micro_portable, nullptr, epilogue_portable, gemv_portable, nullptr, nullptr, nullptr},
    {6, 16, micro_avx2, nullptr, epilogue_avx2, gemv_avx2, pack_a_rows_avx2, pack_b_cols_avx2, gemv_rows_avx2},
    {12, 32, micro_avx512, nullptr, epilogue_avx512, gemv_avx512, pack_a_rows_avx2, pack_b_cols_avx2, gemv_rows_avx512},
    {12, 32, micro_avx512, micro_avx512bf16, epilogue_avx512, gemv_avx512, pack_a_rows_avx2, pack_b_cols_avx2, gemv_rows_avx512},
};

Isa g_isa = Isa::portable;
bool g_isa_set = false;

// ---------------------------------------------------------------- drivers

/** Thread-local 64-byte-aligned scratch. */
float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n + 16) v.assign(n + 16, 0.f);
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~uintptr_t(63));
}

/** One batch item's rows [m0, m1) x cols [n0, n1), serially. */
void gemm_block(const KernelSet& ks, const GemmArgs& g, const float* a, const void* b, float* out, int m0, int m1, int n0, int n1) {
  thread_local std::vector<float> abuf, bbuf;
  const int MR = ks.MR, NR = ks.NR, MC = MC_FACTOR * MR;
  float* pa = scratch(abuf, size_t(MC) * KC);
  float* pb = scratch(bbuf, size_t(KC) * (NC + NR));
  alignas(64) float tmp[12 * 32];
  const int64_t ldc = g.N;
  const bool pairs = g.bf16_compute && ks.micro_bf16 != nullptr;
  if (g.K == 0) {
    for (int m = m0; m < m1; m++) {
      float* row = out + int64_t(m) * ldc;
      for (int n = n0; n < n1; n++) row[n] = g.accumulate ? row[n] + (g.bias ? g.bias[n] : 0.f) : act_scalar(g.bias ? g.bias[n] : 0.f, g.act);
    }
    return;
  }
  for (int jc = n0; jc < n1; jc += NC) {
    const int nc = std::min(NC, n1 - jc);
    for (int pc = 0; pc < g.K; pc += KC) {
      const int kc = std::min(KC, g.K - pc);
      const bool first = pc == 0, last = pc + kc >= g.K;
      // kk: the packed depth, in floats or in bfloat16 pairs.
      const int kk = pairs ? (kc + 1) / 2 : kc;
      if (pairs) pack_b_pairs(g, b, pc, kc, jc, nc, NR, reinterpret_cast<uint32_t*>(pb));
      else if (g.bf16_compute) pack_b<true>(g, b, pc, kc, jc, nc, NR, pb);
      else if (g.trans_b && !g.b_bf16 && ks.pack_b_cols) ks.pack_b_cols(g, b, pc, kc, jc, nc, NR, pb);
      else pack_b<false>(g, b, pc, kc, jc, nc, NR, pb);
      for (int ic = m0; ic < m1; ic += MC) {
        const int mc = std::min(MC, m1 - ic);
        if (pairs) pack_a_pairs(g, a, ic, mc, pc, kc, MR, reinterpret_cast<uint32_t*>(pa));
        else if (g.bf16_compute) pack_a<true>(g, a, ic, mc, pc, kc, MR, pa);
        else if (!g.trans_a && ks.pack_a_rows) ks.pack_a_rows(g, a, ic, mc, pc, kc, MR, pa);
        else pack_a<false>(g, a, ic, mc, pc, kc, MR, pa);
        for (int jr = 0; jr < nc; jr += NR) {
          const int cols = std::min(NR, nc - jr);
          for (int ir = 0; ir < mc; ir += MR) {
            const int rows = std::min(MR, mc - ir);
            float* c = out + int64_t(ic + ir) * ldc + jc + jr;
            const bool load_c = !first || g.accumulate;
            const float* sa = pa + int64_t(ir) * kk;
            const float* sb = pb + int64_t(jr) * kk;
            auto micro = [&](float* cc, int64_t ld) {
              if (pairs) ks.micro_bf16(kk, reinterpret_cast<const uint32_t*>(sa), reinterpret_cast<const uint32_t*>(sb), cc, ld, load_c);
              else ks.micro(kc, sa, sb, cc, ld, load_c);
            };
            if (rows == MR && cols == NR) {
              micro(c, ldc);
            } else {
              // A partial tile runs on a full one in tmp.
              if (load_c)
                for (int r = 0; r < rows; r++) std::memcpy(tmp + r * NR, c + r * ldc, sizeof(float) * cols);
              micro(tmp, NR);
              for (int r = 0; r < rows; r++) std::memcpy(c + r * ldc, tmp + r * NR, sizeof(float) * cols);
            }
            if (last && (g.bias || g.act != ACT_NONE)) ks.epilogue(c, ldc, rows, cols, g.bias ? g.bias + jc + jr : nullptr, g.accumulate ? ACT_NONE : g.act);
          }
        }
      }
    }
  }
}

void gemv_block(const KernelSet& ks, const GemmArgs& g, const float* a, const void* b, float* out, int n0, int n1) {
  if (!g.accumulate) {
    ks.gemv(g, a, b, out, n0, n1);
    if (g.bias || g.act != ACT_NONE) ks.epilogue(out + n0, 0, 1, n1 - n0, g.bias ? g.bias + n0 : nullptr, g.act);
    return;
  }
  thread_local std::vector<float> buf;
  float* t = scratch(buf, size_t(n1 - n0)) - n0;
  ks.gemv(g, a, b, t, n0, n1);
  for (int n = n0; n < n1; n++) out[n] += t[n] + (g.bias ? g.bias[n] : 0.f);
}

}  // namespace

// ---------------------------------------------------------------- dispatch

Isa detect_isa(Isa cap) {
  __builtin_cpu_init();
  Isa best = Isa::portable;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) best = Isa::avx512;
  if (best == Isa::avx512 && __builtin_cpu_supports("avx512bf16")) best = Isa::avx512bf16;
  return int(best) < int(cap) ? best : cap;
}

bool cpu_has_avx512bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512bf16: return "avx512-bf16";
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "portable";
  }
}

void set_isa(Isa isa) {
  g_isa = isa;
  g_isa_set = true;
}

Isa current_isa() {
  if (!g_isa_set) set_isa(detect_isa(Isa::avx512));
  return g_isa;
}

namespace {

// 24 independent accumulators (more than FMA latency × FMA ports), 2 FLOPs per lane per FMA.
AVX512 double fma_loop_avx512(int64_t iters) {
  __m512 acc[24];
  for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps(float(i));
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * 24 * 16 * 2;
}

AVX2 double fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(float(i));
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
  volatile float sink = hsum_avx2(s);
  (void)sink;
  return double(iters) * 12 * 8 * 2;
}

double fma_loop_portable(int64_t iters) {
  float acc[8][8];
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++) acc[i][j] = float(i + j);
  for (int64_t it = 0; it < iters; it++)
    for (int i = 0; i < 8; i++)
      for (int j = 0; j < 8; j++) acc[i][j] = acc[i][j] * 0.999999f + 1e-7f;
  volatile float sink = acc[3][5];
  (void)sink;
  return double(iters) * 64 * 2;
}

}  // namespace

double fma_peak_gflops(double seconds, int threads) {
  const Isa isa = current_isa();
  auto loop = isa >= Isa::avx512 ? fma_loop_avx512 : isa == Isa::avx2 ? fma_loop_avx2 : fma_loop_portable;
  // Calibrate one thread, then run every thread for about `seconds`.
  int64_t iters = 1 << 16;
  double dt = 0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    loop(iters);
    dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt > 0.02) break;
    iters *= 2;
  }
  iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / dt));
  std::vector<double> flops(size_t(std::max(1, threads)), 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  parallel(threads, [&](int tid, int) { flops[size_t(tid)] = loop(iters); });
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total = 0;
  for (double f : flops) total += f;
  return total / el / 1e9;
}

void apply_activation(float* x, int64_t n, int act, int threads) {
  const KernelSet& ks = SETS[int(current_isa())];
  const int nt = n < (1 << 16) ? 1 : threads;
  parallel(nt, [&](int tid, int k) {
    // Chunks of whole 64-element runs, so every thread's vector lanes line up the same way.
    const int64_t lo = n * tid / k / 64 * 64, hi = tid + 1 == k ? n : n * (tid + 1) / k / 64 * 64;
    for (int64_t i = lo; i < hi; i += 1 << 20) ks.epilogue(x + i, 0, 1, int(std::min<int64_t>(hi - i, 1 << 20)), nullptr, act);
  });
}

void gemm_serial(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  const KernelSet& ks = SETS[int(current_isa())];
  gemm_block(ks, g, g.a, g.b, g.out, 0, g.M, 0, g.N);
}

void gemm(const GemmArgs& g0, int threads) {
  if (g0.batch <= 0 || g0.M <= 0 || g0.N <= 0) return;
  GemmArgs g = g0;
  const KernelSet& ks = SETS[int(current_isa())];
  // A shared B over row-major A blocks laid end to end is one taller matmul.
  if (g.batch > 1 && g.b_batch == 0 && !g.trans_a && g.a_batch == int64_t(g.M) * g.lda) {
    g.M *= g.batch;
    g.batch = 1;
  }
  const double macs = double(g.batch) * g.M * g.N * std::max(g.K, 1);
  const int nt = macs < 32768 ? 1 : std::max(1, threads);
  const int64_t mn = int64_t(g.M) * g.N;
  // bfloat16 precision always packs (its rounding lives in the packing).
  const bool vec = g.M == 1 && !g.trans_a && !g.bf16_compute;
  // 2-20 rows against a linear layer's weight (batched decode, with a short joining prompt riding
  // along): each weight row is streamed once for all rows of A instead of packing the whole
  // weight per call. Up to about 20 rows that was as fast or faster for GPT-2's head, c_attn and
  // c_proj here (node /tmp-style loop of linear, medians of 21, noisy); at 24-32 it was mixed.
  const bool rowsVec = !vec && ks.gemv_rows && g.M <= 20 && g.batch == 1 && g.trans_b && !g.trans_a && !g.bf16_compute && !g.accumulate;
  if (rowsVec) {
    parallel(nt, [&](int tid, int n) {
      const int chunk = ((g.N + n - 1) / n + 63) / 64 * 64;
      const int n0 = std::min(g.N, tid * chunk), n1 = std::min(g.N, n0 + chunk);
      if (n0 >= n1) return;
      ks.gemv_rows(g, g.a, g.M, g.b, g.out, n0, n1);
      if (g.bias || g.act != ACT_NONE) ks.epilogue(g.out + n0, g.N, g.M, n1 - n0, g.bias ? g.bias + n0 : nullptr, g.act);
    });
    return;
  }
  parallel(nt, [&](int tid, int n) {
    int b0 = 0, b1 = g.batch, m0 = 0, m1 = g.M, n0 = 0, n1 = g.N;
    if (n > 1) {
      if (g.batch % n == 0 || g.batch >= 8 * n) {
        b0 = int(int64_t(g.batch) * tid / n);
        b1 = int(int64_t(g.batch) * (tid + 1) / n);
      } else if (vec || (g.N >= g.M && g.N >= ks.NR * n) || g.M < ks.MR * n) {
        const int step = vec ? 64 : ks.NR;
        const int chunk = ((g.N + n - 1) / n + step - 1) / step * step;
        n0 = std::min(g.N, tid * chunk);
        n1 = std::min(g.N, n0 + chunk);
      } else {
        const int chunk = ((g.M + n - 1) / n + ks.MR - 1) / ks.MR * ks.MR;
        m0 = std::min(g.M, tid * chunk);
        m1 = std::min(g.M, m0 + chunk);
      }
    }
    if (m0 >= m1 || n0 >= n1) return;
    const int esize = g.b_bf16 ? 2 : 4;
    for (int bi = b0; bi < b1; bi++) {
      const float* a = g.a + bi * g.a_batch;
      const void* b = static_cast<const char*>(g.b) + bi * g.b_batch * esize;
      float* out = g.out + bi * mn;
      if (vec) gemv_block(ks, g, a, b, out, n0, n1);
      else gemm_block(ks, g, a, b, out, m0, m1, n0, n1);
    }
  });
}

}  // namespace attn
