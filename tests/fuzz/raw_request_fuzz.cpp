// Whole raw requests through the real HTTP server: `http_server`
// (http/server.hpp, only its public interface) bound to 127.0.0.1 on a free
// port, in front of a real in-memory `api` whose users live in shard
// actors on a threaded actor system, as the service runs without a
// database. Each input is written as it is to a new loopback connection,
// followed by `trailer` (a request that closes, see there), and the
// connection is half-closed; the answer is read until the server closes
// (at most `answer_deadline`). Invariants:
//
// - the process does not crash, and no sanitizer reports (server threads
//   included);
// - the server closes a half-closed connection within the deadline;
// - what comes back is a sequence of complete HTTP/1.x responses, each
//   with a valid status line, well-formed headers, a body as long as its
//   Content-Length (or none, for a HEAD), Access-Control-Allow-Origin and
//   a Date;
// - no status is 5xx;
// - nothing follows a response that says `Connection: close`;
// - a JSON body parses; a 4xx JSON body carries "msg";
// - no answer reports a stream count above the limit (3: no admin token is
//   configured, so no user's limit can change);
// - after every input, the server still accepts a new connection and
//   answers GET /healthz with 200.
// - no answer is partial: a Range header is ignored (the input that found
//   cpp-httplib cutting answers to it is in tests/fuzz/regressions).

#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/atom.hpp"
#include "caf/send.hpp"

#include "actors/message_types.hpp"
#include "actors/router.hpp"
#include "actors/shard_actor.hpp"
#include "actors/stream_counters.hpp"
#include "cluster/cluster_view.hpp"
#include "http/api.hpp"
#include "http/metrics.hpp"
#include "http/server.hpp"

#include "fuzz_check.hpp"

using namespace videostreams;
using videostreams::fuzz::printable;
namespace json = boost::json;

namespace {

constexpr std::uint32_t stream_limit = 3;
constexpr auto answer_deadline = std::chrono::seconds{10};

struct actor_config : caf::actor_system_config {
  actor_config() {
    register_message_types(*this);
    set("scheduler.max-threads", size_t{1});
    set("logger.verbosity", caf::atom("quiet"));
  }
};

caf::actor_system* abandoned_system = nullptr;

/// The server under test, started on first use and stopped at exit.
struct server_under_test {
  server_under_test() : sys(std::make_unique<caf::actor_system>(cfg)) {
    auto users = std::make_shared<user_settings>();
    users->default_limit = stream_limit;
    users->counters = &counters;
    std::vector<user_endpoint> endpoints;
    for (std::uint32_t i = 0; i < 8; ++i) {
      shard_settings ss;
      ss.users = users;
      ss.index = i;
      shards.push_back(spawn_shard_actor(*sys, ss));
      endpoints.push_back(shards.back());
    }
    routes = std::make_unique<router>(endpoints);
    api_settings settings;
    // Far above any answer time, so that a 503 means a fault, not a slow
    // machine.
    settings.request_timeout = std::chrono::seconds{5};
    auto view = std::make_shared<cluster_view>();
    view->node_id = "fuzz";
    view->shard_count = 8;
    auto box = std::make_shared<cluster_view_box>();
    box->set(view);
    settings.cluster = box;
    rest = std::make_unique<api>(*routes, settings, metrics, counters);
    rest->set_readiness(readiness::ready);
    http_server_settings hs;
    hs.bind_address = "127.0.0.1";
    hs.port = 0;
    http = std::make_unique<http_server>(*rest, hs, metrics);
    port = http->bind();
    FUZZ_CHECK(port > 0, std::string{"cannot bind 127.0.0.1:0"});
    runner = std::thread{[this] { http->run(); }};
  }

  ~server_under_test() {
    http->stop();
    runner.join();
    for (auto& s : shards)
      caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
    shards.clear();
    sys->await_all_actors_done();
    // The actor system is not destroyed: this runs among the exit
    // handlers, after CAF's own function-local statics made since the
    // start are gone, and its destructor would use them. Its threads are
    // idle now; the process ends them. (Kept reachable for LeakSanitizer.)
    abandoned_system = sys.release();
  }

