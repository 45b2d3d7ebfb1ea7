// The rendezvous assignment of shards to members, the plan a node makes
// from it, and the deadline until which a node may decide for a shard.
// Pure functions and a manual clock: no actors, no I/O, no sleeps.

#include "cluster/assignment.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "actors/clock.hpp"
#include "cluster/lease_store.hpp"
#include "actors/shard_deadlines.hpp"

using namespace videostreams;
using namespace std::chrono_literals;

namespace {

using node_list = std::vector<std::string>;

/// `n` ids the way a StatefulSet names its pods: "videostreams-0", ...
node_list pod_ids(int n) {
  node_list result;
  for (int i = 0; i < n; ++i)
    result.push_back("videostreams-" + std::to_string(i));
  return result;
}

/// `n` random-looking ids, always the same ones: mt19937_64's output is
/// fixed by the standard (unlike the distributions), so these do not depend
/// on the platform or the standard library.
node_list random_ids(int n) {
  std::mt19937_64 gen{20260101};
  node_list result;
  for (int i = 0; i < n; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "node-%016llx",
                  static_cast<unsigned long long>(gen()));
    result.emplace_back(buf);
  }
  return result;
}

/// How many shards each of `members` is the target of (zero included).
std::map<std::string, int> shares(const node_list& targets,
                                  const node_list& members) {
  std::map<std::string, int> result;
  for (auto& m : members)
    result[m] = 0;
  for (auto& t : targets)
    ++result[t];
  return result;
}

/// How many shards have `node` as their target.
int share_of(const node_list& targets, const std::string& node) {
  return static_cast<int>(std::count(targets.begin(), targets.end(), node));
}

/// The widest deviation of one member's share from S/N that the balance
/// tests accept, as a fraction of S/N.
///
/// With rendezvous hashing each shard goes to each of N members with
/// probability 1/N, independently, so one member's share of S shards is
/// Binomial(S, 1/N): standard deviation sqrt(S (1/N) (1 - 1/N)). For 128
/// shards and 8 members that is 3.7 of 16 (23%), for 1024 shards 10.6 of
/// 128 (8%). The ids are fixed, so the tests are deterministic; the bounds
/// only have to hold for these ids with margin and fail on a real skew.
/// Observed over N = 2..8 and both id sets: 128 shards 0.70..1.38 of S/N
/// (bound ±50%), 1024 shards 0.84..1.15 (bound ±25%, about 3 standard
/// deviations at N = 8). All shards on one node, or a weight that lets
/// the node id dominate the shard number, falls far outside either.
double tolerance(std::uint32_t shard_count) {
  return shard_count >= 1024 ? 0.25 : 0.5;
}

/// Checks that `count` shards out of `shard_count` are within the balance
/// bound of a fair share among `members`.
void check_fair_share(int count, std::uint32_t shard_count, int members) {
  auto fair = static_cast<double>(shard_count) / members;
  auto tol = tolerance(shard_count);
  INFO("share " << count << " of " << shard_count << " shards, fair "
                << fair << ", members " << members);
  CHECK(count >= fair * (1 - tol));
  CHECK(count <= fair * (1 + tol));
}

/// One shard as a node sees it when it plans.
struct shard_row {
  std::string target;
  shard_role role = shard_role::none;
  std::string owner;
  bool live = false;
};

/// A plan input for `self` over `rows`, with `reachable` the nodes it has
/// a connected link to.
plan_input input_of(std::string self, const std::vector<shard_row>& rows,
                    std::set<std::string> reachable = {},
                    bool leaving = false) {
  plan_input in;
  in.self = std::move(self);
  in.leaving = leaving;
  for (auto& r : rows) {
    in.targets.push_back(r.target);
    in.roles.push_back(r.role);
    in.owners.push_back(r.owner);
    in.live.push_back(r.live);
  }
  in.reachable = [nodes = std::move(reachable)](const std::string& node) {
    return nodes.count(node) > 0;
  };
  return in;
}

using hand_offs = std::vector<std::pair<std::uint32_t, std::string>>;
using shard_list = std::vector<std::uint32_t>;

constexpr auto none = shard_role::none;
constexpr auto arriving = shard_role::arriving;
constexpr auto serving = shard_role::serving;
constexpr auto leaving = shard_role::leaving;

} // namespace

