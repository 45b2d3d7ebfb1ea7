#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "caf/allowed_unsafe_message_type.hpp"
#include "caf/atom.hpp"
#include "caf/error.hpp"
#include "caf/fwd.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "actors/clock.hpp"
#include "cluster/lease_store.hpp"

namespace videostreams {

/// A heartbeat (with a lease renewal when one is due) and a read of the
/// member and lease tables.
using round_atom = caf::atom_constant<caf::atom("round")>;

/// Takes shard leases.
using take_atom = caf::atom_constant<caf::atom("take")>;

/// Gives shard leases up.
using release_atom = caf::atom_constant<caf::atom("release")>;

/// Leaves the member table (graceful stop).
using leave_atom = caf::atom_constant<caf::atom("leave")>;

/// Reads shards' committed state.
using load_atom = caf::atom_constant<caf::atom("load")>;

/// What one round asks of the database.
struct round_request {
  member_self self;
  /// Enter the member table (first round) rather than heartbeat.
  bool join = false;
  /// Leases to renew; empty = no renewal this round.
  std::vector<held_lease> renew;
  std::uint32_t shard_count = 0;
};

/// What a round found. Each step can fail on its own.
struct round_result {
  /// A newer process of this node id took the member row over.
  bool superseded = false;
  caf::error heartbeat_error;
  /// The renewal ran (`renew` was not empty) and succeeded: `renewed` are
  /// the leases it extended, from `renew_started_ns` (monotonic, taken
  /// before the statement was sent) on.
  bool renewal_ran = false;
  caf::error renew_error;
  std::vector<std::uint32_t> renewed;
  std::int64_t renew_started_ns = 0;
  caf::error read_error;
  cluster_reading reading;
};

/// What a take found: the leases taken, with their epochs, valid from
/// `started_ns` (monotonic, before the statement was sent) on.
struct take_result {
  shard_epochs taken;
  std::int64_t started_ns = 0;
  caf::error error;
};

/// The committed state of shards, read for a take-over (never leaves the
/// node; shared, not copied).
struct loaded_shards {
  std::shared_ptr<committed_state> state;
};

/// Does the lease store's blocking calls for the cluster node, one at a
/// time, on a thread of its own (spawned detached).
/// Each request names the node (its id owns the leases; its lease TTL is
/// how long a taken or renewed lease runs).
using lease_keeper_actor = caf::typed_actor<
  caf::replies_to<round_atom, round_request>::with<round_result>,
  caf::replies_to<take_atom, member_self,
                  std::vector<std::uint32_t>>::with<take_result>,
  caf::replies_to<release_atom, member_self,
                  shard_epochs>::with<std::vector<std::uint32_t>>,
  caf::replies_to<leave_atom, member_self>::with<bool>>;

/// Reads committed shard state for take-overs on a connection of its own,
/// so that a long read never delays a lease renewal.
using shard_loader_actor = caf::typed_actor<
  caf::replies_to<load_atom, std::vector<std::uint32_t>>::with<loaded_shards>>;

/// Starts the keeper on `store` (detached), reading monotonic time from
/// `clock`.
lease_keeper_actor spawn_lease_keeper(caf::actor_system& sys,
                                      std::shared_ptr<lease_store> store,
                                      std::shared_ptr<const time_source> clock);

/// Starts the loader on `db` (detached).
shard_loader_actor spawn_shard_loader(caf::actor_system& sys,
                                      pg_connection db);

} // namespace videostreams

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::round_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::round_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::take_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::loaded_shards)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::member_self)
