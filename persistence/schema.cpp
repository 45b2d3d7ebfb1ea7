#include "persistence/schema.hpp"

#include "actors/shard_map.hpp"
#include "persistence/array_literal.hpp"
#include "persistence/persistence_error.hpp"
#include "persistence/stream_store.hpp"

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

/// Runs `body` between BEGIN and COMMIT; when it fails, rolls back and
/// returns its error.
template <class T, class Body>
caf::expected<T> in_transaction(pg_connection& db, Body body) {
  if (auto begun = db.exec("BEGIN"); !begun)
    return begun.error();
  caf::expected<T> result = body();
  if (!result) {
    db.exec("ROLLBACK");
    return result;
  }
  if (auto done = db.exec("COMMIT"); !done)
    return done.error();
  return result;
}

caf::expected<void> run_in_transaction(pg_connection& db,
                                       const std::vector<std::string>& sql) {
  return in_transaction<void>(db, [&]() -> caf::expected<void> {
    for (auto& statement : sql)
      if (auto res = db.exec(statement); !res)
        return res.error();
    return caf::unit;
  });
}

/// Inside a transaction: an error naming the cluster's live members, if
/// it has any (a node must not run while its schema or its shards change
/// under it). Locks `cluster_members`, so that none joins meanwhile; a
/// schema without that table (before version 3) has no members.
caf::expected<void> refuse_live_members(pg_connection& db) {
  auto exists = db.exec("SELECT to_regclass('cluster_members') IS NOT NULL");
  if (!exists)
    return exists.error();
  if (exists->at(0, 0) != "t")
    return caf::unit;
  if (auto locked = db.exec("LOCK TABLE cluster_members IN EXCLUSIVE MODE");
      !locked)
    return locked.error();
  auto alive = db.exec(
    "SELECT count(*), coalesce(string_agg(node_id, ', ' ORDER BY node_id), "
    "'') FROM cluster_members "
    "WHERE heartbeat_at + lease_ttl_ms * interval '1 millisecond' > now()");
  if (!alive)
    return alive.error();
  if (alive->at(0, 0) != "0")
    return make_error(persistence_error::statement,
                      "refused: " + alive->at(0, 0)
                        + " cluster member(s) alive (" + alive->at(0, 1)
                        + "); stop every node first");
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

// Version 1's tables: a row per open stream and per limit. Version 2 turns
// them into views; its rollback brings them back.
constexpr const char* v1_tables_sql = R"sql(
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
CREATE INDEX user_limits_by_shard ON user_limits (shard);)sql";

// Milliseconds since the epoch as a timestamptz, and back.
#define VIDEOSTREAMS_MS_TO_TIME(ms)                                            \
  "('epoch'::timestamptz + (" ms ") * interval '1 millisecond')"
#define VIDEOSTREAMS_TIME_TO_MS(t)                                             \
  "(extract(epoch FROM " t ") * 1000)::bigint"

