#include "http/server.hpp"

#include <chrono>
#include <thread>

#include <sys/socket.h>

#include <httplib.h>

namespace videostreams {

namespace {

void write_response(const api_response& x, httplib::Response& res) {
  res.status = x.status;
  for (auto& [name, value] : x.headers)
    res.set_header(std::string{name}, value);
  if (!x.body.empty())
    res.set_content(x.body, std::string{x.content_type});
}

/// cpp-httplib reads a request body only after pre-routing; requests that
/// carry one go through the regular (post-body) handlers instead. Without
/// Content-Length or Transfer-Encoding an HTTP/1.1 request has no body.
bool has_body(const httplib::Request& req) {
  return req.has_header("Transfer-Encoding")
         || (req.has_header("Content-Length")
             && req.get_header_value("Content-Length") != "0");
}

/// A Content-Length that is not a plain decimal number makes the request's
/// framing unknowable (RFC 9112 §6.3): such a request must be refused, not
/// guessed at. cpp-httplib would read it as 0.
bool has_invalid_content_length(const httplib::Request& req) {
  if (!req.has_header("Content-Length"))
    return false;
  auto value = req.get_header_value("Content-Length");
  return value.empty()
         || value.find_first_not_of("0123456789") != std::string::npos;
}

} // namespace

http_server::http_server(api& handler, http_server_settings settings)
  : api_(handler),
    settings_(std::move(settings)),
    server_(std::make_unique<httplib::Server>()) {
  auto& svr = *server_;
  svr.set_tcp_nodelay(true);
  // cpp-httplib sets SO_REUSEPORT by default, which lets a second process
  // bind the same port and silently take half the connections. Reuse the
  // address (restart while old sockets linger in TIME_WAIT) but not the port.
  svr.set_socket_options([this](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_socket_ = sock;
  });
  auto threads = settings_.threads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_keep_alive_max_count(settings_.keep_alive_max_requests);
  svr.set_keep_alive_timeout(settings_.keep_alive_timeout_seconds);
  svr.set_payload_max_length(settings_.max_body_bytes);
  svr.set_default_headers({{"Access-Control-Allow-Origin", "*"}});
  auto serve = [this](const httplib::Request& req, httplib::Response& res) {
    auto authorization = req.get_header_value("Authorization");
    write_response(
      api_.handle(api_request{req.method, req.path, req.body, authorization}),
      res);
  };
  // Requests without a body (the hot path) are answered before cpp-httplib's
  // regex routing; that also lets every method reach the API's 404/405.
  svr.set_pre_routing_handler(
    [serve](const httplib::Request& req, httplib::Response& res) {
      if (has_invalid_content_length(req)) {
        res.status = 400;
        return httplib::Server::HandlerResponse::Handled;
      }
      if (has_body(req))
        return httplib::Server::HandlerResponse::Unhandled;
      serve(req, res);
      return httplib::Server::HandlerResponse::Handled;
    });
  svr.Get(".*", serve);
  svr.Post(".*", serve);
  svr.Put(".*", serve);
  svr.Patch(".*", serve);
  svr.Delete(".*", serve);
  svr.Options(".*", serve);
  // Errors that cpp-httplib raises itself (malformed request, 413, 414...)
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

http_server::~http_server() = default;

int http_server::bind() {
  int port = settings_.port;
  if (port == 0)
    port = server_->bind_to_any_port(settings_.bind_address);
  else if (!server_->bind_to_port(settings_.bind_address, port))
    port = -1;
  // cpp-httplib listens with a backlog of 5, which drops the SYNs of a burst
  // of new connections (clients then retry after a second). Listening again
  // on the bound socket raises the backlog.
  if (port > 0 && listen_socket_ >= 0)
    ::listen(listen_socket_, SOMAXCONN);
  return port;
}

void http_server::run() {
  running_.store(true);
  if (!stop_requested_.load())
    server_->listen_after_bind();
  running_.store(false);
}

void http_server::stop() {
  // cpp-httplib ignores stop() until listen_after_bind() has set it running,
  // so a stop that arrives just as `run` begins would be lost. Either `run`
  // sees the request and never listens, or this waits (bounded) until it
  // listens and then stops it.
  stop_requested_.store(true);
  for (int i = 0; i < 5000 && running_.load() && !server_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  server_->stop();
}

} // namespace videostreams
