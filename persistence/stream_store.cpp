#include "persistence/stream_store.hpp"

#include <algorithm>
#include <set>

#include "persistence/array_literal.hpp"

#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

// The shards of $1 that still carry the epochs of $2, their epoch rows
// locked FOR SHARE (a node taking a shard over waits for the lock).
constexpr const char* fence_sql = R"sql(
  SELECT s.shard FROM shard_epochs AS s
  JOIN unnest($1::int[], $2::bigint[]) AS f(shard, epoch)
    ON s.shard = f.shard AND s.epoch = f.epoch
  FOR SHARE OF s)sql";

// One statement, so one round trip and one implicit transaction: the batch
// is appended only if all its shards passed the fence; the statement
// answers whether they did, and where the batch went.
const std::string commit_sql = std::string{"WITH fence AS ("} + fence_sql
                               + R"sql(
), ok AS (
  SELECT count(*) = cardinality($1::int[]) AS fine FROM fence
), appended AS (
  INSERT INTO stream_journal )sql" + stream_store::journal_columns + R"sql(
  SELECT $3::bigint[], $4::text[], $5::boolean[], $6::bigint[],
         $7::integer[], $8::bigint[], $9::integer[], $10::bigint[],
         $11::bigint[], $12::text[], $13::integer[], $14::bigint[],
         $15::integer[], $16::integer[], $17::bigint[], $18::bigint[],
         $19::integer[]
  WHERE (SELECT fine FROM ok)
  RETURNING position
)
SELECT (SELECT fine FROM ok), (SELECT position FROM appended))sql";

// The fence of a fold step, at the start of its transaction.
const std::string fold_fence_sql
  = std::string{"SELECT count(*) = cardinality($1::int[]) FROM ("}
    + fence_sql + ") AS fence";

constexpr const char* snapshot_sql = R"sql(
INSERT INTO shard_snapshots (shard, position, epoch, users, keys, has_ids,
                             started_ms, ttls, expires_ms, limit_users,
                             limit_values)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (shard) DO UPDATE
SET position = EXCLUDED.position, epoch = EXCLUDED.epoch, taken_at = now(),
    users = EXCLUDED.users, keys = EXCLUDED.keys, has_ids = EXCLUDED.has_ids,
    started_ms = EXCLUDED.started_ms, ttls = EXCLUDED.ttls,
    expires_ms = EXCLUDED.expires_ms, limit_users = EXCLUDED.limit_users,
    limit_values = EXCLUDED.limit_values
WHERE shard_snapshots.position <= EXCLUDED.position)sql";

// Every shard written to has a snapshot row (take_shards makes one), so
// a journal row at or below every snapshot's position is folded into all
// the shards it touches. Answers the oldest snapshot's position.
constexpr const char* trim_sql = R"sql(
WITH oldest AS (SELECT min(position) AS position FROM shard_snapshots),
trimmed AS (
  DELETE FROM stream_journal WHERE position <= (SELECT position FROM oldest)
  RETURNING 1
)
SELECT (SELECT count(*) FROM trimmed), (SELECT position FROM oldest))sql";

std::string shard_list(const std::vector<std::uint32_t>& shards) {
  array_literal ids;
  for (auto s : shards)
    ids.add(s);
  return ids.str();
}

std::vector<std::uint32_t> keys_of(const shard_epochs& epochs) {
  std::vector<std::uint32_t> result;
  for (auto& [shard, epoch] : epochs)
    result.push_back(shard);
  return result;
}

} // namespace

caf::expected<shard_epochs>
stream_store::take_shards(const std::string& node,
                          const std::vector<std::uint32_t>& shards) {
  auto ids = shard_list(shards);
  auto rows = db_.exec(R"sql(
WITH taken AS (
  INSERT INTO shard_epochs (shard, owner, epoch)
  SELECT s, $2, 1 FROM unnest($1::int[]) AS x(s)
  ON CONFLICT (shard) DO UPDATE
  SET owner = EXCLUDED.owner, epoch = shard_epochs.epoch + 1
  RETURNING shard, epoch
), snapshots AS (
  INSERT INTO shard_snapshots (shard, position, epoch, users, keys, has_ids,
                               started_ms, ttls, expires_ms, limit_users,
                               limit_values)
  SELECT shard, 0, epoch, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'
  FROM taken
  ON CONFLICT (shard) DO NOTHING
)
SELECT shard, epoch FROM taken)sql",
                       {ids, node});
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
  auto ids = shard_list(shards);
  std::map<std::uint64_t, user_streams> result;
  auto rows = db_.exec("SELECT user_id, stream_key, started_ms, ttl_seconds "
                       "FROM stream_state WHERE shard = ANY($1::int[])",
                       {ids});
  if (!rows)
    return rows.error();
  for (int i = 0; i < rows->size(); ++i) {
    stream_session s;
    s.id = rows->at(i, 1);
    s.started_at_ms = std::stoll(rows->at(i, 2));
    s.ttl_seconds = static_cast<std::uint32_t>(std::stoul(rows->at(i, 3)));
    s.expires_at_ns = s.ttl_seconds == 0
                        ? 0
                        : now.mono_ns
                            + static_cast<std::int64_t>(s.ttl_seconds)
                                * 1'000'000'000;
    result[std::stoull(rows->at(i, 0))].restore(std::move(s));
  }
  auto limits = db_.exec("SELECT user_id, max_streams FROM limit_state "
                         "WHERE shard = ANY($1::int[])",
                         {ids});
  if (!limits)
    return limits.error();
  for (int i = 0; i < limits->size(); ++i)
    result[std::stoull(limits->at(i, 0))].set_limit(
      static_cast<std::uint32_t>(std::stoul(limits->at(i, 1))));
  return result;
}

