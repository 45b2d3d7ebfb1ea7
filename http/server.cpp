#include "http/server.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <limits>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

namespace videostreams {

namespace {

using clock_type = std::chrono::steady_clock;

constexpr auto relaxed = std::memory_order_relaxed;

/// How often the watchdog looks at the workers, and at the connections.
constexpr std::chrono::milliseconds watchdog_tick{10};
constexpr std::chrono::milliseconds scan_every{100};

/// On a stop, an idle connection used this recently is left to send its
/// next request (answered with `Connection: close`) rather than cut: its
/// client may be sending one now, which a cut would reset unanswered.
constexpr std::chrono::milliseconds drain_idle_grace{1000};

/// Every worker busy on its request for this long: the pool grows.
constexpr std::chrono::milliseconds starved_after{50};

/// A worker above the kept count that waited this long for work ends.
constexpr int idle_worker_ms = 30000;

/// Connections accepted per wake-up, at most (then the listener is re-armed,
/// so a flood of connects cannot keep one worker from its other events).
constexpr int accept_batch = 256;

/// Bytes read per `recv`.
constexpr std::size_t read_chunk = 16 * 1024;

/// Answers to pipelined requests are written once this many bytes of them
/// are ready, before the next requests are served: a client that pipelines
/// many requests for large answers and reads none makes the connection
/// hold about this much, not the sum of all its answers.
constexpr std::size_t answer_batch_bytes = 64 * 1024;

/// How long a connection whose request was refused still reads (and
/// drops) what its client sends before it is closed.
constexpr std::chrono::seconds linger_time{2};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           clock_type::now().time_since_epoch())
    .count();
}

std::int64_t to_ns(std::chrono::nanoseconds d) {
  return d.count();
}

const char* reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return status < 500 ? "Bad Request" : "Server Error";
  }
}

/// The `Date` header's value for now (RFC 9110 IMF-fixdate, e.g. "Sun, 06
/// Nov 1994 08:49:37 GMT"). Formatted once a second per thread.
const std::string& http_date() {
  thread_local std::time_t last = -1;
  thread_local std::string text;
  auto now = std::time(nullptr);
  if (now != last) {
    static constexpr const char* days[]
      = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[]
      = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm utc{};
    gmtime_r(&now, &utc);
    char buf[40];
    std::snprintf(buf, sizeof(buf), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                  days[utc.tm_wday], utc.tm_mday, months[utc.tm_mon],
                  utc.tm_year + 1900, utc.tm_hour, utc.tm_min, utc.tm_sec);
    text = buf;
    last = now;
  }
  return text;
}

/// An answer the edge writes itself, after which it closes the
/// connection.
std::string closing_answer(const api_response& x) {
  std::string out = "HTTP/1.1 " + std::to_string(x.status) + " "
                    + reason_phrase(x.status) + "\r\n";
  out += "Access-Control-Allow-Origin: *\r\n";
  out += "Date: " + http_date() + "\r\n";
  out += "Connection: close\r\n";
  for (auto& [name, value] : x.headers)
    out += std::string{name} + ": " + value + "\r\n";
  if (!x.body.empty())
    out += "Content-Type: " + std::string{x.content_type} + "\r\n";
  out += "Content-Length: " + std::to_string(x.body.size()) + "\r\n\r\n";
  out += x.body;
  return out;
}

/// The edge's own refusal (a request it will not frame, a connection
/// shed), with the API's JSON error body.
std::string closing_answer(int status, std::string_view detail) {
  api_response x;
  x.status = status;
  x.body = api::error_body(status, detail);
  if (status == 503)
    x.headers.emplace_back("Retry-After", "1");
  return closing_answer(x);
}

/// The path of a request target (without its query), %-decoded as
/// cpp-httplib decodes the paths it routes (with its own decoder).
std::string decoded_path(std::string_view target) {
  auto path = target.substr(0, target.find_first_of("?#"));
  return httplib::detail::decode_url(std::string{path}, false);
}

/// Writes all of `data`, waiting for the socket at most until `deadline`.
bool send_all(int fd, std::string_view data, clock_type::time_point deadline) {
  while (!data.empty()) {
    auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - clock_type::now());
    if (left.count() <= 0)
      return false;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0
        && errno != EINTR)
      return false;
  }
  return true;
}

/// Bytes have arrived that no worker has read yet: the connection is not
/// idle, its event is on its way to a worker.
bool has_unread_bytes(int fd) {
  char byte;
  return ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void describe(const sockaddr_storage& a, std::string& ip, int& port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    ::inet_ntop(AF_INET, &v4.sin_addr, buf, sizeof(buf));
    port = ntohs(v4.sin_port);
  } else if (a.ss_family == AF_INET6) {
    auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
    ::inet_ntop(AF_INET6, &v6.sin6_addr, buf, sizeof(buf));
    port = ntohs(v6.sin6_port);
  }
  ip = buf;
}

