#include "cluster/cluster_node.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "caf/actor_cast.hpp"
#include "caf/actor_system.hpp"
#include "caf/exit_reason.hpp"
#include "caf/send.hpp"
#include "caf/stateful_actor.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "cluster/assignment.hpp"
#include "cluster/cluster_error.hpp"
#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

using steady = std::chrono::steady_clock;
constexpr auto relaxed = std::memory_order_relaxed;

/// How often held commands are checked for their deadline.
constexpr auto check_every = std::chrono::milliseconds{50};

/// Where a shard stands on this node.
enum class shard_mode : std::uint8_t {
  none,        ///< not held here
  taking,      ///< its lease is being taken
  loading,     ///< lease held, state loading
  serving,     ///< decided for here
  handing_off, ///< being given up: drained, committed, released
};

/// A command waiting for its shard to get an owner that can decide.
struct held_command {
  user_command cmd;
  /// Exactly one of the three origins is set: a local caller's slot, a
  /// request (its promise), or another node's link (`reply_to`, `id`).
  std::shared_ptr<reply_slot> slot;
  caf::typed_response_promise<user_reply> promise;
  peer_gateway reply_to;
  std::uint64_t id = 0;
  /// A local command that another node sent back as not its own: the
  /// node that did (on to the next node, the command's second and last
  /// try). From another node: the node that sent it here ("" on a first
  /// try).
  std::string referred_by;
  steady::time_point deadline;
};

struct shard_entry {
  shard_mode mode = shard_mode::none;
  /// The actor deciding for it (loading, serving, handing off).
  shard_actor actor;
  /// Our lease's epoch while we hold it, and when it was last taken or
  /// renewed (monotonic ns, the statement's start).
  std::int64_t epoch = 0;
  std::int64_t renewed_ns = 0;
  /// What we know of its lease: the newest claim heard (from the lease
  /// table or from news): `owner` ("" = released or never taken) at
  /// `owner_epoch`.
  std::string owner;
  std::int64_t owner_epoch = -1;
  bool lease_live = false;
  std::string lease_state = "unowned";
  /// For a released lease: the node it was handed to, which takes it next.
  std::string successor;
  /// A node this one sent a command to said it does not own the shard
  /// (`referred_by`) and named `referred_to` ("" for nobody), at
  /// `referred_at`: newer than what this node knows, until news of the
  /// lease arrives, for two heartbeats at most.
  std::string referred_by;
  std::string referred_to;
  steady::time_point referred_at;
  std::vector<held_command> held;
  /// What the router sends its commands to now.
  user_endpoint route;
};

struct peer_entry {
  member_record member;
  peer_link link;
  bool connected = false;
};

/// Replies gathered for one peer's link.
struct outgoing_replies {
  peer_gateway to;
  std::vector<forwarded_reply> replies;
};

struct node_state {
  cluster_node_settings settings;
  bool in_memory = false;
  std::vector<shard_entry> shards;
  std::vector<std::string> targets;
  std::vector<std::string> candidates;
  std::map<std::string, peer_entry> peers;
  /// Alive members of the last reading (self included).
  std::vector<member_record> members;
  bool read_once = false;
  bool joined = false;
  bool seen_other = false;
  bool leaving = false;
  /// The leave was answered: the last member (it keeps what it serves), or
  /// every shard handed off and the member row gone (no more rounds).
  bool left = false;
  /// This process must not serve any more (see `stop_serving`).
  bool out_of_service = false;
  bool up_reported = false;
  std::optional<caf::typed_response_promise<bool>> leave_promise;
  bool round_in_flight = false;
  bool round_again = false;
  std::uint64_t round_timer = 0;
  std::int64_t last_renew_ns = 0;
  /// Since when (monotonic ns) this node's rounds have reached the
  /// database without a break; none while they fail and before the first.
  std::optional<std::int64_t> reached_since_ns;
  bool take_in_flight = false;
  bool take_again = false;
  /// Shards taken whose state is to be loaded, and whether a load runs: a
  /// load reads the journal after the oldest snapshot of its shards, so
  /// the shards taken while one runs are loaded together by the next.
  shard_epochs to_load;
  bool load_in_flight = false;
  std::map<caf::actor_addr, outgoing_replies> replies;
  std::vector<shard_claim> news;
  /// Shards handed off since the last log line (with the epoch each was
  /// held under), by the node they went to.
  std::map<std::string, std::vector<std::pair<std::uint32_t, std::int64_t>>>
    handed_off;
  bool send_scheduled = false;
  /// The next send tells every peer this node is leaving, news or not.
  bool announce_leaving = false;
  bool check_scheduled = false;
  /// Shard actors that no longer serve (their end is expected); they end
  /// after a grace period, or with the node.
  std::map<caf::actor_addr, shard_actor> retired;
  /// Log lines already written once (errors repeat every round).
  std::string last_round_error;
  /// The other live members as of the last reading, for "joined" and
  /// "left" events.
  std::map<std::string, member_record> known_members;
  static inline const char* name = "cluster_node";
};

using node_pointer = cluster_node_actor::stateful_pointer<node_state>;

const char* mode_name(shard_mode m) {
  switch (m) {
    case shard_mode::none:
      return "unowned";
    case shard_mode::taking:
    case shard_mode::loading:
      return "loading";
    case shard_mode::serving:
      return "serving";
    case shard_mode::handing_off:
      return "handing-off";
  }
  return "unowned";
}

bool holds(const shard_entry& e) {
  return e.mode == shard_mode::loading || e.mode == shard_mode::serving
         || e.mode == shard_mode::handing_off;
}

const std::string& self_id(node_pointer self) {
  return self->state.settings.self.node_id;
}

/// Reports an event of this node (see docs/observability.md).
void note(node_pointer self, log_level level, std::string_view event,
          std::string message, std::vector<log_field> fields = {}) {
  if (auto& log = self->state.settings.log)
    log->write(level, event, std::move(message), std::move(fields));
}

user_endpoint gate_of(node_pointer self) {
  return cluster_node_actor{self};
}

std::uint32_t shard_of_cmd(node_pointer self, const user_command& cmd) {
  return self->state.settings.routes->shard_of_user(cmd.user);
}

std::int64_t now_ns(node_pointer self) {
  return self->state.settings.clock->now().mono_ns;
}

// -- answers to peers and news, batched ---------------------------------------

void schedule_send(node_pointer self) {
  auto& st = self->state;
  if (st.send_scheduled)
    return;
  st.send_scheduled = true;
  self->send(self, send_atom::value);
}

/// An answer to a forwarded command that carries no reply of a user actor.
forwarded_reply reply_without_decision(std::uint64_t id, forward_result result,
                                       std::string owner_hint = {}) {
  forwarded_reply r;
  r.id = id;
  r.result = result;
  r.owner_hint = std::move(owner_hint);
  return r;
}

void reply_to_peer(node_pointer self, const peer_gateway& to,
                   forwarded_reply r) {
  auto& out = self->state.replies[to.address()];
  out.to = to;
  out.replies.push_back(std::move(r));
  schedule_send(self);
}

void tell_peers(node_pointer self, shard_claim claim) {
  self->state.news.push_back(std::move(claim));
  schedule_send(self);
}

/// True while the referral of `e` is fresh.
bool referred(node_pointer self, const shard_entry& e) {
  return !e.referred_by.empty()
         && steady::now() - e.referred_at
              < 2 * self->state.settings.heartbeat_every;
}

