#pragma once

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <optional>
#include <unordered_map>

namespace videostreams {

/// Counts the bytes it hands out (from the default resource), so that a
/// structure built on it can say what it costs.
class counting_resource final : public std::pmr::memory_resource {
public:
  /// Bytes allocated and not yet freed.
  std::size_t bytes() const noexcept {
    return bytes_;
  }

private:
  void* do_allocate(std::size_t n, std::size_t align) override {
    auto* p = std::pmr::new_delete_resource()->allocate(n, align);
    bytes_ += n;
    return p;
  }

  void do_deallocate(void* p, std::size_t n, std::size_t align) override {
    std::pmr::new_delete_resource()->deallocate(p, n, align);
    bytes_ -= n;
  }

  bool do_is_equal(const memory_resource& other) const noexcept override {
    return this == &other;
  }

  std::size_t bytes_ = 0;
};

/// What a shard remembers of users it holds nothing else for: when their
/// last stream closed or expired (monotonic ns), so that the original API
/// still knows them for `known_user_memory_ns` (docs/api.md, "The original
/// API") after their actor and record are gone. A user id and a time, in a
/// memory pool of their own; a restart or a hand-off of the shard forgets them.
///
/// Bounded: an entry exists only for a user whose stream ended within the
/// hour (plus at most one sweep period), so the table holds at most the
/// users that closed a stream in the last hour, at the figure `bytes()`
/// shows (about 40 bytes each, measured by the unit test).
class user_tombstones {
public:
  user_tombstones() = default;
  user_tombstones(const user_tombstones&) = delete;
  user_tombstones& operator=(const user_tombstones&) = delete;

  /// Remembers that a stream of `user` ended at `ended_at_ns`.
  void put(std::uint64_t user, std::int64_t ended_at_ns) {
    map_.insert_or_assign(user, ended_at_ns);
  }

  /// Removes and returns when `user`'s last stream ended, if remembered.
  std::optional<std::int64_t> take(std::uint64_t user) {
    auto i = map_.find(user);
    if (i == map_.end())
      return std::nullopt;
    auto at = i->second;
    map_.erase(i);
    return at;
  }

  /// Forgets every entry that ended `memory_ns` or longer before `now_ns`;
  /// returns how many.
  std::size_t sweep(std::int64_t now_ns, std::int64_t memory_ns) {
    std::size_t n = 0;
    for (auto i = map_.begin(); i != map_.end();) {
      if (now_ns - i->second >= memory_ns) {
        i = map_.erase(i);
        ++n;
      } else {
        ++i;
      }
    }
    return n;
  }

  /// Entries held.
  std::size_t size() const noexcept {
    return map_.size();
  }

  /// Bytes of memory the entries take (pool chunks and bucket array).
  std::size_t bytes() const noexcept {
    return upstream_.bytes();
  }

private:
  counting_resource upstream_;
  std::pmr::unsynchronized_pool_resource pool_{&upstream_};
  std::pmr::unordered_map<std::uint64_t, std::int64_t> map_{&pool_};
};

} // namespace videostreams
