#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "caf/meta/type_name.hpp"

namespace videostreams {

/// One open stream of a user. Streams opened through the original API
/// (`startstream`) carry no id.
struct stream_session {
  /// Client- or server-chosen id; empty for a stream opened by `startstream`.
  std::string id;
  /// Wall-clock start, milliseconds since the Unix epoch (shown to clients).
  std::int64_t started_at_ms = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_session& x) {
  return f(caf::meta::type_name("stream_session"), x.id, x.started_at_ms);
}

/// The outcome of one decision about a user's streams.
enum class stream_outcome : std::uint8_t {
  granted,          ///< A new stream was opened.
  denied,           ///< The user is at the limit; nothing changed.
  closed,           ///< A stream was closed.
  nothing_to_close, ///< There was no stream that this request may close.
};

/// Renders an outcome for logs and test output.
std::string to_string(stream_outcome x);

/// The open streams of one user and the decisions about them. This is the
/// whole state of a user: a user actor owns one while it is live, and its
/// shard keeps it as the compact record while the user is passivated. Not
/// thread-safe by design: exactly one actor owns it at any time.
class user_streams {
public:
  /// Number of streams currently open.
  std::uint32_t count() const noexcept {
    return static_cast<std::uint32_t>(sessions_.size());
  }

  /// True when nothing is open, i.e. the record carries no information.
  bool empty() const noexcept {
    return sessions_.empty();
  }

  /// Opens a stream without an id if fewer than `limit` are open.
  stream_outcome start_legacy(std::uint32_t limit, std::int64_t now_ms);

  /// Closes the oldest stream that has no id, if any. Never closes a
  /// stream that has an id and never takes the count below zero.
  stream_outcome end_legacy();

  /// All open streams, oldest first.
  const std::vector<stream_session>& sessions() const noexcept {
    return sessions_;
  }

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f,
                                                 user_streams& x) {
    return f(caf::meta::type_name("user_streams"), x.sessions_);
  }

private:
  // Oldest first; tiny (bounded by the user's limit), so a vector beats any
  // node-based container in both speed and memory.
  std::vector<stream_session> sessions_;
};

} // namespace videostreams
