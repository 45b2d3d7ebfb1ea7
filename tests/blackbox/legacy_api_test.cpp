// docs/api.md, "The original API", row by row on the real binary.

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "session_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

namespace {

std::string read_file(const char* path) {
  std::ifstream in{path, std::ios::binary};
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

std::string start(httplib::Client& cli, const std::string& user) {
  auto r = get(cli, "/api/startstream/" + user);
  INFO("GET /api/startstream/" << user << " -> " << r.status << " "
                                << r.error);
  REQUIRE(r.status == 200);
  return r.body;
}

std::string end(httplib::Client& cli, const std::string& user) {
  auto r = get(cli, "/api/endstream/" + user);
  INFO("GET /api/endstream/" << user << " -> " << r.status << " " << r.error);
  REQUIRE(r.status == 200);
  return r.body;
}

/// `endstream` refused with the original's 400; returns the body.
std::string end_refused(httplib::Client& cli, const std::string& user) {
  auto r = get(cli, "/api/endstream/" + user);
  INFO("GET /api/endstream/" << user << " -> " << r.status << " " << r.error
                             << " " << r.body);
  REQUIRE(r.status == 400);
  CHECK(r.header("Content-Type") == json_content_type);
  CHECK(r.header("Access-Control-Allow-Origin") == "*");
  return r.body;
}

/// Checks a 400 for a bad id: the original's JSON, naming the field.
void check_bad_request(const reply& r) {
  CHECK(r.status == 400);
  CHECK(r.header("Content-Type") == json_content_type);
  CHECK(r.header("Access-Control-Allow-Origin") == "*");
  INFO("body: " << r.body);
  CHECK(r.body == legacy_bad_id_body());
}

} // namespace

TEST_CASE("GET /api serves endpoints.json byte for byte", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto r = get(*cli, "/api");
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type") == json_content_type);
  auto expected = read_file(VIDEOSTREAMS_ENDPOINTS_JSON);
  REQUIRE_FALSE(expected.empty());
  CHECK(r.body == expected);
  json::error_code ec;
  auto doc = json::parse(r.body, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(doc.is_object());
  auto& obj = doc.as_object();
  CHECK(obj.contains("GET /api"));
  CHECK(obj.contains("GET /api/startstream/:user_id"));
  CHECK(obj.contains("GET /api/endstream/:user_id"));
}

TEST_CASE("startstream grants up to the limit of 3 and then denies",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  CHECK(start(*cli, "42") == granted_body(1));
  CHECK(start(*cli, "42") == granted_body(2));
  CHECK(start(*cli, "42") == granted_body(3));
  CHECK(start(*cli, "42") == denied_body(3));
  // A denial takes nothing, so it can be repeated with the same answer.
  CHECK(start(*cli, "42") == denied_body(3));
}

TEST_CASE("endstream closes one stream and answers the count after closing",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (int i = 1; i <= 3; ++i)
    REQUIRE(start(*cli, "8") == granted_body(i));
  CHECK(end(*cli, "8") == closed_body(2));
  CHECK(end(*cli, "8") == closed_body(1));
  CHECK(end(*cli, "8") == closed_body(0));
  CHECK(end_refused(*cli, "8") == no_active_streams_body());
  // Closing a freed slot again frees nothing: a slot is granted again.
  CHECK(start(*cli, "8") == granted_body(1));
  CHECK(end(*cli, "8") == closed_body(0));
}

TEST_CASE("endstream on a user the service does not know is the original's "
          "400",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  CHECK(end_refused(*cli, "12345") == unknown_user_body());
  // A denied start or a listing does not make a user known.
  CHECK(get(*cli, "/api/v2/users/12346/streams").status == 200);
  CHECK(end_refused(*cli, "12346") == unknown_user_body());
}

TEST_CASE("endstream on a known user with no stream endstream may close is "
          "the original's 400, also once the user's actor is passivated",
          "[blackbox]") {
  service_process svc{{"--passivate-after=200ms"}};
  auto cli = make_client(svc.port());
  REQUIRE(start(*cli, "12400") == granted_body(1));
  REQUIRE(end(*cli, "12400") == closed_body(0));
  // Only a v2 session open: endstream never closes it.
  REQUIRE(open_session(*cli, "12401", open_body("tv")).status == 201);
  // An own limit would make a user known too; no token here, so not tried.
  CHECK(end_refused(*cli, "12400") == no_active_streams_body());
  CHECK(end_refused(*cli, "12401") == no_active_streams_body());
  // Wait until both actors are passivated: 12400 is held as a tombstone
  // (a user id and a time), 12401 as a record.
  REQUIRE(eventually([&] {
    return metric_value(scrape(*cli), "videostreams_live_user_actors") == 0;
  }));
  CHECK(end_refused(*cli, "12400") == no_active_streams_body());
  CHECK(end_refused(*cli, "12401") == no_active_streams_body());
  CHECK(end_refused(*cli, "12402") == unknown_user_body());
}

TEST_CASE("repeated endstream never takes the count below 0", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  REQUIRE(start(*cli, "5") == granted_body(1));
  CHECK(end(*cli, "5") == closed_body(0));
  for (int i = 0; i < 5; ++i)
    CHECK(end_refused(*cli, "5") == no_active_streams_body());
  // Ends on an empty user bank no credit: the limit is still 3.
  CHECK(start(*cli, "5") == granted_body(1));
  CHECK(start(*cli, "5") == granted_body(2));
  CHECK(start(*cli, "5") == granted_body(3));
  CHECK(start(*cli, "5") == denied_body(3));
}

TEST_CASE("user ids with leading zeros name the same user", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  CHECK(start(*cli, "007") == granted_body(1));
  CHECK(start(*cli, "7") == granted_body(2));
  CHECK(start(*cli, "0000000000000000000000000007") == granted_body(3));
  CHECK(start(*cli, "07") == denied_body(3));
  CHECK(end(*cli, "7") == closed_body(2));
  CHECK(end(*cli, "007") == closed_body(1));
  // 0 is a user like any other, distinct from 7.
  CHECK(start(*cli, "0") == granted_body(1));
  CHECK(start(*cli, "000") == granted_body(2));
}

TEST_CASE("the largest signed 64-bit user id is accepted", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  CHECK(start(*cli, "9223372036854775807") == granted_body(1));
  CHECK(start(*cli, "09223372036854775807") == granted_body(2));
  CHECK(end(*cli, "9223372036854775807") == closed_body(1));
  // Its neighbour is another user.
  CHECK(start(*cli, "9223372036854775806") == granted_body(1));
}

TEST_CASE("a user id that is not a non-negative 64-bit integer is a 400 "
          "that changes nothing",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  const std::vector<std::string> bad_ids{
    "9223372036854775808", "18446744073709551615", "18446744073709551616",
    "99999999999999999999999999", "-1", "-0", "+1", "%2B1", "abc", "1.5",
    "1e3", "0x10", "1a", "a1", "%20", "%201", "1%20", "%09", "%00", "1%00",
    "%D9%A1", "1,2", "1;2", "~1", "%2D1", "1_000", "%EF%BC%91"};
  for (auto& route : {"/api/startstream/", "/api/endstream/"}) {
    for (auto& id : bad_ids) {
      INFO("GET " << route << id);
      check_bad_request(get(*cli, route + id));
    }
  }
  // Nothing was started or closed: user 1 (what "+1", "-1", "1.5"... might
  // have been taken for) and user 0 still have their whole limit.
  CHECK(start(*cli, "1") == granted_body(1));
  CHECK(start(*cli, "0") == granted_body(1));
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 2);
  CHECK(metric_value(text, "videostreams_open_streams") == 2);
}

TEST_CASE("a path that matches no route is a 404 Route not found for any "
          "method",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  const std::vector<std::string> paths{
    "/api/startstream", "/api/startstream/", "/api/endstream",
    "/api/endstream/", "/api/startstream/1/x", "/api/endstream/1/x",
    "/api/startstream//1", "/api//startstream/1", "/api/startstream/1//",
    "/api/Startstream/1", "/API/startstream/1", "/api/startstreams/1",
    "/api/stream/1", "/apis", "/api/x", "/", "/nope", "/healthz/x",
    "/metrics/x", "/readyz/1", "/api/api", "/api/1/startstream",
    "/v2/api/startstream/1"};
  for (auto& method : {"GET", "POST", "PUT", "DELETE", "PATCH"}) {
    for (auto& path : paths) {
      INFO(method << " " << path);
      auto r = send(*cli, method, path);
      CHECK(r.status == 404);
      CHECK(r.body == route_not_found_body);
      CHECK(r.header("Content-Type") == json_content_type);
    }
  }
  // A body does not change that.
  auto r = send(*cli, "POST", "/nope", std::string{R"({"a":1})"});
  CHECK(r.status == 404);
  CHECK(r.body == route_not_found_body);
  // None of those touched a user.
  CHECK(metric_value(scrape(*cli), "videostreams_stream_grants_total") == 0);
}

TEST_CASE("a known path with another method is a 405 with Allow that "
          "changes nothing",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  REQUIRE(start(*cli, "1") == granted_body(1));
  const std::vector<std::string> paths{"/api/startstream/1", "/api/endstream/1",
                                       "/api", "/healthz", "/readyz",
                                       "/metrics"};
  for (std::string method : {"POST", "PUT", "DELETE", "PATCH", "TRACE"}) {
    for (auto& path : paths) {
      // A TRACE must not carry content (RFC 9110 §9.3.8).
      for (bool with_body : {false, method != "TRACE"}) {
        INFO(method << " " << path << (with_body ? " with a body" : ""));
        auto body = with_body ? std::optional<std::string>{R"({"x":1})"}
                              : std::nullopt;
        auto r = send(*cli, method, path, body);
        CHECK(r.status == 405);
        CHECK(r.body == method_not_allowed_body);
        CHECK(r.header("Content-Type") == json_content_type);
        auto allow = r.header("Allow");
        CHECK(allow.find("GET") != std::string::npos);
        CHECK(allow.find(method) == std::string::npos);
      }
    }
  }
  // HEAD would run a state-changing GET on the stream routes: refused too.
  for (auto& path : {"/api/startstream/1", "/api/endstream/1"}) {
    INFO("HEAD " << path);
    auto r = send(*cli, "HEAD", path);
    CHECK(r.status == 405);
    CHECK(r.header("Allow").find("GET") != std::string::npos);
  }
  // Still exactly the one stream opened above.
  CHECK(end(*cli, "1") == closed_body(0));
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 1);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
}

