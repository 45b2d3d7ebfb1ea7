#include "persistence/schema.hpp"

#include "actors/shard_map.hpp"
#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

// Serializes migrators across processes: a constant advisory-lock key.
constexpr const char* lock_sql = "SELECT pg_advisory_xact_lock(7316853917)";

constexpr const char* bookkeeping_sql = R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    integer     PRIMARY KEY,
  name       text        NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
))sql";

caf::expected<void> run_in_transaction(pg_connection& db,
                                       const std::vector<std::string>& sql,
                                       const std::vector<std::string>& params
                                       = {}) {
  if (auto begun = db.exec("BEGIN"); !begun)
    return begun.error();
  for (std::size_t i = 0; i < sql.size(); ++i) {
    auto res = (i + 1 == sql.size() && !params.empty()) ? db.exec(sql[i],
                                                                  params)
                                                        : db.exec(sql[i]);
    if (!res) {
      db.exec("ROLLBACK");
      return res.error();
    }
  }
  if (auto done = db.exec("COMMIT"); !done)
    return done.error();
  return caf::unit;
}

caf::expected<std::vector<int>> applied_versions(pg_connection& db) {
  auto rows = db.exec("SELECT version FROM schema_migrations ORDER BY version");
  if (!rows)
    return rows.error();
  std::vector<int> result;
  for (int i = 0; i < rows->size(); ++i)
    result.push_back(std::stoi(rows->at(i, 0)));
  return result;
}

} // namespace

const std::vector<migration>& migrations() {
  static const std::vector<migration> all{
    {1, "stream sessions, user limits, shard epochs",
     R"sql(
CREATE TABLE stream_sessions (
  user_id     bigint      NOT NULL CHECK (user_id >= 0),
  -- The v2 session id, or an internal key for a stream opened by
  -- startstream (has_id = false: shown to clients with a null sessionId).
  stream_key  text        NOT NULL,
  has_id      boolean     NOT NULL,
  started_at  timestamptz NOT NULL,
  -- 0: never expires. On recovery every lease gets a fresh TTL.
  ttl_seconds integer     NOT NULL CHECK (ttl_seconds >= 0),
  expires_at  timestamptz,
  shard       integer     NOT NULL CHECK (shard >= 0),
  -- Fencing token: the owner epoch of the shard when this row was written.
  epoch       bigint      NOT NULL,
  PRIMARY KEY (user_id, stream_key)
);
CREATE INDEX stream_sessions_by_shard ON stream_sessions (shard);
CREATE TABLE user_limits (
  user_id     bigint  PRIMARY KEY CHECK (user_id >= 0),
  max_streams integer NOT NULL CHECK (max_streams BETWEEN 0 AND 1000),
  shard       integer NOT NULL CHECK (shard >= 0),
  epoch       bigint  NOT NULL
);
CREATE INDEX user_limits_by_shard ON user_limits (shard);
-- One row per shard: who owns it and under which epoch. The epoch rises
-- each time a node takes ownership (on one node: at each start).
CREATE TABLE shard_epochs (
  shard            integer     PRIMARY KEY CHECK (shard >= 0),
  owner            text        NOT NULL,
  epoch            bigint      NOT NULL,
  lease_expires_at timestamptz
))sql",
     R"sql(
DROP TABLE shard_epochs;
DROP TABLE user_limits;
DROP TABLE stream_sessions)sql"},
  };
  return all;
}

caf::expected<std::vector<int>> migrate(pg_connection& db) {
  if (auto ok = run_in_transaction(db, {lock_sql, bookkeeping_sql}); !ok)
    return ok.error();
  std::vector<int> applied_now;
  for (auto& m : migrations()) {
    // Re-read under the lock inside each transaction: another migrator may
    // have applied this version meanwhile.
    if (auto begun = db.exec("BEGIN"); !begun)
      return begun.error();
    auto fail = [&db](caf::error err) -> caf::expected<std::vector<int>> {
      db.exec("ROLLBACK");
      return err;
    };
    if (auto locked = db.exec(lock_sql); !locked)
      return fail(locked.error());
    auto done = db.exec("SELECT 1 FROM schema_migrations WHERE version = $1",
                        {std::to_string(m.version)});
    if (!done)
      return fail(done.error());
    if (done->size() > 0) {
      db.exec("ROLLBACK");
      continue;
    }
    if (auto up = db.exec(m.up); !up)
      return fail(up.error());
    auto recorded = db.exec(
      "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
      {std::to_string(m.version), m.name});
    if (!recorded)
      return fail(recorded.error());
    if (auto committed = db.exec("COMMIT"); !committed)
      return committed.error();
    applied_now.push_back(m.version);
  }
  return applied_now;
}

