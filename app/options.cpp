#include "app/options.hpp"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <limits>
#include <string_view>

#include <unistd.h>

#include "app/db_command.hpp"

namespace videostreams {

namespace {

/// One row of the option table.
struct option_spec {
  const char* name;
  const char* help;
  /// Never printed: the start-up log shows "***" instead.
  bool secret = false;
  /// Parses `text` into `opts`; returns an error message or "".
  std::function<std::string(const std::string& text, options& opts)> parse;
  /// Renders the current value of this option in `opts`.
  std::function<std::string(const options& opts)> format;
  /// A switch: `--name` alone means `--name=on`.
  bool is_switch = false;
};

template <class T>
std::optional<T> parse_integer(const std::string& text) {
  T value{};
  auto first = text.data();
  auto last = text.data() + text.size();
  auto [end, ec] = std::from_chars(first, last, value);
  if (text.empty() || ec != std::errc{} || end != last)
    return std::nullopt;
  return value;
}

} // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string text) {
  long long scale = 1000;
  auto strip = [&text](const char* suffix, long long factor, long long& out) {
    std::string s{suffix};
    if (text.size() > s.size()
        && text.compare(text.size() - s.size(), s.size(), s) == 0) {
      text.resize(text.size() - s.size());
      out = factor;
      return true;
    }
    return false;
  };
  strip("ms", 1, scale) || strip("s", 1000, scale) || strip("m", 60000, scale);
  auto n = parse_integer<long long>(text);
  if (!n || *n < 0 || *n > std::numeric_limits<long long>::max() / scale)
    return std::nullopt;
  return std::chrono::milliseconds{*n * scale};
}

