#include "http/api.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>
#include <variant>

#include <boost/json.hpp>

#include "caf/sec.hpp"

#include "actors/clock.hpp"
#include "http/request_body.hpp"
#include "http/user_id.hpp"

namespace videostreams {

extern const char* const endpoints_json; // generated from endpoints.json

namespace {

namespace json = boost::json;

api_response json_response(int status, const json::value& body) {
  api_response res;
  res.status = status;
  res.body = json::serialize(body);
  return res;
}

api_response error_response(int status) {
  api_response res;
  res.status = status;
  res.body = api::error_body(status);
  return res;
}

api_response bad_request(const field_error& err) {
  return json_response(400, json::object{{"msg", "Bad Request"},
                                         {"field", err.field},
                                         {"detail", err.detail}});
}

const field_error bad_user_id{
  "user_id",
  "must be a non-negative decimal integer of at most 9223372036854775807"};

/// The original API's answers that are not a `streamStatus` (docs/api.md, "The
/// original API"), in its own words (the "invalid ," is the original's).
constexpr const char* legacy_bad_user_id
  = R"({"msg":"user_id is invalid , needs to be a number","field":"user_id"})";
constexpr const char* legacy_nothing_to_close
  = R"({"msg":"no active streams to close for user"})";
constexpr const char* legacy_unknown_user
  = R"({"msg":"user_id not present in the database"})";

const char* const session_id_rule
  = "must be 1 to 64 characters of A-Z a-z 0-9 . _ -";

/// How often a player should heartbeat a session with a lease of
/// `ttl_seconds`: a third of it, at least 1 s, so that two heartbeats may be
/// lost before the lease runs out.
std::uint32_t heartbeat_interval(std::uint32_t ttl_seconds) {
  return std::max<std::uint32_t>(1, ttl_seconds / 3);
}

/// True for a list of header names as `Access-Control-Request-Headers`
/// carries it: tokens (RFC 9110), commas and blanks; nothing that could
/// end a header line when echoed.
bool header_name_list(std::string_view text) {
  if (text.size() > 1024)
    return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return std::isalnum(u) != 0 || c == ',' || c == ' ' || c == '\t'
           || std::string_view{"!#$%&'*+-.^_`|~"}.find(c)
                != std::string_view::npos;
  });
}

json::value optional_time(std::int64_t wall_ms) {
  if (wall_ms == 0)
    return nullptr;
  return json::string{rfc3339(wall_ms)};
}

json::object session_json(const session_view& s) {
  json::object obj;
  if (s.id.empty())
    obj["sessionId"] = nullptr;
  else
    obj["sessionId"] = s.id;
  obj["startedAt"] = rfc3339(s.started_at_ms);
  obj["expiresAt"] = optional_time(s.expires_at_ms);
  return obj;
}

json::array sessions_json(const std::vector<session_view>& xs) {
  json::array result;
  result.reserve(xs.size());
  for (auto& x : xs)
    result.emplace_back(session_json(x));
  return result;
}

/// Compares in time independent of where the strings differ.
bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i])
            ^ static_cast<unsigned char>(i < b.size() ? b[i] : 0);
  return diff == 0;
}

template <class T>
const field_error* error_of(const std::variant<T, field_error>& x) {
  return std::get_if<field_error>(&x);
}

api_response unavailable(int retry_after_seconds) {
  auto res = error_response(503);
  res.headers.emplace_back("Retry-After", std::to_string(retry_after_seconds));
  return res;
}

/// The one mapping from a failed call into the actors to HTTP: no answer
/// in time, or a cluster that could not reach a deciding owner (it passes
/// once the cluster settles), is a 503; anything else is a fault.
api_response call_failed(const caf::error& err, int retry_after_seconds) {
  if (err == caf::sec::request_timeout
      || err.category() == caf::atom("cluster"))
    return unavailable(retry_after_seconds);
  return error_response(500);
}

/// The original API's body for a user actor's reply (docs/api.md, "The original
/// API"). Written directly rather than through a JSON tree: these are the hot
/// requests, and their shape is fixed (the unit and black-box tests pin every
/// byte). Nothing for an outcome that no legacy command produces.
std::optional<std::string> legacy_body(const user_reply& reply) {
  const char* status = nullptr;
  switch (reply.outcome) {
    case stream_outcome::granted:
      status = R"("isNewStreamAllowed":true)";
      break;
    case stream_outcome::denied:
      status = R"("isNewStreamAllowed":false)";
      break;
    case stream_outcome::closed:
      status = R"("msg":"stream closed")";
      break;
    case stream_outcome::nothing_to_close:
    case stream_outcome::unknown_user:
    case stream_outcome::renewed:
    case stream_outcome::not_found:
    case stream_outcome::listed:
    case stream_outcome::limit_set:
    case stream_outcome::unavailable:
    case stream_outcome::ended_elsewhere:
      return std::nullopt;
  }
  char buf[128];
  auto n = std::snprintf(buf, sizeof(buf),
                         R"({"streamStatus":{%s,"streamCount":%u}})", status,
                         static_cast<unsigned>(reply.stream_count));
  return std::string(buf, static_cast<std::size_t>(n));
}

