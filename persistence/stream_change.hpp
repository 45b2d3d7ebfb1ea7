#pragma once

#include <cstdint>
#include <string>

#include "caf/meta/type_name.hpp"

namespace videostreams {

/// What happened to a user's state, as the database records it.
enum class change_kind : std::uint8_t {
  grant,       ///< a stream was opened (or its lease's TTL changed)
  close,       ///< a stream was closed or its lease expired
  set_limit,   ///< the user got a limit of its own
  clear_limit, ///< the user went back to the default limit
};

/// One change to write behind. Changes to the same stream (or the same
/// user's limit) coalesce: only the last one of a batch is written.
struct stream_change {
  change_kind kind = change_kind::grant;
  std::uint64_t user = 0;
  /// The stream's key: its session id, or an internal key for a stream
  /// without one. Empty for limit changes.
  std::string key;
  /// False for a stream opened by `startstream` (no client-visible id).
  bool has_id = true;
  /// Wall-clock start and expiry, ms since the epoch; expiry 0 = never.
  std::int64_t started_at_ms = 0;
  std::int64_t expires_at_ms = 0;
  std::uint32_t ttl_seconds = 0;
  /// The new limit for `set_limit`.
  std::uint32_t max_streams = 0;
  /// The user's shard; the write is fenced by this shard's owner epoch.
  std::uint32_t shard = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_change& x) {
  return f(caf::meta::type_name("stream_change"), x.kind, x.user, x.key,
           x.has_id, x.started_at_ms, x.expires_at_ms, x.ttl_seconds,
           x.max_streams, x.shard);
}

} // namespace videostreams
