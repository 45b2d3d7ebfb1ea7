// The cluster's coordination in PostgreSQL against a real server: the lease
// store (shard leases and members), migration 3, the stored shard count,
// `videostreams db reshard` and what a node loads when it takes shards.
// Every test works in a database of its own.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "db_fixture.hpp"
#include "http_probe.hpp"
#include "loopback_listener.hpp"
#include "service_process.hpp"

#include "actors/shard_map.hpp"
#include "cluster/lease_store.hpp"
#include "persistence/persistence_error.hpp"
#include "persistence/schema.hpp"
#include "persistence/stream_store.hpp"

using namespace videostreams;
using namespace videostreams::blackbox;
using namespace videostreams::testing;
namespace json = boost::json;

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

/// A migrated database and two nodes' lease stores on it.
struct two_nodes {
  migrated_database d;
  std::unique_ptr<lease_store> a = make_pg_lease_store(d.connect());
  std::unique_ptr<lease_store> b = make_pg_lease_store(d.connect());
};

/// The lease of `shard` as `store` reads it (the shard must have a row).
lease_record lease_of(lease_store& store, std::uint32_t shard) {
  auto reading = store.read(shard + 1);
  REQUIRE(reading);
  for (auto& l : reading->leases)
    if (l.shard == shard)
      return l;
  FAIL("shard " << shard << " has no lease row");
  return {};
}

/// The member `node_id` as `store` reads it, if it is in the table.
std::optional<member_record> member_of(lease_store& store,
                                       const std::string& node_id) {
  auto reading = store.read(0);
  REQUIRE(reading);
  for (auto& m : reading->members)
    if (m.node_id == node_id)
      return m;
  return std::nullopt;
}

std::vector<std::uint32_t> sorted(std::vector<std::uint32_t> xs) {
  std::sort(xs.begin(), xs.end());
  return xs;
}

std::vector<std::uint32_t> shard_range(std::uint32_t first,
                                       std::uint32_t last) {
  std::vector<std::uint32_t> out;
  for (auto s = first; s <= last; ++s)
    out.push_back(s);
  return out;
}

stream_change grant(std::uint64_t user, std::string key, std::uint32_t shard,
                    std::uint32_t ttl = 60) {
  stream_change c;
  c.kind = change_kind::grant;
  c.user = user;
  c.key = std::move(key);
  c.started_at_ms = 1'767'225'600'000 + static_cast<std::int64_t>(user);
  c.ttl_seconds = ttl;
  c.expires_at_ms = ttl == 0 ? 0 : c.started_at_ms + ttl * 1000;
  c.shard = shard;
  return c;
}

stream_change legacy_grant(std::uint64_t user, std::string key,
                           std::uint32_t shard) {
  auto c = grant(user, std::move(key), shard, 0);
  c.has_id = false;
  return c;
}

stream_change close(std::uint64_t user, std::string key,
                    std::uint32_t shard) {
  auto c = grant(user, std::move(key), shard);
  c.kind = change_kind::close;
  return c;
}

stream_change limit(std::uint64_t user, std::uint32_t max,
                    std::uint32_t shard) {
  stream_change c;
  c.kind = change_kind::set_limit;
  c.user = user;
  c.max_streams = max;
  c.shard = shard;
  return c;
}

stream_change clear_limit(std::uint64_t user, std::uint32_t shard) {
  auto c = limit(user, 0, shard);
  c.kind = change_kind::clear_limit;
  return c;
}

/// Every open stream (`where` filters) through the operators' view, one
/// line per stream with every field, in key order.
std::string streams_text(scratch_database& d, const std::string& where = "") {
  return d.query(
    "SELECT coalesce(string_agg(concat_ws('|', user_id, stream_key, has_id, "
    "(extract(epoch FROM started_at) * 1000)::bigint, ttl_seconds, "
    "coalesce((extract(epoch FROM expires_at) * 1000)::bigint, 0)), ';' "
    "ORDER BY user_id, stream_key COLLATE \"C\"), '') FROM stream_sessions "
    + where);
}

/// Every own limit (`where` filters) through the operators' view.
std::string limits_text(scratch_database& d, const std::string& where = "") {
  return d.query("SELECT coalesce(string_agg(concat_ws('|', user_id, "
                 "max_streams), ';' ORDER BY user_id), '') FROM user_limits "
                 + where);
}

/// Streams and limits not on their shard under `shard_count`.
int misplaced_rows(scratch_database& d, std::uint32_t shard_count) {
  auto placed = d.connect().exec(
    "SELECT user_id, shard FROM stream_sessions UNION ALL "
    "SELECT user_id, shard FROM user_limits");
  REQUIRE(placed);
  int misplaced = 0;
  for (int i = 0; i < placed->size(); ++i)
    if (std::stoul(placed->at(i, 1))
        != shard_of(std::stoull(placed->at(i, 0)), shard_count))
      ++misplaced;
  return misplaced;
}

/// A shard's committed state in the form of `streams_text`/`limits_text`.
std::pair<std::string, std::string> texts_of(const committed_shard& shard) {
  std::map<std::pair<std::uint64_t, std::string>, committed_stream> streams(
    shard.streams.begin(), shard.streams.end());
  std::string s;
  for (auto& [id, row] : streams)
    s += (s.empty() ? "" : ";") + std::to_string(id.first) + "|" + id.second
         + "|" + (row.has_id ? "t" : "f") + "|"
         + std::to_string(row.started_ms) + "|"
         + std::to_string(row.ttl_seconds) + "|"
         + std::to_string(row.expires_ms);
  std::map<std::uint64_t, std::uint32_t> limits(shard.limits.begin(),
                                                shard.limits.end());
  std::string l;
  for (auto& [user, max] : limits)
    l += (l.empty() ? "" : ";") + std::to_string(user) + "|"
         + std::to_string(max);
  return {s, l};
}

/// What a single node running on the default 128 shards leaves behind: the
/// seed (users 1-4), and users 100-119 written by a store that held every
/// shard, partly folded into snapshots, partly still in the journal (with
/// closes, a stream without id and never expiring, a key that needs
/// quoting, limits set and cleared).
void populate_on_128_shards(scratch_database& d) {
  auto db = d.connect();
  REQUIRE(seed(db));
  fold_settings folds;
  folds.steps = 1; // one fold step covers every shard
  stream_store store{d.connect(), folds};
  REQUIRE(store.prepare_for_commits());
  own_shards(d, store, "old-node", shard_range(0, 127));
  auto at = [](std::uint64_t user) { return shard_of(user, 128); };
  std::vector<stream_change> first;
  for (std::uint64_t u = 100; u < 120; ++u) {
    for (std::uint64_t k = 0; k <= u % 3; ++k)
      first.push_back(grant(u, "s" + std::to_string(k), at(u), 3600));
    if (u % 4 == 0)
      first.push_back(limit(u, static_cast<std::uint32_t>(u % 7 + 1), at(u)));
  }
  first.push_back(grant(100, R"(q"u,o{t}e\d)", at(100), 3600));
  REQUIRE(all_committed(store.commit(first)));
  REQUIRE(store.fold());
  REQUIRE(all_committed(store.commit(
    {close(102, "s0", at(102)), legacy_grant(103, "~legacy", at(103)),
     clear_limit(104, at(104)), limit(105, 9, at(105))})));
  REQUIRE(d.count("SELECT count(*) FROM stream_journal") > 0);
  REQUIRE(d.count("SELECT count(*) FROM shard_snapshots WHERE position > 0")
          > 0);
}

/// Open streams of `user` in the database.
int streams_of(scratch_database& d, std::uint64_t user) {
  return d.count("SELECT count(*) FROM stream_sessions WHERE user_id = "
                 + std::to_string(user));
}

/// The whole lease table, as text.
std::string leases_text(scratch_database& d) {
  return d.query("SELECT string_agg(concat_ws('|', shard, owner, epoch, "
                 "expires_at, state), ';' ORDER BY shard) FROM shard_leases");
}

/// The whole snapshot table and journal, as text.
std::string snapshots_text(scratch_database& d) {
  return d.query("SELECT string_agg(concat_ws('|', shard, position, epoch, "
                 "users, keys, has_ids, started_ms, ttls, expires_ms, "
                 "limit_users, limit_values), ';' ORDER BY shard) "
                 "FROM shard_snapshots")
         + "/"
         + d.query("SELECT count(*) || '@' || coalesce(max(position), 0) "
                   "FROM stream_journal");
}

/// The version `rollback` reverted.
int rolled_back(pg_connection& db) {
  auto reverted = rollback(db);
  if (!reverted)
    FAIL(describe(reverted.error()));
  return *reverted;
}

std::string url_of(scratch_database& d) {
  return "--database-url=" + d.dsn;
}

} // namespace

