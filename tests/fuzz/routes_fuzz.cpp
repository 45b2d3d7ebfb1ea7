// Routing and the API's dispatch on any method, path, Authorization and
// body: `api::handle` (http/api.hpp) never throws and never answers 500,
// and its status is the one the contract gives (docs/api.md, README.md):
//
// - a path that matches no route is 404 for every method;
// - OPTIONS on a route is the 204 preflight naming the route's methods;
// - another method than the route's is 405 with an `Allow` header;
// - the operator routes refuse a wrong bearer token (401) before anything
//   else is looked at;
// - a bad user id, session id, body or field is a 400 naming that field,
//   in that order;
// - a request that passes every check reaches its user's shard: here the
//   router has no route for any shard, so it is the 503 with Retry-After
//   that a shard without an owner gets.
//
// `match_route` is checked against a reference matcher written from the
// route templates, and `allowed_methods` against the documented methods.

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>
#include <fuzzer/FuzzedDataProvider.h>

#include "actors/router.hpp"
#include "actors/stream_counters.hpp"
#include "cluster/cluster_view.hpp"
#include "http/api.hpp"
#include "http/metrics.hpp"
#include "http/request_body.hpp"
#include "http/routes.hpp"
#include "http/served_files.hpp"
#include "http/user_id.hpp"

#include "fuzz_check.hpp"

using namespace videostreams;
using videostreams::fuzz::printable;
namespace json = boost::json;