/// What the API's handler reports of the request it answered, to the
/// worker that runs cpp-httplib on it (the same thread): a request the
/// handler never saw was answered by cpp-httplib itself (one it could not
/// parse, say), and is counted as the edge's.
struct handled_request {
  bool answered = false;
  route which = route::unmatched;
  int status = 0;
  std::string method;
  std::string path;
};

thread_local handled_request* current_request = nullptr;

/// At most this much of a path goes into an access log line.
constexpr std::size_t logged_path_bytes = 2048;

std::string_view clipped_path(std::string_view path) {
  return path.substr(0, logged_path_bytes);
}

/// The method and target (without its query) of a request line that the
/// edge refused or cpp-httplib could not parse, as far as they can be
/// told; "-" for what cannot.
std::pair<std::string, std::string> request_line_parts(std::string_view bytes) {
  auto eol = bytes.find('\n');
  auto line = bytes.substr(0, std::min(eol, std::size_t{8192}));
  auto sp = line.find(' ');
  std::string method = "-";
  std::string path = "-";
  if (sp != std::string_view::npos && sp > 0 && sp <= 32) {
    method = std::string{line.substr(0, sp)};
    auto rest = line.substr(sp + 1);
    auto end = rest.find_first_of(" ?\r");
    auto target = rest.substr(0, end);
    if (!target.empty())
      path = std::string{clipped_path(target)};
  }
  return {method, path};
}

/// The status code of the answer that starts `out` ("HTTP/1.1 400 ..."),
/// or 0.
int status_of_answer(std::string_view out) {
  if (out.size() < 12 || out.substr(0, 5) != "HTTP/")
    return 0;
  auto sp = out.find(' ');
  if (sp == std::string_view::npos || sp + 4 > out.size())
    return 0;
  int code = 0;
  for (std::size_t i = sp + 1; i < sp + 4; ++i) {
    if (out[i] < '0' || out[i] > '9')
      return 0;
    code = code * 10 + (out[i] - '0');
  }
  return code;
}

/// A framed request without its Range fields (the edge has checked its
/// lines: CRLF-ended, a blank line after the header).
std::string without_range_fields(std::string_view request) {
  auto head_end = request.find("\r\n\r\n");
  auto at = request.find("\r\n") + 2; // past the request line
  std::string out{request.substr(0, at)};
  while (at < head_end + 2) {
    auto eol = request.find("\r\n", at);
    auto line = request.substr(at, eol + 2 - at);
    if (!starts_with_ignoring_case(line, "Range:"))
      out += line;
    at = eol + 2;
  }
  out += request.substr(head_end + 2);
  return out;
}

/// Fixes up an answer cpp-httplib wrote (from `at` in `out`) for what the
/// edge does next: it closes the connection after a request cpp-httplib
/// could not parse, so that answer says `Connection: close` instead of
/// `Keep-Alive`; a 204 carries no Content-Length (RFC 9110 §8.6); and an
/// answer to HEAD does not advertise `Accept-Ranges: bytes` (cpp-httplib
/// adds it to every HEAD answer; the edge ignores `Range`).
void fix_answer(std::string& out, std::size_t at, bool closing, bool head) {
  bool no_content = out.compare(at, 13, "HTTP/1.1 204 ") == 0;
  if (!closing && !no_content && !head)
    return;
  auto head_end = out.find("\r\n\r\n", at);
  if (head_end == std::string::npos)
    return;
  auto drop_field = [&](std::string_view name) {
    for (auto line = out.find("\r\n", at); line < head_end;
         line = out.find("\r\n", line + 2)) {
      if (starts_with_ignoring_case(
            std::string_view{out}.substr(line + 2), name)) {
        auto next = out.find("\r\n", line + 2);
        out.erase(line, next - line);
        head_end -= next - line;
        return;
      }
    }
  };
  if (closing) {
    drop_field("Keep-Alive:");
    drop_field("Connection:");
    auto status_end = out.find("\r\n", at);
    out.insert(status_end, "\r\nConnection: close");
    head_end += 19;
  }
  if (no_content)
    drop_field("Content-Length:");
  if (head)
    drop_field("Accept-Ranges:");
}

/// The operations port's 404 for a path it does not serve.
constexpr std::string_view not_an_operations_route
  = "the operations port serves probes, metrics and operator endpoints only";

/// Markers for the two epoll entries that are no connection.
char listener_marker;
char wake_marker;

/// One whole request, framed by the edge, as the stream cpp-httplib parses
/// it from; what cpp-httplib writes is gathered for one `send`.
class request_stream final : public httplib::Stream {
public:
  request_stream(std::string_view request, std::string& out,
                 const http_server::connection& from);

