// pg_connection's own bounds on how long it waits for the server
// (pg_timeouts), against the tier's PostgreSQL through a proxy that can
// fall silent, and the answers it gives when the server does answer.

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "db_fixture.hpp"
#include "persistence/pg_connection.hpp"
#include "persistence/persistence_error.hpp"
#include "silent_proxy.hpp"

using namespace videostreams;
using namespace videostreams::testing;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

/// Seconds since `start`.
double seconds_since(steady::time_point start) {
  return std::chrono::duration<double>(steady::now() - start).count();
}

/// The first column of the first row `sql` gives on `db`.
std::string first_value(pg_connection& db, const std::string& sql) {
  auto rows = db.exec(sql);
  if (!rows)
    FAIL(describe(rows.error()));
  REQUIRE(rows->size() > 0);
  return rows->at(0, 0);
}

pg_timeouts bounds(std::chrono::milliseconds connect,
                   std::chrono::milliseconds answer) {
  pg_timeouts result;
  result.connect = connect;
  result.answer = answer;
  return result;
}

/// Lets the connections `proxy` carries fall silent and runs a statement
/// on `db`: it must fail `unreachable`, saying it waited `bound`, and not
/// before. Returns how long it took, in seconds.
double check_given_up_after(pg_connection& db, silent_proxy& proxy,
                            std::chrono::milliseconds bound) {
  proxy.silence_carried();
  auto start = steady::now();
  auto lost = db.exec("SELECT 1");
  auto took = seconds_since(start);
  REQUIRE_FALSE(lost);
  CHECK(is(lost.error(), persistence_error::unreachable));
  CHECK_THAT(describe(lost.error()),
             Catch::Contains("no answer from the database within "
                             + std::to_string(bound.count()) + " ms"));
  CHECK(took >= bound.count() / 1000.0 - 0.05);
  return took;
}

} // namespace

TEST_CASE("pg_connection: a connection attempt that gets no answer gives up "
          "at its connect timeout",
          "[db][connection]") {
  silent_proxy proxy{server_dsn()};
  proxy.silence_all();
  SECTION("the one asked for") {
    auto start = steady::now();
    auto db = pg_connection::connect(proxy.dsn(), bounds(300ms, 0ms));
    auto took = seconds_since(start);
    REQUIRE_FALSE(db);
    CHECK(is(db.error(), persistence_error::unreachable));
    CHECK_THAT(describe(db.error()), Catch::Contains("within 300 ms"));
    // libpq's own blocking connect would wait for good here (this DSN names
    // no connect_timeout): the bound is ours. Well under the 10 s default.
    CHECK(took < 8.0);
    CHECK(proxy.accepted() >= 1);
  }
  SECTION("else the DSN's connect_timeout") {
    auto start = steady::now();
    auto db = pg_connection::connect(proxy.dsn() + " connect_timeout=2");
    auto took = seconds_since(start);
    REQUIRE_FALSE(db);
    CHECK(is(db.error(), persistence_error::unreachable));
    CHECK_THAT(describe(db.error()), Catch::Contains("within 2000 ms"));
    CHECK(took >= 1.9);
    CHECK(took < 8.0);
  }
}

TEST_CASE("pg_connection: a statement the server never answers fails at the "
          "answer timeout, and reset connects afresh with the same session",
          "[db][connection]") {
  silent_proxy proxy{server_dsn()};
  auto db = connect_or_fail(proxy.dsn(), bounds(1000ms, 800ms));
  // The answer timeout is the server's statement_timeout too.
  CHECK(first_value(db, "SHOW statement_timeout") == "800ms");
  REQUIRE(db.set_session_setup("SET application_name = 'timeouts-test'"));
  auto add_one = [&db] {
    auto rows = db.exec_prepared("add_one", "SELECT $1::int + 1", {"41"});
    return rows && rows->size() == 1 ? rows->at(0, 0) : std::string{};
  };
  REQUIRE(add_one() == "42");

  // A failover leaves this connection dangling.
  CHECK(check_given_up_after(db, proxy, 800ms) < 8.0);
  // The connection is closed: nothing is sent on it any more.
  auto after = db.exec("SELECT 1");
  REQUIRE_FALSE(after);
  CHECK(is(after.error(), persistence_error::unreachable));
  CHECK_THAT(describe(after.error()), Catch::Contains("not connected"));

  // New connections reach the server: reset sets the session up again and
  // prepares statements anew.
  REQUIRE(db.reset());
  CHECK(first_value(db, "SHOW statement_timeout") == "800ms");
  CHECK(first_value(db, "SHOW application_name") == "timeouts-test");
  CHECK(add_one() == "42");

  // While nothing answers, a reset gives up at the connect timeout.
  proxy.silence_all();
  auto start = steady::now();
  CHECK_FALSE(db.reset());
  CHECK(seconds_since(start) < 8.0);
  CHECK_FALSE(db.exec("SELECT 1"));
  proxy.answer_new();
  REQUIRE(db.reset());
  CHECK(add_one() == "42");
}

TEST_CASE("pg_connection: with an answer grace the server cancels at the "
          "answer timeout and this side waits the grace longer",
          "[db][connection]") {
  silent_proxy proxy{server_dsn()};
  auto timeouts = bounds(1000ms, 400ms);
  timeouts.answer_grace = 1500ms;
  auto db = connect_or_fail(proxy.dsn(), timeouts);
  CHECK(first_value(db, "SHOW statement_timeout") == "400ms");
  // A server that answers says it canceled: the grace is far longer than
  // a cancel takes, so the answer is the server's, not a closed connection.
  auto slow = db.exec("SELECT pg_sleep(5)");
  REQUIRE_FALSE(slow);
  CHECK(is(slow.error(), persistence_error::canceled));
  CHECK_THAT(describe(slow.error()), Catch::Contains("statement timeout"));
  CHECK(first_value(db, "SELECT 6") == "6");
  // A server that does not answer is given up on after both.
  check_given_up_after(db, proxy, 1900ms);
}