namespace {

constexpr std::string_view admin_token = "fuzz-token";

struct route_template_ref {
  route which;
  // ":u" user id, ":s" session id, ":f" file name
  std::array<std::string_view, 6> segments;
  std::size_t count;
  std::string_view methods; // as documented, the Allow header's value
};

const route_template_ref templates[] = {
  {route::api_index, {"api"}, 1, "GET, HEAD, OPTIONS"},
  {route::healthz, {"healthz"}, 1, "GET, HEAD, OPTIONS"},
  {route::readyz, {"readyz"}, 1, "GET, HEAD, OPTIONS"},
  {route::metrics, {"metrics"}, 1, "GET, HEAD, OPTIONS"},
  {route::cluster, {"api", "cluster"}, 2, "GET, HEAD, OPTIONS"},
  {route::cluster_metrics,
   {"api", "cluster", "metrics"},
   3,
   "GET, HEAD, OPTIONS"},
  {route::cluster_user,
   {"api", "cluster", "users", ":u"},
   4,
   "GET, HEAD, OPTIONS"},
  {route::ui_index, {"ui"}, 1, "GET, HEAD, OPTIONS"},
  {route::ui_file, {"ui", ":f"}, 2, "GET, HEAD, OPTIONS"},
  {route::openapi, {"api", "openapi.json"}, 2, "GET, HEAD, OPTIONS"},
  {route::startstream, {"api", "startstream", ":u"}, 3, "GET, OPTIONS"},
  {route::endstream, {"api", "endstream", ":u"}, 3, "GET, OPTIONS"},
  {route::v2_streams,
   {"api", "v2", "users", ":u", "streams"},
   5,
   "GET, HEAD, POST, OPTIONS"},
  {route::v2_stream,
   {"api", "v2", "users", ":u", "streams", ":s"},
   6,
   "PUT, DELETE, OPTIONS"},
  {route::v2_limit,
   {"api", "v2", "users", ":u", "limit"},
   5,
   "PUT, DELETE, OPTIONS"},
};

struct reference_match {
  const route_template_ref* tmpl = nullptr;
  std::string_view user_id;
  std::string_view session_id;
  std::string_view file;
};

/// Splits the path on '/' (one trailing slash ignored) and compares the
/// segments with each template: literals exactly, parameters non-empty.
reference_match match_reference(std::string_view path) {
  if (path.size() > 1 && path.back() == '/')
    path.remove_suffix(1);
  if (path.empty() || path.front() != '/')
    return {};
  std::vector<std::string_view> segs;
  std::size_t start = 1;
  for (;;) {
    auto slash = path.find('/', start);
    segs.push_back(path.substr(start, slash == std::string_view::npos
                                        ? std::string_view::npos
                                        : slash - start));
    if (slash == std::string_view::npos)
      break;
    start = slash + 1;
  }
  for (auto& t : templates) {
    if (t.count != segs.size())
      continue;
    reference_match m{&t, {}, {}, {}};
    bool ok = true;
    for (std::size_t i = 0; ok && i < t.count; ++i) {
      if (t.segments[i] == ":u") {
        m.user_id = segs[i];
        ok = !segs[i].empty();
      } else if (t.segments[i] == ":s") {
        m.session_id = segs[i];
        ok = !segs[i].empty();
      } else if (t.segments[i] == ":f") {
        m.file = segs[i];
        ok = !segs[i].empty();
      } else {
        ok = segs[i] == t.segments[i];
      }
    }
    if (ok)
      return m;
  }
  return {};
}

/// Whether `method` is one of the documented methods (OPTIONS aside).
bool documented(std::string_view methods, std::string_view method) {
  while (!methods.empty()) {
    auto comma = methods.find(", ");
    auto m = methods.substr(0, comma);
    if (m == method && m != "OPTIONS")
      return true;
    if (comma == std::string_view::npos)
      break;
    methods.remove_prefix(comma + 2);
  }
  return false;
}

bool authorized(std::string_view authorization) {
  if (authorization.size() < 7)
    return false;
  std::string scheme{authorization.substr(0, 7)};
  for (auto& c : scheme)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return scheme == "bearer " && authorization.substr(7) == admin_token;
}

/// The status the contract gives, and for a 400 the field it names.
struct expectation {
  int status;
  std::string field;
};

expectation expected(const api_request& req, const reference_match& m) {
  if (m.tmpl == nullptr)
    return {404, {}};
  // A file name that is not served is a 404 like an unknown path.
  if (m.tmpl->which == route::ui_file
      && !served_files.find("/ui/" + std::string{m.file}))
    return {404, {}};
  if (req.method == "OPTIONS")
    return {204, {}};
  if (!documented(m.tmpl->methods, req.method))
    return {405, {}};
  auto r = m.tmpl->which;
  switch (r) {
    case route::api_index:
    case route::healthz:
    case route::readyz:
    case route::metrics:
      return {200, {}};
    case route::ui_index:
    case route::ui_file:
    case route::openapi:
      return {200, {}};
    case route::cluster:
    case route::cluster_metrics:
      return {authorized(req.authorization) ? 200 : 401, {}};
    case route::cluster_user:
      // With no shard behind the router, the look-up still answers: its
      // streams are null.
      if (!authorized(req.authorization))
        return {401, {}};
      if (!parse_user_id(m.user_id))
        return {400, "user_id"};
      return {200, {}};
    case route::startstream:
    case route::endstream:
      if (!parse_user_id(m.user_id))
        return {400, "user_id"};
      return {503, {}};
    default:
      break;
  }
  if (r == route::v2_limit && !authorized(req.authorization))
    return {401, {}};
  if (!parse_user_id(m.user_id))
    return {400, "user_id"};
  if (r == route::v2_stream && !valid_session_id(m.session_id))
    return {400, "session_id"};
  auto body = parse_object_body(req.body);
  if (std::holds_alternative<field_error>(body))
    return {400, "body"};
  auto& obj = std::get<json::object>(body);
  auto field = [&](std::string_view name) -> const json::value* {
    auto i = obj.find(name);
    return i == obj.end() || i->value().is_null() ? nullptr : &i->value();
  };
  auto integral_within = [](const json::value& v, double lo, double hi) {
    if (v.is_int64())
      return v.get_int64() >= lo && v.get_int64() <= hi;
    if (v.is_double())
      return std::trunc(v.get_double()) == v.get_double()
             && v.get_double() >= lo && v.get_double() <= hi;
    return false; // uint64 (above INT64_MAX), or no number
  };
  if (r == route::v2_streams && req.method == "POST") {
    auto id = field("sessionId");
    if (id && (!id->is_string() || !valid_session_id(id->get_string())))
      return {400, "sessionId"};
    if (auto replace = field("replaceSessionId"))
      if (!replace->is_string() || !valid_session_id(replace->get_string())
          || (id && *id == *replace))
        return {400, "replaceSessionId"};
    if (auto ttl = field("ttlSeconds"))
      if (!integral_within(*ttl, 5, 3600))
        return {400, "ttlSeconds"};
  }
  if (r == route::v2_limit && req.method == "PUT") {
    auto limit = field("maxStreams");
    if (!limit || !integral_within(*limit, 0, 1000))
      return {400, "maxStreams"};
  }
  return {503, {}};
}

const std::string* header(const api_response& res, std::string_view name) {
  for (auto& [n, v] : res.headers)
    if (n == name)
      return &v;
  return nullptr;
}

/// The API without any shard behind it: every command that reaches the
/// router is answered `unavailable` at once, without an actor system.
struct api_under_test {
  api_under_test() : users(4) {
    api_settings settings;
    settings.admin_token = std::string{admin_token};
    auto view = std::make_shared<cluster_view>();
    view->node_id = "fuzz";
    view->shard_count = 4;
    auto box = std::make_shared<cluster_view_box>();
    box->set(view);
    settings.cluster = box;
    handler = std::make_unique<api>(users, settings, metrics, counters);
    handler->set_readiness(readiness::ready);
  }

