// attn's native addon: N-API bindings of the CPU kernels. Kernels read and write the cpu
// backend's memory (the WebAssembly heap, a SharedArrayBuffer) in place: JavaScript passes a
// Float32Array over it and byte offsets, so nothing is copied.
#include <napi.h>

#include <fcntl.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdint>
#include <cstring>

#include "attention.h"
#include "decode.h"
#include "fused.h"
#include "gemm.h"
#ifdef ATTN_HAVE_MPI
#include "mpi_binding.h"
#endif
#include "pool.h"
#include "quant.h"
#include "rows.h"

namespace {

uint8_t* heap_of(const Napi::Value& v) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  if (napi_get_typedarray_info(v.Env(), v, &type, &length, &data, &ab, &offset) != napi_ok) return nullptr;
  return static_cast<uint8_t*>(data);
}

inline int64_t i64(const Napi::CallbackInfo& info, int i) { return static_cast<int64_t>(info[i].As<Napi::Number>().DoubleValue()); }

/** init(threads, isaCap): starts the pool and picks the kernel set; returns info(). */
Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", attn::isa_name(attn::current_isa()));
  o.Set("best", attn::isa_name(attn::detect_isa(attn::Isa::avx512bf16)));
  o.Set("threads", attn::pool_threads());
  o.Set("avx512bf16", attn::cpu_has_avx512bf16());
  return o;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  const int threads = static_cast<int>(i64(info, 0));
  const std::string cap = info[1].As<Napi::String>().Utf8Value();
  attn::Isa want = cap == "portable" ? attn::Isa::portable : cap == "avx2" ? attn::Isa::avx2 : cap == "avx512" ? attn::Isa::avx512 : attn::Isa::avx512bf16;
  attn::set_isa(attn::detect_isa(want));
  attn::pool_start(threads);
  return Info(info);
}

/**
 * matmul(heap, a, aBatch, lda, transA, b, bBatch, ldb, transB, bBf16, out, batch, M, N, K, bias,
 * act, accumulate, threads, bf16Compute): a, b, out, bias are byte offsets into heap (bias 0: none);
 * strides in elements.
 */
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) {
    Napi::TypeError::New(info.Env(), "matmul: the first argument must be a typed array over the heap").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  attn::GemmArgs g;
  g.a = reinterpret_cast<const float*>(heap + i64(info, 1));
  g.a_batch = i64(info, 2);
  g.lda = i64(info, 3);
  g.trans_a = info[4].As<Napi::Number>().Int32Value() != 0;
  g.b = heap + i64(info, 5);
  g.b_batch = i64(info, 6);
  g.ldb = i64(info, 7);
  g.trans_b = info[8].As<Napi::Number>().Int32Value() != 0;
  g.b_bf16 = info[9].As<Napi::Number>().Int32Value() != 0;
  g.out = reinterpret_cast<float*>(heap + i64(info, 10));
  g.batch = static_cast<int>(i64(info, 11));
  g.M = static_cast<int>(i64(info, 12));
  g.N = static_cast<int>(i64(info, 13));
  g.K = static_cast<int>(i64(info, 14));
  const int64_t bias = i64(info, 15);
  g.bias = bias ? reinterpret_cast<const float*>(heap + bias) : nullptr;
  g.act = info[16].As<Napi::Number>().Int32Value();
  g.accumulate = info[17].As<Napi::Number>().Int32Value() != 0;
  g.bf16_compute = info.Length() > 19 && info[19].As<Napi::Number>().Int32Value() != 0;
  attn::gemm(g, static_cast<int>(i64(info, 18)));
  return info.Env().Undefined();
}

/**
 * attention(heap, q, k, v, out, lse, keyMask, B, H, Tq, Tk, D, scale, causal, spKind, spA, spB,
 * gout, gq, gk, gv, backward, threads, Hkv, q/k/v/out strides (batch, head, row) x 4): byte offsets into
 * heap (keyMask, gout... 0: none); k and v have Hkv heads (grouped-query attention; default H); q, k, v
 * and out may be strided views (default contiguous), gout, gq, gk, gv are contiguous.
 */
