// The HTTP edge (README.md, "The HTTP edge"): idle and slow
// connections hold no worker, framing that could smuggle a request is
// refused and the connection closed, bodies are bounded whatever their
// encoding, the operations port serves probes on its own, and a stop drains.

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;
using namespace std::chrono_literals;

namespace {

/// `n` pipelined requests for the ~50 KB OpenAPI description: 43 bytes
/// each, so few bytes of requests ask for many of answers.
std::string openapi_asks(int n) {
  const std::string ask = "GET /api/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n";
  std::string pipelined;
  for (int i = 0; i < n; ++i)
    pipelined += ask;
  return pipelined;
}

/// Generous for a busy machine: these tests are not about request timeouts.
const std::string patient = "--request-timeout=10s";

bool has_header(const std::string& response, const std::string& line) {
  auto head = response.substr(0, response.find("\r\n\r\n"));
  return head.find("\r\n" + line + "\r\n") != std::string::npos
         || head.size() >= line.size()
              && head.compare(head.size() - line.size(), line.size(), line)
                   == 0;
}

/// The user's open streams, through a connection of its own.
int streams_of(int port, int user) {
  auto cli = make_client(port);
  auto r = get(*cli, "/api/v2/users/" + std::to_string(user) + "/streams");
  auto at = r.body.find("\"streamCount\":");
  return at == std::string::npos ? -1 : std::atoi(r.body.c_str() + at + 14);
}

/// Sends `bytes` on a new connection, then expects one refusal with
/// `status` and the connection closed.
void check_refused(int port, const std::string& bytes, int status) {
  INFO(bytes);
  raw_connection conn{port};
  REQUIRE(conn.connected());
  REQUIRE(conn.write(bytes));
  auto response = conn.read_response();
  INFO("response: " << response);
  CHECK(status_of(response) == status);
  CHECK(has_header(response, "Connection: close"));
  CHECK(has_header(response, "Access-Control-Allow-Origin: *"));
  CHECK(body_of(response).find("\"msg\":") != std::string::npos);
  CHECK(conn.closed_by_peer());
}

} // namespace

