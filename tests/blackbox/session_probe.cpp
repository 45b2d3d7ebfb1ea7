#include "session_probe.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>

#include <catch2/catch.hpp>

namespace videostreams::blackbox {

namespace json = boost::json;

std::string streams_path(const std::string& user) {
  return "/api/v2/users/" + user + "/streams";
}

std::string stream_path(const std::string& user, const std::string& session) {
  return "/api/v2/users/" + user + "/streams/" + session;
}

std::string limit_path(const std::string& user) {
  return "/api/v2/users/" + user + "/limit";
}

std::string open_body(const std::optional<std::string>& session_id,
                      const std::optional<std::int64_t>& ttl_seconds) {
  json::object obj;
  if (session_id)
    obj["sessionId"] = *session_id;
  if (ttl_seconds)
    obj["ttlSeconds"] = *ttl_seconds;
  return json::serialize(obj);
}

reply open_session(httplib::Client& cli, const std::string& user,
                   const std::optional<std::string>& body) {
  return send(cli, "POST", streams_path(user), body);
}

reply heartbeat(httplib::Client& cli, const std::string& user,
                const std::string& session,
                const std::optional<std::string>& body) {
  return send(cli, "PUT", stream_path(user, session), body);
}

reply close_session(httplib::Client& cli, const std::string& user,
                    const std::string& session) {
  return send(cli, "DELETE", stream_path(user, session));
}

reply list_sessions(httplib::Client& cli, const std::string& user) {
  return get(cli, streams_path(user));
}

httplib::Headers bearer(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}

std::optional<json::value> json_of(const std::string& body) {
  json::error_code ec;
  auto value = json::parse(body, ec);
  if (ec)
    return std::nullopt;
  return value;
}

std::optional<std::int64_t> int_field(const std::string& body,
                                      std::string_view name) {
  auto value = json_of(body);
  if (!value || !value->is_object())
    return std::nullopt;
  auto field = value->as_object().if_contains(name);
  if (field == nullptr || !field->is_int64())
    return std::nullopt;
  return field->as_int64();
}

std::optional<std::string> string_field(const std::string& body,
                                        std::string_view name) {
  auto value = json_of(body);
  if (!value || !value->is_object())
    return std::nullopt;
  auto field = value->as_object().if_contains(name);
  if (field == nullptr || !field->is_string())
    return std::nullopt;
  return std::string{field->as_string().c_str()};
}

std::optional<std::int64_t> rfc3339_ms(std::string_view text) {
  // date-time = full-date "T" partial-time time-offset (RFC 3339 §5.6).
  auto digits = [&](std::size_t at, std::size_t n) -> std::optional<int> {
    if (at + n > text.size())
      return std::nullopt;
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(text[i])))
        return std::nullopt;
      v = v * 10 + (text[i] - '0');
    }
    return v;
  };
  auto is = [&](std::size_t at, char c) {
    return at < text.size() && text[at] == c;
  };
  auto year = digits(0, 4);
  auto month = digits(5, 2);
  auto day = digits(8, 2);
  auto hour = digits(11, 2);
  auto minute = digits(14, 2);
  auto second = digits(17, 2);
  if (!year || !month || !day || !hour || !minute || !second || !is(4, '-')
      || !is(7, '-') || !(is(10, 'T') || is(10, 't')) || !is(13, ':')
      || !is(16, ':') || *month < 1 || *month > 12 || *day < 1 || *day > 31
      || *hour > 23 || *minute > 59 || *second > 60)
    return std::nullopt;
  std::size_t at = 19;
  std::int64_t millis = 0;
  if (is(at, '.')) {
    ++at;
    std::size_t first = at;
    std::int64_t scale = 100;
    while (at < text.size()
           && std::isdigit(static_cast<unsigned char>(text[at]))) {
      millis += (text[at] - '0') * scale;
      scale /= 10;
      ++at;
    }
    if (at == first)
      return std::nullopt;
  }
  std::int64_t offset_minutes = 0;
  if (is(at, 'Z') || is(at, 'z')) {
    ++at;
  } else if (is(at, '+') || is(at, '-')) {
    auto oh = digits(at + 1, 2);
    auto om = digits(at + 4, 2);
    if (!oh || !om || !is(at + 3, ':'))
      return std::nullopt;
    offset_minutes = (*oh * 60 + *om) * (text[at] == '-' ? -1 : 1);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != text.size())
    return std::nullopt;
  std::tm tm{};
  tm.tm_year = *year - 1900;
  tm.tm_mon = *month - 1;
  tm.tm_mday = *day;
  tm.tm_hour = *hour;
  tm.tm_min = *minute;
  tm.tm_sec = *second;
  auto seconds = static_cast<std::int64_t>(::timegm(&tm));
  return (seconds - offset_minutes * 60) * 1000 + millis;
}

std::int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

