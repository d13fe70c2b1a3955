// Reductions and element-wise maps over contiguous float32 arrays: the ops a training step calls
// many times on small tensors (gradient norms, losses, activations), where a JavaScript loop or a
// worker round trip costs more than the arithmetic. Sums accumulate in double, as the reference does.
#include "rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gemm.h"
#include "pool.h"

namespace attn {

void reduce_sum(const float* x, int64_t outer, int64_t n, int64_t inner, float* out, int threads) {
  const int64_t total = outer * n * inner;
  const int nt = total < (1 << 16) ? 1 : threads;
  if (inner == 1) {
    parallel(std::min<int64_t>(nt, outer), [&](int tid, int k) {
      for (int64_t o = outer * tid / k; o < outer * (tid + 1) / k; o++) {
        const float* r = x + o * n;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; j++) s += r[j];
        out[o] = float(s);
      }
    });
    return;
  }
  parallel(std::min<int64_t>(nt, outer), [&](int tid, int k) {
    std::vector<double> acc(static_cast<size_t>(inner));
    for (int64_t o = outer * tid / k; o < outer * (tid + 1) / k; o++) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < n; j++) {
        const float* r = x + (o * n + j) * inner;
        for (int64_t i = 0; i < inner; i++) acc[size_t(i)] += r[i];
      }
      for (int64_t i = 0; i < inner; i++) out[o * inner + i] = float(acc[size_t(i)]);
    }
  });
}

void copy_strided(const uint32_t* x, uint32_t* out, const int64_t shape[4], const int64_t xs[4], const int64_t os[4], int threads) {
  const int64_t n0 = shape[0], n1 = shape[1], n2 = shape[2], n3 = shape[3];
  const int64_t total = n0 * n1 * n2 * n3;
  if (total == 0) return;
  const bool rows = xs[3] == 1 && os[3] == 1;
  const int64_t outer = n0 * n1;
  const int nt = total < (1 << 16) ? 1 : threads;
  // Split over (i0, i1), or over i2 when the outer dims are too few to share.
  const bool split_outer = outer >= nt;
  parallel(nt, [&](int tid, int k) {
    const int64_t lo = split_outer ? outer * tid / k : 0, hi = split_outer ? outer * (tid + 1) / k : outer;
    const int64_t l2 = split_outer ? 0 : n2 * tid / k, h2 = split_outer ? n2 : n2 * (tid + 1) / k;
    for (int64_t o = lo; o < hi; o++) {
      const int64_t i0 = o / n1, i1 = o % n1;
      const uint32_t* xb = x + i0 * xs[0] + i1 * xs[1];
      uint32_t* ob = out + i0 * os[0] + i1 * os[1];
      for (int64_t i2 = l2; i2 < h2; i2++) {
        const uint32_t* xr = xb + i2 * xs[2];
        uint32_t* orow = ob + i2 * os[2];
        if (rows) std::memcpy(orow, xr, size_t(n3) * 4);
        else
          for (int64_t i3 = 0; i3 < n3; i3++) orow[i3 * os[3]] = xr[i3 * xs[3]];
      }
    }
  });
}

namespace {

inline float max_nan(float x, float y) {
  if (x != x || y != y) return x + y;
  if (x == y) return std::signbit(x) ? y : x;  // max(-0, +0) = +0
  return x > y ? x : y;
}
inline float min_nan(float x, float y) {
  if (x != x || y != y) return x + y;
  if (x == y) return std::signbit(x) ? x : y;
  return x < y ? x : y;
}

template <int Op>
inline float bin(float x, float y) {
  if (Op == 0) return x + y;
  if (Op == 1) return x - y;
  if (Op == 2) return x * y;
  if (Op == 3) return x / y;
  if (Op == 4) return max_nan(x, y);
  return min_nan(x, y);
}

/** One row, the inner strides made constants so that each case vectorises. */
template <int Op, int AI, int BI>
void bin_row(const float* a, const float* b, float* o, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) o[i] = bin<Op>(a[i * AI], b[i * BI]);
}

