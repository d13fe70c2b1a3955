// Quantized linear layers (see quant.h). Two paths:
//  - few rows of x (decode, M <= 8): each weight row is read once and widened in registers, and
//    up to 4 rows of x are multiplied against it in the same pass;
//  - many rows (prefill): a panel of up to 128 weight rows is widened to float32 in a per-thread
//    buffer and multiplied by the float32 gemm, so prefill runs near the gemm's speed.
#include "quant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gemm.h"
#include "pool.h"

namespace attn {
namespace {

#define AVX2T __attribute__((target("avx2,fma")))
#define AVX512T __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

constexpr int MAX_ROWS = 4;  // rows of x per pass over a weight row
constexpr int64_t DIRECT_MAX_M = 8;

/** The weight row n as pointers into the packed arrays. */
struct WRow {
  const uint8_t* q;    // int8: K bytes; int4: K/2 bytes
  const float* s;      // int8: one scale; int4: K/32
  const uint8_t* z;    // int4z: K/32 zero points; else null
};

inline WRow row_of(const QuantMatmulArgs& a, int64_t n) {
  if (a.format == QUANT_INT8) return {a.data + n * a.K, a.scales + n, nullptr};
  const int64_t groups = a.K / 32;
  return {a.data + n * groups * 16, a.scales + n * groups, a.zeros ? a.zeros + n * groups : nullptr};
}

// ---- portable ----

/** sums[m] = Σ_k x[m, k] · w[k] for R rows of x (stride K). int8: unscaled; int4: scaled per group. */
void dot_portable(int format, const WRow& w, const float* x, const float* /*xsum*/, int64_t K, int R, float* sums) {
  for (int m = 0; m < R; m++) {
    const float* xm = x + m * K;
    float acc = 0;
    if (format == QUANT_INT8) {
      const int8_t* q = reinterpret_cast<const int8_t*>(w.q);
      for (int64_t k = 0; k < K; k++) acc += xm[k] * float(q[k]);
    } else {
      for (int64_t g = 0; g < K / 32; g++) {
        const int z = w.z ? w.z[g] : 8;
        float ga = 0;
        for (int j = 0; j < 16; j++) {
          const uint8_t b = w.q[g * 16 + j];
          ga += xm[g * 32 + j] * float((b & 15) - z) + xm[g * 32 + j + 16] * float((b >> 4) - z);
        }
        acc += w.s[g] * ga;
      }
    }
    sums[m] = acc;
  }
}

void dequant_portable(int format, const WRow& w, int64_t K, float* out) {
  if (format == QUANT_INT8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(w.q);
    const float s = w.s[0];
    for (int64_t k = 0; k < K; k++) out[k] = s * float(q[k]);
    return;
  }
  for (int64_t g = 0; g < K / 32; g++) {
    const int z = w.z ? w.z[g] : 8;
    const float s = w.s[g];
    for (int j = 0; j < 16; j++) {
      const uint8_t b = w.q[g * 16 + j];
      out[g * 32 + j] = s * float((b & 15) - z);
      out[g * 32 + j + 16] = s * float((b >> 4) - z);
    }
  }
}

// ---- AVX2 + FMA ----

AVX2T inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/** U independent chains per row of x, so that one row still keeps 4 FMAs in flight. */
template <int R>
AVX2T void dot_int8_avx2(const int8_t* q, const float* x, int64_t K, float* sums) {
  constexpr int U = R == 1 ? 4 : R == 2 ? 2 : 1;
  __m256 acc[R][U];
  for (int m = 0; m < R; m++)
    for (int u = 0; u < U; u++) acc[m][u] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 * U <= K; k += 8 * U) {
    for (int u = 0; u < U; u++) {
      const __m256 w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k + 8 * u))));
      for (int m = 0; m < R; m++) acc[m][u] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + m * K + k + 8 * u), acc[m][u]);
    }
  }
  for (int m = 0; m < R; m++) {
    __m256 t = acc[m][0];
    for (int u = 1; u < U; u++) t = _mm256_add_ps(t, acc[m][u]);
    float s = hsum256(t);
    for (int64_t kk = k; kk < K; kk++) s += x[m * K + kk] * float(q[kk]);
    sums[m] = s;
  }
}

