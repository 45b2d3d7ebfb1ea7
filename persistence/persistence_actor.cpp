#include "persistence/persistence_actor.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <tuple>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/allowed_unsafe_message_type.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "persistence/persistence_error.hpp"

namespace videostreams::detail {

/// A batch on its way to the writer. Shared, not copied: the persistence
/// actor keeps it to retry after a failed commit.
struct commit_batch {
  std::shared_ptr<const std::vector<stream_change>> changes;
};

/// A fold step on its way from the writer to the folder.
struct fold_step {
  std::shared_ptr<const fold_job> job;
};

} // namespace videostreams::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::detail::commit_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::detail::fold_step)

namespace videostreams {

namespace {

using detail::commit_batch;
using detail::fold_step;
using steady = std::chrono::steady_clock;

constexpr auto relaxed = std::memory_order_relaxed;

/// Asks the writer to fold the journal if it grew enough, or the folder to
/// write a fold step (internal).
using fold_atom = caf::atom_constant<caf::atom("fold")>;

/// Writes fold steps through the store's fold connection, so that commits
/// go on meanwhile.
/// Answers a fold step with the journal rows it deleted and the journal
/// lag it left (see `fold_result`).
using folder_actor = caf::typed_actor<caf::replies_to<
  fold_atom, fold_step>::with<std::uint64_t, std::int64_t>>;

folder_actor::behavior_type
folder_impl(folder_actor::pointer, std::shared_ptr<stream_store> store,
            std::shared_ptr<persistence_counters> counters) {
  return {
    [store, counters](fold_atom, const fold_step& step)
      -> caf::result<std::uint64_t, std::int64_t> {
      counters->fold_running.store(true);
      auto done = store->write_fold(*step.job);
      counters->fold_running.store(false);
      if (done)
        return {static_cast<std::uint64_t>(done->trimmed), done->lag};
      if (is(done.error(), persistence_error::unreachable))
        store->fold_connection().reset(); // the next step starts afresh
      return std::move(done.error());
    },
  };
}

/// Does the blocking PostgreSQL calls, one at a time, for the persistence
/// actor: commits a batch, or checks the database. After a commit that
/// made a fold step due, hands the step to its folder (one at a time).
/// A commit is answered with what it could not write (see `commit_result`).
using writer_actor = caf::typed_actor<
  caf::replies_to<commit_atom, commit_batch>::with<commit_result>,
  caf::replies_to<probe_atom>::with<bool>, caf::reacts_to<fold_atom>,
  caf::replies_to<adopt_atom, adopted_shard>::with<bool>,
  caf::replies_to<disown_atom, std::vector<std::uint32_t>>::with<bool>>;

struct writer_state {
  /// Null when the store has no fold connection: then nothing is folded.
  folder_actor folder;
  bool folding = false;
  static inline const char* name = "persistence_writer";
};

writer_actor::behavior_type
writer_impl(writer_actor::stateful_pointer<writer_state> self,
            std::shared_ptr<stream_store> store,
            std::shared_ptr<persistence_counters> counters) {
  if (store->has_fold_connection())
    self->state.folder = self->spawn<caf::detached + caf::linked>(folder_impl,
                                                                  store,
                                                                  counters);
  return {
    [self, store](commit_atom, const commit_batch& batch)
      -> caf::result<commit_result> {
      auto done = store->commit(*batch.changes);
      if (done) {
        if (store->fold_due())
          self->send(self, fold_atom::value);
        return std::move(*done);
      }
      if (is(done.error(), persistence_error::unreachable))
        store->connection().reset(); // the next attempt starts afresh
      return std::move(done.error());
    },
    [store](probe_atom) {
      return static_cast<bool>(store->connection().exec("SELECT 1"))
             || store->connection().reset();
    },
    [store](adopt_atom, adopted_shard& x) {
      store->adopt(x.shard, x.epoch, std::move(*x.state), x.position);
      return true;
    },
    [store](disown_atom, const std::vector<std::uint32_t>& shards) {
      for (auto shard : shards)
        store->disown(shard);
      return true;
    },
    [self, store, counters](fold_atom) {
      auto& st = self->state;
      if (!st.folder || st.folding || !store->fold_due())
        return;
      auto job = std::make_shared<const fold_job>(store->take_fold_step());
      auto state_size = store->state_size();
      st.folding = true;
      auto start = steady::now();
      self->request(st.folder, caf::infinite, fold_atom::value, fold_step{job})
        .then(
          [self, store, counters, start, state_size](std::uint64_t trimmed,
                                                     std::int64_t lag) {
            self->state.folding = false;
            counters->folds.fetch_add(1, relaxed);
            counters->journal_rows_trimmed.fetch_add(trimmed, relaxed);
            counters->fold_ns.fetch_add(
              static_cast<std::uint64_t>((steady::now() - start).count()),
              relaxed);
            counters->state_size.store(state_size, relaxed);
            counters->journal_lag.store(lag, relaxed);
            // The commits made while this step ran may have made the next
            // one due; its trigger found this one running. Take it now,
            // not after a commit that may be long in coming.
            if (store->fold_due())
              self->send(self, fold_atom::value);
          },
          [self, store, counters, job](caf::error&) {
            // The same shards again, after the next commit.
            self->state.folding = false;
            store->retry_fold_step(*job);
            counters->errors.fetch_add(1, relaxed);
          });
    },
  };
}

/// What a change is about: a stream (user, key) or a user's limit.
using change_target = std::tuple<bool, std::uint64_t, std::string>;

change_target target_of(const stream_change& c) {
  bool is_limit = c.kind == change_kind::set_limit
                  || c.kind == change_kind::clear_limit;
  return {is_limit, c.user, is_limit ? std::string{} : c.key};
}

/// A caller waiting for a change to be durable (or, with `any_shard`, for
/// everything received before it).
struct waiter {
  static constexpr std::uint32_t any_shard = UINT32_MAX;
  caf::typed_response_promise<bool> promise;
  steady::time_point deadline;
  /// The change's shard and epoch stamp.
  std::uint32_t shard = any_shard;
  std::int64_t epoch = 0;
};

/// Waiters in arrival order (a change may bring an earlier deadline of its
/// own, so not in deadline order).
using waiter_queue = std::deque<waiter>;

/// Changes coalesced per target, in order: the last change wins.
class change_batch {
public:
  /// Adds `c`; false (and nothing added) if `c` has a new target and the
  /// batch already holds `limit` changes.
  bool add(stream_change c, std::size_t limit) {
    auto target = target_of(c);
    if (auto i = index_.find(target); i != index_.end()) {
      changes_[i->second] = std::move(c);
      return true;
    }
    if (changes_.size() >= limit)
      return false;
    index_.emplace(std::move(target), changes_.size());
    changes_.push_back(std::move(c));
    return true;
  }

