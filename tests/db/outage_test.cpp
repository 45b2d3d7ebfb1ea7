// PostgreSQL stopped and restarted under a running service (docs/api.md's
// promise 4), on a server of this test's own (the shared one keeps serving the
// others).

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/json.hpp>

#include "http_probe.hpp"
#include "own_postgres.hpp"
#include "service_process.hpp"

using namespace videostreams;
using namespace videostreams::blackbox;
using namespace videostreams::testing;
using namespace std::chrono_literals;

namespace {

/// Opens session `id` for user 1.
reply open_session(httplib::Client& cli, const std::string& id) {
  return send(cli, "POST", "/api/v2/users/1/streams",
              R"({"sessionId":")" + id + R"("})");
}

/// Opens session `id` for user 1 where the database is up and the test is
/// not about timing: the tests here keep short request timeouts for the
/// requests that are, so on a loaded machine a commit may miss one. Such a
/// 503 undoes the grant (its slot is free again), so trying again is safe;
/// the status of the first try that was not a 503.
int open_when_up(httplib::Client& cli, const std::string& id) {
  int status = -1;
  eventually(
    [&] {
      status = open_session(cli, id).status;
      return status != 503;
    },
    30s);
  return status;
}

/// True once every change has been written (bounded wait).
bool backlog_drained(httplib::Client& cli) {
  return eventually(
    [&] {
      return metric_value(scrape(cli), "videostreams_persistence_queue_depth")
             == 0;
    },
    30s);
}

/// Sends `startstream` for users 1..`n`, each on a connection of its own,
/// without reading the answers: with every shard locked, each holds an
/// HTTP worker until its commit gives up (10 s) or the lock goes.
std::vector<std::unique_ptr<raw_connection>> held_grants(int port, int n) {
  std::vector<std::unique_ptr<raw_connection>> held;
  for (int user = 1; user <= n; ++user) {
    held.push_back(std::make_unique<raw_connection>(port));
    REQUIRE(held.back()->write("GET /api/startstream/" + std::to_string(user)
                               + " HTTP/1.1\r\nHost: t\r\n\r\n"));
  }
  return held;
}

/// Checks that each held request was answered once the lock went: granted,
/// or 503 if its commit missed its deadline on a slow machine.
void check_answered(std::vector<std::unique_ptr<raw_connection>>& held) {
  for (auto& c : held) {
    auto status = status_of(c->read_response());
    CHECK((status == 200 || status == 503));
  }
}

/// The value of gauge `name` for the API port's listener, read through
/// `ops` (the operations port); -1 when absent.
double api_gauge(httplib::Client& ops, const std::string& name) {
  return metric_value(scrape(ops), name + "{listener=\"api\"}").value_or(-1);
}

} // namespace