  stream_counters counters;
  http_metrics metrics;
  actor_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<shard_actor> shards;
  std::unique_ptr<router> routes;
  std::unique_ptr<api> rest;
  std::unique_ptr<http_server> http;
  int port = -1;
  std::thread runner;
};

/// Every thread of this process with its state and where it waits in the
/// kernel (for the message when the server hangs).
std::string thread_states() {
  std::string out;
  std::unique_ptr<DIR, int (*)(DIR*)> dir{::opendir("/proc/self/task"),
                                          ::closedir};
  if (!dir)
    return out;
  auto read_file = [](const std::string& path) {
    std::string text;
    if (auto* f = std::fopen(path.c_str(), "r")) {
      char buf[512];
      auto n = std::fread(buf, 1, sizeof(buf), f);
      text.assign(buf, n);
      std::fclose(f);
    }
    while (!text.empty() && text.back() == '\n')
      text.pop_back();
    return text;
  };
  while (auto* e = ::readdir(dir.get())) {
    if (e->d_name[0] == '.')
      continue;
    auto base = std::string{"/proc/self/task/"} + e->d_name;
    auto stat = read_file(base + "/stat");
    auto paren = stat.rfind(')');
    out += std::string{e->d_name} + " " + read_file(base + "/comm") + " "
           + (paren != std::string::npos && paren + 2 < stat.size()
                ? stat.substr(paren + 2, 1)
                : "?")
           + " " + read_file(base + "/wchan") + " syscall "
           + read_file(base + "/syscall") + "\n";
  }
  return out;
}

/// The kernel's view of every TCP socket on `port` (/proc/net/tcp: local
/// and remote address:port in hex, state, transmit:receive queue).
std::string sockets_on(int port) {
  std::string out;
  char hex[8];
  std::snprintf(hex, sizeof(hex), ":%04X", port);
  if (auto* f = std::fopen("/proc/net/tcp", "r")) {
    char line[512];
    while (std::fgets(line, sizeof(line), f))
      if (std::strstr(line, hex))
        out += line;
    std::fclose(f);
  }
  return out;
}

/// What came back on one connection.
struct exchange {
  std::string bytes;
  /// The server closed the connection (EOF); false after a reset.
  bool closed_cleanly = false;
};

/// Connects, writes `request`, half-closes when `half_close`, and reads
/// until the server closes the connection; aborts when it does not within
/// the deadline.
exchange talk(int port, std::string_view request, bool half_close) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  FUZZ_CHECK(fd >= 0, std::string{"socket: "} + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // Close with a reset: thousands of connections a second would otherwise
  // fill the ephemeral ports with TIME_WAIT.
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  auto deadline = std::chrono::steady_clock::now() + answer_deadline;
  // Whether `events` came before the deadline. libFuzzer's timer signal
  // (SIGALRM, every second) interrupts poll: then it waits on.
  auto wait_for = [&](short events) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
      if (left <= 0)
        return false;
      pollfd p{fd, events, 0};
      auto n = ::poll(&p, 1, static_cast<int>(left));
      if (n > 0)
        return true;
      FUZZ_CHECK(n == 0 || errno == EINTR,
                 std::string{"poll: "} + std::strerror(errno));
    }
  };
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    FUZZ_CHECK(errno == EINPROGRESS,
               std::string{"connect: "} + std::strerror(errno));
    FUZZ_CHECK(wait_for(POLLOUT), std::string{"the server accepts no "
                                              "connection"});
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    FUZZ_CHECK(err == 0, std::string{"connect: "} + std::strerror(err));
  }
  exchange result;
  std::size_t sent = 0;
  bool reading = true;
  char buf[16384];
  // Write and read at once: a server may answer (and stop reading) before
  // the whole input is written.
  while (sent < request.size()) {
    FUZZ_CHECK(wait_for(POLLOUT | POLLIN),
               "the server neither read the request nor answered within "
                 + std::to_string(answer_deadline.count()) + " s\nthreads:\n"
                 + thread_states() + "sockets:\n" + sockets_on(port));
    auto n = ::send(fd, request.data() + sent, request.size() - sent,
                    MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      auto got = ::recv(fd, buf, sizeof(buf), 0);
      if (got > 0)
        result.bytes.append(buf, static_cast<std::size_t>(got));
      else if (got == 0) {
        result.closed_cleanly = true;
        reading = false;
        break;
      }
      continue;
    }
    break; // EPIPE, ECONNRESET: the server closed; read what it sent
  }
  if (half_close)
    ::shutdown(fd, SHUT_WR);
  while (reading) {
    FUZZ_CHECK(wait_for(POLLIN),
               "the server did not close the connection within "
                 + std::to_string(answer_deadline.count())
                 + " s of the end of the request; received so far: "
                 + printable(result.bytes) + "\nthreads:\n"
                 + thread_states() + "sockets:\n" + sockets_on(port));
    auto got = ::recv(fd, buf, sizeof(buf), 0);
    if (got > 0) {
      result.bytes.append(buf, static_cast<std::size_t>(got));
    } else if (got == 0) {
      result.closed_cleanly = true;
      reading = false;
    } else if (errno != EAGAIN && errno != EINTR) {
      reading = false; // reset: what arrived is all there is
    }
  }
  ::close(fd);
  return result;
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c))
         || std::string_view{"!#$%&'*+-.^_`|~"}.find(c)
              != std::string_view::npos;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i]))
        != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

