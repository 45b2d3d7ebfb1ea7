#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace videostreams {

/// A live member of the cluster, as `GET /api/cluster` shows it.
struct member_view {
  std::string node_id;
  std::string advertise_host;
  int http_port = 0;
  int cluster_port = 0;
  /// "joining", "up" or "leaving".
  std::string status;
  /// Shards whose lease it holds.
  std::uint32_t shards = 0;
  /// RFC 3339 (UTC) time of its last heartbeat.
  std::string last_heartbeat;
};

/// One shard, as `GET /api/cluster` shows it.
struct shard_view {
  std::uint32_t shard = 0;
  /// The node holding its lease; "" (shown as null) when none does.
  std::string owner;
  std::int64_t epoch = 0;
  /// "serving", "loading", "handing-off" or "unowned".
  std::string state;
};

/// What this node knows of the cluster: its members and every shard, as of
/// its last read of the lease table (and, for its own shards, now).
struct cluster_view {
  std::string node_id;
  std::uint32_t shard_count = 0;
  std::vector<member_view> members;
  std::vector<shard_view> shards;
};

/// The latest `cluster_view`, published by the cluster node and read by the
/// HTTP workers. Thread-safe.
class cluster_view_box {
public:
  std::shared_ptr<const cluster_view> get() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return view_;
  }

  void set(std::shared_ptr<const cluster_view> x) {
    std::lock_guard<std::mutex> guard{mtx_};
    view_ = std::move(x);
  }

private:
  mutable std::mutex mtx_;
  std::shared_ptr<const cluster_view> view_;
};

/// Requests this node forwarded to one peer, updated by the link to it.
struct peer_counters {
  /// Upper bounds of the forwarding latency buckets, in seconds.
  static constexpr std::array<double, 12> latency_buckets{
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,   0.1,   0.25,   0.5,   1.0};

  /// Commands sent to the peer (counter), and the messages that carried
  /// them (counter: commands per message say how well they batch).
  std::atomic<std::uint64_t> forwarded{0};
  std::atomic<std::uint64_t> batches{0};
  /// Commands answered 503 instead: the peer was unreachable, answered
  /// too late, or could not decide (counter).
  std::atomic<std::uint64_t> failed{0};
  /// Commands the peer sent back as not its own (counter).
  std::atomic<std::uint64_t> not_owner{0};
  /// Time from sending to the answer, for answered commands.
  std::array<std::atomic<std::uint64_t>, latency_buckets.size() + 1> buckets{};
  std::atomic<std::uint64_t> latency_sum_ns{0};
  /// 1 while connected.
  std::atomic<int> connected{0};

  /// Records one answered command that took `ns`.
  void record_latency(std::int64_t ns) noexcept;
};

/// What the cluster node did, for `/metrics`.
struct cluster_counters {
  /// Live members, this node included (gauge).
  std::atomic<std::int64_t> members{1};
  /// Shards this node serves (gauge).
  std::atomic<std::int64_t> shards_owned{0};
  /// Shards taken, and handed off to another node (counters).
  std::atomic<std::uint64_t> takeovers{0};
  std::atomic<std::uint64_t> handoffs{0};
  /// Shards dropped because another node owned them by then (counter).
  std::atomic<std::uint64_t> shards_lost{0};
  /// Lease renewals that failed (counter).
  std::atomic<std::uint64_t> renewal_failures{0};
  /// Commands held while their shard changed hands, and those of them
  /// answered 503 because it took too long (counters).
  std::atomic<std::uint64_t> held{0};
  std::atomic<std::uint64_t> held_timeouts{0};

  /// The counters of the link to `node`, made on first use.
  std::shared_ptr<peer_counters> peer(const std::string& node);

  /// Every peer's counters, by node id.
  std::map<std::string, std::shared_ptr<peer_counters>> peers() const;

  /// Drops the counters of `node`, a member no more (it left, or died long
  /// ago): its series leave `/metrics` rather than show a peer that is
  /// gone as disconnected for good. Should it come back, it counts anew.
  void forget_peer(const std::string& node);

private:
  mutable std::mutex mtx_;
  std::map<std::string, std::shared_ptr<peer_counters>> peers_;
};

} // namespace videostreams
