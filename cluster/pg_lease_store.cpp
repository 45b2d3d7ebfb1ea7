#include "cluster/lease_store.hpp"

#include "persistence/array_literal.hpp"
#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

// Milliseconds from PostgreSQL's now() to a timestamp (negative: past).
#define VIDEOSTREAMS_MS_FROM_NOW(t)                                            \
  "coalesce((extract(epoch FROM (" t " - now())) * 1000)::bigint, 0)"

// A member's row as this process enters it: by a join, and by a heartbeat
// that finds its row gone (an operator removed it).
#define VIDEOSTREAMS_ENTER_MEMBER                                              \
  "INSERT INTO cluster_members (node_id, incarnation, advertise_host, "       \
  "http_port, cluster_port, status, lease_ttl_ms, started_at, heartbeat_at) " \
  "VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now()) "                        \
  "ON CONFLICT (node_id) DO UPDATE "

constexpr const char* join_sql = VIDEOSTREAMS_ENTER_MEMBER R"sql(
SET incarnation = EXCLUDED.incarnation,
    advertise_host = EXCLUDED.advertise_host,
    http_port = EXCLUDED.http_port, cluster_port = EXCLUDED.cluster_port,
    status = EXCLUDED.status, lease_ttl_ms = EXCLUDED.lease_ttl_ms,
    started_at = now(), heartbeat_at = now())sql";

// Written only while the row is still this process's.
constexpr const char* heartbeat_sql = VIDEOSTREAMS_ENTER_MEMBER R"sql(
SET status = EXCLUDED.status, lease_ttl_ms = EXCLUDED.lease_ttl_ms,
    heartbeat_at = now()
WHERE cluster_members.incarnation = EXCLUDED.incarnation
RETURNING 1)sql";

constexpr const char* members_sql = R"sql(
SELECT node_id, incarnation, advertise_host, http_port, cluster_port, status,
       to_char(heartbeat_at AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       heartbeat_at + lease_ttl_ms * interval '1 millisecond' > now(),
       )sql" VIDEOSTREAMS_MS_FROM_NOW(
  "heartbeat_at + lease_ttl_ms * interval '1 millisecond'") R"sql(
FROM cluster_members ORDER BY node_id)sql";

constexpr const char* shard_count_sql
  = "SELECT shard_count FROM cluster_settings";

constexpr const char* leases_sql = R"sql(
SELECT shard, owner, epoch, state,
       owner IS NOT NULL AND expires_at IS NOT NULL AND expires_at > now(),
       )sql" VIDEOSTREAMS_MS_FROM_NOW("expires_at") R"sql(
FROM shard_leases WHERE shard < $1 ORDER BY shard)sql";

// Free, expired or already ours: taken, under a higher epoch (a new row
// starts above every epoch there is, so that a lease row removed by hand
// cannot bring an old epoch back). Every taken shard gets an empty
// snapshot if it has none, so that the journal's trim always knows where
// each shard's state starts.
constexpr const char* take_sql = R"sql(
WITH taken AS (
  INSERT INTO shard_leases (shard, owner, epoch, expires_at, state)
  SELECT s, $2, coalesce((SELECT max(epoch) FROM shard_leases), 0) + 1,
         now() + $3 * interval '1 millisecond', 'loading'
  FROM unnest($1::int[]) AS x(s)
  -- Rows are locked in shard order, whatever order the caller gives, so
  -- that two takes of overlapping shards cannot deadlock.
  ORDER BY s
  ON CONFLICT (shard) DO UPDATE
  SET owner = EXCLUDED.owner, epoch = shard_leases.epoch + 1,
      expires_at = EXCLUDED.expires_at, state = 'loading'
  WHERE shard_leases.owner IS NULL OR shard_leases.owner = $2
     OR shard_leases.expires_at IS NULL OR shard_leases.expires_at <= now()
  RETURNING shard, epoch
), snapshots AS (
  INSERT INTO shard_snapshots (shard, position, epoch, users, keys, has_ids,
                               started_ms, ttls, expires_ms, limit_users,
                               limit_values)
  SELECT shard, 0, epoch, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'
  FROM taken
  -- Not even trying where a snapshot exists: the insert would wait for a
  -- fold that holds that row (seconds), and this keeper with it.
  WHERE NOT EXISTS (SELECT 1 FROM shard_snapshots AS o
                    WHERE o.shard = taken.shard)
  ON CONFLICT (shard) DO NOTHING
)
SELECT shard, epoch FROM taken)sql";

// Renewal and release lock their rows in shard order first, as the commit
// fence and the take do: rows locked in the plan's order (heap order, say)
// could deadlock with a commit or a take of another node.
constexpr const char* renew_sql = R"sql(
WITH mine AS (
  SELECT l.shard, x.state
  FROM shard_leases AS l
  JOIN unnest($2::int[], $3::bigint[], $4::text[]) AS x(shard, epoch, state)
    ON l.shard = x.shard AND l.epoch = x.epoch AND l.owner = $1
  ORDER BY l.shard
  FOR NO KEY UPDATE OF l
)
UPDATE shard_leases AS l
SET expires_at = now() + $5 * interval '1 millisecond', state = mine.state
FROM mine WHERE l.shard = mine.shard
RETURNING l.shard)sql";

constexpr const char* release_sql = R"sql(
WITH mine AS (
  SELECT l.shard
  FROM shard_leases AS l
  JOIN unnest($2::int[], $3::bigint[]) AS x(shard, epoch)
    ON l.shard = x.shard AND l.epoch = x.epoch AND l.owner = $1
  ORDER BY l.shard
  FOR NO KEY UPDATE OF l
)
UPDATE shard_leases AS l
SET owner = NULL, expires_at = NULL, state = 'unowned'
FROM mine WHERE l.shard = mine.shard
RETURNING l.shard)sql";

