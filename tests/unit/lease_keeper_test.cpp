// The lease keeper, the cluster node's one thread for the lease store's
// blocking statements, over a stand-in store and a manual clock: what a
// round and a take report, and from when a lease counts.

#include "cluster/lease_keeper.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/scoped_actor.hpp"

#include "actors/clock.hpp"
#include "persistence/persistence_error.hpp"

using namespace videostreams;
using namespace std::chrono_literals;

namespace {

/// A store whose statements each take `statement_time` by `clock` (the
/// database is slow) and succeed, unless told to fail.
struct slow_store final : lease_store {
  explicit slow_store(std::shared_ptr<manual_clock> c) : clock(std::move(c)) {
  }

  caf::expected<void> join(const member_self&) override {
    statement();
    return caf::unit;
  }

  caf::expected<bool> heartbeat(const member_self&) override {
    statement();
    return !superseded;
  }

  caf::expected<void> leave(const member_self&) override {
    statement();
    return caf::unit;
  }

  caf::expected<cluster_reading> read(std::uint32_t shard_count) override {
    statement();
    cluster_reading r;
    r.shard_count = shard_count;
    return r;
  }

  caf::expected<shard_epochs> take(const std::string&,
                                   const std::vector<std::uint32_t>& shards,
                                   std::chrono::milliseconds) override {
    statement();
    shard_epochs taken;
    for (auto s : shards)
      taken[s] = 7;
    return taken;
  }

  caf::expected<std::vector<std::uint32_t>>
  renew(const std::string&, const std::vector<held_lease>& held,
        std::chrono::milliseconds) override {
    ++renewals;
    statement();
    if (renewals_fail)
      return make_error(persistence_error::unreachable, "renewal failed");
    std::vector<std::uint32_t> renewed;
    for (auto& h : held)
      renewed.push_back(h.shard);
    return renewed;
  }

  caf::expected<std::vector<std::uint32_t>>
  release(const std::string&, const shard_epochs&) override {
    statement();
    return std::vector<std::uint32_t>{};
  }

  void statement() {
    clock->advance(statement_time);
  }

  std::shared_ptr<manual_clock> clock;
  std::chrono::nanoseconds statement_time = 3s;
  bool superseded = false;
  bool renewals_fail = false;
  int renewals = 0;
};

struct keeper_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<manual_clock> clock = std::make_shared<manual_clock>();
  std::shared_ptr<slow_store> store = std::make_shared<slow_store>(clock);
  lease_keeper_actor keeper = spawn_lease_keeper(sys, store, clock);
  caf::scoped_actor self{sys};

  round_result round(std::vector<held_lease> renew) {
    round_request req;
    req.self.node_id = "n1";
    req.renew = std::move(renew);
    req.shard_count = 8;
    round_result out;
    self->request(keeper, 60s, round_atom::value, req)
      .receive([&](round_result& r) { out = std::move(r); },
               [](caf::error&) { FAIL("the round was not answered"); });
    return out;
  }

  ~keeper_fixture() {
    self->send_exit(keeper, caf::exit_reason::user_shutdown);
  }
};

} // namespace

TEST_CASE("a renewed lease counts from before its statement was sent, not "
          "from its answer",
          "[unit]") {
  keeper_fixture f;
  // The heartbeat takes 3 s, then the renewal 3 s: the lease runs from a
  // moment after the renewal's start by PostgreSQL's clock, so a deadline
  // counted from its answer would outlast the lease by up to 3 s.
  auto before_heartbeat = f.clock->now().mono_ns;
  auto r = f.round({{1, 4, "serving"}, {2, 4, "serving"}});
  CHECK(r.renewal_ran);
  CHECK(r.renewed == std::vector<std::uint32_t>{1, 2});
  CHECK(r.renew_started_ns == before_heartbeat + 3'000'000'000);
}

TEST_CASE("a taken lease counts from before the take's statement was sent",
          "[unit]") {
  keeper_fixture f;
  auto before = f.clock->now().mono_ns;
  take_result r;
  member_self me;
  me.node_id = "n1";
  f.self
    ->request(f.keeper, 60s, take_atom::value, me,
              std::vector<std::uint32_t>{3, 5})
    .receive([&](take_result& x) { r = std::move(x); },
             [](caf::error&) { FAIL("the take was not answered"); });
  CHECK(r.started_ns == before);
  CHECK(r.taken == shard_epochs{{3, 7}, {5, 7}});
}

TEST_CASE("a round whose renewal fails still reads the cluster, and one "
          "that finds its member row taken over renews nothing",
          "[unit]") {
  keeper_fixture f;
  SECTION("the renewal fails") {
    f.store->renewals_fail = true;
    auto r = f.round({{1, 4, "serving"}});
    CHECK_FALSE(r.renewal_ran);
    CHECK(r.renew_error);
    CHECK(r.renewed.empty());
    CHECK_FALSE(r.read_error);
    CHECK(r.reading.shard_count == 8);
  }
  SECTION("a newer process took the member row") {
    f.store->superseded = true;
    auto r = f.round({{1, 4, "serving"}});
    CHECK(r.superseded);
    CHECK_FALSE(r.renewal_ran);
    CHECK(f.store->renewals == 0);
  }
}