TEST_CASE("a database outage: reads and closes go on, sync grants and "
          "limit changes fail closed, the backlog drains on return",
          "[db]") {
  own_postgres pg{"outage"};
  service_process svc{{"--database-url=" + pg.dsn, "--request-timeout=2s",
                       "--log-format=json", "--node-id=outage-1",
                       "--admin-token=t"}};
  auto cli = make_client(svc.port(), true);
  REQUIRE(eventually([&] { return database_status(*cli) == "ok"; }, 30s));
  REQUIRE(open_when_up(*cli, "a") == 201);
  REQUIRE(open_when_up(*cli, "b") == 201);
  REQUIRE(pg.count("SELECT count(*) FROM stream_sessions") == 2);

  pg.run("halt");
  // Noticed without any traffic, and the node stays ready.
  auto halted = std::chrono::steady_clock::now();
  CHECK(eventually([&] { return database_status(*cli) == "unreachable"; },
                   5s));
  CHECK(std::chrono::steady_clock::now() - halted < 4s);
  // Reads, heartbeats and closes work from memory.
  CHECK(get(*cli, "/api/v2/users/1/streams").status == 200);
  CHECK(send(*cli, "PUT", "/api/v2/users/1/streams/a").status == 200);
  CHECK(send(*cli, "DELETE", "/api/v2/users/1/streams/b").status == 200);
  // A sync grant fails closed within the request timeout, slot released.
  auto asked = std::chrono::steady_clock::now();
  auto refused = open_session(*cli, "c");
  CHECK(refused.status == 503);
  CHECK(refused.has_header("Retry-After"));
  CHECK(std::chrono::steady_clock::now() - asked < 3s);
  CHECK(boost::json::parse(get(*cli, "/api/v2/users/1/streams").body)
          .at("streamCount")
        == 1);
  // A limit is state like a grant: not committed, not made (it used to be
  // answered 200 and written behind).
  auto limit = send(*cli, "PUT", "/api/v2/users/1/limit",
                    R"({"maxStreams":1})", {{"Authorization", "Bearer t"}});
  CHECK(limit.status == 503);
  CHECK(limit.has_header("Retry-After"));
  CHECK(boost::json::parse(get(*cli, "/api/v2/users/1/streams").body)
          .at("maxStreams")
        == 3);
  auto metrics = scrape(*cli);
  CHECK(metric_value(metrics, "videostreams_database_up") == 0);

  pg.run("resume");
  // Back: the close written, the refused grant never was.
  CHECK(eventually([&] { return database_status(*cli) == "ok"; }, 30s));
  CHECK(backlog_drained(*cli));
  CHECK(eventually(
    [&] { return pg.count("SELECT count(*) FROM stream_sessions") == 1; },
    30s));
  CHECK(pg.count("SELECT count(*) FROM stream_sessions WHERE stream_key = "
                 "'c'")
        == 0);
  CHECK(pg.count("SELECT count(*) FROM user_limits") == 0);
  CHECK(open_when_up(*cli, "c") == 201);
  CHECK(svc.stop().clean());
  // The log: JSON lines, each with the node id; the database went down,
  // then up (each change of state logged once: down and up alternate).
  std::vector<std::string> events;
  auto text = svc.stderr_text();
  for (std::size_t at = 0; at < text.size();) {
    auto eol = text.find('\n', at);
    REQUIRE(eol != std::string::npos);
    auto line = text.substr(at, eol - at);
    at = eol + 1;
    INFO(line);
    boost::json::error_code ec;
    auto v = boost::json::parse(line, ec);
    REQUIRE_FALSE(ec);
    auto& o = v.as_object();
    CHECK(o.at("node") == "outage-1");
    events.emplace_back(o.at("event").as_string());
    if (o.at("event") == "database_down") {
      CHECK(o.at("level") == "warn");
      CHECK(o.at("reason").as_string().size() > 0);
    }
    if (o.at("event") == "database_up")
      CHECK(o.at("down_seconds").to_number<double>() > 0);
  }
  INFO(text);
  std::string changes;
  for (auto& e : events)
    if (e == "database_down" || e == "database_up")
      changes += e == "database_down" ? 'D' : 'U';
  CHECK(changes.size() >= 2);
  for (std::size_t i = 0; i < changes.size(); ++i)
    CHECK(changes[i] == (i % 2 == 0 ? 'D' : 'U'));
  for (auto e : {"start", "shard_taken", "ready", "leaving", "stopping",
                 "stop"})
    CHECK(std::count(events.begin(), events.end(), e) >= 1);
}

TEST_CASE("a database that hangs: sync grants answer 503 within the request "
          "timeout, their slots are freed, and their closes land after",
          "[db]") {
  own_postgres pg{"hang"};
  service_process svc{{"--database-url=" + pg.dsn, "--request-timeout=2s"}};
  auto cli = make_client(svc.port(), true);
  REQUIRE(eventually([&] { return database_status(*cli) == "ok"; }, 30s));
  REQUIRE(open_when_up(*cli, "a") == 201);
  auto locker = lock_every_shard(pg.dsn);
  auto refused = open_session(*cli, "b");
  CHECK(refused.status == 503);
  CHECK(refused.has_header("Retry-After"));
  // The slot is free again (by the commit's deadline, which comes before
  // the request's unless the machine stalls between them), reads go on,
  // and the hang shows.
  CHECK(eventually(
    [&] {
      return boost::json::parse(get(*cli, "/api/v2/users/1/streams").body)
               .at("streamCount")
             == 1;
    },
    5s));
  CHECK(eventually([&] { return database_status(*cli) == "unreachable"; },
                   5s));
  auto metrics = scrape(*cli);
  CHECK(metric_value(metrics, "videostreams_persistence_commit_timeouts_total")
        >= 1);
  CHECK(metric_value(metrics, "videostreams_stream_grant_failures_total") >= 1);

  REQUIRE(locker.exec("ROLLBACK"));
  // The hung commit lands, then the close queued after it.
  CHECK(eventually([&] { return database_status(*cli) == "ok"; }, 30s));
  CHECK(backlog_drained(*cli));
  CHECK(pg.count("SELECT count(*) FROM stream_sessions WHERE stream_key = "
                 "'b'")
        == 0);
  CHECK(pg.count("SELECT count(*) FROM stream_sessions") == 1);
  CHECK(open_when_up(*cli, "b") == 201);
  CHECK(svc.stop().clean());
}

