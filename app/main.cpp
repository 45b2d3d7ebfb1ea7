// videostreams: entry point. Reads the options, starts one node, and stops
// it gracefully on SIGTERM or SIGINT, or when it fails or goes out of
// service; `videostreams db ...` manages the database schema instead.

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "app/db_command.hpp"
#include "app/options.hpp"
#include "app/service.hpp"
#include "logging/event_log.hpp"

namespace {

/// Why the process stops other than by a signal: the server failed, or the
/// node went out of service. The first cause wins; it is set from any
/// thread, and a SIGTERM to this process then wakes the signal wait.
class stop_cause {
public:
  void fail(const std::string& why) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (!why_.empty())
        return;
      why_ = why;
    }
    ::kill(::getpid(), SIGTERM);
  }

  std::string why() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return why_;
  }

private:
  mutable std::mutex mtx_;
  std::string why_;
};

/// Raises the open-file limit to its hard limit: every connection is a
/// descriptor, and the soft limit (often 1024) is far below
/// --max-connections. Returns the limit now in force.
rlim_t raise_open_file_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0)
    return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  return lim.rlim_cur;
}

} // namespace

int main(int argc, char** argv) {
  using namespace videostreams;
  std::vector<std::string> args(argv + 1, argv + argc);
  auto getenv = [](const char* name) { return std::getenv(name); };
  if (!args.empty() && args.front() == "db")
    return run_db_command({args.begin() + 1, args.end()}, getenv);
  auto parsed = parse_options(args, getenv);
  if (auto err = std::get_if<std::string>(&parsed)) {
    // Before the options are known, so before the log: plain text.
    std::fprintf(stderr, "videostreams: %s\n", err->c_str());
    return 2;
  }
  auto& cfg = std::get<parsed_options>(parsed);
  if (cfg.help) {
    std::fputs(help_text().c_str(), stdout);
    return 0;
  }
  auto log = std::make_shared<event_log>(cfg.values.json_logs
                                           ? log_format::json
                                           : log_format::text,
                                         effective_node_id(cfg.values));
  auto started = std::chrono::steady_clock::now();
  // Block the stop signals before any thread exists, so that every thread
  // inherits the mask and only `sigwait` below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  auto open_files = raise_open_file_limit();
  if (open_files != 0 && open_files < cfg.values.max_connections + 256)
    log->warn("open_file_limit",
              "warning: the open-file limit "
                + std::to_string(static_cast<unsigned long long>(open_files))
                + " is below --max-connections="
                + std::to_string(cfg.values.max_connections)
                + " plus 256 for the process's other descriptors",
              {{"limit", static_cast<std::int64_t>(open_files)},
               {"max_connections", cfg.values.max_connections}});

  try {
    stop_cause cause;
    service node{cfg.values, log,
                 [&cause](const std::string& why) { cause.fail(why); }};
    auto port = node.bind();
    std::string changed;
    std::vector<log_field> fields{{"version", VIDEOSTREAMS_VERSION},
                                  {"bind", cfg.values.bind},
                                  {"port", port},
                                  {"ops_port", node.ops_port()}};
    for (auto& x : cfg.changed)
      changed += " " + x;
    std::string mode = cfg.values.database_url.empty()
                         ? "in-memory (no database)"
                         : std::string{"persistent (PostgreSQL, durability "}
                             + (cfg.values.sync_durability ? "sync" : "async")
                             + ")";
    fields.emplace_back("mode", cfg.values.database_url.empty() ? "in-memory"
                                                                : "database");
    if (!cfg.values.database_url.empty())
      fields.emplace_back("durability",
                          cfg.values.sync_durability ? "sync" : "async");
    auto cluster = node.cluster_address();
    if (!cluster.empty()) {
      mode += ", cluster node " + cluster;
      fields.emplace_back("cluster_port", node.cluster_port());
    }
    fields.emplace_back("options", changed.empty() ? std::string{}
                                                   : changed.substr(1));
    std::string ops = node.ops_port() < 0
                        ? std::string{"off"}
                        : host_port(cfg.values.bind, node.ops_port());
    // Tests and scripts read the port from this line (text: the message;
    // JSON: the fields `port` and `ops_port`).
    log->info("start",
              "listening on " + host_port(cfg.values.bind, port)
                + ", operations on " + ops + ", mode " + mode + ", options:"
                + (changed.empty() ? " defaults" : changed),
              std::move(fields));
    std::thread server{[&node, &cause] {
      try {
        node.run();
      } catch (const std::exception& e) {
        cause.fail(e.what());
      }
    }};
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (cause.why().empty()) {
      const char* name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
      log->info("stopping",
                std::string{name} + " received, finishing in-flight requests",
                {{"signal", name}});
    }
    node.stop();
    server.join();
    auto failure = cause.why();
    auto uptime = std::chrono::duration<double>(
                    std::chrono::steady_clock::now() - started)
                    .count();
    if (!failure.empty()) {
      log->error("stop", failure,
                 {{"exit_code", 1}, {"uptime_seconds", uptime}});
      return 1;
    }
    log->info("stop", "stopped",
              {{"exit_code", 0}, {"uptime_seconds", uptime}});
    return 0;
  } catch (const startup_refused& e) {
    log->error("start_failed", e.what(), {{"exit_code", 2}});
    return 2;
  } catch (const std::exception& e) {
    log->error("start_failed", e.what(), {{"exit_code", 1}});
    return 1;
  }
}
