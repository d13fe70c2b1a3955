// Fused attention, forward and backward, tiled (64 queries x 64 keys) with an online softmax:
// the (T, T) score matrix never exists, memory is O(T) per head. The same plain C++ body is
// compiled once per instruction set (inlined into functions with their own target attributes),
// and the compiler vectorises its inner loops, which all run over a contiguous axis.
// Backward is two passes: per key block (dK, dV, summed over a grouped head's queries) and per
// query block (dQ), so no two threads ever add into the same row.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gemm.h"
#include "pool.h"
#include "vmath.h"

namespace attn {
namespace {

constexpr int BQ = 64, BK = 64;

INLINE int floordiv(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/** Whether query i of batch b may see key j (see AttentionSparsity in src/backend/backend.ts). */
INLINE bool visible(const AttnArgs& p, int b, int i, int j) {
  const int ii = i + (p.Tk - p.Tq);
  if (p.causal && j > ii) return false;
  if (p.sp_kind != SP_NONE) {
    const int d = ii - j;
    if (p.sp_kind == SP_WINDOW && std::abs(d) >= p.sp_a) return false;
    if (p.sp_kind == SP_STRIDED && std::abs(d) >= p.sp_a && d % p.sp_a != 0) return false;
    if (p.sp_kind == SP_FIXED && floordiv(j, p.sp_a) != floordiv(ii, p.sp_a) && j % p.sp_a < p.sp_a - p.sp_b) return false;
  }
  return !p.key_mask || p.key_mask[int64_t(b) * p.Tk + j] != 0;
}

/** Keys [begin, end) may be visible to queries [i0, i1): causal and a window cut the rest. */
INLINE int key_end(const AttnArgs& p, int i1) {
  const int last = i1 - 1 + (p.Tk - p.Tq);
  int end = p.causal ? last + 1 : p.Tk;
  if (p.sp_kind == SP_WINDOW) end = std::min(end, last + p.sp_a);
  return std::min(p.Tk, std::max(0, end));
}
INLINE int key_begin(const AttnArgs& p, int i0) {
  return p.sp_kind == SP_WINDOW ? std::max(0, i0 + (p.Tk - p.Tq) - p.sp_a + 1) / BK * BK : 0;
}

/** Queries [begin, end) may see keys [j0, j1). */
INLINE int query_begin(const AttnArgs& p, int j0) {
  int b = p.causal ? j0 - (p.Tk - p.Tq) : 0;
  if (p.sp_kind == SP_WINDOW) b = std::max(b, j0 - (p.Tk - p.Tq) - p.sp_a + 1);
  return std::max(0, b);
}
INLINE int query_end(const AttnArgs& p, int j1) {
  return p.sp_kind == SP_WINDOW ? std::min(p.Tq, std::max(0, j1 - 1 - (p.Tk - p.Tq) + p.sp_a)) : p.Tq;
}

/** The key/value head (b * Hkv + hk) that query head bh = b * H + h reads. */
INLINE int kv_head(const AttnArgs& p, int bh) {
  const int group = p.H / p.Hkv;
  return (bh / p.H) * p.Hkv + (bh % p.H) / group;
}

/** Row 0 of head bh = b * heads + h of an operand laid out as v. */
INLINE const float* head_of(const float* base, const View& v, int bh, int heads) {
  return base + int64_t(bh / heads) * v.b_ + int64_t(bh % heads) * v.h_;
}

/** out (M x N, contiguous) (+)= A . B on this thread, with the GEMM's packed microkernel. */
INLINE void mm(const float* a, int64_t lda, bool ta, const float* b, int64_t ldb, bool tb, float* out, int M, int N, int K, bool acc) {
  GemmArgs g{};
  g.a = a;
  g.lda = lda;
  g.trans_a = ta;
  g.b = b;
  g.ldb = ldb;
  g.trans_b = tb;
  g.out = out;
  g.batch = 1;
  g.M = M;
  g.N = N;
  g.K = K;
  g.act = ACT_NONE;
  g.accumulate = acc;
  gemm_serial(g);
}

/** s (bq x bk) = scale Q_blk K_blk^T, -inf where not visible. */
INLINE void scores(const AttnArgs& p, int b, const float* q, int i0, int bq, const float* k, int j0, int bk, float* s) {
  const int D = p.D;
  mm(q + int64_t(i0) * p.qv.t_, p.qv.t_, false, k + int64_t(j0) * p.kv.t_, p.kv.t_, true, s, bq, bk, D, false);
  for (int r = 0; r < bq; r++) {
    float* sr = s + r * bk;
    for (int c = 0; c < bk; c++) sr[c] *= p.scale;
    if (!p.key_mask && (p.sp_kind == SP_NONE || p.sp_kind == SP_WINDOW)) {
      // Causal and/or a window: visible keys are one interval [lo, hi] of the block, applied as
      // a select the compiler vectorises.
      const int at = i0 + r + (p.Tk - p.Tq) - j0;  // the query's position in block coordinates
      int hi = p.causal ? at : bk;
      int lo = -1;
      if (p.sp_kind == SP_WINDOW) {
        hi = std::min(hi, at + p.sp_a - 1);
        lo = at - p.sp_a + 1;
      }
      for (int c = 0; c < bk; c++) sr[c] = (c > hi || c < lo) ? NEG_INF : sr[c];
    } else {
      for (int c = 0; c < bk; c++)
        if (!visible(p, b, i0 + r, j0 + c)) sr[c] = NEG_INF;
    }
  }
}

struct Scratch {
  std::vector<float> buf;
  float* get(size_t n) {
    if (buf.size() < n) buf.assign(n, 0.f);
    return buf.data();
  }
};

INLINE void forward_block(const AttnArgs& p, int bh, int i0) {
  thread_local Scratch scratch;
  const int D = p.D, b = bh / p.H;
  const int bq = std::min(BQ, p.Tq - i0);
  float* s = scratch.get(size_t(BQ) * BK + BQ * D + 2 * BQ);
  float* acc = s + BQ * BK;
  float* m = acc + BQ * D;
  float* l = m + BQ;
  const float* q = head_of(p.q, p.qv, bh, p.H);
  const float* k = head_of(p.k, p.kv, kv_head(p, bh), p.Hkv);
  const float* v = head_of(p.v, p.vv, kv_head(p, bh), p.Hkv);
  for (int r = 0; r < bq; r++) {
    m[r] = NEG_INF;
    l[r] = 0.f;
  }
  for (int i = 0; i < bq * D; i++) acc[i] = 0.f;
  const int jend = key_end(p, i0 + bq);
  for (int j0 = key_begin(p, i0); j0 < jend; j0 += BK) {
    const int bk = std::min(BK, jend - j0);
    scores(p, b, q, i0, bq, k, j0, bk, s);
    for (int r = 0; r < bq; r++) {
      float* sr = s + r * bk;
      float mx = NEG_INF;
#pragma omp simd reduction(max : mx)
      for (int c = 0; c < bk; c++) mx = std::max(mx, sr[c]);
      if (mx == NEG_INF) {  // nothing visible in this block
        for (int c = 0; c < bk; c++) sr[c] = 0.f;
        continue;
      }
      const float mnew = std::max(m[r], mx);
      const float corr = vexp(m[r] - mnew);
      for (int c = 0; c < bk; c++) sr[c] = vexp(sr[c] - mnew);
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int c = 0; c < bk; c++) sum += sr[c];
      l[r] = l[r] * corr + sum;
      m[r] = mnew;
      float* ar = acc + r * D;
      for (int d = 0; d < D; d++) ar[d] *= corr;
    }
    mm(s, bk, false, v + int64_t(j0) * p.vv.t_, p.vv.t_, false, acc, bq, D, bk, true);  // acc += P V
  }
  float* out = const_cast<float*>(head_of(p.out, p.ov, bh, p.H)) + int64_t(i0) * p.ov.t_;
  float* lse = p.lse + int64_t(bh) * p.Tq + i0;
  for (int r = 0; r < bq; r++) {
    // A row that sees no key: zero output, and lse -inf marks it for the backward pass.
    const float inv = m[r] == NEG_INF ? 0.f : 1.f / l[r];
    for (int d = 0; d < D; d++) out[r * p.ov.t_ + d] = acc[r * D + d] * inv;
    lse[r] = m[r] == NEG_INF ? NEG_INF : m[r] + std::log(l[r]);
  }
}

/**
 * One query row against its keys (a decode step, Tq = 1): the scores are direct dot products over
 * the visible keys, without the 64 x 64 tiles' packing, which costs more than the work at one row.
 */
INLINE void forward_row(const AttnArgs& p, int bh) {
  thread_local Scratch scratch;
  const int D = p.D, b = bh / p.H;
  const int j0 = key_begin(p, 0), j1 = key_end(p, 1);
  float* acc = scratch.get(size_t(D) + std::max(0, j1 - j0));
  float* s = acc + D;
  const float* q = head_of(p.q, p.qv, bh, p.H);
  const float* k = head_of(p.k, p.kv, kv_head(p, bh), p.Hkv);
  const float* v = head_of(p.v, p.vv, kv_head(p, bh), p.Hkv);
  // The cache comes from memory (the weights' matmuls have just streamed through the caches),
  // and a head's rows are too short a run for the hardware prefetcher to ramp up: fetch the key
  // rows a few ahead, and the value rows that the second loop will read.
  constexpr int PF = 6;
  const int64_t kb = int64_t(D) * 4;  // bytes of a row
  auto fetch = [&](const float* base, int64_t stride, int j) {
    const char* r = reinterpret_cast<const char*>(base + int64_t(j) * stride);
    for (int64_t o = 0; o < kb; o += 64) __builtin_prefetch(r + o, 0, 3);
  };
  for (int j = j0; j < std::min(j1, j0 + PF); j++) fetch(k, p.kv.t_, j);
  float mx = NEG_INF;
  for (int j = j0; j < j1; j++) {
    if (j + PF < j1) fetch(k, p.kv.t_, j + PF);
    fetch(v, p.vv.t_, j);
    float sc = NEG_INF;
    if (visible(p, b, 0, j)) {
      const float* kr = k + int64_t(j) * p.kv.t_;
      // 16 partial sums the compiler keeps in one vector register (an `omp simd` reduction
      // came out scalar here)
      float part[16] = {};
      int c = 0;
      for (; c + 16 <= D; c += 16)
        for (int u = 0; u < 16; u++) part[u] += q[c + u] * kr[c + u];
      float dot = 0.f;
      for (int u = 0; u < 16; u++) dot += part[u];
      for (; c < D; c++) dot += q[c] * kr[c];
      sc = dot * p.scale;
    }
    s[j - j0] = sc;
    mx = std::max(mx, sc);
  }
  float* out = const_cast<float*>(head_of(p.out, p.ov, bh, p.H));
  float* lse = p.lse + bh;
  if (mx == NEG_INF) {  // no visible key: zero output, lse -inf (as the tiled path)
    for (int c = 0; c < D; c++) out[c] = 0.f;
    *lse = NEG_INF;
    return;
  }
  float sum = 0.f;
  for (int c = 0; c < D; c++) acc[c] = 0.f;
  for (int j = j0; j < j1; j++) {
    const float w = vexp(s[j - j0] - mx);
    if (w == 0.f) continue;
    sum += w;
    const float* vr = v + int64_t(j) * p.vv.t_;
    for (int c = 0; c < D; c++) acc[c] += w * vr[c];
  }
  const float inv = 1.f / sum;
  for (int c = 0; c < D; c++) out[c] = acc[c] * inv;
  *lse = mx + std::log(sum);
}

/** s becomes P = exp(s - lse), and ds = scale P (dP - delta) with dP = dO V^T (bq x bk each). */
INLINE void probs_and_ds(const AttnArgs& p, int bh, int i0, int bq, int j0, int bk, const float* go, const float* v, const float* delta, float* s, float* ds) {
  const int D = p.D;
  const float* lse = p.lse + int64_t(bh) * p.Tq;
  mm(go + int64_t(i0) * D, D, false, v + int64_t(j0) * p.vv.t_, p.vv.t_, true, ds, bq, bk, D, false);
  for (int r = 0; r < bq; r++) {
    float* sr = s + r * bk;
    float* dr = ds + r * bk;
    const float lr = lse[i0 + r];
    for (int c = 0; c < bk; c++) sr[c] = lr == NEG_INF ? 0.f : vexp(sr[c] - lr);
    const float dl = delta[i0 + r];
    for (int c = 0; c < bk; c++) dr[c] = p.scale * sr[c] * (dr[c] - dl);
  }
}

/** dK, dV of key block j0 of kv head bkv = b * Hkv + hk: summed over the query heads of its group. */
INLINE void backward_kv_block(const AttnArgs& p, int bkv, int j0, const float* delta) {
  thread_local Scratch scratch;
  const int D = p.D, b = bkv / p.Hkv, group = p.H / p.Hkv;
  const int bk = std::min(BK, p.Tk - j0);
  float* s = scratch.get(size_t(2) * BQ * BK + 2 * BK * D);
  float* ds = s + BQ * BK;
  float* gk = ds + BQ * BK;
  float* gv = gk + BK * D;
  const int64_t ko = int64_t(bkv) * p.Tk * D;  // in the contiguous gk, gv
  const float* k = head_of(p.k, p.kv, bkv, p.Hkv);
  const float* v = head_of(p.v, p.vv, bkv, p.Hkv);
  for (int i = 0; i < bk * D; i++) gk[i] = gv[i] = 0.f;
  const int iend = query_end(p, j0 + bk);
  for (int g = 0; g < group; g++) {
    const int bh = b * p.H + (bkv % p.Hkv) * group + g;
    const float* q = head_of(p.q, p.qv, bh, p.H);
    const float* go = p.gout + int64_t(bh) * p.Tq * D;
    const float* dl = delta + int64_t(bh) * p.Tq;
    for (int i0 = query_begin(p, j0) / BQ * BQ; i0 < iend; i0 += BQ) {
      const int bq = std::min(BQ, p.Tq - i0);
      scores(p, b, q, i0, bq, k, j0, bk, s);
      probs_and_ds(p, bh, i0, bq, j0, bk, go, v, dl, s, ds);
      mm(s, bk, true, go + int64_t(i0) * D, D, false, gv, bk, D, bq, true);   // gv += P^T dO
      mm(ds, bk, true, q + int64_t(i0) * p.qv.t_, p.qv.t_, false, gk, bk, D, bq, true);   // gk += dS^T Q (scaled)
    }
  }
  std::memcpy(p.gk + ko + int64_t(j0) * D, gk, sizeof(float) * bk * D);
  std::memcpy(p.gv + ko + int64_t(j0) * D, gv, sizeof(float) * bk * D);
}

INLINE void backward_q_block(const AttnArgs& p, int bh, int i0, const float* delta) {
  thread_local Scratch scratch;
  const int D = p.D, b = bh / p.H;
  const int bq = std::min(BQ, p.Tq - i0);
  float* s = scratch.get(size_t(2) * BQ * BK + BQ * D);
  float* ds = s + BQ * BK;
  float* gq = ds + BQ * BK;
  const int64_t qo = int64_t(bh) * p.Tq * D;  // in the contiguous gout, gq
  const float* q = head_of(p.q, p.qv, bh, p.H);
  const float* k = head_of(p.k, p.kv, kv_head(p, bh), p.Hkv);
  const float* v = head_of(p.v, p.vv, kv_head(p, bh), p.Hkv);
  const float* go = p.gout + qo;
  for (int i = 0; i < bq * D; i++) gq[i] = 0.f;
  const int jend = key_end(p, i0 + bq);
  for (int j0 = key_begin(p, i0); j0 < jend; j0 += BK) {
    const int bk = std::min(BK, jend - j0);
    scores(p, b, q, i0, bq, k, j0, bk, s);
    probs_and_ds(p, bh, i0, bq, j0, bk, go, v, delta, s, ds);
    mm(ds, bk, false, k + int64_t(j0) * p.kv.t_, p.kv.t_, false, gq, bq, D, bk, true);  // gq += dS K (scaled)
  }
  std::memcpy(p.gq + qo + int64_t(i0) * D, gq, sizeof(float) * bq * D);
}

/** delta_i = gout_i . out_i, the row sums the softmax backward subtracts. */
INLINE void deltas(const AttnArgs& p, int row0, int row1, float* delta) {
  for (int r = row0; r < row1; r++) {
    const float* g = p.gout + int64_t(r) * p.D;
    const float* o = head_of(p.out, p.ov, r / p.Tq, p.H) + int64_t(r % p.Tq) * p.ov.t_;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < p.D; d++) s += g[d] * o[d];
    delta[r] = s;
  }
}

struct Set {
  void (*fwd)(const AttnArgs&, int, int);
  void (*row)(const AttnArgs&, int);
  void (*bkv)(const AttnArgs&, int, int, const float*);
  void (*bq)(const AttnArgs&, int, int, const float*);
};

#define DEFINE_SET(NAME, TARGET)                                                                                  \
  TARGET void fwd_##NAME(const AttnArgs& p, int bh, int i0) { forward_block(p, bh, i0); }                        \
  TARGET void row_##NAME(const AttnArgs& p, int bh) { forward_row(p, bh); }                                        \
  TARGET void bkv_##NAME(const AttnArgs& p, int bh, int j0, const float* dl) { backward_kv_block(p, bh, j0, dl); } \
  TARGET void bq_##NAME(const AttnArgs& p, int bh, int i0, const float* dl) { backward_q_block(p, bh, i0, dl); }

DEFINE_SET(portable, )
DEFINE_SET(avx2, __attribute__((target("avx2,fma"))))
DEFINE_SET(avx512, __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))))