  bool is_readable() const override {
    return pos_ < in_.size();
  }
  bool is_writable() const override {
    return true;
  }
  ssize_t read(char* ptr, size_t size) override {
    auto n = std::min(size, in_.size() - pos_);
    std::memcpy(ptr, in_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    out_.append(ptr, size);
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  /// No socket: the request is in memory. (cpp-httplib answers 500 for a
  /// socket number at or above FD_SETSIZE, which it would `select` on.)
  socket_t socket() const override {
    return INVALID_SOCKET;
  }

private:
  std::string_view in_;
  std::size_t pos_ = 0;
  std::string& out_;
  const http_server::connection& from_;
};

void write_response(const api_response& x, httplib::Response& res) {
  res.status = x.status;
  for (auto& [name, value] : x.headers)
    res.set_header(std::string{name}, value);
  if (!x.body.empty())
    res.set_content(x.body, std::string{x.content_type});
}

/// The first value of header `name` as sent (after %-decoding), or empty.
std::string_view header_of(const httplib::Request& req, const char* name) {
  auto it = req.headers.find(name);
  return it == req.headers.end() ? std::string_view{}
                                 : std::string_view{it->second};
}

/// The Authorization header as sent, after cpp-httplib's %-decoding of
/// header values (which `get_header_value` would cut at a NUL).
std::string_view authorization_of(const httplib::Request& req) {
  return header_of(req, "Authorization");
}

bool has_control_character(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

} // namespace

/// One client connection. A worker owns it while it holds its (one-shot)
/// event; the watchdog only reads its atomics and, under the server's
/// mutex, cuts it (`shutdown`), which wakes its worker to close it.
class http_server::connection {
public:
  connection(int fd, const sockaddr_storage& peer, const sockaddr_storage& local)
    : fd(fd) {
    describe(peer, peer_ip, peer_port);
    describe(local, local_ip, local_port);
    last_active_ns.store(now_ns(), relaxed);
  }

  const int fd;
  std::string peer_ip;
  int peer_port = 0;
  std::string local_ip;
  int local_port = 0;
  /// Bytes read and not yet served (an incomplete request, or pipelined
  /// requests behind the one being served).
  std::string in;
  std::size_t served = 0;
  bool continue_sent = false;
  /// When the last byte was read or the last answer written.
  std::atomic<std::int64_t> last_active_ns{0};
  /// When the first byte of the request still incomplete arrived; 0 if
  /// none is.
  std::atomic<std::int64_t> request_started_ns{0};
  /// Until when it lingers after a refused request (0: it does not).
  std::atomic<std::int64_t> linger_until_ns{0};
  /// Answers not yet taken by the client (from `out_sent` on): the
  /// connection waits to be writable, holding no worker.
  std::string out;
  std::size_t out_sent = 0;
  /// Since when `out` has waited for the client (0: nothing waits); the
  /// watchdog cuts it past the write timeout.
  std::atomic<std::int64_t> write_waiting_ns{0};
  /// The client closed its side: once the whole requests it sent are
  /// answered, the connection closes.
  bool peer_closed = false;
  /// What follows once `out` is written: the answers so far ended the
  /// connection (`close`: the last one said so; `linger`: a request was
  /// refused).
  enum class ending { open, close, linger };
  ending after_answers = ending::open;
  /// A worker holds it.
  std::atomic<bool> busy{false};
  /// It was cut: whoever takes its next event closes it.
  std::atomic<bool> cut{false};
};

request_stream::request_stream(std::string_view request, std::string& out,
                               const http_server::connection& from)
  : in_(request), out_(out), from_(from) {
  // Nothing else to do.
}

void request_stream::get_remote_ip_and_port(std::string& ip, int& port) const {
  ip = from_.peer_ip;
  port = from_.peer_port;
}

void request_stream::get_local_ip_and_port(std::string& ip, int& port) const {
  ip = from_.local_ip;
  port = from_.local_port;
}

/// cpp-httplib's server, used for its per-request entry point only: it
/// parses one request from a stream, routes it, and writes the answer.
class http_server::engine : public httplib::Server {
public:
  using httplib::Server::process_request;
};

http_server::http_server(api& handler, http_server_settings settings,
                         http_metrics& metrics)
  : api_(handler),
    settings_(std::move(settings)),
    metrics_(metrics),
    figures_(metrics.listener(settings_.kind)),
    engine_(std::make_unique<engine>()) {
  auto& svr = *engine_;
  svr.set_keep_alive_max_count(settings_.keep_alive_max_requests);
  svr.set_keep_alive_timeout(settings_.keep_alive_timeout.count());
  svr.set_payload_max_length(settings_.limits.max_body_bytes);
  svr.set_default_headers({{"Access-Control-Allow-Origin", "*"}});
  auto serve = [this](const httplib::Request& req, httplib::Response& res) {
    auto start = clock_type::now();
    auto which = match_route(req.path).which;
    auto authorization = authorization_of(req);
    if (has_control_character(authorization)) {
      res.status = 400;
      res.set_content(api::error_body(400, "the Authorization header holds "
                                           "a control character (header "
                                           "values are %-decoded)"),
                      "application/json; charset=utf-8");
      metrics_.record(which, res.status, clock_type::now() - start);
    } else if (settings_.operations_only && !is_operations_route(which)) {
      res.status = 404;
      res.set_content(api::error_body(404, not_an_operations_route),
                      "application/json; charset=utf-8");
      metrics_.record(which, res.status, clock_type::now() - start);
    } else {
      // The API counts its answers itself.
      auto if_none_match = req.headers.find("If-None-Match");
      write_response(
        api_.handle(api_request{req.method, req.path, req.body, authorization,
                                if_none_match == req.headers.end()
                                  ? std::string_view{}
                                  : std::string_view{if_none_match->second},
                                header_of(req,
                                          "Access-Control-Request-Headers")}),
        res);
    }
    if (current_request != nullptr) {
      current_request->answered = true;
      current_request->which = which;
      current_request->status = res.status;
    }
  };
  // Every answer cpp-httplib writes, the API's and its own errors alike,
  // carries a Date (RFC 9110 §6.6.1: an origin server with a clock sends
  // one).
  svr.set_post_routing_handler(
    [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Date", http_date());
    });
  // Requests without a body (the hot path) are answered before
  // cpp-httplib's regex routing; that also lets every method reach the
  // API's 404/405. The edge has framed every request already, so a body is
  // exactly what Content-Length or the chunks say.
  svr.set_pre_routing_handler(
    [serve](const httplib::Request& req, httplib::Response& res) {
      if (req.has_header("Transfer-Encoding")
          || (req.has_header("Content-Length")
              && req.get_header_value("Content-Length") != "0"))
        return httplib::Server::HandlerResponse::Unhandled;
      serve(req, res);
      return httplib::Server::HandlerResponse::Handled;
    });
  // Bodies go through content readers: cpp-httplib then neither parses a
  // form body (which it caps at 8 KiB) nor decompresses (the edge refused
  // any Content-Encoding); the edge bounded the body already.
  auto with_body = [serve](const httplib::Request& req,
                           httplib::Response& res,
                           const httplib::ContentReader& read) {
    auto& body = const_cast<httplib::Request&>(req).body;
    read([&body](const char* data, std::size_t n) {
      body.append(data, n);
      return true;
    });
    serve(req, res);
  };
  // Every path (`.` would not match a %-decoded line break).
  const std::string any_path = "[\\s\\S]*";
  svr.Post(any_path, with_body);
  svr.Put(any_path, with_body);
  svr.Patch(any_path, with_body);
  svr.Delete(any_path, with_body);
  svr.Get(any_path, serve);
  svr.Options(any_path, serve);
  // Errors that cpp-httplib raises itself (a malformed request line...)
  // get the same JSON bodies as the API's own.
  svr.set_error_handler(httplib::Server::HandlerWithResponse{
    [](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty())
        return httplib::Server::HandlerResponse::Unhandled;
      res.set_content(api::error_body(res.status),
                      "application/json; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }});
}

http_server::~http_server() {
  for (auto* c : open_) {
    ::close(c->fd);
    delete c;
  }
  for (int fd : {listen_fd_, epoll_fd_, wake_fd_})
    if (fd >= 0)
      ::close(fd);
}

int http_server::bind() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
  addrinfo* found = nullptr;
  auto service = std::to_string(settings_.port);
  if (auto rc = ::getaddrinfo(settings_.bind_address.c_str(), service.c_str(),
                              &hints, &found);
      rc != 0 || found == nullptr) {
    bind_error_ = rc == EAI_NONAME
                    ? std::string{"not a numeric IP address"}
                    : std::string{::gai_strerror(rc)};
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard{found,
                                                              ::freeaddrinfo};
  int fd = ::socket(found->ai_family,
                    found->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    found->ai_protocol);
  if (fd < 0) {
    bind_error_ = std::strerror(errno);
    return -1;
  }
  // Reuse the address (restart while old sockets linger in TIME_WAIT) but
  // not the port: SO_REUSEPORT would let a second process bind it too and
  // silently take half the connections.
  int yes = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  if (::bind(fd, found->ai_addr, found->ai_addrlen) != 0
      || ::listen(fd, SOMAXCONN) != 0) {
    bind_error_ = std::strerror(errno);
    ::close(fd);
    return -1;
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  std::string ip;
  int port = 0;
  describe(bound, ip, port);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    bind_error_ = std::strerror(errno);
    ::close(fd);
    return -1;
  }
  listen_fd_ = fd;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLONESHOT;
  ev.data.ptr = &listener_marker;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.events = EPOLLIN; // level-triggered: once written, wakes every worker
  ev.data.ptr = &wake_marker;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  return port;
}

void http_server::run() {
  if (listen_fd_ < 0)
    return;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    for (std::size_t i = 0; i < std::max<std::size_t>(settings_.threads, 1);
         ++i)
      spawn_worker();
  }
  watchdog_loop();
  exiting_.store(true);
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof(one));
  std::vector<worker> done;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    done.swap(workers_);
  }
  for (auto& w : done)
    w.thread.join();
  figures_.workers.store(0, relaxed);
}

void http_server::stop() {
  stop(clock_type::now() + settings_.shutdown_timeout);
}

void http_server::stop(clock_type::time_point cut_at) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (stop_requested_)
    return;
  stop_requested_ = true;
  drain_deadline_ = cut_at;
  draining_.store(true);
  stopped_.notify_all(); // the watchdog shuts the listener and drains
}

void http_server::spawn_worker() {
  // Under mtx_. Ended workers are joined here, so the list stays short.
  workers_.erase(std::remove_if(workers_.begin(), workers_.end(),
                                [](worker& w) {
                                  if (!w.done->load())
                                    return false;
                                  w.thread.join();
                                  return true;
                                }),
                 workers_.end());
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto since = std::make_shared<std::atomic<std::int64_t>>(0);
  workers_.push_back(worker{std::thread{[this, done, since] {
                              worker_loop(*since);
                              done->store(true);
                            }},
                            done, since});
  ++live_workers_;
  figures_.workers.store(static_cast<std::int64_t>(live_workers_), relaxed);
}

void http_server::worker_loop(std::atomic<std::int64_t>& busy_since) {
  epoll_event ev{};
  for (;;) {
    int n = ::epoll_wait(epoll_fd_, &ev, 1, idle_worker_ms);
    if (exiting_.load())
      return;
    if (n == 0) {
      std::lock_guard<std::mutex> guard{mtx_};
      if (live_workers_ > settings_.threads) {
        --live_workers_;
        figures_.workers.store(static_cast<std::int64_t>(live_workers_),
                               relaxed);
        return;
      }
      continue;
    }
    if (n < 0 || ev.data.ptr == &wake_marker)
      continue;
    busy_since.store(now_ns(), relaxed);
    figures_.busy_workers.fetch_add(1, relaxed);
    if (ev.data.ptr == &listener_marker)
      accept_ready();
    else
      on_readable(static_cast<connection*>(ev.data.ptr));
    figures_.busy_workers.fetch_sub(1, relaxed);
    busy_since.store(0, relaxed);
  }
}

bool http_server::accept_queued(int limit) {
  for (int i = 0; i < limit; ++i) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      return errno != EMFILE && errno != ENFILE && errno != ENOBUFS
             && errno != ENOMEM;
    }
    admit(fd, peer);
  }
  return true;
}

