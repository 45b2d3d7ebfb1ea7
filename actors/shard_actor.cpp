#include "actors/shard_actor.hpp"

#include <unordered_map>
#include <vector>

#include "caf/actor_ostream.hpp"
#include "caf/actor_system.hpp"
#include "caf/send.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

namespace videostreams {

namespace {

// A user actor is passivated after `passivate_after`, measured in ticks of
// a quarter of that period: an idle user stops between 1 and 1.25 periods
// after its last command, and the shard needs no clock read per message.
constexpr std::uint32_t ticks_per_period = 4;

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
  std::vector<held_command> held;
};

struct shard_state {
  shard_settings settings;
  std::uint32_t tick = 0;
  std::unordered_map<std::uint64_t, live_user> live;
  std::unordered_map<std::uint64_t, user_streams> passive;
  static inline const char* name = "shard_actor";
};

using shard_pointer = shard_actor::stateful_pointer<shard_state>;

stream_counters& counters_of(shard_pointer self) {
  return *self->state.settings.users->counters;
}

/// Returns the running actor entry of `user`, starting the actor (from the
/// user's compact record, if it has one) when there is none.
live_user& activate(shard_pointer self, std::uint64_t user) {
  auto& st = self->state;
  auto i = st.live.find(user);
  if (i != st.live.end())
    return i->second;
  user_streams record;
  if (auto j = st.passive.find(user); j != st.passive.end()) {
    record = std::move(j->second);
    st.passive.erase(j);
    counters_of(self).passive_records.fetch_sub(1, std::memory_order_relaxed);
  }
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

void on_passivated(shard_pointer self, std::uint64_t user,
                   user_streams record) {
  auto& st = self->state;
  auto i = st.live.find(user);
  if (i == st.live.end())
    return; // cannot happen: only this shard removes entries
  auto held = std::move(i->second.held);
  st.live.erase(i);
  if (!record.empty()) {
    st.passive.emplace(user, std::move(record));
    counters_of(self).passive_records.fetch_add(1, std::memory_order_relaxed);
  }
  if (held.empty())
    return;
  // Commands arrived while the actor was stopping: re-activate at once and
  // deliver them in their original order.
  auto& entry = activate(self, user);
  for (auto& x : held)
    forward(self, entry, std::move(x));
}

void passivate_idle_users(shard_pointer self) {
  auto& st = self->state;
  for (auto& [user, entry] : st.live) {
    if (entry.stopping || st.tick - entry.last_tick <= ticks_per_period)
      continue;
    entry.stopping = true;
    auto id = user;
    self->request(entry.actor, caf::infinite, passivate_atom::value)
      .then(
        [self, id](user_streams& record) {
          on_passivated(self, id, std::move(record));
        },
        [self, id](caf::error& err) {
          // A user actor only stops when asked to; if it died anyway, its
          // streams are gone with it. Say so, and keep serving the user.
          aout(self) << "user actor of " << id
                     << " failed during passivation: "
                     << self->system().render(err) << std::endl;
          on_passivated(self, id, user_streams{});
        });
  }
}

shard_actor::behavior_type shard_impl(shard_pointer self,
                                      shard_settings settings) {
  self->state.settings = std::move(settings);
  auto tick_interval = self->state.settings.passivate_after / ticks_per_period;
  if (tick_interval < std::chrono::milliseconds{1})
    tick_interval = std::chrono::milliseconds{1};
  self->delayed_send(self, tick_interval, tick_atom::value);
  // User actors are not linked to their shard (a million links would cost
  // more than the actors); a shard told to exit stops them first. (Not in an
  // attached functor: those run after the state is gone.)
  self->set_exit_handler([self](caf::exit_msg& msg) {
    for (auto& [user, entry] : self->state.live)
      self->send_exit(entry.actor, msg.reason);
    self->quit(std::move(msg.reason));
  });
  auto dispatch = [self](held_command&& x) {
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
    [self, tick_interval](tick_atom) {
      ++self->state.tick;
      passivate_idle_users(self);
      self->delayed_send(self, tick_interval, tick_atom::value);
    },
    [self](stats_atom) -> shard_stats {
      return shard_stats{self->state.live.size(), self->state.passive.size()};
    },
  };
}

} // namespace

shard_actor spawn_shard_actor(caf::actor_system& sys, shard_settings settings) {
  return sys.spawn(shard_impl, std::move(settings));
}

} // namespace videostreams
