#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace videostreams {

/// One reading of both clocks the service needs: a monotonic one for lease
/// deadlines (immune to wall-clock steps) and the wall clock, only for the
/// RFC 3339 times shown to clients.
struct clock_reading {
  /// Monotonic time in nanoseconds (arbitrary origin).
  std::int64_t mono_ns = 0;
  /// Wall-clock time in milliseconds since the Unix epoch.
  std::int64_t wall_ms = 0;
  /// Wall-clock minus monotonic time in nanoseconds, fixed when the time
  /// source was created, so that one deadline always shows as one time.
  std::int64_t wall_offset_ns = 0;

  /// The wall-clock time (ms since the epoch) of the monotonic deadline
  /// `mono`.
  std::int64_t wall_ms_at(std::int64_t mono) const noexcept {
    return (mono + wall_offset_ns) / 1'000'000;
  }
};

/// `wall_ms` (milliseconds since the Unix epoch) as RFC 3339 in UTC with
/// milliseconds, e.g. "2026-11-28T16:05:09.120Z".
std::string rfc3339(std::int64_t wall_ms);

/// Where actors read the time. The real one reads the system clocks; tests
/// inject a `manual_clock` so that no test has to sleep.
class time_source {
public:
  virtual ~time_source() = default;

  /// Reads both clocks.
  virtual clock_reading now() const = 0;
};

/// The system's steady and wall clocks.
class system_time_source final : public time_source {
public:
  system_time_source() : offset_ns_(wall_ns() - mono_ns()) {
    // Nothing else to do.
  }

  clock_reading now() const override {
    return {mono_ns(), wall_ns() / 1'000'000, offset_ns_};
  }

private:
  static std::int64_t mono_ns() {
    using namespace std::chrono;
    return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch())
      .count();
  }

  static std::int64_t wall_ns() {
    using namespace std::chrono;
    return duration_cast<nanoseconds>(system_clock::now().time_since_epoch())
      .count();
  }

  std::int64_t offset_ns_;
};

/// A clock that only moves when told to (tests). Thread-safe.
class manual_clock final : public time_source {
public:
  /// Wall time is `wall_ms` plus the monotonic milliseconds (which start at
  /// 1000); the default `wall_ms` is 2026-01-01T00:00:00Z.
  explicit manual_clock(std::int64_t wall_ms = 1767225600000)
    : wall_origin_ms_(wall_ms) {
    // Nothing else to do.
  }

  clock_reading now() const override {
    auto mono = mono_ns_.load();
    auto offset = wall_origin_ms_ * 1'000'000;
    return {mono, (mono + offset) / 1'000'000, offset};
  }

  /// Moves both clocks forward by `d`.
  void advance(std::chrono::nanoseconds d) {
    mono_ns_ += d.count();
  }

private:
  std::int64_t wall_origin_ms_;
  std::atomic<std::int64_t> mono_ns_{1'000'000'000};
};

} // namespace videostreams
