#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "caf/allowed_unsafe_message_type.hpp"
#include "caf/expected.hpp"

#include "persistence/pg_connection.hpp"
#include "actors/clock.hpp"
#include "actors/stream_change.hpp"
#include "actors/user_streams.hpp"

namespace videostreams {

/// The owner epoch of each shard a writer holds: its fencing tokens.
using shard_epochs = std::map<std::uint32_t, std::int64_t>;

/// What a commit could not write.
struct commit_result {
  /// (shard, epoch as the change carried it) of every change dropped:
  /// decided under an earlier tenure of the shard, or of a shard fenced now.
  std::set<std::pair<std::uint32_t, std::int64_t>> dropped;
  /// The shards fenced now, with the epoch this store held them under
  /// (another node owns them; the store writes nothing more for them).
  shard_epochs lost;

  /// True if `c` was dropped.
  bool dropped_change(const stream_change& c) const {
    return dropped.count({c.shard, c.epoch}) > 0;
  }
};

/// A stream as the database records it (its user and key are the key of
/// the map that holds it).
struct committed_stream {
  bool has_id = true;
  std::int64_t started_ms = 0;
  /// Wall-clock expiry in ms since the epoch; 0 = never.
  std::int64_t expires_ms = 0;
  std::uint32_t ttl_seconds = 0;
};

/// Hashes a (user, stream key) pair.
struct stream_id_hash {
  std::size_t operator()(const std::pair<std::uint64_t, std::string>& x)
    const noexcept {
    return std::hash<std::uint64_t>{}(x.first)
           ^ (std::hash<std::string>{}(x.second) * 31);
  }
};

/// Everything one shard holds as committed: its open streams and its
/// users' own limits.
struct committed_shard {
  std::unordered_map<std::pair<std::uint64_t, std::string>, committed_stream,
                     stream_id_hash>
    streams;
  std::unordered_map<std::uint64_t, std::uint32_t> limits;

  /// Streams and limits.
  std::size_t size() const noexcept {
    return streams.size() + limits.size();
  }
};

/// The committed state of some shards as of a journal position.
struct committed_state {
  std::map<std::uint32_t, committed_shard> shards;
  /// The newest journal position or snapshot the state was read at: every
  /// change of these shards up to here is in it.
  std::int64_t position = 0;
};

/// Reads the committed state of `shards` in one statement (one consistent
/// snapshot of the database): each shard's snapshot and the journal rows
/// after it that touch the shard, nothing of other shards but the journal
/// rows scanned on the way. What a node loads when it takes shards.
caf::expected<committed_state>
read_committed_state(pg_connection& db,
                     const std::vector<std::uint32_t>& shards);

/// The users of `shard` as the records their actors continue from.
///
/// A session with an id gets a fresh TTL from `now`: heartbeats are never
/// written, so its stored expiry may be long renewed (and its old deadline
/// may have passed while no node served it).
///
/// A stream opened by `startstream` keeps the expiry it was granted with
/// (nothing renews it, so the stored one is exact): a restart never
/// prolongs it, so a stream whose close was lost counts for at most one
/// legacy TTL after its start. One whose expiry has passed is restored
/// already due, so that the shard's next sweep closes it and writes the
/// close. One stored without an expiry (granted under a legacy TTL of 0)
/// gets `legacy_ttl_seconds` counted from its start, unless that is 0 too.
std::map<std::uint64_t, user_streams>
user_records(const committed_shard& shard, const clock_reading& now,
             std::uint32_t legacy_ttl_seconds);

/// How often the store folds its journal into snapshots.
struct fold_settings {
  /// A full round of folds (every shard once) starts after the journal
  /// took `factor` times as many changes as the state holds, or
  /// `min_changes`, whichever is more: the snapshots cost about one
  /// array element per stream and round, so per change written a fold
  /// costs 1/factor of an element, and recovery replays at most about
  /// factor + 1 times the state.
  std::size_t factor = 2;
  std::size_t min_changes = 20000;
  /// A round folds its shards in this many steps, so that no step holds
  /// the writer (and the grants waiting for the next commit) for long.
  std::size_t steps = 8;
};

/// A committed stream, as a snapshot records it.
struct snapshot_stream {
  std::uint64_t user;
  std::string key;
  bool has_id;
  std::int64_t started_ms;
  std::int64_t expires_ms;
  std::uint32_t ttl_seconds;
};

/// One fold step: the state of some shards as of a journal position.
struct fold_job {
  struct shard_state {
    std::uint32_t shard = 0;
    std::int64_t epoch = 0;
    std::vector<snapshot_stream> streams;
    std::vector<std::pair<std::uint64_t, std::uint32_t>> limits;
  };
  std::int64_t position = 0;
  std::vector<shard_state> shards;
};

/// What a fold step did.
struct fold_result {
  /// Journal rows deleted.
  std::size_t trimmed = 0;
  /// Journal positions between the step's and the oldest snapshot's: how
  /// much a restart would replay. It keeps growing if a shard's snapshot
  /// never moves (a shard nobody folds, e.g. left from a larger --shards).
  std::int64_t lag = 0;
};

/// Writes batches of changes to PostgreSQL, fenced by shard epochs.
///
/// The store writes for the shards it has adopted (each with the epoch of
/// its owner's lease, the fencing token, and the state it holds as
/// committed). A commit appends one row to `stream_journal` whatever the
/// number of changes in it; every so often the store writes a shard's
/// state as of the last commit (`shard_snapshots`, from what it committed,
/// which it keeps in memory) and deletes the journal rows that every
/// shard's snapshot covers. The state of a shard is its snapshot plus the
/// journal rows after it: the views `stream_sessions` and `user_limits`
/// show it.
class stream_store {
public:
  /// Commits through `db`; writes snapshots through `fold_db` if given
  /// (so that a fold, done from another thread, holds up no commit), else
  /// through `db` too.
  explicit stream_store(pg_connection db, fold_settings folds = {},
                        std::optional<pg_connection> fold_db = std::nullopt)
    : db_(std::move(db)), fold_db_(std::move(fold_db)), folds_(folds) {
    // Nothing else to do.
  }

