#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "http_probe.hpp"

namespace videostreams::blackbox {

/// Keep-alive connections to one service, all opened (and proven to work)
/// up front, that send requests at the same instant: every client runs on
/// its own thread, and the threads are released together by a gate. No
/// Catch2 assertion runs on those threads (Catch2 is not thread-safe); they
/// only record.
class client_pool {
public:
  /// Opens `size` connections to 127.0.0.1:`port`; throws
  /// `std::runtime_error` when one of them gets no answer to `GET /healthz`.
  client_pool(int port, std::size_t size) {
    for (std::size_t i = 0; i < size; ++i) {
      clients_.push_back(make_client(port, true));
      auto r = get(*clients_.back(), "/healthz");
      if (r.status != 200)
        throw std::runtime_error("client " + std::to_string(i)
                                 + " could not connect: " + r.error);
    }
  }

  std::size_t size() const noexcept {
    return clients_.size();
  }

  /// Sends, from every client at once, the GET that `path_of(i)` names for
  /// client i; returns the replies by i.
  template <class PathOf>
  std::vector<reply> fire(PathOf path_of) {
    std::vector<reply> replies(clients_.size());
    run([&](std::size_t i, httplib::Client& cli) {
      replies[i] = get(cli, path_of(i));
    });
    return replies;
  }

  /// Runs `work(i, client)` for every client at once.
  template <class Work>
  void run(Work work) {
    start_gate gate{clients_.size()};
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < clients_.size(); ++i)
      threads.emplace_back([&, i] {
        gate.arrive_and_wait();
        work(i, *clients_[i]);
      });
    for (auto& t : threads)
      t.join();
  }

private:
  std::vector<std::unique_ptr<httplib::Client>> clients_;
};

} // namespace videostreams::blackbox