json::object cluster_json(const cluster_view& v) {
  json::array members;
  for (auto& m : v.members)
    members.emplace_back(json::object{{"nodeId", m.node_id},
                                      {"advertiseHost", m.advertise_host},
                                      {"httpPort", m.http_port},
                                      {"clusterPort", m.cluster_port},
                                      {"status", m.status},
                                      {"shards", m.shards},
                                      {"lastHeartbeat", m.last_heartbeat}});
  json::array shards;
  shards.reserve(v.shards.size());
  for (auto& s : v.shards) {
    json::value owner = nullptr;
    if (!s.owner.empty())
      owner = json::string{s.owner};
    shards.emplace_back(json::object{{"shard", s.shard},
                                     {"owner", std::move(owner)},
                                     {"epoch", s.epoch},
                                     {"state", s.state}});
  }
  return json::object{{"nodeId", v.node_id},
                      {"shardCount", v.shard_count},
                      {"members", std::move(members)},
                      {"shards", std::move(shards)}};
}

} // namespace

api::api(const router& users, api_settings settings, http_metrics& metrics,
         const stream_counters& counters,
         const persistence_counters* persistence)
  : users_(users),
    settings_(std::move(settings)),
    metrics_(metrics),
    counters_(counters),
    persistence_(persistence),
    member_metrics_(settings_.member_metrics, [this] {
      return metrics_.render(counters_, persistence_,
                             settings_.cluster_figures.get());
    }) {
  // Nothing else to do.
}

std::string api::error_body(int status, std::string_view detail) {
  const char* msg;
  switch (status) {
    case 400:
      msg = "Bad Request";
      break;
    case 401:
      msg = "Unauthorized";
      break;
    case 403:
      msg = "Forbidden";
      break;
    case 404:
      msg = "Route not found";
      break;
    case 405:
      msg = "Method not allowed";
      break;
    case 408:
      msg = "Request Timeout";
      break;
    case 413:
      msg = "Payload Too Large";
      break;
    case 414:
      msg = "URI Too Long";
      break;
    case 415:
      msg = "Unsupported Media Type";
      break;
    case 431:
      msg = "Request Header Fields Too Large";
      break;
    case 503:
      msg = "Service Unavailable";
      break;
    default:
      msg = status < 500 ? "Bad Request" : "Server Error";
  }
  json::object body{{"msg", msg}};
  if (!detail.empty())
    body["detail"] = detail;
  return json::serialize(body);
}

api_response api::handle(const api_request& req) noexcept {
  auto start = std::chrono::steady_clock::now();
  auto m = match_route(req.path);
  api_response res;
  try {
    res = dispatch(req, m);
  } catch (...) {
    res = error_response(500);
  }
  metrics_.record(m.which, res.status,
                  std::chrono::steady_clock::now() - start);
  return res;
}

