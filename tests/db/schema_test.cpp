// Migrations, seed and the `db` commands against a real PostgreSQL. Every
// test works in a database of its own.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include <sys/wait.h>

#include "db_fixture.hpp"

#include "actors/shard_map.hpp"
#include "persistence/persistence_error.hpp"
#include "persistence/pg_connection.hpp"
#include "persistence/schema.hpp"

using namespace videostreams;
using videostreams::testing::scratch_database;

namespace {

struct command_result {
  int exit_code;
  std::string output;
};

/// Runs a shell command line, capturing stdout and stderr.
command_result run_shell(const std::string& line) {
  std::string cmd = line + " 2>&1";
  auto pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[512];
  while (auto n = std::fread(buf, 1, sizeof(buf), pipe))
    out.append(buf, n);
  auto status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

/// A database that cannot be reached: its socket directory does not exist.
constexpr const char* unreachable_dsn
  = "host=/nonexistent-dir port=5432 user=x";

/// Runs the built binary with `args` and neither variable that names a
/// database in its environment.
command_result run_binary(const std::string& args) {
  return run_shell(std::string{"env -u DATABASE_URL -u "
                               "VIDEOSTREAMS_DATABASE_URL "}
                   + VIDEOSTREAMS_BINARY + " " + args);
}

} // namespace

TEST_CASE("migrate creates the schema once and records it", "[db]") {
  scratch_database d;
  auto db = d.connect();
  auto applied = migrate(db);
  REQUIRE(applied);
  CHECK(*applied == std::vector<int>{1, 2, 3});
  CHECK(d.has_table("stream_journal"));
  CHECK(d.has_table("shard_snapshots"));
  CHECK(d.has_table("shard_leases"));
  CHECK(d.has_table("cluster_members"));
  CHECK(d.has_table("cluster_settings"));
  CHECK(d.has_view("stream_sessions"));
  CHECK(d.has_view("user_limits"));
  CHECK(d.count("SELECT count(*) FROM schema_migrations") == 3);
  auto again = migrate(db);
  REQUIRE(again);
  CHECK(again->empty());
  auto status = schema_status(db);
  REQUIRE(status);
  REQUIRE(status->size() == migrations().size());
  CHECK_FALSE(status->front().applied_at.empty());
}

TEST_CASE("rollback reverts the newest migration, then nothing", "[db]") {
  scratch_database d;
  auto db = d.connect();
  REQUIRE(migrate(db));
  auto reverted = rollback(db);
  REQUIRE(reverted);
  CHECK(*reverted == 3);
  CHECK(d.has_table("shard_epochs"));
  CHECK_FALSE(d.has_table("shard_leases"));
  CHECK_FALSE(d.has_table("cluster_members"));
  reverted = rollback(db);
  REQUIRE(reverted);
  CHECK(*reverted == 2);
  CHECK(d.has_table("stream_sessions"));
  CHECK_FALSE(d.has_table("stream_journal"));
  reverted = rollback(db);
  REQUIRE(reverted);
  CHECK(*reverted == 1);
  CHECK_FALSE(d.has_table("stream_sessions"));
  CHECK(d.count("SELECT count(*) FROM schema_migrations") == 0);
  auto nothing = rollback(db);
  REQUIRE(nothing);
  CHECK(*nothing == 0);
  auto status = schema_status(db);
  REQUIRE(status);
  CHECK(status->front().applied_at.empty());
  // Up again after down: the migrations are reversible.
  REQUIRE(migrate(db));
  CHECK(d.has_view("stream_sessions"));
}

TEST_CASE("migration 2 carries the streams and limits over, and back",
          "[db]") {
  scratch_database d;
  auto db = d.connect();
  REQUIRE(migrate(db));
  REQUIRE(rollback(db)); // version 2's shard_epochs
  REQUIRE(rollback(db)); // back to version 1's tables
  REQUIRE(db.exec(R"sql(
INSERT INTO stream_sessions VALUES
  (7, 'tv', true, '2026-01-01 00:00:00.123+00', 60,
   '2026-01-01 00:01:00.123+00', 3, 4),
  (7, '~legacy', false, '2026-01-01 00:00:00+00', 0, NULL, 3, 4),
  (8, 'a "quoted", {key}', true, '2026-01-02 00:00:00+00', 30,
   '2026-01-02 00:00:30+00', 5, 4);
INSERT INTO user_limits VALUES (7, 5, 3, 4), (9, 0, 6, 4))sql"));
  const std::string streams
    = "SELECT string_agg(concat_ws('|', user_id, stream_key, has_id, "
      "extract(epoch FROM started_at), ttl_seconds, "
      "extract(epoch FROM expires_at), shard), ';' ORDER BY user_id, "
      "stream_key) FROM stream_sessions";
  const std::string limits = "SELECT string_agg(concat_ws('|', user_id, "
                             "max_streams, shard), ';' ORDER BY user_id) "
                             "FROM user_limits";
  auto v1_streams = d.query(streams);
  auto v1_limits = d.query(limits);
  REQUIRE_FALSE(v1_streams.empty());
  REQUIRE(migrate(db));
  CHECK(d.has_view("stream_sessions"));
  CHECK(d.query(streams) == v1_streams);
  CHECK(d.query(limits) == v1_limits);
  CHECK(d.count("SELECT count(*) FROM shard_snapshots") == 3);
  REQUIRE(rollback(db));
  REQUIRE(rollback(db));
  CHECK(d.has_table("stream_sessions"));
  CHECK(d.query(streams) == v1_streams);
  CHECK(d.query(limits) == v1_limits);
}

TEST_CASE("rollback on a database never migrated rolls back nothing and "
          "creates nothing",
          "[db]") {
  scratch_database d;
  auto db = d.connect();
  auto nothing = rollback(db);
  REQUIRE(nothing);
  CHECK(*nothing == 0);
  CHECK_FALSE(d.has_table("schema_migrations"));
}

TEST_CASE("status on an empty database lists every migration as pending",
          "[db]") {
  scratch_database d;
  auto db = d.connect();
  auto status = schema_status(db);
  REQUIRE(status);
  REQUIRE(status->size() == migrations().size());
  for (auto& s : *status)
    CHECK(s.applied_at.empty());
  CHECK_FALSE(d.has_table("schema_migrations")); // status changes nothing
}

TEST_CASE("concurrent migrators apply each migration once", "[db]") {
  scratch_database d;
  std::atomic<int> ok{0};
  std::atomic<int> applied{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      auto db = pg_connection::connect(d.dsn);
      if (!db)
        return;
      if (auto r = migrate(*db)) {
        ++ok;
        applied += static_cast<int>(r->size());
      }
    });
  for (auto& t : threads)
    t.join();
  CHECK(ok == 4);
  CHECK(applied == 3);
  CHECK(d.count("SELECT count(*) FROM schema_migrations") == 3);
}

TEST_CASE("seed inserts users with open streams, idempotently", "[db]") {
  scratch_database d;
  auto db = d.connect();
  REQUIRE(migrate(db));
  REQUIRE(seed(db));
  auto started = d.query("SELECT string_agg(started_at::text, ',' ORDER BY "
                         "user_id, stream_key) FROM stream_sessions");
  REQUIRE(seed(db));
  // The second seed found everything there: it wrote nothing, and the
  // streams keep the start they had.
  CHECK(d.count("SELECT count(*) FROM stream_journal") == 1);
  CHECK(d.query("SELECT string_agg(started_at::text, ',' ORDER BY user_id, "
                "stream_key) FROM stream_sessions")
        == started);
  CHECK(d.count("SELECT count(*) FROM stream_sessions") == 6);
  CHECK(d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 3") == 3);
  CHECK(d.count("SELECT count(*) FROM stream_sessions WHERE has_id") == 2);
  CHECK(d.count("SELECT max_streams FROM user_limits WHERE user_id = 4") == 5);
  // Shards as the service computes them (mix64 % 128).
  CHECK(d.count("SELECT shard FROM user_limits WHERE user_id = 4")
        == static_cast<int>(shard_of(4, 128)));
}

TEST_CASE("the schema refuses rows that break its rules", "[db]") {
  scratch_database d;
  auto db = d.connect();
  REQUIRE(migrate(db));
  auto journal = [&db](const std::string& grant_user,
                       const std::string& limit_value) {
    return db.exec(
      "INSERT INTO stream_journal (grant_users, grant_keys, grant_has_ids, "
      "grant_started_ms, grant_ttls, grant_expires_ms, grant_shards, "
      "grant_epochs, close_users, close_keys, close_shards, limit_users, "
      "limit_values, limit_shards, limit_epochs, cleared_users, "
      "cleared_shards) VALUES ($1, '{a}', '{t}', '{0}', '{60}', '{0}', "
      "'{0}', '{0}', '{}', '{}', '{}', '{1}', $2, '{0}', '{0}', '{}', '{}')",
      {grant_user, limit_value});
  };
  REQUIRE(journal("{1}", "{5}"));
  auto bad_limit = journal("{1}", "{1001}");
  REQUIRE_FALSE(bad_limit);
  CHECK(bad_limit.error().code()
        == static_cast<std::uint8_t>(persistence_error::statement));
  CHECK_FALSE(journal("{-1}", "{5}"));
  // The operators' views are not for writing.
  CHECK_FALSE(db.exec("INSERT INTO user_limits VALUES (1, 5, 0, 0)"));
}

TEST_CASE("seed needs the schema", "[db]") {
  scratch_database d;
  auto db = d.connect();
  auto r = seed(db);
  REQUIRE_FALSE(r);
  CHECK_THAT(describe(r.error()), Catch::Contains("does not exist"));
}

TEST_CASE("db seed and db reshard on an unmigrated database say to migrate "
          "first and change nothing",
          "[db]") {
  scratch_database d;
  auto url = "--database-url='" + d.dsn + "'";
  for (std::string verb : {"seed", "reshard --shards=8"}) {
    auto r = run_binary("db " + verb + " " + url);
    INFO(verb << ": " << r.output);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains("run `videostreams db migrate` first"));
  }
  CHECK_FALSE(d.has_table("schema_migrations"));
  CHECK_FALSE(d.has_table("cluster_settings"));
}

TEST_CASE("a db command waits at most --lock-timeout for a lock another "
          "holds, then fails saying so and changes nothing",
          "[db]") {
  scratch_database d;
  auto url = "--database-url='" + d.dsn + "'";
  // Another migrator, holding the migrations' lock in its transaction.
  auto holder = d.connect();
  REQUIRE(holder.exec("BEGIN"));
  REQUIRE(holder.exec("SELECT pg_advisory_xact_lock(7316853917)"));
  auto r = run_binary("db migrate --lock-timeout=1s " + url);
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("lock timeout"));
  CHECK_THAT(r.output, Catch::Contains("--lock-timeout"));
  CHECK_FALSE(d.has_table("stream_journal"));
  // The connection tells a lock wait given up (SQLSTATE 55P03) from other
  // failures; that is how the command knows to say so.
  auto waiter = d.connect();
  REQUIRE(waiter.exec("SET lock_timeout = '100ms'"));
  auto waited = waiter.exec("SELECT pg_advisory_xact_lock(7316853917)");
  REQUIRE_FALSE(waited);
  CHECK(is(waited.error(), persistence_error::lock_timeout));
  CHECK_FALSE(is(waiter.exec("SELECT nonsense").error(),
                 persistence_error::lock_timeout));
  REQUIRE(holder.exec("COMMIT"));
  CHECK(run_binary("db migrate --lock-timeout=1s " + url).exit_code == 0);
  for (std::string bad : {"abc", "0", "2h", "-1s", ""}) {
    auto b = run_binary("db status --lock-timeout=" + bad + " " + url);
    INFO(bad << ": " << b.output);
    CHECK(b.exit_code == 2);
    CHECK_THAT(b.output, Catch::Contains("--lock-timeout"));
  }
}

