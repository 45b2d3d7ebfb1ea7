// README.md, "Options": the option surface: flags, environment variables,
// --help, and the exit code 2 for a bad command line.

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;

namespace {

/// Every option the binary has; each must be in --help with its variable.
const std::vector<std::pair<std::string, std::string>> every_option{
  {"--port", "VIDEOSTREAMS_PORT"},
  {"--bind", "VIDEOSTREAMS_BIND"},
  {"--max-streams", "VIDEOSTREAMS_MAX_STREAMS"},
  {"--shards", "VIDEOSTREAMS_SHARDS"},
  {"--passivate-after", "VIDEOSTREAMS_PASSIVATE_AFTER"},
  {"--request-timeout", "VIDEOSTREAMS_REQUEST_TIMEOUT"},
  {"--ops-port", "VIDEOSTREAMS_OPS_PORT"},
  {"--http-threads", "VIDEOSTREAMS_HTTP_THREADS"},
  {"--http-max-threads", "VIDEOSTREAMS_HTTP_MAX_THREADS"},
  {"--max-connections", "VIDEOSTREAMS_MAX_CONNECTIONS"},
  {"--actor-threads", "VIDEOSTREAMS_ACTOR_THREADS"},
  {"--keep-alive-timeout", "VIDEOSTREAMS_KEEP_ALIVE_TIMEOUT"},
  {"--keep-alive-max-requests", "VIDEOSTREAMS_KEEP_ALIVE_MAX_REQUESTS"},
  {"--read-timeout", "VIDEOSTREAMS_READ_TIMEOUT"},
  {"--write-timeout", "VIDEOSTREAMS_WRITE_TIMEOUT"},
  {"--shutdown-timeout", "VIDEOSTREAMS_SHUTDOWN_TIMEOUT"},
  {"--default-ttl", "VIDEOSTREAMS_DEFAULT_TTL"},
  {"--min-ttl", "VIDEOSTREAMS_MIN_TTL"},
  {"--max-ttl", "VIDEOSTREAMS_MAX_TTL"},
  {"--legacy-stream-ttl", "VIDEOSTREAMS_LEGACY_STREAM_TTL"},
  {"--admin-token", "VIDEOSTREAMS_ADMIN_TOKEN"},
  {"--database-url", "VIDEOSTREAMS_DATABASE_URL"},
  {"--durability", "VIDEOSTREAMS_DURABILITY"},
  {"--flush-interval", "VIDEOSTREAMS_FLUSH_INTERVAL"},
  {"--write-backlog", "VIDEOSTREAMS_WRITE_BACKLOG"},
  {"--fold-min-changes", "VIDEOSTREAMS_FOLD_MIN_CHANGES"},
  {"--node-id", "VIDEOSTREAMS_NODE_ID"},
  {"--advertise-host", "VIDEOSTREAMS_ADVERTISE_HOST"},
  {"--cluster-port", "VIDEOSTREAMS_CLUSTER_PORT"},
  {"--lease-ttl", "VIDEOSTREAMS_LEASE_TTL"},
  {"--log-format", "VIDEOSTREAMS_LOG_FORMAT"},
  {"--access-log", "VIDEOSTREAMS_ACCESS_LOG"},
};

/// Runs the binary expecting a usage error: exit 2, a message on stderr
/// naming the culprit, nothing on stdout.
void check_usage_error(const std::vector<std::string>& args,
                       const environment& env, const std::string& culprit) {
  auto r = run_binary(args, env);
  INFO("stderr: " << r.err);
  INFO("stdout: " << r.out);
  CHECK(r.status.describe() == "exit code 2");
  CHECK(r.err.rfind("videostreams: ", 0) == 0);
  CHECK(r.err.find(culprit) != std::string::npos);
  CHECK(r.err.find("listening") == std::string::npos);
  CHECK(r.out.empty());
}

std::string start(httplib::Client& cli, const std::string& user) {
  auto r = get(cli, "/api/startstream/" + user);
  REQUIRE(r.status == 200);
  return r.body;
}

} // namespace