/** The 32 levels (q - z) · scale of one int4 group as four vectors of 8 (elements 0-7, 8-15, 16-23, 24-31). */
AVX2T inline void group4_avx2(const uint8_t* q, float s, int z, __m256 w[4]) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i m4 = _mm_set1_epi8(15);
  const __m128i lo = _mm_and_si128(b, m4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m4);
  const __m256i zv = _mm256_set1_epi32(z);
  const __m256 sv = _mm256_set1_ps(s);
  w[0] = _mm256_mul_ps(sv, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(lo), zv)));
  w[1] = _mm256_mul_ps(sv, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), zv)));
  w[2] = _mm256_mul_ps(sv, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(hi), zv)));
  w[3] = _mm256_mul_ps(sv, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), zv)));
}

/** The 32 raw levels q (0..15) of one int4 group as four vectors of 8 (elements 0-7, 8-15, 16-23, 24-31). */
AVX2T inline void levels4_avx2(const uint8_t* q, __m256 w[4]) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i m4 = _mm_set1_epi8(15);
  const __m128i lo = _mm_and_si128(b, m4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m4);
  w[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  w[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
  w[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  w[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

/** Σ_g s_g z_g xsum_g over the G groups of a row: the zero points' share of its dot product. */
AVX2T inline float zero_corr_avx2(const WRow& wr, const float* xsum, int64_t G) {
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= G; g += 8) {
    const __m256 z = wr.z ? _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(wr.z + g)))) : _mm256_set1_ps(8.0f);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(wr.s + g), z), _mm256_loadu_ps(xsum + g), acc);
  }
  float t = hsum256(acc);
  for (; g < G; g++) t += wr.s[g] * float(wr.z ? wr.z[g] : 8) * xsum[g];
  return t;
}

/**
 * int4 rows: Σ_g s_g Σ_j (q_j - z_g) x_j = Σ_g s_g (Σ_j q_j x_j) - Σ_g s_g z_g xsum_g, where
 * xsum (R rows of K/32 group sums of x) is computed once per call. The raw levels need no
 * subtraction or scaling per element; each group's partial dot is scaled once.
 */
template <int R>
AVX2T void dot_int4_avx2(const WRow& wr, const float* x, const float* xsum, int64_t K, float* sums) {
  const int64_t G = K / 32;
  // Two accumulators per row (even and odd groups), unrolled so both stay in registers.
  __m256 acc0[R], acc1[R];
  for (int m = 0; m < R; m++) acc0[m] = acc1[m] = _mm256_setzero_ps();
  auto group = [&](int64_t g, __m256* acc) AVX2T {
    __m256 w[4];
    levels4_avx2(wr.q + g * 16, w);
    const __m256 sv = _mm256_set1_ps(wr.s[g]);
    for (int m = 0; m < R; m++) {
      const float* xg = x + m * K + g * 32;
      __m256 d0 = _mm256_mul_ps(w[0], _mm256_loadu_ps(xg));
      __m256 d1 = _mm256_mul_ps(w[1], _mm256_loadu_ps(xg + 8));
      d0 = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xg + 16), d0);
      d1 = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xg + 24), d1);
      acc[m] = _mm256_fmadd_ps(sv, _mm256_add_ps(d0, d1), acc[m]);
    }
  };
  int64_t g = 0;
  for (; g + 2 <= G; g += 2) {
    group(g, acc0);
    group(g + 1, acc1);
  }
  if (g < G) group(g, acc0);
  for (int m = 0; m < R; m++) sums[m] = hsum256(_mm256_add_ps(acc0[m], acc1[m])) - zero_corr_avx2(wr, xsum + m * G, G);
}

