#pragma once

#include <cstddef>
#include <string_view>

namespace videostreams {

/// Every route the service knows, plus `unmatched` for any other path.
enum class route : unsigned char {
  api_index,   ///< GET /api
  startstream, ///< GET /api/startstream/:user_id
  endstream,   ///< GET /api/endstream/:user_id
  healthz,     ///< GET /healthz
  readyz,      ///< GET /readyz
  metrics,     ///< GET /metrics
  v2_streams,  ///< GET, POST /api/v2/users/:user_id/streams
  v2_stream,   ///< PUT, DELETE /api/v2/users/:user_id/streams/:session_id
  v2_limit,    ///< PUT, DELETE /api/v2/users/:user_id/limit
  cluster,     ///< GET /api/cluster
  cluster_metrics, ///< GET /api/cluster/metrics
  cluster_user,    ///< GET /api/cluster/users/:user_id
  ui_index,    ///< GET /ui/ (the operator page)
  ui_file,     ///< GET /ui/:file
  openapi,     ///< GET /api/openapi.json
  unmatched,   ///< any other path
};

/// Number of `route` values, `unmatched` included.
constexpr std::size_t route_count = static_cast<std::size_t>(route::unmatched)
                                    + 1;

/// A path resolved to its route and its parameters (still text, validated
/// by the handler so that a bad id is a 400, not a 404).
struct route_match {
  route which = route::unmatched;
  std::string_view user_id;
  std::string_view session_id;
  /// The file name of `ui_file`.
  std::string_view file = {};
};

/// Resolves a request path (without query string). Segments match exactly
/// (case-sensitive); one trailing slash is ignored; a missing id, an empty
/// segment or an extra segment is `unmatched`.
route_match match_route(std::string_view path) noexcept;

/// The route as its template, e.g. "/api/startstream/:user_id" (for metrics).
std::string_view route_template(route r) noexcept;

/// The routes the operations port serves: probes, metrics, the operator
/// endpoints, the operator page and the API's description.
constexpr bool is_operations_route(route r) noexcept {
  return r == route::healthz || r == route::readyz || r == route::metrics
         || r == route::cluster || r == route::v2_limit
         || r == route::cluster_metrics || r == route::cluster_user
         || r == route::ui_index || r == route::ui_file
         || r == route::openapi;
}

/// The methods a route answers, as an `Allow` header value.
std::string_view allowed_methods(route r) noexcept;

/// Whether `method` is one of `allowed_methods(r)`.
bool allows_method(route r, std::string_view method) noexcept;

} // namespace videostreams
