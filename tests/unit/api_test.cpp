// The API's mapping from requests to commands and from replies and errors
// to HTTP, on a real (threaded) actor system.

#include "http/api.hpp"

#include <catch2/catch.hpp>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/send.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "actors/message_types.hpp"

using namespace videostreams;

namespace {

struct threaded_config : caf::actor_system_config {
  threaded_config() {
    register_message_types(*this);
    set("logger.verbosity", caf::atom("quiet"));
  }
};

/// A shard that takes every command and never answers, like an owner that
/// is stuck or unreachable.
shard_actor::behavior_type silent_shard() {
  return {
    [](user_command&) -> caf::result<user_reply> {
      return caf::delegated<user_reply>{};
    },
    [](local_call&) {},
    [](tick_atom) {},
    [](stats_atom) { return shard_stats{}; },
  };
}

struct api_fixture {
  explicit api_fixture(bool silent = false) : sys(cfg) {
    auto users = std::make_shared<user_settings>();
    users->counters = &counters;
    std::vector<shard_actor> shards;
    for (int i = 0; i < 4; ++i)
      shards.push_back(silent ? sys.spawn(silent_shard)
                              : spawn_shard_actor(sys, {users}));
    users_router = std::make_unique<router>(std::move(shards));
    api_settings settings;
    settings.request_timeout = std::chrono::milliseconds{silent ? 50 : 5000};
    rest = std::make_unique<api>(*users_router, settings, metrics, counters);
    rest->set_readiness(readiness::ready);
  }

  ~api_fixture() {
    for (auto& s : users_router->shards())
      caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
  }

  api_response get(std::string_view path) {
    return rest->handle(api_request{"GET", path, {}});
  }

  stream_counters counters;
  http_metrics metrics;
  threaded_config cfg;
  caf::actor_system sys;
  std::unique_ptr<router> users_router;
  std::unique_ptr<api> rest;
};

std::string header(const api_response& res, std::string_view name) {
  for (auto& [k, v] : res.headers)
    if (k == name)
      return v;
  return {};
}

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
  CHECK(f.get("/api/endstream/2").body
        == R"({"streamStatus":{"msg":"no open stream","streamCount":0}})");
}

TEST_CASE("bad ids are 400 and change nothing", "[unit]") {
  api_fixture f;
  auto res = f.get("/api/startstream/-1");
  CHECK(res.status == 400);
  CHECK_THAT(res.body, Catch::StartsWith(R"({"msg":"Bad Request")"));
  CHECK(f.counters.grants == 0);
  CHECK(f.counters.live_user_actors == 0);
}

TEST_CASE("unknown paths are 404, other methods 405 with Allow", "[unit]") {
  api_fixture f;
  auto missing = f.get("/api/startstream/");
  CHECK(missing.status == 404);
  CHECK(missing.body == R"({"msg":"Route not found"})");
  auto post = f.rest->handle(api_request{"POST", "/api/startstream/1", {}});
  CHECK(post.status == 405);
  CHECK(post.body == R"({"msg":"Method not allowed"})");
  CHECK(header(post, "Allow") == "GET, OPTIONS");
  CHECK(f.counters.grants == 0);
  auto head = f.rest->handle(api_request{"HEAD", "/api/endstream/1", {}});
  CHECK(head.status == 405);
  auto options = f.rest->handle(api_request{"OPTIONS", "/api", {}});
  CHECK(options.status == 204);
  CHECK(header(options, "Access-Control-Allow-Methods")
        == "GET, HEAD, OPTIONS");
  CHECK(f.rest->handle(api_request{"OPTIONS", "/nope", {}}).status == 404);
}

TEST_CASE("an owner that does not answer in time is a 503 with Retry-After",
          "[unit]") {
  api_fixture f{true};
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
