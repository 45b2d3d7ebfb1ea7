#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "app/options.hpp"
#include "logging/event_log.hpp"

namespace videostreams {

/// The service refuses to start with these options on this database (the
/// process exits 2, like for a bad option): e.g. `--shards` differs from
/// the cluster's stored shard count.
class startup_refused : public std::runtime_error {
public:
  explicit startup_refused(const std::string& what);
};

/// One node of videostreams, assembled from its options: the actor system,
/// the cluster node and its shards, the router, the API and the HTTP
/// listener; with a database, the persistence actor and the cluster's
/// lease keeper, shard loader and middleman too.
class service {
public:
  /// Called once, from an actor's thread, when the node can serve nothing
  /// more and the process should `stop` and exit: a newer process took its
  /// node id over, or a reshard changed the cluster's shard count. `why`
  /// says which.
  using out_of_service_handler = std::function<void(const std::string& why)>;

  /// A node with `opts` that reports its events to `log` and calls
  /// `on_out_of_service` when it goes out of service.
  service(const options& opts, std::shared_ptr<const event_log> log,
          out_of_service_handler on_out_of_service);
  ~service();

  service(const service&) = delete;
  service& operator=(const service&) = delete;

  /// Binds the HTTP port, and the operations port unless it is off;
  /// returns the HTTP port. Throws `std::runtime_error` saying which
  /// address could not be bound and why ("cannot listen on 0.0.0.0:8080:
  /// Address already in use").
  int bind();

  /// The bound operations port; -1 when it is off.
  int ops_port() const;

  /// With a database: "NODE at HOST:PORT", how other nodes reach this one;
  /// "" in memory.
  std::string cluster_address() const;

  /// With a database: the cluster port bound; 0 in memory.
  int cluster_port() const;

  /// Serves HTTP until `stop`; returns once the HTTP listener has drained
  /// (requests under way answered, or cut at the shutdown timeout) and the
  /// last changes are flushed.
  void run();

  /// A graceful stop: `/readyz` turns 503, every shard is handed off to
  /// the other nodes (bounded), then the listener stops accepting. Blocks
  /// until the hand-off is done. Thread-safe; call once.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace videostreams
