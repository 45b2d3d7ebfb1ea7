#include "service_process.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <cstdlib>
#include <stdexcept>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <httplib.h>

extern char** environ;

namespace videostreams::blackbox {

namespace {

using clock_type = std::chrono::steady_clock;

/// The ports of the start line in `text` (what the process wrote so far),
/// in either log format: text ("videostreams: listening on HOST:PORT,
/// operations on HOST:PORT|off, ...") or JSON (the "start" event's fields
/// `port` and `ops_port`, -1 when off). False while there is none yet.
bool find_start_line(const std::string& text, const std::string& host,
                     int& port, int& ops_port) {
  // An IPv6 address is shown in brackets, as a URL writes it.
  auto shown = host.find(':') == std::string::npos ? host : "[" + host + "]";
  auto text_prefix = "videostreams: listening on " + shown + ":";
  auto at = text.find(text_prefix);
  if (at != std::string::npos) {
    auto digits = at + text_prefix.size();
    auto comma = text.find(',', digits);
    if (comma == std::string::npos)
      return false;
    port = std::atoi(text.c_str() + digits);
    auto ops_prefix = "operations on " + shown + ":";
    auto ops = text.find(ops_prefix, comma);
    if (ops != std::string::npos)
      ops_port = std::atoi(text.c_str() + ops + ops_prefix.size());
    return true;
  }
  for (std::size_t line = 0; line < text.size();) {
    auto eol = text.find('\n', line);
    if (eol == std::string::npos)
      return false; // a line still arriving
    auto one = std::string_view{text}.substr(line, eol - line);
    line = eol + 1;
    if (one.empty() || one.front() != '{'
        || one.find("\"event\":\"start\"") == std::string_view::npos)
      continue;
    boost::json::error_code ec;
    auto v = boost::json::parse(one, ec);
    if (ec || !v.is_object())
      continue;
    auto& o = v.as_object();
    auto p = o.if_contains("port");
    auto q = o.if_contains("ops_port");
    if (p == nullptr || !p->is_int64())
      continue;
    port = static_cast<int>(p->as_int64());
    if (q != nullptr && q->is_int64())
      ops_port = static_cast<int>(q->as_int64());
    return true;
  }
  return false;
}


/// A pipe whose ends are closed on exec; `dup2` in the child clears that
/// flag on the copy it makes, so no other child inherits either end.
struct pipe_fds {
  int read = -1;
  int write = -1;

  pipe_fds() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error(std::string{"pipe2: "} + std::strerror(errno));
    read = fds[0];
    write = fds[1];
  }
};

void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

/// Forks and execs the binary. Everything the child needs is built before
/// `fork`, because the test process has threads and the child may only make
/// async-signal-safe calls until `execve`.
///
/// The child is killed when the thread that forked it ends (the kernel's
/// parent-death signal, kept across `execve`), so a test process that
/// crashes or is killed by ctest's timeout leaves no node running on its
/// ports. Tests spawn only from Catch2's thread, which lives as long as
/// the process; a node spawned from a short-lived thread would die with it.
pid_t spawn(const std::vector<std::string>& args, const environment& env,
            int out_fd, int err_fd) {
  std::vector<std::string> argv_text;
  argv_text.emplace_back(VIDEOSTREAMS_BINARY);
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<std::string> env_text;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry{*e};
    if (entry.rfind("VIDEOSTREAMS_", 0) == 0)
      continue;
    env_text.emplace_back(entry);
  }
  for (auto& [name, value] : env)
    env_text.push_back(name + "=" + value);
  std::vector<char*> argv;
  for (auto& x : argv_text)
    argv.push_back(x.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& x : env_text)
    envp.push_back(x.data());
  envp.push_back(nullptr);
  auto parent = ::getpid();
  auto pid = ::fork();
  if (pid < 0)
    throw std::runtime_error(std::string{"fork: "} + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) // it died before the line above
      ::_exit(127);
    int null_fd = ::open("/dev/null", O_RDWR);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(out_fd >= 0 ? out_fd : null_fd, STDOUT_FILENO);
    ::dup2(err_fd >= 0 ? err_fd : null_fd, STDERR_FILENO);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

exit_status decode(int status) {
  exit_status result;
  if (WIFEXITED(status)) {
    result.exited = true;
    result.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  return result;
}

/// Waits for `pid` until `deadline`; after that kills it and reports a
/// process that did not exit by itself.
exit_status wait_until(pid_t pid, clock_type::time_point deadline) {
  for (;;) {
    int status = 0;
    auto r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid)
      return decode(status);
    if (r < 0 && errno != EINTR)
      return {};
    if (clock_type::now() >= deadline)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    // Retry.
  }
  exit_status result;
  result.signal = SIGKILL;
  result.timed_out = true;
  return result;
}

} // namespace

std::string exit_status::describe() const {
  if (timed_out)
    return "did not exit within the deadline (killed)";
  if (exited)
    return "exit code " + std::to_string(code);
  if (signal != 0)
    return std::string{"killed by signal "} + std::to_string(signal) + " ("
           + ::strsignal(signal) + ")";
  return "unknown status";
}

