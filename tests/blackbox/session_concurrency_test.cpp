// docs/api.md's promise 1 with v2: never over the limit, whatever the
// concurrency. Many keep-alive connections, released together, open sessions
// (distinct ids, or one id), renew them, retry, close them, and start and end
// legacy streams, all for one user. The worker threads only record; every check
// runs on the test's thread afterwards.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "client_pool.hpp"
#include "http_probe.hpp"
#include "service_process.hpp"
#include "session_probe.hpp"

using namespace videostreams::blackbox;

namespace {

constexpr std::size_t parallel_clients = 48;

/// One answer as a worker saw it.
struct seen {
  std::string what; // "open", "retry", "beat", "list", "close", "start", ...
  int status = -1;
  std::optional<std::int64_t> count;
  std::optional<std::int64_t> max;
  std::string session; // the sessionId answered, if any
  std::string body;
  std::string error;
};

/// The streamCount of a legacy answer `{"streamStatus":{...}}`.
std::optional<std::int64_t> legacy_count(const std::string& body) {
  auto v = json_of(body);
  if (!v || !v->is_object())
    return std::nullopt;
  auto status = v->as_object().if_contains("streamStatus");
  if (status == nullptr || !status->is_object())
    return std::nullopt;
  auto n = status->as_object().if_contains("streamCount");
  if (n == nullptr || !n->is_int64())
    return std::nullopt;
  return n->as_int64();
}

seen record(std::string what, const reply& r) {
  seen s;
  s.what = std::move(what);
  s.status = r.status;
  s.body = r.body;
  s.error = r.error;
  s.count = int_field(r.body, "streamCount");
  s.max = int_field(r.body, "maxStreams");
  s.session = string_field(r.body, "sessionId").value_or("");
  return s;
}

seen record_legacy(std::string what, const reply& r) {
  seen s;
  s.what = std::move(what);
  s.status = r.status;
  s.body = r.body;
  s.error = r.error;
  s.count = legacy_count(r.body);
  return s;
}

std::string describe(const seen& s) {
  return s.what + " -> " + std::to_string(s.status) + " " + s.error + " "
         + s.body;
}

std::vector<std::string> service_args(int actor_threads, int limit) {
  return {"--http-threads=64",
          "--actor-threads=" + std::to_string(actor_threads),
          "--max-streams=" + std::to_string(limit)};
}

} // namespace

TEST_CASE("simultaneous opens with distinct ids, heartbeats, retries and "
          "legacy starts for one user never grant more than the limit",
          "[blackbox]") {
  auto actor_threads = GENERATE(1, 4);
  constexpr int limit = 5;
  constexpr int rounds = 3;
  const std::string user = "600";
  service_process svc{service_args(actor_threads, limit)};
  auto check = make_client(svc.port());
  client_pool pool{svc.port(), parallel_clients};
  for (int round = 0; round < rounds; ++round) {
    INFO("actor threads " << actor_threads << ", round " << round);
    std::vector<std::vector<seen>> logs(parallel_clients);
    pool.run([&](std::size_t i, httplib::Client& cli) {
      auto& log = logs[i];
      if (i % 4 == 3) {
        // A player on the original API.
        log.push_back(record_legacy("start", get(cli, "/api/startstream/" + user)));
        log.push_back(record("list", list_sessions(cli, user)));
        return;
      }
      auto sid = "r" + std::to_string(round) + "-c" + std::to_string(i);
      auto opened = record("open", open_session(cli, user, open_body(sid, 60)));
      opened.session = opened.status == 201 ? sid : opened.session;
      log.push_back(opened);
      if (opened.status == 201) {
        log.push_back(record("beat", heartbeat(cli, user, sid)));
        log.push_back(record("retry", open_session(cli, user, open_body(sid, 60))));
        log.push_back(record("beat", heartbeat(cli, user, sid)));
      } else {
        log.push_back(record("reopen", open_session(cli, user, open_body(sid, 60))));
      }
      log.push_back(record("list", list_sessions(cli, user)));
    });

    std::set<std::string> granted_sessions;
    int granted_legacy = 0;
    int grants = 0;
    for (std::size_t i = 0; i < logs.size(); ++i) {
      for (auto& s : logs[i]) {
        INFO("client " << i << ": " << describe(s));
        // Every answer's count is within the limit.
        REQUIRE(s.count.has_value());
        CHECK(*s.count >= 0);
        CHECK(*s.count <= limit);
        if (s.max)
          CHECK(*s.max == limit);
        if (s.what == "start") {
          CHECK(s.status == 200);
          if (s.body.find("\"isNewStreamAllowed\":true") != std::string::npos) {
            ++granted_legacy;
            ++grants;
          } else {
            CHECK(s.body == denied_body(limit));
          }
        } else if (s.what == "open") {
          CHECK((s.status == 201 || s.status == 409));
          if (s.status == 201) {
            ++grants;
            granted_sessions.insert(s.session);
          } else {
            CHECK(*s.count == limit);
          }
        } else if (s.what == "reopen") {
          // Nothing was closed this round: still refused.
          CHECK(s.status == 409);
        } else if (s.what == "beat" || s.what == "retry") {
          CHECK(s.status == 200);
        } else {
          CHECK(s.what == "list");
          CHECK(s.status == 200);
        }
      }
    }
    // Nothing closes during a round, so exactly the limit was granted: the
    // first `limit` requests, over both APIs.
    CHECK(grants == limit);
    auto l = require_listing(*check, user);
    CHECK(l.count == limit);
    std::set<std::string> listed;
    int listed_legacy = 0;
    for (auto& x : l.ids()) {
      if (x)
        listed.insert(*x);
      else
        ++listed_legacy;
    }
    CHECK(listed == granted_sessions);
    CHECK(listed_legacy == granted_legacy);
    // Close everything for the next round.
    for (auto& sid : granted_sessions)
      CHECK(close_session(*check, user, sid).status == 200);
    for (int k = 0; k < granted_legacy; ++k)
      CHECK(legacy_count(get(*check, "/api/endstream/" + user).body)
            == granted_legacy - k - 1);
    REQUIRE(require_listing(*check, user).count == 0);
  }
  auto text = scrape(*check);
  CHECK(metric_value(text, "videostreams_stream_grants_total")
        == rounds * limit);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
}