TEST_CASE("help exits 0 and lists every option with its variable",
          "[blackbox]") {
  auto r = run_binary({"--help"});
  INFO("stdout: " << r.out);
  CHECK(r.status.describe() == "exit code 0");
  CHECK(r.out.find("Usage") != std::string::npos);
  for (auto& [flag, var] : every_option) {
    INFO(flag);
    CHECK(r.out.find("  " + flag + "=") != std::string::npos);
    CHECK(r.out.find(var) != std::string::npos);
  }
  CHECK(r.out.find("--help") != std::string::npos);
  // The documented defaults.
  CHECK(r.out.find("--port=8080") != std::string::npos);
  CHECK(r.out.find("--max-streams=3") != std::string::npos);
  CHECK(r.out.find("--shards=128") != std::string::npos);
  // The db commands (issue #13: --help did not mention them).
  CHECK(r.out.find("videostreams db migrate|rollback|seed|status")
        != std::string::npos);
  CHECK(r.out.find("videostreams db reshard --shards=N") != std::string::npos);
}

TEST_CASE("help wins over the other options and starts nothing",
          "[blackbox]") {
  auto r = run_binary({"--port=0", "--help", "--max-streams=5"});
  CHECK(r.status.describe() == "exit code 0");
  CHECK(r.out.find("--max-streams") != std::string::npos);
  CHECK(r.err.find("listening") == std::string::npos);
}

TEST_CASE("an unknown option exits 2 with a message", "[blackbox]") {
  check_usage_error({"--port=0", "--no-such-option=1"}, {},
                    "no-such-option");
  check_usage_error({"--port=0", "--no-such-flag"}, {}, "no-such-flag");
  check_usage_error({"--port=0", "serve"}, {}, "serve");
}

TEST_CASE("an option without a value exits 2 with a message",
          "[blackbox]") {
  check_usage_error({"--port"}, {}, "--port");
  check_usage_error({"--port=0", "--max-streams"}, {}, "--max-streams");
}

TEST_CASE("a bad option value exits 2 with a message", "[blackbox]") {
  const std::vector<std::string> bad{
    "--port=abc",          "--port=-1",         "--port=65536",
    "--port=",             "--port=80x",        "--max-streams=-1",
    "--max-streams=abc",   "--max-streams=1.5", "--shards=0",
    "--shards=-3",         "--http-threads=0",  "--actor-threads=0",
    "--passivate-after=x", "--passivate-after=-5s",
    "--request-timeout=0ms", "--request-timeout=soon", "--bind=",
    "--ops-port=-2",       "--ops-port=65536",  "--max-connections=0",
    "--read-timeout=0",    "--write-timeout=0",  "--shutdown-timeout=forever",
    "--log-format=xml",    "--access-log=maybe"};
  for (auto& arg : bad) {
    INFO(arg);
    auto name = arg.substr(0, arg.find('='));
    check_usage_error({"--port=0", arg}, {}, name);
  }
}

TEST_CASE("a bad value in the environment exits 2 with a message",
          "[blackbox]") {
  check_usage_error({"--port=0"}, {{"VIDEOSTREAMS_MAX_STREAMS", "abc"}},
                    "VIDEOSTREAMS_MAX_STREAMS");
  check_usage_error({"--port=0"}, {{"VIDEOSTREAMS_SHARDS", "0"}},
                    "VIDEOSTREAMS_SHARDS");
}

TEST_CASE("VIDEOSTREAMS_MAX_STREAMS in the environment sets the limit",
          "[blackbox]") {
  service_process svc{{}, {{"VIDEOSTREAMS_MAX_STREAMS", "1"}}};
  auto cli = make_client(svc.port());
  CHECK(start(*cli, "9") == granted_body(1));
  CHECK(start(*cli, "9") == denied_body(1));
}

TEST_CASE("the command line wins over the environment", "[blackbox]") {
  service_process svc{{"--max-streams=2"},
                      {{"VIDEOSTREAMS_MAX_STREAMS", "1"}}};
  auto cli = make_client(svc.port());
  CHECK(start(*cli, "9") == granted_body(1));
  CHECK(start(*cli, "9") == granted_body(2));
  CHECK(start(*cli, "9") == denied_body(2));
}

