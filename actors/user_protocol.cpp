#include "actors/user_protocol.hpp"

namespace videostreams {

std::string to_string(user_op x) {
  switch (x) {
    case user_op::start_legacy:
      return "start_legacy";
    case user_op::end_legacy:
      return "end_legacy";
    case user_op::open_session:
      return "open_session";
    case user_op::heartbeat:
      return "heartbeat";
    case user_op::close_session:
      return "close_session";
    case user_op::list_sessions:
      return "list_sessions";
    case user_op::set_limit:
      return "set_limit";
    case user_op::clear_limit:
      return "clear_limit";
  }
  return "unknown";
}

} // namespace videostreams