api_response api::dispatch(const api_request& req, const route_match& m) {
  if (m.which == route::unmatched)
    return error_response(404);
  // A file that is not served is a path like any unknown one.
  const served_file* file = nullptr;
  if (m.which == route::ui_index)
    file = served_files.find("/ui/index.html");
  else if (m.which == route::ui_file)
    file = served_files.find("/ui/" + std::string{m.file});
  else if (m.which == route::openapi)
    file = served_files.find("/api/openapi.json");
  if ((m.which == route::ui_index || m.which == route::ui_file
       || m.which == route::openapi)
      && !file)
    return error_response(404);
  if (req.method == "OPTIONS") {
    // CORS preflight, as the original's cors() answered it: the headers
    // the browser asks for are allowed (echoed), and the answer varies
    // with them. Access-Control-Allow-Origin is added to every answer.
    if (!header_name_list(req.request_headers))
      return json_response(400, json::object{
                                  {"msg", "Bad Request"},
                                  {"field", "Access-Control-Request-Headers"},
                                  {"detail", "must be a list of header names "
                                             "(at most 1024 characters)"}});
    api_response res;
    res.status = 204;
    res.headers.emplace_back("Access-Control-Allow-Methods",
                             std::string{allowed_methods(m.which)});
    res.headers.emplace_back("Access-Control-Allow-Headers",
                             req.request_headers.empty()
                               ? std::string{"Content-Type, Authorization"}
                               : std::string{req.request_headers});
    res.headers.emplace_back("Vary", "Access-Control-Request-Headers");
    res.headers.emplace_back("Access-Control-Max-Age", "86400");
    return res;
  }
  if (!allows_method(m.which, req.method)) {
    auto res = error_response(405);
    res.headers.emplace_back("Allow", std::string{allowed_methods(m.which)});
    return res;
  }
  bool about_a_user = m.which == route::startstream
                      || m.which == route::endstream
                      || m.which == route::v2_streams
                      || m.which == route::v2_stream
                      || m.which == route::v2_limit;
  if (about_a_user
      && readiness_.load(std::memory_order_acquire) == readiness::starting)
    return unavailable(settings_.retry_after_seconds); // state still loading
  switch (m.which) {
    case route::api_index: {
      api_response res;
      res.body = endpoints_json;
      return res;
    }
    case route::startstream:
    case route::endstream:
      return legacy_command(m.which, m.user_id);
    case route::v2_streams:
    case route::v2_stream:
    case route::v2_limit:
      return session_command(req, m);
    case route::healthz:
      return json_response(200, json::object{{"status", "ok"}});
    case route::readyz:
      return readyz();
    case route::cluster:
      if (auto refused = refuse_operator(req.authorization, false))
        return std::move(*refused);
      return cluster();
    case route::cluster_metrics:
      if (auto refused = refuse_operator(req.authorization, false))
        return std::move(*refused);
      return cluster_metrics();
    case route::cluster_user:
      if (auto refused = refuse_operator(req.authorization, false))
        return std::move(*refused);
      return cluster_user(m.user_id);
    case route::ui_index:
    case route::ui_file:
    case route::openapi:
      return served(*file, req.if_none_match);
    case route::metrics: {
      api_response res;
      res.body = metrics_.render(counters_, persistence_,
                                 settings_.cluster_figures.get());
      res.content_type = "text/plain; version=0.0.4; charset=utf-8";
      return res;
    }
    case route::unmatched:
      break;
  }
  return error_response(404);
}

api_response api::legacy_command(route r, std::string_view user_id_text) {
  auto user = parse_user_id(user_id_text);
  if (!user) {
    api_response res;
    res.status = 400;
    res.body = legacy_bad_user_id;
    return res;
  }
  user_command cmd;
  cmd.op = r == route::startstream ? user_op::start_legacy
                                   : user_op::end_legacy;
  cmd.user = *user;
  auto reply = users_.call(cmd, settings_.request_timeout);
  if (!reply)
    return call_failed(reply.error(), settings_.retry_after_seconds);
  api_response res;
  switch (reply->outcome) {
    case stream_outcome::unavailable:
      return unavailable(settings_.retry_after_seconds);
    case stream_outcome::nothing_to_close:
      res.status = 400;
      res.body = legacy_nothing_to_close;
      return res;
    case stream_outcome::unknown_user:
      res.status = 400;
      res.body = legacy_unknown_user;
      return res;
    default:
      break;
  }
  auto body = legacy_body(*reply);
  if (!body)
    return error_response(500);
  res.body = std::move(*body);
  return res;
}

