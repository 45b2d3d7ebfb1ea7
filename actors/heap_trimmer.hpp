#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace videostreams {

/// Gives freed heap memory back to the operating system after many users
/// were passivated or lost their last lease. glibc keeps freed small blocks
/// in its arenas, so without this the resident size of a node would only
/// ever grow with its busiest hour. Thread-safe: shards report what they
/// freed and call `maybe_trim` on every tick; the first call that finds
/// enough freed trims (at most once per interval, in that shard's thread).
class heap_trimmer {
public:
  /// Trims once `threshold` objects were freed since the last trim, and no
  /// more often than every `interval`.
  explicit heap_trimmer(std::size_t threshold = 1000,
                        std::chrono::milliseconds interval
                        = std::chrono::seconds{5})
    : threshold_(threshold), interval_(interval) {
    // Nothing else to do.
  }

  /// Reports `n` freed user actors or records.
  void note_freed(std::size_t n) noexcept {
    freed_.fetch_add(n, std::memory_order_relaxed);
  }

  /// Reports that a large block (a whole pool) was freed: the next eligible
  /// `maybe_trim` trims whatever the count says.
  void note_large_free() noexcept {
    freed_.fetch_add(threshold_, std::memory_order_relaxed);
  }

  /// Trims if enough was freed since the last trim and the interval passed.
  void maybe_trim();

  /// How often the heap was trimmed.
  std::uint64_t trims() const noexcept {
    return trims_.load(std::memory_order_relaxed);
  }

private:
  std::size_t threshold_;
  std::chrono::milliseconds interval_;
  std::atomic<std::size_t> freed_{0};
  std::atomic<std::int64_t> last_trim_ns_{0};
  std::atomic<std::uint64_t> trims_{0};
};

} // namespace videostreams
