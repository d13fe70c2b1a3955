// MPI for distributed training: a thin binding of Open MPI's C API (MPI 3.1) on typed arrays.
// Built only when binding.gyp finds mpicc (scripts/mpi-flags.mjs); every call runs on the
// JavaScript thread (MPI_THREAD_FUNNELED). Buffers are Float32Array (MPI_FLOAT), Float64Array,
// Int32Array or Uint16Array holding bfloat16 (a user type and sum op: summed in float32, rounded
// to nearest even). Errors come back as JavaScript exceptions naming the call
// (MPI_ERRORS_RETURN on MPI_COMM_WORLD), never as a silent abort.
#include "mpi_binding.h"

#include <dlfcn.h>
// The C API only: no C++ bindings (Open MPI and MPICH both honour these).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

MPI_Datatype bf16_type = MPI_DATATYPE_NULL;
MPI_Op bf16_sum = MPI_OP_NULL;

struct Pending {
  MPI_Request req;
  Napi::Reference<Napi::Value> keep;  // the buffer stays alive until the request completes
};
std::map<int, Pending> pending;
int next_request = 1;
// Communicators made by split(); id i (from 1) is comms[i - 1], id 0 (or none) MPI_COMM_WORLD.
std::vector<MPI_Comm> comms;

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

void bf16_sum_fn(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; i++) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

bool throw_if(Napi::Env env, int rc, const char* what) {
  if (rc == MPI_SUCCESS) return false;
  char msg[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, msg, &n);
  Napi::Error::New(env, std::string("MPI: ") + what + " failed: " + std::string(msg, n)).ThrowAsJavaScriptException();
  return true;
}

bool ready(Napi::Env env) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) return true;
  Napi::Error::New(env, fin ? "MPI: already finalized" : "MPI: not initialized (call mpi.init() first)").ThrowAsJavaScriptException();
  return false;
}

struct Buf {
  void* data = nullptr;
  int count = 0;
  MPI_Datatype type = MPI_DATATYPE_NULL;
  napi_typedarray_type kind = napi_float32_array;
};

/** The typed array at info[i] as an MPI buffer; throws (returns false) on anything else. */
bool buffer_of(const Napi::CallbackInfo& info, size_t i, const char* what, Buf* out) {
  Napi::Env env = info.Env();
  if (i >= info.Length() || !info[i].IsTypedArray()) {
    Napi::TypeError::New(env, std::string("MPI: ") + what + " needs a typed array").ThrowAsJavaScriptException();
    return false;
  }
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  size_t length = 0;
  napi_value ab;
  size_t offset = 0;
  napi_get_typedarray_info(env, ta, &out->kind, &length, &out->data, &ab, &offset);
  if (length > 0x7fffffffu) {
    Napi::RangeError::New(env, std::string("MPI: ") + what + ": more than 2^31-1 elements").ThrowAsJavaScriptException();
    return false;
  }
  out->count = static_cast<int>(length);
  switch (out->kind) {
    case napi_float32_array: out->type = MPI_FLOAT; break;
    case napi_float64_array: out->type = MPI_DOUBLE; break;
    case napi_int32_array: out->type = MPI_INT; break;
    case napi_uint16_array: out->type = bf16_type; break;
    default:
      Napi::TypeError::New(env, std::string("MPI: ") + what + ": Float32Array, Float64Array, Int32Array or Uint16Array (bfloat16) only").ThrowAsJavaScriptException();
      return false;
  }
  return true;
}

