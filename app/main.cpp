// videostreams: entry point. Reads the options, starts one node, and stops
// it gracefully on SIGTERM or SIGINT; `videostreams db ...` manages the
// database schema instead.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
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

namespace {

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
    std::fprintf(stderr, "videostreams: %s\n", err->c_str());
    return 2;
  }
  auto& cfg = std::get<parsed_options>(parsed);
  if (cfg.help) {
    std::fputs(help_text().c_str(), stdout);
    return 0;
  }
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
    std::fprintf(stderr, "videostreams: warning: the open-file limit %llu "
                         "is below --max-connections=%u\n",
                 static_cast<unsigned long long>(open_files),
                 cfg.values.max_connections);

  try {
    service node{cfg.values};
    auto port = node.bind();
    if (port < 0) {
      std::fprintf(stderr, "videostreams: cannot listen on %s:%d (or on "
                           "the operations port %d)\n",
                   cfg.values.bind.c_str(), cfg.values.port,
                   cfg.values.ops_port);
      return 1;
    }
    std::string changed;
    for (auto& x : cfg.changed)
      changed += " " + x;
    std::string mode = cfg.values.database_url.empty()
                         ? "in-memory (no database)"
                         : std::string{"persistent (PostgreSQL, durability "}
                             + (cfg.values.sync_durability ? "sync" : "async")
                             + ")";
    auto cluster = node.cluster_address();
    if (!cluster.empty())
      mode += ", cluster node " + cluster;
    std::string ops = node.ops_port() < 0
                        ? std::string{"off"}
                        : cfg.values.bind + ":"
                            + std::to_string(node.ops_port());
    std::fprintf(stderr, "videostreams: listening on %s:%d, operations on "
                         "%s, mode %s, options:%s\n",
                 cfg.values.bind.c_str(), port, ops.c_str(), mode.c_str(),
                 changed.empty() ? " defaults" : changed.c_str());
    std::string failure;
    std::thread server{[&node, &failure] {
      try {
        node.run();
      } catch (const std::exception& e) {
        failure = e.what();
        ::kill(::getpid(), SIGTERM); // wake the signal wait below
      }
    }};
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (failure.empty())
      std::fprintf(stderr, "videostreams: %s received, finishing in-flight "
                           "requests\n",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
    node.stop();
    server.join();
    if (!failure.empty()) {
      std::fprintf(stderr, "videostreams: %s\n", failure.c_str());
      return 1;
    }
    std::fprintf(stderr, "videostreams: stopped\n");
    return 0;
  } catch (const startup_refused& e) {
    std::fprintf(stderr, "videostreams: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "videostreams: %s\n", e.what());
    return 1;
  }
}
