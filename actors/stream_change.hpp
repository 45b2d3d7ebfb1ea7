#pragma once

#include <cstdint>
#include <string>

#include "caf/atom.hpp"
#include "caf/meta/type_name.hpp"
#include "caf/replies_to.hpp"
#include "caf/typed_actor.hpp"

namespace videostreams {

/// With a change: asks the persistence actor to answer once the change is
/// durable (`true`), or with an error when its commit failed or was not
/// confirmed within the commit timeout. A change sent alone is written
/// behind, unanswered.
using commit_atom = caf::atom_constant<caf::atom("commit")>;

/// What happened to a user's state, as the database records it.
enum class change_kind : std::uint8_t {
  grant,       ///< a stream was opened (or its lease's TTL changed)
  close,       ///< a stream was closed or its lease expired
  set_limit,   ///< the user got a limit of its own
  clear_limit, ///< the user went back to the default limit
};

/// One change to write behind. Changes to the same stream (or the same
/// user's limit) coalesce: only the last one of a batch is written.
struct stream_change {
  change_kind kind = change_kind::grant;
  std::uint64_t user = 0;
  /// The stream's key: its session id, or an internal key for a stream
  /// without one. Empty for limit changes.
  std::string key;
  /// False for a stream opened by `startstream` (no client-visible id).
  bool has_id = true;
  /// Wall-clock start and expiry, ms since the epoch; expiry 0 = never.
  std::int64_t started_at_ms = 0;
  std::int64_t expires_at_ms = 0;
  std::uint32_t ttl_seconds = 0;
  /// The new limit for `set_limit`.
  std::uint32_t max_streams = 0;
  /// The user's shard; the write is fenced by this shard's owner epoch.
  std::uint32_t shard = 0;
  /// The lease epoch of the shard's tenure that decided the change; a
  /// change of an earlier tenure is never written under a later one. 0 =
  /// not stamped: written under the epoch the writer holds.
  std::int64_t epoch = 0;
  /// For a change sent with `commit_atom`: answer by then at the latest
  /// (steady clock ns), so that its grant is undone before its caller
  /// gives up; 0 = the sink's own commit timeout only. Never written.
  std::int64_t answer_by_ns = 0;
  /// A change that undoes one whose commit failed (the close after an
  /// undone grant, the limit memory kept after a limit change failed):
  /// never refused for a full backlog, since the failed change may yet be
  /// written by a retry and only this one sets the database right. Never
  /// written.
  bool undoes_failed_commit = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_change& x) {
  return f(caf::meta::type_name("stream_change"), x.kind, x.user, x.key,
           x.has_id, x.started_at_ms, x.expires_at_ms, x.ttl_seconds,
           x.max_streams, x.shard, x.epoch, x.answer_by_ns,
           x.undoes_failed_commit);
}

/// Where user actors send what changed, to be written behind: the
/// persistence actor implements it (a stand-in does in the unit tests). A
/// change sent alone is written behind, unanswered; with `commit_atom` it
/// is answered `true` once durable, or with an error in bounded time.
using change_sink
  = caf::typed_actor<caf::reacts_to<stream_change>,
                     caf::replies_to<commit_atom, stream_change>::with<bool>>;

} // namespace videostreams

#include <optional>
#include <vector>

#include "actors/user_streams.hpp"

namespace videostreams {

/// What of a user's state the database records: each stream's key, start
/// and TTL, and the user's own limit. Taken before a decision, compared
/// after it.
class persisted_view {
public:
  explicit persisted_view(const user_streams& streams);

  /// Appends to `out` the changes that lead from this view to `now`, of
  /// `shard` under `epoch`: a grant for each new stream, changed TTL or
  /// new start (a session that expired and was opened again under its id
  /// in one decision), a close for each stream gone, a limit change if the
  /// user's own limit changed. Heartbeats change nothing here (on recovery
  /// every lease gets a fresh TTL).
  void changes_to(const user_streams& now, std::uint64_t user,
                  std::uint32_t shard, std::int64_t epoch,
                  const clock_reading& clock,
                  std::vector<stream_change>& out) const;

private:
  struct recorded_stream {
    std::string key;
    std::int64_t started_at_ms;
    std::uint32_t ttl_seconds;
  };
  std::vector<recorded_stream> streams_;
  std::optional<std::uint32_t> own_limit_;
};

/// The change that gives `user` its own `limit` (none: back to the
/// default), of `shard` under `epoch`.
stream_change limit_change(std::uint64_t user,
                           std::optional<std::uint32_t> limit,
                           std::uint32_t shard, std::int64_t epoch);

} // namespace videostreams
