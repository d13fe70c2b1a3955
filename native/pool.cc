#include "pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace attn {
namespace {

struct Pool {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable wake;
  std::atomic<unsigned> generation{0};
  std::atomic<int> pending{0};
  const std::function<void(int, int)>* job = nullptr;
  int active = 1;  // threads taking part in the current job
  int size = 1;  // threads, the caller included
};

Pool* pool = nullptr;

void worker_main(int tid) {
  unsigned seen = 0;
  for (;;) {
    // Spin briefly (a training step issues kernels back to back), then sleep.
    unsigned g = pool->generation.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < 4000; spin++) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      g = pool->generation.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(pool->mu);
      pool->wake.wait(lock, [&] { return pool->generation.load(std::memory_order_acquire) != seen; });
      g = pool->generation.load(std::memory_order_acquire);
    }
    seen = g;
    if (tid < pool->active) {
      (*pool->job)(tid, pool->active);
      pool->pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

}  // namespace

void pool_start(int threads) {
  if (!pool) pool = new Pool();
  // Grows to the largest count asked for; workers never stop (they sleep when idle).
  for (int t = pool->size; t < threads; t++) {
    pool->workers.emplace_back(worker_main, t);
    pool->workers.back().detach();
  }
  if (threads > pool->size) pool->size = threads;
}

int pool_threads() { return pool ? pool->size : 1; }

void parallel(int want, const std::function<void(int, int)>& fn) {
  int nt = want < 1 ? 1 : want;
  if (!pool || nt > pool->size) nt = pool ? pool->size : 1;
  if (nt == 1) {
    fn(0, 1);
    return;
  }
  pool->job = &fn;
  pool->active = nt;
  pool->pending.store(nt - 1, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(pool->mu);
    pool->generation.fetch_add(1, std::memory_order_acq_rel);
  }
  pool->wake.notify_all();
  fn(0, nt);
  // Spin while the others finish; past a short while give the core away, so that a busy machine
  // (more runnable threads than cores) runs the workers we wait for instead of this loop.
  for (int spin = 0; pool->pending.load(std::memory_order_acquire) != 0; spin++) {
    if (spin < 2000) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace attn
