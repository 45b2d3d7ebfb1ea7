#pragma once

// A deterministic actor system for unit tests: CAF's test coordinator runs
// every message on the test's own thread, and time only moves when the test
// advances it.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "caf/actor_cast.hpp"
#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/atom.hpp"
#include "caf/scheduler/test_coordinator.hpp"
#include "caf/event_based_actor.hpp"
#include "caf/send.hpp"

#include "actors/message_types.hpp"
#include "actors/shard_actor.hpp"
#include "actors/stream_counters.hpp"

namespace videostreams::testing {

struct deterministic_config : caf::actor_system_config {
  deterministic_config() {
    register_message_types(*this);
    set("scheduler.policy", caf::atom("testing"));
    set("logger.verbosity", caf::atom("quiet"));
  }
};

/// Makes the stand-in persistence actor answer the changes it kept.
using settle_atom = caf::atom_constant<caf::atom("settle")>;

/// How the stand-in for the persistence actor answers a change.
enum class commit_answer { ok, error, never };

/// One shard with its counters, on the test coordinator.
struct shard_fixture {
  static constexpr std::chrono::milliseconds passivate_after{1000};

  explicit shard_fixture(std::uint32_t limit = 3,
                         std::uint32_t legacy_ttl_seconds = 0,
                         bool collect_changes = false, bool sync = false)
    : sys(cfg),
      sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())) {
    auto users = std::make_shared<user_settings>();
    if (collect_changes) {
      // Stands in for the persistence actor: records what it is sent.
      sink_of_changes = sys.spawn([this](caf::event_based_actor* self) {
        return caf::behavior{
          [this](stream_change& c) { changes.push_back(std::move(c)); },
          [this, self](commit_atom, stream_change& c) -> caf::result<bool> {
            changes.push_back(std::move(c));
            switch (answer) {
              case commit_answer::ok:
                return true;
              case commit_answer::error:
                return caf::make_error(caf::sec::runtime_error);
              case commit_answer::never:
                break;
            }
            // Keep the promise: a commit not confirmed yet.
            hung.push_back(self->make_response_promise());
            return caf::delegated<bool>{};
          },
          [this](settle_atom, bool committed) {
            settle(hung.size(), committed);
          },
          [this](settle_atom, bool committed, std::uint64_t n) {
            settle(n, committed);
          },
        };
      });
      users->change_sink = caf::actor_cast<change_sink>(sink_of_changes);
      users->sync_grants = sync;
    }
    users->default_limit = limit;
    users->legacy_ttl_seconds = legacy_ttl_seconds;
    users->clock = clock;
    users->counters = &counters;
    settings = shard_settings{users, passivate_after};
    settings.index = 17;
    shard = spawn_shard_actor(sys, settings);
    sched.run();
  }

  /// Replaces the shard by a fresh one whose user actors check
  /// `deadlines` before every decision.
  void restart_with_deadlines(std::shared_ptr<const shard_deadlines> x) {
    caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
    sched.run();
    auto users = std::make_shared<user_settings>(*settings.users);
    users->deadlines = std::move(x);
    settings.users = users;
    shard = spawn_shard_actor(sys, settings);
    sched.run();
  }

  ~shard_fixture() {
    if (sink_of_changes)
      caf::anon_send_exit(sink_of_changes, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
    sched.run();
    // Every user actor stopped with its shard, pending timers or not.
    CHECK(counters.live_user_actors == 0);
  }

  /// Sends `cmd` to the shard without running anything.
  std::shared_ptr<reply_slot> post(user_command cmd) {
    auto slot = std::make_shared<reply_slot>();
    caf::anon_send(shard, local_call{std::move(cmd), slot});
    return slot;
  }

  /// Sends `op` for `user` to the shard without running anything.
  std::shared_ptr<reply_slot> post(user_op op, std::uint64_t user) {
    return post(user_command{op, user, {}, 0, 0});
  }

  /// Sends `cmd`, runs every pending message, returns the reply.
  user_reply call(user_command cmd) {
    auto slot = post(std::move(cmd));
    sched.run();
    REQUIRE(slot->wait_for(std::chrono::nanoseconds{0}));
    return slot->value();
  }

  /// Sends `op` for `user`, runs every pending message, returns the reply.
  user_reply call(user_op op, std::uint64_t user) {
    return call(user_command{op, user, {}, 0, 0});
  }

  /// Answers the sync changes the stand-in kept (`commit_answer::never`):
  /// committed, or a timeout; then runs what follows.
  void settle_hung(bool committed) {
    caf::anon_send(sink_of_changes, settle_atom::value, committed);
    sched.run();
  }

  /// Answers only the first `n` of the sync changes the stand-in kept, in
  /// the order they came; then runs what follows.
  void settle_first(std::uint64_t n, bool committed) {
    caf::anon_send(sink_of_changes, settle_atom::value, committed, n);
    sched.run();
  }

  /// Moves both the actors' timers and the injected clock by `d`, in steps
  /// of the shard's tick, running everything that becomes due.
  void idle_for(std::chrono::milliseconds d) {
    auto step = passivate_after / 4;
    for (auto t = std::chrono::milliseconds{0}; t < d; t += step) {
      clock->advance(step);
      sched.advance_time(step);
      sched.run();
    }
  }

  /// Answers the first `n` hung changes (inside the stand-in actor: a
  /// promise is delivered by the actor that holds it).
  void settle(std::uint64_t n, bool committed) {
    n = std::min<std::uint64_t>(n, hung.size());
    for (std::uint64_t i = 0; i < n; ++i) {
      if (committed)
        hung[i].deliver(true);
      else
        hung[i].deliver(caf::make_error(caf::sec::request_timeout));
    }
    hung.erase(hung.begin(), hung.begin() + static_cast<std::ptrdiff_t>(n));
  }

  std::shared_ptr<manual_clock> clock = std::make_shared<manual_clock>();
  /// What the user actors sent for persistence, in order.
  std::vector<stream_change> changes;
  /// How the stand-in persistence actor answers.
  commit_answer answer = commit_answer::ok;
  /// Sync changes the stand-in has not answered yet (`commit_answer::never`).
  std::vector<caf::response_promise> hung;
  caf::actor sink_of_changes;
  stream_counters counters;
  deterministic_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  shard_settings settings;
  shard_actor shard;
};

} // namespace videostreams::testing