Napi::Value Attention(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) {
    Napi::TypeError::New(info.Env(), "attention: the first argument must be a typed array over the heap").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto f = [&](int i) { return reinterpret_cast<float*>(heap + i64(info, i)); };
  attn::AttnArgs p;
  p.q = f(1);
  p.k = f(2);
  p.v = f(3);
  p.out = f(4);
  p.lse = f(5);
  const int64_t mask = i64(info, 6);
  p.key_mask = mask ? reinterpret_cast<const int32_t*>(heap + mask) : nullptr;
  p.B = int(i64(info, 7));
  p.H = int(i64(info, 8));
  p.Tq = int(i64(info, 9));
  p.Tk = int(i64(info, 10));
  p.D = int(i64(info, 11));
  p.scale = float(info[12].As<Napi::Number>().DoubleValue());
  p.causal = info[13].As<Napi::Number>().Int32Value() != 0;
  p.sp_kind = info[14].As<Napi::Number>().Int32Value();
  p.sp_a = info[15].As<Napi::Number>().Int32Value();
  p.sp_b = info[16].As<Napi::Number>().Int32Value();
  const bool backward = info[21].As<Napi::Number>().Int32Value() != 0;
  const int threads = int(i64(info, 22));
  p.Hkv = info.Length() > 23 ? int(i64(info, 23)) : p.H;
  // Layouts (batch, head, row strides) of q, k, v, out: args 24..35, else contiguous.
  auto view = [&](int at, int heads, int T) {
    return info.Length() > size_t(at + 2) ? attn::View{i64(info, at), i64(info, at + 1), i64(info, at + 2)}
                                          : attn::View{int64_t(heads) * T * p.D, int64_t(T) * p.D, p.D};
  };
  p.qv = view(24, p.H, p.Tq);
  p.kv = view(27, p.Hkv, p.Tk);
  p.vv = view(30, p.Hkv, p.Tk);
  p.ov = view(33, p.H, p.Tq);
  if (p.Hkv < 1 || p.H % p.Hkv != 0) {
    Napi::RangeError::New(info.Env(), "attention: H must be a multiple of Hkv").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  if (backward) {
    p.gout = f(17);
    p.gq = f(18);
    p.gk = f(19);
    p.gv = f(20);
    attn::attention_backward(p, threads);
  } else {
    attn::attention_forward(p, threads);
  }
  return info.Env().Undefined();
}

/** reduceSum(heap, x, outer, n, inner, out, threads): byte offsets; sums over the middle axis. */
Napi::Value ReduceSum(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) return info.Env().Undefined();
  attn::reduce_sum(reinterpret_cast<const float*>(heap + i64(info, 1)), i64(info, 2), i64(info, 3), i64(info, 4),
                   reinterpret_cast<float*>(heap + i64(info, 5)), int(i64(info, 6)));
  return info.Env().Undefined();
}

/** unary(heap, op, x, out, n, threads): true when op is a native one (and done). */
Napi::Value Unary(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) return Napi::Boolean::New(info.Env(), false);
  const bool done = attn::unary(int(i64(info, 1)), reinterpret_cast<const float*>(heap + i64(info, 2)), reinterpret_cast<float*>(heap + i64(info, 3)), i64(info, 4), int(i64(info, 5)));
  return Napi::Boolean::New(info.Env(), done);
}

/** copyStrided(heap, x, out, n0..n3, xs0..xs3, os0..os3, threads): byte offsets, strides in 32-bit elements. */
Napi::Value CopyStrided(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) return info.Env().Undefined();
  int64_t shape[4], xs[4], os[4];
  for (int i = 0; i < 4; i++) {
    shape[i] = i64(info, 3 + i);
    xs[i] = i64(info, 7 + i);
    os[i] = i64(info, 11 + i);
  }
  attn::copy_strided(reinterpret_cast<const uint32_t*>(heap + i64(info, 1)), reinterpret_cast<uint32_t*>(heap + i64(info, 2)), shape, xs, os, int(i64(info, 15)));
  return info.Env().Undefined();
}

/** binary2d(heap, op, a, aInner, aOuter, b, bInner, bOuter, out, outer, inner, threads): byte offsets, strides in elements. */
Napi::Value Binary2d(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) return Napi::Boolean::New(info.Env(), false);
  auto f = [&](int i) { return reinterpret_cast<float*>(heap + i64(info, i)); };
  const bool done = attn::binary2d(int(i64(info, 1)), f(2), i64(info, 3), i64(info, 4), f(5), i64(info, 6), i64(info, 7), f(8), i64(info, 9), i64(info, 10), int(i64(info, 11)));
  return Napi::Boolean::New(info.Env(), done);
}

