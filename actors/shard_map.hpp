#pragma once

#include <cstdint>

namespace videostreams {

/// The documented, stable 64-bit mixing function that spreads user ids over
/// shards: the finalizer of SplitMix64 (Steele, Lea, Flood, 2014). It must
/// never change, because shard numbers are persisted and shared by nodes.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/// The shard of `user` among `shard_count` shards: `mix64(user) % shard_count`.
constexpr std::uint32_t shard_of(std::uint64_t user,
                                 std::uint32_t shard_count) noexcept {
  return static_cast<std::uint32_t>(mix64(user) % shard_count);
}

} // namespace videostreams
