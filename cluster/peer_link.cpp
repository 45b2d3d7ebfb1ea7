#include "cluster/peer_link.hpp"

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "caf/actor_cast.hpp"
#include "caf/actor_companion.hpp"
#include "caf/actor_system.hpp"
#include "caf/mailbox_element.hpp"
#include "caf/send.hpp"
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
  /// Exactly one origin is set: a local caller's slot, or a request (who
  /// asked, the request's id and the stages it passes on the way back).
  std::shared_ptr<reply_slot> slot;
  caf::strong_actor_ptr requester;
  caf::message_id request_id;
  caf::mailbox_element::forwarding_stack stages;
  /// Second try (sent here by `referred_by`): a `not_owner` answer is
  /// final.
  bool retry = false;
  std::string referred_by;
  steady::time_point sent;
  /// Answered 503 then (its caller has given up, or will have).
  steady::time_point deadline;
};

/// What a link's gateway and its actor share: the connection's state and
/// the commands on their way. The gateway's handler runs in whichever
/// thread sends to it (HTTP workers, the node, the middleman), so every
/// member is guarded by `mtx_`; answers are given outside the lock.
class peer_channel {
public:
  explicit peer_channel(const peer_link_settings& settings)
    : node_id_(settings.node_id),
      request_timeout_(settings.request_timeout),
      owner_(settings.owner),
      counters_(settings.counters) {
    counters_->connected.store(0, relaxed);
  }

  /// The gateway, the sender of every command (and so the receiver of
  /// every answer).
  void set_gateway(caf::strong_actor_ptr gateway) {
    std::lock_guard<std::mutex> guard{mtx_};
    gateway_ = std::move(gateway);
  }

  /// The gateway's handler: one message to it.
  void handle(caf::mailbox_element& e) {
    auto& content = e.content();
    if (content.match_elements<local_call>()) {
      auto& call = content.get_mutable_as<local_call>(0);
      pending_command x;
      x.cmd = std::move(call.cmd);
      x.slot = std::move(call.slot);
      take(std::move(x));
    } else if (content.match_elements<reply_batch>()) {
      answered(content.get_mutable_as<reply_batch>(0));
    } else if (content.match_elements<retry_atom, local_call, std::string>()) {
      auto& call = content.get_mutable_as<local_call>(1);
      pending_command x;
      x.cmd = std::move(call.cmd);
      x.slot = std::move(call.slot);
      x.retry = true;
      x.referred_by = std::move(content.get_mutable_as<std::string>(2));
      take(std::move(x));
    } else if (content.match_elements<user_command>() && e.mid.is_request()
               && e.sender) {
      pending_command x;
      x.cmd = std::move(content.get_mutable_as<user_command>(0));
      x.requester = e.sender;
      x.request_id = e.mid;
      x.stages = std::move(e.stages);
      take(std::move(x));
    }
  }

  /// Connected to `remote`: sends what waited for the first connect.
  void up(cluster_endpoint remote) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!gateway_)
      return; // closed
    status_ = link_status::up;
    remote_ = std::move(remote);
    counters_->connected.store(1, relaxed);
    // Not what was answered meanwhile: its caller has had a 503 and must
    // not see it decided after all.
    std::vector<forwarded_command> waiting;
    for (auto& fc : waiting_)
      if (pending_.count(fc.id) != 0)
        waiting.push_back(std::move(fc));
    waiting_.clear();
    send_locked(std::move(waiting));
  }

  /// Not connected (or closing): everything waiting is answered 503, and
  /// so is every command until `up`.
  void down() {
    std::unordered_map<std::uint64_t, pending_command> lost;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      status_ = link_status::down;
      remote_ = nullptr;
      lost.swap(pending_);
      waiting_.clear();
    }
    counters_->connected.store(0, relaxed);
    for (auto& [id, x] : lost)
      fail(x);
  }

  /// Closed for good: as `down`, and the gateway is forgotten (it holds
  /// this channel: the cycle ends here).
  void close() {
    down();
    caf::strong_actor_ptr gateway;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      gateway.swap(gateway_);
    }
    // Perhaps the last reference: released outside the lock.
  }

  /// Answers the commands whose deadline passed (their callers gave up
  /// already).
  void expire(steady::time_point now) {
    std::vector<pending_command> late;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      for (auto i = pending_.begin(); i != pending_.end();) {
        if (i->second.deadline <= now) {
          late.push_back(std::move(i->second));
          i = pending_.erase(i);
        } else {
          ++i;
        }
      }
    }
    for (auto& x : late)
      fail(x);
  }

