#include "cluster/cluster_view.hpp"

namespace videostreams {

void peer_counters::record_latency(std::int64_t ns) noexcept {
  auto seconds = static_cast<double>(ns) / 1e9;
  std::size_t i = 0;
  while (i < latency_buckets.size() && seconds > latency_buckets[i])
    ++i;
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  latency_sum_ns.fetch_add(static_cast<std::uint64_t>(ns < 0 ? 0 : ns),
                           std::memory_order_relaxed);
}

std::shared_ptr<peer_counters> cluster_counters::peer(const std::string& node) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto& x = peers_[node];
  if (!x)
    x = std::make_shared<peer_counters>();
  return x;
}

std::map<std::string, std::shared_ptr<peer_counters>>
cluster_counters::peers() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return peers_;
}

void cluster_counters::forget_peer(const std::string& node) {
  std::lock_guard<std::mutex> guard{mtx_};
  peers_.erase(node);
}

} // namespace videostreams
