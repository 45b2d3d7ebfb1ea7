// Batches, coalescing, group commit and epoch fencing against a real
// PostgreSQL.

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <thread>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/scoped_actor.hpp"
#include "caf/send.hpp"

#include "db_fixture.hpp"

#include "persistence/persistence_actor.hpp"
#include "persistence/schema.hpp"
#include "persistence/stream_store.hpp"

using namespace videostreams;
using videostreams::testing::scratch_database;

namespace {

stream_change grant(std::uint64_t user, std::string key,
                    std::uint32_t shard = 1) {
  stream_change c;
  c.kind = change_kind::grant;
  c.user = user;
  c.key = std::move(key);
  c.started_at_ms = 1'767'225'600'000;
  c.ttl_seconds = 60;
  c.expires_at_ms = c.started_at_ms + 60'000;
  c.shard = shard;
  return c;
}

stream_change close(std::uint64_t user, std::string key,
                    std::uint32_t shard = 1) {
  auto c = grant(user, std::move(key), shard);
  c.kind = change_kind::close;
  return c;
}

stream_change limit(std::uint64_t user, std::uint32_t max,
                    std::uint32_t shard = 1) {
  stream_change c;
  c.kind = change_kind::set_limit;
  c.user = user;
  c.max_streams = max;
  c.shard = shard;
  return c;
}

/// A migrated scratch database and a store that owns shards 0..3.
struct store_fixture {
  store_fixture() {
    auto db = d.connect();
    REQUIRE(migrate(db));
    store = std::make_shared<stream_store>(d.connect());
    REQUIRE(store->prepare_for_commits());
    auto taken = store->take_shards("node-a", {0, 1, 2, 3});
    REQUIRE(taken);
    epochs = *taken;
  }

  scratch_database d;
  std::shared_ptr<stream_store> store;
  shard_epochs epochs;
};

struct quiet_config : caf::actor_system_config {
  quiet_config() {
    set("logger.verbosity", caf::atom("quiet"));
  }
};

} // namespace

TEST_CASE("a batch of grants, closes and limits lands in one commit",
          "[db]") {
  store_fixture f;
  CHECK(f.epochs.at(1) == 1);
  REQUIRE(f.store->commit({grant(1, "a"), grant(1, "b"), grant(2, "~1"),
                           limit(3, 7)},
                          f.epochs));
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions") == 3);
  CHECK(f.d.count("SELECT max_streams FROM user_limits WHERE user_id = 3")
        == 7);
  CHECK(f.d.query("SELECT epoch FROM stream_sessions WHERE stream_key = 'a'")
        == "1");
  CHECK(f.d.query("SELECT expires_at - started_at FROM stream_sessions "
                  "WHERE stream_key = 'a'")
        == "00:01:00");
  stream_change cleared = limit(3, 0);
  cleared.kind = change_kind::clear_limit;
  REQUIRE(f.store->commit({close(1, "a"), cleared}, f.epochs));
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions") == 2);
  CHECK(f.d.count("SELECT count(*) FROM user_limits") == 0);
  // A retried batch is harmless: upserts and deletes are idempotent.
  REQUIRE(f.store->commit({close(1, "a"), grant(1, "b")}, f.epochs));
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions") == 2);
}