/// The node commands for a shard this node does not hold go to, as far as
/// it knows: the lease's owner (unless that node said it is not), else the
/// node a fresh referral named, else the successor its last owner named
/// (if that one `takes_shards`: not leaving too, nor gone), else
/// (`or_target`) the shard's target; "" when none of them is another node.
std::string owner_of(node_pointer self, std::uint32_t shard,
                     bool or_target) {
  auto& st = self->state;
  auto& e = st.shards[shard];
  auto other = [self](const std::string& x) {
    return x == self_id(self) ? std::string{} : x;
  };
  bool fresh = referred(self, e);
  if (!e.owner.empty() && e.owner != self_id(self) && e.lease_live
      && !(fresh && e.referred_by == e.owner))
    return e.owner;
  if (fresh)
    return other(e.referred_to);
  if (e.owner.empty() && !e.successor.empty()
      && takes_shards(st.members, e.successor))
    return other(e.successor);
  if (or_target && !st.targets.empty())
    return other(st.targets[shard]);
  return other(e.owner);
}

/// Where to send a command for `shard` now (see `owner_of`).
std::string best_owner(node_pointer self, std::uint32_t shard) {
  return owner_of(self, shard, true);
}

/// The gateway of the link to `node`, if there is one.
const peer_gateway* link_to(node_pointer self, const std::string& node) {
  auto i = self->state.peers.find(node);
  if (i == self->state.peers.end() || !i->second.link.gateway)
    return nullptr;
  return &i->second.link.gateway;
}

// -- held commands ------------------------------------------------------------

void schedule_check(node_pointer self) {
  auto& st = self->state;
  if (st.check_scheduled)
    return;
  st.check_scheduled = true;
  self->delayed_send(self, check_every, check_atom::value);
}

/// Keeps `x` until its shard has an owner that can decide, at most the
/// request timeout from when it was first held.
void hold(node_pointer self, std::uint32_t shard, held_command x) {
  auto& st = self->state;
  if (x.deadline == steady::time_point{}) {
    // At most the request timeout, and never past the caller's patience.
    x.deadline = steady::now() + st.settings.request_timeout;
    if (x.cmd.answer_by_ns != 0)
      x.deadline = std::min(x.deadline,
                            steady::time_point{
                              std::chrono::nanoseconds{x.cmd.answer_by_ns}});
    st.settings.counters->held.fetch_add(1, relaxed);
    if (x.slot)
      x.slot->defer(); // its answer takes a while: sleep, do not spin
  }
  st.shards[shard].held.push_back(std::move(x));
  schedule_check(self);
}

/// Answers `x` with 503: no owner could decide in time.
void give_up(node_pointer self, held_command& x) {
  if (x.slot)
    x.slot->fulfill(user_reply::unavailable());
  else if (x.reply_to)
    reply_to_peer(self, x.reply_to,
                  reply_without_decision(x.id, forward_result::unavailable));
  else
    x.promise.deliver(make_error(cluster_error::unavailable));
}

/// Has the local shard actor decide `x`.
void decide_here(node_pointer self, const shard_actor& actor,
                 held_command& x) {
  if (x.slot) {
    self->send(actor, local_call{std::move(x.cmd), std::move(x.slot)});
  } else if (x.reply_to) {
    auto to = x.reply_to;
    auto id = x.id;
    self->request(actor, caf::infinite, std::move(x.cmd))
      .then(
        [self, to, id](user_reply& r) {
          reply_to_peer(self, to,
                        forwarded_reply{id, forward_result::served,
                                        std::move(r), {}});
        },
        [self, to, id](caf::error& err) {
          // A shard that started handing off meanwhile passes the
          // command to the gate, which may find the shard is elsewhere.
          auto result = is(err, cluster_error::not_owner)
                          ? forward_result::not_owner
                          : forward_result::unavailable;
          reply_to_peer(self, to,
                        reply_without_decision(id, result, hint_of(err)));
        });
  } else {
    x.promise.delegate(actor, std::move(x.cmd));
  }
}

/// Sends the local command `x` to another node through `link` (as a
/// second try if another node sent it back before).
void forward(node_pointer self, const peer_gateway& link, held_command& x) {
  local_call call{std::move(x.cmd), std::move(x.slot)};
  if (!x.referred_by.empty())
    self->send(link, retry_atom::value, std::move(call),
               std::move(x.referred_by));
  else
    self->send(link, std::move(call));
}

/// Answers a command from another node (or a request) that this node does
/// not own: not here, ask `owner` ("" when it knows nobody). Nodes never
/// forward what another node forwarded, so a command crosses at most one
/// node besides the one it entered at, and the entry node tries once more.
void refer(node_pointer self, const std::string& owner, held_command& x) {
  if (x.reply_to)
    reply_to_peer(self, x.reply_to,
                  reply_without_decision(x.id, forward_result::not_owner, owner));
  else
    x.promise.deliver(make_error(cluster_error::not_owner, owner));
}

/// Routes `x` by what this node knows of `shard` now: decided here, passed
/// on to its owner, or held until one of those is possible.
void dispatch(node_pointer self, std::uint32_t shard, held_command x) {
  auto& st = self->state;
  auto& e = st.shards[shard];
  if (st.out_of_service) {
    give_up(self, x);
    return;
  }
  switch (e.mode) {
    case shard_mode::serving:
      decide_here(self, e.actor, x);
      return;
    case shard_mode::taking:
    case shard_mode::loading:
    case shard_mode::handing_off:
      hold(self, shard, std::move(x));
      return;
    case shard_mode::none:
      break;
  }
  // Not ours. Hold what comes to a shard that is about to be ours: one
  // that targets this node, or whose owner (as far as this node knows)
  // sent the command here itself (it is handing the shard to this node,
  // whose news of it may still be on its way). Send the rest where it
  // belongs, if that node can be reached.
  bool incoming = !st.leaving && !st.targets.empty()
                  && st.targets[shard] == self_id(self);
  bool vouched = !st.leaving && !x.slot && !x.referred_by.empty()
                 && (x.referred_by == e.owner || e.owner.empty());
  if (incoming || vouched) {
    hold(self, shard, std::move(x));
    return;
  }
  auto owner = best_owner(self, shard);
  if (!x.slot) {
    // Another node (or a request) asked: say who should know, if anyone.
    refer(self, owner, x);
    return;
  }
  if (!owner.empty()) {
    if (auto link = link_to(self, owner)) {
      forward(self, *link, x);
      return;
    }
  }
  hold(self, shard, std::move(x));
}

/// Tries the commands held for `shard` again, in order (its owner changed).
/// What still cannot go anywhere is held again, with its first deadline.
void release_held(node_pointer self, std::uint32_t shard) {
  auto held = std::move(self->state.shards[shard].held);
  self->state.shards[shard].held.clear();
  for (auto& x : held)
    dispatch(self, shard, std::move(x));
}

/// Answers the held commands whose deadline passed.
void check_held(node_pointer self) {
  auto& st = self->state;
  st.check_scheduled = false;
  auto now = steady::now();
  bool any = false;
  for (auto& e : st.shards) {
    if (e.held.empty())
      continue;
    auto keep = std::stable_partition(e.held.begin(), e.held.end(),
                                      [now](const held_command& x) {
                                        return x.deadline > now;
                                      });
    for (auto i = keep; i != e.held.end(); ++i) {
      st.settings.counters->held_timeouts.fetch_add(1, relaxed);
      give_up(self, *i);
    }
    e.held.erase(keep, e.held.end());
    any = any || !e.held.empty();
  }
  if (any)
    schedule_check(self);
}

// -- routes, deadlines, the view ----------------------------------------------