TEST_CASE("idle and slow connections hold no worker: with two workers, a "
          "new client is answered beside hundreds of them",
          "[blackbox][edge]") {
  service_process svc{{"--http-threads=2", "--http-max-threads=2", patient}};
  std::vector<std::unique_ptr<raw_connection>> held;
  // Idle keep-alive connections, each after one answered request.
  for (int i = 0; i < 200; ++i) {
    auto c = std::make_unique<raw_connection>(svc.port());
    REQUIRE(c->connected());
    REQUIRE(c->write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
    REQUIRE(status_of(c->read_response()) == 200);
    held.push_back(std::move(c));
  }
  // Slow clients, each with half a request header.
  for (int i = 0; i < 100; ++i) {
    auto c = std::make_unique<raw_connection>(svc.port());
    REQUIRE(c->connected());
    REQUIRE(c->write("GET /api/startstream/5 HTTP/1.1\r\nHo"));
    held.push_back(std::move(c));
  }
  // With a worker per connection (the old edge) both workers would be
  // taken and these would wait until a held connection closed.
  raw_connection fresh{svc.port()};
  REQUIRE(fresh.write("GET /api/startstream/77 HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK(body_of(fresh.read_response()) == granted_body(1));
  REQUIRE(fresh.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK(status_of(fresh.read_response()) == 200);
  auto cli = make_client(svc.port());
  auto metrics = scrape(*cli);
  auto open = metric_value(metrics,
                           "videostreams_http_open_connections{listener=\"api\"}");
  REQUIRE(open);
  CHECK(*open >= 301);
  // The slow clients finish their requests: each is answered.
  for (std::size_t i = 200; i < held.size(); ++i) {
    REQUIRE(held[i]->write("st: t\r\n\r\n"));
    CHECK(status_of(held[i]->read_response()) == 200);
  }
  CHECK(streams_of(svc.port(), 5) == 3); // 100 tries, the limit held
}

TEST_CASE("a request that does not arrive whole within --read-timeout is "
          "cut",
          "[blackbox][edge]") {
  service_process svc{{"--read-timeout=1s"}};
  raw_connection slow{svc.port()};
  REQUIRE(slow.write("GET /api/startstream/5 HTTP/1.1\r\n"));
  // One byte every 200 ms keeps it busy but never finishes the header.
  bool closed = false;
  for (int i = 0; i < 100 && !closed; ++i) {
    if (!slow.write("X"))
      closed = true;
    else
      closed = slow.closed_by_peer(200ms);
  }
  CHECK(closed);
  CHECK(streams_of(svc.port(), 5) == 0);
  auto cli = make_client(svc.port());
  auto cut = metric_value(scrape(*cli), "videostreams_http_connections_timed_"
                                        "out_total{listener=\"api\"}");
  REQUIRE(cut);
  CHECK(*cut == 1);
}

TEST_CASE("the read timeout counts in milliseconds: a request that arrives "
          "whole within --read-timeout=1999ms is served",
          "[blackbox][edge]") {
  // Cut to whole seconds the bound would be 1 s and cut this request. The
  // pause leaves most of the remaining 999 ms as slack for a busy machine
  // (a late wake-up of this thread); it failed once at 1300 ms.
  service_process svc{{"--read-timeout=1999ms"}};
  raw_connection slow{svc.port()};
  REQUIRE(slow.write("GET /api/startstream/6 HTTP/1.1\r\n"));
  std::this_thread::sleep_for(1150ms);
  REQUIRE(slow.write("Host: t\r\n\r\n"));
  CHECK(status_of(slow.read_response()) == 200);
  CHECK(streams_of(svc.port(), 6) == 1);
}

TEST_CASE("framing that could smuggle a request is a 400, the connection is "
          "closed, and the smuggled request never runs",
          "[blackbox][edge]") {
  service_process svc;
  const std::string smuggled = "GET /api/startstream/66 HTTP/1.1\r\nHost: t"
                               "\r\n\r\n";
  auto len = std::to_string(smuggled.size());
  check_refused(svc.port(),
                "POST /api/v2/users/1/streams HTTP/1.1\r\nHost: t\r\n"
                "Content-Length: "
                  + len + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                  + smuggled,
                400);
  check_refused(svc.port(),
                "POST /api/v2/users/1/streams HTTP/1.1\r\nHost: t\r\n"
                "Content-Length: 2\r\nContent-Length: "
                  + std::to_string(2 + smuggled.size()) + "\r\n\r\n{}"
                  + smuggled,
                400);
  for (std::string method : {"GET", "HEAD", "OPTIONS"})
    check_refused(svc.port(),
                  method + " /api/v2/users/1/streams HTTP/1.1\r\nHost: t\r\n"
                           "Content-Length: "
                    + len + "\r\n\r\n" + smuggled,
                  400);
  // The tail arrives in a later segment, after the first request's head.
  {
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("GET /api/startstream/66 HTTP/1.1\r\nHost: t\r\n"
                       "Content-Length: "
                       + len + "\r\n\r\n"));
    std::this_thread::sleep_for(50ms); // a separate segment
    conn.write(smuggled);
    auto response = conn.read_response();
    CHECK(status_of(response) == 400);
    CHECK(conn.closed_by_peer());
  }
  check_refused(svc.port(),
                "GET /api/startstream/6%2F6 HTTP/1.1\r\nHost: t\r\n\r\n", 400);
  check_refused(svc.port(),
                "GET /api/startstream/6%2f6 HTTP/1.1\r\nHost: t\r\n\r\n", 400);
  check_refused(svc.port(), "GET /api/startstream/66 HTTP/1.1\nHost: t\n\n",
                400);
  CHECK(streams_of(svc.port(), 66) == 0);
  CHECK(streams_of(svc.port(), 6) == 0);
  CHECK(streams_of(svc.port(), 1) == 0);
}

TEST_CASE("bodies are bounded at 16 KiB whatever their framing, encoding or "
          "content type",
          "[blackbox][edge]") {
  service_process svc;
  const std::string post = "POST /api/v2/users/3/streams HTTP/1.1\r\nHost: t"
                           "\r\n";
  // Refused from the header alone: nothing of the body is needed.
  check_refused(svc.port(), post + "Content-Length: 16385\r\n\r\n", 413);
  // A chunked body is counted as it arrives.
  {
    raw_connection conn{svc.port()};
    REQUIRE(conn.write(post + "Transfer-Encoding: chunked\r\n\r\n"));
    std::string chunk = "1000\r\n" + std::string(4096, ' ') + "\r\n";
    bool refused_early = false;
    for (int i = 0; i < 64 * 256 && !refused_early; ++i) // up to 64 MiB
      refused_early = !conn.write(chunk);
    auto response = conn.read_response();
    CHECK(status_of(response) == 413);
  }
  // Compressed bodies are refused, valid or not.
  check_refused(svc.port(),
                post + "Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\n"
                       "\x1f\x8b\x08\x00",
                415);
  check_refused(svc.port(),
                post + "Content-Encoding: br\r\nContent-Length: 3\r\n\r\nxyz",
                415);
  CHECK(streams_of(svc.port(), 3) == 0);
  // 12 KiB of JSON sent as a form (curl -d) is within the limit.
  std::string body = R"({"sessionId":"form"})" + std::string(12 * 1024, ' ');
  raw_connection conn{svc.port()};
  REQUIRE(conn.write(post
                     + "Content-Type: application/x-www-form-urlencoded\r\n"
                       "Content-Length: "
                     + std::to_string(body.size()) + "\r\n\r\n" + body));
  auto response = conn.read_response();
  INFO(response);
  CHECK(status_of(response) == 201);
  CHECK(streams_of(svc.port(), 3) == 1);
}

TEST_CASE("a chunked body is bounded on the wire too: tiny chunks or long "
          "extensions are a 413 at once, leading zeros are fine",
          "[blackbox][edge]") {
  // The read timeout is far off: an answer comes from the framing, not
  // from a cut.
  service_process svc{{"--read-timeout=120s", patient}};
  const std::string post = "POST /api/v2/users/3/streams HTTP/1.1\r\nHost: t"
                           "\r\nTransfer-Encoding: chunked\r\n\r\n";
  // 300 one-byte chunks with 240-byte extensions (75 KB, never ended): the
  // edge read up to its buffer's end and waited for a request that could
  // never complete within it, a busy loop until the read timeout.
  std::string extended;
  for (int i = 0; i < 300; ++i)
    extended += "1;e=" + std::string(240, 'a') + "\r\nx\r\n";
  check_refused(svc.port(), post + extended, 413);
  // A body within the limit, in one-byte chunks: six times its size on
  // the wire, more than the edge reads for one request.
  std::string tiny;
  for (int i = 0; i < 14000; ++i)
    tiny += "1\r\n \r\n";
  check_refused(svc.port(), post + tiny + "0\r\n\r\n", 413);
  CHECK(streams_of(svc.port(), 3) == 0);
  // Leading zeros in a chunk size or a Content-Length (RFC 9112).
  {
    raw_connection conn{svc.port()};
    REQUIRE(conn.write(post + "0000000002\r\n{}\r\n0000\r\n\r\n"));
    auto response = conn.read_response();
    INFO(response);
    CHECK(status_of(response) == 201);
  }
  {
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("POST /api/v2/users/3/streams HTTP/1.1\r\nHost: t\r\n"
                       "Content-Length: 000000000000000000000002\r\n\r\n{}"));
    auto response = conn.read_response();
    INFO(response);
    CHECK(status_of(response) == 201);
  }
  CHECK(streams_of(svc.port(), 3) == 2);
}

TEST_CASE("a client that pipelines requests for large answers and reads "
          "none holds no worker and a bounded buffer, and gets every "
          "answer once it reads",
          "[blackbox][edge]") {
  // Two workers, and a write timeout far off: a worker that waited for
  // such a client to read would be gone for two minutes.
  service_process svc{{"--http-threads=2", "--http-max-threads=2",
                       "--write-timeout=120s", patient}};
  auto rss_kib = [&] {
    std::ifstream status{"/proc/" + std::to_string(svc.pid()) + "/status"};
    std::string line;
    while (std::getline(status, line))
      if (line.rfind("VmRSS:", 0) == 0)
        return std::atol(line.c_str() + 6);
    return -1L;
  };
  auto baseline = rss_kib();
  REQUIRE(baseline > 0);
  // Each asks for the ~50 KB OpenAPI description 1,500 times (64 KB of
  // requests, 75 MB of answers).
  auto pipelined = openapi_asks(1500);
  std::vector<std::unique_ptr<raw_connection>> readers_of_none;
  for (int i = 0; i < 6; ++i) {
    readers_of_none.push_back(std::make_unique<raw_connection>(svc.port()));
    REQUIRE(readers_of_none.back()->write(pipelined));
  }
  // A new client is answered beside them.
  raw_connection fresh{svc.port()};
  REQUIRE(fresh.write("GET /api/startstream/5 HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK(body_of(fresh.read_response()) == granted_body(1));
  // Their answers wait in the sockets and in batches of about 64 KiB each;
  // before, each connection built all 75 MB of its answers.
  auto grown_kib = rss_kib() - baseline;
  INFO("RSS grew by " << grown_kib << " KiB");
  CHECK(grown_kib < 64 * 1024);
  // One reads now: every answer arrives, whole and in order.
  auto& reader = *readers_of_none.front();
  auto first = reader.read_response();
  REQUIRE(status_of(first) == 200);
  auto description = body_of(first);
  CHECK(description.size() > 40000);
  int whole = 1;
  for (int i = 1; i < 1500; ++i) {
    auto r = reader.read_response();
    if (status_of(r) != 200 || body_of(r) != description)
      break;
    ++whole;
  }
  CHECK(whole == 1500);
}

TEST_CASE("a body sent after 100 Continue, pipelined requests, a Range "
          "header and HTTP/1.0 are all answered in full",
          "[blackbox][edge]") {
  service_process svc;
  {
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("POST /api/v2/users/4/streams HTTP/1.1\r\nHost: t\r\n"
                       "Expect: 100-continue\r\nContent-Length: 17\r\n\r\n"));
    auto interim = conn.read_response();
    CHECK(status_of(interim) == 100);
    REQUIRE(conn.write(R"({"sessionId":"a"})"));
    CHECK(status_of(conn.read_response()) == 201);
  }
  {
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("GET /api/startstream/8 HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /api/startstream/8 HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /api/endstream/8 HTTP/1.1\r\nHost: t\r\n"
                       "Connection: close\r\n\r\n"));
    CHECK(body_of(conn.read_response()) == granted_body(1));
    CHECK(body_of(conn.read_response()) == granted_body(2));
    auto last = conn.read_response();
    CHECK(body_of(last) == closed_body(1));
    CHECK(has_header(last, "Connection: close"));
    CHECK(conn.closed_by_peer());
  }
  {
    // A Range header is ignored: an answer is never cut to it.
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("GET /api/startstream/9 HTTP/1.1\r\nHost: t\r\n"
                       "Range: bytes=0-10\r\n\r\n"));
    auto response = conn.read_response();
    CHECK(status_of(response) == 200);
    CHECK(body_of(response) == granted_body(1));
  }
  {
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("GET /healthz HTTP/1.0\r\n\r\n"));
    auto response = conn.read_response();
    CHECK(status_of(response) == 200);
    // The edge keeps no HTTP/1.0 connection alive, and says so.
    CHECK(has_header(response, "Connection: close"));
    CHECK(response.find("Keep-Alive:") == std::string::npos);
    CHECK(conn.closed_by_peer());
  }
}

