// Fused row kernels of a Transformer step over contiguous float32 rows: LayerNorm and RMSNorm
// (forward, backward), softmax and log-softmax (forward, backward), cross-entropy with label
// smoothing (forward, backward), and the AdamW update. One pass (or two) over each row, rows
// shared among the pool's threads; semantics as the reference backend's (src/backend/ref/kernels.ts).
#pragma once
#include <cstdint>

namespace attn {

/** mean, rstd per row; w, b may be null. */
void layer_norm(const float* x, const float* w, const float* b, int64_t rows, int64_t n, float eps, float* out, float* mean, float* rstd, int threads);
/** gx written; gw, gb (may be null) written as sums over rows. */
void layer_norm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* gy, int64_t rows, int64_t n,
                         float* gx, float* gw, float* gb, int threads);
void rms_norm(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* out, float* rstd, int threads);
void rms_norm_backward(const float* x, const float* w, const float* rstd, const float* gy, int64_t rows, int64_t n, float* gx, float* gw, int threads);
void softmax(const float* x, int64_t rows, int64_t n, bool log, float* out, int threads);
void softmax_backward(const float* y, const float* gy, int64_t rows, int64_t n, bool log, float* gx, int threads);
/** Both return the position of the first target outside [0, V) that is not ignore_index
 *  (nothing written), or -1. */
int64_t cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index, float smoothing, float* losses, float* lse, int threads);
int64_t cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse, const float* scale, int64_t N, int64_t V,
                            int32_t ignore_index, float smoothing, float* gx, int threads);

/** out[i] = a draw from softmax(logits row rows[i] / temps[i]) by inverse CDF at uniforms[i] in
 *  [0, 1) (weights in float32, sums in double); -1 for a row whose logits are all -inf or NaN. */
void sample_tempered(const float* logits, int64_t V, const int32_t* rows, int64_t n, const double* temps, const double* uniforms, int32_t* out, int threads);

/** gx = gy * gelu'(x), gelu's tanh form. */
void gelu_backward(const float* x, const float* gy, float* gx, int64_t n, int threads);

/** out[i, :] = weight[ids[i], :] (weight float32, or bfloat16 bits widened when bf16); returns
 *  the position of the first id outside [0, V) (nothing written), or -1. */
int64_t embedding(const void* weight, bool bf16, int64_t V, int64_t C, const int32_t* ids, int64_t n, float* out, int threads);
/** gw[ids[i], :] += gy[i, :] in order of i (deterministic); returns the first bad position (nothing written), or -1. */
int64_t embedding_backward(const float* gy, const int32_t* ids, int64_t n, int64_t V, int64_t C, float* gw, int threads);

/** out = silu(gate) * up (SwiGLU's gating), and its backward: g_gate = gy up silu'(gate), g_up = gy silu(gate). */
void swiglu(const float* gate, const float* up, float* out, int64_t n, int threads);
/** Rotary embedding of `rows` rows of D (position (r / H) % T + offset; tables cos, sin of rd/2
 *  per position); inverse rotates back (the backward pass). */
void rope(const float* x, const float* cos, const float* sin, float* out, int64_t rows, int64_t H, int64_t T, int64_t D, int64_t rd,
          int64_t offset, int inverse, int threads);
void swiglu_backward(const float* gate, const float* up, const float* gy, float* g_gate, float* g_up, int64_t n, int threads);

struct AdamWParams {
  double lr, beta1, beta2, eps, weight_decay, bc1, bc2;
};
void adamw(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& h, int threads);

}  // namespace attn
