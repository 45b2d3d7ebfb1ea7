#pragma once

#include <memory>
#include <vector>

#include "app/options.hpp"

namespace videostreams {

/// One node of videostreams, assembled from its options: the actor system,
/// the shards, the router, the API and the HTTP listener.
class service {
public:
  explicit service(const options& opts);
  ~service();

  service(const service&) = delete;
  service& operator=(const service&) = delete;

  /// Binds the HTTP port; returns it, or -1 when it cannot be bound.
  int bind();

  /// Serves HTTP until `stop`; returns once in-flight requests are answered.
  void run();

  /// Begins a graceful stop: `/readyz` turns 503, the listener stops
  /// accepting. Thread-safe; call once.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace videostreams
