#include "http/metrics.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <map>

namespace videostreams {

namespace {

constexpr auto relaxed = std::memory_order_relaxed;

void append_format(std::string& out, const char* fmt, ...)
  __attribute__((format(printf, 2, 3)));

void append_format(std::string& out, const char* fmt, ...) {
  char buf[256];
  va_list args;
  va_start(args, fmt);
  auto n = std::vsnprintf(buf, sizeof(buf), fmt, args);
  va_end(args);
  if (n > 0)
    out.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n),
                                          sizeof(buf) - 1));
}

void append_header(std::string& out, const char* name, const char* type,
                   const char* help) {
  // Not through append_format: a HELP text may be longer than its buffer.
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

template <class T>
void append_gauge(std::string& out, const char* name, const char* type,
                  const char* help, const std::atomic<T>& value) {
  append_header(out, name, type, help);
  append_format(out, "%s %lld\n", name,
                static_cast<long long>(value.load(relaxed)));
}

/// A counter of nanoseconds, shown in seconds.
void append_seconds(std::string& out, const char* name, const char* help,
                    const std::atomic<std::uint64_t>& ns) {
  append_header(out, name, "counter", help);
  append_format(out, "%s %.6f\n", name,
                static_cast<double>(ns.load(relaxed)) / 1e9);
}

/// One series of a histogram: its cumulative buckets, its `sum` and its
/// count; labelled `label="value"`, or not at all when `label` is null.
template <std::size_t N>
void append_histogram(std::string& out, const char* name, const char* label,
                      std::string_view value,
                      const std::array<double, N>& bounds,
                      const std::array<std::atomic<std::uint64_t>, N + 1>&
                        buckets,
                      double sum) {
  std::string labels; // `label="value",` or nothing
  if (label != nullptr) {
    labels = std::string{label} + "=\"";
    labels.append(value.data(), value.size());
    labels += "\"";
  }
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b <= N; ++b) {
    cumulative += buckets[b].load(relaxed);
    char le[32];
    if (b < N)
      std::snprintf(le, sizeof(le), "%g", bounds[b]);
    else
      std::snprintf(le, sizeof(le), "+Inf");
    append_format(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", name,
                  labels.c_str(), labels.empty() ? "" : ",", le,
                  static_cast<unsigned long long>(cumulative));
  }
  auto braces = labels.empty() ? std::string{} : "{" + labels + "}";
  append_format(out, "%s_sum%s %.9f\n", name, braces.c_str(), sum);
  append_format(out, "%s_count%s %llu\n", name, braces.c_str(),
                static_cast<unsigned long long>(cumulative));
}

double seconds_of(const std::atomic<std::uint64_t>& ns) {
  return static_cast<double>(ns.load(relaxed)) / 1e9;
}

