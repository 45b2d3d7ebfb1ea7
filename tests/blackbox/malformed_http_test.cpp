// docs/api.md's promise 5: bad input gets a clear 4xx, never a crash, and the
// service keeps serving. Here the input is broken HTTP, sent over a raw socket.

#include <cstdlib>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

namespace {

/// A 4xx with CORS and a JSON object with a "msg".
void check_client_error(const std::string& response) {
  INFO("response: " << response);
  auto status = status_of(response);
  CHECK(status >= 400);
  CHECK(status < 500);
  CHECK(response.find("Access-Control-Allow-Origin: *") != std::string::npos);
  json::error_code ec;
  auto body = json::parse(body_of(response), ec);
  REQUIRE_FALSE(ec);
  REQUIRE(body.is_object());
  CHECK(body.as_object().contains("msg"));
}

/// The service still answers, and still counts streams right.
void check_still_serving(int port, int user) {
  auto cli = make_client(port);
  auto r = get(*cli, "/api/startstream/" + std::to_string(user));
  CHECK(r.status == 200);
  CHECK(r.body == granted_body(1));
}

} // namespace

TEST_CASE("a garbage request line gets a 4xx and the service keeps serving",
          "[blackbox]") {
  service_process svc;
  const std::vector<std::string> garbage{
    "GARBAGE\r\n\r\n",
    "GET\r\n\r\n",
    "GET /api/startstream/1\r\n\r\n",
    "GET /api/startstream/1 HTTP/1.1 extra\r\n\r\n",
    std::string{"\x01\x02\x03\x04 / HTTP/1.1\r\n\r\n"},
  };
  int user = 0;
  for (auto& bytes : garbage) {
    INFO("request: " << bytes);
    check_client_error(raw_exchange(svc.port(), bytes));
    check_still_serving(svc.port(), ++user);
  }
  // The garbage opened nothing for user 1 (some of it named that user).
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/api/endstream/1").body == closed_body(0));
  CHECK(svc.stop().describe() == "exit code 0");
}

TEST_CASE("an invalid Content-Length is a 4xx that changes nothing",
          "[blackbox]") {
  // RFC 9112 §6.3: invalid framing must be answered 400; docs/api.md's promise
  // 5: bad input changes nothing.
  service_process svc;
  check_client_error(raw_exchange(
    svc.port(), "GET /api/startstream/1 HTTP/1.1\r\nHost: t\r\n"
                "Content-Length: banana\r\nConnection: close\r\n\r\n"));
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/api/endstream/1").body == unknown_user_body());
}