/// Every "streamCount" in `v` is at most the limit.
void check_counts(const json::value& v, const std::string& context) {
  if (v.is_object()) {
    for (auto& kv : v.as_object()) {
      if (kv.key() == "streamCount")
        FUZZ_CHECK(kv.value().is_int64() && kv.value().get_int64() >= 0
                     && kv.value().get_int64() <= stream_limit,
                   "a stream count above the limit: " + context);
      check_counts(kv.value(), context);
    }
  } else if (v.is_array()) {
    for (auto& x : v.as_array())
      check_counts(x, context);
  }
}

/// Checks the responses in `ex` (see the invariants above); returns how
/// many there were.
int check_responses(const exchange& ex, std::string_view request) {
  std::string_view rest = ex.bytes;
  auto context = [&] {
    return "\nrequest: " + printable(request, 2000)
           + "\nanswer: " + printable(ex.bytes, 2000);
  };
  int count = 0;
  while (!rest.empty()) {
    // Status line: HTTP/1.x SP 3DIGIT SP reason CRLF.
    auto eol = rest.find("\r\n");
    if (eol == std::string_view::npos && !ex.closed_cleanly)
      break; // reset while it arrived
    FUZZ_CHECK(eol != std::string_view::npos, "no complete status line"
                                                + context());
    auto line = rest.substr(0, eol);
    FUZZ_CHECK(line.size() >= 12
                 && (line.substr(0, 9) == "HTTP/1.1 "
                     || line.substr(0, 9) == "HTTP/1.0 ")
                 && std::isdigit(static_cast<unsigned char>(line[9]))
                 && std::isdigit(static_cast<unsigned char>(line[10]))
                 && std::isdigit(static_cast<unsigned char>(line[11]))
                 && line[9] >= '1' && line[9] <= '5'
                 && (line.size() == 12 || line[12] == ' ')
                 && line.find_first_of(std::string_view{"\0\r\n", 3})
                      == std::string_view::npos,
               "invalid status line '" + printable(line) + "'" + context());
    int status = std::stoi(std::string{line.substr(9, 3)});
    FUZZ_CHECK(status < 500, "a 5xx answer" + context());
    auto head_end = rest.find("\r\n\r\n");
    if (head_end == std::string_view::npos && !ex.closed_cleanly)
      break;
    FUZZ_CHECK(head_end != std::string_view::npos,
               "headers cut off" + context());
    // Headers: name ":" value, the name a token.
    bool cors = false;
    bool dated = false;
    bool close = false;
    bool ranged = false;
    std::string_view content_type;
    long content_length = -1;
    auto headers = rest.substr(eol + 2, head_end - eol);
    while (!headers.empty()) {
      auto end = headers.find("\r\n");
      auto h = headers.substr(0, end);
      headers.remove_prefix(end + 2);
      auto colon = h.find(':');
      FUZZ_CHECK(colon != std::string_view::npos && colon > 0
                   && std::all_of(h.begin(), h.begin() + colon, is_token_char)
                   && h.find('\0') == std::string_view::npos,
                 "malformed header '" + printable(h) + "'" + context());
      auto name = h.substr(0, colon);
      auto value = h.substr(colon + 1);
      while (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);
      if (iequals(name, "Access-Control-Allow-Origin"))
        cors = value == "*";
      else if (iequals(name, "Date"))
        dated = value.size() == 29 && value.substr(25) == " GMT";
      else if (iequals(name, "Connection"))
        close = iequals(value, "close");
      else if (iequals(name, "Content-Type"))
        content_type = value;
      else if (iequals(name, "Content-Range"))
        ranged = true;
      else if (iequals(name, "Content-Length")) {
        FUZZ_CHECK(!value.empty() && value.size() < 10
                     && value.find_first_not_of("0123456789")
                          == std::string_view::npos,
                   "bad Content-Length" + context());
        content_length = std::stol(std::string{value});
      }
    }
    rest.remove_prefix(head_end + 4);
    ++count;
    if (status == 100)
      continue; // interim: no body, the final answer follows
    FUZZ_CHECK(cors, "no Access-Control-Allow-Origin: *" + context());
    FUZZ_CHECK(dated, "no Date (IMF-fixdate)" + context());
    // The body: Content-Length bytes, unless this answered a HEAD (then
    // the next response, or the end, follows at once).
    std::string_view body;
    if (content_length > 0 && !rest.empty() && rest.substr(0, 7) != "HTTP/1.") {
      if (static_cast<std::size_t>(content_length) > rest.size()) {
        FUZZ_CHECK(!ex.closed_cleanly, "body cut off" + context());
        break;
      }
      body = rest.substr(0, static_cast<std::size_t>(content_length));
      rest.remove_prefix(body.size());
    }
    FUZZ_CHECK(!close || rest.empty(),
               "bytes after an answer that said Connection: close"
                 + context());
    ranged = ranged || content_type.substr(0, 20) == "multipart/byteranges";
    // A Range header is ignored: the API's answers are never partial.
    FUZZ_CHECK(!ranged, "a partial (ranged) answer" + context());
    if (!body.empty() && content_type.substr(0, 16) == "application/json") {
      json::error_code ec;
      auto v = json::parse(body, ec);
      FUZZ_CHECK(!ec && v.is_object(), "a JSON body that does not parse"
                                         + context());
      if (status >= 400) {
        auto msg = v.as_object().find("msg");
        FUZZ_CHECK(msg != v.as_object().end() && msg->value().is_string(),
                   "a 4xx without \"msg\"" + context());
      }
      check_counts(v, context());
    }
  }
  return count;
}

