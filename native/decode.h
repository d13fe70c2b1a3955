// One decode step of a Llama-style decoder in one call (see decode.cc for the plan's layout,
// written by the cpu backend's encodeDecodePlan).
#pragma once
#include <cstdint>

namespace attn {

/** Runs the step for `token` at position `pos`, writing its K/V into the plan's caches and the V
 *  logits to `logits`; false (nothing run) when the token is outside the vocabulary. */
bool decode_step(uint8_t* heap, const double* plan, int64_t token, int64_t pos, float* logits, int threads);

}  // namespace attn