TEST_CASE("keys with quotes and backslashes survive the array encoding",
          "[db]") {
  store_fixture f;
  REQUIRE(f.store->commit({grant(1, R"(a"b\c,d{e})")}, f.epochs));
  CHECK(f.d.query("SELECT stream_key FROM stream_sessions") == R"(a"b\c,d{e})");
}

TEST_CASE("a stale writer is fenced and writes nothing", "[db]") {
  store_fixture a;
  // Another node takes shard 1 over: its epoch rises.
  stream_store b{a.d.connect()};
  auto taken = b.take_shards("node-b", {1});
  REQUIRE(taken);
  CHECK(taken->at(1) == 2);
  auto stale = a.store->commit({grant(5, "x", 0), grant(6, "y", 1)}, a.epochs);
  REQUIRE_FALSE(stale);
  CHECK(stale.error().code()
        == static_cast<std::uint8_t>(persistence_error::fenced));
  // Nothing of the batch was written, not even the shard it still owns.
  CHECK(a.d.count("SELECT count(*) FROM stream_sessions") == 0);
  REQUIRE(b.commit({grant(6, "y", 1)}, *taken));
  CHECK(a.d.query("SELECT epoch FROM stream_sessions WHERE user_id = 6")
        == "2");
  // A shard nobody ever took is refused too.
  auto unowned = a.store->commit({grant(7, "z", 99)}, a.epochs);
  REQUIRE_FALSE(unowned);
  CHECK(unowned.error().code()
        == static_cast<std::uint8_t>(persistence_error::fenced));
}

TEST_CASE("the persistence actor coalesces and group-commits", "[db]") {
  store_fixture f;
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, {}, counters);
  caf::scoped_actor self{sys};
  // Changes sent at once gather while a commit runs: far fewer commits
  // than changes, and every change acknowledged.
  constexpr int users = 2000;
  for (int u = 0; u < users; ++u)
    self->send(writer, commit_atom::value,
               grant(static_cast<std::uint64_t>(u), "s", u % 4));
  int acked = 0;
  for (int u = 0; u < users; ++u)
    self->receive([&](bool ok) { acked += ok; },
                  [&](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{30}) >>
                    [&] { FAIL("no acknowledgement"); });
  CHECK(acked == users);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions") == users);
  CHECK(counters->commits < static_cast<std::uint64_t>(users) / 4);
  CHECK(counters->queue_depth == 0);
  // A grant and its close in one batch coalesce into the close.
  auto before = counters->changes_written.load();
  self->send(writer, commit_atom::value, grant(5000, "t", 0));
  self->send(writer, commit_atom::value, close(5000, "t", 0));
  self->send(writer, commit_atom::value, limit(5001, 2, 0));
  self->send(writer, commit_atom::value, limit(5001, 4, 0));
  for (int i = 0; i < 4; ++i)
    self->receive([](bool) {}, [&](caf::error& err) { FAIL(describe(err)); });
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 5000")
        == 0);
  CHECK(f.d.count("SELECT max_streams FROM user_limits WHERE user_id = 5001")
        == 4);
  CHECK(counters->changes_received == users + 4);
  CHECK(counters->changes_written - before <= 2);
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
}

TEST_CASE("a fenced batch is answered with the error and dropped", "[db]") {
  store_fixture f;
  stream_store other{f.d.connect()};
  REQUIRE(other.take_shards("node-b", {2}));
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, {}, counters);
  caf::scoped_actor self{sys};
  bool fenced = false;
  self->request(writer, std::chrono::seconds{30}, commit_atom::value,
                grant(1, "a", 2))
    .receive([](bool) { FAIL("a stale writer's grant was committed"); },
             [&](caf::error& err) {
               fenced = err.code()
                        == static_cast<std::uint8_t>(persistence_error::fenced);
             });
  CHECK(fenced);
  CHECK(counters->errors == 1);
  CHECK(counters->queue_depth == 0);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions") == 0);
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
}

TEST_CASE("a commit that hangs: sync changes are answered with a timeout, "
          "the database shows unreachable, and the batch lands later",
          "[db]") {
  store_fixture f;
  // Another session holds shard 1's epoch row: the fence of any commit
  // touching shard 1 waits for it, like a commit on a hung server.
  auto locker = f.d.connect();
  REQUIRE(locker.exec("BEGIN"));
  REQUIRE(locker.exec("SELECT * FROM shard_epochs WHERE shard = 1 FOR UPDATE"));
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  persistence_settings settings;
  settings.commit_timeout = std::chrono::milliseconds{300};
  settings.probe_every = std::chrono::milliseconds{200};
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, settings,
                                        counters);
  caf::scoped_actor self{sys};
  auto expect_timeout = [&] {
    bool timed_out = false;
    self->receive([](bool) { FAIL("a commit that cannot run was confirmed"); },
                  [&](caf::error& err) {
                    timed_out = err.code()
                                == static_cast<std::uint8_t>(
                                  persistence_error::commit_timeout);
                  },
                  caf::after(std::chrono::seconds{10}) >>
                    [] { FAIL("no answer within the commit timeout"); });
    CHECK(timed_out);
  };
  self->send(writer, commit_atom::value, grant(1, "a", 1));
  expect_timeout();
  // The persistence actor is not blocked by the hanging commit: it takes
  // and answers more changes (they gather behind the hanging one).
  self->send(writer, commit_atom::value, grant(2, "b", 0));
  expect_timeout();
  self->send(writer, close(2, "b", 0));
  CHECK(counters->commit_timeouts == 2);
  for (int i = 0; i < 100 && counters->reachable; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  CHECK_FALSE(counters->reachable); // the commit hangs for over 2 probes
  // The lock goes away: the hanging commit lands, then what gathered.
  REQUIRE(locker.exec("ROLLBACK"));
  for (int i = 0; i < 200 && counters->queue_depth > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  CHECK(counters->queue_depth == 0);
  CHECK(counters->reachable);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 1")
        == 1);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 2")
        == 0);
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
}

