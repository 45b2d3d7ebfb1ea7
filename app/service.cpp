#include "app/service.hpp"

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/atom.hpp"
#include "caf/send.hpp"

#include "actors/message_types.hpp"
#include "actors/router.hpp"
#include "actors/shard_actor.hpp"
#include "actors/stream_counters.hpp"
#include "http/api.hpp"
#include "http/metrics.hpp"
#include "http/server.hpp"

namespace videostreams {

namespace {

class actor_config : public caf::actor_system_config {
public:
  explicit actor_config(const options& opts) {
    register_message_types(*this);
    set("scheduler.max-threads", static_cast<size_t>(opts.actor_threads));
    set("logger.verbosity", caf::atom("quiet"));
    // Scheduler polling, measured with bench/run on 2 cores: a worker that
    // spins long before sleeping takes CPU from the HTTP threads, and CAF's
    // "moderate" phase (sleeping 50 us between polls) delays every message
    // that arrives meanwhile. Poll briefly, then sleep on the condition
    // variable that an enqueue signals.
    set("work-stealing.aggressive-poll-attempts", size_t{20});
    set("work-stealing.moderate-poll-attempts", size_t{0});
  }
};

std::vector<shard_actor> spawn_shards(caf::actor_system& sys,
                                      const options& opts,
                                      stream_counters& counters,
                                      heap_trimmer& trimmer) {
  auto users = std::make_shared<user_settings>();
  users->default_limit = opts.max_streams;
  users->default_ttl_seconds = opts.default_ttl_seconds;
  users->legacy_ttl_seconds = opts.legacy_stream_ttl_seconds;
  users->counters = &counters;
  shard_settings settings;
  settings.users = users;
  settings.passivate_after = opts.passivate_after;
  settings.trimmer = &trimmer;
  std::vector<shard_actor> shards;
  shards.reserve(opts.shards);
  for (std::uint32_t i = 0; i < opts.shards; ++i) {
    settings.index = i;
    shards.push_back(spawn_shard_actor(sys, settings));
  }
  return shards;
}

api_settings api_options(const options& opts) {
  api_settings result;
  result.request_timeout = opts.request_timeout;
  result.min_ttl_seconds = opts.min_ttl_seconds;
  result.max_ttl_seconds = opts.max_ttl_seconds;
  result.admin_token = opts.admin_token;
  return result;
}

http_server_settings http_settings(const options& opts) {
  http_server_settings result;
  result.bind_address = opts.bind;
  result.port = opts.port;
  result.threads = opts.http_threads;
  result.keep_alive_timeout_seconds = opts.keep_alive_timeout_seconds;
  result.keep_alive_max_requests = opts.keep_alive_max_requests;
  return result;
}

} // namespace

struct service::impl {
  explicit impl(const options& opts)
    : cfg(opts),
      sys(cfg),
      users(spawn_shards(sys, opts, counters, trimmer)),
      rest(users, api_options(opts), metrics, counters),
      http(rest, http_settings(opts)) {
    // Nothing else to do.
  }

  ~impl() {
    // Shards stop their user actors as they exit, so the actor system's
    // destructor finds every actor done.
    for (auto& shard : users.shards())
      caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
  }

  stream_counters counters;
  heap_trimmer trimmer;
  http_metrics metrics;
  actor_config cfg;
  caf::actor_system sys;
  router users;
  api rest;
  http_server http;
};

service::service(const options& opts) : impl_(std::make_unique<impl>(opts)) {
  // Nothing else to do.
}

service::~service() = default;

int service::bind() {
  return impl_->http.bind();
}

void service::run() {
  impl_->rest.set_readiness(readiness::ready);
  impl_->http.run();
}

void service::stop() {
  impl_->rest.set_readiness(readiness::stopping);
  impl_->http.stop();
}

} // namespace videostreams
