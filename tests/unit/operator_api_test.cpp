// The operator page's routes through the API: the served files (/ui/ and
// their 304s), the user look-up and the members' figures
// (`GET /api/cluster/users/:user_id`, `GET /api/cluster/metrics`).

#include "http/api.hpp"

#include <catch2/catch.hpp>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/send.hpp"

#include <boost/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "actors/message_types.hpp"
#include "actors/shard_actor.hpp"
#include "actors/shard_map.hpp"
#include "cluster/cluster_view.hpp"
#include "http/member_metrics.hpp"
#include "http/served_files.hpp"

#include "api_fixture.hpp"

using namespace videostreams;
using namespace videostreams::testing;
namespace json = boost::json;

namespace {

constexpr std::uint32_t shards = api_fixture::shard_count;

/// Four shards, 0 and 2 owned by n1 (this node), 1 by n2, 3 by nobody.
std::shared_ptr<cluster_view_box> cluster_of_two(int n2_port = 0) {
  auto view = std::make_shared<cluster_view>();
  view->node_id = "n1";
  view->shard_count = shards;
  view->members.push_back(member_view{"n1", "127.0.0.1", 8080, 4370, "up", 2,
                                      "2026-11-28T17:00:00.120Z"});
  view->members.push_back(member_view{"n2", "", n2_port, 4371, "up", 1,
                                      "2026-11-28T17:00:01.000Z"});
  view->shards.push_back(shard_view{0, "n1", 7, "serving"});
  view->shards.push_back(shard_view{1, "n2", 3, "loading"});
  view->shards.push_back(shard_view{2, "n1", 8, "handing-off"});
  view->shards.push_back(shard_view{3, "", 2, "unowned"});
  auto box = std::make_shared<cluster_view_box>();
  box->set(std::move(view));
  return box;
}

/// The API over four local shard actors, in the cluster of two above.
struct operator_fixture : api_fixture {
  explicit operator_fixture(std::string admin_token = {})
    : api_fixture(owners::deciding, std::move(admin_token), cluster_of_two()) {
    // Nothing else to do.
  }

  api_response send(std::string_view method, std::string_view path,
                    std::string_view if_none_match = {},
                    std::string_view authorization = {},
                    std::string_view body = {}) {
    return handle(
      api_request{method, path, body, authorization, if_none_match});
  }
};

bool has_header(const api_response& res, std::string_view name) {
  for (auto& kv : res.headers)
    if (kv.first == name)
      return true;
  return false;
}

} // namespace

TEST_CASE("GET /ui/ answers the operator page with its ETag", "[unit]") {
  operator_fixture f;
  auto* page = served_files.find("/ui/index.html");
  REQUIRE(page != nullptr);
  for (std::string_view path : {"/ui/", "/ui", "/ui/index.html"}) {
    INFO(path);
    auto res = f.send("GET", path);
    CHECK(res.status == 200);
    CHECK(res.content_type == "text/html; charset=utf-8");
    CHECK(res.body == page->body);
    CHECK(header(res, "ETag") == page->etag);
    CHECK(header(res, "Cache-Control") == "no-cache");
    CHECK(header(res, "X-Content-Type-Options") == "nosniff");
    CHECK(header(res, "Content-Security-Policy").find("default-src 'none'")
          != std::string::npos);
  }
  CHECK(f.metrics.requests(route::ui_index, 200) == 2);
  CHECK(f.metrics.requests(route::ui_file, 200) == 1);
  // HEAD is answered like GET; the HTTP library sends no body.
  CHECK(f.send("HEAD", "/ui/").status == 200);
}

TEST_CASE("a served file is a 304 when If-None-Match names its tag",
          "[unit]") {
  operator_fixture f;
  auto etag = std::string{served_files.find("/ui/index.html")->etag};
  for (std::string inm : {etag, "W/" + etag, "\"other\", " + etag,
                          std::string{"*"}}) {
    INFO("If-None-Match: " << inm);
    auto res = f.send("GET", "/ui/", inm);
    CHECK(res.status == 304);
    CHECK(res.body.empty());
    CHECK(header(res, "ETag") == etag);
    CHECK(header(res, "Cache-Control") == "no-cache");
    CHECK(f.send("HEAD", "/ui/", inm).status == 304);
  }
  for (std::string inm : {std::string{"\"other\""}, etag.substr(1),
                          etag + "x"}) {
    INFO("If-None-Match: " << inm);
    auto res = f.send("GET", "/ui/", inm);
    CHECK(res.status == 200);
    CHECK(!res.body.empty());
  }
}

