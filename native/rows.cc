// Reductions and element-wise maps over contiguous float32 arrays: the ops a training step calls
// many times on small tensors (gradient norms, losses, activations), where a JavaScript loop or a
// worker round trip costs more than the arithmetic. Sums accumulate in double, as the reference does.
#include "rows.h"

#include <algorithm>
#include <cmath>

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
    default: return false;
  }
}

}  // namespace attn