TEST_CASE("an Authorization value with a control character is a 400, and "
          "an admin token a client could not send is refused at start",
          "[blackbox][edge]") {
  service_process svc{{"--admin-token=secret"}};
  // cpp-httplib %-decodes header values: %00 arrives as a NUL.
  raw_connection conn{svc.port()};
  REQUIRE(conn.write("PUT /api/v2/users/9/limit HTTP/1.1\r\nHost: t\r\n"
                     "Authorization: Bearer secret%00junk\r\n"
                     "Content-Length: 16\r\n\r\n{\"maxStreams\":1}"));
  auto response = conn.read_response();
  INFO(response);
  CHECK(status_of(response) == 400);
  CHECK(body_of(response).find("Authorization") != std::string::npos);
  auto cli = make_client(svc.port());
  auto limit = get(*cli, "/api/v2/users/9/streams");
  CHECK(limit.body.find("\"maxStreams\":3") != std::string::npos);
  for (auto token : {"se%63ret", "two words", "tab\tbed"}) {
    INFO(token);
    auto refused = run_binary({"--port=0", "--ops-port=-1",
                               std::string{"--admin-token="} + token});
    CHECK(refused.status.describe() == "exit code 2");
    CHECK(refused.err.find("admin-token") != std::string::npos);
    CHECK(refused.err.find("listening") == std::string::npos);
  }
}

