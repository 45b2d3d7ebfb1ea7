#include "http_probe.hpp"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace videostreams::blackbox {

std::unique_ptr<httplib::Client> make_client(int port, bool keep_alive) {
  return make_client("127.0.0.1", port, keep_alive);
}

std::unique_ptr<httplib::Client> make_client(const std::string& host, int port,
                                             bool keep_alive) {
  auto cli = std::make_unique<httplib::Client>(host, port);
  cli->set_tcp_nodelay(true);
  cli->set_keep_alive(keep_alive);
  // Paths are sent exactly as the tests write them ("%20", "+1").
  cli->set_url_encode(false);
  // Longer than any request timeout a test gives the service (10 s unless
  // it is about timeouts), so that a slow answer is an answer.
  cli->set_connection_timeout(30);
  cli->set_read_timeout(30);
  cli->set_write_timeout(30);
  return cli;
}

std::string reply::header(const std::string& name) const {
  auto i = headers.find(name);
  return i == headers.end() ? std::string{} : i->second;
}

bool reply::has_header(const std::string& name) const {
  return headers.find(name) != headers.end();
}

reply send(httplib::Client& cli, const std::string& method,
           const std::string& path, const std::optional<std::string>& body,
           const httplib::Headers& headers) {
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.headers = headers;
  if (body) {
    req.body = *body;
    req.set_header("Content-Type", "application/json");
  }
  reply result;
  auto res = cli.send(req);
  if (!res) {
    result.error = httplib::to_string(res.error());
    return result;
  }
  result.status = res->status;
  result.body = res->body;
  result.headers = res->headers;
  return result;
}

reply get(httplib::Client& cli, const std::string& path) {
  return send(cli, "GET", path);
}

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12)
    return -1;
  return std::atoi(response.c_str() + 9);
}

std::string body_of(const std::string& response) {
  auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? std::string{} : response.substr(at + 4);
}

std::string raw_exchange(int port, std::string_view bytes) {
  raw_connection conn{port};
  if (!conn.connected() || !conn.write(bytes))
    return {};
  return conn.read_response();
}

raw_connection::raw_connection(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0)
    return;
  timeval tv{30, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

raw_connection::~raw_connection() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool raw_connection::write(std::string_view bytes) {
  while (!bytes.empty()) {
    auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string raw_connection::read_response(bool to_head) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{30};
  auto fill = [&] {
    char buf[4096];
    for (;;) {
      auto n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      buffered_.append(buf, static_cast<std::size_t>(n));
      return true;
    }
  };
  std::size_t head_end;
  while ((head_end = buffered_.find("\r\n\r\n")) == std::string::npos)
    if (std::chrono::steady_clock::now() >= deadline || !fill())
      return {};
  head_end += 4;
  std::size_t length = 0;
  auto head = buffered_.substr(0, head_end);
  for (auto& c : head)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (auto at = head.find("\r\ncontent-length:");
      at != std::string::npos && !to_head)
    length = std::strtoul(head.c_str() + at + 17, nullptr, 10);
  while (buffered_.size() < head_end + length)
    if (std::chrono::steady_clock::now() >= deadline || !fill())
      return {};
  auto response = buffered_.substr(0, head_end + length);
  buffered_.erase(0, head_end + length);
  return response;
}

bool raw_connection::shut_write() {
  return ::shutdown(fd_, SHUT_WR) == 0;
}

bool raw_connection::closed_by_peer(std::chrono::milliseconds limit) {
  if (!buffered_.empty())
    return false;
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    char byte;
    auto n = ::recv(fd_, &byte, 1, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      return true;
    if (n > 0)
      return false;
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
      return false;
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
  }
}

std::optional<double> metric_value(const std::string& text,
                                   std::string_view series) {
  std::istringstream lines{text};
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0
        && line[series.size()] == ' ') {
      auto value = line.substr(series.size() + 1);
      char* end = nullptr;
      auto x = std::strtod(value.c_str(), &end);
      if (end == value.c_str())
        return std::nullopt;
      return x;
    }
  }
  return std::nullopt;
}

std::string scrape(httplib::Client& cli) {
  auto r = get(cli, "/metrics");
  return r.status == 200 ? r.body : std::string{};
}

void start_gate::arrive_and_wait() {
  std::unique_lock<std::mutex> guard{mtx_};
  if (--waiting_ == 0) {
    cv_.notify_all();
    return;
  }
  cv_.wait(guard, [this] { return waiting_ == 0; });
}

std::string granted_body(std::int64_t count) {
  return R"({"streamStatus":{"isNewStreamAllowed":true,"streamCount":)"
         + std::to_string(count) + "}}";
}

std::string denied_body(std::int64_t count) {
  return R"({"streamStatus":{"isNewStreamAllowed":false,"streamCount":)"
         + std::to_string(count) + "}}";
}

std::string closed_body(std::int64_t count) {
  return R"({"streamStatus":{"msg":"stream closed","streamCount":)"
         + std::to_string(count) + "}}";
}

std::string no_active_streams_body() {
  return R"({"msg":"no active streams to close for user"})";
}

std::string unknown_user_body() {
  return R"({"msg":"user_id not present in the database"})";
}

std::string legacy_bad_id_body() {
  return R"({"msg":"user_id is invalid , needs to be a number","field":"user_id"})";
}

} // namespace videostreams::blackbox