  std::size_t size() const noexcept {
    return changes_.size();
  }

  bool empty() const noexcept {
    return changes_.empty();
  }

  /// Hands the changes over; the batch is empty afterwards.
  std::vector<stream_change> take() {
    index_.clear();
    auto result = std::move(changes_);
    changes_.clear();
    return result;
  }

private:
  std::vector<stream_change> changes_;
  std::map<change_target, std::size_t> index_;
};

struct persistence_state {
  writer_actor writer;
  /// Told which shards a commit found fenced; may be null.
  fence_listener on_fenced;
  persistence_settings settings;
  std::shared_ptr<persistence_counters> counters;
  /// The batch gathering, and who waits for it.
  change_batch gathering;
  waiter_queue gathering_waiters;
  /// The batch the writer is committing (null when none), and who waits.
  std::shared_ptr<const std::vector<stream_change>> in_flight;
  waiter_queue in_flight_waiters;
  /// A flush message is on its way (at once, after the flush interval, or
  /// after a back-off).
  bool flush_scheduled = false;
  /// When the last commit started (the one in flight, if any); the next
  /// starts a flush interval later.
  steady::time_point last_dispatch;
  /// After a failed commit: the back-off, and no commit before `retry_at`.
  std::chrono::milliseconds retry_after{0};
  steady::time_point retry_at;
  bool probing = false;
  steady::time_point probe_since;
  /// Tags the pending watch message, so that exactly one timer runs.
  std::uint64_t watch_round = 0;
  steady::time_point last_contact;
  /// When the database was last found unreachable (for "database_up").
  steady::time_point down_since;
  static inline const char* name = "persistence_actor";

  std::size_t unwritten() const noexcept {
    return gathering.size() + (in_flight ? in_flight->size() : 0);
  }

