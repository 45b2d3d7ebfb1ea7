#include "cluster/lease_keeper.hpp"

#include <chrono>

#include "caf/actor_system.hpp"
#include "caf/typed_event_based_actor.hpp"

#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

lease_keeper_actor::behavior_type
keeper_impl(lease_keeper_actor::pointer, std::shared_ptr<lease_store> store,
            std::shared_ptr<const time_source> clock) {
  return {
    [store, clock](round_atom, const round_request& req) {
      round_result result;
      if (req.join) {
        if (auto joined = store->join(req.self); !joined)
          result.heartbeat_error = std::move(joined.error());
      } else if (auto beat = store->heartbeat(req.self); !beat) {
        result.heartbeat_error = std::move(beat.error());
      } else if (!*beat) {
        result.superseded = true;
        return result;
      }
      if (!req.renew.empty()) {
        // Taken before the statement leaves: the lease runs from a moment
        // after this, by PostgreSQL's clock, so a deadline counted from
        // here passes before the lease does.
        result.renew_started_ns = clock->now().mono_ns;
        auto renewed = store->renew(req.self.node_id, req.renew,
                                    req.self.lease_ttl);
        if (renewed) {
          result.renewal_ran = true;
          result.renewed = std::move(*renewed);
        } else {
          result.renew_error = std::move(renewed.error());
        }
      }
      if (auto reading = store->read(req.shard_count))
        result.reading = std::move(*reading);
      else
        result.read_error = std::move(reading.error());
      return result;
    },
    [store, clock](take_atom, const member_self& self,
                   const std::vector<std::uint32_t>& shards) {
      take_result result;
      result.started_ns = clock->now().mono_ns;
      if (auto taken = store->take(self.node_id, shards, self.lease_ttl))
        result.taken = std::move(*taken);
      else
        result.error = std::move(taken.error());
      return result;
    },
    [store](release_atom, const member_self& self, const shard_epochs& held)
      -> caf::result<std::vector<std::uint32_t>> {
      auto released = store->release(self.node_id, held);
      if (!released)
        return std::move(released.error());
      return std::move(*released);
    },
    [store](leave_atom, const member_self& self) {
      return static_cast<bool>(store->leave(self));
    },
  };
}

shard_loader_actor::behavior_type
loader_impl(shard_loader_actor::pointer, std::shared_ptr<pg_connection> db) {
  return {
    [db](load_atom, const std::vector<std::uint32_t>& shards)
      -> caf::result<loaded_shards> {
      // Loads are rare, and a connection left dangling since the last one
      // (a database failover) would hold this one for its whole bound
      // (60 s): it must answer within 2 s first, or the load starts on a
      // new connection.
      if (!db->answers_within(std::chrono::seconds{2}))
        db->reset();
      auto state = read_committed_state(*db, shards);
      if (!state && is(state.error(), persistence_error::unreachable)
          && db->reset())
        state = read_committed_state(*db, shards); // a read repeats safely
      if (!state)
        return std::move(state.error());
      return loaded_shards{
        std::make_shared<committed_state>(std::move(*state))};
    },
  };
}

} // namespace

lease_keeper_actor spawn_lease_keeper(caf::actor_system& sys,
                                      std::shared_ptr<lease_store> store,
                                      std::shared_ptr<const time_source> clock) {
  return sys.spawn<caf::detached>(keeper_impl, std::move(store),
                                  std::move(clock));
}

shard_loader_actor spawn_shard_loader(caf::actor_system& sys,
                                      pg_connection db) {
  return sys.spawn<caf::detached>(
    loader_impl, std::make_shared<pg_connection>(std::move(db)));
}

} // namespace videostreams
