#include "http/routes.hpp"

#include <catch2/catch.hpp>

using namespace videostreams;

TEST_CASE("known paths resolve to their route and id segment", "[unit]") {
  CHECK(match_route("/api").which == route::api_index);
  CHECK(match_route("/api/").which == route::api_index);
  CHECK(match_route("/healthz").which == route::healthz);
  CHECK(match_route("/readyz").which == route::readyz);
  CHECK(match_route("/metrics").which == route::metrics);
  auto start = match_route("/api/startstream/007");
  CHECK(start.which == route::startstream);
  CHECK(start.user_id == "007");
  auto end = match_route("/api/endstream/abc/");
  CHECK(end.which == route::endstream);
  CHECK(end.user_id == "abc"); // a bad id is the handler's 400, not a 404
}

TEST_CASE("paths that match no route are unmatched", "[unit]") {
  for (auto path : {"", "/", "//", "api", "/API", "/apix", "/api//",
                    "/api/startstream", "/api/startstream/",
                    "/api/startstream//", "/api/startstream/1/x",
                    "/api/startstream//1", "/api/stopstream/1", "/healthz/x",
                    "/api/startstream/1//", "xapi", "xapi/startstream/1"}) {
    INFO("path: '" << path << "'");
    CHECK(match_route(path).which == route::unmatched);
  }
}

TEST_CASE("state-changing routes do not allow HEAD", "[unit]") {
  CHECK(allowed_methods(route::startstream) == "GET, OPTIONS");
  CHECK(allowed_methods(route::endstream) == "GET, OPTIONS");
  CHECK(allowed_methods(route::api_index) == "GET, HEAD, OPTIONS");
  CHECK(route_template(route::startstream) == "/api/startstream/:user_id");
}

TEST_CASE("v2 paths resolve with their parameters", "[unit]") {
  auto list = match_route("/api/v2/users/42/streams");
  CHECK(list.which == route::v2_streams);
  CHECK(list.user_id == "42");
  auto one = match_route("/api/v2/users/42/streams/tv-1");
  CHECK(one.which == route::v2_stream);
  CHECK(one.session_id == "tv-1");
  CHECK(match_route("/api/v2/users/42/limit").which == route::v2_limit);
  for (auto path : {"/api/v2/users/42", "/api/v2/users/42/streams/a/b",
                    "/api/v2/users//streams", "/api/v2/user/42/streams",
                    "/api/v3/users/42/streams", "/api/v2/users/42/limits",
                    "/api/v2/users/42/limit/x"}) {
    INFO(path);
    CHECK(match_route(path).which == route::unmatched);
  }
  CHECK(allowed_methods(route::v2_streams) == "GET, HEAD, POST, OPTIONS");
  CHECK(allowed_methods(route::v2_stream) == "PUT, DELETE, OPTIONS");
}

TEST_CASE("the operator page's paths resolve, on both ports", "[unit]") {
  CHECK(match_route("/ui/").which == route::ui_index);
  CHECK(match_route("/ui").which == route::ui_index);
  auto file = match_route("/ui/index.html");
  CHECK(file.which == route::ui_file);
  CHECK(file.file == "index.html");
  CHECK(match_route("/ui/player.html/").file == "player.html");
  CHECK(match_route("/api/cluster/metrics").which == route::cluster_metrics);
  CHECK(match_route("/api/openapi.json").which == route::openapi);
  CHECK(match_route("/api/openapi.json/").which == route::openapi);
  auto user = match_route("/api/cluster/users/42");
  CHECK(user.which == route::cluster_user);
  CHECK(user.user_id == "42");
  for (auto path : {"/ui//", "/ui/a/b", "/UI/", "/api/cluster/users",
                    "/api/cluster/users/1/x", "/api/cluster/metric",
                    "/api/cluster/metrics/x", "/api/ui/",
                    "/api/openapi", "/openapi.json", "/api/openapi.json/x"}) {
    INFO(path);
    CHECK(match_route(path).which == route::unmatched);
  }
  for (auto r : {route::ui_index, route::ui_file, route::cluster_metrics,
                 route::cluster_user, route::openapi}) {
    INFO(route_template(r));
    CHECK(is_operations_route(r));
    CHECK(allowed_methods(r) == "GET, HEAD, OPTIONS");
  }
  CHECK(route_template(route::ui_index) == "/ui/");
  CHECK(route_template(route::ui_file) == "/ui/:file");
  CHECK(route_template(route::cluster_metrics) == "/api/cluster/metrics");
  CHECK(route_template(route::cluster_user) == "/api/cluster/users/:user_id");
  CHECK(route_template(route::openapi) == "/api/openapi.json");
}
