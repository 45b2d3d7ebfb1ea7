#pragma once

// The API over four shards on a real (threaded) actor system, for the unit
// tests of the API's routes (api_test.cpp, operator_api_test.cpp).

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/send.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "actors/message_types.hpp"
#include "actors/router.hpp"
#include "actors/shard_actor.hpp"
#include "cluster/cluster_view.hpp"
#include "http/api.hpp"
#include "http/metrics.hpp"

namespace videostreams::testing {

struct threaded_config : caf::actor_system_config {
  threaded_config() {
    register_message_types(*this);
    set("logger.verbosity", caf::atom("quiet"));
  }
};

/// An endpoint that takes every command and never answers, like an owner
/// that is stuck or unreachable.
inline user_endpoint::behavior_type silent_endpoint() {
  return {
    [](user_command&) -> caf::result<user_reply> {
      return caf::delegated<user_reply>{};
    },
    [](local_call&) {},
  };
}

/// An endpoint that answers every command at once with `unavailable`, like
/// the cluster's gate when no owner could decide in time.
inline user_endpoint::behavior_type unavailable_endpoint() {
  return {
    [](user_command&) {
      user_reply r;
      r.outcome = stream_outcome::unavailable;
      return r;
    },
    [](local_call& call) {
      user_reply r;
      r.outcome = stream_outcome::unavailable;
      call.slot->fulfill(r);
    },
  };
}

/// What the fixture's endpoints do with a command.
enum class owners { deciding, silent, unavailable };

struct api_fixture {
  static constexpr std::uint32_t shard_count = 4;

  explicit api_fixture(owners kind = owners::deciding,
                       std::string admin_token = {},
                       std::shared_ptr<const cluster_view_box> cluster = {})
    : sys(cfg) {
    auto users = std::make_shared<user_settings>();
    users->counters = &counters;
    for (std::uint32_t i = 0; i < shard_count; ++i) {
      switch (kind) {
        case owners::deciding:
          endpoints.push_back(spawn_shard_actor(sys, {users}));
          break;
        case owners::silent:
          endpoints.push_back(sys.spawn(silent_endpoint));
          break;
        case owners::unavailable:
          endpoints.push_back(sys.spawn(unavailable_endpoint));
          break;
      }
    }
    users_router = std::make_unique<router>(endpoints);
    api_settings settings;
    settings.request_timeout = std::chrono::milliseconds{
      kind == owners::silent ? 50 : 5000};
    settings.admin_token = std::move(admin_token);
    settings.cluster = std::move(cluster);
    rest = std::make_unique<api>(*users_router, settings, metrics, counters);
    rest->set_readiness(readiness::ready);
  }

  ~api_fixture() {
    for (auto& e : endpoints)
      caf::anon_send_exit(e, caf::exit_reason::user_shutdown);
  }

  api_response get(std::string_view path) {
    return rest->handle(api_request{"GET", path, {}, {}});
  }

  api_response send(std::string_view method, std::string_view path,
                    std::string_view body = {},
                    std::string_view authorization = {}) {
    return rest->handle(api_request{method, path, body, authorization});
  }

  /// Any request, as the HTTP server would hand it over.
  api_response handle(const api_request& req) {
    return rest->handle(req);
  }

  boost::json::object send_json(std::string_view method, std::string_view path,
                         std::string_view body = {}) {
    auto res = send(method, path, body);
    return boost::json::parse(res.body).as_object();
  }

  stream_counters counters;
  http_metrics metrics;
  threaded_config cfg;
  caf::actor_system sys;
  std::vector<user_endpoint> endpoints;
  std::unique_ptr<router> users_router;
  std::unique_ptr<api> rest;
};

inline std::string header(const api_response& res,
                          std::string_view name) {
  for (auto& [k, v] : res.headers)
    if (k == name)
      return v;
  return {};
}

} // namespace videostreams::testing
