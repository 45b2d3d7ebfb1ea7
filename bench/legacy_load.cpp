// Load generator for the mixed legacy workload (bench/cluster): the same
// requests as wrk with bench/mixed.lua, but one thread driving every
// connection, whichever nodes they go to. So a run against one node and a
// run spread over several nodes cost the client the same: one thread, one
// epoll set, the same number of connections (three wrk processes, one per
// node, cost about twice one wrk's CPU per request on two cores).
//
//   legacy_load --targets=IPV4:PORT[,IPV4:PORT...] [--connections=33]
//               [--duration=10] [--users=100000]
//               [--users-files=FILE[,FILE...]] [--timeout-ms=2000]
//
// Connection i goes to target i % targets. Each request picks a random
// user (among --users, or among the lines of the connection's target's
// file in --users-files) and starts or ends a stream for it, half and half.
// Expected answers: 200, and the original API's 400 for an end with
// nothing to close (as bench/mixed.lua); anything else is a status error.
//
// Prints wrk's RESULT line (bench/mixed.lua's format): requests=...
// duration_us=... rps=... p50_us=... p99_us=... connect_errors=...
// read_errors=... write_errors=... status_errors=... timeouts=...

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <arpa/inet.h>
#include <cerrno>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/request_framing.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using videostreams::starts_with_ignoring_case;

struct target {
  std::string host;
  int port = 0;
  /// Whom its connections ask for; empty: any of --users.
  std::vector<std::string> users;
};

struct args {
  std::vector<target> targets;
  int connections = 33;
  int duration = 10;
  long users = 100000;
  int timeout_ms = 2000;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t from = 0;
  while (from <= s.size()) {
    auto to = s.find(sep, from);
    if (to == std::string::npos)
      to = s.size();
    out.push_back(s.substr(from, to - from));
    from = to + 1;
  }
  return out;
}

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "legacy_load: %s\n", why.c_str());
  std::exit(2);
}

args parse(int argc, char** argv) {
  args a;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&](const char* name) -> const char* {
      auto n = std::strlen(name);
      return s.compare(0, n, name) == 0 ? argv[i] + n : nullptr;
    };
    if (auto v = value("--targets=")) {
      for (auto& t : split(v, ',')) {
        auto colon = t.rfind(':');
        in_addr ip{};
        if (colon == std::string::npos
            || inet_pton(AF_INET, t.substr(0, colon).c_str(), &ip) != 1
            || std::atoi(t.c_str() + colon + 1) <= 0)
          usage("a target is IPV4:PORT, not " + t);
        a.targets.push_back({t.substr(0, colon),
                             std::atoi(t.c_str() + colon + 1), {}});
      }
    } else if (auto v = value("--connections=")) {
      a.connections = std::atoi(v);
    } else if (auto v = value("--duration=")) {
      a.duration = std::atoi(v);
    } else if (auto v = value("--users=")) {
      a.users = std::atol(v);
    } else if (auto v = value("--users-files=")) {
      files = split(v, ',');
    } else if (auto v = value("--timeout-ms=")) {
      a.timeout_ms = std::atoi(v);
    } else {
      usage(std::string{"unknown argument "} + argv[i]);
    }
  }
  if (a.targets.empty() || a.connections < 1 || a.duration < 1
      || a.users < 1 || a.timeout_ms < 1)
    usage("need --targets, and positive --connections, --duration, "
          "--users and --timeout-ms");
  if (!files.empty() && files.size() != a.targets.size())
    usage("--users-files needs one file per target");
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::ifstream in{files[i]};
    if (!in)
      usage("cannot read " + files[i]);
    for (std::string line; std::getline(in, line);)
      if (!line.empty())
        a.targets[i].users.push_back(line);
    if (a.targets[i].users.empty())
      usage(files[i] + " lists no user");
  }
  return a;
}

struct counts {
  long connect_errors = 0;
  long read_errors = 0;
  long write_errors = 0;
  long status_errors = 0;
  long timeouts = 0;
  /// One per answered request.
  std::vector<std::uint32_t> latencies_us;
};