/// Follows every input: a complete request that asks the server to close
/// the connection after it, so that every input is also a pipelined
/// sequence whose last request is known. When the input ends inside a
/// request (a short body), this is read as part of it instead; the
/// half-close then ends it.
constexpr std::string_view trailer =
  "GET /healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";

/// The server still accepts connections and answers.
void probe(int port) {
  // Half-closed after the request: the edge answers it (cpp-httplib's own
  // server answered nothing once it saw the end of the stream).
  auto ex = talk(port, "GET /healthz HTTP/1.1\r\nHost: fuzz\r\n\r\n", true);
  FUZZ_CHECK(ex.bytes.rfind("HTTP/1.1 200 ", 0) == 0,
             std::string{"GET /healthz on a new connection, half-closed "
                         "after the request, got no 200 ("}
               + (ex.closed_cleanly ? "closed" : "reset")
               + "): " + printable(ex.bytes));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  static server_under_test server;
  std::string_view input{reinterpret_cast<const char*>(data), size};
  std::string request{input};
  request += trailer;
  auto ex = talk(server.port, request, true);
  // VIDEOSTREAMS_FUZZ_VERBOSE=1 prints every exchange (to read what a
  // saved input does: fuzz_raw_request FILE).
  static const bool verbose = std::getenv("VIDEOSTREAMS_FUZZ_VERBOSE");
  if (verbose)
    std::fprintf(stderr, "request: %s\nanswer (%s): %s\n",
                 printable(input, 100000).c_str(),
                 ex.closed_cleanly ? "closed" : "reset",
                 printable(ex.bytes, 100000).c_str());
  check_responses(ex, input);
  probe(server.port);
  return 0;
}
