// Several nodes on one database: they share the shards, any node answers
// for any user, and nodes join and leave under load without a failed
// request or a lost stream (README.md, "Cluster").

#include <catch2/catch.hpp>

#include <thread>

#include "cluster_harness.hpp"

#include "cluster/assignment.hpp"

using namespace videostreams;
using namespace videostreams::blackbox;
using namespace videostreams::cluster_testing;
using namespace std::chrono_literals;

namespace {

/// Generous for a busy machine: these tests are not about timeouts.
const std::vector<std::string> patient{"--request-timeout=10s"};

std::vector<std::string> with(std::vector<std::string> args,
                              const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

session_players::target target_of_node(const test_node& n) {
  return {n.host(), n.port()};
}

/// Checks that none of the players' requests failed (with the figures of
/// `nodes` that say why, if some did).
void check_no_failures(const session_players& players,
                       const std::vector<const test_node*>& nodes) {
  auto failed = players.failure_count();
  if (failed > 0) {
    for (auto& f : players.failures())
      UNSCOPED_INFO(f);
    UNSCOPED_INFO(why_unavailable(nodes));
  }
  CHECK(failed == 0);
}

/// Checks that every stream the players hold is listed through `via`, and
/// stored in `d`.
void check_streams_kept(const session_players& players, const test_node& via,
                        cluster_database& d) {
  auto cli = via.client();
  auto open = players.open();
  auto missing = missing_streams(*cli, open);
  for (auto& m : missing)
    UNSCOPED_INFO(m);
  CHECK(missing.empty());
  for (auto& [user, sessions] : open)
    CHECK(stored_streams(d, user) == static_cast<int>(sessions.size()));
}

} // namespace

TEST_CASE("three nodes form a cluster: every node names the same owner for "
          "every shard, as rendezvous hashing assigns them",
          "[cluster]") {
  three_nodes c{patient};
  auto& [d, n2, n3, n4] = c;
  auto view = n3.view();
  REQUIRE(view);
  CHECK(view->at("nodeId") == "n3");
  CHECK(view->at("shardCount") == 128);
  // The owners are exactly the targets every node computes.
  CHECK(owners(*view) == assign(128, {"n2", "n3", "n4"}));
  // Members as the member table has them, with their shard counts.
  std::map<std::string, std::int64_t> shards;
  for (auto& m : view->at("members").as_array()) {
    auto id = std::string{m.at("nodeId").as_string()};
    shards[id] = m.at("shards").as_int64();
    CHECK(m.at("advertiseHost").as_string() == "127.0.0." + id.substr(1));
    CHECK(m.at("clusterPort").as_int64() > 0);
    CHECK_FALSE(m.at("lastHeartbeat").as_string().empty());
  }
  CHECK(shards["n2"] + shards["n3"] + shards["n4"] == 128);
  for (auto& [id, n] : shards) {
    INFO(id << " holds " << n << " shards");
    CHECK(n >= 28); // 128/3 = 42.7 on average
    CHECK(n <= 58);
  }
  // The lease table agrees, with epochs.
  for (auto& s : view->at("shards").as_array())
    CHECK(s.at("epoch").as_int64() >= 1);
  CHECK(d.count("SELECT count(*) FROM shard_leases WHERE owner IS NOT NULL "
                "AND expires_at > now()")
        == 128);
  CHECK(d.count("SELECT count(*) FROM cluster_members") == 3);
  for (auto* n : {&n2, &n3, &n4})
    CHECK(n->metric("videostreams_cluster_members") == 3.0);
  // Any node answers for any user, forwarding to the owner.
  auto a = n2.client();
  auto b = n4.client();
  for (std::uint64_t user = 1; user <= 30; ++user) {
    auto path = "/api/startstream/" + std::to_string(user);
    CHECK(get(*a, path).body == granted_body(1));
    CHECK(get(*b, path).body == granted_body(2));
  }
  auto forwarded = n2.metric(
    R"(videostreams_cluster_forwarded_requests_total{peer="n3"})");
  REQUIRE(forwarded);
  CHECK(*forwarded > 0);
  // Each went in a message to the peer, alone or with others.
  auto batches = n2.metric(
    R"(videostreams_cluster_forward_batches_total{peer="n3"})");
  REQUIRE(batches);
  CHECK(*batches >= 1);
  CHECK(*batches <= *forwarded);
}

TEST_CASE("two nodes on ::1 form a cluster: each answers for the other's "
          "users, and both show IPv6 addresses as URLs write them",
          "[cluster]") {
  cluster_database d;
  test_node a{"::1", "six-a", d.dsn, patient};
  test_node b{"::1", "six-b", d.dsn, patient};
  REQUIRE(wait_converged({&a, &b}));
  auto view = a.view();
  REQUIRE(view);
  CHECK(owners(*view) == assign(128, {"six-a", "six-b"}));
  for (auto& m : view->at("members").as_array()) {
    CHECK(m.at("advertiseHost").as_string() == "::1");
    CHECK(m.at("clusterPort").as_int64() > 0);
  }
  // Through each node, users the other owns: every request is forwarded
  // over the middleman, to the peer at ::1.
  for (auto [entry, owner] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
    auto cli = entry->client();
    for (auto user : users_owned_by(*view, owner->id(), 5)) {
      auto path = "/api/startstream/" + std::to_string(user);
      CHECK(get(*cli, path).body == granted_body(1));
      CHECK(stored_streams(d, user) == 1);
    }
    auto forwarded = entry->metric(
      R"(videostreams_cluster_forwarded_requests_total{peer=")" + owner->id()
      + R"("})");
    REQUIRE(forwarded);
    CHECK(*forwarded >= 5);
  }
  // The start line and the other's joining name addresses in brackets.
  auto log = a.process().stderr_text();
  CHECK_THAT(log, Catch::Contains("listening on [::1]:"));
  CHECK_THAT(log, Catch::Contains("operations on [::1]:"));
  CHECK_THAT(log, Catch::Contains("cluster node six-a at [::1]:"));
  CHECK_THAT(log, Catch::Contains("member six-b joined, at [::1]:"));
}

