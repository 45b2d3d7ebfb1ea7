#pragma once

// A scratch database per test on the PostgreSQL that the ctest fixture
// started (its connection string is in the file named by
// VIDEOSTREAMS_TEST_DSN_FILE).

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>

#include <unistd.h>

#include "persistence/persistence_error.hpp"
#include "persistence/pg_connection.hpp"

namespace videostreams::testing {

inline std::string server_dsn() {
  auto file = std::getenv("VIDEOSTREAMS_TEST_DSN_FILE");
  REQUIRE(file != nullptr);
  std::ifstream in{file};
  std::string dsn;
  std::getline(in, dsn);
  REQUIRE_FALSE(dsn.empty());
  return dsn;
}

inline pg_connection connect_or_fail(const std::string& dsn) {
  auto db = pg_connection::connect(dsn);
  if (!db)
    FAIL(describe(db.error()));
  return std::move(*db);
}

/// A fresh, empty database for one test, dropped afterwards.
struct scratch_database {
  scratch_database() {
    static std::atomic<int> counter{0};
    name = "t" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    auto admin = connect_or_fail(server_dsn());
    REQUIRE(admin.exec("CREATE DATABASE " + name));
    dsn = server_dsn();
    dsn.replace(dsn.find("dbname=postgres"), 15, "dbname=" + name);
  }

  ~scratch_database() {
    if (auto admin = pg_connection::connect(server_dsn()))
      admin->exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
  }

  pg_connection connect() {
    return connect_or_fail(dsn);
  }

  /// The first column of the first row of `sql`, as text.
  std::string query(const std::string& sql) {
    auto db = connect();
    auto rows = db.exec(sql);
    if (!rows)
      FAIL(describe(rows.error()));
    return rows->size() == 0 ? std::string{} : rows->at(0, 0);
  }

  int count(const std::string& sql) {
    return std::stoi(query(sql));
  }

  /// True if `name` is a table (not a view) of the public schema.
  bool has_table(const std::string& name) {
    return query("SELECT relkind FROM pg_class WHERE relname = '" + name
                 + "' AND relnamespace = 'public'::regnamespace")
           == "r";
  }

  /// True if `name` is a view of the public schema.
  bool has_view(const std::string& name) {
    return query("SELECT relkind FROM pg_class WHERE relname = '" + name
                 + "' AND relnamespace = 'public'::regnamespace")
           == "v";
  }

  std::string name;
  std::string dsn;
};

} // namespace videostreams::testing
