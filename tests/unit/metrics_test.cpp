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