TEST_CASE("pg_connection: a statement that ends within the answer timeout is "
          "waited for, and its answer is PQexec's",
          "[db][connection]") {
  auto bounded = connect_or_fail(server_dsn(), bounds(0ms, 5000ms));
  auto unbounded = connect_or_fail(server_dsn());
  CHECK(first_value(unbounded, "SHOW statement_timeout") == "0");
  for (auto* db : {&bounded, &unbounded}) {
    CHECK(first_value(*db, "SELECT pg_sleep(0.3)::text || 'slept'")
          == "slept");
    // Several statements: the last one's rows.
    CHECK(first_value(*db, "SELECT 1; SELECT 2") == "2");
    // An error among them is the answer, and the session goes on.
    auto failed = db->exec("SELECT 1; SELECT no_such_column; SELECT 3");
    REQUIRE_FALSE(failed);
    CHECK(is(failed.error(), persistence_error::statement));
    CHECK_THAT(describe(failed.error()), Catch::Contains("no_such_column"));
    CHECK(first_value(*db, "SELECT 4") == "4");
  }
  // The server's side of the bound: a statement past it is cancelled, and
  // the connection stays usable.
  auto cancelled = bounded.exec("SET statement_timeout = 200; "
                                 "SELECT pg_sleep(3)");
  REQUIRE_FALSE(cancelled);
  CHECK(is(cancelled.error(), persistence_error::canceled));
  CHECK_THAT(describe(cancelled.error()),
             Catch::Contains("statement timeout"));
  CHECK(first_value(bounded, "SELECT 5") == "5");
}

TEST_CASE("pg_connection: over TCP a dangling connection is found dead by "
          "keepalive probes and unacknowledged data, unless the DSN says "
          "otherwise",
          "[db][connection]") {
  silent_proxy proxy{server_dsn()};
  auto option = [](int fd, int level, int name) {
    int value = -1;
    socklen_t len = sizeof value;
    REQUIRE(::getsockopt(fd, level, name, &value, &len) == 0);
    return value;
  };
  SECTION("the defaults") {
    auto db = connect_or_fail(proxy.dsn());
    auto fd = db.socket();
    REQUIRE(fd >= 0);
    CHECK(option(fd, SOL_SOCKET, SO_KEEPALIVE) == 1);
    CHECK(option(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 10);
    CHECK(option(fd, IPPROTO_TCP, TCP_KEEPINTVL) == 5);
    CHECK(option(fd, IPPROTO_TCP, TCP_KEEPCNT) == 3);
    CHECK(option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT) == 30000);
  }
  SECTION("the DSN's own") {
    auto db = connect_or_fail(proxy.dsn()
                              + " keepalives_idle=42 tcp_user_timeout=7000");
    auto fd = db.socket();
    REQUIRE(fd >= 0);
    CHECK(option(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 42);
    CHECK(option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT) == 7000);
    CHECK(option(fd, IPPROTO_TCP, TCP_KEEPCNT) == 3);
  }
}

TEST_CASE("pg_connection: an abort from another thread ends a wait for a "
          "silent server at once, and the connection connects no more",
          "[db][connection]") {
  silent_proxy proxy{server_dsn()};
  // No answer bound: without the abort this wait would never end.
  auto db = connect_or_fail(proxy.dsn());
  auto handle = db.abort_handle();
  proxy.silence_carried();
  std::optional<caf::expected<pg_rows>> result;
  std::thread waiter{[&] { result.emplace(db.exec("SELECT 1")); }};
  // Whether the abort comes before the statement is sent or while it waits
  // for the answer, the statement fails.
  handle->abort();
  waiter.join();
  REQUIRE(result);
  REQUIRE_FALSE(*result);
  CHECK(is(result->error(), persistence_error::unreachable));
  // New connections would be answered, but an aborted one stays closed.
  CHECK_FALSE(db.reset());
  CHECK_FALSE(db.exec("SELECT 1"));
}

TEST_CASE("pg_connection: answers_within says whether a connection still "
          "answers, and closes one left dangling",
          "[db][connection]") {
  silent_proxy proxy{server_dsn()};
  // No answer bound of its own: the check's bound applies alone.
  auto db = connect_or_fail(proxy.dsn());
  CHECK(db.answers_within(2000ms));
  CHECK(first_value(db, "SELECT 'still usable'") == "still usable");
  proxy.silence_carried();
  auto start = steady::now();
  CHECK_FALSE(db.answers_within(500ms));
  CHECK(seconds_since(start) < 8.0);
  CHECK(db.socket() == -1); // closed
  REQUIRE(db.reset());
  CHECK(db.answers_within(2000ms));
}

TEST_CASE("pg_connection: a prepared statement the session lost is prepared "
          "again by the next call",
          "[db][connection]") {
  auto db = connect_or_fail(server_dsn());
  auto add_one = [&db] {
    auto rows = db.exec_prepared("add_one", "SELECT $1::int + 1", {"41"});
    return rows && rows->size() == 1 ? rows->at(0, 0) : std::string{};
  };
  REQUIRE(add_one() == "42");
  // As a pooler that switched sessions, or an operator's DEALLOCATE, does:
  // the call that finds the statement gone fails, the next prepares it.
  REQUIRE(db.exec("DEALLOCATE add_one"));
  CHECK(add_one().empty());
  CHECK(add_one() == "42");
  CHECK(add_one() == "42");
}
