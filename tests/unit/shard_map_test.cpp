#include "actors/shard_map.hpp"

#include <catch2/catch.hpp>

#include <vector>

using namespace videostreams;

TEST_CASE("mix64 is the SplitMix64 finalizer, frozen forever", "[unit]") {
  // Shard numbers are shared by nodes and persisted: these values must never
  // change. They were computed from the published SplitMix64 constants.
  STATIC_REQUIRE(mix64(0) == 0);
  CHECK(mix64(1) == 0x5692161d100b05e5ULL);
  CHECK(mix64(7) == 0x12ae30237b17df14ULL);
  CHECK(mix64(9223372036854775807ULL) == 0x5a682afe7965debdULL);
  CHECK(shard_of(7, 128) == 20);
  CHECK(shard_of(9223372036854775807ULL, 128) == 61);
}

TEST_CASE("users spread evenly over shards", "[unit]") {
  constexpr std::uint32_t shards = 128;
  constexpr std::uint64_t users = 128 * 1000;
  std::vector<int> load(shards);
  for (std::uint64_t u = 0; u < users; ++u)
    ++load[shard_of(u, shards)];
  for (auto n : load) {
    CHECK(n > 850); // expected 1000 each; sequential ids must not cluster
    CHECK(n < 1150);
  }
}
