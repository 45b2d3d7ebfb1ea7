#pragma once

// A TCP proxy in front of the test PostgreSQL (which listens on a Unix
// socket only) that can fall silent, as a database does for its clients
// when the network drops packets, or when a failover leaves the old
// connections dangling: the connections it carries then get no answer, and
// their server side hears nothing more either.

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "loopback_listener.hpp"

namespace videostreams::testing {

class silent_proxy {
public:
  /// Listens on `host` (a loopback address) for connections to the server
  /// that `server_dsn` (as the ctest fixture writes it: `host=DIR port=P
  /// ...`) names.
  explicit silent_proxy(const std::string& server_dsn,
                        const std::string& host = "127.0.0.9")
    : host_(host), listener_(host) {
    auto words = dsn_words(server_dsn);
    socket_path_ = words["host"] + "/.s.PGSQL." + words["port"];
    words.erase("host");
    words.erase("port");
    for (auto& [key, value] : words)
      rest_ += " " + key + "=" + value;
    REQUIRE(::pipe(wake_) == 0);
    thread_ = std::thread{[this] { run(); }};
  }

  ~silent_proxy() {
    stop_ = true;
    poke();
    thread_.join();
    for (auto& p : pairs_) {
      ::close(p.client);
      if (p.server >= 0)
        ::close(p.server);
    }
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  silent_proxy(const silent_proxy&) = delete;
  silent_proxy& operator=(const silent_proxy&) = delete;

  /// The server's DSN, through this proxy, for database `dbname` (the
  /// server's own when empty).
  std::string dsn(const std::string& dbname = "") const {
    auto words = dsn_words("host=" + host_ + " port="
                           + std::to_string(listener_.port()) + rest_);
    if (!dbname.empty())
      words["dbname"] = dbname;
    std::string result;
    for (auto& [key, value] : words)
      result += (result.empty() ? "" : " ") + key + "=" + value;
    return result;
  }

  /// The connections carried now fall silent for good (a failover left
  /// them dangling); new ones are carried as before.
  void silence_carried() {
    command(mode::silence_carried);
  }

  /// Every connection, carried now or accepted from now on, falls silent
  /// (the network drops everything) until `answer_new`.
  void silence_all() {
    command(mode::silence_all);
  }

  /// New connections are carried again (those silenced stay silent).
  void answer_new() {
    command(mode::answer_new);
  }

  /// Connections accepted so far.
  int accepted() const noexcept {
    return accepted_.load();
  }

private:
  enum class mode { silence_carried, silence_all, answer_new };

  struct carried {
    int client;
    int server; // -1: never connected (accepted while silent)
    bool silent;
  };

  static std::map<std::string, std::string>
  dsn_words(const std::string& dsn) {
    std::map<std::string, std::string> words;
    std::size_t pos = 0;
    while (pos < dsn.size()) {
      auto end = dsn.find(' ', pos);
      if (end == std::string::npos)
        end = dsn.size();
      auto word = dsn.substr(pos, end - pos);
      if (auto eq = word.find('='); eq != std::string::npos)
        words[word.substr(0, eq)] = word.substr(eq + 1);
      pos = end + 1;
    }
    return words;
  }

  /// Applied by the proxy's thread before it carries another byte.
  void command(mode m) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      commands_.push_back(m);
    }
    poke();
    // Wait until the thread applied it, so that what the caller does next
    // meets the new mode.
    for (;;) {
      {
        std::lock_guard<std::mutex> guard{mtx_};
        if (commands_.empty())
          return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  }

  void poke() {
    char c = 0;
    [[maybe_unused]] auto n = ::write(wake_[1], &c, 1);
  }

  void apply_commands() {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto m : commands_) {
      if (m != mode::answer_new)
        for (auto& p : pairs_)
          p.silent = true;
      silent_new_ = m == mode::silence_all;
    }
    commands_.clear();
  }

  int connect_server() const {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    socket_path_.copy(addr.sun_path, sizeof addr.sun_path - 1);
    if (fd >= 0
        && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr)
             != 0) {
      ::close(fd);
      fd = -1;
    }
    return fd;
  }

  static bool send_all(int fd, const char* data, ssize_t len) {
    while (len > 0) {
      auto n = ::send(fd, data, static_cast<size_t>(len), MSG_NOSIGNAL);
      if (n <= 0)
        return false;
      data += n;
      len -= n;
    }
    return true;
  }

  void run() {
    char buf[65536];
    while (!stop_) {
      apply_commands();
      std::vector<pollfd> fds{{wake_[0], POLLIN, 0},
                              {listener_.fd(), POLLIN, 0}};
      std::vector<std::pair<std::size_t, bool>> owners; // pair, client side
      for (std::size_t i = 0; i < pairs_.size(); ++i) {
        if (pairs_[i].silent)
          continue;
        fds.push_back({pairs_[i].client, POLLIN, 0});
        owners.emplace_back(i, true);
        fds.push_back({pairs_[i].server, POLLIN, 0});
        owners.emplace_back(i, false);
      }
      if (::poll(fds.data(), fds.size(), 1000) <= 0)
        continue;
      if (fds[0].revents != 0) {
        [[maybe_unused]] auto n = ::read(wake_[0], buf, sizeof buf);
        continue; // apply what was asked before carrying anything
      }
      if (fds[1].revents & POLLIN) {
        int client = ::accept(listener_.fd(), nullptr, nullptr);
        if (client >= 0) {
          ++accepted_;
          bool silent = silent_new_;
          int server = silent ? -1 : connect_server();
          if (!silent && server < 0)
            ::close(client);
          else
            pairs_.push_back(carried{client, server, silent});
        }
      }
      std::vector<std::size_t> closed;
      for (std::size_t k = 2; k < fds.size(); ++k) {
        if (fds[k].revents == 0)
          continue;
        auto [i, from_client] = owners[k - 2];
        auto& p = pairs_[i];
        int from = from_client ? p.client : p.server;
        int to = from_client ? p.server : p.client;
        auto n = ::recv(from, buf, sizeof buf, 0);
        if (n <= 0 || !send_all(to, buf, n))
          closed.push_back(i);
      }
      std::sort(closed.begin(), closed.end());
      closed.erase(std::unique(closed.begin(), closed.end()), closed.end());
      for (auto it = closed.rbegin(); it != closed.rend(); ++it) {
        ::close(pairs_[*it].client);
        ::close(pairs_[*it].server);
        pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(*it));
      }
    }
  }

  std::string host_;
  loopback_listener listener_;
  std::string socket_path_;
  std::string rest_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::mutex mtx_;
  std::vector<mode> commands_;
  bool silent_new_ = false; // the proxy's thread only
  std::vector<carried> pairs_; // the proxy's thread only (and the destructor)
  std::thread thread_;
};

} // namespace videostreams::testing
