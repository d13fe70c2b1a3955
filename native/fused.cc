// Fused row kernels (see fused.h). Each body is plain C++ over one range of rows, written so the
// compiler vectorises it; VARIANTS compiles it once per instruction set (inlined into functions
// with their own target attributes) and the entry points pick one by the kernel set in use.
// Row statistics accumulate in double, as the reference does.
#include "fused.h"

#include <vector>

#include "gemm.h"
#include "pool.h"
#include "vmath.h"

namespace attn {
namespace {

#define AVX2T __attribute__((target("avx2,fma")))
#define AVX512T __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

/** FN##_body PARAMS compiled three times; FN##_pick() returns the one for the kernel set in use. */
#define VARIANTS(FN, PARAMS, ARGS)                          \
  void FN##_portable PARAMS { FN##_body ARGS; }             \
  AVX2T void FN##_avx2 PARAMS { FN##_body ARGS; }           \
  AVX512T void FN##_avx512 PARAMS { FN##_body ARGS; }       \
  auto FN##_pick() {                                        \
    switch (std::min(int(current_isa()), int(Isa::avx512))) { \
      case 2: return FN##_avx512;                           \
      case 1: return FN##_avx2;                             \
      default: return FN##_portable;                        \
    }                                                       \
  }

/** Threads for `work` elements: one below 32k (waking a thread costs more). */
inline int threads_for(int64_t work, int64_t rows, int threads) {
  return int(std::max<int64_t>(1, std::min<int64_t>(work < (1 << 15) ? 1 : threads, rows)));
}

/** fn(r0, r1, tid) over contiguous shares of rows. */
template <class F>
void over_rows(int64_t rows, int64_t n, int threads, F fn) {
  const int nt = threads_for(rows * n, rows, threads);
  parallel(nt, [&](int tid, int k) { fn(rows * tid / k, rows * (tid + 1) / k, tid); });
}

// ---------------------------------------------------------------- LayerNorm

INLINE void ln_body(const float* x, const float* w, const float* b, int64_t r0, int64_t r1, int64_t n, float eps, float* out, float* mean, float* rstd) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += xr[j];
    const double md = s / double(n);
    // The mean as two floats (hi + lo): a row far from zero with a small spread keeps its digits.
    const float mu = float(md), mu_lo = float(md - double(mu));
    double sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t j = 0; j < n; j++) {
      const double d = double(xr[j]) - md;
      sq += d * d;
    }
    const float rs = float(1.0 / std::sqrt(sq / double(n) + double(eps)));
    mean[r] = mu;
    rstd[r] = rs;
    if (w && b) {
#pragma omp simd
      for (int64_t j = 0; j < n; j++) o[j] = ((xr[j] - mu) - mu_lo) * rs * w[j] + b[j];
    } else if (w) {
#pragma omp simd
      for (int64_t j = 0; j < n; j++) o[j] = ((xr[j] - mu) - mu_lo) * rs * w[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; j++) o[j] = ((xr[j] - mu) - mu_lo) * rs + (b ? b[j] : 0.f);
    }
  }
}
VARIANTS(ln, (const float* x, const float* w, const float* b, int64_t r0, int64_t r1, int64_t n, float eps, float* out, float* mean, float* rstd),
         (x, w, b, r0, r1, n, eps, out, mean, rstd))

/** gx of rows [r0, r1); gw, gb (this thread's partial sums, may be null) += over those rows. */
INLINE void lnb_body(const float* x, const float* w, const float* mean, const float* rstd, const float* gy, int64_t r0, int64_t r1, int64_t n,
                     float* gx, double* gw, double* gb) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * n;
    const float* g = gy + r * n;
    float* o = gx + r * n;
    const float mu = mean[r], rs = rstd[r];
    double gm = 0, gxm = 0;