api_response api::session_command(const api_request& req,
                                  const route_match& m) {
  if (m.which == route::v2_limit) {
    // Operator access is checked before anything about the request is
    // revealed or validated.
    if (auto refused = refuse_operator(req.authorization, true))
      return std::move(*refused);
  }
  auto user = parse_user_id(m.user_id);
  if (!user)
    return bad_request(bad_user_id);
  if (m.which == route::v2_stream && !valid_session_id(m.session_id))
    return bad_request({"session_id", session_id_rule});
  auto body = parse_object_body(req.body);
  if (auto err = error_of(body))
    return bad_request(*err);
  auto& fields = std::get<json::object>(body);
  user_command cmd;
  cmd.user = *user;
  cmd.session_id = std::string{m.session_id};
  switch (m.which) {
    case route::v2_streams:
      if (req.method != "POST") {
        cmd.op = user_op::list_sessions;
        break;
      }
      cmd.op = user_op::open_session;
      {
        auto id = optional_string(fields, "sessionId");
        if (auto err = error_of(id))
          return bad_request(*err);
        auto& given = std::get<std::optional<std::string>>(id);
        if (given && !valid_session_id(*given))
          return bad_request({"sessionId", session_id_rule});
        cmd.session_id = given ? *given : new_session_id();
        auto replace = optional_string(fields, "replaceSessionId");
        if (auto err = error_of(replace))
          return bad_request(*err);
        if (auto& r = std::get<std::optional<std::string>>(replace)) {
          if (!valid_session_id(*r))
            return bad_request({"replaceSessionId", session_id_rule});
          if (*r == cmd.session_id)
            return bad_request({"replaceSessionId",
                                "must differ from sessionId: a session "
                                "cannot replace itself"});
          cmd.replace_session_id = std::move(*r);
        }
        auto ttl = optional_integer(fields, "ttlSeconds",
                                    settings_.min_ttl_seconds,
                                    settings_.max_ttl_seconds);
        if (auto err = error_of(ttl))
          return bad_request(*err);
        if (auto& t = std::get<std::optional<std::int64_t>>(ttl))
          cmd.ttl_seconds = static_cast<std::uint32_t>(*t);
      }
      break;
    case route::v2_stream:
      cmd.op = req.method == "PUT" ? user_op::heartbeat
                                   : user_op::close_session;
      break;
    case route::v2_limit:
      if (req.method == "DELETE") {
        cmd.op = user_op::clear_limit;
        break;
      }
      cmd.op = user_op::set_limit;
      {
        auto limit = optional_integer(fields, "maxStreams", 0, 1000);
        if (auto err = error_of(limit))
          return bad_request(*err);
        auto& l = std::get<std::optional<std::int64_t>>(limit);
        if (!l)
          return bad_request({"maxStreams", "is required: an integer from 0 "
                                            "to 1000"});
        cmd.max_streams = static_cast<std::uint32_t>(*l);
      }
      break;
    default:
      return error_response(404);
  }
  auto reply = users_.call(cmd, settings_.request_timeout);
  if (!reply)
    return call_failed(reply.error(), settings_.retry_after_seconds);
  auto& r = *reply;
  auto user_json = static_cast<std::int64_t>(cmd.user);
  auto streams_url = "/api/v2/users/" + std::to_string(cmd.user) + "/streams";
  switch (r.outcome) {
    case stream_outcome::granted:
    case stream_outcome::renewed: {
      json::object obj{{"userId", user_json},
                       {"sessionId", r.session.id},
                       {"streamCount", r.stream_count},
                       {"maxStreams", r.max_streams},
                       {"expiresAt", optional_time(r.session.expires_at_ms)},
                       {"heartbeatIntervalSeconds",
                        heartbeat_interval(r.session.ttl_seconds)}};
      if (r.replaced)
        obj["replacedSessionId"] = cmd.replace_session_id;
      return json_response(
        r.outcome == stream_outcome::granted && cmd.op == user_op::open_session
          ? 201
          : 200,
        obj);
    }
    case stream_outcome::denied:
      return json_response(409,
                           json::object{{"msg", "stream limit reached"},
                                        {"streamCount", r.stream_count},
                                        {"maxStreams", r.max_streams},
                                        {"sessions",
                                         sessions_json(r.sessions)}});
    case stream_outcome::closed:
      return json_response(200, json::object{{"msg", "stream closed"},
                                             {"streamCount", r.stream_count}});
    case stream_outcome::not_found:
      return json_response(
        404,
        json::object{
          {"msg", "Stream not found"},
          {"sessionId", cmd.session_id},
          {"detail", cmd.op == user_op::heartbeat
                       ? "no open session has this id (its lease expired, "
                         "or it never opened): stop renewing it, and open "
                         "a new session with POST "
                         + streams_url + " to keep playing"
                       : "no open session has this id: nothing to close"}});
    case stream_outcome::ended_elsewhere:
      return json_response(
        410,
        json::object{
          {"msg", "stream ended by another device"},
          {"sessionId", cmd.session_id},
          {"detail", "this session was closed by a DELETE or replaced by "
                     "another device's session: stop playback and stop "
                     "renewing it; to play here again, open a new session "
                     "with POST "
                       + streams_url
                       + " (at the limit, 409 lists the sessions to "
                         "replace)"}});
    case stream_outcome::listed:
      return json_response(200, json::object{{"userId", user_json},
                                             {"streamCount", r.stream_count},
                                             {"maxStreams", r.max_streams},
                                             {"sessions",
                                              sessions_json(r.sessions)}});
    case stream_outcome::limit_set:
      return json_response(200, json::object{{"userId", user_json},
                                             {"maxStreams", r.max_streams}});
    case stream_outcome::unavailable:
      return unavailable(settings_.retry_after_seconds);
    case stream_outcome::nothing_to_close:
    case stream_outcome::unknown_user:
      break;
  }
  return error_response(500); // an outcome no v2 command produces
}

