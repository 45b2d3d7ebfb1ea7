// Phantom streams (issue #11, item 6): the two measured ways a user ends up
// holding a `startstream` stream nobody holds, with the real binary, a real
// PostgreSQL and kill -9. Each test first shows that the phantom is there
// after the restart (so the path exists), then that it is gone once its
// lease (--legacy-stream-ttl, from its start) passed, the user back at the
// right count and able to start again, and the database agreeing.
//
// The lease is 15 s here: it must outlast everything between the grant and
// the first look after the restart (a request timeout, a kill, an outage, a
// start) on a busy machine, or the test could not show the phantom.

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "db_fixture.hpp"
#include "http_probe.hpp"
#include "own_postgres.hpp"
#include "service_process.hpp"
#include "session_probe.hpp"

using namespace videostreams;
using namespace videostreams::blackbox;
using namespace videostreams::testing;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t legacy_ttl_s = 15;
/// A lease may be swept up to a second after its deadline (docs/api.md's
/// promise 2); more on a busy machine, which this test does not measure.
constexpr auto expiry_wait = 20s;
/// RFC 3339 milliseconds and the two clocks' readings.
constexpr std::int64_t clock_slack_ms = 50;

std::vector<std::string> args(std::vector<std::string> more = {}) {
  std::vector<std::string> result{
    "--legacy-stream-ttl=" + std::to_string(legacy_ttl_s) + "s",
    "--max-streams=1"};
  result.insert(result.end(), more.begin(), more.end());
  return result;
}

/// A node on the database, ready to answer for users.
struct node {
  node(const std::string& dsn, std::vector<std::string> extra)
    : process(with_url(dsn, std::move(extra))),
      client(make_client(process.port(), true)) {
    REQUIRE(eventually([this] { return get(*client, "/readyz").status == 200; },
                       30s));
  }

  static std::vector<std::string> with_url(const std::string& dsn,
                                           std::vector<std::string> extra) {
    extra.push_back("--database-url=" + dsn);
    return extra;
  }

  void kill() {
    process.send_signal(SIGKILL);
    CHECK(process.stop().signal == SIGKILL);
  }

  service_process process;
  std::unique_ptr<httplib::Client> client;
};

/// A user's streams in the database (the operators' view), as
/// "key|has_id|expires_ms" lines.
struct stored_stream {
  std::string key;
  bool has_id = true;
  std::int64_t expires_ms = 0;
};

template <class Database>
std::vector<stored_stream> stored_streams(Database& db, std::uint64_t user) {
  auto conn = pg_connection::connect(db.dsn);
  REQUIRE(conn);
  auto rows = conn->exec(
    "SELECT stream_key, has_id, coalesce((extract(epoch FROM expires_at) * "
    "1000)::bigint, 0) FROM stream_sessions WHERE user_id = "
    + std::to_string(user) + " ORDER BY started_at");
  REQUIRE(rows);
  std::vector<stored_stream> result;
  for (int i = 0; i < rows->size(); ++i)
    result.push_back({rows->at(i, 0), rows->at(i, 1) == "t",
                      std::stoll(rows->at(i, 2))});
  return result;
}

/// The restarted node holds the phantom `stored` of `user`: counted, with
/// its stored expiry (not a fresh lease), and in the way of a new stream
/// (the limit is 1). Then it expires on its own, no earlier than its
/// deadline; the user starts again; the database agrees throughout.
template <class Database>
void check_phantom_heals(node& n, Database& db, std::uint64_t user,
                         const stored_stream& stored) {
  auto u = std::to_string(user);
  auto looked = wall_ms();
  INFO("first look " << stored.expires_ms - looked
                     << " ms before the phantom's expiry");
  auto first = require_listing(*n.client, u);
  REQUIRE(first.count == 1); // the phantom is there: the path exists
  REQUIRE(first.sessions.size() == 1);
  CHECK_FALSE(first.sessions[0].id.has_value());
  REQUIRE(first.sessions[0].expires_at_ms.has_value());
  // Restored with the expiry it was granted with, not a fresh lease.
  CHECK(*first.sessions[0].expires_at_ms >= stored.expires_ms - 2);
  CHECK(*first.sessions[0].expires_at_ms <= stored.expires_ms + 2);
  CHECK(get(*n.client, "/api/startstream/" + u).body == denied_body(1));

  // Gone once its lease passed, with no request for the user meanwhile
  // (and not before: the reading that shows it gone came back after the
  // deadline).
  std::int64_t gone_seen_ms = 0;
  REQUIRE(eventually(
    [&] {
      auto text = scrape(*n.client);
      if (metric_value(text, "videostreams_open_streams") != 0)
        return false;
      gone_seen_ms = wall_ms();
      return true;
    },
    std::chrono::milliseconds{stored.expires_ms - wall_ms()} + expiry_wait));
  CHECK(gone_seen_ms >= stored.expires_ms - clock_slack_ms);
  CHECK(metric_value(scrape(*n.client),
                     "videostreams_stream_expirations_total")
        == 1);
  CHECK(require_listing(*n.client, u).count == 0);
  // The expiry's close reaches the database.
  CHECK(eventually([&] { return stored_streams(db, user).empty(); }, 30s));

  // The user is back at the right count and may start again, for real.
  CHECK(get(*n.client, "/api/startstream/" + u).body == granted_body(1));
  CHECK(get(*n.client, "/api/startstream/" + u).body == denied_body(1));
  auto now = stored_streams(db, user);
  REQUIRE(now.size() == 1);
  CHECK(now[0].key != stored.key);
  CHECK_FALSE(now[0].has_id);
}

} // namespace

