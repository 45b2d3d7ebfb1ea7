// docs/api.md's promise 2, no leaked slots with v2: a lease not renewed stops
// counting within one second of its expiry, with no request for its user (also
// when the user is passivated); a renewed lease survives; --legacy-stream-ttl
// gives startstream streams a lease too. Real time, real leases: every wait is
// a bounded poll, and a timing assertion only fails on evidence (a reading
// taken after a deadline that still shows the stream, or one taken before a
// deadline that no longer does).

#include <chrono>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "http_probe.hpp"
#include "service_process.hpp"
#include "session_probe.hpp"

using namespace videostreams::blackbox;
using namespace std::chrono_literals;

namespace {

/// Expiry may be noticed up to this long after the deadline (docs/api.md's
/// promise 2).
constexpr std::int64_t expiry_grace_ms = 1000;
/// Rounding of the RFC 3339 milliseconds and of the two clocks' readings.
constexpr std::int64_t clock_slack_ms = 50;
constexpr auto poll_interval = 20ms;

/// One /metrics reading with the wall-clock times around it.
struct reading {
  std::int64_t sent_ms = 0;
  std::int64_t received_ms = 0;
  std::string text;

  double value(const char* name) const {
    return metric_value(text, name).value_or(-1);
  }
};

reading read_metrics(httplib::Client& cli) {
  reading r;
  r.sent_ms = wall_ms();
  r.text = scrape(cli);
  r.received_ms = wall_ms();
  return r;
}

/// Polls /metrics (which touches no user) until `gone` holds for a reading,
/// at most until `deadline_ms` + `expiry_grace_ms` + 3 s. Fails when a
/// reading sent after `deadline_ms` + `expiry_grace_ms` does not show it, or
/// when one received before `deadline_ms` does. Returns whether it was seen.
template <class Gone>
bool await_expiry(httplib::Client& cli, std::int64_t deadline_ms, Gone gone) {
  auto give_up = deadline_ms + expiry_grace_ms + 3000;
  for (;;) {
    auto r = read_metrics(cli);
    INFO("metrics read at " << r.sent_ms << ".." << r.received_ms
                            << " ms, lease deadline " << deadline_ms
                            << " ms:\n" << r.text);
    REQUIRE_FALSE(r.text.empty());
    if (gone(r)) {
      // Not before its time.
      CHECK(r.received_ms >= deadline_ms - clock_slack_ms);
      return true;
    }
    if (r.sent_ms > deadline_ms + expiry_grace_ms + clock_slack_ms) {
      FAIL_CHECK("the lease still counts more than "
                 << expiry_grace_ms << " ms after its expiry ("
                 << r.sent_ms - deadline_ms << " ms)");
      if (r.sent_ms > give_up)
        return false;
    }
    std::this_thread::sleep_for(poll_interval);
  }
}

} // namespace

