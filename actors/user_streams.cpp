#include "actors/user_streams.hpp"

#include <algorithm>
#include <utility>

namespace videostreams {

namespace {

constexpr std::int64_t ns_per_second = 1'000'000'000;

std::int64_t deadline(const clock_reading& now, std::uint32_t ttl_seconds) {
  return ttl_seconds == 0 ? 0 : now.mono_ns + ttl_seconds * ns_per_second;
}

} // namespace

std::string to_string(stream_outcome x) {
  switch (x) {
    case stream_outcome::granted:
      return "granted";
    case stream_outcome::renewed:
      return "renewed";
    case stream_outcome::denied:
      return "denied";
    case stream_outcome::closed:
      return "closed";
    case stream_outcome::nothing_to_close:
      return "nothing_to_close";
    case stream_outcome::not_found:
      return "not_found";
    case stream_outcome::listed:
      return "listed";
    case stream_outcome::limit_set:
      return "limit_set";
    case stream_outcome::unavailable:
      return "unavailable";
    case stream_outcome::unknown_user:
      return "unknown_user";
    case stream_outcome::ended_elsewhere:
      return "ended_elsewhere";
  }
  return "unknown";
}

std::size_t user_streams::expire(std::int64_t now_ns) {
  auto expired = [now_ns](const stream_session& s) {
    return s.expires_at_ns != 0 && s.expires_at_ns <= now_ns;
  };
  auto first = std::remove_if(sessions_.begin(), sessions_.end(), expired);
  auto removed = static_cast<std::size_t>(sessions_.end() - first);
  sessions_.erase(first, sessions_.end());
  if (removed > 0) {
    last_end_ns_ = now_ns;
    if (sessions_.empty())
      sessions_.shrink_to_fit(); // a quiet user should cost nothing
  }
  if (!ended_.empty()) {
    auto over = std::remove_if(ended_.begin(), ended_.end(),
                               [now_ns](const ended_session& e) {
                                 return e.until_ns <= now_ns;
                               });
    ended_.erase(over, ended_.end());
    if (ended_.empty())
      ended_.shrink_to_fit();
  }
  return removed;
}

std::int64_t user_streams::next_expiry() const noexcept {
  std::int64_t result = 0;
  for (auto& s : sessions_)
    if (s.expires_at_ns != 0 && (result == 0 || s.expires_at_ns < result))
      result = s.expires_at_ns;
  return result;
}

std::int64_t user_streams::next_cleanup() const noexcept {
  auto result = next_expiry();
  for (auto& e : ended_)
    if (result == 0 || e.until_ns < result)
      result = e.until_ns;
  return result;
}

void user_streams::end_session(std::vector<stream_session>::iterator i,
                               const clock_reading& now) {
  auto ttl = i->ttl_seconds == 0 ? 1u : i->ttl_seconds;
  ended_session e{std::move(i->id), deadline(now, ttl)};
  sessions_.erase(i);
  if (sessions_.empty())
    sessions_.shrink_to_fit();
  last_end_ns_ = now.mono_ns;
  forget_ended(e.id);
  if (ended_.size() >= max_ended_sessions) {
    // Forget the one whose time ends first.
    auto first = std::min_element(ended_.begin(), ended_.end(),
                                  [](const ended_session& a,
                                     const ended_session& b) {
                                    return a.until_ns < b.until_ns;
                                  });
    ended_.erase(first);
  }
  ended_.push_back(std::move(e));
}

void user_streams::forget_ended(const std::string& id) noexcept {
  auto i = std::find_if(ended_.begin(), ended_.end(),
                        [&id](const ended_session& e) { return e.id == id; });
  if (i != ended_.end())
    ended_.erase(i);
}

stream_outcome user_streams::start_legacy(std::uint32_t limit,
                                          std::uint32_t ttl_seconds,
                                          const clock_reading& now,
                                          std::string key) {
  expire(now.mono_ns);
  if (count() >= limit)
    return stream_outcome::denied;
  sessions_.push_back(stream_session{std::move(key), now.wall_ms,
                                     deadline(now, ttl_seconds), ttl_seconds});
  return stream_outcome::granted;
}

stream_outcome user_streams::end_legacy(const clock_reading& now) {
  expire(now.mono_ns);
  auto oldest = std::find_if(sessions_.begin(), sessions_.end(),
                             [](const stream_session& s) {
                               return s.is_legacy();
                             });
  if (oldest == sessions_.end())
    return known(now.mono_ns) ? stream_outcome::nothing_to_close
                              : stream_outcome::unknown_user;
  sessions_.erase(oldest);
  if (sessions_.empty())
    sessions_.shrink_to_fit();
  last_end_ns_ = now.mono_ns;
  return stream_outcome::closed;
}

stream_outcome user_streams::open(const std::string& id,
                                  std::uint32_t ttl_seconds,
                                  std::uint32_t limit,
                                  const clock_reading& now,
                                  const std::string& replace,
                                  bool* replaced) {
  expire(now.mono_ns);
  if (replaced != nullptr)
    *replaced = false;
  // The session to end, if `replace` names another open one.
  stream_session* old = nullptr;
  if (!replace.empty() && replace != id)
    old = find_mutable(replace);
  auto end_old = [&] {
    if (old == nullptr)
      return;
    end_session(sessions_.begin() + (old - sessions_.data()), now);
    if (replaced != nullptr)
      *replaced = true;
  };
  if (auto s = find_mutable(id)) {
    if (ttl_seconds > 0)
      s->ttl_seconds = ttl_seconds;
    s->expires_at_ns = deadline(now, s->ttl_seconds);
    end_old(); // invalidates `s`
    return stream_outcome::renewed;
  }
  // The replaced session's slot counts as free, and is only freed when the
  // new one takes it: one decision, never a moment over the limit.
  if (count() - (old != nullptr ? 1u : 0u) >= limit)
    return stream_outcome::denied;
  end_old();
  forget_ended(id);
  sessions_.push_back(
    stream_session{id, now.wall_ms, deadline(now, ttl_seconds), ttl_seconds});
  return stream_outcome::granted;
}

stream_outcome user_streams::heartbeat(const std::string& id,
                                       const clock_reading& now) {
  expire(now.mono_ns);
  auto s = find_mutable(id);
  if (s == nullptr) {
    for (auto& e : ended_)
      if (e.id == id)
        return stream_outcome::ended_elsewhere;
    return stream_outcome::not_found;
  }
  s->expires_at_ns = deadline(now, s->ttl_seconds);
  return stream_outcome::renewed;
}

stream_outcome user_streams::close(const std::string& id,
                                   const clock_reading& now) {
  expire(now.mono_ns);
  auto s = find_mutable(id);
  if (s == nullptr)
    return stream_outcome::not_found;
  end_session(sessions_.begin() + (s - sessions_.data()), now);
  return stream_outcome::closed;
}

void user_streams::restore(stream_session s) {
  auto pos = std::upper_bound(sessions_.begin(), sessions_.end(), s,
                              [](const stream_session& a,
                                 const stream_session& b) {
                                return a.started_at_ms < b.started_at_ms;
                              });
  sessions_.insert(pos, std::move(s));
}

bool user_streams::remove(const std::string& key) {
  auto i = std::find_if(sessions_.begin(), sessions_.end(),
                        [&key](const stream_session& s) {
                          return s.id == key;
                        });
  if (i == sessions_.end())
    return false;
  sessions_.erase(i);
  if (sessions_.empty())
    sessions_.shrink_to_fit();
  return true;
}

stream_outcome user_streams::set_limit(std::optional<std::uint32_t> limit) {
  own_limit_ = limit ? static_cast<std::int32_t>(*limit) : -1;
  return stream_outcome::limit_set;
}

const stream_session*
user_streams::find(const std::string& id) const noexcept {
  if (id.empty() || id.front() == '~')
    return nullptr; // streams opened by startstream cannot be named
  for (auto& s : sessions_)
    if (s.id == id)
      return &s;
  return nullptr;
}

stream_session* user_streams::find_mutable(const std::string& id) noexcept {
  return const_cast<stream_session*>(std::as_const(*this).find(id));
}

} // namespace videostreams