// -- rendezvous_weight --------------------------------------------------------

TEST_CASE("rendezvous weights are frozen: every node and version computes "
          "the same ones",
          "[unit]") {
  // Computed once with the original function. A failure here means nodes of
  // different versions would disagree on every shard's owner: never update
  // these values, restore the function.
  CHECK(rendezvous_weight("videostreams-0", 0) == 0x405aaf85017bfd86ULL);
  CHECK(rendezvous_weight("videostreams-0", 1) == 0xe87959a6945bae81ULL);
  CHECK(rendezvous_weight("videostreams-0", 127) == 0xda02e2567b34af47ULL);
  CHECK(rendezvous_weight("videostreams-0", 1023) == 0x0b4165acea370d80ULL);
  CHECK(rendezvous_weight("videostreams-1", 0) == 0xd4c6fb6a09e30185ULL);
  CHECK(rendezvous_weight("videostreams-1", 63) == 0x961a1acd2157e909ULL);
  CHECK(rendezvous_weight("node-a", 63) == 0x0667736c7a3cc71cULL);
  CHECK(rendezvous_weight("node-a", 4294967295u) == 0x2bfa18ea2aff2eb3ULL);
  CHECK(rendezvous_weight("a", 1) == 0xea05bfcf96572082ULL);
  CHECK(rendezvous_weight("", 0) == 0x10401663822dcddfULL);
}

TEST_CASE("the targets of a fixed membership are frozen", "[unit]") {
  // Pins target_of's choice (the highest weight wins) on top of the weights.
  auto targets = assign(12, pod_ids(3));
  CHECK(targets
        == node_list{"videostreams-1", "videostreams-0", "videostreams-1",
                     "videostreams-2", "videostreams-1", "videostreams-1",
                     "videostreams-0", "videostreams-1", "videostreams-2",
                     "videostreams-2", "videostreams-0", "videostreams-1"});
}

// -- target_of and assign -----------------------------------------------------

TEST_CASE("the target of a shard is the candidate with the highest weight",
          "[unit]") {
  auto members = random_ids(5);
  for (std::uint32_t s = 0; s < 256; ++s) {
    auto target = target_of(s, members);
    for (auto& m : members) {
      INFO("shard " << s << ", target " << target << ", member " << m);
      CHECK(rendezvous_weight(target, s) >= rendezvous_weight(m, s));
    }
  }
}

TEST_CASE("targets do not depend on the order of the candidates", "[unit]") {
  auto members = pod_ids(4);
  std::sort(members.begin(), members.end());
  auto expected = assign(128, members);
  int orders = 0;
  do {
    ++orders;
    CHECK(assign(128, members) == expected);
    for (std::uint32_t s = 0; s < 128; ++s)
      CHECK(target_of(s, members) == expected[s]);
  } while (std::next_permutation(members.begin(), members.end()));
  CHECK(orders == 24);
  auto many = random_ids(8);
  auto forward = assign(1024, many);
  std::reverse(many.begin(), many.end());
  CHECK(assign(1024, many) == forward);
  std::rotate(many.begin(), many.begin() + 3, many.end());
  CHECK(assign(1024, many) == forward);
  // A candidate listed twice changes nothing either.
  many.push_back(many.front());
  CHECK(assign(1024, many) == forward);
}

TEST_CASE("without candidates every target is empty", "[unit]") {
  CHECK(target_of(0, {}).empty());
  CHECK(target_of(4294967295u, {}).empty());
  auto targets = assign(64, {});
  REQUIRE(targets.size() == 64);
  for (auto& t : targets)
    CHECK(t.empty());
  CHECK(assign(0, pod_ids(3)).empty());
}

TEST_CASE("a single candidate is the target of every shard", "[unit]") {
  auto targets = assign(1024, {"videostreams-3"});
  REQUIRE(targets.size() == 1024);
  for (auto& t : targets)
    CHECK(t == "videostreams-3");
}