TEST_CASE("an overlong user id or path gets a 4xx JSON error and the service "
          "keeps serving",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (std::size_t digits : {100u, 4000u, 20000u}) {
    INFO(digits << " digits");
    auto response = raw_exchange(
      svc.port(), "GET /api/startstream/" + std::string(digits, '1')
                    + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    check_client_error(response);
  }
  auto huge_header = "GET /api/startstream/1 HTTP/1.1\r\nHost: t\r\nX-Big: "
                     + std::string(20000, 'x') + "\r\n\r\n";
  check_client_error(raw_exchange(svc.port(), huge_header));
  check_still_serving(svc.port(), 2);
  CHECK(svc.stop().describe() == "exit code 0");
}

TEST_CASE("an unknown HTTP method gets an error answer and the service keeps "
          "serving",
          "[blackbox]") {
  service_process svc;
  for (auto& method : {"FOO", "BREW", "get"}) {
    INFO(method);
    auto response = raw_exchange(svc.port(), std::string{method}
                                               + " /api/startstream/1 "
                                                 "HTTP/1.1\r\nHost: t\r\n"
                                                 "Connection: close\r\n\r\n");
    INFO("response: " << response);
    // A known path with another method (methods are case-sensitive: "get"
    // is not GET), as docs/api.md, "The original API", says.
    CHECK(status_of(response) == 405);
    CHECK(response.find("\r\nAllow: GET, OPTIONS\r\n") != std::string::npos);
    CHECK(response.find("Access-Control-Allow-Origin: *")
          != std::string::npos);
    CHECK(body_of(response) == R"({"msg":"Method not allowed"})");
    // An unknown path with one: 404.
    auto unknown = raw_exchange(svc.port(), std::string{method}
                                              + " /nowhere HTTP/1.1\r\n"
                                                "Host: t\r\n\r\n");
    CHECK(status_of(unknown) == 404);
    CHECK(body_of(unknown) == R"({"msg":"Route not found"})");
  }
  // None of them started a stream.
  check_still_serving(svc.port(), 1);
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/api/endstream/1").body == closed_body(0));
}

TEST_CASE("a multipart body is a 415 that changes nothing, whatever the "
          "case of its type",
          "[blackbox]") {
  service_process svc;
  for (std::string type : {"multipart/form-data; boundary=x",
                           "Multipart/Form-Data; boundary=x",
                           "multipart/form-data", "multipart/mixed"}) {
    INFO(type);
    std::string body = R"({"sessionId":"tv","ttlSeconds":30})";
    auto response = raw_exchange(
      svc.port(), "POST /api/v2/users/860/streams HTTP/1.1\r\nHost: t\r\n"
                  "Content-Type: " + type + "\r\nContent-Length: "
                    + std::to_string(body.size()) + "\r\n\r\n" + body);
    INFO(response);
    CHECK(status_of(response) == 415);
    check_client_error(response);
  }
  auto cli = make_client(svc.port());
  auto listed = get(*cli, "/api/v2/users/860/streams");
  CHECK(listed.body.find("\"streamCount\":0") != std::string::npos);
}

TEST_CASE("a Range header is ignored, whatever its unit or syntax, and no "
          "answer offers ranges",
          "[blackbox]") {
  service_process svc;
  int n = 0;
  for (std::string range : {"bytes=0-10", "items=0-1", "bytes=abc",
                            "bytes=5-1", "bytes=0-1,,,"}) {
    INFO(range);
    auto response = raw_exchange(
      svc.port(), "GET /api/startstream/77 HTTP/1.1\r\nHost: t\r\nRange: "
                    + range + "\r\nConnection: close\r\n\r\n");
    INFO(response);
    CHECK(status_of(response) == 200);
    CHECK(body_of(response) == (++n <= 3 ? granted_body(n) : denied_body(3)));
  }
  // Nor does any answer offer ranges, HEAD's included (cpp-httplib's own
  // `Accept-Ranges: bytes` is taken out).
  const std::pair<std::string, int> heads[]{
    {"/api", 200}, {"/api/startstream/78", 405}, {"/nowhere", 404}};
  for (auto& [target, status] : heads) {
    INFO(target);
    raw_connection conn{svc.port()};
    REQUIRE(conn.write("HEAD " + target + " HTTP/1.1\r\nHost: t\r\n\r\n"));
    auto response = conn.read_response(true);
    INFO(response);
    CHECK(status_of(response) == status);
    CHECK(response.find("Accept-Ranges") == std::string::npos);
  }
}

TEST_CASE("a path with an encoded line break gets the same answer with a "
          "body as without",
          "[blackbox]") {
  service_process svc;
  auto without = raw_exchange(svc.port(),
                              "POST /api/v2/users/1%0a/streams HTTP/1.1\r\n"
                              "Host: t\r\nConnection: close\r\n\r\n");
  auto with = raw_exchange(svc.port(),
                           "POST /api/v2/users/1%0a/streams HTTP/1.1\r\n"
                           "Host: t\r\nContent-Length: 2\r\n"
                           "Connection: close\r\n\r\n{}");
  INFO(without << "\n---\n" << with);
  CHECK(status_of(without) == 400);
  CHECK(status_of(with) == 400);
  CHECK(body_of(with) == body_of(without));
  auto put = raw_exchange(svc.port(),
                          "PUT /api/startstream/1%0a HTTP/1.1\r\nHost: t\r\n"
                          "Content-Length: 2\r\nConnection: close\r\n\r\n{}");
  CHECK(status_of(put) == 405);
}

TEST_CASE("an answer cpp-httplib gives itself says Connection: close when "
          "the edge then closes the connection",
          "[blackbox]") {
  service_process svc;
  // Within the edge's 8 KiB target, beyond cpp-httplib's request line.
  raw_connection conn{svc.port()};
  REQUIRE(conn.write("GET /" + std::string(8180, 'a')
                     + " HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto response = conn.read_response();
  INFO(response);
  CHECK(status_of(response) == 414);
  auto head = response.substr(0, response.find("\r\n\r\n") + 2);
  CHECK(head.find("\r\nConnection: close\r\n") != std::string::npos);
  CHECK(head.find("Keep-Alive") == std::string::npos);
  CHECK(conn.closed_by_peer());
}