void http_server::accept_ready() {
  if (!accept_queued(accept_batch)) {
    // Out of descriptors: leave the listener disarmed for a moment (it
    // stays readable, so arming it now would spin); the watchdog arms it
    // again.
    std::lock_guard<std::mutex> guard{mtx_};
    listener_paused_until_ = clock_type::now() + scan_every;
    return;
  }
  if (!draining_.load())
    arm_listener();
}

void http_server::arm_listener() {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLONESHOT;
  ev.data.ptr = &listener_marker;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
}

void http_server::close_listener() {
  // Connections already queued get their answers too: accept them before
  // the listener is shut (which resets whatever is still queued).
  accept_queued(std::numeric_limits<int>::max());
  ::shutdown(listen_fd_, SHUT_RDWR); // closed in the destructor
}

void http_server::admit(int fd, const sockaddr_storage& peer) {
  figures_.accepted.fetch_add(1, relaxed);
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (open_.size() >= settings_.max_connections && !evict_one()) {
      figures_.shed.fetch_add(1, relaxed);
    } else {
      int yes = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
      sockaddr_storage local{};
      socklen_t len = sizeof(local);
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
      auto* c = new connection(fd, peer, local);
      open_.insert(c);
      figures_.open_connections.fetch_add(1, relaxed);
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
      ev.data.ptr = c;
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
      return;
    }
  }
  // Beyond the cap with every connection held by a worker: say so, at
  // once.
  metrics_.record_edge(503);
  if (settings_.access_log) {
    std::string ip;
    int port = 0;
    describe(peer, ip, port);
    log_request("-", "-", http_metrics::edge_route, 503,
                std::chrono::nanoseconds{0}, ip, port);
  }
  send_all(fd, closing_answer(503, "too many connections"),
           clock_type::now());
  ::close(fd);
}

