#include <catch2/catch.hpp>

#include <optional>

#include "caf/event_based_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "actor_fixture.hpp"

using namespace videostreams;
using videostreams::testing::shard_fixture;

namespace {

constexpr auto start = user_op::start_legacy;
constexpr auto end = user_op::end_legacy;

} // namespace

TEST_CASE("a user actor grants up to the limit, then denies", "[unit]") {
  shard_fixture f;
  for (std::uint32_t i = 1; i <= 3; ++i) {
    auto r = f.call(start, 42);
    CHECK(r.outcome == stream_outcome::granted);
    CHECK(r.stream_count == i);
    CHECK(r.max_streams == 3);
  }
  auto r = f.call(start, 42);
  CHECK(r.outcome == stream_outcome::denied);
  CHECK(r.stream_count == 3);
  CHECK(f.counters.grants == 3);
  CHECK(f.counters.denials == 1);
  CHECK(f.counters.open_streams == 3);
  CHECK(f.counters.live_user_actors == 1);
}

TEST_CASE("the limit is per user", "[unit]") {
  shard_fixture f{2};
  f.call(start, 1);
  f.call(start, 1);
  CHECK(f.call(start, 1).outcome == stream_outcome::denied);
  auto other = f.call(start, 2);
  CHECK(other.outcome == stream_outcome::granted);
  CHECK(other.stream_count == 1);
  CHECK(f.counters.live_user_actors == 2);
}

TEST_CASE("ends never take the count below zero", "[unit]") {
  shard_fixture f;
  f.call(start, 5);
  auto r = f.call(end, 5);
  CHECK(r.outcome == stream_outcome::closed);
  CHECK(r.stream_count == 0);
  for (int i = 0; i < 3; ++i) {
    r = f.call(end, 5);
    CHECK(r.outcome == stream_outcome::nothing_to_close);
    CHECK(r.stream_count == 0);
  }
  CHECK(f.counters.open_streams == 0);
}

TEST_CASE("commands queued at once for one user are decided one by one",
          "[unit]") {
  shard_fixture f;
  std::vector<std::shared_ptr<reply_slot>> slots;
  for (int i = 0; i < 48; ++i)
    slots.push_back(f.post(start, 9));
  f.sched.run();
  int granted = 0;
  for (auto& slot : slots) {
    REQUIRE(slot->wait_for(std::chrono::nanoseconds{0}));
    granted += slot->value().outcome == stream_outcome::granted;
  }
  CHECK(granted == 3);
}

TEST_CASE("an idle user actor is passivated and its streams kept", "[unit]") {
  shard_fixture f;
  f.call(start, 7);
  f.call(start, 7);
  f.call(start, 8);
  f.call(end, 8); // user 8 ends with nothing open
  REQUIRE(f.counters.live_user_actors == 2);
  f.idle_for(shard_fixture::passivate_after / 2);
  CHECK(f.counters.live_user_actors == 2); // not idle long enough yet
  f.idle_for(shard_fixture::passivate_after * 2);
  CHECK(f.counters.live_user_actors == 0);
  CHECK(f.counters.passivations == 2);
  CHECK(f.counters.passive_records == 1); // user 8 costs nothing at all
  CHECK(f.counters.open_streams == 2);
  // Re-activation continues from the record.
  auto r = f.call(start, 7);
  CHECK(r.outcome == stream_outcome::granted);
  CHECK(r.stream_count == 3);
  CHECK(f.call(start, 7).outcome == stream_outcome::denied);
  CHECK(f.counters.passive_records == 0);
  CHECK(f.counters.live_user_actors == 1);
  CHECK(f.call(start, 8).stream_count == 1);
}

TEST_CASE("a busy user actor is not passivated", "[unit]") {
  shard_fixture f;
  f.call(start, 3);
  for (int i = 0; i < 12; ++i) {
    f.idle_for(shard_fixture::passivate_after / 2);
    f.call(start, 3);
    f.call(end, 3);
  }
  CHECK(f.counters.passivations == 0);
  CHECK(f.counters.live_user_actors == 1);
}

