#pragma once

#include <atomic>
#include <cstdint>

namespace videostreams {

/// Process-wide gauges and counters that the actors update and `/metrics`
/// reads. Relaxed atomics: each figure is exact on its own, and a scrape
/// does not need a consistent snapshot across figures.
struct stream_counters {
  /// Streams open across all users of this node (gauge).
  std::atomic<std::int64_t> open_streams{0};
  /// User actors currently alive (gauge).
  std::atomic<std::int64_t> live_user_actors{0};
  /// Passivated users whose open streams are held as a compact record (gauge).
  std::atomic<std::int64_t> passive_records{0};
  /// Starts answered with a new stream (counter).
  std::atomic<std::uint64_t> grants{0};
  /// Grants undone because their commit failed or timed out (counter).
  std::atomic<std::uint64_t> failed_grants{0};
  /// Starts refused because the user was at the limit (counter).
  std::atomic<std::uint64_t> denials{0};
  /// Leases that expired without being renewed or closed (counter).
  std::atomic<std::uint64_t> expirations{0};
  /// User actors stopped for being idle (counter).
  std::atomic<std::uint64_t> passivations{0};
  /// User actors started, for a new user or from a compact record (counter).
  std::atomic<std::uint64_t> activations{0};
  /// Commands refused because this node's lease of the user's shard had
  /// run out (counter): answered 503, nothing decided.
  std::atomic<std::uint64_t> lease_refusals{0};
  /// Commands that reached their user's actor after their caller had given
  /// up, or too late to commit a grant in time (counter): nothing decided.
  std::atomic<std::uint64_t> late_commands{0};
};

} // namespace videostreams
