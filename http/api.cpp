#include "http/api.hpp"

#include <cstdio>

#include <boost/json.hpp>

#include "caf/sec.hpp"

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

api_response bad_request(std::string_view detail) {
  return json_response(400, json::object{{"msg", "Bad Request"},
                                         {"detail", detail}});
}

/// The one mapping from a failed call into the actors to HTTP.
api_response call_failed(const caf::error& err, int retry_after_seconds) {
  if (err == caf::sec::request_timeout) {
    auto res = error_response(503);
    res.headers.emplace_back("Retry-After",
                             std::to_string(retry_after_seconds));
    return res;
  }
  return error_response(500);
}

/// The original API's body for a user actor's reply (DESIGN §2.1). Written
/// directly rather than through a JSON tree: these are the hot requests, and
/// their shape is fixed (the unit and black-box tests pin every byte).
std::string legacy_body(const user_reply& reply) {
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
      status = R"("msg":"no open stream")";
      break;
  }
  char buf[128];
  auto n = std::snprintf(buf, sizeof(buf),
                         R"({"streamStatus":{%s,"streamCount":%u}})", status,
                         static_cast<unsigned>(reply.stream_count));
  return std::string(buf, static_cast<std::size_t>(n));
}

bool is_read_only(route r) {
  return r != route::startstream && r != route::endstream;
}

} // namespace

api::api(const router& users, api_settings settings, http_metrics& metrics,
         const stream_counters& counters)
  : users_(users),
    settings_(settings),
    metrics_(metrics),
    counters_(counters) {
  // Nothing else to do.
}

std::string api::error_body(int status) {
  const char* msg;
  switch (status) {
    case 400:
      msg = "Bad Request";
      break;
    case 404:
      msg = "Route not found";
      break;
    case 405:
      msg = "Method not allowed";
      break;
    case 413:
      msg = "Payload Too Large";
      break;
    case 414:
      msg = "URI Too Long";
      break;
    case 503:
      msg = "Service Unavailable";
      break;
    default:
      msg = status < 500 ? "Bad Request" : "Server Error";
  }
  return json::serialize(json::object{{"msg", msg}});
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
  if (req.method == "OPTIONS") {
    // CORS preflight; Access-Control-Allow-Origin is added to every answer.
    api_response res;
    res.status = 204;
    res.headers.emplace_back("Access-Control-Allow-Methods",
                             std::string{allowed_methods(m.which)});
    res.headers.emplace_back("Access-Control-Allow-Headers",
                             "Content-Type, Authorization");
    res.headers.emplace_back("Access-Control-Max-Age", "86400");
    return res;
  }
  bool allowed = req.method == "GET"
                 || (req.method == "HEAD" && is_read_only(m.which));
  if (!allowed) {
    auto res = error_response(405);
    res.headers.emplace_back("Allow", std::string{allowed_methods(m.which)});
    return res;
  }
  switch (m.which) {
    case route::api_index: {
      api_response res;
      res.body = endpoints_json;
      return res;
    }
    case route::startstream:
    case route::endstream:
      return stream_command(m.which, m.user_id);
    case route::healthz:
      return json_response(200, json::object{{"status", "ok"}});
    case route::readyz:
      return readyz();
    case route::metrics: {
      api_response res;
      res.body = metrics_.render(counters_);
      res.content_type = "text/plain; version=0.0.4; charset=utf-8";
      return res;
    }
    case route::unmatched:
      break;
  }
  return error_response(404);
}

api_response api::stream_command(route r, std::string_view user_id_text) {
  auto user = parse_user_id(user_id_text);
  if (!user)
    return bad_request("user_id must be a non-negative decimal integer of at "
                       "most 9223372036854775807");
  user_command cmd;
  cmd.op = r == route::startstream ? user_op::start_legacy
                                   : user_op::end_legacy;
  cmd.user = *user;
  auto reply = users_.call(cmd, settings_.request_timeout);
  if (!reply)
    return call_failed(reply.error(), settings_.retry_after_seconds);
  api_response res;
  res.body = legacy_body(*reply);
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
                                          {"database", "none"}});
}

} // namespace videostreams
