#include "http/member_metrics.hpp"

#include <array>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include <boost/json.hpp>
#include <httplib.h>

#include "actors/clock.hpp"
#include "http/routes.hpp"

namespace videostreams {

namespace {

namespace json = boost::json;

using clock_type = std::chrono::steady_clock;

/// One sample line of the exposition: `name{labels} value [timestamp]`.
struct sample {
  std::string_view name;
  /// Between the braces; empty without labels.
  std::string_view labels;
  double value = 0;
};

std::optional<sample> parse_sample(std::string_view line) {
  if (line.empty() || line.front() == '#')
    return std::nullopt;
  sample s;
  auto name_end = line.find_first_of("{ \t");
  if (name_end == std::string_view::npos || name_end == 0)
    return std::nullopt;
  s.name = line.substr(0, name_end);
  auto rest = line.substr(name_end);
  if (rest.front() == '{') {
    // Label values are quoted and may hold an escaped quote or a brace.
    std::size_t i = 1;
    bool quoted = false;
    for (; i < rest.size(); ++i) {
      char c = rest[i];
      if (quoted && c == '\\') {
        ++i;
        continue;
      }
      if (c == '"')
        quoted = !quoted;
      else if (c == '}' && !quoted)
        break;
    }
    if (i >= rest.size())
      return std::nullopt;
    s.labels = rest.substr(1, i - 1);
    rest.remove_prefix(i + 1);
  }
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t'))
    rest.remove_prefix(1);
  auto value_end = rest.find_first_of(" \t");
  std::string value{rest.substr(0, value_end)};
  if (value.empty())
    return std::nullopt;
  char* end = nullptr;
  s.value = std::strtod(value.c_str(), &end);
  if (end != value.c_str() + value.size() || std::isnan(s.value))
    return std::nullopt;
  return s;
}

/// The value of label `key` in `labels` (`a="x",b="y"`), unescaped.
std::optional<std::string> label_value(std::string_view labels,
                                       std::string_view key) {
  std::size_t i = 0;
  while (i < labels.size()) {
    while (i < labels.size() && (labels[i] == ',' || labels[i] == ' '))
      ++i;
    auto eq = labels.find('=', i);
    if (eq == std::string_view::npos || eq + 1 >= labels.size()
        || labels[eq + 1] != '"')
      return std::nullopt;
    auto name = labels.substr(i, eq - i);
    std::string value;
    std::size_t j = eq + 2;
    for (; j < labels.size() && labels[j] != '"'; ++j) {
      if (labels[j] == '\\' && j + 1 < labels.size()) {
        ++j;
        value += labels[j] == 'n' ? '\n' : labels[j];
      } else {
        value += labels[j];
      }
    }
    if (j >= labels.size())
      return std::nullopt;
    if (name == key)
      return value;
    i = j + 1;
  }
  return std::nullopt;
}

bool is_user_route(std::string_view tmpl) {
  for (auto r : {route::startstream, route::endstream, route::v2_streams,
                 route::v2_stream})
    if (route_template(r) == tmpl)
      return true;
  return false;
}

json::object figures_json(const std::string& node_id,
                          const member_figures& f) {
  // Counters are integers; shown as such (a double would print 1e+06).
  auto whole = [](double x) { return static_cast<std::int64_t>(x); };
  return json::object{{"nodeId", node_id},
                      {"reachable", true},
                      {"openStreams", whole(f.open_streams)},
                      {"liveUserActors", whole(f.live_user_actors)},
                      {"requests", whole(f.requests)},
                      {"userRequests", whole(f.user_requests)},
                      {"serverErrors", whole(f.server_errors)},
                      {"grants", whole(f.grants)},
                      {"denials", whole(f.denials)}};
}

json::object unreachable_json(const std::string& node_id,
                              const std::string& why) {
  return json::object{{"nodeId", node_id},
                      {"reachable", false},
                      {"error", why}};
}

/// One member's figures over HTTP, or why there are none.
json::object scrape_member(const member_view& m,
                           const member_metrics_settings& settings) {
  if (m.advertise_host.empty() || m.http_port <= 0 || m.http_port > 65535)
    return unreachable_json(m.node_id, "no HTTP address known");
  httplib::Client cli{m.advertise_host, m.http_port};
  cli.set_connection_timeout(settings.connect_timeout);
  cli.set_read_timeout(settings.read_timeout);
  cli.set_write_timeout(settings.read_timeout);
  cli.set_keep_alive(false);
  cli.set_tcp_nodelay(true);
  auto deadline = clock_type::now() + settings.total_timeout;
  std::string body;
  const char* cut = nullptr;
  auto res = cli.Get("/metrics", [&](const char* data, std::size_t n) {
    if (body.size() + n > settings.max_body_bytes) {
      cut = "its /metrics answer is too long";
      return false;
    }
    if (clock_type::now() > deadline) {
      cut = "its /metrics answer took too long";
      return false;
    }
    body.append(data, n);
    return true;
  });
  if (cut)
    return unreachable_json(m.node_id, cut);
  if (!res)
    return unreachable_json(m.node_id,
                            "GET /metrics failed: "
                              + httplib::to_string(res.error()));
  if (res->status != 200)
    return unreachable_json(m.node_id, "GET /metrics answered "
                                         + std::to_string(res->status));
  auto figures = read_member_figures(body);
  if (!figures)
    return unreachable_json(m.node_id,
                            "its /metrics holds no videostreams figures");
  return figures_json(m.node_id, *figures);
}

} // namespace

std::optional<member_figures> read_member_figures(std::string_view text) {
  member_figures f;
  bool found = false;
  while (!text.empty()) {
    auto eol = text.find('\n');
    auto line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{}
                                         : text.substr(eol + 1);
    auto s = parse_sample(line);
    if (!s)
      continue;
    if (s->name == "videostreams_open_streams") {
      f.open_streams = s->value;
      found = true;
    } else if (s->name == "videostreams_live_user_actors") {
      f.live_user_actors = s->value;
    } else if (s->name == "videostreams_stream_grants_total") {
      f.grants = s->value;
    } else if (s->name == "videostreams_stream_denials_total") {
      f.denials = s->value;
    } else if (s->name == "videostreams_http_requests_total") {
      f.requests += s->value;
      auto code = label_value(s->labels, "code");
      if (code && !code->empty() && code->front() == '5')
        f.server_errors += s->value;
      auto r = label_value(s->labels, "route");
      if (r && is_user_route(*r))
        f.user_requests += s->value;
    }
  }
  if (!found)
    return std::nullopt;
  return f;
}

member_metrics_collector::member_metrics_collector(
  member_metrics_settings settings, std::function<std::string()> own_metrics)
  : settings_(settings), own_metrics_(std::move(own_metrics)) {
  // Nothing else to do.
}

std::string member_metrics_collector::collect(const cluster_view& view) {
  // One collection at a time: a caller that waited here finds the
  // collection that held it up, fresh enough to reuse.
  std::lock_guard<std::mutex> guard{mtx_};
  auto now = clock_type::now();
  if (!last_.empty() && now - collected_at_ < settings_.reuse_for)
    return last_;
  std::vector<const member_view*> others;
  for (auto& m : view.members)
    if (m.node_id != view.node_id)
      others.push_back(&m);
  std::vector<json::object> answers(others.size());
  std::vector<std::thread> scrapers;
  auto asked = std::min(others.size(), settings_.max_members);
  scrapers.reserve(asked);
  for (std::size_t i = 0; i < others.size(); ++i) {
    if (i >= asked) {
      answers[i] = unreachable_json(others[i]->node_id,
                                    "not asked: more members than "
                                      + std::to_string(asked));
      continue;
    }
    try {
      scrapers.emplace_back([this, &answers, &others, i] {
        answers[i] = scrape_member(*others[i], settings_);
      });
    } catch (const std::system_error&) {
      answers[i] = unreachable_json(others[i]->node_id,
                                    "not asked: no thread to ask it");
    }
  }
  // This node's own figures meanwhile, without a request to itself.
  json::object own;
  if (auto figures = read_member_figures(own_metrics_()))
    own = figures_json(view.node_id, *figures);
  else
    own = unreachable_json(view.node_id, "its /metrics holds no figures");
  for (auto& t : scrapers)
    t.join();
  // In the view's order; this node first if the view does not list it (it
  // is leaving, or has not joined yet).
  json::array members;
  members.reserve(others.size() + 1);
  bool listed = false;
  for (auto& m : view.members)
    listed = listed || m.node_id == view.node_id;
  if (!listed)
    members.emplace_back(std::move(own));
  std::size_t next = 0;
  for (auto& m : view.members) {
    if (m.node_id == view.node_id)
      members.emplace_back(std::move(own));
    else
      members.emplace_back(std::move(answers[next++]));
  }
  auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  last_ = json::serialize(json::object{{"nodeId", view.node_id},
                                       {"collectedAt", rfc3339(wall_ms)},
                                       {"members", std::move(members)}});
  collected_at_ = clock_type::now();
  return last_;
}

} // namespace videostreams
