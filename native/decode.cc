// One decode step of a Llama-style decoder (batch 1, one token) in a single call: the layers'
// kernels are the ones JavaScript calls one by one (gemm / quant_matmul, rms_norm, rope,
// attention, swiglu), in the same order on the same buffers, so the logits are the same; what
// goes away is the per-op JavaScript (dispatch, tensor bookkeeping, allocation), which costs
// more than the arithmetic on small models.
#include "decode.h"

#include <cmath>
#include <cstring>

#include "attention.h"
#include "fused.h"
#include "gemm.h"
#include "quant.h"

namespace attn {

namespace {

struct Matrix {
  int kind;  // 0 float32, 1 int8, 2 int4, 3 int4z
  const uint8_t* w;
  const float* scales;
  const uint8_t* zeros;
  const float* bias;
  int64_t N, K;
};

struct Reader {
  const double* p;
  uint8_t* heap;
  int64_t num() { return int64_t(*p++); }
  double real() { return *p++; }
  float* f32() {
    const int64_t o = num();
    return o ? reinterpret_cast<float*>(heap + o) : nullptr;
  }
  uint8_t* bytes() {
    const int64_t o = num();
    return o ? heap + o : nullptr;
  }
  Matrix matrix() {
    Matrix m;
    m.kind = int(num());
    m.w = bytes();
    m.scales = f32();
    m.zeros = bytes();
    m.bias = f32();
    m.N = num();
    m.K = num();
    return m;
  }
};

/** out (N) = act(W x (+ bias)), as the JavaScript linear() of one row calls it. */
void project(const Matrix& m, const float* x, float* out, int threads, int act = ACT_NONE) {
  if (m.kind == 0) {
    GemmArgs g;
    g.a = x; g.a_batch = m.K; g.lda = m.K; g.trans_a = false;
    g.b = m.w; g.b_batch = 0; g.ldb = m.K; g.trans_b = true; g.b_bf16 = false;
    g.out = out; g.batch = 1; g.M = 1; g.N = int(m.N); g.K = int(m.K);
    g.bias = m.bias; g.act = act; g.accumulate = false;
    gemm(g, threads);
    return;
  }
  QuantMatmulArgs q;
  q.format = m.kind - 1;
  q.data = m.w; q.scales = m.scales; q.zeros = m.zeros;
  q.N = m.N; q.K = m.K; q.x = x; q.M = 1; q.bias = m.bias; q.act = act; q.out = out;
  quant_matmul(q, threads);
}

/** Row `n` of a matrix, dequantized as dequantizeRows does (one rounding of scale × level). */
void row_of(const Matrix& m, int64_t n, float* out) {
  const int64_t K = m.K;
  if (m.kind == 0) {
    std::memcpy(out, reinterpret_cast<const float*>(m.w) + n * K, size_t(K) * sizeof(float));
  } else if (m.kind == 1) {
    const int8_t* q = reinterpret_cast<const int8_t*>(m.w) + n * K;
    const float s = m.scales[n];
    for (int64_t k = 0; k < K; k++) out[k] = s * float(q[k]);
  } else {
    // int4 / int4z: groups of 32 in 16 bytes, element j in the low nibble of byte j, j + 16 in the high.
    for (int64_t g = 0; g < K / 32; g++) {
      const int64_t gi = n * (K / 32) + g;
      const uint8_t* b = m.w + gi * 16;
      const float s = m.scales[gi];
      const int z = m.zeros ? int(m.zeros[gi]) : 8;
      for (int j = 0; j < 16; j++) {
        out[g * 32 + j] = s * float(int(b[j] & 15) - z);
        out[g * 32 + 16 + j] = s * float(int(b[j] >> 4) - z);
      }
    }
  }
}

inline void add_into(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = x[i] + y[i];
}

/** The new token's attention over the cache (1, Hkv, cap, D) at position pos, its key and value
 *  written there first; q (H·D) contiguous. */
void attend(const float* q, const float* k, const float* v, float* kbuf, float* vbuf, int64_t cap, int64_t pos, int64_t H, int64_t Hkv,
            int64_t D, int64_t window, float* att, float* lse, int threads) {
  for (int64_t j = 0; j < Hkv; j++) {
    std::memcpy(kbuf + (j * cap + pos) * D, k + j * D, size_t(D) * sizeof(float));
    std::memcpy(vbuf + (j * cap + pos) * D, v + j * D, size_t(D) * sizeof(float));
  }
  AttnArgs a{};
  a.q = q; a.k = kbuf; a.v = vbuf; a.out = att; a.lse = lse; a.key_mask = nullptr;
  a.B = 1; a.H = int(H); a.Tq = 1; a.Tk = int(pos + 1); a.D = int(D); a.Hkv = int(Hkv);
  a.qv = View{H * D, D, D};
  a.kv = View{Hkv * cap * D, cap * D, D};
  a.vv = a.kv;
  a.ov = View{H * D, D, D};
  a.scale = float(1.0 / std::sqrt(double(D))); a.causal = true;
  a.sp_kind = window > 0 ? SP_WINDOW : SP_NONE; a.sp_a = int(window); a.sp_b = 0;
  a.gout = nullptr; a.gq = a.gk = a.gv = nullptr;
  attention_forward(a, threads);
}

/** LayerNorm (b may be null) or RMSNorm (rms) of one row. */
void norm_row(bool rms, const float* x, const float* w, const float* b, int64_t C, float eps, float* out, float* mean, float* rstd, int threads) {
  if (rms) rms_norm(x, w, 1, C, eps, out, rstd, threads);
  else layer_norm(x, w, b, 1, C, eps, out, mean, rstd, threads);
}

/** attn's GPT (kind 1 plans): token + position embedding (a table row, or RoPE on q and k),
 *  pre-norm blocks with a fused qkv projection, GELU or ReLU MLP, the final norm and the head. */
bool decode_step_gpt(Reader& r, int64_t token, int64_t pos, float* logits, int threads) {
  const int64_t L = r.num(), C = r.num(), H = r.num(), Hkv = r.num(), D = r.num(), I = r.num(), V = r.num();
  const float eps = float(r.real());
  const bool rms = r.num() != 0;
  const int act = int(r.num());
  const int64_t rd = r.num();  // rotary features (0: a position table)
  const Matrix wte = r.matrix();
  const Matrix wpe = r.matrix();  // kind -1: none
  const float* cos = r.f32();
  const float* sin = r.f32();
  const float* lnf_w = r.f32();
  const float* lnf_b = r.f32();
  const Matrix head = r.matrix();
  float* x = r.f32();
  float* h = r.f32();
  float* qkv = r.f32();
  float* qr = r.f32();
  float* kr = r.f32();
  float* att = r.f32();
  float* lse = r.f32();
  float* fc = r.f32();
  float* o = r.f32();
  float* mean = r.f32();
  float* rstd = r.f32();
  if (token < 0 || token >= V) return false;
  row_of(wte, token, x);
  if (wpe.kind >= 0) {
    row_of(wpe, pos, o);
    add_into(x, o, C);
  }
  for (int64_t l = 0; l < L; l++) {
    const float* ln1_w = r.f32();
    const float* ln1_b = r.f32();
    const float* ln2_w = r.f32();
    const float* ln2_b = r.f32();
    float* kbuf = r.f32();
    float* vbuf = r.f32();
    const int64_t cap = r.num();
    const Matrix c_attn = r.matrix(), attn_proj = r.matrix(), c_fc = r.matrix(), mlp_proj = r.matrix();
    norm_row(rms, x, ln1_w, ln1_b, C, eps, h, mean, rstd, threads);
    project(c_attn, h, qkv, threads);
    const float* q = qkv;
    const float* k = qkv + C;
    const float* v = qkv + C + Hkv * D;
    if (rd > 0) {
      rope(q, cos, sin, qr, H, H, 1, D, rd, pos, 0, threads);
      rope(k, cos, sin, kr, Hkv, Hkv, 1, D, rd, pos, 0, threads);
      q = qr;
      k = kr;
    }
    attend(q, k, v, kbuf, vbuf, cap, pos, H, Hkv, D, 0, att, lse, threads);
    project(attn_proj, att, o, threads);
    add_into(x, o, C);
    norm_row(rms, x, ln2_w, ln2_b, C, eps, h, mean, rstd, threads);
    project(c_fc, h, fc, threads, act);
    project(mlp_proj, fc, o, threads);
    add_into(x, o, C);
  }
  norm_row(rms, x, lnf_w, lnf_b, C, eps, h, mean, rstd, threads);
  project(head, h, logits, threads);
  return true;
}

}  // namespace

bool decode_step(uint8_t* heap, const double* plan, int64_t token, int64_t pos, float* logits, int threads) {
  Reader r{plan, heap};
  if (r.num() == 1) return decode_step_gpt(r, token, pos, logits, threads);
  const int64_t L = r.num(), C = r.num(), H = r.num(), Hkv = r.num(), D = r.num(), rd = r.num(), I = r.num(), V = r.num();
  const float eps = float(r.real());
  const Matrix embed = r.matrix();
  const float* final_norm = r.f32();
  const Matrix head = r.matrix();
  const float* cos = r.f32();
  const float* sin = r.f32();
  float* x = r.f32();
  float* h = r.f32();
  float* q = r.f32();
  float* qr = r.f32();
  float* k = r.f32();
  float* kr = r.f32();
  float* v = r.f32();
  float* att = r.f32();
  float* lse = r.f32();
  float* gate = r.f32();
  float* up = r.f32();
  float* act = r.f32();
  float* o = r.f32();
  float* rstd = r.f32();
  if (token < 0 || token >= V) return false;
  row_of(embed, token, x);
  for (int64_t l = 0; l < L; l++) {
    const float* in_norm = r.f32();
    const float* post_norm = r.f32();
    const float* q_norm = r.f32();
    const float* k_norm = r.f32();
    const int64_t window = r.num();
    float* kbuf = r.f32();
    float* vbuf = r.f32();
    const int64_t cap = r.num();
    const Matrix mq = r.matrix(), mk = r.matrix(), mv = r.matrix(), mo = r.matrix(), mg = r.matrix(), mu = r.matrix(), md = r.matrix();
    // attention: x + o_proj(attention(rope(q), cache + rope(k), cache + v))
    rms_norm(x, in_norm, 1, C, eps, h, rstd, threads);
    project(mq, h, q, threads);
    project(mk, h, k, threads);
    project(mv, h, v, threads);
    if (q_norm) rms_norm(q, q_norm, H, D, eps, q, rstd, threads);
    if (k_norm) rms_norm(k, k_norm, Hkv, D, eps, k, rstd, threads);
    rope(q, cos, sin, qr, H, H, 1, D, rd, pos, 0, threads);
    rope(k, cos, sin, kr, Hkv, Hkv, 1, D, rd, pos, 0, threads);
    attend(qr, kr, v, kbuf, vbuf, cap, pos, H, Hkv, D, window, att, lse, threads);
    project(mo, att, o, threads);
    add_into(x, o, C);
    // MLP: x + down(silu(gate(h)) * up(h)), h = post_norm(x)
    rms_norm(x, post_norm, 1, C, eps, h, rstd, threads);
    project(mg, h, gate, threads);
    project(mu, h, up, threads);
    swiglu(gate, up, act, I, threads);
    project(md, act, o, threads);
    add_into(x, o, C);
  }
  rms_norm(x, final_norm, 1, C, eps, h, rstd, threads);
  project(head, h, logits, threads);
  return true;
}

}  // namespace attn