caf::expected<int> rollback(pg_connection& db) {
  if (auto ok = run_in_transaction(db, {lock_sql, bookkeeping_sql}); !ok)
    return ok.error();
  auto versions = applied_versions(db);
  if (!versions)
    return versions.error();
  if (versions->empty())
    return 0;
  auto newest = versions->back();
  const migration* m = nullptr;
  for (auto& x : migrations())
    if (x.version == newest)
      m = &x;
  if (m == nullptr)
    return make_error(persistence_error::schema,
                      "version " + std::to_string(newest)
                        + " was applied by a newer binary; roll it back "
                          "with that one");
  auto ok = run_in_transaction(
    db, {lock_sql, m->down, "DELETE FROM schema_migrations WHERE version = $1"},
    {std::to_string(newest)});
  if (!ok)
    return ok.error();
  return newest;
}

caf::expected<std::vector<migration_status>>
schema_status(pg_connection& db) {
  auto exists = db.exec("SELECT to_regclass('schema_migrations') IS NOT NULL");
  if (!exists)
    return exists.error();
  std::vector<migration_status> result;
  for (auto& m : migrations())
    result.push_back({m.version, m.name, {}});
  if (exists->at(0, 0) != "t")
    return result;
  auto rows = db.exec("SELECT version, name, applied_at FROM "
                      "schema_migrations ORDER BY version");
  if (!rows)
    return rows.error();
  for (int i = 0; i < rows->size(); ++i) {
    auto version = std::stoi(rows->at(i, 0));
    bool known = false;
    for (auto& s : result)
      if (s.version == version) {
        s.applied_at = rows->at(i, 2);
        known = true;
      }
    if (!known)
      result.push_back({version, rows->at(i, 1), rows->at(i, 2)});
  }
  return result;
}

caf::expected<void> seed(pg_connection& db) {
  // Users 1-3 with open streams (user 3 at the default limit of 3), user 4
  // with a limit of its own. Shards for the default of 128 shards.
  struct row {
    std::uint64_t user;
    const char* key;
    bool has_id;
    int ttl;
  };
  const row rows[] = {
    {1, "legacy-seed-1", false, 0},  {2, "tv-living-room", true, 3600},
    {2, "phone", true, 3600},        {3, "legacy-seed-1", false, 0},
    {3, "legacy-seed-2", false, 0},  {3, "legacy-seed-3", false, 0},
  };
  auto ok = db.exec("BEGIN");
  if (!ok)
    return ok.error();
  auto fail = [&db](caf::error err) -> caf::expected<void> {
    db.exec("ROLLBACK");
    return err;
  };
  for (auto& r : rows) {
    auto res = db.exec(
      "INSERT INTO stream_sessions (user_id, stream_key, has_id, started_at, "
      "ttl_seconds, expires_at, shard, epoch) VALUES ($1, $2, $3, now(), $4, "
      "CASE WHEN $4::int = 0 THEN NULL ELSE now() + make_interval(secs => "
      "$4::int) END, $5, 0) ON CONFLICT DO NOTHING",
      {std::to_string(r.user), r.key, r.has_id ? "true" : "false",
       std::to_string(r.ttl), std::to_string(shard_of(r.user, 128))});
    if (!res)
      return fail(res.error());
  }
  auto limit = db.exec("INSERT INTO user_limits (user_id, max_streams, shard, "
                       "epoch) VALUES (4, 5, $1, 0) ON CONFLICT DO NOTHING",
                       {std::to_string(shard_of(4, 128))});
  if (!limit)
    return fail(limit.error());
  if (auto done = db.exec("COMMIT"); !done)
    return done.error();
  return caf::unit;
}

} // namespace videostreams