// -- The lease store: shard leases ------------------------------------------

TEST_CASE("a lease store takes free shards under epoch 1, each with an "
          "empty snapshot",
          "[db]") {
  two_nodes n;
  auto taken = n.a->take("a", {0, 1, 2}, seconds{60});
  REQUIRE(taken);
  CHECK(*taken == shard_epochs{{0, 1}, {1, 1}, {2, 1}});
  for (std::uint32_t s = 0; s < 3; ++s) {
    auto l = lease_of(*n.a, s);
    CHECK(l.owner == "a");
    CHECK(l.epoch == 1);
    CHECK(l.state == "loading");
    CHECK(l.live);
    CHECK(l.expires_in_ms > 50'000);
    CHECK(l.expires_in_ms <= 60'000);
  }
  CHECK(n.d.count("SELECT count(*) FROM shard_snapshots") == 3);
  CHECK(n.d.count("SELECT count(*) FROM shard_snapshots WHERE position = 0 "
                  "AND cardinality(users) = 0 AND cardinality(keys) = 0 "
                  "AND cardinality(limit_users) = 0 AND shard IN (0, 1, 2)")
        == 3);
  // The other node sees them the same way.
  auto seen = n.b->read(3);
  REQUIRE(seen);
  REQUIRE(seen->leases.size() == 3);
  CHECK(seen->leases.at(1).owner == "a");
  // read names only the shards below the count asked for.
  auto fewer = n.b->read(2);
  REQUIRE(fewer);
  CHECK(fewer->leases.size() == 2);
}

TEST_CASE("a node cannot take another node's live lease, but takes it once "
          "expired under the next epoch",
          "[db]") {
  two_nodes n;
  REQUIRE(n.a->take("a", {0, 1}, seconds{60}));
  // A snapshot with state in it must survive a takeover.
  REQUIRE(n.d.connect().exec("UPDATE shard_snapshots SET position = 5, "
                             "users = '{7}', keys = '{k}', has_ids = '{t}', "
                             "started_ms = '{1}', ttls = '{0}', "
                             "expires_ms = '{0}' WHERE shard = 1"));
  auto refused = n.b->take("b", {0, 1}, seconds{60});
  REQUIRE(refused);
  CHECK(refused->empty());
  CHECK(lease_of(*n.b, 0).owner == "a");
  CHECK(lease_of(*n.b, 1).epoch == 1);
  // a stops renewing shard 1: b takes it, under an epoch one higher.
  expire_leases(n.d, {1});
  CHECK_FALSE(lease_of(*n.b, 1).live);
  CHECK(lease_of(*n.b, 1).expires_in_ms < 0);
  auto taken = n.b->take("b", {0, 1}, seconds{60});
  REQUIRE(taken);
  CHECK(*taken == shard_epochs{{1, 2}});
  auto l = lease_of(*n.b, 1);
  CHECK(l.owner == "b");
  CHECK(l.epoch == 2);
  CHECK(l.live);
  CHECK(lease_of(*n.b, 0).owner == "a");
  CHECK(n.d.query("SELECT position || '/' || users::text FROM shard_snapshots "
                  "WHERE shard = 1")
        == "5/{7}");
  // A shard never taken starts above every epoch there is.
  auto fresh = n.b->take("b", {9}, seconds{60});
  REQUIRE(fresh);
  CHECK(*fresh == shard_epochs{{9, 3}});
}

TEST_CASE("a node takes its own live lease back at once under the next "
          "epoch",
          "[db]") {
  two_nodes n;
  REQUIRE(n.a->take("a", {4}, seconds{60}));
  REQUIRE(n.a->renew("a", {{4, 1, "serving"}}, seconds{60}));
  // A restart under the same node id, with a store of its own.
  auto restarted = make_pg_lease_store(n.d.connect());
  auto again = restarted->take("a", {4}, seconds{60});
  REQUIRE(again);
  CHECK(*again == shard_epochs{{4, 2}});
  auto l = lease_of(*n.b, 4);
  CHECK(l.owner == "a");
  CHECK(l.epoch == 2);
  CHECK(l.state == "loading");
  CHECK(l.live);
  // The process before it holds epoch 1: fenced, it renews nothing.
  auto stale = n.a->renew("a", {{4, 1, "serving"}}, seconds{60});
  REQUIRE(stale);
  CHECK(stale->empty());
}

TEST_CASE("renew extends only the leases a node holds at the given epochs "
          "and sets their state",
          "[db]") {
  two_nodes n;
  REQUIRE(n.a->take("a", {0, 1, 2}, seconds{60}));
  REQUIRE(n.b->take("b", {3}, seconds{60})); // epoch 2 (above all)
  expire_leases(n.d, {1});
  REQUIRE(n.b->take("b", {1}, seconds{60})); // epoch 2
  auto renewed = n.a->renew("a",
                            {{0, 1, "serving"},
                             {1, 1, "serving"},  // b's now
                             {2, 7, "serving"},  // not this epoch
                             {3, 2, "serving"}}, // b's
                            seconds{120});
  REQUIRE(renewed);
  CHECK(sorted(*renewed) == std::vector<std::uint32_t>{0});
  auto l0 = lease_of(*n.b, 0);
  CHECK(l0.state == "serving");
  CHECK(l0.expires_in_ms > 110'000);
  CHECK(l0.expires_in_ms <= 120'000);
  for (std::uint32_t s : {1u, 2u, 3u}) {
    auto l = lease_of(*n.b, s);
    CHECK(l.state == "loading");
    CHECK(l.expires_in_ms <= 60'000);
  }
  CHECK(lease_of(*n.b, 1).owner == "b");
  CHECK(lease_of(*n.b, 3).owner == "b");
  // Several at once, each with its own state.
  renewed = n.a->renew("a", {{0, 1, "handing-off"}, {2, 1, "serving"}},
                       seconds{90});
  REQUIRE(renewed);
  CHECK(sorted(*renewed) == std::vector<std::uint32_t>{0, 2});
  CHECK(lease_of(*n.b, 0).state == "handing-off");
  CHECK(lease_of(*n.b, 2).state == "serving");
  CHECK(lease_of(*n.b, 2).expires_in_ms > 60'000);
  // Renewing nothing is no error.
  auto nothing = n.a->renew("a", {}, seconds{60});
  REQUIRE(nothing);
  CHECK(nothing->empty());
}

TEST_CASE("release frees only the leases held at the given epochs and keeps "
          "their epochs, and the next take raises them",
          "[db]") {
  two_nodes n;
  REQUIRE(n.a->take("a", {0, 1, 2}, seconds{60}));
  REQUIRE(n.b->take("b", {3}, seconds{60})); // epoch 2
  auto released = n.a->release("a", {{0, 1}, {1, 7}, {3, 2}});
  REQUIRE(released);
  CHECK(sorted(*released) == std::vector<std::uint32_t>{0});
  auto l0 = lease_of(*n.b, 0);
  CHECK(l0.owner.empty());
  CHECK(l0.epoch == 1);
  CHECK(l0.state == "unowned");
  CHECK_FALSE(l0.live);
  CHECK(l0.expires_in_ms == 0);
  CHECK(n.d.count("SELECT count(*) FROM shard_leases WHERE shard = 0 AND "
                  "owner IS NULL AND expires_at IS NULL")
        == 1);
  CHECK(lease_of(*n.b, 1).owner == "a");
  CHECK(lease_of(*n.b, 1).live);
  CHECK(lease_of(*n.b, 3).owner == "b");
  // Released once, it is not released (nor renewed) again by its old owner.
  auto twice = n.a->release("a", {{0, 1}});
  REQUIRE(twice);
  CHECK(twice->empty());
  auto renewed = n.a->renew("a", {{0, 1, "serving"}}, seconds{60});
  REQUIRE(renewed);
  CHECK(renewed->empty());
  // Free now: anyone takes it, under the next epoch.
  auto taken = n.b->take("b", {0}, seconds{60});
  REQUIRE(taken);
  CHECK(*taken == shard_epochs{{0, 2}});
  CHECK(lease_of(*n.a, 0).owner == "b");
  CHECK(lease_of(*n.a, 0).state == "loading");
}

TEST_CASE("concurrent takes of the same free shards give each shard to "
          "exactly one node",
          "[db]") {
  migrated_database d;
  constexpr int nodes = 4;
  const auto shards = shard_range(0, 63);
  std::vector<std::unique_ptr<lease_store>> stores;
  for (int i = 0; i < nodes; ++i)
    stores.push_back(make_pg_lease_store(d.connect()));
  // Three rounds: shards never taken, released, expired.
  for (int round = 1; round <= 3; ++round) {
    INFO("round " << round);
    std::vector<caf::expected<shard_epochs>> results(nodes, shard_epochs{});
    start_gate gate{nodes};
    std::vector<std::thread> threads;
    for (int i = 0; i < nodes; ++i)
      threads.emplace_back([&, i] {
        gate.arrive_and_wait();
        results[i] = stores[i]->take("n" + std::to_string(i), shards,
                                     seconds{60});
      });
    for (auto& t : threads)
      t.join();
    std::map<std::uint32_t, int> takers;
    for (int i = 0; i < nodes; ++i) {
      REQUIRE(results[i]);
      for (auto& [shard, epoch] : *results[i]) {
        ++takers[shard];
        CHECK(epoch == round);
        CHECK(lease_of(*stores[0], shard).owner == "n" + std::to_string(i));
      }
    }
    CHECK(takers.size() == shards.size());
    for (auto& [shard, count] : takers)
      CHECK(count == 1);
    if (round == 1) {
      for (int i = 0; i < nodes; ++i) {
        auto released = stores[i]->release("n" + std::to_string(i),
                                           *results[i]);
        REQUIRE(released);
        CHECK(released->size() == results[i]->size());
      }
    } else {
      expire_leases(d, shards);
    }
  }
}

// -- The lease store: members -----------------------------------------------

TEST_CASE("a member joins, heartbeats and leaves, and reads as alive with "
          "its fields",
          "[db]") {
  two_nodes n;
  member_self self;
  self.node_id = "a";
  self.incarnation = 1'700'000'000'123;
  self.advertise_host = "10.1.2.3";
  self.http_port = 8080;
  self.cluster_port = 9090;
  self.status = "joining";
  self.lease_ttl = milliseconds{5000};
  REQUIRE(n.a->join(self));
  auto m = member_of(*n.b, "a");
  REQUIRE(m);
  CHECK(m->incarnation == self.incarnation);
  CHECK(m->advertise_host == "10.1.2.3");
  CHECK(m->http_port == 8080);
  CHECK(m->cluster_port == 9090);
  CHECK(m->status == "joining");
  CHECK(m->alive);
  CHECK(m->expires_in_ms > 0);
  CHECK(m->expires_in_ms <= 5000);
  CHECK(m->last_heartbeat.size() == 24); // 2026-01-01T00:00:00.000Z
  CHECK(m->last_heartbeat.back() == 'Z');
  CHECK(m->last_heartbeat.at(10) == 'T');
  // A heartbeat renews the row and its status (and TTL).
  REQUIRE(n.d.connect().exec("UPDATE cluster_members SET heartbeat_at = "
                             "now() - interval '3 seconds'"));
  self.status = "up";
  self.lease_ttl = milliseconds{8000};
  auto beat = n.a->heartbeat(self);
  REQUIRE(beat);
  CHECK(*beat);
  m = member_of(*n.b, "a");
  REQUIRE(m);
  CHECK(m->status == "up");
  CHECK(m->expires_in_ms > 6000);
  CHECK(n.d.count("SELECT lease_ttl_ms FROM cluster_members") == 8000);
  REQUIRE(n.a->leave(self));
  CHECK_FALSE(member_of(*n.b, "a"));
  CHECK(n.d.count("SELECT count(*) FROM cluster_members") == 0);
  // A heartbeat after an operator removed the row enters it again.
  beat = n.a->heartbeat(self);
  REQUIRE(beat);
  CHECK(*beat);
  m = member_of(*n.b, "a");
  REQUIRE(m);
  CHECK(m->status == "up");
  CHECK(m->alive);
}

TEST_CASE("a process joining under the same node id takes the row over, and "
          "the one before it is superseded",
          "[db]") {
  two_nodes n;
  member_self first;
  first.node_id = "a";
  first.incarnation = 1;
  first.advertise_host = "127.0.0.1";
  first.http_port = 1000;
  first.cluster_port = 2000;
  first.status = "up";
  REQUIRE(n.a->join(first));
  auto second = first;
  second.incarnation = 2;
  second.http_port = 1001;
  second.cluster_port = 2001;
  second.status = "joining";
  auto restarted = make_pg_lease_store(n.d.connect());
  REQUIRE(restarted->join(second));
  auto m = member_of(*n.b, "a");
  REQUIRE(m);
  CHECK(m->incarnation == 2);
  CHECK(m->http_port == 1001);
  CHECK(m->cluster_port == 2001);
  CHECK(m->status == "joining");
  CHECK(n.d.count("SELECT count(*) FROM cluster_members") == 1);
  // The first process's heartbeat is refused and writes nothing.
  REQUIRE(n.d.connect().exec("UPDATE cluster_members SET heartbeat_at = "
                             "'2026-01-01 00:00:00+00'"));
  first.status = "leaving";
  first.lease_ttl = milliseconds{1234};
  auto beat = n.a->heartbeat(first);
  REQUIRE(beat);
  CHECK_FALSE(*beat);
  CHECK(n.d.query("SELECT concat_ws('|', incarnation, status, lease_ttl_ms, "
                  "http_port, heartbeat_at = '2026-01-01 00:00:00+00') "
                  "FROM cluster_members")
        == "2|joining|5000|1001|t");
  // Nor does it remove the new one when it leaves late.
  REQUIRE(n.a->leave(first));
  CHECK(n.d.count("SELECT count(*) FROM cluster_members") == 1);
  // The new one's heartbeats go on.
  beat = restarted->heartbeat(second);
  REQUIRE(beat);
  CHECK(*beat);
  CHECK(member_of(*n.b, "a")->alive);
  REQUIRE(restarted->leave(second));
  CHECK(n.d.count("SELECT count(*) FROM cluster_members") == 0);
}

TEST_CASE("a member whose heartbeat is older than its lease TTL reads as "
          "dead",
          "[db]") {
  two_nodes n;
  member_self live;
  live.node_id = "live";
  live.advertise_host = "127.0.0.1";
  live.lease_ttl = milliseconds{60'000};
  auto dead = live;
  dead.node_id = "dead";
  dead.lease_ttl = milliseconds{5000};
  REQUIRE(n.a->join(live));
  REQUIRE(n.b->join(dead));
  // Both heartbeats 10 s old: within the first's TTL, past the second's.
  REQUIRE(n.d.connect().exec("UPDATE cluster_members SET heartbeat_at = "
                             "now() - interval '10 seconds'"));
  auto reading = n.a->read(0);
  REQUIRE(reading);
  REQUIRE(reading->members.size() == 2);
  auto& d = reading->members.at(0); // ordered by node id
  auto& l = reading->members.at(1);
  CHECK(d.node_id == "dead");
  CHECK_FALSE(d.alive);
  CHECK(d.expires_in_ms < -4000);
  CHECK(d.expires_in_ms > -6000);
  CHECK(l.node_id == "live");
  CHECK(l.alive);
  CHECK(l.expires_in_ms > 40'000);
}

// -- Migration 3 and the stored shard count ---------------------------------

TEST_CASE("migration 3 turns a single node's shard epochs into leases and a "
          "stored shard count, and back",
          "[db]") {
  scratch_database d;
  auto db = d.connect();
  REQUIRE(migrate(db));
  REQUIRE(rolled_back(db) == 3);
  // Version 2 wrote no lease expiry (shards 0-7 here); 8-15 have one.
  REQUIRE(db.exec("INSERT INTO shard_epochs (shard, owner, epoch, "
                  "lease_expires_at) SELECT s, 'old', s * 3 + 1, "
                  "CASE WHEN s >= 8 THEN '2026-01-01 00:00:00+00'::timestamptz "
                  "END FROM generate_series(0, 15) AS s"));
  const std::string v2_rows
    = "SELECT string_agg(concat_ws('|', shard, owner, epoch), ';' "
      "ORDER BY shard) FROM ";
  auto before = d.query(v2_rows + "shard_epochs");
  auto applied = migrate(db);
  REQUIRE(applied);
  CHECK(*applied == std::vector<int>{3});
  CHECK(d.query(v2_rows + "shard_leases") == before);
  CHECK(d.count("SELECT count(*) FROM shard_leases") == 16);
  CHECK(d.count("SELECT count(*) FROM shard_leases WHERE epoch = shard * 3 + 1 "
                "AND owner = 'old' AND state = 'unowned' "
                "AND (expires_at = '2026-01-01 00:00:00+00' OR shard < 8) "
                "AND (expires_at IS NULL OR shard >= 8)")
        == 16);
  CHECK(d.query("SELECT string_agg(shard_count::text, ',') "
                "FROM cluster_settings")
        == "16");
  auto stored = stored_shard_count(db, 128);
  REQUIRE(stored);
  CHECK(*stored == 16);
  // The leases work like any: none is live, shard 3 (epoch 10, no expiry)
  // and shard 9 (epoch 28, expired) are taken under the next epoch.
  auto leases = make_pg_lease_store(d.connect());
  auto reading = leases->read(16);
  REQUIRE(reading);
  REQUIRE(reading->leases.size() == 16);
  for (auto& l : reading->leases) {
    CHECK(l.owner == "old");
    CHECK_FALSE(l.live);
  }
  auto taken = leases->take("new", {3, 9}, seconds{60});
  REQUIRE(taken);
  CHECK(*taken == shard_epochs{{3, 11}, {9, 29}});
  REQUIRE(leases->release("new", *taken));
  // Back: shard_epochs with the rows, owner NOT NULL again (a released
  // lease gets an empty owner).
  REQUIRE(rolled_back(db) == 3);
  CHECK(d.has_table("shard_epochs"));
  CHECK_FALSE(d.has_table("shard_leases"));
  CHECK_FALSE(d.has_table("cluster_settings"));
  CHECK_FALSE(d.has_table("cluster_members"));
  CHECK(d.query("SELECT is_nullable FROM information_schema.columns WHERE "
                "table_name = 'shard_epochs' AND column_name = 'owner'")
        == "NO");
  CHECK(d.count("SELECT count(*) FROM information_schema.columns WHERE "
                "table_name = 'shard_epochs' "
                "AND column_name = 'lease_expires_at'")
        == 1);
  CHECK(d.count("SELECT count(*) FROM shard_epochs") == 16);
  CHECK(d.count("SELECT count(*) FROM shard_epochs WHERE shard NOT IN "
                "(3, 9) AND owner = 'old' AND epoch = shard * 3 + 1")
        == 14);
  CHECK(d.query("SELECT string_agg(owner || '|' || epoch, ',' ORDER BY "
                "shard) FROM shard_epochs WHERE shard IN (3, 9)")
        == "|11,|29");
  // And up again.
  REQUIRE(migrate(db));
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 16);
}

TEST_CASE("on a fresh database the first node stores the shard count and "
          "later ones read it",
          "[db]") {
  migrated_database d;
  CHECK(d.count("SELECT count(*) FROM cluster_settings") == 0);
  auto db = d.connect();
  auto first = stored_shard_count(db, 64);
  REQUIRE(first);
  CHECK(*first == 64);
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 64);
  auto later = stored_shard_count(db, 128);
  REQUIRE(later);
  CHECK(*later == 64);
  CHECK(d.count("SELECT count(*) FROM cluster_settings") == 1);
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 64);
  // seed writes on the stored count.
  REQUIRE(seed(db));
  CHECK(d.count("SELECT shard FROM user_limits WHERE user_id = 4")
        == static_cast<int>(shard_of(4, 64)));
}

// -- db reshard ---------------------------------------------------------------

TEST_CASE("db reshard moves every stream and limit to its shard under the "
          "new count and frees every lease under a higher epoch, and a "
          "rollback and migrate keep the new count",
          "[db]") {
  migrated_database d;
  {
    // Shards 5 and 6 were taken twice more than the others: the epochs
    // differ.
    auto leases = make_pg_lease_store(d.connect());
    REQUIRE(leases->take("old-node", shard_range(0, 127), seconds{60}));
    REQUIRE(leases->take("old-node", {5, 6}, seconds{60}));
    REQUIRE(leases->take("old-node", {5, 6}, seconds{60}));
  }
  populate_on_128_shards(d);
  // The old layout's writer, still holding its epochs.
  stream_store stale{d.connect()};
  own_shards(d, stale, "old-node", shard_range(0, 127));
  auto streams_before = streams_text(d);
  auto limits_before = limits_text(d);
  auto stream_count = d.count("SELECT count(*) FROM stream_sessions");
  auto limit_count = d.count("SELECT count(*) FROM user_limits");
  auto max_epoch = d.count("SELECT max(epoch) FROM shard_leases");
  auto max_position = d.count(
    "SELECT greatest((SELECT max(position) FROM stream_journal), "
    "(SELECT max(position) FROM shard_snapshots))");
  REQUIRE(d.count("SELECT count(DISTINCT epoch) FROM shard_leases") > 1);
  REQUIRE(stream_count > 20);
  REQUIRE(limit_count >= 4);
  auto r = run_binary({"db", "reshard", "--shards=32", url_of(d)});
  INFO(r.out << r.err);
  CHECK(r.status.exited);
  CHECK(r.status.code == 0);
  CHECK_THAT(r.out, Catch::Contains("from 128 to 32 shards"));
  CHECK_THAT(r.out, Catch::Contains(std::to_string(stream_count)
                                    + " open streams and "
                                    + std::to_string(limit_count)
                                    + " limits moved"));
  // The same streams and limits, field by field ...
  CHECK(streams_text(d) == streams_before);
  CHECK(limits_text(d) == limits_before);
  // ... each on its shard under 32.
  CHECK(d.count("SELECT count(*) FROM stream_sessions")
          + d.count("SELECT count(*) FROM user_limits")
        == stream_count + limit_count);
  CHECK(misplaced_rows(d, 32) == 0);
  CHECK(d.count("SELECT count(*) FROM stream_journal") == 0);
  CHECK(d.count("SELECT count(*) FROM shard_snapshots") == 32);
  CHECK(d.count("SELECT count(*) FROM shard_snapshots WHERE shard < 32") == 32);
  CHECK(d.count("SELECT count(*) FROM shard_snapshots WHERE position < "
                + std::to_string(max_position))
        == 0);
  // The leases of shards 32..127 are gone, the others free.
  CHECK(d.count("SELECT count(*) FROM shard_leases") == 32);
  CHECK(d.count("SELECT count(*) FROM shard_leases WHERE shard < 32 AND "
                "owner IS NULL AND expires_at IS NULL AND state = 'unowned' "
                "AND epoch = "
                + std::to_string(max_epoch + 1))
        == 32);
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 32);
  // The old layout's writer cannot pass a fence any more.
  auto fenced = stale.commit({grant(1, "late", shard_of(1, 128))});
  REQUIRE(fenced);
  CHECK(fenced->lost.count(shard_of(1, 128)) == 1);
  CHECK(streams_text(d) == streams_before);
  // A node taking the new shards loads the same state.
  auto db = d.connect();
  auto loaded = read_committed_state(db, shard_range(0, 31));
  REQUIRE(loaded);
  std::size_t loaded_size = 0;
  for (auto& [shard, state] : loaded->shards)
    loaded_size += state.size();
  CHECK(loaded_size == static_cast<std::size_t>(stream_count + limit_count));
  CHECK(loaded->position >= max_position);
  // Migration 3 rolled back and applied again counts the shards from the
  // leases: 32 (with the old layout's leases left behind it counted 128,
  // and every user would have been looked for on the wrong shard).
  auto back = run_binary({"db", "rollback", url_of(d)});
  INFO(back.out << back.err);
  REQUIRE(back.status.code == 0);
  REQUIRE_THAT(back.out, Catch::Contains("rolled back migration 3"));
  REQUIRE(run_binary({"db", "migrate", url_of(d)}).status.code == 0);
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 32);
}

TEST_CASE("db reshard to more shards adds their leases and snapshots",
          "[db]") {
  migrated_database d;
  populate_on_128_shards(d);
  auto streams_before = streams_text(d);
  auto limits_before = limits_text(d);
  auto max_epoch = d.count("SELECT max(epoch) FROM shard_leases");
  auto r = run_binary({"db", "reshard", "--shards=200", url_of(d)});
  INFO(r.out << r.err);
  CHECK(r.status.code == 0);
  CHECK_THAT(r.out, Catch::Contains("from 128 to 200 shards"));
  CHECK(streams_text(d) == streams_before);
  CHECK(limits_text(d) == limits_before);
  CHECK(d.count("SELECT count(*) FROM stream_sessions WHERE shard >= 128")
        > 0);
  CHECK(d.count("SELECT count(*) FROM shard_snapshots") == 200);
  CHECK(d.count("SELECT count(*) FROM shard_leases WHERE owner IS NULL AND "
                "state = 'unowned' AND epoch = "
                + std::to_string(max_epoch + 1))
        == 200);
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 200);
}

TEST_CASE("db reshard takes the bounds of --shards, 1 and 65536, and moves "
          "every stream and limit there and back",
          "[db]") {
  migrated_database d;
  populate_on_128_shards(d);
  auto streams_before = streams_text(d);
  auto limits_before = limits_text(d);
  for (auto [to, from] : {std::pair{65536, 128}, std::pair{1, 65536},
                          std::pair{128, 1}}) {
    auto r = run_binary(
      {"db", "reshard", "--shards=" + std::to_string(to), url_of(d)});
    INFO(to << ": " << r.out << r.err);
    CHECK(r.status.code == 0);
    CHECK_THAT(r.out, Catch::Contains("from " + std::to_string(from) + " to "
                                      + std::to_string(to) + " shards"));
    CHECK(d.count("SELECT shard_count FROM cluster_settings") == to);
    CHECK(d.count("SELECT count(*) FROM shard_leases") == to);
    CHECK(streams_text(d) == streams_before);
    CHECK(limits_text(d) == limits_before);
    CHECK(misplaced_rows(d, to) == 0);
  }
}

TEST_CASE("db reshard without a valid --shards is bad usage and changes "
          "nothing",
          "[db]") {
  migrated_database d;
  auto db = d.connect();
  REQUIRE(seed(db));
  auto before = streams_text(d) + snapshots_text(d);
  for (auto args : std::vector<std::vector<std::string>>{
         {"db", "reshard"},
         {"db", "reshard", "--shards="},
         {"db", "reshard", "--shards=0"},
         {"db", "reshard", "--shards=65537"},
         {"db", "reshard", "--shards=-3"},
         {"db", "reshard", "--shards=-18446744073709551615"},
         {"db", "reshard", "--shards=+4"},
         {"db", "reshard", "--shards= 4"},
         {"db", "reshard", "--shards=12x"},
         {"db", "migrate", "--shards=32"}}) {
    args.push_back(url_of(d));
    auto r = run_binary(args);
    INFO(args.at(1) << " " << args.at(2) << ": " << r.err);
    CHECK(r.status.exited);
    CHECK(r.status.code == 2);
    CHECK_THAT(r.err, Catch::Contains("--shards"));
  }
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 128);
  CHECK(streams_text(d) + snapshots_text(d) == before);
}

namespace {

/// Makes `node_id` a live member (heartbeat now, lease TTL 60 s) through
/// `leases`, as a running node would be.
void join_for_a_minute(lease_store& leases, const std::string& node_id) {
  member_self alive;
  alive.node_id = node_id;
  alive.advertise_host = "127.0.0.1";
  alive.status = "up";
  alive.lease_ttl = milliseconds{60'000};
  REQUIRE(leases.join(alive));
}

} // namespace

TEST_CASE("db reshard is refused while a member is alive and changes "
          "nothing, and goes ahead once it is dead",
          "[db]") {
  migrated_database d;
  populate_on_128_shards(d);
  auto leases = make_pg_lease_store(d.connect());
  join_for_a_minute(*leases, "node-x");
  auto streams_before = streams_text(d);
  auto limits_before = limits_text(d);
  auto snapshots_before = snapshots_text(d);
  auto leases_before = leases_text(d);
  auto r = run_binary({"db", "reshard", "--shards=32", url_of(d)});
  INFO(r.out << r.err);
  CHECK(r.status.exited);
  CHECK(r.status.code == 1);
  CHECK_THAT(r.err, Catch::Contains("node-x"));
  CHECK_THAT(r.err, Catch::Contains("refused"));
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 128);
  CHECK(streams_text(d) == streams_before);
  CHECK(limits_text(d) == limits_before);
  CHECK(snapshots_text(d) == snapshots_before);
  CHECK(leases_text(d) == leases_before);
  CHECK(member_of(*leases, "node-x"));
  // Its heartbeat stops: dead members do not hold a reshard up.
  REQUIRE(d.connect().exec("UPDATE cluster_members SET heartbeat_at = "
                           "now() - interval '61 seconds'"));
  auto later = run_binary({"db", "reshard", "--shards=32", url_of(d)});
  INFO(later.out << later.err);
  CHECK(later.status.code == 0);
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 32);
  CHECK(streams_text(d) == streams_before);
}

