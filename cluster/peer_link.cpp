#include "cluster/peer_link.hpp"

#include <algorithm>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "caf/actor_cast.hpp"
#include "caf/actor_system.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "cluster/cluster_error.hpp"

namespace videostreams {

namespace {

using steady = std::chrono::steady_clock;
constexpr auto relaxed = std::memory_order_relaxed;

/// How often a link checks for commands waiting too long and for a due
/// reconnect.
constexpr auto check_every = std::chrono::milliseconds{100};

/// How long commands may gather while others are on their way to the peer.
constexpr auto gather_for = std::chrono::microseconds{500};

/// Back-off between connection attempts: from the first to the last.
constexpr auto first_backoff = std::chrono::milliseconds{200};
constexpr auto last_backoff = std::chrono::milliseconds{5000};

/// True if a TCP connection to `host`:`port` can be opened within
/// `timeout`. Blocking; run on a thread of its own.
bool tcp_reachable(const std::string& host, std::uint16_t port,
                   std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints,
                    &found)
        != 0
      || found == nullptr)
    return false;
  bool ok = false;
  for (auto* a = found; a != nullptr && !ok; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK
                                      | SOCK_CLOEXEC,
                      a->ai_protocol);
    if (fd < 0)
      continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
        int err = 0;
        socklen_t len = sizeof(err);
        ok = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0
             && err == 0;
      }
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return ok;
}

/// Checks whether a peer accepts TCP connections at all, with a timeout,
/// before the middleman is asked to connect: the middleman's actor blocks
/// in `connect()` while it connects (CAF 0.17), which for a host that
/// swallows packets lasts minutes and stalls every other connect.
using dial_atom = caf::atom_constant<caf::atom("dial")>;
using dialer_actor = caf::typed_actor<caf::replies_to<
  dial_atom, std::string, std::uint16_t, std::int64_t>::with<bool>>;

dialer_actor::behavior_type dialer_impl(dialer_actor::pointer self) {
  return {
    [self](dial_atom, const std::string& host, std::uint16_t port,
           std::int64_t timeout_ms) {
      auto ok = tcp_reachable(host, port,
                              std::chrono::milliseconds{timeout_ms});
      self->quit();
      return ok;
    },
  };
}

enum class link_status { connecting, up, down };

/// A command sent to the peer, waiting for its answer.
struct pending_command {
  user_command cmd;
  /// Exactly one of these two is set: a local caller's slot, or a request.
  std::shared_ptr<reply_slot> slot;
  caf::typed_response_promise<user_reply> promise;
  /// Second try (sent here by `referred_by`): a `not_owner` answer is
  /// final.
  bool retry = false;
  std::string referred_by;
  steady::time_point sent;
  /// Answered 503 then (its caller has given up, or will have).
  steady::time_point deadline;
};

struct link_state {
  peer_link_settings settings;
  link_status status = link_status::connecting;
  cluster_endpoint remote;
  std::unordered_map<std::uint64_t, pending_command> pending;
  std::vector<forwarded_command> outgoing;
  std::uint64_t next_id = 1;
  bool send_scheduled = false;
  bool dialing = false;
  steady::time_point next_dial;
  std::chrono::milliseconds backoff = first_backoff;
  static inline const char* name = "peer_link";
};

using link_pointer = peer_link_actor::stateful_pointer<link_state>;

/// Answers `x` with 503 (no owner could decide).
void fail(link_pointer self, pending_command& x) {
  self->state.settings.counters->failed.fetch_add(1, relaxed);
  if (x.slot)
    x.slot->fulfill(user_reply::unavailable());
  else
    x.promise.deliver(make_error(cluster_error::unavailable));
}

void fail_all(link_pointer self) {
  auto& st = self->state;
  for (auto& [id, x] : st.pending)
    fail(self, x);
  st.pending.clear();
  st.outgoing.clear();
}