TEST_CASE("concurrent starts for one user through every node grant exactly "
          "the limit",
          "[cluster]") {
  three_nodes c{patient};
  auto& [d, n2, n3, n4] = c;
  std::vector<test_node*> nodes{&n2, &n3, &n4};
  constexpr int per_node = 16;
  std::atomic<int> granted{0}, denied{0}, opened{0}, refused{0}, other{0};
  start_gate gate{3 * per_node * 2};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3 * per_node; ++i) {
    threads.emplace_back([&, i] {
      auto cli = nodes[i % 3]->client(false);
      gate.arrive_and_wait();
      auto r = get(*cli, "/api/startstream/4242");
      if (r.body == granted_body(1) || r.body == granted_body(2)
          || r.body == granted_body(3))
        ++granted;
      else if (r.body == denied_body(3))
        ++denied;
      else
        ++other;
    });
    threads.emplace_back([&, i] {
      auto cli = nodes[(i + 1) % 3]->client(false);
      gate.arrive_and_wait();
      auto r = send(*cli, "POST", "/api/v2/users/4343/streams",
                    R"({"sessionId":"d)" + std::to_string(i) + R"("})");
      if (r.status == 201)
        ++opened;
      else if (r.status == 409)
        ++refused;
      else
        ++other;
    });
  }
  for (auto& t : threads)
    t.join();
  CHECK(granted == 3);
  CHECK(denied == 3 * per_node - 3);
  CHECK(opened == 3);
  CHECK(refused == 3 * per_node - 3);
  CHECK(other == 0);
  CHECK(stored_streams(d, 4242) == 3);
  CHECK(stored_streams(d, 4343) == 3);
}

