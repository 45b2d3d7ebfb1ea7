#include "actors/message_types.hpp"

#include <vector>

#include "caf/actor_system_config.hpp"

#include "actors/shard_actor.hpp"
#include "actors/user_protocol.hpp"

namespace videostreams {

void register_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<user_command>("user_command");
  cfg.add_message_type<user_reply>("user_reply");
  cfg.add_message_type<stream_session>("stream_session");
  cfg.add_message_type<std::vector<stream_session>>(
    "std::vector<stream_session>");
  cfg.add_message_type<user_streams>("user_streams");
  cfg.add_message_type<session_view>("session_view");
  cfg.add_message_type<std::vector<session_view>>(
    "std::vector<session_view>");
}

} // namespace videostreams