/// Sends what gathered to the peer (but what was answered meanwhile: its
/// caller has had a 503 and must not see it decided after all).
void send_now(link_pointer self) {
  auto& st = self->state;
  st.outgoing.erase(std::remove_if(st.outgoing.begin(), st.outgoing.end(),
                                   [&st](const forwarded_command& x) {
                                     return st.pending.count(x.id) == 0;
                                   }),
                    st.outgoing.end());
  if (st.status != link_status::up || st.outgoing.empty())
    return;
  st.settings.counters->forwarded.fetch_add(st.outgoing.size(), relaxed);
  st.settings.counters->batches.fetch_add(1, relaxed);
  forward_batch batch{std::move(st.outgoing)};
  st.outgoing.clear();
  self->send(st.remote, std::move(batch));
}

/// Sends what gathered at once when nothing is on its way to the peer (no
/// wait when idle); otherwise a little later, so that commands arriving
/// meanwhile share the message (fewer messages, and fewer wake-ups of the
/// threads that carry them, under load).
void schedule_send(link_pointer self) {
  auto& st = self->state;
  if (st.send_scheduled || st.status != link_status::up
      || st.outgoing.empty())
    return;
  if (st.pending.size() == st.outgoing.size()) {
    send_now(self);
    return;
  }
  st.send_scheduled = true;
  self->delayed_send(self, gather_for, send_atom::value);
}

void take(link_pointer self, pending_command x) {
  auto& st = self->state;
  if (st.status == link_status::down) {
    fail(self, x); // never hold a command for a peer that cannot be reached
    return;
  }
  // The answer takes a round trip to another process: the waiting thread
  // should sleep, not yield the core to and fro meanwhile.
  if (x.slot)
    x.slot->defer();
  auto id = st.next_id++;
  x.sent = steady::now();
  // Answered by the request timeout, or by when its caller gives up if
  // that is sooner; the peer gets the time left.
  auto deadline = x.sent + st.settings.request_timeout;
  forwarded_command fc{id, x.cmd, 0, x.referred_by};
  if (x.cmd.answer_by_ns != 0) {
    deadline = std::min(deadline,
                        steady::time_point{
                          std::chrono::nanoseconds{x.cmd.answer_by_ns}});
    fc.budget_ns = std::max<std::int64_t>(
      1, (deadline - x.sent).count());
    fc.sent_wall_ns = wall_now_ns();
  }
  if (deadline <= x.sent) {
    fail(self, x); // its caller has given up already
    return;
  }
  st.outgoing.push_back(std::move(fc));
  x.deadline = deadline;
  st.pending.emplace(id, std::move(x));
  schedule_send(self);
}

void set_status(link_pointer self, link_status x) {
  auto& st = self->state;
  bool was_up = st.status == link_status::up;
  st.status = x;
  bool up = x == link_status::up;
  st.settings.counters->connected.store(up ? 1 : 0, relaxed);
  if (up != was_up || x == link_status::down)
    self->send(st.settings.owner, link_atom::value, st.settings.node_id, up);
}

void connection_lost(link_pointer self) {
  auto& st = self->state;
  st.remote = nullptr;
  st.dialing = false;
  set_status(self, link_status::down);
  fail_all(self);
  st.next_dial = steady::now() + st.backoff;
  st.backoff = std::min(last_backoff, st.backoff * 2);
}

/// Connects, unless connected, connecting or waiting out a back-off.
void dial(link_pointer self) {
  auto& st = self->state;
  if (st.status == link_status::up || st.dialing
      || steady::now() < st.next_dial)
    return;
  st.dialing = true;
  auto timeout = st.settings.connect_timeout;
  auto dialer = self->spawn<caf::detached>(dialer_impl);
  self
    ->request(dialer, timeout + std::chrono::seconds{1}, dial_atom::value,
              st.settings.host, st.settings.port,
              static_cast<std::int64_t>(timeout.count()))
    .then(
      [self, timeout](bool reachable) {
        auto& st = self->state;
        if (!reachable) {
          connection_lost(self);
          return;
        }
        self
          ->request(st.settings.middleman, timeout, caf::connect_atom::value,
                    st.settings.host, st.settings.port)
          .then(
            [self](const caf::node_id&, caf::strong_actor_ptr& ptr,
                   const std::set<std::string>& ifs) {
              auto& st = self->state;
              st.dialing = false;
              if (!ptr || !self->system().assignable<cluster_endpoint>(ifs)) {
                // Something else listens there (or another version that
                // cannot take our commands): try again later.
                connection_lost(self);
                return;
              }
              st.remote = caf::actor_cast<cluster_endpoint>(std::move(ptr));
              self->monitor(st.remote);
              st.backoff = first_backoff;
              set_status(self, link_status::up);
              schedule_send(self);
            },
            [self](caf::error&) { connection_lost(self); });
      },
      [self](caf::error&) { connection_lost(self); });
}