TEST_CASE("a limit set through a node that does not own the user applies "
          "through every node",
          "[cluster]") {
  auto args = with(patient, {"--admin-token=s3cret"});
  three_nodes c{args};
  auto& [d, n2, n3, n4] = c;
  auto view = n2.view();
  REQUIRE(view);
  auto user = std::to_string(users_owned_by(*view, "n2", 1).front());
  auto base = "/api/v2/users/" + user;
  httplib::Headers admin{{"Authorization", "Bearer s3cret"}};
  auto n3c = n3.client();
  auto r = send(*n3c, "PUT", base + "/limit", R"({"maxStreams":5})", admin);
  CHECK(r.status == 200);
  CHECK(r.body == R"({"userId":)" + user + R"(,"maxStreams":5})");
  auto n4c = n4.client();
  for (int i = 0; i < 5; ++i)
    CHECK(send(*n4c, "POST", base + "/streams").status == 201);
  CHECK(send(*n4c, "POST", base + "/streams").status == 409);
  auto n2c = n2.client();
  auto listed = json::parse(get(*n2c, base + "/streams").body).as_object();
  CHECK(listed.at("maxStreams") == 5);
  CHECK(listed.at("streamCount") == 5);
  CHECK(d.count("SELECT max_streams FROM user_limits WHERE user_id = "
                + user)
        == 5);
  // Cleared through yet another node: the default again.
  CHECK(send(*n2c, "DELETE", base + "/limit", std::nullopt, admin).status
        == 200);
  CHECK(json::parse(get(*n3c, base + "/streams").body).at("maxStreams") == 3);
}

TEST_CASE("the original API's 400s, kicking, replacing and the 410 answer "
          "the same through nodes that do not own the user",
          "[cluster]") {
  three_nodes c{patient};
  auto& [d, n2, n3, n4] = c;
  auto view = n2.view();
  REQUIRE(view);
  auto owned = users_owned_by(*view, "n2", 2);
  auto user = std::to_string(owned.at(0));
  auto stranger = std::to_string(owned.at(1));
  auto n3c = n3.client();
  auto n4c = n4.client();
  // The original API through n3 and n4; n2 decides.
  CHECK(get(*n3c, "/api/startstream/" + user).body == granted_body(1));
  CHECK(get(*n4c, "/api/endstream/" + user).body == closed_body(0));
  auto none = get(*n3c, "/api/endstream/" + user);
  CHECK(none.status == 400);
  CHECK(none.body == no_active_streams_body());
  auto unknown = get(*n4c, "/api/endstream/" + stranger);
  CHECK(unknown.status == 400);
  CHECK(unknown.body == unknown_user_body());
  CHECK(get(*n3c, "/api/endstream/two").body == legacy_bad_id_body());
  // v2: open through n3 and n4, replace through n4, the 410 through n3.
  auto base = "/api/v2/users/" + user + "/streams";
  auto tv = send(*n3c, "POST", base, R"({"sessionId":"tv","ttlSeconds":30})");
  CHECK(tv.status == 201);
  CHECK(json::parse(tv.body).at("heartbeatIntervalSeconds") == 10);
  CHECK(send(*n4c, "POST", base, R"({"sessionId":"phone"})").status == 201);
  CHECK(send(*n3c, "POST", base, R"({"sessionId":"car"})").status == 201);
  CHECK(send(*n4c, "POST", base, R"({"sessionId":"laptop"})").status == 409);
  auto took = send(*n4c, "POST", base,
                   R"({"sessionId":"laptop","replaceSessionId":"tv"})");
  CHECK(took.status == 201);
  CHECK(json::parse(took.body).at("replacedSessionId") == "tv");
  CHECK(json::parse(took.body).at("streamCount") == 3);
  auto gone = send(*n3c, "PUT", base + "/tv");
  CHECK(gone.status == 410);
  CHECK(json::parse(gone.body).at("msg") == "stream ended by another device");
  CHECK(send(*n4c, "DELETE", base + "/phone").status == 200);
  CHECK(send(*n3c, "PUT", base + "/phone").status == 410);
  // The close is written behind.
  CHECK(eventually([&] { return stored_streams(d, owned.at(0)) == 2; }));
}

