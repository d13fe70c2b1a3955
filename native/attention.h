// Fused attention over (B, H, T, D) float32 queries and (B, Hkv, T, D) keys and values: causal,
// key-padding and sparse masks, grouped-query heads.
#pragma once
#include <cstdint>

namespace attn {

enum SparseKind { SP_NONE = 0, SP_WINDOW = 1, SP_STRIDED = 2, SP_FIXED = 3 };

/** Where (b, h, t, 0) of a (B, H, T, D) operand is: b * b_ + h * h_ + t * t_ (the last dim contiguous). */
struct View {
  int64_t b_, h_, t_;
};

struct AttnArgs {
  const float *q, *k, *v;
  float *out, *lse;  // forward writes them; backward reads them
  const int32_t* key_mask;  // (B, Tk), 0 = padding; null: none
  int B, H, Tq, Tk, D;
  int Hkv;  // key/value heads (grouped-query attention): q head h reads kv head h / (H / Hkv)
  View qv, kv, vv, ov;  // layouts of q, k, v and out (strided views, e.g. heads of a fused qkv); gout, gq, gk, gv are contiguous
  float scale;
  bool causal;
  int sp_kind, sp_a, sp_b;  // window | stride | block, and the fixed pattern's summary
  const float* gout;  // backward only
  float *gq, *gk, *gv;
};

void attention_forward(const AttnArgs& p, int threads);
void attention_backward(const AttnArgs& p, int threads);

}  // namespace attn