void update_route(node_pointer self, std::uint32_t shard) {
  auto& st = self->state;
  auto& e = st.shards[shard];
  user_endpoint to = gate_of(self);
  if (e.mode == shard_mode::serving) {
    to = e.actor;
  } else if (e.mode == shard_mode::none && !st.out_of_service) {
    auto owner = owner_of(self, shard, false);
    if (!owner.empty())
      if (auto link = link_to(self, owner))
        to = *link;
  }
  if (to == e.route)
    return;
  e.route = to;
  st.settings.routes->set_route(shard, std::move(to));
}

/// Updates every shard's route, after members' statuses changed: a route
/// that named a member now leaving as a shard's successor (straight to its
/// link) goes through this node instead, which sends its commands on to
/// the shard's target or holds them until the shard has an owner.
void update_routes(node_pointer self) {
  for (std::uint32_t s = 0; s < self->state.shards.size(); ++s)
    update_route(self, s);
}

void set_deadline(node_pointer self, std::uint32_t shard) {
  auto& st = self->state;
  auto& e = st.shards[shard];
  if (st.in_memory) {
    st.settings.deadlines->set(shard, shard_deadlines::forever);
    return;
  }
  if (!holds(e)) {
    st.settings.deadlines->set(shard, 0);
    return;
  }
  st.settings.deadlines->set(
    shard,
    decision_deadline(e.renewed_ns, st.settings.self.lease_ttl,
                      !st.seen_other),
    e.epoch);
}

void publish_view(node_pointer self) {
  auto& st = self->state;
  auto view = std::make_shared<cluster_view>();
  view->node_id = self_id(self);
  view->shard_count = st.settings.shard_count;
  std::map<std::string, std::uint32_t> owned;
  for (std::uint32_t s = 0; s < st.shards.size(); ++s) {
    auto& e = st.shards[s];
    shard_view x;
    x.shard = s;
    if (e.mode != shard_mode::none) {
      x.owner = e.mode == shard_mode::taking ? std::string{} : self_id(self);
      x.epoch = e.mode == shard_mode::taking ? e.owner_epoch : e.epoch;
      x.state = mode_name(e.mode);
      if (e.mode == shard_mode::taking) {
        x.owner = e.lease_live ? e.owner : std::string{};
        x.epoch = std::max<std::int64_t>(e.owner_epoch, 0);
        x.state = "unowned";
      }
    } else if (!e.owner.empty() && e.lease_live) {
      x.owner = e.owner;
      x.epoch = e.owner_epoch;
      x.state = e.lease_state;
    } else {
      x.epoch = std::max<std::int64_t>(e.owner_epoch, 0);
      x.state = "unowned";
    }
    if (!x.owner.empty())
      ++owned[x.owner];
    view->shards.push_back(std::move(x));
  }
  if (st.in_memory) {
    member_view me;
    me.node_id = self_id(self);
    me.advertise_host = st.settings.self.advertise_host;
    me.http_port = st.settings.self.http_port;
    me.cluster_port = st.settings.self.cluster_port;
    me.status = "up";
    me.shards = owned[self_id(self)];
    me.last_heartbeat = rfc3339(wall_now_ns() / 1'000'000);
    view->members.push_back(std::move(me));
  } else {
    for (auto& m : st.members) {
      member_view x;
      x.node_id = m.node_id;
      x.advertise_host = m.advertise_host;
      x.http_port = m.http_port;
      x.cluster_port = m.cluster_port;
      x.status = m.node_id == self_id(self) ? st.settings.self.status
                                            : m.status;
      x.shards = owned[m.node_id];
      x.last_heartbeat = m.last_heartbeat;
      view->members.push_back(std::move(x));
    }
  }
  st.settings.view->set(std::move(view));
}

// -- shard lifecycle ----------------------------------------------------------

shard_actor start_shard_actor(node_pointer self, std::uint32_t shard) {
  auto actor = self->state.settings.spawn_shard(
    shard, self->state.shards[shard].epoch);
  self->monitor(actor);
  return actor;
}

/// Takes a shard actor out of service: it passes whatever still reaches it
/// to the gate (no user actor decides any more), then ends after a grace
/// period long enough for every command on its way to it.
void retire(node_pointer self, shard_actor& actor) {
  if (!actor)
    return;
  auto& st = self->state;
  st.retired.emplace(actor.address(), actor);
  self->request(actor, caf::infinite, handoff_atom::value, gate_of(self))
    .then([](std::uint64_t) {}, [](caf::error&) {});
  self->delayed_send(self, 2 * st.settings.request_timeout, retire_atom::value,
                     actor);
  actor = nullptr;
}

void count_owned(node_pointer self) {
  auto& st = self->state;
  std::int64_t n = 0;
  for (auto& e : st.shards)
    n += e.mode == shard_mode::serving ? 1 : 0;
  st.settings.counters->shards_owned.store(n, relaxed);
}

/// Stops serving `shard` at once: another node owns it now (or this node
/// may not decide for it any more). Nothing of it is written any more.
/// `event` is "shard_fenced" when it is lost to another owner, else
/// "shard_dropped".
void drop(node_pointer self, std::uint32_t shard, const char* why,
          std::string_view event = "shard_dropped") {
  auto& st = self->state;
  auto& e = st.shards[shard];
  if (e.mode == shard_mode::none || e.mode == shard_mode::taking)
    return;
  bool was_serving = e.mode == shard_mode::serving
                     || e.mode == shard_mode::handing_off;
  e.mode = shard_mode::none;
  st.to_load.erase(shard);
  set_deadline(self, shard);
  retire(self, e.actor);
  if (st.settings.persistence)
    caf::anon_send(st.settings.persistence, disown_atom::value,
               std::vector<std::uint32_t>{shard});
  if (was_serving) {
    st.settings.counters->shards_lost.fetch_add(1, relaxed);
    std::vector<log_field> fields{{"shard", shard},
                                  {"epoch", e.epoch},
                                  {"reason", why}};
    if (!e.owner.empty() && e.owner != self_id(self))
      fields.emplace_back("owner", e.owner);
    note(self, log_level::warn, event,
         "shard " + std::to_string(shard) + " dropped: " + why,
         std::move(fields));
  }
  count_owned(self);
  update_route(self, shard);
  release_held(self, shard);
}

void become_serving(node_pointer self, std::uint32_t shard) {
  auto& st = self->state;
  auto& e = st.shards[shard];
  e.mode = shard_mode::serving;
  st.settings.counters->takeovers.fetch_add(1, relaxed);
  count_owned(self);
  update_route(self, shard);
  release_held(self, shard);
  tell_peers(self, shard_claim{shard, e.epoch, self_id(self), {}});
}

void plan(node_pointer self);

/// "3 shards (0, 5, 9)".
std::string shard_list_text(const std::vector<std::uint32_t>& shards) {
  std::string out = std::to_string(shards.size())
                    + (shards.size() == 1 ? " shard (" : " shards (");
  for (std::size_t i = 0; i < shards.size(); ++i)
    out += (i == 0 ? "" : ", ") + std::to_string(shards[i]);
  return out + ")";
}

void load_next(node_pointer self);

