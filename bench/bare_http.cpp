// The HTTP layer's ceiling: a bare cpp-httplib server with the same settings
// as videostreams (TCP_NODELAY, worker pool, keep-alive) whose only handler
// returns a constant legacy-API body. bench/run compares the service to it.
//
//   bench_bare_http --port=N [--http-threads=64]

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <sys/socket.h>

#include <httplib.h>

int main(int argc, char** argv) {
  int port = 0;
  int threads = 64;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--port=", 7) == 0)
      port = std::atoi(argv[i] + 7);
    else if (std::strncmp(argv[i], "--http-threads=", 15) == 0)
      threads = std::atoi(argv[i] + 15);
  }
  std::signal(SIGPIPE, SIG_IGN);
  httplib::Server svr;
  svr.set_tcp_nodelay(true);
  int listen_socket = -1; // same socket setup as http/server.cpp
  svr.set_socket_options([&listen_socket](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_socket = sock;
  });
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_keep_alive_max_count(100000);
  svr.set_default_headers({{"Access-Control-Allow-Origin", "*"}});
  const std::string body
    = R"({"streamStatus":{"isNewStreamAllowed":true,"streamCount":1}})";
  svr.Get(R"(/api/(startstream|endstream)/(\d+))",
          [&body](const httplib::Request&, httplib::Response& res) {
            res.set_content(body, "application/json; charset=utf-8");
          });
  if (port == 0)
    port = svr.bind_to_any_port("127.0.0.1");
  else if (!svr.bind_to_port("127.0.0.1", port))
    return 1;
  ::listen(listen_socket, SOMAXCONN);
  std::fprintf(stderr, "bench_bare_http: listening on 127.0.0.1:%d\n", port);
  svr.listen_after_bind();
  return 0;
}
