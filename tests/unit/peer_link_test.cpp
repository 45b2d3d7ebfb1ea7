// The link to another node, over a real middleman on loopback: two actor
// systems in this process, one holding the link, the other a stand-in peer
// that answers forwarded commands as each test tells it to.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "caf/actor_registry.hpp"
#include "caf/actor_system.hpp"
#include "caf/actor_system_config.hpp"
#include "caf/event_based_actor.hpp"
#include "caf/io/middleman.hpp"
#include "caf/scoped_actor.hpp"
#include "caf/send.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "actors/message_types.hpp"
#include "cluster/cluster_error.hpp"
#include "cluster/cluster_protocol.hpp"
#include "cluster/peer_link.hpp"

#include "loopback_listener.hpp"

using namespace videostreams;
using namespace std::chrono_literals;

namespace {

/// Generous: a busy machine may take a while to connect or to schedule.
constexpr auto patience = 20s;

struct middleman_config : caf::actor_system_config {
  middleman_config() {
    register_message_types(*this);
    register_cluster_message_types(*this);
    load<caf::io::middleman>();
    set("logger.verbosity", caf::atom("quiet"));
    set("middleman.workers", size_t{0});
  }
};

/// What the stand-in peer does with a forwarded command.
enum class peer_answer { serve, not_owner, never };

/// What the stand-in peer and the stand-in node saw, for the test thread.
struct observed {
  std::mutex mtx;
  std::condition_variable cv;
  peer_answer answer = peer_answer::serve;
  std::vector<forwarded_command> commands;
  /// (referrer, hint) of each retry the link sent to its node.
  std::vector<std::pair<std::string, std::string>> retries;
  std::vector<std::shared_ptr<reply_slot>> retried_slots;
  /// Each connection news the link sent to its node.
  std::vector<bool> link_news;

  template <class Predicate>
  bool wait(Predicate done) {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, patience, [&] { return done(); });
  }
};

cluster_endpoint::behavior_type peer_impl(cluster_endpoint::pointer self,
                                          std::shared_ptr<observed> seen) {
  return {
    [self, seen](forward_batch& batch) {
      reply_batch replies;
      {
        std::lock_guard<std::mutex> guard{seen->mtx};
        for (auto& fc : batch.commands) {
          seen->commands.push_back(fc);
          forwarded_reply r;
          r.id = fc.id;
          switch (seen->answer) {
            case peer_answer::serve:
              r.result = forward_result::served;
              r.reply.outcome = stream_outcome::granted;
              r.reply.stream_count = 1;
              r.reply.max_streams = 3;
              replies.replies.push_back(std::move(r));
              break;
            case peer_answer::not_owner:
              r.result = forward_result::not_owner;
              r.owner_hint = "n9";
              replies.replies.push_back(std::move(r));
              break;
            case peer_answer::never:
              break;
          }
        }
      }
      seen->cv.notify_all();
      if (!replies.replies.empty())
        self->send(caf::actor_cast<peer_gateway>(self->current_sender()),
                   std::move(replies));
    },
    [](shard_news&) {},
  };
}

link_owner::behavior_type owner_impl(link_owner::pointer,
                                     std::shared_ptr<observed> seen) {
  return {
    [seen](retry_atom, local_call& call, std::string& referrer,
           std::string& hint) {
      {
        std::lock_guard<std::mutex> guard{seen->mtx};
        seen->retries.emplace_back(std::move(referrer), std::move(hint));
        seen->retried_slots.push_back(std::move(call.slot));
      }
      seen->cv.notify_all();
    },
    [seen](link_atom, const std::string&, bool connected) {
      {
        std::lock_guard<std::mutex> guard{seen->mtx};
        seen->link_news.push_back(connected);
      }
      seen->cv.notify_all();
    },
  };
}

/// A port on 127.0.0.1 that nothing listens on (listened on, then closed).
std::uint16_t closed_port() {
  return testing::loopback_listener{}.port();
}

/// A TCP relay on 127.0.0.1 in front of `target_port` that accepts
/// connections at once but carries nothing until `open()`: a connect that
/// the network makes slow.
class held_relay {
public:
  explicit held_relay(std::uint16_t target_port) : target_port_(target_port) {
    thread_ = std::thread{[this] { run(); }};
  }

  ~held_relay() {
    stop_ = true;
    thread_.join();
    for (auto& p : pairs_) {
      ::close(p.client);
      if (p.server >= 0)
        ::close(p.server);
    }
  }

  held_relay(const held_relay&) = delete;
  held_relay& operator=(const held_relay&) = delete;