TEST_CASE("the flush interval spaces commits under load only", "[db]") {
  store_fixture f;
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  persistence_settings settings;
  settings.flush_interval = std::chrono::milliseconds{10000};
  settings.commit_timeout = std::chrono::milliseconds{60000};
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, settings,
                                        counters);
  caf::scoped_actor self{sys};
  auto acknowledged = [&] {
    bool ok = false;
    self->receive([&](bool x) { ok = x; },
                  [&](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{30}) >>
                    [] { FAIL("no acknowledgement"); });
    return ok;
  };
  // After a quiet spell a change commits at once: far sooner than the
  // interval (the margin is seconds for a commit of milliseconds).
  auto sent = std::chrono::steady_clock::now();
  self->send(writer, commit_atom::value, grant(1, "a", 0));
  CHECK(acknowledged());
  CHECK(std::chrono::steady_clock::now() - sent < std::chrono::seconds{5});
  // Right behind it, the next one waits for the interval...
  self->send(writer, commit_atom::value, grant(2, "b", 0));
  std::this_thread::sleep_for(std::chrono::milliseconds{300});
  CHECK(counters->commits == 1);
  CHECK(counters->queue_depth == 1);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 2")
        == 0);
  // ... unless told to flush (as the service does when it stops).
  self->send(writer, flush_atom::value);
  CHECK(acknowledged());
  CHECK(counters->commits == 2);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 2")
        == 1);
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
}

namespace {

/// Waits (bounded) until `pred` holds; true if it did.
template <class Pred>
bool soon(Pred pred) {
  for (int i = 0; i < 200; ++i) {
    if (pred())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
  return pred();
}

/// The answer to a sync change: "committed" or the error's description.
std::string answer_of(caf::scoped_actor& self) {
  std::string what = "no answer";
  self->receive([&](bool) { what = "committed"; },
                [&](caf::error& err) { what = describe(err); },
                caf::after(std::chrono::seconds{15}) >> [] {});
  return what;
}

} // namespace

TEST_CASE("a sync change refused for a full backlog is answered so", "[db]") {
  store_fixture f;
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  persistence_settings settings;
  settings.max_backlog = 0;
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, settings,
                                        counters);
  caf::scoped_actor self{sys};
  self->send(writer, commit_atom::value, grant(1, "a", 1));
  CHECK_THAT(answer_of(self), Catch::Contains("backlog full"));
  CHECK(counters->refused == 1);
  // A close is never refused: it undoes state that memory already has.
  self->send(writer, close(2, "b", 1));
  CHECK(soon([&] { return counters->changes_written == 1; }));
  CHECK(counters->refused == 1);
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
}

TEST_CASE("the close undoing a timed-out grant is taken even with the "
          "backlog full, and wins over the grant",
          "[db]") {
  store_fixture f;
  auto locker = f.d.connect();
  REQUIRE(locker.exec("BEGIN"));
  REQUIRE(locker.exec("SELECT * FROM shard_epochs WHERE shard = 1 FOR UPDATE"));
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  persistence_settings settings;
  settings.commit_timeout = std::chrono::milliseconds{300};
  settings.max_backlog = 2;
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, settings,
                                        counters);
  caf::scoped_actor self{sys};
  self->send(writer, commit_atom::value, grant(1, "a", 1)); // hangs
  CHECK(soon([&] { return counters->queue_depth == 1; }));
  self->send(writer, grant(2, "b", 0)); // the backlog is now full
  CHECK_THAT(answer_of(self), Catch::Contains("not confirmed in time"));
  self->send(writer, close(1, "a", 1)); // what the user actor then sends
  CHECK(soon([&] { return counters->changes_received == 3; }));
  CHECK(counters->refused == 0);
  REQUIRE(locker.exec("ROLLBACK"));
  CHECK(soon([&] { return counters->queue_depth == 0; }));
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 1")
        == 0);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 2")
        == 1);
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
}