TEST_CASE("commands that arrive while an actor stops are held and delivered",
          "[unit]") {
  shard_fixture f;
  f.call(start, 11);
  f.call(start, 11);
  // Four ticks of idleness are not enough; the fifth makes the shard send
  // `passivate`. Run only the shard's tick, so that the user actor has not
  // answered yet when the next commands arrive.
  auto step = shard_fixture::passivate_after / 4;
  for (int i = 0; i < 4; ++i) {
    f.clock->advance(step);
    f.sched.advance_time(step);
    f.sched.run();
  }
  f.clock->advance(step);
  f.sched.advance_time(step);
  REQUIRE(f.sched.try_run_once()); // the shard's tick
  REQUIRE(f.sched.has_job());      // the user actor, `passivate` queued
  REQUIRE(f.counters.passivations == 0);
  auto a = f.post(start, 11);
  auto b = f.post(start, 11);
  f.sched.run();
  REQUIRE(a->wait_for(std::chrono::nanoseconds{0}));
  REQUIRE(b->wait_for(std::chrono::nanoseconds{0}));
  CHECK(a->value().outcome == stream_outcome::granted);
  CHECK(a->value().stream_count == 3);
  CHECK(b->value().outcome == stream_outcome::denied);
  CHECK(f.counters.passivations == 1);
  CHECK(f.counters.activations == 2);
  CHECK(f.counters.live_user_actors == 1);
}

TEST_CASE("requests from other actors are answered like local calls",
          "[unit]") {
  shard_fixture f;
  // A blocking scoped_actor cannot wait on the test coordinator; an
  // event-based client collects the replies instead.
  std::vector<user_reply> replies;
  f.sys.spawn([&](caf::event_based_actor* c) {
    for (int i = 0; i < 4; ++i)
      c->request(f.shard, caf::infinite, user_command{start, 77, {}, 0, 0})
        .then([&](const user_reply& r) { replies.push_back(r); });
  });
  f.sched.run();
  REQUIRE(replies.size() == 4);
  CHECK(replies[0].stream_count == 1);
  CHECK(replies[2].stream_count == 3);
  CHECK(replies[3].outcome == stream_outcome::denied);
}

namespace {

/// Stands in for the gate: keeps every command a shard passes to it.
struct redirect_target {
  explicit redirect_target(shard_fixture& f) {
    endpoint = f.sys.spawn([this]() -> user_endpoint::behavior_type {
      return {
        [this](user_command& cmd) -> caf::result<user_reply> {
          commands.push_back(cmd);
          user_reply r;
          r.outcome = stream_outcome::unavailable;
          return r;
        },
        [this](local_call& call) {
          commands.push_back(call.cmd);
          slots.push_back(call.slot);
        },
      };
    });
  }

  std::vector<user_command> commands;
  std::vector<std::shared_ptr<reply_slot>> slots;
  user_endpoint endpoint;
};

} // namespace

TEST_CASE("a shard handed off passivates every user, passes every command "
          "on, and takes its records out of the gauges",
          "[unit]") {
  shard_fixture f;
  f.call(start, 1);
  f.call(start, 1);
  f.call(start, 2);
  REQUIRE(f.counters.live_user_actors == 2);
  REQUIRE(f.counters.open_streams == 3);
  redirect_target gate{f};
  std::optional<std::uint64_t> drained;
  f.sys.spawn([&](caf::event_based_actor* c) {
    c->request(f.shard, caf::infinite, handoff_atom::value, gate.endpoint)
      .then([&](std::uint64_t records) { drained = records; });
  });
  f.sched.run();
  REQUIRE(drained);
  // A command that reaches the shard now is not decided here.
  auto late = f.post(start, 1);
  f.sched.run();
  CHECK(*drained == 2); // users 1 and 2, as records
  CHECK(f.counters.live_user_actors == 0);
  CHECK(f.counters.open_streams == 0);
  CHECK(f.counters.passive_records == 0);
  CHECK_FALSE(late->wait_for(std::chrono::nanoseconds{0}));
  REQUIRE(gate.commands.size() == 1);
  CHECK(gate.commands.front().user == 1);
  // Ticks decide nothing while handed off: no passivation, no expiry.
  f.idle_for(shard_fixture::passivate_after * 2);
  CHECK(f.counters.passivations == 2);
  // Undone: the shard decides again, from the records it kept.
  caf::anon_send(f.shard, resume_atom::value);
  f.sched.run();
  CHECK(f.counters.open_streams == 3);
  CHECK(f.counters.passive_records == 2);
  auto r = f.call(start, 1);
  CHECK(r.outcome == stream_outcome::granted);
  CHECK(r.stream_count == 3);
  caf::anon_send_exit(gate.endpoint, caf::exit_reason::user_shutdown);
}