void http_server::log_request(std::string_view method, std::string_view path,
                              std::string_view route, int status,
                              std::chrono::nanoseconds took,
                              std::string_view peer_ip, int peer_port) const {
  auto seconds = std::chrono::duration<double>(took).count();
  char ms[32];
  std::snprintf(ms, sizeof(ms), "%.3f", seconds * 1000);
  auto remote = host_port(peer_ip, peer_port);
  settings_.access_log->info(
    "request",
    std::string{method} + " " + std::string{path} + " "
      + std::to_string(status) + " " + ms + " ms",
    {{"method", method},
     {"path", path},
     {"route", route},
     {"status", status},
     {"duration_seconds", seconds},
     {"listener", listener_name(settings_.kind)},
     {"remote", remote}});
}

bool http_server::evict_one() {
  // Under mtx_. Of the connections no worker holds, in this order: the
  // longest idle; the one whose request has been arriving longest (a
  // client that trickles its request must not keep a new one out); the
  // one whose answers have waited longest for its client; the longest
  // lingering after a refusal. A connection a worker holds is serving a
  // request and is never cut.
  enum rank { idle, arriving, unread_answers, lingering, none };
  // An "idle" one whose request has just arrived (its event is on the
  // way to a worker) is not idle: it is passed over, a few times at most.
  std::vector<connection*> passed_over;
  for (int attempt = 0; attempt < 4; ++attempt) {
    connection* chosen = nullptr;
    auto chosen_rank = none;
    std::int64_t chosen_since = 0;
    for (auto* c : open_) {
      if (c->busy.load(relaxed) || c->cut.load(relaxed))
        continue;
      auto r = idle;
      auto since = c->last_active_ns.load(relaxed);
      if (auto t = c->linger_until_ns.load(relaxed); t != 0) {
        r = lingering;
        since = t;
      } else if (auto w = c->write_waiting_ns.load(relaxed); w != 0) {
        r = unread_answers;
        since = w;
      } else if (auto s = c->request_started_ns.load(relaxed); s != 0) {
        r = arriving;
        since = s;
      }
      if (r < chosen_rank || (r == chosen_rank && since < chosen_since)) {
        if (std::find(passed_over.begin(), passed_over.end(), c)
            != passed_over.end())
          continue;
        chosen = c;
        chosen_rank = r;
        chosen_since = since;
      }
    }
    if (chosen == nullptr)
      return false;
    if (chosen_rank == idle && has_unread_bytes(chosen->fd)) {
      passed_over.push_back(chosen);
      continue;
    }
    cut(chosen);
    figures_.evicted.fetch_add(1, relaxed);
    return true;
  }
  return false;
}