  /// Sets up this store's session for `commit` (again after every
  /// reconnect): see `writer_session_setup`. Fails on a server that cannot
  /// take those settings.
  caf::expected<void> prepare_for_commits() {
    return db_.set_session_setup(writer_session_setup);
  }

  /// The writer's session settings. Its statements are prepared, so
  /// PostgreSQL plans them once (a generic plan) instead of parsing and
  /// planning them on every commit, which cost 40% of the server's CPU. A
  /// generic plan is made from the statistics of the moment, and on a
  /// young, empty table that is a sequential scan, kept for good; every
  /// statement of the writer touches rows by primary key, so sequential
  /// scans are ruled out for its session.
  static constexpr const char* writer_session_setup
    = "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off";

  /// The columns of a journal row, in the order the writer fills them.
  static constexpr const char* journal_columns
    = "(grant_users, grant_keys, grant_has_ids, grant_started_ms, "
      "grant_ttls, grant_expires_ms, grant_shards, grant_epochs, "
      "close_users, close_keys, close_shards, limit_users, limit_values, "
      "limit_shards, limit_epochs, cleared_users, cleared_shards)";

  /// Writes for `shard` from now on, under `epoch`, starting from `state`,
  /// which was read at journal position `position` (see
  /// `read_committed_state`).
  void adopt(std::uint32_t shard, std::int64_t epoch, committed_shard state,
             std::int64_t position);

  /// Writes nothing more for `shard` and forgets its state.
  void disown(std::uint32_t shard);

  /// The shards this store writes for, with their epochs.
  const shard_epochs& epochs() const noexcept {
    return epochs_;
  }

  /// Appends `batch` to the journal in one statement (one round trip, one
  /// transaction, one row). Changes to the same stream or limit must
  /// already be coalesced. A change of a shard this store does not hold,
  /// or stamped with another epoch than the store holds its shard under
  /// (an earlier tenure's), is dropped. A shard whose lease no longer
  /// carries the store's epoch (another node took it over, or it was
  /// released) is fenced: its changes are dropped, the others' committed
  /// (a second statement, only then), and it is disowned. The shards' lease
  /// rows are locked FOR SHARE meanwhile, so a node taking one over waits
  /// for the commit.
  caf::expected<commit_result> commit(const std::vector<stream_change>& batch);

  /// True when the journal has grown enough for the next fold step.
  bool fold_due() const noexcept;

  /// The next fold step (on the committing thread): a copy of the state of
  /// the next share of the adopted shards as of the last commit.
  fold_job take_fold_step();

  /// Writes the snapshots of `job` (unless a shard of it is no longer this
  /// writer's; a snapshot never goes back to an older position) and deletes
  /// the journal rows that every snapshot covers, in one transaction. Runs on the fold
  /// connection, from one thread at a time, concurrently with commits;
  /// without a fold connection, on the committing thread.
  caf::expected<fold_result> write_fold(const fold_job& job);

  /// After `write_fold(job)` failed (on the committing thread): the next
  /// step takes `job`'s shards again, after the next commit.
  void retry_fold_step(const fold_job& job);

  /// `take_fold_step` and `write_fold` in one go (without a fold
  /// connection, or from a thread that does not commit meanwhile).
  caf::expected<fold_result> fold() {
    return write_fold(take_fold_step());
  }

  /// True if folds have a connection of their own.
  bool has_fold_connection() const noexcept {
    return fold_db_.has_value();
  }

  /// The connection folds write through.
  pg_connection& fold_connection() noexcept {
    return fold_db_ ? *fold_db_ : db_;
  }

  /// The fold connection's session settings: a fold is background work,
  /// so it gives up rather than wait long for a lock (it is tried again
  /// later). (The connection bounds its statements: `pg_timeouts`.)
  static constexpr const char* fold_session_setup = "SET lock_timeout = '5s'";

  /// Sets up the fold connection's session (see `fold_session_setup`).
  caf::expected<void> prepare_for_folds() {
    return fold_connection().set_session_setup(fold_session_setup);
  }

  /// Streams and limits this store knows as committed.
  std::size_t state_size() const noexcept {
    return state_size_;
  }

  /// The underlying connection (for probes and reconnects).
  pg_connection& connection() noexcept {
    return db_;
  }

private:
  /// Changes committed between two fold steps.
  std::size_t changes_per_fold_step() const noexcept;

  /// Records a committed batch in `state_`.
  void apply(const std::vector<stream_change>& batch);

  /// Appends `batch` if all its shards pass the fence; else returns the
  /// shards that did not, having written nothing.
  caf::expected<std::vector<std::uint32_t>>
  try_commit(const std::vector<stream_change>& batch);

  pg_connection db_;
  std::optional<pg_connection> fold_db_;
  fold_settings folds_;
  shard_epochs epochs_;
  std::map<std::uint32_t, committed_shard> state_;
  std::size_t state_size_ = 0;
  /// The journal position of the last commit (or of an adopted state read
  /// later): every adopted shard's state includes all changes up to here.
  std::int64_t position_ = 0;
  /// Changes committed since the last fold step.
  std::size_t unfolded_ = 0;
  /// The first shard of the next fold step.
  std::uint32_t next_fold_shard_ = 0;
};

} // namespace videostreams

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::shard_epochs)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::commit_result)