void on_reply(link_pointer self, forwarded_reply& r) {
  auto& st = self->state;
  auto i = st.pending.find(r.id);
  if (i == st.pending.end())
    return; // answered already (it waited too long)
  auto x = std::move(i->second);
  st.pending.erase(i);
  auto& counters = *st.settings.counters;
  switch (r.result) {
    case forward_result::served:
      counters.record_latency((steady::now() - x.sent).count());
      if (x.slot)
        x.slot->fulfill(r.reply);
      else
        x.promise.deliver(std::move(r.reply));
      return;
    case forward_result::not_owner:
      counters.not_owner.fetch_add(1, relaxed);
      if (!x.retry) {
        // The node routes it to the owner the peer named, once.
        if (x.slot)
          self->send(st.settings.owner, retry_atom::value,
                     local_call{std::move(x.cmd), std::move(x.slot)},
                     st.settings.node_id, std::move(r.owner_hint));
        else
          x.promise.deliver(make_error(cluster_error::not_owner,
                                       std::move(r.owner_hint)));
        return;
      }
      fail(self, x);
      return;
    case forward_result::unavailable:
      fail(self, x);
      return;
  }
}

/// Answers the commands that waited longer than the request timeout (their
/// callers gave up already) and reconnects when due.
void check(link_pointer self) {
  auto& st = self->state;
  auto now = steady::now();
  for (auto i = st.pending.begin(); i != st.pending.end();) {
    if (i->second.deadline <= now) {
      fail(self, i->second);
      i = st.pending.erase(i);
    } else {
      ++i;
    }
  }
  if (st.status != link_status::up)
    dial(self);
}

peer_link_actor::behavior_type link_impl(link_pointer self,
                                         peer_link_settings settings) {
  auto& st = self->state;
  st.settings = std::move(settings);
  st.settings.counters->connected.store(0, relaxed);
  self->set_down_handler([self](caf::down_msg& msg) {
    if (msg.source == self->state.remote.address())
      connection_lost(self);
  });
  // Nobody may be left waiting when the node closes the link.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    fail_all(self);
    self->state.settings.counters->connected.store(0, relaxed);
    self->quit(msg.reason);
  });
  dial(self);
  self->delayed_send(self, check_every, check_atom::value);
  return {
    [self](user_command& cmd) -> caf::result<user_reply> {
      auto rp = self->make_response_promise<user_reply>();
      pending_command x;
      x.cmd = std::move(cmd);
      x.promise = rp;
      take(self, std::move(x));
      return rp;
    },
    [self](local_call& call) {
      pending_command x;
      x.cmd = std::move(call.cmd);
      x.slot = std::move(call.slot);
      take(self, std::move(x));
    },
    [self](retry_atom, local_call& call, std::string& referred_by) {
      pending_command x;
      x.cmd = std::move(call.cmd);
      x.slot = std::move(call.slot);
      x.retry = true;
      x.referred_by = std::move(referred_by);
      take(self, std::move(x));
    },
    [self](reply_batch& batch) {
      for (auto& r : batch.replies)
        on_reply(self, r);
    },
    [self](shard_news& news) {
      auto& st = self->state;
      if (st.status == link_status::up)
        self->send(st.remote, std::move(news));
    },
    [self](send_atom) {
      self->state.send_scheduled = false;
      send_now(self);
    },
    [self](check_atom) {
      check(self);
      self->delayed_send(self, check_every, check_atom::value);
    },
  };
}

} // namespace

peer_link_actor spawn_peer_link(caf::actor_system& sys,
                                peer_link_settings settings) {
  return sys.spawn(link_impl, std::move(settings));
}

} // namespace videostreams
