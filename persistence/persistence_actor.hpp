#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "caf/atom.hpp"
#include "caf/fwd.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "actors/stream_change.hpp"
#include "persistence/stream_store.hpp"

namespace videostreams {

/// Makes the persistence actor commit what it has gathered.
using flush_atom = caf::atom_constant<caf::atom("flush")>;

/// Makes the persistence actor check the database; sent to itself.
using probe_atom = caf::atom_constant<caf::atom("probe")>;

/// The persistence actor: takes every change of the users' state, coalesces
/// changes to the same stream or limit, and commits them in batches (group
/// commit: a batch is committed as soon as the previous commit finished;
/// while one commit runs, the next batch gathers in the mailbox). A change
/// is answered `true` once the batch holding it committed, or with the error
/// of that commit; callers that write behind simply do not wait.
using persistence_actor
  = caf::typed_actor<caf::replies_to<stream_change>::with<bool>,
                     caf::reacts_to<flush_atom>, caf::reacts_to<probe_atom>>;

/// How the persistence actor batches.
struct persistence_settings {
  /// A batch is committed at once when it reaches this many changes.
  std::size_t max_batch = 2000;
  /// Extra wait to gather bigger batches; 0 = commit as soon as possible.
  std::chrono::milliseconds flush_interval{0};
  /// Back-off after a failed commit, doubled per failure up to 5 s.
  std::chrono::milliseconds retry_after{100};
  /// Without traffic, the database is checked this often (so that an
  /// outage shows on /readyz within about this long).
  std::chrono::milliseconds probe_every{1000};
  /// At most this many changes wait unwritten; beyond, a change for a new
  /// stream or limit is refused with `backlog_full`.
  std::size_t max_backlog = 100000;
};

/// What the persistence actor did, for `/metrics` and tests.
struct persistence_counters {
  /// Changes waiting for a commit (gauge).
  std::atomic<std::int64_t> queue_depth{0};
  /// Transactions committed (counter).
  std::atomic<std::uint64_t> commits{0};
  /// Changes received and changes written after coalescing (counters).
  std::atomic<std::uint64_t> changes_received{0};
  std::atomic<std::uint64_t> changes_written{0};
  /// Failed commits and probes (counter).
  std::atomic<std::uint64_t> errors{0};
  /// Changes refused because the backlog was full (counter).
  std::atomic<std::uint64_t> refused{0};
  /// Sum of commit durations in nanoseconds (counter).
  std::atomic<std::uint64_t> commit_ns{0};
  /// Size of the last committed batch (gauge).
  std::atomic<std::uint64_t> last_batch{0};
  /// False after a commit failed for want of a connection, true again after
  /// the next success.
  std::atomic<bool> reachable{true};
};

/// Starts the persistence actor, detached (it blocks on PostgreSQL in a
/// thread of its own), writing through `store` under `epochs`.
persistence_actor
spawn_persistence_actor(caf::actor_system& sys,
                        std::shared_ptr<stream_store> store,
                        shard_epochs epochs, persistence_settings settings,
                        std::shared_ptr<persistence_counters> counters);

} // namespace videostreams
