// The /metrics exposition (http/metrics): every family has a sample from
// the start, in memory and with a database; the edge's answers, build
// information, per-peer placeholders and the persistence histograms.

#include "http/metrics.hpp"

#include <catch2/catch.hpp>

#include <string>

#include "exposition.hpp"

using namespace videostreams;
using videostreams::testing::check_exposition;

TEST_CASE("every metric family shows a sample from the start, in memory",
          "[unit]") {
  http_metrics metrics;
  metrics.set_build_info("1.2.3", "n1", "in-memory");
  stream_counters counters;
  cluster_counters cluster;
  auto text = metrics.render(counters, nullptr, &cluster);
  auto r = check_exposition(text);
  INFO(r.problems_text());
  CHECK(r.ok());
  // The database's families are there, at 0; so is the database.
  CHECK(r.value("videostreams_persistence_queue_depth") == 0);
  CHECK(r.value("videostreams_persistence_errors_total") == 0);
  CHECK(r.value("videostreams_persistence_commit_duration_seconds_count")
        == 0);
  CHECK(r.value("videostreams_persistence_batch_size_count") == 0);
  CHECK(r.value("videostreams_database_up") == 0);
  CHECK(r.value(R"(videostreams_build_info{version="1.2.3",node_id="n1",)"
                R"(mode="in-memory"})")
        == 1);
  // No peer yet: one unlabelled zero series per per-peer family.
  CHECK(r.value("videostreams_cluster_peer_connected") == 0);
  CHECK(r.value("videostreams_cluster_forwarded_requests_total") == 0);
  CHECK(r.value("videostreams_cluster_forward_duration_seconds_count") == 0);
  CHECK(r.value(
          R"(videostreams_cluster_forward_duration_seconds_bucket{le="+Inf"})")
        == 0);
  // A route that answered nothing shows its usual code at 0.
  CHECK(r.value(R"(videostreams_http_requests_total{route="/api/startstream/:user_id",code="200"})")
        == 0);
  CHECK(r.value(R"(videostreams_http_requests_total{route="unmatched",code="404"})")
        == 0);
  CHECK(r.value(R"x(videostreams_http_requests_total{route="(edge)",code="400"})x")
        == 0);
  // Every family docs/observability.md lists.
  for (auto family :
       {"videostreams_http_requests_total",
        "videostreams_http_request_duration_seconds",
        "videostreams_open_streams", "videostreams_live_user_actors",
        "videostreams_stream_grants_total", "videostreams_stream_denials_total",
        "videostreams_persistence_queue_depth",
        "videostreams_persistence_last_batch_size",
        "videostreams_persistence_batch_size",
        "videostreams_persistence_commit_duration_seconds",
        "videostreams_persistence_commit_seconds_total",
        "videostreams_persistence_errors_total",
        "videostreams_cluster_shards_owned",
        "videostreams_cluster_forwarded_requests_total",
        "videostreams_database_up", "videostreams_build_info"}) {
    INFO(family);
    CHECK(r.families.count(family) == 1);
  }
  CHECK(r.families.at("videostreams_persistence_commit_duration_seconds")
        == "histogram");
}

TEST_CASE("with a database and peers, the series are the real ones",
          "[unit]") {
  http_metrics metrics;
  metrics.set_build_info("1.2.3", "n2", "database");
  stream_counters counters;
  cluster_counters cluster;
  cluster.peer("n3")->forwarded.store(7);
  cluster.peer("n3")->connected.store(1);
  cluster.peer("n4");
  persistence_counters persistence;
  persistence.commit_ns.store(3'000'000); // 3 ms over two commits
  persistence.commit_duration[1].store(1); // <= 1 ms
  persistence.commit_duration[3].store(1); // <= 5 ms
  persistence.batch_sizes[0].store(1);     // 1 change
  persistence.batch_sizes[4].store(1);     // <= 20 changes
  persistence.changes_written.store(16);
  auto r = check_exposition(metrics.render(counters, &persistence, &cluster));
  INFO(r.problems_text());
  CHECK(r.ok());
  CHECK(r.value("videostreams_database_up") == 1);
  CHECK(r.value(R"(videostreams_build_info{version="1.2.3",node_id="n2",)"
                R"(mode="database"})")
        == 1);
  CHECK(r.value(R"(videostreams_cluster_peer_connected{peer="n3"})") == 1);
  CHECK(r.value(R"(videostreams_cluster_peer_connected{peer="n4"})") == 0);
  CHECK(r.value(R"(videostreams_cluster_forwarded_requests_total{peer="n3"})")
        == 7);
  // The placeholder is gone once a peer is known.
  CHECK(r.value("videostreams_cluster_peer_connected") == -1);
  CHECK(r.value("videostreams_cluster_forwarded_requests_total") == -1);
  CHECK(r.value(R"(videostreams_persistence_commit_duration_seconds_bucket{le="0.0005"})")
        == 0);
  CHECK(r.value(R"(videostreams_persistence_commit_duration_seconds_bucket{le="0.001"})")
        == 1);
  CHECK(r.value(R"(videostreams_persistence_commit_duration_seconds_bucket{le="0.005"})")
        == 2);
  CHECK(r.value(R"(videostreams_persistence_commit_duration_seconds_bucket{le="+Inf"})")
        == 2);
  CHECK(r.value("videostreams_persistence_commit_duration_seconds_count") == 2);
  CHECK(r.value("videostreams_persistence_commit_duration_seconds_sum")
        == Approx(0.003));
  CHECK(r.value("videostreams_persistence_commit_seconds_total")
        == Approx(0.003));
  CHECK(r.value(R"(videostreams_persistence_batch_size_bucket{le="1"})") == 1);
  CHECK(r.value(R"(videostreams_persistence_batch_size_bucket{le="20"})") == 2);
  CHECK(r.value("videostreams_persistence_batch_size_sum") == 16);
}

