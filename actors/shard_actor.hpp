#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "caf/fwd.hpp"
#include "caf/meta/type_name.hpp"

#include "actors/heap_trimmer.hpp"
#include "actors/user_actor.hpp"
#include "actors/user_protocol.hpp"

namespace videostreams {

/// With a user and its state: a user recovered from the database, to be held
/// as a passivated record. Alone: a barrier, answered with the number of
/// records held once every earlier restore was taken in.
using restore_atom = caf::atom_constant<caf::atom("restore")>;

/// Advances a shard's idle clock; sent by the shard to itself.
using tick_atom = caf::atom_constant<caf::atom("tick")>;

/// With an endpoint: the shard stops deciding. Every command it receives
/// from then on goes to that endpoint instead; it passivates every live user
/// (waiting for grants whose commit is pending) and answers with the number
/// of records it holds once no user actor is left, so every change of its
/// users has been sent to the change sink by then.
using handoff_atom = caf::atom_constant<caf::atom("handoff")>;

/// Undoes a hand-off: the shard decides again, from the records it kept.
using resume_atom = caf::atom_constant<caf::atom("resume")>;

/// The typed interface of a shard: it owns the users that hash to it,
/// starts their actors on first use, stops them when idle (keeping their open
/// streams as a compact record) and forwards every command to the right one.
using shard_actor = caf::typed_actor<
  caf::replies_to<user_command>::with<user_reply>,
  caf::reacts_to<local_call>,
  caf::reacts_to<tick_atom>,
  caf::reacts_to<expire_atom, std::uint64_t, std::int64_t>,
  caf::reacts_to<restore_atom, std::uint64_t, user_streams>,
  caf::replies_to<restore_atom>::with<std::uint64_t>,
  caf::replies_to<handoff_atom, user_endpoint>::with<std::uint64_t>,
  caf::reacts_to<resume_atom>>;

/// How a shard behaves.
struct shard_settings {
  /// Shared by all user actors of the node; each shard gives its own actors
  /// a copy that names the shard as their `wake_up_target`.
  std::shared_ptr<const user_settings> users;
  /// A user actor with no command for this long is stopped (passivated).
  std::chrono::milliseconds passivate_after{30000};
  /// Told how many actors and records the shard freed; may be null.
  heap_trimmer* trimmer = nullptr;
  /// This shard's number (`mix64(user) % shards`).
  std::uint32_t index = 0;
  /// The lease epoch this node holds the shard under (0 in memory).
  std::int64_t epoch = 0;
};

/// Starts a shard actor. When it terminates, for whatever reason, the open
/// streams and records it held leave the node's gauges.
shard_actor spawn_shard_actor(caf::actor_system& sys, shard_settings settings);

} // namespace videostreams