TEST_CASE("a file that is not served is a 404 for every method", "[unit]") {
  operator_fixture f;
  for (std::string_view method : {"GET", "HEAD", "POST", "OPTIONS", "PUT"})
    for (std::string_view path :
         {"/ui/nothing.html", "/ui/index.htm", "/ui/INDEX.HTML", "/ui/a/b",
          "/ui/index.html/x", "/ui//"}) {
      INFO(method << " " << path);
      auto res = f.send(method, path);
      CHECK(res.status == 404);
      CHECK(res.body == R"({"msg":"Route not found"})");
      CHECK(res.content_type == "application/json; charset=utf-8");
    }
}

TEST_CASE("a served file takes GET and HEAD: another method is a 405",
          "[unit]") {
  operator_fixture f;
  for (std::string_view method : {"POST", "PUT", "DELETE", "PATCH", "get"}) {
    INFO(method);
    auto res = f.send(method, "/ui/");
    CHECK(res.status == 405);
    CHECK(res.body == R"({"msg":"Method not allowed"})");
    CHECK(header(res, "Allow") == "GET, HEAD, OPTIONS");
    CHECK_FALSE(has_header(res, "ETag"));
  }
  auto pre = f.send("OPTIONS", "/ui/index.html");
  CHECK(pre.status == 204);
  CHECK(header(pre, "Access-Control-Allow-Methods") == "GET, HEAD, OPTIONS");
}

TEST_CASE("GET /api/cluster/users/:user_id gives the shard, its owner and "
          "the user's sessions",
          "[unit]") {
  operator_fixture f;
  // One user on each kind of shard.
  std::uint64_t user_on[shards] = {};
  for (std::uint64_t u = 1; u < 1000; ++u)
    if (user_on[shard_of(u, shards)] == 0)
      user_on[shard_of(u, shards)] = u;
  auto base = "/api/v2/users/" + std::to_string(user_on[0]) + "/streams";
  REQUIRE(f.send("POST", base, {}, {}, R"({"sessionId":"tv-1"})").status
          == 201);
  REQUIRE(f.send("GET", "/api/startstream/" + std::to_string(user_on[0]))
            .status
          == 200);

  auto res = f.send("GET", "/api/cluster/users/" + std::to_string(user_on[0]));
  REQUIRE(res.status == 200);
  auto body = json::parse(res.body).as_object();
  CHECK(body.at("userId") == static_cast<std::int64_t>(user_on[0]));
  CHECK(body.at("shard") == 0);
  CHECK(body.at("shardCount") == shards);
  CHECK(body.at("owner") == "n1");
  CHECK(body.at("epoch") == 7);
  CHECK(body.at("state") == "serving");
  auto& streams = body.at("streams").as_object();
  CHECK(streams.at("streamCount") == 2);
  CHECK(streams.at("maxStreams") == 3);
  auto& sessions = streams.at("sessions").as_array();
  REQUIRE(sessions.size() == 2);
  CHECK(sessions[0].at("sessionId") == "tv-1");
  CHECK(sessions[1].at("sessionId").is_null());

  auto other = json::parse(
                 f.send("GET", "/api/cluster/users/"
                                 + std::to_string(user_on[1]))
                   .body)
                 .as_object();
  CHECK(other.at("owner") == "n2");
  CHECK(other.at("state") == "loading");
  CHECK(other.at("streams").at("streamCount") == 0);
  auto nobody = json::parse(
                  f.send("GET", "/api/cluster/users/"
                                  + std::to_string(user_on[3]))
                    .body)
                  .as_object();
  CHECK(nobody.at("owner").is_null());
  CHECK(nobody.at("state") == "unowned");
  // 007 is user 7, as everywhere.
  auto seven = json::parse(f.send("GET", "/api/cluster/users/007").body);
  CHECK(seven.at("userId") == 7);
  CHECK(seven.at("shard") == shard_of(7, shards));
}