TEST_CASE("db reshard to the count the cluster has moves nothing, even "
          "while a member is alive",
          "[db]") {
  migrated_database d;
  populate_on_128_shards(d);
  auto leases = make_pg_lease_store(d.connect());
  join_for_a_minute(*leases, "node-z");
  auto streams_before = streams_text(d);
  auto limits_before = limits_text(d);
  auto snapshots_before = snapshots_text(d);
  auto leases_before = leases_text(d);
  auto journal_before = d.count("SELECT count(*) FROM stream_journal");
  REQUIRE(journal_before > 0);
  auto r = run_binary({"db", "reshard", "--shards=128", url_of(d)});
  INFO(r.out << r.err);
  CHECK(r.status.describe() == "exit code 0");
  CHECK_THAT(r.out, Catch::Contains("the cluster has 128 shards already: "
                                    "nothing moved"));
  CHECK(streams_text(d) == streams_before);
  CHECK(limits_text(d) == limits_before);
  CHECK(snapshots_text(d) == snapshots_before);
  CHECK(leases_text(d) == leases_before);
  CHECK(d.count("SELECT count(*) FROM stream_journal") == journal_before);
  CHECK(member_of(*leases, "node-z"));
}

TEST_CASE("db rollback and db seed are refused while a member is alive and "
          "change nothing, and rollback goes ahead once it is dead",
          "[db]") {
  migrated_database d;
  auto leases = make_pg_lease_store(d.connect());
  join_for_a_minute(*leases, "node-y");
  auto r = run_binary({"db", "rollback", url_of(d)});
  INFO(r.out << r.err);
  CHECK(r.status.exited);
  CHECK(r.status.code == 1);
  CHECK_THAT(r.err, Catch::Contains("node-y"));
  CHECK_THAT(r.err, Catch::Contains("refused"));
  CHECK(d.count("SELECT max(version) FROM schema_migrations") == 3);
  // Nor may seed write past the live node's fence.
  auto seeded = run_binary({"db", "seed", url_of(d)});
  INFO(seeded.out << seeded.err);
  CHECK(seeded.status.code == 1);
  CHECK_THAT(seeded.err, Catch::Contains("node-y"));
  CHECK(d.count("SELECT count(*) FROM stream_journal") == 0);
  CHECK(member_of(*leases, "node-y"));
  REQUIRE(d.connect().exec("UPDATE cluster_members SET heartbeat_at = "
                           "now() - interval '61 seconds'"));
  auto later = run_binary({"db", "rollback", url_of(d)});
  INFO(later.out << later.err);
  CHECK(later.status.code == 0);
  CHECK(d.count("SELECT max(version) FROM schema_migrations") == 2);
  // Below version 3 there are no members to ask about.
  CHECK(run_binary({"db", "rollback", url_of(d)}).status.code == 0);
  CHECK(d.count("SELECT max(version) FROM schema_migrations") == 1);
}