/// One keep-alive connection with at most one request in flight.
struct connection {
  const target* to = nullptr;
  int fd = -1;
  std::string out;      // the request being written
  std::size_t written = 0;
  std::string in;       // what arrived of the answer
  clock_type::time_point sent_at;
  bool in_flight = false;
  /// Waiting for room to write (EPOLLOUT armed).
  bool wants_out = false;
};

/// The answer at the front of `in`, once it is whole: its status, its
/// body, and how many bytes it took. `complete` false while more must
/// arrive; `broken` when it cannot be an HTTP answer.
struct parsed_answer {
  bool complete = false;
  bool broken = false;
  bool closes = false;
  int status = 0;
  std::string_view body;
  std::size_t size = 0;
};

parsed_answer parse_answer(std::string_view in) {
  parsed_answer r;
  auto end = in.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    r.broken = in.size() > 65536;
    return r;
  }
  auto head = in.substr(0, end);
  if (head.size() < 12 || head.substr(0, 5) != "HTTP/") {
    r.broken = true;
    return r;
  }
  r.status = std::atoi(std::string{head.substr(9, 3)}.c_str());
  long length = -1;
  std::size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos) {
    auto next = head.find("\r\n", pos + 2);
    auto line = head.substr(pos + 2, next == std::string_view::npos
                                         ? std::string_view::npos
                                         : next - pos - 2);
    if (starts_with_ignoring_case(line, "content-length:"))
      length = std::atol(std::string{line.substr(15)}.c_str());
    else if (starts_with_ignoring_case(line, "connection:")
             && line.find("close") != std::string_view::npos)
      r.closes = true;
    pos = next;
  }
  if (length < 0) {
    r.broken = true; // the service always says how long its answer is
    return r;
  }
  auto total = end + 4 + static_cast<std::size_t>(length);
  if (in.size() < total)
    return r;
  r.complete = true;
  r.body = in.substr(end + 4, static_cast<std::size_t>(length));
  r.size = total;
  return r;
}

/// What bench/mixed.lua accepts: 200, or the 400 of an end with nothing
/// to close.
bool expected(const parsed_answer& a) {
  if (a.status == 200)
    return true;
  return a.status == 400
         && (a.body.find("no active streams to close for user")
               != std::string_view::npos
             || a.body.find("user_id not present in the database")
                  != std::string_view::npos);
}

class load {
public:
  explicit load(const args& a) : args_(a), rng_(std::random_device{}()) {
    epoll_ = epoll_create1(0);
    conns_.resize(static_cast<std::size_t>(a.connections));
    for (std::size_t i = 0; i < conns_.size(); ++i)
      conns_[i].to = &a.targets[i % a.targets.size()];
  }

  counts run() {
    auto start = clock_type::now();
    auto until = start + std::chrono::seconds{args_.duration};
    for (auto& c : conns_)
      open_and_send(c);
    std::vector<epoll_event> events(conns_.size());
    while (clock_type::now() < until) {
      int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                         50);
      for (int i = 0; i < n; ++i) {
        auto& c = *static_cast<connection*>(events[i].data.ptr);
        auto fd = c.fd;
        if (events[i].events & EPOLLOUT)
          write_some(c);
        if (c.fd == fd && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
          read_some(c);
      }
      expire(clock_type::now());
    }
    elapsed_us_ = std::chrono::duration_cast<std::chrono::microseconds>(
                    clock_type::now() - start)
                    .count();
    for (auto& c : conns_)
      if (c.fd >= 0)
        close(c.fd);
    return result_;
  }

