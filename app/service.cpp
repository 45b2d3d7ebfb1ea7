#include "app/service.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <thread>

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/atom.hpp"
#include "caf/io/middleman.hpp"
#include "caf/scoped_actor.hpp"
#include "caf/send.hpp"

#include "actors/message_types.hpp"
#include "actors/router.hpp"
#include "actors/shard_actor.hpp"
#include "actors/shard_deadlines.hpp"
#include "actors/stream_counters.hpp"
#include "cluster/cluster_node.hpp"
#include "cluster/cluster_protocol.hpp"
#include "cluster/lease_keeper.hpp"
#include "cluster/lease_store.hpp"
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
    register_cluster_message_types(*this);
    set("scheduler.max-threads", static_cast<size_t>(opts.actor_threads));
    set("logger.verbosity", caf::atom("quiet"));
    // Scheduler polling, measured with bench/run on 2 cores: a worker that
    // spins long before sleeping takes CPU from the HTTP threads, and CAF's
    // "moderate" phase (sleeping 50 us between polls) delays every message
    // that arrives meanwhile. Poll briefly, then sleep on the condition
    // variable that an enqueue signals.
    set("work-stealing.aggressive-poll-attempts", size_t{20});
    set("work-stealing.moderate-poll-attempts", size_t{0});
    if (!opts.database_url.empty()) {
      // Nodes talk through the middleman. Heartbeats on every connection
      // let it drop a peer that stopped answering (a paused or cut-off
      // process) rather than wait for TCP, which may take minutes.
      load<caf::io::middleman>();
      set("middleman.heartbeat-interval",
          caf::timespan{std::chrono::milliseconds{500}});
      set("middleman.connection-timeout",
          caf::timespan{std::max(opts.lease_ttl,
                                 std::chrono::milliseconds{3000})});
      // Messages from other nodes are deserialized by the thread that
      // reads them, not handed to a worker thread first.
      set("middleman.workers", size_t{0});
    }
  }
};

api_settings api_options(const options& opts) {
  api_settings result;
  result.request_timeout = opts.request_timeout;
  result.min_ttl_seconds = opts.min_ttl_seconds;
  result.max_ttl_seconds = opts.max_ttl_seconds;
  result.admin_token = opts.admin_token;
  return result;
}

http_server_settings http_settings(const options& opts,
                                   std::shared_ptr<const event_log> log) {
  http_server_settings result;
  if (opts.access_log)
    result.access_log = std::move(log);
  result.bind_address = opts.bind;
  result.port = opts.port;
  result.threads = opts.http_threads;
  result.max_threads = std::max(opts.http_max_threads, opts.http_threads);
  result.max_connections = opts.max_connections;
  result.keep_alive_timeout = std::chrono::seconds{
    opts.keep_alive_timeout_seconds};
  result.keep_alive_max_requests = opts.keep_alive_max_requests;
  result.read_timeout = opts.read_timeout;
  result.write_timeout = opts.write_timeout;
  result.shutdown_timeout = opts.shutdown_timeout;
  return result;
}

/// The operations listener: the same edge on a small pool of its own, so
/// that probes never wait behind players.
http_server_settings ops_settings(const options& opts,
                                  std::shared_ptr<const event_log> log) {
  auto result = http_settings(opts, std::move(log));
  result.port = opts.ops_port;
  result.kind = listener_kind::ops;
  result.operations_only = true;
  result.threads = 2;
  result.max_threads = 16;
  result.max_connections = 1024;
  return result;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0')
    return "videostreams";
  return buf;
}

/// The address other nodes reach this one at, unless configured: the bind
/// address when it names one, else the first address the host name
/// resolves to (on Kubernetes, the pod's IP), else the host name itself.
std::string default_advertise_host(const options& opts) {
  if (opts.bind != "0.0.0.0" && opts.bind != "::" && !opts.bind.empty())
    return opts.bind;
  auto name = host_name();
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  std::string result = name;
  if (::getaddrinfo(name.c_str(), nullptr, &hints, &found) == 0
      && found != nullptr) {
    char text[NI_MAXHOST];
    if (::getnameinfo(found->ai_addr, found->ai_addrlen, text, sizeof(text),
                      nullptr, 0, NI_NUMERICHOST)
        == 0)
      result = text;
    ::freeaddrinfo(found);
  }
  return result;
}