void http_server::cut(connection* c) {
  // Under mtx_, so `c` (and its descriptor) is still open: only a worker
  // holding its event closes it, after taking it out of `open_`.
  if (c->cut.exchange(true))
    return;
  ::shutdown(c->fd, SHUT_RDWR); // its next event (HUP) reaches a worker
}

void http_server::close_connection(connection* c) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    open_.erase(c);
    if (open_.empty() && draining_.load())
      stopped_.notify_all();
  }
  ::close(c->fd); // also takes it out of the epoll set
  figures_.open_connections.fetch_sub(1, relaxed);
  delete c;
}

void http_server::rearm(connection* c) {
  c->busy.store(false);
  epoll_event ev{};
  // While answers wait for the client, only its taking them (or hanging
  // up) matters; its next bytes are read once they are written.
  // (Not EPOLLRDHUP then: a client that shut its side but reads slowly
  // would make it fire again at once, a spin.)
  ev.events = (c->out.empty() ? EPOLLIN | EPOLLRDHUP : EPOLLOUT)
              | EPOLLONESHOT;
  ev.data.ptr = c;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c->fd, &ev);
}

http_server::write_result http_server::write_answers(connection* c) {
  // Stamped before the client can see an answer, so a connection used
  // after another is always the younger (eviction picks the oldest).
  c->last_active_ns.store(now_ns(), relaxed);
  while (c->out_sent < c->out.size()) {
    auto n = ::send(c->fd, c->out.data() + c->out_sent,
                    c->out.size() - c->out_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->out_sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (c->write_waiting_ns.load(relaxed) == 0)
        c->write_waiting_ns.store(now_ns(), relaxed);
      return write_result::waiting;
    }
    return write_result::failed;
  }
  c->out.clear();
  c->out_sent = 0;
  if (c->out.capacity() > answer_batch_bytes)
    std::string{}.swap(c->out); // idle connections hold no buffer
  c->write_waiting_ns.store(0, relaxed);
  return write_result::written;
}

void http_server::go_on(connection* c, next_step next) {
  switch (next) {
    case next_step::keep:
      rearm(c);
      break;
    case next_step::linger:
      linger(c);
      break;
    case next_step::close:
      close_connection(c);
      break;
  }
}

void http_server::on_readable(connection* c) {
  c->busy.store(true);
  if (c->cut.load()) {
    close_connection(c);
    return;
  }
  if (!c->out.empty()) {
    // The client can take more of its answers (or it hung up): write
    // them, then serve what it sent meanwhile.
    go_on(c, serve_buffered(c));
    return;
  }
  char buf[read_chunk];
  if (c->linger_until_ns.load(relaxed) != 0) {
    for (;;) {
      auto n = ::recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0 || (n < 0 && errno == EINTR))
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        rearm(c);
      else
        close_connection(c); // the client closed too
      return;
    }
  }
  // Read what has arrived, but never more than a request can be: the
  // framing refuses a request that grows larger, so a buffer this full
  // always holds a whole or a refused request.
  auto cap = settings_.limits.max_request_bytes() + read_chunk;
  while (c->in.size() < cap) {
    auto n = ::recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      if (c->in.empty())
        c->request_started_ns.store(now_ns(), relaxed);
      c->in.append(buf, static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < sizeof(buf))
        break;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
      c->peer_closed = true;
    break;
  }
  c->last_active_ns.store(now_ns(), relaxed);
  auto next = serve_buffered(c);
  if (next == next_step::keep && c->out.empty() && c->in.size() >= cap) {
    // Cannot happen (see `cap`); never spin on a full buffer.
    next = next_step::close;
  }
  go_on(c, next);
}