  std::uint16_t port() const noexcept {
    return listener_.port();
  }

  /// Carries what was held and everything after it.
  void open() {
    open_ = true;
  }

private:
  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    return addr;
  }

  void run() {
    char buf[65536];
    while (!stop_) {
      if (open_)
        for (auto& p : pairs_)
          if (p.server < 0) {
            p.server = ::socket(AF_INET, SOCK_STREAM, 0);
            auto addr = loopback(target_port_);
            ::connect(p.server, reinterpret_cast<sockaddr*>(&addr),
                      sizeof addr);
          }
      std::vector<pollfd> fds{{listener_.fd(), POLLIN, 0}};
      std::vector<carried*> owners;
      for (auto& p : pairs_)
        if (p.server >= 0 && !p.closed) {
          fds.push_back({p.client, POLLIN, 0});
          fds.push_back({p.server, POLLIN, 0});
          owners.push_back(&p);
        }
      if (::poll(fds.data(), fds.size(), 10) <= 0)
        continue;
      for (std::size_t k = 1; k < fds.size(); ++k) {
        auto& p = *owners[(k - 1) / 2];
        if (fds[k].revents == 0 || p.closed)
          continue;
        int to = fds[k].fd == p.client ? p.server : p.client;
        auto n = ::recv(fds[k].fd, buf, sizeof buf, 0);
        if (n > 0)
          ::send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
        else
          p.closed = true; // one side left: end both
        if (p.closed) {
          ::shutdown(p.client, SHUT_RDWR);
          ::shutdown(p.server, SHUT_RDWR);
        }
      }
      if (fds[0].revents & POLLIN) {
        int client = ::accept(listener_.fd(), nullptr, nullptr);
        if (client >= 0)
          pairs_.push_back(carried{client, -1, false});
      }
    }
  }

  struct carried {
    int client;
    int server; // -1: held
    bool closed;
  };

  std::uint16_t target_port_;
  testing::loopback_listener listener_;
  std::deque<carried> pairs_; // stable addresses while polling
  std::atomic<bool> open_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// This node's system with a link to the stand-in peer on the other.
struct link_fixture {
  middleman_config node_cfg;
  middleman_config peer_cfg;
  caf::actor_system node_sys{node_cfg};
  caf::actor_system peer_sys{peer_cfg};
  std::shared_ptr<observed> seen = std::make_shared<observed>();
  std::shared_ptr<peer_counters> counters = std::make_shared<peer_counters>();
  link_owner owner = node_sys.spawn(owner_impl, seen);
  cluster_endpoint peer;
  peer_link link;

  /// Starts the stand-in peer; returns the port it listens on.
  std::uint16_t publish_peer() {
    peer = peer_sys.spawn(peer_impl, seen);
    auto published = peer_sys.middleman().publish(peer, 0, "127.0.0.1");
    REQUIRE(published);
    return *published;
  }

  /// Starts the link; to the stand-in peer unless `port` names another.
  void connect(std::chrono::milliseconds request_timeout,
               std::uint16_t port = 0) {
    if (port == 0)
      port = publish_peer();
    peer_link_settings ls;
    ls.node_id = "n2";
    ls.host = "127.0.0.1";
    ls.port = port;
    ls.request_timeout = request_timeout;
    ls.connect_timeout = 3000ms;
    ls.owner = owner;
    ls.middleman = node_sys.middleman().actor_handle();
    ls.counters = counters;
    link = spawn_peer_link(node_sys, std::move(ls));
  }

  /// Waits until the link's last news to its node says `connected`.
  bool wait_link(bool connected) {
    return seen->wait([&] {
      return !seen->link_news.empty() && seen->link_news.back() == connected;
    });
  }

  /// Hands `cmd` to the gateway as the router does, from this thread.
  std::shared_ptr<reply_slot> call(user_command cmd = {}) {
    auto slot = std::make_shared<reply_slot>();
    caf::anon_send(link.gateway, local_call{std::move(cmd), slot});
    return slot;
  }

  /// Links to a peer that never answers and sends it a command; returns
  /// the command's slot once the peer has it.
  std::shared_ptr<reply_slot> call_silent_peer() {
    seen->answer = peer_answer::never;
    connect(60s);
    auto slot = call();
    REQUIRE(seen->wait([&] { return seen->commands.size() == 1; }));
    return slot;
  }

  /// Each system waits for its actors when it shuts down: end them all.
  ~link_fixture() {
    caf::anon_send_exit(link.actor, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(owner, caf::exit_reason::user_shutdown);
    if (peer)
      caf::anon_send_exit(peer, caf::exit_reason::user_shutdown);
  }
};

/// `t` as a command's `answer_by_ns` says it.
std::int64_t steady_ns(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           t.time_since_epoch())
    .count();
}

