#include "persistence/persistence_actor.hpp"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

constexpr auto relaxed = std::memory_order_relaxed;
constexpr auto max_retry_after = std::chrono::milliseconds{5000};

/// What a change is about: a stream (user, key) or a user's limit.
using change_target = std::tuple<bool, std::uint64_t, std::string>;

change_target target_of(const stream_change& c) {
  bool is_limit = c.kind == change_kind::set_limit
                  || c.kind == change_kind::clear_limit;
  return {is_limit, c.user, is_limit ? std::string{} : c.key};
}

struct persistence_state {
  std::shared_ptr<stream_store> store;
  shard_epochs epochs;
  persistence_settings settings;
  std::shared_ptr<persistence_counters> counters;
  /// The batch gathering, coalesced: one change per target, in order.
  std::vector<stream_change> pending;
  std::map<change_target, std::size_t> index;
  /// Who waits for the gathering batch to commit.
  std::vector<caf::typed_response_promise<bool>> waiting;
  bool flush_scheduled = false;
  std::chrono::milliseconds retry_after{0};
  static inline const char* name = "persistence_actor";
};

using persistence_pointer
  = persistence_actor::stateful_pointer<persistence_state>;

void schedule_flush(persistence_pointer self,
                    std::chrono::milliseconds delay) {
  auto& st = self->state;
  if (st.flush_scheduled)
    return;
  st.flush_scheduled = true;
  if (delay.count() == 0)
    self->send(self, flush_atom::value);
  else
    self->delayed_send(self, delay, flush_atom::value);
}

void flush(persistence_pointer self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  if (st.pending.empty())
    return;
  auto started = std::chrono::steady_clock::now();
  auto result = st.store->commit(st.pending, st.epochs);
  st.counters->commit_ns.fetch_add(
    static_cast<std::uint64_t>((std::chrono::steady_clock::now() - started)
                                 .count()),
    relaxed);
  auto waiting = std::move(st.waiting);
  st.waiting.clear();
  if (result) {
    st.counters->commits.fetch_add(1, relaxed);
    st.counters->last_batch.store(st.pending.size(), relaxed);
    st.counters->reachable.store(true, relaxed);
    st.counters->changes_written.fetch_add(st.pending.size(), relaxed);
    st.counters->queue_depth.fetch_sub(
      static_cast<std::int64_t>(st.pending.size()), relaxed);
    st.pending.clear();
    st.index.clear();
    st.retry_after = std::chrono::milliseconds{0};
    for (auto& rp : waiting)
      rp.deliver(true);
    return;
  }
  st.counters->errors.fetch_add(1, relaxed);
  if (result.error().code()
      == static_cast<std::uint8_t>(persistence_error::unreachable)) {
    st.counters->reachable.store(false, relaxed);
    st.store->connection().reset(); // the next attempt starts afresh
  }
  for (auto& rp : waiting)
    rp.deliver(result.error());
  if (result.error().code()
      == static_cast<std::uint8_t>(persistence_error::fenced)) {
    // Another node owns a shard of this batch: its state is newer than
    // anything here, so nothing of this batch may ever be written.
    st.counters->queue_depth.fetch_sub(
      static_cast<std::int64_t>(st.pending.size()), relaxed);
    st.pending.clear();
    st.index.clear();
    return;
  }
  // Keep the batch until a commit is confirmed; try again after a back-off.
  // (A retried batch is safe: upserts and deletes are idempotent.)
  st.retry_after = std::min(max_retry_after,
                            std::max(st.settings.retry_after,
                                     st.retry_after * 2));
  schedule_flush(self, st.retry_after);
}

persistence_actor::behavior_type
persistence_impl(persistence_pointer self, std::shared_ptr<stream_store> store,
                 shard_epochs epochs, persistence_settings settings,
                 std::shared_ptr<persistence_counters> counters) {
  auto& st = self->state;
  st.store = std::move(store);
  st.epochs = std::move(epochs);
  st.settings = settings;
  st.counters = std::move(counters);
  self->delayed_send(self, st.settings.probe_every, probe_atom::value);
  return {
    [self](stream_change& change) -> caf::result<bool> {
      auto& st = self->state;
      st.counters->changes_received.fetch_add(1, relaxed);
      auto target = target_of(change);
      auto i = st.index.find(target);
      if (i == st.index.end() && st.pending.size() >= st.settings.max_backlog) {
        st.counters->refused.fetch_add(1, relaxed);
        return make_error(persistence_error::backlog_full,
                          std::to_string(st.pending.size())
                            + " changes wait for the database");
      }
      if (i != st.index.end()) {
        st.pending[i->second] = std::move(change); // the last change wins
      } else {
        st.index.emplace(std::move(target), st.pending.size());
        st.pending.push_back(std::move(change));
        st.counters->queue_depth.fetch_add(1, relaxed);
      }
      auto rp = self->make_response_promise<bool>();
      st.waiting.push_back(rp);
      if (st.pending.size() >= st.settings.max_batch && st.retry_after.count() == 0)
        flush(self);
      else
        schedule_flush(self, std::max(st.settings.flush_interval,
                                      st.retry_after));
      return rp;
    },
    [self](flush_atom) { flush(self); },
    [self](probe_atom) {
      auto& st = self->state;
      self->delayed_send(self, st.settings.probe_every, probe_atom::value);
      if (!st.pending.empty())
        return; // the pending batch's commit (or retry) is the probe
      if (st.store->connection().exec("SELECT 1")) {
        st.counters->reachable.store(true, relaxed);
        return;
      }
      st.counters->errors.fetch_add(1, relaxed);
      st.counters->reachable.store(false, relaxed);
      if (st.store->connection().reset())
        st.counters->reachable.store(true, relaxed);
    },
  };
}

} // namespace

persistence_actor
spawn_persistence_actor(caf::actor_system& sys,
                        std::shared_ptr<stream_store> store,
                        shard_epochs epochs, persistence_settings settings,
                        std::shared_ptr<persistence_counters> counters) {
  return sys.spawn<caf::detached>(persistence_impl, std::move(store),
                                  std::move(epochs), settings,
                                  std::move(counters));
}

} // namespace videostreams
