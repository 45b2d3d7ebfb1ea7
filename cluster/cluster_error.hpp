#pragma once

#include <cstdint>
#include <string>

#include "caf/atom.hpp"
#include "caf/error.hpp"
#include "caf/make_message.hpp"

namespace videostreams {

/// What can go wrong between the nodes of a cluster. The API answers all of
/// them with 503 and `Retry-After`: they pass once the cluster settles.
enum class cluster_error : std::uint8_t {
  none = 0,
  /// The node asked does not own the user's shard (any more); the error's
  /// context names the node that should, if it knows one.
  not_owner,
  /// No node could decide in time: the shard is changing hands, or its
  /// owner cannot be reached.
  unavailable,
};

/// Renders a `cluster_error`.
std::string to_string(cluster_error x);

/// Makes a CAF error of `x`, carrying `hint` (for `not_owner`: the node
/// that should own the shard, or "").
inline caf::error make_error(cluster_error x, std::string hint = {}) {
  return caf::error{static_cast<std::uint8_t>(x), caf::atom("cluster"),
                    caf::make_message(std::move(hint))};
}

/// True if `err` is the cluster error `x`.
inline bool is(const caf::error& err, cluster_error x) {
  return err.category() == caf::atom("cluster")
         && err.code() == static_cast<std::uint8_t>(x);
}

/// The hint a cluster error carries ("" when none).
std::string hint_of(const caf::error& err);

} // namespace videostreams