std::optional<api_response>
api::refuse_operator(std::string_view authorization,
                     bool token_required) const {
  if (settings_.admin_token.empty()) {
    if (!token_required)
      return std::nullopt;
    return json_response(403, json::object{
                                {"msg", "Forbidden"},
                                {"detail", "no admin token is configured"}});
  }
  // RFC 9110: the scheme name is case-insensitive.
  constexpr std::string_view bearer = "bearer ";
  auto scheme = authorization.substr(0, bearer.size());
  bool is_bearer = scheme.size() == bearer.size()
                   && std::equal(scheme.begin(), scheme.end(), bearer.begin(),
                                 [](char a, char b) {
                                   return std::tolower(
                                            static_cast<unsigned char>(a))
                                          == b;
                                 });
  auto given = is_bearer ? authorization.substr(bearer.size())
                         : std::string_view{};
  if (constant_time_equal(given, settings_.admin_token))
    return std::nullopt;
  auto res = json_response(401, json::object{{"msg", "Unauthorized"}});
  res.headers.emplace_back("WWW-Authenticate", "Bearer");
  return res;
}

api_response api::cluster() const {
  auto view = settings_.cluster ? settings_.cluster->get() : nullptr;
  if (!view)
    return unavailable(settings_.retry_after_seconds);
  return json_response(200, cluster_json(*view));
}

api_response api::cluster_metrics() {
  auto view = settings_.cluster ? settings_.cluster->get() : nullptr;
  if (!view)
    return unavailable(settings_.retry_after_seconds);
  api_response res;
  res.body = member_metrics_.collect(*view);
  return res;
}

api_response api::cluster_user(std::string_view user_id_text) {
  auto user = parse_user_id(user_id_text);
  if (!user)
    return bad_request(bad_user_id);
  auto view = settings_.cluster ? settings_.cluster->get() : nullptr;
  if (!view)
    return unavailable(settings_.retry_after_seconds);
  auto shard = users_.shard_of_user(*user);
  json::object out{{"userId", static_cast<std::int64_t>(*user)},
                   {"shard", shard},
                   {"shardCount", users_.shard_count()},
                   {"owner", nullptr},
                   {"epoch", nullptr},
                   {"state", "unowned"}};
  for (auto& s : view->shards) {
    if (s.shard != shard)
      continue;
    if (!s.owner.empty())
      out["owner"] = s.owner;
    out["epoch"] = s.epoch;
    out["state"] = s.state;
    break;
  }
  // The user's streams as the owner sees them: a look-up is for an
  // operator, who also wants the shard's owner when that owner does not
  // answer, so a failed call leaves "streams" null and says why.
  user_command cmd;
  cmd.op = user_op::list_sessions;
  cmd.user = *user;
  auto reply = users_.call(cmd, settings_.request_timeout);
  if (reply && reply->outcome == stream_outcome::listed) {
    out["streams"] = json::object{{"streamCount", reply->stream_count},
                                  {"maxStreams", reply->max_streams},
                                  {"sessions", sessions_json(reply->sessions)}};
  } else {
    out["streams"] = nullptr;
    out["detail"] = !reply && reply.error() == caf::sec::request_timeout
                      ? "the shard's owner did not answer in time"
                      : "the shard's owner could not answer now";
  }
  return json_response(200, out);
}

api_response api::served(const served_file& file,
                         std::string_view if_none_match) {
  api_response res;
  // Revalidated on every use (a 304 costs a few bytes), so a browser never
  // shows a page older than the binary that serves it.
  res.headers.emplace_back("ETag", std::string{file.etag});
  res.headers.emplace_back("Cache-Control", "no-cache");
  res.headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (file.content_type.substr(0, 9) == "text/html")
    // The pages are self-contained: nothing from elsewhere may load, and
    // they talk to this node only.
    res.headers.emplace_back(
      "Content-Security-Policy",
      "default-src 'none'; script-src 'self' 'unsafe-inline'; "
      "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
      "connect-src 'self'; base-uri 'none'; form-action 'none'; "
      "frame-ancestors 'none'");
  if (etag_matches(if_none_match, file.etag)) {
    res.status = 304;
    return res;
  }
  res.body = std::string{file.body};
  res.content_type = file.content_type;
  return res;
}

api_response api::readyz() const {
  const char* status = "ready";
  int code = 200;
  switch (readiness_.load(std::memory_order_acquire)) {
    case readiness::starting:
      status = "starting";
      code = 503;
      break;
    case readiness::ready:
      break;
    case readiness::stopping:
      status = "stopping";
      code = 503;
      break;
  }
  return json_response(code, json::object{{"status", status},
                                          {"database",
                                           settings_.database_status()}});
}

} // namespace videostreams
