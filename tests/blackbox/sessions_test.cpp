// docs/api.md, "Stream sessions (v2)", row by row on the real binary:
// open (201/200/409), heartbeat, close, list, the legacy streams seen through
// v2, per-user limits behind the operator token, methods, CORS, /api and
// /metrics.

#include <algorithm>
#include <cstdint>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"
#include "session_probe.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

namespace {

constexpr const char* token = "op-7f3c2a";

using ids_t = std::vector<std::optional<std::string>>;

std::optional<std::string> id(const char* x) {
  return std::string{x};
}

/// The methods named by a header such as `Allow: PUT, DELETE, OPTIONS`.
std::set<std::string> method_set(const std::string& header) {
  std::set<std::string> result;
  std::size_t at = 0;
  while (at <= header.size()) {
    auto comma = header.find(',', at);
    auto item = header.substr(at, comma == std::string::npos ? std::string::npos
                                                             : comma - at);
    auto first = item.find_first_not_of(' ');
    auto last = item.find_last_not_of(' ');
    if (first != std::string::npos)
      result.insert(item.substr(first, last - first + 1));
    if (comma == std::string::npos)
      break;
    at = comma + 1;
  }
  return result;
}

/// Waits a few milliseconds so that two wall-clock readings in ms differ.
/// Not a timing assertion: nothing depends on how long it takes.
void let_a_few_ms_pass() {
  std::this_thread::sleep_for(std::chrono::milliseconds{25});
}

std::string legacy(httplib::Client& cli, const std::string& what,
                   const std::string& user) {
  auto r = get(cli, "/api/" + what + "/" + user);
  INFO("GET /api/" << what << "/" << user << " -> " << r.status << " "
                   << r.error);
  REQUIRE((r.status == 200 || r.status == 400));
  return r.body;
}

reply put_limit(httplib::Client& cli, const std::string& user,
                const std::optional<std::string>& body,
                const httplib::Headers& headers = bearer(token)) {
  return send(cli, "PUT", limit_path(user), body, headers);
}

reply delete_limit(httplib::Client& cli, const std::string& user,
                   const httplib::Headers& headers = bearer(token)) {
  return send(cli, "DELETE", limit_path(user), std::nullopt, headers);
}

std::string max_body(std::int64_t m) {
  return R"({"maxStreams":)" + std::to_string(m) + "}";
}

} // namespace

