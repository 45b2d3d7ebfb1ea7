#include "actors/user_streams.hpp"

#include <catch2/catch.hpp>

using namespace videostreams;

TEST_CASE("starts are granted up to the limit, then denied", "[unit]") {
  user_streams s;
  CHECK(s.start_legacy(3, 1) == stream_outcome::granted);
  CHECK(s.start_legacy(3, 2) == stream_outcome::granted);
  CHECK(s.start_legacy(3, 3) == stream_outcome::granted);
  CHECK(s.count() == 3);
  CHECK(s.start_legacy(3, 4) == stream_outcome::denied);
  CHECK(s.count() == 3);
  CHECK(s.start_legacy(4, 5) == stream_outcome::granted); // limit is an input
  CHECK(s.count() == 4);
}

TEST_CASE("a limit of zero grants nothing", "[unit]") {
  user_streams s;
  CHECK(s.start_legacy(0, 1) == stream_outcome::denied);
  CHECK(s.empty());
}

TEST_CASE("ends close the oldest stream and never go below zero", "[unit]") {
  user_streams s;
  s.start_legacy(3, 100);
  s.start_legacy(3, 200);
  CHECK(s.end_legacy() == stream_outcome::closed);
  REQUIRE(s.count() == 1);
  CHECK(s.sessions().front().started_at_ms == 200);
  CHECK(s.end_legacy() == stream_outcome::closed);
  CHECK(s.end_legacy() == stream_outcome::nothing_to_close);
  CHECK(s.end_legacy() == stream_outcome::nothing_to_close);
  CHECK(s.count() == 0);
  CHECK(s.empty());
}