void http_server::linger(connection* c) {
  ::shutdown(c->fd, SHUT_WR);
  std::string{}.swap(c->in);
  c->request_started_ns.store(0, relaxed);
  c->linger_until_ns.store(now_ns() + to_ns(linger_time), relaxed);
  rearm(c);
}

http_server::next_step http_server::serve_buffered(connection* c) {
  for (;;) {
    auto more = answer_buffered(c);
    if (!c->out.empty()) {
      switch (write_answers(c)) {
        case write_result::failed:
          return next_step::close;
        case write_result::waiting:
          return next_step::keep; // `rearm` waits for the client to read
        case write_result::written:
          break;
      }
    }
    if (!more || c->after_answers != connection::ending::open)
      break;
  }
  // A peer that closed its side got the answers to its whole requests; a
  // request it left incomplete can never complete.
  if (c->peer_closed || c->cut.load())
    return next_step::close;
  switch (c->after_answers) {
    case connection::ending::linger:
      return next_step::linger; // the rest of its bytes may still arrive
    case connection::ending::close:
      return next_step::close;
    case connection::ending::open:
      break;
  }
  return next_step::keep;
}

bool http_server::answer_buffered(connection* c) {
  auto& out = c->out;
  std::size_t consumed = 0;
  bool more = false;
  while (c->after_answers == connection::ending::open
         && consumed < c->in.size()) {
    if (out.size() >= answer_batch_bytes) {
      more = true; // written first; then the rest
      break;
    }
    std::string_view rest{c->in.data() + consumed, c->in.size() - consumed};
    auto f = frame_request(rest, settings_.limits);
    if (f.what == request_frame::state::incomplete) {
      if (f.expects_continue && !c->continue_sent) {
        out += "HTTP/1.1 100 Continue\r\n\r\n";
        c->continue_sent = true;
      }
      break;
    }
    if (f.what == request_frame::state::refused) {
      figures_.refused.fetch_add(1, relaxed);
      metrics_.record_edge(f.status);
      if (settings_.access_log) {
        auto [method, path] = request_line_parts(rest.substr(f.skip));
        auto began = c->request_started_ns.load(relaxed);
        log_request(method, path, http_metrics::edge_route, f.status,
                    std::chrono::nanoseconds{began == 0 ? 0
                                                        : now_ns() - began},
                    c->peer_ip, c->peer_port);
      }
      out += closing_answer(f.status, f.reason);
      consumed = c->in.size();
      c->after_answers = connection::ending::linger;
      break;
    }
    c->continue_sent = false;
    if (f.unknown_method) {
      // cpp-httplib cannot parse it: the API answers it (a 405 with
      // `Allow` on a known path, else a 404) and the connection closes.
      out += closing_answer(answer_unknown_method(
        rest.substr(f.skip, f.size), c->peer_ip, c->peer_port));
      consumed += f.skip + f.size;
      c->after_answers = connection::ending::close;
      break;
    }
    bool last = f.http10 || draining_.load()
                || ++c->served >= settings_.keep_alive_max_requests;
    bool client_closes = false;
    bool parsed = false;
    auto answer_at = out.size();
    auto began = clock_type::now();
    handled_request handled;
    struct reporting_to {
      explicit reporting_to(handled_request* x) {
        current_request = x;
      }
      ~reporting_to() {
        current_request = nullptr;
      }
    } reporting{&handled};
    auto request = rest.substr(f.skip, f.size);
    std::string without_range;
    if (f.has_range) {
      without_range = without_range_fields(request);
      request = without_range;
    }
    request_stream strm{request, out, *c};
    engine_->process_request(strm, last, client_closes,
                             [&parsed, &handled](httplib::Request& req) {
                               parsed = true;
                               handled.method = req.method;
                               handled.path = std::string{
                                 clipped_path(req.path)};
                               // The edge has the whole body already.
                               req.headers.erase("Expect");
                             });
    if (!handled.answered) {
      // cpp-httplib answered by itself: a request it could not parse (400),
      // a request line over its 8 KiB (414)...
      auto status = status_of_answer(
        std::string_view{out}.substr(answer_at));
      metrics_.record_edge(status);
      if (!parsed) {
        auto [method, path] = request_line_parts(rest.substr(f.skip, f.size));
        handled.method = method;
        handled.path = path;
      }
      handled.status = status;
    }
    fix_answer(out, answer_at, !parsed, handled.method == "HEAD");
    if (settings_.access_log)
      log_request(handled.method.empty() ? "-" : handled.method,
                  handled.path.empty() ? "-" : handled.path,
                  handled.answered ? route_template(handled.which)
                                   : http_metrics::edge_route,
                  handled.status, clock_type::now() - began, c->peer_ip,
                  c->peer_port);
    consumed += f.skip + f.size;
    // A request cpp-httplib could not parse was answered 400: its
    // connection is closed, as after any refused request.
    if (last || client_closes || !parsed)
      c->after_answers = connection::ending::close;
  }
  c->in.erase(0, consumed);
  if (c->in.empty()) {
    c->request_started_ns.store(0, relaxed);
    if (c->in.capacity() > read_chunk)
      std::string{}.swap(c->in); // idle connections hold no buffer
  } else if (consumed > 0) {
    c->request_started_ns.store(now_ns(), relaxed); // the next one began
  }
  return more;
}

