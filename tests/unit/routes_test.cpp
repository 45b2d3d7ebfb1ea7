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
                    "/api/startstream/1//"}) {
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