AVX2T void dot_avx2(int format, const WRow& w, const float* x, const float* xsum, int64_t K, int R, float* sums) {
  if (format == QUANT_INT8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(w.q);
    switch (R) {
      case 1: return dot_int8_avx2<1>(q, x, K, sums);
      case 2: return dot_int8_avx2<2>(q, x, K, sums);
      case 3: return dot_int8_avx2<3>(q, x, K, sums);
      default: return dot_int8_avx2<4>(q, x, K, sums);
    }
  }
  switch (R) {
    case 1: return dot_int4_avx2<1>(w, x, xsum, K, sums);
    case 2: return dot_int4_avx2<2>(w, x, xsum, K, sums);
    case 3: return dot_int4_avx2<3>(w, x, xsum, K, sums);
    default: return dot_int4_avx2<4>(w, x, xsum, K, sums);
  }
}

AVX2T void dequant_avx2(int format, const WRow& w, int64_t K, float* out) {
  if (format == QUANT_INT8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(w.q);
    const __m256 sv = _mm256_set1_ps(w.s[0]);
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
      _mm256_storeu_ps(out + k, _mm256_mul_ps(sv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k))))));
    for (; k < K; k++) out[k] = w.s[0] * float(q[k]);
    return;
  }
  for (int64_t g = 0; g < K / 32; g++) {
    __m256 v[4];
    group4_avx2(w.q + g * 16, w.s[g], w.z ? w.z[g] : 8, v);
    for (int i = 0; i < 4; i++) _mm256_storeu_ps(out + g * 32 + 8 * i, v[i]);
  }
}

// ---- AVX-512 ----

AVX512T inline float hsum512(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  return hsum256(h);
}

template <int R>
AVX512T void dot_int8_avx512(const int8_t* q, const float* x, int64_t K, float* sums) {
  constexpr int U = R == 1 ? 4 : R == 2 ? 2 : 1;
  __m512 acc[R][U];
  for (int m = 0; m < R; m++)
    for (int u = 0; u < U; u++) acc[m][u] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 * U <= K; k += 16 * U) {
    for (int u = 0; u < U; u++) {
      const __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k + 16 * u))));
      for (int m = 0; m < R; m++) acc[m][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + m * K + k + 16 * u), acc[m][u]);
    }
  }
  for (int m = 0; m < R; m++) {
    __m512 t = acc[m][0];
    for (int u = 1; u < U; u++) t = _mm512_add_ps(t, acc[m][u]);
    float s = hsum512(t);
    for (int64_t kk = k; kk < K; kk++) s += x[m * K + kk] * float(q[kk]);
    sums[m] = s;
  }
}

AVX512T inline void group2_avx512(const uint8_t* q, float s, int z, __m512 w[2]) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i m4 = _mm_set1_epi8(15);
  const __m512i zv = _mm512_set1_epi32(z);
  const __m512 sv = _mm512_set1_ps(s);
  w[0] = _mm512_mul_ps(sv, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(b, m4)), zv)));
  w[1] = _mm512_mul_ps(sv, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), m4)), zv)));
}

/** The 32 raw levels of one int4 group as two vectors of 16 (elements 0-15, 16-31): each byte
 *  widened to a lane, whose low 4 bits index a table of the 16 levels as floats (vpermps reads
 *  only those bits), so neither nibble needs a mask or an int-to-float conversion (13 % faster
 *  than and + cvtdq2ps in a one-thread loop over a 2304 x 768 matrix here, the same floats). */
AVX512T inline void levels2_avx512(const uint8_t* q, __m512 w[2]) {
  const __m512 levels = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
  w[0] = _mm512_permutexvar_ps(b, levels);
  w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), levels);
}

/** As dot_int4_avx2: raw levels, one scale per group, the zero points through xsum. */
template <int R>
AVX512T void dot_int4_avx512(const WRow& wr, const float* x, const float* xsum, int64_t K, float* sums) {
  const int64_t G = K / 32;
  __m512 acc0[R], acc1[R];
  for (int m = 0; m < R; m++) acc0[m] = acc1[m] = _mm512_setzero_ps();
  auto group = [&](int64_t g, __m512* acc) AVX512T {
    __m512 w[2];
    levels2_avx512(wr.q + g * 16, w);
    const __m512 sv = _mm512_set1_ps(wr.s[g]);
    for (int m = 0; m < R; m++) {
      const float* xg = x + m * K + g * 32;
      const __m512 d = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xg + 16), _mm512_mul_ps(w[0], _mm512_loadu_ps(xg)));
      acc[m] = _mm512_fmadd_ps(sv, d, acc[m]);
    }
  };
  int64_t g = 0;
  for (; g + 2 <= G; g += 2) {
    group(g, acc0);
    group(g + 1, acc1);
  }
  if (g < G) group(g, acc0);
  for (int m = 0; m < R; m++) sums[m] = hsum512(_mm512_add_ps(acc0[m], acc1[m])) - zero_corr_avx2(wr, xsum + m * G, G);
}

