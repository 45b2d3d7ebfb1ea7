#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "actors/stream_counters.hpp"
#include "cluster/cluster_view.hpp"
#include "persistence/persistence_actor.hpp"
#include "http/routes.hpp"

namespace videostreams {

/// The HTTP listeners: the API's port, and the operations port.
enum class listener_kind : unsigned char { api, ops };

/// The listener's label value on /metrics.
constexpr const char* listener_name(listener_kind k) noexcept {
  return k == listener_kind::api ? "api" : "ops";
}

/// What one listener's edge counts (README.md, "The HTTP edge").
struct listener_figures {
  std::atomic<std::int64_t> open_connections{0};
  std::atomic<std::uint64_t> accepted{0};
  /// Answered 503 and closed: the connection cap was reached with no idle
  /// connection to close instead.
  std::atomic<std::uint64_t> shed{0};
  /// Idle keep-alive connections closed to make room for a new one.
  std::atomic<std::uint64_t> evicted{0};
  /// Cut because a request did not arrive whole within the read timeout.
  std::atomic<std::uint64_t> timed_out{0};
  /// Refused by the edge before reaching the API (framing, size, encoding).
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::int64_t> workers{0};
  std::atomic<std::int64_t> busy_workers{0};
};

/// Request counters by route and status code, and a latency histogram per
/// route, updated lock-free by the HTTP workers and rendered for `/metrics`.
class http_metrics {
public:
  /// Upper bounds of the latency histogram buckets, in seconds.
  static constexpr std::array<double, 14> latency_buckets{
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  0.5,   1.0,   2.5};

  /// The status codes counted individually; any other lands in "other".
  static constexpr std::array<int, 19> status_codes{
    200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 410,
    413, 414, 415, 429, 431, 500, 501, 503};

  /// The route label of requests the edge answered before any route was
  /// known: refused framing (400, 413, 414, 415, 431), a request
  /// cpp-httplib could not parse (400), a connection shed at the cap (503).
  static constexpr const char* edge_route = "(edge)";

  /// The edge's figures of listener `k`.
  listener_figures& listener(listener_kind k) noexcept {
    return listeners_[static_cast<std::size_t>(k)];
  }

  /// Counts one answered request.
  void record(route r, int status, std::chrono::nanoseconds latency) noexcept;

  /// Counts one request that the edge answered before routing it (as
  /// `route="(edge)"`; not in the latency histogram).
  void record_edge(int status) noexcept;

  /// Requests answered by the edge with `status` so far.
  std::uint64_t edge_requests(int status) const noexcept;

  /// What `videostreams_build_info` shows: the version, this node's id and
  /// "in-memory" or "database".
  void set_build_info(std::string version, std::string node_id,
                      std::string mode);

  /// Requests answered for `r` with `status` so far (tests, exposition).
  std::uint64_t requests(route r, int status) const noexcept;

  /// The Prometheus text exposition (format 0.0.4) of these metrics, of
  /// the actors' `counters`, of the cluster node's (if given) and, with a
  /// database, of the persistence actor.
  std::string render(const stream_counters& counters,
                     const persistence_counters* persistence = nullptr,
                     const cluster_counters* cluster = nullptr) const;

private:
  static constexpr std::size_t status_slots = status_codes.size() + 1;
  static constexpr std::size_t bucket_slots = latency_buckets.size() + 1;

  static std::size_t status_slot(int status) noexcept;

  struct route_figures {
    std::array<std::atomic<std::uint64_t>, status_slots> by_status{};
    std::array<std::atomic<std::uint64_t>, bucket_slots> buckets{};
    std::atomic<std::uint64_t> latency_sum_ns{0};
  };

  std::array<route_figures, route_count> routes_{};
  std::array<std::atomic<std::uint64_t>, status_slots> edge_by_status_{};
  std::array<listener_figures, 2> listeners_{};
  mutable std::mutex build_mtx_;
  std::string version_;
  std::string node_id_;
  std::string mode_;
};

} // namespace videostreams
