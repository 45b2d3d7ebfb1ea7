#include "http/routes.hpp"

#include <array>

namespace videostreams {

route_match match_route(std::string_view path) noexcept {
  // Like Express's default (non-strict) routing, one trailing slash is
  // ignored. Any empty segment ("//", or a missing id) matches nothing.
  if (path.size() > 1 && path.back() == '/')
    path.remove_suffix(1);
  if (path.size() < 2 || path.front() != '/')
    return {};
  std::array<std::string_view, 6> seg;
  std::size_t n = 0;
  for (auto rest = path.substr(1);;) {
    if (n == seg.size())
      return {}; // more segments than any route has
    auto slash = rest.find('/');
    seg[n] = rest.substr(0, slash);
    if (seg[n].empty())
      return {};
    ++n;
    if (slash == std::string_view::npos)
      break;
    rest.remove_prefix(slash + 1);
  }
  if (n == 1) {
    if (seg[0] == "api")
      return {route::api_index, {}, {}};
    if (seg[0] == "healthz")
      return {route::healthz, {}, {}};
    if (seg[0] == "readyz")
      return {route::readyz, {}, {}};
    if (seg[0] == "metrics")
      return {route::metrics, {}, {}};
    if (seg[0] == "ui")
      return {route::ui_index, {}, {}};
    return {};
  }
  if (n == 2 && seg[0] == "ui")
    return {route::ui_file, {}, {}, seg[1]};
  if (n == 2 && seg[0] == "api" && seg[1] == "cluster")
    return {route::cluster, {}, {}};
  if (n == 2 && seg[0] == "api" && seg[1] == "openapi.json")
    return {route::openapi, {}, {}};
  if (n == 3 && seg[0] == "api" && seg[1] == "cluster" && seg[2] == "metrics")
    return {route::cluster_metrics, {}, {}};
  if (n == 4 && seg[0] == "api" && seg[1] == "cluster" && seg[2] == "users")
    return {route::cluster_user, seg[3], {}};
  if (n == 3 && seg[0] == "api") {
    if (seg[1] == "startstream")
      return {route::startstream, seg[2], {}};
    if (seg[1] == "endstream")
      return {route::endstream, seg[2], {}};
    return {};
  }
  if (n >= 5 && seg[0] == "api" && seg[1] == "v2" && seg[2] == "users") {
    if (n == 5 && seg[4] == "streams")
      return {route::v2_streams, seg[3], {}};
    if (n == 6 && seg[4] == "streams")
      return {route::v2_stream, seg[3], seg[5]};
    if (n == 5 && seg[4] == "limit")
      return {route::v2_limit, seg[3], {}};
  }
  return {};
}

std::string_view route_template(route r) noexcept {
  switch (r) {
    case route::api_index:
      return "/api";
    case route::startstream:
      return "/api/startstream/:user_id";
    case route::endstream:
      return "/api/endstream/:user_id";
    case route::healthz:
      return "/healthz";
    case route::readyz:
      return "/readyz";
    case route::metrics:
      return "/metrics";
    case route::v2_streams:
      return "/api/v2/users/:user_id/streams";
    case route::v2_stream:
      return "/api/v2/users/:user_id/streams/:session_id";
    case route::v2_limit:
      return "/api/v2/users/:user_id/limit";
    case route::cluster:
      return "/api/cluster";
    case route::cluster_metrics:
      return "/api/cluster/metrics";
    case route::cluster_user:
      return "/api/cluster/users/:user_id";
    case route::ui_index:
      return "/ui/";
    case route::ui_file:
      return "/ui/:file";
    case route::openapi:
      return "/api/openapi.json";
    case route::unmatched:
      break;
  }
  return "unmatched";
}

std::string_view allowed_methods(route r) noexcept {
  switch (r) {
    case route::startstream:
    case route::endstream:
      // HEAD would run a GET that changes state; only GET may.
      return "GET, OPTIONS";
    case route::v2_streams:
      return "GET, HEAD, POST, OPTIONS";
    case route::v2_stream:
    case route::v2_limit:
      return "PUT, DELETE, OPTIONS";
    case route::unmatched:
      return "";
    default:
      return "GET, HEAD, OPTIONS";
  }
}

bool allows_method(route r, std::string_view method) noexcept {
  auto list = allowed_methods(r);
  while (!list.empty()) {
    auto comma = list.find(", ");
    if (list.substr(0, comma) == method)
      return true;
    list = comma == std::string_view::npos ? std::string_view{}
                                           : list.substr(comma + 2);
  }
  return false;
}

} // namespace videostreams