/// What to do about a database the service cannot use, for the message
/// that refuses the start: migrate it, or run without one.
std::string database_advice(const options& opts) {
  std::string from = opts.database_url_origin.empty()
                       ? std::string{"--database-url"}
                       : opts.database_url_origin;
  std::string advice = " (the database named by " + from + "). To run in "
                       "memory without a database instead, start with "
                       "--database-url= (empty)";
  if (from == "DATABASE_URL" || from == "VIDEOSTREAMS_DATABASE_URL")
    advice += " or unset " + from;
  return advice + ".";
}

/// How long the writer waits for a commit (see `pg_timeouts::answer`). A
/// commit is one statement of at most 2,000 changes and takes milliseconds;
/// one that takes 10 s waits for a lock or a server that does not answer,
/// and it is retried on a new connection (a batch may be: it upserts and
/// deletes).
const pg_timeouts commit_timeouts{std::chrono::milliseconds{0},
                                  std::chrono::seconds{10}};

/// How long a fold or a shard load, which read or write a whole shard, may
/// take (then it fails and is tried again later).
const pg_timeouts bulk_timeouts{std::chrono::milliseconds{0},
                                std::chrono::seconds{60}};

pg_connection connect_or_throw(const std::string& url,
                               pg_timeouts timeouts = {}) {
  auto db = pg_connection::connect(url, timeouts);
  if (!db)
    throw std::runtime_error(describe(db.error()));
  return std::move(*db);
}

std::uint64_t new_incarnation() {
  std::random_device rd;
  auto x = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return x & 0x7fffffffffffffffULL; // a positive bigint
}

} // namespace

startup_refused::startup_refused(const std::string& what)
  : std::runtime_error(what) {
  // Nothing else to do.
}

struct service::impl {
  impl(const options& opts, std::shared_ptr<const event_log> events,
       out_of_service_handler out_of_service)
    : opts(opts),
      node_id(effective_node_id(opts)),
      log(std::move(events)),
      on_out_of_service(std::move(out_of_service)),
      cfg(opts),
      sys(cfg) {
    // A start that fails after actors were spawned (the cluster port taken,
    // say) must stop them, or the actor system's destructor waits for them
    // for good, and the process neither exits nor answers a signal.
    try {
      start();
    } catch (...) {
      stop_actors();
      throw;
    }
  }

  void start() {
    if (!valid_node_id(node_id))
      throw startup_refused("the host name '" + node_id
                            + "' is no valid node id: set --node-id (1 to 63 "
                              "characters of A-Z a-z 0-9 . _ -)");
    routes = std::make_shared<router>(opts.shards);
    metrics.set_build_info(VIDEOSTREAMS_VERSION, node_id,
                           opts.database_url.empty() ? "in-memory"
                                                     : "database");
    if (!opts.database_url.empty())
      start_persistence();
    auto settings = api_options(opts);
    if (writer) {
      auto state = persistence;
      settings.database_status = [state] {
        return state->reachable.load() ? "ok" : "unreachable";
      };
    }
    settings.cluster = cluster_view;
    settings.cluster_figures = cluster;
    rest = std::make_unique<api>(*routes, settings, metrics, counters,
                                 persistence.get());
    http = std::make_unique<http_server>(*rest, http_settings(opts, log),
                                         metrics);
    if (opts.ops_port >= 0)
      ops = std::make_unique<http_server>(*rest, ops_settings(opts, log),
                                          metrics);
    start_node();
  }