/// Loads the state of the shards just taken (`epochs`) and serves them.
void load(node_pointer self, shard_epochs epochs) {
  auto& st = self->state;
  st.load_in_flight = true;
  std::vector<std::uint32_t> shards;
  for (auto& [s, epoch] : epochs)
    shards.push_back(s);
  self->request(st.settings.loader, caf::infinite, load_atom::value, shards)
    .then(
      [self, epochs](loaded_shards& loaded) {
        auto& st = self->state;
        st.load_in_flight = false;
        auto now = st.settings.clock->now();
        for (auto& [shard, committed] : loaded.state->shards) {
          // A copy: lambdas cannot capture a structured binding before
          // C++20 (clang rejects it; the fuzz tree builds with clang).
          auto s = shard;
          auto i = epochs.find(s);
          auto& e = st.shards[s];
          if (i == epochs.end() || e.mode != shard_mode::loading
              || e.epoch != i->second)
            continue; // dropped meanwhile
          auto epoch = e.epoch;
          auto actor = e.actor;
          auto records = user_records(committed, now,
                                      st.settings.legacy_stream_ttl_seconds);
          auto state = std::make_shared<committed_shard>(std::move(committed));
          // The writer must know the epoch before the first change of the
          // shard reaches it, so the adoption goes out before any record:
          // a record may hold a startstream stream whose lease has already
          // run out, which the shard's next sweep closes, loading or not,
          // and that close must not reach the writer first (it would be
          // dropped, left in the database). The shard must hold every record
          // before it decides (the restore request below comes after them).
          auto adopted
            = self->request(st.settings.persistence, caf::infinite,
                            adopt_atom::value,
                            adopted_shard{s, epoch, std::move(state),
                                          loaded.state->position});
          for (auto& [user, record] : records)
            self->send(actor, restore_atom::value, user, std::move(record));
          adopted.then(
            [self, s, epoch, actor](bool) {
              self->request(actor, caf::infinite, restore_atom::value)
                .then(
                  [self, s, epoch](std::uint64_t) {
                    auto& e = self->state.shards[s];
                    if (e.mode == shard_mode::loading && e.epoch == epoch) {
                      become_serving(self, s);
                      plan(self);
                      publish_view(self);
                    }
                  },
                  [self, s](caf::error&) {
                    drop(self, s, "its new actor failed while loading");
                  });
            },
            [self, s](caf::error&) {
              drop(self, s, "the persistence actor refused it");
            });
        }
        load_next(self);
      },
      [self, epochs](caf::error& err) {
        self->state.load_in_flight = false;
        // Keep the leases; the next round takes them again (they are this
        // node's) and loads afresh.
        std::vector<std::uint32_t> shards;
        for (auto& [s, epoch] : epochs)
          shards.push_back(s);
        note(self, log_level::warn, "shard_load_failed",
             "cannot load shards: " + describe(err),
             {{"shards", shards}, {"reason", describe(err)}});
        for (auto& [s, epoch] : epochs) {
          auto& e = self->state.shards[s];
          if (e.mode == shard_mode::loading && e.epoch == epoch) {
            e.mode = shard_mode::none;
            set_deadline(self, s);
            retire(self, e.actor);
            update_route(self, s);
          }
        }
        load_next(self);
      });
}

/// Loads what was taken while the last load ran, if anything.
void load_next(node_pointer self) {
  auto& st = self->state;
  if (st.load_in_flight || st.to_load.empty())
    return;
  auto next = std::move(st.to_load);
  st.to_load.clear();
  load(self, std::move(next));
}

void take(node_pointer self, const std::vector<std::uint32_t>& shards) {
  auto& st = self->state;
  if (st.take_in_flight) {
    st.take_again = true;
    return;
  }
  st.take_in_flight = true;
  for (auto s : shards) {
    st.shards[s].mode = shard_mode::taking;
    update_route(self, s);
  }
  self
    ->request(st.settings.keeper, caf::infinite, take_atom::value,
              st.settings.self, shards)
    .then([self, shards](take_result& result) {
      auto& st = self->state;
      st.take_in_flight = false;
      if (result.error)
        note(self, log_level::warn, "shard_take_failed",
             "cannot take shards: " + describe(result.error),
             {{"reason", describe(result.error)}});
      shard_epochs loading;
      for (auto s : shards) {
        auto& e = st.shards[s];
        if (e.mode != shard_mode::taking)
          continue;
        auto i = result.taken.find(s);
        if (i == result.taken.end()) {
          e.mode = shard_mode::none; // another node was faster
          update_route(self, s);
          release_held(self, s);
          continue;
        }
        e.mode = shard_mode::loading;
        e.epoch = i->second;
        e.renewed_ns = result.started_ns;
        e.owner = self_id(self);
        e.owner_epoch = e.epoch;
        e.lease_live = true;
        e.lease_state = "loading";
        e.actor = start_shard_actor(self, s);
        set_deadline(self, s);
        loading.emplace(s, e.epoch);
      }
      if (!loading.empty()) {
        std::vector<std::uint32_t> taken;
        std::vector<std::int64_t> epochs;
        for (auto& [s, epoch] : loading) {
          taken.push_back(s);
          epochs.push_back(epoch);
        }
        note(self, log_level::info, "shard_taken",
             "took " + shard_list_text(taken),
             {{"shards", taken}, {"epochs", epochs}});
        for (auto& [shard, epoch] : loading)
          st.to_load[shard] = epoch;
        load_next(self);
      }
      if (st.take_again) {
        st.take_again = false;
        plan(self);
      }
    },
    [self, shards](caf::error& err) {
      auto& st = self->state;
      st.take_in_flight = false;
      note(self, log_level::error, "lease_keeper_failed",
           "the lease keeper failed: " + describe(err),
           {{"reason", describe(err)}});
      for (auto s : shards) {
        auto& e = st.shards[s];
        if (e.mode == shard_mode::taking) {
          e.mode = shard_mode::none;
          update_route(self, s);
          release_held(self, s);
        }
      }
    });
}

/// Puts a shard whose hand-off failed back into service.
void resume(node_pointer self, std::uint32_t shard, std::int64_t epoch) {
  auto& e = self->state.shards[shard];
  if (e.mode != shard_mode::handing_off || e.epoch != epoch || !e.actor)
    return; // given up meanwhile, or its actor failed (dropped soon)
  e.mode = shard_mode::serving;
  self->send(e.actor, resume_atom::value);
  update_route(self, shard);
  release_held(self, shard);
}

void finish_hand_off(node_pointer self, std::uint32_t shard,
                     std::int64_t epoch, std::string to) {
  auto& st = self->state;
  auto& e = st.shards[shard];
  if (!to.empty() && !takes_shards(st.members, to)) {
    // It began to leave, or even left, while the shard was handed to it
    // (two nodes stopped at once): name the shard's target now instead,
    // which takes it at once, rather than one that will not.
    to = st.targets.empty() ? std::string{} : st.targets[shard];
    if (to == self_id(self) || !takes_shards(st.members, to))
      to.clear();
  }
  e.mode = shard_mode::none;
  set_deadline(self, shard);
  retire(self, e.actor);
  caf::anon_send(st.settings.persistence, disown_atom::value,
             std::vector<std::uint32_t>{shard});
  e.owner.clear();
  e.owner_epoch = epoch;
  e.lease_live = false;
  e.lease_state = "unowned";
  e.successor = to;
  st.settings.counters->handoffs.fetch_add(1, relaxed);
  count_owned(self);
  tell_peers(self, shard_claim{shard, epoch, {}, to});
  st.handed_off[to].emplace_back(shard, epoch);
  update_route(self, shard);
  release_held(self, shard);
}

