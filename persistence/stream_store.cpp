#include "persistence/stream_store.hpp"

#include <algorithm>
#include <set>

#include "persistence/array_literal.hpp"

#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

// The shards of $1 whose lease still carries the epochs of $2 and has an
// owner (a released lease keeps its epoch), their lease rows locked FOR
// SHARE (a node taking a shard over waits for the lock), in shard order
// (as takes, renewals and releases lock them: no deadlock).
constexpr const char* fence_sql = R"sql(
  SELECT s.shard FROM shard_leases AS s
  JOIN unnest($1::int[], $2::bigint[]) AS f(shard, epoch)
    ON s.shard = f.shard AND s.epoch = f.epoch AND s.owner IS NOT NULL
  ORDER BY s.shard
  FOR SHARE OF s)sql";

// One statement, so one round trip and one implicit transaction: the batch
// is appended only if all its shards passed the fence; the statement
// answers whether they did, where the batch went, and which shards failed.
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
SELECT (SELECT fine FROM ok), (SELECT position FROM appended),
       ARRAY(SELECT unnest($1::int[]) EXCEPT SELECT shard FROM fence))sql";

// Whether a fold step's shards are still this writer's, at the start of
// its transaction. A check, not a lock: a fold may run for seconds, and
// row locks on the lease table would hold up every lease renewal (and a
// take-over) that long. None is needed: a snapshot at position P holds the
// shard's exact state as of P (nobody else wrote the shard up to P), so
// even one written after the shard changed hands is true, and a snapshot
// never replaces a newer one.
constexpr const char* fold_fence_sql = R"sql(
SELECT count(*) = cardinality($1::int[]) FROM shard_leases AS s
JOIN unnest($1::int[], $2::bigint[]) AS f(shard, epoch)
  ON s.shard = f.shard AND s.epoch = f.epoch AND s.owner IS NOT NULL)sql";

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

// Every shard written to has a snapshot row (taking its lease makes one), so
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

/// Parses PostgreSQL's text form of an int[] ("{1,2,3}").
std::vector<std::uint32_t> parse_shard_array(const std::string& text) {
  std::vector<std::uint32_t> result;
  std::uint32_t value = 0;
  bool digits = false;
  for (char c : text) {
    if (c >= '0' && c <= '9') {
      value = value * 10 + static_cast<std::uint32_t>(c - '0');
      digits = true;
    } else if (digits) {
      result.push_back(value);
      value = 0;
      digits = false;
    }
  }
  return result;
}

} // namespace