  long elapsed_us() const {
    return elapsed_us_;
  }

private:
  void open_and_send(connection& c) {
    c.in.clear();
    c.in_flight = false;
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(c.to->port));
    inet_pton(AF_INET, c.to->host.c_str(), &addr.sin_addr);
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
        && errno != EINPROGRESS) {
      ++result_.connect_errors;
      close(c.fd);
      c.fd = -1;
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &c;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &ev);
    c.wants_out = false;
    send_next(c);
  }

  void send_next(connection& c) {
    const auto& users = c.to->users;
    std::string user
      = users.empty()
          ? std::to_string(std::uniform_int_distribution<long>(
              0, args_.users - 1)(rng_))
          : users[std::uniform_int_distribution<std::size_t>(
              0, users.size() - 1)(rng_)];
    bool start = std::uniform_int_distribution<int>(0, 1)(rng_) == 0;
    c.out = std::string{"GET /api/"} + (start ? "startstream/" : "endstream/")
            + user + " HTTP/1.1\r\nHost: " + c.to->host + "\r\n\r\n";
    c.written = 0;
    c.sent_at = clock_type::now();
    c.in_flight = true;
    write_some(c);
  }

  void write_some(connection& c) {
    while (c.fd >= 0 && c.written < c.out.size()) {
      auto n = ::send(c.fd, c.out.data() + c.written, c.out.size() - c.written,
                      MSG_NOSIGNAL);
      if (n > 0) {
        c.written += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        want_out(c, true); // EPOLLOUT says when to go on
        return;
      } else {
        ++result_.write_errors;
        reopen(c);
        return;
      }
    }
    if (c.fd >= 0)
      want_out(c, false);
  }

  void want_out(connection& c, bool yes) {
    if (c.wants_out == yes)
      return;
    epoll_event ev{};
    ev.events = EPOLLIN | (yes ? EPOLLOUT : 0u);
    ev.data.ptr = &c;
    epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
    c.wants_out = yes;
  }

  void read_some(connection& c) {
    char buf[16384];
    bool closed = false;
    for (;;) {
      auto n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n > 0) {
        c.in.append(buf, static_cast<std::size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        break;
      } else {
        closed = true; // the server closed, or the connection failed
        break;
      }
    }
    auto answer = parse_answer(c.in);
    if (!answer.complete) {
      if (closed || answer.broken) {
        if (c.in_flight || !c.in.empty())
          ++result_.read_errors;
        reopen(c);
      }
      return;
    }
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                clock_type::now() - c.sent_at)
                .count();
    result_.latencies_us.push_back(static_cast<std::uint32_t>(us));
    if (!expected(answer) && result_.status_errors++ < 3)
      std::fprintf(stderr, "legacy_load: unexpected %d %.*s\n", answer.status,
                   static_cast<int>(std::min<std::size_t>(answer.body.size(),
                                                          200)),
                   answer.body.data());
    c.in_flight = false;
    bool extra = c.in.size() > answer.size; // nothing may follow one answer
    if (extra)
      ++result_.read_errors;
    c.in.clear();
    if (closed || answer.closes || extra)
      reopen(c);
    else
      send_next(c);
  }

  void expire(clock_type::time_point now) {
    auto limit = std::chrono::milliseconds{args_.timeout_ms};
    for (auto& c : conns_) {
      if (c.fd < 0) {
        open_and_send(c); // its connect failed: try again
      } else if (c.in_flight && now - c.sent_at > limit) {
        ++result_.timeouts;
        reopen(c);
      }
    }
  }

  void reopen(connection& c) {
    if (c.fd >= 0) {
      epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
      close(c.fd);
      c.fd = -1;
    }
    open_and_send(c);
  }

  const args& args_;
  std::mt19937_64 rng_;
  int epoll_ = -1;
  std::vector<connection> conns_;
  counts result_;
  long elapsed_us_ = 0;
};

} // namespace

int main(int argc, char** argv) {
  auto a = parse(argc, argv);
  load l{a};
  auto r = l.run();
  auto& all = r.latencies_us;
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0u
                       : all[static_cast<std::size_t>(p * (all.size() - 1))];
  };
  std::printf("RESULT requests=%ld duration_us=%ld rps=%.1f p50_us=%u "
              "p99_us=%u connect_errors=%ld read_errors=%ld write_errors=%ld "
              "status_errors=%ld timeouts=%ld\n",
              static_cast<long>(all.size()), l.elapsed_us(),
              static_cast<double>(all.size()) / (l.elapsed_us() / 1e6),
              pct(0.50), pct(0.99), r.connect_errors, r.read_errors,
              r.write_errors, r.status_errors, r.timeouts);
  bool failed = r.connect_errors + r.read_errors + r.write_errors
                + r.status_errors + r.timeouts
                > 0;
  return failed ? 1 : 0;
}
