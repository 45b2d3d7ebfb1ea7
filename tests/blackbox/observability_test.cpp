// Logs (--log-format, --access-log), the completeness of /metrics, and the
// start-up messages that say why (issues #12 and #13): seen from outside,
// on the binary's stderr and its HTTP ports.

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <sys/resource.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "exposition.hpp"
#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;
namespace json = boost::json;

namespace {

/// Refused by the edge: a body on a GET.
const std::string body_on_a_get
  = "GET /api HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab";

/// Refused by cpp-httplib, which cannot parse it: no route is ever known.
const std::string unparseable_request_line
  = "GET /api/startstream/1 HTTP/1.1 extra\r\nHost: t\r\n\r\n";

/// Every line of `text` parsed as a JSON object; a line that is not one
/// fails the test.
std::vector<json::object> json_lines(const std::string& text) {
  std::vector<json::object> out;
  for (std::size_t at = 0; at < text.size();) {
    auto eol = text.find('\n', at);
    REQUIRE(eol != std::string::npos); // every line ends
    auto line = text.substr(at, eol - at);
    at = eol + 1;
    INFO("line: " << line);
    json::error_code ec;
    auto v = json::parse(line, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(v.is_object());
    auto& o = v.as_object();
    for (auto key : {"ts", "level", "node", "event", "msg"}) {
      INFO("key " << key);
      REQUIRE(o.contains(key));
      REQUIRE(o.at(key).is_string());
    }
    CHECK(o.at("ts").as_string().size() == 24); // 2026-01-02T03:04:05.678Z
    auto level = o.at("level").as_string();
    CHECK((level == "info" || level == "warn" || level == "error"));
    out.push_back(o);
  }
  return out;
}

/// The events of `lines`, in order.
std::vector<std::string> events_of(const std::vector<json::object>& lines) {
  std::vector<std::string> out;
  for (auto& o : lines)
    out.emplace_back(o.at("event").as_string());
  return out;
}

/// The first line of event `name`; fails the test when there is none.
json::object first_event(const std::vector<json::object>& lines,
                         std::string_view name) {
  for (auto& o : lines)
    if (o.at("event").as_string() == name)
      return o;
  FAIL("no " << name << " event");
  return {};
}

/// The access log lines (event "request") of `lines`.
std::vector<json::object> requests_of(const std::vector<json::object>& lines) {
  std::vector<json::object> out;
  for (auto& o : lines)
    if (o.at("event").as_string() == "request")
      out.push_back(o);
  return out;
}

} // namespace

TEST_CASE("JSON logs (--log-format=json): every line is a JSON object "
          "with the node id, from start and ready to stop on SIGTERM",
          "[blackbox][logs]") {
  service_process svc{{"--log-format=json", "--node-id=bb-json-1"}};
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/api/startstream/5").status == 200);
  // The process is ready once it says so: wait for the line rather than
  // for time.
  REQUIRE(eventually([&] {
    return svc.stderr_text().find(R"("event":"ready")") != std::string::npos;
  }));
  REQUIRE(svc.stop().clean());
  auto lines = json_lines(svc.stderr_text());
  for (auto& o : lines)
    CHECK(o.at("node") == "bb-json-1");
  auto events = events_of(lines);
  INFO(svc.stderr_text());
  auto at = [&events](const char* name) {
    return std::find(events.begin(), events.end(), name) - events.begin();
  };
  REQUIRE(at("start") < static_cast<long>(events.size()));
  CHECK(at("start") < at("ready"));
  CHECK(at("ready") < at("stopping"));
  CHECK(at("stopping") < at("stop"));
  CHECK(at("stop") == static_cast<long>(events.size()) - 1);
  auto start = first_event(lines, "start");
  CHECK(start.at("port") == svc.port());
  CHECK(start.at("ops_port") == svc.ops_port());
  CHECK(start.at("mode") == "in-memory");
  CHECK(start.at("bind") == "127.0.0.1");
  CHECK(start.at("version").as_string().size() > 0);
  CHECK(first_event(lines, "ready").at("shards_owned") == 128);
  CHECK(first_event(lines, "stopping").at("signal") == "SIGTERM");
  auto stop = first_event(lines, "stop");
  CHECK(stop.at("exit_code") == 0);
  CHECK(stop.at("level") == "info");
  // No access log unless asked for.
  CHECK(requests_of(lines).empty());
}

TEST_CASE("the text format keeps the start line and adds event, node and "
          "fields to every line",
          "[blackbox][logs]") {
  service_process svc{{"--node-id=bb-text-1"},
                      {{"VIDEOSTREAMS_LOG_FORMAT", "text"}}};
  REQUIRE(svc.stop().clean());
  auto text = svc.stderr_text();
  INFO(text);
  CHECK(text.find("videostreams: listening on 127.0.0.1:"
                  + std::to_string(svc.port()) + ", operations on 127.0.0.1:"
                  + std::to_string(svc.ops_port()) + ", mode in-memory")
        != std::string::npos);
  std::size_t lines = 0;
  for (std::size_t at = 0; at < text.size(); ++lines) {
    auto eol = text.find('\n', at);
    REQUIRE(eol != std::string::npos);
    auto line = text.substr(at, eol - at);
    at = eol + 1;
    INFO(line);
    CHECK(line.find(" INFO videostreams: ") == 24); // after the time
    CHECK(line.find(" | event=") != std::string::npos);
    CHECK(line.find(" node=bb-text-1") != std::string::npos);
  }
  CHECK(lines == 4); // start, ready, stopping, stop
  CHECK(text.find("| event=start node=bb-text-1 ") != std::string::npos);
  CHECK(text.find("| event=stop node=bb-text-1 exit_code=0 ")
        != std::string::npos);
}

TEST_CASE("the access log (--access-log) writes a line per request, on both ports, and for "
          "requests the edge refused",
          "[blackbox][logs]") {
  service_process svc{{"--log-format=json", "--access-log", "--node-id=bb-a"}};
  auto cli = make_client(svc.port());
  auto ops = make_client(svc.ops_port());
  // The lines of this test's requests: not the harness's probes of the
  // API port before it began (/healthz, /readyz), whose lines may reach
  // the log after any count taken here.
  auto ours = [&svc] {
    std::vector<json::object> out;
    for (auto& o : requests_of(json_lines(svc.stderr_text())))
      if (o.at("listener") != "api"
          || (o.at("path") != "/healthz" && o.at("path") != "/readyz"))
        out.push_back(o);
    return out;
  };
  CHECK(get(*cli, "/api/startstream/7").status == 200);
  CHECK(get(*cli, "/api/startstream/abc").status == 400);
  CHECK(get(*cli, "/nowhere").status == 404);
  CHECK(get(*ops, "/readyz").status == 200);
  // Refused by the edge (a body on a GET), and one cpp-httplib cannot
  // parse: no route was ever known.
  CHECK(status_of(raw_exchange(svc.port(), body_on_a_get)) == 400);
  CHECK(status_of(raw_exchange(svc.port(), unparseable_request_line))
        == 400);
  REQUIRE(eventually([&] { return ours().size() >= 6; }));
  auto lines = ours();
  REQUIRE(lines.size() == 6);
  for (auto& o : lines) {
    INFO(json::serialize(o));
    CHECK(o.at("node") == "bb-a");
    CHECK(o.at("duration_seconds").is_number());
    CHECK(o.at("duration_seconds").to_number<double>() >= 0);
    auto remote = std::string{o.at("remote").as_string()};
    CHECK(remote.rfind("127.0.0.1:", 0) == 0);
    CHECK(remote.size() > 10);
  }
  auto check = [](const json::object& o, const char* method, const char* path,
                  const char* route, int status, const char* listener) {
    INFO(json::serialize(o));
    CHECK(o.at("method") == method);
    CHECK(o.at("path") == path);
    CHECK(o.at("route") == route);
    CHECK(o.at("status") == status);
    CHECK(o.at("listener") == listener);
  };
  check(lines[0], "GET", "/api/startstream/7", "/api/startstream/:user_id",
        200, "api");
  check(lines[1], "GET", "/api/startstream/abc", "/api/startstream/:user_id",
        400, "api");
  check(lines[2], "GET", "/nowhere", "unmatched", 404, "api");
  check(lines[3], "GET", "/readyz", "/readyz", 200, "ops");
  check(lines[4], "GET", "/api", "(edge)", 400, "api");
  check(lines[5], "GET", "/api/startstream/1", "(edge)", 400, "api");
}

TEST_CASE("every metric family on /metrics has a sample from the start, in "
          "memory",
          "[blackbox][metrics]") {
  service_process svc{{"--node-id=bb-m1"}};
  // The very first request, on the operations port.
  auto ops = make_client(svc.ops_port());
  auto r = get(*ops, "/metrics");
  REQUIRE(r.status == 200);
  auto report = videostreams::testing::check_exposition(r.body);
  INFO(report.problems_text());
  CHECK(report.ok());
  CHECK(report.families.size() > 50);
  CHECK(report.value(R"(videostreams_build_info{version="0.1.0",)"
                     R"(node_id="bb-m1",mode="in-memory"})")
        == 1);
  CHECK(report.value("videostreams_database_up") == 0);
  CHECK(report.value("videostreams_persistence_queue_depth") == 0);
  CHECK(report.value("videostreams_cluster_shards_owned") == 128);
  CHECK(report.value("videostreams_cluster_forwarded_requests_total") == 0);
  CHECK(report.families.count(
          "videostreams_persistence_commit_duration_seconds")
        == 1);
}

TEST_CASE("requests the edge or cpp-httplib answer are counted in "
          "videostreams_http_requests_total as route (edge)",
          "[blackbox][metrics]") {
  service_process svc;
  auto edge_of = [](service_process& p, int code) {
    auto cli = make_client(p.ops_port());
    return metric_value(scrape(*cli),
                        R"x(videostreams_http_requests_total{route="(edge)",code=")x"
                          + std::to_string(code) + "\"}")
      .value_or(0);
  };
  auto edge = [&](int code) { return edge_of(svc, code); };
  const std::string post = "POST /api/v2/users/3/streams HTTP/1.1\r\nHost: t"
                           "\r\n";
  // 400 refused framing, 400 unparseable, 413, 414, 415, 431.
  CHECK(status_of(raw_exchange(svc.port(), body_on_a_get)) == 400);
  CHECK(status_of(raw_exchange(svc.port(), unparseable_request_line))
        == 400);
  CHECK(status_of(raw_exchange(svc.port(),
                               post + "Content-Length: 16385\r\n\r\n"))
        == 413);
  CHECK(status_of(raw_exchange(svc.port(), "GET /" + std::string(9000, 'a')
                                             + " HTTP/1.1\r\nHost: t\r\n\r\n"))
        == 414);
  CHECK(status_of(raw_exchange(svc.port(),
                               post + "Content-Encoding: gzip\r\n"
                                      "Content-Length: 1\r\n\r\nx"))
        == 415);
  CHECK(status_of(raw_exchange(svc.port(),
                               "GET /api HTTP/1.1\r\nHost: t\r\nX-Big: "
                                 + std::string(17000, 'b') + "\r\n\r\n"))
        == 431);
  CHECK(edge(400) == 2);
  CHECK(edge(413) == 1);
  CHECK(edge(414) == 1);
  CHECK(edge(415) == 1);
  CHECK(edge(431) == 1);
  // The routed answers stay with their routes.
  auto cli = make_client(svc.ops_port());
  auto text = scrape(*cli);
  CHECK(metric_value(text, R"(videostreams_http_requests_total{route="/api/startstream/:user_id",code="400"})")
          .value_or(0)
        == 0);
  // (The edge's 503 at the connection cap: the db tier.)
}