  /// Connects, checks the schema and the shard count, and starts the
  /// persistence actor, the lease keeper and the shard loader (each with a
  /// connection of its own). Shards come later, as the node takes them.
  void start_persistence() {
    auto connected = pg_connection::connect(opts.database_url,
                                            commit_timeouts);
    if (!connected)
      throw std::runtime_error("cannot connect to the database: "
                               + describe(connected.error())
                               + database_advice(opts));
    auto db = std::move(*connected);
    auto migrated = schema_migrated(db);
    if (!migrated)
      throw std::runtime_error(describe(migrated.error()));
    if (!*migrated)
      throw std::runtime_error("the database schema is not migrated: run "
                               "`videostreams db migrate` first"
                               + database_advice(opts));
    auto stored = stored_shard_count(db, opts.shards);
    if (!stored)
      throw std::runtime_error(describe(stored.error()));
    if (*stored != opts.shards)
      throw startup_refused(
        "--shards=" + std::to_string(opts.shards) + " differs from the "
        + std::to_string(*stored) + " shards this database's cluster has; "
        "start with --shards=" + std::to_string(*stored) + ", or change the "
        "count with `videostreams db reshard --shards="
        + std::to_string(opts.shards) + "` while every node is stopped");
    fold_settings folds;
    folds.min_changes = opts.fold_min_changes;
    // Folds write through a connection of their own, so that commits go on
    // meanwhile.
    auto store = std::make_shared<stream_store>(
      std::move(db), folds, connect_or_throw(opts.database_url, bulk_timeouts));
    if (auto ready = store->prepare_for_commits(); !ready)
      throw std::runtime_error("cannot set up the writer's session: "
                               + describe(ready.error()));
    if (auto ready = store->prepare_for_folds(); !ready)
      throw std::runtime_error("cannot set up the folder's session: "
                               + describe(ready.error()));
    abort_commit = store->connection().abort_handle();
    abort_fold = store->fold_connection().abort_handle();
    persistence = std::make_shared<persistence_counters>();
    persistence_settings settings;
    settings.flush_interval = opts.flush_interval;
    settings.max_backlog = opts.write_backlog;
    // Shorter than the HTTP wait, so that a slow commit is undone and
    // answered 503 by the user actor before the request gives up on it.
    settings.commit_timeout = opts.request_timeout * 3 / 4;
    settings.log = log;
    writer = spawn_persistence_actor(sys, store, settings, persistence);
    // A round that waits for the database must not hold the keeper long: a
    // lease statement is cancelled after half a TTL (or given up on, when
    // the server is silent), a connection attempt after a third. So a node
    // that is alive reaches a database that is back within about half a
    // TTL, before any other node may take its expired leases (one TTL).
    pg_timeouts lease_timeouts;
    lease_timeouts.connect = opts.lease_ttl / 3;
    lease_timeouts.answer = opts.lease_ttl / 2;
    auto lease_db = connect_or_throw(opts.database_url, lease_timeouts);
    abort_lease = lease_db.abort_handle();
    keeper = spawn_lease_keeper(
      sys, std::shared_ptr<lease_store>{make_pg_lease_store(std::move(lease_db))},
      clock);
    // A load that hangs would keep its shards loading (and their leases
    // renewed) for good: it fails instead, and the next round retries.
    auto load_db = connect_or_throw(opts.database_url, bulk_timeouts);
    abort_load = load_db.abort_handle();
    loader = spawn_shard_loader(sys, std::move(load_db));
  }

  /// Starts the cluster node; with a database it is published on the
  /// cluster port and joins the cluster.
  void start_node() {
    auto users = std::make_shared<user_settings>();
    if (writer) {
      users->change_sink = writer;
      users->sync_grants = opts.sync_durability;
    }
    users->default_limit = opts.max_streams;
    users->default_ttl_seconds = opts.default_ttl_seconds;
    users->legacy_ttl_seconds = opts.legacy_stream_ttl_seconds;
    users->counters = &counters;
    users->clock = clock;
    users->deadlines = deadlines;
    cluster_node_settings settings;
    settings.self.node_id = node_id;
    settings.self.incarnation = new_incarnation();
    settings.self.advertise_host = opts.advertise_host.empty()
                                     ? default_advertise_host(opts)
                                     : opts.advertise_host;
    settings.self.http_port = opts.port;
    settings.self.cluster_port = writer ? opts.cluster_port : 0;
    settings.self.lease_ttl = opts.lease_ttl;
    settings.shard_count = opts.shards;
    settings.request_timeout = opts.request_timeout;
    settings.legacy_stream_ttl_seconds = opts.legacy_stream_ttl_seconds;
    settings.clock = clock;
    auto passivate_after = opts.passivate_after;
    auto* trim = &trimmer;
    auto* system = &sys;
    settings.spawn_shard = [system, users, passivate_after,
                            trim](std::uint32_t shard, std::int64_t epoch) {
      shard_settings ss;
      ss.users = users;
      ss.passivate_after = passivate_after;
      ss.trimmer = trim;
      ss.index = shard;
      ss.epoch = epoch;
      return spawn_shard_actor(*system, ss);
    };
    settings.routes = routes;
    settings.deadlines = deadlines;
    settings.persistence = writer;
    settings.keeper = keeper;
    settings.loader = loader;
    if (writer)
      settings.middleman = sys.middleman().actor_handle();
    settings.counters = cluster;
    settings.view = cluster_view;
    auto* api_ptr = rest.get();
    auto* self = this;
    settings.on_up = [api_ptr, self] {
      api_ptr->set_readiness(readiness::ready);
      if (self->writer)
        self->announce_ready();
    };
    settings.on_out_of_service = [api_ptr, self](const std::string& why) {
      api_ptr->set_readiness(readiness::stopping);
      if (self->on_out_of_service)
        self->on_out_of_service(why);
    };
    settings.log = log;
    advertised = settings.self.advertise_host;
    node = spawn_cluster_node(sys, std::move(settings));
    if (!writer)
      return;
    caf::anon_send(writer, listen_atom::value, fence_listener{node});
    auto port = sys.middleman().publish(
      node, static_cast<std::uint16_t>(opts.cluster_port), opts.bind.c_str(),
      true);
    if (!port)
      throw std::runtime_error("cannot listen for other nodes on "
                               + host_port(opts.bind, opts.cluster_port)
                               + ": " + sys.render(port.error()));
    cluster_port = *port;
  }

