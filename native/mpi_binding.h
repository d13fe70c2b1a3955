// The MPI binding (native/mpi.cc), present when binding.gyp found mpicc (ATTN_HAVE_MPI).
#pragma once
#include <napi.h>

namespace attn {
/** The `mpi` object of the addon's exports: init, allreduce, iallreduce/test/wait, ... */
Napi::Object mpi_exports(Napi::Env env);
}  // namespace attn
