// docs/api.md, "Stream sessions (v2)" and promise 5, for the v2 API: session
// ids, bodies, ttlSeconds and maxStreams are checked; a bad one is a 400 that
// names the field, a body over 16 KiB is a 413, and a rejected request changes
// nothing. Also the TTL options (README.md, "Options").

#include <cstdint>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"
#include "session_probe.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

namespace {

constexpr const char* token = "op-19d4";

/// The expiry of a session opened now with `body`, checked against `ttl`
/// seconds from the time of the request (±1 s).
void check_opened_with_ttl(httplib::Client& cli, const std::string& user,
                           const std::string& body, std::int64_t count,
                           std::int64_t ttl) {
  INFO("POST " << streams_path(user) << " " << body);
  auto before = wall_ms();
  auto r = open_session(cli, user, body);
  auto after = wall_ms();
  auto exp = check_session_answer(r, 201, std::stoll(user), "", count, 3);
  CHECK(exp >= before + ttl * 1000 - 1000);
  CHECK(exp <= after + ttl * 1000 + 1000);
}

} // namespace

TEST_CASE("session ids are 1 to 64 of [A-Za-z0-9._-], any other in the path "
          "is a 400 naming session_id that changes nothing",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  const std::string all_classes = "Az09._-";
  const std::string longest(64, 'k');
  const std::string one = "Q";
  const std::vector<std::string> good{all_classes, longest, one};
  for (std::size_t i = 0; i < good.size(); ++i) {
    auto& sid = good[i];
    INFO("session id " << sid);
    check_session_answer(open_session(*cli, "30", open_body(sid)), 201, 30,
                         sid, static_cast<std::int64_t>(i + 1), 3);
    CHECK(heartbeat(*cli, "30", sid).status == 200);
  }
  const std::vector<std::string> bad{
    std::string(65, 'k'), "a%20b", "a+b",   "a~b",   "a:b",    "a@b",
    "a*b",                "a!b",   "a%2Cb", "a%25b", "a%C3%A4", "a%00",
    "a%09b",              "%20",   "a'b",   "a$b",   "a%22b",   "a=b"};
  for (auto& sid : bad) {
    INFO("session id in the path: " << sid);
    check_field_error(heartbeat(*cli, "30", sid), "session_id");
    check_field_error(close_session(*cli, "30", sid), "session_id");
  }
  // The three sessions are untouched and still close by their ids.
  auto l = require_listing(*cli, "30");
  CHECK(l.count == 3);
  CHECK(close_session(*cli, "30", longest).status == 200);
  CHECK(close_session(*cli, "30", all_classes).status == 200);
  CHECK(close_session(*cli, "30", one).status == 200);
  CHECK(require_listing(*cli, "30").count == 0);
}

TEST_CASE("a sessionId in the body that is not such an id is a 400 naming "
          "sessionId and opens nothing",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  const std::vector<std::string> bodies{
    R"({"sessionId":123})",
    R"({"sessionId":true})",
    R"({"sessionId":["a"]})",
    R"({"sessionId":{"id":"a"}})",
    R"({"sessionId":""})",
    R"({"sessionId":")" + std::string(65, 'k') + R"("})",
    R"({"sessionId":"a b"})",
    R"({"sessionId":"a/b"})",
    R"({"sessionId":"a+b"})",
    R"({"sessionId":"\u00e4"})",
    R"({"sessionId":"a\u0000b"})",
    R"({"sessionId":"a\nb"})",
    R"({"sessionId":"a%20b"})",
    R"({"sessionId":123,"ttlSeconds":60})",
  };
  for (auto& body : bodies) {
    INFO("body " << body);
    check_field_error(open_session(*cli, "31", body), "sessionId");
  }
  CHECK(require_listing(*cli, "31").count == 0);
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 0);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
}

TEST_CASE("ttlSeconds defaults to 60 and must be an integer from 5 to 3600, "
          "outside is a 400 naming ttlSeconds, not clamped",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  const std::vector<std::string> bad{
    "4",    "0",   "-1",   "3601", "1000000", "5.5",  "\"60\"",
    "true", "[]",  "{}",   "1e30", "-5",      "3600.5",
    "9223372036854775807", "9223372036854775808", "18446744073709551616"};
  for (auto& ttl : bad) {
    auto body = R"({"sessionId":"t","ttlSeconds":)" + ttl + "}";
    INFO("body " << body);
    check_field_error(open_session(*cli, "32", body), "ttlSeconds");
  }
  // Nothing was opened, neither clamped to 5 or 3600 nor with the default.
  CHECK(require_listing(*cli, "32").count == 0);
  CHECK(heartbeat(*cli, "32", "t").status == 404);
  check_opened_with_ttl(*cli, "32", open_body(std::nullopt, 5), 1, 5);
  check_opened_with_ttl(*cli, "32", open_body(std::nullopt, 3600), 2, 3600);
  check_opened_with_ttl(*cli, "32", open_body(std::nullopt), 3, 60);
  // A renewal is checked the same way and changes nothing when refused.
  auto sid = require_listing(*cli, "32").sessions.at(0).id.value_or("");
  auto exp = require_listing(*cli, "32").sessions.at(0).expires_at_ms;
  check_field_error(open_session(*cli, "32", open_body(sid, 3601)),
                    "ttlSeconds");
  check_field_error(open_session(*cli, "32", open_body(sid, 4)),
                    "ttlSeconds");
  CHECK(require_listing(*cli, "32").sessions.at(0).expires_at_ms == exp);
}