TEST_CASE("the open-file warning: a limit below --max-connections plus 256 "
          "is logged, one above is not",
          "[blackbox]") {
  // The service raises its limit to the hard limit, which it inherits.
  rlimit hard{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &hard) == 0);
  if (hard.rlim_max == RLIM_INFINITY || hard.rlim_max > 1000000) {
    // Beyond --max-connections' own bound: lower it (for this process and
    // its children only; lowering needs no privilege).
    hard.rlim_cur = hard.rlim_max = 20000;
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &hard) == 0);
  }
  REQUIRE(hard.rlim_max > 2000);
  auto limit = std::to_string(hard.rlim_max);
  auto short_by = std::to_string(hard.rlim_max - 100);
  service_process tight{{"--log-format=json", "--max-connections=" + short_by}};
  auto lines = json_lines(tight.stderr_text());
  auto warned = first_event(lines, "open_file_limit");
  CHECK(warned.at("level") == "warn");
  CHECK(warned.at("limit") == static_cast<std::int64_t>(hard.rlim_max));
  CHECK(std::string{warned.at("msg").as_string()}
        == "warning: the open-file limit " + limit
             + " is below --max-connections=" + short_by
             + " plus 256 for the process's other descriptors");
  auto room = std::to_string(hard.rlim_max - 1000);
  service_process roomy{{"--max-connections=" + room}};
  CHECK(roomy.stderr_text().find("open_file_limit") == std::string::npos);
}