TEST_CASE("every member gets a fair share of the shards", "[unit]") {
  for (auto& ids : {pod_ids(8), random_ids(8)}) {
    for (std::uint32_t shard_count : {128u, 1024u}) {
      for (int n = 2; n <= 8; ++n) {
        node_list members(ids.begin(), ids.begin() + n);
        auto targets = assign(shard_count, members);
        auto counts = shares(targets, members);
        REQUIRE(counts.size() == static_cast<std::size_t>(n)); // no strays
        for (auto& [node, count] : counts) {
          INFO("node " << node);
          check_fair_share(count, shard_count, n);
        }
      }
    }
  }
}

TEST_CASE("a joining member takes about S/(N+1) shards, all from others, "
          "and no shard moves between the others",
          "[unit]") {
  for (auto& ids : {pod_ids(8), random_ids(8)}) {
    for (std::uint32_t shard_count : {128u, 1024u}) {
      for (int n = 1; n < 8; ++n) {
        node_list before_members(ids.begin(), ids.begin() + n);
        auto& joining = ids[n];
        // The newcomer listed first: the order must not matter either.
        node_list after_members{joining};
        after_members.insert(after_members.end(), before_members.begin(),
                             before_members.end());
        auto before = assign(shard_count, before_members);
        auto after = assign(shard_count, after_members);
        int moved = 0;
        for (std::uint32_t s = 0; s < shard_count; ++s) {
          if (before[s] == after[s])
            continue;
          ++moved;
          INFO("shard " << s << " moved from " << before[s] << " to "
                        << after[s] << " when " << joining << " joined");
          CHECK(after[s] == joining);
        }
        CHECK(moved == share_of(after, joining));
        INFO("joining " << joining << " with " << n << " members");
        check_fair_share(moved, shard_count, n + 1);
      }
    }
  }
}

TEST_CASE("a leaving member's shards, and only those, move", "[unit]") {
  for (auto& ids : {pod_ids(8), random_ids(8)}) {
    for (std::uint32_t shard_count : {128u, 1024u}) {
      for (int n = 2; n <= 8; ++n) {
        node_list before_members(ids.begin(), ids.begin() + n);
        for (int gone = 0; gone < n; ++gone) {
          auto after_members = before_members;
          after_members.erase(after_members.begin() + gone);
          auto& leaver = before_members[gone];
          auto before = assign(shard_count, before_members);
          auto after = assign(shard_count, after_members);
          int moved = 0;
          for (std::uint32_t s = 0; s < shard_count; ++s) {
            INFO("shard " << s << " from " << before[s] << " to " << after[s]
                          << " when " << leaver << " left");
            CHECK(after[s] != leaver);
            if (before[s] == leaver)
              ++moved;
            else
              CHECK(after[s] == before[s]);
          }
          CHECK(moved == share_of(before, leaver));
        }
      }
    }
  }
}

// -- plan_shards --------------------------------------------------------------

TEST_CASE("a node takes its target shards that are free, expired or its own",
          "[unit]") {
  auto in = input_of("a", {
                            {"a", none, "", false},  // 0: free
                            {"a", none, "", true},   // 1: released, free
                            {"a", none, "b", false}, // 2: expired
                            {"a", none, "a", true},  // 3: an earlier self's
                            {"a", none, "a", false}, // 4: own and expired
                            {"a", none, "b", true},  // 5: b still holds it
                            {"b", none, "", false},  // 6: not its target
                            {"", none, "", false},   // 7: nobody's target
                          });
  auto p = plan_shards(in);
  CHECK(p.take == shard_list{0, 1, 2, 3, 4});
  CHECK(p.hand_off.empty());
  CHECK_FALSE(p.share_served);
}

TEST_CASE("a node does not take a shard that another node holds live",
          "[unit]") {
  auto in = input_of("a", {{"a", none, "b", true}, {"a", none, "c", true}},
                     {"b", "c"});
  auto p = plan_shards(in);
  CHECK(p.take.empty());
  CHECK(p.hand_off.empty());
  CHECK_FALSE(p.share_served);
  // Once b's lease expires, a takes that one.
  in.live[0] = false;
  CHECK(plan_shards(in).take == shard_list{0});
}