#pragma omp simd reduction(+ : gm, gxm)
    for (int64_t j = 0; j < n; j++) {
      const float xhat = (xr[j] - mu) * rs;
      const float gj = g[j] * (w ? w[j] : 1.f);
      gm += gj;
      gxm += double(gj) * xhat;
    }
    if (gw) {
#pragma omp simd
      for (int64_t j = 0; j < n; j++) gw[j] += double(g[j]) * ((xr[j] - mu) * rs);
    }
    if (gb) {
#pragma omp simd
      for (int64_t j = 0; j < n; j++) gb[j] += g[j];
    }
    const float a = float(gm / double(n)), c = float(gxm / double(n));
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
      const float xhat = (xr[j] - mu) * rs;
      o[j] = rs * (g[j] * (w ? w[j] : 1.f) - a - xhat * c);
    }
  }
}
VARIANTS(lnb, (const float* x, const float* w, const float* mean, const float* rstd, const float* gy, int64_t r0, int64_t r1, int64_t n, float* gx, double* gw, double* gb),
         (x, w, mean, rstd, gy, r0, r1, n, gx, gw, gb))

// ---------------------------------------------------------------- RMSNorm

INLINE void rms_body(const float* x, const float* w, int64_t r0, int64_t r1, int64_t n, float eps, float* out, float* rstd) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t j = 0; j < n; j++) sq += double(xr[j]) * xr[j];
    const float rs = float(1.0 / std::sqrt(sq / double(n) + double(eps)));
    rstd[r] = rs;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) o[j] = xr[j] * rs * (w ? w[j] : 1.f);
  }
}
VARIANTS(rms, (const float* x, const float* w, int64_t r0, int64_t r1, int64_t n, float eps, float* out, float* rstd), (x, w, r0, r1, n, eps, out, rstd))

INLINE void rmsb_body(const float* x, const float* w, const float* rstd, const float* gy, int64_t r0, int64_t r1, int64_t n, float* gx, double* gw) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * n;
    const float* g = gy + r * n;
    float* o = gx + r * n;
    const float rs = rstd[r];
    double m = 0;
#pragma omp simd reduction(+ : m)
    for (int64_t j = 0; j < n; j++) m += double(g[j] * (w ? w[j] : 1.f)) * xr[j];
    if (gw) {
#pragma omp simd
      for (int64_t j = 0; j < n; j++) gw[j] += double(g[j]) * xr[j] * rs;
    }
    const float c = float(m / double(n)) * rs * rs;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) o[j] = rs * (g[j] * (w ? w[j] : 1.f) - xr[j] * c);
  }
}
VARIANTS(rmsb, (const float* x, const float* w, const float* rstd, const float* gy, int64_t r0, int64_t r1, int64_t n, float* gx, double* gw),
         (x, w, rstd, gy, r0, r1, n, gx, gw))

// ---------------------------------------------------------------- softmax

/** max and log Σ exp(x - max) of one row. */
INLINE void row_lse(const float* xr, int64_t n, float& mx, float& log_sum) {
  float m = NEG_INF;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; j++) m = std::max(m, xr[j]);
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; j++) s += vexp(xr[j] - m);
  mx = m;
  log_sum = float(std::log(s));
}

INLINE void sm_body(const float* x, int64_t r0, int64_t r1, int64_t n, bool log, float* out) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    float mx, ls;
    row_lse(xr, n, mx, ls);
    if (log) {
#pragma omp simd
      for (int64_t j = 0; j < n; j++) o[j] = (xr[j] - mx) - ls;
    } else {
      const float inv = std::exp(-ls);
#pragma omp simd
      for (int64_t j = 0; j < n; j++) o[j] = vexp(xr[j] - mx) * inv;
    }
  }
}
VARIANTS(sm, (const float* x, int64_t r0, int64_t r1, int64_t n, bool log, float* out), (x, r0, r1, n, log, out))

INLINE void smb_body(const float* y, const float* gy, int64_t r0, int64_t r1, int64_t n, bool log, float* gx) {
  for (int64_t r = r0; r < r1; r++) {
    const float* yr = y + r * n;
    const float* g = gy + r * n;
    float* o = gx + r * n;
    double dot = 0;
    if (log) {
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < n; j++) dot += g[j];
      const float d = float(dot);
#pragma omp simd
      for (int64_t j = 0; j < n; j++) o[j] = g[j] - vexp(yr[j]) * d;
    } else {
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < n; j++) dot += double(g[j]) * yr[j];
      const float d = float(dot);
#pragma omp simd
      for (int64_t j = 0; j < n; j++) o[j] = yr[j] * (g[j] - d);
    }
  }
}
VARIANTS(smb, (const float* y, const float* gy, int64_t r0, int64_t r1, int64_t n, bool log, float* gx), (y, gy, r0, r1, n, log, gx))

