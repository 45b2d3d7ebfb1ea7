#pragma once

#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "caf/meta/type_name.hpp"

#include "actors/clock.hpp"

namespace videostreams {

/// One open stream of a user: a session with a lease. Streams opened through
/// the original API (`startstream`) have no client-visible id and, unless a
/// legacy TTL is configured, never expire.
struct stream_session {
  /// The client- or server-chosen session id; for a stream opened by
  /// `startstream`, an internal key starting with '~' (which no session id
  /// can contain), so that every stream can be persisted and closed by key.
  std::string id;
  /// Wall-clock start, milliseconds since the Unix epoch (shown to clients).
  std::int64_t started_at_ms = 0;
  /// Monotonic deadline of the lease in nanoseconds; 0 = never expires.
  std::int64_t expires_at_ns = 0;
  /// Length of the lease, renewed by each heartbeat; 0 = never expires.
  std::uint32_t ttl_seconds = 0;

  /// True for a stream opened by `startstream` (shown with a null id).
  bool is_legacy() const noexcept {
    return !id.empty() && id.front() == '~';
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_session& x) {
  return f(caf::meta::type_name("stream_session"), x.id, x.started_at_ms,
           x.expires_at_ns, x.ttl_seconds);
}

/// The outcome of one decision about a user's streams.
enum class stream_outcome : std::uint8_t {
  granted,          ///< A new stream was opened.
  renewed,          ///< An open session's lease was renewed; count unchanged.
  denied,           ///< The user is at the limit; nothing changed.
  closed,           ///< A stream was closed.
  nothing_to_close, ///< `endstream` found no stream without an id.
  not_found,        ///< No open session has that id (or its lease expired).
  listed,           ///< Read only: the open sessions.
  limit_set,        ///< The user's own limit was set or cleared.
  unavailable,      ///< A grant could not be made durable; nothing changed.
  unknown_user,     ///< `endstream` for a user the service does not know.
  ended_elsewhere,  ///< A heartbeat for a session that was closed by a
                    ///< `DELETE` or replaced, within its TTL (410).
};

/// A session closed by a `DELETE` or replaced by another's open: until
/// `until_ns` (its close plus one TTL, monotonic ns) its heartbeat is told
/// that another device ended it, instead of "not found".
struct ended_session {
  std::string id;
  std::int64_t until_ns = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ended_session& x) {
  return f(caf::meta::type_name("ended_session"), x.id, x.until_ns);
}

/// How long a user stays "known" to the original API after its last stream
/// closed or expired: `endstream` then answers "no active streams to close"
/// rather than "not present" (docs/api.md, "The original API").
constexpr std::int64_t known_user_memory_ns = 3600LL * 1'000'000'000;

/// Ended sessions a user keeps at most; beyond, the one that ends soonest
/// is forgotten (its heartbeat then gets "not found"). Bounds the memory a
/// client that opens and deletes in a loop can make a user hold.
constexpr std::size_t max_ended_sessions = 16;

/// Renders an outcome for logs and test output.
std::string to_string(stream_outcome x);

/// The open streams of one user, the user's own limit, and the decisions
/// about them. This is the whole state of a user: a user actor owns one while
/// it is live, and its shard keeps it as the compact record while the user is
/// passivated. Not thread-safe by design: exactly one actor owns it.
///
/// Every decision first drops the leases that expired by `now`, so an expired
/// lease never counts, whenever the last sweep ran.
class user_streams {
public:
  /// Number of streams open (expired leases not yet swept included; call
  /// `expire` first for an exact figure).
  std::uint32_t count() const noexcept {
    return static_cast<std::uint32_t>(sessions_.size());
  }

  /// True when the record carries nothing a shard must keep as a record:
  /// no stream, no own limit, no ended session. (The time of the last
  /// close, `last_end_ns`, is kept apart, more compactly.)
  bool empty() const noexcept {
    return sessions_.empty() && own_limit_ < 0 && ended_.empty();
  }

  /// Monotonic time (ns) at which a stream of this user last closed or
  /// expired; `no_end` when none did (on this node, since it started).
  std::int64_t last_end_ns() const noexcept {
    return last_end_ns_;
  }

  /// Value of `last_end_ns` when no stream ended.
  static constexpr std::int64_t no_end = INT64_MIN;

  /// Sets the time of the last close (a shard hands back what it kept of a
  /// user that had nothing else).
  void remember_end(std::int64_t at_ns) noexcept {
    last_end_ns_ = at_ns;
  }

  /// True when the original API knows the user at `now_ns`: open streams,
  /// an own limit, or a stream closed or expired within
  /// `known_user_memory_ns`.
  bool known(std::int64_t now_ns) const noexcept {
    return !sessions_.empty() || own_limit_ >= 0 || ended_recently(now_ns);
  }

  /// True when a stream closed or expired within `known_user_memory_ns` of
  /// `now_ns`.
  bool ended_recently(std::int64_t now_ns) const noexcept {
    return last_end_ns_ != no_end
           && now_ns - last_end_ns_ < known_user_memory_ns;
  }

