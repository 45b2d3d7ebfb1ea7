#pragma once

#include <cstdint>
#include <memory>

#include "caf/fwd.hpp"

#include "actors/stream_counters.hpp"
#include "actors/user_protocol.hpp"
#include "actors/user_streams.hpp"

namespace videostreams {

/// What every user actor of a node shares: the limit and the counters.
struct user_settings {
  /// The stream limit of a user without a limit of its own.
  std::uint32_t default_limit = 3;
  /// Where grants, denials and open streams are counted; never null.
  stream_counters* counters = nullptr;
};

/// Starts the actor of `user`, continuing from `record` (empty for a user
/// with no open streams). The actor makes every decision about its user, one
/// message at a time, so concurrent requests can never both take the last slot.
user_actor spawn_user_actor(caf::actor_system& sys, std::uint64_t user,
                            user_streams record,
                            std::shared_ptr<const user_settings> settings);

} // namespace videostreams
