#include "actors/user_streams.hpp"

#include <catch2/catch.hpp>

using namespace videostreams;

namespace {

constexpr std::int64_t second = 1'000'000'000;

clock_reading at(std::int64_t seconds) {
  return clock_reading{seconds * second, 1'700'000'000'000 + seconds * 1000,
                       1'700'000'000'000'000'000};
}

} // namespace

TEST_CASE("starts are granted up to the limit, then denied", "[unit]") {
  user_streams s;
  CHECK(s.start_legacy(3, 0, at(1), "~1") == stream_outcome::granted);
  CHECK(s.start_legacy(3, 0, at(2), "~2") == stream_outcome::granted);
  CHECK(s.start_legacy(3, 0, at(3), "~3") == stream_outcome::granted);
  CHECK(s.count() == 3);
  CHECK(s.start_legacy(3, 0, at(4), "~4") == stream_outcome::denied);
  CHECK(s.count() == 3);
  CHECK(s.start_legacy(4, 0, at(5), "~5") == stream_outcome::granted);
  CHECK(s.count() == 4);
}

TEST_CASE("a limit of zero grants nothing", "[unit]") {
  user_streams s;
  CHECK(s.start_legacy(0, 0, at(1), "~6") == stream_outcome::denied);
  CHECK(s.open("a", 60, 0, at(1)) == stream_outcome::denied);
  CHECK(s.empty());
}

TEST_CASE("ends close the oldest stream without an id, never below zero",
          "[unit]") {
  user_streams s;
  s.start_legacy(3, 0, at(100), "~7");
  s.open("tv", 60, 3, at(150));
  s.start_legacy(3, 0, at(200), "~8");
  CHECK(s.end_legacy(at(201)) == stream_outcome::closed);
  REQUIRE(s.count() == 2);
  CHECK(s.sessions()[0].id == "tv");
  CHECK(s.sessions()[1].started_at_ms == at(200).wall_ms);
  CHECK(s.end_legacy(at(202)) == stream_outcome::closed);
  // Only the v2 session is left, and endstream never closes it.
  CHECK(s.end_legacy(at(203)) == stream_outcome::nothing_to_close);
  CHECK(s.count() == 1);
  CHECK(s.close("tv", at(204)) == stream_outcome::closed);
  CHECK(s.end_legacy(at(205)) == stream_outcome::nothing_to_close);
  CHECK(s.count() == 0);
  // What is left: "tv" ended by a close (its heartbeat is told so for one
  // TTL), and nothing once that is over.
  CHECK(s.ended().size() == 1);
  s.expire(at(204 + 60).mono_ns);
  CHECK(s.empty());
}

TEST_CASE("open grants a lease, the same id again renews it", "[unit]") {
  user_streams s;
  CHECK(s.open("a", 30, 3, at(0)) == stream_outcome::granted);
  CHECK(s.find("a")->expires_at_ns == 30 * second);
  CHECK(s.open("a", 0, 3, at(10)) == stream_outcome::renewed);
  CHECK(s.count() == 1);
  CHECK(s.find("a")->expires_at_ns == 40 * second); // its own TTL
  CHECK(s.open("a", 100, 3, at(20)) == stream_outcome::renewed);
  CHECK(s.find("a")->ttl_seconds == 100); // a given TTL replaces it
  CHECK(s.find("a")->expires_at_ns == 120 * second);
  CHECK(s.find("a")->started_at_ms == at(0).wall_ms);
}

TEST_CASE("an open session is renewed even at the limit", "[unit]") {
  user_streams s;
  s.open("a", 60, 2, at(0));
  s.open("b", 60, 2, at(0));
  CHECK(s.open("c", 60, 2, at(1)) == stream_outcome::denied);
  CHECK(s.open("b", 60, 2, at(1)) == stream_outcome::renewed);
  CHECK(s.count() == 2);
}