  /// Sessions closed by a `DELETE` or replaced whose heartbeat is still
  /// told so.
  const std::vector<ended_session>& ended() const noexcept {
    return ended_;
  }

  /// The limit that applies: the user's own, else `default_limit`.
  std::uint32_t limit(std::uint32_t default_limit) const noexcept {
    return own_limit_ < 0 ? default_limit
                          : static_cast<std::uint32_t>(own_limit_);
  }

  /// The user's own limit, if an operator set one.
  std::optional<std::uint32_t> own_limit() const noexcept {
    if (own_limit_ < 0)
      return std::nullopt;
    return static_cast<std::uint32_t>(own_limit_);
  }

  /// Removes every lease whose deadline is at or before `now_ns`; returns
  /// how many were removed. Forgets ended sessions whose time is over.
  std::size_t expire(std::int64_t now_ns);

  /// The earliest lease deadline, or 0 when nothing expires.
  std::int64_t next_expiry() const noexcept;

  /// The earliest time at which `expire` would change the record: a lease
  /// deadline or the end of an ended session's memory; 0 for never.
  std::int64_t next_cleanup() const noexcept;

  /// Opens a stream without a client-visible id, under the internal `key`
  /// ('~' and up to 12 more characters), if fewer than `limit` are open. A
  /// `ttl_seconds` of 0 means it never expires.
  stream_outcome start_legacy(std::uint32_t limit, std::uint32_t ttl_seconds,
                              const clock_reading& now, std::string key);

  /// Closes the oldest stream opened by `startstream`, if any. Never closes a
  /// session with a client-visible id and never takes the count below zero.
  /// With none to close: `nothing_to_close` for a user that is `known`,
  /// else `unknown_user`.
  stream_outcome end_legacy(const clock_reading& now);

  /// Opens session `id` with a lease of `ttl_seconds` if fewer than `limit`
  /// are open (`granted`); if `id` is already open, renews its lease instead
  /// (`renewed`; with `ttl_seconds` as its new TTL when given, i.e. > 0).
  ///
  /// With a `replace` id that names another open session, that session is
  /// closed (its heartbeat then ends with `ended_elsewhere`) in the same
  /// step, and counts as free for the limit: the count never exceeds the
  /// limit, not even in between. Denied, nothing is closed. A `replace` id
  /// that names no open session changes nothing: the open is a plain one.
  /// `replaced`, if given, is set to whether a session was closed.
  stream_outcome open(const std::string& id, std::uint32_t ttl_seconds,
                      std::uint32_t limit, const clock_reading& now,
                      const std::string& replace = {},
                      bool* replaced = nullptr);

  /// Renews the lease of session `id` by its own TTL; `ended_elsewhere`
  /// for a session closed by `close` or replaced within its TTL, else
  /// `not_found` when no such session is open.
  stream_outcome heartbeat(const std::string& id, const clock_reading& now);

  /// Closes session `id`; its heartbeat is told `ended_elsewhere` for one
  /// TTL.
  stream_outcome close(const std::string& id, const clock_reading& now);

  /// Adds a stream recovered from the database as it is (no limit check:
  /// it was granted before). Keeps the oldest-first order by start time.
  void restore(stream_session s);

  /// Removes the stream with key `key` (a session id or an internal key),
  /// whatever it is; true if there was one. Undoes a grant that could not
  /// be made durable.
  bool remove(const std::string& key);

  /// Sets (`limit` given) or clears the user's own limit. Open streams are
  /// never closed by a lower limit; new ones are denied until below it.
  stream_outcome set_limit(std::optional<std::uint32_t> limit);

  /// The open session with the client-visible id `id`, or null (streams
  /// opened by `startstream` cannot be named).
  const stream_session* find(const std::string& id) const noexcept;

  /// All open streams, oldest first.
  const std::vector<stream_session>& sessions() const noexcept {
    return sessions_;
  }

  template <class Inspector>
  friend typename Inspector::result_type inspect(Inspector& f,
                                                 user_streams& x) {
    return f(caf::meta::type_name("user_streams"), x.sessions_, x.own_limit_,
             x.ended_, x.last_end_ns_);
  }

private:
  stream_session* find_mutable(const std::string& id) noexcept;

  /// Closes the open session at `i` by a `DELETE` or a replacement:
  /// remembers it as ended for one TTL.
  void end_session(std::vector<stream_session>::iterator i,
                   const clock_reading& now);

  /// Forgets that session `id` ended (it is opened again).
  void forget_ended(const std::string& id) noexcept;

  // Oldest first; tiny (bounded by the user's limit), so a vector beats any
  // node-based container in both speed and memory.
  std::vector<stream_session> sessions_;
  // The user's own limit; -1 when the default applies.
  std::int32_t own_limit_ = -1;
  // Sessions closed by a DELETE or replaced, told so until their time is
  // over; at most `max_ended_sessions`, usually none.
  std::vector<ended_session> ended_;
  // When a stream last closed or expired (monotonic ns), or `no_end`.
  std::int64_t last_end_ns_ = no_end;
};

} // namespace videostreams