TEST_CASE("db seed writes every row on its shard under the stored shard "
          "count",
          "[db]") {
  migrated_database d;
  auto db = d.connect();
  REQUIRE(reshard(db, 32));
  REQUIRE(seed(db));
  CHECK(d.count("SELECT count(*) FROM stream_sessions") == 6);
  CHECK(d.count("SELECT count(*) FROM user_limits") == 1);
  CHECK(misplaced_rows(d, 32) == 0);
}

TEST_CASE("db seed's rows stay when a node folds the shards it holds "
          "before anyone took the seeded ones",
          "[db]") {
  migrated_database d;
  auto db = d.connect();
  REQUIRE(seed(db));
  auto seeded = streams_text(d);
  REQUIRE(d.count("SELECT count(*) FROM stream_sessions") == 6);
  // A shard the seed did not touch (users 1-4 are on 4 shards at most).
  std::uint32_t other = 0;
  while (d.count("SELECT count(*) FROM (SELECT shard FROM stream_sessions "
                 "UNION ALL SELECT shard FROM user_limits) AS x WHERE shard = "
                 + std::to_string(other))
         > 0)
    ++other;
  // A node holding only that shard commits and folds it: the journal rows
  // every snapshot covers go, and the seed's row must not be one of them.
  fold_settings folds;
  folds.steps = 1;
  stream_store store{d.connect(), folds};
  REQUIRE(store.prepare_for_commits());
  own_shards(d, store, "node-a", {other});
  REQUIRE(all_committed(store.commit({grant(9, "a", other)})));
  REQUIRE(store.fold());
  CHECK(streams_text(d, "WHERE user_id <> 9") == seeded);
  CHECK(d.count("SELECT max_streams FROM user_limits WHERE user_id = 4")
        == 5);
}

