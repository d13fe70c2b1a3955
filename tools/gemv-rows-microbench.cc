// One-thread / two-thread loop over y = x W^T for a few rows of x, in the tile shapes tried for
// native/gemm.cc's few-row kernel (docs/serve.md, session 14):
//   g++ -O3 -std=c++17 -pthread tools/gemv-rows-microbench.cc -o /tmp/mb && /tmp/mb 50256 768 8 2   # N K rows threads [prefetch distance in floats, 256]
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <thread>
#include <cmath>
#include <algorithm>
static int64_t PFD = 256;
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
// y[m, n] = sum_k x[m,k] W[n,k]
template <int RW, int RX>
AVX512 void tile(const float* x, int ldx, const float* W, int K, float* y, int N, int n, int m0, bool pf) {
  __m512 s[RW][RX];
  _Pragma("GCC unroll 8") for (int i = 0; i < RW; i++) _Pragma("GCC unroll 8") for (int j = 0; j < RX; j++) s[i][j] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 16) {
    __m512 w[RW];
    _Pragma("GCC unroll 8") for (int i = 0; i < RW; i++) { w[i] = _mm512_loadu_ps(W + int64_t(n + i) * K + k); if (pf) _mm_prefetch((const char*)(W + int64_t(n + i) * K + k + PFD), _MM_HINT_T0); }
    _Pragma("GCC unroll 8") for (int j = 0; j < RX; j++) {
      const __m512 a = _mm512_loadu_ps(x + int64_t(m0 + j) * ldx + k);
      _Pragma("GCC unroll 8") for (int i = 0; i < RW; i++) s[i][j] = _mm512_fmadd_ps(a, w[i], s[i][j]);
    }
  }
  if (false) {
    __m512 c[4];
    for (int j = 0; j < 4; j++) {
      const __m512 a = _mm512_add_ps(_mm512_unpacklo_ps(s[0][j], s[1][j]), _mm512_unpackhi_ps(s[0][j], s[1][j]));
      const __m512 b = _mm512_add_ps(_mm512_unpacklo_ps(s[2][j], s[3][j]), _mm512_unpackhi_ps(s[2][j], s[3][j]));
      c[j] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    const __m512 e01 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 e23 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(e01, e23, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(e01, e23, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm_storeu_ps(y + int64_t(m0 + 0) * N + n, _mm512_extractf32x4_ps(t, 0));
    _mm_storeu_ps(y + int64_t(m0 + 1) * N + n, _mm512_extractf32x4_ps(t, 1));
    _mm_storeu_ps(y + int64_t(m0 + 2) * N + n, _mm512_extractf32x4_ps(t, 2));
    _mm_storeu_ps(y + int64_t(m0 + 3) * N + n, _mm512_extractf32x4_ps(t, 3));
    return;
  }
  _Pragma("GCC unroll 8") for (int i = 0; i < RW; i++) _Pragma("GCC unroll 8") for (int j = 0; j < RX; j++) y[int64_t(m0 + j) * N + n + i] = _mm512_reduce_add_ps(s[i][j]);
}
// variant 0: pass over all n per group of 4 x rows (today's kernel)
AVX512 void v0(const float* x, int M, const float* W, int K, float* y, int N, int n0, int n1) {
  for (int m0 = 0; m0 < M; m0 += 4) for (int n = n0; n < n1; n++) tile<1, 4>(x, K, W, K, y, N, n, m0, false);
}
template <int RW, int RX>
AVX512 void vb(const float* x, int M, const float* W, int K, float* y, int N, int n0, int n1, bool pf) {
  for (int n = n0; n + RW <= n1; n += RW) for (int m0 = 0; m0 < M; m0 += RX) tile<RW, RX>(x, K, W, K, y, N, n, m0, pf);
}
int main(int argc, char** argv) {
  int N = atoi(argv[1]), K = atoi(argv[2]), M = atoi(argv[3]), T = atoi(argv[4]); if (argc > 5) PFD = atoi(argv[5]);
  if (M % 4) { fprintf(stderr, "rows must be a multiple of 4 (the tiles are 4 rows of x)\n"); return 1; }
  std::vector<float> W(size_t(N) * K), x(size_t(M) * K), y(size_t(M) * N), ref(size_t(M) * N);
  for (auto& v : W) v = (rand() / float(RAND_MAX)) - 0.5f;
  for (auto& v : x) v = (rand() / float(RAND_MAX)) - 0.5f;
  auto run = [&](int which) {
    auto body = [&](int t) {
      int chunk = (N / T + 23) / 24 * 24; int n0 = t * chunk, n1 = std::min(N, n0 + chunk);
      switch (which) {
        case 0: v0(x.data(), M, W.data(), K, y.data(), N, n0, n1); break;
        case 1: vb<1, 4>(x.data(), M, W.data(), K, y.data(), N, n0, n1, false); break;
        case 2: vb<2, 4>(x.data(), M, W.data(), K, y.data(), N, n0, n1, false); break;
        case 3: vb<4, 4>(x.data(), M, W.data(), K, y.data(), N, n0, n1, false); break;
        case 4: vb<2, 8>(x.data(), M, W.data(), K, y.data(), N, n0, n1, false); break;
        case 5: vb<4, 4>(x.data(), M, W.data(), K, y.data(), N, n0, n1, true); break;
        case 6: vb<2, 8>(x.data(), M, W.data(), K, y.data(), N, n0, n1, true); break;
        case 7: vb<8, 1>(x.data(), M, W.data(), K, y.data(), N, n0, n1, false); break;
        case 8: vb<4, 2>(x.data(), M, W.data(), K, y.data(), N, n0, n1, false); break;
        case 9: vb<3, 8>(x.data(), M, W.data(), K, y.data(), N, n0, n1, false); break;
      }
    };
    std::vector<double> ts;
    for (int r = 0; r < 40; r++) {
      auto t0 = std::chrono::steady_clock::now();
      std::vector<std::thread> th; for (int t = 1; t < T; t++) th.emplace_back(body, t); body(0); for (auto& h : th) h.join();
      ts.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ts.begin(), ts.end());
    return ts[0];
  };
  run(0); ref = y;
  const char* names[] = {"v0 1Wx4x passes", "1Wx4x blocked", "2Wx4x", "4Wx4x", "2Wx8x", "4Wx4x pf", "2Wx8x pf", "8Wx1x", "4Wx2x", "3Wx8x"};
  for (int rep = 0; rep < 2; rep++)
  for (int w = 0; w < 10; w++) {
    if ((w == 4 || w == 6) && M % 8) continue;
    if (w == 9 && M % 8) continue;
    if (w < 7 && w != 0 && M % 4) continue;
    double t = run(w);
    double err = 0; for (size_t i = 0; i < y.size(); i++) err = std::max(err, double(std::fabs(y[i] - ref[i])));
    printf("%-18s M=%d T=%d %.2f ms  %.1f GB/s  err %.1e\n", names[w], M, T, t, double(N) * K * 4 / t / 1e6, err);
  }
}
