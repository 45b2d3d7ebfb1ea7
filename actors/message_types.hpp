#pragma once

#include "caf/fwd.hpp"

namespace videostreams {

/// Registers every serializable message type of the actors with `cfg`
/// (`add_message_type`), so that nodes can exchange them. Call once per
/// actor system, before it starts.
void register_message_types(caf::actor_system_config& cfg);

} // namespace videostreams