// -- The service and the stored shard count ---------------------------------

TEST_CASE("the service refuses a --shards other than the stored count, "
          "naming both",
          "[db]") {
  migrated_database d;
  auto db = d.connect();
  REQUIRE(stored_shard_count(db, 64));
  auto r = run_binary({"--port=0", "--bind=127.0.0.1", "--cluster-port=0",
                       url_of(d)});
  INFO(r.err);
  CHECK(r.status.exited);
  CHECK(r.status.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--shards=128"));
  CHECK_THAT(r.err, Catch::Contains("64 shards"));
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 64);
  CHECK(d.count("SELECT count(*) FROM cluster_members") == 0);
  CHECK(d.count("SELECT count(*) FROM shard_leases") == 0);
}

TEST_CASE("a node whose cluster port is taken exits 1 saying so, its "
          "actors stopped (it used to hang for good)",
          "[db]") {
  migrated_database d;
  // Something else listens on the cluster port.
  testing::loopback_listener holder;
  auto port = std::to_string(holder.port());
  auto r = run_binary({"--port=0", "--bind=127.0.0.1", "--cluster-port=" + port,
                       url_of(d)});
  INFO(r.err);
  CHECK(r.status.describe() == "exit code 1");
  CHECK_THAT(r.err, Catch::Contains("cannot listen for other nodes on "
                                    "127.0.0.1:" + port));
}