caf::expected<committed_state>
read_committed_state(pg_connection& db,
                     const std::vector<std::uint32_t>& shards) {
  // One statement, so one snapshot of the database: each shard's snapshot,
  // then the journal rows after it that touch the shard, in journal order
  // (within a row a stream or limit appears at most once). `kind`: 0 a
  // snapshot stream, 1 a snapshot limit, 2 a grant, 3 a close, 4 a limit
  // set, 5 a limit cleared; a last row (kind 9) says where the journal
  // stood.
  static const std::string sql = R"sql(
WITH wanted AS (
  SELECT shard, position FROM shard_snapshots WHERE shard = ANY($1::int[])
), since AS (
  SELECT coalesce(min(position), 0) AS position FROM wanted
)
SELECT 0 AS kind, s.position, s.shard, x.u, x.k, x.h, x.st, x.t, x.e, NULL::int
FROM shard_snapshots AS s,
     unnest(s.users, s.keys, s.has_ids, s.started_ms, s.ttls, s.expires_ms)
       AS x(u, k, h, st, t, e)
WHERE s.shard = ANY($1::int[])
UNION ALL
SELECT 1, s.position, s.shard, x.u, NULL, NULL, NULL, NULL, NULL, x.m
FROM shard_snapshots AS s, unnest(s.limit_users, s.limit_values) AS x(u, m)
WHERE s.shard = ANY($1::int[])
UNION ALL
SELECT 2, j.position, x.sh, x.u, x.k, x.h, x.st, x.t, x.e, NULL
FROM stream_journal AS j,
     unnest(j.grant_users, j.grant_keys, j.grant_has_ids, j.grant_started_ms,
            j.grant_ttls, j.grant_expires_ms, j.grant_shards)
       AS x(u, k, h, st, t, e, sh)
     JOIN wanted AS w ON w.shard = x.sh
WHERE j.position > (SELECT position FROM since) AND j.position > w.position
UNION ALL
SELECT 3, j.position, x.sh, x.u, x.k, NULL, NULL, NULL, NULL, NULL
FROM stream_journal AS j,
     unnest(j.close_users, j.close_keys, j.close_shards) AS x(u, k, sh)
     JOIN wanted AS w ON w.shard = x.sh
WHERE j.position > (SELECT position FROM since) AND j.position > w.position
UNION ALL
SELECT 4, j.position, x.sh, x.u, NULL, NULL, NULL, NULL, NULL, x.m
FROM stream_journal AS j,
     unnest(j.limit_users, j.limit_values, j.limit_shards) AS x(u, m, sh)
     JOIN wanted AS w ON w.shard = x.sh
WHERE j.position > (SELECT position FROM since) AND j.position > w.position
UNION ALL
SELECT 5, j.position, x.sh, x.u, NULL, NULL, NULL, NULL, NULL, NULL
FROM stream_journal AS j,
     unnest(j.cleared_users, j.cleared_shards) AS x(u, sh)
     JOIN wanted AS w ON w.shard = x.sh
WHERE j.position > (SELECT position FROM since) AND j.position > w.position
UNION ALL
SELECT 9, greatest((SELECT max(position) FROM stream_journal),
                   (SELECT max(position) FROM shard_snapshots), 0),
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
ORDER BY 2, 1)sql";
  auto rows = db.exec(sql, {shard_list(shards)});
  if (!rows)
    return rows.error();
  committed_state result;
  for (auto s : shards)
    result.shards[s];
  for (int i = 0; i < rows->size(); ++i) {
    auto kind = std::stoi(rows->at(i, 0));
    if (kind == 9) {
      result.position = std::stoll(rows->at(i, 1));
      continue;
    }
    auto& shard = result.shards[static_cast<std::uint32_t>(
      std::stoul(rows->at(i, 2)))];
    auto user = std::stoull(rows->at(i, 3));
    switch (kind) {
      case 0:
      case 2:
        shard.streams[{user, rows->at(i, 4)}] = committed_stream{
          rows->at(i, 5) == "t", std::stoll(rows->at(i, 6)),
          std::stoll(rows->at(i, 8)),
          static_cast<std::uint32_t>(std::stoul(rows->at(i, 7)))};
        break;
      case 3:
        shard.streams.erase({user, rows->at(i, 4)});
        break;
      case 1:
      case 4:
        shard.limits[user]
          = static_cast<std::uint32_t>(std::stoul(rows->at(i, 9)));
        break;
      case 5:
        shard.limits.erase(user);
        break;
    }
  }
  return result;
}

namespace {

constexpr std::int64_t ns_per_ms = 1'000'000;
constexpr std::int64_t ms_per_second = 1000;

/// The monotonic deadline of a legacy stream that expires at `wall_ms`
/// (ms since the epoch); one that has passed is due at once. Never 0
/// (which would mean "never expires").
std::int64_t legacy_deadline(std::int64_t wall_ms, const clock_reading& now) {
  auto left_ms = std::max<std::int64_t>(wall_ms - now.wall_ms, 0);
  return std::max<std::int64_t>(now.mono_ns + left_ms * ns_per_ms, 1);
}

} // namespace

std::map<std::uint64_t, user_streams>
user_records(const committed_shard& shard, const clock_reading& now,
             std::uint32_t legacy_ttl_seconds) {
  std::map<std::uint64_t, user_streams> result;
  for (auto& [id, row] : shard.streams) {
    stream_session s;
    s.id = id.second;
    s.started_at_ms = row.started_ms;
    s.ttl_seconds = row.ttl_seconds;
    if (row.has_id) {
      s.expires_at_ns = row.ttl_seconds == 0
                          ? 0
                          : now.mono_ns
                              + static_cast<std::int64_t>(row.ttl_seconds)
                                  * ms_per_second * ns_per_ms;
    } else if (row.ttl_seconds > 0) {
      auto expires_ms
        = row.expires_ms != 0
            ? row.expires_ms
            : row.started_ms
                + static_cast<std::int64_t>(row.ttl_seconds) * ms_per_second;
      s.expires_at_ns = legacy_deadline(expires_ms, now);
    } else if (legacy_ttl_seconds > 0) {
      s.ttl_seconds = legacy_ttl_seconds;
      s.expires_at_ns = legacy_deadline(
        row.started_ms
          + static_cast<std::int64_t>(legacy_ttl_seconds) * ms_per_second,
        now);
    }
    result[id.first].restore(std::move(s));
  }
  for (auto& [user, limit] : shard.limits)
    result[user].set_limit(limit);
  return result;
}