private:
  void take(pending_command x) {
    // The answer takes a round trip to another process: the waiting thread
    // should sleep, not yield the core to and fro meanwhile.
    if (x.slot)
      x.slot->defer();
    x.sent = steady::now();
    // Answered by the request timeout, or by when its caller gives up if
    // that is sooner; the peer gets the time left.
    auto deadline = x.sent + request_timeout_;
    if (x.cmd.answer_by_ns != 0)
      deadline = std::min(deadline,
                          steady::time_point{
                            std::chrono::nanoseconds{x.cmd.answer_by_ns}});
    // The peer never decides after this link has answered 503.
    forwarded_command fc{0, x.cmd, 0, x.referred_by};
    fc.budget_ns = std::max<std::int64_t>(1, (deadline - x.sent).count());
    fc.sent_wall_ns = wall_now_ns();
    if (deadline <= x.sent) {
      fail(x); // its caller has given up already
      return;
    }
    x.deadline = deadline;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (status_ != link_status::down) {
        fc.id = next_id_++;
        pending_.emplace(fc.id, std::move(x));
        if (status_ == link_status::up)
          send_locked({std::move(fc)});
        else
          waiting_.push_back(std::move(fc));
        return;
      }
    }
    fail(x); // never hold a command for a peer that cannot be reached
  }

  /// Sends `commands` to the peer, as one message from the gateway. Called
  /// with `mtx_` held, so that `down` and `expire` answer 503 only commands
  /// that were sent, which the peer then decides only within their budget,
  /// or that never will be. Enqueueing never blocks on this lock's other
  /// users: the middleman's proxy only appends to its broker's mailbox (an
  /// asynchronous message is dropped, never bounced back to the gateway),
  /// and wakes the middleman's thread at most once per scheduling of that
  /// broker.
  void send_locked(std::vector<forwarded_command> commands) {
    if (commands.empty())
      return;
    counters_->forwarded.fetch_add(commands.size(), relaxed);
    counters_->batches.fetch_add(1, relaxed);
    caf::actor_cast<caf::strong_actor_ptr>(remote_)->enqueue(
      gateway_, caf::make_message_id(),
      caf::make_message(forward_batch{std::move(commands)}), nullptr);
  }

  /// The peer's answers.
  void answered(reply_batch& batch) {
    std::vector<std::pair<forwarded_reply*, pending_command>> found;
    found.reserve(batch.replies.size());
    {
      std::lock_guard<std::mutex> guard{mtx_};
      for (auto& r : batch.replies) {
        auto i = pending_.find(r.id);
        if (i == pending_.end())
          continue; // answered already (it waited too long)
        found.emplace_back(&r, std::move(i->second));
        pending_.erase(i);
      }
    }
    for (auto& [r, x] : found)
      answered(*r, x);
  }

  void answered(forwarded_reply& r, pending_command& x) {
    switch (r.result) {
      case forward_result::served:
        counters_->record_latency((steady::now() - x.sent).count());
        if (x.slot)
          x.slot->fulfill(r.reply);
        else
          respond(x, caf::make_message(std::move(r.reply)));
        return;
      case forward_result::not_owner:
        counters_->not_owner.fetch_add(1, relaxed);
        if (x.retry) {
          fail(x);
        } else if (x.slot) {
          // The node routes it to the owner the peer named, once.
          caf::anon_send(owner_, retry_atom::value,
                         local_call{std::move(x.cmd), std::move(x.slot)},
                         node_id_, std::move(r.owner_hint));
        } else {
          respond(x, caf::make_message(make_error(
                       cluster_error::not_owner, std::move(r.owner_hint))));
        }
        return;
      case forward_result::unavailable:
        fail(x);
        return;
    }
  }

  /// Answers `x` with 503 (no owner could decide).
  void fail(pending_command& x) {
    counters_->failed.fetch_add(1, relaxed);
    if (x.slot)
      x.slot->fulfill(user_reply::unavailable());
    else
      respond(x, caf::make_message(make_error(cluster_error::unavailable)));
  }

  /// Answers a request as a response promise would.
  void respond(pending_command& x, caf::message msg) {
    if (!x.requester)
      return;
    if (!x.stages.empty()) {
      auto next = std::move(x.stages.back());
      x.stages.pop_back();
      next->enqueue(caf::make_mailbox_element(std::move(x.requester),
                                              x.request_id,
                                              std::move(x.stages),
                                              std::move(msg)),
                    nullptr);
      return;
    }
    caf::strong_actor_ptr from;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      from = gateway_;
    }
    x.requester->enqueue(std::move(from), x.request_id.response_id(),
                         std::move(msg), nullptr);
  }

  const std::string node_id_;
  const std::chrono::milliseconds request_timeout_;
  const link_owner owner_;
  const std::shared_ptr<peer_counters> counters_;
  caf::strong_actor_ptr gateway_;

  std::mutex mtx_;
  link_status status_ = link_status::connecting;
  cluster_endpoint remote_;
  std::unordered_map<std::uint64_t, pending_command> pending_;
  /// Sent once the first connect succeeds.
  std::vector<forwarded_command> waiting_;
  std::uint64_t next_id_ = 1;
};