template <int Op>
void bin_grid(const float* a, int64_t ai, int64_t ao, const float* b, int64_t bi, int64_t bo, float* out, int64_t o0, int64_t o1, int64_t i0, int64_t i1, int64_t inner) {
  for (int64_t o = o0; o < o1; o++) {
    const float* ar = a + o * ao + i0 * ai;
    const float* br = b + o * bo + i0 * bi;
    float* orow = out + o * inner + i0;
    const int64_t n = i1 - i0;
    if (ai && bi) bin_row<Op, 1, 1>(ar, br, orow, n);
    else if (ai) bin_row<Op, 1, 0>(ar, br, orow, n);
    else if (bi) bin_row<Op, 0, 1>(ar, br, orow, n);
    else bin_row<Op, 0, 0>(ar, br, orow, n);
  }
}

}  // namespace

bool binary2d(int op, const float* a, int64_t ai, int64_t ao, const float* b, int64_t bi, int64_t bo, float* out, int64_t outer, int64_t inner, int threads) {
  if (op < 0 || op > 5) return false;
  const int nt = outer * inner < (1 << 16) ? 1 : threads;
  parallel(nt, [&](int tid, int k) {
    int64_t o0 = 0, o1 = outer, i0 = 0, i1 = inner;
    if (k > 1) {
      if (outer >= k) {
        o0 = outer * tid / k;
        o1 = outer * (tid + 1) / k;
      } else {
        const int64_t chunk = ((inner + k - 1) / k + 15) / 16 * 16;
        i0 = std::min(inner, tid * chunk);
        i1 = std::min(inner, i0 + chunk);
      }
    }
    switch (op) {
      case 0: bin_grid<0>(a, ai, ao, b, bi, bo, out, o0, o1, i0, i1, inner); break;
      case 1: bin_grid<1>(a, ai, ao, b, bi, bo, out, o0, o1, i0, i1, inner); break;
      case 2: bin_grid<2>(a, ai, ao, b, bi, bo, out, o0, o1, i0, i1, inner); break;
      case 3: bin_grid<3>(a, ai, ao, b, bi, bo, out, o0, o1, i0, i1, inner); break;
      case 4: bin_grid<4>(a, ai, ao, b, bi, bo, out, o0, o1, i0, i1, inner); break;
      default: bin_grid<5>(a, ai, ao, b, bi, bo, out, o0, o1, i0, i1, inner); break;
    }
  });
  return true;
}

template <class F>
void map(const float* x, float* out, int64_t n, int threads, F f) {
  const int nt = n < (1 << 17) ? 1 : threads;
  parallel(nt, [&](int tid, int k) {
    for (int64_t i = n * tid / k; i < n * (tid + 1) / k; i++) out[i] = f(x[i]);
  });
}

bool unary(int op, const float* x, float* out, int64_t n, int threads) {
  switch (op) {
    case U_NEG: map(x, out, n, threads, [](float v) { return -v; }); return true;
    case U_SQUARE: map(x, out, n, threads, [](float v) { return v * v; }); return true;
    case U_ABS: map(x, out, n, threads, [](float v) { return std::fabs(v); }); return true;
    case U_RELU: map(x, out, n, threads, [](float v) { return v > 0.f ? v : (v == v ? 0.f : v); }); return true;
    case U_SQRT: map(x, out, n, threads, [](float v) { return std::sqrt(v); }); return true;
    case U_RECIP: map(x, out, n, threads, [](float v) { return float(1.0 / double(v)); }); return true;
    case U_RSQRT: map(x, out, n, threads, [](float v) { return float(1.0 / std::sqrt(double(v))); }); return true;
    case U_EXP: map(x, out, n, threads, [](float v) { return float(std::exp(double(v))); }); return true;
    case U_LOG: map(x, out, n, threads, [](float v) { return float(std::log(double(v))); }); return true;
    case U_TANH: map(x, out, n, threads, [](float v) { return float(std::tanh(double(v))); }); return true;
    case U_SIGMOID: map(x, out, n, threads, [](float v) { return float(1.0 / (1.0 + std::exp(-double(v)))); }); return true;
    case U_SILU: map(x, out, n, threads, [](float v) { return float(double(v) / (1.0 + std::exp(-double(v)))); }); return true;
    case U_GELU:  // the tanh form, by the matmul epilogue's code (bitwise the fused activation)
      if (out != x) std::memcpy(out, x, size_t(n) * 4);
      apply_activation(out, n, ACT_GELU, threads);
      return true;
    default: return false;
  }
}

}  // namespace attn