TEST_CASE("requests the edge answered count as route (edge), by status",
          "[unit]") {
  http_metrics metrics;
  stream_counters counters;
  for (int status : {400, 400, 413, 414, 415, 431, 503})
    metrics.record_edge(status);
  metrics.record_edge(418); // any other code
  metrics.record_edge(416); // the edge ignores Range: no code of its own
  CHECK(metrics.edge_requests(400) == 2);
  CHECK(metrics.edge_requests(431) == 1);
  auto r = check_exposition(metrics.render(counters));
  INFO(r.problems_text());
  CHECK(r.ok());
  auto edge = [&r](const char* code) {
    return r.value(std::string{R"x(videostreams_http_requests_total{route="(edge)",code=")x"}
                   + code + "\"}");
  };
  CHECK(edge("400") == 2);
  CHECK(edge("413") == 1);
  CHECK(edge("414") == 1);
  CHECK(edge("415") == 1);
  CHECK(edge("431") == 1);
  CHECK(edge("503") == 1);
  CHECK(edge("other") == 2);
  // Not a route: the edge's answers are not in the latency histogram.
  CHECK(r.value(R"x(videostreams_http_request_duration_seconds_count{route="(edge)"})x")
        == -1);
}

TEST_CASE("the exposition check itself finds what it must", "[unit]") {
  auto bad = check_exposition("# TYPE a counter\n# TYPE b gauge\nb 1\n"
                              "c 2\nb 3\nd{x=\"1\"} x\n");
  CHECK_FALSE(bad.ok());
  auto text = bad.problems_text();
  CHECK_THAT(text, Catch::Contains("family without a sample: a"));
  CHECK_THAT(text, Catch::Contains("a sample of no declared family: c 2"));
  CHECK_THAT(text, Catch::Contains("repeated series: b"));
  CHECK_THAT(text, Catch::Contains("not a number"));
  CHECK(check_exposition("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 0\n"
                         "h_sum 0\nh_count 0\n")
          .ok());
}