  router users;
  http_metrics metrics;
  stream_counters counters;
  std::unique_ptr<api> handler;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  static api_under_test under_test;
  // Fields separated by a backslash and any other byte ("\n" in the seed
  // files); the body is the rest.
  FuzzedDataProvider in{data, size};
  auto method = in.ConsumeRandomLengthString();
  auto path = in.ConsumeRandomLengthString();
  auto authorization = in.ConsumeRandomLengthString();
  auto body = in.ConsumeRemainingBytesAsString();
  api_request req{method, path, body, authorization};
  auto what = [&] {
    return "request " + printable(method) + " " + printable(path)
           + " auth '" + printable(authorization) + "' body '"
           + printable(body) + "'";
  };

  auto ref = match_reference(path);
  auto m = match_route(path);
  FUZZ_CHECK(m.which == (ref.tmpl ? ref.tmpl->which : route::unmatched)
               && m.user_id == ref.user_id && m.session_id == ref.session_id
               && m.file == ref.file,
             "match_route gave route " + std::string{route_template(m.which)}
               + " user '" + printable(m.user_id) + "' session '"
               + printable(m.session_id) + "' for " + printable(path));
  if (ref.tmpl)
    FUZZ_CHECK(allowed_methods(m.which) == ref.tmpl->methods,
               "allowed_methods(" + std::string{route_template(m.which)}
                 + ") is " + std::string{allowed_methods(m.which)});

  auto res = under_test.handler->handle(req); // noexcept: a throw aborts
  auto want = expected(req, ref);
  FUZZ_CHECK(res.status == want.status,
             "status " + std::to_string(res.status) + ", contract says "
               + std::to_string(want.status) + ": " + what() + "\nbody: "
               + res.body);
  json::object body_json;
  if (res.content_type.substr(0, 16) == "application/json"
      && !res.body.empty()) {
    json::error_code ec;
    auto v = json::parse(res.body, ec);
    FUZZ_CHECK(!ec && v.is_object(), "the answer is no JSON object: "
                                       + res.body + "\n" + what());
    body_json = std::move(v.as_object());
  }
  auto msg = [&] {
    auto i = body_json.find("msg");
    return i != body_json.end() && i->value().is_string()
             ? std::string{i->value().get_string()}
             : std::string{};
  };
  switch (res.status) {
    case 204: {
      auto allow = header(res, "Access-Control-Allow-Methods");
      FUZZ_CHECK(res.body.empty() && allow
                   && *allow == ref.tmpl->methods,
                 "preflight without the route's methods: " + what());
      break;
    }
    case 400: {
      auto f = body_json.find("field");
      // The original API's routes answer a bad id in its own words.
      bool legacy = ref.tmpl->which == route::startstream
                    || ref.tmpl->which == route::endstream;
      FUZZ_CHECK((legacy ? msg() == "user_id is invalid , needs to be a number"
                         : msg() == "Bad Request")
                   && f != body_json.end()
                   && f->value().is_string()
                   && f->value().get_string() == want.field,
                 "a 400 that does not name field " + want.field + ": "
                   + res.body + "\n" + what());
      break;
    }
    case 401:
      FUZZ_CHECK(msg() == "Unauthorized" && header(res, "WWW-Authenticate"),
                 "a 401 without its body or challenge: " + what());
      break;
    case 404:
      FUZZ_CHECK(msg() == "Route not found", "404 body " + res.body);
      break;
    case 405: {
      auto allow = header(res, "Allow");
      FUZZ_CHECK(msg() == "Method not allowed" && allow
                   && *allow == ref.tmpl->methods,
                 "a 405 without the route's Allow header: " + what());
      break;
    }
    case 503:
      FUZZ_CHECK(msg() == "Service Unavailable" && header(res, "Retry-After"),
                 "a 503 without Retry-After: " + what());
      break;
    default:
      break;
  }
  return 0;
}
