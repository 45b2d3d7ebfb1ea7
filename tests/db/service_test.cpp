// The service with a database, as a process: recovery after kill -9 and
// after a graceful stop, both durability modes, readiness, fencing.

#include <catch2/catch.hpp>

#include <csignal>
#include <set>

#include <boost/json.hpp>

#include "db_fixture.hpp"
#include "http_probe.hpp"
#include "service_process.hpp"

#include "exposition.hpp"
#include "persistence/schema.hpp"

using namespace videostreams;
using namespace videostreams::blackbox;
using namespace videostreams::testing;
namespace json = boost::json;

namespace {

/// A node on the database, ready to answer for users.
struct node {
  node(const std::string& dsn, std::vector<std::string> extra = {})
    : process(with_url(dsn, std::move(extra))),
      client(make_client(process.port(), true)) {
    REQUIRE(eventually(
      [this] { return get(*client, "/readyz").status == 200; },
      std::chrono::seconds{30}));
  }

  static std::vector<std::string> with_url(const std::string& dsn,
                                           std::vector<std::string> extra) {
    extra.push_back("--database-url=" + dsn);
    return extra;
  }

  json::object list(std::uint64_t user) {
    auto r = get(*client,
                 "/api/v2/users/" + std::to_string(user) + "/streams");
    REQUIRE(r.status == 200);
    return json::parse(r.body).as_object();
  }

  int open(std::uint64_t user, const std::string& id) {
    return send(*client, "POST",
                "/api/v2/users/" + std::to_string(user) + "/streams",
                R"({"sessionId":")" + id + R"("})")
      .status;
  }

  service_process process;
  std::unique_ptr<httplib::Client> client;
};

} // namespace

TEST_CASE("sync: every acknowledged grant survives kill -9", "[db]") {
  migrated_database d;
  {
    node a{d.dsn};
    CHECK(get(*a.client, "/readyz").body
          == R"({"status":"ready","database":"ok"})");
    CHECK(a.open(1, "tv") == 201);
    CHECK(get(*a.client, "/api/startstream/1").body == granted_body(2));
    CHECK(get(*a.client, "/api/startstream/1").body == granted_body(3));
    a.process.send_signal(SIGKILL);
    CHECK_FALSE(a.process.stop().clean());
  }
  node b{d.dsn};
  auto listed = b.list(1);
  CHECK(listed.at("streamCount") == 3);
  // The limit holds across the restart: no fourth stream.
  CHECK(get(*b.client, "/api/startstream/1").body == denied_body(3));
  CHECK(b.open(1, "phone") == 409);
  // Restored leases got a fresh TTL.
  bool tv_found = false;
  for (auto& s : listed.at("sessions").as_array())
    if (s.at("sessionId") == "tv")
      tv_found = !s.at("expiresAt").is_null();
  CHECK(tv_found);
}

TEST_CASE("sync: grants survive kill -9 after the journal was folded",
          "[db]") {
  migrated_database d;
  {
    node a{d.dsn, {"--fold-min-changes=20"}};
    for (std::uint64_t user = 100; user < 160; ++user) {
      CHECK(a.open(user, "tv") == 201);
      if (user % 2 == 0)
        CHECK(get(*a.client, "/api/startstream/" + std::to_string(user)).body
              == granted_body(2));
      if (user % 3 == 0)
        CHECK(send(*a.client, "DELETE",
                   "/api/v2/users/" + std::to_string(user) + "/streams/tv")
                .status
              == 200);
    }
    // Folds run after the commits that made them due.
    CHECK(eventually([&] {
      return d.count("SELECT count(*) FROM shard_snapshots "
                     "WHERE position > 0")
             > 0;
    }));
    CHECK_THAT(get(*a.client, "/metrics").body,
               !Catch::Contains("videostreams_persistence_folds_total 0\n"));
    // Closes are written behind (a close lost in a crash only over-counts
    // until its lease ends, docs/api.md's promise 3): let the last ones land.
    CHECK(eventually([&] {
      return metric_value(get(*a.client, "/metrics").body,
                          "videostreams_persistence_queue_depth")
             == 0;
    }));
    a.process.send_signal(SIGKILL);
    CHECK_FALSE(a.process.stop().clean());
  }
  node b{d.dsn};
  for (std::uint64_t user = 100; user < 160; ++user) {
    auto expected = (user % 3 == 0 ? 0 : 1) + (user % 2 == 0 ? 1 : 0);
    CHECK(b.list(user).at("streamCount") == expected);
  }
}