  /// Tells the node the ports actually bound (--port=0 picks one), which
  /// `/api/cluster` shows; with a database the node then joins the cluster.
  void join() {
    caf::anon_send(node, join_atom::value,
                   static_cast<std::uint16_t>(cluster_port),
                   static_cast<std::uint16_t>(http_port));
    if (!writer) {
      // In memory the node serves every shard as soon as its shard actors
      // run: wait for that (bounded), so no request meets "starting".
      for (int i = 0; i < 30000 && rest->current_readiness()
                                     == readiness::starting;
           ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
      if (rest->current_readiness() == readiness::ready)
        announce_ready();
    }
  }

  /// Logs "ready" once: in memory after the start line (the node serves at
  /// once, before the listener is even bound), with a database when the
  /// node first serves its share (after its join, so after the start line
  /// too).
  void announce_ready() {
    if (ready_announced.exchange(true))
      return;
    auto took = std::chrono::duration<double>(
                  std::chrono::steady_clock::now() - created)
                  .count();
    log->info("ready", "ready: serving users",
              {{"shards_owned", cluster->shards_owned.load()},
               {"startup_seconds", took}});
  }

  /// Hands every shard off to the other nodes (bounded), with a database.
  void leave() {
    if (!writer)
      return;
    caf::scoped_actor self{sys};
    self->request(node, leave_timeout, leave_atom::value)
      .receive([](bool) {},
               [this](caf::error&) {
                 log->warn("handoff_incomplete",
                           "not every shard was handed off in time; the "
                           "others take them when their leases expire",
                           {{"shards_owned", cluster->shards_owned.load()}});
               });
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
      log->error("unwritten_at_exit",
                 std::to_string(left) + " changes not written at exit",
                 {{"changes", left}});
      // The writer may be blocked in a commit that does not return (a
      // lock, a server that stopped answering): stop the persistence
      // actor, so nothing is retried, and abort its connection, so the
      // writer's thread ends and the process can exit.
      caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
      abort_commit->abort();
    }
  }

  ~impl() {
    stop_actors();
  }

