#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "caf/expected.hpp"

#include "persistence/pg_connection.hpp"
#include "actors/clock.hpp"
#include "actors/stream_change.hpp"
#include "actors/user_streams.hpp"

namespace videostreams {

/// The owner epoch of each shard a writer holds: its fencing tokens.
using shard_epochs = std::map<std::uint32_t, std::int64_t>;

/// Writes batches of changes to PostgreSQL, fenced by shard epochs.
class stream_store {
public:
  explicit stream_store(pg_connection db) : db_(std::move(db)) {
    // Nothing else to do.
  }

  /// Sets up this store's session for `commit` (again after every
  /// reconnect): see `writer_session_setup`. Fails on a server that cannot
  /// take those settings.
  caf::expected<void> prepare_for_commits() {
    return db_.set_session_setup(writer_session_setup);
  }

  /// The writer's session settings. Its commit is a prepared statement, so
  /// PostgreSQL plans it once (a generic plan) instead of parsing and
  /// planning it on every commit, which cost 40% of the server's CPU. A
  /// generic plan is made from the statistics of the moment, and on a
  /// young, empty table that is a sequential scan, kept for good; every
  /// statement of the writer touches rows by primary key, so sequential
  /// scans are ruled out for its session.
  static constexpr const char* writer_session_setup
    = "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off";

  /// Takes ownership of `shards` for `node`: each shard's epoch rises by
  /// one (from 0 for a shard never owned). Returns the new epochs.
  caf::expected<shard_epochs> take_shards(const std::string& node,
                                          const std::vector<std::uint32_t>&
                                            shards);

  /// Writes `batch` in one statement (one round trip, one transaction):
  /// arrays + unnest per kind of change, in data-modifying CTEs. Changes to
  /// the same stream or limit must already be coalesced. Fails with
  /// `persistence_error::fenced`, writing nothing, when any shard of the
  /// batch has an epoch other than the one in `epochs` (another node took it
  /// over); the shards' epoch rows are locked FOR SHARE meanwhile.
  caf::expected<void> commit(const std::vector<stream_change>& batch,
                             const shard_epochs& epochs);

  /// Every user with open streams or a limit of its own in `shards`, as
  /// the state its user actor continues from. Every lease gets a fresh TTL
  /// from `now` (its old deadline may have passed while no node served it).
  caf::expected<std::map<std::uint64_t, user_streams>>
  load_users(const std::vector<std::uint32_t>& shards,
             const clock_reading& now);

  /// The underlying connection (for probes and reconnects).
  pg_connection& connection() noexcept {
    return db_;
  }

private:
  pg_connection db_;
};

} // namespace videostreams
