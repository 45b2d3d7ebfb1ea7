#include "app/service.hpp"

#include <chrono>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <thread>

#include <unistd.h>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/atom.hpp"
#include "caf/scoped_actor.hpp"
#include "caf/send.hpp"

#include "actors/message_types.hpp"
#include "actors/router.hpp"
#include "actors/shard_actor.hpp"
#include "actors/stream_counters.hpp"
#include "persistence/persistence_actor.hpp"
#include "persistence/persistence_error.hpp"
#include "persistence/schema.hpp"
#include "persistence/stream_store.hpp"
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
                                      heap_trimmer& trimmer,
                                      const persistence_actor& writer) {
  auto users = std::make_shared<user_settings>();
  if (writer) {
    users->change_sink = caf::actor_cast<caf::actor>(writer);
    users->sync_grants = opts.sync_durability;
  }
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


std::vector<std::uint32_t> all_shards(std::uint32_t count) {
  std::vector<std::uint32_t> result(count);
  for (std::uint32_t i = 0; i < count; ++i)
    result[i] = i;
  return result;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0')
    return "videostreams";
  return buf;
}

pg_connection connect_or_throw(const std::string& url) {
  auto db = pg_connection::connect(url);
  if (!db)
    throw std::runtime_error(describe(db.error()));
  return std::move(*db);
}

} // namespace

struct service::impl {
  explicit impl(const options& opts) : opts(opts), cfg(opts), sys(cfg) {
    if (!opts.database_url.empty())
      start_persistence();
    users = std::make_unique<router>(
      spawn_shards(sys, opts, counters, trimmer, writer));
    auto settings = api_options(opts);
    if (writer) {
      auto state = persistence;
      settings.database_status = [state] {
        return state->reachable.load() ? "ok" : "unreachable";
      };
    }
    rest = std::make_unique<api>(*users, settings, metrics, counters,
                                 persistence.get());
    http = std::make_unique<http_server>(*rest, http_settings(opts));
  }

  /// Connects, checks the schema, takes every shard (one node: the epochs
  /// rise at each start, fencing out any older process) and starts the
  /// persistence actor.
  void start_persistence() {
    auto db = connect_or_throw(opts.database_url);
    auto schema = schema_status(db);
    if (!schema)
      throw std::runtime_error(describe(schema.error()));
    for (auto& m : *schema)
      if (m.applied_at.empty())
        throw std::runtime_error("the database schema is not migrated: run "
                                 "`videostreams db migrate`");
    fold_settings folds;
    folds.min_changes = opts.fold_min_changes;
    // Folds write through a connection of their own, so that commits go on
    // meanwhile.
    auto store = std::make_shared<stream_store>(
      std::move(db), folds, connect_or_throw(opts.database_url));
    if (auto ready = store->prepare_for_commits(); !ready)
      throw std::runtime_error("cannot set up the writer's session: "
                               + describe(ready.error()));
    if (auto ready = store->prepare_for_folds(); !ready)
      throw std::runtime_error("cannot set up the folder's session: "
                               + describe(ready.error()));
    cancel_commit = store->connection().canceller();
    cancel_fold = store->fold_connection().canceller();
    auto epochs = store->take_shards(
      opts.node_id.empty() ? host_name() : opts.node_id,
      all_shards(opts.shards));
    if (!epochs)
      throw std::runtime_error(describe(epochs.error()));
    persistence = std::make_shared<persistence_counters>();
    persistence_settings settings;
    settings.flush_interval = opts.flush_interval;
    settings.max_backlog = opts.write_backlog;
    // Shorter than the HTTP wait, so that a slow commit is undone and
    // answered 503 by the user actor before the request gives up on it.
    settings.commit_timeout = opts.request_timeout * 3 / 4;
    writer = spawn_persistence_actor(sys, store, *epochs, settings,
                                     persistence);
  }

  /// Loads every open stream and limit into the shards, as passivated
  /// records, before the node answers for users.
  void recover() {
    if (!writer)
      return;
    stream_store loader{connect_or_throw(opts.database_url)};
    auto loaded = loader.load_users(all_shards(opts.shards),
                                    system_time_source{}.now());
    if (!loaded)
      throw std::runtime_error(describe(loaded.error()));
    caf::scoped_actor self{sys};
    for (auto& [user, record] : *loaded)
      self->send(users->shard_for(user), restore_atom::value, user,
                 std::move(record));
    // Messages from one sender arrive in order: once every shard answered
    // this, every restore was taken in.
    for (auto& shard : users->shards())
      self->request(shard, caf::infinite, restore_atom::value)
        .receive([](std::uint64_t) {},
                 [](caf::error& err) {
                   throw std::runtime_error(to_string(err));
                 });
    std::fprintf(stderr, "videostreams: recovered %zu users from the "
                         "database\n",
                 loaded->size());
  }

  /// Commits whatever the persistence actor still holds (bounded).
  void flush() {
    if (!writer)
      return;
    caf::anon_send(writer, flush_atom::value);
    for (int i = 0; i < 1000 && persistence->queue_depth.load() > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    auto left = persistence->queue_depth.load();
    if (left > 0) {
      std::fprintf(stderr,
                   "videostreams: %lld changes not written at exit\n",
                   static_cast<long long>(left));
      // The writer may be blocked in a commit that does not return (a
      // lock, a server that stopped answering): stop the persistence
      // actor, so nothing is retried, and cancel the statement, so the
      // writer's thread ends and the process can exit.
      caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
      cancel_commit->cancel();
    }
    // A fold is background work, and the process waits for its thread:
    // cancel a running one rather than wait for it (between two of its
    // statements a cancel misses, hence the repeats).
    for (int i = 0; i < 100 && persistence->fold_running.load(); ++i) {
      cancel_fold->cancel();
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
  }

  ~impl() {
    // Shards stop their user actors as they exit, so the actor system's
    // destructor finds every actor done.
    for (auto& shard : users->shards())
      caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
    if (writer)
      caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
  }

  options opts;
  stream_counters counters;
  heap_trimmer trimmer;
  http_metrics metrics;
  std::shared_ptr<persistence_counters> persistence;
  /// Cancel the writer's and the folder's running statements (at exit).
  std::shared_ptr<pg_canceller> cancel_commit;
  std::shared_ptr<pg_canceller> cancel_fold;
  actor_config cfg;
  caf::actor_system sys;
  persistence_actor writer;
  std::unique_ptr<router> users;
  std::unique_ptr<api> rest;
  std::unique_ptr<http_server> http;
};

service::service(const options& opts) : impl_(std::make_unique<impl>(opts)) {
  // Nothing else to do.
}

service::~service() = default;

int service::bind() {
  return impl_->http->bind();
}

void service::run() {
  if (!impl_->writer) {
    impl_->rest->set_readiness(readiness::ready); // nothing to load
    impl_->http->run();
    return;
  }
  // Serve /healthz and /readyz ("starting") while the state loads; user
  // requests get 503 until then.
  std::exception_ptr failure;
  std::thread loader{[this, &failure] {
    try {
      impl_->recover();
      impl_->rest->set_readiness(readiness::ready);
    } catch (...) {
      failure = std::current_exception();
      impl_->http->stop();
    }
  }};
  impl_->http->run();
  loader.join();
  impl_->flush();
  if (failure)
    std::rethrow_exception(failure);
}

void service::stop() {
  impl_->rest->set_readiness(readiness::stopping);
  impl_->http->stop();
}

} // namespace videostreams
