// docs/api.md, "Every answer": the owner of the user could not answer in time.
// With --request-timeout=1ms and one actor thread, 48 connections ask for
// new users (each spawns a user actor) as fast as they can, so that some
// answers may miss the deadline. Whether any does is up to the machine (the
// unit tier checks the 503 mapping deterministically); this test checks
// every answer the real binary gives under that pressure, and warns when
// none was a 503.

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "client_pool.hpp"
#include "http_probe.hpp"
#include "service_process.hpp"

using namespace videostreams::blackbox;

namespace {

constexpr std::size_t load_clients = 48;
constexpr int max_requests_per_client = 300;

/// What is wrong with `r` as an answer to a first start for a user under a
/// 1 ms deadline, or "" when it is a grant or a well-formed 503.
std::string fault(const reply& r) {
  if (r.header("Access-Control-Allow-Origin") != "*")
    return "no CORS header";
  if (r.header("Content-Type") != json_content_type)
    return "Content-Type " + r.header("Content-Type");
  if (r.status == 200)
    return r.body == granted_body(1) ? "" : "unexpected body";
  if (r.status != 503)
    return "unexpected status";
  if (r.body != R"({"msg":"Service Unavailable"})")
    return "unexpected 503 body";
  auto retry_after = r.header("Retry-After");
  if (retry_after.empty()
      || retry_after.find_first_not_of("0123456789") != std::string::npos
      || std::atoi(retry_after.c_str()) < 1)
    return "Retry-After '" + retry_after + "'";
  return "";
}

} // namespace

TEST_CASE("answers under a 1 ms deadline are grants or 503 with Retry-After",
          "[blackbox]") {
  service_process svc{
    {"--request-timeout=1ms", "--actor-threads=1", "--http-threads=64"}};
  std::vector<std::vector<std::string>> faults(load_clients);
  std::atomic<int> unavailable{0};
  std::atomic<int> answered{0};
  {
    client_pool pool{svc.port(), load_clients};
    pool.run([&](std::size_t i, httplib::Client& cli) {
      for (int k = 0; k < max_requests_per_client && unavailable == 0; ++k) {
        // A new user each time: every answer should be a first grant.
        auto user = std::to_string(100000 * (i + 1) + std::size_t(k));
        auto r = get(cli, "/api/startstream/" + user);
        ++answered;
        if (r.status == 503)
          ++unavailable;
        if (auto f = fault(r); !f.empty())
          faults[i].push_back("user " + user + ": " + f + " ("
                              + std::to_string(r.status) + " " + r.body + " "
                              + r.error + ")");
      }
    });
  }
  if (unavailable == 0)
    WARN("no request missed the 1 ms deadline in " << answered
                                                   << " requests; the 503 "
                                                      "answer went unchecked");
  std::size_t fault_count = 0;
  for (auto& list : faults) {
    for (auto& f : list)
      if (++fault_count <= 10)
        FAIL_CHECK(f);
  }
  CHECK(fault_count == 0);
  auto cli = make_client(svc.port());
  CHECK(get(*cli, "/healthz").status == 200);
}