  /// Stops every actor the service spawned (those spawned so far, when a
  /// start fails), so the actor system's destructor finds every actor done.
  void stop_actors() {
    // The node stops its shard actors (and they their user actors) and its
    // links.
    caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(keeper, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(loader, caf::exit_reason::user_shutdown);
    // Their threads may wait in a statement that does not return (a lock,
    // a server that stopped answering), and the process waits for them. A
    // fold is background work: one running is ended rather than waited for.
    for (auto* handle : {&abort_lease, &abort_load, &abort_fold})
      if (*handle)
        (*handle)->abort();
  }

  /// How long a graceful stop waits for the hand-off of every shard; then
  /// come the drain of both ports (--shutdown-timeout, 10 s, then the
  /// write timeout, 5 s, for what was cut) and the final flush (10 s at
  /// most; a fold is ended at once): a stop ends within 35 s with the
  /// defaults, 0.3-1.6 s in practice (docs/operations.md, Stopping).
  static constexpr std::chrono::seconds leave_timeout{10};

  options opts;
  std::string node_id;
  std::shared_ptr<const event_log> log;
  out_of_service_handler on_out_of_service;
  std::chrono::steady_clock::time_point created
    = std::chrono::steady_clock::now();
  std::atomic<bool> ready_announced{false};
  std::string advertised;
  int cluster_port = 0;
  int http_port = 0;
  stream_counters counters;
  heap_trimmer trimmer;
  http_metrics metrics;
  std::shared_ptr<const time_source> clock
    = std::make_shared<system_time_source>();
  std::shared_ptr<shard_deadlines> deadlines
    = std::make_shared<shard_deadlines>(opts.shards);
  std::shared_ptr<cluster_counters> cluster
    = std::make_shared<cluster_counters>();
  std::shared_ptr<cluster_view_box> cluster_view
    = std::make_shared<cluster_view_box>();
  std::shared_ptr<persistence_counters> persistence;
  /// End the writer's and the folder's waits for the database (at exit).
  std::shared_ptr<pg_abort_handle> abort_commit;
  std::shared_ptr<pg_abort_handle> abort_fold;
  /// End the lease keeper's and the shard loader's waits (at exit).
  std::shared_ptr<pg_abort_handle> abort_lease;
  std::shared_ptr<pg_abort_handle> abort_load;
  actor_config cfg;
  caf::actor_system sys;
  std::shared_ptr<router> routes;
  persistence_actor writer;
  lease_keeper_actor keeper;
  shard_loader_actor loader;
  cluster_node_actor node;
  std::unique_ptr<api> rest;
  std::unique_ptr<http_server> http;
  /// The operations listener; null when `--ops-port=-1`.
  std::unique_ptr<http_server> ops;
  int ops_port = -1;
  /// When the players' port cuts what it has not drained (set by `stop`):
  /// the operations port, stopped after it, drains within the same time.
  std::atomic<std::chrono::steady_clock::time_point> drain_cut{};
};

service::service(const options& opts, std::shared_ptr<const event_log> log,
                 out_of_service_handler on_out_of_service)
  : impl_(std::make_unique<impl>(opts, std::move(log),
                                 std::move(on_out_of_service))) {
  // Nothing else to do.
}

service::~service() = default;

int service::bind() {
  auto& o = impl_->opts;
  impl_->http_port = impl_->http->bind();
  if (impl_->http_port < 0)
    throw std::runtime_error("cannot listen on " + o.bind + ":"
                             + std::to_string(o.port) + ": "
                             + impl_->http->bind_error());
  if (impl_->ops) {
    impl_->ops_port = impl_->ops->bind();
    if (impl_->ops_port < 0)
      throw std::runtime_error("cannot listen on " + o.bind + ":"
                               + std::to_string(o.ops_port)
                               + " (the operations port, --ops-port; -1 "
                                 "turns it off): "
                               + impl_->ops->bind_error());
  }
  return impl_->http_port;
}

int service::cluster_port() const {
  return impl_->cluster_port;
}

int service::ops_port() const {
  return impl_->ops_port;
}

std::string service::cluster_address() const {
  if (!impl_->writer)
    return {};
  return impl_->node_id + " at "
         + host_port(impl_->advertised, impl_->cluster_port);
}

void service::run() {
  // Serve /healthz and /readyz ("starting") while the node takes and loads
  // its shards; user requests are held or answered 503 until then.
  impl_->join();
  std::thread ops_thread;
  if (impl_->ops)
    ops_thread = std::thread{[this] { impl_->ops->run(); }};
  impl_->http->run();
  // The operations port answers ("stopping") until the players' port has
  // drained, then drains by the same deadline (not a shutdown timeout
  // more).
  if (impl_->ops) {
    impl_->ops->stop(impl_->drain_cut.load());
    ops_thread.join();
  }
  impl_->flush();
}

void service::stop() {
  impl_->rest->set_readiness(readiness::stopping);
  impl_->leave();
  auto cut = std::chrono::steady_clock::now() + impl_->opts.shutdown_timeout;
  impl_->drain_cut.store(cut);
  impl_->http->stop(cut);
}

} // namespace videostreams
