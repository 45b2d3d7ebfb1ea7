#include <catch2/catch.hpp>

#include "caf/event_based_actor.hpp"

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
