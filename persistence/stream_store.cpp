#include "persistence/stream_store.hpp"

#include <set>

#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

/// Builds a PostgreSQL array literal, e.g. {1,2,3} or {"a","b"}.
class array_literal {
public:
  void add(const std::string& element, bool quote) {
    text_ += text_.size() == 1 ? "" : ",";
    if (!quote) {
      text_ += element;
      return;
    }
    text_ += '"';
    for (char c : element) {
      if (c == '"' || c == '\\')
        text_ += '\\';
      text_ += c;
    }
    text_ += '"';
  }

  template <class T>
  void add(T value) {
    add(std::to_string(value), false);
  }

  std::string str() const {
    return text_ + "}";
  }

private:
  std::string text_ = "{";
};

// One statement, so one round trip and one implicit transaction. The fence
// locks the batch's shard rows (FOR SHARE: a node taking a shard over waits)
// and every write happens only if all of them still carry the writer's
// epochs; the statement answers whether they did.
constexpr const char* commit_sql = R"sql(
WITH fence AS (
  SELECT s.shard FROM shard_epochs AS s
  JOIN unnest($1::int[], $2::bigint[]) AS f(shard, epoch)
    ON s.shard = f.shard AND s.epoch = f.epoch
  FOR SHARE OF s
), ok AS (
  SELECT count(*) = cardinality($1::int[]) AS fine FROM fence
), grants AS (
  INSERT INTO stream_sessions (user_id, stream_key, has_id, started_at,
                               ttl_seconds, expires_at, shard, epoch)
  SELECT u, k, h, to_timestamp(s / 1000.0), t,
         CASE WHEN e = 0 THEN NULL ELSE to_timestamp(e / 1000.0) END, sh, ep
  FROM unnest($3::bigint[], $4::text[], $5::bool[], $6::bigint[], $7::int[],
              $8::bigint[], $9::int[], $10::bigint[])
       AS x(u, k, h, s, t, e, sh, ep)
  WHERE (SELECT fine FROM ok)
  ON CONFLICT (user_id, stream_key) DO UPDATE
  SET ttl_seconds = EXCLUDED.ttl_seconds, expires_at = EXCLUDED.expires_at,
      epoch = EXCLUDED.epoch
), closes AS (
  DELETE FROM stream_sessions AS s
  USING unnest($11::bigint[], $12::text[]) AS x(u, k)
  WHERE s.user_id = x.u AND s.stream_key = x.k AND (SELECT fine FROM ok)
), limits AS (
  INSERT INTO user_limits (user_id, max_streams, shard, epoch)
  SELECT * FROM unnest($13::bigint[], $14::int[], $15::int[], $16::bigint[])
  WHERE (SELECT fine FROM ok)
  ON CONFLICT (user_id) DO UPDATE
  SET max_streams = EXCLUDED.max_streams, epoch = EXCLUDED.epoch
), cleared AS (
  DELETE FROM user_limits
  WHERE user_id = ANY($17::bigint[]) AND (SELECT fine FROM ok)
)
SELECT fine FROM ok)sql";

} // namespace

caf::expected<shard_epochs>
stream_store::take_shards(const std::string& node,
                          const std::vector<std::uint32_t>& shards) {
  array_literal ids;
  for (auto s : shards)
    ids.add(s);
  auto rows = db_.exec(R"sql(
INSERT INTO shard_epochs (shard, owner, epoch)
SELECT s, $2, 1 FROM unnest($1::int[]) AS x(s)
ON CONFLICT (shard) DO UPDATE
SET owner = EXCLUDED.owner, epoch = shard_epochs.epoch + 1
RETURNING shard, epoch)sql",
                       {ids.str(), node});
  if (!rows)
    return rows.error();
  shard_epochs result;
  for (int i = 0; i < rows->size(); ++i)
    result[static_cast<std::uint32_t>(std::stoul(rows->at(i, 0)))]
      = std::stoll(rows->at(i, 1));
  return result;
}

