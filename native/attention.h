// Fused attention over (B, H, T, D) float32 queries and (B, Hkv, T, D) keys and values: causal,
// key-padding and sparse masks, grouped-query heads.
#pragma once
#include <cstdint>

namespace attn {

enum SparseKind { SP_NONE = 0, SP_WINDOW = 1, SP_STRIDED = 2, SP_FIXED = 3 };

struct AttnArgs {
  const float *q, *k, *v;
  float *out, *lse;  // forward writes them; backward reads them
  const int32_t* key_mask;  // (B, Tk), 0 = padding; null: none
  int B, H, Tq, Tk, D;
  int Hkv;  // key/value heads (grouped-query attention): q head h reads kv head h / (H / Hkv)
  float scale;
  bool causal;
  int sp_kind, sp_a, sp_b;  // window | stride | block, and the fixed pattern's summary
  const float* gout;  // backward only
  float *gq, *gk, *gv;
};

void attention_forward(const AttnArgs& p, int threads);
void attention_backward(const AttnArgs& p, int threads);

}  // namespace attn
