#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <string_view>
#include <vector>

namespace videostreams {

/// The weight of `node` for `shard` in the rendezvous (highest random
/// weight) assignment: the shard goes to the live member with the highest
/// weight. A fixed function of the node id and the shard number only, so
/// every node computes the same owners from the same members, on any
/// machine and in any version: FNV-1a (64 bit) of the node id, mixed with
/// the shard number by SplitMix64's finalizer. It must never change.
std::uint64_t rendezvous_weight(std::string_view node,
                                std::uint32_t shard) noexcept;

/// The member of `candidates` that should own `shard` (the highest weight;
/// equal weights go to the smaller node id); "" when there is none. When a
/// member joins or leaves, only the shards it wins or held move: about
/// S/N of S shards for N members.
std::string target_of(std::uint32_t shard,
                      const std::vector<std::string>& candidates);

/// The target of every shard `0..shard_count-1`.
std::vector<std::string> assign(std::uint32_t shard_count,
                                const std::vector<std::string>& candidates);

} // namespace videostreams

namespace videostreams {

/// What this node does with one shard, as far as planning goes.
enum class shard_role : std::uint8_t {
  /// Not held here.
  none,
  /// Held here, on the way in (its lease being taken or its state loaded).
  arriving,
  /// Held and decided for here.
  serving,
  /// Held here, on the way out.
  leaving,
};

/// What a node knows when it plans: the targets, what it holds, and what
/// the lease table (or news) says of the rest.
struct plan_input {
  std::string self;
  /// This node is leaving: it takes nothing and gives everything away.
  bool leaving = false;
  /// The target owner of every shard (see `assign`); "" when none.
  std::vector<std::string> targets;
  std::vector<shard_role> roles;
  /// Per shard: the lease's owner ("" when free), and whether it is live
  /// (not expired by PostgreSQL's clock).
  std::vector<std::string> owners;
  std::vector<bool> live;
  /// Whether this node can reach a node (a connected link), by node id.
  std::function<bool(const std::string&)> reachable;
  /// Whether another node's expired lease may be taken now. Not until this
  /// node has reached the database for a lease TTL (after its start or an
  /// outage): the other nodes may not have reached it either, and those
  /// alive renew once they do.
  bool take_expired = true;
};

/// What a node should do now.
struct shard_plan {
  /// Shards to take: they target this node and their lease is free,
  /// expired (when `take_expired`), or this node id's own (left by an
  /// earlier process).
  std::vector<std::uint32_t> take;
  /// Shards served here to hand off, each with the node it goes to (""
  /// when no other node is left to take it: released only).
  std::vector<std::pair<std::uint32_t, std::string>> hand_off;
  /// Every shard that targets this node is served here.
  bool share_served = true;
};

/// Decides what a node takes and hands off. A shard served here whose
/// target is another node is handed off only once that node is reachable
/// (it must hear of the release and take the shard); a leaving node with
/// no other member left releases what it serves.
shard_plan plan_shards(const plan_input& in);

struct member_record;

/// Whether a shard may be handed to `node`, by the alive `members` a node
/// last read or heard of: one of them, and not leaving. A node that is not
/// among them takes nothing: it left the member table (two nodes leaving
/// at once: the other's hand-off must not name it), or has not joined as
/// far as this node knows (the shard's target is named instead).
bool takes_shards(const std::vector<member_record>& members,
                  std::string_view node);

/// The monotonic time until which a node may decide for a shard whose
/// lease was last taken or renewed by a statement sent at `renewed_ns`,
/// for a lease of `ttl`: a tenth of the TTL (at least 100 ms) before the
/// lease can expire by PostgreSQL's clock (whose `now()` in that statement
/// is later than `renewed_ns`). A node that has not seen another live
/// member since it started decides on (`alone`): no other node can take
/// its shards, and a database outage must not stop it (docs/api.md, promise
/// 4, "Database outage").
std::int64_t decision_deadline(std::int64_t renewed_ns,
                               std::chrono::milliseconds ttl, bool alone);

} // namespace videostreams