bool op_of(const Napi::CallbackInfo& info, size_t i, const Buf& b, MPI_Op* op) {
  std::string name = i < info.Length() && info[i].IsString() ? info[i].As<Napi::String>().Utf8Value() : "sum";
  if (b.kind == napi_uint16_array) {
    if (name != "sum") {
      Napi::Error::New(info.Env(), "MPI: bfloat16 buffers reduce with 'sum' only").ThrowAsJavaScriptException();
      return false;
    }
    *op = bf16_sum;
    return true;
  }
  if (name == "sum") *op = MPI_SUM;
  else if (name == "max") *op = MPI_MAX;
  else if (name == "min") *op = MPI_MIN;
  else {
    Napi::Error::New(info.Env(), "MPI: unknown reduction '" + name + "' (sum, max or min)").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

int int_arg(const Napi::CallbackInfo& info, size_t i, int dflt) {
  return i < info.Length() && info[i].IsNumber() ? info[i].As<Napi::Number>().Int32Value() : dflt;
}

/** The communicator id at info[i] (absent: MPI_COMM_WORLD); throws (returns false) on an unknown one. */
bool comm_of(const Napi::CallbackInfo& info, size_t i, MPI_Comm* out) {
  const int id = int_arg(info, i, 0);
  if (id == 0) {
    *out = MPI_COMM_WORLD;
    return true;
  }
  if (id < 0 || static_cast<size_t>(id) > comms.size() || comms[id - 1] == MPI_COMM_NULL) {
    Napi::Error::New(info.Env(), "MPI: no communicator " + std::to_string(id) + " (ids come from split())").ThrowAsJavaScriptException();
    return false;
  }
  *out = comms[id - 1];
  return true;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int init = 0;
  MPI_Initialized(&init);
  if (!init) {
    // Open MPI loads its components with dlopen and they expect libmpi's symbols to be global;
    // the addon was loaded RTLD_LOCAL, so promote the already-loaded library first.
    dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    int provided = 0;
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
      Napi::Error::New(env, "MPI: MPI_Init_thread failed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Type_contiguous(2, MPI_BYTE, &bf16_type);
    MPI_Type_commit(&bf16_type);
    MPI_Op_create(bf16_sum_fn, 1, &bf16_sum);
  }
  int rank = 0, size = 1, len = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  MPI_Get_library_version(version, &len);
  char host[MPI_MAX_PROCESSOR_NAME];
  int hlen = 0;
  MPI_Get_processor_name(host, &hlen);
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", rank);
  o.Set("size", size);
  std::string lib(version, strnlen(version, sizeof version));
  while (!lib.empty() && (lib.back() == '\n' || lib.back() == ' ')) lib.pop_back();
  o.Set("library", lib);
  o.Set("host", std::string(host, hlen));
  return o;
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) {
    for (auto& [id, p] : pending) MPI_Wait(&p.req, MPI_STATUS_IGNORE);
    pending.clear();
    for (MPI_Comm& c : comms) if (c != MPI_COMM_NULL) MPI_Comm_free(&c);
    comms.clear();
    if (bf16_sum != MPI_OP_NULL) MPI_Op_free(&bf16_sum);
    if (bf16_type != MPI_DATATYPE_NULL) MPI_Type_free(&bf16_type);
    MPI_Finalize();
  }
  return info.Env().Undefined();
}

Napi::Value Initialized(const Napi::CallbackInfo& info) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return Napi::Boolean::New(info.Env(), init && !fin);
}

/** abort(code): ends every rank of the job (mpirun reports which one called it). */
Napi::Value Abort(const Napi::CallbackInfo& info) {
  if (!ready(info.Env())) return info.Env().Undefined();
  MPI_Abort(MPI_COMM_WORLD, int_arg(info, 0, 1));
  return info.Env().Undefined();
}

Napi::Value Wtime(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), MPI_Wtime()); }

/** allreduce(buf, op = 'sum', comm = world): in place. */
Napi::Value Allreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buf b;
  MPI_Op op;
  MPI_Comm comm;
  if (!ready(env) || !buffer_of(info, 0, "allreduce", &b) || !op_of(info, 1, b, &op) || !comm_of(info, 2, &comm)) return env.Undefined();
  throw_if(env, MPI_Allreduce(MPI_IN_PLACE, b.data, b.count, b.type, op, comm), "MPI_Allreduce");
  return env.Undefined();
}

/** split(color, key): MPI_Comm_split of the world (a collective); returns { comm, rank, size }
 *  with comm an id that allreduce, bcast, isend and irecv take. */
Napi::Value Split(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ready(env)) return env.Undefined();
  MPI_Comm c = MPI_COMM_NULL;
  if (throw_if(env, MPI_Comm_split(MPI_COMM_WORLD, int_arg(info, 0, 0), int_arg(info, 1, 0), &c), "MPI_Comm_split")) return env.Undefined();
  MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
  comms.push_back(c);
  int rank = 0, size = 1;
  MPI_Comm_rank(c, &rank);
  MPI_Comm_size(c, &size);
  Napi::Object o = Napi::Object::New(env);
  o.Set("comm", static_cast<double>(comms.size()));
  o.Set("rank", rank);
  o.Set("size", size);
  return o;
}