TEST_CASE("SIGTERM while a commit hangs: the service still exits, after a "
          "bounded flush",
          "[db]") {
  own_postgres pg{"hang-exit"};
  service_process svc{{"--database-url=" + pg.dsn, "--request-timeout=1s"}};
  auto cli = make_client(svc.port(), true);
  REQUIRE(eventually([&] { return database_status(*cli) == "ok"; }, 30s));
  auto locker = lock_every_shard(pg.dsn);
  CHECK(get(*cli, "/api/startstream/1").status == 503);
  // The lock is held until after the process ended: the flush gives up
  // after 10 s, cancels the hanging commit, and the process exits 0.
  auto status = svc.stop(std::chrono::seconds{30});
  CHECK(status.clean());
  CHECK_THAT(svc.stderr_text(), Catch::Contains("not written at exit"));
  REQUIRE(locker.exec("ROLLBACK"));
}

TEST_CASE("at --max-connections with a worker holding every connection (a "
          "commit that hangs), a new connection is answered 503 at once",
          "[db]") {
  own_postgres pg{"capped"};
  service_process svc{{"--database-url=" + pg.dsn, "--request-timeout=20s",
                       "--max-connections=2"}};
  // Everything but the held requests goes through the operations port.
  auto ops = make_client(svc.ops_port(), true);
  REQUIRE(eventually([&] { return database_status(*ops) == "ok"; }, 30s));
  auto locker = lock_every_shard(pg.dsn);
  auto held = held_grants(svc.port(), 2);
  REQUIRE(eventually([&] {
    return api_gauge(*ops, "videostreams_http_busy_workers") == 2;
  }));
  raw_connection shed{svc.port()};
  auto response = shed.read_response();
  INFO(response);
  CHECK(status_of(response) == 503);
  CHECK(response.find("\r\nConnection: close\r\n") != std::string::npos);
  CHECK(response.find("\r\nRetry-After: 1\r\n") != std::string::npos);
  CHECK(metric_value(scrape(*ops), R"x(videostreams_http_requests_total{route="(edge)",code="503"})x")
        == 1);
  REQUIRE(locker.exec("ROLLBACK"));
  check_answered(held);
}

TEST_CASE("while every HTTP worker waits for a commit that hangs, the pool "
          "grows and the API port still answers",
          "[db]") {
  own_postgres pg{"starved"};
  service_process svc{{"--database-url=" + pg.dsn, "--request-timeout=20s",
                       "--http-threads=2", "--http-max-threads=8"}};
  auto ops = make_client(svc.ops_port(), true);
  REQUIRE(eventually([&] { return database_status(*ops) == "ok"; }, 30s));
  REQUIRE(api_gauge(*ops, "videostreams_http_workers") == 2);
  auto locker = lock_every_shard(pg.dsn);
  // Two sync grants, each holding its worker.
  auto held = held_grants(svc.port(), 2);
  REQUIRE(eventually([&] {
    return api_gauge(*ops, "videostreams_http_busy_workers") == 2;
  }));
  // A new client on the same port is answered by a worker added for it,
  // while both grants still wait. Without the growth it would wait for
  // the commits to give up, and the grants would have been answered by
  // then.
  raw_connection fresh{svc.port()};
  REQUIRE(fresh.write("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK(status_of(fresh.read_response()) == 200);
  // (The worker that answered it may not have counted itself free yet.)
  CHECK(api_gauge(*ops, "videostreams_http_busy_workers") >= 2);
  CHECK(api_gauge(*ops, "videostreams_http_workers") > 2);
  REQUIRE(locker.exec("ROLLBACK"));
  check_answered(held);
}