AVX512T void dot_avx512(int format, const WRow& w, const float* x, const float* xsum, int64_t K, int R, float* sums) {
  if (format == QUANT_INT8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(w.q);
    switch (R) {
      case 1: return dot_int8_avx512<1>(q, x, K, sums);
      case 2: return dot_int8_avx512<2>(q, x, K, sums);
      case 3: return dot_int8_avx512<3>(q, x, K, sums);
      default: return dot_int8_avx512<4>(q, x, K, sums);
    }
  }
  switch (R) {
    case 1: return dot_int4_avx512<1>(w, x, xsum, K, sums);
    case 2: return dot_int4_avx512<2>(w, x, xsum, K, sums);
    case 3: return dot_int4_avx512<3>(w, x, xsum, K, sums);
    default: return dot_int4_avx512<4>(w, x, xsum, K, sums);
  }
}

AVX512T void dequant_avx512(int format, const WRow& w, int64_t K, float* out) {
  if (format == QUANT_INT8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(w.q);
    const __m512 sv = _mm512_set1_ps(w.s[0]);
    int64_t k = 0;
    for (; k + 16 <= K; k += 16)
      _mm512_storeu_ps(out + k, _mm512_mul_ps(sv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k))))));
    for (; k < K; k++) out[k] = w.s[0] * float(q[k]);
    return;
  }
  for (int64_t g = 0; g < K / 32; g++) {
    __m512 v[2];
    group2_avx512(w.q + g * 16, w.s[g], w.z ? w.z[g] : 8, v);
    _mm512_storeu_ps(out + g * 32, v[0]);
    _mm512_storeu_ps(out + g * 32 + 16, v[1]);
  }
}

// ---- AVX-512 VNNI, int8 activations (opt-in: set_quant_int8_activations) ----
//
// llama.cpp's way for its 4-bit types: each row of x is quantized once per call to int8 in
// groups of 32 (scale max|x| / 127, round to nearest), and a pair of weight groups meets its
// activations in one vpdpbusd (64 unsigned levels x 64 signed bytes, four products per int32
// lane), scaled per group in float. About half the instructions of the float path per weight;
// the result carries the activations' rounding (relative 1/254 per element at most).

#define VNNIT __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

/** One row of x (K = 64 P) as the VNNI dot reads it: per pair of groups (2p, 2p + 1), 64 bytes
 *  in the weight pair's register order (2p elements 0-15, 2p+1 0-15, 2p 16-31, 2p+1 16-31),
 *  the 16 lanes' activation scales in the same order, and each group's dx_g Σ_j q_j (for the
 *  zero points). */
struct QuantRow {
  std::vector<int8_t> q;
  std::vector<float> dxv, corr;
};

void quantize_row(const float* x, int64_t K, QuantRow& r) {
  const int64_t G = K / 32, P = G / 2;
  r.q.resize(size_t(K));
  r.dxv.resize(size_t(P * 16));
  r.corr.resize(size_t(G));
  for (int64_t g = 0; g < G; g++) {
    const float* xg = x + g * 32;
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(xg[j]));
    const float dx = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
    const int64_t p = g / 2, half = g % 2;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
      const int v = int(std::lrint(xg[j] * inv));
      const int8_t qv = int8_t(std::min(127, std::max(-127, v)));
      sum += qv;
      // elements 0-15 at 16·half, 16-31 at 32 + 16·half within the pair's 64 bytes
      r.q[size_t(p * 64 + (j < 16 ? 16 * half + j : 32 + 16 * half + (j - 16)))] = qv;
    }
    for (int l = 0; l < 4; l++) {
      r.dxv[size_t(p * 16 + 4 * half + l)] = dx;
      r.dxv[size_t(p * 16 + 8 + 4 * half + l)] = dx;
    }
    r.corr[size_t(g)] = dx * float(sum);
  }
}