TEST_CASE("a request latency on a bucket's bound counts in that bucket, and "
          "_count and _sum hold every request",
          "[unit]") {
  using namespace std::chrono_literals;
  http_metrics metrics;
  stream_counters counters;
  // Exactly 1 ms: in le="0.001" (Prometheus buckets are "less or equal").
  metrics.record(route::startstream, 200, 1ms);
  // Exactly 2.5 s, the largest bound, and 3 s, above every bound.
  metrics.record(route::startstream, 200, 2500ms);
  metrics.record(route::startstream, 503, 3s);
  auto r = check_exposition(metrics.render(counters));
  INFO(r.problems_text());
  CHECK(r.ok());
  auto bucket = [&r](const char* le) {
    return r.value(std::string{"videostreams_http_request_duration_seconds_"
                               "bucket{route=\"/api/startstream/:user_id\","
                               "le=\""}
                   + le + "\"}");
  };
  CHECK(bucket("0.0005") == 0);
  CHECK(bucket("0.001") == 1);
  CHECK(bucket("1") == 1);
  CHECK(bucket("2.5") == 2);
  CHECK(bucket("+Inf") == 3);
  CHECK(r.value(R"(videostreams_http_request_duration_seconds_count{route="/api/startstream/:user_id"})")
        == 3);
  CHECK(r.value(R"(videostreams_http_request_duration_seconds_sum{route="/api/startstream/:user_id"})")
        == Approx(5.501));
  CHECK(r.value(R"(videostreams_http_requests_total{route="/api/startstream/:user_id",code="200"})")
        == 2);
  CHECK(r.value(R"(videostreams_http_requests_total{route="/api/startstream/:user_id",code="503"})")
        == 1);
  // Other routes stay empty.
  CHECK(r.value(R"(videostreams_http_request_duration_seconds_count{route="/api/endstream/:user_id"})")
        == 0);
  // The persistence histograms count what lies above their last bound too.
  persistence_counters persistence;
  persistence.commit_duration[0].store(1);
  persistence.commit_duration[persistence_counters::commit_buckets.size()]
    .store(2); // above 10 s
  persistence.commit_ns.store(25'000'000'000);
  auto p = check_exposition(metrics.render(counters, &persistence));
  CHECK(p.value(R"(videostreams_persistence_commit_duration_seconds_bucket{le="10"})")
        == 1);
  CHECK(p.value(R"(videostreams_persistence_commit_duration_seconds_bucket{le="+Inf"})")
        == 3);
  CHECK(p.value("videostreams_persistence_commit_duration_seconds_count")
        == 3);
  CHECK(p.value("videostreams_persistence_commit_duration_seconds_sum")
        == Approx(25));
}

TEST_CASE("videostreams_database_up follows whether the database answers",
          "[unit]") {
  http_metrics metrics;
  stream_counters counters;
  persistence_counters persistence;
  persistence.reachable.store(true);
  CHECK(check_exposition(metrics.render(counters, &persistence))
          .value("videostreams_database_up")
        == 1);
  persistence.reachable.store(false);
  CHECK(check_exposition(metrics.render(counters, &persistence))
          .value("videostreams_database_up")
        == 0);
  persistence.reachable.store(true);
  CHECK(check_exposition(metrics.render(counters, &persistence))
          .value("videostreams_database_up")
        == 1);
}

TEST_CASE("each counter and gauge shows under its own family", "[unit]") {
  http_metrics metrics;
  stream_counters counters;
  counters.open_streams.store(101);
  counters.live_user_actors.store(102);
  counters.passive_records.store(103);
  counters.grants.store(104);
  counters.failed_grants.store(105);
  counters.denials.store(106);
  counters.expirations.store(107);
  counters.passivations.store(108);
  counters.activations.store(109);
  counters.lease_refusals.store(110);
  counters.late_commands.store(111);
  cluster_counters cluster;
  cluster.members.store(201);
  cluster.shards_owned.store(202);
  cluster.takeovers.store(203);
  cluster.handoffs.store(204);
  cluster.shards_lost.store(205);
  cluster.renewal_failures.store(206);
  cluster.held.store(207);
  cluster.held_timeouts.store(208);
  auto& api = metrics.listener(listener_kind::api);
  api.open_connections.store(301);
  api.accepted.store(302);
  api.shed.store(303);
  api.evicted.store(304);
  api.timed_out.store(305);
  api.refused.store(306);
  api.workers.store(307);
  api.busy_workers.store(308);
  auto& ops = metrics.listener(listener_kind::ops);
  ops.workers.store(401);
  ops.busy_workers.store(402);
  auto r = check_exposition(metrics.render(counters, nullptr, &cluster));
  INFO(r.problems_text());
  CHECK(r.ok());
  const std::vector<std::pair<std::string, double>> expected{
    {"videostreams_open_streams", 101},
    {"videostreams_live_user_actors", 102},
    {"videostreams_passive_user_records", 103},
    {"videostreams_stream_grants_total", 104},
    {"videostreams_stream_grant_failures_total", 105},
    {"videostreams_stream_denials_total", 106},
    {"videostreams_stream_expirations_total", 107},
    {"videostreams_user_passivations_total", 108},
    {"videostreams_user_activations_total", 109},
    {"videostreams_stream_lease_refusals_total", 110},
    {"videostreams_stream_late_commands_total", 111},
    {"videostreams_cluster_members", 201},
    {"videostreams_cluster_shards_owned", 202},
    {"videostreams_cluster_takeovers_total", 203},
    {"videostreams_cluster_handoffs_total", 204},
    {"videostreams_cluster_shards_lost_total", 205},
    {"videostreams_cluster_lease_renewal_failures_total", 206},
    {"videostreams_cluster_held_requests_total", 207},
    {"videostreams_cluster_held_timeouts_total", 208},
    {R"(videostreams_http_open_connections{listener="api"})", 301},
    {R"(videostreams_http_connections_accepted_total{listener="api"})", 302},
    {R"(videostreams_http_connections_shed_total{listener="api"})", 303},
    {R"(videostreams_http_connections_evicted_total{listener="api"})", 304},
    {R"(videostreams_http_connections_timed_out_total{listener="api"})", 305},
    {R"(videostreams_http_requests_refused_total{listener="api"})", 306},
    {R"(videostreams_http_workers{listener="api"})", 307},
    {R"(videostreams_http_busy_workers{listener="api"})", 308},
    {R"(videostreams_http_workers{listener="ops"})", 401},
    {R"(videostreams_http_busy_workers{listener="ops"})", 402},
    {R"(videostreams_http_open_connections{listener="ops"})", 0},
  };
  for (auto& [series, value] : expected) {
    INFO(series);
    CHECK(r.value(series) == value);
  }
}