TEST_CASE("after a reshard to 32 the service starts only with --shards=32 "
          "and serves the moved users from every shard",
          "[db]") {
  migrated_database d;
  populate_on_128_shards(d);
  {
    auto db = d.connect();
    auto done = reshard(db, 32);
    REQUIRE(done);
    CHECK(done->shards_before == 128);
    CHECK(done->shards_after == 32);
  }
  auto refused = run_binary({"--port=0", "--bind=127.0.0.1",
                             "--cluster-port=0", url_of(d)});
  INFO(refused.err);
  CHECK(refused.status.code == 2);
  CHECK_THAT(refused.err, Catch::Contains("--shards=128"));
  CHECK_THAT(refused.err, Catch::Contains("32 shards"));
  CHECK(d.count("SELECT count(*) FROM cluster_members") == 0);
  // What each user should be shown.
  std::map<std::uint64_t, int> counts;
  std::map<std::uint64_t, int> limits;
  int moved = 0;
  for (std::uint64_t u : {1, 2, 3, 4}) {
    counts[u] = streams_of(d, u);
    moved += shard_of(u, 128) != shard_of(u, 32) ? 1 : 0;
  }
  for (std::uint64_t u = 100; u < 120; ++u) {
    counts[u] = streams_of(d, u);
    moved += shard_of(u, 128) != shard_of(u, 32) ? 1 : 0;
  }
  auto own = d.connect().exec("SELECT user_id, max_streams FROM user_limits");
  REQUIRE(own);
  for (int i = 0; i < own->size(); ++i)
    limits[std::stoull(own->at(i, 0))] = std::stoi(own->at(i, 1));
  REQUIRE(moved > 5);
  REQUIRE(limits.at(4) == 5);
  // User 103's legacy stream was granted under a legacy TTL of 0 at a fixed
  // date long past: a node with a legacy TTL would close it at once
  // (README, Decisions), and this test is about the shards, not that.
  service_process p{std::vector<std::string>{
    url_of(d), "--shards=32", "--node-id=solo", "--legacy-stream-ttl=0"}};
  auto client = make_client(p.port(), true);
  REQUIRE(eventually([&] { return get(*client, "/readyz").status == 200; },
                     seconds{30}));
  for (auto& [user, count] : counts) {
    INFO("user " << user << " on shard " << shard_of(user, 32));
    auto r = get(*client, "/api/v2/users/" + std::to_string(user)
                            + "/streams");
    REQUIRE(r.status == 200);
    auto listed = json::parse(r.body).as_object();
    CHECK(listed.at("streamCount") == count);
    CHECK(listed.at("sessions").as_array().size()
          == static_cast<std::size_t>(count));
    auto own_limit = limits.find(user);
    CHECK(listed.at("maxStreams")
          == (own_limit == limits.end() ? 3 : own_limit->second));
  }
  // The key that needs quoting came through.
  bool quoted_found = false;
  auto r100 = json::parse(get(*client, "/api/v2/users/100/streams").body);
  for (auto& s : r100.at("sessions").as_array())
    quoted_found |= s.at("sessionId") == R"(q"u,o{t}e\d)";
  CHECK(quoted_found);
  // This node holds every one of the 32 shards.
  auto owns_all = [&] {
    auto r = get(*client, "/api/cluster");
    if (r.status != 200)
      return false;
    auto view = json::parse(r.body).as_object();
    auto& shards = view.at("shards").as_array();
    if (view.at("shardCount") != 32 || shards.size() != 32)
      return false;
    std::set<std::int64_t> seen;
    for (auto& s : shards) {
      if (s.at("owner") != "solo")
        return false;
      seen.insert(s.at("shard").as_int64());
    }
    return seen.size() == 32 && *seen.begin() == 0 && *seen.rbegin() == 31;
  };
  CHECK(eventually(owns_all, seconds{30}));
  INFO(get(*client, "/api/cluster").body);
  CHECK(d.count("SELECT count(*) FROM shard_leases WHERE shard < 32 "
                "AND owner = 'solo'")
        == 32);
  CHECK(d.count("SELECT count(*) FROM shard_leases WHERE shard >= 32 "
                "AND owner IS NOT NULL")
        == 0);
  // While it runs, no reshard.
  auto busy = run_binary({"db", "reshard", "--shards=16", url_of(d)});
  CHECK(busy.status.code == 1);
  CHECK_THAT(busy.err, Catch::Contains("solo"));
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 32);
  client.reset(); // an idle keep-alive connection delays the stop
  CHECK(p.stop(seconds{30}).clean());
}

