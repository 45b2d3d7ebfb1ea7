// The benchmark's load generator, bench_legacy_load (bench/legacy_load.cpp),
// against real in-memory nodes: what it reports is what the nodes served,
// and whatever is not an expected answer is an error. bench/cluster's
// figures rest on it.

#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "loopback_listener.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;

namespace {

struct load_result {
  int exit_code = -1;
  std::map<std::string, double> fields;
  std::string output;
};

/// Runs bench_legacy_load with `args`; its RESULT line's fields.
load_result run_load(const std::string& args) {
  load_result r;
  auto command = std::string{VIDEOSTREAMS_LEGACY_LOAD} + " " + args + " 2>&1";
  FILE* out = popen(command.c_str(), "r");
  REQUIRE(out != nullptr);
  std::array<char, 4096> buf{};
  while (fgets(buf.data(), static_cast<int>(buf.size()), out) != nullptr)
    r.output += buf.data();
  int status = pclose(out);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto at = r.output.find("RESULT ");
  if (at != std::string::npos) {
    std::istringstream line{r.output.substr(at + 7)};
    std::string field;
    while (line >> field) {
      auto eq = field.find('=');
      if (eq != std::string::npos)
        r.fields[field.substr(0, eq)] = std::stod(field.substr(eq + 1));
    }
  }
  return r;
}

/// Requests to the two legacy stream routes a node has answered, by its
/// /metrics.
double legacy_requests(service_process& node) {
  auto cli = make_client(node.host(), node.port());
  std::istringstream text{scrape(*cli)};
  double sum = 0;
  for (std::string line; std::getline(text, line);)
    for (auto route : {"startstream", "endstream"})
      if (line.rfind(std::string{"videostreams_http_requests_total{route="
                                 "\"/api/"}
                       + route + "/:user_id\"",
                     0)
          == 0)
        sum += std::stod(line.substr(line.rfind(' ') + 1));
  return sum;
}

double live_users(service_process& node) {
  auto cli = make_client(node.host(), node.port());
  return metric_value(scrape(*cli), "videostreams_live_user_actors")
    .value_or(-1);
}

std::string target(service_process& node) {
  return node.host() + ":" + std::to_string(node.port());
}

} // namespace

TEST_CASE("bench_legacy_load: counts what the nodes served, spread over "
          "every target, with no error") {
  service_process a{{}, {}, true, "127.0.0.2"};
  service_process b{{}, {}, true, "127.0.0.3"};
  auto r = run_load("--targets=" + target(a) + "," + target(b)
                    + " --connections=4 --duration=1 --users=100000");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  REQUIRE(r.fields.count("requests") == 1);
  auto requests = r.fields["requests"];
  CHECK(requests > 0);
  for (auto name : {"connect_errors", "read_errors", "write_errors",
                    "status_errors", "timeouts"})
    CHECK(r.fields[name] == 0);
  CHECK(r.fields["rps"] > 0);
  CHECK(r.fields["p50_us"] <= r.fields["p99_us"]);
  // Every request it counts was served; at most one per connection was
  // still under way when it stopped counting.
  auto served_a = legacy_requests(a);
  auto served_b = legacy_requests(b);
  CHECK(served_a > 0);
  CHECK(served_b > 0);
  CHECK(served_a + served_b >= requests);
  CHECK(served_a + served_b <= requests + 4);
}

TEST_CASE("bench_legacy_load: a connection asks only for the users listed "
          "for its target") {
  service_process a{{}, {}, true, "127.0.0.2"};
  service_process b{{}, {}, true, "127.0.0.3"};
  char dir_template[] = "/tmp/vs-legacy-load-XXXXXX";
  REQUIRE(mkdtemp(dir_template) != nullptr);
  std::string dir = dir_template;
  std::ofstream{dir + "/a.txt"} << "7\n11\n";
  std::ofstream{dir + "/b.txt"} << "8\n";
  auto r = run_load("--targets=" + target(a) + "," + target(b)
                    + " --connections=4 --duration=1 --users-files=" + dir
                    + "/a.txt," + dir + "/b.txt");
  std::remove((dir + "/a.txt").c_str());
  std::remove((dir + "/b.txt").c_str());
  rmdir(dir.c_str());
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.fields["requests"] > 0);
  CHECK(r.fields["status_errors"] == 0);
  // One user actor per user asked for (no passivation within the test).
  CHECK(live_users(a) == 2);
  CHECK(live_users(b) == 1);
}

TEST_CASE("bench_legacy_load: an answer other than the mixed workload's "
          "is an error, and fails the run") {
  // The operations listener answers 404 to the API's routes.
  service_process node{{"--ops-port=0"}};
  REQUIRE(node.ops_port() > 0);
  auto r = run_load("--targets=127.0.0.1:" + std::to_string(node.ops_port())
                    + " --connections=2 --duration=1");
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.fields["status_errors"] > 0);
  CHECK(r.fields["status_errors"] == r.fields["requests"]);
  CHECK(r.output.find("unexpected 404") != std::string::npos);
}

TEST_CASE("bench_legacy_load: a request left unanswered is a timeout") {
  // A listener that never accepts: connections complete in its backlog
  // and nothing is ever answered.
  auto r = [] {
    videostreams::testing::loopback_listener silent;
    return run_load("--targets=127.0.0.1:" + std::to_string(silent.port())
                    + " --connections=2 --duration=2 --timeout-ms=300");
  }();
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.fields["requests"] == 0);
  CHECK(r.fields["timeouts"] >= 2);
}

TEST_CASE("bench_legacy_load: bad arguments exit 2 and say why") {
  auto r = run_load("--connections=4");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("need --targets") != std::string::npos);
  r = run_load("--targets=localhost:80");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("IPV4:PORT") != std::string::npos);
  r = run_load("--targets=127.0.0.1:1 --users-files=a,b");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("one file per target") != std::string::npos);
}
