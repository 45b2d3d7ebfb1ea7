#include "actors/user_actor.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "caf/actor_cast.hpp"
#include "caf/actor_system.hpp"
#include "caf/send.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

namespace videostreams {

namespace {

constexpr auto relaxed = std::memory_order_relaxed;

/// A key for a stream opened by `startstream`: '~' and 48 random bits in
/// hex (13 characters: no heap allocation), unique among a user's streams.
std::string new_legacy_key() {
  thread_local std::mt19937_64 bits{std::random_device{}()};
  static constexpr char digits[] = "0123456789abcdef";
  std::string key(13, '~');
  auto x = bits();
  for (std::size_t i = 1; i < key.size(); ++i, x >>= 4)
    key[i] = digits[x & 0xf];
  return key;
}

session_view view_of(const stream_session& s, const clock_reading& now) {
  return {s.is_legacy() ? std::string{} : s.id, s.started_at_ms,
          s.expires_at_ns == 0 ? 0 : now.wall_ms_at(s.expires_at_ns),
          s.ttl_seconds};
}

std::vector<session_view> views_of(const user_streams& streams,
                                   const clock_reading& now) {
  std::vector<session_view> result;
  result.reserve(streams.count());
  for (auto& s : streams.sessions())
    result.push_back(view_of(s, now));
  return result;
}

/// A command that names a stream whose grant waits for its commit, or a
/// limit change while another waits for its own (sync durability): it is
/// decided once that commit is settled.
struct deferred_command {
  user_command cmd;
  std::function<void(const user_reply&)> answer;
};

/// A grant or a limit change waiting for its commit, and the commands that
/// wait for it: a grant under its stream's key, a limit change under
/// `pending_limit_key`.
struct pending_commit {
  std::string key;
  std::vector<deferred_command> waiting;
};

/// No session id or stream key contains '#'.
const std::string pending_limit_key = "#limit";

bool is_limit_change(const user_command& cmd) {
  return cmd.op == user_op::set_limit || cmd.op == user_op::clear_limit;
}

struct user_actor_state {
  std::uint64_t user = 0;
  user_streams streams;
  std::shared_ptr<const user_settings> settings;
  /// Grants and limit changes waiting for their commit (sync durability).
  /// A command naming one of those sessions (a retried open, a heartbeat,
  /// a close, a replace) waits until it is settled: answered before, it
  /// would speak for a session that an undo may yet take away (a 200 for a
  /// retried open whose grant then fails), or let the undo take away a
  /// session opened anew under the same id (closed and reopened
  /// meanwhile). A limit change waits for the one before it.
  std::vector<pending_commit> pending;
  /// A passivation asked for while grants were pending: answered once the
  /// last of them is settled.
  std::optional<caf::typed_response_promise<user_streams>> passivation;
  /// Deadline the shard was asked to wake this actor at; 0 = none.
  std::int64_t registered_deadline = 0;
  static inline const char* name = "user_actor";
};

using user_pointer = user_actor::stateful_pointer<user_actor_state>;

/// Makes sure the shard wakes this actor by its earliest lease deadline.
void register_deadline(user_pointer self) {
  auto& st = self->state;
  auto next = st.streams.next_expiry();
  if (next == 0 || (st.registered_deadline != 0 && st.registered_deadline <= next))
    return;
  auto target = caf::actor_cast<caf::actor>(st.settings->wake_up_target);
  if (!target)
    return; // the shard is gone: nothing will ask this actor again
  st.registered_deadline = next;
  caf::anon_send(target, expire_atom::value, st.user, next);
}

user_streams hand_over(user_pointer self) {
  self->state.settings->counters->passivations.fetch_add(1, relaxed);
  self->quit();
  return std::move(self->state.streams);
}

template <class Answer>
void run(user_pointer self, const user_command& cmd, Answer answer);

/// One grant or limit change settled (committed or undone): decide the
/// commands that waited for it, then finish a deferred passivation.
void commit_settled(user_pointer self, const std::string& key) {
  auto& st = self->state;
  auto it = std::find_if(st.pending.begin(), st.pending.end(),
                         [&](const pending_commit& p) { return p.key == key; });
  std::vector<deferred_command> waiting;
  if (it != st.pending.end()) {
    waiting = std::move(it->waiting);
    st.pending.erase(it);
  }
  for (auto& d : waiting)
    run(self, d.cmd, std::move(d.answer));
  if (st.pending.empty() && st.passivation) {
    auto rp = std::move(*st.passivation);
    st.passivation.reset();
    rp.deliver(hand_over(self));
  }
}

/// The pending commit `cmd` must wait for, if any: the grant of the
/// session it names (or replaces), or, for a limit change, the limit
/// change before it. Stream keys of `startstream` cannot be named.
pending_commit* pending_named_by(user_actor_state& st,
                                 const user_command& cmd) {
  if (st.pending.empty())
    return nullptr;
  auto limit = is_limit_change(cmd);
  if (!limit && cmd.session_id.empty() && cmd.replace_session_id.empty())
    return nullptr;
  for (auto& p : st.pending)
    if (limit ? p.key == pending_limit_key
              : p.key == cmd.session_id || p.key == cmd.replace_session_id)
      return &p;
  return nullptr;
}

/// The least time a sync grant needs for its commit to be confirmed, or
/// undone, before its caller gives up: what the persistence actor's
/// periodic check may be late by, and then some.
constexpr std::int64_t commit_margin_ns = 200'000'000;

/// An answer that decides nothing.
user_reply refusal(const user_streams& streams, const user_settings& settings) {
  user_reply r;
  r.outcome = stream_outcome::unavailable;
  r.stream_count = streams.count();
  r.max_streams = streams.limit(settings.default_limit);
  return r;
}

/// The answer to a limit change, as the user's state now has it.
user_reply limit_reply(const user_streams& streams,
                       const user_settings& settings) {
  user_reply r;
  r.outcome = stream_outcome::limit_set;
  r.stream_count = streams.count();
  r.max_streams = streams.limit(settings.default_limit);
  return r;
}

/// When a sync commit must be confirmed, or undone, for a caller who stops
/// waiting at `answer_by_ns`: 0 (no deadline) or before it, with room to
/// undo; -1 when there is no room left.
std::int64_t commit_deadline(std::int64_t answer_by_ns,
                             const clock_reading& now) {
  if (answer_by_ns == 0)
    return 0;
  auto left = answer_by_ns - now.mono_ns;
  auto by = answer_by_ns - std::max(commit_margin_ns, left / 4);
  return by <= now.mono_ns ? -1 : by;
}

/// A limit change under sync durability: it takes effect once committed,
/// and is answered then; until then the user's limit is the one before
/// (grants meanwhile are decided under it), and a commit that fails or
/// times out leaves it so (answered 503). A limit is state like a grant:
/// answered before its commit, a kill -9, or a write backlog that refuses
/// it, would lose a change the operator was told had been made.
template <class Answer>
void change_limit_once_committed(user_pointer self, const user_command& cmd,
                                 Answer answer, const clock_reading& now) {
  auto& st = self->state;
  auto& settings = *st.settings;
  std::optional<std::uint32_t> wanted;
  if (cmd.op == user_op::set_limit)
    wanted = cmd.max_streams;
  if (st.streams.own_limit() == wanted) {
    answer(limit_reply(st.streams, settings)); // nothing to write
    return;
  }
  auto by = commit_deadline(cmd.answer_by_ns, now);
  if (by < 0) {
    settings.counters->late_commands.fetch_add(1, relaxed);
    answer(refusal(st.streams, settings));
    return;
  }
  auto change = limit_change(st.user, wanted, settings.shard, settings.epoch);
  change.answer_by_ns = by;
  // Written after the change if it fails: a failed batch is retried, so
  // the database must end with the limit memory keeps.
  auto restore = limit_change(st.user, st.streams.own_limit(),
                              settings.shard, settings.epoch);
  restore.undoes_failed_commit = true;
  st.pending.push_back(pending_commit{pending_limit_key, {}});
  self
    ->request(settings.change_sink, caf::infinite, commit_atom::value,
              std::move(change))
    .then(
      [self, wanted, answer](bool) mutable {
        auto& st = self->state;
        st.streams.set_limit(wanted);
        answer(limit_reply(st.streams, *st.settings));
        commit_settled(self, pending_limit_key);
      },
      [self, restore, answer](caf::error&) mutable {
        auto& st = self->state;
        caf::anon_send(st.settings->change_sink, restore);
        answer(refusal(st.streams, *st.settings));
        commit_settled(self, pending_limit_key);
      });
}

/// Decides `cmd`, sends what changed to the persistence actor, and calls
/// `answer` with the reply: at once, or (sync durability, a new stream or
/// a limit change) once its commit is confirmed.
template <class Answer>
void run(user_pointer self, const user_command& cmd, Answer answer) {
  auto& st = self->state;
  auto& settings = *st.settings;
  auto now = settings.clock->now();
  if (cmd.answer_by_ns != 0 && now.mono_ns >= cmd.answer_by_ns) {
    // Its caller was answered 503 already: deciding now would leave it a
    // stream it does not know about.
    settings.counters->late_commands.fetch_add(1, relaxed);
    answer(refusal(st.streams, settings));
    return;
  }
  if (auto* p = pending_named_by(st, cmd)) {
    p->waiting.push_back(deferred_command{cmd, std::move(answer)});
    return;
  }
  if (settings.deadlines
      && !settings.deadlines->may_decide(settings.shard, now.mono_ns,
                                         settings.epoch)) {
    // This node's lease of the shard ran out (or the shard is being given
    // up): another node may own the user by now, so nothing is decided.
    settings.counters->lease_refusals.fetch_add(1, relaxed);
    answer(refusal(st.streams, settings));
    return;
  }
  if (!settings.change_sink) {
    auto reply = decide(st.streams, cmd, settings, now);
    register_deadline(self);
    answer(reply);
    return;
  }
  if (settings.sync_grants && is_limit_change(cmd)) {
    change_limit_once_committed(self, cmd, std::move(answer), now);
    return;
  }
  persisted_view before{st.streams};
  auto reply = decide(st.streams, cmd, settings, now);
  register_deadline(self);
  std::vector<stream_change> changes;
  before.changes_to(st.streams, st.user, settings.shard, settings.epoch, now,
                    changes);
  const stream_change* new_stream = nullptr;
  for (auto& c : changes) {
    if (settings.sync_grants && reply.outcome == stream_outcome::granted
        && c.kind == change_kind::grant && new_stream == nullptr) {
      new_stream = &c; // at most one new stream per command
      continue;
    }
    caf::anon_send(settings.change_sink, c);
  }
  if (new_stream == nullptr) {
    answer(reply);
    return;
  }
  auto key = new_stream->key;
  auto close = *new_stream;
  close.kind = change_kind::close;
  close.undoes_failed_commit = true;
  // Not durable (or not in time): undo the grant, and write a close after
  // it so that the database ends without it even if a commit lands late.
  auto undo = [self, key, close](user_reply reply) {
    auto& st = self->state;
    if (st.streams.remove(key)) {
      auto* counters = st.settings->counters;
      counters->open_streams.fetch_sub(1, relaxed);
      counters->failed_grants.fetch_add(1, relaxed);
    }
    caf::anon_send(st.settings->change_sink, close);
    reply.outcome = stream_outcome::unavailable;
    reply.stream_count = st.streams.count();
    reply.session = session_view{};
    return reply;
  };
  auto commit = *new_stream;
  // The commit must be confirmed, or undone, while the caller waits.
  commit.answer_by_ns = commit_deadline(cmd.answer_by_ns, now);
  if (commit.answer_by_ns < 0) {
    settings.counters->late_commands.fetch_add(1, relaxed);
    answer(undo(reply));
    return;
  }
  // The slot stays reserved while the commit runs: other commands for this
  // user see it counted, so the limit holds whatever the commit's outcome.
  st.pending.push_back(pending_commit{key, {}});
  self
    ->request(settings.change_sink, caf::infinite, commit_atom::value,
              std::move(commit))
    .then(
      [self, reply, answer, key](bool) mutable {
        answer(reply);
        commit_settled(self, key);
      },
      [self, reply, answer, undo, key](caf::error&) mutable {
        answer(undo(reply));
        commit_settled(self, key);
      });
}

user_actor::behavior_type user_actor_impl(
  user_pointer self, std::uint64_t user, user_streams record,
  std::shared_ptr<const user_settings> settings) {
  self->state.user = user;
  self->state.streams = std::move(record);
  self->state.settings = std::move(settings);
  auto* counters = self->state.settings->counters;
  counters->live_user_actors.fetch_add(1, relaxed);
  counters->activations.fetch_add(1, relaxed);
  self->attach_functor([counters] {
    counters->live_user_actors.fetch_sub(1, relaxed);
  });
  register_deadline(self);
  return {
    [self](user_command& cmd) -> caf::result<user_reply> {
      auto rp = self->make_response_promise<user_reply>();
      run(self, cmd, [rp](const user_reply& r) mutable { rp.deliver(r); });
      return rp;
    },
    [self](local_call& call) {
      run(self, call.cmd, [slot = call.slot](const user_reply& r) {
        slot->fulfill(r);
      });
      call.slot->defer(); // no-op when answered; else it waits for a commit
    },
    [self](passivate_atom) -> caf::result<user_streams> {
      if (self->state.pending.empty())
        return hand_over(self);
      auto rp = self->make_response_promise<user_streams>();
      self->state.passivation = rp;
      return rp;
    },
    [self](expire_atom) {
      auto& st = self->state;
      auto now = st.settings->clock->now();
      st.registered_deadline = 0;
      with_persistence(st.streams, st.user, *st.settings, now, [&] {
        expire_leases(st.streams, *st.settings, now);
      });
      register_deadline(self);
    },
  };
}

} // namespace

void expire_leases(user_streams& streams, const user_settings& settings,
                   const clock_reading& now) {
  if (auto n = streams.expire(now.mono_ns); n > 0) {
    settings.counters->open_streams.fetch_sub(static_cast<std::int64_t>(n),
                                              relaxed);
    settings.counters->expirations.fetch_add(n, relaxed);
  }
}

user_reply decide(user_streams& streams, const user_command& cmd,
                  const user_settings& settings, const clock_reading& now) {
  auto& counters = *settings.counters;
  expire_leases(streams, settings, now);
  auto limit = streams.limit(settings.default_limit);
  user_reply reply;
  auto count_start = [&](stream_outcome x) {
    if (x == stream_outcome::granted) {
      counters.grants.fetch_add(1, relaxed);
      counters.open_streams.fetch_add(1, relaxed);
    } else if (x == stream_outcome::denied) {
      counters.denials.fetch_add(1, relaxed);
    }
    return x;
  };
  auto count_close = [&](stream_outcome x) {
    if (x == stream_outcome::closed)
      counters.open_streams.fetch_sub(1, relaxed);
    return x;
  };
  switch (cmd.op) {
    case user_op::start_legacy:
      reply.outcome = count_start(
        streams.start_legacy(limit, settings.legacy_ttl_seconds, now,
                             new_legacy_key()));
      break;
    case user_op::end_legacy:
      reply.outcome = count_close(streams.end_legacy(now));
      break;
    case user_op::open_session: {
      auto ttl = cmd.ttl_seconds;
      auto existing = streams.find(cmd.session_id) != nullptr;
      if (ttl == 0 && !existing)
        ttl = settings.default_ttl_seconds;
      reply.outcome = count_start(streams.open(cmd.session_id, ttl, limit,
                                               now, cmd.replace_session_id,
                                               &reply.replaced));
      if (reply.replaced)
        counters.open_streams.fetch_sub(1, relaxed);
      if (reply.outcome == stream_outcome::denied)
        reply.sessions = views_of(streams, now);
      break;
    }
    case user_op::heartbeat:
      reply.outcome = streams.heartbeat(cmd.session_id, now);
      break;
    case user_op::close_session:
      reply.outcome = count_close(streams.close(cmd.session_id, now));
      break;
    case user_op::list_sessions:
      reply.outcome = stream_outcome::listed;
      reply.sessions = views_of(streams, now);
      break;
    case user_op::set_limit:
      reply.outcome = streams.set_limit(cmd.max_streams);
      break;
    case user_op::clear_limit:
      reply.outcome = streams.set_limit(std::nullopt);
      break;
  }
  if (auto s = streams.find(cmd.session_id))
    reply.session = view_of(*s, now);
  reply.stream_count = streams.count();
  reply.max_streams = streams.limit(settings.default_limit);
  return reply;
}

user_actor spawn_user_actor(caf::actor_system& sys, std::uint64_t user,
                            user_streams record,
                            std::shared_ptr<const user_settings> settings) {
  return sys.spawn(user_actor_impl, user, std::move(record),
                   std::move(settings));
}

} // namespace videostreams
