// The operator page and the files served with it (/ui/), on both ports;
// the look-up and figures routes it reads (GET /api/cluster/users/:user_id,
// GET /api/cluster/metrics) on a single node in memory.

#include <string>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "actors/shard_map.hpp"
#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

TEST_CASE("GET /ui/ serves the operator page as HTML with a strong ETag",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port(), true);
  auto r = get(*cli, "/ui/");
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type") == "text/html; charset=utf-8");
  CHECK(r.header("Cache-Control") == "no-cache");
  CHECK(r.header("Access-Control-Allow-Origin") == "*");
  CHECK(r.header("Content-Security-Policy").find("default-src 'none'")
        != std::string::npos);
  auto etag = r.header("ETag");
  REQUIRE(etag.size() == 34);
  CHECK(etag.front() == '"');
  CHECK(etag.back() == '"');
  CHECK(r.body.rfind("<!doctype html>", 0) == 0);
  CHECK(r.body.find("<input type=\"search\"") != std::string::npos);
  CHECK(r.body.find("<link rel=\"icon\" href=\"data:") != std::string::npos);
  // The same file by name, and the same tag.
  auto named = get(*cli, "/ui/index.html");
  CHECK(named.status == 200);
  CHECK(named.body == r.body);
  CHECK(named.header("ETag") == etag);
  // No external asset: nothing is loaded from another origin.
  CHECK(r.body.find("src=\"http") == std::string::npos);
  CHECK(r.body.find("href=\"http") == std::string::npos);
}

TEST_CASE("If-None-Match with the page's tag is a 304 without a body",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port(), true);
  auto first = get(*cli, "/ui/");
  REQUIRE(first.status == 200);
  auto etag = first.header("ETag");
  for (auto inm : {etag, "W/" + etag, "\"nope\", " + etag}) {
    INFO("If-None-Match: " << inm);
    auto r = send(*cli, "GET", "/ui/", std::nullopt,
                  {{"If-None-Match", inm}});
    CHECK(r.status == 304);
    CHECK(r.body.empty());
    CHECK(r.header("ETag") == etag);
    CHECK(r.header("Cache-Control") == "no-cache");
  }
  // Counted as what they are, not as "other".
  CHECK(metric_value(scrape(*cli), R"(videostreams_http_requests_total{route="/ui/",code="304"})")
        == 3.0);
  auto stale = send(*cli, "GET", "/ui/", std::nullopt,
                    {{"If-None-Match", "\"0123456789abcdef0123456789abcdef\""}});
  CHECK(stale.status == 200);
  CHECK(stale.body == first.body);
  // The keep-alive connection is still in step: no stray bytes were sent.
  CHECK(get(*cli, "/healthz").status == 200);
}

TEST_CASE("HEAD /ui/ gives the page's headers and length without its body",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port(), true);
  auto page = get(*cli, "/ui/");
  REQUIRE(page.status == 200);
  auto head = send(*cli, "HEAD", "/ui/");
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(head.header("Content-Length") == std::to_string(page.body.size()));
  CHECK(head.header("Content-Type") == "text/html; charset=utf-8");
  CHECK(head.header("ETag") == page.header("ETag"));
  CHECK(get(*cli, "/healthz").status == 200);
}

TEST_CASE("a file that is not served is a JSON 404, other methods are 405",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (std::string method : {"GET", "HEAD", "POST", "DELETE"})
    for (std::string path : {"/ui/nothing.html", "/ui/index.htm",
                             "/ui/a/b", "/ui/../api"}) {
      INFO(method << " " << path);
      auto r = send(*cli, method, path);
      CHECK(r.status == 404);
      if (method != "HEAD") {
        CHECK(r.body == route_not_found_body);
        CHECK(r.header("Content-Type") == json_content_type);
      }
    }
  for (std::string method : {"POST", "PUT", "DELETE", "PATCH"}) {
    INFO(method);
    auto r = send(*cli, method, "/ui/");
    CHECK(r.status == 405);
    CHECK(r.body == method_not_allowed_body);
    CHECK(r.header("Allow") == "GET, HEAD, OPTIONS");
  }
  auto pre = send(*cli, "OPTIONS", "/ui/index.html");
  CHECK(pre.status == 204);
  CHECK(pre.header("Access-Control-Allow-Methods") == "GET, HEAD, OPTIONS");
}