TEST_CASE("a node that leaves under load hands its shards off: no request "
          "fails and no stream is lost",
          "[cluster]") {
  three_nodes c{patient};
  auto& [d, n2, n3, n4] = c;
  // Players use n2 and n3, as a Service does once n4 is no longer ready.
  session_players players{{target_of_node(n2), target_of_node(n3)}, 10000, 6,
                          40};
  players.start();
  REQUIRE(eventually([&] { return players.requests() > 300; }, 30s));
  auto leave_started = std::chrono::steady_clock::now();
  auto status = n4.process().stop(std::chrono::seconds{40});
  auto leave_took = std::chrono::steady_clock::now() - leave_started;
  auto before = players.requests();
  REQUIRE(eventually([&] { return players.requests() > before + 300; }, 30s));
  players.stop();
  CHECK(status.clean());
  // The issue's bound for 128 shards, HTTP drain included.
  CHECK(leave_took < std::chrono::seconds{30});
  CHECK_THAT(n4.process().stderr_text(), Catch::Contains("handed off"));
  // Its log says so, event by event (docs/observability.md).
  CHECK_THAT(n4.process().stderr_text(),
             Catch::Contains("| event=leaving node=n4 last_member=false"));
  CHECK_THAT(n4.process().stderr_text(),
             Catch::Contains("| event=shard_handed_off node=n4 shards="));
  check_no_failures(players, {&n2, &n3});
  REQUIRE(wait_converged({&n2, &n3}));
  // The others saw it come (at their first reading, or later) and go.
  for (auto* n : {&n2, &n3}) {
    INFO(n->id());
    auto text = n->process().stderr_text();
    auto joined = text.find("| event=member_joined node=" + n->id()
                            + " peer=n4 ");
    auto left = text.find("| event=member_left node=" + n->id()
                          + " peer=n4 reason=\"it left the member table\"");
    CHECK(joined != std::string::npos);
    CHECK(left != std::string::npos);
    CHECK(joined < left);
    CHECK_THAT(text, Catch::Contains("| event=shard_taken node=" + n->id()));
  }
  // Every stream is there, and the database agrees with the nodes.
  check_streams_kept(players, n2, d);
  CHECK(d.count("SELECT count(*) FROM cluster_members") == 2);
  auto handoffs = n3.metric("videostreams_cluster_takeovers_total");
  REQUIRE(handoffs);
  CHECK(*handoffs > 0);
  // A member that left is no peer of theirs any more: its series are gone
  // from their figures (not a peer disconnected for good).
  for (auto* n : {&n2, &n3}) {
    INFO(n->id());
    auto other = std::string{"videostreams_cluster_peer_connected{peer=\""}
                 + (n == &n2 ? "n3" : "n2") + "\"}";
    CHECK(eventually(
      [&] {
        auto cli = n->client(false);
        auto figures = scrape(*cli);
        return metric_value(figures, other) == 1.0
               && !metric_value(
                 figures, R"(videostreams_cluster_peer_connected{peer="n4"})")
               && !metric_value(
                 figures,
                 R"(videostreams_cluster_forwarded_requests_total{peer="n4"})");
      },
      30s));
  }
}