TEST_CASE("an unrenewed 5 s lease stops counting within a second of its "
          "expiry while one renewed every 2 s survives",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  // Two users, so that the heartbeats of one never touch the other: user 40
  // gets no request at all until its lease is gone.
  auto doomed_exp = check_session_answer(
    open_session(*cli, "40", open_body("doomed", 5)), 201, 40, "doomed", 1,
    3);
  auto kept_exp = check_session_answer(
    open_session(*cli, "41", open_body("kept", 5)), 201, 41, "kept", 1, 3);
  auto first_kept_exp = kept_exp;
  auto last_beat = std::chrono::steady_clock::now();
  int beats = 0;
  bool doomed_gone = false;
  auto give_up = doomed_exp + expiry_grace_ms + 3000;
  // Poll until the doomed lease is gone and the kept one has outlived its
  // first deadline by 2.5 s.
  while (!doomed_gone || wall_ms() < first_kept_exp + 2500) {
    auto r = read_metrics(*cli);
    INFO("metrics at " << r.sent_ms << ".." << r.received_ms << " ms:\n"
                       << r.text);
    REQUIRE_FALSE(r.text.empty());
    if (!doomed_gone) {
      if (r.value("videostreams_open_streams") == 1) {
        doomed_gone = true;
        CHECK(r.received_ms >= doomed_exp - clock_slack_ms);
        CHECK(r.value("videostreams_stream_expirations_total") == 1);
      } else {
        REQUIRE(r.value("videostreams_open_streams") == 2);
        if (r.sent_ms > doomed_exp + expiry_grace_ms + clock_slack_ms) {
          FAIL_CHECK("the 5 s lease still counts "
                     << r.sent_ms - doomed_exp << " ms after its expiry");
          REQUIRE(r.sent_ms < give_up);
        }
      }
    } else {
      REQUIRE(r.value("videostreams_open_streams") == 1);
    }
    if (std::chrono::steady_clock::now() - last_beat >= 2s) {
      auto before = wall_ms();
      auto beat = heartbeat(*cli, "41", "kept");
      INFO("heartbeat " << beats << ": " << beat.status << " " << beat.body);
      REQUIRE(beat.status == 200);
      auto exp = rfc3339_ms(string_field(beat.body, "expiresAt").value_or(""));
      REQUIRE(exp.has_value());
      CHECK(*exp > kept_exp);
      CHECK(*exp >= before + 5000 - clock_slack_ms);
      CHECK(*exp <= wall_ms() + 5000 + clock_slack_ms);
      kept_exp = *exp;
      last_beat = std::chrono::steady_clock::now();
      ++beats;
    }
    std::this_thread::sleep_for(poll_interval);
  }
  CHECK(beats >= 3);
  // The expired one: gone from the list, its heartbeat a 404, its slot free.
  CHECK(require_listing(*cli, "40").count == 0);
  CHECK(heartbeat(*cli, "40", "doomed").status == 404);
  CHECK(close_session(*cli, "40", "doomed").status == 404);
  // The renewed one, past its first deadline: still open, still renewable.
  auto kept = require_listing(*cli, "41");
  CHECK(kept.ids() == std::vector<std::optional<std::string>>{
                        std::string{"kept"}});
  CHECK(wall_ms() > first_kept_exp + 2000);
  CHECK(heartbeat(*cli, "41", "kept").status == 200);
  // The expired id can be opened again, as a new session.
  check_session_answer(open_session(*cli, "40", open_body("doomed", 5)), 201,
                       40, "doomed", 1, 3);
  CHECK(close_session(*cli, "40", "doomed").status == 200);
  CHECK(close_session(*cli, "41", "kept").status == 200);
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_open_streams") == 0);
  CHECK(metric_value(text, "videostreams_stream_expirations_total") == 1);
}

TEST_CASE("an expired lease frees its slot for a user at the limit",
          "[blackbox]") {
  service_process svc{{"--min-ttl=1", "--max-streams=2"}};
  auto cli = make_client(svc.port());
  // 3 s: a must still hold its slot when c is refused, after two more
  // requests, even on a loaded machine.
  auto exp = check_session_answer(open_session(*cli, "42", open_body("a", 3)),
                                  201, 42, "a", 1, 2);
  check_session_answer(open_session(*cli, "42", open_body("b", 60)), 201, 42,
                       "b", 2, 2);
  REQUIRE(open_session(*cli, "42", open_body("c", 60)).status == 409);
  REQUIRE(await_expiry(*cli, exp, [](const reading& r) {
    return r.value("videostreams_open_streams") == 1;
  }));
  check_session_answer(open_session(*cli, "42", open_body("c", 60)), 201, 42,
                       "c", 2, 2);
  CHECK(require_listing(*cli, "42").ids()
        == std::vector<std::optional<std::string>>{std::string{"b"},
                                                   std::string{"c"}});
  CHECK(heartbeat(*cli, "42", "a").status == 404);
}

TEST_CASE("a passivated user's lease expires with no request for that user",
          "[blackbox]") {
  service_process svc{{"--passivate-after=100ms", "--min-ttl=1"}};
  auto cli = make_client(svc.port());
  // 6 s: passivation (normally within 0.2 s) must come before the expiry
  // even on a loaded machine.
  auto exp = check_session_answer(open_session(*cli, "43", open_body("p", 6)),
                                  201, 43, "p", 1, 3);
  // First the actor is passivated, the lease kept in the shard's record...
  reading r;
  auto passivated = eventually(
    [&] {
      r = read_metrics(*cli);
      return r.value("videostreams_live_user_actors") == 0
             && r.value("videostreams_passive_user_records") == 1;
    },
    5s);
  INFO(r.text);
  REQUIRE(passivated);
  CHECK(r.value("videostreams_open_streams") == 1);
  // (Passivation must come well before the expiry, or this would not test
  // the passive path.)
  REQUIRE(r.received_ms < exp - 200);
  // ...then the lease expires there, with no request for user 43.
  REQUIRE(await_expiry(*cli, exp, [](const reading& x) {
    return x.value("videostreams_open_streams") == 0
           && x.value("videostreams_passive_user_records") == 0;
  }));
  auto text = scrape(*cli);
  CHECK(metric_value(text, "videostreams_stream_expirations_total") == 1);
  // No actor was started for it: only the first activation ever happened.
  CHECK(metric_value(text, "videostreams_live_user_actors") == 0);
  CHECK(metric_value(text, "videostreams_user_activations_total") == 1);
  CHECK(heartbeat(*cli, "43", "p").status == 404);
  CHECK(require_listing(*cli, "43").count == 0);
}