// ---------------------------------------------------------------- cross-entropy

INLINE void ce_body(const float* logits, const int32_t* targets, int64_t r0, int64_t r1, int64_t V, int32_t ignore, float smoothing, float* losses, float* lse) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = logits + r * V;
    float mx, ls;
    row_lse(xr, V, mx, ls);
    const float l = mx + ls;
    lse[r] = l;
    const int32_t t = targets[r];
    if (t == ignore) {
      losses[r] = 0.f;
      continue;
    }
    double sum = 0;
    if (smoothing != 0.f) {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < V; j++) sum += xr[j];
    }
    losses[r] = float(double(l) - ((1.0 - smoothing) * xr[t] + smoothing * sum / double(V)));
  }
}
VARIANTS(ce, (const float* logits, const int32_t* targets, int64_t r0, int64_t r1, int64_t V, int32_t ignore, float smoothing, float* losses, float* lse),
         (logits, targets, r0, r1, V, ignore, smoothing, losses, lse))

INLINE void ceb_body(const float* logits, const int32_t* targets, const float* lse, const float* scale, int64_t r0, int64_t r1, int64_t V, int32_t ignore,
                     float smoothing, float* gx) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = logits + r * V;
    float* o = gx + r * V;
    const int32_t t = targets[r];
    if (t == ignore) {
      std::memset(o, 0, size_t(V) * 4);
      continue;
    }
    const float s = scale[r], l = lse[r], off = smoothing / float(V);
#pragma omp simd
    for (int64_t j = 0; j < V; j++) o[j] = s * (vexp(xr[j] - l) - off);
    o[t] -= s * (1.f - smoothing);
  }
}
VARIANTS(ceb, (const float* logits, const int32_t* targets, const float* lse, const float* scale, int64_t r0, int64_t r1, int64_t V, int32_t ignore, float smoothing, float* gx),
         (logits, targets, lse, scale, r0, r1, V, ignore, smoothing, gx))

// ---------------------------------------------------------------- GELU (tanh form)

INLINE void gelub_body(const float* x, const float* gy, float* gx, int64_t i0, int64_t i1) {
  constexpr float k = 0.7978845608028654f, c = 0.044715f;
#pragma omp simd
  for (int64_t i = i0; i < i1; i++) {
    const float xi = x[i];
    const float u = k * (xi + c * xi * xi * xi);
    const float t = 1.f - 2.f / (1.f + vexp(2.f * u));  // tanh u
    const float du = k * (1.f + 3.f * c * xi * xi);
    gx[i] = gy[i] * (0.5f * (1.f + t) + 0.5f * xi * (1.f - t * t) * du);
  }
}
VARIANTS(gelub, (const float* x, const float* gy, float* gx, int64_t i0, int64_t i1), (x, gy, gx, i0, i1))

// ---------------------------------------------------------------- SwiGLU

INLINE void swiglu_body(const float* g, const float* u, float* o, int64_t i0, int64_t i1) {
#pragma omp simd
  for (int64_t i = i0; i < i1; i++) o[i] = g[i] / (1.f + vexp(-g[i])) * u[i];
}
VARIANTS(swiglu, (const float* g, const float* u, float* o, int64_t i0, int64_t i1), (g, u, o, i0, i1))

INLINE void swiglub_body(const float* g, const float* u, const float* gy, float* gg, float* gu, int64_t i0, int64_t i1) {
#pragma omp simd
  for (int64_t i = i0; i < i1; i++) {
    const float s = 1.f / (1.f + vexp(-g[i]));
    gu[i] = gy[i] * g[i] * s;
    gg[i] = gy[i] * u[i] * s * (1.f + g[i] * (1.f - s));
  }
}
VARIANTS(swiglub, (const float* g, const float* u, const float* gy, float* gg, float* gu, int64_t i0, int64_t i1), (g, u, gy, gg, gu, i0, i1))

// ---------------------------------------------------------------- rotary position embedding