const Set SETS[3] = {{fwd_portable, row_portable, bkv_portable, bq_portable}, {fwd_avx2, row_avx2, bkv_avx2, bq_avx2}, {fwd_avx512, row_avx512, bkv_avx512, bq_avx512}};

/** Runs task(item) for item in [0, n) over the pool, in contiguous shares. */
template <class F>
void for_items(int n, int threads, F task) {
  parallel(std::min(threads, n), [&](int tid, int nt) {
    const int lo = int(int64_t(n) * tid / nt), hi = int(int64_t(n) * (tid + 1) / nt);
    for (int i = lo; i < hi; i++) task(i);
  });
}

}  // namespace

void attention_forward(const AttnArgs& p, int threads) {
  const Set& set = SETS[std::min(int(current_isa()), int(Isa::avx512))];
  const int BHn = p.B * p.H, qb = (p.Tq + BQ - 1) / BQ;
  if (p.Tq == 1) {
    // A decode step's attention is small: below about 2^19 multiply-adds per operand (8 rows of
    // 12 heads of 64 over 85 positions) waking a sleeping worker costs more than it saves (about
    // 150 us on this VM against 36 us for one row of GPT-2's 12 heads on one thread).
    const int64_t work = int64_t(BHn) * p.Tk * p.D;
    return for_items(BHn, work < (int64_t(1) << 19) ? 1 : threads, [&](int bh) { set.row(p, bh); });
  }
  for_items(BHn * qb, threads, [&](int item) { set.fwd(p, item / qb, (item % qb) * BQ); });
}

void attention_backward(const AttnArgs& p, int threads) {
  const Set& set = SETS[std::min(int(current_isa()), int(Isa::avx512))];
  const int BHn = p.B * p.H, qb = (p.Tq + BQ - 1) / BQ, kb = (p.Tk + BK - 1) / BK;
  std::vector<float> delta(size_t(BHn) * p.Tq);
  const int rows = BHn * p.Tq;
  for_items(std::max(1, std::min(rows / 256, 64)), threads, [&](int part) {
    const int parts = std::max(1, std::min(rows / 256, 64));
    deltas(p, int(int64_t(rows) * part / parts), int(int64_t(rows) * (part + 1) / parts), delta.data());
  });
  const int BHkv = p.B * p.Hkv;
  for_items(BHkv * kb, threads, [&](int item) { set.bkv(p, item / kb, (item % kb) * BK, delta.data()); });
  for_items(BHn * qb, threads, [&](int item) {
    const int bh = item / qb;
    set.bq(p, bh, (item % qb) * BQ, delta.data() + int64_t(bh) * p.Tq);
  });
}

}  // namespace attn