std::uint64_t answered_count(const peer_counters& c) {
  std::uint64_t n = 0;
  for (auto& b : c.buckets)
    n += b.load();
  return n;
}

} // namespace

TEST_CASE("a link carries a command from a plain thread to the peer and "
          "the peer's answer straight back to the waiting thread",
          "[peer_link]") {
  link_fixture f;
  f.connect(60s);
  // Sent at once, before the connection is up: it waits for the first
  // connect instead of failing.
  user_command cmd;
  cmd.user = 42;
  cmd.op = user_op::start_legacy;
  auto slot = f.call(cmd);
  REQUIRE(slot->wait_for(patience));
  CHECK(slot->value().outcome == stream_outcome::granted);
  CHECK(slot->value().stream_count == 1);
  {
    std::lock_guard<std::mutex> guard{f.seen->mtx};
    REQUIRE(f.seen->commands.size() == 1);
    CHECK(f.seen->commands[0].cmd.user == 42);
    CHECK(f.seen->commands[0].referred_by.empty());
  }
  // Once connected, the next one goes straight through as well.
  auto second = f.call(cmd);
  REQUIRE(second->wait_for(patience));
  CHECK(second->value().outcome == stream_outcome::granted);
  CHECK(f.counters->forwarded.load() == 2);
  CHECK(f.counters->batches.load() == 2);
  CHECK(f.counters->failed.load() == 0);
  CHECK(answered_count(*f.counters) == 2);
  CHECK(f.counters->connected.load() == 1);
}

TEST_CASE("a command sent to a link as a request gets the peer's answer as "
          "its response",
          "[peer_link]") {
  link_fixture f;
  f.connect(60s);
  caf::scoped_actor self{f.node_sys};
  user_command cmd;
  cmd.user = 7;
  bool answered = false;
  self->request(f.link.gateway, patience, cmd)
    .receive(
      [&](user_reply& r) {
        answered = true;
        CHECK(r.outcome == stream_outcome::granted);
      },
      [&](caf::error& err) { FAIL("error: " << f.node_sys.render(err)); });
  CHECK(answered);
}

TEST_CASE("a command the peer says is not its own goes back to the node "
          "once, with the owner the peer named, and a second try's refusal "
          "is a 503",
          "[peer_link]") {
  link_fixture f;
  f.seen->answer = peer_answer::not_owner;
  f.connect(60s);
  auto slot = f.call();
  REQUIRE(f.seen->wait([&] { return f.seen->retries.size() == 1; }));
  // Not answered yet: the node's second try answers it.
  CHECK_FALSE(slot->wait_for(0ms));
  {
    std::lock_guard<std::mutex> guard{f.seen->mtx};
    CHECK(f.seen->retries[0].first == "n2");
    CHECK(f.seen->retries[0].second == "n9");
    CHECK(f.seen->retried_slots[0] == slot);
  }
  // The node sends the second try, naming the referrer: its refusal is
  // final.
  caf::anon_send(f.link.gateway, retry_atom::value, local_call{{}, slot},
                 std::string{"n5"});
  REQUIRE(slot->wait_for(patience));
  CHECK(slot->value().outcome == stream_outcome::unavailable);
  {
    std::lock_guard<std::mutex> guard{f.seen->mtx};
    REQUIRE(f.seen->commands.size() == 2);
    CHECK(f.seen->commands[1].referred_by == "n5");
  }
  CHECK(f.counters->not_owner.load() == 2);
  CHECK(f.counters->failed.load() == 1);
}

TEST_CASE("a command the peer never answers is answered 503 once the "
          "request timeout or its caller's patience runs out",
          "[peer_link]") {
  link_fixture f;
  f.seen->answer = peer_answer::never;
  f.connect(300ms);
  SECTION("the request timeout") {
    auto started = std::chrono::steady_clock::now();
    auto slot = f.call();
    REQUIRE(slot->wait_for(patience));
    CHECK(slot->value().outcome == stream_outcome::unavailable);
    CHECK(std::chrono::steady_clock::now() - started >= 300ms);
    CHECK(f.counters->failed.load() == 1);
  }
  SECTION("the caller's patience, shorter: the peer is told what is left") {
    // Connected first: a slow connect must not use up the patience.
    REQUIRE(f.wait_link(true));
    auto started = std::chrono::steady_clock::now();
    user_command cmd;
    cmd.answer_by_ns = steady_ns(started + 150ms);
    auto slot = f.call(cmd);
    REQUIRE(slot->wait_for(patience));
    CHECK(slot->value().outcome == stream_outcome::unavailable);
    CHECK(std::chrono::steady_clock::now() - started >= 150ms);
    REQUIRE(f.seen->wait([&] { return f.seen->commands.size() == 1; }));
    std::lock_guard<std::mutex> guard{f.seen->mtx};
    CHECK(f.seen->commands[0].budget_ns > 0);
    CHECK(f.seen->commands[0].budget_ns <= 150'000'000);
    CHECK(f.seen->commands[0].sent_wall_ns > 0);
  }
}