namespace {

std::string format_duration(std::chrono::milliseconds x) {
  auto ms = x.count();
  if (ms % 60000 == 0 && ms != 0)
    return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0)
    return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

template <class T>
option_spec integer_option(const char* name, const char* help,
                           T options::*field, T min, T max) {
  return {
    name, help, false,
    [=](const std::string& text, options& opts) -> std::string {
      auto v = parse_integer<T>(text);
      if (!v || *v < min || *v > max)
        return "must be an integer from " + std::to_string(min) + " to "
               + std::to_string(max);
      opts.*field = *v;
      return {};
    },
    [=](const options& opts) { return std::to_string(opts.*field); }};
}

option_spec duration_option(const char* name, const char* help,
                            std::chrono::milliseconds options::*field,
                            std::chrono::milliseconds min,
                            std::chrono::milliseconds max) {
  return {
    name, help, false,
    [=](const std::string& text, options& opts) -> std::string {
      auto v = parse_duration(text);
      if (!v || *v < min || *v > max)
        return "must be a duration such as 250ms, 30s or 2m, from "
               + format_duration(min) + " to " + format_duration(max);
      opts.*field = *v;
      return {};
    },
    [=](const options& opts) { return format_duration(opts.*field); }};
}

/// A duration in whole seconds into a field of seconds: "90s", "30m",
/// "6h", "2000ms" or a bare number of seconds; `min`/`max` in seconds.
option_spec seconds_option(const char* name, const char* help,
                           std::uint32_t options::*field, std::uint32_t min,
                           std::uint32_t max) {
  auto render = [](std::uint32_t seconds) {
    if (seconds != 0 && seconds % 3600 == 0)
      return std::to_string(seconds / 3600) + "h";
    if (seconds != 0 && seconds % 60 == 0)
      return std::to_string(seconds / 60) + "m";
    return std::to_string(seconds) + (seconds == 0 ? "" : "s");
  };
  return {
    name, help, false,
    [=](const std::string& text, options& opts) -> std::string {
      std::optional<std::chrono::milliseconds> v;
      if (text.size() > 1 && text.back() == 'h') {
        auto hours = parse_integer<long long>(text.substr(0, text.size() - 1));
        if (hours && *hours >= 0 && *hours <= 24LL * 366)
          v = std::chrono::hours{*hours};
      } else {
        v = parse_duration(text);
      }
      if (!v || v->count() % 1000 != 0 || v->count() / 1000 < min
          || v->count() / 1000 > max)
        return "must be a duration in whole seconds such as 90s, 30m or 6h "
               "(a bare number is seconds), from "
               + render(min) + " to " + render(max);
      opts.*field = static_cast<std::uint32_t>(v->count() / 1000);
      return {};
    },
    [=](const options& opts) { return render(opts.*field); }};
}

/// An on/off option: on, off, true, false, yes, no, 1, 0; `--name` alone
/// is on.
option_spec switch_option(const char* name, const char* help,
                          bool options::*field) {
  return {
    name, help, false,
    [=](const std::string& text, options& opts) -> std::string {
      if (text == "on" || text == "true" || text == "yes" || text == "1")
        opts.*field = true;
      else if (text == "off" || text == "false" || text == "no" || text == "0")
        opts.*field = false;
      else
        return "must be on or off";
      return {};
    },
    [=](const options& opts) {
      return std::string{opts.*field ? "on" : "off"};
    },
    true};
}

const std::vector<option_spec>& option_table() {
  using std::chrono::milliseconds;
  static const std::vector<option_spec> table{
    integer_option<int>("port",
                        "TCP port of the HTTP API (0 picks a free one)",
                        &options::port, 0, 65535),
    {"bind", "address the HTTP API listens on", false,
     [](const std::string& text, options& opts) -> std::string {
       if (text.empty())
         return "must not be empty";
       opts.bind = text;
       return {};
     },
     [](const options& opts) { return opts.bind; }},
    integer_option<std::uint32_t>(
      "max-streams", "concurrent streams a user may hold", &options::max_streams,
      0, 1000),
    integer_option<std::uint32_t>(
      "shards", "shards the users are spread over (mix64(user) % shards)",
      &options::shards, 1, 65536),
    duration_option("passivate-after",
                    "an idle user actor stops after this long; its open "
                    "streams stay with its shard",
                    &options::passivate_after, milliseconds{10},
                    milliseconds{86400000}),
    duration_option("request-timeout",
                    "a request whose user actor does not answer within this "
                    "gets 503",
                    &options::request_timeout, milliseconds{1},
                    milliseconds{60000}),
    integer_option<int>("ops-port",
                        "TCP port (on --bind) of the operations listener: "
                        "/healthz, /readyz, /metrics and the operator "
                        "endpoints, on workers of their own (0 picks a free "
                        "one, -1 = none)",
                        &options::ops_port, -1, 65535),
    integer_option<std::uint32_t>(
      "http-threads",
      "HTTP worker threads kept ready; a worker runs one request at a time "
      "(idle and slow connections hold none), and more are started while "
      "every one is held up",
      &options::http_threads, 1, 4096),
    integer_option<std::uint32_t>(
      "http-max-threads", "HTTP worker threads at most",
      &options::http_max_threads, 1, 16384),
    integer_option<std::uint32_t>(
      "max-connections",
      "open HTTP connections at most; beyond, a new one replaces the "
      "longest-idle keep-alive connection, or gets 503 and is closed",
      &options::max_connections, 1, 1000000),
    integer_option<std::uint32_t>("actor-threads",
                                  "threads that run the actors",
                                  &options::actor_threads, 1, 256),
    integer_option<int>("keep-alive-timeout",
                        "seconds an idle keep-alive connection stays open",
                        &options::keep_alive_timeout_seconds, 1, 3600),
    integer_option<std::uint32_t>(
      "keep-alive-max-requests", "requests served on one connection",
      &options::keep_alive_max_requests, 1, 1000000000),
    duration_option("read-timeout",
                    "a request must arrive whole (header and body) within "
                    "this of its first byte; a slower connection is cut",
                    &options::read_timeout, milliseconds{1000},
                    milliseconds{300000}),
    duration_option("write-timeout",
                    "answers that filled a connection's socket must be "
                    "taken by its client within this; a slower one is cut",
                    &options::write_timeout, milliseconds{100},
                    milliseconds{300000}),
    duration_option("shutdown-timeout",
                    "on SIGTERM, how long requests under way may finish "
                    "before their connections are cut",
                    &options::shutdown_timeout, milliseconds{0},
                    milliseconds{300000}),
    integer_option<std::uint32_t>(
      "default-ttl", "lease seconds of a v2 session opened without ttlSeconds",
      &options::default_ttl_seconds, 1, 86400),
    integer_option<std::uint32_t>(
      "min-ttl", "smallest ttlSeconds a client may ask for (below: 400)",
      &options::min_ttl_seconds, 1, 86400),
    integer_option<std::uint32_t>(
      "max-ttl", "largest ttlSeconds a client may ask for (above: 400)",
      &options::max_ttl_seconds, 1, 86400),
    seconds_option(
      "legacy-stream-ttl",
      "lease of a stream opened by startstream, counted from its start and "
      "never renewed (a restart keeps its expiry): a stream whose endstream "
      "was lost, or whose grant was answered 503 but committed, counts this "
      "long at most; 0 = never expires",
      &options::legacy_stream_ttl_seconds, 0, 86400 * 365),
    {"admin-token",
     "bearer token for the operator endpoints (PUT/DELETE .../limit, "
     "/api/cluster...); characters A-Z a-z 0-9 . _ ~ + / = - only; empty = "
     "the limit endpoints answer 403, /api/cluster... are open",
     true,
     [](const std::string& text, options& opts) -> std::string {
       if (!valid_admin_token(text))
         return "may hold only A-Z a-z 0-9 . _ ~ + / = - (a client could "
                "not send other characters as themselves: header values "
                "are %-decoded)";
       opts.admin_token = text;
       return {};
     },
     [](const options& opts) { return opts.admin_token; }},
    {"database-url",
     "PostgreSQL to persist to (libpq URI or connection string; also "
     "DATABASE_URL); empty = in memory only",
     true,
     [](const std::string& text, options& opts) -> std::string {
       opts.database_url = text;
       return {};
     },
     [](const options& opts) { return opts.database_url; }},
    {"durability",
     "sync: a grant or a limit change is answered once committed; async: at "
     "once (a crash may lose the last milliseconds of changes)",
     false,
     [](const std::string& text, options& opts) -> std::string {
       if (text != "sync" && text != "async")
         return "must be sync or async";
       opts.sync_durability = text == "sync";
       return {};
     },
     [](const options& opts) {
       return std::string{opts.sync_durability ? "sync" : "async"};
     }},
    duration_option("flush-interval",
                    "least time between the starts of two commits: under "
                    "load a batch gathers until then, after a quiet spell a "
                    "change commits at once (0 = back to back)",
                    &options::flush_interval, milliseconds{0},
                    milliseconds{10000}),
    integer_option<std::uint32_t>(
      "write-backlog",
      "changes kept unwritten while the database is unreachable; beyond, "
      "new grants fail (sync) or go unwritten (async)",
      &options::write_backlog, 1000, 100000000),
    integer_option<std::uint32_t>(
      "fold-min-changes",
      "changes committed before the journal is folded into snapshots, at "
      "least (a fold round also waits for twice as many changes as the "
      "state holds)",
      &options::fold_min_changes, 1, 1000000000),
    {"node-id",
     "this node's name in the cluster and as shard owner, 1-63 characters "
     "of A-Z a-z 0-9 . _ - (default: the host name); a process started "
     "under a running node's id takes over from it, and that one exits 1",
     false,
     [](const std::string& text, options& opts) -> std::string {
       if (!text.empty() && !valid_node_id(text))
         return "must be 1 to 63 characters of A-Z a-z 0-9 . _ -";
       opts.node_id = text;
       return {};
     },
     [](const options& opts) { return opts.node_id; }},
    {"advertise-host",
     "the address other nodes reach this one at (default: the --bind "
     "address when it is a specific one, else the host name's address)",
     false,
     [](const std::string& text, options& opts) -> std::string {
       if (text.find_first_of(" \t/") != std::string::npos)
         return "must be a host name or an IP address";
       opts.advertise_host = text;
       return {};
     },
     [](const options& opts) { return opts.advertise_host; }},
    integer_option<int>("cluster-port",
                        "TCP port (on --bind) where other nodes forward "
                        "commands to this one, through CAF's middleman (0 "
                        "picks a free one); with a database only",
                        &options::cluster_port, 0, 65535),
    duration_option("lease-ttl",
                    "how long a shard lease runs without renewal (renewed "
                    "every third of it); a dead node's shards are served "
                    "elsewhere within about this long",
                    &options::lease_ttl, milliseconds{2000},
                    milliseconds{60000}),
    {"log-format",
     "text: a line per event for people (time, level, message, then "
     "event=... node=... and its fields); json: a JSON object per line (ts, "
     "level, node, event, msg and the fields)",
     false,
     [](const std::string& text, options& opts) -> std::string {
       if (text != "text" && text != "json")
         return "must be text or json";
       opts.json_logs = text == "json";
       return {};
     },
     [](const options& opts) {
       return std::string{opts.json_logs ? "json" : "text"};
     }},
    switch_option("access-log",
                  "a log line per HTTP request answered, both ports (method, "
                  "path, route, status, duration, listener, remote address); "
                  "--access-log alone is on",
                  &options::access_log),
  };
  return table;
}

std::string env_name(const char* name) {
  std::string result = "VIDEOSTREAMS_";
  for (const char* c = name; *c; ++c)
    result += *c == '-' ? '_' : static_cast<char>(std::toupper(*c));
  return result;
}

const option_spec* find_option(const std::string& name) {
  for (auto& spec : option_table())
    if (name == spec.name)
      return &spec;
  return nullptr;
}

} // namespace