/// One series per listener of each edge figure.
void render_listeners(std::string& out,
                      const std::array<listener_figures, 2>& listeners) {
  struct figure {
    const char* name;
    const char* type;
    const char* help;
    std::int64_t (*read)(const listener_figures&);
  };
  static const figure figures[] = {
    {"videostreams_http_open_connections", "gauge",
     "HTTP connections open, by listener.",
     [](const listener_figures& f) { return f.open_connections.load(relaxed); }},
    {"videostreams_http_connections_accepted_total", "counter",
     "HTTP connections accepted, by listener.",
     [](const listener_figures& f) {
       return static_cast<std::int64_t>(f.accepted.load(relaxed));
     }},
    {"videostreams_http_connections_shed_total", "counter",
     "Connections answered 503 and closed at the connection cap.",
     [](const listener_figures& f) {
       return static_cast<std::int64_t>(f.shed.load(relaxed));
     }},
    {"videostreams_http_connections_evicted_total", "counter",
     "Idle keep-alive connections closed at the cap to admit a new one.",
     [](const listener_figures& f) {
       return static_cast<std::int64_t>(f.evicted.load(relaxed));
     }},
    {"videostreams_http_connections_timed_out_total", "counter",
     "Connections cut because a request did not arrive whole within "
     "--read-timeout, or their client took no answer within --write-timeout.",
     [](const listener_figures& f) {
       return static_cast<std::int64_t>(f.timed_out.load(relaxed));
     }},
    {"videostreams_http_requests_refused_total", "counter",
     "Requests refused by the edge (framing, size, encoding); the "
     "connection is closed.",
     [](const listener_figures& f) {
       return static_cast<std::int64_t>(f.refused.load(relaxed));
     }},
    {"videostreams_http_workers", "gauge",
     "HTTP worker threads, by listener.",
     [](const listener_figures& f) { return f.workers.load(relaxed); }},
    {"videostreams_http_busy_workers", "gauge",
     "HTTP worker threads running a request, by listener.",
     [](const listener_figures& f) { return f.busy_workers.load(relaxed); }},
  };
  for (auto& x : figures) {
    append_header(out, x.name, x.type, x.help);
    for (std::size_t i = 0; i < listeners.size(); ++i)
      append_format(out, "%s{listener=\"%s\"} %lld\n", x.name,
                    listener_name(static_cast<listener_kind>(i)),
                    static_cast<long long>(x.read(listeners[i])));
  }
}

} // namespace

std::size_t http_metrics::status_slot(int status) noexcept {
  for (std::size_t i = 0; i < status_codes.size(); ++i)
    if (status_codes[i] == status)
      return i;
  return status_codes.size();
}

void http_metrics::record(route r, int status,
                          std::chrono::nanoseconds latency) noexcept {
  auto& fig = routes_[static_cast<std::size_t>(r)];
  fig.by_status[status_slot(status)].fetch_add(1, relaxed);
  auto seconds = std::chrono::duration<double>(latency).count();
  std::size_t bucket = 0;
  while (bucket < latency_buckets.size() && seconds > latency_buckets[bucket])
    ++bucket;
  fig.buckets[bucket].fetch_add(1, relaxed);
  fig.latency_sum_ns.fetch_add(static_cast<std::uint64_t>(latency.count()),
                               relaxed);
}

std::uint64_t http_metrics::requests(route r, int status) const noexcept {
  return routes_[static_cast<std::size_t>(r)]
    .by_status[status_slot(status)]
    .load(relaxed);
}

void http_metrics::record_edge(int status) noexcept {
  edge_by_status_[status_slot(status)].fetch_add(1, relaxed);
}

std::uint64_t http_metrics::edge_requests(int status) const noexcept {
  return edge_by_status_[status_slot(status)].load(relaxed);
}

void http_metrics::set_build_info(std::string version, std::string node_id,
                                  std::string mode) {
  std::lock_guard<std::mutex> guard{build_mtx_};
  version_ = std::move(version);
  node_id_ = std::move(node_id);
  mode_ = std::move(mode);
}

