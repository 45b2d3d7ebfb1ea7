#include "actors/shard_actor.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <queue>
#include <memory>
#include <memory_resource>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "caf/actor_ostream.hpp"
#include "caf/actor_system.hpp"
#include "caf/binary_deserializer.hpp"
#include "caf/binary_serializer.hpp"
#include "caf/send.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"
#include "caf/sec.hpp"

#include "actors/user_tombstones.hpp"

namespace videostreams {

namespace {

// The shard's clock is a tick of at most a quarter of `passivate_after` and
// at most `max_tick`. A user actor is passivated after `idle_ticks` ticks
// without a command (between 1 and 1.25 periods), so the shard needs no clock
// read per message; passivated users' leases are swept at every tick, so an
// unrenewed lease is gone within `max_tick` of its deadline.
constexpr auto max_tick = std::chrono::milliseconds{500};

// How often the known-user tombstones are swept: an entry lives at most
// this much past its hour.
constexpr std::int64_t tombstone_sweep_ns = 60'000'000'000;

std::chrono::milliseconds tick_interval_for(std::chrono::milliseconds p) {
  return std::max(std::chrono::milliseconds{1}, std::min(p / 4, max_tick));
}

/// A command held while its user's actor is being passivated; answered
/// either through a slot (local caller) or a response promise (request).
struct held_command {
  user_command cmd;
  std::shared_ptr<reply_slot> slot;
  caf::typed_response_promise<user_reply> promise;
};

struct live_user {
  user_actor actor;
  std::uint32_t last_tick = 0;
  /// True between sending `passivate` and receiving the record.
  bool stopping = false;
  /// The earliest of this user's deadlines waiting in `deadlines`; 0 when
  /// none is known to be (then passivation queues the record's own).
  std::int64_t queued_deadline = 0;
  std::vector<held_command> held;
};

/// A user with a lease that ends at `deadline` (monotonic ns).
struct lease_deadline {
  std::int64_t deadline;
  std::uint64_t user;
  bool operator>(const lease_deadline& other) const noexcept {
    return deadline > other.deadline;
  }
};

/// The passivated users of a shard, each record packed into a string (CAF's
/// binary format of `user_streams`), all in a memory pool of their own. Two
/// reasons: a packed record with one lease takes ~150 bytes instead of the
/// ~350 of the unpacked containers, and keeping them out of the general heap
/// lets the pages of passivated actors be given back to the system (records
/// allocated among them would pin those pages).
class passive_store {
public:
  std::size_t size() const noexcept {
    return records_.size();
  }

  /// Open streams in all records (expired ones not swept yet included).
  std::int64_t open_streams() const noexcept {
    return open_streams_;
  }

  /// Stores `record` for `user` (replacing any). Packing these plain types
  /// into a growing buffer does not fail; the error is passed on all the
  /// same rather than thrown inside the actor.
  caf::error put(caf::actor_system& sys, std::uint64_t user,
                 user_streams& record) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    if (auto err = sink(record))
      return err;
    auto [i, added] = records_.try_emplace(user);
    if (!added)
      open_streams_ -= counts_[user];
    i->second.assign(buf.data(), buf.size());
    counts_[user] = record.count();
    open_streams_ += record.count();
    return caf::none;
  }

  /// Removes and returns the record of `user` (empty if it has none or it
  /// cannot be read back, which `err` then says).
  user_streams take(caf::actor_system& sys, std::uint64_t user,
                    caf::error& err) {
    user_streams record;
    auto i = records_.find(user);
    if (i == records_.end())
      return record;
    caf::binary_deserializer source{sys, i->second.data(), i->second.size()};
    err = source(record);
    if (err)
      record = user_streams{};
    records_.erase(i);
    auto c = counts_.find(user);
    open_streams_ -= c->second;
    counts_.erase(c);
    return record;
  }