TEST_CASE("the operations port serves the page and its routes too",
          "[blackbox]") {
  service_process svc;
  REQUIRE(svc.ops_port() > 0);
  auto api = make_client(svc.port());
  auto ops = make_client(svc.ops_port());
  auto page = get(*ops, "/ui/");
  CHECK(page.status == 200);
  CHECK(page.body == get(*api, "/ui/").body);
  CHECK(get(*ops, "/api/cluster/metrics").status == 200);
  CHECK(get(*ops, "/api/cluster/users/7").status == 200);
  // The players' routes stay off it.
  CHECK(get(*ops, "/api/v2/users/7/streams").status == 404);
}

TEST_CASE("GET /api/cluster/users/:user_id: shard, owner and sessions",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  REQUIRE(send(*cli, "POST", "/api/v2/users/77/streams",
               std::string{R"({"sessionId":"tv-1"})"})
            .status
          == 201);
  REQUIRE(get(*cli, "/api/startstream/77").status == 200);
  auto r = get(*cli, "/api/cluster/users/077");
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type") == json_content_type);
  auto body = json::parse(r.body).as_object();
  auto cluster = json::parse(get(*cli, "/api/cluster").body).as_object();
  auto shard = videostreams::shard_of(77, 128);
  CHECK(body.at("userId") == 77);
  CHECK(body.at("shard") == shard);
  CHECK(body.at("shardCount") == 128);
  CHECK(body.at("owner") == cluster.at("nodeId"));
  CHECK(body.at("state") == "serving");
  auto& streams = body.at("streams").as_object();
  CHECK(streams.at("streamCount") == 2);
  auto& sessions = streams.at("sessions").as_array();
  REQUIRE(sessions.size() == 2);
  CHECK(sessions[0].at("sessionId") == "tv-1");
  CHECK(sessions[1].at("sessionId").is_null());
  auto bad = get(*cli, "/api/cluster/users/abc");
  CHECK(bad.status == 400);
  CHECK(json::parse(bad.body).at("field") == "user_id");
}

TEST_CASE("GET /api/cluster/metrics shows this node's figures", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (int u = 1; u <= 3; ++u)
    REQUIRE(get(*cli, "/api/startstream/" + std::to_string(u)).status == 200);
  json::object self;
  // A collection is reused for a second: wait for one that counts them.
  REQUIRE(eventually([&] {
    auto r = get(*cli, "/api/cluster/metrics");
    if (r.status != 200)
      return false;
    auto body = json::parse(r.body).as_object();
    auto& members = body.at("members").as_array();
    if (members.size() != 1)
      return false;
    self = members[0].as_object();
    return self.at("openStreams") == 3;
  }));
  CHECK(self.at("reachable") == true);
  CHECK(self.at("grants") == 3);
  CHECK(self.at("userRequests") == 3);
  CHECK(self.at("requests").as_int64() >= 3);
  CHECK(self.at("serverErrors") == 0);
}

TEST_CASE("with an admin token the page is open and its data is not",
          "[blackbox]") {
  service_process svc{{"--admin-token=s3cret"}};
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/ui/").status == 200);
  for (std::string path : {"/api/cluster", "/api/cluster/metrics",
                           "/api/cluster/users/7"}) {
    INFO(path);
    auto r = get(*cli, path);
    CHECK(r.status == 401);
    CHECK(r.header("WWW-Authenticate") == "Bearer");
    CHECK(send(*cli, "GET", path, std::nullopt,
               {{"Authorization", "Bearer s3cret"}})
            .status
          == 200);
  }
}