namespace {

/// The cluster node's figures, and the forwarding to each peer.
void render_cluster(std::string& out, const cluster_counters& c) {
  append_gauge(out, "videostreams_cluster_members", "gauge",
               "Live members of the cluster, this node included (1 without a "
               "database).",
               c.members);
  append_gauge(out, "videostreams_cluster_shards_owned", "gauge",
               "Shards this node serves (every shard without a database).", c.shards_owned);
  append_gauge(out, "videostreams_cluster_takeovers_total", "counter",
               "Shards this node took and loaded (0 without a database).", c.takeovers);
  append_gauge(out, "videostreams_cluster_handoffs_total", "counter",
               "Shards this node handed off to another node (0 without a "
               "database).", c.handoffs);
  append_gauge(out, "videostreams_cluster_shards_lost_total", "counter",
               "Shards this node dropped because another node owned them by "
               "then (its lease lapsed, or its writes were fenced; 0 without "
               "a database).",
               c.shards_lost);
  append_gauge(out, "videostreams_cluster_lease_renewal_failures_total",
               "counter", "Lease renewals that failed (0 without a database).", c.renewal_failures);
  append_gauge(out, "videostreams_cluster_held_requests_total", "counter",
               "Requests held while their shard changed hands (0 without a "
               "database).", c.held);
  append_gauge(out, "videostreams_cluster_held_timeouts_total", "counter",
               "Held requests answered 503 because no owner could decide "
               "within the request timeout (0 without a database).",
               c.held_timeouts);
  // A series per peer that is a member (or died not long ago). Until there is
  // one (in memory, a cluster of one), each family shows one unlabelled
  // zero series instead (the same as peer=""), so that it has a sample and
  // sums over it are 0, not empty.
  auto known = c.peers(); // holds them while they are rendered
  std::map<std::string, const peer_counters*> peers;
  for (auto& [id, p] : known)
    peers.emplace(id, p.get());
  static const peer_counters none;
  if (peers.empty())
    peers.emplace("", &none);
  auto series = [](const std::string& id) {
    return id.empty() ? std::string{} : "{peer=\"" + id + "\"}";
  };
  append_header(out, "videostreams_cluster_peer_connected", "gauge",
                "1 while this node is connected to the peer; an unlabelled 0 "
                "while it knows no peer (always without a database).");
  for (auto& [id, p] : peers)
    append_format(out, "videostreams_cluster_peer_connected%s %d\n",
                  series(id).c_str(), p->connected.load(relaxed));
  struct per_peer {
    const char* name;
    const char* help;
    std::atomic<std::uint64_t> peer_counters::*field;
  };
  const per_peer counts[] = {
    {"videostreams_cluster_forwarded_requests_total",
     "Requests forwarded to the peer that owns them; an unlabelled 0 "
     "while this node knows no peer (always without a database).",
     &peer_counters::forwarded},
    {"videostreams_cluster_forward_batches_total",
     "Messages that carried forwarded requests to the peer (requests per "
     "message: how well they batch); an unlabelled 0 while this node knows "
     "no peer.",
     &peer_counters::batches},
    {"videostreams_cluster_forward_failures_total",
     "Requests for the peer answered 503: unreachable, too late, or no "
     "decision; an unlabelled 0 while this node knows no peer.",
     &peer_counters::failed},
    {"videostreams_cluster_forward_not_owner_total",
     "Requests the peer sent back as not its own (tried once more at the "
     "owner it named); an unlabelled 0 while this node knows no peer.",
     &peer_counters::not_owner},
  };
  for (auto& x : counts) {
    append_header(out, x.name, "counter", x.help);
    for (auto& [id, p] : peers)
      append_format(out, "%s%s %llu\n", x.name, series(id).c_str(),
                    static_cast<unsigned long long>(
                      ((*p).*(x.field)).load(relaxed)));
  }
  append_header(out, "videostreams_cluster_forward_duration_seconds",
                "histogram",
                "Time from forwarding a request to the peer's answer; unlabelled "
                "and empty while this node knows no peer.");
  for (auto& [id, p] : peers)
    append_histogram(out, "videostreams_cluster_forward_duration_seconds",
                     id.empty() ? nullptr : "peer", id,
                     peer_counters::latency_buckets, p->buckets,
                     seconds_of(p->latency_sum_ns));
}

/// The persistence actor's figures; all 0 without a database (`p` null).
void render_persistence(std::string& out, const persistence_counters* p) {
  static const persistence_counters none;
  const auto& c = p != nullptr ? *p : none;
  append_gauge(out, "videostreams_persistence_queue_depth", "gauge",
               "Changes waiting to be committed (0 without a database).",
               c.queue_depth);
  append_gauge(out, "videostreams_persistence_commits_total", "counter",
               "Write-behind transactions committed (0 without a database).",
               c.commits);
  append_gauge(out, "videostreams_persistence_last_batch_size", "gauge",
               "Changes in the last committed batch (0 without a database).",
               c.last_batch);
  append_header(out, "videostreams_persistence_batch_size", "histogram",
                "Changes written per committed batch (0 without a "
                "database).");
  append_histogram(out, "videostreams_persistence_batch_size", nullptr, {},
                   persistence_counters::batch_buckets, c.batch_sizes,
                   static_cast<double>(c.changes_written.load(relaxed)));
  append_gauge(out, "videostreams_persistence_changes_total", "counter",
               "Changes received for persistence (0 without a database).",
               c.changes_received);
  append_gauge(out, "videostreams_persistence_errors_total", "counter",
               "Failed commits, probes and folds: database errors (0 without "
               "a database).",
               c.errors);
  append_gauge(out, "videostreams_persistence_refused_total", "counter",
               "Changes refused because the write backlog was full (0 "
               "without a database).",
               c.refused);
  append_gauge(out, "videostreams_persistence_fenced_total", "counter",
               "Changes dropped because another node owned their shard by "
               "the time they were committed (0 without a database).",
               c.fenced);
  append_gauge(out, "videostreams_persistence_commit_timeouts_total",
               "counter",
               "Sync grants answered 503 because their commit was not "
               "confirmed within the commit timeout (0 without a database).",
               c.commit_timeouts);
  append_seconds(out, "videostreams_persistence_commit_seconds_total",
                 "Time spent committing (0 without a database).",
                 c.commit_ns);
  append_header(out, "videostreams_persistence_commit_duration_seconds",
                "histogram",
                "Time from handing a batch to the writer to its commit, per "
                "committed batch (0 without a database).");
  append_histogram(out, "videostreams_persistence_commit_duration_seconds",
                   nullptr, {}, persistence_counters::commit_buckets,
                   c.commit_duration, seconds_of(c.commit_ns));
  append_gauge(out, "videostreams_persistence_folds_total", "counter",
               "Fold steps: snapshots of a share of the shards written, "
               "journal rows they cover deleted (0 without a database).",
               c.folds);
  append_seconds(out, "videostreams_persistence_fold_seconds_total",
                 "Time spent folding (0 without a database).", c.fold_ns);
  append_gauge(out, "videostreams_persistence_journal_rows_trimmed_total",
               "counter",
               "Journal rows deleted by folds (0 without a database).",
               c.journal_rows_trimmed);
  append_gauge(out, "videostreams_persistence_state_size", "gauge",
               "Streams and limits committed, as of the last fold (0 "
               "without a database).",
               c.state_size);
  append_gauge(out, "videostreams_persistence_journal_lag", "gauge",
               "Journal positions between the last fold and the oldest "
               "snapshot: what a restart replays; it grows without bound if "
               "a shard's snapshot never moves (0 without a database).",
               c.journal_lag);
  append_header(out, "videostreams_database_up", "gauge",
                "1 while the database answers commits, 0 after a failure "
                "(always 0 without a database: see videostreams_build_info's "
                "mode).");
  append_format(out, "videostreams_database_up %d\n",
                p != nullptr && p->reachable.load(relaxed) ? 1 : 0);
}

} // namespace

