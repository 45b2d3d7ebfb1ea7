#include "actors/user_protocol.hpp"

namespace videostreams {

std::string to_string(user_op x) {
  switch (x) {
    case user_op::start_legacy:
      return "start_legacy";
    case user_op::end_legacy:
      return "end_legacy";
  }
  return "unknown";
}

} // namespace videostreams
