#pragma once

// What the nodes of a cluster say to each other over CAF's middleman: user
// commands forwarded to the node that owns their shard, and the answers, in
// batches; and news of shards taken and released. Every type here is
// serializable (0.17-style `inspect`) and registered on every node by
// `register_cluster_message_types`.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "caf/atom.hpp"
#include "caf/fwd.hpp"
#include "caf/meta/type_name.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "actors/user_protocol.hpp"

namespace videostreams {

/// A command forwarded to the node that owns its user's shard; `id` is the
/// sending link's, to match the answer; `budget_ns` is the time its caller
/// still waited when it was sent (the receiver turns it back into an
/// `answer_by_ns` on its own clock; 0 = no limit); `referred_by` is, on a
/// second try, the node whose "not mine, ask this one" sent it here, and ""
/// on a first try.
struct forwarded_command {
  std::uint64_t id = 0;
  user_command cmd;
  std::int64_t budget_ns = 0;
  std::string referred_by;
  /// The sender's wall clock when it sent the command (ns since the
  /// epoch): the receiver deducts the time the command spent on the way,
  /// which the budget alone cannot show (a paused node reads it late).
  std::int64_t sent_wall_ns = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, forwarded_command& x) {
  return f(caf::meta::type_name("forwarded_command"), x.id, x.cmd,
           x.budget_ns, x.referred_by, x.sent_wall_ns);
}

/// Commands from one node's link to another node, in the order they were
/// sent (one message for all that gathered while the last was on its way).
struct forward_batch {
  std::vector<forwarded_command> commands;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, forward_batch& x) {
  return f(caf::meta::type_name("forward_batch"), x.commands);
}

/// How a forwarded command ended.
enum class forward_result : std::uint8_t {
  /// The owner decided: `reply` is its answer.
  served,
  /// The node asked does not own the shard; `owner_hint` names the node
  /// that should, if it knows one. The sender may try there, once.
  not_owner,
  /// No decision in time (the shard is changing hands, or its lease ran
  /// out): answer 503.
  unavailable,
};

/// The answer to one forwarded command.
struct forwarded_reply {
  std::uint64_t id = 0;
  forward_result result = forward_result::unavailable;
  user_reply reply;
  std::string owner_hint;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, forwarded_reply& x) {
  return f(caf::meta::type_name("forwarded_reply"), x.id, x.result, x.reply,
           x.owner_hint);
}

/// Answers to forwarded commands, batched like the commands.
struct reply_batch {
  std::vector<forwarded_reply> replies;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, reply_batch& x) {
  return f(caf::meta::type_name("reply_batch"), x.replies);
}

/// A shard's owner as a node learned it: `owner` holds the shard's lease at
/// `epoch`, or, when `owner` is empty, the lease of `epoch` was released
/// (handed off to `successor`, who takes it next; "" when none). Newer news
/// has a higher epoch, or the same epoch and no owner.
struct shard_claim {
  std::uint32_t shard = 0;
  std::int64_t epoch = 0;
  std::string owner;
  std::string successor;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shard_claim& x) {
  return f(caf::meta::type_name("shard_claim"), x.shard, x.epoch, x.owner,
           x.successor);
}

/// Shards a node just took or released, told to every peer so that they
/// route to the new owner before their next read of the lease table; and
/// whether the node that sends them is leaving the cluster (so that the
/// others stop counting on it before their next read of the member table).
struct shard_news {
  std::vector<shard_claim> claims;
  std::string sender;
  bool sender_leaving = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shard_news& x) {
  return f(caf::meta::type_name("shard_news"), x.claims, x.sender,
           x.sender_leaving);
}

/// What a node offers other nodes over the middleman (it is published on
/// the cluster port): forwarded commands, answered with a `reply_batch` to
/// the sender, and news of shards.
using cluster_endpoint
  = caf::typed_actor<caf::reacts_to<forward_batch>,
                     caf::reacts_to<shard_news>>;

/// Registers the types of this header with `cfg` (on every node).
void register_cluster_message_types(caf::actor_system_config& cfg);

/// The wall clock in ns since the epoch, as `forwarded_command` carries it.
inline std::int64_t wall_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace videostreams