TEST_CASE("after a fenced batch, what gathered behind it is committed",
          "[db]") {
  store_fixture f;
  auto taker = f.d.connect();
  REQUIRE(taker.exec("BEGIN"));
  REQUIRE(taker.exec("SELECT * FROM shard_epochs WHERE shard = 2 FOR UPDATE"));
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  persistence_settings settings;
  settings.commit_timeout = std::chrono::milliseconds{20000};
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, settings,
                                        counters);
  caf::scoped_actor self{sys};
  self->send(writer, grant(10, "x", 2)); // waits for the taker's lock
  CHECK(soon([&] { return counters->queue_depth == 1; }));
  self->send(writer, commit_atom::value, grant(11, "y", 0)); // gathers
  CHECK(soon([&] { return counters->queue_depth == 2; }));
  // Another node takes shard 2 over: the hanging batch is fenced.
  REQUIRE(taker.exec("UPDATE shard_epochs SET epoch = epoch + 1 "
                     "WHERE shard = 2"));
  REQUIRE(taker.exec("COMMIT"));
  CHECK(answer_of(self) == "committed");
  CHECK(soon([&] { return counters->queue_depth == 0; }));
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 10")
        == 0);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 11")
        == 1);
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
}

TEST_CASE("a failed batch is retried under the changes that came after it",
          "[db]") {
  store_fixture f;
  // A statement error for this grant only: its TTL breaks a constraint.
  auto admin = f.d.connect();
  REQUIRE(admin.exec("ALTER TABLE stream_sessions ADD CONSTRAINT short_ttl "
                     "CHECK (ttl_seconds < 1000)"));
  // And the commit holding it waits, so that a newer change gathers.
  auto locker = f.d.connect();
  REQUIRE(locker.exec("BEGIN"));
  REQUIRE(locker.exec("SELECT * FROM shard_epochs WHERE shard = 1 FOR UPDATE"));
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  persistence_settings settings;
  settings.retry_after = std::chrono::milliseconds{300};
  settings.commit_timeout = std::chrono::milliseconds{20000};
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, settings,
                                        counters);
  caf::scoped_actor self{sys};
  auto long_lease = grant(1, "a", 1);
  long_lease.ttl_seconds = 5000;
  self->send(writer, commit_atom::value, long_lease);
  CHECK(soon([&] { return counters->queue_depth == 1; }));
  // The newer close for the same stream must win over the failed grant.
  self->send(writer, close(1, "a", 1));
  CHECK(soon([&] { return counters->queue_depth == 2; }));
  REQUIRE(locker.exec("ROLLBACK"));
  CHECK_THAT(answer_of(self), Catch::Contains("statement failed"));
  REQUIRE(admin.exec("ALTER TABLE stream_sessions DROP CONSTRAINT short_ttl"));
  CHECK(soon([&] { return counters->queue_depth == 0; }));
  CHECK(counters->errors >= 1);
  CHECK(f.d.count("SELECT count(*) FROM stream_sessions WHERE user_id = 1")
        == 0);
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
}

TEST_CASE("when the persistence actor stops, nobody is left waiting", "[db]") {
  store_fixture f;
  auto locker = f.d.connect();
  REQUIRE(locker.exec("BEGIN"));
  REQUIRE(locker.exec("SELECT * FROM shard_epochs WHERE shard = 1 FOR UPDATE"));
  quiet_config cfg;
  caf::actor_system sys{cfg};
  auto counters = std::make_shared<persistence_counters>();
  persistence_settings settings;
  settings.commit_timeout = std::chrono::milliseconds{60000};
  auto writer = spawn_persistence_actor(sys, f.store, f.epochs, settings,
                                        counters);
  caf::scoped_actor self{sys};
  self->send(writer, commit_atom::value, grant(1, "a", 1)); // hangs
  CHECK(soon([&] { return counters->queue_depth == 1; }));
  caf::anon_send_exit(writer, caf::exit_reason::user_shutdown);
  CHECK_THAT(answer_of(self), Catch::Contains("stopped"));
  REQUIRE(locker.exec("ROLLBACK")); // lets the writer's thread end
}