TEST_CASE("two nodes leaving at once under load: the staying nodes take "
          "their shards, no request fails and no stream is lost",
          "[cluster]") {
  cluster_database d;
  test_node n2{2, d.dsn, patient};
  test_node n3{3, d.dsn, patient};
  test_node n4{4, d.dsn, patient};
  test_node n5{5, d.dsn, patient};
  REQUIRE(wait_converged({&n2, &n3, &n4, &n5}));
  session_players players{{target_of_node(n2), target_of_node(n3)}, 30000, 6,
                          40};
  players.start();
  REQUIRE(eventually([&] { return players.requests() > 300; }, 30s));
  // Each hears of the other's leaving only after it began its own: each
  // may first pick the other as a shard's successor.
  exit_status s4, s5;
  std::thread stop_n4{[&] { s4 = n4.process().stop(std::chrono::seconds{40}); }};
  s5 = n5.process().stop(std::chrono::seconds{40});
  stop_n4.join();
  auto before = players.requests();
  REQUIRE(eventually([&] { return players.requests() > before + 300; }, 30s));
  players.stop();
  CHECK(s4.clean());
  CHECK(s5.clean());
  check_no_failures(players, {&n2, &n3});
  REQUIRE(wait_converged({&n2, &n3}));
  check_streams_kept(players, n2, d);
  CHECK(d.count("SELECT count(*) FROM cluster_members") == 2);
}

TEST_CASE("a node that joins under load takes its share: no request fails "
          "and no stream is lost",
          "[cluster]") {
  cluster_database d;
  test_node n2{2, d.dsn, patient};
  test_node n3{3, d.dsn, patient};
  REQUIRE(wait_converged({&n2, &n3}));
  session_players players{{target_of_node(n2), target_of_node(n3)}, 20000, 6,
                          40};
  players.start();
  REQUIRE(eventually([&] { return players.requests() > 300; }, 30s));
  // The newcomer logs JSON: every line must parse, in a real cluster too.
  auto json_logs = patient;
  json_logs.push_back("--log-format=json");
  test_node n5{5, d.dsn, json_logs};
  REQUIRE(wait_converged({&n2, &n3, &n5}));
  auto before = players.requests();
  REQUIRE(eventually([&] { return players.requests() > before + 300; }, 30s));
  players.stop();
  check_no_failures(players, {&n2, &n3, &n5});
  auto view = n5.view();
  REQUIRE(view);
  CHECK(owners(*view) == assign(128, {"n2", "n3", "n5"}));
  // Every stream is there, through the new node too.
  check_streams_kept(players, n5, d);
  auto handed = n2.metric("videostreams_cluster_handoffs_total");
  REQUIRE(handed);
  CHECK(*handed > 0);
  // n2 saw n5 join and handed it shards; n5 took them.
  auto n2_log = n2.process().stderr_text();
  CHECK_THAT(n2_log, Catch::Contains("| event=member_joined node=n2 peer=n5 "
                                     "host=127.0.0.5 "));
  bool handed_to_n5 = false;
  for (auto at = n2_log.find("| event=shard_handed_off node=n2 shards=");
       at != std::string::npos;
       at = n2_log.find("| event=shard_handed_off node=n2 shards=", at + 1)) {
    auto line = n2_log.substr(at, n2_log.find('\n', at) - at);
    handed_to_n5 = handed_to_n5
                   || (line.find(" epochs=") != std::string::npos
                       && line.size() > 8
                       && line.compare(line.size() - 8, 8, " peer=n5") == 0);
  }
  CHECK(handed_to_n5);
  std::size_t taken = 0;
  bool ready = false;
  auto text = n5.process().stderr_text();
  for (std::size_t at = 0; at < text.size();) {
    auto eol = text.find('\n', at);
    REQUIRE(eol != std::string::npos);
    auto line = text.substr(at, eol - at);
    at = eol + 1;
    INFO(line);
    json::error_code ec;
    auto v = json::parse(line, ec);
    REQUIRE_FALSE(ec);
    auto& o = v.as_object();
    CHECK(o.at("node") == "n5");
    if (o.at("event") == "shard_taken") {
      auto& shards = o.at("shards").as_array();
      CHECK(shards.size() == o.at("epochs").as_array().size());
      taken += shards.size();
    }
    if (o.at("event") == "ready")
      ready = true;
  }
  CHECK(ready);
  // Its share, taken once each (and again only after a failed load).
  auto owner_list = owners(*view);
  CHECK(taken >= static_cast<std::size_t>(std::count(
                   owner_list.begin(), owner_list.end(), std::string{"n5"})));
}