TEST_CASE("a port in use stops the start with the reason, for the API port "
          "and the operations port",
          "[blackbox]") {
  service_process first;
  auto api = run_binary({"--bind=127.0.0.1",
                         "--port=" + std::to_string(first.port()),
                         "--ops-port=0"});
  INFO(api.err);
  CHECK(api.status.describe() == "exit code 1");
  CHECK(api.err.find("cannot listen on 127.0.0.1:"
                     + std::to_string(first.port())
                     + ": Address already in use")
        != std::string::npos);
  CHECK(api.err.find("event=start_failed") != std::string::npos);
  auto ops = run_binary({"--bind=127.0.0.1", "--port=0",
                         "--ops-port=" + std::to_string(first.ops_port()),
                         "--log-format=json"});
  INFO(ops.err);
  CHECK(ops.status.describe() == "exit code 1");
  auto lines = json_lines(ops.err);
  auto failed = first_event(lines, "start_failed");
  CHECK(failed.at("level") == "error");
  CHECK(failed.at("exit_code") == 1);
  CHECK(std::string{failed.at("msg").as_string()}
        == "cannot listen on 127.0.0.1:" + std::to_string(first.ops_port())
             + " (the operations port, --ops-port; -1 turns it off): Address "
               "already in use");
  // The first one never noticed.
  auto cli = make_client(first.port());
  CHECK(get(*cli, "/healthz").status == 200);
}

TEST_CASE("a DATABASE_URL exported for another program: the refusal says how "
          "to run in memory, and --database-url= does",
          "[blackbox]") {
  // Nothing listens on port 1: the connection is refused at once.
  const environment other_app{
    {"DATABASE_URL", "postgresql://nobody@127.0.0.1:1/other?connect_timeout=5"}};
  auto refused = run_binary({"--bind=127.0.0.1", "--port=0", "--ops-port=0",
                             "--cluster-port=0"},
                            other_app);
  INFO(refused.err);
  CHECK(refused.status.describe() == "exit code 1");
  CHECK(refused.err.find("cannot connect to the database") != std::string::npos);
  CHECK(refused.err.find("the database named by DATABASE_URL")
        != std::string::npos);
  CHECK(refused.err.find("--database-url= (empty) or unset DATABASE_URL")
        != std::string::npos);
  // As advised: the empty flag wins over the environment.
  service_process svc{{"--database-url="}, other_app};
  CHECK(svc.stderr_text().find("mode in-memory") != std::string::npos);
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/api/startstream/1").status == 200);
}