TEST_CASE("a startstream grant answered 503 whose commit lands after a kill "
          "-9 counts only until its lease ends",
          "[db]") {
  migrated_database d;
  constexpr std::uint64_t user = 7;
  auto asked = wall_ms();
  {
    // A short request timeout: the 503 is the point here.
    node a{d.dsn, args({"--request-timeout=1s"})};
    // Every commit now waits for this lock, as on a server that stalls.
    auto locker = lock_every_shard(d.dsn);
    asked = wall_ms();
    auto refused = get(*a.client, "/api/startstream/7");
    INFO(refused.status << " " << refused.body);
    REQUIRE(refused.status == 503);
    CHECK(refused.has_header("Retry-After"));
    // The slot was released in memory (by the commit's deadline, which
    // comes before the request's unless the machine stalls between them);
    // the commit is still on its way.
    CHECK(eventually([&] { return require_listing(*a.client, "7").count == 0; },
                     5s));
    REQUIRE(eventually(
      [&] {
        return d.count("SELECT count(*) FROM pg_stat_activity WHERE "
                       "datname = current_database() AND wait_event_type = "
                       "'Lock' AND query LIKE '%INSERT INTO stream_journal%'")
               == 1;
      },
      30s));
    // Killed before the close queued behind that commit could be written.
    a.kill();
    REQUIRE(locker.exec("ROLLBACK"));
  }
  // The stalled commit lands all the same: the database now holds a stream
  // whose grant was refused.
  REQUIRE(eventually([&] { return stored_streams(d, user).size() == 1; },
                     30s));
  auto phantom = stored_streams(d, user).at(0);
  CHECK_FALSE(phantom.has_id);
  CHECK(phantom.expires_ms >= asked + legacy_ttl_s * 1000 - clock_slack_ms);
  CHECK(phantom.expires_ms <= wall_ms() + legacy_ttl_s * 1000);

  node b{d.dsn, args()};
  check_phantom_heals(b, d, user, phantom);
}

TEST_CASE("a startstream close acknowledged during a database outage and "
          "lost in a kill -9 counts only until the lease ends",
          "[db]") {
  own_postgres pg{"phantom-close"};
  constexpr std::uint64_t user = 8;
  {
    node a{pg.dsn, args()};
    REQUIRE(get(*a.client, "/api/startstream/8").body == granted_body(1));
    REQUIRE(stored_streams(pg, user).size() == 1);
    pg.run("halt");
    REQUIRE(eventually(
      [&] { return database_status(*a.client) == "unreachable"; }, 30s));
    // Acknowledged from memory; its write waits for the database.
    CHECK(get(*a.client, "/api/endstream/8").body == closed_body(0));
    CHECK(require_listing(*a.client, "8").count == 0);
    CHECK(metric_value(scrape(*a.client),
                       "videostreams_persistence_queue_depth")
          >= 1);
    a.kill();
  }
  pg.run("resume");
  // The close was lost: the database still holds the stream.
  auto stored = stored_streams(pg, user);
  REQUIRE(stored.size() == 1);
  auto phantom = stored.at(0);
  CHECK_FALSE(phantom.has_id);

  node b{pg.dsn, args()};
  check_phantom_heals(b, pg, user, phantom);
}