std::vector<std::string> keys_of(const json::object& obj) {
  std::vector<std::string> result;
  for (auto& kv : obj)
    result.emplace_back(kv.key());
  std::sort(result.begin(), result.end());
  return result;
}

json::object require_object(const reply& r, int status) {
  INFO("status " << r.status << " " << r.error << ", body: " << r.body);
  REQUIRE(r.status == status);
  CHECK(r.header("Access-Control-Allow-Origin") == "*");
  CHECK(r.header("Content-Type") == json_content_type);
  auto value = json_of(r.body);
  REQUIRE(value.has_value());
  REQUIRE(value->is_object());
  return value->as_object();
}

std::int64_t check_session_answer(const reply& r, int status,
                                  std::int64_t user,
                                  const std::string& session,
                                  std::int64_t count, std::int64_t max) {
  auto obj = require_object(r, status);
  INFO("body: " << r.body);
  CHECK(keys_of(obj)
        == std::vector<std::string>{"expiresAt", "heartbeatIntervalSeconds",
                                    "maxStreams", "sessionId", "streamCount",
                                    "userId"});
  REQUIRE(obj["heartbeatIntervalSeconds"].is_int64());
  CHECK(obj["heartbeatIntervalSeconds"].as_int64() >= 1);
  CHECK(obj["userId"] == json::value(user));
  REQUIRE(obj["sessionId"].is_string());
  if (!session.empty())
    CHECK(obj["sessionId"].as_string() == session);
  CHECK(obj["streamCount"] == json::value(count));
  CHECK(obj["maxStreams"] == json::value(max));
  REQUIRE(obj["expiresAt"].is_string());
  auto expires = rfc3339_ms(obj["expiresAt"].as_string());
  REQUIRE(expires.has_value());
  return *expires;
}

std::vector<listed_session> require_sessions(const json::object& obj) {
  auto sessions = obj.if_contains("sessions");
  REQUIRE(sessions != nullptr);
  REQUIRE(sessions->is_array());
  std::vector<listed_session> result;
  for (auto& entry : sessions->as_array()) {
    INFO("session entry: " << json::serialize(entry));
    REQUIRE(entry.is_object());
    auto& e = entry.as_object();
    CHECK(keys_of(e)
          == std::vector<std::string>{"expiresAt", "sessionId", "startedAt"});
    listed_session s;
    auto id = e.if_contains("sessionId");
    REQUIRE(id != nullptr);
    REQUIRE((id->is_string() || id->is_null()));
    if (id->is_string())
      s.id = std::string{id->as_string().c_str()};
    auto started = e.if_contains("startedAt");
    REQUIRE(started != nullptr);
    REQUIRE(started->is_string());
    auto started_ms = rfc3339_ms(started->as_string());
    REQUIRE(started_ms.has_value());
    s.started_at_ms = *started_ms;
    auto expires = e.if_contains("expiresAt");
    REQUIRE(expires != nullptr);
    REQUIRE((expires->is_string() || expires->is_null()));
    if (expires->is_string()) {
      auto ms = rfc3339_ms(expires->as_string());
      REQUIRE(ms.has_value());
      s.expires_at_ms = *ms;
    }
    result.push_back(s);
  }
  return result;
}

std::vector<std::optional<std::string>> listing::ids() const {
  std::vector<std::optional<std::string>> result;
  for (auto& s : sessions)
    result.push_back(s.id);
  return result;
}

listing require_listing(httplib::Client& cli, const std::string& user) {
  auto r = list_sessions(cli, user);
  INFO("GET " << streams_path(user));
  auto obj = require_object(r, 200);
  INFO("body: " << r.body);
  CHECK(keys_of(obj)
        == std::vector<std::string>{"maxStreams", "sessions", "streamCount",
                                    "userId"});
  CHECK(obj["userId"] == json::value(std::stoll(user)));
  REQUIRE(obj["streamCount"].is_int64());
  REQUIRE(obj["maxStreams"].is_int64());
  listing result;
  result.count = obj["streamCount"].as_int64();
  result.max = obj["maxStreams"].as_int64();
  result.sessions = require_sessions(obj);
  CHECK(result.count == static_cast<std::int64_t>(result.sessions.size()));
  return result;
}

void check_field_error(const reply& r, std::string_view field) {
  INFO("expected a 400 naming " << field << "; got " << r.status << " "
                                << r.error << ", body: " << r.body);
  CHECK(r.status == 400);
  CHECK(r.header("Access-Control-Allow-Origin") == "*");
  CHECK(r.header("Content-Type") == json_content_type);
  auto value = json_of(r.body);
  REQUIRE(value.has_value());
  REQUIRE(value->is_object());
  auto& obj = value->as_object();
  CHECK(obj.if_contains("msg") != nullptr);
  CHECK(obj["msg"] == "Bad Request");
  CHECK(obj["field"] == json::value(field));
}

} // namespace videostreams::blackbox
