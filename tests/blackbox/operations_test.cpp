// docs/api.md, "Operations": health, readiness, metrics; and passivation
// seen from outside.

#include <string>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

namespace {

constexpr const char* startstream_200
  = R"(videostreams_http_requests_total{route="/api/startstream/:user_id",code="200"})";
constexpr const char* startstream_400
  = R"(videostreams_http_requests_total{route="/api/startstream/:user_id",code="400"})";
constexpr const char* endstream_200
  = R"(videostreams_http_requests_total{route="/api/endstream/:user_id",code="200"})";
constexpr const char* startstream_latency_count
  = R"(videostreams_http_request_duration_seconds_count{route="/api/startstream/:user_id"})";

std::string must_get(httplib::Client& cli, const std::string& path) {
  auto r = get(cli, path);
  INFO("GET " << path << " -> " << r.status << " " << r.error);
  REQUIRE(r.status == 200);
  return r.body;
}

/// Whether some request counter with status `code` is present and counts n.
bool has_request_count(const std::string& text, const std::string& code,
                       double n) {
  std::string prefix = "videostreams_http_requests_total{";
  std::string label = "code=\"" + code + "\"}";
  std::size_t at = 0;
  while ((at = text.find(prefix, at)) != std::string::npos) {
    auto eol = text.find('\n', at);
    auto line = text.substr(at, eol - at);
    auto close = line.find("} ");
    if (close != std::string::npos && line.find(label) != std::string::npos
        && metric_value(line, line.substr(0, close + 1)) == n)
      return true;
    at = eol;
  }
  return false;
}

} // namespace

TEST_CASE("GET /healthz answers 200 while the process runs", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto r = get(*cli, "/healthz");
  CHECK(r.status == 200);
  CHECK(r.header("Content-Type") == json_content_type);
}

TEST_CASE("GET /readyz answers 200 ready with database none", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto r = get(*cli, "/readyz");
  CHECK(r.status == 200);
  CHECK(r.body == R"({"status":"ready","database":"none"})");
  CHECK(r.header("Content-Type") == json_content_type);
}

TEST_CASE("the start line says the service runs in memory", "[blackbox]") {
  service_process svc;
  CHECK(svc.stderr_text().find("in-memory") != std::string::npos);
}

TEST_CASE("in memory, GET /api/cluster shows this node alone, on the HTTP "
          "port it bound, owning every shard at epoch 0",
          "[blackbox]") {
  service_process svc; // --port=0: the kernel picks the port
  auto cli = make_client(svc.port());
  auto body = json::parse(must_get(*cli, "/api/cluster")).as_object();
  auto& members = body.at("members").as_array();
  REQUIRE(members.size() == 1);
  auto& me = members[0].as_object();
  CHECK(me.at("nodeId") == body.at("nodeId"));
  CHECK(me.at("httpPort") == svc.port());
  CHECK(me.at("status") == "up");
  CHECK(me.at("shards") == 128);
  auto& shards = body.at("shards").as_array();
  REQUIRE(shards.size() == 128);
  for (auto& s : shards) {
    CHECK(s.at("owner") == body.at("nodeId"));
    CHECK(s.at("epoch") == 0);
    CHECK(s.at("state") == "serving");
  }
}

TEST_CASE("GET /metrics exposes the documented series in Prometheus text",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  // One request on the stream route, so that its counter has a sample.
  must_get(*cli, "/api/startstream/1");
  auto r = get(*cli, "/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type").rfind("text/plain", 0) == 0);
  CHECK(r.header("Access-Control-Allow-Origin") == "*");
  auto& text = r.body;
  CHECK(metric_value(text, startstream_200) == 1);
  for (auto& name :
       {"videostreams_http_requests_total", "videostreams_open_streams",
        "videostreams_live_user_actors", "videostreams_stream_grants_total",
        "videostreams_stream_denials_total"}) {
    INFO(name);
    CHECK(text.find(std::string{"# TYPE "} + name + " ") != std::string::npos);
  }
  CHECK(text.find("# TYPE videostreams_http_request_duration_seconds "
                  "histogram")
        != std::string::npos);
  CHECK(metric_value(text, startstream_latency_count) == 1);
  CHECK(metric_value(text, "videostreams_open_streams").has_value());
  CHECK(metric_value(text, "videostreams_live_user_actors").has_value());
  CHECK(metric_value(text, "videostreams_stream_grants_total").has_value());
  CHECK(metric_value(text, "videostreams_stream_denials_total").has_value());
}