TEST_CASE("simultaneous opens of one sessionId open it once: one 201, the "
          "rest 200",
          "[blackbox]") {
  auto actor_threads = GENERATE(1, 4);
  const std::string user = "601";
  service_process svc{service_args(actor_threads, 3)};
  auto check = make_client(svc.port());
  client_pool pool{svc.port(), parallel_clients};
  for (int round = 0; round < 3; ++round) {
    INFO("actor threads " << actor_threads << ", round " << round);
    auto sid = "same-" + std::to_string(round);
    std::vector<seen> answers(parallel_clients);
    pool.run([&](std::size_t i, httplib::Client& cli) {
      answers[i] = record("open", open_session(cli, user, open_body(sid, 60)));
    });
    int created = 0;
    int renewed = 0;
    for (auto& s : answers) {
      INFO(describe(s));
      if (s.status == 201)
        ++created;
      else if (s.status == 200)
        ++renewed;
      CHECK(s.session == sid);
      // The one session counts once: earlier rounds' sessions plus this.
      CHECK(s.count == round + 1);
    }
    CHECK(created == 1);
    CHECK(renewed == static_cast<int>(parallel_clients) - 1);
    CHECK(require_listing(*check, user).count == round + 1);
  }
  // Simultaneous heartbeats of one session all renew it.
  std::vector<seen> beats(parallel_clients);
  pool.run([&](std::size_t i, httplib::Client& cli) {
    beats[i] = record("beat", heartbeat(cli, user, "same-0"));
  });
  for (auto& s : beats) {
    INFO(describe(s));
    CHECK(s.status == 200);
  }
  // Simultaneous closes of one session close it once.
  std::vector<seen> closes(parallel_clients);
  pool.run([&](std::size_t i, httplib::Client& cli) {
    closes[i] = record("close", close_session(cli, user, "same-0"));
  });
  int closed = 0;
  int not_found = 0;
  for (auto& s : closes) {
    INFO(describe(s));
    if (s.status == 200) {
      ++closed;
      CHECK(s.count == 2);
    } else if (s.status == 404) {
      ++not_found;
    }
  }
  CHECK(closed == 1);
  CHECK(not_found == static_cast<int>(parallel_clients) - 1);
  auto l = require_listing(*check, user);
  CHECK(l.ids() == std::vector<std::optional<std::string>>{
                     std::string{"same-1"}, std::string{"same-2"}});
  auto text = scrape(*check);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == 3);
  CHECK(metric_value(text, "videostreams_open_streams") == 2);
}