/// Gives `shard` up to `to` (or to nobody, when ""): it stops deciding and
/// passes its commands to the gate, its users are passivated, everything
/// they changed is committed, its lease is released, and every node hears
/// of it (the target takes it at once). If draining or committing fails the
/// shard is served again, and the next round tries anew; if the release
/// fails, it is dropped (the release may have landed).
void hand_off(node_pointer self, std::uint32_t shard, std::string to) {
  auto& st = self->state;
  auto& e = st.shards[shard];
  e.mode = shard_mode::handing_off;
  update_route(self, shard);
  auto epoch = e.epoch;
  self->request(e.actor, caf::infinite, handoff_atom::value, gate_of(self))
    .then(
      [self, shard, epoch, to](std::uint64_t) {
        auto& st = self->state;
        if (st.shards[shard].mode != shard_mode::handing_off
            || st.shards[shard].epoch != epoch)
          return;
        self->request(st.settings.persistence, caf::infinite, sync_atom::value)
          .then(
            [self, shard, epoch, to](bool) {
              auto& st = self->state;
              if (st.shards[shard].mode != shard_mode::handing_off
                  || st.shards[shard].epoch != epoch)
                return;
              self
                ->request(st.settings.keeper, caf::infinite,
                          release_atom::value, st.settings.self,
                          shard_epochs{{shard, epoch}})
                .then(
                  [self, shard, epoch, to](std::vector<std::uint32_t>& done) {
                    auto& e = self->state.shards[shard];
                    if (e.mode != shard_mode::handing_off || e.epoch != epoch)
                      return;
                    if (done.empty())
                      drop(self, shard, "its lease was taken meanwhile",
                           "shard_fenced");
                    else
                      finish_hand_off(self, shard, epoch, to);
                    plan(self);
                  },
                  [self, shard, epoch](caf::error& err) {
                    // The release may have committed all the same (the
                    // answer lost with the connection): then another node
                    // may take the shard, so this one must not decide for
                    // it again. If it did not, the lease runs out.
                    note(self, log_level::warn, "shard_release_failed",
                         "cannot release shard " + std::to_string(shard)
                           + ": " + describe(err),
                         {{"shard", shard},
                          {"epoch", epoch},
                          {"reason", describe(err)}});
                    auto& e = self->state.shards[shard];
                    if (e.mode == shard_mode::handing_off && e.epoch == epoch)
                      drop(self, shard, "its release failed");
                  });
            },
            [self, shard, epoch](caf::error& err) {
              note(self, log_level::warn, "shard_handoff_failed",
                   "cannot hand off shard " + std::to_string(shard)
                     + ", its changes are not committed: " + describe(err),
                   {{"shard", shard},
                    {"epoch", epoch},
                    {"reason", describe(err)}});
              resume(self, shard, epoch);
            });
      },
      [self, shard, epoch](caf::error&) { resume(self, shard, epoch); });
}

// -- membership and planning --------------------------------------------------

/// Answers the leave once no shard is held here any more (or at once when
/// `last`: the last member keeps serving until the process ends).
void finish_leave(node_pointer self, bool last = false) {
  auto& st = self->state;
  if (!st.leave_promise)
    return;
  if (!last)
    for (auto& e : st.shards)
      if (e.mode != shard_mode::none)
        return;
  auto rp = std::move(*st.leave_promise);
  st.leave_promise.reset();
  st.left = true;
  if (st.in_memory || !st.settings.keeper) {
    rp.deliver(true);
    return;
  }
  self
    ->request(st.settings.keeper, caf::infinite, leave_atom::value,
              st.settings.self)
    .then([rp](bool) mutable { rp.deliver(true); },
          [rp](caf::error&) mutable { rp.deliver(true); });
}

void plan(node_pointer self) {
  auto& st = self->state;
  if (st.in_memory || st.out_of_service || !st.read_once || st.left)
    return;
  plan_input in;
  in.self = self_id(self);
  in.leaving = st.leaving;
  in.targets = st.targets;
  for (auto& e : st.shards) {
    switch (e.mode) {
      case shard_mode::none:
        in.roles.push_back(shard_role::none);
        break;
      case shard_mode::taking:
      case shard_mode::loading:
        in.roles.push_back(shard_role::arriving);
        break;
      case shard_mode::serving:
        in.roles.push_back(shard_role::serving);
        break;
      case shard_mode::handing_off:
        in.roles.push_back(shard_role::leaving);
        break;
    }
    in.owners.push_back(e.owner);
    in.live.push_back(e.lease_live);
  }
  in.reachable = [self](const std::string& node) {
    auto i = self->state.peers.find(node);
    return i != self->state.peers.end() && i->second.connected;
  };
  // After an outage, or when this node starts as one ends, every member
  // row and lease may have expired by the database's clock while the other
  // nodes are alive and about to renew: taking their shards would fence the
  // changes they could not write meanwhile (closes they acknowledged). So
  // another node's expired lease is taken only once this node has reached
  // the database for a lease TTL; a dead node's shards wait that long.
  in.take_expired
    = st.reached_since_ns
      && now_ns(self) - *st.reached_since_ns
           >= std::chrono::nanoseconds{st.settings.self.lease_ttl}.count();
  auto p = plan_shards(in);
  if (!p.take.empty())
    take(self, p.take);
  for (auto& [shard, to] : p.hand_off)
    hand_off(self, shard, to);
  auto status = st.leaving ? "leaving" : p.share_served ? "up" : "joining";
  st.settings.self.status = status;
  if (!st.leaving && p.share_served && !st.up_reported) {
    st.up_reported = true; // the service logs "ready"
    if (st.settings.on_up)
      st.settings.on_up();
  }
  if (st.leaving)
    finish_leave(self);
}

/// Takes in what a node heard of a shard's lease, if it is newer than what
/// it knew. A lease of this node's shard under a higher epoch and another
/// owner means the shard was taken over: it is dropped.
void learn(node_pointer self, const shard_claim& claim, bool live,
           const std::string& lease_state) {
  auto& st = self->state;
  if (claim.shard >= st.shards.size())
    return;
  auto& e = st.shards[claim.shard];
  bool released = claim.owner.empty();
  bool was_released = e.owner.empty();
  if (claim.epoch < e.owner_epoch
      || (claim.epoch == e.owner_epoch && !released && was_released
          && e.owner_epoch >= 0))
    return; // older than what is known
  if (claim.epoch == e.owner_epoch && claim.owner == e.owner
      && e.lease_live == live && e.lease_state == lease_state)
    return; // nothing new
  if (!claim.owner.empty()
      && (claim.epoch > e.owner_epoch || claim.owner != e.owner)) {
    // An owner this node did not know: newer than any referral. (A release
    // is not: the referral names where the shard went.)
    e.referred_by.clear();
    e.referred_to.clear();
  }
  if (claim.epoch != e.owner_epoch || !claim.successor.empty())
    e.successor = claim.successor;
  e.owner = claim.owner;
  e.owner_epoch = claim.epoch;
  e.lease_live = live;
  e.lease_state = lease_state;
  if (holds(e) && claim.epoch > e.epoch)
    drop(self, claim.shard, "another node took it over",
         "shard_fenced"); // re-routes
  else if (e.mode == shard_mode::none) {
    update_route(self, claim.shard);
    release_held(self, claim.shard);
  }
}

void recompute_targets(node_pointer self) {
  auto& st = self->state;
  std::vector<std::string> candidates;
  for (auto& m : st.members)
    if (m.node_id != self_id(self) && m.status != "leaving")
      candidates.push_back(m.node_id);
  if (!st.leaving && !st.out_of_service)
    candidates.push_back(self_id(self));
  std::sort(candidates.begin(), candidates.end());
  if (candidates == st.candidates && !st.targets.empty())
    return;
  st.candidates = std::move(candidates);
  st.targets = assign(st.settings.shard_count, st.candidates);
}

/// How long a link to a member that died is kept: while the dead node's
/// leases run out, its shards' commands must find a link that answers 503
/// at once, not a route that swallows them.
constexpr std::int64_t keep_dead_links_ms = 60000;

