#pragma once

// The messages that reach a user actor, its typed interface, and the local
// reply slot that lets an HTTP thread wait for an answer without an actor of
// its own. Everything here except `local_call` is serializable (0.17-style
// `inspect`) and registered by `register_message_types`, because the cluster
// forwards the same commands between nodes.

#include <atomic>
#include <chrono>
#include <thread>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "caf/allowed_unsafe_message_type.hpp"
#include "caf/atom.hpp"
#include "caf/meta/type_name.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

#include "actors/user_streams.hpp"

namespace videostreams {

/// What a request asks of a user's actor.
enum class user_op : std::uint8_t {
  start_legacy,  ///< `GET /api/startstream/:user_id`
  end_legacy,    ///< `GET /api/endstream/:user_id`
  open_session,  ///< `POST /api/v2/users/:user_id/streams`
  heartbeat,     ///< `PUT /api/v2/users/:user_id/streams/:session_id`
  close_session, ///< `DELETE /api/v2/users/:user_id/streams/:session_id`
  list_sessions, ///< `GET /api/v2/users/:user_id/streams`
  set_limit,     ///< `PUT /api/v2/users/:user_id/limit`
  clear_limit,   ///< `DELETE /api/v2/users/:user_id/limit`
};

/// Renders an operation for logs and test output.
std::string to_string(user_op x);

/// A request about one user, routed to that user's actor.
struct user_command {
  user_op op = user_op::start_legacy;
  std::uint64_t user = 0;
  /// The session (open, heartbeat, close); empty otherwise.
  std::string session_id;
  /// Lease length for `open_session`; 0 = the configured default.
  std::uint32_t ttl_seconds = 0;
  /// The new limit for `set_limit`.
  std::uint32_t max_streams = 0;
  /// For `open_session`: the session to end in the same decision (a player
  /// taking over another device's slot); empty for none.
  std::string replace_session_id{};
  /// When the caller stops waiting, on this node's monotonic clock (ns of
  /// `std::chrono::steady_clock`); 0 = never. Nothing may be decided for a
  /// caller that has given up (it was answered 503): a command that
  /// arrives late is refused. Between nodes it travels as the time left
  /// (`forwarded_command::budget_ns`), since their clocks differ.
  std::int64_t answer_by_ns = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_command& x) {
  return f(caf::meta::type_name("user_command"), x.op, x.user, x.session_id,
           x.ttl_seconds, x.max_streams, x.replace_session_id,
           x.answer_by_ns);
}

/// A session as clients see it, with wall-clock times.
struct session_view {
  /// Empty for a stream opened by `startstream` (shown as null).
  std::string id;
  std::int64_t started_at_ms = 0;
  /// Wall-clock expiry in ms since the epoch; 0 when it never expires.
  std::int64_t expires_at_ms = 0;
  /// Length of the lease (renewed by each heartbeat); 0 = never expires.
  std::uint32_t ttl_seconds = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, session_view& x) {
  return f(caf::meta::type_name("session_view"), x.id, x.started_at_ms,
           x.expires_at_ms, x.ttl_seconds);
}

/// The answer of a user actor to a `user_command`.
struct user_reply {
  stream_outcome outcome = stream_outcome::denied;
  /// Open streams after the decision.
  std::uint32_t stream_count = 0;
  /// The limit that applies to the user.
  std::uint32_t max_streams = 0;
  /// The session the command was about (open, heartbeat), if any.
  session_view session;
  /// All open sessions, oldest first: for `list_sessions`, and for an
  /// `open_session` denied at the limit.
  std::vector<session_view> sessions;
  /// For `open_session` with a `replace_session_id`: true when that session
  /// was open and this decision ended it.
  bool replaced = false;

  /// No node could decide now (503 with `Retry-After`).
  static user_reply unavailable() {
    user_reply r;
    r.outcome = stream_outcome::unavailable;
    return r;
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, user_reply& x) {
  return f(caf::meta::type_name("user_reply"), x.outcome, x.stream_count,
           x.max_streams, x.session, x.sessions, x.replaced);
}

/// A one-shot rendezvous between an HTTP thread and an actor: the thread
/// waits with a deadline, the actor fulfills it once. A late fulfillment
/// after the waiter gave up is harmless (the slot is shared).
class reply_slot {
public:
  /// Stores the answer and wakes the waiter. Only the first call counts.
  void fulfill(const user_reply& x) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (ready_.load(std::memory_order_relaxed))
        return;
      value_ = x;
      ready_.store(true, std::memory_order_release);
      if (!sleeping_)
        return;
    }
    cv_.notify_one();
  }

  /// Waits until fulfilled or `timeout` passed; true when fulfilled.
  bool wait_for(std::chrono::nanoseconds timeout) {
    // The actor usually answers within microseconds. Yielding a few times
    // first lets the actor thread run and spares the futex sleep and wake-up
    // (measured: +15-25% throughput, bench/README.md); a longer spin only
    // burns the CPU that the actor thread needs.
    // An answer that waits for a database commit takes a millisecond or
    // more: then yielding only costs context switches, so stop at once.
    for (int i = 0; i < yields_before_sleep; ++i) {
      if (ready_.load(std::memory_order_acquire))
        return true;
      if (deferred_.load(std::memory_order_relaxed))
        break;
      std::this_thread::yield();
    }
    std::unique_lock<std::mutex> guard{mtx_};
    sleeping_ = true;
    return cv_.wait_for(guard, timeout, [this] {
      return ready_.load(std::memory_order_relaxed);
    });
  }

  /// Tells the waiter that the answer will come later (after a commit), so
  /// it should sleep rather than yield. Harmless once fulfilled.
  void defer() noexcept {
    deferred_.store(true, std::memory_order_relaxed);
  }

  /// The answer; valid after `wait_for` returned true.
  const user_reply& value() const noexcept {
    return value_;
  }

private:
  static constexpr int yields_before_sleep = 10;

  std::mutex mtx_;
  std::condition_variable cv_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> deferred_{false};
  bool sleeping_ = false;
  user_reply value_;
};

/// A command from a thread on this node, answered through a reply slot
/// instead of a response message. Never leaves the node: the router converts
/// it to a plain request before forwarding to another node.
struct local_call {
  user_command cmd;
  std::shared_ptr<reply_slot> slot;
};

/// Asks a user actor to stop and hand its state to the shard.
using passivate_atom = caf::atom_constant<caf::atom("passivate")>;

/// Tells a user actor that one of its leases may have expired (sent by its
/// shard); with a user and a deadline, asks the shard for that wake-up.
using expire_atom = caf::atom_constant<caf::atom("expire")>;

/// The typed interface of a user actor. It answers commands about its user,
/// either as a request (`user_command`) or through a slot (`local_call`), and
/// on `passivate` replies with its whole state and stops.
using user_actor = caf::typed_actor<
  caf::replies_to<user_command>::with<user_reply>,
  caf::reacts_to<local_call>,
  caf::replies_to<passivate_atom>::with<user_streams>,
  caf::reacts_to<expire_atom>>;

/// Whatever the router hands a command to: a local shard actor, a link to
/// the node that owns the shard, or this node's cluster gate, which holds a
/// command while its shard changes hands. It answers a `user_command`
/// request with the user's reply, or a `local_call` through its slot (with
/// `stream_outcome::unavailable` when no owner could decide in time).
using user_endpoint
  = caf::typed_actor<caf::replies_to<user_command>::with<user_reply>,
                     caf::reacts_to<local_call>>;

} // namespace videostreams

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(videostreams::local_call)