TEST_CASE("the operations port serves probes, metrics and operator "
          "endpoints, and nothing of the players' API",
          "[blackbox][edge]") {
  service_process svc{{"--admin-token=secret"}};
  REQUIRE(svc.ops_port() > 0);
  REQUIRE(svc.ops_port() != svc.port());
  auto ops = make_client(svc.ops_port());
  CHECK(get(*ops, "/healthz").status == 200);
  CHECK(get(*ops, "/readyz").status == 200);
  CHECK(get(*ops, "/metrics").body.find("videostreams_open_streams")
        != std::string::npos);
  CHECK(get(*ops, "/api/cluster").status == 401);
  auto set = send(*ops, "PUT", "/api/v2/users/12/limit",
                  std::string{R"({"maxStreams":1})"},
                  {{"Authorization", "Bearer secret"}});
  CHECK(set.status == 200);
  auto players = get(*ops, "/api/startstream/12");
  CHECK(players.status == 404);
  CHECK(streams_of(svc.port(), 12) == 0);
  // The players' port still serves the probes too.
  auto api = make_client(svc.port());
  CHECK(get(*api, "/healthz").status == 200);
  CHECK(get(*api, "/api/startstream/12").body == granted_body(1));
  CHECK(get(*api, "/api/startstream/12").body == denied_body(1));
  service_process off{{"--ops-port=-1"}};
  CHECK(off.ops_port() == -1);
  CHECK(off.stderr_text().find("operations on off") != std::string::npos);
}