// ---- fused row kernels: byte offsets into heap, 0 for an absent optional operand.

struct Args {
  const Napi::CallbackInfo& info;
  uint8_t* heap;
  float* f(int i) const {
    const int64_t o = i64(info, i);
    return o ? reinterpret_cast<float*>(heap + o) : nullptr;
  }
  const int32_t* i32(int i) const { return reinterpret_cast<const int32_t*>(heap + i64(info, i)); }
  int64_t n(int i) const { return i64(info, i); }
  float x(int i) const { return float(info[i].As<Napi::Number>().DoubleValue()); }
  bool b(int i) const { return info[i].As<Napi::Number>().Int32Value() != 0; }
};

/** Runs fn(args) unless the first argument is not a typed array over the heap. */
template <class F>
Napi::Value with_heap(const Napi::CallbackInfo& info, F fn) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) {
    Napi::TypeError::New(info.Env(), "the first argument must be a typed array over the heap").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  fn(Args{info, heap});
  return info.Env().Undefined();
}

/** layerNorm(heap, x, w, b, rows, n, eps, out, mean, rstd, threads) */
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) { attn::layer_norm(a.f(1), a.f(2), a.f(3), a.n(4), a.n(5), a.x(6), a.f(7), a.f(8), a.f(9), int(a.n(10))); });
}
/** layerNormBackward(heap, x, w, mean, rstd, gy, rows, n, gx, gw, gb, threads) */
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) {
    attn::layer_norm_backward(a.f(1), a.f(2), a.f(3), a.f(4), a.f(5), a.n(6), a.n(7), a.f(8), a.f(9), a.f(10), int(a.n(11)));
  });
}
/** rmsNorm(heap, x, w, rows, n, eps, out, rstd, threads) */
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) { attn::rms_norm(a.f(1), a.f(2), a.n(3), a.n(4), a.x(5), a.f(6), a.f(7), int(a.n(8))); });
}
/** rmsNormBackward(heap, x, w, rstd, gy, rows, n, gx, gw, threads) */
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) { attn::rms_norm_backward(a.f(1), a.f(2), a.f(3), a.f(4), a.n(5), a.n(6), a.f(7), a.f(8), int(a.n(9))); });
}
/** softmax(heap, x, rows, n, log, out, threads) */
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) { attn::softmax(a.f(1), a.n(2), a.n(3), a.b(4), a.f(5), int(a.n(6))); });
}
/** softmaxBackward(heap, y, gy, rows, n, log, gx, threads) */
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) { attn::softmax_backward(a.f(1), a.f(2), a.n(3), a.n(4), a.b(5), a.f(6), int(a.n(7))); });
}
/** crossEntropy(heap, logits, targets, N, V, ignoreIndex, smoothing, losses, lse, threads): -1, or the first bad target's position. */
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) return Napi::Number::New(info.Env(), -2);
  const Args a{info, heap};
  return Napi::Number::New(info.Env(), double(attn::cross_entropy(a.f(1), a.i32(2), a.n(3), a.n(4), int32_t(a.n(5)), a.x(6), a.f(7), a.f(8), int(a.n(9)))));
}
/** crossEntropyBackward(heap, logits, targets, lse, scale, N, V, ignoreIndex, smoothing, gx, threads): as crossEntropy. */
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) return Napi::Number::New(info.Env(), -2);
  const Args a{info, heap};
  return Napi::Number::New(info.Env(), double(attn::cross_entropy_backward(a.f(1), a.i32(2), a.f(3), a.f(4), a.n(5), a.n(6), int32_t(a.n(7)), a.x(8), a.f(9), int(a.n(10)))));
}
/** embedding(heap, weight, bf16, V, C, ids, n, out, threads): -1, or the position of the first bad id. */
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) return Napi::Number::New(info.Env(), -2);
  const Args a{info, heap};
  return Napi::Number::New(info.Env(), double(attn::embedding(heap + a.n(1), a.b(2), a.n(3), a.n(4), a.i32(5), a.n(6), a.f(7), int(a.n(8)))));
}

