#include "cluster/cluster_protocol.hpp"

#include "caf/actor_system_config.hpp"

namespace videostreams {

void register_cluster_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<forward_batch>("forward_batch");
  cfg.add_message_type<reply_batch>("reply_batch");
  cfg.add_message_type<shard_news>("shard_news");
  cfg.add_message_type<forwarded_command>("forwarded_command");
  cfg.add_message_type<forwarded_reply>("forwarded_reply");
  cfg.add_message_type<shard_claim>("shard_claim");
}

} // namespace videostreams