TEST_CASE("the max-streams option changes the limit", "[blackbox]") {
  service_process svc{{"--max-streams=5"}};
  auto cli = make_client(svc.port());
  for (int i = 1; i <= 5; ++i)
    CHECK(start(*cli, "3") == granted_body(i));
  CHECK(start(*cli, "3") == denied_body(5));
  CHECK(end(*cli, "3") == closed_body(4));
  CHECK(start(*cli, "3") == granted_body(5));
}

TEST_CASE("max-streams=0 denies every start", "[blackbox]") {
  service_process svc{{"--max-streams=0"}};
  auto cli = make_client(svc.port());
  CHECK(start(*cli, "3") == denied_body(0));
  CHECK(end_refused(*cli, "3") == unknown_user_body());
}

TEST_CASE("users are independent of each other", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (int i = 1; i <= 3; ++i)
    REQUIRE(start(*cli, "100") == granted_body(i));
  REQUIRE(start(*cli, "100") == denied_body(3));
  // User 100 at its limit does not affect user 101.
  CHECK(start(*cli, "101") == granted_body(1));
  CHECK(end_refused(*cli, "102") == unknown_user_body());
  // Closing for 101 leaves 100 as it was.
  CHECK(end(*cli, "101") == closed_body(0));
  CHECK(start(*cli, "100") == denied_body(3));
  CHECK(end(*cli, "100") == closed_body(2));
}
