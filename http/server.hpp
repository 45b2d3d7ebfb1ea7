#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <sys/socket.h>

#include "http/api.hpp"
#include "http/metrics.hpp"
#include "http/request_framing.hpp"
#include "logging/event_log.hpp"

namespace videostreams {

/// How one HTTP listener behaves.
struct http_server_settings {
  std::string bind_address = "0.0.0.0";
  /// 0 picks a free port (read it back from `bind`).
  int port = 8080;
  /// Which listener this is, in `/metrics`.
  listener_kind kind = listener_kind::api;
  /// Serve the operations routes only (`is_operations_route`); any other
  /// path is a 404.
  bool operations_only = false;
  /// Worker threads kept ready; the pool grows while every worker is busy
  /// (a worker runs one request at a time, never waits for a connection's
  /// next bytes), up to `max_threads`.
  std::size_t threads = 8;
  std::size_t max_threads = 512;
  /// Open connections at most; a connection beyond takes the place of the
  /// longest-idle keep-alive connection, else of the slowest request still
  /// arriving, else of the longest-unread answers, or is answered 503 and
  /// closed when a worker holds every connection.
  std::size_t max_connections = 16000;
  /// A keep-alive connection idle for this long is closed.
  std::chrono::seconds keep_alive_timeout{60};
  /// Requests served on one connection before it is closed.
  std::size_t keep_alive_max_requests = 100000;
  /// A request must arrive whole (header and body) within this of its
  /// first byte; a slower one is cut (slowloris).
  std::chrono::milliseconds read_timeout{10000};
  /// Answers that filled the socket must be taken by the client within
  /// this (it holds no worker while they wait).
  std::chrono::milliseconds write_timeout{5000};
  /// How long `stop` lets requests already under way finish.
  std::chrono::milliseconds shutdown_timeout{10000};
  framing_limits limits;
  /// Where a line per answered request goes (event "request"); null: no
  /// access log.
  std::shared_ptr<const event_log> access_log;
};

/// The HTTP edge in front of `api`: its own accept loop and connection
/// table on epoll, with cpp-httplib parsing and answering each request.
///
/// A connection costs no thread while it is idle or while its request
/// arrives: workers wait on one epoll set (every connection armed one-shot,
/// so exactly one worker takes its event), read what has arrived, and frame
/// it (`frame_request`). Only a whole request goes to cpp-httplib, which
/// parses it from memory and writes its answer. So slow or idle clients
/// hold no worker; a handler that blocks holds one, and the pool grows. A
/// watchdog enforces the deadlines, grows the pool, and drains on `stop`.
class http_server {
public:
  http_server(api& handler, http_server_settings settings,
              http_metrics& metrics);
  ~http_server();

  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Binds the listening socket; returns the bound port, or -1 on failure
  /// (then `bind_error` says why).
  int bind();

  /// Why `bind` failed, e.g. "Address already in use".
  const std::string& bind_error() const noexcept {
    return bind_error_;
  }

  /// Serves until `stop`, then drains: returns once every connection is
  /// closed (or cut at the shutdown timeout) and every worker is done.
  void run();

  /// Stops accepting and drains: idle connections are closed at once,
  /// requests under way are answered with `Connection: close`, whatever
  /// remains after the shutdown timeout is cut. Thread-safe; returns at
  /// once (`run` returns when the drain is over).
  void stop();

  /// `stop`, cutting what remains at `cut_at` instead: a listener stopped
  /// after another drains within the same deadline, not a timeout more.
  void stop(std::chrono::steady_clock::time_point cut_at);

  class connection;
  class engine;

private:
  using clock_type = std::chrono::steady_clock;

  struct worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
    /// When it took the event it is busy with; 0 while it waits.
    std::shared_ptr<std::atomic<std::int64_t>> busy_since;
  };

  void worker_loop(std::atomic<std::int64_t>& busy_since);
  void watchdog_loop();
  /// Accepts up to `limit` queued connections; false when it stopped for
  /// want of descriptors (or memory).
  bool accept_queued(int limit);
  /// The listener is readable: accepts a batch and arms it again.
  void accept_ready();
  void admit(int fd, const sockaddr_storage& peer);
  void on_readable(connection* c);
  enum class next_step { keep, close, linger };
  /// Serves the whole requests in `c`'s bytes and writes their answers,
  /// until they are all answered or the client stops taking answers; says
  /// what `c` does next (`keep` also while answers wait for the client).
  next_step serve_buffered(connection* c);
  /// Answers whole requests of `c->in` into `c->out`, until about
  /// `answer_batch_bytes` are ready; true if more whole requests may wait.
  bool answer_buffered(connection* c);
  enum class write_result { written, waiting, failed };
  /// Writes what it can of `c->out` without waiting.
  write_result write_answers(connection* c);
  /// Does what `next` says: waits for `c`'s next event, lingers or closes.
  void go_on(connection* c, next_step next);
  /// Answered and half-closed: `c` reads (and drops) what the client still
  /// sends, so that closing it does not reset the answer away.
  void linger(connection* c);
  void close_connection(connection* c);
  void rearm(connection* c);
  void arm_listener();
  /// Accepts what is queued on the listener, then shuts it (`stop`).
  void close_listener();
  // Under mtx_:
  void spawn_worker();
  void grow_if_starved(clock_type::time_point now);
  /// At the connection cap: cuts the connection that can best make room
  /// (see the definition); false when every one is held by a worker.
  bool evict_one();
  /// Cuts `c`: its next event (at once) closes it.
  void cut(connection* c);
  /// The answer to a request whose method cpp-httplib cannot parse, from
  /// the API (which counts it).
  api_response answer_unknown_method(std::string_view request,
                                     std::string_view peer_ip, int peer_port);
  /// Writes the access log line of one answered request.
  void log_request(std::string_view method, std::string_view path,
                   std::string_view route, int status,
                   std::chrono::nanoseconds took, std::string_view peer_ip,
                   int peer_port) const;

  api& api_;
  http_server_settings settings_;
  http_metrics& metrics_;
  listener_figures& figures_;
  std::string bind_error_;
  std::unique_ptr<engine> engine_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;

  mutable std::mutex mtx_;
  /// Wakes the watchdog: `stop`, or the last connection closed.
  std::condition_variable stopped_;
  std::unordered_set<connection*> open_;
  std::vector<worker> workers_;
  std::size_t live_workers_ = 0;
  std::atomic<bool> draining_{false};
  std::atomic<bool> exiting_{false};
  bool stop_requested_ = false;
  bool listener_closed_ = false;
  clock_type::time_point drain_deadline_;
  clock_type::time_point listener_paused_until_;
};

} // namespace videostreams
