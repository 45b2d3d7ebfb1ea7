// The API's mapping from requests to commands and from replies and errors
// to HTTP, on a real (threaded) actor system.

#include "http/api.hpp"

#include <catch2/catch.hpp>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/send.hpp"
#include "caf/typed_event_based_actor.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "actors/message_types.hpp"
#include "actors/shard_actor.hpp"
#include "cluster/cluster_view.hpp"

#include "api_fixture.hpp"

using namespace videostreams;
using namespace videostreams::testing;
namespace json = boost::json;

namespace {

/// A cluster as a node would publish it: two members and three shards, one
/// of them unowned, one with an epoch beyond 32 bits.
std::shared_ptr<cluster_view_box> two_member_cluster() {
  auto view = std::make_shared<cluster_view>();
  view->node_id = "n1";
  view->shard_count = 3;
  view->members.push_back(member_view{"n1", "10.0.0.5", 8080, 4370, "up", 2,
                                      "2026-11-28T17:00:00.120Z"});
  view->members.push_back(member_view{"n2", "10.0.0.6", 8081, 4371,
                                      "joining", 0,
                                      "2026-11-28T17:00:01.000Z"});
  view->shards.push_back(shard_view{0, "n1", 7, "serving"});
  view->shards.push_back(shard_view{1, "", 0, "unowned"});
  view->shards.push_back(shard_view{2, "n1", 4294967301, "handing-off"});
  auto box = std::make_shared<cluster_view_box>();
  box->set(std::move(view));
  return box;
}

/// The keys of `obj`, sorted.
std::vector<std::string> keys_of(const json::object& obj) {
  std::vector<std::string> result;
  for (auto& kv : obj)
    result.emplace_back(kv.key());
  std::sort(result.begin(), result.end());
  return result;
}

using key_list = std::vector<std::string>;

} // namespace

TEST_CASE("legacy answers are the original JSON, byte for byte", "[unit]") {
  api_fixture f;
  CHECK(f.get("/api/startstream/1").body
        == R"({"streamStatus":{"isNewStreamAllowed":true,"streamCount":1}})");
  f.get("/api/startstream/001");
  f.get("/api/startstream/1");
  auto denied = f.get("/api/startstream/1");
  CHECK(denied.status == 200);
  CHECK(denied.body
        == R"({"streamStatus":{"isNewStreamAllowed":false,"streamCount":3}})");
  CHECK(f.get("/api/endstream/1").body
        == R"({"streamStatus":{"msg":"stream closed","streamCount":2}})");
  // A user the service never knew.
  auto unknown = f.get("/api/endstream/2");
  CHECK(unknown.status == 400);
  CHECK(unknown.body == R"({"msg":"user_id not present in the database"})");
}

TEST_CASE("endstream for a known user with nothing to close is the "
          "original's 400",
          "[unit]") {
  api_fixture f;
  f.get("/api/startstream/5");
  CHECK(f.get("/api/endstream/5").status == 200);
  // Its stream closed a moment ago: the user is known for an hour.
  auto none = f.get("/api/endstream/5");
  CHECK(none.status == 400);
  CHECK(none.body == R"({"msg":"no active streams to close for user"})");
  // Known because of an open v2 session, which endstream never closes.
  f.send("POST", "/api/v2/users/6/streams", R"({"sessionId":"tv"})");
  auto v2_only = f.get("/api/endstream/6");
  CHECK(v2_only.status == 400);
  CHECK(v2_only.body == R"({"msg":"no active streams to close for user"})");
  // Listing a user's streams does not make it known.
  f.send("GET", "/api/v2/users/7/streams");
  CHECK(f.get("/api/endstream/7").body
        == R"({"msg":"user_id not present in the database"})");
}

TEST_CASE("bad ids are 400 and change nothing", "[unit]") {
  api_fixture f;
  for (auto path : {"/api/startstream/-1", "/api/endstream/two",
                    "/api/startstream/9223372036854775808"}) {
    INFO(path);
    auto res = f.get(path);
    CHECK(res.status == 400);
    // The original's words (sic), and the field, as every 400 names one.
    CHECK(res.body
          == R"({"msg":"user_id is invalid , needs to be a number","field":"user_id"})");
  }
  // The v2 routes keep their own 400 shape.
  auto v2 = f.send("POST", "/api/v2/users/two/streams");
  CHECK(v2.status == 400);
  CHECK_THAT(v2.body, Catch::StartsWith(R"({"msg":"Bad Request")"));
  CHECK(f.counters.grants == 0);
  CHECK(f.counters.live_user_actors == 0);
}