const std::vector<migration>& migrations() {
  static const std::string v1_up = std::string{v1_tables_sql} + R"sql(
-- One row per shard: who owns it and under which epoch. The epoch rises
-- each time a node takes ownership (on one node: at each start).
CREATE TABLE shard_epochs (
  shard            integer     PRIMARY KEY CHECK (shard >= 0),
  owner            text        NOT NULL,
  epoch            bigint      NOT NULL,
  lease_expires_at timestamptz
))sql";
  static const std::string v2_down = std::string{R"sql(
LOCK TABLE stream_journal, shard_snapshots IN EXCLUSIVE MODE;
ALTER VIEW stream_sessions RENAME TO stream_sessions_v2;
ALTER VIEW user_limits RENAME TO user_limits_v2;
)sql"} + v1_tables_sql + R"sql(
INSERT INTO stream_sessions SELECT * FROM stream_sessions_v2;
INSERT INTO user_limits SELECT * FROM user_limits_v2;
DROP VIEW stream_sessions_v2, user_limits_v2, stream_state, stream_events,
          limit_state, limit_events;
DROP TABLE shard_snapshots;
DROP TABLE stream_journal)sql";
  static const std::vector<migration> all{
    {1, "stream sessions, user limits, shard epochs", v1_up.c_str(),
     R"sql(
DROP TABLE shard_epochs;
DROP TABLE user_limits;
DROP TABLE stream_sessions)sql"},
    {2, "journal of committed batches, snapshots per shard",
     R"sql(
-- No writer may commit between the copy below and the drop (stop the
-- nodes first; this makes a running one wait, then fail).
LOCK TABLE stream_sessions, user_limits IN EXCLUSIVE MODE;
-- Every committed batch, in commit order: one row per commit, however
-- many changes it holds (a change costs array elements, not a row with
-- index entries of its own). Within a row each stream and each user's
-- limit appears at most once (the writer coalesces).
CREATE TABLE stream_journal (
  position         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  written_at       timestamptz NOT NULL DEFAULT now(),
  -- Streams opened (or their TTL changed); expiry 0 = never.
  grant_users      bigint[]    NOT NULL,
  grant_keys       text[]      NOT NULL,
  grant_has_ids    boolean[]   NOT NULL,
  grant_started_ms bigint[]    NOT NULL,
  grant_ttls       integer[]   NOT NULL,
  grant_expires_ms bigint[]    NOT NULL,
  grant_shards     integer[]   NOT NULL,
  grant_epochs     bigint[]    NOT NULL,
  -- Streams closed.
  close_users      bigint[]    NOT NULL,
  close_keys       text[]      NOT NULL,
  close_shards     integer[]   NOT NULL,
  -- Users given a limit of their own, and users back to the default.
  limit_users      bigint[]    NOT NULL,
  limit_values     integer[]   NOT NULL,
  limit_shards     integer[]   NOT NULL,
  limit_epochs     bigint[]    NOT NULL,
  cleared_users    bigint[]    NOT NULL,
  cleared_shards   integer[]   NOT NULL,
  CHECK (0 <= ALL (grant_users) AND 0 <= ALL (close_users)
         AND 0 <= ALL (limit_users) AND 0 <= ALL (cleared_users)),
  CHECK (0 <= ALL (grant_ttls)),
  CHECK (0 <= ALL (limit_values) AND 1000 >= ALL (limit_values)),
  CHECK (0 <= ALL (grant_shards) AND 0 <= ALL (close_shards)
         AND 0 <= ALL (limit_shards) AND 0 <= ALL (cleared_shards))
);
-- A shard's state as of a journal position (the journal up to there is
-- folded in; 0 = nothing folded yet): written by its owner from memory
-- every so often. Journal rows below every shard's position are deleted.
-- The arrays are stored uncompressed (compressing them costs more CPU
-- than the space is worth).
CREATE TABLE shard_snapshots (
  shard        integer     PRIMARY KEY CHECK (shard >= 0),
  position     bigint      NOT NULL,
  epoch        bigint      NOT NULL,
  taken_at     timestamptz NOT NULL DEFAULT now(),
  users        bigint[]    NOT NULL,
  keys         text[]      NOT NULL,
  has_ids      boolean[]   NOT NULL,
  started_ms   bigint[]    NOT NULL,
  ttls         integer[]   NOT NULL,
  expires_ms   bigint[]    NOT NULL,
  limit_users  bigint[]    NOT NULL,
  limit_values integer[]   NOT NULL,
  CHECK (0 <= ALL (users) AND 0 <= ALL (limit_users) AND 0 <= ALL (ttls)),
  CHECK (0 <= ALL (limit_values) AND 1000 >= ALL (limit_values))
);
ALTER TABLE shard_snapshots
  ALTER COLUMN users SET STORAGE EXTERNAL,
  ALTER COLUMN keys SET STORAGE EXTERNAL,
  ALTER COLUMN has_ids SET STORAGE EXTERNAL,
  ALTER COLUMN started_ms SET STORAGE EXTERNAL,
  ALTER COLUMN ttls SET STORAGE EXTERNAL,
  ALTER COLUMN expires_ms SET STORAGE EXTERNAL,
  ALTER COLUMN limit_users SET STORAGE EXTERNAL,
  ALTER COLUMN limit_values SET STORAGE EXTERNAL;
-- Version 1's rows become the first snapshots.
INSERT INTO shard_snapshots (shard, position, epoch, users, keys, has_ids,
                             started_ms, ttls, expires_ms, limit_users,
                             limit_values)
SELECT sh.shard, 0, greatest(coalesce(s.epoch, 0), coalesce(l.epoch, 0)),
       coalesce(s.users, '{}'), coalesce(s.keys, '{}'),
       coalesce(s.has_ids, '{}'), coalesce(s.started_ms, '{}'),
       coalesce(s.ttls, '{}'), coalesce(s.expires_ms, '{}'),
       coalesce(l.users, '{}'), coalesce(l.vals, '{}')
FROM (SELECT shard FROM stream_sessions UNION SELECT shard FROM user_limits
      UNION SELECT shard FROM shard_epochs) AS sh
LEFT JOIN (SELECT shard, max(epoch) AS epoch, array_agg(user_id) AS users,
                  array_agg(stream_key) AS keys, array_agg(has_id) AS has_ids,
                  array_agg()sql" VIDEOSTREAMS_TIME_TO_MS("started_at") R"sql()
                    AS started_ms,
                  array_agg(ttl_seconds) AS ttls,
                  array_agg(coalesce()sql" VIDEOSTREAMS_TIME_TO_MS("expires_at")
       R"sql(, 0))
                    AS expires_ms
           FROM stream_sessions GROUP BY shard) AS s ON s.shard = sh.shard
LEFT JOIN (SELECT shard, max(epoch) AS epoch, array_agg(user_id) AS users,
                  array_agg(max_streams) AS vals
           FROM user_limits GROUP BY shard) AS l ON l.shard = sh.shard;
DROP TABLE stream_sessions;
DROP TABLE user_limits;
-- Every stream event not folded into its shard's snapshot yet, and every
-- stream of the snapshots.
CREATE VIEW stream_events AS
SELECT s.shard, s.position, false AS journaled, true AS open, x.user_id,
       x.stream_key, x.has_id, x.started_ms, x.ttl_seconds, x.expires_ms,
       s.epoch
FROM shard_snapshots AS s,
     unnest(s.users, s.keys, s.has_ids, s.started_ms, s.ttls, s.expires_ms)
       AS x(user_id, stream_key, has_id, started_ms, ttl_seconds, expires_ms)
UNION ALL
SELECT x.shard, j.position, true, true, x.user_id, x.stream_key, x.has_id,
       x.started_ms, x.ttl_seconds, x.expires_ms, x.epoch
FROM stream_journal AS j,
     unnest(j.grant_users, j.grant_keys, j.grant_has_ids, j.grant_started_ms,
            j.grant_ttls, j.grant_expires_ms, j.grant_shards, j.grant_epochs)
       AS x(user_id, stream_key, has_id, started_ms, ttl_seconds, expires_ms,
            shard, epoch)
UNION ALL
SELECT x.shard, j.position, true, false, x.user_id, x.stream_key, NULL, NULL,
       NULL, NULL, NULL
FROM stream_journal AS j,
     unnest(j.close_users, j.close_keys, j.close_shards)
       AS x(user_id, stream_key, shard);
-- The open streams: per stream, its newest event, if that opened it.
CREATE VIEW stream_state AS
SELECT shard, user_id, stream_key, has_id, started_ms, ttl_seconds,
       expires_ms, epoch
FROM (SELECT DISTINCT ON (e.shard, e.user_id, e.stream_key) e.*
      FROM stream_events AS e
      LEFT JOIN shard_snapshots AS s ON s.shard = e.shard
      WHERE NOT e.journaled OR e.position > coalesce(s.position, 0)
      ORDER BY e.shard, e.user_id, e.stream_key, e.position DESC,
               e.journaled DESC) AS newest
WHERE open;
CREATE VIEW limit_events AS
SELECT s.shard, s.position, false AS journaled, x.user_id, x.max_streams,
       s.epoch
FROM shard_snapshots AS s,
     unnest(s.limit_users, s.limit_values) AS x(user_id, max_streams)
UNION ALL
SELECT x.shard, j.position, true, x.user_id, x.max_streams, x.epoch
FROM stream_journal AS j,
     unnest(j.limit_users, j.limit_values, j.limit_shards, j.limit_epochs)
       AS x(user_id, max_streams, shard, epoch)
UNION ALL
SELECT x.shard, j.position, true, x.user_id, NULL, NULL
FROM stream_journal AS j,
     unnest(j.cleared_users, j.cleared_shards) AS x(user_id, shard);
CREATE VIEW limit_state AS
SELECT shard, user_id, max_streams, epoch
FROM (SELECT DISTINCT ON (e.shard, e.user_id) e.*
      FROM limit_events AS e
      LEFT JOIN shard_snapshots AS s ON s.shard = e.shard
      WHERE NOT e.journaled OR e.position > coalesce(s.position, 0)
      ORDER BY e.shard, e.user_id, e.position DESC, e.journaled DESC)
       AS newest
WHERE max_streams IS NOT NULL;
-- What operators read, as version 1's tables had it: a row per open
-- stream, a row per user with a limit of its own.
CREATE VIEW stream_sessions AS
SELECT user_id, stream_key, has_id,
       )sql" VIDEOSTREAMS_MS_TO_TIME("started_ms") R"sql( AS started_at,
       ttl_seconds,
       CASE WHEN expires_ms = 0 THEN NULL
            ELSE )sql" VIDEOSTREAMS_MS_TO_TIME("expires_ms") R"sql( END
         AS expires_at,
       shard, epoch
FROM stream_state;
CREATE VIEW user_limits AS
SELECT user_id, max_streams, shard, epoch FROM limit_state)sql",
     v2_down.c_str()},
    {3, "cluster: members, shard leases, the shard count", R"sql(
-- Who owns each shard, under which epoch (the fencing token of every
-- write), until when: a lease. Taking one raises its epoch; a released
-- lease has no owner (and keeps its epoch, which fences its old owner).
ALTER TABLE shard_epochs RENAME TO shard_leases;
ALTER TABLE shard_leases RENAME COLUMN lease_expires_at TO expires_at;
ALTER TABLE shard_leases ALTER COLUMN owner DROP NOT NULL;
ALTER TABLE shard_leases
  ADD COLUMN state text NOT NULL DEFAULT 'unowned'
  CHECK (state IN ('loading', 'serving', 'handing-off', 'unowned'));
-- The nodes of the cluster. A member whose heartbeat is older than its
-- lease TTL is dead. `incarnation` tells a restarted process from the one
-- before it under the same node id.
CREATE TABLE cluster_members (
  node_id        text        PRIMARY KEY,
  incarnation    bigint      NOT NULL,
  advertise_host text        NOT NULL,
  http_port      integer     NOT NULL CHECK (http_port BETWEEN 0 AND 65535),
  cluster_port   integer     NOT NULL CHECK (cluster_port BETWEEN 0 AND 65535),
  status         text        NOT NULL
                 CHECK (status IN ('joining', 'up', 'leaving')),
  lease_ttl_ms   integer     NOT NULL CHECK (lease_ttl_ms > 0),
  started_at     timestamptz NOT NULL,
  heartbeat_at   timestamptz NOT NULL
);
-- The number of shards users are spread over (mix64(user) % shard_count):
-- set by the first node, changed only by `videostreams db reshard`.
CREATE TABLE cluster_settings (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  shard_count integer NOT NULL CHECK (shard_count BETWEEN 1 AND 65536)
);
-- A database a single node ran on: at each start that node took every
-- shard of its --shards, raising their epochs together, so the shards of
-- its last start are 0..N-1 at the highest epoch (rows of a larger
-- --shards used once before stay behind, at lower epochs). Rows that are
-- not shaped so (a cluster's, rolled back from this version) count all.
INSERT INTO cluster_settings (shard_count)
SELECT CASE WHEN max(shard) FILTER (WHERE latest) + 1
                 = count(*) FILTER (WHERE latest)
            THEN count(*) FILTER (WHERE latest)
            ELSE count(*) END
FROM (SELECT shard, epoch = max(epoch) OVER () AS latest
      FROM shard_leases) AS x
HAVING count(*) > 0)sql",
     R"sql(
DROP TABLE cluster_settings;
DROP TABLE cluster_members;
ALTER TABLE shard_leases DROP COLUMN state;
UPDATE shard_leases SET owner = '' WHERE owner IS NULL;
ALTER TABLE shard_leases ALTER COLUMN owner SET NOT NULL;
ALTER TABLE shard_leases RENAME COLUMN expires_at TO lease_expires_at;
ALTER TABLE shard_leases RENAME TO shard_epochs)sql"},
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
  // Never migrated: nothing to roll back, and nothing to create for it.
  auto exists = db.exec("SELECT to_regclass('schema_migrations') IS NOT NULL");
  if (!exists)
    return exists.error();
  if (exists->at(0, 0) != "t")
    return 0;
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
  return in_transaction<int>(db, [&]() -> caf::expected<int> {
    if (auto locked = db.exec(lock_sql); !locked)
      return locked.error();
    if (auto refused = refuse_live_members(db); !refused)
      return refused.error();
    if (auto down = db.exec(m->down); !down)
      return down.error();
    if (auto forgotten = db.exec("DELETE FROM schema_migrations WHERE "
                                 "version = $1",
                                 {std::to_string(newest)});
        !forgotten)
      return forgotten.error();
    return newest;
  });
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

