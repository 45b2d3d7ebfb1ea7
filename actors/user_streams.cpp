#include "actors/user_streams.hpp"

#include <algorithm>

namespace videostreams {

std::string to_string(stream_outcome x) {
  switch (x) {
    case stream_outcome::granted:
      return "granted";
    case stream_outcome::denied:
      return "denied";
    case stream_outcome::closed:
      return "closed";
    case stream_outcome::nothing_to_close:
      return "nothing_to_close";
  }
  return "unknown";
}

stream_outcome user_streams::start_legacy(std::uint32_t limit,
                                          std::int64_t now_ms) {
  if (count() >= limit)
    return stream_outcome::denied;
  sessions_.push_back(stream_session{std::string{}, now_ms});
  return stream_outcome::granted;
}

stream_outcome user_streams::end_legacy() {
  auto oldest = std::find_if(sessions_.begin(), sessions_.end(),
                             [](const stream_session& s) {
                               return s.id.empty();
                             });
  if (oldest == sessions_.end())
    return stream_outcome::nothing_to_close;
  sessions_.erase(oldest);
  if (sessions_.empty())
    sessions_.shrink_to_fit(); // a quiet user should cost nothing
  return stream_outcome::closed;
}

} // namespace videostreams
