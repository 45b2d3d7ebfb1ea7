#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace videostreams {

/// Every setting of the service, with its default. One typed struct: the
/// option table in `options.cpp` is the only place that names the options.
struct options {
  int port = 8080;
  std::string bind = "0.0.0.0";
  std::uint32_t max_streams = 3;
  std::uint32_t shards = 128;
  std::chrono::milliseconds passivate_after{30000};
  std::chrono::milliseconds request_timeout{2000};
  /// The operations port (probes, metrics, operator endpoints): 0 picks a
  /// free one, -1 = none.
  int ops_port = 9090;
  std::uint32_t http_threads = 64;
  std::uint32_t http_max_threads = 1024;
  std::uint32_t max_connections = 16000;
  std::uint32_t actor_threads = 1;
  int keep_alive_timeout_seconds = 60;
  std::uint32_t keep_alive_max_requests = 100000;
  /// A request must arrive whole within this of its first byte.
  std::chrono::milliseconds read_timeout{10000};
  std::chrono::milliseconds write_timeout{5000};
  /// How long a stop lets requests under way finish before it cuts them.
  std::chrono::milliseconds shutdown_timeout{10000};
  std::uint32_t default_ttl_seconds = 60;
  std::uint32_t min_ttl_seconds = 5;
  std::uint32_t max_ttl_seconds = 3600;
  /// Lease of a stream opened by `startstream`, never renewed; 0 = never
  /// expires. 6 h: a film ends sooner, and a stream whose close was lost
  /// (or whose grant was answered 503 but committed) stops counting then.
  std::uint32_t legacy_stream_ttl_seconds = 21600;
  std::string admin_token;
  /// PostgreSQL (libpq URI or connection string); empty = in memory only.
  std::string database_url;
  /// true: a grant is answered once committed (`sync`); false: `async`.
  bool sync_durability = true;
  /// The least time between the starts of two commits (group commit under
  /// load; no wait after a quiet spell).
  std::chrono::milliseconds flush_interval{1};
  /// Unwritten changes kept while the database is unreachable.
  std::uint32_t write_backlog = 100000;
  /// Changes committed before a round of folds, at least.
  std::uint32_t fold_min_changes = 20000;
  /// This node's name in the cluster; empty = the host name.
  std::string node_id;
  /// The address other nodes reach this one at; empty = the `bind`
  /// address when that is a specific one, else the host name's address.
  std::string advertise_host;
  /// The port of CAF's middleman, where other nodes forward commands to
  /// this one (0 picks a free one).
  int cluster_port = 4370;
  /// How long a shard lease runs without renewal; a node whose renewals
  /// fail stops deciding for its shards shortly before that.
  std::chrono::milliseconds lease_ttl{5000};
  /// Log lines as JSON objects (`--log-format=json`) instead of text.
  bool json_logs = false;
  /// A log line per HTTP request answered (`--access-log`).
  bool access_log = false;
  /// Where `database_url` came from, for messages: "--database-url",
  /// "DATABASE_URL", "VIDEOSTREAMS_DATABASE_URL", or "" (not set). Set by
  /// `parse_options`; no option of its own.
  std::string database_url_origin;
};

/// The result of reading the command line and environment.
struct parsed_options {
  options values;
  /// True when `--help` was given: print `help_text()` and exit 0.
  bool help = false;
  /// Options whose value differs from the default, as "--name=value" (for
  /// the start-up log line).
  std::vector<std::string> changed;
};

/// Reads `--name=value` arguments, falling back to the environment variable
/// `VIDEOSTREAMS_NAME` (upper case, '-' as '_'), then to the default. A
/// command-line value wins over the environment. `DATABASE_URL` is read too
/// (below `VIDEOSTREAMS_DATABASE_URL`). `getenv` is injectable for
/// tests. Returns an error message for an unknown option or a bad value.
std::variant<parsed_options, std::string>
parse_options(const std::vector<std::string>& args,
              const std::function<const char*(const char*)>& getenv);

/// A duration option's value: "250ms", "30s", "2m"; a bare number means
/// seconds. Nothing for anything else.
std::optional<std::chrono::milliseconds> parse_duration(std::string text);

/// True for a node id the cluster accepts: 1-63 characters of
/// [A-Za-z0-9._-] (a Kubernetes pod name is one).
bool valid_node_id(const std::string& x);

/// True for an admin token that a client can send as itself:
/// [A-Za-z0-9._~+/=-] only (header values are %-decoded on arrival).
bool valid_admin_token(const std::string& x);

/// The database the environment names, and the variable that named it:
/// `VIDEOSTREAMS_DATABASE_URL` when set (even empty: in memory), else
/// `DATABASE_URL`; both empty when neither is set. `--database-url`
/// overrides it, for the service (`parse_options`) and the `db` commands.
struct environment_database {
  std::string url;
  std::string origin;
};
environment_database database_url_from_environment(
  const std::function<const char*(const char*)>& getenv);

/// The `--help` text: every option, its variable, its default and meaning,
/// and the `db` commands.
std::string help_text();

/// The node id in force: `--node-id`, else the host name.
std::string effective_node_id(const options& opts);

} // namespace videostreams
