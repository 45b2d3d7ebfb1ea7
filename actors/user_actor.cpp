#include "actors/user_actor.hpp"

#include <chrono>

#include "caf/actor_system.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

namespace videostreams {

namespace {

struct user_actor_state {
  std::uint64_t user = 0;
  user_streams streams;
  std::shared_ptr<const user_settings> settings;
  static inline const char* name = "user_actor";
};

using user_pointer = user_actor::stateful_pointer<user_actor_state>;

std::int64_t wall_now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

user_reply decide(user_actor_state& st, const user_command& cmd) {
  auto& counters = *st.settings->counters;
  auto limit = st.settings->default_limit;
  auto outcome = stream_outcome::denied;
  switch (cmd.op) {
    case user_op::start_legacy:
      outcome = st.streams.start_legacy(limit, wall_now_ms());
      if (outcome == stream_outcome::granted) {
        counters.grants.fetch_add(1, std::memory_order_relaxed);
        counters.open_streams.fetch_add(1, std::memory_order_relaxed);
      } else {
        counters.denials.fetch_add(1, std::memory_order_relaxed);
      }
      break;
    case user_op::end_legacy:
      outcome = st.streams.end_legacy();
      if (outcome == stream_outcome::closed)
        counters.open_streams.fetch_sub(1, std::memory_order_relaxed);
      break;
  }
  return user_reply{outcome, st.streams.count(), limit};
}

user_actor::behavior_type user_actor_impl(
  user_pointer self, std::uint64_t user, user_streams record,
  std::shared_ptr<const user_settings> settings) {
  self->state.user = user;
  self->state.streams = std::move(record);
  self->state.settings = std::move(settings);
  auto* counters = self->state.settings->counters;
  counters->live_user_actors.fetch_add(1, std::memory_order_relaxed);
  counters->activations.fetch_add(1, std::memory_order_relaxed);
  self->attach_functor([counters] {
    counters->live_user_actors.fetch_sub(1, std::memory_order_relaxed);
  });
  return {
    [self](user_command& cmd) -> user_reply {
      return decide(self->state, cmd);
    },
    [self](local_call& call) {
      call.slot->fulfill(decide(self->state, call.cmd));
    },
    [self](passivate_atom) -> user_streams {
      self->state.settings->counters->passivations.fetch_add(
        1, std::memory_order_relaxed);
      self->quit();
      return std::move(self->state.streams);
    },
  };
}

} // namespace

user_actor spawn_user_actor(caf::actor_system& sys, std::uint64_t user,
                            user_streams record,
                            std::shared_ptr<const user_settings> settings) {
  return sys.spawn(user_actor_impl, user, std::move(record),
                   std::move(settings));
}

} // namespace videostreams
