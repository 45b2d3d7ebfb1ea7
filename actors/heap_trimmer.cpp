#include "actors/heap_trimmer.hpp"

#include <malloc.h>

namespace videostreams {

void heap_trimmer::maybe_trim() {
  if (freed_.load(std::memory_order_relaxed) < threshold_)
    return;
  auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
               .count();
  auto last = last_trim_ns_.load(std::memory_order_relaxed);
  if (now - last < std::chrono::nanoseconds{interval_}.count())
    return;
  // One shard wins the right to trim; the others carry on.
  if (!last_trim_ns_.compare_exchange_strong(last, now))
    return;
  freed_.store(0, std::memory_order_relaxed);
  malloc_trim(0);
  trims_.fetch_add(1, std::memory_order_relaxed);
}

} // namespace videostreams