// Row r (D features) sits at position (r / H) % T + offset: rows of (B, T, H, D) with H heads,
// or of (B, H, T, D) with H = 1. The first rd features rotate in half-split pairs (i, i + rd/2);
// sign -1 rotates back (the backward pass).
INLINE void rope_body(const float* x, const float* cs, const float* sn, float* o, int64_t r0, int64_t r1, int64_t H, int64_t T, int64_t D,
                      int64_t rd, int64_t offset, float sign) {
  const int64_t half = rd / 2;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t pos = (r / H) % T + offset;
    const float* c = cs + pos * half;
    const float* s = sn + pos * half;
    const float* xr = x + r * D;
    float* orow = o + r * D;
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
      const float a = xr[i], b = xr[i + half];
      orow[i] = a * c[i] - sign * b * s[i];
      orow[i + half] = b * c[i] + sign * a * s[i];
    }
    for (int64_t i = rd; i < D; i++) orow[i] = xr[i];
  }
}
VARIANTS(rope, (const float* x, const float* cs, const float* sn, float* o, int64_t r0, int64_t r1, int64_t H, int64_t T, int64_t D, int64_t rd, int64_t offset, float sign),
         (x, cs, sn, o, r0, r1, H, T, D, rd, offset, sign))

// ---------------------------------------------------------------- AdamW

INLINE void adamw_body(float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1, const AdamWParams& h) {
  // 1 - beta from the double betas: 1 - float(0.999) would be 1.3e-5 off.
  const float b1 = float(h.beta1), b2 = float(h.beta2), c1 = float(1.0 - h.beta1), c2 = float(1.0 - h.beta2);
  const float ibc1 = float(1.0 / h.bc1), ibc2 = float(1.0 / h.bc2), lr = float(h.lr), eps = float(h.eps), wd = float(h.weight_decay);
#pragma omp simd
  for (int64_t i = i0; i < i1; i++) {
    const float gi = g[i];
    const float mi = b1 * m[i] + c1 * gi;
    const float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * (mi * ibc1 / (std::sqrt(vi * ibc2) + eps) + wd * p[i]);
  }
}
VARIANTS(adamw, (float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1, const AdamWParams& h), (p, g, m, v, i0, i1, h))

/** Per-thread double partial sums of n columns, reduced in thread order into out (deterministic). */
struct Partials {
  std::vector<double> buf;
  int64_t n;
  Partials(int nt, int64_t n_) : buf(size_t(nt) * size_t(n_), 0.0), n(n_) {}
  double* of(int tid) { return buf.data() + size_t(tid) * size_t(n); }
  void reduce_into(float* out, int nt) {
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int t = 0; t < nt; t++) s += buf[size_t(t) * size_t(n) + size_t(j)];
      out[j] = float(s);
    }
  }
};

// ---------------------------------------------------------------- sampling

/** Logits per chunk of the inverse-CDF scan: chunk sums first, then only the chunk that holds the
 *  draw is rescanned in order. */
constexpr int64_t SAMPLE_CHUNK = 512;

/** A draw from softmax(l / T): the first index whose cumulative weight exceeds u * total
 *  (weights e^((l - max) / T), -inf and NaN weigh 0), or -1 when every logit is -inf or NaN. */
INLINE int32_t sample_row_body(const float* l, int64_t V, float inv_t, double u, double* sums) {
  float m = NEG_INF;
  for (int64_t j = 0; j < V; j++) m = l[j] > m ? l[j] : m;
  if (!(m > NEG_INF)) return -1;
  auto weight = [&](float x) { return x > NEG_INF ? vexp((x - m) * inv_t) : 0.f; };
  const int64_t chunks = (V + SAMPLE_CHUNK - 1) / SAMPLE_CHUNK;
  double total = 0;
  for (int64_t c = 0; c < chunks; c++) {
    const int64_t j1 = std::min(V, (c + 1) * SAMPLE_CHUNK);
    double cs = 0;
#pragma omp simd reduction(+ : cs)
    for (int64_t j = c * SAMPLE_CHUNK; j < j1; j++) cs += double(weight(l[j]));
    sums[c] = cs;
    total += cs;
  }
  const double r = u * total;
  double cum = 0;
  for (int64_t c = 0; c < chunks; c++) {
    if (cum + sums[c] <= r) {
      cum += sums[c];
      continue;
    }
    for (int64_t j = c * SAMPLE_CHUNK, j1 = std::min(V, (c + 1) * SAMPLE_CHUNK); j < j1; j++) {
      const float w = weight(l[j]);
      if (w == 0.f) continue;
      cum += double(w);
      if (r < cum) return int32_t(j);
    }
  }
  // r at the very top (rounding): the last index that weighs anything
  for (int64_t j = V - 1; j >= 0; j--)
    if (weight(l[j]) > 0.f) return int32_t(j);
  return -1;
}

