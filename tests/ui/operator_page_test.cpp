// The operator page in headless Chromium (tests/ui/operator_page.js drives
// it), against real nodes: a 3-node cluster on 127.0.0.2-4 with this tier's
// PostgreSQL, and a single node with an admin token.
//
// VIDEOSTREAMS_UI_SCREENSHOT=FILE saves the cluster page's screenshot
// (docs/operator-page.png is made so).

#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "cluster_harness.hpp"

using namespace videostreams::cluster_testing;
using videostreams::blackbox::service_process;

namespace {

struct script_result {
  int exit_code = -1;
  std::string output;
};

std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

/// Runs the page script with `args`, its stdout and stderr captured.
script_result run_page_script(const std::vector<std::string>& args) {
  std::string cmd = "NODE_PATH=" + shell_quoted(VIDEOSTREAMS_NODE_MODULES)
                    + " node " + shell_quoted(VIDEOSTREAMS_UI_SCRIPT);
  for (auto& a : args)
    cmd += " " + shell_quoted(a);
  cmd += " 2>&1";
  script_result result;
  auto* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0)
    result.output.append(buf.data(), n);
  auto status = ::pclose(pipe);
  if (status != -1 && WIFEXITED(status))
    result.exit_code = WEXITSTATUS(status);
  return result;
}

std::string url_of(const std::string& host, int port) {
  // An IPv6 address in brackets.
  return "http://"
         + (host.find(':') == std::string::npos ? host : "[" + host + "]")
         + ":" + std::to_string(port);
}

} // namespace

TEST_CASE("the operator page shows a 3-node cluster in headless Chromium",
          "[ui]") {
  three_nodes c{{}};
  std::vector<std::string> args{
    "cluster",  "--url",
    url_of(c.n2.host(), c.n2.port()),
    "--others", url_of(c.n3.host(), c.n3.port()) + ","
                  + url_of(c.n4.host(), c.n4.port()),
    "--user",   "77",
    "--members", "3"};
  if (auto* shot = std::getenv("VIDEOSTREAMS_UI_SCREENSHOT")) {
    args.push_back("--screenshot");
    args.push_back(shot);
  }
  auto result = run_page_script(args);
  INFO(result.output);
  CHECK(result.exit_code == 0);
}

TEST_CASE("the operator page shows a 2-node cluster on ::1, its addresses "
          "in brackets",
          "[ui]") {
  cluster_database d;
  test_node a{"::1", "six-a", d.dsn};
  test_node b{"::1", "six-b", d.dsn};
  REQUIRE(wait_converged({&a, &b}));
  auto result = run_page_script({"cluster", "--url", url_of(a.host(), a.port()),
                                 "--others", url_of(b.host(), b.port()),
                                 "--user", "77", "--members", "2"});
  INFO(result.output);
  CHECK(result.exit_code == 0);
}

TEST_CASE("the operator page asks for the admin token and keeps it in the "
          "tab only",
          "[ui]") {
  service_process svc{{"--admin-token=ui-test-token"}};
  auto result = run_page_script({"token", "--url",
                                 url_of(svc.host(), svc.port()), "--token",
                                 "ui-test-token"});
  INFO(result.output);
  CHECK(result.exit_code == 0);
}
