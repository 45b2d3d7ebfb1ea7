#include "actors/stream_change.hpp"

#include <algorithm>

namespace videostreams {

persisted_view::persisted_view(const user_streams& streams)
  : own_limit_(streams.own_limit()) {
  streams_.reserve(streams.count());
  for (auto& s : streams.sessions())
    streams_.push_back(recorded_stream{s.id, s.started_at_ms, s.ttl_seconds});
}

void persisted_view::changes_to(const user_streams& now, std::uint64_t user,
                                std::uint32_t shard, std::int64_t epoch,
                                const clock_reading& clock,
                                std::vector<stream_change>& out) const {
  auto before = [this](const std::string& id) -> const recorded_stream* {
    for (auto& r : streams_)
      if (r.key == id)
        return &r;
    return nullptr;
  };
  // Closes first: a decision that ends one stream and opens another (a
  // replace) must never be written as a moment over the limit, whatever
  // batch each change lands in.
  for (auto& r : streams_) {
    auto& cur = now.sessions();
    if (std::any_of(cur.begin(), cur.end(), [&](const stream_session& s) {
          return s.id == r.key;
        }))
      continue;
    stream_change c;
    c.kind = change_kind::close;
    c.user = user;
    c.key = r.key;
    c.shard = shard;
    c.epoch = epoch;
    out.push_back(std::move(c));
  }
  for (auto& s : now.sessions()) {
    auto r = before(s.id);
    if (r != nullptr && r->ttl_seconds == s.ttl_seconds
        && r->started_at_ms == s.started_at_ms)
      continue;
    stream_change c;
    c.kind = change_kind::grant;
    c.user = user;
    c.key = s.id;
    c.has_id = !s.is_legacy();
    c.started_at_ms = s.started_at_ms;
    c.ttl_seconds = s.ttl_seconds;
    c.expires_at_ms = s.expires_at_ns == 0 ? 0
                                           : clock.wall_ms_at(s.expires_at_ns);
    c.shard = shard;
    c.epoch = epoch;
    out.push_back(std::move(c));
  }
  if (now.own_limit() != own_limit_)
    out.push_back(limit_change(user, now.own_limit(), shard, epoch));
}

stream_change limit_change(std::uint64_t user,
                           std::optional<std::uint32_t> limit,
                           std::uint32_t shard, std::int64_t epoch) {
  stream_change c;
  c.kind = limit ? change_kind::set_limit : change_kind::clear_limit;
  c.user = user;
  c.max_streams = limit.value_or(0);
  c.shard = shard;
  c.epoch = epoch;
  return c;
}

} // namespace videostreams
