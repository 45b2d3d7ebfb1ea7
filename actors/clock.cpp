#include "actors/clock.hpp"

#include <cstdio>
#include <ctime>

namespace videostreams {

std::string rfc3339(std::int64_t wall_ms) {
  auto seconds = static_cast<std::time_t>(wall_ms / 1000);
  auto millis = static_cast<int>(wall_ms % 1000);
  if (millis < 0) {
    seconds -= 1;
    millis += 1000;
  }
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buf[40];
  auto n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ", millis);
  return buf;
}

} // namespace videostreams
