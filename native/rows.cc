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