caf::expected<void> stream_store::load_state(const shard_epochs& epochs) {
  auto ids = shard_list(keys_of(epochs));
  auto rows = db_.exec(
    "SELECT shard, user_id, stream_key, has_id, started_ms, ttl_seconds, "
    "expires_ms FROM stream_state WHERE shard = ANY($1::int[])",
    {ids});
  if (!rows)
    return rows.error();
  auto limits = db_.exec("SELECT shard, user_id, max_streams FROM limit_state "
                         "WHERE shard = ANY($1::int[])",
                         {ids});
  if (!limits)
    return limits.error();
  // Where the journal stands: after a trim that left it empty, the
  // snapshots say.
  auto position = db_.exec(
    "SELECT greatest((SELECT max(position) FROM stream_journal), "
    "(SELECT max(position) FROM shard_snapshots), 0)");
  if (!position)
    return position.error();
  state_.clear();
  for (auto& [shard, epoch] : epochs)
    state_[shard];
  for (int i = 0; i < rows->size(); ++i)
    state_[static_cast<std::uint32_t>(std::stoul(rows->at(i, 0)))].streams.emplace(
      std::make_pair(std::stoull(rows->at(i, 1)), rows->at(i, 2)),
      stream_row{rows->at(i, 3) == "t", std::stoll(rows->at(i, 4)),
                 std::stoll(rows->at(i, 6)),
                 static_cast<std::uint32_t>(std::stoul(rows->at(i, 5)))});
  for (int i = 0; i < limits->size(); ++i)
    state_[static_cast<std::uint32_t>(std::stoul(limits->at(i, 0)))]
      .limits[std::stoull(limits->at(i, 1))]
      = static_cast<std::uint32_t>(std::stoul(limits->at(i, 2)));
  state_size_ = static_cast<std::size_t>(rows->size() + limits->size());
  position_ = std::stoll(position->at(0, 0));
  state_loaded_ = true;
  return caf::unit;
}

void stream_store::apply(const std::vector<stream_change>& batch) {
  for (auto& c : batch) {
    auto& shard = state_[c.shard];
    switch (c.kind) {
      case change_kind::grant: {
        auto row = stream_row{c.has_id, c.started_at_ms, c.expires_at_ms,
                              c.ttl_seconds};
        auto [i, added] = shard.streams.emplace(std::make_pair(c.user, c.key),
                                                row);
        if (added)
          ++state_size_;
        else
          i->second = row;
        break;
      }
      case change_kind::close:
        state_size_ -= shard.streams.erase(std::make_pair(c.user, c.key));
        break;
      case change_kind::set_limit:
        if (shard.limits.insert_or_assign(c.user, c.max_streams).second)
          ++state_size_;
        break;
      case change_kind::clear_limit:
        state_size_ -= shard.limits.erase(c.user);
        break;
    }
  }
  unfolded_ += batch.size();
}

caf::expected<void> stream_store::commit(const std::vector<stream_change>& batch,
                                         const shard_epochs& epochs) {
  if (batch.empty())
    return caf::unit;
  if (!state_loaded_)
    if (auto loaded = load_state(epochs); !loaded)
      return loaded.error();
  std::set<std::uint32_t> shards;
  for (auto& c : batch)
    shards.insert(c.shard);
  auto epoch_of = [&epochs](std::uint32_t shard) {
    auto i = epochs.find(shard);
    return i == epochs.end() ? std::int64_t{-1} : i->second;
  };
  array_literal grant_users, grant_keys, grant_has_ids, grant_started,
    grant_ttls, grant_expires, grant_shards, grant_epochs;
  array_literal close_users, close_keys, close_shards;
  array_literal limit_users, limit_values, limit_shards, limit_epochs;
  array_literal cleared_users, cleared_shards;
  for (auto& c : batch) {
    switch (c.kind) {
      case change_kind::grant:
        grant_users.add(c.user);
        grant_keys.add(c.key, true);
        grant_has_ids.add(c.has_id);
        grant_started.add(c.started_at_ms);
        grant_ttls.add(c.ttl_seconds);
        grant_expires.add(c.expires_at_ms);
        grant_shards.add(c.shard);
        grant_epochs.add(epoch_of(c.shard));
        break;
      case change_kind::close:
        close_users.add(c.user);
        close_keys.add(c.key, true);
        close_shards.add(c.shard);
        break;
      case change_kind::set_limit:
        limit_users.add(c.user);
        limit_values.add(c.max_streams);
        limit_shards.add(c.shard);
        limit_epochs.add(epoch_of(c.shard));
        break;
      case change_kind::clear_limit:
        cleared_users.add(c.user);
        cleared_shards.add(c.shard);
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
     grant_keys.str(), grant_has_ids.str(), grant_started.str(),
     grant_ttls.str(), grant_expires.str(), grant_shards.str(),
     grant_epochs.str(), close_users.str(), close_keys.str(),
     close_shards.str(), limit_users.str(), limit_values.str(),
     limit_shards.str(), limit_epochs.str(), cleared_users.str(),
     cleared_shards.str()});
  if (!done)
    return done.error();
  if (done->size() != 1 || done->at(0, 0) != "t")
    return make_error(persistence_error::fenced,
                      "a shard of the batch has a newer owner epoch than "
                      "this writer's");
  position_ = std::stoll(done->at(0, 1));
  apply(batch);
  return caf::unit;
}