TEST_CASE("a preflight echoes the headers asked for, and varies with them",
          "[unit]") {
  api_fixture f;
  auto echoed = f.rest->handle(api_request{
    "OPTIONS", "/api/startstream/1", {}, {}, {}, "x-player-version,content-type"});
  CHECK(echoed.status == 204);
  CHECK(header(echoed, "Access-Control-Allow-Headers")
        == "x-player-version,content-type");
  CHECK(header(echoed, "Vary") == "Access-Control-Request-Headers");
  auto plain = f.rest->handle(api_request{"OPTIONS", "/api", {}, {}, {}, {}});
  CHECK(header(plain, "Access-Control-Allow-Headers")
        == "Content-Type, Authorization");
  CHECK(header(plain, "Vary") == "Access-Control-Request-Headers");
  // Anything that could end the header line when echoed is refused.
  for (std::string_view bad : {"x\r\nSet-Cookie: a=b", "x\ny", "a:b", "\"x\""}) {
    auto res = f.rest->handle(api_request{"OPTIONS", "/api", {}, {}, {}, bad});
    CHECK(res.status == 400);
    CHECK(json::parse(res.body).at("field")
          == "Access-Control-Request-Headers");
  }
}

TEST_CASE("a preflight's Access-Control-Request-Headers may be 1024 "
          "characters, not more",
          "[unit]") {
  api_fixture f;
  // A valid list of names, "x,x,x...", of exactly `n` characters.
  auto list_of = [](std::size_t n) {
    std::string text;
    while (text.size() < n)
      text += text.empty() ? "x" : ",x";
    text.resize(n);
    if (text.back() == ',')
      text.back() = 'y';
    return text;
  };
  auto longest = list_of(1024);
  REQUIRE(longest.size() == 1024);
  auto echoed = f.rest->handle(
    api_request{"OPTIONS", "/api/startstream/1", {}, {}, {}, longest});
  CHECK(echoed.status == 204);
  CHECK(header(echoed, "Access-Control-Allow-Headers") == longest);
  auto too_long = list_of(1025);
  REQUIRE(too_long.size() == 1025);
  auto refused = f.rest->handle(
    api_request{"OPTIONS", "/api/startstream/1", {}, {}, {}, too_long});
  CHECK(refused.status == 400);
  CHECK(json::parse(refused.body).at("field")
        == "Access-Control-Request-Headers");
  CHECK(header(refused, "Access-Control-Allow-Headers") != too_long);
}

TEST_CASE("unknown paths are 404, other methods 405 with Allow", "[unit]") {
  api_fixture f;
  auto missing = f.get("/api/startstream/");
  CHECK(missing.status == 404);
  CHECK(missing.body == R"({"msg":"Route not found"})");
  auto post = f.rest->handle(api_request{"POST", "/api/startstream/1", {}, {}});
  CHECK(post.status == 405);
  CHECK(post.body == R"({"msg":"Method not allowed"})");
  CHECK(header(post, "Allow") == "GET, OPTIONS");
  CHECK(f.counters.grants == 0);
  auto head = f.rest->handle(api_request{"HEAD", "/api/endstream/1", {}, {}});
  CHECK(head.status == 405);
  auto options = f.rest->handle(api_request{"OPTIONS", "/api", {}, {}});
  CHECK(options.status == 204);
  CHECK(header(options, "Access-Control-Allow-Methods")
        == "GET, HEAD, OPTIONS");
  CHECK(f.rest->handle(api_request{"OPTIONS", "/nope", {}, {}}).status == 404);
}

TEST_CASE("an owner that does not answer in time is a 503 with Retry-After",
          "[unit]") {
  api_fixture f{owners::silent};
  auto res = f.get("/api/startstream/1");
  CHECK(res.status == 503);
  CHECK(res.body == R"({"msg":"Service Unavailable"})");
  CHECK(header(res, "Retry-After") == "1");
  CHECK(f.metrics.requests(route::startstream, 503) == 1);
}

