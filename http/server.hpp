#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "http/api.hpp"

namespace httplib {
class Server;
}

namespace videostreams {

/// How the HTTP listener behaves.
struct http_server_settings {
  std::string bind_address = "0.0.0.0";
  /// 0 picks a free port (read it back from `bind`).
  int port = 8080;
  /// Worker threads. cpp-httplib keeps a connection on one worker for its
  /// whole keep-alive life, so this bounds the concurrent connections served.
  std::size_t threads = 64;
  /// A keep-alive connection idle for this long is closed.
  int keep_alive_timeout_seconds = 5;
  /// Requests served on one connection before it is closed.
  std::size_t keep_alive_max_requests = 100000;
  /// Larger request bodies are answered 413.
  std::size_t max_body_bytes = 16 * 1024;
};

/// The cpp-httplib listener in front of `api`: TCP_NODELAY, a fixed worker
/// pool, long keep-alive, CORS and JSON error bodies on every answer.
class http_server {
public:
  http_server(api& handler, http_server_settings settings);
  ~http_server();

  /// Binds the listening socket; returns the bound port, or -1 on failure.
  int bind();

  /// Serves until `stop`; returns after in-flight requests have finished.
  void run();

  /// Stops accepting; `run` returns once the workers are done. Thread-safe.
  void stop();

private:
  api& api_;
  http_server_settings settings_;
  std::unique_ptr<httplib::Server> server_;
  /// The listening socket, captured when cpp-httplib creates it.
  int listen_socket_ = -1;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> running_{false};
};

} // namespace videostreams
