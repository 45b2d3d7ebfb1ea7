#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>

namespace videostreams {

/// Until when this node may decide for each shard, and for which tenure: a
/// monotonic deadline in nanoseconds (the clock of `time_source`) and the
/// lease epoch it holds the shard under. A user actor checks both before
/// every decision and answers `unavailable` once the deadline passed or
/// when its shard actor belongs to an earlier tenure, so a node whose lease
/// ran out (or that was paused past it) never decides from state that
/// another node may own by now. The cluster moves the deadlines forward with
/// every lease renewal; in memory every shard is ours forever (epoch 0).
/// Thread-safe: one writer, any number of readers.
class shard_deadlines {
public:
  /// A deadline that never passes.
  static constexpr std::int64_t forever
    = std::numeric_limits<std::int64_t>::max();

  /// `shards` deadlines, each `initial`.
  explicit shard_deadlines(std::uint32_t shards, std::int64_t initial = 0)
    : size_(shards),
      deadlines_(std::make_unique<std::atomic<std::int64_t>[]>(shards)),
      epochs_(std::make_unique<std::atomic<std::int64_t>[]>(shards)) {
    for (std::uint32_t i = 0; i < shards; ++i) {
      deadlines_[i].store(initial, std::memory_order_relaxed);
      epochs_[i].store(0, std::memory_order_relaxed);
    }
  }

  /// True if this node may decide for `shard`, held under `epoch`, at
  /// monotonic time `now_ns`.
  bool may_decide(std::uint32_t shard, std::int64_t now_ns,
                  std::int64_t epoch = 0) const noexcept {
    if (shard >= size_)
      return false;
    // The deadline first: the epoch is stored before it (see `set`).
    auto deadline = deadlines_[shard].load(std::memory_order_acquire);
    return now_ns < deadline
           && epochs_[shard].load(std::memory_order_acquire) == epoch;
  }

  /// Sets the deadline of `shard`, held under `epoch`; 0 = no more
  /// decisions.
  void set(std::uint32_t shard, std::int64_t deadline_ns,
           std::int64_t epoch = 0) noexcept {
    if (shard >= size_)
      return;
    epochs_[shard].store(epoch, std::memory_order_release);
    deadlines_[shard].store(deadline_ns, std::memory_order_release);
  }

  /// The deadline of `shard`.
  std::int64_t get(std::uint32_t shard) const noexcept {
    return shard < size_ ? deadlines_[shard].load(std::memory_order_acquire)
                         : 0;
  }

  std::uint32_t size() const noexcept {
    return size_;
  }

private:
  std::uint32_t size_;
  std::unique_ptr<std::atomic<std::int64_t>[]> deadlines_;
  std::unique_ptr<std::atomic<std::int64_t>[]> epochs_;
};

} // namespace videostreams
