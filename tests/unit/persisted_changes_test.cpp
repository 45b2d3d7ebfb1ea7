// Every change of a user's state reaches the persistence actor: grants,
// closes, expiries (live and passivated) and limit changes; nothing else.

#include <catch2/catch.hpp>

#include "actor_fixture.hpp"

using namespace videostreams;
using videostreams::testing::commit_answer;
using videostreams::testing::shard_fixture;
using namespace std::chrono_literals;

namespace {

user_command cmd(user_op o, std::uint64_t user, std::string id = {},
                 std::uint32_t ttl = 0, std::uint32_t limit = 0) {
  return {o, user, std::move(id), ttl, limit};
}


} // namespace

TEST_CASE("grants and closes are sent for persistence, denials are not",
          "[unit]") {
  shard_fixture f{2, 0, true};
  f.call(cmd(user_op::open_session, 1, "tv", 30));
  f.call(cmd(user_op::start_legacy, 1));
  f.call(cmd(user_op::start_legacy, 1)); // denied: nothing to write
  f.call(cmd(user_op::open_session, 1, "x")); // denied too
  REQUIRE(f.changes.size() == 2);
  auto& tv = f.changes[0];
  CHECK(tv.kind == change_kind::grant);
  CHECK(tv.user == 1);
  CHECK(tv.key == "tv");
  CHECK(tv.has_id);
  CHECK(tv.ttl_seconds == 30);
  CHECK(tv.shard == 17);
  CHECK(tv.expires_at_ms == tv.started_at_ms + 30'000);
  auto& legacy = f.changes[1];
  CHECK(legacy.kind == change_kind::grant);
  CHECK_FALSE(legacy.has_id);
  CHECK(legacy.key.size() == 13);
  CHECK(legacy.key.front() == '~');
  CHECK(legacy.expires_at_ms == 0);
  f.call(cmd(user_op::end_legacy, 1));
  f.call(cmd(user_op::close_session, 1, "tv"));
  REQUIRE(f.changes.size() == 4);
  CHECK(f.changes[2].kind == change_kind::close);
  CHECK(f.changes[2].key == legacy.key);
  CHECK(f.changes[3].kind == change_kind::close);
  CHECK(f.changes[3].key == "tv");
}

TEST_CASE("heartbeats are not written, a new TTL is", "[unit]") {
  shard_fixture f{3, 0, true};
  f.call(cmd(user_op::open_session, 2, "a", 30));
  f.call(cmd(user_op::heartbeat, 2, "a"));
  f.call(cmd(user_op::open_session, 2, "a")); // renewed, same TTL
  f.call(cmd(user_op::list_sessions, 2));
  CHECK(f.changes.size() == 1);
  f.call(cmd(user_op::open_session, 2, "a", 90)); // renewed, new TTL
  REQUIRE(f.changes.size() == 2);
  CHECK(f.changes[1].kind == change_kind::grant);
  CHECK(f.changes[1].ttl_seconds == 90);
}

TEST_CASE("expired leases are written as closes, live or passivated",
          "[unit]") {
  shard_fixture f{3, 0, true};
  f.call(cmd(user_op::open_session, 3, "live", 5));
  f.call(cmd(user_op::open_session, 4, "passive", 20));
  f.idle_for(6s); // user 3's lease expires in its live actor
  auto closes = [&f](const std::string& key) {
    int n = 0;
    for (auto& c : f.changes)
      n += c.kind == change_kind::close && c.key == key;
    return n;
  };
  CHECK(closes("live") == 1);
  REQUIRE(f.counters.passive_records == 1); // user 4 is passivated now
  f.idle_for(16s); // user 4's lease expires in the shard's record
  CHECK(closes("passive") == 1);
  CHECK(f.counters.open_streams == 0);
}

TEST_CASE("limit changes are written", "[unit]") {
  shard_fixture f{3, 0, true};
  f.call(cmd(user_op::set_limit, 5, {}, 0, 7));
  f.call(cmd(user_op::set_limit, 5, {}, 0, 7)); // unchanged: nothing
  f.call(cmd(user_op::clear_limit, 5));
  REQUIRE(f.changes.size() == 2);
  CHECK(f.changes[0].kind == change_kind::set_limit);
  CHECK(f.changes[0].max_streams == 7);
  CHECK(f.changes[1].kind == change_kind::clear_limit);
}

TEST_CASE("in memory-only mode nothing is collected", "[unit]") {
  shard_fixture f;
  f.call(cmd(user_op::open_session, 6, "a"));
  CHECK(f.changes.empty());
  CHECK_FALSE(f.sink_of_changes);
}

TEST_CASE("sync durability answers a grant once its commit is confirmed",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  auto r = f.call(cmd(user_op::open_session, 7, "a"));
  CHECK(r.outcome == stream_outcome::granted);
  CHECK(r.stream_count == 1);
  auto legacy = f.call(cmd(user_op::start_legacy, 7));
  CHECK(legacy.outcome == stream_outcome::granted);
  CHECK(f.changes.size() == 2);
  CHECK(f.counters.open_streams == 2);
}

TEST_CASE("sync durability: a failed commit undoes the grant and writes a "
          "close",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  f.answer = commit_answer::error;
  auto r = f.call(cmd(user_op::open_session, 8, "a"));
  CHECK(r.outcome == stream_outcome::unavailable);
  CHECK(r.stream_count == 0);
  CHECK(f.counters.open_streams == 0);
  CHECK(f.counters.failed_grants == 1);
  REQUIRE(f.changes.size() == 2);
  CHECK(f.changes[0].kind == change_kind::grant);
  CHECK(f.changes[1].kind == change_kind::close);
  CHECK(f.changes[1].key == "a");
  // The slot is free again.
  f.answer = commit_answer::ok;
  CHECK(f.call(cmd(user_op::list_sessions, 8)).sessions.empty());
  CHECK(f.call(cmd(user_op::open_session, 8, "a")).outcome
        == stream_outcome::granted);
}

TEST_CASE("sync durability: the slot stays reserved until the commit is "
          "answered, a commit timeout undoes the grant",
          "[unit]") {
  shard_fixture f{1, 0, true, true};
  f.answer = commit_answer::never;
  auto slot = f.post(cmd(user_op::start_legacy, 9));
  f.sched.run();
  CHECK_FALSE(slot->wait_for(0ns)); // waiting for the commit
  // Meanwhile the slot is reserved: the user is at its limit of 1.
  f.answer = commit_answer::ok;
  CHECK(f.call(cmd(user_op::open_session, 9, "b")).outcome
        == stream_outcome::denied);
  // The persistence actor gives up on the commit (its timeout).
  REQUIRE(f.hung.size() == 1);
  f.settle_hung(false);
  REQUIRE(slot->wait_for(0ns));
  CHECK(slot->value().outcome == stream_outcome::unavailable);
  CHECK(f.counters.open_streams == 0);
  CHECK(f.counters.failed_grants == 1);
  CHECK(f.changes.back().kind == change_kind::close);
  CHECK(f.call(cmd(user_op::open_session, 9, "b")).outcome
        == stream_outcome::granted);
}

TEST_CASE("sync durability: passivation waits for pending commits",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  f.answer = commit_answer::never;
  auto slot = f.post(cmd(user_op::open_session, 10, "a", 60));
  f.sched.run();
  // Passivation (after 1 s idle) is due, but the grant is not settled.
  f.idle_for(3s);
  CHECK_FALSE(slot->wait_for(0ns));
  CHECK(f.counters.live_user_actors == 1);
  REQUIRE(f.hung.size() == 1);
  f.settle_hung(true);
  REQUIRE(slot->wait_for(0ns));
  CHECK(slot->value().outcome == stream_outcome::granted);
  // Settled: the deferred passivation completes, the lease is kept.
  f.idle_for(1s);
  CHECK(f.counters.live_user_actors == 0);
  CHECK(f.counters.passive_records == 1);
}

TEST_CASE("a command that arrives after its caller gave up decides nothing",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  auto late = cmd(user_op::open_session, 4, "tv", 30);
  late.answer_by_ns = f.clock->now().mono_ns; // the caller stops now
  auto r = f.call(late);
  CHECK(r.outcome == stream_outcome::unavailable);
  CHECK(r.stream_count == 0);
  CHECK(f.changes.empty());
  CHECK(f.counters.late_commands == 1);
  CHECK(f.counters.open_streams == 0);
}

TEST_CASE("a sync grant's commit must be confirmed while its caller still "
          "waits, with room to undo it",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  auto now = f.clock->now().mono_ns;
  // Plenty of time: the commit is asked to answer a quarter of the time
  // left before the caller's deadline.
  auto c = cmd(user_op::open_session, 5, "tv", 30);
  c.answer_by_ns = now + 2'000'000'000;
  CHECK(f.call(c).outcome == stream_outcome::granted);
  REQUIRE(f.changes.size() == 1);
  CHECK(f.changes[0].answer_by_ns == now + 1'500'000'000);
  // Too little time to commit and still undo: refused at once, nothing
  // reserved (the close written after it is harmless).
  auto hurried = cmd(user_op::open_session, 6, "tv", 30);
  hurried.answer_by_ns = now + 150'000'000;
  auto r = f.call(hurried);
  CHECK(r.outcome == stream_outcome::unavailable);
  CHECK(r.stream_count == 0);
  CHECK(f.counters.late_commands == 1);
  CHECK(f.counters.open_streams == 1);
  REQUIRE(f.changes.size() == 2);
  CHECK(f.changes[1].kind == change_kind::close);
  CHECK(f.changes[1].user == 6);
}

TEST_CASE("sync durability: a retried open and a heartbeat of a session "
          "whose commit is pending wait for it, and the retry is granted "
          "anew when that commit failed",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  f.answer = commit_answer::never;
  auto first = f.post(cmd(user_op::open_session, 11, "tv", 60));
  f.sched.run();
  REQUIRE_FALSE(first->wait_for(0ns)); // waiting for the commit
  // A client's retry, and a heartbeat, while the commit runs: answered
  // now, they would speak for a session the commit's failure takes away.
  auto retry = f.post(cmd(user_op::open_session, 11, "tv", 60));
  auto beat = f.post(cmd(user_op::heartbeat, 11, "tv"));
  f.sched.run();
  CHECK_FALSE(retry->wait_for(0ns));
  CHECK_FALSE(beat->wait_for(0ns));
  // Other sessions of the user are decided meanwhile.
  f.answer = commit_answer::ok;
  CHECK(f.call(cmd(user_op::open_session, 11, "phone", 60)).outcome
        == stream_outcome::granted);
  REQUIRE(f.hung.size() == 1);
  f.settle_hung(false); // the first grant's commit failed
  REQUIRE(first->wait_for(0ns));
  CHECK(first->value().outcome == stream_outcome::unavailable);
  // The retry opened the session anew, with a commit of its own, and the
  // heartbeat renewed that one.
  REQUIRE(retry->wait_for(0ns));
  CHECK(retry->value().outcome == stream_outcome::granted);
  CHECK(retry->value().session.id == "tv");
  REQUIRE(beat->wait_for(0ns));
  CHECK(beat->value().outcome == stream_outcome::renewed);
  auto listed = f.call(cmd(user_op::list_sessions, 11));
  CHECK(listed.stream_count == 2);
  CHECK(f.counters.open_streams == 2);
  // grant tv (failed), grant phone, close tv (the undo), grant tv (retry).
  REQUIRE(f.changes.size() == 4);
  CHECK(f.changes[2].kind == change_kind::close);
  CHECK(f.changes[3].kind == change_kind::grant);
  CHECK(f.changes[3].key == "tv");
}

TEST_CASE("sync durability: a session closed and opened again while its "
          "first grant's commit is pending is not taken away by that "
          "grant's undo",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  f.answer = commit_answer::never;
  auto first = f.post(cmd(user_op::open_session, 12, "tv", 60));
  f.sched.run();
  REQUIRE_FALSE(first->wait_for(0ns));
  f.answer = commit_answer::ok;
  auto closed = f.post(cmd(user_op::close_session, 12, "tv"));
  auto again = f.post(cmd(user_op::open_session, 12, "tv", 60));
  f.sched.run();
  REQUIRE(f.hung.size() == 1);
  f.settle_hung(false);
  CHECK(first->value().outcome == stream_outcome::unavailable);
  // The close found nothing (the first grant was undone); the new open was
  // granted, committed, and stays.
  REQUIRE(closed->wait_for(0ns));
  CHECK(closed->value().outcome == stream_outcome::not_found);
  REQUIRE(again->wait_for(0ns));
  CHECK(again->value().outcome == stream_outcome::granted);
  auto listed = f.call(cmd(user_op::list_sessions, 12));
  REQUIRE(listed.sessions.size() == 1);
  CHECK(listed.sessions[0].id == "tv");
  CHECK(f.counters.open_streams == 1);
  // The database ends with it too: its grant is the last change for "tv".
  REQUIRE_FALSE(f.changes.empty());
  CHECK(f.changes.back().kind == change_kind::grant);
  CHECK(f.changes.back().key == "tv");
}

TEST_CASE("a session that expired and is opened again under its id in one "
          "decision is written with its new start",
          "[unit]") {
  shard_fixture f{3, 0, true};
  f.call(cmd(user_op::open_session, 13, "tv", 30));
  REQUIRE(f.changes.size() == 1);
  // Its lease runs out; no sweep ran yet (the shard's timers did not move).
  f.clock->advance(31s);
  auto r = f.call(cmd(user_op::open_session, 13, "tv", 30));
  CHECK(r.outcome == stream_outcome::granted);
  REQUIRE(f.changes.size() == 2);
  CHECK(f.changes[1].kind == change_kind::grant);
  CHECK(f.changes[1].key == "tv");
  CHECK(f.changes[1].started_at_ms == f.changes[0].started_at_ms + 31'000);
  CHECK(f.changes[1].started_at_ms == r.session.started_at_ms);
}

TEST_CASE("sync durability: a limit change takes effect once committed, "
          "and a failed commit leaves the limit as it was",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  // Committed: written and answered, then in force.
  auto set = f.call(cmd(user_op::set_limit, 14, {}, 0, 1));
  CHECK(set.outcome == stream_outcome::limit_set);
  CHECK(set.max_streams == 1);
  REQUIRE(f.changes.size() == 1);
  CHECK(f.changes[0].kind == change_kind::set_limit);
  CHECK(f.call(cmd(user_op::start_legacy, 14)).outcome
        == stream_outcome::granted);
  CHECK(f.call(cmd(user_op::start_legacy, 14)).outcome
        == stream_outcome::denied);
  // Pending: the limit before it holds meanwhile, and the next change
  // waits for it.
  f.answer = commit_answer::never;
  auto raise = f.post(cmd(user_op::set_limit, 14, {}, 0, 5));
  f.sched.run();
  CHECK_FALSE(raise->wait_for(0ns));
  auto cleared = f.post(cmd(user_op::clear_limit, 14));
  f.sched.run();
  CHECK_FALSE(cleared->wait_for(0ns));
  f.answer = commit_answer::ok;
  auto grant = f.call(cmd(user_op::start_legacy, 14));
  CHECK(grant.outcome == stream_outcome::denied);
  CHECK(grant.max_streams == 1);
  // The raise fails: answered unavailable, the limit stays 1, and the
  // database is told 1 again after it (a failed batch is retried).
  REQUIRE(f.hung.size() == 1);
  auto before = f.changes.size();
  f.settle_hung(false);
  REQUIRE(raise->wait_for(0ns));
  CHECK(raise->value().outcome == stream_outcome::unavailable);
  CHECK(raise->value().max_streams == 1);
  REQUIRE(f.changes.size() > before);
  CHECK(f.changes[before].kind == change_kind::set_limit);
  CHECK(f.changes[before].max_streams == 1);
  // Then the clear, which waited, is decided and committed.
  REQUIRE(cleared->wait_for(0ns));
  CHECK(cleared->value().outcome == stream_outcome::limit_set);
  CHECK(cleared->value().max_streams == 3);
  CHECK(f.changes.back().kind == change_kind::clear_limit);
  CHECK(f.call(cmd(user_op::start_legacy, 14)).outcome
        == stream_outcome::granted);
}

TEST_CASE("sync durability: passivation waits for a pending limit change",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  f.answer = commit_answer::never;
  auto set = f.post(cmd(user_op::set_limit, 15, {}, 0, 2));
  f.sched.run();
  f.idle_for(3s);
  CHECK_FALSE(set->wait_for(0ns));
  CHECK(f.counters.live_user_actors == 1);
  f.settle_hung(true);
  REQUIRE(set->wait_for(0ns));
  CHECK(set->value().max_streams == 2);
  f.idle_for(1s);
  CHECK(f.counters.live_user_actors == 0);
  // The passivated record keeps the committed limit.
  f.answer = commit_answer::ok;
  CHECK(f.call(cmd(user_op::list_sessions, 15)).max_streams == 2);
}

TEST_CASE("sync durability: a session that expired and is opened again "
          "under its id waits for the new start's commit, and a failed "
          "commit undoes it",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  CHECK(f.call(cmd(user_op::open_session, 16, "tv", 30)).outcome
        == stream_outcome::granted);
  f.clock->advance(31s); // expired, not swept
  f.answer = commit_answer::never;
  auto again = f.post(cmd(user_op::open_session, 16, "tv", 30));
  f.sched.run();
  CHECK_FALSE(again->wait_for(0ns)); // the new start waits for its commit
  REQUIRE(f.hung.size() == 1);
  f.settle_hung(false);
  REQUIRE(again->wait_for(0ns));
  CHECK(again->value().outcome == stream_outcome::unavailable);
  f.answer = commit_answer::ok;
  CHECK(f.call(cmd(user_op::list_sessions, 16)).stream_count == 0);
  CHECK(f.changes.back().kind == change_kind::close);
  CHECK(f.changes.back().key == "tv");
}

TEST_CASE("sync durability: a renewal that changes the TTL is written "
          "behind, and a failed write takes nothing away",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  CHECK(f.call(cmd(user_op::open_session, 17, "tv", 30)).outcome
        == stream_outcome::granted);
  // The session is committed already: a new TTL is not a grant, so it
  // neither waits for its write nor is undone when that write fails.
  f.answer = commit_answer::error;
  auto r = f.call(cmd(user_op::open_session, 17, "tv", 120));
  CHECK(r.outcome == stream_outcome::renewed);
  CHECK(r.stream_count == 1);
  CHECK(r.session.ttl_seconds == 120);
  CHECK(f.counters.failed_grants == 0);
  CHECK(f.counters.open_streams == 1);
  REQUIRE(f.changes.size() == 2);
  CHECK(f.changes[1].kind == change_kind::grant);
  CHECK(f.changes[1].ttl_seconds == 120);
  auto listed = f.call(cmd(user_op::list_sessions, 17));
  REQUIRE(listed.sessions.size() == 1);
  CHECK(listed.sessions[0].id == "tv");
}

TEST_CASE("sync durability: a replace of a session whose grant is pending "
          "waits for it, and is a plain open when that grant failed",
          "[unit]") {
  shard_fixture f{1, 0, true, true};
  f.answer = commit_answer::never;
  auto first = f.post(cmd(user_op::open_session, 18, "tv", 60));
  f.sched.run();
  REQUIRE_FALSE(first->wait_for(0ns));
  // Decided now, it would end "tv" and say so, while "tv"'s own caller is
  // about to be told that its grant failed.
  f.answer = commit_answer::ok;
  auto replace = cmd(user_op::open_session, 18, "phone", 60);
  replace.replace_session_id = "tv";
  auto second = f.post(replace);
  f.sched.run();
  CHECK_FALSE(second->wait_for(0ns));
  REQUIRE(f.hung.size() == 1);
  f.settle_hung(false);
  REQUIRE(first->wait_for(0ns));
  CHECK(first->value().outcome == stream_outcome::unavailable);
  REQUIRE(second->wait_for(0ns));
  CHECK(second->value().outcome == stream_outcome::granted);
  CHECK_FALSE(second->value().replaced);
  CHECK(second->value().stream_count == 1);
  auto listed = f.call(cmd(user_op::list_sessions, 18));
  REQUIRE(listed.sessions.size() == 1);
  CHECK(listed.sessions[0].id == "phone");
  CHECK(f.counters.open_streams == 1);
}

TEST_CASE("sync durability: setting the limit a user already has is "
          "answered at once, without a write",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  CHECK(f.call(cmd(user_op::set_limit, 19, {}, 0, 2)).max_streams == 2);
  REQUIRE(f.changes.size() == 1);
  // Nothing changes, so nothing waits for a database that may be down.
  f.answer = commit_answer::error;
  auto again = f.call(cmd(user_op::set_limit, 19, {}, 0, 2));
  CHECK(again.outcome == stream_outcome::limit_set);
  CHECK(again.max_streams == 2);
  auto cleared = f.call(cmd(user_op::clear_limit, 20));
  CHECK(cleared.outcome == stream_outcome::limit_set);
  CHECK(cleared.max_streams == 3);
  CHECK(f.changes.size() == 1);
}

TEST_CASE("sync durability: a deferred passivation waits for the last of "
          "several pending commits",
          "[unit]") {
  shard_fixture f{3, 0, true, true};
  f.answer = commit_answer::never;
  auto a = f.post(cmd(user_op::open_session, 21, "a", 60));
  auto b = f.post(cmd(user_op::open_session, 21, "b", 60));
  f.sched.run();
  REQUIRE(f.hung.size() == 2);
  f.idle_for(3s); // passivation is due, and deferred
  // The first commit succeeds; the second is still in flight.
  f.settle_first(1, true);
  REQUIRE(a->wait_for(0ns));
  CHECK(a->value().outcome == stream_outcome::granted);
  // The second fails: handed over before it settled, the user's record
  // would keep a stream whose caller is never answered.
  f.settle_hung(false);
  REQUIRE(b->wait_for(0ns));
  CHECK(b->value().outcome == stream_outcome::unavailable);
  f.answer = commit_answer::ok;
  auto listed = f.call(cmd(user_op::list_sessions, 21));
  REQUIRE(listed.sessions.size() == 1);
  CHECK(listed.sessions[0].id == "a");
}