TEST_CASE("heartbeats renew by the session's own TTL", "[unit]") {
  user_streams s;
  s.open("a", 20, 3, at(0));
  CHECK(s.heartbeat("a", at(15)) == stream_outcome::renewed);
  CHECK(s.find("a")->expires_at_ns == 35 * second);
  CHECK(s.heartbeat("nope", at(16)) == stream_outcome::not_found);
  CHECK(s.heartbeat("", at(16)) == stream_outcome::not_found);
}

TEST_CASE("an unrenewed lease expires at its deadline", "[unit]") {
  user_streams s;
  s.open("a", 10, 1, at(0));
  CHECK(s.next_expiry() == 10 * second);
  // Until the deadline it counts, and the user is at the limit.
  CHECK(s.open("b", 10, 1, at(9)) == stream_outcome::denied);
  // At the deadline it is gone: the heartbeat is too late, the slot free.
  CHECK(s.heartbeat("a", at(10)) == stream_outcome::not_found);
  CHECK(s.count() == 0);
  CHECK(s.open("b", 10, 1, at(10)) == stream_outcome::granted);
}

TEST_CASE("expire removes only expired leases and reports them", "[unit]") {
  user_streams s;
  s.open("short", 5, 5, at(0));
  s.open("long", 50, 5, at(0));
  s.start_legacy(5, 0, at(0), "~9");  // never expires
  s.start_legacy(5, 20, at(0), "~10"); // legacy TTL
  CHECK(s.expire(4 * second) == 0);
  CHECK(s.expire(5 * second) == 1);
  CHECK(s.next_expiry() == 20 * second);
  CHECK(s.expire(100 * second) == 2);
  REQUIRE(s.count() == 1);
  CHECK(s.sessions()[0].is_legacy());
  CHECK(s.next_expiry() == 0);
}

TEST_CASE("a user's own limit overrides the default until cleared",
          "[unit]") {
  user_streams s;
  CHECK(s.limit(3) == 3);
  CHECK(s.set_limit(1) == stream_outcome::limit_set);
  CHECK_FALSE(s.empty()); // the record must survive passivation
  CHECK(s.limit(3) == 1);
  CHECK(s.start_legacy(s.limit(3), 0, at(0), "~11") == stream_outcome::granted);
  CHECK(s.start_legacy(s.limit(3), 0, at(0), "~12") == stream_outcome::denied);
  // Lowering the limit closes nothing.
  s.set_limit(0);
  CHECK(s.count() == 1);
  s.set_limit(std::nullopt);
  CHECK(s.limit(3) == 3);
  CHECK(s.own_limit() == std::nullopt);
}

TEST_CASE("streams opened by startstream cannot be named by a session id",
          "[unit]") {
  user_streams s;
  s.start_legacy(3, 0, at(0), "~abc");
  CHECK(s.sessions()[0].is_legacy());
  CHECK(s.find("~abc") == nullptr);
  CHECK(s.heartbeat("~abc", at(1)) == stream_outcome::not_found);
  CHECK(s.close("~abc", at(1)) == stream_outcome::not_found);
  CHECK(s.count() == 1);
}

TEST_CASE("endstream tells a known user from an unknown one", "[unit]") {
  user_streams s;
  CHECK_FALSE(s.known(at(1).mono_ns));
  CHECK(s.end_legacy(at(1)) == stream_outcome::unknown_user);
  s.start_legacy(3, 0, at(2), "~a");
  CHECK(s.known(at(2).mono_ns));
  CHECK(s.end_legacy(at(3)) == stream_outcome::closed);
  CHECK(s.last_end_ns() == at(3).mono_ns);
  // Known for an hour after the last close, then no more.
  CHECK(s.end_legacy(at(3 + 3599)) == stream_outcome::nothing_to_close);
  CHECK(s.end_legacy(at(3 + 3600)) == stream_outcome::unknown_user);
  // An expiry counts as an end too.
  s.open("tv", 10, 3, at(5000));
  CHECK(s.expire(at(5010).mono_ns) == 1);
  CHECK(s.last_end_ns() == at(5010).mono_ns);
  CHECK(s.end_legacy(at(5011)) == stream_outcome::nothing_to_close);
  // An own limit makes a user known for good.
  user_streams limited;
  limited.set_limit(2);
  CHECK(limited.end_legacy(at(1)) == stream_outcome::nothing_to_close);
}