TEST_CASE("readyz follows the node's readiness", "[unit]") {
  api_fixture f;
  CHECK(f.get("/readyz").body == R"({"status":"ready","database":"none"})");
  f.rest->set_readiness(readiness::stopping);
  auto res = f.get("/readyz");
  CHECK(res.status == 503);
  CHECK(res.body == R"({"status":"stopping","database":"none"})");
}

TEST_CASE("metrics count requests by route and status", "[unit]") {
  api_fixture f;
  f.get("/api/startstream/1");
  f.get("/api/startstream/x");
  f.get("/nowhere");
  CHECK(f.metrics.requests(route::startstream, 200) == 1);
  CHECK(f.metrics.requests(route::startstream, 400) == 1);
  CHECK(f.metrics.requests(route::unmatched, 404) == 1);
  auto text = f.get("/metrics").body;
  CHECK_THAT(text, Catch::Contains(
    R"(videostreams_http_requests_total{route="/api/startstream/:user_id",code="200"} 1)"));
  CHECK_THAT(text, Catch::Contains("videostreams_stream_grants_total 1\n"));
  CHECK_THAT(text, Catch::Contains("videostreams_open_streams 1\n"));
  CHECK_THAT(text, Catch::Contains(
    R"(videostreams_http_request_duration_seconds_count{route="/api/startstream/:user_id"} 2)"));
}

TEST_CASE("v2 sessions: 201, 200 on retry, 409 with the sessions", "[unit]") {
  api_fixture f;
  auto base = std::string{"/api/v2/users/12/streams"};
  auto created = f.send("POST", base, R"({"sessionId":"a","ttlSeconds":30})");
  CHECK(created.status == 201);
  auto body = json::parse(created.body).as_object();
  CHECK(body.at("userId") == 12);
  CHECK(body.at("sessionId") == "a");
  CHECK(body.at("streamCount") == 1);
  CHECK(body.at("maxStreams") == 3);
  CHECK(body.at("expiresAt").as_string().size() == 24); // ...T..:..:...000Z
  CHECK(body.at("heartbeatIntervalSeconds") == 10);  // a third of 30
  auto retry = f.send("POST", base, R"({"sessionId":"a"})");
  CHECK(retry.status == 200);
  CHECK(json::parse(retry.body).at("streamCount") == 1);
  auto generated = f.send_json("POST", base);
  CHECK(generated.at("sessionId").as_string().size() == 32);
  f.get("/api/startstream/12");
  auto full = f.send("POST", base, R"({"sessionId":"d"})");
  CHECK(full.status == 409);
  auto conflict = json::parse(full.body).as_object();
  CHECK(conflict.at("msg") == "stream limit reached");
  CHECK(conflict.at("streamCount") == 3);
  auto& sessions = conflict.at("sessions").as_array();
  REQUIRE(sessions.size() == 3);
  CHECK(sessions[0].at("sessionId") == "a");
  CHECK(sessions[2].at("sessionId").is_null()); // the startstream stream
  CHECK(sessions[2].at("expiresAt").is_null());
  CHECK(f.get("/api/startstream/12").body
        == R"({"streamStatus":{"isNewStreamAllowed":false,"streamCount":3}})");
}

TEST_CASE("v2 replaceSessionId ends the named session and opens the new "
          "one in one decision",
          "[unit]") {
  api_fixture f;
  auto base = std::string{"/api/v2/users/15/streams"};
  for (auto id : {"a", "b", "c"})
    CHECK(f.send("POST", base, "{\"sessionId\":\"" + std::string{id} + "\"}")
            .status
          == 201);
  CHECK(f.send("POST", base, R"({"sessionId":"d"})").status == 409);
  auto taken = f.send("POST", base, R"({"sessionId":"d","replaceSessionId":"b"})");
  CHECK(taken.status == 201);
  auto body = json::parse(taken.body).as_object();
  CHECK(body.at("sessionId") == "d");
  CHECK(body.at("replacedSessionId") == "b");
  CHECK(body.at("streamCount") == 3);
  CHECK(f.counters.open_streams == 3);
  // The replaced device is told why its stream ended.
  CHECK(f.send("PUT", base + "/b").status == 410);
  // A retry of the same replace: d is open, b already gone: a renewal.
  auto retry = f.send("POST", base, R"({"sessionId":"d","replaceSessionId":"b"})");
  CHECK(retry.status == 200);
  CHECK(json::parse(retry.body).as_object().count("replacedSessionId") == 0);
  // A replaceSessionId that names no open session: a plain open, so at the
  // limit a 409 that changes nothing.
  auto unknown = f.send("POST", base, R"({"sessionId":"e","replaceSessionId":"zz"})");
  CHECK(unknown.status == 409);
  CHECK(f.send_json("GET", base).at("streamCount") == 3);
  f.send("DELETE", base + "/a");
  CHECK(f.send("POST", base, R"({"sessionId":"e","replaceSessionId":"zz"})")
          .status
        == 201);
  CHECK(f.counters.open_streams == 3);
}