TEST_CASE("just after a database outage a node takes no other node's "
          "expired lease, but free ones and its own",
          "[unit]") {
  auto in = input_of("a", {
                            {"a", none, "", false},  // 0: free
                            {"a", none, "b", false}, // 1: b's, expired
                            {"a", none, "a", false}, // 2: own and expired
                            {"a", none, "c", false}, // 3: c's, expired
                          });
  in.take_expired = false;
  auto p = plan_shards(in);
  CHECK(p.take == shard_list{0, 2});
  CHECK_FALSE(p.share_served);
  // Once the grace has passed, b and c have had their chance to renew.
  in.take_expired = true;
  CHECK(plan_shards(in).take == shard_list{0, 1, 2, 3});
}

TEST_CASE("a node hands off a served shard only once its target is reachable",
          "[unit]") {
  auto in = input_of("a",
                     {
                       {"b", serving, "a", true}, // 0: b reachable
                       {"c", serving, "a", true}, // 1: c not (yet)
                       {"a", serving, "a", true}, // 2: stays here
                       {"b", none, "b", true},    // 3: not held here
                     },
                     {"b"});
  auto p = plan_shards(in);
  CHECK(p.hand_off == hand_offs{{0, "b"}});
  CHECK(p.take.empty());
  CHECK(p.share_served);
  // Connected to c: now shard 1 goes too.
  in.reachable = [](const std::string& node) {
    return node == "b" || node == "c";
  };
  CHECK(plan_shards(in).hand_off == hand_offs{{0, "b"}, {1, "c"}});
  // Without any link information nothing is handed off.
  in.reachable = nullptr;
  CHECK(plan_shards(in).hand_off.empty());
}

TEST_CASE("shards arriving or leaving are neither taken nor handed off",
          "[unit]") {
  for (auto role : {arriving, leaving}) {
    for (bool node_leaving : {false, true}) {
      INFO("role " << static_cast<int>(role) << ", node leaving "
                   << node_leaving);
      auto in = input_of("a",
                         {
                           {"a", role, "", false},
                           {"a", role, "a", true},
                           {"b", role, "a", true},
                           {"", role, "a", true},
                         },
                         {"b"}, node_leaving);
      auto p = plan_shards(in);
      CHECK(p.take.empty());
      CHECK(p.hand_off.empty());
    }
  }
}

TEST_CASE("a leaving node takes nothing and hands off everything it serves",
          "[unit]") {
  // Targets as a leaving node computes them: without itself.
  auto in = input_of("a",
                     {
                       {"b", serving, "a", true}, // 0: to b
                       {"c", serving, "a", true}, // 1: to c
                       {"b", none, "", false},    // 2: free, not for a
                       {"b", serving, "a", true}, // 3: to b
                       {"b", none, "a", true},    // 4: a's lease, not held
                       {"a", none, "", false},    // 5: free, even for a
                     },
                     {"b", "c"}, true);
  auto p = plan_shards(in);
  CHECK(p.take.empty());
  CHECK(p.hand_off == hand_offs{{0, "b"}, {1, "c"}, {3, "b"}});
  // A target it cannot reach yet keeps its shard until it can (the target
  // must hear of the release).
  in.reachable = [](const std::string& node) { return node == "b"; };
  CHECK(plan_shards(in).hand_off == hand_offs{{0, "b"}, {3, "b"}});
}

TEST_CASE("a shard is handed only to a member that is not leaving: not to "
          "one that left the member table",
          "[unit]") {
  auto member = [](std::string id, std::string status) {
    member_record m;
    m.node_id = std::move(id);
    m.status = std::move(status);
    m.alive = true;
    return m;
  };
  std::vector<member_record> members{member("a", "up"), member("b", "joining"),
                                     member("c", "leaving")};
  CHECK(takes_shards(members, "a"));
  CHECK(takes_shards(members, "b"));
  CHECK_FALSE(takes_shards(members, "c"));
  // Two nodes leaving at once: one read the member table after the other
  // had left it, and its hand-off named the one that was gone (a request
  // sent there while the shard moved was answered 503).
  CHECK_FALSE(takes_shards(members, "d"));
  CHECK_FALSE(takes_shards(members, ""));
  CHECK_FALSE(takes_shards({}, "a"));
}