/** iallreduce(buf, op = 'sum', comm = world): starts an in-place all-reduce; returns a request id for test/wait. */
Napi::Value Iallreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buf b;
  MPI_Op op;
  MPI_Comm comm;
  if (!ready(env) || !buffer_of(info, 0, "iallreduce", &b) || !op_of(info, 1, b, &op) || !comm_of(info, 2, &comm)) return env.Undefined();
  MPI_Request req;
  if (throw_if(env, MPI_Iallreduce(MPI_IN_PLACE, b.data, b.count, b.type, op, comm, &req), "MPI_Iallreduce")) return env.Undefined();
  const int id = next_request++;
  pending.emplace(id, Pending{req, Napi::Persistent(info[0])});
  return Napi::Number::New(env, id);
}

Pending* request_of(const Napi::CallbackInfo& info) {
  const int id = int_arg(info, 0, 0);
  auto it = pending.find(id);
  if (it == pending.end()) {
    Napi::Error::New(info.Env(), "MPI: no pending request " + std::to_string(id)).ThrowAsJavaScriptException();
    return nullptr;
  }
  return &it->second;
}

/** test(id): true once the request is complete (it is then forgotten); also drives MPI's progress. */
Napi::Value Test(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ready(env)) return env.Undefined();
  Pending* p = request_of(info);
  if (!p) return env.Undefined();
  int done = 0;
  if (throw_if(env, MPI_Test(&p->req, &done, MPI_STATUS_IGNORE), "MPI_Test")) return env.Undefined();
  if (done) pending.erase(int_arg(info, 0, 0));
  return Napi::Boolean::New(env, done != 0);
}

Napi::Value Wait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ready(env)) return env.Undefined();
  Pending* p = request_of(info);
  if (!p) return env.Undefined();
  const int rc = MPI_Wait(&p->req, MPI_STATUS_IGNORE);
  pending.erase(int_arg(info, 0, 0));
  throw_if(env, rc, "MPI_Wait");
  return env.Undefined();
}

/** reduceScatter(send, recv, op = 'sum'): send holds size × recv.length elements; rank r gets block r. */
Napi::Value ReduceScatter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buf s, r;
  MPI_Op op;
  if (!ready(env) || !buffer_of(info, 0, "reduceScatter send", &s) || !buffer_of(info, 1, "reduceScatter recv", &r) || !op_of(info, 2, s, &op)) return env.Undefined();
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (s.kind != r.kind || static_cast<int64_t>(r.count) * size != s.count) {
    Napi::RangeError::New(env, "MPI: reduceScatter: send must hold size x recv.length elements of recv's type (" + std::to_string(s.count) + " for " +
                                   std::to_string(size) + " x " + std::to_string(r.count) + ")").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  throw_if(env, MPI_Reduce_scatter_block(s.data, r.data, r.count, r.type, op, MPI_COMM_WORLD), "MPI_Reduce_scatter_block");
  return env.Undefined();
}

/** allgather(send, recv): recv holds size × send.length elements, rank r's block at r. */
Napi::Value Allgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buf s, r;
  if (!ready(env) || !buffer_of(info, 0, "allgather send", &s) || !buffer_of(info, 1, "allgather recv", &r)) return env.Undefined();
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (s.kind != r.kind || static_cast<int64_t>(s.count) * size != r.count) {
    Napi::RangeError::New(env, "MPI: allgather: recv must hold size x send.length elements of send's type (" + std::to_string(r.count) + " for " +
                                   std::to_string(size) + " x " + std::to_string(s.count) + ")").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  throw_if(env, MPI_Allgather(s.data, s.count, s.type, r.data, s.count, r.type, MPI_COMM_WORLD), "MPI_Allgather");
  return env.Undefined();
}

bool peer_ok(Napi::Env env, int peer, const char* what, MPI_Comm comm = MPI_COMM_WORLD) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  if (peer >= 0 && peer < size) return true;
  Napi::RangeError::New(env, std::string("MPI: ") + what + ": rank " + std::to_string(peer) + " is not in 0.." + std::to_string(size - 1)).ThrowAsJavaScriptException();
  return false;
}

/** send(buf, dest, tag = 0) */
Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buf b;
  if (!ready(env) || !buffer_of(info, 0, "send", &b) || !peer_ok(env, int_arg(info, 1, -1), "send")) return env.Undefined();
  throw_if(env, MPI_Send(b.data, b.count, b.type, int_arg(info, 1, -1), int_arg(info, 2, 0), MPI_COMM_WORLD), "MPI_Send");
  return env.Undefined();
}

