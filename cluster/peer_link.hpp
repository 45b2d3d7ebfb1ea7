#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "caf/atom.hpp"
#include "caf/fwd.hpp"
#include "caf/io/middleman_actor.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "actors/user_protocol.hpp"
#include "cluster/cluster_protocol.hpp"
#include "cluster/cluster_view.hpp"

namespace videostreams {

/// With a local call: this command is to be tried at another node, after
/// the node named (the referrer) sent it back as not its own.
using retry_atom = caf::atom_constant<caf::atom("retry")>;

/// A link's news for its node: (link, peer id, connected).
using link_atom = caf::atom_constant<caf::atom("link")>;

/// Sends what gathered (the node, its answers to other nodes).
using send_atom = caf::atom_constant<caf::atom("send")>;

/// A link's periodic check: answers commands that waited too long and
/// reconnects after a back-off.
using check_atom = caf::atom_constant<caf::atom("check")>;

/// What a link tells the node it belongs to: a command the peer (first
/// string) sent back as not its own, to try once more at the node the peer
/// named (second string, "" for none known); and whether the link is
/// connected.
using link_owner = caf::typed_actor<
  caf::reacts_to<retry_atom, local_call, std::string, std::string>,
  caf::reacts_to<link_atom, std::string, bool>>;

/// The route of every shard that one other node owns: the router (for the
/// HTTP workers) and the cluster node hand it the commands for that node,
/// and that node sends it the answers. It is an actor without a mailbox or
/// a thread (a `caf::actor_companion`): it handles each message in the
/// thread that sends it. A command goes from the HTTP worker straight to
/// the middleman, and its answer from the middleman's thread straight to
/// the waiting worker, without a hop through a scheduler thread either
/// way (see ../bench/README.md, "A cluster against one node"). While its
/// link is not connected, commands are answered `unavailable` at once
/// (503), never held, except during the very first connect. A command not
/// answered within the request timeout is answered `unavailable`. A command
/// the peer does not own goes back to the node to be tried at the owner it
/// names, once (`retry_atom`, with the referrer: the second try, whose
/// answer is final).
using peer_gateway = caf::typed_actor<
  caf::replies_to<user_command>::with<user_reply>, caf::reacts_to<local_call>,
  caf::reacts_to<retry_atom, local_call, std::string>,
  caf::reacts_to<reply_batch>>;

/// The actor of a link: connects off the request path, with timeouts of
/// its own, watches the connection, answers the commands that waited too
/// long, and carries the node's shard news to the peer. Its exit closes
/// the gateway (every command still waiting is answered 503).
using peer_link_actor
  = caf::typed_actor<caf::reacts_to<shard_news>, caf::reacts_to<check_atom>>;

/// The link from this node to one other node: its actor and its gateway.
struct peer_link {
  peer_link_actor actor;
  peer_gateway gateway;
};

/// Where a link connects and how long it waits.
struct peer_link_settings {
  /// The peer's node id, host and cluster port.
  std::string node_id;
  std::string host;
  std::uint16_t port = 0;
  /// How long a forwarded command may wait for its answer.
  std::chrono::milliseconds request_timeout{2000};
  /// How long one connection attempt may take.
  std::chrono::milliseconds connect_timeout{3000};
  /// The node this link belongs to.
  link_owner owner;
  /// The middleman's asynchronous interface (connects without blocking).
  caf::io::middleman_actor middleman;
  std::shared_ptr<peer_counters> counters;
};

/// Starts a link; it connects at once.
peer_link spawn_peer_link(caf::actor_system& sys, peer_link_settings settings);

} // namespace videostreams