caf::expected<std::map<std::uint64_t, user_streams>>
stream_store::load_users(const std::vector<std::uint32_t>& shards,
                         const clock_reading& now) {
  array_literal ids;
  for (auto s : shards)
    ids.add(s);
  std::map<std::uint64_t, user_streams> result;
  auto rows = db_.exec(
    "SELECT user_id, stream_key, has_id, "
    "(extract(epoch FROM started_at) * 1000)::bigint, ttl_seconds "
    "FROM stream_sessions WHERE shard = ANY($1::int[])",
    {ids.str()});
  if (!rows)
    return rows.error();
  for (int i = 0; i < rows->size(); ++i) {
    stream_session s;
    s.id = rows->at(i, 1);
    s.started_at_ms = std::stoll(rows->at(i, 3));
    s.ttl_seconds = static_cast<std::uint32_t>(std::stoul(rows->at(i, 4)));
    s.expires_at_ns = s.ttl_seconds == 0
                        ? 0
                        : now.mono_ns
                            + static_cast<std::int64_t>(s.ttl_seconds)
                                * 1'000'000'000;
    result[std::stoull(rows->at(i, 0))].restore(std::move(s));
  }
  auto limits = db_.exec("SELECT user_id, max_streams FROM user_limits "
                         "WHERE shard = ANY($1::int[])",
                         {ids.str()});
  if (!limits)
    return limits.error();
  for (int i = 0; i < limits->size(); ++i)
    result[std::stoull(limits->at(i, 0))].set_limit(
      static_cast<std::uint32_t>(std::stoul(limits->at(i, 1))));
  return result;
}

caf::expected<void> stream_store::commit(const std::vector<stream_change>& batch,
                                         const shard_epochs& epochs) {
  if (batch.empty())
    return caf::unit;
  std::set<std::uint32_t> shards;
  for (auto& c : batch)
    shards.insert(c.shard);
  auto epoch_of = [&epochs](std::uint32_t shard) {
    auto i = epochs.find(shard);
    return i == epochs.end() ? std::int64_t{-1} : i->second;
  };
  array_literal grant_users, grant_keys, grant_has_id, grant_started,
    grant_ttl, grant_expires, grant_shards, grant_epochs;
  array_literal close_users, close_keys;
  array_literal limit_users, limit_values, limit_shards, limit_epochs;
  array_literal cleared_users;
  for (auto& c : batch) {
    switch (c.kind) {
      case change_kind::grant:
        grant_users.add(c.user);
        grant_keys.add(c.key, true);
        grant_has_id.add(c.has_id ? "true" : "false", false);
        grant_started.add(c.started_at_ms);
        grant_ttl.add(c.ttl_seconds);
        grant_expires.add(c.expires_at_ms);
        grant_shards.add(c.shard);
        grant_epochs.add(epoch_of(c.shard));
        break;
      case change_kind::close:
        close_users.add(c.user);
        close_keys.add(c.key, true);
        break;
      case change_kind::set_limit:
        limit_users.add(c.user);
        limit_values.add(c.max_streams);
        limit_shards.add(c.shard);
        limit_epochs.add(epoch_of(c.shard));
        break;
      case change_kind::clear_limit:
        cleared_users.add(c.user);
        break;
    }
  }
  array_literal fence_shards, fence_epochs;
  for (auto shard : shards) {
    fence_shards.add(shard);
    fence_epochs.add(epoch_of(shard));
  }
  auto done = db_.exec_prepared(
    "videostreams_commit", commit_sql,
    {fence_shards.str(), fence_epochs.str(), grant_users.str(),
     grant_keys.str(), grant_has_id.str(), grant_started.str(),
     grant_ttl.str(), grant_expires.str(), grant_shards.str(),
     grant_epochs.str(), close_users.str(), close_keys.str(),
     limit_users.str(), limit_values.str(), limit_shards.str(),
     limit_epochs.str(), cleared_users.str()});
  if (!done)
    return done.error();
  if (done->size() != 1 || done->at(0, 0) != "t")
    return make_error(persistence_error::fenced,
                      "a shard of the batch has a newer owner epoch than "
                      "this writer's");
  return caf::unit;
}

} // namespace videostreams