template <int R>
VNNIT void dot_int4_vnni(const WRow& wr, const QuantRow* xr, int64_t K, float* sums) {
  const int64_t G = K / 32, P = G / 2;
  const __m256i m4 = _mm256_set1_epi8(15);
  // lanes 0-3 and 8-11 take the pair's first scale, 4-7 and 12-15 its second
  const __m512i pick2 = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc0[R], acc1[R];
  for (int m = 0; m < R; m++) acc0[m] = acc1[m] = _mm512_setzero_ps();
  auto pair = [&](int64_t p, __m512* acc) VNNIT {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr.q + p * 32));
    const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(b, m4)), _mm256_and_si256(_mm256_srli_epi16(b, 4), m4), 1);
    const __m512 sv = _mm512_permutexvar_ps(pick2, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(wr.s + 2 * p)))));
    for (int m = 0; m < R; m++) {
      const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(xr[m].q.data() + p * 64));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(sv, _mm512_loadu_ps(xr[m].dxv.data() + p * 16)), acc[m]);
    }
  };
  int64_t p = 0;
  for (; p + 2 <= P; p += 2) {
    pair(p, acc0);
    pair(p + 1, acc1);
  }
  if (p < P) pair(p, acc0);
  for (int m = 0; m < R; m++) sums[m] = hsum512(_mm512_add_ps(acc0[m], acc1[m])) - zero_corr_avx2(wr, xr[m].corr.data(), G);
}

VNNIT void dot_vnni(const WRow& w, const QuantRow* xr, int64_t K, int R, float* sums) {
  switch (R) {
    case 1: return dot_int4_vnni<1>(w, xr, K, sums);
    case 2: return dot_int4_vnni<2>(w, xr, K, sums);
    case 3: return dot_int4_vnni<3>(w, xr, K, sums);
    default: return dot_int4_vnni<4>(w, xr, K, sums);
  }
}

bool g_int8_activations = false;

bool cpu_has_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

using DotFn = void (*)(int, const WRow&, const float*, const float*, int64_t, int, float*);
using DequantFn = void (*)(int, const WRow&, int64_t, float*);

void pick(DotFn& dot, DequantFn& deq) {
  switch (std::min(int(current_isa()), int(Isa::avx512))) {
    case 2: dot = dot_avx512; deq = dequant_avx512; return;
    case 1: dot = dot_avx2; deq = dequant_avx2; return;
    default: dot = dot_portable; deq = dequant_portable; return;
  }
}

/** Decode: out for all M rows of x, weight rows shared among the threads in whole 16-row runs (so
 *  neighbouring threads do not write the same cache lines), bias and activation added.
 *  dot(w, m0, R, sums) gives the R <= MAX_ROWS dot products of x rows m0.. with weight row w. */
template <class Dot>
void direct(const QuantMatmulArgs& a, int threads, Dot dot) {
  const int64_t work = a.M * a.N * a.K;
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(work < (1 << 16) ? 1 : threads, a.N)));
  parallel(nt, [&](int tid, int k) {
    const int64_t runs = (a.N + 15) / 16;
    const int64_t n0 = std::min(a.N, runs * tid / k * 16), n1 = std::min(a.N, runs * (tid + 1) / k * 16);
    float sums[MAX_ROWS];
    for (int64_t n = n0; n < n1; n++) {
      const WRow w = row_of(a, n);
      const float scale = a.format == QUANT_INT8 ? w.s[0] : 1.0f;
      const float b = a.bias ? a.bias[n] : 0.0f;
      for (int64_t m0 = 0; m0 < a.M; m0 += MAX_ROWS) {
        const int R = int(std::min<int64_t>(MAX_ROWS, a.M - m0));
        dot(w, m0, R, sums);
        for (int r = 0; r < R; r++) a.out[(m0 + r) * a.N + n] = sums[r] * scale + b;
      }
    }
  });
  if (a.act != ACT_NONE) apply_activation(a.out, a.M * a.N, a.act, threads);
}

}  // namespace