  bool contains(std::uint64_t user) const {
    return records_.count(user) > 0;
  }

private:
  std::pmr::unsynchronized_pool_resource pool_;
  std::pmr::unordered_map<std::uint64_t, std::pmr::string> records_{&pool_};
  std::pmr::unordered_map<std::uint64_t, std::uint32_t> counts_{&pool_};
  std::int64_t open_streams_ = 0;
};

/// What a shard's records add to the node's gauges, for the moment they
/// leave them: when a hand-off has drained the shard (the records are the
/// next owner's then), or when the shard ends, whichever comes first.
struct shard_tally {
  std::atomic<std::int64_t> records{0};
  std::atomic<std::int64_t> open_streams{0};
  /// True while the records count in the node's gauges.
  std::atomic<bool> counted{true};

  /// Takes the records out of `counters` (once).
  void uncount(stream_counters& counters) {
    if (!counted.exchange(false))
      return;
    counters.passive_records.fetch_sub(records.load(),
                                       std::memory_order_relaxed);
    counters.open_streams.fetch_sub(open_streams.load(),
                                    std::memory_order_relaxed);
  }

  /// Puts them back (a hand-off undone).
  void recount(stream_counters& counters) {
    if (counted.exchange(true))
      return;
    counters.passive_records.fetch_add(records.load(),
                                       std::memory_order_relaxed);
    counters.open_streams.fetch_add(open_streams.load(),
                                    std::memory_order_relaxed);
  }
};

struct shard_state {
  shard_settings settings;
  std::shared_ptr<shard_tally> tally = std::make_shared<shard_tally>();
  /// Set by a hand-off: every command goes there instead of being decided.
  user_endpoint redirect;
  /// Answered once a hand-off has passivated every live user.
  std::vector<caf::typed_response_promise<std::uint64_t>> drained;
  std::chrono::milliseconds tick_interval{1};
  std::uint32_t idle_ticks = 4;
  std::uint32_t tick = 0;
  std::unordered_map<std::uint64_t, live_user> live;
  std::unique_ptr<passive_store> passive = std::make_unique<passive_store>();
  /// When the last stream of users with neither actor nor record ended
  /// (the "known" users of docs/api.md, "The original API"); a user is in at
  /// most one of `live`, `passive` and `tombstones`.
  std::unique_ptr<user_tombstones> tombstones
    = std::make_unique<user_tombstones>();
  std::int64_t next_tombstone_sweep_ns = 0;
  /// Lease deadlines of this shard's users, live or passivated, earliest
  /// first. Entries may be stale (renewed or closed since): acting on one
  /// then just finds nothing expired.
  std::priority_queue<lease_deadline, std::vector<lease_deadline>,
                      std::greater<>>
    deadlines;
  static inline const char* name = "shard_actor";
};

using shard_pointer = shard_actor::stateful_pointer<shard_state>;

stream_counters& counters_of(shard_pointer self) {
  return *self->state.settings.users->counters;
}

void report_freed(shard_pointer self, std::size_t n) {
  if (n > 0 && self->state.settings.trimmer != nullptr)
    self->state.settings.trimmer->note_freed(n);
}

/// Brings the node's record gauge and the shard's tally in line with the
/// record store after it changed by `records` records.
void count_records(shard_pointer self, std::int64_t records) {
  auto& st = self->state;
  if (st.tally->counted.load())
    counters_of(self).passive_records.fetch_add(records,
                                                std::memory_order_relaxed);
  st.tally->records.store(static_cast<std::int64_t>(st.passive->size()),
                          std::memory_order_relaxed);
  st.tally->open_streams.store(st.passive->open_streams(),
                               std::memory_order_relaxed);
}

/// Keeps `record` as `user`'s compact record; of an empty one, only when
/// its last stream ended, while that still makes the user known.
void keep_record(shard_pointer self, std::uint64_t user,
                 user_streams& record, std::int64_t now_ns) {
  auto& st = self->state;
  if (record.empty()) {
    if (record.ended_recently(now_ns))
      st.tombstones->put(user, record.last_end_ns());
    return;
  }
  bool had = st.passive->contains(user);
  if (auto err = st.passive->put(self->system(), user, record)) {
    // Cannot happen for these plain types; if it did, the user's streams
    // would be forgotten, so leave a trace.
    aout(self) << "shard " << st.settings.index << ": cannot keep the record "
               << "of user " << user << ": " << self->system().render(err)
               << std::endl;
    return;
  }
  count_records(self, had ? 0 : 1);
}

/// Removes and returns `user`'s compact record (empty when it has none).
user_streams take_record(shard_pointer self, std::uint64_t user) {
  auto& st = self->state;
  if (!st.passive->contains(user))
    return {};
  caf::error err;
  auto record = st.passive->take(self->system(), user, err);
  if (err)
    aout(self) << "shard " << st.settings.index << ": cannot read the record "
               << "of user " << user << ": " << self->system().render(err)
               << std::endl;
  count_records(self, -1);
  return record;
}

/// Returns the running actor entry of `user`, starting the actor (from the
/// user's compact record, if it has one) when there is none.
live_user& activate(shard_pointer self, std::uint64_t user) {
  auto& st = self->state;
  auto i = st.live.find(user);
  if (i != st.live.end())
    return i->second;
  auto record = take_record(self, user);
  if (auto ended = st.tombstones->take(user))
    record.remember_end(*ended);
  auto& entry = st.live[user];
  entry.actor = spawn_user_actor(self->system(), user, std::move(record),
                                 st.settings.users);
  return entry;
}

void forward(shard_pointer self, live_user& entry, held_command&& x) {
  entry.last_tick = self->state.tick;
  if (x.slot)
    self->send(entry.actor, local_call{x.cmd, std::move(x.slot)});
  else
    x.promise.delegate(entry.actor, x.cmd);
}

/// Sends a command to where a hand-off redirects them.
void redirect(shard_pointer self, held_command&& x) {
  auto& to = self->state.redirect;
  if (x.slot)
    self->send(to, local_call{x.cmd, std::move(x.slot)});
  else
    x.promise.delegate(to, x.cmd);
}

/// Answers a hand-off once no user actor is left.
void check_drained(shard_pointer self) {
  auto& st = self->state;
  if (st.drained.empty() || !st.live.empty())
    return;
  auto waiting = std::move(st.drained);
  st.drained.clear();
  // Every user is a record now, and the records go to the next owner.
  st.tally->uncount(counters_of(self));
  for (auto& rp : waiting)
    rp.deliver(static_cast<std::uint64_t>(st.passive->size()));
}

void on_passivated(shard_pointer self, std::uint64_t user,
                   user_streams record) {
  auto& st = self->state;
  auto i = st.live.find(user);
  if (i == st.live.end())
    return; // cannot happen: only this shard removes entries
  auto held = std::move(i->second.held);
  auto queued = i->second.queued_deadline;
  st.live.erase(i);
  report_freed(self, 1);
  auto now = st.settings.users->clock->now();
  with_persistence(record, user, *st.settings.users, now, [&] {
    expire_leases(record, *st.settings.users, now);
  });
  if (!record.empty()) {
    // One entry per user is enough: an earlier one that turns out stale is
    // re-queued with the record's next deadline when it comes due.
    if (auto next = record.next_cleanup();
        next != 0 && (queued == 0 || queued > next))
      st.deadlines.push({next, user});
  }
  keep_record(self, user, record, now.mono_ns);
  if (st.redirect) {
    // Handing off: what waited for this user goes where all commands go.
    for (auto& x : held)
      redirect(self, std::move(x));
    check_drained(self);
    return;
  }
  if (held.empty())
    return;
  // Commands arrived while the actor was stopping: re-activate at once and
  // deliver them in their original order.
  auto& entry = activate(self, user);
  for (auto& x : held)
    forward(self, entry, std::move(x));
}

/// Acts on every lease deadline that has come: wakes a live user's actor,
/// or closes the expired leases of a passivated user's record (dropping a
/// record left with nothing in it).
void expire_due_leases(shard_pointer self) {
  auto& st = self->state;
  auto now = st.settings.users->clock->now();
  auto& due = st.deadlines;
  std::size_t freed = 0;
  while (!due.empty() && due.top().deadline <= now.mono_ns) {
    auto user = due.top().user;
    due.pop();
    if (auto i = st.live.find(user); i != st.live.end()) {
      i->second.queued_deadline = 0;
      // A stopping actor's record is swept when it arrives.
      if (!i->second.stopping)
        self->send(i->second.actor, expire_atom::value);
      continue;
    }
    if (!st.passive->contains(user))
      continue; // nothing left of this user
    auto record = take_record(self, user);
    with_persistence(record, user, *st.settings.users, now, [&] {
      expire_leases(record, *st.settings.users, now);
    });
    if (record.empty()) {
      keep_record(self, user, record, now.mono_ns); // a tombstone, if any
      ++freed;
      continue;
    }
    keep_record(self, user, record, now.mono_ns);
    if (auto next = record.next_cleanup(); next > now.mono_ns)
      due.push({next, user});
  }
  report_freed(self, freed);
  if (freed > 0 && st.passive->size() == 0) {
    // The last record is gone: give the pool and the queue back too, and
    // make sure the heap is trimmed after that.
    st.passive = std::make_unique<passive_store>();
    if (due.empty())
      st.deadlines = decltype(st.deadlines){};
    if (auto trimmer = st.settings.trimmer)
      trimmer->note_large_free();
  }
}

/// Forgets the known-user tombstones whose hour is over, once a minute.
void sweep_tombstones(shard_pointer self) {
  auto& st = self->state;
  if (st.tombstones->size() == 0)
    return;
  auto now = st.settings.users->clock->now().mono_ns;
  if (now < st.next_tombstone_sweep_ns)
    return;
  st.next_tombstone_sweep_ns = now + tombstone_sweep_ns;
  if (st.tombstones->sweep(now, known_user_memory_ns) > 0
      && st.tombstones->size() == 0) {
    // Give the pool back too.
    st.tombstones = std::make_unique<user_tombstones>();
    if (auto trimmer = st.settings.trimmer)
      trimmer->note_large_free();
  }
}

/// Asks the actor of `user` to stop and hand its state back.
void passivate(shard_pointer self, std::uint64_t user, live_user& entry) {
  entry.stopping = true;
  self->request(entry.actor, caf::infinite, passivate_atom::value)
    .then(
      [self, user](user_streams& record) {
        on_passivated(self, user, std::move(record));
      },
      [self, user](caf::error& err) {
        // A user actor only stops when asked to; if it died anyway, its
        // streams are gone with it. Say so, and keep serving the user.
        aout(self) << "user actor of " << user
                   << " failed during passivation: "
                   << self->system().render(err) << std::endl;
        on_passivated(self, user, user_streams{});
      });
}

void passivate_idle_users(shard_pointer self) {
  auto& st = self->state;
  for (auto& [user, entry] : st.live)
    if (!entry.stopping && st.tick - entry.last_tick > st.idle_ticks)
      passivate(self, user, entry);
}

shard_actor::behavior_type shard_impl(shard_pointer self,
                                      shard_settings settings) {
  auto& st = self->state;
  st.settings = std::move(settings);
  auto users = std::make_shared<user_settings>(*st.settings.users);
  users->wake_up_target = self->address();
  users->shard = st.settings.index;
  users->epoch = st.settings.epoch;
  st.settings.users = std::move(users);
  st.tick_interval = tick_interval_for(st.settings.passivate_after);
  st.idle_ticks = static_cast<std::uint32_t>(
    (st.settings.passivate_after + st.tick_interval
     - std::chrono::milliseconds{1})
    / st.tick_interval);
  // However the shard ends, what its records held leaves the node's gauges
  // (state is gone by the time attached functors run; the tally is not).
  auto* counters = st.settings.users->counters;
  self->attach_functor([counters, tally = st.tally] {
    tally->uncount(*counters);
  });
  self->delayed_send(self, st.tick_interval, tick_atom::value);
  // User actors are not linked to their shard (a million links would cost
  // more than the actors); a shard told to exit stops them first. (Not in an
  // attached functor: those run after the state is gone.)
  self->set_exit_handler([self](caf::exit_msg& msg) {
    for (auto& [user, entry] : self->state.live)
      self->send_exit(entry.actor, msg.reason);
    self->quit(std::move(msg.reason));
  });
  auto dispatch = [self](held_command&& x) {
    if (self->state.redirect) {
      redirect(self, std::move(x));
      return;
    }
    auto& entry = activate(self, x.cmd.user);
    if (entry.stopping)
      entry.held.push_back(std::move(x));
    else
      forward(self, entry, std::move(x));
  };
  return {
    [self, dispatch](user_command& cmd) -> caf::result<user_reply> {
      auto promise = self->make_response_promise<user_reply>();
      dispatch(held_command{cmd, nullptr, promise});
      return promise;
    },
    [dispatch](local_call& call) {
      dispatch(held_command{call.cmd, std::move(call.slot), {}});
    },
    [self](expire_atom, std::uint64_t user, std::int64_t deadline) {
      auto& st = self->state;
      st.deadlines.push({deadline, user});
      if (auto i = st.live.find(user); i != st.live.end()) {
        auto& queued = i->second.queued_deadline;
        if (queued == 0 || deadline < queued)
          queued = deadline;
      }
    },
    [self](restore_atom, std::uint64_t user, user_streams& record) {
      auto& st = self->state;
      if (st.live.count(user) > 0 || record.empty())
        return; // recovery runs before any request; nothing to add
      counters_of(self).open_streams.fetch_add(record.count(),
                                               std::memory_order_relaxed);
      if (auto next = record.next_cleanup(); next != 0)
        st.deadlines.push({next, user});
      st.tombstones->take(user);
      keep_record(self, user, record,
                  st.settings.users->clock->now().mono_ns);
    },
    [self](restore_atom) -> std::uint64_t {
      return self->state.passive->size();
    },
    [self](handoff_atom, user_endpoint& to) -> caf::result<std::uint64_t> {
      auto& st = self->state;
      st.redirect = std::move(to);
      for (auto& [user, entry] : st.live)
        if (!entry.stopping)
          passivate(self, user, entry);
      auto rp = self->make_response_promise<std::uint64_t>();
      st.drained.push_back(rp);
      check_drained(self);
      return rp;
    },
    [self](resume_atom) {
      auto& st = self->state;
      st.redirect = nullptr;
      st.tally->recount(counters_of(self));
      for (auto& rp : st.drained)
        rp.deliver(caf::make_error(caf::sec::request_receiver_down));
      st.drained.clear();
    },
    [self](tick_atom) {
      auto& st = self->state;
      ++st.tick;
      // A shard being handed off decides nothing: its users are passivated
      // and their leases go to the next owner as they are.
      if (!st.redirect) {
        expire_due_leases(self);
        passivate_idle_users(self);
        sweep_tombstones(self);
      }
      if (auto trimmer = st.settings.trimmer)
        trimmer->maybe_trim();
      self->delayed_send(self, st.tick_interval, tick_atom::value);
    },
  };
}

} // namespace

shard_actor spawn_shard_actor(caf::actor_system& sys, shard_settings settings) {
  return sys.spawn(shard_impl, std::move(settings));
}

} // namespace videostreams