void stream_store::adopt(std::uint32_t shard, std::int64_t epoch,
                         committed_shard state, std::int64_t position) {
  disown(shard);
  epochs_[shard] = epoch;
  state_size_ += state.size();
  state_[shard] = std::move(state);
  // The adopted state holds every change of the shard up to `position`,
  // and this store's other shards hold all of theirs (nobody else writes
  // them), so every shard's state is as of the later of the two.
  position_ = std::max(position_, position);
}

void stream_store::disown(std::uint32_t shard) {
  epochs_.erase(shard);
  if (auto i = state_.find(shard); i != state_.end()) {
    state_size_ -= i->second.size();
    state_.erase(i);
  }
}

void stream_store::apply(const std::vector<stream_change>& batch) {
  for (auto& c : batch) {
    auto& shard = state_[c.shard];
    switch (c.kind) {
      case change_kind::grant: {
        auto row = committed_stream{c.has_id, c.started_at_ms,
                                    c.expires_at_ms, c.ttl_seconds};
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

caf::expected<commit_result>
stream_store::commit(const std::vector<stream_change>& batch) {
  commit_result result;
  // Changes of shards this store does not hold, or of an earlier tenure of
  // one it holds, are dropped without asking.
  std::vector<stream_change> rest;
  rest.reserve(batch.size());
  for (auto& c : batch) {
    auto i = epochs_.find(c.shard);
    if (i != epochs_.end() && (c.epoch == 0 || c.epoch == i->second))
      rest.push_back(c);
    else
      result.dropped.emplace(c.shard, c.epoch);
  }
  while (!rest.empty()) {
    auto failed = try_commit(rest);
    if (!failed)
      return failed.error();
    if (failed->empty())
      break;
    // Another node owns these shards now: nothing of theirs may ever be
    // written again. Commit the rest without them.
    std::set<std::uint32_t> fenced(failed->begin(), failed->end());
    for (auto shard : fenced) {
      result.lost[shard] = epochs_[shard];
      disown(shard);
    }
    auto kept = std::remove_if(rest.begin(), rest.end(),
                               [&](const stream_change& c) {
                                 if (fenced.count(c.shard) == 0)
                                   return false;
                                 result.dropped.emplace(c.shard, c.epoch);
                                 return true;
                               });
    rest.erase(kept, rest.end());
  }
  return result;
}

caf::expected<std::vector<std::uint32_t>>
stream_store::try_commit(const std::vector<stream_change>& batch) {
  std::set<std::uint32_t> shards;
  for (auto& c : batch)
    shards.insert(c.shard);
  auto epoch_of = [this](std::uint32_t shard) {
    auto i = epochs_.find(shard);
    return i == epochs_.end() ? std::int64_t{-1} : i->second;
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
  if (done->size() != 1)
    return make_error(persistence_error::statement,
                      "the commit statement answered no row");
  if (done->at(0, 0) != "t") {
    auto failed = parse_shard_array(done->at(0, 2));
    if (failed.empty()) // cannot happen; never loop on it
      return make_error(persistence_error::statement,
                        "the fence failed without naming a shard");
    return failed;
  }
  position_ = std::stoll(done->at(0, 1));
  apply(batch);
  return std::vector<std::uint32_t>{};
}

std::size_t stream_store::changes_per_fold_step() const noexcept {
  auto round = std::max(folds_.min_changes, folds_.factor * state_size_);
  return std::max<std::size_t>(1, round / std::max<std::size_t>(folds_.steps,
                                                                 1));
}

bool stream_store::fold_due() const noexcept {
  return !state_.empty() && unfolded_ > 0
         && unfolded_ >= changes_per_fold_step();
}

void stream_store::retry_fold_step(const fold_job& job) {
  if (job.shards.empty())
    return;
  next_fold_shard_ = job.shards.front().shard;
  unfolded_ = std::max(unfolded_, changes_per_fold_step());
}

fold_job stream_store::take_fold_step() {
  fold_job job;
  job.position = position_;
  // This step's shards: the next share of the owned shards, in order.
  auto steps = std::max<std::size_t>(folds_.steps, 1);
  auto per_step = (state_.size() + steps - 1) / steps;
  auto i = state_.lower_bound(next_fold_shard_);
  for (; i != state_.end() && job.shards.size() < per_step; ++i) {
    auto epoch = epochs_.find(i->first);
    if (epoch == epochs_.end())
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
