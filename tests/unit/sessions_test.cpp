// v2 sessions through a shard and its user actors: leases, renewals,
// expiry with and without live actors, per-user limits. Time is injected:
// the manual clock and CAF's test clock move together, nothing sleeps.

#include <catch2/catch.hpp>

#include "actor_fixture.hpp"

using namespace videostreams;
using videostreams::testing::shard_fixture;
using namespace std::chrono_literals;

namespace {

user_command open(std::uint64_t user, std::string id, std::uint32_t ttl = 0) {
  return {user_op::open_session, user, std::move(id), ttl, 0};
}

user_command op(user_op o, std::uint64_t user, std::string id = {}) {
  return {o, user, std::move(id), 0, 0};
}

user_command set_limit(std::uint64_t user, std::uint32_t limit) {
  return {user_op::set_limit, user, {}, 0, limit};
}

} // namespace

TEST_CASE("sessions are granted with a lease, renewed when opened again",
          "[unit]") {
  shard_fixture f;
  auto r = f.call(open(1, "a", 30));
  CHECK(r.outcome == stream_outcome::granted);
  CHECK(r.stream_count == 1);
  CHECK(r.session.id == "a");
  auto start = f.clock->now();
  CHECK(r.session.expires_at_ms == start.wall_ms + 30'000);
  f.idle_for(500ms);
  auto again = f.call(open(1, "a"));
  CHECK(again.outcome == stream_outcome::renewed);
  CHECK(again.stream_count == 1);
  CHECK(again.session.expires_at_ms == r.session.expires_at_ms + 500);
  CHECK(f.counters.grants == 1);
  CHECK(f.counters.open_streams == 1);
}

TEST_CASE("a session without ttlSeconds gets the default lease", "[unit]") {
  shard_fixture f;
  auto r = f.call(open(1, "a"));
  CHECK(r.session.expires_at_ms == f.clock->now().wall_ms + 60'000);
}

TEST_CASE("at the limit the open sessions are listed", "[unit]") {
  shard_fixture f{2};
  f.call(open(3, "a"));
  f.call(op(user_op::start_legacy, 3));
  auto r = f.call(open(3, "c"));
  CHECK(r.outcome == stream_outcome::denied);
  CHECK(r.stream_count == 2);
  CHECK(r.max_streams == 2);
  REQUIRE(r.sessions.size() == 2);
  CHECK(r.sessions[0].id == "a");
  CHECK(r.sessions[1].id.empty());
  CHECK(r.sessions[1].expires_at_ms == 0); // a legacy stream never expires
  CHECK(f.counters.denials == 1);
}

TEST_CASE("heartbeat, close and list", "[unit]") {
  shard_fixture f;
  f.call(open(4, "a", 10));
  f.call(open(4, "b", 10));
  f.idle_for(5s);
  auto hb = f.call(op(user_op::heartbeat, 4, "a"));
  CHECK(hb.outcome == stream_outcome::renewed);
  CHECK(hb.session.expires_at_ms == f.clock->now().wall_ms + 10'000);
  CHECK(f.call(op(user_op::heartbeat, 4, "zz")).outcome
        == stream_outcome::not_found);
  auto list = f.call(op(user_op::list_sessions, 4));
  CHECK(list.outcome == stream_outcome::listed);
  REQUIRE(list.sessions.size() == 2);
  auto closed = f.call(op(user_op::close_session, 4, "a"));
  CHECK(closed.outcome == stream_outcome::closed);
  CHECK(closed.stream_count == 1);
  CHECK(f.call(op(user_op::close_session, 4, "a")).outcome
        == stream_outcome::not_found);
  CHECK(f.counters.open_streams == 1);
}

TEST_CASE("a lease not renewed expires without any request (live actor)",
          "[unit]") {
  shard_fixture f;
  f.call(open(5, "a", 5));
  f.call(open(5, "b", 60));
  f.idle_for(750ms); // both count, the actor is still live
  REQUIRE(f.counters.open_streams == 2);
  f.idle_for(4500ms); // past a's deadline, with no request in between
  CHECK(f.counters.open_streams == 1);
  CHECK(f.counters.expirations == 1);
  auto r = f.call(op(user_op::heartbeat, 5, "a"));
  CHECK(r.outcome == stream_outcome::not_found);
  CHECK(r.stream_count == 1);
}

TEST_CASE("a passivated user's leases expire in the shard's record",
          "[unit]") {
  shard_fixture f;
  f.call(open(6, "a", 10));
  f.call(open(6, "b", 20));
  f.idle_for(2s);
  REQUIRE(f.counters.live_user_actors == 0);
  REQUIRE(f.counters.passive_records == 1);
  f.idle_for(9s); // a's deadline passed 11 s after opening
  CHECK(f.counters.open_streams == 1);
  CHECK(f.counters.passive_records == 1);
  CHECK(f.counters.live_user_actors == 0); // swept without an actor
  f.idle_for(10s);
  CHECK(f.counters.open_streams == 0);
  CHECK(f.counters.passive_records == 0); // nothing left to keep
  CHECK(f.counters.expirations == 2);
  CHECK(f.call(op(user_op::list_sessions, 6)).sessions.empty());
}

TEST_CASE("a renewed lease survives past its first deadline", "[unit]") {
  shard_fixture f;
  f.call(open(7, "a", 5));
  for (int i = 0; i < 6; ++i) {
    f.idle_for(4s);
    CHECK(f.call(op(user_op::heartbeat, 7, "a")).outcome
          == stream_outcome::renewed);
  }
  CHECK(f.counters.expirations == 0);
  CHECK(f.counters.open_streams == 1);
}

TEST_CASE("legacy streams expire with --legacy-stream-ttl", "[unit]") {
  shard_fixture f{3, 30};
  auto r = f.call(op(user_op::start_legacy, 8));
  CHECK(r.outcome == stream_outcome::granted);
  auto list = f.call(op(user_op::list_sessions, 8));
  REQUIRE(list.sessions.size() == 1);
  CHECK(list.sessions[0].expires_at_ms == f.clock->now().wall_ms + 30'000);
  f.idle_for(31s);
  CHECK(f.counters.open_streams == 0);
  CHECK(f.call(op(user_op::end_legacy, 8)).outcome
        == stream_outcome::nothing_to_close);
}

TEST_CASE("a user's own limit applies and survives passivation", "[unit]") {
  shard_fixture f;
  CHECK(f.call(set_limit(9, 1)).max_streams == 1);
  f.idle_for(3s);
  REQUIRE(f.counters.live_user_actors == 0);
  CHECK(f.counters.passive_records == 1); // the limit alone is kept
  CHECK(f.call(open(9, "a")).outcome == stream_outcome::granted);
  auto denied = f.call(open(9, "b"));
  CHECK(denied.outcome == stream_outcome::denied);
  CHECK(denied.max_streams == 1);
  CHECK(f.call(op(user_op::start_legacy, 10)).max_streams == 3); // others
  auto cleared = f.call(op(user_op::clear_limit, 9));
  CHECK(cleared.max_streams == 3);
  CHECK(f.call(open(9, "b")).outcome == stream_outcome::granted);
}

TEST_CASE("many simultaneous opens for one user never exceed the limit",
          "[unit]") {
  shard_fixture f;
  std::vector<std::shared_ptr<reply_slot>> slots;
  for (int i = 0; i < 48; ++i)
    slots.push_back(f.post(open(11, "s" + std::to_string(i % 6))));
  for (int i = 0; i < 48; ++i)
    slots.push_back(f.post(op(user_op::start_legacy, 11)));
  f.sched.run();
  int granted = 0;
  for (auto& slot : slots) {
    REQUIRE(slot->wait_for(0ns));
    granted += slot->value().outcome == stream_outcome::granted;
    CHECK(slot->value().stream_count <= 3);
  }
  CHECK(granted == 3);
  CHECK(f.counters.open_streams == 3);
}