/// Keeps a link to every other member of `table` (the member table as last
/// read, dead members included), a new one when a member restarted or
/// moved; drops the links of members gone from it or long dead, and
/// re-points the routes when any link changed.
void update_peers(node_pointer self, const std::vector<member_record>& table) {
  auto& st = self->state;
  std::set<std::string> present;
  bool changed = false;
  for (auto& m : table) {
    if (m.node_id == self_id(self)
        || (!m.alive && m.expires_in_ms < -keep_dead_links_ms))
      continue;
    present.insert(m.node_id);
    auto& p = st.peers[m.node_id];
    bool moved = p.link.actor
                 && (p.member.incarnation != m.incarnation
                     || p.member.advertise_host != m.advertise_host
                     || p.member.cluster_port != m.cluster_port);
    if (moved) {
      // Restarted, or somewhere else now: a new link to the new process.
      self->send_exit(p.link.actor, caf::exit_reason::user_shutdown);
      p.link = {};
      p.connected = false;
    }
    p.member = m;
    if (!p.link.actor) {
      peer_link_settings ls;
      ls.node_id = m.node_id;
      ls.host = m.advertise_host;
      ls.port = static_cast<std::uint16_t>(m.cluster_port);
      ls.request_timeout = st.settings.request_timeout;
      ls.owner = cluster_node_actor{self};
      ls.middleman = st.settings.middleman;
      ls.counters = st.settings.counters->peer(m.node_id);
      p.link = spawn_peer_link(self->system(), std::move(ls));
      changed = true;
    }
  }
  for (auto i = st.peers.begin(); i != st.peers.end();) {
    if (present.count(i->first) == 0) {
      if (i->second.link.actor)
        self->send_exit(i->second.link.actor, caf::exit_reason::user_shutdown);
      st.settings.counters->forget_peer(i->first);
      i = st.peers.erase(i);
      changed = true;
    } else {
      ++i;
    }
  }
  if (changed)
    for (std::uint32_t s = 0; s < st.shards.size(); ++s)
      update_route(self, s);
}

/// Logs the members that joined (alive and new to this node, or back under
/// a new incarnation) and those that left (gone from the member table, or
/// their heartbeat expired) since the last reading of `table`. At the
/// first reading, every other live member counts as joined.
void note_member_changes(node_pointer self,
                         const std::vector<member_record>& table) {
  auto& st = self->state;
  std::map<std::string, member_record> now;
  for (auto& m : table)
    if (m.alive && m.node_id != self_id(self))
      now.emplace(m.node_id, m);
  for (auto& [id, before] : st.known_members) {
    auto i = now.find(id);
    bool restarted = i != now.end()
                     && i->second.incarnation != before.incarnation;
    if (i != now.end() && !restarted)
      continue;
    std::string why;
    if (restarted) {
      why = "it restarted";
    } else {
      auto row = std::find_if(table.begin(), table.end(),
                              [&id = id](const member_record& m) {
                                return m.node_id == id;
                              });
      why = row == table.end() ? "it left the member table"
                               : "its heartbeat expired";
    }
    note(self, log_level::info, "member_left",
         "member " + id + " left: " + why, {{"peer", id}, {"reason", why}});
  }
  for (auto& [id, m] : now) {
    auto i = st.known_members.find(id);
    if (i != st.known_members.end() && i->second.incarnation == m.incarnation)
      continue;
    note(self, log_level::info, "member_joined",
         "member " + id + " joined, at "
           + host_port(m.advertise_host, m.cluster_port),
         {{"peer", id},
          {"host", m.advertise_host},
          {"cluster_port", m.cluster_port},
          {"http_port", m.http_port},
          {"status", m.status}});
  }
  st.known_members = std::move(now);
}

/// Stops serving for good: every shard dropped, every command answered
/// 503, no more rounds. For a process that must not be a member any more.
void stop_serving(node_pointer self, const std::string& why) {
  auto& st = self->state;
  if (st.out_of_service)
    return;
  st.out_of_service = true;
  note(self, log_level::error, "out_of_service",
       why + "; this process stops serving", {{"reason", why}});
  for (std::uint32_t s = 0; s < st.shards.size(); ++s)
    drop(self, s, "this process stops serving");
  for (std::uint32_t s = 0; s < st.shards.size(); ++s) {
    update_route(self, s);
    release_held(self, s);
  }
  if (st.settings.on_out_of_service)
    st.settings.on_out_of_service(why);
  if (st.leave_promise) {
    st.leave_promise->deliver(true);
    st.leave_promise.reset();
  }
}

void start_round(node_pointer self);

void schedule_round(node_pointer self, std::chrono::milliseconds delay) {
  auto& st = self->state;
  self->delayed_send(self, delay, tick_atom_round::value, ++st.round_timer);
}

/// When the next round is due: a heartbeat period from now, or sooner when
/// a lease or member of a node this one cannot reach is about to expire
/// (so that its shards are taken over as soon as they may be).
std::chrono::milliseconds next_round_in(node_pointer self,
                                        const cluster_reading& reading) {
  auto& st = self->state;
  auto delay = std::min(st.settings.heartbeat_every,
                        st.settings.self.lease_ttl / 3);
  std::set<std::string> suspects;
  for (auto& [id, p] : st.peers)
    if (!p.connected)
      suspects.insert(id);
  auto sooner = [&delay](std::int64_t ms) {
    if (ms >= 0)
      delay = std::min(delay, std::chrono::milliseconds{ms + 10});
  };
  for (auto& m : reading.members)
    if (suspects.count(m.node_id) > 0 && m.alive)
      sooner(m.expires_in_ms);
  for (auto& l : reading.leases)
    if (suspects.count(l.owner) > 0 && l.live)
      sooner(l.expires_in_ms);
  return std::max(delay, std::chrono::milliseconds{10});
}

