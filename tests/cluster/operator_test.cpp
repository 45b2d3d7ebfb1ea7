// What the operator page reads of a cluster: every member's figures,
// gathered by any node (GET /api/cluster/metrics), and a user's owner
// (GET /api/cluster/users/:user_id), on three nodes.

#include <csignal>

#include <catch2/catch.hpp>

#include "cluster_harness.hpp"

#include "actors/shard_map.hpp"

using namespace videostreams;
using namespace videostreams::blackbox;
using namespace videostreams::cluster_testing;
using namespace std::chrono_literals;

namespace {

/// The members of a `GET /api/cluster/metrics` answer by node id; nothing
/// when it did not answer 200.
std::optional<std::map<std::string, json::object>>
member_figures(const test_node& via) {
  auto cli = via.client(false);
  auto r = get(*cli, "/api/cluster/metrics");
  if (r.status != 200)
    return std::nullopt;
  auto body = json::parse(r.body).as_object();
  if (body.at("nodeId").as_string() != via.id())
    return std::nullopt;
  std::map<std::string, json::object> result;
  for (auto& m : body.at("members").as_array())
    result[std::string{m.at("nodeId").as_string()}] = m.as_object();
  return result;
}

} // namespace

TEST_CASE("any node gathers the figures of every member, a stopped member "
          "is reported unreachable",
          "[cluster]") {
  // Leases long enough that the stopped node stays a member while the
  // others report it.
  three_nodes c{{"--request-timeout=10s", "--lease-ttl=60s"}};
  auto view = c.n2.view();
  REQUIRE(view);
  // 1, 2 and 3 streams on the shards of n2, n3 and n4.
  auto cli = c.n2.client();
  std::map<std::string, int> expected{{"n2", 1}, {"n3", 2}, {"n4", 3}};
  for (auto& [node, count] : expected)
    for (auto user : users_owned_by(*view, node, count))
      REQUIRE(get(*cli, "/api/startstream/" + std::to_string(user)).status
              == 200);
  for (auto* via : {&c.n2, &c.n3, &c.n4}) {
    INFO("via " << via->id());
    std::map<std::string, json::object> last;
    CHECK(eventually([&] {
      auto figures = member_figures(*via);
      if (!figures || figures->size() != 3)
        return false;
      last = *figures;
      for (auto& [node, count] : expected)
        if (last[node].at("reachable") != true
            || last[node].at("openStreams") != count)
          return false;
      return true;
    }));
    for (auto& [node, m] : last)
      INFO(node << ": " << json::serialize(m));
  }
  // The user look-up names the owner the cluster view gives.
  auto user = users_owned_by(*view, "n3", 1).front();
  auto r = get(*cli, "/api/cluster/users/" + std::to_string(user));
  REQUIRE(r.status == 200);
  auto found = json::parse(r.body).as_object();
  CHECK(found.at("owner") == "n3");
  CHECK(found.at("shard") == shard_of(user, 128));
  CHECK(found.at("streams").at("streamCount") == 1);

  // A stopped n4 accepts connections (the kernel does) but answers
  // nothing: n2 reports it unreachable after its read timeout, and the
  // others as usual.
  c.n4.process().send_signal(SIGSTOP);
  std::map<std::string, json::object> last;
  bool reported = eventually([&] {
    auto figures = member_figures(c.n2);
    if (!figures)
      return false;
    last = *figures;
    return last.count("n4") && last["n4"].at("reachable") == false
           && last["n2"].at("reachable") == true
           && last["n3"].at("reachable") == true;
  });
  c.n4.process().send_signal(SIGCONT);
  for (auto& [node, m] : last)
    INFO(node << ": " << json::serialize(m));
  REQUIRE(reported);
  CHECK(last["n4"].at("error").as_string().size() > 0);
  CHECK(last["n3"].at("openStreams") == 2);
}
