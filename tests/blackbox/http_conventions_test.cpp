// docs/api.md, "Every answer": what every answer carries (CORS, Content-Type)
// and the CORS preflight.

#include <cctype>
#include <ctime>
#include <regex>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

namespace {

struct probe {
  std::string method;
  std::string path;
  int expected_status;
};

/// One request of every kind of answer the API gives on its own.
const std::vector<probe>& every_kind_of_answer() {
  static const std::vector<probe> probes{
    {"GET", "/api", 200},
    {"GET", "/api/startstream/1", 200},
    {"GET", "/api/endstream/1", 200},
    {"GET", "/api/endstream/1", 400}, // a known user, nothing to close
    {"GET", "/api/endstream/2", 400}, // a user the service does not know
    {"GET", "/healthz", 200},
    {"GET", "/readyz", 200},
    {"GET", "/metrics", 200},
    {"HEAD", "/api", 200},
    {"OPTIONS", "/api/startstream/1", 204},
    {"OPTIONS", "/api", 204},
    {"GET", "/api/startstream/abc", 400},
    {"GET", "/api/endstream/-1", 400},
    {"GET", "/nope", 404},
    {"POST", "/nope", 404},
    {"OPTIONS", "/nope", 404},
    {"GET", "/api/startstream", 404},
    {"POST", "/api/startstream/1", 405},
    {"DELETE", "/api", 405},
    {"HEAD", "/api/startstream/1", 405},
  };
  return probes;
}

/// Sends each of `every_kind_of_answer` through `cli`, requires its status,
/// and hands the probe and its answer to `check`.
template <class Check>
void check_every_answer(httplib::Client& cli, Check check) {
  for (auto& p : every_kind_of_answer()) {
    INFO(p.method << " " << p.path);
    auto r = send(cli, p.method, p.path);
    REQUIRE(r.status == p.expected_status);
    check(p, r);
  }
}

/// Seconds since the epoch of an RFC 9110 IMF-fixdate ("Sun, 06 Nov 1994
/// 08:49:37 GMT"), or -1 when `text` is not one.
std::int64_t imf_fixdate(const std::string& text) {
  static const std::regex form{
    R"((Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT)"};
  if (!std::regex_match(text, form))
    return -1;
  std::tm tm{};
  if (::strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr)
    return -1;
  return static_cast<std::int64_t>(::timegm(&tm));
}

/// Checks that `date` is an IMF-fixdate near this machine's clock (the
/// service runs on it; minutes of slack, so a slow machine cannot fail it).
void check_date(const std::string& date) {
  INFO("Date: " << date);
  auto at = imf_fixdate(date);
  REQUIRE(at > 0);
  auto now = static_cast<std::int64_t>(std::time(nullptr));
  CHECK(at <= now + 1);
  CHECK(at >= now - 600);
}

} // namespace

TEST_CASE("every answer carries a Date header (RFC 9110 IMF-fixdate)",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  check_every_answer(*cli, [](const probe&, const reply& r) {
    check_date(r.header("Date"));
  });
  // v2 answers, and the operations port's.
  auto ops = make_client(svc.ops_port());
  for (auto* c : {cli.get(), ops.get()}) {
    auto r = get(*c, "/healthz");
    REQUIRE(r.status == 200);
    check_date(r.header("Date"));
  }
  auto opened = send(*cli, "POST", "/api/v2/users/3/streams");
  REQUIRE(opened.status == 201);
  check_date(opened.header("Date"));
  // Errors that cpp-httplib raises, and those the edge answers itself.
  for (auto* bytes :
       {"GET /api HTTP/1.1\r\nHost: t\r\nRange: bytes=x\r\n\r\n",
        "NOT-HTTP\r\n\r\n",
        "GET /api HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"}) {
    INFO(bytes);
    auto raw = raw_exchange(svc.port(), bytes);
    REQUIRE_FALSE(raw.empty());
    std::smatch m;
    REQUIRE(std::regex_search(raw, m, std::regex{"\r\nDate: ([^\r]*)\r\n"}));
    check_date(m[1].str());
  }
}

