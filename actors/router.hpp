#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "caf/expected.hpp"
#include "caf/fwd.hpp"

#include "actors/shard_actor.hpp"
#include "actors/user_protocol.hpp"

namespace videostreams {

/// The single place that maps a user to the shard that owns it, and the
/// bridge from plain threads (HTTP workers) into the actors. Immutable after
/// construction, so any number of threads may use it at once.
class router {
public:
  /// Routes over `shards`, which must not be empty; user `u` goes to
  /// `shards[shard_of(u, shards.size())]`.
  explicit router(std::vector<shard_actor> shards);

  /// The shard actor that owns `user`.
  const shard_actor& shard_for(std::uint64_t user) const noexcept;

  /// Number of shards.
  std::uint32_t shard_count() const noexcept {
    return static_cast<std::uint32_t>(shards_.size());
  }

  /// All shards, indexed by shard number.
  const std::vector<shard_actor>& shards() const noexcept {
    return shards_;
  }

  /// Sends `cmd` to its user's actor and blocks the calling thread until the
  /// answer arrives or `timeout` passes (`sec::request_timeout`). Must not be
  /// called from inside an actor.
  caf::expected<user_reply> call(const user_command& cmd,
                                 std::chrono::nanoseconds timeout) const;

private:
  std::vector<shard_actor> shards_;
};

} // namespace videostreams
