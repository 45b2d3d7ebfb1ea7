#include "cluster/cluster_error.hpp"

namespace videostreams {

std::string to_string(cluster_error x) {
  switch (x) {
    case cluster_error::none:
      return "none";
    case cluster_error::not_owner:
      return "not_owner";
    case cluster_error::unavailable:
      return "unavailable";
  }
  return "unknown";
}

std::string hint_of(const caf::error& err) {
  auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return {};
}

} // namespace videostreams
