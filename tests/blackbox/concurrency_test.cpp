// docs/api.md's promise 1, never over the limit: many connections hitting one
// user at the same instant, on the real binary.

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "client_pool.hpp"
#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;

namespace {

constexpr int parallel_clients = 48;
constexpr int limit = 3;

/// Counts the replies by body; a reply that is not a 200 nor a 400 of the
/// original API is counted under its status and error, so that it shows in
/// a failure message.
std::map<std::string, int> tally(const std::vector<reply>& replies) {
  std::map<std::string, int> result;
  for (auto& r : replies)
    ++result[r.status == 200 || r.status == 400 ? r.body
                             : std::to_string(r.status) + " " + r.error + " "
                                 + r.body];
  return result;
}

std::string describe(const std::map<std::string, int>& counts) {
  std::string out;
  for (auto& [body, n] : counts)
    out += "\n  " + std::to_string(n) + " x " + body;
  return out;
}

std::vector<std::string> service_args(int actor_threads) {
  return {"--http-threads=64",
          "--actor-threads=" + std::to_string(actor_threads)};
}

} // namespace

TEST_CASE("simultaneous starts for one user grant exactly the limit",
          "[blackbox]") {
  auto actor_threads = GENERATE(1, 4);
  service_process svc{service_args(actor_threads)};
  auto check = make_client(svc.port());
  int rounds = 4;
  {
    client_pool pool{svc.port(), std::size_t{parallel_clients}};
    for (int round = 0; round < rounds; ++round) {
      auto user = std::to_string(500 + round);
      auto counts = tally(
        pool.fire([&](std::size_t) { return "/api/startstream/" + user; }));
      INFO("actor threads " << actor_threads << ", user " << user
                            << ", answers:" << describe(counts));
      // Each grant took the next slot: 1, 2 and 3 exactly once.
      CHECK(counts[granted_body(1)] == 1);
      CHECK(counts[granted_body(2)] == 1);
      CHECK(counts[granted_body(3)] == 1);
      CHECK(counts[denied_body(3)] == parallel_clients - limit);
      CHECK(counts.size() == 4);
      // The final count is 3: the next start is denied at 3.
      CHECK(get(*check, "/api/startstream/" + user).body == denied_body(3));
    }
  }
  auto text = scrape(*check);
  CHECK(metric_value(text, "videostreams_open_streams") == rounds * limit);
  CHECK(metric_value(text, "videostreams_stream_grants_total")
        == rounds * limit);
  CHECK(metric_value(text, "videostreams_stream_denials_total")
        == rounds * (parallel_clients - limit + 1));
}

TEST_CASE("simultaneous ends for a user with 3 streams close exactly 3",
          "[blackbox]") {
  auto actor_threads = GENERATE(1, 4);
  service_process svc{service_args(actor_threads)};
  auto check = make_client(svc.port());
  int rounds = 4;
  {
    client_pool pool{svc.port(), std::size_t{parallel_clients}};
    for (int round = 0; round < rounds; ++round) {
      auto user = std::to_string(700 + round);
      for (int i = 1; i <= limit; ++i)
        REQUIRE(get(*check, "/api/startstream/" + user).body
                == granted_body(i));
      auto counts = tally(
        pool.fire([&](std::size_t) { return "/api/endstream/" + user; }));
      INFO("actor threads " << actor_threads << ", user " << user
                            << ", answers:" << describe(counts));
      CHECK(counts[closed_body(2)] == 1);
      CHECK(counts[closed_body(1)] == 1);
      CHECK(counts[closed_body(0)] == 1);
      CHECK(counts[no_active_streams_body()] == parallel_clients - limit);
      CHECK(counts.size() == 4);
      // The final count is 0, not below: exactly 3 starts fit again.
      CHECK(get(*check, "/api/endstream/" + user).body
            == no_active_streams_body());
      for (int i = 1; i <= limit; ++i)
        CHECK(get(*check, "/api/startstream/" + user).body
              == granted_body(i));
      CHECK(get(*check, "/api/startstream/" + user).body == denied_body(3));
    }
  }
  CHECK(metric_value(scrape(*check), "videostreams_open_streams")
        == rounds * limit);
}

TEST_CASE("simultaneous starts for several users grant each exactly the "
          "limit",
          "[blackbox]") {
  constexpr int users = 8; // 6 requests each
  service_process svc{service_args(4)};
  auto check = make_client(svc.port());
  {
    client_pool pool{svc.port(), std::size_t{parallel_clients}};
    for (int round = 0; round < 3; ++round) {
      auto base = 900 + round * users;
      auto replies = pool.fire([&](std::size_t i) {
        return "/api/startstream/" + std::to_string(base + i % users);
      });
      for (int u = 0; u < users; ++u) {
        std::vector<reply> mine;
        for (std::size_t i = static_cast<std::size_t>(u); i < replies.size();
             i += users)
          mine.push_back(replies[i]);
        auto counts = tally(mine);
        INFO("user " << base + u << ", answers:" << describe(counts));
        CHECK(counts[granted_body(1)] == 1);
        CHECK(counts[granted_body(2)] == 1);
        CHECK(counts[granted_body(3)] == 1);
        CHECK(counts[denied_body(3)] == parallel_clients / users - limit);
        CHECK(counts.size() == 4);
      }
    }
  }
  CHECK(metric_value(scrape(*check), "videostreams_open_streams")
        == 3 * users * limit);
}

TEST_CASE("interleaved starts and ends keep one user within 0 and the limit",
          "[blackbox]") {
  auto actor_threads = GENERATE(1, 4);
  constexpr int iterations = 25;
  service_process svc{service_args(actor_threads)};
  auto check = make_client(svc.port());
  struct seen {
    int grants = 0;
    int denials = 0;
    std::vector<std::string> wrong;
  };
  std::vector<seen> logs(parallel_clients);
  {
    client_pool pool{svc.port(), std::size_t{parallel_clients}};
    pool.run([&](std::size_t i, httplib::Client& cli) {
      auto& log = logs[i];
      for (int k = 0; k < iterations; ++k) {
        auto r = get(cli, "/api/startstream/4242");
        bool granted = false;
        for (int n = 1; n <= limit; ++n)
          granted = granted || r.body == granted_body(n);
        if (granted) {
          ++log.grants;
        } else if (r.body == denied_body(limit)) {
          // A denial happens only at the limit.
          ++log.denials;
          continue;
        } else {
          log.wrong.push_back("start: " + std::to_string(r.status) + " "
                              + r.body + r.error);
          continue;
        }
        // This client holds a stream, so there is one to close, and the
        // count after closing is below the limit.
        auto e = get(cli, "/api/endstream/4242");
        bool closed = false;
        for (int n = 0; n < limit; ++n)
          closed = closed || e.body == closed_body(n);
        if (!closed)
          log.wrong.push_back("end: " + std::to_string(e.status) + " "
                              + e.body + e.error);
      }
    });
  }
  int grants = 0;
  int denials = 0;
  for (auto& log : logs) {
    grants += log.grants;
    denials += log.denials;
    for (auto& w : log.wrong)
      FAIL_CHECK("actor threads " << actor_threads << ", " << w);
  }
  CHECK(grants + denials == parallel_clients * iterations);
  CHECK(grants >= limit);
  // Every grant was closed: the count is back at 0, not below.
  CHECK(get(*check, "/api/endstream/4242").body == no_active_streams_body());
  auto text = scrape(*check);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == grants);
  CHECK(metric_value(text, "videostreams_stream_denials_total") == denials);
}
