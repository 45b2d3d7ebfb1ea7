#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "caf/actor_addr.hpp"
#include "caf/actor.hpp"
#include "caf/fwd.hpp"
#include "caf/send.hpp"

#include "actors/clock.hpp"
#include "actors/shard_deadlines.hpp"
#include "actors/stream_change.hpp"
#include "actors/stream_counters.hpp"
#include "actors/user_protocol.hpp"
#include "actors/user_streams.hpp"

namespace videostreams {

/// What every user actor of a node shares: limits, lease lengths, the clock
/// and the counters.
struct user_settings {
  /// The stream limit of a user without a limit of its own.
  std::uint32_t default_limit = 3;
  /// Lease of a v2 session opened without `ttlSeconds`.
  std::uint32_t default_ttl_seconds = 60;
  /// Lease of a stream opened by `startstream`; 0 = never expires.
  std::uint32_t legacy_ttl_seconds = 0;
  /// Where the actors read the time; never null.
  std::shared_ptr<const time_source> clock
    = std::make_shared<system_time_source>();
  /// Where grants, denials and open streams are counted; never null.
  stream_counters* counters = nullptr;
  /// Who wakes a user actor when a lease is due: its shard, which keeps one
  /// queue of deadlines for all its users and checks it every tick. (A CAF
  /// timer per actor would keep a passivated actor's memory, and its
  /// pages, until the lease ran out.) A user actor asks with
  /// `(expire_atom, user, deadline)`. Weak, so the shard can go away.
  caf::actor_addr wake_up_target;
  /// Where every change to be persisted goes (`stream_change` messages,
  /// written behind; a sync grant as `(commit_atom, stream_change)`, which
  /// the sink answers in bounded time); null in memory-only mode.
  videostreams::change_sink change_sink;
  /// Until when this node may decide for each shard; null = always. Past
  /// its shard's deadline a user actor answers every command
  /// `unavailable` and changes nothing (its lease may be another node's).
  std::shared_ptr<const shard_deadlines> deadlines;
  /// The shard of the users these settings serve (written with changes),
  /// and the lease epoch of its tenure on this node (stamped on every
  /// change, checked with the decision deadline; 0 in memory).
  std::uint32_t shard = 0;
  std::int64_t epoch = 0;
  /// Durability `sync`: a new stream is answered only once the persistence
  /// actor confirmed its commit (the slot is reserved meanwhile); a commit
  /// that fails, or is not confirmed within the sink's commit timeout,
  /// undoes the grant, answers `unavailable` and writes a close for it.
  /// Needs `change_sink`.
  bool sync_grants = false;
};

/// Applies `cmd` to `streams` at time `now`: the one place where a command
/// becomes a decision. Expired leases are dropped first (and counted). A
/// stream opened by `startstream` gets a new internal key ('~' + 12 hex).
user_reply decide(user_streams& streams, const user_command& cmd,
                  const user_settings& settings, const clock_reading& now);

/// Drops the leases of `streams` that expired by `now` and counts them.
void expire_leases(user_streams& streams, const user_settings& settings,
                   const clock_reading& now);

/// Runs `change` on `streams` of `user` and sends what changed to
/// `settings.change_sink`, if there is one.
template <class F>
void with_persistence(user_streams& streams, std::uint64_t user,
                      const user_settings& settings, const clock_reading& now,
                      F change);

/// Starts the actor of `user`, continuing from `record` (empty for a user
/// with no open streams). The actor makes every decision about its user, one
/// message at a time, so concurrent requests can never both take the last
/// slot; it also closes its expired leases without waiting for a request.
user_actor spawn_user_actor(caf::actor_system& sys, std::uint64_t user,
                            user_streams record,
                            std::shared_ptr<const user_settings> settings);

template <class F>
void with_persistence(user_streams& streams, std::uint64_t user,
                      const user_settings& settings, const clock_reading& now,
                      F change) {
  if (!settings.change_sink) {
    change();
    return;
  }
  persisted_view before{streams};
  change();
  std::vector<stream_change> changes;
  before.changes_to(streams, user, settings.shard, settings.epoch, now,
                    changes);
  for (auto& c : changes)
    caf::anon_send(settings.change_sink, std::move(c));
}

} // namespace videostreams