TEST_CASE("closes are restored after a graceful stop flushed them", "[db]") {
  migrated_database d;
  {
    node a{d.dsn};
    CHECK(a.open(2, "a") == 201);
    CHECK(a.open(2, "b") == 201);
    CHECK(send(*a.client, "DELETE", "/api/v2/users/2/streams/a").status
          == 200);
    CHECK(get(*a.client, "/api/startstream/2").body == granted_body(2));
    CHECK(get(*a.client, "/api/endstream/2").body == closed_body(1));
    a.client.reset(); // an idle keep-alive connection delays the stop
    CHECK(a.process.stop().clean());
  }
  node b{d.dsn};
  auto listed = b.list(2);
  CHECK(listed.at("streamCount") == 1);
  CHECK(listed.at("sessions").as_array().at(0).at("sessionId") == "b");
  CHECK(d.count("SELECT count(*) FROM stream_sessions") == 1);
}

TEST_CASE("async: grants are answered at once and written behind", "[db]") {
  migrated_database d;
  {
    node a{d.dsn, {"--durability=async"}};
    for (int u = 10; u < 20; ++u)
      CHECK(a.open(static_cast<std::uint64_t>(u), "s") == 201);
    a.client.reset(); // an idle keep-alive connection delays the stop
    a.client.reset();
    CHECK(a.process.stop().clean()); // SIGTERM flushes
  }
  CHECK(d.count("SELECT count(*) FROM stream_sessions") == 10);
  node b{d.dsn, {"--durability=async"}};
  CHECK(b.list(15).at("streamCount") == 1);
}

TEST_CASE("limits are persisted and restored", "[db]") {
  migrated_database d;
  {
    node a{d.dsn, {"--admin-token=t"}};
    auto r = send(*a.client, "PUT", "/api/v2/users/3/limit",
                  R"({"maxStreams":1})", {{"Authorization", "Bearer t"}});
    CHECK(r.status == 200);
    a.client.reset(); // an idle keep-alive connection delays the stop
    CHECK(a.process.stop().clean());
  }
  node b{d.dsn};
  CHECK(get(*b.client, "/api/startstream/3").body == granted_body(1));
  CHECK(get(*b.client, "/api/startstream/3").body == denied_body(1));
}

TEST_CASE("db seed's streams serve as what they are: startstream streams "
          "without ids, sessions with theirs, and user 4's limit",
          "[db]") {
  migrated_database d;
  {
    auto db = d.connect();
    REQUIRE(seed(db));
  }
  node a{d.dsn};
  // User 1: one startstream stream, listed with a null id.
  auto user1 = a.list(1);
  auto& one = user1.at("sessions").as_array();
  REQUIRE(one.size() == 1);
  CHECK(one[0].as_object().at("sessionId").is_null());
  // User 2: the two named sessions.
  std::set<std::string> named;
  auto user2 = a.list(2);
  for (auto& s : user2.at("sessions").as_array())
    named.insert(json::value_to<std::string>(s.as_object().at("sessionId")));
  CHECK(named == std::set<std::string>{"phone", "tv-living-room"});
  // User 3: at the limit with three startstream streams, which endstream
  // closes.
  CHECK(get(*a.client, "/api/startstream/3").body == denied_body(3));
  CHECK(get(*a.client, "/api/endstream/3").body == closed_body(2));
  CHECK(get(*a.client, "/api/startstream/3").body == granted_body(3));
  // User 4: a limit of 5.
  for (int i = 1; i <= 5; ++i)
    CHECK(get(*a.client, "/api/startstream/4").body == granted_body(i));
  CHECK(get(*a.client, "/api/startstream/4").body == denied_body(5));
}

TEST_CASE("a node fenced out by a newer one cannot grant", "[db]") {
  migrated_database d;
  node a{d.dsn};
  CHECK(a.open(4, "x") == 201);
  // A second process takes every shard over (its epochs are newer).
  node b{d.dsn};
  auto stale = send(*a.client, "POST", "/api/v2/users/5/streams",
                    R"({"sessionId":"y"})");
  CHECK(stale.status == 503);
  CHECK(stale.has_header("Retry-After"));
  CHECK(d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 5")
        == 0);
  CHECK(b.open(5, "y") == 201);
  CHECK(d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 5")
        == 1);
}

TEST_CASE("the service refuses an unmigrated or unreachable database",
          "[db]") {
  scratch_database d;
  auto unmigrated = run_binary({"--port=0", "--database-url=" + d.dsn});
  CHECK(unmigrated.status.code == 1);
  CHECK_THAT(unmigrated.err, Catch::Contains("videostreams db migrate"));
  auto unreachable = run_binary(
    {"--port=0", "--database-url=host=/nonexistent port=1 user=x"});
  CHECK(unreachable.status.code == 1);
  CHECK_THAT(unreachable.err, Catch::Contains("database unreachable"));
}