std::string http_metrics::render(const stream_counters& counters,
                                 const persistence_counters* persistence,
                                 const cluster_counters* cluster) const {
  std::string out;
  out.reserve(24 * 1024);
  {
    std::lock_guard<std::mutex> guard{build_mtx_};
    append_header(out, "videostreams_build_info", "gauge",
                  "Always 1: this binary's version, this node's id, and mode "
                  "in-memory or database.");
    append_format(out,
                  "videostreams_build_info{version=\"%s\",node_id=\"%s\","
                  "mode=\"%s\"} 1\n",
                  version_.c_str(), node_id_.c_str(), mode_.c_str());
  }
  append_header(out, "videostreams_http_requests_total", "counter",
                "HTTP requests answered, by route template and status code; "
                "route=\"(edge)\" for those the edge answered before routing "
                "(refused framing, unparseable, shed at the connection cap). "
                "Until a route has answered, it shows code 200 (404 for "
                "unmatched, 400 for (edge)) at 0.");
  // Every status a route answered; a route that answered nothing yet shows
  // its most common code at 0, so that the family has samples from the
  // start and rate() has a baseline.
  auto append_requests = [&out](std::string_view name,
                                const std::array<std::atomic<std::uint64_t>,
                                                 status_slots>& by_status,
                                int first_code) {
    bool any = false;
    for (std::size_t s = 0; s < status_slots; ++s) {
      auto n = by_status[s].load(relaxed);
      if (n == 0)
        continue;
      any = true;
      char code[8];
      if (s < status_codes.size())
        std::snprintf(code, sizeof(code), "%d", status_codes[s]);
      else
        std::snprintf(code, sizeof(code), "other");
      append_format(out,
                    "videostreams_http_requests_total{route=\"%.*s\","
                    "code=\"%s\"} %llu\n",
                    static_cast<int>(name.size()), name.data(), code,
                    static_cast<unsigned long long>(n));
    }
    if (!any)
      append_format(out,
                    "videostreams_http_requests_total{route=\"%.*s\","
                    "code=\"%d\"} 0\n",
                    static_cast<int>(name.size()), name.data(), first_code);
  };
  for (std::size_t r = 0; r < route_count; ++r)
    append_requests(route_template(static_cast<route>(r)), routes_[r].by_status,
                    static_cast<route>(r) == route::unmatched ? 404 : 200);
  append_requests(edge_route, edge_by_status_, 400);
  append_header(out, "videostreams_http_request_duration_seconds", "histogram",
                "Time from routing a request to having its answer, by route.");
  for (std::size_t r = 0; r < route_count; ++r)
    append_histogram(out, "videostreams_http_request_duration_seconds",
                     "route", route_template(static_cast<route>(r)),
                     latency_buckets, routes_[r].buckets,
                     seconds_of(routes_[r].latency_sum_ns));
  render_listeners(out, listeners_);
  append_gauge(out, "videostreams_open_streams", "gauge",
               "Streams open on this node.", counters.open_streams);
  append_gauge(out, "videostreams_live_user_actors", "gauge",
               "User actors currently running.", counters.live_user_actors);
  append_gauge(out, "videostreams_passive_user_records", "gauge",
               "Passivated users held as a compact record.",
               counters.passive_records);
  append_gauge(out, "videostreams_stream_grants_total", "counter",
               "Stream starts granted.", counters.grants);
  append_gauge(out, "videostreams_stream_denials_total", "counter",
               "Stream starts denied at the limit.", counters.denials);
  append_gauge(out, "videostreams_stream_expirations_total", "counter",
               "Leases that expired without a heartbeat or close.",
               counters.expirations);
  append_gauge(out, "videostreams_user_activations_total", "counter",
               "User actors started.", counters.activations);
  append_gauge(out, "videostreams_user_passivations_total", "counter",
               "User actors stopped after being idle.", counters.passivations);
  append_gauge(out, "videostreams_stream_grant_failures_total", "counter",
               "Grants undone because their commit failed or timed out.",
               counters.failed_grants);
  append_gauge(out, "videostreams_stream_lease_refusals_total", "counter",
               "Requests answered 503 because this node's lease of their "
               "shard had run out.",
               counters.lease_refusals);
  append_gauge(out, "videostreams_stream_late_commands_total", "counter",
               "Commands that reached their user's actor after their caller "
               "had given up (or too late to commit a grant in time): "
               "nothing decided.",
               counters.late_commands);
  if (cluster != nullptr)
    render_cluster(out, *cluster);
  render_persistence(out, persistence);
  return out;
}

} // namespace videostreams
