// DESIGN §2: what every answer carries (CORS, Content-Type) and the CORS
// preflight.

#include <string>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

namespace {

struct probe {
  std::string method;
  std::string path;
  int expected_status;
};

/// One request of every kind of answer the API gives on its own.
const std::vector<probe>& every_kind_of_answer() {
  static const std::vector<probe> probes{
    {"GET", "/api", 200},
    {"GET", "/api/startstream/1", 200},
    {"GET", "/api/endstream/1", 200},
    {"GET", "/api/endstream/1", 200},
    {"GET", "/healthz", 200},
    {"GET", "/readyz", 200},
    {"GET", "/metrics", 200},
    {"HEAD", "/api", 200},
    {"OPTIONS", "/api/startstream/1", 204},
    {"OPTIONS", "/api", 204},
    {"GET", "/api/startstream/abc", 400},
    {"GET", "/api/endstream/-1", 400},
    {"GET", "/nope", 404},
    {"POST", "/nope", 404},
    {"OPTIONS", "/nope", 404},
    {"GET", "/api/startstream", 404},
    {"POST", "/api/startstream/1", 405},
    {"DELETE", "/api", 405},
    {"HEAD", "/api/startstream/1", 405},
  };
  return probes;
}

} // namespace

TEST_CASE("every answer carries the CORS header Access-Control-Allow-Origin",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (auto& p : every_kind_of_answer()) {
    INFO(p.method << " " << p.path);
    auto r = send(*cli, p.method, p.path);
    REQUIRE(r.status == p.expected_status);
    CHECK(r.header("Access-Control-Allow-Origin") == "*");
  }
}

TEST_CASE("JSON answers carry Content-Type application/json with charset utf-8",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (auto& p : every_kind_of_answer()) {
    if (p.method == "HEAD" || p.method == "OPTIONS" || p.path == "/metrics")
      continue;
    INFO(p.method << " " << p.path);
    auto r = send(*cli, p.method, p.path);
    REQUIRE(r.status == p.expected_status);
    CHECK(r.header("Content-Type") == json_content_type);
    json::error_code ec;
    json::parse(r.body, ec);
    INFO("body: " << r.body);
    CHECK_FALSE(ec);
  }
}

TEST_CASE("OPTIONS on a known route answers the CORS preflight with 204",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (auto& path : {"/api", "/api/startstream/1", "/api/endstream/1",
                     "/healthz", "/readyz", "/metrics"}) {
    INFO("OPTIONS " << path);
    auto r = send(*cli, "OPTIONS", path);
    CHECK(r.status == 204);
    CHECK(r.body.empty());
    CHECK(r.header("Access-Control-Allow-Origin") == "*");
    auto methods = r.header("Access-Control-Allow-Methods");
    CHECK(methods.find("GET") != std::string::npos);
    CHECK(methods.find("POST") == std::string::npos);
  }
  // A preflight on startstream is not a start.
  auto r = get(*cli, "/api/startstream/1");
  CHECK(r.body == granted_body(1));
}

TEST_CASE("OPTIONS on an unknown path is a 404", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (auto& path : {"/nope", "/api/startstream", "/api/startstream/1/x",
                     "/"}) {
    INFO("OPTIONS " << path);
    auto r = send(*cli, "OPTIONS", path);
    CHECK(r.status == 404);
    CHECK(r.body == route_not_found_body);
    CHECK(r.header("Access-Control-Allow-Origin") == "*");
    CHECK_FALSE(r.has_header("Access-Control-Allow-Methods"));
  }
}