TEST_CASE("a node whose cluster was resharded under it stops and exits 1, "
          "and a restart with the old count is refused",
          "[db]") {
  // A reshard needs every node stopped, but a node that read the stored
  // count just before it committed joins under the old layout: it must
  // find out at its first read of the cluster, serve nothing, and exit.
  migrated_database d;
  service_process node{{"--database-url=" + d.dsn}};
  auto cli = make_client(node.port(), true);
  REQUIRE(eventually([&] { return get(*cli, "/readyz").status == 200; },
                     seconds{30}));
  CHECK(get(*cli, "/api/startstream/1").status == 200);
  REQUIRE(d.connect().exec("UPDATE cluster_settings SET shard_count = 32"));
  auto status = node.wait_for_exit();
  INFO(node.stderr_text());
  CHECK(status.describe() == "exit code 1");
  CHECK_THAT(node.stderr_text(),
             Catch::Contains("| event=out_of_service ")
               && Catch::Contains("restart it with --shards=32"));
  // Restarted as it was, it refuses to start, saying both numbers.
  auto again = run_binary({"--port=0", "--ops-port=-1", "--cluster-port=0",
                           "--database-url=" + d.dsn});
  INFO(again.err);
  CHECK(again.status.describe() == "exit code 2");
  CHECK_THAT(again.err, Catch::Contains("--shards=128 differs from the 32 "
                                        "shards"));
}

// -- What a node loads when it takes shards ----------------------------------

