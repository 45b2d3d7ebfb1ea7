#include "cluster/assignment.hpp"

#include <algorithm>
#include <limits>

#include "actors/shard_map.hpp"
#include "cluster/lease_store.hpp"

namespace videostreams {

std::uint64_t rendezvous_weight(std::string_view node,
                                std::uint32_t shard) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL; // FNV-1a offset basis
  for (unsigned char c : node) {
    h ^= c;
    h *= 0x100000001b3ULL; // FNV-1a prime
  }
  return mix64(h ^ mix64(static_cast<std::uint64_t>(shard) + 1));
}

std::string target_of(std::uint32_t shard,
                      const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  std::uint64_t best_weight = 0;
  for (auto& node : candidates) {
    auto w = rendezvous_weight(node, shard);
    if (best == nullptr || w > best_weight
        || (w == best_weight && node < *best)) {
      best = &node;
      best_weight = w;
    }
  }
  return best == nullptr ? std::string{} : *best;
}

std::vector<std::string> assign(std::uint32_t shard_count,
                                const std::vector<std::string>& candidates) {
  std::vector<std::string> result;
  result.reserve(shard_count);
  for (std::uint32_t s = 0; s < shard_count; ++s)
    result.push_back(target_of(s, candidates));
  return result;
}

} // namespace videostreams

namespace videostreams {

shard_plan plan_shards(const plan_input& in) {
  shard_plan result;
  auto n = static_cast<std::uint32_t>(in.targets.size());
  for (std::uint32_t s = 0; s < n; ++s) {
    auto& target = in.targets[s];
    auto role = in.roles[s];
    if (!in.leaving && target == in.self) {
      if (role != shard_role::serving)
        result.share_served = false;
      bool free = in.owners[s].empty() || in.owners[s] == in.self
                  || (!in.live[s] && in.take_expired);
      if (role == shard_role::none && free)
        result.take.push_back(s);
      continue;
    }
    if (role != shard_role::serving)
      continue;
    if (target.empty() || target == in.self) {
      // Leaving, and nobody else is left (or only this node is a
      // candidate): release it so that whoever starts next takes it at once.
      if (in.leaving)
        result.hand_off.emplace_back(s, std::string{});
      continue;
    }
    if (in.reachable && in.reachable(target))
      result.hand_off.emplace_back(s, target);
  }
  return result;
}

bool takes_shards(const std::vector<member_record>& members,
                  std::string_view node) {
  return std::any_of(members.begin(), members.end(),
                     [node](const member_record& m) {
                       return m.node_id == node && m.status != "leaving";
                     });
}

std::int64_t decision_deadline(std::int64_t renewed_ns,
                               std::chrono::milliseconds ttl, bool alone) {
  if (alone)
    return std::numeric_limits<std::int64_t>::max();
  auto margin = std::max(ttl / 10, std::chrono::milliseconds{100});
  return renewed_ns
         + std::chrono::duration_cast<std::chrono::nanoseconds>(ttl - margin)
             .count();
}

} // namespace videostreams