TEST_CASE("a shard that ends takes what it held out of the gauges",
          "[unit]") {
  shard_fixture f;
  f.call(start, 5);
  f.call(start, 6);
  f.idle_for(shard_fixture::passivate_after * 2); // both passivated
  REQUIRE(f.counters.passive_records == 2);
  REQUIRE(f.counters.open_streams == 2);
  caf::anon_send_exit(f.shard, caf::exit_reason::user_shutdown);
  f.sched.run();
  CHECK(f.counters.passive_records == 0);
  CHECK(f.counters.open_streams == 0);
}

TEST_CASE("past its shard's decision deadline a user actor decides nothing",
          "[unit]") {
  shard_fixture f;
  auto deadlines = std::make_shared<shard_deadlines>(32);
  f.restart_with_deadlines(deadlines);
  deadlines->set(17, f.clock->now().mono_ns + 1'000'000'000);
  CHECK(f.call(start, 9).outcome == stream_outcome::granted);
  f.clock->advance(std::chrono::seconds{1});
  auto refused = f.call(start, 9);
  CHECK(refused.outcome == stream_outcome::unavailable);
  CHECK(refused.stream_count == 1);
  CHECK(f.call(end, 9).outcome == stream_outcome::unavailable);
  CHECK(f.counters.lease_refusals == 2);
  CHECK(f.counters.open_streams == 1);
  // A deadline set for another tenure of the shard (a later epoch) is not
  // this actor's: it still decides nothing.
  deadlines->set(17, shard_deadlines::forever, 4);
  CHECK(f.call(end, 9).outcome == stream_outcome::unavailable);
  // Renewed for its own tenure (epoch 0 here): it decides again.
  deadlines->set(17, shard_deadlines::forever);
  CHECK(f.call(end, 9).outcome == stream_outcome::closed);
}

TEST_CASE("a hand-off undone before it drained is answered with an error",
          "[unit]") {
  // A user whose grant waits for its commit cannot be passivated yet, so
  // the hand-off is still waiting for it when it is undone.
  shard_fixture f{3, 0, true, true};
  f.answer = videostreams::testing::commit_answer::never;
  auto grant = f.post(start, 3);
  f.sched.run();
  REQUIRE(f.hung.size() == 1);
  redirect_target gate{f};
  std::optional<std::uint64_t> drained;
  bool refused = false;
  f.sys.spawn([&](caf::event_based_actor* c) {
    c->request(f.shard, caf::infinite, handoff_atom::value, gate.endpoint)
      .then([&](std::uint64_t records) { drained = records; },
            [&](caf::error&) { refused = true; });
  });
  f.sched.run();
  REQUIRE_FALSE(drained);
  REQUIRE_FALSE(refused);
  // Whoever waits for the hand-off must hear that it will not complete.
  caf::anon_send(f.shard, resume_atom::value);
  f.sched.run();
  CHECK(refused);
  CHECK_FALSE(drained);
  f.settle_hung(true);
  REQUIRE(grant->wait_for(std::chrono::nanoseconds{0}));
  CHECK(grant->value().outcome == stream_outcome::granted);
  caf::anon_send_exit(gate.endpoint, caf::exit_reason::user_shutdown);
}