namespace {

/// A store that holds shards 0-3 and has committed batches to all of them,
/// shards 0 and 1 folded in between (the others only in the journal).
/// User `100 * shard + i` lives on `shard`.
struct loaded_shards {
  loaded_shards() {
    fold_settings folds;
    folds.steps = 2; // a step folds two of the four shards
    store = std::make_unique<stream_store>(d.connect(), folds);
    REQUIRE(store->prepare_for_commits());
    own_shards(d, *store, "node-a", {0, 1, 2, 3});
    std::vector<stream_change> first, second, third, fourth;
    for (std::uint32_t s = 0; s < 4; ++s) {
      std::uint64_t u = 100 * s;
      first.push_back(grant(u + 1, "a", s));
      first.push_back(grant(u + 1, "b", s, 3600));
      first.push_back(legacy_grant(u + 2, "~x", s));
      first.push_back(limit(u + 3, 4, s));
      first.push_back(limit(u + 9, 2, s));
      second.push_back(close(u + 1, "a", s));
      second.push_back(grant(u + 1, "b", s, 120)); // a new TTL
      second.push_back(grant(u + 4, "c", s));
      second.push_back(clear_limit(u + 3, s));
      second.push_back(limit(u + 5, 0, s));
    }
    for (std::uint32_t s : {1u, 2u}) {
      third.push_back(grant(100 * s + 6, R"(k"{,}\)", s, 30));
      third.push_back(close(100 * s + 4, "c", s));
    }
    for (std::uint32_t s : {0u, 3u}) {
      fourth.push_back(grant(100 * s + 7, "z", s));
      fourth.push_back(limit(100 * s + 8, 9, s));
    }
    REQUIRE(all_committed(store->commit(first)));
    auto job = store->take_fold_step();
    REQUIRE(job.shards.size() == 2);
    REQUIRE(job.shards.at(0).shard == 0);
    REQUIRE(job.shards.at(1).shard == 1);
    REQUIRE(store->write_fold(job));
    REQUIRE(all_committed(store->commit(second)));
    REQUIRE(all_committed(store->commit(third)));
    REQUIRE(all_committed(store->commit(fourth)));
    REQUIRE(d.count("SELECT count(*) FROM shard_snapshots "
                    "WHERE position > 0 AND shard IN (0, 1)")
            == 2);
    REQUIRE(d.count("SELECT count(*) FROM shard_snapshots "
                    "WHERE position > 0")
            == 2);
    last_commit = std::stoll(
      d.query("SELECT max(position) FROM stream_journal"));
  }

  migrated_database d;
  std::unique_ptr<stream_store> store;
  std::int64_t last_commit = 0;
};

} // namespace

TEST_CASE("read_committed_state returns exactly the committed streams and "
          "limits of the shards asked for",
          "[db]") {
  loaded_shards f;
  auto db = f.d.connect();
  auto state = read_committed_state(db, {1, 2});
  REQUIRE(state);
  std::set<std::uint32_t> keys;
  for (auto& [shard, _] : state->shards)
    keys.insert(shard);
  CHECK(keys == std::set<std::uint32_t>{1, 2});
  for (std::uint32_t s : {1u, 2u}) {
    INFO("shard " << s);
    auto where = "WHERE shard = " + std::to_string(s);
    auto expected_streams = streams_text(f.d, where);
    auto expected_limits = limits_text(f.d, where);
    REQUIRE_FALSE(expected_streams.empty());
    REQUIRE_FALSE(expected_limits.empty());
    auto [streams, limits] = texts_of(state->shards.at(s));
    CHECK(streams == expected_streams);
    CHECK(limits == expected_limits);
    // Nothing of another shard's users.
    for (auto& [id, row] : state->shards.at(s).streams)
      CHECK(id.first / 100 == s);
    for (auto& [user, max] : state->shards.at(s).limits)
      CHECK(user / 100 == s);
  }
  CHECK(state->position >= f.last_commit);
  // One shard alone reads the same as with the other.
  auto one = read_committed_state(db, {2});
  REQUIRE(one);
  CHECK(one->shards.size() == 1);
  CHECK(texts_of(one->shards.at(2)) == texts_of(state->shards.at(2)));
  // A shard without any state reads as empty, not as missing.
  auto none = read_committed_state(db, {77});
  REQUIRE(none);
  REQUIRE(none->shards.count(77) == 1);
  CHECK(none->shards.at(77).size() == 0);
  CHECK(none->position >= f.last_commit);
}

TEST_CASE("user_records gives every restored session with an id a fresh TTL "
          "from the given clock",
          "[db]") {
  loaded_shards f;
  auto db = f.d.connect();
  auto state = read_committed_state(db, {0, 1, 2, 3});
  REQUIRE(state);
  clock_reading now;
  now.mono_ns = 987'654'321'000;
  now.wall_ms = 1'800'000'000'000;
  for (auto& [shard, committed] : state->shards) {
    INFO("shard " << shard);
    auto records = user_records(committed, now, 0);
    std::size_t sessions = 0;
    std::size_t limits = 0;
    for (auto& [user, record] : records) {
      sessions += record.sessions().size();
      auto own = committed.limits.find(user);
      if (own == committed.limits.end()) {
        CHECK_FALSE(record.own_limit());
      } else {
        ++limits;
        CHECK(record.own_limit() == own->second);
      }
      for (auto& s : record.sessions()) {
        auto row = committed.streams.find({user, s.id});
        REQUIRE(row != committed.streams.end());
        CHECK(s.started_at_ms == row->second.started_ms);
        CHECK(s.ttl_seconds == row->second.ttl_seconds);
        CHECK(s.is_legacy() == !row->second.has_id);
        CHECK(s.expires_at_ns
              == (s.ttl_seconds == 0
                    ? 0
                    : now.mono_ns
                        + static_cast<std::int64_t>(s.ttl_seconds)
                            * 1'000'000'000));
      }
    }
    CHECK(sessions == committed.streams.size());
    CHECK(limits == committed.limits.size());
  }
  // The stream whose TTL changed to 120 s and the one that never expires.
  auto records = user_records(state->shards.at(2), now, 0);
  auto& renewed = records.at(201).sessions();
  REQUIRE(renewed.size() == 1);
  CHECK(renewed.at(0).id == "b");
  CHECK(renewed.at(0).expires_at_ns == now.mono_ns + 120'000'000'000);
  auto& legacy = records.at(202).sessions();
  REQUIRE(legacy.size() == 1);
  CHECK(legacy.at(0).expires_at_ns == 0);
  CHECK(records.at(205).own_limit() == 0u);
  CHECK(records.at(205).sessions().empty());
}

TEST_CASE("user_records restores a startstream stream at the expiry it was "
          "granted with, not a fresh lease",
          "[db]") {
  migrated_database d;
  auto store = std::make_unique<stream_store>(d.connect());
  REQUIRE(store->prepare_for_commits());
  own_shards(d, *store, "node-a", {0});
  auto legacy = [](std::uint64_t user, std::uint32_t ttl) {
    auto c = grant(user, "~" + std::to_string(user), 0, ttl);
    c.has_id = false;
    return c;
  };
  // Started at S + user ms (see grant()); stored expiry S + user + TTL,
  // but for user 15: its node's wall clock stepped between the start and
  // the lease (or a version 1 row carried over), so its expiry is not
  // start + TTL. The stored expiry is what was promised.
  auto stepped = legacy(15, 3600);
  stepped.expires_at_ms = stepped.started_at_ms + 1'800'000;
  REQUIRE(all_committed(store->commit({
    legacy(11, 3600), // expires in the future
    legacy(12, 60),   // expired while nobody served the shard
    legacy(13, 0),    // granted under --legacy-stream-ttl=0
    grant(14, "tv", 0, 60),
    stepped,
  })));
  auto db = d.connect();
  auto state = read_committed_state(db, {0});
  REQUIRE(state);
  auto& shard = state->shards.at(0);
  const std::int64_t s = 1'767'225'600'000;
  clock_reading now;
  now.mono_ns = 987'654'321'000;
  now.wall_ms = s + 1'000'000; // 1000 s after the starts
  auto ns = [](std::int64_t ms) { return ms * 1'000'000; };
  auto only = [](const std::map<std::uint64_t, user_streams>& records,
                 std::uint64_t user) {
    auto& sessions = records.at(user).sessions();
    REQUIRE(sessions.size() == 1);
    return sessions.front();
  };

  auto records = user_records(shard, now, 0);
  // Its stored expiry, S + 11 + 3600 s, on this node's monotonic clock.
  auto a = only(records, 11);
  CHECK(a.ttl_seconds == 3600);
  CHECK(a.expires_at_ns == now.mono_ns + ns(s + 11 + 3'600'000 - now.wall_ms));
  // The stored expiry, not start + TTL: S + 15 + 1800 s.
  CHECK(only(records, 15).expires_at_ns
        == now.mono_ns + ns(s + 15 + 1'800'000 - now.wall_ms));
  // Past its expiry: due at once, so the first sweep closes it.
  auto b = only(records, 12);
  CHECK(b.expires_at_ns == now.mono_ns);
  auto swept = records.at(12);
  CHECK(swept.expire(now.mono_ns) == 1);
  CHECK(swept.count() == 0);
  // Never expires while the legacy TTL is 0 ...
  CHECK(only(records, 13).expires_at_ns == 0);
  CHECK(only(records, 13).ttl_seconds == 0);
  // ... and a session with an id gets a fresh TTL (heartbeats are not
  // written, so its stored expiry may be long renewed).
  CHECK(only(records, 14).expires_at_ns == now.mono_ns + ns(60'000));

  // A node with a legacy TTL gives a stream stored without one that TTL
  // from its start: 6 h after S + 13 ms, or at once when that has passed.
  auto healed = user_records(shard, now, 21600);
  auto c = only(healed, 13);
  CHECK(c.ttl_seconds == 21600);
  CHECK(c.expires_at_ns == now.mono_ns + ns(s + 13 + 21'600'000 - now.wall_ms));
  CHECK(only(user_records(shard, now, 600), 13).expires_at_ns == now.mono_ns);
  // Streams stored with a TTL keep theirs, whatever the node's.
  CHECK(only(healed, 11).expires_at_ns == a.expires_at_ns);
  CHECK(only(healed, 11).ttl_seconds == 3600);
}

// -- Found by these tests, fixed ----------------------------------------------

// Version 2 took every shard of its --shards at each start and never removed
// a row, so the row count is the largest --shards a node ever ran with, not
// the one its data is laid out for; the shards of the last start are those
// at the highest epoch.
TEST_CASE("migration 3 stores the shard count the single node last ran "
          "with",
          "[db]") {
  scratch_database d;
  auto db = d.connect();
  REQUIRE(migrate(db));
  REQUIRE(rolled_back(db) == 3);
  // One start with 256 shards, then four with 128.
  REQUIRE(db.exec("INSERT INTO shard_epochs (shard, owner, epoch) "
                  "SELECT s, 'old', CASE WHEN s < 128 THEN 5 ELSE 1 END "
                  "FROM generate_series(0, 255) AS s"));
  REQUIRE(migrate(db));
  CHECK(d.count("SELECT shard_count FROM cluster_settings") == 128);
}

// Two takes of the same free shards in opposite orders would deadlock if
// rows were locked in the order given (PostgreSQL then fails one of them).
TEST_CASE("concurrent takes of the same shards in opposite orders both "
          "succeed",
          "[db]") {
  two_nodes n;
  for (std::uint32_t round = 0; round < 20; ++round) {
    auto up = shard_range(round * 1000, round * 1000 + 199);
    std::vector<std::uint32_t> down(up.rbegin(), up.rend());
    caf::expected<shard_epochs> ra{shard_epochs{}};
    caf::expected<shard_epochs> rb{shard_epochs{}};
    start_gate gate{2};
    std::thread ta{[&] {
      gate.arrive_and_wait();
      ra = n.a->take("a", up, seconds{60});
    }};
    std::thread tb{[&] {
      gate.arrive_and_wait();
      rb = n.b->take("b", down, seconds{60});
    }};
    ta.join();
    tb.join();
    REQUIRE(ra);
    REQUIRE(rb);
    CHECK(ra->size() + rb->size() == up.size());
  }
}