INLINE void sample_body(const float* logits, int64_t V, const int32_t* rows, const double* temps, const double* uniforms, int64_t i0, int64_t i1, int32_t* out) {
  thread_local std::vector<double> sums;
  sums.resize(size_t((V + SAMPLE_CHUNK - 1) / SAMPLE_CHUNK));
  for (int64_t i = i0; i < i1; i++) out[i] = sample_row_body(logits + int64_t(rows[i]) * V, V, float(1.0 / temps[i]), uniforms[i], sums.data());
}
VARIANTS(sample, (const float* logits, int64_t V, const int32_t* rows, const double* temps, const double* uniforms, int64_t i0, int64_t i1, int32_t* out),
         (logits, V, rows, temps, uniforms, i0, i1, out))

}  // namespace

namespace {
/** The position of the first id outside [0, V) other than `ignore`, or -1. */
int64_t first_bad(const int32_t* ids, int64_t n, int64_t V, int64_t ignore = -1) {
  for (int64_t i = 0; i < n; i++)
    if (ids[i] != ignore && (ids[i] < 0 || ids[i] >= V)) return i;
  return -1;
}
}  // namespace

void sample_tempered(const float* logits, int64_t V, const int32_t* rows, int64_t n, const double* temps, const double* uniforms, int32_t* out, int threads) {
  auto f = sample_pick();
  over_rows(n, V, threads, [&](int64_t r0, int64_t r1, int) { f(logits, V, rows, temps, uniforms, r0, r1, out); });
}

void layer_norm(const float* x, const float* w, const float* b, int64_t rows, int64_t n, float eps, float* out, float* mean, float* rstd, int threads) {
  auto f = ln_pick();
  over_rows(rows, n, threads, [&](int64_t r0, int64_t r1, int) { f(x, w, b, r0, r1, n, eps, out, mean, rstd); });
}

void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* gy, int64_t rows, int64_t n,
                         float* gx, float* gw, float* gb, int threads) {
  auto f = lnb_pick();
  const int nt = threads_for(rows * n, rows, threads);
  Partials pw(gw ? nt : 0, n), pb(gb ? nt : 0, n);
  parallel(nt, [&](int tid, int k) {
    f(x, w, mean, rstd, gy, rows * tid / k, rows * (tid + 1) / k, n, gx, gw ? pw.of(tid) : nullptr, gb ? pb.of(tid) : nullptr);
  });
  if (gw) pw.reduce_into(gw, nt);
  if (gb) pb.reduce_into(gb, nt);
}

void rms_norm(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* out, float* rstd, int threads) {
  auto f = rms_pick();
  over_rows(rows, n, threads, [&](int64_t r0, int64_t r1, int) { f(x, w, r0, r1, n, eps, out, rstd); });
}

void rms_norm_backward(const float* x, const float* w, const float* rstd, const float* gy, int64_t rows, int64_t n, float* gx, float* gw, int threads) {
  auto f = rmsb_pick();
  const int nt = threads_for(rows * n, rows, threads);
  Partials pw(gw ? nt : 0, n);
  parallel(nt, [&](int tid, int k) { f(x, w, rstd, gy, rows * tid / k, rows * (tid + 1) / k, n, gx, gw ? pw.of(tid) : nullptr); });
  if (gw) pw.reduce_into(gw, nt);
}

void softmax(const float* x, int64_t rows, int64_t n, bool log, float* out, int threads) {
  auto f = sm_pick();
  over_rows(rows, n, threads, [&](int64_t r0, int64_t r1, int) { f(x, r0, r1, n, log, out); });
}

void softmax_backward(const float* y, const float* gy, int64_t rows, int64_t n, bool log, float* gx, int threads) {
  auto f = smb_pick();
  over_rows(rows, n, threads, [&](int64_t r0, int64_t r1, int) { f(y, gy, r0, r1, n, log, gx); });
}