std::size_t stream_store::changes_per_fold_step() const noexcept {
  auto round = std::max(folds_.min_changes, folds_.factor * state_size_);
  return std::max<std::size_t>(1, round / std::max<std::size_t>(folds_.steps,
                                                                 1));
}

bool stream_store::fold_due() const noexcept {
  return state_loaded_ && !state_.empty() && unfolded_ > 0
         && unfolded_ >= changes_per_fold_step();
}

void stream_store::retry_fold_step(const fold_job& job) {
  if (job.shards.empty())
    return;
  next_fold_shard_ = job.shards.front().shard;
  unfolded_ = std::max(unfolded_, changes_per_fold_step());
}

fold_job stream_store::take_fold_step(const shard_epochs& epochs) {
  fold_job job;
  if (!state_loaded_)
    return job;
  job.position = position_;
  // This step's shards: the next share of the owned shards, in order.
  auto steps = std::max<std::size_t>(folds_.steps, 1);
  auto per_step = (state_.size() + steps - 1) / steps;
  auto i = state_.lower_bound(next_fold_shard_);
  for (; i != state_.end() && job.shards.size() < per_step; ++i) {
    auto epoch = epochs.find(i->first);
    if (epoch == epochs.end())
      continue;
    fold_job::shard_state snapshot;
    snapshot.shard = i->first;
    snapshot.epoch = epoch->second;
    snapshot.streams.reserve(i->second.streams.size());
    for (auto& [id, row] : i->second.streams)
      snapshot.streams.push_back(snapshot_stream{id.first, id.second,
                                                 row.has_id, row.started_ms,
                                                 row.expires_ms,
                                                 row.ttl_seconds});
    snapshot.limits.assign(i->second.limits.begin(), i->second.limits.end());
    job.shards.push_back(std::move(snapshot));
  }
  next_fold_shard_ = i == state_.end() ? 0 : i->first;
  unfolded_ = 0;
  return job;
}

caf::expected<fold_result> stream_store::write_fold(const fold_job& job) {
  if (job.shards.empty())
    return fold_result{};
  auto& db = fold_connection();
  array_literal fence_shards, fence_epochs;
  for (auto& shard : job.shards) {
    fence_shards.add(shard.shard);
    fence_epochs.add(shard.epoch);
  }
  auto fail = [&db](caf::error err) -> caf::expected<fold_result> {
    db.exec("ROLLBACK");
    return err;
  };
  if (auto begun = db.exec("BEGIN"); !begun)
    return begun.error();
  auto fenced = db.exec_prepared("videostreams_fold_fence", fold_fence_sql,
                                 {fence_shards.str(), fence_epochs.str()});
  if (!fenced)
    return fail(fenced.error());
  if (fenced->size() != 1 || fenced->at(0, 0) != "t")
    return fail(make_error(persistence_error::fenced,
                           "a shard to fold has a newer owner epoch than "
                           "this writer's"));
  for (auto& shard : job.shards) {
    array_literal users, keys, has_ids, started, ttls, expires;
    for (auto& s : shard.streams) {
      users.add(s.user);
      keys.add(s.key, true);
      has_ids.add(s.has_id);
      started.add(s.started_ms);
      ttls.add(s.ttl_seconds);
      expires.add(s.expires_ms);
    }
    array_literal limit_users, limit_values;
    for (auto& [user, value] : shard.limits) {
      limit_users.add(user);
      limit_values.add(value);
    }
    auto written = db.exec_prepared(
      "videostreams_snapshot", snapshot_sql,
      {std::to_string(shard.shard), std::to_string(job.position),
       std::to_string(shard.epoch), users.str(), keys.str(), has_ids.str(),
       started.str(), ttls.str(), expires.str(), limit_users.str(),
       limit_values.str()});
    if (!written)
      return fail(written.error());
  }
  auto trimmed = db.exec_prepared("videostreams_trim", trim_sql, {});
  if (!trimmed)
    return fail(trimmed.error());
  if (auto committed = db.exec("COMMIT"); !committed)
    return committed.error();
  return fold_result{std::stoul(trimmed->at(0, 0)),
                     job.position - std::stoll(trimmed->at(0, 1))};
}

} // namespace videostreams
