#pragma once

// Helpers for the v2 stream sessions API (docs/api.md, "Stream sessions (v2)"):
// paths, requests, and checks of the documented answer shapes. Functions that
// check (the `require_*`/`check_*` ones) use Catch2 and may only be called on a
// test's own thread; the others are plain and thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "http_probe.hpp"

namespace videostreams::blackbox {

/// `/api/v2/users/<user>/streams`
std::string streams_path(const std::string& user);

/// `/api/v2/users/<user>/streams/<session>`
std::string stream_path(const std::string& user, const std::string& session);

/// `/api/v2/users/<user>/limit`
std::string limit_path(const std::string& user);

/// A POST body `{"sessionId":..., "ttlSeconds":...}` with the fields given.
std::string open_body(const std::optional<std::string>& session_id,
                      const std::optional<std::int64_t>& ttl_seconds
                      = std::nullopt);

/// `POST /api/v2/users/<user>/streams` with an optional body.
reply open_session(httplib::Client& cli, const std::string& user,
                   const std::optional<std::string>& body = std::nullopt);

/// `PUT /api/v2/users/<user>/streams/<session>` (heartbeat).
reply heartbeat(httplib::Client& cli, const std::string& user,
                const std::string& session,
                const std::optional<std::string>& body = std::nullopt);

/// `DELETE /api/v2/users/<user>/streams/<session>`.
reply close_session(httplib::Client& cli, const std::string& user,
                    const std::string& session);

/// `GET /api/v2/users/<user>/streams`.
reply list_sessions(httplib::Client& cli, const std::string& user);

/// Headers carrying `Authorization: Bearer <token>`.
httplib::Headers bearer(const std::string& token);

/// The body parsed as JSON, or nothing when it is not JSON.
std::optional<boost::json::value> json_of(const std::string& body);

/// The integer field `name` of a JSON object body, or nothing. Thread-safe.
std::optional<std::int64_t> int_field(const std::string& body,
                                      std::string_view name);

/// The string field `name` of a JSON object body, or nothing. Thread-safe.
std::optional<std::string> string_field(const std::string& body,
                                        std::string_view name);

/// Milliseconds since the Unix epoch of an RFC 3339 date-time
/// (`2026-11-28T16:05:09.120Z`, `...+01:00`), or nothing when `text` is not
/// one.
std::optional<std::int64_t> rfc3339_ms(std::string_view text);

/// The wall clock of this machine, milliseconds since the Unix epoch.
std::int64_t wall_ms();

/// The set of keys of `obj`, sorted, for comparing an answer's shape.
std::vector<std::string> keys_of(const boost::json::object& obj);

/// Requires `r` to have status `status`, the CORS header, the JSON
/// Content-Type and a JSON object body; returns that object.
boost::json::object require_object(const reply& r, int status);

/// Checks the answer to an open (POST) or a renewal: exactly the keys
/// userId, sessionId, streamCount, maxStreams, expiresAt and
/// heartbeatIntervalSeconds (at least 1), with these values
/// (`session` unchecked when empty); returns the expiry in ms since the
/// epoch.
std::int64_t check_session_answer(const reply& r, int status,
                                  std::int64_t user,
                                  const std::string& session,
                                  std::int64_t count, std::int64_t max);

/// One entry of a `sessions` array, as the API lists it.
struct listed_session {
  /// Empty for a stream opened by startstream (`"sessionId":null`).
  std::optional<std::string> id;
  std::int64_t started_at_ms = 0;
  /// Empty for a stream that never expires (`"expiresAt":null`).
  std::optional<std::int64_t> expires_at_ms;
};

/// Checks a `sessions` array (every entry exactly sessionId, startedAt,
/// expiresAt with the documented types) and returns its entries in order.
std::vector<listed_session> require_sessions(const boost::json::object& obj);

/// A user's sessions as `GET .../streams` shows them.
struct listing {
  std::int64_t count = -1;
  std::int64_t max = -1;
  std::vector<listed_session> sessions;

  /// The ids in listing order (nothing for a stream without an id).
  std::vector<std::optional<std::string>> ids() const;
};

/// `GET .../streams` for `user`, requiring a 200 of the documented shape
/// (userId, streamCount, maxStreams, sessions; streamCount equal to the
/// number of sessions).
listing require_listing(httplib::Client& cli, const std::string& user);

/// Checks a 400 that names `field`: `{"msg":"Bad Request","field":...}`,
/// JSON, with CORS.
void check_field_error(const reply& r, std::string_view field);

} // namespace videostreams::blackbox