TEST_CASE("a leaving node with nobody left releases what it serves", "[unit]") {
  std::vector<shard_row> rows;
  auto targets = assign(6, {}); // no candidate: every target ""
  for (std::uint32_t s = 0; s < 6; ++s)
    rows.push_back({targets[s], s == 4 ? none : serving, "a", true});
  auto p = plan_shards(input_of("a", rows, {}, true));
  CHECK(p.take.empty());
  CHECK(p.hand_off
        == hand_offs{{0, ""}, {1, ""}, {2, ""}, {3, ""}, {5, ""}});
  // Should its own id still be a target, it releases those too rather than
  // handing them to itself.
  auto self_target = input_of("a", {{"a", serving, "a", true},
                                    {"a", none, "", false}},
                              {"a"}, true);
  auto q = plan_shards(self_target);
  CHECK(q.take.empty());
  CHECK(q.hand_off == hand_offs{{0, ""}});
}

TEST_CASE("a node that is not leaving keeps a shard that has no target",
          "[unit]") {
  auto p = plan_shards(input_of("a", {{"", serving, "a", true}}, {"b"}));
  CHECK(p.hand_off.empty());
  CHECK(p.take.empty());
}

TEST_CASE("share_served says whether every shard targeting the node is "
          "served there",
          "[unit]") {
  auto served = [](std::vector<shard_row> rows) {
    return plan_shards(input_of("a", rows, {"b"})).share_served;
  };
  CHECK(served({}));
  CHECK(served({{"b", none, "b", true}})); // nothing targets a
  CHECK(served({{"a", serving, "a", true}, {"a", serving, "a", true}}));
  // What a serves for others, or does not serve for them, does not count.
  CHECK(served({{"a", serving, "a", true},
                {"c", serving, "a", true},
                {"b", arriving, "a", true},
                {"b", leaving, "a", true}}));
  for (auto role : {none, arriving, leaving}) {
    INFO("role " << static_cast<int>(role));
    CHECK_FALSE(served({{"a", serving, "a", true}, {"a", role, "a", true}}));
    CHECK_FALSE(served({{"a", role, "", false}}));
  }
}

TEST_CASE("when a member joins, old members hand it exactly the shards it "
          "wins and it takes them once released",
          "[unit]") {
  constexpr std::uint32_t shard_count = 128;
  node_list old_members{"videostreams-0", "videostreams-1"};
  node_list new_members{"videostreams-0", "videostreams-1", "videostreams-2"};
  auto before = assign(shard_count, old_members);
  auto after = assign(shard_count, new_members);
  std::set<std::string> everyone(new_members.begin(), new_members.end());
  // The old members serve their old shares; the leases say so.
  std::vector<shard_row> rows_of_0;
  std::vector<shard_row> rows_of_2;
  hand_offs expected_from_0;
  shard_list expected_take;
  for (std::uint32_t s = 0; s < shard_count; ++s) {
    bool held_by_0 = before[s] == "videostreams-0";
    rows_of_0.push_back(
      {after[s], held_by_0 ? serving : none, before[s], true});
    rows_of_2.push_back({after[s], none, before[s], true});
    if (held_by_0 && after[s] != "videostreams-0")
      expected_from_0.emplace_back(s, after[s]);
    if (after[s] == "videostreams-2")
      expected_take.push_back(s);
  }
  auto from_0 = plan_shards(input_of("videostreams-0", rows_of_0, everyone));
  CHECK(from_0.take.empty());
  CHECK(from_0.hand_off == expected_from_0);
  CHECK(from_0.share_served);
  for (auto& [shard, to] : from_0.hand_off)
    CHECK(to == "videostreams-2");
  // The newcomer waits while the leases are live ...
  auto joining = plan_shards(input_of("videostreams-2", rows_of_2, everyone));
  CHECK(joining.take.empty());
  CHECK_FALSE(joining.share_served);
  // ... and takes its share once both old members released it.
  for (auto s : expected_take)
    rows_of_2[s].owner.clear();
  joining = plan_shards(input_of("videostreams-2", rows_of_2, everyone));
  CHECK(joining.take == expected_take);
  for (auto s : expected_take)
    rows_of_2[s].role = serving;
  CHECK(plan_shards(input_of("videostreams-2", rows_of_2, everyone))
          .share_served);
}

// -- decision_deadline and shard_deadlines ------------------------------------