TEST_CASE("open, heartbeat and close loops mixed with legacy starts and ends "
          "keep one user within 0 and the limit",
          "[blackbox]") {
  auto actor_threads = GENERATE(1, 4);
  constexpr int limit = 3;
  constexpr int iterations = 12;
  const std::string user = "602";
  service_process svc{service_args(actor_threads, limit)};
  auto check = make_client(svc.port());
  std::vector<std::vector<seen>> logs(parallel_clients);
  {
    client_pool pool{svc.port(), parallel_clients};
    pool.run([&](std::size_t i, httplib::Client& cli) {
      auto& log = logs[i];
      for (int k = 0; k < iterations; ++k) {
        if (i % 6 == 5) {
          auto s = record_legacy("start", get(cli, "/api/startstream/" + user));
          bool granted
            = s.body.find("\"isNewStreamAllowed\":true") != std::string::npos;
          log.push_back(s);
          if (granted)
            log.push_back(
              record_legacy("end", get(cli, "/api/endstream/" + user)));
          continue;
        }
        auto sid = "c" + std::to_string(i) + "-k" + std::to_string(k);
        auto opened = record("open", open_session(cli, user, open_body(sid)));
        log.push_back(opened);
        if (opened.status != 201)
          continue;
        log.push_back(record("beat", heartbeat(cli, user, sid)));
        log.push_back(record("retry", open_session(cli, user, open_body(sid))));
        log.push_back(record("close", close_session(cli, user, sid)));
      }
    });
  }
  int grants = 0;
  int denials = 0;
  for (std::size_t i = 0; i < logs.size(); ++i) {
    for (auto& s : logs[i]) {
      if (s.what == "start" || s.what == "open") {
        if (s.status == 201
            || s.body.find("\"isNewStreamAllowed\":true") != std::string::npos)
          ++grants;
        else
          ++denials;
      }
      // Checked without INFO on the happy path: thousands of answers.
      bool count_ok = s.count && *s.count >= 0 && *s.count <= limit;
      bool status_ok = false;
      if (s.what == "open")
        status_ok = s.status == 201 || (s.status == 409 && s.count == limit);
      else if (s.what == "start")
        status_ok = s.status == 200
                    && (s.body.find("\"isNewStreamAllowed\":true")
                          != std::string::npos
                        || s.body == denied_body(limit));
      else if (s.what == "end")
        // Whoever ends holds a legacy stream, so there is one to close and
        // fewer than the limit remain.
        status_ok = s.status == 200
                    && s.body.find("\"msg\":\"stream closed\"")
                         != std::string::npos
                    && s.count < limit;
      else if (s.what == "close")
        status_ok = s.status == 200 && s.count < limit;
      else
        status_ok = s.status == 200; // beat, retry
      if (!count_ok || !status_ok)
        FAIL_CHECK("actor threads " << actor_threads << ", client " << i
                                    << ": " << describe(s));
    }
  }
  CHECK(grants >= limit);
  CHECK(grants + denials == static_cast<int>(parallel_clients) * iterations);
  // Everything granted was closed: the count is back at 0, not below.
  auto l = require_listing(*check, user);
  CHECK(l.count == 0);
  CHECK(get(*check, "/api/endstream/" + user).body
        == no_active_streams_body());
  auto text = scrape(*check);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
  CHECK(metric_value(text, "videostreams_stream_grants_total") == grants);
  CHECK(metric_value(text, "videostreams_stream_denials_total") == denials);
}