run_result run_binary(const std::vector<std::string>& args,
                      const environment& env) {
  pipe_fds out;
  pipe_fds err;
  auto pid = spawn(args, env, out.write, err.write);
  close_fd(out.write);
  close_fd(err.write);
  auto deadline = clock_type::now() + process_deadline;
  run_result result;
  pollfd fds[2] = {{out.read, POLLIN, 0}, {err.read, POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  while (open_fds > 0 && clock_type::now() < deadline) {
    auto n = ::poll(fds, 2, 50);
    if (n < 0 && errno != EINTR)
      break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      char buf[4096];
      auto got = ::read(fds[i].fd, buf, sizeof(buf));
      if (got > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& fd : fds)
    if (fd.fd >= 0)
      ::close(fd.fd);
  result.status = wait_until(pid, deadline);
  return result;
}

service_process::service_process(std::vector<std::string> extra_args,
                                 const environment& env,
                                 bool wait_until_serving, std::string host)
  : host_(std::move(host)) {
  // Free ports only, so that tests can run side by side; the cluster port
  // matters with a database only.
  std::vector<std::string> args{"--port=0", "--bind=" + host_,
                                "--cluster-port=0", "--ops-port=0"};
  auto own_timeout
    = std::any_of(extra_args.begin(), extra_args.end(),
                  [](const std::string& x) {
                    return x.rfind("--request-timeout=", 0) == 0;
                  })
      || std::any_of(env.begin(), env.end(), [](const auto& var) {
           return var.first == "VIDEOSTREAMS_REQUEST_TIMEOUT";
         });
  if (!own_timeout)
    args.emplace_back(patient_request_timeout);
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  pipe_fds err;
  pid_ = spawn(args, env, -1, err.write);
  close_fd(err.write);
  reader_ = std::thread{[this, fd = err.read] { drain_stderr(fd); }};
  auto deadline = clock_type::now() + process_deadline;
  {
    std::unique_lock<std::mutex> guard{mtx_};
    for (;;) {
      if (find_start_line(stderr_, host_, port_, ops_port_))
        break;
      if (stderr_closed_
          || cv_.wait_until(guard, deadline) == std::cv_status::timeout)
        break;
    }
  }
  if (port_ <= 0)
    abandon("did not print its start line");
  if (!wait_until_serving)
    return;
  // The start line comes just before the listener starts accepting; wait
  // for an answer so that every test begins with a serving process.
  httplib::Client cli{host_, port_};
  cli.set_connection_timeout(1);
  cli.set_read_timeout(5);
  auto answers = [&](const char* path) {
    while (clock_type::now() < deadline) {
      auto res = cli.Get(path);
      if (res && res->status == 200)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
    return false;
  };
  if (!answers("/healthz"))
    abandon("did not answer GET /healthz");
  // In memory the node serves every shard at once, but asynchronously:
  // until it does, user requests get 503 "starting" (on a loaded machine
  // that window is long enough to hit). With a database, the tests wait
  // for readiness themselves, as its phases are theirs to check.
  if (stderr_text().find("mode in-memory") != std::string::npos
      && !answers("/readyz"))
    abandon("did not answer GET /readyz with 200");
}

void service_process::abandon(const std::string& reason) {
  ::kill(pid_, SIGKILL);
  auto status = wait_until(pid_, clock_type::now() + process_deadline);
  reader_.join();
  throw std::runtime_error("videostreams " + reason + " within "
                           + std::to_string(process_deadline.count())
                           + " s (" + status.describe() + "); stderr:\n"
                           + stderr_);
}

service_process::~service_process() {
  stop();
}

void service_process::send_signal(int sig) const {
  ::kill(pid_, sig);
}

exit_status service_process::stop(std::chrono::milliseconds deadline) {
  if (!stopped_)
    ::kill(pid_, SIGTERM);
  return wait_for_exit(deadline);
}

exit_status
service_process::wait_for_exit(std::chrono::milliseconds deadline) {
  if (stopped_)
    return status_;
  stopped_ = true;
  status_ = wait_until(pid_, clock_type::now() + deadline);
  // The child is gone, so its end of the pipe is closed and the reader sees
  // end of file.
  reader_.join();
  return status_;
}

std::string service_process::stderr_text() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return stderr_;
}

void service_process::drain_stderr(int fd) {
  char buf[4096];
  for (;;) {
    auto got = ::read(fd, buf, sizeof(buf));
    if (got < 0 && errno == EINTR)
      continue;
    std::lock_guard<std::mutex> guard{mtx_};
    if (got <= 0) {
      stderr_closed_ = true;
      cv_.notify_all();
      break;
    }
    stderr_.append(buf, static_cast<std::size_t>(got));
    cv_.notify_all();
  }
  ::close(fd);
}

} // namespace videostreams::blackbox