bool valid_admin_token(const std::string& x) {
  for (unsigned char c : x)
    if (!std::isalnum(c) && std::string_view{"._~+/=-"}.find(static_cast<char>(c))
                              == std::string_view::npos)
      return false;
  return true;
}

bool valid_node_id(const std::string& x) {
  if (x.empty() || x.size() > 63)
    return false;
  for (char c : x)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_'
        && c != '-')
      return false;
  return true;
}

environment_database database_url_from_environment(
  const std::function<const char*(const char*)>& getenv) {
  for (const char* var : {"VIDEOSTREAMS_DATABASE_URL", "DATABASE_URL"})
    if (auto value = getenv(var); value != nullptr)
      return {value, var};
  return {};
}

std::variant<parsed_options, std::string>
parse_options(const std::vector<std::string>& args,
              const std::function<const char*(const char*)>& getenv) {
  parsed_options result;
  auto& opts = result.values;
  // Environment first, so that the command line overrides it.
  auto env_database = database_url_from_environment(getenv);
  opts.database_url = std::move(env_database.url);
  opts.database_url_origin = std::move(env_database.origin);
  for (auto& spec : option_table()) {
    if (std::string_view{spec.name} == "database-url")
      continue; // read above, with DATABASE_URL
    auto var = env_name(spec.name);
    if (auto value = getenv(var.c_str()); value != nullptr) {
      if (auto err = spec.parse(value, opts); !err.empty())
        return var + "=" + value + ": " + err;
    }
  }
  for (auto& arg : args) {
    if (arg == "--help" || arg == "-h") {
      result.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0)
      return "unexpected argument '" + arg + "' (options are --name=value)";
    auto eq = arg.find('=');
    auto name = arg.substr(2, eq == std::string::npos ? std::string::npos
                                                      : eq - 2);
    auto spec = find_option(name);
    if (spec == nullptr)
      return "unknown option --" + name + " (see --help)";
    if (eq == std::string::npos && spec->is_switch) {
      spec->parse("on", opts);
      continue;
    }
    if (eq == std::string::npos)
      return "--" + name + " needs a value: --" + name + "=VALUE";
    if (auto err = spec->parse(arg.substr(eq + 1), opts); !err.empty())
      return "--" + name + "=" + arg.substr(eq + 1) + ": " + err;
    if (name == "database-url")
      opts.database_url_origin = "--database-url";
  }
  if (opts.database_url.empty())
    opts.database_url_origin.clear();
  if (opts.min_ttl_seconds > opts.max_ttl_seconds)
    return "--min-ttl=" + std::to_string(opts.min_ttl_seconds)
           + " is above --max-ttl=" + std::to_string(opts.max_ttl_seconds);
  if (opts.default_ttl_seconds < opts.min_ttl_seconds
      || opts.default_ttl_seconds > opts.max_ttl_seconds)
    return "--default-ttl=" + std::to_string(opts.default_ttl_seconds)
           + " must lie within --min-ttl and --max-ttl ("
           + std::to_string(opts.min_ttl_seconds) + " to "
           + std::to_string(opts.max_ttl_seconds) + ")";
  options defaults;
  for (auto& spec : option_table()) {
    auto value = spec.format(opts);
    if (value != spec.format(defaults))
      result.changed.push_back(std::string{"--"} + spec.name + "="
                               + (spec.secret ? "***" : value));
  }
  return result;
}

std::string help_text() {
  std::string out =
    "Usage: videostreams [--name=value ...]\n"
    "\n"
    "Tells video players whether a user may open another stream and keeps\n"
    "every user at or under a concurrent-stream limit. Runs in memory, or\n"
    "persists to PostgreSQL with --database-url.\n"
    "\n"
    "Every option can also be set by the environment variable shown; a\n"
    "command-line value wins. Durations take ms, s or m (a bare number is\n"
    "seconds). Without a database it runs in memory; with DATABASE_URL\n"
    "exported for another program, --database-url= (empty) runs in memory.\n"
    "\n"
    "Options:\n";
  options defaults;
  for (auto& spec : option_table()) {
    char line[512];
    std::snprintf(line, sizeof(line), "  --%s=%s\n      %s\n      env %s\n",
                  spec.name, spec.format(defaults).c_str(), spec.help,
                  env_name(spec.name).c_str());
    out += line;
  }
  out += "  -h, --help\n      print this text and exit\n";
  out += "\nDatabase commands (videostreams db --help):\n";
  out += db_usage();
  return out;
}

std::string effective_node_id(const options& opts) {
  if (!opts.node_id.empty())
    return opts.node_id;
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0')
    return "videostreams";
  return buf;
}

} // namespace videostreams
