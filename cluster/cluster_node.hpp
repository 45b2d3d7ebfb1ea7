#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "caf/atom.hpp"
#include "caf/fwd.hpp"
#include "caf/io/middleman_actor.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "actors/clock.hpp"
#include "actors/router.hpp"
#include "actors/shard_actor.hpp"
#include "actors/shard_deadlines.hpp"
#include "cluster/cluster_protocol.hpp"
#include "cluster/cluster_view.hpp"
#include "cluster/lease_keeper.hpp"
#include "cluster/peer_link.hpp"
#include "logging/event_log.hpp"
#include "persistence/persistence_actor.hpp"

namespace videostreams {

/// Retires a shard actor that no longer serves (after a grace period in
/// which it passes stray commands on).
using retire_atom = caf::atom_constant<caf::atom("retire")>;

/// The node's own round timer, with its number (others are ignored).
using tick_atom_round = caf::atom_constant<caf::atom("roundtick")>;

/// With the cluster port it was published on and the HTTP port it serves:
/// the node joins the cluster.
using join_atom = caf::atom_constant<caf::atom("join")>;

/// One node of the cluster (README.md, "Cluster"): it owns the shard table of
/// this node, takes and hands off shards, and is
/// - the gate: the route of every shard that is changing hands, holding
///   its commands (at most the request timeout) until an owner can decide;
/// - the endpoint other nodes forward commands to (published on the
///   cluster port), answering them in batches;
/// - the supervisor of the shard actors it starts.
/// Its database work (heartbeats, leases, loading shards) is done by the
/// lease keeper and the shard loader; without a database it is a cluster
/// of one that serves every shard at epoch 0.
using cluster_node_actor = caf::typed_actor<
  // The gate (user_endpoint).
  caf::replies_to<user_command>::with<user_reply>, caf::reacts_to<local_call>,
  // Other nodes (cluster_endpoint).
  caf::reacts_to<forward_batch>, caf::reacts_to<shard_news>,
  // The persistence actor (fence_listener).
  caf::reacts_to<fenced_atom, shard_epochs>,
  // Links (link_owner).
  caf::reacts_to<retry_atom, local_call, std::string, std::string>,
  caf::reacts_to<link_atom, std::string, bool>,
  // The service: join once published, leave (graceful stop) when asked;
  // a leave is answered when every shard has been handed off.
  caf::reacts_to<join_atom, std::uint16_t, std::uint16_t>,
  caf::replies_to<leave_atom>::with<bool>,
  // Its own timers and batches.
  caf::reacts_to<tick_atom_round, std::uint64_t>, caf::reacts_to<check_atom>,
  caf::reacts_to<send_atom>, caf::reacts_to<retire_atom, shard_actor>>;

/// How a cluster node is put together.
struct cluster_node_settings {
  /// This node as the member table shows it (id, incarnation, address,
  /// ports, lease TTL).
  member_self self;
  std::uint32_t shard_count = 128;
  /// Heartbeats (and reads of the lease table) this often.
  std::chrono::milliseconds heartbeat_every{1000};
  /// How long a command may be held while its shard changes hands, and
  /// how long a forwarded command may wait for its answer.
  std::chrono::milliseconds request_timeout{2000};
  /// The lease of a stream opened by `startstream` (0 = never expires):
  /// given, from its start, to such a stream loaded without one.
  std::uint32_t legacy_stream_ttl_seconds = 0;
  /// Where shard actors read the time (the decision deadlines too).
  std::shared_ptr<const time_source> clock;
  /// Makes a fresh, empty actor for a shard held under an epoch.
  std::function<shard_actor(std::uint32_t, std::int64_t)> spawn_shard;
  /// The routes this node keeps pointing at the right endpoint.
  std::shared_ptr<router> routes;
  /// Until when the user actors may decide, per shard.
  std::shared_ptr<shard_deadlines> deadlines;
  /// With a database: where changes go, the lease keeper, the shard
  /// loader and the middleman (for links). All null in memory.
  persistence_actor persistence;
  lease_keeper_actor keeper;
  shard_loader_actor loader;
  caf::io::middleman_actor middleman;
  std::shared_ptr<cluster_counters> counters;
  /// Where this node publishes what it knows of the cluster.
  std::shared_ptr<cluster_view_box> view;
  /// Called once, when this node first serves every shard that targets it
  /// (at once in memory).
  std::function<void()> on_up;
  /// Called (with the reason) when this process must not serve any more: a
  /// newer process took its node id over, or the cluster's shard count
  /// changed under it.
  std::function<void(const std::string&)> on_out_of_service;
  /// Where the node reports its events (shards taken, handed off,
  /// fenced; members joined and left; failures); null: nowhere.
  std::shared_ptr<const event_log> log;
};

/// Starts the node. It points every route at itself at once; in memory it
/// then serves every shard, with a database it joins the cluster once told
/// its ports (`join_atom`; in memory they are only shown).
cluster_node_actor spawn_cluster_node(caf::actor_system& sys,
                                      cluster_node_settings settings);

} // namespace videostreams