int64_t cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index, float smoothing, float* losses, float* lse, int threads) {
  const int64_t bad = first_bad(targets, N, V, ignore_index);
  if (bad >= 0) return bad;
  auto f = ce_pick();
  over_rows(N, V, threads, [&](int64_t r0, int64_t r1, int) { f(logits, targets, r0, r1, V, ignore_index, smoothing, losses, lse); });
  return -1;
}

int64_t cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse, const float* scale, int64_t N, int64_t V,
                            int32_t ignore_index, float smoothing, float* gx, int threads) {
  auto f = ceb_pick();
  over_rows(N, V, threads, [&](int64_t r0, int64_t r1, int) { f(logits, targets, lse, scale, r0, r1, V, ignore_index, smoothing, gx); });
  return -1;
}

void rope(const float* x, const float* cos, const float* sin, float* out, int64_t rows, int64_t H, int64_t T, int64_t D, int64_t rd,
          int64_t offset, int inverse, int threads) {
  auto f = rope_pick();
  const float sign = inverse ? -1.f : 1.f;
  over_rows(rows, D, threads, [&](int64_t r0, int64_t r1, int) { f(x, cos, sin, out, r0, r1, H, T, D, rd, offset, sign); });
}

void swiglu(const float* gate, const float* up, float* out, int64_t n, int threads) {
  auto f = swiglu_pick();
  const int nt = n < (1 << 16) ? 1 : threads;
  parallel(nt, [&](int tid, int k) { f(gate, up, out, n * tid / k / 16 * 16, tid + 1 == k ? n : n * (tid + 1) / k / 16 * 16); });
}

void swiglu_backward(const float* gate, const float* up, const float* gy, float* g_gate, float* g_up, int64_t n, int threads) {
  auto f = swiglub_pick();
  const int nt = n < (1 << 16) ? 1 : threads;
  parallel(nt, [&](int tid, int k) { f(gate, up, gy, g_gate, g_up, n * tid / k / 16 * 16, tid + 1 == k ? n : n * (tid + 1) / k / 16 * 16); });
}

void gelu_backward(const float* x, const float* gy, float* gx, int64_t n, int threads) {
  auto f = gelub_pick();
  const int nt = n < (1 << 16) ? 1 : threads;
  parallel(nt, [&](int tid, int k) { f(x, gy, gx, n * tid / k / 16 * 16, tid + 1 == k ? n : n * (tid + 1) / k / 16 * 16); });
}


int64_t embedding(const void* weight, bool bf16, int64_t V, int64_t C, const int32_t* ids, int64_t n, float* out, int threads) {
  const int64_t bad = first_bad(ids, n, V);
  if (bad >= 0) return bad;
  over_rows(n, C, threads, [&](int64_t r0, int64_t r1, int) {
    for (int64_t i = r0; i < r1; i++) {
      float* o = out + i * C;
      if (bf16) {
        const uint16_t* w = static_cast<const uint16_t*>(weight) + int64_t(ids[i]) * C;
        uint32_t* ob = reinterpret_cast<uint32_t*>(o);
#pragma omp simd
        for (int64_t c = 0; c < C; c++) ob[c] = uint32_t(w[c]) << 16;
      } else {
        std::memcpy(o, static_cast<const float*>(weight) + int64_t(ids[i]) * C, size_t(C) * 4);
      }
    }
  });
  return -1;
}

int64_t embedding_backward(const float* gy, const int32_t* ids, int64_t n, int64_t V, int64_t C, float* gw, int threads) {
  const int64_t bad = first_bad(ids, n, V);
  if (bad >= 0) return bad;
  // Threads own column ranges, so repeated ids never race and every sum keeps the order of i.
  const int nt = n * C < (1 << 15) || C < 64 ? 1 : threads;
  parallel(nt, [&](int tid, int k) {
    const int64_t c0 = C * tid / k, c1 = C * (tid + 1) / k;
    for (int64_t i = 0; i < n; i++) {
      float* g = gw + int64_t(ids[i]) * C;
      const float* y = gy + i * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; c++) g[c] += y[c];
    }
  });
  return -1;
}

void adamw(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& h, int threads) {
  auto f = adamw_pick();
  const int nt = n < (1 << 16) ? 1 : threads;
  parallel(nt, [&](int tid, int k) { f(param, grad, m, v, n * tid / k / 16 * 16, tid + 1 == k ? n : n * (tid + 1) / k / 16 * 16, h); });
}

}  // namespace attn