struct link_state {
  peer_link_settings settings;
  std::shared_ptr<peer_channel> channel;
  /// The peer's endpoint while connected; null otherwise.
  cluster_endpoint remote;
  bool dialing = false;
  steady::time_point next_dial;
  std::chrono::milliseconds backoff = first_backoff;
  static inline const char* name = "peer_link";
};

using link_pointer = peer_link_actor::stateful_pointer<link_state>;

/// Connected to `remote`, or (null) not connected: tells the channel and
/// the node.
void set_remote(link_pointer self, cluster_endpoint remote) {
  auto& st = self->state;
  st.remote = std::move(remote);
  if (st.remote)
    st.channel->up(st.remote);
  else
    st.channel->down();
  self->send(st.settings.owner, link_atom::value, st.settings.node_id,
             static_cast<bool>(st.remote));
}

void connection_lost(link_pointer self) {
  auto& st = self->state;
  st.dialing = false;
  set_remote(self, cluster_endpoint{});
  st.next_dial = steady::now() + st.backoff;
  st.backoff = std::min(last_backoff, st.backoff * 2);
}

/// Connects, unless connected, connecting or waiting out a back-off.
void dial(link_pointer self) {
  auto& st = self->state;
  if (st.remote || st.dialing
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
              auto remote = caf::actor_cast<cluster_endpoint>(std::move(ptr));
              self->monitor(remote);
              st.backoff = first_backoff;
              set_remote(self, std::move(remote));
            },
            [self](caf::error&) { connection_lost(self); });
      },
      [self](caf::error&) { connection_lost(self); });
}

/// Closes the link: nobody is left waiting, and a command that still
/// reaches the gateway (through a route not re-pointed yet) is answered 503
/// at once (its handler stays). The gateway is terminated: that takes it out
/// of the registry, where the middleman puts the sender of each message it
/// carries (at once, too, if the middleman does so after this), tells the
/// middleman to drop the peer's proxy of it, and lets it go when its last
/// handle does.
void close(peer_channel& channel, const caf::actor& gateway) {
  channel.close();
  static_cast<caf::actor_companion*>(
    caf::actor_cast<caf::abstract_actor*>(gateway))
    ->cleanup(caf::exit_reason::user_shutdown, nullptr);
}

peer_link_actor::behavior_type link_impl(link_pointer self,
                                         peer_link_settings settings,
                                         std::shared_ptr<peer_channel> channel,
                                         caf::actor gateway) {
  auto& st = self->state;
  st.settings = std::move(settings);
  st.channel = channel;
  self->attach_functor([channel, gateway] { close(*channel, gateway); });
  self->set_down_handler([self](caf::down_msg& msg) {
    if (msg.source == self->state.remote.address())
      connection_lost(self);
  });
  self->set_exit_handler(
    [self](caf::exit_msg& msg) { self->quit(msg.reason); });
  dial(self);
  self->delayed_send(self, check_every, check_atom::value);
  return {
    [self](shard_news& news) {
      auto& st = self->state;
      if (st.remote)
        self->send(st.remote, std::move(news));
    },
    [self](check_atom) {
      auto& st = self->state;
      st.channel->expire(steady::now());
      if (!st.remote)
        dial(self);
      self->delayed_send(self, check_every, check_atom::value);
    },
  };
}

} // namespace

peer_link spawn_peer_link(caf::actor_system& sys, peer_link_settings settings) {
  auto channel = std::make_shared<peer_channel>(settings);
  // Hidden: the system does not wait for it at shutdown; the link's exit
  // closes it.
  auto gateway = sys.spawn<caf::actor_companion, caf::hidden>();
  channel->set_gateway(caf::actor_cast<caf::strong_actor_ptr>(gateway));
  static_cast<caf::actor_companion*>(
    caf::actor_cast<caf::abstract_actor*>(gateway))
    ->on_enqueue([channel](caf::mailbox_element_ptr e) {
      if (e)
        channel->handle(*e);
    });
  peer_link result;
  result.gateway = caf::actor_cast<peer_gateway>(gateway);
  result.actor = sys.spawn(link_impl, std::move(settings), std::move(channel),
                           std::move(gateway));
  return result;
}

} // namespace videostreams