TEST_CASE("a db command whose server stops answering gives up after "
          "--statement-timeout, saying so",
          "[db]") {
  scratch_database d;
  // Another migrator holds the migrations' lock, so the command's backend
  // sits waiting for it; the test then pauses that backend, as a paused
  // server (or one cut off by a network that still acknowledges) would:
  // the command's socket stays open and nothing answers, so only the
  // command's own bound can end its wait.
  auto holder = d.connect();
  REQUIRE(holder.exec("BEGIN"));
  REQUIRE(holder.exec("SELECT pg_advisory_xact_lock(7316853917)"));
  std::atomic<bool> done{false};
  command_result r{};
  std::thread command{[&] {
    // A hang is ended by `timeout`, so that the test fails instead.
    r = run_shell(std::string{"env -u DATABASE_URL -u "
                              "VIDEOSTREAMS_DATABASE_URL timeout -s KILL 120 "}
                  + VIDEOSTREAMS_BINARY
                  + " db migrate --statement-timeout=8s --database-url='"
                  + d.dsn + "'");
    done = true;
  }};
  struct join_on_exit {
    std::thread& t;
    ~join_on_exit() {
      if (t.joinable())
        t.join();
    }
  } joined{command};
  struct resume_on_exit {
    int pid = 0;
    ~resume_on_exit() {
      if (pid > 0)
        ::kill(pid, SIGCONT);
    }
  } paused;
  auto admin = d.connect();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{60};
  while (paused.pid == 0 && !done
         && std::chrono::steady_clock::now() < deadline) {
    auto rows = admin.exec("SELECT pid FROM pg_stat_activity WHERE datname = "
                           "current_database() AND wait_event_type = 'Lock'");
    REQUIRE(rows);
    if (rows->size() == 1 && ::kill(std::stoi(rows->at(0, 0)), SIGSTOP) == 0)
      paused.pid = std::stoi(rows->at(0, 0));
    else
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  // The server's own statement_timeout (8 s) can only have answered if
  // finding the backend took that long.
  REQUIRE(paused.pid > 0);
  REQUIRE_FALSE(done);
  command.join();
  INFO(r.output);
  CHECK(r.exit_code == 1); // 137: it waited for good and was killed
  CHECK_THAT(r.output,
             Catch::Contains("no answer from the database within 10000 ms"));
  CHECK_THAT(r.output, Catch::Contains("--statement-timeout"));
  CHECK_THAT(r.output, Catch::Contains("`videostreams db status` tells"));
  ::kill(paused.pid, SIGCONT);
  paused.pid = 0;
  REQUIRE(holder.exec("ROLLBACK"));
  CHECK_FALSE(d.has_table("stream_journal"));

  // A server that answers cancels the statement at the bound itself (its
  // statement_timeout), before the lock wait's own 1 minute, and gets to
  // say so: the command waits 2 s more than the bound.
  REQUIRE(holder.exec("BEGIN"));
  REQUIRE(holder.exec("SELECT pg_advisory_xact_lock(7316853917)"));
  auto canceled = run_binary("db migrate --statement-timeout=1s "
                             "--database-url='"
                             + d.dsn + "'");
  INFO(canceled.output);
  CHECK(canceled.exit_code == 1);
  CHECK_THAT(canceled.output, Catch::Contains("statement canceled by the "
                                              "server"));
  CHECK_THAT(canceled.output, Catch::Contains("--statement-timeout"));
  CHECK_THAT(canceled.output, Catch::Contains("rolled back"));
  REQUIRE(holder.exec("COMMIT"));
  CHECK_FALSE(d.has_table("stream_journal"));
  CHECK(run_binary("db migrate --statement-timeout=1s --database-url='" + d.dsn
                   + "'")
          .exit_code
        == 0);
}

TEST_CASE("videostreams db commands work on the binary", "[db]") {
  scratch_database d;
  auto url = "--database-url='" + d.dsn + "'";
  auto status = run_binary("db status " + url);
  CHECK(status.exit_code == 0);
  CHECK_THAT(status.output, Catch::Contains("pending"));
  auto up = run_binary("db migrate " + url);
  CHECK(up.exit_code == 0);
  CHECK_THAT(up.output, Catch::Contains("applied migration 1"));
  CHECK_THAT(up.output, Catch::Contains("applied migration 2"));
  CHECK_THAT(up.output, Catch::Contains("applied migration 3"));
  CHECK_THAT(run_binary("db migrate " + url).output,
             Catch::Contains("schema up to date"));
  CHECK(run_binary("db seed " + url).exit_code == 0);
  CHECK(d.count("SELECT count(*) FROM stream_sessions") == 6);
  CHECK_THAT(run_binary("db status " + url).output, Catch::Contains("applied"));
  CHECK_THAT(run_binary("db rollback " + url).output,
             Catch::Contains("rolled back migration 3"));
  CHECK_FALSE(d.has_table("cluster_members"));
  auto down = run_binary("db rollback " + url);
  CHECK(down.exit_code == 0);
  CHECK_THAT(down.output, Catch::Contains("rolled back migration 2"));
  CHECK(d.count("SELECT count(*) FROM stream_sessions") == 6); // a table again
  CHECK_THAT(run_binary("db rollback " + url).output,
             Catch::Contains("rolled back migration 1"));
  CHECK_FALSE(d.has_table("stream_sessions"));
}

TEST_CASE("videostreams db reads DATABASE_URL", "[db]") {
  scratch_database d;
  auto r = run_shell("env -u VIDEOSTREAMS_DATABASE_URL DATABASE_URL='" + d.dsn
                     + "' " + std::string{VIDEOSTREAMS_BINARY}
                     + " db migrate");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("applied migration 1"));
  CHECK(d.has_view("stream_sessions"));
}

