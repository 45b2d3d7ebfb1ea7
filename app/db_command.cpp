#include "app/db_command.hpp"

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "app/options.hpp"
#include "persistence/persistence_error.hpp"
#include "persistence/pg_connection.hpp"
#include "persistence/schema.hpp"

namespace videostreams {

namespace {

constexpr const char* usage
  = "usage: videostreams db migrate|rollback|seed|status "
    "[--database-url=URL] [--lock-timeout=D]\n"
    "       videostreams db reshard --shards=N [--database-url=URL] "
    "[--lock-timeout=D]\n"
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
    "is seconds) for a lock another command or a node holds, then fails.\n";

int failed(const caf::error& err) {
  std::fprintf(stderr, "videostreams db: %s\n", describe(err).c_str());
  if (is(err, persistence_error::lock_timeout))
    std::fprintf(stderr, "videostreams db: gave up waiting (--lock-timeout) "
                         "for a lock that another db command or a node's "
                         "transaction holds; try again later\n");
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
  for (auto& arg : args) {
    if (arg.rfind("--database-url=", 0) == 0) {
      url = arg.substr(15);
    } else if (arg.rfind("--shards=", 0) == 0) {
      shards_text = arg.substr(9);
    } else if (arg.rfind("--lock-timeout=", 0) == 0) {
      lock_timeout_text = arg.substr(15);
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
  auto lock_timeout = parse_duration(lock_timeout_text);
  if (!lock_timeout || lock_timeout->count() < 1
      || *lock_timeout > std::chrono::hours{1}) {
    std::fprintf(stderr, "videostreams db: --lock-timeout needs a duration "
                         "from 1ms to 60m\n%s",
                 usage);
    return 2;
  }
  if (url.empty()) {
    std::fprintf(stderr, "videostreams db: no database: set DATABASE_URL, "
                         "VIDEOSTREAMS_DATABASE_URL or --database-url\n");
    return 2;
  }
  auto db = pg_connection::connect(url);
  if (!db)
    return failed(db.error());
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