TEST_CASE("simultaneous replaces, plain opens, heartbeats and listings for "
          "one user never show it over the limit, and every replace is one "
          "decision",
          "[blackbox]") {
  auto actor_threads = GENERATE(1, 4);
  constexpr int limit = 3;
  constexpr int iterations = 10;
  const std::string user = "603";
  service_process svc{service_args(actor_threads, limit)};
  auto check = make_client(svc.port());
  std::set<std::string> granted;
  for (int i = 0; i < limit; ++i) {
    auto sid = "base-" + std::to_string(i);
    REQUIRE(open_session(*check, user, open_body(sid, 60)).status == 201);
    granted.insert(sid);
  }
  std::vector<std::vector<seen>> logs(parallel_clients);
  // What each 201 replaced, by client (recorded on the workers' threads).
  std::vector<std::vector<std::string>> replaced_by(parallel_clients);
  {
    client_pool pool{svc.port(), parallel_clients};
    pool.run([&](std::size_t i, httplib::Client& cli) {
      auto& log = logs[i];
      for (int k = 0; k < iterations; ++k) {
        if (i % 8 == 7) {
          // An observer: every listing must be within the limit.
          log.push_back(record("list", list_sessions(cli, user)));
          continue;
        }
        auto sid = "c" + std::to_string(i) + "-k" + std::to_string(k);
        if (i % 8 == 6) {
          // A plain open: always at the limit, so always a 409.
          log.push_back(record("plain", open_session(cli, user, open_body(sid, 60))));
          continue;
        }
        // Take the slot of a session someone else holds, as listed now.
        auto listed = list_sessions(cli, user);
        log.push_back(record("list", listed));
        auto ids = json_of(listed.body);
        std::vector<std::string> others;
        if (ids && ids->is_object())
          if (auto s = ids->as_object().if_contains("sessions"))
            for (auto& e : s->as_array())
              if (e.as_object().at("sessionId").is_string())
                others.emplace_back(e.as_object().at("sessionId").as_string());
        if (others.empty())
          continue;
        auto target = others[(i + static_cast<std::size_t>(k)) % others.size()];
        auto r = open_session(cli, user,
                              R"({"sessionId":")" + sid
                                + R"(","ttlSeconds":60,"replaceSessionId":")"
                                + target + R"("})");
        auto s = record("replace", r);
        if (r.status == 201)
          replaced_by[i].push_back(
            string_field(r.body, "replacedSessionId").value_or(""));
        log.push_back(s);
        if (r.status == 201)
          log.push_back(record("beat", heartbeat(cli, user, sid)));
      }
    });
  }
  int replaces = 0;
  std::set<std::string> replaced;
  for (std::size_t i = 0; i < logs.size(); ++i)
    for (auto& r : replaced_by[i]) {
      // Every 201 here ended a session: nothing else could free a slot.
      CHECK_FALSE(r.empty());
      CHECK(replaced.insert(r).second); // each session ended once
    }
  for (std::size_t i = 0; i < logs.size(); ++i) {
    for (auto& s : logs[i]) {
      bool count_ok = (s.count && *s.count >= 0 && *s.count <= limit)
                      || (s.what == "beat"
                          && (s.status == 410 || s.status == 404));
      bool status_ok = false;
      if (s.what == "list")
        status_ok = s.status == 200;
      else if (s.what == "plain")
        // Every replace keeps the count at the limit: never a free slot.
        status_ok = s.status == 409 && s.count == limit;
      else if (s.what == "replace")
        status_ok = (s.status == 201 && s.count == limit)
                    || (s.status == 409 && s.count == limit);
      else if (s.what == "beat")
        // Renewed, or already replaced by another client: 410, or 404 once
        // 16 later ends pushed it out of the user's memory
        // (max_ended_sessions), which a busy machine can bring about
        // between the 201 and this heartbeat.
        status_ok = s.status == 200 || s.status == 410
                    || (s.status == 404 && replaced.count(s.session) != 0);
      if (!count_ok || !status_ok)
        FAIL_CHECK("actor threads " << actor_threads << ", client " << i
                                    << ": " << describe(s));
      if (s.what == "replace" && s.status == 201) {
        ++replaces;
        granted.insert(s.session);
      }
    }
  }
  CHECK(replaces > 0);
  CHECK(static_cast<int>(replaced.size()) == replaces);
  // What is open is exactly what was granted and not replaced.
  std::set<std::string> open;
  for (auto& g : granted)
    if (replaced.count(g) == 0)
      open.insert(g);
  auto l = require_listing(*check, user);
  CHECK(l.count == limit);
  std::set<std::string> listed;
  for (auto& x : l.ids())
    listed.insert(x.value_or("(null)"));
  CHECK(listed == open);
  // Replaced sessions learn it on their next heartbeat: the user keeps the
  // 16 most recent (max_ended_sessions); older ones are a 404.
  int gone = 0;
  for (auto& r : replaced) {
    auto status = heartbeat(*check, user, r).status;
    CHECK((status == 410 || status == 404));
    gone += status == 410;
  }
  CHECK(gone == std::min(replaces, 16));
  auto text = scrape(*check);
  CHECK(metric_value(text, "videostreams_stream_grants_total")
        == limit + replaces);
  CHECK(metric_value(text, "videostreams_open_streams") == limit);
}