/** embeddingBackward(heap, gy, ids, n, V, C, gw, threads): -1, or the position of the first bad id. */
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (!heap) return Napi::Number::New(info.Env(), -2);
  const Args a{info, heap};
  return Napi::Number::New(info.Env(), double(attn::embedding_backward(a.f(1), a.i32(2), a.n(3), a.n(4), a.n(5), a.f(6), int(a.n(7)))));
}

/** rope(heap, x, cos, sin, out, rows, H, T, D, rd, offset, inverse, threads) */
Napi::Value Rope(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) {
    attn::rope(a.f(1), a.f(2), a.f(3), a.f(4), a.n(5), a.n(6), a.n(7), a.n(8), a.n(9), a.n(10), int(a.n(11)), int(a.n(12)));
  });
}

/** quantMatmul(heap, format, data, scales, zeros, N, K, x, M, bias, act, out, threads): byte offsets (0: absent). */
Napi::Value QuantMatmul(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) {
    attn::QuantMatmulArgs q;
    q.format = int(a.n(1));
    q.data = a.heap + a.n(2);
    q.scales = a.f(3);
    q.zeros = a.n(4) ? a.heap + a.n(4) : nullptr;
    q.N = a.n(5);
    q.K = a.n(6);
    q.x = a.f(7);
    q.M = a.n(8);
    q.bias = a.f(9);
    q.act = int(a.n(10));
    q.out = a.f(11);
    attn::quant_matmul(q, int(a.n(12)));
  });
}

/** decodeStep(heap, plan (Float64Array), token, pos, logits, threads): a Llama-style decode step in
 *  one call (native/decode.cc); returns false when the token is outside the vocabulary. */
Napi::Value DecodeStep(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  const uint8_t* plan = heap_of(info[1]);
  if (!heap || !plan) {
    Napi::TypeError::New(info.Env(), "decodeStep: the heap and the plan must be typed arrays").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const bool ok = attn::decode_step(heap, reinterpret_cast<const double*>(plan), i64(info, 2), i64(info, 3), reinterpret_cast<float*>(heap + i64(info, 4)), int(i64(info, 5)));
  return Napi::Boolean::New(info.Env(), ok);
}

/** sampleTempered(heap, logits, V, rows (Int32Array), temps, uniforms (Float64Arrays), out (Int32Array), threads):
 *  one draw per listed row of the (rows, V) float32 logits at byte offset `logits` (fused.h). */
Napi::Value SampleTempered(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  const uint8_t* rows = heap_of(info[3]);
  const uint8_t* temps = heap_of(info[4]);
  const uint8_t* uniforms = heap_of(info[5]);
  uint8_t* out = heap_of(info[6]);
  if (!heap || !rows || !temps || !uniforms || !out) {
    Napi::TypeError::New(info.Env(), "sampleTempered: the heap, rows, temperatures, uniforms and out must be typed arrays").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const int64_t n = int64_t(info[3].As<Napi::TypedArray>().ElementLength());
  attn::sample_tempered(reinterpret_cast<const float*>(heap + i64(info, 1)), i64(info, 2), reinterpret_cast<const int32_t*>(rows), n,
                        reinterpret_cast<const double*>(temps), reinterpret_cast<const double*>(uniforms), reinterpret_cast<int32_t*>(out), int(i64(info, 7)));
  return info.Env().Undefined();
}

/** quantInt8Activations(on): int8 activations for int4 decode (quant.h); returns whether they are on. */
Napi::Value QuantInt8Activations(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), attn::set_quant_int8_activations(info[0].ToBoolean().Value()));
}

/** swiglu(heap, gate, up, out, n, threads) */
Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) { attn::swiglu(a.f(1), a.f(2), a.f(3), a.n(4), int(a.n(5))); });
}
/** swigluBackward(heap, gate, up, gy, gGate, gUp, n, threads) */
Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) { attn::swiglu_backward(a.f(1), a.f(2), a.f(3), a.f(4), a.f(5), a.n(6), int(a.n(7))); });
}

/** geluBackward(heap, x, gy, gx, n, threads) */
Napi::Value GeluBackward(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) { attn::gelu_backward(a.f(1), a.f(2), a.f(3), a.n(4), int(a.n(5))); });
}

