#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "caf/expected.hpp"

#include "persistence/pg_connection.hpp"
#include "persistence/stream_store.hpp"

namespace videostreams {

/// This node as it records itself in the member table.
struct member_self {
  std::string node_id;
  /// Tells this process from an earlier or later one under the same id.
  std::uint64_t incarnation = 0;
  std::string advertise_host;
  int http_port = 0;
  int cluster_port = 0;
  /// "joining", "up" or "leaving".
  std::string status = "joining";
  std::chrono::milliseconds lease_ttl{5000};
};

/// A member as the member table has it.
struct member_record {
  std::string node_id;
  std::uint64_t incarnation = 0;
  std::string advertise_host;
  int http_port = 0;
  int cluster_port = 0;
  std::string status;
  /// RFC 3339 (UTC).
  std::string last_heartbeat;
  /// Its heartbeat is younger than its lease TTL, by PostgreSQL's clock.
  bool alive = false;
  /// Milliseconds until it counts as dead (negative: dead since).
  std::int64_t expires_in_ms = 0;
};

/// A shard's lease as the lease table has it.
struct lease_record {
  std::uint32_t shard = 0;
  /// "" when no node holds it (never taken, or released).
  std::string owner;
  std::int64_t epoch = 0;
  /// "loading", "serving", "handing-off" or "unowned", as its owner said.
  std::string state = "unowned";
  /// It has an owner and has not expired, by PostgreSQL's clock.
  bool live = false;
  /// Milliseconds until it expires (negative: expired since; 0 without one).
  std::int64_t expires_in_ms = 0;
};

/// One read of the member and lease tables.
struct cluster_reading {
  /// The cluster's shard count as stored (0 when none is).
  std::uint32_t shard_count = 0;
  std::vector<member_record> members;
  /// Every shard below the shard count that has a lease row.
  std::vector<lease_record> leases;
};

/// A lease this node holds, to renew (with the state its owner reports).
struct held_lease {
  std::uint32_t shard = 0;
  std::int64_t epoch = 0;
  std::string state;
};

/// The cluster's coordination in PostgreSQL: members with heartbeats and
/// shard leases. PostgreSQL's `now()` is the only clock that decides
/// whether a heartbeat or a lease expired. Blocking; used by one detached
/// actor at a time (the lease keeper). The cluster's I/O boundary: its
/// SQL is tested against a real PostgreSQL (tests/db), the logic above it
/// as pure functions (`plan_shards`, `decision_deadline`) and end to end.
class lease_store {
public:
  virtual ~lease_store() = default;

  /// Enters `self` in the member table, taking the row of any earlier
  /// process under the same node id (a restart).
  virtual caf::expected<void> join(const member_self& self) = 0;

  /// Renews `self`'s heartbeat and status; false (and nothing written)
  /// when a newer process of the same node id has taken its row over.
  virtual caf::expected<bool> heartbeat(const member_self& self) = 0;

  /// Removes `self` from the member table (a graceful leave).
  virtual caf::expected<void> leave(const member_self& self) = 0;

  /// Reads every member, the leases of shards `0..shard_count-1` and the
  /// stored shard count.
  virtual caf::expected<cluster_reading> read(std::uint32_t shard_count) = 0;

  /// Takes the leases of `shards` that are free, expired or already
  /// `node`'s (a restart takes its own back at once), in one statement;
  /// each taken lease's epoch rises, and it runs `ttl` from now. Returns
  /// the shards taken with their new epochs.
  virtual caf::expected<shard_epochs>
  take(const std::string& node, const std::vector<std::uint32_t>& shards,
       std::chrono::milliseconds ttl)
    = 0;

  /// Extends the leases of `held` that `node` still holds at their epochs
  /// to `ttl` from now, in one statement; returns those it extended.
  virtual caf::expected<std::vector<std::uint32_t>>
  renew(const std::string& node, const std::vector<held_lease>& held,
        std::chrono::milliseconds ttl)
    = 0;

  /// Gives up the leases of `held` that `node` still holds at their epochs
  /// (they become free; their epochs stay, fencing `node`'s writes);
  /// returns those it released.
  virtual caf::expected<std::vector<std::uint32_t>>
  release(const std::string& node, const shard_epochs& held) = 0;
};

/// The lease store on a PostgreSQL connection.
std::unique_ptr<lease_store> make_pg_lease_store(pg_connection db);

} // namespace videostreams