TEST_CASE("v2 heartbeat, delete and list", "[unit]") {
  api_fixture f;
  f.send("POST", "/api/v2/users/13/streams", R"({"sessionId":"a"})");
  auto hb = f.send("PUT", "/api/v2/users/13/streams/a");
  CHECK(hb.status == 200);
  CHECK(json::parse(hb.body).at("sessionId") == "a");
  auto unknown = f.send("PUT", "/api/v2/users/13/streams/b");
  CHECK(unknown.status == 404);
  CHECK_THAT(std::string{json::parse(unknown.body).at("detail").as_string()},
             Catch::Contains("POST /api/v2/users/13/streams"));
  auto list = f.send_json("GET", "/api/v2/users/13/streams");
  CHECK(list.at("streamCount") == 1);
  CHECK(list.at("sessions").as_array().size() == 1);
  auto del = f.send("DELETE", "/api/v2/users/13/streams/a");
  CHECK(del.status == 200);
  CHECK(del.body == R"({"msg":"stream closed","streamCount":0})");
  CHECK(f.send("DELETE", "/api/v2/users/13/streams/a").status == 404);
  // Closed by a DELETE: its own heartbeat learns why, for one TTL.
  auto kicked = f.send("PUT", "/api/v2/users/13/streams/a");
  CHECK(kicked.status == 410);
  auto gone = json::parse(kicked.body).as_object();
  CHECK(gone.at("msg") == "stream ended by another device");
  CHECK(gone.at("sessionId") == "a");
  CHECK(gone.at("detail").is_string());
  CHECK(f.send("HEAD", "/api/v2/users/13/streams").status == 200);
}

TEST_CASE("v2 bad input is a 400 naming the field and changes nothing",
          "[unit]") {
  api_fixture f;
  auto field_of = [&](std::string_view method, std::string_view path,
                      std::string_view body) {
    auto res = f.send(method, path, body);
    CHECK(res.status == 400);
    return std::string{json::parse(res.body).at("field").as_string()};
  };
  auto base = "/api/v2/users/14/streams";
  CHECK(field_of("POST", base, R"({"ttlSeconds":4})") == "ttlSeconds");
  CHECK(field_of("POST", base, R"({"ttlSeconds":3601})") == "ttlSeconds");
  CHECK(field_of("POST", base, R"({"ttlSeconds":"60"})") == "ttlSeconds");
  CHECK(field_of("POST", base, R"({"sessionId":""})") == "sessionId");
  CHECK(field_of("POST", base, R"({"sessionId":"a b"})") == "sessionId");
  CHECK(field_of("POST", base, R"({"sessionId":1})") == "sessionId");
  CHECK(field_of("POST", base, "[]") == "body");
  CHECK(field_of("POST", base, "{") == "body");
  CHECK(field_of("POST", "/api/v2/users/x/streams", "") == "user_id");
  CHECK(field_of("PUT", "/api/v2/users/14/streams/a%b", "") == "session_id");
  CHECK(field_of("PUT", "/api/v2/users/14/streams/a", "7") == "body");
  CHECK(field_of("POST", base, R"({"replaceSessionId":""})")
        == "replaceSessionId");
  CHECK(field_of("POST", base, R"({"replaceSessionId":7})")
        == "replaceSessionId");
  CHECK(field_of("POST", base, R"({"sessionId":"a","replaceSessionId":"a"})")
        == "replaceSessionId");
  CHECK(f.counters.grants == 0);
  CHECK(f.counters.live_user_actors == 0);
  // Unknown fields are ignored.
  CHECK(f.send("POST", base, R"({"sessionId":"ok","extra":{"x":1}})").status
        == 201);
}

TEST_CASE("limit endpoints: 403 without a token configured", "[unit]") {
  api_fixture f;
  auto res = f.send("PUT", "/api/v2/users/15/limit", R"({"maxStreams":1})",
                    "Bearer anything");
  CHECK(res.status == 403);
}

