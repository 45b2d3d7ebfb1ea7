#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/types.h>

namespace videostreams::blackbox {

/// Environment variables given to a child on top of the test's own
/// environment (from which every `VIDEOSTREAMS_*` variable is removed, so
/// that a developer's shell cannot change what a test sees).
using environment = std::vector<std::pair<std::string, std::string>>;

/// How long the harness waits for the binary to start or to exit: long,
/// since a loaded machine is slow, and only a broken binary waits it out.
constexpr std::chrono::seconds process_deadline{30};

/// The `--request-timeout` every process gets unless the test sets one
/// (flag or environment): a test that is not about a timeout must not fail
/// because a loaded machine answers (or commits) slowly. A test about a
/// timeout sets its own.
constexpr const char* patient_request_timeout = "--request-timeout=10s";

/// What became of a child process, as `waitpid` reported it.
struct exit_status {
  /// True when the process called `exit`; false when a signal killed it or
  /// it did not end within the deadline.
  bool exited = false;
  /// The exit code when `exited`.
  int code = -1;
  /// The signal that ended it, or 0.
  int signal = 0;
  /// True when it did not exit within the deadline and was killed.
  bool timed_out = false;

  /// True for a clean `exit(0)`.
  bool clean() const noexcept {
    return exited && code == 0;
  }

  /// "exit code 2", "killed by signal 9", "did not exit".
  std::string describe() const;
};

/// The result of running the binary to completion.
struct run_result {
  exit_status status;
  std::string out;
  std::string err;
};

/// Runs the videostreams binary with `args` and `env` until it exits (at
/// most `process_deadline`, then it is killed), capturing stdout and stderr.
run_result run_binary(const std::vector<std::string>& args,
                      const environment& env = {});

/// One running videostreams process listening on a loopback address
/// (127.0.0.1 unless told otherwise) at a port the kernel picked. Its
/// stderr is drained by a thread for its whole life, so the child never
/// blocks on a full pipe. Stopping sends SIGTERM and waits, bounded; the
/// destructor stops a process that is still running.
class service_process {
public:
  /// Starts the binary with `--port=0 --bind=HOST --cluster-port=0`
  /// (and `patient_request_timeout`, unless `extra_args` or `env` set a
  /// request timeout) followed by `extra_args`, waits for its start line
  /// and then, with `wait_until_serving`, until `GET /healthz` answers 200
  /// (and, in memory, `GET /readyz`: every shard served). Throws
  /// `std::runtime_error` (with everything the child wrote) when it does not
  /// get that far within `process_deadline`. `host` is any loopback
  /// address (127.0.0.2, 127.0.0.3, ... work without setup).
  explicit service_process(std::vector<std::string> extra_args = {},
                           const environment& env = {},
                           bool wait_until_serving = true,
                           std::string host = "127.0.0.1");

  service_process(const service_process&) = delete;
  service_process& operator=(const service_process&) = delete;

  ~service_process();

  /// The port the service listens on.
  int port() const noexcept {
    return port_;
  }

  /// The operations port, or -1 when it is off.
  int ops_port() const noexcept {
    return ops_port_;
  }

  /// The address the service listens on.
  const std::string& host() const noexcept {
    return host_;
  }

  /// The child's process id.
  pid_t pid() const noexcept {
    return pid_;
  }

  /// Sends `sig` without waiting.
  void send_signal(int sig) const;

  /// Sends SIGTERM and waits for the exit (at most `deadline`, then
  /// SIGKILL). Calling it again returns the first result.
  exit_status stop(std::chrono::milliseconds deadline = process_deadline);

  /// Waits, sending no signal, for the process to exit by itself (at most
  /// `deadline`, then SIGKILL). Later calls of `stop` or `wait_for_exit`
  /// return this result.
  exit_status
  wait_for_exit(std::chrono::milliseconds deadline = process_deadline);

  /// Everything the child has written to stderr so far.
  std::string stderr_text() const;

private:
  void drain_stderr(int fd);
  [[noreturn]] void abandon(const std::string& reason);

  std::string host_;
  pid_t pid_ = -1;
  int port_ = -1;
  int ops_port_ = -1;
  bool stopped_ = false;
  exit_status status_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::string stderr_;
  bool stderr_closed_ = false;
  std::thread reader_;
};

} // namespace videostreams::blackbox