TEST_CASE("a passivated user's renewed lease survives and the other expires",
          "[blackbox]") {
  service_process svc{{"--passivate-after=100ms", "--min-ttl=1"}};
  auto cli = make_client(svc.port());
  // 6 s: passivation (normally within 0.2 s) must come before the
  // heartbeat is due, even on a loaded machine. b's 10 s puts its renewed
  // end seconds after a's, so that the two never expire in one sweep.
  auto exp_a = check_session_answer(
    open_session(*cli, "44", open_body("a", 6)), 201, 44, "a", 1, 3);
  check_session_answer(open_session(*cli, "44", open_body("b", 10)), 201, 44,
                       "b", 2, 3);
  // Let the user passivate, then renew b only (which re-activates it).
  REQUIRE(eventually(
    [&] {
      return read_metrics(*cli).value("videostreams_passive_user_records")
             == 1;
    },
    5s));
  auto beat = heartbeat(*cli, "44", "b");
  REQUIRE(beat.status == 200);
  auto exp_b = rfc3339_ms(string_field(beat.body, "expiresAt").value_or(""));
  REQUIRE(exp_b.has_value());
  REQUIRE(*exp_b > exp_a + 3000);
  REQUIRE(await_expiry(*cli, exp_a, [](const reading& x) {
    return x.value("videostreams_open_streams") == 1;
  }));
  if (wall_ms() < *exp_b - 100) {
    auto l = require_listing(*cli, "44");
    CHECK(l.ids() == std::vector<std::optional<std::string>>{
                       std::string{"b"}});
  }
  REQUIRE(await_expiry(*cli, *exp_b, [](const reading& x) {
    return x.value("videostreams_open_streams") == 0;
  }));
  CHECK(metric_value(scrape(*cli), "videostreams_stream_expirations_total")
        == 2);
}

TEST_CASE("the option --legacy-stream-ttl gives startstream streams a "
          "lease that expires",
          "[blackbox]") {
  // 3 s: both streams must still be open at the listing, even on a loaded
  // machine.
  service_process svc{{"--legacy-stream-ttl=3"}};
  auto cli = make_client(svc.port());
  auto before = wall_ms();
  REQUIRE(get(*cli, "/api/startstream/45").body == granted_body(1));
  REQUIRE(get(*cli, "/api/startstream/45").body == granted_body(2));
  auto after = wall_ms();
  auto l = require_listing(*cli, "45");
  REQUIRE(l.count == 2);
  std::int64_t last = 0;
  for (auto& s : l.sessions) {
    CHECK_FALSE(s.id.has_value());
    REQUIRE(s.expires_at_ms.has_value());
    CHECK(*s.expires_at_ms >= before + 3000 - clock_slack_ms);
    CHECK(*s.expires_at_ms <= after + 3000 + clock_slack_ms);
    last = std::max(last, *s.expires_at_ms);
  }
  REQUIRE(await_expiry(*cli, last, [](const reading& x) {
    return x.value("videostreams_open_streams") == 0;
  }));
  CHECK(metric_value(scrape(*cli), "videostreams_stream_expirations_total")
        == 2);
  CHECK(get(*cli, "/api/endstream/45").body == no_active_streams_body());
  CHECK(get(*cli, "/api/startstream/45").body == granted_body(1));
}

TEST_CASE("startstream streams have a 6 h lease by default, and none with "
          "--legacy-stream-ttl=0",
          "[blackbox]") {
  service_process svc;
  auto cli = make_client(svc.port());
  auto before = wall_ms();
  REQUIRE(get(*cli, "/api/startstream/46").body == granted_body(1));
  auto after = wall_ms();
  auto l = require_listing(*cli, "46");
  REQUIRE(l.count == 1);
  REQUIRE(l.sessions.at(0).expires_at_ms.has_value());
  CHECK(*l.sessions.at(0).expires_at_ms >= before + 21'600'000 - clock_slack_ms);
  CHECK(*l.sessions.at(0).expires_at_ms <= after + 21'600'000 + clock_slack_ms);

  service_process never{{"--legacy-stream-ttl=0"}};
  auto never_cli = make_client(never.port());
  REQUIRE(get(*never_cli, "/api/startstream/46").body == granted_body(1));
  auto n = require_listing(*never_cli, "46");
  REQUIRE(n.count == 1);
  CHECK_FALSE(n.sessions.at(0).expires_at_ms.has_value());
  CHECK(get(*never_cli, "/api/v2/users/46/streams").body.find(
          R"("expiresAt":null)")
        != std::string::npos);
}