TEST_CASE("a DATABASE_URL exported for another program, not migrated: the "
          "refusal says to migrate or how to run in memory",
          "[db]") {
  scratch_database d;
  const environment other_app{{"DATABASE_URL", d.dsn}};
  auto refused = run_binary({"--port=0", "--ops-port=0", "--cluster-port=0",
                             "--bind=127.0.0.1"},
                            other_app);
  INFO(refused.err);
  CHECK(refused.status.code == 1);
  CHECK_THAT(refused.err,
             Catch::Contains("the database schema is not migrated: run "
                             "`videostreams db migrate` first (the database "
                             "named by DATABASE_URL). To run in memory "
                             "without a database instead, start with "
                             "--database-url= (empty) or unset DATABASE_URL."));
  CHECK_THAT(refused.err, Catch::Contains("event=start_failed"));
  // Named by the flag, the advice names the flag.
  auto flagged = run_binary({"--port=0", "--ops-port=0", "--cluster-port=0",
                             "--bind=127.0.0.1", "--database-url=" + d.dsn});
  CHECK(flagged.status.code == 1);
  CHECK_THAT(flagged.err,
             Catch::Contains("(the database named by --database-url)"));
  // As advised: in memory, whatever DATABASE_URL says.
  service_process svc{{"--database-url="}, other_app};
  CHECK_THAT(svc.stderr_text(), Catch::Contains("mode in-memory"));
  CHECK(svc.stop().clean());
}

TEST_CASE("every metric family on /metrics has a sample from the start, "
          "with a database",
          "[db]") {
  migrated_database d;
  service_process svc{{"--database-url=" + d.dsn, "--node-id=db-m1"}};
  auto ops = make_client(svc.ops_port());
  // The first scrape, whatever the node is doing (it may still be taking
  // its shards).
  auto first = get(*ops, "/metrics");
  REQUIRE(first.status == 200);
  auto report = check_exposition(first.body);
  {
    std::string problems;
    for (auto& p : report.problems)
      problems += p + "\n";
    INFO(problems);
    CHECK(report.ok());
  }
  CHECK(report.value(R"(videostreams_build_info{version="0.1.0",)"
                     R"(node_id="db-m1",mode="database"})")
        == 1);
  // Once it serves, commits show in the histogram, and the database is up.
  REQUIRE(eventually([&] { return get(*ops, "/readyz").status == 200; },
                     std::chrono::seconds{30}));
  auto cli = make_client(svc.port());
  REQUIRE(get(*cli, "/api/startstream/1").status == 200);
  auto later = check_exposition(get(*ops, "/metrics").body);
  CHECK(later.ok());
  CHECK(later.value("videostreams_database_up") == 1);
  CHECK(later.value("videostreams_persistence_commit_duration_seconds_count")
        >= 1);
  CHECK(later.value("videostreams_persistence_batch_size_count") >= 1);
  CHECK(later.value("videostreams_cluster_peer_connected") == 0); // alone
  CHECK(svc.stop().clean());
}

TEST_CASE("SIGTERM while a fold waits for a lock: the fold is cancelled",
          "[db]") {
  migrated_database d;
  node a{d.dsn, {"--fold-min-changes=1"}};
  // Another session holds every snapshot row: a fold step waits for it
  // (up to the folder's lock timeout of 5 s), while commits go on.
  auto locker = d.connect();
  REQUIRE(locker.exec("BEGIN"));
  REQUIRE(locker.exec("SELECT * FROM shard_snapshots FOR UPDATE"));
  for (std::uint64_t user = 1; user <= 20; ++user)
    CHECK(a.open(user, "tv") == 201);
  REQUIRE(eventually([&] {
    return d.count("SELECT count(*) FROM pg_stat_activity "
                   "WHERE wait_event_type = 'Lock' "
                   "AND query LIKE '%INSERT INTO shard_snapshots%'")
           == 1;
  }));
  a.client.reset();
  auto asked = std::chrono::steady_clock::now();
  CHECK(a.process.stop(std::chrono::seconds{30}).clean());
  // Cancelled, not waited out: well under the lock timeout.
  CHECK(std::chrono::steady_clock::now() - asked < std::chrono::seconds{4});
  REQUIRE(locker.exec("ROLLBACK"));
  // Every grant was committed all the same.
  CHECK(d.count("SELECT count(*) FROM stream_sessions") == 20);
}
