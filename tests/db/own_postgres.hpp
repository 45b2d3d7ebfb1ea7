#pragma once

// A PostgreSQL of one test's own (scripts/test-postgres), which the test can
// halt and resume while the shared one keeps serving the other tests, and
// helpers for tests that take the database away from a running service.

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <string>

#include <boost/json.hpp>

#include "http_probe.hpp"

#include "persistence/pg_connection.hpp"
#include "persistence/schema.hpp"

namespace videostreams::testing {

/// A PostgreSQL of this test's own, migrated, which it can halt and resume.
struct own_postgres {
  explicit own_postgres(const std::string& name)
    : state(std::string{VIDEOSTREAMS_TEST_STATE_DIR} + "/" + name) {
    run("start");
    std::ifstream in{state + "/dsn"};
    std::getline(in, dsn);
    auto db = pg_connection::connect(dsn);
    REQUIRE(db);
    REQUIRE(migrate(*db));
  }

  ~own_postgres() {
    std::system((script + " stop " + state + " >/dev/null 2>&1").c_str());
  }

  /// `scripts/test-postgres VERB`: halt (a fast shutdown, keeping the
  /// data) or resume.
  void run(const std::string& verb) {
    REQUIRE(std::system((script + " " + verb + " " + state + " >/dev/null")
                          .c_str())
            == 0);
  }

  int count(const std::string& sql) {
    auto db = pg_connection::connect(dsn);
    REQUIRE(db);
    auto rows = db->exec(sql);
    REQUIRE(rows);
    return std::stoi(rows->at(0, 0));
  }

  std::string script = VIDEOSTREAMS_TEST_POSTGRES_SCRIPT;
  std::string state;
  std::string dsn;
};

/// The service's view of its database, from /readyz: "ok", "unreachable",
/// or "readyz <status>" when it is not ready.
inline std::string database_status(httplib::Client& cli) {
  auto r = blackbox::get(cli, "/readyz");
  if (r.status != 200)
    return "readyz " + std::to_string(r.status);
  return std::string{boost::json::parse(r.body).at("database").as_string()};
}

/// Another session locking every shard's lease row: each commit waits on
/// it, as on a server that stopped answering. Released by `ROLLBACK` or
/// when the connection closes.
inline pg_connection lock_every_shard(const std::string& dsn) {
  auto locker = pg_connection::connect(dsn);
  REQUIRE(locker);
  REQUIRE(locker->exec("BEGIN"));
  REQUIRE(locker->exec("SELECT * FROM shard_leases FOR UPDATE"));
  return std::move(*locker);
}

} // namespace videostreams::testing