TEST_CASE("the options --min-ttl, --max-ttl and --default-ttl change the "
          "bounds and the default",
          "[blackbox]") {
  service_process svc{{"--min-ttl=2", "--max-ttl=20", "--default-ttl=7"}};
  auto cli = make_client(svc.port());
  for (auto ttl : {1, 0, 21, 60, 3600}) {
    INFO("ttlSeconds " << ttl);
    check_field_error(open_session(*cli, "33", open_body("x", ttl)),
                      "ttlSeconds");
  }
  CHECK(require_listing(*cli, "33").count == 0);
  check_opened_with_ttl(*cli, "33", open_body(std::nullopt), 1, 7);
  check_opened_with_ttl(*cli, "33", open_body(std::nullopt, 2), 2, 2);
  check_opened_with_ttl(*cli, "33", open_body(std::nullopt, 20), 3, 20);
}

TEST_CASE("TTL options that contradict each other stop the start with exit 2",
          "[blackbox]") {
  const std::vector<std::vector<std::string>> bad{
    {"--min-ttl=10", "--max-ttl=5"},
    {"--default-ttl=4"},
    {"--default-ttl=3601"},
    {"--min-ttl=30", "--default-ttl=20"},
    {"--min-ttl=0"},
    {"--max-ttl=abc"},
    {"--legacy-stream-ttl=-1"},
    {"--legacy-stream-ttl=1500ms"},
    {"--legacy-stream-ttl=6d"},
  };
  for (auto args : bad) {
    args.insert(args.begin(), "--port=0");
    std::string line;
    for (auto& a : args)
      line += a + " ";
    INFO(line);
    auto r = run_binary(args);
    INFO("stderr: " << r.err);
    CHECK(r.status.describe() == "exit code 2");
    CHECK(r.err.find("listening") == std::string::npos);
    CHECK(r.err.find("ttl") != std::string::npos);
  }
  // And --help lists the v2 options with their variables.
  auto help = run_binary({"--help"});
  CHECK(help.status.describe() == "exit code 0");
  for (auto& [flag, var] : std::vector<std::pair<std::string, std::string>>{
         {"--default-ttl=60", "VIDEOSTREAMS_DEFAULT_TTL"},
         {"--min-ttl=5", "VIDEOSTREAMS_MIN_TTL"},
         {"--max-ttl=3600", "VIDEOSTREAMS_MAX_TTL"},
         {"--legacy-stream-ttl=6h", "VIDEOSTREAMS_LEGACY_STREAM_TTL"},
         {"--admin-token", "VIDEOSTREAMS_ADMIN_TOKEN"}}) {
    INFO(flag);
    CHECK(help.out.find(flag) != std::string::npos);
    CHECK(help.out.find(var) != std::string::npos);
  }
}

TEST_CASE("the body must be a JSON object or empty, unknown fields are "
          "ignored",
          "[blackbox]") {
  service_process svc{{std::string{"--admin-token="} + token}};
  auto cli = make_client(svc.port());
  check_session_answer(open_session(*cli, "34", open_body("keep")), 201, 34,
                       "keep", 1, 3);
  const std::vector<std::string> bad{
    "[]",       "[{\"sessionId\":\"a\"}]", "\"a\"",     "42",  "null",
    "true",     "{",                       "}",         "{\"sessionId\":\"a\"",
    "not json", "{} {}",                   "{\"a\":1}x", "{'sessionId':'a'}",
    "{\"sessionId\":\"a\",}"};
  for (auto& body : bad) {
    INFO("body " << body);
    check_field_error(open_session(*cli, "34", body), "body");
    check_field_error(heartbeat(*cli, "34", "keep", body), "body");
    check_field_error(send(*cli, "PUT", limit_path("34"), body, bearer(token)),
                      "body");
  }
  auto l = require_listing(*cli, "34");
  CHECK(l.count == 1);
  CHECK(l.max == 3);
  // Unknown fields are ignored; {} is an open without an id.
  check_session_answer(
    open_session(*cli, "34",
                 std::string{R"({"foo":1,"bar":[1,{"x":null}],"sessionId":"u1"})"}),
    201, 34, "u1", 2, 3);
  check_session_answer(open_session(*cli, "34", std::string{"{}"}), 201, 34,
                       "", 3, 3);
  CHECK(heartbeat(*cli, "34", "u1", std::string{R"({"anything":true})"})
          .status
        == 200);
  CHECK(heartbeat(*cli, "34", "u1", std::string{}).status == 200);
  auto r = send(*cli, "PUT", limit_path("34"),
                std::string{R"({"maxStreams":2,"note":"x"})"}, bearer(token));
  CHECK(require_object(r, 200)
        == json::parse(R"({"userId":34,"maxStreams":2})"));
}

