#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "caf/expected.hpp"
#include "caf/fwd.hpp"

#include "actors/user_protocol.hpp"

namespace videostreams {

/// The single place that maps a user to the shard that owns it, and the
/// bridge from plain threads (HTTP workers) into the actors. Each shard has
/// a route: the endpoint its commands go to right now (a local shard actor,
/// a link to the owning node, or the cluster's gate while the shard moves).
/// Routes are changed by the cluster as shards change hands; any number of
/// threads may call and re-route at once.
class router {
public:
  /// Routes over `routes`, one per shard, none of them null; user `u` goes
  /// to `routes[shard_of(u, routes.size())]` until re-routed.
  explicit router(std::vector<user_endpoint> routes);

  /// Routes over `shards` shards (at least one) that have no endpoint yet:
  /// a command for a shard without one is answered `unavailable` (503)
  /// until `set_route` gives it one.
  explicit router(std::uint32_t shards);

  /// Number of shards.
  std::uint32_t shard_count() const noexcept {
    return count_;
  }

  /// The shard of `user`.
  std::uint32_t shard_of_user(std::uint64_t user) const noexcept;

  /// Where commands for `shard` go now.
  user_endpoint route(std::uint32_t shard) const;

  /// Sends the commands for `shard` to `to` from now on.
  void set_route(std::uint32_t shard, user_endpoint to);

  /// Sends `cmd` to its shard's route and blocks the calling thread until
  /// the answer arrives or `timeout` passes (`sec::request_timeout`). Must
  /// not be called from inside an actor.
  caf::expected<user_reply> call(const user_command& cmd,
                                 std::chrono::nanoseconds timeout) const;

private:
  /// One shard's route, with a lock of its own so that threads working on
  /// different shards never wait for each other (a handle is not atomic).
  struct route_slot {
    mutable std::mutex mtx;
    user_endpoint to;
  };

  std::uint32_t count_;
  std::unique_ptr<route_slot[]> slots_;
};

} // namespace videostreams