caf::expected<bool> schema_migrated(pg_connection& db) {
  auto status = schema_status(db);
  if (!status)
    return status.error();
  for (auto& m : *status)
    if (m.applied_at.empty())
      return false;
  return true;
}

caf::expected<std::uint32_t> stored_shard_count(pg_connection& db,
                                               std::uint32_t wanted) {
  static constexpr const char* sql = R"sql(
WITH claimed AS (
  INSERT INTO cluster_settings (shard_count) VALUES ($1)
  ON CONFLICT (singleton) DO NOTHING
  RETURNING shard_count
)
SELECT shard_count FROM claimed
UNION ALL SELECT shard_count FROM cluster_settings)sql";
  // Two tries: a node starting at the same moment as another may find the
  // row neither inserted by itself nor visible to its statement yet.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto rows = db.exec(sql, {std::to_string(wanted)});
    if (!rows)
      return rows.error();
    if (rows->size() > 0)
      return static_cast<std::uint32_t>(std::stoul(rows->at(0, 0)));
  }
  return make_error(persistence_error::statement,
                    "cluster_settings holds no shard count");
}

namespace {

/// reshard's work, inside its transaction.
caf::expected<reshard_result> move_to_shards(pg_connection& db,
                                             std::uint32_t shards) {
  // No node may write while the state moves, and none may start meanwhile
  // (a starting node reads cluster_settings and joins cluster_members).
  auto locked = db.exec("LOCK TABLE cluster_settings, cluster_members, "
                        "shard_leases, shard_snapshots, stream_journal "
                        "IN EXCLUSIVE MODE");
  if (!locked)
    return locked.error();
  auto before = db.exec("SELECT shard_count FROM cluster_settings");
  if (!before)
    return before.error();
  reshard_result result;
  result.shards_before = before->size() == 0
                           ? 0
                           : static_cast<std::uint32_t>(
                             std::stoul(before->at(0, 0)));
  result.shards_after = shards;
  if (result.shards_before == shards)
    return result; // nothing to move
  if (auto refused = refuse_live_members(db); !refused)
    return refused.error();
  auto streams = db.exec("SELECT user_id, stream_key, has_id, started_ms, "
                         "ttl_seconds, expires_ms FROM stream_state");
  if (!streams)
    return streams.error();
  auto limits = db.exec("SELECT user_id, max_streams FROM limit_state");
  if (!limits)
    return limits.error();
  // Every stream and limit to its shard under the new count, as arrays.
  array_literal s_shards, s_users, s_keys, s_has_ids, s_started, s_ttls,
    s_expires, l_shards, l_users, l_values;
  for (int i = 0; i < streams->size(); ++i) {
    auto user = std::stoull(streams->at(i, 0));
    s_shards.add(shard_of(user, shards));
    s_users.add(user);
    s_keys.add(streams->at(i, 1), true);
    s_has_ids.add(streams->at(i, 2) == "t");
    s_started.add(std::stoll(streams->at(i, 3)));
    s_ttls.add(std::stoul(streams->at(i, 4)));
    s_expires.add(std::stoll(streams->at(i, 5)));
  }
  for (int i = 0; i < limits->size(); ++i) {
    auto user = std::stoull(limits->at(i, 0));
    l_shards.add(shard_of(user, shards));
    l_users.add(user);
    l_values.add(std::stoul(limits->at(i, 1)));
  }
  result.streams = static_cast<std::size_t>(streams->size());
  result.limits = static_cast<std::size_t>(limits->size());
  // The snapshots take everything at the newest position, so the journal
  // is empty afterwards; every lease gets an epoch above any before, so a
  // writer of the old layout could never pass a fence again.
  const std::vector<std::string> steps{
    R"sql(
CREATE TEMPORARY TABLE reshard_position ON COMMIT DROP AS
SELECT greatest((SELECT max(position) FROM stream_journal),
                (SELECT max(position) FROM shard_snapshots), 0) AS position,
       coalesce((SELECT max(epoch) FROM shard_leases), 0) + 1 AS epoch)sql",
    "DELETE FROM stream_journal",
    "DELETE FROM shard_snapshots",
  };
  for (auto& sql : steps)
    if (auto done = db.exec(sql); !done)
      return done.error();
  auto written = db.exec(R"sql(
WITH s AS (
  SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::boolean[],
                       $5::bigint[], $6::integer[], $7::bigint[])
    AS x(sh, u, k, h, st, t, e)
), l AS (
  SELECT * FROM unnest($8::int[], $9::bigint[], $10::integer[]) AS y(sh, u, m)
), streams AS (
  SELECT sh, array_agg(u ORDER BY u, k) AS users,
         array_agg(k ORDER BY u, k) AS keys,
         array_agg(h ORDER BY u, k) AS has_ids,
         array_agg(st ORDER BY u, k) AS started,
         array_agg(t ORDER BY u, k) AS ttls,
         array_agg(e ORDER BY u, k) AS expires
  FROM s GROUP BY sh
), lims AS (
  SELECT sh, array_agg(u ORDER BY u) AS users, array_agg(m ORDER BY u) AS vals
  FROM l GROUP BY sh
)
INSERT INTO shard_snapshots (shard, position, epoch, users, keys, has_ids,
                             started_ms, ttls, expires_ms, limit_users,
                             limit_values)
SELECT g.sh, p.position, p.epoch, coalesce(a.users, '{}'),
       coalesce(a.keys, '{}'), coalesce(a.has_ids, '{}'),
       coalesce(a.started, '{}'), coalesce(a.ttls, '{}'),
       coalesce(a.expires, '{}'), coalesce(b.users, '{}'),
       coalesce(b.vals, '{}')
FROM generate_series(0, $11::int - 1) AS g(sh)
CROSS JOIN reshard_position AS p
LEFT JOIN streams AS a ON a.sh = g.sh
LEFT JOIN lims AS b ON b.sh = g.sh)sql",
                         {s_shards.str(), s_users.str(), s_keys.str(),
                          s_has_ids.str(), s_started.str(), s_ttls.str(),
                          s_expires.str(), l_shards.str(), l_users.str(),
                          l_values.str(), std::to_string(shards)});
  if (!written)
    return written.error();
  // Leases of shards the new count has not go (a write for one finds no
  // lease and is fenced like any stale one): left at the newest epoch
  // they would look like shards of the new layout to whatever counts
  // them, migration 3 recomputing the count after a rollback included.
  const std::vector<std::string> leases{
    "DELETE FROM shard_leases WHERE shard >= " + std::to_string(shards),
    R"sql(
UPDATE shard_leases SET owner = NULL, expires_at = NULL, state = 'unowned',
       epoch = (SELECT epoch FROM reshard_position))sql",
    R"sql(
