#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "actors/router.hpp"
#include "actors/stream_counters.hpp"
#include "cluster/cluster_view.hpp"
#include "http/member_metrics.hpp"
#include "http/metrics.hpp"
#include "persistence/persistence_actor.hpp"
#include "http/routes.hpp"
#include "http/served_files.hpp"

namespace videostreams {

/// The parts of an HTTP request that the API reads.
struct api_request {
  std::string_view method;
  /// Decoded path without the query string.
  std::string_view path;
  std::string_view body;
  /// The `Authorization` header, if any.
  std::string_view authorization;
  /// The `If-None-Match` header, if any (the served files' 304).
  std::string_view if_none_match = {};
  /// The `Access-Control-Request-Headers` header of a CORS preflight, if
  /// any.
  std::string_view request_headers = {};
};

/// An HTTP answer, independent of the server library.
struct api_response {
  int status = 200;
  /// JSON (or, for /metrics, Prometheus text); empty for 204.
  std::string body;
  std::string_view content_type = "application/json; charset=utf-8";
  /// Headers beyond Content-Type and the CORS origin (set on every response).
  std::vector<std::pair<std::string_view, std::string>> headers;
};

/// Where the node stands, as `/readyz` reports it.
enum class readiness { starting, ready, stopping };

/// How the API behaves.
struct api_settings {
  /// How long a request waits for its user's actor before answering 503.
  std::chrono::nanoseconds request_timeout = std::chrono::seconds{2};
  /// The `Retry-After` seconds sent with a 503.
  int retry_after_seconds = 1;
  /// Bounds of a session's `ttlSeconds`; outside them is a 400.
  std::uint32_t min_ttl_seconds = 5;
  std::uint32_t max_ttl_seconds = 3600;
  /// The operator token for the limit endpoints; empty = they answer 403.
  std::string admin_token;
  /// What `/readyz` says of the database: "none", "ok" or "unreachable".
  std::function<const char*()> database_status = [] { return "none"; };
  /// What `GET /api/cluster` shows (the cluster node publishes it), and the
  /// cluster node's figures for `/metrics`; either may be null.
  std::shared_ptr<const cluster_view_box> cluster;
  std::shared_ptr<const cluster_counters> cluster_figures;
  /// How `GET /api/cluster/metrics` reaches the other members.
  member_metrics_settings member_metrics;
};

/// The HTTP API of docs/api.md: maps a request to a command for the user's
/// actor and the actor's reply (or error) to status and JSON. The only place
/// where outcomes and errors become HTTP status codes. Thread-safe.
class api {
public:
  api(const router& users, api_settings settings, http_metrics& metrics,
      const stream_counters& counters,
      const persistence_counters* persistence = nullptr);

  /// Answers one request; never throws (an internal failure is a 500).
  api_response handle(const api_request& req) noexcept;

  /// What `/readyz` answers now.
  readiness current_readiness() const noexcept {
    return readiness_.load(std::memory_order_acquire);
  }

  /// Changes what `/readyz` answers.
  void set_readiness(readiness x) noexcept {
    readiness_.store(x, std::memory_order_release);
  }

  /// The body of an error answer for `status`, e.g. `{"msg":"Route not
  /// found"}`, with `detail` if given; used too for errors raised by the
  /// HTTP edge and library themselves.
  static std::string error_body(int status, std::string_view detail = {});

private:
  api_response dispatch(const api_request& req, const route_match& m);
  api_response legacy_command(route r, std::string_view user_id_text);
  api_response session_command(const api_request& req, const route_match& m);
  api_response readyz() const;
  api_response cluster() const;
  api_response cluster_metrics();
  api_response cluster_user(std::string_view user_id_text);
  static api_response served(const served_file& file,
                             std::string_view if_none_match);

  /// Nothing when `authorization` carries the admin token; else the answer
  /// that refuses the request (403 without a configured token when
  /// `token_required`, else 401).
  std::optional<api_response> refuse_operator(std::string_view authorization,
                                              bool token_required) const;

  const router& users_;
  api_settings settings_;
  http_metrics& metrics_;
  const stream_counters& counters_;
  const persistence_counters* persistence_;
  member_metrics_collector member_metrics_;
  std::atomic<readiness> readiness_{readiness::starting};
};

} // namespace videostreams