TEST_CASE("beyond --max-connections a new connection replaces the "
          "longest-idle one, else the one whose request has been arriving "
          "longest",
          "[blackbox][edge]") {
  service_process svc{{"--max-connections=4", patient}};
  auto api_gauge = [&](const std::string& name) {
    auto text = raw_exchange(svc.ops_port(), "GET /metrics HTTP/1.1\r\n"
                                             "Host: t\r\n\r\n");
    return metric_value(body_of(text), name + "{listener=\"api\"}")
      .value_or(-1);
  };
  auto open_connections = [&] {
    return api_gauge("videostreams_http_open_connections");
  };
  // (The start-up probe's connection is gone.)
  REQUIRE(eventually([&] { return open_connections() == 0; }));
  std::vector<std::unique_ptr<raw_connection>> idle;
  for (int i = 0; i < 4; ++i) {
    auto c = std::make_unique<raw_connection>(svc.port());
    REQUIRE(c->write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
    REQUIRE(status_of(c->read_response()) == 200);
    idle.push_back(std::move(c));
  }
  // A worker may still hold a connection for a moment after its answer
  // left (on a busy machine, long enough for the next ones): a held
  // connection is not idle, and eviction passes over it.
  REQUIRE(eventually([&] {
    return api_gauge("videostreams_http_busy_workers") == 0;
  }));
  {
    raw_connection fifth{svc.port()};
    REQUIRE(fifth.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
    CHECK(status_of(fifth.read_response()) == 200);
    CHECK(idle.front()->closed_by_peer()); // the longest idle made room
  }
  idle.clear();
  REQUIRE(eventually([&] { return open_connections() == 0; }));
  // Every connection holds part of a request (slow clients filling the
  // table): the one whose request has been arriving longest makes room.
  std::vector<std::unique_ptr<raw_connection>> arriving;
  auto add_arriving = [&] {
    auto c = std::make_unique<raw_connection>(svc.port());
    REQUIRE(c->write("GET /healthz HTTP/1.1\r\n"));
    arriving.push_back(std::move(c));
    REQUIRE(eventually([&] {
      return open_connections() == static_cast<double>(arriving.size());
    }));
  };
  while (arriving.size() < 4)
    add_arriving();
  {
    raw_connection fresh{svc.port()};
    REQUIRE(fresh.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
    CHECK(status_of(fresh.read_response()) == 200);
    CHECK(arriving.front()->closed_by_peer());
  }
  for (std::size_t i = 1; i < arriving.size(); ++i) {
    REQUIRE(arriving[i]->write("Host: t\r\n\r\n"));
    CHECK(status_of(arriving[i]->read_response()) == 200);
  }
  arriving.clear();
  REQUIRE(eventually([&] { return open_connections() == 0; }));
  // An idle connection goes before any request still arriving, even one
  // that began earlier.
  add_arriving();
  for (int i = 0; i < 3; ++i) {
    auto c = std::make_unique<raw_connection>(svc.port());
    REQUIRE(c->write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
    REQUIRE(status_of(c->read_response()) == 200);
    idle.push_back(std::move(c));
  }
  {
    raw_connection fresh{svc.port()};
    REQUIRE(fresh.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
    CHECK(status_of(fresh.read_response()) == 200);
    CHECK(idle.front()->closed_by_peer());
  }
  REQUIRE(arriving.front()->write("Host: t\r\n\r\n"));
  CHECK(status_of(arriving.front()->read_response()) == 200);
  // (A 503 at the cap, when a worker holds every connection: the db tier,
  // where a hanging commit holds them.)
}

TEST_CASE("SIGTERM drains: idle connections close at once, a request under "
          "way is answered with Connection: close, slow clients are cut at "
          "--shutdown-timeout",
          "[blackbox][edge]") {
  // 5 s: the request under way is finished only after the idle connection
  // closed (a second after its last use), with seconds to spare.
  service_process svc{{"--shutdown-timeout=5s", "--read-timeout=120s"}};
  raw_connection idle{svc.port()};
  REQUIRE(idle.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
  REQUIRE(status_of(idle.read_response()) == 200);
  raw_connection under_way{svc.port()};
  REQUIRE(under_way.write("GET /api/startstream/21 HTTP/1.1\r\n"));
  std::vector<std::unique_ptr<raw_connection>> slow;
  for (int i = 0; i < 5; ++i) {
    slow.push_back(std::make_unique<raw_connection>(svc.port()));
    REQUIRE(slow.back()->write("GET /api/startstream/22 HTTP/1.1\r\nX"));
  }
  svc.send_signal(SIGTERM);
  CHECK(idle.closed_by_peer());
  REQUIRE(under_way.write("Host: t\r\n\r\n"));
  auto response = under_way.read_response();
  CHECK(body_of(response) == granted_body(1));
  CHECK(has_header(response, "Connection: close"));
  CHECK(under_way.closed_by_peer());
  for (auto& c : slow)
    CHECK(c->closed_by_peer(30s));
  auto status = svc.stop(60s);
  CHECK(status.describe() == "exit code 0");
}

TEST_CASE("SIGTERM drains both ports by one deadline: a slow client of the "
          "operations port is cut when those of the players' port are, not "
          "a --shutdown-timeout later",
          "[blackbox][edge]") {
  // The operations port answers ("stopping") until the players' port has
  // drained; it used to start a drain of its own then, so a stop could
  // take two shutdown timeouts. 8 s: one is 8 s, two are 16 s; the check
  // allows 13 s, room for a busy machine on the one side, 3 s on the other.
  service_process svc{{"--shutdown-timeout=8s", "--read-timeout=120s"}};
  REQUIRE(svc.ops_port() > 0);
  raw_connection players{svc.port()};
  REQUIRE(players.write("GET /api/startstream/23 HTTP/1.1\r\nX"));
  raw_connection ops{svc.ops_port()};
  REQUIRE(ops.write("GET /metrics HTTP/1.1\r\nX"));
  auto sent = std::chrono::steady_clock::now();
  svc.send_signal(SIGTERM);
  CHECK(players.closed_by_peer(30s));
  CHECK(ops.closed_by_peer(30s));
  auto status = svc.stop(60s);
  auto took = std::chrono::steady_clock::now() - sent;
  CHECK(status.describe() == "exit code 0");
  INFO("SIGTERM to exit: "
       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
       << " ms");
  CHECK(took < 13s);
}

namespace {

/// A figure of the players' listener (`videostreams_http_<name>`), read on
/// the operations port (so that reading it opens no connection it counts);
/// -1 when the scrape failed.
double api_figure(const service_process& svc, const std::string& name) {
  auto text = raw_exchange(svc.ops_port(), "GET /metrics HTTP/1.1\r\n"
                                           "Host: t\r\n\r\n");
  return metric_value(body_of(text),
                      "videostreams_http_" + name + "{listener=\"api\"}")
    .value_or(-1);
}

} // namespace

TEST_CASE("an idle keep-alive connection is closed after "
          "--keep-alive-timeout, and not before",
          "[blackbox][edge]") {
  // The read timeout is shorter: an idle connection is not timed by it.
  service_process svc{{"--keep-alive-timeout=3", "--read-timeout=1s",
                       patient}};
  raw_connection conn{svc.port()};
  REQUIRE(conn.connected());
  // Its last activity is after this, so it closes 3 s after this at the
  // earliest.
  auto sent = std::chrono::steady_clock::now();
  REQUIRE(conn.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
  REQUIRE(status_of(conn.read_response()) == 200);
  CHECK(conn.closed_by_peer(30s));
  auto idle = std::chrono::steady_clock::now() - sent;
  INFO("closed after "
       << std::chrono::duration_cast<std::chrono::milliseconds>(idle).count()
       << " ms");
  CHECK(idle >= 3s);
}

TEST_CASE("the option --keep-alive-max-requests: the last answer a "
          "connection may carry says Connection: close, and what follows it "
          "never runs",
          "[blackbox][edge]") {
  service_process svc{{"--keep-alive-max-requests=2", patient}};
  raw_connection conn{svc.port()};
  const std::string start = "GET /api/startstream/31 HTTP/1.1\r\nHost: t"
                            "\r\n\r\n";
  REQUIRE(conn.write(start + start + start));
  auto first = conn.read_response();
  CHECK(body_of(first) == granted_body(1));
  CHECK_FALSE(has_header(first, "Connection: close"));
  auto second = conn.read_response();
  CHECK(body_of(second) == granted_body(2));
  CHECK(has_header(second, "Connection: close"));
  CHECK(conn.closed_by_peer());
  CHECK(streams_of(svc.port(), 31) == 2);
}

TEST_CASE("a client that takes no answer within --write-timeout is cut, "
          "and not before",
          "[blackbox][edge]") {
  service_process svc{{"--write-timeout=1s", patient}};
  REQUIRE(eventually([&] { return api_figure(svc, "open_connections") == 0; }));
  // About 75 MB of answers for 64 KB of requests: they fill the socket.
  auto cuts_before = api_figure(svc, "connections_timed_out_total");
  auto pipelined = openapi_asks(1500);
  raw_connection reads_none{svc.port()};
  auto sent = std::chrono::steady_clock::now();
  REQUIRE(reads_none.write(pipelined));
  // Cut, it is counted and closed (as the client still reads nothing).
  // Waiting for the open-connection gauge alone could see 0 before the
  // server even accepted the connection, on a busy machine.
  CHECK(eventually([&] {
    return api_figure(svc, "connections_timed_out_total") > cuts_before;
  }));
  auto waited = std::chrono::steady_clock::now() - sent;
  INFO("cut after "
       << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
       << " ms");
  CHECK(waited >= 1s);
  CHECK(eventually([&] { return api_figure(svc, "open_connections") == 0; }));
  // What reached its socket before the cut is all it gets.
  int answers = 0;
  while (answers < 1500 && status_of(reads_none.read_response()) == 200)
    ++answers;
  CHECK(answers < 1500);
}

TEST_CASE("Expect: 100-continue gets one 100 Continue per request, however "
          "its body arrives, on each request of a connection",
          "[blackbox][edge]") {
  service_process svc;
  raw_connection conn{svc.port()};
  for (std::string session : {"a", "b"}) {
    INFO("session " << session);
    std::string body = R"({"sessionId":")" + session + R"("})";
    REQUIRE(conn.write("POST /api/v2/users/33/streams HTTP/1.1\r\nHost: t\r\n"
                       "Expect: 100-continue\r\nContent-Length: "
                       + std::to_string(body.size()) + "\r\n\r\n"));
    auto interim = conn.read_response();
    REQUIRE(status_of(interim) == 100);
    // The body in two segments: the first leaves the request incomplete.
    REQUIRE(conn.write(body.substr(0, 5)));
    std::this_thread::sleep_for(200ms);
    REQUIRE(conn.write(body.substr(5)));
    auto response = conn.read_response();
    INFO(response);
    CHECK(status_of(response) == 201);
  }
  CHECK(streams_of(svc.port(), 33) == 2);
}

TEST_CASE("a client that shuts its side after its requests gets every "
          "answer, then the connection closes",
          "[blackbox][edge]") {
  service_process svc;
  {
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("GET /api/startstream/34 HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /api/startstream/34 HTTP/1.1\r\nHost: t\r\n\r\n"));
    REQUIRE(conn.shut_write());
    CHECK(body_of(conn.read_response()) == granted_body(1));
    CHECK(body_of(conn.read_response()) == granted_body(2));
    CHECK(conn.closed_by_peer());
  }
  {
    // A request it left incomplete can never complete: closed unanswered.
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("GET /api/startstream/34 HTTP/1.1\r\nHo"));
    REQUIRE(conn.shut_write());
    CHECK(conn.closed_by_peer());
  }
  CHECK(streams_of(svc.port(), 34) == 2);
}

TEST_CASE("an unknown method on the operations port is a 404 for a path it "
          "does not serve, a 405 with Allow for one it does",
          "[blackbox][edge]") {
  service_process svc;
  REQUIRE(svc.ops_port() > 0);
  auto players = raw_exchange(svc.ops_port(), "FOO /api/startstream/35 "
                                              "HTTP/1.1\r\nHost: t\r\n\r\n");
  INFO(players);
  CHECK(status_of(players) == 404);
  CHECK(body_of(players).find("operations port") != std::string::npos);
  CHECK(has_header(players, "Connection: close"));
  auto probe = raw_exchange(svc.ops_port(),
                            "FOO /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
  INFO(probe);
  CHECK(status_of(probe) == 405);
  CHECK(has_header(probe, "Allow: GET, HEAD, OPTIONS"));
}

TEST_CASE("an Authorization value that decodes to DEL (%7F) is a 400 like "
          "any control character",
          "[blackbox][edge]") {
  service_process svc{{"--admin-token=secret"}};
  auto response = raw_exchange(
    svc.port(), "PUT /api/v2/users/36/limit HTTP/1.1\r\nHost: t\r\n"
                "Authorization: Bearer secret%7F\r\n"
                "Content-Length: 16\r\n\r\n{\"maxStreams\":1}");
  INFO(response);
  CHECK(status_of(response) == 400);
  CHECK(body_of(response).find("Authorization") != std::string::npos);
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/api/v2/users/36/streams").body.find("\"maxStreams\":3")
        != std::string::npos);
}

TEST_CASE("at --max-connections a request still arriving makes room before "
          "answers waiting for their client",
          "[blackbox][edge]") {
  service_process svc{{"--max-connections=2", "--write-timeout=120s",
                       "--read-timeout=120s", patient}};
  REQUIRE(eventually([&] { return api_figure(svc, "open_connections") == 0; }));
  // Answers wait for a client that reads none.
  auto pipelined = openapi_asks(1500);
  raw_connection reads_none{svc.port()};
  REQUIRE(reads_none.write(pipelined));
  // A request still arriving, begun after those answers began to wait.
  raw_connection arriving{svc.port()};
  REQUIRE(arriving.write("GET /healthz HTTP/1.1\r\n"));
  REQUIRE(eventually([&] { return api_figure(svc, "open_connections") == 2; }));
  // (Time for a worker to read what each has sent, so that neither looks
  // idle.)
  std::this_thread::sleep_for(300ms);
  raw_connection fresh{svc.port()};
  REQUIRE(fresh.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK(status_of(fresh.read_response()) == 200);
  CHECK(arriving.closed_by_peer());
  CHECK(api_figure(svc, "connections_evicted_total") == 1);
  // The answers that waited are still there.
  auto first = reads_none.read_response();
  CHECK(status_of(first) == 200);
}

TEST_CASE("the read timeout of a pipelined request counts from its own "
          "first byte, not from the request before it",
          "[blackbox][edge]") {
  // 6 s: each part arrives 4 s after the one before, so the second request
  // is whole 4 s after its first byte (2 s to spare) and 8 s after the
  // first request's.
  service_process svc{{"--read-timeout=6s", patient}};
  raw_connection conn{svc.port()};
  REQUIRE(conn.write("GET /api/startstream/37 HTTP/1.1\r\n"));
  std::this_thread::sleep_for(4s);
  REQUIRE(conn.write("Host: t\r\n\r\nGET /api/startstream/37 HTTP/1.1\r\n"));
  CHECK(body_of(conn.read_response()) == granted_body(1));
  std::this_thread::sleep_for(4s);
  REQUIRE(conn.write("Host: t\r\n\r\n"));
  auto second = conn.read_response();
  INFO(second);
  CHECK(body_of(second) == granted_body(2));
}

TEST_CASE("after 30 idle seconds the worker pool is back at --http-threads, "
          "never below, and still answers",
          "[blackbox][edge]") {
  // One worker kept: a pool that shrank below it would have none left to
  // answer (nor to notice it is starved).
  service_process svc{{"--http-threads=1", patient}};
  REQUIRE(api_figure(svc, "workers") == 1);
  // Idle for longer than a worker above the kept count waits for work.
  std::this_thread::sleep_for(33s);
  CHECK(api_figure(svc, "workers") == 1);
  auto response = raw_exchange(svc.port(), "GET /api/startstream/38 "
                                           "HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(body_of(response) == granted_body(1));
}

TEST_CASE("answers still on their way when a request is refused all arrive, "
          "the refusal last, though the client sends on",
          "[blackbox][edge]") {
  // Closed at once with bytes of the client unread, the connection would
  // be reset, and the answers still in its socket lost: it lingers instead.
  service_process svc{{"--write-timeout=60s", patient}};
  // About 15 MB of answers (more than the sockets hold), then a request
  // with a body on a GET.
  auto pipelined = openapi_asks(300);
  pipelined += "GET /api HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
               "hello";
  raw_connection conn{svc.port()};
  REQUIRE(conn.write(pipelined));
  // While its answers wait for it, it sends more (which the service reads
  // once they are taken, and drops).
  std::this_thread::sleep_for(200ms);
  REQUIRE(conn.write(std::string(1000, 'x')));
  std::this_thread::sleep_for(200ms);
  // It reads them slowly, so that the last ones still wait in the
  // service's socket when the refusal has been written.
  int answers = 0;
  while (answers < 300 && status_of(conn.read_response()) == 200) {
    ++answers;
    std::this_thread::sleep_for(5ms);
  }
  CHECK(answers == 300);
  auto refusal = conn.read_response();
  INFO(refusal);
  CHECK(status_of(refusal) == 400);
  CHECK(has_header(refusal, "Connection: close"));
  CHECK(conn.closed_by_peer());
}

TEST_CASE("a refused request's connection lingers a short while, then is "
          "closed though its client keeps it open",
          "[blackbox][edge]") {
  service_process svc{{patient}};
  REQUIRE(eventually([&] { return api_figure(svc, "open_connections") == 0; }));
  raw_connection conn{svc.port()};
  REQUIRE(conn.write("GET /api HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                     "\r\nhello"));
  auto refusal = conn.read_response();
  INFO(refusal);
  CHECK(status_of(refusal) == 400);
  // Half-closed: the service sends nothing more, but still reads.
  CHECK(conn.closed_by_peer());
  // It holds the connection for 2 s at most (a client that never closes
  // must not keep it forever).
  CHECK(eventually([&] { return api_figure(svc, "open_connections") == 0; }));
}