bool set_quant_int8_activations(bool on) {
  g_int8_activations = on && cpu_has_vnni();
  return g_int8_activations;
}

void quant_matmul(const QuantMatmulArgs& a, int threads) {
  if (a.M <= 0 || a.N <= 0) return;
  DotFn dot;
  DequantFn deq;
  pick(dot, deq);
  // g_int8_activations is only ever on where the processor has VNNI; the kernel set may be capped below it.
  if (a.M <= DIRECT_MAX_M && g_int8_activations && a.format != QUANT_INT8 && a.K % 64 == 0 && int(current_isa()) >= int(Isa::avx512)) {
    thread_local std::vector<QuantRow> rows;
    rows.resize(size_t(a.M));
    for (int64_t m = 0; m < a.M; m++) quantize_row(a.x + m * a.K, a.K, rows[size_t(m)]);
    const QuantRow* xr = rows.data();
    direct(a, threads, [&](const WRow& w, int64_t m0, int R, float* sums) { dot_vnni(w, xr + m0, a.K, R, sums); });
    return;
  }
  if (a.M <= DIRECT_MAX_M) {
    // int4: the group sums of x, for the zero points (see dot_int4_avx2).
    float xsum[DIRECT_MAX_M * 512];
    const bool sums = a.format != QUANT_INT8 && a.K / 32 <= 512;
    if (a.format != QUANT_INT8 && !sums) {
      // Rows longer than 16384: the portable kernel, which needs no group sums.
      dot = dot_portable;
    }
    if (sums)
      for (int64_t m = 0; m < a.M; m++)
        for (int64_t g = 0; g < a.K / 32; g++) {
          float t = 0;
          for (int j = 0; j < 32; j++) t += a.x[m * a.K + g * 32 + j];
          xsum[m * (a.K / 32) + g] = t;
        }
    const float* xs = sums ? xsum : nullptr;
    direct(a, threads, [&](const WRow& w, int64_t m0, int R, float* out) { dot(a.format, w, a.x + m0 * a.K, xs ? xs + m0 * (a.K / 32) : nullptr, a.K, R, out); });
    return;
  }
  // Prefill: panels of NB weight rows widened to float32, gemm per panel. 128 rows measured best
  // here (64 and 256 were 5-30 % slower at K = 768 and 3072); fewer when that leaves a thread
  // fewer than two panels.
  const int64_t NB = std::max<int64_t>(16, std::min<int64_t>(128, (a.N + 2 * threads - 1) / (2 * threads) + 15) / 16 * 16);
  const int64_t panels = (a.N + NB - 1) / NB;
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(threads, panels)));
  parallel(nt, [&](int tid, int k) {
    thread_local std::vector<float> panel, tmp;
    panel.resize(size_t(NB * a.K));
    tmp.resize(size_t(a.M * NB));
    for (int64_t p = tid; p < panels; p += k) {
      const int64_t n0 = p * NB, nb = std::min(NB, a.N - n0);
      for (int64_t r = 0; r < nb; r++) deq(a.format, row_of(a, n0 + r), a.K, panel.data() + r * a.K);
      GemmArgs g;
      g.a = a.x; g.a_batch = 0; g.lda = a.K; g.trans_a = false;
      g.b = panel.data(); g.b_batch = 0; g.ldb = a.K; g.trans_b = true; g.b_bf16 = false;
      g.out = tmp.data(); g.batch = 1; g.M = int(a.M); g.N = int(nb); g.K = int(a.K);
      g.bias = a.bias ? a.bias + n0 : nullptr; g.act = a.act; g.accumulate = false;
      gemm_serial(g);
      for (int64_t m = 0; m < a.M; m++) std::copy(tmp.data() + m * nb, tmp.data() + (m + 1) * nb, a.out + m * a.N + n0);
    }
  });
}

}  // namespace attn