/** adamw(heap, param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, bc1, bc2, threads) */
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  return with_heap(info, [](const Args& a) {
    auto d = [&](int i) { return a.info[i].As<Napi::Number>().DoubleValue(); };
    const attn::AdamWParams h{d(6), d(7), d(8), d(9), d(10), d(11), d(12)};
    attn::adamw(a.f(1), a.f(2), a.f(3), a.f(4), a.n(5), h, int(a.n(13)));
  });
}

/** fmaPeak(seconds, threads): the kernel set's register-only FMA rate, GFLOP/s. */
Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), attn::fma_peak_gflops(info[0].As<Napi::Number>().DoubleValue(), int(i64(info, 1))));
}

/** zero(heap, byteOffset, bytes): memset, for fresh storages (faster than fill on a shared buffer). */
Napi::Value Zero(const Napi::CallbackInfo& info) {
  uint8_t* heap = heap_of(info[0]);
  if (heap) std::memset(heap + i64(info, 1), 0, size_t(i64(info, 2)));
  return info.Env().Undefined();
}

/** stderrMute(): points fd 2 at /dev/null and returns a copy of the old one (-1 on failure). */
Napi::Value StderrMute(const Napi::CallbackInfo& info) {
  const int saved = dup(2);
  const int nul = open("/dev/null", O_WRONLY);
  if (saved < 0 || nul < 0 || dup2(nul, 2) < 0) {
    if (nul >= 0) close(nul);
    if (saved >= 0) close(saved);
    return Napi::Number::New(info.Env(), -1);
  }
  close(nul);
  return Napi::Number::New(info.Env(), saved);
}

/** stderrRestore(fd): undoes stderrMute. */
Napi::Value StderrRestore(const Napi::CallbackInfo& info) {
  const int saved = info[0].As<Napi::Number>().Int32Value();
  if (saved >= 0) {
    dup2(saved, 2);
    close(saved);
  }
  return info.Env().Undefined();
}


Napi::Object Module(Napi::Env env, Napi::Object exports) {
#if defined(__GLIBC__)
  // Host buffers of 4 MiB and more (a checkpoint's tensors as they stream in, a loader's
  // staging arrays) get pages of their own that go back to the system when freed. By default
  // glibc raises this threshold after the first large free and serves later ones from its heap,
  // which then keeps their pages resident: a loaded int4 GPT-2 held 12-30 MiB more than its
  // matrices that way. Smaller buffers (a decode step's logits) stay on the heap.
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
#endif
  exports.Set("stderrMute", Napi::Function::New(env, StderrMute));
  exports.Set("stderrRestore", Napi::Function::New(env, StderrRestore));
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("reduceSum", Napi::Function::New(env, ReduceSum));
  exports.Set("unary", Napi::Function::New(env, Unary));
  exports.Set("zero", Napi::Function::New(env, Zero));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak));
  exports.Set("copyStrided", Napi::Function::New(env, CopyStrided));
  exports.Set("binary2d", Napi::Function::New(env, Binary2d));
  exports.Set("layerNorm", Napi::Function::New(env, LayerNorm));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBackward));
  exports.Set("rmsNorm", Napi::Function::New(env, RmsNorm));
  exports.Set("rmsNormBackward", Napi::Function::New(env, RmsNormBackward));
  exports.Set("softmax", Napi::Function::New(env, Softmax));
  exports.Set("softmaxBackward", Napi::Function::New(env, SoftmaxBackward));
  exports.Set("crossEntropy", Napi::Function::New(env, CrossEntropy));
  exports.Set("crossEntropyBackward", Napi::Function::New(env, CrossEntropyBackward));
  exports.Set("adamw", Napi::Function::New(env, AdamW));
  exports.Set("geluBackward", Napi::Function::New(env, GeluBackward));
  exports.Set("swiglu", Napi::Function::New(env, Swiglu));
  exports.Set("decodeStep", Napi::Function::New(env, DecodeStep));
  exports.Set("sampleTempered", Napi::Function::New(env, SampleTempered));
  exports.Set("quantInt8Activations", Napi::Function::New(env, QuantInt8Activations));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("quantMatmul", Napi::Function::New(env, QuantMatmul));
  exports.Set("swigluBackward", Napi::Function::New(env, SwigluBackward));
  exports.Set("embedding", Napi::Function::New(env, Embedding));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
#ifdef ATTN_HAVE_MPI
  exports.Set("mpi", attn::mpi_exports(env));
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(attn_native, Module)
