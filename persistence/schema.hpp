#pragma once

#include <string>
#include <vector>

#include "caf/expected.hpp"

#include "persistence/pg_connection.hpp"

namespace videostreams {

/// One versioned step of the database schema, compiled into the binary.
struct migration {
  int version;
  const char* name;
  const char* up;
  const char* down;
};

/// Every migration, oldest first.
const std::vector<migration>& migrations();

/// A migration and whether (and when) it was applied.
struct migration_status {
  int version;
  std::string name;
  /// Empty when pending.
  std::string applied_at;
};

/// Applies every pending migration, each in its own transaction together
/// with its row in `schema_migrations`, under an advisory lock so that
/// concurrent migrators wait for each other. Returns the versions applied.
caf::expected<std::vector<int>> migrate(pg_connection& db);

/// Reverts the newest applied migration; returns its version, or 0 when
/// nothing was applied.
caf::expected<int> rollback(pg_connection& db);

/// Every migration this binary knows, with its state in the database.
caf::expected<std::vector<migration_status>> schema_status(pg_connection& db);

/// Inserts a few users with open streams and one with a limit of its own
/// (test data, like the original project's seed). Idempotent. Needs the
/// schema migrated.
caf::expected<void> seed(pg_connection& db);

} // namespace videostreams