TEST_CASE("GET /metrics figures follow the requests made", "[blackbox]") {
  service_process svc{{"--max-streams=2"}};
  auto cli = make_client(svc.port());
  auto text = scrape(*cli);
  REQUIRE_FALSE(text.empty());
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 0);
  CHECK(metric_value(text, "videostreams_stream_denials_total") == 0);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
  CHECK(metric_value(text, "videostreams_live_user_actors") == 0);
  // Shown from the start, at 0 (every family has a sample).
  CHECK(metric_value(text, startstream_200) == 0);

  // User 1: two grants and one denial; user 2: one grant.
  CHECK(must_get(*cli, "/api/startstream/1") == granted_body(1));
  CHECK(must_get(*cli, "/api/startstream/1") == granted_body(2));
  CHECK(must_get(*cli, "/api/startstream/1") == denied_body(2));
  CHECK(must_get(*cli, "/api/startstream/2") == granted_body(1));
  text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 3);
  CHECK(metric_value(text, "videostreams_stream_denials_total") == 1);
  CHECK(metric_value(text, "videostreams_open_streams") == 3);
  CHECK(metric_value(text, "videostreams_live_user_actors") == 2);
  CHECK(metric_value(text, startstream_200) == 4);
  CHECK(metric_value(text, startstream_latency_count) == 4);

  // A close, a close with nothing to close, a bad id and an unknown path.
  CHECK(must_get(*cli, "/api/endstream/1") == closed_body(1));
  CHECK(get(*cli, "/api/endstream/3").body == unknown_user_body());
  CHECK(get(*cli, "/api/startstream/x").status == 400);
  CHECK(get(*cli, "/nope").status == 404);
  CHECK(send(*cli, "POST", "/api").status == 405);
  text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_open_streams") == 2);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 3);
  CHECK(metric_value(text, endstream_200) == 1);
  CHECK(metric_value(text, R"(videostreams_http_requests_total{route="/api/endstream/:user_id",code="400"})")
        == 1); // endstream for user 3, unknown
  CHECK(metric_value(text, startstream_400) == 1);
  CHECK(metric_value(text, startstream_latency_count) == 5);
  CHECK(has_request_count(text, "404", 1));
  CHECK(has_request_count(text, "405", 1));
}

TEST_CASE("a passivated user keeps its open streams", "[blackbox]") {
  service_process svc{{"--passivate-after=50ms"}};
  auto cli = make_client(svc.port());
  CHECK(must_get(*cli, "/api/startstream/77") == granted_body(1));
  CHECK(must_get(*cli, "/api/startstream/77") == granted_body(2));
  std::string text;
  // Scraping /metrics does not touch user actors, so polling it is safe.
  auto passivated = eventually([&] {
    text = scrape(*cli);
    return metric_value(text, "videostreams_live_user_actors") == 0
           && metric_value(text, "videostreams_passive_user_records") == 1;
  });
  INFO(text);
  REQUIRE(passivated);
  CHECK(metric_value(text, "videostreams_open_streams") == 2);
  // Activation restores the two streams: one more is granted, then denied.
  CHECK(must_get(*cli, "/api/startstream/77") == granted_body(3));
  CHECK(must_get(*cli, "/api/startstream/77") == denied_body(3));
  // A second actor served them (whether it has passivated again by the
  // time of this scrape depends on the scheduler: 50 ms is short).
  text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_user_activations_total") == 2);
}

TEST_CASE("a user with no open stream leaves no record when passivated",
          "[blackbox]") {
  service_process svc{{"--passivate-after=50ms"}};
  auto cli = make_client(svc.port());
  CHECK(must_get(*cli, "/api/startstream/78") == granted_body(1));
  CHECK(must_get(*cli, "/api/endstream/78") == closed_body(0));
  CHECK(get(*cli, "/api/endstream/79").body == unknown_user_body());
  std::string text;
  auto passivated = eventually([&] {
    text = scrape(*cli);
    return metric_value(text, "videostreams_live_user_actors") == 0;
  });
  INFO(text);
  REQUIRE(passivated);
  CHECK(metric_value(text, "videostreams_passive_user_records") == 0);
  CHECK(must_get(*cli, "/api/startstream/78") == granted_body(1));
}
