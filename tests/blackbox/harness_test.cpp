// The harness itself: a test process that dies, however it dies, takes the
// nodes it started with it, so that no later test finds a stray node on
// its address or a core busy.

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"

extern char** environ;

using namespace videostreams::blackbox;
using namespace std::chrono_literals;

namespace {

constexpr const char* pid_file_variable = "VIDEOSTREAMS_TEST_HOLDER_PID_FILE";

/// Whether `pid` is a process that still runs (not gone, not a zombie
/// waiting for whoever adopted it to reap it).
bool running(pid_t pid) {
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!std::getline(stat, line))
    return false;
  auto end_of_name = line.rfind(')');
  if (end_of_name == std::string::npos || end_of_name + 2 >= line.size())
    return false;
  auto state = line[end_of_name + 2];
  return state != 'Z' && state != 'X';
}


} // namespace

// Run only by the test below (hidden: "[.]"), in a process of its own: it
// starts a node, writes the node's pid where it was told, and waits to be
// killed.
TEST_CASE("holder: a test process that starts a node and waits",
          "[.holder]") {
  auto* pid_file = std::getenv(pid_file_variable);
  REQUIRE(pid_file != nullptr);
  service_process svc;
  {
    std::ofstream out{std::string{pid_file} + ".tmp"};
    out << svc.pid() << '\n';
  }
  REQUIRE(std::rename((std::string{pid_file} + ".tmp").c_str(), pid_file)
          == 0);
  std::this_thread::sleep_for(std::chrono::seconds{process_deadline} * 4);
}

TEST_CASE("a node started by a test process that is killed -9 goes with it",
          "[lifecycle]") {
  auto pid_file = "/tmp/vs-holder-" + std::to_string(::getpid()) + ".pid";
  std::remove(pid_file.c_str());
  std::string self = "/proc/self/exe";
  std::string filter = "[holder]";
  char* argv[] = {self.data(), filter.data(), nullptr};
  std::string variable = std::string{pid_file_variable} + "=" + pid_file;
  std::vector<char*> envp;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    envp.push_back(*e);
  envp.push_back(variable.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t quiet;
  posix_spawn_file_actions_init(&quiet);
  posix_spawn_file_actions_addopen(&quiet, STDOUT_FILENO, "/dev/null",
                                   O_WRONLY, 0);
  pid_t holder = -1;
  auto spawned = ::posix_spawn(&holder, self.c_str(), &quiet, nullptr, argv,
                               envp.data());
  posix_spawn_file_actions_destroy(&quiet);
  REQUIRE(spawned == 0);

  pid_t node = -1;
  auto started = eventually(
    [&] {
      std::ifstream in{pid_file};
      return static_cast<bool>(in >> node);
    },
    process_deadline);
  if (!started) {
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
  }
  REQUIRE(started);
  std::remove(pid_file.c_str());
  REQUIRE(running(node));

  ::kill(holder, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(holder, &status, 0) == holder);
  CHECK(WIFSIGNALED(status));
  auto gone = eventually([&] { return !running(node); }, process_deadline);
  if (!gone)
    ::kill(node, SIGKILL); // leave nothing behind even when failing
  CHECK(gone);
}