TEST_CASE("a startstream stream keeps the expiry it was granted with across "
          "a restart, whatever the new node's legacy TTL",
          "[db]") {
  migrated_database d;
  constexpr std::uint64_t user = 9;
  std::int64_t granted_expiry = 0;
  std::int64_t v2_expiry = 0;
  std::int64_t stopped_at = 0;
  {
    node a{d.dsn, args({"--max-streams=3"})};
    REQUIRE(get(*a.client, "/api/startstream/9").body == granted_body(1));
    REQUIRE(send(*a.client, "POST", "/api/v2/users/9/streams",
                 R"({"sessionId":"tv","ttlSeconds":60})")
              .status
            == 201);
    auto l = require_listing(*a.client, "9");
    REQUIRE(l.count == 2);
    REQUIRE(l.sessions[0].expires_at_ms.has_value());
    REQUIRE(l.sessions[1].expires_at_ms.has_value());
    granted_expiry = *l.sessions[0].expires_at_ms;
    v2_expiry = *l.sessions[1].expires_at_ms;
    a.kill();
    stopped_at = wall_ms();
  }
  // The database has the expiry the node showed.
  auto stored = stored_streams(d, user);
  REQUIRE(stored.size() == 2);
  CHECK(stored[0].expires_ms >= granted_expiry - 2);
  CHECK(stored[0].expires_ms <= granted_expiry + 2);

  // A node with a TTL of an hour: a fresh lease would show that.
  auto restarted_at = wall_ms();
  node b{d.dsn, {"--legacy-stream-ttl=1h", "--max-streams=3"}};
  auto restored_at = wall_ms();
  auto l = require_listing(*b.client, "9");
  REQUIRE(l.count == 2);
  REQUIRE(l.sessions[0].expires_at_ms.has_value());
  CHECK_FALSE(l.sessions[0].id.has_value());
  INFO("restart took " << restored_at - stopped_at << " ms");
  CHECK(*l.sessions[0].expires_at_ms >= granted_expiry - 2);
  CHECK(*l.sessions[0].expires_at_ms <= granted_expiry + 2);
  // The v2 session, renewed by heartbeats that are never written, gets a
  // fresh TTL of its own 60 s from its load (docs/api.md's promise 3).
  REQUIRE(l.sessions[1].expires_at_ms.has_value());
  CHECK(*l.sessions[1].expires_at_ms >= restarted_at + 60'000 - clock_slack_ms);
  CHECK(*l.sessions[1].expires_at_ms <= restored_at + 60'000 + clock_slack_ms);
  CHECK(*l.sessions[1].expires_at_ms > v2_expiry);
  // And the legacy stream ends at its first deadline: 15 s after its
  // start, not an hour.
  std::int64_t gone_seen_ms = 0;
  REQUIRE(eventually(
    [&] {
      if (require_listing(*b.client, "9").count != 1)
        return false;
      gone_seen_ms = wall_ms();
      return true;
    },
    std::chrono::milliseconds{granted_expiry - wall_ms()} + expiry_wait));
  CHECK(gone_seen_ms >= granted_expiry - clock_slack_ms);
  CHECK(require_listing(*b.client, "9").ids()
        == std::vector<std::optional<std::string>>{std::string{"tv"}});
  CHECK(eventually([&] { return stored_streams(d, user).size() == 1; }, 30s));
}

TEST_CASE("startstream streams whose lease ran out while no node served "
          "them are closed at the start, in the database too",
          "[db]") {
  migrated_database d;
  std::int64_t started_11 = 0;
  {
    // Granted under a legacy TTL of 0 (an earlier version's default).
    node a{d.dsn, {"--legacy-stream-ttl=0"}};
    started_11 = wall_ms();
    REQUIRE(get(*a.client, "/api/startstream/11").body == granted_body(1));
    a.kill();
  }
  std::int64_t expires_10 = 0;
  {
    // Long enough that this node, which loads user 11's stream too, never
    // lives to close it (it would, 6 s after that start).
    node a{d.dsn, {"--legacy-stream-ttl=6s"}};
    REQUIRE(get(*a.client, "/api/startstream/10").body == granted_body(1));
    auto l = require_listing(*a.client, "10");
    REQUIRE(l.sessions.at(0).expires_at_ms.has_value());
    expires_10 = *l.sessions.at(0).expires_at_ms;
    a.kill();
  }
  REQUIRE(stored_streams(d, 10).size() == 1);
  REQUIRE(stored_streams(d, 11).size() == 1);
  CHECK(stored_streams(d, 11).at(0).expires_ms == 0);
  // Both leases (user 10's 6 s, user 11's: 2 s from its start, as the
  // next node sees it) run out while no node runs.
  REQUIRE(eventually(
    [&] {
      return wall_ms() > std::max(expires_10, started_11 + 2000) + 100;
    },
    30s));
  node b{d.dsn, {"--legacy-stream-ttl=2s"}};
  // User 10 does not count at the first look (a fresh lease from the load
  // would count it for 2 s more).
  CHECK(require_listing(*b.client, "10").count == 0);
  // User 11, never asked for, is closed by its shard's sweep; both closes
  // are written.
  CHECK(eventually(
    [&] {
      return stored_streams(d, 10).empty() && stored_streams(d, 11).empty();
    },
    30s));
  auto text = scrape(*b.client);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
  CHECK(metric_value(text, "videostreams_stream_expirations_total") == 2);
  // Only user 10's listing started an actor.
  CHECK(metric_value(text, "videostreams_user_activations_total") == 1);
  CHECK(require_listing(*b.client, "11").count == 0);
}