TEST_CASE("limit endpoints: 401 for a wrong or missing token", "[unit]") {
  api_fixture f{owners::deciding, "s3cret"};
  auto path = "/api/v2/users/15/limit";
  CHECK(f.send("PUT", path, R"({"maxStreams":1})").status == 401);
  CHECK(f.send("PUT", path, R"({"maxStreams":1})", "Bearer s3cre").status
        == 401);
  CHECK(f.send("PUT", path, R"({"maxStreams":1})", "Bearer s3cret2").status
        == 401);
  CHECK(f.send("PUT", path, R"({"maxStreams":1})", "s3cret").status == 401);
  CHECK(f.send("DELETE", path, {}, "Bearer nope").status == 401);
  CHECK(f.counters.live_user_actors == 0);
}

TEST_CASE("limit endpoints check operator access before the user id",
          "[unit]") {
  // A bad user id is not revealed as a 400 to a caller without access.
  SECTION("with a token configured, a missing or wrong one is a 401") {
    api_fixture f{owners::deciding, "s3cret"};
    auto path = "/api/v2/users/abc/limit";
    CHECK(f.send("PUT", path, R"({"maxStreams":1})").status == 401);
    CHECK(f.send("PUT", path, R"({"maxStreams":1})", "Bearer wrong").status
          == 401);
    CHECK(f.send("DELETE", path).status == 401);
    CHECK(f.send("DELETE", path, {}, "Bearer wrong").status == 401);
    // With the token, the bad id is a 400.
    CHECK(f.send("PUT", path, R"({"maxStreams":1})", "Bearer s3cret").status
          == 400);
  }
  SECTION("without a token configured, it is a 403") {
    api_fixture f;
    auto path = "/api/v2/users/abc/limit";
    CHECK(f.send("PUT", path, R"({"maxStreams":1})").status == 403);
    CHECK(f.send("PUT", path, R"({"maxStreams":1})", "Bearer x").status
          == 403);
    CHECK(f.send("DELETE", path).status == 403);
  }
}

TEST_CASE("limit endpoints set and clear a user's limit", "[unit]") {
  api_fixture f{owners::deciding, "s3cret"};
  auto path = "/api/v2/users/16/limit";
  auto auth = "Bearer s3cret";
  auto set = f.send("PUT", path, R"({"maxStreams":1})", auth);
  CHECK(set.status == 200);
  CHECK(set.body == R"({"userId":16,"maxStreams":1})");
  CHECK(f.get("/api/startstream/16").body
        == R"({"streamStatus":{"isNewStreamAllowed":true,"streamCount":1}})");
  CHECK(f.get("/api/startstream/16").body
        == R"({"streamStatus":{"isNewStreamAllowed":false,"streamCount":1}})");
  CHECK(f.send("PUT", path, R"({"maxStreams":1001})", auth).status == 400);
  CHECK(f.send("PUT", path, R"({})", auth).status == 400);
  CHECK(f.send("PUT", path, R"({"maxStreams":2})", "bearer s3cret").status
        == 200); // the scheme is case-insensitive
  auto cleared = f.send("DELETE", path, {}, auth);
  CHECK(cleared.status == 200);
  CHECK(cleared.body == R"({"userId":16,"maxStreams":3})");
  CHECK(f.get("/api/startstream/16").body
        == R"({"streamStatus":{"isNewStreamAllowed":true,"streamCount":2}})");
}

TEST_CASE("an owner that answers unavailable makes a 503 with Retry-After",
          "[unit]") {
  api_fixture f{owners::unavailable};
  auto legacy = f.get("/api/startstream/1");
  CHECK(legacy.status == 503);
  CHECK(legacy.body == R"({"msg":"Service Unavailable"})");
  CHECK(header(legacy, "Retry-After") == "1");
  CHECK(f.metrics.requests(route::startstream, 503) == 1);
  auto ended = f.get("/api/endstream/1");
  CHECK(ended.status == 503);
  CHECK(header(ended, "Retry-After") == "1");
  auto session = f.send("POST", "/api/v2/users/1/streams");
  CHECK(session.status == 503);
  CHECK(header(session, "Retry-After") == "1");
}