INSERT INTO shard_leases (shard, owner, epoch, expires_at, state)
SELECT g, NULL, (SELECT epoch FROM reshard_position), NULL, 'unowned'
FROM generate_series(0, )sql" + std::to_string(shards - 1) + R"sql() AS g
ON CONFLICT (shard) DO NOTHING)sql",
    R"sql(
INSERT INTO cluster_settings (shard_count) VALUES ()sql"
      + std::to_string(shards) + R"sql()
ON CONFLICT (singleton) DO UPDATE SET shard_count = EXCLUDED.shard_count)sql",
  };
  for (auto& sql : leases)
    if (auto done = db.exec(sql); !done)
      return done.error();
  return result;
}

} // namespace

caf::expected<reshard_result> reshard(pg_connection& db,
                                      std::uint32_t shards) {
  if (shards < 1 || shards > 65536)
    return make_error(persistence_error::statement,
                      "the shard count must lie within 1 and 65536");
  return in_transaction<reshard_result>(
    db, [&] { return move_to_shards(db, shards); });
}

namespace {

/// seed's work, inside its transaction.
caf::expected<void> write_seed(pg_connection& db) {
  if (auto refused = refuse_live_members(db); !refused)
    return refused.error();
  auto shard_count = stored_shard_count(db, 128);
  if (!shard_count)
    return shard_count.error();
  struct row {
    std::uint64_t user;
    const char* key;
    bool has_id;
    int ttl;
  };
  // A `startstream` stream's key is '~' and 12 hex digits, as the user
  // actor makes them (new_legacy_key): the '~' is what makes it one.
  const row rows[] = {
    {1, "~5eed00000001", false, 0}, {2, "tv-living-room", true, 3600},
    {2, "phone", true, 3600},       {3, "~5eed00000001", false, 0},
    {3, "~5eed00000002", false, 0}, {3, "~5eed00000003", false, 0},
  };
  array_literal users, keys, has_ids, ttls, shards;
  for (auto& r : rows) {
    users.add(r.user);
    keys.add(r.key, true);
    has_ids.add(r.has_id);
    ttls.add(r.ttl);
    shards.add(shard_of(r.user, *shard_count));
  }
  // One journal row with whatever of the seed is missing (nothing when it
  // is all there), under epoch 0; every shard it touches gets an empty
  // snapshot if it has none, as a shard taken over would.
  static const std::string sql = R"sql(
WITH now_ms AS (
  SELECT )sql" VIDEOSTREAMS_TIME_TO_MS("now()") R"sql( AS ms
), s AS (
  SELECT x.* FROM unnest($1::bigint[], $2::text[], $3::boolean[],
                         $4::integer[], $5::integer[]) AS x(u, k, h, t, sh)
  WHERE NOT EXISTS (SELECT 1 FROM stream_sessions AS o
                    WHERE o.user_id = x.u AND o.stream_key = x.k)
), l AS (
  SELECT 4::bigint AS u, 5 AS m, $6::integer AS sh
  WHERE NOT EXISTS (SELECT 1 FROM user_limits WHERE user_id = 4)
), snapshots AS (
  INSERT INTO shard_snapshots (shard, position, epoch, users, keys, has_ids,
                               started_ms, ttls, expires_ms, limit_users,
                               limit_values)
  SELECT sh, 0, 0, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'
  FROM (SELECT sh FROM s UNION SELECT sh FROM l) AS x
  ON CONFLICT (shard) DO NOTHING
)
INSERT INTO stream_journal )sql" + std::string{stream_store::journal_columns}
                                  + R"sql(
SELECT coalesce((SELECT array_agg(u) FROM s), '{}'),
       coalesce((SELECT array_agg(k) FROM s), '{}'),
       coalesce((SELECT array_agg(h) FROM s), '{}'),
       coalesce((SELECT array_agg(ms) FROM s, now_ms), '{}'),
       coalesce((SELECT array_agg(t) FROM s), '{}'),
       coalesce((SELECT array_agg(CASE WHEN t = 0 THEN 0
                                       ELSE ms + t * 1000 END)
                 FROM s, now_ms), '{}'),
       coalesce((SELECT array_agg(sh) FROM s), '{}'),
       coalesce((SELECT array_agg(0::bigint) FROM s), '{}'),
       '{}', '{}', '{}',
       coalesce((SELECT array_agg(u) FROM l), '{}'),
       coalesce((SELECT array_agg(m) FROM l), '{}'),
       coalesce((SELECT array_agg(sh) FROM l), '{}'),
       coalesce((SELECT array_agg(0::bigint) FROM l), '{}'),
       '{}', '{}'
WHERE EXISTS (SELECT 1 FROM s) OR EXISTS (SELECT 1 FROM l))sql";
  auto done = db.exec(sql, {users.str(), keys.str(), has_ids.str(),
                            ttls.str(), shards.str(),
                            std::to_string(shard_of(4, *shard_count))});
  if (!done)
    return done.error();
  return caf::unit;
}

} // namespace

caf::expected<void> seed(pg_connection& db) {
  // Users 1-3 with open streams (user 3 at the default limit of 3), user 4
  // with a limit of its own, on the stored shard count (the default of 128
  // becomes the stored one on a database no node used yet). It writes under
  // epoch 0, past every node's fence: refused while a node is alive.
  return in_transaction<void>(db, [&] { return write_seed(db); });
}

} // namespace videostreams
