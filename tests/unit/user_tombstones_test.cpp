// The shard's known-user tombstones: what they remember, when they forget,
// and what each costs.

#include <catch2/catch.hpp>

#include "actors/user_streams.hpp"
#include "actors/user_tombstones.hpp"

using namespace videostreams;

TEST_CASE("tombstones remember a user's last end until swept", "[unit]") {
  user_tombstones t;
  t.put(7, 100);
  t.put(8, 200);
  t.put(7, 150); // a later end replaces the earlier one
  CHECK(t.size() == 2);
  CHECK(t.sweep(100 + 49, 50) == 0);
  CHECK(t.sweep(150 + 50, 50) == 1); // user 7's is 50 old
  CHECK_FALSE(t.take(7).has_value());
  CHECK(t.take(8) == 200);
  CHECK(t.size() == 0);
}

TEST_CASE("a known-user tombstone costs a few dozen bytes", "[unit]") {
  // As many as a busy shard might hold for an hour: 128 shards and a
  // million users who closed a stream in the last hour is ~8,000 a shard.
  constexpr std::uint64_t n = 100'000;
  user_tombstones t;
  for (std::uint64_t user = 0; user < n; ++user)
    t.put(user * 2654435761u, static_cast<std::int64_t>(user));
  auto bytes_per_tombstone = static_cast<double>(t.bytes()) / n;
  CAPTURE(t.bytes());
  // An id, a time, the hash node and its bucket (measured: about 40).
  CHECK(bytes_per_tombstone >= 24);
  CHECK(bytes_per_tombstone <= 64);
  CHECK(t.sweep(static_cast<std::int64_t>(n) + known_user_memory_ns,
                known_user_memory_ns)
        == n);
  CHECK(t.size() == 0);
}