TEST_CASE("while the node is starting, user requests are a 503 with "
          "Retry-After",
          "[unit]") {
  api_fixture f;
  f.rest->set_readiness(readiness::starting);
  auto legacy = f.get("/api/startstream/1");
  CHECK(legacy.status == 503);
  CHECK(legacy.body == R"({"msg":"Service Unavailable"})");
  CHECK(header(legacy, "Retry-After") == "1");
  auto ended = f.get("/api/endstream/1");
  CHECK(ended.status == 503);
  CHECK(ended.body == R"({"msg":"Service Unavailable"})");
  CHECK(header(ended, "Retry-After") == "1");
  auto session = f.send("POST", "/api/v2/users/1/streams");
  CHECK(session.status == 503);
  CHECK(session.body == R"({"msg":"Service Unavailable"})");
  CHECK(header(session, "Retry-After") == "1");
  CHECK(f.counters.grants == 0);
}

TEST_CASE("GET /api/cluster without an admin token is open and shows the "
          "view in the documented shape",
          "[unit]") {
  api_fixture f{owners::deciding, {}, two_member_cluster()};
  auto res = f.get("/api/cluster");
  REQUIRE(res.status == 200);
  CHECK(res.content_type == "application/json; charset=utf-8");
  auto body = json::parse(res.body).as_object();
  CHECK(keys_of(body) == key_list{"members", "nodeId", "shardCount",
                                  "shards"});
  CHECK(body.at("nodeId") == "n1");
  CHECK(body.at("shardCount").is_int64());
  CHECK(body.at("shardCount") == 3);
  auto& members = body.at("members").as_array();
  REQUIRE(members.size() == 2);
  for (auto& m : members) {
    CHECK(keys_of(m.as_object())
          == key_list{"advertiseHost", "clusterPort", "httpPort",
                      "lastHeartbeat", "nodeId", "shards", "status"});
    CHECK(m.at("httpPort").is_int64());
    CHECK(m.at("clusterPort").is_int64());
    CHECK(m.at("shards").is_int64());
  }
  CHECK(members[0].at("nodeId") == "n1");
  CHECK(members[0].at("advertiseHost") == "10.0.0.5");
  CHECK(members[0].at("httpPort") == 8080);
  CHECK(members[0].at("clusterPort") == 4370);
  CHECK(members[0].at("status") == "up");
  CHECK(members[0].at("shards") == 2);
  CHECK(members[0].at("lastHeartbeat") == "2026-11-28T17:00:00.120Z");
  CHECK(members[1].at("nodeId") == "n2");
  CHECK(members[1].at("advertiseHost") == "10.0.0.6");
  CHECK(members[1].at("httpPort") == 8081);
  CHECK(members[1].at("clusterPort") == 4371);
  CHECK(members[1].at("status") == "joining");
  CHECK(members[1].at("shards") == 0);
  CHECK(members[1].at("lastHeartbeat") == "2026-11-28T17:00:01.000Z");
  auto& shards = body.at("shards").as_array();
  REQUIRE(shards.size() == 3);
  for (auto& s : shards) {
    CHECK(keys_of(s.as_object())
          == key_list{"epoch", "owner", "shard", "state"});
    CHECK(s.at("shard").is_int64());
    CHECK(s.at("epoch").is_int64());
  }
  CHECK(shards[0].at("shard") == 0);
  CHECK(shards[0].at("owner") == "n1");
  CHECK(shards[0].at("epoch") == 7);
  CHECK(shards[0].at("state") == "serving");
  CHECK(shards[1].at("shard") == 1);
  CHECK(shards[1].at("owner").is_null());
  CHECK(shards[1].at("epoch") == 0);
  CHECK(shards[1].at("state") == "unowned");
  CHECK(shards[2].at("shard") == 2);
  CHECK(shards[2].at("owner") == "n1");
  CHECK(shards[2].at("epoch") == 4294967301);
  CHECK(shards[2].at("state") == "handing-off");
  // Any bearer token, or none, is fine while no token is configured.
  CHECK(f.send("GET", "/api/cluster", {}, "Bearer whatever").status == 200);
  CHECK(f.metrics.requests(route::cluster, 200) == 2);
}