TEST_CASE("a bad user id in a look-up is a 400 naming it", "[unit]") {
  operator_fixture f;
  for (std::string_view id : {"abc", "-1", "9223372036854775808", "1.5"}) {
    INFO(id);
    auto res = f.send("GET", "/api/cluster/users/" + std::string{id});
    CHECK(res.status == 400);
    CHECK(json::parse(res.body).at("field") == "user_id");
  }
  CHECK(f.send("POST", "/api/cluster/users/7").status == 405);
  CHECK(f.send("GET", "/api/cluster/users").status == 404);
  CHECK(f.send("GET", "/api/cluster/users/7/x").status == 404);
}

TEST_CASE("the operator routes need the admin token when one is set",
          "[unit]") {
  operator_fixture f{"s3cret"};
  for (std::string_view path : {"/api/cluster/metrics", "/api/cluster/users/7"}) {
    INFO(path);
    for (std::string_view auth : {"", "Bearer nope", "s3cret"}) {
      auto res = f.send("GET", path, {}, auth);
      CHECK(res.status == 401);
      CHECK(header(res, "WWW-Authenticate") == "Bearer");
    }
    CHECK(f.send("GET", path, {}, "Bearer s3cret").status == 200);
  }
  // The page itself is public: it asks for the token.
  CHECK(f.send("GET", "/ui/").status == 200);
}

TEST_CASE("GET /api/cluster/metrics lists every member, this node's figures "
          "read from its own exposition",
          "[unit]") {
  operator_fixture f;
  REQUIRE(f.send("GET", "/api/startstream/1").status == 200);
  REQUIRE(f.send("GET", "/api/startstream/2").status == 200);
  auto res = f.send("GET", "/api/cluster/metrics");
  REQUIRE(res.status == 200);
  CHECK(res.content_type == "application/json; charset=utf-8");
  auto body = json::parse(res.body).as_object();
  CHECK(body.at("nodeId") == "n1");
  CHECK(body.at("collectedAt").as_string().size() == 24);
  auto& members = body.at("members").as_array();
  REQUIRE(members.size() == 2);
  auto& self = members[0].as_object();
  CHECK(self.at("nodeId") == "n1");
  CHECK(self.at("reachable") == true);
  CHECK(self.at("openStreams") == 2);
  CHECK(self.at("grants") == 2);
  CHECK(self.at("denials") == 0);
  CHECK(self.at("userRequests") == 2);
  CHECK(self.at("requests").as_int64() >= 2);
  CHECK(self.at("serverErrors") == 0);
  // n2 has no HTTP port: listed as unreachable, with the reason.
  auto& n2 = members[1].as_object();
  CHECK(n2.at("nodeId") == "n2");
  CHECK(n2.at("reachable") == false);
  CHECK(n2.at("error") == "no HTTP address known");
}

TEST_CASE("a member's figures are read from any Prometheus exposition",
          "[unit]") {
  auto f = read_member_figures(
    "# HELP videostreams_open_streams Streams open.\n"
    "# TYPE videostreams_open_streams gauge\n"
    "videostreams_open_streams 12\n"
    "videostreams_live_user_actors 5\n"
    "videostreams_stream_grants_total 40 1700000000000\n"
    "videostreams_stream_denials_total 3\n"
    "videostreams_http_requests_total{route=\"/api/startstream/:user_id\","
    "code=\"200\"} 30\n"
    "videostreams_http_requests_total{listener=\"api\",code=\"503\","
    "route=\"/api/v2/users/:user_id/streams\"} 2\n"
    "videostreams_http_requests_total{route=\"/metrics\",code=\"200\"} 7\n"
    "videostreams_http_requests_total{route=\"a \\\"}\\\" b\",code=\"500\"} "
    "1\n"
    "videostreams_http_requests_total_bucket{route=\"/metrics\"} 99\n"
    "videostreams_open_streams_other 1000\n"
    "garbage line\n");
  REQUIRE(f);
  CHECK(f->open_streams == 12);
  CHECK(f->live_user_actors == 5);
  CHECK(f->grants == 40);
  CHECK(f->denials == 3);
  CHECK(f->requests == 40);
  CHECK(f->user_requests == 32);
  CHECK(f->server_errors == 3);
  CHECK_FALSE(read_member_figures("up 1\nother_metric 2\n"));
  CHECK_FALSE(read_member_figures(""));
}