TEST_CASE("POST opens a session: 201 with userId, sessionId, streamCount, "
          "maxStreams and an RFC 3339 expiresAt",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto before = wall_ms();
  // No body: the server makes the id; the lease is the default 60 s.
  auto r1 = open_session(*cli, "7");
  auto exp1 = check_session_answer(r1, 201, 7, "", 1, 3);
  auto id1 = string_field(r1.body, "sessionId").value_or("");
  // An empty body is the same as none.
  auto r2 = open_session(*cli, "7", std::string{});
  auto exp2 = check_session_answer(r2, 201, 7, "", 2, 3);
  auto id2 = string_field(r2.body, "sessionId").value_or("");
  // The client's own id and TTL.
  auto r3 = open_session(*cli, "7", open_body("tv-living-room", 30));
  auto exp3 = check_session_answer(r3, 201, 7, "tv-living-room", 3, 3);
  auto after = wall_ms();

  const std::regex hex32{"[0-9a-f]{32}"};
  CHECK(std::regex_match(id1, hex32));
  CHECK(std::regex_match(id2, hex32));
  CHECK(id1 != id2);
  CHECK(exp1 >= before + 59'000);
  CHECK(exp1 <= after + 61'000);
  CHECK(exp2 >= before + 59'000);
  CHECK(exp2 <= after + 61'000);
  CHECK(exp3 >= before + 29'000);
  CHECK(exp3 <= after + 31'000);

  // The listing shows the three, oldest first, with the same expiries and a
  // start time in the window of the requests.
  auto l = require_listing(*cli, "7");
  CHECK(l.count == 3);
  CHECK(l.max == 3);
  REQUIRE(l.sessions.size() == 3);
  CHECK(l.ids() == ids_t{id1, id2, id("tv-living-room")});
  std::vector<std::int64_t> expected{exp1, exp2, exp3};
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("session " << i);
    CHECK(l.sessions[i].expires_at_ms == expected[i]);
    CHECK(l.sessions[i].started_at_ms >= before - 1000);
    CHECK(l.sessions[i].started_at_ms <= after + 1000);
  }
  CHECK(l.sessions[0].started_at_ms <= l.sessions[1].started_at_ms);
  CHECK(l.sessions[1].started_at_ms <= l.sessions[2].started_at_ms);

  // Server-made ids are distinct across users too.
  std::set<std::string> made{id1, id2};
  for (int u = 100; u < 130; ++u) {
    auto r = open_session(*cli, std::to_string(u));
    check_session_answer(r, 201, u, "", 1, 3);
    auto x = string_field(r.body, "sessionId").value_or("");
    CHECK(std::regex_match(x, hex32));
    made.insert(x);
  }
  CHECK(made.size() == 32);
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_open_streams") == 33);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 33);
}

TEST_CASE("POST with a sessionId that is already open is a 200 that renews "
          "it and does not count it twice",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto first = open_session(*cli, "9", open_body("phone", 600));
  auto exp = check_session_answer(first, 201, 9, "phone", 1, 3);
  auto started = require_listing(*cli, "9").sessions.at(0).started_at_ms;
  for (int retry = 0; retry < 3; ++retry) {
    INFO("retry " << retry);
    let_a_few_ms_pass();
    auto before = wall_ms();
    auto again = open_session(*cli, "9", open_body("phone", 600));
    auto renewed = check_session_answer(again, 200, 9, "phone", 1, 3);
    // Renewed: a later expiry, by the session's TTL from now.
    CHECK(renewed > exp);
    CHECK(renewed >= before + 599'000);
    CHECK(renewed <= wall_ms() + 601'000);
    exp = renewed;
  }
  // A retry without the TTL renews by the session's own TTL (600 s, not
  // the default 60 s); one with a TTL makes that its TTL (README).
  {
    auto before = wall_ms();
    auto bare = open_session(*cli, "9", open_body("phone"));
    auto renewed = check_session_answer(bare, 200, 9, "phone", 1, 3);
    CHECK(renewed >= before + 599'000);
    CHECK(renewed <= wall_ms() + 601'000);
    before = wall_ms();
    auto shorter = open_session(*cli, "9", open_body("phone", 30));
    auto exp30 = check_session_answer(shorter, 200, 9, "phone", 1, 3);
    CHECK(exp30 >= before + 29'000);
    CHECK(exp30 <= wall_ms() + 31'000);
    before = wall_ms();
    auto beat = heartbeat(*cli, "9", "phone");
    auto exp_beat = check_session_answer(beat, 200, 9, "phone", 1, 3);
    CHECK(exp_beat >= before + 29'000);
    CHECK(exp_beat <= wall_ms() + 31'000);
  }

  CHECK(check_session_answer(open_session(*cli, "9", open_body("tablet")),
                             201, 9, "tablet", 2, 3)
        > 0);
  // The same session: its start time did not move.
  auto l = require_listing(*cli, "9");
  CHECK(l.ids() == ids_t{id("phone"), id("tablet")});
  CHECK(l.sessions.at(0).started_at_ms == started);

  // At the limit a retry is still a renewal, not a 409.
  REQUIRE(legacy(*cli, "startstream", "9") == granted_body(3));
  CHECK(check_session_answer(open_session(*cli, "9", open_body("phone")), 200,
                             9, "phone", 3, 3)
        > 0);
  CHECK(check_session_answer(open_session(*cli, "9", open_body("tablet")),
                             200, 9, "tablet", 3, 3)
        > 0);
  CHECK(require_listing(*cli, "9").count == 3);
  // Another user's session of the same name is another session.
  check_session_answer(open_session(*cli, "10", open_body("phone")), 201, 10,
                       "phone", 1, 3);
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 4);
  CHECK(metric_value(text, "videostreams_open_streams") == 4);
}

TEST_CASE("POST at the limit is a 409 that lists the open sessions and "
          "changes nothing",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto exp_a = check_session_answer(
    open_session(*cli, "11", open_body("a", 120)), 201, 11, "a", 1, 3);
  REQUIRE(legacy(*cli, "startstream", "11") == granted_body(2));
  auto exp_b = check_session_answer(open_session(*cli, "11", open_body("b")),
                                    201, 11, "b", 3, 3);

  for (auto body : {std::optional<std::string>{open_body("c", 30)},
                    std::optional<std::string>{}}) {
    INFO("body: " << body.value_or("(none)"));
    auto r = open_session(*cli, "11", body);
    auto obj = require_object(r, 409);
    INFO("409 body: " << r.body);
    CHECK(keys_of(obj)
          == std::vector<std::string>{"maxStreams", "msg", "sessions",
                                      "streamCount"});
    CHECK(obj["msg"] == "stream limit reached");
    CHECK(obj["streamCount"] == 3);
    CHECK(obj["maxStreams"] == 3);
    auto sessions = require_sessions(obj);
    REQUIRE(sessions.size() == 3);
    CHECK(sessions[0].id == id("a"));
    CHECK(sessions[0].expires_at_ms == exp_a);
    CHECK_FALSE(sessions[1].id.has_value());
    // The default legacy lease: 6 h from its start.
    REQUIRE(sessions[1].expires_at_ms.has_value());
    CHECK(*sessions[1].expires_at_ms - sessions[1].started_at_ms
          >= 21'600'000 - 50);
    CHECK(*sessions[1].expires_at_ms - sessions[1].started_at_ms
          <= 21'600'000 + 50);
    CHECK(sessions[2].id == id("b"));
    CHECK(sessions[2].expires_at_ms == exp_b);
  }
  // Nothing was opened: "c" is unknown, the count is still 3.
  CHECK(heartbeat(*cli, "11", "c").status == 404);
  auto l = require_listing(*cli, "11");
  CHECK(l.count == 3);
  CHECK(l.ids() == ids_t{id("a"), std::nullopt, id("b")});
  // Closing one makes room for exactly one.
  auto closed = close_session(*cli, "11", "a");
  CHECK(require_object(closed, 200)
        == json::parse(R"({"msg":"stream closed","streamCount":2})"));
  check_session_answer(open_session(*cli, "11", open_body("c")), 201, 11, "c",
                       3, 3);
  CHECK(open_session(*cli, "11", open_body("d")).status == 409);
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_denials_total") == 3);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 4);
  CHECK(metric_value(text, "videostreams_open_streams") == 3);
}

TEST_CASE("PUT renews a lease by the session's own TTL and is a 404 for an "
          "unknown session",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto exp_long = check_session_answer(
    open_session(*cli, "12", open_body("long", 600)), 201, 12, "long", 1, 3);
  auto exp_short = check_session_answer(
    open_session(*cli, "12", open_body("short")), 201, 12, "short", 2, 3);
  let_a_few_ms_pass();
  auto before = wall_ms();
  auto r_long = heartbeat(*cli, "12", "long");
  auto r_short = heartbeat(*cli, "12", "short");
  auto after = wall_ms();
  // The same shape as the 201 (README, "v2 answers"), with the new expiry.
  std::optional<std::int64_t> new_long
    = check_session_answer(r_long, 200, 12, "long", 2, 3);
  std::optional<std::int64_t> new_short
    = check_session_answer(r_short, 200, 12, "short", 2, 3);
  // Own TTL: 600 s for one, the default 60 s for the other.
  CHECK(*new_long > exp_long);
  CHECK(*new_long >= before + 599'000);
  CHECK(*new_long <= after + 601'000);
  CHECK(*new_short > exp_short);
  CHECK(*new_short >= before + 59'000);
  CHECK(*new_short <= after + 61'000);
  // The listing agrees.
  auto l = require_listing(*cli, "12");
  CHECK(l.sessions.at(0).expires_at_ms == new_long);
  CHECK(l.sessions.at(1).expires_at_ms == new_short);

  // Unknown sessions, also those of another user.
  for (auto& [user, sid] : std::vector<std::pair<std::string, std::string>>{
         {"12", "nope"}, {"12", "LONG"}, {"13", "long"}, {"12", "long.x"}}) {
    INFO("PUT " << stream_path(user, sid));
    auto r = heartbeat(*cli, user, sid);
    auto obj = require_object(r, 404);
    // README, "v2 answers": the 404 names the session, and says what to do.
    CHECK(keys_of(obj)
          == std::vector<std::string>{"detail", "msg", "sessionId"});
    CHECK(obj["msg"] == "Stream not found");
    CHECK(obj["sessionId"] == json::value(sid));
    CHECK(std::string{obj["detail"].as_string()}.find(
            "POST /api/v2/users/" + std::to_string(std::stoll(user))
            + "/streams")
          != std::string::npos);
  }
  CHECK(require_listing(*cli, "12").count == 2);
  CHECK(require_listing(*cli, "13").count == 0);
}

TEST_CASE("DELETE closes a session and is a 404 when it is unknown or "
          "already closed",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  check_session_answer(open_session(*cli, "14", open_body("a")), 201, 14, "a",
                       1, 3);
  check_session_answer(open_session(*cli, "14", open_body("b")), 201, 14, "b",
                       2, 3);
  auto r = close_session(*cli, "14", "a");
  CHECK(require_object(r, 200)
        == json::parse(R"({"msg":"stream closed","streamCount":1})"));
  CHECK(require_object(close_session(*cli, "14", "a"), 404).contains("msg"));
  // Closed by a DELETE: its heartbeat is told so (410), not "not found".
  CHECK(require_object(heartbeat(*cli, "14", "a"), 410)["msg"]
        == "stream ended by another device");
  CHECK(require_object(close_session(*cli, "14", "zzz"), 404).contains("msg"));
  CHECK(require_object(close_session(*cli, "15", "b"), 404).contains("msg"));
  auto l = require_listing(*cli, "14");
  CHECK(l.ids() == ids_t{id("b")});
  // A closed id can be opened again, as a new session.
  check_session_answer(open_session(*cli, "14", open_body("a")), 201, 14, "a",
                       2, 3);
  CHECK(require_listing(*cli, "14").ids() == ids_t{id("b"), id("a")});
  CHECK(require_object(close_session(*cli, "14", "b"), 200)
        == json::parse(R"({"msg":"stream closed","streamCount":1})"));
  CHECK(require_object(close_session(*cli, "14", "a"), 200)
        == json::parse(R"({"msg":"stream closed","streamCount":0})"));
  CHECK(require_listing(*cli, "14").count == 0);
  // DELETE is not endstream: it never closes a stream without an id.
  REQUIRE(legacy(*cli, "startstream", "14") == granted_body(1));
  CHECK(close_session(*cli, "14", "null").status == 404);
  CHECK(require_listing(*cli, "14").count == 1);
  CHECK(metric_value(scrape(*cli), "videostreams_open_streams") == 1);
}

TEST_CASE("startstream streams appear in v2 with null ids, share the limit, "
          "and endstream closes only them, oldest first",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto before = wall_ms();
  REQUIRE(legacy(*cli, "startstream", "16") == granted_body(1));
  check_session_answer(open_session(*cli, "16", open_body("a")), 201, 16, "a",
                       2, 3);
  REQUIRE(legacy(*cli, "startstream", "16") == granted_body(3));
  auto after = wall_ms();
  CHECK(legacy(*cli, "startstream", "16") == denied_body(3));
  CHECK(open_session(*cli, "16", open_body("b")).status == 409);

  auto l = require_listing(*cli, "16");
  CHECK(l.count == 3);
  CHECK(l.ids() == ids_t{std::nullopt, id("a"), std::nullopt});
  for (auto i : {0, 2}) {
    INFO("legacy entry " << i);
    // The default legacy lease: 6 h from its start.
    REQUIRE(l.sessions[i].expires_at_ms.has_value());
    CHECK(*l.sessions[i].expires_at_ms - l.sessions[i].started_at_ms
          >= 21'600'000 - 50);
    CHECK(*l.sessions[i].expires_at_ms - l.sessions[i].started_at_ms
          <= 21'600'000 + 50);
    CHECK(l.sessions[i].started_at_ms >= before - 1000);
    CHECK(l.sessions[i].started_at_ms <= after + 1000);
  }
  CHECK(l.sessions[1].expires_at_ms.has_value());

  // endstream closes the oldest stream without an id...
  CHECK(legacy(*cli, "endstream", "16") == closed_body(2));
  CHECK(require_listing(*cli, "16").ids() == ids_t{id("a"), std::nullopt});
  CHECK(legacy(*cli, "endstream", "16") == closed_body(1));
  CHECK(require_listing(*cli, "16").ids() == ids_t{id("a")});
  // ...and never a session with an id; the count stays at the sessions.
  CHECK(legacy(*cli, "endstream", "16") == no_active_streams_body());
  CHECK(legacy(*cli, "endstream", "16") == no_active_streams_body());
  CHECK(heartbeat(*cli, "16", "a").status == 200);
  CHECK(require_listing(*cli, "16").count == 1);
  // Sessions count toward the original API's limit too.
  check_session_answer(open_session(*cli, "16", open_body("b")), 201, 16, "b",
                       2, 3);
  check_session_answer(open_session(*cli, "16", open_body("c")), 201, 16, "c",
                       3, 3);
  CHECK(legacy(*cli, "startstream", "16") == denied_body(3));
  CHECK(legacy(*cli, "endstream", "16") == no_active_streams_body());
}

TEST_CASE("v2 user ids: 007 is user 7, the largest id works, and a bad id is "
          "a 400 naming user_id that changes nothing",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  check_session_answer(open_session(*cli, "007", open_body("x")), 201, 7, "x",
                       1, 3);
  CHECK(require_listing(*cli, "7").ids() == ids_t{id("x")});
  CHECK(heartbeat(*cli, "0007", "x").status == 200);
  check_session_answer(
    open_session(*cli, "9223372036854775807", open_body("max")), 201,
    INT64_MAX, "max", 1, 3);
  check_session_answer(open_session(*cli, "0", open_body("zero")), 201, 0,
                       "zero", 1, 3);

  const std::vector<std::string> bad_ids{
    "abc", "-1", "+1", "1.5", "1e3", "0x10", "9223372036854775808",
    "99999999999999999999", "%20", "1%20", "1a", "%2D1", "%EF%BC%91"};
  for (auto& user : bad_ids) {
    INFO("user id " << user);
    check_field_error(open_session(*cli, user, open_body("y")), "user_id");
    check_field_error(open_session(*cli, user), "user_id");
    check_field_error(list_sessions(*cli, user), "user_id");
    check_field_error(heartbeat(*cli, user, "x"), "user_id");
    check_field_error(close_session(*cli, user, "x"), "user_id");
  }
  // Nothing changed for the users those might have been taken for.
  CHECK(require_listing(*cli, "1").count == 0);
  CHECK(require_listing(*cli, "7").ids() == ids_t{id("x")});
  CHECK(require_listing(*cli, "10").count == 0);
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 3);
  CHECK(metric_value(text, "videostreams_open_streams") == 3);
}

TEST_CASE("the limit endpoints answer 403 when no admin token is configured",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  std::vector<httplib::Headers> auths{
    {}, bearer(""), bearer("anything"), {{"Authorization", "Basic eDp5"}}};
  for (auto& auth : auths) {
    INFO("Authorization: "
         << (auth.empty() ? std::string{"(none)"} : auth.begin()->second));
    auto put = put_limit(*cli, "17", max_body(1), auth);
    CHECK(require_object(put, 403).contains("msg"));
    auto del = delete_limit(*cli, "17", auth);
    CHECK(require_object(del, 403).contains("msg"));
  }
  // The limit is still the default.
  CHECK(require_listing(*cli, "17").max == 3);
  for (int i = 1; i <= 3; ++i)
    check_session_answer(open_session(*cli, "17"), 201, 17, "", i, 3);
}

TEST_CASE("the limit endpoints need Authorization: Bearer with the admin "
          "token",
          "[blackbox]") {
  service_process svc{{std::string{"--admin-token="} + token}};
  auto cli = make_client(svc.port());
  std::string t{token};
  std::vector<httplib::Headers> wrong{
    {},
    bearer(""),
    bearer("nope"),
    bearer(t + "x"),
    bearer(t.substr(0, t.size() - 1)),
    bearer(" " + t),
    {{"Authorization", t}},
    {{"Authorization", "Basic " + t}},
    {{"Authorization", "Token " + t}},
    {{"X-Admin-Token", t}},
  };
  for (auto& auth : wrong) {
    INFO("headers: " << (auth.empty() ? std::string{"(none)"}
                                      : auth.begin()->first + ": "
                                          + auth.begin()->second));
    CHECK(require_object(put_limit(*cli, "18", max_body(1), auth), 401)
            .contains("msg"));
    CHECK(require_object(delete_limit(*cli, "18", auth), 401).contains("msg"));
  }
  // None of that changed the limit.
  CHECK(require_listing(*cli, "18").max == 3);
  // The right token.
  auto r = put_limit(*cli, "18", max_body(1));
  CHECK(require_object(r, 200)
        == json::parse(R"({"userId":18,"maxStreams":1})"));
  CHECK(require_listing(*cli, "18").max == 1);
  auto d = delete_limit(*cli, "18");
  CHECK(require_object(d, 200)
        == json::parse(R"({"userId":18,"maxStreams":3})"));
  CHECK(require_listing(*cli, "18").max == 3);
}

TEST_CASE("VIDEOSTREAMS_ADMIN_TOKEN sets the admin token, which the start "
          "line never shows",
          "[blackbox]") {
  service_process svc{{}, {{"VIDEOSTREAMS_ADMIN_TOKEN", "env-token-91"}}};
  auto cli = make_client(svc.port());
  CHECK(put_limit(*cli, "19", max_body(2), bearer("env-token-91")).status
        == 200);
  CHECK(put_limit(*cli, "19", max_body(2), bearer(token)).status == 401);
  CHECK(require_listing(*cli, "19").max == 2);
  service_process flagged{{"--admin-token=flag-token-52"}};
  CHECK(svc.stderr_text().find("env-token-91") == std::string::npos);
  CHECK(flagged.stderr_text().find("flag-token-52") == std::string::npos);
  CHECK(flagged.stderr_text().find("listening") != std::string::npos);
}

TEST_CASE("a user's own limit applies to both APIs for that user only, and "
          "DELETE returns it to the default",
          "[blackbox]") {
  service_process svc{{std::string{"--admin-token="} + token}};
  auto cli = make_client(svc.port());
  REQUIRE(put_limit(*cli, "20", max_body(1)).status == 200);
  // User 20: one stream, whichever API asks.
  CHECK(legacy(*cli, "startstream", "20") == granted_body(1));
  CHECK(legacy(*cli, "startstream", "20") == denied_body(1));
  {
    auto r = open_session(*cli, "20", open_body("a"));
    auto obj = require_object(r, 409);
    CHECK(obj["streamCount"] == 1);
    CHECK(obj["maxStreams"] == 1);
  }
  CHECK(legacy(*cli, "endstream", "20") == closed_body(0));
  check_session_answer(open_session(*cli, "20", open_body("a")), 201, 20, "a",
                       1, 1);
  CHECK(legacy(*cli, "startstream", "20") == denied_body(1));
  CHECK(require_listing(*cli, "20").max == 1);
  // User 21 keeps the default of 3.
  for (int i = 1; i <= 3; ++i)
    check_session_answer(open_session(*cli, "21"), 201, 21, "", i, 3);
  CHECK(legacy(*cli, "startstream", "21") == denied_body(3));

  // Raised to 4: room for three more, over both APIs.
  REQUIRE(require_object(put_limit(*cli, "20", max_body(4)), 200)
          == json::parse(R"({"userId":20,"maxStreams":4})"));
  CHECK(legacy(*cli, "startstream", "20") == granted_body(2));
  check_session_answer(open_session(*cli, "20", open_body("b")), 201, 20, "b",
                       3, 4);
  CHECK(legacy(*cli, "startstream", "20") == granted_body(4));
  CHECK(open_session(*cli, "20", open_body("c")).status == 409);
  CHECK(legacy(*cli, "startstream", "20") == denied_body(4));

  // Back to the default: 3. A lower limit closes nothing (README); it
  // refuses new streams while 4 are open.
  REQUIRE(require_object(delete_limit(*cli, "20"), 200)
          == json::parse(R"({"userId":20,"maxStreams":3})"));
  auto lowered = require_listing(*cli, "20");
  CHECK(lowered.max == 3);
  CHECK(lowered.count == 4);
  {
    auto obj = require_object(open_session(*cli, "20", open_body("c")), 409);
    CHECK(obj["maxStreams"] == 3);
    CHECK(obj["streamCount"] == 4);
  }
  CHECK(heartbeat(*cli, "20", "b").status == 200);
  CHECK(legacy(*cli, "startstream", "20").find("\"isNewStreamAllowed\":false")
        != std::string::npos);

  // 0 refuses everything; a user not seen before can get a limit; 1000 is
  // the largest.
  REQUIRE(put_limit(*cli, "22", max_body(0)).status == 200);
  CHECK(legacy(*cli, "startstream", "22") == denied_body(0));
  {
    auto obj = require_object(open_session(*cli, "22"), 409);
    CHECK(obj["streamCount"] == 0);
    CHECK(obj["maxStreams"] == 0);
    CHECK(obj["sessions"] == json::array{});
  }
  REQUIRE(put_limit(*cli, "23", max_body(1000)).status == 200);
  CHECK(require_listing(*cli, "23").max == 1000);
  // DELETE on a user with the default is fine and answers the default.
  CHECK(require_object(delete_limit(*cli, "24"), 200)
        == json::parse(R"({"userId":24,"maxStreams":3})"));
  REQUIRE(delete_limit(*cli, "22").status == 200);
  CHECK(legacy(*cli, "startstream", "22") == granted_body(1));
}

TEST_CASE("GET /api lists every v2 endpoint", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto r = get(*cli, "/api");
  auto obj = require_object(r, 200);
  for (auto& key : {"GET /api", "GET /api/startstream/:user_id",
                    "GET /api/endstream/:user_id",
                    "POST /api/v2/users/:user_id/streams",
                    "GET /api/v2/users/:user_id/streams",
                    "PUT /api/v2/users/:user_id/streams/:session_id",
                    "DELETE /api/v2/users/:user_id/streams/:session_id",
                    "PUT /api/v2/users/:user_id/limit",
                    "DELETE /api/v2/users/:user_id/limit"}) {
    INFO(key);
    CHECK(obj.contains(key));
  }
}

TEST_CASE("v2 routes: other methods are a 405 with Allow, OPTIONS is the "
          "CORS preflight, HEAD has no body, none changes anything",
          "[blackbox]") {
  service_process svc{{std::string{"--admin-token="} + token}};
  auto cli = make_client(svc.port());
  const std::set<std::string> streams_methods{"GET", "HEAD", "POST",
                                              "OPTIONS"};
  const std::set<std::string> item_methods{"PUT", "DELETE", "OPTIONS"};
  struct route_case {
    std::string path;
    std::set<std::string> allowed;
    std::vector<std::string> refused;
  };
  const std::vector<route_case> routes{
    {streams_path("25"), streams_methods, {"PUT", "DELETE", "PATCH"}},
    {stream_path("25", "s1"), item_methods, {"GET", "POST", "PATCH", "HEAD"}},
    {limit_path("25"), item_methods, {"GET", "POST", "PATCH", "HEAD"}},
  };
  for (auto& rc : routes) {
    for (auto& method : rc.refused) {
      // A GET or HEAD with a body never reaches a route: the edge refuses
      // it (edge_test.cpp).
      for (bool with_body : {false, method != "HEAD" && method != "GET"}) {
        INFO(method << " " << rc.path << (with_body ? " with a body" : ""));
        auto body = with_body ? std::optional<std::string>{R"({"sessionId":"s1","maxStreams":0})"}
                              : std::nullopt;
        auto r = send(*cli, method, rc.path, body, bearer(token));
        CHECK(r.status == 405);
        CHECK(r.header("Access-Control-Allow-Origin") == "*");
        CHECK(method_set(r.header("Allow")) == rc.allowed);
        if (method != "HEAD") {
          CHECK(r.body == method_not_allowed_body);
          CHECK(r.header("Content-Type") == json_content_type);
        }
      }
    }
    INFO("OPTIONS " << rc.path);
    auto pre = send(*cli, "OPTIONS", rc.path);
    CHECK(pre.status == 204);
    CHECK(pre.body.empty());
    CHECK(pre.header("Access-Control-Allow-Origin") == "*");
    CHECK(method_set(pre.header("Access-Control-Allow-Methods"))
          == rc.allowed);
    // A browser's JSON POST/PUT and an operator's Authorization must pass.
    auto headers = pre.header("Access-Control-Allow-Headers");
    CHECK(headers.find("Content-Type") != std::string::npos);
    CHECK(headers.find("Authorization") != std::string::npos);
  }
  // HEAD on the list: 200, no body.
  auto head = send(*cli, "HEAD", streams_path("25"));
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(head.header("Access-Control-Allow-Origin") == "*");
  // Nothing was opened (POST on the item route is not an open), the limit
  // is the default (PATCH/POST on /limit set nothing).
  auto l = require_listing(*cli, "25");
  CHECK(l.count == 0);
  CHECK(l.max == 3);
  CHECK(heartbeat(*cli, "25", "s1").status == 404);
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 0);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
}

TEST_CASE("every v2 answer carries the CORS header", "[blackbox]") {
  service_process svc{{std::string{"--admin-token="} + token}};
  service_process no_token;
  auto cli = make_client(svc.port());
  auto other = make_client(no_token.port());
  struct probe {
    std::string what;
    reply r;
    int status;
  };
  std::vector<probe> probes;
  auto add = [&](std::string what, reply r, int status) {
    probes.push_back({std::move(what), std::move(r), status});
  };
  add("open", open_session(*cli, "26", open_body("a")), 201);
  add("renew", open_session(*cli, "26", open_body("a")), 200);
  add("heartbeat", heartbeat(*cli, "26", "a"), 200);
  add("list", list_sessions(*cli, "26"), 200);
  add("head", send(*cli, "HEAD", streams_path("26")), 200);
  add("set limit", put_limit(*cli, "26", max_body(1)), 200);
  add("at the limit", open_session(*cli, "26", open_body("b")), 409);
  add("clear limit", delete_limit(*cli, "26"), 200);
  add("close", close_session(*cli, "26", "a"), 200);
  add("ended heartbeat", heartbeat(*cli, "26", "a"), 410);
  add("unknown heartbeat", heartbeat(*cli, "26", "zz"), 404);
  add("unknown close", close_session(*cli, "26", "a"), 404);
  add("bad user", open_session(*cli, "x"), 400);
  add("bad session", heartbeat(*cli, "26", "a%20b"), 400);
  add("bad body", open_session(*cli, "26", std::string{"[]"}), 400);
  add("bad ttl", open_session(*cli, "26", open_body("c", 1)), 400);
  add("bad limit", put_limit(*cli, "26", max_body(-1)), 400);
  add("no token", put_limit(*cli, "26", max_body(1), {}), 401);
  add("no token configured", put_limit(*other, "26", max_body(1)), 403);
  add("method", send(*cli, "PATCH", streams_path("26")), 405);
  add("preflight", send(*cli, "OPTIONS", streams_path("26")), 204);
  add("too large",
      open_session(*make_client(svc.port()), "26",
                   std::string(17 * 1024, ' ')),
      413);
  for (auto& p : probes) {
    INFO(p.what << ": " << p.r.status << " " << p.r.error << " " << p.r.body);
    CHECK(p.r.status == p.status);
    CHECK(p.r.header("Access-Control-Allow-Origin") == "*");
    if (p.status != 204 && p.what != "head") {
      CHECK(p.r.header("Content-Type") == json_content_type);
      CHECK(json_of(p.r.body).has_value());
    }
  }
}

TEST_CASE("v2 requests are counted in /metrics by route template and status",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (int i = 1; i <= 3; ++i)
    REQUIRE(open_session(*cli, "27").status == 201);
  REQUIRE(open_session(*cli, "27").status == 409);
  REQUIRE(list_sessions(*cli, "27").status == 200);
  REQUIRE(heartbeat(*cli, "27", "nope").status == 404);
  REQUIRE(close_session(*cli, "27", "nope").status == 404);
  REQUIRE(open_session(*cli, "x").status == 400);
  REQUIRE(send(*cli, "PUT", limit_path("27"), max_body(1)).status == 403);
  auto text = scrape(*cli);
  INFO(text);
  const std::string streams = R"(route="/api/v2/users/:user_id/streams")";
  const std::string item
    = R"(route="/api/v2/users/:user_id/streams/:session_id")";
  const std::string limit = R"(route="/api/v2/users/:user_id/limit")";
  auto series = [](const std::string& route, const char* code) {
    return "videostreams_http_requests_total{" + route + ",code=\"" + code
           + "\"}";
  };
  CHECK(metric_value(text, series(streams, "201")) == 3);
  CHECK(metric_value(text, series(streams, "409")) == 1);
  CHECK(metric_value(text, series(streams, "200")) == 1);
  CHECK(metric_value(text, series(streams, "400")) == 1);
  CHECK(metric_value(text, series(item, "404")) == 2);
  CHECK(metric_value(text, series(limit, "403")) == 1);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 3);
  CHECK(metric_value(text, "videostreams_stream_denials_total") == 1);
  CHECK(metric_value(text, "videostreams_open_streams") == 3);
  CHECK(metric_value(text, "videostreams_stream_expirations_total") == 0);
}

TEST_CASE("kick another device: at the limit the 409 lists the sessions, a "
          "DELETE ends one, and its next heartbeat is a 410 with advice",
          "[blackbox]") {
  service_process svc{{"--max-streams=2", "--passivate-after=200ms"}};
  auto cli = make_client(svc.port());
  const std::string user = "80";
  REQUIRE(open_session(*cli, user, open_body("tv", 30)).status == 201);
  REQUIRE(open_session(*cli, user, open_body("phone", 30)).status == 201);
  auto full = require_object(open_session(*cli, user, open_body("laptop")),
                             409);
  auto listed = require_sessions(full);
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].id == std::optional<std::string>{"tv"});
  // The laptop's player stops the TV with a DELETE, then opens.
  CHECK(require_object(close_session(*cli, user, "tv"), 200)["streamCount"]
        == 1);
  check_session_answer(open_session(*cli, user, open_body("laptop")), 201, 80,
                       "laptop", 2, 2);
  auto gone = require_object(heartbeat(*cli, user, "tv"), 410);
  CHECK(keys_of(gone)
        == std::vector<std::string>{"detail", "msg", "sessionId"});
  CHECK(gone["msg"] == "stream ended by another device");
  CHECK(gone["sessionId"] == "tv");
  CHECK(std::string{gone["detail"].as_string()}.find("POST /api/v2/users/80/streams")
        != std::string::npos);
  // The tombstone outlives the actor's passivation.
  REQUIRE(eventually([&] {
    return metric_value(scrape(*cli), "videostreams_live_user_actors") == 0;
  }));
  CHECK(heartbeat(*cli, user, "tv").status == 410);
  // An expired lease is a 404, not a 410: nobody ended it.
  CHECK(heartbeat(*cli, user, "never-opened").status == 404);
}

TEST_CASE("replaceSessionId: the named session ends and the new one opens, "
          "201 with replacedSessionId, the count unchanged, the replaced "
          "one's heartbeat a 410",
          "[blackbox]") {
  service_process svc{{"--max-streams=2"}};
  auto cli = make_client(svc.port());
  const std::string user = "81";
  REQUIRE(open_session(*cli, user, open_body("tv")).status == 201);
  REQUIRE(open_session(*cli, user, open_body("phone")).status == 201);
  auto r = open_session(*cli, user,
                        R"({"sessionId":"laptop","replaceSessionId":"tv","ttlSeconds":30})");
  auto obj = require_object(r, 201);
  CHECK(keys_of(obj)
        == std::vector<std::string>{"expiresAt", "heartbeatIntervalSeconds",
                                    "maxStreams", "replacedSessionId",
                                    "sessionId", "streamCount", "userId"});
  CHECK(obj["replacedSessionId"] == "tv");
  CHECK(obj["streamCount"] == 2);
  CHECK(obj["heartbeatIntervalSeconds"] == 10);
  CHECK(require_listing(*cli, user).ids() == ids_t{id("phone"), id("laptop")});
  CHECK(heartbeat(*cli, user, "tv").status == 410);
  // Retried (the answer was lost): laptop is open, tv gone: a renewal.
  auto again = open_session(*cli, user,
                            R"({"sessionId":"laptop","replaceSessionId":"tv"})");
  auto renewed = require_object(again, 200);
  CHECK_FALSE(renewed.contains("replacedSessionId"));
  CHECK(renewed["streamCount"] == 2);
  // A replaceSessionId that names nothing open: a plain open, 409 here.
  auto plain = open_session(*cli, user,
                            R"({"sessionId":"car","replaceSessionId":"nope"})");
  CHECK(require_object(plain, 409)["streamCount"] == 2);
  // Bad values are a 400 naming the field, and change nothing.
  check_field_error(open_session(*cli, user, R"({"replaceSessionId":"a b"})"),
                    "replaceSessionId");
  check_field_error(
    open_session(*cli, user, R"({"sessionId":"x","replaceSessionId":"x"})"),
    "replaceSessionId");
  CHECK(require_listing(*cli, user).count == 2);
}

TEST_CASE("201 and 200 session answers advise a heartbeat interval of a "
          "third of the TTL, at least 1 s",
          "[blackbox]") {
  service_process svc{{"--min-ttl=1"}};
  auto cli = make_client(svc.port());
  for (auto [ttl, interval] : std::vector<std::pair<int, int>>{
         {60, 20}, {5, 1}, {1, 1}, {2, 1}, {10, 3}, {3600, 1200}}) {
    INFO("ttlSeconds " << ttl);
    auto sid = "t" + std::to_string(ttl);
    auto created = require_object(
      open_session(*cli, "82", open_body(sid, ttl)), 201);
    CHECK(created["heartbeatIntervalSeconds"] == interval);
    auto renewed = heartbeat(*cli, "82", sid);
    if (ttl <= 2 && renewed.status == 404) {
      // A machine that stalled for the whole lease: it ran out, rightly.
      WARN("the " << ttl << " s lease ran out before its heartbeat");
      continue;
    }
    auto beat = require_object(renewed, 200);
    CHECK(beat["heartbeatIntervalSeconds"] == interval);
    auto closed = close_session(*cli, "82", sid).status;
    CHECK((closed == 200 || (ttl <= 2 && closed == 404)));
  }
  // Without ttlSeconds: the default 60 s.
  CHECK(require_object(open_session(*cli, "82"), 201)["heartbeatIntervalSeconds"]
        == 20);
}
