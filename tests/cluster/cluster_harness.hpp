#pragma once

// Clusters of real processes for the cluster tier: nodes of the binary on
// 127.0.0.2, 127.0.0.3, ... sharing one scratch database on this tier's
// PostgreSQL, and players that load them and record every answer.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "db_fixture.hpp"
#include "http_probe.hpp"
#include "service_process.hpp"

namespace videostreams::cluster_testing {

namespace json = boost::json;

/// A migrated scratch database for one test's cluster.
using cluster_database = videostreams::testing::migrated_database;

/// One node of a test cluster: the binary on 127.0.0.`n` with node id
/// "n`n`", on `dsn`, with `extra` options (a lease TTL, say).
class test_node {
public:
  test_node(int n, const std::string& dsn,
            std::vector<std::string> extra = {});

  /// The same with node id `id` instead (a second process under a node id
  /// that another runs under already, say).
  test_node(int n, std::string id, const std::string& dsn,
            std::vector<std::string> extra = {});

  /// The same on loopback address `host` (::1, say).
  test_node(const std::string& host, std::string id, const std::string& dsn,
            std::vector<std::string> extra = {});

  /// Stops the node. With `VIDEOSTREAMS_TEST_NODE_LOGS` set to a directory,
  /// first writes everything the node logged to
  /// DIR/<test process id>-<node id>-<port>.log (to find out why a cluster
  /// test failed once in many runs).
  ~test_node();

  test_node(const test_node&) = delete;
  test_node& operator=(const test_node&) = delete;

  const std::string& id() const noexcept {
    return id_;
  }

  const std::string& host() const noexcept {
    return process_->host();
  }

  int port() const noexcept {
    return process_->port();
  }

  blackbox::service_process& process() noexcept {
    return *process_;
  }

  /// A new client for this node.
  std::unique_ptr<httplib::Client> client(bool keep_alive = true) const;

  /// `GET /api/cluster` (with the node's admin token, if it has one),
  /// parsed; nothing when it did not answer 200.
  std::optional<json::object> view() const;

  /// The value of a `/metrics` series, if the node shows it.
  std::optional<double> metric(std::string_view series) const;

private:
  std::string id_;
  std::string admin_token_;
  std::unique_ptr<blackbox::service_process> process_;
};

/// Three nodes, n2, n3 and n4 (on 127.0.0.2-4), with `args`, on a
/// migrated database of their own, once they agree on every shard.
struct three_nodes {
  explicit three_nodes(const std::vector<std::string>& args);

  cluster_database d;
  test_node n2;
  test_node n3;
  test_node n4;
};

/// The owner every shard has in `view` ("" for none).
std::vector<std::string> owners(const json::object& view);

/// True once every node answers `/readyz` with 200, lists exactly these
/// nodes as its members, all "up", and all of them name the same owner,
/// one of these nodes, for every shard, "serving".
bool converged(const std::vector<const test_node*>& nodes);

/// Waits (generously) until `converged`.
bool wait_converged(const std::vector<const test_node*>& nodes,
                    std::chrono::seconds limit = std::chrono::seconds{60});

/// The first `count` user ids from `from` on whose shard `view` gives to
/// `owner`. Throws (failing the test) when `owner` owns no shard in `view`.
std::vector<std::uint64_t> users_owned_by(const json::object& view,
                                          const std::string& owner,
                                          std::size_t count,
                                          std::uint64_t from = 1);

/// The open sessions of `user` as a node lists them (ids; "" for a stream
/// opened by startstream); nothing when the list did not answer 200.
std::optional<std::multiset<std::string>>
sessions_of(httplib::Client& cli, std::uint64_t user);

/// Players on the v2 API: `threads` threads, each with users of its own
/// (`users_per_thread` from `first_user` on), opening sessions with an
/// hour's lease (at most two open per user, so the limit of 3 never refuses
/// one), heartbeating and closing them, every request to the next of `targets` in turn. Every
/// answer that is not the one a healthy service gives (201 for an open,
/// 200 for a heartbeat or close) is recorded as a failure, and every
/// session acknowledged open and not acknowledged closed is remembered.
class session_players {
public:
  struct target {
    std::string host;
    int port;
  };

  session_players(std::vector<target> targets, std::uint64_t first_user,
                  std::size_t threads, std::size_t users_per_thread);

  ~session_players();

  /// Starts playing.
  void start();

  /// Stops playing and waits for every thread.
  void stop();

  /// Requests answered so far.
  std::size_t requests() const noexcept {
    return requests_.load();
  }

  /// Requests that failed so far.
  std::size_t failure_count() const noexcept {
    return failure_count_.load();
  }

  /// What went wrong, one line per failed request, for the first
  /// `recorded_failures` of them (a node that refuses connections fails
  /// thousands of requests a second; the first say why).
  std::vector<std::string> failures() const;

  static constexpr std::size_t recorded_failures = 20;

  /// The sessions that must be open now, by user.
  std::map<std::uint64_t, std::multiset<std::string>> open() const;

private:
  void play(std::size_t index);

  std::vector<target> targets_;
  std::uint64_t first_user_;
  std::size_t threads_;
  std::size_t users_per_thread_;
  std::atomic<bool> running_{false};
  std::atomic<std::size_t> requests_{0};
  std::atomic<std::size_t> failure_count_{0};
  mutable std::mutex mtx_;
  std::vector<std::string> failures_;
  std::map<std::uint64_t, std::multiset<std::string>> open_;
  std::vector<std::thread> workers_;
};

/// Checks that every session `expected` is listed by a node, no other, for
/// every user; returns a description of each difference.
std::vector<std::string>
missing_streams(httplib::Client& cli,
                const std::map<std::uint64_t, std::multiset<std::string>>&
                  expected);

/// The figures that say why a node answered 503 (lease refusals, held
/// commands that timed out, forwarding failures, commit failures), per
/// node, for a failing test's message.
std::string why_unavailable(const std::vector<const test_node*>& nodes);

/// Open streams of `user` in the database (the operators' view).
int stored_streams(videostreams::testing::scratch_database& d,
                   std::uint64_t user);

} // namespace videostreams::cluster_testing