TEST_CASE("a member's user requests count every user route of both APIs, "
          "its server errors only the 5xx codes",
          "[unit]") {
  auto f = read_member_figures(
    "videostreams_open_streams 0\n"
    "videostreams_http_requests_total{route=\"/api/startstream/:user_id\","
    "code=\"200\"} 1\n"
    "videostreams_http_requests_total{route=\"/api/endstream/:user_id\","
    "code=\"200\"} 2\n"
    "videostreams_http_requests_total{route=\"/api/v2/users/:user_id/"
    "streams\",code=\"201\"} 4\n"
    "videostreams_http_requests_total{route=\"/api/v2/users/:user_id/"
    "streams/:session_id\",code=\"204\"} 8\n"
    "videostreams_http_requests_total{route=\"/api/v2/users/:user_id/"
    "limit\",code=\"401\"} 16\n"
    "videostreams_http_requests_total{route=\"/api/v2/users/:user_id/"
    "streams/:session_id\",code=\"404\"} 32\n"
    "videostreams_http_requests_total{route=\"/metrics\",code=\"503\"} 64\n");
  REQUIRE(f);
  CHECK(f->requests == 127);
  CHECK(f->user_requests == 1 + 2 + 4 + 8 + 32);
  CHECK(f->server_errors == 64);
}

namespace {

/// A member that gives no HTTP address: listed without a scrape.
member_view addressless(const std::string& id) {
  member_view m;
  m.node_id = id;
  m.status = "up";
  return m;
}

std::string own_exposition(int open) {
  return "videostreams_open_streams " + std::to_string(open) + "\n";
}

} // namespace

TEST_CASE("the members' figures: at most max_members are asked, the rest "
          "listed as not asked",
          "[unit]") {
  member_metrics_settings settings;
  settings.max_members = 2;
  member_metrics_collector collector{settings, [] { return own_exposition(3); }};
  cluster_view view;
  view.node_id = "n1";
  view.members = {addressless("n1"), addressless("n2"), addressless("n3"),
                  addressless("n4")};
  auto body = json::parse(collector.collect(view)).as_object();
  auto& members = body.at("members").as_array();
  REQUIRE(members.size() == 4);
  CHECK(members[0].at("nodeId") == "n1");
  CHECK(members[0].at("openStreams") == 3);
  CHECK(members[1].at("nodeId") == "n2");
  CHECK(members[1].at("error") == "no HTTP address known");
  CHECK(members[2].at("nodeId") == "n3");
  CHECK(members[2].at("error") == "no HTTP address known");
  CHECK(members[3].at("nodeId") == "n4");
  CHECK(members[3].at("reachable") == false);
  CHECK(members[3].at("error") == "not asked: more members than 2");
}

TEST_CASE("the members' figures: a recent collection is answered again, an "
          "older one is not",
          "[unit]") {
  int open = 0;
  cluster_view view;
  view.node_id = "n1";
  view.members = {addressless("n1")};
  member_metrics_settings reuse;
  reuse.reuse_for = std::chrono::hours{1};
  member_metrics_collector kept{reuse, [&open] { return own_exposition(++open); }};
  auto first = kept.collect(view);
  CHECK(kept.collect(view) == first);
  CHECK(open == 1);
  member_metrics_settings fresh;
  fresh.reuse_for = std::chrono::milliseconds{0};
  member_metrics_collector asked{fresh,
                                 [&open] { return own_exposition(++open); }};
  auto a = json::parse(asked.collect(view)).as_object();
  auto b = json::parse(asked.collect(view)).as_object();
  CHECK(a.at("members").as_array()[0].at("openStreams") == 2);
  CHECK(b.at("members").as_array()[0].at("openStreams") == 3);
}

TEST_CASE("the members' figures list this node first when the view does not "
          "(it is leaving, or has not joined)",
          "[unit]") {
  member_metrics_collector collector{member_metrics_settings{},
                                     [] { return own_exposition(5); }};
  cluster_view view;
  view.node_id = "n1";
  view.members = {addressless("n2")};
  auto body = json::parse(collector.collect(view)).as_object();
  auto& members = body.at("members").as_array();
  REQUIRE(members.size() == 2);
  CHECK(members[0].at("nodeId") == "n1");
  CHECK(members[0].at("reachable") == true);
  CHECK(members[0].at("openStreams") == 5);
  CHECK(members[1].at("nodeId") == "n2");
  CHECK(members[1].at("reachable") == false);
}
