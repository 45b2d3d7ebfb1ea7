#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "cluster/cluster_view.hpp"

namespace videostreams {

/// What the operator page shows of one node, as read from its `/metrics`:
/// gauges as they are, counters since the node started (the page turns
/// two readings into rates).
struct member_figures {
  /// `videostreams_open_streams`.
  double open_streams = 0;
  /// `videostreams_live_user_actors`.
  double live_user_actors = 0;
  /// Requests answered, all routes (`videostreams_http_requests_total`).
  double requests = 0;
  /// Requests answered on the routes about a user (both APIs).
  double user_requests = 0;
  /// Requests answered with a 5xx status.
  double server_errors = 0;
  /// `videostreams_stream_grants_total`, `videostreams_stream_denials_total`.
  double grants = 0;
  double denials = 0;
};

/// Reads the figures from a Prometheus text exposition (format 0.0.4), any
/// labels beside the ones it looks at included; nothing when `text` holds no
/// `videostreams_open_streams` sample (it is not this service's).
std::optional<member_figures> read_member_figures(std::string_view text);

/// How `member_metrics_collector` reaches the other members.
struct member_metrics_settings {
  /// Per member: to connect, and to wait for each read.
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds read_timeout{1000};
  /// Per member: the whole exchange, however the bytes trickle in.
  std::chrono::milliseconds total_timeout{2000};
  /// A collection this recent is answered again instead of a new one.
  std::chrono::milliseconds reuse_for{1000};
  /// Members asked at most (one thread each, all at once); the rest are
  /// listed as not asked.
  std::size_t max_members = 64;
  /// A `/metrics` answer longer than this is dropped.
  std::size_t max_body_bytes = 4 * 1024 * 1024;
};

/// Gathers every member's figures for `GET /api/cluster/metrics`, so that
/// the operator page, served by any node, shows the whole cluster while the
/// browser talks to that node only (the members' addresses are the ones
/// the nodes reach each other at, which a browser often cannot).
///
/// This node's figures come from `own_metrics` (its exposition); every other
/// live member's from `GET /metrics` on its advertised host and HTTP port,
/// all members at once, each bounded by `member_metrics_settings`. A member
/// that does not answer in time, or not with this service's figures, is
/// listed as unreachable with the reason. Concurrent callers share one
/// collection, and a recent one is reused, so a page open in many browsers
/// costs each member one scrape a second at most. Thread-safe.
class member_metrics_collector {
public:
  member_metrics_collector(member_metrics_settings settings,
                           std::function<std::string()> own_metrics);

  /// The JSON answer for the members of `view`: `{"nodeId", "collectedAt",
  /// "members":[{"nodeId","reachable",...figures or "error"}]}`.
  std::string collect(const cluster_view& view);

private:
  member_metrics_settings settings_;
  std::function<std::string()> own_metrics_;
  std::mutex mtx_;
  std::chrono::steady_clock::time_point collected_at_;
  std::string last_;
};

} // namespace videostreams