TEST_CASE("the port on the command line overrides VIDEOSTREAMS_PORT", "[blackbox]") {
  // The environment asks for a port the command line replaces, so the
  // service still starts on a free port.
  service_process svc{{}, {{"VIDEOSTREAMS_PORT", "1"}}};
  CHECK(svc.port() > 1);
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/healthz").status == 200);
}

namespace {

/// A database libpq fails to reach at once: its socket directory does not
/// exist. A db command that gets as far as connecting exits 1.
const std::string unreachable_database
  = "--database-url=host=/nonexistent-dir port=5432 user=x";

} // namespace

TEST_CASE("videostreams db: --lock-timeout takes 1ms to 60m and "
          "--statement-timeout 1ms to 1440m, one more is bad usage",
          "[blackbox]") {
  // A duration takes ms, s or m, so a bound is written as one would type
  // it (--lock-timeout's said "1h" once, which was refused).
  struct bounded_flag {
    std::string flag;
    std::vector<std::string> ok;
    std::vector<std::string> bad;
    std::string refusal;
  };
  for (auto& f : std::vector<bounded_flag>{
         {"--lock-timeout",
          {"1ms", "1", "60m", "3600s", "3600000ms"},
          {"0ms", "0", "3600001ms", "61m", "2h"},
          "--lock-timeout needs a duration from 1ms to 60m"},
         {"--statement-timeout",
          {"1ms", "1", "1440m", "86400s", "86400000ms"},
          {"0ms", "0", "86400001ms", "1441m", "24h", ""},
          "--statement-timeout needs a duration from 1ms to 1440m"}}) {
    for (auto& ok : f.ok) {
      auto r = run_binary({"db", "status", f.flag + "=" + ok,
                           unreachable_database});
      INFO(f.flag << "=" << ok << ": " << r.err);
      CHECK(r.status.describe() == "exit code 1"); // it tried to connect
      CHECK(r.err.find("database unreachable") != std::string::npos);
      CHECK(r.err.find(f.flag + " needs") == std::string::npos);
    }
    for (auto& bad : f.bad) {
      auto r = run_binary({"db", "status", f.flag + "=" + bad,
                           unreachable_database});
      INFO(f.flag << "=" << bad << ": " << r.err);
      CHECK(r.status.describe() == "exit code 2");
      CHECK(r.err.find(f.refusal) != std::string::npos);
      CHECK(r.err.find("database unreachable") == std::string::npos);
    }
  }
}

TEST_CASE("videostreams db: --shards is bad usage for any command but "
          "reshard",
          "[blackbox]") {
  for (std::string verb : {"migrate", "rollback", "seed", "status"}) {
    auto r = run_binary({"db", verb, "--shards=4", unreachable_database});
    INFO(verb << ": " << r.err);
    CHECK(r.status.describe() == "exit code 2");
    CHECK(r.err.find("--shards is for reshard only") != std::string::npos);
    CHECK(r.err.find("database unreachable") == std::string::npos);
  }
  // reshard itself takes it, and goes on to connect.
  auto r = run_binary({"db", "reshard", "--shards=4", unreachable_database});
  INFO(r.err);
  CHECK(r.status.describe() == "exit code 1");
}

TEST_CASE("videostreams db --help and -h print the usage on stdout and exit 0",
          "[blackbox]") {
  for (std::string flag : {"--help", "-h"}) {
    auto r = run_binary({"db", flag});
    INFO(flag << ": " << r.err);
    CHECK(r.status.describe() == "exit code 0");
    CHECK(r.out.find("usage: videostreams db migrate|rollback|seed|status")
          != std::string::npos);
    CHECK(r.out.find("--lock-timeout") != std::string::npos);
    CHECK(r.out.find("--statement-timeout") != std::string::npos);
    CHECK(r.err.empty());
  }
}

TEST_CASE("the short flag -h prints the help text and exits 0, as "
          "--help does",
          "[blackbox]") {
  auto r = run_binary({"-h"});
  INFO("stderr: " << r.err);
  CHECK(r.status.describe() == "exit code 0");
  CHECK(r.out.find("Usage: videostreams") != std::string::npos);
  CHECK(r.err.find("listening") == std::string::npos);
}
