// One persistent pool of worker threads for every native kernel: the calling thread works as
// thread 0, the others wake on a generation counter, spin a little, then sleep.
#pragma once
#include <functional>

namespace attn {

/** Starts workers up to `threads` in all (the caller counts as one); never shrinks. */
void pool_start(int threads);
int pool_threads();
/** Runs fn(tid, nt) on nt = min(want, pool size) threads (tid 0 on the caller); returns when all are done. */
void parallel(int want, const std::function<void(int, int)>& fn);

}  // namespace attn
