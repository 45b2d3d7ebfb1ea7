#pragma once

// A scratch database per test on the PostgreSQL that the ctest fixture
// started (its connection string is in the file named by
// VIDEOSTREAMS_TEST_DSN_FILE).

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "cluster/lease_store.hpp"
#include "persistence/persistence_error.hpp"
#include "persistence/pg_connection.hpp"
#include "persistence/schema.hpp"
#include "persistence/stream_store.hpp"

namespace videostreams::testing {

inline std::string server_dsn() {
  auto file = std::getenv("VIDEOSTREAMS_TEST_DSN_FILE");
  REQUIRE(file != nullptr);
  std::ifstream in{file};
  std::string dsn;
  std::getline(in, dsn);
  REQUIRE_FALSE(dsn.empty());
  return dsn;
}

inline pg_connection connect_or_fail(const std::string& dsn,
                                     pg_timeouts timeouts = {}) {
  auto db = pg_connection::connect(dsn, timeouts);
  if (!db)
    FAIL(describe(db.error()));
  return std::move(*db);
}

/// A fresh, empty database for one test, dropped afterwards.
struct scratch_database {
  scratch_database() {
    static std::atomic<int> counter{0};
    name = "t" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    auto admin = connect_or_fail(server_dsn());
    REQUIRE(admin.exec("CREATE DATABASE " + name));
    dsn = server_dsn();
    dsn.replace(dsn.find("dbname=postgres"), 15, "dbname=" + name);
  }

  ~scratch_database() {
    if (auto admin = pg_connection::connect(server_dsn()))
      admin->exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
  }

  pg_connection connect() {
    return connect_or_fail(dsn);
  }

  /// The first column of the first row of `sql`, as text.
  std::string query(const std::string& sql) {
    auto db = connect();
    auto rows = db.exec(sql);
    if (!rows)
      FAIL(describe(rows.error()));
    return rows->size() == 0 ? std::string{} : rows->at(0, 0);
  }

  int count(const std::string& sql) {
    return std::stoi(query(sql));
  }

  /// True if `name` is a table (not a view) of the public schema.
  bool has_table(const std::string& name) {
    return query("SELECT relkind FROM pg_class WHERE relname = '" + name
                 + "' AND relnamespace = 'public'::regnamespace")
           == "r";
  }

  /// True if `name` is a view of the public schema.
  bool has_view(const std::string& name) {
    return query("SELECT relkind FROM pg_class WHERE relname = '" + name
                 + "' AND relnamespace = 'public'::regnamespace")
           == "v";
  }

  std::string name;
  std::string dsn;
};

/// A scratch database with the schema migrated.
struct migrated_database : scratch_database {
  migrated_database() {
    auto db = connect();
    REQUIRE(migrate(db));
  }
};

/// Takes the leases of `shards` for `node` (for a minute) and has `store`
/// write for them, from their committed state, as a node taking them does.
inline shard_epochs own_shards(scratch_database& d, stream_store& store,
                               const std::string& node,
                               const std::vector<std::uint32_t>& shards) {
  auto leases = make_pg_lease_store(d.connect());
  auto taken = leases->take(node, shards, std::chrono::seconds{60});
  REQUIRE(taken);
  REQUIRE(taken->size() == shards.size());
  auto db = d.connect();
  auto state = read_committed_state(db, shards);
  REQUIRE(state);
  for (auto& [shard, epoch] : *taken)
    store.adopt(shard, epoch, state->shards[shard], state->position);
  return *taken;
}

/// Lets the leases of `shards` expire now, as if their owner had stopped
/// renewing them: another node may take them.
inline void expire_leases(scratch_database& d,
                          const std::vector<std::uint32_t>& shards) {
  std::string list;
  for (auto s : shards)
    list += (list.empty() ? "" : ",") + std::to_string(s);
  REQUIRE(d.connect().exec("UPDATE shard_leases SET expires_at = now() - "
                           "interval '1 second' WHERE shard IN ("
                           + list + ")"));
}

/// True if a commit succeeded and dropped nothing.
inline bool all_committed(const caf::expected<commit_result>& x) {
  return x && x->dropped.empty() && x->lost.empty();
}

} // namespace videostreams::testing
