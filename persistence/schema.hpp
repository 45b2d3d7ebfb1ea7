#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "caf/expected.hpp"

#include "persistence/pg_connection.hpp"

namespace videostreams {

/// One versioned step of the database schema, compiled into the binary.
struct migration {
  int version;
  const char* name;
  const char* up;
  const char* down;
};

/// Every migration, oldest first.
const std::vector<migration>& migrations();

/// A migration and whether (and when) it was applied.
struct migration_status {
  int version;
  std::string name;
  /// Empty when pending.
  std::string applied_at;
};

/// Applies every pending migration, each in its own transaction together
/// with its row in `schema_migrations`, under an advisory lock so that
/// concurrent migrators wait for each other. Returns the versions applied.
caf::expected<std::vector<int>> migrate(pg_connection& db);

/// Reverts the newest applied migration; returns its version, or 0 when
/// nothing was applied.
caf::expected<int> rollback(pg_connection& db);

/// Every migration this binary knows, with its state in the database.
caf::expected<std::vector<migration_status>> schema_status(pg_connection& db);

/// True when every migration this binary knows is applied: what a node
/// and the commands that write the current tables need.
caf::expected<bool> schema_migrated(pg_connection& db);

/// Inserts a few users with open streams and one with a limit of its own
/// (test data, like the original project's seed), on the stored shard
/// count (storing the default of 128 on a database no node used yet).
/// Idempotent. Needs the schema migrated.
caf::expected<void> seed(pg_connection& db);

/// The cluster's shard count as stored in the database; stores `wanted`
/// first when none is (the first node of a cluster does).
caf::expected<std::uint32_t> stored_shard_count(pg_connection& db,
                                               std::uint32_t wanted);

/// What `reshard` did.
struct reshard_result {
  /// The stored shard count before (0 when none was stored) and after.
  std::uint32_t shards_before = 0;
  std::uint32_t shards_after = 0;
  /// Open streams and own limits moved.
  std::size_t streams = 0;
  std::size_t limits = 0;
};

/// Changes the cluster's shard count to `shards` (1 to 65536), offline: in
/// one transaction, refused while any cluster member is alive, every open
/// stream and limit moves to its shard under the new count (a snapshot per
/// shard, the journal emptied), and every lease is freed under an epoch
/// above all before, so no writer of the old layout can pass a fence.
/// When the cluster has `shards` already, it changes nothing (members may
/// be alive then) and says so: `shards_before == shards_after`.
caf::expected<reshard_result> reshard(pg_connection& db,
                                      std::uint32_t shards);

} // namespace videostreams