TEST_CASE("while a peer cannot be reached, commands are answered 503 at "
          "once, never held",
          "[peer_link]") {
  link_fixture f;
  f.connect(60s, closed_port());
  REQUIRE(f.wait_link(false));
  // Answered within the send itself (the gateway runs in this thread),
  // not after the request timeout of a minute.
  auto slot = f.call();
  REQUIRE(slot->wait_for(0ms));
  CHECK(slot->value().outcome == stream_outcome::unavailable);
  CHECK(f.counters->connected.load() == 0);
  CHECK(f.counters->forwarded.load() == 0);
}

TEST_CASE("closing a link answers every command still waiting with a 503, "
          "and the gateway answers later ones at once",
          "[peer_link]") {
  link_fixture f;
  auto waiting = f.call_silent_peer();
  caf::anon_send_exit(f.link.actor, caf::exit_reason::user_shutdown);
  REQUIRE(waiting->wait_for(patience));
  CHECK(waiting->value().outcome == stream_outcome::unavailable);
  auto late = f.call();
  REQUIRE(late->wait_for(0ms));
  CHECK(late->value().outcome == stream_outcome::unavailable);
  // The middleman registered the gateway to deliver the peer's answers;
  // closed, it is out of the registry and goes with its last handle.
  // (The link's actor lets go of it as it finishes terminating.)
  auto id = f.link.gateway.id();
  caf::actor_addr addr = f.link.gateway.address();
  f.link.gateway = nullptr;
  auto gone = [&] {
    return f.node_sys.registry().get(id) == nullptr
           && caf::actor_cast<caf::strong_actor_ptr>(addr) == nullptr;
  };
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (!gone() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  CHECK(f.node_sys.registry().get(id) == nullptr);
  CHECK(caf::actor_cast<caf::strong_actor_ptr>(addr) == nullptr);
}

TEST_CASE("when the peer's endpoint goes down, the commands waiting on it "
          "are answered 503 at once and the node hears the link is down",
          "[peer_link]") {
  link_fixture f;
  auto waiting = f.call_silent_peer();
  REQUIRE(f.wait_link(true));
  // The peer's actor ends (its node is stopping): the middleman tells the
  // link, which must not leave the command to its minute-long timeout.
  caf::anon_send_exit(f.peer, caf::exit_reason::user_shutdown);
  REQUIRE(waiting->wait_for(patience));
  CHECK(waiting->value().outcome == stream_outcome::unavailable);
  CHECK(f.wait_link(false));
  CHECK(f.counters->connected.load() == 0);
  // Not connected: the next command is answered at once as well.
  auto next = f.call();
  REQUIRE(next->wait_for(patience));
  CHECK(next->value().outcome == stream_outcome::unavailable);
}

TEST_CASE("a command that waited for the first connect and was answered "
          "503 meanwhile is not sent once the link is up",
          "[peer_link]") {
  link_fixture f;
  held_relay slow_network{f.publish_peer()};
  f.connect(60s, slow_network.port());
  // Its caller gives up in 200 ms, long before the connection is up.
  user_command cmd;
  cmd.user = 1;
  cmd.answer_by_ns = steady_ns(std::chrono::steady_clock::now() + 200ms);
  auto given_up = f.call(cmd);
  REQUIRE(given_up->wait_for(patience));
  CHECK(given_up->value().outcome == stream_outcome::unavailable);
  // The connection comes up: the peer must never decide that command (its
  // caller was told 503), only the next one.
  slow_network.open();
  REQUIRE(f.wait_link(true));
  user_command next;
  next.user = 2;
  auto served = f.call(next);
  REQUIRE(served->wait_for(patience));
  CHECK(served->value().outcome == stream_outcome::granted);
  std::lock_guard<std::mutex> guard{f.seen->mtx};
  REQUIRE(f.seen->commands.size() == 1);
  CHECK(f.seen->commands[0].cmd.user == 2);
}
