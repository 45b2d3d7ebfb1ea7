#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <httplib.h>

namespace videostreams::blackbox {

/// The Content-Type of every JSON answer (docs/api.md, "Every answer").
constexpr std::string_view json_content_type
  = "application/json; charset=utf-8";

/// A client for 127.0.0.1:`port` with TCP_NODELAY and 30 s timeouts. With
/// `keep_alive` it holds one connection for all its requests; without, it
/// opens one per request (so no idle connection outlives the test).
std::unique_ptr<httplib::Client> make_client(int port, bool keep_alive = false);

/// The same for `host`:`port`.
std::unique_ptr<httplib::Client> make_client(const std::string& host, int port,
                                             bool keep_alive = false);

/// A response reduced to what the tests check.
struct reply {
  /// The HTTP status, or -1 when no response arrived.
  int status = -1;
  std::string body;
  httplib::Headers headers;
  /// The client library's error when `status` is -1.
  std::string error;

  /// The value of header `name` (case-insensitive), or "" when absent.
  std::string header(const std::string& name) const;

  /// Whether header `name` is present.
  bool has_header(const std::string& name) const;
};

/// Sends `method path` with an optional body (sent as JSON) and optional
/// extra request headers (e.g. Authorization).
reply send(httplib::Client& cli, const std::string& method,
           const std::string& path,
           const std::optional<std::string>& body = std::nullopt,
           const httplib::Headers& headers = {});

/// Sends `GET path`.
reply get(httplib::Client& cli, const std::string& path);

/// Opens a TCP connection to 127.0.0.1:`port`, writes `bytes`, and returns
/// the first response (see `raw_connection::read_response`), or "".
std::string raw_exchange(int port, std::string_view bytes);

/// The status code of a raw response ("HTTP/1.1 NNN ..."), or -1 when
/// `response` is not one.
int status_of(const std::string& response);

/// The body of a raw response (what follows the blank line), or "" when
/// `response` has none.
std::string body_of(const std::string& response);

/// One TCP connection to the service, for requests the HTTP client cannot
/// make (partial, malformed). Reads and writes time out after 30 seconds.
class raw_connection {
public:
  /// Connects to 127.0.0.1:`port`; `connected()` says whether that worked.
  explicit raw_connection(int port);

  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  ~raw_connection();

  bool connected() const noexcept {
    return fd_ >= 0;
  }

  /// Writes all of `bytes`; false on failure.
  bool write(std::string_view bytes);

  /// Reads one HTTP response (head and a Content-Length body, none for an
  /// answer to HEAD, `to_head`); "" when the connection closed or timed
  /// out before a whole response arrived.
  std::string read_response(bool to_head = false);

  /// Shuts the writing side (the service reads an end of stream); false
  /// on failure.
  bool shut_write();

  /// True once the service has closed the connection (end of stream or a
  /// reset) with nothing more to read; false if more bytes arrive or it is
  /// still open after `limit`.
  bool closed_by_peer(std::chrono::milliseconds limit
                      = std::chrono::seconds{10});

private:
  int fd_ = -1;
  std::string buffered_;
};

/// The value of the Prometheus sample `series` (metric name and labels,
/// exactly as the service renders them) in `text`, if present.
std::optional<double> metric_value(const std::string& text,
                                   std::string_view series);

/// The `/metrics` text, or "" when the scrape failed.
std::string scrape(httplib::Client& cli);

/// Polls `condition` every few milliseconds until it holds or `limit`
/// passes; returns its last result. For waiting on the service, never for
/// asserting how fast it is: the default is long, as a loaded machine is
/// slow (a test that asserts a bound passes its own `limit`).
template <class Condition>
bool eventually(Condition condition,
                std::chrono::milliseconds limit = std::chrono::seconds{30}) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (condition())
      return true;
    if (std::chrono::steady_clock::now() >= deadline)
      return condition();
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
}

/// Holds a fixed number of threads until all have arrived, then releases
/// them together (C++17 has no std::latch).
class start_gate {
public:
  explicit start_gate(std::size_t parties) : waiting_(parties) {
    // Nothing else to do.
  }

  /// Blocks until `parties` threads have called this.
  void arrive_and_wait();

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::size_t waiting_;
};

/// The original API's bodies, byte for byte (docs/api.md, "The original API").
std::string granted_body(std::int64_t count);
std::string denied_body(std::int64_t count);
std::string closed_body(std::int64_t count);
/// The 400 of `endstream` for a known user with no stream it may close.
std::string no_active_streams_body();
/// The 400 of `endstream` for a user the service does not know.
std::string unknown_user_body();
/// The 400 of a legacy route for an id that is no user id.
std::string legacy_bad_id_body();

/// The fixed error bodies of docs/api.md, "The original API".
constexpr std::string_view route_not_found_body = R"({"msg":"Route not found"})";
constexpr std::string_view method_not_allowed_body
  = R"({"msg":"Method not allowed"})";

} // namespace videostreams::blackbox
