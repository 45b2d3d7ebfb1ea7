#include "http/metrics.hpp"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

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
  append_format(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
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

/// One labelled series of a histogram: its cumulative buckets, its sum
/// (of nanoseconds, shown in seconds) and its count.
template <std::size_t N>
void append_histogram(std::string& out, const char* name, const char* label,
                      std::string_view value,
                      const std::array<double, N>& bounds,
                      const std::array<std::atomic<std::uint64_t>, N + 1>&
                        buckets,
                      const std::atomic<std::uint64_t>& sum_ns) {
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b <= N; ++b) {
    cumulative += buckets[b].load(relaxed);
    char le[32];
    if (b < N)
      std::snprintf(le, sizeof(le), "%g", bounds[b]);
    else
      std::snprintf(le, sizeof(le), "+Inf");
    append_format(out, "%s_bucket{%s=\"%.*s\",le=\"%s\"} %llu\n", name,
                  label, static_cast<int>(value.size()), value.data(), le,
                  static_cast<unsigned long long>(cumulative));
  }
  append_format(out, "%s_sum{%s=\"%.*s\"} %.9f\n", name, label,
                static_cast<int>(value.size()), value.data(),
                static_cast<double>(sum_ns.load(relaxed)) / 1e9);
  append_format(out, "%s_count{%s=\"%.*s\"} %llu\n", name, label,
                static_cast<int>(value.size()), value.data(),
                static_cast<unsigned long long>(cumulative));
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
     "Connections cut because a request did not arrive whole in time.",
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

namespace {

/// The cluster node's figures, and the forwarding to each peer.
void render_cluster(std::string& out, const cluster_counters& c) {
  append_gauge(out, "videostreams_cluster_members", "gauge",
               "Live members of the cluster, this node included.",
               c.members);
  append_gauge(out, "videostreams_cluster_shards_owned", "gauge",
               "Shards this node serves.", c.shards_owned);
  append_gauge(out, "videostreams_cluster_takeovers_total", "counter",
               "Shards this node took and loaded.", c.takeovers);
  append_gauge(out, "videostreams_cluster_handoffs_total", "counter",
               "Shards this node handed off to another node.", c.handoffs);
  append_gauge(out, "videostreams_cluster_shards_lost_total", "counter",
               "Shards this node dropped because another node owned them by "
               "then (its lease lapsed, or its writes were fenced).",
               c.shards_lost);
  append_gauge(out, "videostreams_cluster_lease_renewal_failures_total",
               "counter", "Lease renewals that failed.", c.renewal_failures);
  append_gauge(out, "videostreams_cluster_held_requests_total", "counter",
               "Requests held while their shard changed hands.", c.held);
  append_gauge(out, "videostreams_cluster_held_timeouts_total", "counter",
               "Held requests answered 503 because no owner could decide "
               "within the request timeout.",
               c.held_timeouts);
  auto peers = c.peers();
  append_header(out, "videostreams_cluster_peer_connected", "gauge",
                "1 while this node is connected to the peer.");
  for (auto& [id, p] : peers)
    append_format(out, "videostreams_cluster_peer_connected{peer=\"%s\"} %d\n",
                  id.c_str(), p->connected.load(relaxed));
  struct per_peer {
    const char* name;
    const char* help;
    std::atomic<std::uint64_t> peer_counters::*field;
  };
  const per_peer counts[] = {
    {"videostreams_cluster_forwarded_requests_total",
     "Requests forwarded to the peer that owns them.",
     &peer_counters::forwarded},
    {"videostreams_cluster_forward_batches_total",
     "Messages that carried forwarded requests to the peer (requests per "
     "message: how well they batch).",
     &peer_counters::batches},
    {"videostreams_cluster_forward_failures_total",
     "Requests for the peer answered 503: unreachable, too late, or no "
     "decision.",
     &peer_counters::failed},
    {"videostreams_cluster_forward_not_owner_total",
     "Requests the peer sent back as not its own (tried once more at the "
     "owner it named).",
     &peer_counters::not_owner},
  };
  for (auto& x : counts) {
    append_header(out, x.name, "counter", x.help);
    for (auto& [id, p] : peers)
      append_format(out, "%s{peer=\"%s\"} %llu\n", x.name, id.c_str(),
                    static_cast<unsigned long long>(
                      ((*p).*(x.field)).load(relaxed)));
  }
  append_header(out, "videostreams_cluster_forward_duration_seconds",
                "histogram",
                "Time from forwarding a request to the peer's answer.");
  for (auto& [id, p] : peers)
    append_histogram(out, "videostreams_cluster_forward_duration_seconds",
                     "peer", id, peer_counters::latency_buckets, p->buckets,
                     p->latency_sum_ns);
}

} // namespace

std::string http_metrics::render(const stream_counters& counters,
                                 const persistence_counters* persistence,
                                 const cluster_counters* cluster) const {
  std::string out;
  out.reserve(16 * 1024);
  append_header(out, "videostreams_http_requests_total", "counter",
                "HTTP requests answered, by route template and status code.");
  for (std::size_t r = 0; r < route_count; ++r) {
    auto name = route_template(static_cast<route>(r));
    for (std::size_t s = 0; s < status_slots; ++s) {
      auto n = routes_[r].by_status[s].load(relaxed);
      if (n == 0)
        continue;
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
  }
  append_header(out, "videostreams_http_request_duration_seconds", "histogram",
                "Time from routing a request to having its answer, by route.");
  for (std::size_t r = 0; r < route_count; ++r)
    append_histogram(out, "videostreams_http_request_duration_seconds",
                     "route", route_template(static_cast<route>(r)),
                     latency_buckets, routes_[r].buckets,
                     routes_[r].latency_sum_ns);
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
  if (persistence == nullptr)
    return out;
  append_gauge(out, "videostreams_persistence_queue_depth", "gauge",
               "Changes waiting to be committed.", persistence->queue_depth);
  append_gauge(out, "videostreams_persistence_commits_total", "counter",
               "Write-behind transactions committed.", persistence->commits);
  append_gauge(out, "videostreams_persistence_last_batch_size", "gauge",
               "Changes in the last committed batch.",
               persistence->last_batch);
  append_gauge(out, "videostreams_persistence_changes_total", "counter",
               "Changes received for persistence.",
               persistence->changes_received);
  append_gauge(out, "videostreams_persistence_errors_total", "counter",
               "Failed commits, probes and folds.", persistence->errors);
  append_gauge(out, "videostreams_persistence_refused_total", "counter",
               "Changes refused because the write backlog was full.",
               persistence->refused);
  append_gauge(out, "videostreams_persistence_fenced_total", "counter",
               "Changes dropped because another node owned their shard by "
               "the time they were committed.",
               persistence->fenced);
  append_gauge(out, "videostreams_persistence_commit_timeouts_total",
               "counter",
               "Sync grants answered 503 because their commit was not "
               "confirmed within the commit timeout.",
               persistence->commit_timeouts);
  append_seconds(out, "videostreams_persistence_commit_seconds_total",
                 "Time spent committing.", persistence->commit_ns);
  append_gauge(out, "videostreams_persistence_folds_total", "counter",
               "Fold steps: snapshots of a share of the shards written, "
               "journal rows they cover deleted.",
               persistence->folds);
  append_seconds(out, "videostreams_persistence_fold_seconds_total",
                 "Time spent folding.", persistence->fold_ns);
  append_gauge(out, "videostreams_persistence_journal_rows_trimmed_total",
               "counter", "Journal rows deleted by folds.",
               persistence->journal_rows_trimmed);
  append_gauge(out, "videostreams_persistence_state_size", "gauge",
               "Streams and limits committed, as of the last fold.",
               persistence->state_size);
  append_gauge(out, "videostreams_persistence_journal_lag", "gauge",
               "Journal positions between the last fold and the oldest "
               "snapshot: what a restart replays; it grows without bound if "
               "a shard's snapshot never moves.",
               persistence->journal_lag);
  append_header(out, "videostreams_database_up", "gauge",
                "1 while the database answers commits, 0 after a failure.");
  append_format(out, "videostreams_database_up %d\n",
                persistence->reachable.load(relaxed) ? 1 : 0);
  return out;
}

} // namespace videostreams
