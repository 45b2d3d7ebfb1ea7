#pragma once

// A TCP socket listening on a loopback address at a port the kernel picks,
// for tests that need something at the other end of a connection: a
// stand-in server, a relay, a port that is taken. Shared by every tier.

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace videostreams::testing {

class loopback_listener {
public:
  /// Listens on `host` (a loopback address, 127.0.0.1 unless named).
  explicit loopback_listener(const std::string& host = "127.0.0.1",
                             int backlog = 64) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr)
            == 0);
    REQUIRE(::listen(fd_, backlog) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len)
            == 0);
    port_ = ntohs(addr.sin_port);
  }

  ~loopback_listener() {
    ::close(fd_);
  }

  loopback_listener(const loopback_listener&) = delete;
  loopback_listener& operator=(const loopback_listener&) = delete;

  int fd() const noexcept {
    return fd_;
  }

  std::uint16_t port() const noexcept {
    return port_;
  }

private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

} // namespace videostreams::testing