void on_round(node_pointer self, round_result& result,
              const std::vector<held_lease>& renewing) {
  auto& st = self->state;
  st.round_in_flight = false;
  if (result.superseded) {
    stop_serving(self, "a newer process took over node id " + self_id(self));
    return;
  }
  if (!result.read_error && result.reading.shard_count != 0
      && result.reading.shard_count != st.settings.shard_count) {
    // A reshard committed between this process's start and its join.
    stop_serving(self,
                 "the cluster has " + std::to_string(result.reading.shard_count)
                   + " shards now, this process "
                   + std::to_string(st.settings.shard_count)
                   + "; restart it with --shards="
                   + std::to_string(result.reading.shard_count));
    return;
  }
  std::string problem;
  if (result.heartbeat_error) {
    problem = "heartbeat failed: " + describe(result.heartbeat_error);
  } else {
    st.joined = true;
  }
  if (result.renewal_ran) {
    st.last_renew_ns = result.renew_started_ns;
    std::set<std::uint32_t> renewed(result.renewed.begin(),
                                    result.renewed.end());
    for (auto& h : renewing) {
      auto& e = st.shards[h.shard];
      if (!holds(e) || e.epoch != h.epoch)
        continue; // given up meanwhile
      if (renewed.count(h.shard) > 0) {
        e.renewed_ns = result.renew_started_ns;
        set_deadline(self, h.shard);
      } else {
        drop(self, h.shard, "its lease was taken over", "shard_fenced");
      }
    }
  } else if (!renewing.empty()) {
    st.settings.counters->renewal_failures.fetch_add(1, relaxed);
    problem = "lease renewal failed: " + describe(result.renew_error);
  }
  if (result.read_error)
    problem = "reading the cluster failed: " + describe(result.read_error);
  // Before planning: whether this node may take expired leases.
  if (!problem.empty())
    st.reached_since_ns.reset();
  else if (!st.reached_since_ns)
    st.reached_since_ns = now_ns(self);
  if (!result.read_error) {
    st.read_once = true;
    // A member that said it is leaving stays so, though the table (read
    // before its own row said so) may not show it yet: a leaving node
    // never comes back under the same incarnation.
    std::set<std::pair<std::string, std::uint64_t>> said_leaving;
    for (auto& m : st.members)
      if (m.status == "leaving")
        said_leaving.emplace(m.node_id, m.incarnation);
    st.members.clear();
    bool other = false;
    for (auto& m : result.reading.members) {
      if (!m.alive)
        continue;
      other = other || m.node_id != self_id(self);
      st.members.push_back(m);
      if (said_leaving.count({m.node_id, m.incarnation}) != 0)
        st.members.back().status = "leaving";
    }
    if (other && !st.seen_other) {
      // From now on a lease that is not renewed stops this node deciding.
      st.seen_other = true;
      for (std::uint32_t s = 0; s < st.shards.size(); ++s)
        set_deadline(self, s);
    }
    st.settings.counters->members.store(
      static_cast<std::int64_t>(std::max<std::size_t>(st.members.size(), 1)),
      relaxed);
    note_member_changes(self, result.reading.members);
    update_peers(self, result.reading.members);
    recompute_targets(self);
    update_routes(self);
    for (auto& l : result.reading.leases)
      learn(self, shard_claim{l.shard, l.epoch, l.owner, {}}, l.live,
            l.state);
    plan(self);
  }
  if (!problem.empty() && problem != st.last_round_error)
    note(self, log_level::warn, "cluster_round_failed", problem,
         {{"reason", problem}});
  else if (problem.empty() && !st.last_round_error.empty())
    note(self, log_level::info, "cluster_round_recovered",
         "heartbeats, renewals and reads succeed again; for a lease TTL "
         "this node takes no other node's expired lease");
  st.last_round_error = problem;
  publish_view(self);
  if (st.round_again) {
    st.round_again = false;
    start_round(self);
    return;
  }
  schedule_round(self, next_round_in(self, result.reading));
}

void start_round(node_pointer self) {
  auto& st = self->state;
  if (st.out_of_service || st.left)
    return; // a heartbeat now would put the member row back
  if (st.round_in_flight) {
    st.round_again = true;
    return;
  }
  st.round_in_flight = true;
  round_request req;
  req.self = st.settings.self;
  req.join = !st.joined;
  req.shard_count = st.settings.shard_count;
  auto renew_every = st.settings.self.lease_ttl / 3;
  auto since = std::chrono::nanoseconds{now_ns(self) - st.last_renew_ns};
  if (since >= renew_every - std::chrono::milliseconds{50}) {
    for (std::uint32_t s = 0; s < st.shards.size(); ++s) {
      auto& e = st.shards[s];
      if (holds(e))
        req.renew.push_back(held_lease{s, e.epoch, mode_name(e.mode)});
    }
  }
  auto renewing = req.renew;
  self->request(st.settings.keeper, caf::infinite, round_atom::value,
                std::move(req))
    .then(
      [self, renewing](round_result& result) {
        on_round(self, result, renewing);
      },
      [self](caf::error& err) {
        auto& st = self->state;
        st.round_in_flight = false;
        note(self, log_level::error, "lease_keeper_failed",
             "the lease keeper failed: " + describe(err),
             {{"reason", describe(err)}});
        schedule_round(self, st.settings.heartbeat_every);
      });
}

// -- the actor ----------------------------------------------------------------

void serve_everything_in_memory(node_pointer self) {
  auto& st = self->state;
  for (std::uint32_t s = 0; s < st.shards.size(); ++s) {
    auto& e = st.shards[s];
    e.mode = shard_mode::serving;
    e.epoch = 0;
    e.owner = self_id(self);
    e.owner_epoch = 0;
    e.lease_live = true;
    e.lease_state = "serving";
    e.actor = start_shard_actor(self, s);
    set_deadline(self, s);
    update_route(self, s);
  }
  count_owned(self);
  st.settings.self.status = "up";
  st.up_reported = true;
  publish_view(self);
  if (st.settings.on_up)
    st.settings.on_up();
}

/// A shard actor ended that was not retired: it failed. Its users' state
/// is in the database (with one) or lost (without); either way the shard
/// is served again by a fresh actor.
void on_shard_down(node_pointer self, const caf::down_msg& msg) {
  auto& st = self->state;
  if (st.retired.erase(msg.source) > 0)
    return;
  for (std::uint32_t s = 0; s < st.shards.size(); ++s) {
    auto& e = st.shards[s];
    if (!e.actor || e.actor.address() != msg.source)
      continue;
    auto reason = self->system().render(msg.reason);
    note(self, log_level::error, "shard_actor_failed",
         "the actor of shard " + std::to_string(s) + " failed: " + reason
           + (st.in_memory ? "; it serves again, without the streams it held"
                           : "; it is loaded again"),
         {{"shard", s}, {"reason", reason}});
    if (st.in_memory) {
      e.actor = start_shard_actor(self, s);
      update_route(self, s);
      return;
    }
    // Commit what its users changed, then load it afresh: the next round
    // takes the lease again (it is this node's) under a new epoch. Its
    // commands wait at the gate meanwhile.
    e.actor = nullptr;
    e.mode = shard_mode::handing_off;
    count_owned(self);
    update_route(self, s);
    auto epoch = e.epoch;
    self->request(st.settings.persistence, caf::infinite, sync_atom::value)
      .then([self, s, epoch](bool) {
        auto& e = self->state.shards[s];
        if (holds(e) && e.epoch == epoch)
          drop(self, s, "its actor failed; it is loaded again");
      },
      [self, s, epoch](caf::error&) {
        auto& e = self->state.shards[s];
        if (holds(e) && e.epoch == epoch)
          drop(self, s, "its actor failed; it is loaded again");
      });
    return;
  }
}