TEST_CASE("GET /api/cluster with an admin token needs that bearer token",
          "[unit]") {
  api_fixture f{owners::deciding, "s3cret", two_member_cluster()};
  for (std::string_view auth :
       {"", "Bearer", "Bearer ", "Bearer nope", "Bearer s3cre",
        "Bearer s3cret2", "Basic s3cret", "s3cret"}) {
    INFO("Authorization: " << auth);
    auto res = f.send("GET", "/api/cluster", {}, auth);
    CHECK(res.status == 401);
    CHECK(res.body == R"({"msg":"Unauthorized"})");
    CHECK(header(res, "WWW-Authenticate") == "Bearer");
  }
  for (std::string_view auth :
       {"Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR s3cret"}) {
    INFO("Authorization: " << auth);
    auto res = f.send("GET", "/api/cluster", {}, auth);
    CHECK(res.status == 200);
    CHECK(json::parse(res.body).at("nodeId") == "n1");
  }
}

TEST_CASE("POST /api/cluster is 405 and lists the methods it takes",
          "[unit]") {
  api_fixture f{owners::deciding, {}, two_member_cluster()};
  auto res = f.send("POST", "/api/cluster", "{}");
  CHECK(res.status == 405);
  CHECK(res.body == R"({"msg":"Method not allowed"})");
  CHECK(header(res, "Allow") == "GET, HEAD, OPTIONS");
  CHECK(f.send("HEAD", "/api/cluster").status == 200);
  auto options = f.send("OPTIONS", "/api/cluster");
  CHECK(options.status == 204);
  CHECK(header(options, "Access-Control-Allow-Methods")
        == "GET, HEAD, OPTIONS");
}

TEST_CASE("GET /api/cluster is 503 with Retry-After until a view is "
          "published",
          "[unit]") {
  SECTION("no box at all, as on a node without a cluster") {
    api_fixture f;
    auto res = f.get("/api/cluster");
    CHECK(res.status == 503);
    CHECK(res.body == R"({"msg":"Service Unavailable"})");
    CHECK(header(res, "Retry-After") == "1");
  }
  SECTION("a box with nothing in it yet, then a view") {
    auto box = std::make_shared<cluster_view_box>();
    api_fixture f{owners::deciding, "s3cret", box};
    // The token is checked first: nothing is revealed without it.
    CHECK(f.get("/api/cluster").status == 401);
    auto res = f.send("GET", "/api/cluster", {}, "Bearer s3cret");
    CHECK(res.status == 503);
    CHECK(header(res, "Retry-After") == "1");
    box->set(two_member_cluster()->get());
    CHECK(f.send("GET", "/api/cluster", {}, "Bearer s3cret").status == 200);
  }
}

TEST_CASE("the router gives a command its caller's deadline, so one that "
          "arrives after it decides nothing",
          "[unit]") {
  api_fixture f;
  user_command start;
  start.op = user_op::start_legacy;
  start.user = 21;
  // A caller that waits no time at all: its command always reaches the
  // user actor after the caller gave up, and must not leave it a stream
  // that nobody was told about.
  auto late = f.users_router->call(start, std::chrono::nanoseconds{0});
  if (late)
    CHECK(late->outcome == stream_outcome::unavailable);
  user_command list;
  list.op = user_op::list_sessions;
  list.user = 21;
  auto listed = f.users_router->call(list, std::chrono::seconds{30});
  REQUIRE(listed);
  CHECK(listed->outcome == stream_outcome::listed);
  CHECK(listed->stream_count == 0);
  CHECK(f.counters.late_commands == 1);
}

TEST_CASE("while the node is starting, a limit change is a 503 and changes "
          "nothing",
          "[unit]") {
  api_fixture f{owners::deciding, "s3cret"};
  f.rest->set_readiness(readiness::starting);
  // The limits are part of the state being loaded: one set now could be
  // overwritten by the loading, after the operator was told it was made.
  auto path = "/api/v2/users/22/limit";
  auto set = f.send("PUT", path, R"({"maxStreams":1})", "Bearer s3cret");
  CHECK(set.status == 503);
  CHECK(set.body == R"({"msg":"Service Unavailable"})");
  CHECK(header(set, "Retry-After") == "1");
  auto cleared = f.send("DELETE", path, {}, "Bearer s3cret");
  CHECK(cleared.status == 503);
  CHECK(header(cleared, "Retry-After") == "1");
  f.rest->set_readiness(readiness::ready);
  auto listed = f.send_json("GET", "/api/v2/users/22/streams");
  CHECK(listed.at("maxStreams") == 3);
}