std::vector<std::string> self_params(const member_self& self) {
  return {self.node_id,
          std::to_string(static_cast<std::int64_t>(self.incarnation)),
          self.advertise_host,
          std::to_string(self.http_port),
          std::to_string(self.cluster_port),
          self.status,
          std::to_string(self.lease_ttl.count())};
}

std::vector<std::uint32_t> shards_of(const pg_rows& rows) {
  std::vector<std::uint32_t> result;
  for (int i = 0; i < rows.size(); ++i)
    result.push_back(static_cast<std::uint32_t>(std::stoul(rows.at(i, 0))));
  return result;
}

class pg_lease_store final : public lease_store {
public:
  explicit pg_lease_store(pg_connection db) : db_(std::move(db)) {
    // Nothing else to do.
  }

  caf::expected<void> join(const member_self& self) override {
    return run(join_sql, self_params(self), true);
  }

  caf::expected<bool> heartbeat(const member_self& self) override {
    auto rows = exec(heartbeat_sql, self_params(self), true);
    if (!rows)
      return rows.error();
    return rows->size() == 1;
  }

  caf::expected<void> leave(const member_self& self) override {
    return run("DELETE FROM cluster_members WHERE node_id = $1 "
               "AND incarnation = $2",
               {self.node_id,
                std::to_string(static_cast<std::int64_t>(self.incarnation))},
               true);
  }

  caf::expected<cluster_reading> read(std::uint32_t shard_count) override {
    auto members = exec(members_sql, {}, true);
    if (!members)
      return members.error();
    auto leases = exec(leases_sql, {std::to_string(shard_count)}, true);
    if (!leases)
      return leases.error();
    auto count = exec(shard_count_sql, {}, true);
    if (!count)
      return count.error();
    cluster_reading result;
    if (count->size() == 1)
      result.shard_count = static_cast<std::uint32_t>(
        std::stoul(count->at(0, 0)));
    for (int i = 0; i < members->size(); ++i) {
      member_record m;
      m.node_id = members->at(i, 0);
      m.incarnation = static_cast<std::uint64_t>(std::stoll(members->at(i, 1)));
      m.advertise_host = members->at(i, 2);
      m.http_port = std::stoi(members->at(i, 3));
      m.cluster_port = std::stoi(members->at(i, 4));
      m.status = members->at(i, 5);
      m.last_heartbeat = members->at(i, 6);
      m.alive = members->at(i, 7) == "t";
      m.expires_in_ms = std::stoll(members->at(i, 8));
      result.members.push_back(std::move(m));
    }
    for (int i = 0; i < leases->size(); ++i) {
      lease_record l;
      l.shard = static_cast<std::uint32_t>(std::stoul(leases->at(i, 0)));
      l.owner = leases->at(i, 1);
      l.epoch = std::stoll(leases->at(i, 2));
      l.state = leases->at(i, 3);
      l.live = leases->at(i, 4) == "t";
      l.expires_in_ms = std::stoll(leases->at(i, 5));
      result.leases.push_back(std::move(l));
    }
    return result;
  }

  caf::expected<shard_epochs> take(const std::string& node,
                                   const std::vector<std::uint32_t>& shards,
                                   std::chrono::milliseconds ttl) override {
    array_literal ids;
    for (auto s : shards)
      ids.add(s);
    auto rows = exec(take_sql, {ids.str(), node, std::to_string(ttl.count())},
                     false);
    if (!rows)
      return rows.error();
    shard_epochs result;
    for (int i = 0; i < rows->size(); ++i)
      result[static_cast<std::uint32_t>(std::stoul(rows->at(i, 0)))]
        = std::stoll(rows->at(i, 1));
    return result;
  }

  caf::expected<std::vector<std::uint32_t>>
  renew(const std::string& node, const std::vector<held_lease>& held,
        std::chrono::milliseconds ttl) override {
    array_literal shards, epochs, states;
    for (auto& h : held) {
      shards.add(h.shard);
      epochs.add(h.epoch);
      states.add(h.state, true);
    }
    auto rows = exec(renew_sql,
                     {node, shards.str(), epochs.str(), states.str(),
                      std::to_string(ttl.count())},
                     true);
    if (!rows)
      return rows.error();
    return shards_of(*rows);
  }

  caf::expected<std::vector<std::uint32_t>>
  release(const std::string& node, const shard_epochs& held) override {
    array_literal shards, epochs;
    for (auto& [shard, epoch] : held) {
      shards.add(shard);
      epochs.add(epoch);
    }
    auto rows = exec(release_sql, {node, shards.str(), epochs.str()}, false);
    if (!rows)
      return rows.error();
    return shards_of(*rows);
  }

private:
  /// Runs a statement. After a lost connection it reconnects; a statement
  /// that can be repeated safely (`repeatable`) then runs again at once.
  /// (Taking or releasing twice could: the first may have committed.)
  caf::expected<pg_rows> exec(const char* sql,
                              const std::vector<std::string>& params,
                              bool repeatable) {
    auto rows = db_.exec(sql, params);
    if (!rows && is(rows.error(), persistence_error::unreachable)
        && db_.reset() && repeatable)
      rows = db_.exec(sql, params);
    return rows;
  }

  caf::expected<void> run(const char* sql,
                          const std::vector<std::string>& params,
                          bool repeatable) {
    auto rows = exec(sql, params, repeatable);
    if (!rows)
      return rows.error();
    return caf::unit;
  }

  pg_connection db_;
};

} // namespace

std::unique_ptr<lease_store> make_pg_lease_store(pg_connection db) {
  return std::make_unique<pg_lease_store>(std::move(db));
}

} // namespace videostreams
