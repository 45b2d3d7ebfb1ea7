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
#include <unistd.h>

#include "app/db_command.hpp"
#include "app/options.hpp"
#include "app/service.hpp"

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

  try {
    service node{cfg.values};
    auto port = node.bind();
    if (port < 0) {
      std::fprintf(stderr, "videostreams: cannot listen on %s:%d\n",
                   cfg.values.bind.c_str(), cfg.values.port);
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
    std::fprintf(stderr, "videostreams: listening on %s:%d, mode %s, "
                         "options:%s\n",
                 cfg.values.bind.c_str(), port, mode.c_str(),
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
