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

TEST_CASE("a live actor is woken by its earliest lease deadline, also "
          "after an earlier wake",
          "[unit]") {
  shard_fixture f;
  // A shard that keeps idle actors live for a minute: every expiry below
  // is the live actor's own wake-up, not a sweep of a passivated record.
  caf::anon_send_exit(f.shard, caf::exit_reason::user_shutdown);
  f.sched.run();
  f.settings.passivate_after = std::chrono::minutes{1};
  f.shard = spawn_shard_actor(f.sys, f.settings);
  f.sched.run();
  auto idle_for = [&f](std::chrono::milliseconds d) {
    auto step = std::chrono::milliseconds{250};
    for (auto t = std::chrono::milliseconds{0}; t < d; t += step) {
      f.clock->advance(step);
      f.sched.advance_time(step);
      f.sched.run();
    }
  };
  // A later lease first, then an earlier one: the wake-up moves earlier.
  f.call(open(40, "long", 600));
  f.call(open(40, "short", 5));
  idle_for(6s);
  REQUIRE(f.counters.live_user_actors == 1);
  CHECK(f.counters.open_streams == 1);
  CHECK(f.counters.expirations == 1);
  // One lease after another: the actor woken once is woken again.
  f.call(open(41, "a", 5));
  idle_for(6s);
  REQUIRE(f.counters.live_user_actors == 2);
  CHECK(f.counters.open_streams == 1);
  CHECK(f.counters.expirations == 2);
  f.call(open(41, "b", 5));
  idle_for(6s);
  REQUIRE(f.counters.live_user_actors == 2);
  CHECK(f.counters.open_streams == 1);
  CHECK(f.counters.expirations == 3);
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

namespace {

user_command replacing(std::uint64_t user, std::string id,
                       std::string replace) {
  user_command cmd{user_op::open_session, user, std::move(id), 0, 0};
  cmd.replace_session_id = std::move(replace);
  return cmd;
}

} // namespace

TEST_CASE("a session closed by DELETE answers its heartbeat ended_elsewhere "
          "for one TTL, passivated or not",
          "[unit]") {
  shard_fixture f;
  f.call(open(30, "tv", 20));
  f.call(open(30, "phone", 60));
  CHECK(f.call(op(user_op::close_session, 30, "tv")).outcome
        == stream_outcome::closed);
  CHECK(f.call(op(user_op::heartbeat, 30, "tv")).outcome
        == stream_outcome::ended_elsewhere);
  f.idle_for(3s); // the actor passivates; its record keeps the tombstone
  REQUIRE(f.counters.live_user_actors == 0);
  CHECK(f.call(op(user_op::heartbeat, 30, "tv")).outcome
        == stream_outcome::ended_elsewhere);
  f.idle_for(18s); // past one TTL (20 s) since the close
  CHECK(f.call(op(user_op::heartbeat, 30, "tv")).outcome
        == stream_outcome::not_found);
  // Opening the id again makes it an open session like any other.
  f.call(op(user_op::close_session, 30, "phone"));
  CHECK(f.call(open(30, "phone")).outcome == stream_outcome::granted);
  CHECK(f.call(op(user_op::heartbeat, 30, "phone")).outcome
        == stream_outcome::renewed);
}

TEST_CASE("a record holding only ended sessions is dropped once their TTL "
          "is over",
          "[unit]") {
  shard_fixture f;
  f.call(open(31, "a", 10));
  f.call(op(user_op::close_session, 31, "a"));
  f.idle_for(3s);
  REQUIRE(f.counters.live_user_actors == 0);
  CHECK(f.counters.passive_records == 1); // the ended session
  f.idle_for(9s);
  CHECK(f.counters.passive_records == 0); // swept by the shard, no request
  CHECK(f.counters.live_user_actors == 0);
  // The user is still known to the original API (a stream closed within
  // the hour), from the shard's compact tombstone.
  CHECK(f.call(op(user_op::end_legacy, 31)).outcome
        == stream_outcome::nothing_to_close);
}

TEST_CASE("a user is known to endstream for an hour after its last stream "
          "ended, across passivation",
          "[unit]") {
  shard_fixture f{3, 30};
  CHECK(f.call(op(user_op::end_legacy, 32)).outcome
        == stream_outcome::unknown_user);
  f.call(op(user_op::start_legacy, 32));
  f.call(op(user_op::start_legacy, 33));
  f.call(op(user_op::end_legacy, 32));
  f.idle_for(3s); // both passivate: 32 as a tombstone, 33 as a record
  REQUIRE(f.counters.live_user_actors == 0);
  CHECK(f.counters.passive_records == 1);
  CHECK(f.call(op(user_op::end_legacy, 32)).outcome
        == stream_outcome::nothing_to_close);
  f.idle_for(40s); // 33's stream expires (legacy TTL 30 s) in its record
  CHECK(f.counters.passive_records == 0);
  CHECK(f.call(op(user_op::end_legacy, 33)).outcome
        == stream_outcome::nothing_to_close);
  // An hour after the ends, neither is known any more. (Steps of a minute:
  // the shard sweeps its tombstones once a minute.)
  auto minutes = [&f](int n) {
    for (int i = 0; i < n; ++i) {
      f.clock->advance(std::chrono::minutes{1});
      f.sched.advance_time(std::chrono::minutes{1});
      f.sched.run();
    }
  };
  // Several sweeps later, well within the hour, both are still known: a
  // sweep forgets only the tombstones whose hour is over. (Both passivate
  // first, so that the sweeps find both as tombstones; a user actor
  // passivates a few ticks after its last call, and in steps of a minute
  // that would be after the sweeps.)
  f.idle_for(3s);
  REQUIRE(f.counters.live_user_actors == 0);
  minutes(5);
  CHECK(f.call(op(user_op::end_legacy, 32)).outcome
        == stream_outcome::nothing_to_close);
  CHECK(f.call(op(user_op::end_legacy, 33)).outcome
        == stream_outcome::nothing_to_close);
  f.idle_for(3s);
  REQUIRE(f.counters.live_user_actors == 0);
  minutes(56);
  CHECK(f.call(op(user_op::end_legacy, 32)).outcome
        == stream_outcome::unknown_user);
  CHECK(f.call(op(user_op::end_legacy, 33)).outcome
        == stream_outcome::unknown_user);
}

TEST_CASE("an own limit makes a user known, a list does not", "[unit]") {
  shard_fixture f;
  f.call(set_limit(34, 2));
  CHECK(f.call(op(user_op::end_legacy, 34)).outcome
        == stream_outcome::nothing_to_close);
  f.call(op(user_op::list_sessions, 35));
  f.idle_for(3s);
  CHECK(f.call(op(user_op::end_legacy, 35)).outcome
        == stream_outcome::unknown_user);
}

TEST_CASE("replaceSessionId ends that session and opens the new one in one "
          "decision",
          "[unit]") {
  shard_fixture f{2};
  f.call(open(36, "a"));
  f.call(open(36, "b"));
  CHECK(f.call(open(36, "c")).outcome == stream_outcome::denied);
  auto r = f.call(replacing(36, "c", "a"));
  CHECK(r.outcome == stream_outcome::granted);
  CHECK(r.replaced);
  CHECK(r.stream_count == 2);
  CHECK(f.counters.open_streams == 2);
  CHECK(f.counters.grants == 3);
  CHECK(f.call(op(user_op::heartbeat, 36, "a")).outcome
        == stream_outcome::ended_elsewhere);
  // Naming no open session: a plain open, denied at the limit, nothing
  // closed.
  auto plain = f.call(replacing(36, "d", "a"));
  CHECK(plain.outcome == stream_outcome::denied);
  CHECK_FALSE(plain.replaced);
  CHECK(plain.stream_count == 2);
  // Renewing an open session while replacing another ends the other.
  auto renewed = f.call(replacing(36, "c", "b"));
  CHECK(renewed.outcome == stream_outcome::renewed);
  CHECK(renewed.replaced);
  CHECK(renewed.stream_count == 1);
  CHECK(f.counters.open_streams == 1);
}

TEST_CASE("a replace below a lowered limit is denied and closes nothing",
          "[unit]") {
  shard_fixture f;
  f.call(open(37, "a"));
  f.call(open(37, "b"));
  f.call(open(37, "c"));
  f.call(set_limit(37, 1)); // now 3 open, limit 1
  auto r = f.call(replacing(37, "d", "a"));
  CHECK(r.outcome == stream_outcome::denied);
  CHECK_FALSE(r.replaced);
  CHECK(r.stream_count == 3);
  CHECK(f.call(op(user_op::heartbeat, 37, "a")).outcome
        == stream_outcome::renewed);
}

TEST_CASE("a replace is persisted as the close and the grant, in that order",
          "[unit]") {
  shard_fixture f{1, 0, true, true};
  f.call(open(38, "a", 30));
  f.changes.clear();
  auto r = f.call(replacing(38, "b", "a"));
  CHECK(r.outcome == stream_outcome::granted);
  REQUIRE(f.changes.size() == 2);
  CHECK(f.changes[0].kind == change_kind::close);
  CHECK(f.changes[0].key == "a");
  CHECK(f.changes[1].kind == change_kind::grant);
  CHECK(f.changes[1].key == "b");
}