  void update_depth() {
    counters->queue_depth.store(static_cast<std::int64_t>(unwritten()),
                                relaxed);
  }
};

using persistence_pointer
  = persistence_actor::stateful_pointer<persistence_state>;

void answer_all(waiter_queue& waiters, const caf::error& err) {
  for (auto& w : waiters) {
    if (err)
      w.promise.deliver(err);
    else
      w.promise.deliver(true);
  }
  waiters.clear();
}

/// Answers the waiters of a commit that could not write `result.dropped`.
void answer_committed(waiter_queue& waiters, const commit_result& result) {
  for (auto& w : waiters) {
    if (result.dropped.count({w.shard, w.epoch}) > 0)
      w.promise.deliver(make_error(persistence_error::fenced,
                                   "shard " + std::to_string(w.shard)
                                     + " is not this node's (any more)"));
    else
      w.promise.deliver(true);
  }
  waiters.clear();
}

/// Answers the waiters whose deadline passed.
void expire(persistence_pointer self, waiter_queue& waiters,
            steady::time_point now) {
  auto& st = self->state;
  auto late = std::stable_partition(waiters.begin(), waiters.end(),
                                    [now](const waiter& w) {
                                      return w.deadline > now;
                                    });
  for (auto i = late; i != waiters.end(); ++i) {
    st.counters->commit_timeouts.fetch_add(1, relaxed);
    i->promise.deliver(make_error(persistence_error::commit_timeout,
                                  "not committed in time"));
  }
  waiters.erase(late, waiters.end());
}

/// Makes sure the gathering batch will be committed: at once (after what
/// the mailbox holds), or when the flush interval since the last commit's
/// start, or the back-off after a failure, has passed.
void schedule_commit(persistence_pointer self) {
  auto& st = self->state;
  if (st.flush_scheduled || st.in_flight || st.gathering.empty())
    return;
  st.flush_scheduled = true;
  auto due = std::max(st.last_dispatch + st.settings.flush_interval,
                      st.retry_at);
  auto now = steady::now();
  if (due <= now)
    self->send(self, flush_atom::value);
  else
    self->delayed_send(self, due - now, flush_atom::value);
}

void committed(persistence_pointer self, const commit_result& result);
void commit_failed(persistence_pointer self, caf::error& err);

/// Hands the gathered batch to the writer, unless a commit runs.
void dispatch(persistence_pointer self) {
  auto& st = self->state;
  if (st.in_flight || st.gathering.empty())
    return;
  st.in_flight
    = std::make_shared<const std::vector<stream_change>>(st.gathering.take());
  st.in_flight_waiters = std::move(st.gathering_waiters);
  st.gathering_waiters.clear();
  st.last_dispatch = steady::now();
  self
    ->request(st.writer, caf::infinite, commit_atom::value,
              commit_batch{st.in_flight})
    .then(
      [self](commit_result& result) { committed(self, result); },
      [self](caf::error& err) { commit_failed(self, err); });
}

/// Records whether the database answers, and logs a change of it.
void set_reachable(persistence_pointer self, bool up, std::string_view why) {
  auto& st = self->state;
  auto was = st.counters->reachable.exchange(up, relaxed);
  if (was == up)
    return;
  auto now = steady::now();
  if (!up) {
    st.down_since = now;
    if (st.settings.log)
      st.settings.log->warn("database_down",
                            "the database is unreachable: " + std::string{why},
                            {{"reason", why}});
    return;
  }
  auto seconds = std::chrono::duration<double>(now - st.down_since).count();
  if (st.settings.log)
    st.settings.log->info("database_up",
                          "the database answers again after "
                            + std::to_string(static_cast<long long>(seconds))
                            + " s",
                          {{"down_seconds", seconds}, {"how", why}});
}

/// Adds one observation to a histogram over `bounds` (the last slot counts
/// those above every bound).
template <std::size_t N>
void observe(const std::array<double, N>& bounds,
             std::array<std::atomic<std::uint64_t>, N + 1>& slots,
             double value) {
  std::size_t i = 0;
  while (i < N && value > bounds[i])
    ++i;
  slots[i].fetch_add(1, relaxed);
}

void committed(persistence_pointer self, const commit_result& result) {
  auto& st = self->state;
  auto now = steady::now();
  auto& c = *st.counters;
  auto dropped = std::count_if(st.in_flight->begin(), st.in_flight->end(),
                               [&result](const stream_change& x) {
                                 return result.dropped_change(x);
                               });
  auto written = st.in_flight->size() - static_cast<std::size_t>(dropped);
  auto took = now - st.last_dispatch;
  c.commit_ns.fetch_add(static_cast<std::uint64_t>(took.count()), relaxed);
  observe(persistence_counters::commit_buckets, c.commit_duration,
          std::chrono::duration<double>(took).count());
  observe(persistence_counters::batch_buckets, c.batch_sizes,
          static_cast<double>(written));
  c.commits.fetch_add(1, relaxed);
  c.last_batch.store(written, relaxed);
  c.changes_written.fetch_add(written, relaxed);
  c.fenced.fetch_add(static_cast<std::uint64_t>(dropped), relaxed);
  set_reachable(self, true, "a commit succeeded");
  st.last_contact = now;
  st.retry_after = std::chrono::milliseconds{0};
  st.in_flight.reset();
  st.update_depth();
  answer_committed(st.in_flight_waiters, result);
  // Another node owns these shards now; whoever runs them must stop.
  if (!result.lost.empty() && st.on_fenced)
    self->send(st.on_fenced, fenced_atom::value, result.lost);
  if (st.gathering.size() >= st.settings.max_batch)
    dispatch(self);
  else
    schedule_commit(self);
}

void commit_failed(persistence_pointer self, caf::error& err) {
  auto& st = self->state;
  auto& c = *st.counters;
  c.errors.fetch_add(1, relaxed);
  if (is(err, persistence_error::unreachable))
    set_reachable(self, false, "a commit failed: " + describe(err));
  auto failed = std::move(st.in_flight);
  auto waiters = std::move(st.in_flight_waiters);
  st.in_flight_waiters.clear();
  // Keep the batch until a commit is confirmed, under the changes that
  // came since (they are newer); try again after a back-off. A retried
  // batch is safe: upserts and deletes are idempotent.
  change_batch merged;
  for (auto& change : *failed)
    merged.add(change, SIZE_MAX);
  for (auto& change : st.gathering.take())
    merged.add(std::move(change), SIZE_MAX);
  st.gathering = std::move(merged);
  st.update_depth();
  answer_all(waiters, err);
  st.retry_after = std::min(st.settings.max_retry_after,
                            std::max(st.settings.retry_after,
                                     st.retry_after * 2));
  st.retry_at = steady::now() + st.retry_after;
  schedule_commit(self);
}

/// Takes `change` (and, for a sync change, who waits for it); false if the
/// backlog is full. Only a change that adds state (a grant, a limit) is ever
/// refused: a close or a cleared limit undoes state that is in memory (so
/// their number is bounded by it), and refusing one could leave the
/// database with a stream that memory no longer has, for instance the
/// close that undoes a grant whose commit timed out. Nor is a change that
/// undoes a failed one (the limit memory kept after a limit change's
/// commit failed): the failed change may yet be written by a retry.
bool take(persistence_pointer self, stream_change& change,
          caf::typed_response_promise<bool>* waiting = nullptr) {
  auto& st = self->state;
  auto shard = change.shard;
  auto epoch = change.epoch;
  auto answer_by_ns = change.answer_by_ns;
  st.counters->changes_received.fetch_add(1, relaxed);
  bool adds_state = !change.undoes_failed_commit
                    && (change.kind == change_kind::grant
                        || change.kind == change_kind::set_limit);
  auto room = !adds_state ? SIZE_MAX
                          : st.settings.max_backlog
                              - std::min(st.settings.max_backlog,
                                         st.in_flight ? st.in_flight->size()
                                                      : 0);
  if (!st.gathering.add(std::move(change), room)) {
    st.counters->refused.fetch_add(1, relaxed);
    return false;
  }
  if (waiting != nullptr) {
    auto deadline = steady::now() + st.settings.commit_timeout;
    if (answer_by_ns != 0)
      deadline = std::min(deadline, steady::time_point{std::chrono::nanoseconds{
                                      answer_by_ns}});
    st.gathering_waiters.push_back(waiter{*waiting, deadline, shard, epoch});
  }
  st.update_depth();
  if (st.gathering.size() >= st.settings.max_batch
      && st.retry_after.count() == 0)
    dispatch(self);
  else
    schedule_commit(self);
  return true;
}

void watch(persistence_pointer self) {
  auto& st = self->state;
  auto now = steady::now();
  expire(self, st.in_flight_waiters, now);
  expire(self, st.gathering_waiters, now);
  auto stalled_since = st.in_flight ? st.last_dispatch
                       : st.probing ? st.probe_since
                                    : now;
  if (now - stalled_since >= 2 * st.settings.probe_every)
    set_reachable(self, false,
                  st.in_flight ? "a commit has not returned for "
                                   + std::to_string(
                                     (2 * st.settings.probe_every).count())
                                   + " ms"
                               : "a probe has not returned for "
                                   + std::to_string(
                                     (2 * st.settings.probe_every).count())
                                   + " ms");
  if (st.in_flight || st.probing || !st.gathering.empty()
      || now - st.last_contact < st.settings.probe_every)
    return; // the pending commit (or retry) is the probe
  st.probing = true;
  st.probe_since = now;
  self->request(st.writer, caf::infinite, probe_atom::value)
    .then(
      [self](bool up) {
        auto& st = self->state;
        st.probing = false;
        st.last_contact = steady::now();
        if (!up)
          st.counters->errors.fetch_add(1, relaxed);
        set_reachable(self, up,
                      up ? "a probe succeeded" : "a probe (SELECT 1) failed");
      },
      [self](caf::error&) { self->state.probing = false; });
}

persistence_actor::behavior_type
persistence_impl(persistence_pointer self, std::shared_ptr<stream_store> store,
                 persistence_settings settings,
                 std::shared_ptr<persistence_counters> counters) {
  auto& st = self->state;
  st.writer = self->spawn<caf::detached + caf::linked>(writer_impl,
                                                       std::move(store),
                                                       counters);
  st.settings = settings;
  st.counters = std::move(counters);
  st.last_contact = steady::now();
  st.last_dispatch = st.last_contact - settings.flush_interval;
  // Often enough to answer a change at most a tenth of its timeout late.
  auto watch_every = std::max(std::chrono::milliseconds{5},
                              std::min(settings.commit_timeout / 10,
                                       settings.probe_every));
  // If the writer ends (it is linked), or at shutdown: nobody may be left
  // waiting for an answer that would never come.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    auto err = make_error(persistence_error::unreachable,
                          "the persistence actor stopped");
    answer_all(st.in_flight_waiters, err);
    answer_all(st.gathering_waiters, err);
    self->quit(msg.reason);
  });
  self->send(self, watch_atom::value, st.watch_round);
  return {
    [self](stream_change& change) { take(self, change); },
    [self](commit_atom, stream_change& change) -> caf::result<bool> {
      auto rp = self->make_response_promise<bool>();
      if (!take(self, change, &rp))
        rp.deliver(make_error(persistence_error::backlog_full,
                              std::to_string(self->state.unwritten())
                                + " changes wait for the database"));
      return rp;
    },
    [self](flush_atom) {
      auto& st = self->state;
      st.flush_scheduled = false;
      if (steady::now() < st.retry_at)
        schedule_commit(self); // a stale flush must not skip the back-off
      else
        dispatch(self);
    },
    [self](sync_atom) -> caf::result<bool> {
      auto& st = self->state;
      auto rp = self->make_response_promise<bool>();
      waiter w{rp, steady::now() + st.settings.commit_timeout};
      if (!st.gathering.empty()) {
        st.gathering_waiters.push_back(std::move(w));
        schedule_commit(self);
      } else if (st.in_flight) {
        st.in_flight_waiters.push_back(std::move(w));
      } else {
        rp.deliver(true);
      }
      return rp;
    },
    [self](adopt_atom a, adopted_shard& x) -> caf::result<bool> {
      return self->delegate(self->state.writer, a, std::move(x));
    },
    [self](disown_atom a, std::vector<std::uint32_t>& shards)
      -> caf::result<bool> {
      return self->delegate(self->state.writer, a, std::move(shards));
    },
    [self](listen_atom, fence_listener& x) {
      self->state.on_fenced = std::move(x);
    },
    [self, watch_every](watch_atom, std::uint64_t round) {
      auto& st = self->state;
      if (round != st.watch_round)
        return; // not the actor's own timer: one timer only
      watch(self);
      self->delayed_send(self, watch_every, watch_atom::value,
                         ++st.watch_round);
    },
  };
}

} // namespace

persistence_actor
spawn_persistence_actor(caf::actor_system& sys,
                        std::shared_ptr<stream_store> store,
                        persistence_settings settings,
                        std::shared_ptr<persistence_counters> counters) {
  return sys.spawn(persistence_impl, std::move(store), std::move(settings),
                   std::move(counters));
}

} // namespace videostreams