TEST_CASE("videostreams db reads VIDEOSTREAMS_DATABASE_URL before "
          "DATABASE_URL, as the service does",
          "[db]") {
  scratch_database d;
  // DATABASE_URL names a database that is not there: only the other
  // variable can make this work.
  auto r = run_shell(std::string{"DATABASE_URL='"} + unreachable_dsn
                     + "' VIDEOSTREAMS_DATABASE_URL='" + d.dsn + "' "
                     + VIDEOSTREAMS_BINARY + " db migrate");
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("applied migration 1"));
  CHECK(d.has_view("stream_sessions"));
  // The command line wins over both.
  auto flag = run_shell("VIDEOSTREAMS_DATABASE_URL='" + d.dsn + "' "
                        + std::string{VIDEOSTREAMS_BINARY}
                        + " db status --database-url='" + unreachable_dsn
                        + "'");
  CHECK(flag.exit_code == 1);
  CHECK_THAT(flag.output, Catch::Contains("database unreachable"));
}

TEST_CASE("videostreams db: bad usage is 2, an unreachable database 1",
          "[db]") {
  CHECK(run_binary("db").exit_code == 2);
  CHECK(run_binary("db frobnicate --database-url=x").exit_code == 2);
  // One command only: a second word is not taken for it.
  auto two = run_binary("db status seed --database-url=x");
  CHECK(two.exit_code == 2);
  CHECK_THAT(two.output, Catch::Contains("unexpected argument 'seed'"));
  auto no_url = run_binary("db status");
  CHECK(no_url.exit_code == 2);
  CHECK_THAT(no_url.output, Catch::Contains("DATABASE_URL"));
  auto down = run_binary(std::string{"db status --database-url='"}
                         + unreachable_dsn + "'");
  CHECK(down.exit_code == 1);
  CHECK_THAT(down.output, Catch::Contains("database unreachable"));
}