TEST_CASE("a CORS preflight echoes Access-Control-Request-Headers, with "
          "Vary, as the original's cors() did",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (auto& path : {"/api/startstream/1", "/api/v2/users/1/streams",
                     "/api/v2/users/1/streams/tv"}) {
    INFO("OPTIONS " << path);
    auto r = send(*cli, "OPTIONS", path, std::nullopt,
                  {{"Origin", "https://player.example"},
                   {"Access-Control-Request-Method", "PUT"},
                   {"Access-Control-Request-Headers",
                    "x-player-version, content-type"}});
    CHECK(r.status == 204);
    CHECK(r.header("Access-Control-Allow-Headers")
          == "x-player-version, content-type");
    CHECK(r.header("Vary") == "Access-Control-Request-Headers");
    CHECK(r.header("Access-Control-Allow-Origin") == "*");
  }
  // Without the header, the headers the API reads are allowed.
  auto plain = send(*cli, "OPTIONS", "/api");
  CHECK(plain.header("Access-Control-Allow-Headers")
        == "Content-Type, Authorization");
  CHECK(plain.header("Vary") == "Access-Control-Request-Headers");
  // A value that is no list of header names is refused, not echoed.
  auto bad = send(*cli, "OPTIONS", "/api", std::nullopt,
                  {{"Access-Control-Request-Headers", "x%0d%0aSet-Cookie: a"}});
  CHECK(bad.status == 400);
  CHECK_FALSE(bad.has_header("Set-Cookie"));
  CHECK_FALSE(bad.has_header("Access-Control-Allow-Headers"));
}

TEST_CASE("every answer carries the CORS header Access-Control-Allow-Origin",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  check_every_answer(*cli, [](const probe&, const reply& r) {
    CHECK(r.header("Access-Control-Allow-Origin") == "*");
  });
}

TEST_CASE("JSON answers carry Content-Type application/json with charset utf-8",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  check_every_answer(*cli, [](const probe& p, const reply& r) {
    if (p.method == "HEAD" || p.method == "OPTIONS" || p.path == "/metrics")
      return; // no body, or not JSON
    CHECK(r.header("Content-Type") == json_content_type);
    json::error_code ec;
    json::parse(r.body, ec);
    INFO("body: " << r.body);
    CHECK_FALSE(ec);
  });
}

TEST_CASE("OPTIONS on a known route answers the CORS preflight with 204",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (auto& path : {"/api", "/api/startstream/1", "/api/endstream/1",
                     "/healthz", "/readyz", "/metrics"}) {
    INFO("OPTIONS " << path);
    auto r = send(*cli, "OPTIONS", path);
    CHECK(r.status == 204);
    CHECK(r.body.empty());
    CHECK(r.header("Access-Control-Allow-Origin") == "*");
    auto methods = r.header("Access-Control-Allow-Methods");
    CHECK(methods.find("GET") != std::string::npos);
    CHECK(methods.find("POST") == std::string::npos);
  }
  // RFC 9110 §8.6: a 204 carries no Content-Length.
  auto raw = raw_exchange(svc.port(), "OPTIONS /api/startstream/7 HTTP/1.1\r\n"
                                      "Host: t\r\nConnection: close\r\n\r\n");
  INFO(raw);
  CHECK(status_of(raw) == 204);
  auto head = raw.substr(0, raw.find("\r\n\r\n") + 2);
  for (auto& c : head)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  CHECK(head.find("\r\ncontent-length:") == std::string::npos);
  // A preflight on startstream is not a start.
  auto r = get(*cli, "/api/startstream/1");
  CHECK(r.body == granted_body(1));
}

TEST_CASE("OPTIONS on an unknown path is a 404", "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  for (auto& path : {"/nope", "/api/startstream", "/api/startstream/1/x",
                     "/"}) {
    INFO("OPTIONS " << path);
    auto r = send(*cli, "OPTIONS", path);
    CHECK(r.status == 404);
    CHECK(r.body == route_not_found_body);
    CHECK(r.header("Access-Control-Allow-Origin") == "*");
    CHECK_FALSE(r.has_header("Access-Control-Allow-Methods"));
  }
}