TEST_CASE("a closed session is remembered as ended for one TTL, at most "
          "max_ended_sessions of them",
          "[unit]") {
  user_streams s;
  s.open("a", 30, 3, at(0));
  CHECK(s.close("a", at(10)) == stream_outcome::closed);
  CHECK(s.heartbeat("a", at(11)) == stream_outcome::ended_elsewhere);
  CHECK_FALSE(s.empty()); // the ended session is state to keep
  CHECK(s.next_cleanup() == at(40).mono_ns);
  CHECK(s.heartbeat("a", at(40)) == stream_outcome::not_found);
  CHECK(s.empty());
  // A loop of opens and deletes keeps a bounded number.
  for (int i = 0; i < 100; ++i) {
    auto id = "s" + std::to_string(i);
    s.open(id, 60, 3, at(100 + i));
    s.close(id, at(100 + i));
  }
  CHECK(s.ended().size() == max_ended_sessions);
  // The newest are kept.
  CHECK(s.heartbeat("s99", at(200)) == stream_outcome::ended_elsewhere);
  CHECK(s.heartbeat("s0", at(200)) == stream_outcome::not_found);
}

TEST_CASE("a replace never takes the count over the limit", "[unit]") {
  user_streams s;
  s.open("a", 60, 2, at(0));
  s.open("b", 60, 2, at(0));
  bool replaced = false;
  CHECK(s.open("c", 60, 2, at(1), "a", &replaced) == stream_outcome::granted);
  CHECK(replaced);
  CHECK(s.count() == 2);
  CHECK(s.find("a") == nullptr);
  CHECK(s.heartbeat("a", at(2)) == stream_outcome::ended_elsewhere);
  // A replace that names itself or nothing open is a plain open.
  CHECK(s.open("d", 60, 2, at(3), "zz", &replaced) == stream_outcome::denied);
  CHECK_FALSE(replaced);
  CHECK(s.open("c", 60, 2, at(3), "c", &replaced) == stream_outcome::renewed);
  CHECK_FALSE(replaced);
  CHECK(s.count() == 2);
  // Reopening an ended id forgets that it ended.
  CHECK(s.open("a", 60, 2, at(4), "b", &replaced) == stream_outcome::granted);
  CHECK(s.heartbeat("a", at(5)) == stream_outcome::renewed);
  CHECK(s.heartbeat("b", at(5)) == stream_outcome::ended_elsewhere);
}

TEST_CASE("at the cap of ended sessions, the one whose time ends first is "
          "forgotten",
          "[unit]") {
  user_streams s;
  s.open("long", 3600, 3, at(0));
  CHECK(s.close("long", at(0)) == stream_outcome::closed);
  for (int i = 1; i <= 16; ++i) {
    auto id = "s" + std::to_string(i);
    s.open(id, 60, 3, at(i));
    CHECK(s.close(id, at(i)) == stream_outcome::closed);
  }
  CHECK(s.ended().size() == max_ended_sessions);
  // "long" was closed first but ends last: "s1" ends soonest, so it goes.
  CHECK(s.heartbeat("long", at(30)) == stream_outcome::ended_elsewhere);
  CHECK(s.heartbeat("s1", at(30)) == stream_outcome::not_found);
  CHECK(s.heartbeat("s2", at(30)) == stream_outcome::ended_elsewhere);
}

TEST_CASE("reopening an ended id forgets that it ended, so its later expiry "
          "is not found",
          "[unit]") {
  user_streams s;
  CHECK(s.open("a", 60, 3, at(0)) == stream_outcome::granted);
  CHECK(s.close("a", at(1)) == stream_outcome::closed);
  CHECK(s.open("a", 5, 3, at(2)) == stream_outcome::granted);
  // The new lease ends at 7, long before the old 410 record would (61).
  CHECK(s.heartbeat("a", at(8)) == stream_outcome::not_found);
  CHECK(s.ended().empty());
}