/** recv(buf, source, tag = 0): fills buf; a message of another length throws. */
Napi::Value Recv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buf b;
  if (!ready(env) || !buffer_of(info, 0, "recv", &b) || !peer_ok(env, int_arg(info, 1, -1), "recv")) return env.Undefined();
  MPI_Status st;
  if (throw_if(env, MPI_Recv(b.data, b.count, b.type, int_arg(info, 1, -1), int_arg(info, 2, 0), MPI_COMM_WORLD, &st), "MPI_Recv")) return env.Undefined();
  int got = 0;
  MPI_Get_count(&st, b.type, &got);
  if (got != b.count) Napi::RangeError::New(env, "MPI: recv: got " + std::to_string(got) + " elements, expected " + std::to_string(b.count)).ThrowAsJavaScriptException();
  return env.Undefined();
}

/** isend(buf, dest, tag = 0, comm = world) / irecv(buf, source, tag = 0, comm = world): start a
 *  transfer (ranks within comm); test/wait take the id. */
Napi::Value PointToPoint(const Napi::CallbackInfo& info, bool sending) {
  Napi::Env env = info.Env();
  Buf b;
  MPI_Comm comm;
  const char* what = sending ? "isend" : "irecv";
  if (!ready(env) || !buffer_of(info, 0, what, &b) || !comm_of(info, 3, &comm) || !peer_ok(env, int_arg(info, 1, -1), what, comm)) return env.Undefined();
  MPI_Request req;
  const int rc = sending ? MPI_Isend(b.data, b.count, b.type, int_arg(info, 1, -1), int_arg(info, 2, 0), comm, &req)
                         : MPI_Irecv(b.data, b.count, b.type, int_arg(info, 1, -1), int_arg(info, 2, 0), comm, &req);
  if (throw_if(env, rc, sending ? "MPI_Isend" : "MPI_Irecv")) return env.Undefined();
  const int id = next_request++;
  pending.emplace(id, Pending{req, Napi::Persistent(info[0])});
  return Napi::Number::New(env, id);
}
Napi::Value Isend(const Napi::CallbackInfo& info) { return PointToPoint(info, true); }
Napi::Value Irecv(const Napi::CallbackInfo& info) { return PointToPoint(info, false); }

/** bcast(buf, root = 0, comm = world) */
Napi::Value Bcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Buf b;
  MPI_Comm comm;
  if (!ready(env) || !buffer_of(info, 0, "bcast", &b) || !comm_of(info, 2, &comm) || !peer_ok(env, int_arg(info, 1, 0), "bcast", comm)) return env.Undefined();
  throw_if(env, MPI_Bcast(b.data, b.count, b.type, int_arg(info, 1, 0), comm), "MPI_Bcast");
  return env.Undefined();
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ready(env)) return env.Undefined();
  throw_if(env, MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  return env.Undefined();
}

}  // namespace

namespace attn {

Napi::Object mpi_exports(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("init", Napi::Function::New(env, Init));
  o.Set("finalize", Napi::Function::New(env, Finalize));
  o.Set("initialized", Napi::Function::New(env, Initialized));
  o.Set("abort", Napi::Function::New(env, Abort));
  o.Set("wtime", Napi::Function::New(env, Wtime));
  o.Set("allreduce", Napi::Function::New(env, Allreduce));
  o.Set("iallreduce", Napi::Function::New(env, Iallreduce));
  o.Set("test", Napi::Function::New(env, Test));
  o.Set("wait", Napi::Function::New(env, Wait));
  o.Set("reduceScatter", Napi::Function::New(env, ReduceScatter));
  o.Set("allgather", Napi::Function::New(env, Allgather));
  o.Set("send", Napi::Function::New(env, Send));
  o.Set("recv", Napi::Function::New(env, Recv));
  o.Set("isend", Napi::Function::New(env, Isend));
  o.Set("irecv", Napi::Function::New(env, Irecv));
  o.Set("bcast", Napi::Function::New(env, Bcast));
  o.Set("barrier", Napi::Function::New(env, Barrier));
  o.Set("split", Napi::Function::New(env, Split));
  // iallreduce takes a communicator id (older addons ignored a third argument: world only).
  o.Set("iallreduceComm", Napi::Boolean::New(env, true));
  return o;
}

}  // namespace attn