TEST_CASE("maxStreams must be an integer from 0 to 1000, a 400 names it and "
          "changes nothing",
          "[blackbox]") {
  service_process svc{{std::string{"--admin-token="} + token}};
  auto cli = make_client(svc.port());
  auto put = [&](const std::string& user, const std::string& body) {
    return send(*cli, "PUT", limit_path(user), body, bearer(token));
  };
  REQUIRE(put("35", R"({"maxStreams":2})").status == 200);
  const std::vector<std::string> bad{
    "",  "{}",  R"({"maxStreams":null})", R"({"maxStreams":-1})",
    R"({"maxStreams":1001})", R"({"maxStreams":"3"})",
    R"({"maxStreams":2.5})", R"({"maxStreams":true})",
    R"({"maxStreams":[3]})", R"({"maxStreams":18446744073709551616})",
    R"({"maxstreams":3})"};
  for (auto& body : bad) {
    INFO("body " << body);
    check_field_error(put("35", body), "maxStreams");
  }
  for (auto& user : {"abc", "-1", "9223372036854775808"}) {
    INFO("user " << user);
    check_field_error(put(user, R"({"maxStreams":3})"), "user_id");
    check_field_error(send(*cli, "DELETE", limit_path(user), std::nullopt,
                           bearer(token)),
                      "user_id");
  }
  // Still the limit set first.
  CHECK(require_listing(*cli, "35").max == 2);
  CHECK(require_object(put("35", R"({"maxStreams":0})"), 200)
        == json::parse(R"({"userId":35,"maxStreams":0})"));
  CHECK(require_object(put("35", R"({"maxStreams":1000})"), 200)
        == json::parse(R"({"userId":35,"maxStreams":1000})"));
}

TEST_CASE("a body over 16 KiB is a 413 with a JSON body that changes "
          "nothing, 16 KiB is accepted",
          "[blackbox]") {
  service_process svc{{std::string{"--admin-token="} + token}};
  // A padded object of exactly `size` bytes.
  auto padded = [](const std::string& json_object, std::size_t size) {
    return json_object + std::string(size - json_object.size(), ' ');
  };
  auto check_413 = [&](const reply& r) {
    INFO("status " << r.status << " " << r.error << ": " << r.body);
    CHECK(r.status == 413);
    CHECK(r.header("Access-Control-Allow-Origin") == "*");
    CHECK(r.header("Content-Type") == json_content_type);
    auto body = json_of(r.body);
    REQUIRE(body.has_value());
    REQUIRE(body->is_object());
    CHECK(body->as_object().contains("msg"));
  };
  // A fresh connection each: the service may close one after a 413.
  check_413(open_session(*make_client(svc.port()), "36",
                         padded(open_body("big", 30), 16 * 1024 + 1)));
  check_413(open_session(
    *make_client(svc.port()), "36",
    R"({"sessionId":"big","pad":")" + std::string(64 * 1024, 'x') + "\"}"));
  auto cli = make_client(svc.port());
  CHECK(require_listing(*cli, "36").count == 0);
  check_session_answer(open_session(*cli, "36",
                                    padded(open_body("ok", 30), 16 * 1024)),
                       201, 36, "ok", 1, 3);
  check_413(heartbeat(*make_client(svc.port()), "36", "ok",
                      padded("{}", 16 * 1024 + 1)));
  check_413(send(*make_client(svc.port()), "PUT", limit_path("36"),
                 padded(R"({"maxStreams":0})", 20 * 1024), bearer(token)));
  auto l = require_listing(*cli, "36");
  CHECK(l.count == 1);
  CHECK(l.max == 3);
  CHECK(metric_value(scrape(*cli), "videostreams_stream_grants_total") == 1);
}