api_response http_server::answer_unknown_method(std::string_view request,
                                                std::string_view peer_ip,
                                                int peer_port) {
  auto began = clock_type::now();
  auto line = request.substr(0, request.find("\r\n"));
  auto sp1 = line.find(' ');
  auto sp2 = line.find(' ', sp1 + 1);
  auto method = line.substr(0, sp1);
  auto path = decoded_path(line.substr(sp1 + 1, sp2 - sp1 - 1));
  auto which = match_route(path).which;
  api_response res;
  if (settings_.operations_only && !is_operations_route(which)) {
    res.status = 404;
    res.body = api::error_body(404, not_an_operations_route);
    metrics_.record(which, res.status, clock_type::now() - began);
  } else {
    res = api_.handle(api_request{method, path, {}, {}});
  }
  if (settings_.access_log)
    log_request(method, clipped_path(path), route_template(which), res.status,
                clock_type::now() - began, peer_ip, peer_port);
  return res;
}

void http_server::watchdog_loop() {
  std::unique_lock<std::mutex> guard{mtx_};
  auto next_scan = clock_type::now();
  for (;;) {
    stopped_.wait_for(guard, watchdog_tick);
    if (draining_.load() && !listener_closed_) {
      listener_closed_ = true;
      guard.unlock();
      close_listener();
      guard.lock();
    }
    auto now = clock_type::now();
    if (draining_.load() && (open_.empty() || now >= drain_deadline_)) {
      if (open_.empty())
        return;
      for (auto* c : open_)
        cut(c); // the shutdown timeout has passed
      // A write timeout for the workers to see their connections cut,
      // counted from the deadline: a listener stopped after it passed
      // (`stop(cut_at)`) does not add one of its own.
      stopped_.wait_until(guard, drain_deadline_ + settings_.write_timeout,
                          [this] { return open_.empty(); });
      return;
    }
    grow_if_starved(now);
    if (listener_paused_until_ != clock_type::time_point{}
        && now >= listener_paused_until_ && !draining_.load()) {
      listener_paused_until_ = {};
      arm_listener();
    }
    if (now < next_scan && !draining_.load())
      continue;
    next_scan = now + scan_every;
    auto t = to_ns(now.time_since_epoch());
    auto read_limit = to_ns(settings_.read_timeout);
    auto write_limit = to_ns(settings_.write_timeout);
    auto idle_limit = to_ns(settings_.keep_alive_timeout);
    for (auto* c : open_) {
      if (c->cut.load(relaxed))
        continue;
      if (auto until = c->linger_until_ns.load(relaxed); until != 0) {
        if (t > until)
          cut(c);
        continue;
      }
      if (auto waiting = c->write_waiting_ns.load(relaxed); waiting != 0) {
        if (t - waiting > write_limit) {
          figures_.timed_out.fetch_add(1, relaxed);
          cut(c); // its client took no answer for that long
        }
        continue;
      }
      auto started = c->request_started_ns.load(relaxed);
      if (started != 0) {
        if (t - started > read_limit) {
          figures_.timed_out.fetch_add(1, relaxed);
          cut(c);
        }
      } else if (!c->busy.load(relaxed) && !has_unread_bytes(c->fd)) {
        auto idle_for = t - c->last_active_ns.load(relaxed);
        if (idle_for > idle_limit
            || (draining_.load() && idle_for > to_ns(drain_idle_grace)))
          cut(c); // idle: past its keep-alive, or the server is stopping
      }
    }
  }
}

void http_server::grow_if_starved(clock_type::time_point now) {
  // Under mtx_. Every worker busy on one request for a while (a handler
  // waits, say, for a database that is down) would leave new requests
  // unread: add workers, a quarter more at a time.
  if (live_workers_ >= settings_.max_threads)
    return;
  auto t = to_ns(now.time_since_epoch());
  std::size_t running = 0;
  for (auto& w : workers_) {
    if (w.done->load(relaxed))
      continue;
    ++running;
    auto since = w.busy_since->load(relaxed);
    if (since == 0 || t - since < to_ns(starved_after))
      return; // a worker is free, or will be soon
  }
  if (running == 0)
    return;
  auto more = std::min(std::max<std::size_t>(live_workers_ / 4, 1),
                       settings_.max_threads - live_workers_);
  for (std::size_t i = 0; i < more; ++i)
    spawn_worker();
}

} // namespace videostreams