TEST_CASE("a node alone decides forever", "[unit]") {
  constexpr auto forever = std::numeric_limits<std::int64_t>::max();
  CHECK(decision_deadline(0, 2s, true) == forever);
  CHECK(decision_deadline(123'456'789, 60s, true) == forever);
  CHECK(shard_deadlines::forever == forever);
}

TEST_CASE("the decision deadline is the renewal plus the TTL less a tenth, "
          "at least 100 ms",
          "[unit]") {
  constexpr std::int64_t renewed = 5'000'000'000;
  constexpr std::int64_t ms = 1'000'000;
  CHECK(decision_deadline(renewed, 2s, false) == renewed + 1800 * ms);
  CHECK(decision_deadline(renewed, 5s, false) == renewed + 4500 * ms);
  CHECK(decision_deadline(renewed, 60s, false) == renewed + 54000 * ms);
  // A tenth would be less than 100 ms: the margin is 100 ms.
  CHECK(decision_deadline(renewed, 500ms, false) == renewed + 400 * ms);
  CHECK(decision_deadline(renewed, 1s, false) == renewed + 900 * ms);
  CHECK(decision_deadline(0, 2s, false) == 1800 * ms);
}

TEST_CASE("a shard decides until its deadline on the manual clock, not at "
          "or after it",
          "[unit]") {
  manual_clock clock;
  shard_deadlines deadlines{4};
  // A renewal sent now, with a TTL of 2 s: 1.8 s of decisions.
  auto renewed = clock.now().mono_ns;
  deadlines.set(2, decision_deadline(renewed, 2s, false));
  CHECK(deadlines.get(2) == renewed + 1'800'000'000);
  auto now = [&] { return clock.now().mono_ns; };
  CHECK(deadlines.may_decide(2, now()));
  clock.advance(1800ms - 1ns);
  CHECK(deadlines.may_decide(2, now()));
  clock.advance(1ns);
  CHECK_FALSE(deadlines.may_decide(2, now()));
  clock.advance(1s);
  CHECK_FALSE(deadlines.may_decide(2, now()));
  // The next renewal, sent now, moves the deadline forward again.
  deadlines.set(2, decision_deadline(now(), 2s, false));
  CHECK(deadlines.may_decide(2, now()));
  clock.advance(1799ms);
  CHECK(deadlines.may_decide(2, now()));
  clock.advance(1ms);
  CHECK_FALSE(deadlines.may_decide(2, now()));
  // The other shards were never given a deadline.
  for (std::uint32_t s : {0u, 1u, 3u})
    CHECK_FALSE(deadlines.may_decide(s, now()));
}

TEST_CASE("a shard whose deadline is 0 never decides", "[unit]") {
  manual_clock clock;
  shard_deadlines deadlines{2, shard_deadlines::forever};
  CHECK(deadlines.may_decide(1, clock.now().mono_ns));
  deadlines.set(1, 0); // dropped
  for (int i = 0; i < 3; ++i) {
    CHECK_FALSE(deadlines.may_decide(1, clock.now().mono_ns));
    clock.advance(1h);
  }
  CHECK(deadlines.may_decide(0, clock.now().mono_ns));
}

TEST_CASE("a node alone keeps deciding however far the clock moves",
          "[unit]") {
  manual_clock clock;
  shard_deadlines deadlines{1};
  deadlines.set(0, decision_deadline(clock.now().mono_ns, 2s, true));
  for (int i = 0; i < 5; ++i) {
    CHECK(deadlines.may_decide(0, clock.now().mono_ns));
    clock.advance(24h * 365);
  }
}

TEST_CASE("shard numbers out of range never decide", "[unit]") {
  manual_clock clock;
  shard_deadlines deadlines{4, shard_deadlines::forever};
  auto now = clock.now().mono_ns;
  CHECK(deadlines.size() == 4);
  CHECK(deadlines.may_decide(3, now));
  CHECK_FALSE(deadlines.may_decide(4, now));
  CHECK_FALSE(deadlines.may_decide(4294967295u, now));
  deadlines.set(4, shard_deadlines::forever); // ignored
  CHECK_FALSE(deadlines.may_decide(4, now));
  CHECK(deadlines.get(4) == 0);
  shard_deadlines empty{0, shard_deadlines::forever};
  CHECK_FALSE(empty.may_decide(0, now));
}
