// Load generator for the v2 session API (bench/run and bench/memory).
//
//   session_load --port=P --mode=open --users=N [--first-user=0]
//                [--connections=16] [--ttl=60]
//       opens one session for each of N users (POST .../streams), then exits.
//   session_load --port=P --mode=cycle [--duration=10] [--connections=32]
//                [--users=100000] [--first-user=0]
//       each connection repeats: open a session for a random user of
//       [first-user, first-user + users), heartbeat it 3 times, delete it;
//       for --duration seconds.
//
// Prints one line: RESULT requests=... rps=... p50_us=... p99_us=...
// errors=... (an error is a transport failure or an unexpected status).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace {

struct args {
  int port = 0;
  std::string mode = "cycle";
  long users = 100000;
  long first_user = 0;
  int connections = 32;
  int duration = 10;
  int ttl = 60;
};

args parse(int argc, char** argv) {
  args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&](const char* name) -> const char* {
      auto n = std::strlen(name);
      return s.compare(0, n, name) == 0 ? argv[i] + n : nullptr;
    };
    if (auto v = value("--port="))
      a.port = std::atoi(v);
    else if (auto v = value("--mode="))
      a.mode = v;
    else if (auto v = value("--users="))
      a.users = std::atol(v);
    else if (auto v = value("--first-user="))
      a.first_user = std::atol(v);
    else if (auto v = value("--connections="))
      a.connections = std::atoi(v);
    else if (auto v = value("--duration="))
      a.duration = std::atoi(v);
    else if (auto v = value("--ttl="))
      a.ttl = std::atoi(v);
    else {
      std::fprintf(stderr, "session_load: unknown argument %s\n", argv[i]);
      std::exit(2);
    }
  }
  if (a.port <= 0 || (a.mode != "open" && a.mode != "cycle")) {
    std::fprintf(stderr, "session_load: need --port and --mode=open|cycle\n");
    std::exit(2);
  }
  return a;
}

/// Per-connection figures, merged at the end.
struct tally {
  std::vector<std::uint32_t> latencies_us;
  long errors = 0;
};

template <class F>
bool timed(tally& t, int expected, F&& send) {
  auto start = std::chrono::steady_clock::now();
  auto res = send();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::steady_clock::now() - start)
              .count();
  t.latencies_us.push_back(static_cast<std::uint32_t>(us));
  if (!res || res->status != expected) {
    if (t.errors++ < 3)
      std::fprintf(stderr, "session_load: expected %d, got %s\n", expected,
                   res ? std::to_string(res->status).c_str()
                       : httplib::to_string(res.error()).c_str());
    return false;
  }
  return true;
}

httplib::Client client_for(int port) {
  httplib::Client cli{"127.0.0.1", port};
  cli.set_tcp_nodelay(true);
  cli.set_keep_alive(true);
  cli.set_read_timeout(5, 0);
  return cli;
}

void open_sessions(const args& a, long first, long last, tally& t) {
  auto cli = client_for(a.port);
  auto body = "{\"sessionId\":\"bench\",\"ttlSeconds\":" + std::to_string(a.ttl)
              + "}";
  for (long u = first; u < last; ++u) {
    auto path = "/api/v2/users/" + std::to_string(u) + "/streams";
    timed(t, 201, [&] {
      return cli.Post(path.c_str(), body, "application/json");
    });
  }
}

void cycle_sessions(const args& a, int seed,
                    std::chrono::steady_clock::time_point until, tally& t) {
  auto cli = client_for(a.port);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<long> pick(a.first_user,
                                          a.first_user + a.users - 1);
  auto body = "{\"sessionId\":\"c" + std::to_string(seed) + "\"}";
  while (std::chrono::steady_clock::now() < until) {
    auto base = "/api/v2/users/" + std::to_string(pick(rng)) + "/streams";
    auto one = base + "/c" + std::to_string(seed);
    if (!timed(t, 201, [&] {
          return cli.Post(base.c_str(), body, "application/json");
        }))
      continue;
    for (int i = 0; i < 3; ++i)
      timed(t, 200, [&] { return cli.Put(one.c_str()); });
    timed(t, 200, [&] { return cli.Delete(one.c_str()); });
  }
}

} // namespace

int main(int argc, char** argv) {
  auto a = parse(argc, argv);
  std::vector<tally> tallies(static_cast<std::size_t>(a.connections));
  std::vector<std::thread> threads;
  auto start = std::chrono::steady_clock::now();
  auto until = start + std::chrono::seconds{a.duration};
  for (int c = 0; c < a.connections; ++c) {
    threads.emplace_back([&, c] {
      if (a.mode == "open") {
        auto per = (a.users + a.connections - 1) / a.connections;
        auto first = a.first_user + c * per;
        auto last = std::min(a.first_user + a.users, first + per);
        open_sessions(a, first, last, tallies[c]);
      } else {
        cycle_sessions(a, c + 1, until, tallies[c]);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  auto seconds = std::chrono::duration<double>(
                   std::chrono::steady_clock::now() - start)
                   .count();
  std::vector<std::uint32_t> all;
  long errors = 0;
  for (auto& t : tallies) {
    all.insert(all.end(), t.latencies_us.begin(), t.latencies_us.end());
    errors += t.errors;
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0u : all[static_cast<std::size_t>(p * (all.size() - 1))];
  };
  std::printf("RESULT requests=%zu seconds=%.2f rps=%.1f p50_us=%u p99_us=%u "
              "errors=%ld\n",
              all.size(), seconds, all.size() / seconds, pct(0.50), pct(0.99),
              errors);
  return errors == 0 ? 0 : 1;
}