cluster_node_actor::behavior_type node_impl(node_pointer self,
                                            cluster_node_settings settings) {
  auto& st = self->state;
  st.settings = std::move(settings);
  st.in_memory = !st.settings.keeper;
  st.shards.resize(st.settings.shard_count);
  for (std::uint32_t s = 0; s < st.shards.size(); ++s)
    update_route(self, s);
  self->set_down_handler(
    [self](caf::down_msg& msg) { on_shard_down(self, msg); });
  // At the end, the shards go with the node (their users with them).
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    for (auto& e : st.shards) {
      for (auto& x : e.held)
        give_up(self, x);
      e.held.clear();
      if (e.actor)
        self->send_exit(e.actor, msg.reason);
    }
    for (auto& [addr, actor] : st.retired)
      self->send_exit(actor, msg.reason);
    for (auto& [id, p] : st.peers)
      if (p.link.actor)
        self->send_exit(p.link.actor, msg.reason);
    self->quit(msg.reason);
  });
  if (st.in_memory)
    serve_everything_in_memory(self);
  else
    publish_view(self);
  return {
    [self](user_command& cmd) -> caf::result<user_reply> {
      auto rp = self->make_response_promise<user_reply>();
      auto shard = shard_of_cmd(self, cmd);
      held_command x;
      x.cmd = std::move(cmd);
      x.promise = rp;
      dispatch(self, shard, std::move(x));
      return rp;
    },
    [self](local_call& call) {
      auto shard = shard_of_cmd(self, call.cmd);
      held_command x;
      x.cmd = std::move(call.cmd);
      x.slot = std::move(call.slot);
      dispatch(self, shard, std::move(x));
    },
    [self](forward_batch& batch) {
      auto to = caf::actor_cast<peer_gateway>(self->current_sender());
      auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                   steady::now().time_since_epoch())
                   .count();
      auto wall = wall_now_ns();
      for (auto& fc : batch.commands) {
        // The caller's patience, on this node's clock, less the time the
        // command took to get here (by the wall clocks, which agree across
        // nodes as far as NTP keeps them; never counted negative). A
        // command that sat in the socket of a paused node arrives with
        // nothing left, and is answered 503, never decided.
        auto on_the_way = std::max<std::int64_t>(0, wall - fc.sent_wall_ns);
        fc.cmd.answer_by_ns = fc.budget_ns > 0
                                ? now + fc.budget_ns - on_the_way
                                : 0;
        auto shard = shard_of_cmd(self, fc.cmd);
        held_command x;
        x.cmd = std::move(fc.cmd);
        x.reply_to = to;
        x.id = fc.id;
        x.referred_by = std::move(fc.referred_by);
        dispatch(self, shard, std::move(x));
      }
    },
    [self](shard_news& news) {
      auto& st = self->state;
      bool known = std::any_of(st.members.begin(), st.members.end(),
                               [&news](const member_record& m) {
                                 return m.node_id == news.sender;
                               });
      if (!known && !news.sender.empty())
        start_round(self); // a member this node has not read yet: read now
      if (news.sender_leaving) {
        // It gives its shards away: whoever targets them now must not wait
        // for its own next read of the member table to take them.
        for (auto& m : st.members)
          if (m.node_id == news.sender)
            m.status = "leaving";
        recompute_targets(self);
        update_routes(self);
      }
      for (auto& c : news.claims)
        learn(self, c, !c.owner.empty(),
              c.owner.empty() ? "unowned" : "serving");
      plan(self);
      publish_view(self);
    },
    [self](fenced_atom, const shard_epochs& lost) {
      auto& st = self->state;
      for (auto& [s, epoch] : lost)
        if (s < st.shards.size() && holds(st.shards[s])
            && st.shards[s].epoch == epoch) // not a newer tenure
          drop(self, s, "its writes were fenced: another node owns it",
               "shard_fenced");
      start_round(self); // learn who owns them now
    },
    [self](retry_atom, local_call& call, std::string& from,
           std::string& owner) {
      auto shard = shard_of_cmd(self, call.cmd);
      auto& e = self->state.shards[shard];
      if (e.mode == shard_mode::none) {
        // Newer than what this node knows: route by it until the lease
        // table or news says more (the named node may not even be a known
        // member yet; then the command waits for it).
        e.referred_by = from;
        e.referred_to = std::move(owner);
        e.referred_at = steady::now();
        update_route(self, shard);
      }
      held_command x;
      x.cmd = std::move(call.cmd);
      x.slot = std::move(call.slot);
      x.referred_by = std::move(from);
      dispatch(self, shard, std::move(x));
    },
    [self](link_atom, const std::string& node, bool connected) {
      auto& st = self->state;
      auto i = st.peers.find(node);
      if (i == st.peers.end() || !i->second.link.actor
          || self->current_sender() != i->second.link.actor.address())
        return; // from a link replaced since
      i->second.connected = connected;
      if (connected) {
        // Say hello: a node that has not read this one as a member yet
        // reads the member table at once (a join need not wait for every
        // other node's next heartbeat).
        self->send(i->second.link.actor,
                   shard_news{{}, self_id(self), st.leaving});
        // Commands waiting for this node can go now; hand-offs to it too.
        for (std::uint32_t s = 0; s < st.shards.size(); ++s) {
          update_route(self, s);
          if (!st.shards[s].held.empty())
            release_held(self, s);
        }
        plan(self);
      } else {
        start_round(self); // it may be gone: see sooner
      }
    },
    [self](join_atom, std::uint16_t cluster_port, std::uint16_t http_port) {
      auto& st = self->state;
      if (st.joined || st.round_in_flight)
        return;
      st.settings.self.cluster_port = cluster_port;
      st.settings.self.http_port = http_port;
      if (st.in_memory) {
        publish_view(self); // it serves already; /api/cluster shows the port
        return;
      }
      start_round(self);
    },
    [self](leave_atom) -> caf::result<bool> {
      auto& st = self->state;
      auto rp = self->make_response_promise<bool>();
      if (st.out_of_service) {
        rp.deliver(true);
        return rp;
      }
      if (st.in_memory) {
        rp.deliver(true); // nobody to hand anything to
        return rp;
      }
      st.leave_promise = rp;
      st.leaving = true;
      st.settings.self.status = "leaving";
      bool alone = std::none_of(st.members.begin(), st.members.end(),
                                [self](const member_record& m) {
                                  return m.node_id != self_id(self)
                                         && m.status != "leaving";
                                });
      if (alone) {
        // Nobody to hand anything to: what is pending is committed at exit,
        // and the leases run out (a restart under this id takes them back
        // at once). Only the member row goes.
        note(self, log_level::info, "leaving",
             "leaving the cluster, the last member",
             {{"last_member", true},
              {"shards_owned", st.settings.counters->shards_owned.load()}});
        for (std::uint32_t s = 0; s < st.shards.size(); ++s)
          if (st.shards[s].mode != shard_mode::serving)
            drop(self, s, "the node is leaving");
        finish_leave(self, true);
        return rp;
      }
      note(self, log_level::info, "leaving",
           "leaving the cluster: handing every shard off",
           {{"last_member", false},
            {"shards_owned", st.settings.counters->shards_owned.load()}});
      // Tell the others now, before any hand-off: one leaving at the same
      // moment then names no shard's successor after this node.
      st.announce_leaving = true;
      schedule_send(self);
      recompute_targets(self);
      plan(self);
      start_round(self); // tell the others at once
      return rp;
    },
    [self](tick_atom_round, std::uint64_t timer) {
      if (timer == self->state.round_timer)
        start_round(self);
    },
    [self](check_atom) { check_held(self); },
    [self](send_atom) {
      auto& st = self->state;
      st.send_scheduled = false;
      for (auto& [to, given] : st.handed_off) {
        std::vector<std::uint32_t> shards;
        std::vector<std::int64_t> epochs;
        for (auto& [shard, epoch] : given) {
          shards.push_back(shard);
          epochs.push_back(epoch);
        }
        std::vector<log_field> fields{{"shards", shards}, {"epochs", epochs}};
        if (!to.empty())
          fields.emplace_back("peer", to);
        note(self, log_level::info,
             to.empty() ? "shard_released" : "shard_handed_off",
             (to.empty() ? "released " : "handed off ")
               + shard_list_text(shards) + (to.empty() ? "" : " to " + to),
             std::move(fields));
      }
      st.handed_off.clear();
      for (auto& [addr, out] : st.replies)
        self->send(out.to, reply_batch{std::move(out.replies)});
      st.replies.clear();
      if (!st.news.empty() || st.announce_leaving) {
        shard_news news{std::move(st.news), self_id(self), st.leaving};
        st.news.clear();
        st.announce_leaving = false;
        for (auto& [id, p] : st.peers)
          if (p.link.actor)
            self->send(p.link.actor, news);
      }
    },
    [self](retire_atom, shard_actor& actor) {
      // Its end is reported (down) and expected; forget it then.
      self->send_exit(actor, caf::exit_reason::user_shutdown);
    },
  };
}

} // namespace

cluster_node_actor spawn_cluster_node(caf::actor_system& sys,
                                      cluster_node_settings settings) {
  return sys.spawn(node_impl, std::move(settings));
}

} // namespace videostreams
