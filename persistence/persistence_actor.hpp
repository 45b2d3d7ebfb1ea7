#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "caf/allowed_unsafe_message_type.hpp"
#include "caf/atom.hpp"
#include "caf/fwd.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "actors/stream_change.hpp"
#include "logging/event_log.hpp"
#include "persistence/stream_store.hpp"

namespace videostreams {

/// Makes the persistence actor commit what it has gathered now.
using flush_atom = caf::atom_constant<caf::atom("flush")>;

/// Asks for an answer once every change received so far is committed.
using sync_atom = caf::atom_constant<caf::atom("sync")>;

/// Starts writing for a shard (with its epoch and committed state).
using adopt_atom = caf::atom_constant<caf::atom("adopt")>;

/// Stops writing for shards.
using disown_atom = caf::atom_constant<caf::atom("disown")>;

/// Tells the fence listener which shards were fenced, with the epoch the
/// writer held each under.
using fenced_atom = caf::atom_constant<caf::atom("fenced")>;

/// With a fence listener: tell it from now on which shards were fenced.
using listen_atom = caf::atom_constant<caf::atom("listen")>;

/// A shard to write for from now on: its lease epoch (the fencing token)
/// and the state it holds as committed, read at journal `position`. Never
/// leaves the node (the state is shared, not copied).
struct adopted_shard {
  std::uint32_t shard = 0;
  std::int64_t epoch = 0;
  std::shared_ptr<committed_shard> state;
  std::int64_t position = 0;
};



/// Asks the writer to check the database (internal).
using probe_atom = caf::atom_constant<caf::atom("probe")>;

/// The persistence actor's periodic check, sent to itself with a round
/// number (others are ignored): answers sync changes whose commit timeout
/// passed, notices a stalled commit or probe, and probes an idle database.
using watch_atom = caf::atom_constant<caf::atom("watch")>;

/// Told of the shards whose writes were fenced (see `persistence_actor`).
using fence_listener
  = caf::typed_actor<caf::reacts_to<fenced_atom, shard_epochs>>;

/// The persistence actor: takes every change of the users' state, coalesces
/// changes to the same stream or limit, and commits them in batches (group
/// commit: a batch is committed as soon as the previous commit finished;
/// while one commit runs, the next batch gathers). It runs on the scheduler
/// and never blocks: a detached writer of its own does the blocking
/// PostgreSQL calls, so the persistence actor keeps taking changes and
/// keeps its deadlines while a commit hangs.
///
/// A change sent alone is written behind. With `commit_atom` it is
/// answered `true` once the batch holding it committed, or with an error:
/// the commit failed, or was not confirmed within `commit_timeout` of the
/// change's arrival or by the change's own `answer_by_ns`, if sooner
/// (`persistence_error::commit_timeout`; the change may
/// still land later), or its shard was fenced (`persistence_error::fenced`).
/// Callers therefore need no timeout of their own (a CAF request timeout
/// costs two wake-ups of CAF's clock thread per call). `sync` is answered
/// the same way once everything received before it is committed (changes
/// of fenced shards count as done: they are never written).
///
/// It writes for the shards it adopted; a change of any other shard is
/// fenced. Adopting and disowning go to the writer in order with the
/// commits, and are answered once the writer took them in. A fence
/// listener, once named (`listen_atom`), is told of every fenced shard:
/// another node owns it now, its changes were dropped, and nothing more
/// is written for it.
using persistence_actor = caf::typed_actor<
  caf::reacts_to<stream_change>,
  caf::replies_to<commit_atom, stream_change>::with<bool>,
  caf::reacts_to<flush_atom>, caf::reacts_to<watch_atom, std::uint64_t>,
  caf::replies_to<sync_atom>::with<bool>,
  caf::replies_to<adopt_atom, adopted_shard>::with<bool>,
  caf::replies_to<disown_atom, std::vector<std::uint32_t>>::with<bool>,
  caf::reacts_to<listen_atom, fence_listener>>;

/// How the persistence actor batches.
struct persistence_settings {
  /// A batch is committed at once when it reaches this many changes.
  std::size_t max_batch = 2000;
  /// The least time between the starts of two commits. Under load a batch
  /// gathers until then (fewer, bigger commits); a change that arrives
  /// after a quiet spell is committed at once. 0 = back to back.
  std::chrono::milliseconds flush_interval{0};
  /// Back-off after a failed commit, doubled per failure up to
  /// `max_retry_after`.
  std::chrono::milliseconds retry_after{100};
  std::chrono::milliseconds max_retry_after{5000};
  /// Without traffic, the database is checked this often (so that an
  /// outage shows on /readyz within about this long); a commit running
  /// twice as long marks the database unreachable too.
  std::chrono::milliseconds probe_every{1000};
  /// A change sent with `commit_atom` is answered within this long.
  std::chrono::milliseconds commit_timeout{1500};
  /// At most this many changes wait unwritten; beyond, a change for a new
  /// stream or limit is refused with `backlog_full`.
  std::size_t max_backlog = 100000;
  /// Told when the database becomes unreachable ("database_down") and
  /// when it answers again ("database_up"); may be null.
  std::shared_ptr<const event_log> log;
};

/// What the persistence actor did, for `/metrics` and tests.
struct persistence_counters {
  /// Changes waiting for a commit (gauge).
  std::atomic<std::int64_t> queue_depth{0};
  /// Transactions committed (counter).
  std::atomic<std::uint64_t> commits{0};
  /// Changes received and changes written after coalescing (counters).
  std::atomic<std::uint64_t> changes_received{0};
  std::atomic<std::uint64_t> changes_written{0};
  /// Failed commits and probes (counter).
  std::atomic<std::uint64_t> errors{0};
  /// Changes answered with `commit_timeout` (counter).
  std::atomic<std::uint64_t> commit_timeouts{0};
  /// Changes refused because the backlog was full (counter).
  std::atomic<std::uint64_t> refused{0};
  /// Changes dropped because their shard was fenced: another node owns it
  /// now (counter).
  std::atomic<std::uint64_t> fenced{0};
  /// Sum of commit durations in nanoseconds (counter).
  std::atomic<std::uint64_t> commit_ns{0};
  /// Upper bounds of the commit duration buckets, in seconds.
  static constexpr std::array<double, 14> commit_buckets{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
  /// Commits by duration (a histogram over `commit_buckets`, the last
  /// slot above them; the sum is `commit_ns`).
  std::array<std::atomic<std::uint64_t>, commit_buckets.size() + 1>
    commit_duration{};
  /// Upper bounds of the batch size buckets, in changes.
  static constexpr std::array<double, 11> batch_buckets{
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000};
  /// Committed batches by their number of changes written (a histogram
  /// over `batch_buckets`; the sum is `changes_written`).
  std::array<std::atomic<std::uint64_t>, batch_buckets.size() + 1>
    batch_sizes{};
  /// Size of the last committed batch (gauge).
  std::atomic<std::uint64_t> last_batch{0};
  /// Fold steps done (snapshots written, journal trimmed), their summed
  /// duration in nanoseconds, and the journal rows they deleted (counters).
  std::atomic<std::uint64_t> folds{0};
  std::atomic<std::uint64_t> fold_ns{0};
  std::atomic<std::uint64_t> journal_rows_trimmed{0};
  /// Streams and limits committed, as of the last fold (gauge).
  std::atomic<std::uint64_t> state_size{0};
  /// Journal positions between the last fold step and the oldest snapshot:
  /// what a restart would replay (gauge).
  std::atomic<std::int64_t> journal_lag{0};
  /// True while a fold step runs (to cancel it at exit).
  std::atomic<bool> fold_running{false};
  /// False after a commit failed for want of a connection, true again after
  /// the next success.
  std::atomic<bool> reachable{true};
};

/// Starts the persistence actor and its detached writer, which writes
/// through `store` for the shards the store has adopted (and those adopted
/// later through the actor).
persistence_actor
spawn_persistence_actor(caf::actor_system& sys,
                        std::shared_ptr<stream_store> store,
                        persistence_settings settings,
                        std::shared_ptr<persistence_counters> counters);

} // namespace videostreams

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::adopted_shard)
