#include "app/db_command.hpp"

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "app/options.hpp"
#include "persistence/persistence_error.hpp"
#include "persistence/pg_connection.hpp"
#include "persistence/schema.hpp"

namespace videostreams {

namespace {

constexpr const char* usage
  = "usage: videostreams db migrate|rollback|seed|status "
    "[--database-url=URL]\n"
    "       [--lock-timeout=D] [--statement-timeout=D]\n"
    "       videostreams db reshard --shards=N [--database-url=URL]\n"
    "       [--lock-timeout=D] [--statement-timeout=D]\n"
    "  migrate   apply every pending migration\n"
    "  rollback  revert the newest applied migration\n"
    "  seed      insert test data: users 1-3 with open streams, user 4 with "
    "a limit of 5\n"
    "  status    list the migrations and whether each is applied\n"
    "  reshard   change the cluster's shard count to N (1-65536), moving "
    "every\n"
    "            stream and limit to its new shard; refused while any node "
    "is alive\n"
    "The database is --database-url, else VIDEOSTREAMS_DATABASE_URL, else "
    "DATABASE_URL\n(a libpq URI or connection string), as for the service.\n"
    "A command waits at most --lock-timeout (default 1m; 250ms, 30s, 2m, a "
    "bare number\n"
    "is seconds) for a lock another command or a node holds, then fails.\n"
    "A statement may take at most --statement-timeout (default 10m, up to "
    "1440m): the\n"
    "server cancels it then, and a server that has not answered 2 s later "
    "(paused,\n"
    "or cut off by the network) is given up on. Raise it for a reshard or a "
    "migration\n"
    "of a very large database.\n";

/// `text` as a duration from 1 ms to `max`; nothing when it is not one.
std::optional<std::chrono::milliseconds>
duration_up_to(const std::string& text, std::chrono::milliseconds max) {
  auto d = parse_duration(text);
  if (!d || d->count() < 1 || *d > max)
    return std::nullopt;
  return d;
}

/// Says why the command failed; exit code 1. `connected`: the connection
/// had been made, so a lost one may have lost an answer too.
int failed(const caf::error& err, bool connected = true) {
  std::fprintf(stderr, "videostreams db: %s\n", describe(err).c_str());
  if (is(err, persistence_error::lock_timeout))
    std::fprintf(stderr, "videostreams db: gave up waiting (--lock-timeout) "
                         "for a lock that another db command or a node's "
                         "transaction holds; try again later\n");
  if (is(err, persistence_error::canceled))
    std::fprintf(stderr, "videostreams db: the server canceled the "
                         "statement (it ran longer than --statement-timeout, "
                         "or an operator canceled it); its transaction was "
                         "rolled back\n");
  if (connected && is(err, persistence_error::unreachable))
    std::fprintf(stderr, "videostreams db: the connection was lost, or the "
                         "server gave no answer within --statement-timeout; "
                         "a change it was committing may or may not have "
                         "landed: `videostreams db status` tells\n");
  return 1;
}

} // namespace

const char* db_usage() {
  return usage;
}

int run_db_command(const std::vector<std::string>& args,
                   const std::function<const char*(const char*)>& getenv) {
  std::string verb;
  // The same variables as the service's --database-url, in its order.
  std::string url = database_url_from_environment(getenv).url;
  std::string shards_text;
  std::string lock_timeout_text = "1m";
  std::string statement_timeout_text = "10m";
  for (auto& arg : args) {
    if (arg.rfind("--database-url=", 0) == 0) {
      url = arg.substr(15);
    } else if (arg.rfind("--shards=", 0) == 0) {
      shards_text = arg.substr(9);
    } else if (arg.rfind("--lock-timeout=", 0) == 0) {
      lock_timeout_text = arg.substr(15);
    } else if (arg.rfind("--statement-timeout=", 0) == 0) {
      statement_timeout_text = arg.substr(20);
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    } else if (verb.empty() && arg.rfind("--", 0) != 0) {
      verb = arg;
    } else {
      std::fprintf(stderr, "videostreams db: unexpected argument '%s'\n%s",
                   arg.c_str(), usage);
      return 2;
    }
  }
  if (verb != "migrate" && verb != "rollback" && verb != "seed"
      && verb != "status" && verb != "reshard") {
    std::fprintf(stderr, "videostreams db: %s\n%s",
                 verb.empty() ? "which command?"
                              : ("unknown command '" + verb + "'").c_str(),
                 usage);
    return 2;
  }
  std::uint32_t shards = 0;
  if (verb == "reshard") {
    // Digits only: strtoul would take " 4", "+4" and "-18446744073709551615"
    // (which wraps around to 1).
    std::uint64_t n = 0;
    auto last = shards_text.data() + shards_text.size();
    auto [end, ec] = std::from_chars(shards_text.data(), last, n);
    if (shards_text.empty() || ec != std::errc{} || end != last || n < 1
        || n > 65536) {
      std::fprintf(stderr, "videostreams db: reshard needs --shards=N, N "
                           "from 1 to 65536\n%s",
                   usage);
      return 2;
    }
    shards = static_cast<std::uint32_t>(n);
  } else if (!shards_text.empty()) {
    std::fprintf(stderr, "videostreams db: --shards is for reshard only\n%s",
                 usage);
    return 2;
  }
  auto lock_timeout = duration_up_to(lock_timeout_text, std::chrono::hours{1});
  if (!lock_timeout) {
    std::fprintf(stderr, "videostreams db: --lock-timeout needs a duration "
                         "from 1ms to 60m\n%s",
                 usage);
    return 2;
  }
  auto statement_timeout = duration_up_to(statement_timeout_text,
                                          std::chrono::hours{24});
  if (!statement_timeout) {
    std::fprintf(stderr, "videostreams db: --statement-timeout needs a "
                         "duration from 1ms to 1440m\n%s",
                 usage);
    return 2;
  }
  if (url.empty()) {
    std::fprintf(stderr, "videostreams db: no database: set DATABASE_URL, "
                         "VIDEOSTREAMS_DATABASE_URL or --database-url\n");
    return 2;
  }
  // Connecting is bounded by the URL's connect_timeout (else 10 s); every
  // statement by --statement-timeout, on both sides: a server that is
  // paused still acknowledges TCP, so neither keepalives nor the server's
  // own statement_timeout would end the wait. This side waits 2 s longer,
  // for a server that answers to say that it canceled (and rolled back).
  pg_timeouts timeouts;
  timeouts.answer = *statement_timeout;
  timeouts.answer_grace = std::chrono::seconds{2};
  auto db = pg_connection::connect(url, timeouts);
  if (!db)
    return failed(db.error(), false);
  if (auto set = db->exec("SET lock_timeout = '"
                          + std::to_string(lock_timeout->count()) + "ms'");
      !set)
    return failed(set.error());
  if (verb == "seed" || verb == "reshard") {
    // They write the current schema's tables: say what to do, not which
    // relation is missing.
    auto migrated = schema_migrated(*db);
    if (!migrated)
      return failed(migrated.error());
    if (!*migrated) {
      std::fprintf(stderr, "videostreams db: the database schema is not "
                           "migrated: run `videostreams db migrate` first\n");
      return 1;
    }
  }
  if (verb == "migrate") {
    auto applied = migrate(*db);
    if (!applied)
      return failed(applied.error());
    if (applied->empty())
      std::printf("schema up to date\n");
    for (auto v : *applied)
      std::printf("applied migration %d\n", v);
  } else if (verb == "rollback") {
    auto reverted = rollback(*db);
    if (!reverted)
      return failed(reverted.error());
    if (*reverted == 0)
      std::printf("nothing to roll back\n");
    else
      std::printf("rolled back migration %d\n", *reverted);
  } else if (verb == "seed") {
    if (auto ok = seed(*db); !ok)
      return failed(ok.error());
    std::printf("seeded users 1-4\n");
  } else if (verb == "reshard") {
    auto done = reshard(*db, shards);
    if (!done)
      return failed(done.error());
    if (done->shards_before == done->shards_after)
      std::printf("the cluster has %u shards already: nothing moved\n",
                  done->shards_after);
    else
      std::printf("resharded from %u to %u shards: %zu open streams and "
                  "%zu limits moved\n",
                  done->shards_before, done->shards_after, done->streams,
                  done->limits);
  } else {
    auto status = schema_status(*db);
    if (!status)
      return failed(status.error());
    for (auto& s : *status)
      std::printf("%4d  %-8s  %s%s%s\n", s.version,
                  s.applied_at.empty() ? "pending" : "applied", s.name.c_str(),
                  s.applied_at.empty() ? "" : "  at ",
                  s.applied_at.c_str());
  }
  return 0;
}

} // namespace videostreams
